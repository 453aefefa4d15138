"""Weight SVD: a conv2d (groups 1) becomes a 1×1 convolution into r channels followed by the
original kernel on r channels; a dense layer becomes two dense layers through r units
(../shared/reference/aimet.md §8.2; AIMET `WeightSvdPruner.lingalg_weight_svd`,
`PyWeightSvdModuleSplitter`).

Split (AIMET's NCHW indices translated to refq's OHWI; a dense weight [O, C] is the 1×1 case
[O, 1, 1, C])
    AIMET: W[o, c, u, v] → permute (1, 0, 2, 3) → M[c, (o, u, v)] ∈ R^{C × (O·kh·kw)}
           (dense: M = Wᵀ ∈ R^{C × O}).
    refq:  w[o, u, v, c] = W[o, c, u, v], so M = w.transpose(3, 0, 1, 2).reshape(C, O·kh·kw).
    M = U S Vᵀ (thin SVD, float64), signs normalised (`spatial_svd.normalise_signs`), rank
    r <= min(C, O·kh·kw); every singular value goes to the second factor:
        P = U[:, :r]                Q = S_r · Vᵀ[:r]            (M ≈ P Q, = M at full rank)
    A  weight a[k, 0, 0, c] = P[c, k]            [r, 1, 1, C]     (AIMET [r, C, 1, 1])
       1×1, strides 1, padding valid; bias zeros [r] when the layer has a bias, else none (as
       AIMET); dense A weight [r, C] = Pᵀ
    B  weight b[o, u, v, k] = Q[k, (o, u, v)]    [O, kh, kw, r]   (AIMET [O, r, kh, kw])
       the original strides, dilations, padding and pads, and the original bias;
       dense B weight [O, r] = Qᵀ
    B(A(x)) is the original layer at full rank: A is pointwise and maps zero (padding) to zero,
    so B pads, strides and dilates exactly as the original did.
Nodes: "L/svd_a" and "L/svd_b" as in `refq.compression.spatial_svd`.
Cost, rank for a ratio, rounding: `refq.compression.cost` (maximum rank C, as AIMET's search).
Layers (`ConvFcLayerSelector`): conv2d with groups 1 and dense, in forward order.
METHOD is a `spatial_svd.SvdMethod`: the same interface, options, report and errors.
"""
from __future__ import annotations

import numpy as np

from ..graph import Node
from . import cost as C
from .spatial_svd import SvdMethod, _decompose, svd_node_names

__all__ = ["METHOD", "weight_factors"]


def weight_factors(weight: np.ndarray, rank: int, svd=np.linalg.svd):
    """(a [r, 1, 1, C], b [O, kh, kw, r]), float64, of OHWI `weight` [O, kh, kw, C] (module
    docstring)."""
    o, kh, kw, c = weight.shape
    u, s, vt = _decompose(np.asarray(weight).transpose(3, 0, 1, 2).reshape(c, o * kh * kw), svd)
    p = u[:, :rank]                         # [c, k]
    q = s[:rank, None] * vt[:rank]          # [k, (o, u, v)]
    a = p.T[:, None, None, :]
    b = q.reshape(rank, o, kh, kw).transpose(1, 2, 3, 0)
    return a, b


def _selects(node: Node):
    if node.op == "dense":
        return None
    if node.op != "conv2d":
        return f"it is a {node.op}; weight SVD compresses conv2d and dense layers"
    if node.attrs.get("groups", 1) != 1:
        return (f"it is a grouped/depthwise conv2d (groups {node.attrs['groups']}); weight SVD "
                "compresses conv2d layers with groups 1 and dense layers")
    return None


def _ohwi(node: Node) -> np.ndarray:
    w = node.params["weight"]
    return w[:, None, None, :] if node.op == "dense" else w


def _full_rank(node: Node) -> int:
    o, kh, kw, c = _ohwi(node).shape
    return min(c, o * kh * kw)


def _split(node: Node, rank: int, svd):
    """(A, B) replacing conv2d/dense `node` at `rank` (module docstring)."""
    w = node.params["weight"]
    a, b = weight_factors(_ohwi(node), rank, svd)
    name_a, name_b = svd_node_names(node.name)
    # contiguous copies: the layout of a weight decides BLAS's summation order, and a saved and
    # reloaded (contiguous) model must compute exactly what this one does
    params_a = {"weight": np.ascontiguousarray(a, w.dtype)}
    params_b = {"weight": np.ascontiguousarray(b, w.dtype)}
    if "bias" in node.params:
        params_a["bias"] = np.zeros(rank, node.params["bias"].dtype)
        params_b["bias"] = node.params["bias"].copy()
    if node.op == "dense":
        params_a["weight"] = np.ascontiguousarray(params_a["weight"][:, 0, 0, :])
        params_b["weight"] = np.ascontiguousarray(params_b["weight"][:, 0, 0, :])
        attrs_a, attrs_b = dict(node.attrs), dict(node.attrs)
    else:
        attrs_a = {"strides": [1, 1], "dilations": [1, 1], "padding": "valid",
                   "pads": [0, 0, 0, 0], "groups": 1}
        attrs_b = {k: (list(v) if isinstance(v, (list, tuple)) else v)
                   for k, v in node.attrs.items()}
    node_a = Node(name_a, node.op, list(node.inputs), [name_a], attrs_a, params_a)
    node_b = Node(name_b, node.op, [name_a], list(node.outputs), attrs_b, params_b)
    return node_a, node_b


METHOD = SvdMethod("weight-svd", _selects, C.weight_svd_cost, C.weight_svd_max_rank, _full_rank,
                   _split)
