"""In-place forms of elementwise ops, equal bit for bit to their forwards.

An op's record gives its in-place form as `Op.inplace(params, attrs, dtype)`, which returns
`step(a)` overwriting the array `a` with op(a) (or None when this node has none, e.g. a batch norm
whose channel axis is not the last). The activations' forms are defined here, batch_norm's beside
its forward (`refq.layers.normalization`, which this module may not import from). Each step
performs, per element, the same IEEE operations in the same order as the op's `forward`, so its
result is identical bit for bit:

| op          | forward                          | in place on a                                      |
|-------------|----------------------------------|----------------------------------------------------|
| relu        | max(x, 0)                        | np.clip(a, 0, inf, out=a); a += 0 (see Clamp)      |
| relu6       | clip(x, 0, 6)                    | np.clip(a, 0, 6, out=a)                            |
| clip        | clip(x, min, max)                | np.clip(a, min, max, out=a) (no bound: nothing)    |
| batch_norm  | x·s, then + t (channels last)    | a *= s; a += t  (s, t of `scale_and_shift`)        |
| hard_swish  | g = clip(x + 3, 0, 6)/6; g·x     | g in a scratch block; a *= g (x·g = g·x exactly)   |

The compiled plan (`refq.plan`) uses them as epilogues of a convolution or dense layer, applied to
each output block while it is in cache, and on a whole tensor when the op's input is not used
again. A step accepts any C-contiguous array whose last axis is the channel axis.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Clamp", "relu", "relu6", "clip", "hard_swish"]

_BLOCK = 1 << 16   # elements of hard_swish's scratch block


class Clamp:
    """The in-place step a = clip(a, lo, hi) of relu (np.maximum(a, 0), hi None), relu6 and clip
    (np.clip; a bound None is absent). `monotone`: the step is a non-decreasing function of each
    element, which lets the fake quantizations on either side of it fuse
    (`refq.quant.fq_chain`)."""

    monotone = True

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def __call__(self, a):
        if self.hi is not None:
            np.clip(a, self.lo, self.hi, out=a)
        elif self.lo == 0 and not np.signbit(self.lo):
            # = np.maximum(a, 0) (what np.clip(a, 0, None) runs) bit for bit, in two passes that
            # NumPy vectorises (about 0.3 ns per value against 0.5 for np.maximum with a scalar):
            # clip to [0, inf] keeps a −0 that maximum turns into its second operand, +0, and
            # a + 0 is a for every other a (NaN payloads included) and +0 for a = −0
            np.clip(a, 0, np.inf, out=a)
            a += 0
        else:
            np.maximum(a, self.lo, out=a)


def relu(params, attrs, dtype):
    return Clamp(0, None)


def relu6(params, attrs, dtype):
    return Clamp(0, 6)


def clip(params, attrs, dtype):
    lo, hi = (None if attrs[k] is None else dtype(attrs[k]) for k in ("min", "max"))
    if lo is None and hi is None:   # the forward copies: nothing to do in place
        return lambda a: None
    return Clamp(lo, hi)


def hard_swish(params, attrs, dtype):
    def step(a):
        flat = a.reshape(-1)
        gate = np.empty(min(flat.size, _BLOCK), a.dtype)
        for s in range(0, flat.size, _BLOCK):
            xs = flat[s:s + _BLOCK]
            g = gate[:xs.size]
            np.add(xs, 3, out=g)
            np.clip(g, 0, 6, out=g)
            g /= 6
            xs *= g
    return step

