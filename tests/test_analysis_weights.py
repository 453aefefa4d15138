"""The weights section: per-channel statistics, relative ranges and AIMET's outlier rule against
naive loops over the definitions, stage matching through BN folding and CLE, bad input, PP-OCR."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from refq.algorithms.bn_fold import fold_batch_norms
from refq.algorithms.cle import equalize
from refq.analysis.document import Report
from refq.analysis.weights import (channel_stats, layer_summary, outlier_channels,
                                   quartile_fence, range_ratio, relative_ranges, step_ratio,
                                   weights_section)
from refq.errors import InputError, ParamError, ShapeError
from refq.graph import Graph, Node, TensorSpec


# ---- naive references (plain Python over channels and values) ------------------------------------
def naive_channels(w, axis):
    """The list of channel value lists, channel c = every element whose index on `axis` is c."""
    w = np.asarray(w, np.float64)
    out = [[] for _ in range(w.shape[axis])]
    for idx in np.ndindex(*w.shape):
        out[idx[axis]].append(float(w[idx]))
    return out


def naive_stats(w, axis):
    res = {"min": [], "max": [], "mean": [], "std": []}
    for vals in naive_channels(w, axis):
        n = len(vals)
        mean = math.fsum(vals) / n
        res["min"].append(min(vals))
        res["max"].append(max(vals))
        res["mean"].append(mean)
        res["std"].append(math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
                          if n > 1 else float("nan"))
    return res


def naive_relative(w, axis=0):
    ranges = [max(v) - min(v) for v in naive_channels(w, axis)]
    positive = [r for r in ranges if r > 0]
    if not positive:
        return [1.0] * len(ranges)
    return [r / min(positive) for r in ranges]


def naive_quantile(values, p):
    """Linear interpolation between closest ranks (pandas' default): h = (n − 1)·p."""
    v = sorted(values)
    h = (len(v) - 1) * p
    lo = math.floor(h)
    if lo + 1 >= len(v):
        return v[-1]
    return v[lo] + (h - lo) * (v[lo + 1] - v[lo])


def naive_outliers(rel):
    q1, q3 = naive_quantile(rel, 0.25), naive_quantile(rel, 0.75)
    return [c for c, r in enumerate(rel) if r > q3 + 1.5 * (q3 - q1)]


def naive_step_ratio(w, axis=0):
    a = [max(abs(x) for x in v) for v in naive_channels(w, axis)]
    positive = [x for x in a if x > 0]
    return max(a) / min(positive) if positive else 1.0


# ---- statistics ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, axis", [((5, 3, 3, 2), 0), ((6, 3, 3, 1), 0), ((4, 7), 0),
                                         ((7, 4), 1), ((3, 2, 2, 5), 3), ((3, 1), 0)])
def test_channel_stats_match_naive_loops(shape, axis):
    w = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    got, ref = channel_stats(w, axis), naive_stats(w, axis)
    for k in ("min", "max", "mean", "std"):
        assert got[k].dtype == np.float64 and got[k].shape == (shape[axis],)
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-13, atol=1e-15, equal_nan=True)
    if shape[1:] == (1,) and axis == 0:              # one value per channel: std is NaN (pandas)
        assert np.isnan(got["std"]).all()


def test_relative_ranges_and_step_ratio_match_naive_loops():
    rng = np.random.default_rng(2)
    for shape, axis in [((8, 3, 3, 4), 0), ((5, 9), 1), ((1, 3, 3, 1), 0)]:
        w = rng.normal(size=shape) * rng.uniform(0.01, 5, size=shape[axis]).reshape(
            [-1 if i == axis else 1 for i in range(len(shape))])
        np.testing.assert_allclose(relative_ranges(w, axis), naive_relative(w, axis), rtol=1e-14)
        assert step_ratio(w, axis) == pytest.approx(naive_step_ratio(w, axis), rel=1e-14)


def test_zero_ranges_hand_worked():
    w = np.array([[0.0, 0.0], [1.0, 3.0], [2.0, 2.0], [-1.0, 4.0]])   # ranges 0, 2, 0, 5
    assert relative_ranges(w).tolist() == [0.0, 1.0, 0.0, 2.5]          # / smallest non-zero
    assert relative_ranges(w).tolist() == naive_relative(w)
    assert range_ratio(relative_ranges(w)) == 2.5
    assert step_ratio(w) == 4.0 / 2.0            # a = 0, 3, 2, 4: the zero channel left out
    flat = np.zeros((3, 4))
    assert relative_ranges(flat).tolist() == [1.0, 1.0, 1.0]           # every range zero
    assert range_ratio(relative_ranges(flat)) == 1.0 and step_ratio(flat) == 1.0
    assert outlier_channels(relative_ranges(flat)).size == 0


# ---- AIMET's outlier rule ------------------------------------------------------------------------
@pytest.mark.parametrize("rel, q1, q3, outliers", [
    ([1, 2, 3, 4, 100], 2.0, 4.0, [4]),                     # ranks fall on values
    ([20, 1, 1.5, 2, 2.5, 3], 1.625, 2.875, [0]),           # interpolated: h = 1.25 and 3.75
    ([1, 2, 3, 4, 7], 2.0, 4.0, []),                        # exactly on the fence: not an outlier
    ([1, 2, 3, 4, 7.000001], 2.0, 4.0, [4]),
    ([1, 1, 1, 1, 5], 1.0, 1.0, [4]),                       # ties: IQR 0, anything above Q3
    ([3, 3, 3, 3], 3.0, 3.0, []),                           # all equal
    ([1], 1.0, 1.0, []),                                    # a single channel
    ([1, 9], 3.0, 7.0, []),                                 # two channels: h = 0.25, 0.75
])
def test_outlier_rule_hand_worked(rel, q1, q3, outliers):
    got_q1, got_q3, fence = quartile_fence(rel)
    assert (got_q1, got_q3) == pytest.approx((q1, q3), rel=1e-15)
    assert (got_q1, got_q3) == pytest.approx((naive_quantile(rel, 0.25),
                                              naive_quantile(rel, 0.75)), rel=1e-15)
    assert fence == pytest.approx(q3 + 1.5 * (q3 - q1), rel=1e-15)
    assert outlier_channels(rel).tolist() == outliers == naive_outliers(rel)


def test_outlier_rule_matches_naive_on_random_layers():
    rng = np.random.default_rng(3)
    for c in (2, 3, 7, 16, 33, 100):
        w = rng.normal(size=(c, 9)) * rng.lognormal(0, 1, size=(c, 1))
        rel = relative_ranges(w)
        assert outlier_channels(rel).tolist() == naive_outliers(naive_relative(w))


# ---- layouts: the output-channel axis of each layer kind -----------------------------------------
def test_layer_summary_uses_the_per_channel_quantizers_axis():
    rng = np.random.default_rng(4)
    cases = [(Node("g0", "gemm", ["x"], ["y"], {"transB": 0},
                   {"weight": rng.normal(size=(6, 4))}), 1, 4),      # B [K, P]: axis 1
             (Node("g1", "gemm", ["x"], ["y"], {"transB": 1},
                   {"weight": rng.normal(size=(4, 6))}), 0, 4),      # B [P, K]: axis 0
             (Node("d", "dense", ["x"], ["y"], {}, {"weight": rng.normal(size=(3, 5))}), 0, 3),
             (Node("t", "conv_transpose2d", ["x"], ["y"], {"groups": 2},
                   {"weight": rng.normal(size=(6, 2, 2, 3))}), 0, 6)]
    for node, axis, channels in cases:
        s = layer_summary(node)
        assert s["axis"] == axis and s["channels"] == channels
        w = node.params["weight"]
        np.testing.assert_allclose(s["stats"]["max"], naive_stats(w, axis)["max"], rtol=0)
        np.testing.assert_allclose(s["relative"], naive_relative(w, axis), rtol=1e-14)
        assert s["outliers"].tolist() == naive_outliers(naive_relative(w, axis))
        assert s["step_ratio"] == pytest.approx(naive_step_ratio(w, axis), rel=1e-14)
    assert layer_summary(cases[3][0])["op"] == "conv_transpose2d (groups 2)"


# ---- stages: BN folding and CLE on a small graph -------------------------------------------------
def small_model():
    """conv -> BN -> relu -> depthwise -> BN -> relu -> conv; the depthwise BN scales one channel
    30x more than the others, so the folded depthwise range ratio grows."""
    rng = np.random.default_rng(5)

    def bn(name, x, y, gamma):
        c = len(gamma)
        return Node(name, "batch_norm", [x], [y], {"epsilon": 1e-3},
                    {"gamma": np.asarray(gamma, np.float64), "beta": rng.normal(size=c) * 0.1,
                     "mean": rng.normal(size=c) * 0.1, "variance": rng.uniform(0.5, 2.0, c)})

    nodes = [
        Node("c1", "conv2d", ["x"], ["t1"], {}, {"weight": rng.normal(size=(4, 1, 1, 3))}),
        bn("bn1", "t1", "t2", [1.0, 0.8, 1.2, 0.9]), Node("r1", "relu", ["t2"], ["t3"]),
        Node("dw", "conv2d", ["t3"], ["t4"], {"groups": 4, "padding": "same"},
             {"weight": rng.normal(size=(4, 3, 3, 1))}),
        bn("bn2", "t4", "t5", [1.0, -0.5, 1.5, 30.0]), Node("r2", "relu", ["t5"], ["t6"]),
        Node("c2", "conv2d", ["t6"], ["y"], {}, {"weight": rng.normal(size=(5, 1, 1, 4))})]
    return Graph([TensorSpec("x", (None, 6, 6, 3))], ["y"], nodes, name="small")


def stages_of(g):
    folded, _ = fold_batch_norms(g)
    equalized, _ = equalize(folded)
    return [("imported", g), ("BN folded", folded), ("CLE", equalized)]


def test_stages_match_by_name_and_the_folded_depthwise_ratio_grows():
    g = small_model()
    stages = stages_of(g)
    section = weights_section(stages, top=2)
    table = section.tables[0]
    rows = {r[0]: dict(zip(table.columns, r)) for r in table.rows}
    assert list(rows) == ["c1", "dw", "c2"]
    assert rows["dw"]["op"] == "conv2d (depthwise)" and rows["dw"]["channels"] == 4
    # expected: the backward fold scales channel c by k_c = gamma_c / sqrt(var_c + eps)
    bn2 = next(n for n in g.nodes if n.name == "bn2").params
    k = bn2["gamma"] / np.sqrt(bn2["variance"] + 1e-3)
    w = next(n for n in g.nodes if n.name == "dw").params["weight"]
    before = [max(v) - min(v) for v in naive_channels(w, 0)]
    after = [abs(kc) * r for kc, r in zip(k, before)]
    ratio = {s: rows["dw"][f"range ratio ({s})"] for s in ("imported", "BN folded", "CLE")}
    assert ratio["imported"] == pytest.approx(max(before) / min(before), rel=1e-12)
    assert ratio["BN folded"] == pytest.approx(max(after) / min(after), rel=1e-12)
    assert rows["dw"]["range ratio (BN folded)"] > 10 * rows["dw"]["range ratio (imported)"]
    assert rows["dw"]["range ratio (CLE)"] < rows["dw"]["range ratio (BN folded)"] / 2
    for s, graph in stages:                        # every cell is the stage's own layer
        for node in graph.nodes:
            if node.name in rows:
                summary = layer_summary(node)
                assert rows[node.name][f"min ({s})"] == summary["min"]
                assert rows[node.name][f"outliers ({s})"] == len(summary["outliers"])
                assert rows[node.name][f"step ratio ({s})"] == summary["step_ratio"]
    grows = [f for f in section.findings if f.startswith("From imported to BN folded")]
    shrinks = [f for f in section.findings if f.startswith("From BN folded to CLE")]
    assert grows and "grows most in dw (depthwise;" in grows[0]
    assert any("shrinks most in" in f and "dw (depthwise;" in f for f in shrinks)
    # figures: `top` layers by the last stage's ratio, then the others whose ratio changes 2x or
    # more between consecutive stages, one panel per stage, plus the overview
    last = {n: rows[n]["range ratio (CLE)"] for n in rows}
    expected = sorted(rows, key=lambda n: (-last[n], list(rows).index(n)))[:2]
    stage_ratios = {n: [rows[n][f"range ratio ({s})"] for s in ("imported", "BN folded", "CLE")]
                    for n in rows}
    changed = [n for n in rows if n not in expected and max(
        max(b / a, a / b) for a, b in zip(stage_ratios[n], stage_ratios[n][1:])) >= 2]
    assert section.figures[-1].id == "weights.overview"
    assert [f.id for f in section.figures[:-1]] == [f"weights.ranges.{n}"
                                                    for n in expected + changed]
    for fig in section.figures[:2]:
        name = fig.id.rsplit(".", 1)[1]
        assert [p.title.split(":")[0] for p in fig.panels] == ["imported", "BN folded", "CLE"]
        for p, (s, graph) in zip(fig.panels, stages):
            summary = layer_summary(next(n for n in graph.nodes if n.name == name))
            series = {x["name"]: x for x in p.data["series"]}
            assert series["max"]["y"] == summary["stats"]["max"].tolist()
            assert [m["x"] for m in p.data["markers"]] == summary["outliers"].tolist()
    bars = section.figures[-1].panels[0].data
    assert bars["labels"] == ["c1", "dw", "c2"]
    assert [s["name"] for s in bars["series"]] == ["imported", "BN folded", "CLE"]
    assert bars["highlight"] == [n for n in rows if rows[n]["outliers (CLE)"] > 0]
    Report("r", [section]).check_ids()


def test_one_stage_and_a_layer_missing_from_a_stage():
    g = small_model()
    one = weights_section([("model", g)])
    assert len(one.tables[0].columns) == 3 + 5
    assert not any(f.startswith("From") for f in one.findings)
    folded, _ = fold_batch_norms(g)
    pruned = folded.copy()
    pruned.nodes = [n for n in pruned.nodes if n.name != "c2"]   # need not be a valid model here
    section = weights_section([("before", g), ("after", pruned)], top=5)
    rows = {r[0]: dict(zip(section.tables[0].columns, r)) for r in section.tables[0].rows}
    assert rows["c2"]["range ratio (before)"] is not None
    assert all(rows["c2"][f"{c} (after)"] is None
               for c in ("min", "max", "range ratio", "outliers", "step ratio"))
    assert "weights.ranges.c2" not in [f.id for f in section.figures]   # absent in the last stage
    assert section.figures[-1].panels[0].data["series"][1]["values"][2] is None


def test_no_weighted_layer():
    g = Graph([TensorSpec("x", (None, 4))], ["y"], [Node("r", "relu", ["x"], ["y"])])
    s = weights_section([("m", g)])
    assert s.tables[0].rows == [] and s.figures == [] and "No layer" in s.findings[0]


def test_deterministic_output():
    stages = stages_of(small_model())
    a = json.dumps(Report("r", [weights_section(stages)]).to_json(), sort_keys=True)
    again = weights_section(stages_of(small_model()))
    b = json.dumps(Report("r", [again]).to_json(), sort_keys=True)
    assert a == b


# ---- bad input -----------------------------------------------------------------------------------
def test_bad_stages_are_refused_with_one_clear_error():
    g = small_model()
    with pytest.raises(InputError, match="no stages"):
        weights_section([])
    with pytest.raises(InputError, match=r"stage 1 \('b'\) is a str, not a refq Graph"):
        weights_section([("a", g), ("b", "model.refq.h5")])
    with pytest.raises(InputError, match="stage 0 is Graph, not a \\(label, Graph\\) pair"):
        weights_section([g])
    with pytest.raises(InputError, match="list of \\(label, Graph\\) pairs"):
        weights_section(g)
    with pytest.raises(InputError, match="label 'a' is used twice"):
        weights_section([("a", g), ("a", g)])
    with pytest.raises(InputError, match="non-empty string"):
        weights_section([("", g)])
    with pytest.raises(InputError, match="top must be"):
        weights_section([("a", g)], top=-1)
    with pytest.raises(ShapeError):
        channel_stats(np.zeros((0, 3)))
    with pytest.raises(ShapeError, match="no axis 2"):
        channel_stats(np.zeros((2, 3)), axis=2)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_name_the_stage_and_layer(bad):
    g = small_model()
    folded, _ = fold_batch_norms(g)
    broken = folded.copy()
    node = next(n for n in broken.nodes if n.name == "dw")
    node.params["weight"] = node.params["weight"].copy()
    node.params["weight"][2, 1, 0, 0] = bad
    with pytest.raises(ParamError, match=r"stage 'BN folded', layer 'dw' \(conv2d\): parameter "
                                         r"'weight' \[4, 3, 3, 1\] holds 1 NaN/Inf value\(s\), "
                                         r"the first at index \(2, 1, 0, 0\)"):
        weights_section([("imported", g), ("BN folded", broken)])


# ---- PP-OCR: the findings name the depthwise convolutions that BN folding widens -----------------
def test_ppocr_findings_name_the_depthwise_layers_bn_folding_widens():
    from refq.ppocr_data import load_model

    g = load_model()
    folded, _ = fold_batch_norms(g)
    section = weights_section([("imported", g), ("BN folded", folded)])

    def ratio(node):                       # independent: channel ranges by np.ptp over OHWI rows
        r = np.ptp(np.asarray(node.params["weight"], np.float64).reshape(
            node.params["weight"].shape[0], -1), axis=1)
        return r.max() / r.min()

    after = {n.name: n for n in folded.nodes}
    growth = {n.name: ratio(after[n.name]) / ratio(n) for n in g.nodes
              if n.op == "conv2d" and n.attrs.get("groups", 1) > 1}
    widest = sorted(growth, key=growth.get, reverse=True)[:3]
    assert growth[widest[-1]] > 5                     # a clear widening, not noise
    fold = next(f for f in section.findings if f.startswith("From imported to BN folded"))
    for name in widest:
        assert f"{name} (depthwise;" in fold
    assert fold.index(widest[0]) < fold.index(widest[1]) < fold.index(widest[2])


def test_ppocr_figures_show_the_layer_cle_repairs():
    """dwconv_2's range ratio grows 31x with BN folding and CLE brings it back: its last-stage
    ratio is small, yet it gets a figure, as a layer whose ratio changed most between stages."""
    from refq.algorithms import prepare
    from refq.ppocr_data import load_model

    g = load_model()
    folded, _ = fold_batch_norms(g)
    cle, _ = prepare(g, fold_bn=True, cle=True, through_squeeze_excite=True)
    section = weights_section([("imported", g), ("BN folded", folded), ("CLE", cle)], top=3)
    ids = [f.id for f in section.figures]
    assert "weights.ranges.dwconv_2" in ids and len(ids) == 3 + 3 + 1
    ratios = [p.title for p in section.figures[ids.index("weights.ranges.dwconv_2")].panels]
    assert "66.9" in ratios[1] and "1.96" in ratios[2]
