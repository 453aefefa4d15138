"""conv_transpose2d: 2-D transposed convolution on NHWC activations (ONNX ConvTranspose).

Definition
    With g = o // Og the group of output channel o (Og = O / groups output and Cg = C / groups
    input channels per group), every input pixel scatters its values through the kernel:
        y_full[n, i·sh + u·dh, j·sw + v·dw, o] += x[n, i, j, g·Cg + c] · w[o, u, v, c]
    for i < H, j < W, u < kh, v < kw, c < Cg; y_full is [N, Hf, Wf, O] with
        Hf = (H − 1)·sh + (kh − 1)·dh + 1 + output_padding_h   (Wf alike),
    its entries no pixel reaches being 0. Then
        y[n, p, q, o] = b[o] + y_full[n, p + pt, q + pl, o]     for p < OH, q < OW,
    OH = Hf − pt − pb and OW = Wf − pl − pr; a negative pad (from output_shape) reads outside
    y_full, where y_full is 0. b = 0 when there is no bias. The kernel is not flipped (ONNX).
    This is the adjoint of conv2d: with K[g·Cg + c, u, v, o'] = w[g·Og + o', u, v, c] (conv2d's
    OHWI weight of the convolution from O to C channels), Σ y_full·z = Σ x·conv2d(z; K) for every
    z of y_full's shape, which is how the VJP computes ∂L/∂x.
Weight layout (refq's convention: axis 0 is the output channel)
    w: [O, kh, kw, C/groups], as conv2d's OHWI. ONNX stores W [C, O/groups, kh, kw]; the importer
    converts with w[g·Og + o', u, v, c] = W[g·Cg + c, o', u, v].
Padding (ONNX auto_pad)
    "valid" (all pads 0), "explicit" (pads = [top, bottom, left, right] as given, each >= 0),
    "same_upper" / "same_lower" (output size = input size · stride).
    When output_shape [OH, OW] is given (or implied by same_*), per axis
        total = (in − 1)·s + (k − 1)·d + 1 + output_padding − out,
        same_upper: before = total // 2, after = total − total // 2;
        otherwise:  before = total − total // 2, after = total // 2   (ONNX's rule),
    and explicit pads must then be zeros (output_shape replaces them).
Vector-Jacobian product
    gy_full = gy placed at offset (pt, pl) in zeros of y_full's shape (the adjoint of the crop;
    entries of gy outside y_full, from negative pads, reach only ∂L/∂b):
        ∂L/∂x = conv2d(gy_full; K, strides, dilations, no padding, groups)[:, :H, :W]
        ∂L/∂w[o, u, v, c] = Σ_{n,i,j} gy_full[n, i·sh + u·dh, j·sw + v·dw, o] · x[n, i, j, g·Cg + c]
        ∂L/∂b[o] = Σ_{n,p,q} gy[n, p, q, o]
    y is bilinear in (x, w) and affine in b: no kinks.
Shapes
    x: [N, H, W, C]; weight: [O, kh, kw, C/groups]; bias: [O]; y: [N, OH, OW, O].
Attributes
    strides (ints[2], (1, 1)), dilations (ints[2], (1, 1)), groups (int, 1), output_padding
    (ints[2], (0, 0); each < its stride or its dilation, as ONNX and PyTorch require), padding
    ("valid" | "explicit" | "same_upper" | "same_lower", "valid"), pads (ints[4], zeros),
    output_shape (ints, [] = absent, else [OH, OW]).
MACs
    H · W · C/groups · kh · kw · O per batch element (every scattered product).
Errors
    ShapeError when x or the weight is not rank 4, groups does not divide C and O, C/groups
    differs from the weight's last axis, the bias is not [O], a stride or dilation is < 1, an
    output_padding is negative or not below its stride or dilation, explicit pads are negative
    or given with output_shape, output_shape has not 2 positive entries, or the output is empty.

Evaluation: one BLAS matmul per block of images and group ([pixels, Cg] @ [Cg, kh·kw·Og]),
then kh·kw strided adds of its columns into y_full (col2im); the VJP is conv2d's forward (im2col +
matmul) and kh·kw·groups matmuls for ∂L/∂w.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParamError, ShapeError
from .base import Attr, Op, Traits
from .conv import forward_fused as conv2d_forward
from .conv_geometry import BLOCK_BYTES

__all__ = ["OPS", "transpose_geometry", "conv2d_weight"]

PADDINGS = ("valid", "explicit", "same_upper", "same_lower")


def _weight(params):
    if "weight" not in params:
        raise ParamError("conv_transpose2d: parameter 'weight' [O, kh, kw, C/groups] is missing")
    return params["weight"]


def transpose_geometry(x_shape, attrs, params):
    """((pt, pb, pl, pr), (Hf, Wf), (OH, OW), weight shape) after checking everything (module
    docstring); sizes None when H or W is unknown."""
    what = "conv_transpose2d"
    if len(x_shape) != 4:
        raise ShapeError(f"{what} expects an NHWC input of rank 4, got shape {list(x_shape)}")
    w = _weight(params)
    if w.ndim != 4:
        raise ShapeError(f"{what} weight must be [O, kh, kw, C/groups], got shape {list(w.shape)}")
    o, kh, kw, cg = w.shape
    c, g = x_shape[3], attrs["groups"]
    if g < 1 or o % g or (c is not None and (c % g or c // g != cg)):
        raise ShapeError(f"{what}: groups {g} with {c} input channels and the weight "
                         f"{list(w.shape)}: groups must divide C and O, and C / groups must be the "
                         "weight's last axis")
    if "bias" in params and tuple(params["bias"].shape) != (o,):
        raise ShapeError(f"{what} bias must be [O] = [{o}], got shape {list(params['bias'].shape)}")
    strides, dil, op = attrs["strides"], attrs["dilations"], attrs["output_padding"]
    if min(strides) < 1 or min(dil) < 1:
        raise ShapeError(f"{what}: strides {strides} and dilations {dil} must be >= 1")
    for a in range(2):
        if not 0 <= op[a] < max(strides[a], dil[a]):
            raise ShapeError(f"{what}: output_padding {op} must be >= 0 and below the stride or "
                             f"the dilation of its axis (strides {strides}, dilations {dil})")
    padding, pads, out_shape = attrs["padding"], list(attrs["pads"]), list(attrs["output_shape"])
    if padding == "explicit" and min(pads) < 0:
        raise ShapeError(f"{what}: explicit pads {pads} must be >= 0")
    if out_shape and (len(out_shape) != 2 or min(out_shape) < 1):
        raise ShapeError(f"{what}: output_shape {out_shape} must be [OH, OW], both >= 1")
    if out_shape and padding == "explicit" and any(pads):
        raise ShapeError(f"{what}: give either pads {pads} or output_shape {out_shape}: "
                         "output_shape sets the pads")
    full, before_after, out = [], [], []
    for a, (n, k) in enumerate(zip(x_shape[1:3], (kh, kw))):
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


def _infer_shape(in_shapes, attrs, params):
    _, _, (oh, ow), wshape = transpose_geometry(tuple(in_shapes[0]), attrs, params)
    return (in_shapes[0][0], oh, ow, wshape[0])


def _param_shapes(in_shapes, attrs):
    return {}   # O, kh, kw live in the weight: infer_shape checks it


def _macs(in_shapes, out_shape, attrs, params):
    _, h, w, _ = in_shapes[0]
    o, kh, kw, cg = _weight(params).shape
    return 0 if h is None or w is None else int(h * w * cg * kh * kw * o)


def _window(full, b, out):
    """(source slice of the full axis, destination slice of the output axis) of one axis: output
    p reads full p + b (b the pad before) when 0 <= p + b < full."""
    s0, s1 = max(0, b), min(full, b + out)
    return slice(s0, max(s0, s1)), slice(s0 - b, s0 - b + max(0, s1 - s0))


def _crop(y_full, pads, out, bias, dtype):
    """y [N, OH, OW, O] = bias + y_full read at offset (pt, pl), 0 outside y_full."""
    n, hf, wf, o = y_full.shape
    (sh, dh), (sw, dw) = _window(hf, pads[0], out[0]), _window(wf, pads[2], out[1])
    if (sh.start, sh.stop, sw.start, sw.stop) == (0, hf, 0, wf) and (hf, wf) == tuple(out):
        y = y_full
    else:
        y = np.zeros((n, out[0], out[1], o), dtype)
        y[:, dh, dw] = y_full[:, sh, sw]
    if bias is not None:
        y += bias
    return y


def _forward(inputs, params, attrs):
    x = inputs[0]
    pads, (hf, wf), out, (o, kh, kw, cg) = transpose_geometry(x.shape, attrs, params)
    dt = x.dtype
    n, h, wd, c = x.shape
    g = attrs["groups"]
    og = o // g
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
    w = params["weight"].astype(dt, copy=False)
    # [g, Cg, kh·kw·Og]: the columns one input pixel scatters, per group
    w_g = w.reshape(g, og, kh, kw, cg).transpose(0, 4, 2, 3, 1).reshape(g, cg, kh * kw * og)
    y_full = np.zeros((n, hf, wf, o), dt)
    per_image = max(1, h * wd * kh * kw * o * dt.itemsize)
    step = max(1, BLOCK_BYTES * 8 // per_image)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        xb = x[n0:n1].reshape(-1, c)                                   # [P, C]
        if g == 1:
            cols = np.matmul(xb, w_g[0])                               # [P, kh·kw·O]
        else:
            cols = np.empty((len(xb), kh, kw, g, og), dt)
            for gi in range(g):
                cols[:, :, :, gi] = np.matmul(xb[:, gi * cg:(gi + 1) * cg], w_g[gi]).reshape(
                    -1, kh, kw, og)
        cols = cols.reshape(n1 - n0, h, wd, kh, kw, o)
        for u in range(kh):
            rows = slice(u * dh, u * dh + (h - 1) * sh + 1, sh)
            for v in range(kw):
                cs = slice(v * dw, v * dw + (wd - 1) * sw + 1, sw)
                y_full[n0:n1, rows, cs] += cols[:, :, :, u, v]
    b = params["bias"].astype(dt, copy=False) if "bias" in params else None
    return _crop(y_full, pads, out, b, dt)


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


OPS = [
    Op("conv_transpose2d", _forward, _infer_shape,
       attrs={"strides": Attr("ints", (1, 1), length=2),
              "dilations": Attr("ints", (1, 1), length=2),
              "groups": Attr("int", 1, minimum=1),
              "output_padding": Attr("ints", (0, 0), length=2),
              "padding": Attr("str", "valid", choices=PADDINGS),
              "pads": Attr("ints", (0, 0, 0, 0), length=4),
              "output_shape": Attr("ints", ())},
       params={"weight": True, "bias": False}, param_shapes=_param_shapes, macs=_macs,
       vjp=_vjp, traits=Traits("ConvTranspose", takes_activation=True,
                                           lowering="conv_transpose")),
]
