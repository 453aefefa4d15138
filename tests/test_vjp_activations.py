"""VJPs of the activations and softmax (refq/layers/activations.py, section VJP of its docstring).

Central finite differences (tests/vjp_check.py) on random shapes for every op and a spread of its
attribute values, away from the kinks; on each kink, the exact documented one-sided derivative,
checked against the one-sided difference quotient from the side it names; then ±inf, NaN, infinite
cotangents on flat pieces, extreme inputs of sigmoid, tanh and softmax, and float32 gradients.
"""
from __future__ import annotations

import numpy as np
import pytest

from refq.layers import REGISTRY
from refq.layers.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3, OPS
from vjp_check import away_from_kinks, check_vjp

DTYPES = [np.float32, np.float64]
K2, K3 = HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3


def hard_sigmoid_corners(alpha, beta):
    """The x where alpha·x + beta is 0 or 1 (none when alpha = 0)."""
    return [] if alpha == 0 else [-beta / alpha, (1 - beta) / alpha]


# (op, attrs, kinks): every elementwise op, with a spread of the values its attributes take
ELEMENTWISE = [
    ("relu", {}, [0.0]),
    ("relu6", {}, [0.0, 6.0]),
    ("clip", {"min": -1.5, "max": 2.25}, [-1.5, 2.25]),
    ("clip", {"min": 0.0, "max": 6.0}, [0.0, 6.0]),
    ("clip", {"min": -3.0, "max": -1.0}, [-3.0, -1.0]),
    ("clip", {"min": 0.1, "max": 0.7}, [0.1, 0.7]),
    ("clip", {"min": 0.5, "max": 0.5}, [0.5]),
    ("clip", {"min": -1e3, "max": 1e3}, [-1e3, 1e3]),
    ("leaky_relu", {}, [0.0]),
    ("leaky_relu", {"alpha": 0.01}, [0.0]),
    ("leaky_relu", {"alpha": 0.0}, [0.0]),
    ("leaky_relu", {"alpha": 1.0}, [0.0]),
    ("leaky_relu", {"alpha": -0.5}, [0.0]),
    ("leaky_relu", {"alpha": 2.5}, [0.0]),
    ("sigmoid", {}, []),
    ("tanh", {}, []),
    ("hard_sigmoid", {}, [-3.0, 3.0]),
    ("hard_sigmoid", dict(K2), [-2.5, 2.5]),
    ("hard_sigmoid", {"alpha": -0.4, "beta": 0.3}, hard_sigmoid_corners(-0.4, 0.3)),
    ("hard_sigmoid", {"alpha": 2.0, "beta": -1.0}, hard_sigmoid_corners(2.0, -1.0)),
    ("hard_sigmoid", {"alpha": 0.2, "beta": 0.0}, hard_sigmoid_corners(0.2, 0.0)),
    ("hard_sigmoid", {"alpha": 0.0, "beta": 0.5}, []),
    ("hard_sigmoid", {"alpha": 0.0, "beta": 1.5}, []),
    ("hard_swish", {}, [-3.0, 3.0]),
]
ELEMENTWISE_IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(ELEMENTWISE)]

# softmax: every non-batch axis of ranks 2 to 4, counted from either end
SOFTMAX_AXES = [(rank, axis) for rank in (2, 3, 4) for a in range(1, rank)
                for axis in (a, a - rank)]


def random_shape(rng, rank):
    return (int(rng.integers(1, 4)),) + tuple(int(d) for d in rng.integers(1, 6, size=rank - 1))


def spread(rng, shape, kinks, width=3.0):
    """Uniform over [lowest kink − width, highest kink + width] (±2·width without kinks), every
    entry moved off the kinks; the first entries pinned one on each side of each kink."""
    lo, hi = (min(kinks) - width, max(kinks) + width) if kinks else (-2 * width, 2 * width)
    x = rng.uniform(lo, hi, size=shape).reshape(-1)
    sides = [k + d for k in kinks for d in (-0.5, 0.5)][: x.size]
    x[: len(sides)] = sides
    return away_from_kinks(x.reshape(shape), kinks)


def vjp(name, x, gy, attrs=None):
    op = REGISTRY[name]
    a = op.normalise_attrs(dict(attrs or {}), name)
    y = op.forward([x], {}, a)
    g_in, g_par = op.vjp([x], {}, a, y, gy)
    assert g_par == {} and len(g_in) == 1
    return g_in[0]


def forward(name, x, attrs=None):
    op = REGISTRY[name]
    return op.forward([x], {}, op.normalise_attrs(dict(attrs or {}), name))


# ---- the set of ops ---------------------------------------------------------------------------
def test_every_activation_has_a_vjp_and_is_covered():
    names = {op.name for op in OPS}
    assert all(op.vjp is not None for op in OPS)
    # round (zero VJP, no NaN rule of its own) is covered by tests/test_vjp_onnx_ops.py
    assert names == {n for n, _, _ in ELEMENTWISE} | {"softmax", "round"}


# ---- finite differences -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name,attrs,kinks", ELEMENTWISE, ids=ELEMENTWISE_IDS)
def test_elementwise_vjp_matches_finite_differences(name, attrs, kinks, seed):
    rng = np.random.default_rng(seed * 101 + len(name))
    x = spread(rng, random_shape(rng, int(rng.integers(2, 5))), kinks)
    check_vjp(name, [x], attrs=attrs, seed=seed)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("rank,axis", SOFTMAX_AXES)
def test_softmax_vjp_matches_finite_differences(rank, axis, seed):
    rng = np.random.default_rng(seed * 31 + rank * 7 + axis)
    x = rng.standard_normal(random_shape(rng, rank)) * 3
    check_vjp("softmax", [x], attrs={"axis": axis}, seed=seed, samples=60)


def test_softmax_vjp_is_along_its_axis_only():
    """Lanes are independent: the gradient of one lane is the VJP of that lane alone, and differs
    from the VJP along another axis (a wrong axis would not pass)."""
    rng = np.random.default_rng(5)
    x, gy = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    g = vjp("softmax", x, gy, {"axis": 1})
    for n in range(2):
        for k in range(4):
            lane = vjp("softmax", x[n:n + 1, :, k], gy[n:n + 1, :, k], {"axis": 1})
            np.testing.assert_allclose(g[n:n + 1, :, k], lane, rtol=1e-14, atol=1e-15)
    assert not np.allclose(g, vjp("softmax", x, gy, {"axis": 2}))
    np.testing.assert_allclose(g.sum(axis=1), 0, atol=1e-14)  # Σ_i ∂/∂x_i of a shift-invariant map


# ---- kinks: the exact documented one-sided derivative -----------------------------------------
# (op, attrs, kink, derivative there, side it is taken from: −1 left, +1 right)
KINKS = [
    ("relu", {}, 0.0, 0.0, -1),
    ("relu6", {}, 0.0, 0.0, -1),
    ("relu6", {}, 6.0, 0.0, +1),
    ("clip", {"min": -1.5, "max": 2.25}, -1.5, 0.0, -1),
    ("clip", {"min": -1.5, "max": 2.25}, 2.25, 0.0, +1),
    ("clip", {"min": 0.1, "max": 0.7}, 0.1, 0.0, -1),
    ("clip", {"min": 0.1, "max": 0.7}, 0.7, 0.0, +1),
    ("clip", {"min": 0.5, "max": 0.5}, 0.5, 0.0, -1),
    ("clip", {"min": 0.5, "max": 0.5}, 0.5, 0.0, +1),
    ("leaky_relu", {}, 0.0, 0.3, -1),
    ("leaky_relu", {"alpha": 0.01}, 0.0, 0.01, -1),
    ("leaky_relu", {"alpha": -0.5}, 0.0, -0.5, -1),
    ("leaky_relu", {"alpha": 0.0}, 0.0, 0.0, -1),
    ("hard_sigmoid", {}, -3.0, 0.0, -1),
    ("hard_sigmoid", {}, 3.0, 0.0, +1),
    ("hard_sigmoid", dict(K2), -2.5, 0.0, -1),
    ("hard_sigmoid", dict(K2), 2.5, 0.0, +1),
    ("hard_sigmoid", {"alpha": 0.2, "beta": 0.0}, 0.0, 0.0, -1),
    ("hard_sigmoid", {"alpha": 0.2, "beta": 0.0}, 5.0, 0.0, +1),
    ("hard_sigmoid", {"alpha": -0.25, "beta": 0.5}, 2.0, 0.0, +1),
    ("hard_sigmoid", {"alpha": -0.25, "beta": 0.5}, -2.0, 0.0, -1),
    ("hard_swish", {}, -3.0, -0.5, +1),
    ("hard_swish", {}, 3.0, 1.5, -1),
]
KINK_IDS = [f"{n}-{k:g}-{'left' if s < 0 else 'right'}-{i}" for i, (n, _, k, _, s) in
            enumerate(KINKS)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,attrs,kink,slope,side", KINKS, ids=KINK_IDS)
def test_exact_gradient_on_each_kink(name, attrs, kink, slope, side, dtype):
    t = dtype
    x = np.full((2, 3), t(kink))
    if kink == 0:
        x[1] = -0.0  # the negative zero is the same kink
    gy = np.random.default_rng(1).standard_normal((2, 3)).astype(t)
    g = vjp(name, x, gy, attrs)
    assert g.dtype == t
    np.testing.assert_array_equal(g, gy * t(slope))


@pytest.mark.parametrize("name,attrs,kink,slope,side", KINKS, ids=KINK_IDS)
def test_kink_derivative_is_the_one_sided_difference_quotient(name, attrs, kink, slope, side):
    """The documented value is the derivative from the side named, and not the other one (where
    the two differ)."""
    x0 = np.array([[kink]])
    f0 = forward(name, x0, attrs)[0, 0]
    quotient = {s: (forward(name, x0 + s * 1e-7, attrs)[0, 0] - f0) / (s * 1e-7) for s in (-1, 1)}
    assert quotient[side] == pytest.approx(slope, abs=1e-6)
    other = quotient[-side]
    if abs(other - slope) > 1e-3:
        assert vjp(name, x0, np.ones((1, 1)), attrs)[0, 0] != pytest.approx(other, abs=1e-6)


# just off each kink: (k, toward) is the neighbour of k toward `toward` in the dtype (one ulp)
NEAR_KINKS = [
    ("relu", {}, [(0, 1), (0, -1)], [1, 0]),
    ("relu6", {}, [(0, 1), (6, 0), (0, -1), (6, 7)], [1, 1, 0, 0]),
    ("clip", {"min": -1.5, "max": 2.25}, [(-1.5, 0), (2.25, 0), (-1.5, -2), (2.25, 3)],
     [1, 1, 0, 0]),
    ("leaky_relu", {}, [(0, 1), (0, -1)], [1, 0.3]),
    ("hard_sigmoid", {}, [-2.9999, 2.9999, -3.0001, 3.0001], [1 / 6, 1 / 6, 0, 0]),
    ("hard_sigmoid", dict(K2), [-2.4999, 2.4999, -2.5001, 2.5001], [0.2, 0.2, 0, 0]),
    ("hard_swish", {}, [(-3, -4), (3, 4)], [0, 1]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,attrs,xs,slopes", NEAR_KINKS, ids=[c[0] for c in NEAR_KINKS])
def test_gradient_just_off_each_kink(name, attrs, xs, slopes, dtype):
    t = dtype
    x = np.array([[np.nextafter(t(v[0]), t(v[1])) if isinstance(v, tuple) else t(v) for v in xs]])
    gy = np.full(x.shape, t(3))
    np.testing.assert_array_equal(vjp(name, x, gy, attrs), gy * np.array([slopes], t))


def test_hard_swish_gradient_inside_is_x_over_3_plus_half():
    x = np.array([[-2.0, -1.5, 0.0, 1.5, 2.0]])
    np.testing.assert_allclose(vjp("hard_swish", x, np.ones_like(x)),
                               [[-1 / 6, 0.0, 0.5, 1.0, 7 / 6]], rtol=1e-15, atol=1e-16)


# ---- special values ---------------------------------------------------------------------------
# (op, attrs, derivative at +inf, at −inf): the limits
AT_INFINITY = [
    ("relu", {}, 1.0, 0.0),
    ("relu6", {}, 0.0, 0.0),
    ("clip", {"min": -1.5, "max": 2.25}, 0.0, 0.0),
    ("leaky_relu", {}, 1.0, 0.3),
    ("leaky_relu", {"alpha": 0.0}, 1.0, 0.0),
    ("sigmoid", {}, 0.0, 0.0),
    ("tanh", {}, 0.0, 0.0),
    ("hard_sigmoid", {}, 0.0, 0.0),
    ("hard_sigmoid", {"alpha": -0.4, "beta": 0.3}, 0.0, 0.0),
    ("hard_sigmoid", {"alpha": 0.0, "beta": 0.5}, 0.0, 0.0),
    ("hard_swish", {}, 1.0, 0.0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,attrs,at_pos,at_neg", AT_INFINITY,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(AT_INFINITY)])
def test_infinite_input_gets_the_limit_derivative(name, attrs, at_pos, at_neg, dtype):
    t = dtype
    x = np.array([[np.inf, -np.inf]], t)
    gy = np.array([[2.0, -3.0]], t)
    with np.errstate(invalid="ignore"):  # some forwards are NaN at ±inf (hard_swish(−inf))
        g = vjp(name, x, gy, attrs)
    np.testing.assert_array_equal(g, [[t(2) * t(at_pos), t(-3) * t(at_neg)]])


@pytest.mark.parametrize("name,attrs,kinks", ELEMENTWISE, ids=ELEMENTWISE_IDS)
def test_nan_input_gives_nan_gradient(name, attrs, kinks):
    x = np.array([[np.nan, 0.25, -4.0, 8.0, np.nan]])
    g = vjp(name, x, np.ones_like(x), attrs)
    assert np.isnan(g[0, [0, 4]]).all()
    assert np.isfinite(g[0, 1:4]).all()


def test_softmax_nan_or_pos_inf_spoils_only_its_lane():
    x = np.array([[0.5, np.nan, -1.0], [1.0, 2.0, 3.0], [0.0, np.inf, 1.0]])
    gy = np.array([[1.0, -2.0, 0.5], [0.3, -0.7, 1.1], [2.0, 1.0, -1.0]])
    with np.errstate(invalid="ignore"):
        g = vjp("softmax", x, gy)
    assert np.isnan(g[0]).all() and np.isnan(g[2]).all()
    np.testing.assert_allclose(g[1:2], vjp("softmax", x[1:2], gy[1:2]), rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_neg_inf_entries_get_zero(dtype):
    """A −inf entry (a mask) has y = 0 and gradient 0; the rest is the VJP of the finite entries."""
    t = dtype
    x = np.array([[0.5, -np.inf, -1.0, 2.0, -np.inf]], t)
    gy = np.array([[1.0, 5.0, -0.5, 0.25, -3.0]], t)
    g = vjp("softmax", x, gy)
    assert g.dtype == t and g[0, 1] == 0 and g[0, 4] == 0
    finite = [0, 2, 3]
    np.testing.assert_array_equal(g[:, finite], vjp("softmax", x[:, finite], gy[:, finite]))


# (op, attrs, x on a flat piece)
FLAT = [
    ("relu", {}, [-1.0, 0.0, -np.inf]),
    ("relu6", {}, [-1.0, 6.0, 7.0]),
    ("clip", {"min": -1.5, "max": 2.25}, [-2.0, 2.25, 3.0]),
    ("clip", {"min": 0.5, "max": 0.5}, [0.0, 0.5, 1.0]),
    ("leaky_relu", {"alpha": 0.0}, [-1.0, 0.0, -np.inf]),
    ("hard_sigmoid", {}, [-4.0, 3.0, 4.0]),
    ("hard_sigmoid", {"alpha": 0.0, "beta": 0.5}, [-1.0, 0.0, 1.0]),
    ("hard_swish", {}, [-4.0, -3.5, -np.inf]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,attrs,xs", FLAT, ids=[f"{c[0]}-{i}" for i, c in enumerate(FLAT)])
def test_flat_piece_gives_exact_zero_for_any_cotangent(name, attrs, xs, dtype):
    t = dtype
    x = np.array([xs], t)
    with np.errstate(invalid="ignore"):
        g = vjp(name, x, np.array([[np.inf, -np.inf, np.nan]], t), attrs)
    np.testing.assert_array_equal(g, np.zeros_like(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_tanh_gradients_at_extremes(dtype):
    t = dtype
    big = np.finfo(t).max
    x = np.array([[-big, -1000.0, -30.0, -0.0, 0.0, 30.0, 1000.0, big]], t)
    gy = np.ones_like(x)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        gs, gt = vjp("sigmoid", x, gy), vjp("tanh", x, gy)
    assert gs.dtype == t and gt.dtype == t
    x64 = x.astype(np.float64)
    s = np.exp(-np.abs(x64)) / (1 + np.exp(-np.abs(x64))) ** 2  # σ(x)·σ(−x), no cancellation
    eps = np.finfo(t).eps
    np.testing.assert_allclose(gs, s, rtol=4 * eps, atol=eps)
    assert gs[0, 3] == gs[0, 4] == t(0.25)
    assert gs[0, 0] == gs[0, 1] == gs[0, -1] == gs[0, -2] == 0
    assert gt[0, 3] == gt[0, 4] == 1 and (gt[0, [0, 1, 2, 5, 6, 7]] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_gradient_near_saturation_keeps_relative_accuracy(dtype):
    """(1 − y)(1 + y) gives 1 − y², small here, to a few ulps of itself (1 − y·y would not: the
    rounding of y·y is an ulp of 1); what is left is the rounding of y itself."""
    t = dtype
    x = np.array([[0.5, 2.0, 5.0, -5.0, 7.0]], t)
    g = vjp("tanh", x, np.ones_like(x))
    y = np.tanh(x).astype(np.float64)
    np.testing.assert_allclose(g, (1 - y) * (1 + y), rtol=4 * np.finfo(t).eps, atol=0)
    exact = 1 / np.cosh(x.astype(np.float64)) ** 2
    np.testing.assert_allclose(g, exact, rtol=5e-2 if t == np.float32 else 1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_gradient_at_large_inputs(dtype):
    """Shifting a lane changes nothing (x holds quarters, so x + shift is exact): no overflow
    where exp(x) alone would overflow or underflow."""
    t = dtype
    rng = np.random.default_rng(3)
    x = (rng.integers(-40, 40, size=(3, 6)) / 4).astype(t)
    gy = rng.standard_normal((3, 6)).astype(t)
    g = vjp("softmax", x, gy)
    assert np.isfinite(g).all() and np.abs(g).max() > 1e-3
    for shift in (100.0, -100.0, 1e4, -1e4, 1e6, -1e6):
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            np.testing.assert_array_equal(vjp("softmax", x + t(shift), gy), g)
    wide = np.array([[-1e30, 0.0, 1e30], [1e4, -1e4, 1e4]], t)  # one-hot and a tie
    g = vjp("softmax", wide, np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], t))
    np.testing.assert_array_equal(g, np.array([[0, 0, 0], [-0.5, 0, 0.5]], t))


# ---- dtypes and the inputs --------------------------------------------------------------------
CASES_ALL = [(n, a, k) for n, a, k in ELEMENTWISE] + [("softmax", {"axis": 1}, []),
                                                      ("softmax", {"axis": -1}, [])]


@pytest.mark.parametrize("name,attrs,kinks", CASES_ALL,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES_ALL)])
def test_float32_inputs_give_float32_gradients(name, attrs, kinks):
    rng = np.random.default_rng(7)
    x64 = spread(rng, (2, 4, 3), kinks)
    x32 = x64.astype(np.float32)
    gy32 = rng.standard_normal(x64.shape).astype(np.float32)
    g32 = vjp(name, x32, gy32, attrs)
    assert g32.dtype == np.float32
    assert vjp(name, x32, gy32.astype(np.float64), attrs).dtype == np.float32
    g64 = vjp(name, x32.astype(np.float64), gy32.astype(np.float64), attrs)
    assert g64.dtype == np.float64
    np.testing.assert_allclose(g32, g64, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name,attrs,kinks", CASES_ALL,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES_ALL)])
def test_vjp_leaves_its_arguments_unchanged(name, attrs, kinks):
    rng = np.random.default_rng(9)
    x = spread(rng, (2, 5), kinks)
    x[0, 0] = np.nan
    gy = rng.standard_normal(x.shape)
    op = REGISTRY[name]
    a = op.normalise_attrs(dict(attrs), name)
    with np.errstate(invalid="ignore"):
        y = op.forward([x], {}, a)
    before = [x.copy(), y.copy(), gy.copy()]
    op.vjp([x], {}, a, y, gy)
    for arr, old in zip((x, y, gy), before):
        np.testing.assert_array_equal(arr, old)
