"""conv_transpose{r}d, r = 1, 2, 3: transposed convolution on channels-last activations
[N, *spatial, C] (NLC, NHWC, NDHWC; ONNX ConvTranspose).

Definition (written for r = 2; every other rank alike, one index per spatial axis)
    With g = o // Og the group of output channel o (Og = O / groups output and Cg = C / groups
    input channels per group), every input pixel scatters its values through the kernel:
        y_full[n, i·sh + u·dh, j·sw + v·dw, o] += x[n, i, j, g·Cg + c] · w[o, u, v, c]
    for i < H, j < W, u < kh, v < kw, c < Cg; y_full is [N, Hf, Wf, O] with
        Hf = (H − 1)·sh + (kh − 1)·dh + 1 + output_padding_h   (Wf alike),
    its entries no pixel reaches being 0. Then
        y[n, p, q, o] = b[o] + y_full[n, p + pt, q + pl, o]     for p < OH, q < OW,
    OH = Hf − pt − pb and OW = Wf − pl − pr; a negative pad (from output_shape) reads outside
    y_full, where y_full is 0. b = 0 when there is no bias. The kernel is not flipped (ONNX).
    For r = 2 this is the adjoint of conv2d: with K[g·Cg + c, u, v, o'] = w[g·Og + o', u, v, c]
    (conv2d's OHWI weight of the convolution from O to C channels), Σ y_full·z = Σ x·conv2d(z; K)
    for every z of y_full's shape, which is how the 2-D VJP computes ∂L/∂x.
Weight layout (refq's convention: axis 0 is the output channel)
    w: [O, *kernel, C/groups] (2-D: [O, kh, kw, C/groups], as conv2d's OHWI). ONNX stores
    W [C, O/groups, *kernel]; the importer converts with w[g·Og + o', u, c] = W[g·Cg + c, o', u].
Padding (ONNX auto_pad)
    "valid" (all pads 0), "explicit" (pads per axis, before then after: [b_0, e_0, b_1, e_1, ...];
    2-D [top, bottom, left, right]; each >= 0, as given), "same_upper" / "same_lower" (output
    size = input size · stride).
    When output_shape (the r output sizes) is given (or implied by same_*), per axis
        total = (in − 1)·s + (k − 1)·d + 1 + output_padding − out,
        same_upper: before = total // 2, after = total − total // 2;
        otherwise:  before = total − total // 2, after = total // 2   (ONNX's rule),
    and explicit pads must then be zeros (output_shape replaces them).
Vector-Jacobian product
    gy_full = gy placed at offset (pt, pl) in zeros of y_full's shape (the adjoint of the crop;
    entries of gy outside y_full, from negative pads, reach only ∂L/∂b):
        ∂L/∂x[n, i, j, g·Cg + c] = Σ_{u,v,o'} gy_full[n, i·sh + u·dh, j·sw + v·dw, g·Og + o']
                                              · w[g·Og + o', u, v, c]
            (r = 2: conv2d(gy_full; K, strides, dilations, no padding, groups)[:, :H, :W])
        ∂L/∂w[o, u, v, c] = Σ_{n,i,j} gy_full[n, i·sh + u·dh, j·sw + v·dw, o] · x[n, i, j, g·Cg + c]
        ∂L/∂b[o] = Σ_{n,p,q} gy[n, p, q, o]
    y is bilinear in (x, w) and affine in b: no kinks.
Shapes
    x: [N, *spatial, C]; weight: [O, *kernel, C/groups]; bias: [O]; y: [N, *out, O].
Attributes
    strides (ints[r], ones), dilations (ints[r], ones), groups (int, 1), output_padding
    (ints[r], zeros; each < its stride or its dilation, as ONNX and PyTorch require), padding
    ("valid" | "explicit" | "same_upper" | "same_lower", "valid"), pads (ints[2r], zeros),
    output_shape (ints, [] = absent, else the r output sizes).
MACs
    Π spatial · C/groups · Π kernel · O per batch element (every scattered product).
Errors
    ShapeError when x or the weight is not of rank r + 2, groups does not divide C and O,
    C/groups differs from the weight's last axis, the bias is not [O], a stride or dilation is
    < 1, an output_padding is negative or not below its stride or dilation, explicit pads are
    negative or given with output_shape, output_shape has not r positive entries, or the output
    is empty.
Integer lowering
    conv_transpose2d only (int_conv_transpose2d); the 1-D and 3-D ops have none.

Evaluation: one BLAS matmul per block of images and group ([pixels, Cg] @ [Cg, taps·Og]),
then one strided add per kernel tap (row-major tap order) of its columns into y_full (col2im).
The 2-D VJP is conv2d's forward (im2col + matmul) and kh·kw·groups matmuls for ∂L/∂w; the 1-D
and 3-D VJPs are two matmuls per tap and group on gy_full's strided tap views.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParamError, ShapeError
from .base import Attr, Op, Traits
from .conv import forward_fused as conv2d_forward
from .conv_geometry import BLOCK_BYTES

__all__ = ["OPS", "transpose_geometry", "conv2d_weight", "tap_slices"]

PADDINGS = ("valid", "explicit", "same_upper", "same_lower")
_LAYOUTS = {1: "NLC", 2: "NHWC", 3: "NDHWC"}
_KERNEL = {1: "k", 2: "kh, kw", 3: "kd, kh, kw"}


def _weight(params, r=2):
    if "weight" not in params:
        raise ParamError(f"conv_transpose{r}d: parameter 'weight' [O, {_KERNEL[r]}, C/groups] is "
                         "missing")
    return params["weight"]


def transpose_geometry(x_shape, attrs, params, r=2):
    """((b_0, e_0, b_1, e_1, ...), full sizes, output sizes, weight shape) of the rank-r op
    after checking everything (module docstring); sizes None when a spatial size is unknown.
    For r = 2 the pads are (pt, pb, pl, pr)."""
    what = f"conv_transpose{r}d"
    if len(x_shape) != r + 2:
        raise ShapeError(f"{what} expects an {_LAYOUTS[r]} input of rank {r + 2}, got shape "
                         f"{list(x_shape)}")
    w = _weight(params, r)
    if w.ndim != r + 2:
        raise ShapeError(f"{what} weight must be [O, {_KERNEL[r]}, C/groups], got shape "
                         f"{list(w.shape)}")
    o, *kernel, cg = w.shape
    c, g = x_shape[-1], attrs["groups"]
    if g < 1 or o % g or (c is not None and (c % g or c // g != cg)):
        raise ShapeError(f"{what}: groups {g} with {c} input channels and the weight "
                         f"{list(w.shape)}: groups must divide C and O, and C / groups must be the "
                         "weight's last axis")
    if "bias" in params and tuple(params["bias"].shape) != (o,):
        raise ShapeError(f"{what} bias must be [O] = [{o}], got shape {list(params['bias'].shape)}")
    strides, dil, op = attrs["strides"], attrs["dilations"], attrs["output_padding"]
    if min(strides) < 1 or min(dil) < 1:
        raise ShapeError(f"{what}: strides {strides} and dilations {dil} must be >= 1")
    for a in range(r):
        if not 0 <= op[a] < max(strides[a], dil[a]):
            raise ShapeError(f"{what}: output_padding {op} must be >= 0 and below the stride or "
                             f"the dilation of its axis (strides {strides}, dilations {dil})")
    padding, pads, out_shape = attrs["padding"], list(attrs["pads"]), list(attrs["output_shape"])
    if padding == "explicit" and min(pads) < 0:
        raise ShapeError(f"{what}: explicit pads {pads} must be >= 0")
    if out_shape and (len(out_shape) != r or min(out_shape) < 1):
        names = {1: "[OL]", 2: "[OH, OW]", 3: "[OD, OH, OW]"}[r]
        raise ShapeError(f"{what}: output_shape {out_shape} must be {names}, "
                         f"{'each' if r > 2 else 'both' if r == 2 else 'it'} >= 1")
    if out_shape and padding == "explicit" and any(pads):
        raise ShapeError(f"{what}: give either pads {pads} or output_shape {out_shape}: "
                         "output_shape sets the pads")
    full, before_after, out = [], [], []
    for a, (n, k) in enumerate(zip(x_shape[1:-1], kernel)):
        if n is None:
            full.append(None)
            out.append(out_shape[a] if out_shape else None)
            before_after += [None, None] if (out_shape or padding.startswith("same")) else \
                ([pads[2 * a], pads[2 * a + 1]] if padding == "explicit" else [0, 0])
            continue
        nf = (n - 1) * strides[a] + (k - 1) * dil[a] + 1 + op[a]
        want = out_shape[a] if out_shape else (n * strides[a] if padding.startswith("same")
                                               else None)
        if want is not None:
            total = nf - want
            before = total // 2 if padding == "same_upper" else total - total // 2
            b, e = before, total - before
        elif padding == "explicit":
            b, e = pads[2 * a], pads[2 * a + 1]
        else:
            b, e = 0, 0
        if nf - b - e < 1:
            raise ShapeError(f"{what}: pads {b}, {e} leave no output on an axis of full size {nf}")
        full.append(nf)
        before_after += [b, e]
        out.append(nf - b - e)
    return tuple(before_after), tuple(full), tuple(out), w.shape


def _infer_shape(r):
    def infer(in_shapes, attrs, params):
        _, _, out, wshape = transpose_geometry(tuple(in_shapes[0]), attrs, params, r)
        return (in_shapes[0][0], *out, wshape[0])
    return infer


def _param_shapes(in_shapes, attrs):
    return {}   # O and the kernel live in the weight: infer_shape checks it


def _macs(r):
    def macs(in_shapes, out_shape, attrs, params):
        spatial = in_shapes[0][1:-1]
        o, *kernel, cg = _weight(params, r).shape
        if None in spatial:
            return 0
        return int(np.prod(spatial, dtype=np.int64)) * cg * int(np.prod(kernel)) * o
    return macs


def _window(full, b, out):
    """(source slice of the full axis, destination slice of the output axis) of one axis: output
    p reads full p + b (b the pad before) when 0 <= p + b < full."""
    s0, s1 = max(0, b), min(full, b + out)
    return slice(s0, max(s0, s1)), slice(s0 - b, s0 - b + max(0, s1 - s0))


def _windows(full, pads, out):
    return [_window(f, pads[2 * a], out[a]) for a, f in enumerate(full)]


def _crop(y_full, pads, out, bias, dtype):
    """y [N, *out, O] = bias + y_full read at offset (b_0, b_1, ...), 0 outside y_full."""
    n, *full, o = y_full.shape
    win = _windows(full, pads, out)
    if all((src.start, src.stop) == (0, f) for (src, _), f in zip(win, full)) and \
            tuple(full) == tuple(out):
        y = y_full
    else:
        y = np.zeros((n, *out, o), dtype)
        y[(slice(None),) + tuple(d for _, d in win)] = y_full[(slice(None),) +
                                                             tuple(s for s, _ in win)]
    if bias is not None:
        y += bias
    return y


def tap_slices(tap, dilations, sizes, strides):
    """The strided slices of y_full that the input pixels reach through kernel tap `tap`
    (y_full[i·s + u·d] for i < size, per spatial axis)."""
    return tuple(slice(u * d, u * d + (m - 1) * s + 1, s)
                 for u, d, m, s in zip(tap, dilations, sizes, strides))


def _forward(r):
    def forward(inputs, params, attrs):
        x = inputs[0]
        pads, full, out, (o, *kernel, cg) = transpose_geometry(x.shape, attrs, params, r)
        dt = x.dtype
        n, *spatial, c = x.shape
        g = attrs["groups"]
        og, taps = o // g, int(np.prod(kernel))
        w = params["weight"].astype(dt, copy=False)
        # [g, Cg, taps·Og]: the columns one input pixel scatters, per group
        w_g = w.reshape(g, og, taps, cg).transpose(0, 3, 2, 1).reshape(g, cg, taps * og)
        y_full = np.zeros((n, *full, o), dt)
        per_image = max(1, int(np.prod(spatial)) * taps * o * dt.itemsize)
        step = max(1, BLOCK_BYTES * 8 // per_image)
        for n0 in range(0, n, step):
            n1 = min(n, n0 + step)
            xb = x[n0:n1].reshape(-1, c)                               # [P, C]
            if g == 1:
                cols = np.matmul(xb, w_g[0])                           # [P, taps·O]
            else:
                cols = np.empty((len(xb), taps, g, og), dt)
                for gi in range(g):
                    cols[:, :, gi] = np.matmul(xb[:, gi * cg:(gi + 1) * cg], w_g[gi]).reshape(
                        -1, taps, og)
            cols = cols.reshape(n1 - n0, *spatial, taps, o)
            for t, tap in enumerate(np.ndindex(*kernel)):              # row-major tap order
                dst = tap_slices(tap, attrs["dilations"], spatial, attrs["strides"])
                y_full[(slice(n0, n1),) + dst] += cols[..., t, :]
        b = params["bias"].astype(dt, copy=False) if "bias" in params else None
        return _crop(y_full, pads, out, b, dt)
    return forward


def conv2d_weight(w, groups):
    """K [C, kh, kw, O/groups] with K[g·Cg + c, u, v, o'] = w[g·Og + o', u, v, c]: the conv2d
    weight whose convolution (from O to C channels) is the adjoint of conv_transpose2d's scatter."""
    o, kh, kw, cg = w.shape
    og = o // groups
    return np.ascontiguousarray(w.reshape(groups, og, kh, kw, cg).transpose(0, 4, 2, 3, 1)
                                .reshape(groups * cg, kh, kw, og))


def _vjp(inputs, params, attrs, y, gy):
    """conv_transpose2d's vector-Jacobian product (module docstring): ∂L/∂x is conv2d of gy_full
    (gy in zeros of y_full's shape) with `conv2d_weight(w)`; ∂L/∂w[:, u, v] = Σ gy_full's tap
    view ⊗ x per group, one BLAS matmul per tap; ∂L/∂b = Σ gy. Computed in x's dtype; each
    gradient in its operand's dtype."""
    x = inputs[0]
    dt = x.dtype
    pads, (hf, wf), out, (o, kh, kw, cg) = transpose_geometry(x.shape, attrs, params)
    n, h, wd, c = x.shape
    g = attrs["groups"]
    og = o // g
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
    gy = np.asarray(gy, dtype=dt)
    gy_full = np.zeros((n, hf, wf, o), dt)
    (src_h, dst_h), (src_w, dst_w) = _window(hf, pads[0], out[0]), _window(wf, pads[2], out[1])
    gy_full[:, src_h, src_w] = gy[:, dst_h, dst_w]
    w = params["weight"].astype(dt, copy=False)
    k_attrs = {"strides": list(attrs["strides"]), "dilations": list(attrs["dilations"]),
               "padding": "valid", "pads": [0, 0, 0, 0], "groups": g}
    gx = conv2d_forward([gy_full], {"weight": conv2d_weight(w, g)}, k_attrs, None)
    gx = np.ascontiguousarray(gx[:, :h, :wd])
    x2 = x.reshape(-1, c)                                              # [P, C]
    gw = np.empty((o, kh, kw, cg), dt)
    for u in range(kh):
        rows = slice(u * dh, u * dh + (h - 1) * sh + 1, sh)
        for v in range(kw):
            cs = slice(v * dw, v * dw + (wd - 1) * sw + 1, sw)
            t = gy_full[:, rows, cs].reshape(-1, o)                    # [P, O] (a copy)
            for gi in range(g):
                gw[gi * og:(gi + 1) * og, u, v] = np.matmul(t[:, gi * og:(gi + 1) * og].T,
                                                            x2[:, gi * cg:(gi + 1) * cg])
    g_params = {"weight": gw.astype(params["weight"].dtype, copy=False)}
    if "bias" in params:
        g_params["bias"] = gy.sum(axis=(0, 1, 2)).astype(params["bias"].dtype, copy=False)
    return [gx], g_params


def _vjp_nd(r):
    def vjp(inputs, params, attrs, y, gy):
        """conv_transpose{r}d's vector-Jacobian product for r = 1, 3 (module docstring): with
        gy_full as for r = 2 and V_t = gy_full's strided view at kernel tap t,
        ∂L/∂x[..., g·Cg + c] = Σ_t V_t[..., g·Og:(g+1)·Og] @ w[g·Og:(g+1)·Og, t, c] and
        ∂L/∂w[:, t] = V_t^T x per group, one BLAS matmul per tap and group; ∂L/∂b = Σ gy."""
        x = inputs[0]
        dt = x.dtype
        pads, full, out, (o, *kernel, cg) = transpose_geometry(x.shape, attrs, params, r)
        n, *spatial, c = x.shape
        g = attrs["groups"]
        og, taps = o // g, int(np.prod(kernel))
        gy = np.asarray(gy, dtype=dt)
        gy_full = np.zeros((n, *full, o), dt)
        win = _windows(full, pads, out)
        gy_full[(slice(None),) + tuple(s for s, _ in win)] = gy[(slice(None),) +
                                                               tuple(d for _, d in win)]
        w = params["weight"].astype(dt, copy=False).reshape(o, taps, cg)
        x2 = x.reshape(-1, c)                                          # [P, C]
        gx = np.zeros((len(x2), c), dt)
        gw = np.empty((o, taps, cg), dt)
        for t, tap in enumerate(np.ndindex(*kernel)):
            src = tap_slices(tap, attrs["dilations"], spatial, attrs["strides"])
            v = gy_full[(slice(None),) + src].reshape(-1, o)           # [P, O] (a copy)
            for gi in range(g):
                ro, rc = slice(gi * og, (gi + 1) * og), slice(gi * cg, (gi + 1) * cg)
                gx[:, rc] += np.matmul(v[:, ro], w[ro, t])
                gw[ro, t] = np.matmul(v[:, ro].T, x2[:, rc])
        g_params = {"weight": gw.reshape(params["weight"].shape).astype(
            params["weight"].dtype, copy=False)}
        if "bias" in params:
            g_params["bias"] = gy.sum(axis=tuple(range(r + 1))).astype(params["bias"].dtype,
                                                                        copy=False)
        return [gx.reshape(x.shape)], g_params
    return vjp


def _attrs(r):
    return {"strides": Attr("ints", (1,) * r, length=r),
            "dilations": Attr("ints", (1,) * r, length=r),
            "groups": Attr("int", 1, minimum=1),
            "output_padding": Attr("ints", (0,) * r, length=r),
            "padding": Attr("str", "valid", choices=PADDINGS),
            "pads": Attr("ints", (0,) * (2 * r), length=2 * r),
            "output_shape": Attr("ints", ())}


OPS = [
    Op("conv_transpose2d", _forward(2), _infer_shape(2), attrs=_attrs(2),
       params={"weight": True, "bias": False}, param_shapes=_param_shapes, macs=_macs(2),
       vjp=_vjp, traits=Traits("ConvTranspose", takes_activation=True,
                                           lowering="conv_transpose")),
    *[Op(f"conv_transpose{r}d", _forward(r), _infer_shape(r), attrs=_attrs(r),
         params={"weight": True, "bias": False}, param_shapes=_param_shapes, macs=_macs(r),
         vjp=_vjp_nd(r), traits=Traits("ConvTranspose")) for r in (1, 3)],
]
