"""Timing helpers shared by the benchmarks in this folder."""
from __future__ import annotations

import os
import time

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def best_of(fn, repeats: int) -> float:
    """The minimum wall time of `repeats` calls of fn(), in seconds."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def blas_environment() -> str:
    """Which of the BLAS-kernel variables this machine may set are set, for the report."""
    return "BLAS environment: " + str({k: os.environ.get(k) for k in BLAS_VARS})
