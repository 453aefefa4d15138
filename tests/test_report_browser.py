"""The HTML report in a real browser: headless Chromium, network off, driven over the DevTools pipe.

The page of `awkward_report` (every panel kind, awkward names, a 300-row table) is opened from a
file with the network emulated offline and every request that is not file: or data: refused and
recorded. The test fails when the page asked for anything else, logged any error or warning, or
threw. Through the page's own DOM it checks that every figure's SVG has a rendered size, every
table has its rows, every table-of-contents link resolves, element ids are unique, and that real
mouse clicks on a header sort the rows (numbers by their raw value, NaN then empty cells last,
stably; text with numeric collation) against a Python transcription of the documented order.
A full-page screenshot must be a PNG of the page's size that is not blank.

Skipped when /usr/bin/chromium is missing, unless REFQ_REQUIRE_BROWSER=1 (then it fails).
"""
import contextlib
import functools
import io
import json
import math
import os
import re

import numpy as np
import pytest

from cdp import CHROMIUM, Browser
from refq.analysis import plots
from refq.analysis.html import write_html
from refq.cli import main
from test_analysis_render import AWKWARD, awkward_report

if not os.path.exists(CHROMIUM) or not plots.have_matplotlib():
    if os.environ.get("REFQ_REQUIRE_BROWSER") == "1":
        pytest.fail(f"REFQ_REQUIRE_BROWSER=1 but {CHROMIUM} or matplotlib is missing "
                    "(apt-get install chromium; pip install -e '.[dev]')", pytrace=False)
    pytest.skip(f"{CHROMIUM} or matplotlib is not installed", allow_module_level=True)

FACTS = r"""(() => {
  const rect = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  const figures = [...document.querySelectorAll("main figure")].map(f => {
    const g = f.querySelector("svg, img");
    return {id: f.id, size: g ? rect(g) : [0, 0], texts: g ? g.querySelectorAll("text").length : 0};
  });
  const tables = [...document.querySelectorAll("table.sortable")].map(t => ({
    id: t.id, rows: t.tBodies[0].rows.length, cols: t.tHead.rows[0].cells.length,
    size: rect(t)}));
  const toc = [...document.querySelectorAll("nav.toc a")].map(a => a.getAttribute("href"));
  const unresolved = toc.filter(h => !document.getElementById(h.slice(1)));
  const ids = [...document.querySelectorAll("[id]")].map(e => e.id);
  const refs = [...document.querySelectorAll("svg [href], svg [clip-path]")].map(
    e => (e.getAttribute("href") || e.getAttribute("clip-path").slice(4, -1)).slice(1));
  return {figures, tables, toc, unresolved, ids: ids.length, unique: new Set(ids).size,
          dangling: refs.filter(r => !document.getElementById(r)),
          title: document.querySelector("h1").textContent,
          scripts: document.scripts.length, bold: document.querySelectorAll("main b").length};
})()"""


def column(page, table_id, index):
    return page.evaluate(f"[...document.getElementById({table_id!r}).tBodies[0].rows]"
                         f".map(r => r.cells[{index}].textContent)")


def click_header(page, table_id, index):
    x, y = page.evaluate(f"""(() => {{
        const th = document.getElementById({table_id!r}).tHead.rows[0].cells[{index}];
        th.scrollIntoView({{block: "center"}});
        const r = th.getBoundingClientRect();
        return [r.left + r.width / 2, r.top + r.height / 2]; }})()""")
    page.click(x, y)
    return page.evaluate(f"document.getElementById({table_id!r}).tHead.rows[0]"
                         f".cells[{index}].getAttribute('aria-sort')")


def expected_order(rows, col, ascending, numeric):
    """The documented order, transcribed: numbers by value (NaN after them, empty cells last, in
    both directions), or text by numeric-aware, case-blind collation (empty last); ties keep
    their current order. Returns the sorted rows."""
    def rank_value(v):
        if numeric:
            return (2, 0) if v is None else ((1, 0) if math.isnan(v) else (0, float(v)))
        if v == "":
            return (2, "")
        return (0, [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", v)])

    def compare(a, b):
        (ra, va), (rb, vb) = rank_value(a[1][col]), rank_value(b[1][col])
        if ra != rb:
            return ra - rb
        c = 0 if ra != 0 else int(va > vb) - int(va < vb)
        return c * (1 if ascending else -1) if c else a[0] - b[0]

    return [r for _, r in sorted(enumerate(rows), key=functools.cmp_to_key(compare))]


def test_report_in_headless_chromium(tmp_path):
    from PIL import Image

    report = awkward_report()
    path = tmp_path / "report.html"
    write_html(report, path)
    with Browser(timeout=10.0) as browser:
        page = browser.open_page(path.as_uri(), offline=True)
        facts = page.evaluate(FACTS)

        figures = [f for s in report.sections for f in s.figures]
        assert [f["id"] for f in facts["figures"]] == [f.id for f in figures]
        for f in facts["figures"]:
            assert f["size"][0] > 100 and f["size"][1] > 100 and f["texts"] > 5, f
        tables = {t.id: t for s in report.sections for t in s.tables}
        assert {t["id"]: (t["rows"], t["cols"]) for t in facts["tables"]} == {
            k: (len(t.rows), len(t.columns)) for k, t in tables.items()}
        assert all(t["size"][0] > 0 and t["size"][1] > 0 for t in facts["tables"])
        assert len(facts["toc"]) == len(report.sections) + len(figures) + len(tables)
        assert facts["unresolved"] == [] and facts["dangling"] == []
        assert facts["ids"] == facts["unique"]
        assert facts["title"] == "Report " + AWKWARD
        assert facts["scripts"] == 1 and facts["bold"] == 0

        rows = tables["t.sort"].rows                      # the order on screen, as it changes
        for col, numeric in ((1, True), (2, False)):
            for ascending in (True, False):
                state = click_header(page, "t.sort", col)
                assert state == ("ascending" if ascending else "descending")
                rows = expected_order(rows, col, ascending, numeric)
                assert column(page, "t.sort", 0) == [r[0] for r in rows]
        big = tables["t.big"].rows
        assert click_header(page, "t.big", 2) == "ascending"          # ints, ties stay stable
        want = [r[0] for r in sorted(big, key=lambda r: r[2])]
        assert column(page, "t.big", 0) == want

        png, (width, height) = page.screenshot()
        browser.pump(0.2)
        assert page.blocked == [], page.blocked
        assert page.exceptions == [], page.exceptions
        assert [c for c in page.console if c[0] in ("error", "warning", "assert")] == []
        assert [e for e in page.log if e[0] in ("error", "warning")] == [], page.log

        bare = tmp_path / "tables-only.html"                  # the page without figures
        write_html(report, bare, plots=False)
        page = browser.open_page(bare.as_uri(), offline=True)
        notes = page.evaluate("[...document.querySelectorAll('main figure .noplot')]"
                              ".map(n => n.getBoundingClientRect().height)")
        assert len(notes) == len(figures) and min(notes) > 10
        assert page.evaluate("document.querySelectorAll('svg').length") == 0
        assert page.evaluate("[...document.querySelectorAll('table.sortable')].map(t => "
                             "t.tBodies[0].rows.length)") == [len(t.rows) for t in tables.values()]
        assert click_header(page, "t.big", 1) == "ascending"
        browser.pump(0.2)
        assert (page.blocked, page.exceptions, page.console, page.log) == ([], [], [], [])

    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    assert image.size == (math.ceil(width), math.ceil(height)) and image.size[1] > 1500
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    assert grey.std() > 20 and (grey < 128).mean() > 0.005    # drawn, not blank


def test_a_real_report_in_headless_chromium(tmp_path):
    """The full report of a quantized conv net (every section, the history of a compression
    included), as `refq report` writes it: every figure drawn, every table whole, nothing asked of
    the network, nothing logged."""
    import refq
    from test_cli_quant import X, small_graph

    model = tmp_path / "m.refq.h5"
    refq.save(small_graph(), model)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", np.arange(len(X)) % 3)
    steps = [("compress", model, "--method", "weight-svd", "--ratios", "conv1=0.5",
              "-o", tmp_path / "c.refq.h5"),
             ("quantize", tmp_path / "c.refq.h5", "--calib", tmp_path / "x.npy",
              "-o", tmp_path / "q.refq.h5"),
             ("report", tmp_path / "q.refq.h5", "--data", tmp_path / "x.npy", "--labels",
              tmp_path / "y.npy", "--float-model", tmp_path / "c.refq.h5", "--html",
              tmp_path / "r.html", "--json", tmp_path / "r.json")]
    for argv in steps:
        code, _, err = _cli_quiet(argv)
        assert code == 0, (argv[0], err)
    doc = json.loads((tmp_path / "r.json").read_text())
    sections = [s["id"] for s in doc["sections"]]
    assert sections == ["weights", "quantizers", "sensitivity", "integer", "compression"]
    figures = [f["id"] for s in doc["sections"] for f in s["figures"]]
    tables = {t["id"]: len(t["rows"]) for s in doc["sections"] for t in s["tables"]}
    with Browser(timeout=10.0) as browser:
        page = browser.open_page((tmp_path / "r.html").as_uri(), offline=True)
        facts = page.evaluate(FACTS)
        browser.pump(0.2)
        assert [f["id"] for f in facts["figures"]] == figures
        assert all(f["size"][0] > 100 and f["size"][1] > 100 for f in facts["figures"])
        assert {t["id"]: t["rows"] for t in facts["tables"]} == tables
        assert facts["unresolved"] == [] and facts["dangling"] == []
        assert (page.blocked, page.exceptions, page.console, page.log) == ([], [], [], [])


def _cli_quiet(argv):
    """`refq ARGV --quiet` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv] + ["--quiet"])
    return code, out.getvalue(), err.getvalue()
