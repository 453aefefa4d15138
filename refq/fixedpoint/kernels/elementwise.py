"""Elementwise integer kernels: int_multiply, int_requantize, int_clamp, int_quantize,
int_dequantize (int_add: `add`). Sections (§n) refer to ../shared/reference/fixedpoint.md."""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError
from ...layers.base import Attr, Op
from ...layers.elementwise import broadcast_shape
from ..requantize import FLOAT_SCHEMES, quantize
from ..rounding import _bounds
from .common import (ACT_ATTRS, ACT_ZP_RANGE, DTYPE_RANGES, REQUANT_ATTRS, REQUANT_PARAMS,
                     act_dtype, cached_table, check_act, check_float_scales, check_requant,
                     check_zp, int_input,
                     int_values, output_dtype, requant, requantizer)
from .byte_table import ByteTable
from .qdq import dequantize32, f32, quantize32
from .requant_fast import BLOCK

_QDQ_SCALES = {"int_multiply": ("a_scale", "b_scale", "out_scale"),
               "int_requantize": ("in_scale", "out_scale")}


def _same_shape(in_shapes, attrs, params):
    return tuple(in_shapes[0])


# ---- int_multiply ----------------------------------------------------------------------------
def _mul_shape(in_shapes, attrs, params):
    out = broadcast_shape(in_shapes)
    for name in ("a_zp", "b_zp"):
        check_zp(attrs[name], f"int_multiply: {name}", ACT_ZP_RANGE)
    check_act(attrs, "int_multiply")
    if attrs["mode"] == "qdq":
        check_float_scales(params, _QDQ_SCALES["int_multiply"], "int_multiply", "qdq")
    else:
        check_requant(params, attrs, out[-1], "int_multiply")
    return out


def _mul_forward(inputs, params, attrs):
    """int_multiply — integer elementwise product (broadcasting, e.g. an SE gate (N, 1, 1, C)).

    Definition
        mode "requant" (default):
            p = (x_a − a_zp)·(x_b − b_zp)                               (exact int64)
            y = clamp(requantize(p) + output_zp, act_min, act_max)
        mode "qdq" (the ONNX spec: DequantizeLinear -> float32 Mul -> QuantizeLinear), with the
        float32 scales a_scale, b_scale, out_scale:
            v = fl32(fl32((x_a − a_zp)·s_a)·fl32((x_b − b_zp)·s_b))
            y = clamp(rint(fl32(v / s_out)) + output_zp, act_min, act_max)
    Integer semantics
        fixedpoint.md §4.2 (TFLite MUL: MultiplyByQuantizedMultiplier of the int32 product with
        M = s_a·s_b/s_out; TOSA: RESCALE(DOUBLE_ROUND) after an int32 MUL), by `scheme` with
        multiplier/shift or real_multiplier ([C] along the last axis or [1]); zp_before_round as
        int_conv2d. onnxruntime's QLinearMul (MLAS `qlmul.cpp`, x86: float32(p)·M + float32(zp)
        then cvtps2dq, M = fl32(fl32(s_a·s_b)/s_out)) is mode "requant" with scheme float32_rne
        and zp_before_round.
    Errors
        ShapeError when the shapes do not broadcast; ParamError for missing/wrong-length
        requantization parameters; FixedPointError when p leaves int32 (the requantization input),
        for parameters outside the scheme's range, act_min > act_max or zero points outside their
        dtype.
    """
    _mul_shape([x.shape for x in inputs], attrs, params)
    da = int_input(inputs[0], "int_multiply input a") - attrs["a_zp"]
    db = int_input(inputs[1], "int_multiply input b") - attrs["b_zp"]
    if attrs["mode"] == "qdq":
        sa, sb, so = (f32(params[n]) for n in _QDQ_SCALES["int_multiply"])
        v = dequantize32(da, sa, 0) * dequantize32(db, sb, 0)
        return np.clip(quantize32(v, so, attrs["output_zp"], attrs["act_min"], attrs["act_max"]),
                       attrs["act_min"], attrs["act_max"])
    if da.size < db.size:
        da, db = db, da
    p = np.multiply(da, db, out=da if da.shape == np.broadcast_shapes(da.shape, db.shape)
                    else None)
    return requant(p, params, attrs, zero_point=attrs["output_zp"], overwrite=True)


# ---- int_requantize --------------------------------------------------------------------------
def _requant_shape(in_shapes, attrs, params):
    check_zp(attrs["input_zp"], "int_requantize: input_zp", DTYPE_RANGES["int32"], "int32")
    check_act(attrs, "int_requantize")
    if attrs["mode"] == "qdq":
        check_float_scales(params, _QDQ_SCALES["int_requantize"], "int_requantize", "qdq")
    else:
        check_requant(params, attrs, in_shapes[0][-1] if in_shapes[0] else None,
                      "int_requantize")
    return tuple(in_shapes[0])


def _requant_forward(inputs, params, attrs):
    """int_requantize — change the encoding of an integer tensor.

    Definition
        mode "requant" (default):
            y = clamp(requantize(x − input_zp) + output_zp, act_min, act_max)
            with M = s_in/s_out; the lowering inserts it before `int_concat` inputs whose encoding
            differs from the output's.
        mode "qdq" (DequantizeLinear -> QuantizeLinear, the ONNX spec; onnxruntime's
        QLinearConcat tables compute the same, `QlinearBuildLookupTable`), float32 scales
        in_scale, out_scale:
            y = clamp(rint(fl32(fl32((x − input_zp)·s_in) / s_out)) + output_zp, act_min, act_max)
    Integer semantics
        TFLite QUANTIZE int->int (§8.1 table: MultiplyByQuantizedMultiplier) and TOSA RESCALE
        (§2.6) are this op: `requantize` by `scheme` with multiplier/shift or real_multiplier
        ([C] along the last axis or [1]); zp_before_round as int_conv2d; x − input_zp must fit
        int32 (the RESCALE input).
    Errors
        FixedPointError when x − input_zp leaves int32, for parameters outside the scheme's range,
        act_min > act_max or an output_zp outside its dtype; ParamError as int_multiply.
    """
    return requant_narrow(inputs, params, attrs, dtype=np.int64)[0]


def requant_plain(inputs, params, attrs):
    """int_requantize by the plain path (int64 throughout)."""
    x = int_input(inputs[0], "int_requantize input")
    _requant_shape([x.shape], attrs, params)
    if attrs["mode"] == "qdq":
        return _requant_qdq(x, params, attrs)
    return requant(x - attrs["input_zp"], params, attrs, zero_point=attrs["output_zp"],
                   overwrite=True)


def _requant_qdq(x, params, attrs):
    si, so = (f32(params[n]) for n in _QDQ_SCALES["int_requantize"])
    q = quantize32(dequantize32(x, si, attrs["input_zp"]), so, attrs["output_zp"],
                   attrs["act_min"], attrs["act_max"])
    return np.clip(q, attrs["act_min"], attrs["act_max"])


def _per_tensor(params, attrs) -> bool:
    if attrs["mode"] == "qdq":
        return True
    names = ("real_multiplier",) if attrs["scheme"] in FLOAT_SCHEMES else ("multiplier", "shift")
    return all(np.size(params[n]) == 1 for n in names)


def _code_table(xdtype, params, attrs, dtype):
    """int_requantize of every value of a byte-sized dtype, indexed by its bit pattern (the plain
    definition on the 256 values), or None when the definition raises on one of them."""
    v = np.arange(256, dtype=np.uint8).view(xdtype).astype(np.int64)
    try:
        if attrs["mode"] == "qdq":
            return _requant_qdq(v, params, attrs).astype(dtype)
        return requant(v - attrs["input_zp"], params, attrs,
                       zero_point=attrs["output_zp"]).astype(dtype)
    except FixedPointError:
        return None


def _byte_table(table):
    """`table` as a lookup: a `ByteTable` when its entries are byte-sized, else np.take on the
    index bytes; None stays None."""
    if table is None:
        return None
    if table.itemsize == 1:
        return ByteTable(table)
    return lambda x: np.take(table, x.view(np.uint8))


def requant_narrow(inputs, params, attrs, memo=None, dtype=None):
    """(int_requantize's y as an array of `dtype`, None): for a byte-sized x and per-tensor
    parameters, a lookup in `_code_table` (the definition on each of the 256 values;
    `cached_table`; two values per lookup through `ByteTable` when the output is byte-sized
    too); else the node's `Requantizer` on x with the offset input_zp, its bounds those of x's
    dtype (int8, uint8, int16) or its min and max; the plain path when those do not prove the
    preconditions. dtype None: `act_dtype`."""
    x = int_values(inputs[0], "int_requantize input")
    if memo is None or "checked" not in memo:
        _requant_shape([x.shape], attrs, params)
        if memo is not None:
            memo["checked"] = True
    dtype = act_dtype(attrs) if dtype is None else dtype
    izp = attrs["input_zp"]
    if x.itemsize == 1 and x.size and _per_tensor(params, attrs):
        table = cached_table("int_requantize", params, attrs, (x.dtype.str, np.dtype(dtype).str),
                             lambda: _byte_table(_code_table(x.dtype, params, attrs, dtype)),
                             memo)
        if table is not None:
            return table(x), None
    if attrs["mode"] == "qdq":
        return _requant_qdq(x, params, attrs).astype(dtype, copy=False), None
    if x.dtype.itemsize <= 2:
        lo, hi = np.iinfo(x.dtype).min, np.iinfo(x.dtype).max
    else:
        lo, hi = _bounds(x)
    rq = requantizer(params, attrs, x.shape[-1] if x.ndim else 1, memo)
    r = rq(x, (lo - izp, hi - izp), dtype, offset=izp)
    if r is None:
        return requant_plain(inputs, params, attrs).astype(dtype, copy=False), None
    return r[0], None


# ---- int_clamp -------------------------------------------------------------------------------
def _clamp_shape(in_shapes, attrs, params):
    check_act(attrs, "int_clamp", zp_name=None)
    return tuple(in_shapes[0])


def _clamp_forward(inputs, params, attrs):
    """int_clamp — an activation clamp on the integer grid.

    Definition
        y = min(max(x, act_min), act_max): relu, relu6, clip when not fused into the producer.
    Integer semantics
        An exact int64 compare (TOSA CLAMP; the fused clamp of TFLite kernels); the bounds come
        from `activation_range` (§2.6: the float bounds quantized half away from zero for
        TFLite/TOSA, half to even for ONNX).
    Errors
        FixedPointError when act_min > act_max or the bounds leave int32.
    """
    _clamp_shape([inputs[0].shape], attrs, params)
    return np.clip(int_input(inputs[0], "int_clamp input"), attrs["act_min"], attrs["act_max"])


# ---- int_quantize / int_dequantize -----------------------------------------------------------
def _check_scale(scale, what):
    s32 = np.float32(scale)
    if not np.isfinite(s32) or s32 <= 0:
        raise FixedPointError(f"{what}: scale must be finite and > 0 as a float32, got {scale!r}")


def _quantize_shape(in_shapes, attrs, params):
    what = "int_quantize"
    _check_scale(attrs["scale"], what)
    lo, hi = attrs["qmin"], attrs["qmax"]
    if lo > hi:
        raise FixedPointError(f"{what}: qmin {lo} > qmax {hi}")
    dtype = output_dtype(lo, hi)
    check_zp(attrs["zero_point"], f"{what}: zero_point", DTYPE_RANGES[dtype],
             f"the dtype {dtype} of [qmin, qmax] = [{lo}, {hi}]")
    return tuple(in_shapes[0])


def _quantize_forward(inputs, params, attrs):
    """int_quantize — float -> integer, the first node of every graph input.

    Definition
        q = clamp(round(x / scale) + zero_point, qmin, qmax)
    Integer semantics
        `refq.fixedpoint.quantize` (fixedpoint.md §8.1): x and scale are rounded to float32 (the
        graph input is float32; scale is stored as the float32 value) and divided in float32 (a
        true division, not a multiply by 1/scale); rounding "half_away" is TFLite `roundf` (ties
        away from zero), "half_even" ONNX `rint` / TOSA CAST (ties to even); values beyond the
        grid saturate to qmin/qmax.
    Errors
        FixedPointError for NaN in x, a scale that is not a finite positive float32, qmin > qmax,
        or a zero point outside the dtype implied by [qmin, qmax] (`output_dtype`).
    """
    _quantize_shape([inputs[0].shape], attrs, params)
    return quantize(inputs[0], np.float32(attrs["scale"]), attrs["zero_point"],
                    qmin=attrs["qmin"], qmax=attrs["qmax"], rounding=attrs["rounding"])


def quantize_narrow(inputs, params, attrs, memo=None, dtype=None):
    """(int_quantize's q as an array of `dtype`, None), block by block: the operations of
    `refq.fixedpoint.quantize` on float32 values (the rounding to float32, the float32 division,
    the clip to [qmin − zp, qmax − zp], rint or the half-away rounding t + trunc(2·(v − t)),
    t = trunc(v), which is `round_half_away_float`'s t + sign(v)·[|v − t| >= 0.5] as v − t is
    exact and |v − t| < 1), then + zero_point in float32 on those small integers (exact) and the
    cast. dtype None: the narrowest dtype holding [qmin, qmax]."""
    _quantize_shape([inputs[0].shape], attrs, params)
    x = np.asarray(inputs[0])
    qmin, qmax, zp = attrs["qmin"], attrs["qmax"], attrs["zero_point"]
    dtype = np.dtype(output_dtype(qmin, qmax)) if dtype is None else dtype
    if x.dtype.kind != "f" or max(abs(qmin), abs(qmax), abs(qmin - zp), abs(qmax - zp)) > 1 << 24:
        return _quantize_forward(inputs, params, attrs).astype(dtype), None
    scale, lo, hi = np.float32(attrs["scale"]), np.float32(qmin - zp), np.float32(qmax - zp)
    y = np.empty(x.shape, dtype)
    flat, fy = x.reshape(-1), y.reshape(-1)
    v, t = np.empty(min(BLOCK, flat.size), np.float32), np.empty(min(BLOCK, flat.size), np.float32)
    for i in range(0, flat.size, BLOCK):
        n = min(BLOCK, flat.size - i)
        vb, tb = v[:n], t[:n]
        np.copyto(vb, flat[i:i + n], casting="same_kind")
        if np.isnan(vb).any():
            raise FixedPointError("quantize: x contains NaN")
        vb /= scale
        np.clip(vb, lo, hi, out=vb)
        if attrs["rounding"] == "half_even":
            np.rint(vb, out=vb)
        else:
            np.trunc(vb, out=tb)
            vb -= tb
            vb *= 2
            np.trunc(vb, out=vb)
            vb += tb
        if zp:
            vb += np.float32(zp)
        np.copyto(fy[i:i + n], vb, casting="unsafe")
    return y, None


def _dequantize_shape(in_shapes, attrs, params):
    _check_scale(attrs["scale"], "int_dequantize")
    check_zp(attrs["zero_point"], "int_dequantize: zero_point", DTYPE_RANGES["int32"], "int32")
    return tuple(in_shapes[0])


def _dequantize_forward(inputs, params, attrs):
    """int_dequantize — integer -> float, the last node before every graph output.

    Definition
        y = (q − zero_point)·scale
    Integer semantics
        Computed in float32: float32(q − zero_point)·float32(scale), one correctly rounded product
        (TFLite DEQUANTIZE `float(double(scale)·(q − zp))`, ONNX DequantizeLinear; §8.1; exact
        operands while |q − zp| < 2^24); returned as float64 holding exactly the float32 values
        (float64 is the runtime's default compute dtype).
    Errors
        FixedPointError for a non-integer input, a scale that is not a finite positive float32
        or a zero point outside int32.
    """
    q = int_input(inputs[0], "int_dequantize input")
    _dequantize_shape([q.shape], attrs, params)
    v = (q - attrs["zero_point"]).astype(np.float32) * np.float32(attrs["scale"])
    return v.astype(np.float64)


_REQ = {**ACT_ATTRS, **REQUANT_ATTRS, "mode": Attr("str", "requant", choices=("requant", "qdq"))}
OPS = [
    Op("int_multiply", _mul_forward, _mul_shape, num_inputs=2,
       attrs={"a_zp": Attr("int", 0), "b_zp": Attr("int", 0), "output_zp": Attr("int", 0), **_REQ},
       params={**REQUANT_PARAMS, **{k: False for k in _QDQ_SCALES["int_multiply"]}}),
    Op("int_requantize", _requant_forward, _requant_shape,
       attrs={"input_zp": Attr("int", 0), "output_zp": Attr("int", 0), **_REQ},
       params={**REQUANT_PARAMS, **{k: False for k in _QDQ_SCALES["int_requantize"]}}),
    Op("int_clamp", _clamp_forward, _clamp_shape, attrs=dict(ACT_ATTRS)),
    Op("int_quantize", _quantize_forward, _quantize_shape,
       attrs={"scale": Attr("float"), "zero_point": Attr("int", 0), "qmin": Attr("int"),
              "qmax": Attr("int"),
              "rounding": Attr("str", choices=("half_away", "half_even"))}),
    Op("int_dequantize", _dequantize_forward, _dequantize_shape,
       attrs={"scale": Attr("float"), "zero_point": Attr("int", 0)}),
]

#: `run_int`'s kernels: (y in the narrowest dtype holding [act_min, act_max], None).
NARROW = {"int_requantize": requant_narrow, "int_quantize": quantize_narrow}
