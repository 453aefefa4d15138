"""The report document: what every analysis produces and every renderer (HTML, plot files, JSON) reads.

A `Report` is a list of `Section`s. A section holds prose (`summary`, `findings`), `Table`s and
`Figure`s. A figure holds only numbers: one or more `Panel`s, each of a small set of kinds, so the
numbers behind every picture are in the document itself (`Report.to_json`) and the pictures are
drawn from them alone (`refq.analysis.plots`). Nothing here depends on matplotlib.

Panel kinds and their `data` (every value JSON-able: lists of numbers, strings, None):
- "lines": {"series": [{"name", "x": [...], "y": [...], "style": "line"|"points"|"steps"}],
            "xlabel", "ylabel", "log_y": bool,
            "markers": [{"x", "y", "label"}],            optional: points to annotate
            "vlines": [{"x", "label"}]}                  optional: vertical rules
- "bars":  {"labels": [...], "series": [{"name", "values": [...]}], "xlabel", "ylabel",
            "horizontal": bool, "highlight": [label, ...],   highlighted bars are drawn in another colour
            "log_y": bool}                                   the value axis in log scale
- "histogram": {"edges": [n+1 numbers], "counts": [n numbers], "xlabel", "ylabel", "log_y": bool,
            "vlines": [{"x", "label"}], "spans": [{"lo", "hi", "label"}]}   spans: shaded ranges
- "scatter": {"series": [{"name", "x": [...], "y": [...]}], "xlabel", "ylabel",
            "labels": [{"x", "y", "text"}]}

Table cells are str, int, float, bool or None (shown as an empty cell). `formats` maps a column
name to a Python format spec for its numbers ("{:.1f}"); columns without one show ints as they are
and floats with 4 significant digits. Ids are unique in a report and made of [A-Za-z0-9_.-]
(`slug` makes one from any name); they become HTML anchors and plot file names.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = ["Report", "Section", "Table", "Figure", "Panel", "PANEL_KINDS", "slug", "unique_ids",
           "format_cell"]

PANEL_KINDS = ("lines", "bars", "histogram", "scatter")
_ID = re.compile(r"[A-Za-z0-9_.-]+\Z")


def slug(name: str) -> str:
    """An id from any name: runs of characters outside [A-Za-z0-9_.-] become one '-'."""
    s = re.sub(r"[^A-Za-z0-9_.]+", "-", str(name)).strip("-")
    return s or "x"


def unique_ids(ids) -> list:
    """`ids` in order, each repeat suffixed -2, -3, ... (two names may share a slug: "a/b", "a-b")."""
    out, used = [], set()
    for base in ids:
        fid, k = base, 1
        while fid in used:
            k += 1
            fid = f"{base}-{k}"
        used.add(fid)
        out.append(fid)
    return out


def _json_value(v):
    """Plain Python values for JSON: NumPy scalars and arrays become numbers and lists; NaN/Inf -> None."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


def format_cell(value, spec: str | None = None) -> str:
    """The text of one table cell: None -> "", a bool as yes/no, numbers by `spec` or 4 significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if spec and isinstance(value, (int, float)):
        return spec.format(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Panel:
    kind: str
    data: dict
    title: str = ""

    def __post_init__(self):
        if self.kind not in PANEL_KINDS:
            raise ValueError(f"panel kind {self.kind!r} is not one of {', '.join(PANEL_KINDS)}")

    def to_json(self) -> dict:
        return {"kind": self.kind, "title": self.title, "data": _json_value(self.data)}


@dataclass
class Figure:
    id: str
    title: str
    panels: list
    caption: str = ""

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "caption": self.caption,
                "panels": [p.to_json() for p in self.panels]}


@dataclass
class Table:
    id: str
    caption: str
    columns: list
    rows: list
    formats: dict = field(default_factory=dict)
    note: str = ""

    def __post_init__(self):
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.id!r}: row {i} has {len(row)} cells for "
                                 f"{len(self.columns)} columns")

    def to_json(self) -> dict:
        return {"id": self.id, "caption": self.caption, "columns": list(self.columns),
                "rows": _json_value(self.rows), "note": self.note}


@dataclass
class Section:
    id: str
    title: str
    summary: str = ""
    findings: list = field(default_factory=list)
    tables: list = field(default_factory=list)
    figures: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "summary": self.summary,
                "findings": list(self.findings),
                "tables": [t.to_json() for t in self.tables],
                "figures": [f.to_json() for f in self.figures]}


@dataclass
class Report:
    title: str
    sections: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def check_ids(self) -> None:
        """Every section, table and figure id is well formed and unique in the report."""
        seen = set()
        for s in self.sections:
            for obj in [s, *s.tables, *s.figures]:
                if not _ID.match(obj.id):
                    raise ValueError(f"report id {obj.id!r} has characters outside [A-Za-z0-9_.-]")
                if obj.id in seen:
                    raise ValueError(f"report id {obj.id!r} is used twice")
                seen.add(obj.id)

    def to_json(self) -> dict:
        self.check_ids()
        return {"title": self.title, "meta": _json_value(self.meta),
                "sections": [s.to_json() for s in self.sections]}
