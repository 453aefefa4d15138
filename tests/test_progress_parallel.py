"""Progress display off a terminal (refq.progress) and the demo's helpers (refq.demo): one line per
finished loop or stage on stderr, nothing with quiet, bars only on a terminal; BLAS thread limit
restored; parallel jobs give the sequential results in order."""
import re

import numpy as np
import pytest

from refq import parallel as par, progress as progress_mod
from refq.graph import Graph, Node, TensorSpec
from refq.progress import progress, stage
from refq.runtime import run

LINE = re.compile(r"^refq: (?P<what>.+) in \d+\.\d s$")


def _lines(err):
    return [line for line in err.splitlines() if line]


def test_progress_off_terminal_prints_one_line_when_the_loop_ends(capsys):
    batches = [np.zeros((3, 2)), {"x": np.zeros((2, 2))}]
    seen = []
    for b in progress(batches, total=2, desc="calibration", line=True):
        seen.append(b)
        assert capsys.readouterr().err == ""   # nothing while the loop runs
    assert len(seen) == 2
    (line,) = _lines(capsys.readouterr().err)
    assert LINE.match(line).group("what") == "calibration: 2 batches, 5 samples"


def test_progress_counts_steps_of_other_items(capsys):
    assert list(progress(range(4), desc="golden check", line=True)) == [0, 1, 2, 3]
    (line,) = _lines(capsys.readouterr().err)
    assert LINE.match(line).group("what") == "golden check: 4 steps"


@pytest.mark.parametrize("quiet, terminal", [(True, False), (True, True), (False, True)],
                         ids=["quiet", "quiet-on-terminal", "terminal"])
def test_progress_prints_no_line_when_quiet_or_on_a_terminal(capsys, monkeypatch, quiet,
                                                             terminal):
    monkeypatch.setattr(progress_mod, "on_terminal", lambda: terminal)
    assert list(progress([1, 2], total=2, desc="run", quiet=quiet, line=True)) == [1, 2]
    assert "refq:" not in capsys.readouterr().err


def test_progress_left_by_an_exception_prints_nothing(capsys):
    with pytest.raises(KeyError):
        for _ in progress([1, 2], desc="run", line=True):
            raise KeyError("x")
    assert capsys.readouterr().err == ""


def test_stage_off_terminal_prints_its_line_with_detail_and_time(capsys):
    with stage("data-free W6A8") as s:
        s.detail = "5 simulations"
    (line,) = _lines(capsys.readouterr().err)
    assert LINE.match(line).group("what") == "data-free W6A8: 5 simulations"
    assert s.wall >= 0 and s.cpu >= 0
    with stage("integer tflite"):
        pass
    assert LINE.match(_lines(capsys.readouterr().err)[0]).group("what") == "integer tflite:"


@pytest.mark.parametrize("quiet, terminal", [(True, False), (False, True)],
                         ids=["quiet", "terminal"])
def test_stage_silent_when_quiet_or_on_a_terminal(capsys, monkeypatch, quiet, terminal):
    monkeypatch.setattr(progress_mod, "on_terminal", lambda: terminal)
    with stage("W8A8", quiet=quiet) as s:
        sum(range(1000))
    assert capsys.readouterr().err == "" and s.wall > 0


def test_stage_left_by_an_exception_prints_nothing(capsys):
    with pytest.raises(ValueError):
        with stage("report"):
            raise ValueError("boom")
    assert capsys.readouterr().err == ""


def test_progress_without_line_stays_silent_off_terminal(capsys):
    """The default: a command's stderr holds only what it chose to say (stages, its error)."""
    g = Graph([TensorSpec("x", (None, 3))], ["y"], [Node("r", "relu", ["x"], ["y"])])
    y = run(g, np.arange(-5, 10, dtype=np.float32).reshape(5, 3), batch_size=2, quiet=False)["y"]
    assert y.shape == (5, 3)
    assert list(progress([1, 2], desc="calibration")) == [1, 2]
    assert capsys.readouterr().err == ""


def test_single_blas_thread_restores_the_thread_count():
    fns = par._openblas()
    if fns is None:
        pytest.skip("NumPy's BLAS is not a findable OpenBLAS")
    get, _ = fns
    before = get()
    with par.single_blas_thread():
        assert get() == 1
    assert get() == before


def test_parallel_jobs_give_the_sequential_results(monkeypatch):
    jobs = [lambda k=k: float(np.sqrt(k)) for k in range(5)]
    got = {i: r for i, (r, wall, cpu) in par.parallel(jobs, "test", quiet=True)}
    assert [got[i] for i in range(5)] == [float(np.sqrt(k)) for k in range(5)]
    monkeypatch.setattr(par, "WORKERS", 1)
    seq = list(par.parallel(jobs, "test", quiet=True))
    assert [i for i, _ in seq] == list(range(5)) and [r for _, (r, _, _) in seq] == \
        [got[i] for i in range(5)]
    assert all(wall >= 0 and cpu >= 0 for _, (_, wall, cpu) in seq)


def _fails():
    from refq.errors import QuantError

    raise QuantError("calibration batch 0: input 'x' holds NaN or Inf")


@pytest.mark.parametrize("workers", [2, 1], ids=["processes", "sequential"])
def test_a_failing_job_raises_its_error_in_the_caller(monkeypatch, workers):
    from refq.errors import QuantError

    monkeypatch.setattr(par, "WORKERS", workers)
    with pytest.raises(QuantError, match="holds NaN"):
        dict(par.parallel([lambda: 1.0, _fails, lambda: 2.0], "test", quiet=True))


def test_loop_lines_only_for_loops_that_last(capsys, monkeypatch):
    """With loop_lines() on (the `refq` command), a loop off a terminal prints its line only when
    it ran at least MIN_LOOP_SECONDS; counts are singular for one."""
    import refq.progress as pg

    monkeypatch.setattr(pg, "on_terminal", lambda: False)
    pg.loop_lines(True)
    try:
        list(pg.progress([np.zeros((1, 2))], desc="fast"))
        assert capsys.readouterr().err == ""
        monkeypatch.setattr(pg, "MIN_LOOP_SECONDS", 0.0)
        list(pg.progress([np.zeros((1, 2))], desc="calibration"))
        assert LINE.match(capsys.readouterr().err.strip()).group("what") == \
            "calibration: 1 batch, 1 sample"
    finally:
        pg.loop_lines(False)


def test_map_threads_leaves_no_item_running_after_an_error():
    """An item that raises while another one still runs: the call raises only after the running
    one has finished, and the items not started never start."""
    import time

    started, finished = [], []

    def fn(i):
        started.append(i)
        if i == 0:
            raise ValueError("item 0")
        time.sleep(0.3)
        finished.append(i)
        return i

    with pytest.raises(ValueError, match="item 0"):
        list(par.map_threads(fn, list(range(40)), 2))
    done = list(finished)
    time.sleep(0.5)
    assert finished == done and set(finished) == set(started) - {0}
    assert len(started) < 40
