"""Int16 activations in the lowering: TFLite's "16x8" kernels, and what each target's int16
kernels allow.

A profile's int16 kernel family (`int16_family`: the profile's `int16_kernels` field):
  "tflite"    (profiles tflite, tflite-single: TFLite's 16x8 kernels are the same in both
              rounding builds, ../shared/reference/fixedpoint.md §2.4)
      conv2d (and depthwise) with int16 input and output, int8 weights
          -> int_conv2d_16x8: acc = Σ w·x + bias in int64 (bias int64, scale s_in·s_w[o],
             round_half_even(b / (s_in·s_w[o])), |bias| ≤ 2^47 − 1), y = clamp(MBQM64(acc,
             m[o], shift[o])) with (m, shift) = QuantizeMultiplier(M[o]), M[o] = s_in·s_w[o]/s_out
             in float64 (`kernels.conv16x8`, `requantize16`).
      dense / gemm with int16 input and output, int8 per-channel weights
          -> int_dense_16x8, requant "float_half_away" (LiteRT's reference FULLY_CONNECTED
             requantizes in float64, §2.5) or "multiplier16" when the profile's fc_requant is not
             that float scheme; the real multipliers M[o] as for conv.
      add with int16 operands -> int_add with TFLite's int16 left shift 15 (`add.cc`, general
          scales; the three multipliers from 2·max(s_a, s_b) as for int8).
      sigmoid, tanh, leaky_relu with int16 input and output (`lower_act16`)
          -> int_lut of 65536 entries, each LiteRT's int16 kernel on that code (`kernels.act16`:
             LOGISTIC/TANH interpolate `sigmoid_table_uint16` after scaling the input by
             `sigmoid_tanh16_params`; LEAKY_RELU requantizes with two multipliers). LOGISTIC and
             TANH write Q0.15 (scale 2^−15, zero point 0): another output encoding gets an
             int_requantize after the table (`Walk.finish`), and a note.
      softmax with int16 input and output -> int_softmax "tflite16" ("tflite16_single" under
          tflite-single; `kernels.act16.softmax16`), Q0.15 output as for LOGISTIC.
      conv2d/dense/add and these activations on int16 tensors need zero point 0 (TFLite's int16
      activations are symmetric; the 16x8 kernels have no offsets); a layer that mixes int8
      and int16 activations, a per-tensor int16 dense, and every other op on int16 tensors
      whose TFLite int16 kernel refq does not model (`TFLITE_INT16_REFUSED`: HARD_SWISH, which
      LiteRT has no int16 kernel for; TRANSPOSE_CONV and BATCH_MATMUL, whose 16x8 forms
      accumulate in int64; ROUND) are refused by name. mul,
      concat, avg_pool, mean, max_pool, pad, reshape, relu/relu6/clip and requantize keep their
      int8 forms: the importer checked them bit for bit against LiteRT on int16 tensors
      (`refq.importers.tflite_int16`).
  "cmsis-nn"  int16 conv2d / dense / gemm / conv_transpose2d / matmul and add are refused:
      CMSIS-NN's s16 convolution (`arm_nn_mat_mult_kernel_s16`) sums its first 512 products in
      int32 and the rest in int64 and requantizes with `arm_nn_requantize_s64` (the same 16-bit
      multiplier and rounding as TFLite), which equals TFLite's 16x8 arithmetic for weights in
      [−127, 127]; but `arm_fully_connected_s16` takes one per-tensor multiplier and the s16
      depthwise and add kernels were not checked, so refq does not claim them. Int16 LUT
      activations and softmax are refused too (`arm_nn_activation_s16` and
      `arm_softmax_s16` were not checked).
  None        every other profile (TOSA, ONNX, onnxruntime, the faithful simulation unless told):
      int16 layers keep the forms their profile defines.
The faithful simulation of a "tflite" lowering uses the same family with its float scheme:
int_conv2d_16x8 / int_dense_16x8 with requant "float_rne" (the exact int64 accumulator times the
float64 M[o], rounded half to even), the int16 activations as the profile's float table / float
softmax into the same Q0.15 tensor, so both graphs have the same nodes (`compare`).
`node_16x8` makes the 16x8 node from the lowered parameters; the TFLite importer builds its
16x8 layers with it too.
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from ..graph import Node
from .lower_encodings import where_of
from .multiplier import quantize_multiplier
from .requantize import FLOAT_SCHEMES
from .requantize16 import SHIFT_RANGE_64

__all__ = ["ADD_LEFT_SHIFT_16", "WIDE_BIAS_BITS", "TFLITE_INT16_REFUSED", "INT16_ACTIVATIONS",
           "int16_family", "is_16x8", "wide_bias_bits", "check_int16", "node_16x8", "emit_16x8",
           "add_left_shift", "lower_act16"]

#: TFLite's int16 Add input shift (`add.cc`: 15 for int16 with general scales, 20 for int8).
ADD_LEFT_SHIFT_16 = 15
#: The bias width of the 16x8 layers: int64 values within ±(2^47 − 1), the accumulator range
#: of TFLite's int64 MultiplyByQuantizedMultiplier.
WIDE_BIAS_BITS = 48
#: Ops refused on int16 tensors under the "tflite" family, with the reason.
TFLITE_INT16_REFUSED = {
    "hard_swish": "LiteRT has no int16 HARD_SWISH kernel (the converter refuses it in 16x8 mode)",
    "hard_sigmoid": "TFLite has no int16 hard sigmoid kernel",
    "round": "TFLite has no int16 ROUND kernel",
    "conv_transpose2d": "TFLite's 16x8 TRANSPOSE_CONV accumulates in int64 with a 16-bit "
                        "multiplier, which refq does not model",
    "matmul": "TFLite's int16 BATCH_MATMUL accumulates in int64, which refq does not model",
}
#: The activations refq lowers to TFLite's int16 kernels under the "tflite" family.
INT16_ACTIVATIONS = ("sigmoid", "tanh", "leaky_relu", "softmax")
_CMSIS_REFUSED = ("conv2d", "dense", "gemm", "conv_transpose2d", "matmul", "add")
_CMSIS_ACT_REFUSED = ("sigmoid", "tanh", "hard_swish", "hard_sigmoid", "leaky_relu", "softmax",
                      "round")
_Q15 = 2.0 ** -15
_WEIGHTED = ("conv2d", "dense", "gemm")


def int16_family(profile):
    """The int16 kernel family of `profile` (a Profile or a shipped profile's name): its
    `int16_kernels`, "tflite", "cmsis-nn" or None (module docstring)."""
    from .profiles import get_profile

    return get_profile(profile).int16_kernels


def is_16x8(w, tq_in) -> bool:
    """True when a weighted layer reading tq_in lowers to a 16x8 node in the walk w."""
    return w.int16 == "tflite" and tq_in.dtype == "int16"


def wide_bias_bits(w, tq_in):
    """The bias width of a weighted layer reading tq_in: WIDE_BIAS_BITS for a 16x8 layer, else
    None (the profile's bias_bits)."""
    return WIDE_BIAS_BITS if is_16x8(w, tq_in) else None


def add_left_shift(w, tq_a, tq_b):
    """The left shift of a "tflite"/"tosa" int_add: 15 for int16 operands under the "tflite"
    family, else the profile's add_left_shift."""
    if w.int16 == "tflite" and "int16" in (tq_a.dtype, tq_b.dtype):
        return ADD_LEFT_SHIFT_16
    return w.p.add_left_shift


def _encodings(w, n):
    """{tensor: TensorQ} of node n's inputs (as it reads them) and of its output (the fused
    activation's when it has one)."""
    out = {}
    for i, t in enumerate(n.inputs):
        q = w.src.input_q.get((n.name, i)) or w.tq.get(t)
        if q is not None:
            out[t] = q
    t_out = w.src.acts.get(n.name, ("none", {}, n.outputs[0]))[2]
    if t_out in w.tq:
        out[t_out] = w.tq[t_out]
    return out


def check_int16(w, n):
    """FixedPointError naming node n, the tensor and the reason when n touches an int16 tensor in
    a way its profile's int16 kernels compute differently from refq's form (module docstring)."""
    if w.int16 not in ("tflite", "cmsis-nn"):
        return
    encs = _encodings(w, n)
    wide = [t for t, q in encs.items() if q.dtype == "int16"]
    if not wide:
        return
    profiles = "tflite, tflite-single" if w.int16 == "tflite" else w.p.name
    head = f"{where_of(n)}: int16 tensor '{wide[0]}' under profile '{w.p.name}'"
    if w.int16 == "cmsis-nn" and n.op in _CMSIS_REFUSED:
        raise FixedPointError(f"{head}: refq does not model CMSIS-NN's s16 {n.op} kernels "
                              "(its s16 convolution, an int32 then int64 sum requantized by "
                              "arm_nn_requantize_s64, equals TFLite's 16x8 arithmetic for weights "
                              "in [-127, 127], but its s16 fully connected layer takes one "
                              "multiplier per tensor and its s16 depthwise and add kernels were "
                              "not checked); choose profile 'tflite' (TFLite's 16x8 kernels) or "
                              "quantize the layer's activations to 8 bits")
    if w.int16 == "cmsis-nn" and n.op in _CMSIS_ACT_REFUSED:
        raise FixedPointError(f"{head}: refq does not model CMSIS-NN's s16 {n.op} kernel "
                              "(arm_nn_activation_s16 / arm_softmax_s16 were not checked); "
                              "choose profile 'tflite' (LiteRT's int16 kernels) or quantize this "
                              "op's tensors to 8 bits")
    if w.int16 in ("tflite", "cmsis-nn") and n.op in TFLITE_INT16_REFUSED:
        raise FixedPointError(f"{head}: {TFLITE_INT16_REFUSED[n.op]}; refq has no exact form of "
                              "it: quantize this op's tensors to 8 bits or choose a profile "
                              "that defines it (`refq profiles`: onnx, tosa)")
    if w.int16 != "tflite" or n.op not in _WEIGHTED + ("add",) + INT16_ACTIVATIONS:
        return
    narrow = [t for t, q in encs.items() if q.dtype != "int16"]
    if narrow:
        raise FixedPointError(f"{head}: tensor '{narrow[0]}' is {encs[narrow[0]].dtype}; "
                              f"TFLite's int16 {n.op} kernels ({profiles}) take int16 inputs and "
                              "outputs only: quantize all of this layer's activations to 16 bits "
                              "or to 8 bits")
    for t, q in encs.items():
        if q.zero_point != 0:
            raise FixedPointError(f"{where_of(n)}: int16 tensor '{t}' has zero point "
                                  f"{q.zero_point}; TFLite's int16 kernels ({profiles}) take "
                                  "symmetric int16 activations (zero point 0): quantize the "
                                  "16-bit activations symmetric (`refq quantize --config` with "
                                  "defaults.ops.is_symmetric \"True\")")


def node_16x8(name, kind, inputs, outputs, weight, bias, real, act, geometry, requant) -> Node:
    """The 16x8 node `name` ("conv": int_conv2d_16x8, "dense": int_dense_16x8) from lowered
    parameters: int8 weight codes (OHWI / [units, in]), int64 bias [O] or None, the float64
    real multipliers M[o] (1 or O values), act = (act_min, act_max), the conv geometry attrs and
    `requant` ("multiplier16": (m, shift) = QuantizeMultiplier(M), TFLite's Q31 derivation, which
    MBQM64 reduces to 16 bits; "float_half_away" / "float_rne": M kept as real_multiplier).
    FixedPointError when a multiplier needs a shift outside [−31, 7] (TFLite's int64
    MultiplyByQuantizedMultiplier)."""
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    params = {"weight": np.asarray(weight)}
    if bias is not None:
        params["bias"] = np.asarray(bias).astype(np.int64)
    if requant == "multiplier16":
        m, shift = quantize_multiplier(real)
        m, shift = np.atleast_1d(m), np.atleast_1d(shift)
        bad = (shift < SHIFT_RANGE_64[0]) | (shift > SHIFT_RANGE_64[1])
        if np.any(bad & (m != 0)):
            c = int(np.argmax(bad & (m != 0)))
            raise FixedPointError(f"node '{name}': real multiplier {float(real[c])!r} (channel "
                                  f"{c}) needs shift {int(shift[c])}, outside [-31, 7] where "
                                  "TFLite's 16x8 requantization is defined; check the scales")
        params.update(multiplier=m.astype(np.int32), shift=np.where(m == 0, 0, shift)
                      .astype(np.int32))
    else:
        params["real_multiplier"] = real
    attrs = {"act_min": int(act[0]), "act_max": int(act[1])}
    if kind == "conv":
        attrs.update(geometry)
        if requant != "multiplier16":   # the default, left out as the importer always did
            attrs["requant"] = requant
        op = "int_conv2d_16x8"
    else:
        attrs["requant"] = requant
        op = "int_dense_16x8"
    return Node(name, op, list(inputs), list(outputs), attrs, params)


def requant_16x8(p, kind) -> str:
    """The requant attr of a 16x8 node under profile p (module docstring)."""
    if p.requant in FLOAT_SCHEMES:
        return "float_rne"
    if kind == "dense" and p.fc_requant == "float_half_away":
        return "float_half_away"
    return "multiplier16"


def emit_16x8(w, n, op, x, out, tq_in, tq_out, weight, bias, geometry, act):
    """Emit the 16x8 node of float node n (`lower_layers.emit_weighted`'s arguments; op
    int_conv2d or int_dense) through w.b."""
    codes, _, s_w, per_channel = weight
    kind = "conv" if op == "int_conv2d" else "dense"
    if kind == "dense" and not per_channel and codes.shape[0] > 1:
        raise FixedPointError(f"{where_of(n)}: an int16 fully connected layer with per-tensor "
                              "weights; refq lowers TFLite's 16x8 FULLY_CONNECTED with "
                              "per-channel weights (the converter's form): quantize with "
                              "per-channel weights (`refq quantize --per-channel`)")
    s_w = np.broadcast_to(np.asarray(s_w, dtype=np.float32), (codes.shape[0],))
    try:
        real = w.p.real_multiplier(tq_in.scale, s_w, tq_out.scale, kind="conv")
    except FixedPointError as e:
        raise FixedPointError(f"{where_of(n)}: {e}") from None
    requant = requant_16x8(w.p, kind)
    node = node_16x8(n.name, kind, [x], [out], codes, bias, real, act, geometry, requant)
    w.b.emit(node.name, node.op, node.inputs, out, node.attrs, node.params, tq=tq_out,
             requants=2 if requant == "multiplier16" else 1)


def _natural_q15(op, tq_out):
    """The encoding LiteRT's int16 kernel of `op` writes: Q0.15 for sigmoid, tanh and softmax,
    the output's own for leaky_relu."""
    from .lower_encodings import TensorQ

    if op == "leaky_relu":
        return tq_out
    return TensorQ(_Q15, 0, -32768, 32767, "int16")


def lower_act16(w, n, lut_table) -> bool:
    """Lower int16 sigmoid / tanh / leaky_relu / softmax node n under the "tflite" family (module
    docstring) and return True; False when n is not one (another lowering applies). The profile's
    float schemes (the faithful simulation: logistic_tanh / softmax "float" or "float32") give
    the float table / float softmax into the same encodings. lut_table: the lowering's table
    builder (`lower_activations.lut_table`), which builds the faithful simulation's float table."""
    if w.int16 != "tflite" or n.op not in INT16_ACTIVATIONS:
        return False
    q_read = w.src.input_q.get((n.name, 0)) or w.tq.get(n.inputs[0])
    if q_read is None or q_read.dtype != "int16":
        return False
    x, q_in = w.read(n, 0)
    p, b = w.p, w.b
    q_out = w.tq[n.outputs[0]]
    natural = _natural_q15(n.op, q_out)
    if natural != q_out:
        b.notes.append(f"{n.name}: TFLite's int16 {n.op} writes scale 2^-15, zero point 0; the "
                       f"output encoding (scale {q_out.scale:.6g}, zero point {q_out.zero_point}) "
                       "differs, so an int_requantize follows it")
    where = where_of(n)
    if n.op == "softmax":
        attrs = {"input_zp": 0, "output_zp": 0, "act_min": natural.qmin, "act_max": natural.qmax}
        if p.softmax in ("float", "float32"):
            attrs.update(softmax=p.softmax, input_scale=q_in.scale, output_scale=natural.scale)
        else:
            from .kernels.act16 import softmax16_params

            single = p.requant == "single_round"
            try:
                attrs.update(softmax16_params(q_in.scale, single_rounding=single))
            except FixedPointError as e:
                raise FixedPointError(f"{where}: {e}") from None
            attrs["softmax"] = "tflite16_single" if single else "tflite16"
        w.finish(n, natural, lambda name, out, tq: b.emit(name, "int_softmax", [x], out, attrs,
                                                          {}, tq=tq, requants=1))
        return True
    if p.logistic_tanh in ("float", "float32"):
        table = lut_table(n.op, n.attrs, q_in, natural, p.logistic_tanh, where)
    else:
        from .kernels.lut import build_lut

        try:
            table = build_lut(n.op, q_in.scale, q_in.zero_point, natural.scale,
                              natural.zero_point, natural.qmin, natural.qmax, "tflite_int16",
                              input_range=(-32768, 32767), alpha=n.attrs.get("alpha"),
                              single_rounding=p.requant == "single_round")
        except FixedPointError as e:
            raise FixedPointError(f"{where}: {e}") from None
        table = np.asarray(table, dtype=np.int64).astype(np.int16)
    w.finish(n, natural, lambda name, out, tq: b.emit(
        name, "int_lut", [x], out, {"input_qmin": -32768}, {"table": table}, tq=tq, requants=1))
    return True
