"""int_conv2d and int_dense: integer convolution / fully connected with int32 accumulation.

Accumulation. Both accumulate through the float `conv2d`/`dense` forwards of refq.layers on copies
of (x − input_zp) and (w − weight_zp) in a floating (or int32) dtype, bias included (the float
forward pads with 0, which on x − input_zp is padding the integer input with input_zp), when the
bound of `operands` proves that dtype exact (`operands.blas_dtype`: float32 within 2^24, float64
within 2^53, int32 for a depthwise convolution within 2^31 − 1). When not even float64 is
proven, an exact int64 path runs (`conv_int64` / `dense_int64`: one int64 contraction per kernel
tap, no BLAS) and adds the bias in int64. A group-1 convolution that needs float64 runs instead,
on the fast path, as float32 convolutions over ranges of its input channels, each range short
enough for its own bound to be within 2^24 (the bias in the first; `Weights.split`), their exact
results summed in float64 (exact: every sum is an integer within the whole bound).

Requantization. The exact accumulator goes to `common.finish_fast` as it is, with the bound from
the operands: it requantizes block by block in float64 straight into the output dtype
(`requant_fast`), taking the exact min and max of each block on the way (the accumulator
statistics), and falls back to the plain `finish_accumulator` when the bounds do not prove the
preconditions. `conv_plain` / `dense_plain` are the plain evaluation (exact bounds first, then
`finish_accumulator`, int64), kept beside the forwards for the tests that compare the two.

The other exact contractions, int_conv_transpose2d (`kernels.conv_transpose`) and int_matmul
(`kernels.matmul`), reuse this module's checks and attribute schemas.

Forms. `Op.forward`/`Op.accumulate` return int64 (the integer graph contract); `conv_narrow` /
`dense_narrow` (`NARROW`, what `run_int` calls) return the same values in the narrowest dtype
holding [act_min, act_max], and take a per-node `memo` in which the validated parameters, the
weight operands and the requantizer are kept across the batch chunks of one run.
"""
from __future__ import annotations

import numpy as np

from ...errors import ParamError, ShapeError
from ...layers import REGISTRY
from ...layers.base import Attr, Op
from ...layers.conv import PADDINGS, pad_hw, window_geometry
from ..rounding import INT32_MAX, INT32_MIN, _bounds
from .operands import blas_dtype, operands, padded
from .common import (ACC_ATTRS, ACT_ATTRS, ACT_ZP_RANGE, REQUANT_ATTRS, REQUANT_PARAMS, act_dtype,
                     check_acc_attrs, check_act, check_int_values, check_requant, check_zp,
                     checked_range, finish_accumulator, finish_fast, forward_of)


_GEOMETRY = ("strides", "dilations", "padding", "pads", "groups")
_CONV_ATTRS = {"strides": Attr("ints", (1, 1), length=2),
               "dilations": Attr("ints", (1, 1), length=2),
               "padding": Attr("str", "valid", choices=PADDINGS),
               "pads": Attr("ints", (0, 0, 0, 0), length=4),
               "groups": Attr("int", 1)}
_COMMON_ATTRS = {"input_zp": Attr("int", 0), "weight_zp": Attr("int", 0),
                 "output_zp": Attr("int", 0), **ACT_ATTRS, **REQUANT_ATTRS, **ACC_ATTRS}
_PARAMS = {"weight": True, "bias": False, "weight_zp": False, **REQUANT_PARAMS}


def _check_weights(params, attrs, what):
    if "weight" not in params:
        raise ParamError(f"{what}: parameter 'weight' is missing")
    wmin, wmax = checked_range(params["weight"], -128, 255, f"{what}: parameter 'weight'")
    if wmin < 0 and wmax > 127:
        raise ParamError(f"{what}: weight values span [{wmin}, {wmax}], which "
                         "fits neither int8 (int4) nor uint8")
    check_zp(attrs["weight_zp"], f"{what}: weight_zp", (-128, 255), "an int8/uint8 weight")
    if "weight_zp" in params:
        _check_channel_zero_points(params, attrs, what)
    if "bias" in params:
        check_int_values(params["bias"], INT32_MIN, INT32_MAX,
                         f"{what}: parameter 'bias' (int32; index = output channel)")


def _check_channel_zero_points(params, attrs, what):
    """The parameter weight_zp: one integer in [−128, 255] per output channel (axis 0 of the
    weight), with the attribute weight_zp left at 0 (one of the two states the zero point)."""
    o = np.shape(params["weight"])[0]
    if np.shape(params["weight_zp"]) != (o,):
        raise ParamError(f"{what}: parameter 'weight_zp' has shape "
                         f"{list(np.shape(params['weight_zp']))}; give one weight zero point per "
                         f"output channel, shape [{o}] (or one for all in the attribute weight_zp)")
    check_int_values(params["weight_zp"], -128, 255, f"{what}: parameter 'weight_zp' (an int8/"
                     "uint8 weight's zero point; index = output channel)")
    if attrs["weight_zp"]:
        raise ParamError(f"{what}: both the attribute weight_zp ({attrs['weight_zp']}) and the "
                         "per-channel parameter weight_zp are given; keep one (the attribute 0)")


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


def conv_accumulator(x, params, attrs, exact: bool = True, memo=None):
    """(acc, (lo, hi)): acc[n, i, j, o] = Σ (x − input_zp)·(w − weight_zp) over the in-bounds taps
    + bias[o], exact, before the accumulator policy: float32, float64 or (depthwise) int32 holding
    the integers when `channel_bound` proves that dtype exact, else int64 (module docstring).
    (lo, hi) = the min and max of acc, or with exact=False (−bound, bound) from the operands; with
    exact=False a group-1 layer that needs float64 runs as float32 parts over ranges of input
    channels (`Weights.split`), summed in float64."""
    x, xrange, w, bound = operands(x, params, attrs, "int_conv2d", memo)
    wd, bias = w.wd, w.bias
    _, kh, kw, cg = wd.shape
    dtype = blas_dtype(bound, cg == 1 and attrs["groups"] == x.shape[3] > 1)
    if dtype is not None:
        pads, _ = window_geometry(x.shape[1:3], (kh, kw), attrs["strides"], attrs["dilations"],
                                  attrs["padding"], attrs["pads"], "int_conv2d")
        geo = {**{key: attrs[key] for key in _GEOMETRY}, "padding": "explicit",
               "pads": (0, 0, 0, 0)}
        split = w.split(*xrange) if not exact and dtype is np.float64 and \
            attrs["groups"] == 1 else None
        if split:  # float32 parts over ranges of input channels, summed in float64
            acc = None
            for i, (c0, c1) in enumerate(split):
                part = REGISTRY["conv2d"].forward(
                    [padded(x[..., c0:c1], attrs["input_zp"], pads, np.float32)],
                    w.blas(np.float32, (c0, c1), bias=i == 0), geo)
                acc = part.astype(np.float64) if acc is None else np.add(acc, part, out=acc)
        else:
            acc = REGISTRY["conv2d"].forward([padded(x, attrs["input_zp"], pads, dtype)],
                                             w.blas(dtype), geo)
    else:
        acc = conv_int64(x.astype(np.int64) - attrs["input_zp"], wd, attrs)
        if bias is not None:
            acc += bias
    return acc, _bounds(acc) if exact else (-bound, bound)


def _conv_accumulate(inputs, params, attrs):
    """int_conv2d — integer 2-D convolution (grouped, depthwise) with fused requantization.

    Definition
        acc[n, i, j, o] = bias[o] + Σ_{u, v, c} (x_pad[n, i·sh + u·dh, j·sw + v·dw, g·Cg + c]
                          − input_zp)·(w[o, u, v, c] − weight_zp[o])
        with weight_zp[o] the attribute weight_zp for every o, or the parameter weight_zp [O]
        (a zero point per output channel: ONNX ConvInteger/QLinearConv w_zero_point [M]);
        x_pad the input padded with input_zp (out-of-bounds taps contribute 0, as TFLite and
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
        weight_zp (optional parameter) [O] in [−128, 255]; bias [O] int32; multiplier, shift,
        real_multiplier [O] or [1]; y [N, OH, OW, O].
    Errors
        ShapeError as conv2d; ParamError for a missing/ill-typed weight, a weight outside
        int8/uint8, a bias outside int32, missing or wrong-length requantization parameters;
        FixedPointError for act_min > act_max, zero points outside their dtype, multipliers/shifts
        outside the scheme's range, accumulator overflow under "error", or a reduction that may
        leave int64.
    Returns (y, largest |acc| before the overflow policy) from `accumulate`.
    """
    return conv_narrow(inputs, params, attrs, dtype=np.int64)


def narrow_contraction(check, accumulator, inputs, params, attrs, memo, dtype):
    """(y, AccExtremes) with y an array of `dtype` (None: `act_dtype`, the narrowest dtype holding
    [act_min, act_max]): `check` of the input shape and parameters (once per memo), then the
    accumulator from `accumulator` with the bound from the operands, requantized block by block
    (`finish_fast`). memo: a dict that `run_int` keeps for this node during one run (None: none),
    where the checks of the parameters, the weight operands and the requantization constants are
    kept after the first call."""
    if memo is None or "checked" not in memo:
        check([inputs[0].shape], attrs, params)
        if memo is not None:
            memo["checked"] = True
    acc, bounds = accumulator(inputs[0], params, attrs, exact=False, memo=memo)
    return finish_fast(acc, bounds, params, attrs, act_dtype(attrs) if dtype is None else dtype,
                       memo=memo)


def conv_narrow(inputs, params, attrs, memo=None, dtype=None):
    """int_conv2d's (y, AccExtremes) in `dtype` (`narrow_contraction`)."""
    return narrow_contraction(_conv_shape, conv_accumulator, inputs, params, attrs, memo, dtype)


def conv_plain(inputs, params, attrs):
    """int_conv2d by the plain path: the exact bounds, then `finish_accumulator` (int64)."""
    _conv_shape([inputs[0].shape], attrs, params)
    return finish_accumulator(*conv_accumulator(inputs[0], params, attrs), params, attrs)


_conv_forward = forward_of(_conv_accumulate)


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


def dense_accumulator(x, params, attrs, exact: bool = True, memo=None):
    """(acc, (lo, hi)): acc[..., o] = Σ_i (x[..., i] − input_zp)·(w[o, i] − weight_zp) + bias[o],
    exact, as `conv_accumulator` (float32 or float64 through BLAS when proven exact, else int64)."""
    x, _, w, bound = operands(x, params, attrs, "int_dense", memo)
    wd, bias = w.wd, w.bias
    dtype = blas_dtype(bound, False)
    if dtype is not None:
        xf = x.astype(dtype)
        if attrs["input_zp"]:
            xf -= dtype(attrs["input_zp"])
        acc = REGISTRY["dense"].forward([xf], w.blas(dtype), {})
    else:
        acc = dense_int64(x.astype(np.int64) - attrs["input_zp"], wd)
        if bias is not None:
            acc += bias
    return acc, _bounds(acc) if exact else (-bound, bound)


def _dense_accumulate(inputs, params, attrs):
    """int_dense — integer fully connected layer on the last axis with fused requantization.

    Definition
        acc[..., o] = bias[o] + Σ_{i<In} (x[..., i] − input_zp)·(w[o, i] − weight_zp[o])
        (weight_zp[o] as int_conv2d: the attribute, or the parameter weight_zp [units])
        acc' = apply_overflow_policy(acc, accumulator_bits, overflow)
        y = clamp(requantize(acc') + output_zp, act_min, act_max)
    Integer semantics
        As int_conv2d (fixedpoint.md §3.1 FullyConnected, §2.5 for the reference FC's
        float_half_away requantization, §8.2 QLinearMatMul): exact accumulation, the overflow
        policy on acc (errors name the first value and its index [..., o]), per-channel or
        per-tensor requantization by `scheme`, zero point after rounding unless zp_before_round.
    Shapes
        x [N, ..., In] int; weight [units, In]; weight_zp (optional) [units]; bias [units]
        int32; multiplier, shift, real_multiplier [units] or [1]; y [N, ..., units].
    Errors
        As int_conv2d (ShapeError as dense).
    Returns (y, largest |acc| before the overflow policy) from `accumulate`.
    """
    return dense_narrow(inputs, params, attrs, dtype=np.int64)


def dense_narrow(inputs, params, attrs, memo=None, dtype=None):
    """int_dense's (y, AccExtremes) in `dtype` (`narrow_contraction`)."""
    return narrow_contraction(_dense_shape, dense_accumulator, inputs, params, attrs, memo, dtype)


def dense_plain(inputs, params, attrs):
    """int_dense by the plain path: the exact bounds, then `finish_accumulator` (int64)."""
    _dense_shape([inputs[0].shape], attrs, params)
    return finish_accumulator(*dense_accumulator(inputs[0], params, attrs), params, attrs)


_dense_forward = forward_of(_dense_accumulate)


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

#: `run_int`'s kernels: (y in the narrowest dtype holding [act_min, act_max], AccExtremes).
NARROW = {"int_conv2d": conv_narrow, "int_dense": dense_narrow}

