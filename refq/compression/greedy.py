"""Greedy per-layer compression-ratio selection, as AIMET's `GreedyCompRatioSelectAlgo` does it
(../shared/reference/aimet.md §10; `aimet_common/comp_ratio_select.py`, `curve_fit.py`).

An eval table is {layer: {ratio: score}}: the score (higher is better) of the model with only
that layer compressed at that ratio (smaller ratio = more compression). The selection:

1. optional monotone fit (`fit_monotone`): each layer's scores replaced by a least-squares
   polynomial of degree 7 whose derivative is >= 0 at x = 0, 0.02, ..., 0.96;
2. rounding (`round_table`): each ratio replaced by the ratio the method really reaches there
   (rank / channel rounding), its score interpolated (`interpolated_score`, AIMET's rules);
3. binary search on the score (`binary_search`): lo, hi = the smallest and largest score of the
   table, tol = 1e-4·(hi − lo); repeat: mid = (lo + hi)/2, each layer takes the most aggressive
   ratio still scoring >= mid (`layer_ratio_for_score`), the model ratio of that choice is
   computed; stop when lo and hi are within tol (select lo) or the model ratio is within 0.001
   of the target (select mid); else hi = mid when the ratio is above the target (not enough
   compression), lo = mid otherwise. The selected score's choice is the result.

Ratios are float64 here: candidate k/N is the float nearest to AIMET's Decimal(1)/Decimal(N)·k.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

__all__ = ["candidate_ratios", "fit_monotone", "fit_table", "interpolated_score", "round_table",
           "layer_ratio_for_score", "choose_ratios", "binary_search", "greedy_select",
           "FIT_DEGREE", "FIT_CONSTRAINT_POINTS", "MODEL_RATIO_TOLERANCE", "SCORE_TOLERANCE"]

FIT_DEGREE = 7                          # terms x^0..x^7 (AIMET's polynomial_degree = 8 columns)
FIT_CONSTRAINT_POINTS = np.arange(0, 0.98, 0.02)   # derivative >= 0 at 0, 0.02, ..., 0.96
MODEL_RATIO_TOLERANCE = 0.001           # |model ratio − target| that ends the search
SCORE_TOLERANCE = 1e-4                  # the search ends when hi − lo <= this·(initial hi − lo)


def candidate_ratios(n: int) -> list:
    """[k/n for k = 1..n−1]: the candidate ratios of `n` candidates (AIMET's default n = 10)."""
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise InputError(f"the number of candidate ratios must be an integer >= 2, got {n!r}")
    return [k / n for k in range(1, int(n))]


def fit_monotone(ratios, scores):
    """(fitted scores, coefficients c_0..c_7): the polynomial p(x) = Σ_i c_i·x^i minimising
    Σ_j (p(x_j) − y_j)² subject to p'(t) >= 0 at t = 0, 0.02, ..., 0.96.

    AIMET solves this quadratic program (1/2 cᵀ(ΦᵀΦ)c − (Φᵀy)ᵀc, Ψc >= 0) with OSQP at its default
    tolerances (1e-3); here it is solved with SciPy's SLSQP to 1e-12 starting from the
    unconstrained least-squares solution, which is returned as it is when it already satisfies
    the constraints. The fitted values Φc are unique (the objective is strictly convex in Φc),
    even when fewer than 8 points leave c itself undetermined, so both solvers aim at the same
    numbers; AIMET's differ from them by up to its solver tolerance."""
    from scipy.optimize import minimize

    x = np.asarray(ratios, np.float64)
    y = np.asarray(scores, np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise InputError(f"fit_monotone: {x.size} ratios and {y.size} scores; give one score "
                         "per ratio")
    powers = np.arange(FIT_DEGREE + 1)
    phi = x[:, None] ** powers                                          # [points, 8]
    t = FIT_CONSTRAINT_POINTS
    psi = np.zeros((t.size, powers.size))
    psi[:, 1:] = powers[1:] * t[:, None] ** (powers[1:] - 1)            # d/dx x^i = i·x^(i−1)
    c0 = np.linalg.lstsq(phi, y, rcond=None)[0]
    scale = max(1.0, float(np.max(np.abs(y))))
    if np.all(psi @ c0 >= -1e-12 * scale):
        return list(phi @ c0), c0

    def objective(c):
        r = phi @ c - y
        return 0.5 * float(r @ r), phi.T @ r

    result = minimize(objective, c0, jac=True, method="SLSQP",
                      constraints=[{"type": "ineq", "fun": lambda c: psi @ c,
                                    "jac": lambda c: psi}],
                      options={"ftol": 1e-15 * scale * scale, "maxiter": 2000})
    c = result.x
    return list(phi @ c), c


def fit_table(table: dict) -> dict:
    """`table` with each layer's scores replaced by their monotone fit (`fit_monotone`), the
    ratios kept in the table's order."""
    fitted = {}
    for layer, scores in table.items():
        ratios = list(scores)
        values, _ = fit_monotone(ratios, [scores[r] for r in ratios])
        fitted[layer] = {r: float(v) for r, v in zip(ratios, values)}
    return fitted


def interpolated_score(ratio: float, scores: dict, sorted_ratios: list) -> float:
    """The score at `ratio` from one layer's `scores` ({ratio: score}), `sorted_ratios` their
    ratios ascending, by AIMET's `_calculate_function_value_by_interpolation`:
    - a ratio of the table: its score;
    - else i = the first index with ratio < sorted_ratios[i] (the last index when there is none);
      i = last index: the score of the largest ratio (also for a ratio between the two largest);
      otherwise the line through (x1, y1) = sorted_ratios[i] and (x2, y2) = sorted_ratios[i−1],
      score = (ratio − x1)·(y1 − y2)/(x1 − x2) + y1. For i = 0, i − 1 is the LAST entry (Python's
      index −1), so a ratio below the smallest is extrapolated on the line through the smallest
      and the largest ratio."""
    if ratio in scores:
        return scores[ratio]
    i = len(sorted_ratios) - 1
    for k, r in enumerate(sorted_ratios):
        if ratio < r:
            i = k
            break
    if i == len(sorted_ratios) - 1:
        return scores[sorted_ratios[-1]]
    x1, x2 = sorted_ratios[i], sorted_ratios[i - 1]
    y1, y2 = scores[x1], scores[x2]
    return (ratio - x1) * (y1 - y2) / (x1 - x2) + y1


def round_table(table: dict, rounded_ratio) -> dict:
    """{layer: {rounded ratio: score}}: every ratio r of `table` replaced by
    rounded_ratio(layer, r), its score interpolated at the rounded ratio (`interpolated_score`)
    from the layer's own scores. Two ratios rounding to the same value keep the score of the one
    that comes later in the table's order (AIMET's dict update), at the first one's position."""
    rounded = {}
    for layer, scores in table.items():
        ordered = sorted(scores)
        per_layer = {}
        for r in scores:
            target = float(rounded_ratio(layer, r))
            per_layer[target] = float(interpolated_score(target, scores, ordered))
        rounded[layer] = per_layer
    return rounded


def layer_ratio_for_score(scores: dict, score: float):
    """The ratio one layer takes for the score `score` (AIMET's
    `_find_layer_comp_ratio_given_eval_score`), its ratios scanned from least to most
    compression (descending ratio):
    - score above the least compressed ratio's score: None (the layer stays uncompressed);
    - score below the most compressed ratio's score: the most compressed ratio;
    - else the first ratio (after the least compressed one) scoring below `score` stops the scan
      and the ratio before it is taken; when none scores below (`score` equals the most
      compressed ratio's score and no score on the way is lower), None."""
    order = sorted(scores, reverse=True)
    if score > scores[order[0]]:
        return None
    if score < scores[order[-1]]:
        return order[-1]
    for previous, ratio in zip(order, order[1:]):
        if score > scores[ratio]:
            return previous
    return None


def choose_ratios(table: dict, score: float) -> dict:
    """{layer: ratio or None} of every layer of `table` for `score` (`layer_ratio_for_score`)."""
    return {layer: layer_ratio_for_score(scores, score) for layer, scores in table.items()}


def _score_range(table: dict):
    values = [v for scores in table.values() for v in scores.values()]
    if not values:
        raise InputError("the eval table holds no scores; it needs at least one layer and ratio")
    return min(values), max(values)


def binary_search(table: dict, model_ratio, target: float):
    """(choice {layer: ratio or None}, info): AIMET's binary search on the score (module
    docstring, step 3) over the (rounded) eval `table`. model_ratio(choice) -> the model's cost
    ratio (compressed / original) when each layer takes its ratio of `choice` (None:
    uncompressed). info: {"score": the selected score, "ratio": the model ratio of the choice,
    "steps": [{"lo", "hi", "mid", "ratio"}, ...]}.

    The end tests are AIMET's: math.isclose(lo, hi, abs_tol=1e-4·(initial hi − initial lo))
    (whose default rel_tol 1e-9 also applies) selects lo; math.isclose(ratio, target,
    abs_tol=0.001) selects mid. A target below every reachable ratio therefore ends at the
    smallest score, where a layer whose most compressed score is that smallest score stays
    uncompressed (`layer_ratio_for_score`)."""
    if not 0 < target <= 1:
        raise InputError(f"the target ratio must be in (0, 1], got {target}")
    lo, hi = _score_range(table)
    tol = (hi - lo) * SCORE_TOLERANCE
    steps = []
    while True:
        mid = (lo + hi) / 2
        ratio = float(model_ratio(choose_ratios(table, mid)))
        steps.append({"lo": lo, "hi": hi, "mid": mid, "ratio": ratio})
        if math.isclose(lo, hi, abs_tol=tol):
            selected = lo
            break
        if math.isclose(ratio, target, abs_tol=MODEL_RATIO_TOLERANCE):
            selected = mid
            break
        if ratio > target:
            hi = mid
        else:
            lo = mid
    choice = choose_ratios(table, selected)
    return choice, {"score": selected, "ratio": float(model_ratio(choice)), "steps": steps}


def greedy_select(table: dict, model_ratio, target: float, rounded_ratio=None,
                  monotone_fit: bool = False):
    """(choice {layer: ratio or None}, info): the whole selection of the module docstring on the
    eval `table`: monotone fit when asked, rounding with rounded_ratio(layer, ratio) -> float
    (None: the ratios as they are), then `binary_search` to `target`. info as binary_search's,
    plus "table": the fitted and rounded table the search ran on."""
    work = {layer: {float(r): float(s) for r, s in scores.items()}
            for layer, scores in table.items()}
    if monotone_fit:
        work = fit_table(work)
    if rounded_ratio is not None:
        work = round_table(work, rounded_ratio)
    choice, info = binary_search(work, model_ratio, target)
    info["table"] = work
    return choice, info
