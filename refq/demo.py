"""`refq demo`: the main job on the bundled PP-OCR text-direction classifier.

The model (MobileNetV3-small x0.35, Keras 3 HDF5) and 1,000 labelled text lines ship in
`refq/data/ppocr_cls/` (Apache-2.0, see LICENSE and NOTICE there). The demo
1. imports the model, runs the test set in float64 and prints the FP32 accuracy (97.9% expected)
   and the agreement with the onnxruntime probabilities stored beside the data;
2. quantizes it W8A8 with AIMET 2.42's numerics and placement (minmax calibration on
   `CALIBRATION_LINES` unlabelled lines drawn with another noise seed), per-tensor and
   per-channel, prints both accuracies and the five worst quantizers of the per-tensor report;
3. prints the data-free quantization table (BN fold, CLE, bias correction at W8/W6/W5);
4. lowers the per-channel W8A8 model to an integer model for every shipped numerics profile and
   prints each one's accuracy and how many values differ from the integer-faithful simulation
   (each layer on the simulation's own inputs, so a difference belongs to that layer's rounding).
"""
from __future__ import annotations

import os
import time
from importlib import resources

import numpy as np

DATA = "data/ppocr_cls"
EXPECTED_FP32_ACCURACY = 0.979
CALIBRATION_LINES = 200
CALIBRATION_NOISE_SEED = 1


def data_path(name: str) -> str:
    return os.fspath(resources.files("refq").joinpath(f"{DATA}/{name}"))


def textline_inputs(X: np.ndarray, widths: np.ndarray, noise_seed: int = 0,
                    max_sigma: float = 6.0) -> np.ndarray:
    """The test set's model input, NHWC float32 (N, 48, 192, 3).

    With rs = np.random.RandomState(noise_seed) (the legacy generator, stable across NumPy):
    sigma_i = float32(rs.uniform(0, max_sigma, N)), noise = float32(rs.standard_normal((N,H,W,3)));
    z = clip(X + noise·sigma_i, 0, 255) on 3 replicated channels; z = (z/255 − 0.5)/0.5; z = 0 at
    columns >= widths_i (right of the text), as the PP-OCR classifier's preprocessing pads.
    """
    rs = np.random.RandomState(noise_seed)
    n, h, w = X.shape
    sigma = rs.uniform(0, max_sigma, n).astype(np.float32)
    noise = rs.standard_normal((n, h, w, 3)).astype(np.float32)
    z = np.clip(X[..., None].astype(np.float32) + noise * sigma[:, None, None, None], 0, 255)
    z = (z / 255.0 - 0.5) / 0.5
    z = np.where(np.arange(w)[None, None, :, None] >= widths[:, None, None, None], 0.0, z)
    return z.astype(np.float32)


def _lines():
    with np.load(data_path("textlines_test1000.npz"), allow_pickle=False) as z:
        return z["X"], z["y"], z["widths"], z["p_onnx"]


def load_test_set():
    """(inputs NHWC float32, labels, onnxruntime probabilities) of the 1,000 bundled lines."""
    X, y, widths, p_onnx = _lines()
    return textline_inputs(X, widths), y, p_onnx


def load_calibration_set(n: int = CALIBRATION_LINES) -> np.ndarray:
    """Unlabelled calibration inputs: the first n lines with noise seed CALIBRATION_NOISE_SEED."""
    X, _, widths, _ = _lines()
    return textline_inputs(X[:n], widths[:n], noise_seed=CALIBRATION_NOISE_SEED)


def load_model():
    from .importers import import_keras

    return import_keras(data_path("ppocr_cls_mbv3s.h5"))


def main(quiet: bool = False) -> dict:
    from .runtime import run
    from .summary import summarize

    t0 = time.perf_counter()
    graph = load_model()
    rows = summarize(graph)
    x, y, p_onnx = load_test_set()
    print(f"model   {graph.name}: {len(graph.nodes)} nodes, {sum(r['params'] for r in rows):,} "
          f"parameters, {sum(r['macs'] for r in rows) / 1e6:.1f} MMAC per image")
    print(f"data    {len(y)} text lines {list(x.shape[1:])}, {int((y == 0).sum())} upright / "
          f"{int((y == 1).sum())} rotated")
    t1 = time.perf_counter()
    probs = run(graph, {graph.inputs[0].name: x}, batch_size=100, quiet=quiet)[graph.outputs[0]]
    t2 = time.perf_counter()
    pred = probs.argmax(axis=1)
    acc = float((pred == y).mean())
    result = {
        "fp32_accuracy": acc,
        "upright_accuracy": float((pred[y == 0] == 0).mean()),
        "rotated_accuracy": float((pred[y == 1] == 1).mean()),
        "onnx_argmax_agreement": float((pred == p_onnx.argmax(axis=1)).mean()),
        "onnx_max_abs_prob_diff": float(np.abs(probs - p_onnx).max()),
    }
    print(f"FP32    accuracy {acc:.1%} (expected {EXPECTED_FP32_ACCURACY:.1%}): upright "
          f"{result['upright_accuracy']:.1%}, rotated {result['rotated_accuracy']:.1%}")
    print(f"        agreement with onnxruntime: argmax {result['onnx_argmax_agreement']:.1%}, "
          f"max |p - p_onnx| {result['onnx_max_abs_prob_diff']:.1e}")
    print(f"time    import {t1 - t0:.1f} s, float64 forward {t2 - t1:.1f} s "
          f"({len(y) / (t2 - t1):.0f} images/s)")
    result.update(_quantized(graph, x, y, quiet))
    return result


def _accuracy(sim, x, y, quiet):
    probs = sim.run({sim.graph.inputs[0].name: x}, batch_size=100, quiet=quiet)
    return float((probs[sim.graph.outputs[0]].argmax(axis=1) == y).mean())


def _simulate(graph, config, x, y, calib, quiet, param_bw=8):
    from .quant.quantsim import QuantSim

    sim = QuantSim(graph, config, param_bw=param_bw, act_bw=8)
    sim.compute_encodings(calib, batch_size=100, quiet=quiet)
    return sim, _accuracy(sim, x, y, quiet)


def _quantized(graph, x, y, quiet) -> dict:
    from .algorithms import fold_batch_norms
    from .report import format_report, quant_report

    calib = load_calibration_set()
    folded, _ = fold_batch_norms(graph)
    print(f"\nW8A8 quantization simulation (AIMET 2.42 numerics and placement, minmax, BN folded, "
          f"calibrated on {len(calib)} unlabelled lines)")
    out = {"calibration_lines": len(calib)}
    sims = {}
    for config in ("per_tensor", "per_channel"):
        t0 = time.perf_counter()
        sims[config], acc = _simulate(folded, config, x, y, calib, quiet)
        out[f"w8a8_{config}_accuracy"] = acc
        p = sims[config].placement
        print(f"  {config.replace('_', '-'):12s} accuracy {acc:.1%}   ({p['activation_quantizers']} "
              f"activation + {p['param_quantizers']} weight quantizers, "
              f"{time.perf_counter() - t0:.1f} s)")
    report = quant_report(sims["per_tensor"], x[:200], batch_size=100)
    out["worst_quantizers"] = [r["quantizer"] for r in report["quantizers"][:5]]
    print("\nfive worst quantizers, per-tensor W8A8 (first 200 test lines):")
    print("\n".join("  " + line for line in format_report(report, top=5).splitlines()))
    out["data_free"] = _data_free_table(graph, x, y, calib, quiet,
                                        {8: (out["w8a8_per_tensor_accuracy"],
                                             out["w8a8_per_channel_accuracy"])})
    out["integer"] = _integer(sims["per_channel"], x, y, quiet)
    return out


COMPARE_LINES = 16


def _integer(sim, x, y, quiet) -> dict:
    """Accuracy of the integer model per profile, and its LSB differences from the simulation."""
    from .fixedpoint.compare import compare
    from .fixedpoint.lowering import lower
    from .fixedpoint.profiles import PROFILES
    from .fixedpoint.run import run_int

    print(f"\ninteger models (per-channel W8A8 lowered per profile; differences from the "
          f"integer-faithful simulation on {COMPARE_LINES} lines)")
    print(f"  {'profile':14s}{'accuracy':>9s}{'differing values':>22s}{'max':>5s}"
          f"{'layers':>8s}{'headroom':>10s}")
    name = sim.graph.inputs[0].name
    out = {}
    for profile in PROFILES:
        graph = lower(sim, profile)
        probs, _ = run_int(graph, {name: x}, batch_size=100, quiet=quiet)
        acc = float((probs[graph.outputs[0]].argmax(axis=1) == y).mean())
        s = compare(sim, profile, x[:COMPARE_LINES])["summary"]
        out[profile] = {"accuracy": acc, **s}
        print(f"  {profile:14s}{100 * acc:8.1f}%{s['local_differ_elements']:>11,} of "
              f"{s['local_elements']:>9,}{s['local_max_lsb']:>4d}{s['local_differ_nodes']:>5d}/"
              f"{s['nodes']:<3d}{s['min_headroom_bits']:>6d} bits")
    return out


DFQ_COLUMNS = ("naive", "bn_fold", "cle", "bias_correction", "per_channel")


def _data_free_table(graph, x, y, calib, quiet, known: dict) -> dict:
    """Per-tensor WbA8 accuracy: naive (BN kept as a float op, the simulation AIMET gives an
    unfolded model), + BN fold, + CLE (through squeeze-excitation), + empirical bias correction,
    and per-channel (BN folded) for comparison."""
    from .algorithms import prepare

    print("\ndata-free quantization, per-tensor weights, 8-bit activations (accuracy on "
          f"{len(y)} lines)")
    head = f"  {'':6s}" + "".join(f"{c:>17s}" for c in
                                   ("naive", "+ BN fold", "+ CLE", "+ bias corr.", "per-channel"))
    print(head)
    folded, _ = prepare(graph, fold_bn=True)
    equalized, _ = prepare(graph, cle=True, through_squeeze_excite=True)
    table = {}
    for bw in (8, 6, 5):
        row = {"naive": _simulate(graph, "per_tensor", x, y, calib, quiet, bw)[1]}
        if bw in known:
            row["bn_fold"], row["per_channel"] = known[bw]
        else:
            row["bn_fold"] = _simulate(folded, "per_tensor", x, y, calib, quiet, bw)[1]
            row["per_channel"] = _simulate(folded, "per_channel", x, y, calib, quiet, bw)[1]
        row["cle"] = _simulate(equalized, "per_tensor", x, y, calib, quiet, bw)[1]
        corrected, _ = prepare(equalized, bias_correction="empirical", data=calib,
                               config="per_tensor", param_bw=bw)
        row["bias_correction"] = _simulate(corrected, "per_tensor", x, y, calib, quiet, bw)[1]
        table[f"W{bw}A8"] = row
        print(f"  W{bw}A8 " + "".join(f"{100 * row[c]:16.1f}%" for c in DFQ_COLUMNS))
    return table
