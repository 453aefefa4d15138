"""Blocks of a convolution's output [N, OH, OW, ...], so that the work on one block stays in cache.

`blocks(n, oh, ow, target)` yields (n0, n1, i0, i1) such that every y[n0:n1, i0:i1] is a
contiguous slice and together they cover y once, in order: groups of whole images when one image
has fewer than `target` output pixels, else row bands of one image. Parts are `target`'s worth
(the last one what is left), or with even=True of even sizes: the fewest parts of at most that
size, cut as evenly as whole rows or images allow. Speed only: the blocking changes no number.
"""
from __future__ import annotations

__all__ = ["blocks"]


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
