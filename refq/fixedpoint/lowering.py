"""Lowering: a calibrated QuantSim (or explicit integer parameters) -> an integer graph.

    g = lower(sim, "tflite")                  # sim: a calibrated refq.quant.QuantSim, BN folded
    y = refq.run(g, {"x": x})                 # float32 in, int_quantize ... int_dequantize, float out
    g = lower_from_params(spec, "tflite")     # a model quantized elsewhere (see lower_from_params)

The result is an ordinary refq Graph in the integer graph contract: graph inputs are float, the first
node of each is `int_quantize`; each graph output is produced by `int_dequantize`; every tensor in
between holds integers of its declared dtype. An imported model may also hold float segments
(`refq.fixedpoint.mixed`): an `int_dequantize` anywhere, float32 kernels on its float tensors,
and an `int_quantize` back to integers; a graph input or output of such a segment is float.
graph.meta["integer"] records
    profile          the profile's name; profile_fields: every field of the Profile used
    tensors          {integer tensor: {scale, zero_point, dtype, qmin, qmax}}
    float_tensors    {float tensor of the source graph: integer tensor that holds it}
    fused            {node: activation node} for conv2d/dense/add/multiply + relu/relu6/clip pairs
    requantizations  {node: number of roundings it performs} (compare's LSB bound)
    notes            every place where the profile's behaviour is approximated
Integer tensors keep the source graph's tensor names, except the integer versions of graph inputs and
outputs, named `<name>:q`. Integer nodes keep the source node names; helper nodes are named
`<tensor>:quantize`, `<tensor>:dequantize`, `<node>:requant`, `<node>:input<i>`.

Rules (`lower`):
- Preconditions, each a FixedPointError naming the model, node or tensor: `sim` is a QuantSim (not
  a Graph) of a float model; no batch_norm left (`refq quantize` folds them unless --no-fold-bn;
  Python: `refq.algorithms.fold_batch_norms`, then a new QuantSim); every enabled quantizer has an
  encoding; every op is supported;
  weights are symmetric unless the profile allows weight zero points (weight_zero_point: one per
  layer, the attribute weight_zp; per_channel_weight_zero_point: one per output channel when they
  differ, the parameter weight_zp [O]);
  every scale is finite and positive; the profile supports every dtype (see `activation_q`).
- Tensor encodings: a quantized tensor has its sim encoding. An unquantized tensor takes its input's
  encoding when its op preserves the grid (max_pool2d, zero_pad2d, flatten, reshape, identity, and
  relu, whose output lies on its input's grid). A conv2d/dense/add/multiply whose unquantized output
  feeds only a relu/relu6/clip with a quantized output (an AIMET supergroup) is fused: one integer
  node produces the activation's output with act_min/act_max = the activation's bounds on the output
  grid (`Profile.activation_range`; clip bounds quantized with the same rounding). Anything else
  without an encoding is an error naming the tensor.
- Activation dtypes: an AIMET asymmetric b-bit grid is unsigned [0, 2^b − 1]; when the profile has no
  unsigned type it is shifted by 2^(b−1) to the signed grid (q' = q − 2^(b−1), zp' = zp − 2^(b−1)),
  which represents the same reals (TFLite's uint8 -> int8 conversion). 9..16-bit grids are int16.
- conv2d/dense: weight codes = `refq.quant.encoding.quantize(w, encoding, sim.numerics)` (the codes
  the simulation uses); bias int32 = round_half_even(b / (s_in·s_w[c])) in float64, an error naming
  layer and channel when it leaves bias_bits; multiplier/shift per channel from the profile
  (`scale_math`, `multiplier`; `fc_requant` and `fc_per_tensor_scale_math` for dense).
- conv_transpose2d -> int_conv_transpose2d, gemm -> int_dense (B transposed to [P, K], bias
  beta·C, alpha 1 only), matmul -> int_matmul (both operands' zero points, one multiplier by the
  fc_per_tensor scale math, the profile's requant scheme): `lower_contractions`. Per-channel
  weights of conv_transpose2d and gemm are per output channel (axis 0; gemm transB = 0: axis 1 of
  B, `refq.quant.placement.weight_output_axis`).
- zero_pad2d -> int_pad with value = the input zero point (the quantized image of 0); add ->
  int_add, multiply -> int_multiply, global_avg_pool2d -> int_mean, avg_pool{r}d ->
  int_avg_pool{r}d, max_pool{r}d -> int_max_pool{r}d (the window attributes as given: dilations,
  ceil_mode, count_include_pad, same_lower and ranks 1 and 3 only where the profile's
  `avg_pool_attributes` / `max_pool_attributes` define them, else a FixedPointError naming node,
  attribute and profile), global_max_pool2d -> int_max_pool2d over the whole image (+ flatten),
  round -> int_lut (the last three once their op records name a lowering family), concat ->
  int_concat (+ int_requantize on inputs whose encoding
  differs), relu/relu6/clip not fused -> int_clamp (an int_requantize with the activation's bounds
  when the output encoding differs from the input's), hard_swish/sigmoid/tanh/hard_sigmoid/
  leaky_relu -> int_lut (`lower_activations.lut_table`), softmax -> int_softmax, flatten/reshape/identity
  unchanged. Any op whose output encoding differs from the one its integer op produces gets an
  int_requantize after it. A node input with its own input quantizer gets an int_requantize.
- Rescaling ops: multiply by the profile's `mul`: "requant" M = s_a·s_b/s_out (`mul_scale_math`)
  and the profile's scheme, "qdq" int_multiply mode "qdq" with the three float32 scales, "ort"
  scheme float32_rne with the zero point before rounding (onnxruntime QLinearMul); add "tflite" and
  "tosa" use the three-requantization formula (inputs << add_left_shift, 2·max(s_a, s_b); TOSA's
  multipliers and tosa_double = the legalizer's RESCALE chain), add "float" (or another add under
  a float-requantizing profile) uses a_real = s_a/s_out, b_real = s_b/s_out, add "qdq"/"ort" the
  float32 scales a_scale, b_scale, out_scale; mean "tflite" encodes s_in/s_out (the kernel folds
  1/n), "tosa" s_in/(n·s_out) with a single-rounded RESCALE, "float" s_in/s_out, "qdq"/"ort" the
  float32 scales in_scale, out_scale; avg_pool2d "qdq"/"ort" always carries in_scale/out_scale,
  the other schemes requantization parameters (M = s_in/s_out) when its output encoding differs
  from its input's. Every int_requantize (concat inputs, input quantizers, changes of encoding)
  follows the profile's `rescale`: "requant" (M = s_in/s_out by the scheme) or "qdq" (float32
  DequantizeLinear -> QuantizeLinear).
- LUT schemes (`lower_activations.lut_table`): sigmoid/tanh use `profile.logistic_tanh` ("gemmlowp", TFLM's
  fixed point, only with TFLite's fixed int8 output encodings, else "lut_float" with a note),
  hard_swish `profile.hard_swish` ("fixed_point" needs 8-bit tensors), hard_sigmoid/leaky_relu
  the profile's logistic_tanh when it is "float" or "float32" (the ONNX op in float32), else
  leaky_relu "tflite_leaky" (LiteRT's `QuantizeLeakyRelu` on every code) under the profiles of
  TFLite's kernel family (int16_kernels "tflite"), else "lut_float".
- Softmax: "tflite" (TFLM's fixed point) when the profile's softmax is "gemmlowp" and the output
  is scale 1/256 with the zero point at the 8-bit type minimum; "float32" (DequantizeLinear ->
  ONNX Softmax in float32 -> QuantizeLinear) when the profile's softmax is "float32"; "ort"
  (onnxruntime's QLinearSoftmax) when it is "ort" and input and output share their 8-bit type
  ("float32" with a note otherwise); otherwise "float", with a note.
- Int16 activations (`refq.fixedpoint.lower_16x8`): under tflite and tflite-single a
  conv2d/dense/gemm with int16 input and output lowers to TFLite's 16x8 node
  (int_conv2d_16x8 / int_dense_16x8: int64 bias round_half_even(b / (s_in·s_w[o])) within
  ±(2^47 − 1), int64 accumulator, 16-bit multiplier or LiteRT's float FC requantization) and an
  int16 add takes TFLite's left shift 15; int16 sigmoid, tanh and leaky_relu lower to LiteRT's
  int16 tables and softmax to its int16 kernel (`lower_16x8.lower_act16`); what TFLite's int16
  kernels compute in a way refq does not model (other activations, transpose convolution,
  matmul, mixed int8/int16 layers, non-zero int16 zero points of these layers) is refused by
  name; cmsis-nn refuses its s16 contractions and add. Under tosa (`refq.fixedpoint.lower_tosa16`) a conv2d/dense/gemm/
  conv_transpose2d reading int16 lowers to TOSA's 16x8 node (int_conv2d_tosa16,
  int_dense_tosa16, int_conv_transpose2d_tosa16: int48 accumulator and bias, every int48 sum
  checked, the legalizer's scale16 RESCALE with a 16-bit multiplier, single rounding), and an
  8-bit-input layer with an int16 output takes the same RESCALE; int16 zero points other than 0
  on these layers, and an int16-input layer with an 8-bit output (a scale32 RESCALE of int48,
  which TOSA forbids), are refused by name.
`lower_from_params` and the checks of its spec live in `refq.fixedpoint.lower_params`.
Everything is deterministic; the graph saves and loads with refq.save / refq.load.
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from ..graph import Graph
from ..quant.encoding import quantize as sim_quantize
from ..quant.placement import integer_model_kind, weight_output_axis
from .lower_encodings import TensorQ, activation_q, bias_int, check_scale, weight_form, where_of
from .lower_graph import (FUSABLE_ACTIVATIONS, FUSABLE_PRODUCERS, GRID_PASS, SUPPORTED_OPS, Source,
                          walk)
from .lower_params import lower_from_params
from .profiles import get_profile

__all__ = ["lower", "lower_from_params", "activation_q", "TensorQ", "SUPPORTED_OPS"]

# ---- lower(sim, profile) ----------------------------------------------------------------------

def _sim_encodings(sim):
    """({tensor: Encoding} of the enabled activation quantizers, {(node, i): Encoding} of the
    enabled input quantizers, {node: weight Encoding}), checking that each has an encoding."""
    acts, inputs, weights = {}, {}, {}
    for qname, q in sim.quantizers.items():
        if not sim.enabled.get(qname, False):
            continue
        enc = sim.encodings.get(qname)
        if enc is None:
            where = f"node '{q.node}'" if q.node else f"tensor '{q.tensors[0]}'"
            raise FixedPointError(f"{where}: quantizer '{qname}' has no encoding; calibrate the "
                                  "simulation first (`refq quantize --calib DATA`; Python: "
                                  "QuantSim.compute_encodings)")
        if q.kind == "activation":
            for t in q.tensors:
                acts[t] = enc
        elif q.kind == "input":
            inputs[(q.node, q.input_index)] = enc
        elif q.param == "weight":
            weights[q.node] = enc
    return acts, inputs, weights


def lower(sim, profile, *, int16_kernels="profile") -> Graph:
    """The integer graph of a calibrated QuantSim under `profile` (a name or a Profile); see the
    module docstring for the rules. Raises FixedPointError naming the node or tensor on any
    violated precondition. The simulation is not modified. int16_kernels: the int16 kernel
    family (`lower_16x8`: "tflite", "cmsis-nn" or None); "profile" takes the profile's (the
    faithful simulation of a profile passes that profile's)."""
    p = get_profile(profile)
    if isinstance(sim, Graph):
        kind = integer_model_kind(sim)
        if kind is not None:
            raise FixedPointError(f"model '{sim.name}' is already an integer model ({kind}); "
                                  "lower the quantized model it came from (`refq lower "
                                  "Q.refq.h5`), or run this one (`refq run --mode int`)")
        raise FixedPointError(f"model '{sim.name}' is a float model without a quantization "
                              "simulation; quantize it first (`refq quantize MODEL --calib DATA -o "
                              "Q.refq.h5`, Python: QuantSim(...).compute_encodings) and lower that")
    g = sim.graph
    kind = integer_model_kind(g)
    if kind is not None:
        raise FixedPointError(f"model '{g.name}' is already an integer model ({kind}); nothing "
                              "to lower")
    order = g.topological_order()
    for n in order:
        if n.op == "batch_norm":
            raise FixedPointError(f"{where_of(n)}: batch_norm '{n.name}' is not folded; quantize "
                                  "with `refq quantize` without --no-fold-bn (Python: "
                                  "refq.algorithms.fold_batch_norms, then a new QuantSim)")
        if n.op not in SUPPORTED_OPS:
            raise FixedPointError(f"{where_of(n)}: op '{n.op}' has no integer lowering; supported: "
                                  f"{', '.join(SUPPORTED_OPS)}")
    acts, in_encs, w_encs = _sim_encodings(sim)
    consumers = g.consumers()
    outputs = set(g.outputs)
    tq, fused, absorbed = {}, {}, set()
    for spec in g.inputs:
        if spec.name not in acts:
            raise FixedPointError(f"graph input '{spec.name}' has no encoding: the simulation "
                                  "does not quantize the model input; quantize with a config "
                                  "whose model_input.is_input_quantized is \"True\" (`refq "
                                  "quantize --config`, e.g. the bundled per_tensor)")
        tq[spec.name] = activation_q(acts[spec.name], p, f"graph input '{spec.name}'")
    for n in order:
        t = n.outputs[0]
        if t in acts:
            tq[t] = activation_q(acts[t], p, f"tensor '{t}' ({where_of(n)})")
            continue
        if (n.op in GRID_PASS or n.op == "relu") and n.inputs[0] in tq:
            tq[t] = tq[n.inputs[0]]
            continue
        cons = consumers.get(t, [])
        if (n.op in FUSABLE_PRODUCERS and t not in outputs and len(cons) == 1
                and cons[0].op in FUSABLE_ACTIVATIONS and cons[0].outputs[0] in acts):
            act = cons[0]
            fused[n.name] = (act.op, act.attrs, act.outputs[0], act.name)
            absorbed.add(act.name)
            continue
        if n.name in absorbed:
            continue
        raise FixedPointError(
            f"tensor '{t}' ({where_of(n)}) has no encoding: it is not quantized, its op does not "
            "preserve the input grid, and it is not a conv2d/dense/add/multiply fused with a "
            "following relu/relu6/clip. Quantize with a config that quantizes its output "
            "(`refq quantize --config`, op_type.<type>.is_output_quantized \"True\")")
    input_q = {k: activation_q(e, p, f"input {k[1]} of node '{k[0]}'")
               for k, e in in_encs.items()}

    def weight(n):
        where = where_of(n)
        enc = w_encs.get(n.name)
        if enc is None:
            raise FixedPointError(f"{where}: the weight is not quantized (no enabled parameter "
                                  "quantizer); the integer graph needs integer weights: quantize "
                                  "with a config whose params.weight.is_quantized is \"True\" "
                                  "(`refq quantize --config`)")
        s_w = check_scale(enc.scale, f"{where} weight")
        codes = sim_quantize(n.params["weight"], enc, sim.numerics)
        codes, zp = weight_form(codes, enc.zero_point, enc.bitwidth, enc.qmin < 0, p, where)
        c = n.params["weight"].shape[weight_output_axis(n)]
        return codes, zp, np.broadcast_to(s_w.astype(np.float32), (c,)).copy(), \
            enc.axis is not None

    def bias(n, q_in, s_w, bits=None):
        return bias_int(n.params.get("bias"), q_in.scale, s_w, p, where_of(n), bits)

    src = Source(tq, fused, absorbed, weight, bias, input_q)
    return walk(g, src, p, f"{g.name}", {"source": g.name, "kind": "quantsim"}, int16_kernels)
