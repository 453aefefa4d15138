"""A forked twin of this process that computes part of a batch while this process computes the rest.

Why processes: NumPy releases the GIL inside a loop, but a thread leaving the loop must take the GIL
back, and the hand-over costs tens of microseconds. The elementwise passes of a forward pass over
a cache-sized block (fake quantization, the depthwise taps, epilogues) last a few microseconds
each, so two threads spend most of their time waiting for each other: measured on a 2-core
machine, a multiply pass over 52K float32 values takes 0.088 ns per value on one thread and 0.28
on each of two threads, and fake quantization 0.55 against 1.55, whereas two processes run at
0.57 each. A process has its own interpreter, hence its own GIL.

`Twin(fn, shared_bytes)` forks once. The child holds everything this process held at the fork (a
plan, its parameters, its hooks), runs BLAS on one thread, and serves requests until its pipe
closes: `submit(arrays, *args)` copies the arrays (the feeds of the twin's share of a batch) into a
memory region that both processes map (an anonymous shared mapping of `shared_bytes`, made before
the fork), where the child reads them in place, and sends the other arguments over the pipe
(pickled, between two processes of this run; no file is read); arrays that do not fit the region
go through the pipe too. `result()` waits for fn(arrays, *args), returned through the pipe. The
child exits when `close()` is called, when its owner is garbage-collected (`for_owner`), when this
process exits, or on SIGKILL; it never runs this process's exit handlers.

The twin is an accelerator only: `result()` returns None instead of a value whenever the child
could not give exactly what this process would compute — fn raised, a warning was issued, the
child died, the reply could not be read — and the caller then computes that part itself, which
raises the same error or warning, under the caller's own filters. A twin that has not replied
long after this process finished its own share (REPLY_WAIT_FACTOR times as long, and at least
REPLY_WAIT_SECONDS) is taken for hung — a child forked while another thread held a lock it then
needs waits forever — and is closed; its share is computed here. Each request carries NumPy's
error state of the caller (`np.geterr()`), which the child applies. fn must be deterministic and
free of side effects that the caller relies on (it runs in another process).

At most MAX_TWINS children live at once; forking another closes the least recently used. A
process forked later (by `refq.parallel`, say) closes its copies of the pipes at once, so that a
twin still sees its pipe close when its owner goes.
"""
from __future__ import annotations

import mmap
import os
import signal
import sys
import threading
import time
import warnings
import weakref

import numpy as np

__all__ = ["Twin", "alongside", "available", "for_owner", "MAX_TWINS"]

#: Live twin processes at most (the benchmark alternates four plans; each twin holds the working
#: memory of its share of a batch).
MAX_TWINS = 6

#: How long `alongside` waits for the twin's reply once its own share is done: this many times
#: the time its own share took, and at least REPLY_WAIT_SECONDS.
REPLY_WAIT_FACTOR = 8.0
REPLY_WAIT_SECONDS = 20.0

_LIVE: list = []   # live twins, least recently used first
_LOCK = threading.Lock()


def available() -> bool:
    """A twin can be forked here: fork exists and this is not itself a forked worker."""
    from . import parallel
    return hasattr(os, "fork") and not parallel._IN_WORKER


class Twin:
    """A forked child computing fn(arrays, *args) on request (module docstring)."""

    def __init__(self, fn, shared_bytes: int = 0):
        import multiprocessing as mp

        mine, theirs = mp.Pipe()
        self.capacity = int(shared_bytes)
        self._region = mmap.mmap(-1, self.capacity, flags=mmap.MAP_SHARED) \
            if self.capacity else None
        sys.stdout.flush()   # a child would otherwise write what this process buffered
        sys.stderr.flush()
        with _LOCK:
            while len(_LIVE) >= MAX_TWINS:
                _LIVE.pop(0)._close()
            pid = os.fork()
            if pid == 0:   # pragma: no cover (the child; its results are checked by the tests)
                mine.close()
                _serve(theirs, fn, self._region)
            theirs.close()
            self.pid, self._conn, self._busy = pid, mine, threading.Lock()
            self._pending = False
            _LIVE.append(self)

    @property
    def alive(self) -> bool:
        return self._conn is not None

    def acquire(self) -> bool:
        """Reserve the twin for one submit/result pair; False when another thread holds it."""
        return self.alive and self._busy.acquire(blocking=False)

    def submit(self, arrays: list, *args) -> bool:
        """Send a request; False when it could not be sent (the twin is then closed)."""
        with _LOCK:
            if self in _LIVE:
                _LIVE.remove(self)
                _LIVE.append(self)
        try:
            self._conn.send((self._place(arrays), args, np.geterr()))
        except Exception:
            self.close()
            return False
        self._pending = True
        return True

    def _place(self, arrays: list) -> list:
        """The arrays as the child finds them: (offset, shape, dtype) in the shared region when
        they all fit, else the arrays themselves."""
        offsets, end = [], 0
        for a in arrays:
            offsets.append(end)
            end += -(-a.nbytes // 64) * 64
        if end > self.capacity:
            return [np.ascontiguousarray(a) for a in arrays]
        for a, at in zip(arrays, offsets):
            view = np.frombuffer(self._region, a.dtype, a.size, at).reshape(a.shape)
            np.copyto(view, a)
            del view   # no view may outlive the request: the region is closed with the twin
        return [(at, a.shape, a.dtype.str) for a, at in zip(arrays, offsets)]

    def result(self, timeout: float | None = None):
        """fn(arrays, *args) of the last request, or None (module docstring). Releases the
        reservation. With `timeout` (seconds), a twin that has not replied by then is closed.
        An interrupt while waiting closes the twin (its reply would come out of turn)."""
        try:
            if not self._pending or self._conn is None:
                return None
            self._pending = False
            if timeout is not None and not self._conn.poll(timeout):
                self.close()
                return None
            status, value = self._conn.recv()
        except Exception:
            self.close()
            return None
        except BaseException:
            self.close()
            raise
        finally:
            if self._busy.locked():
                self._busy.release()
        return value if status == "ok" else None

    def close(self):
        """End the child (SIGKILL: it holds nothing to clean up) and reap it."""
        with _LOCK:
            if self in _LIVE:
                _LIVE.remove(self)
            self._close()

    def _close(self):
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        if self._region is not None:
            self._region.close()


def alongside(mate, arrays: list, args: tuple, theirs, ours):
    """(their result, our result): the twin `mate` (reserved with `acquire`) computes
    fn(arrays, *args) while this process computes ours(), both on one BLAS thread; theirs()
    computes the twin's part here when it gives no result (module docstring). The twin's part
    comes first in batch order, so an error of ours() is raised after theirs() had its turn to
    raise; the twin's reply is always read (or the twin closed), so that the next request finds
    the pipe empty."""
    from .parallel import single_blas_thread

    mate.submit(arrays, *args)
    result, error = None, None
    with single_blas_thread():
        started = time.perf_counter()
        try:
            result = ours()
        except Exception as e:
            error = e
        finally:
            took = time.perf_counter() - started
            theirs_value = mate.result(max(REPLY_WAIT_SECONDS, REPLY_WAIT_FACTOR * took))
        if theirs_value is None:
            theirs_value = theirs()
    if error is not None:
        raise error
    return theirs_value, result


def for_owner(owner, key, make_fn, keep=(), shared_bytes: int = 0):
    """The twin of `owner` (an object with a `_twins` dict) for `key`, forked with make_fn() when
    it has none alive whose shared region holds `shared_bytes` (then with twice that, so that a
    slightly larger batch fits too), or None when no process can be forked now (the caller then
    computes everything itself); closed when the owner is garbage-collected. `keep`: objects
    whose ids the key holds, kept alive with the twin so that no other object takes their ids."""
    entry = owner._twins.get(key)
    if entry is not None and entry[0].alive:
        if entry[0].capacity >= shared_bytes:
            return entry[0]
        entry[0].close()
    try:
        twin = Twin(make_fn(), 2 * shared_bytes)
    except OSError:   # no memory or no process left for a fork
        return None
    owner._twins[key] = (twin, keep)
    weakref.finalize(owner, twin.close)
    return twin


def _serve(conn, fn, region):   # pragma: no cover (runs in the child)
    """The child: one BLAS thread, no batch threads, requests until the pipe closes."""
    try:
        from . import parallel

        signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles an interrupt
        parallel._IN_WORKER = True
        fns = parallel._openblas()
        if fns is not None:
            fns[1](1)
        while True:
            try:
                placed, args, err = conn.recv()
            except BaseException:
                break
            try:
                arrays = [a if isinstance(a, np.ndarray) else
                          np.frombuffer(region, np.dtype(a[2]), int(np.prod(a[1])),
                                        a[0]).reshape(a[1]) for a in placed]
                with warnings.catch_warnings(record=True) as seen, np.errstate(**err):
                    warnings.simplefilter("always")
                    value = fn(arrays, *args)
                reply = ("ok", value) if not seen else ("redo", None)
            except BaseException:
                reply = ("redo", None)
            arrays = None
            try:
                conn.send(reply)
            except BaseException:
                try:
                    conn.send(("redo", None))
                except BaseException:
                    break
    finally:
        os._exit(0)


def _after_fork_in_child():
    """A process forked after the twins: drop its copies of their pipes and shared regions (it
    never uses them, and the regions' memory is freed only when no process maps them)."""
    global _LOCK
    _LOCK = threading.Lock()   # another thread may have held it at the fork
    for twin in _LIVE:
        if twin._conn is not None:
            twin._conn.close()   # this child's copy of the descriptor
            twin._conn = None
        if twin._region is not None:
            try:
                twin._region.close()
            except BufferError:   # a view of the parent's was alive at the fork
                pass
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
