"""Integer data movement: int_concat, int_pad (no arithmetic; shape inference as the float ops)."""
from __future__ import annotations

import numpy as np

from ...layers import REGISTRY
from ...layers.base import Attr, Op
from .common import ACT_ZP_RANGE, check_zp, int_input, int_values


def _concat_shape(in_shapes, attrs, params):
    return REGISTRY["concat"].infer_shape(in_shapes, attrs, {})


def _concat_forward(inputs, params, attrs):
    """int_concat — integer concatenation.

    Definition
        y = x_0 ‖ x_1 ‖ ... along `axis` (not the batch axis); shapes as concat.
    Integer semantics
        A pure copy: all inputs and the output share one encoding (TFLite int8 CONCATENATION
        requires it, TOSA CONCAT is a copy; fixedpoint.md §5.4); the lowering inserts
        `int_requantize` on inputs whose encoding differs.
    Errors
        ShapeError as concat; FixedPointError for a non-integer input.
    """
    xs = [int_input(x, f"int_concat input {i}") for i, x in enumerate(inputs)]
    _concat_shape([x.shape for x in xs], attrs, params)
    return np.concatenate(xs, axis=attrs["axis"])


def _pad_shape(in_shapes, attrs, params):
    check_zp(attrs["value"], "int_pad: value", ACT_ZP_RANGE, "the input's zero point")
    return REGISTRY["zero_pad2d"].infer_shape(in_shapes, {"pads": attrs["pads"]}, {})


def _pad_forward(inputs, params, attrs):
    """int_pad — integer spatial padding.

    Definition
        y[n, i + top, j + left, c] = x[n, i, j, c], `value` elsewhere (NHWC);
        pads = [top, bottom, left, right].
    Integer semantics
        zero_pad2d in the integer domain: `value` is the input zero point, so the padding holds
        the real value 0. A copy, no rounding.
    Errors
        ShapeError as zero_pad2d; FixedPointError for a value outside [−32768, 32767].
    """
    return pad_narrow(inputs, params, attrs, dtype=np.int64)[0]


def pad_narrow(inputs, params, attrs, memo=None, dtype=None):
    """(int_pad's y, None) with y an array of `dtype`; dtype None: x's own dtype when it holds
    `value`, else int64 (a copy either way; the values are those of the definition)."""
    x = int_values(inputs[0], "int_pad input")
    _pad_shape([x.shape], attrs, params)
    if dtype is None:
        info = np.iinfo(x.dtype)
        dtype = x.dtype if info.min <= attrs["value"] <= info.max else np.int64
    t, b, l, r = attrs["pads"]
    n, h, w, c = x.shape
    y = np.empty((n, h + t + b, w + l + r, c), dtype)
    y[:, t:t + h, l:l + w] = x
    for border in (y[:, :t], y[:, t + h:], y[:, t:t + h, :l], y[:, t:t + h, l + w:]):
        border.fill(attrs["value"])
    return y, None


def concat_narrow(inputs, params, attrs, memo=None):
    """(int_concat's y, None) in the inputs' common dtype (NumPy's promotion: it holds every
    input value), without the int64 copies."""
    xs = [int_values(x, f"int_concat input {i}") for i, x in enumerate(inputs)]
    _concat_shape([x.shape for x in xs], attrs, params)
    return np.concatenate(xs, axis=attrs["axis"]), None


OPS = [
    Op("int_concat", _concat_forward, _concat_shape, num_inputs=(1, None),
       attrs={"axis": Attr("int", -1)}),
    Op("int_pad", _pad_forward, _pad_shape,
       attrs={"pads": Attr("ints", (0, 0, 0, 0), length=4), "value": Attr("int", 0)}),
]

#: `run_int`'s kernels: (y in a dtype narrower than int64 where the values allow, None).
NARROW = {"int_pad": pad_narrow, "int_concat": concat_narrow}
