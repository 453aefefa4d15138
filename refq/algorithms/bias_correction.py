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
Analytical (mode="analytical"; data-free where the rule below holds)
    Rule per layer L: its input comes from a conv2d/dense P with recorded output statistics
    graph.meta["folded_bn"][P] = {"gamma": [...], "beta": [...]} (written by BN folding; P's output,
    the pre-activation, is taken as N(β_c, γ_c²)), through at most one activation among relu, relu6
    and clip(lo, hi), and any number of zero_pad2d / identity ops. Then, per input channel c with
    σ = |γ_c|, E[x_c] is the mean of a normal clipped to [lo, hi] (`clipped_normal_mean`):
        no activation   E[x] = β
        relu            E[x] = β(1 − Φ(−β/σ)) + σ φ(−β/σ)
        relu6 (b = 6), clip(0, b)
                        E[x] = σ(φ(−β/σ) − φ((b−β)/σ)) + β(Φ((b−β)/σ) − Φ(−β/σ))
                               + b(1 − Φ((b−β)/σ))
    (general clip(lo, hi): lo Φ(α) + hi(1 − Φ(ω)) + β(Φ(ω) − Φ(α)) + σ(φ(α) − φ(ω)), α = (lo−β)/σ,
    ω = (hi−β)/σ; σ = 0 gives clip(β, lo, hi)). ε = Σ_{kh,kw}(W_q − W) as [out, in/groups]
    (dense: W_q − W), e_o = Σ_i ε[o, i] E[x_{g(o)·Cg + i}] (groups == 1: ε·E[x]; depthwise: the
    elementwise product with the channel the output reads), b ← b − e.
    Every layer where the rule holds is corrected analytically; every other layer empirically when
    `data` is given, else it is skipped with the reason. With data, the empirical mean error before
    and after is also measured for the analytical layers (a diagnostic; it is not ~0 there).
    Inexact by construction: zero padding (a zero_pad2d on the path, or L's own "same"/explicit
    padding) feeds zeros instead of samples of the clipped normal at the borders, so E[x] is wrong
    there; the reason string says so. The statistics describe the float model, not the quantized
    model's actual input (the approximation of the paper).
    σ = |γ|: a folded BN with negative γ still gives a normal of standard deviation |γ|. AIMET uses
    γ as-is (§6), which for γ < 0 gives wrong means (ReLU with β = 0, γ = −1: −0.399 instead of
    +0.399).
Differences from AIMET 1.x
    AIMET corrects only the layers in its `conv_bn_dict`; refq corrects every conv2d/dense. AIMET's
    analytical mode "corrects" layers without an input BN with γ = 1, β = 0 (a no-op for the first
    layer); refq corrects them empirically or reports them skipped. |γ| as above. The float and
    quantized paths run in float64 (AIMET: float32); the QDQ weights themselves are computed in
    `numerics` (float32 for AIMET_V2), exactly as the QuantSim computes them.
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
    QuantError: unknown mode; empirical without data, or data with no samples; NaN/Inf in the
    data; analytical without data when no layer satisfies the rule ("BN statistics missing: ...");
    malformed graph.meta["folded_bn"]. InputError: data that does not match the graph's inputs,
    bad batch_size.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import special, stats

from ..errors import InputError, QuantError
from ..graph import Graph
from ..layers import get_op
from ..layers.conv import window_geometry
from ..progress import progress
from ..quant.encoding import AIMET_V2, EncodingNumerics
from ..quant.quantsim import QuantSim, iterate_batches
from ..runtime import _check_feeds

__all__ = ["correct_bias", "clipped_normal_mean", "CORRECTED_OPS"]

CORRECTED_OPS = ("conv2d", "dense")
"""The ops whose bias is corrected."""
_TRANSPARENT = ("zero_pad2d", "identity")
_ACTIVATIONS = ("relu", "relu6", "clip")
_MODES = ("empirical", "analytical")


# ----------------------------------------------------------------------------- analytical math

def clipped_normal_mean(beta, gamma, lo=-np.inf, hi=np.inf) -> np.ndarray:
    """E[clip(X, lo, hi)] for X ~ N(beta, gamma²), elementwise, in float64 (σ = |gamma|).

    lo Φ(α) + hi(1 − Φ(ω)) + β(Φ(ω) − Φ(α)) + σ(φ(α) − φ(ω)), α = (lo − β)/σ, ω = (hi − β)/σ,
    with the terms of an infinite bound dropped (Φ(−∞) = 0, φ(±∞) = 0); σ = 0 gives clip(β, lo, hi).
    lo = −∞, hi = ∞: β; lo = 0, hi = ∞: ReLU; lo = 0, hi = 6: ReLU6. Φ = scipy.special.ndtr,
    φ = scipy.stats.norm.pdf.
    """
    beta = np.asarray(beta, dtype=np.float64)
    sigma = np.abs(np.asarray(gamma, dtype=np.float64))
    beta, sigma = np.broadcast_arrays(beta, sigma)
    shape = beta.shape
    beta, sigma = beta.ravel(), sigma.ravel()
    lo, hi = float(lo), float(hi)
    if not lo <= hi:
        raise QuantError(f"clipped_normal_mean: need lo <= hi, got lo={lo} hi={hi}")
    out = np.clip(beta, lo, hi)  # the point mass of σ = 0
    pos = sigma > 0
    mu, s = beta[pos], sigma[pos]
    if np.isneginf(lo):
        cdf_a, pdf_a, lo_term = 0.0, 0.0, 0.0
    else:
        a = (lo - mu) / s
        cdf_a, pdf_a = special.ndtr(a), stats.norm.pdf(a)
        lo_term = lo * cdf_a
    if np.isposinf(hi):
        cdf_w, pdf_w, hi_term = 1.0, 0.0, 0.0
    else:
        w = (hi - mu) / s
        cdf_w, pdf_w = special.ndtr(w), stats.norm.pdf(w)
        hi_term = hi * (1.0 - cdf_w)
    out[pos] = lo_term + hi_term + mu * (cdf_w - cdf_a) + s * (pdf_a - pdf_w)
    return out.reshape(shape)


def _activation_bounds(node) -> tuple:
    if node is None:
        return -np.inf, np.inf
    if node.op == "relu":
        return 0.0, np.inf
    if node.op == "relu6":
        return 0.0, 6.0
    return float(node.attrs["min"]), float(node.attrs["max"])


def _stats_of(graph: Graph, producer) -> tuple:
    """(beta, gamma) float64 arrays recorded for `producer`; QuantError when malformed."""
    rec = graph.meta["folded_bn"][producer.name]
    where = f"graph '{graph.name}': meta['folded_bn']['{producer.name}']"
    try:
        gamma = np.asarray(rec["gamma"], dtype=np.float64)
        beta = np.asarray(rec["beta"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise QuantError(f"{where}: expected {{'gamma': [...], 'beta': [...]}} ({e}); "
                         "fold batch norms again (refq.algorithms.bn_fold)") from None
    channels = producer.params["weight"].shape[0]
    if gamma.shape != (channels,) or beta.shape != (channels,):
        raise QuantError(f"{where}: gamma {list(gamma.shape)} and beta {list(beta.shape)} must "
                         f"both be [{channels}], the output channels of '{producer.name}'")
    if not (np.all(np.isfinite(gamma)) and np.all(np.isfinite(beta))):
        raise QuantError(f"{where}: the statistics hold NaN or Inf")
    return beta, gamma


def _own_padding(node, shapes) -> bool:
    """True when conv2d `node` pads its input with zeros (or may: unknown spatial size)."""
    if node.op != "conv2d":
        return False
    a = node.attrs
    if a["padding"] == "valid":
        return False
    if a["padding"] == "explicit":
        return any(a["pads"])
    _, kh, kw, _ = node.params["weight"].shape
    hw = shapes[node.inputs[0]][1:3]
    pads, _ = window_geometry(hw, (kh, kw), a["strides"], a["dilations"], a["padding"], a["pads"])
    return any(p is None or p > 0 for p in pads)


def _analytical_source(graph, node, producers, shapes):
    """(info, None) when `node` satisfies the data-free rule (module docstring), else (None, why).
    """
    recorded = graph.meta.get("folded_bn") or {}
    t = node.inputs[0]
    path, act = [], None
    while True:
        p = producers.get(t)
        if p is None:
            return None, f"its input '{t}' is a graph input, whose statistics are unknown"
        if p.op in _TRANSPARENT or (p.op in _ACTIVATIONS and act is None):
            if p.op in _ACTIVATIONS:
                act = p
            path.append(p)
            t = p.inputs[0]
            continue
        break
    if p.op in CORRECTED_OPS and p.name in recorded:
        beta, gamma = _stats_of(graph, p)
        lo, hi = _activation_bounds(act)
        through = ("through " + ", ".join(n.op for n in reversed(path))) if path \
            else "directly (no activation)"
        reason = f"analytical: input from bn-folded {p.op} '{p.name}' {through}"
        borders = []
        if any(n.op == "zero_pad2d" for n in path):
            borders.append("zero_pad2d")
        if _own_padding(node, shapes):
            borders.append("own zero padding")
        if borders:
            reason += f" ({' and '.join(borders)}: inexact at the borders)"
        return {"source": p.name, "activation": None if act is None else act.op,
                "bounds": [lo, hi], "expected_input": clipped_normal_mean(beta, gamma, lo, hi),
                "reason": reason}, None
    if p.op in CORRECTED_OPS:
        return None, (f"its input comes from {p.op} '{p.name}', which has no recorded BN "
                      "statistics (graph.meta['folded_bn'])")
    if p.op in _ACTIVATIONS:
        return None, (f"its input passes through two activations ('{p.name}' and "
                      f"'{act.name}'); the data-free rule allows one")
    return None, (f"its input comes from '{p.name}' ({p.op}); the data-free rule needs a "
                  "bn-folded conv2d/dense followed only by relu/relu6/clip and "
                  "zero_pad2d/identity")


def _expected_error(node, w, wq, ex) -> np.ndarray:
    """e = ε·E[x] per output channel (module docstring), float64."""
    if node.op == "dense":
        return (wq - w) @ ex
    eps = (wq - w).sum(axis=(1, 2))  # [O, C/groups]
    groups = node.attrs["groups"]
    if groups == 1:
        return eps @ ex
    o, cg = eps.shape
    ex_o = ex.reshape(groups, cg)[np.arange(o) // (o // groups)]  # input channels output o reads
    return (eps * ex_o).sum(axis=1)


# ----------------------------------------------------------------------------- empirical pass

def _calibration_feeds(graph: Graph, data) -> dict:
    """{input name: float64 array} of the whole calibration set; QuantError/InputError."""
    parts: dict = {}
    for k, batch in enumerate(iterate_batches(data, graph)):
        batch = _check_feeds(graph, batch)
        for name, x in batch.items():
            if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
                bad = np.argwhere(~np.isfinite(x))[0].tolist()
                raise QuantError(f"bias correction data, batch {k}: input '{name}' holds NaN or "
                                 f"Inf (first at index {bad}); clean the calibration data")
            parts.setdefault(name, []).append(x)
    feeds = {name: np.concatenate(xs, axis=0, dtype=np.float64) for name, xs in parts.items()}
    if not feeds or next(iter(feeds.values())).shape[0] == 0:
        raise QuantError("bias correction: the calibration data holds no samples; give at least "
                         "one non-empty batch")
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
                         "data=... (a few hundred samples), or use mode='analytical' after "
                         "folding batch norms")
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
            raise QuantError(f"graph '{g.name}': BN statistics missing: fold batch norms first "
                             "(refq.algorithms.bn_fold) or give calibration data")
        raise QuantError(f"graph '{g.name}': no conv2d/dense reads a bn-folded layer through "
                         "relu/relu6/clip and zero_pad2d/identity only, so analytical bias "
                         "correction can correct nothing; give calibration data")

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
