"""conv2d's vector-Jacobian product (`conv2d_vjp`, the `vjp` of refq.layers.conv's op record).

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
"""
from __future__ import annotations

import numpy as np

from .blocking import blocks
from .conv_geometry import BLOCK_BYTES, BLOCK_ROWS, check, pad_hw, windows

__all__ = ["conv2d_vjp"]


def conv2d_vjp(inputs, params, attrs, y, gy, inputs_grad: bool = True):
    """([∂L/∂x], {"weight": ∂L/∂w, "bias": ∂L/∂b if there is a bias}) at x = inputs[0] for the
    cotangent gy (module docstring, Vector-Jacobian product); y is not used. With
    inputs_grad=False ∂L/∂x is not formed ([None]) where that saves work (the depthwise,
    pointwise and group-1 evaluations), for a caller that needs the parameters' gradients only.

    Four evaluations of the same sums, by the structure of the convolution:
    - depthwise with multiplier 1 (`_depthwise_vjp`): per kernel tap (u, v), channel-wise
      products over the output pixels whose tap reads the input (not the padding):
      ∂L/∂x[tap's view] += gy·w[:, u, v] and ∂L/∂w[:, u, v] = Σ gy·x[tap's view];
    - group 1, 1x1 kernel (`_pointwise_vjp`): with X [P, C] the input pixels the kernel reads
      (P of them) and G [P, O] their gy, ∂L/∂w = Gᵀ @ X and ∂L/∂X = G @ w[O, C];
    - group 1, larger kernels (`_dense_vjp`): with the patch matrix X [P, kh·kw·C] of the padded
      input (the P = N·OH·OW pixels as rows, im2col) and G = gy as [P, O], ∂L/∂w = Gᵀ @ X, and
      per tap ∂L/∂x_pad[tap's window] += G @ w[:, u, v], by blocks of output pixels;
    - the other groupings (`_grouped_vjp`): per tap, ∂L/∂w[:, u, v] = Gᵀ @ T and
      ∂L/∂x_pad[tap's view] += G @ w[:, u, v] per group, T the view of x_pad the tap reads
      (with a channel multiplier m > 1, the same sums as two einsums over it).
    Where a tap reads padding its products with gy are 0 for a finite gy and NaN for a
    non-finite one; the first two evaluations form the products with input pixels only, and
    `_nan_where_padding_read` sets those ∂L/∂w entries to NaN. ∂L/∂b = Σ gy.
    """
    x = inputs[0]
    dt = x.dtype
    pads, (oh, ow), (o, kh, kw, cg) = check(x.shape, attrs, params)
    c, g = x.shape[3], attrs["groups"]
    strides, dil = attrs["strides"], attrs["dilations"]
    w = params["weight"].astype(dt, copy=False)
    gy = np.ascontiguousarray(gy, dtype=dt)
    g_sum = None   # Σ gy over the pixels: ∂L/∂b, and where padding is read its finiteness
    if "bias" in params:
        g_sum = gy.sum(axis=(0, 1, 2))
    elif any(pads):   # only its finiteness: a product with a ones vector, one BLAS pass
        g_sum = np.matmul(np.ones(gy.size // o, dt), gy.reshape(-1, o))
    if cg == 1 and g == c == o and g > 1:
        gx, gw = _depthwise_vjp(x, gy, w, pads, strides, dil, inputs_grad)
        _nan_where_padding_read(gy, g_sum, gw, x.shape, pads, strides, dil)
    elif g == 1 and kh == kw == 1:
        gx, gw = _pointwise_vjp(x, gy, w, pads, strides, inputs_grad)
        _nan_where_padding_read(gy, g_sum, gw, x.shape, pads, strides, dil)
    elif g == 1:
        gx, gw = _dense_vjp(x, gy, w, pads, strides, dil, inputs_grad)
    else:
        gx, gw = _grouped_vjp(x, gy, w, g, pads, strides, dil)
    g_params = {"weight": gw.astype(params["weight"].dtype, copy=False)}
    if "bias" in params:
        g_params["bias"] = g_sum.astype(params["bias"].dtype, copy=False)
    return [gx], g_params


def _tap_range(n, out, pad, offset, stride):
    """(i0, i1): the output indices i0 <= i < i1 (of `out`) at which a tap at `offset` in the
    padded axis reads the input, i.e. 0 <= i·stride + offset − pad < n; i0 == i1 when none."""
    i0 = max(0, -(-(pad - offset) // stride))
    i1 = min(out, (n - 1 + pad - offset) // stride + 1)
    return i0, max(i0, i1)


def _taps(shape, out_hw, kernel, pads, strides, dil):
    """[(u, v, rows, cols, (i0, i1), (j0, j1))] of every kernel tap whose window reads the input
    x [N, H, W, C]: the output pixels [i0:i1, j0:j1] that read it and their input rows and columns
    (slices of x)."""
    (h, w), (oh, ow), (kh, kw) = shape[1:3], out_hw, kernel
    (sh, sw), (dh, dw) = strides, dil
    taps = []
    for u in range(kh):
        i0, i1 = _tap_range(h, oh, pads[0], u * dh, sh)
        for v in range(kw):
            j0, j1 = _tap_range(w, ow, pads[2], v * dw, sw)
            if i0 < i1 and j0 < j1:
                p0, q0 = i0 * sh + u * dh - pads[0], j0 * sw + v * dw - pads[2]
                taps.append((u, v, slice(p0, p0 + (i1 - i0 - 1) * sh + 1, sh),
                             slice(q0, q0 + (j1 - j0 - 1) * sw + 1, sw), (i0, i1), (j0, j1)))
    return taps


def _nan_where_padding_read(gy, g_sum, gw, shape, pads, strides, dil):
    """Set ∂L/∂w[o, u, v] to NaN where a non-finite gy[.., o] sits at an output pixel whose tap
    (u, v) reads padding (its product with the padding's 0 is NaN). Nothing to do, and no pass
    over gy, when there is no padding or Σ gy is finite in every channel (then every gy is)."""
    if g_sum is None or np.isfinite(g_sum).all():
        return
    oh, ow = gy.shape[1:3]
    kh, kw = gw.shape[1:3]
    bad = np.count_nonzero(~np.isfinite(gy), axis=0)                       # [OH, OW, O]
    total = bad.sum(axis=(0, 1))
    reads = {(u, v): bad[i0:i1, j0:j1].sum(axis=(0, 1))
             for u, v, _, _, (i0, i1), (j0, j1) in _taps(shape, (oh, ow), (kh, kw), pads,
                                                         strides, dil)}
    for u in range(kh):
        for v in range(kw):
            gw[total > reads.get((u, v), 0), u, v] = np.nan


def _depthwise_vjp(x, gy, w, pads, strides, dil, inputs_grad=True):
    """(∂L/∂x, ∂L/∂w) of a depthwise convolution with multiplier 1 (w [C, kh, kw, 1]). Per tap
    (u, v), over the output pixels [i0:i1, j0:j1] whose tap reads x (`_taps`):
        ∂L/∂x[tap's view] += gy[:, i0:i1, j0:j1]·w[:, u, v]    (channel-wise)
        ∂L/∂w[:, u, v]     = Σ_{n, i, j} gy[:, i0:i1, j0:j1]·x[tap's view]
    the latter by one einsum over n and i per output column and channel, summed over the columns
    at the end. The weights are tiled along an output row, so that each product runs over whole
    rows of gy. Each tap is three NumPy calls over the whole batch: no blocking, whose extra
    calls cost more than the cache saves, most of all with batch chunks on both cores."""
    n, oh, ow, c = gy.shape
    _, kh, kw, _ = w.shape
    dt = gy.dtype
    w_row = np.ascontiguousarray(np.broadcast_to(w[:, :, :, 0].transpose(1, 2, 0)[:, :, None],
                                                 (kh, kw, ow, c)))
    acc = np.zeros((kh, kw, ow, c), dt)
    gx = np.zeros(x.shape, dt) if inputs_grad else None
    tmp = np.empty(gy.size, dt)
    for u, v, rows, cols, (i0, i1), (j0, j1) in _taps(x.shape, (oh, ow), (kh, kw), pads,
                                                     strides, dil):
        g_uv = gy[:, i0:i1, j0:j1]
        if inputs_grad:
            t = np.multiply(g_uv, w_row[u, v, :j1 - j0], out=tmp[:g_uv.size].reshape(g_uv.shape))
            gx[:, rows, cols] += t
        np.einsum("nijc,nijc->jc", g_uv, x[:, rows, cols], out=acc[u, v, :j1 - j0])
    return gx, np.ascontiguousarray(acc.sum(axis=2).transpose(2, 0, 1)[:, :, :, None])


def _pointwise_vjp(x, gy, w, pads, strides, inputs_grad=True):
    """(∂L/∂x, ∂L/∂w) of a group-1 1x1 convolution: with X [P', C] the input pixels the kernel
    reads and G [P', O] their gy, ∂L/∂w = Gᵀ @ X and ∂L/∂x[read pixels] = G @ w (0 elsewhere)."""
    o, c = w.shape[0], w.shape[3]
    taps = _taps(x.shape, gy.shape[1:3], (1, 1), pads, strides, (1, 1))
    if not taps:
        return np.zeros(x.shape, gy.dtype), np.zeros(w.shape, gy.dtype)
    _, _, rows, cols, (i0, i1), (j0, j1) = taps[0]
    g_in = gy[:, i0:i1, j0:j1]
    g2 = g_in.reshape(-1, o)                       # a copy only when some pixels read padding
    xs = x[:, rows, cols]
    gw = np.matmul(g2.T, xs.reshape(-1, c)).reshape(w.shape)
    if not inputs_grad:
        return None, gw
    gx_in = np.matmul(g2, w.reshape(o, c)).reshape(xs.shape)
    if xs.shape == x.shape:
        return gx_in, gw
    gx = np.zeros(x.shape, gy.dtype)
    gx[:, rows, cols] = gx_in
    return gx, gw


def _dense_vjp(x, gy, w, pads, strides, dil, inputs_grad=True):
    """(∂L/∂x, ∂L/∂w) of a group-1 convolution, block by block of output pixels (BLOCK_ROWS or
    BLOCK_BYTES of patches): ∂L/∂w += G_bᵀ @ X_b with X_b the block's patch matrix [pixels,
    kh·kw·C] of the padded input (as the forward's im2col), and ∂L/∂x_pad[tap's window] +=
    G_b @ w[:, u, v] for every tap (u, v).

    With dw = 1 the taps a <= v < a + sw of a kernel row scatter to sw adjacent columns per output
    pixel, and the output pixels of a row to consecutive such groups: their products G_b @
    w[:, u, a:a + sw] (a last, shorter group followed by stored zeros) are added as one
    contiguous run per row of ∂L/∂x_pad instead of C values at a time. ∂L/∂x is ∂L/∂x_pad without
    its padding."""
    dt = gy.dtype
    o, kh, kw, c = w.shape
    n, oh, ow, _ = gy.shape
    (sh, sw), (dh, dw) = strides, dil
    k = kh * kw * c
    xp = np.ascontiguousarray(pad_hw(x, pads))
    wp = xp.shape[2]
    gxp = np.zeros(xp.shape if inputs_grad else 0, dt)
    g_rows = gxp.reshape(n, xp.shape[1], wp * c) if inputs_grad else None  # the runs are slices
    if dw == 1:   # groups of taps [a, b) whose columns a .. a + ow·sw − 1 form one run per row
        groups = [(a, min(a + sw, kw)) for a in range(0, kw, sw)]
        runs = [a + ow * sw <= wp for a, _ in groups]
    else:
        groups, runs = [(v, v + 1) for v in range(kw)], [False] * kw
    w_g = [[np.ascontiguousarray(w[:, u, a:b].reshape(o, -1)) for a, b in groups]
           for u in range(kh)]
    gw = np.zeros((o, k), dt)
    rows = max(BLOCK_ROWS, BLOCK_BYTES // (k * xp.itemsize))
    for n0, n1, i0, i1 in blocks(n, oh, ow, rows):
        nb, r = n1 - n0, i1 - i0
        cols = np.empty((nb, r, ow, kh, kw, c), dt)
        for u in range(kh):
            cols[:, :, :, u] = windows(xp, n0, n1, i0 * sh + u * dh, r, sh, ow, sw, kw, dw)
        g_b = gy[n0:n1, i0:i1].reshape(-1, o)
        gw += np.matmul(g_b.T, cols.reshape(-1, k))
        if not inputs_grad:
            continue
        run = np.empty((len(g_b), sw * c), dt)    # a whole group's products
        short = np.zeros_like(run)                # a shorter group's products, then zeros
        for u in range(kh):
            p = slice(i0 * sh + u * dh, (i1 - 1) * sh + u * dh + 1, sh)
            for (a, b), is_run, w_ab in zip(groups, runs, w_g[u]):
                if is_run:
                    buf = run if b - a == sw else short
                    np.matmul(g_b, w_ab, out=buf[:, :(b - a) * c])
                    g_rows[n0:n1, p, a * c:(a + ow * sw) * c].reshape(nb, r, ow, sw * c)[...] \
                        += buf.reshape(nb, r, ow, sw * c)
                    continue
                prod = np.matmul(g_b, w_ab).reshape(nb, r, ow, b - a, c)
                for v in range(a, b):
                    gxp[n0:n1, p, v * dw:v * dw + (ow - 1) * sw + 1:sw] += prod[:, :, :, v - a]
    if not inputs_grad:
        return None, gw.reshape(w.shape)
    t, _, l, _ = pads
    h, wd = x.shape[1:3]
    gx = gxp if gxp.shape == x.shape else np.ascontiguousarray(gxp[:, t:t + h, l:l + wd])
    return gx, gw.reshape(w.shape)


def _grouped_vjp(x, gy, w, g, pads, strides, dil):
    """(∂L/∂x, ∂L/∂w) of a grouped convolution, one pass per kernel tap (u, v) over the view T of
    x_pad it reads, with the pixels as rows and the groups as a batch: ∂L/∂w[:, u, v] = Gᵀ @ T
    and ∂L/∂x_pad[T's view] += G @ w[:, u, v] per group; with one input channel per group and
    multiplier m = O / C, the same sums as two einsums over m. ∂L/∂x_pad is a zero buffer of
    x_pad's shape, cropped at the end."""
    dt = gy.dtype
    n, h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    _, oh, ow, _ = gy.shape
    (sh, sw), (dh, dw) = strides, dil
    xp = pad_hw(x, pads)
    gxp = np.zeros(xp.shape, dt)
    gw = np.empty(w.shape, dt)
    depthwise = cg == 1
    if depthwise:  # m = O / C output channels per input channel
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
    return np.ascontiguousarray(gxp[:, t:t + h, l:l + wd]), gw
