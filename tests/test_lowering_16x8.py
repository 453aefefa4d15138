"""refq.fixedpoint.lower_16x8: a W8A16 simulation lowered under the TFLite profiles takes TFLite's
16x8 kernels (int_conv2d_16x8, int_dense_16x8, the int16 add's shift 15), exactly as the TFLite
importer builds them; one convolution against a Python-integer transcription of TFLite's 16x8
reference arithmetic; cmsis-nn's refusal; the integer-faithful comparison; refusals by name."""
import json
from importlib import resources

import numpy as np
import pytest

import refq
from refq.cli import main
from refq.errors import FixedPointError
from refq.fixedpoint.compare import compare, format_compare
from refq.fixedpoint.lowering import lower, lower_from_params
from refq.fixedpoint.run import faithful_graph, run_int
from refq.graph import Graph, Node, TensorSpec
from refq.importers.tflite_int16 import replace_16x8
from refq.quant.config import parse_config
from refq.quant.quantsim import QuantSim

f32 = np.float32
TFLITE = ("tflite", "tflite-single")


def sym_config():
    """AIMET's per-channel config with symmetric activations (TFLite's int16 rule: zero point 0)."""
    p = resources.files("refq.quant").joinpath("configs", "default_per_channel.json")
    d = json.loads(p.read_text(encoding="utf-8"))
    d["defaults"]["ops"]["is_symmetric"] = "True"
    return d


def conv(name, x, y, shape, rng, **attrs):
    return Node(name, "conv2d", [x], [y], dict({"groups": 1}, **attrs),
                {"weight": rng.normal(0, 0.4, shape).astype(f32),
                 "bias": rng.normal(0, 0.2, shape[0]).astype(f32)})


def net():
    """conv 3x3 same -> depthwise (multiplier 2) -> conv 1x1 -> add (with the first conv) ->
    global average pool -> dense."""
    r = np.random.default_rng(0)
    nodes = [conv("c1", "x", "c1", (4, 3, 3, 3), r, padding="same"),
             conv("dw", "c1", "dw", (8, 3, 3, 1), r, groups=4, padding="same", strides=[2, 2]),
             conv("c2", "dw", "c2", (4, 1, 1, 8), r),
             Node("pool", "max_pool2d", ["c1"], ["pool"], {"pool_size": [2, 2],
                                                          "strides": [2, 2]}),
             Node("add", "add", ["c2", "pool"], ["add"]),
             Node("gap", "global_avg_pool2d", ["add"], ["gap"]),
             Node("fc", "dense", ["gap"], ["logits"], {},
                  {"weight": r.normal(0, 0.5, (5, 4)).astype(f32),
                   "bias": r.normal(0, 0.1, 5).astype(f32)})]
    return Graph([TensorSpec("x", (None, 8, 8, 3))], ["logits"], nodes, name="w8a16")


def data(n=8, seed=3):
    return np.random.default_rng(seed).normal(0, 1, (n, 8, 8, 3)).astype(f32)


@pytest.fixture(scope="module")
def sim():
    return QuantSim(net(), parse_config(sym_config(), source="<sym>"), act_bw=16) \
        .compute_encodings(data())


@pytest.mark.parametrize("profile", TFLITE)
def test_w8a16_lowers_to_the_16x8_kernels(sim, profile):
    g = lower(sim, profile)
    ops = {n.name: n for n in g.nodes}
    for name in ("c1", "dw", "c2"):
        n = ops[name]
        assert n.op == "int_conv2d_16x8" and n.attrs.get("requant", "multiplier16") == \
            "multiplier16"
        assert n.params["bias"].dtype == np.int64 and n.params["weight"].dtype == np.int8
        assert g.meta["integer"]["requantizations"][name] == 2
    assert ops["dw"].attrs["groups"] == 4
    assert ops["fc"].op == "int_dense_16x8" and ops["fc"].attrs["requant"] == "float_half_away"
    assert ops["add"].op == "int_add" and ops["add"].attrs["left_shift"] == 15
    assert ops["gap"].op == "int_mean"
    assert all(t["dtype"] == "int16" and t["zero_point"] == 0
               for t in g.meta["integer"]["tensors"].values())
    y, stats = run_int(g, {"x": data(4, seed=9)})
    assert np.all(np.isfinite(y["logits"])) and stats["c1"]["accumulator_bits"] == 64
    # the same lowering, other int16 profiles: TOSA and ONNX keep their own forms
    assert lower(sim, "tosa").node("c1").op == "int_conv2d_tosa16"


def _importer_path(sim, g):
    """The graph the TFLite importer builds from the parameters of the lowered graph g:
    lower_from_params under 'tflite' (no biases) + replace_16x8 with the int64 biases and the
    float32 scales (its layer records)."""
    tens = g.meta["integer"]["tensors"]
    imap = g.meta["integer"]["float_tensors"]
    w_scale = {q.node: np.atleast_1d(np.asarray(sim.encodings[name].scale, dtype=f32))
               for name, q in sim.quantizers.items() if q.param == "weight"}

    def enc(t):
        e = tens[imap.get(t, t)]
        return {"scale": e["scale"], "zero_point": e["zero_point"], "dtype": e["dtype"]}

    layers, records = [], {}
    for n in sim.graph.nodes:
        L = {"name": n.outputs[0], "op": n.op, "inputs": list(n.inputs), "output": enc(
            n.outputs[0])}
        if n.op == "conv2d":
            L.update({k: n.attrs[k] for k in ("groups", "padding", "strides") if k in n.attrs})
        if n.op == "global_avg_pool2d":
            L["keepdims"] = False
        if n.op == "max_pool2d":
            L.update(pool_size=n.attrs["pool_size"], strides=n.attrs["strides"])
        if n.op in ("conv2d", "dense"):
            lowered = g.node(n.name)
            L.update(weight=lowered.params["weight"], weight_scale=w_scale[n.name].tolist())
            records[n.outputs[0]] = {
                "opcode": n.op, "index": 0, "bias": lowered.params["bias"],
                "weight_scale": w_scale[n.name],
                "scales": [enc(n.inputs[0])["scale"], enc(n.outputs[0])["scale"]]}
        layers.append(L)
    spec = {"name": "imported", "inputs": [dict(enc("x"), name="x", shape=[None, 8, 8, 3])],
            "layers": layers, "outputs": ["logits"]}
    return replace_16x8(lower_from_params(spec, "tflite"), records, "<test>")


def test_equals_the_tflite_importer_path(sim):
    g = lower(sim, "tflite")
    gi = _importer_path(sim, g)
    for name, out in (("c1", "c1"), ("dw", "dw"), ("c2", "c2"), ("fc", "logits")):
        a, b = g.node(name), gi.node(out)
        assert a.op == b.op and a.attrs == b.attrs
        assert sorted(a.params) == sorted(b.params)
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
    x = data(8, seed=11)
    y, _ = run_int(g, {"x": x}, codes=False)
    yi, _ = run_int(gi, {"x": x})
    np.testing.assert_array_equal(y["logits"], yi["logits"])


def _quantize_multiplier(real: float):
    """TFLite QuantizeMultiplier in Python: (Q31 multiplier, signed shift)."""
    if real == 0.0:
        return 0, 0
    mant, e = np.frexp(real)
    q = int(abs(mant) * (1 << 31) + 0.5)      # round half away (mant > 0)
    if q == 1 << 31:
        q, e = q // 2, e + 1
    if e < -31:
        return 0, 0
    return q, int(e)


def test_one_conv_against_a_python_integer_transcription():
    """TFLite's 16x8 reference conv (`ConvPerChannel` with int16 input, int64 bias): acc = Σ w·x
    over the in-bounds taps + bias (Python int), r = (m + 2^15) >> 16, y = (acc·r +
    2^(14 − shift)) >> (15 − shift), clamped to int16. Tolerance 0."""
    r = np.random.default_rng(5)
    g0 = Graph([TensorSpec("x", (None, 5, 5, 2))], ["y"],
               [conv("c", "x", "y", (3, 3, 3, 2), r, padding="same", strides=[2, 2])], name="one")
    x = r.normal(0, 1, (2, 5, 5, 2)).astype(f32)
    s = QuantSim(g0, parse_config(sym_config(), source="<sym>"), act_bw=16).compute_encodings(x)
    g = lower(s, "tflite")
    trace, _ = run_int(g, {"x": x}, trace=True)
    n = g.node("c")
    xq, yq = trace["x:q"].astype(np.int64), trace["y:q"]
    tens = g.meta["integer"]["tensors"]
    s_in, s_out = tens["x:q"]["scale"], tens["y:q"]["scale"]
    s_w = np.atleast_1d(np.asarray(next(s.encodings[k].scale for k, q in s.quantizers.items()
                                        if q.param == "weight"), dtype=f32))
    w, b = n.params["weight"].astype(np.int64), n.params["bias"]
    # the bias: round_half_even(b / (s_in·s_w)) from the float bias, in Python
    fb = g0.node("c").params["bias"]
    for o in range(3):
        assert int(b[o]) == round(float(fb[o]) / (float(f32(s_in)) * float(s_w[o])))
    pad_top = max((3 - 1) * 2 + 3 - 5, 0) // 2   # TFLite SAME: out 3, total 2 -> top/left 1
    for nb in range(2):
        for i in range(3):
            for j in range(3):
                for o in range(3):
                    acc = int(b[o])
                    for u in range(3):
                        for v in range(3):
                            yy, xx = i * 2 - pad_top + u, j * 2 - pad_top + v
                            if 0 <= yy < 5 and 0 <= xx < 5:
                                for c in range(2):
                                    acc += int(w[o, u, v, c]) * int(xq[nb, yy, xx, c])
                    real = float(np.float64(f32(s_in)) * np.float64(s_w[o]) /
                                 np.float64(f32(s_out)))
                    m, shift = _quantize_multiplier(real)
                    red = (m + (1 << 15)) >> 16 if m < 0x7FFF0000 else 0x7FFF
                    y = (acc * red + (1 << (14 - shift))) >> (15 - shift)
                    y = max(-32768, min(32767, y))
                    assert int(yq[nb, i, j, o]) == y, (nb, i, j, o)


def test_cmsis_nn_refuses_int16_contractions(sim):
    with pytest.raises(FixedPointError, match=r"node 'c1' \(conv2d\).*CMSIS-NN's s16 conv2d "
                                              r"kernels.*one multiplier per tensor"):
        lower(sim, "cmsis-nn")


@pytest.mark.parametrize("profile", TFLITE)
def test_compare_against_the_faithful_simulation(sim, profile):
    gf = faithful_graph(sim, like=profile)
    assert gf.node("c1").op == "int_conv2d_16x8" and gf.node("c1").attrs["requant"] == \
        "float_rne"
    assert gf.node("fc").attrs["requant"] == "float_rne"
    rep = compare(sim, profile, data(8, seed=4))
    by = {r["node"]: r for r in rep["layers"]}
    assert by["c1"]["op"] == "int_conv2d_16x8" and by["fc"]["op"] == "int_dense_16x8"
    assert rep["summary"]["local_within_bound"], format_compare(rep)
    assert "int_conv2d_16x8" in format_compare(rep, all_layers=True)


def test_faithful_16x8_node_is_the_exact_requantization(sim):
    """int_conv2d_16x8 with requant float_rne = rint(float64(acc)·M), checked on the faithful
    graph's own trace against float64 arithmetic on the int64 accumulator."""
    from refq.fixedpoint.kernels.conv16x8 import conv_accumulator
    gf = faithful_graph(sim, like="tflite")
    trace, _ = run_int(gf, {"x": data(4, seed=6)}, trace=True)
    n = gf.node("dw")
    acc = conv_accumulator(trace[n.inputs[0]], n.params, n.attrs)
    want = np.clip(np.rint(acc.astype(np.float64) * n.params["real_multiplier"]), -32768, 32767)
    np.testing.assert_array_equal(trace["dw"], want.astype(np.int64))


def _one(op_layer, x_enc, out_enc, shape=(4, 4, 2)):
    return {"inputs": [dict(x_enc, name="x", shape=[None, *shape])],
            "layers": [dict(op_layer, name="y", output=out_enc)]}


def _enc(dtype="int16", zp=0, scale=2e-4):
    return {"scale": float(f32(scale)), "zero_point": zp, "dtype": dtype}


def test_refused_by_name_under_tflite():
    w = np.ones((3, 3, 3, 2), np.int8)
    conv_l = {"op": "conv2d", "weight": w, "weight_scale": 0.01}
    with pytest.raises(FixedPointError, match=r"node 'y' \(conv2d\).*tensor 'y' is int8.*int16 "
                                              r"inputs and outputs only"):
        lower_from_params(_one(conv_l, _enc(), _enc("int8", 0, 0.05)), "tflite")
    with pytest.raises(FixedPointError, match=r"int16 tensor 'x' has zero point 5.*symmetric"):
        lower_from_params(_one(conv_l, _enc(zp=5), _enc(scale=1e-3)), "tflite")
    with pytest.raises(FixedPointError, match=r"node 'y' \(hard_swish\).*no int16 HARD_SWISH"):
        lower_from_params(_one({"op": "hard_swish"}, _enc(), _enc(scale=1e-3)), "tflite-single")
    with pytest.raises(FixedPointError, match=r"node 'y' \(softmax\).*CMSIS-NN's s16 softmax"):
        lower_from_params(_one({"op": "softmax"}, _enc(), _enc(scale=1 / 32768)), "cmsis-nn")
    with pytest.raises(FixedPointError, match=r"node 'y' \(sigmoid\).*CMSIS-NN's s16 sigmoid"):
        lower_from_params(_one({"op": "sigmoid"}, _enc(), _enc(scale=1 / 32768)), "cmsis-nn")
    with pytest.raises(FixedPointError, match=r"conv_transpose2d.*TRANSPOSE_CONV"):
        lower_from_params(_one(dict(conv_l, op="conv_transpose2d"), _enc(), _enc(scale=1e-3)),
                          "tflite")
    dense_l = {"op": "dense", "weight": np.ones((3, 32), np.int8), "weight_scale": 0.01}
    with pytest.raises(FixedPointError, match=r"per-tensor weights.*--per-channel"):
        lower_from_params(_one(dense_l, _enc(), _enc(scale=1e-3), shape=(32,)), "tflite")
    # the same layers keep their forms elsewhere
    assert lower_from_params(_one(conv_l, _enc(zp=5), _enc(scale=1e-3)), "onnx") \
        .node("y").op == "int_conv2d"


def test_int64_bias_of_a_16x8_layer():
    """A 16x8 layer takes an int64 bias beyond int32 (|b| ≤ 2^47 − 1); an int8 layer does not."""
    w = np.ones((2, 1, 1, 2), np.int8)
    big = np.array([3 << 33, -(1 << 40)], np.int64)
    L = {"op": "conv2d", "weight": w, "weight_scale": 0.01, "bias": big}
    g = lower_from_params(_one(L, _enc(), _enc(scale=1.0)), "tflite")
    assert g.node("y").op == "int_conv2d_16x8"
    np.testing.assert_array_equal(g.node("y").params["bias"], big)
    with pytest.raises(FixedPointError, match=r"bias channel 0 .* does not fit int48"):
        lower_from_params(_one(dict(L, bias=np.array([1 << 47, 0], np.int64)), _enc(),
                               _enc(scale=1.0)), "tflite")
    with pytest.raises(FixedPointError, match=r"does not fit int32"):
        lower_from_params(_one(L, _enc("int8", 0, 0.02), _enc("int8", 0, 1.0)), "tflite")


def test_refq_compare_command_on_a_w8a16_model(tmp_path, capsys):
    f = tmp_path / "f.refq.h5"
    refq.save(net(), str(f))
    np.save(tmp_path / "x.npy", data(8))
    (tmp_path / "sym.json").write_text(json.dumps(sym_config()), encoding="utf-8")
    q = tmp_path / "q.refq.h5"
    assert main(["quantize", str(f), "--calib", str(tmp_path / "x.npy"), "--config",
                 str(tmp_path / "sym.json"), "--act-bw", "16", "-o", str(q)]) == 0
    capsys.readouterr()
    assert main(["compare", str(q), "--profile", "tflite", "--data",
                 str(tmp_path / "x.npy")]) == 0
    out = capsys.readouterr().out
    assert "profile tflite vs the integer-faithful simulation" in out


def test_cmsis_nn_s64_requantization_equals_tflite_16x8_in_range():
    """The part of the cmsis-nn decision that holds: `arm_nn_requantize_s64` (int32 of
    (v·r) >> (14 − shift), then (t + 1) >> 1) equals TFLite's int64 MultiplyByQuantizedMultiplier
    wherever the result fits int32 with room for the final +1 (Python integers, tolerance 0);
    the refusal rests on the s16 fully connected and depthwise kernels instead."""
    from refq.fixedpoint.requantize16 import multiply_by_quantized_multiplier_64
    r = np.random.default_rng(8)
    for shift in (-31, -20, -9, -1, 0, 3, 7):
        m = int(r.integers(1 << 30, (1 << 31) - 1))
        red = (m + (1 << 15)) >> 16 if m < 0x7FFF0000 else 0x7FFF
        hi = min((1 << 47) - 1, ((1 << 29) << (15 - shift)) // red)
        xs = [int(v) for v in r.integers(-hi, hi, 300)] + [0, 1, -1, hi, -hi]
        got = multiply_by_quantized_multiplier_64(np.array(xs, np.int64), m, shift)
        for x, g in zip(xs, got.tolist()):
            t = (x * red) >> (14 - shift)
            assert -(1 << 31) <= t < (1 << 31) - 1
            assert (t + 1) >> 1 == g, (x, m, shift)


def test_asymmetric_int16_activations_are_refused_under_tflite():
    s = QuantSim(net(), None, act_bw=16).compute_encodings(data())
    zp = s.encodings[next(k for k, q in s.quantizers.items() if q.tensors == ["x"])].zero_point
    if int(np.asarray(zp).ravel()[0]) == 0:
        pytest.skip("the calibration happened to give zero point 0")
    with pytest.raises(FixedPointError, match=r"node 'c1' \(conv2d\): int16 tensor 'x' has zero "
                                              r"point .*symmetric"):
        lower(s, "tflite")
    assert lower(s, "onnx").node("c1").op == "int_conv2d"
