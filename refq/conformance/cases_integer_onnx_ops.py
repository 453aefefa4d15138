"""Integer kernel cases (kind "integer") of the ops and attributes that came with ONNX:
int_conv_transpose2d, gemm (lowered to int_dense), int_matmul, and pooling with dilations,
ceil_mode, count_include_pad, same_lower, of rank 1 and 3, global_max_pool2d and round (the last
ones when their op records name a lowering family), one per variant and shipped profile that
supports it (`Profile.avg_pool_attributes` / `max_pool_attributes` for the pools), exact
tolerance. Built as `cases_integer` builds its cases
(`integer_case`: `lower_from_params`, six generator rows per input, power-of-two "ties" variants,
extreme zero points).
"""
from __future__ import annotations

import numpy as np

from ..fixedpoint.lower_graph import SUPPORTED_OPS
from ..fixedpoint.profiles import PROFILES
from .cases_integer import enc, inp, integer_case, supporting, weighted_layer, weights

__all__ = ["ct_spec", "gemm_spec", "matmul_spec", "REGISTERED"]


def ct_spec(cin, cout, k, hw, *, attrs=None, dtype="int8", zp_in=-3, zp_out=5, s_in=0.03,
            pow2=False, wlim=None, per_channel=True, wdtype="int8", wzp=0, activation="none",
            bias=True):
    """A one-layer conv_transpose2d spec maker: weight [cout, k, k, cin/groups]."""
    attrs = dict(attrs or {})

    def make(rng):
        groups = attrs.get("groups", 1)
        w = weights(rng, (cout, k, k, cin // groups), wdtype, wlim)
        stride = int(np.prod(attrs.get("strides", [1, 1])))
        terms = max(1, k * k * (cin // groups) // stride)
        L, si = weighted_layer(rng, "conv_transpose2d", w, cout, terms, dtype=dtype, s_in=s_in,
                                zp_out=zp_out, pow2=pow2, per_channel=per_channel,
                                wdtype=wdtype, wzp=wzp, activation=activation, bias=bias,
                                attrs=attrs)
        shape = (*hw, cin)
        return {"inputs": [inp("x", shape, enc(si, zp_in, dtype))], "layers": [L]}, {"x": shape}
    return make


def gemm_spec(k, units, *, trans_b=0, dtype="int8", zp_in=-3, zp_out=5, s_in=0.03, pow2=False,
              wlim=None, per_channel=True, activation="none", bias=True):
    """A one-layer gemm spec maker: B [k, units] (transB = 0) or [units, k] (transB = 1)."""
    def make(rng):
        w = weights(rng, (k, units) if trans_b == 0 else (units, k), "int8", wlim)
        L, si = weighted_layer(rng, "gemm", w, units, k, dtype=dtype, s_in=s_in, zp_out=zp_out,
                                pow2=pow2, per_channel=per_channel, wdtype="int8", wzp=0,
                                activation=activation, bias=bias, attrs={"transB": trans_b})
        return {"inputs": [inp("x", (k,), enc(si, zp_in, dtype))], "layers": [L]}, {"x": (k,)}
    return make


def matmul_spec(a_shape, b_shape, ea, eb, out, activation="none"):
    """A one-layer matmul spec maker of two graph inputs a [N, *a_shape], b [N, *b_shape]."""
    def make(rng):
        L = {"name": "matmul", "op": "matmul", "inputs": ["a", "b"], "activation": activation,
             "output": out}
        spec = {"inputs": [inp("a", a_shape, ea), inp("b", b_shape, eb)], "layers": [L]}
        return spec, {"a": a_shape, "b": b_shape}
    return make


#: (op, variant) of every case family this module registers (one case per supporting profile).
REGISTERED: list = []


def _all(name, variant, description, make_spec, profiles=None, seed=0):
    REGISTERED.append((name, variant))
    integer_case(name, variant, description, make_spec, profiles, seed=seed)


# ---- conv_transpose2d -> int_conv_transpose2d -------------------------------------------------
_all("conv_transpose2d", "valid_stride2", "int_conv_transpose2d 3x3 stride 2 valid (scatter, every "
     "output reached), per-channel weights, int32 bias", ct_spec(3, 4, 3, (3, 3),
                                                                 attrs={"strides": [2, 2]}),
     seed=200)
_all("conv_transpose2d", "same_upper_output_padding", "int_conv_transpose2d 3x3 stride 2 "
     "same_upper, output_padding [1, 0]", ct_spec(2, 3, 3, (3, 4), attrs={
         "strides": [2, 2], "padding": "same_upper", "output_padding": [1, 0]}), seed=201)
_all("conv_transpose2d", "grouped_dilated_explicit", "int_conv_transpose2d groups 2, dilations "
     "[2, 1], stride [1, 2], explicit pads [1, 0, 2, 1]", ct_spec(4, 4, 2, (3, 3), attrs={
         "groups": 2, "dilations": [2, 1], "strides": [1, 2], "padding": "explicit",
         "pads": [1, 0, 2, 1]}), seed=202)
_all("conv_transpose2d", "output_shape_bias_only", "int_conv_transpose2d stride 3 with "
     "output_shape [8, 8] beyond the full output: some outputs hold the bias alone",
     ct_spec(2, 3, 2, (2, 2), attrs={"strides": [3, 3], "output_shape": [8, 8]}), seed=203)
_all("conv_transpose2d", "ties_relu", "int_conv_transpose2d with power-of-two scales (exact "
     "requantization ties) and a fused relu", ct_spec(2, 4, 2, (3, 3), attrs={
         "strides": [2, 2]}, pow2=True, wlim=2, zp_in=0, zp_out=-128, activation="relu"),
     seed=204)
_all("conv_transpose2d", "extreme_zp", "int_conv_transpose2d with input zero point -128 and "
     "output zero point 127", ct_spec(3, 3, 3, (3, 3), attrs={"strides": [2, 2]}, zp_in=-128,
                                      zp_out=127), seed=205)
_all("conv_transpose2d", "per_tensor_relu6", "int_conv_transpose2d with one weight scale and a "
     "fused relu6", ct_spec(3, 4, 3, (3, 3), attrs={"strides": [2, 2]}, per_channel=False,
                            activation="relu6", zp_out=-128), seed=206)
_all("conv_transpose2d", "weight_zp", "int_conv_transpose2d with a weight zero point (3)",
     ct_spec(3, 4, 3, (3, 3), attrs={"strides": [2, 2]}, wzp=3), supporting(weight_zp=True),
     seed=207)
_all("conv_transpose2d", "uint8", "int_conv_transpose2d on uint8 activations and uint8 weights "
     "(zero point 128)", ct_spec(3, 4, 3, (3, 3), attrs={"strides": [2, 2]}, dtype="uint8",
                                 zp_in=128, zp_out=3, wdtype="uint8", wzp=128),
     supporting(act="uint8", weight="uint8"), seed=208)
_all("conv_transpose2d", "int16", "int_conv_transpose2d on int16 activations (16x8)",
     ct_spec(2, 3, 3, (3, 3), attrs={"strides": [2, 2]}, dtype="int16", zp_in=0, zp_out=0,
             s_in=2e-4), ["tosa", "onnx"], seed=209)   # TFLite's 16x8 TRANSPOSE_CONV: refused

# ---- gemm -> int_dense ------------------------------------------------------------------------
_all("gemm", "trans_b0_per_channel", "gemm with B [K, P] (transB 0) per output column, lowered "
     "to int_dense [P, K]", gemm_spec(8, 5), seed=210)
_all("gemm", "trans_b1_per_tensor_relu", "gemm with B [P, K] (transB 1), one weight scale and a "
     "fused relu", gemm_spec(8, 5, trans_b=1, per_channel=False, activation="relu",
                             zp_out=-128), seed=211)
_all("gemm", "ties", "gemm with power-of-two scales (exact requantization ties)",
     gemm_spec(6, 4, pow2=True, wlim=2, zp_in=-128, zp_out=0), seed=212)

# ---- matmul -> int_matmul ---------------------------------------------------------------------
_A, _B = enc(0.02, -5), enc(0.035, 10)
_all("matmul", "rank3_zero_points", "int_matmul [N, 4, 6] @ [N, 6, 3], both zero points "
     "non-zero", matmul_spec((4, 6), (6, 3), _A, _B, enc(0.2, 3)), seed=220)
_all("matmul", "broadcast_leading", "int_matmul [N, 2, 3, 5] @ [N, 1, 5, 4] (leading axes "
     "broadcast)", matmul_spec((2, 3, 5), (1, 5, 4), _A, _B, enc(0.17, -2)), seed=221)
_all("matmul", "ties_m_2e-8", "int_matmul with power-of-two scales: M = 2^-8, accumulators on "
     "exact requantization ties", matmul_spec((3, 4), (4, 3), enc(2 ** -4, 0), enc(2 ** -4, 2),
                                              enc(1.0, 0)), seed=222)
_all("matmul", "extreme_zp", "int_matmul of a non-negative (zero point -128) and a non-positive "
     "(zero point 127) operand into an output with zero point 127",
     matmul_spec((3, 4), (4, 2), enc(0.01, -128), enc(0.01, 127), enc(0.1, 127)), seed=223)
_all("matmul", "relu", "int_matmul with a fused relu (output zero point -128)",
     matmul_spec((3, 4), (4, 2), _A, _B, enc(0.075, -128), activation="relu"), seed=226)
_all("matmul", "uint8", "int_matmul on uint8 (zero points 128 and 3)",
     matmul_spec((3, 5), (5, 2), enc(0.02, 128, "uint8"), enc(0.03, 3, "uint8"),
                 enc(0.1, 100, "uint8")), supporting(act="uint8"), seed=224)
# (no int16 int_matmul: two int16 operands overflow the profiles' int32 accumulator from K = 2
# on, at the saturating generator rows; 16x16 targets accumulate in int64)


# ---- pooling geometry beyond plain 2-D pooling -------------------------------------------------
def pool_profiles(op, needs) -> list:
    """The shipped profiles whose pooling kernels define every attribute of `needs`."""
    field = "avg_pool_attributes" if op.startswith("avg") else "max_pool_attributes"
    return [p.name for p in PROFILES.values() if set(needs) <= set(getattr(p, field))]


def one_input_layer(shape, e, layer):
    def make(rng):
        return {"inputs": [inp("x", shape, e)], "layers": [layer]}, {"x": shape}
    return make


_PE = enc(0.03, -9)
_POOLS = [  # (op, variant, description, input shape, attrs, attributes it needs)
    ("avg_pool2d", "dilated", "dilations [2, 1], stride 1", (6, 5, 2),
     {"pool_size": [2, 3], "strides": [1, 1], "dilations": [2, 1]}, ("dilations",)),
    ("avg_pool2d", "ceil_mode", "3x3 stride 2 ceil_mode (a last window in the overhang)",
     (6, 6, 2), {"pool_size": [3, 3], "strides": [2, 2], "ceil_mode": True}, ("ceil_mode",)),
    ("avg_pool2d", "count_include_pad", "3x3 stride 2 'same' counting the padded taps",
     (5, 5, 2), {"pool_size": [3, 3], "strides": [2, 2], "padding": "same",
                 "count_include_pad": True}, ("count_include_pad",)),
    ("avg_pool2d", "same_lower", "2x2 stride 1 same_lower (the extra pad before)", (5, 4, 2),
     {"pool_size": [2, 2], "strides": [1, 1], "padding": "same_lower"}, ("same_lower",)),
    ("max_pool2d", "dilated_ceil", "2x2 dilations [2, 2], stride 2, ceil_mode", (7, 6, 2),
     {"pool_size": [2, 2], "strides": [2, 2], "dilations": [2, 2], "ceil_mode": True},
     ("dilations", "ceil_mode")),
    ("max_pool2d", "same_lower", "3x3 stride 2 same_lower", (6, 5, 2),
     {"pool_size": [3, 3], "strides": [2, 2], "padding": "same_lower"}, ("same_lower",)),
    ("avg_pool1d", "same", "1-D 3-tap stride 2 'same'", (9, 3),
     {"pool_size": [3], "strides": [2], "padding": "same"}, ("1d",)),
    ("max_pool1d", "valid", "1-D 2-tap stride 1", (7, 3), {"pool_size": [2], "strides": [1]},
     ("1d",)),
    ("avg_pool3d", "ceil_count_include_pad", "3-D 2x2x2, ceil_mode, explicit pads counted",
     (3, 4, 3, 2), {"pool_size": [2, 2, 2], "strides": [2, 1, 2], "ceil_mode": True,
                    "padding": "explicit", "pads": [1, 0, 0, 1, 0, 0],
                    "count_include_pad": True}, ("3d", "ceil_mode", "count_include_pad")),
    ("max_pool3d", "valid", "3-D 2x2x2 stride 1", (3, 4, 3, 2),
     {"pool_size": [2, 2, 2], "strides": [1, 1, 1]}, ("3d",)),
]
for _op, _v, _d, _shape, _attrs, _needs in _POOLS:
    if _op in SUPPORTED_OPS:
        _all(_op, _v, f"int_{_op} {_d}", one_input_layer(
            _shape, _PE, dict(_attrs, name=_op.split("_")[0], op=_op)),
             pool_profiles(_op, _needs), seed=230)
if "global_max_pool2d" in SUPPORTED_OPS:
    _all("global_max_pool2d", "keepdims", "global_max_pool2d as int_max_pool2d over the whole "
         "image (keepdims)", one_input_layer((3, 4, 3), _PE, {
             "name": "gmp", "op": "global_max_pool2d", "keepdims": True}), seed=231)
    _all("global_max_pool2d", "flat", "global_max_pool2d as int_max_pool2d and a flatten",
         one_input_layer((3, 4, 3), _PE, {"name": "gmp", "op": "global_max_pool2d"}), seed=232)
if "round" in SUPPORTED_OPS:
    _all("round", "table", "round as int_lut of every input code (input scale 0.1: many exact "
         "halves), output scale 1", one_input_layer((4, 8), enc(0.1, 3), {
             "name": "round", "op": "round", "output": enc(1.0, 0)}), seed=233)
