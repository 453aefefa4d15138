"""ONNX operators -> refq float nodes: convolutions, pooling, dense layers, normalisation and
activations. Shape-moving and arithmetic ops are in `onnx_ops_shape`; `CONVERTERS` holds both.

Each converter `f(builder, index, node, attrs)` reads the ONNX operator's definition (onnx.ai
operator pages, opsets 7..21) and emits the refq op computing the same values:
    Conv            conv2d; OIHW weight -> OHWI; group = C with [C·m, 1, kh, kw] is refq's
                    depthwise form [C·m, kh, kw, 1]; pads [t, l, b, r] -> [t, b, l, r];
                    auto_pad VALID -> valid, SAME_UPPER -> same (the extra row at the end,
                    TensorFlow's rule), SAME_LOWER -> explicit pads with the extra row first
                    (needs known H, W).
                    A following Add of a per-channel constant becomes the bias.
    Gemm, MatMul    dense with weight [out, in] (Gemm: alpha·B, beta·C; transA = 0); reading the
                    NCHW flattening of an NCHW tensor, its columns are permuted (onnx_graph).
                    A following Add of a constant [out] becomes the bias.
    BatchNormalization   batch_norm with the file's epsilon (default 1e-5) on the channel axis.
    MaxPool, AveragePool max_pool2d, avg_pool2d (count_include_pad = 0, or 1 without padding;
                    ceil_mode = 1 only where it gives the same size; dilations 1).
    GlobalAveragePool    global_avg_pool2d, keepdims; followed by a Flatten or Reshape to
                    [N, C] it is one global_avg_pool2d without keepdims.
    Relu, Sigmoid, Tanh, Softmax, LeakyRelu(alpha 0.01), HardSigmoid(alpha 0.2, beta 0.5),
    HardSwish, Identity, Dropout (inference: identity)   the refq op of the same definition.
    Clip            bounds from inputs (opset >= 11) or attributes: [0, 6] -> relu6, [0, none] ->
                    relu, else clip (a missing or infinite bound is ±float64 max, which differs
                    from no bound only for infinite inputs).
Anything else, or an attribute value refq lacks, is an UnsupportedLayerError naming the file,
node, op type and attribute.
"""
from __future__ import annotations

import numpy as np

from .onnx_ops_shape import SHAPE_CONVERTERS, channel_vector, flat_permutation

__all__ = ["CONVERTERS"]

_F64_MAX = float(np.finfo(np.float64).max)


def _act(b, node, slot=0, layouts=("nchw",)):
    if b.is_const(node.input[slot]):
        raise b.unsupported(node, f"input {slot} ('{node.input[slot]}') is a constant; refq "
                            "needs an activation there")
    x = b.tensor(node, node.input[slot])
    if layouts is not None and x.layout not in layouts:
        raise b.unsupported(node, f"input '{node.input[slot]}' has ONNX shape "
                            f"{list(x.onnx_shape)}; refq converts this op on NCHW "
                            "activations only")
    return x


def _const_input(b, node, slot, what):
    if len(node.input) <= slot or not node.input[slot]:
        return None
    v = b.const(node.input[slot])
    if v is None:
        raise b.unsupported(node, f"its {what} (input {slot}, '{node.input[slot]}') is computed "
                            "at run time; refq needs it to be a constant of the file")
    return v


def _pairs(b, node, attrs, key, default):
    v = list(attrs.get(key, default))
    if len(v) != 2:
        raise b.unsupported(node, f"attribute {key}={v}: refq converts 2-D operations only")
    return v


def _window(b, node, attrs, x, kernel, strides, dilations):
    """(padding, pads) of refq from ONNX auto_pad / pads (module docstring)."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return "valid", [0, 0, 0, 0]
    if auto == "SAME_UPPER":
        return "same", [0, 0, 0, 0]
    if auto == "SAME_LOWER":
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            raise b.unsupported(node, "auto_pad=SAME_LOWER on an input of unknown height or "
                                "width; give the model fixed input shapes (input_shapes=...)")
        pads = []
        for n, k, s, d in zip((h, w), kernel, strides, dilations):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            pads += [total - total // 2, total // 2]
        return "explicit", pads
    if auto != "NOTSET":
        raise b.unsupported(node, f"attribute auto_pad={auto!r} is not an ONNX value")
    p = list(attrs.get("pads", [0, 0, 0, 0]))
    if len(p) != 4 or min(p) < 0:
        raise b.unsupported(node, f"attribute pads={p}: refq needs 4 non-negative pads")
    t, l, bt, r = p
    return ("valid", [0, 0, 0, 0]) if not any(p) else ("explicit", [t, bt, l, r])


def fuse_bias_add(b, out_name, channels, layout, rank):
    """(bias vector, ONNX output name) when the one reader of `out_name` is an Add of a constant
    that is per channel (length `channels`), else (None, out_name); marks the Add converted."""
    r = b.sole_reader(out_name)
    if r is None or r[1].op_type != "Add":
        return None, out_name
    index, add = r
    other = [t for t in add.input if b.resolve(t) != b.resolve(out_name)]
    if len(other) != 1 or not b.is_const(other[0]):
        return None, out_name
    axis = 1 if layout == "nchw" else rank - 1
    vec = channel_vector(b.const(other[0]), rank, axis, channels)
    if vec is None:
        return None, out_name
    b.skip.add(index)
    return vec, add.output[0]


def _conv(b, index, node, attrs):
    x = _act(b, node)
    w = _const_input(b, node, 1, "weight")
    if w.ndim != 4:
        raise b.unsupported(node, f"weight of shape {list(w.shape)}: refq converts 2-D "
                            "convolutions (OIHW weights) only")
    o, cg, kh, kw = w.shape
    if list(attrs.get("kernel_shape", [kh, kw])) != [kh, kw]:
        raise b.unsupported(node, f"attribute kernel_shape={attrs['kernel_shape']} differs from "
                            f"the weight's {[kh, kw]}")
    strides = _pairs(b, node, attrs, "strides", [1, 1])
    dilations = _pairs(b, node, attrs, "dilations", [1, 1])
    padding, pads = _window(b, node, attrs, x, (kh, kw), strides, dilations)
    params = {"weight": np.ascontiguousarray(w.transpose(0, 2, 3, 1))}
    bias = _const_input(b, node, 2, "bias")
    extra, out = fuse_bias_add(b, node.output[0], o, "nchw", 4)
    if extra is not None:
        bias = extra if bias is None else bias + extra
    if bias is not None:
        params["bias"] = np.asarray(bias).reshape(-1)
    name = b.emit(node, "conv2d", [x], out, {"strides": strides, "dilations": dilations,
                                            "padding": padding, "pads": pads,
                                            "groups": int(attrs.get("group", 1))}, params,
                  slots=[0])
    b.record_weight(node.input[1], b.nodes[-1].name, "weight")
    return name


def _dense_weight(b, node, x, weight):
    """weight [out, in] with columns permuted when x is a flattened NCHW tensor."""
    if isinstance(x.layout, tuple):
        weight = weight[:, flat_permutation(*x.layout[1:])]
    return np.ascontiguousarray(weight)


def _dense_input(b, node):
    x = _act(b, node, 0, layouts=None)
    if len(x.shape) != 2 or (x.layout == "nchw"):
        raise b.unsupported(node, f"input '{node.input[0]}' has ONNX shape "
                            f"{list(x.onnx_shape)}; refq converts dense layers on [N, K] inputs")
    return x


def _matmul(b, index, node, attrs):
    x = _dense_input(b, node)
    w = _const_input(b, node, 1, "weight")
    if w.ndim != 2:
        raise b.unsupported(node, f"weight of shape {list(w.shape)}: refq needs [K, M]")
    weight = _dense_weight(b, node, x, w.T)
    bias, out = fuse_bias_add(b, node.output[0], w.shape[1], "same", 2)
    params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    b.emit(node, "dense", [x], out, {}, params, layout="same", slots=[0])
    b.record_weight(node.input[1], b.nodes[-1].name, "weight")


def _gemm(b, index, node, attrs):
    if attrs.get("transA", 0):
        raise b.unsupported(node, "attribute transA=1: refq reads Gemm with transA=0")
    x = _dense_input(b, node)
    w = _const_input(b, node, 1, "weight")
    if w.ndim != 2:
        raise b.unsupported(node, f"weight of shape {list(w.shape)}: refq needs a matrix")
    weight = w if attrs.get("transB", 0) else w.T
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if alpha != 1.0:
        weight = (weight * np.float32(alpha)).astype(w.dtype)
    c = _const_input(b, node, 2, "bias C")
    bias = None
    if c is not None:
        bias = channel_vector(c, 2, 1, weight.shape[0])
        if bias is None:
            raise b.unsupported(node, f"bias C of shape {list(c.shape)}: refq needs a vector "
                                f"of {weight.shape[0]}")
        bias = bias * np.float32(beta) if beta != 1.0 else bias
    extra, out = fuse_bias_add(b, node.output[0], weight.shape[0], "same", 2)
    if extra is not None:
        bias = extra if bias is None else bias + extra
    params = {"weight": _dense_weight(b, node, x, weight)}
    if bias is not None:
        params["bias"] = np.asarray(bias)
    b.emit(node, "dense", [x], out, {}, params, layout="same", slots=[0])
    b.record_weight(node.input[1], b.nodes[-1].name, "weight")


def _batch_norm(b, index, node, attrs):
    if attrs.get("training_mode", 0):
        raise b.unsupported(node, "attribute training_mode=1: refq imports inference models")
    x = _act(b, node, 0, layouts=("nchw", "same"))
    gamma, beta, mean, var = (_const_input(b, node, k, what) for k, what in
                              ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    b.emit(node, "batch_norm", [x], node.output[0],      # ONNX's channel axis is 1
           {"epsilon": float(attrs.get("epsilon", 1e-5)), "axis": -1 if x.layout == "nchw" else 1},
           {"gamma": gamma, "beta": beta, "mean": mean, "variance": var}, slots=[0])


def _pool(b, index, node, attrs):
    x = _act(b, node)
    kernel = _pairs(b, node, attrs, "kernel_shape", [])
    strides = _pairs(b, node, attrs, "strides", [1, 1])
    if list(attrs.get("dilations", [1, 1])) != [1, 1]:
        raise b.unsupported(node, f"attribute dilations={attrs['dilations']}: refq pools "
                            "with dilation 1")
    padding, pads = _window(b, node, attrs, x, kernel, strides, (1, 1))
    if node.op_type == "AveragePool" and attrs.get("count_include_pad", 0) and \
            (padding == "same" or any(pads)):
        raise b.unsupported(node, "attribute count_include_pad=1 with padding: refq's "
                            "avg_pool2d divides by the valid count (count_include_pad=0)")
    if attrs.get("ceil_mode", 0):
        for n, k, s, p in zip(x.shape[1:3], kernel, strides, (pads[:2], pads[2:])):
            if padding == "same" or n is None or (n + sum(p) - k) % s:
                raise b.unsupported(node, "attribute ceil_mode=1 changes the output size here; "
                                    "refq pools with ceil_mode=0")
    op = "max_pool2d" if node.op_type == "MaxPool" else "avg_pool2d"
    b.emit(node, op, [x], node.output[0], {"pool_size": kernel, "strides": strides,
                                           "padding": padding, "pads": pads})


def _global_pool(b, index, node, attrs):
    x = _act(b, node)
    r = b.sole_reader(node.output[0])
    if r is not None and r[1].op_type in ("Flatten", "Reshape"):
        from .onnx_ops_shape import flattens_to_batch_rows
        if flattens_to_batch_rows(b, r[1], x.shape[3]):
            b.skip.add(r[0])
            b.emit(node, "global_avg_pool2d", [x], r[1].output[0], {"keepdims": False},
                   layout="same")
            return
    b.emit(node, "global_avg_pool2d", [x], node.output[0], {"keepdims": True})


def _clip(b, index, node, attrs):
    x = _act(b, node, 0, layouts=None)
    if b.opset >= 11:
        lo, hi = _const_input(b, node, 1, "min"), _const_input(b, node, 2, "max")
    else:
        lo, hi = attrs.get("min"), attrs.get("max")
    lo = None if lo is None else float(np.asarray(lo).reshape(()))
    hi = None if hi is None else float(np.asarray(hi).reshape(()))
    if (lo is not None and np.isnan(lo)) or (hi is not None and np.isnan(hi)):
        raise b.unsupported(node, "a bound is NaN")
    lo = None if lo == -np.inf else lo       # an infinite bound is no bound
    hi = None if hi == np.inf else hi
    if lo == 0.0 and hi == 6.0:
        b.emit(node, "relu6", [x], node.output[0])
    elif lo == 0.0 and hi is None:
        b.emit(node, "relu", [x], node.output[0])
    else:
        b.emit(node, "clip", [x], node.output[0],
               {"min": -_F64_MAX if lo is None else lo, "max": _F64_MAX if hi is None else hi})


def _unary(op, defaults=None):
    def convert(b, index, node, attrs):
        x = _act(b, node, 0, layouts=None)
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2] and \
                bool(np.asarray(b.const(node.input[2]))):
            raise b.unsupported(node, "training_mode is true; refq imports inference models")
        a = {k: float(attrs.get(k, v)) for k, v in (defaults or {}).items()}
        b.emit(node, op, [x], node.output[0], a)
    return convert


CONVERTERS = {
    "Conv": _conv, "MatMul": _matmul, "Gemm": _gemm, "BatchNormalization": _batch_norm,
    "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool, "Clip": _clip,
    "Relu": _unary("relu"), "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"),
    "HardSwish": _unary("hard_swish"), "Identity": _unary("identity"),
    "Dropout": _unary("identity"), "LeakyRelu": _unary("leaky_relu", {"alpha": 0.01}),
    "HardSigmoid": _unary("hard_sigmoid", {"alpha": 0.2, "beta": 0.5}),
}
CONVERTERS.update(SHAPE_CONVERTERS)
