"""Gradients of a quantization simulation with frozen encodings (`refq.grad.sim`)."""
from __future__ import annotations

import numpy as np
import pytest

from refq.graph import Graph, Node, TensorSpec
from refq.grad import cross_entropy, mse, value_and_grad
from refq.grad.sim import sim_value_and_grad
from refq.grad.train import train
from refq.grad.optim import Adam
from refq.quant.fakequant import quantize_dequantize
from refq.quant.quantsim import QuantSim
from refq.quant.ste import fake_quant_ste

RNG = np.random.default_rng(5)


def net():
    """conv 3x3 -> relu -> depthwise 3x3 -> relu -> global pool -> dense (logits) -> softmax."""
    nodes = [
        Node("conv", "conv2d", ["x"], ["c"], {"padding": "same"},
             {"weight": RNG.standard_normal((6, 3, 3, 2)) * 0.4, "bias": RNG.standard_normal(6)}),
        Node("relu", "relu", ["c"], ["r"]),
        Node("dw", "conv2d", ["r"], ["d"], {"padding": "same", "groups": 6},
             {"weight": RNG.standard_normal((6, 3, 3, 1)) * 0.4, "bias": np.zeros(6)}),
        Node("relu2", "relu", ["d"], ["r2"]),
        Node("pool", "global_avg_pool2d", ["r2"], ["p"]),
        Node("fc", "dense", ["p"], ["logits"],
             params={"weight": RNG.standard_normal((4, 6)), "bias": RNG.standard_normal(4)}),
        Node("prob", "softmax", ["logits"], ["y"]),
    ]
    g = Graph([TensorSpec("x", (None, 7, 6, 2))], ["y"], nodes, name="net")
    g.validate()
    return g


@pytest.fixture(scope="module")
def sim():
    g = net()
    x = RNG.standard_normal((16, 7, 6, 2)).astype(np.float32)
    return QuantSim(g, "per_channel", param_bw=4, act_bw=4).compute_encodings(x), x


def test_the_forward_is_the_simulation(sim):
    s, x = sim
    y = s.run({"x": x})["y"]
    value, _ = sim_value_and_grad(s, {"x": x}, mse, np.zeros_like(y))
    assert value == pytest.approx(float(np.sum(y.astype(np.float64) ** 2)) / y.size, rel=1e-6)


def test_all_quantizers_off_is_the_float32_gradient(sim):
    s, x = sim
    labels = RNG.integers(0, 4, len(x))
    off = {name: False for name in s.quantizers}
    v, got = sim_value_and_grad(s, {"x": x}, cross_entropy, labels, output="logits",
                                enabled=off)
    w, ref = value_and_grad(s.graph, {"x": x}, cross_entropy, labels, output="logits",
                            dtype=np.float32, batch_size=len(x))
    assert v == pytest.approx(w, rel=1e-6)
    for node in ref:
        for k in ref[node]:
            np.testing.assert_allclose(got[node][k], ref[node][k], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{node}/{k}")


def test_weight_gradients_pass_the_straight_through_estimator(sim):
    """With only the parameter quantizers on, ∂L/∂w = STE_w(∂L/∂ŵ) where ∂L/∂ŵ is the float
    gradient of the graph computed with the fake-quantized parameters: zero where w's code
    falls outside its grid."""
    s, x = sim
    labels = RNG.integers(0, 4, len(x))
    only_params = {q.name: q.kind == "param" for q in s.quantizers.values()}
    _, got = sim_value_and_grad(s, {"x": x}, cross_entropy, labels, output="logits",
                                enabled=only_params)
    _, at_qdq = value_and_grad(s.graph, {"x": x}, cross_entropy, labels, output="logits",
                               dtype=np.float32, batch_size=len(x),
                               params=s.sim_params(only_params))
    checked = 0
    for q in s.quantizers.values():
        if q.kind != "param":
            continue
        w = s.graph.node(q.node).params[q.param].astype(np.float32)
        enc = s.encodings[q.name]
        want = fake_quant_ste(w, enc, at_qdq[q.node][q.param])
        np.testing.assert_allclose(got[q.node][q.param], want, rtol=1e-5, atol=1e-7)
        checked += 1
    assert checked >= 3


def test_clipped_weights_get_no_gradient():
    g = net()
    x = RNG.standard_normal((8, 7, 6, 2)).astype(np.float32)
    s = QuantSim(g, "per_tensor", param_bw=4, act_bw=8).compute_encodings(x)
    q = next(q for q in s.quantizers.values() if q.kind == "param" and q.node == "fc")
    w = s.graph.node("fc").params["weight"]
    enc = s.encodings[q.name]
    w[0, 0] = float(np.max(np.abs(w))) * 10   # far outside the frozen grid
    _, grads = sim_value_and_grad(s, {"x": x}, cross_entropy, RNG.integers(0, 4, 8),
                                  output="logits")
    assert grads["fc"]["weight"][0, 0] == 0
    assert quantize_dequantize(np.float32(w[0, 0]), enc) < w[0, 0]


def test_fine_tuning_a_simulation_lowers_its_loss(sim):
    s, x = sim
    labels = (x.mean(axis=(1, 2, 3)) > 0).astype(int) + 2 * (x[:, 0, 0, 0] > 0)
    tuned, report = train(s, {"x": x}, cross_entropy, Adam(1e-2), targets=labels, epochs=15,
                          batch_size=8, output="logits")
    assert np.mean(report["loss"][-4:]) < np.mean(report["loss"][:4])
    assert isinstance(tuned, QuantSim) and tuned is not s
    assert tuned.encodings == s.encodings
    # the tuned weights are what its simulation runs; the original is unchanged
    assert not np.array_equal(tuned.run({"x": x})["y"], s.run({"x": x})["y"])
    assert not np.array_equal(tuned.graph.node("fc").params["weight"],
                              s.graph.node("fc").params["weight"])


def test_learned_ranges_start_at_the_encodings_and_get_their_vjp(sim):
    from refq.grad.sim import learnable_ranges
    from refq.quant.ste import learned_range_forward, learned_range_vjp

    s, x = sim
    ranges = learnable_ranges(s)
    assert set(ranges) == {n for n, on in s.enabled.items() if on}
    for name, (lo, hi) in ranges.items():
        enc = s.encodings[name]
        assert lo.dtype == hi.dtype == np.float32 and lo.shape == np.shape(enc.scale)
    labels = RNG.integers(0, 4, len(x))
    v_frozen, g_frozen = sim_value_and_grad(s, {"x": x}, cross_entropy, labels, output="logits")
    v, grads, range_grads = sim_value_and_grad(s, {"x": x}, cross_entropy, labels,
                                               output="logits", ranges=ranges)
    assert v == pytest.approx(v_frozen, rel=1e-3)
    assert set(range_grads) == set(ranges)
    for name, per in range_grads.items():
        assert per["min"].shape == ranges[name][0].shape
        assert np.all(np.isfinite(per["min"])) and np.all(np.isfinite(per["max"]))
    # the output quantizer of the logits: its range gradient is learned_range_vjp's on them
    out_q = s.tensor_quantizers()["logits"]
    y = s.run({"x": x}, trace=True, enabled={**s.enabled, out_q: False})["logits"]
    lo, hi = ranges[out_q]
    q = s.quantizers[out_q]
    yq, ctx = learned_range_forward(y, lo, hi, q.bitwidth, q.symmetric)
    _, g, _ = cross_entropy(yq, labels)
    _, g_lo, g_hi = learned_range_vjp(ctx, g.astype(np.float32))
    np.testing.assert_allclose(range_grads[out_q]["min"], g_lo / len(x), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(range_grads[out_q]["max"], g_hi / len(x), rtol=1e-4, atol=1e-7)


def test_range_learning_fine_tunes_and_moves_the_encodings(sim):
    s, x = sim
    labels = (x.mean(axis=(1, 2, 3)) > 0).astype(int) + 2 * (x[:, 0, 0, 0] > 0)
    tuned, report = train(s, {"x": x}, cross_entropy, Adam(1e-2), targets=labels, epochs=10,
                          batch_size=8, output="logits", learn_ranges=True)
    assert report["ranges"] == sum(s.enabled.values())
    assert np.mean(report["loss"][-4:]) < np.mean(report["loss"][:4])
    moved = [n for n in s.encodings if tuned.encodings[n] != s.encodings[n]]
    assert moved, "no encoding moved"
    assert all(tuned.encodings[n].axis == s.encodings[n].axis for n in s.encodings)


def test_a_simulation_resumes_from_its_checkpoint(sim, tmp_path):
    s, x = sim
    labels = (x.mean(axis=(1, 2, 3)) > 0).astype(int)
    kw = dict(targets=labels, batch_size=8, output="logits", learn_ranges=True)
    straight, report = train(s, {"x": x}, cross_entropy, Adam(1e-2), epochs=2, **kw)
    path = str(tmp_path / "sim.refq.h5")
    train(s, {"x": x}, cross_entropy, Adam(1e-2), epochs=1, checkpoint=path, **kw)
    assert isinstance(QuantSim.load(path), QuantSim)
    resumed, report2 = train(None, {"x": x}, cross_entropy, Adam(1e-2), epochs=2, resume=path,
                             **kw)
    assert report2["loss"] == report["loss"]
    assert all(resumed.encodings[n] == straight.encodings[n] for n in straight.encodings)
    for a, b in zip(straight.graph.nodes, resumed.graph.nodes):
        for k in a.params:
            assert a.params[k].tobytes() == b.params[k].tobytes(), (a.name, k)
