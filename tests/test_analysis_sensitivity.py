"""refq.analysis.sensitivity: AIMET's quantization analyzer on a QuantSim, against its definitions.

References: hand-written groups and enabled sets of small graphs (the module docstring's rules);
`QuantSim.run(feeds, enabled=...)` for every configuration's output, bit for bit; the scores
recomputed here from their formulas (SQNR = 10·log10(Σy²/Σ(y − ŷ)²), top-1 agreement and accuracy
by argmax); Spearman's ρ against a naive transcription (ranks by counting, ties averaged, Pearson
by loops) and scipy.stats.spearmanr.
"""
import json
import math

import numpy as np
import pytest
import scipy.stats

from refq.analysis import sensitivity as S
from refq.analysis.document import Report
from refq.errors import InputError, QuantError
from refq.graph import Graph, Node, TensorSpec
from refq.quant.partial_sim import PartialSim
from refq.quant.config import parse_config
from refq.quant.quantsim import QuantSim
from refq.report import quant_report

f32 = np.float32


def conv(r, name, x, y, shape, groups=1):
    return Node(name, "conv2d", [x], [y], {"padding": "same", "groups": groups},
                {"weight": r.normal(size=shape).astype(f32),
                 "bias": r.normal(0, 0.1, shape[0]).astype(f32)})


def dense(r, name, x, y, n_out, n_in):
    return Node(name, "dense", [x], [y], {}, {"weight": r.normal(size=(n_out, n_in)).astype(f32),
                                              "bias": r.normal(0, 0.1, n_out).astype(f32)})


def residual_net(seed=0):
    """x -> conv1+relu1 (supergroup) -> dw -> relu2 (dw and relu share one quantizer) -> conv2 ->
    add(conv2, relu1) -> global average pool -> fc: four layers."""
    r = np.random.default_rng(seed)
    return Graph([TensorSpec("x", (None, 4, 4, 2))], ["y"], [
        conv(r, "conv1", "x", "c1", (3, 3, 3, 2)),
        Node("relu1", "relu", ["c1"], ["r1"]),
        conv(r, "dw", "r1", "d", (3, 3, 3, 1), groups=3),
        Node("relu2", "relu", ["d"], ["r2"]),
        conv(r, "conv2", "r2", "c2", (3, 1, 1, 3)),
        Node("add", "add", ["c2", "r1"], ["s"]),
        Node("gap", "global_avg_pool2d", ["s"], ["gp"]),
        dense(r, "fc", "gp", "y", 4, 3),
    ], name="residual")


def two_branch_net(seed=1):
    """x read by two layers (fc_a, fc_b), their outputs added: the input quantizer is shared."""
    r = np.random.default_rng(seed)
    return Graph([TensorSpec("x", (None, 5))], ["y"], [
        dense(r, "fc_a", "x", "a", 3, 5), dense(r, "fc_b", "x", "b", 3, 5),
        Node("add", "add", ["a", "b"], ["y"])], name="two_branch")


RESIDUAL_GROUPS = [("conv1", ["x", "r1", "conv1.weight"]), ("dw", ["d", "dw.weight"]),
                   ("conv2", ["c2", "s", "gp", "conv2.weight"]), ("fc", ["y", "fc.weight"])]


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(5).normal(size=(40, 4, 4, 2)).astype(f32)


@pytest.fixture(scope="module")
def labels():
    return np.random.default_rng(6).integers(0, 4, 40)


@pytest.fixture(scope="module")
def sim(data):
    return QuantSim(residual_net(), "per_tensor").compute_encodings(data)


def groups(sim):
    return [(g.name, g.quantizers) for g in S.quantizer_groups(sim)]


# ----------------------------------------------------------------------------- groups, sets

def test_groups_of_the_residual_net(sim):
    assert sim.quantizers["d"].tensors == ["d", "r2"]          # the dw/relu shared quantizer
    assert groups(sim) == RESIDUAL_GROUPS


def test_configurations_are_the_hand_written_sets(sim):
    every = {"x", "r1", "d", "c2", "s", "gp", "y",
             "conv1.weight", "dw.weight", "conv2.weight", "fc.weight"}
    weights = {"conv1.weight", "dw.weight", "conv2.weight", "fc.weight"}
    expected = {"fp32": set(), "all": every, "weights": weights, "activations": every - weights}
    for name, qs in RESIDUAL_GROUPS:
        expected["only:" + name] = set(qs)
        expected["without:" + name] = every - set(qs)
    got = S.configurations(sim, S.quantizer_groups(sim))
    assert {k: set(v) for k, v in got.items()} == expected


def test_a_quantizer_held_by_two_groups_stays_on_while_the_other_holds_it():
    x = np.random.default_rng(2).normal(size=(30, 5)).astype(f32)
    sim = QuantSim(two_branch_net(), "per_tensor").compute_encodings(x)
    assert groups(sim) == [("fc_a", ["x", "a", "fc_a.weight"]),
                           ("fc_b", ["x", "b", "y", "fc_b.weight"])]
    c = {k: set(v) for k, v in S.configurations(sim, S.quantizer_groups(sim)).items()}
    assert c["only:fc_a"] == {"x", "a", "fc_a.weight"}
    assert c["without:fc_a"] == {"x", "b", "y", "fc_b.weight"}
    assert c["without:fc_b"] == {"x", "a", "fc_a.weight"}


def test_disabled_quantizers_stay_off_and_a_group_without_one_has_no_run(data):
    sim = QuantSim(residual_net(), "per_tensor").compute_encodings(data)
    sim.enabled.update({"d": False, "dw.weight": False, "y": False})
    c = {k: set(v) for k, v in S.configurations(sim, S.quantizer_groups(sim)).items()}
    assert "only:dw" not in c and "without:dw" not in c
    assert c["only:fc"] == {"fc.weight"} and "y" not in c["all"] and "d" not in c["all"]
    sec = S.sensitivity_section(sim, data)
    row = next(r for r in sec.tables[1].rows if r[0] == "dw")
    assert row[1] == "d, dw.weight (none enabled)" and row[2] is None


def test_input_quantizers_join_their_node_and_run_bit_for_bit(data):
    """Add with is_input_quantized: its two input quantizers join conv2's group (the add's
    owner, the latest layer among its inputs' owners); every run equals the simulation."""
    cfg = parse_config({
        "defaults": {"ops": {"is_output_quantized": "True"},
                     "params": {"is_quantized": "True", "is_symmetric": "True"}},
        "params": {"bias": {"is_quantized": "False"}},
        "op_type": {"Add": {"is_input_quantized": "True"}, "Gemm": {"is_input_quantized": "True"}},
        "supergroups": [], "model_input": {"is_input_quantized": "True"}, "model_output": {}},
        source="<input cfg>")
    sim = QuantSim(residual_net(), cfg).compute_encodings(data)
    gs = dict(groups(sim))
    assert {"add:input0", "add:input1"} <= set(gs["conv2"]) and "fc:input0" in gs["fc"]
    configs = S.configurations(sim, S.quantizer_groups(sim))
    runner = PartialSim(sim, "y")
    jobs = {v: runner.compile(v) for v in configs.values() if v and v != runner.all_set}
    for enabled, y in runner.outputs({"x": data[:16]}, jobs):
        want = sim.run({"x": data[:16]}, enabled={n: True for n in enabled})["y"]
        assert np.array_equal(y, want), sorted(enabled)


def test_a_graph_without_layers_has_a_group_per_quantized_node():
    g = Graph([TensorSpec("x", (None, 6))], ["y"], [
        Node("act", "relu", ["x"], ["a"]), Node("sm", "softmax", ["a"], ["y"])], name="nolayer")
    x = np.random.default_rng(3).normal(size=(10, 6)).astype(f32)
    sim = QuantSim(g, "per_tensor").compute_encodings(x)
    assert [q.tensors for q in sim.quantizers.values()] == [["x"], ["a"], ["y"]]
    assert groups(sim) == [("x", ["x"]), ("act", ["a"]), ("sm", ["y"])]


# ----------------------------------------------------------------------------- scores

def direct_outputs(sim, data, enabled, batch_size):
    plan = sim.plan({n: True for n in enabled})
    return np.concatenate([plan.run({"x": data[s:s + batch_size]})["y"]
                           for s in range(0, len(data), batch_size)])


@pytest.mark.parametrize("batch_size", [40, 16])
def test_every_run_is_the_simulation_bit_for_bit(sim, data, batch_size):
    configs = S.configurations(sim, S.quantizer_groups(sim))
    runner = PartialSim(sim, "y")
    jobs = {v: runner.compile(v) for v in configs.values() if v and v != runner.all_set}
    assert len(jobs) == len(configs) - 2
    for s in range(0, len(data), batch_size):
        feeds = {"x": data[s:s + batch_size]}
        got = list(runner.outputs(feeds, jobs))
        assert len(got) == len(jobs) + 2
        for enabled, y in got:
            want = sim.run(feeds, enabled={n: True for n in enabled})["y"]
            assert np.array_equal(y, want), sorted(enabled)


def test_partial_runs_start_where_the_change_does(sim):
    runner = PartialSim(sim, "y")
    configs = S.configurations(sim, S.quantizer_groups(sim))
    reached = {k: (j.base, [n.name for n in j.plan.order] if j.plan else None)
               for k, j in ((k, runner.compile(v)) for k, v in configs.items()
                            if v and v != runner.all_set)}
    assert reached["only:fc"] == ("float", ["fc"]) and reached["without:fc"] == ("all", ["fc"])
    assert reached["only:conv2"] == ("float", ["conv2", "add", "gap", "fc"])
    assert reached["only:conv1"][0] == "all"          # conv1's part is the all-quantized run's
    assert reached["weights"][1][0] == "conv1"


def sqnr(y, y_hat):
    y, y_hat = y.astype(np.float64), y_hat.astype(np.float64)
    return 10 * math.log10(np.sum(y * y) / np.sum((y - y_hat) ** 2))


@pytest.mark.parametrize("batch_size", [None, 16])
def test_scores_are_the_definitions(sim, data, labels, batch_size):
    r = S.sensitivity_scores(sim, data, labels, batch_size=batch_size)
    step = batch_size or 64
    y = direct_outputs(sim, data, set(), step)
    assert r["samples"] == 40 and r["output"] == "y"
    for key, enabled in r["configurations"].items():
        y_hat = direct_outputs(sim, data, enabled, step)
        got = r["scores"][key]
        assert got["agreement"] == np.mean(y_hat.argmax(1) == y.argmax(1)), key
        assert got["accuracy"] == np.mean(y_hat.argmax(1) == labels), key
        if key == "fp32":
            assert got["sqnr_db"] == math.inf
        else:
            assert got["sqnr_db"] == pytest.approx(sqnr(y, y_hat), rel=1e-12), key


def test_one_batch_several_batches_and_an_iterable_agree(sim, data, labels):
    one = S.sensitivity_scores(sim, data, labels)
    several = S.sensitivity_scores(sim, data, labels, batch_size=7)
    it = S.sensitivity_scores(sim, (data[s:s + 9] for s in range(0, 40, 9)), labels)
    assert several["batches"] == 6 and it["batches"] == 5 and one["batches"] == 1
    for other in (several, it):
        assert other["configurations"] == one["configurations"]
        for k, s in one["scores"].items():
            assert other["scores"][k]["agreement"] == s["agreement"]
            assert other["scores"][k]["accuracy"] == s["accuracy"]
            assert other["scores"][k]["sqnr_db"] == pytest.approx(s["sqnr_db"], rel=1e-5)


def test_without_labels_there_is_no_accuracy(sim, data):
    r = S.sensitivity_scores(sim, data)
    assert all(s["accuracy"] is None and s["agreement"] is not None for s in r["scores"].values())


# ----------------------------------------------------------------------------- spearman

def naive_ranks(v):
    return [1 + sum(w < x for w in v) + (sum(w == x for w in v) - 1) / 2 for x in v]


def naive_spearman(x, y):
    rx, ry = naive_ranks(list(x)), naive_ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return num / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


@pytest.mark.parametrize("seed", range(6))
def test_spearman_with_ties_is_the_naive_definition(seed):
    r = np.random.default_rng(seed)
    n = int(r.integers(3, 30))
    x, y = r.integers(0, 5, n).astype(float), r.integers(0, 4, n).astype(float)
    if seed == 0:
        x[:2] = math.inf            # exact outputs rank highest
    assert np.array_equal(S.average_ranks(x), naive_ranks(list(x)))
    if len(set(x)) > 1 and len(set(y)) > 1:
        assert S.spearman(x, y) == pytest.approx(naive_spearman(x, y), abs=1e-12)
        if seed:
            assert S.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)


def test_spearman_undefined_cases():
    assert S.spearman([1, 2], [2, 1]) is None
    assert S.spearman([1, 1, 1], [1, 2, 3]) is None
    assert S.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    with pytest.raises(InputError):
        S.spearman([1, 2, 3], [1, 2])


# ----------------------------------------------------------------------------- bad input

def test_bad_labels_and_data_are_refq_errors(sim, data, labels):
    cases = [
        (lambda: S.sensitivity_scores(sim, data, labels[:39]), "39 entries for 40"),
        (lambda: S.sensitivity_scores(sim, {"x": data}, labels[:39]), "39 entries for 40"),
        (lambda: S.sensitivity_scores(sim, iter([data[:20], data[20:]]), labels[:30]),
         "30 entries"),
        (lambda: S.sensitivity_scores(sim, iter([data]), np.append(labels, 1)), "41 entries"),
        (lambda: S.sensitivity_scores(sim, data, labels.astype(float)), "integer"),
        (lambda: S.sensitivity_scores(sim, data, labels + 4), "class indices 0..3"),
        (lambda: S.sensitivity_scores(sim, data[:0]), "no samples"),
        (lambda: S.sensitivity_scores(sim, iter([])), "no samples"),
        (lambda: S.sensitivity_scores(sim, data, output="nope"), "no output 'nope'"),
    ]
    bad = data.copy()
    bad[3, 1, 2, 0] = np.nan
    cases.append((lambda: S.sensitivity_scores(sim, bad), "not finite"))
    cases.append((lambda: S.sensitivity_section(sim, iter([data])), "reads the data twice"))
    one = Graph([TensorSpec("x", (None, 3))], ["y"], [
        dense(np.random.default_rng(0), "fc", "x", "y", 1, 3)], name="scalar_out")
    x1 = np.random.default_rng(1).normal(size=(6, 3)).astype(f32)
    sim1 = QuantSim(one, "per_tensor").compute_encodings(x1)
    cases.append((lambda: S.sensitivity_scores(sim1, x1, np.zeros(6, int)), "no class axis"))
    assert S.sensitivity_scores(sim1, x1)["scores"]["all"]["agreement"] is None
    for call, words in cases:
        with pytest.raises(InputError, match=words):
            call()


def test_a_non_finite_output_is_a_quant_error():
    g = Graph([TensorSpec("x", (None, 3))], ["y"], [Node("fc", "dense", ["x"], ["y"], {}, {
        "weight": np.full((2, 3), 10, f32)})], name="huge")
    sim = QuantSim(g, "per_tensor").compute_encodings(np.ones((4, 3), f32))
    with np.errstate(over="ignore"), pytest.raises(QuantError, match="output 'y' is not finite"):
        S.sensitivity_scores(sim, np.full((4, 3), 3e37, f32))


# ----------------------------------------------------------------------------- the section

@pytest.mark.parametrize("with_labels", [True, False])
def test_section_tables_figures_and_findings(sim, data, labels, with_labels):
    sec = S.sensitivity_section(sim, data, labels if with_labels else None)
    assert sec.id == "sensitivity" and len(sec.figures) == 4
    Report("r", [sec]).check_ids()
    models, per_group, agreement = sec.tables
    r = S.sensitivity_scores(sim, data, labels if with_labels else None)
    assert [row[0] for row in models.rows] == ["FP32", "weights only", "activations only",
                                               "all quantizers"]
    assert models.rows[3][2] == r["scores"]["all"]["sqnr_db"]
    assert ("accuracy" in models.columns) == with_labels
    assert [row[0] for row in per_group.rows] == [g for g, _ in RESIDUAL_GROUPS]
    bars = sec.figures[0].panels[0].data
    assert bars["labels"] == [g for g, _ in RESIDUAL_GROUPS]
    assert bars["series"][0]["values"] == [r["scores"]["only:" + g]["sqnr_db"]
                                           for g, _ in RESIDUAL_GROUPS]
    sc = r["scores"]

    def rank(key):   # the findings' order: accuracy (with labels), then SQNR, then name
        return (sc[key]["accuracy"] if with_labels else 0, sc[key]["sqnr_db"])

    most = sorted((g for g, _ in RESIDUAL_GROUPS), key=lambda g: (rank("only:" + g), g))
    found = sec.findings[2]
    assert found.startswith("Most sensitive with only it quantized: " + most[0] + " (")
    assert found.index(most[1] + " (") < found.index(most[2] + " (") and most[3] not in found
    costly = "Activations" if rank("activations") < rank("weights") else "Weights"
    assert sec.findings[1].startswith(costly + " cost more: weights only ")
    for fig, sign in zip(sec.figures[:2], (1, -1)):     # the 3 lowest SQNR, the 3 largest gains
        d = fig.panels[0].data
        values = dict(zip(d["labels"], d["series"][0]["values"]))
        assert set(d["highlight"]) == set(sorted(values, key=lambda n: sign * values[n])[:3])
        assert d["xlabel"] in fig.panels[0].data["series"][0]["name"]
    assert any(f.startswith("Agreement with the per-quantizer SQNR report") for f in sec.findings)
    json.dumps(sec.to_json())


def test_rank_agreement_is_spearman_of_the_group_table(sim, data):
    report = quant_report(sim, data)
    sec = S.sensitivity_section(sim, data, sqnr_report=report)
    local = {q["quantizer"]: q["local_sqnr_db"] for q in report["quantizers"]}
    r = S.sensitivity_scores(sim, data)
    xs = [r["scores"]["only:" + g]["sqnr_db"] for g, _ in RESIDUAL_GROUPS]
    ys = [min(local[q] for q in qs if local.get(q) is not None) for _, qs in RESIDUAL_GROUPS]
    rows = dict(sec.tables[2].rows)
    assert rows["groups compared"] == 4
    assert rows["Spearman rho"] == pytest.approx(naive_spearman(xs, ys), abs=1e-12)
    assert [row[-2] for row in sec.tables[1].rows] == ys
    assert S.sensitivity_section(sim, data).to_json() == sec.to_json()   # report computed alike


def test_the_section_is_deterministic(sim, data, labels):
    a = S.sensitivity_section(sim, data, labels, batch_size=16).to_json()
    b = S.sensitivity_section(sim, data, labels, batch_size=16).to_json()
    assert json.dumps(a) == json.dumps(b)


# ----------------------------------------------------------------------------- PP-OCR

def test_ppocr_groups_and_runs_on_16_lines():
    from refq.algorithms import fold_batch_norms
    from refq.ppocr_data import load_calibration_set, load_model

    calib = load_calibration_set(32)
    folded, _ = fold_batch_norms(load_model())
    sim = QuantSim(folded, "per_channel").compute_encodings(calib)
    gs = S.quantizer_groups(sim)
    assert len(gs) == 54 and {g.name for g in gs} == \
        {n.name for n in folded.nodes if n.op in ("conv2d", "dense")}
    assert gs[0].name == "conv_1" and "x" in gs[0].quantizers
    assert set().union(*(g.quantizers for g in gs)) == set(sim.quantizers)
    x = calib[:16]
    runner = PartialSim(sim, sim.graph.outputs[0])
    configs = S.configurations(sim, gs)
    jobs = {configs[k]: runner.compile(configs[k])
            for k in ("only:dwconv_5", "without:conv_20", "weights", "only:predictions")}
    assert {j.base for j in jobs.values()} == {"float", "all"}
    for enabled, y in runner.outputs({"x": x}, jobs):
        want = sim.run({"x": x}, enabled={n: True for n in enabled})[sim.graph.outputs[0]]
        assert np.array_equal(y, want), sorted(enabled)
