"""int_matmul: the integer product of two activations (batched matmul) with one requantization.

Accumulation. acc = (a − a_zp) @ (b − b_zp) over the last two axes (NumPy matmul broadcasting of
the leading axes, as the float `matmul`), exact: with K the reduction length, every partial sum
is at most K·max|a − a_zp|·max|b − b_zp| in magnitude (`operands.blas_is_exact`), so the product
runs in float32 when that bound is within 2^24, in float64 within 2^53, else in int64 (NumPy's
integer matmul, no BLAS; refused when even int64 is not proven, `operands.check_operands`).
Requantization by `common.finish_fast` with one multiplier for the tensor.
"""
from __future__ import annotations

import numpy as np

from ...layers import REGISTRY
from ...layers.base import Attr, Op
from .common import (ACC_ATTRS, ACT_ATTRS, ACT_ZP_RANGE, REQUANT_ATTRS, REQUANT_PARAMS, act_dtype,
                     check_acc_attrs, check_act, check_requant, check_zp, finish_accumulator,
                     finish_fast, forward_of, int_values, shifted_absmax)
from .operands import FLOAT32_EXACT, FLOAT64_EXACT, blas_is_exact, check_operands
from ..rounding import _bounds

__all__ = ["OPS", "NARROW", "matmul_accumulator", "matmul_plain"]


def _shape(in_shapes, attrs, params):
    what = "int_matmul"
    out = REGISTRY["matmul"].infer_shape(in_shapes, {}, {})
    check_zp(attrs["a_zp"], f"{what}: a_zp", ACT_ZP_RANGE)
    check_zp(attrs["b_zp"], f"{what}: b_zp", ACT_ZP_RANGE)
    check_act(attrs, what)
    check_acc_attrs(attrs, what)
    check_requant(params, attrs, 1, what)
    return out


def matmul_accumulator(a, b, attrs, exact: bool = True):
    """(acc, (lo, hi)): acc[..., i, j] = Σ_k (a[..., i, k] − a_zp)·(b[..., k, j] − b_zp), exact
    (module docstring); (lo, hi) its min and max, or with exact=False ±(the bound)."""
    a = int_values(a, "int_matmul input 0")
    b = int_values(b, "int_matmul input 1")
    k = a.shape[-1]
    xa, wa = shifted_absmax(a, attrs["a_zp"]), shifted_absmax(b, attrs["b_zp"])
    check_operands(k, xa, wa, "int_matmul")
    bound = int(k) * xa * wa
    if blas_is_exact(k, xa, wa, limit=FLOAT32_EXACT):
        dtype = np.float32
    elif bound <= FLOAT64_EXACT:
        dtype = np.float64
    else:
        dtype = np.int64
    ad, bd = a.astype(dtype), b.astype(dtype)
    if attrs["a_zp"]:
        ad -= dtype(attrs["a_zp"])
    if attrs["b_zp"]:
        bd -= dtype(attrs["b_zp"])
    acc = np.matmul(ad, bd)
    return acc, _bounds(acc) if exact else (-bound, bound)


def _accumulate(inputs, params, attrs):
    """int_matmul — integer batched matrix product of two activations with requantization.

    Definition
        acc[..., i, j] = Σ_{k<K} (a[..., i, k] − a_zp)·(b[..., k, j] − b_zp)
            (leading axes broadcast as NumPy's matmul; both operands rank >= 3, batch first,
            as the float matmul)
        acc' = apply_overflow_policy(acc, accumulator_bits, overflow)
        y = clamp(requantize(acc') + output_zp, act_min, act_max)
    Integer semantics
        TFLite BATCH_MATMUL int8 (`reference/batch_matmul.h`, prepared with
        `GetQuantizedConvolutionMultipler` and `QuantizeMultiplier`): int32 Σ (lhs + lhs_offset)·
        (rhs + rhs_offset), MultiplyByQuantizedMultiplier, + output offset, clamp. TOSA MATMUL:
        int32 Σ (A − A_zp)·(B − B_zp), then RESCALE. ONNX QLinearMatMul: the same exact sum,
        float M = float32(float32(a_scale·b_scale)/y_scale), zero point added before rounding
        half to even (`onnx.reference`; zp_before_round), onnxruntime float32(acc)·M, clamp,
        round half to even, + zp (scheme float32_rne). MatMulInteger is acc itself (exact
        int32), requantized by whatever follows. One multiplier (per tensor): multiplier,
        shift, real_multiplier [1]; schemes and their rounding as int_conv2d (fixedpoint.md
        §2, §3.3, §8.2).
    Shapes
        a [N, ..., M, K], b [N, ..., K, P] int (each of its tensor's dtype); y [N, ..., M, P].
    Errors
        ShapeError as matmul; FixedPointError for zero points outside their dtype, act_min >
        act_max, requantization parameters outside the scheme's range, accumulator overflow
        under "error", or a reduction that may leave int64; ParamError for missing or
        wrong-length parameters.
    Returns (y, largest |acc| before the overflow policy) from `accumulate`.
    """
    return matmul_narrow(inputs, params, attrs, dtype=np.int64)


def matmul_narrow(inputs, params, attrs, memo=None, dtype=None):
    """int_matmul's (y, AccExtremes) in `dtype` (None: `act_dtype`)."""
    if memo is None or "checked" not in memo:
        _shape([np.shape(inputs[0]), np.shape(inputs[1])], attrs, params)
        if memo is not None:
            memo["checked"] = True
    acc, bounds = matmul_accumulator(inputs[0], inputs[1], attrs, exact=False)
    return finish_fast(acc, bounds, params, attrs, act_dtype(attrs) if dtype is None else dtype,
                       memo=memo)


def matmul_plain(inputs, params, attrs):
    """int_matmul by the plain path: the exact bounds, then `finish_accumulator` (int64)."""
    _shape([np.shape(inputs[0]), np.shape(inputs[1])], attrs, params)
    return finish_accumulator(*matmul_accumulator(inputs[0], inputs[1], attrs), params, attrs)


_forward = forward_of(_accumulate)


def _macs(in_shapes, out_shape, attrs, params):
    return REGISTRY["matmul"].macs(in_shapes, out_shape, attrs, params)


OPS = [
    Op("int_matmul", _forward, _shape, num_inputs=2,
       attrs={"a_zp": Attr("int", 0), "b_zp": Attr("int", 0), "output_zp": Attr("int", 0),
              **ACT_ATTRS, **REQUANT_ATTRS, **ACC_ATTRS},
       params=dict(REQUANT_PARAMS), macs=_macs, accumulate=_accumulate),
]

#: `run_int`'s kernel: (y in the narrowest dtype holding [act_min, act_max], AccExtremes).
NARROW = {"int_matmul": matmul_narrow}
