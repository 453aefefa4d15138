"""The report sections of the `/history` entries (`refq.analysis.history`): "compression",
"adaround" and "qat", one per command that has entries, their tables holding the entries' numbers
as they are.

- compression: per run, the model's costs and scores, the chosen ratio per layer, the greedy
  search's score per layer and ratio, the fine-tuning loss per epoch; for the last run, figures of
  score against ratio (LAYERS_PER_PANEL layers a panel, PANELS_PER_FIGURE panels a figure, at most
  SCORE_FIGURES figures: with more layers, the most sensitive), the chosen ratios as bars and the
  fine-tuning loss curve.
- adaround: per run, the final losses per layer and the layers not rounded; for the last run, the
  loss curves and beta schedule of the ADAROUND_FIGURES layers with the highest reconstruction
  loss.
- qat: per run, the mean loss (and the metric) per epoch; for the last run, the loss curve.
Several runs of one command get ids and titles numbered by run, oldest first.
"""
from __future__ import annotations

import numpy as np

from .document import Figure, Panel, Section, Table, slug

__all__ = ["history_sections"]

SCORE_FIGURES = 4     # compression: figures of score against ratio
LAYERS_PER_PANEL = 5
PANELS_PER_FIGURE = 4
ADAROUND_FIGURES = 4


def _runs(entries, command):
    """[(id prefix, title suffix, entry)] of the entries of `command`, oldest first."""
    runs = [e for e in entries if e["command"] == command]
    if len(runs) == 1:
        return [("", "", runs[0])]
    return [(f"{j + 1}.", f" (run {j + 1} of {len(runs)})", e) for j, e in enumerate(runs)]


def _options(entry) -> str:
    return ", ".join(f"{k} {v}" for k, v in entry["options"].items() if v is not None)


def _ratio_table(entry) -> tuple:
    """({layer: {ratio: score}}, layers in order) of a compress entry's eval table."""
    if entry["eval_table"] is None:
        return {}, list(entry["layers"])
    table = {layer: {float(r): s for r, s in scores.items()}
             for layer, scores in entry["eval_table"]["scores"].items()}
    return table, list(table)


def _chosen(entry, layer):
    row = entry["layers"].get(layer)
    return None if row is None else row["ratio"]


def _score_figures(entry, table, layers, sid) -> list:
    """Figures of score against ratio, LAYERS_PER_PANEL layers a panel, the chosen ratio of
    each marked on its curve (linear interpolation of its scores) and the selected score drawn
    across; with more layers than SCORE_FIGURES figures hold, those with the lowest minimum
    score (the most sensitive), in model order."""
    per_figure = LAYERS_PER_PANEL * PANELS_PER_FIGURE
    shown = layers
    if len(layers) > per_figure * SCORE_FIGURES:
        keep = set(sorted(layers, key=lambda n: (min(table[n].values()), layers.index(n)))
                   [:per_figure * SCORE_FIGURES])
        shown = [n for n in layers if n in keep]
    selected = entry["selected_score"]
    what = entry["evaluation"] or "score"
    figures = []
    for f in range(0, len(shown), per_figure):
        panels = []
        for p in range(f, min(f + per_figure, len(shown)), LAYERS_PER_PANEL):
            group = shown[p:p + LAYERS_PER_PANEL]
            series, markers = [], []
            for layer in group:
                xs = sorted(table[layer])
                series.append({"name": layer, "x": xs, "y": [table[layer][r] for r in xs],
                               "style": "line"})
                r = _chosen(entry, layer)
                if r is not None:
                    y = float(np.interp(r, xs, [table[layer][v] for v in xs]))
                    markers.append({"x": r, "y": y, "label": f"{layer} {r:.3g}"})
            if selected is not None:
                series.append({"name": "selected score", "x": [0.0, 1.0],
                               "y": [selected, selected], "style": "line"})
            panels.append(Panel("lines", {"series": series, "xlabel": "ratio",
                                          "ylabel": what, "log_y": False, "markers": markers},
                                title=", ".join(group[:2]) + (" ..." if len(group) > 2 else "")))
        n = f // per_figure + 1
        figures.append(Figure(f"{sid}.scores.{n}", f"Score against ratio ({n})", panels,
                              "each layer compressed alone at each candidate ratio; the marks "
                              "are the chosen ratios"
                              + ("" if shown is layers else
                                 f"; the {len(shown)} most sensitive of {len(layers)} layers")))
    return figures


def _compression_run(sec, sid, title, e, last):
    """The tables and findings of one compress entry; figures when it is the `last` run."""
    table, layers = _ratio_table(e)
    m = e["model_cost"]
    tuned = None if e["fine_tune"] is None else e["fine_tune"]["score"]
    quantities = [("method", e["options"].get("method")),
                  ("target", e["options"].get("target")), ("achieved ratio", m["ratio"]),
                  *((f"{k} {when}", m[f"{k.lower()}_{when}"]) for k in ("MACs", "params")
                    for when in ("before", "after")),
                  ("selected score", e["selected_score"]), ("score before", e["score_before"]),
                  ("score after", e["score_after"]), ("score after fine-tuning", tuned)]
    sec.tables.append(Table(f"{sid}.model", f"Model{title}: {_options(e)}",
                            ["quantity", "value"], [list(q) for q in quantities]))
    rows = [[layer, _chosen(e, layer)] + [e["layers"][layer][k] if layer in e["layers"]
                                          else None for k in ("macs_before", "macs_after",
                                                              "params_before", "params_after")]
            for layer in layers]
    sec.tables.append(Table(f"{sid}.layers", f"Chosen ratio per layer{title}",
                            ["layer", "ratio", "MACs before", "MACs after", "params before",
                             "params after"], rows, note="empty: not compressed"))
    if table:
        ratios = sorted({r for s in table.values() for r in s})
        sec.tables.append(Table(
            f"{sid}.scores", f"Scores per layer and ratio{title} ({e['evaluation']})",
            ["layer"] + [repr(r) for r in ratios],
            [[layer] + [table[layer].get(r) for r in ratios] for layer in layers]))
    ft = e["fine_tune"]
    if ft is not None:
        sec.tables.append(Table(f"{sid}.fine_tune", f"Fine-tuning loss per epoch{title}",
                                ["epoch", "mean loss"],
                                [[i + 1, v] for i, v in enumerate(ft["epoch_loss"])]))
    compressed = [(layer, _chosen(e, layer)) for layer in layers
                  if _chosen(e, layer) is not None]
    if compressed:
        worst = min(compressed, key=lambda lr: (lr[1], layers.index(lr[0])))
        sec.findings.append(
            f"{e['options'].get('method')}{title}: {len(compressed)} of {len(layers)} layers "
            f"compressed, {e['options'].get('cost', 'cost')} ratio {m['ratio']:.3f}; the "
            f"smallest ratio {worst[1]:.3g} at {worst[0]}")
    if not last:
        return   # figures show the last run
    if table:
        sec.figures.extend(_score_figures(e, table, layers, sid))
    sec.figures.append(Figure(f"{sid}.ratios", "Chosen ratio per layer", [Panel("bars", {
        "labels": layers, "series": [{"name": "ratio", "values": [
            1.0 if _chosen(e, layer) is None else _chosen(e, layer) for layer in layers]}],
        "xlabel": "layer", "ylabel": "ratio (1 = not compressed)", "horizontal": False,
        "highlight": [layer for layer, _ in compressed]})]))
    if ft is not None:
        sec.figures.append(_loss_figure(f"{sid}.fine_tune_loss", "Fine-tuning loss", ft))


def _loss_figure(fid, title, record) -> Figure:
    """The loss curve of a training record, epoch ends as vertical rules."""
    c = record["loss_curve"]
    spe = record["steps_per_epoch"]
    vlines = [{"x": (i + 1) * spe, "label": f"epoch {i + 1}"}
              for i in range(len(record["epoch_loss"]) - 1)]
    return Figure(fid, title, [Panel("lines", {
        "series": [{"name": f"mean loss of {c['every']} step(s)", "x": c["step"],
                    "y": c["loss"], "style": "line"}],
        "xlabel": "step", "ylabel": "loss", "log_y": False, "vlines": vlines})])


def _adaround_run(sec, sid, title, e, last):
    """The tables and findings of one adaround entry; figures when it is the `last` run."""
    rows = [[name, r["op"], r["activation"], r["loss"], r["recon_loss"], r["round_loss"],
             r["hard_fraction"], r["up_fraction"]] for name, r in e["layers"].items()]
    sec.tables.append(Table(f"{sid}.layers", f"Final losses per layer{title}: {_options(e)}",
                            ["layer", "op", "activation", "loss", "recon loss", "round loss",
                             "hard fraction", "rounded up"], rows,
                            formats={"hard fraction": "{:.3f}", "rounded up": "{:.3f}"}))
    if e["skipped"]:
        sec.tables.append(Table(f"{sid}.skipped", f"Layers not rounded{title}",
                                ["layer", "reason"], [[k, v] for k, v in e["skipped"].items()]))
    worst = sorted(e["layers"], key=lambda k: (-e["layers"][k]["recon_loss"],
                                               list(e["layers"]).index(k)))
    if worst:
        w = e["layers"][worst[0]]
        sec.findings.append(f"AdaRound{title}: highest final reconstruction loss at "
                            f"{worst[0]} ({w['recon_loss']:.4g}), {w['up_fraction']:.1%} of "
                            f"its weights rounded up")
    if not last:
        return
    for i, name in enumerate(worst[:ADAROUND_FIGURES]):
        sec.figures.append(_adaround_figure(f"{sid}.curve.{i + 1}.{slug(name)}", name,
                                            e["layers"][name]["curve"]))


def _positive(values):
    """Values for a log axis: non-positive ones (the regulariser in the warm start) as None."""
    return [v if v is not None and v > 0 else None for v in values]


def _adaround_figure(fid, name, curve) -> Figure:
    warm = [t for t, b in zip(curve["iteration"], curve["beta"]) if b is None]
    vlines = [{"x": warm[-1], "label": "end of warm start"}] if warm else []
    losses = Panel("lines", {"series": [
        {"name": "reconstruction", "x": curve["iteration"], "y": _positive(curve["recon_loss"]),
         "style": "line"},
        {"name": "rounding regulariser", "x": curve["iteration"],
         "y": _positive(curve["round_loss"]), "style": "line"}],
        "xlabel": "iteration", "ylabel": "loss", "log_y": True, "vlines": vlines}, title="losses")
    beta = Panel("lines", {"series": [{"name": "beta", "x": curve["iteration"],
                                       "y": curve["beta"], "style": "line"}],
                           "xlabel": "iteration", "ylabel": "beta", "log_y": False},
                 title="beta schedule")
    return Figure(fid, f"AdaRound losses of {name}", [losses, beta],
                  f"the values of one iteration in {curve['every']}, as computed")


def _qat_run(sec, sid, title, e, last):
    """The table and finding of one qat entry; its loss figure when it is the `last` run."""
    evals = e["eval"] + [None] * (len(e["epoch_loss"]) - len(e["eval"]))
    sec.tables.append(Table(f"{sid}.epochs", f"Loss per epoch{title}: {_options(e)}",
                            ["epoch", "mean loss", "eval"],
                            [[i + 1, v, evals[i]] for i, v in enumerate(e["epoch_loss"])]))
    if e["epoch_loss"]:
        sec.findings.append(f"QAT{title}: {e['steps']} steps, mean loss "
                            f"{e['epoch_loss'][0]:.4g} in the first epoch -> "
                            f"{e['epoch_loss'][-1]:.4g} in the last")
    if last:
        sec.figures.append(_loss_figure(f"{sid}.loss", "QAT loss", e))


#: (command, section id, title, summary, the builder of one run's part)
_SECTIONS = (
    ("compress", "compression", "Compression",
     "The greedy search compressed each layer alone at each candidate ratio (smaller = more "
     "compressed) and scored the model; it then chose per-layer ratios reaching the target "
     "cost. Read the curves for layers whose score falls early: they keep large ratios.",
     _compression_run),
    ("adaround", "adaround", "AdaRound",
     "AdaRound learned, layer by layer, whether each weight rounds down or up, minimising the "
     "layer's reconstruction loss plus a regulariser that pushes the soft rounding to 0 or 1. "
     "A reconstruction loss that stays high marks a layer that rounding cannot fix.",
     _adaround_run),
    ("qat", "qat", "Quantization-aware training",
     "The loss of quantization-aware fine-tuning, step by step (means of a few steps) and per "
     "epoch. A loss still falling at the end suggests more epochs.",
     _qat_run),
)


def history_sections(history: list) -> list:
    """[Section] "compression", "adaround", "qat" for the entries of `history` (only those
    present), built from the entries' numbers: each run's tables and findings, ids and titles
    numbered by run (`_runs`), the figures of the last run."""
    sections = []
    for command, section_id, section_title, summary, add_run in _SECTIONS:
        runs = _runs(history, command)
        if not runs:
            continue
        sec = Section(section_id, section_title, summary=summary)
        for n, (tag, title, entry) in enumerate(runs):
            add_run(sec, f"{section_id}.{tag}".rstrip("."), title, entry, n == len(runs) - 1)
        sections.append(sec)
    return sections
