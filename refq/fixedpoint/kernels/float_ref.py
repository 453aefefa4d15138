"""The float32 reference kernels of LiteRT that a dynamic-range ("hybrid") TFLite model runs
between its int8-weight layers (`hybrid`); glibc's single-precision tanh they need is `libm_tanhf`.

Every op computes in float32 in a fixed order, following LiteRT's reference kernels
(`OpResolverType.BUILTIN_REF`) as ../shared/reference/fixedpoint.md §8b states them, so that every
tensor of such a model is reproduced bit for bit:

int_f32_conv2d      float32 conv2d / depthwise conv2d, sequential accumulation
int_f32_dense       float32 fully connected, sequential accumulation
int_f32_binary      float32 add / sub / mul with broadcasting
int_f32_avg_pool2d  float32 average pooling over the taps inside the image
int_f32_mean        float32 mean over axes, sequential sum
int_f32_softmax     float32 softmax with C's expf
int_f32_unary       float32 logistic / tanh / hard_swish

Conventions (shared with `hybrid`, which builds on the helpers below): activations NHWC; weights
OHWI (depthwise: [C·multiplier, kh, kw, 1], groups = C). Inputs may arrive as float64 holding
float32 values (a float64 run): every kernel rounds its inputs and float parameters to float32
(exact for such values) and returns float32 values in the input's dtype (`as_output`). The names
start with `int_` because `refq.ops.get_op` finds the kernels of the accelerator model by that
prefix; the tensors between them are float32.
Fused activation (`activation`): none, relu (max(x, 0)), relu6 (min(max(x, 0), 6)), relu_n1_to_1
(min(max(x, −1), 1)), applied to the float32 result, as TFLite's ActivationFunctionWithMinMax.
Non-finite inputs are outside the contract (padded taps are computed as +0 products, which equals
skipping them for finite values).
"""
from __future__ import annotations

import numpy as np

from ...errors import ParamError, ShapeError
from ...layers import REGISTRY
from ...layers.base import Attr, Op
from ...layers.conv import PADDINGS, pad_hw, window_geometry
from ...layers.elementwise import broadcast_shape
from .libm_expf import expf
from .libm_tanhf import tanhf

__all__ = ["OPS", "ACTIVATIONS", "ACTIVATION_ATTR", "CONV_ATTRS", "GEOMETRY_ATTRS",
           "as_f32", "activate", "as_output", "conv_shape", "dense_shape", "conv_macs",
           "dense_macs"]

F32 = np.float32
ACTIVATIONS = ("none", "relu", "relu6", "relu_n1_to_1")
_BOUNDS = {"none": (None, None), "relu": (0.0, None), "relu6": (0.0, 6.0),
           "relu_n1_to_1": (-1.0, 1.0)}
GEOMETRY_ATTRS = {"strides": Attr("ints", (1, 1), length=2, minimum=1),
                  "dilations": Attr("ints", (1, 1), length=2, minimum=1),
                  "padding": Attr("str", "valid", choices=PADDINGS),
                  "pads": Attr("ints", (0, 0, 0, 0), length=4, minimum=0),
                  "groups": Attr("int", 1, minimum=1)}
ACTIVATION_ATTR = {"activation": Attr("str", "none", choices=ACTIVATIONS)}


def as_f32(x):
    """x as a float32 array (no copy when it is one)."""
    return np.asarray(x).astype(F32, copy=False)


def activate(y, activation):
    """min(max(y, lo), hi) in float32 with the activation's bounds (None: no bound)."""
    lo, hi = _BOUNDS[activation]
    if lo is not None:
        y = np.maximum(y, F32(lo))
    if hi is not None:
        y = np.minimum(y, F32(hi))
    return y


def as_output(y, like):
    """y in the float dtype of `like` (float32 when `like` is not a float array)."""
    return y.astype(np.asarray(like).dtype if np.asarray(like).dtype.kind == "f" else F32,
                    copy=False)


# ---- convolutions ----------------------------------------------------------------------------
def _conv_geometry(x_shape, w_shape, attrs):
    pads, (oh, ow) = window_geometry(x_shape[1:3], w_shape[1:3], attrs["strides"],
                                     attrs["dilations"], attrs["padding"], attrs["pads"],
                                     "conv2d")
    return pads, oh, ow


def conv_shape(in_shapes, attrs, params):
    geo = {k: attrs[k] for k in GEOMETRY_ATTRS}
    float_params = {k: np.asarray(params[k]) for k in ("weight", "bias") if k in params}
    out = REGISTRY["conv2d"].infer_shape(in_shapes, geo, float_params)
    _check_scales(params, np.shape(params["weight"])[0], "weight_scale" in params)
    return out


def _check_scales(params, channels, needed):
    if not needed:
        return
    s = np.asarray(params.get("weight_scale", []))
    if s.ndim != 1 or s.size not in (1, channels):
        raise ParamError(f"parameter 'weight_scale' must hold 1 or {channels} values, got shape "
                         f"{list(s.shape)}")
    if s.dtype.kind != "f" or not np.all(np.isfinite(s) & (s > 0)):
        raise ParamError("parameter 'weight_scale' must hold finite positive floats")
    w = np.asarray(params["weight"])
    if w.size and (w.min() < -128 or w.max() > 127 or np.any(w != np.round(w))):
        raise ParamError("parameter 'weight' must hold int8 codes")


def _taps(x, w_shape, attrs):
    """Yield (u, v, tap [N, OH, OW, C]) of the zero-padded input, in kernel order."""
    pads, oh, ow = _conv_geometry(x.shape, w_shape, attrs)
    xp = pad_hw(x, pads)
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
    for u in range(w_shape[1]):
        for v in range(w_shape[2]):
            yield u, v, xp[:, u * dh:u * dh + (oh - 1) * sh + 1:sh,
                           v * dw:v * dw + (ow - 1) * sw + 1:sw]


def _input_channels(w_shape, channels, groups):
    """[Cg, O]: the input channel that weight column c of output channel o reads."""
    o, cg = w_shape[0], w_shape[3]
    group = np.arange(o) // (o // groups)
    return group[None, :] * cg + np.arange(cg)[:, None]


def _f32_conv_forward(inputs, params, attrs):
    """int_f32_conv2d — float32 convolution in LiteRT's reference order.

    Definition
        total[n, i, j, o] = 0; for (u, v, c) in row-major order over the kernel (taps outside
        the image skipped):
            total += x[n, i·sh + u·dh − pt, j·sw + v·dw − pl, g·Cg + c]·w[o, u, v, c]
        (each product and sum rounded to float32, no fused multiply-add)
        y = act(total + bias[o])                    (reference_ops::Conv, DepthwiseConv; §8b)
        g = o // (O/groups); a depthwise conv2d is groups = C with weight [C·M, kh, kw, 1].
    Shapes
        x [N, H, W, C]; weight [O, kh, kw, C/groups] (OHWI); bias [O]; y [N, OH, OW, O].
    Errors
        ShapeError as conv2d.
    """
    x, w = as_f32(inputs[0]), as_f32(params["weight"])
    _, oh, ow = _conv_geometry(x.shape, w.shape, attrs)
    total = np.zeros((x.shape[0], oh, ow, w.shape[0]), F32)
    chans = _input_channels(w.shape, x.shape[3], attrs["groups"])
    for u, v, tap in _taps(x, w.shape, attrs):
        for c in range(w.shape[3]):
            xc = tap[..., c:c + 1] if attrs["groups"] == 1 else tap[..., chans[c]]
            total += xc * w[:, u, v, c]
    if "bias" in params:
        total += as_f32(params["bias"])
    return as_output(activate(total, attrs["activation"]), inputs[0])


# ---- fully connected -------------------------------------------------------------------------
def dense_shape(in_shapes, attrs, params):
    w = params["weight"]
    if np.ndim(w) != 2:
        raise ShapeError(f"weight must be [units, in], got shape {list(np.shape(w))}")
    out = REGISTRY["dense"].infer_shape(in_shapes, {}, {k: np.asarray(params[k]) for k in
                                                        ("weight", "bias") if k in params})
    _check_scales(params, np.shape(w)[0], "weight_scale" in params)
    return out


def _f32_dense_forward(inputs, params, attrs):
    """int_f32_dense — float32 fully connected layer on the last axis in LiteRT's reference order.

    Definition
        total[..., o] = 0; for d in 0..In−1: total += x[..., d]·w[o, d]   (float32 steps)
        y = act(total + bias[o])                   (reference_ops::FullyConnected; §8b)
    Shapes
        x [N, ..., In]; weight [units, In]; bias [units]; y [N, ..., units].
    Errors
        ShapeError as dense.
    """
    x, w = as_f32(inputs[0]), as_f32(params["weight"])
    total = np.zeros(x.shape[:-1] + (w.shape[0],), F32)
    for d in range(w.shape[1]):
        total += x[..., d:d + 1] * w[:, d]
    if "bias" in params:
        total += as_f32(params["bias"])
    return as_output(activate(total, attrs["activation"]), inputs[0])


# ---- elementwise, pooling, reductions --------------------------------------------------------
def _binary_shape(in_shapes, attrs, params):
    return broadcast_shape(in_shapes)


def _binary_forward(inputs, params, attrs):
    """int_f32_binary — float32 add, sub or mul of two tensors with broadcasting.

    Definition
        y = act(a ∘ b), ∘ = + (add), − (sub), · (mul), one float32 rounding (reference_ops::Add,
        Sub, Mul with ActivationFunctionWithMinMax).
    Shapes
        a, b broadcastable (NumPy rules); y their broadcast shape.
    """
    a, b = as_f32(inputs[0]), as_f32(inputs[1])
    y = {"add": np.add, "sub": np.subtract, "mul": np.multiply}[attrs["kind"]](a, b)
    return as_output(activate(y, attrs["activation"]), inputs[0])


def _avg_shape(in_shapes, attrs, params):
    geo = {k: attrs[k] for k in ("pool_size", "strides", "padding", "pads")}
    return REGISTRY["avg_pool2d"].infer_shape(in_shapes, geo, {})


def _avg_forward(inputs, params, attrs):
    """int_f32_avg_pool2d — float32 average pooling in LiteRT's reference order.

    Definition
        total = 0; for (u, v) in row-major order over the window, taps inside the image only:
        total += x[...]; count = number of those taps; y = act(total / fl(count))
        (reference_ops::AveragePool, float32)
    Shapes
        x [N, H, W, C]; y [N, OH, OW, C] (padding valid/same/explicit as avg_pool2d).
    """
    x = as_f32(inputs[0])
    (kh, kw), st = attrs["pool_size"], {"strides": attrs["strides"], "dilations": (1, 1),
                                        "padding": attrs["padding"], "pads": attrs["pads"]}
    ones = np.ones(x.shape[:3] + (1,), F32)
    _, oh, ow = _conv_geometry(x.shape, (1, kh, kw, 1), st)
    total = np.zeros((x.shape[0], oh, ow, x.shape[3]), F32)
    count = np.zeros((x.shape[0], oh, ow, 1), F32)
    for (_, _, tap), (_, _, one) in zip(_taps(x, (1, kh, kw, 1), st),
                                        _taps(ones, (1, kh, kw, 1), st)):
        total += tap
        count += one
    return as_output(activate(total / count, attrs["activation"]), inputs[0])


def _mean_shape(in_shapes, attrs, params):
    shape = list(in_shapes[0])
    axes = _axes(attrs["axes"], len(shape))
    if attrs["keepdims"]:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _axes(axes, rank):
    out = sorted({a % rank for a in axes}) if all(-rank <= a < rank for a in axes) else None
    if out is None or 0 in out:
        raise ShapeError(f"mean: axes {list(axes)} must lie in [1, {rank - 1}] (or their negative "
                         "forms); the batch axis is not reduced")
    return out


def _mean_forward(inputs, params, attrs):
    """int_f32_mean — float32 mean over `axes` with a sequential sum.

    Definition
        s = 0; for the reduced indices in row-major order: s += x[...]  (float32 steps)
        y = s / fl(count)             (reference_ops::Mean / ReduceGeneric, float32; §8b)
    Shapes
        x [N, ...]; y with the reduced axes removed (kept as 1 with keepdims).
    """
    x = as_f32(inputs[0])
    axes = _axes(attrs["axes"], x.ndim)
    keep = [i for i in range(x.ndim) if i not in axes]
    moved = np.transpose(x, keep + axes)
    flat = moved.reshape(moved.shape[:len(keep)] + (-1,))
    s = np.zeros(flat.shape[:-1], F32)
    for r in range(flat.shape[-1]):
        s += flat[..., r]
    y = s / F32(flat.shape[-1])
    return as_output(y.reshape(_mean_shape([x.shape], attrs, params)), inputs[0])


def _softmax_forward(inputs, params, attrs):
    """int_f32_softmax — float32 softmax over the last axis as LiteRT's reference kernel.

    Definition
        m = max x; e = expf((x − m)·beta); s = Σ e (sequential, float32); y = e / s
        expf is glibc's single-precision exp (`libm_expf`), which is not always the correctly
        rounded exp (§8b).
    Shapes
        x [N, ..., K]; y the same.
    """
    x = as_f32(inputs[0])
    z = (x - x.max(axis=-1, keepdims=True)) * F32(attrs["beta"])
    e = expf(z)
    s = np.zeros(x.shape[:-1] + (1,), F32)
    for k in range(x.shape[-1]):
        s += e[..., k:k + 1]
    return as_output(e / s, inputs[0])


def _unary_forward(inputs, params, attrs):
    """int_f32_unary — float32 logistic, tanh or hard_swish as LiteRT's reference kernels.

    Definition
        logistic    y = 1 if x > 16.619047164916992188, expf(x) if x < −9,
                    else 1 / (1 + expf(−x))         (reference_ops::Logistic, its cutoffs)
        tanh        y = tanhf(x)                    (reference_ops::Tanh: std::tanh on float)
        hard_swish  y = (x·min(6, max(0, x + 3))) / 6   (reference_ops::HardSwish)
        every step in float32; expf as glibc's (`libm_expf`, not correctly rounded: 131 of
        200,000 uniform inputs in [−20, 20] differ from the rounded float64 exp by 1 ulp);
        tanhf as glibc's (`tanhf`, not correctly rounded: 698 of 4,000 uniform inputs in
        [−3, 3] differ from the rounded float64 tanh by 1 ulp).
    Shapes
        y has x's shape.
    """
    x = as_f32(inputs[0])
    kind = attrs["kind"]
    if kind == "logistic":
        with np.errstate(over="ignore"):
            mid = F32(1) / (F32(1) + expf(-x))
        y = np.where(x > F32(16.619047164916992188), F32(1), np.where(x < F32(-9), expf(x), mid))
    elif kind == "tanh":
        y = tanhf(x)
    else:
        y = (x * np.minimum(F32(6), np.maximum(F32(0), x + F32(3)))) / F32(6)
    return as_output(y, inputs[0])


# ---- op records ------------------------------------------------------------------------------
def _same_shape(in_shapes, attrs, params):
    return tuple(in_shapes[0])


def conv_macs(in_shapes, out_shape, attrs, params):
    return REGISTRY["conv2d"].macs(in_shapes, out_shape, attrs, params)


def dense_macs(in_shapes, out_shape, attrs, params):
    return REGISTRY["dense"].macs(in_shapes, out_shape, attrs, params)


CONV_ATTRS = {**GEOMETRY_ATTRS, **ACTIVATION_ATTR}

_POOL = {"pool_size": Attr("ints", length=2, minimum=1),
         "strides": Attr("ints", length=2, minimum=1),
         "padding": Attr("str", "valid", choices=PADDINGS),
         "pads": Attr("ints", (0, 0, 0, 0), length=4, minimum=0)}


OPS = [
    Op("int_f32_conv2d", _f32_conv_forward, conv_shape, attrs=dict(CONV_ATTRS),
       params={"weight": True, "bias": False}, macs=conv_macs),
    Op("int_f32_dense", _f32_dense_forward, dense_shape, attrs=dict(ACTIVATION_ATTR),
       params={"weight": True, "bias": False}, macs=dense_macs),
    Op("int_f32_binary", _binary_forward, _binary_shape, num_inputs=2,
       attrs={"kind": Attr("str", choices=("add", "sub", "mul")), **ACTIVATION_ATTR}),
    Op("int_f32_avg_pool2d", _avg_forward, _avg_shape, attrs={**_POOL, **ACTIVATION_ATTR}),
    Op("int_f32_mean", _mean_forward, _mean_shape,
       attrs={"axes": Attr("ints"), "keepdims": Attr("bool", False)}),
    Op("int_f32_softmax", _softmax_forward, _same_shape, attrs={"beta": Attr("float", 1.0)}),
    Op("int_f32_unary", _unary_forward, _same_shape,
       attrs={"kind": Attr("str", choices=("logistic", "tanh", "hard_swish"))}),
]
