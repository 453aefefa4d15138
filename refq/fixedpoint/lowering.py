"""Lowering: a calibrated QuantSim (or explicit integer parameters) -> an integer graph.

    g = lower(sim, "tflite")                  # sim: a calibrated refq.quant.QuantSim, BN folded
    y = refq.run(g, {"x": x})                 # float32 in, int_quantize ... int_dequantize, float out
    g = lower_from_params(spec, "tflite")     # a model quantized elsewhere (see lower_from_params)

The result is an ordinary refq Graph in the integer graph contract: graph inputs are float, the first
node of each is `int_quantize`; each graph output is produced by `int_dequantize`; every tensor in
between holds integers of its declared dtype. graph.meta["integer"] records
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
- Preconditions, each a FixedPointError naming the node or tensor: no batch_norm left (fold first,
  `refq.algorithms.fold_batch_norms`); every enabled quantizer has an encoding; every op is supported;
  weights are symmetric unless the profile allows weight zero points (then one zero point per layer);
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
- zero_pad2d -> int_pad with value = the input zero point (the quantized image of 0); add ->
  int_add, multiply -> int_multiply, global_avg_pool2d -> int_mean, avg_pool2d -> int_avg_pool2d,
  max_pool2d -> int_max_pool2d, concat -> int_concat (+ int_requantize on inputs whose encoding
  differs), relu/relu6/clip not fused -> int_clamp (an int_requantize with the activation's bounds
  when the output encoding differs from the input's), hard_swish/sigmoid/tanh/hard_sigmoid/
  leaky_relu -> int_lut (`lower_activations.lut_table`), softmax -> int_softmax, flatten/reshape/identity
  unchanged. Any op whose output encoding differs from the one its integer op produces gets an
  int_requantize after it. A node input with its own input quantizer gets an int_requantize.
- Rescaling ops: multiply M = s_a·s_b/s_out (`mul_scale_math`); add "tflite" and "tosa" use the
  three-requantization formula (inputs << add_left_shift, 2·max(s_a, s_b); TOSA's multipliers and
  tosa_double = the legalizer's RESCALE chain), a float-requantizing profile or add "float" uses
  a_real = s_a/s_out, b_real = s_b/s_out; mean "tflite" encodes s_in/s_out (the kernel folds 1/n),
  "tosa" s_in/(n·s_out) with a single-rounded RESCALE, "float" s_in/s_out; avg_pool2d carries
  requantization parameters (M = s_in/s_out) when its output encoding differs from its input's.
- LUT schemes (`lower_activations.lut_table`): sigmoid/tanh use `profile.logistic_tanh` ("gemmlowp", TFLM's
  fixed point, only with TFLite's fixed int8 output encodings, else "lut_float" with a note),
  hard_swish `profile.hard_swish` ("fixed_point" needs 8-bit tensors), hard_sigmoid/leaky_relu
  "float" when the profile's logistic_tanh is "float", else "lut_float".
- Softmax: "tflite" (TFLM's fixed point) when the profile's softmax is "gemmlowp" and the output
  is scale 1/256 with the zero point at the 8-bit type minimum; otherwise "float", with a note.
Everything is deterministic; the graph saves and loads with refq.save / refq.load.
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError, RefqError
from ..graph import Graph, Node, TensorSpec
from ..quant.encoding import quantize as sim_quantize
from .lower_encodings import (DTYPE_RANGES, TensorQ, activation_q, bias_int, check_scale,
                              weight_form, where_of)
from .lower_graph import LUT_OPS, SUPPORTED_OPS, Source, walk
from .profiles import Profile, get_profile

__all__ = ["lower", "lower_from_params", "activation_q", "TensorQ", "SUPPORTED_OPS"]

GRID_PASS = ("max_pool2d", "zero_pad2d", "flatten", "reshape", "identity")
FUSABLE_PRODUCERS = ("conv2d", "dense", "add", "multiply")
FUSABLE_ACTIVATIONS = ("relu", "relu6", "clip")


def _profile(profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    return get_profile(profile)


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
                                  "simulation first (QuantSim.compute_encodings)")
        if q.kind == "activation":
            for t in q.tensors:
                acts[t] = enc
        elif q.kind == "input":
            inputs[(q.node, q.input_index)] = enc
        elif q.param == "weight":
            weights[q.node] = enc
    return acts, inputs, weights


def lower(sim, profile) -> Graph:
    """The integer graph of a calibrated QuantSim under `profile` (a name or a Profile); see the
    module docstring for the rules. Raises FixedPointError naming the node or tensor on any
    violated precondition. The simulation is not modified."""
    p = _profile(profile)
    g = sim.graph
    order = g.topological_order()
    for n in order:
        if n.op == "batch_norm":
            raise FixedPointError(f"{where_of(n)}: batch_norm must be folded before lowering "
                                  "(refq.algorithms.fold_batch_norms, then a new QuantSim)")
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
                                  "does not quantize the model input (config model_input)")
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
            "following relu/relu6/clip. Enable its output quantizer")
    input_q = {k: activation_q(e, p, f"input {k[1]} of node '{k[0]}'")
               for k, e in in_encs.items()}

    def weight(n):
        where = where_of(n)
        enc = w_encs.get(n.name)
        if enc is None:
            raise FixedPointError(f"{where}: the weight is not quantized (no enabled parameter "
                                  "quantizer); the integer graph needs integer weights")
        s_w = check_scale(enc.scale, f"{where} weight")
        codes = sim_quantize(n.params["weight"], enc, sim.numerics)
        codes, zp = weight_form(codes, enc.zero_point, enc.bitwidth, enc.qmin < 0, p, where)
        c = n.params["weight"].shape[0]
        return codes, zp, np.broadcast_to(s_w.astype(np.float32), (c,)).copy(), \
            enc.axis is not None

    def bias(n, q_in, s_w):
        return bias_int(n.params.get("bias"), q_in.scale, s_w, p, where_of(n))

    src = Source(tq, fused, absorbed, weight, bias, input_q)
    return walk(g, src, p, f"{g.name}", {"source": g.name, "kind": "quantsim"})


# ---- lower_from_params ------------------------------------------------------------------------

_PARAM_OPS = ("conv2d", "dense", "add", "multiply", "concat", "max_pool2d", "avg_pool2d",
              "global_avg_pool2d", "flatten", "reshape", "identity", "zero_pad2d", "relu",
              "relu6", "clip", "softmax") + LUT_OPS
_FLOAT_ATTRS = {"conv2d": ("strides", "dilations", "padding", "pads", "groups"),
                "max_pool2d": ("pool_size", "strides", "padding", "pads"),
                "avg_pool2d": ("pool_size", "strides", "padding", "pads"),
                "global_avg_pool2d": ("keepdims",), "reshape": ("shape",), "zero_pad2d": ("pads",),
                "clip": ("min", "max"), "softmax": ("axis",), "concat": ("axis",),
                "leaky_relu": ("alpha",), "hard_sigmoid": ("alpha", "beta")}


def _tq_from_dict(d, p, where) -> TensorQ:
    if not isinstance(d, dict) or "scale" not in d:
        raise FixedPointError(f"{where}: an encoding is a dict with 'scale' (and 'zero_point', "
                              f"'dtype', optional 'qmin'/'qmax'), got {d!r}")
    dtype = d.get("dtype", "int8")
    if dtype not in DTYPE_RANGES or dtype == "int32":
        raise FixedPointError(f"{where}: dtype must be int8, uint8 or int16, got {dtype!r}")
    if dtype not in p.activation_dtypes:
        raise FixedPointError(f"{where}: profile '{p.name}' does not support {dtype} activations; "
                              f"it supports {list(p.activation_dtypes)}")
    s = check_scale(d["scale"], where)
    if s.ndim != 0 and s.size != 1:
        raise FixedPointError(f"{where}: activation scales are per tensor, got {s.size} values")
    lo, hi = DTYPE_RANGES[dtype]
    try:
        return TensorQ(float(np.float32(s.ravel()[0])), int(d.get("zero_point", 0)),
                       int(d.get("qmin", lo)), int(d.get("qmax", hi)), dtype)
    except FixedPointError as e:
        raise FixedPointError(f"{where}: {e}") from None


def lower_from_params(spec: dict, profile) -> Graph:
    """An integer graph from explicit integer parameters, for a model quantized elsewhere (e.g. a
    TFLite flatbuffer's tensors), under `profile`'s requantization conventions.

    spec (plain Python/NumPy values):
      {"name": "net",                                              (optional)
       "inputs": [{"name": "x", "shape": [None, 8, 8, 3],          (batch first, None = free)
                   "scale": 0.02, "zero_point": -3, "dtype": "int8"}],
       "layers": [LAYER, ...],                                     (in execution order)
       "outputs": ["fc"]}                                          (optional: the last layer)
    Every LAYER is a dict with "name" (also the name of its output tensor), "op" and "inputs"
    (optional: a list of tensor names, default the previous layer's output, or the single graph
    input for the first layer). Encodings ("output", graph inputs) are dicts {scale (float32
    value), zero_point (default 0), dtype ("int8" | "uint8" | "int16", default "int8"), qmin/qmax
    (default the dtype's range)}. Per op:
      conv2d   weight (integer array OHWI [out, kh, kw, in/groups], the codes), weight_dtype
               ("int8" | "uint8" | "int4", default "int8"), weight_scale (float or [out] floats),
               weight_zero_point (int, default 0), bias (int32 array [out],
               optional, scale s_in·s_w), strides, dilations, padding, pads, groups (as refq's
               conv2d), activation ("none" | "relu" | "relu6" | "relu_n1_to_1" | {"min", "max"}
               floats; default "none"), output (required).
      dense    weight [units, in], weight_scale, weight_zero_point, bias, activation, output.
      add, multiply   inputs (two names), activation, output (required).
      concat   inputs, axis (default −1), output (required; inputs with other encodings are
               requantized to it).
      max_pool2d, avg_pool2d   pool_size, strides, padding, pads, output (optional: default the
               input's encoding).
      global_avg_pool2d   keepdims (default False), output (optional).
      flatten, reshape (shape), identity, zero_pad2d (pads)   output (optional).
      relu, relu6, clip (min, max), hard_swish, sigmoid, tanh, hard_sigmoid, leaky_relu, softmax
               output (optional for relu/relu6/clip; required otherwise).
    The integer graph follows the rules of `lower` with these encodings; the weight codes and bias
    are used as given (checked against the profile's weight dtype and bias_bits).
    """
    p = _profile(profile)
    if not isinstance(spec, dict) or not spec.get("layers") or not spec.get("inputs"):
        raise FixedPointError("lower_from_params: spec must be a dict with 'inputs' and 'layers'")
    tq, acts, weights, biases = {}, {}, {}, {}
    inputs = []
    for d in spec["inputs"]:
        where = f"input '{d.get('name')}'"
        inputs.append(TensorSpec(d["name"], tuple(d["shape"]), "float32"))
        tq[d["name"]] = _tq_from_dict(d, p, where)
    nodes = []
    prev = inputs[0].name if len(inputs) == 1 else None
    for i, L in enumerate(spec["layers"]):
        name, op = L.get("name"), L.get("op")
        where = f"layer {i} '{name}' ({op})"
        if not isinstance(name, str) or op not in _PARAM_OPS:
            raise FixedPointError(f"{where}: needs a string 'name' and an 'op' among "
                                  f"{', '.join(_PARAM_OPS)}")
        ins = list(L.get("inputs", [prev] if prev is not None else []))
        if not ins or any(t not in tq for t in ins):
            raise FixedPointError(f"{where}: inputs {ins} are not all defined earlier")
        attrs = {k: L[k] for k in _FLOAT_ATTRS.get(op, ()) if k in L}
        params = {}
        if op in ("conv2d", "dense"):
            w = np.asarray(L["weight"])
            if w.dtype.kind not in "iu":
                raise FixedPointError(f"{where}: 'weight' must hold integer codes, got {w.dtype}")
            s_w = check_scale(L["weight_scale"], f"{where} weight_scale")
            s_w = np.broadcast_to(s_w.astype(np.float32), (w.shape[0],)).copy()
            zp = int(L.get("weight_zero_point", 0))
            wdt = L.get("weight_dtype", "int8")
            if wdt not in ("int8", "uint8", "int4"):
                raise FixedPointError(f"{where}: weight_dtype must be int8, uint8 or int4")
            codes, zp = weight_form(w, zp, 4 if wdt == "int4" else 8, wdt != "uint8", p, where)
            weights[name] = (codes, zp, s_w, np.asarray(L["weight_scale"]).size > 1)
            params["weight"] = w.astype(np.float64)
            if L.get("bias") is not None:
                bq = np.asarray(L["bias"])
                if bq.dtype.kind not in "iu":
                    raise FixedPointError(f"{where}: 'bias' must hold int32 codes, got {bq.dtype}")
                lim = (1 << (p.bias_bits - 1)) - 1
                bad = np.abs(bq.astype(np.int64)) > lim
                if np.any(bad):
                    c = int(np.argmax(bad))
                    raise FixedPointError(f"{where}: bias channel {c} = {int(bq[c])} does not fit "
                                          f"int{p.bias_bits}")
                biases[name] = bq.astype(np.int32)
                params["bias"] = bq.astype(np.float64)
        if op in ("conv2d", "dense", "add", "multiply"):
            act = L.get("activation", "none")
            if isinstance(act, dict):
                acts[name] = ("clip", {"min": float(act["min"]), "max": float(act["max"])}, name)
            elif act != "none":
                acts[name] = (act, {}, name)
        node = Node(name, op, ins, [name], attrs, params)
        nodes.append(node)
        if "output" in L:
            tq[name] = _tq_from_dict(L["output"], p, f"{where} output")
        elif op in ("max_pool2d", "avg_pool2d", "global_avg_pool2d", "flatten", "reshape",
                    "identity", "zero_pad2d", "relu", "relu6", "clip"):
            tq[name] = tq[ins[0]]
        else:
            raise FixedPointError(f"{where}: needs an 'output' encoding")
        prev = name
    outs = list(spec.get("outputs", [prev]))
    g = Graph(inputs, outs, nodes, name=spec.get("name", "model"))
    try:
        g.validate()
    except RefqError as e:
        raise FixedPointError(f"lower_from_params: {e}") from None

    def weight(n):
        return weights[n.name]

    def bias(n, q_in, s_w):
        return biases.get(n.name)

    src = Source(tq, acts, set(), weight, bias, {})
    return walk(g, src, p, g.name, {"source": g.name, "kind": "params"})
