"""The greedy search's eval table as a JSON file: written atomically where the caller says,
read back strictly, never pickled.

    {"format": "refq-compression-eval-table", "version": 1,
     "method": "spatial-svd", "cost": "macs", "evaluation": "accuracy on 200 samples",
     "scores": {"conv_1": {"0.1": 0.52, "0.2": 0.81, ...}, ...}}

`scores` maps each layer (node name) to {ratio: score}: the ratio as the shortest decimal text
that reads back as the same float64 (`repr`), in (0, 1]; the score a finite number. Layers keep
their order (the model's forward order) and ratios are written ascending. `evaluation` is a
free description of what the scores measure; `cost` says what the ratios measure ("macs" or
"params": for the SVDs a layer's rank follows from its ratio of that cost). Reading checks every
field and names the file, the layer and the entry at fault (FormatError).
"""
from __future__ import annotations

import math

from ..atomic import atomic_path
from ..errors import FormatError
from ..model_io.strict_json import is_json_int, parse_json

__all__ = ["save_eval_table", "load_eval_table", "TABLE_FORMAT", "TABLE_VERSION", "COSTS"]

TABLE_FORMAT = "refq-compression-eval-table"
TABLE_VERSION = 1
_FIELDS = ("format", "version", "method", "cost", "evaluation", "scores")
COSTS = ("macs", "params")


def _text(table: dict, method: str, cost: str, evaluation: str) -> str:
    import json

    doc = {"format": TABLE_FORMAT, "version": TABLE_VERSION, "method": method, "cost": cost,
           "evaluation": evaluation,
           "scores": {layer: {repr(float(r)): float(scores[r]) for r in sorted(scores)}
                      for layer, scores in table.items()}}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def save_eval_table(path, table: dict, *, method: str, cost: str = "macs",
                    evaluation: str = "") -> None:
    """Write `table` ({layer: {ratio: score}}) to `path` as JSON (module docstring), atomically
    (a failed write leaves any previous file unchanged). Scores must be finite."""
    for layer, scores in table.items():
        for r, s in scores.items():
            if not (math.isfinite(float(s)) and 0 < float(r) <= 1):
                raise FormatError(f"{path}: cannot save layer '{layer}' ratio {r!r} score "
                                  f"{s!r}: ratios lie in (0, 1] and scores are finite numbers")
    if cost not in COSTS:
        raise FormatError(f"{path}: cost {cost!r} is not one of {COSTS}")
    text = _text(table, method, cost, evaluation)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def _duplicate_key(text: str):
    """The first key that appears twice in one JSON object of `text` (already valid JSON), or
    None (json.loads alone keeps the last of two equal keys silently)."""
    import json

    found = []

    def pairs(items):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys) and not found:
            found.append(next(k for i, k in enumerate(keys) if k in keys[:i]))
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)
    return found[0] if found else None


def _ratio(key: str, where: str) -> float:
    try:
        value = float(key)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1) or key.strip() != key:
        raise FormatError(f"{where}: ratio {key[:40]!r} is not a number in (0, 1]")
    return value


def load_eval_table(path) -> tuple:
    """(table {layer: {ratio: score}}, {"method", "cost", "evaluation"}) read from the JSON file
    at `path`. FormatError (one line naming the file and entry) for anything but the format of
    the module docstring: not UTF-8 or not JSON, NaN/Infinity, a missing or unknown field,
    another format or version, a layer without scores, a ratio outside (0, 1] or written twice,
    a key repeated in one object, a score that is not a finite number."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise FormatError(f"{path}: cannot read the eval table ({e.strerror or e}); check the "
                          "path") from None
    try:
        doc = parse_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not UTF-8 text; an eval table is a JSON file written by "
                          "`refq compress --eval-table`") from None
    except ValueError as e:
        raise FormatError(f"{path}: not valid JSON ({e}); an eval table is a JSON file written "
                          "by `refq compress --eval-table`") from None
    duplicate = _duplicate_key(raw.decode("utf-8"))
    if duplicate is not None:
        raise FormatError(f"{path}: the key {duplicate[:60]!r} appears twice in one object; "
                          "each layer and each ratio is written once")
    if not isinstance(doc, dict):
        raise FormatError(f"{path}: the eval table must be a JSON object, got "
                          f"{type(doc).__name__}")
    missing = [k for k in _FIELDS if k not in doc]
    unknown = sorted(set(doc) - set(_FIELDS))
    if missing or unknown:
        raise FormatError(f"{path}: eval table fields missing {missing}, unknown {unknown}; "
                          f"expected exactly {list(_FIELDS)}")
    if doc["format"] != TABLE_FORMAT:
        raise FormatError(f"{path}: format {str(doc['format'])[:60]!r} is not "
                          f"{TABLE_FORMAT!r}; give an eval table written by refq")
    if not is_json_int(doc["version"]) or doc["version"] != TABLE_VERSION:
        raise FormatError(f"{path}: eval table version {doc['version']!r}; this refq reads "
                          f"version {TABLE_VERSION}")
    for key in ("method", "cost", "evaluation"):
        if not isinstance(doc[key], str):
            raise FormatError(f"{path}: field '{key}' must be a string")
    if doc["cost"] not in COSTS:
        raise FormatError(f"{path}: cost {doc['cost'][:40]!r} is not one of {list(COSTS)}")
    scores = doc["scores"]
    if not isinstance(scores, dict) or not scores:
        raise FormatError(f"{path}: 'scores' must be a non-empty object {{layer: {{ratio: "
                          "score}}}}")
    table = {}
    for layer, per_layer in scores.items():
        where = f"{path}: layer '{layer}'"
        if not isinstance(per_layer, dict) or not per_layer:
            raise FormatError(f"{where}: expected a non-empty object {{ratio: score}}")
        entries = {}
        for key, score in per_layer.items():
            ratio = _ratio(key, where)
            if ratio in entries:
                raise FormatError(f"{where}: ratio {key!r} appears twice (as "
                                  f"{[k for k in per_layer if _ratio(k, where) == ratio]})")
            if isinstance(score, bool) or not isinstance(score, (int, float)) \
                    or not math.isfinite(score):
                raise FormatError(f"{where}: ratio {key}: score {str(score)[:40]!r} is not a "
                                  "finite number")
            entries[ratio] = float(score)
        table[layer] = {r: entries[r] for r in sorted(entries)}
    return table, {k: doc[k] for k in ("method", "cost", "evaluation")}
