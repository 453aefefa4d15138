"""Independent jobs on both cores: BLAS on one thread, jobs in forked worker processes.

`single_blas_thread()` runs a block with one OpenBLAS thread and restores the count after: the
matrix products of a forward pass over small images are skinny (at most a few hundred columns),
where a second OpenBLAS thread costs twice the CPU time for no gain and, on a loaded machine, its
spinning threads slow the run several-fold. OpenBLAS computes each output element of a product
with the same kernel and summation order whatever the thread count, so no number changes. The
library is found among the shared objects the process loaded (/proc/self/maps); where it is not
an OpenBLAS that can be found, nothing changes.

`parallel(jobs)` runs deterministic zero-argument jobs in WORKERS forked processes, each with one
BLAS thread, and yields their results as they finish; where they run changes no number. Results
come back from the workers through multiprocessing's pipe (Python's own serialisation between
processes of this run; no file is read).
"""
from __future__ import annotations

import ctypes
import os
import sys
import time
from contextlib import contextmanager

from .progress import progress

__all__ = ["single_blas_thread", "parallel", "timed", "children_cpu", "WORKERS"]


def _openblas():
    """The OpenBLAS library NumPy loaded, with its set/get thread-count functions, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower()
                            and line.split()[-1].startswith("/")})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", ""), ("scipy_openblas", "")):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                return get, put
    return None


@contextmanager
def single_blas_thread():
    """Run the block with one OpenBLAS thread, then restore the previous count (module docstring,
    Speed). Does nothing where NumPy's BLAS is not an OpenBLAS that can be found."""
    fns = _openblas()
    if fns is None:
        yield
        return
    get, put = fns
    before = get()
    put(1)
    try:
        yield
    finally:
        put(before)


#: Worker processes for independent jobs (the machine refq's demo is sized for has 2 cores).
WORKERS = 2
_JOBS: list = []   # the parallel section's jobs, inherited by the forked workers


def timed(job):
    """(job(), its wall seconds, its CPU seconds)."""
    t, c = time.perf_counter(), time.process_time()
    result = job()
    return result, time.perf_counter() - t, time.process_time() - c


def _run_job(i: int):
    with single_blas_thread():
        return timed(_JOBS[i])


def children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def parallel(jobs: list, desc: str, quiet: bool):
    """Yield (index, (result, wall s, CPU s)) of the zero-argument callables `jobs` as they
    finish, computed in WORKERS forked processes (each with one BLAS thread), or in this process,
    in order, where fork is not available. The jobs are independent and deterministic, so where they run changes
    no number. quiet: no progress display."""
    import concurrent.futures as cf
    import multiprocessing as mp

    global _JOBS
    if WORKERS < 2 or "fork" not in mp.get_all_start_methods():
        for i, job in enumerate(progress(jobs, total=len(jobs), desc=desc, quiet=quiet)):
            yield i, timed(job)
        return
    _JOBS = list(jobs)
    sys.stdout.flush()   # a forked worker flushes what it inherited: nothing, then
    sys.stderr.flush()
    try:
        with cf.ProcessPoolExecutor(WORKERS, mp_context=mp.get_context("fork")) as pool:
            futures = {pool.submit(_run_job, i): i for i in range(len(jobs))}
            try:
                for f in progress(cf.as_completed(futures), total=len(jobs), desc=desc,
                                  quiet=quiet, unit="job"):
                    yield futures[f], f.result()
            except BaseException:   # a job failed (or an interrupt): start no other job
                for f in futures:
                    f.cancel()
                raise
    finally:
        _JOBS = []
