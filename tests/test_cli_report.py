"""`refq report --html/--plots/--json` (the full report) and `--weights-html` of `refq equalize` and
`refq quantize`, driven in-process on the small conv net of test_cli_quant: the files hold what
`refq.analysis.build.build_report` computes, every figure is a file, and bad options end in one
`refq: error:` line with no output written."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import refq
from cli_helpers import assert_error, cli
from refq.analysis.build import Batches, build_report
from refq.quant.quantsim import QuantSim
from refq.report import format_report, quant_report
from test_cli_quant import X, small_graph

LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1])


@pytest.fixture
def files(tmp_path, capsys):
    model, q = tmp_path / "m.refq.h5", tmp_path / "q.refq.h5"
    refq.save(small_graph(), model)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", LABELS)
    code, _, err = cli(capsys, "quantize", model, "--calib", tmp_path / "x.npy", "-o", q, "--quiet")
    assert code == 0, err
    return {"model": str(model), "q": str(q), "x": str(tmp_path / "x.npy"),
            "y": str(tmp_path / "y.npy"), "dir": tmp_path}


def figure_ids(doc):
    return [f["id"] for s in doc["sections"] for f in s["figures"]]


def test_full_report_writes_html_plots_and_json(capsys, files):
    d = files["dir"]
    code, out, err = cli(capsys, "report", files["q"], "--data", files["x"], "--labels",
                         files["y"], "--float-model", files["model"], "--html", d / "r.html",
                         "--plots", d / "plots", "--plot-format", "svg", "--json", d / "r.json",
                         "--quiet")
    assert code == 0 and err == "", err
    sim = QuantSim.load(files["q"])
    assert out == format_report(quant_report(sim, X)) + "\n"  # the text table as before
    doc = json.loads((d / "r.json").read_text(), parse_constant=lambda t: 1 / 0)
    assert [s["id"] for s in doc["sections"]] == ["weights", "quantizers", "sensitivity", "integer"]
    ref = build_report(sim, Batches(lambda: [{"x": X}]), labels=LABELS,
                       float_graph=refq.load(files["model"]), meta=doc["meta"],
                       title=doc["title"]).to_json()
    assert doc == json.loads(json.dumps(ref))
    weights = doc["sections"][0]["tables"][0]
    assert any("BN folded" in c for c in weights["columns"])  # the float model's stages
    assert sorted(os.listdir(d / "plots")) == sorted(f"{i}.svg" for i in figure_ids(doc))
    page = (d / "r.html").read_text(encoding="utf-8")
    for i in figure_ids(doc) + [s["id"] for s in doc["sections"]]:
        assert f'id="{i}"' in page, i
    assert "http://" not in page and "https://" not in page


def test_full_report_is_deterministic(capsys, files):
    d = files["dir"]
    pages = []
    for k in range(2):
        code, _, err = cli(capsys, "report", files["q"], "--data", files["x"], "--html",
                           d / f"r{k}.html", "--sections", "weights,quantizers", "--quiet")
        assert code == 0, err
        pages.append((d / f"r{k}.html").read_bytes())
    assert pages[0] == pages[1]


def test_sections_and_profiles_choose_the_work(capsys, files):
    d = files["dir"]
    code, _, err = cli(capsys, "report", files["q"], "--data", files["x"], "--json", d / "r.json",
                       "--sections", "integer", "--profiles", "tflite,onnx", "--quiet")
    assert code == 0, err
    doc = json.loads((d / "r.json").read_text())
    assert [s["id"] for s in doc["sections"]] == ["integer"]
    rows = doc["sections"][0]["tables"][0]["rows"]
    assert [r[0] for r in rows] == ["tflite", "onnx"]


@pytest.mark.parametrize("args, words", [
    (["--labels", "{y}"], ["--labels", "--html"]),
    (["--float-model", "{model}"], ["--float-model", "--html"]),
    (["--json", "{d}/r.json", "--sections", "weights,colours"], ["colours", "sensitivity"]),
    (["--json", "{d}/r.json", "--labels", "{d}/y2.npy"], ["y2.npy", "1-D integer"]),
    (["--json", "{d}/r.json", "--labels", "{d}/y3.npy"], ["labels", "8"]),
    (["--json", "{d}/r.json", "--float-model", "{q}", "--sections", "weights"], []),
    (["--plots", "{x}"], ["--plots", "not a directory"]),
    (["--json", "{d}/r.json", "--profiles", "tflite,nonesuch"], ["nonesuch"]),
    (["--json", "{d}/r.json", "--sections", ","], ["--sections", "names no section"]),
    (["--json", "{d}/r.json", "--plots", "{x}/figures"], ["--plots", "is a file"]),
])
def test_bad_report_options(capsys, files, args, words):
    d = files["dir"]
    np.save(d / "y2.npy", LABELS.reshape(2, 4))
    np.save(d / "y3.npy", LABELS[:5])
    argv = [a.format(d=d, **files) for a in args]
    code, out, err = cli(capsys, "report", files["q"], "--data", files["x"], *argv, "--quiet")
    if not words:  # a quantized model as --float-model is still a float model: accepted
        assert code == 0, err
        return
    assert_error(code, err, *words)
    assert out == "" and not (d / "r.json").exists()


def test_weights_html_of_equalize_and_quantize(capsys, files):
    d = files["dir"]
    code, _, err = cli(capsys, "equalize", files["model"], "-o", d / "eq.refq.h5",
                       "--weights-html", d / "eq.html", "--quiet")
    assert code == 0, err
    page = (d / "eq.html").read_text(encoding="utf-8")
    assert "BN folded" in page and "CLE" in page and 'id="weights"' in page
    code, _, err = cli(capsys, "quantize", files["model"], "--calib", files["x"], "--cle",
                       "--bias-correction", "empirical", "-o", d / "q2.refq.h5",
                       "--weights-html", d / "q.html", "--quiet")
    assert code == 0, err
    assert "CLE + bias correction" in (d / "q.html").read_text(encoding="utf-8")
    code, _, err = cli(capsys, "quantize", files["model"], "--calib", files["x"], "--no-fold-bn",
                       "-o", d / "q3.refq.h5", "--weights-html", d / "q3.html", "--quiet")
    assert_error(code, err, "--weights-html", "--no-fold-bn")
    assert not (d / "q3.html").exists() and not (d / "q3.refq.h5").exists()
