"""TFLite flatbuffers -> refq graphs: `import_tflite(path)`.

    g = refq.import_tflite("model.tflite")     # a float, dynamic-range or integer graph
    y = refq.run(g, {g.inputs[0].name: x})      # float and dynamic-range graphs
    y, stats = refq.fixedpoint.run_int(g, {...})   # integer graphs (g.meta["integer"])

The file is parsed by the `tflite` package (`refq[tflite]`; `tflite_read`). What the model holds
decides the graph (`model_kind`):
- float (float32 activations and weights): refq's float ops (NHWC as refq; TFLite conv kernels
  are OHWI already, depthwise kernels [1, kh, kw, C·M] become [C·M, kh, kw, 1] with groups = C);
  a fused activation becomes its own relu / relu6 / clip node; SUB, which refq's float ops do not
  have, runs as `int_f32_binary`.
- dynamic range (float32 activations, int8 weights of some conv/depthwise/fully-connected
  layers): every op that computes runs LiteRT's reference kernels bit for bit
  (`refq.fixedpoint.kernels.hybrid`: `int_hybrid_*` for the int8-weight layers;
  `refq.fixedpoint.kernels.float_ref`: `int_f32_*` for the float32 ones); max pooling, relu/relu6/clip, concatenation, padding and reshapes, which are
  exact in any float dtype, stay refq float ops (`tflite_float`).
- integer (int8 activations): an integer graph for the `tflite` profile, built by
  `refq.fixedpoint.lower_from_params` from the file's weights, biases, scales, zero points and
  fused activations (`tflite_int`); a float input read by QUANTIZE and a float output written by
  DEQUANTIZE become the graph's int_quantize and int_dequantize; DEQUANTIZE -> float operators ->
  QUANTIZE inside the model run LiteRT's float32 reference kernels between an int_dequantize and
  an int_quantize, and uint8 inputs and outputs are requantized to and from int8
  (`tflite_mixed`, `refq.fixedpoint.mixed`). A "16x8" model (int16
  activations, int8 weights, int64 biases) becomes the same graph with int16 tensors, its
  convolutions, fully connected layers and adds replaced by TFLite's 16x8 arithmetic
  (`tflite_int16`: int_conv2d_16x8, int_dense_16x8, int_add with shift 15).
Refq tensors are named after the TFLite tensors (the part of the name before the first ';',
made unique with `_<index>`); graph.meta["tflite"] records the file, the kind and
{refq tensor: TFLite tensor index}. Constant DEQUANTIZE operators (float16 or int8 weights) are
folded into float32 constants; operators whose outputs only compute the shape operand of a
RESHAPE (SHAPE, STRIDED_SLICE, PACK, ...) are dropped, the RESHAPE taking its output's static
shape. Errors: FormatError (missing, truncated or damaged file, or a tensor of more than
`MAX_VALUES` values per image), UnsupportedLayerError naming the
operator index, its opcode and the file, InputError when the `tflite` package is missing.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import FormatError, UnsupportedLayerError
from .tflite_common import unsupported
from .tflite_read import read_tflite

__all__ = ["import_tflite", "model_kind", "fold_constants", "shape_only_ops"]

_INT_TYPES = ("int8", "int16", "uint8")
#: The most values one tensor of one image may hold (a larger one comes from a damaged file).
MAX_VALUES = 2 ** 28
_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def fold_constants(model) -> set:
    """Fold DEQUANTIZE operators of constant tensors into float32 constants (in place: the output
    tensor gets the data); return the indices of the folded operators."""
    folded = set()
    for op in model.operators:
        if op.opcode != "DEQUANTIZE" or len(op.inputs) != 1:
            continue
        src, dst = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
        if src.data is None:
            continue
        if src.type == "float16":
            dst.data = src.data.astype(np.float32)
        elif src.quantized and src.type in ("int8", "uint8", "int16"):
            shape = [1] * src.data.ndim
            if src.scales.size > 1:
                shape[src.axis] = src.scales.size
            dst.data = ((src.data.astype(np.float64) - src.zero_points.reshape(shape))
                        * src.scales.astype(np.float64).reshape(shape)).astype(np.float32)
        else:
            continue
        folded.add(op.index)
    return folded


def shape_only_ops(model) -> set:
    """Indices of the operators whose outputs feed only the shape operand of RESHAPE operators
    (directly or through other such operators)."""
    readers = {}
    for op in model.operators:
        for k, t in enumerate(op.inputs):
            readers.setdefault(t, []).append((op, k))
    skip = set()
    for op in reversed(model.operators):
        outs = op.outputs
        if not outs or any(t in model.outputs for t in outs):
            continue
        uses = [r for t in outs for r in readers.get(t, [])]
        if uses and all((r.opcode == "RESHAPE" and k == 1) or r.index in skip for r, k in uses):
            skip.add(op.index)
    return skip


def model_kind(model, skip=()) -> str:
    """"integer" when an operator computes on int8/int16/uint8 activations, "dynamic_range" when
    activations are float and some conv/depthwise/fully-connected weight is int8, else "float"."""
    weights = False
    for op in model.operators:
        if op.index in skip:
            continue
        acts = [model.tensors[t] for t in op.inputs + op.outputs
                if t >= 0 and model.tensors[t].data is None]
        if op.opcode not in ("QUANTIZE", "DEQUANTIZE") and any(t.type in _INT_TYPES
                                                               for t in acts):
            return "integer"
        if op.opcode in _WEIGHTED and len(op.inputs) > 1:
            w = model.tensors[op.inputs[1]]
            weights = weights or (w.data is not None and w.type == "int8")
    return "dynamic_range" if weights else "float"


def import_tflite(path):
    """The refq Graph of the TFLite model at `path` (see the module docstring)."""
    path = os.fspath(path)
    model = read_tflite(path)
    folded = fold_constants(model)
    skip = shape_only_ops(model) | folded
    if len(model.inputs) < 1 or len(model.outputs) < 1 or not model.operators:
        raise UnsupportedLayerError(f"{path}: the model has no inputs, outputs or operators; "
                                    "refq imports models that compute something")
    for op in model.operators:
        if op.index not in skip and (not op.inputs or op.inputs[0] < 0 or not op.outputs
                                     or min(op.outputs) < 0):
            raise unsupported(model, op, "it has no input or no output tensor; the file is "
                                         "damaged")
    kind = model_kind(model, skip)
    if kind == "integer":
        from .tflite_int import integer_graph

        g, names = integer_graph(model, skip)
    else:
        from .tflite_float import float_graph

        g, names = float_graph(model, skip, hybrid=kind == "dynamic_range")
    for t, shape in g.infer_shapes().items():
        size = int(np.prod([d for d in shape[1:] if d is not None], dtype=np.float64))
        if size > MAX_VALUES:
            raise FormatError(f"{path}: tensor '{t}' would hold {size:.3g} values per image "
                              f"(shape {list(shape)}), more than {MAX_VALUES:.3g}; the file is "
                              "damaged")
    g.meta["tflite"] = {"file": os.path.basename(path), "kind": kind,
                        "tensors": dict(names.index)}
    return g
