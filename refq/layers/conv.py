"""conv2d: 2-D convolution (cross-correlation) on NHWC activations, with groups and depthwise.

Definition
    y[n, i, j, o] = b[o] + Σ_{u<kh, v<kw, c<Cg} x_pad[n, i·sh + u·dh, j·sw + v·dw, g·Cg + c] · w[o, u, v, c]
    with Cg = C / groups input channels and O / groups output channels per group, g = o // (O / groups),
    and x_pad the input with `pt, pb, pl, pr` zero rows/columns added at the top, bottom, left and
    right. b = 0 when there is no bias. As in every framework this is a cross-correlation: the kernel
    is not flipped.
    Depthwise convolution is groups == C with weight [C·m, kh, kw, 1]: output channel o reads input
    channel o // m (channel multiplier m; the order of Keras DepthwiseConv2D).
Padding (`window_geometry`, shared with the pooling ops)
    valid:    pt = pb = pl = pr = 0.
    same:     TensorFlow/Keras rule, per spatial axis of size n, stride s, effective kernel
              k' = (k − 1)·d + 1: out = ceil(n / s), total = max((out − 1)·s + k' − n, 0),
              before = total // 2, after = total − total // 2 (the extra row goes to the bottom/right).
    explicit: pads = [top, bottom, left, right] as given, each >= 0.
    Output size per axis: out = floor((n + before + after − k') / s) + 1.
Shapes
    x: [N, H, W, C]; weight: [O, kh, kw, C/groups] (OHWI; kernel size from the weight);
    bias: [O]; y: [N, OH, OW, O]. H and W may be None (unknown) in shape inference.
Attributes
    strides (ints[2], (1, 1)), dilations (ints[2], (1, 1)), padding ("valid" | "same" | "explicit",
    "valid"), pads (ints[4] [top, bottom, left, right], zeros; read only when padding == "explicit"),
    groups (int, 1).
MACs
    OH · OW · O · kh · kw · C/groups per batch element (0 when H or W is unknown).
Errors
    ShapeError when x is not rank 4, the weight is not rank 4, C/groups differs from the weight's
    last axis, groups does not divide C or O, the bias is not [O], a stride or dilation is < 1, an
    explicit pad is < 0, or the effective kernel is larger than the padded input.

Evaluation (not part of the definition; every path computes the same sums): 1x1 group-1 convolution
is one matmul on a reshape; depthwise is a multiply-accumulate over the kh·kw taps; stride-1 group-1
convolution copies the kw taps side by side (a [rows, kw·C] patch matrix) and accumulates kh matmuls
over row-shifted views of it; everything else is im2col + one (batched over groups) matmul. Work is
cut into blocks of about BLOCK_ROWS output pixels so the patch buffer stays in cache
(bench/forward.py measured this against plain im2col and against kh·kw accumulated matmuls).
"""
from __future__ import annotations

import numpy as np

from ..errors import ParamError, ShapeError
from .base import Attr, Op

BLOCK_ROWS = 4096
BLOCK_BYTES = 1 << 21
"""Work is cut into blocks of max(BLOCK_ROWS, BLOCK_BYTES / patch row bytes) output pixels.

Tuning only (bench/forward.py): a block's patch buffer stays in cache, and small-K GEMMs get enough
rows per BLAS call. Results do not depend on it beyond the order of the kh matmul sums.
"""

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
    """x [N, H, W, C] with pads (top, bottom, left, right) of `value`; x itself when all are 0."""
    t, b, l, r = pads
    if not (t or b or l or r):
        return x
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def blocks(n, oh, ow, row_bytes):
    """Yield (n0, n1, i0, i1): whole images when one image is below the block size, else row bands
    of one image; each block is a contiguous slice of an [N, OH, OW, ...] array."""
    target = max(BLOCK_ROWS, BLOCK_BYTES // row_bytes)
    if oh * ow >= target:
        r = max(1, target // ow)
        for n0 in range(n):
            for i0 in range(0, oh, r):
                yield n0, n0 + 1, i0, min(oh, i0 + r)
    else:
        b = max(1, target // (oh * ow))
        for n0 in range(0, n, b):
            yield n0, min(n, n0 + b), 0, oh


def _weight(params):
    if "weight" not in params:
        raise ParamError("conv2d: parameter 'weight' [O, kh, kw, C/groups] is missing")
    return params["weight"]


def _check(x_shape, attrs, params):
    """Check everything; return (pads, (OH, OW), weight shape)."""
    if len(x_shape) != 4:
        raise ShapeError(f"conv2d expects an NHWC input of rank 4, got shape {list(x_shape)}")
    w = _weight(params)
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


def _infer_shape(in_shapes, attrs, params):
    _, (oh, ow), wshape = _check(tuple(in_shapes[0]), attrs, params)
    return (in_shapes[0][0], oh, ow, wshape[0])


def _param_shapes(in_shapes, attrs):
    # O, kh and kw live only in the weight, so (in_shapes, attrs) cannot give its expected shape;
    # infer_shape, which sees the parameters, checks them instead.
    return {}


def _macs(in_shapes, out_shape, attrs, params):
    o, kh, kw, cg = _weight(params).shape
    if out_shape[1] is None or out_shape[2] is None:
        return 0
    return int(out_shape[1] * out_shape[2] * o * kh * kw * cg)


def _tap(xp, n0, n1, h0, rows, sh, w0, cols, sw):
    """View of x_pad[n0:n1, h0 + i·sh, w0 + j·sw, :] for i < rows, j < cols."""
    return xp[n0:n1, h0:h0 + (rows - 1) * sh + 1:sh, w0:w0 + (cols - 1) * sw + 1:sw, :]


def _windows(xp, n0, n1, h0, rows, sh, ow, sw, kw, dw):
    """View [b, rows, ow, kw, C] of C-contiguous xp: out[.., i, j, v, c] = xp[n, h0 + i·sh, j·sw + v·dw, c].

    The kw taps of one output column are adjacent in memory (a contiguous run of kw·C values when
    dw = 1), so copying this view moves long runs instead of C-sized pieces.
    """
    b, c = n1 - n0, xp.shape[3]
    flat = xp[n0:n1, h0:h0 + (rows - 1) * sh + 1:sh].reshape(b, rows, -1)
    span = (kw - 1) * dw + 1
    win = np.lib.stride_tricks.sliding_window_view(flat, span * c, axis=2)[:, :, ::sw * c][:, :, :ow]
    return win.reshape(b, rows, ow, span, c)[:, :, :, ::dw]


def _depthwise(xp, w, y, oh, ow, strides, dil):
    """Groups == C, one input channel per group: a vectorised multiply-accumulate per kernel tap."""
    c = xp.shape[3]
    o, kh, kw, _ = w.shape
    if o != c:  # multiplier m: output o reads input o // m, i.e. channel o of x repeated m times
        xp = np.repeat(xp, o // c, axis=3)
    (sh, sw), (dh, dw) = strides, dil
    # weights tiled along a row so that every operand of a tap is contiguous within a row
    w_row = np.ascontiguousarray(np.broadcast_to(w[:, :, :, 0].transpose(1, 2, 0)[:, :, None], (kh, kw, ow, o)))
    tmp = None
    for n0, n1, i0, i1 in blocks(xp.shape[0], oh, ow, o * xp.itemsize):
        r = i1 - i0
        rows = xp[n0:n1, i0 * sh:(i1 - 1) * sh + (kh - 1) * dh + 1]
        # split the columns into their sw phases so that tap v reads a contiguous run
        phase = {p: np.ascontiguousarray(rows[:, :, p::sw]) if sw > 1 else rows
                 for p in sorted({(v * dw) % sw for v in range(kw)})}
        acc = y[n0:n1, i0:i1]
        if tmp is None or tmp.shape[:2] != acc.shape[:2]:
            tmp = np.empty_like(acc)
        for u in range(kh):
            for v in range(kw):
                q, j0 = (v * dw) % sw, (v * dw) // sw
                x_uv = phase[q][:, u * dh:u * dh + (r - 1) * sh + 1:sh, j0:j0 + ow]
                if u == 0 and v == 0:
                    np.multiply(x_uv, w_row[u, v], out=acc)
                else:
                    np.multiply(x_uv, w_row[u, v], out=tmp)
                    acc += tmp


def _rowfold(xp, w, y, oh, ow, strides, dil):
    """Group 1: patches over the kw taps only, then kh matmuls on row-shifted views of them.

    Row tap u reads padded row i·sh + u·dh = (i + r0)·sh + p with p = u·dh mod sh, r0 = u·dh // sh,
    so one patch matrix per row phase p serves every u of that phase through a shift by r0 rows.
    """
    c = xp.shape[3]
    o, kh, kw, _ = w.shape
    (sh, sw), (dh, dw) = strides, dil
    k = kw * c
    w_u = [w[:, u].reshape(o, k).T for u in range(kh)]
    taps = [((u * dh) % sh, (u * dh) // sh) for u in range(kh)]
    extra = {}
    for p, r0 in taps:
        extra[p] = max(extra.get(p, 0), r0)
    for n0, n1, i0, i1 in blocks(xp.shape[0], oh, ow, k * xp.itemsize):
        b, r = n1 - n0, i1 - i0
        flat = {}
        for p, e in extra.items():
            patches = np.empty((b, r + e, ow, kw, c), xp.dtype)
            patches[...] = _windows(xp, n0, n1, i0 * sh + p, r + e, sh, ow, sw, kw, dw)
            flat[p] = patches.reshape(b, (r + e) * ow, k)
        out = y[n0:n1, i0:i1].reshape(b, r * ow, o)
        tmp = None
        for u, (p, r0) in enumerate(taps):
            a = flat[p][:, r0 * ow:(r0 + r) * ow]
            if u == 0:
                np.matmul(a, w_u[u], out=out)
            else:
                tmp = np.matmul(a, w_u[u], out=tmp)
                out += tmp


def _im2col(xp, w, y, oh, ow, strides, dil, groups):
    """Patch matrix [groups, pixels, kh·kw·Cg] per block, one matmul batched over the groups."""
    c = xp.shape[3]
    o, kh, kw, cg = w.shape
    g = groups
    (sh, sw), (dh, dw) = strides, dil
    w_g = w.reshape(g, o // g, kh * kw * cg).transpose(0, 2, 1)
    for n0, n1, i0, i1 in blocks(xp.shape[0], oh, ow, kh * kw * c * xp.itemsize):
        b, r = n1 - n0, i1 - i0
        cols = np.empty((g, b, r, ow, kh, kw, cg), xp.dtype)
        for u in range(kh):
            win = _windows(xp, n0, n1, i0 * sh + u * dh, r, sh, ow, sw, kw, dw)
            cols[:, :, :, :, u] = np.moveaxis(win.reshape(b, r, ow, kw, g, cg), 4, 0)
        a = cols.reshape(g, b * r * ow, kh * kw * cg)
        if g == 1:
            np.matmul(a[0], w_g[0], out=y[n0:n1, i0:i1].reshape(b * r * ow, o))
        else:
            y[n0:n1, i0:i1] = np.matmul(a, w_g).transpose(1, 0, 2).reshape(b, r, ow, o)


def _forward(inputs, params, attrs):
    x = inputs[0]
    pads, (oh, ow), (o, kh, kw, cg) = _check(x.shape, attrs, params)
    w = params["weight"].astype(x.dtype, copy=False)
    strides, dil, groups = attrs["strides"], attrs["dilations"], attrs["groups"]
    n, c = x.shape[0], x.shape[3]
    xp = np.ascontiguousarray(pad_hw(x, pads))
    if kh == kw == 1 and groups == 1:
        xs = _tap(xp, 0, n, 0, oh, strides[0], 0, ow, strides[1])
        y = np.matmul(xs.reshape(-1, c), w.reshape(o, c).T).reshape(n, oh, ow, o)
    else:
        y = np.empty((n, oh, ow, o), x.dtype)
        if cg == 1 and groups == c:
            _depthwise(xp, w, y, oh, ow, strides, dil)
        elif groups == 1 and _use_rowfold(w.shape, oh, ow):
            _rowfold(xp, w, y, oh, ow, strides, dil)
        else:
            _im2col(xp, w, y, oh, ow, strides, dil, groups)
    if "bias" in params:
        y += params["bias"].astype(x.dtype, copy=False)
    return y


def _use_rowfold(w_shape, oh, ow):
    """Row-fold beat im2col (bench) for large images, kh > 1 and patch rows of >= 32 values."""
    return w_shape[1] > 1 and oh * ow >= 512 and w_shape[2] * w_shape[3] >= 32


OPS = [
    Op("conv2d", _forward, _infer_shape,
       attrs={"strides": Attr("ints", (1, 1), length=2),
              "dilations": Attr("ints", (1, 1), length=2),
              "padding": Attr("str", "valid", choices=PADDINGS),
              "pads": Attr("ints", (0, 0, 0, 0), length=4),
              "groups": Attr("int", 1)},
       params={"weight": True, "bias": False},
       param_shapes=_param_shapes, macs=_macs),
]
