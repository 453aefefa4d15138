"""Spec tests of refq.fixedpoint primitives against Python-integer references (tolerance 0).

The references below use arbitrary-precision ints, `fractions.Fraction` for exact real values and
explicit tie handling; they never call the code under test. Sections (§n) refer to
../shared/reference/fixedpoint.md.
"""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import FixedPointError, RefqError
from refq.fixedpoint import (
    INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, activation_range, apply_overflow_policy,
    apply_scale_16, apply_scale_32, derive_multiplier, float_scale_round, floor_shift,
    multiply_by_quantized_multiplier, quantize, quantize_multiplier,
    quantize_multiplier_cmsis_generator, real_multiplier, requantize, round_half_away_float,
    round_shift_half_away, round_shift_half_even, round_shift_half_up, rounding_divide_by_pot,
    rounding_right_shift, saturate, srdhm, tosa_scale16, tosa_scale32, wrap)

# ---------------------------------------------------------------------------------------------
# Python references
# ---------------------------------------------------------------------------------------------


def ref_div_round(n: int, d: int, mode: str) -> int:
    """n/d (d > 0) rounded by `mode`, with explicit tie handling, in Python ints."""
    q, r = divmod(n, d)  # floor division, 0 <= r < d
    if mode == "floor" or 2 * r < d:
        return q
    if 2 * r > d:
        return q + 1
    # exact tie: n/d = q + 1/2
    if mode == "half_away":
        return q + 1 if n > 0 else q
    if mode == "half_up":
        return q + 1
    if mode == "half_even":
        return q if q % 2 == 0 else q + 1
    raise AssertionError(mode)


def ref_frac_round(f: Fraction, mode: str) -> int:
    return ref_div_round(f.numerator, f.denominator, mode)


def ref_wrap(x: int, n: int) -> int:
    return ((x + (1 << (n - 1))) % (1 << n)) - (1 << (n - 1))


def ref_srdhm_gemmlowp(a: int, b: int) -> int:
    """gemmlowp's definition: saturate MIN*MIN; nudge; divide truncating toward zero (§2.1)."""
    if a == b == INT32_MIN:
        return INT32_MAX
    p = a * b
    n = p + ((1 << 30) if p >= 0 else 1 - (1 << 30))
    q = abs(n) // (1 << 31)
    return q if n >= 0 else -q


def ref_rdbpot_gemmlowp(x: int, e: int) -> int:
    """gemmlowp RoundingDivideByPOT transcribed with Python ints (§2.1)."""
    mask = (1 << e) - 1
    rem = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > threshold else 0)


def ref_mbqm_double(x: int, m: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    y = ref_srdhm_gemmlowp(ref_wrap(x * (1 << left), 32), m)
    return ref_div_round(y, 1 << right, "half_away")


def ref_mbqm_single(x: int, m: int, shift: int) -> int:
    return ref_frac_round(Fraction(x * m, 1 << (31 - shift)), "half_up")


def ref_apply_scale_32(v: int, m: int, s: int, double_round: bool) -> int:
    rnd = 1 << (s - 1)
    if double_round and s > 31:
        rnd += (1 << 30) if v >= 0 else -(1 << 30)
    return (v * m + rnd) >> s


def ref_round_float(v: float, mode: str) -> int:
    """An exactly representable float rounded with explicit ties (Fraction(v) is exact)."""
    return ref_frac_round(Fraction(v), mode)


def ref_frexp(M: float):
    """(q, e) with M = q·2^e, 1/2 <= q < 1, as exact Fractions (no math.frexp)."""
    f = Fraction(M)
    e = f.numerator.bit_length() - f.denominator.bit_length()
    while f >= Fraction(2) ** e:
        e += 1
    while f < Fraction(2) ** (e - 1):
        e -= 1
    return f / Fraction(2) ** e, e


def ref_quantize_multiplier(M: float, single: bool = False):
    if M == 0:
        return 0, 0
    q, e = ref_frexp(M)
    m = ref_frac_round(q * (1 << 31), "half_away")
    if m == 1 << 31:
        m, e = 1 << 30, e + 1
    if e < -31:
        return 0, 0
    if single and e > 30:
        return (1 << 31) - 1, 30
    return m, e


def ref_tosa_scale(M: float, bits: int):
    if M == 0:
        return 0, bits
    q, e = ref_frexp(M)
    m = ref_frac_round(q * (1 << bits), "half_away")
    if m == 1 << bits:
        m, e = 1 << (bits - 1), e + 1
    shift = bits - e
    if shift > 62:
        m >>= min(31, shift - 62)
        shift = 62
    return m, shift


def edges(kmax: int, lo: int, hi: int):
    """±2^k ± {0, 1, 2} for k <= kmax, the type limits and their neighbours, zero."""
    vals = {0, lo, lo + 1, lo + 2, hi, hi - 1, hi - 2}
    for k in range(kmax + 1):
        for d in (-2, -1, 0, 1, 2):
            vals.update((2 ** k + d, -(2 ** k) + d))
    return sorted(v for v in vals if lo <= v <= hi)


E32 = edges(31, INT32_MIN, INT32_MAX)
E64 = edges(62, INT64_MIN, INT64_MAX)
RNG = np.random.default_rng(20240601)
RAND32 = [int(v) for v in RNG.integers(INT32_MIN, INT32_MAX, 3000, endpoint=True)]
MODES = ("half_away", "half_up", "half_even", "floor")
SHIFT_FN = {"half_away": round_shift_half_away, "half_up": round_shift_half_up,
            "half_even": round_shift_half_even, "floor": floor_shift}
WIDE = dict(zero_point=0, act_min=INT64_MIN + 1, act_max=INT64_MAX)  # no clamp in practice


def grid(xs, es):
    x, e = np.meshgrid(np.array(xs, dtype=np.int64), np.array(es, dtype=np.int64), indexing="ij")
    return x.ravel(), e.ravel()


# ---------------------------------------------------------------------------------------------
# rounding shifts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_rounding_shift_edge_grid_all_shifts(mode):
    x, e = grid(E64, range(63))
    want = np.array([ref_div_round(int(a), 1 << int(b), mode) for a, b in zip(x, e)],
                    dtype=np.int64)
    np.testing.assert_array_equal(SHIFT_FN[mode](x, e), want)
    np.testing.assert_array_equal(rounding_right_shift(x, e, mode), want)


@pytest.mark.parametrize("mode", MODES)
def test_rounding_shift_exact_ties_both_signs(mode):
    xs, es = [], []
    for e in range(1, 62):
        for m in range(-6, 6):
            v = (2 * m + 1) << (e - 1)  # (m + 1/2)·2^e: an exact tie
            if INT64_MIN <= v <= INT64_MAX:
                xs.append(v)
                es.append(e)
    x, e = np.array(xs, dtype=np.int64), np.array(es, dtype=np.int64)
    want = [ref_div_round(a, 1 << b, mode) for a, b in zip(xs, es)]
    np.testing.assert_array_equal(SHIFT_FN[mode](x, e), want)


def test_rounding_shift_worked_ties():
    x = np.array([5, -5, 7, -7, 3, -3])  # /2 = ±2.5, ±3.5, ±1.5
    np.testing.assert_array_equal(round_shift_half_away(x, 1), [3, -3, 4, -4, 2, -2])
    np.testing.assert_array_equal(round_shift_half_up(x, 1), [3, -2, 4, -3, 2, -1])
    np.testing.assert_array_equal(round_shift_half_even(x, 1), [2, -2, 4, -4, 2, -2])
    np.testing.assert_array_equal(floor_shift(x, 1), [2, -3, 3, -4, 1, -2])


def test_rounding_divide_by_pot_is_gemmlowp_definition():
    x, e = grid(E32, range(32))
    want = [ref_rdbpot_gemmlowp(int(a), int(b)) for a, b in zip(x, e)]
    np.testing.assert_array_equal(rounding_divide_by_pot(x, e), want)


def test_rounding_shift_per_element_and_per_channel():
    x = RNG.integers(-(1 << 40), 1 << 40, (7, 5))
    e = RNG.integers(0, 45, (7, 5))
    for mode in MODES:
        want = [[ref_div_round(int(a), 1 << int(b), mode) for a, b in zip(r, s)]
                for r, s in zip(x, e)]
        np.testing.assert_array_equal(SHIFT_FN[mode](x, e), want)
        ch = e[0]  # shape (5,): broadcast along the last (channel) axis
        want = [[ref_div_round(int(a), 1 << int(b), mode) for a, b in zip(r, ch)] for r in x]
        np.testing.assert_array_equal(SHIFT_FN[mode](x, ch), want)


def test_rounding_shift_returns_int64_arrays():
    for fn in SHIFT_FN.values():
        r = fn(5, 1)
        assert isinstance(r, np.ndarray) and r.dtype == np.int64 and r.shape == ()


@pytest.mark.parametrize("bad", [63, -1, [0, 64]])
def test_rounding_shift_rejects_shift_out_of_range(bad):
    with pytest.raises(FixedPointError, match=r"shift must lie in \[0, 62\]"):
        round_shift_half_away(np.array([1, 2]), bad)


@pytest.mark.parametrize("x", [1.5, np.array([1.0]), True, 2 ** 63, 2 ** 70, "a"])
def test_rounding_shift_rejects_non_int64_input(x):
    with pytest.raises(FixedPointError):
        round_shift_half_even(x, 1)
    assert issubclass(FixedPointError, RefqError)


def test_rounding_right_shift_unknown_mode():
    with pytest.raises(FixedPointError, match="half_even"):
        rounding_right_shift(1, 1, "nearest")


# ---------------------------------------------------------------------------------------------
# SRDHM, saturate, wrap, overflow policy
# ---------------------------------------------------------------------------------------------


def test_srdhm_edge_grid_matches_gemmlowp_and_closed_form():
    a, b = grid(E32, E32)
    got = srdhm(a, b)
    want = [ref_srdhm_gemmlowp(int(p), int(q)) for p, q in zip(a, b)]
    np.testing.assert_array_equal(got, want)
    closed = [INT32_MAX if p == q == INT32_MIN else (int(p) * int(q) + (1 << 30)) >> 31
              for p, q in zip(a, b)]
    np.testing.assert_array_equal(got, closed)
    # the closed form is a·b/2^31 rounded half toward +inf
    half_up = [INT32_MAX if p == q == INT32_MIN else ref_div_round(int(p) * int(q), 1 << 31,
                                                                      "half_up")
               for p, q in zip(a, b)]
    np.testing.assert_array_equal(got, half_up)


def test_srdhm_random_and_special_cases():
    a = np.array(RAND32)
    b = np.array(RAND32[::-1])
    np.testing.assert_array_equal(srdhm(a, b), [ref_srdhm_gemmlowp(int(p), int(q))
                                                for p, q in zip(a, b)])
    assert int(srdhm(INT32_MIN, INT32_MIN)) == INT32_MAX
    assert int(srdhm(INT32_MIN, INT32_MIN + 1)) == INT32_MAX
    assert int(srdhm(INT32_MIN, INT32_MAX)) == INT32_MIN + 1
    assert int(srdhm(1, 1 << 30)) == 1  # 1/2 -> ties up
    assert int(srdhm(-1, 1 << 30)) == 0  # -1/2 -> ties toward +inf
    with pytest.raises(FixedPointError, match="int32"):
        srdhm(1 << 31, 1)


def test_saturate_and_wrap_against_reference():
    x = np.array(E64, dtype=np.int64)
    for n in (1, 2, 8, 16, 31, 32, 48, 63, 64):
        lo, hi = -(1 << (n - 1)), (1 << (n - 1)) - 1
        np.testing.assert_array_equal(saturate(x, n), [min(max(v, lo), hi) for v in E64])
        np.testing.assert_array_equal(wrap(x, n), [ref_wrap(v, n) for v in E64])
    for n in (1, 8, 16, 32, 63):
        np.testing.assert_array_equal(saturate(x, n, signed=False),
                                      [min(max(v, 0), (1 << n) - 1) for v in E64])
    for bad in (0, 65, 2.0, True):
        with pytest.raises(FixedPointError):
            wrap(x, bad)
    with pytest.raises(FixedPointError):
        saturate(x, 64, signed=False)


def test_apply_overflow_policy():
    x = np.array([INT32_MIN, -5, INT32_MAX, 5])
    np.testing.assert_array_equal(apply_overflow_policy(x, 32, "error"), x)
    big = np.array([0, 1 << 31, -(1 << 31) - 3])
    with pytest.raises(FixedPointError,
                       match=r"accumulator must lie in .*2 element.*first is 2147483648"):
        apply_overflow_policy(big, 32, "error")
    np.testing.assert_array_equal(apply_overflow_policy(big, 32, "wrap"),
                                  [ref_wrap(int(v), 32) for v in big])
    np.testing.assert_array_equal(apply_overflow_policy(big, 32, "saturate"),
                                  [0, INT32_MAX, INT32_MIN])
    with pytest.raises(FixedPointError, match="overflow policy"):
        apply_overflow_policy(x, 32, "clip")


# ---------------------------------------------------------------------------------------------
# multiplier derivations
# ---------------------------------------------------------------------------------------------


def _multiplier_grid():
    ms = [0.0, 5e-324, 2.0 ** -1074 * 3, 1.0, 0.5, 0.75, 0.3, 1 / 3, 2.0 ** -32, 2.0 ** -33]
    for k in range(-45, 36):
        p = 2.0 ** k
        ms += [p, p * (1 - 2.0 ** -33), p * (1 - 2.0 ** -32), p * (0.5 + 2.0 ** -32),
               p * (0.5 + 3 * 2.0 ** -32), p * (1 - 2.0 ** -53), p * (0.5 + 2.0 ** -53)]
    ms += list(np.exp2(RNG.uniform(-45, 35, 400)))
    return np.array(ms, dtype=np.float64)


MGRID = _multiplier_grid()


@pytest.mark.parametrize("single", [False, True])
def test_quantize_multiplier_against_fraction_reference(single):
    m, s = quantize_multiplier(MGRID, single_rounding=single)
    want = [ref_quantize_multiplier(float(v), single) for v in MGRID]
    np.testing.assert_array_equal(m, [w[0] for w in want])
    np.testing.assert_array_equal(s, [w[1] for w in want])
    assert m.dtype == np.int64 and m.shape == MGRID.shape


def test_quantize_multiplier_worked_edge_cases():
    # M exactly a power of two: q = 1/2 -> 2^30, shift = k + 1
    for k in (-31, -8, 0, 5):
        assert tuple(map(int, quantize_multiplier(2.0 ** k))) == (1 << 30, k + 1)
    # mantissa rounds up to 2^31: fixed up to 2^30 with the exponent + 1
    assert tuple(map(int, quantize_multiplier(1 - 2.0 ** -33))) == (1 << 30, 1)
    # the fix-up comes before the flush: (1 - 2^-40)·2^-32 has e = -32 but rounds to 2^-32
    assert tuple(map(int, quantize_multiplier((1 - 2.0 ** -40) * 2.0 ** -32))) == (1 << 30, -31)
    # tiny multipliers are flushed to (0, 0)
    assert tuple(map(int, quantize_multiplier(2.0 ** -33))) == (0, 0)
    assert tuple(map(int, quantize_multiplier(2.0 ** -40))) == (0, 0)
    assert tuple(map(int, quantize_multiplier(0.0))) == (0, 0)
    # exact mantissa tie rounds away from zero
    assert tuple(map(int, quantize_multiplier(0.5 + 2.0 ** -32))) == ((1 << 30) + 1, 0)
    # single-rounding build clamps e > 30; the default build does not
    assert tuple(map(int, quantize_multiplier(2.0 ** 31))) == (1 << 30, 32)
    assert tuple(map(int, quantize_multiplier(2.0 ** 31, single_rounding=True))) == (INT32_MAX, 30)
    assert tuple(map(int, quantize_multiplier(2.0 ** 29, single_rounding=True))) == (1 << 30, 30)


@pytest.mark.parametrize("bits, fn", [(31, tosa_scale32), (15, tosa_scale16)])
def test_tosa_scale32_and_16_against_reference(bits, fn):
    want = [ref_tosa_scale(float(v), bits) for v in MGRID]
    ok = np.array([w[1] >= 2 for w in want])  # RESCALE's 2 <= shift
    m, s = fn(MGRID[ok])
    np.testing.assert_array_equal(m, [w[0] for w, k in zip(want, ok) if k])
    np.testing.assert_array_equal(s, [w[1] for w, k in zip(want, ok) if k])
    assert int(m.max()) < 1 << bits
    for v in MGRID[~ok][:20]:
        with pytest.raises(FixedPointError, match="2 <= shift <= 62"):
            fn(v)
    # the bound is on the rounded mantissa: just below 2^(bits-2) can round up onto it
    with pytest.raises(FixedPointError, match="shift 1 < 2"):
        fn(2.0 ** (bits - 2) * (1 - 2.0 ** -(bits + 2)))


def test_tosa_scale32_maps_to_tflite_except_tiny():
    normal = MGRID[(MGRID >= 2.0 ** -32) & (MGRID < 2.0 ** 28)]
    tm, ts = tosa_scale32(normal)
    fm, fs = quantize_multiplier(normal)
    np.testing.assert_array_equal(tm, fm)
    np.testing.assert_array_equal(ts, 31 - fs)
    # tiny M: TFLite flushes to (0, 0), TOSA pre-shifts the multiplier and keeps the value
    assert tuple(map(int, quantize_multiplier(2.0 ** -40))) == (0, 0)
    m, s = map(int, tosa_scale32(2.0 ** -40))
    assert (m, s) == (1 << 22, 62) and Fraction(m, 1 << s) == Fraction(2.0 ** -40)
    assert tuple(map(int, tosa_scale32(0.0))) == (0, 31)
    assert tuple(map(int, tosa_scale32(2.0 ** -200))) == (0, 62)
    with pytest.raises(FixedPointError, match="shift 1 < 2"):
        tosa_scale32(2.0 ** 29)
    with pytest.raises(FixedPointError, match="2 <= shift <= 62"):
        tosa_scale16(2.0 ** 13)


def test_cmsis_generator_variant_differs_only_on_ties_overflow_and_tiny():
    m, s = quantize_multiplier_cmsis_generator(MGRID)
    for v, mi, si in zip(MGRID, m, s):
        if v == 0:
            assert (mi, si) == (0, 0)
            continue
        q, e = ref_frexp(float(v))
        assert (int(mi), int(si)) == (ref_frac_round(q * (1 << 31), "half_even"), e)
    # exact mantissa tie: TFLite half away -> 2^30 + 1, generator half even -> 2^30
    assert int(quantize_multiplier(0.5 + 2.0 ** -32)[0]) == (1 << 30) + 1
    assert int(quantize_multiplier_cmsis_generator(0.5 + 2.0 ** -32)[0]) == 1 << 30
    # a tie toward an even neighbour agrees
    assert int(quantize_multiplier_cmsis_generator(0.5 + 3 * 2.0 ** -32)[0]) == (1 << 30) + 2
    assert int(quantize_multiplier(0.5 + 3 * 2.0 ** -32)[0]) == (1 << 30) + 2
    # mantissa rounding to 1.0: no fix-up, 2^31 does not fit int32
    assert tuple(map(int, quantize_multiplier_cmsis_generator(1 - 2.0 ** -32))) == (1 << 31, 0)
    assert tuple(map(int, quantize_multiplier(1 - 2.0 ** -32))) == (1 << 30, 1)
    # no flush
    assert tuple(map(int, quantize_multiplier_cmsis_generator(2.0 ** -40))) == (1 << 30, -39)
    # agreement everywhere else (no tie, no 2^31, no flush)
    tfm, tfs = quantize_multiplier(MGRID)
    q = np.frexp(MGRID)[0] * 2.0 ** 31
    ordinary = (q != np.floor(q) + 0.5) & (m < (1 << 31)) & (MGRID >= 2.0 ** -32)
    np.testing.assert_array_equal(m[ordinary], tfm[ordinary])
    np.testing.assert_array_equal(s[ordinary], tfs[ordinary])


@pytest.mark.parametrize("fn", [quantize_multiplier, tosa_scale32, tosa_scale16,
                                quantize_multiplier_cmsis_generator])
@pytest.mark.parametrize("bad", [-1.0, -1e-300, float("nan"), float("inf"), [0.5, -0.25]])
def test_multiplier_rejects_negative_nan_inf(fn, bad):
    with pytest.raises(FixedPointError, match="must be finite and >= 0"):
        fn(bad)


def test_derive_multiplier_dispatch():
    M = np.array([0.3, 0.001, 0.75])
    for name, fn in (("tflite", quantize_multiplier), ("tosa32", tosa_scale32),
                     ("tosa16", tosa_scale16)):
        got, want = derive_multiplier(M, name), fn(M)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    m, s = derive_multiplier(M, "float32")
    assert m.dtype == np.float32 and not s.any()
    assert derive_multiplier(M, "float64")[0].dtype == np.float64
    with pytest.raises(FixedPointError, match="unknown multiplier derivation"):
        derive_multiplier(M, "q31")


def test_real_multiplier_scale_maths():
    s_in, s_w, s_out = 0.0123, np.array([0.0031, 0.7, 1e-5]), 0.047
    a, w, o = np.float32(s_in), s_w.astype(np.float32), np.float32(s_out)
    want64 = [float(a) * float(wi) / float(o) for wi in w]
    np.testing.assert_array_equal(real_multiplier(s_in, s_w, s_out, "float64"), want64)
    want_fp = [float(np.float32(a * wi)) / float(o) for wi in w]
    np.testing.assert_array_equal(real_multiplier(s_in, s_w, s_out, "float32_product"), want_fp)
    want32 = [float(np.float32(np.float32(a * wi) / o)) for wi in w]
    np.testing.assert_array_equal(real_multiplier(s_in, s_w, s_out, "float32"), want32)
    # the per-tensor FC rule (float32 product) changes the multiplier's last bits for some scales
    r = np.random.default_rng(3)
    sin, sw, sout = r.uniform(1e-3, 1e-1, 200), r.uniform(1e-4, 1e-2, 200), r.uniform(1e-2, 1, 200)
    m64 = quantize_multiplier(real_multiplier(sin, sw, sout, "float64"))[0]
    m32 = quantize_multiplier(real_multiplier(sin, sw, sout, "float32_product"))[0]
    assert np.any(m64 != m32) and np.all(np.abs(m64 - m32) <= 256)
    with pytest.raises(FixedPointError, match="s_out"):
        real_multiplier(0.1, 0.1, 0.0)
    with pytest.raises(FixedPointError, match="scale_math"):
        real_multiplier(0.1, 0.1, 0.1, "double")


def test_round_half_away_float():
    v = np.array([0.5, -0.5, 1.5, -1.5, 2.5, 0.49999999999999994, -0.49999999999999994, 1e300,
                  4503599627370495.5, -0.0, 2.4999999, 8388607.5, -8388609.0])
    want = [ref_round_float(float(x), "half_away") for x in v]
    np.testing.assert_array_equal(round_half_away_float(v), want)
    v32 = v[np.abs(v) < 1e30].astype(np.float32)
    np.testing.assert_array_equal(round_half_away_float(v32),
                                  [ref_round_float(float(x), "half_away") for x in v32])
    assert round_half_away_float(v32).dtype == np.float32
    np.testing.assert_array_equal(round_half_away_float(np.array([np.inf, -np.inf])),
                                  [np.inf, -np.inf])


# ---------------------------------------------------------------------------------------------
# requantization
# ---------------------------------------------------------------------------------------------

MULTS = [0, 1, 1 << 30, (1 << 30) + 1, 3 << 29, 1288490189, 1518500250, INT32_MAX]


def test_mbqm_double_edge_grid():
    for m in MULTS:
        x, s = grid(E32, [-31, -30, -20, -9, -1, 0, 1, 2, 7, 30])
        want = [ref_mbqm_double(int(a), m, int(b)) for a, b in zip(x, s)]
        np.testing.assert_array_equal(multiply_by_quantized_multiplier(x, m, s), want)


def test_mbqm_single_edge_grid_and_overflow():
    for m in MULTS:
        x, s = grid(E32, [-31, -30, -20, -9, -1, 0, 1, 7, 30])
        want = np.array([ref_mbqm_single(int(a), m, int(b)) for a, b in zip(x, s)], dtype=object)
        fits = np.array([INT32_MIN <= w <= INT32_MAX for w in want])
        got = multiply_by_quantized_multiplier(x[fits], m, s[fits], single_rounding=True)
        np.testing.assert_array_equal(got, want[fits].astype(np.int64))
        if not fits.all():
            with pytest.raises(FixedPointError, match="DCHECK"):
                multiply_by_quantized_multiplier(x, m, s, single_rounding=True)


def test_mbqm_preconditions():
    with pytest.raises(FixedPointError, match="shift"):
        multiply_by_quantized_multiplier(1, 1 << 30, 31)
    with pytest.raises(FixedPointError, match="shift"):
        multiply_by_quantized_multiplier(1, 1 << 30, -32)
    with pytest.raises(FixedPointError, match="multiplier"):
        multiply_by_quantized_multiplier(1, 1 << 31, 0)
    with pytest.raises(FixedPointError, match="multiplier"):
        multiply_by_quantized_multiplier(1, -1, 0)
    with pytest.raises(FixedPointError, match="int32 accumulator"):
        multiply_by_quantized_multiplier(1 << 31, 1 << 30, 0)


def test_double_rounding_wraps_the_left_shift():
    # x·2^left wraps in int32 before SRDHM, as TFLite's `x * (1 << left)`
    x, m = (1 << 30) + 3, 1 << 30
    got = int(multiply_by_quantized_multiplier(x, m, 2))
    assert got == ref_srdhm_gemmlowp(ref_wrap(x * 4, 32), m) == 6


def test_apply_scale_32_edge_grid_and_requires():
    for m in MULTS:
        for dr in (False, True):
            x, s = grid(E32, [2, 3, 16, 30, 31, 32, 33, 40, 50, 61, 62])
            ok = np.array([-(1 << (int(b) - 1)) <= int(a) < (1 << (int(b) - 1))
                           for a, b in zip(x, s)])
            want = [ref_apply_scale_32(int(a), m, int(b), dr) for a, b in zip(x[ok], s[ok])]
            np.testing.assert_array_equal(apply_scale_32(x[ok], m, s[ok], double_round=dr), want)
            assert np.all(np.abs(want) <= (1 << 30) + 1)
    with pytest.raises(FixedPointError, match="REQUIRE"):
        apply_scale_32(1 << 30, 1 << 30, 31, double_round=True)
    with pytest.raises(FixedPointError, match="2 <= shift <= 62"):
        apply_scale_32(0, 1 << 30, 1, double_round=False)
    with pytest.raises(FixedPointError, match="int32"):
        apply_scale_32(1 << 31, 1 << 30, 62, double_round=False)


def test_apply_scale_16():
    v = np.array(edges(47, -(1 << 47), (1 << 47) - 1), dtype=np.int64)
    for m, s in ((1 << 14, 30), (32767, 46), (12345, 62), (1, 2)):
        want = [ref_frac_round(Fraction(int(a) * m, 1 << s), "half_up") for a in v]
        ok = np.array([INT32_MIN <= w <= INT32_MAX for w in want])
        np.testing.assert_array_equal(apply_scale_16(v[ok], m, s), np.array(want)[ok])
        if not ok.all():
            with pytest.raises(FixedPointError, match="fits int32"):
                apply_scale_16(v, m, s)
    with pytest.raises(FixedPointError, match="multiplier"):
        apply_scale_16(1, 1 << 15, 30)


# The exhaustive int16-accumulator test: real multiplier 3/32 (many exact ties at every stage).
ACC16 = np.arange(-(1 << 15), 1 << 15, dtype=np.int64)
M_TIE, SH_TIE = 3 << 29, -3  # 0.75·2^-3 = 3/32 in TFLite form; TOSA shift 34


def _ref_scheme(scheme, a, zp=0, zp_before=False):
    if scheme == "tflite_double":
        return ref_mbqm_double(a, M_TIE, SH_TIE) + zp
    if scheme == "single_round":
        return ref_mbqm_single(a, M_TIE, SH_TIE) + zp
    if scheme in ("tosa_double", "tosa_single"):
        return ref_apply_scale_32(a, M_TIE, 31 - SH_TIE, scheme == "tosa_double") + zp
    if scheme == "tosa16":
        return ref_frac_round(Fraction(a * (3 << 13), 1 << 18), "half_up") + zp
    v = float(a) * (3 / 32)
    if scheme == "float32_rne":
        v = float(np.float32(np.float32(float(a)) * np.float32(3 / 32)))
    mode = "half_away" if scheme == "float_half_away" else "half_even"
    if zp_before:
        return ref_round_float(v + zp, mode)
    return ref_round_float(v, mode) + zp


SCHEME_PARAMS = {"tflite_double": (M_TIE, SH_TIE), "single_round": (M_TIE, SH_TIE),
                 "tosa_double": (M_TIE, 31 - SH_TIE), "tosa_single": (M_TIE, 31 - SH_TIE),
                 "tosa16": (3 << 13, 18), "float_rne": (3 / 32, None),
                 "float32_rne": (3 / 32, None), "float_half_away": (3 / 32, None)}


@pytest.mark.parametrize("scheme", list(SCHEME_PARAMS))
def test_requantize_exhaustive_int16_accumulators(scheme):
    m, s = SCHEME_PARAMS[scheme]
    got = requantize(ACC16, m, s, scheme, **WIDE)
    want = [_ref_scheme(scheme, int(a)) for a in ACC16]
    np.testing.assert_array_equal(got, want)
    # with an odd zero point and the int8 clamp
    got = requantize(ACC16, m, s, scheme, zero_point=-3, act_min=-128, act_max=127)
    np.testing.assert_array_equal(got, np.clip(np.array(want) - 3, -128, 127))


@pytest.mark.parametrize("scheme", ["float_rne", "float32_rne", "float_half_away"])
def test_requantize_zero_point_before_rounding(scheme):
    for zp in (-3, 0, 1, 4):
        got = requantize(ACC16, 3 / 32, None, scheme, zero_point=zp, act_min=INT32_MIN,
                         act_max=INT32_MAX, zp_before_round=True)
        want = [_ref_scheme(scheme, int(a), zp, zp_before=True) for a in ACC16]
        np.testing.assert_array_equal(got, want)
    # onnx-ref QLinearConv (zp before RNE) vs zp after: differ on ties when zp is odd
    acc = np.array([16, 48, -16, -48])  # ·3/32 = 1.5, 4.5, -1.5, -4.5
    before = requantize(acc, 3 / 32, None, "float_rne", zero_point=1, act_min=-128, act_max=127,
                        zp_before_round=True)
    after = requantize(acc, 3 / 32, None, "float_rne", zero_point=1, act_min=-128, act_max=127)
    np.testing.assert_array_equal(before, [2, 6, 0, -4])  # rint(2.5), rint(5.5), rint(-0.5), ...
    np.testing.assert_array_equal(after, [3, 5, -1, -3])  # rint(1.5) + 1, rint(4.5) + 1, ...


def test_requantize_float32_inexact_accumulator_cast():
    # onnxruntime casts acc to float32 (inexact above 2^24); float64 does not
    acc = np.array([(1 << 24) + 1, (1 << 25) + 3, -(1 << 24) - 1])
    got32 = requantize(acc, 1.0, None, "float32_rne", **WIDE)
    got64 = requantize(acc, 1.0, None, "float_rne", **WIDE)
    np.testing.assert_array_equal(got64, acc)
    np.testing.assert_array_equal(got32, [1 << 24, (1 << 25) + 4, -(1 << 24)])


def test_requantize_random_multipliers_edge_accumulators():
    reals = np.exp2(RNG.uniform(-30, -1, 12))
    acc = np.array(E32 + RAND32[:500], dtype=np.int64)
    for M in reals:
        m, s = quantize_multiplier(M)
        m, s = int(m), int(s)
        got = requantize(acc, m, s, "tflite_double", **WIDE)
        np.testing.assert_array_equal(got, [ref_mbqm_double(int(a), m, s) for a in acc])
        got = requantize(acc, m, s, "single_round", **WIDE)
        np.testing.assert_array_equal(got, [ref_mbqm_single(int(a), m, s) for a in acc])
        tm, ts = map(int, tosa_scale32(M))
        ok = np.abs(acc) < (1 << (ts - 1))
        for dr, name in ((True, "tosa_double"), (False, "tosa_single")):
            got = requantize(acc[ok], tm, ts, name, **WIDE)
            np.testing.assert_array_equal(got, [ref_apply_scale_32(int(a), tm, ts, dr)
                                                for a in acc[ok]])
        got = requantize(acc, M, None, "float_rne", **WIDE)
        np.testing.assert_array_equal(got, [ref_round_float(float(a) * M, "half_even")
                                            for a in acc])
        got = requantize(acc, M, None, "float_half_away", **WIDE)
        np.testing.assert_array_equal(got, [ref_round_float(float(a) * M, "half_away")
                                            for a in acc])


def test_requantize_per_channel_broadcast():
    reals = np.array([0.3, 0.001, 0.07, 0.75])
    m, s = quantize_multiplier(reals)
    acc = RNG.integers(-(1 << 20), 1 << 20, (3, 5, 4))
    got = requantize(acc, m, s, "tflite_double", zero_point=-5, act_min=-128, act_max=127)
    want = [[[min(max(ref_mbqm_double(int(a), int(m[c]), int(s[c])) - 5, -128), 127)
              for c, a in enumerate(row)] for row in plane] for plane in acc]
    np.testing.assert_array_equal(got, want)


def test_requantize_errors():
    kw = dict(zero_point=0, act_min=-128, act_max=127)
    with pytest.raises(FixedPointError, match="unknown requantization scheme"):
        requantize(1, 1 << 30, 0, "tflite", **kw)
    with pytest.raises(FixedPointError, match="int32 accumulator"):
        requantize(1 << 31, 1 << 30, 0, "tflite_double", **kw)
    with pytest.raises(FixedPointError, match="float schemes only"):
        requantize(1, 1 << 30, 0, "tflite_double", zp_before_round=True, **kw)
    with pytest.raises(FixedPointError, match="shift=None"):
        requantize(1, 0.5, 3, "float_rne", **kw)
    with pytest.raises(FixedPointError, match="act_min"):
        requantize(1, 1 << 30, 0, "tflite_double", zero_point=0, act_min=5, act_max=4)
    with pytest.raises(FixedPointError, match="int32"):
        requantize(1 << 31, 0.5, None, "float_half_away", **kw)
    with pytest.raises(FixedPointError, match="cast"):
        requantize(INT32_MAX, 3.0, None, "float_half_away", **kw)
    with pytest.raises(FixedPointError, match="48-bit"):
        requantize(1 << 47, 1 << 14, 30, "tosa16", **kw)


# Equivalences and laws stated in the notes ----------------------------------------------------

TIE_ACC = np.arange(-6000, 6000, dtype=np.int64)
TIE_MULTS = [1 << 30, 3 << 29, (1 << 30) + 1, INT32_MAX, 1288490189]


def test_tosa_double_equals_tflite_double_for_shift_le_0():
    acc = np.concatenate([TIE_ACC, np.array(E32 + RAND32, dtype=np.int64)])
    for m in TIE_MULTS:
        for s in range(-31, 1):
            ok = np.abs(acc) < (1 << (30 - s))  # TOSA's REQUIRE for shift 31 - s
            a = acc[ok]
            np.testing.assert_array_equal(
                apply_scale_32(a, m, 31 - s, double_round=True),
                multiply_by_quantized_multiplier(a, m, s))
            np.testing.assert_array_equal(
                apply_scale_32(a, m, 31 - s, double_round=False),
                multiply_by_quantized_multiplier(a, m, s, single_rounding=True))


def test_single_and_double_rounding_differ_by_at_most_one():
    acc = np.concatenate([TIE_ACC, np.array(E32 + RAND32, dtype=np.int64)])
    differ = 0
    for m in TIE_MULTS:
        for s in range(-31, 1):
            d = (multiply_by_quantized_multiplier(acc, m, s)
                 - multiply_by_quantized_multiplier(acc, m, s, single_rounding=True))
            assert np.all(np.abs(d) <= 1)
            differ += int(np.count_nonzero(d))
    assert differ > 0  # they are not the same function
    # a worked case: 3/32·(-16) = -1.5: double rounds half away (-2), single half up (-1)
    assert int(multiply_by_quantized_multiplier(-16, 3 << 29, -3)) == -2
    assert int(multiply_by_quantized_multiplier(-16, 3 << 29, -3, single_rounding=True)) == -1


def test_positive_shift_is_single_rounded_without_wrap():
    acc = np.array(E32 + RAND32, dtype=np.int64)
    for m in TIE_MULTS:
        for s in range(1, 31):
            a = acc[np.abs(acc) < (1 << (31 - s))]  # x·2^s does not wrap
            np.testing.assert_array_equal(multiply_by_quantized_multiplier(a, m, s),
                                          multiply_by_quantized_multiplier(a, m, s,
                                                                           single_rounding=True))


@settings(max_examples=150, deadline=None)
@given(x=st.integers(INT64_MIN, INT64_MAX), mode=st.sampled_from(MODES))
def test_law_shift_by_zero_is_identity(x, mode):
    assert int(rounding_right_shift(x, 0, mode)) == x


@settings(max_examples=150, deadline=None)
@given(x=st.integers(INT64_MIN, INT64_MAX), e=st.integers(1, 62),
       mode=st.sampled_from(("half_away", "half_up", "half_even")))
def test_law_nearest_shift_error_at_most_half(x, e, mode):
    r = int(rounding_right_shift(x, e, mode))
    assert abs(x - r * (1 << e)) <= 1 << (e - 1)


@settings(max_examples=150, deadline=None)
@given(x=st.integers(-(1 << 30), (1 << 30) - 1))
def test_law_multiplier_two_pow_30_shift_1_is_identity(x):
    # (2^30, 1) encodes exactly 1.0
    assert int(multiply_by_quantized_multiplier(x, 1 << 30, 1)) == x
    assert int(multiply_by_quantized_multiplier(x, 1 << 30, 1, single_rounding=True)) == x
    assert int(requantize(x, 1 << 30, 1, "tflite_double", **WIDE)) == x
    assert int(requantize(x, 1.0, None, "float_rne", **WIDE)) == x
    if abs(x) < 1 << 29:
        assert int(requantize(x, 1 << 30, 30, "tosa_double", **WIDE)) == x


@settings(max_examples=60, deadline=None)
@given(acc=st.lists(st.integers(INT32_MIN, INT32_MAX), min_size=2, max_size=40),
       M=st.floats(2.0 ** -31, 0.99), zp=st.integers(-128, 127))
def test_law_requantize_monotone_in_acc(acc, M, zp):
    acc = np.sort(np.array(acc, dtype=np.int64))
    m, s = quantize_multiplier(M)
    tm, ts = tosa_scale32(M)
    acc_t = acc[np.abs(acc) < (1 << (int(ts) - 1))]
    kw = dict(zero_point=zp, act_min=-128, act_max=127)
    outs = [requantize(acc, m, s, "tflite_double", **kw),
            requantize(acc, m, s, "single_round", **kw),
            requantize(acc_t, tm, ts, "tosa_double", **kw),
            requantize(acc_t, tm, ts, "tosa_single", **kw),
            requantize(acc, M, None, "float_rne", zp_before_round=True, **kw),
            requantize(acc, M, None, "float32_rne", **kw),
            requantize(acc, M, None, "float_half_away", **kw)]
    for o in outs:
        assert np.all(np.diff(o) >= 0)


@settings(max_examples=100, deadline=None)
@given(a=st.integers(INT32_MIN, INT32_MAX), b=st.integers(INT32_MIN, INT32_MAX))
def test_law_srdhm_commutes_and_matches_gemmlowp(a, b):
    assert int(srdhm(a, b)) == int(srdhm(b, a)) == ref_srdhm_gemmlowp(a, b)


# ---------------------------------------------------------------------------------------------
# quantize and activation ranges
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rounding", ["half_away", "half_even"])
@pytest.mark.parametrize("zp", [0, 3, -128])
def test_quantize_every_int8_tie_and_grid_point(rounding, zp):
    s = 2.0 ** -3  # power of two: x/s is exact, so every half-integer is an exact tie
    k = np.arange(-2 * 140, 2 * 140 + 1)  # x = (k/2)·s: grid points and midpoints
    x = (k / 2) * s
    got = quantize(x, s, zp, qmin=-128, qmax=127, rounding=rounding)
    want = [min(max(ref_frac_round(Fraction(int(i), 2), rounding) + zp, -128), 127) for i in k]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rounding", ["half_away", "half_even"])
def test_quantize_round_trips_every_int8_value(rounding):
    q = np.arange(-128, 128)
    for s, zp in ((0.0123, -7), (1 / 3, 0), (0.5, 127), (1e-4, -128)):
        x = (q - zp).astype(np.float32) * np.float32(s)
        np.testing.assert_array_equal(quantize(x, s, zp, qmin=-128, qmax=127, rounding=rounding), q)


@pytest.mark.parametrize("rounding", ["half_away", "half_even"])
def test_quantize_random_against_float32_division_reference(rounding):
    x = RNG.normal(0, 3, 2000).astype(np.float32)
    for s, zp in ((0.0235, -128), (0.05, 5)):
        got = quantize(x, s, zp, qmin=-128, qmax=127, rounding=rounding)
        want = [min(max(ref_round_float(float(np.float32(v) / np.float32(s)), rounding) + zp,
                        -128), 127) for v in x]
        np.testing.assert_array_equal(got, want)


def test_quantize_tflite_vs_onnx_tie_saturation_and_errors():
    kw = dict(qmin=-128, qmax=127)
    assert int(quantize(2.5, 1.0, 0, rounding="half_away", **kw)) == 3  # roundf
    assert int(quantize(2.5, 1.0, 0, rounding="half_even", **kw)) == 2  # rint
    assert int(quantize(-2.5, 1.0, 0, rounding="half_away", **kw)) == -3
    np.testing.assert_array_equal(quantize([np.inf, -np.inf, 1e30], 0.1, 0, rounding="half_even",
                                           **kw), [127, -128, 127])
    np.testing.assert_array_equal(  # per-channel scale and zero point
        quantize([[1.0, 1.0]], [0.5, 0.25], [1, -1], rounding="half_even", **kw), [[3, 3]])
    with pytest.raises(FixedPointError, match="NaN"):
        quantize([np.nan], 0.1, 0, rounding="half_even", **kw)
    with pytest.raises(FixedPointError, match="scale"):
        quantize([1.0], 0.0, 0, rounding="half_even", **kw)
    with pytest.raises(FixedPointError, match="rounding"):
        quantize([1.0], 0.1, 0, rounding="nearest", **kw)


def ref_activation_range(act, s, zp, qmin, qmax, mode):
    def q(f):
        return zp + ref_round_float(float(np.float32(f) / np.float32(s)), mode)
    return {"none": (qmin, qmax), "relu": (max(qmin, q(0)), qmax),
            "relu6": (max(qmin, q(0)), min(qmax, q(6))),
            "relu_n1_to_1": (max(qmin, q(-1)), min(qmax, q(1)))}[act]


@pytest.mark.parametrize("act", ["none", "relu", "relu6", "relu_n1_to_1"])
@pytest.mark.parametrize("mode", ["half_away", "half_even"])
def test_activation_range(act, mode):
    for s, zp in ((6 / 255, -128), (0.05, -128), (0.4, 3), (0.01, 0), (4.0, -1), (0.0235, 10)):
        got = activation_range(act, s, zp, qmin=-128, qmax=127, rounding=mode)
        assert got == ref_activation_range(act, s, zp, -128, 127, mode)
        assert all(isinstance(v, int) for v in got)
    # 1/0.4f rounds to exactly 2.5 in float32: TFLite's roundf gives 3, half-even 2
    assert activation_range("relu_n1_to_1", 0.4, 0, qmin=-128, qmax=127) == (-3, 3)
    assert activation_range("relu_n1_to_1", 0.4, 0, qmin=-128, qmax=127,
                            rounding="half_even") == (-2, 2)


def test_activation_range_errors():
    with pytest.raises(FixedPointError, match="unknown activation"):
        activation_range("gelu", 0.1, 0, qmin=-128, qmax=127)
    with pytest.raises(FixedPointError, match="scale"):
        activation_range("relu", 0.0, 0, qmin=-128, qmax=127)
    with pytest.raises(FixedPointError, match="int32"):
        activation_range("relu6", 1e-30, 0, qmin=-128, qmax=127)


def test_float_scale_round_options():
    acc = np.array([5, -5, 7])
    np.testing.assert_array_equal(float_scale_round(acc, 0.5), [2, -2, 4])
    np.testing.assert_array_equal(float_scale_round(acc, 0.5, rounding="half_away"), [3, -3, 4])
    np.testing.assert_array_equal(float_scale_round(acc, 0.5, offset=1), [4, -2, 4])
    with pytest.raises(FixedPointError, match="precision"):
        float_scale_round(acc, 0.5, precision="float16")
    with pytest.raises(FixedPointError, match="2\\^62"):
        float_scale_round(acc, 1e300)
