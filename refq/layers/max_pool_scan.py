"""Which tap of a max-pooling window is "the" maximum: the VJP of max pooling and its indices.

The tap t*(n, i, c) of a window (i the output position, over every spatial axis) is the one
PyTorch's max-pool kernels pick: scan the window's taps in row-major order (the first spatial
axis slowest) from its first tap with running maximum −inf, and move to a tap whose value is
greater than the running maximum or is NaN. Hence: on a tie the first maximum in row-major window
order; a window holding NaN picks its last NaN; a window whose values are all −inf picks its
first valid tap (padding never: it is −inf and no tap moves to it).

VJP (max_pool{1,2,3}d, global_max_pool2d)
    ∂L/∂x_pad[n, i·s + t*·d, c] += gy[n, i, c], summed over the windows (overlapping windows,
    stride < pool size, accumulate; positions no window picks get 0); ∂L/∂x is ∂L/∂x_pad without
    the padding (which t* never is). Linear in gy: an infinite or NaN gy reaches only the
    position its window picked.
Indices (max_pool{1,2,3}d_indices; ONNX MaxPool's second output)
    index[n, i, c] = flat position of t* in the image x[n] read in ONNX's NCHW order:
      storage_order 0 (row-major, the last spatial axis fastest):
        1-D: c·L + l;   2-D: (c·H + h)·W + w;   3-D: ((c·D + z)·H + h)·W + w,
      storage_order 1 (column-major spatial positions, the first spatial axis fastest; the
      channel still counts c·Π spatial, as ONNX's reference and onnxruntime compute it):
        1-D: c·L + l;   2-D: c·H·W + w·H + h;   3-D: c·D·H·W + (w·H + h)·D + z,
    (z, h, w) = i·s + t*·d − b the input coordinates of the picked tap. ONNX adds n·C·Π spatial
    for image n of the batch; refq leaves it out, so that an image's indices do not depend on
    the batch it runs in (refq cuts batches into chunks): the ONNX value is index + n·C·Π spatial.
    On finite values ONNX's kernels pick the first maximum too (a strict > scan); they skip NaN.
"""
from __future__ import annotations

import itertools

import numpy as np

from .activations import _zero_where
from .pool_geometry import pad_spatial, pool_geometry, tap_view

__all__ = ["scan", "max_pool_vjp", "max_pool_indices"]


def _taps(k, d):
    """Padded offsets of the taps, in row-major window order."""
    return [tuple(u * dd for u, dd in zip(t, d)) for t in itertools.product(*map(range, k))]


def _first_valid(sides, outs, k, s, d):
    """[*outs] flat (row-major) tap number of the first valid tap of each window."""
    first = np.zeros((), np.int64)
    for (b, _), m, kk, ss, dd in zip(sides, outs, k, s, d):
        u0 = np.maximum(-((np.arange(m) * ss - b) // dd), 0)    # ceil((b − i·s) / d), at least 0
        first = first[..., None] * kk + u0
    return first


def scan(x, attrs, what):
    """(xp, sides, outs, offsets, moved, later) of the scan (module docstring) over x
    [N, *spatial, C]: moved[k] where tap k moved, `later` where any tap moved."""
    sides, outs, extents = pool_geometry(x.shape[1:-1], attrs, what)
    xp = pad_spatial(x, sides, extents, -np.inf)
    offsets = _taps(attrs["pool_size"], attrs["dilations"])
    out_shape = (x.shape[0], *outs, x.shape[-1])
    best = np.full(out_shape, -np.inf, x.dtype)
    moved = []
    for off in offsets:
        val = tap_view(xp, off, outs, attrs["strides"])
        m = np.greater(val, best)
        m |= np.isnan(val)
        moved.append(m)
        np.maximum(best, val, out=best)
    later = np.zeros(out_shape, bool)
    for m in moved:
        later |= m
    return xp, sides, outs, offsets, moved, later


def max_pool_vjp(x, gy, attrs, what):
    """∂L/∂x of max pooling (module docstring): each tap's share, gy where it is t* and +0
    elsewhere, as a branch-free select (`_zero_where`), written straight into ∂L/∂x_pad when the
    windows do not overlap (strides >= the effective pool size), added otherwise."""
    xp, sides, outs, offsets, moved, any_moved = scan(x, attrs, what)
    k, s, d = attrs["pool_size"], attrs["strides"], attrs["dilations"]
    out_shape = moved[0].shape if moved else (x.shape[0], *outs, x.shape[-1])
    g = np.asarray(gy, dtype=x.dtype).reshape(out_shape)
    gp = np.zeros(xp.shape, x.dtype)
    overlap = any(ss < (kk - 1) * dd + 1 for kk, ss, dd in zip(k, s, d))
    share = np.empty(out_shape, x.dtype) if overlap else None
    mask = np.empty(out_shape, np.dtype(f"u{x.itemsize}"))
    later = np.zeros(out_shape, bool)            # a later tap moved
    not_picked = [None] * len(offsets)
    for j in reversed(range(len(offsets))):
        not_picked[j] = np.logical_or(later, np.logical_not(moved[j]))
        later |= moved[j]
    for off, skip in zip(offsets, not_picked):   # row-major order, as the scan
        dst = tap_view(gp, off, outs, s)
        if overlap:
            dst += _zero_where(skip, g, share, mask)
        else:
            _zero_where(skip, g, dst, mask)
    none_moved = ~any_moved
    if none_moved.any():   # windows of −inf only: gy goes to the first valid tap
        first = _first_valid(sides, outs, k, s, d)[None, ..., None]
        for j, off in enumerate(offsets):
            here = none_moved & (first == j)
            tap_view(gp, off, outs, s)[here] += g[here]
    crop = (slice(None),) + tuple(slice(b, b + n) for (b, _), n in zip(sides, x.shape[1:-1]))
    gx = gp[crop]
    return gx if gx.shape == gp.shape else np.ascontiguousarray(gx)


def max_pool_indices(x, attrs, what):
    """int64 [N, *outs, C]: the NCHW flat index of t* within its image, row-major spatial
    positions for attrs["storage_order"] 0 (the default), column-major for 1 (module
    docstring)."""
    _, sides, outs, offsets, moved, any_moved = scan(x, attrs, what)
    k, s, d = attrs["pool_size"], attrs["strides"], attrs["dilations"]
    out_shape = (x.shape[0], *outs, x.shape[-1])
    pick = np.zeros(out_shape, np.int64)
    for j, m in enumerate(moved):
        pick[m] = j
    first = np.broadcast_to(_first_valid(sides, outs, k, s, d)[None, ..., None], out_shape)
    pick = np.where(any_moved, pick, first)
    spatial = x.shape[1:-1]
    tap_grid = np.array(list(itertools.product(*map(range, k))), np.int64).reshape(-1, len(k))
    index = np.arange(x.shape[-1], dtype=np.int64).reshape((1,) * (1 + len(k)) + (-1,))
    column_major = attrs.get("storage_order", 0) == 1
    if column_major:
        index = index * int(np.prod(spatial, dtype=np.int64))
    stride = 1
    for axis, ((b, _), m, ss, dd, n) in enumerate(zip(sides, outs, s, d, spatial)):
        shape = [1] * (len(k) + 2)
        shape[axis + 1] = m
        start = (np.arange(m, dtype=np.int64) * ss - b).reshape(shape)
        coord = start + tap_grid[pick, axis] * dd
        if column_major:
            index = index + coord * stride
            stride *= n
        else:
            index = index * n + coord
    return index
