"""Float segments and uint8 inputs and outputs of integer TFLite models (`Segments`, used by
`tflite_int.integer_graph`); the graph they give is described in `refq.fixedpoint.mixed`.

Float segments. LiteRT's converter writes DEQUANTIZE -> float operators -> QUANTIZE where an
operator runs in float (no int8 kernel, or a float fallback the converter chose). Per operator:
  DEQUANTIZE of an integer tensor A inside the model   int_dequantize of A's integer tensor:
                     float32((q − zp)·scale) (LiteRT `Dequantize`, double scale times int, one
                     rounding to float32, which equals the float32 product)
  operators on float32 tensors   LiteRT's float32 reference kernels, as in a dynamic-range
                     model (`tflite_float` with the `kernels.float_ref` int_f32_* ops; max pool,
                     relu/relu6/clip, concatenation, padding and reshapes are exact in any float
                     dtype and stay refq's float ops)
  QUANTIZE of a float tensor inside the model   int_quantize with the output's encoding:
                     clamp(roundf(x / scale) + zp) (LiteRT `AffineQuantize`: float32 division,
                     round half away from zero)
A graph input read by float operators is a float graph input; a graph output computed by a float
operator a float graph output.

uint8 inputs and outputs (`inference_input_type` / `inference_output_type` tf.uint8): the
converter writes QUANTIZE uint8 -> int8 after the input and int8 -> uint8 before the output.
LiteRT's QUANTIZE between integer types is `Requantize` with M = s_in/s_out (double) encoded by
QuantizeMultiplier: y = clamp(MultiplyByQuantizedMultiplier(x − zp_in, M) + zp_out) on the
output type, whose fast path for equal scales and zero points differing by 128 (y = x ^ 0x80)
gives the same codes (M = 1 is (2^30, shift 1), an exact identity). refq's graph takes the uint8
codes (input encoding: the uint8 tensor's scale and zero point) through int_quantize and an
int_requantize to int8, and gives them back through int_requantize to uint8 and int_dequantize.
Other integer type pairs of QUANTIZE are refused, naming the operator.
"""
from __future__ import annotations

from ..graph import TensorSpec
from .tflite_common import unsupported
from .tflite_float import FLOAT_CONVERT, FloatBuild

__all__ = ["Segments", "is_float_op"]


def _acts(model, op):
    return [model.tensors[t] for t in list(op.inputs) + list(op.outputs)
            if t >= 0 and model.tensors[t].data is None]


def is_float_op(model, op) -> bool:
    """True when `op` (not QUANTIZE / DEQUANTIZE) computes on float32 activations only."""
    acts = _acts(model, op)
    return op.opcode not in ("QUANTIZE", "DEQUANTIZE") and bool(acts) and \
        all(t.type == "float32" for t in acts)


def _shape(tt):
    return [None] + [None if d < 0 else int(d) for d in tt.shape[1:]]


class Segments:
    """The float segments and uint8 boundaries of one TFLite model, collected while
    `tflite_int.integer_graph` builds its spec (`s`, a `tflite_int._Spec`), and joined to the
    integer graph by `join` (module docstring)."""

    def __init__(self, model, s):
        self.m, self.s = model, s
        self.fb = FloatBuild(model, hybrid=True)
        self.fb.names = s.names
        self.spec_inputs = []      # spec inputs: the integer tensors of QUANTIZEs after a segment
        self.cut_in = {}           # {spec input: float tensor its int_quantize reads}
        self.cut_out = []          # [(integer TFLite tensor, float TFLite tensor)] of DEQUANTIZEs
        self.u8_in = {}            # {graph input (refq name): its uint8 TFLite tensor}
        self.u8_out = {}           # {uint8 graph output: int8 tensor}
        self.float_inputs = {}     # {TFLite graph input: TensorSpec} read by float operators
        self.float_out = set()     # TFLite tensors computed by float operators
        self.u8_codes = {}         # {refq tensor of uint8 input codes: TFLite graph input}

    @property
    def mixed(self) -> bool:
        return bool(self.cut_in or self.cut_out or self.u8_in or self.u8_out or self.float_inputs)

    def graph_input(self, t, ops) -> bool:
        """True when graph input t is a float input read by float operators only."""
        tt = self.m.tensors[t]
        if tt.type == "float32" and ops and all(is_float_op(self.m, op) for op in ops):
            self.float_inputs[t] = TensorSpec(self.s.names(t), tuple(_shape(tt)), "float32")
            return True
        return False

    def uint8_input(self, t, op):
        """Graph input t (uint8) read by QUANTIZE `op` to int8: its refq input takes uint8 codes."""
        out = self.m.tensors[op.outputs[0]]
        if out.type != "int8":
            raise unsupported(self.m, op, f"QUANTIZE of uint8 input '{self.m.tensors[t].name}' to "
                              f"{out.type}; refq reads uint8 -> int8 at graph inputs")
        self._u8_check(op, t)
        self.u8_in[self.s.names(t)] = t

    def _u8_check(self, op, t):
        tt = self.m.tensors[t]
        if tt.scales.size != 1 or tt.zero_points.size != 1 or not 0 <= tt.zero_points[0] <= 255:
            raise unsupported(self.m, op, f"uint8 tensor '{tt.name}' has scales "
                              f"{tt.scales.tolist()[:3]} and zero points "
                              f"{tt.zero_points.tolist()[:3]}; refq reads one scale and a zero "
                              "point in [0, 255]")

    def take(self, op) -> bool:
        """True when `op` belongs to a float segment or a uint8 boundary (recorded here); False
        when it is an integer operator."""
        m, s = self.m, self.s
        src = m.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None
        dst = m.tensors[op.outputs[0]] if op.outputs and op.outputs[0] >= 0 else None
        if op.opcode == "QUANTIZE" and src is not None and dst is not None:
            if src.type == "float32":
                c = op.outputs[0]
                name = s.names(c)
                self.spec_inputs.append({"name": name, "shape": _shape(dst), **s.enc(op, c)})
                s.spec_of[c] = name
                self.cut_in[name] = s.names(op.inputs[0])
                return True
            if (src.type, dst.type) == ("int8", "uint8") and op.outputs[0] in m.outputs:
                self._u8_check(op, op.outputs[0])
                self.u8_out[op.outputs[0]] = op.inputs[0]
                return True
            if "uint8" in (src.type, dst.type) or src.type != dst.type:
                raise unsupported(m, op, f"QUANTIZE from {src.type} to {dst.type}; refq reads "
                                  "float -> int8/int16, int8 -> int8, and uint8 <-> int8 only at "
                                  "graph inputs and outputs")
            return False
        if op.opcode == "DEQUANTIZE" and src is not None and src.data is None:
            if dst is None or dst.type != "float32":
                raise unsupported(m, op, "DEQUANTIZE to a non-float32 tensor")
            self.cut_out.append((op.inputs[0], op.outputs[0]))
            return True
        if not is_float_op(m, op):
            return False
        convert = FLOAT_CONVERT.get(op.opcode)
        if convert is None:
            raise unsupported(m, op, "a float operator inside an integer model (a float "
                              "segment) that refq has no float32 kernel for; supported there: "
                              f"{', '.join(sorted(FLOAT_CONVERT))}")
        if len(op.outputs) != 1:
            raise unsupported(m, op, f"{len(op.outputs)} outputs")
        convert(self.fb, op)
        self.float_out.add(op.outputs[0])
        return True

    def spec_outputs(self, outputs):
        """The spec's outputs: the integer graph outputs, or, when every output is computed in
        float, the integer tensors the segments dequantize (the spec needs one)."""
        if outputs:
            return outputs
        return list(dict.fromkeys(self.s.spec_of[a] for a, _ in self.cut_out
                                  if a in self.s.spec_of))

    def output(self, t):
        """The refq graph output of TFLite graph output t when a segment or uint8 boundary gives
        it, else None."""
        if t in self.float_out or t in self.float_inputs or t in self.u8_out:
            return self.s.names(t)
        return None

    def join(self, g, outputs, path):
        """Integer graph `g` (whose inputs and outputs include the segment boundaries) with the
        float segments and uint8 boundaries (`refq.fixedpoint.mixed.splice`); `outputs`: the
        refq graph outputs, one per TFLite graph output."""
        from ..fixedpoint.lower_encodings import TensorQ
        from ..fixedpoint.lower_graph import Builder
        from ..fixedpoint.mixed import splice
        from ..fixedpoint.profiles import get_profile

        m, s = self.m, self.s
        meta = g.meta["integer"]
        imap, tensors = meta["float_tensors"], meta["tensors"]
        b = Builder(get_profile(meta["profile"]), {n.name for n in g.nodes},
                    {t for n in g.nodes for t in n.inputs + n.outputs}
                    | {x.name for x in g.inputs} | set(s.names.of.values()))
        quantizers = {n.inputs[0]: n for n in g.nodes if n.op == "int_quantize"}
        drop, read = set(), {}

        def tq(t):
            return TensorQ(**{k: tensors[t][k] for k in ("scale", "zero_point", "qmin", "qmax",
                                                         "dtype")})

        def u8q(tt):
            return TensorQ(float(tt.scales[0]), int(tt.zero_points[0]), 0, 255, "uint8")

        for spec_name, d in self.cut_in.items():
            read[quantizers[spec_name].name] = {spec_name: d}
        for a, f in self.cut_out:
            x = imap[s.spec_of[a]]
            b.dequantize(b.fresh(s.names(f), "node"), x, s.names(f), tq(x))
        for name, u in self.u8_in.items():
            n = quantizers[name]
            drop.add(n.name)
            codes = b.fresh(f"{name}:uint8")
            b.quantize(n.name, name, codes, u8q(m.tensors[u]))
            b.requantize(b.fresh(f"{name}:requant", "node"), codes, n.outputs[0],
                         u8q(m.tensors[u]), tq(n.outputs[0]))
            self.u8_codes[codes] = u
        for v, a in self.u8_out.items():
            x = imap[s.spec_of[a]]
            q = b.fresh(f"{s.names(v)}:q")
            b.requantize(b.fresh(s.names(v) + ":requant", "node"), x, q, tq(x),
                         u8q(m.tensors[v]))
            b.dequantize(b.fresh(f"{s.names(v)}:dequantize", "node"), q, s.names(v),
                         u8q(m.tensors[v]))
        drop |= {n.name for n in g.nodes if n.op == "int_dequantize" and n.outputs[0] not in
                 outputs}
        inputs = []
        for t in m.inputs:
            spec = self.float_inputs.get(t)
            inputs.append(spec if spec is not None else
                          next(x for x in g.inputs if x.name == s.names(t)))
        return splice(g, inputs, outputs, self.fb.nodes + b.nodes, drop=drop, read=read,
                      tensors=b.tensors, where=path)
