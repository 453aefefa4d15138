"""refq's own lowering of int16 sigmoid, tanh, leaky_relu and softmax (a W8A16 QuantSim) under the
TFLite profiles builds the nodes the TFLite importer builds (LiteRT's int16 kernels:
refq.fixedpoint.kernels.act16), the faithful simulation has the same nodes with float tables,
and profiles without such kernels keep refusing or keep their own forms."""
import json
from importlib import resources

import numpy as np
import pytest

from refq.errors import FixedPointError
from refq.fixedpoint.compare import compare
from refq.fixedpoint.kernels import act16
from refq.fixedpoint.lowering import lower, lower_from_params
from refq.fixedpoint.run import faithful_graph, run_int
from refq.graph import Graph, Node, TensorSpec
from refq.quant.config import parse_config
from refq.quant.quantsim import QuantSim

f32 = np.float32
Q15 = 2.0 ** -15
ACTS = (("s", "sigmoid", {}), ("t", "tanh", {}), ("l", "leaky_relu", {"alpha": 0.2}),
        ("sm", "softmax", {"axis": -1}))


def sym_config():
    p = resources.files("refq.quant").joinpath("configs", "default_per_channel.json")
    d = json.loads(p.read_text(encoding="utf-8"))
    d["defaults"]["ops"]["is_symmetric"] = "True"
    return d


def net():
    """conv 3x3 -> sigmoid, tanh, leaky_relu(0.2), softmax over the channels (four outputs)."""
    r = np.random.default_rng(0)
    nodes = [Node("c1", "conv2d", ["x"], ["c1"], {"groups": 1, "padding": "same"},
                  {"weight": r.normal(0, 1.5, (4, 3, 3, 2)).astype(f32),
                   "bias": r.normal(0, 0.2, 4).astype(f32)})]
    nodes += [Node(name, op, ["c1"], [name], attrs) for name, op, attrs in ACTS]
    return Graph([TensorSpec("x", (None, 5, 5, 2))], [n for n, _, _ in ACTS], nodes,
                 name="act16")


def data(n=6, seed=3):
    return np.random.default_rng(seed).normal(0, 1.5, (n, 5, 5, 2)).astype(f32)


@pytest.fixture(scope="module")
def sim():
    return QuantSim(net(), parse_config(sym_config(), source="<sym>"), act_bw=16) \
        .compute_encodings(data())


def _tq(g, t):
    return g.meta["integer"]["tensors"][t]


def _producer(g, t):
    return next(n for n in g.nodes if t in n.outputs)


@pytest.mark.parametrize("profile", ["tflite", "tflite-single"])
def test_lowers_to_litert_int16_kernels(sim, profile):
    g = lower(sim, profile)
    single = profile == "tflite-single"
    c1 = _tq(g, "c1")
    assert c1["dtype"] == "int16" and c1["zero_point"] == 0
    for name, op, attrs in ACTS:
        n = g.node(name)
        out = _tq(g, n.outputs[0])
        want_q15 = op != "leaky_relu"
        assert (out["scale"] == Q15) == want_q15 and out["zero_point"] == 0
        if op == "softmax":
            assert n.op == "int_softmax"
            assert n.attrs["softmax"] == ("tflite16_single" if single else "tflite16")
            p = act16.softmax16_params(c1["scale"], single_rounding=single)
            assert (n.attrs["input_multiplier"], n.attrs["input_left_shift"]) == \
                (p["input_multiplier"], p["input_left_shift"])
        else:
            assert n.op == "int_lut" and n.params["table"].dtype == np.int16
            s_out = Q15 if want_q15 else out["scale"]
            want = act16.int16_table(op, c1["scale"], 0, s_out, 0, alpha=attrs.get("alpha"),
                                     single_rounding=single)
            np.testing.assert_array_equal(n.params["table"], want)
        # the Q0.15 kernels are followed by the requantization to the output's own encoding
        final = _producer(g, f"{name}:q")
        if want_q15:
            assert n.outputs == [f"{name}:pre"] and final.name == f"{name}:requant"
            assert final.op == "int_requantize" and _tq(g, f"{name}:q")["scale"] != Q15
        else:
            assert final is n
    notes = " ".join(g.meta["integer"]["notes"])
    assert "TFLite's int16 sigmoid writes scale 2^-15" in notes
    y, _ = run_int(g, {"x": data(3, seed=9)})
    assert np.all(np.isfinite(y["sm"])) and np.all(y["s"] >= 0)


def test_equals_the_importer_path(sim):
    """The TFLite importer's path: lower_from_params under 'tflite' from the lowered graph's
    codes and encodings builds the same int16 nodes and tables."""
    g = lower(sim, "tflite")
    imap = g.meta["integer"]["float_tensors"]

    def enc(t):
        e = _tq(g, imap.get(t, t))
        return {"scale": e["scale"], "zero_point": e["zero_point"], "dtype": e["dtype"]}

    c1 = g.node("c1")
    w_scale = np.atleast_1d(np.asarray(sim.encodings[next(
        k for k, q in sim.quantizers.items() if q.param == "weight")].scale, dtype=f32))
    layers = [{"name": "c1", "op": "conv2d", "inputs": ["x"], "output": enc("c1"),
               "weight": c1.params["weight"], "weight_scale": w_scale.tolist(),
               "bias": c1.params["bias"], "padding": "same", "groups": 1}]
    layers += [dict({"name": name, "op": op, "inputs": ["c1"], "output": enc(name)},
                    **{k: v for k, v in attrs.items() if k != "axis"}) for name, op, attrs in ACTS]
    spec = {"name": "imported", "inputs": [dict(enc("x"), name="x", shape=[None, 5, 5, 2])],
            "layers": layers, "outputs": [n for n, _, _ in ACTS]}
    gi = lower_from_params(spec, "tflite")
    for name, _, _ in ACTS:
        a, b = g.node(name), gi.node(name)
        assert a.op == b.op and a.attrs == b.attrs
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
    x = data(2, seed=5)
    ya, _ = run_int(g, {"x": x})
    yb, _ = run_int(gi, {"x": x})
    for t in g.outputs:
        np.testing.assert_array_equal(ya[t], yb[t])


def test_faithful_simulation_has_the_same_nodes_and_compare_reports_the_tables(sim):
    gf = faithful_graph(sim, like="tflite")
    g = lower(sim, "tflite")
    assert [(n.name, n.op) for n in gf.nodes] == [(n.name, n.op) for n in g.nodes]
    assert gf.node("sm").attrs["softmax"] == "float"
    s_in = _tq(gf, "c1")["scale"]
    v = np.arange(-32768, 32768)
    want = np.clip(np.rint(1.0 / (1.0 + np.exp(-np.float64(f32(s_in)) * v)) / Q15), -32768, 32767)
    np.testing.assert_array_equal(gf.node("s").params["table"], want)
    rep = compare(sim, "tflite", data(4, seed=4))
    by = {r["node"]: r for r in rep["layers"]}
    for name in ("s", "t", "l", "sm"):
        assert by[name]["local"]["elements"] > 0
    # LiteRT's interpolated tables stay within a few Q0.15 steps of the real function
    assert by["s"]["local"]["max_lsb"] <= 8 and by["t"]["local"]["max_lsb"] <= 16
    assert by["l"]["local"]["max_lsb"] <= 1 and by["sm"]["local"]["max_lsb"] <= 16


def _one(op_layer, x_enc, out_enc):
    return {"inputs": [dict(x_enc, name="x", shape=[None, 3, 4])],
            "layers": [dict(op_layer, name="y", output=out_enc)]}


def _enc(dtype="int16", zp=0, scale=2e-4):
    return {"scale": float(f32(scale)), "zero_point": zp, "dtype": dtype}


def test_refusals_and_other_profiles():
    q15 = _enc(scale=Q15)
    with pytest.raises(FixedPointError, match=r"node 'y' \(sigmoid\): int16 tensor 'x' has zero "
                                              r"point 3.*symmetric"):
        lower_from_params(_one({"op": "sigmoid"}, _enc(zp=3), q15), "tflite")
    with pytest.raises(FixedPointError, match=r"node 'y' \(tanh\).*tensor 'y' is int8.*int16 "
                                              r"inputs and outputs only"):
        lower_from_params(_one({"op": "tanh"}, _enc(), _enc("int8", 0, 1 / 128)), "tflite")
    with pytest.raises(FixedPointError, match=r"node 'y' \(softmax\).*CMSIS-NN's s16 softmax"):
        lower_from_params(_one({"op": "softmax"}, _enc(), q15), "cmsis-nn")
    with pytest.raises(FixedPointError, match=r"node 'y' \(hard_swish\).*HARD_SWISH"):
        lower_from_params(_one({"op": "hard_swish"}, _enc(), _enc(scale=1e-3)), "tflite")
    with pytest.raises(FixedPointError, match=r"node 'y' \(tanh\): int16 tanh: input scale "
                                              r".*leave int32"):
        lower_from_params(_one({"op": "tanh"}, _enc(scale=8.0), q15), "tflite")
    # int8 sigmoid keeps the int8 table; onnx keeps its float32 table at 16 bits
    g8 = lower_from_params(_one({"op": "sigmoid"}, _enc("int8", 0, 0.05),
                                _enc("int8", -128, 1 / 256)), "tflite")
    assert g8.node("y").params["table"].size == 256
    go = lower_from_params(_one({"op": "sigmoid"}, _enc(), q15), "onnx")
    t = act16.int16_table("sigmoid", float(f32(2e-4)), 0, Q15, 0)
    assert go.node("y").op == "int_lut" and not np.array_equal(go.node("y").params["table"], t)
    gt = lower_from_params(_one({"op": "sigmoid"}, _enc(), q15), "tflite")
    np.testing.assert_array_equal(gt.node("y").params["table"], t)
