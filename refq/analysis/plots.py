"""Pictures of report figures, drawn with matplotlib (the optional `plot` extra) from their numbers.

    draw(figure, fmt="svg") -> bytes          one report `Figure`: SVG or PNG bytes
    write_plots(report, directory, fmt) -> [paths]   every figure as `<figure id>.<fmt>`

Layout: one panel per subplot, side by side, at most `MAX_COLUMNS` in a row (then the next row).
Each panel is `PANEL_WIDTH` x `PANEL_HEIGHT` inches, wider or taller when it holds many bars.

How each panel kind is drawn (the `data` schemas are in `refq.analysis.document`):
- "lines": each series as a line, points or post-steps (a series of one point is drawn as a
  point); `markers` as black dots with their labels; `vlines` as dashed vertical rules.
- "bars": one bar per label and series (several series side by side in a group); the bars whose
  label is in `highlight` in `HIGHLIGHT_COLOUR` (with several series: a thick edge of that colour),
  and their tick labels too. Tick labels longer than `MAX_TICK_CHARS` keep their start and end
  around a "…"; with more than `MAX_TICKS` bars only every k-th label is written.
- "histogram": the counts as one filled step outline over `edges`; `spans` shaded, `vlines` dashed.
- "scatter": each series as dots; `labels` as text beside their points.
A legend is drawn when a panel has more than one named thing (series, rules, spans).

Numbers: None, NaN and ±Inf are not drawn (gaps in lines, no bar; an empty histogram bin).
Log y (`log_y`): the axis starts below the smallest positive value; zeros and negatives are not
drawn (a histogram's empty bins stay empty); with no positive value at all the axis stays linear.

Deterministic bytes: the same figure gives the same SVG and PNG bytes (a fixed `svg.hashsalt`, no
date, creator or software metadata, no global state: each call builds its own `Figure` and canvas,
never pyplot). SVG text stays text (`svg.fonttype` "none"): small files, searchable labels.
Text from the figure is never parsed as mathtext ("$" stays "$").

Errors: a panel whose numbers do not fit its schema (series of unequal lengths, edges that are
not one more than the counts, a missing key, a value that is not a number) raises InputError
naming the figure, the panel and what is wrong (`check_figure`, from
`refq.analysis.figure_check`); a missing matplotlib raises InputError saying how to install it.
"""
from __future__ import annotations

import io
import math
import os
import textwrap
import warnings

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from .document import Figure, Report
from .figure_check import check_figure

__all__ = ["draw", "write_plots", "have_matplotlib", "check_figure", "INSTALL_HINT", "FORMATS"]

INSTALL_HINT = "pip install 'refq[plot]'"
FORMATS = ("svg", "png")
MAX_COLUMNS = 3
PANEL_WIDTH, PANEL_HEIGHT = 4.6, 3.3      # inches
DPI = 100                                 # PNG pixels per inch
MAX_TICK_CHARS = 24
MAX_TICKS = 80
HIGHLIGHT_COLOUR = "#d62728"
BAR_COLOUR = "#1f77b4"
_RC = {
    "svg.hashsalt": "refq", "svg.fonttype": "none",
    "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 7.5,
    "xtick.labelsize": 7.5, "ytick.labelsize": 7.5, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linewidth": 0.6, "lines.linewidth": 1.3, "axes.spines.top": False,
    "axes.spines.right": False, "path.simplify": True,
}
_METADATA = {"svg": {"Date": None, "Creator": None}, "png": {"Software": None}}


def have_matplotlib() -> bool:
    """True when matplotlib can be imported (the `plot` extra is installed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _matplotlib():
    """The matplotlib module with the Agg canvas, imported only now; InputError when missing."""
    if not have_matplotlib():
        raise InputError(f"drawing report figures needs matplotlib: {INSTALL_HINT} (the numbers "
                         "behind every figure are in the JSON report without it)")
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure
    return matplotlib, MplFigure, FigureCanvasAgg


# ----------------------------------------------------------------------------- drawing

def _short(text: str, limit: int = MAX_TICK_CHARS) -> str:
    """`text` of at most `limit` characters: a longer one keeps its start and end around '…'."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 3
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def _plain(text: str) -> str:
    """`text` shown as written: "$" escaped so that matplotlib never reads it as mathtext."""
    return str(text).replace("$", r"\$")


def _legend_name(name: str) -> str:
    """A legend label shown as written (matplotlib hides labels that start with '_')."""
    return _plain(" " + name if name.startswith("_") else name)


def _log_floor(values: np.ndarray):
    """Half the smallest positive finite value (the bottom of a log axis), None when there is none."""
    pos = values[np.isfinite(values) & (values > 0)]
    return float(pos.min()) / 2 if pos.size else None


def _log_axis(ax, bottom=None, axis="y", nonpositive="mask"):
    """A log `axis` ("y" or "x") without minor ticks, its labels as plain numbers (1, 10, 100,
    1e+03): fast and free of mathtext; `bottom` its lower limit."""
    from matplotlib import ticker

    getattr(ax, f"set_{axis}scale")("log", nonpositive=nonpositive)
    which = getattr(ax, f"{axis}axis")
    which.set_minor_locator(ticker.NullLocator())
    which.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    if bottom is not None:
        getattr(ax, f"set_{axis}lim")(bottom, None)


def _colour(k: int) -> str:
    return f"C{k % 10}"


def _draw_lines(ax, p):
    for k, (name, x, y, style) in enumerate(p["series"]):
        one = np.count_nonzero(np.isfinite(x) & np.isfinite(y)) == 1
        kw = {"color": _colour(k), "label": _legend_name(name) if name else None}
        if style == "points" or one:
            ax.plot(x, y, linestyle="none", marker="o", markersize=3.5 if not one else 5, **kw)
        elif style == "steps":
            ax.step(x, y, where="post", **kw)
        else:
            ax.plot(x, y, **kw)
    _draw_vlines(ax, p["vlines"], start=len(p["series"]))
    for x, y, label in p["markers"]:
        ax.plot([x], [y], linestyle="none", marker="o", color="black", markersize=4)
        if label:
            ax.annotate(_plain(_short(label, 40)), (x, y), xytext=(4, 4), textcoords="offset points",
                        fontsize=7)
    if p["log_y"]:
        values = np.concatenate([y for _, _, y, _ in p["series"]] + [np.zeros(0)])
        if _log_floor(values) is not None:
            _log_axis(ax)


def _draw_vlines(ax, vlines, start):
    for k, (x, _, label) in enumerate(vlines):
        if not math.isfinite(x):
            continue
        ax.axvline(x, color=_colour(start + k), linestyle="--", linewidth=1.1,
                   label=_legend_name(label) if label else None)


def _draw_scatter(ax, p):
    for k, (name, x, y, _) in enumerate(p["series"]):
        ax.plot(x, y, linestyle="none", marker="o", markersize=3.5, color=_colour(k),
                label=_legend_name(name) if name else None)
    for x, y, text in p["labels"]:
        if text and math.isfinite(x) and math.isfinite(y):
            ax.annotate(_plain(_short(text, 40)), (x, y), xytext=(3, 3), textcoords="offset points",
                        fontsize=7)


def _draw_histogram(ax, p):
    edges, counts = p["edges"], p["counts"]
    floor = _log_floor(counts) if p["log_y"] else None
    base = 0.0 if floor is None else floor
    shown = counts if floor is None else np.where(counts > 0, counts, floor)
    if len(counts):
        ax.stairs(shown, edges, baseline=base, fill=True, color="#7f9fc6", edgecolor=BAR_COLOUR)
    for k, (lo, hi, label) in enumerate(p["spans"]):
        if math.isfinite(lo) and math.isfinite(hi):
            ax.axvspan(lo, hi, color=_colour(k + 1), alpha=0.15, linewidth=0,
                       label=_legend_name(label) if label else None)
    _draw_vlines(ax, p["vlines"], start=len(p["spans"]) + 1)
    if floor is not None:
        _log_axis(ax, bottom=floor)


def _draw_bars(ax, p):
    labels, series, highlight = p["labels"], p["series"], p["highlight"]
    n, m = len(labels), max(len(series), 1)
    pos = np.arange(n, dtype=np.float64)
    width = 0.8 / m
    marked = np.array([lab in highlight for lab in labels], dtype=bool)
    bar = ax.barh if p["horizontal"] else ax.bar
    for k, (name, values) in enumerate(series):
        offset = (k - (m - 1) / 2) * width
        heights = np.nan_to_num(values, nan=0.0)
        if m == 1:
            colours = np.where(marked, HIGHLIGHT_COLOUR, BAR_COLOUR).tolist()
            kw = {"color": colours}
        else:
            kw = {"color": _colour(k), "edgecolor": np.where(marked, HIGHLIGHT_COLOUR,
                                                             _colour(k)).tolist(),
                  "linewidth": np.where(marked, 1.8, 0.0).tolist()}
        bar(pos + offset, heights, width, label=_legend_name(name) if name else None, **kw)
    # category labels as plain texts beside the axis: a matplotlib Tick costs ~5 artists each
    step = max(1, math.ceil(n / MAX_TICKS))
    size = 6.5 if n > 40 else 7.5
    from matplotlib.transforms import blended_transform_factory

    if p["horizontal"]:
        ax.set_yticks([])
        ax.invert_yaxis()  # the first label on top
        ax.grid(axis="y", visible=False)
        place = blended_transform_factory(ax.transAxes, ax.transData)
        kw = {"ha": "right", "va": "center"}
    else:
        ax.set_xticks([])
        ax.grid(axis="x", visible=False)
        place = blended_transform_factory(ax.transData, ax.transAxes)
        kw = {"ha": "center", "va": "top", "rotation": 90 if _rotated(labels) else 0}
    for j in range(0, n, step):
        xy = (-0.01, pos[j]) if p["horizontal"] else (pos[j], -0.015)
        ax.text(*xy, _plain(_short(labels[j])), transform=place, fontsize=size,
                color=HIGHLIGHT_COLOUR if marked[j] else "black", **kw)
    if p["horizontal"]:
        ax.yaxis.labelpad = 4 + 72 * _CHAR * max((len(_short(t)) for t in labels), default=0)
    elif _rotated(labels):
        ax.xaxis.labelpad = 4 + 72 * _CHAR * max((len(_short(t)) for t in labels), default=0)
    else:
        ax.xaxis.labelpad = 14
    if n:
        ax.margins(**({"y": 0.01} if p["horizontal"] else {"x": 0.01}))
    floor = _log_floor(np.concatenate([v for _, v in series] + [np.zeros(0)])) if p["log_y"] \
        else None
    if floor is not None:  # the value axis in log scale; bars of zero stay at the axis' start
        _log_axis(ax, floor, axis="x" if p["horizontal"] else "y", nonpositive="clip")


_DRAW = {"lines": _draw_lines, "scatter": _draw_scatter, "histogram": _draw_histogram,
         "bars": _draw_bars}


_CHAR = 0.068       # inches per character of 7.5 pt tick-label text (DejaVu Sans, wide characters)
_LINE = 0.17        # inches per line of axis-label or title text


def _panel_box(p) -> tuple:
    """(width, height, left, bottom, top) inches of one panel's cell and the margins its axes
    leave for tick labels, axis labels and title: wider for many vertical bars, taller for many
    horizontal ones, with room for long (rotated) bar labels."""
    w, h = PANEL_WIDTH, PANEL_HEIGHT
    left, bottom = 0.72, 0.48
    top = 0.12 + _LINE * 1.2 * len(_title_lines(p["title"]))
    if p["kind"] == "bars":
        n = len(p["labels"]) * max(len(p["series"]), 1)
        longest = max((len(_short(t)) for t in p["labels"]), default=0)
        if p["horizontal"]:
            h = min(max(h, 0.13 * n + 1.0), 24.0)
            left = 0.3 + _CHAR * longest + (_LINE if p["ylabel"] else 0)
            w += left - 0.72
        else:
            w = min(max(w, 0.09 * n + 1.0), 14.0)
            if _rotated(p["labels"]):
                bottom = 0.25 + _CHAR * longest + (_LINE if p["xlabel"] else 0)
                h += bottom - 0.48
    return w, h, left, bottom, top


def _rotated(labels) -> bool:
    """Vertical bar labels are written upright (rotated 90 degrees) when many or long."""
    texts = [_short(t) for t in labels]
    return len(texts) > 12 or sum(len(t) + 2 for t in texts) > 60


def _title_lines(title: str) -> list:
    return textwrap.wrap(title, 60)[:2] if title else []


def _build(figure: Figure, panels: list, title: bool):
    """The matplotlib Figure (with its Agg canvas) of checked `panels`.

    Layout by arithmetic, not by a layout engine (which would double the drawing time): every
    cell of the grid is as large as the largest panel; each axes sits in its cell with the
    margins `_panel_box` gives it."""
    _, MplFigure, FigureCanvasAgg = _matplotlib()
    n = len(panels)
    cols = min(n, MAX_COLUMNS)
    rows = math.ceil(n / cols)
    boxes = [_panel_box(p) for p in panels]
    cell_w, cell_h = max(b[0] for b in boxes), max(b[1] for b in boxes)
    head = 0.38 if title and figure.title else 0.0
    width, height = cols * cell_w, rows * cell_h + head
    fig = MplFigure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    if head:
        fig.suptitle(_plain(_short(figure.title, 120)), fontsize=10.5, y=1 - 0.08 / height,
                     va="top")
    right = 0.18
    for i, (p, (_, _, left, bottom, top)) in enumerate(zip(panels, boxes)):
        r, c = divmod(i, cols)
        x0, y0 = c * cell_w, height - head - (r + 1) * cell_h
        ax = fig.add_axes(((x0 + left) / width, (y0 + bottom) / height,
                           (cell_w - left - right) / width, (cell_h - bottom - top) / height))
        _DRAW[p["kind"]](ax, p)
        if p["title"]:
            # a fixed y skips matplotlib's costly search for a title position
            ax.set_title(_plain("\n".join(_title_lines(p["title"]))), y=1.0, pad=4)
        ax.set_xlabel(_plain(_short(p["xlabel"], 80)))
        ax.set_ylabel(_plain(_short(p["ylabel"], 60)))
        handles, _ = ax.get_legend_handles_labels()
        if len(handles) > 1:
            many = len(handles) > 8
            ax.legend(loc="upper left" if many else "best", ncols=2 if many else 1,
                      framealpha=0.8)
    return fig


def draw(figure: Figure, fmt: str = "svg", *, title: bool = True) -> bytes:
    """The picture of `figure` as SVG or PNG bytes (`title`: draw the figure's title above it).

    The same figure always gives the same bytes. InputError when matplotlib is missing, `fmt` is
    not svg/png or a panel does not fit its schema."""
    if fmt not in FORMATS:
        raise InputError(f"figure {figure.id!r}: plot format {fmt!r} is not one of "
                         f"{', '.join(FORMATS)}")
    panels = check_figure(figure)
    matplotlib, _, _ = _matplotlib()
    buf = io.BytesIO()
    with warnings.catch_warnings(), matplotlib.rc_context(_RC):
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
        fig = _build(figure, panels, title)
        fig.savefig(buf, format=fmt, dpi=DPI, metadata=_METADATA[fmt], facecolor="white")
        fig.clear()
    return buf.getvalue()


def write_plots(report: Report, directory, fmt: str = "png", *, quiet: bool = True) -> list:
    """Draw every figure of `report` into `directory/<figure id>.<fmt>` (each written atomically);
    return the paths in report order."""
    from ..progress import progress

    if fmt not in FORMATS:
        raise InputError(f"plot format {fmt!r} is not one of {', '.join(FORMATS)}")
    report.check_ids()
    _matplotlib()
    directory = os.fspath(directory)
    figures = [f for s in report.sections for f in s.figures]
    paths = []
    for figure in progress(figures, total=len(figures), desc="drawing figures", quiet=quiet):
        data = draw(figure, fmt)
        path = os.path.join(directory, f"{figure.id}.{fmt}")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
        paths.append(path)
    return paths
