"""refq.quant.ste: the straight-through estimator of a frozen encoding and AIMET 2.42 range
learning (aimet.md §0.2.4, §1.5, §12).

Edge grids use power-of-two scales, so codes, outputs and most gradients are exact in float32 and
are compared with ==. Where an expected gradient is not dyadic (a division by N' = 15 or 255) it is
written as its exact rational value, computed in float64, and compared with RTOL = 2^-22 (two
float32 ulps: the float32 result is at most two roundings away). The finite-difference tests state
their own tolerance.
"""
import numpy as np
import pytest

from refq.errors import QuantError
from refq.quant import (AIMET_V1, AIMET_V2, Encoding, EncodingNumerics, encoding_from_min_max,
                        encoding_from_range, minimum_scale, quantize_dequantize)
from refq.quant.ste import fake_quant_ste, learned_range_forward, learned_range_vjp

f32 = np.float32
MS = 2.0 ** -23                      # minimum_scale(N') for 2..16 bits
RTOL = 2.0 ** -22
DIVIDE = EncodingNumerics(fake_quant="divide")
NUMERICS = pytest.mark.parametrize("numerics", [AIMET_V2, DIVIDE], ids=["reciprocal", "divide"])


def a32(values):
    return np.array(values, dtype=np.float32)


# ------------------------------------------------------------------ frozen encoding: fake_quant_ste

@NUMERICS
def test_ste_asymmetric_8bit_range_ends_and_ties(numerics):
    """s = 1/4, zero point 8: range [-2, 61.75]; 1/s = 4 is exact, so both products agree."""
    enc = Encoding(0.25, 8, 8, 0, 255, False)
    x = a32([-2.375, -2.25, -2.125, -2.0, 0.0, 61.625, 61.75, 61.875, 62.125])
    # x/s = -9.5 -9 -8.5 -8 0 246.5 247 247.5 248.5; round_he + 8 = -2 -1 0 0 8 254 255 256 256
    gy = a32([1, 2, 3, 4, 5, 6, 7, 8, 9])
    got = fake_quant_ste(x, enc, gy, numerics)
    assert got.dtype == np.float32
    assert got.tolist() == [0, 0, 3, 4, 5, 6, 7, 0, 0]
    # the forward clamps the same elements: -2.125 and 61.875 lie half a step beyond the ends
    assert quantize_dequantize(x, enc, numerics).tolist() == [-2, -2, -2, -2, 0, 61.5, 61.75, 61.75,
                                                              61.75]


@NUMERICS
def test_ste_symmetric_4bit(numerics):
    """s = 1/2 on [-8, 7]: range [-4, 3.5]."""
    enc = Encoding(0.5, 0, 4, -8, 7, True)
    x = a32([-4.75, -4.5, -4.25, -4.0, 3.25, 3.5, 3.75, 4.25])
    # x/s = -9.5 -9 -8.5 -8 6.5 7 7.5 8.5 -> codes -10 -9 -8 -8 6 7 8 8
    got = fake_quant_ste(x, enc, a32([1, 2, 3, 4, 5, 6, 7, 8]), numerics)
    assert got.tolist() == [0, 0, 3, 4, 5, 6, 0, 0]


@pytest.mark.parametrize("layout", ["axis0", "axis-1", "axis1-of-3d"])
def test_ste_per_channel(layout):
    """Two channels, s = (1/4, 1/2), zero points (8, 0): ranges [-2, 61.75] and [0, 127.5]."""
    rows = a32([[-2.375, -2.125, 61.625, 61.875, 0.0],      # codes -2 0 254 256 8
                [-0.25, -0.75, 127.5, 127.75, 127.25]])     # codes 0 (-0.5 -> -0) -2 255 256 254
    gy = a32([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    expected = np.array([[0, 2, 3, 0, 5], [6, 0, 8, 0, 10]], dtype=np.float32)
    if layout == "axis0":
        axis, x, g, want = 0, rows, gy, expected
    elif layout == "axis-1":
        axis, x, g, want = -1, rows.T, gy.T, expected.T
    else:                                 # [5, 2, 1]: channels on the middle axis
        axis, x, g, want = 1, rows.T[:, :, None], gy.T[:, :, None], expected.T[:, :, None]
    enc = Encoding(a32([0.25, 0.5]), [8, 0], 8, 0, 255, False, axis=axis)
    got = fake_quant_ste(x, enc, g)
    assert got.shape == x.shape and np.array_equal(got, want)


def test_ste_follows_the_forward_product():
    """Within an ulp of a tie the reciprocal and the division round to different codes; the mask
    follows the forward's product (torch.fake_quantize's x·fl(1/s), QuantDequantFunc's x/s)."""
    s = f32(0.3)
    enc = Encoding(s, 0, 8, -128, 127, True)
    x = a32([38.25])
    assert (x / s)[0] == f32(127.49999237060547) and (x * (f32(1) / s))[0] == 127.5
    assert fake_quant_ste(x, enc, a32([1.0])).tolist() == [0.0]          # code 128: outside
    assert fake_quant_ste(x, enc, a32([1.0]), DIVIDE).tolist() == [1.0]  # code 127: inside
    # the forward clamps 128 to 127 and so gives the same x̂ either way; only the gradient differs
    assert quantize_dequantize(x, enc)[0] == quantize_dequantize(x, enc, DIVIDE)[0] == f32(127) * s
    s = f32(0.013)                       # the other way round: the division lands on the tie
    enc = Encoding(s, 0, 8, -128, 127, True)
    x = a32([1.6575])
    assert (x / s)[0] == 127.5 and (x * (f32(1) / s))[0] == f32(127.49999237060547)
    assert fake_quant_ste(x, enc, a32([1.0])).tolist() == [1.0]
    assert fake_quant_ste(x, enc, a32([1.0]), DIVIDE).tolist() == [0.0]


def test_ste_special_values_pass_through_and_errors():
    enc = Encoding(0.25, 8, 8, 0, 255, False)
    assert fake_quant_ste(a32([np.nan, np.inf, -np.inf, 1.0]), enc,
                          a32([1, 2, 3, 4])).tolist() == [0, 0, 0, 4]
    passthrough = Encoding(1.0, 0, 32, 0, 2 ** 32 - 1, False)
    assert fake_quant_ste(a32([1e30, -7.0]), passthrough, a32([2, 3])).tolist() == [2, 3]
    with pytest.raises(QuantError, match="same shape"):
        fake_quant_ste(a32([1, 2]), enc, a32([1]))
    with pytest.raises(QuantError, match="clamp='integer'"):
        fake_quant_ste(a32([1]), enc, a32([1]), AIMET_V1)
    per_channel = Encoding(a32([0.25, 0.5]), [8, 0], 8, 0, 255, False, axis=0)
    with pytest.raises(QuantError, match="channels"):
        fake_quant_ste(np.zeros((3, 4), np.float32), per_channel, np.zeros((3, 4), np.float32))


# ------------------------------------------------------------------ range learning: edge grids

def test_learned_asymmetric_8bit_per_tensor():
    """min -2, max 61.75: r = 63.75/255 = 1/4, u = -8, o = -8 (zero point 8)."""
    x = a32([-2.375, -2.25, -2.125, -2.0, 0.3125, 61.625, 61.75, 61.875, 62.0])
    y, ctx = learned_range_forward(x, -2.0, 61.75, 8, False)
    assert y.dtype == np.float32 and ctx.scale == 0.25 and ctx.offset == -8
    # x/s = -9.5 -9 -8.5 -8 1.25 246.5 247 247.5 248; x_int = round_he(x/s) + 8
    assert ctx.mask.tolist() == [False, False, True, True, True, True, True, False, False]
    assert y.tolist() == [-2, -2, -2, -2, 0.25, 61.5, 61.75, 61.75, 61.75]
    gy = a32([1, 2, 3, 4, 5, 6, 7, 8, 9])
    gx, gmin, gmax = learned_range_vjp(ctx, gy)
    assert gx.tolist() == [0, 0, 3, 4, 5, 6, 7, 0, 0]
    # scale terms, clamp(round(v), -8, 247) outside, round(v) - v inside:
    #   1·-8 + 2·-8 + 3·0.5 + 4·0 + 5·-0.25 + 6·-0.5 + 7·0 + 8·247 + 9·247 = 4172.25
    # offset: G_o = s·(1 + 2 + 8 + 9) = 5, passes (-255 <= -8 <= 0); G_s += -5·(u/s) = +160
    g_s = 4172.25 + 160.0
    assert gmin.shape == gmax.shape == () and gmin.dtype == gmax.dtype == np.float32
    np.testing.assert_allclose(gmax, g_s / 255, rtol=RTOL)
    np.testing.assert_allclose(gmin, 5 / 0.25 - g_s / 255, rtol=RTOL)


def test_learned_symmetric_4bit_per_tensor():
    """min -4, max 3.5 on [-8, 7]: r = 7.5/15 = 1/2, o = 0."""
    x = a32([-4.75, -4.5, -4.25, -4.0, 0.75, 3.25, 3.5, 3.75, 4.25])
    y, ctx = learned_range_forward(x, -4.0, 3.5, 4, True)
    assert (ctx.qmin, ctx.qmax) == (-8, 7) and ctx.scale == 0.5 and ctx.offset == 0
    # x/s = -9.5 -9 -8.5 -8 1.5 6.5 7 7.5 8.5 -> round_he -10 -9 -8 -8 2 6 7 8 8
    assert ctx.mask.tolist() == [False, False, True, True, True, True, True, False, False]
    assert y.tolist() == [-4, -4, -4, -4, 1.0, 3.0, 3.5, 3.5, 3.5]
    gx, gmin, gmax = learned_range_vjp(ctx, a32([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    assert gx.tolist() == [0, 0, 3, 4, 5, 6, 7, 0, 0]
    # 1·-8 + 2·-8 + 3·0.5 + 4·0 + 5·0.5 + 6·-0.5 + 7·0 + 8·7 + 9·7 = 96; no offset path
    np.testing.assert_allclose(gmax, 96 / 15, rtol=RTOL)
    np.testing.assert_allclose(gmin, -96 / 15, rtol=RTOL)


EXACT_GRIDS = {
    # name: (bits, symmetric, min, max, x, x̂, ∂L/∂x, ∂L/∂min, ∂L/∂max) with gy = (1, 2, 4, 8, 16)
    # 4-bit asymmetric: r = 3.75/15 = 1/4, u = -4 = o; x/s = -4.5 -5.5 11 11.5 10.5, round_he + 4 =
    #   0 -2 15 16 14. Scale terms 1·0.5 + 2·-4 + 4·0 + 8·11 + 16·-0.5 = 72.5; G_o = (2 + 8)/4 = 2.5
    #   passes, G_s += -2.5·(-16) = 40: ∂max = 112.5/15 = 7.5, ∂min = 2.5·4 - 7.5 = 2.5.
    "4-bit asymmetric": (4, False, -1.0, 2.75, [-1.125, -1.375, 2.75, 2.875, 2.625],
                         [-1, -1, 2.75, 2.75, 2.5], [1, 0, 4, 0, 16], 2.5, 7.5),
    # 8-bit symmetric: r = 63.75/255 = 1/4 on [-128, 127]; x/s = -128.5 -129.5 127.5 126.5 0.25,
    #   round_he -128 -130 128 126 0. Scale terms 1·0.5 + 2·-128 + 4·127 + 8·-0.5 + 16·-0.25
    #   = 244.5.
    "8-bit symmetric": (8, True, -32.0, 31.75, [-32.125, -32.375, 31.875, 31.625, 0.0625],
                        [-32, -32, 31.75, 31.5, 0], [1, 0, 0, 8, 16], -244.5 / 255, 244.5 / 255),
}


@pytest.mark.parametrize("case", list(EXACT_GRIDS))
def test_learned_more_grids(case):
    bits, symmetric, lo, hi, x, xhat, gx_want, gmin_want, gmax_want = EXACT_GRIDS[case]
    y, ctx = learned_range_forward(a32(x), lo, hi, bits, symmetric)
    assert ctx.scale == 0.25 and y.tolist() == xhat
    gx, gmin, gmax = learned_range_vjp(ctx, a32([1, 2, 4, 8, 16]))
    assert gx.tolist() == gx_want
    np.testing.assert_allclose([gmin, gmax], [gmin_want, gmax_want], rtol=RTOL)


# x = (-1000, 0, 1000), gy = (1, 2, 4), s = 1/4 (r = 63.75/255): the two ends saturate, x = 0 is
# inside with round(v) - v = 0. Scale terms 1·(qmin + o) + 4·(qmax + o); G_o = s·(1 + 4) = 1.25.
OFFSET_CASES = {
    # name: (min, max, o, x̂, ∂L/∂min, ∂L/∂max)
    "min>0, o clamped to 0": (1.0, 64.75, 0, [0, 0, 63.75], -4.0, 4.0),
    "o clamped to -qmax": (-100.0, -36.25, -255, [-63.75, 0, 0], 1.0, -1.0),
    "o = -qmax, inclusive": (-63.75, 0.0, -255, [-63.75, 0, 0], 1.0, 4.0),
    "o = 0 = -qmin, inclusive": (0.0, 63.75, 0, [0, 0, 63.75], 1.0, 4.0),
    "max < min: |r| flips": (61.75, -2.0, 0, [0, 0, 63.75], 4.0, -4.0),
}
# clamped: G_s = 1·0 + 4·255 = 1020 -> ∂max = 1020/255 = 4, ∂min = -4, or, with o = -255,
#   G_s = 1·-255 + 4·0 -> ∓1. Inclusive bounds: G_u = 1.25, ∂min gets G_u/s = 5 and
#   G_s += -1.25·u/s (u = -255: +1275; u = 0: 0) = 1020 in both, so ∂max = 4, ∂min = 5 - 4 = 1.
#   Flipped: u = 247 > 0, o clamped; sign(r) = -1 turns ∂max = 4 into -4 and ∂min into +4.


@pytest.mark.parametrize("case", list(OFFSET_CASES))
def test_learned_offset_clamp_and_sign(case):
    lo, hi, o, xhat, gmin_want, gmax_want = OFFSET_CASES[case]
    y, ctx = learned_range_forward(a32([-1000, 0, 1000]), lo, hi, 8, False)
    assert ctx.scale == 0.25 and ctx.offset == o and y.tolist() == xhat
    gx, gmin, gmax = learned_range_vjp(ctx, a32([1, 2, 4]))
    assert gx.tolist() == [0, 2, 0]
    assert (float(gmin), float(gmax)) == (gmin_want, gmax_want)


def test_learned_offset_tie_rounds_half_even():
    """u = min/s = -42.5 exactly: round_he gives o = -42 (zero point 42), as encoding_from_range."""
    y, ctx = learned_range_forward(a32([0.0]), -10.625, 53.125, 8, False)
    assert ctx.min_over_s == -42.5 and ctx.offset == -42 and ctx.encoding.zero_point == 42
    assert ctx.encoding == encoding_from_range(-10.625, 53.125, 8, False)


def test_learned_zero_width_and_minimum_scale_floor():
    x, gy = a32([-1.0, 0.0, 1.0]), a32([1, 2, 4])
    # min = max = 0: r = 0, s = ms; the floor (and sign(0) = 0) stops the scale path, but u = 0,
    # o = 0 lies within [-255, 0], so ∂min = G_o/s = (ms·(1 + 4))/ms = 5.
    y, ctx = learned_range_forward(x, 0.0, 0.0, 8, False)
    assert ctx.raw_scale == 0 and ctx.scale == f32(MS) == minimum_scale(255)
    assert y.tolist() == [0, 0, 255 * MS]
    _, gmin, gmax = learned_range_vjp(ctx, gy)
    assert (float(gmin), float(gmax)) == (5.0, 0.0)
    # min = max = 0.5: u = 0.5/ms = 2^22, o clamped to 0: nothing reaches min or max
    _, ctx = learned_range_forward(x, 0.5, 0.5, 8, False)
    assert ctx.offset_raw == 2.0 ** 22 and ctx.offset == 0
    _, gmin, gmax = learned_range_vjp(ctx, gy)
    assert (float(gmin), float(gmax)) == (0.0, 0.0)
    # symmetric zero width: o = 0 is a constant, the floor stops the rest
    y, ctx = learned_range_forward(x, 0.0, 0.0, 4, True)
    assert y.tolist() == [-8 * MS, 0, 7 * MS]
    _, gmin, gmax = learned_range_vjp(ctx, gy)
    assert (float(gmin), float(gmax)) == (0.0, 0.0)


def test_learned_floor_boundary_is_inclusive():
    """r = ms exactly passes the gradient (torch clamp_min); r just below it does not, with the same
    forward (s = ms in both)."""
    x, gy = a32([1.0]), a32([1.0])                  # saturates at the top: scale term 255, G_o = s
    y_at, at = learned_range_forward(x, 0.0, 255 * MS, 8, False)
    y_below, below = learned_range_forward(x, 0.0, 254 * MS, 8, False)
    assert at.raw_scale == f32(MS) and below.raw_scale < f32(MS) and below.scale == at.scale
    assert np.array_equal(y_at, y_below) and y_at[0] == f32(255 * MS)
    _, gmin, gmax = learned_range_vjp(at, gy)
    assert (float(gmin), float(gmax)) == (0.0, 1.0)     # ∂max = 255/255; ∂min = s/s - 1
    _, gmin, gmax = learned_range_vjp(below, gy)
    assert (float(gmin), float(gmax)) == (1.0, 0.0)     # only the offset path: G_o/s


def test_learned_symmetric_flipped_range():
    x = a32([-4.75, -4.5, -4.25, -4.0, 0.75, 3.25, 3.5, 3.75, 4.25])
    y, ctx = learned_range_forward(x, 3.5, -4.0, 4, True)      # r = -1/2, s = 1/2
    assert ctx.raw_scale == -0.5 and ctx.scale == 0.5
    _, gmin, gmax = learned_range_vjp(ctx, a32([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    np.testing.assert_allclose([gmin, gmax], [96 / 15, -96 / 15], rtol=RTOL)


@pytest.mark.parametrize("layout", ["axis0", "axis-1", "axis-1-of-3d"])
def test_learned_per_channel_asymmetric_8bit(layout):
    """The five OFFSET_CASES as five channels: each channel gives its per-tensor result."""
    cases = list(OFFSET_CASES.values())
    lo, hi = a32([c[0] for c in cases]), a32([c[1] for c in cases])
    rows, grow = np.tile(a32([-1000, 0, 1000]), (5, 1)), np.tile(a32([1, 2, 4]), (5, 1))
    xhat = np.array([c[3] for c in cases], dtype=np.float32)
    if layout == "axis0":
        axis, x, gy, want, k = 0, rows, grow, xhat, 1
    elif layout == "axis-1":
        axis, x, gy, want, k = -1, rows.T, grow.T, xhat.T, 1
    else:                                # [2, 3, 5]: the batch of two doubles every sum
        axis, x, gy, want, k = -1, np.stack([rows.T] * 2), np.stack([grow.T] * 2), \
            np.stack([xhat.T] * 2), 2
    y, ctx = learned_range_forward(x, lo, hi, 8, False, axis=axis)
    assert ctx.axis == x.ndim - 1 if axis == -1 else ctx.axis == 0
    assert ctx.offset.tolist() == [c[2] for c in cases] and np.array_equal(y, want)
    gx, gmin, gmax = learned_range_vjp(ctx, gy)
    assert gx.shape == x.shape and gmin.shape == gmax.shape == (5,)
    assert gmin.tolist() == [k * c[4] for c in cases]
    assert gmax.tolist() == [k * c[5] for c in cases]


@pytest.mark.parametrize("axis", [0, -1])
def test_learned_per_channel_symmetric_4bit(axis):
    x1 = a32([-4.75, -4.5, -4.25, -4.0, 0.75, 3.25, 3.5, 3.75, 4.25])
    g1 = a32([1, 2, 3, 4, 5, 6, 7, 8, 9])
    x, gy = np.stack([x1, x1], axis=axis), np.stack([g1, g1], axis=axis)
    y, ctx = learned_range_forward(x, a32([-4.0, 3.5]), a32([3.5, -4.0]), 4, True, axis=axis)
    gx, gmin, gmax = learned_range_vjp(ctx, gy)
    assert np.array_equal(gx, np.stack([g1 * ctx.mask.take(0, axis)] * 2, axis=axis))
    np.testing.assert_allclose(gmin, [-96 / 15, 96 / 15], rtol=RTOL)
    np.testing.assert_allclose(gmax, [96 / 15, -96 / 15], rtol=RTOL)


# ------------------------------------------------------------------ the forward against refq's own

def _with_ties(rng, lo, hi, bits, symmetric, axis, shape):
    """A float32 tensor with normal values over the range and a third of exact ties (k + 1/2)·s, k a
    code within two steps of the grid."""
    _, ctx = learned_range_forward(np.zeros(shape, np.float32), lo, hi, bits, symmetric, axis=axis)
    s = np.broadcast_to(ctx.scale.reshape(ctx.param_shape()), shape)
    o = np.broadcast_to(ctx.offset.reshape(ctx.param_shape()), shape)
    span = np.abs(np.broadcast_to((a32(hi) - a32(lo)).reshape(ctx.param_shape()), shape))
    x = (rng.normal(size=shape) * span).astype(np.float32)
    k = rng.integers(ctx.qmin - 2, ctx.qmax + 2, size=shape) + o
    ties = ((k + 0.5) * s).astype(np.float32)
    pick = rng.random(shape) < 1 / 3
    return np.where(pick, ties, x)


RANGES = [((-0.8, 3.95), None), ((-1.0, 0.5), None), ((0.3, 2.0), None), ((-3.0, -1.0), None),
          ((a32([-0.8, -1.0, 0.0, -2.5]), a32([3.95, 0.5, 0.0, -0.5])), 0),
          ((a32([-0.8, -1.0, 0.0, -2.5]), a32([3.95, 0.5, 0.0, -0.5])), -1)]


@pytest.mark.parametrize("bits,symmetric", [(8, False), (8, True), (4, False), (4, True)])
@pytest.mark.parametrize("rng_index", range(len(RANGES)))
def test_forward_is_quantize_dequantize_with_division(bits, symmetric, rng_index):
    """x̂ = quantize_dequantize(x, ctx.encoding, divide) bit for bit (sign of zero included), and
    ctx.encoding is refq's set_range of the same (min, max). Against the default reciprocal product
    the two differ exactly where round_he(x/s) and round_he(x·fl(1/s)) disagree inside the range."""
    (lo, hi), axis = RANGES[rng_index]
    shape = (4, 6, 5) if axis == 0 else (5, 6, 4) if axis == -1 else (7, 9)
    x = _with_ties(np.random.default_rng(rng_index), lo, hi, bits, symmetric, axis, shape)
    y, ctx = learned_range_forward(x, lo, hi, bits, symmetric, axis=axis)
    enc = ctx.encoding
    assert enc == encoding_from_range(lo, hi, bits, symmetric, axis=ctx.axis)
    ref = quantize_dequantize(x, enc, DIVIDE)
    assert np.array_equal(y, ref) and np.array_equal(np.signbit(y), np.signbit(ref))
    fast = quantize_dequantize(x, enc)
    s = ctx.scale.reshape(ctx.param_shape())
    codes_differ = np.rint(x / s) != np.rint(x * (f32(1) / s))
    assert np.all(codes_differ[y != fast])          # every difference is a reciprocal/division one
    assert np.array_equal(y[~codes_differ], fast[~codes_differ])


def test_forward_division_differs_from_reciprocal_at_a_tie():
    """[-0.8, 3.95] (§1.7, zero point 43): x/s = 1.5 exactly, x·fl(1/s) = 1.4999999: codes 45
    and 44."""
    x = a32([0.027941176667809486])
    y, ctx = learned_range_forward(x, -0.8, 3.95, 8, False)
    s = ctx.scale
    assert ctx.encoding == encoding_from_min_max(-0.8, 3.95, 8, False)
    assert (x / s)[0] == 1.5 and (x * (f32(1) / s))[0] == f32(1.4999998807907104)
    assert y[0] == f32(2) * s and quantize_dequantize(x, ctx.encoding)[0] == f32(1) * s
    assert quantize_dequantize(x, ctx.encoding, DIVIDE)[0] == y[0]


# ------------------------------------------------------------------ finite differences

def _codes_away_from_edges(rng, ctx, shape, margin=0.1):
    """x = (k + f)·s with round(v) = k, |f| <= 1/2 - margin (no code near a rounding boundary) and
    x_int = k - o never qmin or qmax (no element on a clamp kink); a third saturate beyond them."""
    n = ctx.qmax - ctx.qmin
    s = np.broadcast_to(ctx.scale.reshape(ctx.param_shape()), shape).astype(np.float64)
    o = np.broadcast_to(ctx.offset.reshape(ctx.param_shape()), shape).astype(np.float64)
    code = rng.integers(1, n, size=shape) + ctx.qmin                      # inside, off the ends
    far = rng.integers(1, 4, size=shape)
    code = np.where(rng.random(shape) < 1 / 6, ctx.qmin - far, code)
    code = np.where(rng.random(shape) < 1 / 6, ctx.qmax + far, code)
    frac = rng.uniform(-0.5 + margin, 0.5 - margin, size=shape)
    return ((code + o + frac) * s).astype(np.float32)


def _surrogate(x, gy, lo, hi, qmin, qmax, symmetric, pshape, c_v, c_u, live=False):
    """Σ gy·x̂ in float64 with round(z) replaced by z + c (c frozen at the base point), or, with
    live=True, the true Σ gy·x̂ (rounding recomputed). The floor is inactive (the caller checks)."""
    s = np.abs((hi - lo) / (qmax - qmin))
    rnd = (lambda z, c: np.rint(z)) if live else (lambda z, c: z + c)
    o = np.zeros_like(s) if symmetric else np.clip(rnd(lo / s, c_u) - qmin, -qmax, -qmin)
    sb, ob = s.reshape(pshape), o.reshape(pshape)
    return np.sum(gy * (np.clip(rnd(x / sb, c_v) - ob, qmin, qmax) + ob) * sb)


def _central_differences(loss, lo, hi, h):
    """(∂loss/∂min, ∂loss/∂max) per element of min/max: central differences, step h·|max − min|."""
    out = []
    for which in (0, 1):
        grads = np.zeros(lo.shape)
        for idx in np.ndindex(lo.shape):
            step = h * abs(hi[idx] - lo[idx])
            pair = []
            for sign in (1, -1):
                p = [lo.copy(), hi.copy()]
                p[which][idx] += sign * step
                pair.append(loss(*p))
            grads[idx] = (pair[0] - pair[1]) / (2 * step)
        out.append(grads)
    return out


def _fd_setup(bits, symmetric, axis, seed):
    lo = np.array([-1.3, -0.45, -2.2]) if axis is not None else np.array(-1.3)
    hi = np.array([2.9, 0.7, 0.35]) if axis is not None else np.array(2.9)
    shape = (3, 8, 7) if axis == 0 else (7, 8, 3) if axis == -1 else (9, 11)
    rng = np.random.default_rng(seed)
    _, ctx = learned_range_forward(np.zeros(shape, np.float32), lo, hi, bits, symmetric, axis=axis)
    x = _codes_away_from_edges(rng, ctx, shape)
    gy = rng.normal(size=shape).astype(np.float32)
    _, ctx = learned_range_forward(x, lo, hi, bits, symmetric, axis=axis)
    lo64, hi64 = lo.astype(np.float32).astype(np.float64), hi.astype(np.float32).astype(np.float64)
    s64 = np.abs((hi64 - lo64) / (ctx.qmax - ctx.qmin))
    pshape = ctx.param_shape()
    v64 = x / s64.reshape(pshape)
    u64 = lo64 / s64
    # no code near a rounding boundary, so float64 and AIMET's float32 round alike
    assert np.all(np.abs(v64 - np.rint(v64)) < 0.45)
    assert np.array_equal(np.rint(v64), np.rint(ctx.x_over_s))
    if not symmetric:
        assert np.all(np.abs(u64 - np.rint(u64)) < 0.45)
        assert np.all((ctx.offset_raw > -ctx.qmax) & (ctx.offset_raw < -ctx.qmin))
    assert np.all(np.abs(ctx.raw_scale) > minimum_scale(ctx.qmax - ctx.qmin))
    assert ctx.mask.any() and not ctx.mask.all()
    return x, gy, lo64, hi64, ctx, pshape, np.rint(v64) - v64, np.rint(u64) - u64


@pytest.mark.parametrize("axis", [None, 0, -1])
@pytest.mark.parametrize("bits,symmetric", [(8, False), (8, True), (4, False), (4, True)])
def test_vjp_equals_central_differences_of_the_ste_surrogate(bits, symmetric, axis):
    """The STE is the exact derivative of Σ gy·x̂ with round(z) replaced by z + (round(z₀) − z₀).
    Inputs: codes at least 0.1 from a rounding boundary (float32 and float64 round alike) and never
    on qmin/qmax (no clamp kink within the step), o strictly inside its clamp, the floor inactive.
    Central differences in float64, step 1e-6·|max − min|; tolerance: 1e-5 relative to the largest
    gradient (float32 terms summed over ~100 elements, against an O(h²) float64 difference)."""
    x, gy, lo, hi, ctx, pshape, c_v, c_u = _fd_setup(bits, symmetric, axis, seed=bits + symmetric)
    gx, gmin, gmax = learned_range_vjp(ctx, gy)
    assert np.array_equal(gx, np.where(ctx.mask, gy, 0))

    def loss(lo_, hi_):
        return _surrogate(x.astype(np.float64), gy.astype(np.float64), lo_, hi_, ctx.qmin, ctx.qmax,
                          symmetric, pshape, c_v, c_u)

    fd_min, fd_max = _central_differences(loss, lo, hi, 1e-6)
    scale = max(np.abs(fd_min).max(), np.abs(fd_max).max())
    np.testing.assert_allclose(gmin, fd_min, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(gmax, fd_max, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("axis", [None, 0])
def test_true_loss_differences_saturated_symmetric(axis):
    """Σ gy·x̂ itself: where every element saturates (x̂ = qmin·s or qmax·s) and o = 0, x̂ is linear
    in s and the STE is its derivative; inside the range x̂ = round(v)·s, whose derivative lacks the
    STE's −v·m term: d/dmax Σ gy·x̂ = ∂L/∂max + Σ gy·m·v·sign(r)/N' (∂L/∂min: minus that)."""
    x, gy, lo, hi, ctx, pshape, c_v, c_u = _fd_setup(8, True, axis, seed=11)

    def true_loss(x_, gy_):
        return lambda lo_, hi_: _surrogate(x_.astype(np.float64), gy_.astype(np.float64), lo_, hi_,
                                           ctx.qmin, ctx.qmax, True, pshape, c_v, c_u, live=True)

    saturated = np.where(ctx.mask, 0, gy).astype(np.float32)      # gradient only where clamped
    _, gmin, gmax = learned_range_vjp(ctx, saturated)
    fd_min, fd_max = _central_differences(true_loss(x, saturated), lo, hi, 1e-6)
    scale = max(np.abs(fd_min).max(), np.abs(fd_max).max())
    np.testing.assert_allclose(gmin, fd_min, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(gmax, fd_max, rtol=0, atol=1e-5 * scale)

    _, gmin, gmax = learned_range_vjp(ctx, gy)                    # every element
    fd_min, fd_max = _central_differences(true_loss(x, gy), lo, hi, 1e-6)
    axes = ctx.reduce_axes()
    extra = np.sum(gy * ctx.mask * ctx.x_over_s.astype(np.float64), axis=axes) \
        * np.sign(ctx.raw_scale) / (ctx.qmax - ctx.qmin)
    assert np.all(np.abs(extra) > 1e-2 * np.abs(fd_max))          # the difference is not noise
    scale = max(np.abs(fd_min).max(), np.abs(fd_max).max())
    np.testing.assert_allclose(gmax + extra, fd_max, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(gmin - extra, fd_min, rtol=0, atol=1e-5 * scale)


def test_true_loss_differences_saturated_asymmetric_offset_clamped():
    """min > 0 clamps o to 0, so no gradient flows through the offset and, with every element
    saturated, central differences of Σ gy·x̂ itself equal the STE (o is then a constant)."""
    lo, hi = np.array(0.2), np.array(3.1)
    x = a32([-5.0, -0.7, 3.4, 3.2, 7.0, 1e3])       # x/s with s = 2.9/255: all beyond [0, 255]
    gy = a32([0.5, -1.25, 2.0, 0.75, -0.5, 1.5])
    _, ctx = learned_range_forward(x, lo, hi, 8, False)
    assert ctx.offset_raw > 0 and ctx.offset == 0 and not ctx.mask.any()
    _, gmin, gmax = learned_range_vjp(ctx, gy)
    lo64, hi64 = np.float64(f32(lo)), np.float64(f32(hi))

    def loss(lo_, hi_):
        return _surrogate(x.astype(np.float64), gy.astype(np.float64), lo_, hi_, 0, 255, False, (),
                          0.0, 0.0, live=True)

    fd_min, fd_max = _central_differences(loss, np.array(lo64), np.array(hi64), 1e-6)
    # x̂ = (0·[below] + 255·[above])·s: d/dmax = Σ_above gy·255/255 = 2 + 0.75 − 0.5 + 1.5 = 3.75
    assert float(gmax) == 3.75 and float(gmin) == -3.75
    np.testing.assert_allclose([gmin, gmax], [fd_min, fd_max], rtol=1e-6)


# ------------------------------------------------------------------ argument checks

def test_learned_range_errors():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(QuantError, match="2..16"):
        learned_range_forward(x, -1.0, 1.0, 32, False)
    with pytest.raises(QuantError, match="scalars"):
        learned_range_forward(x, a32([-1, -1, -1]), a32([1, 1, 1]), 8, False)       # axis missing
    with pytest.raises(QuantError, match="scalars"):
        learned_range_forward(x, -1.0, 1.0, 8, False, axis=0)
    with pytest.raises(QuantError, match="channels"):
        learned_range_forward(x, a32([-1, -1]), a32([1, 1]), 8, False, axis=0)
    with pytest.raises(QuantError, match="axis 2"):
        learned_range_forward(x, a32([-1] * 3), a32([1] * 3), 8, False, axis=2)
    with pytest.raises(QuantError, match="finite"):
        learned_range_forward(x, np.nan, 1.0, 8, False)
    with pytest.raises(QuantError, match="finite"):
        learned_range_forward(x, -1.0, 1e39, 8, False)              # beyond float32
    with pytest.raises(QuantError, match="overflows"):
        learned_range_forward(x, -3e38, 3e38, 8, False)
    _, ctx = learned_range_forward(x, -1.0, 1.0, 8, False)
    with pytest.raises(QuantError, match="same shape"):
        learned_range_vjp(ctx, np.zeros((4, 3), np.float32))
