"""The benchmark architectures of bench/architectures.py: they build, validate and run at
a tiny resolution with finite, O(1) activations, and cost what the published figures say at the real
resolution (refq.summarize MACs; nothing is timed here)."""
import sys
from pathlib import Path

import numpy as np
import pytest

import refq
from refq.summary import summarize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from architectures import ARCHITECTURES, make_divisible  # noqa: E402

NAMES = sorted(ARCHITECTURES)
TINY = 32


@pytest.fixture(scope="module")
def tiny():
    """Each architecture built once at TINY x TINY."""
    return {name: ARCHITECTURES[name].build(resolution=TINY) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_builds_validates_and_runs_tiny(tiny, name):
    graph = tiny[name]
    graph.validate()
    assert graph.inputs[0].shape == (None, TINY, TINY, 3)
    x = np.random.default_rng(1).standard_normal((3, TINY, TINY, 3)).astype(np.float32)
    trace = refq.run(graph, x, dtype=np.float32, trace=True)
    probs = trace[graph.outputs[0]]
    assert probs.shape == (3, 1000)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # activations stay O(1): no tensor (before the softmax) collapses or explodes
    stds = {t: float(v.std()) for t, v in trace.items() if t != graph.outputs[0]}
    assert all(np.isfinite(list(stds.values())))
    assert 0.05 < min(stds.values()) and max(stds.values()) < 20, stds


@pytest.mark.parametrize("name", NAMES)
def test_batch_norms_are_not_trivial(tiny, name):
    graph = tiny[name]
    bns = [n for n in graph.nodes if n.op == "batch_norm"]
    assert bns
    for n in bns:
        p = n.params
        assert np.abs(p["mean"]).max() > 1e-3, n.name
        assert np.abs(p["variance"] - 1).max() > 1e-2, n.name
        assert np.abs(p["gamma"] - 1).max() > 1e-2 and np.abs(p["beta"]).max() > 1e-3, n.name


@pytest.mark.parametrize("name", NAMES)
def test_macs_match_published_figures(name):
    arch = ARCHITECTURES[name]
    graph = arch.build(resolution=arch.resolution)
    macs = sum(r["macs"] for r in summarize(graph))
    low, high = arch.macs
    assert low <= macs <= high, f"{name}: {macs / 1e6:.1f} M MACs"


def test_same_seed_same_graph_and_parameter_counts(tiny):
    a = ARCHITECTURES["mobilenet_v2_0.35_96"].build(resolution=TINY, seed=3)
    b = ARCHITECTURES["mobilenet_v2_0.35_96"].build(resolution=TINY, seed=3)
    for na, nb in zip(a.nodes, b.nodes):
        assert na.params.keys() == nb.params.keys()
        assert all(np.array_equal(na.params[k], nb.params[k]) for k in na.params)
    # Keras' counts (weights and batch-norm statistics) do not depend on the resolution
    params = {k: sum(v.size for n in tiny[k].nodes
                     for v in n.params.values()) for k in ("mobilenet_v2_1.0_224", "resnet50_224")}
    assert params == {"mobilenet_v2_1.0_224": 3_538_984, "resnet50_224": 25_636_712}


def test_make_divisible_is_keras_rule():
    assert [make_divisible(v) for v in (32 * 0.35, 16 * 0.35, 320 * 0.35, 96, 11.2)] == \
        [16, 8, 112, 96, 16]
