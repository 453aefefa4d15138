"""refq.fixedpoint.run and refq.fixedpoint.compare on the real PP-OCR classifier (BN folded,
W8A8 QuantSim per tensor and per channel, calibrated on 32 lines): every shipped profile lowers;
a float requantization scheme equals the integer-faithful simulation bit for bit; every other
scheme differs locally by at most one LSB per requantization (the counts are printed: run with -s);
the dequantized outputs agree with the QuantSim float simulation."""
import dataclasses

import numpy as np
import pytest

from refq.algorithms import fold_batch_norms
from refq.ppocr_data import load_calibration_set, load_model, load_test_set
from refq.fixedpoint import PROFILES
from refq.fixedpoint.compare import compare, format_compare
from refq.fixedpoint.lowering import lower
from refq.fixedpoint.run import (REFERENCE, IntPlan, accumulator_headroom, faithful_graph,
                                 run_faithful,
                                 run_int)
from refq.quant.quantsim import QuantSim

NAMES = tuple(PROFILES)
FLOAT_PROFILE = dataclasses.replace(REFERENCE, name="float-exact",
                                    activation_dtypes=("int8", "int16"))


@pytest.fixture(scope="module")
def calib():
    return load_calibration_set(32)


@pytest.fixture(scope="module")
def sims(calib):
    g, _ = fold_batch_norms(load_model())
    return {c: QuantSim(g, c).compute_encodings(calib) for c in ("per_tensor", "per_channel")}


@pytest.fixture(scope="module")
def test_lines():
    """The first six lines of the bundled test set, with their labels."""
    x, y, _ = load_test_set()
    return x[:6], y[:6]


@pytest.mark.parametrize("config", ["per_tensor", "per_channel"])
def test_every_shipped_profile_lowers_ppocr(sims, config):
    sim = sims[config]
    ops = {n.op for n in sim.graph.nodes}
    assert "batch_norm" not in ops and {"hard_swish", "multiply", "zero_pad2d"} <= ops
    for name in NAMES:
        g = lower(sim, name)
        meta = g.meta["integer"]
        assert meta["profile"] == name
        assert sum(n.op == "int_conv2d" for n in g.nodes) == 53
        assert sum(n.op == "int_lut" for n in g.nodes) == 18       # the hard_swishes
        assert len(meta["fused"]) == 21                             # conv+relu and conv+clip pairs
        assert g.outputs == ["predictions"] and g.inputs[0].name == "x"


@pytest.mark.parametrize("config", ["per_tensor", "per_channel"])
def test_lsb_differences_per_profile(sims, calib, config):
    """The differences to report: local (own requantization) and cumulative, per profile."""
    sim = sims[config]
    x = calib[:1]
    for name in NAMES:
        rep = compare(sim, name, x)
        s = rep["summary"]
        print(f"\nPP-OCR {config} {name}: local {s['local_differ_elements']} of "
              f"{s['local_elements']} elements differ in {s['local_differ_nodes']} of {s['nodes']} "
              f"nodes, max {s['local_max_lsb']} LSB; cumulative {s['cumulative_differ_elements']} "
              f"elements, max {s['cumulative_max_lsb']} LSB; min headroom "
              f"{s['min_headroom_bits']} bits")
        assert s["local_within_bound"], s["local_out_of_bound"]
        assert s["local_max_lsb"] <= 1
        assert s["min_headroom_bits"] >= 0
        if name in ("onnx", "ort"):
            # float requantization (float32 multiplier): at most a rare tie
            assert s["local_differ_elements"] <= s["local_elements"] // 10000
        else:
            assert s["local_differ_elements"] > 0
        text = format_compare(rep)
        assert f"profile {name}" in text and "output predictions" in text


def test_float_requantization_is_the_faithful_simulation_bit_for_bit(sims, calib):
    x = calib[:2]
    for sim in sims.values():
        ta, sa = run_int(lower(sim, FLOAT_PROFILE), {"x": x}, trace=True)
        tf, sf = run_int(faithful_graph(sim, like=FLOAT_PROFILE), {"x": x}, trace=True)
        assert ta.keys() == tf.keys()
        assert all(np.array_equal(ta[k], tf[k]) for k in ta)
        assert sa == sf


def test_int_outputs_agree_with_the_float_simulation(sims, test_lines):
    x, labels = test_lines
    for config, sim in sims.items():
        ts = sim.run({"x": x}, trace=True)
        for name in ("tflite", "tosa"):
            g = lower(sim, name)
            t, _ = run_int(g, {"x": x}, trace=True)
            q = g.meta["integer"]["tensors"]["predictions/preact"]
            logits = (t["predictions/preact"] - q["zero_point"]) * q["scale"]
            ref = ts["predictions/preact"].astype(np.float64)
            agree = np.mean(t["predictions"].argmax(-1) == ts["predictions"].argmax(-1))
            sqnr = 10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - logits) ** 2), 1e-30))
            acc = np.mean(t["predictions"].argmax(-1) == labels)
            print(f"\nPP-OCR {config} {name}: top-1 agreement with the sim {agree:.2f}, logits "
                  f"SQNR {sqnr:.1f} dB, accuracy {acc:.2f}")
            assert agree == 1.0 and acc == 1.0 and sqnr > 12


def test_run_int_stats_and_streaming(sims, calib):
    sim = sims["per_channel"]
    g = lower(sim, "tflite")
    x = calib[:3]
    y, stats = run_int(g, {"x": x})
    yb, statsb = run_int(g, {"x": x}, batch_size=1)
    assert np.array_equal(y["predictions"], yb["predictions"])  # integers: chunking is exact
    assert stats == statsb
    convs = {n.name for n in g.nodes if n.op in ("int_conv2d", "int_dense")}
    assert convs <= set(stats)
    for name, s in stats.items():
        assert s["headroom_bits"] == accumulator_headroom(s["max_abs_acc"], 32) >= 0
        assert s["accumulator_bits"] == 32 and s["overflow_policy"] == "error"
        assert not s["overflowed"]
    t, _ = run_int(g, {"x": x[:1]}, trace=True)
    meta = g.meta["integer"]["tensors"]
    for k, q in meta.items():
        lo, hi = q["qmin"], q["qmax"]
        assert t[k].dtype == np.int64 and lo <= t[k].min() and t[k].max() <= hi, k
    yf, sf = run_faithful(sim, {"x": x[:1]}, like="tflite")
    yf2, _ = run_int(faithful_graph(sim, like="tflite"), {"x": x[:1]})
    assert np.array_equal(yf["predictions"], yf2["predictions"]) and sf


def test_int_plan_runs_many_times_as_run_int_does(sims, calib):
    """An IntPlan built once gives, on every run, the outputs and statistics of run_int; it is a
    snapshot (later changes to the graph do not reach it), and what its kernels keep from one run
    is kept per shape of the feeds."""
    g = lower(sims["per_channel"], "tflite")
    plan = IntPlan(g)
    for x in (calib[:3], calib[3:8], calib[:3]):
        y, stats = plan.run({"x": x})
        ref, ref_stats = run_int(g, {"x": x})
        assert np.array_equal(y["predictions"], ref["predictions"]) and stats == ref_stats
        traced, _ = plan.run({"x": x}, trace=True)
        assert np.array_equal(traced["predictions"], ref["predictions"])
    conv = next(n for n in g.nodes if n.op == "int_conv2d")
    saved = conv.params["weight"]
    conv.params["weight"] = np.zeros_like(saved)
    try:
        assert np.array_equal(plan.run({"x": calib[:3]})[0]["predictions"], ref["predictions"])
    finally:
        conv.params["weight"] = saved
    assert len(plan._memos) == 1


def _one_conv_graph(w, weight_zp, policy):
    """x -> int_quantize (scale 1) -> 1x1 int_conv2d on 2 channels, 16-bit accumulator."""
    from refq.fixedpoint import quantize_multiplier
    from refq.graph import Graph, Node, TensorSpec

    m, s = quantize_multiplier(np.array([1 / 512]))
    nodes = [
        Node("q", "int_quantize", ["x"], ["q"], {"scale": 1.0, "zero_point": 0, "qmin": -128,
                                                 "qmax": 127, "rounding": "half_away"}),
        Node("c", "int_conv2d", ["q"], ["a"],
             {"input_zp": 0, "weight_zp": weight_zp, "output_zp": 0, "act_min": -128,
              "act_max": 127, "scheme": "tflite_double", "accumulator_bits": 16,
              "overflow": policy},
             {"weight": np.full((1, 1, 1, 2), w, np.int8), "multiplier": m.astype(np.int32),
              "shift": s.astype(np.int32)}),
        Node("d", "int_dequantize", ["a"], ["y"], {"scale": 1.0, "zero_point": 0}),
    ]
    return Graph([TensorSpec("x", (None, 1, 1, 2), "float32")], ["y"], nodes)


def test_overflow_flag_uses_the_signed_extremes():
    """acc = 2·(−128)·(w − weight_zp): −2^15 fits a 16-bit accumulator, +2^15 does not."""
    from refq.errors import FixedPointError

    x = {"x": np.full((1, 1, 1, 2), -128.0, np.float32)}
    for policy in ("error", "wrap", "saturate"):
        _, stats = run_int(_one_conv_graph(127, -1, policy), x)        # acc = −32768
        assert stats["c"]["max_abs_acc"] == 1 << 15 and not stats["c"]["overflowed"]
    with pytest.raises(FixedPointError, match=r"node 'c' \(int_conv2d\)"):
        run_int(_one_conv_graph(-127, 1, "error"), x)                  # acc = +32768
    for policy in ("wrap", "saturate"):
        _, stats = run_int(_one_conv_graph(-127, 1, policy), x)
        assert stats["c"]["max_abs_acc"] == 1 << 15 and stats["c"]["overflowed"]


# ---- integer codes in and out (run_int(..., codes=True)) -------------------------------------

@pytest.fixture(scope="module")
def mnv1_int():
    """The real MobileNetV1 (MNIST) lowered for TFLite, BN folded, per-channel W8A8, calibrated
    on its 10 reference images; and those images."""
    from real_models import MODELS
    from refq import import_keras

    x = np.load(MODELS["mnv1"].parent / "reference_outputs.npz")["inputs"]
    g, _ = fold_batch_norms(import_keras(str(MODELS["mnv1"])))
    return lower(QuantSim(g, "per_channel").compute_encodings(x), "tflite"), x


def test_codes_in_codes_out_equal_quantize_run_quantize(mnv1_int):
    """codes in -> codes out == quantize(float in) -> run -> quantize(float out), exactly."""
    from refq.fixedpoint.profiles import get_profile
    from refq.fixedpoint.requantize import quantize
    from refq.fixedpoint.run import input_encodings, output_encodings

    g, x = mnv1_int
    x = x[:4]
    rounding = get_profile("tflite").quantize_rounding
    (name, qi), = input_encodings(g).items()
    (out, qo), = output_encodings(g).items()
    assert (name, out) == ("image", "predictions") and qi.dtype == qo.dtype == "int8"

    def q(v, e):
        return quantize(v, np.float32(e.scale), e.zero_point, qmin=e.qmin, qmax=e.qmax,
                        rounding=rounding)

    codes = q(x, qi).astype(np.int8)
    got, stats = run_int(g, {name: codes}, codes=True)
    ref, ref_stats = run_int(g, {name: x})
    assert got[out].dtype == np.int8
    assert np.array_equal(got[out], q(ref[out], qo))
    assert np.array_equal(got[out].argmax(axis=1), ref[out].argmax(axis=1))
    assert stats == ref_stats
    traced, _ = run_int(g, {name: codes.astype(np.int16)}, codes=True, trace=True)
    assert np.array_equal(traced[name], codes) and np.array_equal(traced[out], got[out])
