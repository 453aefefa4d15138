"""The integer graph of a fully integer TFLite model (`integer_graph`); rules in
`refq.importers.tflite`.

The file's tensors become a `refq.fixedpoint.lower_from_params` spec under the `tflite` profile
(LiteRT's reference kernels): every activation encoding (scale, zero point, int8) is the tensor's
own, every weight and bias the file's codes, every fused activation the layer's "activation".
Per operator:
  QUANTIZE of a float graph input   the graph input's int_quantize (its output's encoding)
  QUANTIZE int8 -> int8             identity with the output's encoding (an int_requantize)
  DEQUANTIZE of a graph output      the graph output's int_dequantize
  CONV_2D, DEPTHWISE_CONV_2D        conv2d (depthwise: weight [1, kh, kw, C·M] -> [C·M, kh, kw, 1],
                                    groups = C; per-channel scales along TFLite's axis 3)
  FULLY_CONNECTED                   dense (an input of rank > 2 first reshaped to [N, In])
  ADD, MUL                          add, multiply
  SUB                               add whose second input is negated on its grid first: an int_lut
                                    with table[q] = 2·zp − q (int16 values), so that
                                    (q' − zp)·2^20 = −(q − zp)·2^20 enters TFLite's Add formula;
                                    TFLite's SUB negates the second multiplier instead, and
                                    SRDHM(−a, m) = SRDHM(a, −m) exactly, so both agree bit for bit
  AVERAGE_POOL_2D, MAX_POOL_2D      avg_pool2d, max_pool2d (a fused activation: a relu / relu6 /
                                    clip layer on the output grid)
  MEAN over H, W of NHWC            global_avg_pool2d
  CONCATENATION, RESHAPE, PAD       concat, reshape, zero_pad2d (padded with the zero point)
  SOFTMAX (beta 1), LOGISTIC, TANH, HARD_SWISH, RELU, RELU6, RELU_N1_TO_1
                                    softmax, sigmoid, tanh, hard_swish, relu, relu6, clip(−1, 1);
                                    a RELU* that changes encoding (int_requantize) takes
                                    `ReluPrepare`'s multiplier QuantizeMultiplier(double(fl32(s_in
                                    / s_out))), the quotient in float32
  LEAKY_RELU                        leaky_relu (the file's float32 alpha), lowered under the
                                    `tflite` profile to LiteRT's `QuantizeLeakyRelu` on every
                                    code (int_lut scheme "tflite_leaky"; int16: `tflite_int16`)
int16 activations (TFLite's 16x8 models: int64 biases and accumulators, 16-bit multipliers) are
read for the operators `tflite_int16` lists, whose layers it replaces after the lowering.
Float segments (DEQUANTIZE -> float operators -> QUANTIZE inside the model, a float graph input
or output of float operators) and uint8 graph inputs and outputs (QUANTIZE uint8 <-> int8) are
read by `tflite_mixed`: the integer layers are lowered with each segment boundary as an input or
output of the spec, then joined (`refq.fixedpoint.mixed`). Other uint8 tensors are refused
(UnsupportedLayerError).
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import FixedPointError
from ..graph import Node
from .tflite_common import (Names, activation, check_window, padding, pool_options, unsupported,
                            with_nodes)
from .tflite_int16 import REPLACED, check_op, is_16x8, layer_record, replace_16x8
from .tflite_mixed import Segments

__all__ = ["integer_graph"]

_ACT_LAYERS = {"relu": ("relu", {}), "relu6": ("relu6", {}),
               "relu_n1_to_1": ("clip", {"min": -1.0, "max": 1.0})}


class _Spec:
    def __init__(self, model):
        self.model, self.names = model, Names(model)
        self.layers, self.subs = [], set()
        self.relus = {}            # RELU / RELU6 / RELU_N1_TO_1 layer -> (s_in, s_out)
        self.spec_of = {}          # TFLite tensor -> its name in the spec

    def enc(self, op, t):
        tt = self.model.tensors[t]
        if tt.type == "int16":
            if tt.scales.size != 1 or np.any(tt.zero_points):
                raise unsupported(self.model, op, f"int16 tensor '{tt.name}' has scales "
                                  f"{tt.scales.tolist()[:3]} and zero points "
                                  f"{tt.zero_points.tolist()[:3]}; 16x8 activations have one "
                                  "scale and zero point 0")
            return {"scale": float(tt.scales[0]), "zero_point": 0, "dtype": "int16"}
        if tt.type != "int8":
            raise unsupported(self.model, op, f"tensor '{tt.name}' is {tt.type}; refq imports "
                                              "int8 activations of fully integer models")
        if tt.scales.size != 1:
            raise unsupported(self.model, op, f"tensor '{tt.name}' has {tt.scales.size} scales; "
                                              "activations are quantized per tensor")
        return {"scale": float(tt.scales[0]), "zero_point": int(tt.zero_points[0]),
                "dtype": "int8"}

    def src(self, op, k=0):
        if k >= len(op.inputs) or op.inputs[k] < 0:
            raise unsupported(self.model, op, f"it has no input {k}; the file is damaged")
        t = op.inputs[k]
        if t not in self.spec_of:
            tt = self.model.tensors[t]
            what = "a constant" if tt.data is not None else "not computed by an integer operator"
            raise unsupported(self.model, op, f"input {k} ('{tt.name}') is {what}; refq's integer "
                                              "ops take constants only as weights and biases")
        return self.spec_of[t]

    def layer(self, op, kind, inputs, out_enc=True, **keys):
        t = op.outputs[0]
        name = self.names(t)
        layer = {"name": name, "op": kind, "inputs": inputs, **keys}
        if out_enc:
            layer["output"] = self.enc(op, t)
        self.layers.append(layer)
        self.spec_of[t] = name
        return name

    def const(self, op, k, what):
        t = self.model.tensors[op.inputs[k]] if k < len(op.inputs) and op.inputs[k] >= 0 else None
        if t is None or t.data is None:
            raise unsupported(self.model, op, f"its {what} (input {k}) is not a constant tensor")
        return t


def _conv(s, op):
    m, o = s.model, op.options
    x = s.src(op)
    w = s.const(op, 1, "filter")
    depthwise = op.opcode == "DEPTHWISE_CONV_2D"
    if w.type != "int8" or np.any(w.zero_points != 0):
        raise unsupported(m, op, f"weights of type {w.type} with zero points "
                                 f"{sorted(set(w.zero_points.tolist()))[:3]}; TFLite int8 "
                                 "kernels take symmetric int8 weights")
    c_in = m.tensors[op.inputs[0]].shape[-1]
    data = np.transpose(w.data, (3, 1, 2, 0)) if depthwise else w.data
    if w.scales.size > 1 and w.axis != (3 if depthwise else 0):
        raise unsupported(m, op, f"weight scales along axis {w.axis}")
    keys = {"weight": data.astype(np.int64), "weight_scale": [float(v) for v in w.scales]}
    if len(op.inputs) > 2 and op.inputs[2] >= 0 and not is_16x8(m, op):
        keys["bias"] = s.const(op, 2, "bias").data.astype(np.int64)   # 16x8: tflite_int16
    keys["activation"] = activation(m, op)
    if op.opcode == "FULLY_CONNECTED":
        return s.layer(op, "dense", [_flatten(s, op, x, data.shape[1])], **keys)
    groups = c_in if depthwise else c_in // max(data.shape[3], 1)
    keys.update(strides=[int(o.get("StrideH", 1)), int(o.get("StrideW", 1))],
                dilations=[int(o.get("DilationHFactor", 1)), int(o.get("DilationWFactor", 1))],
                padding=padding(m, op), groups=int(groups))
    check_window(m, op, data.shape[1:3], keys["strides"], keys["dilations"])
    return s.layer(op, "conv2d", [x], **keys)


def _flatten(s, op, x, depth):
    shape = s.model.tensors[op.inputs[0]].shape
    if op.options.get("WeightsFormat", 0) != 0:
        raise unsupported(s.model, op, "shuffled fully-connected weights")
    if len(shape) <= 2 or op.options.get("KeepNumDims", False):
        return x
    if int(np.prod(shape[1:])) != depth:
        raise unsupported(s.model, op, f"input shape {list(shape)} does not flatten to "
                                       f"[batch, {depth}] per image")
    name = s.names.fresh(f"{s.names(op.outputs[0])}:flat")
    s.layers.append({"name": name, "op": "reshape", "inputs": [x], "shape": [depth]})
    return name


def _binary(s, op):
    xs = [s.src(op, 0), s.src(op, 1)]
    kind = "multiply" if op.opcode == "MUL" else "add"
    name = s.layer(op, kind, xs, activation=activation(s.model, op))
    if op.opcode == "SUB":
        s.subs.add(name)
    return name


def _with_activation(s, op, kind, inputs, **keys):
    """A layer without a fused-activation key, followed by its activation layer if any."""
    act = activation(s.model, op)
    if act == "none":
        return s.layer(op, kind, inputs, **keys)
    out = s.names(op.outputs[0])
    mid = s.names.fresh(f"{out}:preact")
    s.layers.append({"name": mid, "op": kind, "inputs": inputs, **keys,
                     "output": s.enc(op, op.outputs[0])})
    a_op, a_attrs = _ACT_LAYERS[act]
    return s.layer(op, a_op, [mid], **a_attrs)


def _pool(s, op):
    keys = pool_options(s.model, op)
    kind = "max_pool2d" if op.opcode == "MAX_POOL_2D" else "avg_pool2d"
    return _with_activation(s, op, kind, [s.src(op)], **keys)


def _mean(s, op):
    axes = s.const(op, 1, "axes").data.astype(np.int64).ravel()
    rank = len(s.model.tensors[op.inputs[0]].shape)
    if rank != 4 or sorted({int(a) % 4 for a in axes}) != [1, 2]:
        raise unsupported(s.model, op, f"a mean over axes {axes.tolist()}; refq's integer mean "
                                       "reduces H and W of an NHWC tensor")
    return s.layer(op, "global_avg_pool2d", [s.src(op)],
                   keepdims=bool(op.options.get("KeepDims", False)))


def _concat(s, op):
    xs = [s.src(op, k) for k in range(len(op.inputs))]
    return _with_activation(s, op, "concat", xs, axis=int(op.options.get("Axis", -1)))


def _reshape(s, op):
    shape = s.model.tensors[op.outputs[0]].shape
    if not shape or any(d < 0 for d in shape[1:]):
        raise unsupported(s.model, op, f"output shape {list(shape)} is not static")
    return s.layer(op, "reshape", [s.src(op)], shape=[int(d) for d in shape[1:]])


def _pad(s, op):
    pads = s.const(op, 1, "paddings").data.astype(np.int64).reshape(-1, 2)
    x = s.src(op)
    enc = s.enc(op, op.outputs[0])
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        v = s.const(op, 2, "constant value").data
        if np.any(v != enc["zero_point"]):
            raise unsupported(s.model, op, "padding with a value other than the zero point")
    if pads.shape[0] != 4 or np.any(pads[[0, 3]] != 0) or np.any(pads < 0):
        raise unsupported(s.model, op, f"paddings {pads.tolist()}: refq pads height and width "
                                       "of an NHWC tensor only")
    return s.layer(op, "zero_pad2d", [x], pads=[int(v) for v in pads[1:3].ravel()])


def _softmax(s, op):
    if float(op.options.get("Beta", 1.0)) != 1.0:
        raise unsupported(s.model, op, "softmax beta other than 1")
    return s.layer(op, "softmax", [s.src(op)])


def _simple(s, op):
    kind, attrs = {"LOGISTIC": ("sigmoid", {}), "TANH": ("tanh", {}),
                   "HARD_SWISH": ("hard_swish", {}), "RELU": ("relu", {}),
                   "RELU6": ("relu6", {}), "RELU_N1_TO_1": ("clip", {"min": -1.0, "max": 1.0}),
                   "QUANTIZE": ("identity", {})}[op.opcode]
    name = s.layer(op, kind, [s.src(op)], **attrs)
    if op.opcode.startswith("RELU"):
        s.relus[name] = tuple(float(s.model.tensors[t].scales[0])
                              for t in (op.inputs[0], op.outputs[0]))
    return name


def _leaky(s, op):
    return s.layer(op, "leaky_relu", [s.src(op)], alpha=float(op.options["Alpha"]))


_CONVERT = {"CONV_2D": _conv, "DEPTHWISE_CONV_2D": _conv, "FULLY_CONNECTED": _conv,
            "ADD": _binary, "SUB": _binary, "MUL": _binary, "AVERAGE_POOL_2D": _pool,
            "MAX_POOL_2D": _pool, "MEAN": _mean, "CONCATENATION": _concat, "RESHAPE": _reshape,
            "PAD": _pad, "PADV2": _pad, "SOFTMAX": _softmax, "LOGISTIC": _simple, "TANH": _simple,
            "HARD_SWISH": _simple, "RELU": _simple, "RELU6": _simple, "RELU_N1_TO_1": _simple,
            "QUANTIZE": _simple, "LEAKY_RELU": _leaky}


def integer_graph(model, skip):
    """(Graph, Names) of a fully integer model: the integer graph of its spec (module docstring)
    under the `tflite` profile, with graph.meta["integer"] as `lower_from_params` writes it."""
    from ..fixedpoint import lower_from_params

    s = _Spec(model)
    seg = Segments(model, s)
    readers = {}
    for op in model.operators:
        if op.index not in skip:
            for t in op.inputs:
                readers.setdefault(t, []).append(op)
    inputs, quantize_ops, float_out, records = [], set(), {}, {}
    for t in model.inputs:
        tt = model.tensors[t]
        ops = readers.get(t, [])
        if seg.graph_input(t, ops):
            continue
        name = s.names(t)
        target = t
        if tt.type in ("float32", "uint8"):
            if len(ops) != 1 or ops[0].opcode != "QUANTIZE":
                raise unsupported(model, (ops or model.operators)[0], f"{tt.type} graph input "
                                  f"'{tt.name}' must be read by one QUANTIZE operator (or, a "
                                  "float input, by float operators only)")
            quantize_ops.add(ops[0].index)
            target = ops[0].outputs[0]
            if tt.type == "uint8":
                seg.uint8_input(t, ops[0])
        enc = s.enc(model.operators[0], target)
        shape = [None] + [None if d < 0 else int(d) for d in tt.shape[1:]]
        inputs.append({"name": name, "shape": shape, **enc})
        s.spec_of[target] = name
        if target != t:
            s.names.alias(target, name + ":q")
    for t in model.outputs:   # an int8 tensor read only by the DEQUANTIZE of a graph output
        for op in model.operators:
            if op.opcode == "DEQUANTIZE" and op.outputs == [t] and model.tensors[t].type == \
                    "float32" and readers.get(op.inputs[0], []) == [op]:
                float_out[op.inputs[0]] = (t, op.index)
                s.names.alias(op.inputs[0], s.names(t))
    for op in model.operators:
        if op.index in skip or op.index in quantize_ops or any(op.index == i for _, i in
                                                               float_out.values()):
            continue
        if seg.take(op):
            continue
        convert = _CONVERT.get(op.opcode)
        if convert is None:
            raise unsupported(model, op, "refq has no integer form of this operator; supported: "
                              f"{', '.join(sorted(_CONVERT))}, DEQUANTIZE, QUANTIZE, and float "
                              "operators between them")
        if is_16x8(model, op):
            check_op(model, op)
            name = convert(s, op)
            if op.opcode in REPLACED:
                records[name] = layer_record(model, op)
            continue
        convert(s, op)
    outputs, final = [], []
    for t in model.outputs:
        if seg.output(t) is not None:
            final.append(seg.output(t))
            if t in seg.u8_out:
                outputs.append(s.spec_of[seg.u8_out[t]])
            continue
        q = next((q for q, (f, _) in float_out.items() if f == t), t)
        if q not in s.spec_of:
            raise unsupported(model, model.operators[-1], f"graph output "
                              f"'{model.tensors[t].name}' is not an integer tensor computed by "
                              "the model")
        outputs.append(s.spec_of[q])
        final.append(s.spec_of[q])
    spec = {"name": os.path.splitext(os.path.basename(model.path))[0],
            "inputs": inputs + seg.spec_inputs, "layers": s.layers,
            "outputs": seg.spec_outputs(outputs)}
    try:
        g = lower_from_params(spec, "tflite")
    except FixedPointError as e:
        raise FixedPointError(f"{model.path}: {e}") from None
    g = replace_16x8(g, records, model.path)
    g = _negate_subtrahends(g, s.subs, model.path)
    _relu_multipliers(g, s.relus)
    if seg.mixed:
        g = seg.join(g, final, model.path)
    names = _index(g, s, float_out, seg)
    return g, names


def _relu_multipliers(g, relus):
    """Set LiteRT's own multiplier on each RELU / RELU6 / RELU_N1_TO_1 that changes encoding
    (an int_requantize): `ReluPrepare` forms double(fl32(s_in/s_out)), the quotient in float32,
    where the lowering divides in float64; both then go through QuantizeMultiplier."""
    from ..fixedpoint.multiplier import quantize_multiplier

    for name, (s_in, s_out) in relus.items():
        n = next((n for n in g.nodes if n.name == name), None)
        if n is None or n.op != "int_requantize" or n.attrs.get("mode", "requant") != "requant":
            continue
        real = float(np.float32(np.float32(s_in) / np.float32(s_out)))
        m, e = (int(v) for v in quantize_multiplier(real))
        n.params.update(multiplier=np.array([m], dtype=np.int32),
                        shift=np.array([e], dtype=np.int32),
                        real_multiplier=np.array([real]))


def _negate_subtrahends(g, subs, path):
    """Insert, before each int_add of a SUB, the int_lut that negates its second input on its grid
    (module docstring)."""
    if not subs:
        return g
    nodes, tensors = [], g.meta["integer"]["tensors"]
    for n in g.nodes:
        if n.name in subs:
            if n.op != "int_add":
                raise FixedPointError(f"{path}: SUB '{n.name}' lowered to {n.op}, not int_add")
            zp, b = int(n.attrs["b_zp"]), n.inputs[1]
            q = tensors.get(b, {"qmin": -128, "qmax": 127})
            lo, hi = int(q["qmin"]), int(q["qmax"])
            neg = f"{n.name}:negated"
            table = (2 * zp - np.arange(lo, hi + 1)).astype(np.int64)
            nodes.append(Node(f"{n.name}:negate", "int_lut", [b], [neg], {"input_qmin": lo},
                              {"table": table}))
            tensors[neg] = {**q, "qmin": 2 * zp - hi, "qmax": 2 * zp - lo, "dtype": "int16"}
            n = Node(n.name, n.op, [n.inputs[0], neg], list(n.outputs), dict(n.attrs),
                     dict(n.params))
        nodes.append(n)
    return with_nodes(g, nodes, path, "SUB negations")


def _index(g, s, float_out, seg):
    """Names whose `index` maps every refq tensor of `g` that holds a TFLite tensor to its index."""
    float_tensors = g.meta["integer"]["float_tensors"]
    names = Names(s.model)
    for t, spec_name in s.spec_of.items():
        names.index[float_tensors.get(spec_name, spec_name)] = t
    for q, (t, _) in float_out.items():
        names.index[s.spec_of[q]] = t
    for t in list(seg.float_out) + [f for _, f in seg.cut_out] + list(seg.u8_out):
        names.index[s.names(t)] = t
    names.index.update(seg.u8_codes)
    for spec in g.inputs:
        names.index.setdefault(spec.name, next(
            t for t in s.model.inputs if s.names.of.get(t) == spec.name))
    return names
