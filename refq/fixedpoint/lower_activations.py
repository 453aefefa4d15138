"""Lowering of the activations: clamps (relu, relu6, clip), lookup tables (hard_swish, sigmoid,
tanh, hard_sigmoid, leaky_relu, and round once its record names the "lut" family) and softmax.
Each `lower_*(w, n)` lowers float node n in the walk
w (`lower_graph.Walk`); `act_range` gives the clamp bounds of fused and standalone activations.

Lookup tables (`lut_table`, built by the kernels' `build_lut`), one entry per code v of the input
dtype, x = (v − zp_in)·s_in:
  "float"        f(x) in float64 (refq's float op), q = rint(f/s_out) + zp_out (the
                 integer-faithful definition).
  "float32"      the ONNX op in float32 between DequantizeLinear and QuantizeLinear, as
                 `onnx.reference` evaluates it (`kernels.lut.onnx_float32_function`; refq's
                 hard_swish is ONNX HardSwish x·max(0, min(1, x/6 + 1/2))).
  "lut_float"    TFLite `LUTPopulate` (fixedpoint.md §6.2): x = fl32(s_in·fl32(v − zp_in)), f in
                 float32, q = roundf(f·fl32(1/s_out)) + zp_out (half away), clamped.
  "fixed_point"  hard_swish: TFLite/TFLM `reference_ops::HardSwish` (§6.5) on every int8 code.
  "gemmlowp"     sigmoid/tanh: TFLM's fixed-point LOGISTIC/TANH (§6.1) on every int8 code; it
                 needs TFLite's fixed output encodings (the lowering falls back to "lut_float" and
                 says so in graph.meta["integer"]["notes"] otherwise).
  "tflite_leaky" leaky_relu: LiteRT's `QuantizeLeakyRelu` (`kernels.leaky_relu`: x − zp_in
                 requantized by the identity or the alpha multiplier, + zp_out, clamp) on every
                 8-bit code, for the profiles whose int16 family is "tflite" (tflite,
                 tflite-single: LiteRT's one LEAKY_RELU kernel serves int8 and int16, whose
                 int16 form `lower_16x8.lower_act16` tabulates); the faithful simulation's
                 float schemes keep the float table.
The scheme of each op and the softmax variants: the "LUT schemes" and "Softmax" items of the
`refq.fixedpoint.lowering` module docstring.
round is not grid-preserving: its outputs are integers, which lie on the input grid only when
every integer does (1/s_in an integer and zp on it), so it gets a table like hard_sigmoid (the
float op in the profile's float scheme: np.round, half to even, in float32 for "lut_float" and
"float32", float64 for "float"), exact per code and correct for any pair of encodings.
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from ..layers import ops_with
from .lower_16x8 import lower_act16
from .lower_encodings import DTYPE_RANGES, NP_DTYPES, TensorQ, where_of
from .requantize import quantize as quantize_float

__all__ = ["LUT_OPS", "act_range", "lut_table", "FAMILIES"]

#: Ops lowered to a lookup table.
LUT_OPS = ops_with("lowering", "lut")
_ACT_NAMES = ("none", "relu", "relu6", "relu_n1_to_1")


def act_range(profile, kind, attrs, tq, where):
    """(act_min, act_max) of a fused or standalone activation on tq's grid."""
    try:
        if kind in _ACT_NAMES:
            return profile.activation_range(kind, tq.scale, tq.zero_point, qmin=tq.qmin,
                                            qmax=tq.qmax)
        if kind == "clip":
            # a missing bound (None) is the grid's own end
            lo, hi = (bound if attrs[k] is None else
                      int(quantize_float(np.float32(attrs[k]), tq.scale, tq.zero_point,
                                         qmin=tq.qmin, qmax=tq.qmax,
                                         rounding=profile.activation_range_rounding))
                      for k, bound in (("min", tq.qmin), ("max", tq.qmax)))
            return lo, hi
    except FixedPointError as e:
        raise FixedPointError(f"{where}: {e}") from None
    raise FixedPointError(f"{where}: unknown activation {kind!r}; use one of "
                          f"{list(_ACT_NAMES) + ['clip']}")


def lower_clamp(w, n):
    """relu/relu6/clip not fused into a producer: int_clamp with the activation's bounds, or an
    int_requantize with them when the output encoding differs from the input's."""
    x, q_in = w.read(n, 0)
    q_out = w.tq[n.outputs[0]]
    act = act_range(w.p, n.op, n.attrs, q_out, where_of(n))
    if q_out == q_in:
        w.b.emit(n.name, "int_clamp", [x], w.out_name(n.outputs[0]),
                 {"act_min": int(act[0]), "act_max": int(act[1])}, tq=q_out)
    else:
        w.b.requantize(n.name, x, w.out_name(n.outputs[0]), q_in, q_out, act=act)


# ---- lookup tables ---------------------------------------------------------------------------

_NAMED = ("sigmoid", "tanh", "hard_swish")
_KERAS3_HARD_SIGMOID = {"alpha": 1.0 / 6.0, "beta": 0.5}


def _float_fn(op: str, attrs: dict):
    from ..layers import get_op

    f = get_op(op)
    return lambda x: f.forward([x], {}, attrs)


def lut_table(op: str, attrs: dict, tq_in: TensorQ, tq_out: TensorQ, scheme: str,
              where: str, *, single_rounding: bool = False) -> np.ndarray:
    """The int_lut table of float op `op` (node attributes `attrs`) from tq_in to tq_out by
    `scheme`, one entry per code of tq_in's dtype, built by the kernels' `build_lut` (see the
    module docstring): "lut_float" uses TFLite's float32 transforms for sigmoid/tanh/hard_swish
    (and the Keras 3 hard_sigmoid), refq's float op evaluated in float32 otherwise; "float" uses
    refq's float op in float64 with the node's attributes; "float32" the ONNX op in float32 with
    the node's attributes (`kernels.lut.onnx_float32_function`); "tflite_leaky" LiteRT's
    LEAKY_RELU with the node's alpha (MBQM in single rounding with `single_rounding`)."""
    from .kernels.lut import build_lut

    if scheme == "float32":
        from .kernels.lut import onnx_float32_function

        try:
            fn = onnx_float32_function(op, attrs)
        except FixedPointError as e:
            raise FixedPointError(f"{where}: {e}") from None
    elif scheme in ("lut_float",) and (op in _NAMED or (
            op == "hard_sigmoid" and all(np.isclose(attrs[k], v, rtol=0, atol=0)
                                         for k, v in _KERAS3_HARD_SIGMOID.items()))):
        fn = op
    elif scheme in ("gemmlowp", "fixed_point", "tflite_leaky"):
        fn = op
    else:
        fn = _float_fn(op, attrs)
    extra = {}
    if scheme == "tflite_leaky":
        extra = {"alpha": attrs["alpha"], "single_rounding": single_rounding}
    try:
        t = build_lut(fn, tq_in.scale, tq_in.zero_point, tq_out.scale, tq_out.zero_point,
                      tq_out.qmin, tq_out.qmax, scheme, input_range=DTYPE_RANGES[tq_in.dtype],
                      **extra)
    except FixedPointError as e:
        raise FixedPointError(f"{where}: {e}") from None
    return np.asarray(t, dtype=np.int64).astype(NP_DTYPES[tq_out.dtype])


def _lut_scheme(w, n, q_in, q_out):
    """The table scheme of LUT op n under the walk's profile (module docstring)."""
    p = w.p
    if n.op in ("sigmoid", "tanh"):
        scheme = p.logistic_tanh
    elif n.op == "hard_swish":
        scheme = p.hard_swish
    elif p.logistic_tanh in ("float", "float32"):
        scheme = p.logistic_tanh
    elif n.op == "leaky_relu" and p.int16_kernels == "tflite":
        scheme = "tflite_leaky"
    else:
        scheme = "lut_float"
    if scheme == "gemmlowp":
        want = (1.0 / 256, -128) if n.op == "sigmoid" else (1.0 / 128, 0)
        if (q_in.dtype, q_out.dtype) != ("int8", "int8") or \
                (q_out.scale, q_out.zero_point) != want:
            w.b.notes.append(
                f"{n.name}: the TFLM fixed-point {n.op} needs int8 with output scale "
                f"{want[0]}, zero point {want[1]}; the table is built with 'lut_float' "
                "(LiteRT LUTPopulate) instead")
            scheme = "lut_float"
    if scheme == "fixed_point" and (q_in.dtype, q_out.dtype) != ("int8", "int8") and \
            (q_in.dtype, q_out.dtype) != ("uint8", "uint8"):
        raise FixedPointError(f"{where_of(n)}: profile '{p.name}' computes hard_swish with "
                              f"TFLite's 8-bit fixed-point kernel; got {q_in.dtype} -> "
                              f"{q_out.dtype}: re-quantize with `refq quantize --act-bw 8` or "
                              "choose another --profile (`refq profiles`)")
    return scheme


def lower_lut(w, n):
    """A LUT op -> int_lut with the table of the profile's scheme (int16 sigmoid/tanh/leaky_relu
    under the "tflite" int16 family: `lower_16x8.lower_act16`)."""
    if lower_act16(w, n, lut_table):
        return
    x, q_in = w.read(n, 0)
    q_out = w.tq[n.outputs[0]]
    table = lut_table(n.op, n.attrs, q_in, q_out, _lut_scheme(w, n, q_in, q_out), where_of(n),
                      single_rounding=w.p.requant == "single_round")
    w.b.emit(n.name, "int_lut", [x], w.out_name(n.outputs[0]),
             {"input_qmin": DTYPE_RANGES[q_in.dtype][0]}, {"table": table}, tq=q_out,
             requants=1)


# ---- softmax ---------------------------------------------------------------------------------

def lower_softmax(w, n):
    """int_softmax on the last axis: "tflite" (the TFLM fixed-point reference, §7) when the
    profile models it and the output is scale 1/256 with the zero point at the 8-bit type minimum;
    "ort" (onnxruntime's QLinearSoftmax) when input and output share their 8-bit type, else
    "float32"; "float32" for the profile's "float32"; otherwise "float", with a note."""
    rank = len(w.shapes[n.inputs[0]])
    if n.attrs["axis"] not in (-1, rank - 1):
        raise FixedPointError(f"{where_of(n)}: the integer softmax works on the last axis, got "
                              f"axis {n.attrs['axis']}")
    if lower_act16(w, n, lut_table):     # int16 softmax under the "tflite" int16 family
        return
    x, tq_in = w.read(n, 0)
    tq_out = w.tq[n.outputs[0]]
    p, b = w.p, w.b
    attrs = {"input_zp": tq_in.zero_point, "output_zp": tq_out.zero_point,
             "act_min": tq_out.qmin, "act_max": tq_out.qmax}
    tflite_out = (tq_out.scale == 1.0 / 256 and tq_out.dtype in ("int8", "uint8")
                  and tq_out.zero_point == DTYPE_RANGES[tq_out.dtype][0]
                  and tq_in.dtype in ("int8", "uint8"))
    if p.softmax == "gemmlowp" and tflite_out:
        from .kernels.softmax import tflite_softmax_params

        try:
            attrs.update(tflite_softmax_params(
                tq_in.scale, single_rounding=p.requant == "single_round"))
        except FixedPointError as e:
            raise FixedPointError(f"node '{n.name}' (softmax): {e}") from None
        attrs["softmax"] = "tflite"
    elif p.softmax == "ort" and tq_in.dtype == tq_out.dtype:
        attrs.update(softmax="ort", input_scale=tq_in.scale, output_scale=tq_out.scale)
    elif p.softmax in ("float32", "ort"):
        if p.softmax == "ort":     # onnxruntime fuses only a Softmax of one 8-bit type
            b.notes.append(f"{n.name}: softmax computed as 'float32' (DequantizeLinear, float32 "
                           f"Softmax, QuantizeLinear) because its input ({tq_in.dtype}) and "
                           f"output ({tq_out.dtype}) types differ")
        attrs.update(softmax="float32", input_scale=tq_in.scale, output_scale=tq_out.scale)
    else:
        if p.softmax != "float":
            why = ("its output encoding is not scale 1/256, zero point -128 (int8)"
                   if p.softmax == "gemmlowp" else
                   f"profile softmax {p.softmax!r} is not modelled")
            b.notes.append(f"{n.name}: softmax computed as 'float' (dequantize, float64 "
                           f"softmax, quantize half even) because {why}")
        attrs.update(softmax="float", input_scale=tq_in.scale, output_scale=tq_out.scale)
    b.emit(n.name, "int_softmax", [x], w.out_name(n.outputs[0]), attrs, {}, tq=tq_out,
           requants=1)


#: The lowering function of each family of `Traits.lowering` this module lowers.
FAMILIES = {"clamp": lower_clamp, "softmax": lower_softmax, "lut": lower_lut}
