"""The operands of an exact integer contraction (int_conv2d, int_dense) and the dtype they prove
exact.

For x − input_zp within [xlo, xhi] and w − weight_zp, every partial sum that any summation order
can form is bounded per output channel by `channel_bound` (from the signs and sums of the
channel's weights; at most max|x − input_zp|·Σ|w − weight_zp| + |bias|). Every integer of
magnitude <= 2^24 (`FLOAT32_EXACT`) is a float32 and every one <= 2^53 (`FLOAT64_EXACT`) a
float64, so a floating copy of the operands accumulates exactly when the bound is within its
limit; a depthwise convolution may use int32 (`INT32_EXACT`: no product or partial sum then leaves
int32). `blas_dtype` picks the dtype, `padded` and `Weights.blas` make the copies, and `Weights`
keeps what a node's weights give (wd = w − weight_zp, the per-channel sums, the channel ranges
whose float32 parts are exact: `Weights.split`). `blas_is_exact` is the coarser bound
k·max|x − input_zp|·max|w − weight_zp| + max|bias| of the same argument; `check_operands` refuses
a reduction that may leave int64.

Weight zero point. It is one integer (the attribute weight_zp) or one per output channel (the
optional parameter weight_zp [O], `weight_zero_points`): acc[o] = Σ (x − zx)·(w[o] − zw[o]) +
bias[o]. `Weights` subtracts it once per node, wd[o] = w[o] − zw[o] (exact in int64), and every
path contracts x − zx with wd. The bounds above are stated per output channel on wd[o] (pos[o],
neg[o], max|wd|), so they, the dtype they prove and the proofs hold unchanged for a zero point per
channel: output channel o's terms are the products (x − zx)·wd[o, ...], the same form whatever
zw[o] is. The expansion Σx·w − zx·Σw[o] − zw[o]·Σx + K·zx·zw[o] is never formed (its terms are
larger than the sum itself, and would need a wider bound); with int8/uint8 codes and zero points
in [−128, 255], |wd| <= 383, within what `check_operands` and the bounds assume (any integers).
"""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError
from ..rounding import INT32_MAX, _bounds
from .common import int_values

__all__ = ["FLOAT64_EXACT", "FLOAT32_EXACT", "INT32_EXACT", "INT64_EXACT", "blas_is_exact",
           "check_operands", "Weights", "channel_bound", "operands", "blas_dtype", "padded",
           "blas_params", "weight_zero_points", "subtract_weight_zero_point"]


#: Every integer of magnitude <= 2^53 is exactly representable in float64.
FLOAT64_EXACT = 1 << 53
#: Every integer of magnitude <= 2^24 is exactly representable in float32.
FLOAT32_EXACT = 1 << 24
#: The int32 depthwise path needs every partial sum (and the sum with the bias) within int32.
INT32_EXACT = INT32_MAX
#: The int64 path needs every partial sum below 2^63.
INT64_EXACT = (1 << 63) - 1


def blas_is_exact(k: int, x_absmax: int, w_absmax: int, bias_absmax: int = 0,
                  limit: int | None = None) -> bool:
    """True when a float64 contraction of length k of integers bounded by x_absmax and w_absmax,
    plus a bias bounded by bias_absmax, is exact in any summation order:
    k·x_absmax·w_absmax + bias_absmax <= 2^53 (Python ints, no overflow). limit=FLOAT32_EXACT
    asks the same of a float32 contraction (<= 2^24)."""
    limit = FLOAT64_EXACT if limit is None else limit
    return int(k) * int(x_absmax) * int(w_absmax) + int(bias_absmax) <= limit


def check_operands(k, xa, wa, what):
    if int(k) * int(xa) * int(wa) > INT64_EXACT:
        raise FixedPointError(f"{what}: a reduction of {k} products of |x - input_zp| <= {xa} and "
                              f"|w - weight_zp| <= {wa} may leave int64; no exact path exists")


def weight_zero_points(params, attrs):
    """The weight zero point of an int_conv2d / int_dense / int_conv_transpose2d node: the int
    attribute weight_zp, or, when the node has the parameter weight_zp (one integer per output
    channel, axis 0 of the weight), that parameter as int64 [O] (the attribute is then 0)."""
    if "weight_zp" in params:
        return np.asarray(params["weight_zp"]).astype(np.int64).reshape(-1)
    return int(attrs["weight_zp"])


def subtract_weight_zero_point(w, zw):
    """w − zw as int64 with zw one integer or one per output channel (axis 0 of w)."""
    w = np.asarray(w, dtype=np.int64)
    if np.ndim(zw):
        return w - np.asarray(zw, np.int64).reshape((-1,) + (1,) * (w.ndim - 1))
    return w - zw if zw else w


class Weights:
    """A node's weight operands: wd = w − weight_zp (int64; weight_zp one integer or one per
    output channel, `weight_zero_points`), bias (int64 or None), per output
    channel pos[o] = Σ max(wd[o], 0) and neg[o] = Σ max(−wd[o], 0) over its taps and
    babs[o] = |bias[o]|, max|wd|, taps per output k, and the BLAS copies (`blas`, per dtype,
    made on first use)."""

    def __init__(self, params, attrs):
        self.wd = subtract_weight_zero_point(params["weight"], weight_zero_points(params, attrs))
        self.bias = np.asarray(params["bias"], dtype=np.int64) if "bias" in params else None
        o = len(self.wd)
        flat = self.wd.reshape(o, -1)
        self.pos = np.maximum(flat, 0).sum(axis=1) if flat.size else np.zeros(o, np.int64)
        self.neg = self.pos - flat.sum(axis=1) if flat.size else np.zeros(o, np.int64)
        self.babs = np.zeros(o, np.int64) if self.bias is None else np.abs(self.bias)
        self.wa = int(max(flat.max(), -flat.min())) if flat.size else 0
        self.k = int(np.prod(self.wd.shape[1:]))
        self._blas, self._splits = {}, {}

    def split(self, xlo: int, xhi: int):
        """[(c0, c1), ...]: consecutive ranges of input channels such that each one's part of the
        accumulator (its taps, with the bias in the first part) has a `channel_bound` within
        FLOAT32_EXACT, for x − input_zp within [xlo, xhi]; None when a single channel exceeds it.
        Greedy: each range is the longest that fits (the bound only grows with more channels)."""
        key = (xlo, xhi)
        if key not in self._splits:
            o, c = self.wd.shape[0], self.wd.shape[-1]
            if "cum" not in self._splits:  # Σ max(±w, 0) over the taps, cumulated over channels
                per = self.wd.reshape(o, -1, c)
                self._splits["cum"] = [
                    np.concatenate([np.zeros((o, 1), np.int64), np.cumsum(t.sum(axis=1), axis=1)],
                                   axis=1) for t in (np.maximum(per, 0), np.maximum(-per, 0))]
            cum = self._splits["cum"]
            h, low = max(xhi, 0), max(-xlo, 0)
            parts, start = [], 0
            while start < c and parts is not None:
                pos, neg = (t[:, start + 1:] - t[:, start:start + 1] for t in cum)
                bound = np.maximum(h * pos + low * neg, low * pos + h * neg)
                if not parts:
                    bound = bound + self.babs[:, None]
                fits = int(np.sum(bound.max(axis=0) <= FLOAT32_EXACT))  # a prefix: bound grows
                parts = parts + [(start, start + fits)] if fits else None
                start += fits
            self._splits[key] = parts
        return self._splits[key]

    def blas(self, dtype, channels=None, bias: bool = True):
        """The float conv's parameters in `dtype`: the weight (its input channels c0:c1 when
        `channels` = (c0, c1)) and the bias (unless bias is False)."""
        key = (dtype, channels, bias)
        if key not in self._blas:
            wd = self.wd if channels is None else self.wd[..., channels[0]:channels[1]]
            self._blas[key] = blas_params(wd, self.bias if bias else None, dtype)
        return self._blas[key]


def channel_bound(xlo: int, xhi: int, pos, neg, babs) -> int:
    """A bound (Python int) on |acc| and on every partial sum, in any order, of acc's terms,
    for x − input_zp within [xlo, xhi] and the per-output-channel pos, neg, babs of `Weights`.
    With h = max(xhi, 0) and l = max(−xlo, 0), a term (x − input_zp)·w of output o is at most
    h·w (w > 0) or l·|w| (w < 0) and at least −l·w (w > 0) or −h·|w| (w < 0), so any sum of
    its terms lies in [−(l·pos[o] + h·neg[o]), h·pos[o] + l·neg[o]], and the bias adds at most
    babs[o]; the bound is the largest of these over o. It is at most max|x − input_zp|·Σ|w| + |b|,
    and about half of that for x − input_zp of one sign (a ReLU output) with balanced weights."""
    if not pos.size:
        return 0
    h, low = max(xhi, 0), max(-xlo, 0)
    top = max(h, low) * int((pos + neg).max()) + int(babs.max())
    if top >= 1 << 62:  # loose, beyond any exact BLAS path
        return top
    return int(np.max(np.maximum(h * pos + low * neg, low * pos + h * neg) + babs))


def operands(x, params, attrs, what, memo=None):
    """(x as given, (min, max) of x − input_zp, the node's `Weights` (kept in memo, a dict for
    this node that `run_int` keeps during one run, when given), `channel_bound`), with the int64
    bound of the reduction checked (`check_operands`)."""
    x = int_values(x, f"{what} input")
    w = memo.get("weights") if memo is not None else None
    if w is None:
        w = Weights(params, attrs)
        if memo is not None:
            memo["weights"] = w
    lo, hi = _bounds(x)
    zp = attrs["input_zp"]
    xa = max(abs(lo - zp), abs(hi - zp)) if x.size else 0
    check_operands(w.k, xa, w.wa, what)
    return x, (lo - zp, hi - zp), w, \
        channel_bound(lo - zp, hi - zp, w.pos, w.neg, w.babs) if x.size else 0


def blas_dtype(bound: int, depthwise: bool):
    """The accumulation dtype proven exact by `bound` (module docstring), or None (int64)."""
    if bound > FLOAT64_EXACT:
        return None
    if depthwise and bound <= INT32_EXACT:
        return np.int32
    return np.float32 if bound <= FLOAT32_EXACT else np.float64


def padded(x, zp, pads, dtype):
    """x − zp in `dtype` (exact: the caller proved the values fit), padded with 0 by pads =
    (top, bottom, left, right): the float conv's own zero padding, done in the same copy (a
    converting copy, then the subtraction in `dtype`: faster than a mixed-type subtraction)."""
    t, b, l, r = pads
    n, h, w, c = x.shape
    xp = np.empty((n, h + t + b, w + l + r, c), dtype)
    inner = xp[:, t:t + h, l:l + w]
    np.copyto(inner, x, casting="unsafe")
    if zp:
        np.subtract(inner, dtype(zp), out=inner)
    for border in (xp[:, :t], xp[:, t + h:], xp[:, t:t + h, :l], xp[:, t:t + h, l + w:]):
        border.fill(0)
    return xp


def blas_params(wd, bias, dtype=np.float64):
    fp = {"weight": wd.astype(dtype)}
    if bias is not None:
        fp["bias"] = bias.astype(dtype)
    return fp
