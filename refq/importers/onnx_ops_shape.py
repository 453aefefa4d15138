"""ONNX operators -> refq nodes: shape-moving ops, Softmax and elementwise arithmetic
(Transpose and Pad: `onnx_ops_layout`).

    Reshape, Flatten(axis 1), Squeeze, Unsqueeze   refq reshape/flatten. The batch axis stays
        first (a target's first entry is the batch: 0, the folded batch size, or its value).
        Flatten(axis >= 2) of a tensor refq holds as it is: refq's flatten at that axis (rows
        d0·…·d(axis−1)); Flatten(axis 0), which leaves no batch axis, is refused.
        An NCHW tensor with H·W = 1 holds its values in channel order in both layouts, so any
        reshape among [N, C], [N, C, 1, 1] is a plain refq reshape. Flattening an NCHW tensor
        with H·W > 1 gives refq's NHWC-order flatten, marked ("flat", C, H, W): a following
        dense layer permutes its weight columns (exact); anything else reading it is refused.
    Concat(axis), Softmax(axis)   the ONNX axis mapped to refq's (channels-first axis 1 -> the
        last axis, spatial axis k -> k − 1: NCHW 1 -> 3, 2 -> 1, 3 -> 2); Softmax before
        opset 13 flattens from `axis` on, accepted where every axis after `axis` has size 1
        (or axis is the last).
    Add, Mul, Div (two activations)    add, multiply, divide with broadcasting (equal ranks);
        Sub(a, b) = add(a, batch_norm(b) with gamma −1, beta 0, mean 0, variance 1, eps 0).
        An operand held as ONNX's next to one held channels-last is first moved channels-last
        by a transpose (perm [0, 2, ..., r − 1, 1]), so that both hold their axes in one order.
    Add, Sub, Mul, Div with a per-channel or scalar constant c   a batch_norm with mean 0,
        variance 1, epsilon 0, i.e. y = gamma·x + beta exactly: x + c (1, c), x − c (1, −c),
        c − x (−1, c), x·c (c, 0), x / c (1/c, 0: one float rounding from ONNX's division).
    Add(x, 3) -> Clip(0, 6) -> Mul(x, ·) -> Div(·, 6)   hard_swish (the ONNX HardSwish of opset
        < 14 written out).
"""
from __future__ import annotations

import numpy as np

from ..errors import RefqError
from .onnx_fold import BATCH

__all__ = ["SHAPE_CONVERTERS", "channel_vector", "flat_permutation", "flattens_to_batch_rows",
           "nhwc_axis"]



def activation_input(b, node, slot=0, layouts=("nchw",)):
    """The activation tensor read by input `slot` of `node` (an error when it is a constant or
    not in one of `layouts`)."""
    if b.is_const(node.input[slot]):
        raise b.unsupported(node, f"input {slot} ('{node.input[slot]}') is a constant; refq "
                            "needs an activation there")
    x = b.tensor(node, node.input[slot])
    if layouts is not None and x.layout not in layouts:
        raise b.unsupported(node, f"input '{node.input[slot]}' has ONNX shape "
                            f"{list(x.onnx_shape)}; refq converts this op on NCHW "
                            "activations only")
    return x


def channel_vector(c, rank, axis, channels):
    """c as a vector of `channels` when it broadcasts against a rank-`rank` tensor along `axis`
    only (or is a scalar), else None."""
    c = np.asarray(c)
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for k, d in enumerate(shape) if k != axis) or shape[axis] not in (1, channels):
        return None
    return np.ascontiguousarray(np.broadcast_to(c.reshape(-1), (channels,)))


def flat_permutation(c, h, w):
    """p such that refq's flat index k' = (i·W + j)·C + ch reads ONNX's flat index
    p[k'] = ch·H·W + i·W + j (NHWC and NCHW flattenings of one [C, H, W] sample)."""
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def _target(b, node, attrs, x):
    """The per-sample target shape of a Reshape/Flatten/Squeeze/Unsqueeze of x (ONNX layout)."""
    shape = list(x.onnx_shape)
    op = node.op_type
    if op == "Flatten":
        return [-1]     # axis 1 (other axes: `_flatten_at`)
    if op in ("Squeeze", "Unsqueeze"):
        axes = attrs.get("axes") if b.opset < 13 else \
            (None if len(node.input) < 2 else b.const(node.input[1]))
        if axes is None:
            raise b.unsupported(node, "its axes are missing or computed at run time")
        axes = [int(a) for a in np.asarray(axes).reshape(-1)]
        rank = len(shape) + (len(axes) if op == "Unsqueeze" else 0)
        axes = sorted(a % rank for a in axes)
        if 0 in axes:
            raise b.unsupported(node, f"axes {axes} include the batch axis")
        if op == "Squeeze":
            if any(shape[a] != 1 for a in axes):
                raise b.unsupported(node, f"squeezes axes {axes} of shape {shape}, not all 1")
            return [d for k, d in enumerate(shape) if k not in axes][1:]
        for a in axes:
            shape.insert(a, 1)
        return shape[1:]
    target = attrs.get("shape") if len(node.input) < 2 else b.const(node.input[1])  # opset < 5
    if target is None:
        raise b.unsupported(node, "its target shape is computed at run time from values refq "
                            "cannot fold; give the model fixed input shapes (input_shapes=...)")
    target = [int(d) for d in np.asarray(target).reshape(-1)]
    first = target[0] if target else None
    if not (first in (0, int(BATCH)) or (first == shape[0] and first is not None)):
        raise b.unsupported(node, f"target shape {target} does not keep the batch axis first; "
                            "refq reshapes within each sample")
    rest = [shape[k + 1] if d == 0 and not attrs.get("allowzero", 0) else d
            for k, d in enumerate(target[1:])]
    if int(BATCH) in rest or any(d is None for d in rest):
        raise b.unsupported(node, f"target shape {target} depends on the batch size")
    return rest


def _resolved(size, target):
    """target with its −1 resolved for `size` values per sample (None when size is unknown)."""
    if -1 not in target or size is None:
        return target
    known = int(np.prod([d for d in target if d != -1]))
    return [size // known if d == -1 else d for d in target]


def flattens_to_batch_rows(b, node, channels) -> bool:
    """True when the Flatten/Reshape `node` turns an [N, C, 1, 1] tensor into [N, C]."""
    from .onnx_load import attributes
    try:
        target = _resolved(channels, _target(b, node, attributes(node), _One(channels)))
    except RefqError:   # a refusal means "not this pattern"; the node is converted on its own
        return False
    return target == [channels]


class _One:
    """A stand-in NCHW tensor [N, C, 1, 1] for `flattens_to_batch_rows`."""

    def __init__(self, c):
        self.onnx_shape = (None, c, 1, 1)


def _flatten_at(b, node, x, axis):
    """Flatten(axis) with axis >= 2: refq's flatten at that axis, [d0·…·d(a−1), da·…] (the batch
    axis merges into the rows); axis 0 leaves no batch axis and is refused."""
    rank = len(x.shape)
    if not -rank <= axis <= rank or axis % (rank + 1) == 0 or axis == -rank:
        raise b.unsupported(node, f"attribute axis={axis} on ONNX shape {list(x.onnx_shape)} "
                            "flattens the batch axis into the columns: refq tensors keep the "
                            "batch axis first")
    axis = axis % rank if axis < 0 else axis
    if x.layout != "same":
        raise b.unsupported(node, f"attribute axis={axis} on a channels-first tensor of ONNX "
                            f"shape {list(x.onnx_shape)}, which refq holds channels-last: the "
                            "order of the values would differ")
    b.emit(node, "flatten", [x], node.output[0], {"axis": axis}, layout="same")


def _reshape(b, index, node, attrs):
    x = b.tensor(node, node.input[0])
    if node.op_type == "Flatten" and attrs.get("axis", 1) != 1:
        return _flatten_at(b, node, x, int(attrs["axis"]))
    shape = x.onnx_shape
    size = None if any(d is None for d in shape[1:]) else int(np.prod(shape[1:]))
    target = _resolved(size, _target(b, node, attrs, x))
    if isinstance(x.layout, tuple):
        raise b.unsupported(node, "reshapes a flattened NCHW tensor; refq lets only a dense "
                            "layer read one")
    if x.layout == "nchw" and size is None:
        raise b.unsupported(node, f"reshapes an NCHW tensor of unknown shape {list(shape)}; "
                            "give the model fixed input shapes (input_shapes=...)")
    flat = node.op_type == "Flatten"
    if x.layout == "same":
        if len(shape) == 2 and len(target) == 3 and target[1] * target[2] == 1:
            b.emit(node, "reshape", [x], node.output[0], {"shape": [1, 1, target[0]]},
                   layout="nchw")
        elif flat:
            b.emit(node, "flatten", [x], node.output[0])
        else:
            b.emit(node, "reshape", [x], node.output[0], {"shape": target})
        return
    pixels = int(np.prod(shape[2:]))
    if pixels == 1 and len(target) == 1:
        b.emit(node, "flatten" if flat else "reshape", [x], node.output[0],
               {} if flat else {"shape": target}, layout="same")
        return
    if pixels == 1 and len(shape) == 4 and len(target) == 3 and target[1] * target[2] == 1:
        b.emit(node, "reshape", [x], node.output[0], {"shape": [1, 1, target[0]]})
        return
    if len(target) == 1 and len(shape) == 4:
        b.emit(node, "flatten", [x], node.output[0], layout=("flat",) + tuple(shape[1:]))
        return
    raise b.unsupported(node, f"reshapes ONNX shape {list(shape)} to [N, *{target}], which in "
                        "refq's NHWC layout needs a transpose refq does not have")


def _axis(b, node, x, axis):
    rank = len(x.shape)
    axis = axis % rank if -rank <= axis < rank else None
    if axis is None or axis == 0 or isinstance(x.layout, tuple):
        raise b.unsupported(node, f"axis {axis} of ONNX shape {list(x.onnx_shape)}: refq needs "
                            "a non-batch axis")
    return nhwc_axis(axis, rank) if x.layout == "nchw" else axis


def nhwc_axis(axis, rank):
    """refq's axis of ONNX axis `axis` (>= 1) of a channels-first tensor of rank `rank` held
    channels-last: the channel axis 1 is last, spatial axis k >= 2 is k − 1."""
    return rank - 1 if axis == 1 else axis - 1


def _concat(b, index, node, attrs):
    xs = []
    for slot, t in enumerate(node.input):
        if b.is_const(t):
            raise b.unsupported(node, f"input {slot} ('{t}') is a constant; refq concatenates "
                                "activations")
        xs.append(b.tensor(node, t))
    if len({str(x.layout) for x in xs}) != 1:
        raise b.unsupported(node, "its inputs have different layouts")
    b.emit(node, "concat", xs, node.output[0], {"axis": _axis(b, node, xs[0], attrs["axis"])})


def _softmax(b, index, node, attrs):
    x = b.tensor(node, node.input[0])
    rank = len(x.shape)
    axis = attrs.get("axis", -1 if b.opset >= 13 else 1) % rank
    if b.opset < 13 and axis != rank - 1 and any(d != 1 for d in x.onnx_shape[axis + 1:]):
        raise b.unsupported(node, f"attribute axis={axis} before opset 13 normalises over the "
                            f"flattened axes {axis}.. of {list(x.onnx_shape)}; refq's softmax "
                            "takes one axis")
    b.emit(node, "softmax", [x], node.output[0], {"axis": _axis(b, node, x, axis)})


def _affine(b, node, x, gamma, beta, output, suffix="", slot=0):
    """batch_norm computing gamma·x + beta exactly (mean 0, variance 1, epsilon 0)."""
    c = x.shape[-1]
    dtype = np.result_type(gamma, beta, np.float32)
    params = {"gamma": np.broadcast_to(gamma, (c,)).astype(dtype),
              "beta": np.broadcast_to(beta, (c,)).astype(dtype),
              "mean": np.zeros(c, dtype), "variance": np.ones(c, dtype)}
    return b.emit(node, "batch_norm", [x], output, {"epsilon": 0.0, "axis": -1}, params,
                  suffix=suffix, slots=[slot])


def _hard_swish_pattern(b, node, x_name):
    """The ONNX nodes (index, node) of Add(x, 3) -> Clip(0, 6) -> Mul(x, ·) -> Div(·, 6) after
    `node` (the Add), or None."""
    from .onnx_load import attributes
    chain, out = [], node.output[0]
    for op in ("Clip", "Mul", "Div"):
        r = b.sole_reader(out)
        if r is None or r[1].op_type != op:
            return None
        n = r[1]
        if op == "Clip":
            a = attributes(n)
            lo, hi = ((b.const(n.input[1]) if len(n.input) > 1 else None),
                      (b.const(n.input[2]) if len(n.input) > 2 else None)) if b.opset >= 11 \
                else (a.get("min"), a.get("max"))
            if lo is None or hi is None or float(np.asarray(lo)) != 0 or float(np.asarray(hi)) != 6:
                return None
        if op == "Mul" and sorted(b.resolve(t) for t in n.input) != sorted(
                [b.resolve(x_name), b.resolve(out)]):
            return None
        if op == "Div" and (b.resolve(n.input[0]) != b.resolve(out) or not b.is_const(n.input[1])
                            or np.asarray(b.const(n.input[1])).size != 1
                            or float(np.asarray(b.const(n.input[1])).reshape(())) != 6.0):
            return None
        chain.append(r)
        out = n.output[0]
    return chain


def _same_layout(b, node, xs):
    """(xs, ONNX input slot of each) with the operands refq holds as ONNX's ("same") of an
    elementwise op that also reads a channels-last one ("nchw") moved channels-last by a
    transpose (perm [0, 2, ..., r − 1, 1]), so that both hold the ONNX axes in one order; the
    slot of a moved operand is its transpose's, None for the op itself."""
    if len({x.layout for x in xs}) == 1:
        return xs, list(range(len(xs)))
    rank = len(xs[0].shape)
    perm = [0, *range(2, rank), 1]
    out, slots = [], []
    for slot, x in enumerate(xs):
        if x.layout == "same":
            x = b.emit(node, "transpose", [x], node.output[0], {"perm": perm}, layout="nchw",
                       suffix=f"/input{slot}_nhwc", slots=[slot])
            slots.append(None)
        else:
            slots.append(slot)
        out.append(x)
    return out, slots


def _arith(b, index, node, attrs):
    op = node.op_type
    consts = [b.is_const(t) for t in node.input]
    if not any(consts):
        xs = [b.tensor(node, t) for t in node.input]
        if any(isinstance(x.layout, tuple) for x in xs) or len({len(x.shape) for x in xs}) != 1:
            raise b.unsupported(node, f"inputs of ONNX shapes {[list(x.onnx_shape) for x in xs]}"
                                "; refq needs equal ranks")
        xs, slots = _same_layout(b, node, xs)
        if op == "Div":
            b.emit(node, "divide", xs, node.output[0], slots=slots)
            return
        if op == "Sub":
            neg = _affine(b, node, xs[1], -1.0, 0.0, node.output[0], suffix="/negate",
                          slot=slots[1])
            b.emit(node, "add", [xs[0], neg], node.output[0], slots=[slots[0], None])
            return
        b.emit(node, "add" if op == "Add" else "multiply", xs, node.output[0], slots=slots)
        return
    k = consts.index(False)
    x = b.tensor(node, node.input[k])
    c = np.asarray(b.const(node.input[1 - k]))
    if op == "Add" and c.size == 1 and float(c.reshape(())) == 3.0 and x.layout != "flat":
        chain = _hard_swish_pattern(b, node, node.input[k])
        if chain is not None:
            b.skip.update(i for i, _ in chain)
            b.emit(node, "hard_swish", [x], chain[-1][1].output[0], slots=[k])
            return
    if isinstance(x.layout, tuple):
        raise b.unsupported(node, "applies a constant to a flattened NCHW tensor")
    rank = len(x.shape)
    vec = channel_vector(c, rank, 1 if x.layout == "nchw" else rank - 1, x.shape[-1])
    if vec is None:
        raise b.unsupported(node, f"constant of shape {list(c.shape)} on ONNX shape "
                            f"{list(x.onnx_shape)}: refq applies scalar or per-channel "
                            "constants only")
    if op == "Div" and k == 1:
        raise b.unsupported(node, "divides a constant by an activation; refq's divide reads two "
                            "activations and constants are refq parameters")
    if op == "Div":
        with np.errstate(divide="ignore"):
            gamma, beta = 1.0 / vec.astype(np.float64), 0.0
    else:
        gamma, beta = {"Add": (1.0, vec), "Mul": (vec, 0.0),
                       "Sub": ((1.0, -vec) if k == 0 else (-1.0, vec))}[op]
    _affine(b, node, x, gamma, beta, node.output[0], slot=k)


SHAPE_CONVERTERS = {
    "Reshape": _reshape, "Flatten": _reshape, "Squeeze": _reshape, "Unsqueeze": _reshape,
    "Concat": _concat, "Softmax": _softmax,
    "Add": _arith, "Sub": _arith, "Mul": _arith, "Div": _arith,
}
