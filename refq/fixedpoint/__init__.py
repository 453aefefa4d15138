"""The integer accelerator model: exact fixed-point primitives, named target profiles, the lowering
to integer graphs, their integer kernels and runs.

rounding.py           rounding right shifts, SRDHM, saturate, wrap, accumulator overflow policy
multiplier.py         real multiplier M and its (multiplier, shift) encodings per target
requantize.py         requantization schemes, quantize, activation clamp bounds
scaling.py            the requantization schemes fused into few int64 passes (used by requantize)
blocks.py             elementwise pipelines run block by block in cache (speed only)
profiles.py           `Profile` and the shipped profiles (tflite, tflite-single, tosa, onnx,
                      ort, cmsis-nn); profile_table.py their text table (`refq profiles`)
lowering.py           `lower` (QuantSim -> integer graph), `lower_from_params`; the lowering rules
lower_encodings.py    integer tensor encodings, weight codes, int32 biases
lower_graph.py        the integer graph under construction and the graph walk
lower_layers.py       conv2d/dense, add/multiply, pooling and data-movement lowering
lower_contractions.py conv_transpose2d, gemm and matmul lowering
lower_params.py       `lower_from_params` and the checks of its spec
lower_activations.py  clamp, lookup-table and softmax lowering
lower_16x8.py         int16 activations under TFLite's and CMSIS-NN's int16 kernel families
lower_tosa16.py       TOSA's 16x8 layers (int48 accumulator and bias, scale16 RESCALE)
requantize16.py       TFLite's 16-bit-multiplier requantization of int64 accumulators
rescale48.py          TOSA's RESCALE of int48 values and its int48 range requirements
kernels/              the `int_*` ops of integer graphs
run.py                `run_int`, the integer-faithful simulation (`faithful_graph`, `run_faithful`)
mixed.py              float segments (int_dequantize -> float32 kernels -> int_quantize) inside an
                      imported integer graph
compare.py            per-layer LSB differences of a profile against the faithful simulation

All integer work is exact (int64 NumPy arithmetic, or float64/int32 where a bound proves it); each
docstring states preconditions, rounding rule and source (../shared/reference/fixedpoint.md) and
proves the absence of overflow.
"""
from .multiplier import (MULTIPLIER_DERIVATIONS, SCALE_MATHS, derive_multiplier,
                         quantize_multiplier, quantize_multiplier_cmsis_generator, real_multiplier,
                         round_half_away_float, tosa_scale16, tosa_scale32)
from .compare import compare, format_compare
from .lowering import lower, lower_from_params
from .profile_table import describe_profiles
from .profiles import PROFILES, Profile, get_profile
from .requantize import (ACTIVATIONS, FLOAT_SCHEMES, INTEGER_SCHEMES, REQUANT_SCHEMES,
                         activation_range, apply_scale_16, apply_scale_32, float_scale_round,
                         multiply_by_quantized_multiplier, quantize, requantize)
from .rounding import (INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, OVERFLOW_POLICIES,
                       ROUNDING_MODES, apply_overflow_policy, floor_shift, round_shift_half_away,
                       round_shift_half_even, round_shift_half_up, rounding_divide_by_pot,
                       rounding_right_shift, saturate, srdhm, wrap)
from .run import faithful_graph, run_faithful, run_int

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
    # lowering, integer runs and comparison
    "lower", "lower_from_params", "run_int", "run_faithful", "faithful_graph", "compare",
    "format_compare",
]
