"""TOSA's int16 x int8 contractions: the int48 accumulator, the int48 bias and the RESCALE that
reads them, as the TOSA 1.0 specification defines them and the TFLite->TOSA legalizer emits them.

Sources (arm/tosa-specification, `pseudocode/`; tensorflow `compiler/mlir/tosa/transforms/`):

* Types (`tosa.xml`, CONV2D / DEPTHWISE_CONV2D / TRANSPOSE_CONV2D / CONV3D typesupport "signed
  16x8 with int48 accumulate"): in_t = i16, weight_t = i8, acc_t = out_t = i48; the bias is a
  tensor of out_t, i.e. int48 (the legalizer narrows TFLite's int64 16x8 bias to 48 bits,
  `legalize_tfl.cc::ConvertConstantOp`; refq refuses a bias outside int48 instead of truncating
  it). The legalizer builds FullyConnected as a 1x1 CONV2D
  (`legalize_tfl.cc::ConvertTFLFullyConnectedOp`, int48 bias for 16-bit inputs), so dense and
  gemm have the same types.
* Accumulation (`operators/CONV2D.tosac`, `DEPTHWISE_CONV2D.tosac`, `TRANSPOSE_CONV2D.tosac`):
  acc = 0; for (ky, kx, ic) in that order, over the taps inside the image,
  acc = apply_add_s<acc_t>(acc, apply_mul_s<acc_t>(x − input_zp, w − weight_zp)); then
  out = apply_add_s<out_t>(acc, bias[oc]). `library/arithmetic_helpers.tosac::apply_add_s`
  REQUIREs that every sum lies in the type's range: no partial sum, and not acc + bias, may leave
  [−2^47, 2^47 − 1]; the result is otherwise unpredictable, and refq raises FixedPointError.
  ERROR_IF(in_t != i8 && input_zp != 0): an int16 input has zero point 0; weight_zp is allowed
  (i8 weights).
* RESCALE (`operators/RESCALE.tosac`): value = in − input_zp (int48); result = scale32 ?
  apply_scale_32(...) : apply_scale_16(value, multiplier[c], shift[c]); + output_zp
  (apply_add_s<int32>); clip to out_t. ERROR_IF(scale32 && in_t == i48): a RESCALE of an int48
  tensor is scale16; ERROR_IF(!scale32 && rounding_mode == DOUBLE_ROUND): scale16 rounds once;
  ERROR_IF(out_t != i8 && output_zp != 0) for signed outputs: an int16 output has zero point 0.
  `library/scale_helpers.tosac::apply_scale_16(int48 value, int16 m, int8 shift)`:
  REQUIRE(m >= 0), REQUIRE(2 <= shift <= 62), result = (value·m + 2^(shift−1)) >> shift (one
  rounding, half toward +inf), REQUIRE(result fits int32) (`requantize.apply_scale_16`).
* The legalizer's choice (`legalize_utils.cc::buildRescaleOpConvOutput`): scale32 =
  `isScale32(output)` = (the output's storage width is 8); rounding DOUBLE_ROUND with scale32,
  SINGLE_ROUND otherwise. For an int16 output: scale16, single rounding, with
  - per-tensor weights: (m, shift) = computeMultiplierAndShift(M, 16) = `tosa_scale16(M)`;
  - per-channel weights: (m32, s32) = computeMultiplierAndShift(M[c], 32) = `tosa_scale32(M[c])`,
    then m = (m32 + 2^15) >> 16 if m32 < 0x7FFF0000 else 0x7FFF, shift = s32 − 16 (the comment
    there: "matching the tflite behaviour ... for int16x8"; the reduction is TFLite's
    `requantize16.reduce_multiplier_16`). Earlier legalizer versions took tosa_scale16 per
    channel too; refq follows the current one (`legalizer_scale16`).
  M = (s_in·s_w[c])/s_out in double. With shift = 15 − tfl_shift this is exactly TFLite's 16x8
  `MultiplyByQuantizedMultiplier(int64)` (same 16-bit multiplier, same single half-up rounding)
  wherever both are defined. For an int8 output of an int48 accumulator the legalizer asks for
  scale32, which the specification's ERROR_IF forbids: refq refuses that layer
  (`lower_tosa16`). An int8-input layer (int32 accumulator) with an int16 output gets the same
  scale16 RESCALE (`isScale32` looks at the output only).

Every int16 output of these layers therefore differs from the exactly rounded real
acc·M by the 16-bit multiplier's error (|M − m·2^−shift| ≤ M·2^−15 roughly, i.e. up to about one
output LSB at full int16 scale) plus one rounding: at most 2 LSB (`REQUANTIZATIONS`).
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from .multiplier import tosa_scale16, tosa_scale32
from .requantize16 import reduce_multiplier_16

__all__ = ["INT48", "REQUANTIZATIONS", "legalizer_scale16", "rescale_width", "require_int48",
           "prefix_extremes"]

#: The int48 range: [−2^47, 2^47 − 1].
INT48 = (-(1 << 47), (1 << 47) - 1)
#: The LSB budget of a scale16 RESCALE against the exactly rounded real (module docstring).
REQUANTIZATIONS = 2


def rescale_width(out_dtype: str) -> int:
    """The RESCALE multiplier width the legalizer picks for a layer's output dtype
    (`isScale32`: 32 for an 8-bit output, else 16)."""
    return 32 if out_dtype in ("int8", "uint8") else 16


def legalizer_scale16(real, per_channel: bool):
    """(m, shift) int64 arrays of the scale16 RESCALE after a convolution
    (`buildRescaleOpConvOutput`, module docstring): per tensor `tosa_scale16(M)`; per channel
    the 32-bit encoding reduced to 16 bits, m = reduce_multiplier_16(m32), shift = s32 − 16.
    Errors: FixedPointError when a shift leaves [2, 62] (M at or above about 2^13)."""
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    if not per_channel:
        return tosa_scale16(real)
    m32, s32 = tosa_scale32(real)
    m, s = reduce_multiplier_16(m32), s32 - 16
    if np.any(s < 2):
        c = int(np.argmax(s < 2))
        raise FixedPointError(f"legalizer_scale16: M = {float(real[c])!r} (channel {c}) needs "
                              f"shift {int(s[c])} < 2 after the reduction to 16 bits; TOSA "
                              "RESCALE requires 2 <= shift <= 62 (M below 2^13)")
    return np.asarray(m, dtype=np.int64), np.asarray(s, dtype=np.int64)


def require_int48(values, what: str) -> None:
    """FixedPointError naming the first value of int64 `values` outside int48 and its index (a
    TOSA REQUIRE of apply_add_s<int48_t>: the result is unpredictable there)."""
    a = np.asarray(values)
    if not a.size:
        return
    lo, hi = int(a.min()), int(a.max())
    if INT48[0] <= lo and hi <= INT48[1]:
        return
    bad = (a < INT48[0]) | (a > INT48[1])
    flat = int(np.argmax(bad.ravel()))
    idx = np.unravel_index(flat, a.shape)
    raise FixedPointError(f"{what} reached {int(a.ravel()[flat])} at index "
                          f"{[int(i) for i in idx]}, outside int48 [-2^47, 2^47 - 1]: TOSA "
                          "REQUIREs every int48 sum to fit (apply_add_s), and the result is "
                          "unpredictable; reduce the weights or the input range, or quantize the "
                          "layer's activations to 8 bits")


def prefix_extremes(a, w, running=None):
    """(min, max) over every prefix sum, in the order of the last axis, of the products
    a[p, k]·w[o, k] (int64, exact), started from running[p, o] (0 when None), and the full sums
    running + Σ_k a[p, k]·w[o, k]: the partial sums TOSA's accumulation loop forms. Evaluated in
    chunks of the reduction axis so that a chunk's products hold at most 2^22 elements."""
    a, w = np.asarray(a, dtype=np.int64), np.asarray(w, dtype=np.int64)
    p, k = a.shape
    o = w.shape[0]
    run = np.zeros((p, o), np.int64) if running is None else np.array(running, np.int64)
    lo, hi = int(run.min()) if run.size else 0, int(run.max()) if run.size else 0
    step = max(1, (1 << 22) // max(1, p * o))
    for k0 in range(0, k, step):
        prods = a[:, None, k0:k0 + step] * w[None, :, k0:k0 + step]
        sums = np.cumsum(prods, axis=2) + run[:, :, None]
        if sums.size:
            lo, hi = min(lo, int(sums.min())), max(hi, int(sums.max()))
            run = sums[:, :, -1]
    return (lo, hi), run
