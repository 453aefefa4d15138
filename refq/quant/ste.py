"""Gradients of fake quantization: the straight-through estimator (STE) of a frozen encoding, and
AIMET 2.42 range learning (trainable min/max) as a forward and its vector-Jacobian product.

Frozen encoding (`fake_quant_ste`; aimet.md §1.5, §0.2.4). The forward is
`quantize_dequantize(x, enc)`; with c = round_he(x ⊘ s) + zero_point the code before clamping and
⊘ the forward's own product (x·fl(1/s) for "reciprocal_float32", fl(x/s) for "divide"):
    ∂L/∂x = g · [qmin ≤ c ≤ qmax]
AIMET: a quantizer whose scale and offset need no gradient runs `torch.fake_quantize_per_*_affine`,
whose backward is this mask, computed by its forward kernel from the same x·fl(1/s) (the
`cachemask` kernels); QuantDequantFunc's mask is the same with fl(x/s).

Range learning (`learned_range_forward`, `learned_range_vjp`; aimet.md §0.2.4, §1.5, §12). min and
max are the trainable float32 parameters, shape () per tensor or (C,) per channel along `axis`.
N' = qmax − qmin, ms = minimum_scale(N'), and every step is one float32 operation (fl):
    r = fl(fl(max − min)/N'),  s = max(|r|, ms)                        AffineQuantizerBase.get_scale
    symmetric:  o = 0
    asymmetric: u = fl(min/s),  ô = round_he(u) − qmin,  o = clamp(ô, −qmax, −qmin)     _get_offset
    v = fl(x/s),  x_int = round_he(v) − o,  m = [qmin ≤ x_int ≤ qmax]      QuantDequantFunc (slow)
    x_q = clamp(x_int, qmin, qmax),  x̂ = fl((x_q + o)·s)
The backward, with g = ∂L/∂x̂ and Σ over every axis but the channel axis (every axis per tensor),
as autograd sums a gradient over the dimensions its parameter was broadcast along:
    ∂L/∂x   = g·m
    ∂L/∂s  ← Σ g·(clamp(round(v), o + qmin, o + qmax) − v·m)         round passes its gradient
    ∂L/∂o   = Σ g·(1 − m)·s
    asymmetric (ste_round passes the gradient; torch.clamp passes it where lo ≤ ô ≤ hi):
        ∂L/∂u   = ∂L/∂o·[−qmax ≤ ô ≤ −qmin]
        ∂L/∂s  += −∂L/∂u·fl(u/s),      ∂L/∂min ← ∂L/∂u / s                         (u = min/s)
    ∂L/∂r   = ∂L/∂s·[|r| ≥ ms]·sign(r)     clamp_min passes at equality; sign(0) = 0
    ∂L/∂max = ∂L/∂r / N',    ∂L/∂min += −∂L/∂r / N'
A symmetric quantizer's o = 0 is a constant: nothing reaches min/max through it. The element-wise
terms are AIMET's float32 operations in its order (QuantDequantFunc.backward computes the scale
term as g·where(m, round(v) − v, clamp(round(v), o + qmin, o + qmax))); the sums are NumPy float32
sums, so ∂L/∂min and ∂L/∂max equal autograd's up to the order of float32 summation.

What the STE differentiates: replace each round(z) by z + (round(z₀) − z₀), the residual frozen at
the evaluation point; the forward becomes a smooth function of (x, min, max) away from the clamp
and floor kinks, equal to x̂ at that point, and the formulas above are its exact derivative. They
are not the derivative of x̂ itself: inside the range ∂x̂/∂s = round(v), without the −v, and o is
piecewise constant.

Division, not the reciprocal: with autograd on (every QAT forward, min/max being trainable for
every scheme in 2.42) AIMET takes QuantDequantFunc, which divides; refq's default
`quantize_dequantize` (AIMET_V2) is the no-grad fast path x·fl(1/s). The two agree wherever
round_he(fl(x/s)) = round_he(fl(x·fl(1/s))), i.e. except for x within a few ulps of a rounding tie.
`LearnedRangeContext.encoding` with `EncodingNumerics(fake_quant="divide")` reproduces x̂ bit for
bit.

Everything here is float32, as AIMET's parameters and a float32 model's tensors are; inputs of
another dtype are cast to float32 first (AIMET computes a float64 tensor in float64: not modelled).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QuantError
from .encoding import Encoding, check_bitwidth, integer_grid, minimum_scale
from .numerics import AIMET_V2, EncodingNumerics

__all__ = ["fake_quant_ste", "learned_range_forward", "learned_range_vjp", "LearnedRangeContext"]

_F32 = np.float32


def _same_shape(gy, shape, what):
    g = np.asarray(gy)
    if g.shape != tuple(shape):
        raise QuantError(f"{what}: the output gradient has shape {g.shape}, the quantized tensor "
                         f"{tuple(shape)}; pass ∂L/∂x̂ of the same shape")
    return g


def _param_shape(enc_axis, channels, x):
    """Shape broadcasting a (C,) parameter along `enc_axis` of x (() per tensor); checks C."""
    if enc_axis is None:
        return ()
    if not -x.ndim <= enc_axis < x.ndim:
        raise QuantError(f"per-channel axis {enc_axis} does not exist in a {x.ndim}-d tensor")
    if x.shape[enc_axis] != channels:
        raise QuantError(f"tensor of shape {x.shape} has {x.shape[enc_axis]} channels on axis "
                         f"{enc_axis}, the quantizer has {channels}")
    shape = [1] * x.ndim
    shape[enc_axis] = channels
    return tuple(shape)


def fake_quant_ste(x, enc: Encoding, gy, numerics: EncodingNumerics = AIMET_V2) -> np.ndarray:
    """∂L/∂x of x̂ = quantize_dequantize(x, enc, numerics) for a frozen encoding (none flows to it).

        c = round_he(x ⊘ s) + zero_point,    ∂L/∂x = gy · [qmin ≤ c ≤ qmax]
    ⊘ is the forward's product: x·fl(1/s) ("reciprocal_float32", torch.fake_quantize's cachemask)
    or fl(x/s) ("divide", QuantDequantFunc), in numerics.dtype; the test is written as
    qmin − zero_point ≤ round_he(x ⊘ s) ≤ qmax − zero_point, exact in integers. The code is taken
    before clamping, so the gradient passes up to half a step beyond the range ends where round_he
    brings the code back inside (a tie goes to the even integer) and is zero beyond. NaN and ±inf
    get zero. Per tensor or per channel (the encoding's axis). A pass-through (32-bit) encoding
    passes gy unchanged. Returns numerics.dtype, x's shape (gy must have it). Only AIMET 2.x
    numerics (integer clamp, half-even rounding): 1.x's float-domain mask is a QuantError.
    """
    if numerics.clamp != "integer" or numerics.rounding != "half_even":
        raise QuantError("fake_quant_ste models AIMET 2.x fake quantization (clamp='integer', "
                         "rounding='half_even'); got clamp="
                         f"{numerics.clamp!r}, rounding={numerics.rounding!r}")
    dt = numerics.dtype
    x = np.asarray(x, dtype=dt)
    g = _same_shape(gy, x.shape, "fake_quant_ste").astype(dt)
    if enc.is_pass_through:
        return g
    if enc.is_blocked:
        scale32, zp = enc.broadcast(x.shape)
    else:
        shape = _param_shape(enc.axis, enc.scale.shape[0] if enc.axis is not None else None, x)
        scale32, zp = enc.scale.reshape(shape), enc.zero_point.reshape(shape)
    if numerics.fake_quant == "reciprocal_float32":
        v = x * (_F32(1) / scale32).astype(dt)
    else:
        v = x / scale32.astype(dt)
    r = np.rint(v)
    inside = (r >= (enc.qmin - zp).astype(dt)) & (r <= (enc.qmax - zp).astype(dt))
    return np.where(inside, g, dt.type(0))


@dataclass(frozen=True, eq=False)
class LearnedRangeContext:
    """What `learned_range_forward` keeps for `learned_range_vjp` (module docstring notation).

    x_over_s: v = fl(x/s), float32, x's shape;  mask: m = [qmin ≤ x_int ≤ qmax], bool, x's shape;
    raw_scale r, scale s, min_over_s u, offset_raw ô, offset o: float32, the parameters' shape
    (() per tensor, (C,) per channel; u and ô are 0 for a symmetric quantizer);
    bitwidth, qmin, qmax, symmetric; axis: None per tensor, else the channel axis (non-negative).
    """

    x_over_s: np.ndarray
    mask: np.ndarray
    raw_scale: np.ndarray
    scale: np.ndarray
    min_over_s: np.ndarray
    offset_raw: np.ndarray
    offset: np.ndarray
    bitwidth: int
    qmin: int
    qmax: int
    symmetric: bool
    axis: int | None

    @property
    def encoding(self) -> Encoding:
        """The forward's encoding: scale s, zero_point −o (in [qmin, qmax] by the clamp of o)."""
        return Encoding(self.scale, -self.offset.astype(np.int64), self.bitwidth, self.qmin,
                        self.qmax, self.symmetric, self.axis)

    def param_shape(self) -> tuple:
        """Shape broadcasting the parameters against x (() per tensor)."""
        if self.axis is None:
            return ()
        shape = [1] * self.x_over_s.ndim
        shape[self.axis] = self.scale.shape[0]
        return tuple(shape)

    def reduce_axes(self) -> tuple:
        """The axes autograd sums over: all but the channel axis."""
        return tuple(a for a in range(self.x_over_s.ndim) if a != self.axis)


def _range_params(min, max, axis, x):
    with np.errstate(over="ignore"):       # a value beyond float32 becomes ±inf, refused below
        lo, hi = np.asarray(min, dtype=_F32), np.asarray(max, dtype=_F32)
    if lo.shape != hi.shape or lo.ndim > 1 or (lo.ndim == 1) != (axis is not None):
        raise QuantError(f"learned range: min and max must be scalars (per tensor, axis=None) or "
                         f"1-d arrays of one length with an axis (per channel); got shapes "
                         f"{lo.shape} and {hi.shape} with axis={axis}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise QuantError(f"learned range: min and max must be finite float32 values, got min={lo}, "
                         f"max={hi}")
    shape = _param_shape(axis, lo.shape[0] if axis is not None else None, x)
    return lo, hi, shape


def learned_range_forward(x, min, max, bitwidth, symmetric, axis=None):
    """(x̂, ctx): AIMET 2.42's fake quantization from the trainable (min, max), the autograd path.

        r = fl(fl(max − min)/N'),  s = max(|r|, ms),  N' = qmax − qmin,  ms = minimum_scale(N')
        o = 0 (symmetric);  o = clamp(round_he(fl(min/s)) − qmin, −qmax, −qmin) (asymmetric)
        x_int = round_he(fl(x/s)) − o,   x̂ = fl((clamp(x_int, qmin, qmax) + o)·s)
    all in float32 (x, min and max are cast to float32). Grid `integer_grid(bitwidth, symmetric)`:
    signed [−2^(b−1), 2^(b−1) − 1] symmetric, unsigned [0, 2^b − 1] asymmetric. Per tensor: min
    and max scalars, axis None; per channel: 1-d arrays of length C = x.shape[axis]. min > max is
    allowed (s = |r|). x̂ equals
    `quantize_dequantize(x, ctx.encoding, EncodingNumerics(fake_quant="divide"))` bit for bit.
    QuantError on a bitwidth outside 2..16, non-finite min/max, shapes that do not fit, or a range
    too wide for a float32 scale.
    """
    b = check_bitwidth(bitwidth)
    if b > 16:
        raise QuantError(f"learned range: bitwidth must be 2..16, got {b} (32 is pass-through, "
                         f"which has no range to learn)")
    qmin, qmax = integer_grid(b, symmetric)
    n = qmax - qmin
    x = np.asarray(x, dtype=_F32)
    lo, hi, shape = _range_params(min, max, axis, x)
    with np.errstate(over="ignore"):
        r = (hi - lo) / _F32(n)
    if not np.all(np.isfinite(r)):
        raise QuantError(f"learned range [{lo}, {hi}]: max − min overflows float32")
    s = np.maximum(np.abs(r), minimum_scale(n))
    if symmetric:
        u = np.zeros_like(s)
        o_raw = np.zeros_like(s)
        o = np.zeros_like(s)
    else:
        u = lo / s
        o_raw = np.rint(u) - _F32(qmin)
        o = np.clip(o_raw, _F32(-qmax), _F32(-qmin))
    sb, ob = s.reshape(shape), o.reshape(shape)
    v = x / sb
    x_int = np.rint(v) - ob
    mask = (x_int >= qmin) & (x_int <= qmax)
    y = (np.clip(x_int, _F32(qmin), _F32(qmax)) + ob) * sb
    ctx = LearnedRangeContext(
        x_over_s=v, mask=mask, raw_scale=np.asarray(r), scale=np.asarray(s),
        min_over_s=np.asarray(u), offset_raw=np.asarray(o_raw), offset=np.asarray(o), bitwidth=b,
        qmin=qmin, qmax=qmax, symmetric=bool(symmetric),
        axis=None if axis is None else axis % x.ndim)
    return y, ctx


def learned_range_vjp(ctx: LearnedRangeContext, gy):
    """(∂L/∂x, ∂L/∂min, ∂L/∂max) for gy = ∂L/∂x̂ of `learned_range_forward` (module docstring).

        ∂L/∂x = gy·m
        G_s = Σ gy·(clamp(round(v), o + qmin, o + qmax) − v·m),   G_o = Σ gy·(1 − m)·s
        asymmetric: G_u = G_o·[−qmax ≤ ô ≤ −qmin],  G_s += −G_u·fl(u/s),  G_min = G_u/s
        G_r = G_s·[|r| ≥ ms]·sign(r),   ∂L/∂max = G_r/N',   ∂L/∂min = G_min − G_r/N'
    Σ over every axis but the channel axis (all axes per tensor). float32 throughout; ∂L/∂x has x's
    shape, ∂L/∂min and ∂L/∂max the parameters' shape (() or (C,)).
    """
    v, m = ctx.x_over_s, ctx.mask
    g = _same_shape(gy, v.shape, "learned_range_vjp").astype(_F32)
    shape, axes = ctx.param_shape(), ctx.reduce_axes()
    zero = _F32(0)
    gx = np.where(m, g, zero)
    sb, ob = ctx.scale.reshape(shape), ctx.offset.reshape(shape)
    rounded = np.rint(v)
    per_elem = np.where(m, rounded - v, np.clip(rounded, ob + _F32(ctx.qmin), ob + _F32(ctx.qmax)))
    g_s = np.sum(g * per_elem, axis=axes, dtype=_F32)
    s, r = ctx.scale, ctx.raw_scale
    if ctx.symmetric:
        g_min_via_u = np.zeros_like(s)
    else:
        g_o = np.sum(np.where(m, zero, g * sb), axis=axes, dtype=_F32)
        passes = (ctx.offset_raw >= _F32(-ctx.qmax)) & (ctx.offset_raw <= _F32(-ctx.qmin))
        g_u = np.where(passes, g_o, zero)
        g_s = g_s + (-g_u) * (ctx.min_over_s / s)
        g_min_via_u = g_u / s
    n = ctx.qmax - ctx.qmin
    g_r = np.where(np.abs(r) >= minimum_scale(n), g_s, zero) * np.sign(r)
    g_diff = g_r / _F32(n)
    return gx, np.asarray(g_min_via_u - g_diff), np.asarray(g_diff)
