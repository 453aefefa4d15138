"""Float cases of the ONNX-era ops and attributes: conv_transpose2d, matmul, gemm, pooling of
spatial rank 1 to 3 with dilations, ceil_mode, count_include_pad and same_lower, the max-pooling
indices, global_max_pool2d, round, flatten with an axis and clip with one bound.

The conventions are those of `refq.conformance.cases_float`: inputs and weights are dyadic
(k / 2^8), alpha and beta of gemm are powers of two, so every sum is exact in float64 and the
bytes do not depend on the machine; an average is one correctly rounded division of an exact sum.
The geometry variants are chosen at the edges of each definition (`refq.layers.pool_geometry`,
`refq.layers.conv_transpose`): a ceil_mode window that would start in the right padding (dropped)
next to one that reaches beyond the padding (kept, its overhang neither input nor padding), the
extra pad of same_lower at the start, dilated windows, ties of the maximum (the indices name the
first maximum in row-major window order).
"""
from __future__ import annotations

import numpy as np

from ..graph import Node
from .cases_float import _kinks, _p, _x, dyadic, float_case, simple, single

# ---- conv_transpose2d ------------------------------------------------------------------------


def _deconv(wshape, bias=True, **attrs):
    def make(rng):
        p = {"weight": _p(rng, wshape)}
        if bias:
            p["bias"] = _p(rng, (wshape[0],), 2.0)
        return [Node("deconv", "conv_transpose2d", ["x"], ["y"], attrs, p)]
    return make


_DECONV = [  # (variant, description, input [H, W, C], weight [O, kh, kw, C/groups], attrs)
    ("basic", "3x3, stride 1, no padding (output H + 2, W + 2), bias", (3, 4, 2), (3, 3, 3, 2),
     {}),
    ("strides_output_padding", "3x3, strides [2, 3], output_padding [1, 2] (the extra "
     "rows/columns no pixel reaches hold only the bias)", (3, 3, 2), (2, 3, 3, 2),
     {"strides": [2, 3], "output_padding": [1, 2]}),
    ("groups", "groups 2 (4 -> 6 channels), stride 2", (3, 3, 4), (6, 2, 2, 2),
     {"groups": 2, "strides": [2, 2]}),
    ("depthwise", "groups = channels = 3, multiplier 2, 3x3 stride 2", (3, 3, 3), (6, 3, 3, 1),
     {"groups": 3, "strides": [2, 2]}),
    ("dilations", "2x3 kernel, dilations [2, 3], strides [1, 2], output_padding [1, 0] (below "
     "the dilation)", (3, 3, 2), (2, 2, 3, 2),
     {"dilations": [2, 3], "strides": [1, 2], "output_padding": [1, 0]}),
    ("explicit_pads", "3x3 stride 2, explicit pads [top 1, bottom 2, left 0, right 1] crop the "
     "full output", (4, 3, 2), (3, 3, 3, 2), {"strides": [2, 2], "padding": "explicit",
                                              "pads": [1, 2, 0, 1]}),
    ("same_upper", "3x3 stride 2 'same_upper' (output = input x stride; the odd crop at the "
     "end)", (3, 4, 2), (2, 3, 3, 2), {"strides": [2, 2], "padding": "same_upper"}),
    ("same_lower", "3x3 stride 2 'same_lower' (the odd crop at the start)", (3, 4, 2),
     (2, 3, 3, 2), {"strides": [2, 2], "padding": "same_lower"}),
    ("output_shape", "4x4 stride 2 with output_shape [9, 6] (pads derived by ONNX's rule)",
     (4, 3, 2), (2, 4, 4, 2), {"strides": [2, 2], "output_shape": [9, 6]}),
]
for _i, (_name, _desc, _xs, _ws, _attrs) in enumerate(_DECONV):
    float_case(f"float.conv_transpose2d.{_name}", f"conv_transpose2d: {_desc}",
               _deconv(_ws, **_attrs), {"x": _x(_xs)}, seed=20 + _i)
float_case("float.conv_transpose2d.no_bias", "conv_transpose2d without bias, 2x2 stride 2",
           _deconv((3, 2, 2, 2), bias=False, strides=[2, 2]), {"x": _x((3, 3, 2))}, seed=29)

# ---- matmul and gemm -------------------------------------------------------------------------
_MATMUL_LAYOUTS = {3: ("NMK", "NKP", "NMP"), 4: ("NBMK", "NBKP", "NBMP"),
                   5: ("NABMK", "NABKP", "NABMP")}


def _matmul_case(variant, description, a_shape, c_shape, seed):
    la, lc, ly = _MATMUL_LAYOUTS[len(a_shape) + 1]
    float_case(f"float.matmul.{variant}", f"matmul: {description}",
               single(lambda r: Node("mm", "matmul", ["a", "c"], ["y"])),
               {"a": _x(a_shape), "c": _x(c_shape)}, seed=seed,
               layouts={"a": la, "c": lc, "y": ly})


_matmul_case("rank3", "[N, 3, 4] @ [N, 4, 5]", (3, 4), (4, 5), 30)
_matmul_case("broadcast", "[N, 2, 3, 4] @ [N, 1, 4, 2]: c's size-1 axis stretched", (2, 3, 4),
             (1, 4, 2), 31)
_matmul_case("broadcast_both", "[N, 3, 1, 2, 4] @ [N, 1, 2, 4, 3]: each operand stretched "
             "along one axis", (3, 1, 2, 4), (1, 2, 4, 3), 32)


def _gemm(wshape, bias_shape=None, **attrs):
    def make(rng):
        p = {"weight": _p(rng, wshape)}
        if bias_shape is not None:
            p["bias"] = np.asarray(_p(rng, bias_shape, 2.0))
        return [Node("gemm", "gemm", ["x"], ["y"], attrs, p)]
    return make


float_case("float.gemm.basic", "gemm y = A·B + C, B [K, P] (transB 0), C [P]",
           _gemm((5, 3), (3,)), {"x": _x((5,), n=3)}, seed=33)
float_case("float.gemm.transb_alpha_beta", "gemm y = 0.5·A·Bᵀ − 2·C, B [P, K] (transB 1), "
           "C [1, P]", _gemm((4, 6), (1, 4), transB=1, alpha=0.5, beta=-2.0),
           {"x": _x((6,), n=3)}, seed=34)
float_case("float.gemm.scalar_bias", "gemm with alpha 2, beta 0.25 and a scalar C [] "
           "broadcast to every element", _gemm((3, 2), (), alpha=2.0, beta=0.25),
           {"x": _x((3,), n=4)}, seed=35)
float_case("float.gemm.no_bias", "gemm transB 1 without C (the same operations as dense)",
           _gemm((3, 4), None, transB=1), {"x": _x((4,), n=2)}, seed=36)

# ---- pooling of rank 1, 2 and 3 -----------------------------------------------------------------
# (op, variant, what the variant tests, attrs, input shape without the batch)
_POOL = [
    ("max_pool2d", "ceil_mode", "ceil_mode with explicit pads: on H the last window would start "
     "in the bottom padding and is dropped, on W the added window reaches beyond the padding",
     {"pool_size": [2, 3], "strides": [2, 2], "padding": "explicit", "pads": [1, 1, 1, 0],
      "ceil_mode": True}, (5, 7, 2)),
    ("avg_pool2d", "ceil_mode", "ceil_mode with explicit pads, divisor = valid taps",
     {"pool_size": [2, 3], "strides": [2, 2], "padding": "explicit", "pads": [1, 1, 1, 0],
      "ceil_mode": True}, (5, 7, 2)),
    ("avg_pool2d", "ceil_mode_count_include_pad", "ceil_mode with explicit pads and "
     "count_include_pad: the divisor counts padding taps but not the ceil_mode overhang",
     {"pool_size": [2, 3], "strides": [2, 2], "padding": "explicit", "pads": [1, 1, 1, 0],
      "ceil_mode": True, "count_include_pad": True}, (5, 7, 2)),
    ("avg_pool2d", "count_include_pad", "3x3 stride 2, explicit pads [1, 2, 2, 1], "
     "count_include_pad (divisor 9 everywhere)",
     {"pool_size": [3, 3], "strides": [2, 2], "padding": "explicit", "pads": [1, 2, 2, 1],
      "count_include_pad": True}, (6, 5, 2)),
    ("avg_pool2d", "same_count_include_pad", "3x3 stride 2 'same' with count_include_pad (the "
     "padding 'same' adds is counted)", {"pool_size": [3, 3], "strides": [2, 2],
                                         "padding": "same", "count_include_pad": True},
     (6, 5, 2)),
    ("max_pool2d", "dilations", "3x2 valid, dilations [2, 3], strides [1, 2]",
     {"pool_size": [3, 2], "strides": [1, 2], "dilations": [2, 3]}, (7, 8, 2)),
    ("avg_pool2d", "dilations_same", "2x2 'same', dilations [2, 3], strides [1, 2]",
     {"pool_size": [2, 2], "strides": [1, 2], "dilations": [2, 3], "padding": "same"},
     (5, 7, 2)),
    ("max_pool2d", "same_lower", "2x4 stride 1 'same_lower' (the odd pad row/column at the "
     "top/left)", {"pool_size": [2, 4], "strides": [1, 1], "padding": "same_lower"}, (4, 5, 2)),
    ("avg_pool2d", "same_lower", "2x4 stride 1 'same_lower', divisor = valid taps",
     {"pool_size": [2, 4], "strides": [1, 1], "padding": "same_lower"}, (4, 5, 2)),
    ("max_pool1d", "ceil_mode_dilations", "pool 3, stride 2, dilation 2, pads [1, 1], "
     "ceil_mode", {"pool_size": [3], "strides": [2], "dilations": [2], "padding": "explicit",
                   "pads": [1, 1], "ceil_mode": True}, (10, 3)),
    ("max_pool1d", "same", "pool 3, stride 2, 'same'", {"pool_size": [3], "strides": [2],
                                                         "padding": "same"}, (8, 3)),
    ("avg_pool1d", "valid", "pool 3, stride 1, valid", {"pool_size": [3], "strides": [1]},
     (7, 3)),
    ("avg_pool1d", "same_lower_count_include_pad", "pool 4, stride 3, 'same_lower', "
     "count_include_pad", {"pool_size": [4], "strides": [3], "padding": "same_lower",
                           "count_include_pad": True}, (8, 2)),
    ("avg_pool1d", "ceil_mode_dilations", "pool 2, stride 3, dilation 2, ceil_mode (the last "
     "window's second tap is overhang)", {"pool_size": [2], "strides": [3], "dilations": [2],
                                          "ceil_mode": True}, (10, 2)),
    ("max_pool3d", "valid", "2x2x2 stride 2, valid", {"pool_size": [2, 2, 2],
                                                      "strides": [2, 2, 2]}, (4, 4, 5, 2)),
    ("max_pool3d", "same_dilations", "2x3x2 'same', strides [1, 2, 1], dilations [2, 1, 2]",
     {"pool_size": [2, 3, 2], "strides": [1, 2, 1], "dilations": [2, 1, 2],
      "padding": "same"}, (3, 5, 4, 2)),
    ("avg_pool3d", "explicit_count_include_pad", "2x2x3 stride [1, 2, 2], explicit pads, "
     "count_include_pad", {"pool_size": [2, 2, 3], "strides": [1, 2, 2], "padding": "explicit",
                           "pads": [1, 0, 0, 1, 2, 1], "count_include_pad": True},
     (3, 4, 5, 2)),
    ("avg_pool3d", "ceil_mode", "2x2x2 stride 2 ceil_mode (partial windows at the far end)",
     {"pool_size": [2, 2, 2], "strides": [2, 2, 2], "ceil_mode": True}, (3, 5, 3, 2)),
]
for _i, (_op, _name, _desc, _attrs, _xs) in enumerate(_POOL):
    float_case(f"float.{_op}.{_name}", f"{_op}: {_desc}", simple(_op, _attrs), {"x": _x(_xs)},
               seed=40 + _i)


def _ties(shape, n=2, low=-2, high=2):
    """Small integers (many equal values in a window, so ties of the maximum), as float64."""
    return (tuple(shape), lambda rng: rng.integers(low, high + 1, size=(n,) + tuple(shape))
            .astype(np.float64))


def _max_and_indices(r, attrs):
    """max_pool{r}d and max_pool{r}d_indices on the same input (ONNX MaxPool's two outputs)."""
    return lambda rng: [Node("pool", f"max_pool{r}d", ["x"], ["y"], dict(attrs)),
                        Node("argmax", f"max_pool{r}d_indices", ["x"], ["indices"],
                             dict(attrs))]


_INDICES = [  # (rank, variant, description, attrs, input shape, values)
    (2, "ties_overlapping", "3x3 stride 1 on small integers (ties: the first maximum in "
     "row-major window order)", {"pool_size": [3, 3], "strides": [1, 1]}, (5, 6, 2),
     _ties((5, 6, 2))),
    (2, "ties_same_negative", "2x3 stride 2 'same' on negative integers (the padding never "
     "wins; ties)", {"pool_size": [2, 3], "strides": [2, 2], "padding": "same"}, (5, 7, 2),
     _ties((5, 7, 2), low=-3, high=-1)),
    (2, "ceil_mode_dilations", "2x2, dilations [2, 2], strides 2, pads [1, 0, 1, 1], ceil_mode "
     "on ties", {"pool_size": [2, 2], "strides": [2, 2], "dilations": [2, 2],
                 "padding": "explicit", "pads": [1, 0, 1, 1], "ceil_mode": True}, (7, 6, 3),
     _ties((7, 6, 3), low=0, high=2)),
    (1, "ties_same_lower", "pool 3, stride 2, 'same_lower' on ties",
     {"pool_size": [3], "strides": [2], "padding": "same_lower"}, (8, 3),
     _ties((8, 3), low=-1, high=1)),
    (3, "ties_dilations", "2x2x2, dilations [1, 2, 1], strides [1, 1, 2] on ties",
     {"pool_size": [2, 2, 2], "strides": [1, 1, 2], "dilations": [1, 2, 1]}, (3, 4, 4, 2),
     _ties((3, 4, 4, 2), low=0, high=1)),
]
for _i, (_r, _name, _desc, _attrs, _xs, _inp) in enumerate(_INDICES):
    float_case(f"float.max_pool{_r}d_indices.{_name}", f"max_pool{_r}d with "
               f"max_pool{_r}d_indices (ONNX MaxPool's second output, flat NCHW index within "
               f"the image): {_desc}", _max_and_indices(_r, _attrs), {"x": _inp},
               outputs=["y", "indices"], seed=60 + _i)

float_case("float.global_max_pool2d.basic", "global_max_pool2d -> [N, C]",
           simple("global_max_pool2d"), {"x": _x((5, 3, 4))}, seed=70)
float_case("float.global_max_pool2d.keepdims_negative", "global_max_pool2d keepdims=True -> "
           "[N, 1, 1, C] on negative values", simple("global_max_pool2d", {"keepdims": True}),
           {"x": ((3, 4, 2), lambda r: -1.0 - np.abs(dyadic(r, (2, 3, 4, 2))))}, seed=71)

# ---- elementwise and shape -------------------------------------------------------------------
_ROUND = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, -3.5, 0.0, -0.0, 0.5 - 2.0 ** -20,
          0.5 + 2.0 ** -20, -0.5 - 2.0 ** -20, 2.0 ** 52 + 1.0, -(2.0 ** 52) - 1.0, 1e300,
          2.0 ** -1074, -0.25]
float_case("float.round.ties", "round half to even at the ties ±0.5, ±1.5, ±2.5, ±3.5 (-0.5 -> "
           "-0), around 0.5 ± 2^-20, at ±0, beyond 2^52 and on uniform halves and quarters",
           simple("round"), {"x": _x((4, 8), lim=8.0, specials=_ROUND)}, seed=72)
float_case("float.clip.min_only", "clip with min -1.5 only (no upper bound) at its kink "
           "(-1.5, ±2^-20) and on uniform data", simple("clip", {"min": -1.5}),
           {"x": _x((4, 8), lim=8.0, specials=_kinks([-1.5]) + [1e300, -1e300])}, seed=73)
float_case("float.clip.max_only", "clip with max 2.25 only (no lower bound) at its kink "
           "(2.25, ±2^-20) and on uniform data", simple("clip", {"max": 2.25}),
           {"x": _x((4, 8), lim=8.0, specials=_kinks([2.25]) + [1e300, -1e300])}, seed=74)
float_case("float.flatten.axis2", "flatten with axis 2 (ONNX): [N, H, W, C] -> [N·H, W·C], "
           "rows in batch order", simple("flatten", {"axis": 2}), {"x": _x((3, 2, 2))},
           seed=75)
float_case("float.flatten.axis_minus1", "flatten with axis -1 (= rank - 1): [N, H, W, C] -> "
           "[N·H·W, C]", simple("flatten", {"axis": -1}), {"x": _x((2, 3, 2))}, seed=76)
float_case("float.gather_channels.basic", "gather_channels: channels [4, 0, 5] of 6, out of "
           "order (channel pruning's selection)", simple("gather_channels", {"indices": [4, 0, 5]}),
           {"x": _x((2, 3, 6))}, seed=77)

