"""ONNX operators -> refq float nodes: convolutions, dense layers, normalisation and
activations. Pooling is in `onnx_ops_pool`, shape-moving and arithmetic ops in `onnx_ops_shape`,
Transpose and Pad in `onnx_ops_layout`; `CONVERTERS` holds all four.

Each converter `f(builder, index, node, attrs)` reads the ONNX operator's definition (onnx.ai
operator pages, opsets 7..21) and emits the refq op computing the same values:
    Conv            conv2d; OIHW weight -> OHWI; group = C with [C·m, 1, kh, kw] is refq's
                    depthwise form [C·m, kh, kw, 1]; pads [t, l, b, r] -> [t, b, l, r];
                    auto_pad VALID -> valid, SAME_UPPER -> same (the extra row at the end,
                    TensorFlow's rule), SAME_LOWER -> explicit pads with the extra row first
                    (needs known H, W).
                    A following Add of a per-channel constant becomes the bias.
    ConvTranspose   conv_transpose{r}d on NCL / NCHW / NCDHW (r = 1, 2, 3); weight
                    [C, O/group, *k] -> [O, *k, C/group] with
                    w[g·Og + o', u, c] = W[g·Cg + c, o', u] (u the kernel tap); strides,
                    dilations, group, output_padding, output_shape (the r spatial sizes, or the
                    last r of [N, C, ...]; ONNX then ignores pads), pads [b_0, .., b_{r−1},
                    e_0, .., e_{r−1}] -> explicit per axis [b_0, e_0, b_1, e_1, ...] (2-D:
                    [t, l, b, r] -> [t, b, l, r]), auto_pad SAME_UPPER / SAME_LOWER ->
                    same_upper / same_lower, VALID -> valid; bias B.
    MatMul          of two activations of one rank >= 3 held as they are: matmul (batched,
                    leading axes broadcast). With a constant [K, M]: dense with weight [M, K] on
                    the last axis (reading the NCHW flattening of an NCHW tensor, its columns are
                    permuted, onnx_graph); a following Add of a constant [M] becomes the bias.
                    With a constant [K] after an input of rank >= 3: dense with one unit, then
                    a reshape dropping that axis (ONNX's 1-D promotion).
    Gemm            alpha = beta = 1 and C absent or a vector: dense with weight [out, in] (the
                    same operations; a following Add of a constant becomes the bias). Otherwise
                    refq's gemm: y = alpha·(A·B') + beta·C with B' stored as [out, in]
                    (transB = 1, axis 0 the output channel) and C of shape [], [1], [P],
                    [1, 1] or [1, P]. transA = 1 (a sum over the batch axis)
                    is refused; so is C varying along the rows (tied to one batch size).
    BatchNormalization   batch_norm with the file's epsilon (default 1e-5) on the channel axis.
    Relu, Sigmoid, Tanh, Softmax, LeakyRelu(alpha 0.01), HardSigmoid(alpha 0.2, beta 0.5),
    HardSwish, Round (half to even), Identity, Dropout (inference: identity)   the refq op of
                    the same definition.
    Clip            bounds from inputs (opset >= 11) or attributes: [0, 6] -> relu6, [0, none] ->
                    relu, else clip with min/max None where a bound is missing or infinite (no
                    bound); min > max gives max everywhere (min(max(x, min), max) = max), so min
                    is set to max.
Anything else, or an attribute value refq lacks, is an UnsupportedLayerError naming the file,
node, op type and attribute.
"""
from __future__ import annotations

import numpy as np

from .onnx_ops_shape import (SHAPE_CONVERTERS, activation_input as _act, channel_vector,
                             flat_permutation)

__all__ = ["CONVERTERS"]


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
    if w.ndim != 4 or len(x.shape) != 4:
        raise b.unsupported(node, f"weight of shape {list(w.shape)} on ONNX shape "
                            f"{list(x.onnx_shape)}: refq converts 2-D convolutions (NCHW "
                            "inputs, OIHW weights) only")
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
        size = int(np.prod(x.layout[1:]))
        if weight.shape[1] != size:
            raise b.unsupported(node, f"weight of {weight.shape[1]} inputs per output on a "
                                f"flattened tensor of {size} values")
        weight = weight[:, flat_permutation(*x.layout[1:])]
    return np.ascontiguousarray(weight)


def _dense_input(b, node):
    x = _act(b, node, 0, layouts=None)
    if len(x.shape) < 2 or x.layout == "nchw":
        raise b.unsupported(node, f"input '{node.input[0]}' has ONNX shape "
                            f"{list(x.onnx_shape)}; refq converts dense layers on [N, ..., K] "
                            "inputs held as they are")
    return x


def _matmul(b, index, node, attrs):
    if not b.is_const(node.input[1]):       # two activations: refq's batched matmul
        a, c = (_act(b, node, k, layouts=("same",)) for k in (0, 1))
        if len(a.shape) != len(c.shape) or len(a.shape) < 3:
            raise b.unsupported(node, f"operands of ONNX shapes {list(a.onnx_shape)} and "
                                f"{list(c.onnx_shape)}: refq multiplies two activations of one "
                                "rank >= 3 (batch axis first)")
        b.emit(node, "matmul", [a, c], node.output[0], layout="same")
        return
    x = _dense_input(b, node)
    w = _const_input(b, node, 1, "weight")
    if w.ndim == 1 and len(x.shape) >= 3 and x.layout == "same" and None not in x.shape[1:]:
        # [N, ..., K] @ [K] = [N, ...]: dense with one unit, then the unit axis dropped
        t = b.emit(node, "dense", [x], node.output[0], {}, {"weight": w.reshape(1, -1)},
                   layout="same", suffix="/dense", slots=[0])
        b.record_weight(node.input[1], b.nodes[-1].name, "weight")
        b.emit(node, "reshape", [t], node.output[0], {"shape": list(x.shape[1:-1])})
        return
    if w.ndim != 2:
        raise b.unsupported(node, f"weight of shape {list(w.shape)}: refq needs [K, M] (or [K] "
                            "after an input of rank >= 3)")
    if isinstance(x.layout, tuple) and len(x.shape) != 2:
        raise b.unsupported(node, "reads a flattened NCHW tensor of rank > 2")
    weight = _dense_weight(b, node, x, w.T)
    bias, out = fuse_bias_add(b, node.output[0], w.shape[1], "same", len(x.shape))
    params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    b.emit(node, "dense", [x], out, {}, params, layout="same", slots=[0])
    b.record_weight(node.input[1], b.nodes[-1].name, "weight")


def _gemm(b, index, node, attrs):
    """Gemm: dense when alpha = beta = 1 and C is a vector (the same operations), else refq's
    gemm with B as stored, transB, alpha, beta and C's own shape (module docstring)."""
    if attrs.get("transA", 0):
        raise b.unsupported(node, "attribute transA=1 would sum over the batch axis (A's axis "
                            "0); refq reads Gemm with transA=0")
    x = _dense_input(b, node)
    if len(x.shape) != 2:
        raise b.unsupported(node, f"input of ONNX shape {list(x.onnx_shape)}: Gemm reads [N, K]")
    w = _const_input(b, node, 1, "weight")
    if w.ndim != 2:
        raise b.unsupported(node, f"weight of shape {list(w.shape)}: refq needs a matrix")
    trans_b = int(attrs.get("transB", 0))
    weight = w if trans_b else w.T           # [out, in]
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    c = _const_input(b, node, 2, "bias C")
    vec = None if c is None else channel_vector(c, 2, 1, weight.shape[0])
    if alpha != 1.0 or beta != 1.0 or (c is not None and vec is None):
        # B' as [out, in] with transB = 1 whatever the file's transB (the same products; axis 0
        # the output channel, as every refq weight); columns permuted for a flattening
        params = {"weight": _dense_weight(b, node, x, weight)}
        if c is not None:
            params["bias"] = np.asarray(c)
        b.emit(node, "gemm", [x], node.output[0], {"alpha": alpha, "beta": beta, "transB": 1},
               params, layout="same", slots=[0])
        b.record_weight(node.input[1], b.nodes[-1].name, "weight")
        return
    bias = vec
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


def _conv_transpose(b, index, node, attrs):
    """ConvTranspose -> conv_transpose{r}d, r = 1, 2, 3 (module docstring)."""
    x = _act(b, node)
    w = _const_input(b, node, 1, "weight")
    r = len(x.shape) - 2
    if r not in (1, 2, 3) or w.ndim != r + 2:
        raise b.unsupported(node, f"weight of shape {list(w.shape)} on ONNX shape "
                            f"{list(x.onnx_shape)}: refq converts 1-D, 2-D and 3-D transposed "
                            "convolutions (weight [C, O/group, *kernel])")
    g = int(attrs.get("group", 1))
    c, og, *kernel = w.shape
    if g < 1 or c % g:
        raise b.unsupported(node, f"attribute group={g} does not divide the weight's {c} input "
                            "channels")
    if list(attrs.get("kernel_shape", kernel)) != kernel:
        raise b.unsupported(node, f"attribute kernel_shape={attrs['kernel_shape']} differs from "
                            f"the weight's {kernel}")
    # [g, Cg, Og, *k] -> [g, Og, *k, Cg] -> [O, *k, C/g]
    weight = w.reshape(g, c // g, og, *kernel).transpose(0, 2, *range(3, r + 3), 1).reshape(
        g * og, *kernel, c // g)
    a = {"strides": _ints(b, node, attrs, "strides", [1] * r, r),
         "dilations": _ints(b, node, attrs, "dilations", [1] * r, r), "groups": g,
         "output_padding": _ints(b, node, attrs, "output_padding", [0] * r, r)}
    out_shape = [int(v) for v in attrs.get("output_shape", [])]
    if out_shape:
        if len(out_shape) not in (r, r + 2):
            raise b.unsupported(node, f"attribute output_shape={out_shape}: refq reads the "
                                f"{r} spatial sizes (or [N, C, ...] of rank {r + 2})")
        a["output_shape"] = out_shape[-r:]
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        a["padding"] = auto.lower() if auto != "VALID" else "valid"
    elif auto != "NOTSET":
        raise b.unsupported(node, f"attribute auto_pad={auto!r} is not an ONNX value")
    elif not out_shape and any(attrs.get("pads", [])):   # output_shape: ONNX ignores pads
        p = [int(v) for v in attrs["pads"]]
        if len(p) != 2 * r or min(p) < 0:
            raise b.unsupported(node, f"attribute pads={p}: refq needs {2 * r} non-negative "
                                "pads")
        a["padding"], a["pads"] = "explicit", [p[j + k * r] for j in range(r) for k in (0, 1)]
    params = {"weight": np.ascontiguousarray(weight)}
    bias = _const_input(b, node, 2, "bias")
    if bias is not None:
        params["bias"] = np.asarray(bias).reshape(-1)
    b.emit(node, f"conv_transpose{r}d", [x], node.output[0], a, params, slots=[0])
    b.record_weight(node.input[1], b.nodes[-1].name, "weight")


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
    if lo is not None and hi is not None and lo > hi:
        lo = hi                              # min(max(x, lo), hi) = hi for every x
    if lo == 0.0 and hi == 6.0:
        b.emit(node, "relu6", [x], node.output[0])
    elif lo == 0.0 and hi is None:
        b.emit(node, "relu", [x], node.output[0])
    else:
        b.emit(node, "clip", [x], node.output[0], {"min": lo, "max": hi})


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
    "Clip": _clip, "ConvTranspose": _conv_transpose,
    "Round": _unary("round"),
    "Relu": _unary("relu"), "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"),
    "HardSwish": _unary("hard_swish"), "Identity": _unary("identity"),
    "Dropout": _unary("identity"), "LeakyRelu": _unary("leaky_relu", {"alpha": 0.01}),
    "HardSigmoid": _unary("hard_sigmoid", {"alpha": 0.2, "beta": 0.5}),
}
CONVERTERS.update(SHAPE_CONVERTERS)

from .onnx_ops_layout import LAYOUT_CONVERTERS  # noqa: E402
from .onnx_ops_pool import POOL_CONVERTERS, _ints  # noqa: E402

CONVERTERS.update(POOL_CONVERTERS)
CONVERTERS.update(LAYOUT_CONVERTERS)
