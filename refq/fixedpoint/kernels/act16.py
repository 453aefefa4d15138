"""TFLite's int16 activation kernels (LiteRT `BUILTIN_REF`, the int16 activations of 16x8 models).

Sources (google-ai-edge/LiteRT, tflite/kernels/): activations.cc (`SigmoidPrepare`, `TanhPrepare`,
`LeakyReluPrepare`, `SoftmaxPrepare`); internal/reference/integer_ops/logistic.h and tanh.h (the
int16 `Logistic`, `Tanh`); internal/reference/leaky_relu.h (`QuantizeLeakyRelu`);
internal/reference/softmax.h (`SoftmaxInt16`, `SoftMaxCalculateExp`); internal/common.h
(`sigmoid_table_uint16`, `detail::LUTPopulateInt16`, `LUTLookup`); internal/quantization_util.cc
(`CheckedLog2`, `QuantizeMultiplier`). Every int16 tensor has zero point 0; LOGISTIC, TANH and
SOFTMAX write Q0.15 (output scale 2^−15).

LOGISTIC and TANH are elementwise on int16 codes, so the lowering tabulates them on all 65536 codes
into an int_lut (`logistic16`, `tanh16`, exact per code); LEAKY_RELU likewise (`leaky_relu16`).
SOFTMAX (`softmax16`) runs in int_softmax (modes "tflite16", "tflite16_single").
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ...errors import FixedPointError
from ..multiplier import quantize_multiplier
from ..requantize import multiply_by_quantized_multiplier
from ..rounding import wrap
from .leaky_relu import leaky_relu_params, quantize_leaky_relu

__all__ = ["SIGMOID_TABLE_UINT16", "checked_log2", "sigmoid_tanh16_params", "logistic16",
           "tanh16", "leaky_relu16_params", "leaky_relu16", "gen_lut16", "lut16_lookup",
           "softmax16_tables", "softmax16_params", "softmax16", "Q15_SCALE"]

#: The output scale of int16 LOGISTIC, TANH and SOFTMAX (Q0.15).
Q15_SCALE = 2.0 ** -15

#: `sigmoid_table_uint16` of internal/common.h: sigmoid(i/24) in Q0.16, i = 0..255 (the source's
#: constants; within 1 of round(65536·sigmoid(i/24)), clamped to 65535).
SIGMOID_TABLE_UINT16 = np.array([
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498,
    40149, 40794, 41432, 42064, 42688, 43304, 43912, 44511, 45102, 45683, 46255,
    46817, 47369, 47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409, 51865,
    52311, 52745, 53169, 53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174,
    56503, 56823, 57133, 57433, 57724, 58007, 58280, 58544, 58800, 59048, 59288,
    59519, 59743, 59959, 60168, 60370, 60565, 60753, 60935, 61110, 61279, 61441,
    61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666, 62778, 62886,
    62990, 63090, 63186, 63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835,
    63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308, 64357, 64405, 64450,
    64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786, 64816, 64845,
    64873, 64900, 64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079, 65097,
    65115, 65132, 65149, 65164, 65179, 65194, 65208, 65221, 65234, 65246, 65258,
    65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360,
    65367, 65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425,
    65429, 65433, 65438, 65442, 65445, 65449, 65453, 65456, 65459, 65462, 65465,
    65468, 65471, 65474, 65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491,
    65493, 65495, 65497, 65498, 65500, 65501, 65503, 65504, 65505, 65507, 65508,
    65509, 65510, 65511, 65512, 65513, 65514, 65515, 65516, 65517, 65517, 65518,
    65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524, 65525,
    65525, 65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529,
    65529, 65529, 65530, 65530, 65530, 65530, 65531, 65531, 65531, 65531, 65531,
    65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533, 65533, 65533,
    65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534,
    65534, 65534, 65535], dtype=np.int64)


def checked_log2(x):
    """`CheckedLog2(float x)`: (is_pot, k) with l = fl32(logf(x)·fl32(1/logf(2))), k = roundf(l)
    (half away), is_pot = |l − k| < 1e-3 (in float32). NumPy's float32 log stands for logf."""
    x = np.float32(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.float32(np.log(x) * (np.float32(1) / np.log(np.float32(2))))
    if not np.isfinite(lg):
        return False, 0
    k = np.float32(np.trunc(lg) + np.sign(lg) * (abs(lg - np.trunc(lg)) >= 0.5))
    return bool(abs(np.float32(lg - k)) < np.float32(1e-3)), int(k)


def sigmoid_tanh16_params(kind: str, input_scale):
    """(input_multiplier, input_left_shift) of int16 LOGISTIC ("logistic") or TANH ("tanh") from
    the float32 input scale (`SigmoidPrepare`/`TanhPrepare`, kInputIntegerBits = 3):
      (pot, k) = CheckedLog2(s_in); shift = 12 + k; if pot and shift == 0 (tanh: shift ∈ {0, 1}):
      (0, shift) (the power-of-two case, the kernel then multiplies by 3·2^shift);
      else M = double(s_in)·4096·3, shift = 0; while M ≤ 32767/2 and shift ≤ 30: shift += 1,
      M *= 2; multiplier = int32(M) (truncating).
    Errors: FixedPointError for a scale that is not finite and positive, or one whose product
    x·multiplier + round could leave int32 (multiplier ≥ 2^16 with shift 0, s_in ≳ 5.3)."""
    s = np.float32(input_scale)
    if not (np.isfinite(s) and s > 0):
        raise FixedPointError(f"int16 {kind}: input scale must be finite and > 0, got "
                              f"{input_scale!r}")
    pot, k = checked_log2(s)
    shift = 12 + k
    if pot and (shift == 0 or (kind == "tanh" and shift == 1)):
        return 0, shift
    m, shift = float(s) * 4096.0 * 3.0, 0
    while m <= 32767.0 / 2.0 and shift <= 30:
        shift += 1
        m *= 2.0
    if m >= 65536.0:
        raise FixedPointError(f"int16 {kind}: input scale {float(s)!r} gives multiplier {m:.6g} "
                              "with shift 0; x·multiplier would leave int32 in LiteRT's kernel "
                              "(the input scale must be below about 5.3)")
    return int(m), shift


def _scaled_input(x, multiplier, left_shift):
    """(x·multiplier + round) >> left_shift (int32 in C; exact here), the power-of-two case
    multiplier 0 taking multiplier 3·2^left_shift and shift 0; round = 2^(shift − 1) or 0."""
    if multiplier == 0:
        multiplier, left_shift = 3 << left_shift, 0
    rnd = (1 << (left_shift - 1)) if left_shift > 0 else 0
    return (np.asarray(x, dtype=np.int64) * multiplier + rnd) >> left_shift


def _interpolated(a, bits: int, saturated: int) -> np.ndarray:
    """The interpolation LOGISTIC and TANH share: h = a >> bits; h ≥ 255: `saturated`; else
    T[h]·2^bits + (a mod 2^bits)·(T[h + 1] − T[h]) (T = SIGMOID_TABLE_UINT16, int64)."""
    h = a >> bits
    sat = h >= 255
    hc = np.where(sat, 0, h)
    t = SIGMOID_TABLE_UINT16
    return np.where(sat, saturated,
                    (t[hc] << bits) + (a & ((1 << bits) - 1)) * (t[hc + 1] - t[hc]))


def logistic16(x, multiplier: int, left_shift: int) -> np.ndarray:
    """int16 LOGISTIC (`reference_integer_ops::Logistic(input_multiplier, input_left_shift,
    size, int16 in, int16 out)`), on int64 arrays of int16 codes (s_in from
    `sigmoid_tanh16_params`, output Q0.15):
      v = (x·multiplier + round) >> left_shift (`_scaled_input`), a = |v|, h = a >> 9 (uint32);
      h ≥ 255: r = 32767·2^10; else r = T[h]·2^9 + (a & 511)·(T[h + 1] − T[h])
      (T = SIGMOID_TABLE_UINT16); v ≥ 0: r += 2^9, else r = 2^25 − r + 2^9 − 1;
      y = int16(r >> 10)."""
    v = _scaled_input(x, multiplier, left_shift)
    r = _interpolated(np.abs(v), 9, 0x7FFF << 10)
    r = np.where(v >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1)
    return wrap(r >> 10, 16)


def tanh16(x, multiplier: int, left_shift: int) -> np.ndarray:
    """int16 TANH (`reference_integer_ops::Tanh(input_multiplier, input_left_shift, shape, int16
    in, shape, int16 out)`), on int64 arrays of int16 codes (output Q0.15), from
    tanh(x) = 2·sigmoid(2x) − 1:
      v = (x·multiplier + round) >> left_shift, a = |v|, h = a >> 8;
      h ≥ 255: r = 65535·2^8; else r = T[h]·2^8 + (a & 255)·(T[h + 1] − T[h]);
      v ≥ 0: r = r − 2^23 + 2^7, else r = −r + 2^23 + 2^7 − 1; y = int16(r >> 8) (arithmetic)."""
    v = _scaled_input(x, multiplier, left_shift)
    r = _interpolated(np.abs(v), 8, 0xFFFF << 8)
    r = np.where(v >= 0, r - (1 << 23) + (1 << 7), -r + (1 << 23) + (1 << 7) - 1)
    return wrap(r >> 8, 16)


def leaky_relu16_params(input_scale, output_scale, alpha, *, single_rounding: bool = False):
    """((m_alpha, shift_alpha), (m_identity, shift_identity)) of int16 LEAKY_RELU: LiteRT's one
    `LeakyReluPrepare` for every type, `leaky_relu.leaky_relu_params` (float32 scale arithmetic,
    QuantizeMultiplier; a negative alpha gives a negative m_alpha). Errors: FixedPointError for
    non-positive or non-finite scales, or a multiplier shift outside [−31, 30]."""
    return leaky_relu_params(input_scale, output_scale, alpha, single_rounding=single_rounding,
                             kind="int16 leaky_relu")


def leaky_relu16(x, params, *, single_rounding: bool = False) -> np.ndarray:
    """int16 LEAKY_RELU (`reference_ops::QuantizeLeakyRelu<int16_t>`, zero points 0):
    `leaky_relu.quantize_leaky_relu` with zp_in = zp_out = 0 and the clamp [−32768, 32767]:
      x ≥ 0: y = MBQM(x, m_identity, shift_identity);
      x < 0: y = ±MBQM(x, |m_alpha|, shift_alpha) (the sign of m_alpha)."""
    return quantize_leaky_relu(x, params, 0, 0, -32768, 32767, single_rounding=single_rounding)


# ---- SOFTMAX ---------------------------------------------------------------------------------
def _round(v: float) -> float:
    """std::round on a double: nearest integer, ties away from zero (v − trunc(v) is exact)."""
    t = float(math.trunc(v))
    return t + math.copysign(1.0, v) if abs(v - t) >= 0.5 else t


def gen_lut16(fn, input_scale: float, input_zp: int, output_scale: float, output_zp: int):
    """`detail::LUTPopulateInt16<double>` (internal/common.h), the 513-entry table of y = fn(x)
    that `LUTLookup` interpolates, in double arithmetic:
      in_min = s_in·(−32768 − zp_in), in_max = s_in·(32767 − zp_in),
      out_min = s_out·(−32768 − zp_out), out_max = s_out·(32767 − zp_out),
      step = (in_max − in_min)/512, inv = 65536/(out_max − out_min);
      for i < 512, with x_i = in_min + i·step:
        v = round(fn(x_i)·inv), mid_interp = round((fn(x_{i+1})·inv + v)/2),
        mid = round(fn(x_i + step/2)·inv), bias = round((mid_interp − mid)/2),
        lut[i] = clamp(v − bias, −32768, 32767);
      lut[512] = clamp(round(fn(in_max)·inv), −32768, 32767)
    (round = std::round, half away; fn a Python function on floats, e.g. math.exp, which is the
    C library's exp as in the C++ source). Returns int64 [513]."""
    s_in, s_out = float(input_scale), float(output_scale)
    in_min, in_max = s_in * (-32768 - input_zp), s_in * (32767 - input_zp)
    out_min, out_max = s_out * (-32768 - output_zp), s_out * (32767 - output_zp)
    step = (in_max - in_min) / 512
    half = step / 2
    inv = 65536.0 / (out_max - out_min)
    lut = []
    for i in range(512):
        val = fn(in_min + i * step)
        val_mid = fn(in_min + i * step + half)
        val_next = fn(in_min + (i + 1) * step)
        sample = _round(val * inv)
        mid_interp = _round((val_next * inv + _round(val * inv)) / 2)
        bias = _round((mid_interp - _round(val_mid * inv)) / 2)
        lut.append(min(max(sample - bias, -32768.0), 32767.0))
    lut.append(min(max(_round(fn(in_max) * inv), -32768.0), 32767.0))
    return np.array(lut, dtype=np.int64)


def lut16_lookup(value, lut) -> np.ndarray:
    """`LUTLookup(int16 value, const int16* lut)` on int64 arrays: index = 256 + (value >> 7)
    (arithmetic), offset = value & 127, base = lut[index], slope = int16(lut[index + 1] −
    lut[index]), delta = (slope·offset + 64) >> 7, y = int16(base + delta) (wrapping as the
    C casts do)."""
    v = np.asarray(value, dtype=np.int64)
    lut = np.asarray(lut, dtype=np.int64)
    index = 256 + (v >> 7)
    base = lut[index]
    slope = wrap(lut[index + 1] - base, 16)
    return wrap(base + ((slope * (v & 0x7F) + 64) >> 7), 16)


@functools.lru_cache(maxsize=1)
def _tables():
    rng = 65535
    exp_lut = gen_lut16(math.exp, 10.0 / rng, 32767, 2.0 / rng, 0)
    recip_lut = gen_lut16(lambda v: 1.0 / (1.0 + v), 1.0 / rng, -32768, 2.0 / rng, 0)
    exp_lut.setflags(write=False)
    recip_lut.setflags(write=False)
    return exp_lut, recip_lut


def softmax16_tables():
    """(exp_lut, one_over_one_plus_x_lut) of int16 SOFTMAX (`SoftmaxPrepare`), int64 [513] each,
    read-only: gen_lut16(exp, 10/65535, 32767, 2/65535, 0) (exp on [−10, 0] into [−1, 1]) and
    gen_lut16(1/(1 + x), 1/65535, −32768, 2/65535, 0) (on [0, 1])."""
    return _tables()


def softmax16_params(input_scale, beta: float = 1.0, *, single_rounding: bool = False):
    """{"input_multiplier", "input_left_shift"} of int16 SOFTMAX (`SoftmaxPrepare`):
    QuantizeMultiplier(double(fl32(s_in·beta)) / (10/65535)) (the input difference scaled so that
    [−65535, 0] spans [−10, 0]). Errors: FixedPointError for a non-positive or non-finite scale,
    or a shift outside [−31, 30]."""
    s = np.float32(np.float32(input_scale) * np.float32(beta))
    if not (np.isfinite(s) and s > 0):
        raise FixedPointError(f"int16 softmax: input scale·beta must be finite and > 0, got "
                              f"{input_scale!r}·{beta!r}")
    real = float(s) / (10.0 / 65535.0)
    m, e = (int(v) for v in quantize_multiplier(real, single_rounding=single_rounding))
    if m == 0 or not -31 <= e <= 30:
        raise FixedPointError(f"int16 softmax: input scale {float(s)!r} gives multiplier "
                              f"{real!r} with shift {e}, outside [-31, 30]")
    return {"input_multiplier": m, "input_left_shift": e}


def softmax16(x, input_multiplier: int, input_left_shift: int, *,
              single_rounding: bool = False) -> np.ndarray:
    """int16 SOFTMAX over the last axis (`reference_ops::SoftmaxInt16`), on int64 arrays of int16
    codes, with (E, R) = `softmax16_tables()`:
      d = x − max(row) (in [−65535, 0]); s = MBQM(d, input_multiplier, input_left_shift)
      (`multiply_by_quantized_multiplier`, double or single rounding);
      e = LUTLookup(clamp(s + 32767, −32768, 32767), E)            (Q0.15)
      S = Σ e (int32; FixedPointError beyond it), h = clz32(S),
      t = ((S·2^(h − 1)) + 2^13) >> 14, r = LUTLookup(clamp(t − 98304, −32768, 32767), R),
      y = clamp((e·r + 2^(30 − h)) >> (31 − h), 0, 32767)."""
    x = np.asarray(x, dtype=np.int64)
    exp_lut, recip_lut = _tables()
    d = x - np.max(x, axis=-1, keepdims=True)
    s = multiply_by_quantized_multiplier(d, input_multiplier, input_left_shift,
                                         single_rounding=single_rounding)
    e = lut16_lookup(np.clip(s + 32767, -32768, 32767), exp_lut)
    total = np.sum(e, axis=-1, keepdims=True)
    if np.any(total > (1 << 31) - 1) or np.any(total <= 0):
        raise FixedPointError("int_softmax: the int32 sum of the int16 exponentials left "
                              "[1, 2^31 − 1] (a row of more than 65536 entries)")
    h = 32 - np.frexp(total.astype(np.float64))[1].astype(np.int64)   # clz32, exact below 2^53
    shifted = ((total << (h - 1)) + (1 << 13)) >> 14
    r = lut16_lookup(np.clip(shifted - ((1 << 15) + (1 << 16)), -32768, 32767), recip_lut)
    right = 31 - h
    y = (e * r + (np.int64(1) << (right - 1))) >> right
    return np.clip(y, 0, 32767)


def int16_table(fn: str, s_in, zp_in: int, s_out, zp_out: int, *, alpha=None,
                single_rounding: bool = False) -> np.ndarray:
    """The int_lut table (65536 entries, input_qmin −32768) of TFLite's int16 kernel `fn`
    ("sigmoid"/"logistic", "tanh": output scale 2^−15; "leaky_relu" with `alpha`: any output
    scale), each entry the kernel on that code: exact. Errors: FixedPointError for a zero point
    other than 0, a LOGISTIC/TANH output scale other than 2^−15, or another function."""
    if zp_in != 0 or zp_out != 0:
        raise FixedPointError(f"int16 {fn}: TFLite's int16 kernels take zero points 0, got "
                              f"{zp_in} and {zp_out}")
    v = np.arange(-32768, 32768, dtype=np.int64)
    if fn in ("sigmoid", "logistic", "tanh"):
        kind = "tanh" if fn == "tanh" else "logistic"
        if np.float32(s_out) != np.float32(Q15_SCALE):
            raise FixedPointError(f"int16 {kind}: TFLite writes Q0.15 (output scale 2^-15), got "
                                  f"output scale {s_out!r}")
        m, shift = sigmoid_tanh16_params(kind, s_in)
        return (tanh16 if kind == "tanh" else logistic16)(v, m, shift)
    if fn == "leaky_relu":
        params = leaky_relu16_params(s_in, s_out, alpha, single_rounding=single_rounding)
        return leaky_relu16(v, params, single_rounding=single_rounding)
    raise FixedPointError(f"int16_table: TFLite's int16 tables are sigmoid, tanh and leaky_relu, "
                          f"got {fn!r}")
