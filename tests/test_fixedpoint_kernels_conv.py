"""int_conv2d / int_dense against naive Python-integer loops (tolerance 0), the exact-BLAS bound and
its int64 fallback, and the accumulator overflow policies."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import fixedpoint_kernel_refs as ref
from refq.errors import FixedPointError
from refq.fixedpoint import quantize_multiplier, tosa_scale32
from refq.fixedpoint.kernels import INT_REGISTRY
from refq.fixedpoint.kernels import conv as kconv
from refq.fixedpoint.kernels import operands as kops

ACT = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
WEIGHTS = {"int8": (-127, 127), "int4": (-8, 7), "uint8": (0, 255)}


def run(name, inputs, params, attrs):
    op = INT_REGISTRY[name]
    a = op.normalise_attrs(attrs, name)
    op.infer_shape([x.shape for x in inputs], a, params)
    y = op.forward(inputs, params, a)
    if op.accumulate is not None:
        y2, big = op.accumulate(inputs, params, a)
        np.testing.assert_array_equal(y, y2)
        return y, big
    return y, None


def requant_params(scheme, reals):
    reals = np.asarray(reals, dtype=np.float64)
    if scheme in ("tflite_double", "single_round"):
        m, s = quantize_multiplier(reals, single_rounding=scheme == "single_round")
        return {"multiplier": m.astype(np.int32), "shift": s.astype(np.int32)}
    if scheme in ("tosa_double", "tosa_single"):
        m, s = tosa_scale32(reals)
        return {"multiplier": m.astype(np.int32), "shift": s.astype(np.int32)}
    return {"real_multiplier": reals}


def channel_reals(rng, o, k, xa, wa):
    """Per-channel M around the scale that maps a typical accumulator onto ~±100 LSB: exact powers
    of two (ties), larger ones (saturation on both sides) and random ones."""
    base = 100.0 / (np.sqrt(k) * xa * wa / 2.0 + 1.0)
    pot = 2.0 ** np.round(np.log2(base))
    cands = [pot, 4 * pot, pot / 2, base * rng.uniform(0.5, 2.0), 16 * pot, base]
    return np.array([cands[i % len(cands)] for i in range(o)])


GEOMETRIES = [  # (H, W, C, O, kh, kw, strides, dilations, padding, pads, groups)
    (6, 5, 4, 4, 3, 3, (1, 1), (1, 1), "same", (0, 0, 0, 0), 1),
    (7, 6, 3, 4, 3, 3, (2, 2), (1, 1), "valid", (0, 0, 0, 0), 1),
    (6, 6, 2, 3, 3, 2, (2, 1), (2, 1), "explicit", (1, 0, 2, 1), 1),
    (5, 5, 4, 6, 2, 3, (1, 2), (1, 1), "same", (0, 0, 0, 0), 2),
    (6, 5, 3, 6, 3, 3, (2, 1), (1, 1), "same", (0, 0, 0, 0), 3),   # depthwise, multiplier 2
    (5, 6, 3, 3, 3, 3, (1, 1), (1, 2), "same", (0, 0, 0, 0), 3),   # depthwise, dilated
    (5, 5, 4, 5, 1, 1, (2, 2), (1, 1), "valid", (0, 0, 0, 0), 1),  # 1x1 strided
]
ENCODINGS = [  # (act dtype, input_zp, weight kind, weight_zp, scheme, zp_before_round, act)
    ("int8", -128, "int8", 0, "tflite_double", False, "full"),
    ("int8", 127, "int4", 0, "single_round", False, "relu"),
    ("uint8", 0, "int8", 0, "tosa_double", False, "full"),
    ("uint8", 255, "uint8", 128, "float_rne", True, "relu6"),
    ("int16", 0, "int8", 0, "tflite_double", False, "full"),
    ("int8", 3, "int8", -3, "float32_rne", False, "relu"),
    ("int8", -5, "int4", 0, "tosa_single", False, "relu6"),
    ("uint8", 17, "int8", 0, "float_half_away", False, "full"),
]


def make_case(seed, geo, enc, batch=2):
    h, w, c, o, kh, kw, strides, dil, padding, pads, groups = geo
    adt, izp, wkind, wzp, scheme, zpb, act = enc
    rng = np.random.default_rng(seed)
    lo, hi = ACT[adt]
    x = rng.integers(lo, hi + 1, size=(batch, h, w, c)).astype(np.int64)
    wlo, whi = WEIGHTS[wkind]
    wt = rng.integers(wlo, whi + 1, size=(o, kh, kw, c // groups)).astype(np.int8 if wlo < 0
                                                                         else np.uint8)
    k = kh * kw * (c // groups)
    xa, wa = max(abs(lo - izp), abs(hi - izp)), max(abs(wlo - wzp), abs(whi - wzp))
    bias = rng.integers(-20 * xa, 20 * xa + 1, size=o).astype(np.int32)
    ozp = int(rng.integers(lo, hi + 1)) if adt != "int16" else 0
    amin, amax = {"full": (lo, hi), "relu": (max(lo, ozp), hi),
                  "relu6": (max(lo, ozp), min(hi, ozp + 40))}[act]
    params = {"weight": wt, "bias": bias,
              **requant_params(scheme, channel_reals(rng, o, k, xa, wa))}
    attrs = {"strides": list(strides), "dilations": list(dil), "padding": padding,
             "pads": list(pads), "groups": groups, "input_zp": izp, "weight_zp": wzp,
             "output_zp": ozp, "act_min": amin, "act_max": amax, "scheme": scheme,
             "zp_before_round": zpb}
    return x, params, attrs


@pytest.mark.parametrize("geo", GEOMETRIES)
@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: f"{e[0]}-zp{e[1]}-{e[2]}-{e[4]}")
def test_conv2d_matches_integer_loops(geo, enc):
    x, params, attrs = make_case(zlib.crc32(repr((geo, enc)).encode()), geo, enc)
    y, big = run("int_conv2d", [x], params, attrs)
    acc = ref.conv_acc(x, params["weight"], params["bias"], attrs)
    np.testing.assert_array_equal(y, ref.finish(acc, params, attrs))
    assert big == max(abs(int(a)) for a in acc.ravel())
    assert y.dtype == np.int64


def test_conv2d_cases_hit_ties_and_both_saturation_sides():
    hits = {"lo": 0, "hi": 0, "tie": 0}
    for geo in GEOMETRIES[:3]:
        for enc in ENCODINGS:
            x, params, attrs = make_case(1, geo, enc)
            y, _ = run("int_conv2d", [x], params, attrs)
            hits["lo"] += int(np.sum(y == attrs["act_min"]))
            hits["hi"] += int(np.sum(y == attrs["act_max"]))
            if "real_multiplier" in params:
                acc = ref.conv_acc(x, params["weight"], params["bias"], attrs)
                m = np.asarray(params["real_multiplier"])
                v = np.array([float(a) for a in acc.ravel()]).reshape(acc.shape) * m
                hits["tie"] += int(np.sum(np.abs(v - np.floor(v) - 0.5) == 0))
    assert min(hits.values()) > 0, hits


def test_conv2d_rowfold_and_large_group1_path():
    """A group-1 conv large enough for the float forward's row-fold path (kw·C >= 128)."""
    geo = (10, 9, 64, 3, 3, 3, (1, 1), (1, 1), "same", (0, 0, 0, 0), 1)
    x, params, attrs = make_case(7, geo, ENCODINGS[0], batch=1)
    y, _ = run("int_conv2d", [x], params, attrs)
    acc = ref.conv_acc(x, params["weight"], params["bias"], attrs)
    np.testing.assert_array_equal(y, ref.finish(acc, params, attrs))


def test_conv2d_without_bias_and_scalar_multiplier():
    x, params, attrs = make_case(3, GEOMETRIES[0], ENCODINGS[0])
    del params["bias"]
    params["multiplier"], params["shift"] = params["multiplier"][:1], params["shift"][:1]
    y, _ = run("int_conv2d", [x], params, attrs)
    acc = ref.conv_acc(x, params["weight"], None, attrs)
    np.testing.assert_array_equal(y, ref.finish(acc, params, attrs))


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: f"{e[0]}-{e[4]}")
def test_dense_matches_integer_loops(enc):
    rng = np.random.default_rng(11)
    adt, izp, wkind, wzp, scheme, zpb, act = enc
    lo, hi = ACT[adt]
    for shape in ((3, 7), (2, 3, 5)):
        x = rng.integers(lo, hi + 1, size=shape).astype(np.int64)
        wlo, whi = WEIGHTS[wkind]
        w = rng.integers(wlo, whi + 1, size=(4, shape[-1])).astype(np.int16)
        xa, wa = max(abs(lo - izp), abs(hi - izp)), max(abs(wlo - wzp), abs(whi - wzp))
        params = {"weight": w, "bias": rng.integers(-999, 1000, 4).astype(np.int32),
                  **requant_params(scheme, channel_reals(rng, 4, shape[-1], xa, wa))}
        ozp = 0 if adt == "int16" else int(rng.integers(lo, hi + 1))
        attrs = {"input_zp": izp, "weight_zp": wzp, "output_zp": ozp, "act_min": lo,
                 "act_max": hi, "scheme": scheme, "zp_before_round": zpb}
        y, big = run("int_dense", [x], params, attrs)
        acc = ref.dense_acc(x, w, params["bias"], attrs)
        np.testing.assert_array_equal(y, ref.finish(acc, params, attrs))
        assert big == max(abs(int(a)) for a in acc.ravel())


# ---- exactness bound and int64 fallback ------------------------------------------------------
def test_blas_bound_is_checked_at_2_pow_53():
    assert kops.blas_is_exact(1 << 33, 1 << 10, 1 << 10)
    assert not kops.blas_is_exact((1 << 33) + 1, 1 << 10, 1 << 10)
    # int8 x int8: any realistic reduction qualifies; int16 x int8 needs > 2^29 taps to fail
    assert kops.blas_is_exact(1 << 20, 255, 255)
    assert not kops.blas_is_exact(1 << 30, 65535, 255)


@pytest.mark.parametrize("geo", GEOMETRIES[:5])
def test_conv2d_int64_fallback_taken_when_bound_fails(monkeypatch, geo):
    calls = []
    real = kconv.conv_int64
    monkeypatch.setattr(kconv, "conv_int64", lambda *a: calls.append(1) or real(*a))
    x, params, attrs = make_case(5, geo, ENCODINGS[4])  # int16 activations
    y_blas, _ = run("int_conv2d", [x], params, attrs)
    assert not calls
    monkeypatch.setattr(kops, "FLOAT64_EXACT", 1000)  # no reduction can be proven exact now
    y_int, _ = run("int_conv2d", [x], params, attrs)
    assert calls
    np.testing.assert_array_equal(y_int, y_blas)
    acc = ref.conv_acc(x, params["weight"], params["bias"], attrs)
    np.testing.assert_array_equal(y_int, ref.finish(acc, params, attrs))


def test_dense_int64_fallback_taken_when_bound_fails(monkeypatch):
    calls = []
    real = kconv.dense_int64
    monkeypatch.setattr(kconv, "dense_int64", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(kops, "FLOAT64_EXACT", 0)
    rng = np.random.default_rng(2)
    x = rng.integers(-32768, 32768, size=(3, 9)).astype(np.int64)
    w = rng.integers(-128, 128, size=(5, 9)).astype(np.int8)
    attrs = {"input_zp": -32768, "output_zp": 0, "act_min": -32768, "act_max": 32767,
             "scheme": "float_rne", "accumulator_bits": 64}
    params = {"weight": w, "real_multiplier": np.full(5, 1e-6)}
    y, big = run("int_dense", [x], params, attrs)
    assert calls
    acc = ref.dense_acc(x, w, None, {"input_zp": -32768, "weight_zp": 0})
    np.testing.assert_array_equal(y, ref.finish(acc, params, {**attrs, "zp_before_round": False}))


def test_conv_int64_equals_blas_on_a_larger_case():
    rng = np.random.default_rng(4)
    xd = rng.integers(-255, 256, size=(2, 11, 9, 8)).astype(np.int64)
    wd = rng.integers(-255, 256, size=(6, 3, 3, 4)).astype(np.int64)
    attrs = {"strides": [2, 1], "dilations": [1, 2], "padding": "same", "pads": [0] * 4,
             "groups": 2}
    from refq.layers import REGISTRY
    y = REGISTRY["conv2d"].forward([xd.astype(np.float64)], {"weight": wd.astype(np.float64)},
                                   attrs)
    np.testing.assert_array_equal(kconv.conv_int64(xd, wd, attrs), y.astype(np.int64))


def test_unprovable_int64_reduction_raises():
    with pytest.raises(FixedPointError, match="int64"):
        kops.check_operands(1 << 40, 1 << 16, 1 << 8, "int_dense")


# ---- accumulator overflow policies -----------------------------------------------------------
def _overflow_case():
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, size=(1, 5, 5, 8)).astype(np.int64)
    x[0, 2, 2, :] = 127
    w = np.full((3, 3, 3, 8), 127, np.int8)
    w[1] = -127
    params = {"weight": w, **requant_params("tflite_double", np.full(3, 1 / 512))}
    attrs = {"padding": "same", "input_zp": -128, "output_zp": 0, "act_min": -128,
             "act_max": 127, "scheme": "tflite_double", "accumulator_bits": 16}
    return x, params, attrs


def test_overflow_error_names_value_and_index():
    x, params, attrs = _overflow_case()
    with pytest.raises(FixedPointError, match=r"accumulator.*16-bit.*first is -?\d+ at index"):
        run("int_conv2d", [x], params, {**attrs, "overflow": "error"})


@pytest.mark.parametrize("policy", ["wrap", "saturate"])
def test_overflow_wrap_and_saturate(policy):
    x, params, attrs = _overflow_case()
    attrs = {**attrs, "overflow": policy}
    y, big = run("int_conv2d", [x], params, attrs)
    full = {"strides": [1, 1], "dilations": [1, 1], "groups": 1, "weight_zp": 0, **attrs}
    acc = ref.conv_acc(x, params["weight"], None, full)
    assert big == max(abs(int(a)) for a in acc.ravel()) > 1 << 15
    np.testing.assert_array_equal(y, ref.finish(acc, params, full, bits=16, pol=policy))


def test_default_32_bit_accumulator_accepts_the_same_case():
    x, params, attrs = _overflow_case()
    y, big = run("int_conv2d", [x], params, {**attrs, "accumulator_bits": 32})
    assert big < 1 << 31 and y.shape == (1, 5, 5, 3)


@pytest.mark.parametrize("enc, want", [(ENCODINGS[0], np.float32), (ENCODINGS[4], np.float64)],
                         ids=["int8-float32", "int16-float64"])
def test_conv2d_blas_dtype_follows_the_exactness_bound(monkeypatch, enc, want):
    """int8 operands keep every partial sum within 2^24 (float32 BLAS); int16 activations need
    float64. Either way the result is the exact reference."""
    seen = []
    real = kops.blas_params
    monkeypatch.setattr(kops, "blas_params",
                        lambda wd, bias, dtype=np.float64: seen.append(dtype) or
                        real(wd, bias, dtype))
    x, params, attrs = make_case(7, GEOMETRIES[0], enc)
    y, _ = run("int_conv2d", [x], params, attrs)
    assert seen and set(seen) == {want}
    acc = ref.conv_acc(x, params["weight"], params["bias"], attrs)
    np.testing.assert_array_equal(y, ref.finish(acc, params, attrs))


def test_float32_bound_is_2_pow_24():
    assert kops.blas_is_exact(1 << 10, 1 << 7, 1 << 7, 0, kops.FLOAT32_EXACT)
    assert not kops.blas_is_exact(1 << 10, 1 << 7, 1 << 7, 1, kops.FLOAT32_EXACT)
