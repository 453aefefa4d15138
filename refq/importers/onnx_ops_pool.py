"""ONNX pooling operators -> refq pooling nodes (a part of `onnx_ops.CONVERTERS`).

    MaxPool, AveragePool   on a channels-first tensor of 1, 2 or 3 spatial axes (NCL, NCHW,
        NCDHW; held channels-last): max_pool{r}d / avg_pool{r}d with every ONNX attribute:
        kernel_shape, strides, dilations, ceil_mode, count_include_pad (AveragePool), pads
        ([b0, b1, ..., e0, e1, ...] -> refq's per axis [b0, e0, b1, e1, ...]), auto_pad
        (SAME_UPPER -> "same", SAME_LOWER -> "same_lower", VALID -> "valid"); the window
        geometry is `refq.layers.pool_geometry`'s, which follows ONNX's.
    MaxPool's Indices output   max_pool{r}d_indices with the same attributes and storage_order
        (0 row-major, 1 column-major spatial positions).
        ONNX's index of batch element n is n·C·Π(spatial) plus the index within the image;
        refq's index is the index within the image. Both agree at batch size 1, so the output
        is imported when the batch size is fixed at 1 (input_shapes=...) and refused otherwise.
    GlobalAveragePool, GlobalMaxPool   global_avg_pool2d / global_max_pool2d (NCHW), keepdims;
        followed by a Flatten or Reshape to [N, C], one node without keepdims.
"""
from __future__ import annotations

from .onnx_ops_shape import activation_input as _act

__all__ = ["POOL_CONVERTERS"]


def _ints(b, node, attrs, key, default, r):
    v = [int(t) for t in attrs.get(key, default)]
    if len(v) != r:
        raise b.unsupported(node, f"attribute {key}={v}: expected {r} values (one per spatial "
                            "axis)")
    return v


def _pool_window(b, node, attrs, r):
    """(padding, pads) of refq's rank-r pooling from ONNX auto_pad / pads: SAME_UPPER -> "same",
    SAME_LOWER -> "same_lower", VALID or no pads -> "valid", else "explicit" with ONNX's
    [b0, b1, ..., e0, e1, ...] reordered per axis to [b0, e0, b1, e1, ...]."""
    auto = attrs.get("auto_pad", "NOTSET")
    zeros = [0] * (2 * r)
    if auto in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        return {"SAME_UPPER": "same", "SAME_LOWER": "same_lower", "VALID": "valid"}[auto], zeros
    if auto != "NOTSET":
        raise b.unsupported(node, f"attribute auto_pad={auto!r} is not an ONNX value")
    p = [int(v) for v in attrs.get("pads", zeros)]
    if len(p) != 2 * r or min(p) < 0:
        raise b.unsupported(node, f"attribute pads={p}: refq needs {2 * r} non-negative pads")
    if not any(p):
        return "valid", zeros
    return "explicit", [p[j + k * r] for j in range(r) for k in (0, 1)]


def _pool(b, index, node, attrs):
    """MaxPool / AveragePool of rank r = 1, 2, 3 -> max_pool{r}d / avg_pool{r}d with every
    attribute; MaxPool's Indices output -> max_pool{r}d_indices (module docstring)."""
    x = _act(b, node)
    r = len(x.shape) - 2
    if r not in (1, 2, 3):
        raise b.unsupported(node, f"input of ONNX shape {list(x.onnx_shape)}: refq pools 1, 2 "
                            "or 3 spatial axes")
    if "kernel_shape" not in attrs:
        raise b.unsupported(node, "attribute kernel_shape is missing")
    a = {"pool_size": _ints(b, node, attrs, "kernel_shape", [], r),
         "strides": _ints(b, node, attrs, "strides", [1] * r, r),
         "dilations": _ints(b, node, attrs, "dilations", [1] * r, r),
         "ceil_mode": bool(attrs.get("ceil_mode", 0))}
    a["padding"], a["pads"] = _pool_window(b, node, attrs, r)
    if node.op_type == "AveragePool":
        a["count_include_pad"] = bool(attrs.get("count_include_pad", 0))
        b.emit(node, f"avg_pool{r}d", [x], node.output[0], a)
        return
    b.emit(node, f"max_pool{r}d", [x], node.output[0], a)
    indices = node.output[1] if len(node.output) > 1 else ""
    if indices and (b.readers(indices) or indices in b.model.outputs):
        order = int(attrs.get("storage_order", 0))
        if order not in (0, 1):
            raise b.unsupported(node, f"attribute storage_order={order}: ONNX defines 0 "
                                "(row-major) and 1 (column-major)")
        if x.shape[0] != 1:
            raise b.unsupported(node, f"its Indices output '{indices}' counts batch element n "
                                "as n·C·(spatial size) on top of the index within the image, "
                                "which refq's max_pool indices leave out: refq imports it with a "
                                "batch size fixed at 1 (input_shapes={...: [1, ...]})")
        b.emit(node, f"max_pool{r}d_indices", [x], indices, {**a, "storage_order": order})


def _global_pool(b, index, node, attrs):
    x = _act(b, node)
    if len(x.shape) != 4:
        raise b.unsupported(node, f"input of ONNX shape {list(x.onnx_shape)}: refq's global "
                            "pools take NCHW tensors")
    op = "global_avg_pool2d" if node.op_type == "GlobalAveragePool" else "global_max_pool2d"
    r = b.sole_reader(node.output[0])
    if r is not None and r[1].op_type in ("Flatten", "Reshape"):
        from .onnx_ops_shape import flattens_to_batch_rows
        if flattens_to_batch_rows(b, r[1], x.shape[3]):
            b.skip.add(r[0])
            b.emit(node, op, [x], r[1].output[0], {"keepdims": False}, layout="same")
            return
    b.emit(node, op, [x], node.output[0], {"keepdims": True})


POOL_CONVERTERS = {"MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool,
                   "GlobalMaxPool": _global_pool}
