"""BN re-estimation (AIMET 2.42 `reestimate_bn_stats`) and folding into the weight scale."""
from __future__ import annotations

import json

import numpy as np
import pytest

from refq.algorithms.bn_fold import fold_batch_norms
from refq.algorithms.bn_reestimation import (fold_into_scale, fold_reestimated_bns,
                                             reestimate_bn_stats)
from refq.errors import InputError, QuantError, ShapeError
from refq.graph import Graph, Node, TensorSpec
from refq.quant.encoding import encoding_from_min_max, quantize, quantize_dequantize
from refq.quant.quantsim import QuantSim

GAMMA, BETA, EPS = np.array([2.0, 0.5]), np.array([0.25, -1.0]), 1e-3


def tiny_graph(mean=(0.0, 0.0), variance=(1.0, 1.0)):
    """x [N, 2, 1, 1] -> conv 1x1 (weights 2, -1; bias 1, 0.5) -> batch_norm -> relu."""
    w = np.array([2.0, -1.0]).reshape(2, 1, 1, 1)
    return Graph([TensorSpec("x", (None, 2, 1, 1))], ["y"], [
        Node("conv", "conv2d", ["x"], ["c"], {}, {"weight": w, "bias": np.array([1.0, 0.5])}),
        Node("bn", "batch_norm", ["c"], ["b"], {"epsilon": EPS},
             {"gamma": GAMMA.copy(), "beta": BETA.copy(), "mean": np.array(mean, float),
              "variance": np.array(variance, float)}),
        Node("relu", "relu", ["b"], ["y"]),
    ])


# Three batches; conv output channel 0 is 2x + 1, channel 1 is -x + 0.5.
BATCHES = [np.array([1.0, 3.0]).reshape(1, 2, 1, 1),            # c0: 3, 7      c1: -0.5, -2.5
           np.array([0.0, 0.0, 1.0, 1.0]).reshape(2, 2, 1, 1),  # c0: 1,1,3,3   c1: .5,.5,-.5,-.5
           np.array([-1.0, 1.0]).reshape(1, 2, 1, 1)]            # c0: -1, 3     c1: 1.5, -0.5
# Per batch (mean, unbiased variance): c0 (5, 8), (2, 4/3), (1, 8); c1 (-1.5, 2), (0, 1/3), (.5, 2)
HAND_MEAN = np.array([(5.0 + 2.0 + 1.0) / 3.0, (-1.5 + 0.0 + 0.5) / 3.0])       # [8/3, -1/3]
HAND_VAR = np.array([(8.0 + 4.0 / 3.0 + 8.0) / 3.0, (2.0 + 1.0 / 3.0 + 2.0) / 3.0])  # [52/9, 13/9]


def snapshot(g):
    return ([(n.name, n.op, list(n.inputs), list(n.outputs), json.dumps(n.attrs, sort_keys=True),
              {k: (v.dtype.str, v.tobytes()) for k, v in n.params.items()}) for n in g.nodes],
            json.dumps(g.meta, sort_keys=True))


# ---- re-estimation on a float graph ------------------------------------------------------
def test_hand_computed_statistics_three_batches():
    g = tiny_graph(mean=(10.0, -10.0), variance=(100.0, 0.01))
    new, report = reestimate_bn_stats(g, BATCHES)
    bn = new.node("bn")
    np.testing.assert_array_equal(bn.params["mean"], HAND_MEAN)
    np.testing.assert_array_equal(bn.params["variance"], HAND_VAR)
    assert abs(HAND_MEAN[0] - 8 / 3) < 1e-15 and abs(HAND_VAR[0] - 52 / 9) < 1e-14
    # the arithmetic mean of per-batch statistics, not the statistics of the pooled data
    pooled = np.concatenate([2 * b.ravel() + 1 for b in BATCHES])
    assert pooled.mean() == 2.5 and bn.params["mean"][0] != 2.5
    np.testing.assert_array_equal(bn.params["gamma"], GAMMA)
    np.testing.assert_array_equal(bn.params["beta"], BETA)
    assert report["num_batches"] == 3 and report["batch_sizes"] == [1, 2, 1]
    (entry,) = report["batch_norms"]
    assert entry["bn"] == "bn" and entry["mean_before"] == [10.0, -10.0]
    assert entry["mean_after"] == HAND_MEAN.tolist()
    assert entry["max_abs_mean_change"] == pytest.approx(10 - 1 / 3, abs=1e-14)
    assert entry["max_abs_variance_change"] == pytest.approx(100 - 52 / 9, abs=1e-13)
    json.dumps(report)


def test_input_model_unchanged():
    g = tiny_graph(mean=(10.0, -10.0), variance=(100.0, 0.01))
    before = snapshot(g)
    new, _ = reestimate_bn_stats(g, BATCHES)
    assert snapshot(g) == before and new is not g
    assert g.node("bn").params["mean"].tolist() == [10.0, -10.0]


def test_num_batches_smaller_than_data():
    new, report = reestimate_bn_stats(tiny_graph(), BATCHES, num_batches=2)
    assert report["num_batches"] == 2
    np.testing.assert_array_equal(new.node("bn").params["mean"],
                                  [(5.0 + 2.0) / 2.0, (-1.5 + 0.0) / 2.0])
    np.testing.assert_array_equal(new.node("bn").params["variance"],
                                  [(8.0 + 4.0 / 3.0) / 2.0, (2.0 + 1.0 / 3.0) / 2.0])


def test_array_data_cut_into_batches():
    data = np.concatenate(BATCHES[1:])                 # 3 samples, batches of 2 then 1
    new, report = reestimate_bn_stats(tiny_graph(), data, batch_size=2)
    assert report["batch_sizes"] == [2, 1]
    np.testing.assert_array_equal(new.node("bn").params["mean"], [(2.0 + 1.0) / 2.0, 0.25])


def test_downstream_bn_sees_train_mode_output():
    # BN2 reads BN1's train-mode output: per batch exactly mean beta1, variance
    # gamma1^2 * v/(v + eps) * M/(M-1) with v the biased batch variance of BN1's input.
    g = tiny_graph()
    g.outputs = ["z"]
    g.nodes.append(Node("bn2", "batch_norm", ["y"], ["z"], {"epsilon": EPS},
                        {k: np.ones(2) for k in ("gamma", "beta", "mean", "variance")}))
    g.nodes[2].outputs = ["y"]
    g.nodes[1].params["beta"] = np.array([5.0, 6.0])  # relu keeps everything positive
    g.nodes[1].params["gamma"] = np.array([1.0, 1.0])
    new, _ = reestimate_bn_stats(g, BATCHES[:1])
    np.testing.assert_allclose(new.node("bn2").params["mean"], [5.0, 6.0], rtol=0, atol=1e-15)
    # batch 0: biased variances 4 (c0) and 1 (c1), M = 2
    np.testing.assert_allclose(new.node("bn2").params["variance"],
                               [4 / (4 + EPS) * 2, 1 / (1 + EPS) * 2], rtol=1e-15)


def test_model_without_batch_norm():
    g = Graph([TensorSpec("x", (None, 2, 1, 1))], ["y"], [Node("relu", "relu", ["x"], ["y"])])
    new, report = reestimate_bn_stats(g, BATCHES)
    assert report["batch_norms"] == [] and report["num_batches"] == 3
    assert "no batch_norm" in report["notes"] and snapshot(new) == snapshot(g)


@pytest.mark.parametrize("data, num_batches, error, words", [
    ([], 100, QuantError, "holds no batch"),
    ([np.zeros((1, 3, 1, 1))], 100, InputError, "batch 0"),
    ([np.zeros((1, 2, 1))], 100, InputError, "shape"),
    (BATCHES, 0, QuantError, "num_batches"),
    (BATCHES, 2.5, QuantError, "num_batches"),
])
def test_bad_input_one_line_errors(data, num_batches, error, words):
    with pytest.raises(error) as e:
        reestimate_bn_stats(tiny_graph(), data, num_batches=num_batches)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_one_value_per_channel_is_refused():
    g = Graph([TensorSpec("x", (None, 2))], ["y"], [
        Node("bn", "batch_norm", ["x"], ["y"], {"epsilon": EPS},
             {k: np.ones(2) for k in ("gamma", "beta", "mean", "variance")})])
    with pytest.raises(ShapeError) as e:  # one sample of [N, C]: M = 1, no unbiased variance
        reestimate_bn_stats(g, [np.ones((2, 2)), np.ones((1, 2))])
    assert "node 'bn'" in str(e.value) and "\n" not in str(e.value)


def test_not_a_model():
    with pytest.raises(QuantError, match="Graph or a QuantSim"):
        reestimate_bn_stats("model.h5", BATCHES)


# ---- re-estimation on a QuantSim ----------------------------------------------------------
def calibrated_sim():
    sim = QuantSim(tiny_graph(mean=(10.0, -10.0), variance=(100.0, 0.01)))
    sim.compute_encodings([np.linspace(-1, 3, 8).reshape(4, 2, 1, 1)])
    return sim


def test_sim_uses_the_simulated_forward():
    sim = calibrated_sim()
    before = {k: v.to_json() for k, v in sim.encodings.items()}
    new, report = reestimate_bn_stats(sim, BATCHES)
    assert isinstance(new, QuantSim) and report["mode"] == "sim"
    per_batch = []
    for b in BATCHES:  # the BN input in the sim: conv with fake-quantized input and weights
        c = sim.run({"x": b}, trace=True)["c"].reshape(-1, 2)
        per_batch.append((c.mean(0), c.var(0, ddof=1)))
    mean = sum(m for m, _ in per_batch) / 3
    var = sum(v for _, v in per_batch) / 3
    np.testing.assert_allclose(new.graph.node("bn").params["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(new.graph.node("bn").params["variance"], var, rtol=1e-6)
    assert np.max(np.abs(new.graph.node("bn").params["mean"] - HAND_MEAN)) > 1e-4  # quantized
    assert sim.graph.node("bn").params["mean"].tolist() == [10.0, -10.0]       # input unchanged
    assert {k: v.to_json() for k, v in new.encodings.items()} == before


# ---- fold into scale ---------------------------------------------------------------------
def weight_and_encoding(symmetric, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, 2, 2, 4)).astype(np.float32)
    enc = encoding_from_min_max(w.reshape(3, -1).min(1), w.reshape(3, -1).max(1), 8, symmetric,
                                axis=0)
    return w, enc


@pytest.mark.parametrize("symmetric", [True, False])
def test_fold_into_scale_power_of_two_is_bit_exact(symmetric):
    w, enc = weight_and_encoding(symmetric)
    s = np.array([0.5, 4.0, 0.125])
    w2, enc2 = fold_into_scale(w, enc, s)
    np.testing.assert_array_equal(enc2.scale, enc.scale * s.astype(np.float32))
    np.testing.assert_array_equal(enc2.zero_point, enc.zero_point)
    np.testing.assert_array_equal(w2, w * s.reshape(3, 1, 1, 1).astype(np.float32))
    np.testing.assert_array_equal(quantize_dequantize(w2, enc2),
                                  quantize_dequantize(w, enc) * s.reshape(3, 1, 1, 1))


def test_fold_into_scale_hand_worked():
    # 4-bit symmetric, scale 0.1 -> grid [-0.8, 0.7]; s = 2.5: scale 0.25, qdq(w') = qdq(w)·2.5
    enc = encoding_from_min_max(-0.8, 0.7, 4, True)
    w = np.array([[0.3], [-0.8], [0.75]], np.float32)
    w2, enc2 = fold_into_scale(w, enc, 2.5)
    assert enc2.scale == np.float32(0.25) and w2.ravel().tolist() == [0.75, -2.0, 1.875]
    assert quantize(w2, enc2).ravel().tolist() == [3, -8, 7] == quantize(w, enc).ravel().tolist()
    np.testing.assert_array_equal(quantize_dequantize(w2, enc2).ravel(), [0.75, -2.0, 1.75])


def test_fold_into_scale_general_factor_codes_agree():
    w, enc = weight_and_encoding(True, seed=1)
    s = np.array([0.7, 1.3, 2.9])
    w2, enc2 = fold_into_scale(w, enc, s)
    np.testing.assert_array_equal(quantize(w2, enc2), quantize(w, enc))
    np.testing.assert_allclose(quantize_dequantize(w2, enc2),
                               quantize_dequantize(w, enc) * s.reshape(3, 1, 1, 1), rtol=2e-7)


def test_fold_into_scale_negative_factor():
    w, enc = weight_and_encoding(False)                  # asymmetric: reflected, exact
    w2, enc2 = fold_into_scale(w, enc, -2.0)
    np.testing.assert_array_equal(enc2.zero_point, 255 - enc.zero_point)
    np.testing.assert_array_equal(quantize_dequantize(w2, enc2), quantize_dequantize(w, enc) * -2)
    w, enc = weight_and_encoding(True)                   # symmetric: all but the qmin codes
    w2, enc2 = fold_into_scale(w, enc, -2.0)
    q = quantize(w, enc)
    same = quantize_dequantize(w2, enc2) == quantize_dequantize(w, enc) * -2
    assert np.all(same[q != -128]) and not np.any(same[q == -128]) and np.any(q == -128)


def test_fold_into_scale_refuses_per_channel_factors_on_per_tensor_encoding():
    with pytest.raises(QuantError, match="per-tensor"):
        fold_into_scale(np.ones((2, 1)), encoding_from_min_max(-1, 1, 8, True), [1.0, 2.0])


# ---- folding the re-estimated model ------------------------------------------------------
def test_fold_graph_is_fold_batch_norms():
    new, _ = reestimate_bn_stats(tiny_graph(), BATCHES)
    folded, report = fold_reestimated_bns(new)
    expect, _ = fold_batch_norms(new)
    assert snapshot(folded) == snapshot(expect) and report["num_folded"] == 1
    k = GAMMA / np.sqrt(HAND_VAR + EPS)
    np.testing.assert_allclose(folded.node("conv").params["weight"].ravel(), [2 * k[0], -k[1]],
                               rtol=1e-15)


def test_fold_sim_scales_weight_encoding():
    new, _ = reestimate_bn_stats(calibrated_sim(), BATCHES)
    snap = snapshot(new.graph)
    folded, report = fold_reestimated_bns(new)
    assert snapshot(new.graph) == snap
    assert [n.op for n in folded.graph.nodes] == ["conv2d", "relu"]
    assert report["scaled_weight_encodings"] == ["conv.weight"]
    bn = new.graph.node("bn").params
    k = bn["gamma"] / np.sqrt(bn["variance"] + EPS)
    old, enc = new.encodings["conv.weight"], folded.encodings["conv.weight"]
    np.testing.assert_array_equal(enc.scale, (old.scale * k).astype(np.float32))
    np.testing.assert_array_equal(quantize(folded.graph.node("conv").params["weight"], enc),
                                  quantize(new.graph.node("conv").params["weight"], old))
    for name in ("x", "y"):  # activation encodings carried over by name
        assert folded.encodings[name] == new.encodings[name]
    x = BATCHES[1]
    ref = new.graph.node("bn").params  # the folded sim computes the eval-mode BN of the sim
    c = new.run({"x": x}, trace=True)["c"]
    s = ref["gamma"] / np.sqrt(ref["variance"] + EPS)
    expect = quantize_dequantize(np.maximum(c * s + (ref["beta"] - s * ref["mean"]), 0),
                                 new.encodings["y"])
    np.testing.assert_allclose(folded.run({"x": x})["y"], expect, atol=float(
        new.encodings["y"].scale) * 1.01)


def test_uncalibrated_sim_is_refused():
    with pytest.raises(QuantError) as e:
        reestimate_bn_stats(QuantSim(tiny_graph()), BATCHES)
    assert "no encoding" in str(e.value) and "\n" not in str(e.value)


def test_deterministic():
    a, ra = reestimate_bn_stats(calibrated_sim(), BATCHES)
    b, rb = reestimate_bn_stats(calibrated_sim(), BATCHES)
    assert snapshot(a.graph) == snapshot(b.graph) and ra == rb
