"""Algorithms: functions `Graph -> (Graph, report)` that never mutate their input.

- `fold_batch_norms` (bn_fold): fold batch_norm into the neighbouring conv2d/dense.
- `equalize` (cle): cross-layer equalization with high-bias absorption.
- `correct_bias` (bias_correction): empirical and analytical bias correction.
- `prepare` (dfq): the three in order, as data-free quantization runs them.
- `seq_mse` (seq_mse), `adaround` (adaround): weight encodings and weight rounding learned on
  data for a QuantSim; `reestimate_bn_stats`, `fold_reestimated_bns` (bn_reestimation).
"""
from .bias_correction import correct_bias
from .bn_fold import fold_batch_norms
from .cle import equalize
from .dfq import prepare
from .adaround import adaround
from .bn_reestimation import fold_reestimated_bns, reestimate_bn_stats
from .seq_mse import seq_mse

__all__ = ["fold_batch_norms", "equalize", "correct_bias", "prepare", "seq_mse", "adaround",
           "reestimate_bn_stats", "fold_reestimated_bns"]
