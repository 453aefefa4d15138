"""Lowering of the contractions that came with ONNX: conv_transpose2d, gemm and matmul. Each
`lower_*(w, n)` lowers float node n in the walk w (`lower_graph.Walk`), like `lower_layers`:

- conv_transpose2d -> int_conv_transpose2d: weight codes [O, kh, kw, C/groups] (per output channel
  on axis 0), int32 bias round_half_even(b / (s_in·s_w[o])), per-channel M = s_in·s_w[o]/s_out by
  the profile's scale math and scheme, the fused activation's clamp: as conv2d
  (`lower_layers.emit_weighted`); TFLite TRANSPOSE_CONV's arithmetic (§3.1). Under the profiles
  whose other ops run in QDQ form (rescale "qdq": onnx, ort) this is an approximation, noted in
  graph.meta["integer"]["notes"]: there a QDQ ConvTranspose runs in float32.
- gemm -> int_dense: ONNX's B [K, P] (transB = 0) is transposed to dense's [P, K] (its codes and
  per-channel scales are those of the output axis, `refq.quant.placement.weight_output_axis`);
  the bias is beta·C broadcast to [P] (the real value the float gemm adds), quantized as dense's;
  alpha must be 1 (an alpha ≠ 1 scales the product, which the integer graph would have to fold
  into M; refused with what to do); then exactly as dense (the profile's fc_requant, "fc_per_tensor"
  scale math for a per-tensor weight).
- matmul -> int_matmul: both operands are activations with their own zero points; one
  multiplier M = s_a·s_b/s_out formed with the profile's fc_per_tensor scale math (TFLite's
  BATCH_MATMUL prepares it with `GetQuantizedConvolutionMultipler`, the per-tensor
  FullyConnected helper; ONNX QLinearMatMul and onnxruntime use float32(float32(s_a·s_b)/s_out),
  §8.2), requantized by the profile's `requant` scheme (TFLite's reference BATCH_MATMUL uses
  MultiplyByQuantizedMultiplier, not the reference FullyConnected's float path), zero point
  before rounding where the profile says so (ONNX reference QLinearMatMul).
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from ..graph import Node
from ..quant.placement import weight_output_axis
from .lower_encodings import where_of
from . import lower_tosa16
from .lower_layers import _fused, emit_weighted

__all__ = ["FAMILIES"]

_TRANSPOSE_GEOMETRY = ("strides", "dilations", "groups", "output_padding", "padding", "pads",
                       "output_shape")


def lower_conv_transpose(w, n):
    """conv_transpose2d -> int_conv_transpose2d (module docstring)."""
    if w.p.rescale == "qdq":
        w.b.notes.append(
            f"{n.name}: ONNX and onnxruntime have no quantized ConvTranspose kernel (onnxruntime "
            "1.32 leaves a QDQ ConvTranspose unfused: DequantizeLinear -> float32 ConvTranspose "
            "-> QuantizeLinear); the integer model accumulates exactly and requantizes by the "
            f"profile's {w.p.requant!r} scheme, which may differ from that float32 evaluation "
            "by 1 LSB")
    x, tq_in = w.read(n, 0)
    weight = w.src.weight(n)
    bias = w.src.bias(n, tq_in, weight[2], lower_tosa16.wide_bias_bits(w, tq_in))
    geometry = {k: n.attrs[k] for k in _TRANSPOSE_GEOMETRY}
    emit_weighted(w, n, "int_conv_transpose2d", x, tq_in, weight, bias, geometry)


def lower_gemm(w, n):
    """gemm -> int_dense (module docstring)."""
    where = where_of(n)
    if n.attrs["alpha"] != 1.0:
        raise FixedPointError(f"{where}: gemm with alpha = {n.attrs['alpha']!r} has no integer "
                              "lowering; fold alpha into the weight (B·alpha, alpha = 1) and "
                              "quantize again")
    x, tq_in = w.read(n, 0)
    codes, zp, s_w, per_channel = w.src.weight(n)
    if weight_output_axis(n) == 1:
        codes = np.ascontiguousarray(codes.T)
    units = codes.shape[0]
    c = n.params.get("bias")
    if c is not None:
        real = np.float64(n.attrs["beta"]) * np.broadcast_to(
            np.asarray(c, dtype=np.float64).reshape(-1), (units,))
        n = Node(n.name, n.op, n.inputs, n.outputs, n.attrs,
                 {"weight": n.params["weight"], "bias": real})
    bias = w.src.bias(n, tq_in, s_w, lower_tosa16.wide_bias_bits(w, tq_in))
    emit_weighted(w, n, "int_dense", x, tq_in, (codes, zp, s_w, per_channel), bias, {})


def lower_matmul(w, n):
    """matmul -> int_matmul (module docstring)."""
    where = f"node '{n.name}' (matmul)"
    (xa, qa), (xb, qb) = w.read(n, 0), w.read(n, 1)
    t_out, q_out, act = _fused(w, n, where_of(n))
    p, b = w.p, w.b
    try:
        real = p.real_multiplier(qa.scale, qb.scale, q_out.scale, kind="fc_per_tensor")
    except FixedPointError as e:
        raise FixedPointError(f"{where}: {e}") from None
    params = b.requant_params(real, p.requant, where)
    attrs = {"a_zp": qa.zero_point, "b_zp": qb.zero_point, "output_zp": q_out.zero_point,
             "act_min": int(act[0]), "act_max": int(act[1]), **b.scheme_attrs(p.requant),
             "accumulator_bits": p.acc_bits, "overflow": p.overflow}
    b.emit(n.name, "int_matmul", [xa, xb], w.out_name(t_out), attrs, params, tq=q_out,
           requants=1)


#: The lowering function of each family of `Traits.lowering` this module lowers.
FAMILIES = {"conv_transpose": lower_conv_transpose, "gemm": lower_gemm, "matmul": lower_matmul}
