"""Quantization: encodings (scale/zero-point math), fake quantization and encoding analyzers.

AIMET 2.42 numerics by default (`AIMET_V2`); `AIMET_V1` names the 1.x conventions. See
`refq.quant.numerics` for the named conventions, `refq.quant.encoding` for the grid and
(min, max) -> encoding rules, `refq.quant.analyzers`, `refq.quant.histogram` and `refq.quant.sqnr` for
calibration, `refq.quant.prequantized` for AIMET's pre-quantized weight detection,
`refq.quant.ste` for the gradients of fake quantization (straight-through estimator, range learning).
"""
from .analyzers import ANALYZERS, Analyzer, MinMaxAnalyzer, PercentileAnalyzer, make_analyzer
from .encoding import (AIMET_V1, AIMET_V2, PASS_THROUGH_BITWIDTH, Encoding, EncodingNumerics,
                       adjust_min_max, aimet_offset, check_bitwidth, dequantize, encoding_from_min_max,
                       encoding_from_range, integer_grid, minimum_scale, quantize, quantize_dequantize)
from .histogram import HistogramObserver
from .prequantized import detect_prequantized, prequantized_encoding
from .sqnr import SqnrAnalyzer, TfEnhancedAnalyzer
from .ste import LearnedRangeContext, fake_quant_ste, learned_range_forward, learned_range_vjp

__all__ = [
    "Encoding", "EncodingNumerics", "AIMET_V2", "AIMET_V1", "PASS_THROUGH_BITWIDTH",
    "check_bitwidth", "integer_grid", "minimum_scale", "adjust_min_max", "encoding_from_range",
    "encoding_from_min_max", "quantize", "dequantize", "quantize_dequantize", "aimet_offset",
    "Analyzer", "MinMaxAnalyzer", "PercentileAnalyzer", "SqnrAnalyzer", "TfEnhancedAnalyzer",
    "HistogramObserver", "make_analyzer", "ANALYZERS", "detect_prequantized", "prequantized_encoding",
    "fake_quant_ste", "learned_range_forward", "learned_range_vjp", "LearnedRangeContext",
]
