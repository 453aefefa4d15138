"""What the integer poolings of every rank share (`kernels.pooling`, `kernels.pool_nd`): the
average-pool attribute schema and its checks, the TOSA and TFLite division helpers, and the
integer average of window sums (`average_codes`)."""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError
from ...layers.base import Attr
from ..requantize import REQUANT_SCHEMES, apply_scale_32
from .common import (ACT_ATTRS, ACT_ZP_RANGE, REQUANT_PARAMS, check_act, check_float_scales,
                     check_requant, check_zp, requant)

AVG_MODES = ("tflite", "tosa", "float", "qdq", "ort")
SCALES = ("in_scale", "out_scale")


def requant_wanted(params):
    return any(k in params for k in REQUANT_PARAMS)


def check_scales(params, what, mode):
    """The in_scale and out_scale of a pool or mean in a float mode (`common.check_float_scales`)."""
    check_float_scales(params, SCALES, what, mode)


def check_avg_attrs(params, attrs, channels, what):
    """The checks of an int_avg_pool's zero points, clamp, avg mode and its parameters."""
    check_zp(attrs["input_zp"], f"{what}: input_zp", ACT_ZP_RANGE)
    check_act(attrs, what)
    if attrs["avg"] in ("qdq", "ort"):
        check_scales(params, what, attrs["avg"])
    elif attrs["avg"] == "float":
        if "real_multiplier" in params:
            check_requant(params, {"scheme": "float_rne"}, 1, what)
    elif requant_wanted(params):
        if attrs["scheme"] == "none":
            raise FixedPointError(f"{what}: requantization parameters are given but no 'scheme'")
        check_requant(params, attrs, channels, what)


def reciprocal_scale(count):
    """TOSA `reciprocal_scale(count)` (AVG_POOL2D.tosac; §5.1), elementwise on positive counts:
    k = 32 − clz(count − 1) (= bit length of count − 1), multiplier = ((2^30 + 1)·2^k) // count,
    shift = 30 + k. Returns int64 arrays (multiplier, shift) of count's shape."""
    count = np.asarray(count, dtype=np.int64)
    mult = np.empty_like(count)
    shift = np.empty_like(count)
    for c in np.unique(count):  # few distinct counts: one per window clipping pattern
        k = int(c - 1).bit_length()
        mult[count == c] = (((1 << 30) + 1) << k) // int(c)
        shift[count == c] = 30 + k
    return mult, shift


def round_div_half_away(acc, count):
    """acc / count rounded half away from zero, TFLite's `acc > 0 ? (acc + count/2)/count :
    (acc − count/2)/count` with C truncating division (count > 0)."""
    half = count // 2
    return np.where(acc > 0, (acc + half) // count, -((half - acc) // count))


AVG_ATTRS = {"input_zp": Attr("int", 0), "output_zp": Attr("int", 0), **ACT_ATTRS,
              "avg": Attr("str", choices=AVG_MODES),
              "scheme": Attr("str", "none", choices=("none",) + REQUANT_SCHEMES),
              "zp_before_round": Attr("bool", False)}


def average_codes(x, window_sum, count, params, attrs):
    """The output codes of an integer average pool in mode "tflite", "tosa" or "float" (the float32
    modes "qdq" and "ort" are the callers' own), any rank: `window_sum(v)` gives the int64 sums of
    v (zero-padded) over each window and `count` the divisor of each output.
        tflite  round_div_half_away(Σ x, count) − zp_in
        tosa    apply_scale_32(Σ (x − zp_in), reciprocal_scale(count)), single rounding
        float   rint(Σ (x − zp_in) / count · real_multiplier) + zp_out, clamped (returned as is)
    then the requantization when the node has one, else + zp_out, clamped to [act_min, act_max]."""
    zp, mode = attrs["input_zp"], attrs["avg"]
    if mode == "tflite":
        v = round_div_half_away(window_sum(x), count) - zp
    else:
        acc = window_sum(x - zp)
        if mode == "float":
            m = np.float64(np.asarray(params.get("real_multiplier", 1.0), np.float64).ravel()[0])
            q = np.rint((acc.astype(np.float64) / count) * m).astype(np.int64)
            return np.clip(q + attrs["output_zp"], attrs["act_min"], attrs["act_max"])
        mult, shift = reciprocal_scale(count)
        v = apply_scale_32(acc, mult, shift, double_round=False)
    if requant_wanted(params):
        return requant(v, params, attrs, zero_point=attrs["output_zp"])
    return np.clip(v + attrs["output_zp"], attrs["act_min"], attrs["act_max"])
