"""`refq compress` end to end on a small convolutional model with the three methods: the greedy
search writes its eval table and reads it back, manual ratios, fine-tuning, the report table, and
bad input as one line."""
from __future__ import annotations

import json

import numpy as np
import pytest

import refq
from cli_helpers import cli, fails_cleanly
from refq.compression.eval_table import load_eval_table
from refq.graph import Graph, Node, TensorSpec
from refq.runtime import run

f32 = np.float32


def small_model():
    r = np.random.default_rng(0)
    return Graph([TensorSpec("x", (None, 8, 8, 3))], ["prob"], [
        Node("conv1", "conv2d", ["x"], ["c1"], {"padding": "same"},
             {"weight": r.normal(0, 0.5, (8, 3, 3, 3)).astype(f32),
              "bias": r.normal(0, 0.1, 8).astype(f32)}),
        Node("relu1", "relu", ["c1"], ["r1"]),
        Node("conv2", "conv2d", ["r1"], ["c2"], {"padding": "same"},
             {"weight": r.normal(0, 0.3, (8, 3, 3, 8)).astype(f32),
              "bias": r.normal(0, 0.1, 8).astype(f32)}),
        Node("relu2", "relu", ["c2"], ["r2"]),
        Node("gap", "global_avg_pool2d", ["r2"], ["g"]),
        Node("fc", "dense", ["g"], ["logits"], {},
             {"weight": r.normal(0, 0.5, (4, 8)).astype(f32), "bias": np.zeros(4, f32)}),
        Node("sm", "softmax", ["logits"], ["prob"]),
    ], name="small")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    g = small_model()
    x = np.random.default_rng(1).normal(size=(40, 8, 8, 3)).astype(f32)
    fc = g.node("fc")   # centre the logits on these samples, so that every class occurs
    fc.params["bias"] = (-fc.params["weight"] @ run(g, {"x": x}, trace=True)["g"].mean(0)) \
        .astype(f32)
    refq.save(g, str(root / "m.refq.h5"))
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", run(g, {"x": x})["prob"].argmax(1).astype(np.int64))
    return root


def test_greedy_search_writes_then_reads_its_table(capsys, files, tmp_path):
    r = files
    table = tmp_path / "scores" / "ssvd.json"
    args = ["compress", r / "m.refq.h5", "--method", "spatial-svd", "--target-macs", "0.6",
            "--eval", r / "x.npy", "--labels", r / "y.npy", "--candidates", "4",
            "--eval-table", table, "-o", tmp_path / "c.refq.h5"]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    scores, info = load_eval_table(table)
    assert list(scores) == ["conv1", "conv2"] and list(scores["conv1"]) == [0.25, 0.5, 0.75]
    assert info["method"] == "spatial-svd" and info["cost"] == "macs"
    assert "top-1 accuracy on 40 labelled samples" in info["evaluation"]
    lines = out.splitlines()
    assert lines[0].startswith(f"compressed {r / 'm.refq.h5'} with spatial-svd (greedy): MACs ")
    assert "target 0.6" in lines[0] and lines[1].split() == [
        "layer", "ratio", "MACs", "before", "MACs", "after", "params", "before", "params",
        "after"]
    assert f"computed, written to {table}; 6 evaluations" in out
    assert "note: the search ended at a macs ratio of 0.531, away from the target 0.6" in out
    assert "top-1 accuracy on 40 labelled samples: original 100.00%, compressed" in out
    compressed = refq.load(str(tmp_path / "c.refq.h5"))
    x = np.load(r / "x.npy")
    assert run(compressed, {"x": x})["prob"].shape == (40, 4)
    # the second run reads the table: nothing evaluated, the same model
    code, out2, _ = cli(capsys, *args[:-1], tmp_path / "c2.refq.h5")
    assert code == 0 and f"read from {table}" in out2 and "; 0 evaluations" in out2
    rows = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(rows) >= 2 and rows == [line for line in out2.splitlines()
                                       if line.startswith("  ")]
    a, b = refq.load(str(tmp_path / "c.refq.h5")), refq.load(str(tmp_path / "c2.refq.h5"))
    for m, n in zip(a.nodes, b.nodes):
        assert m.name == n.name and all(m.params[k].tobytes() == n.params[k].tobytes()
                                        for k in m.params)


def test_channel_pruning_with_fine_tuning_by_distillation(capsys, files, tmp_path):
    r = files
    code, out, err = cli(capsys, "compress", r / "m.refq.h5", "--method", "channel-pruning",
                         "--target-macs", "0.7", "--eval", r / "x.npy", "--candidates", "4",
                         "--fine-tune-epochs", "2", "--batch-size", "20", "-o",
                         tmp_path / "p.refq.h5", "--quiet")
    assert code == 0, err
    assert "top-1 agreement with the float model on 40 samples: original 100.00%" in out
    assert "fine-tuned (2 epochs)" in out
    refq.load(str(tmp_path / "p.refq.h5"))


def test_manual_ratios(capsys, files, tmp_path):
    r = files
    code, out, err = cli(capsys, "compress", r / "m.refq.h5", "--method", "weight-svd",
                         "--ratios", "conv2=0.5,fc=0.5", "-o", tmp_path / "w.refq.h5")
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:4]}
    assert set(rows) == {"conv2", "fc"} and rows["conv2"][0] == "0.500"
    g = refq.load(str(tmp_path / "w.refq.h5"))
    assert [n.name for n in g.nodes if n.name.startswith("conv2")] == ["conv2/svd_a",
                                                                        "conv2/svd_b"]
    # MACs before and after of conv2 as AIMET's weight-SVD formula gives them (8·8 output)
    before = 8 * 8 * 3 * 3 * 64
    rank = int(rows["conv2"][2]) // 64 // (8 + 8 * 9)
    assert int(rows["conv2"][1]) == before and int(rows["conv2"][2]) == rank * (8 + 8 * 9) * 64


@pytest.mark.parametrize("args,needles", [
    (["--method", "spatial-svd", "--target-macs", "0.5"], ["give evaluation data with --eval"]),
    (["--method", "spatial-svd", "--target-macs", "1.5", "--eval", "x.npy"],
     ["--target-macs", "expected a ratio in (0, 1]"]),
    (["--method", "svd", "--target-macs", "0.5", "--eval", "x.npy"], ["invalid choice: 'svd'"]),
    (["--method", "spatial-svd", "--ratios", "conv9=0.5"],
     ["'conv9' is not a layer spatial-svd can compress", "conv1, conv2"]),
    (["--method", "spatial-svd", "--ratios", "conv1:0.5"], ["LAYER=RATIO"]),
    (["--method", "spatial-svd", "--ratios", "conv1=0.5,conv1=0.25"], ["given twice"]),
    (["--method", "spatial-svd", "--ratios", "conv1=0.5", "--target-macs", "0.5"],
     ["not allowed with argument"]),
    (["--method", "spatial-svd", "--target-macs", "0.5", "--eval", "x.npy", "--candidates",
      "1"], ["--candidates 1"]),
    (["--method", "spatial-svd", "--ratios", "conv1=0.5", "--eval-table", "t.json"],
     ["--eval-table and --monotone-fit belong to the greedy search"]),
    (["--method", "spatial-svd", "--ratios", "conv1=0.5", "--labels", "y.npy"],
     ["--labels label the --eval samples"]),
    (["--method", "spatial-svd", "--target-macs", "0.5", "--eval", "x.npy", "--labels",
      "x.npy"], ["1-d integer"]),
    (["--method", "spatial-svd", "--target-macs", "0.5", "--eval", "y.npy"], ["y.npy"]),
    (["--method", "spatial-svd", "--target-macs", "0.5", "--eval", "x.npy", "--eval-table",
      "bad.json"], ["bad.json", "not valid JSON"]),
    (["--method", "weight-svd", "--target-macs", "0.5", "--eval", "x.npy", "--eval-table",
      "other.json"], ["other.json", "an eval table of spatial-svd"]),
    (["--method", "spatial-svd", "--target-macs", "0.5", "--eval", "x.npy", "--eval-table",
      "adir"], ["--eval-table", "adir: is an existing directory"]),
])
def test_bad_input_is_one_line(capsys, files, monkeypatch, args, needles):
    monkeypatch.chdir(files)
    (files / "bad.json").write_text("{oops")
    (files / "adir").mkdir(exist_ok=True)
    (files / "other.json").write_text(json.dumps(
        {"format": "refq-compression-eval-table", "version": 1, "method": "spatial-svd",
         "cost": "macs", "evaluation": "", "scores": {"conv1": {"0.5": 1.0}}}))
    fails_cleanly(capsys, files, "compress", "m.refq.h5", *args, "-o", "out.refq.h5",
                  needles=needles)
