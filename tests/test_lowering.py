"""refq.fixedpoint.lowering: QuantSim -> integer graph, and explicit integer parameters -> integer
graph. Small hand-built graphs cover every lowering rule; the real PP-OCR model is in
test_int_run.py."""
import copy
import dataclasses
import json
from importlib import resources

import numpy as np
import pytest

import refq
from refq.errors import FixedPointError
from refq.fixedpoint import PROFILES, get_profile
from refq.fixedpoint.compare import compare, format_compare
from refq.fixedpoint.kernels.lut import gemmlowp_lut
from refq.fixedpoint.lowering import lower, lower_from_params
from refq.fixedpoint.run import REFERENCE, faithful_graph, run_int
from refq.graph import Graph, Node, TensorSpec
from refq.quant.config import parse_config
from refq.quant.encoding import Encoding
from refq.quant.quantsim import QuantSim

f32 = np.float32
NAMES = tuple(PROFILES)
#: a profile whose requantization is the faithful simulation's float scheme
FLOAT_PROFILE = dataclasses.replace(REFERENCE, name="float-exact",
                                    activation_dtypes=("int8", "int16"))


def cfg(name="per_channel", **changes):
    p = resources.files("refq.quant").joinpath("configs", f"default_{name}.json")
    d = json.loads(p.read_text(encoding="utf-8"))
    for k, v in changes.items():
        if k in ("op_type", "params"):
            d[k].update(v)
        else:
            d[k] = v
    return parse_config(d, source=f"<{name} test>")


def conv(name, x, y, shape, rng, groups=1, bias=True, **attrs):
    p = {"weight": rng.normal(0, 0.4, shape).astype(f32)}
    if bias:
        p["bias"] = rng.normal(0, 0.2, shape[0]).astype(f32)
    return Node(name, "conv2d", [x], [y], dict(attrs, groups=groups), p)


def se_graph(seed=0):
    """pad -> conv -> relu (supergroup) -> depthwise -> relu (shared quantizer) -> SE (gap, conv,
    relu, conv, clip = hard sigmoid, multiply) -> conv -> add -> maxpool -> gap -> dense ->
    softmax: the rules of the brief on one graph."""
    r = np.random.default_rng(seed)
    nodes = [
        Node("pad", "zero_pad2d", ["x"], ["xp"], {"pads": [1, 1, 1, 1]}),
        conv("c1", "xp", "c1", (8, 3, 3, 3), r),
        Node("r1", "relu", ["c1"], ["r1"]),
        conv("dw", "r1", "dw", (8, 3, 3, 1), r, groups=8, padding="same"),
        Node("r2", "relu", ["dw"], ["r2"]),
        Node("gap1", "global_avg_pool2d", ["r2"], ["gap1"], {"keepdims": True}),
        conv("se1", "gap1", "se1", (4, 1, 1, 8), r),
        Node("se1r", "relu", ["se1"], ["se1r"]),
        conv("se2", "se1r", "se2", (8, 1, 1, 4), r),
        Node("gate", "clip", ["se2"], ["gate"], {"min": 0.0, "max": 1.0}),
        Node("mul", "multiply", ["r2", "gate"], ["mul"]),
        conv("c2", "mul", "c2", (8, 1, 1, 8), r),
        Node("add", "add", ["c2", "r2"], ["add"]),
        Node("mp", "max_pool2d", ["add"], ["mp"], {"pool_size": [2, 2], "strides": [2, 2]}),
        Node("gap2", "global_avg_pool2d", ["mp"], ["gap2"]),
        Node("fc", "dense", ["gap2"], ["logits"], {},
             {"weight": r.normal(0, 0.5, (5, 8)).astype(f32),
              "bias": r.normal(0, 0.1, 5).astype(f32)}),
        Node("sm", "softmax", ["logits"], ["probs"]),
    ]
    return Graph([TensorSpec("x", (None, 8, 8, 3))], ["probs"], nodes, name="se")


def misc_graph(seed=1):
    """concat (the graph input keeps its own encoding), relu6 fused, avg_pool2d, every lookup-table op, flatten,
    dense + relu (Gemm-Relu supergroup), reshape, identity."""
    r = np.random.default_rng(seed)
    nodes = [
        conv("a", "x", "a", (4, 3, 3, 3), r, padding="same"),
        Node("a6", "relu6", ["a"], ["a6"]),
        conv("b", "x", "b", (4, 1, 1, 3), r),
        Node("sg", "sigmoid", ["b"], ["sg"]),
        Node("cat", "concat", ["a6", "sg", "x"], ["cat"], {"axis": -1}),
        Node("ap", "avg_pool2d", ["cat"], ["ap"],
             {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"}),
        Node("th", "tanh", ["ap"], ["th"]),
        Node("lr", "leaky_relu", ["th"], ["lr"], {"alpha": 0.2}),
        Node("hs", "hard_swish", ["lr"], ["hs"]),
        Node("hsg", "hard_sigmoid", ["hs"], ["hsg"], {"alpha": 0.2, "beta": 0.5}),
        Node("fl", "flatten", ["hsg"], ["fl"]),
        Node("fc", "dense", ["fl"], ["fc"], {},
             {"weight": r.normal(0, 0.3, (6, 176)).astype(f32),
              "bias": r.normal(0, 0.1, 6).astype(f32)}),
        Node("fr", "relu", ["fc"], ["fr"]),
        Node("rs", "reshape", ["fr"], ["rs"], {"shape": [2, 3]}),
        Node("id", "identity", ["rs"], ["y"]),
    ]
    return Graph([TensorSpec("x", (None, 8, 8, 3))], ["y"], nodes, name="misc")


def data(n=16, seed=3):
    return np.random.default_rng(seed).normal(0, 1, (n, 8, 8, 3)).astype(f32)


@pytest.fixture(scope="module")
def se_sim():
    return QuantSim(se_graph(), cfg("per_channel")).compute_encodings(data())


@pytest.fixture(scope="module")
def misc_sim():
    return QuantSim(misc_graph(), cfg("per_tensor")).compute_encodings(data())


def ops_of(g):
    return {n.name: n.op for n in g.nodes}


# ------------------------------------------------------------------------------ graph construction

def test_se_graph_structure(se_sim):
    g = lower(se_sim, "tflite")
    ops = ops_of(g)
    assert ops["x:quantize"] == "int_quantize" and ops["probs:dequantize"] == "int_dequantize"
    assert ops["pad"] == "int_pad" and ops["c1"] == "int_conv2d" and "r1" not in ops
    assert ops["r2"] == "int_clamp" and ops["gap1"] == "int_mean" and "gate" not in ops
    assert ops["mul"] == "int_multiply" and ops["add"] == "int_add"
    assert ops["mp"] == "int_max_pool2d" and ops["fc"] == "int_dense"
    assert ops["sm"] == "int_softmax"
    meta = g.meta["integer"]
    assert meta["profile"] == "tflite"
    assert meta["fused"] == {"c1": "r1", "se1": "se1r", "se2": "gate"}
    node = {n.name: n for n in g.nodes}
    # conv -> relu pair: one node producing the relu's tensor, act_min = the output zero point
    c1 = node["c1"]
    assert c1.outputs == ["r1"] and c1.inputs == ["xp"]
    t = meta["tensors"]["r1"]
    assert c1.attrs["act_min"] == max(-128, t["zero_point"]) and c1.attrs["act_max"] == 127
    # zero padding pads with the input zero point
    assert node["pad"].attrs["value"] == meta["tensors"]["x:q"]["zero_point"]
    assert meta["tensors"]["xp"] == meta["tensors"]["x:q"]
    # the shared dw/relu quantizer: relu is a clamp on the same grid
    assert meta["tensors"]["dw"] == meta["tensors"]["r2"]
    assert node["r2"].attrs["act_min"] == meta["tensors"]["r2"]["zero_point"]
    # max pool passes its input's encoding through
    assert meta["tensors"]["mp"] == meta["tensors"]["add"]
    # every integer tensor is int8 (AIMET's unsigned grids shifted) for tflite
    assert {t["dtype"] for t in meta["tensors"].values()} == {"int8"}
    # weights int8, bias int32, per-channel multipliers
    assert c1.params["weight"].dtype == np.int8 and c1.params["bias"].dtype == np.int32
    assert c1.params["multiplier"].shape == (8,) and c1.params["shift"].dtype == np.int32
    assert node["fc"].attrs["scheme"] == "float_half_away"  # the TFLite reference FC
    assert node["add"].attrs["add"] == "tflite" and node["add"].params["a_multiplier"].shape == (1,)
    assert meta["requantizations"]["add"] == 3 and meta["requantizations"]["mp"] == 0
    assert node["sm"].attrs["softmax"] == "float" and any("sm" in s for s in meta["notes"])
    json.dumps(g.to_json())


def test_weight_codes_and_bias_are_the_sims(se_sim):
    from refq.quant.encoding import quantize

    g = lower(se_sim, "tflite")
    c1 = g.node("c1")
    src = se_sim.graph.node("c1")
    w_enc = se_sim.encodings["c1.weight"]
    assert np.array_equal(c1.params["weight"], quantize(src.params["weight"], w_enc,
                                                        se_sim.numerics))
    s_in = np.float64(se_sim.encodings["x"].scale)
    want = np.rint(src.params["bias"].astype(np.float64) / (s_in * w_enc.scale.astype(np.float64)))
    assert np.array_equal(c1.params["bias"], want.astype(np.int32))
    # per-channel multipliers from the profile's derivation of s_in·s_w/s_out
    p = get_profile("tflite")
    s_out = g.meta["integer"]["tensors"]["r1"]["scale"]
    m, s = p.derive_multiplier(p.real_multiplier(s_in, w_enc.scale, s_out))
    assert np.array_equal(c1.params["multiplier"], m) and np.array_equal(c1.params["shift"], s)


def test_unsigned_grids_kept_when_the_profile_has_them(se_sim):
    g = lower(se_sim, "onnx")
    t = g.meta["integer"]["tensors"]
    assert t["r1"]["dtype"] == "uint8" and t["r1"]["qmin"] == 0
    g8 = lower(se_sim, "tflite").meta["integer"]["tensors"]
    assert g8["r1"]["zero_point"] == t["r1"]["zero_point"] - 128
    assert g8["r1"]["scale"] == t["r1"]["scale"]


def test_misc_graph_structure(misc_sim):
    g = lower(misc_sim, "tflite")
    ops = ops_of(g)
    meta = g.meta["integer"]
    assert meta["fused"] == {"a": "a6", "fc": "fr"}
    for n in ("sg", "th", "lr", "hs", "hsg"):
        assert ops[n] == "int_lut"
    assert ops["cat"] == "int_concat" and ops["ap"] == "int_avg_pool2d"
    assert ops["fl"] == "flatten" and ops["rs"] == "reshape" and ops["id"] == "identity"
    # concat inputs with another encoding than the output are requantized first
    cat = g.node("cat")
    t = meta["tensors"]
    for x in cat.inputs:
        assert t[x] == t["cat"]
    assert g.node("cat:requant2").op == "int_requantize" and cat.inputs[2] == "cat:requant2"
    lut = g.node("sg")
    assert lut.params["table"].shape == (256,) and lut.attrs["input_qmin"] == -128
    a = g.node("a")
    assert (a.attrs["act_min"], a.attrs["act_max"]) == get_profile("tflite").activation_range(
        "relu6", t["a6"]["scale"], t["a6"]["zero_point"], qmin=-128, qmax=127)


def test_every_profile_lowers_and_runs(se_sim, misc_sim):
    x = data(4, seed=9)
    for sim in (se_sim, misc_sim):
        for name in NAMES:
            g = lower(sim, name)
            y, stats = run_int(g, {"x": x})
            (out,) = y.values()
            assert out.dtype == np.float64 and np.all(np.isfinite(out))
            assert stats and all(s["headroom_bits"] >= 0 for s in stats.values())


@pytest.mark.parametrize("which", ["se", "misc"])
def test_float_scheme_equals_the_faithful_simulation_bit_for_bit(se_sim, misc_sim, which):
    sim = se_sim if which == "se" else misc_sim
    x = data(8, seed=11)
    gf = faithful_graph(sim, like=FLOAT_PROFILE)
    ga = lower(sim, FLOAT_PROFILE)
    ta, _ = run_int(ga, {"x": x}, trace=True)
    tf, _ = run_int(gf, {"x": x}, trace=True)
    assert ta.keys() == tf.keys()
    for k in ta:
        assert np.array_equal(ta[k], tf[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_local_differences_are_within_one_lsb_per_requantization(se_sim, misc_sim, name):
    x = data(8, seed=12)
    for sim in (se_sim, misc_sim):
        rep = compare(sim, name, x)
        s = rep["summary"]
        print(f"{sim.graph.name} {name}: {s['local_differ_elements']} of {s['local_elements']} "
              f"elements differ locally (max {s['local_max_lsb']} LSB)")
        bad = [(r["node"], r["local"]["max_lsb"], r["requantizations"]) for r in rep["layers"]
               if not r["within_bound"] and r["op"] != "int_lut"]
        assert not bad
        json.loads(json.dumps(rep))
        text = format_compare(rep, all_layers=True)
        assert all(r["node"] in text for r in rep["layers"])
        if name == "onnx":
            # ONNX's float32 multiplier and zero point before rounding: rare 1-LSB ties only
            assert s["local_max_lsb"] <= 1


def test_tflite_softmax_and_gemmlowp_logistic_when_the_encodings_are_tflites(misc_sim, se_sim):
    sim = copy.deepcopy(se_sim)
    sim.encodings["probs"] = Encoding(f32(1 / 256), 0, 8, 0, 255, False)
    g = lower(sim, "tflite")
    sm = g.node("sm")
    assert sm.attrs["softmax"] == "tflite" and sm.attrs["output_zp"] == -128
    assert sm.attrs["input_multiplier"] > 0 and sm.attrs["diff_min"] < 0
    assert not any("softmax" in s for s in g.meta["integer"]["notes"])
    rep = compare(sim, "tflite", data(8))
    row = next(r for r in rep["layers"] if r["node"] == "sm")
    assert row["local"]["max_lsb"] <= 1
    # sigmoid with TFLite's fixed output encoding: TFLM's gemmlowp table under cmsis-nn
    r = np.random.default_rng(2)
    g = Graph([TensorSpec("x", (None, 8, 8, 3))], ["sg"],
              [conv("b", "x", "b", (4, 1, 1, 3), r), Node("sg", "sigmoid", ["b"], ["sg"])])
    sim = QuantSim(g, cfg()).compute_encodings(data())
    g2 = lower(sim, "cmsis-nn")
    assert any(s.startswith("sg:") and "lut_float" in s for s in g2.meta["integer"]["notes"])
    sim.encodings["sg"] = Encoding(f32(1 / 256), 0, 8, 0, 255, False)
    g = lower(sim, "cmsis-nn")
    assert not any(s.startswith("sg:") for s in g.meta["integer"]["notes"])
    t = g.meta["integer"]["tensors"]["b"]
    assert np.array_equal(g.node("sg").params["table"],
                          gemmlowp_lut("sigmoid", t["scale"], t["zero_point"], 1 / 256, -128))
    rep = compare(sim, "cmsis-nn", data(8))
    row = next(r for r in rep["layers"] if r["node"] == "sg")
    assert row["local"]["max_lsb"] <= 1


def test_asymmetric_weights():
    c = cfg("per_tensor", params={"weight": {"is_symmetric": "False"}})
    sim = QuantSim(se_graph(), c).compute_encodings(data())
    with pytest.raises(FixedPointError, match=r"node 'c1'.*symmetric.*tflite"):
        lower(sim, "tflite")
    for name in ("tosa", "onnx"):
        g = lower(sim, name)
        assert g.node("c1").attrs["weight_zp"] != 0
        rep = compare(sim, name, data(4))
        assert all(r["within_bound"] for r in rep["layers"] if r["op"] != "int_lut")


def test_input_quantizer_gets_a_requantize():
    c = cfg("per_tensor", op_type={"Add": {"is_input_quantized": "True"}})
    sim = QuantSim(se_graph(), c).compute_encodings(data())
    g = lower(sim, "tflite")
    req = [n for n in g.nodes if n.name.startswith("add:input")]
    assert req and all(n.op == "int_requantize" for n in req)
    y, _ = run_int(g, {"x": data(2)})
    ys = sim.run({"x": data(2)})
    assert np.abs(y["probs"] - ys["probs"]).max() < 0.1


# -------------------------------------------------------------------------------------- errors

def test_batch_norm_left_is_an_error():
    g = Graph([TensorSpec("x", (None, 4, 4, 2))], ["b"], [
        Node("c", "conv2d", ["x"], ["c"], {}, {"weight": np.ones((2, 1, 1, 2), f32)}),
        Node("bn", "batch_norm", ["c"], ["b"], {"epsilon": 1e-3},
             {"gamma": np.ones(2, f32), "beta": np.zeros(2, f32), "mean": np.zeros(2, f32),
              "variance": np.ones(2, f32)})])
    sim = QuantSim(g, cfg()).compute_encodings(data(2)[..., :2][:, :4, :4])
    with pytest.raises(FixedPointError, match=r"node 'bn' \(batch_norm\).*fold"):
        lower(sim, "tflite")


@pytest.mark.parametrize("bad", [0.0, -0.5, np.inf, np.nan])
def test_bad_scales_are_errors(se_sim, bad):
    sim = copy.deepcopy(se_sim)
    enc = copy.copy(sim.encodings["add"])
    object.__setattr__(enc, "scale", np.array(bad, f32))
    sim.encodings["add"] = enc
    with pytest.raises(FixedPointError, match=r"tensor 'add'.*scale must be finite and positive"):
        lower(sim, "tflite")
    sim = copy.deepcopy(se_sim)
    enc = copy.copy(sim.encodings["c2.weight"])
    object.__setattr__(enc, "scale", np.full(8, bad, f32))
    sim.encodings["c2.weight"] = enc
    with pytest.raises(FixedPointError, match=r"node 'c2' \(conv2d\) weight: scale must be"):
        lower(sim, "tflite")


def test_bias_overflow_names_layer_and_channel():
    g = se_graph()
    g.node("c2").params["bias"][5] = 1e7
    sim = QuantSim(g, cfg(), overflow_protection=False).compute_encodings(data())
    with pytest.raises(FixedPointError, match=r"node 'c2' \(conv2d\): bias channel 5 .*int32"):
        lower(sim, "tflite")


def test_accumulator_overflow_wraps_when_asked():
    r = np.random.default_rng(5)
    w = np.abs(r.normal(0, 1, (2, 1, 1, 64))).astype(f32)
    g = Graph([TensorSpec("x", (None, 2, 2, 64))], ["y"],
              [Node("c", "conv2d", ["x"], ["y"], {}, {"weight": w})])
    x = np.abs(r.normal(0, 1, (4, 2, 2, 64))).astype(f32)
    sim = QuantSim(g, cfg("per_tensor")).compute_encodings(x)
    base = get_profile("tflite")
    err = dataclasses.replace(base, name="acc16", acc_bits=16, bias_bits=16)
    with pytest.raises(FixedPointError, match=r"node 'c' \(int_conv2d\)"):
        run_int(lower(sim, err), {"x": x})
    wrap = dataclasses.replace(err, name="acc16w", overflow="wrap")
    _, stats = run_int(lower(sim, wrap), {"x": x})
    assert stats["c"]["overflowed"] and stats["c"]["headroom_bits"] < 0
    _, stats = run_int(lower(sim, base), {"x": x})
    m = stats["c"]["max_abs_acc"]
    assert not stats["c"]["overflowed"] and stats["c"]["headroom_bits"] == 31 - m.bit_length()


def test_unsupported_layers_are_errors(se_sim):
    g = se_graph()
    g.nodes.insert(12, Node("add3", "add", ["c2", "r2", "mul"], ["add3"]))
    g.node("add").inputs = ["add3", "r2"]
    sim = QuantSim(g, cfg()).compute_encodings(data(4))
    with pytest.raises(FixedPointError, match=r"node 'add3' \(add\).*2 inputs"):
        lower(sim, "tflite")
    g = Graph([TensorSpec("x", (None, 8, 8, 3))], ["sm"],
              [conv("c", "x", "c", (4, 1, 1, 3), np.random.default_rng(0)),
               Node("sm", "softmax", ["c"], ["sm"], {"axis": 1})])
    sim = QuantSim(g, cfg()).compute_encodings(data(4))
    with pytest.raises(FixedPointError, match=r"node 'sm' \(softmax\).*last axis"):
        lower(sim, "tflite")
    with pytest.raises(FixedPointError, match="unknown fixed-point profile"):
        lower(se_sim, "tpu")


def test_a_profile_without_the_dtype_is_an_error():
    sim = QuantSim(se_graph(), cfg(), act_bw=16).compute_encodings(data(4))
    no16 = dataclasses.replace(get_profile("tflite"), name="int8-only", activation_dtypes=("int8",))
    with pytest.raises(FixedPointError, match=r"graph input 'x'.*'int8-only' does not support "
                                              r"16-bit"):
        lower(sim, no16)
    g = lower(sim, REFERENCE)
    assert g.meta["integer"]["tensors"]["r1"]["dtype"] == "int16"
    sim = QuantSim(se_graph(), cfg(), param_bw=4).compute_encodings(data(4))
    assert "int4" not in get_profile("onnx").weight_dtypes
    assert lower(sim, "onnx").node("c1").params["weight"].dtype == np.int8  # 4-bit codes, int8


def test_unquantized_tensor_without_a_rule_is_an_error(se_sim):
    sim = copy.deepcopy(se_sim)
    sim.enabled["c2"] = False
    with pytest.raises(FixedPointError, match=r"tensor 'c2' \(node 'c2' \(conv2d\)\) has no "
                                              "encoding"):
        lower(sim, "tflite")
    sim = copy.deepcopy(se_sim)
    del sim.encodings["mul"]
    with pytest.raises(FixedPointError, match=r"quantizer 'mul' has no encoding"):
        lower(sim, "tflite")


# ------------------------------------------------------------------------- persistence, determinism

def test_save_load_round_trip_and_determinism(se_sim, tmp_path):
    g = lower(se_sim, "tosa")
    again = lower(se_sim, "tosa")
    path = tmp_path / "se_int.refq.h5"
    refq.save(g, path)
    h = refq.load(path)
    assert h.to_json() == g.to_json() == again.to_json()
    for a, b, c in zip(g.nodes, h.nodes, again.nodes):
        assert a.params.keys() == b.params.keys() == c.params.keys()
        for k in a.params:
            assert a.params[k].dtype == b.params[k].dtype
            assert np.array_equal(a.params[k], b.params[k]) and np.array_equal(a.params[k],
                                                                               c.params[k])
            if k != "real_multiplier":
                assert a.params[k].dtype.kind in "iu"
    x = data(4)
    (ya, _), (yb, _) = run_int(g, {"x": x}), run_int(h, {"x": x})
    assert np.array_equal(ya["probs"], yb["probs"])
    path2 = tmp_path / "again.refq.h5"
    refq.save(again, path2)
    assert path.read_bytes() == path2.read_bytes()


# ---------------------------------------------------------------------------- lower_from_params

def spec_from_int_graph(g):
    """The lower_from_params spec of a lowered chain (conv/dense/add/pool) from its integer graph."""
    t = g.meta["integer"]["tensors"]
    fused = g.meta["integer"]["fused"]
    back = {v: k for k, v in g.meta["integer"]["float_tensors"].items()}
    nodes = {n.name: n for n in g.nodes}

    def enc(name):
        q = t[name]
        return {k: q[k] for k in ("scale", "zero_point", "dtype", "qmin", "qmax")}

    layers = []
    for n in g.topological_order():
        if n.op in ("int_quantize", "int_dequantize"):
            continue
        out = back.get(n.outputs[0], n.outputs[0])
        L = {"name": out, "inputs": [back.get(x, x) for x in n.inputs], "output": enc(n.outputs[0])}
        a = n.attrs
        if n.op in ("int_conv2d", "int_dense"):
            L.update(op=n.op[4:], weight=n.params["weight"], bias=n.params.get("bias"),
                     weight_scale=None)
            if n.op == "int_conv2d":
                L.update({k: a[k] for k in ("strides", "dilations", "padding", "pads", "groups")})
            if n.name in fused:
                L["activation"] = "relu"
        elif n.op == "int_add":
            L["op"] = "add"
        elif n.op == "int_max_pool2d":
            L.update(op="max_pool2d", pool_size=a["pool_size"], strides=a["strides"])
        elif n.op == "int_mean":
            L.update(op="global_avg_pool2d", keepdims=a["keepdims"])
        elif n.op == "int_pad":
            L.update(op="zero_pad2d", pads=a["pads"])
        layers.append((n.name, L))
    return layers, nodes


def chain_graph(seed=4):
    r = np.random.default_rng(seed)
    nodes = [
        Node("pad", "zero_pad2d", ["x"], ["xp"], {"pads": [1, 1, 1, 1]}),
        conv("c1", "xp", "c1", (6, 3, 3, 3), r, strides=[2, 2]),
        Node("r1", "relu", ["c1"], ["r1"]),
        conv("c2", "r1", "c2", (6, 1, 1, 6), r),
        Node("add", "add", ["c2", "r1"], ["add"]),
        Node("mp", "max_pool2d", ["add"], ["mp"], {"pool_size": [2, 2], "strides": [2, 2]}),
        Node("gap", "global_avg_pool2d", ["mp"], ["gap"]),
        Node("fc", "dense", ["gap"], ["y"], {},
             {"weight": r.normal(0, 0.5, (3, 6)).astype(f32), "bias": np.zeros(3, f32)}),
    ]
    return Graph([TensorSpec("x", (None, 8, 8, 3))], ["y"], nodes, name="chain")


@pytest.mark.parametrize("name", ["tflite", "tosa"])
def test_lower_from_params_rebuilds_the_same_integer_graph(name):
    sim = QuantSim(chain_graph(), cfg("per_channel")).compute_encodings(data())
    g = lower(sim, name)
    layers, _ = spec_from_int_graph(g)
    w_encs = {q.node: sim.encodings[k] for k, q in sim.quantizers.items() if q.kind == "param"}
    spec_layers = []
    for node_name, L in layers:
        if L["op"] in ("conv2d", "dense"):
            L["weight_scale"] = w_encs[node_name].scale.astype(np.float64).tolist()
        if L["op"] == "max_pool2d" or L["op"] == "zero_pad2d":
            del L["output"]  # default: the input's encoding
        spec_layers.append(L)
    x = g.meta["integer"]["tensors"]["x:q"]
    spec = {"name": "chain", "inputs": [{"name": "x", "shape": [None, 8, 8, 3],
                                         "scale": x["scale"], "zero_point": x["zero_point"],
                                         "dtype": x["dtype"]}],
            "layers": spec_layers, "outputs": ["y"]}
    h = lower_from_params(spec, name)
    assert [n.op for n in h.topological_order()] == [n.op for n in g.topological_order()]
    for a, b in zip(g.topological_order(), h.topological_order()):
        assert a.attrs == b.attrs, a.name
        for k in a.params:
            assert np.array_equal(a.params[k], b.params[k]), (a.name, k)
    xs = data(4)
    assert np.array_equal(run_int(g, {"x": xs})[0]["y"], run_int(h, {"x": xs})[0]["y"])


def test_lower_from_params_handwritten_spec_and_errors():
    w = np.array([[[[1, -2]]], [[[3, 4]]]], np.int8)  # [2, 1, 1, 2]
    spec = {"inputs": [{"name": "x", "shape": [None, 2, 2, 2], "scale": 0.5, "zero_point": -1}],
            "layers": [{"name": "c", "op": "conv2d", "weight": w, "weight_scale": [0.25, 0.125],
                        "bias": np.array([4, -8], np.int32), "activation": "relu",
                        "output": {"scale": 0.25, "zero_point": -128}},
                       {"name": "g", "op": "global_avg_pool2d"},
                       {"name": "fc", "op": "dense", "weight": np.array([[2, -1]], np.int8),
                        "weight_scale": 0.5, "output": {"scale": 0.5, "zero_point": 3}}]}
    g = lower_from_params(spec, "tflite")
    x = np.array([[[[1.0, 0.5], [-0.5, 2.0]], [[0.0, 1.0], [1.5, -1.0]]]], f32)
    y, _ = run_int(g, {"x": x})
    # by hand: x codes q = round(x/0.5) - 1; acc = Σ (q+1)·w + bias; y_c = acc·0.5·s_w/0.25
    xq = np.rint(x / 0.5)
    acc = np.einsum("nhwi,oi->nhwo", xq, w[:, 0, 0, :].astype(np.float64)) + [4, -8]
    c = np.maximum(np.rint(acc * 0.5 * np.array([0.25, 0.125]) / 0.25), 0)  # relu on the grid
    gq = np.rint(c.mean(axis=(1, 2)))
    want = np.rint((gq * 0.25) @ np.array([2.0, -1.0]) * 0.5 / 0.5) * 0.5
    assert np.allclose(y["fc"], want.reshape(1, 1))
    bad = copy.deepcopy(spec)
    bad["layers"][0]["bias"] = np.array([4, 2 ** 31], np.int64)
    with pytest.raises(FixedPointError, match=r"layer 0 'c' \(conv2d\): bias channel 1"):
        lower_from_params(bad, "tflite")
    bad = copy.deepcopy(spec)
    bad["layers"][0]["output"]["scale"] = 0.0
    with pytest.raises(FixedPointError, match=r"'c' \(conv2d\) output: scale must be finite"):
        lower_from_params(bad, "tflite")
    bad = copy.deepcopy(spec)
    bad["layers"][0]["weight_zero_point"] = 3
    with pytest.raises(FixedPointError, match="symmetric"):
        lower_from_params(bad, "tflite")
    bad = copy.deepcopy(spec)
    bad["inputs"][0]["dtype"] = "uint8"
    with pytest.raises(FixedPointError, match="does not support uint8"):
        lower_from_params(bad, "tflite")


@pytest.mark.parametrize("op,attrs,named", [
    ("avg_pool2d", {"dilations": [2, 2]}, "dilations"),
    ("avg_pool2d", {"ceil_mode": True}, "ceil_mode"),
    ("avg_pool2d", {"count_include_pad": True, "padding": "same"}, "count_include_pad"),
    ("max_pool2d", {"padding": "same_lower"}, "same_lower"),
    ("max_pool2d", {"dilations": [1, 2]}, "dilations"),
])
def test_pool_attributes_the_kernels_lack_are_refused(op, attrs, named):
    """A pool attribute value the integer kernels do not implement is an error naming the node
    and attribute, never dropped."""
    g = Graph([TensorSpec("x", (None, 8, 8, 3))], ["p"],
              [conv("c", "x", "c", (4, 1, 1, 3), np.random.default_rng(0)),
               Node("p", op, ["c"], ["p"], {"pool_size": [2, 2], "strides": [2, 2], **attrs})])
    sim = QuantSim(g, cfg()).compute_encodings(data(4))
    with pytest.raises(FixedPointError, match=rf"node 'p' \({op}\).*{named}.*no integer lowering"):
        lower(sim, "tflite")


def test_clip_with_one_bound_clamps_at_the_grid_end():
    """clip with a missing bound lowers as clip with that bound at ±1e30 (which saturates to the
    grid's end): the same act_min/act_max (int8 under tflite: 127 or -128) and the same outputs."""
    x = data(4)
    for bounds, wide in (({"min": 0.0, "max": None}, {"min": 0.0, "max": 1e30}),
                         ({"min": None, "max": 1.0}, {"min": -1e30, "max": 1.0})):
        lowered = []
        for attrs in (bounds, wide):
            g = Graph([TensorSpec("x", (None, 8, 8, 3))], ["y"],
                      [conv("c", "x", "c", (4, 1, 1, 3), np.random.default_rng(0)),
                       Node("k", "clip", ["c"], ["y"], attrs)])
            ig = lower(QuantSim(g, cfg("per_tensor")).compute_encodings(data(8)), "tflite")
            node = next(n for n in ig.nodes if n.op == "int_conv2d")
            lowered.append(((node.attrs["act_min"], node.attrs["act_max"]),
                            run_int(ig, {"x": x})[0]["y"]))
        (rng1, y1), (rng2, y2) = lowered
        assert rng1 == rng2 and (127 in rng1 if bounds["max"] is None else -128 in rng1)
        np.testing.assert_array_equal(y1, y2)


# ------------------------------------------- pooling geometry beyond plain 2-D pooling, per profile

def _pool_graph(op, attrs, shape=(None, 8, 8, 3)):
    r = len(shape) - 2
    if r == 2:
        first = conv("c", "x", "c", (4, 1, 1, 3), np.random.default_rng(0))
        c = "c"
    else:   # rank 1 or 3: the pool reads the graph input
        first, c = None, "x"
    nodes = ([first] if first else []) + [Node("p", op, [c], ["p"], attrs)]
    return Graph([TensorSpec("x", shape)], ["p"], nodes)


_POOL_VARIANTS = [  # (op, extra attrs, the attribute named, profiles that lower it)
    ("avg_pool2d", {"dilations": [2, 2]}, "dilations", {"onnx"}),
    ("avg_pool2d", {"ceil_mode": True, "pool_size": [3, 3]}, "ceil_mode", {"onnx", "ort"}),
    ("avg_pool2d", {"count_include_pad": True, "padding": "same", "pool_size": [3, 3]},
     "count_include_pad", {"onnx", "ort"}),
    ("avg_pool2d", {"padding": "same_lower", "pool_size": [3, 3]}, "same_lower",
     {"onnx", "ort", "tosa"}),
    ("max_pool2d", {"dilations": [1, 2]}, "dilations", {"onnx", "ort"}),
    ("max_pool2d", {"padding": "same_lower", "pool_size": [3, 3]}, "same_lower",
     {"onnx", "ort", "tosa"}),
]


@pytest.mark.parametrize("op,attrs,named,ok", _POOL_VARIANTS)
def test_pool_geometry_lowers_where_the_profile_defines_it(op, attrs, named, ok):
    """Each profile lowers the pool geometry its kernels define (Profile.avg_pool_attributes /
    max_pool_attributes) and refuses the rest naming node, attribute and profile; where it
    lowers, the float requantization profile equals the faithful simulation bit for bit and
    the profile stays within 1 LSB per requantization of it."""
    g = _pool_graph(op, {"pool_size": [2, 2], "strides": [2, 2], **attrs})
    sim = QuantSim(g, cfg()).compute_encodings(data(8))
    x = data(4, seed=5)
    for name in NAMES:
        if name not in ok:
            with pytest.raises(FixedPointError, match=rf"node 'p' \({op}\).*{named}.*no integer "
                                                      rf"lowering under profile '{name}'"):
                lower(sim, name)
            continue
        ig = lower(sim, name)
        node = ig.node("p")
        assert node.op == "int_" + op and all(node.attrs[k] == v for k, v in attrs.items())
        rep = compare(sim, name, x)
        assert all(r["within_bound"] for r in rep["layers"]), name
    ta, _ = run_int(lower(sim, FLOAT_PROFILE), {"x": x}, trace=True)
    tf, _ = run_int(faithful_graph(sim, like=FLOAT_PROFILE), {"x": x}, trace=True)
    for k in ta:
        assert np.array_equal(ta[k], tf[k]), k
    ys = sim.run({"x": x})["p"]
    step = float(lower(sim, FLOAT_PROFILE).meta["integer"]["tensors"]["p:q"]["scale"])
    assert np.abs(ys - tf["p"]).max() <= step * (1 if op.startswith("max") else 2)


def test_plain_2d_pools_evaluate_as_before():
    """A 2-D pool without the new attributes takes the int_avg_pool2d evaluation it always had;
    the general evaluation (kernels.pool_nd) gives the same integers on it."""
    from refq.fixedpoint.kernels import INT_REGISTRY
    from refq.fixedpoint.kernels.pool_nd import avg_pool_nd
    op = INT_REGISTRY["int_avg_pool2d"]
    x = np.random.default_rng(3).integers(-128, 128, (2, 7, 6, 3))
    for mode in ("tflite", "tosa", "float", "qdq", "ort"):
        for geo in ({"pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
                    {"pool_size": [2, 3], "strides": [1, 2], "padding": "explicit",
                     "pads": [1, 0, 1, 1]}):
            a = op.normalise_attrs(dict(geo, input_zp=-3, output_zp=2, act_min=-128,
                                        act_max=127, avg=mode), "p")
            params = {"in_scale": np.array([0.03]), "out_scale": np.array([0.021])} \
                if mode in ("qdq", "ort") else {}
            np.testing.assert_array_equal(op.forward([x], params, a),
                                          avg_pool_nd(x, params, a, 2, "p"), err_msg=mode)
