"""Batch-norm folding: `fold_batch_norms(graph) -> (graph, report)`.

Definition (AIMET 2.42 `batch_norm_fold.py`, reference notes aimet.md §0.2.8 and §4)
    Every batch_norm is the affine map y = k ⊙ (x − μ) + β per channel, k = γ / sqrt(var + eps),
    with eps the node's own `epsilon` (Keras's value, as imported). It is merged into an adjacent
    conv2d or dense layer L (weight W, bias b = 0 when L has none):
    backward  L -> BN   (BN reads L's output and is its only consumer):
              W'[o] = W[o] · k_o                    (every weight of output channel o)
              b'_o  = β_o − (μ_o − b_o) · k_o
    forward   BN -> L   (L is the only consumer of BN's output):
              W'[..., c] = W[..., c] · k_c          (every weight of input channel c)
              b'   = b + Ŵ · (β − μ ⊙ k),           Ŵ[o, c] = Σ_{kh,kw} W[o, kh, kw, c] (original W)
    A forward fold is exact only when L never reads a padded value (padding "valid", explicit zero
    pads, or "same" with a 1x1 kernel, which pads nothing) and groups == 1, or L is dense: a padded
    zero would have to become the BN's image of zero. Other forward candidates are left alone.
Search
    batch_norm nodes are visited in topological order, on the graph as given (a fold does not create
    new candidates, as AIMET's pattern match on the original graph): first every backward fold, then
    a forward fold for the BNs still unfolded (backward folds have priority). Each BN is folded at
    most once. A tensor that is a graph output or has several consumers is never folded through.
    The BN's channel axis must be the last one (NHWC), the layer's output/input channel axis.
Result
    The folded layer keeps its name. A backward fold gives it the BN's output tensor name, so the
    BN's consumers are unchanged; a forward fold makes it read the BN's input. The BN node
    disappears. A layer without bias gets one. Folded weights and biases are computed and stored in
    float64 so that the float function is preserved to ~1e-15 relative (AIMET computes
    σ = sqrt(var + eps) and k = γ/σ in float32 and stores float32 parameters; expect differences of
    a few float32 ulps against AIMET's folded weights).
    graph.meta["folded_bn"][<layer name>] = {"gamma": [...], "beta": [...]} records, for backward
    folds only, the folded BN's γ and β: the layer's output is then ~ N(β, γ²) per channel, the
    statistics that high-bias absorption (refq.algorithms.cle) and analytical bias correction read.
    (AIMET also enters forward folds in its BN dictionary, where they describe the layer's *input*,
    aimet.md §5.d pitfall; refq does not.)
Report
    {"algorithm", "folded": [{"bn", "into", "direction"}] (backward folds, then forward folds, each
    in graph order), "not_folded": [{"bn", "reason"}], "precision", "notes"}
Errors
    QuantError for an integer model (`refq.quant.placement.require_float_model`); GraphError/
    ParamError from validating the input graph; ParamError when var + eps <= 0.
The input graph is never modified.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParamError
from ..graph import Graph
from ..layers.normalization import scale_and_shift
from ..quant.placement import require_float_model
from ..layers import ops_with

__all__ = ["fold_batch_norms", "reads_padding", "FOLD_DTYPE"]

FOLD_DTYPE = np.float64
"""Precision of the fold and of the stored folded parameters (AIMET 2.42: float32)."""

LAYER_OPS = ops_with("bn_foldable")   # the layers a batch norm folds into (`Traits`)


def fold_batch_norms(graph: Graph):
    """Fold every foldable batch_norm into its conv2d/dense neighbour; see the module docstring.

    Returns (new graph, report). The input graph is not modified.
    """
    require_float_model(graph, "batch-norm folding (`refq quantize`, `refq equalize`)",
                        "fold the float model (the one `refq quantize` takes)")
    g = graph.copy()
    g.validate()
    order = g.topological_order()
    producers, consumers = g.producers(), g.consumers()
    outputs = set(g.outputs)
    shapes = g.infer_shapes()
    bns = [n for n in order if n.op == "batch_norm"]

    folded, blocked, removed = [], {}, set()
    meta_stats = {}
    for bn in bns:  # pass 1: backward folds
        layer, why = _backward_target(bn, producers, consumers, outputs, shapes)
        if layer is None:
            blocked[bn.name] = ["backward: " + why]
            continue
        _fold_backward(layer, bn)
        layer.outputs = [bn.outputs[0]]
        removed.add(bn.name)
        folded.append({"bn": bn.name, "into": layer.name, "direction": "backward"})
        meta_stats[layer.name] = {"gamma": _floats(bn.params["gamma"]),
                                  "beta": _floats(bn.params["beta"])}
    for bn in bns:  # pass 2: forward folds of the BNs left
        if bn.name in removed:
            continue
        layer, why = _forward_target(bn, consumers, outputs, shapes)
        if layer is None:
            blocked[bn.name].append("forward: " + why)
            continue
        _fold_forward(layer, bn)
        layer.inputs = [bn.inputs[0]]
        removed.add(bn.name)
        folded.append({"bn": bn.name, "into": layer.name, "direction": "forward"})

    g.nodes = [n for n in g.nodes if n.name not in removed]
    if meta_stats:
        g.meta.setdefault("folded_bn", {}).update(meta_stats)
    g.validate()
    not_folded = [{"bn": bn.name, "reason": "; ".join(blocked[bn.name])}
                  for bn in bns if bn.name not in removed]
    report = {
        "algorithm": "fold_batch_norms",
        "folded": folded,
        "not_folded": not_folded,
        "num_folded": len(folded),
        "precision": np.dtype(FOLD_DTYPE).name,
        "notes": ("k = gamma/sqrt(var + eps) with the node's epsilon; computed and stored in "
                  "float64 (AIMET 2.42 computes in float32). graph.meta['folded_bn'] holds the "
                  "backward-folded BNs' gamma/beta per layer."),
    }
    return g, report


def _floats(a) -> list:
    return [float(v) for v in np.asarray(a, dtype=FOLD_DTYPE).ravel()]


def _is_channel_last(bn, tensor, shapes) -> bool:
    rank = len(shapes[tensor])
    return bn.attrs["axis"] % rank == rank - 1


def _backward_target(bn, producers, consumers, outputs, shapes):
    """(layer, None) when bn folds backward into its producer, else (None, reason)."""
    t = bn.inputs[0]
    layer = producers.get(t)
    if layer is None:
        return None, f"input '{t}' is a graph input"
    if layer.op not in LAYER_OPS:
        return None, f"input '{t}' is produced by {layer.op} '{layer.name}', not conv2d/dense"
    if t in outputs:
        return None, f"{layer.op} output '{t}' is a graph output"
    n = len(consumers.get(t, []))
    if n != 1:
        return None, f"{layer.op} output has {n} consumers"
    if not _is_channel_last(bn, t, shapes):
        return None, f"axis {bn.attrs['axis']} is not the channel axis of '{layer.name}'"
    return layer, None


def _forward_target(bn, consumers, outputs, shapes):
    """(layer, None) when bn folds forward into its consumer, else (None, reason)."""
    t = bn.outputs[0]
    if t in outputs:
        return None, f"output '{t}' is a graph output"
    n = len(consumers.get(t, []))
    if n != 1:
        return None, f"output has {n} consumers"
    layer = consumers[t][0]
    if layer.op not in LAYER_OPS:
        return None, f"consumer '{layer.name}' is {layer.op}, not conv2d/dense"
    if not _is_channel_last(bn, t, shapes):
        return None, f"axis {bn.attrs['axis']} is not the channel axis of '{layer.name}'"
    if layer.op == "conv2d":
        if layer.attrs["groups"] != 1:
            return None, f"groups != 1 ('{layer.name}' has groups {layer.attrs['groups']})"
        if reads_padding(layer):
            return None, f"forward fold into a padded conv is not exact ('{layer.name}')"
    return layer, None


def reads_padding(conv) -> bool:
    """True when conv2d may read padded values (the "same" rule pads nothing for a 1x1 kernel)."""
    a = conv.attrs
    if a["padding"] == "valid":
        return False
    if a["padding"] == "explicit":
        return any(a["pads"])
    return conv.params["weight"].shape[1:3] != (1, 1)


def _weight_bias(layer):
    w = layer.params["weight"].astype(FOLD_DTYPE)
    b = layer.params.get("bias")
    b = np.zeros(w.shape[0], FOLD_DTYPE) if b is None else b.astype(FOLD_DTYPE)
    return w, b


def _bn_terms(bn):
    try:
        k, _ = scale_and_shift(bn.params, bn.attrs["epsilon"], FOLD_DTYPE)
    except ParamError as e:
        raise ParamError(f"node '{bn.name}': {e}; fix its moving variance (or epsilon) before "
                         "folding") from None
    p = {name: bn.params[name].astype(FOLD_DTYPE) for name in ("beta", "mean")}
    return k, p["beta"], p["mean"]


def _fold_backward(layer, bn):
    w, b = _weight_bias(layer)
    k, beta, mean = _bn_terms(bn)
    layer.params["weight"] = w * k.reshape((-1,) + (1,) * (w.ndim - 1))
    layer.params["bias"] = beta - (mean - b) * k


def _fold_forward(layer, bn):
    w, b = _weight_bias(layer)
    k, beta, mean = _bn_terms(bn)
    w_hat = w.sum(axis=(1, 2)) if w.ndim == 4 else w  # [O, C]: the kernel summed over kh, kw
    layer.params["weight"] = w * k  # the input channel is the last axis of OHWI and [units, in]
    layer.params["bias"] = b + w_hat @ (beta - mean * k)
