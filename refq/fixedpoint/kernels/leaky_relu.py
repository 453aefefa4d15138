"""LiteRT's quantized LEAKY_RELU (int8, uint8 and int16; `BUILTIN_REF` and the optimized build
alike, both call `reference_ops::QuantizeLeakyRelu<T>`).

Sources (google-ai-edge/LiteRT, tflite/kernels/): activations.cc (`LeakyReluPrepare`,
`LeakyReluEval`: input_offset = zp_in, output_offset = zp_out; int16 requires zero points 0);
internal/reference/leaky_relu.h (`QuantizeLeakyRelu`); internal/quantization_util.cc
(`QuantizeMultiplier`). The kernel is elementwise, so the lowering tabulates it on every input
code (`leaky_relu_table`, int_lut scheme "tflite_leaky" for 8-bit tensors; `act16.int16_table`
for int16).
"""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError
from ..multiplier import quantize_multiplier
from ..requantize import multiply_by_quantized_multiplier

__all__ = ["leaky_relu_params", "quantize_leaky_relu", "leaky_relu_table"]


def leaky_relu_params(input_scale, output_scale, alpha, *, single_rounding: bool = False,
                      kind: str = "leaky_relu"):
    """((m_alpha, shift_alpha), (m_identity, shift_identity)) of LEAKY_RELU (`LeakyReluPrepare`,
    the scales and alpha float32, the products and quotient in float32 as the C expressions
    `input->params.scale * params->alpha / output->params.scale` evaluate, then widened to double):
      (m_alpha, shift_alpha) = QuantizeMultiplier(double(fl32(fl32(s_in·alpha)/s_out)))
      (m_identity, shift_identity) = QuantizeMultiplier(double(fl32(s_in/s_out)))
    (`quantize_multiplier`, with its single-rounding clamp under `single_rounding`). A negative
    alpha gives m_alpha = −QuantizeMultiplier(|real|) (std::round is symmetric; the mantissa of a
    float32 real never rounds up to 2^31, so no fix-up differs by sign). Errors: FixedPointError
    (prefixed by `kind`) for non-positive or non-finite scales, a non-finite alpha, or a shift
    outside [−31, 30]."""
    s_in, s_out, a = np.float32(input_scale), np.float32(output_scale), np.float32(alpha)
    if not (np.isfinite(s_in) and np.isfinite(s_out) and s_in > 0 and s_out > 0
            and np.isfinite(a)):
        raise FixedPointError(f"{kind}: scales must be finite and > 0 and alpha finite, got "
                              f"{input_scale!r}, {output_scale!r}, {alpha!r}")
    out = []
    for real in (np.float32(np.float32(s_in * a) / s_out), np.float32(s_in / s_out)):
        m, e = (int(v) for v in quantize_multiplier(abs(float(real)),
                                                    single_rounding=single_rounding))
        if not -31 <= e <= 30:
            raise FixedPointError(f"{kind}: multiplier {float(real)!r} needs shift {e}, outside "
                                  "[-31, 30]")
        out.append((-m if real < 0 else m, e))
    return tuple(out)


def quantize_leaky_relu(x, params, zp_in: int, zp_out: int, qmin: int, qmax: int, *,
                        single_rounding: bool = False) -> np.ndarray:
    """`reference_ops::QuantizeLeakyRelu<T>` on an int64 array of codes x, with
    ((m_alpha, shift_alpha), (m_identity, shift_identity)) = `leaky_relu_params`:
      d = x − zp_in;
      d ≥ 0: y = zp_out + MBQM(d, m_identity, shift_identity);
      d < 0: y = zp_out ± MBQM(d, |m_alpha|, shift_alpha) (− when m_alpha < 0);
      y = clamp(y, qmin, qmax) (T's range).
    MBQM is `multiply_by_quantized_multiplier` (double rounding, or single rounding in the
    `TFLITE_SINGLE_ROUNDING` build). Every intermediate fits int32 for 8- and 16-bit codes and
    shifts in [−31, 30] (|d| ≤ 2^16, |MBQM| ≤ |d|·2^30)."""
    (ma, sa), (mi, si) = params
    d = np.asarray(x, dtype=np.int64) - int(zp_in)
    pos = multiply_by_quantized_multiplier(np.maximum(d, 0), mi, si,
                                           single_rounding=single_rounding)
    neg = multiply_by_quantized_multiplier(np.minimum(d, 0), abs(ma), sa,
                                           single_rounding=single_rounding)
    y = int(zp_out) + np.where(d >= 0, pos, -neg if ma < 0 else neg)
    return np.clip(y, qmin, qmax)


def leaky_relu_table(s_in, zp_in: int, s_out, zp_out: int, qmin: int, qmax: int, alpha, *,
                     input_range=None, single_rounding: bool = False) -> np.ndarray:
    """The int_lut table of LiteRT's LEAKY_RELU from (s_in, zp_in) to (s_out, zp_out): entry
    v − in_qmin = `quantize_leaky_relu`(v) for every code v of input_range = (in_qmin, in_qmax)
    (default (qmin, qmax)), clamped to [qmin, qmax]; exact per code. Errors: FixedPointError for
    a missing alpha, bad scales (`leaky_relu_params`), or a zero point outside its range."""
    lo, hi = input_range if input_range is not None else (qmin, qmax)
    if alpha is None:
        raise FixedPointError("leaky_relu table: alpha is missing")
    if not (lo <= zp_in <= hi and qmin <= zp_out <= qmax):
        raise FixedPointError(f"leaky_relu table: zero points {zp_in}, {zp_out} lie outside "
                              f"[{lo}, {hi}] and [{qmin}, {qmax}]")
    params = leaky_relu_params(s_in, s_out, alpha, single_rounding=single_rounding)
    v = np.arange(lo, hi + 1, dtype=np.int64)
    return quantize_leaky_relu(v, params, zp_in, zp_out, qmin, qmax,
                               single_rounding=single_rounding).astype(np.int64)
