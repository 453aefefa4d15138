"""The cost model of compression: MACs and parameter memory per layer and per model, AIMET's
formulas (../shared/reference/aimet.md §8, §10; aimet_common/cost_calculator.py), and the exact
rank / ratio arithmetic the SVD methods share.

Layer cost (`CostCalculator.compute_layer_cost`)
    A layer is a conv2d (any groups, depthwise included) or a dense node (COSTED_OPS). Its weight
    in AIMET's layout is [O, I/g, kh, kw] (refq's OHWI [O, kh, kw, I/g] read in that order), a
    dense weight [out, in] counts as [out, in, 1, 1]:
        params = Π weight shape          (AIMET's "memory": the weight only, no bias)
        macs   = params · Hout · Wout    (per image; Hout, Wout of the layer's output)
    A dense layer's output [N, out] counts as [N, out, 1, 1] (Hout = Wout = 1); on an input of
    higher rank [N, ..., in] refq takes the product of the middle axes for Hout · Wout, i.e. the
    dense's MACs as refq counts them. conv2d and dense MACs are therefore the same numbers `refq
    info` shows per node; params differ from its per-node column by the bias.
Model cost (`compute_model_cost`)
    Σ of the layer costs over every conv2d and dense node; other nodes (batch norm, pooling, ...)
    cost nothing.
Cost given rank (`SpatialSvdCostCalculator`, `WeightSvdCostCalculator`), with m = I (input
    channels), n = O, strides (sh, sw), Hout · Wout the original layer's output area:
    spatial SVD  params = m·r·kh + r·n·kw        macs = (m·r·kh·sw + r·n·kw) · Hout · Wout
                 (conv A [r, m, kh, 1] runs at the input's width, sw times the output's)
                 maximum rank m·kh
    weight SVD   params = m·r + r·n·kh·kw        macs = (m·r·sh·sw + r·n·kh·kw) · Hout · Wout
                 (conv A [r, m, 1, 1] runs at stride 1; dense: kh = kw = sh = sw = 1)
                 maximum rank m
Rank for a ratio (`CostCalculator.calculate_rank_given_comp_ratio`)
    r = max rank; while cost(r) > ratio · cost(original) and r > 0: r −= 1; then r = max(r, 1).
    The comparison is exact (`exact_ratio`): AIMET's greedy search passes Decimal candidates
    (0.1, ..., 0.9), so a float ratio is taken as the larger of its exact binary value and its
    shortest decimal form; a ratio returned by `ratio_float` (the smallest float not below an exact
    fraction) therefore gives back the rank it was computed from.
Rank rounding (`RankRounder.round`, `utils.round_up_to_multiplicity`)
    multiplicity 1: the ratio is kept. Otherwise r = rank for the ratio, r_max = rank for ratio 1,
    r' = min(ceil(r / multiplicity) · multiplicity, r_max); the ratio is kept when r' == r, else
    it becomes cost(r') / cost(original).
Cost metrics: "macs" and "params" ("memory", AIMET's name, is accepted for "params").
Errors: InputError for an unknown node or metric, a node that is no conv2d/dense, and MACs of a
layer whose output height or width is unknown (fix the input shape).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np

from ..errors import InputError
from ..graph import Graph, Node

__all__ = ["COSTED_OPS", "METRICS", "Cost", "metric_name", "aimet_weight_shape", "node_cost",
           "layer_cost", "model_cost", "spatial_svd_cost", "spatial_svd_max_rank",
           "weight_svd_cost", "weight_svd_max_rank", "exact_ratio", "ratio_float",
           "rank_for_ratio", "round_up_to_multiplicity", "rounded_rank", "require_macs",
           "name_list"]

COSTED_OPS = ("conv2d", "dense")
METRICS = ("macs", "params")
_ALIASES = {"macs": "macs", "mac": "macs", "params": "params", "memory": "params"}


@dataclass(frozen=True)
class Cost:
    """MACs per image and parameter memory (weights, no biases) of a layer or model. `macs` is
    None when the output's spatial size is unknown."""

    macs: int | None
    params: int

    def __add__(self, other: "Cost") -> "Cost":
        macs = None if self.macs is None or other.macs is None else self.macs + other.macs
        return Cost(macs, self.params + other.params)

    def get(self, metric: str) -> int:
        """The value of `metric` ("macs" or "params")."""
        return getattr(self, metric_name(metric))

    def to_json(self) -> dict:
        return {"macs": self.macs, "params": self.params}


def metric_name(cost: str) -> str:
    """"macs" or "params" for a cost metric name ("memory" is AIMET's name for "params")."""
    if not isinstance(cost, str) or cost.lower() not in _ALIASES:
        raise InputError(f"unknown cost metric {cost!r}; use 'macs' or 'params' (or AIMET's "
                         "'memory')")
    return _ALIASES[cost.lower()]


def aimet_weight_shape(node: Node) -> tuple:
    """(O, I/g, kh, kw): a conv2d's OHWI weight in AIMET's order, a dense [out, in] as
    (out, in, 1, 1)."""
    w = node.params["weight"].shape
    if node.op == "conv2d":
        return (int(w[0]), int(w[3]), int(w[1]), int(w[2]))
    if node.op == "dense":
        return (int(w[0]), int(w[1]), 1, 1)
    raise InputError(f"node '{node.name}' ({node.op}) has no cost in AIMET's model: only "
                     f"{' and '.join(COSTED_OPS)} layers count")


def _output_area(node: Node, out_shape) -> int | None:
    """Hout · Wout of a layer's output (dense: the product of the middle axes, 1 for [N, out]);
    None when unknown."""
    inner = list(out_shape[1:-1])
    if any(d is None for d in inner):
        return None
    return int(math.prod(inner))


def node_cost(node: Node, out_shape) -> Cost:
    """AIMET's layer cost of conv2d/dense `node` whose output has shape `out_shape`."""
    params = math.prod(aimet_weight_shape(node))
    area = _output_area(node, out_shape)
    return Cost(None if area is None else params * area, params)


def _layer(graph: Graph, layer: str) -> Node:
    names = [n.name for n in graph.nodes]
    if layer not in names:
        raise InputError(f"graph '{graph.name}' has no node named '{layer}'; its layers: "
                         f"{name_list([n.name for n in graph.nodes if n.op in COSTED_OPS])}")
    node = graph.node(layer)
    if node.op not in COSTED_OPS:
        raise InputError(f"node '{layer}' of graph '{graph.name}' is a {node.op}, not a layer of "
                         f"AIMET's cost model ({', '.join(COSTED_OPS)})")
    return node


def name_list(names, limit: int = 12) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return (shown + more) if names else "none"


def require_macs(cost: Cost, node: Node, graph: Graph) -> Cost:
    """`cost`, or InputError when its MACs are unknown (output height/width free)."""
    if cost.macs is None:
        raise InputError(f"graph '{graph.name}': the output height and width of layer "
                         f"'{node.name}' are unknown, so its MACs are too; give the model input a "
                         "fixed height and width (refq import --input-shape NAME=1,H,W,C)")
    return cost


def layer_cost(graph: Graph, layer: str, shapes: dict | None = None) -> Cost:
    """AIMET's cost of node `layer` of `graph` (`shapes`: graph.infer_shapes(), or None)."""
    node = _layer(graph, layer)
    shapes = graph.infer_shapes() if shapes is None else shapes
    return require_macs(node_cost(node, shapes[node.outputs[0]]), node, graph)


def model_cost(graph: Graph, shapes: dict | None = None, *, strict: bool = True) -> Cost:
    """Σ of the layer costs over every conv2d and dense node of `graph`. strict: InputError when
    a layer's MACs are unknown; else the total's macs is None then."""
    shapes = graph.infer_shapes() if shapes is None else shapes
    total = Cost(0, 0)
    for node in graph.topological_order():
        if node.op in COSTED_OPS:
            one = node_cost(node, shapes[node.outputs[0]])
            total = total + (require_macs(one, node, graph) if strict else one)
    return total


def _strides(node: Node) -> tuple:
    return tuple(node.attrs.get("strides", (1, 1))) if node.op == "conv2d" else (1, 1)


def spatial_svd_cost(node: Node, out_shape, rank: int) -> Cost:
    """Cost of conv2d `node` split by spatial SVD at `rank` (module docstring)."""
    n, m, kh, kw = aimet_weight_shape(node)
    sw = _strides(node)[1]
    area = _output_area(node, out_shape)
    macs = None if area is None else (m * rank * kh * sw + rank * n * kw) * area
    return Cost(macs, m * rank * kh + rank * n * kw)


def spatial_svd_max_rank(node: Node) -> int:
    """m · kh, the rank AIMET's spatial-SVD search starts from."""
    _, m, kh, _ = aimet_weight_shape(node)
    return m * kh


def weight_svd_cost(node: Node, out_shape, rank: int) -> Cost:
    """Cost of conv2d/dense `node` split by weight SVD at `rank` (module docstring)."""
    n, m, kh, kw = aimet_weight_shape(node)
    sh, sw = _strides(node)
    area = _output_area(node, out_shape)
    macs = None if area is None else (m * rank * sh * sw + rank * n * kh * kw) * area
    return Cost(macs, m * rank + rank * n * kh * kw)


def weight_svd_max_rank(node: Node) -> int:
    """m (input channels), the rank AIMET's weight-SVD search starts from."""
    return aimet_weight_shape(node)[1]


def exact_ratio(ratio) -> Fraction:
    """`ratio` as an exact fraction: the larger of its exact binary value and its shortest decimal
    form (repr), so that 0.3 means 3/10 as AIMET's Decimal candidates do, and the float
    `ratio_float(q)` of a fraction q means at least q."""
    if isinstance(ratio, Fraction):
        return ratio
    if isinstance(ratio, Decimal):
        return Fraction(ratio)
    value = float(ratio)
    return max(Fraction(value), Fraction(Decimal(repr(value))))


def ratio_float(q: Fraction) -> float:
    """The smallest float not below the fraction `q` (so that `exact_ratio` of it is >= q)."""
    f = float(q)
    while Fraction(f) < q:
        f = float(np.nextafter(f, math.inf))
    return f


def rank_for_ratio(cost_of_rank, max_rank: int, original: int, ratio) -> int:
    """AIMET's decrement loop: the largest rank r <= max_rank with cost_of_rank(r) <= ratio ·
    original (exact arithmetic), at least 1. cost_of_rank: rank -> int (one metric)."""
    target = exact_ratio(ratio) * original
    rank = max_rank
    running = cost_of_rank(rank)
    while running > target and rank > 0:
        rank -= 1
        running = cost_of_rank(rank)
    return max(rank, 1)


def round_up_to_multiplicity(multiplicity: int, num, max_allowable: int) -> int:
    """ceil(num / multiplicity) · multiplicity, or max_allowable when that is not below it; `num`
    an int or an exact Fraction (AIMET's ChannelRounder passes channels · ratio unfloored)."""
    larger = math.ceil(Fraction(num) / int(multiplicity)) * int(multiplicity)
    return int(max_allowable) if larger >= max_allowable else int(larger)


def rounded_rank(cost_of_rank, max_rank: int, original: int, ratio, multiplicity: int) -> int:
    """The rank a ratio gives after rounding to `multiplicity` (module docstring), capped at the
    rank of ratio 1."""
    rank = rank_for_ratio(cost_of_rank, max_rank, original, ratio)
    if multiplicity == 1:
        return rank
    cap = rank_for_ratio(cost_of_rank, max_rank, original, 1)
    return round_up_to_multiplicity(multiplicity, rank, cap)
