"""int_conv2d and int_dense: integer convolution / fully connected with int32 accumulation.

Both accumulate through BLAS on float64 copies of (x − input_zp) and (w − weight_zp), reusing the
float `conv2d`/`dense` forwards of refq.layers (the float forward pads with 0, which on x − input_zp
is padding the integer input with input_zp). This is exact: every partial sum any summation order
forms is an integer of magnitude <= K·max|x − input_zp|·max|w − weight_zp| (K = taps per output),
and every integer of magnitude <= 2^53 is a float64; the bound is computed per call from the actual
operands (`blas_is_exact`). When it cannot be proven the kernel takes an exact int64 path instead
(`conv_int64` / `dense_int64`: one int64 contraction per kernel tap, no BLAS). The bias is added in
int64 after the contraction.
"""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError, ParamError, ShapeError
from ...layers import REGISTRY
from ...layers.base import Attr, Op
from ...layers.conv import PADDINGS, pad_hw, window_geometry
from ..rounding import INT32_MAX, INT32_MIN
from .common import (ACC_ATTRS, ACT_ATTRS, ACT_ZP_RANGE, REQUANT_ATTRS, REQUANT_PARAMS, absmax,
                     check_acc_attrs, check_act, check_int_values, check_requant, check_zp,
                     fit_accumulator, int_input, requant)

#: Every integer of magnitude <= 2^53 is exactly representable in float64.
FLOAT64_EXACT = 1 << 53
#: The int64 path needs every partial sum below 2^63.
INT64_EXACT = (1 << 63) - 1

_GEOMETRY = ("strides", "dilations", "padding", "pads", "groups")
_CONV_ATTRS = {"strides": Attr("ints", (1, 1), length=2),
               "dilations": Attr("ints", (1, 1), length=2),
               "padding": Attr("str", "valid", choices=PADDINGS),
               "pads": Attr("ints", (0, 0, 0, 0), length=4),
               "groups": Attr("int", 1)}
_COMMON_ATTRS = {"input_zp": Attr("int", 0), "weight_zp": Attr("int", 0),
                 "output_zp": Attr("int", 0), **ACT_ATTRS, **REQUANT_ATTRS, **ACC_ATTRS}
_PARAMS = {"weight": True, "bias": False, **REQUANT_PARAMS}


def blas_is_exact(k: int, x_absmax: int, w_absmax: int) -> bool:
    """True when a float64 contraction of length k of integers bounded by x_absmax and w_absmax is
    exact in any summation order: k·x_absmax·w_absmax <= 2^53 (Python ints, no overflow)."""
    return int(k) * int(x_absmax) * int(w_absmax) <= FLOAT64_EXACT


def _check_operands(k, xa, wa, what):
    if int(k) * int(xa) * int(wa) > INT64_EXACT:
        raise FixedPointError(f"{what}: a reduction of {k} products of |x - input_zp| <= {xa} and "
                              f"|w - weight_zp| <= {wa} may leave int64; no exact path exists")


def _check_weights(params, attrs, what):
    if "weight" not in params:
        raise ParamError(f"{what}: parameter 'weight' is missing")
    w = check_int_values(params["weight"], -128, 255, f"{what}: parameter 'weight'")
    if w.size and w.min() < 0 and w.max() > 127:
        raise ParamError(f"{what}: weight values span [{int(w.min())}, {int(w.max())}], which "
                         "fits neither int8 (int4) nor uint8")
    check_zp(attrs["weight_zp"], f"{what}: weight_zp", (-128, 255), "an int8/uint8 weight")
    if "bias" in params:
        check_int_values(params["bias"], INT32_MIN, INT32_MAX,
                         f"{what}: parameter 'bias' (int32; index = output channel)")


def _check_common(params, attrs, channels, what):
    _check_weights(params, attrs, what)
    check_zp(attrs["input_zp"], f"{what}: input_zp", ACT_ZP_RANGE)
    check_act(attrs, what)
    check_acc_attrs(attrs, what)
    check_requant(params, attrs, channels, what)


# ---- int_conv2d ------------------------------------------------------------------------------
def _conv_shape(in_shapes, attrs, params):
    what = "int_conv2d"
    _check_weights(params, attrs, what)
    geo = {k: attrs[k] for k in _GEOMETRY}
    float_params = {k: np.asarray(params[k]) for k in ("weight", "bias") if k in params}
    out = REGISTRY["conv2d"].infer_shape(in_shapes, geo, float_params)
    _check_common(params, attrs, np.shape(params["weight"])[0], what)
    return out


def conv_int64(xd, wd, attrs):
    """Exact int64 convolution of xd = x − input_zp with wd = w − weight_zp (OHWI), padding xd with
    0: one int64 contraction over the input channels of a group per kernel tap (u, v)."""
    n, h, w_, c = xd.shape
    o, kh, kw, cg = wd.shape
    g = attrs["groups"]
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
    pads, (oh, ow) = window_geometry((h, w_), (kh, kw), (sh, sw), (dh, dw), attrs["padding"],
                                     attrs["pads"], "int_conv2d")
    xp = pad_hw(xd, pads)
    wg = wd.reshape(g, o // g, kh, kw, cg)
    acc = np.zeros((n, oh, ow, g, o // g), np.int64)
    for u in range(kh):
        for v in range(kw):
            tap = xp[:, u * dh:u * dh + (oh - 1) * sh + 1:sh, v * dw:v * dw + (ow - 1) * sw + 1:sw]
            acc += np.einsum("nhwgc,goc->nhwgo", tap.reshape(n, oh, ow, g, cg), wg[:, :, u, v])
    return acc.reshape(n, oh, ow, o)


def conv_accumulator(x, params, attrs):
    """acc[n, i, j, o] = Σ (x − input_zp)·(w − weight_zp) over the in-bounds taps + bias[o], exact,
    as int64 (before the accumulator policy)."""
    xd = int_input(x, "int_conv2d input") - attrs["input_zp"]
    wd = np.asarray(params["weight"]).astype(np.int64) - attrs["weight_zp"]
    _, kh, kw, cg = wd.shape
    k, xa, wa = kh * kw * cg, absmax(xd), absmax(wd)
    _check_operands(k, xa, wa, "int_conv2d")
    if blas_is_exact(k, xa, wa):
        geo = {key: attrs[key] for key in _GEOMETRY}
        y = REGISTRY["conv2d"].forward([xd.astype(np.float64)],
                                       {"weight": wd.astype(np.float64)}, geo)
        acc = y.astype(np.int64)
    else:
        acc = conv_int64(xd, wd, attrs)
    if "bias" in params:
        acc = acc + np.asarray(params["bias"], dtype=np.int64)
    return acc


def _conv_accumulate(inputs, params, attrs):
    """int_conv2d — integer 2-D convolution (grouped, depthwise) with fused requantization.

    Definition
        acc[n, i, j, o] = bias[o] + Σ_{u, v, c} (x_pad[n, i·sh + u·dh, j·sw + v·dw, g·Cg + c]
                          − input_zp)·(w[o, u, v, c] − weight_zp)
        with x_pad the input padded with input_zp (out-of-bounds taps contribute 0, as TFLite and
        TOSA skip them and CMSIS-NN fills im2col with zp_in; fixedpoint.md §3), g = o // (O/groups),
        geometry (strides, dilations, padding valid/same/explicit, pads, groups, depthwise with
        channel multiplier) exactly as the float conv2d; bias = 0 when absent.
        acc' = apply_overflow_policy(acc, accumulator_bits, overflow)
        y = clamp(requantize(acc') + output_zp, act_min, act_max)
    Integer semantics
        Accumulation is exact (see the module docstring). Overflow policy on acc
        (`apply_overflow_policy`, §3.1/§3.3): "error" raises FixedPointError naming the first
        accumulator outside the accumulator_bits-bit range and its index [n, i, j, o]; "wrap"
        wraps two's-complement (what the C kernels do); "saturate" clamps.
        Requantization (`refq.fixedpoint.requantize`, §2, §8.2) per output channel o with
        multiplier[o], shift[o] (integer schemes; TFLite shifts are signed left shifts, TOSA shifts
        positive right shifts) or real_multiplier[o] (float schemes); a length-1 parameter applies
        to every channel. scheme: tflite_double (SRDHM half-up then rounding-divide half away),
        single_round (half up), tosa_single/tosa_double (apply_scale_32), tosa16, float_rne,
        float32_rne, float_half_away; zp_before_round (float schemes only) adds output_zp before
        rounding (ONNX reference). The zero-point add and clamp are exact int64 operations.
    Shapes
        x [N, H, W, C] int; weight [O, kh, kw, C/groups] (OHWI) int8/int4/uint8-valued;
        bias [O] int32; multiplier, shift, real_multiplier [O] or [1]; y [N, OH, OW, O].
    Errors
        ShapeError as conv2d; ParamError for a missing/ill-typed weight, a weight outside
        int8/uint8, a bias outside int32, missing or wrong-length requantization parameters;
        FixedPointError for act_min > act_max, zero points outside their dtype, multipliers/shifts
        outside the scheme's range, accumulator overflow under "error", or a reduction that may
        leave int64.
    Returns (y, largest |acc| before the overflow policy) from `accumulate`.
    """
    _conv_shape([inputs[0].shape], attrs, params)
    acc = conv_accumulator(inputs[0], params, attrs)
    y = requant(fit_accumulator(acc, attrs), params, attrs, zero_point=attrs["output_zp"])
    return y, absmax(acc)


def _conv_forward(inputs, params, attrs):
    return _conv_accumulate(inputs, params, attrs)[0]


_conv_forward.__doc__ = _conv_accumulate.__doc__


def _conv_macs(in_shapes, out_shape, attrs, params):
    return REGISTRY["conv2d"].macs(in_shapes, out_shape, attrs, params)


# ---- int_dense -------------------------------------------------------------------------------
def _dense_shape(in_shapes, attrs, params):
    what = "int_dense"
    _check_weights(params, attrs, what)
    if np.ndim(params["weight"]) != 2:
        raise ShapeError(f"int_dense weight must be [units, in], got shape "
                         f"{list(np.shape(params['weight']))}")
    float_params = {k: np.asarray(params[k]) for k in ("weight", "bias") if k in params}
    out = REGISTRY["dense"].infer_shape(in_shapes, {}, float_params)
    _check_common(params, attrs, np.shape(params["weight"])[0], what)
    return out


def dense_int64(xd, wd):
    """Exact int64 product xd · wdᵀ on the last axis (NumPy's integer matmul, no BLAS)."""
    y = np.matmul(xd.reshape(-1, xd.shape[-1]), wd.T)
    return y.reshape(xd.shape[:-1] + (wd.shape[0],))


def dense_accumulator(x, params, attrs):
    """acc[..., o] = Σ_i (x[..., i] − input_zp)·(w[o, i] − weight_zp) + bias[o], exact int64."""
    xd = int_input(x, "int_dense input") - attrs["input_zp"]
    wd = np.asarray(params["weight"]).astype(np.int64) - attrs["weight_zp"]
    k, xa, wa = wd.shape[1], absmax(xd), absmax(wd)
    _check_operands(k, xa, wa, "int_dense")
    if blas_is_exact(k, xa, wa):
        y = REGISTRY["dense"].forward([xd.astype(np.float64)], {"weight": wd.astype(np.float64)},
                                      {})
        acc = y.astype(np.int64)
    else:
        acc = dense_int64(xd, wd)
    if "bias" in params:
        acc = acc + np.asarray(params["bias"], dtype=np.int64)
    return acc


def _dense_accumulate(inputs, params, attrs):
    """int_dense — integer fully connected layer on the last axis with fused requantization.

    Definition
        acc[..., o] = bias[o] + Σ_{i<In} (x[..., i] − input_zp)·(w[o, i] − weight_zp)
        acc' = apply_overflow_policy(acc, accumulator_bits, overflow)
        y = clamp(requantize(acc') + output_zp, act_min, act_max)
    Integer semantics
        As int_conv2d (fixedpoint.md §3.1 FullyConnected, §2.5 for the reference FC's
        float_half_away requantization, §8.2 QLinearMatMul): exact accumulation, the overflow
        policy on acc (errors name the first value and its index [..., o]), per-channel or
        per-tensor requantization by `scheme`, zero point after rounding unless zp_before_round.
    Shapes
        x [N, ..., In] int; weight [units, In]; bias [units] int32; multiplier, shift,
        real_multiplier [units] or [1]; y [N, ..., units].
    Errors
        As int_conv2d (ShapeError as dense).
    Returns (y, largest |acc| before the overflow policy) from `accumulate`.
    """
    _dense_shape([inputs[0].shape], attrs, params)
    acc = dense_accumulator(inputs[0], params, attrs)
    y = requant(fit_accumulator(acc, attrs), params, attrs, zero_point=attrs["output_zp"])
    return y, absmax(acc)


def _dense_forward(inputs, params, attrs):
    return _dense_accumulate(inputs, params, attrs)[0]


_dense_forward.__doc__ = _dense_accumulate.__doc__


def _dense_macs(in_shapes, out_shape, attrs, params):
    return REGISTRY["dense"].macs(in_shapes, out_shape, attrs, params)


def _no_param_shapes(in_shapes, attrs):
    return {}  # O lives in the weight; infer_shape checks every parameter against it


OPS = [
    Op("int_conv2d", _conv_forward, _conv_shape, attrs={**_CONV_ATTRS, **_COMMON_ATTRS},
       params=dict(_PARAMS), param_shapes=_no_param_shapes, macs=_conv_macs,
       accumulate=_conv_accumulate),
    Op("int_dense", _dense_forward, _dense_shape, attrs=dict(_COMMON_ATTRS), params=dict(_PARAMS),
       param_shapes=_no_param_shapes, macs=_dense_macs, accumulate=_dense_accumulate),
]
