"""`lower_from_params`: an integer graph from explicit integer parameters (a model quantized
elsewhere, e.g. a TFLite flatbuffer's tensors), and the checks of its spec.

The spec format is documented on `lower_from_params`; every dict accepts only its listed keys
(`_LAYER_KEYS`), and every value is checked (FixedPointError naming the input or layer, the key and
what is allowed) before the graph is built. The integer graph then follows the rules of
`refq.fixedpoint.lowering.lower` (`lower_graph.walk`) with the spec's encodings.
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError, RefqError
from ..graph import Graph, Node, TensorSpec
from .lower_encodings import DTYPE_RANGES, TensorQ, check_scale, weight_form
from ..layers import REGISTRY
from ..quant.placement import weight_output_axis
from .lower_16x8 import WIDE_BIAS_BITS, int16_family
from .lower_tosa16 import BIAS_BITS as TOSA16_BIAS_BITS, FAMILY as TOSA16_FAMILY
from .lower_graph import FUSABLE_PRODUCERS, SUPPORTED_OPS, Source, walk
from .profiles import get_profile

__all__ = ["lower_from_params"]

_PARAM_OPS = SUPPORTED_OPS
#: The layers whose spec gives a weight (and bias): those whose op record requires a weight.
WEIGHTED = tuple(op for op in _PARAM_OPS if REGISTRY[op].params.get("weight"))
#: The rank and layout of each weighted layer's weight codes in a spec (the float op's own).
_WEIGHT_LAYOUTS = {"conv2d": (4, "OHWI [out, kh, kw, in/groups]"),
                   "conv_transpose2d": (4, "[out, kh, kw, in/groups]"),
                   "dense": (2, "[units, in]"),
                   "gemm": (2, "B [K, P] (transB = 0) or [P, K] (transB = 1)")}
#: The layers whose spec may leave out the output encoding (it is then the input's): the
#: lowering families that keep the input's grid or scale (`Traits.lowering`).
_KEEPS_ENCODING = tuple(op for op in _PARAM_OPS
                        if REGISTRY[op].traits.lowering in ("grid", "clamp", "avg_pool", "mean"))
#: The float attributes a layer spec may give: those of the op's own schema.
_FLOAT_ATTRS = {op: tuple(REGISTRY[op].attrs) for op in _PARAM_OPS if REGISTRY[op].attrs}


_ENCODING_KEYS = ("scale", "zero_point", "dtype", "qmin", "qmax")
_SPEC_KEYS = ("name", "inputs", "layers", "outputs")
_INPUT_KEYS = ("name", "shape") + _ENCODING_KEYS
_WEIGHT_KEYS = ("weight", "weight_scale", "weight_zero_point", "weight_dtype", "bias")
_ACTIVATIONS = ("none", "relu", "relu6", "relu_n1_to_1")
_WEIGHT_DTYPES = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-8, 7)}
_LAYER_KEYS = {op: ("name", "op", "inputs", "output") + _FLOAT_ATTRS.get(op, ())
               + (_WEIGHT_KEYS if op in WEIGHTED else ())
               + (("activation",) if op in FUSABLE_PRODUCERS else ()) for op in _PARAM_OPS}
"""The keys a lower_from_params spec may use, per level (see `lower_from_params`)."""


def _spec_dict(d, allowed, where) -> dict:
    """`d` checked to be a dict whose keys are all in `allowed`."""
    if not isinstance(d, dict):
        raise FixedPointError(f"{where}: expected a dict with keys {list(allowed)}, got "
                              f"{type(d).__name__}")
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise FixedPointError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {list(allowed)}")
    return d


def _spec_int(v, where, key) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise FixedPointError(f"{where}: '{key}' must be an integer, got {v!r}")
    return int(v)


def _spec_weight_zero_point(v, channels, where):
    """A spec's weight_zero_point: one integer, or a list of `channels` integers (one per output
    channel), as an int or an int64 array."""
    if isinstance(v, (list, tuple, np.ndarray)):
        a = np.asarray(v)
        if a.dtype.kind not in "iu" or a.ndim != 1 or a.size not in (1, channels):
            raise FixedPointError(f"{where}: 'weight_zero_point' must be an integer or a list of "
                                  f"1 or {channels} integers (one per output channel), got "
                                  f"{np.asarray(v).tolist()!r}"[:300])
        return a.astype(np.int64)
    return _spec_int(v, where, "weight_zero_point")


def _spec_names(v, where, key) -> list:
    if not isinstance(v, (list, tuple)) or not all(isinstance(t, str) for t in v):
        raise FixedPointError(f"{where}: '{key}' must be a list of tensor names, got {v!r}")
    return list(v)


def _spec_scale(v, where):
    """A scale (one number or a list of numbers) as a float64 array of finite positive values."""
    if isinstance(v, (bool, np.bool_, str, bytes)) or v is None:
        raise FixedPointError(f"{where}: scale must be a positive number (or a list of them), "
                              f"got {v!r}")
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise FixedPointError(f"{where}: scale must be a positive number (or a list of them), "
                              f"got {v!r}") from None
    if a.ndim > 1:
        raise FixedPointError(f"{where}: scale must be a number or a 1-d list, got shape "
                              f"{list(a.shape)}")
    return check_scale(a, where)


def _tq_from_dict(d, p, where) -> TensorQ:
    """The TensorQ of an encoding dict {scale, zero_point, dtype, qmin, qmax} (extra keys of a
    graph input are checked by the caller)."""
    if not isinstance(d, dict) or "scale" not in d:
        raise FixedPointError(f"{where}: an encoding is a dict with 'scale' (and 'zero_point', "
                              f"'dtype', optional 'qmin'/'qmax'), got {d!r:.80}")
    dtype = d.get("dtype", "int8")
    if dtype not in DTYPE_RANGES or dtype == "int32":
        raise FixedPointError(f"{where}: dtype must be 'int8', 'uint8' or 'int16', got {dtype!r}")
    if dtype not in p.activation_dtypes:
        raise FixedPointError(f"{where}: profile '{p.name}' does not support {dtype} activations; "
                              f"it supports {list(p.activation_dtypes)}")
    s = _spec_scale(d["scale"], where)
    if s.size != 1:
        raise FixedPointError(f"{where}: activation scales are per tensor, got {s.size} values")
    lo, hi = DTYPE_RANGES[dtype]
    zp = _spec_int(d.get("zero_point", 0), where, "zero_point")
    qmin = _spec_int(d.get("qmin", lo), where, "qmin")
    qmax = _spec_int(d.get("qmax", hi), where, "qmax")
    try:
        return TensorQ(float(np.float32(s.ravel()[0])), zp, qmin, qmax, dtype)
    except FixedPointError as e:
        raise FixedPointError(f"{where}: {e}") from None


def _spec_weights(L, p, where, bias_bits=None):
    """(codes, zero point, s_w float32 [C], per_channel) and the int32 bias (or None) of a
    conv2d/dense layer of a spec, every array checked against the others and the profile; with
    bias_bits (a 16x8 layer: `lower_16x8.WIDE_BIAS_BITS`) the bias is int64 within that width."""
    op = L["op"]
    if "weight" not in L or "weight_scale" not in L:
        raise FixedPointError(f"{where}: needs 'weight' (integer codes) and 'weight_scale'")
    w = np.asarray(L["weight"])
    if w.dtype.kind not in "iu":
        raise FixedPointError(f"{where}: 'weight' must hold integer codes, got {w.dtype}")
    rank, layout = _WEIGHT_LAYOUTS[op]
    if w.ndim != rank:
        raise FixedPointError(f"{where}: 'weight' must be {rank}-d ({layout}), got shape "
                              f"{list(w.shape)}")
    if op == "gemm" and any(L.get(k, 1.0) != 1.0 for k in ("alpha", "beta")):
        raise FixedPointError(f"{where}: give alpha = beta = 1 (the weight codes, weight_scale "
                              "and int32 bias are used as given; fold alpha and beta into them)")
    c = w.shape[weight_output_axis(Node(str(L.get("name")), op, [], [], L))]
    wdt = L.get("weight_dtype", "int8")
    if wdt not in _WEIGHT_DTYPES:
        raise FixedPointError(f"{where}: weight_dtype must be one of {list(_WEIGHT_DTYPES)}, got "
                              f"{wdt!r}")
    lo, hi = _WEIGHT_DTYPES[wdt]
    if w.size and (w.min() < lo or w.max() > hi):
        idx = np.argwhere((w < lo) | (w > hi))[0].tolist()
        raise FixedPointError(f"{where}: weight code {int(w[tuple(idx)])} at index {idx} lies "
                              f"outside the {wdt} range [{lo}, {hi}]")
    s_w = _spec_scale(L["weight_scale"], f"{where} weight_scale")
    if s_w.size not in (1, c):
        raise FixedPointError(f"{where}: weight_scale has {s_w.size} values; give 1 (per tensor) "
                              f"or {c} (per channel, one per output channel)")
    per_channel = s_w.size > 1
    s_w = np.broadcast_to(s_w.astype(np.float32).ravel(), (c,)).copy()
    zp = _spec_weight_zero_point(L.get("weight_zero_point", 0), c, where)
    codes, zp = weight_form(w, zp, 4 if wdt == "int4" else 8, wdt != "uint8", p, where)
    bias = L.get("bias")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype.kind not in "iu":
            raise FixedPointError(f"{where}: 'bias' must hold int32 codes, got {bias.dtype}")
        if bias.shape != (c,):
            raise FixedPointError(f"{where}: 'bias' has shape {list(bias.shape)}; give one int32 "
                                  f"code per output channel, shape [{c}]")
        bits = p.bias_bits if bias_bits is None else bias_bits
        lim = (1 << (bits - 1)) - 1
        bad = np.abs(bias.astype(np.int64)) > lim
        if np.any(bad):
            ch = int(np.argmax(bad))
            raise FixedPointError(f"{where}: bias channel {ch} = {int(bias[ch])} does not fit "
                                  f"int{bits}")
        bias = bias.astype(np.int64 if bits > 32 else np.int32)
    return (codes, zp, s_w, per_channel), bias


def _spec_activation(act, name, where):
    """The fused activation entry (kind, attrs, output) of a spec's "activation", or None."""
    if isinstance(act, dict):
        _spec_dict(act, ("min", "max"), f"{where} activation")
        vals = [act.get(k) for k in ("min", "max")]
        if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number))
               or not np.isfinite(v) for v in vals) or not vals[0] <= vals[1]:
            raise FixedPointError(f"{where}: activation {{'min', 'max'}} needs two finite numbers "
                                  f"with min <= max, got {act!r}")
        return ("clip", {"min": float(vals[0]), "max": float(vals[1])}, name)
    if act not in _ACTIVATIONS:
        raise FixedPointError(f"{where}: activation must be one of {list(_ACTIVATIONS)} or "
                              f"{{'min': lo, 'max': hi}}, got {act!r}")
    return None if act == "none" else (act, {}, name)


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
               weight_zero_point (int, or [out] ints: one per output channel, which needs a
               profile with per_channel_weight_zero_point; default 0), bias (int32 array [out],
               optional, scale s_in·s_w; int64 within ±(2^47 − 1) for an int16-input layer
               under tflite/tflite-single, which lowers to TFLite's 16x8 node, and under tosa
               (also conv_transpose2d there), TOSA's int48 bias of its 16x8 node), strides,
               dilations, padding, pads, groups (as refq's conv2d), activation ("none" |
               "relu" | "relu6" | "relu_n1_to_1" | {"min", "max"} floats; default "none"),
               output (required).
      dense    weight [units, in], weight_scale, weight_zero_point, bias, activation, output.
      conv_transpose2d   weight [out, kh, kw, in/groups] (the codes), weight_dtype, weight_scale,
               weight_zero_point, bias [out], strides, dilations, groups, output_padding,
               padding, pads, output_shape (as refq's conv_transpose2d), activation, output.
      gemm     weight B [K, P] (transB = 0) or [P, K] (transB = 1), weight_scale (1 or P
               values: per output column), weight_zero_point, bias [P] (int32, scale
               s_in·s_w), transB, alpha and beta (1 only: fold them into the codes), activation,
               output; lowered as dense.
      matmul   inputs (two names, [N, ..., M, K] and [N, ..., K, P]), activation, output.
      add, multiply   inputs (two names), activation, output (required).
      concat   inputs, axis (default −1), output (required; inputs with other encodings are
               requantized to it).
      max_pool2d, avg_pool2d   pool_size, strides, padding, pads, dilations, ceil_mode,
               count_include_pad (avg), output (optional: default the input's encoding); the
               1-D and 3-D pools alike where their records name a lowering family (the profile
               must define the attributes used: `Profile.max_pool_attributes`,
               `avg_pool_attributes`).
      global_avg_pool2d   keepdims (default False), output (optional).
      flatten, reshape (shape), identity, zero_pad2d (pads)   output (optional).
      relu, relu6, clip (min, max), hard_swish, sigmoid, tanh, hard_sigmoid, leaky_relu, softmax
               output (optional for relu/relu6/clip; required otherwise).
    The integer graph follows the rules of `lower` with these encodings; the weight codes and bias
    are used as given (checked against the profile's weight dtype and bias_bits).
    Checks (FixedPointError naming the input or layer, the key and what is allowed): every dict
    accepts only the keys listed above (`_LAYER_KEYS`; a misspelt key is never ignored); integers
    (zero points, qmin/qmax) must be integers; scales finite positive numbers; weight codes within
    weight_dtype's range and of rank 4 (conv2d) or 2 (dense); weight_scale 1 or `out` values; bias
    one int32 code per output channel; activation one of the names above or {"min", "max"}.
    (Keys are per op: `_LAYER_KEYS`, from the op records; rank and layout: `_WEIGHT_LAYOUTS`.)
    """
    p = get_profile(profile)
    top = "lower_from_params"
    _spec_dict(spec, _SPEC_KEYS, f"{top}: spec")
    if not isinstance(spec.get("inputs"), (list, tuple)) or not spec["inputs"] or \
            not isinstance(spec.get("layers"), (list, tuple)) or not spec["layers"]:
        raise FixedPointError(f"{top}: spec needs non-empty lists 'inputs' and 'layers'")
    tq, acts, weights, biases = {}, {}, {}, {}
    inputs = []
    for i, d in enumerate(spec["inputs"]):
        where = f"{top}: input {i}" + (f" '{d.get('name')}'" if isinstance(d, dict) else "")
        _spec_dict(d, _INPUT_KEYS, where)
        name, shape = d.get("name"), d.get("shape")
        if not isinstance(name, str):
            raise FixedPointError(f"{where}: needs a string 'name'")
        if not isinstance(shape, (list, tuple)) or not shape or any(
                v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                   or v <= 0) for v in shape):
            raise FixedPointError(f"{where}: 'shape' must be a list of positive sizes (None = "
                                  f"free), batch first, got {shape!r}")
        inputs.append(TensorSpec(name, tuple(None if v is None else int(v) for v in shape),
                                 "float32"))
        tq[name] = _tq_from_dict(d, p, where)
    nodes = []
    prev = inputs[0].name if len(inputs) == 1 else None
    for i, L in enumerate(spec["layers"]):
        if not isinstance(L, dict):
            raise FixedPointError(f"{top}: layer {i}: expected a dict, got {type(L).__name__}")
        name, op = L.get("name"), L.get("op")
        where = f"{top}: layer {i} '{name}' ({op})"
        if not isinstance(name, str) or op not in _PARAM_OPS:
            raise FixedPointError(f"{where}: needs a string 'name' and an 'op' among "
                                  f"{', '.join(_PARAM_OPS)}")
        _spec_dict(L, _LAYER_KEYS[op], where)
        ins = _spec_names(L["inputs"], where, "inputs") if "inputs" in L else \
            ([prev] if prev is not None else [])
        if not ins or any(t not in tq for t in ins):
            raise FixedPointError(f"{where}: inputs {ins} are not all defined earlier (graph "
                                  f"inputs and earlier layers: {list(tq)})")
        attrs = {k: L[k] for k in _FLOAT_ATTRS.get(op, ()) if k in L}
        params = {}
        if op in WEIGHTED:
            family, int16_in = int16_family(p), tq[ins[0]].dtype == "int16"
            wide = WIDE_BIAS_BITS if (family == "tflite" and op != "conv_transpose2d"
                                      and int16_in) else \
                TOSA16_BIAS_BITS if family == TOSA16_FAMILY and int16_in else None
            weights[name], bias = _spec_weights(L, p, where, wide)
            params["weight"] = np.asarray(L["weight"]).astype(np.float64)
            if bias is not None:
                biases[name] = bias
                params["bias"] = bias.astype(np.float64)
        if op in FUSABLE_PRODUCERS:
            act = _spec_activation(L.get("activation", "none"), name, where)
            if act is not None:
                acts[name] = act
        node = Node(name, op, ins, [name], attrs, params)
        nodes.append(node)
        if "output" in L:
            _spec_dict(L["output"], _ENCODING_KEYS, f"{where} output")
            tq[name] = _tq_from_dict(L["output"], p, f"{where} output")
        elif op in _KEEPS_ENCODING:
            tq[name] = tq[ins[0]]
        else:
            raise FixedPointError(f"{where}: needs an 'output' encoding {{scale, zero_point, "
                                  "dtype}")
        prev = name
    if "outputs" in spec:
        outs = _spec_names(spec["outputs"], f"{top}: spec", "outputs")
        unknown = [t for t in outs if t not in tq or t in {s.name for s in inputs}]
        if not outs or unknown:
            raise FixedPointError(f"{top}: spec 'outputs' {outs} must name layers; "
                                  f"{unknown or 'none'} are not layers of the spec")
    else:
        outs = [prev]
    name = spec.get("name", "model")
    if not isinstance(name, str):
        raise FixedPointError(f"{top}: spec 'name' must be a string, got {name!r}")
    g = Graph(inputs, outs, nodes, name=name)
    try:
        g.validate()
    except RefqError as e:
        raise FixedPointError(f"lower_from_params: {e}") from None

    def weight(n):
        return weights[n.name]

    def bias(n, q_in, s_w, bits=None):
        return biases.get(n.name)

    src = Source(tq, acts, set(), weight, bias, {})
    return walk(g, src, p, g.name, {"source": g.name, "kind": "params"})
