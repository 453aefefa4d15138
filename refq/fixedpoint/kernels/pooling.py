"""Integer pooling: int_max_pool2d, int_avg_pool2d, int_mean (global average over H, W); the
pools of rank 1 and 3 (int_max_pool1d/3d, int_avg_pool1d/3d) are registered here from
`kernels.pool_nd`.

Window geometry (pool_size, strides, padding valid/same/explicit, pads) is that of the float
max_pool2d/avg_pool2d (refq.layers.pooling), whose shape inference is reused; padded taps are never
counted. A 2-D pool with dilations, ceil_mode, count_include_pad or padding same_lower is
evaluated by `kernels.pool_nd` (its Definition is int_avg_pool{r}d's there; max pooling is the
float max_pool2d on the codes either way). Sums run in int64 over the kernel taps (a vectorised
add per tap). Sections (§n) refer to ../shared/reference/fixedpoint.md.
"""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError, ShapeError
from ...layers import REGISTRY
from ...layers.base import Attr, Op
from ...layers.conv import pad_hw, window_geometry
from ...layers.pooling import valid_counts
from ..requantize import REQUANT_SCHEMES, float_scale_round, requantize
from ..rounding import _bounds
from .qdq import dequantize32, f32, quantize32, quantize32_zp_first
from .pool_common import AVG_ATTRS, SCALES, average_codes, check_avg_attrs, check_scales
from .pool_nd import GEOMETRY_KEYS, avg_pool_nd, is_plain, pool_attrs
from .common import (ACC_ATTRS, ACT_ATTRS, ACT_ZP_RANGE, AccExtremes, REQUANT_PARAMS, act_dtype,
                     check_acc_attrs, check_act, check_requant, check_zp, fit_accumulator,
                     forward_of, int_input, int_values)

_GEO = GEOMETRY_KEYS
MEAN_MODES = ("tflite", "tosa", "float", "qdq", "ort")


def _geo(attrs):
    return {k: attrs[k] for k in _GEO if k in attrs}


# ---- int_max_pool2d --------------------------------------------------------------------------
def _max_shape(in_shapes, attrs, params):
    check_act(attrs, "int_max_pool2d", zp_name=None)
    return REGISTRY["max_pool2d"].infer_shape(in_shapes, _geo(attrs), {})


def _max_forward(inputs, params, attrs):
    """int_max_pool2d — integer max pooling.

    Definition
        y[n, i, j, c] = clamp(max over the in-bounds taps of x, act_min, act_max); shapes and
        geometry as max_pool2d.
    Integer semantics
        A pure maximum over the window clipped to the image (padding never wins), then the
        activation clamp; identical in TFLite, TFLM, CMSIS-NN, TOSA MAX_POOL2D and ONNX MaxPool
        (fixedpoint.md §5.2). No rounding.
    Errors
        ShapeError as max_pool2d (an explicit pad must be smaller than the pool, so no window is
        all padding); FixedPointError when act_min > act_max.
    """
    return max_pool_narrow(inputs, params, attrs, dtype=np.int64)[0]


def max_pool_plain(inputs, params, attrs):
    """int_max_pool2d by the plain path: int64 throughout."""
    x = int_input(inputs[0], "int_max_pool2d input")
    _max_shape([x.shape], attrs, params)
    y = REGISTRY["max_pool2d"].forward([x], {}, _geo(attrs))
    return np.clip(y, attrs["act_min"], attrs["act_max"])


def max_pool_narrow(inputs, params, attrs, memo=None, dtype=None):
    """(int_max_pool2d's y as an array of `dtype`, None): the maximum in x's own dtype (max_pool2d
    pads integer inputs with the least value of their dtype, so padding never wins there either),
    then the clamp in a dtype holding both x's values and [act_min, act_max]. dtype None:
    `act_dtype`."""
    x = int_values(inputs[0], "int_max_pool2d input")
    _max_shape([x.shape], attrs, params)
    dtype = act_dtype(attrs) if dtype is None else np.dtype(dtype)
    y = REGISTRY["max_pool2d"].forward([x], {}, _geo(attrs))
    y = y.astype(np.result_type(y.dtype, dtype), copy=False)
    np.clip(y, attrs["act_min"], attrs["act_max"], out=y)
    return y.astype(dtype, copy=False), None


# ---- int_avg_pool2d --------------------------------------------------------------------------
def _avg_shape(in_shapes, attrs, params):
    what = "int_avg_pool2d"
    out = REGISTRY["avg_pool2d"].infer_shape(in_shapes, _geo(attrs), {})
    check_avg_attrs(params, attrs, out[-1], what)
    return out


def _window_sum(xp, k, s, oh, ow):
    """Σ over the kh·kw taps of the padded int64 input, one vectorised add per tap."""
    (kh, kw), (sh, sw) = k, s
    acc = np.zeros(xp.shape[:1] + (oh, ow) + xp.shape[3:], np.int64)
    for u in range(kh):
        for v in range(kw):
            acc += xp[:, u:u + (oh - 1) * sh + 1:sh, v:v + (ow - 1) * sw + 1:sw]
    return acc


def _avg_forward(inputs, params, attrs):
    """int_avg_pool2d — integer average pooling, padding never counted.

    (A node with dilations, ceil_mode, count_include_pad or padding same_lower follows the
    Definition of int_avg_pool{r}d in `kernels.pool_nd` (AVG_DOC), which on the other nodes
    gives the same integers as the one below.)

    Definition (S = the in-bounds taps of a window, n = |S| >= 1)
        avg "tflite" (TFLite/TFLM reference, CMSIS-NN; §5.1):
            r = round_half_away(Σ_S x / n)  (raw x, zero point not subtracted; C
                `(acc ± n/2) / n`), v = r − input_zp
        avg "tosa" (TOSA AVG_POOL2D; §5.1):
            (m, s) = reciprocal_scale(n), v = apply_scale_32(Σ_S (x − input_zp), m, s, single)
            (effectively round half away of the zero-point-free mean; equals "tflite" when
            input_zp = 0, may differ on ties otherwise)
        then, without requantization parameters (input and output share the scale):
            y = clamp(v + output_zp, act_min, act_max)   (= clamp(r) for "tflite" when the zero
            points agree, TFLite's only case);
        with multiplier/shift or real_multiplier (the scales differ; `scheme`, default "none",
        must then name a requantization scheme):
            y = requantize(v, ..., scheme, zero_point=output_zp, act_min, act_max)
            (an int_requantize of the average; [C] or [1] parameters).
        avg "float" (ONNX AveragePool / QLinearAveragePool in float, count_include_pad = 0):
            y = clamp(rint((float64(Σ_S (x − input_zp)) / n)·M) + output_zp, act_min, act_max)
            with M = real_multiplier (s_in/s_out; 1 when absent), half to even.
        avg "qdq" (the ONNX spec: DequantizeLinear -> float32 AveragePool, count_include_pad 0 ->
        QuantizeLinear), float32 scales in_scale, out_scale, d = `dequantize32`(x):
            m = fl32(Σ_S d / n), the float32 sum of the taps in row-major (h, w) order reduced as
                NumPy reduces a contiguous float32 row (`np.add.reduce`, pairwise in blocks of 8:
                what `onnx.reference`'s `np.average` of the window computes)
            y = clamp(rint(fl32(m / s_out)) + output_zp, act_min, act_max)
        avg "ort" (onnxruntime QLinearAveragePool, `contrib_ops/cpu/quantization/qlinear_pool.cc`):
            m = fl32(((0 + d_1) + d_2) + ... + d_n) / n   (sequential float32 sum over h, then w)
            y = clamp(nearbyintf(fl32(m / s_out) + output_zp), act_min, act_max)
                (the zero point is added in float32 BEFORE rounding half to even)
            except when the window is the whole unpadded image (pool_size = (H, W), no padding):
            onnxruntime then runs QLinearGlobalAveragePool, i.e. int_mean "ort".
    Integer semantics
        Window sums are exact int64; "tflite" rounds half away from zero by C truncating division
        (`round_div_half_away`), "tosa" by `reciprocal_scale` whose numerator 2^30 + 1 pushes
        exact ties away from zero (so both round half away; they differ only through the zero
        point), "float" half to even in float64. Shapes as avg_pool2d.
    Errors
        ShapeError as avg_pool2d; ParamError for wrong-length parameters; FixedPointError for
        act_min > act_max, zero points outside their dtype, requantization parameters without a
        scheme or outside its range.
    """
    x = int_input(inputs[0], "int_avg_pool2d input")
    _avg_shape([x.shape], attrs, params)
    if not is_plain(attrs):   # dilations, ceil_mode, count_include_pad or same_lower
        return avg_pool_nd(x, params, attrs, 2, "int_avg_pool2d")
    k, s = attrs["pool_size"], attrs["strides"]
    pads, (oh, ow) = window_geometry(x.shape[1:3], k, s, (1, 1), attrs["padding"], attrs["pads"],
                                     "int_avg_pool2d")
    count = np.multiply.outer(valid_counts(x.shape[1], k[0], s[0], pads[0], oh),
                              valid_counts(x.shape[2], k[1], s[1], pads[2], ow))[:, :, None]
    if attrs["avg"] in ("qdq", "ort"):
        return _avg_float32(x, attrs, params, pads, count, oh, ow)
    return average_codes(x, lambda v: _window_sum(pad_hw(v, pads), k, s, oh, ow), count, params,
                         attrs)


def _avg_float32(x, attrs, params, pads, count, oh, ow):
    """int_avg_pool2d "qdq" and "ort" (see `_avg_forward`)."""
    si, so = (f32(params[n]) for n in SCALES)
    (kh, kw), (sh, sw) = attrs["pool_size"], attrs["strides"]
    lo, hi, ozp = attrs["act_min"], attrs["act_max"], attrs["output_zp"]
    if attrs["avg"] == "ort" and (kh, kw) == tuple(x.shape[1:3]) and not any(pads):
        return np.clip(_mean_ort(x, si, so, attrs["input_zp"], ozp, lo, hi, True), lo, hi)
    d = pad_hw(dequantize32(x, si, attrs["input_zp"]), pads)
    if attrs["avg"] == "ort":
        acc = np.zeros(d.shape[:1] + (oh, ow) + d.shape[3:], np.float32)
        for u in range(kh):      # padded taps hold 0.0: adding them changes no float32 sum
            for v in range(kw):
                acc += d[:, u:u + (oh - 1) * sh + 1:sh, v:v + (ow - 1) * sw + 1:sw]
        acc /= count.astype(np.float32)
        return np.clip(quantize32_zp_first(acc, so, ozp, lo, hi), lo, hi)
    H, W = x.shape[1:3]
    mean = np.empty(d.shape[:1] + (oh, ow) + d.shape[3:], np.float32)
    rows = _valid_taps(H, kh, sh, pads[0], oh)
    cols = _valid_taps(W, kw, sw, pads[2], ow)
    for ti, ri in rows.items():
        for tj, cj in cols.items():
            # taps (u, v) of these windows, row-major, gathered into one contiguous last axis
            r = (ri[:, None] * sh + np.asarray(ti)[None, :])[:, None, :, None]
            c = (cj[:, None] * sw + np.asarray(tj)[None, :])[None, :, None, :]
            vals = d[:, r, c, :]                                 # [N, nr, nc, nu, nv, C]
            vals = np.ascontiguousarray(np.moveaxis(vals, -1, 3)).reshape(
                vals.shape[:3] + (vals.shape[-1], -1))
            mean[:, ri[:, None], cj[None, :], :] = (
                np.add.reduce(vals, axis=-1) / np.float32(vals.shape[-1]))
    return np.clip(quantize32(mean, so, ozp, lo, hi), lo, hi)


def _valid_taps(size, k, stride, pad_before, out):
    """{tuple of the in-bounds tap offsets u (into the padded axis): output indices having them}."""
    groups = {}
    for i in range(out):
        taps = tuple(u for u in range(k) if 0 <= i * stride + u - pad_before < size)
        groups.setdefault(taps, []).append(i)
    return {t: np.asarray(v) for t, v in groups.items()}


def _mean_ort(x, s_in, s_out, zp_in, zp_out, lo, hi, keepdims):
    """onnxruntime QLinearGlobalAveragePool (see `_mean_accumulate`, mean "ort")."""
    n = x.shape[1] * x.shape[2]
    if n >= 1 << 24:
        raise FixedPointError(f"int_mean 'ort': H·W = {n} >= 2^24 (onnxruntime refuses it)")
    m = np.float32(s_in) / (np.float32(s_out) * np.float32(n))
    if not (2.0 ** -32 <= m < 256.0):
        raise FixedPointError(f"int_mean 'ort': s_in/(s_out·H·W) = {float(m)!r} lies outside "
                              "[2^-32, 256), which onnxruntime refuses")
    acc = np.sum(x, axis=(1, 2), keepdims=keepdims) - n * zp_in
    return requantize(acc, m, None, "float32_rne", zero_point=zp_out, act_min=lo, act_max=hi)


# ---- int_mean --------------------------------------------------------------------------------
def _mean_shape(in_shapes, attrs, params):
    what = "int_mean"
    shape = tuple(in_shapes[0])
    if len(shape) != 4:
        raise ShapeError(f"{what} expects an NHWC input of rank 4, got shape {list(shape)}")
    check_zp(attrs["input_zp"], f"{what}: input_zp", ACT_ZP_RANGE)
    check_act(attrs, what)
    check_acc_attrs(attrs, what)
    mode, scheme = attrs["mean"], attrs["scheme"]
    if mode in ("qdq", "ort"):
        check_scales(params, what, mode)
        return (shape[0], 1, 1, shape[3]) if attrs["keepdims"] else (shape[0], shape[3])
    want = {"tflite": ("tflite_double", "single_round"), "tosa": ("tosa_single", "tosa_double"),
            "float": REQUANT_SCHEMES}[mode]
    if scheme not in want:
        raise FixedPointError(f"{what}: mean {mode!r} takes a scheme in {want}, got {scheme!r}")
    sub = {**attrs, "scheme": "float_rne" if mode == "float" else scheme, "zp_before_round": False}
    check_requant(params, sub, shape[3], what)
    return (shape[0], 1, 1, shape[3]) if attrs["keepdims"] else (shape[0], shape[3])


def mean_multiplier(multiplier, shift, n: int):
    """TFLite `QuantizedMeanOrSum` folding of 1/n into (M, shift) (reference/reduce.h; §5.3):
    k = min(floor(log2 n), 32, 31 + shift), M' = (M·2^k) // n (floor), shift' = shift − k.
    M' < 2^31 because M < 2^31 and 2^k <= n; shift' >= −31 because k <= 31 + shift."""
    m = np.asarray(multiplier, dtype=np.int64)
    sh = np.asarray(shift, dtype=np.int64)
    k = np.minimum(np.minimum(int(n).bit_length() - 1, 32), 31 + sh)
    return (m << k) // int(n), sh - k


def _mean_accumulate(inputs, params, attrs):
    """int_mean — integer global average over H and W (Keras GlobalAveragePooling2D, ReduceMean).

    Definition (n = H·W)
        acc[n, c] = Σ_{h, w} (x[n, h, w, c] − input_zp)            (exact; "the sum")
        acc' = apply_overflow_policy(acc, accumulator_bits, overflow)
        mean "tflite" (TFLite/TFLM `QuantizedMeanOrSum`, §5.3): multiplier/shift encode
            s_in/s_out (QuantizeMultiplier); (M', shift') = `mean_multiplier`(M, shift, n);
            y = clamp(requantize(acc'; M', shift', scheme) + output_zp), scheme tflite_double or
            single_round.
        mean "tosa" (REDUCE_SUM + RESCALE): multiplier/shift encode s_in/(n·s_out) (tosa_scale32,
            1/n folded by the lowering); the RESCALE is single-rounded whatever the TOSA scheme
            attribute says (the legalizer uses double_round = false for MEAN, PR tensorflow#59859):
            y = clamp(apply_scale_32(acc', M, shift, single) + output_zp).
        mean "float": real_multiplier = s_in/s_out; y = clamp(rint(float64(acc')·(M/n)) +
            output_zp) (float64, half to even; M/n one float64 division).
        mean "ort" (onnxruntime QLinearGlobalAveragePool, MLAS `qlgavgpool.cpp`, float32 scales
            in_scale, out_scale): M = fl32(s_in / fl32(s_out·fl32(n))) (refused unless
            2^-32 <= M < 256 and n < 2^24, as onnxruntime does);
            y = requantize(acc', M, "float32_rne", output_zp) = clamp(rint(fl32(fl32(acc')·M))
            + output_zp) (`MlasRequantizeOutput`: zero point after rounding).
        mean "qdq" (the ONNX spec: DequantizeLinear -> float32 GlobalAveragePool ->
            QuantizeLinear): m = the float32 mean over H, W of d = `dequantize32`(x) as
            `onnx.reference` computes it (`np.average` over the spatial axes of the NCHW array);
            y = clamp(rint(fl32(m / s_out)) + output_zp). The scheme attribute is not used by
            "qdq" and "ort".
        keepdims: y [N, 1, 1, C] instead of [N, C].
    Integer semantics
        Accumulator policy attributes as int_conv2d (an addition to the contract, defaults 32 /
        "error"); `accumulate` reports max |acc|. Parameters [C] or [1].
    Errors
        ShapeError for a rank other than 4; ParamError for missing/wrong-length parameters;
        FixedPointError for a scheme that does not match `mean`, parameters out of range,
        act_min > act_max, zero points outside their dtype, accumulator overflow under "error".
    """
    x = int_input(inputs[0], "int_mean input")
    _mean_shape([x.shape], attrs, params)
    n = x.shape[1] * x.shape[2]
    if n == 0:
        raise ShapeError("int_mean: the input has no spatial positions (H·W = 0)")
    if attrs["mean"] in ("qdq", "ort"):
        si, so = (f32(params[k]) for k in SCALES)
        lo, hi, ozp = attrs["act_min"], attrs["act_max"], attrs["output_zp"]
        acc = np.sum(x, axis=(1, 2), keepdims=attrs["keepdims"]) - n * attrs["input_zp"]
        fit_accumulator(acc, attrs, _bounds(acc))
        if attrs["mean"] == "ort":
            y = _mean_ort(x, si, so, attrs["input_zp"], ozp, lo, hi, attrs["keepdims"])
        else:
            d = np.ascontiguousarray(dequantize32(x, si, attrs["input_zp"]).transpose(0, 3, 1, 2))
            m = np.average(d, axis=(2, 3)).astype(np.float32)
            if attrs["keepdims"]:
                m = m[:, None, None, :]
            y = quantize32(m, so, ozp, lo, hi)
        return np.clip(y, lo, hi), AccExtremes(*_bounds(acc))
    # Σ (x − input_zp) = Σ x − n·input_zp, exact in int64
    acc = np.sum(x, axis=(1, 2), keepdims=attrs["keepdims"]) - n * attrs["input_zp"]
    bounds = _bounds(acc)
    a = fit_accumulator(acc, attrs, bounds)
    mode, zp = attrs["mean"], attrs["output_zp"]
    lo, hi = attrs["act_min"], attrs["act_max"]
    if mode == "tflite":
        m, sh = mean_multiplier(params["multiplier"], params["shift"], n)
        y = requantize(a, m, sh, attrs["scheme"], zero_point=zp, act_min=lo, act_max=hi)
    elif mode == "tosa":
        y = requantize(a, params["multiplier"], params["shift"], "tosa_single", zero_point=zp,
                       act_min=lo, act_max=hi)
    else:
        m = np.asarray(params["real_multiplier"], dtype=np.float64) / np.float64(n)
        r = float_scale_round(a, m, precision="float64", rounding="half_even")
        y = np.clip(r + zp, lo, hi)
    return y, AccExtremes(*bounds)


_mean_forward = forward_of(_mean_accumulate)


def _mean_macs(in_shapes, out_shape, attrs, params):
    _, h, w, c = in_shapes[0]
    return 0 if h is None or w is None else int(h * w * c)


OPS = [
    Op("int_max_pool2d", _max_forward, _max_shape, attrs={**pool_attrs(2, False), **ACT_ATTRS}),
    Op("int_avg_pool2d", _avg_forward, _avg_shape, attrs={**pool_attrs(2, True), **AVG_ATTRS},
       params={**REQUANT_PARAMS, **{k: False for k in SCALES}},
       macs=REGISTRY["avg_pool2d"].macs),
    Op("int_mean", _mean_forward, _mean_shape,
       attrs={"keepdims": Attr("bool", False), "input_zp": Attr("int", 0),
              "output_zp": Attr("int", 0), **ACT_ATTRS, "mean": Attr("str", choices=MEAN_MODES),
              "scheme": Attr("str", choices=REQUANT_SCHEMES), **ACC_ATTRS},
       params={**REQUANT_PARAMS, **{k: False for k in SCALES}}, macs=_mean_macs,
       accumulate=_mean_accumulate),
]

#: `run_int`'s kernels: (y in the narrowest dtype holding [act_min, act_max], None).
NARROW = {"int_max_pool2d": max_pool_narrow}

