"""Requantization (int32 accumulator -> output integer), quantize (float -> int) and activation
clamp bounds, per target scheme. Sections (§n) refer to ../shared/reference/fixedpoint.md.

Per-channel parameters broadcast by NumPy rules: a multiplier/shift of shape (C,) applies along the
last axis, the channel axis of NHWC activations and of [batch, out] dense outputs.

The zero point of the output is added after rounding by every integer scheme (TFLite, TOSA,
CMSIS-NN: round then +zp) and by onnxruntime; the ONNX reference evaluator adds it before rounding
(QLinearConv/QLinearMatMul: R = acc·M + zp, then round half to even; §8.2). Under half-to-even
rounding the two orders differ on ties whenever zp is odd (x.5 + 1 rounds to the other parity), so
`requantize` takes the order as the `zp_before_round` parameter (float schemes only).

The functions below check the preconditions (from the min and max of their operands) and hand the
arithmetic to `scaling`, which evaluates each scheme in few fused int64 passes, block by block; the
values are those of the definitions given here.
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from .multiplier import round_half_away_float
from .rounding import INT32_MAX, INT32_MIN, _as_int64, _bounds, _check_range, _out, _raise_first
from .scaling import float_plan, run_plan, tflite_plan, tosa16_plan, tosa32_plan

__all__ = [
    "REQUANT_SCHEMES", "INTEGER_SCHEMES", "FLOAT_SCHEMES", "ACTIVATIONS",
    "multiply_by_quantized_multiplier", "apply_scale_32", "apply_scale_16", "float_scale_round",
    "requantize", "requantize_bounded", "quantize", "activation_range",
]

INTEGER_SCHEMES = ("tflite_double", "single_round", "tosa_single", "tosa_double", "tosa16")
FLOAT_SCHEMES = ("float_rne", "float32_rne", "float_half_away")
#: Every scheme `requantize` accepts.
REQUANT_SCHEMES = INTEGER_SCHEMES + FLOAT_SCHEMES
#: The fused activations of `activation_range` (TFLite `TfLiteFusedActivation` names).
ACTIVATIONS = ("none", "relu", "relu6", "relu_n1_to_1")

_INT48 = (-(1 << 47), (1 << 47) - 1)


def _int32(x, name: str, why: str) -> np.ndarray:
    a = _as_int64(x, name)
    _check_range(a, INT32_MIN, INT32_MAX, name, why)
    return a


def _tflite_params(multiplier, shift):
    m = _as_int64(multiplier, "multiplier")
    _check_range(m, 0, INT32_MAX, "multiplier", "a Q31 multiplier is a non-negative int32")
    s = _as_int64(shift, "shift")
    _check_range(s, -31, 30, "shift", "TFLite shifts lie in [-31, 30]; larger multipliers are "
                 "not representable")
    return m, s


def _tosa32_params(v, bounds, multiplier, shift):
    """Check apply_scale_32's multiplier, shift and REQUIRE on int32 `v` (within `bounds`)."""
    m = _as_int64(multiplier, "multiplier")
    _check_range(m, 0, INT32_MAX, "multiplier", "TOSA scale32 multipliers are non-negative int32")
    s = _as_int64(shift, "shift")
    _check_range(s, 2, 62, "shift", "TOSA RESCALE requires 2 <= shift <= 62")
    half = 1 << (int(s.min()) - 1) if s.size else 1 << 61
    if bounds[0] < -half or bounds[1] >= half:  # else proven for every channel's shift
        vb, sb = np.broadcast_arrays(v, s)
        h = np.left_shift(np.int64(1), sb - 1)
        _raise_first((vb < -h) | (vb >= h), vb, "value",
                     "satisfy -2^(shift-1) <= value < 2^(shift-1) (a TOSA REQUIRE of "
                     "apply_scale_32)")
    return m, s


def _tosa16_params(multiplier, shift):
    m = _as_int64(multiplier, "multiplier")
    _check_range(m, 0, (1 << 15) - 1, "multiplier", "TOSA scale16 multipliers are int16 >= 0")
    s = _as_int64(shift, "shift")
    _check_range(s, 2, 62, "shift", "TOSA RESCALE requires 2 <= shift <= 62")
    return m, s


def multiply_by_quantized_multiplier(x, multiplier, shift, *, single_rounding: bool = False):
    """TFLite `MultiplyByQuantizedMultiplier(int32 x, M, shift)` (common.cc; §2.2, §2.3):
    ≈ x·M·2^(shift − 31) as int32, shift signed (positive = left).

    Double rounding (default build, `TFLITE_SINGLE_ROUNDING` 0; also TFLM, CMSIS-NN
    `arm_nn_requantize`): left = max(shift, 0), right = max(−shift, 0);
    y = srdhm(wrap32(x·2^left), M) (ties toward +inf at 2^31), result
    round_shift_half_away(y, right) (ties away from zero). The left shift wraps in int32 as the C
    kernel's `x * (1 << left)` does; no other saturation but SRDHM's INT32_MIN² case.
    Single rounding (`single_rounding=True`; TFLITE_SINGLE_ROUNDING=1, ruy, CMSIS-NN with
    CMSIS_NN_USE_SINGLE_ROUNDING): total = 31 − shift, result floor((x·M + 2^(total−1)) / 2^total)
    (one rounding, ties toward +inf). TFLite DCHECKs that the result fits int32; here a result
    outside int32 raises FixedPointError.
    Preconditions: x int32, 0 ≤ M ≤ 2^31 − 1, −31 ≤ shift ≤ 30 (1 ≤ total ≤ 62).
    Exactness: |x·2^left| ≤ 2^61 before the wrap; |x·M| < 2^62 and 2^(total−1) ≤ 2^61, so nothing
    leaves int64 (the half-up shift never adds near INT64_MAX anyway).
    """
    x = _as_int64(x, "x")
    b = _check_range(x, INT32_MIN, INT32_MAX, "x",
                     "MultiplyByQuantizedMultiplier takes an int32 accumulator")
    m, s = _tflite_params(multiplier, shift)
    return run_plan(tflite_plan(m, s, b, single_rounding), x)


def apply_scale_32(value, multiplier, shift, *, double_round: bool):
    """TOSA `apply_scale_32` (pseudocode/library/scale_helpers.tosac; §2.6): value·m·2^(−shift).

    round = 2^(shift−1); with `double_round` and shift > 31, round += 2^30 if value ≥ 0 else
    −2^30; result (value·m + round) >> shift. SINGLE_ROUND (double_round False) is round half toward
    +inf, equal to TFLite single rounding with shift = 31 − tfl_shift; DOUBLE_ROUND is bit-identical
    to TFLite double rounding for tfl_shift ≤ 0 (§2.6; tested).
    Preconditions (the spec's REQUIREs, checked): value int32, 0 ≤ m ≤ 2^31 − 1, 2 ≤ shift ≤ 62,
    −2^(shift−1) ≤ value < 2^(shift−1).
    Exactness: |value·m| < 2^31·2^31 = 2^62 and |round| ≤ 2^61 + 2^30, so the sum is below 2^63.
    The result fits int32: |value·m| < 2^(shift−1)·2^31, so |result| ≤ 2^30 + 1.
    """
    v = _as_int64(value, "value")
    b = _check_range(v, INT32_MIN, INT32_MAX, "value", "apply_scale_32 takes an int32 value")
    m, s = _tosa32_params(v, b, multiplier, shift)
    return run_plan(tosa32_plan(m, s, double_round), v)


def apply_scale_16(value, multiplier, shift):
    """TOSA `apply_scale_16` (§2.6): (value·m + 2^(shift−1)) >> shift, single rounding (ties toward
    +inf). Preconditions: value int48, 0 ≤ m ≤ 2^15 − 1, 2 ≤ shift ≤ 62, result fits int32 (the
    spec's REQUIRE; checked). Exactness: |value·m| < 2^47·2^15 = 2^62."""
    v = _as_int64(value, "value")
    b = _check_range(v, *_INT48, "value", "apply_scale_16 takes a 48-bit value")
    m, s = _tosa16_params(multiplier, shift)
    return run_plan(tosa16_plan(m, s, b), v)


def float_scale_round(acc, multiplier, *, precision: str = "float64", rounding: str = "half_even",
                      offset=0):
    """round(acc·M + offset) computed in floating point, as an int64 array.

    precision "float64": float64(acc)·float64(M) (exact acc for |acc| ≤ 2^53; one IEEE rounding of
    the product), then + offset in float64 — the ONNX reference evaluator (numpy; §8.2) and the
    TFLite reference FC (§2.5). precision "float32": float32(acc) (acc -> float64 exactly, then one
    round-to-nearest-even to float32, = cvtepi32_ps; inexact for |acc| > 2^24)·float32(M) in
    float32 — onnxruntime `MlasRequantizeOutput` (§8.2). rounding "half_even" (np.rint, cvtps2dq)
    or "half_away" (C `round`, TFLite). `offset` (the zero point when it is added before rounding)
    is added in the same precision. Errors: a non-finite result or one beyond ±2^62.
    """
    a = _as_int64(acc, "acc")
    return run_plan(float_plan(multiplier, precision, rounding, offset, _bounds(a)), a)


def requantize(acc, multiplier, shift, scheme: str, *, zero_point, act_min, act_max,
               zp_before_round: bool = False):
    """Scale an accumulator to the output grid:
    y = clamp(scaled(acc) + zero_point, act_min, act_max).

    `scheme` ∈ REQUANT_SCHEMES (multiplier/shift as `derive_multiplier` returns them):
      "tflite_double"   `multiply_by_quantized_multiplier` double rounding (TFLite reference
                        kernels default build, TFLM, CMSIS-NN; §2.2). TFLite shift (+ = left).
      "single_round"    the same with single rounding (TFLITE_SINGLE_ROUNDING=1, ruy; §2.3).
      "tosa_double"     `apply_scale_32(..., double_round=True)`, TOSA shift (right; §2.6).
      "tosa_single"     `apply_scale_32(..., double_round=False)` (§2.6).
      "tosa16"          `apply_scale_16` (48-bit accumulators; §2.6).
      "float_rne"       float64(acc)·M rounded half to even (ONNX reference; §8.2).
      "float32_rne"     float32(acc)·float32(M) in float32, rounded half to even (onnxruntime;
                        §8.2).
      "float_half_away" float64(acc)·M rounded half away from zero, then cast to int32 (TFLite
                        reference FullyConnected, LiteRT/TF ≥ 2.20 `kReference`; §2.5).
    For float schemes `shift` must be None or 0 and `multiplier` is the real M.
    zp_before_round: float schemes only; True adds zero_point before rounding (ONNX reference
    QLinearConv/QLinearMatMul, §8.2), False after (every other target). Integer schemes always add
    it after rounding (TOSA: int32 `apply_add_s`; TFLite: `acc += output_offset`).
    The zero-point add and the clamp are done in int64: no int32 wrap can occur (the C add could
    only overflow for results within |zp| of INT32 limits, which the clamp maps to act_min/act_max).
    The clamp to [act_min, act_max] (from `activation_range`) is an int compare after the add
    (TFLite, TOSA CLAMP) or a float clip at integer bounds before rounding (ONNX, onnxruntime);
    the two agree because rounding is monotone and fixes integers.
    Preconditions: acc int32 (int48 for "tosa16"); zero_point int32; act_min ≤ act_max; those of the
    scheme's primitive. Returns int64 values in [act_min, act_max].
    """
    if scheme not in REQUANT_SCHEMES:
        raise FixedPointError(f"unknown requantization scheme {scheme!r}; choose one of "
                              f"{REQUANT_SCHEMES}")
    return requantize_bounded(_as_int64(acc, "acc"), None, multiplier, shift, scheme,
                              zero_point=zero_point, act_min=act_min, act_max=act_max,
                              zp_before_round=zp_before_round)


def requantize_bounded(acc, bounds, multiplier, shift, scheme: str, *, zero_point, act_min,
                       act_max, zp_before_round: bool = False, overwrite: bool = False):
    """`requantize` for the integer kernels, which often know bounds of their accumulator.

    acc: an int64 or int32 array, or a float64 (float32) array holding integers of magnitude
    <= 2^53 (2^24) exactly, as the accumulation of `kernels.conv` produces them; bounds: (lo, hi) with
    lo <= acc <= hi for every element (possibly loose), or None. Same preconditions, checks and
    results as `requantize`: bounds only let a check pass without reading `acc` again.
    overwrite=True lets the result reuse acc's buffer (a temporary of the caller; acc is then
    lost).
    """
    if scheme not in REQUANT_SCHEMES:
        raise FixedPointError(f"unknown requantization scheme {scheme!r}; choose one of "
                              f"{REQUANT_SCHEMES}")
    a = np.asarray(acc)
    if scheme == "tosa16":
        b = _check_range(a, *_INT48, "acc", "TOSA 16-bit rescale takes a 48-bit accumulator",
                         bounds)
    else:
        b = _check_range(a, INT32_MIN, INT32_MAX, "acc",
                         f"requantize scheme {scheme!r} takes an int32 accumulator; apply the "
                         "profile's overflow policy first", bounds)
    zp = _int32(zero_point, "zero_point", "zero points are int32")
    lo, hi = int(act_min), int(act_max)
    if lo > hi:
        raise FixedPointError(f"act_min {lo} > act_max {hi}")
    if scheme in INTEGER_SCHEMES:
        if zp_before_round:
            raise FixedPointError(f"zp_before_round applies to float schemes only, not {scheme!r}: "
                                  "integer targets add the zero point after rounding")
        if scheme in ("tflite_double", "single_round"):
            plan = tflite_plan(*_tflite_params(multiplier, shift), b, scheme == "single_round",
                               zp)
        elif scheme == "tosa16":
            plan = tosa16_plan(*_tosa16_params(multiplier, shift), b, zp)
        else:
            plan = tosa32_plan(*_tosa32_params(a, b, multiplier, shift), scheme == "tosa_double",
                               zp)
        return run_plan(plan, a, act_min=lo, act_max=hi, overwrite=overwrite)
    if shift is not None and np.any(np.asarray(shift) != 0):
        raise FixedPointError(f"scheme {scheme!r} applies the real multiplier in floating point; "
                              "pass shift=None (or 0)")
    precision = "float32" if scheme == "float32_rne" else "float64"
    rounding = "half_away" if scheme == "float_half_away" else "half_even"
    plan = float_plan(multiplier, precision, rounding, zp if zp_before_round else None, b,
                      int32=scheme == "float_half_away", zp=None if zp_before_round else zp)
    return run_plan(plan, a, act_min=lo, act_max=hi, overwrite=overwrite)


def quantize(x, scale, zero_point, *, qmin: int, qmax: int, rounding: str,
             precision: str = "float32"):
    """q = clamp(round(x / scale) + zero_point, qmin, qmax) as int64.

    rounding "half_away": TFLite QUANTIZE `AffineQuantize`, `(int32) roundf(x / scale) + zp` (§8.1).
    rounding "half_even": ONNX QuantizeLinear (spec and reference `np.rint`), onnxruntime MLAS, TOSA
    CAST (§8.1). The division is a true division (not a multiply by 1/scale) in `precision`
    ("float32": x and scale are rounded to float32 first, as all these targets store them; or
    "float64"). Out-of-range values saturate (the clip is done in float at the integer bounds
    qmin − zp, qmax − zp before rounding, as onnxruntime does; equal to clamping after rounding).
    scale and zero_point broadcast (per-channel). Errors: NaN in x; scale ≤ 0 or not finite.
    """
    if precision not in ("float32", "float64"):
        raise FixedPointError(f"precision must be 'float32' or 'float64', got {precision!r}")
    if rounding not in ("half_away", "half_even"):
        raise FixedPointError(f"rounding must be 'half_away' or 'half_even', got {rounding!r}")
    xs = np.asarray(x, dtype=precision)
    s = np.asarray(scale, dtype=precision)
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise FixedPointError(f"quantize: scale must be finite and > 0, got {scale!r}")
    if np.any(np.isnan(xs)):
        raise FixedPointError("quantize: x contains NaN")
    zp = _int32(zero_point, "zero_point", "zero points are int32")
    qmin, qmax = int(qmin), int(qmax)
    if qmin > qmax:
        raise FixedPointError(f"qmin {qmin} > qmax {qmax}")
    v = np.clip(xs / s, (qmin - zp).astype(precision), (qmax - zp).astype(precision))
    r = np.rint(v) if rounding == "half_even" else round_half_away_float(v)
    return _out(r.astype(np.int64) + zp)


def activation_range(activation: str, scale, zero_point, *, qmin: int, qmax: int,
                     rounding: str = "half_away"):
    """(act_min, act_max) of a fused activation on the output grid, TFLite
    `CalculateActivationRangeQuantized` (kernel_util.cc; §2.6): with q(f) = zp + round(f / scale)
    (float32 division; TfLiteRound = half away from zero by default):
    "none" -> (qmin, qmax); "relu" -> (max(qmin, q(0)), qmax); "relu6" -> (max(qmin, q(0)),
    min(qmax, q(6))); "relu_n1_to_1" -> (max(qmin, q(−1)), min(qmax, q(1))).
    TOSA's legalizer emits CLAMP with the same integers; ONNX clips in float and quantizes with
    half-even rounding (`rounding="half_even"`). Returns Python ints.
    Errors: unknown activation; scale not finite or ≤ 0; q(f) outside int32 (TFLite's check).
    """
    if activation not in ACTIVATIONS:
        raise FixedPointError(f"unknown activation {activation!r}; choose one of {ACTIVATIONS}")
    if rounding not in ("half_away", "half_even"):
        raise FixedPointError(f"rounding must be 'half_away' or 'half_even', got {rounding!r}")
    s = np.float32(scale)
    if not np.isfinite(s) or s <= 0:
        raise FixedPointError(f"activation_range: scale must be finite and > 0, got {scale!r}")
    zp = int(zero_point)

    def q(f: float) -> int:
        v = np.float32(f) / s
        r = np.rint(v) if rounding == "half_even" else round_half_away_float(v)
        if not (INT32_MIN <= float(r) <= INT32_MAX):
            raise FixedPointError(f"activation_range: {f}/scale = {float(v)} does not fit int32")
        return zp + int(r)

    lo, hi = int(qmin), int(qmax)
    if activation == "relu":
        return max(lo, q(0.0)), hi
    if activation == "relu6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    if activation == "relu_n1_to_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    return lo, hi
