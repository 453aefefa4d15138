"""int_conv2d and int_dense: integer convolution / fully connected with int32 accumulation.

Accumulation. Both accumulate through the float `conv2d`/`dense` forwards of refq.layers on copies
of (x − input_zp) and (w − weight_zp) in a floating (or int32) dtype, bias included (the float
forward pads with 0, which on x − input_zp is padding the integer input with input_zp). This is
exact when every partial sum that any summation order can form is representable:
`channel_bound` bounds them per output channel from the signs and sums of its weights and the
range of x − input_zp (at most max|x − input_zp|·Σ|w − weight_zp| + |bias|), computed per call
from the actual operands. Every integer of magnitude <= 2^24 (`FLOAT32_EXACT`) is a float32 and
every one <= 2^53 (`FLOAT64_EXACT`) a float64, so the copies are float32 when the bound is at
most 2^24 (int8 operands with a few hundred taps), else float64. A depthwise convolution (one
input channel per group), which the float forward computes as a multiply-accumulate per kernel
tap rather than a GEMM, runs on int32 copies instead when the bound is at most 2^31 − 1
(`INT32_EXACT`): no product or partial sum then leaves int32, the target's own accumulator. When
not even float64 is proven, an exact int64 path runs (`conv_int64` / `dense_int64`: one int64
contraction per kernel tap, no BLAS) and adds the bias in int64. A group-1 convolution that
needs float64 runs instead, on the fast path, as float32 convolutions over ranges of its input
channels, each range short enough for its own bound to be within 2^24 (the bias in the first),
their exact results summed in float64 (exact: every sum is an integer within the whole bound).
`blas_is_exact` is the coarser bound k·max|x − input_zp|·max|w − weight_zp| + max|bias| of the
same argument.

Requantization. The exact accumulator goes to `common.finish_fast` as it is, with the bound from
the operands: it requantizes block by block in float64 straight into the output dtype
(`requant_fast`), taking the exact min and max of each block on the way (the accumulator
statistics), and falls back to the plain `finish_accumulator` when the bounds do not prove the
preconditions. `conv_plain` / `dense_plain` are the plain evaluation (exact bounds first, then
`finish_accumulator`, int64), kept beside the forwards for the tests that compare the two.

Forms. `Op.forward`/`Op.accumulate` return int64 (the integer graph contract); `conv_narrow` /
`dense_narrow` (`NARROW`, what `run_int` calls) return the same values in the narrowest dtype
holding [act_min, act_max], and take a per-node `memo` in which the validated parameters, the
weight operands and the requantizer are kept across the batch chunks of one run.
"""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError, ParamError, ShapeError
from ...layers import REGISTRY
from ...layers.base import Attr, Op
from ...layers.conv import PADDINGS, pad_hw, window_geometry
from ..rounding import INT32_MAX, INT32_MIN, _bounds
from .common import (ACC_ATTRS, ACT_ATTRS, ACT_ZP_RANGE, REQUANT_ATTRS, REQUANT_PARAMS,
                     act_dtype, check_acc_attrs, check_act, check_int_values, check_requant,
                     check_zp, checked_range, finish_accumulator, finish_fast, int_values)

#: Every integer of magnitude <= 2^53 is exactly representable in float64.
FLOAT64_EXACT = 1 << 53
#: Every integer of magnitude <= 2^24 is exactly representable in float32.
FLOAT32_EXACT = 1 << 24
#: The int32 depthwise path needs every partial sum (and the sum with the bias) within int32.
INT32_EXACT = INT32_MAX
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


def blas_is_exact(k: int, x_absmax: int, w_absmax: int, bias_absmax: int = 0,
                  limit: int | None = None) -> bool:
    """True when a float64 contraction of length k of integers bounded by x_absmax and w_absmax,
    plus a bias bounded by bias_absmax, is exact in any summation order:
    k·x_absmax·w_absmax + bias_absmax <= 2^53 (Python ints, no overflow). limit=FLOAT32_EXACT
    asks the same of a float32 contraction (<= 2^24)."""
    limit = FLOAT64_EXACT if limit is None else limit
    return int(k) * int(x_absmax) * int(w_absmax) + int(bias_absmax) <= limit


def _check_operands(k, xa, wa, what):
    if int(k) * int(xa) * int(wa) > INT64_EXACT:
        raise FixedPointError(f"{what}: a reduction of {k} products of |x - input_zp| <= {xa} and "
                              f"|w - weight_zp| <= {wa} may leave int64; no exact path exists")


def _check_weights(params, attrs, what):
    if "weight" not in params:
        raise ParamError(f"{what}: parameter 'weight' is missing")
    wmin, wmax = checked_range(params["weight"], -128, 255, f"{what}: parameter 'weight'")
    if wmin < 0 and wmax > 127:
        raise ParamError(f"{what}: weight values span [{wmin}, {wmax}], which "
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


class _Weights:
    """A node's weight operands: wd = w − weight_zp (int64), bias (int64 or None), per output
    channel pos[o] = Σ max(wd[o], 0) and neg[o] = Σ max(−wd[o], 0) over its taps and
    babs[o] = |bias[o]|, max|wd|, taps per output k, and the BLAS copies (`blas`, per dtype,
    made on first use)."""

    def __init__(self, params, attrs):
        w = np.asarray(params["weight"], dtype=np.int64)
        self.wd = w - attrs["weight_zp"] if attrs["weight_zp"] else w
        self.bias = np.asarray(params["bias"], dtype=np.int64) if "bias" in params else None
        o = len(self.wd)
        flat = self.wd.reshape(o, -1)
        self.pos = np.maximum(flat, 0).sum(axis=1) if flat.size else np.zeros(o, np.int64)
        self.neg = self.pos - flat.sum(axis=1) if flat.size else np.zeros(o, np.int64)
        self.babs = np.zeros(o, np.int64) if self.bias is None else np.abs(self.bias)
        self.wa = int(max(flat.max(), -flat.min())) if flat.size else 0
        self.k = int(np.prod(self.wd.shape[1:]))
        self._blas, self._splits = {}, {}

    def split(self, xlo: int, xhi: int):
        """[(c0, c1), ...]: consecutive ranges of input channels such that each one's part of the
        accumulator (its taps, with the bias in the first part) has a `channel_bound` within
        FLOAT32_EXACT, for x − input_zp within [xlo, xhi]; None when a single channel exceeds it.
        Greedy: each range is the longest that fits (the bound only grows with more channels)."""
        key = (xlo, xhi)
        if key not in self._splits:
            o, c = self.wd.shape[0], self.wd.shape[-1]
            if "cum" not in self._splits:  # Σ max(±w, 0) over the taps, cumulated over channels
                per = self.wd.reshape(o, -1, c)
                self._splits["cum"] = [
                    np.concatenate([np.zeros((o, 1), np.int64), np.cumsum(t.sum(axis=1), axis=1)],
                                   axis=1) for t in (np.maximum(per, 0), np.maximum(-per, 0))]
            cum = self._splits["cum"]
            h, low = max(xhi, 0), max(-xlo, 0)
            parts, start = [], 0
            while start < c and parts is not None:
                pos, neg = (t[:, start + 1:] - t[:, start:start + 1] for t in cum)
                bound = np.maximum(h * pos + low * neg, low * pos + h * neg)
                if not parts:
                    bound = bound + self.babs[:, None]
                fits = int(np.sum(bound.max(axis=0) <= FLOAT32_EXACT))  # a prefix: bound grows
                parts = parts + [(start, start + fits)] if fits else None
                start += fits
            self._splits[key] = parts
        return self._splits[key]

    def blas(self, dtype, channels=None, bias: bool = True):
        """The float conv's parameters in `dtype`: the weight (its input channels c0:c1 when
        `channels` = (c0, c1)) and the bias (unless bias is False)."""
        key = (dtype, channels, bias)
        if key not in self._blas:
            wd = self.wd if channels is None else self.wd[..., channels[0]:channels[1]]
            self._blas[key] = _blas_params(wd, self.bias if bias else None, dtype)
        return self._blas[key]


def channel_bound(xlo: int, xhi: int, pos, neg, babs) -> int:
    """A bound (Python int) on |acc| and on every partial sum, in any order, of acc's terms,
    for x − input_zp within [xlo, xhi] and the per-output-channel pos, neg, babs of `_Weights`.
    With h = max(xhi, 0) and l = max(−xlo, 0), a term (x − input_zp)·w of output o is at most
    h·w (w > 0) or l·|w| (w < 0) and at least −l·w (w > 0) or −h·|w| (w < 0), so any sum of
    its terms lies in [−(l·pos[o] + h·neg[o]), h·pos[o] + l·neg[o]], and the bias adds at most
    babs[o]; the bound is the largest of these over o. It is at most max|x − input_zp|·Σ|w| + |b|,
    and about half of that for x − input_zp of one sign (a ReLU output) with balanced weights."""
    if not pos.size:
        return 0
    h, low = max(xhi, 0), max(-xlo, 0)
    top = max(h, low) * int((pos + neg).max()) + int(babs.max())
    if top >= 1 << 62:  # loose, beyond any exact BLAS path
        return top
    return int(np.max(np.maximum(h * pos + low * neg, low * pos + h * neg) + babs))


def _operands(x, params, attrs, what, memo=None):
    """(x as given, (min, max) of x − input_zp, the node's `_Weights` (kept in memo, a dict for
    this node that `run_int` keeps during one run, when given), `channel_bound`), with the int64
    bound of the reduction checked (`_check_operands`)."""
    x = int_values(x, f"{what} input")
    w = memo.get("weights") if memo is not None else None
    if w is None:
        w = _Weights(params, attrs)
        if memo is not None:
            memo["weights"] = w
    lo, hi = _bounds(x)
    zp = attrs["input_zp"]
    xa = max(abs(lo - zp), abs(hi - zp)) if x.size else 0
    _check_operands(w.k, xa, w.wa, what)
    return x, (lo - zp, hi - zp), w, \
        channel_bound(lo - zp, hi - zp, w.pos, w.neg, w.babs) if x.size else 0


def _blas_dtype(bound: int, depthwise: bool):
    """The accumulation dtype proven exact by `bound` (module docstring), or None (int64)."""
    if bound > FLOAT64_EXACT:
        return None
    if depthwise and bound <= INT32_EXACT:
        return np.int32
    return np.float32 if bound <= FLOAT32_EXACT else np.float64


def _padded(x, zp, pads, dtype):
    """x − zp in `dtype` (exact: the caller proved the values fit), padded with 0 by pads =
    (top, bottom, left, right): the float conv's own zero padding, done in the same copy (a
    converting copy, then the subtraction in `dtype`: faster than a mixed-type subtraction)."""
    t, b, l, r = pads
    n, h, w, c = x.shape
    xp = np.empty((n, h + t + b, w + l + r, c), dtype)
    inner = xp[:, t:t + h, l:l + w]
    np.copyto(inner, x, casting="unsafe")
    if zp:
        np.subtract(inner, dtype(zp), out=inner)
    for border in (xp[:, :t], xp[:, t + h:], xp[:, t:t + h, :l], xp[:, t:t + h, l + w:]):
        border.fill(0)
    return xp


def _blas_params(wd, bias, dtype=np.float64):
    fp = {"weight": wd.astype(dtype)}
    if bias is not None:
        fp["bias"] = bias.astype(dtype)
    return fp


def conv_accumulator(x, params, attrs, exact: bool = True, memo=None):
    """(acc, (lo, hi)): acc[n, i, j, o] = Σ (x − input_zp)·(w − weight_zp) over the in-bounds taps
    + bias[o], exact, before the accumulator policy: float32, float64 or (depthwise) int32 holding
    the integers when `channel_bound` proves that dtype exact, else int64 (module docstring).
    (lo, hi) = the min and max of acc, or with exact=False (−bound, bound) from the operands; with
    exact=False a group-1 layer that needs float64 runs as float32 parts over ranges of input
    channels (`_Weights.split`), summed in float64."""
    x, xrange, w, bound = _operands(x, params, attrs, "int_conv2d", memo)
    wd, bias = w.wd, w.bias
    _, kh, kw, cg = wd.shape
    dtype = _blas_dtype(bound, cg == 1 and attrs["groups"] == x.shape[3] > 1)
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
                    [_padded(x[..., c0:c1], attrs["input_zp"], pads, np.float32)],
                    w.blas(np.float32, (c0, c1), bias=i == 0), geo)
                acc = part.astype(np.float64) if acc is None else np.add(acc, part, out=acc)
        else:
            acc = REGISTRY["conv2d"].forward([_padded(x, attrs["input_zp"], pads, dtype)],
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
    return conv_narrow(inputs, params, attrs, dtype=np.int64)


def conv_narrow(inputs, params, attrs, memo=None, dtype=None):
    """int_conv2d's (y, AccExtremes) with y an array of `dtype` (None: `act_dtype`, the narrowest
    dtype holding [act_min, act_max]): the accumulator from `conv_accumulator` with the bound
    from the operands, requantized block by block (`finish_fast`). memo: a dict that `run_int`
    keeps for this node during one run (None: none), where the checks of the parameters, the
    weight operands and the requantization constants are kept after the first call."""
    if memo is None or "checked" not in memo:
        _conv_shape([inputs[0].shape], attrs, params)
        if memo is not None:
            memo["checked"] = True
    acc, bounds = conv_accumulator(inputs[0], params, attrs, exact=False, memo=memo)
    return finish_fast(acc, bounds, params, attrs, act_dtype(attrs) if dtype is None else dtype,
                       memo=memo)


def conv_plain(inputs, params, attrs):
    """int_conv2d by the plain path: the exact bounds, then `finish_accumulator` (int64)."""
    _conv_shape([inputs[0].shape], attrs, params)
    return finish_accumulator(*conv_accumulator(inputs[0], params, attrs), params, attrs)


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


def dense_accumulator(x, params, attrs, exact: bool = True, memo=None):
    """(acc, (lo, hi)): acc[..., o] = Σ_i (x[..., i] − input_zp)·(w[o, i] − weight_zp) + bias[o],
    exact, as `conv_accumulator` (float32 or float64 through BLAS when proven exact, else int64)."""
    x, _, w, bound = _operands(x, params, attrs, "int_dense", memo)
    wd, bias = w.wd, w.bias
    dtype = _blas_dtype(bound, False)
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
    return dense_narrow(inputs, params, attrs, dtype=np.int64)


def dense_narrow(inputs, params, attrs, memo=None, dtype=None):
    """int_dense's (y, AccExtremes) with y an array of `dtype`, as `conv_narrow`."""
    if memo is None or "checked" not in memo:
        _dense_shape([inputs[0].shape], attrs, params)
        if memo is not None:
            memo["checked"] = True
    acc, bounds = dense_accumulator(inputs[0], params, attrs, exact=False, memo=memo)
    return finish_fast(acc, bounds, params, attrs, act_dtype(attrs) if dtype is None else dtype,
                       memo=memo)


def dense_plain(inputs, params, attrs):
    """int_dense by the plain path: the exact bounds, then `finish_accumulator` (int64)."""
    _dense_shape([inputs[0].shape], attrs, params)
    return finish_accumulator(*dense_accumulator(inputs[0], params, attrs), params, attrs)


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

#: `run_int`'s kernels: (y in the narrowest dtype holding [act_min, act_max], AccExtremes).
NARROW = {"int_conv2d": conv_narrow, "int_dense": dense_narrow}
