"""int_lut (table lookup) and the table builders of the integer activations.

Sections (§n) refer to ../shared/reference/fixedpoint.md. A table maps every input value
v ∈ [in_qmin, in_qmax] (the input dtype) to table[v − in_qmin]; the lowering builds it with the
profile's scheme (`Profile.logistic_tanh`, `Profile.hard_swish`) through `build_lut`:
  "lut_float"   LiteRT `LUTPopulate` (§6.2; also the TF->TOSA legalizer's TABLE, §6.4): float32
                dequantize, float32 function, roundf (half away) of f·(1/s_out), + zp_out, clamp;
  "float"       float64 dequantize, float64 function (the float op of refq.layers), round half to
                even of f/s_out, + zp_out, clamp (the float op inside QDQ, §6.4 ONNX);
  "float32"     the ONNX spec's DequantizeLinear -> float32 op -> QuantizeLinear, evaluated as
                `onnx.reference` does (`onnx_float32_function`): d = fl32(fl32(v − zp_in)·s_in),
                f in float32, q = clamp(rint(fl32(f / s_out)) + zp_out). exp and tanh are
                NumPy's float32 ones, whose SIMD forms may differ by an ulp between CPUs (as the
                reference evaluator's own results do): an 8-bit table rarely moves, a 65,536-entry
                int16 table does;
  "gemmlowp"    TFLM reference int8 LOGISTIC/TANH fixed point (§6.1), `gemmlowp_lut`;
  "fixed_point" TFLite/TFLM reference int8 HARD_SWISH (§6.5), `hard_swish_fixed_lut`;
  "tflite_int16" LiteRT's int16 LOGISTIC, TANH (interpolated `sigmoid_table_uint16`) and
                LEAKY_RELU (two multipliers) on every int16 code, `act16.int16_table`;
  "tflite_leaky" LiteRT's 8-bit LEAKY_RELU (`QuantizeLeakyRelu`: x − zp_in requantized by the
                identity or the alpha multiplier, + zp_out, clamp) on every code,
                `leaky_relu.leaky_relu_table`.
Tabulating is exact: each entry is the target's own per-element computation on that input.
"""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError, ParamError
from ...layers import REGISTRY
from ...layers.base import Attr, Op
from ..multiplier import quantize_multiplier, round_half_away_float
from ..requantize import multiply_by_quantized_multiplier
from ..rounding import _bounds, round_shift_half_away, wrap
from . import gemmlowp
from .common import ACT_ZP_RANGE, check_zp, int_input

LUT_SCHEMES = ("lut_float", "float", "float32", "gemmlowp", "fixed_point", "tflite_int16",
               "tflite_leaky")


# ---- int_lut ---------------------------------------------------------------------------------
def _lut_shape(in_shapes, attrs, params):
    if "table" not in params:
        raise ParamError("int_lut: parameter 'table' is missing")
    t = np.asarray(params["table"])
    if t.dtype.kind not in "iu" or t.ndim != 1 or t.size == 0 or t.size & (t.size - 1):
        raise ParamError(f"int_lut: 'table' must be a 1-D integer array of 2^bits entries, got "
                         f"dtype {t.dtype} shape {list(t.shape)}")
    check_zp(attrs["input_qmin"], "int_lut: input_qmin", ACT_ZP_RANGE, "an activation dtype")
    return tuple(in_shapes[0])


def _lut_forward(inputs, params, attrs):
    """int_lut — an elementwise function of an integer tensor by table lookup.

    Definition
        y[...] = table[x[...] − input_qmin], table of 2^bits entries (256 for int8 and uint8
        inputs, 65536 for int16), built by `build_lut` (module docstring: schemes lut_float,
        float, gemmlowp, fixed_point).
    Integer semantics
        A pure lookup (TOSA TABLE for int8, §6.4); the rounding lives in the table: LiteRT's
        float32 `LUTPopulate` (roundf, §6.2), TFLM's gemmlowp fixed point (§6.1), TFLite's
        fixed-point HARD_SWISH (§6.5), or float64 with half-to-even.
    Errors
        ParamError for a missing table or one that is not a 1-D integer array of 2^bits entries;
        FixedPointError when an input value falls outside [input_qmin, input_qmin + len − 1]
        (naming it and its index).
    """
    x = int_input(inputs[0], "int_lut input")
    _lut_shape([x.shape], attrs, params)
    t = np.asarray(params["table"], dtype=np.int64)
    q0 = attrs["input_qmin"]
    lo, hi = _bounds(x)
    if x.size and (lo < q0 or hi > q0 + t.size - 1):
        bad = (x < q0) | (x > q0 + t.size - 1)
        idx = tuple(int(k) for k in np.argwhere(bad)[0])
        raise FixedPointError(f"int_lut: input value {int(x[idx])} at index {list(idx)} lies "
                              f"outside the table's domain [{q0}, {q0 + t.size - 1}]")
    # table[x − q0] in one lookup: x ≡ (x − q0) + q0 (mod len), and np.roll(t, q0)[(j + q0) mod
    # len] = t[j], so a wrapping lookup on x itself reads the same entries; when every x lies in
    # [−len, len) NumPy's own negative indexing is that wrap (and faster than take's modes)
    rolled = np.roll(t, q0)
    if -t.size <= lo and hi < t.size:
        return rolled[x]
    return np.take(rolled, x, mode="wrap")


# ---- float-built tables ----------------------------------------------------------------------
def _sigmoid32(x):
    return np.float32(1) / (np.float32(1) + np.exp(-x))


def _hard_sigmoid32(x):
    return np.minimum(np.maximum(x + np.float32(3), np.float32(0)), np.float32(6)) / np.float32(6)


def _hard_swish32(x):
    return x * np.minimum(np.maximum(x + np.float32(3), np.float32(0)), np.float32(6)) / \
        np.float32(6)


#: float32 forms of the named functions for "lut_float" (TFLite's transforms: 1/(1+expf(−x)),
#: tanhf; hard_sigmoid/hard_swish with the Keras 3 definition relu6(x + 3)/6).
FLOAT32_FUNCTIONS = {"sigmoid": _sigmoid32, "logistic": _sigmoid32, "tanh": np.tanh,
                     "hard_sigmoid": _hard_sigmoid32, "hard_swish": _hard_swish32}
_FLOAT_OPS = {"sigmoid": "sigmoid", "logistic": "sigmoid", "tanh": "tanh",
              "hard_sigmoid": "hard_sigmoid", "hard_swish": "hard_swish"}


def _onnx_sigmoid32(x):
    """`onnx.reference` Sigmoid: x > 0: 1/(1 + exp(−x)), else exp(x)/(1 + exp(x)), float32."""
    one = np.float32(1)
    e = np.exp(np.minimum(x, np.float32(0)))
    with np.errstate(over="ignore"):
        pos = one / (one + np.exp(-x))
    return np.where(x > 0, pos, e / (one + e))


def _onnx_hard_sigmoid32(alpha, beta):
    """ONNX HardSigmoid: max(0, min(1, x·alpha + beta)), alpha, beta float32 attributes."""
    a, b = np.float32(alpha), np.float32(beta)
    return lambda x: np.maximum(np.float32(0), np.minimum(np.float32(1), x * a + b))


def _onnx_hard_swish32(x):
    """ONNX HardSwish (a function op: x·HardSigmoid(x; alpha = 1/6, beta = 0.5)), float32."""
    return x * _onnx_hard_sigmoid32(1.0 / 6.0, 0.5)(x)


def _onnx_leaky_relu32(alpha):
    """ONNX LeakyRelu: x > 0 ? x : x·float32(alpha)."""
    a = np.float32(alpha)
    return lambda x: np.where(x > 0, x, x * a)


def onnx_float32_function(op: str, attrs: dict):
    """The float32 function of ONNX op `op` (refq names sigmoid, tanh, hard_sigmoid, hard_swish,
    leaky_relu, round; node attributes `attrs`) as `onnx.reference` evaluates it on float32 arrays.
    refq's hard_swish (x·relu6(x + 3)/6) is ONNX HardSwish; hard_sigmoid and leaky_relu take
    their alpha (and beta) from attrs. Errors: FixedPointError for another op."""
    if op in ("sigmoid", "logistic"):
        return _onnx_sigmoid32
    if op == "tanh":
        return np.tanh
    if op == "hard_swish":
        return _onnx_hard_swish32
    if op == "hard_sigmoid":
        return _onnx_hard_sigmoid32(attrs.get("alpha", 0.2), attrs.get("beta", 0.5))
    if op == "leaky_relu":
        return _onnx_leaky_relu32(attrs.get("alpha", 0.01))
    if op == "round":   # onnx.reference Round: np.round, half to even, in float32
        return np.round
    raise FixedPointError(f"build_lut: scheme 'float32' has no ONNX function for {op!r}; use "
                          "sigmoid, tanh, hard_sigmoid, hard_swish, leaky_relu or round")


def _float64_fn(name):
    op = REGISTRY[_FLOAT_OPS[name]]
    attrs = op.normalise_attrs({}, f"build_lut {name}")
    return lambda x: op.forward([x], {}, attrs)


def build_lut(fn, s_in, zp_in, s_out, zp_out, qmin, qmax, scheme, *, input_range=None,
              alpha=None, single_rounding: bool = False):
    """The int_lut table of y = fn(x) from input encoding (s_in, zp_in) to output (s_out, zp_out).

    fn: a name ("sigmoid"/"logistic", "tanh", "hard_sigmoid", "hard_swish") or, for the float
    schemes, a callable on a float array (float32 for "lut_float", float64 for "float").
    qmin, qmax: the output clamp (the output dtype's range); input_range: (in_qmin, in_qmax), the
    input dtype's range (default (qmin, qmax)). Scales are rounded to float32 first.
    scheme:
      "lut_float"  for v in range: d = float32(s_in)·float32(v − zp_in) (float32);
                   f = fn(d) in float32; q = roundf(f·float32(1/s_out)) + zp_out (half away);
                   clamp to [qmin, qmax] (LiteRT `LUTPopulate`, §6.2). NumPy's float32 exp/tanh
                   may differ from a C libm by an ulp (§6.2: verify a table once per target).
      "float"      d = float64(s_in)·(v − zp_in); f = fn(d) in float64; q = rint(f/float64(s_out))
                   + zp_out (half even), clamp.
      "float32"    the ONNX QDQ form: d = `qdq.dequantize32`(v) = fl32(fl32(v − zp_in)·s_in);
                   f = fn(d) in float32 (a name: `onnx_float32_function`, the ONNX op as
                   `onnx.reference` evaluates it); q = `qdq.quantize32`(f) =
                   clamp(rint(fl32(f / s_out)) + zp_out) (half even, zero point after rounding).
      "gemmlowp"   fn "sigmoid"/"logistic"/"tanh" only: `gemmlowp_lut` (int8, fixed output
                   encodings).
      "fixed_point" fn "hard_swish" only: `hard_swish_fixed_lut`.
      "tflite_int16" fn "sigmoid"/"logistic", "tanh" or "leaky_relu" (with `alpha`; MBQM in
                   single rounding with `single_rounding`), int16 codes with zero points 0:
                   `act16.int16_table`.
      "tflite_leaky" fn "leaky_relu" only (with `alpha`; MBQM in single rounding with
                   `single_rounding`), any zero points: `leaky_relu.leaky_relu_table`.
    Returns an int64 array of in_qmax − in_qmin + 1 entries (the int_lut `table`; input_qmin =
    in_qmin). Errors: FixedPointError for an unknown scheme or function, a non-positive scale, or
    a function value that is NaN.
    """
    lo, hi = input_range if input_range is not None else (qmin, qmax)
    if scheme == "gemmlowp":
        return gemmlowp_lut(fn, s_in, zp_in, s_out, zp_out, input_range=(lo, hi))
    if scheme == "tflite_int16":
        from .act16 import int16_table

        if (lo, hi) != (-32768, 32767):
            raise FixedPointError(f"build_lut: scheme 'tflite_int16' tabulates int16 inputs, got "
                                  f"the input range [{lo}, {hi}]")
        return int16_table(fn, s_in, zp_in, s_out, zp_out, alpha=alpha,
                           single_rounding=single_rounding)
    if scheme == "tflite_leaky":
        from .leaky_relu import leaky_relu_table

        if fn != "leaky_relu":
            raise FixedPointError(f"build_lut: scheme 'tflite_leaky' is TFLite's LEAKY_RELU "
                                  f"only, got {fn!r}")
        return leaky_relu_table(s_in, zp_in, s_out, zp_out, qmin, qmax, alpha,
                                input_range=(lo, hi), single_rounding=single_rounding)
    if scheme == "fixed_point":
        if fn != "hard_swish":
            raise FixedPointError(f"build_lut: scheme 'fixed_point' is TFLite's HARD_SWISH only, "
                                  f"got {fn!r}")
        return hard_swish_fixed_lut(s_in, zp_in, s_out, zp_out, qmin, qmax, input_range=(lo, hi))
    if scheme not in ("lut_float", "float", "float32"):
        raise FixedPointError(f"build_lut: unknown scheme {scheme!r}; choose one of {LUT_SCHEMES}")
    for s in (s_in, s_out):
        if not np.isfinite(np.float32(s)) or np.float32(s) <= 0:
            raise FixedPointError(f"build_lut: scales must be finite and > 0, got {s!r}")
    if scheme == "float32":
        from .qdq import dequantize32, quantize32

        f = onnx_float32_function(fn, {}) if isinstance(fn, str) else fn
        v = np.arange(lo, hi + 1, dtype=np.int64)
        with np.errstate(over="ignore"):
            y = np.asarray(f(dequantize32(v, s_in, zp_in)), dtype=np.float32)
        if np.any(np.isnan(y)):
            raise FixedPointError("build_lut: the function returned NaN")
        return quantize32(np.nan_to_num(y), s_out, zp_out, qmin, qmax)
    if isinstance(fn, str) and fn not in FLOAT32_FUNCTIONS:
        raise FixedPointError(f"build_lut: unknown function {fn!r}; named functions are "
                              f"{sorted(FLOAT32_FUNCTIONS)} (or pass a callable)")
    v = np.arange(lo, hi + 1, dtype=np.int64)
    if scheme == "lut_float":
        f = FLOAT32_FUNCTIONS[fn] if isinstance(fn, str) else fn
        d = np.float32(s_in) * (v - zp_in).astype(np.float32)
        y = np.asarray(f(d), dtype=np.float32) * (np.float32(1) / np.float32(s_out))
        r = round_half_away_float(y)
    else:
        f = _float64_fn(fn) if isinstance(fn, str) else fn
        d = np.float64(np.float32(s_in)) * (v - zp_in).astype(np.float64)
        r = np.rint(np.asarray(f(d), dtype=np.float64) / np.float64(np.float32(s_out)))
    if np.any(np.isnan(r)):
        raise FixedPointError("build_lut: the function returned NaN")
    return np.clip(r, qmin - zp_out, qmax - zp_out).astype(np.int64) + zp_out


# ---- TFLM fixed-point LOGISTIC / TANH --------------------------------------------------------
def gemmlowp_lut(fn, s_in, zp_in, s_out=None, zp_out=None, *, input_range=(-128, 127),
                 single_rounding: bool = False):
    """Table of TFLM's int8 LOGISTIC or TANH (reference/integer_ops/logistic.h, tanh.h; §6.1).

    Prepare (double): real = float64(float32(s_in))·2^27 (4 integer bits); (q, e) = frexp(real);
    multiplier = round_half_away(q·2^31) (no 2^31 fix-up: FixedPointError if it occurs),
    left_shift = e; radius = floor(15·2^27 / 2^e) (`CalculateInputRadius(4, e, 31)`).
    Per input v: d = v − zp_in; d <= −radius -> −128; d >= radius -> 127; else
    a = MultiplyByQuantizedMultiplier(d, multiplier, e) (double rounding, or single with
    `single_rounding`; a Q4.27), then
      logistic: y = clamp(RDBPOT(gemmlowp.logistic(a, 4), 23) − 128, −128, 127)
      tanh:     y = clamp(RDBPOT(gemmlowp.tanh(a, 4), 24), −128, 127).
    The output encoding is fixed by TFLite: logistic scale 1/256, zp −128; tanh scale 1/128,
    zp 0; s_out/zp_out, when given, must match (FixedPointError otherwise).
    """
    kind = {"sigmoid": "logistic", "logistic": "logistic", "tanh": "tanh"}.get(fn)
    if kind is None:
        raise FixedPointError(f"gemmlowp_lut: the fixed-point tables are logistic/sigmoid and "
                              f"tanh, got {fn!r}")
    want = (1 / 256, -128) if kind == "logistic" else (1 / 128, 0)
    if (s_out is not None and np.float32(s_out) != np.float32(want[0])) or (
            zp_out is not None and zp_out != want[1]):
        raise FixedPointError(f"gemmlowp_lut: int8 {kind} output must have scale {want[0]} and "
                              f"zero point {want[1]}, got {s_out} and {zp_out}")
    real = float(np.float32(s_in)) * float(1 << 27)
    if not np.isfinite(real) or real <= 0:
        raise FixedPointError(f"gemmlowp_lut: input scale must be finite and > 0, got {s_in!r}")
    q, e = np.frexp(real)
    mult = int(round_half_away_float(np.float64(q) * float(1 << 31)))
    if mult >= (1 << 31) or not -31 <= e <= 30:
        raise FixedPointError(f"gemmlowp_lut: input scale {s_in} gives multiplier {mult}, shift "
                              f"{e}, outside TFLM's int32 range")
    radius = int(np.floor(15.0 * float(1 << 27) / 2.0 ** e))
    v = np.arange(input_range[0], input_range[1] + 1, dtype=np.int64)
    d = v - zp_in
    inside = (d > -radius) & (d < radius)
    a = multiply_by_quantized_multiplier(np.where(inside, d, 0), mult, e,
                                         single_rounding=single_rounding)
    if kind == "logistic":
        y = round_shift_half_away(gemmlowp.logistic(a, 4), 23) - 128
    else:
        y = round_shift_half_away(gemmlowp.tanh(a, 4), 24)
    y = np.clip(y, -128, 127)
    return np.where(d <= -radius, -128, np.where(d >= radius, 127, y)).astype(np.int64)


# ---- TFLite fixed-point HARD_SWISH -----------------------------------------------------------
def _srdhm16(a, b):
    """int16 SaturatingRoundingDoublingHighMul: floor((a·b + 2^14)/2^15), −32768² -> 32767."""
    r = (a * b + (1 << 14)) >> 15
    return np.where((a == -32768) & (b == -32768), 32767, r)


def _sat_shl16(x, n):
    return np.clip(x << n, -32768, 32767)


def downscale_multiplier_16(m32: int) -> int:
    """TFLite `DownScaleInt32ToInt16Multiplier`: 32767 if m32 >= 2^31 − 1 − 2^15, else
    (m32 + 2^15) >> 16."""
    return 32767 if m32 >= (1 << 31) - 1 - (1 << 15) else (m32 + (1 << 15)) >> 16


def hard_swish_fixed_lut(s_in, zp_in, s_out, zp_out, qmin=-128, qmax=127, *,
                         input_range=None):
    """Table of TFLite/TFLM reference int8 HARD_SWISH (reference/hard_swish.h; §6.5).

    Prepare (float32 math, then QuantizeMultiplier in double): hires = float32(1/128)·s_in;
    out_M = hires/s_out, relu_M = hires/float32(3/32768) (float32 divisions); (m, out_exp) =
    QuantizeMultiplier(out_M), (r, relu_exp) = QuantizeMultiplier(relu_M); both multipliers
    reduced to int16 by `downscale_multiplier_16`; out_exp must be <= 0.
    Per input v (int16 arithmetic): x = v − zp_in; hi = x·128; pre = srdhm16(hi, m16);
    r = hi; relu_exp > 0: r = sat16(r << (relu_exp − 1)); r = srdhm16(r, r16); relu_exp > 0:
    r = sat16(r << 1); relu_exp < 0: r = RDBPOT(r, −relu_exp); r = (r + 2^15) >> 1;
    p = trunc(r·pre / 2^15) (no rounding); y = clamp(wrap16(RDBPOT(p, −out_exp) + zp_out), qmin,
    qmax) (the C code adds the zero point in int16).
    """
    lo, hi = input_range if input_range is not None else (qmin, qmax)
    s_in32, s_out32 = np.float32(s_in), np.float32(s_out)
    if not (np.isfinite(s_in32) and np.isfinite(s_out32) and s_in32 > 0 and s_out32 > 0):
        raise FixedPointError(f"hard_swish_fixed_lut: scales must be finite and > 0, got "
                              f"{s_in}, {s_out}")
    hires = np.float32(1.0 / 128.0) * s_in32
    m32, out_exp = (int(t) for t in quantize_multiplier(float(hires / s_out32)))
    r32, relu_exp = (int(t) for t in quantize_multiplier(
        float(hires / (np.float32(3.0) / np.float32(32768.0)))))
    if out_exp > 0:
        raise FixedPointError(f"hard_swish_fixed_lut: s_in/(128·s_out) = {float(hires / s_out32)} "
                              "needs a left shift; TFLite requires output_multiplier_exponent <= 0")
    m16, r16 = downscale_multiplier_16(m32), downscale_multiplier_16(r32)
    x = np.arange(lo, hi + 1, dtype=np.int64) - zp_in
    h = wrap(x * 128, 16)
    pre = _srdhm16(h, m16)
    r = h
    if relu_exp > 0:
        r = _sat_shl16(r, relu_exp - 1)
    r = _srdhm16(r, r16)
    if relu_exp > 0:
        r = _sat_shl16(r, 1)
    elif relu_exp < 0:
        r = round_shift_half_away(r, -relu_exp)
    r = (r + (1 << 15)) >> 1
    prod = r * pre
    p = np.where(prod >= 0, prod >> 15, -((-prod) >> 15))
    y = wrap(round_shift_half_away(p, -out_exp) + zp_out, 16)
    return np.clip(y, qmin, qmax).astype(np.int64)


OPS = [
    Op("int_lut", _lut_forward, _lut_shape, attrs={"input_qmin": Attr("int")},
       params={"table": True}),
]
