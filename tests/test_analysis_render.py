"""refq.analysis.plots and refq.analysis.html: the pictures and the page drawn from a report.

The report used here (`awkward_report`) has every panel kind and every schema field, plus
awkward content: names with <&>"' and "</script>", "$" (mathtext), unicode, an empty table, a
300-row table, None and NaN cells and points, a panel of one point, log-y with zeros, an all-zero
log histogram. The page is read back with the standard library's HTML parser (an independent
reader of what a browser sees); cell texts are checked against `document.format_cell`, sort keys
against the values they stand for (float(data-v) == value, bit for bit).
"""
import html
import io
import os
import re
import subprocess
import sys
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest

from refq.analysis import html as page_mod
from refq.analysis import plots
from refq.analysis.document import Figure, Panel, Report, Section, Table, format_cell
from refq.errors import InputError, OutputError

AWKWARD = 'conv<&>"\'</script><b>$x$_µΔ→é'
needs_mpl = pytest.mark.skipif(not plots.have_matplotlib(), reason="matplotlib not installed")


def awkward_report() -> Report:
    """A report using every panel kind and schema field, with awkward names and values."""
    r = np.random.default_rng(0)
    ch = np.arange(64)
    edges = np.linspace(-3, 3, 129)
    counts = r.integers(0, 500, 128)
    counts[:10] = 0
    lines = Panel("lines", {
        "series": [
            {"name": "min", "x": ch.tolist(), "y": (-1 - r.random(64)).tolist(), "style": "line"},
            {"name": "max", "x": ch.tolist(), "y": (1 + r.random(64)).tolist(), "style": "steps"},
            {"name": AWKWARD, "x": ch.tolist(), "style": "points",
             "y": [None if i % 9 == 0 else float(v) for i, v in enumerate(r.normal(size=64))]}],
        "xlabel": "output channel", "ylabel": "weight " + AWKWARD, "log_y": False,
        "markers": [{"x": 5, "y": 1.5, "label": "outlier " + AWKWARD}],
        "vlines": [{"x": 32, "label": "half"}]}, title="ranges " + AWKWARD)
    log_lines = Panel("lines", {
        "series": [{"name": "loss", "x": list(range(20)),
                    "y": [0.0, 0.0] + [float(10.0 ** -k) for k in range(18)]},
                   {"name": "_nan", "x": [0, 1, 2], "y": [float("nan"), 1.0, float("inf")]}],
        "xlabel": "step", "ylabel": "loss", "log_y": True}, title="log-y with zeros")
    one = Panel("lines", {"series": [{"name": "one", "x": [1.0], "y": [2.0]}],
                          "xlabel": "x", "ylabel": "y"}, title="one point")
    hist = Panel("histogram", {
        "edges": edges.tolist(), "counts": counts.tolist(), "xlabel": "value", "ylabel": "count",
        "log_y": True, "vlines": [{"x": -2.0, "label": "tf"}, {"x": 2.5, "label": "minmax"}],
        "spans": [{"lo": 2.1, "hi": 3.0, "label": "clipped"}]}, title="histogram")
    zero_hist = Panel("histogram", {"edges": [0, 1, 2], "counts": [0, 0], "xlabel": "v",
                                    "ylabel": "n", "log_y": True}, title="all zero")
    labels = [f"backbone.stage{i // 4}.block{i % 4}.conv/dw_output_{i}" for i in range(60)]
    bars = Panel("bars", {
        "labels": labels, "series": [{"name": "sqnr", "values": r.normal(30, 5, 60).tolist()}],
        "xlabel": "quantizer", "ylabel": "dB", "horizontal": False,
        "highlight": [labels[3], labels[40]]}, title="SQNR")
    grouped = Panel("bars", {
        "labels": ["a", AWKWARD, "c"],
        "series": [{"name": "weights only", "values": [1, None, 3]},
                   {"name": "activations only", "values": [2, float("nan"), -1]}],
        "xlabel": "", "ylabel": "accuracy", "horizontal": True, "highlight": ["c"]},
        title="grouped")
    scatter = Panel("scatter", {
        "series": [{"name": "layers", "x": [0.1, 0.5, 0.9], "y": [0.9, 0.5, 0.2]},
                   {"name": "chosen", "x": [0.5], "y": [0.5]}],
        "xlabel": "ratio", "ylabel": "score", "labels": [{"x": 0.5, "y": 0.5, "text": AWKWARD}]},
        title="scatter")
    big = Table("t.big", "300 rows", ["name", "value", "count", "flag", "mixed"],
                [[f"layer{i}", float(r.normal()) if i % 7 else (None if i % 2 else float("nan")),
                  int(i * 37 % 101), i % 3 == 0, i if i % 2 else "x"] for i in range(300)],
                formats={"value": "{:.2f}"}, note="note " + AWKWARD)
    empty = Table("t.empty", "empty " + AWKWARD, ["a", "b"], [])
    sort_keys = Table("t.sort", "sort keys", ["name", "v", "text"], [
        ["n9", 9, "conv10"], ["n10", 10.0, "conv2"], ["none", None, ""], ["nan", float("nan"), "b"],
        ["neg", -1.5, "A"], ["inf", float("inf"), "a"], ["ninf", float("-inf"), "conv1"],
        ["tiny", 1e-300, "z"], ["n9b", np.float32(9.0), "conv10"]], formats={"v": "{:.0f}"})
    awkward = Table("t.awkward", AWKWARD, [AWKWARD, "n"], [[AWKWARD, 1], ["日本語", 2]],
                    note=AWKWARD)
    s1 = Section("weights", "Weights " + AWKWARD, summary="Per-channel ranges. " + AWKWARD,
                 findings=["conv3/dw: 14 of 72 channels are outliers", AWKWARD],
                 tables=[big, empty],
                 figures=[Figure("weights.ranges.conv3", "Ranges " + AWKWARD,
                                 [lines, log_lines, one, hist], caption="caption " + AWKWARD)])
    s2 = Section("quantizers", "Quantizers", summary="SQNR", tables=[sort_keys, awkward],
                 figures=[Figure("quantizers.sqnr", "SQNR", [bars]),
                          Figure("quantizers.misc", "misc", [grouped, scatter, zero_hist])])
    s3 = Section("empty", "Nothing here")
    return Report("Report " + AWKWARD, [s1, s2, s3],
                  meta={"model": "m.refq.h5", "calibration": 100, "profiles": ["tflite", "tosa"],
                        "note": AWKWARD})


class Page(HTMLParser):
    """What a browser's parser sees: elements with attributes, table rows, text by element id."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.ids, self.tables = [], [], {}
        self._table = None
        self._cell = None
        self.h1 = ""
        self._in_h1 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "table" and "sortable" in (a.get("class") or ""):
            self._table = self.tables.setdefault(a["id"], {"head": [], "rows": []})
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._table is not None:
            self._cell = [tag, a, ""]
        elif tag == "h1":
            self._in_h1 = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._table is not None:
            if self._row and self._row[0][0] == "th":
                self._table["head"] = self._row
            else:
                self._table["rows"].append(self._row)
        elif tag == "table":
            self._table = None
        elif tag == "h1":
            self._in_h1 = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data
        if self._in_h1:
            self.h1 += data


@pytest.fixture(scope="module")
def report():
    return awkward_report()


@pytest.fixture(scope="module")
def page(report):
    return page_mod.render_html(report)


@pytest.fixture(scope="module")
def drawn(report):
    """{figure id: (svg bytes, png bytes)}, drawn once, with any warnings they raised."""
    out = {}
    for f in figures_of(report):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out[f.id] = (plots.draw(f, "svg"), plots.draw(f, "png"), [str(w.message)
                                                                      for w in caught])
    return out


def figures_of(report):
    return [f for s in report.sections for f in s.figures]


# ----------------------------------------------------------------------------- html

@needs_mpl
def test_escaping_no_name_breaks_out(page):
    assert page.count("<script") == 1 and page.count("</script>") == 1
    assert "<b>" not in page and "\\$" not in page
    parsed = Page(page)
    assert parsed.h1 == "Report " + AWKWARD                       # round trip through a parser
    assert [t for t, _ in parsed.tags].count("script") == 1
    assert not any(t == "b" for t, _ in parsed.tags)
    assert html.escape(AWKWARD, quote=True) in page               # headings, cells, notes
    svg_texts = [html.unescape(t) for t in re.findall(r"<text [^>]*>([^<]*)</text>", page)]
    assert "ranges " + AWKWARD in svg_texts                      # the panel title, as SVG text


@needs_mpl
def test_render_is_deterministic(report, page):
    assert page_mod.render_html(report) == page


def test_no_external_urls(report, request):
    for text in [page_mod.render_html(report, plots=False)] + (
            [request.getfixturevalue("page")] if plots.have_matplotlib() else []):
        assert not re.search(r"https?:|ftp:|//[a-z]", text, re.I)
        assert not re.search(r"\ssrc\s*=", text, re.I)
        assert "@import" not in text
        for ref in re.findall(r'\shref="([^"]*)"', text):
            assert ref.startswith("#") or ref == "data:,", ref
        assert set(re.findall(r"url\((.)", text)) <= {"#"}


@needs_mpl
def test_every_table_row_and_cell(report, page):
    parsed = Page(page)
    tables = [t for s in report.sections for t in s.tables]
    assert sorted(parsed.tables) == sorted(t.id for t in tables)
    for t in tables:
        got = parsed.tables[t.id]
        assert [c[2] for c in got["head"]] == [str(c) for c in t.columns]
        assert len(got["rows"]) == len(t.rows)
        for row, cells in zip(t.rows, got["rows"]):
            for col, value, (_, attrs, text) in zip(t.columns, row, cells):
                value = value.item() if isinstance(value, np.generic) else value
                assert text == format_cell(value, t.formats.get(col))
    assert len(parsed.tables["t.big"]["rows"]) == 300


@needs_mpl
def test_sort_keys_hold_raw_values(page):
    """Numeric columns carry data-v: float(data-v) is the cell's value exactly; NaN and ±Inf use
    the spellings JavaScript's Number() reads; empty cells carry none. Text columns carry none."""
    rows = Page(page).tables["t.sort"]["rows"]
    values = [9, 10.0, None, float("nan"), -1.5, float("inf"), float("-inf"), 1e-300, 9.0]
    head = Page(page).tables["t.sort"]["head"]
    assert [("num" in (c[1].get("class") or "")) for c in head] == [False, True, False]
    for cells, v in zip(rows, values):
        raw = cells[1][1].get("data-v")
        if v is None:
            assert raw is None
        elif v != v:
            assert raw == "NaN"
        else:
            assert float(raw.replace("Infinity", "inf")) == v
        assert "data-v" not in cells[0][1] and "data-v" not in cells[2][1]
    big = Page(page).tables["t.big"]
    kinds = ["num" in (c[1].get("class") or "") for c in big["head"]]
    assert kinds == [False, True, True, True, False]            # bool column sorts as 1/0
    assert big["rows"][0][3][1]["data-v"] == "1" and big["rows"][1][3][1]["data-v"] == "0"


def test_sort_value_and_numeric_column():
    assert page_mod.sort_value(None) is None
    assert page_mod.sort_value(True) == "1" and page_mod.sort_value(False) == "0"
    assert page_mod.sort_value(2 ** 40) == str(2 ** 40)
    assert page_mod.sort_value(float("nan")) == "NaN"
    assert page_mod.sort_value(float("-inf")) == "-Infinity"
    for v in (0.1, -1e-300, 1.7976931348623157e308, 5e-324, 1 / 3):
        assert float(page_mod.sort_value(v)) == v
    assert page_mod.numeric_column([1, None, 2.5, float("nan"), True])
    assert not page_mod.numeric_column([1, "x"])
    assert not page_mod.numeric_column([None, None])
    assert not page_mod.numeric_column([])


@needs_mpl
def test_inline_svg_ids_are_unique_and_resolve(report, page):
    parsed = Page(page)
    assert len(parsed.ids) == len(set(parsed.ids))
    ids = set(parsed.ids)
    refs = re.findall(r'href="#([^"]+)"', page) + re.findall(r"url\(#([^)]+)\)", page)
    assert refs and all(r in ids for r in refs)
    for k, f in enumerate(figures_of(report), 1):         # each figure refers only to itself
        block = page[page.index(f'<figure id="{f.id}"'):]
        block = block[:block.index("</figure>")]
        inner = re.findall(r'href="#([^"]+)"', block) + re.findall(r"url\(#([^)]+)\)", block)
        assert inner and all(r.startswith(f"f{k}~") for r in inner)
    # two figures with identical panels: matplotlib gives them identical ids, the page does not
    twin = Report("twins", [Section("s", "s", figures=[
        Figure("s.a", "a", report.sections[1].figures[0].panels),
        Figure("s.b", "b", report.sections[1].figures[0].panels)])])
    raw = plots.draw(twin.sections[0].figures[0], title=False)
    assert raw == plots.draw(twin.sections[0].figures[1], title=False)
    assert len(set(re.findall(r'\sid="([^"]+)"', raw.decode()))) > 50     # every group named
    twin_ids = Page(page_mod.render_html(twin)).ids
    assert len(twin_ids) == len(set(twin_ids))
    assert sorted(twin_ids) == ["f1~1", "f1~2", "f2~1", "f2~2", "s", "s.a", "s.b"]


def test_without_matplotlib_every_table_and_a_note(report, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)          # `import matplotlib` fails
    assert not plots.have_matplotlib()
    text = page_mod.render_html(report)
    parsed = Page(text)
    assert "<svg" not in text
    assert text.count("pip install &#x27;refq[plot]&#x27;") == len(figures_of(report)) == 3
    assert text.count("refq report --json") == 3
    assert sorted(parsed.tables) == sorted(t.id for s in report.sections for t in s.tables)
    for f in figures_of(report):
        assert f'<figure id="{f.id}">' in text
    with pytest.raises(InputError, match=r"pip install 'refq\[plot\]'"):
        plots.draw(figures_of(report)[0])
    with pytest.raises(InputError, match=r"pip install 'refq\[plot\]'"):
        plots.write_plots(report, "/nonexistent-dir-not-written", "svg")
    monkeypatch.undo()
    monkeypatch.setattr(plots, "have_matplotlib", lambda: False)
    assert page_mod.render_html(report) == text
    off = page_mod.render_html(report, plots=False)            # asked not to draw: no install hint
    assert "pip install" not in off and off.count("not drawn") == 3


def test_table_with_a_format_that_does_not_fit():
    bad = Report("r", [Section("s", "s", tables=[Table("s.t", "t", ["a"], [["text"]],
                                                       formats={"a": "{:d}"})])])
    assert "text" in page_mod.render_html(bad)                # specs apply to numbers only
    bad.sections[0].tables[0].rows = [[1.5]]
    with pytest.raises(InputError, match=r"table 's.t', column 'a'"):
        page_mod.render_html(bad)


def test_write_html_atomic(report, tmp_path):
    path = tmp_path / "out" / "report.html"
    assert page_mod.write_html(report, path, plots=False) == str(path)
    assert path.read_text(encoding="utf-8") == page_mod.render_html(report, plots=False)
    assert os.listdir(tmp_path / "out") == ["report.html"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError):
        page_mod.write_html(report, tmp_path / "file" / "report.html", plots=False)


# ----------------------------------------------------------------------------- plots

@needs_mpl
def test_draw_is_deterministic_and_quiet(report, drawn):
    for f in figures_of(report):
        svg, png, caught = drawn[f.id]
        assert not caught
        assert plots.draw(f, "svg") == svg and plots.draw(f, "png") == png
        assert svg.startswith(b"<?xml") and png.startswith(b"\x89PNG\r\n\x1a\n")
        assert b"<dc:date>" not in svg and b"Matplotlib v" not in svg
        assert b"Software" not in png and b"tIME" not in png
        assert b"<text" in svg and b"DejaVuSans-" not in svg     # text stays text, no glyphs


@needs_mpl
def test_svg_bytes_equal_in_a_fresh_process(report, drawn):
    figure = report.sections[1].figures[1]
    code = ("import sys; sys.path.insert(0, %r); from test_analysis_render import "
            "awkward_report; from refq.analysis.plots import draw; "
            "sys.stdout.buffer.write(draw(awkward_report().sections[1].figures[1]))"
            % os.path.dirname(__file__))
    env = dict(os.environ, PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True)
    assert out.stdout == drawn[figure.id][0]


@needs_mpl
def test_layout_wraps_after_three_panels(report):
    from PIL import Image

    four = report.sections[0].figures[0]                 # 4 panels: 3 + 1 in two rows
    img = Image.open(io.BytesIO(plots.draw(four, "png", title=False)))
    assert img.size == (round(3 * plots.PANEL_WIDTH * plots.DPI),
                        round(2 * plots.PANEL_HEIGHT * plots.DPI))
    one = Figure("f", "", [four.panels[2]])
    assert Image.open(io.BytesIO(plots.draw(one, "png"))).size == (
        round(plots.PANEL_WIDTH * plots.DPI), round(plots.PANEL_HEIGHT * plots.DPI))


@needs_mpl
def test_bars_highlight_and_long_labels(report, drawn):
    bars = report.sections[1].figures[0]
    svg = drawn[bars.id][0].decode()
    hl = plots.HIGHLIGHT_COLOUR
    assert len(re.findall(r"<path [^>]*fill: %s" % hl, svg)) == 2          # two bars
    assert len(re.findall(r"<text [^>]*fill: %s" % hl, svg)) == 2          # their labels
    label = bars.panels[0].data["labels"][40]
    short = plots._short(label)
    assert len(short) == plots.MAX_TICK_CHARS and short[0] == label[0] and short.endswith("_40")
    assert f">{short}</text>" in svg


@needs_mpl
def test_log_y_survives_zeros(report):
    zero = Figure("z", "", [report.sections[1].figures[1].panels[2]])   # all-zero counts
    assert b"<svg" in plots.draw(zero)
    p = plots.check_figure(report.sections[0].figures[0])[3]
    assert plots._log_floor(p["counts"]) == 0.5 * p["counts"][p["counts"] > 0].min()
    assert plots._log_floor(np.array([0.0, -1.0, np.nan])) is None


def _panel(kind, **data):
    return Figure("fig.bad", "bad", [Panel(kind, data, title="p")])


@pytest.mark.parametrize("figure, message", [
    (_panel("lines", series=[{"name": "s", "x": [1, 2, 3], "y": [1, 2]}]),
     r"figure 'fig.bad', panel 0 \('p'\): series 0 \('s'\) has 3 x values and 2 y values"),
    (_panel("scatter", series=[{"name": "s", "x": [1], "y": []}]), r"1 x values and 0 y"),
    (_panel("lines", series=[{"name": "s", "x": [1], "y": [1], "style": "dots"}]), r"style 'dots'"),
    (_panel("lines", series=[{"name": "s", "x": [1], "y": ["a"]}]), r"not a number"),
    (_panel("lines", xlabel="x"), r"no 'series'"),
    (_panel("bars", labels=["a", "b"], series=[{"name": "s", "values": [1]}]),
     r"has 1 values for 2 labels"),
    (_panel("histogram", edges=[0, 1], counts=[1, 2]), r"2 edges for 2 counts"),
    (_panel("histogram", edges=[0, 2, 1], counts=[1, 2]), r"finite and increasing"),
    (Figure("fig.bad", "bad", []), r"figure 'fig.bad' has no panels"),
])
def test_bad_panels_are_refused(figure, message):
    with pytest.raises(InputError, match=message):
        plots.check_figure(figure)
    if plots.have_matplotlib():
        with pytest.raises(InputError, match=message):
            plots.draw(figure)


def test_unknown_kind_and_format():
    with pytest.raises(ValueError, match="pie"):
        Panel("pie", {})
    with pytest.raises(InputError, match="'jpg'"):
        plots.draw(_panel("lines", series=[]), "jpg")


@needs_mpl
def test_write_plots_names_and_atomic_writes(report, drawn, tmp_path):
    out = tmp_path / "plots"
    paths = plots.write_plots(report, out, "svg")
    assert paths == [os.path.join(out, f.id + ".svg") for f in figures_of(report)]
    assert sorted(os.listdir(out)) == sorted(f.id + ".svg" for f in figures_of(report))
    for path, f in zip(paths, figures_of(report)):
        with open(path, "rb") as fh:
            assert fh.read() == drawn[f.id][0]
    small = Report("r", [Section("s", "s", figures=[figures_of(report)[2]])])
    (out / "quantizers.misc.png").write_bytes(b"old")
    assert plots.write_plots(small, out, "png") == [os.path.join(out, "quantizers.misc.png")]
    assert (out / "quantizers.misc.png").read_bytes() == drawn["quantizers.misc"][1]
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError):
        plots.write_plots(small, tmp_path / "file", "png")
    with pytest.raises(InputError, match="'gif'"):
        plots.write_plots(small, out, "gif")


@needs_mpl
@pytest.mark.parametrize("kind, data", [
    ("lines", {"series": []}),
    ("lines", {"series": [{"name": "a", "x": [], "y": []}], "log_y": True}),
    ("lines", {"series": [{"name": "a", "x": [1, 2], "y": [None, None]}], "log_y": True}),
    ("bars", {"labels": [], "series": []}),
    ("bars", {"labels": ["a"], "series": [{"name": "s", "values": [None]}], "horizontal": True}),
    ("histogram", {"edges": [0], "counts": []}),
    ("histogram", {"edges": [0, 1], "counts": [None]}),
    ("scatter", {"series": []}),
])
def test_empty_panels_draw_without_warnings(kind, data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert b"<svg" in plots.draw(Figure("e", "", [Panel(kind, data)]))


def test_inline_svg_rounds_geometry_only():
    svg = (b'<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg xmlns="http://www.w3.org/2000/svg" '
           b'width="10pt"><metadata>x</metadata>\n <g id="g_1">\n  <path id="m1" d="M 0.004 '
           b'-0.001 L 120.004 3.14159 L 7.5 100.505" />\n  <use xlink:href="#m1" x="1.23456"/>\n'
           b' <text x="2.0049" y="3" transform="rotate(-0 2.0049 3)">v1.23456</text></g></svg>')
    out = page_mod.inline_svg(svg, Figure("a.b", "t", []))
    assert out == ('<svg role="img" aria-label="t" width="10pt"><g><path id="a.b~1" '
                   'd="M 0 0 L 120 3.14 L 7.5 100.5" /><use href="#a.b~1" x="1.23"/>'
                   '<text x="2" y="3" transform="rotate(-0 2 3)">v1.23456</text></g></svg>')


@pytest.mark.parametrize("horizontal", [False, True])
def test_bars_with_log_values_draw_a_log_axis(horizontal):
    """Counts that span decades (65,000 next to 1) get a log value axis; bars of zero still draw."""
    panel = Panel("bars", {"labels": ["a", "b", "c"], "log_y": True, "horizontal": horizontal,
                           "series": [{"name": "p", "values": [0, 3, 65000]},
                                      {"name": "q", "values": [1, 0, 20]}]})
    svg = plots.draw(Figure("logbars", "log bars", [panel]), "svg").decode()
    assert "1e+04" in svg and "1e+03" in svg
    linear = Panel("bars", dict(panel.data, log_y=False))
    assert "1e+04" not in plots.draw(Figure("linbars", "bars", [linear]), "svg").decode()
