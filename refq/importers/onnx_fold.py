"""Constant folding of ONNX nodes whose inputs are all constants (shape subgraphs, reshaped
biases, cast scalars), evaluated with NumPy in the file's NCHW layout.

Folded ops and their definitions (ONNX operator pages):
    Shape(x)                 the declared shape of an activation x, in ONNX layout; a free batch
                             dimension becomes the marker BATCH (any other free dimension refuses)
    Identity, Cast(to)       y = x, y = x as dtype `to`
    Reshape(x, s)            0 in s copies x's dimension (allowzero = 0), one −1 is inferred
    Unsqueeze, Squeeze       axes from the attribute (opset < 13) or the second input
    Concat(axis), Gather(axis), Slice(starts, ends, axes, steps), Transpose(perm)
    Add, Sub, Mul, Div       NumPy broadcasting; integer Div truncates toward zero (C semantics)
    Neg, Sqrt, Reciprocal    elementwise
    DequantizeLinear(x, s, zp, axis)   y = (x − zp)·s in float32 (per-axis s, zp on `axis`)
An arithmetic op on a shape holding BATCH refuses: the result would depend on the batch size.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedLayerError

__all__ = ["BATCH", "FOLDABLE", "fold", "dequantize_linear"]

#: The value a free batch dimension takes in a folded shape (recognised by Reshape).
BATCH = np.int64(-(2 ** 40))

FOLDABLE = ("Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Concat", "Gather", "Slice",
            "Transpose", "Add", "Sub", "Mul", "Div", "Neg", "Sqrt", "Reciprocal",
            "DequantizeLinear")


def dequantize_linear(x, scale, zero_point=None, axis=1):
    """y = (x − zero_point)·scale, the integer difference exact, one float32 rounding; a 1-d
    scale (and zero point) applies along `axis` of x."""
    x = np.asarray(x).astype(np.int64)
    scale = np.asarray(scale, dtype=np.float32)
    zp = np.zeros(scale.shape, np.int64) if zero_point is None else \
        np.asarray(zero_point).astype(np.int64)
    if scale.ndim == 1 and x.ndim > 0:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = scale.shape[0]
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (x - zp).astype(np.float32) * scale


def _axes(node_attrs, inputs, opset):
    if opset >= 13 and len(inputs) > 1:
        return [int(a) for a in np.asarray(inputs[1]).reshape(-1)]
    return list(node_attrs.get("axes", []))


def fold(op_type, inputs, attrs, opset, where):
    """The value of node `op_type` on constant `inputs` (see the module docstring)."""
    x = inputs[0]

    def no_batch():
        if any(np.asarray(v).dtype.kind == "i" and np.any(np.asarray(v) == BATCH)
               for v in inputs if v is not None):
            raise UnsupportedLayerError(f"{where}: computes with the free batch size; give the "
                                        "model a fixed batch size (input_shapes=...)")
    if op_type == "Identity":
        return x
    if op_type == "Cast":
        from .onnx_load import onnx_module
        return x.astype(onnx_module().helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op_type == "Reshape":
        target = [int(d) for d in np.asarray(inputs[1]).reshape(-1)]
        target = [x.shape[i] if d == 0 and not attrs.get("allowzero", 0) else d
                  for i, d in enumerate(target)]
        return x.reshape(target)
    if op_type == "Unsqueeze":
        y = x
        for a in sorted(a % (x.ndim + len(_axes(attrs, inputs, opset)))
                        for a in _axes(attrs, inputs, opset)):
            y = np.expand_dims(y, a)
        return y
    if op_type == "Squeeze":
        axes = _axes(attrs, inputs, opset)
        return np.squeeze(x, axis=tuple(axes)) if axes else np.squeeze(x)
    if op_type == "Concat":
        return np.concatenate([np.asarray(v) for v in inputs], axis=attrs.get("axis", 0))
    if op_type == "Gather":
        return np.take(x, np.asarray(inputs[1]).astype(np.int64), axis=attrs.get("axis", 0))
    if op_type == "Slice":
        if opset >= 10:
            starts, ends = (np.asarray(v).reshape(-1).tolist() for v in inputs[1:3])
            axes = np.asarray(inputs[3]).reshape(-1).tolist() if len(inputs) > 3 and \
                inputs[3] is not None else list(range(len(starts)))
            steps = np.asarray(inputs[4]).reshape(-1).tolist() if len(inputs) > 4 and \
                inputs[4] is not None else [1] * len(starts)
        else:
            starts, ends = attrs["starts"], attrs["ends"]
            axes = attrs.get("axes", list(range(len(starts))))
            steps = [1] * len(starts)
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            index[a] = slice(int(s), int(e), int(st))
        return x[tuple(index)]
    if op_type == "Transpose":
        return np.transpose(x, attrs.get("perm"))
    if op_type in ("Add", "Sub", "Mul", "Div"):
        no_batch()
        a, b = np.asarray(inputs[0]), np.asarray(inputs[1])
        if op_type == "Div" and a.dtype.kind in "iu":
            return (np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))).astype(a.dtype)
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                "Div": np.divide}[op_type](a, b).astype(a.dtype)
    if op_type in ("Neg", "Sqrt", "Reciprocal"):
        no_batch()
        return {"Neg": np.negative, "Sqrt": np.sqrt, "Reciprocal": np.reciprocal}[op_type](x)
    if op_type == "DequantizeLinear":
        return dequantize_linear(x, inputs[1], inputs[2] if len(inputs) > 2 else None,
                                 attrs.get("axis", 1))
    raise AssertionError(op_type)
