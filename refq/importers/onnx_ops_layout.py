"""ONNX operators -> refq nodes: Transpose and Pad, which move values between positions of the
axes refq holds (a part of `onnx_ops.CONVERTERS`).

    Transpose(perm), perm[0] = 0   refq's transpose with the permutation of the axes refq holds:
        with src[j] the refq axis holding ONNX axis j (NCHW: 0, C -> last, spatial k -> k − 1),
        the output held as ONNX's needs q[k] = src[perm[k]], held channels-last (rank 3 to 5)
        q[j] = that q at ONNX axis [0, 2, ..., r − 1, 1][j]. A layout in which q is the
        identity takes no node (perm (0, 2, 3, 1) of an NCHW tensor is refq's own NHWC array,
        (0, 3, 1, 2) turns it back); otherwise the output is held channels-last when a channel
        op reads it, as ONNX's otherwise. A perm moving the batch axis is refused.
    Pad(mode constant, value v, axes)   pads per ONNX axis ([b..., e...] over `axes`, default
        every axis) -> zero_pad2d when v = 0 and only H and W of an NCHW tensor are padded,
        else refq's pad (every non-batch axis, refq's axis order, value v). Padding the batch
        axis, negative pads (crops) and other modes are refused.
"""
from __future__ import annotations

import numpy as np

from .onnx_ops_shape import nhwc_axis

__all__ = ["LAYOUT_CONVERTERS"]


def _onnx_axes(x):
    """src with src[j] = the refq axis holding ONNX axis j of x (layout "nchw" or "same")."""
    rank = len(x.shape)
    return [0] + [nhwc_axis(j, rank) for j in range(1, rank)] if x.layout == "nchw" \
        else list(range(rank))


def _transpose(b, index, node, attrs):
    """Transpose(perm) with perm[0] = 0 -> refq's transpose, or no node when the permutation is
    the change of layout (module docstring)."""
    x = b.tensor(node, node.input[0])
    rank = len(x.shape)
    perm = [int(p) for p in attrs.get("perm", reversed(range(rank)))]
    if sorted(perm) != list(range(rank)):
        raise b.unsupported(node, f"attribute perm={perm} is not a permutation of the axes of "
                            f"ONNX shape {list(x.onnx_shape)}")
    if perm[0] != 0:
        raise b.unsupported(node, f"attribute perm={perm} moves the batch axis (axis 0), which "
                            "refq keeps first and apart; refq transposes the other axes only")
    if isinstance(x.layout, tuple):
        raise b.unsupported(node, "transposes a flattened NCHW tensor; refq lets only a dense "
                            "layer read one")
    src = _onnx_axes(x)
    held = {"same": [src[p] for p in perm]}     # output held as ONNX's: refq perm q[k]
    if 3 <= rank <= 5:                          # output held channels-last
        held["nchw"] = [held["same"][j] for j in [0] + list(range(2, rank)) + [1]]
    from .onnx_graph import Tensor
    for layout, q in held.items():
        if q == list(range(rank)):
            b.tensors[node.output[0]] = Tensor(x.name, x.shape, layout)
            return
    layout = "nchw" if "nchw" in held and b.reads_channels(node.output[0], rank) else "same"
    b.emit(node, "transpose", [x], node.output[0], {"perm": held[layout]}, layout=layout)


def _pad_inputs(b, node, attrs, rank):
    """(mode, pads, value, axes) of an ONNX Pad (inputs from opset 11, attributes before)."""
    mode = attrs.get("mode", "constant")
    axes = None
    if b.opset >= 11:
        pads = b.const(node.input[1]) if len(node.input) > 1 else None
        value = b.const(node.input[2]) if len(node.input) > 2 and node.input[2] else 0.0
        if len(node.input) > 3 and node.input[3]:
            axes = b.const(node.input[3])
            if axes is None:
                raise b.unsupported(node, "its axes input is computed at run time; refq needs "
                                    "a constant of the file")
    else:
        pads, value = attrs.get("pads"), attrs.get("value", 0.0)
    if pads is None or value is None:
        raise b.unsupported(node, "its pads or value are computed at run time")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    value = np.asarray(value).reshape(-1)
    if value.size != 1 or not np.isfinite(value[0]):
        raise b.unsupported(node, f"constant value {value.tolist()}: refq pads with one finite "
                            "number")
    axes = list(range(rank)) if axes is None else \
        [int(a) for a in np.asarray(axes).reshape(-1)]
    if any(not -rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
        raise b.unsupported(node, f"axes {axes} are not distinct axes of a rank-{rank} tensor")
    return mode, pads, float(value[0]), [a % rank for a in axes]


def _pad(b, index, node, attrs):
    """Pad(mode constant) -> zero_pad2d (value 0, only H and W of an NCHW tensor) or pad."""
    x = b.tensor(node, node.input[0])
    rank = len(x.shape)
    mode, pads, value, axes = _pad_inputs(b, node, attrs, rank)
    if mode != "constant":
        raise b.unsupported(node, f"attribute mode={mode!r}: refq pads with a constant (mode "
                            "constant)")
    if len(pads) != 2 * len(axes):
        raise b.unsupported(node, f"pads {pads} must hold 2 entries per padded axis {axes}")
    sides = [[0, 0] for _ in range(rank)]      # per ONNX axis
    for i, a in enumerate(axes):
        sides[a] = [pads[i], pads[i + len(axes)]]
    if min(pads, default=0) < 0:
        raise b.unsupported(node, f"pads {pads}: negative pads crop; refq pads with "
                            "non-negative amounts")
    if any(sides[0]):
        raise b.unsupported(node, f"pads {pads} pad the batch axis (axis 0), which refq keeps "
                            "first and apart")
    if isinstance(x.layout, tuple):
        raise b.unsupported(node, "pads a flattened NCHW tensor; refq lets only a dense layer "
                            "read one")
    if value == 0.0 and x.layout == "nchw" and rank == 4 and not any(sides[1]):
        (t, bt), (l, r) = sides[2], sides[3]
        b.emit(node, "zero_pad2d", [x], node.output[0], {"pads": [t, bt, l, r]})
        return
    src = _onnx_axes(x)
    refq_sides = [None] * rank
    for j in range(rank):
        refq_sides[src[j]] = sides[j]
    b.emit(node, "pad", [x], node.output[0],
           {"pads": [p for side in refq_sides[1:] for p in side], "value": value})


LAYOUT_CONVERTERS = {"Transpose": _transpose, "Pad": _pad}
