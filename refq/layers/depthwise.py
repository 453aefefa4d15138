"""Depthwise 2-D convolution kernel of conv2d (groups == C, one input channel per group).

What it computes
    y[n, i, j, o] = b[o] + Σ_{u<kh, v<kw} x_pad[n, i·sh + u·dh, j·sw + v·dw, o // m] · w[o, u, v, 0]
    for x [N, H, W, C] and w [O, kh, kw, 1] with O = C·m (channel multiplier m: output channel o
    reads input channel o // m), x_pad the input with the pads (top, bottom, left, right) of zeros,
    written into a preallocated y [N, OH, OW, O] (`depthwise_conv`; conv2d's definition in conv.py).

Summation order (the same for every element, whatever the blocking)
    acc = p(0, 0); acc = acc + p(u, v) for the other taps in row-major order; y = acc + b, where
    p(u, v) = x_pad[..] · w[o, u, v] is rounded to the dtype before it is added (a multiply into a
    buffer, then an in-place add). A tap in the padding reads a stored zero (+0.0) like any other
    input, so it adds 0 · w (+0.0, -0.0, or NaN for an infinite weight) at its place in the sum,
    exactly as the definition does. Integer sums wrap in the dtype and do not depend on the order.

Blocking
    The output is cut into blocks of whole images, or row bands of one image, whose working set
    (the accumulator, a product buffer, the padded input rows and their column phases) holds about
    DW_BLOCK_BYTES. The padded input rows a block reads are copied once into a scratch buffer, each
    channel repeated m times; for sw > 1 their columns are then split into the sw phases (phase q
    holds the columns q, q + sw, q + 2·sw, ..), so that tap v reads a contiguous run of phase
    (v·dw) mod sw. Each tap is two passes over the block: its input view times its weights into a
    buffer (the first tap straight into the accumulator, which is the block of y), then an in-place
    add. The bias is added last, then `epilogue` runs on the block while it is in cache.

Why it is fast
    NumPy's elementwise loops reach their speed only on long contiguous inner loops: the weights
    and the bias are tiled along an output row (w_row [kh, kw, OW, O], b_row [OW, O]) so that every
    operand of a pass is contiguous over a whole output row, OW·O values, and the column phases
    make the taps of a strided convolution contiguous too. While a block is computed, NumPy's ufunc
    buffer is made no longer than one output row: when it has room for several short rows (OW·O
    up to about a third of its default 8192 elements) NumPy copies the strided tap views and the
    tiled weights through it, which makes a pass two to three times slower. A block is small
    enough for its 2·kh·kw passes to run in L2 and large enough for the per-block
    costs (NumPy's per-call overhead, the input rows a band shares with the next one) to stay
    small. The scratch buffers are kept per thread and reused across blocks and calls (up to about
    DW_BLOCK_BYTES per dtype, held while the thread lives): freshly allocated arrays of that size
    cost page faults every time they are first touched.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager

import numpy as np

from .blocking import blocks, l2_cache_bytes

#: Working-set bytes of a depthwise block: the per-core L2 cache, so that a block's 2·kh·kw passes
#: run in L2 (speed only). Measured on MobileNetV2-1.0 at 224 px on a 2 MiB L2 machine, float32,
#: BN folded: one thread 265 ms at 2 MiB against 338 ms at 6 MiB (16 images); two threads, 32
#: images, 2 MiB as fast as 6 MiB or faster, 1 MiB slower.
DW_BLOCK_BYTES = l2_cache_bytes()


def depthwise_conv(x, pads, w, b, y, oh, ow, strides, dil, epilogue=None):
    """Write the depthwise convolution of x [N, H, W, C] by w [O, kh, kw, 1] (O = C·m) plus the
    bias b [O] (or none) into y [N, OH, OW, O], in the order of the module docstring.

    pads (top, bottom, left, right), strides (sh, sw) and dil (dh, dw) as in conv2d; x, w, b and y
    share one dtype. epilogue: None or a callable run once on each finished block
    y[n0:n1, i0:i1] (after the bias) while it is in cache; the blocks cover y exactly once."""
    c = x.shape[3]
    o, kh, kw, _ = w.shape
    m = o // c
    (sh, sw), (dh, dw) = strides, dil
    # w[o, u, v] and b[o] tiled along an output row, so that every operand of a tap is
    # contiguous within a row
    w_row = np.ascontiguousarray(np.broadcast_to(w[:, :, :, 0].transpose(1, 2, 0)[:, :, None],
                                                 (kh, kw, ow, o)))
    b_row = None if b is None else np.ascontiguousarray(np.broadcast_to(b, (ow, o)))
    # column tap v reads column phase q = (v·dw) mod sw of the padded rows at offset (v·dw) // sw
    taps = [(u, v, (v * dw) % sw, (v * dw) // sw) for u in range(kh) for v in range(kw)]
    phases = sorted({q for _, _, q, _ in taps})
    scratch = _Scratch(x.dtype)
    pixels = max(ow, DW_BLOCK_BYTES // pixel_bytes(o, x.itemsize, strides))
    # NumPy's ufunc buffer at most one output row long (module docstring, Why it is fast)
    bufsize = max(16, min(np.getbufsize(), ow * o) // 16 * 16)
    for n0, n1, i0, i1 in blocks(x.shape[0], oh, ow, pixels, even=True):
        r, acc = i1 - i0, y[n0:n1, i0:i1]
        with _numpy_bufsize(bufsize):
            rows = _padded_rows(x, pads, i0 * sh, (i1 - 1) * sh + (kh - 1) * dh + 1, n0, n1, m,
                                scratch)
            # for sw > 1 the columns of each phase side by side: every tap reads contiguous runs
            phase = {0: rows} if sw == 1 else {q: scratch.copy(("phase", q), rows[:, :, q::sw])
                                               for q in phases}
            tmp = scratch.get("tmp", acc.shape)
            for t, (u, v, q, j0) in enumerate(taps):
                x_uv = phase[q][:, u * dh:u * dh + (r - 1) * sh + 1:sh, j0:j0 + ow]
                if t == 0:
                    np.multiply(x_uv, w_row[u, v], out=acc)
                else:
                    np.multiply(x_uv, w_row[u, v], out=tmp)
                    acc += tmp
            if b_row is not None:
                acc += b_row
        if epilogue is not None:
            epilogue(acc)


@contextmanager
def _numpy_bufsize(size):
    """NumPy's ufunc buffer size set to `size` elements for the block (np.setbufsize is local to
    the thread / context)."""
    saved = np.setbufsize(size)
    try:
        yield
    finally:
        np.setbufsize(saved)


def pixel_bytes(o, itemsize, strides):
    """Working-set bytes of a block per output pixel: the accumulator, the product buffer, about
    sh·sw padded input pixels and, for sw > 1, as many again for their column phases."""
    sh, sw = strides
    return o * itemsize * (2 + sh * sw * (2 if sw > 1 else 1))


_LOCAL = threading.local()   # per thread: {(name, dtype): flat buffer}, kept across calls


class _Scratch:
    """Named scratch arrays of one dtype, backed by buffers of the calling thread that are kept
    and reused across blocks and calls (fresh large arrays cost page faults on every call)."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        if not hasattr(_LOCAL, "buffers"):
            _LOCAL.buffers = {}
        self.flat = _LOCAL.buffers

    def get(self, name, shape):
        """An uninitialised C-contiguous array of `shape` in the buffer `name`."""
        size, key = math.prod(shape), (name, self.dtype)
        if key not in self.flat or self.flat[key].size < size:
            self.flat[key] = np.empty(size, self.dtype)
        return self.flat[key][:size].reshape(shape)

    def copy(self, name, a):
        """A C-contiguous copy of `a` in the buffer `name`."""
        out = self.get(name, a.shape)
        out[...] = a
        return out


def _padded_rows(x, pads, p0, p1, n0, n1, m, scratch):
    """Rows [p0, p1) of the zero-padded input of images n0:n1, each channel repeated m times,
    in a scratch buffer or, when no padding or repetition is needed, a view of x."""
    t, _, l, r = pads
    h, w = x.shape[1], x.shape[2]
    if not any(pads) and m == 1:
        return x[n0:n1, p0:p1]
    out = scratch.get("rows", (n1 - n0, p1 - p0, w + l + r, x.shape[3] * m))
    lo = max(p0 - t, 0)                       # the input rows [lo, hi) inside [p0, p1)
    hi = max(min(p1 - t, h), lo)
    a, b = lo + t - p0, hi + t - p0           # where they go
    out[:, :a].fill(0)
    out[:, b:].fill(0)
    out[:, a:b, :l].fill(0)
    out[:, a:b, l + w:].fill(0)
    dest = out[:, a:b, l:l + w]
    if m > 1:  # output channel o reads input channel o // m: channel o of x repeated m times
        dest.reshape(dest.shape[:3] + (x.shape[3], m))[...] = x[n0:n1, lo:hi, :, :, None]
    else:
        dest[...] = x[n0:n1, lo:hi]
    return out
