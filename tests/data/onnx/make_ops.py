"""Make the small ONNX op graphs of tests/test_import_onnx.py and onnxruntime's outputs on them.

Run once in the onnxruntime virtual environment (python3 -m venv /tmp/ortenv &&
/tmp/ortenv/bin/pip install onnxruntime onnx numpy):

    /tmp/ortenv/bin/python tests/data/onnx/make_ops.py

Writes ops/<case>.onnx (one model per case, built with onnx.helper) and ops_expected.npz with
<case>/x (the NCHW float32 input, seeded) and <case>/y (onnxruntime CPU, all graph optimisations
off) for every case.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
RNG = np.random.default_rng(20261202)


def w(*shape, scale=0.5):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def model(nodes, x_shape, y_rank, inits, opset=13, x_name="x"):
    """A checked ModelProto: input x of `x_shape`, output y of rank `y_rank` (4 when None)."""
    y_shape = ["d0", "d1", "d2", "d3"][:y_rank or 4]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    g = helper.make_graph(nodes, "case",
                          [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


N = helper.make_node


def cases():
    c = {}
    c["conv_asym_pads"] = (model(
        [N("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[0, 1, 2, 1], strides=[2, 1],
           dilations=[1, 2])], [2, 3, 9, 8], None, {"w": w(4, 3, 3, 3), "b": w(4)}), [2, 3, 9, 8])
    c["conv_same_upper"] = (model(
        [N("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
        ["N", 3, 7, 8], None, {"w": w(5, 3, 3, 3)}), [2, 3, 7, 8])
    c["conv_same_lower"] = (model(
        [N("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER", strides=[2, 2])],
        [2, 3, 7, 8], None, {"w": w(5, 3, 4, 4)}), [2, 3, 7, 8])
    c["conv_groups"] = (model(
        [N("Conv", ["x", "w", "b"], ["y"], group=2, pads=[1, 1, 1, 1])], [2, 4, 6, 5], None,
        {"w": w(6, 2, 3, 3), "b": w(6)}), [2, 4, 6, 5])
    c["conv_depthwise_multiplier"] = (model(
        [N("Conv", ["x", "w"], ["y"], group=3, auto_pad="VALID", strides=[1, 2])],
        [2, 3, 6, 7], None, {"w": w(6, 1, 3, 3)}), [2, 3, 6, 7])
    c["conv_bn_eps"] = (model(
        [N("Conv", ["x", "w"], ["c"]),
         N("BatchNormalization", ["c", "g", "be", "m", "v"], ["y"], epsilon=1e-3)],
        [2, 3, 5, 5], None, {"w": w(4, 3, 1, 1), "g": w(4), "be": w(4), "m": w(4),
                             "v": np.abs(w(4)) + 0.1}), [2, 3, 5, 5])
    c["activations"] = (model(
        [N("HardSigmoid", ["x"], ["a"], alpha=0.3, beta=0.4), N("HardSwish", ["a"], ["b"]),
         N("Clip", ["b", "lo", "hi"], ["c"]), N("LeakyRelu", ["x"], ["d"], alpha=0.2),
         N("Sigmoid", ["d"], ["e"]), N("Tanh", ["e"], ["f"]), N("Relu", ["x"], ["g"]),
         N("Add", ["c", "f"], ["h"]), N("Add", ["h", "g"], ["y"])],
        [2, 3, 4, 4], None, {"lo": np.float32(-0.1), "hi": np.float32(0.45)}, opset=14),
        [2, 3, 4, 4])
    c["clip_attrs_opset7"] = (model(
        [N("Clip", ["x"], ["a"], min=-0.5, max=1.5), N("Clip", ["x"], ["b"], min=0.0),
         N("Add", ["a", "b"], ["y"])], [2, 3, 4, 4], None, {}, opset=7), [2, 3, 4, 4])
    c["softmax_channels"] = (model(
        [N("Softmax", ["x"], ["y"], axis=1)], [2, 5, 3, 4], None, {}), [2, 5, 3, 4])
    c["broadcast_arith"] = (model(
        [N("GlobalAveragePool", ["x"], ["p"]), N("Mul", ["x", "p"], ["m"]),
         N("Sub", ["m", "x"], ["s"]), N("Mul", ["s", "cm"], ["a"]), N("Add", ["a", "ca"], ["b"]),
         N("Sub", ["cs", "b"], ["d"]), N("Div", ["d", "cd"], ["e"]),
         N("Add", ["e", "p"], ["y"])], [2, 4, 5, 3], None,
        {"cm": w(4, 1, 1), "ca": np.float32(0.25), "cs": w(1, 4, 1, 1), "cd": np.float32(3.0)}),
        [2, 4, 5, 3])
    c["gap_flatten_gemm_softmax"] = (model(
        [N("GlobalAveragePool", ["x"], ["p"]), N("Flatten", ["p"], ["f"]),
         N("Gemm", ["f", "w", "b"], ["g"], transB=1, alpha=0.5, beta=2.0),
         N("Softmax", ["g"], ["y"], axis=1)], [3, 4, 5, 6], 2,
        {"w": w(7, 4), "b": w(7)}, opset=11), [3, 4, 5, 6])
    c["conv_flatten_matmul"] = (model(
        [N("Conv", ["x", "w"], ["c"]), N("Flatten", ["c"], ["f"]),
         N("MatMul", ["f", "m"], ["g"]), N("Add", ["g", "b"], ["y"])], [2, 2, 4, 3], 2,
        {"w": w(3, 2, 2, 2), "m": w(3 * 3 * 2, 5), "b": w(5)}), [2, 2, 4, 3])
    c["pools"] = (model(
        [N("AveragePool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2]),
         N("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 2]),
         N("Add", ["a", "m"], ["s"]),
         N("MaxPool", ["s"], ["y"], kernel_shape=[2, 2], strides=[1, 1], auto_pad="SAME_UPPER")],
        [2, 3, 7, 6], None, {}), [2, 3, 7, 6])
    c["concat_pad_conv"] = (model(
        [N("Conv", ["x", "w1"], ["c1"]), N("Conv", ["x", "w2"], ["c2"], pads=[1, 1, 1, 1]),
         N("Concat", ["c1", "c2"], ["k"], axis=1), N("Pad", ["k", "pads"], ["p"]),
         N("Conv", ["p", "w3"], ["q"], strides=[2, 2]), N("Identity", ["q"], ["i"]),
         N("Dropout", ["i"], ["y"])], [2, 3, 6, 6], None,
        {"w1": w(2, 3, 1, 1), "w2": w(3, 3, 3, 3), "pads": np.array([0, 0, 1, 2, 0, 0, 0, 1]),
         "w3": w(4, 5, 3, 3)}), [2, 3, 6, 6])
    c["shape_subgraph_reshape"] = (model(
        [N("GlobalAveragePool", ["x"], ["p"]), N("Shape", ["p"], ["s"]),
         N("Gather", ["s", "zero"], ["n"], axis=0), N("Unsqueeze", ["n", "ax"], ["nu"]),
         N("Concat", ["nu", "minus1"], ["t"], axis=0), N("Reshape", ["p", "t"], ["r"]),
         N("Relu", ["r"], ["y"])], ["N", 4, 3, 3], 2,
        {"zero": np.array(0, np.int64), "ax": np.array([0], np.int64),
         "minus1": np.array([-1], np.int64)}), [2, 4, 3, 3])
    c["transpose_flatten_matmul"] = (model(
        [N("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), N("Reshape", ["t", "s"], ["r"]),
         N("MatMul", ["r", "m"], ["y"])], [2, 3, 2, 4], 2,
        {"s": np.array([0, -1], np.int64), "m": w(24, 3)}), [2, 3, 2, 4])
    c["hard_swish_pattern_bias_add"] = (model(
        [N("Conv", ["x", "w"], ["c"]), N("Reshape", ["b", "bs"], ["br"]),
         N("Add", ["c", "br"], ["cb"]), N("Add", ["cb", "three"], ["a"]),
         N("Clip", ["a", "zero", "six"], ["k"]), N("Mul", ["cb", "k"], ["m"]),
         N("Div", ["m", "six"], ["y"])], [2, 3, 5, 5], None,
        {"w": w(4, 3, 3, 3, scale=1.5), "b": w(4), "bs": np.array([1, 4, 1, 1], np.int64),
         "three": np.float32(3), "zero": np.float32(0), "six": np.float32(6)}, opset=11),
        [2, 3, 5, 5])
    c["se_block_unsqueeze"] = (model(
        [N("GlobalAveragePool", ["x"], ["p"]), N("Squeeze", ["p", "hw"], ["s"]),
         N("Gemm", ["s", "w1", "b1"], ["e"], transB=1), N("Relu", ["e"], ["r"]),
         N("Gemm", ["r", "w2", "b2"], ["f"], transB=1), N("HardSigmoid", ["f"], ["g"]),
         N("Unsqueeze", ["g", "hw"], ["u"]), N("Mul", ["x", "u"], ["m"]),
         N("Reshape", ["s", "s4"], ["s_4d"]), N("Add", ["m", "s_4d"], ["a"]),
         N("Softmax", ["a"], ["y"], axis=1)], [2, 6, 3, 4], None,
        {"hw": np.array([2, 3], np.int64), "w1": w(3, 6), "b1": w(3), "w2": w(6, 3), "b2": w(6),
         "s4": np.array([0, 6, 1, 1], np.int64)}), [2, 6, 3, 4])
    c["softmax_opset11_spatial_one"] = (model(
        [N("GlobalAveragePool", ["x"], ["p"]), N("Softmax", ["p"], ["y"], axis=1)],
        [2, 5, 3, 3], None, {}, opset=11), [2, 5, 3, 3])
    return c


def main():
    import onnxruntime as ort

    os.makedirs(os.path.join(HERE, "ops"), exist_ok=True)
    out = {}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for name, (m, x_shape) in cases().items():
        path = os.path.join(HERE, "ops", f"{name}.onnx")
        onnx.save(m, path)
        x = RNG.standard_normal(x_shape).astype(np.float32) * 2
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        out[f"{name}/x"] = x
        out[f"{name}/y"] = s.run(None, {"x": x})[0]
    np.savez_compressed(os.path.join(HERE, "ops_expected.npz"), **out)
    print(f"{len(out) // 2} cases, onnxruntime {ort.__version__}")


if __name__ == "__main__":
    main()
