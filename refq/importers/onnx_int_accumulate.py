"""ONNX ConvInteger / MatMulInteger models -> an integer refq Graph of accumulators, with the
file's parameters, run by `refq.fixedpoint.run.run_int`.

Operators (onnx.ai operator pages):
    ConvInteger(x, w, x_zero_point, w_zero_point)   y[n, o, i, j] = Σ_{c,u,v} (x_pad[n, c,
                    i·s + u·d, j·s + v·d] − zp_x)·(w[o, c, u, v] − zp_w[o]), int32, where the
                    padding of x holds zp_x (the padding contributes 0); attributes as Conv
                    (pads, strides, dilations, group, auto_pad); a 2-D convolution on NCHW
                    inputs -> int_conv2d with input_zp = zp_x, weight_zp = zp_w, weight OIHW ->
                    OHWI.
    MatMulInteger(a, b, a_zero_point, b_zero_point)  y = (a − zp_a)·(b − zp_b), int32, with a
                    an activation [N, ..., K] and b a constant [K, M] (zp_b per column allowed)
                    -> int_dense with weight bᵀ.
    Weight zero points that differ per output channel (w_zero_point [M], b_zero_point per
    column) are kept with the file's codes as the node's parameter weight_zp [O]
    (`onnx_integer.weight_zero_point`); the profile must allow them
    (per_channel_weight_zero_point: onnx), else the node is refused naming the profile; a
    profile without weight zero points (weight_zero_point False: tflite, cmsis-nn) refuses any
    non-zero one.
The accumulator is the output: each product node requantizes with the identity (scheme
float_rne, real multiplier 1.0: round(acc·1.0) = acc exactly) onto the int32 grid, and its
graph output is dequantized with scale 1, zero point 0.
Graph inputs and outputs: an int8/uint8 input x is the codes of the encoding (scale 1, zero point
zp_x) read by `run_int(..., codes=True)`: real value x − zp_x, the integer operand of the product;
an output is returned by `run_int(..., codes=True)` as the int32 accumulators. Shapes follow
`onnx_graph`: rank-4 inputs of ConvInteger are NCHW held as NHWC
(`graph.meta["onnx_layouts"]`). Accumulator bits and overflow policy: the profile's.
Refused (one UnsupportedLayerError naming the node): DynamicQuantizeLinear models (their float
scales come from the data at run time: export the model in QDQ form), an accumulator read by
another operator, float or rank-0/1 inputs, constant activations, 1-D or 3-D convolutions.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import UnsupportedLayerError
from ..graph import Graph, Node, TensorSpec
from .onnx_integer import weight_zero_point
from .onnx_load import attributes
from .onnx_ops import _window

__all__ = ["import_accumulators", "ACCUMULATOR_OPS"]

ACCUMULATOR_OPS = ("ConvInteger", "MatMulInteger")
_GRIDS = {np.dtype(np.int8): ("int8", -128, 127), np.dtype(np.uint8): ("uint8", 0, 255)}
_INT32 = (-(1 << 31), (1 << 31) - 1)


class _Shape:
    """The stand-in activation `onnx_ops._window` reads (refq shape [N, H, W, C])."""

    def __init__(self, shape):
        self.shape = shape


class _AccBuilder:
    def __init__(self, m, input_shapes, profile):
        from ..fixedpoint.profiles import get_profile

        self.m, self.path, self.p = m, m.path, get_profile(profile)
        self.given = dict(input_shapes or {})
        self.declared = {name: (dims, dtype) for name, dims, dtype, _ in m.inputs}
        self.nodes, self.inputs, self.tensors, self.layouts, self.outputs = [], [], {}, {}, {}

    def refuse(self, n, what):
        return UnsupportedLayerError(f"{self.path}: node '{n.name or n.output[0]}' "
                                     f"({n.op_type}): {what}")

    unsupported = refuse   # the name `onnx_ops._window` calls

    def const(self, n, slot, what, required=True):
        """The constant in input `slot` of `n` (None when the optional input is absent)."""
        name = n.input[slot] if len(n.input) > slot else ""
        if not name:
            if required:
                raise self.refuse(n, f"its {what} (input {slot}) is missing")
            return None
        if name not in self.m.constants:
            raise self.refuse(n, f"its {what} (input {slot}, '{name}') must be a constant of "
                              "the file")
        return self.m.constants[name]

    def _input_dtype(self, n):
        """The element type of the graph input `n` reads (uint8 when unknown)."""
        dtype = self.declared.get(n.input[0], (None, None))[1]
        return np.dtype(np.uint8) if dtype is None else np.dtype(dtype)

    def activation(self, n, zp, nchw):
        """The refq name and shape of input 0 of `n`, quantized with zero point `zp`."""
        name = n.input[0]
        if name not in self.declared:
            raise self.refuse(n, f"input '{name}' is not a graph input: refq reads "
                              f"{'/'.join(ACCUMULATOR_OPS)} on integer graph inputs")
        dims, dtype = self.declared[name]
        grid = _GRIDS.get(np.dtype(dtype) if dtype is not None else None)
        if grid is None or np.asarray(zp).dtype != np.dtype(dtype):
            raise self.refuse(n, f"input '{name}' of type {dtype} with a zero point of type "
                              f"{np.asarray(zp).dtype}: refq reads int8/uint8 inputs with a zero "
                              "point of the same type")
        dims = tuple(None if d in (None, -1) else int(d) for d in self.given.get(name, dims))
        if len(dims) < 2 or (nchw and (len(dims) != 4 or dims[1] is None)):
            raise self.refuse(n, f"input '{name}' of shape {list(dims)}: refq needs the batch "
                              "axis first" + (" and [N, C, H, W] with a known C" if nchw else ""))
        shape = (dims[0], *dims[2:], dims[1]) if nchw else dims
        q = f"{name}:q"
        enc = {"scale": 1.0, "zero_point": int(np.asarray(zp).reshape(())), "dtype": grid[0],
               "qmin": grid[1], "qmax": grid[2]}
        if q not in self.tensors:
            self.inputs.append(TensorSpec(name, shape, "float32"))
            self.nodes.append(Node(f"{name}:quantize", "int_quantize", [name], [q],
                                   {"scale": 1.0, "zero_point": enc["zero_point"],
                                    "qmin": grid[1], "qmax": grid[2],
                                    "rounding": self.p.quantize_rounding}, {}))
            self.tensors[q] = enc
            self.layouts[name] = "nchw" if nchw else "same"
        elif self.tensors[q] != enc:
            raise self.refuse(n, f"states zero point {enc['zero_point']} for '{name}', which "
                              f"another reader reads with {self.tensors[q]['zero_point']}")
        return q, shape

    def product(self, n, op, x, attrs, weight, weight_zp, layout):
        """Append the accumulator node and its int32 output (module docstring)."""
        out = n.output[0]
        readers = [r for r in self.m.nodes for t in r.input if t == out]
        if readers or out not in self.m.outputs:
            raise self.refuse(n, f"its int32 output '{out}' is read by "
                              f"{readers[0].op_type if readers else 'nothing'}; refq reads "
                              "accumulators that are graph outputs")
        name = f"{n.name or out}:acc"
        a = dict(attrs, input_zp=self.tensors[x]["zero_point"], weight_zp=weight_zp,
                 output_zp=0, act_min=_INT32[0], act_max=_INT32[1], scheme="float_rne",
                 zp_before_round=False, accumulator_bits=self.p.acc_bits,
                 overflow=self.p.overflow)
        params = {"weight": np.ascontiguousarray(weight).astype(np.int64),
                  "real_multiplier": np.ones(1)}
        if weight_zp != 0 and not self.p.weight_zero_point:
            shown = weight_zp[:4] if isinstance(weight_zp, list) else weight_zp
            raise self.refuse(n, f"weight zero point(s) {shown}: profile '{self.p.name}' has "
                              "no weight zero point (weight_zero_point False; its kernels take "
                              "symmetric weights): choose a profile that allows them "
                              "(`refq profiles`: onnx, ort, tosa)")
        if isinstance(weight_zp, list):   # one per output channel (`weight_zero_point`)
            if not self.p.per_channel_weight_zero_point:
                raise self.refuse(n, f"weight zero points differ per output channel "
                                  f"({weight_zp[:4]}...); profile '{self.p.name}' holds one "
                                  "weight zero point per layer (per_channel_weight_zero_point "
                                  "False): choose a profile that allows them (`refq profiles`: "
                                  "onnx)")
            params["weight_zp"] = np.asarray(weight_zp, np.int32)
            a["weight_zp"] = 0
        self.nodes.append(Node(name, op, [x], [name], a, params))
        self.tensors[name] = {"scale": 1.0, "zero_point": 0, "dtype": "int32",
                              "qmin": _INT32[0], "qmax": _INT32[1]}
        self.nodes.append(Node(f"{out}:dequantize", "int_dequantize", [name], [out],
                               {"scale": 1.0, "zero_point": 0}, {}))
        self.outputs[out] = name
        self.layouts[out] = layout

    def _operand(self, n, what: str, subject: str, nchw: bool):
        """(activation, shape) of input 0, its zero point (input 2, `what`) one value or none."""
        zp = self.const(n, 2, what, required=False)
        zp = np.zeros((), self._input_dtype(n)) if zp is None else np.asarray(zp)
        if zp.size != 1:
            raise self.refuse(n, f"{subject} must be one value (per tensor)")
        return self.activation(n, zp.reshape(()), nchw=nchw)

    def _weight_zero_points(self, n, w, what: str, count: int, per: str):
        """The zero points of constant weights `w` (input 3, `what`): 1 or `count` values."""
        zp = self.const(n, 3, what, required=False)
        zp = np.zeros(1, w.dtype) if zp is None else np.asarray(zp).reshape(-1)
        if zp.size not in (1, count):
            raise self.refuse(n, f"{what} of {zp.size} values: refq reads 1 or {count} ({per})")
        return zp

    def conv(self, n, a):
        w = self.const(n, 1, "weight")
        x, shape = self._operand(n, "input zero point", "its input zero point", nchw=True)
        if w.ndim != 4 or w.dtype not in _GRIDS:
            raise self.refuse(n, f"weight of shape {list(w.shape)} and type {w.dtype}: refq reads "
                              "2-D convolutions with int8/uint8 OIHW weights")
        zp_w = self._weight_zero_points(n, w, "weight zero point", w.shape[0],
                                        "one per output channel")
        codes, zp = w.transpose(0, 2, 3, 1), weight_zero_point(zp_w)
        strides = [int(v) for v in a.get("strides", [1, 1])]
        dilations = [int(v) for v in a.get("dilations", [1, 1])]
        padding, pads = _window(self, n, a, _Shape(shape), w.shape[2:], strides, dilations)
        attrs = {"strides": strides, "dilations": dilations, "padding": padding, "pads": pads,
                 "groups": int(a.get("group", 1))}
        self.product(n, "int_conv2d", x, attrs, codes, zp, "nchw")

    def matmul(self, n, a):
        b = self.const(n, 1, "second operand (a constant [K, M] matrix)")
        x, shape = self._operand(n, "zero point of a", "the zero point of a", nchw=False)
        if b.ndim != 2 or b.dtype not in _GRIDS:
            raise self.refuse(n, f"second operand of shape {list(b.shape)} and type {b.dtype}: "
                              "refq reads a constant int8/uint8 [K, M] matrix")
        zp_b = self._weight_zero_points(n, b, "zero point of b", b.shape[1], "one per column")
        codes, zp = np.ascontiguousarray(b.T), weight_zero_point(zp_b)
        self.product(n, "int_dense", x, {}, codes, zp, "same")


def import_accumulators(m, input_shapes=None, profile="onnx"):
    """The integer Graph of OnnxModel `m` whose operators are ConvInteger / MatMulInteger
    (module docstring), under `profile`'s accumulator width and overflow policy."""
    b = _AccBuilder(m, input_shapes, profile)
    for n in m.nodes:
        if n.op_type == "ConvInteger":
            b.conv(n, attributes(n))
        elif n.op_type == "MatMulInteger":
            b.matmul(n, attributes(n))
        else:
            raise b.refuse(n, f"op type {n.op_type} in a model of {'/'.join(ACCUMULATOR_OPS)}; "
                           "refq reads models of those operators alone (dynamically quantized "
                           "models, with float rescaling after them, are not imported: export "
                           "the model in QDQ form)")
    missing = [o for o in m.outputs if o not in b.outputs]
    if missing:
        raise UnsupportedLayerError(f"{b.path}: outputs {missing} are not accumulators of "
                                    f"{'/'.join(ACCUMULATOR_OPS)}")
    p = b.p
    meta = {"profile": p.name,
            "profile_fields": {f.name: (list(v) if isinstance(v, tuple) else v)
                               for f in dataclasses.fields(p) for v in [getattr(p, f.name)]},
            "tensors": dict(b.tensors), "float_tensors": dict(b.outputs), "fused": {},
            "requantizations": {}, "source": "onnx", "kind": "accumulators",
            "notes": ["ConvInteger/MatMulInteger: the int32 accumulators are the outputs "
                      "(identity requantization)"]}
    layouts = {"inputs": {s.name: b.layouts[s.name] for s in b.inputs},
               "outputs": {o: b.layouts[o] for o in m.outputs}}
    g = Graph(b.inputs, list(m.outputs), b.nodes, m.model.graph.name or "onnx",
              {"integer": meta, "onnx_layouts": layouts})
    g.validate()
    return g
