"""Make the integer (QOperator) ONNX model of tests/test_import_onnx.py and its expected outputs.

Run once in the onnxruntime virtual environment (python3 -m venv /tmp/ortenv &&
/tmp/ortenv/bin/pip install onnxruntime onnx numpy):

    /tmp/ortenv/bin/python tests/data/onnx/make_integer.py

Writes qlinear.onnx: QuantizeLinear (uint8) -> QLinearConv (int8 weights per output channel,
int32 bias, pads 1, stride 2) -> MaxPool 2x2 -> QLinearConv depthwise -> Flatten ->
QLinearMatMul (per-column weight scale) -> DequantizeLinear, seeded; and qlinear_expected.npz with
x (NCHW float32 input), y_reference (onnx.reference.ReferenceEvaluator, the ONNX definitions)
and y_ort (onnxruntime CPU, default graph optimisations); and qlinear_ms.onnx (`build_ms`, with
onnxruntime's com.microsoft QLinearAdd, QLinearMul, QLinearConcat, QLinearGlobalAveragePool,
which onnx.reference does not define) with qlinear_ms_expected.npz: x and y_ort.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def build():
    rng = np.random.default_rng(11)
    f32 = np.float32
    inits = {
        "xs": f32(0.02), "xz": np.uint8(128),
        "w1": rng.integers(-127, 128, (6, 3, 3, 3)).astype(np.int8),
        "w1s": (rng.uniform(0.5, 2.0, 6) * 0.004).astype(f32), "w1z": np.zeros(6, np.int8),
        "b1": rng.integers(-3000, 3000, 6).astype(np.int32),
        "y1s": f32(0.05), "y1z": np.uint8(100),
        "w2": rng.integers(-127, 128, (6, 1, 3, 3)).astype(np.int8),
        "w2s": (rng.uniform(0.5, 2.0, 6) * 0.01).astype(f32), "w2z": np.zeros(6, np.int8),
        "y2s": f32(0.08), "y2z": np.uint8(120),
        "m": rng.integers(-127, 128, (24, 5)).astype(np.int8),
        "ms": (rng.uniform(0.5, 2.0, 5) * 0.01).astype(f32), "mz": np.zeros(5, np.int8),
        "ys": f32(0.1), "yz": np.uint8(128),
    }
    N = helper.make_node
    nodes = [
        N("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="quant"),
        N("QLinearConv", ["xq", "xs", "xz", "w1", "w1s", "w1z", "y1s", "y1z", "b1"], ["c1"],
          name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        N("MaxPool", ["c1"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        N("QLinearConv", ["p", "y1s", "y1z", "w2", "w2s", "w2z", "y2s", "y2z"], ["c2"],
          name="dw", group=6, pads=[1, 1, 1, 1]),
        N("Flatten", ["c2"], ["f"], name="flat"),
        N("QLinearMatMul", ["f", "y2s", "y2z", "m", "ms", "mz", "ys", "yz"], ["yq"], name="fc"),
        N("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dequant"),
    ]
    g = helper.make_graph(nodes, "qlinear",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m


def build_ms():
    """QuantizeLinear -> two QLinearConv -> com.microsoft QLinearAdd, QLinearMul, QLinearConcat
    (channels), QLinearGlobalAveragePool -> Flatten -> QLinearMatMul -> DequantizeLinear."""
    rng = np.random.default_rng(13)
    f32 = np.float32
    inits = {
        "xs": f32(0.03), "xz": np.uint8(110),
        "wa": rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8),
        "was": f32(0.004), "waz": np.int8(0), "as": f32(0.06), "az": np.uint8(128),
        "wb": rng.integers(-127, 128, (4, 3, 1, 1)).astype(np.int8),
        "wbs": f32(0.01), "wbz": np.int8(0), "bs": f32(0.04), "bz": np.uint8(120),
        "ss": f32(0.07), "sz": np.uint8(125), "ms": f32(0.05), "mz": np.uint8(60),
        "cs": f32(0.08), "cz": np.uint8(100), "gs": f32(0.03), "gz": np.uint8(90),
        "m": rng.integers(-127, 128, (8, 3)).astype(np.int8), "mws": f32(0.02),
        "mwz": np.int8(0), "ys": f32(0.05), "yz": np.uint8(128),
    }
    N = helper.make_node
    ms = "com.microsoft"
    nodes = [
        N("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="quant"),
        N("QLinearConv", ["xq", "xs", "xz", "wa", "was", "waz", "as", "az"], ["a"], name="ca",
          pads=[1, 1, 1, 1]),
        N("QLinearConv", ["xq", "xs", "xz", "wb", "wbs", "wbz", "bs", "bz"], ["b"], name="cb"),
        N("QLinearAdd", ["a", "as", "az", "b", "bs", "bz", "ss", "sz"], ["s"], name="sum",
          domain=ms),
        N("QLinearMul", ["a", "as", "az", "b", "bs", "bz", "ms", "mz"], ["p"], name="prod",
          domain=ms),
        N("QLinearConcat", ["cs", "cz", "s", "ss", "sz", "p", "ms", "mz"], ["c"], name="cat",
          axis=1, domain=ms),
        N("QLinearGlobalAveragePool", ["c", "cs", "cz", "gs", "gz"], ["g"], name="gap",
          domain=ms),
        N("Flatten", ["g"], ["f"], name="flat"),
        N("QLinearMatMul", ["f", "gs", "gz", "m", "mws", "mwz", "ys", "yz"], ["yq"], name="fc"),
        N("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dequant"),
    ]
    g = helper.make_graph(nodes, "qlinear_ms",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21),
                                            helper.make_opsetid(ms, 1)])
    m.ir_version = 10
    return m


def main():
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    path = os.path.join(HERE, "qlinear.onnx")
    m = build()
    onnx.save(m, path)
    x = (np.random.default_rng(12).standard_normal((64, 3, 8, 8)) * 1.2).astype(np.float32)
    ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
    y_ort = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.savez_compressed(os.path.join(HERE, "qlinear_expected.npz"), x=x, y_reference=ref,
                        y_ort=y_ort)
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}: reference vs ort "
          f"{np.abs(ref - y_ort).max()}")
    path = os.path.join(HERE, "qlinear_ms.onnx")
    onnx.save(build_ms(), path)
    x = (np.random.default_rng(14).standard_normal((64, 3, 6, 6)) * 1.2).astype(np.float32)
    y_ort = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.savez_compressed(os.path.join(HERE, "qlinear_ms_expected.npz"), x=x, y_ort=y_ort)


if __name__ == "__main__":
    main()
