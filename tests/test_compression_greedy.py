"""The greedy per-layer ratio selection against a plain transcription of AIMET's
GreedyCompRatioSelectAlgo (comp_ratio_select.py, aimet.md §10) on fixed score tables, its edge
cases by hand and the monotone fit against its optimality conditions. The transcription
(`aimet_select`) is shared with test_compression_compress_model.py."""
from __future__ import annotations

import math

import numpy as np
import pytest

from refq.compression import greedy
from refq.errors import InputError


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
