"""ONNX models (`.onnx`, the `refq[onnx]` extra) -> a refq float Graph, a QuantSim, or an integer
Graph, by what the file holds:

- a float model -> a validated float `Graph` in refq's NHWC layout (`onnx_graph`, `onnx_ops`,
  `onnx_ops_pool`, `onnx_ops_shape`; constant shape subgraphs are folded by `onnx_fold`);
- a QDQ model (QuantizeLinear/DequantizeLinear pairs) -> a `QuantSim` of the float graph with the
  file's encodings, frozen (`onnx_qdq`);
- a model with integer operators (QLinearConv, QLinearMatMul, onnxruntime's com.microsoft
  QLinearAdd, QLinearMul, QLinearConcat, QLinearGlobalAveragePool; QuantizeLinear /
  DequantizeLinear or integer graph inputs and outputs at its edges) -> an integer `Graph` with
  the file's parameters under a numerics profile (`onnx_integer`);
- a model of ConvInteger / MatMulInteger on integer inputs -> an integer `Graph` whose outputs
  are the int32 accumulators (`onnx_int_accumulate`); dynamically quantized models
  (DynamicQuantizeLinear) are refused.

    from refq.importers.onnx import import_onnx
    g = import_onnx("model.onnx")                                        # float
    g = import_onnx("model.onnx", input_shapes={"x": [1, 3, 48, 192]})
    sim = import_onnx("model_qdq.onnx")                                  # QDQ
    g_int = import_onnx("model_qlinear.onnx", profile="ort")             # integer

Layouts: channels-first tensors read by channel ops are held channels-last (`onnx_graph`);
`graph.meta["onnx_layouts"]` names the inputs and outputs held so ("nchw") or as in the file
("same"). Free dimensions: a free batch stays free; free heights and widths stay free where every
op can take them (refq's shape inference carries None), else the op that needs them asks for
`input_shapes`. A free channel count always needs `input_shapes`.
The file is parsed by the `onnx` package and checked by `onnx.checker`; nothing in it is run.
"""
from __future__ import annotations

from .onnx_graph import Builder
from .onnx_load import OnnxModel, load_model
from .onnx_ops import CONVERTERS

__all__ = ["import_onnx", "INTEGER_OPS"]

INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearConcat",
               "QLinearGlobalAveragePool")


def import_onnx(path, input_shapes=None, profile="onnx", numerics=None):
    """The model in the ONNX file `path` (module docstring).

    input_shapes: {input name: [N, C, H, W]} (ONNX layout; None or -1 for a free entry) fixing
      shapes the file leaves free. profile: the integer numerics profile an integer model runs
      under. numerics: the `EncodingNumerics` of an imported QDQ simulation (default
      `onnx_qdq.ONNX_QDQ_NUMERICS`, ONNX's own definition)."""
    from ..errors import UnsupportedLayerError

    m = OnnxModel(path, load_model(path))
    ops = {n.op_type for n in m.nodes}
    if "DynamicQuantizeLinear" in ops:
        node = next(n for n in m.nodes if n.op_type == "DynamicQuantizeLinear")
        raise UnsupportedLayerError(
            f"{m.path}: node '{node.name or node.output[0]}' ({node.op_type}): dynamically "
            "quantized models (scales computed from the data at run time) are not imported; "
            "export the model in QDQ form (QuantizeLinear/DequantizeLinear around float "
            "operators) instead")
    if ops & {"ConvInteger", "MatMulInteger"}:
        from .onnx_int_accumulate import import_accumulators

        return import_accumulators(m, input_shapes, profile)
    if ops & set(INTEGER_OPS):
        from .onnx_integer import import_integer

        return import_integer(m, input_shapes, profile)
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        from .onnx_qdq import qdq_sim, split_qdq

        aliases, edges, weights = split_qdq(m)
        b = Builder(m, input_shapes, aliases)
        graph = b.convert(CONVERTERS)
        return qdq_sim(b, graph, edges, weights, numerics)
    return Builder(m, input_shapes).convert(CONVERTERS)
