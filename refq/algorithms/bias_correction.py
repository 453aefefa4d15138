"""Bias correction: remove the mean output error that weight quantization causes, per channel.

Reference: Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction"
(ICCV 2019), §4.2 (the biased error and its correction) and §4.2.1 (the data-free expectation from
batch-norm statistics); AIMET 1.x `bias_correction.correct_bias`, aimet.md §6. AIMET 2.x has no
bias correction (aimet.md §0.2.11), so there is no 2.42 behaviour to match; refq follows the 1.x
algorithm.

Definition
    A conv2d or dense layer computes y = W x + b. With quantized weights W_q it computes
    ỹ = W_q x + b, whose error ỹ − y = ε x, ε = W_q − W, has a non-zero mean per output channel,
    E[ỹ − y] = ε E[x]. Bias correction subtracts that mean:
        b ← b − E[ỹ − y]                                       per output channel c
    Layers are corrected one by one in topological order, so the input x of a layer already comes
    from the corrected quantized model (earlier corrections affect later layers' inputs). Every
    conv2d and dense is corrected; a layer without bias gets one (a layer that is skipped, see
    Analytical, is left exactly as it was).
Quantized model
    A QuantSim (`refq.quant.quantsim.QuantSim`) is built on the graph with `config`, `param_bw`,
    `scheme`, `scheme_options`, `numerics` and `detect_prequantized`; only its parameter encodings
    are computed (from the weights; bias correction does not change weights, so they stay valid),
    and every activation quantizer is off during correction, as AIMET disabled every output
    quantizer (§6 step 2). Only the weight error is corrected. The quantized path uses every
    enabled parameter quantizer of the sim (conv/dense weights and any other quantized parameter).
Empirical (mode="empirical"; needs `data`)
    e_c = mean over samples and spatial positions of (ỹ − y)_c on the calibration data, with ỹ the
    layer's output in the quantized model (QDQ weights, earlier layers already corrected, float
    activations) and y its output in the float model; b_c ← b_c − e_c.
    Evaluation: one pass over the graph, node by node in topological order, on the whole
    calibration set, carrying for each live tensor its float value and its quantized-path value
    (a tensor is freed after its last consumer; a tensor that is still identical in both paths is
    held once). At a conv2d/dense node: y = f(x; W, b) on the float input, A = f(x̃; W_q) without
    bias on the quantized-path input, e = mean(A + b − y), b ← b − e, and the quantized-path
    output becomes A + b_new, exactly what running the corrected layer gives. Cost: two forward
    passes, not one per layer.
    Memory: the calibration set (N samples) is held in float64 together with both paths' live
    activations: peak ≈ 8 bytes · 2 · N · (largest total size of the tensors live at one step of
    the topological order, per sample), plus one op's temporaries; report["peak_live_bytes"]
    gives the measured value (PP-OCR classifier, N = 64: 105 MB). `batch_size` evaluates each
    op in chunks of that many samples, which bounds the temporaries but not the live set.
    Bias correction typically uses a few hundred samples.
Analytical (mode="analytical"; data-free where the rule holds)
    The data-free rule, the expectation E[x] of a layer's input from the batch-norm statistics of
    the layer before it, and e = ε·E[x] are in `refq.algorithms.bias_analytical`.
    Every layer where the rule holds is corrected analytically; every other layer empirically when
    `data` is given, else it is skipped with the reason. With data, the empirical mean error before
    and after is also measured for the analytical layers (a diagnostic; it is not ~0 there).
Differences from AIMET 1.x
    AIMET corrects only the layers in its `conv_bn_dict`; refq corrects every conv2d/dense. AIMET's
    analytical mode "corrects" layers without an input BN with γ = 1, β = 0 (a no-op for the first
    layer); refq corrects them empirically or reports them skipped. σ = |γ| (bias_analytical). The
    float and quantized paths run in float64 (AIMET: float32); the QDQ weights themselves are
    computed in `numerics` (float32 for AIMET_V2), exactly as the QuantSim computes them.
Output
    A new graph (the input is never mutated) whose corrected biases are float64, the reference
    precision (rounding them to float32 would leave a residual mean error up to half an ulp of the
    bias). graph.meta["folded_bn"] is left unchanged: it describes the float model's statistics,
    which the corrected quantized model reproduces in expectation. The weight encodings used are
    those of `QuantSim.compute_param_encodings` (no calibration, hence no overflow protection); a
    QuantSim later calibrated on the corrected graph re-snaps conv/dense weight scales (AIMET's
    overflow protection, which depends on the bias and the activation encodings, §0.2.5) and may
    move a scale by a float32 rounding (PP-OCR classifier, per-tensor and per-channel: no scale
    and no quantized weight differs).
Errors
    QuantError: an integer model (`refq.quant.placement.require_float_model`); unknown mode;
    empirical without data, or data with no samples; data of a non-real dtype or holding NaN/Inf
    (`refq.quant.quantsim.check_calibration_batch`); analytical without data when no layer
    satisfies the rule ("BN statistics missing: ..."); malformed graph.meta["folded_bn"].
    InputError: data that does not match the graph's inputs (a scalar, a wrong shape), bad
    batch_size.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import InputError, QuantError
from ..graph import Graph
from ..layers import get_op
from ..progress import progress
from ..quant.encoding import AIMET_V2, EncodingNumerics
from ..data_io import iterate_batches
from ..quant.placement import require_float_model
from ..quant.quantsim import QuantSim, check_calibration_batch
from ..feeds import _check_feeds
from .bias_analytical import CORRECTED_OPS, _analytical_source, _expected_error, clipped_normal_mean

__all__ = ["correct_bias", "clipped_normal_mean", "CORRECTED_OPS"]

_MODES = ("empirical", "analytical")


# ----------------------------------------------------------------------------- empirical pass

def _calibration_feeds(graph: Graph, data) -> dict:
    """{input name: float64 array} of the whole calibration set; QuantError/InputError."""
    parts: dict = {}
    for k, batch in enumerate(iterate_batches(data, graph)):
        src = getattr(batch, "source", None)
        where = f"bias correction data, batch {k}" + (f" (from {src})" if src else "")
        batch = _check_feeds(graph, check_calibration_batch(graph, batch, where))
        for name, x in batch.items():
            parts.setdefault(name, []).append(x)
    feeds = {name: np.concatenate(xs, axis=0, dtype=np.float64) for name, xs in parts.items()}
    if not feeds or next(iter(feeds.values())).shape[0] == 0:
        raise QuantError("bias correction: the calibration data holds no samples; give at least "
                         "one non-empty batch (`refq quantize --calib DATA`)")
    return feeds


def _apply(op, xs, params, attrs, batch_size):
    n = xs[0].shape[0]
    if not batch_size or n <= batch_size:
        return op.forward(xs, params, attrs)
    return np.concatenate([op.forward([x[s:s + batch_size] for x in xs], params, attrs)
                           for s in range(0, n, batch_size)], axis=0)


def _channel_mean(d) -> np.ndarray:
    return d.reshape(-1, d.shape[-1]).mean(axis=0)


def _live_bytes(*dicts) -> int:
    seen = {}
    for d in dicts:
        for v in d.values():
            seen[id(v)] = v.nbytes
    return sum(seen.values())


def _pass(order, feeds, float_params, quant_params, corrections, batch_size, quiet):
    """The node-by-node pass of the module docstring. Sets the biases of the nodes of `order`
    (nodes of the private copy).

    corrections: {node: analytical e} for the analytically corrected layers; every other
    conv2d/dense is corrected empirically. Returns ({node: (before, applied, after)}, peak bytes).
    """
    last_use = {t: i for i, n in enumerate(order) for t in n.inputs}
    vf = dict(feeds)
    vq = dict(feeds)  # the same arrays: the paths agree until the first quantized parameter
    feeds.clear()  # our own float64 copy: let the input go after its last consumer
    peak = _live_bytes(vf, vq)
    out = {}
    for i, node in enumerate(progress(order, total=len(order), desc="bias correction",
                                      quiet=quiet)):
        op = get_op(node.op)
        xf = [vf[t] for t in node.inputs]
        xq = [vq[t] for t in node.inputs]
        yf = _apply(op, xf, float_params[node.name], node.attrs, batch_size)
        if node.op in CORRECTED_OPS:
            wq = quant_params[node.name]["weight"]
            acc = _apply(op, xq, {"weight": wq}, node.attrs, batch_size)  # W_q x̃, no bias
            b_old = node.params["bias"]
            before = _channel_mean((acc + b_old) - yf)
            applied = corrections.get(node.name, before)
            b_new = b_old - applied
            acc += b_new
            yq = acc
            after = _channel_mean(yq - yf)
            node.params["bias"] = b_new
            out[node.name] = (before, applied, after)
        elif node.name not in quant_params and all(a is b for a, b in zip(xf, xq)):
            yq = yf
        else:
            yq = _apply(op, xq, quant_params.get(node.name, float_params[node.name]),
                        node.attrs, batch_size)
        vf[node.outputs[0]], vq[node.outputs[0]] = yf, yq
        peak = max(peak, _live_bytes(vf, vq))
        for t in set(node.inputs) | set(node.outputs):
            if last_use.get(t, -1) <= i:
                vf.pop(t, None)
                vq.pop(t, None)
    return out, peak


# ----------------------------------------------------------------------------- entry point

def _floats(a) -> list:
    return np.asarray(a, dtype=np.float64).tolist()


def correct_bias(graph: Graph, data=None, *, mode: str = "empirical", config=None,
                 param_bw: int = 8, scheme: str = "minmax", scheme_options: dict | None = None,
                 numerics: EncodingNumerics = AIMET_V2, detect_prequantized: bool = True,
                 batch_size: int | None = None, quiet: bool = True) -> tuple:
    """Bias-correct every conv2d/dense of `graph`; return (new graph, report); see the module
    docstring.

    data: calibration inputs — an array (single-input graph), a dict {input: array}, or an
      iterable of either (batches); required for mode="empirical", optional for "analytical".
    mode: "empirical" (every layer from data) or "analytical" (data-free where the rule holds,
      empirical elsewhere when data is given, else skipped).
    config, param_bw, scheme, scheme_options, numerics, detect_prequantized: the weight
      quantization to correct for, as `QuantSim` takes them. config None = QuantSim's default
      (per-channel, AIMET 2.42's); correct with the settings you will simulate with.
    batch_size: evaluate each op on chunks of this many samples (None = the whole set at once).
    quiet: False shows a progress bar over the nodes on a terminal.

    The report (JSON-serialisable): "algorithm", "mode", "settings", "samples", "peak_live_bytes"
    (0 without a pass), "corrected" and "skipped" (node names), and "layers", one entry per
    conv2d/dense in topological order: "node", "op", "mode" ("analytical" | "empirical" |
    "skipped"), "reason", "bias_added", "weight_quantized", "correction" (per output channel, the
    value subtracted from the bias; for empirical layers the mean error before), "mean_error_before"
    and "mean_error_after" (measured on the data, None without it), "max_abs_error_after", and for
    analytical layers "source", "activation", "bounds" and "expected_input" (E[x] per input
    channel).
    """
    if mode not in _MODES:
        raise QuantError(f"correct_bias: mode must be one of {list(_MODES)}, got {mode!r}")
    if batch_size is not None and (isinstance(batch_size, (bool, np.bool_))
                                   or not isinstance(batch_size, (int, np.integer))
                                   or batch_size <= 0):
        raise InputError(f"correct_bias: batch_size must be a positive integer or None, "
                         f"got {batch_size!r}")
    if mode == "empirical" and data is None:
        raise QuantError("correct_bias: empirical bias correction needs calibration data; give "
                         "a few hundred samples (`refq quantize --calib DATA --bias-correction "
                         "empirical`; Python: data=...), or use analytical bias correction "
                         "(`--bias-correction analytical`) on a model with batch norms")
    require_float_model(graph, "bias correction (`refq quantize --bias-correction`)",
                        "correct the float model (the one `refq quantize` takes)")
    g = graph.copy()
    g.validate()
    order = g.topological_order()
    layers = [n for n in order if n.op in CORRECTED_OPS]
    feeds = None if data is None else _calibration_feeds(g, data)

    added = set()
    for n in layers:
        if "bias" not in n.params:
            n.params["bias"] = np.zeros(n.params["weight"].shape[0])
            added.add(n.name)
        n.params["bias"] = n.params["bias"].astype(np.float64)

    # the plan: per layer (mode, reason, analytical info)
    producers = g.producers()
    shapes = g.infer_shapes()
    plan = {}
    for n in layers:
        if mode == "empirical":
            plan[n.name] = ("empirical", "empirical", None)
            continue
        info, why = _analytical_source(g, n, producers, shapes)
        if info is not None:
            plan[n.name] = ("analytical", info["reason"], info)
        elif feeds is not None:
            plan[n.name] = ("empirical", f"empirical: not data-free, {why}", None)
        else:
            plan[n.name] = ("skipped", f"skipped: {why}; no calibration data given", None)
    if mode == "analytical" and feeds is None and layers and \
            not any(p[0] == "analytical" for p in plan.values()):
        if not g.meta.get("folded_bn"):
            raise QuantError(f"graph '{g.name}': BN statistics missing: analytical bias "
                             "correction reads the statistics of folded batch norms; run it on "
                             "the model with its batch norms (`refq quantize --bias-correction "
                             "analytical` folds them first unless --no-fold-bn; Python: "
                             "refq.algorithms.fold_batch_norms) or give calibration data "
                             "(--calib)")
        raise QuantError(f"graph '{g.name}': no conv2d/dense reads a bn-folded layer through "
                         "relu/relu6/clip and zero_pad2d/identity only, so analytical bias "
                         "correction can correct nothing; give calibration data (--calib)")

    sim = QuantSim(g, config, param_bw=param_bw, scheme=scheme, scheme_options=scheme_options,
                   numerics=numerics, detect_prequantized=detect_prequantized)
    sim.compute_param_encodings()
    qdq = sim.sim_params()  # parameter quantizers only: activation quantization stays off
    float_params = {n.name: {k: np.asarray(v).astype(np.float64) for k, v in n.params.items()}
                    for n in order}
    quant_params = {name: {k: np.asarray(v).astype(np.float64) for k, v in p.items()}
                    for name, p in qdq.items()}
    for n in layers:  # conv/dense always take the quantized path's weight from here
        quant_params.setdefault(n.name, dict(float_params[n.name]))

    corrections = {}
    for n in layers:
        kind, _, info = plan[n.name]
        if kind == "analytical":
            corrections[n.name] = _expected_error(n, float_params[n.name]["weight"],
                                                  quant_params[n.name]["weight"],
                                                  info["expected_input"])

    measured, peak = {}, 0
    samples = 0 if feeds is None else int(next(iter(feeds.values())).shape[0])
    if feeds is not None and layers:
        measured, peak = _pass(order, feeds, float_params, quant_params, corrections,
                               batch_size, quiet)
    else:
        for name, e in corrections.items():
            node = g.node(name)
            node.params["bias"] = node.params["bias"] - e

    entries = []
    for n in layers:
        kind, reason, info = plan[n.name]
        before, applied, after = measured.get(n.name, (None, corrections.get(n.name), None))
        entry = {"node": n.name, "op": n.op, "mode": kind, "reason": reason,
                 "bias_added": n.name in added,
                 "weight_quantized": "weight" in qdq.get(n.name, {}),
                 "correction": None if applied is None else _floats(applied),
                 "mean_error_before": None if before is None else _floats(before),
                 "mean_error_after": None if after is None else _floats(after),
                 "max_abs_error_after": None if after is None else float(np.max(np.abs(after)))}
        if info is not None:
            entry.update(source=info["source"], activation=info["activation"],
                         bounds=[float(b) if np.isfinite(b) else None for b in info["bounds"]],
                         expected_input=_floats(info["expected_input"]))
        if kind == "skipped":  # nothing changed: drop the zero bias added for it
            if n.name in added:
                del n.params["bias"]
                entry["bias_added"] = False
            else:
                n.params["bias"] = graph.node(n.name).params["bias"].copy()
        entries.append(entry)

    numerics_json = dataclasses.asdict(numerics)
    numerics_json["dtype"] = np.dtype(numerics.dtype).name
    report = {
        "algorithm": "bias_correction",
        "mode": mode,
        "settings": {"config": sim.config_source, "param_bw": sim.param_bw, "scheme": scheme,
                     "scheme_options": dict(scheme_options or {}), "numerics": numerics_json,
                     "detect_prequantized": detect_prequantized,
                     "activation_quantization": False, "compute_dtype": "float64",
                     "batch_size": None if batch_size is None else int(batch_size)},
        "samples": samples,
        "peak_live_bytes": int(peak),
        "corrected": [e["node"] for e in entries if e["mode"] != "skipped"],
        "skipped": [e["node"] for e in entries if e["mode"] == "skipped"],
        "layers": entries,
    }
    return g, report
