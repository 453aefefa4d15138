"""Integer rounding primitives on int64 arrays: rounding right shifts, SRDHM, saturate, wrap.

Every function takes integer arrays (or Python ints), broadcasts its arguments by NumPy rules and
returns an int64 ndarray (0-d for scalar inputs). Nothing is computed in floating point. Each
docstring states the preconditions, which are checked (a violation raises `FixedPointError`), the
rounding rule, its source in ../shared/reference/fixedpoint.md (cited as §n), and why no
intermediate leaves int64.

Notation: `>>` is the arithmetic right shift of two's complement, i.e. floor division by 2^e;
`x & (2^e − 1)` is then the non-negative remainder r with x = (x >> e)·2^e + r, 0 ≤ r < 2^e.
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError

__all__ = [
    "INT32_MIN", "INT32_MAX", "INT64_MIN", "INT64_MAX", "ROUNDING_MODES",
    "round_shift_half_away", "rounding_divide_by_pot", "round_shift_half_up",
    "round_shift_half_even", "floor_shift", "rounding_right_shift",
    "srdhm", "saturate", "wrap", "OVERFLOW_POLICIES", "apply_overflow_policy",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

#: The rounding rules of `rounding_right_shift`.
ROUNDING_MODES = ("half_away", "half_up", "half_even", "floor")
#: The accumulator overflow policies of `apply_overflow_policy`.
OVERFLOW_POLICIES = ("error", "wrap", "saturate")


def _as_int64(x, name: str) -> np.ndarray:
    """`x` as an int64 array; non-integer dtypes and values outside int64 raise FixedPointError."""
    a = np.asarray(x)
    if a.dtype.kind == "O":  # Python ints beyond 64 bits
        raise FixedPointError(f"{name} holds values outside int64 (or non-numbers); the "
                              "fixed-point primitives work on int64 arrays")
    if a.dtype == np.bool_ or a.dtype.kind not in "iu":
        raise FixedPointError(f"{name} must be an integer array, got dtype {a.dtype}; round or "
                              "cast it explicitly before calling a fixed-point primitive")
    if a.dtype == np.uint64 and a.size and int(a.max()) > INT64_MAX:
        raise FixedPointError(f"{name} holds values above INT64_MAX ({int(a.max())})")
    return a.astype(np.int64, copy=False)


def _out(r) -> np.ndarray:
    """Results are always int64 ndarrays (NumPy returns scalars for 0-d operations)."""
    return np.asarray(r, dtype=np.int64)


def _raise_first(bad: np.ndarray, a: np.ndarray, name: str, rule: str) -> None:
    """Raise FixedPointError naming how many elements of `a` violate `rule` and the first one."""
    if np.any(bad):
        bad, a = np.broadcast_arrays(bad, a)
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise FixedPointError(f"{name} must {rule}; {int(np.count_nonzero(bad))} element(s) do "
                              f"not, the first is {int(a[idx])} at index {idx}")


def _bounds(a: np.ndarray) -> tuple[int, int]:
    """(min, max) of an integer-valued array as Python ints; (0, 0) when it is empty."""
    return (int(a.min()), int(a.max())) if a.size else (0, 0)


def _check_range(a: np.ndarray, lo: int, hi: int, name: str, why: str,
                 bounds: tuple[int, int] | None = None) -> tuple[int, int]:
    """Raise FixedPointError naming the first element of `a` outside [lo, hi]; return bounds
    (lo_a, hi_a) holding every element of `a`. `bounds`, when given, must hold every element
    (they may be loose): the check then costs nothing when they lie in [lo, hi]; otherwise (and
    when not given) it takes the exact min and max, and only when those fail looks for the first
    offending element."""
    if bounds is None or bounds[0] < lo or bounds[1] > hi:
        bounds = _bounds(a)
        if bounds[0] < lo or bounds[1] > hi:
            _raise_first((a < lo) | (a > hi), a, name, f"lie in [{lo}, {hi}] ({why})")
    return bounds


def _shift(e, lo: int, hi: int, name: str = "shift") -> np.ndarray:
    a = _as_int64(e, name)
    _check_range(a, lo, hi, name, "right shifts of int64 values are defined for 0..62")
    return a


def round_shift_half_away(x, e) -> np.ndarray:
    """x / 2^e rounded to nearest, ties away from zero (gemmlowp `RoundingDivideByPOT`, §2.1).

    Preconditions: x int64 (any value); 0 ≤ e ≤ 62, scalar or broadcastable to x (per-element or
    per-channel shifts). gemmlowp defines the rule for int32 x and e ≤ 31; this is the same rule on
    the wider domain.
    Rule: with mask = 2^e − 1, r = x & mask and threshold = (mask >> 1) + [x < 0], the result is
    (x >> e) + [r > threshold]. For x ≥ 0 this rounds up exactly when r > 2^(e−1) − 1, i.e. r ≥ half
    (ties up = away from zero); for x < 0 it needs r > 2^(e−1), so a tie stays at the floor (away
    from zero). e = 0 gives mask = 0, r = 0 and returns x.
    Exactness: (x >> e) ≤ x/2 for e ≥ 1, so adding 1 cannot overflow; everything stays in int64.
    """
    x = _as_int64(x, "x")
    e = _shift(e, 0, 62)
    mask = np.left_shift(np.int64(1), e) - 1
    threshold = (mask >> 1) + (x < 0)
    return _out((x >> e) + ((x & mask) > threshold))


#: gemmlowp's name for `round_shift_half_away`.
rounding_divide_by_pot = round_shift_half_away


def round_shift_half_up(x, e) -> np.ndarray:
    """x / 2^e rounded to nearest, ties toward +inf: floor((x + 2^(e−1)) / 2^e) for e ≥ 1.

    This is the rounding of TFLite's single-rounding build, ruy and TOSA SINGLE_ROUND (§2.3, §2.6):
    `(v + 2^(e−1)) >> e`. Preconditions: x int64 (any value), 0 ≤ e ≤ 62 (broadcastable).
    Exactness: computed as (x >> e) + bit (e−1) of x, which equals floor((x + 2^(e−1))/2^e)
    because with x = q·2^e + r (0 ≤ r < 2^e), r + 2^(e−1) ≥ 2^e exactly when r ≥ 2^(e−1), i.e. when
    bit e−1 of r (= of x) is set. No addition near INT64_MAX is performed. e = 0 returns x.
    """
    x = _as_int64(x, "x")
    e = _shift(e, 0, 62)
    bit = (x >> np.maximum(e - 1, 0)) & 1
    return _out((x >> e) + np.where(e > 0, bit, 0))


def round_shift_half_even(x, e) -> np.ndarray:
    """x / 2^e rounded to nearest, ties to the even neighbour (IEEE roundTiesToEven, numpy.rint).

    Preconditions: x int64 (any value), 0 ≤ e ≤ 62 (broadcastable).
    Rule: q = x >> e, r = x & (2^e − 1), half = 2^(e−1); result q + [r > half or (r == half and q
    odd)]; e = 0 returns x. Exactness: only q + 1 with q ≤ x/2 is formed.
    """
    x = _as_int64(x, "x")
    e = _shift(e, 0, 62)
    q = x >> e
    r = x & (np.left_shift(np.int64(1), e) - 1)
    half = np.left_shift(np.int64(1), np.maximum(e - 1, 0))
    up = (r > half) | ((r == half) & ((q & 1) == 1))
    return _out(q + (up & (e > 0)))


def floor_shift(x, e) -> np.ndarray:
    """x >> e: floor(x / 2^e) (arithmetic shift). Preconditions: x int64, 0 ≤ e ≤ 62."""
    x = _as_int64(x, "x")
    e = _shift(e, 0, 62)
    return _out(x >> e)


_SHIFTS = {"half_away": round_shift_half_away, "half_up": round_shift_half_up,
           "half_even": round_shift_half_even, "floor": floor_shift}


def rounding_right_shift(x, e, rounding: str) -> np.ndarray:
    """x / 2^e rounded by `rounding` ∈ ROUNDING_MODES: "half_away" (`round_shift_half_away`),
    "half_up" (`round_shift_half_up`), "half_even" (`round_shift_half_even`), "floor"
    (`floor_shift`). Preconditions: those of the chosen function (x int64, 0 ≤ e ≤ 62)."""
    if rounding not in _SHIFTS:
        raise FixedPointError(f"unknown rounding {rounding!r}; choose one of {ROUNDING_MODES}")
    return _SHIFTS[rounding](x, e)


def srdhm(a, b) -> np.ndarray:
    """Saturating rounding doubling high multiply of int32 a, b (gemmlowp
    `SaturatingRoundingDoublingHighMul`, ARM VQRDMULH; §2.1).

    Definition (gemmlowp): INT32_MAX if a = b = INT32_MIN, else
    trunc_toward_zero((a·b + nudge) / 2^31) with nudge = 2^30 for a·b ≥ 0 and 1 − 2^30 otherwise.
    Equivalent closed form used here (proof in §2.1): floor((a·b + 2^30) / 2^31), i.e. a·b/2^31
    rounded to nearest with ties toward +inf.
    Preconditions: a, b in [INT32_MIN, INT32_MAX] (broadcastable). The result lies in int32.
    Exactness: |a·b| ≤ 2^62, so a·b + 2^30 ≤ 2^62 + 2^30 < 2^63 fits int64. The only product whose
    rounded quotient leaves int32 is INT32_MIN², giving 2^31, saturated to INT32_MAX; the next
    largest, INT32_MIN·(INT32_MIN+1) = 2^62 − 2^31, gives 2^31 − 1.
    """
    a = _as_int64(a, "a")
    b = _as_int64(b, "b")
    _check_range(a, INT32_MIN, INT32_MAX, "a", "SRDHM takes int32 operands")
    _check_range(b, INT32_MIN, INT32_MAX, "b", "SRDHM takes int32 operands")
    r = (a * b + (1 << 30)) >> 31
    return _out(np.where((a == INT32_MIN) & (b == INT32_MIN), np.int64(INT32_MAX), r))


def _bits(bits: int, lo: int, hi: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not lo <= bits <= hi:
        raise FixedPointError(f"bits must be an integer in [{lo}, {hi}], got {bits!r}")
    return int(bits)


def saturate(x, bits: int, signed: bool = True) -> np.ndarray:
    """Clamp x to the N-bit range: [−2^(N−1), 2^(N−1) − 1] if signed (1 ≤ N ≤ 64), else
    [0, 2^N − 1] (1 ≤ N ≤ 63). Preconditions: x int64. (`sat_N` of the notes' notation.)"""
    x = _as_int64(x, "x")
    if signed:
        n = _bits(bits, 1, 64)
        return _out(np.clip(x, -(1 << (n - 1)), (1 << (n - 1)) - 1))
    n = _bits(bits, 1, 63)
    return _out(np.clip(x, 0, (1 << n) - 1))


def wrap(x, bits: int = 32) -> np.ndarray:
    """Two's-complement wrap of x to N signed bits: the unique y ≡ x (mod 2^N) in
    [−2^(N−1), 2^(N−1) − 1]; N = 32 models C int32 overflow as TFLite's `x * (1 << left)` does in
    practice (§2.2). Preconditions: x int64, 1 ≤ N ≤ 64 (N = 64 is the identity).
    Exactness: y = (x & (2^N − 1)) − 2^N·[bit N−1 set], using only masks and one subtraction of
    values below 2^N."""
    x = _as_int64(x, "x")
    n = _bits(bits, 1, 64)
    if n == 64:
        return x.copy()
    low = x & ((1 << n) - 1)
    return _out(low - (((low >> (n - 1)) & 1) << n))


def apply_overflow_policy(x, bits: int = 32, policy: str = "error", *,
                          what: str = "accumulator") -> np.ndarray:
    """Fit exact int64 values `x` (e.g. an accumulator computed without overflow) into N signed
    bits by `policy` ∈ OVERFLOW_POLICIES: "error" raises FixedPointError naming the first value that
    does not fit (no target defines accumulator overflow: TFLite's int32 wrap is C undefined
    behaviour left unguarded (§3.1), TOSA REQUIREs no overflow (§3.3)); "wrap" applies `wrap`
    (what the C kernels do in practice); "saturate" applies `saturate`. `what` names the values in
    the error message. Preconditions: x int64, 1 ≤ bits ≤ 64."""
    x = _as_int64(x, what)
    n = _bits(bits, 1, 64)
    if policy == "error":
        _check_range(x, -(1 << (n - 1)), (1 << (n - 1)) - 1, what,
                     f"it must fit the {n}-bit accumulator; use a wider accumulator or smaller "
                     "inputs, or choose the 'wrap' or 'saturate' overflow policy")
        return x
    if policy == "wrap":
        return wrap(x, n)
    if policy == "saturate":
        return saturate(x, n)
    raise FixedPointError(f"unknown overflow policy {policy!r}; choose one of {OVERFLOW_POLICIES}")
