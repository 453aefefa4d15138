"""The integer accelerator model: exact fixed-point primitives and named target profiles.

rounding.py    rounding right shifts, SRDHM, saturate, wrap, accumulator overflow policy
multiplier.py  real multiplier M and its (multiplier, shift) encodings per target
requantize.py  requantization schemes, quantize, activation clamp bounds
profiles.py    `Profile` and the shipped profiles (tflite, tflite-single, tosa, onnx, cmsis-nn)

All integer work is int64 NumPy arithmetic; each docstring states preconditions, rounding rule and
source (../shared/reference/fixedpoint.md) and proves the absence of int64 overflow.
"""
from .multiplier import (MULTIPLIER_DERIVATIONS, SCALE_MATHS, derive_multiplier,
                         quantize_multiplier, quantize_multiplier_cmsis_generator, real_multiplier,
                         round_half_away_float, tosa_scale16, tosa_scale32)
from .profiles import PROFILES, Profile, describe_profiles, get_profile
from .requantize import (ACTIVATIONS, FLOAT_SCHEMES, INTEGER_SCHEMES, REQUANT_SCHEMES,
                         activation_range, apply_scale_16, apply_scale_32, float_scale_round,
                         multiply_by_quantized_multiplier, quantize, requantize)
from .rounding import (INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, OVERFLOW_POLICIES,
                       ROUNDING_MODES, apply_overflow_policy, floor_shift, round_shift_half_away,
                       round_shift_half_even, round_shift_half_up, rounding_divide_by_pot,
                       rounding_right_shift, saturate, srdhm, wrap)

__all__ = [
    # rounding
    "INT32_MIN", "INT32_MAX", "INT64_MIN", "INT64_MAX", "ROUNDING_MODES", "OVERFLOW_POLICIES",
    "round_shift_half_away", "rounding_divide_by_pot", "round_shift_half_up",
    "round_shift_half_even", "floor_shift", "rounding_right_shift", "srdhm", "saturate", "wrap",
    "apply_overflow_policy",
    # multiplier
    "SCALE_MATHS", "MULTIPLIER_DERIVATIONS", "real_multiplier", "quantize_multiplier",
    "quantize_multiplier_cmsis_generator", "tosa_scale32", "tosa_scale16", "derive_multiplier",
    "round_half_away_float",
    # requantize
    "REQUANT_SCHEMES", "INTEGER_SCHEMES", "FLOAT_SCHEMES", "ACTIVATIONS",
    "multiply_by_quantized_multiplier", "apply_scale_32", "apply_scale_16", "float_scale_round",
    "requantize", "quantize", "activation_range",
    # profiles
    "Profile", "PROFILES", "get_profile", "describe_profiles",
]
