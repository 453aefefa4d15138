"""The arithmetic of the requantization schemes, fused into few in-place int64 passes.

`requantize.py` holds the public functions (their preconditions, rounding rules and sources); this
module holds what they evaluate once the preconditions are checked: a *plan* (core, constants,
checked) per scheme, the output zero point included. `core(x, out, **consts)` fills int64 `out`
with the scaled values of x (int64, int32, or float64 holding integers exactly) plus the zero point,
elementwise, the constants broadcasting per channel; `run_plan` runs it block by block
(`blocks.map_blocks`) when `checked` is None, i.e. when the result's own condition (single rounding
and apply_scale_16: the result fits int32; float schemes: a finite result within 2^62,
float_half_away also within int32) is proven from the operand bounds. Otherwise `checked(a)`
evaluates the whole array and raises FixedPointError on the first offending element, as the
unfused definition does, before adding the zero point.

Proofs from bounds: every core is monotone non-decreasing in x for a non-negative multiplier (a
product with m >= 0, additions of constants, floor shifts, a rounding of floats), so its values on
[lo, hi] lie between its values at lo and at hi, channel by channel (`_result_bounds`).
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from .blocks import map_blocks
from .multiplier import round_half_away_float
from .rounding import INT32_MAX, INT32_MIN, _check_range, _out

_I64 = np.int64


def _ints(x, out):
    """x itself when int64, else x (int32, or float64 holding integers exactly) converted into
    `out`."""
    if x.dtype == _I64:
        return x
    np.copyto(out, x, casting="unsafe")
    return out


def tflite_double_core(x, out, m, left, wrap, right, half, round_mask, zp):
    """TFLite double rounding of int32 x, fused (§2.2; the definition is
    `requantize.multiply_by_quantized_multiplier`), plus the zero point:
        v = wrap32(x·2^left)                      (left None: v = x; wrap False: proven to fit)
        y = srdhm(v, m) = (v·m + 2^30) >> 31      (m >= 0 excludes SRDHM's INT32_MIN² case)
        z = RDBPOT(y, right) + zp = (y − [y < 0] + half) >> right, half = 2^(right−1) + zp·2^right
    For right >= 1, (y + 2^(right−1) − [y < 0]) >> right is gemmlowp's (y >> e) + [r > (mask >> 1)
    + [y < 0]] (with y = q·2^e + r: q + [r >= 2^(e−1) + [y < 0]]), and adding zp·2^right before
    the floor shift adds zp after it. [y < 0] = [v·m < −2^30] (a floor shift by a positive amount
    keeps the sign), masked by `round_mask` = [right > 0] (None when every right > 0); right None
    when every right = 0 (then z = y + zp; zp None adds nothing).
    Exactness: |x·2^left| <= 2^61, |v·m| < 2^62, |y| <= 2^31 and |zp·2^right| <= 2^62, so every
    value stays in int64.
    """
    x = _ints(x, out)
    if left is not None:
        np.left_shift(x, left, out=out)
        if wrap:  # two's-complement wrap to 32 bits: ((v & (2^32 − 1)) ^ 2^31) − 2^31
            out &= 0xFFFFFFFF
            out ^= 1 << 31
            out -= 1 << 31
        x = out
    np.multiply(x, m, out=out)
    if right is not None:
        neg = out < -(1 << 30)
        if round_mask is not None:
            neg &= round_mask
    out += 1 << 30
    out >>= 31
    if right is not None:
        out -= neg
        out += half
        out >>= right
    elif zp is not None:
        out += zp


def mul_round_shift_core(x, out, m, rnd, neg, shift, zp):
    """out = ((x·m + rnd + (neg where x·m < 0)) >> shift) + zp (floor shift; zp None adds nothing).

    rnd = 2^(shift−1), neg None: one rounding half toward +inf — TFLite single rounding (shift =
    31 − tfl_shift), TOSA apply_scale_32 SINGLE_ROUND and apply_scale_16 (§2.3, §2.6).
    TOSA DOUBLE_ROUND (§2.6) adds ±2^30 for shift > 31 by the sign of the value: there rnd =
    2^(shift−1) + 2^30 and neg = −2^31 (0 on the other channels), so a negative product gets
    2^(shift−1) − 2^30. The sign of x·m is that of x when m > 0; when m = 0 both additions give
    (2^(shift−1) ± 2^30) >> shift = 0 for shift > 31. Exactness: |x·m| < 2^62 (int32·int32 or
    int48·int16) and rnd <= 2^61 + 2^30, so the sum stays below 2^63.
    """
    x = _ints(x, out)
    np.multiply(x, m, out=out)
    if neg is not None:
        t = out >> 63
        t &= neg
    out += rnd
    if neg is not None:
        out += t
    out >>= shift
    if zp is not None:
        out += zp


def float_values(x, m, offset, precision: str, rounding: str) -> np.ndarray:
    """round(x·m + offset) as floats: precision "float64" (float64(x)·float64(m) + offset) or
    "float32" (float32(float64(x))·float32(m) + float32(offset), in float32); rounding
    "half_even" (rint) or "half_away" (C round). offset None adds nothing."""
    if precision == "float64":
        v = np.multiply(x, m, dtype=np.float64)
    else:
        v = np.asarray(x, np.float64).astype(np.float32) * m
    if offset is not None:
        v = v + offset
    return np.rint(v) if rounding == "half_even" else round_half_away_float(v)


def float_core(x, out, m, offset, precision, rounding, zp):
    """`float_values` cast to int64 (values proven finite and within 2^62), plus zp (None: 0)."""
    np.copyto(out, float_values(x, m, offset, precision, rounding), casting="unsafe")
    if zp is not None:
        out += zp


def _extremes(bounds, consts):
    k = max([np.ndim(v) for v in consts.values() if v is not None] or [0])
    return np.array(bounds, dtype=_I64).reshape((2,) + (1,) * k)


def _result_bounds(core, consts, bounds):
    """(min, max) of core over [lo, hi] × every channel (core monotone in x; module docstring)."""
    out = map_blocks(core, _extremes(bounds, consts), {**consts, "zp": None})
    return int(out.min()), int(out.max())


def _checked_int32(core, consts, zp, what: str, why: str):
    """The whole-array evaluation of core whose result must fit int32 (checked), plus zp."""
    def checked(a):
        r = map_blocks(core, a, {**consts, "zp": None})
        _check_range(r, INT32_MIN, INT32_MAX, what, why)
        return r if zp is None else r + zp
    return checked


def _int32_plan(core, consts, bounds, zp, what: str, why: str):
    lo, hi = _result_bounds(core, consts, bounds)
    if INT32_MIN <= lo and hi <= INT32_MAX:
        return core, {**consts, "zp": zp}, None
    return core, consts, _checked_int32(core, consts, zp, what, why)


def tflite_plan(m, s, bounds, single_rounding: bool, zp=None):
    """Plan of MultiplyByQuantizedMultiplier(x, m, s) + zp for x in bounds (checked int32), m in
    [0, INT32_MAX], s in [−31, 30] (checked by the caller)."""
    if single_rounding:
        t = 31 - s
        consts = {"m": m, "rnd": np.left_shift(_I64(1), t - 1), "neg": None, "shift": t}
        return _int32_plan(mul_round_shift_core, consts, bounds, zp, "single-rounding result",
                           "TFLite DCHECKs that the scaled value fits int32")
    left, right = np.maximum(s, 0), np.maximum(-s, 0)
    lmax = int(left.max()) if left.size else 0
    # the int32 wrap is the identity unless some x·2^left leaves int32 (checked at the extremes)
    wrap = lmax > 0 and ((bounds[1] << lmax) > INT32_MAX or (bounds[0] << lmax) < INT32_MIN)
    consts = {"m": m, "left": left if lmax > 0 else None, "wrap": wrap, "right": None,
              "half": None, "round_mask": None, "zp": zp}
    if np.any(right > 0):
        half = np.left_shift(_I64(1), right) >> 1
        if zp is not None:
            half = half + (np.asarray(zp, dtype=_I64) << right)
        consts.update(right=right, half=half, zp=None,
                      round_mask=None if np.all(right > 0) else right > 0)
    return tflite_double_core, consts, None


def tosa32_plan(m, s, double_round: bool, zp=None):
    """Plan of TOSA apply_scale_32 + zp (preconditions checked by the caller)."""
    rnd, neg = np.left_shift(_I64(1), s - 1), None
    if double_round and np.any(s > 31):
        rnd = rnd + np.where(s > 31, _I64(1 << 30), _I64(0))
        neg = np.where(s > 31, _I64(-(1 << 31)), _I64(0))
    return mul_round_shift_core, {"m": m, "rnd": rnd, "neg": neg, "shift": s, "zp": zp}, None


def tosa16_plan(m, s, bounds, zp=None):
    """Plan of TOSA apply_scale_16 + zp (value int48, m, s checked by the caller)."""
    consts = {"m": m, "rnd": np.left_shift(_I64(1), s - 1), "neg": None, "shift": s}
    return _int32_plan(mul_round_shift_core, consts, bounds, zp, "apply_scale_16 result",
                       "TOSA REQUIREs it fits int32")


def _check_float(r):
    if not np.all(np.isfinite(r)) or np.any(np.abs(r) > 2.0 ** 62):
        raise FixedPointError("float requantization produced a non-finite value or one beyond "
                              "2^62; check the multiplier")


def float_plan(multiplier, precision: str, rounding: str, offset, bounds, int32: bool = False,
               zp=None):
    """Plan of round(acc·M + offset) + zp in `precision` (see `requantize.float_scale_round`);
    with `int32` the rounded value must also fit int32 (the TFLite reference FC's cast)."""
    if precision not in ("float64", "float32"):
        raise FixedPointError(f"precision must be 'float64' or 'float32', got {precision!r}")
    if rounding not in ("half_even", "half_away"):
        raise FixedPointError(f"rounding must be 'half_even' or 'half_away', got {rounding!r}")
    consts = {"m": np.asarray(multiplier, dtype=precision),
              "offset": None if offset is None else np.asarray(offset, dtype=precision),
              "precision": precision, "rounding": rounding}
    r = float_values(_extremes(bounds, consts), **consts)
    lo, hi = (INT32_MIN, INT32_MAX) if int32 else (-2.0 ** 62, 2.0 ** 62)
    if np.all(np.isfinite(r)) and np.all(r >= lo) and np.all(r <= hi):
        return float_core, {**consts, "zp": zp}, None

    def checked(a):
        r = float_values(a, **consts)
        _check_float(r)
        r = _out(r.astype(_I64))
        if int32:
            _check_range(r, INT32_MIN, INT32_MAX, "rounded product",
                         "the TFLite reference FC casts it to int32")
        return r if zp is None else r + zp
    return float_core, consts, checked


def run_plan(plan, a, *, act_min=None, act_max=None, overwrite: bool = False) -> np.ndarray:
    """Evaluate plan (core, consts, checked) on `a` and clamp to [act_min, act_max] (unless None):
    block by block when `checked` is None, else through `checked` on the whole array.
    overwrite: the result may be written into a's buffer (a int64 or float64, C-contiguous)."""
    core, consts, checked = plan
    if checked is not None:
        r = checked(a)
        return _out(r if act_min is None else np.clip(r, act_min, act_max))

    def step(x, out, **c):
        core(x, out, **c)
        if act_min is not None:
            np.clip(out, act_min, act_max, out=out)
    own = overwrite and a.dtype.itemsize == 8 and a.dtype.kind in "if" and a.flags.c_contiguous
    return map_blocks(step, a, consts, out=a.view(np.int64) if own else None)
