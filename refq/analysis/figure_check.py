"""Report figures checked against their panel schemas (`refq.analysis.document`) before drawing.

    check_figure(figure) -> [panel dict]      the panels as plain arrays, or InputError

Each checked panel is a dict: "kind", "title", "xlabel", "ylabel", "log_y", and by kind
- "lines": "series" [(name, x, y, style)] with style line, points or steps; "markers" and
  "vlines" [(x, y, label)];
- "scatter": "series" [(name, x, y, style)]; "labels" [(x, y, text)];
- "bars": "labels" [str], "horizontal", "highlight" {label}, "series" [(name, values)] with one
  value per label;
- "histogram": "edges" (one more than the counts; with counts, finite and increasing), "counts"
  (NaN as 0), "vlines" [(x, y, label)], "spans" [(lo, hi, label)].
Numbers become float64 vectors; None, NaN and ±Inf become NaN (not drawn).

Errors: a panel whose numbers do not fit its schema (series of unequal lengths, edges that are not
one more than the counts, a missing key, a value that is not a number) raises InputError naming
the figure, the panel and what is wrong.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from .document import Figure

__all__ = ["check_figure"]


def _where(figure, index, panel) -> str:
    title = f" ({panel.title!r})" if panel.title else ""
    return f"figure {figure.id!r}, panel {index}{title}"


def _numbers(values, what, where) -> np.ndarray:
    """A float64 vector of `values`; None, NaN and ±Inf become NaN (not drawn)."""
    if not isinstance(values, (list, tuple, np.ndarray)):
        raise InputError(f"{where}: {what} must be a list of numbers, not {type(values).__name__}")
    try:
        out = np.array([np.nan if v is None else v for v in values], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {what} holds a value that is not a number; give numbers "
                         "or None") from None
    out[~np.isfinite(out)] = np.nan
    return out


def _get(data, key, where, default=None, required=False):
    if key not in data:
        if required:
            raise InputError(f"{where}: its data has no {key!r}; see refq.analysis.document "
                             "for the panel schema")
        return default
    return data[key]


def _rules(data, key, where) -> list:
    """`vlines` or `markers`: [(x, y or None, label)] with finite numbers only."""
    out = []
    for j, item in enumerate(_get(data, key, where, []) or []):
        if not isinstance(item, dict) or "x" not in item:
            raise InputError(f"{where}: {key}[{j}] must be a dict with 'x'")
        x = _numbers([item["x"]], f"{key}[{j}].x", where)[0]
        y = _numbers([item.get("y")], f"{key}[{j}].y", where)[0]
        out.append((x, y, str(item.get("label", "") or item.get("text", "") or "")))
    return out


def _series_xy(data, where, styles=None) -> list:
    """[(name, x, y, style)] for "lines"/"scatter"; x and y of equal length."""
    out = []
    for j, s in enumerate(_get(data, "series", where, required=True)):
        if not isinstance(s, dict):
            raise InputError(f"{where}: series {j} must be a dict with 'name', 'x' and 'y'")
        name = str(s.get("name", ""))
        tag = f"series {j} ({name!r})"
        x = _numbers(_get(s, "x", f"{where}, {tag}", required=True), "x", f"{where}, {tag}")
        y = _numbers(_get(s, "y", f"{where}, {tag}", required=True), "y", f"{where}, {tag}")
        if len(x) != len(y):
            raise InputError(f"{where}: {tag} has {len(x)} x values and {len(y)} y values; "
                             "give every series as many x as y values")
        style = s.get("style", "line")
        if styles is not None and style not in styles:
            raise InputError(f"{where}: {tag} has style {style!r}; use one of {', '.join(styles)}")
        out.append((name, x, y, style))
    return out


def check_figure(figure: Figure) -> list:
    """The panels of `figure` as plain arrays, checked against their schemas (InputError if not)."""
    if not figure.panels:
        raise InputError(f"figure {figure.id!r} has no panels; give it at least one")
    checked = []
    for i, panel in enumerate(figure.panels):
        where = _where(figure, i, panel)
        d = panel.data if isinstance(panel.data, dict) else None
        if d is None:
            raise InputError(f"{where}: data must be a dict")
        p = {"kind": panel.kind, "title": panel.title, "xlabel": str(d.get("xlabel", "") or ""),
             "ylabel": str(d.get("ylabel", "") or ""), "log_y": bool(d.get("log_y", False))}
        if panel.kind == "lines":
            p["series"] = _series_xy(d, where, ("line", "points", "steps"))
            p["markers"], p["vlines"] = _rules(d, "markers", where), _rules(d, "vlines", where)
        elif panel.kind == "scatter":
            p["series"] = _series_xy(d, where)
            p["labels"] = _rules(d, "labels", where)
        elif panel.kind == "bars":
            labels = [str(v) for v in _get(d, "labels", where, required=True)]
            p["labels"], p["horizontal"] = labels, bool(d.get("horizontal", False))
            p["highlight"] = {str(v) for v in d.get("highlight", []) or []}
            p["series"] = []
            for j, s in enumerate(_get(d, "series", where, required=True)):
                tag = f"{where}, series {j}"
                values = _numbers(_get(s, "values", tag, required=True), "values", tag)
                if len(values) != len(labels):
                    raise InputError(f"{tag} ({s.get('name', '')!r}) has {len(values)} values "
                                     f"for {len(labels)} labels; give one value per label")
                p["series"].append((str(s.get("name", "")), values))
        else:  # histogram
            edges = _numbers(_get(d, "edges", where, required=True), "edges", where)
            counts = _numbers(_get(d, "counts", where, required=True), "counts", where)
            if len(edges) != len(counts) + 1:
                raise InputError(f"{where}: {len(edges)} edges for {len(counts)} counts; give "
                                 "one edge more than counts")
            if len(counts) and (np.isnan(edges).any() or (np.diff(edges) <= 0).any()):
                raise InputError(f"{where}: histogram edges must be finite and increasing")
            p["edges"], p["counts"] = edges, np.nan_to_num(counts, nan=0.0)
            p["vlines"] = _rules(d, "vlines", where)
            p["spans"] = []
            for j, s in enumerate(_get(d, "spans", where, []) or []):
                lo, hi = _numbers([s.get("lo"), s.get("hi")], f"spans[{j}]", where)
                p["spans"].append((lo, hi, str(s.get("label", "") or "")))
        checked.append(p)
    return checked
