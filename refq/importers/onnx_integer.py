"""ONNX models with integer operators (QOperator form) -> an integer refq Graph, built by
`refq.fixedpoint.lower_params.lower_from_params` from the file's own parameters and run under a
numerics profile (`onnx` by default: the ONNX definitions as `onnx.reference` evaluates them).

Operators (onnx.ai operator pages) and what they become (NCHW -> NHWC as in `onnx_graph`):
    QuantizeLinear(x, s, zp)   on a float graph input: that input's encoding (scale s, zero
                               point zp, dtype of zp: int8 or uint8)
    QLinearConv(x, s_x, zp_x, w, s_w, zp_w, s_y, zp_y, B)   conv2d with weight codes w (OIHW ->
                               OHWI), weight scale s_w (per tensor or per output channel), weight
                               zero point zp_w (one value or one per output channel), int32
                               bias B, output encoding (s_y,
                               zp_y); attributes as Conv (pads, strides, dilations, group,
                               auto_pad)
    QLinearMatMul(a, s_a, zp_a, b, s_b, zp_b, s_y, zp_y)   dense with weight bᵀ ([K, M] -> [M, K];
                               s_b per tensor or per column), no bias; with b an integer
                               activation of a's rank (>= 3): matmul of the two
    Weight zero points that differ per output channel (QLinearConv w_zero_point [M],
                               QLinearMatMul b_zero_point [N]): kept with the file's codes as
                               the integer node's parameter weight_zp [O] (`weight_zero_point`);
                               the profile must allow them (per_channel_weight_zero_point: onnx),
                               else the lowering refuses naming the node and the profile.
    MaxPool, Flatten, Reshape on an integer tensor   max_pool2d / flatten / reshape, keeping its
                               encoding (as `onnx_ops_shape` decides the layout)
    com.microsoft QLinearAdd, QLinearMul   add, multiply with the output encoding (s_C, zp_C)
    com.microsoft QLinearConcat(axis)      concat, output encoding (s_Y, zp_Y)
    com.microsoft QLinearGlobalAveragePool global_avg_pool2d (keepdims), output encoding
    DequantizeLinear(q, s, zp) a graph output: the integer graph's output (its name is the layer's)
    DequantizeLinear -> Sigmoid, Tanh, Softmax, Relu, Flatten -> QuantizeLinear inside the model
                               a float segment (`onnx_mixed`, `refq.fixedpoint.mixed`); a
                               graph output computed by such operators is a float output
Integer graph inputs and outputs. An int8/uint8 graph input is the codes of the encoding its
first reader states for it (the scale and zero point of that QLinear operator's operand): the
refq graph's input takes those codes with `run_int(..., codes=True)` (its int_quantize is then
skipped), or real values otherwise. An integer tensor that is a graph output (no
DequantizeLinear) is returned as the codes of its encoding by `run_int(..., codes=True)`.
`graph.meta["onnx_layouts"]` names the inputs and outputs held channels-last ("nchw").
The scale and zero point a QLinear operator states for an input must be that input's encoding.
ConvInteger and MatMulInteger models are read by `onnx_int_accumulate`; other com.microsoft
operators are refused, naming the node.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedLayerError
from .onnx_load import attributes
from .onnx_mixed import Segments
from .onnx_ops import _window
from .onnx_ops_shape import flat_permutation

__all__ = ["import_integer", "weight_zero_point"]

_DTYPES = {np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8"}


class _Tensor:
    """An integer tensor: refq name, NHWC shape, layout ("nchw" | "same" | ("flat", C, H, W))
    and encoding dict."""

    def __init__(self, name, shape, layout, enc):
        self.name, self.shape, self.layout, self.enc = name, tuple(shape), layout, enc

    @property
    def onnx_shape(self):
        s = self.shape
        return (s[0], s[3], s[1], s[2]) if self.layout == "nchw" else s


class _IntBuilder:
    def __init__(self, m, input_shapes):
        self.m, self.path = m, m.path
        self.given = dict(input_shapes or {})
        self.t: dict = {}
        self.layers, self.inputs, self.outputs = [], [], {}
        self.floats = {name: (dims, has) for name, dims, dtype, has in m.inputs
                       if dtype is None or np.dtype(dtype).kind == "f"}
        self.layouts = {}
        self.seg = Segments(self)

    def where(self, n):
        return f"{self.path}: node '{n.name or n.output[0]}' ({n.op_type})"

    def refuse(self, n, what):
        return UnsupportedLayerError(f"{self.where(n)}: {what}")

    unsupported = refuse   # the name `onnx_ops._window` calls

    def const(self, n, slot, what):
        v = self.m.constants.get(n.input[slot]) if len(n.input) > slot and n.input[slot] else None
        if v is None and what:
            raise self.refuse(n, f"its {what} (input {slot}) must be a constant of the file")
        return v

    def integer_inputs(self):
        """The int8/uint8 graph inputs, each with the encoding its first reader states for it
        (module docstring)."""
        slots = {"QLinearConv": {0: (1, 2)}, "QLinearMatMul": {0: (1, 2), 3: (4, 5)},
                 "QLinearAdd": {0: (1, 2), 3: (4, 5)}, "QLinearMul": {0: (1, 2), 3: (4, 5)},
                 "QLinearGlobalAveragePool": {0: (1, 2)}, "DequantizeLinear": {0: (1, 2)}}
        for name, dims, dtype, has in self.m.inputs:
            if dtype is None or np.dtype(dtype).kind == "f":
                continue
            readers = [(n, k) for n in self.m.nodes for k, t in enumerate(n.input) if t == name]
            first = next(((n, slots[n.op_type][k]) for n, k in readers
                          if k in slots.get(n.op_type, {})), None)
            if first is None:
                raise UnsupportedLayerError(
                    f"{self.path}: integer input '{name}' is read by "
                    f"{sorted({n.op_type for n, _ in readers}) or 'nothing'}; refq takes integer "
                    "inputs into the QLinear operators and DequantizeLinear, whose scale and "
                    "zero point give their encoding")
            n, (s_slot, zp_slot) = first
            enc = self.enc(n, s_slot, zp_slot)
            if enc["dtype"] != _DTYPES.get(np.dtype(dtype)):
                raise self.refuse(n, f"integer input '{name}' of type {np.dtype(dtype)} with a "
                                  f"{enc['dtype']} zero point")
            dims = tuple(self.given.get(name, dims))
            if len(dims) < 2:
                raise UnsupportedLayerError(
                    f"{self.path}: input '{name}' has shape {list(dims)}: refq tensors have the "
                    "batch axis first, and a rank-0 or rank-1 input has no batch axis")
            nchw = len(dims) == 4 and any(r.op_type in ("QLinearConv", "QLinearGlobalAveragePool",
                                                        "MaxPool") for r, _ in readers)
            shape = (dims[0], *dims[2:], dims[1]) if nchw else dims
            self.inputs.append(dict(name=name, shape=list(shape), **enc))
            self.t[name] = _Tensor(name, shape, "nchw" if nchw else "same", enc)
            self.layouts[name] = self.t[name].layout

    def enc(self, n, s_slot, zp_slot):
        s = np.asarray(self.const(n, s_slot, "scale"), np.float32)
        zp = self.const(n, zp_slot, None)
        zp = np.zeros((), np.uint8) if zp is None else np.asarray(zp)
        if zp.dtype not in _DTYPES or s.size != 1:
            raise self.refuse(n, f"activation encoding with scale of shape {list(s.shape)} and "
                              f"zero point of type {zp.dtype}: refq reads per-tensor int8/uint8")
        return {"scale": float(s.reshape(())), "zero_point": int(zp.reshape(())),
                "dtype": _DTYPES[zp.dtype]}

    def operand(self, n, slot, s_slot, zp_slot):
        x = self.t.get(n.input[slot])
        if x is None:
            raise self.refuse(n, f"input '{n.input[slot]}' is not an integer tensor refq "
                              "converted (a QuantizeLinear of a graph input or a QLinear output)")
        if s_slot is not None and self.enc(n, s_slot, zp_slot) != x.enc:
            raise self.refuse(n, f"the scale/zero point it states for '{n.input[slot]}' differ "
                              f"from that tensor's encoding {x.enc}")
        return x

    def add(self, n, layer, shape, layout, enc):
        name = n.name or n.output[0]
        layer["name"] = name
        self.layers.append(layer)
        self.t[n.output[0]] = _Tensor(name, shape, layout, enc)

    # ---- ops -----------------------------------------------------------------------------
    def quantize(self, n, a):
        name = n.input[0]
        if name in self.seg.f:
            return self.seg.quantize(n)
        if name not in self.floats:
            raise self.refuse(n, f"quantizes '{name}', which is neither a graph input nor a "
                              "float tensor computed after a DequantizeLinear")
        dims, _ = self.floats[name]
        dims = tuple(self.given.get(name, dims))
        if len(dims) != 4 or any(d is None for d in dims[1:2]):
            raise self.refuse(n, f"input '{name}' of shape {list(dims)}: refq needs [N, C, H, W] "
                              f"with a known C (input_shapes={{'{name}': [...]}})")
        enc = self.enc(n, 1, 2)
        shape = (dims[0], dims[2], dims[3], dims[1])
        self.inputs.append(dict(name=name, shape=list(shape), **enc))
        self.t[n.output[0]] = _Tensor(name, shape, "nchw", enc)
        self.layouts[name] = "nchw"

    def qconv(self, n, a):
        x = self.operand(n, 0, 1, 2)
        w = self.const(n, 3, "weight")
        if x.layout != "nchw" or w.ndim != 4 or w.dtype not in _DTYPES:
            raise self.refuse(n, "refq reads 2-D QLinearConv with int8/uint8 OIHW weights")
        o, _, kh, kw = w.shape
        strides = list(a.get("strides", [1, 1]))
        dilations = list(a.get("dilations", [1, 1]))
        padding, pads = _window(self, n, a, x, (kh, kw), strides, dilations)
        enc_y = self.enc(n, 6, 7)
        layer = {"op": "conv2d", "inputs": [x.name], "strides": strides, "dilations": dilations,
                 "padding": padding, "pads": pads, "groups": int(a.get("group", 1)),
                 "output": enc_y, **self.weight_scale(n, 4, 5, w.transpose(0, 2, 3, 1))}
        bias = self.const(n, 8, None)
        if bias is not None:
            layer["bias"] = np.asarray(bias).reshape(-1)
        from ..layers import REGISTRY
        shape = REGISTRY["conv2d"].infer_shape([x.shape], {
            "strides": strides, "dilations": dilations, "padding": padding, "pads": pads,
            "groups": layer["groups"]}, {"weight": layer["weight"]})
        self.add(n, layer, shape, "nchw", enc_y)

    def weight_scale(self, n, s_slot, zp_slot, w):
        """{weight, weight_dtype, weight_scale, weight_zero_point} of a layer whose weight codes
        `w` have the output channel on axis 0 (module docstring: per-channel zero points)."""
        channels = w.shape[0]
        s = np.asarray(self.const(n, s_slot, "weight scale"), np.float32).reshape(-1)
        zp = self.const(n, zp_slot, None)
        zp = np.zeros(1, w.dtype) if zp is None else np.asarray(zp).reshape(-1)
        if s.size not in (1, channels) or zp.size not in (1, channels):
            raise self.refuse(n, f"weight scale of {s.size} and zero point of {zp.size} values: "
                              f"refq reads 1 or {channels} (one per output channel)")
        codes, zp = np.asarray(w), weight_zero_point(zp)
        return {"weight": codes, "weight_dtype": _DTYPES[codes.dtype],
                "weight_scale": float(s[0]) if s.size == 1 else s.tolist(),
                "weight_zero_point": zp}

    def qmatmul(self, n, a):
        x = self.operand(n, 0, 1, 2)
        enc_y = self.enc(n, 6, 7)
        if n.input[3] in self.t:        # two integer activations: matmul
            y = self.operand(n, 3, 4, 5)
            if x.layout != "same" or y.layout != "same" or len(x.shape) != len(y.shape) or \
                    len(x.shape) < 3:
                raise self.refuse(n, f"operands of shapes {list(x.onnx_shape)} and "
                                  f"{list(y.onnx_shape)}: refq multiplies two activations of one "
                                  "rank >= 3 (batch axis first)")
            from ..layers import REGISTRY
            shape = REGISTRY["matmul"].infer_shape([x.shape, y.shape], {}, {})
            self.add(n, {"op": "matmul", "inputs": [x.name, y.name], "output": enc_y}, shape,
                     "same", enc_y)
            return
        b = self.const(n, 3, "weight")
        if len(x.shape) != 2 or b.ndim != 2 or b.dtype not in _DTYPES:
            raise self.refuse(n, "refq reads QLinearMatMul of an [N, K] input and a constant "
                              "int8/uint8 [K, M] weight (or two integer activations of one rank "
                              ">= 3)")
        if x.shape[1] is not None and b.shape[0] != x.shape[1]:
            raise self.refuse(n, f"weight of shape {list(b.shape)} on an input of "
                              f"{x.shape[1]} values")
        weight = b.T
        if isinstance(x.layout, tuple):
            weight = weight[:, flat_permutation(*x.layout[1:])]
        layer = {"op": "dense", "inputs": [x.name], "output": enc_y,
                 **self.weight_scale(n, 4, 5, np.ascontiguousarray(weight))}
        self.add(n, layer, (x.shape[0], b.shape[1]), "same", enc_y)

    def maxpool(self, n, a):
        x = self.operand(n, 0, None, None)
        kernel, strides = list(a["kernel_shape"]), list(a.get("strides", [1, 1]))
        if x.layout != "nchw" or a.get("ceil_mode", 0) or \
                list(a.get("dilations", [1, 1])) != [1, 1]:
            raise self.refuse(n, "refq reads 2-D MaxPool with ceil_mode 0 and dilation 1")
        padding, pads = _window(self, n, a, x, kernel, strides, (1, 1))
        from ..layers import REGISTRY
        attrs = {"pool_size": kernel, "strides": strides, "padding": padding, "pads": pads}
        shape = REGISTRY["max_pool2d"].infer_shape([x.shape], attrs, {})
        self.add(n, dict(op="max_pool2d", inputs=[x.name], **attrs), shape, "nchw", x.enc)

    def flatten(self, n, a):
        x = self.operand(n, 0, None, None)
        if n.op_type == "Flatten" and a.get("axis", 1) != 1 or \
                n.op_type == "Reshape" and [int(d) for d in self.const(n, 1, "shape")][1:] != [-1]:
            raise self.refuse(n, "refq reads Flatten(axis=1) and Reshape to [N, -1] here")
        if x.layout != "nchw" or None in x.shape[1:]:
            raise self.refuse(n, "flattens a tensor of unknown size or layout")
        _, c, h, w = x.onnx_shape
        layout = "same" if h * w == 1 else ("flat", c, h, w)
        self.add(n, {"op": "flatten", "inputs": [x.name]}, (x.shape[0], c * h * w), layout,
                 x.enc)

    def binary(self, n, a):
        """com.microsoft QLinearAdd / QLinearMul (A, s_A, zp_A, B, s_B, zp_B, s_C, zp_C)."""
        x, y = self.operand(n, 0, 1, 2), self.operand(n, 3, 4, 5)
        if x.layout != y.layout or isinstance(x.layout, tuple):
            raise self.refuse(n, "its inputs have different layouts")
        from ..layers import REGISTRY
        op = "add" if n.op_type == "QLinearAdd" else "multiply"
        shape = REGISTRY[op].infer_shape([x.shape, y.shape], {}, {})
        enc = self.enc(n, 6, 7)
        self.add(n, {"op": op, "inputs": [x.name, y.name], "output": enc}, shape, x.layout, enc)

    def concat(self, n, a):
        """com.microsoft QLinearConcat (s_Y, zp_Y, then (X, s_X, zp_X) per input; axis)."""
        xs = [self.operand(n, k, k + 1, k + 2) for k in range(2, len(n.input), 3)]
        axis = a.get("axis")
        rank = len(xs[0].shape)
        if axis is None or len({str(x.layout) for x in xs}) != 1 or \
                isinstance(xs[0].layout, tuple) or not 0 < axis % rank:
            raise self.refuse(n, f"axis {axis}: refq concatenates same-layout tensors on a "
                              "non-batch axis")
        axis = {1: 3, 2: 1, 3: 2}[axis % rank] if xs[0].layout == "nchw" else axis % rank
        from ..layers import REGISTRY
        shape = REGISTRY["concat"].infer_shape([x.shape for x in xs], {"axis": axis}, {})
        enc = self.enc(n, 0, 1)
        self.add(n, {"op": "concat", "inputs": [x.name for x in xs], "axis": axis,
                     "output": enc}, shape, xs[0].layout, enc)

    def global_pool(self, n, a):
        """com.microsoft QLinearGlobalAveragePool (X, s_X, zp_X, s_Y, zp_Y), channels_last 0."""
        x = self.operand(n, 0, 1, 2)
        if x.layout != "nchw" or a.get("channels_last", 0):
            raise self.refuse(n, "refq reads it on NCHW tensors (channels_last 0)")
        enc = self.enc(n, 3, 4)
        self.add(n, {"op": "global_avg_pool2d", "inputs": [x.name], "keepdims": True,
                     "output": enc}, (x.shape[0], 1, 1, x.shape[3]), "nchw", enc)

    def dequantize(self, n, a):
        if n.output[0] not in self.m.outputs:
            return self.seg.dequantize(n)
        x = self.operand(n, 0, 1, 2)
        if isinstance(x.layout, tuple):
            raise self.refuse(n, "dequantizes the NCHW flattening of a tensor, which refq holds "
                              "in NHWC order; refq lets only a dense layer read it")
        self.outputs[n.output[0]] = x


_OPS = {"QuantizeLinear": "quantize", "QLinearConv": "qconv", "QLinearMatMul": "qmatmul",
        "MaxPool": "maxpool", "Flatten": "flatten", "Reshape": "flatten",
        "DequantizeLinear": "dequantize", "QLinearAdd": "binary", "QLinearMul": "binary",
        "QLinearConcat": "concat", "QLinearGlobalAveragePool": "global_pool"}


def import_integer(m, input_shapes=None, profile="onnx"):
    """The integer Graph of OnnxModel `m` under `profile` (module docstring)."""
    from ..fixedpoint.lower_params import lower_from_params

    b = _IntBuilder(m, input_shapes)
    b.integer_inputs()
    for n in m.nodes:
        method = _OPS.get(n.op_type)
        if n.op_type != "QuantizeLinear" and n.input and n.input[0] in b.seg.f:
            b.seg.float_op(n, attributes(n))
            continue
        if method is None:
            raise b.refuse(n, f"op type {n.op_type} in an integer ONNX model; refq reads "
                           f"{', '.join(sorted(_OPS))} there (or export the model in QDQ form)")
        getattr(b, method)(n, attributes(n))
    outputs, final = [], []
    for o in m.outputs:
        if o in b.seg.f:
            if isinstance(b.seg.f[o].layout, tuple):
                raise UnsupportedLayerError(f"{b.path}: output '{o}' is the NCHW flattening of "
                                            "a tensor, which refq holds in NHWC order")
            final.append(o)
            b.layouts[o] = b.seg.f[o].layout
            continue
        x = b.outputs.get(o, b.t.get(o))
        if x is None or x.name in {d["name"] for d in b.inputs}:
            raise UnsupportedLayerError(f"{b.path}: output '{o}' is neither a DequantizeLinear "
                                        "of an integer tensor nor an integer tensor refq "
                                        "computes")
        if isinstance(x.layout, tuple):
            raise UnsupportedLayerError(f"{b.path}: output '{o}' is the NCHW flattening of a "
                                        "tensor, which refq holds in NHWC order")
        outputs.append(x.name)
        final.append(x.name)
        b.layouts.setdefault(o, x.layout)
    spec = {"name": m.model.graph.name or "onnx", "inputs": b.inputs + b.seg.spec_inputs,
            "layers": b.layers, "outputs": b.seg.spec_outputs(outputs)}
    g = lower_from_params(spec, profile)
    if b.seg.mixed:
        g = b.seg.join(g, final, b.path)
    g.meta["onnx_layouts"] = {"inputs": {d["name"]: b.layouts[d["name"]] for d in b.inputs},
                              "outputs": {o: b.layouts[o] for o in m.outputs}}
    return g


def weight_zero_point(zp):
    """The weight zero point of a layer from the file's zero points `zp` (1 or one per output
    channel): one int when they agree (the layer's single zero point), else a list of ints, one
    per output channel. The codes are kept as the file gives them: the integer kernels subtract
    zp[o] from output channel o exactly."""
    zp = np.asarray(zp).astype(np.int64).reshape(-1)
    if np.all(zp == zp[0]):
        return int(zp[0])
    return zp.tolist()
