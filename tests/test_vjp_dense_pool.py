"""VJPs of dense, avg_pool2d, max_pool2d and global_avg_pool2d.

Each VJP is checked against central finite differences (tests/vjp_check.py) and against a naive
loop transcription of the VJP section of its module docstring; the conventions at kinks (max-pool
ties, NaN windows, all −inf windows) are checked on hand-made inputs with exact expected values.
"""
from __future__ import annotations

import itertools
import math
import zlib

import numpy as np
import pytest

from refq.layers import REGISTRY, dense, pooling
from vjp_check import check_vjp


def seed_of(*args):
    """A seed that depends on a test case's parameters only (not on Python's hash salt)."""
    return zlib.crc32(repr(args).encode())


def run_vjp(name, x, attrs=None, params=None, gy=None, seed=0):
    """(y, gy, g_inputs, g_params) of op `name` at x, with a seeded random gy when none is given."""
    op = REGISTRY[name]
    attrs = op.normalise_attrs(dict(attrs or {}), name)
    params = dict(params or {})
    y = op.forward([x], params, attrs)
    if gy is None:
        gy = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    g_in, g_par = op.vjp([x], params, attrs, y, gy)
    return y, gy, g_in, g_par


def distinct(shape, rng, step=0.01):
    """Values spaced `step` apart in random order: no two within a finite-difference step."""
    n = math.prod(shape)
    return (rng.permutation(n) - n / 2).reshape(shape) * step


def test_vjps_are_registered_beside_their_forwards():
    assert REGISTRY["dense"].vjp is dense.OPS[0].vjp is not None
    for op in pooling.OPS:
        assert REGISTRY[op.name].vjp is op.vjp is not None


# ---- dense ---------------------------------------------------------------------------------
DENSE_SHAPES = [((3, 5), 4), ((1, 1), 1), ((2, 3, 7), 5), ((2, 2, 3, 4), 3), ((4, 1, 6), 2)]


@pytest.mark.parametrize("xs,units", DENSE_SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_dense_vjp_finite_differences(xs, units, bias):
    rng = np.random.default_rng(seed_of(xs, units, bias))
    params = {"weight": rng.standard_normal((units, xs[-1]))}
    if bias:
        params["bias"] = rng.standard_normal(units)
    check_vjp("dense", [rng.standard_normal(xs)], params, samples=60)


def test_dense_parameter_gradients_alone_are_the_same_numbers():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 7))
    params = {"weight": rng.standard_normal((5, 7)), "bias": rng.standard_normal(5)}
    op = REGISTRY["dense"]
    y = op.forward([x], params, {})
    gy = rng.standard_normal(y.shape)
    _, gp = op.vjp([x], params, {}, y, gy)
    (gx,), gp2 = op.vjp([x], params, {}, y, gy, inputs_grad=False)
    assert gx is None and set(gp2) == set(gp)
    for k in gp:
        np.testing.assert_array_equal(gp2[k], gp[k])


@pytest.mark.parametrize("xs,units", DENSE_SHAPES)
def test_dense_vjp_matches_definition(xs, units):
    """∂L/∂x = G·W, ∂L/∂W = Gᵀ·X, ∂L/∂b = Σ_r G[r] as explicit sums over Python floats."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(xs), rng.standard_normal((units, xs[-1]))
    b = rng.standard_normal(units)
    _, gy, (gx,), gp = run_vjp("dense", x, params={"weight": w, "bias": b})
    lead = list(itertools.product(*map(range, xs[:-1])))
    n_in = xs[-1]
    ref_gx = np.zeros(xs)
    ref_gw = np.zeros((units, n_in))
    ref_gb = np.zeros(units)
    for idx in lead:
        for o in range(units):
            g = float(gy[idx + (o,)])
            ref_gb[o] += g
            for i in range(n_in):
                ref_gx[idx + (i,)] += g * float(w[o, i])
                ref_gw[o, i] += g * float(x[idx + (i,)])
    np.testing.assert_allclose(gx, ref_gx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gp["weight"], ref_gw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gp["bias"], ref_gb, rtol=1e-12, atol=1e-12)


def test_dense_vjp_hand_worked():
    x = np.array([[1.0, 2.0], [0.0, -1.0]])
    w = np.array([[3.0, 4.0], [5.0, 6.0], [-1.0, 0.5]])
    gy = np.array([[1.0, -1.0, 2.0], [0.0, 1.0, 0.0]])
    _, _, (gx,), gp = run_vjp("dense", x, params={"weight": w, "bias": np.zeros(3)}, gy=gy)
    np.testing.assert_array_equal(gx, [[-4.0, -1.0], [5.0, 6.0]])
    np.testing.assert_array_equal(gp["weight"], [[1.0, 2.0], [-1.0, -3.0], [2.0, 4.0]])
    np.testing.assert_array_equal(gp["bias"], [1.0, 0.0, 2.0])
    _, _, _, gp = run_vjp("dense", x, params={"weight": w}, gy=gy)
    assert set(gp) == {"weight"}


def test_dense_vjp_nan_in_x_reaches_only_its_weight_column():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((2, 3)), rng.standard_normal(2)
    x[2, 1] = np.nan
    x[0, 2] = np.inf
    with np.errstate(invalid="ignore"):  # the NaN entering Gᵀ·X
        _, _, (gx,), gp = run_vjp("dense", x, params={"weight": w, "bias": b})
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gp["bias"]))
    np.testing.assert_array_equal(np.isfinite(gp["weight"]), [[True, False, False]] * 2)


@pytest.mark.parametrize("bias", [False, True])
def test_dense_vjp_float32(bias):
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((3, 2, 6)), rng.standard_normal((5, 6)), rng.standard_normal(5)
    p64 = {"weight": w, "bias": b} if bias else {"weight": w}
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    _, gy, (gx64,), gp64 = run_vjp("dense", x, params=p64)
    _, _, (gx32,), gp32 = run_vjp("dense", x.astype(np.float32), params=p32,
                                  gy=gy.astype(np.float32))
    assert gx32.dtype == np.float32 and all(g.dtype == np.float32 for g in gp32.values())
    assert set(gp32) == set(p32)
    np.testing.assert_allclose(gx32, gx64, rtol=1e-5, atol=1e-5)
    for k in p64:
        np.testing.assert_allclose(gp32[k], gp64[k], rtol=1e-5, atol=1e-5)
    # a float64 cotangent still computes in x's dtype
    _, _, (gx32b,), gp32b = run_vjp("dense", x.astype(np.float32), params=p32, gy=gy)
    assert gx32b.dtype == np.float32 and all(g.dtype == np.float32 for g in gp32b.values())


def test_dense_vjp_parameter_gradients_keep_their_parameters_dtype():
    """The forward casts float64 parameters to a float32 x; their gradients stay float64."""
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((2, 3)), rng.standard_normal(2)
    _, gy, (gx64,), gp64 = run_vjp("dense", x, params={"weight": w, "bias": b})
    _, _, (gx,), gp = run_vjp("dense", x.astype(np.float32), params={"weight": w, "bias": b},
                              gy=gy.astype(np.float32))
    assert gx.dtype == np.float32
    assert gp["weight"].dtype == np.float64 and gp["bias"].dtype == np.float64
    np.testing.assert_allclose(gx, gx64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gp["weight"], gp64["weight"], rtol=1e-5, atol=1e-5)


def test_dense_vjp_does_not_mutate_its_arguments():
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((2, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    gy = rng.standard_normal((2, 3))
    copies = [a.copy() for a in (x, w, b, gy)]
    run_vjp("dense", x, params={"weight": w, "bias": b}, gy=gy)
    for a, c in zip((x, w, b, gy), copies):
        np.testing.assert_array_equal(a, c)


# ---- avg_pool2d / max_pool2d ---------------------------------------------------------------
POOL_SIZES = [(1, 1), (2, 2), (3, 2), (2, 3), (3, 3)]
STRIDES = [(1, 1), (2, 2), (1, 2), (3, 1)]


def explicit_pads(k, which):
    kh, kw = k
    return {"top-left": [kh - 1, 0, kw - 1, 0],
            "bottom-right": [0, kh - 1, 0, kw - 1],
            "mixed": [min(1, kh - 1), kh - 1, kw - 1, min(1, kw - 1)]}[which]


PADDINGS = [("valid", None), ("same", None), ("explicit", "top-left"),
            ("explicit", "bottom-right"), ("explicit", "mixed")]


def pool_case(k, s, padding, which, seed):
    """(x shape, attrs): a random N, C and H, W from the smallest valid size to 4 more, so that
    sizes that the strides do not divide and windows overlapping the edges both occur."""
    rng = np.random.default_rng(seed)
    attrs = {"pool_size": list(k), "strides": list(s), "padding": padding}
    if padding == "explicit":
        attrs["pads"] = explicit_pads(k, which)
    shape = (int(rng.integers(1, 3)), k[0] + int(rng.integers(0, 5)),
             k[1] + int(rng.integers(0, 5)), int(rng.integers(1, 3)))
    return shape, attrs


def geometry(shape, attrs):
    """((top, bottom, left, right), (OH, OW)) by the rules of the pooling docstring: TensorFlow's
    'same' (out = ceil(in / stride), the odd pad at the bottom/right), or the explicit pads."""
    pads, out = [], []
    for axis, (n, k, s) in enumerate(zip(shape[1:3], attrs["pool_size"], attrs["strides"])):
        if attrs["padding"] == "valid":
            before, after = 0, 0
        elif attrs["padding"] == "explicit":
            before, after = attrs["pads"][2 * axis:2 * axis + 2]
        else:
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            before, after = total // 2, total - total // 2
        pads += [before, after]
        out.append((n + before + after - k) // s + 1)
    return tuple(pads), tuple(out)


def naive_pool_vjp(kind, x, gy, attrs, geom):
    """The VJP section of refq/layers/pooling.py as loops: per window, its valid positions, the
    average's share or the tap of PyTorch's scan (first valid tap, then > running max or NaN)."""
    (pt, _, pl, _), (oh, ow) = geom
    (kh, kw), (sh, sw) = attrs["pool_size"], attrs["strides"]
    n_, h, w, c = x.shape
    gx = np.zeros(x.shape)
    for n, i, j, ch in itertools.product(range(n_), range(oh), range(ow), range(c)):
        taps = [(i * sh + u - pt, j * sw + v - pl) for u in range(kh) for v in range(kw)]
        taps = [(a, b) for a, b in taps if 0 <= a < h and 0 <= b < w]
        g = float(gy[n, i, j, ch])
        if kind == "avg":
            for a, b in taps:
                gx[n, a, b, ch] += g / len(taps)
        else:
            pick, best = taps[0], -math.inf
            for a, b in taps:
                val = float(x[n, a, b, ch])
                if val > best or math.isnan(val):
                    pick, best = (a, b), val
            gx[n, pick[0], pick[1], ch] += g
    return gx


def pool_input(kind, shape, rng):
    return distinct(shape, rng) if kind == "max" else rng.standard_normal(shape)


@pytest.mark.parametrize("padding,which", PADDINGS)
@pytest.mark.parametrize("s", STRIDES)
@pytest.mark.parametrize("k", POOL_SIZES)
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_pool_vjp_every_geometry(kind, k, s, padding, which):
    """Finite differences and the naive VJP, for every pool size × stride × padding mode."""
    name = f"{kind}_pool2d"
    seed = seed_of(kind, k, s, padding, which)
    shape, attrs = pool_case(k, s, padding, which, seed)
    rng = np.random.default_rng(seed)
    x = pool_input(kind, shape, rng)
    check_vjp(name, [x], attrs=attrs, seed=seed, samples=60)
    y, gy, (gx,), gp = run_vjp(name, x, attrs, seed=seed)
    assert y.shape[1:3] == geometry(shape, attrs)[1]
    assert gp == {} and gx.shape == x.shape and gx.dtype == x.dtype
    ref = naive_pool_vjp(kind, x, gy, attrs, geometry(shape, attrs))
    np.testing.assert_allclose(gx, ref, rtol=1e-12, atol=1e-12)  # sums in another order
    # padding never receives gradient: every window hands all of gy to real positions
    np.testing.assert_allclose(gx.sum(axis=(1, 2)), gy.sum(axis=(1, 2)), rtol=1e-12, atol=1e-12)


def test_pool_vjp_larger_input():
    """A larger batch with several channels: the strided taps address N and C correctly."""
    rng = np.random.default_rng(11)
    attrs = {"pool_size": [3, 3], "strides": [2, 1], "padding": "same"}
    for kind in ("avg", "max"):
        x = pool_input(kind, (3, 9, 8, 5), rng)
        check_vjp(f"{kind}_pool2d", [x], attrs=attrs, samples=80)
        _, gy, (gx,), _ = run_vjp(f"{kind}_pool2d", x, attrs)
        ref = naive_pool_vjp(kind, x, gy, attrs, geometry(x.shape, attrs))
        np.testing.assert_allclose(gx, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_pool_vjp_reads_pads_only_when_explicit(kind, padding):
    rng = np.random.default_rng(10)
    x = pool_input(kind, (1, 6, 5, 2), rng)
    attrs = {"pool_size": [3, 2], "strides": [2, 2], "padding": padding}
    _, gy, (ref,), _ = run_vjp(f"{kind}_pool2d", x, attrs)
    _, _, (gx,), _ = run_vjp(f"{kind}_pool2d", x, dict(attrs, pads=[2, 1, 1, 1]), gy=gy)
    np.testing.assert_array_equal(gx, ref)


def test_avg_pool_vjp_divides_by_the_valid_count():
    """3×3 'same' windows on 3×3: the corner window holds 4 values, the edge ones 6, the centre 9;
    gy = 1 at one output gives each of its valid values 1/|V|, nothing for the padded taps."""
    x = np.zeros((1, 3, 3, 1))
    attrs = {"pool_size": [3, 3], "strides": [1, 1], "padding": "same"}
    for (i, j), count in {(0, 0): 4, (0, 1): 6, (1, 1): 9, (2, 2): 4}.items():
        gy = np.zeros((1, 3, 3, 1))
        gy[0, i, j, 0] = 1.0
        _, _, (gx,), _ = run_vjp("avg_pool2d", x, attrs, gy=gy)
        ref = np.zeros((3, 3))
        ref[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2] = 1.0 / count
        np.testing.assert_array_equal(gx[0, :, :, 0], ref)


def test_avg_pool_vjp_overlap_accumulates_and_uncovered_get_zero():
    """gy = 1 for 2×2 windows, stride 1, on 3×4: each position gets 1/4 per window holding it;
    with stride 2 'valid' on 5×5 the last row and column lie in no window and get 0."""
    attrs = {"pool_size": [2, 2], "strides": [1, 1]}
    _, _, (gx,), _ = run_vjp("avg_pool2d", np.zeros((1, 3, 4, 1)), attrs, gy=np.ones((1, 2, 3, 1)))
    np.testing.assert_array_equal(gx[0, :, :, 0], [[0.25, 0.5, 0.5, 0.25],
                                                   [0.5, 1.0, 1.0, 0.5],
                                                   [0.25, 0.5, 0.5, 0.25]])
    attrs = {"pool_size": [2, 2], "strides": [2, 2]}
    _, _, (gx,), _ = run_vjp("avg_pool2d", np.zeros((1, 5, 5, 1)), attrs, gy=np.ones((1, 2, 2, 1)))
    ref = np.zeros((5, 5))
    ref[:4, :4] = 0.25
    np.testing.assert_array_equal(gx[0, :, :, 0], ref)


def test_avg_pool_vjp_ignores_nan_and_inf_in_x():
    rng = np.random.default_rng(12)
    attrs = {"pool_size": [2, 3], "strides": [1, 2], "padding": "same"}
    x = rng.standard_normal((2, 5, 6, 2))
    _, gy, (ref,), _ = run_vjp("avg_pool2d", x, attrs)
    x[0, 1, 2, 0], x[1, 4, 5, 1], x[0, 0, 0, 1] = np.nan, np.inf, -np.inf
    _, _, (gx,), _ = run_vjp("avg_pool2d", x, attrs, gy=gy)
    np.testing.assert_array_equal(gx, ref)


def test_max_pool_vjp_tie_goes_to_the_first_maximum():
    """Ties, exactly: the first maximum in row-major window order (PyTorch) takes all of gy.
    Windows: 5 at (0,1) and (1,0); four 1s; 3 at (2,0) and (3,0); 7 at (3,2) and (3,3)."""
    x = np.array([[0.0, 5.0, 1.0, 1.0],
                  [5.0, 2.0, 1.0, 1.0],
                  [3.0, 1.0, 1.0, 2.0],
                  [3.0, 2.0, 7.0, 7.0]]).reshape(1, 4, 4, 1)
    gy = np.array([[10.0, 20.0], [30.0, 40.0]]).reshape(1, 2, 2, 1)
    _, _, (gx,), _ = run_vjp("max_pool2d", x, {"pool_size": [2, 2], "strides": [2, 2]}, gy=gy)
    np.testing.assert_array_equal(gx[0, :, :, 0], [[0.0, 10.0, 20.0, 0.0],
                                                   [0.0, 0.0, 0.0, 0.0],
                                                   [30.0, 0.0, 0.0, 0.0],
                                                   [0.0, 0.0, 40.0, 0.0]])


def test_max_pool_vjp_overlapping_ties_accumulate():
    """Constant input, 2×2 windows, stride 1: every window picks its top-left tap."""
    gy = np.arange(1.0, 7.0).reshape(1, 2, 3, 1)
    _, _, (gx,), _ = run_vjp("max_pool2d", np.full((1, 3, 4, 1), 2.5),
                             {"pool_size": [2, 2], "strides": [1, 1]}, gy=gy)
    ref = np.zeros((3, 4))
    ref[:2, :3] = gy[0, :, :, 0]
    np.testing.assert_array_equal(gx[0, :, :, 0], ref)
    # one shared maximum for all windows that hold it: its gradient is the sum of theirs
    x = np.zeros((1, 3, 3, 1))
    x[0, 1, 1, 0] = 1.0
    gy = np.array([[1.0, 2.0], [4.0, 8.0]]).reshape(1, 2, 2, 1)
    _, _, (gx,), _ = run_vjp("max_pool2d", x, {"pool_size": [2, 2], "strides": [1, 1]}, gy=gy)
    assert gx[0, 1, 1, 0] == 15.0 and gx.sum() == 15.0


def test_max_pool_vjp_padding_never_receives_gradient():
    """'same' padding beside values below any padding constant (−1e300, −inf): the gradient of
    each window still lands on a real position, the first valid one for all −inf windows."""
    attrs = {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"}  # 4×4 -> 2×2, pads 0,1
    gy = np.array([[1.0, 2.0], [4.0, 8.0]]).reshape(1, 2, 2, 1)
    _, _, (gx,), _ = run_vjp("max_pool2d", np.full((1, 4, 4, 1), -1e300), attrs, gy=gy)
    ref = np.zeros((4, 4))
    ref[0, 0], ref[0, 2], ref[2, 0], ref[2, 2] = 1.0, 2.0, 4.0, 8.0
    np.testing.assert_array_equal(gx[0, :, :, 0], ref)
    _, _, (gx,), _ = run_vjp("max_pool2d", np.full((1, 4, 4, 1), -np.inf), attrs, gy=gy)
    np.testing.assert_array_equal(gx[0, :, :, 0], ref)
    # explicit top/left padding [2, 0, 1, 0] on 5×5, 3×3 windows, stride 2: window (i, j)
    # covers rows 2i−2..2i and columns 2j−1..2j+1; its first valid tap is
    # (max(2i−2, 0), max(2j−1, 0)), so windows (0, j) and (1, j) share theirs
    attrs = {"pool_size": [3, 3], "strides": [2, 2], "padding": "explicit", "pads": [2, 0, 1, 0]}
    y, _, (gx,), _ = run_vjp("max_pool2d", np.full((1, 5, 5, 1), -np.inf), attrs,
                             gy=np.ones((1, 3, 2, 1)))
    assert y.shape == (1, 3, 2, 1)
    ref = np.zeros((5, 5))
    ref[0, 0], ref[0, 1], ref[2, 0], ref[2, 1] = 2.0, 2.0, 1.0, 1.0
    np.testing.assert_array_equal(gx[0, :, :, 0], ref)


def test_max_pool_vjp_nan_windows_follow_pytorch():
    """A window holding NaN sends gy to its last NaN (PyTorch's scan moves to every NaN); +inf
    wins like any maximum (first one on a tie); the gradient itself stays finite."""
    x = np.array([[np.nan, 1.0, np.inf, np.inf],
                  [np.nan, 0.0, 2.0, 3.0],
                  [4.0, np.nan, 1.0, 1.0],
                  [5.0, 6.0, 1.0, 1.0]]).reshape(1, 4, 4, 1)
    gy = np.array([[1.0, 2.0], [4.0, 8.0]]).reshape(1, 2, 2, 1)
    y, _, (gx,), _ = run_vjp("max_pool2d", x, {"pool_size": [2, 2], "strides": [2, 2]}, gy=gy)
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 1, 0, 0]) and y[0, 0, 1, 0] == np.inf
    np.testing.assert_array_equal(gx[0, :, :, 0], [[0.0, 0.0, 2.0, 0.0],
                                                   [1.0, 0.0, 0.0, 0.0],
                                                   [0.0, 4.0, 8.0, 0.0],
                                                   [0.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_pool_vjp_float32(kind, padding):
    rng = np.random.default_rng(13)
    attrs = {"pool_size": [3, 2], "strides": [2, 1], "padding": padding}
    x = pool_input(kind, (2, 7, 6, 3), rng)
    _, gy, (gx64,), _ = run_vjp(f"{kind}_pool2d", x, attrs)
    _, _, (gx32,), gp = run_vjp(f"{kind}_pool2d", x.astype(np.float32), attrs,
                                gy=gy.astype(np.float32))
    assert gx32.dtype == np.float32 and gp == {}
    np.testing.assert_allclose(gx32, gx64, rtol=1e-6, atol=1e-6)
    # a float64 cotangent still gives the input's dtype
    _, _, (gx32b,), _ = run_vjp(f"{kind}_pool2d", x.astype(np.float32), attrs, gy=gy)
    assert gx32b.dtype == np.float32


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_pool_vjp_does_not_mutate_its_arguments(kind):
    rng = np.random.default_rng(14)
    x = pool_input(kind, (1, 5, 5, 2), rng)
    attrs = {"pool_size": [2, 2], "strides": [1, 1], "padding": "same"}
    gy = rng.standard_normal((1, 5, 5, 2))
    xc, gyc = x.copy(), gy.copy()
    run_vjp(f"{kind}_pool2d", x, attrs, gy=gy)
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(gy, gyc)


# ---- global_avg_pool2d ---------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 1, 1, 1), (3, 7, 2, 2), (1, 4, 4, 6)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_gap_vjp_finite_differences(shape, keepdims):
    x = np.random.default_rng(15).standard_normal(shape)
    check_vjp("global_avg_pool2d", [x], attrs={"keepdims": keepdims}, samples=60)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gap_vjp_exact(keepdims, dtype):
    """∂L/∂x[n, h, w, c] = gy[n, c] / (H·W): exact for H·W a power of two, and x is not read."""
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 4, 2, 3)).astype(dtype)
    x[0, 1, 1, 2], x[1, 3, 0, 0] = np.nan, np.inf
    y, gy, (gx,), gp = run_vjp("global_avg_pool2d", x, {"keepdims": keepdims})
    assert y.shape == ((2, 1, 1, 3) if keepdims else (2, 3))
    assert gx.dtype == dtype and gx.shape == x.shape and gp == {}
    np.testing.assert_array_equal(gx, np.broadcast_to(gy.reshape(2, 1, 1, 3) / 8, x.shape))
    x = rng.standard_normal((1, 3, 5, 2)).astype(dtype)
    _, gy, (gx,), _ = run_vjp("global_avg_pool2d", x, {"keepdims": keepdims})
    ref = gy.astype(np.float64).reshape(1, 1, 1, 2) / 15
    np.testing.assert_allclose(gx, np.broadcast_to(ref, x.shape),
                               rtol=1e-15 if dtype == np.float64 else 1e-7)
