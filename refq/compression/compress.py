"""Compress a model with one method, each layer's ratio given by hand or chosen by the greedy
search (`refq.compression.greedy`), then optionally fine-tune it: `compress_model`, `fine_tune`
and the two evaluations the search can use (`accuracy_evaluator`, `agreement_evaluator`).

    evaluate = agreement_evaluator(graph, x[:200])
    small, report = compress_model(graph, "spatial-svd", target_macs=0.5, evaluate=evaluate,
                                   eval_table="ssvd_scores.json")
    tuned, _ = fine_tune(small, x_train, labels=y_train, epochs=2)

The greedy search, as AIMET runs it: for every layer the method can compress and every candidate
ratio k/N (k = 1..N−1) compress only that layer (with reconstruction) and evaluate the model; the
table {layer: {ratio: score}} is written as JSON where the caller says (read back instead when
that file exists); then `greedy.greedy_select` picks the ratios reaching the target cost ratio:
the model ratio of a choice is cost(compressed) / cost(original) by AIMET's cost calculators,
as the method reports them for the model compressed with that choice without reconstruction
(which does not change the structure; `model_costs`). Finally the model is compressed at the
chosen ratios with reconstruction.
"""
from __future__ import annotations

import os
import time

import numpy as np

from ..errors import InputError
from ..progress import progress
from .eval_table import load_eval_table, save_eval_table
from .greedy import candidate_ratios, greedy_select

__all__ = ["compress_model", "accuracy_evaluator", "agreement_evaluator", "fine_tune",
           "model_costs", "trained_params", "COST_METRICS"]

COST_METRICS = ("macs", "params")


def model_costs(graph, compressed, method_report) -> dict:
    """{"before": {"macs", "params"}, "after": {...}}: the model cost of `graph` and of its
    `compressed` form by AIMET's cost calculators, as the method reports it ("model"; for the
    SVDs the cost given rank, for channel pruning the winnowed model's cost), else
    `refq.compression.cost.model_cost` of the two graphs."""
    from . import cost

    model = (method_report or {}).get("model") if isinstance(method_report, dict) else None
    if model is None:
        model = {"before": cost.model_cost(graph).to_json(),
                 "after": cost.model_cost(compressed).to_json()}
    for when in ("before", "after"):
        for k in COST_METRICS:
            if model[when].get(k) is None:
                raise InputError(f"model '{graph.name}': its {k} are unknown (a layer's output "
                                 "height or width is not fixed); give the model input a fixed "
                                 "height and width")
    return {when: {k: int(model[when][k]) for k in COST_METRICS} for when in ("before", "after")}


def _predictions(graph, feeds, batch_size, dtype):
    from ..plan import Plan

    out = Plan(graph, dtype).run(feeds, batch_size=batch_size)[graph.outputs[0]]
    return np.asarray(out).argmax(axis=-1)


def _feeds(graph, inputs) -> dict:
    from ..feeds import feeds_dict

    return feeds_dict(graph, inputs)


def accuracy_evaluator(inputs, labels, *, batch_size: int = 100, dtype=np.float64):
    """evaluate(graph) -> the fraction of samples whose top-1 class (argmax of the graph's first
    output over its last axis) equals the label. inputs: {input name: array} or one array;
    labels: integer class per sample."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError("accuracy_evaluator: labels must be a 1-d integer array of class "
                         f"indices, got {labels.dtype} {list(labels.shape)}")

    def evaluate(graph) -> float:
        top1 = _predictions(graph, _feeds(graph, inputs), batch_size, dtype)
        if top1.shape != labels.shape:
            raise InputError(f"accuracy_evaluator: {len(labels)} labels for predictions "
                             f"{list(top1.shape)}")
        return float(np.mean(top1 == labels))

    evaluate.description = f"top-1 accuracy on {len(labels)} labelled samples"
    return evaluate


def agreement_evaluator(reference, inputs, *, batch_size: int = 100, dtype=np.float64):
    """evaluate(graph) -> the fraction of samples on which the graph's top-1 class (argmax of
    its first output over the last axis) equals that of the `reference` graph (the float model):
    a score that needs no labels."""
    expected = _predictions(reference, _feeds(reference, inputs), batch_size, dtype)

    def evaluate(graph) -> float:
        return float(np.mean(_predictions(graph, _feeds(graph, inputs), batch_size, dtype)
                             == expected))

    evaluate.description = f"top-1 agreement with the float model on {expected.size} samples"
    return evaluate


def _checked_target(value, flag: str) -> float:
    value = float(value)
    if not 0 < value <= 1:
        raise InputError(f"{flag} {value}: the target is the compressed cost over the original "
                         "cost, a number in (0, 1]")
    return value


def _checked_ratios(ratios: dict, layers: list, method) -> dict:
    for name, r in ratios.items():
        if name not in layers:
            raise InputError(f"--ratios: '{name}' is not a layer {method.name} can compress; "
                             f"its layers: {', '.join(layers) or 'none'}")
        if r is not None and not 0 < float(r) <= 1:
            raise InputError(f"--ratios: layer '{name}' ratio {r}: give a number in (0, 1]")
    return {name: float(r) for name, r in ratios.items() if r is not None}


def _compute_table(graph, method, layers, candidates, metric, evaluate, data, seed, quiet):
    """{layer: {ratio: score}}: each layer compressed alone at each candidate ratio, evaluated."""
    pairs = [(layer, r) for layer in layers for r in candidate_ratios(candidates)]
    table = {layer: {} for layer in layers}
    for layer, r in progress(pairs, total=len(pairs), desc=f"{method.name} eval table",
                             quiet=quiet, unit="evaluation", line=not quiet):
        compressed, _ = method.compress(graph, {layer: r}, cost=metric, data=data, seed=seed,
                                        reconstruct=True)
        table[layer][r] = float(evaluate(compressed))
    return table


def _table(graph, method, layers, candidates, metric, evaluate, eval_table, data, seed, quiet):
    """(table, where it came from): read from `eval_table` when that file exists (checked against
    the method, cost metric and layers), else computed and written there (if a path is given)."""
    if eval_table is not None and os.path.exists(eval_table):
        table, info = load_eval_table(eval_table)
        if (info["method"], info["cost"]) != (method.name, metric):
            raise InputError(f"{eval_table}: an eval table of {info['method']} with ratios of "
                             f"{info['cost']}, not of {method.name} with ratios of {metric}; "
                             "give another --eval-table path, or the method and target it was "
                             "made for")
        missing = [layer for layer in layers if layer not in table]
        extra = [layer for layer in table if layer not in layers]
        if missing or extra:
            raise InputError(f"{eval_table}: the table's layers do not match the model's: "
                             f"missing {missing[:5]}, not in the model {extra[:5]}; it was made "
                             "for another model; give another --eval-table path")
        return ({layer: table[layer] for layer in layers},
                f"read from {eval_table} ({info['evaluation'] or 'evaluation not stated'})")
    table = _compute_table(graph, method, layers, candidates, metric, evaluate, data, seed, quiet)
    if eval_table is not None:
        save_eval_table(eval_table, table, method=method.name, cost=metric,
                        evaluation=getattr(evaluate, "description", ""))
        return table, f"computed, written to {eval_table}"
    return table, "computed"


class _ModelRatio:
    """model_ratio(choice): cost of the model compressed with `choice` (no reconstruction) over
    the original cost (`model_costs`), memoised by choice."""

    def __init__(self, graph, method, metric):
        self.graph, self.method, self.metric = graph, method, metric
        self.memo = {}

    def __call__(self, choice: dict) -> float:
        chosen = tuple((k, v) for k, v in choice.items() if v is not None)
        if chosen not in self.memo:
            if not chosen:
                self.memo[chosen] = 1.0
            else:
                g, report = self.method.compress(self.graph, dict(chosen), cost=self.metric,
                                                 reconstruct=False)
                cost = model_costs(self.graph, g, report)
                self.memo[chosen] = cost["after"][self.metric] / cost["before"][self.metric]
        return self.memo[chosen]


def _layer_rows(graph, method, ratios, metric, method_report):
    """Per compressed layer: the ratio, and MACs and parameters before and after. An SVD reports
    each layer's cost before and after (cost given rank); otherwise "after" is the layer's cost
    plus the change of the model's cost when that layer alone is compressed at its ratio
    (without reconstruction): for channel pruning the layer and the producers whose output
    channels it removes."""
    from . import cost

    shapes = graph.infer_shapes()
    reported = method_report.get("layers", {}) if isinstance(method_report, dict) else {}
    rows = {}
    for layer, r in ratios.items():
        entry = reported.get(layer, {})
        if isinstance(entry.get("before"), dict) and isinstance(entry.get("after"), dict):
            before, after = entry["before"], entry["after"]
        else:
            before = cost.layer_cost(graph, layer, shapes).to_json()
            alone, report = method.compress(graph, {layer: r}, cost=metric, reconstruct=False)
            model = model_costs(graph, alone, report)
            after = {k: before[k] + model["after"][k] - model["before"][k] for k in COST_METRICS}
        rows[layer] = {"ratio": r}
        for k in COST_METRICS:
            rows[layer][f"{k}_before"] = int(before[k])
            rows[layer][f"{k}_after"] = int(after[k])
    return rows


def compress_model(graph, method, *, target_macs=None, target_params=None, ratios=None,
                   evaluate=None, candidates: int = 10, eval_table=None, data=None, seed: int = 0,
                   quiet: bool = True, monotone_fit: bool = False, cost: str | None = None):
    """(compressed graph, report): `graph` compressed by `method` (a METHOD or its name).

    Exactly one of: target_macs / target_params (the target model cost ratio in (0, 1]: the
    greedy search of the module docstring, which needs `evaluate`, a callable(graph) -> score,
    higher is better) or ratios ({layer: ratio}, AIMET's manual mode: each layer compressed at
    its ratio after the method's rounding; cost = "macs" (default) or "params" says what the
    ratios measure for the SVDs). candidates: N of the candidate ratios k/N. eval_table: a JSON
    path, read when it exists, else written (`refq.compression.eval_table`). data, seed: passed
    to the method (reconstruction samples). monotone_fit: fit each layer's scores with AIMET's
    monotone polynomial first.

    report: {"method", "cost", "target", "mode", "layers": {layer: {"ratio", "macs_before",
    "macs_after", "params_before", "params_after"}} for the compressed layers, "model": the same
    four totals and the achieved "ratio", "score_before" and "score_after" (with `evaluate`),
    greedy only: "candidates", "eval_table" (where the table came from), "evaluations" (how many
    the table took here), "selected_score", "search_steps"; "method_report" (the method's own),
    "seconds"}."""
    from . import get_method

    t0 = time.perf_counter()
    method = get_method(method) if isinstance(method, str) else method
    given = [k for k, v in (("target_macs", target_macs), ("target_params", target_params),
                            ("ratios", ratios)) if v is not None]
    if len(given) != 1:
        raise InputError("give one of a target MAC ratio (--target-macs), a target parameter "
                         f"ratio (--target-params) or per-layer ratios (--ratios); got {given}")
    layers = list(method.layers(graph))
    report = {"method": method.name, "layers": {}}
    if ratios is not None:
        metric = cost or "macs"
        if metric not in COST_METRICS:
            raise InputError(f"cost must be one of {COST_METRICS}, got {metric!r}")
        chosen = {k: float(method.rounded_ratio(graph, k, r, metric))
                  for k, r in _checked_ratios(ratios, layers, method).items()}
        report.update(mode="manual", cost=metric, target=None)
    else:
        metric = "macs" if target_macs is not None else "params"
        target = _checked_target(target_macs if target_macs is not None else target_params,
                                 f"--target-{metric}")
        if evaluate is None:
            raise InputError("the greedy search needs an evaluation (evaluate: graph -> score)")
        if not layers:
            raise InputError(f"model '{graph.name}' has no layer that {method.name} can "
                             "compress")
        table, source = _table(graph, method, layers, candidates, metric, evaluate, eval_table,
                               data, seed, quiet)
        model_ratio = _ModelRatio(graph, method, metric)
        choice, info = greedy_select(
            table, model_ratio, target, monotone_fit=monotone_fit,
            rounded_ratio=lambda layer, r: method.rounded_ratio(graph, layer, r, metric))
        chosen = {k: v for k, v in choice.items() if v is not None}
        report.update(mode="greedy", cost=metric, target=target, candidates=candidates,
                      eval_table=source, selected_score=info["score"],
                      evaluations=0 if source.startswith("read") else sum(map(len,
                                                                              table.values())),
                      search_steps=info["steps"], monotone_fit=monotone_fit)
    compressed, method_report = method.compress(graph, chosen, cost=metric, data=data,
                                                seed=seed, reconstruct=True)
    report["layers"] = _layer_rows(graph, method, chosen, metric, method_report)
    model = model_costs(graph, compressed, method_report)
    report["model"] = {f"{k}_{when}": model[when][k] for k in COST_METRICS
                       for when in ("before", "after")}
    report["model"]["ratio"] = model["after"][metric] / model["before"][metric] \
        if model["before"][metric] else 1.0
    if evaluate is not None:
        report["score_before"] = float(evaluate(graph))
        report["score_after"] = float(evaluate(compressed))
    report["method_report"] = method_report
    report["seconds"] = time.perf_counter() - t0
    return compressed, report


def fine_tune(graph, inputs, *, labels=None, teacher=None, epochs: int = 1, lr: float = 1e-3,
              batch_size: int = 32, seed: int = 0, dtype=np.float64, quiet: bool = True):
    """(fine-tuned copy of `graph`, training report): `refq.grad.train` with Adam(lr) for `epochs`
    on the logits (the input of the final softmax, else the output): cross-entropy with integer
    `labels`, else distillation (KL divergence) to the logits of the float `teacher` graph (the
    model before compression) on the same inputs. Seeded batch order. Every parameter trains
    but the batch norms' moving mean and variance (`trained_params`)."""
    from ..grad import Adam, cross_entropy, kl_divergence
    from ..grad.train import logits_tensor, train
    from ..plan import Plan

    logits = logits_tensor(graph)
    feeds = _feeds(graph, inputs)
    if labels is not None:
        targets, loss = np.asarray(labels).astype(np.int64), cross_entropy
    elif teacher is not None:
        name = logits_tensor(teacher)
        targets = Plan(teacher, dtype).run(_feeds(teacher, inputs), trace=[name],
                                           batch_size=100)[name]
        loss = kl_divergence
    else:
        raise InputError("fine-tuning needs labels (cross-entropy) or the float model "
                         "(distillation)")
    return train(graph, feeds, loss, Adam(lr), targets=targets, epochs=epochs,
                 batch_size=batch_size, seed=seed, output=logits, wrt=trained_params(graph),
                 dtype=dtype, quiet=quiet)


#: parameters that fine-tuning leaves alone: the batch norms' moving statistics
FROZEN_PARAMS = {"batch_norm": ("mean", "variance")}


def trained_params(graph) -> list:
    """["node/param", ...] that `fine_tune` trains: every parameter but FROZEN_PARAMS (the batch
    norms run in inference mode, normalising with their moving mean and variance, which gradients
    must not move: a variance could turn negative) and the channel selections that channel
    pruning inserted (graph.meta["channel_selections"]: fixed 0/1 weights, which training would
    turn into channel-mixing convolutions)."""
    selections = graph.meta.get("channel_selections", {})
    return [f"{n.name}/{k}" for n in graph.topological_order() for k in n.params
            if k not in FROZEN_PARAMS.get(n.op, ()) and n.name not in selections]
