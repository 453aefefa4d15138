"""int_conv_transpose2d: integer 2-D transposed convolution with int32 accumulation.

Accumulation. The scatter of the float `conv_transpose2d` (refq.layers.conv_transpose) runs on
copies of (x − input_zp) and (w − weight_zp) in float32 or float64, bias included, when the bound
of `operands.channel_bound` proves that dtype exact, else on int64 arrays (NumPy's integer
matmul, no BLAS): the same forward, exact in every case. The bound applies because every output
value is a sum of distinct terms (x − input_zp)·(w − weight_zp) of one output channel (a tap
(u, v, c) reaches an output position from at most one input pixel), and every partial sum the
scatter forms (a matmul over the input channels of a group, then one tap added at a time, then
the bias) is a sum of a subset of those terms plus, at the end, the bias.
Requantization as int_conv2d (`common.finish_fast`, per output channel on the last axis).
"""
from __future__ import annotations

import numpy as np

from ...layers import REGISTRY
from ...layers.base import Op
from ..rounding import _bounds
from . import conv
from .common import finish_accumulator, forward_of
from .operands import blas_dtype, operands

__all__ = ["NARROW", "conv_transpose_accumulator", "conv_transpose_plain"]

#: the geometry attributes: conv_transpose2d's own schema
_GEOMETRY_ATTRS = dict(REGISTRY["conv_transpose2d"].attrs)
_GEOMETRY = tuple(_GEOMETRY_ATTRS)


def _geo(attrs):
    return {k: attrs[k] for k in _GEOMETRY}


def _shape(in_shapes, attrs, params):
    what = "int_conv_transpose2d"
    conv._check_weights(params, attrs, what)
    float_params = {k: np.asarray(params[k]) for k in ("weight", "bias") if k in params}
    out = REGISTRY["conv_transpose2d"].infer_shape(in_shapes, _geo(attrs), float_params)
    conv._check_common(params, attrs, np.shape(params["weight"])[0], what)
    return out


def conv_transpose_accumulator(x, params, attrs, exact: bool = True, memo=None):
    """(acc, (lo, hi)): acc[n, p, q, o] = bias[o] + Σ (x − input_zp)·(w − weight_zp) over the
    input pixels and taps that reach (p, q) (the Definition of `_accumulate`), exact: the float
    conv_transpose2d forward in float32 or float64 when `channel_bound` proves it exact, else in
    int64. (lo, hi) = the min and max of acc, or with exact=False (−bound, bound)."""
    x, _, w, bound = operands(x, params, attrs, "int_conv_transpose2d", memo)
    dtype = blas_dtype(bound, False) or np.int64
    xd = x.astype(dtype)
    if attrs["input_zp"]:
        xd -= dtype(attrs["input_zp"])
    acc = REGISTRY["conv_transpose2d"].forward([xd], w.blas(dtype), _geo(attrs))
    return acc, _bounds(acc) if exact else (-bound, bound)


def _accumulate(inputs, params, attrs):
    """int_conv_transpose2d — integer 2-D transposed convolution with fused requantization.

    Definition
        With g = o // Og the group of output channel o (Og = O/groups, Cg = C/groups), pads
        (pt, pb, pl, pr) and the output size exactly as the float conv_transpose2d
        (strides, dilations, groups, output_padding, padding valid/explicit/same_upper/
        same_lower, pads, output_shape):
        acc[n, p, q, o] = bias[o] + Σ (x[n, i, j, g·Cg + c] − input_zp)·(w[o, u, v, c]
                                                                           − weight_zp[o])
            over i < H, j < W, u < kh, v < kw, c < Cg with i·sh + u·dh = p + pt and
            j·sw + v·dw = q + pl (an output no input pixel reaches holds bias[o] alone), and
            weight_zp[o] the attribute, or the parameter weight_zp [O] (as int_conv2d);
        acc' = apply_overflow_policy(acc, accumulator_bits, overflow)
        y = clamp(requantize(acc') + output_zp, act_min, act_max)
    Integer semantics
        TFLite TRANSPOSE_CONV (`reference/integer_ops/transpose_conv.h`, fixedpoint.md §3.1):
        scatter-accumulate (x + input_offset)·w into an int32 scratch, then bias and the
        per-channel MultiplyByQuantizedMultiplier; ONNX ConvTranspose inside QDQ is the same sum
        requantized by the profile's float scheme. Accumulation is exact (module docstring);
        overflow policy, requantization schemes, per-channel parameters and zp_before_round as
        int_conv2d.
    Shapes
        x [N, H, W, C] int; weight [O, kh, kw, C/groups] (refq's layout of the float op)
        int8/int4/uint8-valued; bias [O] int32; multiplier, shift, real_multiplier [O] or [1];
        y [N, OH, OW, O].
    Errors
        ShapeError as conv_transpose2d; ParamError and FixedPointError as int_conv2d.
    Returns (y, largest |acc| before the overflow policy) from `accumulate`.
    """
    return conv_transpose_narrow(inputs, params, attrs, dtype=np.int64)


def conv_transpose_narrow(inputs, params, attrs, memo=None, dtype=None):
    """int_conv_transpose2d's (y, AccExtremes) in `dtype` (`conv.narrow_contraction`)."""
    return conv.narrow_contraction(_shape, conv_transpose_accumulator, inputs, params, attrs,
                                   memo, dtype)


def conv_transpose_plain(inputs, params, attrs):
    """int_conv_transpose2d by the plain path: the exact bounds, then `finish_accumulator`."""
    _shape([inputs[0].shape], attrs, params)
    return finish_accumulator(*conv_transpose_accumulator(inputs[0], params, attrs), params,
                              attrs)


_forward = forward_of(_accumulate)


def _macs(in_shapes, out_shape, attrs, params):
    return REGISTRY["conv_transpose2d"].macs(in_shapes, out_shape, attrs, params)


def _ops():
    return [Op("int_conv_transpose2d", _forward, _shape,
               attrs={**_GEOMETRY_ATTRS, **conv._COMMON_ATTRS}, params=dict(conv._PARAMS),
               param_shapes=lambda s, a: {}, macs=_macs, accumulate=_accumulate)]


#: `run_int`'s kernel: (y in the narrowest dtype holding [act_min, act_max], AccExtremes).
NARROW = {"int_conv_transpose2d": conv_transpose_narrow}
OPS = _ops()
