"""The float-activation kernels of refq.fixedpoint.kernels.hybrid against naive loop transcriptions
of their definitions (Python integers for the int32 accumulators, NumPy float32 scalars for every
float32 step, one operation at a time), and their parameter checks."""
import math

import numpy as np
import pytest

from refq.errors import ParamError
from refq.fixedpoint.kernels import INT_REGISTRY
from refq.fixedpoint.kernels.hybrid import quantize_per_image, tanhf

F = np.float32


def _run(op, inputs, params, attrs):
    k = INT_REGISTRY[op]
    a = k.normalise_attrs(attrs, op)
    k.infer_shape([np.shape(x) for x in inputs], a, params)
    return k.forward(inputs, params, a)


def _round_away(v):
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def _quantize_row(row, asymmetric):
    """One row by the §8b rules, element by element in float32 scalars."""
    if asymmetric:
        rmin, rmax = min(F(0), min(row)), max(F(0), max(row))
        if rmin == rmax:
            return [0] * len(row), F(1), 0
        s = F(F(rmax - rmin) / F(255))
        zmin, zmax = F(F(-128) - F(rmin / s)), F(F(127) - F(rmax / s))
        z = zmin if F(128) + abs(F(rmin / s)) < F(127) + abs(F(rmax / s)) else zmax
        zp = _round_away(float(min(max(z, F(-128)), F(127))))
        inv = F(F(1) / s)
        return [min(127, max(-128, _round_away(float(F(v * inv))) + zp)) for v in row], s, zp
    r = max(abs(v) for v in row)
    if r == 0:
        return [0] * len(row), F(1), 0
    inv = F(F(127) / r)
    return [min(127, max(-127, _round_away(float(F(v * inv))))) for v in row], F(r / F(127)), 0


@pytest.mark.parametrize("asymmetric", [True, False])
def test_quantize_per_image(asymmetric):
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(37).astype(F) for _ in range(6)]
    rows += [np.zeros(37, F), np.full(37, F(0.5)), -np.abs(rows[0]), np.abs(rows[1]),
             np.linspace(-1, 3, 37).astype(F), (rng.integers(-8, 8, 37) / F(2)).astype(F)]
    x = np.stack(rows)
    q, s, zp = quantize_per_image(x, asymmetric)
    for r, row in enumerate(rows):
        want_q, want_s, want_zp = _quantize_row(list(row), asymmetric)
        assert q[r].tolist() == want_q and s[r] == want_s and zp[r] == want_zp, r


def _geometry(h, k, s, d, same):
    if not same:
        return 0, (h - (k - 1) * d - 1) // s + 1
    out = -(-h // s)
    return max((out - 1) * s + (k - 1) * d + 1 - h, 0) // 2, out


CONVS = [dict(strides=[1, 1], dilations=[1, 1], padding="same", groups=1),
         dict(strides=[2, 1], dilations=[1, 2], padding="valid", groups=1),
         dict(strides=[1, 2], dilations=[1, 1], padding="same", groups=3)]   # depthwise, M = 2


def _naive_conv(x, w, attrs, tap_sum, finish):
    """y[n, i, j, o] = finish(n, o, tap_sum over the in-image taps (u, v, c) in kernel order)."""
    n_, h, w_, c_in = x.shape
    o_, kh, kw, cg = w.shape
    (sh, sw), (dh, dw), same = attrs["strides"], attrs["dilations"], attrs["padding"] == "same"
    pt, oh = _geometry(h, kh, sh, dh, same)
    pl, ow = _geometry(w_, kw, sw, dw, same)
    y = np.zeros((n_, oh, ow, o_), F)
    for n in range(n_):
        for i in range(oh):
            for j in range(ow):
                for o in range(o_):
                    g = o // (o_ // attrs["groups"])
                    taps = [(n, i * sh + u * dh - pt, j * sw + v * dw - pl, g * cg + c, o, u, v, c)
                            for u in range(kh) for v in range(kw) for c in range(cg)]
                    taps = [t for t in taps if 0 <= t[1] < h and 0 <= t[2] < w_]
                    y[n, i, j, o] = finish(n, o, tap_sum(taps))
    return y


def _relu6(v):
    return min(max(v, F(0)), F(6))


@pytest.mark.parametrize("attrs", CONVS)
def test_f32_conv2d(attrs):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 6, 3)).astype(F)
    cg = 1 if attrs["groups"] == 3 else 3
    w = rng.standard_normal((6, 3, 2, cg)).astype(F)
    b = rng.standard_normal(6).astype(F)

    def tap_sum(taps):
        total = F(0)
        for n, iy, ix, c, o, u, v, k in taps:
            total = F(total + F(x[n, iy, ix, c] * w[o, u, v, k]))
        return total

    want = _naive_conv(x, w, attrs, tap_sum, lambda n, o, t: _relu6(F(t + b[o])))
    got = _run("int_f32_conv2d", [x], {"weight": w, "bias": b}, {**attrs, "activation": "relu6"})
    assert np.array_equal(got, want)


@pytest.mark.parametrize("attrs", CONVS)
def test_hybrid_conv2d(attrs):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 5, 6, 3)) * [[[[1, 3, 0.1]]]]).astype(F)
    cg = 1 if attrs["groups"] == 3 else 3
    w = rng.integers(-127, 128, (6, 3, 2, cg))
    ws = rng.uniform(0.001, 0.02, 6).astype(F)
    b = rng.standard_normal(6).astype(F)
    order = "depthwise" if attrs["groups"] == 3 else "conv"
    q, s, zp = quantize_per_image(x, True)

    def tap_sum(taps):
        return sum(int(w[o, u, v, k]) * (int(q[n, iy, ix, c]) - int(zp[n]))
                   for n, iy, ix, c, o, u, v, k in taps)

    def finish(n, o, acc):
        if order == "conv":
            return F(F(F(F(acc) * ws[o]) * s[n]) + b[o])
        return F(F(F(acc) * F(ws[o] * s[n])) + b[o])

    want = _naive_conv(x, w, attrs, tap_sum, finish)
    got = _run("int_hybrid_conv2d", [x], {"weight": w, "weight_scale": ws, "bias": b},
               {**attrs, "scale_order": order})
    assert np.array_equal(got, want)


@pytest.mark.parametrize("asymmetric", [True, False])
def test_hybrid_and_f32_dense(asymmetric):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 20)).astype(F)
    w = rng.integers(-127, 128, (5, 20))
    ws = rng.uniform(0.001, 0.02, 5).astype(F)
    b = rng.standard_normal(5).astype(F)
    q, s, zp = quantize_per_image(x, asymmetric)
    want = np.zeros((3, 5), F)
    for r in range(3):
        for o in range(5):
            acc = sum(int(w[o, d]) * (int(q[r, d]) - int(zp[r])) for d in range(20))
            want[r, o] = max(F(b[o] + F(F(acc) * F(s[r] * ws[o]))), F(0))
    got = _run("int_hybrid_dense", [x], {"weight": w, "weight_scale": ws, "bias": b},
               {"asymmetric": asymmetric, "activation": "relu"})
    assert np.array_equal(got, want)
    wf = rng.standard_normal((5, 20)).astype(F)
    want = np.zeros((3, 5), F)
    for r in range(3):
        for o in range(5):
            total = F(0)
            for d in range(20):
                total = F(total + F(x[r, d] * wf[o, d]))
            want[r, o] = min(max(F(total + b[o]), F(-1)), F(1))
    got = _run("int_f32_dense", [x], {"weight": wf, "bias": b}, {"activation": "relu_n1_to_1"})
    assert np.array_equal(got, want)


def test_f32_avg_pool_mean_softmax_binary():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 5, 3)).astype(F)
    got = _run("int_f32_avg_pool2d", [x], {}, {"pool_size": [3, 3], "strides": [2, 2],
                                              "padding": "same"})
    want = np.zeros((2, 3, 3, 3), F)
    for n, i, j, c in np.ndindex(want.shape):
        total, count = F(0), 0
        for u in range(3):
            for v in range(3):
                iy, ix = 2 * i + u - 1, 2 * j + v - 1
                if 0 <= iy < 5 and 0 <= ix < 5:
                    total, count = F(total + x[n, iy, ix, c]), count + 1
        want[n, i, j, c] = F(total / F(count))
    assert np.array_equal(got, want)
    for axes, keep in (([1, 2], False), ([2], True), ([-1, 1], False)):
        got = _run("int_f32_mean", [x], {}, {"axes": axes, "keepdims": keep})
        red = sorted(a % 4 for a in axes)
        kept = [a for a in range(4) if a not in red]
        flat = np.transpose(x, kept + red).reshape([x.shape[a] for a in kept] + [-1])
        want = np.zeros(flat.shape[:-1], F)
        for idx in np.ndindex(want.shape):
            s = F(0)
            for v in flat[idx]:
                s = F(s + v)
            want[idx] = F(s / F(flat.shape[-1]))
        assert np.array_equal(got.reshape(want.shape), want)
    z = (rng.standard_normal((4, 7)) * 5).astype(F)
    got = _run("int_f32_softmax", [z], {}, {"beta": 1.0})
    for r in range(4):
        m = max(z[r])
        e = [F(math.exp(float(F(v - m)))) for v in z[r]]
        total = F(0)
        for v in e:
            total = F(total + v)
        assert got[r].tolist() == [F(v / total) for v in e]
    a, b = x, rng.standard_normal((1, 1, 5, 3)).astype(F)
    for kind, fn in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply)):
        got = _run("int_f32_binary", [a, b], {}, {"kind": kind, "activation": "relu"})
        assert np.array_equal(got, np.maximum(fn(a, b), F(0)))


#: (input, glibc 2.36 tanhf(input)) as float32 bit patterns, where glibc's result is not the
#: rounded float64 tanh (LiteRT's reference TANH calls it).
GLIBC_TANHF = [(1035751948, 1035717281), (-1089694259, -1090522700),
               (-1094199468, -1094826373), (-1121224865, -1121231424),
               (1065983110, 1061853000), (-1096936815, -1097253878)]


def test_tanhf_follows_glibc():
    x = np.array([a for a, _ in GLIBC_TANHF], np.int32).view(F)
    want = np.array([b for _, b in GLIBC_TANHF], np.int32)
    assert np.array_equal(tanhf(x).view(np.int32), want)
    rng = np.random.default_rng(5)
    v = np.concatenate([rng.uniform(-30, 30, 5000), rng.standard_normal(2000) * 1e-4,
                        [0.0, 1.0, 22.0, 1e-30]]).astype(F)
    y = tanhf(v)
    ref = np.tanh(v.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(F)).astype(np.float64)
    assert np.all(np.abs(y - ref) <= 2 * ulp)                       # within 2 ulp everywhere
    assert np.array_equal(tanhf(-v), -y)                             # odd
    assert np.signbit(tanhf(np.array([-0.0], F))[0])


def test_parameter_checks():
    x = np.zeros((1, 4, 4, 2), F)
    w = np.zeros((3, 1, 1, 2), np.int64)
    with pytest.raises(ParamError, match="weight_scale"):
        _run("int_hybrid_conv2d", [x], {"weight": w, "weight_scale": np.ones(2, F)}, {})
    with pytest.raises(ParamError, match="int8"):
        _run("int_hybrid_conv2d", [x], {"weight": w + 200, "weight_scale": np.ones(3, F)}, {})
