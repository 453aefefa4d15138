"""Requantization of int64 accumulators with a 16-bit multiplier: TFLite's 16x8 kernels.

Models with int16 activations and int8 weights ("16x8": convolution and depthwise convolution
on int16 inputs with int64 biases) accumulate in int64 and requantize with the int64 overload of
TFLite's `MultiplyByQuantizedMultiplier` (tensorflow/lite/kernels/internal/common.h; the same in
both rounding builds; ../shared/reference/fixedpoint.md §2.4):

    reduce_multiplier_16(m) = (m + 2^15) >> 16    if m < 0x7FFF0000
                              0x7FFF              otherwise
    multiply_by_quantized_multiplier_64(x, m, shift)
        = wrap32( (x·r + 2^(t − 1)) >> t ),   r = reduce_multiplier_16(m), t = 15 − shift

One rounding, half up (toward +inf: `>>` is a floor), at bit t of the exact product x·r. The
Q31 multiplier m (from `multiplier.quantize_multiplier`) is first rounded to Q15, half up, with
0x7FFF for the multipliers that would round to 2^15. Preconditions (TFLite asserts them):
0 ≤ m ≤ 2^31 − 1, −31 ≤ shift ≤ 7 (so 8 ≤ t ≤ 46), −2^47 ≤ x < 2^47; then |x·r| < 2^62 and the
sum with the rounding term is exact in int64. The result is converted to int32 as C does
(`int32_t result = x >> total_shift`: modulo 2^32, `wrap32`); callers clamp it to the activation
range afterwards.
"""
from __future__ import annotations

import numpy as np

from .rounding import INT32_MAX, _as_int64, _check_range

__all__ = ["reduce_multiplier_16", "multiply_by_quantized_multiplier_64", "X64_RANGE",
           "SHIFT_RANGE_64"]

#: The accumulators the int64 overload accepts: −2^47 ≤ x < 2^47.
X64_RANGE = (-(1 << 47), (1 << 47) - 1)
#: The shifts it accepts (TFLite: `shift >= -31 && shift < 8`).
SHIFT_RANGE_64 = (-31, 7)
_REDUCE_LIMIT = 0x7FFF0000


def reduce_multiplier_16(multiplier) -> np.ndarray:
    """The Q15 multiplier r of a Q31 multiplier m (module docstring): (m + 2^15) >> 16, or 0x7FFF
    when m ≥ 0x7FFF0000. m must lie in [0, 2^31 − 1] (FixedPointError otherwise)."""
    m = _as_int64(multiplier, "multiplier")
    _check_range(m, 0, INT32_MAX, "multiplier", "a Q31 multiplier is a non-negative int32")
    return np.where(m < _REDUCE_LIMIT, (m + (1 << 15)) >> 16, 0x7FFF).astype(np.int64)


def multiply_by_quantized_multiplier_64(x, multiplier, shift) -> np.ndarray:
    """TFLite's int64 `MultiplyByQuantizedMultiplier(x, m, shift)` (module docstring), as int64
    values of the int32 result. `multiplier` and `shift` broadcast against x (per channel: shape
    (C,) along the last axis).

    Errors: FixedPointError naming the first value outside the preconditions (x outside
    [−2^47, 2^47), m outside [0, 2^31 − 1], shift outside [−31, 7])."""
    a = _as_int64(x, "accumulator")
    if a.size:
        _check_range(a, X64_RANGE[0], X64_RANGE[1], "accumulator",
                     "TFLite's int64 MultiplyByQuantizedMultiplier takes -2^47 <= x < 2^47")
    r = reduce_multiplier_16(multiplier)
    s = _as_int64(shift, "shift")
    _check_range(s, SHIFT_RANGE_64[0], SHIFT_RANGE_64[1], "shift",
                 "TFLite's int64 MultiplyByQuantizedMultiplier takes -31 <= shift <= 7")
    t = 15 - s
    y = (a * r + np.left_shift(np.int64(1), t - 1)) >> t
    return ((y + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)

