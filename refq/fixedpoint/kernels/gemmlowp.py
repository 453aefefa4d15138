"""gemmlowp fixed-point math (fixedpoint/fixedpoint.h) on int64 arrays holding int32 raw values.

A FixedPoint<int32, I> value is a raw int32 r representing r / 2^(31 − I): I integer bits,
format Q I.(31−I).
Every routine here is vectorised NumPy over int64 arrays, restated from the gemmlowp definitions
(fixedpoint.md §6.1, §7) on top of the primitives `srdhm` (SaturatingRoundingDoublingHighMul) and
`round_shift_half_away` (RoundingDivideByPOT). gemmlowp's plain int32 `+`/`-` (C overflow, undefined
behaviour, never reached from the documented entry points) are modelled as two's-complement wraps.
Products are formed only by `srdhm` (|a·b| <= 2^62), so nothing leaves int64.

Used by the TFLM/TFLite reference int8 LOGISTIC/TANH (tabulated by `lut.gemmlowp_lut`) and
SOFTMAX (`softmax.py`).
"""
from __future__ import annotations

import numpy as np

from ..rounding import INT32_MAX, INT32_MIN, round_shift_half_away, srdhm, wrap

__all__ = ["add", "sat_shift_left", "rounding_half_sum", "exp_on_negative_values",
           "one_over_one_plus_x_for_x_in_0_1", "one_minus_x_over_one_plus_x_for_x_in_0_1",
           "logistic", "tanh"]

# Q0.31 constants (raw int32), as fixedpoint.h defines them.
EXP_MINUS_ONE_EIGHTH = 1895147668      # exp(−1/8)
ONE_THIRD = 715827883                  # 1/3
#: (exponent k, raw Q0.31 of exp(−2^k)) for the barrel shifter of exp_on_negative_values.
EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
              (2, 39332535), (3, 720401), (4, 242))
#: Q2.29 constants of the Newton-Raphson division: 48/17 and −32/17.
C48_OVER_17 = 1515870810
CNEG32_OVER_17 = -1010580540


def add(a, b) -> np.ndarray:
    """int32 a + b (gemmlowp `Add`), wrapped to 32 bits as C does in practice."""
    return wrap(np.asarray(a, np.int64) + np.asarray(b, np.int64), 32)


def sat_shift_left(x, e: int) -> np.ndarray:
    """gemmlowp `SaturatingRoundingMultiplyByPOT<e>` for e >= 0 on int32: x·2^e, with
    x > 2^(31−e) − 1 -> INT32_MAX and x < −(2^(31−e) − 1) -> INT32_MIN (note the symmetric
    threshold: −2^(31−e) itself saturates). e = 0 returns x."""
    x = np.asarray(x, np.int64)
    if e == 0:
        return x
    t = (1 << (31 - e)) - 1
    return np.where(x > t, INT32_MAX, np.where(x < -t, INT32_MIN, x << e))


def rounding_half_sum(a, b) -> np.ndarray:
    """gemmlowp `RoundingHalfSum` (int32, VRHADD): s = a + b (int64), (s + sign(s)) / 2 with C
    truncating division, sign(0) = +1: half away from zero."""
    s = np.asarray(a, np.int64) + np.asarray(b, np.int64)
    t = s + np.where(s >= 0, 1, -1)
    return np.where(t >= 0, t // 2, -((-t) // 2))


def _exp_on_interval(a) -> np.ndarray:
    """exp(a) for a Q0.31 in [−1/4, 0): a Taylor polynomial around −1/8 (fixedpoint.h
    `exp_on_interval_between_negative_one_quarter_and_0_excl`):
    x = a + 1/8; x2 = x·x; x3 = x2·x; x4 = x2·x2 (each `srdhm`); x4/4 = RDBPOT(x4, 2);
    p = RDBPOT(srdhm(x4/4 + x3, 1/3) + x2, 1); result = c + srdhm(c, x + p), c = exp(−1/8)."""
    x = add(a, 1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_4 = round_shift_half_away(x4, 2)
    p = round_shift_half_away(add(srdhm(add(x4_4, x3), ONE_THIRD), x2), 1)
    return add(EXP_MINUS_ONE_EIGHTH, srdhm(EXP_MINUS_ONE_EIGHTH, add(x, p)))


def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """exp(a) as Q0.31 for a QI.(31−I) value a <= 0, I = integer_bits (fixedpoint.h
    `exp_on_negative_values`).

    With F = 31 − I fractional bits and q = 2^(F−2) (one quarter): m = (a & (q − 1)) − q ∈ [−q, 0);
    r = _exp_on_interval(m·2^I, saturating); rem = m − a (>= 0, a multiple of q); then for each
    (k, exp(−2^k)) of EXP_BARREL with I > k: if bit F + k of rem is set, r = srdhm(r, exp(−2^k)).
    If I > 5, a < −32 (raw −2^(36−I)) gives 0. Finally a = 0 gives INT32_MAX (One in Q0.31).
    """
    a = np.asarray(a, np.int64)
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    m = add(a & (quarter - 1), -quarter)
    r = _exp_on_interval(sat_shift_left(m, integer_bits))
    rem = add(m, -a)
    for k, mult in EXP_BARREL:
        if integer_bits > k:
            r = np.where((rem & (1 << (frac + k))) != 0, srdhm(r, mult), r)
    if integer_bits > 5:
        r = np.where(a < -(1 << (36 - integer_bits)), 0, r)
    return np.where(a == 0, INT32_MAX, r)


def _newton_reciprocal(half_denominator) -> np.ndarray:
    """Three Newton-Raphson steps for 1/d, d = half_denominator (Q0.31 in [1/2, 1)); Q2.29 result:
    x = 48/17 + d·(−32/17); repeat 3: x = x + sat_shift_left(srdhm(x, 1 − d·x), 2)."""
    x = add(C48_OVER_17, srdhm(half_denominator, CNEG32_OVER_17))
    for _ in range(3):
        one_minus = add(1 << 29, -srdhm(half_denominator, x))
        x = add(x, sat_shift_left(srdhm(x, one_minus), 2))
    return x


def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """1/(1 + a) as Q0.31 for a Q0.31 in [0, 1): d = RoundingHalfSum(a, One), x = Newton(d) (Q2.29
    of 1/d = 2/(1 + a)), result sat_shift_left(x, 1) (ExactMulByPot<−1> then Rescale<0>)."""
    return sat_shift_left(_newton_reciprocal(rounding_half_sum(a, INT32_MAX)), 1)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """(1 − a)/(1 + a) as Q0.31 for a Q0.31 in [0, 1): as above, result
    sat_shift_left(x − One(Q2.29), 2)."""
    x = _newton_reciprocal(rounding_half_sum(a, INT32_MAX))
    return sat_shift_left(add(x, -(1 << 29)), 2)


def logistic(a, integer_bits: int) -> np.ndarray:
    """1/(1 + exp(−a)) as Q0.31 for a QI.(31−I) (fixedpoint.h `logistic`): for a > 0
    p = one_over_one_plus_x(exp_on_negative_values(−a)); for a < 0, One − p(|a|); a = 0 -> 2^30."""
    a = np.asarray(a, np.int64)
    pos = a > 0
    absa = np.where(pos, a, -a)
    p = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-absa, integer_bits))
    return np.where(a == 0, 1 << 30, np.where(pos, p, add(INT32_MAX, -p)))


def tanh(a, integer_bits: int) -> np.ndarray:
    """tanh(a) as Q0.31 for a QI.(31−I) (fixedpoint.h `tanh`): n = −|a| (<= 0);
    t = one_minus_x_over_one_plus_x(exp_on_negative_values(n as Q(I+1), I + 1)) = tanh(|a|)
    (exp(2n): the raw value reinterpreted with one more integer bit); result t for a > 0, −t for
    a < 0, 0 for a = 0."""
    a = np.asarray(a, np.int64)
    neg = a < 0
    n = np.where(neg, a, -a)
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    return np.where(a == 0, 0, np.where(neg, -t, t))
