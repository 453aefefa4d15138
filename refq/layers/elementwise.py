"""add and multiply: elementwise over two or more inputs with NumPy broadcasting.

Definition
    add:      y = x_0 + x_1 + ... + x_{k−1}
    multiply: y = x_0 · x_1 · ... · x_{k−1}
    Inputs broadcast as NumPy does (trailing axes aligned, size-1 axes stretched), e.g. the
    squeeze-excitation product of (N, H, W, C) and (N, 1, 1, C). The batch axis must agree.
Shapes
    x_i: broadcast-compatible, same rank; y: the broadcast shape.
Errors
    ShapeError when the shapes do not broadcast or ranks differ.
"""
from __future__ import annotations

from functools import reduce

import numpy as np

from ..errors import ShapeError
from .base import Op


def broadcast_shape(in_shapes):
    """The broadcast of shapes with a free (None) batch axis; ShapeError when incompatible."""
    ranks = {len(s) for s in in_shapes}
    if len(ranks) != 1:
        raise ShapeError(f"inputs have different ranks: {[list(s) for s in in_shapes]}")
    out = []
    for dims in zip(*in_shapes):
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ShapeError(f"shapes {[list(s) for s in in_shapes]} do not broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def _infer(in_shapes, attrs, params):
    return broadcast_shape(in_shapes)


def _macs(in_shapes, out_shape, attrs, params):
    if None in out_shape[1:]:
        return 0  # a free non-batch axis: unknown per-element count (as batch_norm counts it)
    n = int(np.prod(out_shape[1:], dtype=np.int64))
    return n * (len(in_shapes) - 1)


OPS = [
    Op("add", lambda xs, p, a: reduce(np.add, xs), _infer, num_inputs=(2, None)),
    Op("multiply", lambda xs, p, a: reduce(np.multiply, xs), _infer, num_inputs=(2, None),
       macs=_macs),
]
