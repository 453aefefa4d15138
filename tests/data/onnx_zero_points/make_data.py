"""Make the expected data of tests/test_int_zero_points.py: ONNX models whose weight zero points
differ per output channel, with w − zero point beyond int8, and their outputs.

Runs in the onnxruntime virtual environment, never in refq's:
    python3 -m venv /tmp/ortenv && /tmp/ortenv/bin/pip install -q onnxruntime onnx numpy
    /tmp/ortenv/bin/python tests/data/onnx_zero_points/make_data.py

Every case is one node built with onnx.helper (NCHW): QLinearConv (uint8 and int8 weights, groups,
depthwise with multiplier 2), ConvInteger, MatMulInteger and QLinearMatMul, with a weight zero
point per output channel (w_zero_point [M], b_zero_point [N]) holding the ends of its type, weight
codes at the ends of their type, and input zero points at the ends of theirs. Written per case:
<case>.onnx and <case>.npz holding
    x       the input codes in ONNX's layout (NCHW for the convolutions)
    y_ref   the output of onnx.reference.ReferenceEvaluator (the ONNX definition)
    y_ort   onnxruntime's output (CPU, one thread, ORT_ENABLE_ALL); absent when onnxruntime
            refuses the model (its message in ort_error): ConvInteger with a per-channel
            w_zero_point ("Non per-tensor quantization is not supported now", conv_integer.cc)
    versions   JSON text: onnxruntime, onnx and numpy versions
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

HERE = os.path.dirname(os.path.abspath(__file__))
TP = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}


def ends(rng, dtype, shape):
    """Random codes of `dtype` with the type's two ends planted in every output channel."""
    info = np.iinfo(dtype)
    a = rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)
    flat = a.reshape(shape[0], -1)
    flat[:, 0], flat[:, -1] = info.min, info.max
    return a


def model(op, inputs, x, inits, out_type, **attrs):
    node = helper.make_node(op, inputs, ["y"], name=op.lower(), **attrs)
    g = helper.make_graph(
        [node], op.lower(), [helper.make_tensor_value_info("x", TP[x.dtype], list(x.shape))],
        [helper.make_tensor_value_info("y", out_type, [None] * x.ndim)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def qlinear_conv(rng, x, w, zx, zw, groups, **attrs):
    """QLinearConv (output of x's type) with per-channel scales around 0.005 and an output scale
    that maps the largest accumulator (ConvInteger of the same operands) onto about 160 LSB, so
    the outputs spread over the grid with a little saturation."""
    o = w.shape[0]
    s_x, s_w = np.float32(0.02), rng.uniform(0.004, 0.006, o).astype(np.float32)
    acc = ReferenceEvaluator(model("ConvInteger", ["x", "w", "zx", "zw"], x,
                                   {"w": w, "zx": zx, "zw": zw}, TensorProto.INT32,
                                   group=groups, **attrs)).run(None, {"x": x})[0]
    s_y = np.float32(float(s_x) * 0.005 * float(np.abs(acc).max()) / 160.0)
    bias = rng.integers(-3000, 3000, o).astype(np.int32)
    zy = x.dtype.type(120 if x.dtype == np.uint8 else -8)
    inits = {"sx": np.float32(s_x), "zx": zx, "w": w, "sw": s_w, "zw": zw,
             "sy": s_y, "zy": zy, "b": bias}
    return model("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"], x, inits,
                 TP[x.dtype], group=groups, **attrs)


def cases(rng):
    u8, i8 = np.uint8, np.int8
    x = rng.integers(0, 256, (2, 3, 7, 6)).astype(u8)
    x[0, 0, 0, :2] = (0, 255)
    yield "qlinearconv_u8", x, qlinear_conv(
        rng, x, ends(rng, u8, (5, 3, 3, 3)), u8(255), np.array([0, 255, 128, 7, 250], u8), 1,
        pads=[1, 0, 1, 2], strides=[2, 1])
    x = rng.integers(-128, 128, (2, 4, 6, 6)).astype(i8)
    yield "qlinearconv_i8_groups", x, qlinear_conv(
        rng, x, ends(rng, i8, (6, 2, 3, 3)), i8(-128),
        np.array([-128, 127, 0, 5, -7, 100], i8), 2, pads=[1, 1, 1, 1], dilations=[1, 2])
    x = rng.integers(0, 256, (2, 3, 6, 5)).astype(u8)
    yield "qlinearconv_depthwise", x, qlinear_conv(
        rng, x, ends(rng, u8, (6, 1, 3, 3)), u8(0), np.array([255, 0, 3, 200, 128, 64], u8),
        3, pads=[1, 1, 1, 1], strides=[1, 2])
    x = rng.integers(0, 256, (2, 3, 6, 6)).astype(u8)
    w = ends(rng, u8, (4, 3, 3, 3))
    yield "convinteger_u8", x, model(
        "ConvInteger", ["x", "w", "zx", "zw"], x,
        {"w": w, "zx": u8(255), "zw": np.array([0, 255, 3, 128], u8)}, TensorProto.INT32,
        pads=[1, 1, 0, 2])
    x = rng.integers(0, 256, (2, 3, 6)).astype(u8)
    yield "matmulinteger_u8", x, model(
        "MatMulInteger", ["x", "b", "za", "zb"], x,
        {"b": ends(rng, u8, (4, 6)).T.copy(), "za": u8(7),
         "zb": np.array([0, 255, 100, 3], u8)}, TensorProto.INT32)
    x = rng.integers(-128, 128, (5, 6)).astype(i8)
    yield "qlinearmatmul_i8", x, model(
        "QLinearMatMul", ["x", "sa", "za", "b", "sb", "zb", "sy", "zy"], x,
        {"sa": np.float32(0.03), "za": i8(127), "b": ends(rng, i8, (4, 6)).T.copy(),
         "sb": np.array([0.01, 0.02, 0.015, 0.005], np.float32),
         "zb": np.array([-128, 127, 0, 60], i8), "sy": np.float32(0.4), "zy": i8(-5)},
        TensorProto.INT8)


def main():
    rng = np.random.default_rng(20261202)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    versions = json.dumps({"onnxruntime": ort.__version__, "onnx": onnx.__version__,
                           "numpy": np.__version__})
    for name, x, m in cases(rng):
        onnx.save(m, os.path.join(HERE, f"{name}.onnx"))
        out = {"x": x, "y_ref": ReferenceEvaluator(m).run(None, {"x": x})[0],
               "versions": np.array(versions)}
        try:
            sess = ort.InferenceSession(m.SerializeToString(), opts,
                                        providers=["CPUExecutionProvider"])
            out["y_ort"] = sess.run(None, {"x": x})[0]
        except Exception as e:   # onnxruntime refuses the model: record its message
            out["ort_error"] = np.array(str(e).splitlines()[0][-300:])
        np.savez_compressed(os.path.join(HERE, f"{name}.npz"), **out)
        same = "y_ort" in out and np.array_equal(out["y_ort"], out["y_ref"])
        print(name, out["y_ref"].dtype, out["y_ref"].shape,
              "ort == reference" if same else
              ("ort refused" if "ort_error" in out else "ort differs from reference"))


if __name__ == "__main__":
    main()
