"""Running an elementwise integer pipeline block by block, so that its passes stay in cache.

A requantization is a chain of about eight elementwise NumPy operations; on a whole activation each
one is a pass through main memory. `map_blocks` runs the chain on consecutive blocks of `BLOCK`
elements of the flattened (C-order) array instead, with the per-channel constants (vectors along the
last axis) tiled once to the block length, so every operation is a contiguous loop without
broadcasting on data in cache. The result equals the chain applied to the whole array element for
element: the operations are elementwise and every block starts at a channel boundary. This is speed
only; no value depends on it.
"""
from __future__ import annotations

import numpy as np

__all__ = ["BLOCK", "map_blocks"]

#: Elements per block (512 KiB of int64: a block, its output and a temporary fit a 2 MiB L2 cache).
BLOCK = 1 << 16


def _per_channel(consts: dict, channels: int) -> bool:
    return all(np.ndim(v) == 0 or np.shape(v) in ((1,), (channels,)) for v in consts.values()
               if v is not None)


def map_blocks(fn, x: np.ndarray, consts: dict, out: np.ndarray | None = None) -> np.ndarray:
    """out = fn(x, out, **consts) as an int64 array of the broadcast shape of x and the consts.

    fn(x, out, **consts) fills `out` elementwise from x and the constants (NumPy broadcasting) and
    returns nothing; it reads x before writing out, element by element, so that `out` may share
    x's memory. Constants are None, scalars or arrays. When every array constant has shape (1,) or
    (C,) with C = x.shape[-1] (per-tensor or per-channel along the last axis) and x is larger than
    a block, fn runs on consecutive blocks of x with the (C,) constants tiled to the block length
    (and uniform ones passed as scalars); otherwise once on the whole x. `out`: a C-contiguous
    int64 array of the result's shape to write into (e.g. x's own buffer), or None for a new one.
    """
    channels = x.shape[-1] if x.ndim else 1
    if out is not None and not (out.dtype == np.int64 and out.flags.c_contiguous):
        out = None
    if x.size <= BLOCK or not _per_channel(consts, channels):
        shape = np.broadcast_shapes(x.shape, *(np.shape(v) for v in consts.values()
                                               if v is not None))
        if out is None or out.shape != shape:
            out = np.empty(shape, np.int64)
        fn(x, out, **consts)
        return out
    step = max(1, BLOCK // channels) * channels
    tiled = {}
    for k, v in consts.items():
        if v is None or np.ndim(v) == 0:
            tiled[k] = v
        elif np.all(np.asarray(v) == np.asarray(v).flat[0]):
            tiled[k] = np.asarray(v).flat[0]
        else:
            tiled[k] = np.tile(v, step // channels)
    flat = x.reshape(-1)
    res = np.empty(flat.size, np.int64) if out is None else out.reshape(-1)
    for i in range(0, flat.size, step):
        j = min(i + step, flat.size)
        block = {k: v[:j - i] if isinstance(v, np.ndarray) and v.ndim else v
                 for k, v in tiled.items()}
        fn(flat[i:j], res[i:j], **block)
    return res.reshape(x.shape)
