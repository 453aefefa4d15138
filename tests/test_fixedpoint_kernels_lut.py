"""int_lut and its table builders, the gemmlowp fixed-point routines, and int_softmax, against
scalar Python-integer transcriptions (tolerance 0) and float sanity bounds."""
from __future__ import annotations

import math

import numpy as np
import pytest

import fixedpoint_kernel_refs as ref
from refq.errors import FixedPointError, ParamError
from refq.fixedpoint import quantize_multiplier
from refq.fixedpoint.kernels import (INT_REGISTRY, build_lut, gemmlowp_lut, hard_swish_fixed_lut,
                                     tflite_softmax_params)
from refq.fixedpoint.kernels import gemmlowp as g
from refq.layers import REGISTRY
from test_fixedpoint_kernels_conv import run

I32 = ref.I32


# ---- int_lut -----------------------------------------------------------------------------------
def test_lut_lookup_and_domain():
    table = np.arange(256)[::-1] - 128
    x = np.array([[-128, 0, 127, 5]])
    y, _ = run("int_lut", [x], {"table": table}, {"input_qmin": -128})
    assert y.tolist() == [[127, -1, -128, -6]]
    with pytest.raises(FixedPointError, match=r"input value 200 at index \[0, 1\]"):
        run("int_lut", [np.array([[0, 200]])], {"table": table}, {"input_qmin": -128})
    with pytest.raises(ParamError, match="2\\^bits"):
        run("int_lut", [x], {"table": np.arange(255)}, {"input_qmin": -128})
    x16 = np.array([[-32768, 32767, 0]])
    y, _ = run("int_lut", [x16], {"table": np.arange(65536)}, {"input_qmin": -32768})
    assert y.tolist() == [[0, 65535, 32768]]


F32 = {"sigmoid": lambda d: np.float32(1) / (np.float32(1) + np.exp(-d)),
       "tanh": np.tanh,
       "hard_swish": lambda d: d * np.minimum(np.maximum(d + np.float32(3), np.float32(0)),
                                              np.float32(6)) / np.float32(6),
       "hard_sigmoid": lambda d: np.minimum(np.maximum(d + np.float32(3), np.float32(0)),
                                            np.float32(6)) / np.float32(6)}
F64 = {"sigmoid": "sigmoid", "tanh": "tanh", "hard_swish": "hard_swish",
       "hard_sigmoid": "hard_sigmoid"}


@pytest.mark.parametrize("fn", sorted(F32))
@pytest.mark.parametrize("enc", [(0.05, -128, 1 / 256, -128, -128, 127),
                                 (0.1, 3, 0.02, 5, -128, 127),
                                 (0.03, 128, 1 / 255, 0, 0, 255)])
def test_build_lut_float_schemes(fn, enc):
    s_in, zp_in, s_out, zp_out, lo, hi = enc
    t32 = build_lut(fn, s_in, zp_in, s_out, zp_out, lo, hi, "lut_float")
    t64 = build_lut(fn, s_in, zp_in, s_out, zp_out, lo, hi, "float")
    v = np.arange(lo, hi + 1)
    d32 = np.float32(s_in) * (v - zp_in).astype(np.float32)  # LUTPopulate: float32 dequantize
    f32 = F32[fn](d32)                                       # the float32 transform
    inv = np.float32(1) / np.float32(s_out)
    d64 = float(np.float32(s_in)) * (v - zp_in).astype(np.float64)
    op = REGISTRY[F64[fn]]
    f64 = op.forward([d64], {}, op.normalise_attrs({}, fn))
    for i, val in enumerate(v):
        q32 = ref.round_half_away_float(float(np.float32(f32[i]) * inv)) + zp_out
        q64 = ref.round_half_even_float(float(f64[i]) / float(np.float32(s_out))) + zp_out
        assert t32[i] == min(hi, max(lo, q32)), (fn, int(val))
        assert t64[i] == min(hi, max(lo, q64)), (fn, int(val))
    assert np.max(np.abs(t32 - t64)) <= 1


def test_build_lut_callable_and_errors():
    t = build_lut(lambda d: d * d, 0.1, 0, 0.1, -128, -128, 127, "float")
    assert t[128 + 3] == -127 and t[128 - 3] == t[128 + 3] and t[128 + 10] == -118  # 0.3², 1²
    with pytest.raises(FixedPointError, match="unknown scheme"):
        build_lut("sigmoid", 0.1, 0, 0.1, 0, -128, 127, "table")
    with pytest.raises(FixedPointError, match="unknown function"):
        build_lut("gelu", 0.1, 0, 0.1, 0, -128, 127, "lut_float")
    with pytest.raises(FixedPointError, match="HARD_SWISH"):
        build_lut("tanh", 0.1, 0, 0.1, 0, -128, 127, "fixed_point")


# ---- gemmlowp fixed point ----------------------------------------------------------------------
def _grid(rng, lo, hi, n=3000):
    edges = [lo, hi, 0, -1, 1, lo + 1, hi - 1] + [s * (1 << k) + d for k in range(31)
                                                   for s in (-1, 1) for d in (-1, 0, 1)]
    vals = [v for v in edges if lo <= v <= hi] + rng.integers(lo, hi + 1, n).tolist()
    return np.array(vals, dtype=np.int64)


@pytest.mark.parametrize("ib", [0, 1, 4, 5, 6, 7, 12])
def test_exp_on_negative_values_matches_scalar_reference(ib):
    rng = np.random.default_rng(ib)
    a = _grid(rng, I32[0], 0)
    got = g.exp_on_negative_values(a, ib)
    want = [ref.g_exp_neg(int(v), ib) for v in a]
    assert got.tolist() == want
    real = np.exp(a / 2.0 ** (31 - ib)) * 2.0 ** 31
    assert np.max(np.abs(got - np.minimum(real, I32[1]))) < 2.0 ** 31 * 2e-6


def test_gemmlowp_constants_are_the_rounded_reals():
    assert g.EXP_MINUS_ONE_EIGHTH == round(math.exp(-1 / 8) * 2 ** 31)
    assert g.ONE_THIRD == round(2 ** 31 / 3)
    for k, m in g.EXP_BARREL:
        assert m == round(math.exp(-2.0 ** k) * 2 ** 31)
    assert g.C48_OVER_17 == round(48 / 17 * 2 ** 29)
    assert g.CNEG32_OVER_17 == round(-32 / 17 * 2 ** 29)


def test_reciprocals_match_scalar_reference():
    rng = np.random.default_rng(1)
    a = _grid(rng, 0, I32[1])
    assert g.one_over_one_plus_x_for_x_in_0_1(a).tolist() == \
        [ref.g_one_over_one_plus_x(int(v)) for v in a]
    assert g.one_minus_x_over_one_plus_x_for_x_in_0_1(a).tolist() == \
        [ref.g_one_minus_x_over_one_plus_x(int(v)) for v in a]
    x = a / 2.0 ** 31
    assert np.max(np.abs(g.one_over_one_plus_x_for_x_in_0_1(a) / 2.0 ** 31 - 1 / (1 + x))) < 1e-8


@pytest.mark.parametrize("ib", [3, 4, 5])
def test_logistic_and_tanh_match_scalar_reference(ib):
    rng = np.random.default_rng(10 + ib)
    a = _grid(rng, -(1 << 31) + 1, I32[1])
    assert g.logistic(a, ib).tolist() == [ref.g_logistic(int(v), ib) for v in a]
    assert g.tanh(a, ib).tolist() == [ref.g_tanh(int(v), ib) for v in a]
    x = a / 2.0 ** (31 - ib)
    assert np.max(np.abs(g.logistic(a, ib) / 2.0 ** 31 - 1 / (1 + np.exp(-x)))) < 1e-6
    assert np.max(np.abs(g.tanh(a, ib) / 2.0 ** 31 - np.tanh(x))) < 2e-6


@pytest.mark.parametrize("fn", ["logistic", "tanh"])
@pytest.mark.parametrize("s_in,zp_in", [(0.05, -128), (0.1, 3), (0.0123, 127), (0.4, 0)])
def test_gemmlowp_lut_matches_tflm_transcription(fn, s_in, zp_in):
    t = gemmlowp_lut(fn, s_in, zp_in)
    q, e = math.frexp(float(np.float32(s_in)) * 2 ** 27)
    mult = ref.round_half_away_float(q * 2 ** 31)
    radius = math.floor(15 * 2 ** 27 / 2 ** e)
    for i, v in enumerate(range(-128, 128)):
        d = v - zp_in
        if d <= -radius:
            want = -128
        elif d >= radius:
            want = 127
        else:
            a = ref.mbqm(d, mult, e)
            want = ref.rdbpot(ref.g_logistic(a, 4), 23) - 128 if fn == "logistic" else \
                ref.rdbpot(ref.g_tanh(a, 4), 24)
            want = max(-128, min(127, want))
        assert t[i] == want, (v, int(t[i]), want)
    real = np.arange(-128, 128) - zp_in
    x = float(np.float32(s_in)) * real
    exact = (1 / (1 + np.exp(-x))) * 256 - 128 if fn == "logistic" else np.tanh(x) * 128
    assert np.max(np.abs(t - np.clip(exact, -128, 127))) <= 1.0
    assert (build_lut(fn, s_in, zp_in, None, None, -128, 127, "gemmlowp") == t).all()


def test_gemmlowp_lut_rejects_other_output_encodings():
    with pytest.raises(FixedPointError, match="1/256|0.00390625"):
        gemmlowp_lut("logistic", 0.1, 0, 0.01, -128)
    with pytest.raises(FixedPointError, match="logistic/sigmoid and tanh"):
        gemmlowp_lut("hard_swish", 0.1, 0)


def _ref_hard_swish(s_in, zp_in, s_out, zp_out, lo=-128, hi=127):
    def srdhm16(a, b):
        if a == b == -32768:
            return 32767
        p = a * b
        return ref.c_div(p + ((1 << 14) if p >= 0 else 1 - (1 << 14)), 1 << 15)

    def satshl16(x, n):
        return max(-32768, min(32767, x * (1 << n)))

    def down16(m):
        return 32767 if m >= (1 << 31) - 1 - (1 << 15) else (m + (1 << 15)) >> 16

    hires = np.float32(1 / 128) * np.float32(s_in)
    om, oe = (int(t) for t in quantize_multiplier(float(hires / np.float32(s_out))))
    rm, re_ = (int(t) for t in quantize_multiplier(float(hires / np.float32(3 / 32768))))
    om, rm = down16(om), down16(rm)
    out = []
    for v in range(lo, hi + 1):
        h = ref.wrap((v - zp_in) * 128, 16)
        pre = srdhm16(h, om)
        r = h
        if re_ > 0:
            r = satshl16(r, re_ - 1)
        r = srdhm16(r, rm)
        if re_ > 0:
            r = satshl16(r, 1)
        if re_ < 0:
            r = ref.rdbpot(r, -re_)
        r = (r + (1 << 15)) >> 1
        p = ref.c_div(r * pre, 1 << 15)
        out.append(max(lo, min(hi, ref.wrap(ref.rdbpot(p, -oe) + zp_out, 16))))
    return out


@pytest.mark.parametrize("enc", [(0.05, -10, 0.03, -100), (0.2, 0, 0.1, -128),
                                 (0.01, 100, 0.005, -60), (0.5, -128, 0.9, -100)])
def test_hard_swish_fixed_lut(enc):
    t = hard_swish_fixed_lut(*enc)
    assert t.tolist() == _ref_hard_swish(*enc)
    s_in, zp_in, s_out, zp_out = enc
    x = s_in * (np.arange(-128, 128) - zp_in)
    exact = np.clip(x * np.clip(x + 3, 0, 6) / 6 / s_out + zp_out, -128, 127)
    assert np.max(np.abs(t - exact)) <= 2.0
    assert (build_lut("hard_swish", *enc, -128, 127, "fixed_point") == t).all()


def test_hard_swish_fixed_lut_rejects_left_shifting_output():
    with pytest.raises(FixedPointError, match="output_multiplier_exponent"):
        hard_swish_fixed_lut(1.0, 0, 0.001, 0)


# ---- int_softmax -------------------------------------------------------------------------------
def test_tflite_softmax_params():
    p = tflite_softmax_params(0.1)
    m, e = quantize_multiplier(float(np.float32(0.1)) * 2 ** 26)
    assert p == {"input_multiplier": int(m), "input_left_shift": int(e),
                 "diff_min": -math.floor(31 * 2 ** 26 / 2 ** int(e))}
    assert tflite_softmax_params(1e9)["input_multiplier"] == (1 << 31) - 1
    assert tflite_softmax_params(1e9, single_rounding=True)["input_left_shift"] == 30
    with pytest.raises(FixedPointError, match="< 1"):
        tflite_softmax_params(1e-9)


@pytest.mark.parametrize("s_in", [0.0625, 0.1, 0.37, 1.5, 20.0])
def test_softmax_tflite_matches_reference_algorithm(s_in):
    rng = np.random.default_rng(int(s_in * 100))
    x = rng.integers(-128, 128, size=(3, 2, 10))
    x[0, 0] = 7                       # a row of equal values
    x[0, 1, :5] = 127                 # ties at the maximum
    x[1, 0, :] = -128
    x[1, 0, 3] = 127                  # one dominant entry, the rest far below diff_min
    p = tflite_softmax_params(s_in)
    attrs = {"softmax": "tflite", "output_zp": -128, "act_min": -128, "act_max": 127, **p}
    y, _ = run("int_softmax", [x], {}, attrs)
    for idx in np.ndindex(x.shape[:-1]):
        want = ref.softmax_row_tflite([int(v) for v in x[idx]], p["input_multiplier"],
                                      p["input_left_shift"], p["diff_min"], -128, -128, 127)
        assert y[idx].tolist() == want, idx
    exact = np.exp(s_in * (x - x.max(-1, keepdims=True)))
    exact = exact / exact.sum(-1, keepdims=True) * 256 - 128
    assert np.max(np.abs(y - np.clip(exact, -128, 127))) <= 2.0


def test_softmax_tflite_long_row_and_uint8():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(2, 1000))
    p = tflite_softmax_params(0.05)
    y, _ = run("int_softmax", [x], {}, {"softmax": "tflite", "output_zp": 0, "act_min": 0,
                                        "act_max": 255, **p})
    for r in range(2):
        assert y[r].tolist() == ref.softmax_row_tflite([int(v) for v in x[r]],
                                                       p["input_multiplier"],
                                                       p["input_left_shift"], p["diff_min"],
                                                       0, 0, 255)


def test_softmax_float():
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, size=(4, 9))
    attrs = {"softmax": "float", "input_zp": 5, "input_scale": 0.08, "output_scale": 1 / 256,
             "output_zp": -128, "act_min": -128, "act_max": 127}
    y, _ = run("int_softmax", [x], {}, attrs)
    for r in range(4):
        v = (x[r] - 5).astype(np.float64) * 0.08
        e = np.exp(v - v.max())
        pr = e / e.sum()
        want = [max(-128, min(127, ref.round_half_even_float(float(q) / (1 / 256)) - 128))
                for q in pr]
        assert y[r].tolist() == want


def test_softmax_validation():
    x = np.zeros((1, 4), np.int64)
    base = {"softmax": "tflite", "output_zp": -128, "act_min": -128, "act_max": 127,
            **tflite_softmax_params(0.1)}
    with pytest.raises(FixedPointError, match="type minimum"):
        run("int_softmax", [x], {}, {**base, "output_zp": 0})
    with pytest.raises(FixedPointError, match="input_multiplier"):
        run("int_softmax", [x], {}, {**base, "input_multiplier": 0})
    with pytest.raises(FixedPointError, match="input_scale"):
        run("int_softmax", [x], {}, {"softmax": "float", "output_zp": -128, "act_min": -128,
                                     "act_max": 127, "output_scale": 1 / 256})
    assert INT_REGISTRY["int_softmax"].accumulate is None
