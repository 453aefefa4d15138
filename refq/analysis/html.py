"""A report as one self-contained HTML page: open it anywhere, with no network access.

    render_html(report, plots=True) -> str       the page
    write_html(report, path, plots=True)         the page, written atomically (UTF-8)

The page holds, in order: the report's title, its `meta` as a small table, a table of contents
linking every section, figure and table, then each section: its summary, its findings as a list,
its figures (inline SVG drawn by `refq.analysis.plots`, with title and caption) and its tables
(caption, cells formatted by `Table.formats`, note).

Self-contained: CSS and one small script are inline; figures are inline SVG; there is no URL to
anything outside the page (the only `href`s are `#anchors` and an empty data: icon, which keeps a
browser from asking for /favicon.ico). Everything taken from the report is HTML-escaped, and no
report text goes into the script, so no name can end the script or a tag.

Inline SVG ids: matplotlib names the clip paths and markers of every picture it draws alike
(`p<hash>`, `m<hash>`, `axes_1`, ...), so two figures in one page would share ids. Ids that
nothing refers to are dropped; the others, and every reference to them (`href="#…"`,
`url(#…)`), are renamed `f<figure number>~<k>`; "~" never occurs in report ids, so these cannot
meet the report's own anchors.

Sortable tables: clicking a column header (or Enter on it) sorts the rows by that column,
ascending, then descending on the next click; the sort is stable (ties keep their order) and the
header shows an arrow (its `aria-sort`). A column whose cells are all numbers (or empty) sorts by
each cell's `data-v` attribute, the raw value (`repr` of the float, "NaN", "Infinity"), not by the
formatted text; NaN cells come after the numbers and empty cells last, in both directions. Other
columns sort by text (numeric-aware collation: conv2 before conv10), empty cells last.

Without matplotlib (or with plots=False) every table is still there, and where a figure would be
the page says how to draw it (`pip install 'refq[plot]'`) and that its numbers are in the JSON
report. The same report always gives the same bytes.
"""
from __future__ import annotations

import html
import json
import math
import re

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from . import plots as _plots
from .document import Figure, Report, Table, format_cell

__all__ = ["render_html", "write_html", "inline_svg", "sort_value", "numeric_column"]

ID_SEPARATOR = "~"

_CSS = """
:root{--fg:#1d232b;--muted:#5b6470;--line:#d9dee5;--bg2:#f4f6f9;--hl:#d62728;--link:#1f5fa8}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:#fff}
main,header,nav{max-width:1180px;margin:0 auto;padding:0 20px}
h1{font-size:24px;margin:22px 0 8px}
h2{font-size:19px;margin:34px 0 6px;padding-top:8px;border-top:2px solid var(--line)}
a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
td.num,th.num{text-align:right}
tbody tr:nth-child(even){background:var(--bg2)}
table.meta th{color:var(--muted);font-weight:600}
table.meta td{font-family:ui-monospace,"DejaVu Sans Mono",monospace;white-space:pre-wrap;
word-break:break-all}
.tablewrap{max-height:34em;overflow:auto;border:1px solid var(--line);margin:4px 0}
.tablewrap thead th{position:sticky;top:0;background:#e9edf2;z-index:1}
.tablewrap table{width:100%}
caption{caption-side:top;text-align:left;font-weight:600;padding:4px 8px;background:#fff}
thead th{cursor:pointer;user-select:none;white-space:nowrap}
thead th::after{content:" \\2195";opacity:.3;font-size:11px}
thead th[aria-sort=ascending]::after{content:" \\25B2";opacity:1}
thead th[aria-sort=descending]::after{content:" \\25BC";opacity:1}
.note,.caption,.empty{color:var(--muted);font-size:12.5px;margin:4px 0 14px}
.summary{margin:6px 0}
ul.findings{margin:6px 0 12px;padding-left:22px}
ul.findings li{margin:2px 0}
figure{margin:16px 0 22px}
figure .title{font-weight:600;margin:0 0 4px}
figure svg{display:block;max-width:100%;height:auto}
.noplot{border:1px dashed var(--line);background:var(--bg2);padding:14px;color:var(--muted)}
nav.toc{font-size:13px}
nav.toc ol{padding-left:22px}
nav.toc ul{padding-left:18px;margin:2px 0 6px;columns:2;column-gap:28px}
nav.toc ul li{break-inside:avoid}
.kind{color:var(--muted);font-size:11px}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;background:var(--bg2);padding:0 3px}
"""

_SCRIPT = """
(function () {
  "use strict";
  var collator = new Intl.Collator("en", {numeric: true, sensitivity: "base"});
  function key(cell, numeric) {
    if (numeric) {
      var raw = cell.getAttribute("data-v");
      if (raw === null) return [2, 0];
      var x = Number(raw);
      return isNaN(x) ? [1, 0] : [0, x];
    }
    var text = cell.textContent;
    return text === "" ? [2, ""] : [0, text];
  }
  function sortBy(table, th, col) {
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var numeric = th.classList.contains("num");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
      var k = key(row.cells[col], numeric);
      return {row: row, i: i, rank: k[0], v: k[1]};
    });
    var sign = ascending ? 1 : -1;
    rows.sort(function (a, b) {
      if (a.rank !== b.rank) return a.rank - b.rank;
      var c = 0;
      if (a.rank === 0) c = numeric ? (a.v < b.v ? -1 : (a.v > b.v ? 1 : 0))
                                    : collator.compare(a.v, b.v);
      return c !== 0 ? sign * c : a.i - b.i;
    });
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r.row); });
    body.appendChild(frag);
    Array.prototype.forEach.call(th.parentNode.cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
})();
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


# ----------------------------------------------------------------------------- tables

def _plain_value(v):
    """NumPy scalars as Python numbers (cells are str, int, float, bool or None)."""
    return v.item() if isinstance(v, np.generic) else v


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def numeric_column(values) -> bool:
    """A column sorts by number when every non-empty cell is a number or bool (and one is not empty)."""
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) for v in present)


def sort_value(value) -> str | None:
    """The `data-v` of a cell in a numeric column: the raw number as JavaScript's Number() reads
    it (repr of a float, "NaN", "Infinity", "-Infinity"; bool as 1/0); None for an empty cell."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _cell_text(table: Table, column: str, value) -> str:
    spec = table.formats.get(column)
    try:
        return format_cell(value, spec)
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise InputError(f"table {table.id!r}, column {column!r}: format {spec!r} cannot show "
                         f"{value!r} ({e}); give a format spec such as '{{:.3g}}'") from None


def _table(table: Table, number: int) -> str:
    columns = [str(c) for c in table.columns]
    rows = [[_plain_value(v) for v in row] for row in table.rows]
    numeric = [numeric_column([row[j] for row in rows]) for j in range(len(columns))]
    out = [f'<div class="tablewrap"><table id="{_e(table.id)}" class="sortable">',
           f"<caption>Table {number}. {_e(table.caption)}</caption><thead><tr>"]
    for name, num in zip(columns, numeric):
        cls = ' class="num"' if num else ""
        out.append(f'<th{cls} tabindex="0" scope="col">{_e(name)}</th>')
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for name, num, value in zip(columns, numeric, row):
            text = _e(_cell_text(table, name, value))
            if num:
                raw = sort_value(value)
                data = "" if raw is None else f' data-v="{raw}"'
                out.append(f'<td class="num"{data}>{text}</td>')
            else:
                out.append(f"<td>{text}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    if not rows:
        out.append('<p class="empty">(no rows)</p>')
    if table.note:
        out.append(f'<p class="note">{_e(table.note)}</p>')
    return "".join(out)


def _meta(meta: dict) -> str:
    if not meta:
        return ""
    out = ['<table class="meta"><tbody>']
    for k, v in meta.items():
        v = _plain_value(v)
        if isinstance(v, (dict, list, tuple)):
            text = json.dumps(v, ensure_ascii=False, default=str)
        else:
            text = format_cell(v)
        out.append(f'<tr><th scope="row">{_e(k)}</th><td>{_e(text)}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


# ----------------------------------------------------------------------------- figures

_SVG_START = re.compile(r"<svg\b")
_REF = re.compile(r'href="#([^"]+)"|url\(#([^)]+)\)')
_ID_ATTR = re.compile(r'\sid="([^"]+)"')
_ID_REF = re.compile(r'(\sid="|href="#|url\(#)([^")]+)')
_GEOMETRY = re.compile(r'(\s(?:d|x|y|transform|points)=")([^"]*)"')
_LONG_DECIMAL = re.compile(r"-?\d+\.\d{3,}")


def _round_decimals(match) -> str:
    """Coordinates to 0.01 pt (1/7200 inch): far below a screen pixel, a third of the bytes."""
    text = re.sub(r"\.?0+$", "", f"{float(match.group(0)):.2f}")
    return "0" if text in ("", "-0") else text


def inline_svg(svg: bytes, figure: Figure, tag: str | None = None) -> str:
    """matplotlib's SVG document as an element for an HTML page: no XML prolog, DOCTYPE,
    metadata or namespace declarations (the HTML parser knows SVG), `xlink:href` as `href`, ids
    that nothing refers to dropped (matplotlib names every group), the others renamed
    `<tag>~1`, `<tag>~2`, ... in order of appearance (`tag`: the figure id unless given),
    coordinates rounded to 0.01 pt, white space between tags dropped."""
    text = svg.decode("utf-8")
    start = _SVG_START.search(text)
    if start is None:
        raise InputError(f"figure {figure.id!r}: the drawing is not an SVG document")
    text = text[start.start():]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\sxmlns(:\w+)?="[^"]*"', "", text)
    text = text.replace("xlink:href=", "href=")
    used = {a or b for a, b in _REF.findall(text)}
    text = _ID_ATTR.sub(lambda m: m.group(0) if m.group(1) in used else "", text)
    names = {}
    prefix = (tag or figure.id) + ID_SEPARATOR

    def rename(m):
        new = names.setdefault(m.group(2), f"{prefix}{len(names) + 1}")
        return m.group(1) + new

    text = _ID_REF.sub(rename, text)
    text = _GEOMETRY.sub(lambda m: m.group(1) + _LONG_DECIMAL.sub(_round_decimals, m.group(2))
                         + '"', text)
    text = re.sub(r">\s+<", "><", text)
    text = re.sub(r"\s*\n\s*", " ", text)
    text = re.sub(r"<g>(<path [^>]*/>)</g>", r"\1", text)
    label = _e(figure.title or figure.id)
    return text.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1).strip()


def _figure(figure: Figure, number: int, picture: str | None, reason: str) -> str:
    out = [f'<figure id="{_e(figure.id)}">',
           f'<p class="title">Figure {number}. {_e(figure.title)}</p>']
    if picture is not None:
        out.append(picture)
    else:
        out.append(f'<div class="noplot">{reason} The numbers behind it are in the JSON report '
                   "(<code>refq report --json</code>).</div>")
    if figure.caption:
        out.append(f'<figcaption class="caption">{_e(figure.caption)}</figcaption>')
    out.append("</figure>")
    return "".join(out)


# ----------------------------------------------------------------------------- the page

def _toc(report: Report, numbers: dict) -> str:
    out = ['<nav class="toc"><h2>Contents</h2><ol>']
    for s in report.sections:
        out.append(f'<li><a href="#{_e(s.id)}">{_e(s.title)}</a>')
        items = [(f, "Figure", f.title) for f in s.figures] + [(t, "Table", t.caption)
                                                               for t in s.tables]
        if items:
            out.append("<ul>")
            for obj, kind, text in items:
                out.append(f'<li><a href="#{_e(obj.id)}"><span class="kind">{kind} '
                           f'{numbers[obj.id]}</span> {_e(text or obj.id)}</a></li>')
            out.append("</ul>")
        out.append("</li>")
    out.append("</ol></nav>")
    return "".join(out)


def render_html(report: Report, *, plots: bool = True, quiet: bool = True) -> str:
    """The report as one self-contained HTML page (module docstring). plots=False, or no
    matplotlib, leaves a note where each figure would be; quiet=False shows drawing progress."""
    from ..progress import progress

    report.check_ids()
    drawing = plots and _plots.have_matplotlib()
    if drawing:
        reason = ""
    elif plots:
        reason = (f"This figure is drawn when matplotlib is installed: "
                  f"<code>{_e(_plots.INSTALL_HINT)}</code>.")
    else:
        reason = "Figures were not drawn for this page."
    numbers, figures = {}, []
    for s in report.sections:
        figures += s.figures
    for k, f in enumerate(figures, 1):
        numbers[f.id] = k
    for k, t in enumerate((t for s in report.sections for t in s.tables), 1):
        numbers[t.id] = k
    pictures = {}
    if drawing:
        for f in progress(figures, total=len(figures), desc="drawing figures", quiet=quiet):
            pictures[f.id] = inline_svg(_plots.draw(f, "svg", title=False), f,
                                        tag=f"f{numbers[f.id]}")
    out = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<link rel="icon" href="data:,">',
           f"<title>{_e(report.title)}</title><style>{_CSS}</style></head><body>",
           f"<header><h1>{_e(report.title)}</h1>{_meta(report.meta)}</header>",
           _toc(report, numbers), "<main>"]
    for s in report.sections:
        out.append(f'<section id="{_e(s.id)}"><h2>{_e(s.title)}</h2>')
        if s.summary:
            out.append(f'<p class="summary">{_e(s.summary)}</p>')
        if s.findings:
            out.append('<ul class="findings">')
            out += [f"<li>{_e(x)}</li>" for x in s.findings]
            out.append("</ul>")
        for f in s.figures:
            out.append(_figure(f, numbers[f.id], pictures.get(f.id), reason))
        for t in s.tables:
            out.append(_table(t, numbers[t.id]))
        out.append("</section>")
    out.append(f"</main><script>{_SCRIPT}</script></body></html>\n")
    return "\n".join(out)


def write_html(report: Report, path, *, plots: bool = True, quiet: bool = True) -> str:
    """Write `render_html(report)` to `path` atomically (UTF-8); return the path."""
    page = render_html(report, plots=plots, quiet=quiet)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(page)
    return str(path)
