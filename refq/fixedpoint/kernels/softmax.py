"""int_softmax: softmax over the last axis on the integer grid ("tflite" fixed point, "tflite16"
int16 tables, "ort" lookup table, "float", "float32").

Sections (§n) refer to ../shared/reference/fixedpoint.md.
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import FixedPointError, ShapeError
from ...layers.base import Attr, Op
from ..multiplier import quantize_multiplier
from ..requantize import quantize
from ..rounding import INT32_MAX, round_shift_half_away, srdhm, wrap
from . import gemmlowp
from .common import ACT_ATTRS, ACT_ZP_RANGE, check_act, check_zp, int_input

SOFTMAX_MODES = ("tflite", "ort", "float", "float32", "tflite16", "tflite16_single")
_INT16_MODES = ("tflite16", "tflite16_single")
SCALED_DIFF_INTEGER_BITS = 5     # kScaledDiffIntegerBits of reference/softmax.h
ACCUMULATION_INTEGER_BITS = 12   # kAccumulationIntegerBits
ORT_RESERVE = 5.0                # reserve_bit of onnxruntime's float table (qlinear_softmax.cc)
_FLT_MAX = np.float32(np.finfo(np.float32).max)


def tflite_softmax_params(input_scale, beta: float = 1.0, *, single_rounding: bool = False):
    """The "tflite" attributes from the input scale (TFLite `PreprocessSoftmaxScaling` and
    `CalculateInputRadius`; §7), all in double:
    real = min(beta·float32(s_in)·2^26, 2^31 − 1 (2^30 − 1 in the single-rounding build));
    (input_multiplier, input_left_shift) = QuantizeMultiplier(real) (GreaterThanOne: shift >= 0);
    diff_min = −floor(31·2^26 / 2^input_left_shift).
    Returns {"input_multiplier", "input_left_shift", "diff_min"} as Python ints.
    Errors: FixedPointError when real < 1 (the multiplier would need a right shift)."""
    cap = float((1 << 30) - 1 if single_rounding else (1 << 31) - 1)
    real = min(float(beta) * float(np.float32(input_scale)) * float(1 << 26), cap)
    m, e = (int(v) for v in quantize_multiplier(real))
    if e < 0 or m == 0:
        raise FixedPointError(f"tflite_softmax_params: beta·s_in·2^26 = {real} < 1; TFLite's "
                              "QuantizeMultiplierGreaterThanOne needs a multiplier >= 1")
    radius = int(np.floor(31.0 * float(1 << 26) / float(1 << e)))
    return {"input_multiplier": m, "input_left_shift": e, "diff_min": -radius}


def ort_softmax_table(input_scale, length: int) -> np.ndarray:
    """onnxruntime's QLinearSoftmax table of exponentials (`QlinearBuildLookupTableUint32` in
    contrib_ops/cpu/quantization/qlinear_softmax.cc, float table), float32 [256]:
        s = float32(input_scale) (as a double), D = length (the softmax axis length),
        L = logf(fl32(FLT_MAX / fl32(D)))     (single-precision log, as float32),
        b = max(0, L − 5) / s                 (double),
        T[k] = fl32(exp((k − 255 + b)·s))     (double exp, k = 0..255).
    T[255 + d] is e^{d·s} scaled by e^{max(0, L − 5)} ≈ FLT_MAX/(D·e^5), so that a sum of D
    entries stays finite. logf is taken as the correctly rounded float32 logarithm; for all
    D < 2^20 it equals glibc 2.36's logf except at 22 lengths, the smallest 60594 (measured),
    where glibc returns the other float32 neighbour. exp is the C library's (`math.exp`)."""
    s = float(np.float32(input_scale))
    m = float(np.float32(_FLT_MAX / np.float32(length)))
    shift = max(0.0, float(np.float32(math.log(m))) - ORT_RESERVE) / s
    return np.array([math.exp((k - 255.0 + shift) * s) for k in range(256)]).astype(np.float32)


def ort_softmax_output_factor(output_scale) -> float:
    """floor(fl32(1 / fl32(output_scale))) (float32 division, then floor): the integer that
    QLinearSoftmax multiplies probabilities by instead of dividing by the output scale (for
    s_out = fl32(1/255) it is 254, not 255)."""
    with np.errstate(over="ignore", divide="ignore"):
        return float(np.floor(np.float32(1.0) / np.float32(output_scale)))


def _softmax_ort(x, attrs):
    """onnxruntime's QLinearSoftmax on int64 x (last axis; see `_softmax_forward`)."""
    d = x - np.max(x, axis=-1, keepdims=True)
    if np.any(d < -255):
        raise FixedPointError("int_softmax: 'ort' reads 8-bit input codes (a row spans more "
                              "than 255 codes); lower the softmax from an int8 or uint8 input")
    e = ort_softmax_table(attrs["input_scale"], x.shape[-1])[255 + d]       # float32
    total = np.add.accumulate(e, axis=-1, dtype=np.float32)[..., -1:]       # sequential
    g = ort_softmax_output_factor(attrs["output_scale"])
    q = np.rint(e.astype(np.float64) * g / total.astype(np.float64))       # double, half even
    return np.clip(q.astype(np.int64) + attrs["output_zp"], attrs["act_min"], attrs["act_max"])


def _softmax_shape(in_shapes, attrs, params):
    shape = tuple(in_shapes[0])
    what = "int_softmax"
    if len(shape) < 2:
        raise ShapeError(f"{what} expects a rank >= 2 input (batch, ..., classes), got "
                         f"{list(shape)}")
    check_zp(attrs["input_zp"], f"{what}: input_zp", ACT_ZP_RANGE)
    dtype = check_act(attrs, what)
    if attrs["softmax"] == "tflite":
        if not (0 < attrs["input_multiplier"] <= INT32_MAX and 0 <= attrs["input_left_shift"] <= 31
                and attrs["diff_min"] <= 0):
            raise FixedPointError(
                f"{what}: 'tflite' needs 0 < input_multiplier <= 2^31 − 1, 0 <= input_left_shift "
                f"<= 31 and diff_min <= 0, got {attrs['input_multiplier']}, "
                f"{attrs['input_left_shift']}, {attrs['diff_min']} (see tflite_softmax_params)")
        type_min = {"int8": -128, "uint8": 0}.get(dtype)
        if type_min is None or attrs["output_zp"] != type_min:
            raise FixedPointError(f"{what}: 'tflite' produces 8-bit outputs with scale 1/256 and "
                                  "the zero point at the type minimum (int8: −128, uint8: 0); got "
                                  f"output_zp {attrs['output_zp']} with act range "
                                  f"[{attrs['act_min']}, {attrs['act_max']}]")
    elif attrs["softmax"] in _INT16_MODES:
        if not (0 < attrs["input_multiplier"] <= INT32_MAX and
                -31 <= attrs["input_left_shift"] <= 30):
            raise FixedPointError(
                f"{what}: '{attrs['softmax']}' needs 0 < input_multiplier <= 2^31 − 1 and "
                f"-31 <= input_left_shift <= 30, got {attrs['input_multiplier']}, "
                f"{attrs['input_left_shift']} (see act16.softmax16_params)")
        if dtype != "int16" or attrs["output_zp"] != 0 or attrs["input_zp"] != 0:
            raise FixedPointError(f"{what}: '{attrs['softmax']}' (TFLite's int16 SOFTMAX) takes "
                                  "int16 codes with zero point 0 and writes Q0.15 (zero point "
                                  f"0); got input_zp {attrs['input_zp']}, output_zp "
                                  f"{attrs['output_zp']}, act range [{attrs['act_min']}, "
                                  f"{attrs['act_max']}]")
    else:
        for name in ("input_scale", "output_scale"):
            s = attrs[name]
            if not (np.isfinite(s) and s > 0):
                raise FixedPointError(f"{what}: '{attrs['softmax']}' needs a finite positive "
                                      f"{name}, got {s}")
    if attrs["softmax"] == "ort":
        if dtype not in ("int8", "uint8"):
            raise FixedPointError(f"{what}: 'ort' (onnxruntime QLinearSoftmax) produces int8 or "
                                  f"uint8 codes; [act_min, act_max] = [{attrs['act_min']}, "
                                  f"{attrs['act_max']}] is {dtype}")
        if not (np.float32(attrs["input_scale"]) > 0
                and np.isfinite(ort_softmax_output_factor(attrs["output_scale"]))):
            raise FixedPointError(f"{what}: 'ort' needs float32 scales with a finite "
                                  f"1/output_scale and a positive input_scale, got "
                                  f"{attrs['input_scale']}, {attrs['output_scale']}")
    return shape


def _softmax_tflite(x, attrs):
    """The TFLite/TFLM reference fixed-point softmax on int64 x (last axis)."""
    d = x - np.max(x, axis=-1, keepdims=True)
    keep = d >= attrs["diff_min"]
    left = attrs["input_left_shift"]
    # MultiplyByQuantizedMultiplierGreaterThanOne: srdhm(x·2^left (int32), multiplier)
    scaled = srdhm(wrap(np.where(keep, d, 0) << left, 32), attrs["input_multiplier"])
    e = gemmlowp.exp_on_negative_values(scaled, SCALED_DIFF_INTEGER_BITS)       # Q0.31
    terms = np.where(keep, round_shift_half_away(e, ACCUMULATION_INTEGER_BITS), 0)
    total = wrap(np.sum(terms, axis=-1, keepdims=True), 32)                      # Q12.19, > 0
    if np.any(total <= 0):
        raise FixedPointError("int_softmax: the int32 sum of exponentials overflowed (a row of "
                              "more than 4096 near-maximal entries)")
    headroom = 32 - np.frexp(total.astype(np.float64))[1].astype(np.int64)  # clz32, exact < 2^53
    bits_over_unit = ACCUMULATION_INTEGER_BITS - headroom
    shifted = (total << headroom) - (1 << 31)                                    # in [0, 2^31)
    scale = gemmlowp.one_over_one_plus_x_for_x_in_0_1(shifted)
    out = round_shift_half_away(srdhm(scale, e), bits_over_unit + 31 - 8) + attrs["output_zp"]
    out = np.clip(out, attrs["act_min"], attrs["act_max"])
    return np.where(keep, out, np.clip(attrs["output_zp"], attrs["act_min"], attrs["act_max"]))


def _softmax_forward(inputs, params, attrs):
    """int_softmax — softmax over the last axis of an integer tensor.

    Definition
        softmax "tflite" (TFLite BUILTIN_REF / TFLM / CMSIS-NN `reference/softmax.h`; §7), per row,
        with input_multiplier, input_left_shift, diff_min from `tflite_softmax_params` (int attrs):
            d = x − max(row); entries with d < diff_min output output_zp;
            s = srdhm(d·2^input_left_shift, input_multiplier)      (Q5.26, a scaled difference)
            e = exp_on_negative_values(s) (Q0.31, `gemmlowp`), sum = Σ RDBPOT(e, 12) (Q12.19,
            int32; over the kept entries)
            h = clz32(sum), b = 12 − h, r = one_over_one_plus_x_for_x_in_0_1(sum·2^h − 2^31)
            y = clamp(RDBPOT(srdhm(r, e), b + 31 − 8) + output_zp, act_min, act_max)
          Output scale 1/256 with output_zp the type minimum (int8: −128, uint8: 0) is required
          (checked on output_zp and the act range; the scale is the lowering's to ensure).
          input_zp is not used (differences cancel it). A sum beyond int32 (a row of more than
          2^12 near-maximal entries) raises FixedPointError; final shifts beyond 31 (b > 8, which
          gemmlowp asserts against) are computed exactly.
        softmax "tflite16" / "tflite16_single" (LiteRT's int16 SOFTMAX,
          `reference_ops::SoftmaxInt16`; double / single rounding builds): `act16.softmax16` with
          input_multiplier, input_left_shift from `act16.softmax16_params`: the difference to the
          row maximum scaled by MultiplyByQuantizedMultiplier so that [−65535, 0] spans [−10, 0],
          exp by the interpolated 513-entry table, the sum's reciprocal by the 1/(1 + x) table
          after normalising it, y = clamp(RDBPOT(e·r, 31 − clz(sum)), 0, 32767), then the act
          range. Int16 codes, zero points 0, output Q0.15 (scale 2^−15).
        softmax "ort" (onnxruntime's com.microsoft QLinearSoftmax, `qlinear_softmax.cc`, into
          which onnxruntime fuses DequantizeLinear -> Softmax -> QuantizeLinear of one 8-bit
          type), per row of length D, with T = `ort_softmax_table(input_scale, D)` (float32) and
          g = `ort_softmax_output_factor(output_scale)` = floor(fl32(1/s_out)):
            e_j = T[255 + x_j − max(row)]                               (float32)
            S = fl32(…fl32(fl32(e_0 + e_1) + e_2)… + e_{D−1})           (sequential float32)
            y_j = clamp(rint(e_j·g / S) + output_zp, act_min, act_max)  (e_j·g exact in double,
              one double division, round half to even)
          input_zp is not used. An axis of length 1 gives clamp(g + output_zp). Measured
          against onnxruntime 1.32.0 (tests/data/ort/softmax): the quotient is a double one (the
          float32 form fl32(fl32(e_j·g)/S) of older sources misses codes and overflows at
          D = 1), and int8 codes saturate at 127 (the kernel before microsoft/onnxruntime#29728
          wrapped them to −128).
        softmax "float" (ONNX: float Softmax inside QDQ): x̂ = (x − input_zp)·input_scale in
          float64, p = exp(x̂ − max x̂) / Σ exp(x̂ − max x̂) (float64),
          y = clamp(rint(p / output_scale) + output_zp, act_min, act_max) (half to even,
          `quantize` in float64; scales are float attrs).
        softmax "float32" (the ONNX spec: DequantizeLinear -> float32 Softmax -> QuantizeLinear,
          as `onnx.reference` evaluates them): d = fl32(fl32(x − input_zp)·input_scale),
          t = d − max d, e = exp(t), p = e / Σ e (float32; the sum as NumPy reduces the
          contiguous last axis), y = clamp(rint(fl32(p / output_scale)) + output_zp).
    Integer semantics
        "tflite" is bit-exact integer arithmetic (int64 arrays holding int32 values, the gemmlowp
        routines of `gemmlowp.py` on the primitives srdhm/RDBPOT; rounding as listed); "ort"
        rounds as listed (float32 table and sum, double quotient); "float" rounds once, half
        to even, after float64 math.
    Errors
        ShapeError for rank < 2; FixedPointError for an int32 overflow of sum, invalid tflite
        attributes (multiplier <= 0, shift outside [0, 31], diff_min > 0), a tflite output
        zero point other than the 8-bit type minimum, non-positive float scales, an "ort"
        output that is not 8-bit or an input row spanning more than 255 codes, a "tflite16"
        node that is not int16 with zero points 0 (or a multiplier or shift out of range),
        act_min > act_max or zero points outside their dtype.
    """
    x = int_input(inputs[0], "int_softmax input")
    _softmax_shape([x.shape], attrs, params)
    if x.size == 0:
        return x.copy()
    if attrs["softmax"] == "tflite":
        return _softmax_tflite(x, attrs)
    if attrs["softmax"] == "ort":
        return _softmax_ort(x, attrs)
    if attrs["softmax"] in _INT16_MODES:
        from .act16 import softmax16

        y = softmax16(x, attrs["input_multiplier"], attrs["input_left_shift"],
                      single_rounding=attrs["softmax"] == "tflite16_single")
        return np.clip(y, attrs["act_min"], attrs["act_max"])
    if attrs["softmax"] == "float32":
        from .qdq import dequantize32, quantize32

        d = dequantize32(x, attrs["input_scale"], attrs["input_zp"])
        e = np.exp(d - d.max(axis=-1, keepdims=True))
        e /= e.sum(axis=-1, keepdims=True)
        return np.clip(quantize32(e, attrs["output_scale"], attrs["output_zp"], attrs["act_min"],
                                  attrs["act_max"]), attrs["act_min"], attrs["act_max"])
    v = (x - attrs["input_zp"]).astype(np.float64) * np.float64(attrs["input_scale"])
    e = np.exp(v - np.max(v, axis=-1, keepdims=True))
    p = e / np.sum(e, axis=-1, keepdims=True)
    return quantize(p, attrs["output_scale"], attrs["output_zp"], qmin=attrs["act_min"],
                    qmax=attrs["act_max"], rounding="half_even", precision="float64")


OPS = [
    Op("int_softmax", _softmax_forward, _softmax_shape,
       attrs={"input_zp": Attr("int", 0), "output_zp": Attr("int", 0), **ACT_ATTRS,
              "softmax": Attr("str", choices=SOFTMAX_MODES),
              "input_multiplier": Attr("int", 0), "input_left_shift": Attr("int", 0),
              "diff_min": Attr("int", 0), "input_scale": Attr("float", 0.0),
              "output_scale": Attr("float", 0.0)}),
]
