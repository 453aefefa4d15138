"""conv2d: 2-D convolution (cross-correlation) on NHWC activations, with groups and depthwise.

Definition
    y[n, i, j, o] = b[o] + Σ_{u<kh, v<kw, c<Cg} x_pad[n, i·sh + u·dh, j·sw + v·dw, g·Cg + c] · w[o, u, v, c]
    with Cg = C / groups input channels and O / groups output channels per group, g = o // (O / groups),
    and x_pad the input with `pt, pb, pl, pr` zero rows/columns added at the top, bottom, left and
    right. b = 0 when there is no bias. As in every framework this is a cross-correlation: the kernel
    is not flipped.
    Depthwise convolution is groups == C with weight [C·m, kh, kw, 1]: output channel o reads input
    channel o // m (channel multiplier m; the order of Keras DepthwiseConv2D).
Vector-Jacobian product (`conv2d_vjp`)
    For gy = ∂L/∂y [N, OH, OW, O], with g = o // (O / groups) the group of output channel o:
        ∂L/∂b[o]          = Σ_{n,i,j} gy[n, i, j, o]
        ∂L/∂w[o, u, v, c] = Σ_{n,i,j} gy[n, i, j, o] · x_pad[n, i·sh + u·dh, j·sw + v·dw, g·Cg + c]
        ∂L/∂x_pad[n, p, q, g·Cg + c] = Σ gy[n, i, j, o] · w[o, u, v, c]   over the o of group g
                                       and the (u, v, i, j) with i·sh + u·dh = p, j·sw + v·dw = q
        ∂L/∂x = ∂L/∂x_pad[:, pt:pt + H, pl:pl + W]
    ∂L/∂w is the correlation of the padded input with gy, one tap (u, v) at a time; ∂L/∂x is the
    transposed convolution: every gy pixel times the kernel scattered back through its window,
    the padding cropped. An input pixel that no window reads (a row or column the strides step
    over, e.g. the last row when sh does not divide H + pt + pb − k', k' the effective kernel
    height) gets exactly 0; an output pixel whose window reads only padding adds to no entry of
    ∂L/∂x and adds gy · 0 to ∂L/∂w.
    y is bilinear in (x, w) and affine in b, so these are the derivatives everywhere: conv2d has
    no kinks. Non-finite values go through the products of these sums, every one of which is
    formed, also with the padding's zeros (0 · inf = NaN). A NaN or ±inf makes non-finite exactly:
    in x, the ∂L/∂w[o, u, v, c] of the taps (u, v) that read it, for o in its group and c its
    channel (∂L/∂x and ∂L/∂b do not depend on x); in w[o, u, v, c], the ∂L/∂x entries that tap
    reaches in input channel g·Cg + c (∂L/∂w and ∂L/∂b do not depend on w); in gy[n, i, j, o],
    ∂L/∂b[o], all of ∂L/∂w[o] and the ∂L/∂x entries of that pixel's window in the channels of
    o's group.
    Computed in x's dtype (the forward's compute dtype; w and gy are cast to it); each gradient is
    returned in its operand's dtype.
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

Evaluation (not part of the definition; the paths differ only in the order of the sums): a 1x1
group-1 convolution is one matmul on a reshape; depthwise is a vectorised multiply-accumulate per
kernel tap (`refq.layers.depthwise`); a group-1 convolution with kh > 1, kw·C >= 128 and a tall output ("row-fold") copies
the kw taps of each output pixel side by side, [pixels, kw·C], and accumulates kh matmuls on
row-shifted views of that matrix; the rest is im2col with one matmul batched over the groups. Work
is cut into blocks of a few thousand output pixels (BLOCK_ROWS, ROWFOLD_ROWS, BLOCK_BYTES) so that
a block stays in cache. `python bench/forward.py --formulations` times row-fold, im2col and kh·kw
accumulated matmuls.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParamError, ShapeError
from .base import Attr, Op, Traits
from .blocking import blocks, rows_in_blocks
from .depthwise import depthwise_conv

BLOCK_ROWS, ROWFOLD_ROWS, BLOCK_BYTES = 4096, 16384, 1 << 21  # block sizes (speed only)
VJP_BLOCK_BYTES = 1 << 18   # gy bytes per block of images of the depthwise VJP (speed only)

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


def _windows(xp, n0, n1, h0, rows, sh, ow, sw, kw, dw):
    """View [b, rows, ow, kw, C] of C-contiguous xp: [.., i, j, v, c] = xp[n, h0 + i·sh, j·sw + v·dw, c].

    The kw taps of one output column are adjacent in memory (a contiguous run of kw·C values when
    dw = 1), so copying this view moves long runs instead of C-sized pieces.
    """
    b, c = n1 - n0, xp.shape[3]
    flat = xp[n0:n1, h0:h0 + (rows - 1) * sh + 1:sh].reshape(b, rows, -1)
    span = (kw - 1) * dw + 1
    win = np.lib.stride_tricks.sliding_window_view(flat, span * c, axis=2)[:, :, ::sw * c][:, :, :ow]
    return win.reshape(b, rows, ow, span, c)[:, :, :, ::dw]


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
    for p, r0 in taps:
        extra[p] = max(extra.get(p, 0), r0)
    for n0, n1, i0, i1 in blocks(xp.shape[0], oh, ow, ROWFOLD_ROWS):
        nb, r = n1 - n0, i1 - i0
        rr = r + max(extra.values())
        flat = {}
        for p, e in extra.items():
            patches = np.empty((nb, rr, ow, kw, c), xp.dtype)
            patches[:, :r + e] = _windows(xp, n0, n1, i0 * sh + p, r + e, sh, ow, sw, kw, dw)
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
        elif b is not None:
            out += b
        if epilogue is not None:
            epilogue(y[n0:n1, i0:i1])


def _im2col(xp, w, b, y, oh, ow, strides, dil, groups, epilogue=None):
    """Patch matrix [groups, pixels, kh·kw·Cg] per block, one matmul batched over the groups."""
    o, kh, kw, cg = w.shape
    g = groups
    (sh, sw), (dh, dw) = strides, dil
    w_g = w.reshape(g, o // g, kh * kw * cg).transpose(0, 2, 1)
    rows = max(BLOCK_ROWS, BLOCK_BYTES // (kh * kw * cg * g * xp.itemsize))
    for n0, n1, i0, i1 in blocks(xp.shape[0], oh, ow, rows):
        nb, r = n1 - n0, i1 - i0
        cols = np.empty((g, nb, r, ow, kh, kw, cg), xp.dtype)
        for u in range(kh):
            win = _windows(xp, n0, n1, i0 * sh + u * dh, r, sh, ow, sw, kw, dw)
            cols[:, :, :, :, u] = np.moveaxis(win.reshape(nb, r, ow, kw, g, cg), 4, 0)
        a = cols.reshape(g, nb * r * ow, kh * kw * cg)
        out = y[n0:n1, i0:i1]
        if g == 1:
            np.matmul(a[0], w_g[0], out=out.reshape(nb * r * ow, o))
        else:
            out[...] = np.matmul(a, w_g).transpose(1, 0, 2).reshape(nb, r, ow, o)
        if b is not None:
            out += b
        if epilogue is not None:
            epilogue(out)


def _forward(inputs, params, attrs):
    return forward_fused(inputs, params, attrs, None)


def forward_fused(inputs, params, attrs, epilogue):
    """conv2d's forward followed by `epilogue` (None or a callable modifying an output block in
    place: the elementwise ops fused after the convolution, `refq.plan`), applied once to every
    block of the output right after its bias, while the block is in cache."""
    x = inputs[0]
    pads, (oh, ow), (o, kh, kw, cg) = _check(x.shape, attrs, params)
    w = params["weight"].astype(x.dtype, copy=False)
    strides, dil, groups = attrs["strides"], attrs["dilations"], attrs["groups"]
    n, c = x.shape[0], x.shape[3]
    b = params["bias"].astype(x.dtype, copy=False) if "bias" in params else None
    if cg == 1 and groups == c and not (kh == kw == 1 and groups == 1):
        y = np.empty((n, oh, ow, o), x.dtype)
        depthwise_conv(x, pads, w, b, y, oh, ow, strides, dil, epilogue)  # pads block by block
        return y
    xp = np.ascontiguousarray(pad_hw(x, pads))
    if kh == kw == 1 and groups == 1:
        xs = xp[:, :(oh - 1) * strides[0] + 1:strides[0], :(ow - 1) * strides[1] + 1:strides[1]]
        y = np.matmul(xs.reshape(-1, c), w.reshape(o, c).T).reshape(n, oh, ow, o)
        rows_in_blocks(y, b, epilogue)
        return y
    y = np.empty((n, oh, ow, o), x.dtype)  # the paths add the bias block by block, in cache
    if groups == 1 and _use_rowfold(w.shape, oh, strides, dil):
        _rowfold(xp, w, b, y, oh, ow, strides, dil, epilogue)
    else:
        _im2col(xp, w, b, y, oh, ow, strides, dil, groups, epilogue)
    return y


def conv2d_vjp(inputs, params, attrs, y, gy):
    """([∂L/∂x], {"weight": ∂L/∂w, "bias": ∂L/∂b if there is a bias}) at x = inputs[0] for the
    cotangent gy (module docstring, Vector-Jacobian product); y is not used.

    One pass per kernel tap (u, v) over T = x_pad[:, u·dh::sh, v·dw::sw] (OH x OW pixels), the
    window view that tap reads, with the P = N·OH·OW pixels as rows and the groups as a batch:
    ∂L/∂w[:, u, v] = gy^T @ T and ∂L/∂x_pad[same view] += gy @ w[:, u, v], two matmuls per group;
    depthwise (one input channel per group, groups > 1), the same sums as two einsums over the
    channel multiplier instead (with multiplier 1: a channel-wise product added into ∂L/∂x_pad and
    one einsum over the pixels for ∂L/∂w, `_depthwise_vjp`, by blocks of images). ∂L/∂x_pad is a zero buffer of x_pad's shape, cropped at the end.
    """
    x = inputs[0]
    dt = x.dtype
    pads, (oh, ow), (o, kh, kw, cg) = _check(x.shape, attrs, params)
    n, h, wd, c = x.shape
    g = attrs["groups"]
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
    w = params["weight"].astype(dt, copy=False)
    gy = np.ascontiguousarray(gy, dtype=dt)
    xp = pad_hw(x, pads)
    gxp = np.zeros(xp.shape, dt)
    gw = np.empty(w.shape, dt)
    depthwise = cg == 1 and g > 1
    if depthwise and o == c:   # multiplier 1: channel-wise products, blocks of images in cache
        _depthwise_vjp(xp, gxp, gy, w[:, :, :, 0], gw, (sh, sw), (dh, dw))
        kh = kw = 0   # done: no tap loop below
    elif depthwise:  # m = O / C output channels per input channel
        gy_t = gy.reshape(n, oh, ow, c, o // c)
        w_t = w.reshape(c, o // c, kh, kw)
    else:          # [groups, P, O / groups] and [groups, O / groups, kh, kw, Cg]
        gy_t = gy.reshape(n * oh * ow, g, o // g).transpose(1, 0, 2)
        w_t = w.reshape(g, o // g, kh, kw, cg)
    for u in range(kh):
        for v in range(kw):
            window = (slice(None), slice(u * dh, u * dh + (oh - 1) * sh + 1, sh),
                      slice(v * dw, v * dw + (ow - 1) * sw + 1, sw))
            x_uv, gx_uv = xp[window], gxp[window]
            if depthwise:
                gx_uv += np.einsum("nijcm,cm->nijc", gy_t, w_t[:, :, u, v])
                gw[:, u, v, 0] = np.einsum("nijcm,nijc->cm", gy_t, x_uv).reshape(o)
            else:
                x_g = x_uv.reshape(n * oh * ow, g, cg).transpose(1, 0, 2)
                gx_g = np.matmul(gy_t, w_t[:, :, u, v])                       # [groups, P, Cg]
                gx_uv += gx_g.transpose(1, 0, 2).reshape(n, oh, ow, c)
                gw[:, u, v] = np.matmul(gy_t.transpose(0, 2, 1), x_g).reshape(o, cg)
    t, _, l, _ = pads
    gx = np.ascontiguousarray(gxp[:, t:t + h, l:l + wd])
    g_params = {"weight": gw.astype(params["weight"].dtype, copy=False)}
    if "bias" in params:
        g_params["bias"] = gy.sum(axis=(0, 1, 2)).astype(params["bias"].dtype, copy=False)
    return [gx], g_params


def _depthwise_vjp(xp, gxp, gy, w, gw, strides, dil):
    """The depthwise (multiplier 1) part of `conv2d_vjp`, block by block of images whose gy holds
    about VJP_BLOCK_BYTES, so that each tap's products stay in cache: per tap (u, v)
    ∂L/∂x_pad[window] += gy·w[:, u, v] (channel-wise) and ∂L/∂w[:, u, v] += Σ_pixels gy·x_pad[window],
    the weight gradient summed over the blocks in order."""
    n, oh, ow, c = gy.shape
    _, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dil
    per = max(1, VJP_BLOCK_BYTES // (oh * ow * c * gy.itemsize))
    acc = np.zeros((kh, kw, c), gy.dtype)
    tmp = np.empty((min(per, n), oh, ow, c), gy.dtype)
    for n0 in range(0, n, per):
        g_b, xp_b, gxp_b = gy[n0:n0 + per], xp[n0:n0 + per], gxp[n0:n0 + per]
        t = tmp[:len(g_b)]
        for u in range(kh):
            for v in range(kw):
                window = (slice(None), slice(u * dh, u * dh + (oh - 1) * sh + 1, sh),
                          slice(v * dw, v * dw + (ow - 1) * sw + 1, sw))
                np.multiply(g_b, w[:, u, v], out=t)
                gxp_b[window] += t
                acc[u, v] += np.einsum("nijc,nijc->c", g_b, xp_b[window])
    gw[:, :, :, 0] = acc.transpose(2, 0, 1)


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
       traits=Traits("Conv", bn_foldable=True, takes_activation=True)),
]
