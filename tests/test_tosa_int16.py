"""TOSA's int16 x int8 convolutions under the tosa profile (`refq.fixedpoint.rescale48`,
`kernels.conv_tosa16`, `lower_tosa16`): apply_scale_16 and the legalizer's 16-bit multipliers
against Python integers on edge grids; the kernels against a Python-integer transcription of
CONV2D / FULLY_CONNECTED / TRANSPOSE_CONV2D + RESCALE; the int48 REQUIREs. The lowering is
tests/test_lowering_tosa16.py's."""
import math
from fractions import Fraction

import numpy as np
import pytest

from refq.errors import FixedPointError
from refq.fixedpoint.kernels import INT_REGISTRY
from refq.fixedpoint.kernels import conv_tosa16
from refq.fixedpoint.multiplier import quantize_multiplier
from refq.fixedpoint.requantize import apply_scale_16
from refq.fixedpoint.requantize16 import multiply_by_quantized_multiplier_64
from refq.fixedpoint.rescale48 import INT48, legalizer_scale16, prefix_extremes

f32 = np.float32
LO48, HI48 = INT48
I32 = (-(1 << 31), (1 << 31) - 1)


# ---- Python-integer transcriptions of the specification and the legalizer ---------------------
def py_apply_scale_16(v: int, m: int, s: int) -> int:
    """scale_helpers.tosac apply_scale_16 (the REQUIREs are checked by the callers)."""
    return (v * m + (1 << (s - 1))) >> s


def py_frexp_round(real: float, bits: int):
    """(round_half_away(q·2^bits), e) with real = q·2^e, 0.5 <= q < 1 (std::frexp, std::round)."""
    q, e = math.frexp(real)
    x = Fraction(q) * (1 << bits)
    m = math.floor(x + Fraction(1, 2))
    if m == 1 << bits:
        m, e = m // 2, e + 1
    return m, e


def py_scale(real: float, bits: int):
    """computeMultiplierAndShiftTosaScale32/16: (m, shift = bits − e), shift capped at 62."""
    m, e = py_frexp_round(real, bits)
    shift = bits - e
    if shift > 62:
        m, shift = m >> min(31, shift - 62), 62
    return m, shift


def py_legalizer(real: float, per_channel: bool):
    """buildRescaleOpConvOutput's scale16 (m, shift): per tensor the 16-bit encoding, per channel
    the 32-bit one reduced as TFLite does."""
    if not per_channel:
        return py_scale(real, 15)
    m32, s32 = py_scale(real, 31)
    return ((m32 + (1 << 15)) >> 16 if m32 < 0x7FFF0000 else 0x7FFF), s32 - 16


# ---- apply_scale_16 ------------------------------------------------------------------------------
_VALUES = [LO48, LO48 + 1, LO48 + 2, -(1 << 40) - 1, -(1 << 31), -65537, -3, -1, 0, 1, 2, 3,
           65535, (1 << 31) - 1, 1 << 40, HI48 - 2, HI48 - 1, HI48]
_MULTS = [0, 1, 2, (1 << 14) - 1, 1 << 14, (1 << 14) + 1, 19890, (1 << 15) - 2, (1 << 15) - 1]


def _ties(s):
    """Values v with v·m an exact tie at bit s for m = 1 and m = 2^14."""
    out = []
    for j in (0, 1, 2, 1000):
        if s <= 47:
            out += [(v, 1) for v in ((2 * j + 1) << (s - 1), -((2 * j + 1) << (s - 1)))
                    if LO48 <= v <= HI48]
        if s >= 15:
            out += [(v, 1 << 14) for v in ((2 * j + 1) << (s - 15), -((2 * j + 1) << (s - 15)))
                    if LO48 <= v <= HI48]
    return out


@pytest.mark.parametrize("s", range(2, 63))
def test_apply_scale_16_edge_grid_every_shift(s):
    pairs = [(v, m) for v in _VALUES for m in _MULTS] + _ties(s)
    fits = [(v, m) for v, m in pairs if I32[0] <= py_apply_scale_16(v, m, s) <= I32[1]]
    v = np.array([p[0] for p in fits], np.int64)
    m = np.array([p[1] for p in fits], np.int64)
    got = apply_scale_16(v, m, np.full(v.shape, s))
    assert got.tolist() == [py_apply_scale_16(a, b, s) for a, b in fits]
    for a, b in pairs:
        if not I32[0] <= py_apply_scale_16(a, b, s) <= I32[1]:
            with pytest.raises(FixedPointError, match="int32"):
                apply_scale_16(np.array([a]), np.array([b]), np.array([s]))
            break


def test_apply_scale_16_ties_round_toward_plus_infinity():
    """(±2^(s−1))·1 at shift s: +0.5 -> 1, −0.5 -> 0."""
    assert apply_scale_16(np.array([1 << 20, -(1 << 20)]), np.array([1, 1]),
                          np.array([21, 21])).tolist() == [1, 0]


def test_apply_scale_16_refuses_values_outside_int48_and_bad_parameters():
    for v, m, s in ((HI48 + 1, 1, 40), (LO48 - 1, 1, 40), (0, 1 << 15, 20), (0, -1, 20),
                    (0, 1, 1), (0, 1, 63)):
        with pytest.raises(FixedPointError):
            apply_scale_16(np.array([v]), np.array([m]), np.array([s]))


# ---- the legalizer's multipliers -------------------------------------------------------------
def _reals():
    r = [2.0 ** k for k in range(-40, 13)]
    r += [float(np.nextafter(x, 0.0)) for x in r] + [float(np.nextafter(x, np.inf)) for x in r]
    r += [(2 * j + 1) / 2.0 ** 16 * 2.0 ** e for j in (8192, 12345, 16383) for e in (-20, -3, 5)]
    r += [(2 * j + 1) / 2.0 ** 32 * 2.0 ** e for j in ((1 << 30) + 7, (1 << 31) - 1)
          for e in (-20, 0)]
    r += [0x7FFF0000 / 2.0 ** 31 * 2.0 ** e for e in (-12, 0)]      # the 0x7FFF clamp
    r += [float(np.nextafter(0x7FFF0000 / 2.0 ** 31, 0.0)), 0.99999, 2.0 ** -60, 3e-19, 0.0]
    rng = np.random.default_rng(7)
    r += (10.0 ** rng.uniform(-12, 3.5, 300)).tolist()
    return [x for x in r if x < 2.0 ** 12]


@pytest.mark.parametrize("per_channel", [True, False])
def test_legalizer_scale16_against_python(per_channel):
    reals = _reals()
    m, s = legalizer_scale16(np.array(reals), per_channel)
    want = [py_legalizer(x, per_channel) for x in reals]
    assert list(zip(m.tolist(), s.tolist())) == want
    assert m.max() <= (1 << 15) - 1 and s.min() >= 2 and s.max() <= 62


@pytest.mark.parametrize("per_channel", [True, False])
def test_legalizer_scale16_refuses_shift_below_2(per_channel):
    with pytest.raises(FixedPointError, match="shift"):
        legalizer_scale16(np.array([0.5, 2.0 ** 13]), per_channel)


def test_per_channel_scale16_equals_tflites_16x8_requantization():
    """apply_scale_16 with the legalizer's per-channel (m, shift) is TFLite's int64
    MultiplyByQuantizedMultiplier with QuantizeMultiplier(M) (shift = 15 − tfl_shift)."""
    rng = np.random.default_rng(11)
    reals = 10.0 ** rng.uniform(-9, 2, 200)
    m16, s16 = legalizer_scale16(reals, True)
    m31, e = quantize_multiplier(reals)
    assert np.array_equal(s16, 15 - e)
    x = np.concatenate([rng.integers(-(1 << 30), 1 << 30, 50),
                        np.array([0, 1, -1, 1 << 20, -(1 << 20) - 1])])
    for c in range(len(reals)):
        want = [py_apply_scale_16(int(v), int(m16[c]), int(s16[c])) for v in x]
        keep = np.array([I32[0] <= w <= I32[1] for w in want])
        if keep.any() and -31 <= e[c] <= 7:
            got = apply_scale_16(x[keep], np.full(keep.sum(), m16[c]), np.full(keep.sum(),
                                                                              s16[c]))
            tfl = multiply_by_quantized_multiplier_64(x[keep], np.full(keep.sum(), m31[c]),
                                                      np.full(keep.sum(), e[c]))
            assert np.array_equal(got, tfl)


def test_prefix_extremes_against_python():
    rng = np.random.default_rng(5)
    a = rng.integers(-(1 << 20), 1 << 20, (7, 40))
    w = rng.integers(-300, 300, (3, 40))
    start = rng.integers(-(1 << 30), 1 << 30, (7, 3))
    (lo, hi), run = prefix_extremes(a, w, start)
    sums = []
    for p in range(7):
        for o in range(3):
            t = int(start[p, o])
            sums.append(t)
            for k in range(40):
                t += int(a[p, k]) * int(w[o, k])
                sums.append(t)
            assert run[p, o] == t
    assert (lo, hi) == (min(sums), max(sums))


# ---- the kernels against a transcription of the pseudocode -----------------------------------
def run(op, x, params, attrs, accumulate=False):
    """Op `op` on integer input x with its attributes normalised (defaults filled in)."""
    o = INT_REGISTRY[op]
    a = o.normalise_attrs(attrs, op)
    return (o.accumulate if accumulate else o.forward)([np.asarray(x)], params, a)


def _rescale(out, m, s, act):
    assert LO48 <= out <= HI48
    r = py_apply_scale_16(out, m, s)
    assert I32[0] <= r <= I32[1]
    return min(max(r, act[0]), act[1])


def naive_conv(x, w, bias, wzp, m, s, act, strides, dil, pads, groups):
    """CONV2D.tosac (groups by blocks of output channels, as refq's conv2d), + RESCALE, CLAMP."""
    n_, h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    pt, pb, pl, pr = pads
    oh = (h + pt + pb - (kh - 1) * dil[0] - 1) // strides[0] + 1
    ow = (wd + pl + pr - (kw - 1) * dil[1] - 1) // strides[1] + 1
    y = np.zeros((n_, oh, ow, o), np.int64)
    for n in range(n_):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(o):
                    g = oc // (o // groups)
                    acc = 0
                    for ky in range(kh):
                        for kx in range(kw):
                            for ic in range(cg):
                                iy = oy * strides[0] - pt + ky * dil[0]
                                ix = ox * strides[1] - pl + kx * dil[1]
                                if 0 <= iy < h and 0 <= ix < wd:
                                    acc += int(x[n, iy, ix, g * cg + ic]) * (
                                        int(w[oc, ky, kx, ic]) - wzp)
                                    assert LO48 <= acc <= HI48
                    y[n, oy, ox, oc] = _rescale(acc + int(bias[oc]), int(m[oc]), int(s[oc]), act)
    return y


def _rand_layer(rng, o, shape_w, big_bias=1 << 33):
    w = rng.integers(-128, 128, shape_w)
    bias = rng.integers(-big_bias, big_bias, o)
    m = rng.integers(1 << 14, 1 << 15, o)
    s = rng.integers(30, 36, o)
    return w, bias, m, s


@pytest.mark.parametrize("cfg", [
    dict(c=3, o=4, k=3, groups=1, strides=(1, 1), dil=(1, 1), pads=(1, 1, 1, 1)),
    dict(c=4, o=8, k=3, groups=4, strides=(2, 1), dil=(1, 2), pads=(2, 0, 1, 3)),
    dict(c=4, o=6, k=2, groups=2, strides=(1, 2), dil=(2, 1), pads=(0, 0, 0, 0)),
])
def test_int_conv2d_tosa16_equals_the_pseudocode(cfg):
    rng = np.random.default_rng(sum(cfg["pads"]) + cfg["o"])
    x = rng.integers(-(1 << 15), 1 << 15, (2, 6, 7, cfg["c"]))
    x[0, 0, 0] = -(1 << 15)
    w, bias, m, s = _rand_layer(rng, cfg["o"], (cfg["o"], cfg["k"], cfg["k"],
                                                cfg["c"] // cfg["groups"]))
    act, wzp = (-20000, 30000), -3
    attrs = {"strides": list(cfg["strides"]), "dilations": list(cfg["dil"]),
             "padding": "explicit", "pads": list(cfg["pads"]), "groups": cfg["groups"],
             "weight_zp": wzp, "act_min": act[0], "act_max": act[1], "scheme": "tosa16",
             "accumulator_bits": 48}
    params = {"weight": w, "bias": bias, "multiplier": m, "shift": s}
    y, acc = run("int_conv2d_tosa16", x, params, attrs, accumulate=True)
    want = naive_conv(x, w, bias, wzp, m, s, act, cfg["strides"], cfg["dil"], cfg["pads"],
                      cfg["groups"])
    assert np.array_equal(y, want) and acc.hi <= HI48
    narrow, _ = conv_tosa16.NARROW["int_conv2d_tosa16"](
        [x.astype(np.int16)], params, INT_REGISTRY["int_conv2d_tosa16"].normalise_attrs(attrs, ""),
        {})
    assert narrow.dtype == np.int16 and np.array_equal(narrow, want)


def test_int_dense_tosa16_equals_the_pseudocode():
    rng = np.random.default_rng(3)
    x = rng.integers(-(1 << 15), 1 << 15, (5, 37))
    w, bias, m, s = _rand_layer(rng, 6, (6, 37))
    act = (-32768, 32767)
    params = {"weight": w, "bias": bias, "multiplier": m[:1], "shift": s[:1]}
    attrs = {"weight_zp": 7, "act_min": act[0], "act_max": act[1], "scheme": "tosa16",
             "accumulator_bits": 48}
    y = run("int_dense_tosa16", x, params, attrs)
    want = [[_rescale(sum(int(x[b, i]) * (int(w[o, i]) - 7) for i in range(37)) + int(bias[o]),
                      int(m[0]), int(s[0]), act) for o in range(6)] for b in range(5)]
    assert y.tolist() == want


def test_int_conv_transpose2d_tosa16_equals_the_pseudocode():
    """TRANSPOSE_CONV2D.tosac (out_pad 0) = refq's conv_transpose2d, padding valid."""
    rng = np.random.default_rng(4)
    x = rng.integers(-(1 << 15), 1 << 15, (2, 3, 4, 3))
    w, bias, m, s = _rand_layer(rng, 2, (2, 3, 2, 3))
    act, st = (-32768, 32767), (2, 3)
    attrs = {"strides": list(st), "weight_zp": 0, "act_min": act[0], "act_max": act[1],
             "scheme": "tosa16", "accumulator_bits": 48}
    y = run("int_conv_transpose2d_tosa16", x,
            {"weight": w, "bias": bias, "multiplier": m, "shift": s}, attrs)
    oh, ow = (3 - 1) * st[0] + 3, (4 - 1) * st[1] + 2
    assert y.shape == (2, oh, ow, 2)
    for n in range(2):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(2):
                    acc = 0
                    for ky in range(3):
                        for kx in range(2):
                            for ic in range(3):
                                iy, ix = oy - ky, ox - kx
                                if 0 <= iy < 3 * st[0] and 0 <= ix < 4 * st[1] and \
                                        iy % st[0] == 0 and ix % st[1] == 0:
                                    acc += int(x[n, iy // st[0], ix // st[1], ic]) * \
                                        int(w[oc, ky, kx, ic])
                    want = _rescale(acc + int(bias[oc]), int(m[oc]), int(s[oc]), act)
                    assert y[n, oy, ox, oc] == want


def test_float_rne_scheme_is_the_exact_rounding_of_the_same_int48_values():
    rng = np.random.default_rng(8)
    x = rng.integers(-(1 << 15), 1 << 15, (4, 9))
    w, bias, _, _ = _rand_layer(rng, 3, (3, 9), big_bias=1 << 44)
    real = np.array([2.0 ** -30, 3.1e-10, 1.7e-9])
    y = run("int_dense_tosa16", x, {"weight": w, "bias": bias, "real_multiplier": real},
            {"scheme": "float_rne"})
    for b in range(4):
        for o in range(3):
            acc = sum(int(x[b, i]) * int(w[o, i]) for i in range(9)) + int(bias[o])
            assert y[b, o] == min(max(round(float(acc) * real[o]), -32768), 32767)


# ---- the int48 REQUIREs ----------------------------------------------------------------------
def _dense(x, w, bias, m=1 << 14, s=47):
    return run("int_dense_tosa16", x, {"weight": np.array(w), "bias": np.array(bias),
                                       "multiplier": np.array([m]), "shift": np.array([s])}, {})


def test_acc_plus_bias_outside_int48_is_an_error():
    x, w = [[32767, 32767]], [[127, 127]]          # acc = 8,322,818
    assert _dense(x, w, [HI48 - 8322818]).tolist() == [[(HI48 * (1 << 14) + (1 << 46)) >> 47]]
    with pytest.raises(FixedPointError, match=r"acc \+ bias.*int48"):
        _dense(x, w, [HI48 - 8322817])
    with pytest.raises(FixedPointError, match="int48"):
        _dense([[-32768, 0]], [[127, 0]], [LO48])


def test_rescale_result_outside_int32_is_an_error():
    with pytest.raises(FixedPointError, match="int32"):
        _dense([[32767]], [[127]], [1 << 40], m=(1 << 15) - 1, s=2)


def test_a_bias_outside_int48_is_refused():
    with pytest.raises(Exception, match="int48"):
        _dense([[1]], [[1]], [HI48 + 1])


def test_ordered_partial_sums_follow_the_loop_order_of_conv2d():
    """The partial sums the order check forms over the (ky, kx, ic) patches are those of
    CONV2D.tosac's loop (padding taps add 0)."""
    rng = np.random.default_rng(9)
    x = rng.integers(-(1 << 15), 1 << 15, (1, 4, 4, 2))
    w = rng.integers(-128, 128, (2, 3, 3, 2))
    attrs = {"strides": [1, 1], "dilations": [1, 1], "padding": "explicit",
             "pads": [1, 1, 1, 1], "groups": 1}
    parts = conv_tosa16._conv_patches(x, w, attrs)
    (lo, hi), _ = prefix_extremes(*parts[0])
    sums = [0]
    for oy in range(4):
        for ox in range(4):
            for oc in range(2):
                acc = 0
                for ky in range(3):
                    for kx in range(3):
                        for ic in range(2):
                            iy, ix = oy - 1 + ky, ox - 1 + kx
                            v = int(x[0, iy, ix, ic]) if 0 <= iy < 4 and 0 <= ix < 4 else 0
                            acc += v * int(w[oc, ky, kx, ic])
                            sums.append(acc)
    assert (lo, hi) == (min(sums), max(sums))
    big = [(np.array([[1 << 40, 1 << 40]]), np.array([[1 << 7, -(1 << 7)]]))]
    assert prefix_extremes(*big[0])[0][1] == 1 << 47          # the total is 0
    with pytest.raises(FixedPointError, match="partial sum"):
        conv_tosa16._ordered(lambda: big, "int_dense_tosa16")()
