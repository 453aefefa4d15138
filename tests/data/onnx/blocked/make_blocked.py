"""Make the blocked-weight ONNX test data of tests/test_blocked_quant_onnx.py in two steps.

1. In refq's environment (numpy, onnx, refq installed):
       python tests/data/onnx/blocked/make_blocked.py export
   builds a small float graph (3×3 conv of 10 input channels, relu, depthwise 3×3 conv, global
   average pooling, dense of 6 inputs; seeded weights), quantizes it with blocked weights of
   block size 4 (both layers end in a partial block: 10 = 4 + 4 + 2, 6 = 4 + 2; the depthwise
   kernel has one input channel, one block) for each case of `CASES` (weight grid and
   symmetry; activations 8-bit asymmetric, minmax, calibrated on seeded data) and writes
   blocked_<case>.onnx with `refq.exporters.onnx_qdq.export_qdq`, and the input x (NCHW) to
   X_PATH for step 2.
2. In the onnxruntime environment (/tmp/ortenv: onnxruntime, onnx, numpy):
       /tmp/ortenv/bin/python tests/data/onnx/blocked/make_blocked.py ort
   runs each file with onnxruntime's CPU provider, graph optimisations off ("noopt") and at
   their default ("opt"), and writes blocked_expected.npz: x (NCHW) and <case>/<tag> (the
   logits [N, 5]); it also builds, for each weight type and each of Conv, Gemm and MatMul, a
   one-node model whose weight is a blocked DequantizeLinear (block_size 2 on the input
   channels, opset 21) and records in ort_support.json whether onnxruntime loads and runs it
   ("ok" with its largest error relative to the largest output, against NumPy's float64 of
   (q − zp)·scale and the op) or the first line of its error.
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
X_PATH = "/tmp/refq_make_blocked_x.npy"   # step 1 writes the input here for step 2
BLOCK = 4
#: case -> (weight bitwidth, weights symmetric): int8, int4 (symmetric), uint8, uint4
#: (asymmetric), int16.
CASES = {"w8": (8, True), "w4": (4, True), "w8_asym": (8, False), "w4_asym": (4, False),
         "w16": (16, True)}


def graph():
    from refq.graph import Graph, Node, TensorSpec

    rng = np.random.default_rng(21)

    def w(*shape, s=0.4):
        return rng.standard_normal(shape) * s

    nodes = [
        Node("conv", "conv2d", ["x"], ["c"], {"padding": "same"},
             {"weight": w(6, 3, 3, 10), "bias": w(6, s=0.1)}),
        Node("act", "relu", ["c"], ["a"]),
        Node("dw", "conv2d", ["a"], ["d"], {"groups": 6, "padding": "same"},
             {"weight": w(6, 3, 3, 1), "bias": w(6, s=0.1)}),
        Node("gap", "global_avg_pool2d", ["d"], ["g"]),
        Node("fc", "dense", ["g"], ["y"], {}, {"weight": w(5, 6), "bias": w(5, s=0.1)}),
    ]
    return Graph([TensorSpec("x", (None, 6, 6, 10))], ["y"], nodes, "blocked").validate()


def sim_of(case):
    """The simulation exported as blocked_<case>.onnx."""
    from refq.quant.config import load_config
    from refq.quant.quantsim import QuantSim

    bits, symmetric = CASES[case]
    config = load_config("per_channel").to_json()
    config["defaults"]["params"]["is_symmetric"] = "True" if symmetric else "False"
    sim = QuantSim(graph(), config, param_bw=bits, act_bw=8)
    sim.set_blockwise(BLOCK)
    return sim.compute_encodings([np.random.default_rng(22).standard_normal((16, 6, 6, 10))])


def export():
    from refq.exporters.onnx_qdq import export_qdq

    for case in CASES:
        print(case, export_qdq(sim_of(case), os.path.join(HERE, f"blocked_{case}.onnx")))
    x = np.random.default_rng(23).standard_normal((4, 10, 6, 6)).astype(np.float32)
    np.save(X_PATH, x)


def _one_node(op, dtype):
    """A model y = op(x, DQ(q)) with a blocked DQ weight of numpy type `dtype` (opset 21)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    lo, hi = {"int4": (-8, 7), "uint4": (0, 15)}.get(dtype) or \
        (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    if op == "Conv":         # W [O=3, I=4, 1, 1], blocks along axis 1
        shape, axis, x_shape, y_shape = (3, 4, 1, 1), 1, [1, 4, 2, 2], [1, 3, 2, 2]
    elif op == "Gemm":       # transB = 1: B [N=3, K=4], blocks along axis 1
        shape, axis, x_shape, y_shape = (3, 4), 1, [2, 4], [2, 3]
    else:                    # MatMul: B [K=4, N=3], blocks along axis 0
        shape, axis, x_shape, y_shape = (4, 3), 0, [2, 4], [2, 3]
    q = rng.integers(lo, hi + 1, shape)
    s_shape = list(shape)
    s_shape[axis] = 2
    onnx_type = {"int4": TensorProto.INT4, "uint4": TensorProto.UINT4}.get(dtype)
    if onnx_type is None:
        q_init = numpy_helper.from_array(q.astype(dtype), "q")
        z_init = numpy_helper.from_array(np.zeros(s_shape, dtype), "z")
    else:
        q_init = helper.make_tensor("q", onnx_type, shape, q.reshape(-1).tolist())
        z_init = helper.make_tensor("z", onnx_type, s_shape, [0] * int(np.prod(s_shape)))
    s_init = numpy_helper.from_array(rng.uniform(0.01, 0.1, s_shape).astype(np.float32), "s")
    dq = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["w"], axis=axis, block_size=2)
    attrs = {"transB": 1} if op == "Gemm" else {}
    main = helper.make_node(op, ["x", "w"], ["y"], **attrs)
    g = helper.make_graph([dq, main], "one", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, x_shape)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, y_shape)], [q_init, s_init, z_init])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = q * np.repeat(numpy_helper.to_array(s_init).astype(np.float64), 2, axis=axis)
    if op == "Conv":
        y = np.einsum("nihw,oi->nohw", x, w[:, :, 0, 0])
    else:
        y = x @ (w.T if op == "Gemm" else w)
    return model, x, y


def ort():
    import onnxruntime as rt

    x = np.load(X_PATH, allow_pickle=False)
    out = {"x": x}
    for case in CASES:
        for tag, level in (("noopt", rt.GraphOptimizationLevel.ORT_DISABLE_ALL),
                           ("opt", rt.GraphOptimizationLevel.ORT_ENABLE_ALL)):
            so = rt.SessionOptions()
            so.graph_optimization_level = level
            s = rt.InferenceSession(os.path.join(HERE, f"blocked_{case}.onnx"), so,
                                    providers=["CPUExecutionProvider"])
            out[f"{case}/{tag}"] = s.run(None, {"x": x})[0]
    np.savez_compressed(os.path.join(HERE, "blocked_expected.npz"), **out)
    support = {"onnxruntime": rt.__version__}
    for dtype in ("int4", "uint4", "int8", "uint8", "int16", "uint16"):
        for op in ("Conv", "Gemm", "MatMul"):
            model, feed, want = _one_node(op, dtype)
            try:
                s = rt.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
                got = s.run(None, {"x": feed})[0]
                err = float(np.abs(got - want).max() / np.abs(want).max())
                support[f"{dtype}/{op}"] = f"ok, max relative error {err:.1e}"
            except Exception as e:      # the error is the measurement
                support[f"{dtype}/{op}"] = str(e).splitlines()[0][:200]
    with open(os.path.join(HERE, "ort_support.json"), "w") as f:
        json.dump(support, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"onnxruntime {rt.__version__}: {sorted(out)}; {support}")


if __name__ == "__main__":
    {"export": export, "ort": ort}[sys.argv[1]]()
