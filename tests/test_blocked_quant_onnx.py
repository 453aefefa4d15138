"""Blocked weights in QDQ ONNX: `export_qdq` writes them as DequantizeLinear with block_size
(opset 21), `import_onnx` reads them back to the same encodings exactly; the committed exports
(tests/data/onnx/blocked, made by make_blocked.py there) run in onnxruntime as refq simulates
them; hand-built Conv, ConvTranspose, Gemm and MatMul models map ONNX's layout to refq's; what
refq cannot hold is refused with one line."""
import importlib.util
import json
import os

import numpy as np
import pytest

from refq.errors import UnsupportedLayerError
from refq.quant.encoding import Encoding

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from refq.exporters.onnx_qdq import export_qdq  # noqa: E402
from refq.importers.onnx import import_onnx  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx", "blocked")
F32 = np.float32


def _make():
    spec = importlib.util.spec_from_file_location("make_blocked",
                                                  os.path.join(DATA, "make_blocked.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE = _make()


def params(sim):
    return {q.name: sim.encodings[q.name] for q in sim.quantizers.values() if q.kind == "param"}


@pytest.mark.parametrize("case", sorted(MAKE.CASES))
def test_export_import_round_trip_is_exact(tmp_path, case):
    sim = MAKE.sim_of(case)
    report = export_qdq(sim, tmp_path / "m.onnx")
    assert report["opset"] == 21
    model = onnx.load(str(tmp_path / "m.onnx"))
    dq = {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    attrs = {a.name: helper.get_attribute_value(a) for a in dq["conv/weight/quantized"].attribute}
    assert attrs == {"axis": 1, "block_size": 4}
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert init["conv/weight/scale"].shape == (6, 3, 3, 3)        # OIHW with 3 blocks of I
    assert init["fc/weight/scale"].shape == (5, 2)
    assert init["conv/bias"].dtype == F32                          # biases stay float
    back = import_onnx(tmp_path / "m.onnx", numerics=sim.numerics)
    assert params(back) == params(sim)
    for q in back.quantizers.values():
        if q.kind == "param":
            assert q.block_size == 4 and back.encodings[q.name].block_size == 4
        else:
            assert back.encodings[q.name] == sim.encodings[q.name]
    x = np.random.default_rng(1).standard_normal((3, 6, 6, 10)).astype(F32)
    assert np.array_equal(back.run({"x": x})["y"], sim.run({"x": x})["y"])
    committed = import_onnx(os.path.join(DATA, f"blocked_{case}.onnx"))
    assert params(committed) == params(sim)


def test_committed_exports_match_onnxruntime():
    """onnxruntime 1.32 (graph optimisations off and on) against refq: the committed file
    imported (ONNX's numerics) and the simulation it was exported from (AIMET's). Measured:
    equal, every case; asserted to within one step of the output quantizer."""
    with np.load(os.path.join(DATA, "blocked_expected.npz"), allow_pickle=False) as z:
        exp = dict(z)
    x = exp["x"].transpose(0, 2, 3, 1)
    for case in MAKE.CASES:
        sim = MAKE.sim_of(case)
        imported = import_onnx(os.path.join(DATA, f"blocked_{case}.onnx"))
        step = float(sim.encodings["y"].scale)
        for s in (imported, sim):
            y = s.run({"x": x})["y"]
            for tag in ("noopt", "opt"):
                assert np.abs(y - exp[f"{case}/{tag}"]).max() <= step * 1.001, (case, tag)


def test_onnxruntime_runs_blocked_weights_of_every_type():
    """ort_support.json: onnxruntime loaded and ran a blocked DequantizeLinear weight of every
    integer type before Conv, Gemm and MatMul, to within float32 rounding."""
    with open(os.path.join(DATA, "ort_support.json")) as f:
        support = json.load(f)
    cases = {k: v for k, v in support.items() if "/" in k}
    assert len(cases) == 18
    for key, result in cases.items():
        assert result.startswith("ok, max relative error"), (key, result)
        assert float(result.rsplit(" ", 1)[1]) < 1e-6, key


# ----------------------------------------------------------------------------- hand-built models

def model_with_blocked_weight(tmp_path, op, q, scale, axis, block, x_shape, y_shape,
                              zero_point=None, attrs=None, before=(), extra=()):
    """x -> [before] -> op(., DQ(q)) -> y, the DQ blocked (int8 codes), opset 21; `extra`:
    initializers of the `before` nodes."""
    inits = [numpy_helper.from_array(q.astype(np.int8), "q"),
             numpy_helper.from_array(scale.astype(F32), "s")] + list(extra)
    dq_in = ["q", "s"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point.astype(np.int8), "z"))
        dq_in.append("z")
    nodes = list(before) + [
        helper.make_node("DequantizeLinear", dq_in, ["w"], axis=axis, block_size=block),
        helper.make_node(op, [before[-1].output[0] if before else "x", "w"], ["y"],
                         **(attrs or {}))]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    path = tmp_path / f"{op}.onnx"
    onnx.save(model, str(path))
    return path


def onnx_dq(q, scale, zp, axis, block):
    idx = np.arange(q.shape[axis]) // block
    s = np.take(scale.astype(F32), idx, axis=axis)
    z = 0 if zp is None else np.take(zp.astype(np.int64), idx, axis=axis)
    return (q.astype(np.int64) - z).astype(F32) * s


@pytest.mark.parametrize("op,shape,axis,attrs,to_refq", [
    ("MatMul", (10, 3), 0, {}, lambda w: w.T),                         # B [K, N]
    ("Gemm", (10, 3), 0, {}, lambda w: w.T),                           # transB = 0
    ("Gemm", (3, 10), 1, {"transB": 1}, lambda w: w),                  # transB = 1
])
def test_import_of_dense_layouts(tmp_path, op, shape, axis, attrs, to_refq):
    rng = np.random.default_rng(3)
    q = rng.integers(-128, 128, shape)
    s_shape = list(shape)
    s_shape[axis] = 3                                                  # 10 = 4 + 4 + 2
    scale = rng.uniform(0.01, 0.1, s_shape)
    zp = rng.integers(-20, 20, s_shape)
    path = model_with_blocked_weight(tmp_path, op, q, scale, axis, 4, [2, 10], [2, 3], zp,
                                     attrs)
    sim = import_onnx(path)
    (name, enc), = params(sim).items()
    s_refq = scale.T if axis == 0 else scale
    z_refq = zp.T if axis == 0 else zp
    assert enc == Encoding(s_refq.astype(F32), z_refq, 8, -128, 127, False, 0, 1, 4)
    w = to_refq(onnx_dq(q, scale, zp, axis, 4))
    node = sim.graph.node(sim.quantizers[name].node)
    assert np.array_equal(node.params["weight"], w)
    assert np.array_equal(sim.sim_params()[node.name]["weight"], w)    # on its own grid
    x = rng.standard_normal((2, 10)).astype(F32)
    assert np.allclose(sim.run({"x": x})["y"], x.astype(np.float64) @ w.T.astype(np.float64),
                       rtol=1e-5, atol=1e-5)


def test_import_of_conv_and_conv_transpose(tmp_path):
    rng = np.random.default_rng(4)
    # Conv W [O=4, I=6, 2, 2], blocks of 4 along I (4 + 2), scales repeated over kh, kw
    q = rng.integers(-128, 128, (4, 6, 2, 2))
    blocks = rng.uniform(0.01, 0.1, (4, 2))
    scale = np.broadcast_to(blocks[:, :, None, None], (4, 2, 2, 2))
    path = model_with_blocked_weight(tmp_path, "Conv", q, scale, 1, 4, [1, 6, 5, 5],
                                     [1, 4, 4, 4])
    sim = import_onnx(path)
    enc, = params(sim).values()
    assert enc == Encoding(blocks.astype(F32), np.zeros((4, 2)), 8, -128, 127, True, 0, 3, 4)
    node = next(n for n in sim.graph.nodes if n.op == "conv2d")
    assert np.array_equal(node.params["weight"],
                          onnx_dq(q, scale, None, 1, 4).transpose(0, 2, 3, 1))
    # ConvTranspose W [C=6, O=3, 2, 2], blocks of 4 along C (ONNX axis 0): refq [O, kh, kw, C]
    q = rng.integers(-128, 128, (6, 3, 2, 2))
    blocks = rng.uniform(0.01, 0.1, (2, 3))
    scale = np.broadcast_to(blocks[:, :, None, None], (2, 3, 2, 2))
    path = model_with_blocked_weight(tmp_path, "ConvTranspose", q, scale, 0, 4, [1, 6, 3, 3],
                                     [1, 3, 4, 4])
    sim = import_onnx(path)
    enc, = params(sim).values()
    assert enc == Encoding(blocks.T.astype(F32), np.zeros((3, 2)), 8, -128, 127, True, 0, 3, 4)
    node = next(n for n in sim.graph.nodes if n.op == "conv_transpose2d")
    assert np.array_equal(node.params["weight"],
                          onnx_dq(q, scale, None, 0, 4).transpose(1, 2, 3, 0))


def test_import_refusals(tmp_path):
    rng = np.random.default_rng(5)
    q = rng.integers(-128, 128, (4, 6, 2, 2))

    def refused(path, *needles):
        with pytest.raises(UnsupportedLayerError) as e:
            import_onnx(path)
        msg = str(e.value)
        assert "\n" not in msg and str(path) in msg, msg
        for n in needles:
            assert n in msg, (n, msg)

    # scales that vary along the kernel window
    scale = rng.uniform(0.01, 0.1, (4, 2, 2, 2))
    refused(model_with_blocked_weight(tmp_path, "Conv", q, scale, 1, 4, [1, 6, 5, 5],
                                      [1, 4, 4, 4]), "vary along the kernel window")
    # blocks along the output channels
    scale = np.broadcast_to(rng.uniform(0.01, 0.1, (2, 6, 1, 1)), (2, 6, 2, 2))
    refused(model_with_blocked_weight(tmp_path, "Conv", q, scale, 0, 2, [1, 6, 5, 5],
                                      [1, 4, 4, 4]), "ONNX axis 0", "input channels (axis 1)")
    # a scale of the wrong shape
    refused(model_with_blocked_weight(tmp_path, "Conv", q, np.ones((4, 3, 2, 2)), 1, 4,
                                      [1, 6, 5, 5], [1, 4, 4, 4]), "needs scale and zero point "
            "of shape [4, 2, 2, 2]")
    # a dense layer reading a flattened NCHW tensor: refq permutes the weight's input columns
    w8 = rng.integers(-128, 128, (8, 3))
    conv = helper.make_node("Conv", ["x", "cw"], ["c"])
    flat = helper.make_node("Flatten", ["c"], ["f"], axis=1)
    cw = numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(F32), "cw")
    refused(model_with_blocked_weight(tmp_path, "MatMul", w8, rng.uniform(0.01, 0.1, (2, 3)), 0,
                                      4, [1, 2, 2, 2], [1, 3], before=[conv, flat], extra=[cw]),
            "reorders the input channels")
    # blocked quantization of an activation
    inits = [numpy_helper.from_array(np.full((1, 2, 2, 2), 0.1, F32), "s"),
             numpy_helper.from_array(np.zeros((1, 2, 2, 2), np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], axis=1, block_size=2),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], axis=1,
                              block_size=2),
             helper.make_node("Relu", ["xd"], ["y"])]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [1, 4, 2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, str(tmp_path / "act.onnx"))
    refused(tmp_path / "act.onnx", "block_size=2", "not a constant integer weight",
            "activations per tensor")
