"""Float segments of integer (QOperator) ONNX models (`Segments`, used by
`onnx_integer.import_integer`); the graph they give is described in `refq.fixedpoint.mixed`.

onnxruntime's quantizer (QOperator format) writes DequantizeLinear -> float operators ->
QuantizeLinear around the operators it was not asked to, or cannot, quantize. Per operator:
  DequantizeLinear(q, s, zp) inside the model   int_dequantize: float32(q − zp)·float32(s)
                        (the ONNX definition; exact operands, one rounding)
  Sigmoid, Tanh         int_f32_unary logistic / tanh: 1 / (1 + expf(−x)) and tanhf in float32
                        (`kernels.float_ref`, C's single-precision functions)
  Softmax(axis)         int_f32_softmax (beta 1) over the axis that is the last one of refq's
                        layout (axis −1, or 1 of an NCHW tensor held NHWC)
  Relu, Flatten         relu, flatten (exact in any float dtype; Flatten(axis 1) of an NCHW
                        tensor keeps the NCHW flattening order as `onnx_integer` does)
  QuantizeLinear(x, s, zp) of a float tensor   int_quantize: clamp(rint(x / s) + zp) in float32
                        (round half to even, the profile's quantize rounding)
These float32 kernels are refq's; the targets compute the same functions with their own
implementations (onnxruntime: MLAS's rational approximations of logistic and tanh and its
softmax; onnx.reference: NumPy's float32 exp and tanh), so float tensors of a segment may differ
from them in the last bits, and a quantized tensor after a segment by one step where such a
difference crosses a rounding boundary (tests/test_mixed_onnx.py measures both).
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedLayerError

__all__ = ["Segments", "FLOAT_OPS"]

#: ONNX operator -> the refq op (and attrs) of a float segment.
FLOAT_OPS = {"Sigmoid": ("int_f32_unary", {"kind": "logistic"}),
             "Tanh": ("int_f32_unary", {"kind": "tanh"}),
             "Softmax": ("int_f32_softmax", {"beta": 1.0}),
             "Relu": ("relu", {}), "Flatten": ("flatten", {})}


class Segments:
    """The float segments of one QOperator model, collected while `onnx_integer` builds its spec
    (`b`, its `_IntBuilder`), and joined to the integer graph by `join`."""

    def __init__(self, b):
        self.b = b
        self.f: dict = {}          # {ONNX float tensor: its tensor record, encoding None}
        self.nodes: list = []      # float Nodes
        self.spec_inputs: list = []
        self.cut_out: list = []    # [(integer spec tensor, float tensor)]

    @property
    def mixed(self) -> bool:
        return bool(self.nodes or self.cut_out or self.spec_inputs)

    def dequantize(self, n):
        """DequantizeLinear inside the model: its output is a float tensor of a segment."""
        x = self.b.operand(n, 0, 1, 2)
        out = n.output[0]
        self.cut_out.append((x.name, out))
        self.f[out] = type(x)(out, x.shape, x.layout, None)

    def quantize(self, n):
        """QuantizeLinear of a float tensor a segment computes: a spec input (the integer graph's
        int_quantize reads the float tensor of the same name)."""
        x = self.f[n.input[0]]
        if any(d["name"] == x.name for d in self.spec_inputs):
            raise self.b.refuse(n, f"quantizes '{n.input[0]}' a second time; refq reads one "
                                "QuantizeLinear per float tensor")
        enc = self.b.enc(n, 1, 2)
        self.spec_inputs.append(dict(name=x.name, shape=list(x.shape), **enc))
        self.b.t[n.output[0]] = type(x)(x.name, x.shape, x.layout, enc)

    def float_op(self, n, a):
        """A float operator of a segment (FLOAT_OPS); UnsupportedLayerError naming it otherwise."""
        from ..graph import Node

        if n.op_type not in FLOAT_OPS:
            raise self.b.refuse(n, "a float operator between DequantizeLinear and QuantizeLinear "
                                "(a float segment) that refq has no float32 kernel for; "
                                f"supported there: {', '.join(sorted(FLOAT_OPS))}")
        x = self.f[n.input[0]]
        op, attrs = FLOAT_OPS[n.op_type]
        shape, layout = x.shape, x.layout
        if n.op_type == "Softmax":
            rank = len(x.shape)
            axis = a.get("axis", -1) % rank
            last = (axis == 1) if x.layout == "nchw" else (axis == rank - 1)
            if not last or isinstance(x.layout, tuple):
                raise self.b.refuse(n, f"softmax over axis {a.get('axis', -1)} of a tensor of "
                                    f"shape {list(x.onnx_shape)}: refq's float32 softmax reduces "
                                    "the channel (last held) axis")
        if n.op_type == "Flatten":
            if a.get("axis", 1) != 1 or None in x.shape[1:]:
                raise self.b.refuse(n, "refq reads Flatten(axis=1) of a tensor of known size")
            if x.layout == "nchw":
                _, c, h, w = x.onnx_shape
                layout = "same" if h * w == 1 else ("flat", c, h, w)
            shape = (x.shape[0], int(np.prod(x.shape[1:])))
        out = n.output[0]
        self.nodes.append(Node(n.name or out, op, [x.name], [out], dict(attrs), {}))
        self.f[out] = type(x)(out, shape, layout, None)

    def spec_outputs(self, outputs):
        """The spec's outputs: the integer outputs, or (every output float) the integer tensors
        the segments dequantize."""
        return outputs or list(dict.fromkeys(x for x, _ in self.cut_out))

    def join(self, g, outputs, path):
        """Integer graph `g` with the float segments (`refq.fixedpoint.mixed.splice`);
        `outputs`: the refq graph outputs in the file's order."""
        from ..fixedpoint.lower_encodings import TensorQ
        from ..fixedpoint.lower_graph import Builder
        from ..fixedpoint.mixed import splice
        from ..fixedpoint.profiles import get_profile

        meta = g.meta["integer"]
        imap, tensors = meta["float_tensors"], meta["tensors"]
        b = Builder(get_profile(meta["profile"]), {n.name for n in g.nodes + self.nodes},
                    {t for n in g.nodes + self.nodes for t in n.inputs + n.outputs}
                    | {x.name for x in g.inputs})
        for x, f in self.cut_out:
            t = imap.get(x, x)
            q = TensorQ(**{k: tensors[t][k] for k in ("scale", "zero_point", "qmin", "qmax",
                                                      "dtype")})
            b.dequantize(b.fresh(f"{f}:dequantize", "node"), t, f, q)
        cut = {d["name"] for d in self.spec_inputs}
        drop = {n.name for n in g.nodes if n.op == "int_dequantize" and n.outputs[0] not in
                outputs}
        inputs = [x for x in g.inputs if x.name not in cut]
        if not inputs:
            raise UnsupportedLayerError(f"{path}: every graph input is read by float operators; "
                                        "refq reads QOperator models whose inputs are quantized "
                                        "(QuantizeLinear or integer inputs)")
        return splice(g, inputs, outputs, self.nodes + b.nodes, drop=drop, where=path)
