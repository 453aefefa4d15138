"""add, multiply and divide: elementwise with NumPy broadcasting.

Definition
    add:      y = x_0 + x_1 + ... + x_{k−1}
    multiply: y = x_0 · x_1 · ... · x_{k−1}
    divide:   y = x_0 / x_1   (two inputs; ONNX Div of floats)
    divide follows IEEE 754 as NumPy computes it, without warnings: x / 0 = ±inf for x ≠ 0,
    0 / 0 = NaN (ONNX's float Div; its integer Div is not a float op).
    Inputs broadcast as NumPy does (trailing axes aligned, size-1 axes stretched), e.g. the
    squeeze-excitation product of (N, H, W, C) and (N, 1, 1, C). The batch axis must agree.
Shapes
    x_i: broadcast-compatible, same rank; y: the broadcast shape.
Errors
    ShapeError when the shapes do not broadcast or ranks differ.
VJP (`_add_vjp`, `_multiply_vjp`, `_divide_vjp`)
    add:      ∂L/∂x_i = sum_to(x_i.shape, gy)
    multiply: ∂L/∂x_i = sum_to(x_i.shape, gy · Π_{j≠i} x_j)
    divide:   ∂L/∂x_0 = sum_to(x_0.shape, gy / x_1),
              ∂L/∂x_1 = sum_to(x_1.shape, −gy · y / x_1)   (y = x_0 / x_1; PyTorch's div
              backward: −grad·(self/other)/other); at x_1 = 0 these are IEEE's ±inf or NaN.
    where sum_to sums gy over the axes x_i was stretched along (its size-1 axes, and any leading
    axes it lacks) back to x_i's shape. Π_{j≠i} x_j is a product of the other inputs (prefix
    and suffix products), never y / x_i, so a zero x_i is exact: its own gradient is
    gy·Π_{j≠i} x_j (y / x_i would be 0/0) and the others' are 0 there. An infinite x_j makes the
    other inputs' gradients infinite there, or NaN where a third input is 0 (0·inf), while its
    own gradient stays finite: the product rule ∂L/∂a = gy·b of PyTorch's mul gives the same
    values. add's gradients do not depend on the inputs. The ops are smooth where defined (divide
    away from x_1 = 0): no kinks. Each gradient is a new array, never gy.
Integer lowering
    add and multiply: the "binary" family. divide has none (no integer kernel divides two
    activations): lowering a graph with one is a FixedPointError naming the node.
"""
from __future__ import annotations

from functools import reduce

import numpy as np

from ..errors import ShapeError
from .base import Op, Traits


def broadcast_shape(in_shapes):
    """The broadcast of shapes with a free (None) batch axis; ShapeError when incompatible."""
    ranks = {len(s) for s in in_shapes}
    if len(ranks) != 1:
        raise ShapeError(f"inputs have different ranks: {[list(s) for s in in_shapes]}")
    out = []
    for dims in zip(*in_shapes):
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ShapeError(f"shapes {[list(s) for s in in_shapes]} do not broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def _infer(in_shapes, attrs, params):
    return broadcast_shape(in_shapes)


def _macs(in_shapes, out_shape, attrs, params):
    if None in out_shape[1:]:
        return 0  # a free non-batch axis: unknown per-element count (as batch_norm counts it)
    n = int(np.prod(out_shape[1:], dtype=np.int64))
    return n * (len(in_shapes) - 1)


def sum_to(g, shape):
    """g summed over the axes that broadcasting stretched an operand of `shape` along (the
    leading axes g has beyond len(shape), and the axes of size 1 in `shape`), as an array of
    `shape`."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + d for d, n in enumerate(shape) if n == 1)
    if axes:
        g = np.sum(g, axis=axes, keepdims=True)
    return g.reshape(shape)


def _add_vjp(inputs, params, attrs, y, gy):
    """∂L/∂x_i = sum_to(x_i.shape, gy) (module docstring)."""
    return [sum_to(gy, x.shape).astype(x.dtype) for x in inputs], {}


def _multiply_vjp(inputs, params, attrs, y, gy):
    """∂L/∂x_i = sum_to(x_i.shape, gy · Π_{j≠i} x_j), the product of the others built from
    prefix products x_0···x_{i−1} and suffix products x_{i+1}···x_{k−1} (module docstring)."""
    k = len(inputs)
    prefix, suffix = [None] * k, [None] * k
    for i in range(1, k):
        prefix[i] = inputs[0] if i == 1 else prefix[i - 1] * inputs[i - 1]
        j = k - 1 - i
        suffix[j] = inputs[k - 1] if i == 1 else suffix[j + 1] * inputs[j + 1]
    grads = []
    for i, x in enumerate(inputs):
        others = [p for p in (prefix[i], suffix[i]) if p is not None]
        g = gy * (others[0] if len(others) == 1 else others[0] * others[1])
        grads.append(sum_to(g, x.shape).astype(x.dtype, copy=False))
    return grads, {}


def _divide(inputs, params, attrs):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.divide(inputs[0], inputs[1])


def _divide_vjp(inputs, params, attrs, y, gy):
    """∂L/∂x_0 = sum_to(gy / x_1), ∂L/∂x_1 = sum_to(−gy · y / x_1) (module docstring)."""
    a, c = inputs
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ga = np.divide(gy, c)
        gc = np.negative(gy) * np.divide(y, c)
    return [sum_to(ga, a.shape).astype(a.dtype, copy=False),
            sum_to(gc, c.shape).astype(c.dtype, copy=False)], {}


OPS = [
    Op("add", lambda xs, p, a: reduce(np.add, xs), _infer, num_inputs=(2, None), vjp=_add_vjp,
       traits=Traits("Add", takes_activation=True, lowering="binary")),
    Op("multiply", lambda xs, p, a: reduce(np.multiply, xs), _infer, num_inputs=(2, None),
       macs=_macs, vjp=_multiply_vjp,
       traits=Traits("Mul", takes_activation=True, lowering="binary")),
    Op("divide", _divide, _infer, num_inputs=2, macs=_macs, vjp=_divide_vjp,
       traits=Traits("Div")),
]
