"""int_conv2d_tosa16, int_dense_tosa16, int_conv_transpose2d_tosa16: TOSA's int16 x int8
convolutions (CONV2D / DEPTHWISE_CONV2D / TRANSPOSE_CONV2D "signed 16x8 with int48 accumulate",
FullyConnected as a 1x1 CONV2D) followed by the scale16 RESCALE the TFLite->TOSA legalizer emits.

The arithmetic and its sources are those of `refq.fixedpoint.rescale48` (module docstring):

    acc[.., o] = Σ (x − 0)·(w − weight_zp)        over (ky, kx, ic) in that order; int48 sums
    out[.., o] = acc[.., o] + bias[o]              int48 (apply_add_s<int48_t>)
    y          = clamp(apply_scale_16(out, m[o], shift[o]), act_min, act_max)     scheme "tosa16"
               = clamp(rint(float64(out)·real_multiplier[o]), act_min, act_max)   scheme "float_rne"

"float_rne" is the integer-faithful simulation's exact requantization of the same int48 values
(`refq.fixedpoint.run.faithful_graph` of a tosa lowering); no target computes it. The output zero
point is 0 (an int16 RESCALE output; RESCALE.tosac's ERROR_IF) and so is the input's (CONV2D.tosac:
in_t ≠ i8 needs input_zp = 0): neither is an attribute. act_min/act_max are the CLAMP the
legalizer emits for a fused activation, within int16.

Evaluation. The accumulator without the bias is the exact contraction of `conv` /
`conv_transpose` (BLAS when proven exact, else int64). TOSA REQUIREs every partial sum of the
loop to fit int48. `operands.channel_bound` bounds every partial sum in any order; when it is
within 2^47 − 1 nothing can overflow. Otherwise int_conv2d_tosa16 and int_dense_tosa16 form the
partial sums in TOSA's order (`rescale48.prefix_extremes` over the (ky, kx, ic) patches, the
padding's zero products included, which repeat a partial sum), and int_conv_transpose2d_tosa16
raises FixedPointError: that takes a reduction of at least 2^47/(2^15·255) ≈ 2^24 products per
output. acc + bias is checked against int48 element by element (`rescale48.require_int48`), then
apply_scale_16 checks its own REQUIREs (`requantize.requantize_bounded`, scheme "tosa16").
Conventions: NHWC, OHWI weights (depthwise: [C·M, kh, kw, 1], groups = C), int64 values out.
"""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError, ParamError
from ...layers import REGISTRY
from ...layers.base import Attr, Op
from ...layers.conv import pad_hw, window_geometry
from ..requantize import requantize_bounded
from ..rescale48 import INT48, prefix_extremes, require_int48
from ..rounding import _bounds
from .common import (AccExtremes, act_dtype, check_int16_layer, check_int_values, forward_of,
                     int_values)
from .conv import conv_accumulator, dense_accumulator
from .conv_transpose import conv_transpose_accumulator
from .float_ref import GEOMETRY_ATTRS, conv_macs, dense_macs

__all__ = ["OPS", "NARROW", "SCHEMES"]

#: The requantization of these layers: TOSA's scale16 RESCALE, or the faithful simulation's.
SCHEMES = ("tosa16", "float_rne")
_INT16 = (-(1 << 15), (1 << 15) - 1)
_COMMON = {"weight_zp": Attr("int", 0, minimum=-128, maximum=127),
           "act_min": Attr("int", _INT16[0]), "act_max": Attr("int", _INT16[1]),
           "scheme": Attr("str", "tosa16", choices=SCHEMES),
           "accumulator_bits": Attr("int", 48, minimum=48, maximum=48)}
_PARAMS = {"weight": True, "bias": False, "multiplier": False, "shift": False,
           "real_multiplier": False}
_TRANSPOSE_GEOMETRY = dict(REGISTRY["conv_transpose2d"].attrs)


def _check(params, attrs, channels, what):
    """The parameter and attribute values the Definition admits (ParamError / FixedPointError)."""
    check_int16_layer(params, attrs, channels, what, INT48, "int48")
    names = ("multiplier", "shift") if attrs["scheme"] == "tosa16" else ("real_multiplier",)
    for name in names:
        if name not in params:
            raise ParamError(f"{what}: scheme {attrs['scheme']!r} needs parameter '{name}'")
        if np.shape(params[name]) not in ((1,), (channels,)):
            raise ParamError(f"{what}: parameter '{name}' has shape "
                             f"{list(np.shape(params[name]))}, expected [1] or [{channels}]")
    if attrs["scheme"] == "tosa16":
        check_int_values(params["multiplier"], 0, _INT16[1],
                         f"{what}: parameter 'multiplier' (TOSA scale16: int16 >= 0)",
                         FixedPointError)
        check_int_values(params["shift"], 2, 62, f"{what}: parameter 'shift' (TOSA RESCALE: 2 "
                         "<= shift <= 62)", FixedPointError)
    else:
        r = np.asarray(params["real_multiplier"], dtype=np.float64)
        if not np.all(np.isfinite(r)) or np.any(r < 0):
            raise FixedPointError(f"{what}: real_multiplier must be finite and >= 0")


def _without_bias(params, attrs):
    """(params without the bias, attrs with input_zp 0 and overflow "error") for the shared
    contractions, which then return the bias-free accumulator."""
    p = {k: v for k, v in params.items() if k != "bias"}
    return p, {**attrs, "input_zp": 0, "overflow": "error"}


def _check_input(x, what):
    x = int_values(x, f"{what}: input")
    lo, hi = _bounds(x) if x.size else (0, 0)
    if lo < _INT16[0] or hi > _INT16[1]:
        raise FixedPointError(f"{what}: input values span [{lo}, {hi}], outside int16 (in_t of "
                              "TOSA's 16x8 convolutions)")
    return x


def _finish(acc, bound, params, attrs, what, order_check):
    """(y int64, AccExtremes of acc + bias) from the bias-free accumulator `acc` whose partial
    sums are bounded by `bound` (module docstring)."""
    if bound > INT48[1]:
        order_check()
    acc = np.asarray(acc).astype(np.int64)
    if "bias" in params:
        acc = acc + np.asarray(params["bias"], dtype=np.int64)
        require_int48(acc, f"{what}: acc + bias (out_t int48)")
    lo, hi = _bounds(acc) if acc.size else (0, 0)
    if attrs["scheme"] == "tosa16":
        y = requantize_bounded(acc, (lo, hi), params["multiplier"], params["shift"], "tosa16",
                               zero_point=0, act_min=attrs["act_min"], act_max=attrs["act_max"])
    else:
        v = np.rint(acc.astype(np.float64) * np.asarray(params["real_multiplier"], np.float64))
        y = np.clip(v, attrs["act_min"], attrs["act_max"]).astype(np.int64)
    return y, AccExtremes(lo, hi)


# ---- int_conv2d_tosa16 -----------------------------------------------------------------------
def _conv_shape(in_shapes, attrs, params):
    geo = {k: attrs[k] for k in GEOMETRY_ATTRS}
    out = REGISTRY["conv2d"].infer_shape(in_shapes, geo, {"weight": np.asarray(params["weight"])})
    _check(params, attrs, np.shape(params["weight"])[0], "int_conv2d_tosa16")
    return out


def _conv_patches(x, wd, attrs):
    """[(patches [N·OH·OW, kh·kw·Cg], weights [O/groups, kh·kw·Cg]) per group]: the products of
    one output in TOSA's loop order (ky, kx, ic), padding taps as zeros."""
    n, h, w_, c = x.shape
    o, kh, kw, cg = wd.shape
    g = attrs["groups"]
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
    pads, (oh, ow) = window_geometry((h, w_), (kh, kw), (sh, sw), (dh, dw), attrs["padding"],
                                     attrs["pads"], "int_conv2d_tosa16")
    xp = pad_hw(x.astype(np.int64), pads)
    taps = [xp[:, u * dh:u * dh + (oh - 1) * sh + 1:sh, v * dw:v * dw + (ow - 1) * sw + 1:sw]
            for u in range(kh) for v in range(kw)]
    cols = np.stack(taps, axis=3).reshape(n * oh * ow, kh * kw, g, cg)
    og = o // g
    return [(cols[:, :, j].reshape(n * oh * ow, kh * kw * cg),
             wd[j * og:(j + 1) * og].reshape(og, kh * kw * cg)) for j in range(g)]


def _ordered(parts, what):
    """Raise when a partial sum of TOSA's loop leaves int48 (`rescale48.prefix_extremes`)."""
    def check():
        for a, w in parts():
            (lo, hi), _ = prefix_extremes(a, w)
            if lo < INT48[0] or hi > INT48[1]:
                raise FixedPointError(
                    f"{what}: a partial sum of the int48 accumulator in TOSA's loop order reached "
                    f"{lo if lo < INT48[0] else hi}, outside [-2^47, 2^47 - 1]: TOSA REQUIREs "
                    "every int48 sum to fit (apply_add_s), and the result is unpredictable; "
                    "reduce the weights or the input range, or quantize the layer's activations "
                    "to 8 bits")
    return check


def _weights(params, attrs):
    return np.asarray(params["weight"], dtype=np.int64) - int(attrs["weight_zp"])


def _conv_accumulate(inputs, params, attrs):
    """int_conv2d_tosa16 — TOSA CONV2D / DEPTHWISE_CONV2D, int16 x int8 with an int48
    accumulator, + the scale16 RESCALE and the CLAMP.

    Definition (module docstring; `refq.fixedpoint.rescale48` for the sources)
        acc[n, i, j, o] = Σ_{u, v, c} x_pad[n, i·sh + u·dh, j·sw + v·dw, g·Cg + c]
                          ·(w[o, u, v, c] − weight_zp)      every partial sum within int48
        out = acc + bias[o]                                 within int48
        "tosa16":    y = clamp(apply_scale_16(out, multiplier[o], shift[o]), act_min, act_max)
        "float_rne": y = clamp(rint(float64(out)·real_multiplier[o]), act_min, act_max)
    Integer semantics
        Exact accumulation; padding taps contribute 0 (x_pad = 0 = the input zero point).
        apply_scale_16: (out·m + 2^(shift−1)) >> shift, one rounding toward +inf on ties, result
        REQUIREd within int32; the output zero point is 0; clamp last.
    Shapes
        x [N, H, W, C] int16 values; weight [O, kh, kw, C/groups] int8; bias [O] int48 (int64
        values); multiplier (int16 >= 0), shift ([2, 62]) or real_multiplier: [O] or [1];
        y [N, OH, OW, O] within [act_min, act_max] ⊆ int16.
    Errors
        ShapeError as conv2d; ParamError for a missing or misshapen parameter, a weight outside
        int8, a bias outside int48; FixedPointError for an input outside int16, a multiplier or
        shift outside its range, a partial sum or acc + bias outside int48, or an apply_scale_16
        result outside int32 (each a TOSA REQUIRE: the specification leaves the result
        unpredictable).
    Returns (y, AccExtremes of acc + bias).
    """
    what = "int_conv2d_tosa16"
    x = _check_input(inputs[0], what)
    _conv_shape([x.shape], attrs, params)
    p, a = _without_bias(params, attrs)
    acc, (_, bound) = conv_accumulator(x, p, a, exact=False)
    return _finish(acc, bound, params, attrs, what, _ordered(
        lambda: _conv_patches(x, _weights(params, attrs), attrs), what))


_conv_forward = forward_of(_conv_accumulate)


# ---- int_dense_tosa16 ------------------------------------------------------------------------
def _dense_shape(in_shapes, attrs, params):
    w = params["weight"]
    if np.ndim(w) != 2:
        raise ParamError(f"int_dense_tosa16: weight must be [units, in], got shape "
                         f"{list(np.shape(w))}")
    out = REGISTRY["dense"].infer_shape(in_shapes, {}, {"weight": np.asarray(w)})
    _check(params, attrs, np.shape(w)[0], "int_dense_tosa16")
    return out


def _dense_accumulate(inputs, params, attrs):
    """int_dense_tosa16 — a fully connected layer as the legalizer builds it for TOSA (a 1x1
    CONV2D, int16 x int8, int48 accumulator) + the scale16 RESCALE and the CLAMP.

    Definition
        acc[..., o] = Σ_i x[..., i]·(w[o, i] − weight_zp)    every partial sum within int48
        out, y: as int_conv2d_tosa16.
    Shapes
        x [N, ..., In] int16 values; weight [units, In] int8; bias [units] int48; the
        requantization parameters [units] or [1]; y [N, ..., units].
    Errors
        As int_conv2d_tosa16 (ShapeError as dense).
    Returns (y, AccExtremes of acc + bias).
    """
    what = "int_dense_tosa16"
    x = _check_input(inputs[0], what)
    _dense_shape([x.shape], attrs, params)
    p, a = _without_bias(params, attrs)
    acc, (_, bound) = dense_accumulator(x, p, a, exact=False)
    return _finish(acc, bound, params, attrs, what, _ordered(
        lambda: [(x.reshape(-1, x.shape[-1]), _weights(params, attrs))], what))


_dense_forward = forward_of(_dense_accumulate)


# ---- int_conv_transpose2d_tosa16 -------------------------------------------------------------
def _transpose_shape(in_shapes, attrs, params):
    geo = {k: attrs[k] for k in _TRANSPOSE_GEOMETRY}
    out = REGISTRY["conv_transpose2d"].infer_shape(in_shapes, geo,
                                                   {"weight": np.asarray(params["weight"])})
    _check(params, attrs, np.shape(params["weight"])[0], "int_conv_transpose2d_tosa16")
    return out


def _transpose_accumulate(inputs, params, attrs):
    """int_conv_transpose2d_tosa16 — TOSA TRANSPOSE_CONV2D, int16 x int8 with an int48
    accumulator, + the scale16 RESCALE and the CLAMP.

    Definition
        acc[n, p, q, o] = Σ x[n, i, j, g·Cg + c]·(w[o, u, v, c] − weight_zp) over the input
            pixels and taps that reach (p, q), with the geometry of int_conv_transpose2d
            (conv_transpose2d's attributes); every partial sum within int48;
        out, y: as int_conv2d_tosa16.
    Shapes
        x [N, H, W, C] int16 values; weight [O, kh, kw, C/groups] int8; bias [O] int48; the
        requantization parameters [O] or [1]; y [N, OH, OW, O].
    Errors
        As int_conv2d_tosa16 (ShapeError as conv_transpose2d); FixedPointError also when the
        operands do not bound the partial sums within int48 (a reduction of about 2^24
        products per output), where refq does not form TRANSPOSE_CONV2D's partial sums in order.
    Returns (y, AccExtremes of acc + bias).
    """
    what = "int_conv_transpose2d_tosa16"
    x = _check_input(inputs[0], what)
    _transpose_shape([x.shape], attrs, params)
    p, a = _without_bias(params, attrs)
    acc, (_, bound) = conv_transpose_accumulator(x, p, a, exact=False)

    def refuse():
        raise FixedPointError(f"{what}: the operands bound the int48 partial sums only by "
                              f"{bound} > 2^47 - 1; refq does not form TRANSPOSE_CONV2D's "
                              "partial sums in TOSA's order for so long a reduction: reduce "
                              "the input range or quantize the layer's activations to 8 bits")
    return _finish(acc, bound, params, attrs, what, refuse)


_transpose_forward = forward_of(_transpose_accumulate)


def _transpose_macs(in_shapes, out_shape, attrs, params):
    return REGISTRY["conv_transpose2d"].macs(in_shapes, out_shape, attrs, params)


def _narrow(accumulate):
    def run(inputs, params, attrs, memo):
        y, m = accumulate(inputs, params, attrs)
        return y.astype(act_dtype(attrs)), m
    return run


def _no_param_shapes(in_shapes, attrs):
    return {}  # O lives in the weight; infer_shape checks every parameter against it


OPS = [
    Op("int_conv2d_tosa16", _conv_forward, _conv_shape, attrs={**GEOMETRY_ATTRS, **_COMMON},
       params=dict(_PARAMS), param_shapes=_no_param_shapes, macs=conv_macs,
       accumulate=_conv_accumulate),
    Op("int_dense_tosa16", _dense_forward, _dense_shape, attrs=dict(_COMMON),
       params=dict(_PARAMS), param_shapes=_no_param_shapes, macs=dense_macs,
       accumulate=_dense_accumulate),
    Op("int_conv_transpose2d_tosa16", _transpose_forward, _transpose_shape,
       attrs={**_TRANSPOSE_GEOMETRY, **_COMMON}, params=dict(_PARAMS),
       param_shapes=_no_param_shapes, macs=_transpose_macs, accumulate=_transpose_accumulate),
]
#: The kernels run_int calls (the same values in the narrow dtype of [act_min, act_max]).
NARROW = {op.name: _narrow(op.accumulate) for op in OPS}
