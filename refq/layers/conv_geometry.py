"""Window geometry of conv2d (and of the poolings, with dilation 1): padding, output sizes, padded
copies, window views and the checks of a convolution's operands.

Padding (`window_geometry`, shared with the pooling ops)
    valid:    pt = pb = pl = pr = 0.
    same:     TensorFlow/Keras rule, per spatial axis of size n, stride s, effective kernel
              k' = (k − 1)·d + 1: out = ceil(n / s), total = max((out − 1)·s + k' − n, 0),
              before = total // 2, after = total − total // 2 (the extra row goes to the bottom/right).
    explicit: pads = [top, bottom, left, right] as given, each >= 0.
    Output size per axis: out = floor((n + before + after − k') / s) + 1.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParamError, ShapeError

__all__ = ["PADDINGS", "window_geometry", "pad_hw", "weight", "check", "windows", "BLOCK_ROWS",
           "BLOCK_BYTES"]

#: Output pixels and bytes of an im2col patch block (speed only: the forward and the VJP).
BLOCK_ROWS, BLOCK_BYTES = 4096, 1 << 21

PADDINGS = ("valid", "same", "explicit")


def window_geometry(hw, kernel, strides, dilations, padding, pads, what="conv2d"):
    """((top, bottom, left, right), (OH, OW)) of a sliding window; sizes and pads None if unknown.

    hw, kernel, strides, dilations: pairs; padding and pads as in the module docstring.
    Raises ShapeError on strides/dilations < 1, negative pads or a window larger than the input.
    """
    if min(strides) < 1 or min(dilations) < 1:
        raise ShapeError(f"{what}: strides {list(strides)} and dilations {list(dilations)} must be >= 1")
    if padding == "explicit" and min(pads) < 0:
        raise ShapeError(f"{what}: explicit pads {list(pads)} must be >= 0")
    before_after, out = [], []
    for axis, (n, k, s, d) in enumerate(zip(hw, kernel, strides, dilations)):
        keff = (k - 1) * d + 1
        if padding == "valid":
            b, a = 0, 0
        elif padding == "explicit":
            b, a = pads[2 * axis], pads[2 * axis + 1]
        elif n is None:
            b, a = None, None
        else:
            o = -(-n // s)
            total = max((o - 1) * s + keff - n, 0)
            b, a = total // 2, total - total // 2
        if n is None:
            before_after += [b, a]
            out.append(None)
            continue
        if n + b + a < keff:
            name = "height" if axis == 0 else "width"
            raise ShapeError(
                f"{what}: the kernel {name} {k} (dilation {d}, effective {keff}) is larger than the "
                f"padded input {name} {n} + {b} + {a} = {n + b + a}")
        before_after += [b, a]
        out.append((n + b + a - keff) // s + 1)
    return tuple(before_after), tuple(out)


def pad_hw(x, pads, value=0):
    """x [N, H, W, C] with pads (top, bottom, left, right) of `value` (C-contiguous); x itself when
    all are 0."""
    t, b, l, r = pads
    if not (t or b or l or r):
        return x
    n, h, w, c = x.shape
    out = np.empty((n, h + t + b, w + l + r, c), x.dtype)
    out[:, t:t + h, l:l + w] = x
    for border in (out[:, :t], out[:, t + h:], out[:, t:t + h, :l], out[:, t:t + h, l + w:]):
        border.fill(value)
    return out


def weight(params):
    if "weight" not in params:
        raise ParamError("conv2d: parameter 'weight' [O, kh, kw, C/groups] is missing")
    return params["weight"]


def check(x_shape, attrs, params):
    """Check everything; return (pads, (OH, OW), weight shape)."""
    if len(x_shape) != 4:
        raise ShapeError(f"conv2d expects an NHWC input of rank 4, got shape {list(x_shape)}")
    w = weight(params)
    if w.ndim != 4:
        raise ShapeError(f"conv2d weight must be OHWI [O, kh, kw, C/groups], got shape {list(w.shape)}")
    o, kh, kw, cg = w.shape
    c, g = x_shape[3], attrs["groups"]
    if g < 1:
        raise ShapeError(f"conv2d groups must be >= 1, got {g}")
    if c is not None and c % g:
        raise ShapeError(f"conv2d groups {g} does not divide the {c} input channels")
    if o % g:
        raise ShapeError(f"conv2d groups {g} does not divide the {o} output channels of the weight")
    if c is not None and c // g != cg:
        raise ShapeError(
            f"conv2d channel mismatch: input has {c} channels / groups {g} = {c // g} per group, "
            f"but the weight {list(w.shape)} expects {cg}")
    if "bias" in params and tuple(params["bias"].shape) != (o,):
        raise ShapeError(f"conv2d bias must be [O] = [{o}], got shape {list(params['bias'].shape)}")
    pads, out = window_geometry(x_shape[1:3], (kh, kw), attrs["strides"], attrs["dilations"],
                                attrs["padding"], attrs["pads"])
    return pads, out, w.shape


def windows(xp, n0, n1, h0, rows, sh, ow, sw, kw, dw):
    """View [b, rows, ow, kw, C] of C-contiguous xp: [.., i, j, v, c] = xp[n, h0 + i·sh, j·sw + v·dw, c].

    The kw taps of one output column are adjacent in memory (a contiguous run of kw·C values when
    dw = 1), so copying this view moves long runs instead of C-sized pieces.
    """
    b, c = n1 - n0, xp.shape[3]
    flat = xp[n0:n1, h0:h0 + (rows - 1) * sh + 1:sh].reshape(b, rows, -1)
    span = (kw - 1) * dw + 1
    win = np.lib.stride_tricks.sliding_window_view(flat, span * c, axis=2)[:, :, ::sw * c][:, :, :ow]
    return win.reshape(b, rows, ow, span, c)[:, :, :, ::dw]
