"""The evaluation paths of the conv2d, max_pool2d, activation and batch_norm VJPs, against their
definitions (refq/layers/conv.py, pooling.py, activations.py, normalization.py).

conv2d's VJP has separate evaluations for depthwise (multiplier 1), group-1 1x1 and group-1
larger kernels (taps scattered as contiguous runs of sw adjacent columns, a shorter last group
followed by stored zeros, or tap by tap); each is checked entry by entry against the forward on
the geometries that select each of its branches, and for the products with padding that only
the definition forms (a non-finite gy at an output pixel whose tap reads padding makes that
∂L/∂w entry NaN). The elementwise selects must give an exact +0 for any cotangent, and
batch_norm's blocked sums must match the definition on shapes that span several blocks and a
tail shorter than a row.
"""
from __future__ import annotations

import numpy as np
import pytest

from refq.layers import REGISTRY
from refq.layers import normalization

CONV = REGISTRY["conv2d"]


def attrs_of(op, **attrs):
    return op.normalise_attrs(attrs, f"test {op.name}")


def conv_vjp(x, w, attrs, gy=None, seed=1):
    a = attrs_of(CONV, **attrs)
    y = CONV.forward([x], {"weight": w}, a)
    if gy is None:
        gy = np.random.default_rng(seed).standard_normal(y.shape)
    (gx,), gp = CONV.vjp([x], {"weight": w}, a, y, gy)
    return gy, gx, gp["weight"]


def conv_reference(x, w, attrs, gy):
    """(∂L/∂x, ∂L/∂w) of L = <conv(x, w), gy> from the forward alone: conv2d is linear in x and
    in w, so each entry is <conv(e, w), gy> or <conv(x, e), gy> for a one-hot e."""
    a = attrs_of(CONV, **attrs)
    eye = np.eye(x[0].size).reshape(-1, *x.shape[1:])
    gx = np.stack([np.einsum("kijo,ijo->k", CONV.forward([eye], {"weight": w}, a), gy[n])
                   for n in range(len(x))]).reshape(x.shape)
    gw = np.empty(w.shape)
    for k in range(w.size):
        e = np.zeros(w.size)
        e[k] = 1
        gw.flat[k] = np.sum(CONV.forward([x], {"weight": e.reshape(w.shape)}, a) * gy)
    return gx, gw


def assert_vjp_is_the_forwards(x, w, strides, dil, padding, pads, groups=1):
    """conv2d's VJP equals the reference built from the forward, to 1e-12."""
    attrs = {"strides": list(strides), "dilations": list(dil), "padding": padding,
             "groups": groups}
    if pads:
        attrs["pads"] = pads
    gy, gx, gw = conv_vjp(x, w, attrs)
    rx, rw = conv_reference(x, w, attrs, gy)
    np.testing.assert_allclose(gx, rx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, rw, rtol=1e-12, atol=1e-12)


GROUP1 = [  # (kernel, strides, dilations, padding, pads, C): every branch of the group-1 paths
    ((1, 1), (1, 1), (1, 1), "valid", None, 3),              # 1x1: x itself
    ((1, 1), (2, 3), (1, 1), "valid", None, 2),              # 1x1 strided: unread pixels get 0
    ((1, 1), (2, 2), (1, 1), "explicit", [1, 2, 3, 0], 3),   # 1x1 reading padding
    ((3, 3), (2, 2), (1, 1), "valid", None, 3),              # runs of 2 taps, a short last one
    ((3, 3), (2, 2), (1, 1), "same", None, 2),
    ((2, 5), (1, 3), (1, 1), "explicit", [0, 1, 2, 2], 2),   # a short group of 2 taps
    ((3, 4), (2, 2), (1, 1), "valid", None, 1),              # whole runs only
    ((3, 3), (1, 2), (2, 2), "same", None, 2),               # dilated: tap by tap
    ((2, 3), (1, 1), (1, 1), "same", None, 4),               # sw = 1: every tap a run
]


@pytest.mark.parametrize("kernel,strides,dil,padding,pads,c", GROUP1)
@pytest.mark.parametrize("width", [7, 8, 11])
def test_group1_paths_match_the_forward(kernel, strides, dil, padding, pads, c, width):
    r = np.random.default_rng(width + c)
    x = r.standard_normal((2, 6, width, c))
    w = r.standard_normal((3, *kernel, c))
    assert_vjp_is_the_forwards(x, w, strides, dil, padding, pads)


DEPTHWISE = [  # (kernel, strides, dilations, padding, pads, H, W)
    ((5, 5), (1, 1), (1, 1), "same", None, 2, 9),    # most taps read padding in some rows
    ((5, 5), (2, 1), (1, 1), "valid", None, 7, 9),
    ((3, 3), (2, 2), (2, 1), "same", None, 5, 6),
    ((3, 2), (1, 3), (1, 2), "explicit", [3, 0, 1, 4], 4, 5),   # taps reading only padding
]


@pytest.mark.parametrize("kernel,strides,dil,padding,pads,h,w", DEPTHWISE)
def test_depthwise_paths_match_the_forward(kernel, strides, dil, padding, pads, h, w):
    r = np.random.default_rng(h * w)
    x = r.standard_normal((2, h, w, 3))
    wt = r.standard_normal((3, *kernel, 1))
    assert_vjp_is_the_forwards(x, wt, strides, dil, padding, pads, groups=3)


@pytest.mark.parametrize("groups,kernel", [(1, (1, 1)), (3, (3, 3))])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_cotangent_where_the_window_reads_only_padding(groups, kernel, bad):
    """pads [2, 0, 2, 0]: output pixel (0, 0) of the 1x1 kernel reads only padding, and every
    tap of the 3x3 one reads padding there except (2, 2). Its gy · 0 products are NaN for a
    non-finite gy: with gy = inf, ∂L/∂w of its channel is NaN on exactly the taps that read
    padding and ±inf on the others; the other channels (and, 1x1, ∂L/∂x) are unchanged."""
    r = np.random.default_rng(3)
    c = 3
    x = r.standard_normal((1, 4, 5, c))
    w = r.standard_normal((c if groups > 1 else 2, *kernel, c // groups))
    attrs = {"padding": "explicit", "pads": [2, 0, 2, 0], "groups": groups}
    gy, gx0, gw0 = conv_vjp(x, w, attrs)
    o = w.shape[0] - 1
    gy = gy.copy()
    gy[0, 0, 0, o] = bad
    with np.errstate(invalid="ignore"):
        _, gx, gw = conv_vjp(x, w, attrs, gy=gy)
    reads_pad = np.ones(kernel, bool)
    reads_pad[-1, -1] = kernel == (1, 1)
    nan = np.isnan(gw[o]).all(axis=-1)
    np.testing.assert_array_equal(nan, reads_pad | np.isnan(bad))   # inf · x is ±inf, not NaN
    assert not np.isfinite(gw[o]).any()
    np.testing.assert_array_equal(gw[:o], gw0[:o])
    if kernel == (1, 1):
        np.testing.assert_array_equal(gx, gx0)


def test_max_pool_overlapping_and_disjoint_windows_match_a_scan():
    """Random ties, NaN and −inf windows, overlapping (stride 1) and disjoint (stride 2) windows:
    each output element's gy goes to the tap of the PyTorch scan (module docstring)."""
    op = REGISTRY["max_pool2d"]
    r = np.random.default_rng(4)
    x = np.round(r.standard_normal((2, 6, 7, 3)))
    x[0, :2, :2] = -np.inf
    x[1, 3, 4, 1] = np.nan
    x[1, 3, 5, 1] = np.nan
    for strides in ([1, 1], [2, 2]):
        attrs = attrs_of(op, pool_size=[2, 2], strides=strides, padding="same")
        with np.errstate(invalid="ignore"):
            y = op.forward([x], {}, attrs)
        gy = r.standard_normal(y.shape)
        (gx,), _ = op.vjp([x], {}, attrs, y, gy)
        pads = {1: (0, 1, 0, 1), 2: (0, 0, 0, 1)}[strides[0]]
        ref = np.zeros((2, 6 + pads[0] + pads[1], 7 + pads[2] + pads[3], 3))
        for n, i, j, c in np.ndindex(*y.shape):
            best, pick = -np.inf, None
            for u in range(2):
                for v in range(2):
                    p, q = i * strides[0] + u, j * strides[1] + v
                    if p >= 6 or q >= 7:
                        continue   # padding
                    if pick is None:
                        pick = (p, q)
                    if x[n, p, q, c] > best or np.isnan(x[n, p, q, c]):
                        best, pick = x[n, p, q, c], (p, q)
            ref[(n, *pick, c)] += gy[n, i, j, c]
        np.testing.assert_allclose(gx, ref[:, :6, :7], rtol=1e-15, atol=0)


@pytest.mark.parametrize("name,attrs,flat", [
    ("relu", {}, [-2.0, 0.0, -0.0]),
    ("relu6", {}, [-1.0, 6.0, 9.0]),
    ("clip", {"min": -1.0, "max": 1.0}, [-1.0, 1.0, 3.0]),
    ("hard_swish", {}, [-3.5, -100.0, -np.inf]),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_selects_give_exact_positive_zero(name, attrs, flat, dtype):
    """On flat pieces the gradient is +0.0 (not −0.0, not NaN) for any cotangent, in a large
    array whose mask is mixed (the branch-free selects)."""
    op = REGISTRY[name]
    r = np.random.default_rng(5)
    x = r.standard_normal((4, 50, 50)).astype(dtype) * 4
    x.reshape(-1)[::3] = np.resize(np.array(flat, dtype), x.reshape(-1)[::3].shape)
    gy = r.standard_normal(x.shape).astype(dtype)
    gy.reshape(-1)[::7] = np.resize(np.array([np.inf, -np.inf, np.nan, -2.0], dtype),
                                    gy.reshape(-1)[::7].shape)
    a = attrs_of(op, **attrs)
    with np.errstate(invalid="ignore"):
        (g,), _ = op.vjp([x], {}, a, op.forward([x], {}, a), gy)
        expect = REGISTRY[name].vjp([x[:1, :1]], {}, a, None, gy[:1, :1])[0][0]
    np.testing.assert_array_equal(g[:1, :1], expect)
    flat_x = np.isin(x, np.array(flat, dtype)) | (x < -3 if name == "hard_swish" else False)
    assert g.dtype == dtype
    assert np.all(g[flat_x] == 0) and not np.signbit(g[flat_x]).any()


@pytest.mark.parametrize("shape", [(3, 7, 5), (2, 33, 130), (1, 3, 3, 2000), (5, 4097)])
def test_batch_norm_blocked_sums(shape, monkeypatch):
    """Σ over several blocks of rows, a tail shorter than a row, and a row holding one channel
    (C > _VJP_ROW): the same gradients as the definition in float64."""
    monkeypatch.setattr(normalization, "_VJP_BLOCK", 1 << 12)
    op = REGISTRY["batch_norm"]
    r = np.random.default_rng(sum(shape))
    c = shape[-1]
    x = r.standard_normal(shape) * 3 + 1
    gy = r.standard_normal(shape)
    p = {"gamma": r.uniform(0.5, 2, c), "beta": r.standard_normal(c),
         "mean": r.standard_normal(c), "variance": r.uniform(0.1, 2, c)}
    a = attrs_of(op, epsilon=1e-3)
    (gx,), g = op.vjp([x], p, a, None, gy)
    rr = 1 / np.sqrt(p["variance"] + 1e-3)
    axes = tuple(range(len(shape) - 1))
    dot = np.sum(gy * (x - p["mean"]), axis=axes)
    np.testing.assert_allclose(gx, gy * p["gamma"] * rr, rtol=1e-13)
    np.testing.assert_allclose(g["beta"], gy.sum(axis=axes), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g["gamma"], rr * dot, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g["mean"], -p["gamma"] * rr * gy.sum(axis=axes), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(g["variance"], -0.5 * p["gamma"] * rr ** 3 * dot, rtol=1e-10,
                               atol=1e-12)
