"""Winograd F(2×2, 3×3): a float32 3×3 convolution (stride 1, no dilation, one group) in 16 matrix
products of 2.25 times fewer multiplications than the direct sum.

What it computes
    The conv2d of its definition (`refq.layers.conv`), y = b + Σ x_pad·w, on the padded input xp.
    The output is cut into 2×2 tiles; tile (t, s) reads the 4×4 input patch d_c = xp[2t:2t+4,
    2s:2s+4, c] of every channel c, and with
        Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]],
        G  = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]],
        Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]],
    its outputs are Y[o] = Aᵀ (Σ_c U[c, o] ⊙ V[c]) A + b[o], where V[c] = Bᵀ d_c B and
    U[c, o] = G g_oc Gᵀ (g_oc = w[o, :, :, c]). This is an identity of exact arithmetic (Lavin and
    Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): output row i of a tile reads
    input rows i..i+2 only, so the zero rows added below an odd-sized input change nothing kept.
    The sum over c at each of the 16 positions (ξ, ν) of the 4×4 tile is one matrix product:
    M[ξν] = V[ξν] [tiles, C] @ U[ξν] [C, O].

Rounding (what differs from the direct sum): U is formed in float64 and rounded once to float32;
    V is two float32 additions per value; M is a float32 matrix product over C; the output
    transform is two additions per pass (rows, then columns), then the bias. To first order in
    u = 2^−24, each output differs from the exact value by at most
        (C + 6)·u·E + u·|y|,   E = |Aᵀ| (Σ_c |U[c, o]| ⊙ |Bᵀ| |d_c| |B|) |A|,
    the same expression on absolute values (`error_bound`, which the tests check output by
    output). Since |U| <= 2.25·max|w|, each V entry sums 4 distinct inputs of the window and
    Aᵀ·A picks 9 of the 16 positions, E <= 20.25·max|w|·Σ|x| over the tile's 4×4×C input
    window; the direct sum's own first-order bound is 9C·u·Σ|x|·|w| over its 3×3×C window.
    Measured on ResNet-50's 3×3 layer shapes with random data, the largest error against
    float64 is about the direct float32 path's (2–3·10^−6 on outputs of magnitude 1).

When (`applies`): float32 input and weight, kh = kw = 3, strides (1, 1), dilations (1, 1), one
    group, at least MIN_CHANNELS input and output channels (below that the transforms cost more
    than the product saves), and every input value finite and at most LIMIT in magnitude (NaN and
    infinities spread over a whole tile in the transforms, and huge values could overflow where
    the direct sum does not): other inputs take the direct path, which gives the definition's
    NaN and infinity results. Float64 never takes it: float64 plans are the reference.

Memory: the transformed weights of a layer take 16/9 of its weight's memory; a plan keeps them
    for all its runs (`TransformedWeights`).

Blocking: tiles are taken in bands of whole tile rows (`blocking.blocks` on the tile grid) of
    about TILES tiles, so that V, M and the output band stay in the last-level cache and the
    products are tall; the bias and the epilogue run on each output band while it is in cache.
"""
from __future__ import annotations

import threading

import numpy as np

from .blocking import Bias, blocks

__all__ = ["applies", "transformed_weights", "TransformedWeights", "on_tile_grid", "winograd_conv",
           "error_bound", "MIN_CHANNELS", "LIMIT", "TILES"]

#: Fewest input and output channels for which the transforms pay (speed only).
MIN_CHANNELS = 64
#: Largest input magnitude taken (inputs beyond take the direct path).
LIMIT = float(2 ** 60)
#: Tiles per band (speed only).
TILES = 1024

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def applies(x, w, attrs) -> bool:
    """Whether `winograd_conv` evaluates conv2d(x, w, attrs) (module docstring, When)."""
    o, kh, kw, c = w.shape
    if not (x.dtype == np.float32 and w.dtype == np.float32 and kh == kw == 3 and
            tuple(attrs["strides"]) == (1, 1) and tuple(attrs["dilations"]) == (1, 1) and
            attrs["groups"] == 1 and c >= MIN_CHANNELS and o >= MIN_CHANNELS and x.size):
        return False
    lo, hi = float(x.min()), float(x.max())   # NaN in x makes both NaN
    return -LIMIT <= lo and hi <= LIMIT


def transformed_weights(w) -> np.ndarray:
    """U [4, 4, C, O] float32: G g Gᵀ of every g = w[o, :, :, c] of w [O, 3, 3, C], formed in
    float64 and rounded once."""
    o, _, _, c = w.shape
    g = np.ascontiguousarray(w.transpose(1, 2, 3, 0), dtype=np.float64)   # [3, 3, C, O]
    rows = (_G @ g.reshape(3, -1)).reshape(4, 3, c * o)      # G g: [4, 3, C·O]
    u = np.empty((4, 4, c * o), np.float32)
    for a in range(4):                                       # (G g) Gᵀ, one 2-D product each
        np.copyto(u[a], _G @ rows[a], casting="same_kind")
    return u.reshape(4, 4, c, o)


class TransformedWeights:
    """`transformed_weights` of one node's weight arrays, formed on first use and kept with the
    array they come from (the last two: a plan's node may run with its own weight and with one
    that a batch norm was folded into; a plan's parameters are fixed when it is built)."""

    def __init__(self):
        self.kept = []   # [(weight array, its transformed weights)], the latest last
        self.lock = threading.Lock()   # the threads of a run's chunks form them once

    def of(self, w):
        with self.lock:
            for v, u in self.kept:
                if v is w:
                    return u
            u = transformed_weights(w)
            self.kept = self.kept[-1:] + [(w, u)]
            return u

    def __getstate__(self):   # copies and pickles hold what was formed, with a lock of their own
        return {"kept": self.kept}

    def __setstate__(self, state):
        self.kept, self.lock = state["kept"], threading.Lock()


def on_tile_grid(x, pads, oh, ow):
    """x [N, H, W, C] padded with zeros by pads (top, bottom, left, right), and below and to the
    right with more zeros up to the 2·⌈OH/2⌉ + 2 rows and 2·⌈OW/2⌉ + 2 columns the tiles of an
    [OH, OW] output read (odd sizes: the rows no kept output reads), in one copy."""
    n, h, w, c = x.shape
    t, _, l, _ = pads
    xp = np.zeros((n, 2 * -(-oh // 2) + 2, 2 * -(-ow // 2) + 2, c), x.dtype)
    xp[:, t:t + h, l:l + w] = x
    return xp


def winograd_conv(x, pads, u, b, y, epilogue=None):
    """Write the convolution of x [N, H, W, C] padded by pads (top, bottom, left, right) by the
    transformed weights u [4, 4, C, O] (`transformed_weights`) plus the bias b [O] (or None)
    into y [N, OH, OW, O], float32, then run `epilogue` (None or an in-place step) on each band
    of y."""
    n, oh, ow, o = y.shape
    c = x.shape[3]
    th, tw = -(-oh // 2), -(-ow // 2)
    xp = on_tile_grid(x, pads, oh, ow)
    uf = u.reshape(16, c, o)
    bias = None if b is None else Bias(b)
    for n0, n1, t0, t1 in blocks(n, th, tw, TILES):
        nb, tr = n1 - n0, t1 - t0
        v = _input_transform(xp[n0:n1, 2 * t0:2 * t1 + 2], tr, tw)
        m = np.matmul(v.reshape(16, nb * tr * tw, c), uf).reshape(4, 4, nb, tr, tw, o)
        band = y[n0:n1, 2 * t0:min(oh, 2 * t1)]
        _output_transform(m, band)
        if bias is not None:
            bias.add_to(band)
        if epilogue is not None:
            epilogue(band)


def _input_transform(rows, tr, tw):
    """V [4, 4, N, tr, tw, C] = Bᵀ d B of every 4×4 patch of the input rows [N, 2·tr + 2, W, C]:
    rows first (Bᵀ d: four combinations of the patch rows 0..3), then columns (· B)."""
    n, _, _, c = rows.shape
    r = [rows[:, k::2][:, :tr] for k in range(4)]         # patch row k of every tile row
    t = np.empty((4, n, tr, rows.shape[2], c), rows.dtype)
    _combine(r, t)
    v = np.empty((4, 4, n, tr, tw, c), rows.dtype)
    for a in range(4):
        _combine([t[a][:, :, k::2][:, :, :tw] for k in range(4)], v[a])
    return v


def _combine(d, out):
    """out[0..3] = d0 − d2, d1 + d2, d2 − d1, d1 − d3 (the rows of Bᵀ applied to d0..d3)."""
    np.subtract(d[0], d[2], out=out[0])
    np.add(d[1], d[2], out=out[1])
    np.subtract(d[2], d[1], out=out[2])
    np.subtract(d[1], d[3], out=out[3])


def _output_transform(m, band):
    """band [N, R, OW, O] = Aᵀ M A of every tile (rows first: s0 = M0 + M1 + M2,
    s1 = M1 − M2 − M3; then the same on the columns of each), the rows and columns beyond the
    band's dropped."""
    s = np.empty((2,) + m.shape[1:], m.dtype)
    np.add(m[0], m[1], out=s[0])
    s[0] += m[2]
    np.subtract(m[1], m[2], out=s[1])
    s[1] -= m[3]
    for i in range(2):
        for j in range(2):
            dest = band[:, i::2, j::2]
            q = s[i][:, :, :dest.shape[1], :dest.shape[2]]
            if j == 0:
                np.add(q[0], q[1], out=dest)
                dest += q[2]
            else:
                np.subtract(q[1], q[2], out=dest)
                dest -= q[3]


def error_bound(x, pads, w, oh, ow):
    """The first-order bound of the module docstring without its u·|y| term, (C + 6)·u·E, as a
    float64 array [N, OH, OW, O] (for the tests)."""
    n, _, _, c = x.shape
    th, tw = -(-oh // 2), -(-ow // 2)
    a = on_tile_grid(np.abs(x.astype(np.float64)), pads, oh, ow)
    bt = np.abs(np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float))
    at = np.abs(np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float))
    patches = np.stack([np.stack([a[:, i:i + 2 * th:2, j:j + 2 * tw:2] for j in range(4)], -2)
                        for i in range(4)], -3)          # [N, th, tw, 4, 4, C]
    v = np.einsum("ai,ntsijc,bj->ntsabc", bt, patches, bt)
    u = np.abs(transformed_weights(w).astype(np.float64))   # [4, 4, C, O]
    e = np.einsum("ia,ntsabo,jb->ntsijo", at, np.einsum("ntsabc,abco->ntsabo", v, u), at)
    e = e.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * th, 2 * tw, -1)[:, :oh, :ow]
    return (c + 6) * 2.0 ** -24 * e
