"""Named integer-inference profiles: every numerical choice in which real targets differ.

A `Profile` is a frozen record; the lowering and the integer kernels read their conventions from it
and never hard-code one. Each field's docstring names the target source it follows (kernel function
or spec section; §n refers to the project's fixed-point reference notes). Shipped profiles:
`PROFILES` (read-only mapping), `get_profile`; `refq.fixedpoint.profile_table.describe_profiles`
is the table of `refq profiles`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType

from ..errors import FixedPointError
from .multiplier import MULTIPLIER_DERIVATIONS, SCALE_MATHS, derive_multiplier, real_multiplier
from .requantize import FLOAT_SCHEMES, REQUANT_SCHEMES, activation_range, quantize, requantize
from .rounding import OVERFLOW_POLICIES

__all__ = ["Profile", "PROFILES", "get_profile", "POOL_ATTRIBUTES", "INT16_KERNELS"]

# The schemes each multiplier encoding feeds, and its width in bits.
_SCHEMES_OF = {"tflite": ("tflite_double", "single_round"),
               "tosa32": ("tosa_single", "tosa_double"), "tosa16": ("tosa16",),
               "float64": ("float_rne", "float_half_away"), "float32": ("float32_rne",)}
_BITS_OF = {"tflite": 32, "tosa32": 32, "tosa16": 16, "float64": 64, "float32": 32}

#: The int16 kernel families a profile may name (`Profile.int16_kernels`).
INT16_KERNELS = ("tflite", "cmsis-nn", "tosa", None)
_CHOICES = {
    "scale_math": SCALE_MATHS, "fc_per_tensor_scale_math": SCALE_MATHS,
    "mul_scale_math": SCALE_MATHS, "multiplier": MULTIPLIER_DERIVATIONS,
    "requant": REQUANT_SCHEMES, "fc_requant": REQUANT_SCHEMES + (None,),
    "quantize_rounding": ("half_away", "half_even"),
    "activation_range_rounding": ("half_away", "half_even"),
    "overflow": OVERFLOW_POLICIES, "conv_padding": ("input_zero_point",),
    "add": ("tflite", "tosa", "float", "qdq", "ort"),
    "avgpool": ("tflite", "tosa", "float", "qdq", "ort"),
    "mean": ("tflite", "tosa", "float", "qdq", "ort"),
    "mul": ("requant", "qdq", "ort"), "rescale": ("requant", "qdq"),
    "logistic_tanh": ("lut_float", "gemmlowp", "float", "float32"),
    "hard_swish": ("fixed_point", "lut_float", "float", "float32"),
    "softmax": ("gemmlowp", "lut_float", "tosa_legalized", "float", "float32", "ort"),
    "int16_kernels": INT16_KERNELS,
}
_ACT_DTYPES = ("int8", "uint8", "int16")
#: The pooling geometry beyond plain 2-D pooling (dilations 1, floor output size, padding not
#: counted, valid / same (upper) / explicit padding) that a target's pooling kernels may define.
POOL_ATTRIBUTES = ("dilations", "ceil_mode", "count_include_pad", "same_lower", "1d", "3d")
_WEIGHT_DTYPES = ("int8", "uint8", "int4")


@dataclass(frozen=True)
class Profile:
    """The integer semantics of one target, each choice with its source (§ of fixedpoint.md).

    name, description: the registry key and one line on what the profile models.
    scale_math: how the real multiplier M = s_in·s_w/s_out of conv/depthwise/per-channel FC is
        formed from the float32 scales (`real_multiplier`): "float64" (TFLite
        `PopulateConvolutionQuantizationParams`, TOSA legalizer; §1.1), "float32_product",
        "float32" (float32(float32(s_in·s_w)/s_out): ONNX reference `x_scale * w_scale /
        y_scale` on float32 arrays, onnxruntime `qlinearconv.cc::ComputeOutputScale` and
        `quantize_linear_matmul.cc`; §8.2).
    fc_per_tensor_scale_math: the same for per-tensor FullyConnected; TFLM's
        `GetQuantizedConvolutionMultipler` rounds s_in·s_w to float32 first ("float32_product",
        §1.1).
    mul_scale_math: the same for elementwise MUL, s1·s2/s_out: LiteRT evaluates it in float32,
        TFLM in double (§4.2).
    multiplier: the encoding of M (`derive_multiplier`, §1): "tflite" (`QuantizeMultiplier`, Q31 +
        signed shift; with requant "single_round" the single-rounding build's clamp applies),
        "tosa32"/"tosa16" (`computeMultiplierAndShiftTosaScale32/16`), "float64"/"float32" (M kept
        as a float of that width; §1.3).
    multiplier_bits: the width of that multiplier: 32 (int32 Q31), 16 (TOSA scale16), or the float
        width 64/32 (Appendix A `multiplier_repr`).
    requant: the accumulator requantization scheme (`requantize`, §2; §8.2 for the float ones):
        ONNX reference QLinearConv/QLinearMatMul "float_rne" (float64(acc)·float64(M));
        onnxruntime "float32_rne" (`MlasRequantizeOutput`: float32(acc)·M in float32, clamp to
        [qmin − zp, qmax − zp], round half to even (cvtps2dq), then + zp).
    fc_requant: the scheme of FullyConnected when it differs, else None. LiteRT's reference FC
        requantizes in double with round half away ("float_half_away", §2.5).
    zp_before_round: whether the output zero point is added before rounding (ONNX reference
        QLinearConv/MatMul) or after (all others; §0 "zp add vs round order", §8.2).
    quantize_rounding: float -> int QUANTIZE rounding: "half_away" (TFLite `roundf`) or
        "half_even" (ONNX `rint`, onnxruntime, TOSA CAST; §8.1).
    activation_range_rounding: the rounding of the fused-activation clamp bounds
        (`activation_range`): TFLite `CalculateActivationRangeQuantized` rounds half away, the TOSA
        legalizer reuses those integers, ONNX quantizes the float Clip bounds half-even (§2.6,
        App. A).
    acc_bits: accumulator width of the 8-bit kernels (int32 everywhere, §3; the int16 x int8
        kernels of `int16_kernels` have their own: TFLite's int64 with a 16-bit multiplier, §2.4;
        TOSA's int48 with a 48-bit bias and the scale16 RESCALE, `refq.fixedpoint.rescale48`).
    overflow: what an accumulator that leaves acc_bits does (`apply_overflow_policy`): "error"
        in every shipped profile, because no target defines it (TFLite's int32 wrap is unguarded
        C undefined behaviour, §3.1; TOSA REQUIREs no overflow, §3.3); "wrap" models the C kernels
        in practice, "saturate" a saturating MAC.
    bias_bits: bias width (int32, scale s_in·s_w, zero point 0; §3.1, §3.4).
    weight_zero_point: whether weights may have a non-zero zero point (TFLite/CMSIS-NN int8: must
        be 0; TOSA: allowed for i8; ONNX: allowed; §0, §3).
    per_channel_weight_zero_point: whether it may differ per output channel (ONNX QLinearConv
        allows a per-channel w_zero_point, and onnxruntime 1.32's QLinearConv, QLinearMatMul and
        MatMulInteger take one, though its ConvInteger refuses it; TOSA's weight_zp is one value;
        §3.3, §3.4).
    conv_padding: "input_zero_point" — padded taps contribute as if the quantized input were
        padded with zp_in (TFLite/TOSA skip them, CMSIS-NN fills im2col with zp_in, ONNX pads the
        zp-subtracted input with 0; all equivalent, §3).
    add: int8 ADD/SUB: "tflite" (inputs << add_left_shift, three `MultiplyByQuantizedMultiplier`
        with 2·max(s1, s2); §4.1), "tosa" (RESCALE(<<20) -> RESCALE -> ADD i32 -> RESCALE chain;
        §4.3), "float" (float64 s_a/s_out, s_b/s_out, round half to even), "qdq" (the ONNX
        spec's DequantizeLinear -> float32 Add -> QuantizeLinear, §4.4, §8.1), "ort"
        (onnxruntime's fused QLinearAdd, MLAS `qladd_avx2.cpp`: float32 ratios s_a/s_c, s_b/s_c
        and fused multiply-adds on the raw codes; `kernels.add`).
    add_left_shift: the left shift of the "tflite"/"tosa" Add (20 for int8; §4.1).
    mul: elementwise MUL: "requant" (the exact product (x_a − zp_a)(x_b − zp_b) requantized by
        `requant` with M from mul_scale_math; TFLite §4.2, TOSA §4.3), "qdq" (DequantizeLinear ->
        float32 Mul -> QuantizeLinear, the ONNX spec), "ort" (onnxruntime QLinearMul, MLAS
        `qlmul.cpp`: float32(product)·float32(float32(s_a·s_b)/s_c) + float32(zp_c), then
        round half to even: the zero point is added before rounding).
    rescale: a change of encoding (concat inputs, input quantizers, activations whose output
        encoding differs): "requant" (the integer rescale of `requant`, TFLite QUANTIZE int->int,
        TOSA RESCALE, §8.1), "qdq" (DequantizeLinear -> QuantizeLinear in float32: ONNX spec;
        onnxruntime's QLinearConcat table `QlinearBuildLookupTable` computes the same).
    avgpool: "tflite" (raw sum, division rounding half away, padding not counted, no zero point;
        §5.1), "tosa" (`reciprocal_scale` + single round on x − zp; §5.1), "float" (float64
        average then quantize half-even), "qdq" (DequantizeLinear -> float32 AveragePool,
        count_include_pad 0, summed as `onnx.reference` sums -> QuantizeLinear), "ort"
        (onnxruntime QLinearAveragePool `qlinear_pool.cc`: float32 dequantize, sequential float32
        sum over the window, / count, nearbyintf(y/s_out + zp_out); a window covering the whole
        unpadded image takes the QLinearGlobalAveragePool path; §5.1).
    mean: "tflite" (`QuantizedMeanOrSum`, §5.3), "tosa" (REDUCE_SUM + RESCALE), "float" (float64),
        "qdq" (DequantizeLinear -> float32 GlobalAveragePool (numpy mean, as `onnx.reference`) ->
        QuantizeLinear), "ort" (onnxruntime QLinearGlobalAveragePool, MLAS `qlgavgpool.cpp`:
        exact int32 Σ(x − zp_in), M = float32(s_in/float32(s_out·n)), `MlasRequantizeOutput`;
        §5.3).
    logistic_tanh: int8 LOGISTIC/TANH: "lut_float" (LiteRT `LUTPopulate`, float32 + roundf, §6.2;
        also the TOSA legalizer's TABLE, §6.4), "gemmlowp" (TFLM fixed point, §6.1), "float" (float
        op inside QDQ, float64), "float32" (DequantizeLinear -> the ONNX op in float32 ->
        QuantizeLinear, as `onnx.reference` evaluates it; the table scheme of `kernels.lut`).
        onnxruntime builds its QLinearSigmoid/QLinearLeakyRelu tables and runs unfused Tanh with
        MLAS's own float32 approximations of exp/tanh; on every 8-bit code at the scales of
        tests/data/ort they round to the same codes as "float32" (measured, not guaranteed for
        every scale: a function value within an ulp of a rounding boundary may differ).
    hard_swish: "fixed_point" (TFLite/TFLM `reference_ops::HardSwish`, §6.5), "lut_float" (TOSA
        TABLE from the legalizer), "float", "float32" (ONNX HardSwish in float32 inside QDQ).
    softmax: "gemmlowp" (TFLM/BUILTIN_REF/CMSIS-NN fixed point, §7), "lut_float" (LiteRT
        optimized), "tosa_legalized" (the legalizer's TABLE/REDUCE_SUM/CLZ/RESCALE network, not
        bit-exact to TFLite), "float" (float64), "float32" (DequantizeLinear -> ONNX Softmax in
        float32 -> QuantizeLinear), "ort" (onnxruntime's com.microsoft QLinearSoftmax,
        `qlinear_softmax.cc`, into which it fuses a QDQ Softmax of one 8-bit type: a float32
        table of exponentials over the 256 code differences, a sequential float32 sum,
        rint(e·floor(fl32(1/s_out))/sum) + zp in double; input and output of different types
        stay "float32").
    activation_dtypes, weight_dtypes: the integer types the target's kernels accept (tuples of
        "int8", "uint8", "int16" / "int8", "uint8", "int4"). "ort" is 8-bit only: onnxruntime's
        QLinearConv/MatMul take 8-bit tensors, and a 16-bit QDQ convolution runs as a float
        convolution, whose summation order is the library's.
    int16_kernels: the target's own kernels for int16 activations with int8 weights, or None
        (the 8-bit forms at 16 bits). "tflite": TFLite's 16x8 kernels (int64 biases and
        accumulators, 16-bit multipliers, the int16 add's shift 15; §2.4); "cmsis-nn": CMSIS-NN's
        s16 kernels, of which refq refuses the convolutions, fully connected layers and adds
        (`refq.fixedpoint.lower_16x8`); "tosa": TOSA's "signed 16x8 with int48 accumulate"
        CONV2D / DEPTHWISE_CONV2D / TRANSPOSE_CONV2D (dense as a 1x1 CONV2D): int48 accumulator
        and bias (every int48 sum REQUIREd in range, else an error), then the scale16 RESCALE
        (single rounding) with the TFLite->TOSA legalizer's 16-bit multiplier, which it also
        puts after an 8-bit-input layer with an int16 output (`isScale32` looks at the output;
        `refq.fixedpoint.lower_tosa16`, `rescale48`).
    max_pool_attributes, avg_pool_attributes: the pooling geometry beyond plain 2-D pooling
        that the target's max / average pooling kernels define (`POOL_ATTRIBUTES`; the lowering
        refuses the others, naming them): "dilations", "ceil_mode", "count_include_pad" (average
        only), "same_lower" (ONNX SAME_LOWER, the extra pad before), "1d", "3d" (spatial rank).
        TFLite/TFLM/CMSIS-NN: AVERAGE_POOL_2D / MAX_POOL_2D take SAME or VALID padding only
        (§5.1, §5.2); a 1-D pool is their 2-D kernel on [N, 1, L, C] (TensorFlow's pool1d is an
        expand_dims + 2-D pool, which the converter keeps). TOSA AVG_POOL2D / MAX_POOL2D take
        explicit pads (so same_lower) and no dilation; 1-D as TFLite. ONNX AveragePool-19 and
        MaxPool define every attribute at ranks 1-3 (`onnx.reference` evaluates them;
        AveragePool's count_include_pad and ceil_mode, §5.1). onnxruntime: MaxPool (int8/uint8)
        as ONNX; QLinearAveragePool (`contrib_ops/cpu/quantization/qlinear_pool.cc`) has
        ceil_mode, count_include_pad, auto_pad and ranks 1-3 but no dilations.
    Errors: an invalid or inconsistent field raises FixedPointError.
    """

    name: str
    description: str
    scale_math: str
    fc_per_tensor_scale_math: str
    mul_scale_math: str
    multiplier: str
    multiplier_bits: int
    requant: str
    fc_requant: str | None
    zp_before_round: bool
    quantize_rounding: str
    activation_range_rounding: str
    weight_zero_point: bool
    per_channel_weight_zero_point: bool
    add: str
    avgpool: str
    mean: str
    logistic_tanh: str
    hard_swish: str
    softmax: str
    activation_dtypes: tuple
    weight_dtypes: tuple
    acc_bits: int = 32
    overflow: str = "error"
    bias_bits: int = 32
    conv_padding: str = "input_zero_point"
    add_left_shift: int = 20
    mul: str = "requant"
    rescale: str = "requant"
    max_pool_attributes: tuple = ("1d",)
    avg_pool_attributes: tuple = ("1d",)
    int16_kernels: str | None = None

    def __post_init__(self):
        def bad(msg):
            raise FixedPointError(f"Profile {self.name!r}: {msg}")

        if not isinstance(self.name, str) or not self.name:
            bad("name must be a non-empty string")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                bad(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.multiplier_bits != _BITS_OF[self.multiplier]:
            bad(f"multiplier {self.multiplier!r} is {_BITS_OF[self.multiplier]} bits wide, "
                f"multiplier_bits says {self.multiplier_bits}")
        if self.requant not in _SCHEMES_OF[self.multiplier]:
            bad(f"requant {self.requant!r} does not take a {self.multiplier!r} multiplier; use one "
                f"of {_SCHEMES_OF[self.multiplier]}")
        if self.fc_requant is not None and self.fc_requant not in (
                FLOAT_SCHEMES + _SCHEMES_OF[self.multiplier]):
            bad(f"fc_requant {self.fc_requant!r} needs a multiplier encoding other than "
                f"{self.multiplier!r}")
        float_schemes = {self.requant, self.fc_requant or self.requant} <= set(FLOAT_SCHEMES)
        if self.zp_before_round and not float_schemes:
            bad("zp_before_round needs float requantization schemes")
        for name in ("acc_bits", "bias_bits", "add_left_shift"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                bad(f"{name} must be an int, got {v!r}")
        if not 16 <= self.acc_bits <= 64 or not 8 <= self.bias_bits <= self.acc_bits:
            bad(f"need 16 <= acc_bits <= 64 and 8 <= bias_bits <= acc_bits, got {self.acc_bits}, "
                f"{self.bias_bits}")
        if not 0 <= self.add_left_shift <= 30:
            bad(f"add_left_shift must lie in [0, 30], got {self.add_left_shift}")
        for name in ("zp_before_round", "weight_zero_point", "per_channel_weight_zero_point"):
            if not isinstance(getattr(self, name), bool):
                bad(f"{name} must be a bool")
        if self.per_channel_weight_zero_point and not self.weight_zero_point:
            bad("per_channel_weight_zero_point needs weight_zero_point")
        for name in ("max_pool_attributes", "avg_pool_attributes"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or not set(v) <= set(POOL_ATTRIBUTES):
                bad(f"{name} must be a tuple drawn from {POOL_ATTRIBUTES}, got {v!r}")
        if "count_include_pad" in self.max_pool_attributes:
            bad("max_pool_attributes cannot hold count_include_pad (max pooling counts nothing)")
        for name, allowed in (("activation_dtypes", _ACT_DTYPES),
                              ("weight_dtypes", _WEIGHT_DTYPES)):
            v = getattr(self, name)
            if not isinstance(v, tuple) or not v or not set(v) <= set(allowed):
                bad(f"{name} must be a non-empty tuple drawn from {allowed}, got {v!r}")

    # -- the profile's conventions applied (thin wrappers over the primitives) ---------------------
    def real_multiplier(self, s_in, s_w, s_out, *, kind: str = "conv"):
        """M for kind "conv" (conv, depthwise, per-channel FC), "fc_per_tensor" or "mul", formed
        with this profile's scale math."""
        math = {"conv": self.scale_math, "fc_per_tensor": self.fc_per_tensor_scale_math,
                "mul": self.mul_scale_math}.get(kind)
        if math is None:
            raise FixedPointError(f"kind must be 'conv', 'fc_per_tensor' or 'mul', got {kind!r}")
        return real_multiplier(s_in, s_w, s_out, math)

    def derive_multiplier(self, real):
        """(multiplier, shift) of real M in this profile's encoding (`derive_multiplier`)."""
        return derive_multiplier(real, self.multiplier,
                                 single_rounding=self.requant == "single_round")

    def requantize(self, acc, multiplier, shift, *, zero_point, act_min, act_max, fc: bool = False):
        """`requantize` with this profile's scheme (fc_requant for FullyConnected when `fc`) and
        zero-point order. For a float fc_requant pass the real M as multiplier and shift None."""
        scheme = (self.fc_requant or self.requant) if fc else self.requant
        return requantize(acc, multiplier, shift, scheme, zero_point=zero_point, act_min=act_min,
                          act_max=act_max,
                          zp_before_round=self.zp_before_round and scheme in FLOAT_SCHEMES)

    def quantize(self, x, scale, zero_point, *, qmin, qmax):
        """`quantize` with this profile's rounding (float32 division)."""
        return quantize(x, scale, zero_point, qmin=qmin, qmax=qmax, rounding=self.quantize_rounding)

    def activation_range(self, activation, scale, zero_point, *, qmin, qmax):
        """`activation_range` with this profile's rounding of the bounds."""
        return activation_range(activation, scale, zero_point, qmin=qmin, qmax=qmax,
                                rounding=self.activation_range_rounding)


_TFLITE = Profile(
    name="tflite",
    description="TFLite/LiteRT reference kernels (BUILTIN_REF), default build "
                "(TFLITE_SINGLE_ROUNDING=0): double rounding; reference FC requantizes in float",
    scale_math="float64", fc_per_tensor_scale_math="float64", mul_scale_math="float32",
    multiplier="tflite", multiplier_bits=32, requant="tflite_double", fc_requant="float_half_away",
    zp_before_round=False, quantize_rounding="half_away", activation_range_rounding="half_away",
    weight_zero_point=False, per_channel_weight_zero_point=False, add="tflite", avgpool="tflite",
    mean="tflite", logistic_tanh="lut_float", hard_swish="fixed_point", softmax="gemmlowp",
    activation_dtypes=("int8", "int16"), weight_dtypes=("int8", "int4"), int16_kernels="tflite",
)

_PROFILES = (
    _TFLITE,
    replace(_TFLITE, name="tflite-single", requant="single_round",
            description="TFLite/LiteRT reference kernels built with TFLITE_SINGLE_ROUNDING=1: "
                        "single rounding (half up) as ruy; reference FC still float"),
    Profile(
        name="tosa",
        description="TOSA 1.0 spec pseudocode with the TFLite->TOSA legalizer's choices: "
                    "RESCALE DOUBLE_ROUND (= TFLite double rounding), right shifts 2..62; int16 "
                    "x int8 layers: int48 accumulator and bias, scale16 RESCALE (single round)",
        scale_math="float64", fc_per_tensor_scale_math="float64", mul_scale_math="float64",
        multiplier="tosa32", multiplier_bits=32, requant="tosa_double", fc_requant=None,
        zp_before_round=False, quantize_rounding="half_even", activation_range_rounding="half_away",
        weight_zero_point=True, per_channel_weight_zero_point=False, add="tosa", avgpool="tosa",
        mean="tosa", logistic_tanh="lut_float", hard_swish="lut_float", softmax="tosa_legalized",
        activation_dtypes=("int8", "int16"), weight_dtypes=("int8", "int4"),
        max_pool_attributes=("same_lower", "1d"), avg_pool_attributes=("same_lower", "1d"),
        int16_kernels="tosa",
    ),
    Profile(
        name="onnx",
        description="the ONNX spec as onnx.reference (1.23) evaluates it: QLinearConv/MatMul with "
                    "float32 M, float64 product, zero point added before round-half-even; every "
                    "other op DequantizeLinear -> float32 op -> QuantizeLinear",
        scale_math="float32", fc_per_tensor_scale_math="float32", mul_scale_math="float32",
        multiplier="float64", multiplier_bits=64, requant="float_rne", fc_requant=None,
        zp_before_round=True, quantize_rounding="half_even", activation_range_rounding="half_even",
        weight_zero_point=True, per_channel_weight_zero_point=True, add="qdq", avgpool="qdq",
        mean="qdq", logistic_tanh="float32", hard_swish="float32", softmax="float32",
        activation_dtypes=("int8", "uint8", "int16"), weight_dtypes=("int8", "uint8"),
        mul="qdq", rescale="qdq",
        max_pool_attributes=("dilations", "ceil_mode", "same_lower", "1d", "3d"),
        avg_pool_attributes=POOL_ATTRIBUTES,
    ),
    Profile(
        name="ort",
        description="onnxruntime CPU kernels (x86-64 AVX2/FMA MLAS) on a QDQ model with graph "
                    "optimizations on: QLinearConv/MatMul rint(f32(acc)·f32(M)) + zp, fused "
                    "QLinearAdd/Mul/AveragePool/GlobalAveragePool, QLinearSoftmax's exp "
                    "table; other ops float32 inside QDQ",
        scale_math="float32", fc_per_tensor_scale_math="float32", mul_scale_math="float32",
        multiplier="float32", multiplier_bits=32, requant="float32_rne", fc_requant=None,
        zp_before_round=False, quantize_rounding="half_even", activation_range_rounding="half_even",
        weight_zero_point=True, per_channel_weight_zero_point=True, add="ort", avgpool="ort",
        mean="ort", logistic_tanh="float32", hard_swish="float32", softmax="ort",
        activation_dtypes=("int8", "uint8"), weight_dtypes=("int8", "uint8"),
        mul="ort", rescale="qdq",
        max_pool_attributes=("dilations", "ceil_mode", "same_lower", "1d", "3d"),
        avg_pool_attributes=("ceil_mode", "count_include_pad", "same_lower", "1d", "3d"),
    ),
    Profile(
        name="cmsis-nn",
        description="ARM CMSIS-NN under TFLM (default build): TFLM QuantizeMultiplier, "
                    "arm_nn_requantize double rounding, gemmlowp fixed-point logistic/tanh/softmax",
        scale_math="float64", fc_per_tensor_scale_math="float32_product", mul_scale_math="float64",
        multiplier="tflite", multiplier_bits=32, requant="tflite_double", fc_requant=None,
        zp_before_round=False, quantize_rounding="half_away", activation_range_rounding="half_away",
        weight_zero_point=False, per_channel_weight_zero_point=False, add="tflite",
        avgpool="tflite", mean="tflite", logistic_tanh="gemmlowp", hard_swish="fixed_point",
        softmax="gemmlowp", activation_dtypes=("int8", "int16"), weight_dtypes=("int8", "int4"),
        int16_kernels="cmsis-nn",
    ),
)

#: The shipped profiles by name (read-only).
PROFILES = MappingProxyType({p.name: p for p in _PROFILES})


def get_profile(name) -> Profile:
    """The shipped profile called `name` (a Profile is returned as it is); an unknown name raises
    FixedPointError listing them."""
    if isinstance(name, Profile):
        return name
    if isinstance(name, str) and name in PROFILES:
        return PROFILES[name]
    raise FixedPointError(f"unknown fixed-point profile {name!r}; known profiles: "
                          f"{', '.join(PROFILES)}")
