"""Real multiplier M = s_in·s_w/s_out and its integer encodings (multiplier, shift) per target.

Sections (§n) refer to ../shared/reference/fixedpoint.md. All functions are vectorised: M may be a
scalar or a per-channel array; results have M's shape (0-d arrays for scalars). Multipliers and
shifts are returned as int64 arrays holding int32 (or int16) values.

Shift conventions differ and are kept as the targets define them:
- TFLite / TFLM / CMSIS-NN: `shift` is signed, positive = left shift; value = m·2^(shift−31).
- TOSA: `shift` is a positive right shift; value = m·2^(−shift).
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from .rounding import INT32_MAX

__all__ = [
    "SCALE_MATHS", "MULTIPLIER_DERIVATIONS", "real_multiplier", "quantize_multiplier",
    "quantize_multiplier_cmsis_generator", "tosa_scale32", "tosa_scale16", "derive_multiplier",
    "round_half_away_float",
]

#: How M is formed from float32 scales (`real_multiplier`).
SCALE_MATHS = ("float64", "float32_product", "float32")
#: The encodings of `derive_multiplier`.
MULTIPLIER_DERIVATIONS = ("tflite", "tosa32", "tosa16", "float64", "float32")


def round_half_away_float(v: np.ndarray) -> np.ndarray:
    """C `round`/`roundf` (= `std::round`, `TfLiteRound`): nearest integer, ties away from zero,
    in v's float dtype. Computed as t = trunc(v), t + sign(v)·[|v − t| ≥ 0.5]; v − t is exact for
    every finite float (both share v's exponent range and t has no bits below v's ulp), unlike the
    common floor(v + 0.5), which returns 1 for the largest double below 0.5."""
    v = np.asarray(v)
    t = np.trunc(v)
    with np.errstate(invalid="ignore"):  # ±inf − ±inf = NaN compares False: ±inf stays ±inf
        return np.where(np.abs(v - t) >= 0.5, t + np.sign(v), t)


def _reals(real, name: str = "real multiplier M") -> np.ndarray:
    m = np.asarray(real, dtype=np.float64)
    bad = ~np.isfinite(m) | (m < 0)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise FixedPointError(
            f"{name} must be finite and >= 0; {int(np.count_nonzero(bad))} value(s) are not, the "
            f"first is {float(m[idx])!r} at index {idx}. A negative multiplier means a negative "
            "scale; NaN/Inf means a broken scale or a zero output scale: fix the encodings")
    return m


def _frexp_round(m: np.ndarray, bits: int, rounding: str):
    """(mantissa rounded to `bits` fraction bits as int64, exponent): m = q·2^e, 0.5 ≤ q < 1
    (C frexp; q = e = 0 for m = 0). q·2^bits is exact in float64 (a power-of-two scaling) and lies
    in [2^(bits−1), 2^bits], so its rounding and int64 conversion are exact."""
    q, e = np.frexp(m)
    scaled = q * float(1 << bits)
    r = round_half_away_float(scaled) if rounding == "half_away" else np.rint(scaled)
    return r.astype(np.int64), e.astype(np.int64)


def real_multiplier(s_in, s_w, s_out, scale_math: str = "float64") -> np.ndarray:
    """M = s_in·s_w/s_out (as float64 values) computed the way a target computes it.

    The scales are first rounded to float32, the type every target stores them in (TFLite
    flatbuffer, ONNX initializers); this is exact for scales that are float32 already.
    scale_math:
      "float64"         double(s_in)·double(s_w), then / double(s_out): TFLite/TFLM
                        `PopulateConvolutionQuantizationParams` (conv, depthwise, per-channel FC),
                        TOSA legalizer (§1.1, §3.3).
      "float32_product" double(float32(s_in·s_w)) / double(s_out): TFLite/TFLM per-tensor
                        FullyConnected `GetQuantizedConvolutionMultipler` (§1.1).
      "float32"         float32(float32(s_in·s_w) / s_out), all in float32: ONNX reference
                        QLinearConv/MatMul, onnxruntime `ComputeOutputScale`, LiteRT MUL
                        (§8.2, §4.2).
    s_w may be per-channel (broadcasting). Errors: scales NaN/Inf, s_in or s_out ≤ 0, s_w < 0.
    """
    if scale_math not in SCALE_MATHS:
        raise FixedPointError(f"unknown scale_math {scale_math!r}; choose one of {SCALE_MATHS}")
    a, w, o = (np.asarray(s, dtype=np.float64) for s in (s_in, s_w, s_out))
    for name, s, strict in (("s_in", a, True), ("s_w", w, False), ("s_out", o, True)):
        if not np.all(np.isfinite(s)) or np.any(s <= 0 if strict else s < 0):
            raise FixedPointError(f"scale {name} must be finite and {'> 0' if strict else '>= 0'}, "
                                  f"got {s!r}")
    a, w, o = (s.astype(np.float32) for s in (a, w, o))
    if scale_math == "float64":
        return (a.astype(np.float64) * w.astype(np.float64)) / o.astype(np.float64)
    if scale_math == "float32_product":
        return (a * w).astype(np.float64) / o.astype(np.float64)
    return ((a * w) / o).astype(np.float64)


def quantize_multiplier(real, *, single_rounding: bool = False):
    """TFLite `QuantizeMultiplier` (tensorflow/lite/kernels/internal/quantization_util.cc; §1.1):
    real M ≥ 0 (float64) -> (m, shift) with M ≈ m·2^(shift − 31), shift signed (positive = left).

    Steps, per element: M = q·2^e (frexp, 0.5 ≤ q < 1); m = round_half_away(q·2^31) (std::round);
    if m = 2^31 (the mantissa rounded up to 1.0): m = 2^30, e += 1; if e < −31: (m, e) = (0, 0)
    (tiny multipliers flushed to zero); with `single_rounding` (the `TFLITE_SINGLE_ROUNDING` build)
    and e > 30: (m, e) = (2^31 − 1, 30). M = 0 gives (0, 0).
    Result: m ∈ [2^30, 2^31 − 1] or 0; shift = e. Nothing limits shift from above in the default
    build (M ≥ 2^30 gives shift > 30, which `requantize` rejects).
    Errors: M negative, NaN or infinite -> FixedPointError.
    """
    m, e = _frexp_round(_reals(real), 31, "half_away")
    up = m == (1 << 31)
    m = np.where(up, m >> 1, m)
    e = e + up
    flush = e < -31
    m = np.where(flush, 0, m)
    e = np.where(flush, 0, e)
    if single_rounding:
        big = e > 30
        m = np.where(big, INT32_MAX, m)
        e = np.where(big, 30, e)
    return np.asarray(m, dtype=np.int64), np.asarray(e, dtype=np.int64)


def quantize_multiplier_cmsis_generator(real):
    """The CMSIS-NN unit-test generator's re-derivation (`RefactoredTestGen/Lib/op_utils.py::
    generate_quantize_per_channel_multiplier`; §1.1): (m, shift) = (round(q·2^31), e) with
    Python's `round`, i.e. **half to even**, and no fix-ups: a mantissa rounding up to 1.0 yields
    m = 2^31 (which does not fit int32; a C header would store it as INT32_MIN), and e < −31 is not
    flushed. It differs from `quantize_multiplier` only on exact mantissa ties (q·2^31 = k + 1/2
    with k even), on m = 2^31 and on tiny M. Deployed CMSIS-NN uses TFLM's `quantize_multiplier`.
    Errors: M negative, NaN or infinite -> FixedPointError.
    """
    m, e = _frexp_round(_reals(real), 31, "half_even")
    return np.asarray(m, dtype=np.int64), np.asarray(e, dtype=np.int64)


def _tosa_scale(real, bits: int, name: str):
    m, e = _frexp_round(_reals(real), bits, "half_away")
    up = m == (1 << bits)
    m = np.where(up, m >> 1, m)
    e = e + up
    shift = bits - e
    big = shift > 62
    m = np.where(big, m >> np.minimum(31, np.maximum(shift - 62, 0)), m)
    shift = np.where(big, 62, shift)
    if np.any(shift < 2):
        idx = tuple(int(i) for i in np.argwhere(shift < 2)[0])
        raise FixedPointError(
            f"{name}: M = {float(np.asarray(real, dtype=np.float64)[idx])!r} at index {idx} needs "
            f"shift {int(shift[idx])} < 2; TOSA RESCALE requires 2 <= shift <= 62, so M must be "
            f"below 2^{bits - 2} (after rounding its mantissa to {bits} bits)")
    return np.asarray(m, dtype=np.int64), np.asarray(shift, dtype=np.int64)


def tosa_scale32(real):
    """TOSA `computeMultiplierAndShiftTosaScale32` (mlir/lib/Dialect/Tosa/Utils/QuantUtils.cpp;
    §1.2): real M ≥ 0 -> (m, shift) with M ≈ m·2^(−shift), shift a positive right shift.

    Steps: the TFLite mantissa rule (M = q·2^e, m = round_half_away(q·2^31), m = 2^31 -> 2^30 and
    e += 1), then shift = 31 − e; if shift > 62 the multiplier is pre-shifted instead of flushed:
    m >>= min(31, shift − 62) (a floor), shift = 62. Same m as TFLite, tosa_shift = 31 − tfl_shift,
    except for tiny M (e < −31), which TFLite flushes to (0, 0). M = 0 gives (0, 31).
    Errors: M negative/NaN/Inf; M that rounds to ≥ 2^29 (shift < 2, outside RESCALE's
    2 ≤ shift ≤ 62; e.g. 2^29 − 2^−4 rounds up to 2^29).
    """
    return _tosa_scale(real, 31, "tosa_scale32")


def tosa_scale16(real):
    """TOSA `computeMultiplierAndShiftTosaScale16` (§1.2): as `tosa_scale32` with a 16-bit
    multiplier: m = round_half_away(q·2^15) ∈ [2^14, 2^15 − 1] (2^15 -> 2^14, e += 1),
    shift = 15 − e, pre-shift m >>= min(31, shift − 62) when shift > 62 (the notes give the scale16
    variant as "the same"; with m < 2^15 any pre-shift ≥ 15 gives 0 either way).
    Errors: M negative/NaN/Inf; M that rounds to ≥ 2^13 (shift < 2).
    """
    return _tosa_scale(real, 15, "tosa_scale16")


def derive_multiplier(real, derivation: str, *, single_rounding: bool = False):
    """(multiplier, shift) for `derivation` ∈ MULTIPLIER_DERIVATIONS, in the form `requantize`
    takes for the matching schemes: "tflite" -> `quantize_multiplier` (signed left shift;
    `single_rounding` selects the single-rounding build's clamp), "tosa32" -> `tosa_scale32`,
    "tosa16" -> `tosa_scale16` (right shifts), "float64"/"float32" -> (M as float64/float32 array,
    shift 0) for the float schemes (no integer multiplier exists, §1.3)."""
    if derivation == "tflite":
        return quantize_multiplier(real, single_rounding=single_rounding)
    if derivation == "tosa32":
        return tosa_scale32(real)
    if derivation == "tosa16":
        return tosa_scale16(real)
    if derivation in ("float64", "float32"):
        m = _reals(real)
        return np.asarray(m, dtype=derivation), np.zeros(m.shape, dtype=np.int64)
    raise FixedPointError(f"unknown multiplier derivation {derivation!r}; choose one of "
                          f"{MULTIPLIER_DERIVATIONS}")
