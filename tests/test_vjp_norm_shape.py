"""VJPs of batch_norm (inference op and training-mode functions), add, multiply and the shape ops.

Each VJP is compared with central finite differences (tests/vjp_check.py) over random shapes and
every attribute combination, and with hand-worked values where the result is exact. None of these
ops has a kink (batch_norm is smooth where defined, the rest are linear or polynomial), so the
special points tested are the edges: a variance of 0, a zero or infinite factor, NaN in padding.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from refq.errors import GraphError, ParamError, ShapeError
from refq.layers import REGISTRY, elementwise, normalization, shape_ops
from refq.layers.normalization import batch_norm_train, batch_norm_train_vjp

from vjp_check import check_vjp, numeric_grad_entries

WORST = []  # largest relative error of every finite-difference check, printed at the end (-s)


@pytest.fixture(scope="module", autouse=True)
def _report_worst():
    yield
    if WORST:
        print(f"\nworst relative error: {max(WORST):.3g} over {len(WORST)} checks")


def check(name, inputs, params=None, attrs=None, **kw):
    worst = check_vjp(name, inputs, params, attrs, **kw)
    WORST.append(worst)
    return worst


def run_vjp(name, inputs, params=None, attrs=None, gy=None, seed=0):
    """(y, g_inputs, g_params) of one op at the given arrays (their dtypes kept)."""
    op = REGISTRY[name]
    attrs = op.normalise_attrs(dict(attrs or {}), name)
    params = dict(params or {})
    y = op.forward(list(inputs), params, attrs)
    if gy is None:
        gy = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    g_in, g_par = op.vjp(list(inputs), params, attrs, y, gy)
    return y, g_in, g_par


def bn_params(c, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 2.0, c) * rng.choice([-1.0, 1.0], c)
    gamma[0] = 0.0 if c > 2 else gamma[0]   # a dead channel: gradients through gamma still flow
    return {"gamma": gamma.astype(dtype), "beta": rng.normal(size=c).astype(dtype),
            "mean": rng.normal(size=c).astype(dtype),
            "variance": rng.uniform(0.1, 3.0, c).astype(dtype)}


def test_every_op_of_these_modules_has_a_vjp():
    for module in (normalization, elementwise, shape_ops):
        for op in module.OPS:
            assert REGISTRY[op.name].vjp is not None, op.name


# ---- batch_norm (inference) -------------------------------------------------------------------
BN_CASES = [  # shape, axis: every non-batch axis of ranks 2 to 4, in both its signed forms
    ((3, 4), -1), ((3, 4), 1),
    ((2, 3, 5), -1), ((2, 3, 5), 2), ((2, 3, 5), 1), ((2, 3, 5), -2),
    ((2, 3, 2, 4), -1), ((2, 3, 2, 4), 3), ((2, 3, 2, 4), 1), ((2, 3, 2, 4), -3),
    ((2, 3, 2, 4), 2), ((2, 3, 2, 4), -2),
    ((0, 2, 3), -1),   # an empty batch: every parameter gradient is 0
]


@pytest.mark.parametrize("eps", [1e-3, 1e-5, 0.0, 0.5])
@pytest.mark.parametrize("shape,axis", BN_CASES)
def test_batch_norm_vjp_matches_finite_differences(shape, axis, eps):
    c = shape[axis]
    rng = np.random.default_rng(sum(shape) + axis)
    x = rng.standard_normal(shape) * 3
    check("batch_norm", [x], bn_params(c, seed=c + axis), {"axis": axis, "epsilon": eps})


def test_batch_norm_vjp_empty_batch_is_zero():
    x = np.zeros((0, 2, 3))
    _, (g_x,), g_par = run_vjp("batch_norm", [x], bn_params(3, 1), {"epsilon": 1e-3})
    assert g_x.shape == (0, 2, 3)
    for k, g in g_par.items():
        np.testing.assert_array_equal(g, np.zeros(3), err_msg=k)


def test_batch_norm_vjp_hand_worked():
    # r = 1/sqrt(3 + 1) = 1/2, s = gamma·r = 2; x − mean = [0, 2]; gy = [2, −1]
    p = {"gamma": np.array([4.0]), "beta": np.array([7.0]), "mean": np.array([1.0]),
         "variance": np.array([3.0])}
    x = np.array([[1.0], [3.0]])
    gy = np.array([[2.0], [-1.0]])
    _, (g_x,), g = run_vjp("batch_norm", [x], p, {"epsilon": 1.0}, gy=gy)
    np.testing.assert_array_equal(g_x, [[4.0], [-2.0]])        # gy·s
    np.testing.assert_array_equal(g["beta"], [1.0])            # Σ gy
    np.testing.assert_array_equal(g["gamma"], [-1.0])          # r·Σ gy·(x − mean) = ½·(−2)
    np.testing.assert_array_equal(g["mean"], [-2.0])           # −s·Σ gy
    np.testing.assert_array_equal(g["variance"], [0.5])        # −½·4·(1/8)·(−2)


def test_batch_norm_vjp_at_zero_variance():
    """variance = 0 (its domain's edge) takes the derivative of the definition, which extends
    smoothly below 0 (down to −epsilon): −½·gamma·epsilon^(−3/2)·Σ gy·(x − mean)."""
    eps = 0.0625   # sqrt(eps) = 1/4: r = 4, r³ = 64 exactly
    p = {"gamma": np.array([2.0, 1.0]), "beta": np.zeros(2), "mean": np.array([1.0, 0.0]),
         "variance": np.array([0.0, 1.0])}
    x = np.array([[2.0, 0.5], [0.0, 1.5], [3.0, -1.0]])
    gy = np.array([[1.0, 1.0], [2.0, -1.0], [-1.0, 0.5]])
    _, _, g = run_vjp("batch_norm", [x], p, {"epsilon": eps}, gy=gy)
    # channel 0: Σ gy·(x − mean) = 1·1 + 2·(−1) + (−1)·2 = −3
    assert g["variance"][0] == -0.5 * 2.0 * 64.0 * -3.0
    assert g["gamma"][0] == 4.0 * -3.0
    check("batch_norm", [x], p, {"epsilon": eps})
    p["variance"] = np.array([0.0, 0.0])
    check("batch_norm", [x], p, {"epsilon": 0.01})


def test_batch_norm_vjp_non_finite_x():
    """A non-finite x reaches only ∂L/∂gamma and ∂L/∂variance of its own channel."""
    x = np.random.default_rng(0).standard_normal((4, 3))
    p = bn_params(3, 2)
    _, (g_x0,), g0 = run_vjp("batch_norm", [x], p, {"epsilon": 1e-3})
    for bad in (np.inf, -np.inf, np.nan):
        xb = x.copy()
        xb[1, 2] = bad
        _, (g_x,), g = run_vjp("batch_norm", [xb], p, {"epsilon": 1e-3})
        np.testing.assert_array_equal(g_x, g_x0)
        for k in ("beta", "mean"):
            np.testing.assert_array_equal(g[k], g0[k])
        for k in ("gamma", "variance"):
            np.testing.assert_array_equal(g[k][:2], g0[k][:2])
            assert not np.isfinite(g[k][2]), (bad, k)


@pytest.mark.parametrize("shape,axis", [((2, 3, 4), -1), ((2, 3, 2, 4), 1)])
def test_batch_norm_vjp_float32(shape, axis):
    c = shape[axis]
    x = np.random.default_rng(3).standard_normal(shape)
    p = bn_params(c, 4)
    gy = np.random.default_rng(5).standard_normal(shape)
    _, (g_x64,), g64 = run_vjp("batch_norm", [x], p, {"axis": axis, "epsilon": 1e-3}, gy=gy)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    _, (g_x32,), g32 = run_vjp("batch_norm", [x.astype(np.float32)], p32,
                               {"axis": axis, "epsilon": 1e-3},
                               gy=gy.astype(np.float32))
    assert g_x32.dtype == np.float32
    np.testing.assert_allclose(g_x32, g_x64, rtol=1e-5, atol=1e-5)
    for k in p:
        assert g32[k].dtype == np.float32 and g32[k].shape == (c,)
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-4, atol=1e-4)


def test_batch_norm_vjp_refuses_a_nonpositive_variance():
    p = bn_params(2, 0)
    p["variance"] = np.array([1.0, 0.0])
    op = REGISTRY["batch_norm"]
    x = np.ones((2, 2))
    with pytest.raises(ParamError, match="variance"):
        op.vjp([x], p, {"epsilon": 0.0, "axis": -1}, x, x)


# ---- batch_norm, training mode -----------------------------------------------------------------
def check_train_vjp(x, params, attrs, seed=0, samples=40, tol=1e-6):
    """check_vjp for batch_norm_train's y: ∂L/∂x, ∂L/∂gamma, ∂L/∂beta by central differences."""
    x = np.array(x, dtype=np.float64)
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    rng = np.random.default_rng(seed)
    y, _ = batch_norm_train(x, params, attrs, 0.1)
    gy = rng.standard_normal(y.shape)
    g_x, g_par = batch_norm_train_vjp(x, params, attrs, y, gy)
    assert set(g_par) == {"gamma", "beta"}
    loss = lambda: float(np.sum(gy * batch_norm_train(x, params, attrs, 0.1)[0]))  # noqa: E731
    worst = 0.0
    for what, a, g in [("x", x, g_x), ("gamma", params["gamma"], g_par["gamma"]),
                       ("beta", params["beta"], g_par["beta"])]:
        assert g.shape == a.shape and g.dtype == a.dtype, what
        idx = np.arange(a.size) if a.size <= samples else \
            np.sort(rng.choice(a.size, samples, replace=False))
        num = numeric_grad_entries(loss, a, idx)
        ana = g.reshape(-1)[idx]
        err = np.abs(ana - num) / np.maximum(1.0, np.maximum(np.abs(num), np.abs(ana)))
        assert err.max() <= tol, (what, err.max())
        worst = max(worst, float(err.max()))
    WORST.append(worst)
    return g_x, gy


TRAIN_CASES = [((5, 3), -1), ((5, 3), 1), ((2, 3, 4), -1), ((2, 3, 4), 1), ((2, 3, 4), -2),
               ((2, 3, 2, 4), -1), ((2, 3, 2, 4), 3), ((2, 3, 2, 4), 1), ((2, 3, 2, 4), -3),
               ((2, 3, 2, 4), 2), ((2, 3, 2, 4), -2), ((1, 2, 3), -1)]   # batch of 1: M = 2


@pytest.mark.parametrize("eps", [1e-3, 1e-5, 0.0, 0.5])
@pytest.mark.parametrize("shape,axis", TRAIN_CASES)
def test_batch_norm_train_vjp_matches_finite_differences(shape, axis, eps):
    c = shape[axis]
    x = np.random.default_rng(sum(shape) - axis).standard_normal(shape) * 2 + 1
    attrs = {"axis": axis, "epsilon": eps}
    g_x, gy = check_train_vjp(x, bn_params(c, seed=c), attrs)
    # the gradient is orthogonal to a shift and to a scaling of each channel of x
    ax = axis % len(shape)
    others = tuple(d for d in range(len(shape)) if d != ax)
    np.testing.assert_allclose(g_x.sum(axis=others), 0, atol=1e-12)
    if eps == 0.0:
        np.testing.assert_allclose((g_x * x).sum(axis=others), 0, atol=1e-11)


def test_batch_norm_train_vjp_constant_channel():
    """A channel constant over the batch (σ² = 0, x̂ = 0) with epsilon > 0: smooth there,
    ∂L/∂x = gamma·epsilon^(−1/2)·(gy − mean(gy)) and ∂L/∂gamma = 0."""
    x = np.random.default_rng(1).standard_normal((4, 2))
    x[:, 1] = 2.5
    p = bn_params(2, 3)
    eps = 0.25
    g_x, gy = check_train_vjp(x, p, {"axis": -1, "epsilon": eps})
    np.testing.assert_allclose(g_x[:, 1], p["gamma"][1] * 2 * (gy[:, 1] - gy[:, 1].mean()),
                               rtol=1e-14, atol=1e-15)
    _, g = batch_norm_train_vjp(x, p, {"axis": -1, "epsilon": eps}, None, gy)
    assert g["gamma"][1] == 0.0


def test_batch_norm_train_running_statistics_by_hand():
    # channel 0: [1, 2, 3, 4]: μ = 2.5, σ² = 1.25 (biased), 5/3 (unbiased)
    # channel 1: [0, 0, 0, 2]: μ = 0.5, σ² = 0.75 (biased), 1 (unbiased)
    x = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 2.0]])
    p = {"gamma": np.array([2.0, -1.0]), "beta": np.array([0.5, 1.0]),
         "mean": np.array([1.0, -1.0]), "variance": np.array([2.0, 0.5])}
    before = {k: v.copy() for k, v in p.items()}
    y, new = batch_norm_train(x, p, {"axis": -1, "epsilon": 0.0}, 0.25)
    for k in p:
        np.testing.assert_array_equal(p[k], before[k])   # arguments untouched
    np.testing.assert_array_equal(new["gamma"], p["gamma"])
    np.testing.assert_array_equal(new["beta"], p["beta"])
    assert new["gamma"] is not p["gamma"] and new["beta"] is not p["beta"]
    # mean: 0.75·[1, −1] + 0.25·[2.5, 0.5];  variance: 0.75·[2, 0.5] + 0.25·[5/3, 1]
    np.testing.assert_allclose(new["mean"], [1.375, -0.625], rtol=1e-15)
    np.testing.assert_allclose(new["variance"], [1.5 + 5 / 12, 0.625], rtol=1e-15)
    expect = np.empty_like(x)
    expect[:, 0] = 2.0 * (x[:, 0] - 2.5) / math.sqrt(1.25) + 0.5
    expect[:, 1] = -1.0 * (x[:, 1] - 0.5) / math.sqrt(0.75) + 1.0
    np.testing.assert_allclose(y, expect, rtol=1e-14, atol=1e-14)
    # momentum 0 keeps the running statistics, 1 takes the batch's (variance unbiased)
    _, keep = batch_norm_train(x, p, {"axis": -1, "epsilon": 0.0}, 0.0)
    np.testing.assert_array_equal(keep["mean"], p["mean"])
    np.testing.assert_array_equal(keep["variance"], p["variance"])
    _, take = batch_norm_train(x, p, {"axis": -1, "epsilon": 0.0}, 1)
    np.testing.assert_allclose(take["mean"], [2.5, 0.5], rtol=1e-15)
    np.testing.assert_allclose(take["variance"], [5 / 3, 1.0], rtol=1e-15)


def test_batch_norm_train_channel_axis_and_inference_agreement():
    """Channels on axis 1 give the transposed numbers of channels last; y equals the inference
    op with the batch's mean and biased variance as its statistics."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4, 5)) * 3 + 1
    p = bn_params(5, 8)
    attrs = {"axis": -1, "epsilon": 1e-3}
    y, new = batch_norm_train(x, p, attrs, 0.1)
    xt = np.moveaxis(x, -1, 1).copy()
    yt, new_t = batch_norm_train(xt, p, {"axis": 1, "epsilon": 1e-3}, 0.1)
    np.testing.assert_allclose(np.moveaxis(yt, 1, -1), y, rtol=1e-12, atol=1e-12)
    for k in p:
        np.testing.assert_allclose(new_t[k], new[k], rtol=1e-12)
    mu = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(new["mean"], 0.9 * p["mean"] + 0.1 * mu, rtol=1e-13)
    np.testing.assert_allclose(new["variance"], 0.9 * p["variance"] + 0.1 * var * 24 / 23,
                               rtol=1e-13)
    inference = dict(p, mean=mu, variance=var)
    y_inf = REGISTRY["batch_norm"].forward([x], inference, attrs)
    np.testing.assert_allclose(y, y_inf, rtol=1e-12, atol=1e-12)


def test_batch_norm_train_errors():
    p = bn_params(3, 0)
    with pytest.raises(ShapeError, match="at least 2"):
        batch_norm_train(np.ones((1, 3)), p, {"axis": -1, "epsilon": 1e-3}, 0.1)
    with pytest.raises(ShapeError, match="at least 2"):
        batch_norm_train_vjp(np.ones((1, 3)), p, {"axis": -1, "epsilon": 1e-3}, None,
                             np.ones((1, 3)))
    with pytest.raises(ShapeError, match="axis"):
        batch_norm_train(np.ones((2, 3)), p, {"axis": 0, "epsilon": 1e-3}, 0.1)
    x = np.random.default_rng(0).standard_normal((4, 3))
    x[:, 1] = 5.0
    with pytest.raises(ParamError, match="channel 1"):
        batch_norm_train(x, p, {"axis": -1, "epsilon": 0.0}, 0.1)
    with pytest.raises(ParamError, match="channel 1"):
        batch_norm_train_vjp(x, p, {"axis": -1, "epsilon": 0.0}, None, x)
    batch_norm_train(x, p, {"axis": -1, "epsilon": 1e-3}, 0.1)   # epsilon > 0: defined
    for momentum in (-0.1, 1.5, math.nan, "0.1"):
        with pytest.raises(GraphError, match="momentum"):
            batch_norm_train(x, p, {"axis": -1, "epsilon": 1e-3}, momentum)


def test_batch_norm_train_non_finite_x_poisons_its_channel():
    x = np.random.default_rng(2).standard_normal((3, 2, 3))
    p = bn_params(3, 1)
    attrs = {"axis": -1, "epsilon": 1e-3}
    for bad in (np.nan, np.inf):
        xb = x.copy()
        xb[1, 0, 2] = bad
        with np.errstate(invalid="ignore"):   # inf − inf
            y, new = batch_norm_train(xb, p, attrs, 0.1)
            g_x, g = batch_norm_train_vjp(xb, p, attrs, y, np.ones_like(y))
        assert np.all(np.isnan(y[..., 2])) and np.all(np.isnan(g_x[..., 2]))
        assert np.all(np.isfinite(y[..., :2])) and np.all(np.isfinite(g_x[..., :2]))
        assert np.isnan(g["gamma"][2]) and np.all(np.isfinite(g["gamma"][:2]))
        assert np.isfinite(g["beta"]).all()
        assert not np.isfinite(new["mean"][2]) and np.isfinite(new["mean"][:2]).all()


def test_batch_norm_train_float32():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 2, 4)) * 2
    p = bn_params(4, 5)
    gy = rng.standard_normal(x.shape)
    attrs = {"axis": -1, "epsilon": 1e-3}
    y64, new64 = batch_norm_train(x, p, attrs, 0.1)
    g_x64, g64 = batch_norm_train_vjp(x, p, attrs, y64, gy)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    x32 = x.astype(np.float32)
    y32, new32 = batch_norm_train(x32, p32, attrs, 0.1)
    g_x32, g32 = batch_norm_train_vjp(x32, p32, attrs, y32, gy.astype(np.float32))
    assert y32.dtype == g_x32.dtype == np.float32
    assert all(v.dtype == np.float32 for v in (*new32.values(), *g32.values()))
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_x32, g_x64, rtol=1e-4, atol=1e-5)
    for k in new64:
        np.testing.assert_allclose(new32[k], new64[k], rtol=1e-5, atol=1e-6)
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-5, atol=1e-5)


# ---- add / multiply ----------------------------------------------------------------------------
BROADCASTS = [
    [(2, 3, 4, 5), (2, 3, 4, 5)],                   # same shape
    [(2, 3, 4, 5), (1, 1, 1, 1)],                   # scalar-like, same rank
    [(1, 1, 1, 1), (2, 3, 4, 5)],
    [(2, 3, 4, 5), (1,)],                           # scalar-like [1]
    [(2, 3, 4, 5), (1, 1, 1, 5)],                   # per-channel, same rank
    [(5,), (2, 3, 4, 5)],                           # per-channel [C]
    [(2, 3, 4, 5), (2, 1, 1, 5)],                   # squeeze-excitation
    [(1, 3, 4, 5), (2, 3, 4, 5)],                   # leading (batch) axis stretched
    [(2, 3, 4, 5), (3, 4, 5)],                      # leading axis missing
    [(2, 1, 3), (2, 4, 1)],                         # both sides stretch
    [(3, 5, 1), (3, 5, 7)],
    [(2, 3), (2, 3), (1, 3)],                       # three inputs
    [(2, 1, 4), (1, 3, 1), (2, 3, 4), (4,)],        # four inputs, every pattern at once
    [(1, 1), (1, 1)],
]


@pytest.mark.parametrize("name", ["add", "multiply"])
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
def test_add_multiply_vjp_matches_finite_differences(name, shapes):
    rng = np.random.default_rng(len(shapes) + sum(map(len, shapes)))
    xs = [rng.standard_normal(s) for s in shapes]
    check(name, xs)


@pytest.mark.parametrize("seed", range(12))
def test_add_multiply_vjp_random_broadcasts(seed):
    """Random ranks, sizes and broadcasting masks (size-1 axes, missing leading axes), 2 to 4
    inputs."""
    rng = np.random.default_rng(100 + seed)
    rank = int(rng.integers(2, 5))
    y_shape = rng.integers(1, 4, rank)
    shapes = []
    for _ in range(int(rng.integers(2, 5))):
        shape = np.where(rng.random(rank) < 0.4, 1, y_shape)
        shapes.append(tuple(int(d) for d in shape[int(rng.integers(0, rank)):]))
    shapes[0] = tuple(int(d) for d in y_shape)   # one operand carries y's shape
    rng.shuffle(shapes)
    xs = [rng.standard_normal(sh) for sh in shapes]
    for name in ("add", "multiply"):
        check(name, xs, seed=seed)


@pytest.mark.parametrize("seed", range(8))
def test_batch_norm_vjps_random_shapes(seed):
    rng = np.random.default_rng(200 + seed)
    shape = tuple(int(d) for d in rng.integers(1, 5, int(rng.integers(2, 5))))
    axis = int(rng.integers(1, len(shape))) - (len(shape) if rng.random() < 0.5 else 0)
    x = rng.standard_normal(shape) * rng.uniform(0.1, 10) + rng.normal()
    eps = float(rng.choice([0.0, 1e-5, 1e-3, 0.1]))
    p = bn_params(shape[axis], seed)
    check("batch_norm", [x], p, {"axis": axis, "epsilon": eps}, seed=seed)
    if x.size // shape[axis] >= 2:
        check_train_vjp(x, p, {"axis": axis, "epsilon": eps}, seed=seed)


@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
def test_add_multiply_vjp_exact_values(shapes):
    """add: gy summed to each shape; multiply: gy·(the other inputs) summed, small integers so
    every sum is exact; both against an explicit loop over y's entries."""
    rng = np.random.default_rng(1)
    xs = [rng.integers(-3, 4, s).astype(np.float64) for s in shapes]
    y_shape = np.broadcast_shapes(*shapes)
    gy = rng.integers(-3, 4, y_shape).astype(np.float64)
    full = [np.broadcast_to(x, y_shape) for x in xs]
    for name in ("add", "multiply"):
        _, g_in, g_par = run_vjp(name, xs, gy=gy)
        assert g_par == {}
        for i, (x, g) in enumerate(zip(xs, g_in)):
            expect = np.zeros(x.shape)
            lead = len(y_shape) - x.ndim
            for idx in np.ndindex(*y_shape):
                factor = 1.0
                if name == "multiply":
                    factor = math.prod(float(f[idx]) for j, f in enumerate(full) if j != i)
                src = tuple(0 if n == 1 else k for k, n in zip(idx[lead:], x.shape))
                expect[src] += gy[idx] * factor
            assert g.shape == x.shape and g.dtype == x.dtype
            np.testing.assert_array_equal(g, expect, err_msg=f"{name} input {i}")
            assert not np.shares_memory(g, gy)


def test_multiply_vjp_zero_and_infinite_factors():
    """No division by y: a zero factor gives its own gradient exactly and 0 to the others; an
    infinite one makes the others' gradients infinite, or NaN with a third input at 0."""
    a = np.array([[0.0, 2.0, 0.0]])
    b = np.array([[3.0, np.inf, np.inf]])
    c = np.array([[2.0, 0.5, 2.0]])
    gy = np.array([[1.0, 1.0, -1.0]])
    with np.errstate(invalid="ignore"):   # 0·inf
        _, (ga, gb, gc), _ = run_vjp("multiply", [a, b, c], gy=gy)
    np.testing.assert_array_equal(ga, [[6.0, np.inf, -np.inf]])
    np.testing.assert_array_equal(gb, [[0.0, 1.0, -0.0]])
    np.testing.assert_array_equal(gc, [[0.0, np.inf, np.nan]])
    _, (ga, gb), _ = run_vjp("multiply", [a, c], gy=gy)
    np.testing.assert_array_equal(ga, [[2.0, 0.5, -2.0]])
    np.testing.assert_array_equal(gb, [[0.0, 2.0, -0.0]])


def test_add_vjp_ignores_the_inputs_values():
    x = np.array([[np.inf, np.nan, 1.0]])
    gy = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    _, (g0, g1), _ = run_vjp("add", [x, np.ones((2, 1))], gy=gy)
    np.testing.assert_array_equal(g0, [[5.0, 7.0, 9.0]])
    np.testing.assert_array_equal(g1, [[6.0], [15.0]])


@pytest.mark.parametrize("name", ["add", "multiply"])
def test_add_multiply_vjp_float32(name):
    rng = np.random.default_rng(9)
    shapes = [(2, 3, 4, 5), (2, 1, 1, 5), (5,)]
    xs = [rng.standard_normal(s) for s in shapes]
    gy = rng.standard_normal((2, 3, 4, 5))
    _, g64, _ = run_vjp(name, xs, gy=gy)
    _, g32, _ = run_vjp(name, [x.astype(np.float32) for x in xs], gy=gy.astype(np.float32))
    for a, b, s in zip(g32, g64, shapes):
        assert a.dtype == np.float32 and a.shape == s
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ---- shape ops ---------------------------------------------------------------------------------
CONCAT_CASES = [  # every non-batch axis of ranks 2 to 4, in both signed forms; 1 to 3 inputs
    ([(2, 3), (2, 2)], 1), ([(2, 3), (2, 2), (2, 1)], -1), ([(2, 3)], 1),
    ([(2, 3, 4), (2, 1, 4)], 1), ([(2, 3, 4), (2, 1, 4)], -2),
    ([(2, 3, 4), (2, 3, 2), (2, 3, 1)], 2), ([(2, 3, 2)], -1),
    ([(2, 3, 2, 2), (2, 1, 2, 2)], 1), ([(2, 3, 2, 2), (2, 1, 2, 2)], -3),
    ([(2, 3, 2, 2), (2, 3, 1, 2), (2, 3, 3, 2)], 2), ([(2, 3, 2, 2), (2, 3, 4, 2)], -2),
    ([(2, 3, 2, 2), (2, 3, 2, 3)], 3), ([(2, 3, 2, 1), (2, 3, 2, 2), (2, 3, 2, 1)], -1),
    ([(2, 3, 2), (2, 3, 0), (2, 3, 1)], -1),       # an empty part
    ([(0, 3, 2), (0, 3, 1)], -1),                  # an empty batch
]


@pytest.mark.parametrize("shapes,axis", CONCAT_CASES, ids=str)
def test_concat_vjp(shapes, axis):
    rng = np.random.default_rng(len(shapes))
    xs = [rng.standard_normal(s) for s in shapes]
    check("concat", xs, attrs={"axis": axis})
    gy = np.random.default_rng(0).standard_normal(np.concatenate(xs, axis=axis).shape)
    gy = np.asfortranarray(gy)   # any layout in, C-contiguous gradients out
    _, g_in, _ = run_vjp("concat", xs, attrs={"axis": axis}, gy=gy)
    np.testing.assert_array_equal(np.concatenate(g_in, axis=axis), gy)
    for x, g in zip(xs, g_in):
        assert g.shape == x.shape and g.flags.c_contiguous and not np.shares_memory(g, gy)


RESHAPE_CASES = [((2, 12), [3, 4]), ((2, 3, 4), [-1]), ((3, 2, 3, 5), [5, -1]),
                 ((1, 30), [-1, 3, 5]), ((2, 30), [2, -1, 5]), ((2, 30), [2, 3, -1]),
                 ((2, 6), [1, 1, 6]), ((2, 1, 1, 7), [7]), ((2, 2, 3, 2), [3, 4]),
                 ((0, 2, 3), [3, -1])]


@pytest.mark.parametrize("shape,target", RESHAPE_CASES, ids=str)
def test_reshape_vjp(shape, target):
    x = np.random.default_rng(0).standard_normal(shape)
    check("reshape", [x], attrs={"shape": target})
    y = REGISTRY["reshape"].forward([x], {}, {"shape": target})
    gy = np.arange(y.size, dtype=np.float64).reshape(y.shape)
    _, (g,), _ = run_vjp("reshape", [x], attrs={"shape": target}, gy=gy)
    np.testing.assert_array_equal(g, np.arange(x.size, dtype=np.float64).reshape(shape))
    assert not np.shares_memory(g, gy)
    _, (g,), _ = run_vjp("reshape", [x], attrs={"shape": target}, gy=np.asfortranarray(gy))
    np.testing.assert_array_equal(g, np.arange(x.size, dtype=np.float64).reshape(shape))
    assert g.flags.c_contiguous


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4), (2, 3, 2, 4), (3, 1, 1, 1), (0, 2, 2)])
def test_flatten_vjp(shape):
    x = np.random.default_rng(1).standard_normal(shape)
    check("flatten", [x])
    gy = np.arange(x.size, dtype=np.float64).reshape(shape[0], math.prod(shape[1:]))
    _, (g,), _ = run_vjp("flatten", [x], gy=gy)
    np.testing.assert_array_equal(g, np.arange(x.size, dtype=np.float64).reshape(shape))
    assert not np.shares_memory(g, gy)


PADS = [list(p) for p in itertools.product([0, 1], [0, 2], [0, 1], [0, 3])]  # all 16 patterns


@pytest.mark.parametrize("pads", PADS, ids=str)
def test_zero_pad2d_vjp(pads):
    x = np.random.default_rng(sum(pads)).standard_normal((2, 3, 2, 2))
    check("zero_pad2d", [x], attrs={"pads": pads})
    top, bottom, left, right = pads
    gy = np.full((2, 3 + top + bottom, 2 + left + right, 2), np.nan)   # NaN in the padding
    inner = np.random.default_rng(2).standard_normal(x.shape)
    gy[:, top:top + 3, left:left + 2, :] = inner
    _, (g,), _ = run_vjp("zero_pad2d", [x], attrs={"pads": pads}, gy=np.asfortranarray(gy))
    np.testing.assert_array_equal(g, inner)   # the constant padding sends nothing back
    assert g.flags.c_contiguous and not np.shares_memory(g, gy)


def test_identity_vjp():
    x = np.random.default_rng(3).standard_normal((2, 3, 4))
    check("identity", [x])
    gy = np.asfortranarray(np.random.default_rng(4).standard_normal(x.shape))
    _, (g,), _ = run_vjp("identity", [x], gy=gy)
    np.testing.assert_array_equal(g, gy)
    assert g.flags.c_contiguous and not np.shares_memory(g, gy)


@pytest.mark.parametrize("name,shapes,attrs", [
    ("concat", [(2, 3, 2), (2, 3, 1)], {"axis": -1}),
    ("reshape", [(2, 3, 4)], {"shape": [4, 3]}),
    ("flatten", [(2, 3, 4)], {}),
    ("zero_pad2d", [(2, 3, 2, 2)], {"pads": [1, 0, 2, 1]}),
    ("identity", [(2, 3)], {}),
])
def test_shape_ops_vjp_float32(name, shapes, attrs):
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    y, g_in, g_par = run_vjp(name, xs, attrs=attrs)
    assert g_par == {}
    for x, g in zip(xs, g_in):
        assert g.dtype == np.float32 and g.shape == x.shape


@pytest.mark.parametrize("name,shapes,attrs,params", [
    ("batch_norm", [(2, 3, 4)], {"epsilon": 1e-3}, bn_params(4, 0, np.float32)),
    ("add", [(2, 3, 4), (1, 3, 1), (4,)], {}, {}),
    ("multiply", [(2, 3, 4), (1, 3, 1), (4,)], {}, {}),
    ("concat", [(2, 3, 2), (2, 3, 1)], {"axis": -1}, {}),
    ("reshape", [(2, 3, 4)], {"shape": [4, 3]}, {}),
    ("flatten", [(2, 3, 4)], {}, {}),
    ("zero_pad2d", [(2, 3, 2, 2)], {"pads": [1, 0, 2, 1]}, {}),
    ("identity", [(2, 3)], {}, {}),
])
def test_vjp_keeps_the_operands_dtype_for_a_float64_gy(name, shapes, attrs, params):
    """The gradients have the operands' dtype (float32) even when gy arrives in float64."""
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    op = REGISTRY[name]
    attrs = op.normalise_attrs(attrs, name)
    y = op.forward(xs, params, attrs)
    g_in, g_par = op.vjp(xs, params, attrs, y, rng.standard_normal(y.shape))
    assert [g.dtype for g in g_in] == [np.float32] * len(xs)
    assert all(g.dtype == np.float32 for g in g_par.values())


def test_batch_norm_train_vjp_keeps_float32_for_a_float64_gy():
    x = np.random.default_rng(6).standard_normal((4, 3)).astype(np.float32)
    p = bn_params(3, 0, np.float32)
    attrs = {"axis": -1, "epsilon": 1e-3}
    y, _ = batch_norm_train(x, p, attrs, 0.1)
    g_x, g = batch_norm_train_vjp(x, p, attrs, y, np.ones(y.shape))
    assert g_x.dtype == g["gamma"].dtype == g["beta"].dtype == np.float32
