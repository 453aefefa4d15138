"""Integer kernel cases on int16 activations (kind "integer", `refq.conformance.cases_integer`'s
conventions): the 16x8 layers of TFLite's and TOSA's int16 kernel families, and the other ops at
16 bits under every profile that has them."""
from __future__ import annotations

from .cases_integer import X, _VALID, conv_spec, enc, integer_case as _all, one_layer, supporting

#: The profiles that lower int16 convolutions, dense layers and adds to TFLite's 16x8 kernels
#: (`refq.fixedpoint.lower_16x8`); cmsis-nn refuses its s16 contractions and add.
TFLITE_16X8 = ["tflite", "tflite-single"]


def other_int16(*excluded) -> list:
    """The shipped int16 profiles outside TFLITE_16X8 and `excluded`."""
    return [p for p in supporting(act="int16") if p not in TFLITE_16X8 + list(excluded)]


_all("conv2d", "int16", "int_conv2d on int16 activations (16x8)",
     conv_spec(2, 3, 3, (4, 4), dtype="int16", zp_in=0, zp_out=0, s_in=2e-4),
     other_int16("cmsis-nn"), seed=12)
_all("conv2d", "int16", "int_conv2d_16x8: TFLite's 16x8 convolution on int16 activations "
     "(int64 bias and accumulator, multiplier reduced to 16 bits, one rounding)",
     conv_spec(2, 3, 3, (4, 4), dtype="int16", zp_in=0, zp_out=0, s_in=2e-4),
     TFLITE_16X8, seed=12)
_all("conv2d", "int16_depthwise", "int_conv2d_16x8 depthwise 3x3 'same', channel multiplier 2, "
     "on int16 activations (TFLite's 16x8 DEPTHWISE_CONV_2D)",
     conv_spec(3, 6, 3, (5, 5), attrs={"groups": 3, "padding": "same"}, dtype="int16", zp_in=0,
               zp_out=0, s_in=2e-4), TFLITE_16X8, seed=17)
_all("dense", "int16", "int_dense_16x8: TFLite's 16x8 FULLY_CONNECTED on int16 activations "
     "(int64 bias and accumulator; LiteRT's reference kernel requantizes in float64, rounding "
     "half away)", conv_spec(8, 5, 0, (), op="dense", dtype="int16", zp_in=0, zp_out=0,
                             s_in=2e-4), TFLITE_16X8, seed=18)
_all("dense", "int16", "int_dense_tosa16: TOSA's 16x8 FULLY_CONNECTED (a 1x1 CONV2D: int48 "
     "accumulator and bias, scale16 RESCALE)", conv_spec(8, 5, 0, (), op="dense", dtype="int16",
                                                          zp_in=0, zp_out=0, s_in=2e-4),
     ["tosa"], seed=18)

# int16 (left out: int_add with add_left_shift 20 overflows int32 under "tosa"; float32
# int16 sigmoid/tanh tables ("lut_float", and "float32", the ONNX op in float32) differ between
# CPUs (NumPy's float32 SIMD exp/tanh); "fixed_point" is 8-bit only)
I16 = enc(2e-4, 0, "int16")
_all("multiply", "int16", "int_multiply on int16", one_layer(
    {"a": (X, I16), "b": (X, enc(3e-4, 5, "int16"))},
    {"name": "mul", "op": "multiply", "output": enc(2e-5, 0, "int16")}), supporting(act="int16"),
     seed=50)
_all("global_avg_pool2d", "int16", "int_mean on int16", one_layer(
    {"x": (X, I16)}, {"name": "gap", "op": "global_avg_pool2d", "output": enc(1e-4, 0, "int16")}),
     supporting(act="int16"), seed=51)
_all("avg_pool2d", "int16", "int_avg_pool2d 2x2 valid on int16", one_layer(
    {"x": ((4, 6, 2), I16)}, dict(_VALID, name="avg", op="avg_pool2d")), supporting(act="int16"),
     seed=52)
_all("softmax", "int16", "int_softmax on int16 (float scheme)", one_layer(
    {"x": ((10,), I16)}, {"name": "sm", "op": "softmax", "output": enc(1 / 32768, 0, "int16")}),
     other_int16("cmsis-nn"), seed=53)   # TFLite's int16 SOFTMAX: its own cases (tables)
_ADD16 = one_layer({"a": (X, I16), "b": (X, enc(3e-4, 0, "int16"))},
                   {"name": "add", "op": "add", "output": enc(5e-4, 0, "int16")})
_all("add", "int16", "int_add on int16 (float scheme)", _ADD16, ["onnx"], seed=54)
_all("add", "int16", "int_add on int16 with TFLite's int16 left shift 15 (three "
     "requantizations)", _ADD16, TFLITE_16X8, seed=54)
_all("hard_swish", "int16", "hard_swish on int16 as a 65,536-entry int_lut", one_layer(
    {"x": ((4, 8), enc(3e-4, 0, "int16"))},
    {"name": "hard_swish", "op": "hard_swish", "output": enc(3e-4, 0, "int16")}),
     ["tosa", "onnx"], seed=55)
_Q15 = enc(1 / 32768, 0, "int16")
_all("sigmoid", "int16", "LiteRT's int16 LOGISTIC (interpolated sigmoid_table_uint16) as a "
     "65,536-entry int_lut", one_layer({"x": ((4, 8), I16)},
                                       {"name": "sigmoid", "op": "sigmoid", "output": _Q15}),
     TFLITE_16X8, seed=56)
_all("tanh", "int16", "LiteRT's int16 TANH (interpolated sigmoid_table_uint16) as a 65,536-entry "
     "int_lut", one_layer({"x": ((4, 8), enc(1e-3, 0, "int16"))},
                          {"name": "tanh", "op": "tanh", "output": _Q15}), TFLITE_16X8, seed=57)
_all("leaky_relu", "int16", "LiteRT's int16 LEAKY_RELU (two multipliers) as a 65,536-entry "
     "int_lut", one_layer({"x": ((4, 8), I16)}, {"name": "leaky_relu", "op": "leaky_relu",
                                                 "alpha": 0.2, "output": enc(1.5e-4, 0, "int16")}),
     TFLITE_16X8, seed=58)
_all("softmax", "int16", "LiteRT's int16 SOFTMAX (exp and 1/(1 + x) tables with interpolation), "
     "int_softmax 'tflite16'", one_layer({"x": ((10,), enc(1e-3, 0, "int16"))},
                                         {"name": "sm", "op": "softmax", "output": _Q15}),
     TFLITE_16X8, seed=59)
