"""`refq qat`: quantization-aware fine-tuning from the command line, on the bundled PP-OCR model."""
from __future__ import annotations

import numpy as np
import pytest

import refq
from cli_helpers import cli, fails_cleanly
from refq.ppocr_data import load_calibration_set, load_model, load_test_set
from refq.quant.quantsim import QuantSim


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("qat")
    refq.save(load_model(), str(root / "f.refq.h5"))
    x, y = load_test_set()[:2]
    np.save(root / "x.npy", x[:32])
    np.save(root / "y.npy", y[:32].astype(np.int64))
    np.save(root / "calib.npy", load_calibration_set(16))
    assert refq.cli.main(["quantize", str(root / "f.refq.h5"), "--calib", str(root / "calib.npy"),
                          "--per-channel", "--param-bw", "4", "-o", str(root / "q.refq.h5"),
                          "--quiet"]) == 0
    return root


def test_fine_tunes_with_labels_and_with_a_teacher(capsys, files):
    r = files
    code, out, err = cli(capsys, "qat", r / "q.refq.h5", "--data", r / "x.npy", "--labels",
                         r / "y.npy", "--batch-size", "16", "--epochs", "2", "-o", r / "t.refq.h5")
    assert code == 0 and "4 steps over 2 epoch(s), cross-entropy on 'predictions/preact'" in out
    tuned, before = QuantSim.load(str(r / "t.refq.h5")), QuantSim.load(str(r / "q.refq.h5"))
    assert tuned.encodings == before.encodings
    changed = [n.name for n, m in zip(tuned.graph.nodes, before.graph.nodes)
               if any(not np.array_equal(n.params[k], m.params[k]) for k in n.params)]
    assert changed
    code, out, _ = cli(capsys, "qat", r / "q.refq.h5", "--data", r / "x.npy", "--teacher",
                       r / "f.refq.h5", "--batch-size", "16", "--learn-ranges", "-o",
                       r / "d.refq.h5")
    assert code == 0 and "distillation (KL)" in out and "ranges learned" in out
    assert QuantSim.load(str(r / "d.refq.h5")).encodings != before.encodings


@pytest.mark.parametrize("args,needles", [
    (["--data", "x.npy"], ["--labels", "--teacher"]),
    (["--data", "x.npy", "--labels", "y.npy", "--teacher", "f.refq.h5"], ["one of the two"]),
    (["--data", "x.npy", "--labels", "calib.npy"], ["1-d integer"]),
    (["--data", "calib.npy", "--labels", "y.npy", "--batch-size", "8"],
     ["32 labels for 16 samples"]),
    (["--data", "x.npy", "--labels", "y.npy", "--batch-size", "64"], ["fewer than --batch-size"]),
    (["--data", "x.npy", "--labels", "y.npy", "--logits", "nope"], ["--logits nope"]),
    (["--data", "y.npy", "--labels", "y.npy"], ["y.npy"]),
])
def test_bad_input_is_one_line(capsys, files, monkeypatch, args, needles):
    monkeypatch.chdir(files)
    fails_cleanly(capsys, files, "qat", "q.refq.h5", *args, "-o", "out.refq.h5", needles=needles)


def test_a_float_model_is_refused(capsys, files, monkeypatch):
    monkeypatch.chdir(files)
    fails_cleanly(capsys, files, "qat", "f.refq.h5", "--data", "x.npy", "--labels", "y.npy",
                  "-o", "out.refq.h5", needles=["quantize it first"])


def test_quantize_with_sequential_mse(capsys, tmp_path):
    """`refq quantize --seq-mse`: the weight ranges searched on the calibration data, recorded
    in the report; the saved simulation runs."""
    import json

    from real_models import MODELS

    x = np.load(MODELS["mnv1"].parent / "reference_outputs.npz")["inputs"].astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, _, _ = cli(capsys, "import", MODELS["mnv1"], "-o", tmp_path / "m.refq.h5")
    assert code == 0
    code, out, _ = cli(capsys, "quantize", tmp_path / "m.refq.h5", "--calib", tmp_path / "x.npy",
                       "--per-channel", "--param-bw", "4", "--seq-mse", "--report",
                       tmp_path / "r.json", "-o", tmp_path / "q.refq.h5")
    assert code == 0 and "SeqMSE weight ranges of" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["seq_mse"]["layers"] and report["seq_mse"]["algorithm"] == "seq_mse"
    sim = QuantSim.load(str(tmp_path / "q.refq.h5"))
    assert sim.run(x)[sim.graph.outputs[0]].shape == (len(x), 10)
    fails_cleanly(capsys, tmp_path, "quantize", tmp_path / "m.refq.h5", "--load-encodings",
                  tmp_path / "r.json", "--seq-mse", "-o", tmp_path / "z.refq.h5",
                  needles=["--seq-mse", "--calib"])


def test_adaround_and_bn_reestimate_commands(capsys, tmp_path):
    from real_models import MODELS

    x = np.load(MODELS["mnv1"].parent / "reference_outputs.npz")["inputs"].astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert cli(capsys, "import", MODELS["mnv1"], "-o", tmp_path / "m.refq.h5")[0] == 0
    code, out, _ = cli(capsys, "bn-reestimate", tmp_path / "m.refq.h5", "--data",
                       tmp_path / "x.npy", "--batch-size", "5", "-o", tmp_path / "b.refq.h5")
    assert code == 0 and "(11 nodes, 2 batches)" in out
    before, after = (refq.load(str(tmp_path / f)) for f in ("m.refq.h5", "b.refq.h5"))
    assert not np.array_equal(before.node("conv0_bn").params["mean"],
                              after.node("conv0_bn").params["mean"])
    assert cli(capsys, "quantize", tmp_path / "m.refq.h5", "--calib", tmp_path / "x.npy",
               "--per-channel", "--param-bw", "4", "-o", tmp_path / "q.refq.h5")[0] == 0
    code, out, _ = cli(capsys, "adaround", tmp_path / "q.refq.h5", "--data", tmp_path / "x.npy",
                       "--iterations", "5", "--batch-size", "4", "--encodings",
                       tmp_path / "r.encodings", "-o", tmp_path / "r.refq.h5")
    assert code == 0 and "AdaRound of" in out and (tmp_path / "r.encodings").exists()
    rounded = QuantSim.load(str(tmp_path / "r.refq.h5"))
    assert rounded.encodings == QuantSim.load(str(tmp_path / "q.refq.h5")).encodings
    fails_cleanly(capsys, tmp_path, "adaround", tmp_path / "m.refq.h5", "--data",
                  tmp_path / "x.npy", "-o", tmp_path / "z.refq.h5", needles=["quantize it first"])
    fails_cleanly(capsys, tmp_path, "adaround", tmp_path / "q.refq.h5", "--data",
                  tmp_path / "x.npy", "--beta", "3", "-o", tmp_path / "z.refq.h5",
                  needles=["--beta 3"])
    fails_cleanly(capsys, tmp_path, "adaround", tmp_path / "q.refq.h5", "--data",
                  tmp_path / "x.npy", "--batch-size", "1000", "-o", tmp_path / "z.refq.h5",
                  needles=["fewer than --batch-size 1000"])
