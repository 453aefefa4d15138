"""Elementwise activations and softmax.

Every op here maps an array to an array of the same shape and dtype and has no parameters.

| op           | definition                                              | attributes        |
|--------------|---------------------------------------------------------|-------------------|
| relu         | y = max(x, 0)                                           |                   |
| relu6        | y = min(max(x, 0), 6)                                   |                   |
| clip         | y = min(max(x, min), max)                               | min, max          |
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
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .base import Attr, Op

HARD_SIGMOID_KERAS2 = {"alpha": 0.2, "beta": 0.5}
HARD_SIGMOID_KERAS3 = {"alpha": 1.0 / 6.0, "beta": 0.5}


def _same_shape(in_shapes, attrs, params):
    return tuple(in_shapes[0])


def _relu(inputs, params, attrs):
    return np.maximum(inputs[0], 0)


def _relu6(inputs, params, attrs):
    return np.clip(inputs[0], 0, 6)


def _clip(inputs, params, attrs):
    x = inputs[0]
    return np.clip(x, x.dtype.type(attrs["min"]), x.dtype.type(attrs["max"]))


def _clip_shape(in_shapes, attrs, params):
    if not attrs["min"] <= attrs["max"]:
        raise ShapeError(f"clip needs min <= max, got min={attrs['min']} max={attrs['max']}")
    return tuple(in_shapes[0])


def _leaky_relu(inputs, params, attrs):
    x = inputs[0]
    return np.where(x >= 0, x, x * x.dtype.type(attrs["alpha"]))


def _sigmoid(inputs, params, attrs):
    x = inputs[0]
    return np.exp(np.minimum(x, 0)) / (1 + np.exp(-np.abs(x)))


def _tanh(inputs, params, attrs):
    return np.tanh(inputs[0])


def _hard_sigmoid(inputs, params, attrs):
    x = inputs[0]
    t = x.dtype.type
    return np.clip(x * t(attrs["alpha"]) + t(attrs["beta"]), 0, 1)


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


def _softmax(inputs, params, attrs):
    x = inputs[0]
    e = np.exp(x - np.max(x, axis=attrs["axis"], keepdims=True))
    return e / np.sum(e, axis=attrs["axis"], keepdims=True)


def _softmax_shape(in_shapes, attrs, params):
    rank = len(in_shapes[0])
    if not -rank <= attrs["axis"] < rank or attrs["axis"] % rank == 0:
        raise ShapeError(f"softmax axis {attrs['axis']} is not a non-batch axis of a rank-{rank} tensor")
    return tuple(in_shapes[0])


OPS = [
    Op("relu", _relu, _same_shape),
    Op("relu6", _relu6, _same_shape),
    Op("clip", _clip, _clip_shape, attrs={"min": Attr("float"), "max": Attr("float")}),
    Op("leaky_relu", _leaky_relu, _same_shape, attrs={"alpha": Attr("float", 0.3)}),
    Op("sigmoid", _sigmoid, _same_shape),
    Op("tanh", _tanh, _same_shape),
    Op("hard_sigmoid", _hard_sigmoid, _same_shape,
       attrs={"alpha": Attr("float", HARD_SIGMOID_KERAS3["alpha"]),
              "beta": Attr("float", HARD_SIGMOID_KERAS3["beta"])}),
    Op("hard_swish", _hard_swish, _same_shape),
    Op("softmax", _softmax, _softmax_shape, attrs={"axis": Attr("int", -1)}),
]
