"""Window geometry of the poolings of any spatial rank r (1, 2 or 3) on [N, *spatial, C].

Per spatial axis of size n, with pool size k, stride s, dilation d and effective size
k' = (k − 1)·d + 1, the window of output i holds the taps u < k at position p = i·s + u·d of the
input padded by `before` (b) and `after` (a):
    padding "valid":      b = a = 0;
    padding "explicit":   pads = [b_0, a_0, b_1, a_1, ...] (per axis, before then after: for r = 2
                          [top, bottom, left, right]), each >= 0 and < k;
    padding "same" (TensorFlow's rule and ONNX SAME_UPPER) / "same_lower" (ONNX SAME_LOWER):
                          out = ceil(n / s), total = max((out − 1)·s + k' − n, 0),
                          same: b = total // 2; same_lower: b = total − total // 2; a = total − b.
    Output size (valid and explicit): floor((n + b + a − k') / s) + 1; with ceil_mode, ceil
    instead of floor, less one when the last window would start at or beyond n + b (in the
    right padding), as ONNX and PyTorch define it. With "same", ceil_mode changes nothing (the
    size is ceil(n / s) already; onnxruntime's rule).
    A tap is valid when b <= p < b + n (it reads the input). With ceil_mode the last windows may
    reach beyond n + b + a; those positions are neither input nor padding.
    count_include_pad (average pooling): the divisor counts the taps with 0 <= p < b + n + a
    (input and padding, not the ceil_mode overhang: PyTorch's and onnxruntime's rule) instead of
    the valid ones. Validity is a product over the axes, so counts are products of per-axis
    counts.
Errors: ShapeError when a pool size, stride or dilation is < 1, an explicit pad is negative or not
below the pool size, the padded input is smaller than the window, or a window holds no valid tap.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError

__all__ = ["POOL_PADDINGS", "with_pool_defaults", "pool_geometry", "valid_counts", "pad_spatial", "tap_view"]

POOL_PADDINGS = ("valid", "same", "same_lower", "explicit")


def with_pool_defaults(attrs, r):
    """attrs with every pooling attribute present (defaults for the keys a caller left out)."""
    out = dict(attrs)
    out.setdefault("dilations", [1] * r)
    out.setdefault("ceil_mode", False)
    out.setdefault("count_include_pad", False)
    out.setdefault("padding", "valid")
    out.setdefault("pads", [0] * (2 * r))
    return out


def pool_geometry(spatial, attrs, what):
    """([(b, a) per axis], [out per axis], [padded extent per axis]) for the spatial sizes
    `spatial` (None when unknown: then b, a, out and the extent may be None). The extent is
    b + n + a plus the ceil_mode overhang: the size of the padded copy the windows read."""
    r = len(spatial)
    k, s, d = attrs["pool_size"], attrs["strides"], attrs["dilations"]
    if min(k) < 1 or min(s) < 1 or min(d) < 1:
        raise ShapeError(f"{what}: pool_size {list(k)}, strides {list(s)} and dilations {list(d)} "
                         "must be >= 1")
    padding, pads, ceil = attrs["padding"], attrs["pads"], attrs["ceil_mode"]
    if padding == "explicit":
        bad = [j for j in range(2 * r) if not 0 <= pads[j] < k[j // 2]]
        if bad:
            raise ShapeError(f"{what}: explicit pads {list(pads)} must be >= 0 and smaller than "
                             f"the pool size {list(k)} (a window would hold only padding)")
    sides, outs, extents = [], [], []
    for axis, (n, kk, ss, dd) in enumerate(zip(spatial, k, s, d)):
        keff = (kk - 1) * dd + 1
        if padding == "valid":
            b, a = 0, 0
        elif padding == "explicit":
            b, a = pads[2 * axis], pads[2 * axis + 1]
        elif n is None:
            sides.append((None, None))
            outs.append(None)
            extents.append(None)
            continue
        else:
            total = max((-(-n // ss) - 1) * ss + keff - n, 0)
            b = total // 2 if padding == "same" else total - total // 2
            a = total - b
        if n is None:
            sides.append((b, a))
            outs.append(None)
            extents.append(None)
            continue
        if n + b + a < keff:
            raise ShapeError(f"{what}: the window of spatial axis {axis} (pool size {kk}, "
                             f"dilation {dd}, effective {keff}) is larger than the padded input "
                             f"{n} + {b} + {a} = {n + b + a}")
        span = n + b + a - keff
        out = span // ss + 1
        if ceil and padding in ("valid", "explicit"):
            out = -(-span // ss) + 1
            if (out - 1) * ss >= n + b:
                out -= 1
        if not valid_counts(n, kk, ss, b, out, dd).all():
            raise ShapeError(f"{what}: a window of spatial axis {axis} holds no input element "
                             f"(size {n}, pads {b}, {a}, pool size {kk}, dilation {dd}, stride "
                             f"{ss}); reduce the pads or the dilation")
        sides.append((b, a))
        outs.append(out)
        extents.append(max(n + b + a, (out - 1) * ss + keff))
    return sides, outs, extents


def valid_counts(size, k, s, before, out, d=1, limit=None):
    """Per output position along one axis: how many of the k taps (at i·s + u·d) fall inside
    [before, before + size), or inside [0, limit) when `limit` is given (count_include_pad)."""
    pos = np.arange(out)[:, None] * s + np.arange(k)[None, :] * d
    if limit is not None:
        return np.sum(pos < limit, axis=1)
    return np.sum((pos >= before) & (pos < before + size), axis=1)


def pad_spatial(x, sides, extents, value):
    """x [N, *spatial, C] placed at offset b of each axis in a C-contiguous array of the padded
    extents filled with `value`; x itself when nothing is added."""
    spatial = x.shape[1:-1]
    if all(b == 0 for b, _ in sides) and tuple(extents) == tuple(spatial):
        return x
    out = np.full((x.shape[0], *extents, x.shape[-1]), value, x.dtype)
    out[(slice(None),) + tuple(slice(b, b + n) for (b, _), n in zip(sides, spatial))] = x
    return out


def tap_view(a, offsets, outs, strides):
    """The [N, *outs, C] strided view of `a` (a padded input or its gradient) at the tap whose
    padded offsets per axis are `offsets`."""
    return a[(slice(None),) + tuple(slice(o, o + (m - 1) * s + 1, s)
                                    for o, m, s in zip(offsets, outs, strides))]
