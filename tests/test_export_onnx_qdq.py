"""refq.exporters.onnx_qdq and the QDQ side of refq.importers.onnx: a QuantSim written as a QDQ
ONNX model and read back gives the same encodings (exactly) and outputs; the committed exports
match onnxruntime's outputs (made once by tests/data/onnx/make_qdq.py in an onnxruntime
environment); bad requests fail with one line."""
import importlib.util
import os

import numpy as np
import pytest

from refq.algorithms.bn_fold import fold_batch_norms
from refq.errors import OutputError, QuantError, UnsupportedLayerError
from refq.quant.quantsim import QuantSim

onnx = pytest.importorskip("onnx")
from refq.exporters.onnx_qdq import export_qdq  # noqa: E402
from refq.importers.onnx import import_onnx  # noqa: E402
from refq.importers.onnx_fold import dequantize_linear  # noqa: E402
from refq.importers.onnx_qdq import ONNX_QDQ_NUMERICS  # noqa: E402

from cli_helpers import cli  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")


def _make_qdq():
    spec = importlib.util.spec_from_file_location("make_qdq", os.path.join(DATA, "make_qdq.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_sim(config="per_channel", act_bw=8):
    folded, _ = fold_batch_norms(_make_qdq().small_graph())
    if config == "input_quantized_add":      # input quantizers on the residual add too
        from refq.quant.config import load_config
        config = load_config("per_channel").to_json()
        config.setdefault("op_type", {})["Add"] = {"is_input_quantized": "True"}
    sim = QuantSim(folded, config, act_bw=act_bw)
    return sim.compute_encodings([np.random.default_rng(8).standard_normal((32, 8, 8, 3))])


def encodings_by_place(sim):
    """{("tensor", t) | ("input", node, i) | ("param", node, p): Encoding} of enabled quantizers."""
    out = {}
    for q in sim.quantizers.values():
        if not sim.enabled[q.name] or q.name not in sim.encodings:
            continue
        enc = sim.encodings[q.name]
        if q.kind == "activation":
            out.update({("tensor", t): enc for t in q.tensors})
        elif q.kind == "input":
            out[("input", q.node, q.input_index)] = enc
        else:
            out[("param", q.node, q.param)] = enc
    return out


def with_bias_on_grid(sim, exported):
    """sim's graph with every bias replaced by the value the QDQ file stores: int32 codes of
    scale fl(s_x·s_w) dequantized, (q − 0)·scale in float32 (what ORT and the import read)."""
    init = {t.name: onnx.numpy_helper.to_array(t) for t in exported.graph.initializer}
    out = QuantSim.from_json(sim.graph, sim.to_json())
    for node in out.graph.nodes:
        if f"{node.name}/bias/quantized" in init:
            node.params["bias"] = dequantize_linear(init[f"{node.name}/bias/quantized"],
                                                    init[f"{node.name}/bias/scale"], None, 0)
    return out


@pytest.mark.parametrize("config,act_bw", [("per_channel", 8), ("per_tensor", 8),
                                           ("per_channel", 16), ("input_quantized_add", 8)])
def test_round_trip_gives_the_same_simulation(tmp_path, config, act_bw):
    """Export, import: every quantizer's encoding equal (scale, zero point, grid, axis), and
    the outputs equal bit for bit to the simulation with its biases on their int32 grid."""
    sim = small_sim(config, act_bw)
    path = tmp_path / "small.onnx"
    report = export_qdq(sim, path)
    assert report["opset"] == (17 if act_bw == 8 else 21) and report["quantize_linear"] > 0
    back = import_onnx(path, numerics=sim.numerics)
    assert isinstance(back, QuantSim)
    want, got = encodings_by_place(sim), encodings_by_place(back)
    assert set(got) == set(want)
    assert (config != "input_quantized_add") or ("input", "res", 1) in got
    for place, enc in want.items():
        assert got[place] == enc, place          # scale, zero point, grid, axis: exactly
    x = np.random.default_rng(3).standard_normal((6, 8, 8, 3)).astype(np.float32)
    ref = with_bias_on_grid(sim, onnx.load(str(path))).run({"x": x})["y"]
    assert np.array_equal(back.run({"x": x})["y"], ref)
    assert np.abs(sim.run({"x": x})["y"] - ref).max() < 0.02    # only the biases moved


def test_bias_codes_and_weight_codes_follow_the_encodings(tmp_path):
    sim = small_sim()
    export_qdq(sim, tmp_path / "m.onnx")
    init = {t.name: onnx.numpy_helper.to_array(t)
            for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    conv = sim.graph.node("pw")         # reads the zero padding of quantized tensor a2
    s_x = sim.encodings[sim.tensor_quantizers()["a2"]].scale
    w_enc = sim.encodings["pw.weight"]
    scale = init["pw/bias/scale"]
    assert scale.dtype == np.float32 and np.array_equal(scale, np.float32(s_x) * w_enc.scale)
    codes = init["pw/bias/quantized"]
    assert codes.dtype == np.int32
    for c in range(codes.size):     # Python floats: round half to even of b / (s_x s_w)
        assert codes[c] == round(float(conv.params["bias"][c]) / float(scale[c]))
    q = init["pw/weight/quantized"]
    assert q.dtype == np.int8 and q.shape == (8, 8, 2, 2)    # OIHW
    w_sim = sim.sim_params()["pw"]["weight"].transpose(0, 3, 1, 2)
    assert np.array_equal(q.astype(np.float32) * w_enc.scale[:, None, None, None], w_sim)


def step_of(sim, t):
    """The scale of the encoding tensor t lies on (through unquantized grid-preserving ops)."""
    tq, producers = sim.tensor_quantizers(), sim.graph.producers()
    while t not in tq:
        t = producers[t].inputs[0]
    return float(sim.encodings[tq[t]].scale)


def test_committed_exports_match_onnxruntime():
    """The committed QDQ files (refq's exports of the small graph and of the PP-OCR classifier,
    each with its logits and its softmax as outputs) imported as simulations, against
    onnxruntime (qdq_expected.npz):
    - with graph optimisations off (Q, DQ and float operators one by one) the simulation agrees
      to within one step of each output's encoding (measured: equal, but for one flip of one
      step in the PP-OCR logits, where float32 sums in another order cross a rounding edge);
    - with onnxruntime's default optimisations (its integer QDQ kernels, the Softmax fused into
      QLinearSoftmax) the simulation lowered for the `ort` profile gives the logits and the
      probabilities bit for bit (a float32 softmax instead differs on 3 of 20 small and 16 of 32
      PP-OCR probabilities, by up to one step: QLinearSoftmax multiplies by floor(1/s_out) = 254
      for s_out = 1/255)."""
    from refq.fixedpoint.lowering import lower
    from refq.fixedpoint.run import run_int
    from refq.ppocr_data import load_test_set

    with np.load(os.path.join(DATA, "qdq_expected.npz"), allow_pickle=False) as z:
        exp = dict(z)
    for case, name, x in (("small", "small_qdq.onnx", exp["small/x"].transpose(0, 2, 3, 1)),
                          ("ppocr", "ppocr_cls_qdq.onnx", load_test_set()[0][:16])):
        sim = import_onnx(os.path.join(DATA, name))
        assert sim.numerics == ONNX_QDQ_NUMERICS
        logits, probs = sim.graph.outputs
        steps = [step_of(sim, t) for t in (logits, probs)]
        y = sim.run({"x": x})
        for t, key, step in ((logits, "logits", steps[0]), (probs, "y", steps[1])):
            assert np.abs(y[t] - exp[f"{case}/{key}_noopt"]).max() <= step * 1.001, (case, key)
        g = lower(sim, "ort")
        assert [n.attrs["softmax"] for n in g.nodes if n.op == "int_softmax"] == ["ort"], case
        y, _ = run_int(g, {"x": x})
        assert np.array_equal(y[logits], exp[f"{case}/logits_opt"]), case
        assert np.array_equal(y[probs], exp[f"{case}/y_opt"]), case


def test_refusals(tmp_path):
    g = _make_qdq().small_graph()
    unfolded = QuantSim(g, "per_channel", ).compute_encodings(
        [np.random.default_rng(8).standard_normal((4, 8, 8, 3))])
    with pytest.raises(QuantError, match="fold batch norms"):
        export_qdq(unfolded, tmp_path / "bn.onnx")
    assert not (tmp_path / "bn.onnx").exists()
    sim = small_sim()
    sim.graph.node("pw").params["bias"] = sim.graph.node("pw").params["bias"] * 1e12
    with pytest.raises(QuantError, match=r"node 'pw': bias\[0\].*int32"):
        export_qdq(sim, tmp_path / "big.onnx")
    with pytest.raises(OutputError):
        export_qdq(small_sim(), tmp_path)         # a directory
    folded, _ = fold_batch_norms(g)
    with pytest.raises(QuantError, match="calibrate"):
        export_qdq(QuantSim(folded, "per_channel"), tmp_path / "raw.onnx")


def test_qdq_import_refuses_mismatched_pairs(tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("QuantizeLinear", ["x", "s1", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s2", "z"], ["y"], name="dq")]
    inits = [numpy_helper.from_array(np.float32(v), k) for k, v in (("s1", 0.1), ("s2", 0.2))]
    inits.append(numpy_helper.from_array(np.uint8(0), "z"))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "m.onnx"))
    with pytest.raises(UnsupportedLayerError, match="'dq'.*differ"):
        import_onnx(tmp_path / "m.onnx")


def test_cli_export_onnx_qdq(tmp_path, capsys):
    sim = small_sim()
    sim.save(tmp_path / "q.refq.h5")
    code, out, err = cli(capsys, "export", tmp_path / "q.refq.h5", "--format", "onnx-qdq",
                         "-o", tmp_path / "model.onnx")
    assert code == 0, err
    assert "QDQ ONNX" in out
    got, want = encodings_by_place(import_onnx(tmp_path / "model.onnx")), encodings_by_place(sim)
    assert set(got) == set(want) and all(got[k] == v for k, v in want.items())
    code, _, err = cli(capsys, "export", tmp_path / "q.refq.h5", "--format", "onnx-qdq",
                       "-o", tmp_path)
    assert code == 1 and err.startswith("refq: error: ") and len(err.splitlines()) == 1


def test_qdq_import_of_a_hand_built_model_against_numpy(tmp_path):
    """A QDQ model not made by refq: the input quantized, a conv with per-channel int8 weights and
    an int32 bias, its output quantized for one reader (Relu) and read raw by another (Add).
    The simulation places an activation quantizer on x, an input quantizer on the Relu and a
    per-channel weight quantizer, and computes what a NumPy transcription of the ONNX
    definitions computes (QuantizeLinear: saturate(rint(x / s) + zp); DequantizeLinear:
    (q − zp)·s; float32)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(5)
    w_q = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    w_s = rng.uniform(0.002, 0.01, 4).astype(np.float32)
    b_q = rng.integers(-500, 500, 4).astype(np.int32)
    x_s, x_z, c_s, c_z = np.float32(0.03), np.uint8(120), np.float32(0.05), np.uint8(90)
    inits = {"xs": x_s, "xz": x_z, "w": w_q, "ws": w_s, "wz": np.zeros(4, np.int8),
             "b": b_q, "bs": (x_s * w_s).astype(np.float32), "bz": np.zeros(4, np.int32),
             "cs": c_s, "cz": c_z}
    N = helper.make_node
    nodes = [N("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             N("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             N("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             N("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
             N("Conv", ["xd", "wd", "bd"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             N("QuantizeLinear", ["c", "cs", "cz"], ["cq"]),
             N("DequantizeLinear", ["cq", "cs", "cz"], ["cd"]),
             N("Relu", ["cd"], ["r"], name="relu"),
             N("Add", ["c", "r"], ["y"], name="add")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["N", 3, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 5, 5])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "hand.onnx"))
    sim = import_onnx(tmp_path / "hand.onnx")
    kinds = {q.name: (q.kind, q.axis) for q in sim.quantizers.values()}
    assert kinds == {"x": ("activation", None), "relu:input0": ("input", None),
                     "conv.weight": ("param", 0)}
    assert sim.encodings["x"].zero_point == 120 and sim.encodings["x"].qmax == 255
    assert not sim.encodings["x"].symmetric and sim.encodings["conv.weight"].symmetric

    def qdq(v, s, z, lo, hi):
        return ((np.clip(np.rint(v / s) + z, lo, hi) - z) * s).astype(np.float32)

    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    xd = qdq(x, x_s, np.float32(x_z), 0, 255)
    wd = w_q.astype(np.float32) * w_s[:, None, None, None]
    xp = np.pad(xd, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.float64)
    c = np.zeros((2, 4, 5, 5))
    for i in range(5):
        for j in range(5):
            c[:, :, i, j] = np.einsum("nchw,ochw->no", xp[:, :, i:i + 3, j:j + 3], wd)
    c = (c + (b_q * (x_s * w_s).astype(np.float32))[None, :, None, None]).astype(np.float32)
    want = c + np.maximum(qdq(c, c_s, np.float32(c_z), 0, 255), 0)
    got = sim.run({"x": x.transpose(0, 2, 3, 1)})["y"].transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype,zero_point", [(np.uint8, 0), (np.uint8, 173), (np.int8, 0),
                                              (np.int8, -37), (np.uint16, 40000),
                                              (np.int16, 0)])
def test_encodings_of_every_grid_are_exact(tmp_path, dtype, zero_point):
    """Q -> DQ of each ONNX integer type: the refq encoding holds the file's scale and zero point
    exactly, on the type's grid, and the simulation computes the ONNX definition on values at
    and between the steps (ties half to even) and beyond both ends of the grid."""
    from onnx import TensorProto, helper, numpy_helper
    info = np.iinfo(dtype)
    scale = np.float32(0.0371)
    x = ((np.arange(info.min - 3, info.max + 4, max(1, (info.max - info.min) // 300))
          - zero_point) * 0.5).astype(np.float32)
    x = np.concatenate([x * scale, [3.4e38, -3.4e38]]).astype(np.float32)[None, :]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y0"]),
             helper.make_node("Relu", ["y0"], ["y"])]
    opset = 21 if np.dtype(dtype).itemsize == 2 else 13
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, x.shape[1]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                         [1, x.shape[1]])],
                          [numpy_helper.from_array(scale, "s"),
                           numpy_helper.from_array(np.asarray(zero_point, dtype), "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8 if opset == 13 else 10
    onnx.save(m, str(tmp_path / "q.onnx"))
    sim = import_onnx(tmp_path / "q.onnx")
    enc = sim.encodings["x"]
    assert (enc.bitwidth, enc.qmin, enc.qmax) == (8 * np.dtype(dtype).itemsize, info.min,
                                                  info.max)
    assert enc.scale == scale and enc.scale.dtype == np.float32 and enc.zero_point == zero_point
    assert enc.symmetric == (info.min < 0 and zero_point == 0)
    with np.errstate(over="ignore", invalid="ignore"):   # ONNX: x / s in float32, x's type
        v = x / scale
        q = np.clip(np.rint(v).astype(np.float64) + zero_point, info.min, info.max)
        assert np.mean(np.abs(v - np.trunc(v)) == 0.5) > 0.3   # many exact ties
    want = np.maximum(((q - zero_point).astype(np.float32) * scale), 0)
    with np.errstate(over="ignore"):
        assert np.array_equal(sim.run({"x": x})["y"], want)
