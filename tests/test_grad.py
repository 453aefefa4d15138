"""The reverse pass (`refq.grad.value_and_grad`) and the losses, against finite differences and
hand computations in float64."""
from __future__ import annotations

import numpy as np
import pytest

from refq.errors import GraphError, InputError
from refq.graph import Graph, Node, TensorSpec
from refq.grad import cross_entropy, kl_divergence, log_softmax, mse, value_and_grad
from vjp_check import numeric_grad_entries

RNG = np.random.default_rng(11)


def small_net():
    """conv -> batch_norm -> relu, a residual fan-out (add of the relu output and a second conv
    of it), global average pool, dense to 5 logits, softmax."""
    c, o = 3, 4
    nodes = [
        Node("conv1", "conv2d", ["x"], ["c1"], {"padding": "same"},
             {"weight": RNG.standard_normal((o, 3, 3, c)) * 0.5, "bias": RNG.standard_normal(o)}),
        Node("bn1", "batch_norm", ["c1"], ["b1"], {"axis": -1, "epsilon": 1e-3},
             {"gamma": RNG.uniform(0.5, 1.5, o), "beta": RNG.standard_normal(o) * 0.1,
              "mean": RNG.standard_normal(o) * 0.1, "variance": RNG.uniform(0.5, 1.5, o)}),
        Node("relu1", "relu", ["b1"], ["r1"]),
        Node("conv2", "conv2d", ["r1"], ["c2"], {"padding": "same"},
             {"weight": RNG.standard_normal((o, 3, 3, o)) * 0.3}),
        Node("res", "add", ["r1", "c2"], ["s"]),
        Node("pool", "global_avg_pool2d", ["s"], ["p"]),
        Node("fc", "dense", ["p"], ["logits"],
             params={"weight": RNG.standard_normal((5, o)), "bias": RNG.standard_normal(5)}),
        Node("prob", "softmax", ["logits"], ["y"]),
    ]
    g = Graph([TensorSpec("x", (None, 6, 5, c))], ["y"], nodes, name="small")
    g.validate()
    return g


def images(n=4):
    return RNG.standard_normal((n, 6, 5, 3))


def loss_of(graph, x, loss, targets, output):
    from refq.runtime import run

    y = run(graph, {"x": x}, trace=True)[output]
    total, _, count = loss(y, targets)
    return total / count


@pytest.mark.parametrize("loss,output,targets", [
    (cross_entropy, "logits", lambda n: RNG.integers(0, 5, n)),
    (mse, "y", lambda n: RNG.uniform(0, 1, (n, 5))),
    (kl_divergence, "logits", lambda n: RNG.standard_normal((n, 5))),
])
def test_gradients_equal_finite_differences(loss, output, targets):
    g = small_net()
    x = images()
    t = targets(len(x))
    value, grads = value_and_grad(g, {"x": x}, loss, t, output=output)
    assert value == pytest.approx(loss_of(g, x, loss, t, output), rel=1e-12)
    nodes = {n.name: n for n in g.nodes}
    assert set(grads) == set(nodes) - {"relu1", "res", "pool", "prob"}
    for name, per in grads.items():
        for k, ana in per.items():
            p = nodes[name].params[k]
            assert ana.shape == p.shape and ana.dtype == np.float64
            idx = np.arange(p.size) if p.size <= 12 else RNG.choice(p.size, 12, replace=False)
            num = numeric_grad_entries(lambda: loss_of(g, x, loss, t, output), p, idx)
            np.testing.assert_allclose(ana.reshape(-1)[idx], num, rtol=1e-6, atol=1e-8,
                                       err_msg=f"{name}/{k}")


def test_chunks_sum_to_the_one_batch_gradient_and_wrt_selects():
    g = small_net()
    x, t = images(5), RNG.integers(0, 5, 5)
    v1, g1 = value_and_grad(g, {"x": x}, cross_entropy, t, output="logits")
    v2, g2 = value_and_grad(g, {"x": x}, cross_entropy, t, output="logits", batch_size=2)
    assert v2 == pytest.approx(v1, rel=1e-13)
    for name in g1:
        for k in g1[name]:
            np.testing.assert_allclose(g2[name][k], g1[name][k], rtol=1e-12, atol=1e-15)
    _, only = value_and_grad(g, {"x": x}, cross_entropy, t, output="logits",
                             wrt=["conv1/weight", "fc"])
    assert {k: set(v) for k, v in only.items()} == {"conv1": {"weight"},
                                                     "fc": {"weight", "bias"}}
    np.testing.assert_array_equal(only["fc"]["bias"], g1["fc"]["bias"])


def test_float32_gradients_are_float32():
    g = small_net()
    x, t = images(2).astype(np.float32), RNG.integers(0, 5, 2)
    v, grads = value_and_grad(g, {"x": x}, cross_entropy, t, output="logits", dtype=np.float32)
    _, ref = value_and_grad(g, {"x": x}, cross_entropy, t, output="logits")
    assert all(a.dtype == np.float32 for per in grads.values() for a in per.values())
    np.testing.assert_allclose(grads["conv1"]["weight"], ref["conv1"]["weight"], rtol=1e-3,
                               atol=1e-5)


def test_bad_requests_are_named():
    g = small_net()
    x = images(2)
    with pytest.raises(InputError, match="wrt names 'conv9/weight'"):
        value_and_grad(g, {"x": x}, mse, np.zeros((2, 5)), wrt="conv9/weight")
    with pytest.raises(InputError, match="no tensor 'nope'"):
        value_and_grad(g, {"x": x}, mse, np.zeros((2, 5)), output="nope")
    with pytest.raises(InputError, match="targets have"):
        value_and_grad(g, {"x": x}, mse, np.zeros((3, 5)))
    with pytest.raises(InputError, match="label 7 at index 0 .* samples 1 to 1 of the batch"):
        value_and_grad(g, {"x": x}, cross_entropy, np.array([0, 7]), output="logits")


def test_an_op_without_a_vjp_is_named():
    from refq.layers import REGISTRY
    from dataclasses import replace

    g = small_net()
    saved = REGISTRY["relu"]
    REGISTRY["relu"] = replace(saved, vjp=None)
    try:
        with pytest.raises(GraphError, match="node 'relu1': op 'relu' has no gradient"):
            value_and_grad(g, {"x": images(2)}, mse, np.zeros((2, 5)))
    finally:
        REGISTRY["relu"] = saved


def test_losses_equal_their_formulas():
    z = RNG.standard_normal((3, 4)) * 5
    labels = np.array([2, 0, 3])
    total, grad, n = cross_entropy(z, labels)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert n == 3 and total == pytest.approx(-np.log(p[np.arange(3), labels]).sum(), rel=1e-13)
    onehot = np.eye(4)[labels]
    np.testing.assert_allclose(grad, p - onehot, rtol=1e-13, atol=1e-15)
    soft = RNG.dirichlet(np.ones(4), 3)
    total_p, grad_p, _ = cross_entropy(z, soft)
    assert total_p == pytest.approx(-(soft * np.log(p)).sum(), rel=1e-13)
    np.testing.assert_allclose(grad_p, p - soft, rtol=1e-12, atol=1e-15)
    teacher = RNG.standard_normal((3, 4))
    q = np.exp(teacher) / np.exp(teacher).sum(1, keepdims=True)
    total_k, grad_k, nk = kl_divergence(z, teacher)
    assert nk == 3 and total_k == pytest.approx((q * (np.log(q) - np.log(p))).sum(), rel=1e-12)
    np.testing.assert_allclose(grad_k, p - q, rtol=1e-12, atol=1e-15)
    y, t = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 3))
    total_m, grad_m, nm = mse(y, t)
    assert nm == 6 and total_m == pytest.approx(((y - t) ** 2).sum(), rel=1e-14)
    np.testing.assert_array_equal(grad_m, 2 * (y - t))
    big = np.array([[1000.0, -1000.0, 0.0]])
    assert np.all(np.isfinite(log_softmax(big))) and cross_entropy(big, np.array([0]))[0] == 0

