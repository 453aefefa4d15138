"""Sensitivity to quantization, as AIMET's QuantAnalyzer measures it: which quantizer groups cost.

AIMET (`aimet_torch/v1/quant_analyzer.py`, also behind v2) scores, in
`check_model_sensitivity_to_quantization`, FP32, weights only (activation quantizers off) and
activations only (parameter quantizers off); in
`perform_per_layer_analysis_by_enabling_quant_wrappers`, the model with one quant wrapper's
quantizers on and all others off; in `..._by_disabling_quant_wrappers`, one wrapper's off and all
others on. Encodings stay as calibrated in every run (AIMET does not recalibrate either); a
quantizer disabled in `sim.enabled` stays off in every run.

Groups (refq's quant wrappers). A *layer* is a node holding a parameter quantizer of the simulation
(enabled or not). Each layer is a group holding its parameter and input quantizers and the
quantizers of the tensors computed from its output before the next layer: a node without
parameter quantizers belongs to the latest layer (in model order) among the owners of its inputs'
producers. So a supergroup's end (Conv+Relu, whose output quantizer AIMET's Relu wrapper holds), a
folded BN, an activation, a pool, a squeeze-excite multiply and a residual add join the layer that
computed their (latest) input, the layer whose epilogue a target runs them in. Tensors no layer
precedes (the model input: AIMET's input quantizer of the first layer's wrapper) belong to the
layers that read them first (walking forward through nodes without parameter quantizers); where no
layer does, the producing node or graph input is its own group. A quantizer whose tensors belong
to several groups (encoding propagation's shared quantizer, an input read by two layers) is held by
each, as AIMET installs one quantizer object in several wrappers: with only group G on it is on;
with only G off it stays on while another group holds it (AIMET's other wrappers still apply it;
qdq commutes with the ReLU, Concat and grid-preserving ops between those tensors).

Configurations (sets of enabled quantizers; E = the quantizers enabled in `sim.enabled`):
    fp32 = {}   all = E   weights = {q in E: parameter}   activations = E − weights
    only:G = {q in E: G holds q}        without:G = E − {q: G is the only holder of q}
A group holding no quantizer of E has no run; a configuration equal to another is run once.

Scores of a configuration with output ŷ, against the float run y (the simulation's dtype) of the
scored output (`output`, default the graph's first), summed over every batch in float64:
    output SQNR = 10·log10(Σ y² / Σ (y − ŷ)²) dB      (inf when exact, None when y is all zero)
    top-1 agreement = mean(argmax ŷ == argmax y)     over the last axis, when it has > 1 entry
    accuracy = mean(argmax ŷ == labels)              labels: int, y's shape without its last axis
Agreement with the per-quantizer report (`refq.report.quant_report`): over the groups holding a
quantizer with a local SQNR there, Spearman's ρ between the group's `only:G` output SQNR and its
worst (lowest) local SQNR: the Pearson correlation of their ranks, ties taking their mean rank.

Speed: the configurations run as `refq.quant.partial_sim.PartialSim` runs them (every output is
bit for bit that of `sim.run(feeds, enabled=C)`, tests check it): per batch one traced float run
and one traced all-quantized run, and for each configuration only the nodes its change can reach,
fed from whichever of the two reaches fewer. On PP-OCR this runs ~52% of the nodes of 110 full
forwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..data_io import check_data, iterate_batches
from ..errors import InputError, QuantError
from ..quant.partial_sim import PartialSim
from .document import Figure, Panel, Section, Table

__all__ = ["Group", "quantizer_groups", "configurations", "sensitivity_scores", "spearman",
           "average_ranks", "sensitivity_section"]


@dataclass
class Group:
    """A quantizer group: its name (the layer, node or graph input), its index in model order
    (−1 for a graph input) and the quantizers it holds, in `sim.quantizers` order."""
    name: str
    index: int
    quantizers: list = field(default_factory=list)


def quantizer_groups(sim) -> list:
    """The quantizer groups of QuantSim `sim`, in model order (module docstring, Groups)."""
    g = sim.graph
    order = g.topological_order()
    index = {n.name: i for i, n in enumerate(order)}
    producers, readers = g.producers(), g.consumers()
    layers = {q.node for q in sim.quantizers.values() if q.kind == "param"}
    owner = {}
    for n in order:
        ups = [owner[producers[t].name] for t in n.inputs if t in producers]
        owner[n.name] = n.name if n.name in layers else \
            max((u for u in ups if u is not None), key=index.get, default=None)

    def first_layers(t):
        found, todo, seen = set(), [t], set()
        while todo:
            for r in readers.get(todo.pop(), ()):
                if r.name in layers:
                    found.add(r.name)
                elif r.name not in seen:
                    seen.add(r.name)
                    todo.append(r.outputs[0])
        return found

    def holders(t, node):
        """The groups of tensor t made by `node` (None: a graph input)."""
        if node is not None and owner[node] is not None:
            return {owner[node]}
        return first_layers(t) or {node or t}

    groups: dict = {}
    for q in sim.quantizers.values():
        if q.kind == "activation":
            hs = set().union(*(holders(t, getattr(producers.get(t), "name", None))
                               for t in q.tensors))
        else:
            hs = holders(g.node(q.node).outputs[0], q.node)
        for h in sorted(hs):
            groups.setdefault(h, Group(h, index.get(h, -1))).quantizers.append(q.name)
    return sorted(groups.values(), key=lambda gr: (gr.index, gr.name))


def configurations(sim, groups) -> dict:
    """{key: frozenset of enabled quantizer names}: "fp32", "all", "weights", "activations",
    "only:G" and "without:G" for every group G holding an enabled quantizer (module docstring)."""
    on = frozenset(n for n in sim.quantizers if sim.enabled.get(n, False))
    weights = frozenset(n for n in on if sim.quantizers[n].kind == "param")
    holders: dict = {}
    for gr in groups:
        for q in gr.quantizers:
            holders.setdefault(q, set()).add(gr.name)
    out = {"fp32": frozenset(), "all": on, "weights": weights, "activations": on - weights}
    for gr in groups:
        mine = on & set(gr.quantizers)
        if mine:
            out["only:" + gr.name] = mine
            out["without:" + gr.name] = on - {q for q in mine if holders[q] == {gr.name}}
    return out


class _Score:
    """Running sums of one configuration: Σ (y − ŷ)², top-1 matches with y and with the labels."""

    def __init__(self):
        self.noise, self.agree, self.correct = 0.0, 0, 0

    def add(self, y64, y_hat, top1, labels):
        d = y64 - y_hat.astype(np.float64)
        self.noise += float(np.sum(d * d))
        if top1 is not None:
            pred = np.argmax(y_hat, axis=-1)
            self.agree += int(np.sum(pred == top1))
            self.correct += 0 if labels is None else int(np.sum(pred == labels))


def _batch_labels(labels, start, top1, output, classes):
    """The labels of the batch whose float top-1 is `top1`, checked (InputError)."""
    if top1 is None:
        raise InputError(f"labels: output '{output}' has no class axis (its last axis has one "
                         "entry) to score labels against; give no labels")
    lab = labels[start:start + len(top1)]
    if lab.shape != top1.shape:
        raise InputError(f"labels hold {len(labels)} entries of shape {list(labels.shape[1:])}; "
                         f"samples {start}..{start + len(top1) - 1} of the data need shape "
                         f"{list(top1.shape)}: give one label per sample")
    if lab.size and (lab.min() < 0 or lab.max() >= classes):
        raise InputError(f"labels must be class indices 0..{classes - 1} of output '{output}', "
                         f"got values {int(lab.min())}..{int(lab.max())}")
    return lab


def sensitivity_scores(sim, data, labels=None, *, batch_size=None, output=None,
                       quiet=True) -> dict:
    """Every configuration's scores on `data` (what `iterate_batches` takes), as a JSON-able dict:
    output, samples, batches, groups [{name, quantizers}], configurations {key: [names]}, scores
    {key: {sqnr_db, agreement, accuracy}}, runs_per_batch (the compiled plans run per batch).
    InputError for an unknown output, labels that are not integer class indices with one entry
    per sample, and data without samples or with NaN/Inf; QuantError for a non-finite output."""
    g = sim.graph
    output = g.outputs[0] if output is None else output
    if output not in g.outputs or output not in g.producers():
        raise InputError(f"model '{g.name}' has no output '{output}' computed by a node; its "
                         f"outputs are {list(g.outputs)}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.ndim == 0:
            raise InputError(f"labels must be an integer array of class indices, batch axis "
                             f"first; got dtype {labels.dtype}, shape {list(labels.shape)}")
        n = len(data) if isinstance(data, np.ndarray) else len(next(iter(data.values()), [])) \
            if isinstance(data, dict) else None
        if n is not None and n != len(labels):
            raise InputError(f"labels hold {len(labels)} entries for {n} samples of data; give "
                             "one label per sample")
    groups = quantizer_groups(sim)
    configs = configurations(sim, groups)
    runner = PartialSim(sim, output)
    jobs = {}
    for s in configs.values():
        if s and s != runner.all_set and s not in jobs:
            jobs[s] = runner.compile(s)
    scores = {s: _Score() for s in configs.values()}
    signal, samples, positions, batches = 0.0, 0, 0, 0
    for k, feeds in enumerate(iterate_batches(data, g, batch_size)):
        where = f"data batch {k}" + (f" ({feeds.source})" if hasattr(feeds, "source") else "")
        feeds = {name: check_data(np.asarray(v), where, name) for name, v in feeds.items()}
        outs = {}
        for s, y_hat in runner.outputs(feeds, jobs, quiet, "sensitivity"):   # the float run first
            if not outs and not np.all(np.isfinite(y_hat)):
                raise QuantError(f"{where}: the float model's output '{output}' is not finite; "
                                 "check the data and the model")
            outs.setdefault(s, y_hat)
        y = outs[frozenset()]
        y64 = y.astype(np.float64)
        top1 = np.argmax(y, axis=-1) if y.ndim >= 2 and y.shape[-1] > 1 else None
        lab = None if labels is None else _batch_labels(labels, samples, top1, output,
                                                        y.shape[-1])
        for s, y_hat in outs.items():
            scores[s].add(y64, y_hat, top1, lab)
        signal += float(np.sum(y64 * y64))
        samples += len(y)
        positions += 0 if top1 is None else top1.size
        batches += 1
    if not samples:
        raise InputError(f"the data for model '{g.name}' holds no samples; give at least one")
    if labels is not None and samples != len(labels):
        raise InputError(f"labels hold {len(labels)} entries for {samples} samples of data; give "
                         "one label per sample")
    result = {}
    for key, s in configs.items():
        sc = scores[s]
        if not math.isfinite(sc.noise):
            raise QuantError(f"configuration '{key}': output '{output}' is not finite; check the "
                             "encodings (`refq report`)")
        result[key] = {"sqnr_db": math.inf if sc.noise == 0 else None if signal == 0
                       else 10 * math.log10(signal / sc.noise),
                       "agreement": sc.agree / positions if positions else None,
                       "accuracy": sc.correct / positions if positions and labels is not None
                       else None}
    return {"output": output, "samples": samples, "batches": batches,
            "groups": [{"name": gr.name, "quantizers": list(gr.quantizers)} for gr in groups],
            "configurations": {k: sorted(v) for k, v in configs.items()}, "scores": result,
            "runs_per_batch": sum(j.plan is not None for j in jobs.values())}


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n of `values` (float64), tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True,
                                   return_counts=True)
    return (np.cumsum(counts) - counts + (counts + 1) / 2.0)[inverse.reshape(-1)]


def spearman(x, y):
    """Spearman's ρ of paired samples: the Pearson correlation of their average ranks; None for
    fewer than 3 pairs or when a side is constant (ρ undefined)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise InputError(f"spearman: give two 1-D sequences of one length, got shapes "
                         f"{list(x.shape)} and {list(y.shape)}")
    if len(x) < 3:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float(np.sum(rx * rx)) * float(np.sum(ry * ry)))
    return None if den == 0 else float(np.sum(rx * ry)) / den


def _text(score, acc, base=None) -> str:
    """"31.2 dB, agreement 99.0%[, accuracy 97.0%]" of one run; with `base` (a run's SQNR) the
    difference from it first."""
    db = score["sqnr_db"]
    text = "exact" if db == math.inf else "n/a" if db is None else f"{db:.1f} dB"
    if base is not None and db is not None and math.isfinite(base) and math.isfinite(db):
        text = f"{db - base:+.1f} dB to {text}"
    text += "" if score["agreement"] is None else f", agreement {score['agreement']:.1%}"
    return text + (f", accuracy {score['accuracy']:.1%}" if acc else "")


def sensitivity_section(sim, data, labels=None, *, batch_size=None, output=None, quiet=True,
                        sqnr_report=None) -> Section:
    """The report section "sensitivity" of QuantSim `sim` on `data` (module docstring): tables
    of the 4 whole-model runs and of every group, 4 bar figures (groups in model order, the 3
    worst highlighted) and the rank agreement with `sqnr_report` (`refq.report.quant_report` of
    the same data; computed when not given)."""
    if sqnr_report is None and not isinstance(data, (np.ndarray, dict)) and iter(data) is data:
        raise InputError("sensitivity_section reads the data twice without sqnr_report: give an "
                         "array, a dict of arrays or a re-iterable source, or the report")
    r = sensitivity_scores(sim, data, labels, batch_size=batch_size, output=output, quiet=quiet)
    if sqnr_report is None:
        from ..report import quant_report
        sqnr_report = quant_report(sim, data, batch_size=batch_size, quiet=quiet)
    sc, acc = r["scores"], labels is not None
    metrics = [("sqnr_db", "SQNR dB", "{:.2f}"), ("agreement", "agreement", "{:.1%}")] + \
        ([("accuracy", "accuracy", "{:.1%}")] if acc else [])
    models = Table(
        "sensitivity.models", f"The model on {r['samples']} samples: output '{r['output']}' "
        "against the float model's", ["configuration", "quantizers on"] + [m[1] for m in metrics],
        [[label, len(r["configurations"][k])] + [sc[k][m[0]] for m in metrics] for label, k in
         (("FP32", "fp32"), ("weights only", "weights"), ("activations only", "activations"),
          ("all quantizers", "all"))], {m[1]: m[2] for m in metrics},
        note="SQNR inf: the output is exact.")
    local = {row["quantizer"]: row["local_sqnr_db"] for row in sqnr_report.get("quantizers", ())
             if row.get("local_sqnr_db") is not None}
    worst, rows = {}, []
    for gr in r["groups"]:
        name, on = gr["name"], "only:" + gr["name"] in sc
        have = sorted((local[q], q) for q in gr["quantizers"] if q in local)
        worst.update({name: have[0][0]} if have else {})
        rows.append([name, ", ".join(gr["quantizers"]) + ("" if on else " (none enabled)")]
                    + [sc[mode + name][m[0]] if on else None for mode in ("only:", "without:")
                       for m in metrics] + (list(have[0]) if have else [None, None]))
    heads = [f"{mode}: {m[1]}" for mode in ("only", "without") for m in metrics]
    groups = Table("sensitivity.groups", "Per quantizer group: the model with only this group "
                   "quantized (only) and with all groups but this one (without)",
                   ["group", "quantizers"] + heads + ["worst local SQNR dB", "worst quantizer"],
                   rows, {**{h: m[2] for h, m in zip(heads, metrics + metrics)},
                          "worst local SQNR dB": "{:.2f}"},
                   note="A group is a layer with its input, weight and the activations computed "
                   "before the next layer; see refq.analysis.sensitivity.")
    ran = [gr["name"] for gr in r["groups"] if "only:" + gr["name"] in sc]

    def key(k):   # the primary score (accuracy with labels, else SQNR), then SQNR, of one run
        return [math.inf if sc[k][m] is None else sc[k][m]
                for m in (("accuracy",) if acc else ()) + ("sqnr_db",)]

    most = sorted(ran, key=lambda n: (key("only:" + n), n))
    gain = sorted(ran, key=lambda n: ([-v for v in key("without:" + n)], n))
    w, a, full = sc["weights"], sc["activations"], sc["all"]["sqnr_db"]
    findings = [f"All quantizers: {_text(sc['all'], acc)}" +
                (f" (FP32 accuracy {sc['fp32']['accuracy']:.1%})." if acc else "."),
                ("Weights and activations cost the same" if key("weights") == key("activations")
                 else "Activations cost more" if key("activations") < key("weights")
                 else "Weights cost more") +
                f": weights only {_text(w, acc)}; activations only {_text(a, acc)}."]
    if ran:
        findings += ["Most sensitive with only it quantized: " + "; ".join(
            f"{n} ({_text(sc['only:' + n], acc)})" for n in most[:3]) + ".",
            "Largest gain when only it stays in float: " + "; ".join(
            f"{n} ({_text(sc['without:' + n], acc, full)})" for n in gain[:3]) + "."]
    pairs = [(n, key("only:" + n)[-1], worst[n]) for n in ran if n in worst]
    rho = spearman([p[1] for p in pairs], [p[2] for p in pairs]) if pairs else None
    agreement = Table("sensitivity.agreement", "Ranking by output SQNR with only the group "
                      "quantized against the group's worst local SQNR (quantizers report)",
                      ["measure", "value"],
                      [["groups compared", len(pairs)], ["Spearman rho", rho]] +
                      [[f"5 lowest {what}", ", ".join(p[0] for p in sorted(
                          pairs, key=lambda p: (p[i], p[0]))[:5])]
                       for what, i in (("output SQNR", 1), ("worst local SQNR", 2))])
    findings.append("Agreement with the per-quantizer SQNR report: " + (
        f"Spearman rho = {rho:.2f} over {len(pairs)} groups (output SQNR with only the group "
        "quantized vs the group's worst local SQNR)." if rho is not None else
        f"undefined ({len(pairs)} groups have both numbers)."))
    summary = ("Each quantizer group (a layer: its input, weight and the activations computed "
               "before the next layer) is scored with only it quantized and with all but it "
               "quantized, as AIMET's QuantAnalyzer does, and the model with weights only and "
               "activations only: output SQNR against the float model (dB, higher is better), "
               "top-1 agreement with it" + (", accuracy on the labels" if acc else "") +
               ". Encodings stay as calibrated.")
    return Section("sensitivity", "Sensitivity to quantization", summary, findings,
                   [models, groups, agreement], _figures(sc, ran, acc, most, gain))


def _finite(v):
    return v if v is not None and math.isfinite(v) else None


def _diff(a, b):
    """a − b, None when either is None."""
    return None if a is None or b is None else a - b


def _figures(sc, ran, acc, most, gain) -> list:
    """Bars over the groups that ran, in model order: output SQNR with only the group quantized,
    SQNR gain with only the group in float, and the drop / gain of accuracy (without labels:
    top-1 agreement) alike; the 3 worst of each figure's own numbers highlighted (ties broken by
    the ranking of the findings)."""
    m, label = ("accuracy", "Accuracy") if acc else ("agreement", "Top-1 agreement")
    ref, full, base = sc["fp32"][m], sc["all"][m], sc["all"]["sqnr_db"]
    specs = [("only.sqnr", "Output SQNR with only this group quantized",
              "Lower is more sensitive; FP32 is exact" +
              (f", all quantizers give {base:.1f} dB." if base is not None else "."),
              "output SQNR (dB)", most, 1, lambda n: sc["only:" + n]["sqnr_db"]),
             ("without.sqnr", "SQNR gain with only this group left in float",
              "Output SQNR with all groups but this one quantized, minus the all-quantized "
              "SQNR: the higher, the more the group costs.", "SQNR gain (dB)", gain, -1,
              lambda n: _diff(sc["without:" + n]["sqnr_db"], base))]
    if ref is not None:
        specs += [(f"only.{m}", f"{label} drop with only this group quantized",
                   f"FP32 ({ref:.1%}) minus the model with only this group quantized, in "
                   "percentage points.", f"{label.lower()} drop (points)", most, -1,
                   lambda n: 100 * _diff(ref, sc["only:" + n][m])),
                  (f"without.{m}", f"{label} gain with only this group left in float",
                   f"The model with all groups but this one quantized minus all quantizers "
                   f"({full:.1%}), in percentage points.", f"{label.lower()} gain (points)",
                   gain, -1, lambda n: 100 * _diff(sc["without:" + n][m], full))]
    figures = []
    for fid, title, caption, xlabel, ranking, sign, value in specs if ran else ():
        values = [_finite(value(n)) for n in ran]
        worst = sorted((sign * v, ranking.index(n), n) for n, v in zip(ran, values)
                       if v is not None)[:3]
        figures.append(Figure("sensitivity." + fid, title, [Panel("bars", {
            "labels": ran, "series": [{"name": xlabel, "values": values}], "xlabel": xlabel,
            "ylabel": "quantizer group (model order)", "horizontal": True,
            "highlight": [w[2] for w in worst]})], caption))
    return figures
