"""refq.quant.quantsim: QuantSim end to end (aimet.md §0.2.5, §0.2.6, §3.4).

Small graphs use dyadic weights and inputs so that every float32 value below is exact and the
expected ranges and scales can be written by hand. The real PP-OCR classifier checks the laws on a
full network (a few random images, so the runtime stays small).
"""
import copy
import json
from importlib import resources

import numpy as np
import pytest

import refq
from refq.errors import InputError, QuantError
from refq.graph import Graph, Node, TensorSpec
from refq.model_io import save as save_model
from refq.quant import detect_prequantized, encoding_from_min_max, quantize_dequantize
from refq.quant.config import parse_config
from refq.quant.quantsim import QuantSim

f32 = np.float32
LIMIT = 2.0 ** 31 - 2.0 ** 15
PPOCR = "refq/data/ppocr_cls/ppocr_cls_mbv3s.h5"


def cfg(name="per_tensor", **changes):
    p = resources.files("refq.quant").joinpath("configs", f"default_{name}.json")
    d = json.loads(p.read_text(encoding="utf-8"))
    for k, v in changes.items():
        if k == "op_type":
            d["op_type"].update(v)
        elif k == "params":
            d["params"].update(v)
        else:
            d[k] = v
    return parse_config(d, source=f"<{name} test>")


def resnap(s):
    """AIMET's re-snap of a symmetric 8-bit scale: fl(fl(fl(127 s) + 128 s)/255)."""
    s = f32(s)
    return f32(f32(f32(f32(127) * s) + f32(128) * s) / f32(255))


def dense(name, x, y, w, b=None):
    p = {"weight": np.array(w, f32)}
    if b is not None:
        p["bias"] = np.array(b, f32)
    return Node(name, "dense", [x], [y], {}, p)


def on_grid(v, enc):
    """True when every value of v is (k − zp)·s for an integer code k in [qmin, qmax]."""
    v = np.asarray(v, f32)
    shape = enc.broadcast_shape(v.ndim)
    s = enc.scale.reshape(shape)
    zp = enc.zero_point.reshape(shape)
    k = np.rint(v.astype(np.float64) / s.astype(np.float64))
    exact = np.array_equal(k.astype(f32) * s, v)                  # v = fl((q − zp)·s)
    inside = np.all(k + zp >= enc.qmin) and np.all(k + zp <= enc.qmax)
    close = np.allclose(v.astype(np.float64) / s, k, rtol=0, atol=1e-3)
    return exact and inside and close and np.array_equal(quantize_dequantize(v, enc), v)


@pytest.fixture(scope="module")
def ppocr():
    return refq.import_keras(PPOCR)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).uniform(-1, 1, (3, 48, 192, 3)).astype(f32)


@pytest.fixture(scope="module")
def ppocr_sim(ppocr, images):
    return QuantSim(ppocr).compute_encodings(images[:2])


# ------------------------------------------------------------------------------------ calibration

def two_dense_graph():
    """x[2] -> fc1 (w = [-1, 0.3]) -> y1 -> fc2 (w = [-1]) -> y2."""
    return Graph([TensorSpec("x", (None, 2))], ["y2"],
                 [dense("fc1", "x", "y1", [[-1.0, 0.3]]), dense("fc2", "y1", "y2", [[-1.0]])])


def test_statistics_use_qdq_weights_and_float_activations():
    g = two_dense_graph()
    assert detect_prequantized(g.nodes[0].params["weight"], 8) is None   # premise: plain minmax
    x = np.array([[-1, 1], [1, 1], [0.5, -1]], f32)
    sim = QuantSim(g, cfg())
    assert set(sim.tensor_quantizers()) == {"x", "y1", "y2"}
    sim.compute_encodings(x)
    # weights: Δ = max(0.3/127, 1/128) = 1/128, so s = 1/128 and 0.3 -> round(38.4)/128
    assert sim.encodings["fc1.weight"].scale == f32(1 / 128)
    w_hat = np.array([-1.0, 38 / 128])
    y1 = x.astype(np.float64) @ w_hat                     # [1.296875, -0.703125, -0.796875]
    assert y1.tolist() == [1.296875, -0.703125, -0.796875]
    assert sim.encodings["x"] == encoding_from_min_max(-1.0, 1.0, 8, False)
    assert sim.encodings["y1"] == encoding_from_min_max(-0.796875, 1.296875, 8, False)
    # with float weights the range would be [-0.8, 1.3]
    assert sim.encodings["y1"] != encoding_from_min_max(-0.8, 1.3, 8, False)
    # fc2 reads y1 unquantized (float activations): y2 = -y1
    assert sim.encodings["y2"] == encoding_from_min_max(-1.296875, 0.796875, 8, False)
    y1_qdq = quantize_dequantize(y1.astype(f32), sim.encodings["y1"])
    assert not np.array_equal(y1_qdq, y1.astype(f32))
    assert sim.encodings["y2"] != encoding_from_min_max(-y1_qdq.max(), -y1_qdq.min(), 8, False)


def test_config_none_is_the_per_channel_default():
    g = exact_graph()
    a, b = QuantSim(g), QuantSim(g, "per_channel")
    assert a.config == b.config
    assert {k: q.to_json() for k, q in a.quantizers.items()} == \
        {k: q.to_json() for k, q in b.quantizers.items()}
    assert a.quantizers["fc.weight"].axis == 0


def test_compute_encodings_returns_self_and_overwrites():
    g = two_dense_graph()
    sim = QuantSim(g, cfg())
    assert sim.compute_encodings(np.array([[1, 1]], f32)) is sim
    first = sim.encodings["x"]
    sim.compute_encodings(np.array([[-2, 3]], f32))
    assert sim.encodings["x"] == encoding_from_min_max(-2.0, 3.0, 8, False) != first


def dw_bn_relu_graph():
    """x[1,1,2] -> depthwise 1x1 (w = -1) -> BN (identity, epsilon 0) -> relu."""
    c = 2
    return Graph([TensorSpec("x", (None, 1, 1, c))], ["r"], [
        Node("dw", "conv2d", ["x"], ["d"], {"groups": c}, {"weight": -np.ones((c, 1, 1, 1), f32)}),
        Node("bn", "batch_norm", ["d"], ["b"], {"epsilon": 0.0},
             {"gamma": np.ones(c, f32), "beta": np.zeros(c, f32), "mean": np.zeros(c, f32),
              "variance": np.ones(c, f32)}),
        Node("relu", "relu", ["b"], ["r"])])


def test_shared_quantizer_range_is_the_union_with_pre_relu_negatives():
    sim = QuantSim(dw_bn_relu_graph(), "per_channel")
    tq = sim.tensor_quantizers()
    assert tq["b"] == tq["r"] and "d" not in tq
    x = np.array([[[[-0.5, 0.25]]], [[[2.0, 1.0]]]], f32)   # channel values in [-0.5, 2]
    sim.compute_encodings(x)
    shared = sim.encodings[tq["r"]]
    # BN output = -x in [-2, 0.5]; ReLU output in [0, 0.5]; the union is [-2, 0.5]
    assert shared == encoding_from_min_max(-2.0, 0.5, 8, False)
    assert shared.zero_point > 0
    assert shared != encoding_from_min_max(0.0, 0.5, 8, False)
    # in the sim forward both tensors lie on that one grid
    t = sim.run(x, trace=True)
    assert on_grid(t["b"], shared) and on_grid(t["r"], shared)
    assert t["b"].min() < 0


def test_fixed_encoding_constraints():
    g = Graph([TensorSpec("x", (None, 3))], ["r", "s"],
              [Node("relu", "relu", ["x"], ["r"]), Node("sg", "sigmoid", ["x"], ["s"])])
    c = cfg(op_type={"Relu": {"encoding_constraints": {"min": 0.0, "max": 6.0}},
                     "Sigmoid": {"encoding_constraints": {"min": -1.0, "max": 1.0}}})
    sim = QuantSim(g, c).compute_encodings(np.array([[-1, 0.5, 0.25]], f32))
    assert sim.encodings["r"] == encoding_from_min_max(0.0, 6.0, 8, False)
    assert sim.encodings["s"] == encoding_from_min_max(-1.0, 1.0, 8, False)
    assert sim.encodings["x"] == encoding_from_min_max(-1.0, 0.5, 8, False)
    # the range does not move with the data
    sim.compute_encodings(np.array([[-9, 20, 3]], f32))
    assert sim.encodings["r"] == encoding_from_min_max(0.0, 6.0, 8, False)


def exact_graph():
    """Every value a multiple of 1/8 (weights have a -1 per channel so s_w = 1/128 and QDQ is the
    identity): all float32 sums below are exact, whatever the batching or BLAS kernel."""
    rng = np.random.default_rng(3)
    w = rng.integers(-8, 9, (4, 3, 3, 3)).astype(f32) / 8
    w[:, 0, 0, 0] = -1
    wd = rng.integers(-8, 9, (2, 4)).astype(f32) / 8
    wd[:, 0] = -1
    return Graph([TensorSpec("x", (None, 2, 2, 3))], ["y"], [
        Node("conv", "conv2d", ["x"], ["c"], {"padding": "same"},
             {"weight": w, "bias": rng.integers(-8, 9, 4).astype(f32) / 8}),
        Node("hs", "relu6", ["c"], ["h"]),
        Node("gap", "global_avg_pool2d", ["h"], ["g"]),
        Node("fc", "dense", ["g"], ["y"], {}, {"weight": wd, "bias": np.array([0.5, -0.25], f32)})])


def exact_inputs(n=9):
    return np.random.default_rng(4).integers(-8, 9, (n, 2, 2, 3)).astype(f32) / 8


def test_streaming_equals_one_big_batch():
    g, x = exact_graph(), exact_inputs()
    ref = QuantSim(g, "per_channel").compute_encodings(x).encodings
    for data, bs in (([x[:2], x[2:7], x[7:]], None), (x, 4), (x, 1),
                     ([{"x": x[:5]}, {"x": x[5:]}], None), (iter([x[:3], x[3:]]), None)):
        got = QuantSim(g, "per_channel").compute_encodings(data, batch_size=bs).encodings
        assert got.keys() == ref.keys()
        for k in ref:
            assert got[k] == ref[k], k


def test_per_channel_weight_encodings_are_channelwise_minmax(ppocr):
    sim = QuantSim(ppocr, "per_channel")
    sim.compute_param_encodings()
    convs = [q for q in sim.quantizers.values() if q.kind == "param" and q.axis == 0]
    assert len(convs) >= 50
    for q in convs:
        w = sim.graph.node(q.node).params[q.param].astype(f32)
        rows = w.reshape(w.shape[0], -1)
        enc = sim.encodings[q.name]
        assert enc.axis == 0 and enc.scale.shape == (w.shape[0],)
        assert enc == encoding_from_min_max(rows.min(1), rows.max(1), 8, True, axis=0), q.name
        for c in (0, w.shape[0] - 1):
            one = encoding_from_min_max(rows[c].min(), rows[c].max(), 8, True)
            assert enc.scale[c] == one.scale


def test_per_tensor_weight_encodings_are_minmax(ppocr):
    sim = QuantSim(ppocr, "per_tensor")
    sim.compute_param_encodings()
    for q in sim.quantizers.values():
        if q.kind == "param":
            w = sim.graph.node(q.node).params[q.param].astype(f32)
            assert sim.encodings[q.name] == encoding_from_min_max(w.min(), w.max(), 8, True)


def test_prequantized_weights_keep_their_scale():
    # aimet.md §0.2.5: weights in {-0.1, 0, 0.1} get s = 0.1, not 0.1/127
    w = np.array([[-0.1, 0.0, 0.1, 0.1], [0.1, -0.1, 0.0, 0.1]], f32)
    g = Graph([TensorSpec("x", (None, 4))], ["y"], [dense("fc", "x", "y", w)])
    sim = QuantSim(g, cfg(), overflow_protection=False)
    sim.compute_param_encodings()
    assert sim.encodings["fc.weight"].scale == f32(0.1)


# ------------------------------------------------------------------------------------ forward

def test_sim_forward_tensors_lie_on_their_grids(ppocr_sim, images):
    sim = ppocr_sim
    t = sim.run({"x": images[2:]}, trace=True)
    tq = sim.tensor_quantizers()
    assert len(tq) > 50
    for name, qname in tq.items():
        assert on_grid(t[name], sim.encodings[qname]), name
    # the output is quantized too (model_output {}: the softmax keeps its quantizer)
    out = ppocr_sim.graph.outputs[0]
    assert out in tq


def test_quantized_weights_lie_on_their_grids(ppocr_sim):
    params = ppocr_sim.sim_params()
    for q in ppocr_sim.quantizers.values():
        if q.kind == "param":
            assert on_grid(params[q.node][q.param], ppocr_sim.encodings[q.name]), q.name


def test_all_quantizers_disabled_is_the_float32_run(ppocr, ppocr_sim, images):
    x = images[2:]
    ref = refq.run(ppocr, {"x": x}, trace=True, dtype=np.float32)
    got = ppocr_sim.run({"x": x}, trace=True, enabled={})
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k].dtype == np.float32
        assert np.array_equal(got[k], ref[k]), k


def test_sim_plan_is_sim_run_compiled_once(ppocr, images):
    """sim.plan() gives sim.run's outputs on every run, and is a snapshot: encodings computed
    after it was built do not reach it."""
    sim = QuantSim(ppocr).compute_encodings(images[:1])
    plan = sim.plan()
    for x in (images[2:], images[1:], images[2:]):
        ref = sim.run({"x": x})
        got = plan.run({"x": x})
        assert got.keys() == ref.keys()
        for k in ref:
            assert np.array_equal(got[k], ref[k]), k
    sim.compute_encodings(images[1:])
    moved = sim.run({"x": images[2:]})
    still = plan.run({"x": images[2:]})
    out = ppocr.outputs[0]
    assert np.array_equal(still[out], ref[out]) and not np.array_equal(moved[out], ref[out])


def test_only_weights_enabled(ppocr, ppocr_sim, images):
    sim, x = ppocr_sim, images[2:]
    weights = {q.name: True for q in sim.quantizers.values() if q.kind == "param"}
    got = sim.run({"x": x}, trace=True, enabled=weights)
    ref = refq.run(ppocr, {"x": x}, trace=True, dtype=np.float32, params=sim.sim_params())
    flt = refq.run(ppocr, {"x": x}, trace=True, dtype=np.float32)
    for k in ref:
        assert np.array_equal(got[k], ref[k]), k
    assert np.array_equal(got["x"], flt["x"])
    out = ppocr.outputs[0]
    assert not np.array_equal(got[out], flt[out])


def test_one_weight_quantizer_changes_only_what_follows():
    g = exact_graph()
    g.nodes[2] = Node("gap", "global_avg_pool2d", ["h"], ["g"])
    g.nodes[3].params["weight"] = np.array([[-1.0, 0.3, 0.2, 0.7], [0.1, 0.2, -0.9, 0.33]], f32)
    x = exact_inputs(3)
    sim = QuantSim(g, "per_channel").compute_encodings(x)
    flt = refq.run(g, x, trace=True, dtype=np.float32)
    got = sim.run(x, trace=True, enabled={"fc.weight": True})
    for k in ("x", "c", "h", "g"):
        assert np.array_equal(got[k], flt[k]), k
    assert not np.array_equal(got["y"], flt["y"])
    w_hat = quantize_dequantize(g.nodes[3].params["weight"], sim.encodings["fc.weight"])
    assert np.array_equal(got["y"], refq.run(g, x, dtype=np.float32,
                                             params={"fc": {"weight": w_hat,
                                                            "bias": g.nodes[3].params["bias"]}})["y"])


def test_one_activation_quantizer():
    g, x = exact_graph(), exact_inputs(3)
    x = x + f32(1 / 64)          # off the 1/8 grid, so the input quantizer moves values
    sim = QuantSim(g, "per_channel").compute_encodings(x)
    got = sim.run(x, trace=True, enabled={"x": True})
    x_hat = quantize_dequantize(x, sim.encodings["x"])
    assert not np.array_equal(x_hat, x)
    ref = refq.run(g, x_hat, trace=True, dtype=np.float32)
    for k in ref:
        assert np.array_equal(got[k], ref[k]), k


def test_input_quantizer_is_seen_only_by_its_node():
    # y is unquantized; sigmoid reads QDQ(y) through its input quantizer, tanh reads y itself
    g = Graph([TensorSpec("x", (None, 2))], ["s", "t"], [
        dense("fc", "x", "y", [[-1.0, 0.3], [0.7, 0.2]]),
        Node("sg", "sigmoid", ["y"], ["s"]), Node("th", "tanh", ["y"], ["t"])])
    c = cfg(op_type={"Gemm": {"is_output_quantized": "False"},
                     "Sigmoid": {"is_input_quantized": "True"}},
            model_output={"is_output_quantized": "False"})
    x = np.random.default_rng(0).uniform(-1, 1, (6, 2)).astype(f32)
    sim = QuantSim(g, c).compute_encodings(x)
    assert set(sim.tensor_quantizers()) == {"x"}
    assert sim.input_quantizers() == {("sg", 0): "sg:input0"}
    # calibration: the input quantizer observed y = float x @ QDQ(w)
    y_cal = refq.run(g, x, trace=True, dtype=np.float32, params=sim.sim_params())["y"]
    enc = sim.encodings["sg:input0"]
    assert enc == encoding_from_min_max(y_cal.min(), y_cal.max(), 8, False)
    t = sim.run(x, trace=True)
    y_hat = quantize_dequantize(t["y"], enc)
    assert not np.array_equal(y_hat, t["y"])
    ref = refq.run(Graph([TensorSpec("y", (None, 2))], ["s"], [Node("sg", "sigmoid", ["y"], ["s"])]),
                   y_hat, dtype=np.float32)["s"]
    assert np.array_equal(t["s"], ref)
    assert np.array_equal(t["t"], np.tanh(t["y"]))


def test_sim_output_dtype_and_shape(ppocr_sim, images):
    a = ppocr_sim.run({"x": images})
    out = ppocr_sim.graph.outputs[0]
    assert list(a) == [out]
    assert a[out].dtype == np.float32 and a[out].shape == (3, 2)
    np.testing.assert_allclose(a[out].sum(axis=1), 1.0, atol=0.02)     # a quantized softmax


# ------------------------------------------------------------------------------------ overflow

def overflow_graph(w, b):
    return Graph([TensorSpec("x", (None, 2))], ["y"], [dense("fc", "x", "y", w, b)])


# x covers [0, 255/128] exactly, so the input scale is s_in = 1/128 with zero point 0
X_OVF = np.array([[0, 255 / 128], [255 / 128, 0], [1, 1]], f32)
BIAS_1_16 = (2 ** 31 - 2 ** 15) / 2 ** 11      # = |b| for which |b|/(LIMIT·s_in) = 1/16


def expected_protected(s_w, b, s_in, s_out, o_out, per_channel):
    """aimet.md §0.2.5 steps 2, 4, 5, 6 written out in float64, then the float32 re-snap."""
    s_w, b = np.asarray(s_w, np.float64), np.asarray(b, np.float64)
    b_abs = np.abs(b) if per_channel else np.abs(b).max()
    s = np.maximum(s_w, b_abs / (LIMIT * s_in))
    s = np.maximum(s, 2.0 ** -23.5 * s_out / s_in)
    b_acc = np.round(b / (s_in * s)) + np.round(o_out * s_out / (s_in * s))
    acc = np.abs(b_acc * s_in * s)
    s = np.maximum(s, (acc if per_channel else acc.max()) / (LIMIT * s_in))
    return np.array([resnap(v) for v in np.atleast_1d(s).astype(f32)]).reshape(np.shape(s))


def test_bias_overflow_raises_the_weight_scale_per_channel():
    assert BIAS_1_16 == 1048560.0
    w = [[-1.0, 0.3], [-8.0, 2.4]]
    assert detect_prequantized(np.array(w, f32), 8, axis=0) is None
    g = overflow_graph(w, [BIAS_1_16, 0.0])
    plain = QuantSim(g, "per_channel", overflow_protection=False).compute_encodings(X_OVF)
    sim = QuantSim(g, "per_channel").compute_encodings(X_OVF)
    assert plain.encodings["fc.weight"].scale.tolist() == [1 / 128, 1 / 16]
    s_in = float(sim.encodings["x"].scale)
    assert s_in == 1 / 128 and sim.encodings["x"].zero_point == 0
    out = sim.encodings["y"]
    assert out == plain.encodings["y"]          # activations are final before the protection
    assert out.zero_point == 0
    assert 2.0 ** -23.5 * float(out.scale) / s_in < 1 / 16     # step 4 does not bind
    new = sim.encodings["fc.weight"]
    # channel 0: |b|/(LIMIT·s_in) = 1/16 > 1/128; channel 1 unchanged (1/16 re-snaps to itself)
    assert new.scale.tolist() == [1 / 16, 1 / 16]
    assert new.axis == 0 and new.symmetric and (new.qmin, new.qmax) == (-128, 127)
    exp = expected_protected([1 / 128, 1 / 16], [BIAS_1_16, 0.0], s_in, float(out.scale), 0.0, True)
    assert np.array_equal(new.scale, exp)
    # the new grid holds the bias: round(b/(s_in·s_w)) fits in int32
    assert abs(round(BIAS_1_16 / (s_in * float(new.scale[0])))) < 2 ** 31


def test_bias_overflow_per_tensor_uses_max_abs_bias():
    w = [[-1.0, 0.3], [-0.55, 0.21]]
    assert detect_prequantized(np.array(w, f32), 8) is None
    g = overflow_graph(w, [0.0, BIAS_1_16])
    sim = QuantSim(g, "per_tensor").compute_encodings(X_OVF)
    plain = QuantSim(g, "per_tensor", overflow_protection=False).compute_encodings(X_OVF)
    assert plain.encodings["fc.weight"].scale == f32(1 / 128)
    out = sim.encodings["y"]
    o_out = -float(out.zero_point)
    assert o_out == 0
    assert 2.0 ** -23.5 * float(out.scale) * 128 < 1 / 16
    assert sim.encodings["fc.weight"].scale == f32(1 / 16)
    assert sim.encodings["fc.weight"].axis is None
    exp = expected_protected(1 / 128, [0.0, BIAS_1_16], 1 / 128, float(out.scale), o_out, False)
    assert sim.encodings["fc.weight"].scale == exp


def test_requantization_underflow_lifts_a_small_channel():
    # the huge bias of channel 0 makes s_out large; channel 1 (s_w = 1/128) is lifted by step 4
    w = [[-1.0, 0.3], [-1.0, 0.3]]
    g = overflow_graph(w, [BIAS_1_16, 0.0])
    sim = QuantSim(g, "per_channel").compute_encodings(X_OVF)
    s_out = float(sim.encodings["y"].scale)
    lifted = 2.0 ** -23.5 * s_out / (1 / 128)
    assert 1 / 128 < lifted < 1 / 16
    new = sim.encodings["fc.weight"].scale
    assert new[0] == f32(1 / 16)
    assert new[1] == resnap(f32(lifted))
    exp = expected_protected([1 / 128, 1 / 128], [BIAS_1_16, 0.0], 1 / 128, s_out,
                             -float(sim.encodings["y"].zero_point), True)
    assert np.array_equal(new, exp)


def test_accumulator_bias_with_output_offset():
    """Step 5: b_acc = round(b/(s_in s')) + round(o_out·s_out/(s_in s')) can exceed the bias alone."""
    w = [[-1.0, 0.3], [-1.0, 0.3]]
    # output mostly negative: a large zero point, o_out = -zp
    g = overflow_graph(w, [-BIAS_1_16, -BIAS_1_16 / 2])
    sim = QuantSim(g, "per_channel").compute_encodings(X_OVF)
    out = sim.encodings["y"]
    assert out.zero_point > 200
    exp = expected_protected([1 / 128, 1 / 128], [-BIAS_1_16, -BIAS_1_16 / 2], 1 / 128,
                             float(out.scale), -float(out.zero_point), True)
    assert np.array_equal(sim.encodings["fc.weight"].scale, exp)
    # by hand: step 2 gives 1/16; o_out·s_out ≈ -|b| doubles |b_acc| to about 2^32, so s ≈ 1/8
    assert abs(float(sim.encodings["fc.weight"].scale[0]) - 1 / 8) < 1e-4


def test_per_tensor_accumulator_bias_uses_max_abs_bias():
    w = [[-1.0, 0.3], [-0.55, 0.21]]
    g = overflow_graph(w, [-BIAS_1_16, 0.0])
    sim = QuantSim(g, "per_tensor").compute_encodings(X_OVF)
    out = sim.encodings["y"]
    s_out, o_out = float(out.scale), -float(out.zero_point)
    assert o_out == -255
    big_b = BIAS_1_16                                          # max|b|, a non-negative scalar
    s = max(1 / 128, big_b / (LIMIT / 128))                    # step 2: 1/16
    s = max(s, 2.0 ** -23.5 * s_out * 128)                     # step 4: does not bind
    assert s == 1 / 16
    b_acc = round(big_b / (s / 128)) + round(o_out * s_out / (s / 128))
    s = max(s, abs(b_acc * s / 128) / (LIMIT / 128))           # step 5: does not bind either
    assert s == 1 / 16
    assert sim.encodings["fc.weight"].scale == resnap(f32(s))


def test_nothing_overflows_minmax_scale_unchanged():
    w = [[-1.0, 0.3], [-8.0, 2.4]]
    g = overflow_graph(w, [0.25, -0.5])
    sim = QuantSim(g, "per_channel").compute_encodings(X_OVF)
    plain = QuantSim(g, "per_channel", overflow_protection=False).compute_encodings(X_OVF)
    s = plain.encodings["fc.weight"].scale
    assert np.array_equal(sim.encodings["fc.weight"].scale, s)
    assert np.array_equal(np.array([resnap(v) for v in s]), s)
    assert sim.encodings["fc.weight"] == plain.encodings["fc.weight"]


def test_nothing_overflows_tf_enhanced_is_resnapped():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 16)).astype(f32)
    g = Graph([TensorSpec("x", (None, 16))], ["y"], [dense("fc", "x", "y", w, np.zeros(8, f32))])
    x = rng.uniform(-1, 1, (16, 16)).astype(f32)
    plain = QuantSim(g, "per_channel", scheme="tf_enhanced",
                     overflow_protection=False).compute_encodings(x)
    sim = QuantSim(g, "per_channel", scheme="tf_enhanced").compute_encodings(x)
    s = plain.encodings["fc.weight"].scale
    want = np.array([resnap(v) for v in s])
    assert np.array_equal(sim.encodings["fc.weight"].scale, want)
    assert np.any(want != s)             # the re-snap moved some channels by an ulp
    assert np.all(np.abs(want.view(np.int32) - s.view(np.int32)) <= 1)


def test_conv_inside_a_conv_relu_supergroup_is_untouched():
    g = Graph([TensorSpec("x", (None, 1, 1, 2))], ["r"], [
        Node("conv", "conv2d", ["x"], ["c"], {},
             {"weight": np.array([[-1.0, 0.3], [-1.0, 0.3]], f32).reshape(2, 1, 1, 2),
              "bias": np.array([BIAS_1_16, 0.0], f32)}),
        Node("relu", "relu", ["c"], ["r"])])
    x = X_OVF.reshape(3, 1, 1, 2)
    sim = QuantSim(g, "per_channel").compute_encodings(x)
    assert "c" not in sim.tensor_quantizers()
    plain = QuantSim(g, "per_channel", overflow_protection=False).compute_encodings(x)
    assert sim.encodings["conv.weight"] == plain.encodings["conv.weight"]
    assert sim.encodings["conv.weight"].scale.tolist() == [1 / 128, 1 / 128]


def test_conv_with_its_own_output_quantizer_is_protected():
    g = Graph([TensorSpec("x", (None, 1, 1, 2))], ["c"], [
        Node("conv", "conv2d", ["x"], ["c"], {},
             {"weight": np.array([[-1.0, 0.3], [-8.0, 2.4]], f32).reshape(2, 1, 1, 2),
              "bias": np.array([BIAS_1_16, 0.0], f32)})])
    sim = QuantSim(g, "per_channel").compute_encodings(X_OVF.reshape(3, 1, 1, 2))
    assert sim.encodings["conv.weight"].scale.tolist() == [1 / 16, 1 / 16]


def test_dense_after_flatten_has_no_input_encoding():
    g = Graph([TensorSpec("x", (None, 1, 1, 2))], ["y"], [
        Node("fl", "flatten", ["x"], ["f"]),
        dense("fc", "f", "y", [[-1.0, 0.3], [-1.0, 0.3]], [BIAS_1_16, 0.0])])
    x = X_OVF.reshape(3, 1, 1, 2)
    sim = QuantSim(g, "per_channel").compute_encodings(x)
    plain = QuantSim(g, "per_channel", overflow_protection=False).compute_encodings(x)
    assert "f" not in sim.tensor_quantizers()
    assert sim.encodings["fc.weight"] == plain.encodings["fc.weight"]


def test_protection_keeps_an_asymmetric_weight_grid():
    w = [[-0.2, 1.0], [0.3, 0.9]]
    g = overflow_graph(w, [0.0, 0.0])
    c = cfg(params={"weight": {"is_symmetric": "False"}})
    plain = QuantSim(g, c, overflow_protection=False).compute_encodings(X_OVF)
    sim = QuantSim(g, c).compute_encodings(X_OVF)
    before, after = plain.encodings["fc.weight"], sim.encodings["fc.weight"]
    assert (before.qmin, before.qmax, before.symmetric) == (0, 255, False)
    assert before.zero_point > 0
    assert (after.qmin, after.qmax, after.symmetric) == (0, 255, False)
    assert after.zero_point == before.zero_point
    assert abs(int(after.scale.view(np.int32)) - int(before.scale.view(np.int32))) <= 1
    # the simulated weights are the same up to that ulp
    p = sim.sim_params()["fc"]["weight"]
    np.testing.assert_allclose(p, plain.sim_params()["fc"]["weight"], rtol=1e-6)


# ------------------------------------------------------------------------------------ persistence

def test_save_load_round_trip(ppocr_sim, images, tmp_path):
    path = tmp_path / "ppocr.refq.h5"
    ppocr_sim.save(path)
    back = QuantSim.load(path)
    assert back.encodings.keys() == ppocr_sim.encodings.keys()
    for k, enc in ppocr_sim.encodings.items():
        assert back.encodings[k] == enc, k
    assert back.enabled == ppocr_sim.enabled
    assert {k: q.to_json() for k, q in back.quantizers.items()} == \
        {k: q.to_json() for k, q in ppocr_sim.quantizers.items()}
    assert back.placement == ppocr_sim.placement
    a = ppocr_sim.run({"x": images}, trace=True)
    b = back.run({"x": images}, trace=True)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


def test_save_load_keeps_settings_and_disabled_quantizers(tmp_path):
    g, x = exact_graph(), exact_inputs(3)
    sim = QuantSim(g, "per_tensor", param_bw=4, act_bw=16).compute_encodings(x)
    sim.enabled["fc.weight"] = False
    sim.save(tmp_path / "s.refq.h5")
    back = QuantSim.load(tmp_path / "s.refq.h5")
    assert (back.param_bw, back.act_bw, back.scheme) == (4, 16, "minmax")
    assert back.enabled["fc.weight"] is False
    assert back.encodings["conv.weight"].bitwidth == 4
    assert back.encodings["x"].bitwidth == 16
    assert np.array_equal(back.run(x)["y"], sim.run(x)["y"])


def test_loaded_sim_can_be_saved_again(tmp_path):
    g, x = exact_graph(), exact_inputs(3)
    QuantSim(g, "per_channel").compute_encodings(x).save(tmp_path / "a.refq.h5")
    back = QuantSim.load(tmp_path / "a.refq.h5")
    back.save(tmp_path / "b.refq.h5")
    again = QuantSim.load(tmp_path / "b.refq.h5")
    assert again.encodings.keys() == back.encodings.keys()
    for k in back.encodings:
        assert again.encodings[k] == back.encodings[k]


def test_calibration_is_deterministic(ppocr, images):
    a = QuantSim(ppocr).compute_encodings(images[:2]).encodings
    b = QuantSim(ppocr).compute_encodings(images[:2]).encodings
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], k


def test_sim_does_not_modify_the_graph(ppocr, images):
    before = {n.name: {k: v.copy() for k, v in n.params.items()} for n in ppocr.nodes}
    QuantSim(ppocr, "per_tensor").compute_encodings(images[:1]).run({"x": images[:1]})
    for n in ppocr.nodes:
        for k, v in n.params.items():
            assert np.array_equal(v, before[n.name][k])


# ------------------------------------------------------------------------------------ errors

def small_sim(**kw):
    return QuantSim(two_dense_graph(), cfg(), **kw)


@pytest.mark.parametrize("data", [[], np.zeros((0, 2), f32), iter([])])
def test_empty_calibration_data(data):
    with pytest.raises(QuantError, match="batch"):
        small_sim().compute_encodings(data)


def test_empty_batch_in_calibration_data():
    with pytest.raises(QuantError, match="empty"):
        small_sim().compute_encodings([np.ones((2, 2), f32), np.zeros((0, 2), f32)])


def test_empty_dict_calibration_data():
    with pytest.raises((QuantError, InputError)):
        small_sim().compute_encodings({})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_calibration_data(bad):
    x = np.ones((3, 2), f32)
    x[1, 0] = bad
    with pytest.raises(QuantError, match="NaN or Inf") as err:
        small_sim().compute_encodings([np.ones((1, 2), f32), x])
    assert "'x'" in str(err.value) and "batch 1" in str(err.value)


def test_a_tensor_without_a_finite_value_in_part_of_a_batch(monkeypatch):
    """The batch's finite values count, however the batch is cut into chunks: image 1 overflows
    y to +inf, image 0 does not; only a batch without any finite value is an error."""
    import refq.plan

    monkeypatch.setattr(refq.plan, "CHUNK_BYTES", 1)   # one image per chunk

    def sim():
        return QuantSim(Graph([TensorSpec("x", (None, 1))], ["y"],
                              [dense("fc", "x", "y", [[1e30]])]), cfg())

    x = np.array([[1], [1e9]], f32)
    with np.errstate(over="ignore"):
        both, first = sim().compute_encodings(x), sim().compute_encodings(x[:1])
        assert both.encodings["y"] == first.encodings["y"]
        with pytest.raises(QuantError, match="holds no finite value"):
            sim().compute_encodings(x[1:])


@pytest.mark.parametrize("shape", [(3, 3), (3,), (3, 2, 1)])
def test_wrong_input_shape_in_calibration_data(shape):
    with pytest.raises(InputError, match="shape"):
        small_sim().compute_encodings(np.ones(shape, f32))


def test_wrong_input_name_in_calibration_data():
    with pytest.raises(InputError, match="'y'"):
        small_sim().compute_encodings([{"y": np.ones((1, 2), f32)}])


@pytest.mark.parametrize("bw", [1, 17, 3.5, True, 0, -8, "8", None])
@pytest.mark.parametrize("which", ["param_bw", "act_bw"])
def test_bad_bitwidth(which, bw):
    with pytest.raises(QuantError, match=which):
        small_sim(**{which: bw})


def test_good_bitwidths():
    for bw in (2, 4, 16):
        small_sim(param_bw=bw, act_bw=bw)


def test_unknown_scheme():
    with pytest.raises(QuantError, match="tf_ehnanced"):
        small_sim(scheme="tf_ehnanced")


def test_unknown_scheme_option():
    with pytest.raises(QuantError, match="bogus"):
        small_sim(scheme_options={"bogus": 1})
    with pytest.raises(QuantError):
        small_sim(scheme="percentile", scheme_options={"percentile": 20})


def test_unknown_config_name():
    with pytest.raises(QuantError, match="per_layer"):
        QuantSim(two_dense_graph(), "per_layer")


def test_run_before_compute_encodings():
    sim = small_sim()
    with pytest.raises(QuantError, match="compute_encodings"):
        sim.run(np.ones((1, 2), f32))
    # with every quantizer disabled there is nothing to look up
    out = sim.run(np.ones((1, 2), f32), enabled={})
    assert out["y2"].dtype == np.float32


def test_run_with_wrong_input():
    sim = small_sim().compute_encodings(np.ones((1, 2), f32))
    with pytest.raises(InputError):
        sim.run(np.ones((1, 3), f32))


def test_load_file_without_quantsim_section(tmp_path):
    path = tmp_path / "plain.refq.h5"
    refq.save(two_dense_graph(), path)
    with pytest.raises(QuantError) as err:
        QuantSim.load(path)
    assert str(path) in str(err.value)


def _doc_and_graph():
    g = exact_graph()
    sim = QuantSim(g, cfg("per_channel", op_type={"Gemm": {"is_input_quantized": "True"}}))
    sim.compute_encodings(exact_inputs(3))
    return sim.to_json(), g


def _save_doc(tmp_path, g, doc):
    path = tmp_path / "bad.refq.h5"
    save_model(g, path, sections={"encodings": doc})
    return path


def test_load_quantizer_for_missing_param_node(tmp_path):
    doc, g = _doc_and_graph()
    g2 = Graph(g.inputs, ["h"], g.nodes[:2])          # no gap, no fc
    path = _save_doc(tmp_path, g2, doc)
    with pytest.raises(QuantError) as err:
        QuantSim.load(path)
    assert str(path) in str(err.value)
    assert "fc" in str(err.value) or "'g'" in str(err.value)


def test_load_quantizer_for_missing_tensor(tmp_path):
    doc, g = _doc_and_graph()
    doc = copy.deepcopy(doc)
    for q in doc["quantizers"]:
        if q["kind"] == "activation" and q["tensors"] == ["h"]:
            q["tensors"] = ["h", "ghost_tensor"]
    path = _save_doc(tmp_path, g, doc)
    with pytest.raises(QuantError, match="ghost_tensor"):
        QuantSim.load(path)


def test_load_param_quantizer_for_a_node_the_graph_lacks(tmp_path):
    doc, g = _doc_and_graph()
    doc = copy.deepcopy(doc)
    for q in doc["quantizers"]:
        if q["kind"] == "param" and q["node"] == "fc":
            q["node"] = "ghost_node"
    path = _save_doc(tmp_path, g, doc)
    with pytest.raises(QuantError, match="ghost_node"):
        QuantSim.load(path)


def test_load_input_quantizer_for_a_node_the_graph_lacks(tmp_path):
    doc, g = _doc_and_graph()
    doc = copy.deepcopy(doc)
    kinds = [q for q in doc["quantizers"] if q["kind"] == "input"]
    assert kinds
    for q in kinds:
        q["node"] = "ghost_node"
    path = _save_doc(tmp_path, g, doc)
    with pytest.raises(QuantError, match="ghost_node"):
        QuantSim.load(path)


def test_load_per_channel_encoding_with_wrong_channel_count(tmp_path):
    doc, g = _doc_and_graph()
    doc = copy.deepcopy(doc)
    for q in doc["quantizers"]:
        if q["name"] == "conv.weight":
            q["encoding"]["scale"] = q["encoding"]["scale"][:2]
            q["encoding"]["zero_point"] = q["encoding"]["zero_point"][:2]
    path = _save_doc(tmp_path, g, doc)
    with pytest.raises(QuantError, match="conv.weight"):
        QuantSim.load(path)


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(format="something-else"),
    lambda d: d.pop("settings"),
    lambda d: d["quantizers"][0].pop("kind"),
    lambda d: d["quantizers"][0].update(bogus=1),
])
def test_load_malformed_quantsim_section(tmp_path, mutate):
    doc, g = _doc_and_graph()
    doc = copy.deepcopy(doc)
    mutate(doc)
    path = _save_doc(tmp_path, g, doc)
    with pytest.raises(QuantError) as err:
        QuantSim.load(path)
    assert str(path) in str(err.value)


def test_frozen_encodings_survive_calibration_and_saving(tmp_path):
    g = net_for_freeze()
    x = np.random.default_rng(3).uniform(-1, 1, (4, 5, 5, 2)).astype(f32)
    sim = QuantSim(g).compute_encodings(x)
    w = next(q.name for q in sim.quantizers.values() if q.kind == "param")
    a = next(q.name for q in sim.quantizers.values() if q.kind == "activation")
    kept = {w: sim.encodings[w], a: sim.encodings[a]}
    sim.freeze([w, a])
    sim.graph.node(sim.quantizers[w].node).params[sim.quantizers[w].param] *= 3
    sim.compute_encodings(x * 5)
    assert sim.encodings[w] == kept[w] and sim.encodings[a] == kept[a]
    sim.save(str(tmp_path / "s.refq.h5"))
    back = QuantSim.load(str(tmp_path / "s.refq.h5"))
    assert back.frozen == {w, a}
    back.compute_encodings(x * 7)
    assert back.encodings[w] == kept[w] and back.encodings[a] == kept[a]
    with pytest.raises(QuantError, match="'nope' is not a quantizer"):
        sim.freeze(["nope"])


def net_for_freeze():
    rng = np.random.default_rng(4)
    nodes = [Node("c", "conv2d", ["x"], ["y"], {"padding": "same"},
                  {"weight": rng.standard_normal((3, 3, 3, 2)).astype(f32),
                   "bias": np.zeros(3, f32)}),
             Node("r", "relu", ["y"], ["z"])]
    graph = Graph([TensorSpec("x", (None, 5, 5, 2))], ["z"], nodes, name="freeze")
    graph.validate()
    return graph
