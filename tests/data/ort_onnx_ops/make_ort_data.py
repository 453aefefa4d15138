"""Make the onnxruntime expected data of tests/test_lowering_onnx_ops.py (pooling, matmul).

Runs in the onnxruntime virtual environment, never in refq's:
    python3 -m venv /tmp/ortenv && /tmp/ortenv/bin/pip install -q onnxruntime onnx numpy
    /tmp/ortenv/bin/python tests/data/ort_onnx_ops/make_ort_data.py
(made with onnxruntime 1.32.0, onnx 1.23.2, x86-64).

matmul.npz: QLinearMatMul of two activations (both inputs dynamic, batched 3-D and broadcast
4-D, int8 and uint8, zero points of both operands, ties), the output of onnxruntime; per case
<c>: a_<c>, b_<c> (codes), y_<c> (onnxruntime's codes), and a JSON text `cases` {case: {scales
and zero points of a, b, y, dtype}}.

pools.npz: each case is one com.microsoft.QLinearAveragePool node (onnxruntime's quantized average pool,
channels_last = 0, NCHW as ONNX is) or one ONNX MaxPool on int8 codes, with the pooling
geometry beyond plain 2-D pooling: dilations (MaxPool only: QLinearAveragePool has none),
ceil_mode, count_include_pad, SAME_LOWER, ranks 1 and 3. Run on one thread. Written: pools.npz
holding, per case <c>, x_<c> (input codes, channels last: refq's layout), y_<c> (onnxruntime's
output codes, channels last) and a JSON text `cases` {case: {op, attrs (refq's attribute
names), in_scale, in_zp, out_scale, out_zp}}.
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))

CASES = [  # (name, refq op, spatial, C, refq attrs)
    ("avg1_same_lower_cip", "avg", (9,), 3, {"pool_size": [3], "strides": [2],
                                             "padding": "same_lower", "count_include_pad": True}),
    ("avg1_ceil_cip", "avg", (7,), 2, {"pool_size": [3], "strides": [2], "ceil_mode": True,
                                       "padding": "explicit", "pads": [1, 0],
                                       "count_include_pad": True}),
    ("avg2_ceil", "avg", (6, 6), 3, {"pool_size": [3, 2], "strides": [2, 2],
                                     "ceil_mode": True}),
    ("avg2_ceil_cip", "avg", (7, 6), 3, {"pool_size": [3, 2], "strides": [2, 2],
                                         "ceil_mode": True, "padding": "explicit",
                                         "pads": [1, 0, 1, 0], "count_include_pad": True}),
    ("avg2_same_lower", "avg", (6, 5), 2, {"pool_size": [2, 3], "strides": [1, 2],
                                           "padding": "same_lower"}),
    ("avg2_same_cip", "avg", (5, 5), 2, {"pool_size": [3, 3], "strides": [2, 2],
                                         "padding": "same", "count_include_pad": True}),
    ("avg3_ceil", "avg", (4, 5, 3), 2, {"pool_size": [2, 2, 2], "strides": [2, 1, 2],
                                        "ceil_mode": True, "padding": "explicit",
                                        "pads": [1, 0, 0, 1, 0, 0]}),
    ("avg3_ceil_cip", "avg", (4, 5, 3), 2, {"pool_size": [2, 2, 2], "strides": [2, 1, 2],
                                            "ceil_mode": True, "padding": "explicit",
                                            "pads": [1, 0, 0, 1, 0, 0],
                                            "count_include_pad": True}),
    ("avg3_whole", "avg", (2, 3, 2), 4, {"pool_size": [2, 3, 2], "strides": [1, 1, 1]}),
    ("max1_dilated", "max", (9,), 2, {"pool_size": [3], "strides": [2], "dilations": [2]}),
    ("max2_dilated_ceil", "max", (7, 6), 2, {"pool_size": [2, 2], "strides": [2, 2],
                                             "dilations": [2, 2], "ceil_mode": True}),
    ("max3_same_lower", "max", (4, 4, 3), 2, {"pool_size": [2, 3, 2], "strides": [1, 2, 1],
                                              "padding": "same_lower"}),
]


def onnx_attrs(a, r, avg):
    kw = {"kernel_shape": a["pool_size"], "strides": a["strides"],
          "ceil_mode": int(a.get("ceil_mode", False))}
    if not avg:
        kw["dilations"] = a.get("dilations", [1] * r)
    else:
        kw["count_include_pad"] = int(a.get("count_include_pad", False))
    pad = a.get("padding", "valid")
    if pad in ("explicit", "valid"):
        p = a.get("pads", [0] * 2 * r)
        kw["pads"] = [p[2 * i] for i in range(r)] + [p[2 * i + 1] for i in range(r)]
    else:
        kw["auto_pad"] = {"same": "SAME_UPPER", "same_lower": "SAME_LOWER"}[pad]
    return kw


def main():
    rng = np.random.default_rng(2026)
    arrays, meta = {}, {}
    for name, kind, spatial, c, a in CASES:
        r = len(spatial)
        x = rng.integers(-128, 128, (6, *spatial, c)).astype(np.int8)
        x[1] = 127
        x[2] = -128
        si, zi, so, zo = 0.0371, -3, 0.029, 6
        x_in = helper.make_tensor_value_info("x", TensorProto.INT8, None)
        y_out = helper.make_tensor_value_info("y", TensorProto.INT8, None)
        if kind == "avg":
            inits = [helper.make_tensor("si", TensorProto.FLOAT, [], [si]),
                     helper.make_tensor("zi", TensorProto.INT8, [], [zi]),
                     helper.make_tensor("so", TensorProto.FLOAT, [], [so]),
                     helper.make_tensor("zo", TensorProto.INT8, [], [zo])]
            node = helper.make_node("QLinearAveragePool", ["x", "si", "zi", "so", "zo"], ["y"],
                                    domain="com.microsoft", channels_last=0,
                                    **onnx_attrs(a, r, True))
        else:
            inits = []
            node = helper.make_node("MaxPool", ["x"], ["y"], **onnx_attrs(a, r, False))
        g = helper.make_graph([node], name, [x_in], [y_out], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21),
                                                helper.make_opsetid("com.microsoft", 1)])
        m.ir_version = 10
        so_ = ort.SessionOptions()
        so_.intra_op_num_threads = 1
        so_.inter_op_num_threads = 1
        sess = ort.InferenceSession(m.SerializeToString(), so_,
                                    providers=["CPUExecutionProvider"])
        y = sess.run(None, {"x": np.ascontiguousarray(np.moveaxis(x, -1, 1))})[0]
        arrays[f"x_{name}"] = x
        arrays[f"y_{name}"] = np.ascontiguousarray(np.moveaxis(y, 1, -1))
        meta[name] = {"op": f"{kind}_pool{r}d", "attrs": a, "in_scale": si, "in_zp": zi,
                      "out_scale": so, "out_zp": zo}
        print(name, y.shape)
    np.savez_compressed(os.path.join(HERE, "pools.npz"), cases=np.array(json.dumps(meta)),
                        **arrays)
    print("onnxruntime", ort.__version__, "onnx", onnx.__version__)


MATMUL = [  # (name, dtype, a shape, b shape, (s_a, zp_a), (s_b, zp_b), (s_y, zp_y))
    ("mm_int8", "int8", (6, 4, 7), (6, 7, 3), (0.021, -7), (0.037, 12), (0.2, 5)),
    ("mm_uint8", "uint8", (6, 3, 5), (6, 5, 4), (0.02, 128), (0.03, 3), (0.3, 100)),
    ("mm_broadcast", "int8", (2, 3, 2, 6), (2, 1, 6, 4), (0.02, 0), (0.035, -3), (0.17, -2)),
    ("mm_ties", "int8", (6, 3, 4), (6, 4, 3), (2 ** -4, 0), (2 ** -4, 2), (2 ** -7, 3)),
]
#: Code ranges of the cases whose codes are not uniform on the whole grid (mm_ties: small codes,
#: so that M = 2^-1 puts every odd accumulator on a tie, where the zero point's order matters).
SMALL = {"mm_ties": (-6, 6)}


def main_matmul():
    rng = np.random.default_rng(7)
    arrays, meta = {}, {}
    for name, dt, sa, sb, ea, eb, ey in MATMUL:
        npt = {"int8": np.int8, "uint8": np.uint8}[dt]
        tp = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8}[dt]
        lo, hi = SMALL.get(name, (np.iinfo(npt).min, np.iinfo(npt).max))
        a = rng.integers(lo, int(hi) + 1, sa).astype(npt)
        b = rng.integers(lo, int(hi) + 1, sb).astype(npt)
        a[1], b[-1] = hi, lo
        inits = []
        for key, (s, z) in (("a", ea), ("b", eb), ("y", ey)):
            inits += [helper.make_tensor(f"s{key}", TensorProto.FLOAT, [], [s]),
                      helper.make_tensor(f"z{key}", tp, [], [z])]
        node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"],
                                ["y"])
        g = helper.make_graph([node], name, [helper.make_tensor_value_info("a", tp, None),
                                             helper.make_tensor_value_info("b", tp, None)],
                              [helper.make_tensor_value_info("y", tp, None)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
        m.ir_version = 10
        so_ = ort.SessionOptions()
        so_.intra_op_num_threads = 1
        so_.inter_op_num_threads = 1
        sess = ort.InferenceSession(m.SerializeToString(), so_,
                                    providers=["CPUExecutionProvider"])
        arrays[f"a_{name}"], arrays[f"b_{name}"] = a, b
        arrays[f"y_{name}"] = sess.run(None, {"a": a, "b": b})[0]
        meta[name] = {"dtype": dt, "a": list(ea), "b": list(eb), "y": list(ey)}
        print(name, arrays[f"y_{name}"].shape)
    np.savez_compressed(os.path.join(HERE, "matmul.npz"), cases=np.array(json.dumps(meta)),
                        **arrays)


if __name__ == "__main__":
    main()
    main_matmul()
