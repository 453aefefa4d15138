"""Integer kernels inside graphs: Graph.validate accepts a valid integer graph and rejects bad
shapes, parameters and encodings; refq.run executes it (with the accumulator hook); save/load."""
from __future__ import annotations

import numpy as np
import pytest

import refq
from refq.errors import FixedPointError, GraphError, ParamError, ShapeError
from refq.fixedpoint import quantize_multiplier
from refq.fixedpoint.kernels import build_lut, tflite_softmax_params
from refq.graph import Graph, Node, TensorSpec
from refq.ops import get_op
from test_fixedpoint_kernels_ops import add_params


def qm(reals):
    m, s = quantize_multiplier(np.asarray(reals, np.float64))
    return {"multiplier": np.atleast_1d(m).astype(np.int32),
            "shift": np.atleast_1d(s).astype(np.int32)}


ACT = {"act_min": -128, "act_max": 127}
T = {"scheme": "tflite_double"}


def int_graph(seed=0):
    rng = np.random.default_rng(seed)
    w8 = lambda *s: rng.integers(-127, 128, size=s).astype(np.int8)  # noqa: E731
    nodes = [
        Node("q", "int_quantize", ["x"], ["q0"],
             {"scale": float(np.float32(0.05)), "zero_point": -10, "qmin": -128, "qmax": 127,
              "rounding": "half_away"}),
        Node("conv", "int_conv2d", ["q0"], ["c1"],
             {"padding": "same", "input_zp": -10, "output_zp": -128, "act_min": -128,
              "act_max": 127, **T},
             {"weight": w8(4, 3, 3, 3), "bias": rng.integers(-500, 500, 4).astype(np.int32),
              **qm([0.004, 0.002, 0.003, 0.001])}),
        Node("pool", "int_max_pool2d", ["c1"], ["p1"],
             {"pool_size": [2, 2], "strides": [2, 2], **ACT}),
        Node("dw", "int_conv2d", ["p1"], ["d1"],
             {"padding": "same", "groups": 4, "input_zp": -128, "output_zp": 3, **ACT, **T},
             {"weight": w8(4, 3, 3, 1), **qm([0.01] * 4)}),
        Node("add", "int_add", ["p1", "d1"], ["a1"],
             {"a_zp": -128, "b_zp": 3, "output_zp": 0, **ACT, **T, "add": "tflite"},
             add_params(0.02, 0.03, 0.04, "tflite_double")),
        Node("gap", "int_mean", ["a1"], ["m1"],
             {"keepdims": True, "input_zp": 0, "output_zp": -128, **ACT, "mean": "tflite", **T},
             qm([0.5])),
        Node("se", "int_multiply", ["a1", "m1"], ["s1"],
             {"a_zp": 0, "b_zp": -128, "output_zp": 0, **ACT, **T}, qm([0.01, 0.02, 0.01, 0.03])),
        Node("avg", "int_avg_pool2d", ["s1"], ["av"],
             {"pool_size": [3, 3], "strides": [1, 1], "padding": "same", "input_zp": 0,
              "output_zp": 0, **ACT, "avg": "tflite"}),
        Node("rq", "int_requantize", ["av"], ["rq"],
             {"input_zp": 0, "output_zp": 5, **ACT, **T}, qm([0.7])),
        Node("cat", "int_concat", ["av", "rq"], ["cc"], {"axis": -1}),
        Node("pad", "int_pad", ["cc"], ["pd"], {"pads": [1, 0, 0, 1], "value": 0}),
        Node("lut", "int_lut", ["pd"], ["lt"], {"input_qmin": -128},
             {"table": build_lut("sigmoid", 0.05, 0, 1 / 256, -128, -128, 127, "lut_float")
              .astype(np.int8)}),
        Node("flat", "flatten", ["lt"], ["fl"]),
        Node("fc", "int_dense", ["fl"], ["de"],
             {"input_zp": -128, "output_zp": 0, **ACT, "scheme": "float_half_away"},
             {"weight": w8(5, 200), "bias": np.zeros(5, np.int32),
              "real_multiplier": np.full(5, 0.002)}),
        Node("softmax", "int_softmax", ["de"], ["sm"],
             {"softmax": "tflite", "output_zp": -128, **ACT, **tflite_softmax_params(0.1)}),
        Node("deq", "int_dequantize", ["sm"], ["y"], {"scale": 1 / 256, "zero_point": -128}),
    ]
    return Graph([TensorSpec("x", (None, 8, 8, 3), "float32")], ["y"], nodes, name="int")


def test_valid_integer_graph_validates_and_runs():
    g = int_graph().validate()
    shapes = g.infer_shapes()
    assert shapes["c1"] == (None, 8, 8, 4) and shapes["m1"] == (None, 1, 1, 4)
    assert shapes["cc"] == (None, 4, 4, 8) and shapes["pd"] == (None, 5, 5, 8)
    x = np.random.default_rng(1).normal(0, 2, size=(3, 8, 8, 3)).astype(np.float32)
    out = refq.run(g, {"x": x}, trace=True)
    y = out["y"]
    assert y.shape == (3, 5) and y.dtype == np.float64
    assert np.all((y * 256) == np.round(y * 256)) and np.all(np.abs(y.sum(1) - 1) < 0.05)
    for name in ("q0", "c1", "p1", "d1", "a1", "m1", "s1", "av", "rq", "cc", "pd", "lt", "de",
                 "sm"):
        v = out[name]
        assert v.dtype == np.int64 and v.min() >= -128 and v.max() <= 127, name
    assert np.all(out["c1"] >= -128)


def test_run_with_accumulator_hook_and_batching():
    g = int_graph()
    stats = {}

    def call(node, op, xs, params):
        if op.accumulate is None:
            return op.forward(xs, params, node.attrs)
        y, big = op.accumulate(xs, params, node.attrs)
        stats[node.name] = max(stats.get(node.name, 0), big)
        return y

    x = np.random.default_rng(2).normal(0, 2, size=(4, 8, 8, 3)).astype(np.float32)
    y = refq.run(g, {"x": x}, call=call, batch_size=3)["y"]
    assert set(stats) == {"conv", "dw", "add", "gap", "fc"}
    assert all(0 < v < 1 << 31 for v in stats.values())
    np.testing.assert_array_equal(y, refq.run(g, {"x": x})["y"])


def test_integer_graph_save_load_roundtrip(tmp_path):
    g = int_graph()
    path = tmp_path / "int.refq.h5"
    refq.model_io.save(g, path)
    g2 = refq.model_io.load(path)
    x = np.random.default_rng(3).normal(0, 2, size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(refq.run(g2, {"x": x})["y"], refq.run(g, {"x": x})["y"])


def _mutate(node_name, attrs=None, params=None, drop=()):
    g = int_graph()
    n = g.node(node_name)
    n.attrs.update(attrs or {})
    n.params.update(params or {})
    for k in drop:
        n.params.pop(k)
    return g


BAD = [
    ("wrong conv weight shape", ShapeError, "channel",
     dict(node_name="conv", params={"weight": np.zeros((4, 3, 3, 2), np.int8)})),
    ("wrong dense weight shape", ShapeError, "features",
     dict(node_name="fc", params={"weight": np.zeros((5, 100), np.int8)})),
    ("multiplier length", ParamError, "one per output channel",
     dict(node_name="conv", params=qm([0.1, 0.2, 0.3]))),
    ("real_multiplier length", ParamError, "real_multiplier",
     dict(node_name="fc", params={"real_multiplier": np.full(3, 0.1)})),
    ("missing shift", ParamError, "'shift'", dict(node_name="dw", drop=("shift",))),
    ("missing weight", ParamError, "weight", dict(node_name="dw", drop=("weight",))),
    ("float weight", ParamError, "integer", dict(node_name="conv",
                                                 params={"weight": np.zeros((4, 3, 3, 3))})),
    ("weight outside int8/uint8", ParamError, "weight",
     dict(node_name="conv", params={"weight": np.full((4, 3, 3, 3), 300, np.int16)})),
    ("bias outside int32", ParamError, "bias",
     dict(node_name="conv", params={"bias": np.array([0, 1 << 31, 0, 0], np.int64)})),
    ("act_min > act_max", FixedPointError, "act_min", dict(node_name="conv",
                                                           attrs={"act_min": 5, "act_max": 4})),
    ("output zp outside dtype", FixedPointError, "output_zp",
     dict(node_name="conv", attrs={"output_zp": 200})),
    ("input zp outside any activation dtype", FixedPointError, "input_zp",
     dict(node_name="conv", attrs={"input_zp": 70000})),
    ("quantize zp outside dtype", FixedPointError, "zero_point",
     dict(node_name="q", attrs={"zero_point": 300})),
    ("quantize qmin > qmax", FixedPointError, "qmin", dict(node_name="q", attrs={"qmin": 200})),
    ("shift outside tflite range", FixedPointError, "shift",
     dict(node_name="rq", params={"shift": np.array([40], np.int32)})),
    ("negative multiplier", FixedPointError, "multiplier",
     dict(node_name="rq", params={"multiplier": np.array([-5], np.int32)})),
    ("zp_before_round with an integer scheme", FixedPointError, "zp_before_round",
     dict(node_name="conv", attrs={"zp_before_round": True})),
    ("mean scheme mismatch", FixedPointError, "mean", dict(node_name="gap",
                                                           attrs={"scheme": "tosa_single"})),
    ("add with a float scheme", FixedPointError, "integer scheme",
     dict(node_name="add", attrs={"scheme": "float_rne"})),
    ("add multiplier of two values", ParamError, "a_multiplier|multiplier",
     dict(node_name="add", params={"a_multiplier": np.array([1 << 30, 1 << 30], np.int32)})),
    ("lut table size", ParamError, "2\\^bits", dict(node_name="lut",
                                                   params={"table": np.zeros(200, np.int8)})),
    ("accumulator bits", FixedPointError, "accumulator_bits",
     dict(node_name="conv", attrs={"accumulator_bits": 8})),
    ("unknown overflow policy", GraphError, "overflow", dict(node_name="conv",
                                                            attrs={"overflow": "ignore"})),
    ("avg requant without scheme", FixedPointError, "scheme", dict(node_name="avg",
                                                                   params=qm([0.5]))),
    ("softmax tflite output zp", FixedPointError, "type minimum",
     dict(node_name="softmax", attrs={"output_zp": 0})),
]


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_validate_rejects(case):
    _, err, match, kw = case
    with pytest.raises(err, match=match):
        _mutate(**kw).validate()


def test_kernels_are_found_lazily_and_unknown_int_ops_fail():
    assert get_op("int_conv2d").name == "int_conv2d"
    with pytest.raises(GraphError, match="int_nope"):
        get_op("int_nope")


def test_float_input_to_an_integer_kernel_is_an_error():
    op = get_op("int_max_pool2d")
    attrs = op.normalise_attrs({"pool_size": [2, 2], "strides": [2, 2], **ACT}, "t")
    with pytest.raises(FixedPointError, match="integer tensor"):
        op.forward([np.zeros((1, 4, 4, 1))], {}, attrs)
