"""Progress of long work, on stderr: a bar on a terminal, one line per finished stage elsewhere.

    for batch in progress(batches, total=n, desc="calibration", quiet=quiet, line=True): ...
    with stage("data-free W6A8", quiet=quiet) as s:
        ...
        s.detail = "5 simulations"          # optional, printed before the time
    s.wall, s.cpu                           # seconds, set when the block ends

Rules (stderr is where progress goes; stdout keeps the results):
- quiet=True: nothing is shown, by either helper.
- stderr is a terminal: `progress` shows a tqdm bar that disappears when the loop ends (nothing
  without tqdm); `stage` prints nothing (the bars show the activity).
- stderr is not a terminal (a log, a pipe, CI): one line per finished `stage`:
  `refq: <name>: <detail> in <t> s`; a `progress` loop prints nothing while it runs and, when the
  caller asks for it (line=True), one line once it has finished: `refq: <desc>: <k> batches,
  <n> samples in <t> s` (samples counted when the items are arrays or dicts of arrays, as batches
  of inputs are; `<k> steps` for other items). The `refq` command turns on `loop_lines()`, which
  gives that line to every loop that ran at least `MIN_LOOP_SECONDS`; library calls stay silent
  by default, so that stderr off a terminal holds only what the caller chose to say (its stages,
  its one error line). A loop or stage left by an exception prints nothing: the error is the line that matters
  then.
Elapsed times are wall-clock (`time.perf_counter`); `stage` also measures the process CPU time
(`time.process_time`, all threads), which a loaded machine does not inflate.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager

__all__ = ["progress", "stage", "Stage", "on_terminal", "loop_lines", "plural", "MIN_LOOP_SECONDS"]

MIN_LOOP_SECONDS = 1.0  # with loop_lines() on, loops shorter than this print no line
_LOOP_LINES = [False]


def loop_lines(enabled: bool = True) -> None:
    """Off a terminal, let every `progress` loop lasting at least MIN_LOOP_SECONDS print its
    finished line (the `refq` command does this; the default for library calls is off)."""
    _LOOP_LINES[0] = bool(enabled)


def on_terminal() -> bool:
    """True when stderr is an interactive terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _line(text: str) -> None:
    print(f"refq: {text}", file=sys.stderr, flush=True)


def _samples(item) -> int | None:
    """The batch size of an array or a dict of arrays ({input: array}); None for anything else."""
    if isinstance(item, dict):
        item = next(iter(item.values()), None)
    shape = getattr(item, "shape", None)
    return int(shape[0]) if shape else None


def plural(n: int, word: str) -> str:
    """"1 batch", "2 batches", "0 samples": `n` and `word`, plural unless n is 1."""
    return f"{n} {word}" if n == 1 else f"{n} {word}es" if word.endswith("ch") else f"{n} {word}s"


def _counted(iterable, desc: str, unit: str | None, min_seconds: float = 0.0):
    t0 = time.perf_counter()
    steps, samples = 0, 0
    for item in iterable:
        n = _samples(item)
        samples = None if n is None or samples is None else samples + n
        steps += 1
        yield item
    elapsed = time.perf_counter() - t0
    if elapsed < min_seconds:
        return
    what = plural(steps, unit or ("batch" if samples is not None else "step"))
    if samples is not None and steps:
        what += ", " + plural(samples, "sample")
    _line(f"{desc or 'progress'}: {what} in {elapsed:.1f} s")


def progress(iterable, total=None, desc="", quiet=False, unit: str | None = None,
             line: bool = False):
    """`iterable`, wrapped for progress display (module docstring): a tqdm bar on a terminal;
    off a terminal, with line=True, one line when it is exhausted; `iterable` itself otherwise
    and with quiet=True. unit names what one item is in that line, singular (default "batch" for
    arrays and dicts of arrays, else "step")."""
    if quiet:
        return iterable
    if not on_terminal():
        if line:
            return _counted(iterable, desc, unit)
        return _counted(iterable, desc, unit, MIN_LOOP_SECONDS) if _LOOP_LINES[0] else iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr)


class Stage:
    """What `stage` measured: name, detail (set by the caller), wall and cpu seconds."""

    def __init__(self, name: str):
        self.name, self.detail = name, ""
        self.wall = self.cpu = 0.0


@contextmanager
def stage(name: str, quiet: bool = False):
    """Time a named stage of work; yield a `Stage` whose `detail` the block may set. When the
    block ends normally its wall and CPU seconds are set and, unless quiet or on a terminal, one
    line `refq: <name>: <detail> in <t> s` goes to stderr."""
    s = Stage(name)
    t0, c0 = time.perf_counter(), time.process_time()
    yield s
    s.wall, s.cpu = time.perf_counter() - t0, time.process_time() - c0
    if not quiet and not on_terminal():
        _line(f"{name}: {s.detail + ' ' if s.detail else ''}in {s.wall:.1f} s")
