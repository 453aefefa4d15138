"""Make expected.npz: outputs of onnxruntime for the ONNX ops refq's float layers implement
(ConvTranspose, MaxPool with indices, AveragePool, GlobalMaxPool, MatMul, Gemm, Round, Flatten,
Clip with one bound), one single-node model per case, float32, seeded inputs.

Runs in the onnxruntime virtual environment (never imported by refq or its tests):
    python3 -m venv /tmp/ortenv && /tmp/ortenv/bin/pip install -q onnxruntime onnx numpy
    /tmp/ortenv/bin/python tests/data/onnx_ops/make_expected.py
Each case is stored under "<case>/<name>" keys: the inputs in ONNX's layout (NCHW, weights as
ONNX stores them), "<case>/attrs" (the node's attributes as JSON text, a unicode array: no pickle)
and the outputs "<case>/y" (and "<case>/indices").
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

OPSET = 19
rng = np.random.default_rng(20261202)
F = np.float32


def run(op, inputs, attrs, n_out=1, initializers=()):
    """Outputs of a one-node model: `inputs` [(name, array or None)] (None: an empty input name),
    attrs as ONNX attributes."""
    names = [n if a is not None else "" for n, a in inputs]
    node = helper.make_node(op, names, [f"out{i}" for i in range(n_out)], **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape)
                    for n, a in inputs if a is not None]
    outs = [helper.make_tensor_value_info(f"out{i}", TensorProto.INT64 if i else TensorProto.FLOAT,
                                          None) for i in range(n_out)]
    model = helper.make_model(helper.make_graph([node], op, graph_inputs, outs),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: a for n, a in inputs if a is not None})


CASES = {}


def case(name, op, inputs, attrs, n_out=1):
    outs = run(op, inputs, attrs, n_out)
    d = {k: a for k, a in inputs if a is not None}
    d["y"] = outs[0]
    if n_out > 1:
        d["indices"] = outs[1]
    d["attrs"] = np.array(json.dumps(attrs, sort_keys=True))
    CASES[name] = d


def r(*shape):
    return rng.standard_normal(shape).astype(F)


# ConvTranspose: W [C, O/groups, kh, kw]
case("ct_groups_pads", "ConvTranspose", [("x", r(2, 4, 3, 5)), ("w", r(4, 3, 3, 2)), ("b", r(6))],
     {"group": 2, "strides": [2, 3], "dilations": [1, 2], "output_padding": [1, 0],
      "pads": [1, 2, 0, 1]})
case("ct_same_upper", "ConvTranspose", [("x", r(1, 3, 4, 5)), ("w", r(3, 2, 3, 3))],
     {"strides": [2, 2], "auto_pad": "SAME_UPPER"})
case("ct_same_lower", "ConvTranspose", [("x", r(1, 3, 4, 5)), ("w", r(3, 2, 3, 3))],
     {"strides": [2, 2], "auto_pad": "SAME_LOWER"})
case("ct_output_shape", "ConvTranspose", [("x", r(2, 2, 3, 4)), ("w", r(2, 3, 3, 3)),
                                           ("b", r(3))],
     {"strides": [2, 2], "output_shape": [6, 8]})
case("ct_depthwise", "ConvTranspose", [("x", r(2, 3, 4, 4)), ("w", r(3, 1, 2, 3))],
     {"group": 3, "strides": [1, 2], "dilations": [2, 1]})
# MaxPool (with indices) and AveragePool; pads as ONNX orders them [begins..., ends...]
case("mp_ceil_pads", "MaxPool", [("x", r(2, 3, 8, 7))],
     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}, 2)
case("mp_dilations", "MaxPool", [("x", r(2, 2, 7, 9))],
     {"kernel_shape": [2, 3], "dilations": [2, 2], "strides": [1, 2], "pads": [0, 1, 1, 2]}, 2)
case("mp_same_lower", "MaxPool", [("x", r(1, 2, 6, 5))],
     {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}, 2)
case("mp_1d", "MaxPool", [("x", r(2, 3, 10))],
     {"kernel_shape": [3], "strides": [2], "pads": [1, 1], "ceil_mode": 1}, 2)
case("mp_3d", "MaxPool", [("x", r(1, 2, 4, 5, 6))],
     {"kernel_shape": [2, 2, 3], "strides": [2, 1, 2], "pads": [1, 0, 1, 0, 1, 1]}, 2)
case("mp_ties", "MaxPool", [("x", np.round(r(2, 2, 6, 6) * 0.6))],    # values in {-2, ..., 2}
     {"kernel_shape": [3, 3], "strides": [1, 2], "pads": [1, 1, 1, 1], "dilations": [1, 2]}, 2)
case("ap_ceil_include_pad", "AveragePool", [("x", r(2, 3, 8, 7))],
     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1,
      "count_include_pad": 1})
case("ap_ceil_exclude_pad", "AveragePool", [("x", r(2, 3, 8, 7))],
     {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1})
case("ap_ceil_stride3", "AveragePool", [("x", r(1, 2, 7, 7))],
     {"kernel_shape": [2, 2], "strides": [3, 3], "ceil_mode": 1, "count_include_pad": 1})
case("ap_dilations", "AveragePool", [("x", r(1, 2, 7, 8))],
     {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 0, 0, 1],
      "count_include_pad": 1})
case("ap_same_lower", "AveragePool", [("x", r(1, 2, 6, 5))],
     {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"})
case("ap_1d", "AveragePool", [("x", r(2, 3, 9))],
     {"kernel_shape": [4], "strides": [3], "pads": [2, 1], "count_include_pad": 1})
case("ap_3d", "AveragePool", [("x", r(1, 2, 4, 5, 6))],
     {"kernel_shape": [2, 3, 2], "strides": [1, 2, 2], "pads": [0, 1, 1, 1, 0, 1]})
case("global_max", "GlobalMaxPool", [("x", r(2, 3, 4, 5))], {})
# MatMul, Gemm, Round, Flatten, Clip
case("matmul_broadcast", "MatMul", [("a", r(2, 3, 4, 5)), ("c", r(2, 1, 5, 3))], {})
case("gemm_alpha_beta", "Gemm", [("x", r(4, 5)), ("w", r(5, 3)), ("b", r(1, 3))],
     {"alpha": 0.5, "beta": 2.0})
case("gemm_transb", "Gemm", [("x", r(4, 5)), ("w", r(3, 5)), ("b", r(3))],
     {"transB": 1, "alpha": 1.5})
case("round", "Round", [("x", np.array([[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, -3.7]],
                                       F))], {})
case("flatten_axis2", "Flatten", [("x", r(2, 3, 4, 5))], {"axis": 2})
case("flatten_axis_neg1", "Flatten", [("x", r(2, 3, 4, 5))], {"axis": -1})
case("clip_min_only", "Clip", [("x", r(2, 7)), ("lo", np.array(-0.25, F))], {})
case("clip_max_only", "Clip", [("x", r(2, 7)), ("lo", None), ("hi", np.array(0.5, F))], {})

if __name__ == "__main__":
    flat = {f"{c}/{k}": v for c, d in CASES.items() for k, v in d.items()}
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "expected.npz")
    np.savez_compressed(out, **flat)
    print(f"wrote {out}: {len(CASES)} cases, onnxruntime {ort.__version__}, onnx {onnx.__version__}")
