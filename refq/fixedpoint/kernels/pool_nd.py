"""Integer pooling of any spatial rank r (1, 2, 3) with the full window geometry of the float
poolings (`refq.layers.pool_geometry`: dilations, ceil_mode, count_include_pad, padding valid /
same / same_lower / explicit): int_max_pool1d, int_max_pool3d, int_avg_pool1d, int_avg_pool3d,
and the evaluation of int_max_pool2d / int_avg_pool2d (`kernels.pooling`) when a node uses one
of those attributes. Activations are channels-last [N, *spatial, C].

Counted taps. With V(i) the taps of window i inside the input and P(i) those inside the input
or its padding (not the ceil_mode overhang), a window averages over S(i) = V(i), or P(i) with
count_include_pad, and n(i) = |S(i)| (the float avg_pool's divisor). A padded tap of S(i) holds
the real value 0, i.e. the code input_zp (x − input_zp = 0).

Sums run in int64 over the taps, one vectorised add per tap of one axis at a time (exact: every
partial sum is an integer below 2^17 · taps). Sections (§n) refer to
../shared/reference/fixedpoint.md.
"""
from __future__ import annotations

import itertools
from functools import reduce

import numpy as np

from ...errors import FixedPointError, ShapeError
from ...layers import REGISTRY
from ...layers.base import Attr, Op
from ...layers.pool_geometry import (POOL_PADDINGS, pad_spatial, pool_geometry, valid_counts,
                                     with_pool_defaults)
from ..requantize import requantize
from .common import ACT_ATTRS, REQUANT_PARAMS, act_dtype, int_input, int_values
from .pool_common import AVG_ATTRS, average_codes, check_avg_attrs
from .qdq import dequantize32, f32, quantize32, quantize32_zp_first

__all__ = ["ops", "NARROW", "pool_attrs", "is_plain", "max_pool_nd", "avg_pool_nd",
           "GEOMETRY_KEYS"]

#: The window attributes of every integer pool (those of the float pools).
GEOMETRY_KEYS = ("pool_size", "strides", "dilations", "padding", "pads", "ceil_mode",
                 "count_include_pad")
_LAYOUT = {1: "NLC", 2: "NHWC", 3: "NDHWC"}


def pool_attrs(r: int, avg: bool) -> dict:
    """The window attribute schema of a pool of rank r (the float op's)."""
    a = {"pool_size": Attr("ints", length=r), "strides": Attr("ints", length=r),
         "dilations": Attr("ints", (1,) * r, length=r),
         "padding": Attr("str", "valid", choices=POOL_PADDINGS),
         "pads": Attr("ints", (0,) * (2 * r), length=2 * r), "ceil_mode": Attr("bool", False)}
    if avg:
        a["count_include_pad"] = Attr("bool", False)
    return a


def _geometry_attrs(attrs, r):
    """The node's pooling geometry with every attribute present (`with_pool_defaults`)."""
    return with_pool_defaults({k: attrs[k] for k in GEOMETRY_KEYS if k in attrs}, r)


def is_plain(attrs) -> bool:
    """True when a 2-D pool uses none of dilations, ceil_mode, count_include_pad, same_lower
    (the geometry `kernels.pooling` evaluates itself)."""
    return (list(attrs.get("dilations", [1, 1])) == [1, 1] and not attrs.get("ceil_mode", False)
            and not attrs.get("count_include_pad", False)
            and attrs.get("padding", "valid") != "same_lower")


def _geometry(shape, a, r, what):
    if len(shape) != r + 2:
        raise ShapeError(f"{what} expects an {_LAYOUT[r]} input of rank {r + 2}, got shape "
                         f"{list(shape)}")
    return pool_geometry(tuple(shape[1:-1]), a, what)


def _counts(x_shape, a, sides, outs):
    """n(i) as an int64 array [*outs] (module docstring): a product over the axes."""
    per_axis = [valid_counts(n, k, s, b, m, d, (b + n + e) if a["count_include_pad"] else None)
                for n, k, s, d, (b, e), m in zip(x_shape[1:-1], a["pool_size"], a["strides"],
                                                  a["dilations"], sides, outs)]
    return reduce(np.multiply.outer, per_axis).astype(np.int64)


def _tap(arr, axis, u, a, outs):
    """The strided view of `arr` at tap u of spatial axis `axis` for every output position."""
    s, d = a["strides"][axis], a["dilations"][axis]
    idx = [slice(None)] * arr.ndim
    idx[axis + 1] = slice(u * d, u * d + (outs[axis] - 1) * s + 1, s)
    return arr[tuple(idx)]


def _window_sum(xp, a, outs):
    """Σ over every tap of the (zero-)padded int64 input, one axis at a time (exact)."""
    acc = xp
    for axis in range(len(outs)):
        y = _tap(acc, axis, 0, a, outs).copy()
        for u in range(1, a["pool_size"][axis]):
            y += _tap(acc, axis, u, a, outs)
        acc = y
    return acc


# ---- max ---------------------------------------------------------------------------------------
def max_pool_nd(x, attrs, r, what, dtype=None):
    """y = clamp(max over V(i) of x, act_min, act_max) in `dtype` (None: act_dtype): the float
    max_pool{r}d on the integer codes (it pads an integer input with the least value of its
    dtype, so padding and the ceil_mode overhang never win), then the clamp."""
    x = int_values(x, f"{what} input")
    a = _geometry_attrs(attrs, r)
    _geometry(x.shape, a, r, what)
    dtype = act_dtype(attrs) if dtype is None else np.dtype(dtype)
    y = REGISTRY[f"max_pool{r}d"].forward([x], {}, {k: v for k, v in a.items()
                                                     if k != "count_include_pad"})
    y = y.astype(np.result_type(y.dtype, dtype), copy=False)
    np.clip(y, attrs["act_min"], attrs["act_max"], out=y)
    return y.astype(dtype, copy=False)


# ---- average -----------------------------------------------------------------------------------
def avg_pool_nd(x, params, attrs, r, what):
    """int_avg_pool{r}d (see `AVG_DOC`): int64 [N, *outs, C]."""
    x = int_input(x, f"{what} input")
    a = _geometry_attrs(attrs, r)
    sides, outs, extents = _geometry(x.shape, a, r, what)
    mode = attrs["avg"]
    if mode in ("tflite", "tosa") and a["count_include_pad"]:
        raise FixedPointError(f"{what}: avg {mode!r} does not count padding (the target's "
                              "kernel divides by the taps inside the input); count_include_pad "
                              "needs avg 'float', 'qdq' or 'ort'")
    count = _counts(x.shape, a, sides, outs)[None, ..., None]
    if mode in ("qdq", "ort"):
        return _avg_float32(x, a, params, attrs, sides, outs, extents, count)
    return average_codes(x, lambda v: _window_sum(pad_spatial(v, sides, extents, 0), a, outs),
                         count, params, attrs)


def _avg_float32(x, a, params, attrs, sides, outs, extents, count):
    """avg "qdq" and "ort" (see `AVG_DOC`)."""
    si, so = f32(params["in_scale"]), f32(params["out_scale"])
    lo, hi, ozp, izp = attrs["act_min"], attrs["act_max"], attrs["output_zp"], attrs["input_zp"]
    spatial = tuple(x.shape[1:-1])
    r = len(spatial)
    if attrs["avg"] == "ort":
        if a["count_include_pad"]:   # QLinearAveragePool counts the ceil_mode overhang too
            count = np.full(count.shape, int(np.prod(a["pool_size"])), np.int64)
        if tuple(a["pool_size"]) == spatial and not any(b or e for b, e in sides):
            n = int(np.prod(spatial))
            return _mean_ort(x, si, so, izp, ozp, lo, hi, n, tuple(range(1, r + 1)))
        d = pad_spatial(dequantize32(x, si, izp), sides, extents, np.float32(0))
        acc = np.zeros((x.shape[0], *outs, x.shape[-1]), np.float32)
        for taps in itertools.product(*(range(k) for k in a["pool_size"])):
            view = d
            for axis, u in enumerate(taps):
                view = _tap(view, axis, u, a, outs)
            acc += view
        acc /= count.astype(np.float32)
        return np.clip(quantize32_zp_first(acc, so, ozp, lo, hi), lo, hi)
    d = pad_spatial(dequantize32(x, si, izp), sides, extents, np.float32(0))
    groups = [_tap_groups(n, k, s, dd, b, e, a["count_include_pad"], m)
              for n, k, s, dd, (b, e), m in zip(spatial, a["pool_size"], a["strides"],
                                                 a["dilations"], sides, outs)]
    mean = np.empty((x.shape[0], *outs, x.shape[-1]), np.float32)
    for combo in itertools.product(*(g.items() for g in groups)):
        index = []
        for axis, (taps, where) in enumerate(combo):
            pos = where[:, None] * a["strides"][axis] + np.asarray(taps)[None, :]
            shape = [1] * (2 * r)
            shape[axis], shape[r + axis] = pos.shape
            index.append(pos.reshape(shape))
        vals = d[(slice(None), *index)]                     # [N, *groups, *taps, C]
        vals = np.moveaxis(vals, -1, 1 + r)                 # [N, *groups, C, *taps]
        vals = np.ascontiguousarray(vals).reshape(vals.shape[:r + 2] + (-1,))
        m = np.add.reduce(vals, axis=-1) / np.float32(vals.shape[-1])
        mean[(slice(None), *np.ix_(*(w for _, w in combo)))] = m
    return np.clip(quantize32(mean, so, ozp, lo, hi), lo, hi)


def _tap_groups(n, k, s, d, b, e, include_pad, out):
    """{tuple of the counted tap offsets u·d (into the padded axis) of a window: the output
    indices whose window counts exactly those}; counted: inside the input, or with include_pad
    inside the input or its padding (module docstring)."""
    top = b + n + e if include_pad else b + n
    low = 0 if include_pad else b
    groups = {}
    for i in range(out):
        taps = tuple(u * d for u in range(k) if low <= i * s + u * d < top)
        groups.setdefault(taps, []).append(i)
    return {t: np.asarray(v) for t, v in groups.items()}


def _mean_ort(x, s_in, s_out, zp_in, zp_out, lo, hi, n, axes):
    """onnxruntime QLinearGlobalAveragePool over `axes` (int_mean "ort", `kernels.pooling`)."""
    if n >= 1 << 24:
        raise FixedPointError(f"avg 'ort': {n} pooled positions >= 2^24 (onnxruntime refuses it)")
    m = np.float32(s_in) / (np.float32(s_out) * np.float32(n))
    if not (2.0 ** -32 <= m < 256.0):
        raise FixedPointError(f"avg 'ort': s_in/(s_out·n) = {float(m)!r} lies outside "
                              "[2^-32, 256), which onnxruntime refuses")
    acc = np.sum(x, axis=axes, keepdims=True) - n * zp_in
    return requantize(acc, m, None, "float32_rne", zero_point=zp_out, act_min=lo, act_max=hi)


# ---- the ops of rank 1 and 3 -------------------------------------------------------------------
def _geo(attrs):
    return {k: attrs[k] for k in GEOMETRY_KEYS if k in attrs}


def max_shape(r):
    what = f"int_max_pool{r}d"

    def infer(in_shapes, attrs, params):
        from .common import check_act
        check_act(attrs, what, zp_name=None)
        return REGISTRY[f"max_pool{r}d"].infer_shape(in_shapes, _geo(attrs), {})
    return infer


def avg_shape(r):
    what = f"int_avg_pool{r}d"

    def infer(in_shapes, attrs, params):
        out = REGISTRY[f"avg_pool{r}d"].infer_shape(in_shapes, _geo(attrs), {})
        check_avg_attrs(params, attrs, out[-1], what)
        return out
    return infer


def _max_forward(r):
    what = f"int_max_pool{r}d"

    def forward(inputs, params, attrs):
        max_shape(r)([np.shape(inputs[0])], attrs, params)
        return max_pool_nd(inputs[0], attrs, r, what, np.int64)
    forward.__doc__ = _MAX_DOC.replace("{r}", str(r))
    return forward


def _max_narrow(r):
    what = f"int_max_pool{r}d"

    def narrow(inputs, params, attrs, memo=None, dtype=None):
        max_shape(r)([np.shape(inputs[0])], attrs, params)
        return max_pool_nd(inputs[0], attrs, r, what, dtype), None
    return narrow


def _avg_forward(r):
    what = f"int_avg_pool{r}d"

    def forward(inputs, params, attrs):
        avg_shape(r)([np.shape(inputs[0])], attrs, params)
        return avg_pool_nd(inputs[0], params, attrs, r, what)
    forward.__doc__ = AVG_DOC.replace("{r}", str(r))
    return forward


_MAX_DOC = """int_max_pool{r}d — integer max pooling of rank {r} (channels last).

    Definition
        y[n, i, c] = clamp(max over V(i) of x[n, ·, c], act_min, act_max), the window geometry
        (pool_size, strides, dilations, padding valid/same/same_lower/explicit, pads, ceil_mode)
        exactly as the float max_pool{r}d.
    Integer semantics
        A pure maximum over the taps inside the input (padding and the ceil_mode overhang never
        win), then the clamp: no rounding, the same on every target that defines the geometry
        (ONNX MaxPool on int8/uint8, onnxruntime; fixedpoint.md §5.2).
    Errors
        ShapeError as max_pool{r}d; FixedPointError when act_min > act_max.
    """

AVG_DOC = """int_avg_pool{r}d — integer average pooling of rank {r} (channels last).

    Definition (S(i) the counted taps of window i, n(i) = |S(i)| >= 1: the taps inside the input,
    or with count_include_pad inside the input or its padding, not the ceil_mode overhang; a
    counted padded tap holds the code input_zp; geometry as the float avg_pool{r}d)
        avg "tflite": r = round_half_away(Σ_S x / n) − input_zp (C `(acc ± n/2) / n`; §5.1);
        avg "tosa": v = apply_scale_32(Σ_S (x − input_zp), reciprocal_scale(n), single round);
            both need count_include_pad false (the targets divide by the taps inside the
            input); then as int_avg_pool2d: y = clamp(v + output_zp) without requantization
            parameters, else requantize(v, ..., scheme) with them;
        avg "float": y = clamp(rint((float64(Σ_S (x − input_zp)) / n)·M) + output_zp), M =
            real_multiplier (1 when absent), half to even;
        avg "qdq" (DequantizeLinear -> float32 AveragePool -> QuantizeLinear, as
            `onnx.reference` evaluates AveragePool): d = dequantize32(x); m = fl32(Σ d / n) with
            the counted taps in row-major window order summed as NumPy reduces a contiguous
            float32 row (a counted padded tap is 0.0); y = clamp(rint(fl32(m / s_out)) +
            output_zp);
        avg "ort" (onnxruntime QLinearAveragePool): m = fl32(((0 + d_1) + d_2) + ...)/n, the taps
            in row-major window order (padding adds 0.0); y = clamp(nearbyintf(fl32(m / s_out)
            + output_zp)); with count_include_pad onnxruntime divides by the whole kernel,
            n = Π pool_size, counting the ceil_mode overhang as well (unlike its float
            AveragePool and refq's avg_pool, which do not count the overhang: measured with
            onnxruntime 1.32, tests/data/ort_onnx_ops); a window that is the whole unpadded input
            takes onnxruntime's QLinearGlobalAveragePool path (int_mean "ort").
    Integer semantics
        Window sums exact in int64; "tflite" and "tosa" round half away from zero; "float",
        "qdq", "ort" half to even (fixedpoint.md §5.1, §8.1).
    Errors
        ShapeError as avg_pool{r}d; ParamError/FixedPointError as int_avg_pool2d, and
        FixedPointError for count_include_pad under avg "tflite" or "tosa".
    """


def ops(avg_attrs):
    """The int_max_pool{1,3}d and int_avg_pool{1,3}d records; avg_attrs: the non-geometry
    attributes of int_avg_pool2d (zero points, clamp, avg mode, scheme)."""
    out = []
    for r in (1, 3):
        out.append(Op(f"int_max_pool{r}d", _max_forward(r), max_shape(r),
                      attrs={**pool_attrs(r, False), **ACT_ATTRS}))
        out.append(Op(f"int_avg_pool{r}d", _avg_forward(r), avg_shape(r),
                      attrs={**pool_attrs(r, True), **avg_attrs},
                      params={**REQUANT_PARAMS, "in_scale": False, "out_scale": False},
                      macs=REGISTRY[f"avg_pool{r}d"].macs))
    return out


#: `run_int`'s kernels of the max pools: (y in the narrowest dtype holding the clamp, None).
NARROW = {f"int_max_pool{r}d": _max_narrow(r) for r in (1, 3)}
#: the records of the pools of rank 1 and 3 (int_avg_pool2d's non-geometry attributes)
OPS = ops(AVG_ATTRS)
