"""The twin process (refq.twin): a run that sends half its batch to a forked twin returns what the
threads return, bit for bit (float, simulated and integer forwards), raises the same errors and
warnings, survives a twin that died, and leaves no process behind."""
from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import refq
from refq import plan as plan_module, twin
from refq.algorithms import fold_batch_norms
from refq.fixedpoint.lowering import lower
from refq.fixedpoint.run import IntPlan
from refq.plan import Plan
from refq.quant.quantsim import QuantSim

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from architectures import ARCHITECTURES  # noqa: E402

pytestmark = pytest.mark.skipif(not twin.available(), reason="needs os.fork")
RNG = np.random.default_rng(11)


def same_bits(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def twins_of(owner) -> list:
    return [t for t, _ in owner._twins.values() if t.alive]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def small_runs(monkeypatch):
    """Every run is large enough for a twin, and both cores are used."""
    monkeypatch.setattr(plan_module, "TWIN_MIN_VALUES", 0)
    monkeypatch.setattr(refq.parallel, "WORKERS", 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


@pytest.fixture(scope="module")
def model():
    g = ARCHITECTURES["mobilenet_v2_0.35_96"].build(resolution=32)
    return g, RNG.standard_normal((7, 32, 32, 3)).astype(np.float32)


def chunked(graph, dtype=np.float32, **kw):
    p = Plan(graph, dtype, **kw)
    p.chunk_images = 2   # 4 chunks for 7 images: 2 here, 2 in the twin
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_run_with_a_twin_equals_the_threads(small_runs, model, dtype):
    g, x = model
    plan = chunked(g, dtype)
    with_twin = plan.run(x)
    assert len(twins_of(plan)) == 1
    same_bits(with_twin, plan.run(x, processes=False))
    same_bits(with_twin, plan.run(x, threads=1))
    same_bits(plan.run(x), with_twin)   # the twin is kept and serves again
    assert len(twins_of(plan)) == 1


def test_no_twin_for_small_runs_traces_batches_or_hooks(model, small_runs, monkeypatch):
    g, x = model
    plan = chunked(g)
    plan.run(x, trace=True)
    plan.run(x, batch_size=2)
    plan.run(x, tensor_hooks={g.outputs[0]: lambda a: a})
    plan.run(x, on_tensor=lambda name, a: a)
    plan.run(x[:1])
    assert twins_of(plan) == []
    monkeypatch.setattr(plan_module, "TWIN_MIN_VALUES", 7 * plan.values_per_image + 1)
    plan.run(x)
    assert twins_of(plan) == []


def test_simulation_with_a_twin_equals_the_threads(small_runs, model):
    g, x = model
    folded, _ = fold_batch_norms(g)
    sim = QuantSim(folded, "per_channel", scheme="minmax")
    sim.compute_encodings([x])
    sp = sim.plan()
    sp.plan.chunk_images = 2
    with_twin = sp.run(x)
    assert len(twins_of(sp.plan)) == 1
    same_bits(with_twin, sp.plan.run(x, processes=False, **sp.hooks))
    same_bits(with_twin, sim.run(x))


def test_integer_run_with_a_twin_equals_one_process(small_runs, model, monkeypatch):
    g, x = model
    folded, _ = fold_batch_norms(g)
    sim = QuantSim(folded, "per_channel", scheme="minmax")
    sim.compute_encodings([x])
    ip = IntPlan(lower(sim, "tflite"))
    ip.plan.chunk_images = 2
    out, stats = ip.run(x)
    assert len(twins_of(ip)) == 1
    monkeypatch.setattr(plan_module, "TWIN_MIN_VALUES", 1 << 62)
    out1, stats1 = ip.run(x)
    same_bits(out, out1)
    assert stats == stats1
    # the accumulator extremes of the second half reach the statistics
    _, stats_second = IntPlan(ip.graph).run(x[4:])
    for name, s in stats_second.items():
        assert stats[name]["max_abs_acc"] >= s["max_abs_acc"]
    assert any(stats[k]["max_abs_acc"] == s["max_abs_acc"] > IntPlan(ip.graph).run(x[:4])[1][k][
        "max_abs_acc"] for k, s in stats_second.items())


def test_an_error_in_the_twins_half_is_raised_as_without_it(small_runs, model):
    g, x = model
    plan = chunked(g)
    bad = x.copy()
    bad[6] = 3e38
    with np.errstate(all="raise"):
        with pytest.raises(FloatingPointError) as with_twin:
            plan.run(bad)
        with pytest.raises(FloatingPointError) as threads:
            plan.run(bad, processes=False)
    assert str(with_twin.value) == str(threads.value)
    assert len(twins_of(plan)) == 1      # still serving
    same_bits(plan.run(x), plan.run(x, processes=False))


def test_a_hook_error_in_the_twins_half(small_runs, model):
    g, x = model
    plan = chunked(g)

    def hook(a):
        if np.abs(a).max() > 1e30:
            raise ValueError("hook refuses a value above 1e30")
        return a

    bad = x.copy()
    bad[6] = 1e35                       # in the last chunk, the twin's
    hooks = {g.inputs[0].name: hook}
    with pytest.raises(ValueError, match="above 1e30"):
        plan.run(bad, processes=True, tensor_hooks=hooks)
    assert len(twins_of(plan)) == 1
    same_bits(plan.run(x, processes=True, tensor_hooks=hooks),
              plan.run(x, processes=False, tensor_hooks=hooks))


def test_a_warning_in_the_twins_half_reaches_the_caller(small_runs, model):
    g, x = model
    plan = chunked(g)
    bad = x.copy()
    bad[6] = 3e38
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        plan.run(bad)
    assert any(issubclass(w.category, RuntimeWarning) and "overflow" in str(w.message)
               for w in seen)


def test_a_dead_twin_is_replaced_and_the_result_unchanged(small_runs, model):
    g, x = model
    plan = chunked(g)
    first = plan.run(x)
    (mate,) = twins_of(plan)
    os.kill(mate.pid, signal.SIGKILL)
    os.waitpid(mate.pid, 0)
    same_bits(plan.run(x), first)     # computed here when the twin gives no answer
    same_bits(plan.run(x), first)
    (again,) = twins_of(plan)
    assert again.pid != mate.pid


def test_twins_end_with_their_plan_and_are_bounded(small_runs, model, monkeypatch):
    import gc

    g, x = model
    plan = chunked(g)
    plan.run(x)
    (mate,) = twins_of(plan)
    del plan
    gc.collect()
    assert gone(mate.pid)
    monkeypatch.setattr(twin, "MAX_TWINS", 2)
    plans = [chunked(g) for _ in range(3)]
    for p in plans:
        p.run(x)
    assert [len(twins_of(p)) for p in plans] == [0, 1, 1]
    same_bits(plans[0].run(x), plans[1].run(x))   # the first one forks again


def test_a_twin_ends_when_its_pipe_closes_even_after_a_later_fork(small_runs, model):
    """A process forked after the twin drops its copy of the twin's pipe, so closing the pipe here
    (as this process's exit does) ends the twin."""
    g, x = model
    plan = chunked(g)
    plan.run(x)
    (mate,) = twins_of(plan)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.read(r, 1)
        os._exit(0)
    try:
        mate._conn.close()
        for _ in range(200):
            if os.waitpid(mate.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the twin did not end when its pipe closed")
    finally:
        os.write(w, b"x")
        os.waitpid(child, 0)
        mate._conn = None
