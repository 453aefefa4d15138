"""refq.analysis.quantizers: the quantizers section of the report, checked against its definitions.

References, computed here independently of the section:
- histograms: np.histogram of every value the quantizer sees, concatenated (the float trace of the
  whole data from `refq.run` in the simulation's dtype; the weight), over the section's edges, and
  those edges = np.histogram_bin_edges(values, bins) (range [min, max]);
- chosen range: the encoding's grid ends `Encoding.min/max` (per-channel: the envelope);
- minmax range: refq's MinMaxAnalyzer given all the values in one update, compute_encoding with
  the quantizer's grid (per-channel weights: on axis 0, then the envelope);
- clipped fraction: a direct count of the values beyond the grid's ends by more than half a step;
- SQNR columns: `refq.report.quant_report`'s numbers;
- cumulative drop: the upstream quantizers written out by hand for a squeeze-excite-like graph.
"""
import copy
import json

import numpy as np
import pytest

import refq
from refq.analysis.document import Report
from refq.analysis.quantizers import (BAR_QUANTIZERS, _figure_ids, cumulative_drops,
                                      quantizers_section, upstream_quantizers)
from refq.errors import InputError, QuantError
from refq.graph import Graph, Node, TensorSpec
from refq.quant.analyzers import MinMaxAnalyzer
from refq.quant.config import parse_config
from refq.quant.quantsim import QuantSim
from refq.report import quant_report

f32 = np.float32
COLS = ["quantizer", "kind", "bits", "grid", "range min", "range max", "minmax min", "minmax max",
        "range ratio", "clipped %", "local SQNR dB", "cumulative SQNR dB", "cumulative drop dB"]


def dense(name, x, y, w, b=None):
    p = {"weight": np.asarray(w, f32)}
    if b is not None:
        p["bias"] = np.asarray(b, f32)
    return Node(name, "dense", [x], [y], {}, p)


def se_net(seed=0):
    """x[N,6] -> fc1+relu (a) -> fc2 (g) -> sigmoid (s); m = a·s -> fc3 (y): a gate branch beside
    the main path, as in squeeze-excite blocks."""
    r = np.random.default_rng(seed)
    return Graph([TensorSpec("x", (None, 6))], ["y"], [
        dense("fc1", "x", "h", r.normal(size=(5, 6)), r.normal(0, 0.1, 5)),
        Node("act", "relu", ["h"], ["a"]),
        dense("fc2", "a", "g", r.normal(size=(5, 5))),
        Node("gate", "sigmoid", ["g"], ["s"]),
        Node("mul", "multiply", ["a", "s"], ["m"]),
        dense("fc3", "m", "y", r.normal(size=(3, 5))),
    ], name="se")


def dyadic_data(n=42, seed=3):
    """Multiples of 1/8 in [-2, 2], both ends present: with 128 bins over [-2, 2] every value of the
    model input sits exactly on a bin edge."""
    x = np.random.default_rng(seed).integers(-16, 17, size=(n, 6)).astype(f32) / 8
    x[0, 0], x[1, 1] = -2, 2
    return x


def per_channel_sim(x, scheme="minmax"):
    return QuantSim(se_net(), "per_channel", scheme=scheme).compute_encodings(x)


def table_rows(section):
    t = section.tables[0]
    assert t.columns == COLS
    return {row[0]: dict(zip(COLS, row)) for row in t.rows}


def histograms(section):
    return {f.title.rpartition(": histogram of")[0]: f.panels[0].data for f in section.figures
            if f.id.startswith("quantizers.hist.")}


def seen_values(sim, x):
    """quantizer name -> every value it sees, concatenated (float trace of the whole data)."""
    ref = refq.run(sim.graph, x, trace=True, dtype=sim.numerics.dtype.type)
    out = {}
    for name, q in sim.quantizers.items():
        if q.kind == "param":
            out[name] = sim.graph.node(q.node).params[q.param].astype(f32)
        elif q.kind == "activation":
            out[name] = np.concatenate([ref[t].ravel() for t in q.tensors])
        else:
            out[name] = ref[sim.graph.node(q.node).inputs[q.input_index]].ravel()
    return out


@pytest.fixture(scope="module")
def data():
    return dyadic_data()


@pytest.fixture(scope="module")
def sim(data):
    return per_channel_sim(data)


@pytest.fixture(scope="module")
def section(sim, data):
    return quantizers_section(sim, data, top=50)


# ----------------------------------------------------------------------------- histograms

def test_histograms_are_np_histogram_of_the_concatenated_values(sim, data, section):
    hists = histograms(section)
    values = seen_values(sim, data)
    assert set(hists) == set(sim.quantizers) == set(values)
    for name, v in values.items():
        h = hists[name]
        edges = np.histogram_bin_edges(v.astype(np.float64), 128)
        assert np.array_equal(h["edges"], edges), name
        assert h["edges"][0] == v.min() and h["edges"][-1] == v.max()
        assert np.array_equal(h["counts"], np.histogram(v, bins=edges)[0]), name
        assert int(np.sum(h["counts"])) == v.size
        assert h["log_y"] is True
    # the model input's values all sit on bin edges (multiples of 1/32): the edge rule matters
    x = values["x"]
    assert np.all(np.isin(x, hists["x"]["edges"]))
    assert np.array_equal(hists["x"]["counts"], np.histogram(x, bins=hists["x"]["edges"])[0])
    # and a loop over the definition: e_i <= v < e_(i+1), the last bin closed
    e, naive = hists["x"]["edges"], np.zeros(128, np.int64)
    for v in x.tolist():
        i = next(i for i in range(128) if e[i] <= v < e[i + 1] or (i == 127 and v == e[128]))
        naive[i] += 1
    assert np.array_equal(hists["x"]["counts"], naive)
    assert np.flatnonzero(naive).tolist() == list(range(0, 128, 4)) + [127]


@pytest.mark.parametrize("pieces", [3, 7])
def test_batching_gives_the_identical_document(sim, data, pieces):
    report = quant_report(sim, data)
    one = quantizers_section(sim, [data], top=50, report=report).to_json()
    split = quantizers_section(sim, np.array_split(data, pieces), top=50, report=report).to_json()
    assert json.dumps(one) == json.dumps(split)
    # with the SQNR report computed from the batches too, only float sums may round differently
    own = quantizers_section(sim, np.array_split(data, pieces), top=50)
    rows, ref = table_rows(own), {r[0]: r for r in one["tables"][0]["rows"]}
    for name, row in rows.items():
        for i, col in enumerate(COLS):
            if isinstance(ref[name][i], float) and ("SQNR" in col or "drop" in col):
                assert row[col] == pytest.approx(ref[name][i], rel=1e-9, abs=1e-9)
            else:
                assert row[col] == ref[name][i], (name, col)


def test_constant_values_get_a_unit_wide_histogram():
    """A dead ReLU (all zeros) has min = max = 0: the bins span [−0.5, 0.5] as np.histogram's."""
    g = se_net()
    g.node("fc1").params["bias"] = np.full(5, -100, f32)
    x = dyadic_data()
    sim = QuantSim(g, "per_tensor").compute_encodings(x)
    s = quantizers_section(sim, x, top=50)
    h = histograms(s)["a"]
    assert h["edges"][0] == -0.5 and h["edges"][-1] == 0.5
    assert np.array_equal(h["counts"], np.histogram(np.zeros(x.shape[0] * 5), bins=128,
                                                    range=(-0.5, 0.5))[0])
    assert table_rows(s)["a"]["local SQNR dB"] is None   # an all-zero tensor: SQNR undefined


# ----------------------------------------------------------------------------- ranges

def test_chosen_and_minmax_ranges(sim, data, section):
    rows, values = table_rows(section), seen_values(sim, data)
    for name, q in sim.quantizers.items():
        enc, row = sim.encodings[name], rows[name]
        assert (row["range min"], row["range max"]) == (float(np.min(enc.min)),
                                                        float(np.max(enc.max)))
        a = MinMaxAnalyzer(enc.axis)
        a.update(values[name] if enc.axis is None else values[name].reshape(enc.scale.shape[0], -1))
        mm = a.compute_encoding(enc.bitwidth, enc.symmetric, numerics=sim.numerics)
        assert (row["minmax min"], row["minmax max"]) == (float(np.min(mm.min)),
                                                          float(np.max(mm.max))), name
        assert row["range ratio"] == pytest.approx(
            (row["range max"] - row["range min"]) / (row["minmax max"] - row["minmax min"]),
            rel=1e-15)
        assert row["kind"] == q.kind and row["bits"] == enc.bitwidth == 8
        assert row["grid"] == ("symmetric" if enc.symmetric else "asymmetric") + \
            (" per-channel" if enc.axis is not None else "")
    # the model input is calibrated on these very values with minmax: the same range
    assert rows["x"]["range ratio"] == 1.0
    assert rows["x"]["range min"] == rows["x"]["minmax min"] < 0
    # a per-channel weight: the envelope over the channels
    assert rows["fc1.weight"]["grid"] == "symmetric per-channel"
    enc = sim.encodings["fc1.weight"]
    assert rows["fc1.weight"]["range max"] == float(enc.max.max()) > float(enc.max.min())
    # the figures show the same ranges
    h = histograms(section)["x"]
    assert h["spans"] == [{"lo": rows["x"]["range min"], "hi": rows["x"]["range max"],
                           "label": "chosen range"}]
    assert [v["x"] for v in h["vlines"]] == [rows["x"]["minmax min"], rows["x"]["minmax max"]]


def clipped_fraction(values, enc):
    """A direct count: |values beyond the grid's ends by more than half a step| / n."""
    v = values.astype(np.float64)
    s, lo, hi = float(enc.scale), float(enc.min), float(enc.max)
    return float(np.count_nonzero((v < lo - s / 2) | (v > hi + s / 2))) / v.size


def test_tf_enhanced_narrows_the_range_and_clips():
    """Heavy-tailed inputs (Student t, 3 degrees of freedom) on a 4-bit grid: tf_enhanced trades
    the tails for a finer step."""
    x = np.random.default_rng(7).standard_t(3, size=(200, 6)).astype(f32)
    sim = QuantSim(se_net(), "per_tensor", scheme="tf_enhanced", act_bw=4).compute_encodings(x)
    s = quantizers_section(sim, x, top=50)
    rows, values = table_rows(s), seen_values(sim, x)
    row = rows["x"]
    assert row["range ratio"] < 0.9 and row["clipped %"] > 0
    assert set(values) == set(rows)
    for name in values:   # activations and (per-tensor) weights
        expected = clipped_fraction(values[name], sim.encodings[name])
        assert rows[name]["clipped %"] == pytest.approx(100 * expected, rel=1e-12, abs=0)
    assert rows["x"]["clipped %"] == 100 * clipped_fraction(values["x"], sim.encodings["x"])
    assert any("clip more than" in f and "x " in f for f in s.findings)
    assert "x" in s.figures[0].panels[0].data["highlight"]


# ----------------------------------------------------------------------------- table, figures

def test_table_order_is_worst_first_ties_by_name(sim, data):
    report = copy.deepcopy(quant_report(sim, data))
    by = {r["quantizer"]: r for r in report["quantizers"]}
    by["y"]["local_sqnr_db"] = by["fc3.weight"]["local_sqnr_db"] = by["a"]["local_sqnr_db"] = 5.0
    by["g"]["local_sqnr_db"] = None
    by["m"]["local_sqnr_db"] = None
    s = quantizers_section(sim, data, report=report, top=2)
    names = [row[0] for row in s.tables[0].rows]
    assert names[:3] == ["a", "fc3.weight", "y"]
    assert names[-2:] == ["g", "m"]
    middle = [by[n]["local_sqnr_db"] for n in names[3:-2]]
    assert middle == sorted(middle)
    assert [row[COLS.index("local SQNR dB")] for row in s.tables[0].rows] == \
        [by[n]["local_sqnr_db"] for n in names]
    assert [f.id for f in s.figures] == ["quantizers.sqnr", "quantizers.hist.a",
                                         "quantizers.hist.fc3.weight"]
    bars = s.figures[0].panels[0].data
    assert bars["labels"] == names[:BAR_QUANTIZERS]
    assert bars["series"][0]["values"][:3] == [5.0, 5.0, 5.0]
    assert np.isnan(bars["series"][1]["values"][1])          # a weight has no cumulative SQNR
    assert s.findings[0].startswith("Worst local SQNR (of 9 quantizers): a 5.0 dB")


def test_sqnr_columns_are_the_reports(sim, data, section):
    rows = table_rows(section)
    for r in quant_report(sim, data)["quantizers"]:
        row = rows[r["quantizer"]]
        assert row["local SQNR dB"] == r["local_sqnr_db"]
        assert row["cumulative SQNR dB"] == r["cumulative_sqnr_db"]
        assert row["clipped %"] == 100 * r["clipped_fraction"]


def test_cumulative_drop_follows_the_data_path(sim, section):
    names = {"x", "a", "g", "s", "m", "y"}
    assert upstream_quantizers(sim, names) == {"x": [], "a": ["x"], "g": ["a"], "s": ["g"],
                                               "m": ["a", "s"], "y": ["m"]}
    rows = table_rows(section)
    cum = {n: rows[n]["cumulative SQNR dB"] for n in names}
    expected = {"a": cum["x"] - cum["a"], "g": cum["a"] - cum["g"], "s": cum["g"] - cum["s"],
                "m": min(cum["a"], cum["s"]) - cum["m"], "y": cum["m"] - cum["y"]}
    for n in names:
        assert rows[n]["cumulative drop dB"] == expected.get(n)
    for n in ("fc1.weight", "fc2.weight", "fc3.weight"):
        assert rows[n]["cumulative drop dB"] is None
    drops = cumulative_drops([{"quantizer": n, "cumulative_sqnr_db": cum[n]} for n in names],
                             upstream_quantizers(sim, names))
    assert [d[1] for d in drops] == sorted(expected, key=lambda n: (-expected[n], n))
    top = drops[0]
    if top[0] > 0:
        assert f"{top[1]} loses {top[0]:.1f} dB" in section.findings[1]


def test_input_quantizers_are_walked_and_histogrammed():
    from test_report import INPUT_QUANTIZED_CONFIG

    x = dyadic_data(30)
    sim = QuantSim(se_net(), parse_config(INPUT_QUANTIZED_CONFIG, source="<input cfg>"),
                   act_bw=4).compute_encodings(x)
    assert "fc2:input0" in sim.quantizers
    up = upstream_quantizers(sim, set(sim.quantizers) - {"fc1.weight", "fc2.weight",
                                                          "fc3.weight"})
    # relu shares its producer's quantizer 'h' (tensors h and a)
    assert up["fc2:input0"] == ["h"] and up["g"] == ["fc2:input0"]
    assert up["fc1:input0"] == ["x"] and up["h"] == ["fc1:input0"] and up["m"] == ["h", "s"]
    s = quantizers_section(sim, x, top=50)
    v = seen_values(sim, x)["fc2:input0"]
    h = histograms(s)["fc2:input0"]
    assert np.array_equal(h["counts"], np.histogram(v, bins=h["edges"])[0])
    assert table_rows(s)["fc2:input0"]["kind"] == "input"


def test_figure_ids_stay_unique_when_names_share_a_slug():
    rows = [{"quantizer": "a/b"}, {"quantizer": "a-b"}, {"quantizer": "a b"}]
    assert _figure_ids(rows) == ["quantizers.hist.a-b", "quantizers.hist.a-b-2",
                                 "quantizers.hist.a-b-3"]


def test_document_ids_and_determinism(sim, data, section):
    again = quantizers_section(sim, data, top=50)
    assert json.dumps(section.to_json(), allow_nan=False) == json.dumps(again.to_json(),
                                                                        allow_nan=False)
    Report("r", [section]).check_ids()
    assert section.id == "quantizers" and len(section.figures) == 1 + len(sim.quantizers)


# ----------------------------------------------------------------------------- bad input

def test_bad_input(sim, data):
    with pytest.raises(QuantError, match="no samples|no batch"):
        quantizers_section(sim, np.zeros((0, 6), f32))
    with pytest.raises(QuantError, match="no batch"):
        quantizers_section(sim, [], report=quant_report(sim, data))
    nan = data.copy()
    nan[3, 2] = np.nan
    with pytest.raises(QuantError, match="NaN"):
        quantizers_section(sim, nan)
    with pytest.raises(QuantError, match="NaN"):
        quantizers_section(sim, nan, report=quant_report(sim, data))
    huge = np.full_like(data, 3e38)   # finite inputs, an infinite float run inside
    with pytest.raises(QuantError, match=r"batch 0: tensor '\w+' \(quantizer '\w+'\) holds NaN"), \
            np.errstate(over="ignore", invalid="ignore"):
        quantizers_section(sim, huge)
    with pytest.raises(InputError, match="one-shot iterator"):
        quantizers_section(sim, iter([data]))
    with pytest.raises(InputError, match="top"):
        quantizers_section(sim, data, top=-1)
    with pytest.raises(InputError, match="bins"):
        quantizers_section(sim, data, bins=0)
    other = QuantSim(se_net(), "per_tensor").compute_encodings(data)
    foreign = copy.deepcopy(quant_report(other, data))
    foreign["quantizers"][0]["quantizer"] = "nowhere"
    with pytest.raises(QuantError, match="'nowhere'"):
        quantizers_section(sim, data, report=foreign)
    changing = [data[:20], data[20:]]

    class Shrinking:
        """Gives fewer batches on the second pass."""
        calls = 0

        def __iter__(self):
            Shrinking.calls += 1
            return iter(changing if Shrinking.calls == 1 else changing[:1])

    with pytest.raises(QuantError, match="same batches on every pass"):
        quantizers_section(sim, Shrinking(), report=quant_report(sim, data))


# ----------------------------------------------------------------------------- PP-OCR

def test_ppocr_w8a8():
    """The demo's per-channel W8A8 simulation (minmax on the 200 calibration lines) on 32 other
    lines (the first training lines, unlabelled)."""
    from refq.algorithms import fold_batch_norms
    from refq.demo import _calibrated
    from refq.ppocr_data import load_calibration_set, load_model, load_training_set

    folded = fold_batch_norms(load_model())[0]
    sim = _calibrated(folded, "per_channel", load_calibration_set(), True)
    x = load_training_set(32)[0]
    report = quant_report(sim, x)
    s = quantizers_section(sim, x, report=report)
    Report("r", [s]).check_ids()
    enabled = [n for n in sim.quantizers if sim.enabled[n]]
    rows = s.tables[0].rows
    assert sorted(r[0] for r in rows) == sorted(enabled) and len(rows) == 154
    local = [r[COLS.index("local SQNR dB")] for r in rows]
    assert local == sorted(local)
    assert rows[0][0] == report["quantizers"][0]["quantizer"]
    assert len(s.figures) == 13 and len(s.figures[0].panels[0].data["labels"]) == BAR_QUANTIZERS
    assert rows[0][0] in s.findings[0]
    h = s.figures[1].panels[0].data
    q = sim.quantizers[rows[0][0]]
    ref = refq.run(sim.graph, x, trace=True, dtype=np.float32)
    v = np.concatenate([ref[t].ravel() for t in q.tensors])
    assert np.array_equal(h["counts"], np.histogram(v, bins=h["edges"])[0])
