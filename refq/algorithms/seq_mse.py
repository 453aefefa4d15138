"""Sequential MSE: choose each conv2d/dense weight encoding by the layer-output error it causes.

AIMET 2.42 `seq_mse.py` (`SeqMseParams(num_batches, num_candidates=20, inp_symmetry='symqt',
loss_fn='mse')`, aimet.md §12):

    new_sim, report = seq_mse(sim, data, num_candidates=20, inp_symmetry="symqt", loss_fn="mse")

Definition
    Layers: every conv2d and dense node (depthwise and grouped convolutions included, as AIMET's
    torch Conv2d) whose weight quantizer is enabled, in topological (forward) order. A layer whose
    weight bitwidth exceeds SUPPORTED_PARAM_BW = 4 is skipped, as AIMET skips it ("Skip running
    Sequential MSE if param BW is higher than supported PARAM_BW"): it keeps its ordinary encoding
    and the report names it with the reason.
    While searching, every activation and input quantizer is off, and so is every parameter
    quantizer of the other ops; the conv2d/dense weight quantizers stay on. Every parameter encoding
    is first recomputed from the weights (`QuantSim.compute_param_encodings`, AIMET's
    `compute_all_param_encodings` with overwrite).
    Candidates, for a weight W reshaped to [O, R] (float32) and K = num_candidates, k = 1..K, in
    float32 as AIMET evaluates them (fl = rounding to float32):
        symmetric quantizer:  max_k = fl(fl(max_r |W[o, r]| / K) · k),   min_k = −max_k
        asymmetric quantizer: max_k = fl(fl(max_r W[o, r] / K) · k),
                              min_k = fl(fl(min_r W[o, r] / K) · k)
    Candidate encoding: the 2-element tensor (min_k, max_k) of each channel goes through the
    min/max encoding rule with the quantizer's bitwidth, symmetry, grid and numerics
    (`encoding_from_min_max`; AIMET feeds it to a fresh QuantizeDequantize, whose analyzer is
    MinMax whatever the sim's scheme). A per-channel quantizer gets one encoding per channel; a
    per-tensor one gets the encoding of (min over channels of min_k, max over channels of max_k).
    Loss of candidate k for output channel c, summed over the calibration batches b:
        Ŵ_k = quantize_dequantize(W, enc_k)                (numerics dtype, as the sim computes it)
        Y = f(X; W), Ŷ_k = f(X̂; Ŵ_k)                       the layer without bias, channel last
                                                            (conv2d outputs are NHWC already)
        mse:  L[k, c] = Σ_b Σ_p (Ŷ_k − Y)[b, p, c]²        p = every position but the channel
        l1:   L[k, c] = Σ_b Σ_p |Ŷ_k − Y|[b, p, c]
        sqnr: L[k, c] = Σ_b −10·log10( mean_p Y[b,p,c]² / (mean_p (Y − Ŷ_k)[b,p,c]² + 1e-10) )
    Choice: k*[c] = argmin_k L[k, c]; on a tie the lowest k wins (torch.min returns the first
    minimum). The chosen (min_k*, max_k*) per channel (per-tensor: their min and max) give the
    layer's encoding by the same rule; it is set and frozen in the returned sim, and it applies
    when the inputs of later layers are computed.
    Inputs X (float model) and X̂ (the sim as above, with the encodings chosen so far):
        symqt: X = X̂ = the quantized model's input of the layer (the default)
        symfp: X = X̂ = the float model's input
        asym:  X from the float model, X̂ from the quantized model
    The float model runs in float64; the sim in its numerics dtype (float32 for AIMET_V2); layer
    outputs and losses are evaluated in float64 (the reference precision; AIMET: float32).
Worked example (tests/test_seq_mse.py)
    dense W = [[28, −12, 5.25], [14, 6.375, −3.125], [−14, 0, 6]], 4-bit symmetric per-channel,
    K = 4: max_k = (7k, 3.5k, 3.5k), Δ_k = (k, k/2, k/2); k = 3 gives Ŵ = [[21, −12, 6],
    [10.5, 6, −3], [−12, 0, 6]]. On x = [0.5, 1, 2] and [0, 1, 2] the mse losses are
    L[:, 0] = (61.25, 32.5, 6.25, 12.5), L[:, 1] = (68.90625, 13.15625, 3.53125, 9.03125),
    L[:, 2] = (25, 9, 1, 0), so k* = (3, 3, 4) and the scales become (3, 1.5, 2).
Cost
    The sim runs once per searched layer (its input depends on the encodings chosen before it),
    the float model once, each with every tensor of every batch held (trace); K candidate
    forwards of the layer itself per batch. PP-OCR classifier (BN folded, W4A8, 54 layers, 2
    batches of 16, K = 20): 32 s; test accuracy 0.917 (min/max weights) -> 0.964 (float 0.979).
Sources of the rules
    The candidates from the weight's own absmax (or min and max) follow aimet.md §12; newer AIMET
    v2 sources derive them from the weight quantizer's initial encoding (get_min/get_max), which
    differs for a symmetric weight whose absmax is its minimum (at 4 bits Δ_K = max(max/7,
    absmax/8) there, absmax/7 here). AIMET's blockwise path passes (XW, X̂Ŵ) to the loss in
    that order for dense layers; refq always takes XW as the signal of the SQNR loss.
Frozen encodings
    The chosen weight encodings are frozen in the returned sim (`QuantSim.freeze`, AIMET
    `allow_overwrite(False)`): `compute_encodings` and `compute_param_encodings` keep them, and
    so does a sim saved and read back, so the usual flow is seq_mse, then `compute_encodings`
    for the activations.
Report
    {"algorithm", "num_candidates", "inp_symmetry", "loss_fn", "num_batches",
     "layers": [{"node", "quantizer", "bitwidth", "per_channel", "candidate": [k* per channel,
                 1..K], "loss": [L[k*, c]], "loss_full_range": [L[K, c]]}],
     "skipped": [{"node", "reason"}]}
Errors
    QuantError: `sim` is not a QuantSim; num_candidates not a positive integer; unknown
    inp_symmetry or loss_fn; data without any batch, or data of a non-real dtype or holding NaN/Inf
    (`check_calibration_batch`). InputError: a batch of the wrong shape or rank.
"""
from __future__ import annotations

import numpy as np

from ..data_io import iterate_batches
from ..errors import QuantError
from ..layers import get_op
from ..plan import Plan
from ..quant.encoding import encoding_from_min_max, quantize_dequantize
from ..quant.quantsim import QuantSim, check_calibration_batch

__all__ = ["seq_mse", "candidate_ranges", "candidate_losses",
           "SUPPORTED_OPS", "SUPPORTED_PARAM_BW", "INPUT_SYMMETRIES", "LOSS_FUNCTIONS"]

#: the ops whose weight encodings are searched (AIMET: torch.nn.Linear, torch.nn.Conv2d)
SUPPORTED_OPS = ("conv2d", "dense")
#: AIMET's SUPPORTED_PARAM_BW: layers with a wider weight quantizer are skipped
SUPPORTED_PARAM_BW = 4
INPUT_SYMMETRIES = ("symqt", "symfp", "asym")
LOSS_FUNCTIONS = ("mse", "l1", "sqnr")
#: eps added to the noise power of the negative SQNR loss (AIMET `neg_sqnr`, eps=1e-10)
SQNR_EPS = 1e-10


def _copy_sim(sim: QuantSim) -> QuantSim:
    """A QuantSim holding copies of `sim`'s graph, encodings, switches and frozen set."""
    new = QuantSim.__new__(QuantSim)
    new.__dict__.update(sim.__dict__)
    new.graph = sim.graph.copy()
    new.quantizers = dict(sim.quantizers)
    new.encodings = dict(sim.encodings)
    new.enabled = dict(sim.enabled)
    new.frozen = set(sim.frozen)
    return new


def candidate_ranges(weight, num_candidates: int, symmetric: bool):
    """(mins, maxs), each float32 [K, O]: row k−1 holds candidate k of every output channel
    (module docstring, Candidates)."""
    w = np.asarray(weight, dtype=np.float32)
    rows = w.reshape(w.shape[0], -1)
    k = np.arange(1, num_candidates + 1, dtype=np.float32)[:, None]
    big_k = np.float32(num_candidates)
    if symmetric:
        maxs = (np.abs(rows).max(axis=1) / big_k)[None, :] * k
        return -maxs, maxs
    maxs = (rows.max(axis=1) / big_k)[None, :] * k
    mins = (rows.min(axis=1) / big_k)[None, :] * k
    return mins, maxs


def _encoding(q, lo, hi, numerics):
    """The min/max-rule encoding of per-channel ranges (lo, hi) for quantizer spec `q`
    (per-tensor: of their overall min and max)."""
    if q.axis is None:
        lo, hi = lo.min(), hi.max()
    return encoding_from_min_max(lo, hi, q.bitwidth, q.symmetric, axis=q.axis, strict=q.strict,
                                 unsigned_symmetric=q.unsigned_symmetric, numerics=numerics)


def _channel_loss(y_hat, y, loss_fn):
    """[C] loss of one batch, reduced over every axis but the last (module docstring)."""
    c = y.shape[-1]
    d = (y_hat - y).reshape(-1, c)
    if loss_fn == "mse":
        return (d * d).sum(axis=0)
    if loss_fn == "l1":
        return np.abs(d).sum(axis=0)
    y = y.reshape(-1, c)
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10((y * y).mean(axis=0) / ((d * d).mean(axis=0) + SQNR_EPS))


def candidate_losses(node, q, x_batches, xq_batches, num_candidates, loss_fn, numerics):
    """(losses [K, O] float64, mins [K, O], maxs [K, O]) of `node` (conv2d or dense) with weight
    quantizer spec `q`, on its float-path inputs `x_batches` and quantized-path inputs
    `xq_batches` (lists of arrays, one per batch)."""
    op = get_op(node.op)
    w = node.params["weight"]
    mins, maxs = candidate_ranges(w, num_candidates, q.symmetric)
    w64 = np.asarray(w, dtype=np.float64)
    targets = [op.forward([np.asarray(x, dtype=np.float64)], {"weight": w64}, node.attrs)
               for x in x_batches]
    losses = np.zeros(mins.shape, dtype=np.float64)
    for k in range(num_candidates):
        w_hat = quantize_dequantize(w, _encoding(q, mins[k], maxs[k], numerics), numerics)
        w_hat = np.asarray(w_hat, dtype=np.float64)
        for xq, y in zip(xq_batches, targets):
            y_hat = op.forward([np.asarray(xq, dtype=np.float64)], {"weight": w_hat}, node.attrs)
            losses[k] += _channel_loss(y_hat, y, loss_fn)
    return losses, mins, maxs


def _check_arguments(sim, num_candidates, inp_symmetry, loss_fn):
    if not isinstance(sim, QuantSim):
        raise QuantError(f"seq_mse: sim must be a refq QuantSim, got {type(sim).__name__}; build "
                         "one with QuantSim(graph, param_bw=4)")
    if isinstance(num_candidates, (bool, np.bool_)) or \
            not isinstance(num_candidates, (int, np.integer)) or num_candidates < 1:
        raise QuantError(f"seq_mse: num_candidates must be a positive integer, got "
                         f"{num_candidates!r}")
    if inp_symmetry not in INPUT_SYMMETRIES:
        raise QuantError(f"seq_mse: unknown inp_symmetry {inp_symmetry!r}; use one of "
                         f"{', '.join(INPUT_SYMMETRIES)}")
    if loss_fn not in LOSS_FUNCTIONS:
        raise QuantError(f"seq_mse: unknown loss_fn {loss_fn!r}; use one of "
                         f"{', '.join(LOSS_FUNCTIONS)}")


def _batches(sim, data) -> list:
    """The calibration batches, checked, each as given (the sqnr loss is per batch)."""
    batches = []
    for k, feeds in enumerate(iterate_batches(data, sim.graph)):
        src = getattr(feeds, "source", None)
        where = f"seq_mse data, batch {k}" + (f" (from {src})" if src else "")
        batches.append(check_calibration_batch(sim.graph, feeds, where))
    if not batches:
        raise QuantError("seq_mse: the data holds no batch; give at least one non-empty batch")
    return batches


def _weight_quantizers(sim) -> dict:
    """node name -> the enabled weight quantizer spec of each conv2d/dense node."""
    return {q.node: q for q in sim.quantizers.values()
            if q.kind == "param" and q.param == "weight" and sim.enabled.get(q.name, False)
            and sim.graph.node(q.node).op in SUPPORTED_OPS}


def seq_mse(sim: QuantSim, data, num_candidates: int = 20, inp_symmetry: str = "symqt",
            loss_fn: str = "mse"):
    """(new sim, report): Sequential MSE weight encodings (module docstring). `sim` is unchanged."""
    _check_arguments(sim, num_candidates, inp_symmetry, loss_fn)
    batches = _batches(sim, data)
    new = _copy_sim(sim)
    new.compute_param_encodings()
    weight_qs = _weight_quantizers(new)
    # the search runs with only the conv2d/dense parameter quantizers on
    searching = {q.name: bool(new.enabled.get(q.name)) for q in new.quantizers.values()
                 if q.kind == "param" and new.graph.node(q.node).op in SUPPORTED_OPS}
    report = {"algorithm": "seq_mse", "num_candidates": int(num_candidates),
              "inp_symmetry": inp_symmetry, "loss_fn": loss_fn, "num_batches": len(batches),
              "layers": [], "skipped": []}
    float_trace = None
    if inp_symmetry != "symqt":
        plan = Plan(new.graph, np.float64)
        float_trace = [plan.run(b, trace=True) for b in batches]
    for node in new.graph.topological_order():
        if node.op not in SUPPORTED_OPS:
            continue
        q = weight_qs.get(node.name)
        if q is None:
            report["skipped"].append({"node": node.name, "reason": "no enabled weight quantizer"})
            continue
        if q.bitwidth > SUPPORTED_PARAM_BW:
            report["skipped"].append({"node": node.name, "reason": (
                f"weight bitwidth {q.bitwidth} > {SUPPORTED_PARAM_BW} (AIMET SUPPORTED_PARAM_BW)")})
            continue
        t = node.inputs[0]
        x_float = x_quant = None
        if float_trace is not None:
            x_float = [tr[t] for tr in float_trace]
        if inp_symmetry != "symfp":       # the sim with the encodings chosen so far
            sim_plan = new.plan(searching)
            x_quant = [sim_plan.run(b, trace=True)[t] for b in batches]
        x = x_quant if inp_symmetry == "symqt" else x_float
        xq = x_float if inp_symmetry == "symfp" else x_quant
        losses, mins, maxs = candidate_losses(node, q, x, xq, num_candidates, loss_fn,
                                              new.numerics)
        best = np.argmin(losses, axis=0)          # the first minimum: lowest k on ties
        channels = np.arange(losses.shape[1])
        enc = _encoding(q, mins[best, channels], maxs[best, channels], new.numerics)
        new.encodings[q.name] = enc
        new.freeze([q.name])
        report["layers"].append({
            "node": node.name, "quantizer": q.name, "bitwidth": q.bitwidth,
            "per_channel": q.axis is not None, "candidate": (best + 1).tolist(),
            "loss": losses[best, channels].tolist(), "loss_full_range": losses[-1].tolist()})
    return new, report
