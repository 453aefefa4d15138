"""What the compression and learned-quantization commands did, kept in the model file and shown
in the report (sections "compression", "adaround", "qat").

The `/history` section of a .refq.h5 file (`refq.model_io`) holds
    {"format": "refq-history", "version": 1, "entries": [entry, ...]}
one entry per `refq compress`, `refq adaround` and `refq qat` run, oldest first. A command that
makes a file from another carries the input's entries forward and appends its own (`carry`);
`refq quantize` and `refq bn-reestimate` carry them without adding one. An entry holds no time,
path or duration: the same inputs and seed give the same bytes. Every entry has "command",
"model" (the graph's name), "options" (the settings that change the result) and "samples":
- compress: "evaluation" (what the scores measure), "eval_table" (the greedy search's
  {layer: {ratio: score}} in the eval table JSON format of `refq.compression.eval_table`, None
  for --ratios), "layers" {layer: {"ratio", "macs_before", "macs_after", "params_before",
  "params_after"}} for the compressed layers, "model" (the same four totals and the achieved
  cost "ratio"), "selected_score", "search_steps" [{"lo", "hi", "mid", "ratio"}],
  "score_before", "score_after" (None without evaluation data), "fine_tune" (None, or a
  training record below plus "score" after it).
- adaround: "layers" {layer: {"op", "activation", "loss", "recon_loss", "round_loss",
  "hard_fraction", "up_fraction", "curve"}} as `refq.algorithms.adaround` reports them (the
  curve every k iterations, k = ceil(T/CURVE_POINTS)), "skipped" {layer: reason}.
- qat: a training record: "steps", "steps_per_epoch", "epoch_loss" (the mean loss of each
  epoch's steps), "eval" (a metric after each epoch, [] when the command has none), "loss_curve"
  {"every": k, "step": [s], "loss": [m]}: m = the mean loss of steps s−k+1..s (1-based, the last
  window may be shorter), k = ceil(steps/STEP_POINTS).

`load_history(path)` reads and checks the section ([] without one); a malformed one is a
FormatError naming the file, the section and the entry. `history_sections(entries)` builds the
report sections; their tables hold the entries' numbers as they are.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import FormatError
from .document import Figure, Panel, Section, Table, slug

__all__ = ["SECTION", "HISTORY_FORMAT", "HISTORY_VERSION", "CURVE_POINTS", "STEP_POINTS",
           "load_history", "check_history", "history_doc", "carry", "adaround_entry",
           "training_record", "qat_entry", "compress_entry", "eval_table_doc",
           "history_sections"]

SECTION = "history"
HISTORY_FORMAT = "refq-history"
HISTORY_VERSION = 1
CURVE_POINTS = 200    # most points of an AdaRound layer's loss curve
STEP_POINTS = 500     # most points of a training loss curve
SCORE_FIGURES = 4     # compression: figures of score against ratio
LAYERS_PER_PANEL = 5
PANELS_PER_FIGURE = 4
ADAROUND_FIGURES = 4


# ---- recording -----------------------------------------------------------------------------
def _plain(v):
    """JSON values: NumPy scalars and arrays become Python numbers and lists."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def history_doc(entries: list) -> dict:
    return {"format": HISTORY_FORMAT, "version": HISTORY_VERSION, "entries": _plain(entries)}


def carry(earlier: list, entry: dict | None = None) -> dict | None:
    """The `/history` document of a file made from a file whose entries are `earlier`
    (`load_history`, read before the work so that a damaged section fails first): those
    entries plus `entry`; None when there is nothing to record (no history section)."""
    entries = list(earlier) + ([entry] if entry is not None else [])
    return history_doc(entries) if entries else None


def adaround_entry(report: dict, *, model: str, options: dict, samples: int) -> dict:
    """The entry of an AdaRound run from `refq.algorithms.adaround`'s report (recorded with
    curve_points); the per-layer seconds are left out (they differ between runs)."""
    layers = {name: {k: v for k, v in row.items() if k != "seconds"}
              for name, row in report["layers"].items()}
    return {"command": "adaround", "model": model, "options": dict(options),
            "samples": int(samples), "layers": layers, "skipped": dict(report["skipped"])}


def training_record(losses, steps_per_epoch: int, evals=()) -> dict:
    """A training run's record (module docstring) from the loss of every step."""
    losses = [float(v) for v in losses]
    n = len(losses)
    every = max(1, -(-n // STEP_POINTS))
    starts = range(0, n, every)
    ends = [min(s + every, n) for s in starts]
    windows = [float(np.mean(losses[s:s + every])) for s in starts]
    epochs = [float(np.mean(losses[s:s + steps_per_epoch]))
              for s in range(0, n, steps_per_epoch)]
    return {"steps": n, "steps_per_epoch": int(steps_per_epoch), "epoch_loss": epochs,
            "eval": [float(v) for v in evals],
            "loss_curve": {"every": every, "step": ends, "loss": windows}}


def qat_entry(report: dict, *, model: str, options: dict, samples: int,
              steps_per_epoch: int) -> dict:
    """The entry of a `refq qat` run from `refq.grad.train.train`'s report."""
    return {"command": "qat", "model": model, "options": dict(options), "samples": int(samples),
            **training_record(report["loss"], steps_per_epoch, report.get("eval", ()))}


def eval_table_doc(table: dict, info: dict) -> dict:
    """{layer: {ratio: score}} and {"method", "cost", "evaluation"} as the eval table JSON
    (`refq.compression.eval_table`: ratios as their shortest decimal text, ascending)."""
    from ..compression.eval_table import TABLE_FORMAT, TABLE_VERSION

    return {"format": TABLE_FORMAT, "version": TABLE_VERSION, "method": info["method"],
            "cost": info["cost"], "evaluation": info["evaluation"],
            "scores": {layer: {repr(float(r)): float(scores[r]) for r in sorted(scores)}
                       for layer, scores in table.items()}}


def compress_entry(report: dict, *, model: str, options: dict, samples, evaluation: str,
                   eval_table: dict | None, fine_tune: dict | None) -> dict:
    """The entry of a `refq compress` run from `refq.compression.compress_model`'s report."""
    return {"command": "compress", "model": model, "options": dict(options),
            "samples": None if samples is None else int(samples), "evaluation": evaluation,
            "eval_table": eval_table, "layers": report["layers"], "model_cost": report["model"],
            "selected_score": report.get("selected_score"),
            "search_steps": report.get("search_steps", []),
            "score_before": report.get("score_before"), "score_after": report.get("score_after"),
            "fine_tune": fine_tune}


# ---- reading and checking ------------------------------------------------------------------
NUM, INT, STR, BOOL = "number", "integer", "string", "boolean"
_KINDS = {NUM: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
          STR: lambda v: isinstance(v, str), BOOL: lambda v: isinstance(v, bool)}


def opt(spec):
    return ("optional", spec)


def listof(spec):
    return ("list", spec)


def mapof(spec):
    return ("map", spec)


_CURVE = {"every": INT, "iteration": listof(INT), "recon_loss": listof(NUM),
          "round_loss": listof(NUM), "beta": listof(opt(NUM))}
_LOSS_CURVE = {"every": INT, "step": listof(INT), "loss": listof(NUM)}
_TRAINING = {"steps": INT, "steps_per_epoch": INT, "epoch_loss": listof(NUM),
             "eval": listof(NUM), "loss_curve": _LOSS_CURVE}
_COST_ROW = {k: INT for k in ("macs_before", "macs_after", "params_before", "params_after")}
_EVAL_TABLE = {"format": STR, "version": INT, "method": STR, "cost": STR, "evaluation": STR,
               "scores": mapof(mapof(NUM))}
_BASE = {"command": STR, "model": STR, "options": mapof(opt(("any",)))}
SCHEMAS = {
    "adaround": {**_BASE, "samples": INT, "skipped": mapof(STR), "layers": mapof({
        "op": STR, "activation": opt(STR), "loss": NUM, "recon_loss": NUM, "round_loss": NUM,
        "hard_fraction": NUM, "up_fraction": NUM, "curve": _CURVE})},
    "qat": {**_BASE, "samples": INT, **_TRAINING},
    "compress": {**_BASE, "samples": opt(INT), "evaluation": STR, "eval_table": opt(_EVAL_TABLE),
                 "layers": mapof({"ratio": NUM, **_COST_ROW}),
                 "model_cost": {**_COST_ROW, "ratio": NUM}, "selected_score": opt(NUM),
                 "search_steps": listof({k: NUM for k in ("lo", "hi", "mid", "ratio")}),
                 "score_before": opt(NUM), "score_after": opt(NUM),
                 "fine_tune": opt({**_TRAINING, "score": opt(NUM)})},
}
#: the lists of a curve: one value per point
_SAME_LENGTH = {id(_CURVE): ("iteration", "recon_loss", "round_loss", "beta"),
                id(_LOSS_CURVE): ("step", "loss")}


def _check(value, spec, where: str):
    """ValueError naming `where` unless `value` matches `spec` (a kind name, ("optional", s),
    ("list", s), ("map", s) {str: s}, ("any",) any JSON value, or a dict: exactly these keys)."""
    if isinstance(spec, str):
        if not _KINDS[spec](value):
            raise ValueError(f"{where} must be a {spec}, got {str(value)[:40]!r}")
    elif isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object, got {type(value).__name__}")
        missing, unknown = sorted(set(spec) - set(value)), sorted(set(value) - set(spec))
        if missing or unknown:
            raise ValueError(f"{where}: fields missing {missing}, unknown {unknown}")
        for k, s in spec.items():
            _check(value[k], s, f"{where}.{k}")
        keys = _SAME_LENGTH.get(id(spec), ())
        if len({len(value[k]) for k in keys}) > 1:
            raise ValueError(f"{where}: {', '.join(keys)} have different lengths")
    elif spec[0] == "any":
        return
    elif spec[0] == "optional":
        if value is not None:
            _check(value, spec[1], where)
    elif spec[0] in ("list", "map"):
        kind = list if spec[0] == "list" else dict
        if not isinstance(value, kind):
            raise ValueError(f"{where} must be a{'' if kind is list else 'n'} "
                             f"{'list' if kind is list else 'object'}")
        items = enumerate(value) if kind is list else value.items()
        for k, v in items:
            _check(v, spec[1], f"{where}[{k}]" if kind is list else f"{where}.{k}")


def _check_eval_table(doc, where):
    for layer, scores in doc["scores"].items():
        for key in scores:
            try:
                r = float(key)
            except ValueError:
                r = math.nan
            if not 0 < r <= 1:
                raise ValueError(f"{where}.eval_table.scores.{layer}: ratio {key[:40]!r} is not "
                                 "a number in (0, 1]")


def check_history(doc, source: str) -> list:
    """The entries of a `/history` document, checked; FormatError naming `source` otherwise."""
    def bad(why):
        raise FormatError(f"{source}: section '/{SECTION}' {why}; re-create the file with the "
                          "commands that wrote it")

    if not isinstance(doc, dict) or set(doc) != {"format", "version", "entries"}:
        bad('is not an object {"format", "version", "entries"}')
    if doc["format"] != HISTORY_FORMAT or not _KINDS[INT](doc["version"]) \
            or doc["version"] != HISTORY_VERSION:
        bad(f"has format {str(doc['format'])[:40]!r} version {str(doc['version'])[:10]}; this "
            f"refq reads {HISTORY_FORMAT!r} version {HISTORY_VERSION}")
    if not isinstance(doc["entries"], list):
        bad("field 'entries' is not a list")
    for i, entry in enumerate(doc["entries"]):
        command = entry.get("command") if isinstance(entry, dict) else None
        if command not in SCHEMAS:
            bad(f"entry {i}: 'command' is {str(command)[:40]!r}, not one of {sorted(SCHEMAS)}")
        where = f"entry {i} ({command})"
        try:
            _check(entry, SCHEMAS[command], where)
            if command == "compress" and entry["eval_table"] is not None:
                _check_eval_table(entry["eval_table"], where)
        except ValueError as e:
            bad(str(e))
    return doc["entries"]


def load_history(path) -> list:
    """The checked entries of the `/history` section of the .refq.h5 file `path`, [] without
    one (the file itself is checked as `refq.model_io.load_section` does)."""
    from ..model_io import load_section

    doc = load_section(path, SECTION)
    return [] if doc is None else check_history(doc, str(path))


# ---- report sections -----------------------------------------------------------------------
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


def _compression(entries) -> Section | None:
    runs = _runs(entries, "compress")
    if not runs:
        return None
    sec = Section("compression", "Compression", summary=(
        "The greedy search compressed each layer alone at each candidate ratio (smaller = more "
        "compressed) and scored the model; it then chose per-layer ratios reaching the target "
        "cost. Read the curves for layers whose score falls early: they keep large ratios."))
    for n, (tag, title, e) in enumerate(runs):
        sid = f"compression.{tag}".rstrip(".")
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
        if n != len(runs) - 1:
            continue   # figures show the last run
        if table:
            sec.figures.extend(_score_figures(e, table, layers, sid))
        sec.figures.append(Figure(f"{sid}.ratios", "Chosen ratio per layer", [Panel("bars", {
            "labels": layers, "series": [{"name": "ratio", "values": [
                1.0 if _chosen(e, layer) is None else _chosen(e, layer) for layer in layers]}],
            "xlabel": "layer", "ylabel": "ratio (1 = not compressed)", "horizontal": False,
            "highlight": [layer for layer, _ in compressed]})]))
        if ft is not None:
            sec.figures.append(_loss_figure(f"{sid}.fine_tune_loss", "Fine-tuning loss", ft))
    return sec


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


def _adaround(entries) -> Section | None:
    runs = _runs(entries, "adaround")
    if not runs:
        return None
    sec = Section("adaround", "AdaRound", summary=(
        "AdaRound learned, layer by layer, whether each weight rounds down or up, minimising the "
        "layer's reconstruction loss plus a regulariser that pushes the soft rounding to 0 or 1. "
        "A reconstruction loss that stays high marks a layer that rounding cannot fix."))
    for n, (tag, title, e) in enumerate(runs):
        sid = f"adaround.{tag}".rstrip(".")
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
        if n != len(runs) - 1:
            continue
        for i, name in enumerate(worst[:ADAROUND_FIGURES]):
            sec.figures.append(_adaround_figure(f"{sid}.curve.{i + 1}.{slug(name)}", name,
                                                e["layers"][name]["curve"]))
    return sec


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


def _qat(entries) -> Section | None:
    runs = _runs(entries, "qat")
    if not runs:
        return None
    sec = Section("qat", "Quantization-aware training", summary=(
        "The loss of quantization-aware fine-tuning, step by step (means of a few steps) and per "
        "epoch. A loss still falling at the end suggests more epochs."))
    for n, (tag, title, e) in enumerate(runs):
        sid = f"qat.{tag}".rstrip(".")
        evals = e["eval"] + [None] * (len(e["epoch_loss"]) - len(e["eval"]))
        sec.tables.append(Table(f"{sid}.epochs", f"Loss per epoch{title}: {_options(e)}",
                                ["epoch", "mean loss", "eval"],
                                [[i + 1, v, evals[i]] for i, v in enumerate(e["epoch_loss"])]))
        if e["epoch_loss"]:
            sec.findings.append(f"QAT{title}: {e['steps']} steps, mean loss "
                                f"{e['epoch_loss'][0]:.4g} in the first epoch -> "
                                f"{e['epoch_loss'][-1]:.4g} in the last")
        if n == len(runs) - 1:
            sec.figures.append(_loss_figure(f"{sid}.loss", "QAT loss", e))
    return sec


def history_sections(history: list) -> list:
    """[Section] "compression", "adaround", "qat" for the entries of `history` (only those
    present), built from the entries' numbers."""
    return [s for s in (_compression(history), _adaround(history), _qat(history))
            if s is not None]
