"""The integer graph under construction (`Builder`) and the graph walk (`walk`) of the lowering.

`walk` turns a float-like graph plus a `Source` (tensor encodings, fused activations, weight codes,
integer biases) into the integer graph; `lowering.lower` and `lowering.lower_from_params` only build
the Source. Each float node is lowered by the function of its op family, `LOWERINGS[op](w, node)`
with w the `Walk` (`lower_layers`: conv2d/dense, add/multiply, pooling, data movement;
`lower_contractions`: conv_transpose2d, gemm, matmul; `lower_activations`: relu/relu6/clip,
lookup-table activations and softmax). `Builder` accumulates
the nodes of the integer graph (ops `int_*` of `refq.fixedpoint.kernels`, plus the dtype-agnostic
`reshape`, `flatten`, `identity`) and the encoding (`lower_encodings.TensorQ`) of every integer
tensor. Nodes are emitted from explicit encodings, so the same code serves `lower` (encodings from
a QuantSim) and `lower_from_params` (encodings given by the caller). Every number a kernel needs is
computed with the profile's conventions (`Profile.real_multiplier`, `Profile.derive_multiplier`,
`quantize`, `activation_range`) and stored as an explicit param or attr: the graph runs without the
profile.

Requantization parameters (every node that rescales): params `multiplier` (int32), `shift` (int32,
the profile's convention: TFLite signed left shift, TOSA positive right shift) and `real_multiplier`
(float64). For float schemes multiplier and shift are 0 and `real_multiplier` is M as the profile
forms it (rounded to float32 when the profile's multiplier is float32); for integer schemes
`real_multiplier` is the float64 M the multiplier encodes (informational).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import FixedPointError, RefqError
from ..graph import Graph, Node, TensorSpec
from . import lower_16x8, lower_activations, lower_contractions, lower_layers
from .lower_encodings import where_of
from .profiles import INT16_KERNELS, Profile
from .requantize import FLOAT_SCHEMES
from ..layers import REGISTRY, ops_with

__all__ = ["Builder", "Source", "Walk", "walk", "LOWERINGS", "SUPPORTED_OPS", "LUT_OPS",
           "GRID_PASS", "FUSABLE_PRODUCERS", "FUSABLE_ACTIVATIONS"]

#: Ops lowered to a lookup table.
LUT_OPS = lower_activations.LUT_OPS
#: Ops with an integer lowering (`Traits.lowering` is not None).
SUPPORTED_OPS = ops_with("lowering")
#: Ops that keep their input's grid (no requantization of their own): `Traits.grid_preserving`.
GRID_PASS = ops_with("grid_preserving")
#: Ops whose output can take a fused activation, and the activations that fuse into them
#: (`Traits.takes_activation`, `Traits.fusable_activation`).
FUSABLE_PRODUCERS = ops_with("takes_activation")
FUSABLE_ACTIVATIONS = ops_with("fusable_activation")
#: op -> lower(w, node): the lowering function of the op's family (`Traits.lowering`).
_FAMILIES = {**lower_layers.FAMILIES, **lower_contractions.FAMILIES,
             **lower_activations.FAMILIES}
LOWERINGS = {op: _FAMILIES[REGISTRY[op].traits.lowering] for op in SUPPORTED_OPS}


class Builder:
    """Collects integer nodes and tensor encodings; see the module docstring.

    profile: the Profile whose conventions every parameter follows. node_names, tensor_names: names
    already used (the source graph's), so that helper nodes and tensors get fresh names.
    """

    def __init__(self, profile, node_names=(), tensor_names=()):
        self.profile = profile
        self.nodes: list = []
        self.tensors: dict = {}      # integer tensor -> TensorQ
        self.requants: dict = {}     # node -> number of requantizations (roundings) it performs
        self.notes: list = []
        self._taken = {"node": set(node_names), "tensor": set(tensor_names)}

    def fresh(self, base: str, kind: str = "tensor") -> str:
        """`base`, or `base` with the smallest suffix _2, _3, ... that no node (kind "node") or
        tensor (kind "tensor") is named yet."""
        taken = self._taken[kind]
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    def emit(self, name, op, inputs, output, attrs, params=None, *, tq=None, requants=0):
        """Append integer node `name`; record the encoding `tq` of its output and the number of
        requantizations (roundings) it performs. Returns the output tensor name."""
        self._taken["node"].add(name)
        self._taken["tensor"].add(output)
        self.nodes.append(Node(name, op, list(inputs), [output], dict(attrs), dict(params or {})))
        if tq is not None:
            self.tensors[output] = tq
        self.requants[name] = int(requants)
        return output

    def scheme_attrs(self, scheme):
        """The attrs naming a node's requantization scheme (zp_before_round: float schemes)."""
        return {"scheme": scheme,
                "zp_before_round": bool(self.profile.zp_before_round and scheme in FLOAT_SCHEMES)}

    def requant_params(self, real, scheme, where):
        """{multiplier, shift, real_multiplier} of real multipliers `real` (1-d) for `scheme`."""
        p = self.profile
        real = np.atleast_1d(np.asarray(real, dtype=np.float64))
        if scheme in FLOAT_SCHEMES:
            r = real.astype(np.float32).astype(np.float64) \
                if (p.multiplier == "float32" or scheme == "float32_rne") else real
            zeros = np.zeros(real.shape, dtype=np.int32)
            return {"multiplier": zeros, "shift": zeros.copy(), "real_multiplier": r}
        if p.multiplier in ("float64", "float32"):
            raise FixedPointError(f"{where}: scheme {scheme!r} needs an integer multiplier, profile "
                                  f"'{p.name}' derives {p.multiplier!r} ones")
        try:
            m, s = p.derive_multiplier(real)
        except FixedPointError as e:
            raise FixedPointError(f"{where}: {e}") from None
        m, s = np.atleast_1d(m), np.atleast_1d(s)
        if scheme in ("tflite_double", "single_round") and np.any(s > 30):
            c = int(np.argmax(s > 30))
            raise FixedPointError(f"{where}: real multiplier {float(real[c])!r} (channel {c}) is "
                                  "too large for a TFLite multiplier (shift > 30); check the scales")
        if np.any((m == 0) & (real > 0)):
            self.notes.append(f"{where}: a real multiplier below the {p.multiplier} encoding's "
                              f"range ({float(real[(m == 0) & (real > 0)][0])!r}) is flushed to 0; "
                              "the output is its zero point")
        return {"multiplier": m.astype(np.int32), "shift": s.astype(np.int32),
                "real_multiplier": real}

    def float_scheme(self):
        """The float scheme of ops the profile computes in floating point."""
        return self.profile.requant if self.profile.requant in FLOAT_SCHEMES else "float_rne"

    def quantize(self, name, x, out, tq):
        return self.emit(name, "int_quantize", [x], out, {
            "scale": tq.scale, "zero_point": tq.zero_point, "qmin": tq.qmin, "qmax": tq.qmax,
            "rounding": self.profile.quantize_rounding}, tq=tq, requants=1)

    def dequantize(self, name, x, out, tq):
        return self.emit(name, "int_dequantize", [x], out,
                         {"scale": tq.scale, "zero_point": tq.zero_point})

    def requantize(self, name, x, out, tq_in, tq_out, act=None):
        """x -> clamp(requantize(x − zp_in) + zp_out, act) with M = s_in/s_out; with the profile's
        rescale "qdq", int_requantize mode "qdq" (float32 DequantizeLinear -> QuantizeLinear)."""
        p = self.profile
        where = f"node '{name}' (requantize)"
        act = (tq_out.qmin, tq_out.qmax) if act is None else act
        if p.rescale == "qdq":  # DequantizeLinear -> QuantizeLinear in float32
            return self.emit(name, "int_requantize", [x], out, {
                "input_zp": tq_in.zero_point, "output_zp": tq_out.zero_point,
                "act_min": int(act[0]), "act_max": int(act[1]), "scheme": self.float_scheme(),
                "zp_before_round": False, "mode": "qdq"},
                {"in_scale": np.array([float(tq_in.scale)]),
                 "out_scale": np.array([float(tq_out.scale)])}, tq=tq_out, requants=1)
        real = p.real_multiplier(tq_in.scale, 1.0, tq_out.scale)
        return self.emit(name, "int_requantize", [x], out, {
            "input_zp": tq_in.zero_point, "output_zp": tq_out.zero_point,
            "act_min": int(act[0]), "act_max": int(act[1]), **self.scheme_attrs(p.requant)},
            self.requant_params(real, p.requant, where), tq=tq_out, requants=1)


@dataclasses.dataclass
class Source:
    """What the walk needs to know about a float-like graph.

    tq: {float tensor: TensorQ}; acts: {node: (activation kind, attrs, output tensor)} for fused
    activations; absorbed: activation nodes fused into their producer; weight(node) -> (codes in
    the layout of the node's weight, zero point, s_w float32 [C], per_channel), C the size of the
    weight's output axis (`refq.quant.placement.weight_output_axis`);
    bias(node, tq_in, s_w, bits) -> int32 [C] (int64 when bits, a width beyond the profile's
    bias_bits, is given: the 16x8 layers, `lower_16x8.WIDE_BIAS_BITS`) or None;
    input_q: {(node, input index): TensorQ} for inputs requantized as a node reads them.
    """

    tq: dict
    acts: dict
    absorbed: set
    weight: object
    bias: object
    input_q: dict


@dataclasses.dataclass
class Walk:
    """The state of one walk: the Builder `b`, the Source `src`, the profile `p`, the source
    graph's tensor shapes and outputs, `imap` {float tensor: integer tensor holding it} and
    `int16` the int16 kernel family (`lower_16x8.int16_family`: "tflite", "cmsis-nn" or None)."""

    b: Builder
    src: Source
    p: Profile
    shapes: dict
    outputs: set
    imap: dict
    int16: str | None = None

    @property
    def tq(self) -> dict:
        return self.src.tq

    def out_name(self, t):
        """The integer tensor that will hold float tensor t (`<t>:q` for graph outputs)."""
        o = self.b.fresh(f"{t}:q") if t in self.outputs else t
        self.imap[t] = o
        return o

    def read(self, n, i):
        """(integer tensor, TensorQ) of input i of node n, requantized to the node's input
        encoding (`Source.input_q`) when it has one of its own."""
        t = n.inputs[i]
        x, q = self.imap[t], self.tq[t]
        q2 = self.src.input_q.get((n.name, i))
        if q2 is not None and q2 != q:
            x = self.b.requantize(self.b.fresh(f"{n.name}:input{i}", "node"), x,
                                  self.b.fresh(f"{n.name}:input{i}"), q, q2)
            q = q2
        return x, q

    def finish(self, n, natural, emit):
        """emit(node name, output tensor, tq) the op producing `natural`; requantize to the
        output's encoding when it differs."""
        t = n.outputs[0]
        if self.tq[t] == natural:
            return emit(n.name, self.out_name(t), natural)
        mid = self.b.fresh(f"{t}:pre")
        emit(n.name, mid, natural)
        return self.b.requantize(self.b.fresh(f"{n.name}:requant", "node"), mid,
                                 self.out_name(t), natural, self.tq[t])


def walk(g: Graph, src: Source, p: Profile, name: str, meta_extra: dict,
         int16_kernels="profile") -> Graph:
    """The integer graph of float-like graph `g` under profile `p` (rules: refq.fixedpoint.lowering
    module docstring), named `name`, validated; `meta_extra` joins graph.meta["integer"].
    int16_kernels: the int16 kernel family (`lower_16x8`); "profile" = that of `p`."""
    order = g.topological_order()
    b = Builder(p, {n.name for n in order},
                {t for n in order for t in n.inputs + n.outputs} | {s.name for s in g.inputs})
    family = lower_16x8.int16_family(p) if int16_kernels == "profile" else int16_kernels
    if family not in INT16_KERNELS:
        raise FixedPointError(f"int16_kernels must be 'profile' or one of {INT16_KERNELS}, got "
                              f"{family!r}")
    w = Walk(b, src, p, g.infer_shapes(), set(g.outputs), {}, family)
    for spec in g.inputs:
        if spec.name in w.outputs:
            raise FixedPointError(f"graph input '{spec.name}' is also a graph output; the integer "
                                  "graph needs an op between them")
        w.imap[spec.name] = b.quantize(b.fresh(f"{spec.name}:quantize", "node"), spec.name,
                                       b.fresh(f"{spec.name}:q"), src.tq[spec.name])
    for n in order:
        if n.name in src.absorbed:
            continue
        lower_node = LOWERINGS.get(n.op)
        if lower_node is None:
            raise FixedPointError(f"{where_of(n)}: op '{n.op}' has no integer lowering; "
                                  f"supported: {', '.join(SUPPORTED_OPS)}")
        lower_16x8.check_int16(w, n)
        lower_node(w, n)
    for t in g.outputs:
        b.dequantize(b.fresh(f"{t}:dequantize", "node"), w.imap[t], t, src.tq[t])

    meta = {
        "profile": p.name,
        "profile_fields": {f.name: (list(v) if isinstance(v, tuple) else v)
                           for f in dataclasses.fields(p) for v in [getattr(p, f.name)]},
        "tensors": {t: q.to_json() for t, q in b.tensors.items()},
        "float_tensors": dict(w.imap),
        "fused": {k: v[3] for k, v in src.acts.items() if len(v) > 3},
        "requantizations": dict(b.requants),
        "notes": list(b.notes),
    }
    meta.update(meta_extra)
    inputs = [TensorSpec(s.name, tuple(s.shape), s.dtype) for s in g.inputs]
    ig = Graph(inputs, list(g.outputs), b.nodes, name=name, meta={"integer": meta})
    try:
        ig.validate()
    except FixedPointError:
        raise
    except RefqError as e:
        raise FixedPointError(f"the lowered integer graph '{name}' is invalid: {e}") from None
    return ig

