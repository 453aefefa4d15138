"""Spec tests of the parameter-free and simple ops: activations, batch_norm, add/multiply, shape ops.

Each op is compared with a naive transcription of its Definition written here: explicit Python loops
over elements and `math` functions on Python scalars. Kinks are tested at their exact ties, extremes
for overflow, and shape inference, MACs and errors on hand-worked examples.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refq.errors import GraphError, ParamError, ShapeError
from refq.layers import REGISTRY, get_op
from refq.layers.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3
from refq.layers.normalization import scale_and_shift

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (2, 3), (3, 5, 7), (2, 3, 1, 5), (1, 4, 3, 2)]


# ---- helpers --------------------------------------------------------------------------------
def fwd(name, inputs, attrs=None, params=None):
    """Run one op the way the runtime does: attributes normalised, inputs as a list."""
    op = get_op(name)
    a = op.normalise_attrs(dict(attrs or {}), f"test {name}")
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    return op.forward(list(inputs), dict(params or {}), a)


def shape_of(name, in_shapes, attrs=None, params=None):
    op = get_op(name)
    a = op.normalise_attrs(dict(attrs or {}), f"test {name}")
    return tuple(op.infer_shape([tuple(s) for s in in_shapes], a, dict(params or {})))


def macs_of(name, in_shapes, attrs=None, params=None):
    op = get_op(name)
    a = op.normalise_attrs(dict(attrs or {}), f"test {name}")
    out = op.infer_shape([tuple(s) for s in in_shapes], a, dict(params or {}))
    return op.macs([tuple(s) for s in in_shapes], tuple(out), a, dict(params or {}))


def rand(shape, dtype, seed=0, scale=4.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def naive_map(x, f):
    """y[i] = f(x[i]) element by element, computed on Python floats, stored in x's dtype."""
    y = np.empty(x.shape, dtype=x.dtype)
    for idx in np.ndindex(*x.shape):
        y[idx] = f(float(x[idx]))
    return y


def tol(dtype):
    """Tolerance for a vectorised float op versus its double-precision loop transcription."""
    return dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-15)


def check_same_dtype(y, x):
    assert isinstance(y, np.ndarray)
    assert y.dtype == x.dtype, (y.dtype, x.dtype)
    assert y.shape == x.shape


def with_kinks(x, kinks):
    """x with the given exact values written into its first entries."""
    flat = x.reshape(-1).copy()
    k = np.asarray(kinks, dtype=x.dtype)[: flat.size]
    flat[: k.size] = k
    return flat.reshape(x.shape)


# ---- scalar definitions, transcribed from the docstrings ------------------------------------
def d_relu(v):
    return v if v > 0 else 0.0


def d_relu6(v):
    return min(max(v, 0.0), 6.0)


def d_clip(lo, hi):
    return lambda v: min(max(v, lo), hi)


def d_leaky(alpha):
    return lambda v: v if v >= 0 else alpha * v


def d_sigmoid(v):
    # 1 / (1 + exp(-v)), in the form that does not overflow for either sign
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def d_hard_sigmoid(alpha, beta):
    return lambda v: min(max(alpha * v + beta, 0.0), 1.0)


def d_hard_swish(v):
    return v * min(max(v + 3.0, 0.0), 6.0) / 6.0


SIMPLE = [
    ("relu", {}, d_relu, [0.0, -0.0, 1e-30, -1e-30, 6.0, -6.0]),
    ("relu6", {}, d_relu6, [0.0, -0.0, 6.0, np.nextafter(6.0, 7.0), np.nextafter(6.0, 5.0), 7.0]),
    ("clip", {"min": -1.5, "max": 2.25}, d_clip(-1.5, 2.25), [-1.5, 2.25, -1.5001, 2.2501, 0.0]),
    ("leaky_relu", {}, d_leaky(0.3), [0.0, -0.0, -1.0, 1.0, -1e-3]),
    ("leaky_relu", {"alpha": 0.01}, d_leaky(0.01), [0.0, -2.0, 2.0]),
    ("sigmoid", {}, d_sigmoid, [0.0, -0.0, 1.0, -1.0, 30.0, -30.0, 700.0, -700.0]),
    ("tanh", {}, math.tanh, [0.0, 1.0, -1.0, 20.0, -20.0, 1e-9]),
    ("hard_sigmoid", {}, d_hard_sigmoid(1 / 6, 0.5), [-3.0, 3.0, 0.0, -2.999, 2.999, 4.0]),
    ("hard_sigmoid", dict(HARD_SIGMOID_KERAS2), d_hard_sigmoid(0.2, 0.5),
     [-2.5, 2.5, 0.0, -2.499, 2.499, -3.0]),
    ("hard_swish", {}, d_hard_swish, [-3.0, 3.0, 0.0, -2.999, 2.999, -4.0, 4.0]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,attrs,definition,kinks", SIMPLE,
                         ids=[f"{s[0]}-{i}" for i, s in enumerate(SIMPLE)])
def test_elementwise_activation_matches_definition(name, attrs, definition, kinks, shape, dtype):
    x = with_kinks(rand(shape, dtype, seed=len(shape) * 7 + shape[-1]), kinks)
    x_before = x.copy()
    y = fwd(name, x, attrs)
    check_same_dtype(y, x)
    np.testing.assert_array_equal(x, x_before)  # forward never mutates its input
    np.testing.assert_allclose(y, naive_map(x, definition), **tol(dtype))


# ---- exact values at the kinks --------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_family_exact_at_kinks(dtype):
    t = dtype
    x = np.array([[-1.0, 0.0, 1.0, 6.0, 7.0, -0.0]], dtype=t)
    np.testing.assert_array_equal(fwd("relu", x), np.array([[0, 0, 1, 6, 7, 0]], t))
    np.testing.assert_array_equal(fwd("relu6", x), np.array([[0, 0, 1, 6, 6, 0]], t))
    just_above = np.nextafter(t(6), t(7))
    just_below = np.nextafter(t(6), t(5))
    y = fwd("relu6", np.array([[just_below, just_above]], t))
    assert y[0, 0] == just_below and y[0, 1] == t(6)
    tiny = np.array([[np.nextafter(t(0), t(1)), np.nextafter(t(0), t(-1))]], t)
    y = fwd("relu", tiny)
    assert y[0, 0] == tiny[0, 0] and y[0, 1] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_exact_at_bounds(dtype):
    t = dtype
    x = np.array([[-2.0, -1.5, 0.0, 2.25, 3.0]], t)
    y = fwd("clip", x, {"min": -1.5, "max": 2.25})
    np.testing.assert_array_equal(y, np.array([[-1.5, -1.5, 0.0, 2.25, 2.25]], t))
    # min == max is allowed and gives a constant
    y = fwd("clip", x, {"min": 1, "max": 1})
    np.testing.assert_array_equal(y, np.ones_like(x))
    assert y.dtype == x.dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_hard_sigmoid_keras3_corners(dtype):
    t = dtype
    x = np.array([[-4.0, -3.0, 0.0, 3.0, 4.0]], t)
    y = fwd("hard_sigmoid", x)  # the default is Keras 3: relu6(x + 3) / 6
    np.testing.assert_array_equal(y, np.array([[0.0, 0.0, 0.5, 1.0, 1.0]], t))
    # just inside the corners (one ulp inside may round onto the corner in float32)
    y = fwd("hard_sigmoid", np.array([[-2.9999, 2.9999]], t))
    assert 0 < y[0, 0] < 1e-4 and 1 - 1e-4 < y[0, 1] < 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_hard_sigmoid_keras2_corners(dtype):
    t = dtype
    x = np.array([[-3.0, -2.5, 0.0, 2.5, 3.0]], t)
    y = fwd("hard_sigmoid", x, HARD_SIGMOID_KERAS2)
    np.testing.assert_array_equal(y, np.array([[0.0, 0.0, 0.5, 1.0, 1.0]], t))
    y = fwd("hard_sigmoid", np.array([[-2.4999, 2.4999]], t), HARD_SIGMOID_KERAS2)
    assert 0 < y[0, 0] < 1e-4 and 1 - 1e-4 < y[0, 1] < 1
    # Keras 2 and Keras 3 differ between their corners: at x = 1, 0.7 vs 2/3
    one = np.ones((1, 1), t)
    assert fwd("hard_sigmoid", one, HARD_SIGMOID_KERAS2)[0, 0] == pytest.approx(0.7, rel=1e-6)
    assert fwd("hard_sigmoid", one, HARD_SIGMOID_KERAS3)[0, 0] == pytest.approx(2 / 3, rel=1e-6)


def test_hard_sigmoid_default_is_keras3():
    attrs = get_op("hard_sigmoid").normalise_attrs({}, "t")
    assert attrs == {"alpha": HARD_SIGMOID_KERAS3["alpha"], "beta": HARD_SIGMOID_KERAS3["beta"]}
    assert HARD_SIGMOID_KERAS3["alpha"] == 1 / 6 and HARD_SIGMOID_KERAS2 == {"alpha": 0.2,
                                                                              "beta": 0.5}


@pytest.mark.parametrize("dtype", DTYPES)
def test_hard_swish_corners(dtype):
    t = dtype
    x = np.array([[-4.0, -3.0, 0.0, 3.0, 4.0, 100.0]], t)
    y = fwd("hard_swish", x)
    np.testing.assert_array_equal(y, np.array([[0.0, 0.0, 0.0, 3.0, 4.0, 100.0]], t))
    # x = -1.5: -1.5 * 1.5 / 6 = -0.375 exactly
    assert fwd("hard_swish", np.array([[-1.5]], t))[0, 0] == t(-0.375)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_extremes_do_not_overflow(dtype):
    t = dtype
    x = np.array([[-1000.0, -100.0, -0.0, 0.0, 100.0, 1000.0]], t)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = fwd("sigmoid", x)
    assert y.dtype == t and np.all(np.isfinite(y))
    assert y[0, 0] == 0 and y[0, -1] == 1 and y[0, 2] == 0.5 and y[0, 3] == 0.5
    assert 0 <= y[0, 1] < 1e-40 and y[0, 4] == 1
    big = np.array([[np.finfo(t).max, -np.finfo(t).max]], t)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = fwd("sigmoid", big)
    np.testing.assert_array_equal(y, np.array([[1, 0]], t))


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_extremes(dtype):
    x = np.array([[-1000.0, -20.0, 0.0, 20.0, 1000.0]], dtype)
    y = fwd("tanh", x)
    np.testing.assert_array_equal(y, np.array([[-1, -1, 0, 1, 1]], dtype))


# ---- softmax --------------------------------------------------------------------------------
def naive_softmax(x, axis):
    """y_i = exp(x_i - max x) / sum_j exp(x_j - max x) along `axis`, one lane at a time."""
    axis = axis % x.ndim
    y = np.empty(x.shape, dtype=x.dtype)
    outer = tuple(1 if d == axis else n for d, n in enumerate(x.shape))
    for idx in np.ndindex(*outer):
        sl = tuple(slice(None) if d == axis else i for d, i in enumerate(idx))
        lane = [float(v) for v in x[sl]]
        m = max(lane)
        e = [math.exp(v - m) for v in lane]
        s = sum(e)
        y[sl] = [v / s for v in e]
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((2, 5), -1), ((3, 1), -1), ((2, 3, 4), 1), ((2, 3, 4), -2),
                                        ((1, 2, 3, 5), 3), ((2, 3, 2, 3), 2), ((2, 7), 1)])
def test_softmax_matches_definition(shape, axis, dtype):
    x = rand(shape, dtype, seed=sum(shape))
    y = fwd("softmax", x, {"axis": axis})
    check_same_dtype(y, x)
    np.testing.assert_allclose(y, naive_softmax(x, axis), **tol(dtype))
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_large_logits(dtype):
    x = np.array([[1000.0, 1000.0, -1000.0], [1e4, 0.0, -1e4], [-1e4, -1e4, -1e4]], dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = fwd("softmax", x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y[0], np.array([0.5, 0.5, 0.0], dtype))
    np.testing.assert_array_equal(y[1], np.array([1.0, 0.0, 0.0], dtype))
    np.testing.assert_allclose(y[2], 1 / 3, rtol=1e-6)
    big = np.array([[np.finfo(dtype).max / 2, 0.0]], dtype)
    with np.errstate(over="raise", invalid="raise"):
        np.testing.assert_array_equal(fwd("softmax", big), np.array([[1, 0]], dtype))


def test_softmax_shape_and_axis_errors():
    assert shape_of("softmax", [(None, 4, 5)], {"axis": 1}) == (None, 4, 5)
    assert shape_of("softmax", [(None, 4, 5)], {"axis": -2}) == (None, 4, 5)
    for axis in (0, 3, -3, -4, 10):
        with pytest.raises(ShapeError, match="axis"):
            shape_of("softmax", [(None, 4, 5)], {"axis": axis})
    with pytest.raises(ShapeError):
        shape_of("softmax", [(None,)])


# ---- batch_norm -----------------------------------------------------------------------------
def bn_params(c, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return {"gamma": rng.uniform(0.5, 2, c).astype(dtype),
            "beta": rng.normal(size=c).astype(dtype),
            "mean": rng.normal(size=c).astype(dtype),
            "variance": rng.uniform(0.0, 3, c).astype(dtype)}


def naive_batch_norm(x, p, eps, axis):
    axis = axis % x.ndim
    y = np.empty(x.shape, dtype=x.dtype)
    for idx in np.ndindex(*x.shape):
        c = idx[axis]
        y[idx] = (float(p["gamma"][c]) * (float(x[idx]) - float(p["mean"][c]))
                  / math.sqrt(float(p["variance"][c]) + eps) + float(p["beta"][c]))
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis,eps", [((2, 3), -1, 1e-3), ((2, 3, 5), -1, 1e-5),
                                            ((3, 2, 3, 5), -1, 1e-3), ((2, 4, 3), 1, 1e-3),
                                            ((1, 3, 1, 7), 3, 0.1)])
def test_batch_norm_matches_definition(shape, axis, eps, dtype):
    c = shape[axis]
    x = rand(shape, dtype, seed=c)
    p = bn_params(c, dtype, seed=c + 1)
    p_before = {k: v.copy() for k, v in p.items()}
    y = fwd("batch_norm", x, {"epsilon": eps, "axis": axis}, p)
    check_same_dtype(y, x)
    for k in p:
        np.testing.assert_array_equal(p[k], p_before[k])
    np.testing.assert_allclose(y, naive_batch_norm(x, p, eps, axis),
                               rtol=1e-5 if dtype == np.float32 else 1e-13,
                               atol=1e-5 if dtype == np.float32 else 1e-13)


def test_batch_norm_epsilon_is_required():
    """No silent default (Keras's 1e-3, PyTorch's and ONNX's 1e-5): every producer states it."""
    with pytest.raises(GraphError, match="needs attribute 'epsilon'"):
        get_op("batch_norm").normalise_attrs({}, "t")
    assert get_op("batch_norm").normalise_attrs({"epsilon": 1e-3}, "t") == {"epsilon": 1e-3,
                                                                            "axis": -1}
    x = np.array([[0.0, 1.0]])
    p = {"gamma": np.ones(2), "beta": np.zeros(2), "mean": np.zeros(2), "variance": np.ones(2)}
    y = fwd("batch_norm", x, {"epsilon": 1e-3}, p)
    np.testing.assert_allclose(y, [[0.0, 1 / math.sqrt(1.001)]], rtol=1e-15)


def test_batch_norm_shapes_params_and_macs():
    assert shape_of("batch_norm", [(None, 4, 5, 3)], {"epsilon": 1e-3}) == (None, 4, 5, 3)
    assert get_op("batch_norm").param_shapes([(None, 4, 5, 3)], {"axis": -1, "epsilon": 1e-3}) == \
        {p: (3,) for p in ("gamma", "beta", "mean", "variance")}
    assert get_op("batch_norm").param_shapes([(None, 4, 5, 3)], {"axis": 1, "epsilon": 1e-3}) == \
        {p: (4,) for p in ("gamma", "beta", "mean", "variance")}
    assert macs_of("batch_norm", [(None, 4, 5, 3)], {"epsilon": 1e-3}) == 60
    assert macs_of("batch_norm", [(None, 7)], {"epsilon": 1e-3}) == 7
    for axis in (0, 4, -5):
        with pytest.raises(ShapeError, match="axis"):
            shape_of("batch_norm", [(None, 4, 5, 3)], {"axis": axis, "epsilon": 1e-3})


def test_batch_norm_nonpositive_variance_is_a_param_error():
    x = np.ones((1, 2))
    p = {"gamma": np.ones(2), "beta": np.zeros(2), "mean": np.zeros(2),
         "variance": np.array([1.0, -1.0])}
    with pytest.raises(ParamError, match="variance"):
        scale_and_shift(p, 1e-3)
    with pytest.raises(ParamError, match="variance"):
        fwd("batch_norm", x, {"epsilon": 1e-3}, p)
    # variance 0 with epsilon > 0 is fine (a dead channel), epsilon 0 with variance 0 is not
    p["variance"] = np.array([1.0, 0.0])
    assert np.all(np.isfinite(fwd("batch_norm", x, {"epsilon": 1e-3}, p)))
    with pytest.raises(ParamError):
        fwd("batch_norm", x, {"epsilon": 0.0}, p)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_batch_norm_equals_scale_and_shift(data):
    c = data.draw(st.integers(1, 5))
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)), c)
    fin = dict(allow_nan=False, allow_infinity=False)
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e3, 1e3, **fin)))
    p = {"gamma": data.draw(hnp.arrays(np.float64, c, elements=st.floats(-10, 10, **fin))),
         "beta": data.draw(hnp.arrays(np.float64, c, elements=st.floats(-10, 10, **fin))),
         "mean": data.draw(hnp.arrays(np.float64, c, elements=st.floats(-10, 10, **fin))),
         "variance": data.draw(hnp.arrays(np.float64, c, elements=st.floats(0, 100, **fin)))}
    eps = data.draw(st.sampled_from([1e-3, 1e-5, 0.5]))
    s, t = scale_and_shift(p, eps)
    y = fwd("batch_norm", x, {"epsilon": eps}, p)
    np.testing.assert_allclose(y, s * x + t, rtol=1e-10, atol=1e-9 * (1 + np.abs(s * x).max()))


# ---- add / multiply -------------------------------------------------------------------------
def naive_elementwise(xs, combine):
    shape = np.broadcast_shapes(*[x.shape for x in xs])
    y = np.empty(shape, dtype=xs[0].dtype)
    for idx in np.ndindex(*shape):
        vals = [float(x[tuple(i if n > 1 else 0 for i, n in zip(idx, x.shape))]) for x in xs]
        acc = vals[0]
        for v in vals[1:]:
            acc = combine(acc, v)
        y[idx] = acc
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,combine", [("add", lambda a, b: a + b),
                                          ("multiply", lambda a, b: a * b)])
@pytest.mark.parametrize("shapes", [
    [(2, 3), (2, 3)],
    [(2, 3, 5, 4), (2, 1, 1, 4)],          # squeeze-excitation (N,H,W,C) x (N,1,1,C)
    [(2, 1, 1, 4), (2, 3, 5, 4)],
    [(3, 3, 5, 1), (3, 3, 5, 7)],
    [(1, 5, 3), (1, 5, 3), (1, 1, 3)],     # three inputs
    [(2, 1, 3), (2, 4, 1)],                # both sides stretch
])
def test_add_multiply_match_definition(name, combine, shapes, dtype):
    xs = [rand(s, dtype, seed=i) for i, s in enumerate(shapes)]
    y = fwd(name, xs)
    assert y.dtype == dtype
    assert y.shape == np.broadcast_shapes(*shapes)
    expect = naive_elementwise(xs, combine)
    if len(xs) == 2:  # one rounding per element: exact
        np.testing.assert_array_equal(y, expect)
    else:
        np.testing.assert_allclose(y, expect, **tol(dtype))
    assert shape_of(name, [(None, *s[1:]) for s in shapes]) == (None, *y.shape[1:])


def test_elementwise_shape_inference_and_errors():
    assert shape_of("add", [(None, 4, 4, 8), (None, 1, 1, 8)]) == (None, 4, 4, 8)
    assert shape_of("multiply", [(None, 1, 1, 8), (None, 4, 4, 1)]) == (None, 4, 4, 8)
    assert shape_of("add", [(None, 1, 3), (None, 1, 3)]) == (None, 1, 3)
    assert shape_of("add", [(2, 3), (2, 3)]) == (2, 3)
    with pytest.raises(ShapeError, match="broadcast"):
        shape_of("add", [(None, 3, 4), (None, 3, 5)])
    with pytest.raises(ShapeError, match="broadcast"):
        shape_of("multiply", [(None, 4, 4, 8), (None, 1, 1, 4)])
    with pytest.raises(ShapeError, match="rank"):
        shape_of("multiply", [(None, 4, 4, 8), (None, 8)])
    with pytest.raises(GraphError):
        get_op("add").check_arity(1, "node 'a'")
    get_op("add").check_arity(5, "node 'a'")


def test_elementwise_macs():
    assert macs_of("multiply", [(None, 4, 4, 8), (None, 1, 1, 8)]) == 128
    assert macs_of("multiply", [(None, 4, 4, 8)] * 3) == 256
    assert macs_of("add", [(None, 4, 4, 8), (None, 4, 4, 8)]) == 0
    # a free non-batch axis: MACs unknown, counted as 0 (as batch_norm does), never a crash
    assert macs_of("multiply", [(None, None, 8), (None, 1, 8)]) == 0
    assert macs_of("batch_norm", [(None, None, 8)], {"epsilon": 1e-3}) == 0


# ---- shape ops ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes,axis", [
    ([(2, 3, 4, 1), (2, 3, 4, 2)], -1),
    ([(2, 3, 4, 1), (2, 3, 4, 2), (2, 3, 4, 3)], 3),
    ([(2, 1, 4, 3), (2, 2, 4, 3)], 1),
    ([(2, 3, 5, 3), (2, 3, 1, 3)], 2),
    ([(2, 3, 5, 3), (2, 3, 1, 3)], -2),
    ([(3, 5), (3, 2)], 1),
    ([(2, 3)], -1),
])
def test_concat_matches_definition(shapes, axis, dtype):
    xs = [rand(s, dtype, seed=i) for i, s in enumerate(shapes)]
    y = fwd("concat", xs, {"axis": axis})
    ax = axis % len(shapes[0])
    assert y.dtype == dtype
    expect_shape = list(shapes[0])
    expect_shape[ax] = sum(s[ax] for s in shapes)
    assert y.shape == tuple(expect_shape)
    # y[..., offset_k + j, ...] = x_k[..., j, ...]
    expect = np.empty(tuple(expect_shape), dtype)
    offset = 0
    for x in xs:
        for idx in np.ndindex(*x.shape):
            out = list(idx)
            out[ax] += offset
            expect[tuple(out)] = x[idx]
        offset += x.shape[ax]
    np.testing.assert_array_equal(y, expect)
    assert shape_of("concat", [(None, *s[1:]) for s in shapes], {"axis": axis}) == \
        (None, *expect_shape[1:])


def test_concat_shape_errors():
    assert shape_of("concat", [(None, 3, None), (None, 3, 2)], {"axis": 1}) == (None, 6, None)
    assert shape_of("concat", [(None, 3, None), (None, 3, 2)], {"axis": 2}) == (None, 3, None)
    for axis in (0, 3, -4):
        with pytest.raises(ShapeError, match="axis"):
            shape_of("concat", [(None, 3, 2), (None, 3, 2)], {"axis": axis})
    with pytest.raises(ShapeError, match="differ on axis 1"):
        shape_of("concat", [(None, 3, 2), (None, 4, 2)], {"axis": -1})
    with pytest.raises(ShapeError, match="rank"):
        shape_of("concat", [(None, 3, 2), (None, 6)], {"axis": -1})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 3), (3, 1, 1, 1), (2, 5, 3)])
def test_flatten_is_c_order(shape, dtype):
    x = rand(shape, dtype)
    y = fwd("flatten", x)
    assert y.dtype == dtype
    rest = shape[1:]
    expect = np.empty((shape[0], int(np.prod(rest))), dtype)
    for idx in np.ndindex(*shape):
        k = 0
        for i, n in zip(idx[1:], rest):  # row-major index: last axis fastest
            k = k * n + i
        expect[idx[0], k] = x[idx]
    np.testing.assert_array_equal(y, expect)
    assert shape_of("flatten", [(None, *rest)]) == (None, int(np.prod(rest)))


def test_flatten_and_reshape_of_an_empty_batch():
    x = np.zeros((0, 2, 3, 4))
    assert fwd("flatten", x).shape == (0, 24)
    assert fwd("reshape", x, {"shape": [-1, 6]}).shape == (0, 4, 6)
    assert fwd("reshape", x, {"shape": [6, 4]}).shape == (0, 6, 4)


def test_flatten_shape():
    assert shape_of("flatten", [(None, 4, 5, 3)]) == (None, 60)
    assert shape_of("flatten", [(None, None, 3)]) == (None, None)
    assert shape_of("flatten", [(None, 7)]) == (None, 7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_shape,target,out_rest", [
    ((2, 12), [3, 4], (3, 4)),
    ((2, 3, 4), [-1], (12,)),
    ((3, 2, 3, 5), [5, -1], (5, 6)),
    ((1, 30), [-1, 3, 5], (2, 3, 5)),
    ((2, 6), [1, 1, 6], (1, 1, 6)),
    ((2, 1, 1, 7), [7], (7,)),
])
def test_reshape_reads_in_c_order(in_shape, target, out_rest, dtype):
    x = rand(in_shape, dtype)
    y = fwd("reshape", x, {"shape": target})
    assert y.dtype == dtype and y.shape == (in_shape[0], *out_rest)
    # y[n] = x[n] read in C order: the k-th value of y[n] (row-major) is the k-th value of x[n]
    for n in range(in_shape[0]):
        src = [x[(n, *i)] for i in np.ndindex(*in_shape[1:])]
        dst = [y[(n, *i)] for i in np.ndindex(*out_rest)]
        assert src == dst
    assert shape_of("reshape", [(None, *in_shape[1:])], {"shape": target}) == (None, *out_rest)


def test_reshape_shape_errors():
    with pytest.raises(ShapeError, match="cannot reshape"):
        shape_of("reshape", [(None, 3, 4)], {"shape": [5, 2]})
    with pytest.raises(ShapeError, match="cannot reshape"):
        shape_of("reshape", [(None, 3, 4)], {"shape": [5, -1]})
    with pytest.raises(ShapeError):
        shape_of("reshape", [(None, 3, 4)], {"shape": [-1, -1]})
    with pytest.raises(ShapeError):
        shape_of("reshape", [(None, 3, 4)], {"shape": [0, 12]})
    with pytest.raises(ShapeError):
        shape_of("reshape", [(None, 3, 4)], {"shape": [-2, -6]})
    with pytest.raises(GraphError):  # required attribute
        shape_of("reshape", [(None, 3, 4)], {})
    with pytest.raises(GraphError):
        shape_of("reshape", [(None, 3, 4)], {"shape": [3.0, 4]})
    assert shape_of("reshape", [(None, None, 4)], {"shape": [-1, 2]}) == (None, None, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,pads", [((2, 3, 4, 2), [1, 2, 0, 1]), ((1, 1, 1, 1), [0, 0, 0, 0]),
                                        ((2, 2, 3, 3), [3, 0, 2, 1]), ((1, 5, 3, 1), [0, 1, 1, 0])])
def test_zero_pad2d_matches_definition(shape, pads, dtype):
    x = rand(shape, dtype)
    top, bottom, left, right = pads
    y = fwd("zero_pad2d", x, {"pads": pads})
    n, h, w, c = shape
    out_shape = (n, h + top + bottom, w + left + right, c)
    assert y.dtype == dtype and y.shape == out_shape
    expect = np.zeros(out_shape, dtype)
    for b, i, j, k in np.ndindex(*shape):
        expect[b, i + top, j + left, k] = x[b, i, j, k]
    np.testing.assert_array_equal(y, expect)
    assert shape_of("zero_pad2d", [(None, h, w, c)], {"pads": pads}) == (None, *out_shape[1:])


def test_zero_pad2d_shape_errors():
    assert shape_of("zero_pad2d", [(None, 5, 7, 2)]) == (None, 5, 7, 2)
    assert shape_of("zero_pad2d", [(None, None, 7, 2)], {"pads": [1, 1, 2, 0]}) == (None, None, 9, 2)
    with pytest.raises(ShapeError, match=">= 0"):
        shape_of("zero_pad2d", [(None, 5, 7, 2)], {"pads": [1, -1, 0, 0]})
    with pytest.raises(ShapeError, match="NHWC"):
        shape_of("zero_pad2d", [(None, 5, 7)], {"pads": [1, 1, 1, 1]})
    with pytest.raises(GraphError):
        shape_of("zero_pad2d", [(None, 5, 7, 2)], {"pads": [1, 1, 1]})


@pytest.mark.parametrize("dtype", DTYPES)
def test_identity(dtype):
    x = rand((2, 3, 1), dtype)
    y = fwd("identity", x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, x)
    assert shape_of("identity", [(None, 3, 1)]) == (None, 3, 1)


def test_clip_shape_errors():
    assert shape_of("clip", [(None, 3)], {"min": 0, "max": 0}) == (None, 3)
    with pytest.raises(ShapeError, match="min <= max"):
        shape_of("clip", [(None, 3)], {"min": 2.0, "max": 1.0})
    # a missing bound is no bound (ONNX Clip); tests/test_layers_onnx_ops.py checks its values
    assert shape_of("clip", [(None, 3)], {"min": 2.0}) == (None, 3)
    with pytest.raises(GraphError, match="'min'"):
        shape_of("clip", [(None, 3)], {"min": "0", "max": 1.0})
    with pytest.raises(GraphError):
        shape_of("clip", [(None, 3)], {"min": True, "max": 1.0})


def test_activation_ops_have_no_params_no_macs():
    for name in ("relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "hard_sigmoid",
                 "hard_swish", "softmax", "identity", "flatten", "reshape", "zero_pad2d", "concat"):
        op = REGISTRY[name]
        assert op.params == {}
        attrs = {"min": 0.0, "max": 1.0} if name == "clip" else {}
        if name == "reshape":
            attrs = {"shape": [-1]}
        assert macs_of(name, [(None, 2, 3, 4)], attrs) == 0


# ---- property tests -------------------------------------------------------------------------
finite64 = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)
arrays64 = hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=4, max_side=4),
                      elements=finite64)


@settings(max_examples=100, deadline=None)
@given(x=arrays64)
def test_relu6_is_clip_0_6(x):
    np.testing.assert_array_equal(fwd("relu6", x), fwd("clip", x, {"min": 0, "max": 6}))
    np.testing.assert_array_equal(fwd("relu", x), fwd("leaky_relu", x, {"alpha": 0.0}))


@settings(max_examples=100, deadline=None)
@given(x=arrays64)
def test_hard_swish_is_x_times_hard_sigmoid_keras3(x):
    hsig = fwd("hard_sigmoid", x, HARD_SIGMOID_KERAS3)
    # equal up to the rounding of alpha·x + beta versus (x + 3) / 6: a few ulps of 0.5, times |x|
    np.testing.assert_allclose(fwd("hard_swish", x), x * hsig, rtol=1e-15,
                               atol=1e-15 * 3)


@settings(max_examples=100, deadline=None)
@given(x=arrays64)
def test_activation_ranges(x):
    s = fwd("sigmoid", x)
    assert np.all((s >= 0) & (s <= 1))
    for attrs in (HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3):
        h = fwd("hard_sigmoid", x, attrs)
        assert np.all((h >= 0) & (h <= 1))
    r6 = fwd("relu6", x)
    assert np.all((r6 >= 0) & (r6 <= 6))
    # sigmoid(-x) = 1 - sigmoid(x)
    np.testing.assert_allclose(fwd("sigmoid", -x), 1 - s, atol=4e-16)


@settings(max_examples=100, deadline=None)
@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=3, max_side=5),
                    elements=st.floats(-50, 50, allow_nan=False)),
       c=st.floats(-50, 50, allow_nan=False), axis=st.sampled_from([-1, 1]))
def test_softmax_sums_to_one_and_is_shift_invariant(x, c, axis):
    y = fwd("softmax", x, {"axis": axis})
    assert np.all((y >= 0) & (y <= 1))
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-13)
    np.testing.assert_allclose(fwd("softmax", x + c, {"axis": axis}), y, rtol=1e-11, atol=1e-13)
