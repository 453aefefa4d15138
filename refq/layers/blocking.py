"""Blocks of a convolution's output [N, OH, OW, ...], so that the work on one block stays in cache.

`blocks(n, oh, ow, target)` yields (n0, n1, i0, i1) such that every y[n0:n1, i0:i1] is a
contiguous slice and together they cover y once, in order: groups of whole images when one image
has fewer than `target` output pixels, else row bands of one image. Parts are `target`'s worth
(the last one what is left), or with even=True of even sizes: the fewest parts of at most that
size, cut as evenly as whole rows or images allow. `rows_in_blocks` adds a bias and applies an
elementwise epilogue to an [..., O] output ROWS rows at a time. Speed only: the blocking changes
no number.
"""
from __future__ import annotations

__all__ = ["blocks", "rows_in_blocks", "ROWS"]

ROWS = 4096   # rows of O values per block of rows_in_blocks (speed only)


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


def rows_in_blocks(y, b, epilogue, rows: int = ROWS):
    """Add the bias `b` (or None) to y [..., O] and apply `epilogue` (or None) block by block of
    `rows` rows of O values, so that each block stays in cache between the two."""
    if b is None and epilogue is None:
        return
    flat = y.reshape(-1, y.shape[-1])
    for r0 in range(0, flat.shape[0], rows):
        block = flat[r0:r0 + rows]
        if b is not None:
            block += b
        if epilogue is not None:
            epilogue(block)
