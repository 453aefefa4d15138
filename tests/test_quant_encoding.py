"""refq.quant.encoding: grids, (min, max) -> encoding, fake quantization (aimet.md §0.2.2, §0.2.4, §1)."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import QuantError, RefqError
from refq.quant import (AIMET_V1, AIMET_V2, Encoding, EncodingNumerics, adjust_min_max, aimet_offset,
                        dequantize, encoding_from_min_max, encoding_from_range, integer_grid,
                        minimum_scale, quantize, quantize_dequantize)

f32 = np.float32
MS = f32(1.1920929e-07)          # _get_minimum_scale(N) = 2^-23 for 2..16 bits


def test_grids():
    assert integer_grid(8, False) == (0, 255)
    assert integer_grid(8, True) == (-128, 127)
    assert integer_grid(8, True, strict=True) == (-127, 127)
    assert integer_grid(8, True, unsigned=True) == (0, 255)
    assert integer_grid(4, True) == (-8, 7)
    assert integer_grid(2, True) == (-2, 1)
    assert integer_grid(16, False) == (0, 65535)
    assert minimum_scale(255) == MS == f32(2.0 ** -23)
    assert minimum_scale(65535) == MS
    assert minimum_scale(2 ** 32 - 1) == f32(0.01 / (2 ** 32 - 1))


@pytest.mark.parametrize("bad", [0, 1, 17, 31, 33, 8.0, True, "8", None])
def test_bitwidth_validation(bad):
    with pytest.raises(QuantError, match=repr(bad).replace("(", r"\(")):
        encoding_from_min_max(-1, 1, bad, False)
    assert issubclass(QuantError, RefqError)


@pytest.mark.parametrize("lo,hi", [(np.nan, 1.0), (-1.0, np.inf), (-np.inf, 0.0), (-1e39, 1.0)])
def test_non_finite_range_raises(lo, hi):
    with pytest.raises(QuantError):
        encoding_from_min_max(lo, hi, 8, False)


def test_worked_example_activation():
    """§1.7 / §0.2.4: [-0.8, 3.95] asymmetric 8-bit."""
    e = encoding_from_min_max(-0.8, 3.95, 8, False)
    assert e.scale == f32(4.75) / f32(255) and e.scale.dtype == np.float32 and e.scale.shape == ()
    assert e.zero_point == 43 and aimet_offset(e) == -43
    assert (e.qmin, e.qmax, e.symmetric, e.axis) == (0, 255, False, None)
    assert e.min == e.scale * f32(-43) and e.max == e.scale * f32(212)
    # the notes print the exact-arithmetic values; float32 get_min/get_max are within one ulp
    assert abs(float(e.min) + 0.8009804) <= abs(np.spacing(e.min)) and f"{e.min:.7f}" == "-0.8009804"
    assert abs(float(e.max) - 3.9490196) <= np.spacing(e.max)
    # AIMET 1.x getComputedEncodings gives the same grid here (§1.7: "v1 and v2 agree").
    e1 = encoding_from_min_max(-0.8, 3.95, 8, False, numerics=AIMET_V1)
    assert e1.scale == e.scale and e1.zero_point == 43


def test_worked_example_symmetric_weight():
    """§1.3 / §0.2.4: weights in [-1, 0.5]: v2 Δ = 1/128, v1 Δ = 1/127."""
    e = encoding_from_min_max(-1.0, 0.5, 8, True)
    assert e.scale == f32(1 / 128) and e.zero_point == 0 and (e.qmin, e.qmax) == (-128, 127)
    assert e.min == -1.0 and e.max == 0.9921875
    e1 = encoding_from_min_max(-1.0, 0.5, 8, True, numerics=AIMET_V1)
    assert e1.scale == f32(1) / f32(127) and e1.min == f32(-128) * e1.scale
    assert f"{e1.min:.5f}" == "-1.00787" and e1.max == 1.0
    # §1.7 weight absmax 0.5: v1 offset -128, [-0.503937, 0.5]; strict [-0.5, 0.5].
    e1 = encoding_from_min_max(-0.5, 0.5, 8, True, numerics=AIMET_V1)
    assert f"{e1.min:.6f}" == "-0.503937" and e1.max == 0.5
    es = encoding_from_min_max(-0.5, 0.5, 8, True, strict=True, numerics=AIMET_V1)
    assert (es.qmin, es.qmax) == (-127, 127) and es.min == -0.5 and es.max == 0.5


def test_all_zero_tensor():
    """§0.2.2: [0, 255 ms] asymmetric, [-128 ms, 127 ms] symmetric, scale = ms."""
    a = encoding_from_min_max(0.0, 0.0, 8, False)
    assert a.scale == MS and a.zero_point == 0 and a.min == 0 and a.max == f32(255) * MS
    s = encoding_from_min_max(0.0, 0.0, 8, True)
    assert s.scale == MS and s.min == f32(-128) * MS and s.max == f32(127) * MS
    lo, hi = adjust_min_max(0.0, 0.0, 8, True)
    assert lo == f32(-128) * MS and hi == f32(127) * MS
    # AIMET 1.x: the 0.01 minimum range, [0, 0.01] and [-0.01008, 0.01] (§1.3).
    a1 = encoding_from_min_max(0.0, 0.0, 8, False, numerics=AIMET_V1)
    assert a1.scale == f32(0.01) / f32(255) and a1.zero_point == 0
    s1 = encoding_from_min_max(0.0, 0.0, 8, True, numerics=AIMET_V1)
    assert s1.scale == f32(0.01) / f32(127) and f"{s1.min:.5f}" == "-0.01008"


def test_constant_and_one_sided_tensors():
    e = encoding_from_min_max(2.0, 2.0, 8, False)            # zero enters the range: [0, 2]
    assert e.scale == f32(2) / f32(255) and e.zero_point == 0 and e.max == f32(255) * e.scale
    e = encoding_from_min_max(2.0, 2.0, 8, True)              # Δ = max(2/127, 0/128)
    assert e.scale == (f32(127) * (f32(2) / f32(127)) + f32(128) * (f32(2) / f32(127))) / f32(255)
    e = encoding_from_min_max(-4.0, -1.0, 8, False)           # negative only: [-4, 0]
    assert e.scale == f32(4) / f32(255) and e.zero_point == 255 and e.max == 0 and e.min == -4
    e = encoding_from_min_max(-3.0, -3.0, 4, False)
    assert e.scale == f32(0.2) and e.zero_point == 15 and e.max == 0
    e = encoding_from_min_max(-4.0, -1.0, 8, True)            # Δ = 4/128
    assert e.scale == f32(1 / 32) and e.min == -4.0 and e.max == f32(127 / 32)
    # unsigned symmetric (1.x, min >= 0): [0, 255] grid, zero_point 0
    u = encoding_from_min_max(0.0, 5.1, 8, True, unsigned_symmetric=True, numerics=AIMET_V1)
    assert (u.qmin, u.qmax, u.zero_point) == (0, 255, 0) and u.scale == f32(5.1) / f32(255)
    u = encoding_from_min_max(-0.1, 5.1, 8, True, unsigned_symmetric=True, numerics=AIMET_V1)
    assert (u.qmin, u.qmax) == (-128, 127)


def test_bitwidths_2_4_16():
    e = encoding_from_min_max(-1.0, 1.0, 2, True)             # 2-bit: P' = P + 1 (§0.2.2)
    assert e.scale == 0.5 and (e.min, e.max) == (-1.0, 0.5) and (e.qmin, e.qmax) == (-2, 1)
    e = encoding_from_min_max(-1.0, 1.0, 2, True, two_bit_rule=False)   # percentile's adjust_min_max
    assert e.scale == 1.0 and (e.min, e.max) == (-2.0, 1.0)
    e = encoding_from_min_max(-1.0, 1.0, 4, True)              # Δ = max(1/7, 1/8)
    assert e.scale == (f32(7) * (f32(1) / f32(7)) + f32(8) * (f32(1) / f32(7))) / f32(15)
    e = encoding_from_min_max(-1.0, 0.5, 4, True)              # Δ = max(0.5/7, 1/8)
    assert e.scale == f32(1 / 8) and (e.min, e.max) == (-1.0, 0.875)
    e = encoding_from_min_max(-0.8, 3.95, 4, False)
    assert e.scale == f32(4.75) / f32(15) and e.zero_point == 3
    e = encoding_from_min_max(-0.8, 3.95, 16, False)
    assert e.scale == f32(4.75) / f32(65535) and e.zero_point == 11037 and e.qmax == 65535
    e = encoding_from_min_max(-1.0, 0.5, 16, True)
    assert e.scale == f32(2.0 ** -15) and (e.qmin, e.qmax) == (-32768, 32767)


def test_exact_ties():
    """§1.4: x/Δ = -1.5 at 8-bit symmetric: v2 rounds half-even to -2, v1 rounds 126.5 up to -1."""
    e = encoding_from_min_max(-1.0, 0.5, 8, True)             # Δ = 1/128
    x = np.array([-1.5, -0.5, 0.5, 1.5, 2.5], dtype=np.float32) / f32(128)
    assert quantize(x, e).tolist() == [-2, 0, 0, 2, 2]
    v1 = EncodingNumerics(rounding="half_away", clamp="float", fake_quant="divide")
    assert quantize(x, e, v1).tolist() == [-1, 0, 1, 2, 3]
    assert quantize(x, e, AIMET_V1).tolist() == [-1, 0, 1, 2, 3]
    # the asymmetric zero point: -min/s = 42.5 exactly -> 42 (half-even) or 43 (half-away)
    s = f32(0.25)
    assert encoding_from_range(-42.5 * s, 212.5 * s, 8, False).zero_point == 42
    assert encoding_from_range(-42.5 * s, 212.5 * s, 8, False, numerics=AIMET_V1).zero_point == 43


def test_fake_quant_formula_and_clamp_order():
    e = encoding_from_min_max(-0.8, 3.95, 8, False)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=10000) * 3).astype(np.float32)
    s, o = e.scale, f32(aimet_offset(e))
    expected = (np.clip(np.rint(x * (f32(1) / s)) - o, 0, 255) + o) * s
    got = quantize_dequantize(x, e)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    assert np.array_equal(got, dequantize(quantize(x, e), e))
    divide = (np.clip(np.rint(x / s) - o, 0, 255) + o) * s
    assert np.array_equal(quantize_dequantize(x, e, EncodingNumerics(fake_quant="divide")), divide)
    # 1.x clamps in float first: x = max + 0.6Δ rounds down onto the grid instead of saturating later
    big = np.array([e.max + 0.4 * s, 1e30, -1e30, np.inf, -np.inf], dtype=np.float32)
    assert quantize(big, e).tolist() == [255, 255, 0, 255, 0]
    assert quantize(big, e, AIMET_V1).tolist() == [255, 255, 0, 255, 0]
    assert np.isnan(quantize_dequantize(np.float32(np.nan), e))
    with pytest.raises(QuantError, match="NaN"):
        quantize(np.array([np.nan]), e)


def test_per_channel_with_dead_channel():
    w = np.array([[[-1.0, 0.5]], [[0.0, 0.0]], [[0.2, 0.3]]], dtype=np.float32)   # (3, 1, 2)
    lo, hi = w.min(axis=(1, 2)), w.max(axis=(1, 2))
    e = encoding_from_min_max(lo, hi, 8, True, axis=0)
    assert e.is_per_channel and e.scale.shape == (3,) and e.broadcast_shape(3) == (3, 1, 1)
    assert e.scale[0] == f32(1 / 128) and e.scale[1] == MS
    for c in range(3):
        ec = encoding_from_min_max(lo[c], hi[c], 8, True)
        assert ec.scale == e.scale[c]
        assert np.array_equal(quantize_dequantize(w[c], ec), quantize_dequantize(w, e)[c])
    assert np.all(quantize_dequantize(w, e)[1] == 0)
    with pytest.raises(QuantError, match="channels"):
        quantize_dequantize(w.T, e)
    with pytest.raises(QuantError, match="axis"):
        encoding_from_min_max(lo, hi, 8, True)


def test_pass_through_bitwidth_32():
    e = encoding_from_min_max(-1.0, 1.0, 32, False)
    assert e.is_pass_through
    x = np.array([0.1, -7.3, 1e20], dtype=np.float64)
    assert np.array_equal(quantize_dequantize(x, e), x.astype(np.float32))
    with pytest.raises(QuantError, match="pass-through"):
        quantize(x, e)


def test_encoding_json_round_trip_and_validation():
    for e in (encoding_from_min_max(-0.8, 3.95, 8, False),
              encoding_from_min_max([-1.0, 0.0, -0.3], [0.7, 0.0, 0.1], 4, True, axis=0)):
        text = json.dumps(e.to_json())
        back = Encoding.from_json(json.loads(text))
        assert back == e and Encoding.from_json(text) == e
        assert back.scale.dtype == np.float32 and back.zero_point.dtype == np.int64
    e = encoding_from_min_max(-0.8, 3.95, 8, False)
    with pytest.raises(ValueError):
        e.scale[...] = 1.0
    for bad in (dict(qmin=-128, qmax=255), dict(zero_point=300), dict(scale=0.0),
                dict(scale=[0.1, 0.2], zero_point=[0, 0]), dict(symmetric=True)):
        kwargs = dict(scale=0.1, zero_point=3, bitwidth=8, qmin=0, qmax=255, symmetric=False)
        kwargs.update(bad)
        with pytest.raises(QuantError):
            Encoding(**kwargs)
    with pytest.raises(QuantError):
        Encoding.from_json({"scale": 1.0})
    with pytest.raises(QuantError):
        EncodingNumerics(rounding="half_up")


# ------------------------------------------------------------------------------------ properties

def _cases():
    bits = st.sampled_from([2, 3, 4, 8, 16])
    mag = st.one_of(st.just(0.0), st.floats(2.0 ** -20, 2.0 ** 14, width=32))
    return st.tuples(bits, st.booleans(), mag, mag, st.sampled_from([AIMET_V2, AIMET_V1]),
                     st.integers(0, 2 ** 31))


def _encoding_and_x(case):
    bits, symmetric, a, b, numerics, seed = case
    e = encoding_from_min_max(-a, b, bits, symmetric, numerics=numerics)
    rng = np.random.default_rng(seed)
    lo, hi = float(e.scale) * (e.qmin - int(e.zero_point)), float(e.scale) * (e.qmax - int(e.zero_point))
    x = rng.uniform(lo * 1.3, hi * 1.3, size=64).astype(np.float32)
    return e, x, numerics, lo, hi


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_quantize_dequantize_is_idempotent(case):
    e, x, numerics, _, _ = _encoding_and_x(case)
    once = quantize_dequantize(x, e, numerics)
    assert np.array_equal(quantize_dequantize(once, e, numerics), once)


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_error_is_at_most_half_a_step_inside_the_range(case):
    """|x − x̂| ≤ s/2 + slack for x in [min, max]. Slack: fl(1/s) and fl(x·inv) (or fl(x/s)) add
    ≤ 2.0001u relative error to x/s, and fl(k·s) ≤ u·|x̂|, u = 2^-24: slack = 2.0001u|x| + u|x̂|."""
    e, x, numerics, lo, hi = _encoding_and_x(case)
    x = x[(x >= lo) & (x <= hi)].astype(np.float64)
    xh = quantize_dequantize(x, e, numerics).astype(np.float64)
    u = 2.0 ** -24
    assert np.all(np.abs(x - xh) <= float(e.scale) / 2 + 2.0001 * u * np.abs(x) + u * np.abs(xh))


@settings(max_examples=100, deadline=None)
@given(_cases())
def test_zero_is_exact(case):
    e, _, numerics, _, _ = _encoding_and_x(case)
    z = quantize_dequantize(np.zeros(3, dtype=np.float32), e, numerics)
    assert np.all(z == 0) and quantize(np.float32(0), e, numerics) == e.zero_point


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.sampled_from([2, 4, 8, 16]), st.booleans(), st.integers(0, 2 ** 31))
def test_per_channel_equals_per_tensor_channel_by_channel(channels, bits, symmetric, seed):
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(channels, 3, 5)) * rng.uniform(0, 3, size=(channels, 1, 1))).astype(np.float32)
    w[rng.uniform(size=channels) < 0.2] = 0
    e = encoding_from_min_max(w.min(axis=(1, 2)), w.max(axis=(1, 2)), bits, symmetric, axis=0)
    whole = quantize_dequantize(w, e)
    codes = quantize(w, e)
    for c in range(channels):
        ec = encoding_from_min_max(w[c].min(), w[c].max(), bits, symmetric)
        assert ec.scale == e.scale[c] and ec.zero_point == e.zero_point[c]
        assert np.array_equal(quantize_dequantize(w[c], ec), whole[c])
        assert np.array_equal(quantize(w[c], ec), codes[c])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fake_quant", ["reciprocal_float32", "divide"])
@pytest.mark.parametrize("bounds", [(-0.8, 3.95, False), (-1.0, 1.0, True), (0.0, 6.0, False),
                                    (-6.0, -0.5, False), (2.0, 9.0, False)])
@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_five_pass_fake_quant_equals_the_definition_bit_for_bit(bounds, fake_quant, dtype):
    """quantize_dequantize's five-pass form against (clip(rint(x/s) + zp, qmin, qmax) − zp)·s,
    written out: ties k ± 0.5 codes, ±0, signed tiny values, the clamp bounds, huge values, ±inf
    and NaN, per tensor and per channel, in place or not."""
    from refq.quant.fakequant import fake_quantize_inplace

    lo, hi, symmetric = bounds
    numerics = EncodingNumerics(dtype=np.dtype(dtype), fake_quant=fake_quant)
    e = encoding_from_min_max(lo, hi, 8, symmetric, numerics=numerics)
    s = np.float64(e.scale)
    k = np.arange(-300, 300, dtype=np.float64)
    grid = np.concatenate([(k + 0.5) * s, (k - 0.5) * s, k * s, np.nextafter(k * s, np.inf),
                           [0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, 3e38, -3e38, np.inf, -np.inf,
                            np.nan, e.min, e.max]]).astype(dtype)
    dt = np.dtype(dtype)
    zp = dt.type(e.zero_point)
    factor = (np.float32(1) / np.float32(e.scale)).astype(dt) if fake_quant != "divide" else None
    v = grid * factor if factor is not None else grid / dt.type(e.scale)
    want = ((np.clip(np.rint(v) + zp, dt.type(e.qmin), dt.type(e.qmax)) - zp)
            * dt.type(e.scale)).astype(dt)
    got = quantize_dequantize(grid, e, numerics)
    assert got.tobytes() == want.tobytes()
    inplace = grid.copy()
    fake_quantize_inplace(inplace, e, numerics)
    assert inplace.tobytes() == want.tobytes()
    # per channel: two channels, the second with this encoding shifted by 3 codes
    pc = encoding_from_range(np.array([lo, lo + 3 * e.scale], np.float32),
                             np.array([hi, hi + 3 * e.scale], np.float32), 8, symmetric, axis=1,
                             numerics=numerics)
    x2 = np.stack([grid, grid], axis=1)
    rows = [quantize_dequantize(x2[:, c], encoding_from_range(pc.min[c], pc.max[c], 8, symmetric,
                                                              numerics=numerics), numerics)
            for c in range(2)]
    assert quantize_dequantize(x2, pc, numerics).tobytes() == np.stack(rows, axis=1).tobytes()
