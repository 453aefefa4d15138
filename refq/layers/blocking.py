"""Blocks of a convolution's output [N, OH, OW, ...], so that the work on one block stays in cache.

`blocks(n, oh, ow, target)` yields (n0, n1, i0, i1) such that every y[n0:n1, i0:i1] is a
contiguous slice and together they cover y once, in order: groups of whole images when one image
has fewer than `target` output pixels, else row bands of one image. Parts are `target`'s worth
(the last one what is left), or with even=True of even sizes: the fewest parts of at most that
size, cut as evenly as whole rows or images allow. `matmul_in_bands` computes a matrix product
(a dense layer, a 1x1 convolution) band by band of rows and adds a bias and applies an
elementwise epilogue to each band while it is in cache; `Bias` adds a bias to blocks of whole
rows. `l2_cache_bytes()` is the size of the machine's per-core L2 cache, which sizes blocks
that are walked many times. Speed only: the blocking changes no number.
"""
from __future__ import annotations

import functools
import glob
import os

import numpy as np

__all__ = ["blocks", "matmul_in_bands", "Bias", "BAND_BYTES", "l2_cache_bytes"]

BAND_BYTES = 1 << 22   # output bytes per band of `matmul_in_bands` (speed only)
PERIOD = 8192   # least length of the rows a bias is added over (`Bias`; speed only)
#: The L2 size assumed where the machine does not say (speed only).
DEFAULT_L2_BYTES = 1 << 20
_CACHE_DIR = "/sys/devices/system/cpu/cpu0/cache"


@functools.lru_cache(maxsize=None)
def l2_cache_bytes(cache_dir: str = _CACHE_DIR) -> int:
    """The size in bytes of the level-2 data (or unified) cache of CPU 0, read from Linux's
    `cache_dir/index*/{level,type,size}`; DEFAULT_L2_BYTES where they are missing or unreadable
    (another OS, a container that hides them), or state a size outside 64 KiB..64 MiB."""
    for index in sorted(glob.glob(os.path.join(cache_dir, "index*"))):
        try:
            with open(os.path.join(index, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(index, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(index, "size")) as f:
                size = f.read().strip()
        except OSError:
            continue
        if level != "2" or kind not in ("Data", "Unified"):
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        try:
            value = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        except (ValueError, IndexError):
            return DEFAULT_L2_BYTES
        return value if (64 << 10) <= value <= (64 << 20) else DEFAULT_L2_BYTES
    return DEFAULT_L2_BYTES


def blocks(n: int, oh: int, ow: int, target: int, even: bool = False):
    """Yield (n0, n1, i0, i1) (module docstring)."""
    if oh * ow >= target:
        r = _part(oh, max(1, target // ow), even)
        for n0 in range(n):
            for i0 in range(0, oh, r):
                yield n0, n0 + 1, i0, min(oh, i0 + r)
    else:
        per = _part(n, max(1, target // (oh * ow)), even)
        for n0 in range(0, n, per):
            yield n0, min(n, n0 + per), 0, oh


def _part(total: int, most: int, even: bool) -> int:
    """`most`, or with even the smallest part size that cuts `total` into as few parts of at most
    `most` as possible."""
    if not even:
        return most
    parts = -(-total // most)
    return -(-total // parts)


def matmul_in_bands(a, wt, b, epilogue, band_bytes: int = BAND_BYTES):
    """a [M, K] @ wt [K, O] plus the bias b [O] (or None), then `epilogue` (None or an in-place
    elementwise step): with a bias or an epilogue, in bands of rows of about `band_bytes` of
    output (as even as whole rows allow), each finished while in cache; else one product."""
    m, o = a.shape[0], wt.shape[1]
    if b is None and epilogue is None:
        return np.matmul(a, wt)
    y = np.empty((m, o), np.result_type(a, wt))
    bias = None if b is None else Bias(b)
    rows = -(-m // max(1, m * o * y.itemsize // band_bytes)) if m else 1
    for r0 in range(0, m, rows):
        band = y[r0:r0 + rows]
        np.matmul(a[r0:r0 + rows], wt, out=band)
        if bias is not None:
            bias.add_to(band)
        if epilogue is not None:
            epilogue(band)
    return y


class Bias:
    """A bias b [O] added to blocks of whole rows [..., O]: `add_to(block)` is block += b, the
    same additions, run over rows of `period` values (b repeated, a multiple of O of at least
    PERIOD). Speed only: NumPy adds a short row broadcast down many rows at about half the
    speed of a long one (0.22 against 0.11 ns per float32 value)."""

    def __init__(self, b):
        self.b = b
        self.row = np.tile(b, max(1, -(-PERIOD // b.size))) if b.size else b

    def add_to(self, block):
        n = self.row.size
        if not (block.flags.c_contiguous and block.dtype == self.row.dtype and n and
                block.shape[-1:] == self.b.shape and block.size >= n):
            block += self.b
            return
        flat = block.reshape(-1)
        k = flat.size - flat.size % n   # the tail starts a row: a prefix of self.row
        head = flat[:k].reshape(-1, n)
        np.add(head, self.row, out=head)
        np.add(flat[k:], self.row[:flat.size - k], out=flat[k:])
