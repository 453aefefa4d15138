"""Float cases of transpose, divide, pad, conv_transpose1d, conv_transpose3d and the column-major
max-pooling indices (storage_order 1).

The conventions are those of `refq.conformance.cases_float`: inputs and weights are dyadic
(k / 2^8), so every sum of the transposed convolutions is exact in float64 and the bytes do not
depend on the machine; a quotient of divide is one correctly rounded division. The variants sit
at the edges of each definition: a permutation of every non-batch axis, divisions by ±0 (IEEE:
±inf; 0 / 0 = NaN is left out, as a case's outputs are compared with a tolerance) and by
broadcast operands, pads on one side of an axis only and on the
channel axis, negative pads from output_shape (outputs that only the bias reaches), groups with
strides, dilations and output_padding at once, and ties of the maximum read column-major.
"""
from __future__ import annotations

import numpy as np

from ..graph import Node
from .cases_float import _p, _x, dyadic, float_case, simple, single

# ---- transpose -------------------------------------------------------------------------------
float_case("float.transpose.rank4", "transpose perm [0, 3, 1, 2] of [N, H, W, C] -> [N, C, H, W]",
           simple("transpose", {"perm": [0, 3, 1, 2]}), {"x": _x((2, 3, 4))}, seed=90,
           layouts={"y": "NCHW"})
float_case("float.transpose.rank5", "transpose perm [0, 2, 4, 1, 3] of a rank-5 tensor",
           simple("transpose", {"perm": [0, 2, 4, 1, 3]}), {"x": _x((2, 3, 2, 3))}, seed=91,
           layouts={"x": "rank5", "y": "rank5"})

# ---- divide ----------------------------------------------------------------------------------
_ZERO_DIVISORS = [0.0, -0.0, 0.0, -0.0]
_NUMERATORS = [1.5, 1.5, -2.0, -2.0]


def _divisor(shape, specials):
    def fn(rng):
        x = dyadic(rng, (2,) + tuple(shape))
        x[x == 0] = 0.25                        # zeros only where the specials put them
        flat = x.ravel()
        flat[:len(specials)] = specials
        return flat.reshape(x.shape)
    return (tuple(shape), fn)


float_case("float.divide.ieee_zeros", "divide a / b: divisions by +0 and -0 (±inf by the signs of "
           "a and of the zero) and of dyadic values (one rounding each)",
           single(lambda r: Node("div", "divide", ["a", "b"], ["y"])),
           {"a": _x((3, 4), specials=_NUMERATORS), "b": _divisor((3, 4), _ZERO_DIVISORS)},
           seed=92, layouts={"a": "NWC", "b": "NWC", "y": "NWC"})
float_case("float.divide.broadcast", "divide [N, H, W, C] / [N, 1, 1, C] (per-image, "
           "per-channel divisor)", single(lambda r: Node("div", "divide", ["a", "b"], ["y"])),
           {"a": _x((3, 4, 2)), "b": _divisor((1, 1, 2), [])}, seed=93)

# ---- pad -------------------------------------------------------------------------------------
float_case("float.pad.value_hw", "pad H by [1, 3] and W by [0, 2] with the value 1.25 (ONNX "
           "Pad, mode constant)", simple("pad", {"pads": [1, 3, 0, 2, 0, 0], "value": 1.25}),
           {"x": _x((3, 4, 2))}, seed=94)
float_case("float.pad.channels", "pad the channel axis by [2, 1] with -0.5 and W by [1, 0]",
           simple("pad", {"pads": [0, 0, 1, 0, 2, 1], "value": -0.5}), {"x": _x((2, 3, 2))},
           seed=95)

# ---- conv_transpose1d / conv_transpose3d -----------------------------------------------------


def _deconv(r, wshape, bias=True, **attrs):
    def make(rng):
        p = {"weight": _p(rng, wshape)}
        if bias:
            p["bias"] = _p(rng, (wshape[0],), 2.0)
        return [Node("deconv", f"conv_transpose{r}d", ["x"], ["y"], attrs, p)]
    return make


_DECONV = [  # (rank, variant, description, input without the batch, weight, attrs)
    (1, "basic", "kernel 3, stride 1 (output L + 2), bias", (5, 2), (3, 3, 2), {}),
    (1, "groups_strides_dilations", "groups 2, stride 3, dilation 2, output_padding 1, explicit "
     "pads [1, 2]", (4, 4), (6, 3, 2), {"groups": 2, "strides": [3], "dilations": [2],
                                        "output_padding": [1], "padding": "explicit",
                                        "pads": [1, 2]}),
    (1, "output_shape", "kernel 2 stride 2 with output_shape [12] beyond the full output "
     "(negative pads: the bias alone at the ends)", (4, 2), (2, 2, 2),
     {"strides": [2], "output_shape": [12]}),
    (3, "basic", "2x2x3 kernel, stride 1, bias", (2, 3, 2, 2), (3, 2, 2, 3, 2), {}),
    (3, "groups_strides_same_lower", "groups 2, strides [2, 1, 2], dilations [1, 2, 1], "
     "'same_lower'", (2, 3, 2, 4), (4, 2, 2, 2, 2),
     {"groups": 2, "strides": [2, 1, 2], "dilations": [1, 2, 1], "padding": "same_lower"}),
    (3, "explicit_output_padding", "strides [2, 2, 1], output_padding [1, 0, 0], explicit pads "
     "[1, 0, 0, 1, 1, 1], no bias", (2, 2, 3, 2), (2, 2, 2, 3, 2),
     {"strides": [2, 2, 1], "output_padding": [1, 0, 0], "padding": "explicit",
      "pads": [1, 0, 0, 1, 1, 1], "bias": False}),
]
for _i, (_r, _name, _desc, _xs, _ws, _attrs) in enumerate(_DECONV):
    _a = dict(_attrs)
    _bias = _a.pop("bias", True)
    float_case(f"float.conv_transpose{_r}d.{_name}", f"conv_transpose{_r}d: {_desc}",
               _deconv(_r, _ws, _bias, **_a), {"x": _x(_xs)}, seed=96 + _i)

# ---- max-pooling indices, column-major -------------------------------------------------------
_ATTRS_CM = {"pool_size": [2, 3], "strides": [1, 2], "padding": "same"}
float_case("float.max_pool2d_indices.column_major", "max_pool2d_indices with storage_order 1 "
           "(ONNX MaxPool's Indices, column-major: c·H·W + w·H + h) on small integers (ties: "
           "the first maximum in row-major window order)",
           lambda rng: [Node("argmax", "max_pool2d_indices", ["x"], ["indices"],
                             {**_ATTRS_CM, "storage_order": 1})],
           {"x": ((5, 6, 2), lambda rng: rng.integers(-2, 3, size=(2, 5, 6, 2))
                  .astype(np.float64))}, seed=102)
