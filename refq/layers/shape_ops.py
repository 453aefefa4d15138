"""Ops that move values without arithmetic: concat, flatten, reshape, zero_pad2d, identity,
gather_channels, transpose, pad.

| op         | definition                                                      | attributes                  |
|------------|-----------------------------------------------------------------|-----------------------------|
| concat     | y = x_0 ‖ x_1 ‖ ... along `axis` (not the batch axis)           | axis (−1)                   |
| flatten    | x read in C order into [Π dims[:axis], Π dims[axis:]] (ONNX)    | axis (1; 1 <= axis <= rank) |
| reshape    | y[n] = x[n] read in C order into `shape` (one entry may be −1)  | shape (without batch)       |
| zero_pad2d | y[n, i+top, j+left, c] = x[n, i, j, c], zeros elsewhere (NHWC)  | pads [top, bottom, left, right] |
| identity   | y = x (Dropout, noise and regularisation layers at inference)   |                             |
| gather_channels | y[..., k] = x[..., indices[k]] (the channels kept, in order) | indices (distinct, in range) |
| pad        | y[n, i + b] = x[n, i] per non-batch axis, `value` elsewhere     | pads [b_1, e_1, ...], value |
| transpose  | y[n, j] = x[n, i], j_k = i_{p[k]}; y.shape[k] = x.shape[p[k]]   | perm p (p[0] = 0)           |

Flatten and reshape act on NHWC data, so they agree with Keras `Flatten`/`Reshape` with
channels_last. flatten with axis = 1 (the default) is y[n, k] = x[n, i, j, c], k the row-major
index; with axis a > 1 (ONNX Flatten) the leading axis of y is N·Π dims[1:a], rows in batch order,
so a run cut into batch chunks concatenates them correctly. A negative axis counts from the end
(axis + rank). axis 0 (ONNX's [1, N·...], the whole batch in one row) is refused: it mixes the
batch, which refq cuts into chunks.
pad pads every non-batch axis k (1..r−1, in refq's axis order: NHWC for images) with b_k entries
of `value` before and e_k after (pads [b_1, e_1, b_2, e_2, ...], each >= 0, value 0.0 by
default); y.shape[k] = x.shape[k] + b_k + e_k. zero_pad2d is pad with value 0 on H and W.
transpose is np.transpose(x, p) for a permutation p of 0..r−1 with p[0] = 0: it permutes the
non-batch axes only, keeping the batch axis first (a permutation moving it would mix images refq
runs in separate chunks).
Errors: ShapeError when sizes do not agree, the axis is out of range, perm is not a
permutation of the input's axes keeping axis 0 first, or pad's pads do not hold 2 entries per
non-batch axis.

VJPs: each op only moves values, so its VJP moves gy back (all are linear: no kinks).

| op         | ∂L/∂x                                                                      |
|------------|----------------------------------------------------------------------------|
| concat     | ∂L/∂x_k = gy[..., o_k : o_k + size_k, ...] on `axis`, o_k = Σ_{j<k} size_j |
| flatten    | gy[n] read in C order into x[n]'s shape                                    |
| reshape    | gy[n] read in C order into x[n]'s shape                                    |
| zero_pad2d | gy[n, top : top + H, left : left + W, c] (the constant padding gets none)  |
| pad        | gy[n, b_1 : b_1 + d_1, ..., b_k : b_k + d_k], d_k = x.shape[k] (value: none) |
| identity   | gy                                                                         |
| gather_channels | zeros of x's shape, gy[..., k] placed at channel indices[k]           |
| transpose  | gy transposed by the inverse permutation q (q[p[k]] = k)                   |

Each gradient is a new C-contiguous array, never gy or a view of it.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .base import Attr, Op, Traits


def _concat_axis(in_shapes, attrs):
    rank = len(in_shapes[0])
    axis = attrs["axis"]
    if not -rank <= axis < rank or axis % rank == 0:
        raise ShapeError(f"concat axis {axis} is not a non-batch axis of a rank-{rank} tensor")
    return axis % rank


def _concat_shape(in_shapes, attrs, params):
    if len({len(s) for s in in_shapes}) != 1:
        raise ShapeError(f"concat inputs have different ranks: {[list(s) for s in in_shapes]}")
    axis = _concat_axis(in_shapes, attrs)
    out = list(in_shapes[0])
    for s in in_shapes[1:]:
        for d, (a, b) in enumerate(zip(out, s)):
            if d != axis and a is not None and b is not None and a != b:
                raise ShapeError(f"concat on axis {axis}: shapes {[list(s) for s in in_shapes]} "
                                 f"differ on axis {d}")
    sizes = [s[axis] for s in in_shapes]
    out[axis] = None if None in sizes else sum(sizes)
    return tuple(out)


def _flatten_axis(shape, attrs):
    """flatten's axis in 1..rank (a negative one counted from the end); ShapeError otherwise."""
    rank, axis = len(shape), attrs["axis"]
    a = axis + rank if axis < 0 else axis
    if not 1 <= a <= rank:
        raise ShapeError(f"flatten axis {axis} of a rank-{rank} input must be in 1..{rank} (or "
                         f"{1 - rank}..-1); axis 0 would put the whole batch in one row, which "
                         "refq, running the batch in chunks, does not support")
    return a


def _prod(dims):
    return None if None in dims else int(np.prod(dims, dtype=np.int64))


def _flatten_shape(in_shapes, attrs, params):
    shape = tuple(in_shapes[0])
    a = _flatten_axis(shape, attrs)
    return (_prod(shape[:a]), _prod(shape[a:]))


def _reshape_shape(in_shapes, attrs, params):
    target = list(attrs["shape"])
    rest = in_shapes[0][1:]
    if target.count(-1) > 1 or any(d == 0 or d < -1 for d in target):
        raise ShapeError(f"reshape target {target} may hold positive sizes and at most one -1")
    if None in rest:
        return (in_shapes[0][0], *[None if d == -1 else d for d in target])
    size = int(np.prod(rest, dtype=np.int64))
    known = int(np.prod([d for d in target if d != -1], dtype=np.int64))
    if -1 in target:
        if size % known:
            raise ShapeError(f"cannot reshape {list(rest)} ({size} values) to {target}")
        target[target.index(-1)] = size // known
    elif known != size:
        raise ShapeError(f"cannot reshape {list(rest)} ({size} values) to {target} ({known} values)")
    return (in_shapes[0][0], *target)


def _reshape(inputs, params, attrs):
    x = inputs[0]
    # the -1 is resolved from the per-sample shape so that an empty batch (N = 0) works too
    target = _reshape_shape([x.shape], attrs, {})[1:]
    return x.reshape((x.shape[0], *target))


def _flatten(inputs, params, attrs):
    x = inputs[0]
    a = _flatten_axis(x.shape, attrs)
    # the sizes from the shape (not -1) so that an empty batch (N = 0) works too
    return x.reshape(_prod(x.shape[:a]), _prod(x.shape[a:]))


def _pad_shape(in_shapes, attrs, params):
    s = in_shapes[0]
    if len(s) != 4:
        raise ShapeError(f"zero_pad2d needs an NHWC input, got shape {list(s)}")
    top, bottom, left, right = attrs["pads"]
    if min(attrs["pads"]) < 0:
        raise ShapeError(f"zero_pad2d pads must be >= 0, got {attrs['pads']}")
    grow = lambda d, a, b: None if d is None else d + a + b  # noqa: E731
    return (s[0], grow(s[1], top, bottom), grow(s[2], left, right), s[3])


def _pad(inputs, params, attrs):
    top, bottom, left, right = attrs["pads"]
    x = inputs[0]
    n, h, w, c = x.shape
    y = np.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
    y[:, top:top + h, left:left + w, :] = x
    return y


def _pad_vjp(inputs, params, attrs, y, gy):
    """∂L/∂x = gy cropped to the window x occupies in y (module docstring)."""
    top, _, left, _ = attrs["pads"]
    x = inputs[0]
    _, h, w, _ = x.shape
    window = gy[:, top:top + h, left:left + w, :]
    return [np.array(window, dtype=x.dtype, order="C")], {}


def _check_pads(shape, pads):
    """pads after checking it holds 2 entries per non-batch axis of `shape`; ShapeError."""
    if len(pads) != 2 * (len(shape) - 1):
        raise ShapeError(f"pad: pads {list(pads)} must hold 2 entries (before, after) per "
                         f"non-batch axis of the input of shape {list(shape)}: "
                         f"{2 * (len(shape) - 1)} entries")
    return [(pads[2 * k], pads[2 * k + 1]) for k in range(len(shape) - 1)]


def _general_pad_shape(in_shapes, attrs, params):
    shape = tuple(in_shapes[0])
    sides = _check_pads(shape, attrs["pads"])
    return (shape[0], *[None if d is None else d + b + e for d, (b, e) in zip(shape[1:], sides)])


def _window_of(x_shape, sides):
    return (slice(None),) + tuple(slice(b, b + d) for d, (b, _) in zip(x_shape[1:], sides))


def _general_pad(inputs, params, attrs):
    x = inputs[0]
    sides = _check_pads(x.shape, attrs["pads"])
    y = np.full(_general_pad_shape([x.shape], attrs, params), attrs["value"], dtype=x.dtype)
    y[_window_of(x.shape, sides)] = x
    return y


def _general_pad_vjp(inputs, params, attrs, y, gy):
    """∂L/∂x = gy cropped to the window x occupies in y (module docstring)."""
    x = inputs[0]
    window = gy[_window_of(x.shape, _check_pads(x.shape, attrs["pads"]))]
    return [np.array(window, dtype=x.dtype, order="C")], {}


def _concat_vjp(inputs, params, attrs, y, gy):
    """∂L/∂x_k = the slice of gy that x_k occupies along `axis` (module docstring)."""
    axis = attrs["axis"]
    ends = np.cumsum([x.shape[axis] for x in inputs])[:-1]
    return [np.array(g, dtype=x.dtype, order="C")
            for x, g in zip(inputs, np.split(gy, ends, axis=axis))], {}


def _reshape_vjp(inputs, params, attrs, y, gy):
    """∂L/∂x = gy read in C order into x's shape (flatten and reshape; module docstring)."""
    x = inputs[0]
    return [np.array(gy.reshape(x.shape), dtype=x.dtype, order="C")], {}


def _gather_shape(in_shapes, attrs, params):
    shape, idx = tuple(in_shapes[0]), list(attrs["indices"])
    c = shape[-1]
    if len(shape) < 2 or not idx or len(set(idx)) != len(idx) \
            or (c is not None and max(idx) >= c):
        raise ShapeError(f"gather_channels: indices {idx} must be distinct channels of the last "
                         f"axis of {list(shape)} (at least one)")
    return shape[:-1] + (len(idx),)


def _gather(inputs, params, attrs):
    return np.ascontiguousarray(inputs[0][..., list(attrs["indices"])])


def _gather_vjp(inputs, params, attrs, y, gy):
    """∂L/∂x: zeros, with gy[..., k] at channel indices[k] (module docstring)."""
    x = inputs[0]
    gx = np.zeros(x.shape, x.dtype)
    gx[..., list(attrs["indices"])] = gy
    return [gx], {}


def _check_perm(shape, perm):
    """perm as a list after checking it permutes the axes of a rank-len(shape) tensor with
    perm[0] = 0 (module docstring); ShapeError otherwise."""
    rank, perm = len(shape), list(perm)
    if sorted(perm) != list(range(rank)):
        raise ShapeError(f"transpose: perm {perm} is not a permutation of the axes 0..{rank - 1} "
                         f"of an input of shape {list(shape)}")
    if perm[0] != 0:
        raise ShapeError(f"transpose: perm {perm} moves the batch axis 0, which refq keeps first; "
                         "permute the non-batch axes only (perm[0] = 0)")
    return perm


def _transpose_shape(in_shapes, attrs, params):
    shape = tuple(in_shapes[0])
    return tuple(shape[k] for k in _check_perm(shape, attrs["perm"]))


def _transpose(inputs, params, attrs):
    x = inputs[0]
    return np.ascontiguousarray(np.transpose(x, _check_perm(x.shape, attrs["perm"])))


def _transpose_vjp(inputs, params, attrs, y, gy):
    """∂L/∂x = gy transposed by the inverse permutation (module docstring)."""
    x = inputs[0]
    inverse = np.argsort(_check_perm(x.shape, attrs["perm"]))
    return [np.array(np.transpose(gy, inverse), dtype=x.dtype, order="C")], {}


def _identity_vjp(inputs, params, attrs, y, gy):
    """∂L/∂x = gy (a copy)."""
    return [np.array(gy, dtype=inputs[0].dtype, order="C")], {}


OPS = [
    Op("concat", lambda xs, p, a: np.concatenate(xs, axis=a["axis"]), _concat_shape,
       num_inputs=(1, None), attrs={"axis": Attr("int", -1)}, vjp=_concat_vjp,
       traits=Traits("Concat", lowering="concat")),
    Op("flatten", _flatten, _flatten_shape, attrs={"axis": Attr("int", 1)}, vjp=_reshape_vjp,
       traits=Traits("Flatten", grid_preserving=True, lowering="grid")),
    Op("reshape", _reshape, _reshape_shape, attrs={"shape": Attr("ints")}, vjp=_reshape_vjp,
       traits=Traits("Reshape", grid_preserving=True, lowering="grid")),
    Op("zero_pad2d", _pad, _pad_shape, attrs={"pads": Attr("ints", (0, 0, 0, 0), length=4)},
       vjp=_pad_vjp,
       traits=Traits("Pad", grid_preserving=True, cle_transparent=True, lowering="grid")),
    Op("pad", _general_pad, _general_pad_shape,
       attrs={"pads": Attr("ints", minimum=0), "value": Attr("float", 0.0)},
       vjp=_general_pad_vjp, traits=Traits("Pad")),
    Op("gather_channels", _gather, _gather_shape,
       attrs={"indices": Attr("ints", minimum=0)}, vjp=_gather_vjp,
       traits=Traits("Gather", grid_preserving=True, lowering="grid")),
    Op("transpose", _transpose, _transpose_shape, attrs={"perm": Attr("ints", minimum=0)},
       vjp=_transpose_vjp,
       traits=Traits("Transpose", grid_preserving=True, lowering="grid")),
    Op("identity", lambda xs, p, a: xs[0], lambda s, a, p: tuple(s[0]), vjp=_identity_vjp,
       traits=Traits("Identity", grid_preserving=True, cle_transparent=True, lowering="grid")),
]
