"""The graph walk and the integer node emitters of the lowering (`refq.fixedpoint.lowering`).

`walk` turns a float-like graph plus a `Source` (tensor encodings, fused activations, weight codes,
integer biases) into the integer graph; `lowering.lower` and `lowering.lower_from_params` only build
the Source. `Builder` accumulates the nodes of an integer graph (ops `int_*` of `refq.fixedpoint.kernels`, plus
the dtype-agnostic `reshape`, `flatten`, `identity`) and the encoding of every integer tensor. Each
`Builder` method emits one integer node from explicit encodings (`TensorQ`), so the same code serves
`lower` (encodings from a QuantSim) and `lower_from_params` (encodings given by the caller). Every
number a kernel needs is computed here with the profile's conventions (`Profile.real_multiplier`,
`Profile.derive_multiplier`, `quantize`, `activation_range`) and stored as an explicit param or attr:
the graph runs without the profile.

Requantization parameters (every node that rescales): params `multiplier` (int32), `shift` (int32,
the profile's convention: TFLite signed left shift, TOSA positive right shift) and `real_multiplier`
(float64). For float schemes multiplier and shift are 0 and `real_multiplier` is M as the profile
forms it (rounded to float32 when the profile's multiplier is float32); for integer schemes
`real_multiplier` is the float64 M the multiplier encodes (informational).

Lookup tables (`lut_table`, built by the kernels' `build_lut`), one entry per code v of the input
dtype, x = (v − zp_in)·s_in:
  "float"        f(x) in float64 (refq's float op), q = rint(f/s_out) + zp_out (the
                 integer-faithful definition; ONNX's float op inside QDQ).
  "lut_float"    TFLite `LUTPopulate` (fixedpoint.md §6.2): x = fl32(s_in·fl32(v − zp_in)), f in
                 float32, q = roundf(f·fl32(1/s_out)) + zp_out (half away), clamped.
  "fixed_point"  hard_swish: TFLite/TFLM `reference_ops::HardSwish` (§6.5) on every int8 code.
  "gemmlowp"     sigmoid/tanh: TFLM's fixed-point LOGISTIC/TANH (§6.1) on every int8 code; it
                 needs TFLite's fixed output encodings (the lowering falls back to "lut_float" and
                 says so in graph.meta["integer"]["notes"] otherwise).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import FixedPointError, RefqError
from ..graph import Graph, Node, TensorSpec
from .profiles import Profile
from .requantize import FLOAT_SCHEMES
from .requantize import quantize as quantize_float

__all__ = ["TensorQ", "Builder", "DTYPE_RANGES", "lut_table", "LUT_OPS", "SUPPORTED_OPS", "Source",
           "walk"]

#: The integer tensor dtypes of the contract and their value ranges.
DTYPE_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
                "int32": (-(1 << 31), (1 << 31) - 1)}
NP_DTYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32}
#: Ops lowered to a lookup table.
LUT_OPS = ("hard_swish", "sigmoid", "tanh", "hard_sigmoid", "leaky_relu")
#: Ops with an integer lowering.
SUPPORTED_OPS = ("conv2d", "dense", "add", "multiply", "relu", "relu6", "clip", "max_pool2d",
                 "avg_pool2d", "global_avg_pool2d", "concat", "flatten", "reshape", "identity",
                 "zero_pad2d", "softmax") + LUT_OPS
_ACT_NAMES = ("none", "relu", "relu6", "relu_n1_to_1")


def where_of(n) -> str:
    """How error messages name a node."""
    return f"node '{n.name}' ({n.op})"


@dataclass(frozen=True)
class TensorQ:
    """The encoding of one integer tensor: real value = (q − zero_point)·scale, q ∈ [qmin, qmax],
    held in `dtype`. `scale` is the float32 scale as a Python float."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int
    dtype: str

    def __post_init__(self):
        s = float(self.scale)
        if not np.isfinite(s) or s <= 0 or float(np.float32(s)) != s:
            raise FixedPointError(f"scale must be a finite positive float32 value, got {s!r}")
        if self.dtype not in DTYPE_RANGES:
            raise FixedPointError(f"dtype must be one of {list(DTYPE_RANGES)}, got {self.dtype!r}")
        lo, hi = DTYPE_RANGES[self.dtype]
        if not (lo <= self.qmin <= self.qmax <= hi and lo <= self.zero_point <= hi):
            raise FixedPointError(f"grid [{self.qmin}, {self.qmax}] with zero point "
                                  f"{self.zero_point} does not fit {self.dtype}")

    def to_json(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point, "dtype": self.dtype,
                "qmin": self.qmin, "qmax": self.qmax}


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

    # ---- plumbing ---------------------------------------------------------------------------
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
        self._taken["node"].add(name)
        self._taken["tensor"].add(output)
        self.nodes.append(Node(name, op, list(inputs), [output], dict(attrs), dict(params or {})))
        if tq is not None:
            self.tensors[output] = tq
        self.requants[name] = int(requants)
        return output

    def _scheme_attrs(self, scheme):
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

    # ---- float <-> int boundaries ----------------------------------------------------------
    def quantize(self, name, x, out, tq):
        return self.emit(name, "int_quantize", [x], out, {
            "scale": tq.scale, "zero_point": tq.zero_point, "qmin": tq.qmin, "qmax": tq.qmax,
            "rounding": self.profile.quantize_rounding}, tq=tq, requants=1)

    def dequantize(self, name, x, out, tq):
        return self.emit(name, "int_dequantize", [x], out,
                         {"scale": tq.scale, "zero_point": tq.zero_point})

    # ---- accumulating layers ----------------------------------------------------------------
    def conv(self, name, op, x, out, tq_in, tq_out, weight, weight_zp, s_w, bias, act, geometry,
             *, per_channel: bool):
        """int_conv2d / int_dense: weight codes, optional int32 bias, per-channel requantization."""
        p = self.profile
        fc = op == "int_dense"
        scheme = (p.fc_requant or p.requant) if fc else p.requant
        kind = "fc_per_tensor" if fc and not per_channel else "conv"
        where = f"node '{name}' ({op[4:]})"
        s_w = np.broadcast_to(np.asarray(s_w, dtype=np.float32), (weight.shape[0],))
        try:
            real = p.real_multiplier(tq_in.scale, s_w, tq_out.scale, kind=kind)
        except FixedPointError as e:
            raise FixedPointError(f"{where}: {e}") from None
        params = {"weight": weight}
        if bias is not None:
            params["bias"] = bias
        params.update(self.requant_params(real, scheme, where))
        attrs = dict(geometry)
        attrs.update({"input_zp": tq_in.zero_point, "weight_zp": int(weight_zp),
                      "output_zp": tq_out.zero_point, "act_min": int(act[0]), "act_max": int(act[1]),
                      **self._scheme_attrs(scheme), "accumulator_bits": p.acc_bits,
                      "overflow": p.overflow})
        return self.emit(name, op, [x], out, attrs, params, tq=tq_out, requants=1)

    def requantize(self, name, x, out, tq_in, tq_out, act=None):
        """x -> clamp(requantize(x − zp_in) + zp_out, act) with M = s_in/s_out."""
        p = self.profile
        where = f"node '{name}' (requantize)"
        real = p.real_multiplier(tq_in.scale, 1.0, tq_out.scale)
        act = (tq_out.qmin, tq_out.qmax) if act is None else act
        return self.emit(name, "int_requantize", [x], out, {
            "input_zp": tq_in.zero_point, "output_zp": tq_out.zero_point,
            "act_min": int(act[0]), "act_max": int(act[1]), **self._scheme_attrs(p.requant)},
            self.requant_params(real, p.requant, where), tq=tq_out, requants=1)

    def add(self, name, a, b, out, tq_a, tq_b, tq_out, act):
        """int_add by the profile's Add scheme ("tosa" is the TFLite formula with TOSA RESCALEs,
        fixedpoint.md §4.3; a float-requantizing profile uses "float")."""
        p = self.profile
        where = f"node '{name}' (add)"
        sa, sb, so = (np.float64(np.float32(t.scale)) for t in (tq_a, tq_b, tq_out))
        attrs = {"a_zp": tq_a.zero_point, "b_zp": tq_b.zero_point, "output_zp": tq_out.zero_point,
                 "act_min": int(act[0]), "act_max": int(act[1]), "accumulator_bits": p.acc_bits,
                 "overflow": p.overflow}
        if p.add in ("tflite", "tosa") and p.requant not in FLOAT_SCHEMES:
            ls = p.add_left_shift
            twice = 2.0 * max(sa, sb)
            params = {}
            for key, real in (("a", sa / twice), ("b", sb / twice),
                              ("out", twice / (float(1 << ls) * so))):
                r = self.requant_params(real, p.requant, where)
                params[f"{key}_multiplier"], params[f"{key}_shift"] = r["multiplier"], r["shift"]
            attrs.update(scheme=p.requant, add=p.add, left_shift=ls)
            return self.emit(name, "int_add", [a, b], out, attrs, params, tq=tq_out, requants=3)
        if p.add != "float":
            self.notes.append(f"{name}: add scheme {p.add!r} with float requantization "
                              f"{p.requant!r} is computed as 'float'")
        params = {"a_real": np.array([sa / so]), "b_real": np.array([sb / so])}
        attrs.update(scheme=self.float_scheme(), add="float")
        return self.emit(name, "int_add", [a, b], out, attrs, params, tq=tq_out, requants=1)

    def multiply(self, name, a, b, out, tq_a, tq_b, tq_out, act):
        p = self.profile
        where = f"node '{name}' (multiply)"
        real = p.real_multiplier(tq_a.scale, tq_b.scale, tq_out.scale, kind="mul")
        return self.emit(name, "int_multiply", [a, b], out, {
            "a_zp": tq_a.zero_point, "b_zp": tq_b.zero_point, "output_zp": tq_out.zero_point,
            "act_min": int(act[0]), "act_max": int(act[1]), **self._scheme_attrs(p.requant)},
            self.requant_params(real, p.requant, where), tq=tq_out, requants=1)

    # ---- pooling ----------------------------------------------------------------------------
    def mean(self, name, x, out, tq_in, tq_out, keepdims, count):
        """int_mean over H, W (`count` = H·W, needed by the "tosa" scheme's multiplier)."""
        p = self.profile
        where = f"node '{name}' (global_avg_pool2d)"
        s_in, s_out = np.float64(np.float32(tq_in.scale)), np.float64(np.float32(tq_out.scale))
        if p.mean == "float":
            scheme = self.float_scheme()
            params = {"multiplier": np.zeros(1, np.int32), "shift": np.zeros(1, np.int32),
                      "real_multiplier": np.array([s_in / s_out])}
        elif p.mean == "tflite":
            scheme = p.requant
            params = self.requant_params(s_in / s_out, scheme, where)
        else:  # "tosa": REDUCE_SUM + RESCALE(s_in/(n·s_out)), single round (fixedpoint.md §5.3)
            if count is None:
                raise FixedPointError(f"{where}: the 'tosa' mean needs static H and W")
            scheme = "tosa_single"
            params = self.requant_params(s_in / (count * s_out), scheme, where)
        return self.emit(name, "int_mean", [x], out, {
            "keepdims": bool(keepdims), "input_zp": tq_in.zero_point,
            "output_zp": tq_out.zero_point, "act_min": tq_out.qmin, "act_max": tq_out.qmax,
            "mean": p.mean, "scheme": scheme, "accumulator_bits": p.acc_bits,
            "overflow": p.overflow}, params, tq=tq_out, requants=1)

    def avg_pool(self, name, x, out, tq_in, tq_out, geometry):
        p = self.profile
        where = f"node '{name}' (avg_pool2d)"
        attrs = dict(geometry)
        attrs.update({"input_zp": tq_in.zero_point, "output_zp": tq_out.zero_point,
                      "act_min": tq_out.qmin, "act_max": tq_out.qmax, "avg": p.avgpool})
        params = {}
        if (tq_in.scale, tq_in.zero_point) != (tq_out.scale, tq_out.zero_point):
            scheme = self.float_scheme() if p.avgpool == "float" else p.requant
            real = p.real_multiplier(tq_in.scale, 1.0, tq_out.scale)
            params = self.requant_params(real, scheme, where)
            attrs.update(self._scheme_attrs(scheme))
        return self.emit(name, "int_avg_pool2d", [x], out, attrs, params, tq=tq_out,
                         requants=1 + bool(params and p.avgpool != "float"))

    def max_pool(self, name, x, out, tq, geometry):
        attrs = dict(geometry)
        attrs.update(act_min=tq.qmin, act_max=tq.qmax)
        return self.emit(name, "int_max_pool2d", [x], out, attrs, tq=tq)

    # ---- data movement and clamps -----------------------------------------------------------
    def pad(self, name, x, out, tq, pads):
        return self.emit(name, "int_pad", [x], out, {"pads": list(pads), "value": tq.zero_point},
                         tq=tq)

    def clamp(self, name, x, out, tq, act):
        return self.emit(name, "int_clamp", [x], out,
                         {"act_min": int(act[0]), "act_max": int(act[1])}, tq=tq)

    def concat(self, name, xs, out, tq, axis):
        return self.emit(name, "int_concat", xs, out, {"axis": int(axis)}, tq=tq)

    def passthrough(self, name, op, x, out, tq, attrs):
        return self.emit(name, op, [x], out, attrs, tq=tq)

    def lut(self, name, x, out, tq_in, tq_out, table):
        return self.emit(name, "int_lut", [x], out,
                         {"input_qmin": DTYPE_RANGES[tq_in.dtype][0]},
                         {"table": table}, tq=tq_out, requants=1)

    def softmax(self, name, x, out, tq_in, tq_out):
        """int_softmax: "tflite" (the TFLM fixed-point reference, §7) when the profile models it
        and the output is scale 1/256, zero point −128 (int8); otherwise "float"."""
        p = self.profile
        attrs = {"input_zp": tq_in.zero_point, "output_zp": tq_out.zero_point,
                 "act_min": tq_out.qmin, "act_max": tq_out.qmax}
        params = {}
        tflite_out = (tq_out.scale == 1.0 / 256 and tq_out.dtype in ("int8", "uint8")
                      and tq_out.zero_point == DTYPE_RANGES[tq_out.dtype][0]
                      and tq_in.dtype in ("int8", "uint8"))
        if p.softmax == "gemmlowp" and tflite_out:
            from .kernels.softmax import tflite_softmax_params

            try:
                attrs.update(tflite_softmax_params(
                    tq_in.scale, single_rounding=p.requant == "single_round"))
            except FixedPointError as e:
                raise FixedPointError(f"node '{name}' (softmax): {e}") from None
            attrs["softmax"] = "tflite"
        else:
            if p.softmax != "float":
                why = ("its output encoding is not scale 1/256, zero point -128 (int8)"
                       if p.softmax == "gemmlowp" else
                       f"profile softmax {p.softmax!r} is not modelled")
                self.notes.append(f"{name}: softmax computed as 'float' (dequantize, float64 "
                                  f"softmax, quantize half even) because {why}")
            attrs.update(softmax="float", input_scale=tq_in.scale, output_scale=tq_out.scale)
        return self.emit(name, "int_softmax", [x], out, attrs, params, tq=tq_out, requants=1)


# ---- lookup tables ---------------------------------------------------------------------------

_NAMED = ("sigmoid", "tanh", "hard_swish")
_KERAS3_HARD_SIGMOID = {"alpha": 1.0 / 6.0, "beta": 0.5}


def _float_fn(op: str, attrs: dict):
    from ..layers import get_op

    f = get_op(op)
    return lambda x: f.forward([x], {}, attrs)


def lut_table(op: str, attrs: dict, tq_in: TensorQ, tq_out: TensorQ, scheme: str,
              where: str) -> np.ndarray:
    """The int_lut table of float op `op` (node attributes `attrs`) from tq_in to tq_out by
    `scheme`, one entry per code of tq_in's dtype, built by the kernels' `build_lut` (see the
    module docstring): "lut_float" uses TFLite's float32 transforms for sigmoid/tanh/hard_swish
    (and the Keras 3 hard_sigmoid), refq's float op evaluated in float32 otherwise; "float" uses
    refq's float op in float64 with the node's attributes."""
    from .kernels.lut import build_lut

    if scheme in ("lut_float",) and (op in _NAMED or (
            op == "hard_sigmoid" and all(np.isclose(attrs[k], v, rtol=0, atol=0)
                                         for k, v in _KERAS3_HARD_SIGMOID.items()))):
        fn = op
    elif scheme in ("gemmlowp", "fixed_point"):
        fn = op
    else:
        fn = _float_fn(op, attrs)
    try:
        t = build_lut(fn, tq_in.scale, tq_in.zero_point, tq_out.scale, tq_out.zero_point,
                      tq_out.qmin, tq_out.qmax, scheme, input_range=DTYPE_RANGES[tq_in.dtype])
    except FixedPointError as e:
        raise FixedPointError(f"{where}: {e}") from None
    return np.asarray(t, dtype=np.int64).astype(NP_DTYPES[tq_out.dtype])


# ---- the graph walk shared by lower and lower_from_params -----------------------------------

def _act_range(profile, kind, attrs, tq, where):
    """(act_min, act_max) of a fused or standalone activation on tq's grid."""
    try:
        if kind in _ACT_NAMES:
            return profile.activation_range(kind, tq.scale, tq.zero_point, qmin=tq.qmin,
                                            qmax=tq.qmax)
        if kind == "clip":
            lo, hi = (int(quantize_float(np.float32(attrs[k]), tq.scale, tq.zero_point,
                                         qmin=tq.qmin, qmax=tq.qmax,
                                         rounding=profile.activation_range_rounding))
                      for k in ("min", "max"))
            return lo, hi
    except FixedPointError as e:
        raise FixedPointError(f"{where}: {e}") from None
    raise FixedPointError(f"{where}: unknown activation {kind!r}; use one of "
                          f"{list(_ACT_NAMES) + ['clip']}")


# ---- the graph walk shared by lower and lower_from_params -----------------------------------

@dataclasses.dataclass
class Source:
    """What the walk needs to know about a float-like graph.

    tq: {float tensor: TensorQ}; acts: {node: (activation kind, attrs, output tensor)} for fused
    activations; absorbed: activation nodes fused into their producer; weight(node) -> (codes,
    zero point, s_w float32 [C], per_channel); bias(node, tq_in, s_w) -> int32 [C] or None;
    input_q: {(node, input index): TensorQ} for inputs requantized as a node reads them.
    """

    tq: dict
    acts: dict
    absorbed: set
    weight: object
    bias: object
    input_q: dict


def walk(g: Graph, src: Source, p: Profile, name: str, meta_extra: dict) -> Graph:
    """The integer graph of float-like graph `g` under profile `p` (rules: refq.fixedpoint.lowering
    module docstring), named `name`, validated; `meta_extra` joins graph.meta["integer"]."""
    order = g.topological_order()
    shapes = g.infer_shapes()
    b = Builder(p, {n.name for n in order},
                {t for n in order for t in n.inputs + n.outputs} | {s.name for s in g.inputs})
    outputs = set(g.outputs)
    imap = {}
    tq = src.tq
    for spec in g.inputs:
        if spec.name in outputs:
            raise FixedPointError(f"graph input '{spec.name}' is also a graph output; the integer "
                                  "graph needs an op between them")
        imap[spec.name] = b.quantize(b.fresh(f"{spec.name}:quantize", "node"), spec.name,
                                     b.fresh(f"{spec.name}:q"), tq[spec.name])

    def out_name(t):
        o = b.fresh(f"{t}:q") if t in outputs else t
        imap[t] = o
        return o

    def read(n, i):
        t = n.inputs[i]
        x, q = imap[t], tq[t]
        q2 = src.input_q.get((n.name, i))
        if q2 is not None and q2 != q:
            x = b.requantize(b.fresh(f"{n.name}:input{i}", "node"), x,
                             b.fresh(f"{n.name}:input{i}"), q, q2)
            q = q2
        return x, q

    def finish(n, natural, emit):
        """emit(node name, output tensor, tq) the op producing `natural`; requantize to the
        output's encoding when it differs."""
        t = n.outputs[0]
        if tq[t] == natural:
            return emit(n.name, out_name(t), natural)
        mid = b.fresh(f"{t}:pre")
        emit(n.name, mid, natural)
        return b.requantize(b.fresh(f"{n.name}:requant", "node"), mid, out_name(t), natural, tq[t])

    for n in order:
        if n.name in src.absorbed:
            continue
        where = where_of(n)
        a = n.attrs
        if n.op in ("conv2d", "dense"):
            x, q_in = read(n, 0)
            kind, kattrs, t_out = src.acts.get(n.name, ("none", {}, n.outputs[0]))[:3]
            q_out = tq[t_out]
            act = _act_range(p, kind, kattrs, q_out, where)
            codes, wzp, s_w, per_channel = src.weight(n)
            bias = src.bias(n, q_in, s_w)
            geom = {k: a[k] for k in ("strides", "dilations", "padding", "pads", "groups")} \
                if n.op == "conv2d" else {}
            b.conv(n.name, "int_" + n.op, x, out_name(t_out), q_in, q_out, codes, wzp, s_w, bias,
                   act, geom, per_channel=per_channel)
        elif n.op in ("add", "multiply"):
            if len(n.inputs) != 2:
                raise FixedPointError(f"{where}: the integer {n.op} takes 2 inputs, got "
                                      f"{len(n.inputs)}; split it into a chain of binary ops")
            (xa, qa), (xb, qb) = read(n, 0), read(n, 1)
            kind, kattrs, t_out = src.acts.get(n.name, ("none", {}, n.outputs[0]))[:3]
            q_out = tq[t_out]
            act = _act_range(p, kind, kattrs, q_out, where)
            getattr(b, n.op)(n.name, xa, xb, out_name(t_out), qa, qb, q_out, act)
        elif n.op in ("relu", "relu6", "clip"):
            x, q_in = read(n, 0)
            q_out = tq[n.outputs[0]]
            act = _act_range(p, n.op, a, q_out, where)
            if q_out == q_in:
                b.clamp(n.name, x, out_name(n.outputs[0]), q_out, act)
            else:
                b.requantize(n.name, x, out_name(n.outputs[0]), q_in, q_out, act=act)
        elif n.op in ("max_pool2d", "zero_pad2d", "flatten", "reshape", "identity"):
            x, q_in = read(n, 0)
            if n.op == "max_pool2d":
                geom = {k: a[k] for k in ("pool_size", "strides", "padding", "pads")}
                finish(n, q_in, lambda nm, o, q: b.max_pool(nm, x, o, q, geom))
            elif n.op == "zero_pad2d":
                finish(n, q_in, lambda nm, o, q: b.pad(nm, x, o, q, a["pads"]))
            else:
                finish(n, q_in, lambda nm, o, q: b.passthrough(nm, n.op, x, o, q, dict(a)))
        elif n.op == "global_avg_pool2d":
            x, q_in = read(n, 0)
            h, w = shapes[n.inputs[0]][1:3]
            count = h * w if h is not None and w is not None else None
            b.mean(n.name, x, out_name(n.outputs[0]), q_in, tq[n.outputs[0]], a["keepdims"], count)
        elif n.op == "avg_pool2d":
            x, q_in = read(n, 0)
            geom = {k: a[k] for k in ("pool_size", "strides", "padding", "pads")}
            b.avg_pool(n.name, x, out_name(n.outputs[0]), q_in, tq[n.outputs[0]], geom)
        elif n.op == "concat":
            q_out = tq[n.outputs[0]]
            xs = []
            for i in range(len(n.inputs)):
                x, q = read(n, i)
                if q != q_out:
                    x = b.requantize(b.fresh(f"{n.name}:requant{i}", "node"), x,
                                     b.fresh(f"{n.name}:requant{i}"), q, q_out)
                xs.append(x)
            b.concat(n.name, xs, out_name(n.outputs[0]), q_out, a["axis"])
        elif n.op in LUT_OPS:
            x, q_in = read(n, 0)
            q_out = tq[n.outputs[0]]
            if n.op in ("sigmoid", "tanh"):
                scheme = p.logistic_tanh
            elif n.op == "hard_swish":
                scheme = p.hard_swish
            else:
                scheme = "float" if p.logistic_tanh == "float" else "lut_float"
            if scheme == "gemmlowp":
                want = (1.0 / 256, -128) if n.op == "sigmoid" else (1.0 / 128, 0)
                if (q_in.dtype, q_out.dtype) != ("int8", "int8") or \
                        (q_out.scale, q_out.zero_point) != want:
                    b.notes.append(
                        f"{n.name}: the TFLM fixed-point {n.op} needs int8 with output scale "
                        f"{want[0]}, zero point {want[1]}; the table is built with 'lut_float' "
                        "(LiteRT LUTPopulate) instead")
                    scheme = "lut_float"
            if scheme == "fixed_point" and (q_in.dtype, q_out.dtype) != ("int8", "int8") and \
                    (q_in.dtype, q_out.dtype) != ("uint8", "uint8"):
                raise FixedPointError(f"{where}: profile '{p.name}' computes hard_swish with "
                                      f"TFLite's 8-bit fixed-point kernel; got {q_in.dtype} -> "
                                      f"{q_out.dtype}")
            table = lut_table(n.op, a, q_in, q_out, scheme, where)
            b.lut(n.name, x, out_name(n.outputs[0]), q_in, q_out, table)
        elif n.op == "softmax":
            rank = len(shapes[n.inputs[0]])
            if a["axis"] not in (-1, rank - 1):
                raise FixedPointError(f"{where}: the integer softmax works on the last axis, got "
                                      f"axis {a['axis']}")
            x, q_in = read(n, 0)
            b.softmax(n.name, x, out_name(n.outputs[0]), q_in, tq[n.outputs[0]])
        else:
            raise FixedPointError(f"{where}: op '{n.op}' has no integer lowering; supported: "
                                  f"{', '.join(SUPPORTED_OPS)}")

    for t in g.outputs:
        b.dequantize(b.fresh(f"{t}:dequantize", "node"), imap[t], t, tq[t])

    meta = {
        "profile": p.name,
        "profile_fields": {f.name: (list(v) if isinstance(v, tuple) else v)
                           for f in dataclasses.fields(p) for v in [getattr(p, f.name)]},
        "tensors": {t: q.to_json() for t, q in b.tensors.items()},
        "float_tensors": dict(imap),
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
