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
from refq.quant import observers
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
    monkeypatch.setattr(plan_module, "TWIN_AFTER_RUNS", 0)
    monkeypatch.setattr(refq.parallel, "WORKERS", 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)


@pytest.fixture(scope="module")
def model():
    g = ARCHITECTURES["mobilenet_v2_0.35_96"].build(resolution=32)
    return g, RNG.standard_normal((7, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def sim(model):
    g, x = model
    folded, _ = fold_batch_norms(g)
    sim = QuantSim(folded, "per_channel", scheme="minmax")
    sim.compute_encodings([x])
    return sim


def int_plan(sim) -> IntPlan:
    ip = IntPlan(lower(sim, "tflite"))
    ip.plan.chunk_images = 2
    return ip


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


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batches_alternate_between_the_twin_and_this_process(small_runs, model, batch_size):
    g, x = model
    plan = chunked(g)
    with_twin = plan.run(x, batch_size=batch_size)
    assert len(twins_of(plan)) == 1
    same_bits(with_twin, plan.run(x, batch_size=batch_size, processes=False))


def test_no_twin_for_small_runs_traces_or_hooks(model, small_runs, monkeypatch):
    g, x = model
    plan = chunked(g)
    plan.run(x, trace=True)
    plan.run(x, tensor_hooks={g.outputs[0]: lambda a: a})
    plan.run(x, on_tensor=lambda name, a: a)
    plan.run(x[:1])
    assert twins_of(plan) == []
    monkeypatch.setattr(plan_module, "TWIN_MIN_VALUES", 7 * plan.values_per_image + 1)
    plan.run(x)
    monkeypatch.setattr(plan_module, "TWIN_MIN_VALUES", 4 * plan.values_per_image + 1)
    plan.run(x, batch_size=2)       # batches too small for the round trips
    assert twins_of(plan) == []


def test_simulation_with_a_twin_equals_the_threads(small_runs, model, sim):
    g, x = model
    sp = sim.plan()
    sp.plan.chunk_images = 2
    with_twin = sp.run(x)
    assert len(twins_of(sp.plan)) == 1
    same_bits(with_twin, sp.plan.run(x, processes=False, **sp.hooks))
    same_bits(with_twin, sim.run(x))


def test_integer_run_with_a_twin_equals_one_process(small_runs, model, sim, monkeypatch):
    g, x = model
    ip = int_plan(sim)
    out, stats = ip.run(x)
    assert len(twins_of(ip)) == 1
    monkeypatch.setattr(plan_module, "TWIN_MIN_VALUES", 1 << 62)
    out1, stats1 = ip.run(x)
    same_bits(out, out1)
    assert stats == stats1
    # the statistics are the maxima over both shares: the twin's (images 0-3) and this process's
    _, first = IntPlan(ip.graph).run(x[:4], trace=True)
    _, second = IntPlan(ip.graph).run(x[4:], trace=True)
    for name, s in stats.items():
        assert s["max_abs_acc"] == max(first[name]["max_abs_acc"], second[name]["max_abs_acc"])
    assert any(first[k]["max_abs_acc"] > second[k]["max_abs_acc"] for k in stats)


@pytest.mark.parametrize("batch_size", [None, 2])
@pytest.mark.parametrize("bad_images", [[0], [6], [0, 6]])
def test_an_error_in_either_share_is_raised_as_without_the_twin(small_runs, model, batch_size,
                                                                  bad_images):
    """Image 0 is in the twin's share, image 6 in this process's: the first error in batch order
    is raised, as the threads raise it."""
    g, x = model
    plan = chunked(g)
    bad = x.copy()
    bad[bad_images] = 3e38
    with np.errstate(all="raise"):
        with pytest.raises(FloatingPointError) as with_twin:
            plan.run(bad, batch_size=batch_size)
        with pytest.raises(FloatingPointError) as threads:
            plan.run(bad, batch_size=batch_size, processes=False)
    assert str(with_twin.value) == str(threads.value)
    assert len(twins_of(plan)) == 1      # still serving
    same_bits(plan.run(x, batch_size=batch_size),
              plan.run(x, batch_size=batch_size, processes=False))


@pytest.mark.parametrize("batch_size", [None, 2])
@pytest.mark.parametrize("bad_images", [[0], [6], [0, 6]])
def test_a_hook_error_in_either_share(small_runs, model, batch_size, bad_images):
    """The message names the chunk's largest value, so it tells which chunk raised: the first in
    batch order, as without the twin."""
    g, x = model
    plan = chunked(g)

    def hook(a):
        if np.abs(a).max() > 1e30:
            raise ValueError(f"hook refuses {np.abs(a).max():.0e}")
        return a

    bad = x.copy()
    for i in bad_images:
        bad[i] = 1e35 * (i + 1)
    hooks = {g.inputs[0].name: hook}
    errors = []
    for processes in (True, False):
        with pytest.raises(ValueError, match="hook refuses") as e:
            plan.run(bad, batch_size=batch_size, processes=processes, tensor_hooks=hooks)
        errors.append(str(e.value))
    assert errors[0] == errors[1] == f"hook refuses {1e35 * (bad_images[0] + 1):.0e}"
    assert len(twins_of(plan)) == 1
    same_bits(plan.run(x, batch_size=batch_size, processes=True, tensor_hooks=hooks),
              plan.run(x, batch_size=batch_size, processes=False, tensor_hooks=hooks))


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


def test_a_twin_that_never_replies_is_closed_and_its_share_computed_here(monkeypatch):
    monkeypatch.setattr(twin, "REPLY_WAIT_SECONDS", 0.3)
    mate = twin.Twin(lambda arrays: time.sleep(3600))
    assert mate.acquire()
    started = time.perf_counter()
    theirs, ours = twin.alongside(mate, [np.zeros(3)], (), lambda: "theirs, here", lambda: "ours")
    assert (theirs, ours) == ("theirs, here", "ours")
    assert time.perf_counter() - started < 10
    assert not mate.alive and gone(mate.pid)


@pytest.mark.parametrize("bad_images", [[0], [6], [0, 6]])
def test_an_integer_run_raises_as_without_the_twin(small_runs, model, sim, monkeypatch,
                                                   bad_images):
    g, x = model
    ip = int_plan(sim)
    bad = x.copy()
    bad[bad_images] = np.nan
    errors = []
    for limit in (0, 1 << 62):
        monkeypatch.setattr(plan_module, "TWIN_MIN_VALUES", limit)
        with pytest.raises(refq.errors.RefqError) as e:
            ip.run(bad)
        errors.append((type(e.value), str(e.value)))
    assert errors[0] == errors[1]
    assert len(twins_of(ip)) == 1


def test_without_a_fork_the_run_is_computed_here(small_runs, model, monkeypatch):
    g, x = model
    plan = chunked(g)

    def no_fork():
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_fork)
    same_bits(plan.run(x), plan.run(x, processes=False))
    assert twins_of(plan) == []


def test_a_larger_batch_gets_a_larger_shared_region(small_runs, model):
    g, x = model
    plan = chunked(g)
    small = plan.run(x[:4])
    (first,) = twins_of(plan)
    big = np.concatenate([x] * 3)
    same_bits(plan.run(big), plan.run(big, processes=False))
    (second,) = twins_of(plan)
    assert second.capacity > first.capacity and gone(first.pid)
    same_bits(plan.run(x[:4]), small)     # the larger twin serves smaller batches
    assert twins_of(plan) == [second]


def test_calibration_with_a_twin_gives_the_same_encodings(small_runs, model, monkeypatch):
    """The observers' statistics of the twin's chunks come back with its outputs and are merged
    here: the encodings equal those of a calibration on one process."""
    g, x = model
    folded, _ = fold_batch_norms(g)
    batches = [x, x[::-1] * 1.5, x[:3] * 0.5]
    sims, forked = [], []
    real_twin = twin.Twin

    def counted(*args, **kwargs):
        forked.append(1)
        return real_twin(*args, **kwargs)

    monkeypatch.setattr(twin, "Twin", counted)
    monkeypatch.setattr(plan_module, "CHUNK_BYTES", 1)   # one image per chunk
    monkeypatch.setattr(observers, "TWIN_AFTER_BATCHES", 1)
    for limit in (0, 1 << 62):
        monkeypatch.setattr(plan_module, "TWIN_MIN_VALUES", limit)
        sim = QuantSim(folded, "per_tensor", scheme="minmax")
        sim.compute_encodings(batches)
        sims.append(sim)
        assert len(forked) == 1   # the first calibration used a twin, the second none
    names = sorted(n for n, q in sims[0].quantizers.items() if q.kind != "param")
    assert names
    for name in names:
        a, b = sims[0]._encoding(name), sims[1]._encoding(name)
        assert a.scale.tobytes() == b.scale.tobytes() and \
            a.zero_point.tobytes() == b.zero_point.tobytes(), name
    same_bits(sims[0].run(x), sims[1].run(x))


def test_a_plan_forks_its_twin_on_its_second_run_or_for_many_batches(small_runs, model,
                                                                     monkeypatch):
    g, x = model
    monkeypatch.setattr(plan_module, "TWIN_AFTER_RUNS", 1)
    plan = chunked(g)
    first = plan.run(x)
    assert twins_of(plan) == []      # a first run is computed on the threads
    same_bits(plan.run(x), first)
    assert len(twins_of(plan)) == 1
    many = chunked(g)
    big = np.concatenate([x, x])
    same_bits(many.run(big, batch_size=1), plan.run(big, batch_size=1, processes=False))
    assert len(twins_of(many)) == 1  # 14 batches: worth a twin from the first run
