"""refq.report: the per-quantizer SQNR report, checked against its definitions.

Every number is recomputed here from the definitions in the module docstring with
`refq.run` (the float reference, in the simulation's dtype: float32 for AIMET numerics),
`QuantSim.run` (the simulated trace) and `refq.quant.quantize_dequantize`:
    SQNR = 10·log10(Σx² / Σ(x − x̂)²) dB      local: x̂ = qdq(x); cumulative: x̂ = the sim's tensor
    rmse/scale = sqrt(mean((x − qdq(x))²)) / scale
    clipped = fraction of values beyond the grid's ends by more than half a step
Clipping is checked on dyadic values placed on and just beyond the half-step boundary of a
hand-set encoding, so the expected fractions are exact.
"""
import json
import math

import numpy as np
import pytest

import refq
from refq.graph import Graph, Node, TensorSpec
from refq.quant import Encoding, quantize_dequantize
from refq.quant.config import parse_config
from refq.quant.quantsim import QuantSim
from refq.report import IDEAL_RMSE_OVER_SCALE, format_report, quant_report

f32 = np.float32


# ----------------------------------------------------------------------------- helpers

def dense(name, x, y, w, b=None):
    p = {"weight": np.asarray(w, f32)}
    if b is not None:
        p["bias"] = np.asarray(b, f32)
    return Node(name, "dense", [x], [y], {}, p)


def mlp(seed=0, n_in=6, hidden=5, n_out=3):
    """x[N,n_in] -> dense -> relu -> dense (logits y). Per-tensor quantizers: x (model input),
    a (relu output; dense+relu is a supergroup), y (output), fc1.weight, fc2.weight."""
    r = np.random.default_rng(seed)
    return Graph([TensorSpec("x", (None, n_in))], ["y"], [
        dense("fc1", "x", "h", r.normal(size=(hidden, n_in)), r.normal(0, 0.1, hidden)),
        Node("act", "relu", ["h"], ["a"]),
        dense("fc2", "a", "y", r.normal(size=(n_out, hidden)), r.normal(0, 0.1, n_out)),
    ], name="mlp")


def conv_net(seed=1):
    """x[N,5,5,2] -> conv2d 3x3 (4) -> relu -> gap -> dense(3): an OHWI weight for the rows."""
    r = np.random.default_rng(seed)
    return Graph([TensorSpec("x", (None, 5, 5, 2))], ["y"], [
        Node("conv", "conv2d", ["x"], ["c"], {"padding": "same"},
             {"weight": r.normal(size=(4, 3, 3, 2)).astype(f32),
              "bias": r.normal(0, 0.1, 4).astype(f32)}),
        Node("act", "relu", ["c"], ["a"]),
        Node("gap", "global_avg_pool2d", ["a"], ["g"]),
        dense("fc", "g", "y", r.normal(size=(3, 4))),
    ], name="convnet")


def sqnr(x, xq):
    x = np.asarray(x, np.float64)
    xq = np.asarray(xq, np.float64)
    return 10 * math.log10(np.sum(x * x) / np.sum((x - xq) ** 2))


def float_trace(sim, x):
    return refq.run(sim.graph, x, trace=True, dtype=sim.numerics.dtype.type)


def rows_by_name(report):
    return {r["quantizer"]: r for r in report["quantizers"]}


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(3).normal(size=(40, 6)).astype(f32)


@pytest.fixture(scope="module")
def mlp_sim(data):
    return QuantSim(mlp(), "per_tensor").compute_encodings(data)


@pytest.fixture(scope="module")
def mlp_report(mlp_sim, data):
    return quant_report(mlp_sim, data)


# ----------------------------------------------------------------------------- activations

def test_rows_cover_every_enabled_quantizer(mlp_sim, mlp_report):
    rows = rows_by_name(mlp_report)
    assert set(rows) == {"x", "a", "y", "fc1.weight", "fc2.weight"} == set(mlp_sim.quantizers)
    assert mlp_report["batches"] == 1
    assert mlp_report["ideal_rmse_over_scale"] == IDEAL_RMSE_OVER_SCALE == 1 / math.sqrt(12)
    for name, r in rows.items():
        enc = mlp_sim.encodings[name]
        assert r["kind"] == mlp_sim.quantizers[name].kind
        assert (r["bitwidth"], r["symmetric"], r["per_channel"]) == (8, enc.symmetric, False)


def test_local_sqnr_of_activations_is_the_definition(mlp_sim, mlp_report, data):
    ref = float_trace(mlp_sim, data)
    assert ref["a"].dtype == np.float32  # the reference runs in the sim's dtype
    rows = rows_by_name(mlp_report)
    for name in ("x", "a", "y"):
        enc = mlp_sim.encodings[name]
        t = ref[name]
        tq = quantize_dequantize(t, enc)
        assert rows[name]["tensors"] == [name]
        assert rows[name]["local_sqnr_db"] == pytest.approx(sqnr(t, tq), rel=1e-12)
        err = t.astype(np.float64) - tq.astype(np.float64)
        assert rows[name]["rmse_over_scale"] == pytest.approx(
            math.sqrt(np.mean(err ** 2)) / float(enc.scale), rel=1e-12)
        assert rows[name]["scale"] == float(enc.scale)
        assert rows[name]["clipped_fraction"] == 0.0  # minmax on the same data clips nothing


def test_cumulative_sqnr_is_against_the_sim_trace(mlp_sim, mlp_report, data):
    ref = float_trace(mlp_sim, data)
    got = mlp_sim.run(data, trace=True)
    rows = rows_by_name(mlp_report)
    for name in ("x", "a", "y"):
        assert rows[name]["cumulative_sqnr_db"] == pytest.approx(sqnr(ref[name], got[name]),
                                                                 rel=1e-12)
    # the input quantizer is the first: cumulative == local there; deeper tensors accumulate
    assert rows["x"]["cumulative_sqnr_db"] == pytest.approx(rows["x"]["local_sqnr_db"], rel=1e-12)
    assert rows["y"]["cumulative_sqnr_db"] < rows["y"]["local_sqnr_db"]
    assert mlp_report["outputs"] == [
        {"tensor": "y", "zero_signal": False,
         "cumulative_sqnr_db": pytest.approx(sqnr(ref["y"], got["y"]), rel=1e-12)}]
    assert mlp_report["outputs"][0]["cumulative_sqnr_db"] == rows["y"]["cumulative_sqnr_db"]


#: A quantsim config whose Gemm (dense) layers also quantize their inputs.
INPUT_QUANTIZED_CONFIG = {
    "defaults": {"ops": {"is_output_quantized": "True"},
                 "params": {"is_quantized": "True", "is_symmetric": "True"}},
    "params": {"bias": {"is_quantized": "False"}},
    "op_type": {"Gemm": {"is_input_quantized": "True"}},
    "supergroups": [], "model_input": {"is_input_quantized": "True"}, "model_output": {}}


def test_input_quantizer_rows():
    """An op type with is_input_quantized gets `<node>:input<i>` quantizers; local SQNR is qdq of
    the float tensor it reads, cumulative is qdq of the sim's tensor at that place."""
    g = mlp(seed=4)
    x = np.random.default_rng(5).normal(size=(30, 6)).astype(f32)
    sim = QuantSim(g, parse_config(INPUT_QUANTIZED_CONFIG, source="<input cfg>"), act_bw=4) \
        .compute_encodings(x)
    assert "fc2:input0" in sim.quantizers
    rep = quant_report(sim, x)
    rows = rows_by_name(rep)
    ref, got = float_trace(sim, x), sim.run(x, trace=True)
    enc = sim.encodings["fc2:input0"]
    r = rows["fc2:input0"]
    assert r["kind"] == "input" and r["tensors"] == ["a"]
    assert r["local_sqnr_db"] == pytest.approx(sqnr(ref["a"], quantize_dequantize(ref["a"], enc)),
                                               rel=1e-12)
    assert r["cumulative_sqnr_db"] == pytest.approx(
        sqnr(ref["a"], quantize_dequantize(got["a"], enc)), rel=1e-12)
    json.dumps(rep, allow_nan=False)


# ----------------------------------------------------------------------------- parameters

@pytest.mark.parametrize("config", ["per_tensor", "per_channel"])
def test_parameter_rows(config):
    g = conv_net()
    x = np.random.default_rng(2).normal(size=(6, 5, 5, 2)).astype(f32)
    sim = QuantSim(g, config, param_bw=4).compute_encodings(x)
    rows = rows_by_name(quant_report(sim, x))
    for name, node, param in (("conv.weight", "conv", "weight"), ("fc.weight", "fc", "weight")):
        enc = sim.encodings[name]
        w = g.node(node).params[param].astype(f32)
        wq = quantize_dequantize(w, enc)
        rw = w.reshape(w.shape[0], -1).astype(np.float64)
        rq = wq.reshape(w.shape[0], -1).astype(np.float64)
        r = rows[name]
        assert r["kind"] == "param" and r["tensors"] == [f"{node}/{param}"]
        assert r["per_channel"] is (config == "per_channel") and r["bitwidth"] == 4
        assert r["cumulative_sqnr_db"] is None
        assert r["local_sqnr_db"] == pytest.approx(sqnr(w, wq), rel=1e-12)
        ch = [sqnr(rw[c], rq[c]) for c in range(w.shape[0])]
        assert r["channel_sqnr_db"] == pytest.approx(ch, rel=1e-12)
        assert r["min_channel_sqnr_db"] == pytest.approx(min(ch), rel=1e-12)
        assert r["clipped_fraction"] == 0.0
        assert r["scale"] == float(np.min(enc.scale))
        if config == "per_channel":  # every channel uses its own full range: similar SQNRs
            assert enc.scale.shape == (w.shape[0],)


def test_per_tensor_weight_with_a_small_channel_has_a_low_min_channel_sqnr():
    w = np.array([[1.0, -0.5, 0.75, 0.25], [0.011, -0.013, 0.007, 0.002]], f32)
    g = Graph([TensorSpec("x", (None, 4))], ["y"], [dense("fc", "x", "y", w)])
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(f32)
    for config, low in (("per_tensor", True), ("per_channel", False)):
        sim = QuantSim(g, config).compute_encodings(x)
        r = rows_by_name(quant_report(sim, x))["fc.weight"]
        assert r["min_channel_sqnr_db"] == min(r["channel_sqnr_db"])
        if low:  # the small channel sits on a few grid points of the shared scale
            assert r["min_channel_sqnr_db"] == r["channel_sqnr_db"][1] < 20
            assert r["channel_sqnr_db"][0] > 40
        else:    # its own scale
            assert r["channel_sqnr_db"][1] > 40


# ----------------------------------------------------------------------------- rmse/scale

def identity_net(n_in=4):
    """x -> dense(identity weight) -> y: the x row is the model input quantizer alone."""
    return Graph([TensorSpec("x", (None, n_in))], ["y"],
                 [dense("fc", "x", "y", np.eye(n_in))], name="eye")


def test_rmse_over_scale_is_one_over_sqrt12_for_uniform_data_inside_the_range():
    g = identity_net()
    r = np.random.default_rng(11)
    calib = r.uniform(-2, 2, (64, 4)).astype(f32)
    sim = QuantSim(g, "per_tensor").compute_encodings(calib)
    x = r.uniform(-1, 1, (4000, 4)).astype(f32)  # well inside [-2, 2]
    row = rows_by_name(quant_report(sim, x))["x"]
    assert row["clipped_fraction"] == 0.0
    assert row["rmse_over_scale"] == pytest.approx(1 / math.sqrt(12), rel=0.03)
    # clipped: calibrate on [-0.5, 0.5], report on [-1, 1]; about half the values are clipped
    sim = QuantSim(g, "per_tensor").compute_encodings(r.uniform(-0.5, 0.5, (64, 4)).astype(f32))
    row = rows_by_name(quant_report(sim, x))["x"]
    assert row["clipped_fraction"] == pytest.approx(0.5, abs=0.03)
    assert row["rmse_over_scale"] > 10 * IDEAL_RMSE_OVER_SCALE


@pytest.mark.parametrize("config", ["per_tensor", "per_channel"])
def test_rmse_over_scale_of_uniform_weights(config):
    w = np.random.default_rng(12).uniform(-1, 1, (16, 512)).astype(f32)
    g = Graph([TensorSpec("x", (None, 512))], ["y"], [dense("fc", "x", "y", w)])
    x = np.ones((2, 512), f32)
    sim = QuantSim(g, config).compute_encodings(x)
    row = rows_by_name(quant_report(sim, x))["fc.weight"]
    assert row["rmse_over_scale"] == pytest.approx(1 / math.sqrt(12), rel=0.03)
    # a scale 16x too small clips most weights
    enc = sim.encodings["fc.weight"]
    sim.encodings["fc.weight"] = Encoding(enc.scale / 16, enc.zero_point, 8, enc.qmin, enc.qmax,
                                          True, enc.axis)
    row = rows_by_name(quant_report(sim, x))["fc.weight"]
    assert row["clipped_fraction"] > 0.8
    assert row["rmse_over_scale"] > 10 * IDEAL_RMSE_OVER_SCALE


def test_rmse_over_scale_of_a_per_tensor_weight_is_the_definition():
    s = 2.0 ** -4
    on_grid = np.array([3, -7, 12, 0, 100, -128, 5, 1], f32) * f32(s)      # no error at all
    off_grid = np.random.default_rng(13).uniform(-4, 4, 8).astype(f32)     # rounding error
    w = np.stack([on_grid, off_grid])
    g = Graph([TensorSpec("x", (None, 8))], ["y"], [dense("fc", "x", "y", w)])
    x = np.ones((1, 8), f32)
    sim = QuantSim(g, "per_tensor").compute_encodings(x)
    sim.encodings["fc.weight"] = Encoding(s, 0, 8, -128, 127, True)
    err = w.astype(np.float64) - quantize_dequantize(w, sim.encodings["fc.weight"])
    expected = math.sqrt(np.mean(err ** 2)) / s
    row = rows_by_name(quant_report(sim, x))["fc.weight"]
    assert row["rmse_over_scale"] == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- clipping

def test_clipped_fraction_of_an_activation_is_exact():
    """Grid [0, 127.5] in steps of 0.5: half a step beyond an end is still not clipped."""
    g = identity_net(n_in=1)
    sim = QuantSim(g, "per_tensor").compute_encodings(np.zeros((1, 1), f32) + 1)
    sim.encodings["x"] = Encoding(0.5, 0, 8, 0, 255, False)
    x = np.array([-0.25, -0.3125, 0.0, 3.0, 127.5, 127.75, 127.8125, 1000.0, -3.0, 64.25],
                 f32)[:, None]
    clipped = 4  # -0.3125, 127.8125, 1000, -3
    row = rows_by_name(quant_report(sim, x))["x"]
    assert row["clipped_fraction"] == clipped / x.size
    # streamed over batches: the counts add up
    row = rows_by_name(quant_report(sim, x, batch_size=3))["x"]
    assert row["clipped_fraction"] == clipped / x.size


@pytest.mark.parametrize("per_channel", [False, True])
def test_clipped_fraction_of_a_weight_is_exact(per_channel):
    """Symmetric 8-bit grids [-128 s, 127 s]; a value exactly s/2 beyond an end is not clipped.
    Row 0 has s = 1/16 (range [-8, 7.9375]); row 1 the same per-tensor, 1/64 per-channel
    (range [-2, 1.984375])."""
    w = np.array([[7.96875, 8.0, -8.03125, -9.0, 0.5, 0.0],
                  [1.9921875, 1.9931640625, -3.0, -2.0078125, 0.0, 7.9375]], f32)
    g = Graph([TensorSpec("x", (None, 6))], ["y"], [dense("fc", "x", "y", w)])
    x = np.ones((1, 6), f32)
    sim = QuantSim(g, "per_channel" if per_channel else "per_tensor").compute_encodings(x)
    if per_channel:
        sim.encodings["fc.weight"] = Encoding([2.0 ** -4, 2.0 ** -6], [0, 0], 8, -128, 127, True,
                                              axis=0)
        clipped = 2 + 3   # 8.0, -9.0; 1.9931640625, -3.0, 7.9375
    else:
        sim.encodings["fc.weight"] = Encoding(2.0 ** -4, 0, 8, -128, 127, True)
        clipped = 2       # 8.0, -9.0
    row = rows_by_name(quant_report(sim, x))["fc.weight"]
    assert row["clipped_fraction"] == clipped / w.size


# ----------------------------------------------------------------------------- streaming

def _same_report(a, b, rel):
    assert len(a["quantizers"]) == len(b["quantizers"])
    for ra, rb in zip(sorted(a["quantizers"], key=lambda r: r["quantizer"]),
                      sorted(b["quantizers"], key=lambda r: r["quantizer"])):
        assert ra.keys() == rb.keys()
        for k in ra:
            if isinstance(ra[k], float) or isinstance(ra[k], list) and ra[k] \
                    and isinstance(ra[k][0], float):
                assert ra[k] == pytest.approx(rb[k], rel=rel), (ra["quantizer"], k)
            else:
                assert ra[k] == rb[k], (ra["quantizer"], k)
    assert a["outputs"][0]["cumulative_sqnr_db"] == pytest.approx(
        b["outputs"][0]["cumulative_sqnr_db"], rel=rel)
    assert a["top1_agreement"] == b["top1_agreement"]


def test_streaming_over_batches_equals_one_batch(mlp_sim, mlp_report, data):
    """Σx², Σ(error)², counts are additive: the report streamed over batches equals the
    definitions evaluated on the concatenation of the per-batch runs. Against one batch it agrees
    up to the last bits float32 matmuls of another row count may change."""
    for kwargs, batches in (({"batch_size": 7}, 6), ({"batch_size": 1}, 40)):
        rep = quant_report(mlp_sim, data, **kwargs)
        assert rep["batches"] == batches
        _same_report(rep, mlp_report, rel=1e-4)
    splits = [data[:13], data[13:29], data[29:]]
    rep = quant_report(mlp_sim, splits)  # an iterable of batches
    assert rep["batches"] == 3
    _same_report(rep, mlp_report, rel=1e-4)
    refs = [float_trace(mlp_sim, b) for b in splits]
    gots = [mlp_sim.run(b, trace=True) for b in splits]
    rows = rows_by_name(rep)
    for name in ("x", "a", "y"):
        enc = mlp_sim.encodings[name]
        ref = np.concatenate([r[name] for r in refs])
        got = np.concatenate([g[name] for g in gots])
        loc = quantize_dequantize(ref, enc)
        assert rows[name]["local_sqnr_db"] == pytest.approx(sqnr(ref, loc), rel=1e-12)
        assert rows[name]["cumulative_sqnr_db"] == pytest.approx(sqnr(ref, got), rel=1e-12)
        err = ref.astype(np.float64) - loc
        assert rows[name]["rmse_over_scale"] == pytest.approx(
            math.sqrt(np.mean(err ** 2)) / float(enc.scale), rel=1e-12)
    # parameter rows do not depend on the data at all
    for name in ("fc1.weight", "fc2.weight"):
        assert rows[name] == rows_by_name(mlp_report)[name]


# ----------------------------------------------------------------------------- ordering, exact

def test_worst_first_and_exact_last():
    """Inputs on the integer grid 0..255 (scale 1) and integer weights (pre-quantized, scale 1)
    are exact: SQNR None, listed after every finite row, shown as 'exact'."""
    r = np.random.default_rng(21)
    w = r.integers(-20, 21, (3, 4)).astype(f32)
    w[0, 0] = 127
    g = Graph([TensorSpec("x", (None, 4))], ["y"], [
        dense("fc", "x", "h", w), Node("act", "sigmoid", ["h"], ["y"])])
    x = r.integers(0, 256, (50, 4)).astype(f32)
    x[0, 0], x[1, 1] = 0, 255
    sim = QuantSim(g, "per_tensor").compute_encodings(x)
    assert float(sim.encodings["x"].scale) == 1.0
    rep = quant_report(sim, x)
    rows = rows_by_name(rep)
    assert rows["x"]["local_sqnr_db"] is None and rows["x"]["cumulative_sqnr_db"] is None
    assert rows["x"]["rmse_over_scale"] == 0.0
    assert rows["fc.weight"]["local_sqnr_db"] is None
    assert rows["fc.weight"]["channel_sqnr_db"] == [None, None, None]
    assert rows["fc.weight"]["min_channel_sqnr_db"] is None
    values = [q["local_sqnr_db"] for q in rep["quantizers"]]
    finite = [v for v in values if v is not None]
    assert finite and values == finite + [None] * (len(values) - len(finite))
    assert finite == sorted(finite)
    assert [q["quantizer"] for q in rep["quantizers"]][-2:] in (["x", "fc.weight"],
                                                                ["fc.weight", "x"])
    text = format_report(rep)
    line = {ln.split()[0]: ln.split() for ln in text.splitlines()[2:-2]}
    assert line["x"][3:5] == ["exact", "exact"]
    assert line["fc.weight"][3] == "exact" and line["fc.weight"][-1] == "exact"
    json.dumps(rep, allow_nan=False)


def test_worst_first_on_the_mlp(mlp_report):
    values = [q["local_sqnr_db"] for q in mlp_report["quantizers"]]
    assert None not in values and values == sorted(values)


# ----------------------------------------------------------------------------- top-1

def test_top1_agreement():
    g = mlp(seed=7, n_out=4)
    x = np.random.default_rng(8).normal(size=(300, 6)).astype(f32)
    sim = QuantSim(g, "per_tensor", param_bw=5, act_bw=5).compute_encodings(x)
    rep = quant_report(sim, x, batch_size=64)
    ref = refq.run(g, x, dtype=f32, batch_size=64)["y"]   # the report's batches
    got = sim.run(x, batch_size=64)["y"]
    expected = float(np.mean(ref.argmax(1) == got.argmax(1)))
    assert 0.5 < expected < 1.0  # 5 bits: some samples flip
    assert rep["top1_agreement"] == pytest.approx(expected, rel=0, abs=1e-15)
    assert f"top-1 agreement with float {100 * expected:.1f}%" in format_report(rep)


def test_top1_agreement_is_none_without_a_class_axis():
    g = Graph([TensorSpec("x", (None, 3))], ["y"], [dense("fc", "x", "y", [[1.0, -2.0, 0.5]])])
    x = np.random.default_rng(9).normal(size=(10, 3)).astype(f32)
    rep = quant_report(QuantSim(g, "per_tensor").compute_encodings(x), x)
    assert rep["top1_agreement"] is None
    assert "top-1" not in format_report(rep)


# ----------------------------------------------------------------------------- JSON, table

def test_report_is_json_serialisable(mlp_report):
    text = json.dumps(mlp_report, allow_nan=False)
    assert json.loads(text) == mlp_report


def test_report_is_json_serialisable_when_the_float_tensor_is_zero():
    """relu(x·w + b) is 0 everywhere in float (pre-activation −0.001) but the 8-bit weight
    0.304 -> 39/127 = 0.307 makes it 0.002 in the simulation: Σx² = 0 < Σ(x − x̂)²."""
    g = Graph([TensorSpec("x", (None, 1))], ["y"], [
        dense("fc", "x", "h", [[1.0], [0.304]], [-2.0, -0.305]),
        Node("act", "relu", ["h"], ["a"]),
        dense("fc2", "a", "y", [[1.0, 1.0]]),
    ])
    x = np.array([[1.0], [0.0]], f32)
    sim = QuantSim(g, "per_tensor").compute_encodings(x)
    assert not np.any(float_trace(sim, x)["a"]) and np.any(sim.run(x, trace=True)["a"])
    rep = quant_report(sim, x)
    json.dumps(rep, allow_nan=False)


@pytest.mark.parametrize("top", [1, 3])
def test_format_report_top(mlp_report, top):
    text = format_report(mlp_report, top=top)
    lines = text.splitlines()
    assert len(lines) == 2 + top + 2
    assert lines[0].split()[:3] == ["quantizer", "kind", "grid"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    names = [ln.split()[0] for ln in lines[2:2 + top]]
    assert names == [q["quantizer"] for q in mlp_report["quantizers"][:top]]
    for ln, q in zip(lines[2:2 + top], mlp_report["quantizers"]):
        cells = ln.split()
        assert cells[3] == f"{q['local_sqnr_db']:.1f}"
        assert cells[5] == f"{q['rmse_over_scale']:.3f}"
        assert cells[6] == f"{100 * q['clipped_fraction']:.2f}%"
    assert lines[-2].startswith("outputs: y ")
    assert "1/sqrt(12)" in lines[-1] and f"{1 / math.sqrt(12):.3f}" in lines[-1]


def test_format_report_all_rows_and_param_columns(mlp_report):
    lines = format_report(mlp_report).splitlines()
    assert len(lines) == 2 + len(mlp_report["quantizers"]) + 2
    rows = {ln.split()[0]: ln.split() for ln in lines[2:-2]}
    for q in mlp_report["quantizers"]:
        cells = rows[q["quantizer"]]
        if q["kind"] == "param":
            assert cells[2] == "s8" and cells[4] == "-"
            assert cells[-1] == f"{q['min_channel_sqnr_db']:.1f}"
        else:
            assert cells[2] == "a8" and cells[-1] == "-"
            assert cells[4] == f"{q['cumulative_sqnr_db']:.1f}"
