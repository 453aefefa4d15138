"""refq.compression.cost: AIMET's layer and model costs, the SVD costs given a rank, the rank for
a ratio and rank rounding, against hand-computed values and plain transcriptions of AIMET's
cost_calculator.py / comp_ratio_rounder.py / utils.round_up_to_multiplicity (aimet.md §8, §10)."""
import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from refq.compression import cost as C
from refq.compression.spatial_svd import METHOD as SPATIAL
from refq.compression.weight_svd import METHOD as WEIGHT
from refq.errors import InputError
from refq.graph import Graph, Node, TensorSpec
from refq.layers.normalization import PARAMS


def conv_graph(hw=(10, 12), cin=4, cout=6, k=(3, 5), strides=(2, 3), padding="valid", seed=0,
               bias=True):
    r = np.random.default_rng(seed)
    p = {"weight": r.normal(size=(cout, k[0], k[1], cin))}
    if bias:
        p["bias"] = r.normal(size=cout)
    nodes = [Node("c", "conv2d", ["x"], ["y"], {"strides": list(strides), "padding": padding}, p)]
    return Graph([TensorSpec("x", (None, *hw, cin), "float64")], ["y"], nodes).validate()


def test_layer_costs_by_hand():
    # conv 3x5, 4 -> 6, strides (2, 3), valid on 10x12: output 4x3
    g = conv_graph()
    assert C.layer_cost(g, "c") == C.Cost(macs=6 * 4 * 3 * 5 * 12, params=360) == C.Cost(4320, 360)
    assert C.aimet_weight_shape(g.node("c")) == (6, 4, 3, 5)
    # depthwise, multiplier 2 on 4 channels, same padding 6x6; dense 2-D and 3-D; a batch norm
    r = np.random.default_rng(1)
    nodes = [
        Node("dw", "conv2d", ["x"], ["d"], {"groups": 4, "padding": "same"},
             {"weight": r.normal(size=(8, 3, 3, 1))}),
        Node("bn", "batch_norm", ["d"], ["b"], {"epsilon": 1e-3}, {k: np.ones(8) for k in PARAMS}),
        Node("fl", "reshape", ["b"], ["f"], {"shape": [36, 8]}),
        Node("fc3", "dense", ["f"], ["h"], {}, {"weight": r.normal(size=(5, 8)),
                                                 "bias": np.zeros(5)}),
        Node("fl2", "flatten", ["h"], ["h2"]),
        Node("fc", "dense", ["h2"], ["y"], {}, {"weight": r.normal(size=(7, 180))}),
    ]
    g = Graph([TensorSpec("x", (None, 6, 6, 4), "float64")], ["y"], nodes).validate()
    assert C.layer_cost(g, "dw") == C.Cost(72 * 36, 72)
    assert C.layer_cost(g, "fc3") == C.Cost(40 * 36, 40)      # [N, 36, 8]: 36 positions
    assert C.layer_cost(g, "fc") == C.Cost(1260, 1260)         # [N, 180] -> [N, 7, 1, 1]
    assert C.model_cost(g) == C.Cost(2592 + 1440 + 1260, 72 + 40 + 1260)  # the BN costs nothing
    assert C.model_cost(g).get("memory") == C.model_cost(g).params


def test_svd_costs_given_rank_by_hand():
    g = conv_graph()          # m = 4, n = 6, kh = 3, kw = 5, sh = 2, sw = 3, Hout·Wout = 12
    node, out = g.node("c"), g.infer_shapes()["y"]
    assert C.spatial_svd_cost(node, out, 2) == C.Cost((4 * 2 * 3 * 3 + 2 * 6 * 5) * 12,
                                                      4 * 2 * 3 + 2 * 6 * 5) == C.Cost(1584, 84)
    assert C.weight_svd_cost(node, out, 2) == C.Cost((4 * 2 * 2 * 3 + 2 * 6 * 15) * 12,
                                                     4 * 2 + 2 * 6 * 15) == C.Cost(2736, 188)
    assert C.spatial_svd_max_rank(node) == 12 and C.weight_svd_max_rank(node) == 4
    fc = Node("fc", "dense", ["x"], ["y"], {}, {"weight": np.ones((7, 20))})
    assert C.weight_svd_cost(fc, (None, 7), 3) == C.Cost(20 * 3 + 3 * 7, 20 * 3 + 3 * 7)


def test_rank_for_ratio_by_hand():
    g = conv_graph()
    # spatial: macs(r) = 792 r, params(r) = 42 r; weight: macs(r) = 1368 r, params(r) = 94 r
    assert SPATIAL.rank(g, "c", 0.5) == 2            # 1584 <= 2160 < 2376
    assert SPATIAL.rank(g, "c", 0.5, "params") == 4  # 168 <= 180 < 210
    assert WEIGHT.rank(g, "c", 0.5) == 1
    assert WEIGHT.rank(g, "c", 0.01) == 1            # floor at 1 (cost(1) > target)
    assert SPATIAL.rank(g, "c", 1.0) == 5            # 3960 <= 4320 < 4752
    assert SPATIAL.compressed_cost(g, "c", 0.5) == C.Cost(1584, 84)


def test_rounding_by_hand():
    import dataclasses
    g = conv_graph()
    m4 = dataclasses.replace(SPATIAL, multiplicity=4)
    m8 = dataclasses.replace(SPATIAL, multiplicity=8)
    assert m4.rank(g, "c", 0.5) == 4                 # ceil(2 / 4)·4 = 4 < rank(1) = 5
    assert m4.rounded_ratio(g, "c", 0.5) == pytest.approx(3168 / 4320, rel=1e-15)
    assert m8.rank(g, "c", 0.5) == 5                 # 8 >= 5: capped at rank(1)
    assert m4.rank(g, "c", 0.6) == 4 and m4.rounded_ratio(g, "c", 0.6) == pytest.approx(3168 / 4320)
    assert SPATIAL.rounded_ratio(g, "c", 0.5) == 0.5  # multiplicity 1 keeps the ratio (AIMET)
    assert dataclasses.replace(SPATIAL, multiplicity=2).rounded_ratio(g, "c", 0.5) == 0.5  # r = 2
    assert [C.round_up_to_multiplicity(4, n, 10) for n in (1, 4, 5, 8, 9, 10, 11)] == \
        [4, 4, 8, 8, 10, 10, 10]


# ---- plain transcriptions of AIMET ---------------------------------------------------------
def aimet_rank(cost_of_rank, max_rank, orig, comp_ratio):
    """CostCalculator.calculate_rank_given_comp_ratio (one metric)."""
    target_cost = orig * comp_ratio
    current_rank_candidate = max_rank
    running_cost = cost_of_rank(current_rank_candidate)
    while (running_cost > target_cost) and (current_rank_candidate > 0):
        current_rank_candidate -= 1
        running_cost = cost_of_rank(current_rank_candidate)
    if current_rank_candidate <= 0:
        current_rank_candidate = 1
    return current_rank_candidate


def aimet_round_up(multiplicity, num, max_allowable_num):
    """utils.round_up_to_multiplicity."""
    larger_multiple = math.ceil(float(num) / float(multiplicity)) * multiplicity
    if larger_multiple >= max_allowable_num:
        return max_allowable_num
    return int(larger_multiple)


def aimet_rounded(cost_of_rank, max_rank, orig, comp_ratio, multiplicity):
    """RankRounder.round: (updated ratio, the rank the pruner then uses)."""
    if multiplicity == 1:
        return comp_ratio, aimet_rank(cost_of_rank, max_rank, orig, comp_ratio)
    rank = aimet_rank(cost_of_rank, max_rank, orig, comp_ratio)
    max_r = aimet_rank(cost_of_rank, max_rank, orig, 1.0)
    rounded = aimet_round_up(multiplicity, rank, max_r)
    if rank == rounded:
        return comp_ratio, rank
    return Decimal(cost_of_rank(rounded)) / Decimal(orig), rounded


def random_layer(r):
    kind = r.choice(["conv", "dense"])
    if kind == "dense":
        n_in, n_out = int(r.integers(1, 40)), int(r.integers(1, 40))
        g = Graph([TensorSpec("x", (None, n_in), "float64")], ["y"],
                  [Node("c", "dense", ["x"], ["y"], {}, {"weight": np.ones((n_out, n_in))})])
        return g.validate()
    k = (int(r.integers(1, 6)), int(r.integers(1, 6)))
    s = (int(r.integers(1, 4)), int(r.integers(1, 4)))
    hw = (int(r.integers(k[0], 20)), int(r.integers(k[1], 20)))
    return conv_graph(hw, int(r.integers(1, 17)), int(r.integers(1, 17)), k, s,
                      str(r.choice(["valid", "same"])), bias=False)


@pytest.mark.parametrize("method", [SPATIAL, WEIGHT], ids=lambda m: m.name)
def test_rank_and_rounding_match_aimet_transcription(method):
    import dataclasses
    r = np.random.default_rng(7)
    ratios = [Decimal(k) / 10 for k in range(1, 11)] + \
        [Decimal(int(v)) / 1000 for v in r.integers(1, 1001, 4)]
    checked = 0
    for _ in range(24):
        g = random_layer(r)
        node = g.node("c")
        if method.selects(node) is not None:
            continue
        out = g.infer_shapes()["y"]
        for metric in ("macs", "params"):
            orig = C.node_cost(node, out).get(metric)

            def cost_of_rank(rank):
                return method.cost_given_rank(node, out, rank).get(metric)
            for ratio in ratios:
                want = aimet_rank(cost_of_rank, method.max_rank(node), orig, ratio)
                assert method.rank(g, "c", float(ratio), metric) == want
                assert method.rank(g, "c", ratio, metric) == want
                for mult in (1, 4, 8):
                    m = dataclasses.replace(method, multiplicity=mult)
                    want_ratio, want_rank = aimet_rounded(cost_of_rank, method.max_rank(node),
                                                          orig, ratio, mult)
                    got = m.rounded_ratio(g, "c", float(ratio), metric)
                    assert got == pytest.approx(float(want_ratio), rel=1e-15, abs=0)
                    assert m.rank(g, "c", float(ratio), metric) == want_rank
                    # compressing at the rounded ratio gives the same rank again
                    assert m.rank(g, "c", got, metric) == want_rank
                    checked += 1
    assert checked > 300


def test_exact_ratio_and_ratio_float():
    assert C.exact_ratio(0.3) == Fraction(3, 10)        # the float 0.3 is below 3/10
    assert C.exact_ratio(0.1) == Fraction(0.1)          # the float 0.1 is above 1/10
    assert C.exact_ratio(Decimal("0.7")) == Fraction(7, 10)
    r = np.random.default_rng(3)
    for _ in range(2000):
        q = Fraction(int(r.integers(1, 10 ** 9)), int(r.integers(10 ** 9, 10 ** 10)))
        f = C.ratio_float(q)
        assert Fraction(f) >= q and Fraction(np.nextafter(f, 0)) < q
        assert C.exact_ratio(f) >= q


def test_ratio_float_round_trips_every_rank():
    g = conv_graph((33, 37), 13, 11, (3, 3), (1, 2), "same")
    node, out = g.node("c"), g.infer_shapes()["y"]
    orig = C.node_cost(node, out).macs
    for rank in range(1, SPATIAL.rank(g, "c", 1.0) + 1):
        ratio = C.ratio_float(Fraction(C.spatial_svd_cost(node, out, rank).macs, orig))
        assert SPATIAL.rank(g, "c", ratio) == rank


def test_errors():
    g = conv_graph()
    with pytest.raises(InputError, match="no node named 'nope'"):
        C.layer_cost(g, "nope")
    with pytest.raises(InputError, match="unknown cost metric 'flops'"):
        C.metric_name("flops")
    g2 = Graph([TensorSpec("x", (None, 4, 4, 3))], ["y"],
               [Node("c", "conv2d", ["x"], ["t"], {}, {"weight": np.ones((2, 1, 1, 3))}),
                Node("r", "relu", ["t"], ["y"])]).validate()
    with pytest.raises(InputError, match="is a relu, not a layer"):
        C.layer_cost(g2, "r")
    free = Graph([TensorSpec("x", (None, None, None, 3))], ["y"],
                 [Node("c", "conv2d", ["x"], ["y"], {}, {"weight": np.ones((2, 1, 1, 3))})])
    with pytest.raises(InputError, match="height and width of layer 'c' are unknown") as e:
        C.model_cost(free)
    assert "\n" not in str(e.value)
    assert C.model_cost(free, strict=False) == C.Cost(None, 6)
    assert SPATIAL.rank(free, "c", 0.5, "params") == 1     # params need no spatial size


def test_summary_shows_the_aimet_cost():
    from refq.summary import format_table, summarize
    g = conv_graph()
    rows = summarize(g)
    assert (rows[0]["aimet_macs"], rows[0]["aimet_params"]) == (4320, 360)
    assert rows[0]["macs"] == 4320 and rows[0]["params"] == 366        # refq counts the bias
    assert format_table(rows).splitlines()[-1] == \
        "AIMET compression cost of the 1 conv2d/dense layer: 4,320 MACs, 360 weights (no biases)"
