"""Spatial SVD: a conv2d (groups 1) becomes a kh×1 convolution into r channels followed by a 1×kw
convolution (../shared/reference/aimet.md §8.1; AIMET `SpatialSvdPruner.lingalg_spatial_svd`,
`SpatialSvdModuleSplitter.split_module`). This module also holds what both SVD methods share:
`SvdMethod` (the METHOD object), the sign normalisation and the node replacement.

Split (AIMET's NCHW indices translated to refq's OHWI)
    AIMET: W[o, c, u, v] → transpose (1, 2, 0, 3) → M[(c, u), (o, v)] ∈ R^{(C·kh) × (O·kw)}.
    refq:  w[o, u, v, c] = W[o, c, u, v], so M = w.transpose(3, 1, 0, 2).reshape(C·kh, O·kw).
    M = U S Vᵀ (thin SVD, float64), signs normalised (`normalise_signs`), rank r <= min(C·kh, O·kw):
        P = U[:, :r] · sqrt(S_r)    Q = sqrt(S_r) · Vᵀ[:r]      (M ≈ P Q, = M at full rank)
    conv A  weight a[k, u, 0, c] = P[(c, u), k]   [r, kh, 1, C]   (AIMET [r, C, kh, 1])
            strides (sh, 1), dilations (dh, 1), no bias; padding: valid → valid, same → same,
            explicit [t, b, l, r] → [t, b, 0, 0]
    conv B  weight b[o, 0, v, k] = Q[k, (o, v)]   [O, 1, kw, r]   (AIMET [O, r, 1, kw])
            strides (1, sw), dilations (1, dw), the original bias; padding: valid → valid,
            same → same, explicit → [0, 0, l, r]
    Then B(A(x)) = Σ_{c,u,v} (P Q)[(c, u), (o, v)] · x_pad[i·sh + u·dh, j·sw + v·dw, c]: A reads the
    padded rows, B the padded columns of A's output, which are zero because A has no bias. "same"
    gives A the original's top/bottom pads (same kernel height and stride on that axis, none on the
    other) and B its left/right pads. AIMET's splitter refuses dilation; the split above is exact
    with it, so refq compresses dilated convolutions too.
Nodes
    The layer L becomes "L/svd_a" (reads L's input, writes tensor "L/svd_a") and "L/svd_b" (writes
    L's output tensor, so L's consumers are unchanged), at L's place in the node list.
    graph.meta["folded_bn"][L] moves to "L/svd_b", which produces the output it describes.
Cost, rank for a ratio, rounding: `refq.compression.cost` (maximum rank C·kh, as AIMET's search).
Layers (`ConvNoDepthwiseLayerSelector`): conv2d with groups 1, in forward order.

SvdMethod (both methods)
    layers(graph), rounded_ratio(graph, layer, ratio, cost), compress(graph, ratios, *, cost, data,
    seed, reconstruct) as in `refq.compression`; also rank(...), compressed_cost(...) and
    split(graph, {layer: rank}). `data`, `seed` and `reconstruct` are accepted and unused (SVD needs
    no data). Options: `dataclasses.replace(METHOD, multiplicity=8)` rounds ranks up to multiples
    of 8 (cost docstring); `svd=` replaces numpy.linalg.svd (tests flip signs with it).
    Report: {"method", "cost", "multiplicity", "layers": {L: {"ratio", "rank", "max_rank",
    "rounded_ratio", "achieved_ratio", "nodes", "before", "after"}}, "model": {"before", "after"}}
    with before/after {"macs", "params"} by AIMET's formulas (after = cost given rank).
Sign normalisation
    An SVD is unique up to the sign of each singular pair (u_k, v_k) (for distinct singular
    values). refq flips each pair so that the entry of u_k of largest magnitude (the first such
    index on a tie) is positive; the same factors then come out of any LAPACK. Repeated singular
    values leave a rotation within their subspace free, which no sign rule fixes.
Errors (InputError, one line): unknown layer, a layer the method cannot compress, a ratio outside
(0, 1], a rank outside 1..min(M's shape), an unknown cost metric; QuantError for integer models.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Callable

import numpy as np

from ..errors import GraphError, InputError
from ..graph import Graph, Node
from ..quant.placement import require_float_model
from . import cost as C

__all__ = ["METHOD", "SvdMethod", "spatial_factors", "normalise_signs", "svd_node_names"]

SVD_DTYPE = np.float64   # precision of the decomposition (factors are stored in the weight's dtype)


def normalise_signs(u: np.ndarray, vt: np.ndarray):
    """(U·D, D·Vᵀ) with D = diag(±1) making the largest-magnitude entry of each column of U
    positive (first index on ties); U·D·D·Vᵀ = U·Vᵀ exactly (negation is exact)."""
    pivot = np.argmax(np.abs(u), axis=0)
    sign = np.where(u[pivot, np.arange(u.shape[1])] < 0, -1.0, 1.0)
    return u * sign, vt * sign[:, None]


def _decompose(matrix, svd):
    u, s, vt = svd(np.asarray(matrix, SVD_DTYPE), full_matrices=False)
    u, vt = normalise_signs(np.asarray(u, SVD_DTYPE), np.asarray(vt, SVD_DTYPE))
    return u, np.asarray(s, SVD_DTYPE), vt


def spatial_factors(weight: np.ndarray, rank: int, svd=np.linalg.svd):
    """(a [r, kh, 1, C], b [O, 1, kw, r]), float64, of OHWI `weight` [O, kh, kw, C] (module
    docstring)."""
    o, kh, kw, c = weight.shape
    u, s, vt = _decompose(np.asarray(weight).transpose(3, 1, 0, 2).reshape(c * kh, o * kw), svd)
    root = np.sqrt(s[:rank])
    p = u[:, :rank] * root                  # [(c, u), k]
    q = root[:, None] * vt[:rank]           # [k, (o, v)]
    a = p.reshape(c, kh, rank).transpose(2, 1, 0)[:, :, None, :]
    b = q.reshape(rank, o, kw).transpose(1, 2, 0)[:, None, :, :]
    return a, b


def svd_node_names(layer: str) -> tuple:
    """The names of the two nodes (and of A's output tensor) that replace `layer`."""
    return f"{layer}/svd_a", f"{layer}/svd_b"


def _spatial_selects(node: Node):
    if node.op != "conv2d":
        return f"it is a {node.op}; spatial SVD compresses conv2d layers"
    if node.attrs.get("groups", 1) != 1:
        return (f"it is a grouped/depthwise conv2d (groups {node.attrs['groups']}); spatial SVD "
                "compresses conv2d layers with groups 1")
    return None


def _spatial_full_rank(node: Node) -> int:
    o, kh, kw, c = node.params["weight"].shape
    return min(c * kh, o * kw)


def _spatial_split(node: Node, rank: int, svd):
    """(conv A, conv B) replacing conv2d `node` at `rank` (module docstring)."""
    w = node.params["weight"]
    a, b = spatial_factors(w, rank, svd)
    (sh, sw), (dh, dw) = node.attrs["strides"], node.attrs["dilations"]
    padding, pads = node.attrs["padding"], list(node.attrs["pads"])
    name_a, name_b = svd_node_names(node.name)
    attrs_a = {"strides": [sh, 1], "dilations": [dh, 1], "padding": padding,
               "pads": pads[:2] + [0, 0], "groups": 1}
    attrs_b = {"strides": [1, sw], "dilations": [1, dw], "padding": padding,
               "pads": [0, 0] + pads[2:], "groups": 1}
    params_b = {"weight": np.ascontiguousarray(b, w.dtype)}   # contiguous: see weight_svd._split
    if "bias" in node.params:
        params_b["bias"] = node.params["bias"].copy()
    node_a = Node(name_a, "conv2d", list(node.inputs), [name_a], attrs_a,
                  {"weight": np.ascontiguousarray(a, w.dtype)})
    node_b = Node(name_b, "conv2d", [name_a], list(node.outputs), attrs_b, params_b)
    return node_a, node_b


def _is_ratio(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if not isinstance(value, (numbers.Real, Decimal, Fraction)):
        return False
    v = float(value)
    return bool(np.isfinite(v)) and 0 < C.exact_ratio(value) <= 1


@dataclass(frozen=True)
class SvdMethod:
    """A compression method that splits a layer in two by a truncated SVD (module docstring).

    selects(node) -> None, or why the method cannot compress node
    cost_given_rank(node, out_shape, rank) -> Cost;  max_rank(node) -> the search's first rank
    full_rank(node) -> the SVD's number of singular values;  split_node(node, rank, svd) -> (A, B)
    """

    name: str
    selects: Callable
    cost_given_rank: Callable
    max_rank: Callable
    full_rank: Callable
    split_node: Callable
    multiplicity: int = 1
    svd: Callable = field(default=np.linalg.svd)

    # ---- the interface of refq.compression ------------------------------------------------
    def layers(self, graph: Graph) -> list:
        """The layers this method can compress, in forward order."""
        return [n.name for n in graph.topological_order() if self.selects(n) is None]

    def rounded_ratio(self, graph: Graph, layer: str, ratio, cost: str = "macs") -> float:
        """The ratio AIMET's rank rounding gives for `ratio` (cost docstring): `ratio` itself when
        the multiplicity is 1 or the rounded rank equals the rank, else cost(rounded rank) /
        cost(layer) as the smallest float not below it."""
        return self._rounded_ratio(*self._prepare(graph, layer, ratio, cost)[:3], ratio)

    def compress(self, graph: Graph, ratios: dict, *, cost: str = "macs", data=None, seed: int = 0,
                 reconstruct: bool = True):
        """(new graph, report): each layer of `ratios` ({layer: ratio}) split at the (rounded)
        rank for its ratio; `graph` is unchanged."""
        if not isinstance(ratios, dict):
            raise InputError(f"{self.name}: ratios must be a dict {{layer name: ratio}}, got "
                             f"{type(ratios).__name__}")
        shapes = graph.infer_shapes()
        ranks, rounded = {}, {}
        for layer, ratio in ratios.items():
            node, original, cost_of_rank, _ = self._prepare(graph, layer, ratio, cost, shapes)
            ranks[layer] = self._rank(node, original, cost_of_rank, ratio)
            rounded[layer] = self._rounded_ratio(node, original, cost_of_rank, ratio)
        new, report = self.split(graph, ranks, cost=cost, shapes=shapes)
        for layer, ratio in ratios.items():
            report["layers"][layer].update(ratio=float(ratio), rounded_ratio=rounded[layer])
        return new, report

    # ---- more -------------------------------------------------------------------------------
    def rank(self, graph: Graph, layer: str, ratio, cost: str = "macs") -> int:
        """The rank `compress` uses for `layer` at `ratio` (AIMET's loop, then rounding)."""
        node, original, cost_of_rank, _ = self._prepare(graph, layer, ratio, cost)
        return self._rank(node, original, cost_of_rank, ratio)

    def compressed_cost(self, graph: Graph, layer: str, ratio, cost: str = "macs") -> C.Cost:
        """AIMET's cost of `layer` compressed at `ratio` (`calculate_per_layer_compressed_cost`)."""
        node, original, cost_of_rank, _ = self._prepare(graph, layer, ratio, cost)
        rank = self._rank(node, original, cost_of_rank, ratio)
        return self.cost_given_rank(node, graph.infer_shapes()[node.outputs[0]], rank)

    def split(self, graph: Graph, ranks: dict, *, cost: str = "macs", shapes: dict | None = None):
        """(new graph, report) with each layer of `ranks` ({layer: rank}) split at that rank."""
        require_float_model(graph, f"{self.name} compression", "compress the float model")
        metric = C.metric_name(cost)
        if not isinstance(ranks, dict):
            raise InputError(f"{self.name}: ranks must be a dict {{layer name: rank}}, got "
                             f"{type(ranks).__name__}")
        for layer in ranks:
            self._check_layer(graph, layer)
        new = graph.copy()
        if shapes is None:
            shapes = new.validated_shapes()
        else:
            new.validate()
        taken = {n.name for n in new.nodes} | {t for n in new.nodes for t in n.outputs} \
            | {s.name for s in new.inputs}
        replaced, layers = {}, {}
        for node in new.topological_order():
            if node.name not in ranks:
                continue
            rank, full = ranks[node.name], self.full_rank(node)
            if isinstance(rank, (bool, np.bool_)) or not isinstance(rank, numbers.Integral) \
                    or not 1 <= rank <= full:
                raise InputError(f"{self.name}: the rank of layer '{node.name}' must be an "
                                 f"integer in 1..{full}, got {rank!r}")
            for nm in svd_node_names(node.name):
                if nm in taken:
                    raise GraphError(f"{self.name}: cannot split layer '{node.name}': graph "
                                     f"'{graph.name}' already has a node or tensor '{nm}'")
            replaced[node.name] = self.split_node(node, int(rank), self.svd)
            out_shape = shapes[node.outputs[0]]
            before = C.node_cost(node, out_shape)
            after = self.cost_given_rank(node, out_shape, int(rank))
            layers[node.name] = {
                "ratio": None, "rank": int(rank), "max_rank": int(self.max_rank(node)),
                "full_rank": int(full), "rounded_ratio": None,
                "achieved_ratio": _ratio(after, before, metric),
                "nodes": [n.name for n in replaced[node.name]], "before": before.to_json(),
                "after": after.to_json()}
        new.nodes = [m for n in new.nodes for m in replaced.get(n.name, (n,))]
        folded = new.meta.get("folded_bn")
        if isinstance(folded, dict):
            for layer, (_, node_b) in replaced.items():
                if layer in folded:
                    folded[node_b.name] = folded.pop(layer)
        new.validate()
        model_before = C.model_cost(graph, shapes, strict=False)
        model_after = model_before
        for entry in layers.values():
            b, a = entry["before"], entry["after"]
            model_after = model_after + C.Cost(
                None if a["macs"] is None or b["macs"] is None else a["macs"] - b["macs"],
                a["params"] - b["params"])
        return new, {"method": self.name, "cost": metric, "multiplicity": self.multiplicity,
                     "layers": layers, "model": {"before": model_before.to_json(),
                                                 "after": model_after.to_json()}}

    # ---- internals --------------------------------------------------------------------------
    def _check_layer(self, graph: Graph, layer) -> Node:
        names = {n.name for n in graph.nodes}
        if not isinstance(layer, str) or layer not in names:
            raise InputError(f"{self.name}: graph '{graph.name}' has no node named {layer!r}; "
                             f"the layers it can compress: {C.name_list(self.layers(graph))}")
        node = graph.node(layer)
        why = self.selects(node)
        if why is not None:
            raise InputError(f"{self.name} cannot compress node '{layer}': {why}")
        return node

    def _prepare(self, graph, layer, ratio, cost, shapes=None):
        """(node, original cost, rank -> cost in the metric, metric), checking every argument."""
        require_float_model(graph, f"{self.name} compression", "compress the float model")
        metric = C.metric_name(cost)
        node = self._check_layer(graph, layer)
        if not _is_ratio(ratio):
            raise InputError(f"{self.name}: the ratio of layer '{layer}' must be a number in "
                             f"(0, 1], got {ratio!r}")
        if isinstance(self.multiplicity, bool) or not isinstance(self.multiplicity, int) \
                or self.multiplicity < 1:
            raise InputError(f"{self.name}: the rank multiplicity must be an integer >= 1, got "
                             f"{self.multiplicity!r}")
        shapes = graph.infer_shapes() if shapes is None else shapes
        out_shape = shapes[node.outputs[0]]
        original = C.node_cost(node, out_shape)
        if metric == "macs":
            C.require_macs(original, node, graph)

        def cost_of_rank(rank):
            return self.cost_given_rank(node, out_shape, rank).get(metric)
        return node, original.get(metric), cost_of_rank, metric

    def _rank(self, node, original, cost_of_rank, ratio) -> int:
        return C.rounded_rank(cost_of_rank, self.max_rank(node), original, ratio,
                              self.multiplicity)

    def _rounded_ratio(self, node, original, cost_of_rank, ratio) -> float:
        rank = C.rank_for_ratio(cost_of_rank, self.max_rank(node), original, ratio)
        rounded = self._rank(node, original, cost_of_rank, ratio)
        if rounded == rank:
            return float(ratio)
        return C.ratio_float(Fraction(cost_of_rank(rounded), original))


def _ratio(after: C.Cost, before: C.Cost, metric: str):
    a, b = after.get(metric), before.get(metric)
    return None if a is None or b is None else float(Fraction(a, b))


METHOD = SvdMethod("spatial-svd", _spatial_selects, C.spatial_svd_cost, C.spatial_svd_max_rank,
                   _spatial_full_rank, _spatial_split)
