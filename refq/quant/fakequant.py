"""Quantize, dequantize and fake-quantize a tensor with an `Encoding` (`refq.quant.grid`).

Definition (AIMET 2.42 by default; `aimet.md` §0.2.2, §0.2.4):
    q  = clamp(round(x / scale) + zero_point, qmin, qmax)          quantize
    x̂  = (q − zero_point) · scale                                   dequantize
    x̂  = dequantize(quantize(x)) in the numerics dtype              quantize_dequantize
A 32-bit encoding is pass-through: `quantize_dequantize` returns its input (cast to the numerics
dtype) and `quantize`/`dequantize` refuse it. Rounding, clamping and the fake-quant arithmetic are
fields of `EncodingNumerics` (`refq.quant.numerics`); `AIMET_V2` is the default.

scale and zero_point are those of the element: one per tensor, per channel c on `axis`, or for a
blocked encoding scale[c, i // B] for index c on `axis` and i on `block_axis`
(`Encoding.broadcast`; the formulas above are unchanged, element by element).

`refq.quant.encoding` re-exports `quantize`, `dequantize` and `quantize_dequantize`.
"""
from __future__ import annotations

import numpy as np

from ..errors import QuantError
from .grid import Encoding
from .numerics import AIMET_V2, EncodingNumerics, round_half_away, round_half_even

__all__ = ["quantize", "dequantize", "quantize_dequantize", "fake_quantize_inplace"]

_F32 = np.float32


def _broadcast(enc: Encoding, x: np.ndarray, dtype):
    if enc.is_blocked:
        scale, zp = enc.broadcast(x.shape)
        return scale, zp.astype(dtype)
    shape = enc.broadcast_shape(x.ndim)
    if enc.axis is not None and x.shape[enc.axis] != enc.scale.shape[0]:
        raise QuantError(f"tensor of shape {x.shape} has {x.shape[enc.axis]} channels on axis "
                         f"{enc.axis}, the encoding has {enc.scale.shape[0]}")
    return enc.scale.reshape(shape), enc.zero_point.astype(dtype).reshape(shape)


def _codes(x, enc: Encoding, numerics: EncodingNumerics) -> np.ndarray:
    """Clamped integer codes, held in numerics.dtype (NaN stays NaN)."""
    dt = numerics.dtype
    # half_away is 1.x libpymo, whose encoding fields are doubles: its arithmetic runs in float64
    wt = np.dtype(np.float64) if numerics.rounding == "half_away" else dt
    x = np.asarray(np.asarray(x, dtype=dt), dtype=wt)
    scale32, zp = _broadcast(enc, x, wt)
    scale = scale32.astype(wt)
    qmin, qmax = wt.type(enc.qmin), wt.type(enc.qmax)
    if numerics.clamp == "float":
        x = np.clip(x, scale * (qmin - zp), scale * (qmax - zp))
    if numerics.fake_quant == "reciprocal_float32":
        v = x * (_F32(1) / scale32).astype(wt)       # torch.fake_quantize: inv_scale = fl(1/s)
    else:
        v = x / scale
    if numerics.rounding == "half_even":
        # |rint(v)| < 2^24 − 2^16 makes "+ zp" exact; larger values stay beyond the clamp bounds.
        q = round_half_even(v) + zp
    else:
        q = round_half_away(v + (zp - qmin)) + qmin   # 1.x: round x/Δ − offset on the unsigned grid
    return np.clip(q, qmin, qmax).astype(dt)


def quantize(x, enc: Encoding, numerics: EncodingNumerics = AIMET_V2) -> np.ndarray:
    """Integer codes q = clamp(round(x/s) + zero_point, qmin, qmax) as int64 (see EncodingNumerics).

    ±inf saturate to qmin/qmax; NaN raises QuantError; a pass-through encoding raises QuantError.
    """
    if enc.is_pass_through:
        raise QuantError("quantize: a 32-bit encoding is pass-through and has no integer codes")
    q = _codes(x, enc, numerics)
    if np.isnan(q).any():
        raise QuantError("quantize: the tensor holds NaN, which has no integer code")
    return q.astype(np.int64)


def dequantize(q, enc: Encoding, numerics: EncodingNumerics = AIMET_V2) -> np.ndarray:
    """x̂ = (q − zero_point)·scale in numerics.dtype (one rounding: the integer difference is exact)."""
    if enc.is_pass_through:
        raise QuantError("dequantize: a 32-bit encoding is pass-through and has no integer codes")
    dt = numerics.dtype
    q = np.asarray(q)
    scale, zp = _broadcast(enc, q, np.int64)
    return (q.astype(np.int64) - zp).astype(dt) * scale.astype(dt)


BLOCK = 1 << 16  # elements per block: the passes of one block stay in cache


class HalfEvenFactors:
    """The constants of the half-even fake quantization of x with `enc` (integer clamp), in the
    numerics dtype dt: `apply(x, factor)` is x·fl(1/s) (reciprocal_float32) or x/s (divide), then
    codes in [lo, hi] = [qmin − zp, qmax − zp] (exact: integers below 2^24), dequantized by
    `scale` (module docstring of `_fake_quant_half_even`)."""

    def __init__(self, enc: Encoding, numerics: EncodingNumerics, x):
        dt = self.dtype = numerics.dtype
        scale32, zp = _broadcast(enc, x, dt)
        self.scale = scale32.astype(dt)
        self.factor = (_F32(1) / scale32).astype(dt) \
            if numerics.fake_quant == "reciprocal_float32" else self.scale
        self.apply = np.multiply if numerics.fake_quant == "reciprocal_float32" else np.divide
        self.lo, self.hi = dt.type(enc.qmin) - zp, dt.type(enc.qmax) - zp


def _fake_quant_half_even(x: np.ndarray, enc: Encoding, numerics: EncodingNumerics,
                          out: np.ndarray | None = None,
                          k: HalfEvenFactors | None = None) -> np.ndarray:
    """`quantize_dequantize` for integer clamping and half-even rounding, in place on one output
    buffer (`out`, which may be x itself, else a new array), per-tensor encodings block by block:

        v = x·fl(1/s) (or x/s);  v = rint(v);  v = clip(v, qmin − zp, qmax − zp);  v = v·s + 0

    bit-identical to `_codes` then dequantization, (clip(rint(v) + zp, qmin, qmax) − zp)·s: below
    2^24 − 2^16 every step on integers is exact, so adding zp, clipping and subtracting it again is
    clipping at the shifted bounds; larger |rint(v)| saturate in both; NaN stays NaN. The one
    difference is the sign of a zero code: −0 + zp − zp is +0, which the final `+ 0` restores
    (c·s is never a zero of another sign: s > 0 and |c| >= 1 otherwise). Five passes for six.
    k: the constants, when the caller keeps them (a per-tensor encoding's do not depend on x)."""
    k = HalfEvenFactors(enc, numerics, x) if k is None else k
    if enc.axis is None:
        x = np.ascontiguousarray(x)
        out = np.empty(x.shape, dtype=k.dtype) if out is None else out
        flat_x, flat_out = x.reshape(-1), out.reshape(-1)
        blocks = [(i, i + BLOCK) for i in range(0, flat_x.size, BLOCK)]
    else:
        if out is None:
            out = np.empty(np.broadcast_shapes(x.shape, k.scale.shape), dtype=k.dtype)
        blocks = None
    for start, end in blocks or [(None, None)]:
        v = out if blocks is None else flat_out[start:end]
        k.apply(x if blocks is None else flat_x[start:end], k.factor, out=v)
        np.rint(v, out=v)
        np.clip(v, k.lo, k.hi, out=v)
        v *= k.scale
        v += 0   # a zero code is +0, as (code − zp)·s gives it
    return out


def quantize_dequantize(x, enc: Encoding, numerics: EncodingNumerics = AIMET_V2) -> np.ndarray:
    """Fake quantization x̂ = (clamp(round(x/s) + zp, qmin, qmax) − zp)·s in numerics.dtype.

    AIMET_V2: bit-exact with `(clip(rint(x·fl(1/s)) − o, qmin, qmax) + o)·s` in float32, o = −zp
    (torch.fake_quantize, §0.2.4). Inputs of any dtype are cast to numerics.dtype first (AIMET keeps
    fp16 in fp16; refq does not model that). NaN propagates; ±inf saturate. A pass-through (32-bit)
    encoding returns a copy of x in numerics.dtype.
    """
    dt = numerics.dtype
    if enc.is_pass_through:
        return np.array(x, dtype=dt)
    x = np.asarray(x, dtype=dt)
    if numerics.clamp == "integer" and numerics.rounding == "half_even" and x.ndim:
        return _fake_quant_half_even(x, enc, numerics)
    q = _codes(x, enc, numerics)
    scale, zp = _broadcast(enc, q, dt)
    return (q - zp) * scale.astype(dt)


def fake_quantize_inplace(a: np.ndarray, enc: Encoding,
                          numerics: EncodingNumerics = AIMET_V2,
                          factors: HalfEvenFactors | None = None) -> None:
    """a[...] = quantize_dequantize(a, enc, numerics), computed in a's own buffer where the
    numerics and a allow it (a: C-contiguous, of numerics.dtype), bit-identical to
    `quantize_dequantize`; any other array is assigned quantize_dequantize's result (for another
    dtype, its values cast to a's). factors: the encoding's `HalfEvenFactors`, when the caller
    keeps them (a per-tensor encoding's do not depend on a), else formed here."""
    if numerics.clamp == "integer" and numerics.rounding == "half_even" and a.ndim \
            and not enc.is_pass_through and a.flags.c_contiguous and a.dtype == numerics.dtype:
        _fake_quant_half_even(a, enc, numerics, out=a, k=factors)
    else:
        a[...] = quantize_dequantize(a, enc, numerics)
