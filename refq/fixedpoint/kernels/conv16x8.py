"""int_conv2d_16x8 and int_dense_16x8: TFLite's 16x8 layers (int16 activations, int8 weights,
int64 biases and accumulators).

A model converted with `EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8` holds int16
activations with zero point 0, symmetric int8 weights (per output channel) and int64 biases of
scale s_in·s_w[o]. LiteRT's reference kernels (`OpResolverType.BUILTIN_REF`) evaluate:

  CONV_2D, DEPTHWISE_CONV_2D (`reference_integer_ops::ConvPerChannel` /
  `DepthwiseConvPerChannel`, int16 input, int64 bias):
      acc = Σ w·x + bias                      int64, exact (no input offset: zp 0)
      y   = clamp(MBQM64(acc, m[o], shift[o]), act_min, act_max)
    MBQM64 = `refq.fixedpoint.requantize16.multiply_by_quantized_multiplier_64` (16-bit
    multiplier, one rounding half up), (m, shift) = QuantizeMultiplier(s_in·s_w[o]/s_out) with
    the product and quotient in float64 (§1.1, §2.4).
  FULLY_CONNECTED (LiteRT's reference kernel requantizes in float for int16 as for int8, §2.5):
      acc = Σ_d w[o, d]·x[d] + bias[o]        int64, exact
      y   = clamp(round_half_away(float64(acc)·real[o]), act_min, act_max)
    real[o] = float64(s_in)·float64(s_w[o])/float64(s_out); float64(acc) is exact (|acc| < 2^53,
    checked; so is |float64(acc)·real[o]| < 2^31, LiteRT's int32 conversion being undefined
    beyond). requant "multiplier16" evaluates the integer form MBQM64 instead (TFLM's kernel).
    Measured on tests/data/tflite_16x8: the float form matches BUILTIN_REF on every value, the
    integer form differs on 5 of 48 values of one layer.

  requant "float_rne" (both ops): y = clamp(rint(float64(acc)·real[o]), act_min, act_max), round
    half to even: the integer-faithful simulation's exact requantization of the same int64
    accumulator (`refq.fixedpoint.run.faithful_graph` of a tflite lowering, `lower_16x8`); no
    target computes it.

Accumulation: |x| ≤ 2^15 and |w| ≤ 2^7, so every partial sum of K products is below K·2^22; for
K < 2^31 (checked from the weight shape) it is below 2^53 and the float64 convolution / matmul
of refq.layers (BLAS) is exact in any summation order. Otherwise an exact int64 contraction runs
(`conv.conv_int64`, one int64 einsum per kernel tap). The bias is added in int64.
Conventions: NHWC, OHWI weights (depthwise: [C·M, kh, kw, 1], groups = C), int64 values out.
"""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError, ParamError
from ...layers import REGISTRY
from ...layers.base import Attr, Op
from ..multiplier import round_half_away_float
from ..requantize16 import SHIFT_RANGE_64, X64_RANGE, multiply_by_quantized_multiplier_64
from .common import AccExtremes, act_dtype, check_int16_layer, check_int_values, int_input
from .conv import conv_int64
from .float_ref import GEOMETRY_ATTRS, conv_macs, dense_macs

__all__ = ["OPS", "NARROW", "round_half_away_f64", "EXACT_TERMS"]

#: The most products (each below 2^22 in magnitude) whose sums float64 holds exactly.
EXACT_TERMS = 1 << 31
_INT16 = (-(1 << 15), (1 << 15) - 1)
_ACT = {"act_min": Attr("int", _INT16[0]), "act_max": Attr("int", _INT16[1]),
        "accumulator_bits": Attr("int", 64)}
_DENSE_REQUANT = ("float_half_away", "multiplier16", "float_rne")
_CONV_REQUANT = ("multiplier16", "float_rne")


def _requant_form(attrs) -> str:
    """The requant of a node ("multiplier16" unless the attrs name a float form)."""
    return attrs.get("requant", "multiplier16")


def round_half_away_f64(v) -> np.ndarray:
    """C `round` of float64 values (nearest, ties away from zero; `multiplier.
    round_half_away_float`, exact also below 0.5), as int64."""
    return round_half_away_float(np.asarray(v, dtype=np.float64)).astype(np.int64)


def _check_common(params, attrs, channels, what, integer_requant=True):
    check_int16_layer(params, attrs, channels, what, X64_RANGE, "int64")
    if integer_requant:
        for name, (a, b) in (("multiplier", (0, (1 << 31) - 1)), ("shift", SHIFT_RANGE_64)):
            if name not in params:
                raise ParamError(f"{what}: parameter '{name}' is missing")
            v = check_int_values(params[name], a, b, f"{what}: parameter '{name}'")
            if v.shape not in ((1,), (channels,)):
                raise ParamError(f"{what}: parameter '{name}' has shape {list(v.shape)}, "
                                 f"expected [1] or [{channels}]")
    else:
        r = np.asarray(params.get("real_multiplier", []), dtype=np.float64)
        if r.shape not in ((1,), (channels,)) or not np.all(np.isfinite(r)) or np.any(r < 0):
            raise ParamError(f"{what}: parameter 'real_multiplier' must hold 1 or {channels} "
                             f"finite non-negative values, got shape {list(r.shape)}")


def _finish(acc, params, attrs, what):
    """(clamped int64 output, AccExtremes) of the exact int64 accumulator (bias included), by the
    node's requant: "multiplier16" (MBQM64), "float_half_away" (C `round` of float64(acc)·M,
    LiteRT's reference FC) or "float_rne" (np.rint of the same product: the integer-faithful
    simulation's exact requantization, round half to even)."""
    requant = _requant_form(attrs)
    lo, hi = (int(acc.min()), int(acc.max())) if acc.size else (0, 0)
    if lo < X64_RANGE[0] or hi > X64_RANGE[1]:
        raise FixedPointError(f"{what}: an int64 accumulator reached "
                              f"{lo if lo < X64_RANGE[0] else hi}, outside [-2^47, 2^47) where "
                              "TFLite's 16x8 requantization is defined")
    if requant == "multiplier16":
        y = multiply_by_quantized_multiplier_64(acc, params["multiplier"], params["shift"])
    else:
        v = acc.astype(np.float64) * np.asarray(params["real_multiplier"], dtype=np.float64)
        if v.size and not np.all(np.abs(v) < 2.0 ** 31):
            raise FixedPointError(f"{what}: a requantized value reached "
                                  f"{float(np.max(np.abs(v))):g}, outside int32, where LiteRT's "
                                  "conversion is undefined; the scales are damaged")
        y = round_half_away_f64(v) if requant == "float_half_away" else \
            np.rint(v).astype(np.int64)
    return np.clip(y, attrs["act_min"], attrs["act_max"]), AccExtremes(lo, hi)


# ---- int_conv2d_16x8 -------------------------------------------------------------------------
def _conv_shape(in_shapes, attrs, params):
    what = "int_conv2d_16x8"
    geo = {k: attrs[k] for k in GEOMETRY_ATTRS}
    out = REGISTRY["conv2d"].infer_shape(in_shapes, geo, {"weight": np.asarray(params["weight"])})
    _check_common(params, attrs, np.shape(params["weight"])[0], what,
                  _requant_form(attrs) == "multiplier16")
    return out


def conv_accumulator(x, params, attrs) -> np.ndarray:
    """The exact int64 accumulator Σ w·x + bias of int_conv2d_16x8 (module docstring)."""
    x = int_input(x, "int_conv2d_16x8: input")
    w = np.asarray(params["weight"]).astype(np.int64)
    geo = {k: attrs[k] for k in GEOMETRY_ATTRS}
    if int(np.prod(w.shape[1:])) < EXACT_TERMS:
        acc = REGISTRY["conv2d"].forward([x.astype(np.float64)],
                                         {"weight": w.astype(np.float64)}, geo).astype(np.int64)
    else:
        acc = conv_int64(x, w, geo)
    if "bias" in params:
        acc = acc + np.asarray(params["bias"]).astype(np.int64)
    return acc


def _conv_forward(inputs, params, attrs):
    """int_conv2d_16x8 — TFLite CONV_2D / DEPTHWISE_CONV_2D with int16 activations.

    Definition (module docstring)
        acc[n, i, j, o] = bias[o] + Σ_{u, v, c} w[o, u, v, c]·x_pad[n, i·sh + u·dh, j·sw + v·dw,
                          g·C/groups + c]            (int64, exact; padding taps are 0 = zp)
        requant "multiplier16" (default, TFLite):
            y = clamp(MBQM64(acc, multiplier[o], shift[o]), act_min, act_max)
        requant "float_rne" (the faithful simulation):
            y = clamp(rint(float64(acc)·real_multiplier[o]), act_min, act_max)
    Integer semantics
        MBQM64: the 16-bit multiplier r = (m + 2^15) >> 16 (0x7FFF from m ≥ 0x7FFF0000), one
        rounding half up at bit 15 − shift of acc·r, int32 wrap (§2.4); clamp after it.
    Shapes
        x [N, H, W, C] int16 values; weight [O, kh, kw, C/groups] int8; bias [O] int64;
        multiplier, shift (or real_multiplier for "float_rne") [O] or [1]; y [N, OH, OW, O]
        int64 values within [act_min, act_max].
    Errors
        ShapeError as conv2d; ParamError for weights outside int8, biases outside ±2^47,
        multipliers outside [0, 2^31 − 1] or shifts outside [−31, 7]; FixedPointError when an
        accumulator leaves [−2^47, 2^47).
    """
    return _conv_accumulate(inputs, params, attrs)[0]


def _conv_accumulate(inputs, params, attrs):
    """int_conv2d_16x8's output and AccExtremes of its int64 accumulators."""
    acc = conv_accumulator(inputs[0], params, attrs)
    return _finish(acc, params, attrs, "int_conv2d_16x8")


# ---- int_dense_16x8 --------------------------------------------------------------------------
def _dense_shape(in_shapes, attrs, params):
    what = "int_dense_16x8"
    w = params["weight"]
    if np.ndim(w) != 2:
        raise ParamError(f"{what}: weight must be [units, in], got shape {list(np.shape(w))}")
    out = REGISTRY["dense"].infer_shape(in_shapes, {}, {"weight": np.asarray(w)})
    _check_common(params, attrs, np.shape(w)[0], what, _requant_form(attrs) == "multiplier16")
    return out


def dense_accumulator(x, params) -> np.ndarray:
    """The exact int64 accumulator Σ_d w[o, d]·x[..., d] + bias[o] of int_dense_16x8."""
    x = int_input(x, "int_dense_16x8: input")
    w = np.asarray(params["weight"]).astype(np.int64)
    if w.shape[1] < EXACT_TERMS:
        acc = (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
    else:
        acc = np.einsum("...d,od->...o", x, w)
    if "bias" in params:
        acc = acc + np.asarray(params["bias"]).astype(np.int64)
    return acc


def _dense_forward(inputs, params, attrs):
    """int_dense_16x8 — TFLite FULLY_CONNECTED with int16 activations.

    Definition (module docstring; §2.5 for "float_half_away", §2.4 for "multiplier16")
        acc[..., o] = bias[o] + Σ_d w[o, d]·x[..., d]        (int64, exact)
        requant "float_half_away" (LiteRT BUILTIN_REF):
            y = clamp(round_half_away(float64(acc)·real_multiplier[o]), act_min, act_max)
        requant "multiplier16" (TFLM):
            y = clamp(MBQM64(acc, multiplier[o], shift[o]), act_min, act_max)
        requant "float_rne" (the faithful simulation):
            y = clamp(rint(float64(acc)·real_multiplier[o]), act_min, act_max)
    Integer semantics
        float64(acc) exact (|acc| < 2^47); one float64 product, rounded by C `round` (ties away
        from zero); MBQM64 as int_conv2d_16x8; clamp last.
    Shapes
        x [N, ..., In] int16 values; weight [units, In] int8; bias [units] int64;
        real_multiplier or multiplier/shift [units] or [1]; y [N, ..., units].
    Errors
        as int_conv2d_16x8; "float_half_away": FixedPointError when |float64(acc)·real| ≥ 2^31
        (LiteRT's int32 conversion is undefined there), ParamError for a real_multiplier that
        is not finite and ≥ 0.
    """
    return _dense_accumulate(inputs, params, attrs)[0]


def _dense_accumulate(inputs, params, attrs):
    """int_dense_16x8's output and AccExtremes of its int64 accumulators."""
    acc = dense_accumulator(inputs[0], params)
    return _finish(acc, params, attrs, "int_dense_16x8")


def _narrow(accumulate):
    def run(inputs, params, attrs, memo):
        y, m = accumulate(inputs, params, attrs)
        return y.astype(act_dtype(attrs)), m
    return run


_REQUANT_PARAMS = {"multiplier": False, "shift": False, "real_multiplier": False}

OPS = [
    Op("int_conv2d_16x8", _conv_forward, _conv_shape,
       attrs={**GEOMETRY_ATTRS, **_ACT,
              "requant": Attr("str", "multiplier16", choices=_CONV_REQUANT)},
       params={"weight": True, "bias": False, **_REQUANT_PARAMS},
       macs=conv_macs, accumulate=_conv_accumulate),
    Op("int_dense_16x8", _dense_forward, _dense_shape,
       attrs={**_ACT, "requant": Attr("str", "float_half_away", choices=_DENSE_REQUANT)},
       params={"weight": True, "bias": False, **_REQUANT_PARAMS},
       macs=dense_macs, accumulate=_dense_accumulate),
]
#: The kernels run_int calls (same values in the output's narrow dtype).
NARROW = {"int_conv2d_16x8": _narrow(_conv_accumulate),
          "int_dense_16x8": _narrow(_dense_accumulate)}
