"""Pooling on channels-last activations [N, *spatial, C] of spatial rank r = 1, 2 or 3:
max_pool{r}d, avg_pool{r}d, max_pool{r}d_indices, global_avg_pool2d, global_max_pool2d.

Definition
    With the window geometry of `refq.layers.pool_geometry` (pool size k, strides s, dilations d,
    padding valid / same / same_lower / explicit, ceil_mode) and V(i) the valid taps u of the
    window of output i (its position p = i·s + u·d in the padded input lies inside the input):
    max_pool{r}d       y[n, i, c] = max_{u ∈ V(i)} x_pad[n, i·s + u·d, c]
                       (padding never wins: it is −inf, the least value of an integer dtype)
    avg_pool{r}d       y[n, i, c] = Σ_{u ∈ V(i)} x_pad[n, i·s + u·d, c] / count(i)
                       count(i) = |V(i)| (count_include_pad False: Keras/TensorFlow 'same'
                       pooling, ONNX's default), or with count_include_pad the taps inside the
                       input and its padding (not the ceil_mode overhang)
    max_pool{r}d_indices  the flat NCHW index of the maximum (ONNX MaxPool's second output;
                       storage_order 0 row-major, 1 column-major spatial positions;
                       `refq.layers.max_pool_scan`), int64
    global_avg_pool2d  y[n, c] = Σ_{h<H, w<W} x[n, h, w, c] / (H·W)
    global_max_pool2d  y[n, c] = max_{h<H, w<W} x[n, h, w, c]
    The 2-D ops with their original attributes (dilations 1, ceil_mode and count_include_pad
    False, padding valid / same / explicit) compute exactly what they computed before these
    attributes existed. ONNX MaxPool with both outputs is two nodes, max_pool{r}d and
    max_pool{r}d_indices, with the same attributes (a refq node has one output).
VJP
    gy = ∂L/∂y; ∂L/∂x is ∂L/∂x_pad without its padding (which never receives gradient):
    avg_pool{r}d       ∂L/∂x_pad[n, i·s + u·d, c] += gy[n, i, c] / count(i) for u ∈ V(i)
    max_pool{r}d       gy to the tap PyTorch's kernels pick (`refq.layers.max_pool_scan`: the
                       first maximum in row-major window order; the last NaN of a window)
    global_max_pool2d  as max_pool2d with the whole image as its window (PyTorch's
                       adaptive_max_pool2d to 1x1: one position takes gy)
    global_avg_pool2d  ∂L/∂x[n, h, w, c] = gy[n, c] / (H·W)
    max_pool{r}d_indices  0 (piecewise constant; an integer output).
    All are linear in gy; but for the choice of the maximum, independent of x.
Shapes
    x: [N, *spatial, C] (rank r + 2); pools y: [N, *out, C]; global: [N, C], or [N, 1, 1, C]
    with keepdims.
Attributes
    pool_size (ints[r], required), strides (ints[r], required: Keras defaults it to pool_size,
    importers fill it in), dilations (ints[r], ones), padding ("valid" | "same" | "same_lower" |
    "explicit", "valid"), pads (ints[2r], per axis before then after; zeros; read only when
    padding == "explicit"), ceil_mode (bool, False), count_include_pad (bool, False; avg only),
    storage_order (int 0 | 1, 0; max_pool{r}d_indices only).
    Missing keys read as their defaults, so that callers passing only the original four
    attributes (the integer kernels) keep working. global_*: keepdims (bool, False).
MACs (accumulations per batch element)
    max 0 (comparisons only); avg Π out · C · Π k; global_avg_pool2d H·W·C; global_max 0.
Errors
    ShapeError when x has the wrong rank or the geometry is invalid (`pool_geometry`).

Evaluation (not part of the definition): the window is separable, so the reduction runs over the
taps of the last spatial axis, then of the one before, and so on, each a vectorised operation on
strided views.
"""
from __future__ import annotations

from functools import reduce

import numpy as np

from ..errors import ShapeError
from .base import Attr, Op, Traits
from .max_pool_scan import max_pool_indices, max_pool_vjp
from .pool_geometry import (POOL_PADDINGS, pad_spatial, pool_geometry, valid_counts,
                            with_pool_defaults)

__all__ = ["OPS", "valid_counts"]


def _check_rank(shape, r, what):
    if len(shape) != r + 2:
        layout = {1: "NLC", 2: "NHWC", 3: "NDHWC"}[r]
        raise ShapeError(f"{what} expects an {layout} input of rank {r + 2}, got shape "
                         f"{list(shape)}")


def _geometry(shape, attrs, r, what):
    _check_rank(shape, r, what)
    return pool_geometry(shape[1:-1], attrs, what)


def _infer_pool(r, what):
    def infer(in_shapes, attrs, params):
        shape = tuple(in_shapes[0])
        _, outs, _ = _geometry(shape, with_pool_defaults(attrs, r), r, what)
        return (shape[0], *outs, shape[-1])
    return infer


def _reduce(xp, k, s, d, outs, combine):
    """Separable window reduction: over the taps of the last spatial axis, then of the one
    before, ... (2-D: the kw columns, then the kh rows of the result)."""
    acc = xp
    for axis in reversed(range(len(k))):
        def view(a, u):
            idx = [slice(None)] * a.ndim
            idx[axis + 1] = slice(u * d[axis], u * d[axis] + (outs[axis] - 1) * s[axis] + 1,
                                  s[axis])
            return a[tuple(idx)]
        y = view(acc, 0).copy()
        for u in range(1, k[axis]):
            combine(y, view(acc, u), out=y)
        acc = y
    return acc


def _max_forward(r, what):
    def forward(inputs, params, attrs):
        x = inputs[0]
        a = with_pool_defaults(attrs, r)
        sides, outs, extents = _geometry(x.shape, a, r, what)
        low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        xp = pad_spatial(x, sides, extents, low)
        return _reduce(xp, a["pool_size"], a["strides"], a["dilations"], outs, np.maximum)
    return forward


def _counts(x_shape, a, sides, outs):
    """count(i) as an integer array [*outs] (module docstring): a product over the axes."""
    per_axis = [valid_counts(n, k, s, b, m, d, (b + n + e) if a["count_include_pad"] else None)
                for n, k, s, d, (b, e), m in zip(x_shape[1:-1], a["pool_size"], a["strides"],
                                                  a["dilations"], sides, outs)]
    return reduce(np.multiply.outer, per_axis)


def _avg_forward(r, what):
    def forward(inputs, params, attrs):
        x = inputs[0]
        a = with_pool_defaults(attrs, r)
        sides, outs, extents = _geometry(x.shape, a, r, what)
        y = _reduce(pad_spatial(x, sides, extents, 0), a["pool_size"], a["strides"],
                    a["dilations"], outs, np.add)
        y /= _counts(x.shape, a, sides, outs).astype(y.dtype)[None, ..., None]
        return y
    return forward


def _avg_vjp(r, what):
    def vjp(inputs, params, attrs, y, gy):
        """avg pooling's vector-Jacobian product (module docstring, VJP): gy over the counts,
        spread back over the windows separably (the adjoint of `_reduce`: the first spatial
        axis's taps, then the next one's, ...)."""
        x = inputs[0]
        a = with_pool_defaults(attrs, r)
        sides, outs, extents = _geometry(x.shape, a, r, what)
        k, s, d = a["pool_size"], a["strides"], a["dilations"]
        g = np.asarray(gy, dtype=x.dtype) / _counts(x.shape, a, sides, outs).astype(
            x.dtype)[None, ..., None]
        for axis in range(r):
            shape = list(g.shape)
            shape[axis + 1] = extents[axis]
            spread = np.zeros(shape, x.dtype)
            for u in range(k[axis]):
                idx = [slice(None)] * spread.ndim
                idx[axis + 1] = slice(u * d[axis], u * d[axis] + (outs[axis] - 1) * s[axis] + 1,
                                      s[axis])
                spread[tuple(idx)] += g
            g = spread
        crop = (slice(None),) + tuple(slice(b, b + n) for (b, _), n in zip(sides, x.shape[1:-1]))
        gx = g[crop]
        return [gx if gx.shape == g.shape else np.ascontiguousarray(gx)], {}
    return vjp


def _max_vjp(r, what):
    def vjp(inputs, params, attrs, y, gy):
        """max pooling's vector-Jacobian product: gy to the tap PyTorch's kernels pick
        (`refq.layers.max_pool_scan.max_pool_vjp`)."""
        x = inputs[0]
        a = with_pool_defaults(attrs, r)
        _geometry(x.shape, a, r, what)
        return [max_pool_vjp(x, gy, a, what)], {}
    return vjp


def _indices_forward(r, what):
    def forward(inputs, params, attrs):
        x = inputs[0]
        a = with_pool_defaults(attrs, r)
        _geometry(x.shape, a, r, what)
        return max_pool_indices(x, a, what)
    return forward


def _zero_vjp(inputs, params, attrs, y, gy):
    """∂L/∂x = 0: the indices are piecewise constant in x (an integer output)."""
    return [np.zeros(inputs[0].shape, inputs[0].dtype)], {}


def _pool_macs(in_shapes, out_shape, attrs, params):
    if None in out_shape[1:]:
        return 0
    return int(np.prod(out_shape[1:], dtype=np.int64)) * int(np.prod(attrs["pool_size"]))


# ---- global pools ----------------------------------------------------------------------------
def _global_shape(what):
    def infer(in_shapes, attrs, params):
        shape = tuple(in_shapes[0])
        _check_rank(shape, 2, what)
        return (shape[0], 1, 1, shape[3]) if attrs["keepdims"] else (shape[0], shape[3])
    return infer


def _gap(inputs, params, attrs):
    x = inputs[0]
    return np.mean(x, axis=(1, 2), keepdims=attrs["keepdims"]).astype(x.dtype, copy=False)


def _gap_vjp(inputs, params, attrs, y, gy):
    """global_avg_pool2d's vector-Jacobian product (module docstring, VJP): gy / (H·W) broadcast
    over H and W."""
    x = inputs[0]
    n, h, w, c = x.shape
    gx = np.empty(x.shape, x.dtype)
    if gx.size:
        gx[...] = np.asarray(gy, dtype=x.dtype).reshape(n, 1, 1, c) / x.dtype.type(h * w)
    return [gx], {}


def _gap_macs(in_shapes, out_shape, attrs, params):
    _, h, w, c = in_shapes[0]
    return 0 if h is None or w is None else int(h * w * c)


def _gmp(inputs, params, attrs):
    x = inputs[0]
    return np.max(x, axis=(1, 2), keepdims=attrs["keepdims"])


def _gmp_vjp(inputs, params, attrs, y, gy):
    """global_max_pool2d's vector-Jacobian product: max_pool2d's with the whole image as the
    window (module docstring, VJP)."""
    x = inputs[0]
    _, h, w, _ = x.shape
    a = with_pool_defaults({"pool_size": [h, w], "strides": [1, 1]}, 2)
    return [max_pool_vjp(x, gy, a, "global_max_pool2d")], {}


# ---- records ---------------------------------------------------------------------------------
def _attrs(r, avg):
    a = {"pool_size": Attr("ints", length=r),
         "strides": Attr("ints", length=r),
         "dilations": Attr("ints", (1,) * r, length=r),
         "padding": Attr("str", "valid", choices=POOL_PADDINGS),
         "pads": Attr("ints", (0,) * (2 * r), length=2 * r),
         "ceil_mode": Attr("bool", False)}
    if avg:
        a["count_include_pad"] = Attr("bool", False)
    return a


def _pool_ops(r):
    mx, av, ix = f"max_pool{r}d", f"avg_pool{r}d", f"max_pool{r}d_indices"
    return [
        Op(mx, _max_forward(r, mx), _infer_pool(r, mx), attrs=_attrs(r, False),
           vjp=_max_vjp(r, mx),
           traits=Traits("MaxPool", grid_preserving=True, lowering="grid")),
        Op(av, _avg_forward(r, av), _infer_pool(r, av), attrs=_attrs(r, True),
           macs=_pool_macs, vjp=_avg_vjp(r, av),
           traits=Traits("AveragePool", lowering="avg_pool")),
        Op(ix, _indices_forward(r, ix), _infer_pool(r, ix),
           attrs={**_attrs(r, False), "storage_order": Attr("int", 0, minimum=0, maximum=1)},
           vjp=_zero_vjp, traits=Traits("MaxPool")),
    ]


OPS = [
    *_pool_ops(2),
    Op("global_avg_pool2d", _gap, _global_shape("global_avg_pool2d"),
       attrs={"keepdims": Attr("bool", False)}, macs=_gap_macs, vjp=_gap_vjp,
       traits=Traits("GlobalAveragePool", lowering="mean")),
    Op("global_max_pool2d", _gmp, _global_shape("global_max_pool2d"),
       attrs={"keepdims": Attr("bool", False)}, vjp=_gmp_vjp,
       traits=Traits("GlobalMaxPool", grid_preserving=True, lowering="grid")),
    *_pool_ops(1),
    *_pool_ops(3),
]
