"""refq.algorithms.adaround: AdaRound as AIMET 2.42 runs it (aimet.md §0.2.10, §7).

A 2x3 dense layer with 4 samples is checked number by number against the formulas written out
here (initial α and h, β, the regulariser, the reconstruction loss, the gradient and one Adam
step); a small conv model (conv + relu, depthwise, dense) checks that a few hundred iterations
lower the layer reconstruction error below nearest rounding, that every weight the new sim runs
is one of the two grid points around the float weight, determinism, that the input sim is
untouched, and the one-line errors.
"""
import math
import pickle

import numpy as np
import pytest

from refq.algorithms.adaround import ACTIVATIONS, LayerProblem, adaround, default_iterations
from refq.algorithms.adaround_loss import beta_at, initial_alpha, soft_rounding, soft_rounding_grad
from refq.errors import InputError, QuantError
from refq.graph import Graph, Node, TensorSpec
from refq.quant.encoding import dequantize, quantize, quantize_dequantize
from refq.layers import REGISTRY
from refq.plan import Plan
from refq.quant.quantsim import QuantSim

F32 = np.float32
# Per-tensor 4-bit symmetric: the extreme -0.8 sets Δ = 0.8/8 = 0.1 (range [-0.8, 0.7]).
W = np.array([[-0.8, 0.31, -0.12], [0.58, 0.07, -0.47]], F32)
B = np.array([0.05, -0.1], F32)
X = np.array([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1], [-1.5, 0.2, 2.0], [0.9, 1.3, -0.4]], F32)


def dense_sim():
    g = Graph([TensorSpec("x", (None, 3))], ["fc"],
              [Node("fc", "dense", ["x"], ["fc"], {}, {"weight": W.copy(), "bias": B.copy()})])
    return QuantSim(g, config="per_tensor", param_bw=4)


def dense_problem(iterations=10, warm_start=0.2, reg=0.01):
    sim = dense_sim()
    sim.compute_param_encodings()
    node = sim.graph.node("fc")
    y = X @ W.T + B
    return sim, LayerProblem(node, sim.encodings["fc.weight"], X, y, None,
                             iterations=iterations, reg=reg, beta=(20.0, 2.0),
                             warm_start=warm_start)


def test_scale_of_the_hand_layer():
    sim, p = dense_problem()
    assert float(p.scale) == pytest.approx(0.1, abs=1e-8)
    assert (p.encoding.qmin, p.encoding.qmax) == (-8, 7)


def test_initial_alpha_and_h_by_the_formulas():
    _, p = dense_problem()
    d = p.scale.astype(F32)
    ratio = W / d
    w_floor = np.floor(ratio)
    r = ratio - w_floor
    alpha = -np.log(F32(1.2) / (r - F32(-0.1)) - F32(1))          # float32 throughout
    assert alpha.dtype == np.float32
    np.testing.assert_array_equal(p.alpha0, alpha)
    np.testing.assert_array_equal(p.w_floor, w_floor)
    # the remainders the weights were chosen for (w = Δ(k + r)), -0.8 being the grid point -8Δ
    np.testing.assert_allclose(r[:, 1:], [[0.1, 0.8], [0.7, 0.3]], atol=2e-6)
    np.testing.assert_allclose(w_floor[:, 1:], [[3, -2], [0, -5]])
    # h(α0) = r (to float32 rounding): the soft weights start at the float weights
    np.testing.assert_allclose(soft_rounding(alpha), r, atol=3e-7)
    np.testing.assert_allclose(p.weight(p.alpha0)[0], W, atol=1e-7)


def test_beta_schedule_at_start_warm_start_middle_and_end():
    # T = 10, warm start 0.2: t0 = 2; β = 2 + 9(1 + cos(π(t − 2)/8))
    assert beta_at(0, 10) == pytest.approx(17.36396103067893, abs=1e-12)   # 2 + 9(1 + cos(-π/4))
    assert beta_at(2, 10) == 20.0
    assert beta_at(6, 10) == pytest.approx(11.0, abs=1e-12)
    assert beta_at(9, 10) == pytest.approx(2.685084207398419, abs=1e-12)  # 2 + 9(1 + cos(7π/8))
    assert beta_at(10, 10) == pytest.approx(2.0, abs=1e-12)


def test_regularizer_value_and_warm_start():
    _, p = dense_problem(iterations=10, warm_start=0.2)
    # α = 0 gives h = 0.5 (term 1), ±10 give h = 0 or 1 (term 0), h = 0.75 gives 1 − 0.5^β
    p75 = 0.85 / 1.2
    alpha = np.array([[0.0, 10.0, -10.0], [math.log(p75 / (1 - p75)), 0.0, 10.0]], F32)
    idx = np.arange(4)
    total, recon, round_value, _ = p.loss_and_grad(alpha, idx, 1)    # 1 < 0.2·10: warm start
    assert round_value == 0.0 and total == recon
    total, recon, round_value, _ = p.loss_and_grad(alpha, idx, 6)    # β = 11
    assert round_value == pytest.approx(0.01 * (2 + 1 - 0.5 ** 11), rel=1e-5)
    assert total == pytest.approx(recon + round_value, rel=1e-12)


def test_reconstruction_loss_by_hand():
    _, p = dense_problem()
    alpha = np.array([[10.0, -10.0, 10.0], [-10.0, 10.0, 10.0]], F32)   # h = 1, 0, 1 / 0, 1, 1
    w_hat = (p.w_floor + np.array([[1, 0, 1], [0, 1, 1]], F32)) * p.scale
    w_hat = np.clip(w_hat, -0.8, 0.7)
    y_hat = X.astype(np.float64) @ w_hat.T.astype(np.float64) + B
    y = X.astype(np.float64) @ W.T.astype(np.float64) + B
    want = np.mean(np.sum((y_hat - y) ** 2, axis=1))              # mean over rows of Σ_channels
    _, recon, _, _ = p.loss_and_grad(alpha, np.arange(4), 0)
    assert recon == pytest.approx(want, rel=1e-5)
    # codes: -8 + 1 = -7 would be the up-rounding of -0.8, 3 + 0, -2 + 1; 5 + 0, 0 + 1, -5 + 1
    np.testing.assert_allclose(p.weight(alpha)[0], [[-0.7, 0.3, -0.1], [0.5, 0.1, -0.4]],
                               atol=1e-6)


def test_gradient_and_one_adam_step_by_the_formulas():
    sim, p = dense_problem(iterations=1, warm_start=0.0)   # round loss on at t = 0, β = 20
    a0 = p.alpha0
    d = p.scale.astype(F32)
    sig = (1 / (1 + np.exp(-a0.astype(np.float64)))).astype(F32)
    h = np.clip(sig * F32(1.2) - F32(0.1), 0, 1)
    dh = sig * (1 - sig) * F32(1.2)                        # no clamp is active at α0
    w_hat = (p.w_floor + h) * d
    err = X @ w_hat.T + B - (X @ W.T + B)                   # ≈ 0 at α0
    g_recon = (2 / 4) * err.T @ X * d * dh                  # ∂recon/∂W · ∂ŵ/∂h · h'
    u = 2 * h - 1
    g_round = -2 * 0.01 * 20 * np.abs(u) ** 19 * np.sign(u) * dh
    g = (g_recon + g_round).astype(F32)
    _, _, round_value, grad = p.loss_and_grad(a0, np.arange(4), 0)
    assert round_value == pytest.approx(0.01 * np.sum(1 - np.abs(u) ** 20), rel=1e-5)
    np.testing.assert_allclose(grad, g, rtol=1e-4, atol=1e-9)
    # Adam step 1 (PyTorch): m = 0.1g, v = 0.001g², α1 = α0 − (1e-3/0.1)·m / (sqrt(v)/sqrt(0.001) + 1e-8)
    m, v = 0.1 * g.astype(np.float64), 0.001 * g.astype(np.float64) ** 2
    alpha1 = a0 - (1e-3 / 0.1) * m / (np.sqrt(v) / math.sqrt(0.001) + 1e-8)
    big = np.abs(g) > 1e-6          # there the step is lr·sign(g); where |g| ~ eps it is smaller
    np.testing.assert_allclose(alpha1[big], (a0 - 1e-3 * np.sign(g))[big], atol=2e-6)
    assert np.all(np.abs(alpha1 - a0)[~big] < 1e-3)
    new, report = adaround(sim, X, iterations=1, warm_start=0.0)
    np.testing.assert_allclose(new.graph.node("fc").params["weight"],
                               p.weight(alpha1.astype(F32))[0], atol=1e-7)
    assert report["layers"]["fc"]["round_loss"] == pytest.approx(round_value, rel=1e-6)


# ----------------------------------------------------------------------------- conv model

def conv_graph(seed=0):
    r = np.random.default_rng(seed)
    p32 = lambda *a: r.normal(0, 1, a[1]).astype(F32) * F32(a[0])   # noqa: E731
    nodes = [
        Node("c1", "conv2d", ["x"], ["c1"], {"padding": "same"},
             {"weight": p32(0.4, (6, 3, 3, 3)), "bias": p32(0.1, (6,))}),
        Node("r1", "relu", ["c1"], ["r1"]),
        Node("dw", "conv2d", ["r1"], ["dw"], {"padding": "same", "groups": 6},
             {"weight": p32(0.5, (6, 3, 3, 1))}),
        Node("r2", "relu6", ["dw"], ["r2"]),
        Node("gap", "global_avg_pool2d", ["r2"], ["gap"]),
        Node("fc", "dense", ["gap"], ["fc"], {}, {"weight": p32(0.5, (4, 6))}),
    ]
    return Graph([TensorSpec("x", (None, 8, 8, 3))], ["fc"], nodes, name="small")


def conv_data(n=48):
    return np.random.default_rng(1).normal(0, 1, (n, 8, 8, 3)).astype(F32)


@pytest.fixture(scope="module")
def conv_run():
    sim = QuantSim(conv_graph(), param_bw=4)
    before = pickle.dumps((sim.graph, sim.encodings, sim.enabled))
    new, report = adaround(sim, conv_data(), iterations=1000, seed=3)
    return sim, before, new, report


def layer_errors(new, graph, x, weights):
    """{layer: mean over rows of Σ_c (f(ŷ) − f(y))²}: each layer run with weights[layer] on its
    input in `new`'s quantized model (weights quantized, activations float), against its output in
    the float `graph`, f the activation after it; float32 as the optimisation ran."""
    ref = Plan(graph, F32).run(x, trace=True)
    only_params = {q: new.quantizers[q].kind == "param" for q in new.quantizers}
    q = new.plan(only_params).run(x, trace=True)
    out = {}
    for layer, act in (("c1", "relu"), ("dw", "relu6"), ("fc", None)):
        node = new.graph.node(layer)
        y = REGISTRY[node.op].forward([q[node.inputs[0]]], dict(node.params, weight=weights[layer]),
                                      node.attrs)
        t = ref[layer]
        if act:
            y, t = (REGISTRY[act].forward([v], {}, {}) for v in (y, t))
        out[layer] = float(np.mean(np.sum((y - t).astype(np.float64) ** 2, axis=-1)))
    return out


def test_report_layers_and_activations(conv_run):
    _, _, _, report = conv_run
    assert list(report["layers"]) == ["c1", "dw", "fc"]
    assert [v["activation"] for v in report["layers"].values()] == ["relu", "relu6", None]
    assert report["iterations"] == 1000 and report["skipped"] == {}
    for v in report["layers"].values():
        assert 0 <= v["hard_fraction"] <= 1 and v["seconds"] > 0
    assert "softmax" in ACTIVATIONS and "hard_swish" in ACTIVATIONS and "add" not in ACTIVATIONS


def test_lowers_reconstruction_error_below_nearest_rounding(conv_run):
    sim, _, new, _ = conv_run
    x = conv_data()
    layers = ("c1", "dw", "fc")
    rounded = {n: new.sim_params()[n]["weight"] for n in layers}
    nearest = {n: quantize_dequantize(sim.graph.node(n).params["weight"],
                                      new.encodings[f"{n}.weight"]) for n in layers}
    e_ada = layer_errors(new, sim.graph, x, rounded)
    e_near = layer_errors(new, sim.graph, x, nearest)
    # measured: c1 0.07034 < 0.07152, dw 0.11257 < 0.11583, fc 0.00413 < 0.00517
    for n in layers:
        assert e_ada[n] < 0.99 * e_near[n], (n, e_ada[n], e_near[n])


def test_every_weight_on_its_grid_next_to_the_float_weight(conv_run):
    sim, _, new, _ = conv_run
    for layer in ("c1", "dw", "fc"):
        enc = new.encodings[f"{layer}.weight"]
        w = sim.graph.node(layer).params["weight"]
        w_hat = new.graph.node(layer).params["weight"]
        run_w = new.sim_params()[layer]["weight"]
        shape = enc.broadcast_shape(w.ndim)
        codes = quantize(run_w, enc)
        np.testing.assert_array_equal(dequantize(codes, enc), run_w)   # on the grid
        assert codes.min() >= enc.qmin and codes.max() <= enc.qmax
        floor = np.floor(w / enc.scale.reshape(shape))
        assert np.all((codes == floor) | (codes == floor + 1) | (codes == enc.qmax))
        np.testing.assert_array_equal(quantize_dequantize(run_w, enc), run_w)
        # the soft-rounded weights are within one step of the float ones, and rint(ŵ/Δ) is the code
        assert np.all(np.abs(w_hat - w) <= enc.scale.reshape(shape) * 1.0001)
        np.testing.assert_array_equal(codes, np.rint(w_hat * (F32(1) / enc.scale.reshape(shape))))


def test_input_sim_unchanged_and_encodings_kept(conv_run):
    sim, before, new, _ = conv_run
    assert pickle.dumps((sim.graph, sim.encodings, sim.enabled)) == before
    fresh = QuantSim(conv_graph(), param_bw=4)
    fresh.detect_prequantized = False
    fresh.compute_param_encodings()
    for name in ("c1.weight", "dw.weight", "fc.weight"):
        assert new.encodings[name] == fresh.encodings[name]


def test_deterministic_same_seed_identical_bytes(conv_run):
    sim, _, _, _ = conv_run
    new, _ = adaround(sim, conv_data(), iterations=60, seed=3)
    again, _ = adaround(sim, conv_data(), iterations=60, seed=3)
    other, _ = adaround(sim, conv_data(), iterations=60, seed=4)
    for layer in ("c1", "dw", "fc"):
        a = new.graph.node(layer).params["weight"]
        assert a.tobytes() == again.graph.node(layer).params["weight"].tobytes()
    assert any(new.graph.node(n).params["weight"].tobytes()
               != other.graph.node(n).params["weight"].tobytes() for n in ("c1", "dw", "fc"))


def test_default_iterations_and_param_bw():
    assert default_iterations([8, 16]) == 10000 and default_iterations([8, 4]) == 15000
    new, report = adaround(dense_sim(), X, iterations=2, param_bw=8)
    assert new.encodings["fc.weight"].bitwidth == 8 and new.param_bw == 8


# ----------------------------------------------------------------------------- errors

def test_errors_are_one_line():
    g = conv_graph()
    no_params = QuantSim(g, config={"defaults": {"ops": {"is_output_quantized": "True"},
                                                 "params": {"is_quantized": "False"}},
                                    "params": {}, "op_type": {}, "supergroups": [],
                                    "model_input": {}, "model_output": {}})
    cases = [
        (QuantError, "enabled weight quantizer", lambda: adaround(no_params, conv_data(4))),
        (QuantError, "empty", lambda: adaround(QuantSim(g), conv_data(0))),
        (InputError, "shape", lambda: adaround(QuantSim(g), np.zeros((4, 8, 8, 2), F32))),
        (QuantError, "iterations", lambda: adaround(QuantSim(g), conv_data(4), iterations=0)),
        (QuantError, "param_bw", lambda: adaround(QuantSim(g), conv_data(4), param_bw=1)),
        (QuantError, "warm_start", lambda: adaround(QuantSim(g), conv_data(4), warm_start=1)),
    ]
    for err, word, call in cases:
        with pytest.raises(err) as e:
            call()
        assert word in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_initial_alpha_is_float32_for_float64_weights():
    a = initial_alpha(np.array([0.25, -0.26]), np.float32(0.1))
    assert a.dtype == np.float32


def test_soft_rounding_derivative_zero_where_the_clamp_is_active():
    # s(α) = 1.2·sigmoid(α) − 0.1 leaves [0, 1] for |α| > log(11) ≈ 2.398: there h' = 0
    alpha = np.array([-10.0, -2.5, 0.0, 2.5, 10.0], F32)
    np.testing.assert_array_equal(soft_rounding(alpha), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(soft_rounding_grad(alpha), [0, 0, 0.3, 0, 0], atol=1e-7)
    inside = np.array([-2.0, 1.0], F32)
    sig = 1 / (1 + np.exp(-inside.astype(np.float64)))
    np.testing.assert_allclose(soft_rounding_grad(inside), 1.2 * sig * (1 - sig), rtol=1e-6)
