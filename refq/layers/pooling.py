"""Spatial pooling on NHWC activations: max_pool2d, avg_pool2d, global_avg_pool2d.

Definition
    With x_pad the input padded by (pt, pb, pl, pr) and V(i, j) the set of taps (u, v), u < kh,
    v < kw, whose position (i·sh + u, j·sw + v) in x_pad lies inside the original input:
    max_pool2d         y[n, i, j, c] = max_{(u,v) ∈ V(i,j)} x_pad[n, i·sh + u, j·sw + v, c]
                       (padding never wins: it is −inf, the least value of an integer dtype)
    avg_pool2d         y[n, i, j, c] = Σ_{(u,v) ∈ V(i,j)} x_pad[n, i·sh + u, j·sw + v, c] / |V(i, j)|
                       (count_include_pad = False: divide by the number of valid elements, as
                       Keras/TensorFlow 'same' pooling does)
    global_avg_pool2d  y[n, c] = Σ_{h<H, w<W} x[n, h, w, c] / (H·W)
    Padding and output sizes follow conv2d (`refq.layers.conv.window_geometry`) with dilation 1:
    "same" is TensorFlow's rule (out = ceil(in / stride), the extra pad row/column at the bottom/right).
VJP
    gy = ∂L/∂y; ∂L/∂x is ∂L/∂x_pad without its padded rows and columns (padding never receives
    gradient), where ∂L/∂x_pad sums the contributions of every window holding the position
    (overlapping windows, stride < pool size, accumulate; positions no window covers get 0):
    avg_pool2d         ∂L/∂x_pad[n, i·sh + u, j·sw + v, c] += gy[n, i, j, c] / |V(i, j)|
                       for (u, v) ∈ V(i, j): the same valid count the forward divides by.
    max_pool2d         ∂L/∂x_pad[n, i·sh + u*, j·sw + v*, c] += gy[n, i, j, c]
                       for the one tap (u*, v*) = t*(n, i, j, c) ∈ V(i, j) that PyTorch's max-pool
                       kernels pick: scan V(i, j) in row-major order (u, then v) from its first tap
                       with running maximum −inf, and move to a tap whose value is greater than the
                       running maximum or is NaN. Hence: on a tie the first maximum in row-major
                       window order takes all of gy (the derivative of the branch in which it is
                       the maximum); a window holding NaN (y = NaN) sends gy to its last NaN; a
                       window whose values are all −inf sends it to its first valid tap.
    global_avg_pool2d  ∂L/∂x[n, h, w, c] = gy[n, c] / (H·W)   (gy [N, 1, 1, C] with keepdims).
    All three are linear in gy and, but for the choice of t*, independent of x: a NaN or inf in x
    does not reach ∂L/∂x of avg_pool2d or global_avg_pool2d.
Shapes
    x: [N, H, W, C]; max/avg: y [N, OH, OW, C]; global: y [N, C], or [N, 1, 1, C] with keepdims.
Attributes
    max_pool2d, avg_pool2d: pool_size (ints[2], required), strides (ints[2], required: Keras
    defaults it to pool_size, importers fill it in), padding ("valid" | "same" | "explicit",
    "valid"), pads (ints[4] [top, bottom, left, right], zeros; read only when padding == "explicit").
    global_avg_pool2d: keepdims (bool, False).
MACs (accumulations per batch element)
    max_pool2d 0 (comparisons only); avg_pool2d OH·OW·C·kh·kw; global_avg_pool2d H·W·C.
Errors
    ShapeError when x is not rank 4, a pool size or stride is < 1, an explicit pad is < 0 or not
    smaller than the pool size on its axis (a window would hold only padding), or the window is
    larger than the padded input.

Evaluation (not part of the definition): the window is separable, so the reduction runs over the
kw column taps and then the kh row taps, each a vectorised operation on strided views.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .base import Attr, Op, Traits
from .activations import _zero_where
from .conv import PADDINGS, pad_hw, window_geometry


def _check_rank4(shape, what):
    if len(shape) != 4:
        raise ShapeError(f"{what} expects an NHWC input of rank 4, got shape {list(shape)}")


def _geometry(shape, attrs, what):
    _check_rank4(shape, what)
    k, s = attrs["pool_size"], attrs["strides"]
    if min(k) < 1 or min(s) < 1:
        raise ShapeError(f"{what}: pool_size {list(k)} and strides {list(s)} must be >= 1")
    if attrs["padding"] == "explicit":
        p = attrs["pads"]
        if max(p[0], p[1]) >= k[0] or max(p[2], p[3]) >= k[1]:
            raise ShapeError(f"{what}: explicit pads {list(p)} must be smaller than the pool size "
                             f"{list(k)} (a window would hold only padding)")
    return window_geometry(shape[1:3], k, s, (1, 1), attrs["padding"], attrs["pads"], what)


def _infer_pool(what):
    def infer(in_shapes, attrs, params):
        shape = tuple(in_shapes[0])
        _, (oh, ow) = _geometry(shape, attrs, what)
        return (shape[0], oh, ow, shape[3])
    return infer


def _reduce(xp, k, s, oh, ow, combine):
    """Separable window reduction: over the kw columns, then over the kh rows of the result."""
    (kh, kw), (sh, sw) = k, s
    cols = xp[:, :, 0:(ow - 1) * sw + 1:sw].copy()
    for v in range(1, kw):
        combine(cols, xp[:, :, v:v + (ow - 1) * sw + 1:sw], out=cols)
    y = cols[:, 0:(oh - 1) * sh + 1:sh].copy()
    for u in range(1, kh):
        combine(y, cols[:, u:u + (oh - 1) * sh + 1:sh], out=y)
    return y


def _max_pool(inputs, params, attrs):
    x = inputs[0]
    pads, (oh, ow) = _geometry(x.shape, attrs, "max_pool2d")
    low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    xp = pad_hw(x, pads, value=low)
    return _reduce(xp, attrs["pool_size"], attrs["strides"], oh, ow, np.maximum)


def valid_counts(size, k, s, before, out):
    """Per output position along one axis: how many of the k taps fall inside [before, before+size)."""
    pos = np.arange(out)[:, None] * s + np.arange(k)[None, :]
    return np.sum((pos >= before) & (pos < before + size), axis=1)


def _avg_pool(inputs, params, attrs):
    x = inputs[0]
    pads, (oh, ow) = _geometry(x.shape, attrs, "avg_pool2d")
    (kh, kw), (sh, sw) = attrs["pool_size"], attrs["strides"]
    y = _reduce(pad_hw(x, pads), (kh, kw), (sh, sw), oh, ow, np.add)
    count = np.multiply.outer(valid_counts(x.shape[1], kh, sh, pads[0], oh),
                              valid_counts(x.shape[2], kw, sw, pads[2], ow))
    y /= count.astype(y.dtype)[None, :, :, None]
    return y


def _tap(a, u, v, oh, ow, s):
    """The [N, OH, OW, C] strided view of `a` (a padded input or its gradient) at tap (u, v)."""
    sh, sw = s
    return a[:, u:u + (oh - 1) * sh + 1:sh, v:v + (ow - 1) * sw + 1:sw]


def _unpad(gp, pads, shape):
    """The gradient of the unpadded input: gp [N, H + pt + pb, W + pl + pr, C] without its pads."""
    t, _, l, _ = pads
    _, h, w, _ = shape
    return gp if gp.shape == tuple(shape) else gp[:, t:t + h, l:l + w].copy()


def _max_pool_vjp(inputs, params, attrs, y, gy):
    """max_pool2d's vector-Jacobian product (module docstring, VJP): the PyTorch scan over the
    kh·kw taps picks t* per output element, then each tap adds gy where it was picked.

    The scan keeps, per tap, where it moved (its value greater than the running maximum, or NaN;
    the running maximum is then np.maximum's, NaN once a NaN was seen); t* is the last tap that
    moved, or the first valid tap where none did. Each tap's share, gy where it is t* and +0
    elsewhere, is a branch-free select (`_zero_where`), written straight into ∂L/∂x_pad when
    the windows do not overlap (strides >= pool size), added otherwise."""
    x = inputs[0]
    pads, (oh, ow) = _geometry(x.shape, attrs, "max_pool2d")
    (kh, kw), s = attrs["pool_size"], attrs["strides"]
    xp = pad_hw(x, pads, value=-np.inf)
    out_shape = (x.shape[0], oh, ow, x.shape[3])
    taps = [(u, v) for u in range(kh) for v in range(kw)]
    best = np.full(out_shape, -np.inf, x.dtype)
    moved = []
    for u, v in taps:
        val = _tap(xp, u, v, oh, ow, s)
        m = np.greater(val, best)
        m |= np.isnan(val)
        moved.append(m)
        np.maximum(best, val, out=best)
    g = np.asarray(gy, dtype=x.dtype)
    gp = np.zeros(xp.shape, x.dtype)
    overlap = s[0] < kh or s[1] < kw
    share = np.empty(out_shape, x.dtype) if overlap else None
    mask = np.empty(out_shape, np.dtype(f"u{x.itemsize}"))
    later = np.zeros(out_shape, bool)            # a later tap moved
    not_picked = [None] * len(taps)
    for k in reversed(range(len(taps))):
        not_picked[k] = np.logical_or(later, np.logical_not(moved[k]))
        later |= moved[k]
    for (u, v), skip in zip(taps, not_picked):  # row-major order, as the scan
        dst = _tap(gp, u, v, oh, ow, s)
        if overlap:
            dst += _zero_where(skip, g, share, mask)
        else:
            _zero_where(skip, g, dst, mask)
    none_moved = ~later
    if none_moved.any():   # windows of −inf only: gy goes to the first valid tap (u0(i), v0(j))
        u0 = np.maximum(pads[0] - np.arange(oh) * s[0], 0)
        v0 = np.maximum(pads[2] - np.arange(ow) * s[1], 0)
        first = (u0[:, None] * kw + v0[None, :])[None, :, :, None]
        for k, (u, v) in enumerate(taps):
            here = none_moved & (first == k)
            _tap(gp, u, v, oh, ow, s)[here] += g[here]
    return [_unpad(gp, pads, x.shape)], {}


def _avg_pool_vjp(inputs, params, attrs, y, gy):
    """avg_pool2d's vector-Jacobian product (module docstring, VJP): gy over the valid counts,
    spread back over the windows separably (the adjoint of `_reduce`: the kh row taps, then the
    kw column taps)."""
    x = inputs[0]
    pads, (oh, ow) = _geometry(x.shape, attrs, "avg_pool2d")
    (kh, kw), (sh, sw) = attrs["pool_size"], attrs["strides"]
    count = np.multiply.outer(valid_counts(x.shape[1], kh, sh, pads[0], oh),
                              valid_counts(x.shape[2], kw, sw, pads[2], ow))
    g = np.asarray(gy, dtype=x.dtype) / count.astype(x.dtype)[None, :, :, None]
    n, h, w, c = x.shape
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    rows = np.zeros((n, hp, ow, c), x.dtype)
    for u in range(kh):
        rows[:, u:u + (oh - 1) * sh + 1:sh] += g
    gp = np.zeros((n, hp, wp, c), x.dtype)
    for v in range(kw):
        gp[:, :, v:v + (ow - 1) * sw + 1:sw] += rows
    return [_unpad(gp, pads, x.shape)], {}


def _pool_macs(in_shapes, out_shape, attrs, params):
    if out_shape[1] is None or out_shape[2] is None:
        return 0
    kh, kw = attrs["pool_size"]
    return int(out_shape[1] * out_shape[2] * out_shape[3] * kh * kw)


def _gap_shape(in_shapes, attrs, params):
    shape = tuple(in_shapes[0])
    _check_rank4(shape, "global_avg_pool2d")
    return (shape[0], 1, 1, shape[3]) if attrs["keepdims"] else (shape[0], shape[3])


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


_POOL_ATTRS = {"pool_size": Attr("ints", length=2),
               "strides": Attr("ints", length=2),
               "padding": Attr("str", "valid", choices=PADDINGS),
               "pads": Attr("ints", (0, 0, 0, 0), length=4)}

OPS = [
    Op("max_pool2d", _max_pool, _infer_pool("max_pool2d"), attrs=dict(_POOL_ATTRS),
       vjp=_max_pool_vjp, traits=Traits("MaxPool", grid_preserving=True, lowering="grid")),
    Op("avg_pool2d", _avg_pool, _infer_pool("avg_pool2d"), attrs=dict(_POOL_ATTRS),
       macs=_pool_macs, vjp=_avg_pool_vjp, traits=Traits("AveragePool", lowering="avg_pool")),
    Op("global_avg_pool2d", _gap, _gap_shape, attrs={"keepdims": Attr("bool", False)},
       macs=_gap_macs, vjp=_gap_vjp, traits=Traits("GlobalAveragePool", lowering="mean")),
]
