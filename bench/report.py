"""Time `refq report --html` on the bundled PP-OCR classifier and print each section's share.

The setting of the README: the imported Keras model, W8A8 per-tensor with batch norms folded,
calibrated on 100 training lines; the report on the same 100 lines with their labels and the float
model (weights before and after folding), every section and profile. Prints the wall and CPU time
of each step, the whole report's time against one float forward over the same lines (measured in
the same run), and the page size. `--keep DIR` leaves the files there (model, data, report.html).

    python bench/report.py [--lines 100] [--keep DIR] [--screenshot report.png]
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def timed(label, fn, rows):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    rows.append((label, time.perf_counter() - w, time.process_time() - c))
    return out


def screenshot(html: str, png: str, width: int = 1280, height: int = 1600) -> None:
    """A PNG of the page's top in headless Chromium (no network, a fresh profile)."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
                        f"--window-size={width},{height}", f"--screenshot={os.path.abspath(png)}",
                        "file://" + os.path.abspath(html)], check=True, capture_output=True,
                       timeout=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=100)
    ap.add_argument("--keep", metavar="DIR")
    ap.add_argument("--screenshot", metavar="PNG")
    args = ap.parse_args(argv)

    import refq
    from refq.cli import main as refq_main
    from refq.ppocr_data import data_path, load_training_set
    from refq.runtime import run

    work = args.keep or tempfile.mkdtemp(prefix="refq-report-")
    os.makedirs(work, exist_ok=True)
    p = lambda name: os.path.join(work, name)  # noqa: E731
    x, y = load_training_set(args.lines)
    np.save(p("x.npy"), x)
    np.save(p("y.npy"), y.astype(np.int64))
    rows = []
    assert refq_main(["import", data_path("ppocr_cls_mbv3s.h5"), "-o", p("model.refq.h5"),
                      "--quiet"]) == 0
    timed("quantize (W8A8 per-tensor, BN folded)", lambda: refq_main(
        ["quantize", p("model.refq.h5"), "--calib", p("x.npy"), "-o", p("q.refq.h5"),
         "--batch-size", "100", "--quiet"]), rows)
    graph = refq.load(p("model.refq.h5"))
    timed("one float32 forward (reference)", lambda: run(graph, {graph.inputs[0].name: x},
                                                          dtype=np.float32), rows)
    section_rows = []
    for module, name in (("weights", "weights_section"), ("quantizers", "quantizers_section"),
                         ("sensitivity", "sensitivity_section"), ("integer", "integer_section")):
        mod = importlib.import_module(f"refq.analysis.{module}")

        def wrapped(*a, _f=getattr(mod, name), _label=f"  section {module}", **k):
            return timed(_label, lambda: _f(*a, **k), section_rows)
        setattr(mod, name, wrapped)

    def report():
        return refq_main(["report", p("q.refq.h5"), "--data", p("x.npy"), "--labels", p("y.npy"),
                          "--float-model", p("model.refq.h5"), "--html", p("report.html"),
                          "--json", p("report.json"), "--batch-size", "100", "--quiet"])

    with open(os.devnull, "w") as null:
        stdout, sys.stdout = sys.stdout, null
        try:
            code = timed("refq report --html --json (all sections)", report, rows)
        finally:
            sys.stdout = stdout
    assert code == 0
    rows[-1:-1] = section_rows
    forward = rows[1][1]
    print(f"PP-OCR, {args.lines} lines, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"{'step':45} {'wall s':>8} {'CPU s':>8}")
    for label, wall, cpu in rows:
        print(f"{label:45} {wall:8.2f} {cpu:8.2f}")
    print(f"report / one float forward over the same lines: {rows[-1][1] / forward:.0f}x")
    print(f"report.html: {os.path.getsize(p('report.html')) / 1e6:.2f} MB in {work}")
    if args.screenshot:
        screenshot(p("report.html"), args.screenshot)
        print(f"screenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
