"""Batch-norm re-estimation and folding into the weight scale, as AIMET 2.42 does them.

`reestimate_bn_stats(model, data, num_batches=100) -> (model', report)`
    (AIMET 2.42 `aimet_torch/bn_reestimation.py::reestimate_bn_stats`; aimet.md §12.) `model` is a
    float Graph (run in float64, refq's reference precision) or a calibrated QuantSim (its
    simulated forward: fake-quantized weights and activations, in `sim.numerics.dtype`, float32 for
    AIMET_V2). AIMET puts the model in eval mode and every batch norm in train mode with momentum
    1.0 and reset running statistics, then for each of the first B = min(len(data), num_batches)
    batches runs the forward and adds each BN's running statistics to a buffer:
        during batch j, every batch_norm normalises with its batch's own statistics
            μ_j[c]  = Σ x / M,   σ²_j[c] = Σ (x − μ_j)² / M       (biased, M values per channel)
            y = γ·(x − μ_j)/sqrt(σ²_j + eps) + β                   (train mode: what consumers see)
        and, momentum 1, its running statistics become that batch's alone:
            running_mean = μ_j,   running_var = σ²_j · M/(M − 1)   (the UNBIASED variance)
    After the B batches:
            mean[c]     = (Σ_j μ_j[c]) / B
            variance[c] = (Σ_j σ²_j[c]·M_j/(M_j − 1)) / B
    i.e. the arithmetic mean of the per-batch statistics (not the statistics of the pooled data,
    and not an exponential moving average: momentum 1 makes each batch replace the previous one,
    and the buffer averages them). A BN downstream of another sees its input as produced with the
    upstream BN in train mode, as in AIMET. The sums run in the compute dtype in batch order (AIMET:
    a float32 buffer `zeros_like(running_mean)`), then are divided by B. γ, β, epsilon and every
    other parameter are unchanged; the new statistics are stored in each BN's parameter dtype.
    For a QuantSim the encodings are kept; only the graph's BN statistics change.
`fold_reestimated_bns(model) -> (model', report)`
    A Graph: `refq.algorithms.bn_fold.fold_batch_norms` on it. A QuantSim (AIMET 2.42
    `fold_all_batch_norms_to_scale`, aimet.md §0.2.8 and §4): the graph is folded the same way and
    a QuantSim with the same settings is placed on it; every quantizer keeps its encoding by name
    (the BN's output quantizer stays on its tensor, which the folded layer now produces). The weight
    encoding of a layer that absorbed a BN backward is `fold_into_scale`d by k = γ/sqrt(var + eps)
    per output channel; a layer that absorbed one forward, or any other parameter quantizer of a
    folded layer (a bias quantizer), gets its encoding recomputed from the new values with the
    sim's scheme. An encoding that no longer has a quantizer (the layer's own output quantizer
    before the fold, which AIMET refuses to fold over) is dropped and listed.
`fold_into_scale(weight, encoding, factor) -> (weight', encoding')`
    w'[o] = w[o]·s_o per output channel (axis 0) and the encoding's range [min, max]·s_o, swapped
    when s_o < 0 (AIMET: `weight_quantizer.min/max` times γ/σ; the aimet_torch source read copies
    the new max into `min` and never writes `max`, a slip refq does not reproduce); with
    set_range's rules that is
        scale'_o = max(fl32(scale_o·|s_o|), minimum scale)
        zero_point'_o = zero_point_o                   s_o ≥ 0, or any symmetric encoding
                      = qmin + qmax − zero_point_o     s_o < 0, asymmetric (the reflected range)
    Claim: qdq(w') = qdq(w)·s when s > 0. Proof, in exact arithmetic, with q the code of w:
        q' = clamp(round(w·s/(Δ·s)) + z, qmin, qmax) = clamp(round(w/Δ) + z, qmin, qmax) = q,
        x̂' = (q' − z)·Δ·s = x̂·s.                                                            ∎
    In floating point (AIMET_V2: float32, v = x·fl(1/Δ)) it is bit-exact when every s_o is a power
    of two 2^e (no overflow or subnormals): fl(w·2^e) = w·2^e, fl(Δ·2^e) = Δ·2^e and
    fl(1/(Δ·2^e)) = fl(1/Δ)·2^−e, so v' = v and q' = q, and x̂' = fl((q − z)·Δ)·2^e = x̂·s. For
    other s the products round: v' = v·(1 + δ), |δ| ≤ 6u (u = 2^−24), so a code can move only where
    x/Δ lies within 6u|x/Δ| of a rounding tie, and x̂' = x̂·s·(1 + δ'), |δ'| ≤ 3u.
    For s < 0: round half-even is odd (round(−v) = −round(v)). Asymmetric: q' = qmin + qmax − q,
    since reflecting t -> qmin + qmax − t maps [qmin, qmax] onto itself, so x̂' = −(q − z)Δ|s| =
    x̂·s exactly as above. Symmetric grids [−2^(b−1), 2^(b−1) − 1] are not reflection-symmetric:
    q' = −q except where q = qmin (−q = 2^(b−1) clamps to qmax), so qdq(w') = qdq(w)·s except at
    the weights whose code is qmin, which land one step short.
Errors (one line, RefqError subclasses)
    QuantError: no batch in `data`, num_batches not a positive integer, a per-tensor weight encoding
    given per-channel factors, a factor that is not finite, a model that is neither Graph nor
    QuantSim, an integer model. InputError: a batch of the wrong rank or shape (naming the batch).
    ShapeError: a batch norm that sees fewer than 2 values per channel (the unbiased variance needs
    two). The input model is never modified.
"""
from __future__ import annotations

import copy
import itertools

import numpy as np

from ..data_io import iterate_batches
from ..errors import InputError, QuantError, ShapeError
from ..graph import Graph
from ..layers.normalization import batch_norm_train, scale_and_shift
from ..plan import Plan
from ..progress import progress
from ..quant.encoding import Encoding, minimum_scale
from ..quant.placement import require_float_model
from ..quant.quantsim import QuantSim, check_calibration_batch
from .bn_fold import fold_batch_norms

__all__ = ["reestimate_bn_stats", "fold_reestimated_bns", "fold_into_scale",
           "DEFAULT_NUM_BATCHES", "RUNNING_MOMENTUM"]

DEFAULT_NUM_BATCHES = 100
"""AIMET 2.42 `bn_reestimation.DEFAULT_NUM_BATCHES`."""

RUNNING_MOMENTUM = 1.0
"""Momentum of the running statistics during re-estimation (AIMET `_reset_momentum`): each batch's
statistics replace the previous ones."""


# ----------------------------------------------------------------------------- re-estimation

def _unpack(model, what: str):
    """(graph, sim or None) of a Graph or QuantSim; QuantError otherwise."""
    if isinstance(model, QuantSim):
        return model.graph, model
    if isinstance(model, Graph):
        require_float_model(model, what, "give the float model or its QuantSim")
        return model, None
    raise QuantError(f"{what} takes a refq Graph or a QuantSim, got {type(model).__name__}")


def _check_num_batches(num_batches) -> int:
    if isinstance(num_batches, (bool, np.bool_)) or not isinstance(num_batches, (int, np.integer)) \
            or num_batches < 1:
        raise QuantError(f"num_batches must be a positive integer, got {num_batches!r}")
    return int(num_batches)


def _runner(graph: Graph, sim):
    """run(feeds, call) -> outputs: the float64 forward of `graph`, or the sim's simulated one."""
    if sim is None:
        plan, hooks = Plan(graph, np.float64), {}
    else:
        sim_plan = sim.plan()
        plan, hooks = sim_plan.plan, sim_plan.hooks

    def run(feeds, call):
        n = max((len(v) for v in feeds.values() if np.ndim(v)), default=1)
        return plan.run(feeds, batch_size=max(n, 1), call=call, threads=1, **hooks)
    return run


def reestimate_bn_stats(model, data, num_batches: int = DEFAULT_NUM_BATCHES,
                        batch_size: int | None = None, quiet: bool = True):
    """Re-estimate every batch_norm's mean and variance on `data` (module docstring).

    model: a Graph or a calibrated QuantSim. data: an array, a dict of arrays (cut into batches of
    `batch_size`, `refq.data_io.iterate_batches`) or an iterable of batches. Returns (new model of
    the same kind, report); the input model is not modified. quiet=False shows a progress bar."""
    graph, sim = _unpack(model, "batch-norm re-estimation")
    num_batches = _check_num_batches(num_batches)
    if sim is None:
        graph = graph.copy()
        graph.validate()  # validation normalises attributes: on the copy, never the input
    bns = [n for n in graph.topological_order() if n.op == "batch_norm"]
    report = {"algorithm": "reestimate_bn_stats", "mode": "sim" if sim is not None else "float",
              "num_batches": 0, "batch_sizes": [], "batch_norms": [],
              "notes": "no batch_norm nodes: the model is returned unchanged" if not bns else
              ("per batch: mean and unbiased variance of the BN input with every BN in train "
               "mode (momentum 1); the new statistics are their arithmetic means over the batches")}
    sums = {bn.name: None for bn in bns}
    run = _runner(graph, sim)

    def call(node, op, inputs, params):
        if node.op != "batch_norm":
            return op.forward(inputs, params, node.attrs)
        try:
            y, running = batch_norm_train(inputs[0], params, node.attrs, RUNNING_MOMENTUM)
        except ShapeError as e:
            raise ShapeError(f"node '{node.name}': {e}; give batches with more samples") from None
        t = inputs[0].dtype.type
        stats = (np.asarray(running["mean"], t), np.asarray(running["variance"], t))
        prev = sums[node.name]
        sums[node.name] = stats if prev is None else (prev[0] + stats[0], prev[1] + stats[1])
        return y

    batches = itertools.islice(iterate_batches(data, graph, batch_size), num_batches)
    for k, feeds in enumerate(progress(batches, desc="batchnorm re-estimation", quiet=quiet)):
        where = f"batch-norm re-estimation batch {k}"
        feeds = check_calibration_batch(graph, feeds, where)
        try:
            run(feeds, call)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        report["num_batches"] += 1
        report["batch_sizes"].append(int(max(len(v) for v in feeds.values())))
    if report["num_batches"] == 0:
        raise QuantError("batch-norm re-estimation: the data holds no batch; give at least one "
                         "non-empty batch")

    new_model = copy.deepcopy(sim) if sim is not None else graph
    new_graph = new_model.graph if sim is not None else new_model
    count = report["num_batches"]
    for bn in bns:
        node = new_graph.node(bn.name)
        old_mean, old_var = bn.params["mean"], bn.params["variance"]
        s_mean, s_var = sums[bn.name]
        t = s_mean.dtype.type
        node.params["mean"] = (s_mean / t(count)).astype(old_mean.dtype)
        node.params["variance"] = (s_var / t(count)).astype(old_var.dtype)
        report["batch_norms"].append(_moved(bn.name, old_mean, old_var, node.params))
    return new_model, report


def _moved(name, old_mean, old_var, new) -> dict:
    """The report entry of one batch norm: its statistics before and after."""
    mean, var = new["mean"].astype(np.float64), new["variance"].astype(np.float64)
    old_mean, old_var = old_mean.astype(np.float64), old_var.astype(np.float64)
    return {"bn": name,
            "mean_before": old_mean.tolist(), "mean_after": mean.tolist(),
            "variance_before": old_var.tolist(), "variance_after": var.tolist(),
            "max_abs_mean_change": float(np.max(np.abs(mean - old_mean), initial=0.0)),
            "max_abs_variance_change": float(np.max(np.abs(var - old_var), initial=0.0))}


# ----------------------------------------------------------------------------- fold into scale

def fold_into_scale(weight, encoding: Encoding, factor):
    """(w', encoding') with w'[o] = w[o]·s_o and the encoding's range scaled by s (module
    docstring, with the proof that qdq(w') = qdq(w)·s for s > 0). `factor` is s per output
    channel (axis 0) or one number; a per-tensor encoding takes one common factor only."""
    w = np.asarray(weight)
    s = np.asarray(factor, dtype=np.float64)
    if not np.all(np.isfinite(s)):
        raise QuantError(f"fold_into_scale: factors must be finite, got {s}")
    if s.ndim > 1 or (s.ndim == 1 and s.shape[0] != w.shape[0]):
        raise QuantError(f"fold_into_scale: {s.shape} factors for a weight with {w.shape[0]} "
                         "output channels; give one per output channel (axis 0)")
    if encoding.axis is None and s.ndim == 1 and not np.all(s == s[0]):
        raise QuantError("fold_into_scale: a per-tensor weight encoding cannot take per-channel "
                         "factors; quantize the weight per channel (config 'per_channel')")
    if encoding.axis not in (None, 0):
        raise QuantError(f"fold_into_scale: the weight encoding's axis is {encoding.axis}; "
                         "fold-to-scale needs per-channel axis 0 (output channels)")
    if encoding.axis is None:
        s = s.reshape(-1)[0] if s.ndim else s
    new_w = (w * s.reshape(s.shape + (1,) * (w.ndim - s.ndim))).astype(w.dtype)
    floor = minimum_scale(encoding.qmax - encoding.qmin)
    scale = np.maximum((encoding.scale.astype(np.float64) * np.abs(s)).astype(np.float32), floor)
    zp = encoding.zero_point
    if not encoding.symmetric:
        zp = np.where(s < 0, encoding.qmin + encoding.qmax - zp, zp)
    new_enc = Encoding(scale, zp, encoding.bitwidth, encoding.qmin, encoding.qmax,
                       encoding.symmetric, encoding.axis)
    return new_w, new_enc


def fold_reestimated_bns(model):
    """Fold every batch_norm it can into its conv2d/dense neighbour (module docstring); for a
    QuantSim the folded weights' encodings follow (`fold_into_scale`). Returns (new model,
    report); the input model is not modified."""
    graph, sim = _unpack(model, "batch-norm folding")
    folded_graph, fold_report = fold_batch_norms(graph)
    if sim is None:
        return folded_graph, fold_report
    new_sim = QuantSim(folded_graph, sim.config, param_bw=sim.param_bw, act_bw=sim.act_bw,
                       scheme=sim.scheme, scheme_options=sim.scheme_options,
                       numerics=sim.numerics, overflow_protection=sim.overflow_protection,
                       detect_prequantized=sim.detect_prequantized)
    folded_into = {f["into"]: f for f in fold_report["folded"]}
    scaled, recomputed, missing = [], [], []
    for name, q in new_sim.quantizers.items():
        old = sim.encodings.get(name)
        if q.kind == "param" and q.node in folded_into:
            fold = folded_into[q.node]
            if fold["direction"] == "backward" and q.param == "weight" and old is not None:
                bn = graph.node(fold["bn"])
                k, _ = scale_and_shift(bn.params, bn.attrs["epsilon"], np.float64)
                _, new_sim.encodings[name] = fold_into_scale(
                    graph.node(q.node).params["weight"], old, k)
                scaled.append(name)
            else:
                new_sim.encodings[name] = new_sim._param_encoding(q)
                recomputed.append(name)
        elif old is not None:
            new_sim.encodings[name] = old
        else:
            missing.append(name)
        new_sim.enabled[name] = sim.enabled.get(name, True)
    dropped = sorted(set(sim.encodings) - set(new_sim.quantizers))
    report = dict(fold_report, algorithm="fold_reestimated_bns",
                  scaled_weight_encodings=scaled, recomputed_encodings=recomputed,
                  dropped_encodings=dropped, quantizers_without_encoding=missing)
    return new_sim, report

