"""conv2d: 2-D convolution (cross-correlation) on NHWC activations, with groups and depthwise.

Definition
    y[n, i, j, o] = b[o] + Σ_{u<kh, v<kw, c<Cg} x_pad[n, i·sh + u·dh, j·sw + v·dw, g·Cg + c] · w[o, u, v, c]
    with Cg = C / groups input channels and O / groups output channels per group, g = o // (O / groups),
    and x_pad the input with `pt, pb, pl, pr` zero rows/columns added at the top, bottom, left and
    right. b = 0 when there is no bias. As in every framework this is a cross-correlation: the kernel
    is not flipped.
    Depthwise convolution is groups == C with weight [C·m, kh, kw, 1]: output channel o reads input
    channel o // m (channel multiplier m; the order of Keras DepthwiseConv2D).
Vector-Jacobian product
    `refq.layers.conv_vjp` (its formulas, the non-finite rules and the paths that compute it).
Padding
    valid, same (TensorFlow/Keras rule) or explicit pads: `refq.layers.conv_geometry`.
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

Evaluation (not part of the definition; the paths differ only in the order of the sums): a 1x1
group-1 convolution is a matmul on a reshape (`blocking.matmul_in_bands`); depthwise is a vectorised multiply-accumulate per
kernel tap (`refq.layers.depthwise`); a group-1 convolution with kh > 1, kw·C >= 128 and a tall
output ("row-fold") copies the kw taps of each output pixel side by side, [pixels, kw·C], and
accumulates kh matmuls on row-shifted views of that matrix; the rest is im2col with one matmul
batched over the groups. Work is cut into blocks of a few thousand output pixels (BLOCK_ROWS,
ROWFOLD_ROWS, BLOCK_BYTES) so that a block stays in cache. `python bench/forward.py
--formulations` times row-fold, im2col and kh·kw accumulated matmuls. A float32 plan may ask for
Winograd F(2x2, 3x3) on 3x3 stride-1 layers of at least 64 channels (`forward_fused`'s winograd;
`refq.layers.winograd`, which states how its rounding differs).
"""
from __future__ import annotations

import numpy as np

from .base import Attr, Op, Traits
from .blocking import Bias, blocks, matmul_in_bands
from .conv_geometry import (BLOCK_BYTES, BLOCK_ROWS, PADDINGS, check, pad_hw, weight,
                            window_geometry, windows)
from .conv_vjp import conv2d_vjp
from .depthwise import depthwise_conv
from .winograd import applies, winograd_conv

__all__ = ["forward_fused", "conv2d_vjp", "window_geometry", "pad_hw", "PADDINGS", "OPS"]

ROWFOLD_ROWS = 16384   # output pixels per row-fold block (speed only)

def _infer_shape(in_shapes, attrs, params):
    _, (oh, ow), wshape = check(tuple(in_shapes[0]), attrs, params)
    return (in_shapes[0][0], oh, ow, wshape[0])


def _param_shapes(in_shapes, attrs):
    # O, kh and kw live only in the weight, so (in_shapes, attrs) cannot give its expected shape;
    # infer_shape, which sees the parameters, checks them instead.
    return {}


def _macs(in_shapes, out_shape, attrs, params):
    o, kh, kw, cg = weight(params).shape
    if out_shape[1] is None or out_shape[2] is None:
        return 0
    return int(out_shape[1] * out_shape[2] * o * kh * kw * cg)


def _rowfold(xp, w, b, y, oh, ow, strides, dil, epilogue=None):
    """Group 1: patches over the kw taps only, then kh matmuls on row-shifted views of them.

    Row tap u reads padded row i·sh + u·dh = (i + r0)·sh + p with p = u·dh mod sh, r0 = u·dh // sh,
    so one patch matrix per row phase p serves every u of that phase through a shift by r0 rows.
    Images of a block are stacked with R = r + max r0 rows each, so that one matmul per tap row
    covers the block; the rows i >= r of each image are scratch and are dropped.
    """
    c = xp.shape[3]
    o, kh, kw, _ = w.shape
    (sh, sw), (dh, dw) = strides, dil
    k = kw * c
    w_u = [w[:, u].reshape(o, k).T for u in range(kh)]
    taps = [((u * dh) % sh, (u * dh) // sh) for u in range(kh)]
    extra = {}
    bias = None if b is None else Bias(b)
    for p, r0 in taps:
        extra[p] = max(extra.get(p, 0), r0)
    for n0, n1, i0, i1 in blocks(xp.shape[0], oh, ow, ROWFOLD_ROWS):
        nb, r = n1 - n0, i1 - i0
        rr = r + max(extra.values())
        flat = {}
        for p, e in extra.items():
            patches = np.empty((nb, rr, ow, kw, c), xp.dtype)
            patches[:, :r + e] = windows(xp, n0, n1, i0 * sh + p, r + e, sh, ow, sw, kw, dw)
            patches[:, r + e:] = 0
            flat[p] = patches.reshape(nb * rr * ow, k)
        m = ((nb - 1) * rr + r) * ow
        out = y[n0:n1, i0:i1].reshape(m, o) if nb == 1 else np.empty((nb * rr * ow, o), xp.dtype)
        tmp = None
        for u, (p, r0) in enumerate(taps):
            a = flat[p][r0 * ow:r0 * ow + m]
            if u == 0:
                np.matmul(a, w_u[u], out=out[:m])
            else:
                tmp = np.matmul(a, w_u[u], out=tmp)
                out[:m] += tmp
        if nb > 1:  # drop the scratch rows (and add the bias on the way)
            np.add(out.reshape(nb, rr, ow, o)[:, :r], 0 if b is None else b, out=y[n0:n1, i0:i1])
        elif bias is not None:
            bias.add_to(out)
        if epilogue is not None:
            epilogue(y[n0:n1, i0:i1])


def _im2col(xp, w, b, y, oh, ow, strides, dil, groups, epilogue=None):
    """Patch matrix [groups, pixels, kh·kw·Cg] per block, one matmul batched over the groups."""
    o, kh, kw, cg = w.shape
    g = groups
    (sh, sw), (dh, dw) = strides, dil
    w_g = w.reshape(g, o // g, kh * kw * cg).transpose(0, 2, 1)
    rows = max(BLOCK_ROWS, BLOCK_BYTES // (kh * kw * cg * g * xp.itemsize))
    bias = None if b is None else Bias(b)
    for n0, n1, i0, i1 in blocks(xp.shape[0], oh, ow, rows):
        nb, r = n1 - n0, i1 - i0
        cols = np.empty((g, nb, r, ow, kh, kw, cg), xp.dtype)
        for u in range(kh):
            win = windows(xp, n0, n1, i0 * sh + u * dh, r, sh, ow, sw, kw, dw)
            cols[:, :, :, :, u] = np.moveaxis(win.reshape(nb, r, ow, kw, g, cg), 4, 0)
        a = cols.reshape(g, nb * r * ow, kh * kw * cg)
        out = y[n0:n1, i0:i1]
        if g == 1:
            np.matmul(a[0], w_g[0], out=out.reshape(nb * r * ow, o))
        else:
            out[...] = np.matmul(a, w_g).transpose(1, 0, 2).reshape(nb, r, ow, o)
        if bias is not None:
            bias.add_to(out)
        if epilogue is not None:
            epilogue(out)


def _forward(inputs, params, attrs):
    return forward_fused(inputs, params, attrs, None)


def forward_fused(inputs, params, attrs, epilogue, winograd=None):
    """conv2d's forward followed by `epilogue` (None or a callable modifying an output block in
    place: the elementwise ops fused after the convolution, `refq.plan`), applied once to every
    block of the output right after its bias, while the block is in cache. winograd: None, or a
    `refq.layers.winograd.TransformedWeights` of this node, which lets a float32 3x3 convolution
    that `winograd.applies` to be evaluated by Winograd F(2x2, 3x3) (a float32 plan's choice;
    its rounding differs from the direct sum's within the bound of that module)."""
    x = inputs[0]
    pads, (oh, ow), (o, kh, kw, cg) = check(x.shape, attrs, params)
    w = params["weight"].astype(x.dtype, copy=False)
    strides, dil, groups = attrs["strides"], attrs["dilations"], attrs["groups"]
    n, c = x.shape[0], x.shape[3]
    b = params["bias"].astype(x.dtype, copy=False) if "bias" in params else None
    if winograd is not None and applies(x, w, attrs):
        y = np.empty((n, oh, ow, o), x.dtype)
        winograd_conv(x, pads, winograd.of(w), b, y, epilogue)
        return y
    if cg == 1 and groups == c and not (kh == kw == 1 and groups == 1):
        y = np.empty((n, oh, ow, o), x.dtype)
        depthwise_conv(x, pads, w, b, y, oh, ow, strides, dil, epilogue)  # pads block by block
        return y
    xp = np.ascontiguousarray(pad_hw(x, pads))
    if kh == kw == 1 and groups == 1:
        xs = xp[:, :(oh - 1) * strides[0] + 1:strides[0], :(ow - 1) * strides[1] + 1:strides[1]]
        y = matmul_in_bands(xs.reshape(-1, c), w.reshape(o, c).T, b, epilogue)
        return y.reshape(n, oh, ow, o)
    y = np.empty((n, oh, ow, o), x.dtype)  # the paths add the bias block by block, in cache
    if groups == 1 and _use_rowfold(w.shape, oh, strides, dil):
        _rowfold(xp, w, b, y, oh, ow, strides, dil, epilogue)
    else:
        _im2col(xp, w, b, y, oh, ow, strides, dil, groups, epilogue)
    return y


def _use_rowfold(w_shape, oh, strides, dil):
    """Row-fold beat im2col (bench) for kh > 1, patch rows of >= 128 values and outputs >= 8 times
    taller than the scratch rows per image."""
    kh, kw, c = w_shape[1:]
    return kh > 1 and kw * c >= 128 and oh >= 8 * max(1, (kh - 1) * dil[0] // strides[0])


OPS = [
    Op("conv2d", _forward, _infer_shape,
       attrs={"strides": Attr("ints", (1, 1), length=2),
              "dilations": Attr("ints", (1, 1), length=2),
              "padding": Attr("str", "valid", choices=PADDINGS),
              "pads": Attr("ints", (0, 0, 0, 0), length=4),
              "groups": Attr("int", 1)},
       params={"weight": True, "bias": False},
       param_shapes=_param_shapes, macs=_macs, vjp=conv2d_vjp,
       forward_fused=forward_fused,
       traits=Traits("Conv", bn_foldable=True, takes_activation=True, lowering="conv")),
]
