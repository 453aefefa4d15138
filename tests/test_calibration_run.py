"""A calibration keeps its plan and hooks for the next one (refq.quant.calibration_run): reused
exactly when nothing they were built from changed, and every calibration gives the encodings a new
simulation gives, whatever was reused."""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import refq
from refq import plan as plan_module, twin
from refq.algorithms import fold_batch_norms
from refq.quant import observers
from refq.quant.quantsim import QuantSim

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from architectures import ARCHITECTURES  # noqa: E402

RNG = np.random.default_rng(5)


@pytest.fixture(scope="module")
def model():
    g = ARCHITECTURES["mobilenet_v2_0.35_96"].build(resolution=32)
    folded, _ = fold_batch_norms(g)
    return folded, RNG.standard_normal((6, 32, 32, 3)).astype(np.float32)


def encodings_of(sim) -> dict:
    return {n: (e.scale.tobytes(), e.zero_point.tobytes()) for n, e in sim.encodings.items()}


def fresh(graph, data, **kw) -> QuantSim:
    return QuantSim(graph, "per_channel", scheme="minmax", **kw).compute_encodings(data)


def test_a_second_calibration_reuses_the_plan_and_gives_a_new_sims_encodings(model):
    g, x = model
    sim = fresh(g, [x])
    first = sim._calibration
    sim.compute_encodings([x[::-1] * 2, x[:2]])
    assert sim._calibration is first
    assert encodings_of(sim) == encodings_of(fresh(g, [x[::-1] * 2, x[:2]]))


def test_a_changed_weight_gets_a_new_plan(model):
    g, x = model
    sim = fresh(g, [x])
    first = sim._calibration
    node = next(n for n in sim.graph.nodes if n.op == "conv2d")
    node.params["bias"][0] += 1.0       # a parameter that no quantizer replaces, changed in place
    sim.compute_encodings([x])
    assert sim._calibration is not first
    changed = g.copy()
    changed.node(node.name).params["bias"][0] += 1.0
    assert encodings_of(sim) == encodings_of(fresh(changed, [x]))


def test_a_disabled_weight_quantizer_or_another_scheme_gets_a_new_plan(model):
    g, x = model
    sim = fresh(g, [x])
    first = sim._calibration
    name = next(n for n, q in sim.quantizers.items() if q.kind == "param")
    sim.enabled[name] = False
    sim.compute_encodings([x])
    second = sim._calibration
    assert second is not first
    other = QuantSim(g, "per_channel", scheme="minmax")
    other.enabled[name] = False
    assert encodings_of(sim) == encodings_of(other.compute_encodings([x]))
    sim.scheme = "tf_enhanced"
    sim.compute_encodings([x])
    assert sim._calibration is not second
    other = QuantSim(g, "per_channel", scheme="tf_enhanced")
    other.enabled[name] = False
    assert encodings_of(sim) == encodings_of(other.compute_encodings([x]))


def test_a_copy_leaves_the_calibration_plan_behind(model):
    g, x = model
    sim = fresh(g, [x])
    copied = copy.deepcopy(sim)
    assert copied._calibration is None and sim._calibration is not None
    assert encodings_of(copied.compute_encodings([x])) == encodings_of(sim)


@pytest.mark.skipif(not twin.available(), reason="needs os.fork")
def test_the_twin_of_a_calibration_serves_the_next_one(model, monkeypatch):
    g, x = model
    monkeypatch.setattr(plan_module, "TWIN_MIN_VALUES", 0)
    monkeypatch.setattr(plan_module, "CHUNK_BYTES", 1)   # one image per chunk
    monkeypatch.setattr(refq.parallel, "WORKERS", 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(observers, "TWIN_AFTER_BATCHES", 1)
    forked, requests = [], []
    real_twin, real_submit = twin.Twin, twin.Twin.submit

    def counted(*args, **kwargs):
        forked.append(1)
        return real_twin(*args, **kwargs)

    def submit(self, *args):
        requests.append(1)
        return real_submit(self, *args)

    monkeypatch.setattr(real_twin, "submit", submit)
    monkeypatch.setattr(twin, "Twin", counted)
    sim = QuantSim(g, "per_tensor", scheme="minmax")
    sim.compute_encodings([x, x[::-1] * 1.5])
    assert len(forked) == 1 and len(requests) == 1     # the second batch
    sim.compute_encodings([x * 0.5])   # one batch: in the twin already
    assert len(forked) == 1 and len(requests) == 2
    monkeypatch.setattr(plan_module, "TWIN_MIN_VALUES", 1 << 62)
    here = QuantSim(g, "per_tensor", scheme="minmax").compute_encodings([x * 0.5])
    assert encodings_of(sim) == encodings_of(here)
