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
import functools
import os
import sys
import time
from contextlib import contextmanager

from .progress import progress

__all__ = ["single_blas_thread", "parallel", "timed", "children_cpu", "WORKERS", "threads",
           "map_threads"]


@functools.lru_cache(maxsize=None)
def _openblas():
    """The OpenBLAS library NumPy loaded, with its set/get thread-count functions, or None (found
    once per process: reading /proc/self/maps takes milliseconds in a large process)."""
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


_IN_WORKER = False   # True in a forked worker, which has its own core: no threads there


def threads() -> int:
    """Threads for independent batch chunks (`map_threads`): WORKERS, or 1 in a forked worker of
    `parallel` or on a machine with a single core."""
    return 1 if _IN_WORKER else max(1, min(WORKERS, len(os.sched_getaffinity(0))
                                           if hasattr(os, "sched_getaffinity") else
                                           os.cpu_count() or 1))


def map_threads(fn, items: list, workers: int):
    """Yield fn(item) for every item, in order, computed on `workers` threads (NumPy releases the
    GIL in its loops) with one BLAS thread each, in a copy of the caller's context (NumPy's error
    state); in this thread when workers < 2 or there is one item. fn must not depend on the order
    in which items are computed. When an item raises, or the caller stops early, the items not
    started are cancelled and those running are waited for: no work of the call goes on after it
    (a fork while another thread is inside BLAS can deadlock the child or OpenBLAS itself)."""
    if workers < 2 or len(items) < 2:
        yield from map(fn, items)
        return
    import concurrent.futures as cf
    import contextvars

    context = contextvars.copy_context()   # e.g. np.errstate, which threads do not inherit
    with single_blas_thread():
        pool = _pool(workers)
        futures = [pool.submit(context.copy().run, fn, item) for item in items]
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()
            cf.wait(futures)


_POOLS: dict = {}   # {workers: ThreadPoolExecutor} of this process, kept across calls


def _pool(workers: int):
    """A thread pool of `workers` threads kept across calls, so that what a thread keeps (e.g. the
    depthwise kernel's scratch buffers) is reused; a forked child starts without the parent's."""
    import concurrent.futures as cf

    if workers not in _POOLS:
        _POOLS[workers] = cf.ThreadPoolExecutor(workers, thread_name_prefix="refq")
    return _POOLS[workers]


if hasattr(os, "register_at_fork"):   # the parent's threads do not exist in a forked child
    os.register_at_fork(after_in_child=_POOLS.clear)


def _run_job(i: int):
    global _IN_WORKER
    _IN_WORKER = True
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
