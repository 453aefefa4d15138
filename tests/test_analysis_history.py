"""refq.analysis.history: what `refq compress`, `refq adaround` and `refq qat` did, kept in the
model file's `/history` section and shown as report sections.

The recorded numbers are compared with those of direct calls of the algorithms (adaround,
compress_model, fine_tune, train) and with a plain loop over `LayerProblem.loss_and_grad`;
recording changes no computed number (weights byte-identical); a file without history and a
`refq quantize` output stay as they were; the history is carried through quantize, adaround, qat
and bn-reestimate in order; the report tables hold the entries' numbers; a malformed section is
one error naming the file, the section and the entry."""
from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

import refq
from cli_helpers import cli, fails_cleanly
from refq.algorithms.adaround import LayerProblem, adaround, curve_iterations
from refq.algorithms.adaround_loss import beta_at, in_warm_start
from refq.analysis.document import Report
from refq.analysis.history import (CURVE_POINTS, STEP_POINTS, check_history, history_doc,
                                   load_history, training_record)
from refq.analysis.history_report import history_sections
from refq.compression.eval_table import load_eval_table
from refq.errors import FormatError
from refq.grad.optim import Adam
from refq.graph import Graph, Node, TensorSpec
from refq.model_io import save
from refq.quant.quantsim import QuantSim
from refq.runtime import run

F32 = np.float32


def small_model():
    r = np.random.default_rng(0)
    return Graph([TensorSpec("x", (None, 6, 6, 3))], ["prob"], [
        Node("conv1", "conv2d", ["x"], ["c1"], {"padding": "same"},
             {"weight": r.normal(0, 0.5, (6, 3, 3, 3)).astype(F32),
              "bias": r.normal(0, 0.1, 6).astype(F32)}),
        Node("relu1", "relu", ["c1"], ["r1"]),
        Node("conv2", "conv2d", ["r1"], ["c2"], {"padding": "same"},
             {"weight": r.normal(0, 0.3, (6, 3, 3, 6)).astype(F32),
              "bias": r.normal(0, 0.1, 6).astype(F32)}),
        Node("relu2", "relu", ["c2"], ["r2"]),
        Node("gap", "global_avg_pool2d", ["r2"], ["g"]),
        Node("fc", "dense", ["g"], ["logits"], {},
             {"weight": r.normal(0, 0.5, (4, 6)).astype(F32), "bias": np.zeros(4, F32)}),
        Node("sm", "softmax", ["logits"], ["prob"]),
    ], name="small")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """m (float) -> c (compress) -> q (quantize) -> a (adaround) -> t (qat), via the CLI."""
    root = tmp_path_factory.mktemp("history")
    g = small_model()
    x = np.random.default_rng(1).normal(size=(24, 6, 6, 3)).astype(F32)
    fc = g.node("fc")   # centre the logits on these samples, so that every class occurs
    fc.params["bias"] = (-fc.params["weight"] @ run(g, {"x": x}, trace=True)["g"].mean(0)) \
        .astype(F32)
    save(g, str(root / "m.refq.h5"))
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", run(g, {"x": x})["prob"].argmax(1).astype(np.int64))
    steps = [
        ["compress", root / "m.refq.h5", "--method", "spatial-svd", "--target-macs", "0.6",
         "--eval", root / "x.npy", "--labels", root / "y.npy", "--candidates", "4",
         "--eval-table", root / "scores.json", "--fine-tune-epochs", "2", "--batch-size", "8",
         "-o", root / "c.refq.h5", "--quiet"],
        ["quantize", root / "c.refq.h5", "--calib", root / "x.npy", "--per-channel",
         "--param-bw", "4", "-o", root / "q.refq.h5", "--quiet"],
        ["adaround", root / "q.refq.h5", "--data", root / "x.npy", "--iterations", "30",
         "--batch-size", "8", "-o", root / "a.refq.h5", "--quiet"],
        ["qat", root / "a.refq.h5", "--data", root / "x.npy", "--labels", root / "y.npy",
         "--epochs", "2", "--batch-size", "8", "-o", root / "t.refq.h5", "--quiet"],
    ]
    for argv in steps:
        assert refq.cli.main([str(a) for a in argv]) == 0, argv
    return root


# ---- recording: the numbers the algorithms computed ----------------------------------------
def test_curve_iterations_stay_within_the_budget():
    for t in [*range(1, 450), 9999, 10000, 15000]:
        every, marks = curve_iterations(t, CURVE_POINTS)
        assert len(marks) <= CURVE_POINTS and marks[-1] == t - 1
        assert marks == sorted(set(marks)) and every == max(1, math.ceil(t / CURVE_POINTS))
        assert all(m % every == every - 1 for m in marks[:-1])
    assert curve_iterations(15000, 200)[0] == 75 and len(curve_iterations(15000, 200)[1]) == 200


def dense_problem(iterations):
    w = np.array([[-0.8, 0.31, -0.12], [0.58, 0.07, -0.47]], F32)
    x = np.random.default_rng(5).normal(size=(12, 3)).astype(F32)
    g = Graph([TensorSpec("x", (None, 3))], ["fc"],
              [Node("fc", "dense", ["x"], ["fc"], {}, {"weight": w, "bias": np.zeros(2, F32)})])
    sim = QuantSim(g, config="per_tensor", param_bw=4)
    sim.compute_param_encodings()
    return LayerProblem(sim.graph.node("fc"), sim.encodings["fc.weight"], x, x @ w.T, None,
                        iterations=iterations, reg=0.01, beta=(20.0, 2.0), warm_start=0.2)


def test_layer_curve_is_what_each_iteration_computed():
    """The recorded curve against a plain loop over loss_and_grad with the same Adam steps."""
    t_total, points = 37, 8
    p = dense_problem(t_total)
    alpha, last = p.optimize(np.random.default_rng(2), 5, curve_points=points)
    ref = dense_problem(t_total)
    rng, a, adam, seen = np.random.default_rng(2), ref.alpha0.copy(), Adam(), []
    for t in range(t_total):
        total, recon, round_value, grad = ref.loss_and_grad(a, rng.permutation(12)[:5], t)
        adam.step({"alpha": a}, {"alpha": grad})
        seen.append((recon, round_value))
    every, marks = curve_iterations(t_total, points)
    assert p.curve["every"] == every == 5 and p.curve["iteration"] == marks
    assert p.curve["recon_loss"] == [seen[t][0] for t in marks]
    assert p.curve["round_loss"] == [seen[t][1] for t in marks]
    assert p.curve["beta"] == [None if in_warm_start(t, t_total, 0.2) else
                               beta_at(t, t_total, (20.0, 2.0), 0.2) for t in marks]
    assert a.tobytes() == alpha.tobytes() and (last[1], last[2]) == seen[-1]


def test_recording_changes_no_number():
    g = small_model()
    x = np.random.default_rng(3).normal(size=(10, 6, 6, 3)).astype(F32)
    sim = QuantSim(g, config="per_channel", param_bw=4).compute_encodings(x)
    plain, r0 = adaround(sim, x, iterations=25, batch_size=4, seed=1)
    recorded, r1 = adaround(sim, x, iterations=25, batch_size=4, seed=1, curve_points=7)
    for node in ("conv1", "conv2", "fc"):
        assert plain.graph.node(node).params["weight"].tobytes() == \
            recorded.graph.node(node).params["weight"].tobytes()
        a, b = r0["layers"][node], r1["layers"][node]
        assert "curve" not in a and {k: v for k, v in b.items() if k not in ("curve", "seconds")} \
            == {k: v for k, v in a.items() if k != "seconds"}
        c = b["curve"]
        assert c["iteration"][-1] == 24 and len(c["iteration"]) <= 7
        assert (c["recon_loss"][-1], c["round_loss"][-1]) == (b["recon_loss"], b["round_loss"])
        assert 0 <= b["up_fraction"] <= 1
    assert plain.encodings == recorded.encodings


def test_training_record_by_a_plain_loop():
    losses = list(np.random.default_rng(0).random(1234))
    rec = training_record(losses, 100, evals=[0.5])
    k = rec["loss_curve"]["every"]
    assert k == math.ceil(1234 / STEP_POINTS) == 3 and rec["steps"] == 1234
    ends, means, start = [], [], 0
    while start < 1234:
        stop = min(start + k, 1234)
        ends.append(stop)
        means.append(sum(losses[start:stop]) / (stop - start))
        start = stop
    assert rec["loss_curve"]["step"] == ends
    np.testing.assert_allclose(rec["loss_curve"]["loss"], means, rtol=1e-14)
    assert len(rec["epoch_loss"]) == 13 and rec["eval"] == [0.5]
    assert rec["epoch_loss"][-1] == pytest.approx(sum(losses[1200:]) / 34, rel=1e-14)


# ---- the command chain --------------------------------------------------------------------
def test_compress_history_equals_a_direct_run(chain):
    from refq.compression.compress import accuracy_evaluator, compress_model, fine_tune

    (entry,) = load_history(chain / "c.refq.h5")
    g = refq.load(str(chain / "m.refq.h5"))
    x, y = np.load(chain / "x.npy"), np.load(chain / "y.npy")
    evaluate = accuracy_evaluator({"x": x}, y)
    small, report = compress_model(g, "spatial-svd", target_macs=0.6, evaluate=evaluate,
                                   candidates=4, data={"x": x}, seed=0)
    table, info = load_eval_table(chain / "scores.json")
    assert entry["command"] == "compress" and entry["samples"] == 24
    assert entry["eval_table"]["scores"] == {layer: {repr(r): s for r, s in scores.items()}
                                             for layer, scores in table.items()}
    assert entry["evaluation"] == info["evaluation"] == evaluate.description
    assert entry["layers"] == report["layers"] and entry["model_cost"] == report["model"]
    assert entry["selected_score"] == report["selected_score"]
    assert entry["search_steps"] == report["search_steps"]
    assert (entry["score_before"], entry["score_after"]) == (report["score_before"],
                                                             report["score_after"])
    _, ft = fine_tune(small, {"x": x}, labels=y, epochs=2, batch_size=8, seed=0)
    rec = entry["fine_tune"]
    assert rec["steps"] == 6 and rec["steps_per_epoch"] == 3
    assert rec["epoch_loss"] == [float(np.mean(ft["loss"][:3])), float(np.mean(ft["loss"][3:]))]
    assert entry["options"]["target"] == 0.6 and entry["options"]["method"] == "spatial-svd"


def test_compress_files_are_byte_identical_with_and_without_an_eval_table_file(chain, tmp_path,
                                                                              capsys):
    args = ["compress", chain / "m.refq.h5", "--method", "spatial-svd", "--target-macs", "0.6",
            "--eval", chain / "x.npy", "--labels", chain / "y.npy", "--candidates", "4"]
    code, out, err = cli(capsys, *args, "--eval-table", tmp_path / "s.json", "--fine-tune-epochs",
                         "2", "--batch-size", "8", "-o", tmp_path / "c1.refq.h5")
    assert code == 0, err
    code, out, err = cli(capsys, *args, "--fine-tune-epochs", "2", "--batch-size", "8",
                         "-o", tmp_path / "c2.refq.h5")
    assert code == 0, err
    assert "eval table: computed; 6 evaluations" in out
    one, two = ((tmp_path / f).read_bytes() for f in ("c1.refq.h5", "c2.refq.h5"))
    assert one == two == (chain / "c.refq.h5").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1.refq.h5", "c2.refq.h5", "s.json"]


def test_manual_ratios_record_no_table(chain, tmp_path, capsys):
    code, _, err = cli(capsys, "compress", chain / "c.refq.h5", "--method", "weight-svd",
                       "--ratios", "fc=0.5", "-o", tmp_path / "w.refq.h5")
    assert code == 0, err
    history = load_history(tmp_path / "w.refq.h5")
    assert history[:1] == load_history(chain / "c.refq.h5") and len(history) == 2
    entry = history[1]
    assert entry["eval_table"] is None and entry["samples"] is None
    assert entry["options"]["mode"] == "manual" and list(entry["layers"]) == ["fc"]
    (sec,) = history_sections(history)
    assert [f.id for f in sec.figures] == ["compression.2.ratios"]
    assert next(t for t in sec.tables if t.id == "compression.2.layers").rows[0][:2] == \
        ["fc", entry["layers"]["fc"]["ratio"]]


def test_history_is_carried_and_appended_in_order(chain):
    c, q, a, t = (load_history(chain / f) for f in ("c.refq.h5", "q.refq.h5", "a.refq.h5",
                                                   "t.refq.h5"))
    assert q == c and a[:1] == c and t[:2] == a
    assert [e["command"] for e in t] == ["compress", "adaround", "qat"]


def test_adaround_history_equals_a_direct_call(chain):
    entry = load_history(chain / "a.refq.h5")[-1]
    sim = QuantSim.load(str(chain / "q.refq.h5"))
    _, report = adaround(sim, {"x": np.load(chain / "x.npy")}, iterations=30, batch_size=8,
                         seed=0, curve_points=CURVE_POINTS)
    assert entry["layers"] == {n: {k: v for k, v in r.items() if k != "seconds"}
                               for n, r in report["layers"].items()}
    assert entry["options"] == {"iterations": 30, "reg": 0.01, "beta": [20.0, 2.0],
                                "warm_start": 0.2, "batch_size": 8, "seed": 0, "param_bw": None}
    assert all(v["curve"]["iteration"] == list(range(30)) for v in entry["layers"].values())


def test_qat_history_equals_a_direct_call(chain):
    from refq.grad import cross_entropy
    from refq.grad.train import logits_tensor, train

    entry = load_history(chain / "t.refq.h5")[-1]
    sim = QuantSim.load(str(chain / "a.refq.h5"))
    _, report = train(sim, {"x": np.load(chain / "x.npy")}, cross_entropy, Adam(1e-3),
                      targets=np.load(chain / "y.npy"), epochs=2, batch_size=8, seed=0,
                      output=logits_tensor(sim.graph))
    assert entry["loss_curve"]["loss"] == report["loss"] and entry["steps"] == 6
    assert entry["epoch_loss"] == [float(np.mean(report["loss"][:3])),
                                   float(np.mean(report["loss"][3:]))]
    assert entry["options"]["loss"] == "cross-entropy" and entry["eval"] == []


def test_same_inputs_same_bytes(chain, tmp_path, capsys):
    args = ["adaround", chain / "q.refq.h5", "--data", chain / "x.npy", "--iterations", "30",
            "--batch-size", "8", "--quiet", "-o"]
    assert cli(capsys, *args, tmp_path / "a.refq.h5")[0] == 0
    assert (tmp_path / "a.refq.h5").read_bytes() == (chain / "a.refq.h5").read_bytes()


def test_files_without_history_are_unchanged(chain, tmp_path, capsys):
    """A model without history loads as before and `refq quantize` writes exactly the file
    that the section-less save writes."""
    assert load_history(chain / "m.refq.h5") == []
    with h5py.File(chain / "m.refq.h5", "r") as f:
        assert "history" not in f
    assert cli(capsys, "quantize", chain / "m.refq.h5", "--calib", chain / "x.npy",
               "--per-channel", "-o", tmp_path / "q.refq.h5", "--quiet")[0] == 0
    sim = QuantSim.load(str(tmp_path / "q.refq.h5"))
    save(sim.graph, str(tmp_path / "plain.refq.h5"), sections={"encodings": sim.to_json()})
    assert (tmp_path / "q.refq.h5").read_bytes() == (tmp_path / "plain.refq.h5").read_bytes()
    sim.save(str(tmp_path / "again.refq.h5"))
    assert (tmp_path / "again.refq.h5").read_bytes() == (tmp_path / "q.refq.h5").read_bytes()
    assert cli(capsys, "bn-reestimate", tmp_path / "q.refq.h5", "--data", chain / "x.npy",
               "-o", tmp_path / "b.refq.h5", "--quiet")[0] == 0
    assert load_history(tmp_path / "b.refq.h5") == []
    assert cli(capsys, "bn-reestimate", chain / "t.refq.h5", "--data", chain / "x.npy",
               "-o", tmp_path / "b2.refq.h5", "--quiet")[0] == 0
    assert load_history(tmp_path / "b2.refq.h5") == load_history(chain / "t.refq.h5")


# ---- report sections -----------------------------------------------------------------------
def test_sections_tables_hold_the_history_numbers(chain):
    history = load_history(chain / "t.refq.h5")
    sections = history_sections(history)
    assert [s.id for s in sections] == ["compression", "adaround", "qat"]
    Report("r", sections).to_json()   # ids well formed and unique, JSON-able
    comp, ada, qat = sections
    c, a, t = history
    tables = {tb.id: tb for s in sections for tb in s.tables}
    rows = tables["compression.layers"].rows
    assert [r[0] for r in rows] == list(c["eval_table"]["scores"])
    for r in rows:
        row = c["layers"].get(r[0])
        assert r[1:] == ([None] * 5 if row is None else
                         [row[k] for k in ("ratio", "macs_before", "macs_after", "params_before",
                                           "params_after")])
    model = dict(tables["compression.model"].rows)
    assert model["achieved ratio"] == c["model_cost"]["ratio"]
    assert [model[f"{k} {w}"] for k in ("MACs", "params") for w in ("before", "after")] == [
        c["model_cost"][f"{k}_{w}"] for k in ("macs", "params") for w in ("before", "after")]
    assert (model["score after"], model["score after fine-tuning"]) == (
        c["score_after"], c["fine_tune"]["score"])
    scores = tables["compression.scores"]
    assert [[r[0]] + r[1:] for r in scores.rows] == [
        [layer] + [per.get(col) for col in scores.columns[1:]]
        for layer, per in c["eval_table"]["scores"].items()]
    assert [r[1] for r in tables["compression.fine_tune"].rows] == c["fine_tune"]["epoch_loss"]
    assert [r[0] for r in tables["adaround.layers"].rows] == list(a["layers"])
    assert [r[3:] for r in tables["adaround.layers"].rows] == [
        [v["loss"], v["recon_loss"], v["round_loss"], v["hard_fraction"], v["up_fraction"]]
        for v in a["layers"].values()]
    assert [r[1] for r in tables["qat.epochs"].rows] == t["epoch_loss"]
    assert len(comp.figures) <= 6 and len(ada.figures) <= 4 and len(qat.figures) == 1
    ratios = next(f for f in comp.figures if f.id == "compression.ratios").panels[0].data
    assert ratios["labels"] == list(c["eval_table"]["scores"])
    lines = [f for f in comp.figures if f.id.startswith("compression.scores.")]
    marks = [m["x"] for f in lines for p in f.panels for m in p.data["markers"]]
    assert marks == [v["ratio"] for v in c["layers"].values()]
    assert comp.findings and ada.findings and qat.findings


def synthetic_compress(layers: int) -> dict:
    names = [f"conv{i}" for i in range(layers)]
    scores = {n: {repr(k / 10): 0.5 + k / 20 - (i % 7) / 100 for k in range(1, 10)}
              for i, n in enumerate(names)}
    row = {"ratio": 0.5, "macs_before": 100, "macs_after": 50, "params_before": 10,
           "params_after": 5}
    return {"command": "compress", "model": "m", "options": {"method": "spatial-svd"},
            "samples": 10, "evaluation": "top-1", "eval_table": {
                "format": "refq-compression-eval-table", "version": 1, "method": "spatial-svd",
                "cost": "macs", "evaluation": "top-1", "scores": scores},
            "layers": {n: row for n in names[::3]}, "model_cost": {**row, "ratio": 0.8},
            "selected_score": 0.7, "search_steps": [], "score_before": 1.0,
            "score_after": 0.9, "fine_tune": None}


def test_figure_budget_on_a_large_history():
    entry = synthetic_compress(130)
    (sec,) = history_sections(check_history(history_doc([entry, entry]), "synthetic"))
    assert len(sec.figures) <= 6
    assert {tb.id for tb in sec.tables} >= {"compression.1.layers", "compression.2.scores"}
    assert len(next(t for t in sec.tables if t.id == "compression.2.layers").rows) == 130
    assert all(f.id.startswith("compression.2.") for f in sec.figures)
    shown = sum(len(p.data["series"]) - 1 for f in sec.figures if ".scores." in f.id
                for p in f.panels)
    assert shown == 80
    Report("r", [sec]).to_json()


# ---- bad history ---------------------------------------------------------------------------
def _with_history(path, doc):
    save(small_model(), str(path), sections={"history": doc})


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(format="other"), "format 'other'"),
    (lambda d: d.update(entries={}), "'entries' is not a list"),
    (lambda d: d["entries"][0].update(command="prune"), "entry 0: 'command' is 'prune'"),
    (lambda d: d["entries"][0].pop("layers"), "fields missing ['layers']"),
    (lambda d: d["entries"][0]["layers"]["conv0"].update(ratio="x"),
     "entry 0 (compress).layers.conv0.ratio must be a number"),
    (lambda d: d["entries"][0]["eval_table"]["scores"]["conv0"].update({"1.5": 0.2}),
     "ratio '1.5' is not a number in (0, 1]"),
    (lambda d: d["entries"].append({"command": "qat"}), "entry 1 (qat): fields missing"),
])
def test_malformed_history_is_one_error(tmp_path, mutate, needle):
    doc = json.loads(json.dumps(history_doc([synthetic_compress(2)])))
    mutate(doc)
    path = tmp_path / "bad.refq.h5"
    _with_history(path, doc)
    with pytest.raises(FormatError) as e:
        load_history(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: section '/history'") and needle in msg, msg
    assert "\n" not in msg


def test_curve_lists_of_different_lengths_are_refused(chain, tmp_path):
    doc = history_doc(load_history(chain / "a.refq.h5"))
    doc["entries"][-1]["layers"]["fc"]["curve"]["beta"].pop()
    with pytest.raises(FormatError, match=r"layers\.fc\.curve: iteration, recon_loss, "
                                          r"round_loss, beta have different lengths"):
        check_history(doc, "f.refq.h5")


def test_commands_refuse_a_malformed_history(chain, tmp_path, capsys):
    doc = history_doc(load_history(chain / "q.refq.h5"))
    doc["entries"][0]["layers"] = []
    sim = QuantSim.load(str(chain / "q.refq.h5"))
    sim.save(str(tmp_path / "bad.refq.h5"), history=doc)
    fails_cleanly(capsys, tmp_path, "adaround", tmp_path / "bad.refq.h5", "--data",
                  chain / "x.npy", "--iterations", "3", "-o", tmp_path / "z.refq.h5",
                  needles=[f"{tmp_path / 'bad.refq.h5'}: section '/history'",
                           "entry 0 (compress).layers must be an object"])
    fails_cleanly(capsys, tmp_path, "quantize", tmp_path / "bad.refq.h5", "--calib",
                  chain / "x.npy", "-o", tmp_path / "z.refq.h5", needles=["section '/history'"])
