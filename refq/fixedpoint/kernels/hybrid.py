"""LiteRT's dynamic-range ("hybrid") layers: int8 weights on float32 activations.

A dynamic-range TFLite model (converter `optimizations=[DEFAULT]`, no representative dataset) keeps
float32 activations and stores int8 per-channel weights (zero point 0) for its large kernels. Its
conv / depthwise / fully-connected layers quantize each input at run time (one scale and zero point
per image, or per row of a fully-connected input), accumulate in int32 and rescale the accumulator
to float32. Every other op computes in float32 in a fixed order (`float_ref`: the int_f32_*
kernels). These kernels follow LiteRT's reference kernels (`OpResolverType.BUILTIN_REF`) as
../shared/reference/fixedpoint.md §8b states them, so that every tensor of such a model is
reproduced bit for bit:

int_hybrid_conv2d   conv2d / depthwise conv2d with int8 weights (per-channel, or one scale: the
                    per-tensor path), per-image input quantization
int_hybrid_dense    fully connected with int8 weights, per-row input quantization

Conventions as `float_ref` (NHWC, OHWI weights, float32 values returned in the input's float
dtype, fused activations applied to the float32 result).
"""
from __future__ import annotations

import numpy as np

from ...layers import REGISTRY
from ...layers.base import Attr, Op
from .float_ref import (ACTIVATION_ATTR, ACTIVATIONS, CONV_ATTRS, F32, GEOMETRY_ATTRS, activate,
                        as_f32, as_output, conv_macs, conv_shape, dense_macs, dense_shape)
from .libm_tanhf import tanhf

__all__ = ["OPS", "quantize_per_image", "tanhf", "ACTIVATIONS"]


# ---- per-image input quantization ------------------------------------------------------------
def quantize_per_image(x, asymmetric: bool):
    """(codes int64, scale float32 [R], zero point int64 [R]) of x [R, ...] quantized row by row
    (one row = one image of a convolution, one input row of a fully connected layer).

    Asymmetric (LiteRT `AsymmetricQuantizeFloats`, §8b; all float32):
        rmin = min(0, min x), rmax = max(0, max x); rmin == rmax: codes 0, scale 1, zp 0.
        s = (rmax − rmin)/255; zmin = −128 − rmin/s, zmax = 127 − rmax/s;
        zp = zmin if 128 + |rmin/s| < 127 + |rmax/s| else zmax, clamped to [−128, 127] and
        rounded half away from zero;
        codes = clamp(round_half_away(x·fl(1/s)) + zp, −128, 127).
    Symmetric (`SymmetricQuantizeFloats`): r = max|x|; r == 0: codes 0, scale 1;
        s = r/127, codes = clamp(round_half_away(x·fl(127/r)), −127, 127), zp = 0.
    """
    x = as_f32(x)
    rows = x.reshape(x.shape[0], -1)
    n = rows.shape[0]
    if asymmetric:
        rmin = np.minimum(F32(0), rows.min(axis=1)) if rows.size else np.zeros(n, F32)
        rmax = np.maximum(F32(0), rows.max(axis=1)) if rows.size else np.zeros(n, F32)
        flat = rmin == rmax
        s = np.where(flat, F32(1), (rmax - rmin) / F32(255)).astype(F32)
        zmin, zmax = F32(-128) - rmin / s, F32(127) - rmax / s
        pick_min = F32(128) + np.abs(rmin / s) < F32(127) + np.abs(rmax / s)
        z = np.clip(np.where(pick_min, zmin, zmax), F32(-128), F32(127))
        zp = np.where(flat, 0, _round_away(z)).astype(np.int64)
        inv = (F32(1) / s).astype(F32)
        codes = np.clip(_round_away(rows * inv[:, None]) + zp[:, None], -128, 127)
    else:
        r = np.abs(rows).max(axis=1) if rows.size else np.zeros(n, F32)
        flat = r == 0
        r1 = np.where(flat, F32(1), r).astype(F32)
        s = np.where(flat, F32(1), r1 / F32(127)).astype(F32)
        inv = (F32(127) / r1).astype(F32)
        codes = np.clip(_round_away(rows * inv[:, None]), -127, 127)
        zp = np.zeros(n, np.int64)
    codes = np.where(flat[:, None], 0, codes).astype(np.int64)
    return codes.reshape(x.shape), s, zp


def _round_away(v):
    """Round half away from zero (C `round`) of float32 values, as int64."""
    v = np.asarray(v, dtype=np.float64)  # exact widening; the rounding decision is the same
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)


# ---- convolutions and fully connected layers -------------------------------------------------
def _hybrid_conv_forward(inputs, params, attrs):
    """int_hybrid_conv2d — conv2d / depthwise conv2d with int8 weights on a float32 input.

    Definition
        (q, s[n], zp[n]) = quantize_per_image(x, asymmetric)        (one encoding per image)
        acc[n, i, j, o] = Σ_{u, v, c} w[o, u, v, c]·(q_pad[n, ...] − zp[n])   (int32, exact;
                          taps outside the image skipped, as padding q with zp[n])
        scale_order "conv"      (reference_ops::HybridConvPerChannel):
            y = act((fl(acc)·weight_scale[o])·s[n] + bias[o])
        scale_order "depthwise" (DepthwiseConvHybridPerChannel; also the per-tensor CONV_2D
        of conv.cc `EvalHybrid`, whose `HybridConv` forms the scaling factor s[n]·weight_scale
        first and adds fl(acc)·factor to a zeroed output before the bias):
            y = act(fl(acc)·(weight_scale[o]·s[n]) + bias[o])
        every operation in float32, left to right (§8b); fl = float32 conversion (round to
        nearest even above 2^24). LiteRT's per-channel convolutions quantize their inputs
        asymmetrically, its per-tensor CONV_2D symmetrically (`SymmetricQuantizeFloats`,
        asymmetric false; checked against BUILTIN_REF on tests/data/tflite/hybrid_pt).
    Shapes
        x [N, H, W, C] float; weight [O, kh, kw, C/groups] int8 codes; weight_scale [O] or [1];
        bias [O] float32; y [N, OH, OW, O] float32 values.
    Errors
        ShapeError as conv2d; ParamError for weights outside int8 or a weight_scale of the wrong
        length.
    """
    x = as_f32(inputs[0])
    q, s, zp = quantize_per_image(x, attrs["asymmetric"])
    geo = {**{k: attrs[k] for k in GEOMETRY_ATTRS}}
    w = np.asarray(params["weight"], dtype=np.float64)
    acc = REGISTRY["conv2d"].forward([(q - zp[:, None, None, None]).astype(np.float64)],
                                     {"weight": w}, geo)          # exact: |acc| < 2^53
    acc = acc.astype(F32)
    ws = np.broadcast_to(as_f32(params["weight_scale"]), (w.shape[0],))
    s4 = s[:, None, None, None]
    if attrs["scale_order"] == "conv":
        y = (acc * ws) * s4
    else:
        y = acc * (ws * s4)
    if "bias" in params:
        y = y + as_f32(params["bias"])
    return as_output(activate(y, attrs["activation"]), inputs[0])


def _hybrid_dense_forward(inputs, params, attrs):
    """int_hybrid_dense — fully connected layer with int8 weights on a float32 input.

    Definition
        rows r of x [R, In] (x reshaped to rows of its last axis):
        (q, s[r], zp[r]) = quantize_per_image(rows, asymmetric)      (one encoding per row)
        acc[r, o] = Σ_d w[o, d]·(q[r, d] − zp[r])                     (int32, exact)
        y[r, o] = act(bias[o] + fl(acc)·(s[r]·weight_scale[o]))       (float32; LiteRT's
        hybrid FULLY_CONNECTED, MatrixBatchVectorMultiplyAccumulate: the scales are multiplied
        first, the product is added to the bias; not in §8b, checked against BUILTIN_REF on
        tests/data/tflite's models, asymmetric and symmetric)
    Shapes
        x [N, ..., In] float; weight [units, In] int8 codes; weight_scale [units] or [1];
        bias [units] float32; y [N, ..., units].
    Errors
        ShapeError as dense; ParamError for weights outside int8 or a bad weight_scale.
    """
    x = as_f32(inputs[0])
    rows = x.reshape(-1, x.shape[-1])
    q, s, zp = quantize_per_image(rows, attrs["asymmetric"])
    w = np.asarray(params["weight"], dtype=np.float64)
    acc = ((q - zp[:, None]).astype(np.float64) @ w.T).astype(F32)   # exact: |acc| < 2^53
    ws = np.broadcast_to(as_f32(params["weight_scale"]), (w.shape[0],))
    y = acc * (s[:, None] * ws)
    if "bias" in params:
        y = as_f32(params["bias"]) + y
    y = activate(y, attrs["activation"]).reshape(x.shape[:-1] + (w.shape[0],))
    return as_output(y, inputs[0])

_HYBRID = {"asymmetric": Attr("bool", True)}

OPS = [
    Op("int_hybrid_conv2d", _hybrid_conv_forward, conv_shape,
       attrs={**CONV_ATTRS, **_HYBRID,
              "scale_order": Attr("str", "conv", choices=("conv", "depthwise"))},
       params={"weight": True, "weight_scale": True, "bias": False}, macs=conv_macs),
    Op("int_hybrid_dense", _hybrid_dense_forward, dense_shape,
       attrs={**ACTIVATION_ATTR, **_HYBRID},
       params={"weight": True, "weight_scale": True, "bias": False}, macs=dense_macs),
]
