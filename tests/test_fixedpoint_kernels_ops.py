"""Elementwise, pooling, mean and data-movement integer kernels against naive Python-integer loops
(tolerance 0)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import fixedpoint_kernel_refs as ref
from refq.errors import FixedPointError
from refq.fixedpoint import quantize_multiplier, real_multiplier, tosa_scale32
from refq.fixedpoint.kernels import INT_REGISTRY
from refq.fixedpoint.kernels.pool_common import reciprocal_scale
from refq.fixedpoint.kernels.pooling import mean_multiplier
from test_fixedpoint_kernels_conv import ACT, requant_params, run

I32 = ref.I32


# ---- int_add ---------------------------------------------------------------------------------
def add_params(s_a, s_b, s_out, scheme, left_shift=20):
    """The TFLite ADD preparation (§4.1), in double."""
    twice = 2 * max(s_a, s_b)
    reals = {"a_": s_a / twice, "b_": s_b / twice, "out_": twice / ((1 << left_shift) * s_out)}
    enc = quantize_multiplier if scheme in ("tflite_double", "single_round") else tosa_scale32
    out = {}
    for p, r in reals.items():
        m, s = enc(r) if enc is tosa_scale32 else enc(r, single_rounding=scheme == "single_round")
        out[p + "multiplier"], out[p + "shift"] = np.array([m], np.int32), np.array([s], np.int32)
    return out


def ref_add_tflite(xa, xb, params, attrs, bits=32, pol="error"):
    sch, ls = attrs["scheme"], attrs.get("left_shift", 20)
    xa, xb = np.broadcast_arrays(xa, xb)
    out = np.zeros(xa.shape, np.int64)
    g = lambda n: int(np.asarray(params[n]).ravel()[0])  # noqa: E731
    for idx in np.ndindex(xa.shape):
        a = ref.policy((int(xa[idx]) - attrs["a_zp"]) * (1 << ls), bits, pol)
        b = ref.policy((int(xb[idx]) - attrs["b_zp"]) * (1 << ls), bits, pol)
        s = ref.policy(ref.scaled(a, g("a_multiplier"), g("a_shift"), sch)
                       + ref.scaled(b, g("b_multiplier"), g("b_shift"), sch), bits, pol)
        out[idx] = ref.requant(s, g("out_multiplier"), g("out_shift"), sch, attrs["output_zp"],
                               attrs["act_min"], attrs["act_max"])
    return out


@pytest.mark.parametrize("scheme", ["tflite_double", "single_round", "tosa_double"])
@pytest.mark.parametrize("dtype,zps", [("int8", (-128, 127, 5)), ("uint8", (0, 255, 128)),
                                       ("int8", (127, -128, -128))])
def test_add_tflite_matches_section_4_1(scheme, dtype, zps):
    rng = np.random.default_rng(1)
    lo, hi = ACT[dtype]
    a = rng.integers(lo, hi + 1, size=(2, 4, 3, 5))
    b = rng.integers(lo, hi + 1, size=(2, 1, 1, 5))  # broadcasting
    a[0, 0, 0, :] = hi
    b[0, 0, 0, :] = hi  # saturation of the sum
    for s_a, s_b, s_o in ((0.02, 0.05, 0.04), (0.5, 0.5, 0.01), (0.01, 0.013, 0.2)):
        params = add_params(s_a, s_b, s_o, scheme)
        attrs = {"a_zp": zps[0], "b_zp": zps[1], "output_zp": zps[2], "act_min": lo,
                 "act_max": hi, "scheme": scheme, "add": "tflite"}
        y, big = run("int_add", [a, b], params, attrs)
        np.testing.assert_array_equal(y, ref_add_tflite(a, b, params, attrs))
        assert big >= max(abs(int(v) - zps[0]) for v in a.ravel()) << 20
        y_tosa, _ = run("int_add", [a, b], params, {**attrs, "add": "tosa"})
        np.testing.assert_array_equal(y_tosa, y)


def test_add_tflite_hits_both_clamps():
    a = np.array([[-128, 127, 0, 127]])
    params = add_params(0.5, 0.5, 0.01, "tflite_double")
    attrs = {"a_zp": 0, "b_zp": 0, "output_zp": 0, "act_min": -128, "act_max": 127,
             "scheme": "tflite_double", "add": "tflite"}
    y, _ = run("int_add", [a, a], params, attrs)
    assert y.tolist() == [[-128, 127, 0, 127]]


@pytest.mark.parametrize("policy", ["error", "wrap", "saturate"])
def test_add_accumulator_policy(policy):
    a = np.array([[-128, -3, 0, 100, 127]])
    b = np.array([[127, 7, 0, -100, 127]])
    params = add_params(0.02, 0.03, 0.05, "tflite_double", left_shift=9)
    attrs = {"a_zp": 0, "b_zp": 0, "output_zp": 0, "act_min": -128, "act_max": 127,
             "scheme": "tflite_double", "add": "tflite", "left_shift": 9,
             "accumulator_bits": 16, "overflow": policy}
    if policy == "error":
        with pytest.raises(FixedPointError, match="accumulator.*index"):
            run("int_add", [a, b], params, attrs)
        return
    y, big = run("int_add", [a, b], params, attrs)
    assert big == 128 << 9
    np.testing.assert_array_equal(y, ref_add_tflite(a, b, params, attrs, 16, policy))


@pytest.mark.parametrize("scheme", ["float_rne", "float32_rne", "float_half_away"])
def test_add_float(scheme):
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(3, 7))
    b = rng.integers(0, 256, size=(3, 7))
    a[0, :4], b[0, :4] = [1, 3, 5, 7], [0, 0, 0, 0]  # exact ties with ra = 0.5
    attrs = {"a_zp": 0, "b_zp": 255, "output_zp": 3, "act_min": 0, "act_max": 255,
             "scheme": scheme, "add": "float"}
    for ra, rb in ((0.5, 0.25), (0.37, 1.9)):
        params = {"a_real": np.array([ra]), "b_real": np.array([rb])}
        y, _ = run("int_add", [a, b], params, attrs)
        want = np.zeros(a.shape, np.int64)
        for idx in np.ndindex(a.shape):
            da, db = int(a[idx]), int(b[idx]) - 255
            if scheme == "float32_rne":
                v = float(np.float32(da) * np.float32(ra) + np.float32(db) * np.float32(rb))
            else:
                v = da * ra + db * rb
            r = ref.round_half_away_float(v) if scheme == "float_half_away" \
                else ref.round_half_even_float(v)
            want[idx] = min(255, max(0, r + 3))
        np.testing.assert_array_equal(y, want)
    y, _ = run("int_add", [a, b], {"a_real": np.array([0.5]), "b_real": np.array([0.0])}, attrs)
    ties = y[0, :4] - 3
    assert ties.tolist() == ([1, 2, 3, 4] if scheme == "float_half_away" else [0, 2, 2, 4])


# ---- int_multiply / int_requantize / int_clamp -----------------------------------------------
@pytest.mark.parametrize("scheme", ["tflite_double", "single_round", "tosa_double", "float_rne"])
def test_multiply_se_gate_per_channel(scheme):
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(2, 3, 4, 5))
    g = rng.integers(-128, 128, size=(2, 1, 1, 5))
    reals = np.array([1 / 128, 1 / 64, 3e-3, 1 / 256, 0.02])
    params = requant_params(scheme, reals)
    attrs = {"a_zp": -3, "b_zp": -128, "output_zp": -128, "act_min": -128, "act_max": 127,
             "scheme": scheme, "zp_before_round": scheme == "float_rne"}
    y, _ = run("int_multiply", [x, g], params, attrs)
    want = np.zeros(y.shape, np.int64)
    xb, gb = np.broadcast_arrays(x, g)
    for idx in np.ndindex(y.shape):
        p = (int(xb[idx]) + 3) * (int(gb[idx]) + 128)
        o = idx[-1]
        m = ref.pick(params.get("real_multiplier", params.get("multiplier")), o)
        sh = 0 if scheme == "float_rne" else ref.pick(params["shift"], o)
        want[idx] = ref.requant(p, m, sh, scheme, -128, -128, 127, attrs["zp_before_round"])
    np.testing.assert_array_equal(y, want)


def test_requantize_int8_to_uint8_and_per_channel():
    x = np.arange(-128, 128).reshape(1, 64, 4)
    params = requant_params("tflite_double", [1.0])
    attrs = {"input_zp": -5, "output_zp": 123, "act_min": 0, "act_max": 255,
             "scheme": "tflite_double"}
    y, _ = run("int_requantize", [x], params, attrs)
    np.testing.assert_array_equal(y, x + 5 + 123)  # M = 1 exactly: a zero-point change only
    params = requant_params("tosa_single", [0.5, 1 / 3, 2.5, 0.75])
    attrs = {"input_zp": 0, "output_zp": 0, "act_min": -128, "act_max": 127,
             "scheme": "tosa_single"}
    y, _ = run("int_requantize", [x], params, attrs)
    want = [[[ref.requant(int(v), params["multiplier"][c], params["shift"][c], "tosa_single", 0,
                          -128, 127) for c, v in enumerate(row)] for row in x[0]]]
    np.testing.assert_array_equal(y, want)


def test_clamp():
    x = np.arange(-128, 128).reshape(1, 256)
    y, _ = run("int_clamp", [x], {}, {"act_min": -20, "act_max": 40})
    np.testing.assert_array_equal(y, [[min(40, max(-20, v)) for v in range(-128, 128)]])


# ---- int_quantize / int_dequantize -----------------------------------------------------------
@pytest.mark.parametrize("rounding", ["half_away", "half_even"])
def test_quantize_rounding_and_saturation(rounding):
    s = 0.5
    x = np.array([[1.25, -1.25, 0.75, -0.75, 0.25, 1e6, -1e6, 0.3, 63.7]], np.float32)
    y, _ = run("int_quantize", [x.astype(np.float64)], {},
               {"scale": s, "zero_point": -1, "qmin": -128, "qmax": 127, "rounding": rounding})
    want = []
    for v in x.ravel():
        q = np.float32(v) / np.float32(s)
        r = ref.round_half_away_float(float(q)) if rounding == "half_away" \
            else ref.round_half_even_float(float(q))
        want.append(min(127, max(-128, r - 1)))
    assert y.ravel().tolist() == want
    assert y.ravel()[:5].tolist() == ([2, -4, 1, -3, 0] if rounding == "half_away"
                                      else [1, -3, 1, -3, -1])


def test_dequantize_is_float32_product():
    q = np.arange(-128, 128).reshape(2, 128)
    y, _ = run("int_dequantize", [q], {}, {"scale": 0.1, "zero_point": 7})
    assert y.dtype == np.float64
    want = [float(np.float32(v - 7) * np.float32(0.1)) for v in q.ravel()]
    assert y.ravel().tolist() == want


# ---- pooling -----------------------------------------------------------------------------------
POOLS = [((3, 3), (2, 2), "same", (0, 0, 0, 0)), ((2, 2), (2, 2), "valid", (0, 0, 0, 0)),
         ((3, 2), (2, 1), "explicit", (1, 2, 0, 1)), ((3, 3), (1, 1), "same", (0, 0, 0, 0))]


@pytest.mark.parametrize("pool", POOLS)
def test_max_pool(pool):
    k, s, padding, pads = pool
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, size=(2, 7, 6, 3))
    attrs = {"pool_size": list(k), "strides": list(s), "padding": padding, "pads": list(pads),
             "act_min": -100, "act_max": 90}
    y, _ = run("int_max_pool2d", [x], {}, attrs)
    oh, ow, wins = ref.windows(7, 6, k, s, padding, pads)
    want = np.zeros((2, oh, ow, 3), np.int64)
    for n in range(2):
        for i, j, taps in wins:
            for c in range(3):
                want[n, i, j, c] = min(90, max(-100, max(int(x[n, a, b, c]) for a, b in taps)))
    np.testing.assert_array_equal(y, want)


def _ref_avg(x, attrs, params=None):
    k, s = attrs["pool_size"], attrs["strides"]
    n_, h, w, c = x.shape
    oh, ow, wins = ref.windows(h, w, k, s, attrs["padding"], attrs["pads"])
    out = np.zeros((n_, oh, ow, c), np.int64)
    zi, zo, lo, hi = attrs["input_zp"], attrs["output_zp"], attrs["act_min"], attrs["act_max"]
    for n in range(n_):
        for i, j, taps in wins:
            for ch in range(c):
                vals = [int(x[n, a, b, ch]) for a, b in taps]
                cnt = len(vals)
                if attrs["avg"] == "tflite":
                    v = ref.round_half_away(Fraction(sum(vals), cnt)) - zi
                elif attrs["avg"] == "tosa":
                    m, sh = ref.reciprocal_scale(cnt)
                    v = ref.apply_scale_32(sum(vals) - zi * cnt, m, sh, False)
                else:
                    mm = float(np.asarray((params or {}).get("real_multiplier", [1.0]))[0])
                    r = ref.round_half_even_float((float(sum(vals) - zi * cnt) / cnt) * mm)
                    out[n, i, j, ch] = min(hi, max(lo, r + zo))
                    continue
                if params and attrs["avg"] != "float":
                    out[n, i, j, ch] = ref.requant(v, ref.pick(params["multiplier"], ch),
                                                   ref.pick(params["shift"], ch), attrs["scheme"],
                                                   zo, lo, hi)
                else:
                    out[n, i, j, ch] = min(hi, max(lo, v + zo))
    return out


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("mode", ["tflite", "tosa", "float"])
@pytest.mark.parametrize("zp", [-128, 0, 127])
def test_avg_pool(pool, mode, zp):
    k, s, padding, pads = pool
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, size=(2, 7, 6, 3))
    x[0, :4, :4, 0] = [[1, 0, 1, 0], [0, 0, 1, 1], [-1, 0, -1, 0], [1, 1, 0, 0]]  # ties
    attrs = {"pool_size": list(k), "strides": list(s), "padding": padding, "pads": list(pads),
             "input_zp": zp, "output_zp": zp, "act_min": -128, "act_max": 127, "avg": mode}
    y, _ = run("int_avg_pool2d", [x], {}, attrs)
    np.testing.assert_array_equal(y, _ref_avg(x, attrs))
    if mode == "float":
        params = {"real_multiplier": np.array([1.7])}
    else:
        params = requant_params("tflite_double", np.array([0.5, 1.3, 0.26]))
        attrs = {**attrs, "scheme": "tflite_double", "output_zp": -7, "act_min": -50}
    y, _ = run("int_avg_pool2d", [x], params, attrs)
    np.testing.assert_array_equal(y, _ref_avg(x, attrs, params))


def test_tosa_avg_rounding_is_half_away_and_equals_tflite_at_zero_zp():
    """§5.1: reciprocal_scale + single rounding = round half away of Σ(x − zp)/count."""
    for cnt in range(1, 65):
        m, sh = reciprocal_scale(np.array([cnt]))
        assert (int(m[0]), int(sh[0])) == ref.reciprocal_scale(cnt)
        for acc in range(-128 * cnt, 127 * cnt + 1, max(1, cnt // 3)):
            assert ref.apply_scale_32(acc, int(m[0]), int(sh[0]), False) == \
                ref.round_half_away(Fraction(acc, cnt))


# ---- int_mean ----------------------------------------------------------------------------------
def _ref_mean(x, params, attrs, bits=32, pol="error"):
    n_, h, w, c = x.shape
    cnt = h * w
    out = np.zeros((n_, c), np.int64)
    zi, zo, lo, hi = attrs["input_zp"], attrs["output_zp"], attrs["act_min"], attrs["act_max"]
    for n in range(n_):
        for ch in range(c):
            acc = ref.policy(sum(int(x[n, a, b, ch]) - zi for a in range(h) for b in range(w)),
                             bits, pol)
            if attrs["mean"] == "tflite":
                m, sh = int(ref.pick(params["multiplier"], ch)), int(ref.pick(params["shift"], ch))
                kk = min(cnt.bit_length() - 1, 32, 31 + sh)
                out[n, ch] = ref.requant(acc, (m << kk) // cnt, sh - kk, attrs["scheme"], zo, lo,
                                         hi)
            elif attrs["mean"] == "tosa":
                m, sh = int(ref.pick(params["multiplier"], ch)), int(ref.pick(params["shift"], ch))
                out[n, ch] = min(hi, max(lo, ref.apply_scale_32(acc, m, sh, False) + zo))
            else:
                mm = float(ref.pick(params["real_multiplier"], ch)) / cnt
                out[n, ch] = min(hi, max(lo, ref.round_half_even_float(float(acc) * mm) + zo))
    return out


@pytest.mark.parametrize("mode,scheme", [("tflite", "tflite_double"), ("tflite", "single_round"),
                                         ("tosa", "tosa_single"), ("tosa", "tosa_double"),
                                         ("float", "float_rne")])
@pytest.mark.parametrize("hw", [(7, 7), (4, 6), (1, 1), (5, 3)])
def test_mean(mode, scheme, hw):
    rng = np.random.default_rng(8)
    x = rng.integers(-128, 128, size=(2,) + hw + (4,))
    s_in, s_out = 0.05, 0.02
    n = hw[0] * hw[1]
    if mode == "tflite":
        m, sh = quantize_multiplier(real_multiplier(s_in, 1.0, s_out))
        params = {"multiplier": np.array([m]), "shift": np.array([sh])}
    elif mode == "tosa":
        m, sh = tosa_scale32(s_in / (n * s_out))
        params = {"multiplier": np.array([m]), "shift": np.array([sh])}
    else:
        params = {"real_multiplier": np.array([s_in / s_out])}
    attrs = {"input_zp": -9, "output_zp": 4, "act_min": -128, "act_max": 127, "mean": mode,
             "scheme": scheme}
    y, big = run("int_mean", [x], params, attrs)
    np.testing.assert_array_equal(y, _ref_mean(x, params, attrs))
    assert big == int(np.max(np.abs(np.sum(x + 9, axis=(1, 2)))))
    yk, _ = run("int_mean", [x], params, {**attrs, "keepdims": True})
    np.testing.assert_array_equal(yk, y[:, None, None, :])


def test_mean_multiplier_folding():
    for n in (1, 2, 3, 49, 64, 1000, 1 << 20):
        for m, sh in ((1 << 30, 0), ((1 << 31) - 1, -31), (1518500250, -3), (1 << 30, 5)):
            mm, ss = mean_multiplier(np.array(m), np.array(sh), n)
            k = min(n.bit_length() - 1, 32, 31 + sh)
            assert (int(mm), int(ss)) == ((m << k) // n, sh - k)
            assert 0 <= int(mm) < 1 << 31 and -31 <= int(ss) <= 30


@pytest.mark.parametrize("policy", ["error", "wrap", "saturate"])
def test_mean_accumulator_policy(policy):
    x = np.full((1, 16, 16, 2), 127)
    x[0, :, :, 1] = -128
    m, sh = quantize_multiplier(1.0)
    params = {"multiplier": np.array([m]), "shift": np.array([sh])}
    attrs = {"input_zp": -128, "output_zp": 0, "act_min": -128, "act_max": 127,
             "mean": "tflite", "scheme": "tflite_double", "accumulator_bits": 16,
             "overflow": policy}
    if policy == "error":
        with pytest.raises(FixedPointError, match=r"accumulator.*index \(0, 0\)"):
            run("int_mean", [x], params, attrs)
        return
    y, big = run("int_mean", [x], params, attrs)
    assert big == 255 * 256
    np.testing.assert_array_equal(y, _ref_mean(x, params, attrs, 16, policy))


# ---- int_concat / int_pad ----------------------------------------------------------------------
def test_concat_and_pad():
    a = np.arange(24).reshape(1, 2, 3, 4) - 12
    b = np.arange(6).reshape(1, 2, 3, 1)
    y, _ = run("int_concat", [a, b], {}, {"axis": -1})
    assert y.shape == (1, 2, 3, 5) and y[0, 1, 2].tolist() == a[0, 1, 2].tolist() + [5]
    y, _ = run("int_pad", [a], {}, {"pads": [1, 0, 2, 1], "value": -128})
    assert y.shape == (1, 3, 6, 4)
    assert (y[0, 0] == -128).all() and (y[0, 1:, :2] == -128).all() and (y[0, 1:, 5] == -128).all()
    np.testing.assert_array_equal(y[0, 1:, 2:5], a[0])


def test_every_kernel_is_registered_with_a_docstring_page():
    names = {"int_quantize", "int_dequantize", "int_conv2d", "int_dense", "int_add",
             "int_multiply", "int_requantize", "int_max_pool2d", "int_avg_pool2d", "int_mean",
             "int_concat", "int_pad", "int_clamp", "int_lut", "int_softmax"}
    assert names <= set(INT_REGISTRY)
    for name in names:
        doc = INT_REGISTRY[name].forward.__doc__
        for heading in ("Definition", "Integer semantics", "Errors"):
            assert doc and name in doc and heading in doc, (name, heading)
