"""The integer kernels of the accelerator model: `INT_REGISTRY = {name: Op}` of every `int_*` op.

An integer graph (see the integer graph contract in the lowering) is an ordinary refq Graph whose
integer tensors are int64 arrays holding values of their declared dtype; `refq.ops.get_op`
finds these ops here. Each op's forward docstring is its operator page (Definition, Integer
semantics with the rounding/saturation of every attribute value and its source in
../shared/reference/fixedpoint.md, Errors); the module docstrings give the shared evaluation.

conv.py         int_conv2d, int_dense (exact BLAS accumulation, int64 fallback)
conv16x8.py     int_conv2d_16x8, int_dense_16x8 (TFLite's int16-activation layers, int64 acc)
conv_tosa16.py  int_conv2d_tosa16, int_dense_tosa16, int_conv_transpose2d_tosa16 (TOSA 16x8,
                int48 accumulator and bias)
conv_transpose.py int_conv_transpose2d;  matmul.py  int_matmul (both operands' zero points)
operands.py     the operands of an exact integer contraction and the dtype they prove exact
requant_fast.py the requantization block by block in float64, into the output dtype
add.py          int_add (and its table of byte pairs)
elementwise.py  int_multiply, int_requantize, int_clamp, int_quantize, int_dequantize
pooling.py      int_max_pool2d, int_avg_pool2d, int_mean
pool_nd.py      the 1-D and 3-D pools, and the 2-D pools' dilations, ceil_mode, count_include_pad
pool_common.py  the average pools' attribute schema and checks, TOSA/TFLite division helpers
shape.py        int_concat, int_pad
lut.py          int_lut and the table builders (build_lut, gemmlowp_lut, hard_swish_fixed_lut)
softmax.py      int_softmax (and tflite_softmax_params, onnxruntime's QLinearSoftmax table)
act16.py        LiteRT's int16 LOGISTIC / TANH / LEAKY_RELU tables and int16 SOFTMAX (helpers)
leaky_relu.py   LiteRT's quantized LEAKY_RELU (the "tflite_leaky" table; helpers, no ops)
hybrid.py       int_hybrid_conv2d, int_hybrid_dense (LiteRT dynamic-range layers)
float_ref.py    int_f32_* (LiteRT's float32 reference kernels)
libm_tanhf.py   glibc's tanhf, which LiteRT's float32 TANH calls (helper, no ops)
libm_expf.py    glibc's expf, which LiteRT's float32 LOGISTIC and SOFTMAX call (helper, no ops)
gemmlowp.py     gemmlowp fixed-point exp / reciprocal / logistic / tanh (vectorised)
common.py       shared validation and requantization helpers
qdq.py          float32 DequantizeLinear/QuantizeLinear and onnxruntime's fused multiply-add
                (helpers, no ops)
"""
from __future__ import annotations

from . import (add, conv, conv16x8, conv_tosa16, conv_transpose, elementwise, float_ref, hybrid,
               lut, matmul, pool_nd, pooling, shape, softmax)
from .lut import build_lut, gemmlowp_lut, hard_swish_fixed_lut
from .softmax import tflite_softmax_params

__all__ = ["INT_REGISTRY", "NARROW", "build_lut", "gemmlowp_lut", "hard_swish_fixed_lut",
           "tflite_softmax_params"]

INT_REGISTRY: dict = {}
#: {op name: fn(inputs, params, attrs) -> (y, AccExtremes or None)}: the kernels `run_int` calls
#: instead of `Op.accumulate`/`Op.forward`, with the same values in a narrower dtype than int64
#: where [act_min, act_max] allows (int8, uint8, int16, int32); every kernel accepts such inputs.
NARROW: dict = {}
for _module in (conv, conv16x8, conv_tosa16, conv_transpose, matmul, add, elementwise, pooling,
                pool_nd, shape, lut, softmax, hybrid, float_ref):
    for _op in _module.OPS:
        assert _op.name not in INT_REGISTRY, _op.name
        INT_REGISTRY[_op.name] = _op
    NARROW.update(getattr(_module, "NARROW", {}))
