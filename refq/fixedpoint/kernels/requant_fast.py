"""Requantization of an exact accumulator straight into the output dtype, block by block in float64.

`requantize_fast(acc, bounds, ...)` (and `Requantizer`, the same with its parameters prepared once)
returns what `requantize_bounded` (the definition, evaluated in int64 by `scaling`) returns, in the
output dtype, and the exact (min, max) of acc. It reads acc once: the accumulator (float32,
float64, int32 or int64 holding integers) is cut into blocks of whole rows (BLOCK elements), and
every block goes through all the steps, to the output, before the next one.

Integer schemes, in float64. Each scheme's result plus the zero point is floor(Q / 2^k) for an
integer Q = x·M + A + NEG·[x·M < T] with per-channel integers M, A, NEG, T and k:
    tflite_double  left = max(shift, 0), r = max(−shift, 0), k = 31 + r, M = m·2^left,
                   A = 2^30 + 2^31·(h + zp·2^r) with h = 2^(r−1) (0 when r = 0),
                   NEG = −2^31 where r > 0 (else 0), T = −2^30:
                   y = (x·M + 2^30) >> 31 is SRDHM, [y < 0] = [x·M < −2^30], and
                   (y − [y < 0] + h + zp·2^r) >> r (`scaling.tflite_double_core`) is one floor of
                   (x·M + 2^30 + 2^31·(h − [y < 0] + zp·2^r)) / 2^(31 + r), because
                   floor(floor(a / 2^31) / 2^r) = floor(a / 2^(31 + r)) and an integer added to
                   floor(a / 2^31) enters as 2^31 times itself. Valid when x·2^left needs no wrap.
    single_round   k = 31 − shift, M = m, A = 2^(k−1) + zp·2^k, no NEG.
    tosa_single    k = shift, M = m, A = 2^(k−1) + zp·2^k, no NEG.
    tosa_double    k = shift, M = m, A = 2^(k−1) + [k > 31]·2^30 + zp·2^k, NEG = −2^31·[k > 31],
                   T = 0 (`scaling.mul_round_shift_core`: ±2^30 by the sign of x·m).
    tosa16         as tosa_single.
Evaluation (`_Dyadic`): q = x·(M·2^−k) + A·2^−k, the NEG term subtracted at the scale 2^−31
where it is one unit, the clamp, the floor and the cast (`_to_output`). The constant is folded
with act_min (A·2^−k − act_min: q is then the output minus act_min, >= 0 after the clamp) unless
|zp − act_min|·2^k would take most of the 2^53, in which case the zero point is added after the
floor. Exactness: every value formed is a power of two times an integer of magnitude at most
|x|·M + |A| + |NEG|; when that is at most 2^53 (checked per block from the block's min and max)
each of them is a float64, so each operation, whose exact result is one of them, is exact, as are
the scalings by powers of two, the floor and the compares with integer bounds. A block that fails
the check (or would need the int32 wrap of the left shift) is evaluated by `requantize_bounded`
itself. The check holds for accumulators up to about 2^53 / (M·2^left); it needs |A| < 2^52,
i.e. a rounding shift of at most about 21 bits: the channels with a longer one (a tiny
multiplier) are evaluated by `requantize_bounded` column by column after each block.

Float schemes (`_Float`) run the definition's own float operations (`scaling.float_values`) on the
block: the same products, sums and roundings in the same precision, hence the same floats; the
clamp and the zero point are exact on those integer-valued floats (|value| <= 2^62 proven by the
plan; the clip comes first, then + zp on values within [act_min − zp, act_max − zp]).

Preconditions are decided from `bounds` ((lo, hi) holding every value of acc): when they do not
prove everything `requantize_bounded` would check (acc within int32 / int48, the TOSA REQUIRE, the
int32 results of single rounding and apply_scale_16, a finite float result) or a parameter is out
of its range, `requantize_fast` returns None and the caller takes the plain path, which raises
the definition's errors.
"""
from __future__ import annotations

import numpy as np

from ..requantize import FLOAT_SCHEMES, INTEGER_SCHEMES, requantize_bounded
from ..rounding import INT32_MAX, INT32_MIN
from ..scaling import float_plan, tflite_plan, tosa16_plan

__all__ = ["BLOCK", "Requantizer", "requantize_fast"]

#: Elements per block (speed only: a block and its float64 work arrays stay in cache).
BLOCK = 1 << 17
#: Least length of the rows a block is viewed as (speed only; `Requantizer`).
TILE = 8192
_EXACT = 1 << 53
_INT48 = (-(1 << 47), (1 << 47) - 1)
_MULT = {"tflite_double": (INT32_MAX, -31, 30), "single_round": (INT32_MAX, -31, 30),
         "tosa_single": (INT32_MAX, 2, 62), "tosa_double": (INT32_MAX, 2, 62),
         "tosa16": ((1 << 15) - 1, 2, 62)}


def _pow2(e):
    return np.ldexp(1.0, np.asarray(e, dtype=np.int64))


class _Dyadic:
    """The float64 evaluation of an integer scheme (module docstring). With a NEG term (some
    channel has one) the scaling goes in two steps, 2^−31 then 2^−(k−31), so that NEG·2^−31 = −1:
    q = x·(M·2^−31); mask = [q < T·2^−31] (−inf on channels without NEG); q += A·2^−31;
    q −= mask; q *= 2^−(k−31). Without: q = x·(M·2^−k) + A·2^−k. Either way every value is an
    integer of magnitude <= |x|·M + |A| + 2^31 times a power of two. [xlo, xhi]: the block
    extremes for which that integer stays within 2^53 (and x·2^left needs no int32 wrap).
    When zp <= act_min the NEG term is left out: it applies where x·M < T, and there the value
    without it is still <= zp (tflite_double: y < 0 gives floor((y + 2^(r−1))/2^r) <= 0;
    tosa_double: x·m < 0 gives floor((x·m + 2^(k−1) + 2^30)/2^k) <= 0 for k > 31), so the clamp
    maps it to act_min, as it maps the value with it (which is smaller still)."""

    def __init__(self, scheme, mult, s, zp, lo, hi):
        m = mult.astype(np.float64)
        neg = None
        if scheme == "tflite_double":
            left, r = np.maximum(s, 0), np.maximum(-s, 0)
            k, big_m = 31 + r, m * _pow2(left)
            a0 = 2.0 ** 30 + 2.0 ** 31 * np.where(r > 0, _pow2(r - 1), 0.0)
            if np.any(r > 0):
                neg, t = r > 0, -2.0 ** 30
            lmax = int(left.max())
        else:
            k, big_m = (31 - s if scheme == "single_round" else s), m
            a0 = _pow2(k - 1)
            if scheme == "tosa_double" and np.any(k > 31):
                a0 = a0 + np.where(k > 31, 2.0 ** 30, 0.0)
                neg, t = k > 31, 0.0
            lmax = 0
        if zp <= lo:
            neg = None  # every value NEG changes is clamped to act_min anyway (class docstring)
        # A must leave room within 2^53: a channel with a longer rounding shift (about 21 bits) is
        # evaluated by the definition, column by column (`bad`), and gets 0 here
        bad = np.abs(a0) >= 2.0 ** 52
        self.bad = np.flatnonzero(bad) if bad.any() and not bad.all() else None
        a0, big_m = np.where(bad, 0.0, a0), np.where(bad, 0.0, big_m)
        a1 = np.where(bad, 0.0, a0 + (zp - lo) * _pow2(k))  # zp − act_min folded in
        folded = np.max(np.abs(a1)) < 2.0 ** 52
        a, self.base = (a1, lo) if folded else (a0, zp)
        amax, mmax = float(np.max(np.abs(a))), int(big_m.max())
        room = _EXACT - int(amax) - (0 if neg is None else 1 << 31) if amax <= _EXACT else -1
        bound = -1 if room < 0 or bad.all() else (room if mmax == 0 else room // mmax)
        self.xlo, self.xhi = max(-bound, INT32_MIN >> lmax), min(bound, INT32_MAX >> lmax)
        j = k if neg is None else 31
        self.ms, self.as_ = big_m * _pow2(-j), a * _pow2(-j)
        self.ts = None if neg is None else np.where(neg, t * 2.0 ** -31, -np.inf)
        self.s2 = None if neg is None else _pow2(j - k)
        self.zp, self.lo, self.hi, self.m, self.s = zp, lo, hi, mult, s
        self.dtype = np.float64

    def exact(self, blo, bhi):
        return self.xlo <= blo and bhi <= self.xhi

    def run(self, v, out, c, work):
        q, mask, _ = work
        if v.dtype == np.float64:
            np.multiply(v, c["ms"], out=q)
        else:  # the exact cast, then the product in place (faster than one mixed-type product)
            np.copyto(q, v)
            q *= c["ms"]
        if c["ts"] is not None:
            np.less(q, c["ts"], out=mask)
        q += c["as_"]
        if c["ts"] is not None:
            q -= mask
            q *= c["s2"]
        _to_output(q, out, self.base, self.lo, self.hi, integral=False)


class _Float:
    """A float scheme: the definition's operations (`scaling.float_values`) on each block; the
    half-away rounding as t + trunc(2·(v − t)), t = trunc(v): v − t is exact, |v − t| < 1, and
    trunc(2·(v − t)) is sign(v)·[|v − t| >= 0.5], the correction of `round_half_away_float`."""

    def __init__(self, scheme, m, offset, zp, lo, hi):
        self.dtype = np.float32 if scheme == "float32_rne" else np.float64
        self.half_away = scheme == "float_half_away"
        self.ms = np.asarray(m, dtype=self.dtype).reshape(-1)
        self.off = None if offset is None else self.dtype(offset)
        self.zp, self.lo, self.hi = 0 if zp is None else int(zp), lo, hi
        self.ts = self.as_ = self.s2 = None

    def exact(self, blo, bhi):
        return True

    def run(self, v, out, c, work):
        q, _, t = work
        # float64(x)·m, or float32(x)·m in float32: x is cast to the loop's dtype first, and
        # float32(x) = float32(float64(x)) for the integers |x| <= 2^53
        np.multiply(v, c["ms"], out=q, dtype=q.dtype)
        if self.off is not None:
            q += self.off
        if self.half_away:
            np.trunc(q, out=t)
            q -= t
            q *= 2
            np.trunc(q, out=q)
            q += t
        else:
            np.rint(q, out=q)
        _to_output(q, out, self.zp, self.lo, self.hi, integral=True)


def _to_output(q, out, base, lo, hi, integral: bool):
    """out = clip(floor(q) + base, lo, hi) (q integer-valued when `integral`; floor(q) + base is
    then the scheme's value plus its zero point). The clip comes first, on the exact bounds
    lo − base, hi − base (clip(floor(q)) = floor(clip(q)) for integer bounds), then + base on
    values that are then small. With base = lo and an output of at most 16 bits the floor is the
    cast itself: after the clip to [0, hi − lo] the values are >= 0, where the cast (which
    truncates) is floor, into the unsigned view of out, and + lo is added there modulo 2^bits,
    which gives the two's-complement value v + lo of out's dtype (v + lo lies in it)."""
    if base == lo and out.itemsize <= 2:
        np.clip(q, 0, hi - lo, out=q)
        u = out.view(np.uint8 if out.itemsize == 1 else np.uint16)
        np.copyto(u, q, casting="unsafe")
        if lo:
            u += lo % (1 << (8 * out.itemsize))
        return
    if not integral:
        np.floor(q, out=q)
    np.clip(q, lo - base, hi - base, out=q)
    if base:
        q += base
    np.copyto(out, q, casting="unsafe")


def _ints_in(a, lo, hi):
    return a.dtype.kind in "iu" and a.size and lo <= int(a.min()) and int(a.max()) <= hi


def _form(scheme, multiplier, shift, zp, lo, hi, zp_before_round, channels):
    """The float evaluation of `scheme` (a _Dyadic or _Float), or None for parameters outside
    the ranges `requantize_bounded` accepts (it raises on them)."""
    if not (INT32_MIN <= zp <= INT32_MAX and lo <= hi):
        return None
    if scheme in INTEGER_SCHEMES:
        m, s = np.asarray(multiplier), np.asarray(shift)
        mmax, slo, shi = _MULT[scheme]
        if zp_before_round or not (_ints_in(m, 0, mmax) and _ints_in(s, slo, shi)) or \
                m.ndim > 1 or s.ndim > 1 or {m.size, s.size} - {1, channels}:
            return None
        return _Dyadic(scheme, *(a.astype(np.int64).reshape(-1) for a in (m, s)), zp, lo, hi)
    if scheme not in FLOAT_SCHEMES:
        return None
    m = np.asarray(multiplier)
    if (shift is not None and np.any(np.asarray(shift) != 0)) or m.dtype.kind not in "fiu" or \
            m.ndim > 1 or m.size not in (1, channels):
        return None
    if scheme == "float32_rne" and max(abs(lo - zp), abs(hi - zp), abs(lo), abs(hi)) > 1 << 24:
        return None  # the clamp bounds must be float32 values
    return _Float(scheme, m, *((zp, None) if zp_before_round else (None, zp)), lo, hi)


def _proven(form, scheme, bounds) -> bool:
    """Whether `bounds` (holding every accumulator value) prove the preconditions of the
    definition that depend on the values: acc within int32 (int48 for tosa16), the TOSA REQUIRE,
    the int32 result of single rounding and apply_scale_16, a finite float result in range."""
    lim = _INT48 if scheme == "tosa16" else (INT32_MIN, INT32_MAX)
    if not (lim[0] <= bounds[0] and bounds[1] <= lim[1]):
        return False
    if isinstance(form, _Float):
        rounding = "half_away" if form.half_away else "half_even"
        precision = "float32" if form.dtype == np.float32 else "float64"
        return float_plan(form.ms, precision, rounding, form.off, bounds,
                          int32=scheme == "float_half_away", zp=form.zp)[2] is None
    m, s = form.m, form.s
    if scheme == "single_round":
        return tflite_plan(m, s, bounds, True, form.zp)[2] is None
    if scheme == "tosa16":
        return tosa16_plan(m, s, bounds, form.zp)[2] is None
    if scheme in ("tosa_single", "tosa_double"):
        half = 1 << (int(s.min()) - 1)
        return -half <= bounds[0] and bounds[1] < half
    return True


def _tiled(v, reps, dtype):
    """A per-channel constant as a scalar when uniform, else its (C,) values repeated reps times."""
    if v is None:
        return None
    v = np.asarray(v, dtype=dtype).reshape(-1)
    if np.all(v == v[0]):
        return dtype(v[0])
    return np.tile(v, reps)


class Requantizer:
    """`requantize_fast` with its parameters prepared once, for the accumulators of one node:
    `Requantizer(...)(acc, bounds, dtype)`. `ok` is False when a parameter lies outside its range:
    every call then returns None.

    Layout (speed only): a block of acc is viewed as rows of `period` elements, a multiple of the
    channel count C of at least TILE, and the per-channel constants are repeated to that length,
    so that every operation runs over long contiguous rows with the constants broadcast down the
    rows (a last block of another length is viewed as rows of C)."""

    def __init__(self, multiplier, shift, scheme: str, *, zero_point, act_min, act_max,
                 zp_before_round: bool = False, channels: int):
        self.args = (multiplier, shift, scheme)
        self.zp, self.lo, self.hi = int(zero_point), int(act_min), int(act_max)
        self.zp_before_round = bool(zp_before_round)
        self.form = _form(scheme, multiplier, shift, self.zp, self.lo, self.hi,
                          self.zp_before_round, channels)
        self.ok, self.channels = self.form is not None, channels
        self.period = channels * max(1, -(-TILE // channels))
        self.step = max(1, BLOCK // self.period) * self.period
        if self.ok:
            f = self.form
            self.consts = {reps: {k: _tiled(getattr(f, k), reps,
                                            f.dtype if k == "ms" else np.float64)
                                  for k in ("ms", "as_", "ts", "s2")}
                           for reps in (1, self.period // channels)}

    def __call__(self, acc, bounds, dtype=np.int64, offset: int = 0):
        """(y, (lo, hi)) or None, as `requantize_fast`."""
        acc = np.asarray(acc)
        channels = acc.shape[-1] if acc.ndim else 1
        info = np.iinfo(dtype)
        if not (self.ok and channels == self.channels and acc.dtype.kind in "iuf" and
                info.min <= self.lo and self.hi <= info.max and
                _proven(self.form, self.args[2], bounds)):
            return None
        y = np.empty(acc.shape, dtype)
        if not acc.size:
            return y, (0, 0)
        flat, yf = acc.reshape(-1), y.reshape(-1)
        step, form = min(self.step, flat.size), self.form
        work = (np.empty(step, form.dtype), np.empty(step, bool), np.empty(step))
        d = np.empty(step) if offset else None
        amin, amax = [], []
        for i in range(0, flat.size, step):
            n = min(step, flat.size - i)
            blk, out = flat[i:i + n], yf[i:i + n]
            blo, bhi = int(blk.min()) - offset, int(blk.max()) - offset
            amin.append(blo)
            amax.append(bhi)
            v = blk if not offset else np.subtract(blk, offset, out=d[:n], dtype=np.float64)
            if not form.exact(blo, bhi):
                m, sh, scheme = self.args
                rows = v.reshape(-1, channels)
                np.copyto(out, requantize_bounded(rows, (blo, bhi), m, sh, scheme,
                                                  zero_point=self.zp, act_min=self.lo,
                                                  act_max=self.hi,
                                                  zp_before_round=self.zp_before_round).ravel(),
                          casting="unsafe")
                continue
            width = self.period if n % self.period == 0 else channels
            shape = (n // width, width)
            form.run(v.reshape(shape), out.reshape(shape), self.consts[width // channels],
                     tuple(w[:n].reshape(shape) for w in work))
            if getattr(form, "bad", None) is not None:  # those channels by the definition
                cols, m, sh, scheme = form.bad, *self.args
                rows, outs = v.reshape(-1, channels), out.reshape(-1, channels)
                outs[:, cols] = requantize_bounded(
                    rows[:, cols], (blo, bhi), np.broadcast_to(m, (channels,))[cols],
                    np.broadcast_to(sh, (channels,))[cols], scheme, zero_point=self.zp,
                    act_min=self.lo, act_max=self.hi, zp_before_round=self.zp_before_round)
        return y, (min(amin), max(amax))


def requantize_fast(acc, bounds, multiplier, shift, scheme: str, *, zero_point, act_min, act_max,
                    zp_before_round: bool = False, dtype=np.int64, offset: int = 0):
    """(y, (lo, hi)): y = requantize_bounded(acc − offset, bounds, ...) as an array of `dtype`,
    (lo, hi) the exact min and max of acc − offset; or None when `bounds` (holding every value of
    acc − offset) and the parameters do not prove the preconditions (module docstring).

    acc: an integer array, or a float32/float64 array holding integers, of shape (..., C) with
    per-channel parameters of shape (C,) or (1,); offset: an integer subtracted first (exactly,
    in float64); dtype: an integer dtype holding [act_min, act_max].
    """
    acc = np.asarray(acc)
    return Requantizer(multiplier, shift, scheme, zero_point=zero_point, act_min=act_min,
                       act_max=act_max, zp_before_round=zp_before_round,
                       channels=acc.shape[-1] if acc.ndim else 1)(acc, bounds, dtype, offset)
