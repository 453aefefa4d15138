"""`compress_model` (greedy and manual) with a small weight-SVD method of this file on a small
MLP, its choice against the plain transcription of AIMET's GreedyCompRatioSelectAlgo
(test_compression_greedy.aimet_select), the real weight-SVD method under the same check, the
evaluators and fine-tuning (batch-norm statistics frozen)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from refq.compression.compress import (accuracy_evaluator, agreement_evaluator, compress_model,
                                       fine_tune)
from refq.compression.eval_table import load_eval_table
from refq.errors import InputError
from refq.graph import Graph, Node, TensorSpec

from test_compression_greedy import aimet_select


# ------------------------------------------------- compress_model with a small SVD method -----

class DenseSvd:
    """A small weight SVD of dense layers (W ≈ (U_r S_r)(V_rᵀ)), for the tests only: rank r =
    max(1, floor(ratio·in·out / (in + out))), so the layer's cost ratio is r·(in+out)/(in·out)."""

    name = "weight-svd"

    def layers(self, graph):
        return [n.name for n in graph.topological_order() if n.op == "dense"]

    @staticmethod
    def rank(node, ratio):
        out, inp = node.params["weight"].shape
        return max(1, min(min(out, inp), int(ratio * inp * out / (inp + out))))

    def rounded_ratio(self, graph, layer, ratio, cost="macs"):
        node = graph.node(layer)
        out, inp = node.params["weight"].shape
        return self.rank(node, ratio) * (inp + out) / (inp * out)

    def compress(self, graph, ratios, *, cost="macs", data=None, seed=0, reconstruct=True):
        g = graph.copy()
        nodes = []
        for n in g.nodes:
            if n.name not in ratios:
                nodes.append(n)
                continue
            r = self.rank(n, ratios[n.name])
            u, s, vt = np.linalg.svd(n.params["weight"], full_matrices=False)
            mid = n.name + "/rank"
            nodes.append(Node(n.name + "/a", "dense", n.inputs, [mid],
                              params={"weight": vt[:r]}))
            nodes.append(Node(n.name + "/b", "dense", [mid], n.outputs,
                              params={"weight": u[:, :r] * s[:r], "bias": n.params["bias"]}))
        g.nodes = nodes
        g.validate()
        return g, {"ranks": {k: self.rank(graph.node(k), v) for k, v in ratios.items()}}


def dense_costs(graph):
    return {n.name: {"macs": n.params["weight"].size, "params": n.params["weight"].size}
            for n in graph.nodes if n.op == "dense"}


def mlp(seed=0):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((16, 12)) @ np.diag(0.5 ** np.arange(12)) * 0.5
    w2 = rng.standard_normal((10, 16)) * 0.3
    nodes = [Node("fc1", "dense", ["x"], ["h"], params={"weight": w1, "bias": np.zeros(16)}),
             Node("act", "relu", ["h"], ["a"]),
             Node("fc2", "dense", ["a"], ["logits"], params={"weight": w2, "bias": np.zeros(10)}),
             Node("prob", "softmax", ["logits"], ["p"])]
    g = Graph([TensorSpec("x", (None, 12))], ["p"], nodes, name="mlp")
    g.validate()
    return g


def test_compress_model_greedy_writes_and_rereads_its_table(tmp_path):
    g = mlp()
    x = np.random.default_rng(1).standard_normal((64, 12))
    evaluate = agreement_evaluator(g, x)
    path = tmp_path / "scores.json"
    small, report = compress_model(g, DenseSvd(), target_macs=0.5, evaluate=evaluate,
                                   candidates=5, eval_table=str(path))
    table, info = load_eval_table(path)
    assert list(table) == ["fc1", "fc2"] and list(table["fc1"]) == [0.2, 0.4, 0.6, 0.8]
    assert info["method"] == "weight-svd" and "agreement" in info["evaluation"]
    assert report["evaluations"] == 8 and report["mode"] == "greedy"
    # the search's choice is the transcription's on the same (rounded) table
    method = DenseSvd()
    def model_ratio(choice):
        chosen = {k: v for k, v in choice.items() if v is not None}
        c = method.compress(g, chosen)[0] if chosen else g
        return sum(v["macs"] for v in dense_costs(c).values()) / (16 * 12 + 10 * 16)

    expected = aimet_select(table, model_ratio, 0.5,
                            lambda layer, r: method.rounded_ratio(g, layer, r))
    assert {k: v["ratio"] for k, v in report["layers"].items()} == \
        {k: v for k, v in expected.items() if v is not None}
    assert report["model"]["macs_before"] == 352
    kept = sum(c["macs"] for k, c in dense_costs(g).items() if k not in report["layers"])
    assert report["model"]["macs_after"] == kept + sum(v["macs_after"]
                                                       for v in report["layers"].values())
    assert math.isclose(report["model"]["ratio"], model_ratio(expected))
    assert report["score_before"] == 1.0 and 0 <= report["score_after"] <= 1
    # again: the table is read, nothing evaluated, the same result
    again, report2 = compress_model(g, DenseSvd(), target_macs=0.5, evaluate=evaluate,
                                    candidates=5, eval_table=str(path))
    assert report2["evaluations"] == 0 and report2["eval_table"].startswith("read from")
    assert report2["layers"] == report["layers"]
    for a, b in zip(small.nodes, again.nodes):
        for k in a.params:
            assert a.params[k].tobytes() == b.params[k].tobytes()
    # a table of another method or cost is refused
    with pytest.raises(InputError, match="ratios of macs, not of weight-svd with ratios of params"):
        compress_model(g, DenseSvd(), target_params=0.5, evaluate=evaluate,
                       eval_table=str(path))


def test_compress_model_manual_ratios_and_bad_requests():
    g = mlp()
    small, report = compress_model(g, DenseSvd(), ratios={"fc1": 0.5})
    r = DenseSvd().rank(g.node("fc1"), 0.5)
    assert report["mode"] == "manual" and [n.name for n in small.nodes][:2] == ["fc1/a", "fc1/b"]
    assert report["layers"]["fc1"] == {"ratio": r * 28 / 192, "macs_before": 192,
                                       "macs_after": r * 28, "params_before": 192,
                                       "params_after": r * 28}
    with pytest.raises(InputError, match="'fc9' is not a layer weight-svd can compress"):
        compress_model(g, DenseSvd(), ratios={"fc9": 0.5})
    with pytest.raises(InputError, match="ratio 1.5"):
        compress_model(g, DenseSvd(), ratios={"fc1": 1.5})
    with pytest.raises(InputError, match="give one of"):
        compress_model(g, DenseSvd(), ratios={"fc1": 0.5}, target_macs=0.5)
    with pytest.raises(InputError, match="needs an evaluation"):
        compress_model(g, DenseSvd(), target_macs=0.5)
    with pytest.raises(InputError, match="in \\(0, 1\\]"):
        compress_model(g, DenseSvd(), target_macs=0, evaluate=lambda m: 1.0)


def test_evaluators_and_fine_tuning():
    g = mlp()
    x = np.random.default_rng(2).standard_normal((48, 12))
    from refq.runtime import run

    labels = run(g, {"x": x})["p"].argmax(1)
    assert accuracy_evaluator(x, labels)(g) == 1.0
    assert agreement_evaluator(g, x)(g) == 1.0
    with pytest.raises(InputError, match="1-d integer"):
        accuracy_evaluator(x, labels.astype(float))
    small, _ = compress_model(g, DenseSvd(), ratios={"fc1": 0.2, "fc2": 0.2})
    before = accuracy_evaluator(x, labels)(small)
    tuned, rep = fine_tune(small, x, teacher=g, epochs=20, lr=1e-2, batch_size=16)
    assert rep["steps"] == 60 and accuracy_evaluator(x, labels)(tuned) >= before
    assert np.mean(rep["loss"][-3:]) < np.mean(rep["loss"][:3])
    tuned2, _ = fine_tune(small, x, labels=labels, epochs=1, batch_size=16)
    with pytest.raises(InputError, match="labels"):
        fine_tune(small, x, epochs=1)


def test_the_search_with_the_weight_svd_method_matches_the_transcription(tmp_path):
    """The real weight-SVD METHOD on the MLP: the choice equals the transcription's on the same
    table with the model ratio by AIMET's weight-SVD cost (m·r + r·n per dense layer)."""
    from refq.compression import get_method

    method = get_method("weight-svd")
    g = mlp()
    x = np.random.default_rng(4).standard_normal((64, 12))
    path = tmp_path / "w.json"
    for target in (0.3, 0.6):
        _, report = compress_model(g, method, target_params=target,
                                   evaluate=agreement_evaluator(g, x), candidates=10,
                                   eval_table=str(path))
        table, _ = load_eval_table(path)
        shapes = {"fc1": (16, 12), "fc2": (10, 16)}

        def model_ratio(choice):
            total = 0
            for layer, (n, m) in shapes.items():
                r = choice.get(layer)
                if r is None:
                    total += n * m
                    continue
                rank = m                       # AIMET: from the max rank down while too costly
                while rank > 0 and m * rank + rank * n > r * n * m:
                    rank -= 1
                total += (m + n) * max(rank, 1)
            return total / (16 * 12 + 10 * 16)

        expected = aimet_select(table, model_ratio, target,
                                lambda layer, r: method.rounded_ratio(g, layer, r, "params"))
        assert {k: v["ratio"] for k, v in report["layers"].items()} == \
            {k: v for k, v in expected.items() if v is not None}
        assert math.isclose(report["model"]["ratio"], model_ratio(expected))


def test_fine_tuning_keeps_the_batch_norm_statistics():
    rng = np.random.default_rng(5)
    g = mlp()
    bn = Node("bn", "batch_norm", ["h"], ["hn"], {"epsilon": 1e-3},
              {"gamma": np.ones(16), "beta": np.zeros(16), "mean": rng.normal(0, 0.1, 16),
               "variance": rng.uniform(0.5, 1.5, 16)})
    g.nodes.insert(1, bn)
    g.node("act").inputs = ["hn"]
    g.validate()
    x = rng.standard_normal((32, 12))
    tuned, _ = fine_tune(g, x, labels=rng.integers(0, 10, 32), epochs=3, lr=0.05, batch_size=8)
    new = tuned.node("bn").params
    assert np.array_equal(new["mean"], bn.params["mean"])
    assert np.array_equal(new["variance"], bn.params["variance"])
    assert not np.array_equal(new["gamma"], bn.params["gamma"])
