"""The greedy per-layer ratio selection against a plain transcription of AIMET's
GreedyCompRatioSelectAlgo (comp_ratio_select.py, aimet.md §10) on fixed score tables, its edge
cases by hand, the monotone fit against its optimality conditions, the eval table's JSON file,
and `compress_model` with a small weight-SVD method of this file on a small MLP."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from refq.compression import greedy
from refq.compression.compress import (accuracy_evaluator, agreement_evaluator, compress_model,
                                       fine_tune)
from refq.compression.eval_table import load_eval_table, save_eval_table
from refq.errors import FormatError, InputError
from refq.graph import Graph, Node, TensorSpec


# ---------------------------------------------------------------- AIMET, transcribed plainly ----

def aimet_interpolate(ratio, layer_dict, ratio_list):
    if ratio in ratio_list:
        return layer_dict[ratio]
    ind = 0
    for ind in range(len(ratio_list)):
        if ratio < ratio_list[ind]:
            break
    if ind == len(ratio_list) - 1:
        return layer_dict[ratio_list[-1]]
    x1 = ratio_list[ind]
    y1 = layer_dict[ratio_list[ind]]
    x2 = ratio_list[ind - 1]
    y2 = layer_dict[ratio_list[ind - 1]]
    return (ratio - x1) * (y1 - y2) / (x1 - x2) + y1


def aimet_round(table, rounder):
    out = {}
    for layer in table:
        layer_dict = table[layer]
        ratio_list = sorted(layer_dict.keys())
        new = {}
        for ratio in layer_dict:
            rounded = rounder(layer, ratio)
            new[rounded] = aimet_interpolate(rounded, layer_dict, ratio_list)
        out[layer] = new
    return out


def aimet_layer_ratio(table, score, layer):
    scores = table[layer]
    ratios = sorted(scores.keys(), reverse=True)
    if score > scores[ratios[0]]:
        return None
    if score < scores[ratios[-1]]:
        return ratios[-1]
    selected = None
    for index in range(len(ratios) - 1):
        if score > scores[ratios[index + 1]]:
            selected = ratios[index]
            break
    return selected


def aimet_select(table, model_ratio, target, rounder=None):
    if rounder is not None:
        table = aimet_round(table, rounder)
    first = list(list(table.values())[0].values())[0]
    lo = hi = first
    for layer in table:
        for s in table[layer].values():
            if s < lo:
                lo = s
            if s > hi:
                hi = s
    threshold = (hi - lo) * 0.0001
    while True:
        mid = (hi + lo) / 2
        choice = {layer: aimet_layer_ratio(table, mid, layer) for layer in table}
        ratio = model_ratio(choice)
        if math.isclose(lo, hi, abs_tol=threshold):
            selected = lo
            break
        if math.isclose(ratio, target, abs_tol=0.001):
            selected = (hi + lo) / 2
            break
        if ratio > target:
            hi = mid
        else:
            lo = mid
    return {layer: aimet_layer_ratio(table, selected, layer) for layer in table}


# ------------------------------------------------------------------------------ fixtures ------

def separable_cost(layer_costs, other=0.0):
    """model_ratio of layers whose cost at ratio r is r·cost (plus uncompressible cost)."""
    total = sum(layer_costs.values()) + other

    def model_ratio(choice):
        c = other
        for layer, full in layer_costs.items():
            r = choice.get(layer)
            c += full if r is None else r * full
        return c / total
    return model_ratio


def random_table(rng, layers, candidates=10, kind="monotone"):
    ratios = greedy.candidate_ratios(candidates)
    table = {}
    for i in range(layers):
        if kind == "monotone":
            s = np.sort(rng.uniform(0.2, 1.0, len(ratios)))
        elif kind == "ties":
            s = np.sort(rng.integers(0, 4, len(ratios))).astype(float) / 4
        else:
            s = rng.uniform(0.2, 1.0, len(ratios))
        table[f"layer_{i}"] = {r: float(v) for r, v in zip(ratios, s)}
    return table


def rounder_to(step):
    """ratio -> the ratio rounded up to a multiple of `step`, capped at 1 (a multiplicity)."""
    return lambda layer, r: min(1.0, math.ceil(round(r / step, 9)) * step)


# ------------------------------------------------------------- same choice as AIMET ------------

@pytest.mark.parametrize("kind", ["monotone", "ties", "non-monotone"])
@pytest.mark.parametrize("seed", range(6))
def test_same_choice_as_the_aimet_transcription(kind, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 7))
    table = random_table(rng, n, candidates=int(rng.choice([4, 10])), kind=kind)
    costs = {f"layer_{i}": float(rng.integers(1, 100)) for i in range(n)}
    model_ratio = separable_cost(costs, other=float(rng.integers(0, 50)))
    for target in (0.05, 0.3, 0.5, 0.75, 0.95, 1.0):
        for rounder in (None, rounder_to(0.25), rounder_to(0.15)):
            ours, info = greedy.greedy_select(table, model_ratio, target, rounded_ratio=rounder)
            assert ours == aimet_select(table, model_ratio, target, rounder), (target, rounder)
            assert info["ratio"] == model_ratio(ours)


def test_a_hand_worked_search():
    """Two layers of equal cost; target 0.5 of the MACs."""
    table = {"a": {0.25: 0.2, 0.5: 0.6, 0.75: 0.9}, "b": {0.25: 0.7, 0.5: 0.8, 0.75: 0.95}}
    model_ratio = separable_cost({"a": 1.0, "b": 1.0})
    choice, info = greedy.greedy_select(table, model_ratio, 0.5)
    # lo, hi = 0.2, 0.95; mid 0.575: a -> 0.5, b -> 0.25: ratio 0.375 <= 0.5: lo = 0.575;
    # mid 0.7625: a -> None, b -> 0.5: ratio 0.75 > 0.5: hi = 0.7625; mid 0.66875: a -> 0.75,
    # b -> 0.25: 0.5 (within 0.001): selected
    assert [s["mid"] for s in info["steps"]] == [0.575, 0.7625, 0.66875]
    assert choice == {"a": 0.75, "b": 0.25} and info["ratio"] == 0.5
    assert choice == aimet_select(table, model_ratio, 0.5)


def test_a_score_equal_to_the_most_aggressive_ones_leaves_the_layer_uncompressed():
    scores = {0.1: 0.5, 0.2: 0.7, 0.3: 0.9}
    assert greedy.layer_ratio_for_score(scores, 0.5) is None        # the quirk: not 0.1
    assert greedy.layer_ratio_for_score(scores, 0.4999) == 0.1
    assert greedy.layer_ratio_for_score(scores, 0.9) == 0.3          # equal to the mildest: kept
    assert greedy.layer_ratio_for_score(scores, 0.9001) is None
    assert greedy.layer_ratio_for_score(scores, 0.7) == 0.2
    assert greedy.layer_ratio_for_score(scores, 0.6) == 0.2
    flat = {0.1: 0.5, 0.2: 0.5, 0.3: 0.5}                            # ties everywhere
    assert greedy.layer_ratio_for_score(flat, 0.5) is None
    dip = {0.1: 0.4, 0.2: 0.3, 0.3: 0.9}                             # non-monotone: stops early
    assert greedy.layer_ratio_for_score(dip, 0.5) == 0.3
    assert greedy.layer_ratio_for_score(dip, 0.4) == 0.3              # equal, but 0.2 is lower
    assert greedy.layer_ratio_for_score(dip, 0.39) == 0.1            # below the last: jumps
    bump = {0.1: 0.8, 0.2: 0.3, 0.3: 0.9}
    assert greedy.layer_ratio_for_score(bump, 0.5) == 0.1


def test_an_unreachable_target_ends_at_the_lowest_score():
    table = {"a": {0.5: 0.1, 0.9: 0.6}, "b": {0.5: 0.4, 0.9: 0.8}}
    model_ratio = separable_cost({"a": 1.0, "b": 1.0})
    choice, info = greedy.greedy_select(table, model_ratio, 0.1)   # 0.5 at best
    assert info["score"] == 0.1 and math.isclose(info["steps"][-1]["hi"], 0.1, abs_tol=7e-5)
    # at the lowest score layer a, whose most aggressive score it is, stays uncompressed
    assert choice == {"a": None, "b": 0.5} == aimet_select(table, model_ratio, 0.1)


def test_equal_scores_end_at_once():
    table = {"a": {0.5: 0.7, 0.9: 0.7}}
    choice, info = greedy.greedy_select(table, separable_cost({"a": 1.0}), 0.5)
    assert len(info["steps"]) == 1 and choice == {"a": None} and info["ratio"] == 1.0


def test_interpolation_follows_aimet_including_its_ends():
    scores = {0.2: 0.4, 0.4: 0.6, 0.6: 0.9, 0.8: 1.0}
    order = sorted(scores)
    assert greedy.interpolated_score(0.4, scores, order) == 0.6
    assert math.isclose(greedy.interpolated_score(0.5, scores, order), 0.75)
    # between the two largest ratios: the largest one's score, no interpolation
    assert greedy.interpolated_score(0.7, scores, order) == 1.0
    assert greedy.interpolated_score(0.95, scores, order) == 1.0
    # below the smallest: on the line through the smallest and the LARGEST ratio (index -1)
    assert math.isclose(greedy.interpolated_score(0.1, scores, order),
                        0.4 + (0.1 - 0.2) * (0.4 - 1.0) / (0.2 - 0.8))
    for r in (0.1, 0.3, 0.5, 0.7, 0.95):
        assert greedy.interpolated_score(r, scores, order) == aimet_interpolate(r, scores, order)


def test_rounding_collisions_keep_the_later_ratio():
    table = {"a": {0.1: 0.2, 0.2: 0.5, 0.3: 0.6}}
    rounded = greedy.round_table(table, lambda layer, r: 0.3 if r >= 0.2 else 0.1)
    assert rounded == {"a": {0.1: 0.2, 0.3: 0.6}} == aimet_round(table, lambda a, r:
                                                                 0.3 if r >= 0.2 else 0.1)


def test_candidates():
    assert greedy.candidate_ratios(10) == [k / 10 for k in range(1, 10)]
    assert greedy.candidate_ratios(2) == [0.5]
    for bad in (1, 0, 2.5):
        with pytest.raises(InputError):
            greedy.candidate_ratios(bad)


def test_search_checks_the_target():
    for bad in (0, 1.5, -0.1):
        with pytest.raises(InputError, match="target"):
            greedy.binary_search({"a": {0.5: 1.0}}, lambda c: 1.0, bad)


# ----------------------------------------------------------------------- monotone fit ---------

def test_fit_reproduces_an_increasing_polynomial():
    x = greedy.candidate_ratios(10)
    y = [0.2 + 0.5 * t + 0.3 * t ** 3 - 0.1 * t ** 2 for t in x]   # p' > 0 on [0, 1]
    fitted, c = greedy.fit_monotone(x, y)
    assert np.allclose(fitted, y, atol=1e-12)
    assert np.allclose(c[:4], [0.2, 0.5, -0.1, 0.3], atol=1e-7)


def kkt_residual(x, y, c):
    """How far c is from optimal for min ½|Φc − y|² s.t. Ψc >= 0: the best nonnegative
    multipliers of the active constraints (NNLS) leave this stationarity residual."""
    from scipy.optimize import nnls

    powers = np.arange(8)
    phi = np.asarray(x)[:, None] ** powers
    t = np.arange(0, 0.98, 0.02)
    psi = np.zeros((t.size, 8))
    psi[:, 1:] = powers[1:] * t[:, None] ** (powers[1:] - 1)
    slack = psi @ c
    assert slack.min() >= -1e-7                                     # feasible
    gradient = phi.T @ (phi @ c - np.asarray(y))
    active = slack <= 1e-6
    if not active.any():
        return float(np.abs(gradient).max())
    _, residual = nnls(psi[active].T, gradient)                     # gradient = Ψ_Aᵀ λ, λ >= 0
    return residual


def test_fit_of_a_falling_curve_is_optimal_and_increasing():
    x = greedy.candidate_ratios(10)
    y = [0.9, 0.8, 0.85, 0.6, 0.7, 0.75, 0.9, 0.95, 0.97]        # dips, then rises
    fitted, c = greedy.fit_monotone(x, y)
    assert kkt_residual(x, y, c) < 1e-6
    assert np.all(np.diff(fitted) >= -1e-9)
    assert np.sum((np.array(fitted) - y) ** 2) < np.sum((np.mean(y) - np.array(y)) ** 2)
    falling = [1 - t for t in x]
    fitted, c = greedy.fit_monotone(x, falling)
    assert kkt_residual(x, falling, c) < 1e-6
    assert np.allclose(fitted, np.mean(falling), atol=2e-3)        # the best is nearly flat


def test_fit_with_fewer_points_than_terms():
    x, y = [0.25, 0.5, 0.75], [0.9, 0.5, 0.95]
    fitted, c = greedy.fit_monotone(x, y)
    assert kkt_residual(x, y, c) < 1e-6 and np.all(np.diff(fitted) >= -1e-9)


def test_greedy_with_fit_uses_the_fitted_scores():
    rng = np.random.default_rng(3)
    table = random_table(rng, 3, kind="non-monotone")
    model_ratio = separable_cost({"layer_0": 1.0, "layer_1": 2.0, "layer_2": 3.0})
    fitted = greedy.fit_table(table)
    choice, info = greedy.greedy_select(table, model_ratio, 0.6, monotone_fit=True)
    assert info["table"] == fitted
    assert choice == aimet_select(fitted, model_ratio, 0.6)


# ------------------------------------------------------------------------- the JSON file ------

def test_table_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    table = random_table(rng, 3, candidates=7)
    path = tmp_path / "sub" / "scores.json"
    save_eval_table(path, table, method="weight-svd", cost="params", evaluation="accuracy")
    loaded, info = load_eval_table(path)
    assert loaded == table and list(loaded) == list(table)
    assert info == {"method": "weight-svd", "cost": "params", "evaluation": "accuracy"}
    assert [p for p in os.listdir(tmp_path / "sub")] == ["scores.json"]   # no temporary left
    text = path.read_text()
    assert "0.14285714285714285" in text and "pickle" not in text


def _doc(**changes):
    doc = {"format": "refq-compression-eval-table", "version": 1, "method": "spatial-svd",
           "cost": "macs", "evaluation": "", "scores": {"conv": {"0.5": 0.9, "0.25": 0.5}}}
    doc.update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    ("[1, 2]", "must be a JSON object"),
    (_doc(version=2), "version 2"),
    (_doc(format="aimet-pickle"), "is not 'refq-compression-eval-table'"),
    (_doc(cost="latency"), "cost 'latency'"),
    (_doc(extra=1), "unknown \\['extra'\\]"),
    (_doc(scores={}), "non-empty object"),
    (_doc(scores={"conv": {}}), "layer 'conv': expected a non-empty"),
    (_doc(scores={"conv": [0.5]}), "layer 'conv': expected a non-empty"),
    (_doc(scores={"conv": {"1.5": 0.9}}), "ratio '1.5' is not a number in \\(0, 1\\]"),
    (_doc(scores={"conv": {"0": 0.9}}), "ratio '0' is not"),
    (_doc(scores={"conv": {"half": 0.9}}), "ratio 'half' is not"),
    (_doc(scores={"conv": {"nan": 0.9}}), "ratio 'nan' is not"),
    (_doc(scores={"conv": {"0.5": "high"}}), "score 'high' is not a finite number"),
    (_doc(scores={"conv": {"0.5": True}}), "score 'True' is not a finite number"),
    (_doc(scores={"conv": {"0.5": 0.1, "0.50": 0.2}}), "appears twice"),
    (_doc().replace('"0.25": 0.5', '"0.25": NaN'), "NaN"),
    (_doc().replace('"0.25": 0.5', '"0.5": 0.7'), "key '0.5' appears twice"),
])
def test_malformed_tables_get_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(FormatError, match=message) as e:
        load_eval_table(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_table_and_unsavable_scores(tmp_path):
    with pytest.raises(FormatError, match="cannot read"):
        load_eval_table(tmp_path / "none.json")
    with pytest.raises(FormatError, match="finite"):
        save_eval_table(tmp_path / "t.json", {"a": {0.5: float("nan")}}, method="m")
    assert not (tmp_path / "t.json").exists()


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
