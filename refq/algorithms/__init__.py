"""Algorithms: functions `Graph -> (Graph, report)` that never mutate their input.

- `fold_batch_norms` (bn_fold): fold batch_norm into the neighbouring conv2d/dense.
- `equalize` (cle): cross-layer equalization with high-bias absorption.
- `correct_bias` (bias_correction): empirical and analytical bias correction.
"""
from .bn_fold import fold_batch_norms
from .cle import equalize

__all__ = ["fold_batch_norms", "equalize"]
