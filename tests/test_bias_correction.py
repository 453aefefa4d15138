"""refq.algorithms.bias_correction: empirical and analytical bias correction (aimet.md §6;
Nagel et al., ICCV 2019, §4.2).

The laws: empirical correction zeroes the per-channel mean output error it targets (re-measured
independently with `refq.run` on the corrected graph, weights quantized, activations float);
analytical correction subtracts exactly ε·E[x], with E[x] the clipped-normal mean written out by
hand below and checked against a Monte Carlo estimate. Small graphs use 4-bit per-tensor weights so
that the errors are large; the real PP-OCR classifier checks the law on a full network.
"""
import json
import math

import numpy as np
import pytest

import refq
from refq.algorithms.bias_correction import clipped_normal_mean, correct_bias
from refq.errors import InputError, QuantError
from refq.graph import Graph, Node, TensorSpec
from refq.quant.quantsim import QuantSim

PPOCR = "refq/data/ppocr_cls/ppocr_cls_mbv3s.h5"
LAYERS = ("conv2d", "dense")
BW = dict(config="per_tensor", param_bw=4)


# ----------------------------------------------------------------------------- helpers

def conv(name, x, w, b=None, **attrs):
    p = {"weight": np.asarray(w, np.float32)}
    if b is not None:
        p["bias"] = np.asarray(b, np.float32)
    return Node(name, "conv2d", [x], [name], attrs, p)


def dense(name, x, w, b=None):
    p = {"weight": np.asarray(w, np.float32)}
    if b is not None:
        p["bias"] = np.asarray(b, np.float32)
    return Node(name, "dense", [x], [name], {}, p)


def act(name, x, op, **attrs):
    return Node(name, op, [x], [name], attrs, {})


def residual_graph(seed=0):
    """conv (no bias) → relu → depthwise (x2) → relu6 → conv 1x1 → add (residual) → gap → dense
    (no bias)."""
    r = np.random.default_rng(seed)
    nodes = [
        conv("c1", "x", r.normal(0, 0.4, (6, 3, 3, 3)), padding="same"),
        act("r1", "c1", "relu"),
        conv("dw", "r1", r.normal(0, 0.5, (12, 3, 3, 1)), r.normal(0, 0.1, 12),
             padding="same", groups=6),
        act("r2", "dw", "relu6"),
        conv("c2", "r2", r.normal(0, 0.3, (6, 1, 1, 12)), r.normal(0, 0.1, 6)),
        Node("add", "add", ["c2", "r1"], ["add"]),
        Node("gap", "global_avg_pool2d", ["add"], ["gap"]),
        dense("fc", "gap", r.normal(0, 0.5, (4, 6))),
    ]
    return Graph([TensorSpec("x", (None, 8, 8, 3))], ["fc"], nodes, name="residual")


def inputs(n=16, shape=(8, 8, 3), seed=1):
    return np.random.default_rng(seed).normal(0, 1, (n,) + shape).astype(np.float32)


def measure(original, corrected, x, **settings):
    """{layer: (E[y_q − y_fp] per channel, max |y_fp|)}: the corrected graph with its quantized
    weights (activations float) against the original float graph, both in float64 via refq.run."""
    ref = refq.run(original, x, trace=True)
    sim = QuantSim(corrected, **settings)
    sim.compute_param_encodings()
    q = refq.run(corrected, x, trace=True, params=sim.sim_params())
    out = {}
    for n in corrected.topological_order():
        if n.op in LAYERS:
            t = n.outputs[0]
            d = (q[t] - ref[t]).reshape(-1, ref[t].shape[-1])
            out[n.name] = (d.mean(axis=0), float(np.abs(ref[t]).max()))
    return out


def snapshot(g):
    return (json.dumps(g.to_json(), sort_keys=True),
            {(n.name, k): (v.dtype, v.copy()) for n in g.nodes for k, v in n.params.items()})


def same_snapshot(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert a[1][k][0] == b[1][k][0]
        np.testing.assert_array_equal(a[1][k][1], b[1][k][1])


# hand-written standard normal: Φ via math.erf, φ via math.exp (independent of scipy)
def Phi(z):
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def phi(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def hand_mean(beta, gamma, activation):
    """The formulas of the brief / AIMET §6 with γ → |γ|."""
    s = abs(gamma)
    if activation is None:
        return beta
    if activation == "relu":
        return beta * (1 - Phi(-beta / s)) + s * phi(-beta / s)
    b = 6.0 if activation == "relu6" else activation[2]
    return (s * (phi(-beta / s) - phi((b - beta) / s))
            + beta * (Phi((b - beta) / s) - Phi(-beta / s)) + b * (1 - Phi((b - beta) / s)))


# ----------------------------------------------------------------------------- empirical

def test_empirical_zeroes_the_mean_error_of_every_layer():
    g, x = residual_graph(), inputs()
    g2, rep = correct_bias(g, x, **BW)
    assert rep["corrected"] == ["c1", "dw", "c2", "fc"] and rep["skipped"] == []
    assert [e["mode"] for e in rep["layers"]] == ["empirical"] * 4
    assert [e["bias_added"] for e in rep["layers"]] == [True, False, False, True]
    after = measure(g, g2, x, **BW)
    before = measure(g, g, x, **BW)
    for e in rep["layers"]:
        err, scale = after[e["node"]]
        assert np.abs(err).max() <= 1e-9 * scale, e["node"]
        # the pass measured what an independent run of the corrected graph measures
        np.testing.assert_allclose(e["mean_error_after"], err, rtol=0, atol=1e-13 * scale)
        assert np.abs(e["mean_error_before"]).max() > 1e-4 * scale  # not vacuous
        assert e["correction"] == e["mean_error_before"]
    # the first layer sees the same input in both paths: its correction is the uncorrected error,
    # and the corrected error vanishes to rounding
    np.testing.assert_allclose(rep["layers"][0]["correction"], before["c1"][0], rtol=1e-12,
                               atol=1e-16)
    assert np.abs(after["c1"][0]).max() <= 1e-14 * after["c1"][1]
    b_old = np.zeros(6)
    np.testing.assert_allclose(g2.node("c1").params["bias"], b_old - before["c1"][0], rtol=1e-12)
    for n in g2.nodes:
        if n.op in LAYERS:
            assert n.params["bias"].dtype == np.float64
    json.dumps(rep)


def test_empirical_default_config_is_quantsims_and_per_channel_works():
    g, x = residual_graph(2), inputs(8, seed=3)
    g2, rep = correct_bias(g, x)  # config None: QuantSim's default (per-channel)
    g3, rep3 = correct_bias(g, x, config="per_channel")
    assert rep["settings"]["config"] == rep3["settings"]["config"]
    for n in g2.nodes:
        if n.op in LAYERS:
            np.testing.assert_array_equal(n.params["bias"], g3.node(n.name).params["bias"])
    after = measure(g, g2, x)
    for name, (err, scale) in after.items():
        assert np.abs(err).max() <= 1e-9 * scale, name


def test_batches_chunks_and_determinism():
    g, x = residual_graph(), inputs(12)
    g_a, rep_a = correct_bias(g, x, **BW)
    g_b, rep_b = correct_bias(g, x, **BW)
    assert json.dumps(rep_a) == json.dumps(rep_b)
    g_c, rep_c = correct_bias(g, [x[:5], x[5:9], x[9:]], **BW)  # an iterable of batches
    g_d, rep_d = correct_bias(g, {"x": x}, batch_size=5, **BW)  # ops evaluated in chunks of 5
    for n in g_a.nodes:
        if n.op in LAYERS:
            b = n.params["bias"]
            np.testing.assert_array_equal(b, g_b.node(n.name).params["bias"])
            np.testing.assert_array_equal(b, g_c.node(n.name).params["bias"])
            np.testing.assert_allclose(b, g_d.node(n.name).params["bias"], rtol=1e-12, atol=1e-14)
    assert rep_c["samples"] == rep_d["samples"] == 12
    assert rep_d["settings"]["batch_size"] == 5
    assert rep_a["peak_live_bytes"] > 12 * 8 * 8 * 6 * 8


def test_input_graph_is_never_mutated():
    g, x = residual_graph(), inputs(6)
    g.meta["folded_bn"] = {"c1": {"gamma": [1.0] * 6, "beta": [0.5] * 6}}
    before = snapshot(g)
    correct_bias(g, x, **BW)
    correct_bias(g, mode="analytical", **BW)
    correct_bias(g, x, mode="analytical", **BW)
    same_snapshot(before, snapshot(g))
    assert "bias" not in g.node("c1").params and g.node("c1").params["weight"].dtype == np.float32


# ----------------------------------------------------------------------------- analytical

BETA = [0.5, -1.0, 0.25, 2.0]
GAMMA = [1.0, 0.5, -2.0, 0.3]  # a negative γ: the normal's deviation is |γ|
ACTIVATIONS = [None, "relu", "relu6", ("clip", 0.0, 1.5)]


def stats_graph(activation, layer, pad=False, seed=4):
    """x → conv A (1x1, 4→4, stats in meta) → [activation] → [zero_pad2d] → B."""
    r = np.random.default_rng(seed)
    nodes = [conv("A", "x", r.normal(0, 0.5, (4, 1, 1, 4)), r.normal(0, 0.1, 4))]
    t = "A"
    if activation is not None:
        if isinstance(activation, tuple):
            nodes.append(act("act", t, "clip", min=activation[1], max=activation[2]))
        else:
            nodes.append(act("act", t, activation))
        t = "act"
    if pad:
        nodes.append(Node("pad", "zero_pad2d", [t], ["pad"], {"pads": [1, 1, 1, 1]}))
        t = "pad"
    if layer == "conv":
        nodes.append(conv("B", t, r.normal(0, 0.4, (3, 3, 3, 4)), r.normal(0, 0.1, 3)))
    elif layer == "depthwise":
        nodes.append(conv("B", t, r.normal(0, 0.4, (8, 3, 3, 1)), r.normal(0, 0.1, 8), groups=4))
    else:
        nodes.append(dense("B", t, r.normal(0, 0.4, (3, 4))))  # no bias: one is added
    g = Graph([TensorSpec("x", (None, 5, 5, 4))], ["B"], nodes, name="stats")
    g.meta["folded_bn"] = {"A": {"gamma": list(GAMMA), "beta": list(BETA)}}
    return g


def qdq_weight(g, node, **settings):
    sim = QuantSim(g, **settings)
    sim.compute_param_encodings()
    return sim.sim_params()[node]["weight"].astype(np.float64)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["none", "relu", "relu6", "clip"])
@pytest.mark.parametrize("layer", ["conv", "depthwise", "dense"])
def test_analytical_subtracts_eps_times_the_clipped_normal_mean(activation, layer):
    g = stats_graph(activation, layer)
    g2, rep = correct_bias(g, mode="analytical", **BW)
    a, b = rep["layers"]
    assert a["node"] == "A" and a["mode"] == "skipped" and "graph input" in a["reason"]
    np.testing.assert_array_equal(g2.node("A").params["bias"], g.node("A").params["bias"])
    assert b["mode"] == "analytical" and b["source"] == "A"
    name = activation if activation is None or isinstance(activation, str) else activation[0]
    assert b["reason"].startswith("analytical: input from bn-folded conv2d 'A' ")
    assert (name or "no activation") in b["reason"]
    assert b["mean_error_before"] is None and b["mean_error_after"] is None

    ex = np.array([hand_mean(be, ga, activation) for be, ga in zip(BETA, GAMMA)])
    np.testing.assert_allclose(b["expected_input"], ex, rtol=1e-13, atol=1e-15)

    w = g.node("B").params["weight"].astype(np.float64)
    wq = qdq_weight(g, "B", **BW)
    if layer == "conv":
        e = (wq - w).sum(axis=(1, 2)) @ ex
    elif layer == "depthwise":  # output o reads input channel o // 2 (multiplier 2)
        e = np.array([(wq[o] - w[o]).sum() * ex[o // 2] for o in range(8)])
    else:
        e = (wq - w) @ ex
    assert np.abs(e).max() > 1e-4
    b_old = g.node("B").params.get("bias", np.zeros(len(e))).astype(np.float64)
    np.testing.assert_allclose(b_old - g2.node("B").params["bias"], e, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(b["correction"], e, rtol=1e-12, atol=1e-16)
    assert b["bias_added"] == (layer == "dense")


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=["none", "relu", "relu6", "clip"])
def test_clipped_normal_mean_matches_monte_carlo(activation):
    lo, hi = {None: (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}.get(
        activation if not isinstance(activation, tuple) else "clip", (0.0, 1.5))
    got = clipped_normal_mean(BETA, GAMMA, lo, hi)
    rng = np.random.default_rng(2019)
    n = 400_000
    for c, (be, ga) in enumerate(zip(BETA, GAMMA)):
        s = np.clip(be + ga * rng.standard_normal(n), lo, hi)  # N(β, γ²), γ as given
        se = s.std() / math.sqrt(n)
        assert abs(got[c] - s.mean()) <= 3 * se, (c, got[c], s.mean(), se)
        assert got[c] == pytest.approx(hand_mean(be, ga, activation), rel=1e-13, abs=1e-15)


def test_clipped_normal_mean_edge_cases():
    np.testing.assert_array_equal(clipped_normal_mean([0.3, -2.0, 7.0], 0.0, 0.0, 6.0),
                                  [0.3, 0.0, 6.0])  # σ = 0: a point mass, clipped
    np.testing.assert_array_equal(clipped_normal_mean([0.3, -2.0], [1.0, 5.0]), [0.3, -2.0])
    assert clipped_normal_mean(0.0, 1.0, -2.0, 2.0) == pytest.approx(0.0, abs=1e-16)
    assert clipped_normal_mean(0.0, 1.0, 0.0) == pytest.approx(1 / math.sqrt(2 * math.pi))
    np.testing.assert_allclose(clipped_normal_mean(BETA, GAMMA, 0.0, 1e6),
                               clipped_normal_mean(BETA, GAMMA, 0.0), rtol=1e-14)
    # AIMET's γ as-is would give −φ(0) < 0 for a ReLU output; |γ| gives +φ(0)
    assert clipped_normal_mean(0.0, -1.0, 0.0) == pytest.approx(1 / math.sqrt(2 * math.pi))
    with pytest.raises(QuantError, match="lo <= hi"):
        clipped_normal_mean(0.0, 1.0, 1.0, 0.0)


def test_analytical_reasons_padding_and_transparent_ops():
    g = stats_graph("relu", "conv", pad=True)
    _, rep = correct_bias(g, mode="analytical", **BW)
    assert rep["layers"][1]["reason"] == (
        "analytical: input from bn-folded conv2d 'A' through relu, zero_pad2d "
        "(zero_pad2d: inexact at the borders)")
    g = stats_graph(None, "conv")
    g.node("B").attrs["padding"] = "same"
    ident = Node("id", "identity", ["A"], ["id"])
    g.nodes.insert(1, ident)
    g.node("B").inputs = ["id"]
    _, rep = correct_bias(g, mode="analytical", **BW)
    assert rep["layers"][1]["reason"] == (
        "analytical: input from bn-folded conv2d 'A' through identity "
        "(own zero padding: inexact at the borders)")
    g = stats_graph(None, "conv")
    _, rep = correct_bias(g, mode="analytical", **BW)
    assert rep["layers"][1]["reason"] == ("analytical: input from bn-folded conv2d 'A' "
                                          "directly (no activation)")


def test_analytical_with_data_corrects_the_others_empirically():
    g = stats_graph("relu", "conv")
    x = inputs(10, (5, 5, 4), seed=7)
    g2, rep = correct_bias(g, x, mode="analytical", **BW)
    a, b = rep["layers"]
    assert a["mode"] == "empirical" and a["reason"].startswith("empirical: not data-free, its "
                                                               "input 'x' is a graph input")
    assert b["mode"] == "analytical"
    assert rep["corrected"] == ["A", "B"] and rep["samples"] == 10
    err = measure(g, g2, x, **BW)
    assert np.abs(err["A"][0]).max() <= 1e-9 * err["A"][1]
    np.testing.assert_allclose(a["mean_error_after"], err["A"][0], atol=1e-13 * err["A"][1])
    # B: exactly ε·E[x] (as data-free), and the measured errors are reported as a diagnostic
    _, free = correct_bias(g, mode="analytical", **BW)
    assert b["correction"] == free["layers"][1]["correction"]
    np.testing.assert_allclose(b["mean_error_after"], err["B"][0], atol=1e-13 * err["B"][1])


def test_analytical_rule_rejects_other_paths():
    g = stats_graph("relu", "conv")
    g.node("act").op = "leaky_relu"
    with pytest.raises(QuantError, match="no conv2d/dense reads a bn-folded layer"):
        correct_bias(g, mode="analytical", **BW)
    # two activations in a row are not one clipped normal
    g = stats_graph("relu", "dense")
    g.nodes.insert(2, act("act2", "act", "relu"))
    g.node("B").inputs = ["act2"]
    x = inputs(4, (5, 5, 4))
    _, rep = correct_bias(g, x, mode="analytical", **BW)
    assert rep["layers"][1]["mode"] == "empirical"
    assert rep["layers"][1]["reason"] == ("empirical: not data-free, its input passes through two "
                                          "activations ('act' and 'act2'); the data-free rule "
                                          "allows one")


def test_analytical_skips_without_data_and_keeps_skipped_layers_unchanged():
    g = stats_graph("relu", "dense")
    g.nodes.append(act("r", "B", "relu"))
    g.nodes.append(dense("C", "r", np.ones((2, 3))))  # reads B, which has no statistics
    g.outputs = ["C"]
    g2, rep = correct_bias(g, mode="analytical", **BW)
    assert [e["mode"] for e in rep["layers"]] == ["skipped", "analytical", "skipped"]
    assert rep["skipped"] == ["A", "C"] and rep["corrected"] == ["B"]
    c = rep["layers"][2]
    assert c["reason"] == ("skipped: its input comes from dense 'B', which has no recorded BN "
                           "statistics (graph.meta['folded_bn']); no calibration data given")
    assert c["correction"] is None and not c["bias_added"] and "bias" not in g2.node("C").params
    assert g2.node("A").params["bias"].dtype == np.float32
    assert rep["peak_live_bytes"] == 0 and rep["samples"] == 0
    json.dumps(rep)


# ----------------------------------------------------------------------------- errors

def test_errors():
    g, x = residual_graph(), inputs(4)
    with pytest.raises(QuantError, match="empirical bias correction needs calibration data"):
        correct_bias(g)
    with pytest.raises(QuantError, match="holds no samples"):
        correct_bias(g, x[:0])
    with pytest.raises(QuantError, match="holds no samples"):
        correct_bias(g, [])
    bad = x.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(QuantError,
                       match=r"input 'x' holds NaN or Inf \(first at index \[1, 2, 3, 0\]"):
        correct_bias(g, bad)
    bad[1, 2, 3, 0] = np.inf
    with pytest.raises(QuantError, match="NaN or Inf"):
        correct_bias(g, [x, bad])
    with pytest.raises(InputError, match=r"input 'x' has shape \[4, 4, 8, 3\], the model takes "
                                         r"\[N, 8, 8, 3\]"):
        correct_bias(g, x[:, :4])
    with pytest.raises(QuantError, match="mode must be one of"):
        correct_bias(g, x, mode="magic")
    with pytest.raises(InputError, match="batch_size"):
        correct_bias(g, x, batch_size=0)
    with pytest.raises(QuantError, match=r"BN statistics missing: .*`refq quantize "
                                         r"--bias-correction analytical` .* or give calibration "
                                         r"data \(--calib\)"):
        correct_bias(g, mode="analytical")
    g.meta["folded_bn"] = {"c1": {"gamma": [1.0, 2.0], "beta": [0.0, 0.0]}}
    with pytest.raises(QuantError, match=r"meta\['folded_bn'\]\['c1'\]: gamma \[2\] and beta "
                                         r"\[2\] must both be \[6\]"):
        correct_bias(g, mode="analytical")
    g.meta["folded_bn"] = {"c1": {"gamma": [1.0] * 6}}
    with pytest.raises(QuantError, match="expected {'gamma'"):
        correct_bias(g, mode="analytical")


# ----------------------------------------------------------------------------- a real network

@pytest.fixture(scope="module")
def ppocr_folded():
    bn_fold = pytest.importorskip("refq.algorithms.bn_fold")
    g, _ = bn_fold.fold_batch_norms(refq.import_keras(PPOCR))
    return g


def test_ppocr_empirical_zeroes_every_layer_mean_error(ppocr_folded):
    from refq.ppocr_data import load_calibration_set

    g, x = ppocr_folded, load_calibration_set(64)
    g2, rep = correct_bias(g, x, config="per_tensor")
    assert len(rep["corrected"]) == sum(n.op in LAYERS for n in g.nodes) == 54
    err = measure(g, g2, x, config="per_tensor")
    worst_before = 0.0
    for e in rep["layers"]:
        got, scale = err[e["node"]]
        assert np.abs(got).max() <= 1e-9 * scale, e["node"]
        assert e["max_abs_error_after"] <= 1e-9 * scale, e["node"]
        worst_before = max(worst_before, np.abs(e["mean_error_before"]).max() / scale)
    assert worst_before > 1e-3
    json.dumps(rep)


def test_ppocr_analytical_data_free(ppocr_folded):
    g = ppocr_folded
    g2, rep = correct_bias(g, mode="analytical", config="per_tensor")
    modes = {e["node"]: e["mode"] for e in rep["layers"]}
    assert modes["conv_1"] == "skipped" and modes["dwconv_1"] == "analytical"
    assert modes["conv_7"] == "analytical" and modes["predictions"] == "skipped"
    for e in rep["layers"]:
        if e["mode"] == "skipped":
            assert g2.node(e["node"]).params["bias"] is not g.node(e["node"]).params["bias"]
            np.testing.assert_array_equal(g2.node(e["node"]).params["bias"],
                                          g.node(e["node"]).params["bias"])
        else:
            assert e["reason"].startswith("analytical: input from bn-folded conv2d")
