"""Int16 activations under the "tosa" int16 kernel family (`Profile.int16_kernels` = "tosa"):
TOSA's 16x8 convolutions and the RESCALE the TFLite->TOSA legalizer puts after them.

Under the family "tosa" (profile tosa, and its integer-faithful simulation, `run.faithful_graph`):
  conv2d (and depthwise), dense / gemm, conv_transpose2d reading an int16 tensor
      -> int_conv2d_tosa16 / int_dense_tosa16 / int_conv_transpose2d_tosa16
         (`kernels.conv_tosa16`): int48 accumulator (every partial sum REQUIREd within int48),
         int48 bias round_half_even(b / (s_in·s_w[o])) (`BIAS_BITS`; the lowering refuses one
         that does not fit, naming the channel), then TOSA's scale16 RESCALE, single rounding,
         with the legalizer's multiplier (`rescale48.legalizer_scale16`: per channel the 32-bit
         encoding reduced to 16 bits, per tensor `tosa_scale16`) of M[o] = s_in·s_w[o]/s_out
         (float64), zero point 0, and the fused activation's CLAMP. Under a float-requantizing
         profile (the faithful simulation) the same node requantizes with "float_rne".
      Refused by name (FixedPointError): an int16 input or output with a zero point other than 0
      (CONV2D.tosac: input_zp = 0 unless in_t is i8; RESCALE.tosac: output_zp = 0 for a signed
      int16 output); an int16 input with an 8-bit output (the legalizer's isScale32 asks for a
      scale32 RESCALE of the int48 accumulator, which RESCALE.tosac's ERROR_IF(scale32 && in_t
      == i48) forbids); a weight zero point per output channel (TOSA's weight_zp is one value).
  conv2d / dense / gemm / conv_transpose2d with an 8-bit input and an int16 output
      -> their int8 nodes (int32 accumulator and bias) with scheme "tosa16" and the same
         legalizer multipliers: the legalizer decides scale16 by the output type alone.
Every other layer keeps the tosa profile's 8-bit forms. Sources and arithmetic:
`refq.fixedpoint.rescale48`.
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from . import lower_16x8
from .lower_encodings import where_of
from .requantize import FLOAT_SCHEMES
from .rescale48 import REQUANTIZATIONS, legalizer_scale16

__all__ = ["FAMILY", "BIAS_BITS", "OPS", "applies", "wide_bias_bits", "scale16_output",
           "emit_tosa16", "scale16_params"]

#: The `Profile.int16_kernels` value of this family.
FAMILY = "tosa"
#: The bias width of TOSA's 16x8 convolutions (out_t = i48).
BIAS_BITS = 48
#: The integer node of each 8-bit contraction when it reads int16 under this family.
OPS = {"int_conv2d": "int_conv2d_tosa16", "int_dense": "int_dense_tosa16",
       "int_conv_transpose2d": "int_conv_transpose2d_tosa16"}


def applies(w, tq_in) -> bool:
    """True when a weighted layer reading tq_in lowers to a TOSA 16x8 node in the walk w."""
    return w.int16 == FAMILY and tq_in.dtype == "int16"


def wide_bias_bits(w, tq_in):
    """The bias width of a weighted layer reading tq_in: BIAS_BITS for a TOSA 16x8 layer, the
    16x8 layers' (`lower_16x8.wide_bias_bits`) under the "tflite" family, else None."""
    return BIAS_BITS if applies(w, tq_in) else lower_16x8.wide_bias_bits(w, tq_in)


def scale16_output(w, n, tq_in, tq_out) -> bool:
    """True for an 8-bit-input layer n with an int16 output under this family (scale16 RESCALE
    of its int32 accumulator); FixedPointError when that output's zero point is not 0."""
    if not (w.int16 == FAMILY and tq_in.dtype != "int16" and tq_out.dtype == "int16"):
        return False
    _check_output_zp(n, tq_out)
    return True


def _check_output_zp(n, tq_out):
    if tq_out.zero_point != 0:
        raise FixedPointError(f"{where_of(n)}: int16 output with zero point {tq_out.zero_point}; "
                              "TOSA RESCALE's int16 output has zero point 0 (RESCALE.tosac "
                              "ERROR_IF): quantize the 16-bit activations symmetric")


def scale16_params(p, real, per_channel, where):
    """(scheme, {multiplier, shift, real_multiplier}, requantizations) of a scale16 RESCALE of
    real multipliers `real` under profile p: the legalizer's ("tosa16") or, for a profile that
    requantizes in floating point, "float_rne" with M."""
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    if p.requant in FLOAT_SCHEMES:
        return "float_rne", {"real_multiplier": real}, 1
    try:
        m, s = legalizer_scale16(real, per_channel)
    except FixedPointError as e:
        raise FixedPointError(f"{where}: {e}") from None
    return "tosa16", {"multiplier": m.astype(np.int32), "shift": s.astype(np.int32),
                      "real_multiplier": real}, REQUANTIZATIONS


def _check(n, tq_in, tq_out, weight_zp):
    where = where_of(n)
    if tq_in.zero_point != 0:
        raise FixedPointError(f"{where}: int16 input with zero point {tq_in.zero_point}; TOSA's "
                              "16x8 convolutions take input_zp 0 (CONV2D.tosac ERROR_IF): "
                              "quantize the 16-bit activations symmetric (`refq quantize "
                              "--config` with defaults.ops.is_symmetric \"True\")")
    if tq_out.dtype != "int16":
        raise FixedPointError(f"{where}: int16 input with a {tq_out.dtype} output; the TFLite->"
                              "TOSA legalizer rescales an 8-bit output with scale32, which "
                              "TOSA forbids on the int48 accumulator (RESCALE.tosac: "
                              "ERROR_IF(scale32 && in_t == i48)): quantize the layer's output "
                              "to 16 bits too")
    _check_output_zp(n, tq_out)
    if np.ndim(weight_zp):
        raise FixedPointError(f"{where}: a weight zero point per output channel; TOSA's weight_zp "
                              "is one value: quantize the weights symmetric or per tensor")


def emit_tosa16(w, n, op, x, out, tq_in, tq_out, weight, bias, geometry, act):
    """Emit the TOSA 16x8 node of float node n (`lower_layers.emit_weighted`'s arguments; op
    int_conv2d, int_dense or int_conv_transpose2d) through w.b (module docstring)."""
    codes, weight_zp, s_w, per_channel = weight
    _check(n, tq_in, tq_out, weight_zp)
    where = f"node '{n.name}' ({n.op})"
    p = w.p
    s_w = np.broadcast_to(np.asarray(s_w, dtype=np.float32), (codes.shape[0],))
    kind = "fc_per_tensor" if op == "int_dense" and not per_channel else "conv"
    try:
        real = p.real_multiplier(tq_in.scale, s_w, tq_out.scale, kind=kind)
    except FixedPointError as e:
        raise FixedPointError(f"{where}: {e}") from None
    if not per_channel:
        real = real[:1]
    scheme, params, requants = scale16_params(p, real, per_channel, where)
    params = {"weight": codes, **params}
    if bias is not None:
        params["bias"] = np.asarray(bias).astype(np.int64)
    attrs = dict(geometry)
    attrs.update({"weight_zp": int(weight_zp), "act_min": int(act[0]), "act_max": int(act[1]),
                  "scheme": scheme, "accumulator_bits": BIAS_BITS})
    w.b.emit(n.name, OPS[op], [x], out, attrs, params, tq=tq_out, requants=requants)
