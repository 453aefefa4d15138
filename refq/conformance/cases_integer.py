"""Integer kernel cases (kind "integer"): small integer graphs from `lower_from_params`, one per
kernel variant and shipped profile, exact tolerance.

Every input has a batch of six rows, each from one generator (case.json inputs.<x>.generators):
  uniform         codes uniform on the input grid (x = (q − zp)·s, float32)
  quantize_ties   x with x/s (float32 division, as int_quantize) exactly k + 1/2
  saturate_high   codes at qmax and values beyond it (the input quantizer saturates)
  saturate_low    codes at qmin and values below it
  all_equal       one code everywhere
  all_zero        x = 0 (the zero point everywhere)
Variants with power-of-two scales make the real multipliers powers of two, so that many
accumulators requantize to exact ties (where round-half-away, half-up and half-even and double vs
single rounding differ); "extreme_zp" variants put zero points at −128 and 127.
"""
from __future__ import annotations

import numpy as np

from ..fixedpoint.lowering import lower_from_params
from ..fixedpoint.profiles import PROFILES, get_profile
from .case import EXACT, Case, CaseData, register
from .integer_graphs import quantization_of, run_integer

F32 = np.float32
GENERATORS = ("uniform", "quantize_ties", "saturate_high", "saturate_low", "all_equal",
              "all_zero")
RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def enc(scale, zp=0, dtype="int8"):
    return {"scale": float(F32(scale)), "zero_point": int(zp), "dtype": dtype}


def _tie(k: int, s: float):
    """A float32 x with fl32(x / s) == k + 0.5, or None."""
    s32 = F32(s)
    x = F32((k + 0.5) * float(s32))
    for _ in range(9):
        if float(x / s32) == k + 0.5:
            return float(x)
        x = np.nextafter(x, F32(np.inf) if float(x / s32) < k + 0.5 else F32(-np.inf))
    return None


def generate_rows(rng, shape, e) -> np.ndarray:
    """float32 [6, *shape] for input encoding `e`, one row per GENERATORS entry."""
    s, zp = e["scale"], e["zero_point"]
    lo, hi = RANGES[e["dtype"]]
    n = int(np.prod(shape))

    def x_of(q):
        return ((np.asarray(q, dtype=np.float64) - zp) * s).astype(F32)

    rows = [x_of(rng.integers(lo, hi + 1, n))]
    ties = []
    for k in rng.integers(lo - zp, hi - zp, n).tolist():
        t = None
        for j in (k, k + 1, k - 1, k + 2, k - 2):
            if t is None and lo - zp <= j < hi - zp:
                t = _tie(j, s)
        ties.append(0.0 if t is None else t)
    rows.append(np.array(ties, dtype=F32))
    over = rng.uniform(0, 40, n)
    rows.append(((hi - zp + over * (rng.random(n) < 0.5)) * s).astype(F32))
    rows.append(((lo - zp - over * (rng.random(n) < 0.5)) * s).astype(F32))
    rows.append(x_of(np.full(n, rng.integers(lo, hi + 1))))
    rows.append(np.zeros(n, F32))
    return np.stack(rows).reshape((len(GENERATORS),) + tuple(shape))


def integer_case(name, variant, description, make_spec, profiles=None, seed=0):
    """Register integer.<name>.<variant>.<profile> for every profile (default: all shipped).
    make_spec(rng) -> (spec for lower_from_params, {input name: shape without batch})."""
    for pname in profiles or PROFILES:
        cid = f"integer.{name}.{variant}.{pname}"

        def build(cid=cid, pname=pname):
            rng = np.random.default_rng(seed)
            spec, shapes = make_spec(rng)
            spec["name"] = cid
            g = lower_from_params(spec, get_profile(pname))
            feeds, gens = {}, {}
            for d in spec["inputs"]:
                feeds[d["name"]] = generate_rows(rng, shapes[d["name"]], d)
                gens[d["name"]] = list(GENERATORS)
            outputs, trace = run_integer(g, feeds)
            zps = {L["name"]: L.get("weight_zero_point", 0) for L in spec["layers"]
                   if "weight" in L}
            ws = {L["name"]: (L["weight_scale"], 0 if np.ndim(zps[L["name"]]) else
                              zps[L["name"]], L.get("weight_dtype", "int8"))
                  for L in spec["layers"] if "weight" in L}
            q = quantization_of(g, ws)
            for name, zp in zps.items():   # a zero point per output channel
                if np.ndim(zp):
                    q[f"{name}/weight"]["zero_point"] = [int(v) for v in zp]
            return CaseData(g, feeds, outputs, trace, q, generators=gens)

        register(Case(cid, "integer", build, f"{description} (profile {pname})", seed=seed,
                      profile=pname, tolerance=dict(EXACT)))


def supporting(act=None, weight=None, weight_zp=False, per_channel_weight_zp=False) -> list:
    """The shipped profiles with activation dtype `act`, weight dtype `weight`, weight zps (one
    per layer; with per_channel_weight_zp, one per output channel)."""
    return [p.name for p in PROFILES.values() if (act is None or act in p.activation_dtypes)
            and (weight is None or weight in p.weight_dtypes)
            and (p.weight_zero_point or not weight_zp)
            and (p.per_channel_weight_zero_point or not per_channel_weight_zp)]


def inp(name, shape, e):
    return dict(e, name=name, shape=[None] + list(shape))


# ---- the kernels ------------------------------------------------------------------------------

def _std(dtype):  # of codes uniform on the grid
    return (RANGES[dtype][1] - RANGES[dtype][0]) / np.sqrt(12.0)


def _fit_scale(real_std, dtype="int8", sigma=2.5):  # sigma standard deviations at the grid's end
    return float(F32(sigma * real_std / RANGES[dtype][1]))


def weights(rng, shape, wdtype="int8", wlim=None):
    lo, hi = {"int8": (-127, 127), "int4": (-7, 7), "uint8": (0, 255)}[wdtype]
    if wlim is not None:
        lo, hi = max(lo, -wlim), min(hi, wlim)
    return rng.integers(lo, hi + 1, shape).astype(np.uint8 if wdtype == "uint8" else np.int8)


def _scales(rng, cout, pow2, per_channel):
    """(s_in, s_w [cout] float32): with pow2, s_in = 2^-4 and s_w = 2^-(3..6) per channel (so
    M = s_in·s_w/s_out = 2^-1 .. 2^-4 with s_out = 2^-6); else s_in None (the caller's) and s_w
    uniform in [0.002, 0.02], per channel or one."""
    if pow2:
        return 2.0 ** -4, (2.0 ** -(3 + rng.integers(0, 4, cout))).astype(F32)
    s_w = rng.uniform(0.002, 0.02, cout) if per_channel else np.full(1, rng.uniform(0.002, 0.02))
    return None, s_w.astype(F32)


def weighted_layer(rng, op, w, cout, terms, *, dtype, s_in, zp_out, pow2, per_channel, wdtype,
                   wzp, activation, bias, attrs):
    """(the spec layer of a weighted op whose outputs sum about `terms` products, its input
    scale): weight scales (`_scales`), an output scale fitted to the sum's spread (weight zero
    points, one or one per output channel, subtracted), and a random int32 bias."""
    si, s_w = _scales(rng, cout, pow2, per_channel)
    si = s_in if si is None else si
    if pow2:
        s_out = 2.0 ** -6
    else:
        zw = np.reshape(wzp, (-1,) + (1,) * (w.ndim - 1))  # one, or one per channel
        wstd = float(np.std(w.astype(np.float64) - zw)) or 1.0
        s_out = _fit_scale(np.sqrt(terms) * _std(dtype) * wstd * si * float(np.mean(s_w)), dtype)
    L = {"name": op, "op": op, "weight": w, "weight_dtype": wdtype, "weight_zero_point": wzp,
         "weight_scale": s_w.astype(np.float64).tolist() if s_w.size > 1 else float(s_w[0]),
         "activation": activation, "output": enc(s_out, zp_out, dtype), **attrs}
    if bias:
        lim = 64 if pow2 else 3000 if dtype != "int16" else 300000
        L["bias"] = rng.integers(-lim, lim + 1, cout).astype(np.int32)
    return L, si


def conv_spec(cin, cout, k, hw, *, op="conv2d", attrs=None, dtype="int8", zp_in=-3, zp_out=5,
              s_in=0.03, pow2=False, wlim=None, per_channel=True, wdtype="int8", wzp=0,
              activation="none", bias=True):
    """A one-layer conv2d (or dense when op == "dense": k ignored, hw = () or (positions,))."""
    attrs = dict(attrs or {})
    groups = attrs.get("groups", 1)

    def make(rng):
        wshape = (cout, k, k, cin // groups) if op == "conv2d" else (cout, cin)
        w = weights(rng, wshape, wdtype, wlim)
        taps = int(np.prod(wshape[1:]))
        L, si = weighted_layer(rng, op, w, cout, taps, dtype=dtype, s_in=s_in, zp_out=zp_out,
                               pow2=pow2, per_channel=per_channel, wdtype=wdtype, wzp=wzp,
                               activation=activation, bias=bias, attrs=attrs)
        shape = (*hw, cin)
        return {"inputs": [inp("x", shape, enc(si, zp_in, dtype))], "layers": [L]}, {"x": shape}
    return make


_all = integer_case


_all("conv2d", "basic", "int_conv2d 3x3 valid, per-channel weights, int32 bias",
     conv_spec(3, 4, 3, (5, 5)))
_all("conv2d", "same_stride2", "int_conv2d 3x3 'same' stride 2: padded taps read the input zero "
     "point 20", conv_spec(2, 3, 3, (6, 6), attrs={"padding": "same", "strides": [2, 2]},
                           zp_in=20), seed=1)
_all("conv2d", "dilated_explicit", "int_conv2d 3x3, dilations [2, 1], explicit pads [1, 2, 0, 1]",
     conv_spec(2, 3, 3, (6, 5), attrs={"dilations": [2, 1], "padding": "explicit",
                                       "pads": [1, 2, 0, 1]}), seed=2)
_all("conv2d", "depthwise_same", "int_conv2d depthwise 3x3 'same' (groups = channels)",
     conv_spec(4, 4, 3, (5, 5), attrs={"groups": 4, "padding": "same"}, zp_in=-128), seed=3)
_all("conv2d", "depthwise_multiplier", "int_conv2d depthwise, channel multiplier 2, 'same', "
     "stride 2", conv_spec(3, 6, 3, (6, 6), attrs={"groups": 3, "padding": "same",
                                                    "strides": [2, 2]}), seed=4)
_all("conv2d", "grouped_relu6", "int_conv2d groups 2, 1x1, fused relu6 clamp",
     conv_spec(4, 4, 1, (3, 3), attrs={"groups": 2}, activation="relu6", zp_out=-128), seed=5)
_all("conv2d", "per_tensor_relu", "int_conv2d with one weight scale and a fused relu",
     conv_spec(3, 4, 3, (4, 4), per_channel=False, activation="relu", zp_out=-100), seed=6)
_all("conv2d", "ties", "int_conv2d with power-of-two scales: real multipliers 2^-1..2^-4, many "
     "accumulators on exact requantization ties", conv_spec(2, 4, 2, (5, 5), pow2=True, wlim=2,
                                                            zp_in=0, zp_out=0), seed=7)
_all("conv2d", "extreme_zp", "int_conv2d with input zero point -128 and output zero point 127 "
     "(outputs above 0 saturate)", conv_spec(3, 3, 3, (4, 4), zp_in=-128, zp_out=127), seed=8)
_all("conv2d", "int4_weights", "int_conv2d with int4 weight codes [-7, 7]",
     conv_spec(3, 4, 3, (4, 4), wdtype="int4"), supporting(weight="int4"), seed=9)
_all("conv2d", "weight_zp", "int_conv2d with a non-zero weight zero point (3)",
     conv_spec(3, 4, 3, (4, 4), wzp=3), supporting(weight_zp=True), seed=10)
_all("conv2d", "weight_zp_per_channel", "int_conv2d with uint8 weights and a weight zero "
     "point per output channel (0, 255, 128, 7; w - zp spans [-255, 255], beyond int8), "
     "'same' stride 2", conv_spec(3, 4, 3, (5, 5), attrs={"padding": "same", "strides": [2, 2]},
                                  dtype="uint8", zp_in=128, zp_out=120, wdtype="uint8",
                                  wzp=[0, 255, 128, 7]),
     supporting(act="uint8", weight="uint8", per_channel_weight_zp=True), seed=16)
_all("conv2d", "uint8", "int_conv2d on uint8 activations (zero points 128, 3) and uint8 weights "
     "(zero point 128)", conv_spec(3, 4, 3, (4, 4), dtype="uint8", zp_in=128, zp_out=3,
                                   wdtype="uint8", wzp=128),
     supporting(act="uint8", weight="uint8"), seed=11)
_all("dense", "per_channel", "int_dense with per-unit weight scales",
     conv_spec(8, 5, 0, (), op="dense"), seed=13)
_all("dense", "per_tensor", "int_dense with one weight scale (TFLite's reference FC "
     "requantizes in float)", conv_spec(8, 5, 0, (), op="dense", per_channel=False), seed=14)
_all("dense", "ties_relu", "int_dense with power-of-two scales and a fused relu",
     conv_spec(6, 4, 0, (), op="dense", pow2=True, wlim=2, zp_in=-128, zp_out=-128,
               activation="relu"), seed=15)


def one_layer(inputs: dict, layer: dict):
    """A spec maker for one layer reading graph inputs {name: (shape, encoding)}."""
    def make(rng):
        spec = {"inputs": [inp(k, shape, e) for k, (shape, e) in inputs.items()],
                "layers": [dict(layer, inputs=list(inputs))]}
        return spec, {k: shape for k, (shape, _) in inputs.items()}
    return make


X = (4, 5, 3)
E1, E2 = enc(0.02, -5), enc(0.035, 10)
_all("add", "basic", "int_add of two tensors with different encodings", one_layer(
    {"a": (X, E1), "b": (X, E2)}, {"name": "add", "op": "add", "output": enc(0.05, -2)}), seed=20)
_all("add", "relu", "int_add with a fused relu", one_layer(
    {"a": (X, E1), "b": (X, E2)}, {"name": "add", "op": "add", "activation": "relu",
                                   "output": enc(0.03, -128)}), seed=21)
_all("add", "ties", "int_add with power-of-two scales (2^-4 + 2^-5 -> 2^-3: ties at the output "
     "rounding)", one_layer({"a": (X, enc(2 ** -4)), "b": (X, enc(2 ** -5, 3))},
                            {"name": "add", "op": "add", "output": enc(2 ** -3, 1)}), seed=22)
_all("add", "extreme_zp", "int_add with zero points -128 and 127 in, -128 out (saturation on both "
     "sides)", one_layer({"a": (X, enc(0.02, -128)), "b": (X, enc(0.03, 127))},
                         {"name": "add", "op": "add", "output": enc(0.01, -128)}), seed=23)
_all("add", "broadcast", "int_add of [N,H,W,C] and [N,1,1,C]", one_layer(
    {"a": (X, E1), "b": ((1, 1, 3), E2)}, {"name": "add", "op": "add", "output": enc(0.05, 0)}),
     seed=24)
_all("multiply", "se_broadcast", "int_multiply [N,H,W,C] by a gate [N,1,1,C]", one_layer(
    {"a": (X, E1), "b": ((1, 1, 3), enc(1 / 255, -128))},
    {"name": "mul", "op": "multiply", "output": enc(0.015, -3)}), seed=25)
_all("multiply", "ties", "int_multiply with M = 2^-3 (ties at p = 4 mod 8)", one_layer(
    {"a": (X, enc(2 ** -4, 0)), "b": (X, enc(2 ** -4, 2))},
    {"name": "mul", "op": "multiply", "output": enc(2 ** -5, 0)}), seed=26)
_all("multiply", "extreme_zp_relu6", "int_multiply of two non-positive ranges (zero points 127) "
     "with a fused relu6 (output zero point -128)",
     one_layer({"a": (X, enc(0.01, 127)), "b": (X, enc(0.01, 127))},
               {"name": "mul", "op": "multiply", "activation": "relu6",
                "output": enc(6 / 255, -128)}), seed=27)

P = (5, 5, 3)
_SAME = {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"}
_VALID = {"pool_size": [2, 2], "strides": [2, 2]}
for _op in ("max_pool2d", "avg_pool2d"):
    _k = _op.split("_")[0]
    _all(_op, "same_3x3_s2", f"int_{_op} 3x3 'same' stride 2 (padding never counted)",
         one_layer({"x": (P, enc(0.03, -128))}, dict(_SAME, name=_k, op=_op)), seed=30)
    _all(_op, "valid_2x2", f"int_{_op} 2x2 valid stride 2 (avg: sums of four, rounding ties)",
         one_layer({"x": ((4, 6, 2), enc(0.03, 11))}, dict(_VALID, name=_k, op=_op)), seed=31)
_all("avg_pool2d", "requant", "int_avg_pool2d with an output encoding that differs from the input",
     one_layer({"x": (P, enc(0.03, 4))}, dict(_SAME, name="avg", op="avg_pool2d",
                                               output=enc(0.021, -7))), seed=32)
_all("global_avg_pool2d", "requant", "int_mean over H, W with another output encoding",
     one_layer({"x": ((4, 5, 3), enc(0.03, 7))},
               {"name": "gap", "op": "global_avg_pool2d", "output": enc(0.02, -9)}), seed=33)
_all("global_avg_pool2d", "keepdims_ties", "int_mean of 2x2 windows (sum / 4 ties), same "
     "encoding, keepdims", one_layer({"x": ((2, 2, 4), enc(0.05, 0))},
                                     {"name": "gap", "op": "global_avg_pool2d", "keepdims": True,
                                      "output": enc(0.05, 0)}), seed=34)
_all("concat", "requant", "int_concat of three inputs, two requantized (int_requantize) to the "
     "output encoding", one_layer({"a": ((3, 3, 2), E1), "b": ((3, 3, 1), enc(0.07, -128)),
                                   "c": ((3, 3, 2), enc(0.04, 3))},
                                  {"name": "cat", "op": "concat", "output": enc(0.04, 3)}),
     seed=35)
_all("concat", "same_encoding", "int_concat of inputs sharing the output encoding (no "
     "requantization), on axis 1", one_layer({"a": ((2, 3, 2), E2), "b": ((1, 3, 2), E2)},
                                            {"name": "cat", "op": "concat", "axis": 1,
                                             "output": E2}), seed=36)
_all("zero_pad2d", "zp", "int_pad [top 1, bottom 2, left 0, right 3] fills the zero point 20",
     one_layer({"x": ((3, 3, 2), enc(0.03, 20))},
               {"name": "pad", "op": "zero_pad2d", "pads": [1, 2, 0, 3]}), seed=37)
for _op, _attrs, _e in (("relu", {}, enc(0.03, 9)), ("relu6", {}, enc(0.05, -20)),
                        ("clip", {"min": -0.5, "max": 1.25}, enc(0.011, 30))):
    _all(_op, "clamp", f"standalone {_op} on its input grid -> int_clamp (bounds rounded by the "
         "profile)", one_layer({"x": (X, _e)}, dict(_attrs, name=_op, op=_op)), seed=38)
_all("relu", "requant", "relu with another output encoding -> int_requantize with the relu "
     "bounds", one_layer({"x": (X, enc(0.03, 9))},
                         {"name": "relu", "op": "relu", "output": enc(0.017, -128)}), seed=39)
_all("shape_ops", "basic", "flatten -> reshape [3, 4] -> identity on integers (no "
     "arithmetic)", lambda rng: ({"inputs": [inp("x", (2, 3, 2), E1)], "layers": [
         {"name": "flat", "op": "flatten"}, {"name": "rs", "op": "reshape", "shape": [3, 4]},
         {"name": "id", "op": "identity"}]}, {"x": (2, 3, 2)}), seed=40)

_LUT_IN = enc(0.06, 3)
_LUTS = [
    ("sigmoid", "generic", {}, enc(1 / 250, -125)),
    ("sigmoid", "tflite_encoding", {}, enc(1 / 256, -128)),
    ("tanh", "generic", {}, enc(1 / 120, 2)),
    ("tanh", "tflite_encoding", {}, enc(1 / 128, 0)),
    ("hard_swish", "basic", {}, enc(0.035, -100)),
    ("hard_sigmoid", "keras2", {"alpha": 0.2, "beta": 0.5}, enc(1 / 255, -128)),
    ("hard_sigmoid", "keras3", {"alpha": 1 / 6, "beta": 0.5}, enc(1 / 255, -128)),
    ("leaky_relu", "alpha0.2", {"alpha": 0.2}, enc(0.04, -60)),
]
for _op, _v, _attrs, _e in _LUTS:
    _all(_op, _v, f"{_op}{''.join(f' {k}={v!r}' for k, v in _attrs.items())} as int_lut (the "
         f"profile's table scheme), output scale {_e['scale']:.6g}, zero point {_e['zero_point']}",
         one_layer({"x": ((4, 8), _LUT_IN)}, dict(_attrs, name=_op, op=_op, output=_e)), seed=41)
_all("softmax", "generic", "int_softmax with a generic output encoding (float scheme)",
     one_layer({"x": ((10,), enc(0.04, 5))},
               {"name": "sm", "op": "softmax", "output": enc(1 / 255, -128)}), seed=42)
_all("softmax", "tflite_encoding", "int_softmax with TFLite's output encoding 1/256, -128 "
     "(fixed point where the profile models it)", one_layer(
         {"x": ((10,), enc(0.04, 5))},
         {"name": "sm", "op": "softmax", "output": enc(1 / 256, -128)}), seed=43)
