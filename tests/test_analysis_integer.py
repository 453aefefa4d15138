"""refq.analysis.integer: the integer-model section of the report.

On small quantized graphs built here: the section's per-layer and summary counts are those of
`refq.fixedpoint.compare.compare` for every profile; the headroom of a convolution equals a naive
Python-integer loop over its accumulators; a profile that refuses the model (avg_pool2d with
ceil_mode under TFLite) or fails on the data (an overflow under "error") is listed with its error;
streaming, determinism and bad input. One PP-OCR check on 2 lines."""
import dataclasses
import json
from importlib import resources

import numpy as np
import pytest

from refq.analysis.document import Report
from refq.analysis.integer import HEADROOM_THRESHOLD_BITS, integer_section
from refq.errors import FixedPointError, InputError
from refq.fixedpoint import PROFILES, get_profile
from refq.fixedpoint.compare import compare
from refq.fixedpoint.lowering import lower
from refq.fixedpoint.run import run_int
from refq.graph import Graph, Node, TensorSpec
from refq.quant.config import parse_config
from refq.quant.quantsim import QuantSim

f32 = np.float32
NAMES = tuple(PROFILES)


def cfg(name):
    p = resources.files("refq.quant").joinpath("configs", f"default_{name}.json")
    return parse_config(json.loads(p.read_text(encoding="utf-8")), source=f"<{name} test>")


def small_graph(ceil_pool=False, seed=0):
    """conv 3x3 same -> relu -> depthwise 3x3 -> relu -> conv 1x1 -> add (residual) ->
    [avg_pool2d 3x3/2 with ceil_mode] -> global average -> dense."""
    r = np.random.default_rng(seed)

    def conv(name, x, shape, groups=1, **attrs):
        return Node(name, "conv2d", [x], [name], dict(attrs, groups=groups),
                    {"weight": r.normal(0, 0.4, shape).astype(f32),
                     "bias": r.normal(0, 0.2, shape[0]).astype(f32)})

    nodes = [conv("c1", "x", (6, 3, 3, 3), padding="same"), Node("r1", "relu", ["c1"], ["r1"]),
             conv("dw", "r1", (6, 3, 3, 1), groups=6, padding="same"),
             Node("r2", "relu", ["dw"], ["r2"]), conv("c2", "r2", (6, 1, 1, 6)),
             Node("add", "add", ["c2", "r1"], ["add"])]
    last = "add"
    if ceil_pool:
        nodes.append(Node("ap", "avg_pool2d", ["add"], ["ap"],
                          {"pool_size": [3, 3], "strides": [2, 2], "ceil_mode": True}))
        last = "ap"
    nodes += [Node("gap", "global_avg_pool2d", [last], ["gap"]),
              Node("fc", "dense", ["gap"], ["logits"], {},
                   {"weight": r.normal(0, 0.5, (5, 6)).astype(f32),
                    "bias": r.normal(0, 0.1, 5).astype(f32)})]
    return Graph([TensorSpec("x", (None, 8, 8, 3))], ["logits"], nodes, name="small")


def data(n=12, seed=3):
    return np.random.default_rng(seed).normal(0, 1, (n, 8, 8, 3)).astype(f32)


@pytest.fixture(scope="module")
def sim():
    return QuantSim(small_graph(), cfg("per_channel")).compute_encodings(data(16, seed=1))


@pytest.fixture(scope="module")
def section(sim):
    return integer_section(sim, data(), batch_size=5)


def _table(section, table_id):
    return next(t for t in section.tables if t.id == table_id)


def _rows(table):
    return [dict(zip(table.columns, row)) for row in table.rows]


def test_counts_equal_compare_for_every_profile(sim, section):
    """Every layer row and every summary row holds compare()'s numbers for that profile."""
    summary = {r["profile"]: r for r in _rows(_table(section, "integer.profiles"))}
    assert list(summary) == list(NAMES)
    differing = 0
    for name in NAMES:
        rep = compare(sim, name, data())
        rows = _rows(_table(section, f"integer.layers.{name}"))
        assert [r["layer"] for r in rows] == [lay["node"] for lay in rep["layers"]]
        for row, lay in zip(rows, rep["layers"]):
            loc, cum, acc = lay["local"], lay["cumulative"], lay["accumulator"]
            assert (row["op"], row["requantizations"]) == (lay["op"], lay["requantizations"])
            assert row["values compared"] == loc["elements"]
            assert row["values that differ"] == loc["differ"]
            assert row["max |LSB|"] == loc["max_lsb"]
            assert sum(int(c.split(":")[1]) for c in row["LSB counts"].split(", ") if c) == \
                loc["differ"]
            assert row["within bound"] == lay["within_bound"]
            assert (row["differ downstream"], row["max |LSB| downstream"]) == \
                (cum["differ"], cum["max_lsb"])
            if acc is None:
                assert row["headroom bits"] is None and row["max |accumulator|"] is None
            else:
                assert row["max |accumulator|"] == acc["max_abs_acc"]
                assert row["headroom bits"] == acc["headroom_bits"]
                assert row["accumulator bits"] == 32 and row["overflow policy"] == "error"
        s, row = rep["summary"], summary[name]
        assert row["status"] == "ok" and row["error"] == ""
        assert row["values compared"] == s["local_elements"]
        assert row["values that differ"] == s["local_differ_elements"]
        assert row["layers with differences"] == s["local_differ_nodes"]
        assert row["max |LSB|"] == s["local_max_lsb"]
        assert row["differ downstream"] == s["cumulative_differ_elements"]
        assert row["min headroom bits"] == s["min_headroom_bits"]
        differing += s["local_differ_elements"] > 0
        if s["local_differ_elements"]:
            worst = max(rep["layers"], key=lambda r: r["local"]["differ"])
            assert row["worst layer values"] == worst["local"]["differ"]
    assert differing >= 3      # the integer requantizations differ somewhere: the test has teeth
    _, stats = run_int(lower(sim, "tflite"), {"x": data()})   # the plain integer run's statistics
    rows = {r["layer"]: r for r in _rows(_table(section, "integer.layers.tflite"))}
    assert stats and all(rows[k]["headroom bits"] == st["headroom_bits"] and
                         rows[k]["max |accumulator|"] == st["max_abs_acc"] for k, st in stats.items())


def _naive_conv_accumulators(x, w, bias, input_zp, weight_zp):
    """acc[n, i, j, o] = bias[o] + Σ_{u, v, c} (x[n, i+u−1, j+v−1, c] − input_zp)·(w[o, u, v, c] −
    weight_zp[o]) over the in-bounds taps of a 3x3 'same' convolution, in Python integers."""
    n, h, wd, cin = x.shape
    o_ch, kh, kw, _ = w.shape
    zw = np.broadcast_to(np.asarray(weight_zp), (o_ch,))
    best = 0
    for b in range(n):
        for i in range(h):
            for j in range(wd):
                for o in range(o_ch):
                    acc = int(bias[o])
                    for u in range(kh):
                        for v in range(kw):
                            ii, jj = i + u - kh // 2, j + v - kw // 2
                            if 0 <= ii < h and 0 <= jj < wd:
                                for c in range(cin):
                                    acc += (int(x[b, ii, jj, c]) - int(input_zp)) * \
                                        (int(w[o, u, v, c]) - int(zw[o]))
                    best = max(best, abs(acc))
    return best


@pytest.mark.parametrize("name", ["tflite", "onnx"])
def test_headroom_equals_a_naive_accumulator_loop(sim, section, name):
    """Headroom of c1 = 31 − bit_length(max |acc|), max |acc| from a naive loop on its codes."""
    x = data()
    g = lower(sim, name)
    node = g.node("c1")
    codes = run_int(g, {"x": x}, trace=True)[0][node.inputs[0]]
    a = node.attrs
    assert a["accumulator_bits"] == 32 and a["padding"] == "same" and a["strides"] == [1, 1]
    best = _naive_conv_accumulators(codes, node.params["weight"], node.params["bias"],
                                    a["input_zp"], a["weight_zp"])
    row = next(r for r in _rows(_table(section, f"integer.layers.{name}")) if r["layer"] == "c1")
    assert row["max |accumulator|"] == best
    assert row["headroom bits"] == 31 - best.bit_length()
    assert 2 ** row["headroom bits"] * best < 2 ** 31 <= 2 ** (row["headroom bits"] + 1) * best


def test_document_shape_figures_and_findings(section):
    ids = [t.id for t in section.tables] + [f.id for f in section.figures]
    Report("t", [section]).check_ids()
    assert section.id == "integer" and all(i.startswith("integer.") for i in ids)
    assert 2 <= len(section.figures) <= 8
    diff = next(f for f in section.figures if f.id == "integer.differences").panels[0]
    head = next(f for f in section.figures if f.id == "integer.headroom").panels[0]
    assert diff.kind == head.kind == "bars"
    # one value per label in every series; series of identical profiles are merged
    for panel in (diff, head):
        assert all(len(s["values"]) == len(panel.data["labels"]) for s in panel.data["series"])
        names = [n for s in panel.data["series"] for n in s["name"].split(", ")]
        assert sorted(names) == sorted(NAMES)
    tflite = {r["layer"]: r for r in _rows(_table(section, "integer.layers.tflite"))}
    for s in diff.data["series"]:
        if "tflite" in s["name"].split(", "):
            assert s["values"] == [tflite[k]["values that differ"] for k in diff.data["labels"]]
    assert set(head.data["labels"]) == {k for k, r in tflite.items()
                                        if r["headroom bits"] is not None}
    assert head.data["highlight"] == []          # this graph keeps many bits everywhere
    assert any("differ" in f and "most" in f for f in section.findings)
    assert any(f.startswith("Least accumulator headroom") for f in section.findings)
    json.dumps(Report("t", [section]).to_json())


def test_refused_profile_is_listed_with_its_error():
    """avg_pool2d with ceil_mode: only onnx and ort lower it; the others are listed, not raised."""
    sim = QuantSim(small_graph(ceil_pool=True), cfg("per_channel")).compute_encodings(data(8))
    sec = integer_section(sim, data(4))
    rows = {r["profile"]: r for r in _rows(_table(sec, "integer.profiles"))}
    for name in NAMES:
        if name in ("onnx", "ort"):
            assert rows[name]["status"] == "ok"
            assert any(t.id == f"integer.layers.{name}" for t in sec.tables)
            continue
        assert rows[name]["status"] == "refused"
        err = rows[name]["error"]
        assert "'ap'" in err and "ceil_mode" in err and f"'{name}'" in err and "\n" not in err
        assert not any(t.id == f"integer.layers.{name}" for t in sec.tables)
        assert any(f.startswith(f"{name} refuses the model") for f in sec.findings)


def test_a_model_no_profile_lowers_gives_a_section_of_errors():
    """An unfolded batch norm: every profile refuses; the section lists them, with no figure."""
    g = Graph([TensorSpec("x", (None, 8, 8, 3))], ["b"], [
        Node("c", "conv2d", ["x"], ["c"], {}, {"weight": np.ones((2, 1, 1, 3), f32)}),
        Node("bn", "batch_norm", ["c"], ["b"], {"epsilon": 1e-3},
             {"gamma": np.ones(2, f32), "beta": np.zeros(2, f32), "mean": np.zeros(2, f32),
              "variance": np.ones(2, f32)})])
    sec = integer_section(QuantSim(g, cfg("per_tensor")).compute_encodings(data(2)), data(2))
    rows = _rows(_table(sec, "integer.profiles"))
    assert [r["status"] for r in rows] == ["refused"] * len(NAMES)
    assert all("batch_norm 'bn' is not folded" in r["error"] for r in rows)
    assert sec.figures == [] and len(sec.tables) == 1 and "no profile ran" in sec.summary
    assert sec.findings[0].startswith("No profile lowers this model")
    Report("t", [sec]).to_json()


def test_overflow_policies_show_in_headroom_and_status(sim):
    """A 16-bit accumulator: wrapping shows negative headroom, 'overflowed' and a highlighted
    bar; under 'error' the profile is listed as failed on the data."""
    tflite = get_profile("tflite")
    wrap = dataclasses.replace(tflite, name="tflite-acc16-wrap", acc_bits=16, bias_bits=16,
                               overflow="wrap")
    stop = dataclasses.replace(wrap, name="tflite-acc16-error", overflow="error")
    sec = integer_section(sim, data(4), profiles=[wrap, stop, "tflite"])
    rows = {r["profile"]: r for r in _rows(_table(sec, "integer.profiles"))}
    assert rows["tflite-acc16-error"]["status"] == "failed"
    assert "16 bits" in rows["tflite-acc16-error"]["error"] or \
        "overflow" in rows["tflite-acc16-error"]["error"]
    layers = _rows(_table(sec, "integer.layers.tflite-acc16-wrap"))
    over = [r for r in layers if r["overflowed"]]
    assert over and all(r["headroom bits"] < 0 and r["accumulator bits"] == 16 for r in over)
    assert rows["tflite-acc16-wrap"]["min headroom bits"] < 0
    assert rows["tflite-acc16-wrap"][f"layers under {HEADROOM_THRESHOLD_BITS} bits"] >= len(over)
    head = next(f for f in sec.figures if f.id == "integer.headroom").panels[0]
    assert {r["layer"] for r in over} <= set(head.data["highlight"])
    assert any(f.startswith("Accumulators overflowed") for f in sec.findings)
    assert any(f.startswith("tflite-acc16-error fails on the data") for f in sec.findings)


def test_streaming_and_determinism(sim, section):
    """The same call gives the same document; batch sizes, a list of batches and a one-shot
    generator give the same numbers (only the batch count in the prose differs)."""
    x = data()
    again = integer_section(sim, x, batch_size=5)
    assert json.dumps(Report("t", [again]).to_json()) == \
        json.dumps(Report("t", [section]).to_json())
    two = ["tflite", "tosa"]
    ref = integer_section(sim, x, profiles=two)
    for d, bs in ((x, 1), ([x[:7], x[7:]], None), ((b for b in (x[:3], x[3:])), None)):
        assert _same_numbers(integer_section(sim, d, batch_size=bs, profiles=two), ref)


def _same_numbers(a, b):
    """Equal documents apart from the batch count in the summary and captions."""
    ja, jb = Report("t", [a]).to_json(), Report("t", [b]).to_json()
    for s in (ja, jb):
        s["sections"][0]["summary"] = ""
        for t in s["sections"][0]["tables"]:
            t["caption"] = ""
    assert ja == jb
    return True


def test_max_samples_takes_the_first_samples(sim):
    x = data()
    a = integer_section(sim, x, profiles=["tflite"], max_samples=5, batch_size=3)
    b = integer_section(sim, x[:5], profiles=["tflite"])
    assert _same_numbers(a, b) and "5 samples in 2 batches" in a.summary


def test_bad_input_is_one_refq_error(sim):
    with pytest.raises(InputError, match="no samples"):
        integer_section(sim, data()[:0])
    with pytest.raises(InputError, match="no batch"):
        integer_section(sim, [], profiles=["onnx"])
    bad = data(2)
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(InputError, match=r"input 'x'.*not finite"):
        integer_section(sim, bad, profiles=["tflite"])
    with pytest.raises(InputError, match=r"input 'x': shape \[2, 7, 8, 3\] does not match"):
        integer_section(sim, data(2)[:, 1:], profiles=["tflite"])
    with pytest.raises(FixedPointError, match="unknown fixed-point profile 'tflight'"):
        integer_section(sim, data(2), profiles=["tflight"])
    with pytest.raises(InputError, match="no profile"):
        integer_section(sim, data(2), profiles=[])
    with pytest.raises(InputError, match="max_samples"):
        integer_section(sim, data(2), max_samples=0)
    with pytest.raises(InputError, match="QuantSim"):
        integer_section(small_graph(), data(2))


def test_ppocr_totals_equal_compare():
    """The bundled PP-OCR classifier (per-channel W8A8, BN folded, calibrated on 16 lines) on 2
    other lines: the summary
    totals are compare()'s (the numbers `refq demo` prints per profile)."""
    from refq.algorithms import fold_batch_norms
    from refq.ppocr_data import load_calibration_set, load_model

    g, _ = fold_batch_norms(load_model())
    lines = load_calibration_set(18)
    psim = QuantSim(g, "per_channel").compute_encodings(lines[:16])
    x = lines[16:]
    sec = integer_section(psim, x, profiles=["tflite"])
    s = compare(psim, "tflite", x)["summary"]
    row = _rows(_table(sec, "integer.profiles"))[0]
    assert (row["values that differ"], row["values compared"], row["layers with differences"],
            row["max |LSB|"], row["min headroom bits"]) == \
        (s["local_differ_elements"], s["local_elements"], s["local_differ_nodes"],
         s["local_max_lsb"], s["min_headroom_bits"])
    assert s["local_differ_elements"] > 0 and row["layers"] == 109
    assert len(_table(sec, "integer.layers.tflite").rows) == 109
