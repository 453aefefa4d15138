"""A float32 Plan folds a batch norm into the conv2d or dense layer before it: the result stays
within the bound `fold_into_producer` states of the exact value, and the fold never applies where
the definition must be seen exactly (float64, fold_batch_norms=False, traces, hooks, non-finite
folds)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import refq
from refq.graph import Graph, TensorSpec
from refq.layers.normalization import fold_into_producer, scale_and_shift
from refq.plan import Plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_plan import CONVS, RNG, chain_graph, node, plain, same_bits  # noqa: E402

U32 = 2.0 ** -24


def gamma(n):
    return n * U32 / (1 - n * U32)


def exact_and_bound(g, x, producer):
    """(y*, bound) for the batch norm output e0 of `g` at x: y* in float64 from the float32
    parameters the plan holds, bound = 2·γ_{K+3}·(|s|·(Σ|w·x| + |b|) + |t|)."""
    p32 = {k: v.astype(np.float32).astype(np.float64) for k, v in producer.params.items()}
    bn = g.node("e0")
    b32 = {k: v.astype(np.float32).astype(np.float64) for k, v in bn.params.items()}
    s, t = scale_and_shift(b32, bn.attrs["epsilon"], np.float64)
    exact_g = Graph(g.inputs, ["e0"], [node(producer.op, producer.name, ["x"], producer.attrs,
                                            p32), node("batch_norm", "e0", [producer.name],
                                                       bn.attrs, b32)])
    y = refq.run(exact_g, x.astype(np.float64))["e0"]
    absp = {"weight": np.abs(p32["weight"])}
    if "bias" in p32:
        absp["bias"] = np.abs(p32["bias"])
    abs_g = Graph(g.inputs, [producer.name], [node(producer.op, producer.name, ["x"],
                                                   producer.attrs, absp)])
    mag = refq.run(abs_g, np.abs(x.astype(np.float64)))[producer.name]
    k = int(np.prod(producer.params["weight"].shape[1:]))
    return y, 2 * gamma(k + 3) * (np.abs(s) * mag + np.abs(t))


@pytest.mark.parametrize("kind", sorted(CONVS))
def test_folded_float32_within_the_stated_bound(kind):
    producer, cin, cout, hw = CONVS[kind]()
    shape = (cin,) if hw is None else hw + (cin,)
    g = chain_graph(producer, cout, ["batch_norm"], shape)
    plan = Plan(g, np.float32)
    steps = [s.names for s in plan._steps(__import__("refq.plan", fromlist=["_Hooks"])._Hooks(
        plan), True, False, None)]
    assert steps == [("c", "e0")], steps
    x = (RNG.normal(size=(4,) + shape) * 3).astype(np.float32)
    got = plan.run(x)["e0"]
    unfused = plain(g, x, np.float32)["e0"]
    exact, bound = exact_and_bound(g, x, producer)
    assert (np.abs(got - exact) <= bound).all()
    assert (np.abs(unfused - exact) <= bound).all()
    assert (np.abs(got - unfused) <= 2 * bound).all()


@pytest.mark.parametrize("kind", ["rowfold", "depthwise", "dense", "pointwise"])
def test_no_fold_in_float64_when_off_traced_or_hooked(kind):
    producer, cin, cout, hw = CONVS[kind]()
    shape = (cin,) if hw is None else hw + (cin,)
    g = chain_graph(producer, cout, ["batch_norm", "relu6"], shape)
    x = (RNG.normal(size=(3,) + shape) * 3).astype(np.float32)
    same_bits(Plan(g, np.float64).run(x), plain(g, x, np.float64))
    same_bits(Plan(g, np.float32, fold_batch_norms=False).run(x), plain(g, x, np.float32))
    same_bits(Plan(g, np.float32).run(x, trace=True), plain(g, x, np.float32, trace=True))
    round_c = {"c": lambda a: np.round(a, out=a)}
    want = plain(g, x, np.float32, on_tensor=lambda n, a: np.round(a) if n == "c" else a)
    same_bits(Plan(g, np.float32).run(x, inplace_hooks=round_c), want)
    # a float64 plan may be asked to fold: then it folds
    assert Plan(g, np.float64, fold_batch_norms=True).fold_batch_norms


def test_non_finite_fold_keeps_the_two_layers():
    """w·s beyond float32 would make an infinite weight: the batch norm stays an epilogue."""
    w = np.full((2, 3), 3e37)
    folded = fold_into_producer({"weight": w}, {"gamma": np.array([100.0, 1.0]),
                                                "beta": np.zeros(2), "mean": np.zeros(2),
                                                "variance": np.ones(2)}, 0.0, np.float32)
    assert folded is None
    g = Graph([TensorSpec("x", (None, 3), "float32")], ["e0"],
              [node("dense", "c", ["x"], {}, {"weight": w * 1e-30}),
               node("batch_norm", "e0", ["c"], {"epsilon": 0.0},
                    {"gamma": np.array([1e32, 1.0]), "beta": np.zeros(2), "mean": np.zeros(2),
                     "variance": np.ones(2)})])
    x = (RNG.normal(size=(2, 3)) * 1e-10).astype(np.float32)   # y is finite, s·w is not
    same_bits(Plan(g, np.float32).run(x), plain(g, x, np.float32))
    assert np.isfinite(Plan(g, np.float32).run(x)["e0"]).all()


def test_fold_into_producer_math():
    w = RNG.normal(size=(3, 2, 2, 4))
    b = RNG.normal(size=3)
    bn = {"gamma": RNG.uniform(0.5, 2, 3), "beta": RNG.normal(size=3), "mean": RNG.normal(size=3),
          "variance": RNG.uniform(0.1, 2, 3)}
    f = fold_into_producer({"weight": w, "bias": b}, bn, 1e-3, np.float64)
    s = bn["gamma"] / np.sqrt(bn["variance"] + 1e-3)
    np.testing.assert_allclose(f["weight"], w * s[:, None, None, None], rtol=1e-15)
    np.testing.assert_allclose(f["bias"], s * (b - bn["mean"]) + bn["beta"], rtol=1e-13)
    nob = fold_into_producer({"weight": w}, bn, 1e-3, np.float32)
    assert nob["bias"].dtype == np.float32 and nob["weight"].dtype == np.float32
    np.testing.assert_allclose(nob["bias"], bn["beta"] - s * bn["mean"], rtol=1e-6)
