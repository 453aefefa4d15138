"""The float and dynamic-range graphs of a TFLite model (`float_graph`); rules in
`refq.importers.tflite`.

Per operator (x the first input, w the constant weight, b the optional bias):
  CONV_2D            conv2d (groups = C_in / C_w) | int_f32_conv2d | int_hybrid_conv2d:
                     per-channel weight scales that differ run LiteRT's `EvalHybridPerChannel`
                     (asymmetric input quantization, scale_order "conv"); one weight scale (or
                     all equal, conv.cc Prepare's `is_hybrid_per_channel`) with groups 1 runs
                     `EvalHybrid` (symmetric per-image input quantization, `HybridConv`:
                     fl(acc)·fl(s·w_scale) + bias, i.e. asymmetric false, scale_order
                     "depthwise"); one scale with groups > 1 is refused (LiteRT falls back to
                     the per-channel kernel, which reads a scale per output channel)
  DEPTHWISE_CONV_2D  conv2d with groups = C, weight [1, kh, kw, C·M] -> [C·M, kh, kw, 1]
                     | int_f32_conv2d | int_hybrid_conv2d (scale_order "depthwise"; a scale
                     per output channel: LiteRT's hybrid depthwise kernel has no per-tensor
                     form, so one scale for several channels is refused)
  FULLY_CONNECTED    dense | int_f32_dense | int_hybrid_dense (asymmetric_quantize_inputs);
                     an input of rank > 2 is first reshaped to [N, In]
  ADD, MUL           add, multiply | int_f32_binary;  SUB: int_f32_binary
  AVERAGE_POOL_2D    avg_pool2d | int_f32_avg_pool2d;  MAX_POOL_2D: max_pool2d
  MEAN               global_avg_pool2d (axes H, W of NHWC) | int_f32_mean
  SOFTMAX            softmax (beta 1) | int_f32_softmax;  LOGISTIC, TANH, HARD_SWISH: sigmoid,
                     tanh, hard_swish | int_f32_unary
  CONCATENATION      concat;  RESHAPE: reshape to the output's static shape;  PAD, PADV2:
                     zero_pad2d (H, W padded with 0);  RELU, RELU6, RELU_N1_TO_1: relu, relu6,
                     clip(−1, 1)
(left: float model; right of "|": dynamic-range model). A fused activation is a relu / relu6 /
clip node after a refq float op, the kernel's `activation` attribute of an int_* kernel.
"""
from __future__ import annotations

import os

import numpy as np

from ..graph import Graph, Node, TensorSpec
from .tflite_common import Names, activation, check_window, padding, pool_options, unsupported

__all__ = ["float_graph"]

_ACT_NODES = {"relu": ("relu", {}), "relu6": ("relu6", {}),
              "relu_n1_to_1": ("clip", {"min": -1.0, "max": 1.0})}


class FloatBuild:
    def __init__(self, model, hybrid):
        self.model, self.hybrid, self.names, self.nodes = model, hybrid, Names(model), []

    def const(self, op, k, what):
        t = self.model.tensors[op.inputs[k]] if k < len(op.inputs) and op.inputs[k] >= 0 else None
        if t is None or t.data is None:
            raise unsupported(self.model, op, f"its {what} (input {k}) is not a constant tensor")
        return t

    def act_input(self, op, k=0):
        if k >= len(op.inputs) or op.inputs[k] < 0:
            raise unsupported(self.model, op, f"it has no input {k}; the file is damaged")
        t = op.inputs[k]
        tt = self.model.tensors[t]
        if tt.data is not None:
            raise unsupported(self.model, op, f"input {k} ('{tt.name}') is a constant; refq's "
                                              "ops take constants only as weights and biases")
        if tt.type != "float32":
            raise unsupported(self.model, op, f"input {k} ('{tt.name}') is {tt.type}; a float "
                                              "model's operators must compute on float32")
        return self.names(t)

    def emit(self, op, kind, inputs, attrs, params=None, act="none"):
        """Append the node(s) of `op`: the kernel, then its activation node when `act` needs one."""
        out = self.names(op.outputs[0])
        if act != "none" and not kind.startswith("int_"):
            mid = self.names.fresh(f"{out}:preact")
            self.nodes.append(Node(out + ":op", kind, inputs, [mid], attrs, params or {}))
            a_op, a_attrs = _ACT_NODES[act]
            self.nodes.append(Node(out, a_op, [mid], [out], dict(a_attrs)))
        else:
            if kind.startswith("int_") and act != "none":
                attrs = {**attrs, "activation": act}
            self.nodes.append(Node(out, kind, inputs, [out], attrs, params or {}))
        return out


def _conv(b, op):
    m = b.model
    o = op.options
    w = b.const(op, 1, "filter")
    x = b.act_input(op)
    c_in = m.tensors[op.inputs[0]].shape[-1]
    depthwise = op.opcode == "DEPTHWISE_CONV_2D"
    data = w.data
    if depthwise:
        data = np.transpose(data, (3, 1, 2, 0))
        groups = c_in
    else:
        groups = c_in // data.shape[3] if data.shape[3] and c_in % data.shape[3] == 0 else 0
        if groups < 1:
            raise unsupported(m, op, f"input channels {c_in} are not a multiple of the filter's "
                                     f"{data.shape[3]}")
    attrs = {"strides": [int(o.get("StrideH", 1)), int(o.get("StrideW", 1))],
             "dilations": [int(o.get("DilationHFactor", 1)), int(o.get("DilationWFactor", 1))],
             "padding": padding(m, op), "groups": int(groups)}
    check_window(m, op, data.shape[1:3], attrs["strides"], attrs["dilations"])
    params = {}
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        params["bias"] = np.asarray(b.const(op, 2, "bias").data, np.float32)
    act = activation(m, op)
    if w.type == "int8":
        scales = _weight_scales(b, op, w, depthwise)
        per_channel = scales.size > 1 and bool(np.any(scales != scales[0]))
        params["weight"] = data.astype(np.int64)
        if not depthwise and not per_channel and groups == 1:
            params["weight_scale"] = scales[:1]       # conv.cc EvalHybrid (module docstring)
            attrs.update(asymmetric=False, scale_order="depthwise")
            return b.emit(op, "int_hybrid_conv2d", [x], attrs, params, act)
        if scales.size != data.shape[0]:
            raise unsupported(m, op, f"int8 weights with {scales.size} scale(s) for "
                                     f"{data.shape[0]} output channels"
                                     f"{'' if depthwise else f' and {groups} groups'}: LiteRT's "
                                     "per-channel hybrid kernel then reads a scale per output "
                                     "channel past the end of the scales (undefined); "
                                     "re-convert with per-channel weights")
        params["weight_scale"] = scales
        attrs["scale_order"] = "depthwise" if depthwise else "conv"
        return b.emit(op, "int_hybrid_conv2d", [x], attrs, params, act)
    params["weight"] = np.asarray(data, np.float32)
    return b.emit(op, "int_f32_conv2d" if b.hybrid else "conv2d", [x], attrs, params, act)


def _weight_scales(b, op, w, depthwise):
    if np.any(w.zero_points != 0):
        raise unsupported(b.model, op, "int8 weights with a non-zero zero point")
    if not np.all(np.isfinite(w.scales) & (w.scales > 0)):
        raise unsupported(b.model, op, "int8 weights whose scales are not finite and positive")
    axis = 3 if depthwise else 0
    if w.scales.size > 1 and w.axis != axis:
        raise unsupported(b.model, op, f"weight scales along axis {w.axis}, expected {axis}")
    return np.asarray(w.scales, np.float32)


def _dense(b, op):
    m = b.model
    w = b.const(op, 1, "weights")
    if op.options.get("WeightsFormat", 0) != 0:
        raise unsupported(m, op, "shuffled fully-connected weights")
    x = b.act_input(op)
    shape = m.tensors[op.inputs[0]].shape
    units, depth = w.data.shape
    if len(shape) > 2 and not op.options.get("KeepNumDims", False):
        if int(np.prod(shape[1:])) != depth:
            raise unsupported(m, op, f"input shape {list(shape)} does not flatten to "
                                     f"[batch, {depth}] per image")
        flat = b.names.fresh(f"{b.names(op.outputs[0])}:flat")
        b.nodes.append(Node(flat, "reshape", [x], [flat], {"shape": [depth]}))
        x = flat
    params = {}
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        params["bias"] = np.asarray(b.const(op, 2, "bias").data, np.float32)
    act = activation(m, op)
    if w.type == "int8":
        params.update(weight=w.data.astype(np.int64),
                      weight_scale=_weight_scales(b, op, w, False))
        return b.emit(op, "int_hybrid_dense", [x],
                      {"asymmetric": bool(op.options.get("AsymmetricQuantizeInputs", False))},
                      params, act)
    params["weight"] = np.asarray(w.data, np.float32)
    return b.emit(op, "int_f32_dense" if b.hybrid else "dense", [x], {}, params, act)


def _binary(b, op):
    xs = [b.act_input(op, 0), b.act_input(op, 1)]
    kind = {"ADD": "add", "SUB": "sub", "MUL": "mul"}[op.opcode]
    act = activation(b.model, op)
    if b.hybrid or kind == "sub":
        return b.emit(op, "int_f32_binary", xs, {"kind": kind}, act=act)
    return b.emit(op, {"add": "add", "mul": "multiply"}[kind], xs, {}, act=act)


def _pool(b, op):
    attrs = pool_options(b.model, op)
    act = activation(b.model, op)
    x = b.act_input(op)
    if op.opcode == "MAX_POOL_2D":
        if b.hybrid and act != "none":   # max and the clamps are exact in any float dtype
            mid = b.names.fresh(f"{b.names(op.outputs[0])}:preact")
            b.nodes.append(Node(mid + ":op", "max_pool2d", [x], [mid], attrs))
            a_op, a_attrs = _ACT_NODES[act]
            out = b.names(op.outputs[0])
            b.nodes.append(Node(out, a_op, [mid], [out], dict(a_attrs)))
            return out
        return b.emit(op, "max_pool2d", [x], attrs, act=act)
    return b.emit(op, "int_f32_avg_pool2d" if b.hybrid else "avg_pool2d", [x], attrs, act=act)


def _mean(b, op):
    m = b.model
    axes = b.const(op, 1, "axes").data.astype(np.int64).ravel()
    x = b.act_input(op)
    rank = len(m.tensors[op.inputs[0]].shape)
    keep = bool(op.options.get("KeepDims", False))
    norm = sorted({int(a) % rank for a in axes}) if rank else []
    if not b.hybrid and rank == 4 and norm == [1, 2]:
        return b.emit(op, "global_avg_pool2d", [x], {"keepdims": keep})
    if 0 in norm:
        raise unsupported(m, op, "a mean over the batch axis")
    return b.emit(op, "int_f32_mean", [x], {"axes": norm, "keepdims": keep})


def _softmax(b, op):
    beta = float(op.options.get("Beta", 1.0))
    x = b.act_input(op)
    if b.hybrid:
        return b.emit(op, "int_f32_softmax", [x], {"beta": beta})
    if beta != 1.0:
        raise unsupported(b.model, op, f"softmax beta {beta} (refq's softmax has beta 1)")
    return b.emit(op, "softmax", [x], {"axis": -1})


def _unary(b, op):
    x = b.act_input(op)
    kind = {"LOGISTIC": "logistic", "TANH": "tanh", "HARD_SWISH": "hard_swish"}[op.opcode]
    if b.hybrid:
        return b.emit(op, "int_f32_unary", [x], {"kind": kind})
    return b.emit(op, {"logistic": "sigmoid"}.get(kind, kind), [x], {})


def _relu(b, op):
    a_op, a_attrs = _ACT_NODES[{"RELU": "relu", "RELU6": "relu6",
                                "RELU_N1_TO_1": "relu_n1_to_1"}[op.opcode]]
    return b.emit(op, a_op, [b.act_input(op)], dict(a_attrs))


def _concat(b, op):
    xs = [b.act_input(op, k) for k in range(len(op.inputs))]
    rank = len(b.model.tensors[op.outputs[0]].shape)
    axis = int(op.options.get("Axis", -1))
    if axis % max(rank, 1) == 0:
        raise unsupported(b.model, op, "concatenation along the batch axis")
    return b.emit(op, "concat", xs, {"axis": axis}, act=activation(b.model, op))


def _reshape(b, op):
    shape = b.model.tensors[op.outputs[0]].shape
    x = b.act_input(op)
    if not shape or any(d < 0 for d in shape[1:]):
        raise unsupported(b.model, op, f"output shape {list(shape)} is not static")
    return b.emit(op, "reshape", [x], {"shape": [int(d) for d in shape[1:]]})


def _pad(b, op):
    m = b.model
    pads = b.const(op, 1, "paddings").data.astype(np.int64).reshape(-1, 2)
    x = b.act_input(op)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        v = b.const(op, 2, "constant value").data
        if np.any(v != 0):
            raise unsupported(m, op, "padding with a value other than 0")
    if pads.shape[0] != 4 or np.any(pads[[0, 3]] != 0) or np.any(pads < 0):
        raise unsupported(m, op, f"paddings {pads.tolist()}: refq pads height and width of an "
                                 "NHWC tensor only")
    return b.emit(op, "zero_pad2d", [x], {"pads": [int(v) for v in pads[1:3].ravel()]})


FLOAT_CONVERT = {"CONV_2D": _conv, "DEPTHWISE_CONV_2D": _conv, "FULLY_CONNECTED": _dense,
            "ADD": _binary, "SUB": _binary, "MUL": _binary, "AVERAGE_POOL_2D": _pool,
            "MAX_POOL_2D": _pool, "MEAN": _mean, "SOFTMAX": _softmax, "LOGISTIC": _unary,
            "TANH": _unary, "HARD_SWISH": _unary, "RELU": _relu, "RELU6": _relu,
            "RELU_N1_TO_1": _relu, "CONCATENATION": _concat, "RESHAPE": _reshape,
            "PAD": _pad, "PADV2": _pad}


def float_graph(model, skip, hybrid: bool):
    """(Graph, Names) of a float (hybrid=False) or dynamic-range (hybrid=True) model."""
    b = FloatBuild(model, hybrid)
    inputs = []
    for t in model.inputs:
        tt = model.tensors[t]
        if tt.type != "float32":
            raise unsupported(model, model.operators[0], f"graph input '{tt.name}' is {tt.type}; "
                                                         "a float model takes float32 inputs")
        shape = (None,) + tuple(None if d < 0 else d for d in tt.shape[1:])
        inputs.append(TensorSpec(b.names(t), shape, "float32"))
    for op in model.operators:
        if op.index in skip:
            continue
        convert = FLOAT_CONVERT.get(op.opcode)
        if convert is None:
            raise unsupported(model, op, "refq has no form of this operator; supported: "
                                         f"{', '.join(sorted(FLOAT_CONVERT))}")
        if len(op.outputs) != 1:
            raise unsupported(model, op, f"{len(op.outputs)} outputs")
        convert(b, op)
    outputs = [b.names(t) for t in model.outputs]
    name = os.path.splitext(os.path.basename(model.path))[0]
    g = Graph(inputs, outputs, b.nodes, name=name)
    g.validate()
    return g, b.names
