"""Make the QDQ ONNX test data of tests/test_export_onnx_qdq.py in two steps.

1. In refq's environment (numpy, onnx, refq installed):
       python tests/data/onnx/make_qdq.py export
   builds a small float graph (convolutions, depthwise, batch norm, relu6, zero padding, add,
   hard_swish, pooling, concat, dense, softmax; seeded weights), folds its batch norms,
   quantizes it W8A8 per channel (refq's bundled `per_channel` config, minmax, calibrated on
   seeded data) and writes small_qdq.onnx with `refq.exporters.onnx_qdq.export_qdq`; and the
   PP-OCR classifier (imported from the ONNX file in /work/shared/models, batch norms folded,
   calibrated on refq's bundled calibration lines) as ppocr_cls_qdq.onnx.
2. In the onnxruntime environment (python3 -m venv /tmp/ortenv &&
   /tmp/ortenv/bin/pip install onnxruntime onnx numpy):
       /tmp/ortenv/bin/python tests/data/onnx/make_qdq.py ort
   runs both models with onnxruntime's CPU provider and writes qdq_expected.npz:
   small/x (NCHW inputs), small/y_noopt (all graph optimisations off: QuantizeLinear,
   DequantizeLinear and float operators one by one), small/y_opt (default optimisations:
   onnxruntime fuses the Q/DQ pairs into its integer kernels), the same for the logits
   (small/logits_noopt, small/logits_opt: both models output their softmax's input first, the
   probabilities second), and ppocr/y_noopt, ppocr/y_opt, ppocr/logits_*
   on the first 16 bundled test lines (`refq.ppocr_data.load_test_set()[0][:16]`, NCHW, which
   step 1 saves in PPOCR_X, as the onnxruntime environment has no refq).
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PPOCR_ONNX = "/work/shared/models/ppocr_cls_mobilenetv3/ch_ppocr_mobile_v2.0_cls_infer.onnx"
PPOCR_X = "/tmp/refq_make_qdq_ppocr_x16.npy"   # step 1 writes the 16 inputs here for step 2


def small_graph():
    from refq.graph import Graph, Node, TensorSpec

    rng = np.random.default_rng(7)

    def w(*shape, s=0.4):
        return rng.standard_normal(shape) * s

    def bn(c):
        return {"gamma": 1 + w(c, s=0.1), "beta": w(c, s=0.1), "mean": w(c, s=0.1),
                "variance": 0.5 + np.abs(w(c, s=0.2))}

    nodes = [
        Node("conv1", "conv2d", ["x"], ["c1"], {"strides": [2, 2], "padding": "same"},
             {"weight": w(8, 3, 3, 3), "bias": w(8, s=0.1)}),
        Node("bn1", "batch_norm", ["c1"], ["b1"], {"epsilon": 1e-3}, bn(8)),
        Node("act1", "relu6", ["b1"], ["a1"]),
        Node("dw", "conv2d", ["a1"], ["d1"], {"groups": 8, "padding": "explicit",
                                              "pads": [1, 1, 1, 1]}, {"weight": w(8, 3, 3, 1)}),
        Node("bn2", "batch_norm", ["d1"], ["b2"], {"epsilon": 1e-3}, bn(8)),
        Node("act2", "relu", ["b2"], ["a2"]),
        Node("pad", "zero_pad2d", ["a2"], ["p"], {"pads": [0, 1, 1, 0]}),
        Node("pw", "conv2d", ["p"], ["c3"], {}, {"weight": w(8, 2, 2, 8), "bias": w(8, s=0.1)}),
        Node("res", "add", ["c3", "a1"], ["r"]),
        Node("hs", "hard_swish", ["r"], ["h"]),
        Node("mp", "max_pool2d", ["h"], ["m"], {"pool_size": [2, 2], "strides": [2, 2]}),
        Node("ap", "avg_pool2d", ["h"], ["v"], {"pool_size": [2, 2], "strides": [2, 2]}),
        Node("cat", "concat", ["m", "v"], ["k"], {"axis": -1}),
        Node("gap", "global_avg_pool2d", ["k"], ["g"]),
        Node("fc", "dense", ["g"], ["f"], {}, {"weight": w(5, 16), "bias": w(5, s=0.1)}),
        Node("prob", "softmax", ["f"], ["y"]),
    ]
    return Graph([TensorSpec("x", (None, 8, 8, 3))], ["f", "y"], nodes, "small").validate()


def with_logits(graph):
    """`graph` with the input of its softmax as a first output (onnxruntime fuses the softmax
    into its QLinearSoftmax, whose numerics differ from the rest: the logits isolate them)."""
    softmax = next(n for n in graph.nodes if n.op == "softmax")
    graph.outputs = [softmax.inputs[0]] + [t for t in graph.outputs if t != softmax.inputs[0]]
    return graph.validate()


def export():
    from refq.algorithms.bn_fold import fold_batch_norms
    from refq.exporters.onnx_qdq import export_qdq
    from refq.importers.onnx import import_onnx
    from refq.ppocr_data import load_calibration_set, load_test_set
    from refq.quant.quantsim import QuantSim

    folded, _ = fold_batch_norms(small_graph())
    sim = QuantSim(folded, "per_channel")
    sim.compute_encodings([np.random.default_rng(8).standard_normal((32, 8, 8, 3))])
    print(export_qdq(sim, os.path.join(HERE, "small_qdq.onnx")))
    folded, _ = fold_batch_norms(with_logits(import_onnx(PPOCR_ONNX)))
    sim = QuantSim(folded, "per_channel")
    sim.compute_encodings([load_calibration_set(64)])
    print(export_qdq(sim, os.path.join(HERE, "ppocr_cls_qdq.onnx")))
    x = load_test_set()[0][:16].transpose(0, 3, 1, 2)
    np.save(PPOCR_X, np.ascontiguousarray(x))   # for step 2 (not committed)


def ort():
    import onnxruntime as rt

    out = {"small/x": np.random.default_rng(9).standard_normal((4, 3, 8, 8)).astype(np.float32)}
    ppocr_x = np.load(PPOCR_X, allow_pickle=False)
    for case, x in (("small", out["small/x"]), ("ppocr", ppocr_x)):
        for tag, level in (("noopt", rt.GraphOptimizationLevel.ORT_DISABLE_ALL),
                           ("opt", rt.GraphOptimizationLevel.ORT_ENABLE_ALL)):
            so = rt.SessionOptions()
            so.graph_optimization_level = level
            name = "small_qdq.onnx" if case == "small" else "ppocr_cls_qdq.onnx"
            s = rt.InferenceSession(os.path.join(HERE, name), so,
                                    providers=["CPUExecutionProvider"])
            logits, y = s.run(None, {s.get_inputs()[0].name: x})
            out[f"{case}/logits_{tag}"], out[f"{case}/y_{tag}"] = logits, y
    np.savez_compressed(os.path.join(HERE, "qdq_expected.npz"), **out)
    print(f"onnxruntime {rt.__version__}: {sorted(out)}")


if __name__ == "__main__":
    {"export": export, "ort": ort}[sys.argv[1]]()
