"""Float32 arithmetic of the ONNX QDQ semantics and of onnxruntime's fused QLinear kernels.

Sections (§n) refer to ../shared/reference/fixedpoint.md. These are helpers of the integer kernels
(`add`, `elementwise`, `pooling`, `lut`, `softmax`), not ops of their own. Every function takes and
returns NumPy arrays and rounds exactly where the target rounds: each float32 operation below is one
IEEE-754 binary32 operation (round to nearest even), as NumPy evaluates float32 arrays.

  dequantize32  ONNX DequantizeLinear (spec and `onnx.reference`; onnxruntime `dequantize_value`):
                d = float32(float32(x) − float32(zp))·float32(scale) (the subtraction is exact).
  quantize32    ONNX QuantizeLinear (§8.1): q = clamp(rint(v / float32(scale)) + zp, qmin, qmax),
                float32 true division, round half to even, zero point added after rounding.
  fma32         fl32(a·b + c) with one rounding, the x86 `vfmadd` of onnxruntime's AVX2 kernels.
"""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError

__all__ = ["f32", "dequantize32", "quantize32", "quantize32_zp_first", "fma32"]

_F32 = np.float32


def f32(v) -> np.float32:
    """v rounded to float32 (scales are stored as float32 by every ONNX target)."""
    return _F32(np.asarray(v, dtype=np.float64).reshape(-1)[0])


def dequantize32(x, scale, zero_point) -> np.ndarray:
    """DequantizeLinear: float32(x − zp)·float32(scale) as a float32 array (x integer codes)."""
    d = np.asarray(x).astype(_F32)
    d -= _F32(zero_point)
    d *= f32(scale)
    return d


def _check_finite(v, what):
    if not np.all(np.isfinite(v)):
        raise FixedPointError(f"{what}: the float32 value is not finite (NaN or overflow); check "
                              "the scales")


def quantize32(v, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """QuantizeLinear of float32 values v: clamp(rint(v / float32(scale)) + zp, qmin, qmax) as
    int64 (the clip is done in float32 at qmin − zp, qmax − zp before rounding, which gives the
    same integers because rounding is monotone and fixes integers)."""
    t = np.asarray(v, dtype=_F32) / f32(scale)
    _check_finite(t, "QuantizeLinear")
    zp = int(zero_point)
    np.clip(t, _F32(qmin - zp), _F32(qmax - zp), out=t)
    return np.rint(t).astype(np.int64) + zp


def quantize32_zp_first(v, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """onnxruntime `qlinear_pool.cc::quantize_value`: clamp(nearbyintf(v / float32(scale) +
    float32(zp)), qmin, qmax): the zero point is added in float32 BEFORE rounding half to even."""
    t = np.asarray(v, dtype=_F32) / f32(scale)
    t += _F32(zero_point)
    _check_finite(t, "QLinearAveragePool quantize")
    np.clip(t, _F32(qmin), _F32(qmax), out=t)
    return np.rint(t).astype(np.int64)


def fma32(a, b, c) -> np.ndarray:
    """fl32(a·b + c) rounded once (IEEE fusedMultiplyAdd in binary32), elementwise.

    a, b, c are float32 values. a·b is exact in float64 (24 + 24 significant bits); s = a·b + c is
    rounded once to float64 with its exact error e (TwoSum, exact for float64 operands). Rounding s
    to float32 is then correct unless s lies exactly on a float32 rounding boundary (its two float64
    neighbours round to different float32 values) while e ≠ 0; the exact value then lies strictly
    on e's side of the boundary, and so does s's neighbour on that side, which is rounded instead
    (float32 boundaries are much more than one float64 ulp apart)."""
    p = np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)
    c64 = np.asarray(c, dtype=np.float64)
    s = p + c64
    bp = s - c64
    e = (p - bp) + (c64 - (s - bp))        # TwoSum: p + c = s + e exactly
    r = s.astype(_F32)
    up, down = np.nextafter(s, np.inf), np.nextafter(s, -np.inf)
    fix = (e != 0) & (up.astype(_F32) != down.astype(_F32))   # s on a float32 boundary
    if np.any(fix):
        r = np.where(fix, np.where(e > 0, up, down).astype(_F32), r)
    return r
