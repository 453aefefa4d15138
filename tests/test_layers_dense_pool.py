"""Spec tests of dense, max_pool2d, avg_pool2d and global_avg_pool2d.

The references are naive transcriptions of the Definitions in refq/layers/dense.py and
refq/layers/pooling.py: explicit Python loops on Python floats, windows clipped to the valid
(non-padding) positions, padding from TensorFlow's 'same' rule as the docstrings state it.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import GraphError, ParamError, ShapeError
from refq.layers import get_op

rng = np.random.default_rng(99)


def rand(*s, dtype=np.float64):
    return rng.standard_normal(s).astype(dtype)


def fwd(name, x, attrs=None, params=None):
    op = get_op(name)
    return op.forward([x], dict(params or {}), op.normalise_attrs(dict(attrs or {}), f"test {name}"))


def infer(name, in_shape, attrs=None, params=None):
    op = get_op(name)
    a = op.normalise_attrs(dict(attrs or {}), f"test {name}")
    out = op.infer_shape([in_shape], a, dict(params or {}))
    return out, op.macs([in_shape], out, a, dict(params or {}))


def close(y, ref, rtol=1e-12):
    np.testing.assert_allclose(y, ref, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(ref)))))


# ---- dense ---------------------------------------------------------------------------------
def naive_dense(x, w, b=None):
    lead = x.shape[:-1]
    y = np.zeros(lead + (w.shape[0],))
    for idx in itertools.product(*map(range, lead)):
        for o in range(w.shape[0]):
            acc = 0.0 if b is None else float(b[o])
            for i in range(w.shape[1]):
                acc += float(x[idx + (i,)]) * float(w[o, i])
            y[idx + (o,)] = acc
    return y


@pytest.mark.parametrize("xs,units", [((3, 5), 4), ((1, 1), 1), ((2, 3, 7), 5), ((2, 2, 3, 4), 3)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dense_matches_definition(xs, units, bias, dtype):
    x, w = rand(*xs, dtype=dtype), rand(units, xs[-1], dtype=dtype)
    params = {"weight": w}
    if bias:
        params["bias"] = rand(units, dtype=dtype)
    copies = {k: v.copy() for k, v in params.items()}
    xc = x.copy()
    y = fwd("dense", x, params=params)
    assert y.dtype == dtype and y.shape == xs[:-1] + (units,)
    close(y, naive_dense(x, w, params.get("bias")), rtol=1e-12 if dtype == np.float64 else 1e-5)
    np.testing.assert_array_equal(x, xc)
    for k in params:
        np.testing.assert_array_equal(params[k], copies[k])


def test_dense_shapes_macs_and_errors():
    w = np.zeros((7, 10))
    assert infer("dense", (None, 10), params={"weight": w}) == ((None, 7), 70)
    assert infer("dense", (None, 5, 10), params={"weight": w, "bias": np.zeros(7)}) == ((None, 5, 7), 350)
    assert infer("dense", (None, None, 10), params={"weight": w}) == ((None, None, 7), 0)
    with pytest.raises(ShapeError, match="9 features.*expects 10"):
        infer("dense", (None, 9), params={"weight": w})
    with pytest.raises(ShapeError, match="rank >= 2"):
        infer("dense", (10,), params={"weight": w})
    with pytest.raises(ShapeError, match=r"\[units, in\]"):
        infer("dense", (None, 10), params={"weight": np.zeros((7, 10, 1))})
    with pytest.raises(ShapeError, match="bias must be"):
        infer("dense", (None, 10), params={"weight": w, "bias": np.zeros(6)})
    with pytest.raises(ParamError, match="weight"):
        infer("dense", (None, 10))
    with pytest.raises(ShapeError, match="9 features"):
        fwd("dense", np.zeros((2, 9)), params={"weight": w})


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.floats(-4, 4), st.integers(0, 2**31))
def test_dense_is_affine(n, i, o, alpha, seed):
    """dense(αx1 + x2) − b = α(dense(x1) − b) + (dense(x2) − b)."""
    r = np.random.default_rng(seed)
    x1, x2 = r.standard_normal((2, n, i))
    w, b = r.standard_normal((o, i)), r.standard_normal(o)
    p = {"weight": w, "bias": b}
    close(fwd("dense", alpha * x1 + x2, params=p) - b,
          alpha * (fwd("dense", x1, params=p) - b) + fwd("dense", x2, params=p) - b, rtol=1e-10)


# ---- pooling -------------------------------------------------------------------------------
def ref_pads(size, k, s, padding, explicit):
    if padding == "valid":
        return 0, 0
    if padding == "explicit":
        return explicit
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def naive_pool(x, kind, pool_size, strides, padding="valid", pads=(0, 0, 0, 0)):
    n_, h, w, c = x.shape
    (kh, kw), (sh, sw) = pool_size, strides
    pt, pb = ref_pads(h, kh, sh, padding, pads[0:2])
    pl, pr = ref_pads(w, kw, sw, padding, pads[2:4])
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    y = np.zeros((n_, oh, ow, c))
    for n, i, j, ch in itertools.product(range(n_), range(oh), range(ow), range(c)):
        vals = []
        for u, v in itertools.product(range(kh), range(kw)):
            hh, ww = i * sh + u - pt, j * sw + v - pl
            if 0 <= hh < h and 0 <= ww < w:
                vals.append(float(x[n, hh, ww, ch]))
        y[n, i, j, ch] = max(vals) if kind == "max" else sum(vals) / len(vals)
    return y


POOL_CASES = [  # (x shape, pool_size, strides, padding, pads)
    ((2, 6, 6, 3), [2, 2], [2, 2], "valid", None),
    ((2, 7, 5, 2), [3, 3], [2, 2], "valid", None),
    ((1, 7, 5, 2), [3, 3], [2, 2], "same", None),
    ((2, 6, 6, 3), [3, 3], [1, 1], "same", None),
    ((1, 5, 8, 2), [2, 3], [2, 1], "same", None),
    ((1, 6, 7, 2), [3, 2], [3, 2], "same", None),
    ((1, 5, 5, 2), [3, 3], [2, 2], "explicit", [1, 2, 2, 0]),
    ((1, 4, 4, 1), [1, 1], [2, 2], "valid", None),
    ((1, 3, 3, 2), [3, 3], [1, 1], "valid", None),
]


@pytest.mark.parametrize("xs,k,s,padding,pads", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pool_matches_definition(xs, k, s, padding, pads, kind, dtype):
    x = rand(*xs, dtype=dtype) - dtype(3)  # mostly negative: zero padding would win a max
    attrs = {"pool_size": k, "strides": s, "padding": padding}
    if pads:
        attrs["pads"] = pads
    xc = x.copy()
    y = fwd(f"{kind}_pool2d", x, attrs)
    assert y.dtype == dtype
    np.testing.assert_array_equal(x, xc)
    ref = naive_pool(x, kind, k, s, padding, pads or (0, 0, 0, 0))
    if kind == "max":
        np.testing.assert_array_equal(y, ref.astype(dtype))  # a max is exact
    else:
        close(y, ref, rtol=1e-12 if dtype == np.float64 else 1e-6)


def test_max_pool_same_padding_never_wins():
    x = -np.arange(1.0, 10.0).reshape(1, 3, 3, 1)  # all negative
    y = fwd("max_pool2d", x, {"pool_size": [2, 2], "strides": [2, 2], "padding": "same"})
    # out 2x2, total pad 1 on each axis: the bottom/right windows are clipped to real values
    np.testing.assert_array_equal(y[0, :, :, 0], [[-1.0, -3.0], [-7.0, -9.0]])
    x = np.full((1, 3, 3, 1), np.float32(-1e30), np.float32)
    y = fwd("max_pool2d", x, {"pool_size": [3, 3], "strides": [1, 1], "padding": "same"})
    assert np.all(y == np.float32(-1e30)) and y.dtype == np.float32


def test_avg_pool_same_divides_by_the_valid_count():
    x = np.ones((1, 3, 3, 1))
    y = fwd("avg_pool2d", x, {"pool_size": [3, 3], "strides": [1, 1], "padding": "same"})
    np.testing.assert_array_equal(y, np.ones_like(x))  # not 4/9, 6/9 at the corners, edges
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    y = fwd("avg_pool2d", x, {"pool_size": [2, 2], "strides": [2, 2], "padding": "same"})
    # windows: {0,1,3,4} / 4, {2,5} / 2, {6,7} / 2, {8} / 1
    np.testing.assert_array_equal(y[0, :, :, 0], [[2.0, 3.5], [6.5, 8.0]])


def test_pool_shapes_macs_and_errors():
    a = {"pool_size": [3, 3], "strides": [2, 2]}
    assert infer("max_pool2d", (None, 7, 8, 4), a) == ((None, 3, 3, 4), 0)
    assert infer("avg_pool2d", (None, 7, 8, 4), a) == ((None, 3, 3, 4), 3 * 3 * 4 * 9)
    assert infer("avg_pool2d", (None, 7, 8, 4), dict(a, padding="same")) == ((None, 4, 4, 4), 4 * 4 * 4 * 9)
    assert infer("max_pool2d", (None, None, 8, 4), dict(a, padding="same"))[0] == (None, None, 4, 4)
    with pytest.raises(ShapeError, match="rank 4"):
        infer("max_pool2d", (None, 7, 4), a)
    with pytest.raises(ShapeError, match="larger than the padded input"):
        infer("avg_pool2d", (None, 2, 8, 4), a)
    with pytest.raises(ShapeError, match="smaller than the pool size"):
        infer("avg_pool2d", (None, 8, 8, 4), dict(a, padding="explicit", pads=[0, 3, 0, 0]))
    with pytest.raises(ShapeError, match=">= 1"):
        infer("max_pool2d", (None, 8, 8, 4), {"pool_size": [2, 2], "strides": [0, 2]})
    with pytest.raises(GraphError, match="needs attribute 'strides'"):
        get_op("max_pool2d").normalise_attrs({"pool_size": [2, 2]}, "t")


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_global_avg_pool(keepdims, dtype):
    x = rand(2, 3, 5, 4, dtype=dtype)
    y = fwd("global_avg_pool2d", x, {"keepdims": keepdims})
    ref = np.zeros((2, 4))
    for n, c in itertools.product(range(2), range(4)):
        ref[n, c] = sum(float(x[n, h, w, c]) for h in range(3) for w in range(5)) / 15
    assert y.dtype == dtype
    assert y.shape == ((2, 1, 1, 4) if keepdims else (2, 4))
    close(y.reshape(2, 4), ref, rtol=1e-12 if dtype == np.float64 else 1e-6)
    assert infer("global_avg_pool2d", (None, 3, 5, 4), {"keepdims": keepdims}) == \
        (((None, 1, 1, 4) if keepdims else (None, 4)), 60)
    with pytest.raises(ShapeError, match="rank 4"):
        infer("global_avg_pool2d", (None, 4))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3),
       st.integers(1, 3), st.sampled_from(["valid", "same"]), st.integers(0, 2**31))
def test_pools_on_random_geometry(h, w, kh, kw, sh, sw, padding, seed):
    """Max and avg agree with the definition; and avg lies between min and max of its window."""
    if padding == "valid" and (kh > h or kw > w):
        return
    x = np.random.default_rng(seed).standard_normal((1, h, w, 2))
    attrs = {"pool_size": [kh, kw], "strides": [sh, sw], "padding": padding}
    ymax, yavg = fwd("max_pool2d", x, attrs), fwd("avg_pool2d", x, attrs)
    np.testing.assert_array_equal(ymax, naive_pool(x, "max", (kh, kw), (sh, sw), padding))
    close(yavg, naive_pool(x, "avg", (kh, kw), (sh, sw), padding))
    ymin = -fwd("max_pool2d", -x, attrs)
    assert np.all(yavg <= ymax + 1e-12) and np.all(yavg >= ymin - 1e-12)
