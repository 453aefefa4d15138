"""Quantization encodings: integer grids, (min, max) -> (scale, zero_point).

An encoding defines q = clamp(round(x / scale) + zero_point, qmin, qmax); the `Encoding` record and
the grids (`integer_grid`, `check_bitwidth`) are in `refq.quant.grid`, quantize, dequantize and
fake quantization in `refq.quant.fakequant` (both re-exported here). AIMET's offset is
o = −zero_point (`aimet_offset`). Grids, with N = 2^b − 1 (`aimet.md` §0.2.4, §1.1):
    signed   [−2^(b−1), 2^(b−1) − 1]    symmetric (AIMET 2.x)
    unsigned [0, 2^b − 1]               asymmetric; also unsigned-symmetric (1.x, when min ≥ 0, zero_point 0)
    strict   [−(2^(b−1) − 1), 2^(b−1) − 1]   strict symmetric (1.x)
Bitwidths are 2..16, or 32 = pass-through.

(min, max) -> encoding, AIMET 2.42 (`MinMaxEncodingAnalyzer.compute_encodings_from_stats`, then the
quantizer's `set_range`; float32 throughout, fl = rounding to float32, N' = qmax − qmin):
    1. m = min(min, 0), M = max(max, 0)
    2. minimum range: if fl(M − m)/N' < ms, with ms = min(2^−23, 0.01/N') (`_get_minimum_scale`):
       asymmetric M += N'·ms; symmetric M += qmax·ms, m −= (−qmin)·ms
    3. symmetric: Δ = max(M/P', −m/Q) with P = qmax, Q = −qmin, P' = P + 1 for the 2-bit signed grid
       (N' = 3) and P' = P otherwise; the range becomes [−QΔ, PΔ], clamped to ±float32 max
    4. set_range: s = max(|fl(fl(max − min)/N')|, ms); symmetric zero_point 0; asymmetric
       zero_point = clamp(round_he(fl(−min/s)) + qmin, qmin, qmax)   (AIMET: o = round(min/s) − qmin)
Worked example: [−0.8, 3.95] asymmetric 8-bit -> s = fl(4.75/255), zero_point 43, effective range
[−0.8009804, 3.9490196]; symmetric [−1, 0.5] -> Δ = 1/128, range [−1, 0.9921875].

Every convention is a field of `EncodingNumerics` (`refq.quant.numerics`, re-exported here); `AIMET_V2`
is the default everywhere.
"""
from __future__ import annotations

import numpy as np

from ..errors import QuantError
from .fakequant import dequantize, quantize, quantize_dequantize  # re-exported
from .grid import PASS_THROUGH_BITWIDTH, Encoding, check_bitwidth, integer_grid  # re-exported
from .numerics import AIMET_V1, AIMET_V2, EncodingNumerics, round_half_away, round_half_even

__all__ = [
    "EncodingNumerics", "AIMET_V2", "AIMET_V1", "Encoding", "PASS_THROUGH_BITWIDTH",
    "check_bitwidth", "integer_grid", "minimum_scale", "adjust_min_max", "encoding_from_range",
    "encoding_from_min_max", "encoding_from_block_min_max", "as_blocked", "quantize",
    "dequantize", "quantize_dequantize", "aimet_offset",
    "round_half_even", "round_half_away",
]

_F32 = np.float32
_F32_MAX = np.finfo(np.float32).max


def minimum_scale(num_steps: int) -> np.float32:
    """AIMET 2.42 `_get_minimum_scale(N) = min(2^−23, 0.01/N)` as float32 (1.1920929e-7 up to 16 bits)."""
    return _F32(min(2.0 ** -23, 0.01 / num_steps))


def aimet_offset(enc: Encoding) -> np.ndarray:
    """AIMET's internal offset o = −zero_point (int64), as in x̂ = (q + o)·s."""
    return -enc.zero_point


# ----------------------------------------------------------------------------- (min, max) -> encoding

def _as_range(min, max, axis="any"):
    """(min, max) as float32 arrays; QuantError on NaN/Inf, or on a shape that does not fit `axis`."""
    lo, hi = np.broadcast_arrays(np.asarray(min, dtype=np.float64), np.asarray(max, dtype=np.float64))
    if lo.ndim > 1 or (axis != "any" and (lo.ndim == 1) != (axis is not None)):
        raise QuantError(f"min/max must be scalars (per-tensor, axis=None) or 1-d arrays with an axis; "
                         f"got shape {lo.shape} with axis={axis}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise QuantError(f"min/max must be finite, got min={lo}, max={hi}")
    with np.errstate(over="ignore"):
        lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    if not (np.all(np.isfinite(lo32)) and np.all(np.isfinite(hi32))):
        raise QuantError(f"min/max exceed the float32 range: min={lo}, max={hi}")
    return lo32, hi32


def _grid_for(bitwidth, symmetric, strict, unsigned_symmetric, lo):
    """The grid and whether it is unsigned-symmetric (only when every min ≥ 0, as 1.x decides)."""
    unsigned = bool(symmetric and unsigned_symmetric and np.all(lo >= 0))
    return integer_grid(bitwidth, symmetric, strict=strict, unsigned=unsigned), unsigned


def _zero_in_range_and_min_range(lo, hi, qmin, qmax, signed_symmetric, numerics):
    """Steps 1 and 2: (m, M) with m ≤ 0 ≤ M and the minimum range of `numerics.min_range`."""
    n = qmax - qmin
    m, big_m = np.minimum(lo, _F32(0)), np.maximum(hi, _F32(0))
    if numerics.min_range == "aimet_v1":
        return m, np.maximum(big_m, m + _F32(0.01))
    ms = float(minimum_scale(n))
    small = (big_m - m) / _F32(n) < _F32(ms)
    if signed_symmetric:
        return np.where(small, m - _F32(-qmin * ms), m), np.where(small, big_m + _F32(qmax * ms), big_m)
    return m, np.where(small, big_m + _F32(n * ms), big_m)


def adjust_min_max(min, max, bitwidth, symmetric, *, strict=False, unsigned_symmetric=False,
                   numerics=AIMET_V2, two_bit_rule=True):
    """Steps 1–3 of the module docstring: the float32 (min, max) a quantizer's set_range receives.

    `two_bit_rule=False` drops the 2-bit P' = P + 1 case, as AIMET's `adjust_min_max` (percentile) does.
    With `numerics.min_range == "aimet_v1"` step 2 is max ≥ min + 0.01 instead. Unsigned-symmetric
    grids take the asymmetric steps (m = 0). A symmetric `numerics.symmetric_delta == "aimet_v1"` has
    no range form (its Δ is the scale itself): use `encoding_from_min_max`.
    """
    b = check_bitwidth(bitwidth)
    lo, hi = _as_range(min, max)
    (qmin, qmax), unsigned = _grid_for(b, symmetric, strict, unsigned_symmetric, lo)
    signed_sym = symmetric and not unsigned
    m, big_m = _zero_in_range_and_min_range(lo, hi, qmin, qmax, signed_sym, numerics)
    if not signed_sym:
        return m, big_m
    if numerics.symmetric_delta != "aimet_v2":
        raise QuantError("adjust_min_max: symmetric_delta='aimet_v1' has no range form; "
                         "use encoding_from_min_max")
    p_prime = qmax + 1 if (two_bit_rule and qmax - qmin == 3) else qmax
    delta = np.maximum(big_m / _F32(p_prime), -m / _F32(-qmin))
    with np.errstate(over="ignore"):
        lo, hi = _F32(qmin) * delta, _F32(qmax) * delta
    return np.clip(lo, -_F32_MAX, _F32_MAX), np.clip(hi, -_F32_MAX, _F32_MAX)


def _zero_point(neg_min_over_s, qmin, qmax, rounding):
    r = round_half_even(neg_min_over_s) if rounding == "half_even" else round_half_away(neg_min_over_s)
    return np.clip(r + qmin, qmin, qmax).astype(np.int64)


def _finish(scale, zp, b, qmin, qmax, symmetric, axis, lo, hi):
    """The Encoding, or QuantError naming the range [lo, hi] (formatted only then: printing
    per-channel arrays costs more than computing the encoding)."""
    if not np.all(np.isfinite(scale)):
        raise QuantError(f"range [{lo}, {hi}]: the range is too wide for a float32 scale "
                         f"(scale={scale})")
    return Encoding(scale, zp, b, qmin, qmax, symmetric, axis)


def encoding_from_range(min, max, bitwidth, symmetric, *, axis=None, strict=False,
                        unsigned_symmetric=False, numerics=AIMET_V2) -> Encoding:
    """The quantizer's set_range (step 4 only, no range adjustment): AIMET `get_scale`/`_get_offset`.

    s = max(|fl(fl(max − min)/N')|, ms); symmetric zero_point 0; asymmetric zero_point =
    clamp(round(fl(−min/s)) + qmin, qmin, qmax) with `numerics.rounding`. Used by the analyzers whose
    search returns the final range (tf_enhanced, sqnr) and by `encoding_from_min_max`.
    """
    b = check_bitwidth(bitwidth)
    lo, hi = _as_range(min, max, axis)
    (qmin, qmax), unsigned = _grid_for(b, symmetric, strict, unsigned_symmetric, lo)
    n = qmax - qmin
    with np.errstate(over="ignore"):
        scale = np.maximum(np.abs((hi - lo) / _F32(n)), minimum_scale(n))
    if symmetric:
        zp = np.zeros(scale.shape, dtype=np.int64)
    else:
        zp = _zero_point(-lo / scale, qmin, qmax, numerics.rounding)
    return _finish(scale, zp, b, qmin, qmax, symmetric, axis, min, max)


def encoding_from_min_max(min, max, bitwidth, symmetric, *, axis=None, strict=False,
                          unsigned_symmetric=False, numerics=AIMET_V2, two_bit_rule=True) -> Encoding:
    """Encoding of observed (min, max): scalars (per-tensor) or 1-d arrays with `axis` (per-channel).

    AIMET 2.42 by default (module docstring steps 1–4; the MinMax analyzer's path). With
    `numerics.symmetric_delta == "aimet_v1"` a symmetric encoding is 1.x `getComputedEncodings`:
    scale Δ = fl(max(|m|, M)/qmax) (unsigned-symmetric: fl(M/N)), zero_point 0. Strict and unsigned
    symmetric grids, which AIMET 2.42 rejects, follow the same rules with P = qmax, Q = −qmin.
    Per-channel results equal the per-tensor ones channel by channel, except the unsigned-symmetric
    grid, which is used only when every channel's min is ≥ 0. Raises QuantError on NaN/Inf.
    """
    b = check_bitwidth(bitwidth)
    lo, hi = _as_range(min, max, axis)
    if symmetric and numerics.symmetric_delta == "aimet_v1":
        (qmin, qmax), unsigned = _grid_for(b, symmetric, strict, unsigned_symmetric, lo)
        m, big_m = _zero_in_range_and_min_range(lo, hi, qmin, qmax, not unsigned, numerics)
        with np.errstate(over="ignore"):
            delta = big_m / _F32(qmax) if unsigned else np.maximum(-m, big_m) / _F32(qmax)
        scale = np.maximum(delta, minimum_scale(qmax - qmin))
        zp = np.zeros(scale.shape, dtype=np.int64)
        return _finish(scale, zp, b, qmin, qmax, True, axis, min, max)
    lo, hi = adjust_min_max(lo, hi, b, symmetric, strict=strict,
                            unsigned_symmetric=unsigned_symmetric, numerics=numerics,
                            two_bit_rule=two_bit_rule)
    return encoding_from_range(lo, hi, b, symmetric, axis=axis, strict=strict,
                               unsigned_symmetric=unsigned_symmetric, numerics=numerics)


def encoding_from_block_min_max(min, max, bitwidth, symmetric, *, axis=0, block_axis,
                                block_size, strict=False, unsigned_symmetric=False,
                                numerics=AIMET_V2, two_bit_rule=True) -> Encoding:
    """Blocked encoding of per-block (min, max), arrays of shape (C, n_blocks): block j of channel
    c covers indices [j·B, (j+1)·B) of `block_axis` (B = block_size) at index c of `axis`.

    Each block gets the encoding `encoding_from_min_max` gives its range, exactly as a channel
    does: the ranges are flattened to C·n_blocks "channels", encoded per channel, and the scales
    and zero points reshaped back to (C, n_blocks). The unsigned-symmetric grid is used only when
    every block's min is ≥ 0. QuantError unless min and max are 2-d arrays of one shape.
    """
    lo = np.asarray(min, dtype=np.float64)
    hi = np.asarray(max, dtype=np.float64)
    if lo.ndim != 2 or lo.shape != hi.shape or 0 in lo.shape:
        raise QuantError(f"per-block min/max must be non-empty arrays of one shape (C, n_blocks); "
                         f"got {lo.shape} and {hi.shape}")
    flat = encoding_from_min_max(lo.reshape(-1), hi.reshape(-1), bitwidth, symmetric, axis=0,
                                 strict=strict, unsigned_symmetric=unsigned_symmetric,
                                 numerics=numerics, two_bit_rule=two_bit_rule)
    return as_blocked(flat, lo.shape, axis, block_axis, block_size)


def as_blocked(flat: Encoding, shape, axis: int, block_axis: int, block_size: int) -> Encoding:
    """The blocked encoding whose (C, n_blocks) = `shape` scales and zero points are those of
    `flat`, an encoding of C·n_blocks channels in row-major order (block j of channel c at
    c·n_blocks + j), with its grid."""
    return Encoding(flat.scale.reshape(shape), flat.zero_point.reshape(shape), flat.bitwidth,
                    flat.qmin, flat.qmax, flat.symmetric, axis, block_axis, block_size)
