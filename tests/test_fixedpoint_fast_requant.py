"""`requantize_fast` (kernels/requant_fast.py) against `requantize_bounded`, the plain definition:
tolerance 0 on edge grids (ties at every rounding stage, int32 extremes, both signs, saturation on
both sides), every scheme, per-channel and per-tensor parameters, every accumulator dtype, output
dtypes, blocks evaluated in float64 and blocks handed back to the definition."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.fixedpoint import quantize_multiplier, tosa_scale16, tosa_scale32
from refq.fixedpoint.kernels import requant_fast as rf
from refq.fixedpoint.requantize import FLOAT_SCHEMES, REQUANT_SCHEMES, requantize_bounded
from refq.fixedpoint.rounding import INT32_MAX, INT32_MIN

RNG = np.random.default_rng(20)
# real multipliers: exact ties (3/32, powers of two), 0, small, > 1 (left shifts), random; and a
# set with a tiny one (2^−30: a rounding shift beyond 22 bits, which the float64 path cannot
# hold exactly, so that every block goes to the definition)
REALS = np.array([3 / 32, 0.5, 0.25, 0.0, 2.0 ** -20, 0.75 * 2.0 ** -9, 1.5, 3.0,
                  0.0123, 0.999999, 0.3, 2.0 ** -13 * 1.7])
TINY = np.concatenate([REALS[:6], [2.0 ** -31 * 1.5]])
CLAMPS = [(0, -128, 127, np.int8), (-128, -128, 127, np.int8), (5, -128, 127, np.int8),
          (-128, 0, 127, np.int8), (3, 0, 255, np.uint8), (-7, -32768, 32767, np.int16),
          (11, INT32_MIN, INT32_MAX, np.int64), (-100, -100, 50, np.int32),
          (127, -128, 127, np.int8), (1 << 20, -(1 << 21), 1 << 21, np.int32)]


def params(scheme, reals):
    reals = np.asarray(reals, dtype=np.float64)
    if scheme in ("tflite_double", "single_round"):
        return quantize_multiplier(reals, single_rounding=scheme == "single_round")
    if scheme in ("tosa_double", "tosa_single"):
        return tosa_scale32(reals)
    if scheme == "tosa16":
        return tosa_scale16(reals)
    return reals, None


def edge_acc(m, s, scheme, channels, rows=40):
    """Accumulators around the rounding boundaries of every channel (ties of each stage and
    their neighbours), int32 extremes, zero, ±1 and random values, shape (rows·k, channels)."""
    vals = [0, 1, -1, 2, -2, 3, -3, 16, -16, 48, -48, (1 << 15), -(1 << 15), (1 << 24),
            -(1 << 24), (1 << 30), -(1 << 30), INT32_MAX, INT32_MIN, INT32_MAX - 1,
            INT32_MIN + 1, (1 << 22) + 1, -(1 << 22) - 1]
    for c in range(channels):
        if scheme in FLOAT_SCHEMES:
            mm = float(np.ravel(m)[c % np.size(m)])
            if mm > 0:  # acc·M = k + 1/2 and its neighbours
                for k in (0, 1, 2, 5, 100, -1, -2, -6, -101):
                    t = int(round((k + 0.5) / mm))
                    vals += [t - 1, t, t + 1]
        else:
            mm = int(np.ravel(m)[c % np.size(m)])
            sh = int(np.ravel(s)[c % np.size(s)])
            k = (31 - sh if scheme in ("tflite_double", "single_round") else sh)
            if mm > 0 and 0 < k < 62:  # acc·m near the multiples of 2^(k−1) (ties)
                for j in (1, 3, 5, 7, 255, -1, -3, -5, -255, 2, -2, 64, -64):
                    t = (j << (k - 1)) // mm
                    vals += [t - 1, t, t + 1]
    vals = np.array([v for v in vals if INT32_MIN <= v <= INT32_MAX], dtype=np.int64)
    acc = np.concatenate([vals, RNG.integers(-(1 << 20), 1 << 20, rows * channels),
                          RNG.integers(-300, 300, rows * channels)])
    acc = np.resize(acc, (len(acc) // channels + 1) * channels)
    return acc.reshape(-1, channels)


def check(acc, m, s, scheme, zp, lo, hi, zpb=False, dtype=np.int64, offset=0, bounds=None,
          block=None, monkeypatch=None):
    """requantize_fast equals requantize_bounded (or returns None where that raises)."""
    if block is not None:
        monkeypatch.setattr(rf, "BLOCK", block)
    a64 = acc.astype(np.int64) - offset
    b = (int(a64.min()), int(a64.max())) if bounds is None else bounds
    try:
        want = requantize_bounded(a64, None, m, s, scheme, zero_point=zp, act_min=lo, act_max=hi,
                                  zp_before_round=zpb)
    except Exception:  # the definition raises: the fast path must not answer
        assert rf.requantize_fast(acc, b, m, s, scheme, zero_point=zp, act_min=lo, act_max=hi,
                                  zp_before_round=zpb, dtype=dtype, offset=offset) is None
        return None
    got = rf.requantize_fast(acc, b, m, s, scheme, zero_point=zp, act_min=lo, act_max=hi,
                             zp_before_round=zpb, dtype=dtype, offset=offset)
    if got is None:
        return None
    y, ext = got
    assert y.dtype == dtype and y.shape == acc.shape
    np.testing.assert_array_equal(y, want)
    assert ext == (int(a64.min()), int(a64.max()))
    return y


@pytest.mark.parametrize("scheme", REQUANT_SCHEMES)
@pytest.mark.parametrize("clamp", CLAMPS, ids=lambda c: f"zp{c[0]}-[{c[1]},{c[2]}]")
@pytest.mark.parametrize("reals", [REALS, TINY], ids=["typical", "tiny"])
def test_per_channel_edge_grid(scheme, clamp, reals, monkeypatch):
    zp, lo, hi, dtype = clamp
    m, s = params(scheme, reals)
    acc = edge_acc(m, s, scheme, len(reals))
    if scheme in ("tosa_single", "tosa_double"):  # the REQUIRE: |acc| < 2^(shift − 1)
        acc = np.clip(acc, -(1 << (int(np.min(s)) - 1)), (1 << (int(np.min(s)) - 1)) - 1)
    answered = 0
    for block in (rf.BLOCK, 64 * len(reals)):  # one block, and many (the last one partial)
        for a in (acc, acc.astype(np.int32)):
            answered += check(a, m, s, scheme, zp, lo, hi, dtype=dtype, block=block,
                              monkeypatch=monkeypatch) is not None
    small = np.clip(acc, -(1 << 24), 1 << 24)
    for a in (small.astype(np.float32), small.astype(np.float64)):
        answered += check(a, m, s, scheme, zp, lo, hi, dtype=dtype) is not None
    if scheme in FLOAT_SCHEMES:
        for a in (acc, small.astype(np.float32)):
            check(a, m, s, scheme, zp, lo, hi, zpb=True, dtype=dtype)
    if not (scheme == "float32_rne" and hi - lo > 1 << 24):
        assert answered


@pytest.mark.parametrize("scheme", REQUANT_SCHEMES)
def test_per_tensor_every_int16_accumulator(scheme):
    """Every accumulator in [−2^15, 2^15) with M = 3/32 (ties at every stage) and M = 0.75."""
    acc = np.arange(-(1 << 15), 1 << 15, dtype=np.int64).reshape(-1, 1)
    for real in (3 / 32, 0.75, 2.0 ** -7):
        m, s = params(scheme, [real])
        for zp, lo, hi, dtype in CLAMPS[:6]:
            assert check(acc, m, s, scheme, zp, lo, hi, dtype=dtype) is not None
            assert check(acc.astype(np.float32), m, s, scheme, zp, lo, hi, dtype=dtype) \
                is not None


def test_typical_multipliers_take_the_float64_path(monkeypatch):
    """With these multipliers (rounding shifts up to 19 bits, left shifts up to 2), accumulators
    within 2^19 never reach the definition: the edge grids above test the float64 evaluation."""
    monkeypatch.setattr(rf, "requantize_bounded", None)
    for scheme in REQUANT_SCHEMES:
        m, s = params(scheme, REALS)
        acc = np.clip(edge_acc(m, s, scheme, len(REALS)), -(1 << 19), 1 << 19)
        for zp, lo, hi, dtype in CLAMPS:
            if scheme == "float32_rne" and hi - lo > 1 << 24:
                continue
            for a in (acc, acc.astype(np.int32), acc.astype(np.float32)):
                assert check(a, m, s, scheme, zp, lo, hi, dtype=dtype) is not None


@pytest.mark.parametrize("scheme", ["tflite_double", "tosa_double", "single_round",
                                    "tosa_single", "tosa16"])
def test_blocks_beyond_float64_exactness_use_the_definition(scheme, monkeypatch):
    """Blocks whose |acc|·M may leave 2^53 (and tflite left shifts that wrap) go to
    requantize_bounded; the others to the float64 path, in one call."""
    reals = [2.0 ** -16, 3 * 2.0 ** -17, 2.0 ** -20, 2.0 ** -18]  # int32 results of 2^46
    m, s = params(scheme, reals if scheme == "tosa16" else [0.7, 3.0, 2.0 ** -15, 0.5])
    if scheme == "tflite_double":
        assert int(np.max(s)) > 0
    top = 1 << (46 if scheme == "tosa16" else 29)  # tosa16 takes 48-bit accumulators
    big = RNG.integers(-top, top, (64, 4))
    small = RNG.integers(-1000, 1000, (64, 4))
    acc = np.concatenate([small, big, small])
    if scheme in ("tosa_single", "tosa_double"):
        half = 1 << (int(np.min(s)) - 1)
        acc = np.clip(acc, -half, half - 1)
    calls = []
    real = rf.requantize_bounded
    monkeypatch.setattr(rf, "requantize_bounded", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert check(acc, m, s, scheme, -3, -128, 127, dtype=np.int8, block=64 * 4,
                 monkeypatch=monkeypatch) is not None
    assert calls and len(calls) < 3


def test_channels_with_a_tiny_multiplier_go_to_the_definition(monkeypatch):
    """A channel whose rounding shift is too long for float64 is evaluated by requantize_bounded
    on its column; the other channels keep the float64 path."""
    for scheme in ("tflite_double", "tosa_double", "single_round", "tosa_single"):
        m, s = params(scheme, TINY)
        acc = np.clip(edge_acc(m, s, scheme, len(TINY)), -(1 << 20), 1 << 20)
        cols = []
        real = rf.requantize_bounded
        monkeypatch.setattr(rf, "requantize_bounded",
                            lambda a, *r, **k: cols.append(a.shape[-1]) or real(a, *r, **k))
        for zp, lo, hi, dtype in CLAMPS[:6]:
            assert check(acc, m, s, scheme, zp, lo, hi, dtype=dtype) is not None
        assert cols and set(cols) == {1}
        monkeypatch.undo()


def test_zero_point_added_after_the_floor_when_it_does_not_fold(monkeypatch):
    """A large |zp|·2^k leaves 2^52: the zero point is added after the floor (and the NEG term
    stays when zp > act_min)."""
    for scheme, reals in (("tflite_double", [2.0 ** -21, 2.0 ** -22 * 3]),
                          ("tosa_double", [2.0 ** -21, 2.0 ** -23])):
        m, s = params(scheme, reals)
        zp = 30000
        form = rf._Dyadic(scheme, np.asarray(m), np.asarray(s), zp, -32768, 32767)
        assert form.base == zp
        acc = RNG.integers(-(1 << 24), 1 << 24, (200, 2))
        acc[:4] = [[-(1 << 20), -(3 << 20)], [1 << 20, 3 << 19], [-1, 0], [-(1 << 21), 1]]
        assert check(acc, m, s, scheme, zp, -32768, 32767, dtype=np.int16) is not None


def test_neg_term_left_out_only_when_zero_point_is_the_clamp_floor():
    m, s = params("tflite_double", [0.3, 0.01])
    assert rf._Dyadic("tflite_double", m, s, -128, -128, 127).ts is None
    assert rf._Dyadic("tflite_double", m, s, -127, -128, 127).ts is not None
    m, s = params("tosa_double", [0.3, 0.01])
    assert rf._Dyadic("tosa_double", m, s, 0, 0, 255).ts is None
    assert rf._Dyadic("tosa_double", m, s, 1, 0, 255).ts is not None


def test_mixed_channels_with_and_without_rounding_shift():
    """tflite_double with right = 0 on some channels (no NEG there); tosa_double with shifts on
    both sides of 31; multiplier 2^30 exactly (acc·m = −2^30 is not negative after SRDHM)."""
    acc = np.array([[-1, -2, -3, 1], [-2, -1, 7, -7], [5, -5, -(1 << 30), 1 << 30]] * 50)
    m = np.array([1 << 30, (1 << 30) + 1, 1 << 30, INT32_MAX])
    s = np.array([0, -1, -2, 0])
    for zp, lo, hi, dtype in CLAMPS:
        check(acc, m, s, "tflite_double", zp, lo, hi, dtype=dtype)
    tm, ts = np.array([1 << 30, 3 << 29, INT32_MAX, 1]), np.array([31, 32, 33, 30])
    for zp, lo, hi, dtype in CLAMPS:
        check(np.clip(acc, -(1 << 29), (1 << 29) - 1), tm, ts, "tosa_double", zp, lo, hi,
              dtype=dtype)


def test_offset_is_subtracted_exactly():
    """int_requantize's x − input_zp: the offset is subtracted in float64 before the float32
    rounding of float32_rne, as the definition subtracts it in int64."""
    acc = np.concatenate([np.arange(-300, 300), [(1 << 24) + 1, -(1 << 24) - 3]]).reshape(-1, 1)
    for scheme in REQUANT_SCHEMES:
        m, s = params(scheme, [0.37])
        for off in (0, 17, -128, 1 << 20):
            check(acc, m, s, scheme, 3, -(1 << 30), 1 << 30, offset=off)
            check(acc.astype(np.int32), m, s, scheme, -128, -128, 127, dtype=np.int8,
                  offset=off)


def test_unproven_bounds_return_none():
    m, s = params("tosa_double", [0.5])
    acc = np.array([[1 << 35]], dtype=np.int64)
    assert rf.requantize_fast(acc, (0, 1 << 35), m, s, "tflite_double", zero_point=0,
                              act_min=-128, act_max=127) is None
    acc = np.array([[5]])
    # loose bounds beyond the TOSA REQUIRE: not proven, even though the values satisfy it
    assert rf.requantize_fast(acc, (-(1 << 40), 1 << 40), m, s, "tosa_double", zero_point=0,
                              act_min=-128, act_max=127) is None
    # a result beyond int32 for single rounding (TFLite's DCHECK) is not proven
    m1, s1 = params("single_round", [3.0])
    assert rf.requantize_fast(np.array([[INT32_MAX]]), (0, INT32_MAX), m1, s1, "single_round",
                              zero_point=0, act_min=INT32_MIN, act_max=INT32_MAX) is None
    # a dtype that cannot hold the clamp range
    assert rf.requantize_fast(acc, (5, 5), m, s, "tosa_double", zero_point=0, act_min=0,
                              act_max=255, dtype=np.int8) is None


def test_empty_accumulator():
    m, s = params("tflite_double", [0.5, 0.25])
    y, ext = rf.requantize_fast(np.zeros((0, 2)), (0, 0), m, s, "tflite_double", zero_point=0,
                                act_min=-128, act_max=127, dtype=np.int8)
    assert y.shape == (0, 2) and y.dtype == np.int8 and ext == (0, 0)


@settings(max_examples=120, deadline=None)
@given(scheme=st.sampled_from(REQUANT_SCHEMES), seed=st.integers(0, 2 ** 32 - 1),
       channels=st.integers(1, 9), log_m=st.floats(-32.0, 2.0), spread=st.integers(0, 31),
       zp=st.integers(-300, 300), width=st.integers(0, 3), acc_dtype=st.integers(0, 3))
def test_random_parameters_and_accumulators(scheme, seed, channels, log_m, spread, zp, width,
                                            acc_dtype):
    rng = np.random.default_rng(seed)
    reals = 2.0 ** (log_m + rng.uniform(-3, 3, channels))
    reals[rng.random(channels) < 0.2] = 2.0 ** np.round(log_m)  # exact powers of two: ties
    m, s = params(scheme, reals)
    if scheme in ("tosa16",) and np.any(np.asarray(m) == 0) and rng.random() < 0.5:
        m = np.maximum(m, 1)
    lim = 1 << spread
    if scheme in ("tosa_single", "tosa_double"):
        lim = min(lim, 1 << (int(np.min(s)) - 1))
    acc = rng.integers(-lim, lim, (int(rng.integers(1, 300)), channels))
    lo, hi, dtype = [(-128, 127, np.int8), (0, 255, np.uint8), (-32768, 32767, np.int16),
                     (INT32_MIN, INT32_MAX, np.int64)][width]
    zp = int(np.clip(zp, lo, hi))
    if acc_dtype == 1:
        acc = acc.astype(np.int32)
    elif acc_dtype == 2:
        acc = np.clip(acc, -(1 << 24), 1 << 24).astype(np.float32)
    elif acc_dtype == 3:
        acc = acc.astype(np.float64)
    check(acc, m, s, scheme, zp, lo, hi, dtype=dtype)
    if scheme in FLOAT_SCHEMES:
        check(acc, m, s, scheme, zp, lo, hi, zpb=True, dtype=dtype)
