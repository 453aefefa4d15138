"""Makes the mixed float/integer QOperator ONNX model of tests/test_mixed_onnx.py and the outputs
of onnxruntime and onnx.reference for it.

Run once in the onnxruntime virtual environment (never by the tests):
    /tmp/ortenv/bin/python tests/data/onnx/mixed/make_mixed.py
(/tmp/ortenv: onnxruntime 1.32, onnx 1.23.2, numpy 2.4.)

conv_float.onnx: a float model Conv(3->6, 3x3, pads 1) -> Sigmoid -> Conv(6->6, 3x3, pads 1,
stride 2) -> Tanh -> Flatten -> MatMul(96->5) -> Softmax (weights uniform, seed 0), quantized by
`onnxruntime.quantization.quantize_static(quant_format=QuantFormat.QOperator, activation uint8,
weight int8 per channel, op_types_to_quantize=["Conv", "MatMul"])` on 16 normal images (seed 1)
into mixed.onnx: QuantizeLinear -> QLinearConv -> DequantizeLinear -> Sigmoid -> QuantizeLinear
-> QLinearConv -> DequantizeLinear -> Tanh -> Flatten -> QuantizeLinear -> QLinearMatMul ->
DequantizeLinear -> Softmax (the float segments are the operators the quantizer was not asked to
quantize).
mixed_expected.npz: x (8 normal images, seed 2, NCHW float32); for onnxruntime (CPU) with its
default graph optimisations only the output, `ort_default_y`; with graph optimisations disabled every
node output, `ort_<tensor>` (as graph outputs); for onnx.reference.ReferenceEvaluator every node
output, `ref_<tensor>`.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def float_model():
    rng = np.random.default_rng(0)
    f32 = np.float32
    inits = {"w1": rng.uniform(-0.4, 0.4, (6, 3, 3, 3)).astype(f32),
             "b1": rng.uniform(-0.1, 0.1, 6).astype(f32),
             "w2": rng.uniform(-0.3, 0.3, (6, 6, 3, 3)).astype(f32),
             "b2": rng.uniform(-0.1, 0.1, 6).astype(f32),
             "m": rng.uniform(-0.3, 0.3, (96, 5)).astype(f32)}
    N = helper.make_node
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             N("Sigmoid", ["c1"], ["s"], name="sig"),
             N("Conv", ["s", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1],
               strides=[2, 2]),
             N("Tanh", ["c2"], ["t"], name="tanh"),
             N("Flatten", ["t"], ["f"], name="flat"),
             N("MatMul", ["f", "m"], ["mm"], name="fc"),
             N("Softmax", ["mm"], ["y"], name="softmax", axis=-1)]
    g = helper.make_graph(
        nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m


def main():
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Images(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.it = iter([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
                            for _ in range(16)])

        def get_next(self):
            return next(self.it, None)

    src, path = os.path.join(HERE, "conv_float.onnx"), os.path.join(HERE, "mixed.onnx")
    onnx.save(float_model(), src)
    quantize_static(src, path, Images(), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, op_types_to_quantize=["Conv", "MatMul"])
    m = onnx.load(path)
    print([n.op_type for n in m.graph.node])
    x = np.random.default_rng(2).standard_normal((8, 3, 8, 8)).astype(np.float32)
    out = {"x": x}
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out["ort_default_y"] = sess.run(None, {"x": x})[0]
    every = onnx.load(path)
    names = [o for n in every.graph.node for o in n.output]
    every.graph.ClearField("output")
    every.graph.output.extend([helper.make_empty_tensor_value_info(t) for t in names])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(every.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    for t, v in zip(names, sess.run(None, {"x": x})):
        out[f"ort_{t}"] = v
    ref = ReferenceEvaluator(m)
    for t, v in zip(names, ReferenceEvaluator(every).run(None, {"x": x})):
        out[f"ref_{t}"] = v
    assert np.array_equal(ref.run(None, {"x": x})[0], out["ref_y"])
    np.savez_compressed(os.path.join(HERE, "mixed_expected.npz"), **out)
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}:",
          {k: v.dtype.name for k, v in out.items()})
    print("ort default vs disabled", np.abs(out["ort_default_y"] - out["ort_y"]).max())


if __name__ == "__main__":
    main()
