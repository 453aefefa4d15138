"""Elementwise activations and softmax.

Every op here maps an array to an array of the same shape and dtype and has no parameters.

| op           | definition                                              | attributes        |
|--------------|---------------------------------------------------------|-------------------|
| relu         | y = max(x, 0)                                           |                   |
| relu6        | y = min(max(x, 0), 6)                                   |                   |
| clip         | y = min(max(x, min), max); a missing bound (None) is no bound | min, max (None) |
| round        | y = x rounded to the nearest integer, ties to even      |                   |
| leaky_relu   | y = x if x >= 0 else alpha·x                            | alpha (0.3)       |
| sigmoid      | y = 1 / (1 + exp(−x))                                   |                   |
| tanh         | y = tanh(x)                                             |                   |
| hard_sigmoid | y = clip(alpha·x + beta, 0, 1)                          | alpha, beta       |
| hard_swish   | y = x · min(max(x + 3, 0), 6) / 6                       |                   |
| softmax      | y_i = exp(x_i − max x) / Σ_j exp(x_j − max x) on `axis` | axis (−1)         |

hard_sigmoid has two common definitions, both named here:
- Keras 2 (`keras.backend.hard_sigmoid`, Keras <= 2.x, also ONNX HardSigmoid defaults):
  alpha = 0.2, beta = 0.5 (`HARD_SIGMOID_KERAS2`);
- Keras 3 (`keras.activations.hard_sigmoid` = relu6(x + 3) / 6, PyTorch `Hardsigmoid`):
  alpha = 1/6, beta = 0.5 (`HARD_SIGMOID_KERAS3`, the default).
hard_swish is x · hard_sigmoid_keras3(x) in both (Keras 3 calls it `hard_silu`).

sigmoid is evaluated as exp(min(x,0)) / (1 + exp(−|x|)), which equals 1/(1+exp(−x)) and never
overflows.

VJP (the vector-Jacobian product g = ∂L/∂x for gy = ∂L/∂y, y the forward's output; no params)
    relu          g = gy · [x > 0]
    relu6         g = gy · [0 < x < 6]
    clip          g = gy · [min < x < max]   (a missing bound is no condition)
    round         g = 0 (round is piecewise constant; at its jumps, the half-integers, PyTorch's
                  round backward also gives 0, and so does a NaN or ±inf x)
    leaky_relu    g = gy · (1 if x > 0 else alpha)
    sigmoid       g = gy · y · (1 − y)
    tanh          g = gy · (1 − y²), evaluated as gy · (1 − y) · (1 + y)
    hard_sigmoid  g = gy · alpha · [0 < alpha·x + beta < 1]
    hard_swish    g = gy · (0 if x < −3; x/3 + 1/2 if −3 <= x <= 3; 1 if x > 3)
    softmax       g = y ⊙ (gy − Σ_axis gy ⊙ y)   (the sum keeps `axis` as a size-1 axis)
    [P] is 1 where P holds and 0 elsewhere, applied as a select: where the op is flat (leaky_relu
    and hard_sigmoid with alpha = 0 included) the gradient is an exact 0 whatever gy is, ±inf or
    NaN included, as PyTorch's threshold, hardtanh, hardsigmoid and hardswish kernels select it.
    Computed in x's dtype (gy is cast to it): float32 inputs give float32 gradients.
Kinks: PyTorch's autograd (its backward kernel in brackets)
    relu at 0: 0, the derivative from the left [threshold_backward].
    relu6 at 0 and 6, clip at min and max: 0, the derivative from outside [hardtanh_backward];
      the gradient passes only strictly inside, so clip with min == max is 0 everywhere. clip's
      bounds are cast to x's dtype, as in the forward. clip with one bound keeps this rule (0 at
      the bound, as relu [threshold_backward]; torch.clamp_min's backward would pass gy there).
    leaky_relu at 0: alpha, the derivative from the left [leaky_relu_backward].
    hard_sigmoid at its corners alpha·x + beta ∈ {0, 1} (tested on the value the forward
      computes, i.e. 0 < y < 1): 0, from outside. At the Keras 3 default this is
      [hardsigmoid_backward] (1/6 on −3 < x < 3, 0 elsewhere); for other alpha, beta (Keras 2:
      corners at ±2.5) PyTorch has no Hardsigmoid, and the rule is that of its
      hardtanh(alpha·x + beta, 0, 1), the same as at the default.
    hard_swish at −3: −1/2, the derivative from the right; at 3: 3/2, the derivative from the
      left [hardswish_backward, as its scalar and CUDA kernels take it; its vectorised CPU
      kernel takes 1 at x = 3].
Special values
    x = ±inf gets the limit of the derivative: relu 1 at +inf and 0 at −inf; leaky_relu 1 and
    alpha; hard_swish 1 and 0 (although its forward is NaN at −inf: −inf · 0); relu6, clip,
    sigmoid, tanh and hard_sigmoid 0 at both.
    x = NaN: a NaN gradient in every op, as the forward (softmax: the whole lane along `axis`,
    whose output is NaN, as it is for a lane holding +inf; a −inf entry of a finite lane has
    y = 0 and gradient 0). PyTorch differs here: its comparisons let gy, alpha·gy or 0 through
    at a NaN depending on the kernel.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from . import inplace
from .base import Attr, Op, Traits

HARD_SIGMOID_KERAS2 = {"alpha": 0.2, "beta": 0.5}
HARD_SIGMOID_KERAS3 = {"alpha": 1.0 / 6.0, "beta": 0.5}


def _same_shape(in_shapes, attrs, params):
    return tuple(in_shapes[0])


def _gy_as(x, gy):
    """gy in x's dtype: every VJP here computes in the dtype of its input."""
    return np.asarray(gy, dtype=x.dtype)


def _nan_where_nan(x, g):
    """g (a new array) with NaN wherever x is NaN: no branch of a piecewise VJP holds there."""
    nan = np.isnan(x)
    if nan.any():
        g[nan] = np.nan
    return g


def _zero_where(cond, a, out=None, mask=None):
    """out (a new array unless given) = +0 where cond, else a (any value, ±inf and NaN included):
    a select without a branch per element (np.where and masked copies take one, several times
    slower on a mixed mask). mask (unsigned, a's item size; scratch, allocated unless given)
    becomes cond − 1, i.e. 0 where cond and all ones elsewhere, and out's bits are a's and-ed
    with it."""
    a = np.asarray(a)
    if mask is None:
        mask = np.empty(a.shape, np.dtype(f"u{a.itemsize}"))
    if out is None:
        out = np.empty_like(a)
    mask[...] = cond
    mask -= 1
    np.bitwise_and(a.view(mask.dtype), mask, out=out.view(mask.dtype))
    return out


def _relu(inputs, params, attrs):
    return np.maximum(inputs[0], 0)


def _relu_vjp(inputs, params, attrs, y, gy):
    """g = gy where x > 0, else 0; relu'(0) = 0, the derivative from the left (PyTorch)."""
    x = inputs[0]
    return [_nan_where_nan(x, _zero_where(x <= 0, _gy_as(x, gy)))], {}


def _relu6(inputs, params, attrs):
    return np.clip(inputs[0], 0, 6)


def _relu6_vjp(inputs, params, attrs, y, gy):
    """g = gy where 0 < x < 6, else 0: 0 on both kinks (PyTorch's hardtanh_backward)."""
    return _clip_vjp(inputs, params, {"min": 0.0, "max": 6.0}, y, gy)


def clip_bounds(attrs, dtype):
    """(lo, hi) of clip in `dtype`, None for a missing bound (ONNX Clip without min or max)."""
    return tuple(None if attrs[k] is None else dtype(attrs[k]) for k in ("min", "max"))


def _clip(inputs, params, attrs):
    x = inputs[0]
    lo, hi = clip_bounds(attrs, x.dtype.type)
    if lo is None and hi is None:
        return x.copy()
    return np.clip(x, lo, hi)


def _clip_vjp(inputs, params, attrs, y, gy):
    """g = gy where min < x < max, else 0: 0 on both bounds (PyTorch's hardtanh_backward), so
    min == max gives 0 everywhere; a missing bound sets no condition, and the one given keeps
    the same rule, 0 at the bound (as relu, the clip with min 0 alone: threshold_backward;
    PyTorch's clamp_min / clamp_max backward would pass gy at the bound). The bounds are cast to
    x's dtype, as in the forward."""
    x = inputs[0]
    lo, hi = clip_bounds(attrs, x.dtype.type)
    outside = np.zeros(x.shape, bool) if lo is None else x <= lo
    if hi is not None:
        outside |= x >= hi
    return [_nan_where_nan(x, _zero_where(outside, _gy_as(x, gy)))], {}


def _round_vjp(inputs, params, attrs, y, gy):
    """g = 0 everywhere: round is piecewise constant, and PyTorch's round backward is 0 at its
    jumps (the half-integers) and for non-finite x as well."""
    return [np.zeros(inputs[0].shape, inputs[0].dtype)], {}


def _clip_shape(in_shapes, attrs, params):
    if None not in (attrs["min"], attrs["max"]) and not attrs["min"] <= attrs["max"]:
        raise ShapeError(f"clip needs min <= max, got min={attrs['min']} max={attrs['max']}")
    return tuple(in_shapes[0])


def _leaky_relu(inputs, params, attrs):
    x = inputs[0]
    return np.where(x >= 0, x, x * x.dtype.type(attrs["alpha"]))


def _leaky_relu_vjp(inputs, params, attrs, y, gy):
    """g = gy where x > 0, else alpha·gy; at x = 0 alpha, the derivative from the left (PyTorch's
    leaky_relu_backward). With alpha = 0 the x <= 0 branch is an exact 0 (a select, as relu)."""
    x = inputs[0]
    gy = _gy_as(x, gy)
    alpha = x.dtype.type(attrs["alpha"])
    return [_nan_where_nan(x, np.where(x > 0, gy, gy * alpha if alpha else 0))], {}


def _sigmoid(inputs, params, attrs):
    x = inputs[0]
    return np.exp(np.minimum(x, 0)) / (1 + np.exp(-np.abs(x)))


def _sigmoid_vjp(inputs, params, attrs, y, gy):
    """g = gy · y · (1 − y), from the output (finite for every x, 0 once y rounds to 0 or 1)."""
    return [_gy_as(inputs[0], gy) * (y * (1 - y))], {}


def _tanh(inputs, params, attrs):
    return np.tanh(inputs[0])


def _tanh_vjp(inputs, params, attrs, y, gy):
    """g = gy · (1 − y²), evaluated as gy · (1 − y) · (1 + y) (1 − |y| is exact for |y| >= 1/2)."""
    return [_gy_as(inputs[0], gy) * ((1 - y) * (1 + y))], {}


def _hard_sigmoid(inputs, params, attrs):
    x = inputs[0]
    t = x.dtype.type
    return np.clip(x * t(attrs["alpha"]) + t(attrs["beta"]), 0, 1)


def _hard_sigmoid_vjp(inputs, params, attrs, y, gy):
    """g = alpha·gy where 0 < alpha·x + beta < 1 (as the forward computes it: 0 < y < 1), else 0:
    0 on both corners, as PyTorch's hardsigmoid_backward (and hardtanh of alpha·x + beta). With
    alpha = 0 the op is constant and g an exact 0."""
    x = inputs[0]
    t = x.dtype.type
    alpha = t(attrs["alpha"])
    inside = _gy_as(x, gy) * alpha if alpha else t(0)
    return [_nan_where_nan(x, np.where((y > 0) & (y < 1), inside, t(0)))], {}


_BLOCK = 1 << 16  # elements per block of hard_swish: its four passes over a block stay in cache


def _hard_swish(inputs, params, attrs):
    """gate = clip(x + 3, 0, 6) / 6, then gate · x, in place, block by block (speed only)."""
    x = np.ascontiguousarray(inputs[0])
    out = np.empty_like(x)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for s in range(0, flat_x.size, _BLOCK):
        xs, gate = flat_x[s:s + _BLOCK], flat_out[s:s + _BLOCK]
        np.add(xs, 3, out=gate)
        np.clip(gate, 0, 6, out=gate)
        gate /= 6
        gate *= xs
    return out


def _hard_swish_vjp(inputs, params, attrs, y, gy):
    """g = 0 where x < −3, gy · (x/3 + 1/2) where −3 <= x <= 3, gy where x > 3 (PyTorch's
    hardswish_backward): at x = −3 the derivative from the right (−1/2), at x = 3 the one from
    the left (3/2).

    Evaluated as slope = x/3 + 1/2, set to 1 where x > 3; g = gy · slope, set to +0 where x < −3
    (so an infinite or NaN gy gives 0 there too); a NaN x gives a NaN slope and g. The two masks
    hold the tails of x, usually few elements, which the masked assignments skip quickly."""
    x = inputs[0]
    t = x.dtype.type
    slope = np.divide(x, t(3))
    slope += t(0.5)
    slope[x > 3] = 1
    g = np.multiply(_gy_as(x, gy), slope, out=slope)
    g[x < -3] = 0
    return [g], {}


def _softmax(inputs, params, attrs):
    x = inputs[0]
    e = np.exp(x - np.max(x, axis=attrs["axis"], keepdims=True))
    return e / np.sum(e, axis=attrs["axis"], keepdims=True)


def _softmax_vjp(inputs, params, attrs, y, gy):
    """g = y ⊙ (gy − Σ_axis gy ⊙ y), the sum over `axis` kept as a size-1 axis."""
    gy = _gy_as(inputs[0], gy)
    axis = attrs["axis"]
    return [y * (gy - np.sum(gy * y, axis=axis, keepdims=True))], {}


def _softmax_shape(in_shapes, attrs, params):
    rank = len(in_shapes[0])
    if not -rank <= attrs["axis"] < rank or attrs["axis"] % rank == 0:
        raise ShapeError(f"softmax axis {attrs['axis']} is not a non-batch axis of a rank-{rank} tensor")
    return tuple(in_shapes[0])


OPS = [
    Op("relu", _relu, _same_shape, vjp=_relu_vjp, inplace=inplace.relu,
       traits=Traits("Relu", fusable_activation=True, cle_transparent=True, lowering="clamp")),
    Op("relu6", _relu6, _same_shape, vjp=_relu6_vjp,
       inplace=inplace.relu6, traits=Traits("Clip", fusable_activation=True, lowering="clamp")),
    Op("clip", _clip, _clip_shape, attrs={"min": Attr("float", None), "max": Attr("float", None)},
       vjp=_clip_vjp, inplace=inplace.clip,
       traits=Traits("Clip", fusable_activation=True, lowering="clamp")),
    Op("round", lambda xs, p, a: np.round(xs[0]), _same_shape, vjp=_round_vjp,
       traits=Traits("Round", lowering="lut")),
    Op("leaky_relu", _leaky_relu, _same_shape, attrs={"alpha": Attr("float", 0.3)},
       vjp=_leaky_relu_vjp, traits=Traits("LeakyRelu", cle_transparent=True, lowering="lut")),
    Op("sigmoid", _sigmoid, _same_shape, vjp=_sigmoid_vjp,
       traits=Traits("Sigmoid", lowering="lut")),
    Op("tanh", _tanh, _same_shape, vjp=_tanh_vjp, traits=Traits("Tanh", lowering="lut")),
    Op("hard_sigmoid", _hard_sigmoid, _same_shape,
       attrs={"alpha": Attr("float", HARD_SIGMOID_KERAS3["alpha"]),
              "beta": Attr("float", HARD_SIGMOID_KERAS3["beta"])},
       vjp=_hard_sigmoid_vjp, traits=Traits("HardSigmoid", lowering="lut")),
    Op("hard_swish", _hard_swish, _same_shape, vjp=_hard_swish_vjp,
       inplace=inplace.hard_swish, traits=Traits("HardSwish", lowering="lut")),
    Op("softmax", _softmax, _softmax_shape, attrs={"axis": Attr("int", -1)}, vjp=_softmax_vjp,
       traits=Traits("Softmax", lowering="softmax")),
]
