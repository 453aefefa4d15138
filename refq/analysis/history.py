"""What the compression and learned-quantization commands did, kept in the model file: the
`/history` section's format, its checks and the entries each command records.

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
FormatError naming the file, the section and the entry. The report sections built from the
entries ("compression", "adaround", "qat") are `refq.analysis.history_report.history_sections`.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import FormatError

__all__ = ["SECTION", "HISTORY_FORMAT", "HISTORY_VERSION", "CURVE_POINTS", "STEP_POINTS",
           "load_history", "check_history", "history_doc", "carry", "adaround_entry",
           "training_record", "qat_entry", "compress_entry", "eval_table_doc"]

SECTION = "history"
HISTORY_FORMAT = "refq-history"
HISTORY_VERSION = 1
CURVE_POINTS = 200    # most points of an AdaRound layer's loss curve
STEP_POINTS = 500     # most points of a training loss curve


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
