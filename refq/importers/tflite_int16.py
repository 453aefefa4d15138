"""TFLite "16x8" models (int16 activations, int8 weights, int64 biases) in the integer graph of
`tflite_int`; rules in `refq.importers.tflite`.

A model converted with `EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8` holds int16
activations (zero point 0, TFLite's 16-bit rule). Its operators become the same spec layers as an
int8 model's (`tflite_int`), lowered by `lower_from_params` under the `tflite` profile with int16
encodings, whose lowering (`refq.fixedpoint.lower_16x8`) makes every layer whose arithmetic
differs from the int8 kernels in its 16x8 form; the file's int64 biases are then set on them
(the node rebuilt by the lowering's `node_16x8`):
  CONV_2D, DEPTHWISE_CONV_2D   int_conv2d -> int_conv2d_16x8 (int64 accumulator and bias,
                               16-bit multiplier, `refq.fixedpoint.kernels.conv16x8`)
  FULLY_CONNECTED              int_dense -> int_dense_16x8, requant "float_half_away" (LiteRT's
                               reference kernel requantizes in float64 for int16 too)
  ADD, SUB                     int_add with TFLite's int16 input shift 15 instead of 20
                               (`add.cc`/`sub.cc`: left_shift = 15 for int16 with general
                               scales; the three multipliers derived for it by the lowering;
                               SUB then negates its second input on its grid as for int8,
                               `tflite_int`)
  LOGISTIC, TANH               int_lut of 65536 entries, each LiteRT's int16 kernel on that code
                               (`refq.fixedpoint.kernels.act16`, made by the lowering's
                               `lower_act16`); the output must be Q0.15 (scale 2^-15) as LiteRT's
                               Prepare requires
  SOFTMAX                      int_softmax "tflite16" (LiteRT's `SoftmaxInt16`: exp and
                               1/(1 + x) tables with interpolation); beta 1, output Q0.15
  LEAKY_RELU                   int_lut of 65536 entries (LiteRT's two-multiplier
                               `QuantizeLeakyRelu` on every code, `lower_act16`)
  RELU, RELU6                  int_clamp on one encoding, else int_requantize with the clamp
                               (LiteRT's `QuantizedReluX<int16_t>`: MBQM(x, QuantizeMultiplier(
                               double(fl32(s_in/s_out)))) clamped to [0, min(32767,
                               roundf(6/s_out))]; `tflite_int` sets that multiplier); checked on
                               every int16 code (tests/data/tflite/relu_codes16.tflite)
QUANTIZE of the float graph input, DEQUANTIZE of a graph output, QUANTIZE int16 -> int16
(int_requantize), CONCATENATION, PAD, MUL, RESHAPE, MAX_POOL_2D, AVERAGE_POOL_2D and MEAN over
H, W keep their int8 forms, which hold for int16 values (the same integer formulas with int32
intermediates: |x·2^15| < 2^31, |x1·x2| ≤ 2^30). Every one of these was checked bit for bit
against LiteRT's BUILTIN_REF on tests/data/tflite_16x8 (the add's int8 shift of 20 would
overflow its int32 accumulator there).
Any other operator touching an int16 tensor is refused (UnsupportedLayerError naming the
operator index and opcode); so are 16x8 layers with int32 biases, per-tensor fully connected
weights, an ADD or SUB whose scales are all powers of two with pot_scale_int16 set (LiteRT's
separate power-of-two kernel), and int16 tensors whose zero point is not 0: none of them was
checked.
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from ..fixedpoint.lower_16x8 import ADD_LEFT_SHIFT_16, node_16x8
from .tflite_common import unsupported, with_nodes

__all__ = ["OPS_16X8", "REPLACED", "is_16x8", "check_op", "layer_record", "replace_16x8"]

#: The operators refq reads with int16 activations inside the graph (besides the QUANTIZE of the
#: float graph input and the DEQUANTIZE of a graph output, which `tflite_int` handles).
OPS_16X8 = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "QUANTIZE",
            "CONCATENATION", "PAD", "RESHAPE", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN",
            "LOGISTIC", "TANH", "SOFTMAX", "LEAKY_RELU", "RELU", "RELU6")
#: The operators whose int16 kernel writes Q0.15 (LiteRT's Prepare checks the output scale).
_Q15_OUTPUT = ("LOGISTIC", "TANH", "SOFTMAX")
#: The operators whose lowered node `replace_16x8` replaces.
REPLACED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB")
_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _activations(model, op):
    """The non-constant tensors of `op` (a RESHAPE's shape operand left out)."""
    ins = op.inputs[:1] if op.opcode == "RESHAPE" else op.inputs
    return [model.tensors[t] for t in ins + op.outputs
            if t >= 0 and model.tensors[t].data is None]


def is_16x8(model, op) -> bool:
    """True when an activation tensor of `op` is int16."""
    return any(t.type == "int16" for t in _activations(model, op))


def check_op(model, op):
    """UnsupportedLayerError unless refq reads `op` with its int16 activations bit for bit."""
    if op.opcode not in OPS_16X8:
        raise unsupported(model, op, "refq has no int16-activation (16x8) form of this operator; "
                                     f"supported with int16 activations: {', '.join(OPS_16X8)}, "
                                     "QUANTIZE of the float input, DEQUANTIZE of an output")
    for t in _activations(model, op):
        if t.type != "int16":
            raise unsupported(model, op, f"tensor '{t.name}' is {t.type} beside int16 ones; "
                                         "refq reads operators whose activations are all int16")
        if t.type == "int16" and (t.zero_points.size != 1 or int(t.zero_points[0]) != 0):
            raise unsupported(model, op, f"int16 tensor '{t.name}' has zero point(s) "
                                         f"{t.zero_points.tolist()[:3]}; TFLite's int16 "
                                         "activations are symmetric (zero point 0)")
    if op.opcode in _Q15_OUTPUT:
        out = model.tensors[op.outputs[0]]
        if out.scales.size != 1 or np.float32(out.scales[0]) != np.float32(2.0 ** -15):
            raise unsupported(model, op, f"int16 output '{out.name}' has scale "
                                         f"{out.scales.tolist()[:3]}; LiteRT's int16 {op.opcode} "
                                         "writes Q0.15 (scale 2^-15), the only output scale refq "
                                         "reads it with")
    if op.opcode in ("ADD", "SUB") and op.options.get("PotScaleInt16", True):
        scales = [float(t.scales[0]) for t in _activations(model, op) if t.scales.size]
        if scales and all(np.frexp(v)[0] == 0.5 for v in scales):
            raise unsupported(model, op, "int16 operands of power-of-two scales with "
                                         "pot_scale_int16 set run LiteRT's power-of-two kernel, "
                                         "which refq does not model")
    if op.opcode in _WEIGHTED:
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = model.tensors[op.inputs[2]]
            if b.type != "int64":
                raise unsupported(model, op, f"bias '{b.name}' is {b.type}; refq reads 16x8 "
                                             "layers with int64 biases (the converter's default)")
        w = model.tensors[op.inputs[1]] if len(op.inputs) > 1 else None
        if op.opcode == "FULLY_CONNECTED" and w is not None and w.scales.size == 1 and \
                w.data is not None and w.data.shape[0] > 1:
            raise unsupported(model, op, "per-tensor weights of an int16 fully connected layer "
                                         "(refq reads per-channel ones)")


def layer_record(model, op) -> dict:
    """What `replace_16x8` needs of a 16x8 operator of `REPLACED` (that `check_op` accepted)."""
    scale = [float(model.tensors[t].scales[0]) for t in op.inputs + op.outputs
             if t >= 0 and model.tensors[t].data is None]
    rec = {"opcode": op.opcode, "index": op.index, "scales": scale}
    if op.opcode in _WEIGHTED:
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            rec["bias"] = model.tensors[op.inputs[2]].data.astype(np.int64)
        ws = model.tensors[op.inputs[1]].scales.astype(np.float32)
        if not ws.size or not np.all(np.isfinite(ws)) or np.any(ws <= 0):
            raise unsupported(model, op, f"weight scales {ws.tolist()[:3]} are not finite and "
                                         "positive; the file is damaged")
        rec["weight_scale"] = ws
    return rec


def _reals(rec):
    """float64(s_in)·float64(s_w[o])/float64(s_out) (TFLite's per-channel real multipliers)."""
    s_in = np.float64(np.float32(rec["scales"][0]))
    s_out = np.float64(np.float32(rec["scales"][-1]))
    return (s_in * rec["weight_scale"].astype(np.float64)) / s_out


def _weighted_node(n, rec):
    """The 16x8 node of a CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED, built by the lowering's
    `node_16x8` from the lowered node (weights, clamp, geometry, requant) with the file's int64
    bias and real multipliers."""
    kind = "conv" if n.op == "int_conv2d_16x8" else "dense"
    geometry = {k: n.attrs[k] for k in ("strides", "dilations", "padding", "pads", "groups")
                if k in n.attrs}
    requant = n.attrs.get("requant", "multiplier16")
    return node_16x8(n.name, kind, n.inputs, n.outputs, n.params["weight"], rec.get("bias"),
                     _reals(rec), (n.attrs["act_min"], n.attrs["act_max"]), geometry, requant)


def replace_16x8(g, records: dict, path: str):
    """The integer graph `g` (lowered under the `tflite` profile, whose lowering already makes
    the 16x8 nodes and the int16 add's shift 15, `refq.fixedpoint.lower_16x8`) with the file's
    int64 biases set on the 16x8 layers named in `records` ({node: layer_record}); each ADD/SUB
    is checked to carry TFLite's int16 left shift."""
    if not records:
        return g
    nodes, done = [], set()
    for n in g.nodes:
        rec = records.get(n.name)
        if rec is not None:
            if n.op in ("int_conv2d_16x8", "int_dense_16x8") and "weight_scale" in rec:
                n = _weighted_node(n, rec)
            elif not (n.op == "int_add" and n.attrs.get("left_shift") == ADD_LEFT_SHIFT_16):
                raise FixedPointError(f"{path}: operator {rec['index']} ({rec['opcode']}) "
                                      f"lowered to {n.op}, which is not its 16x8 form")
            done.add(n.name)
        nodes.append(n)
    missing = sorted(set(records) - done)
    if missing:
        raise FixedPointError(f"{path}: 16x8 layer(s) {missing} were not lowered to one node")
    return with_nodes(g, nodes, path, "16x8 layers")
