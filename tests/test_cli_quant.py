"""The quantization commands of `refq` (quantize, equalize, report, run --mode sim), driven
in-process through `refq.cli.main` and compared with the same work done through the Python API.

The model is a small conv net with batch norms (x[N,6,6,3] -> conv 3x3 -> BN -> relu -> conv 1x1
-> BN -> relu -> gap -> dense -> softmax), so that BN folding, CLE (one conv -> relu -> conv pair)
and bias correction all have something to do. Errors must be one line `refq: error: ...`, exit
status 1, and leave no output file behind.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import refq
from refq.algorithms import fold_batch_norms, prepare
from cli_helpers import assert_error, cli
from refq.cli import main
from refq.graph import Graph, Node, TensorSpec
from refq.quant.quantsim import QuantSim
from refq.report import format_report, quant_report

f32 = np.float32


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8).tobytes()


def _bn(c, r):
    return {"gamma": r.uniform(0.5, 2, c).astype(f32), "beta": r.normal(0, 0.3, c).astype(f32),
            "mean": r.normal(0, 0.2, c).astype(f32), "variance": r.uniform(0.5, 2, c).astype(f32)}


def folded_graph():
    """small_graph with its batch norms folded, as `refq quantize` does by default."""
    return fold_batch_norms(small_graph())[0]


def small_graph():
    r = np.random.default_rng(0)
    return Graph([TensorSpec("x", (None, 6, 6, 3))], ["prob"], [
        Node("conv1", "conv2d", ["x"], ["c1"], {"padding": "same"},
             {"weight": r.normal(0, 0.5, (4, 3, 3, 3)).astype(f32)}),
        Node("bn1", "batch_norm", ["c1"], ["b1"], {"epsilon": 1e-3}, _bn(4, r)),
        Node("relu1", "relu", ["b1"], ["r1"]),
        Node("conv2", "conv2d", ["r1"], ["c2"], {},
             {"weight": r.normal(0, 0.5, (5, 1, 1, 4)).astype(f32),
              "bias": r.normal(0, 0.1, 5).astype(f32)}),
        Node("bn2", "batch_norm", ["c2"], ["b2"], {"epsilon": 1e-3}, _bn(5, r)),
        Node("relu2", "relu", ["b2"], ["r2"]),
        Node("gap", "global_avg_pool2d", ["r2"], ["g"]),
        Node("fc", "dense", ["g"], ["logits"], {},
             {"weight": r.normal(0, 0.5, (3, 5)).astype(f32), "bias": np.zeros(3, f32)}),
        Node("sm", "softmax", ["logits"], ["prob"]),
    ], name="small")


X = np.random.default_rng(1).normal(size=(8, 6, 6, 3)).astype(f32)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.refq.h5"
    refq.save(small_graph(), path)
    return str(path)


@pytest.fixture
def calib(tmp_path):
    """The same 8 samples as .npy, as .npz and as a directory of two .npy batches."""
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "x.npz", x=X)
    os.makedirs(tmp_path / "xdir")
    np.save(tmp_path / "xdir" / "a.npy", X[:3])
    np.save(tmp_path / "xdir" / "b.npy", X[3:])
    return {"npy": (str(tmp_path / "x.npy"), [X]), "npz": (str(tmp_path / "x.npz"), [X]),
            "dir": (str(tmp_path / "xdir"), [X[:3], X[3:]])}


def same_encodings(a: QuantSim, b: QuantSim):
    assert set(a.quantizers) == set(b.quantizers)
    assert a.enabled == b.enabled
    assert set(a.encodings) == set(b.encodings)
    for name in a.encodings:
        assert a.encodings[name] == b.encodings[name], name  # every field, exactly


def same_params(g1, g2):
    assert [n.name for n in g1.nodes] == [n.name for n in g2.nodes]
    for n1, n2 in zip(g1.nodes, g2.nodes):
        assert n1.params.keys() == n2.params.keys(), n1.name
        for k in n1.params:
            assert n1.params[k].dtype == n2.params[k].dtype, (n1.name, k)
            assert bits(n1.params[k]) == bits(n2.params[k]), (n1.name, k)


# ----------------------------------------------------------------------------- quantize

@pytest.mark.parametrize("fmt", ["npy", "npz", "dir"])
def test_quantize_per_tensor_default(capsys, tmp_path, model, calib, fmt):
    path, batches = calib[fmt]
    out = tmp_path / "q.refq.h5"
    code, stdout, err = cli(capsys, "quantize", model, "--calib", path, "-o", out)
    assert code == 0 and err == "", err
    assert stdout.startswith(f"quantized {model} (2 batch norms folded): ") and str(out) in stdout
    sim = QuantSim.load(out)
    ref = QuantSim(folded_graph(), "per_tensor").compute_encodings(batches)
    same_encodings(sim, ref)
    assert sim.config_source == ref.config_source
    assert all(sim.encodings[q].axis is None for q in sim.quantizers)
    assert (sim.param_bw, sim.act_bw, sim.scheme) == (8, 8, "minmax")


def test_quantize_quiet_prints_nothing(capsys, tmp_path, model, calib):
    code, out, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o",
                         tmp_path / "q.refq.h5", "--quiet")
    assert code == 0 and out == "" and err == ""


def test_quantize_per_channel(capsys, tmp_path, model, calib):
    out = tmp_path / "q.refq.h5"
    code, _, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o", out,
                       "--per-channel", "--quiet")
    assert code == 0, err
    sim = QuantSim.load(out)
    same_encodings(sim, QuantSim(folded_graph(), "per_channel").compute_encodings(X))
    for name in ("conv1.weight", "conv2.weight", "fc.weight"):
        assert sim.encodings[name].axis == 0
        assert sim.encodings[name].scale.shape == (sim.graph.node(name[:-7]).params["weight"]
                                                   .shape[0],)


def test_quantize_config_file(capsys, tmp_path, model, calib):
    from importlib import resources

    doc = json.loads(resources.files("refq.quant").joinpath(
        "configs", "default_per_tensor.json").read_text(encoding="utf-8"))
    doc["op_type"]["Gemm"] = {"per_channel_quantization": "True"}
    doc["model_output"] = {"is_output_quantized": "False"}
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(doc))
    out = tmp_path / "q.refq.h5"
    code, _, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o", out,
                       "--config", cfg, "--quiet")
    assert code == 0, err
    sim = QuantSim.load(out)
    same_encodings(sim, QuantSim(folded_graph(), str(cfg)).compute_encodings(X))
    assert sim.encodings["fc.weight"].axis == 0 and sim.encodings["conv1.weight"].axis is None
    assert "prob" not in sim.tensor_quantizers()


@pytest.mark.parametrize("args, kwargs", [
    (["--scheme", "tf_enhanced"], {"scheme": "tf_enhanced"}),
    (["--param-bw", "4"], {"param_bw": 4}),
    (["--act-bw", "6", "--scheme", "percentile", "--percentile", "99"],
     {"act_bw": 6, "scheme": "percentile", "scheme_options": {"percentile": 99.0}}),
])
def test_quantize_scheme_and_bitwidths(capsys, tmp_path, model, calib, args, kwargs):
    out = tmp_path / "q.refq.h5"
    code, _, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o", out,
                       *args, "--quiet")
    assert code == 0, err
    sim = QuantSim.load(out)
    ref = QuantSim(folded_graph(), "per_tensor", **kwargs).compute_encodings(X)
    same_encodings(sim, ref)
    assert (sim.scheme, sim.param_bw, sim.act_bw) == (ref.scheme, ref.param_bw, ref.act_bw)
    for name, q in sim.quantizers.items():
        want = sim.param_bw if q.kind == "param" else sim.act_bw
        assert sim.encodings[name].bitwidth == want


def test_quantize_encodings_then_load_encodings(capsys, tmp_path, model, calib):
    out1, out2, enc = tmp_path / "q1.refq.h5", tmp_path / "q2.refq.h5", tmp_path / "q.encodings"
    code, stdout, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o", out1,
                            "--per-channel", "--encodings", enc)
    assert code == 0, err
    assert f"AIMET encodings {enc}" in stdout
    doc = json.loads(enc.read_text())
    assert doc["version"] == "1.0.0"
    params = {e["name"]: e for e in doc["param_encodings"]}
    assert set(params) == {"conv1.weight", "conv2.weight", "fc.weight"}
    assert params["conv1.weight"]["enc_type"] == "PER_CHANNEL"
    assert len(params["conv1.weight"]["scale"]) == 4
    acts = {e["name"] for e in doc["activation_encodings"]}
    assert "x" in acts and "prob" in acts
    # the file instead of calibration data reproduces every encoding bit for bit
    code, _, err = cli(capsys, "quantize", model, "--load-encodings", enc, "-o", out2,
                       "--per-channel", "--quiet")
    assert code == 0, err
    s1, s2 = QuantSim.load(out1), QuantSim.load(out2)
    same_encodings(s1, s2)
    assert bits(s1.run(X)["prob"]) == bits(s2.run(X)["prob"])


def test_quantize_encodings_version_061(capsys, tmp_path, model, calib):
    enc = tmp_path / "q.encodings"
    code, _, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o",
                       tmp_path / "q.refq.h5", "--encodings", enc, "--encodings-version", "0.6.1",
                       "--quiet")
    assert code == 0, err
    doc = json.loads(enc.read_text())
    assert doc["version"] == "0.6.1" and isinstance(doc["param_encodings"], dict)
    code, _, err = cli(capsys, "quantize", model, "--load-encodings", enc, "-o",
                       tmp_path / "q2.refq.h5", "--quiet")
    assert code == 0, err
    same_encodings(QuantSim.load(tmp_path / "q.refq.h5"), QuantSim.load(tmp_path / "q2.refq.h5"))


def test_quantize_with_dfq_steps(capsys, tmp_path, model, calib):
    out, rep = tmp_path / "q.refq.h5", tmp_path / "dfq.json"
    code, _, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o", out,
                       "--fold-bn", "--cle", "--bias-correction", "empirical", "--report", rep,
                       "--quiet")
    assert code == 0, err
    g, report = prepare(small_graph(), fold_bn=True, cle=True, bias_correction="empirical",
                        data=X, config="per_tensor", param_bw=8)
    sim = QuantSim.load(out)
    same_params(sim.graph, g)
    assert [n.op for n in sim.graph.nodes].count("batch_norm") == 0
    same_encodings(sim, QuantSim(g, "per_tensor").compute_encodings(X))
    doc = json.loads(rep.read_text())
    assert set(doc) == {"bn_fold", "cle", "bias_correction"}
    assert doc == json.loads(json.dumps(report))
    assert len(doc["bn_fold"]["folded"]) == 2 and len(doc["cle"]["sets"]) == 1


def test_quantize_bias_correction_uses_the_quantization_settings(capsys, tmp_path, model, calib):
    """--param-bw and --per-channel reach the bias correction, not only the simulation."""
    out = tmp_path / "q.refq.h5"
    code, _, err = cli(capsys, "quantize", model, "--calib", calib["dir"][0], "-o", out,
                       "--fold-bn", "--bias-correction", "empirical", "--param-bw", "4",
                       "--per-channel", "--quiet")
    assert code == 0, err
    g, _ = prepare(small_graph(), fold_bn=True, bias_correction="empirical",
                   data=calib["dir"][1], config="per_channel", param_bw=4)
    same_params(QuantSim.load(out).graph, g)
    g8, _ = prepare(small_graph(), fold_bn=True, bias_correction="empirical", data=X,
                    config="per_channel", param_bw=8)
    assert bits(g.node("fc").params["bias"]) != bits(g8.node("fc").params["bias"])


def test_quantize_analytical_bias_correction(capsys, tmp_path, model, calib):
    out, rep = tmp_path / "q.refq.h5", tmp_path / "bc.json"
    code, _, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o", out,
                       "--fold-bn", "--bias-correction", "analytical", "--report", rep, "--quiet")
    assert code == 0, err
    g, report = prepare(small_graph(), fold_bn=True, bias_correction="analytical", data=X,
                        config="per_tensor", param_bw=8)
    same_params(QuantSim.load(out).graph, g)
    assert json.loads(rep.read_text()) == json.loads(json.dumps(report))
    assert set(report) == {"bn_fold", "bias_correction"}


def test_quantize_analytical_report_is_strict_json(capsys, tmp_path, model, calib):
    rep = tmp_path / "bc.json"
    code, _, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o",
                       tmp_path / "q.refq.h5", "--fold-bn", "--bias-correction", "analytical",
                       "--report", rep, "--quiet")
    assert code == 0, err

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    json.loads(rep.read_text(), parse_constant=refuse)


def test_quantize_folds_batch_norms_unless_asked_not_to(capsys, tmp_path, model, calib):
    rep = tmp_path / "r.json"
    code, _, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o",
                       tmp_path / "q.refq.h5", "--report", rep, "--quiet")
    assert code == 0, err
    assert set(json.loads(rep.read_text())) == {"bn_fold"}
    assert not any(n.op == "batch_norm" for n in QuantSim.load(tmp_path / "q.refq.h5").graph.nodes)
    out = tmp_path / "unfolded.refq.h5"
    code, stdout, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o", out,
                            "--report", rep, "--no-fold-bn")
    assert code == 0, err
    assert json.loads(rep.read_text()) == {}
    assert stdout.startswith(f"quantized {model} (batch norms not folded): ")
    same_encodings(QuantSim.load(out), QuantSim(small_graph(), "per_tensor").compute_encodings(X))
    code, _, err = cli(capsys, "quantize", model, "--calib", calib["npy"][0], "-o",
                       tmp_path / "x.refq.h5", "--no-fold-bn", "--cle")
    assert_error(code, err, "--cle", "--no-fold-bn")


# ----------------------------------------------------------------------------- run --mode sim

@pytest.fixture
def quantized(tmp_path, model, calib, capsys):
    out = tmp_path / "q.refq.h5"
    assert main(["quantize", model, "--calib", calib["npy"][0], "-o", str(out), "--quiet"]) == 0
    capsys.readouterr()
    return str(out)


def test_run_sim_is_quantsim_run(capsys, tmp_path, quantized, calib):
    y = tmp_path / "y.npy"
    code, out, err = cli(capsys, "run", quantized, "--mode", "sim", "--input", calib["npy"][0],
                         "--output", y)
    assert code == 0 and err == "", err
    assert "[8, 3]" in out
    got = np.load(y, allow_pickle=False)
    ref = QuantSim.load(quantized).run(X)["prob"]
    assert got.dtype == np.float32 and bits(got) == bits(ref)
    float_out = refq.run(small_graph(), X)["prob"]
    assert not np.array_equal(got.astype(np.float64), float_out)  # the simulation, not float
    # with a trace and batches
    code, _, err = cli(capsys, "run", quantized, "--mode", "sim", "--input", calib["npy"][0],
                       "--output", tmp_path / "y2.npy", "--trace", tmp_path / "trace",
                       "--batch-size", "3", "--quiet")
    assert code == 0, err
    ref = QuantSim.load(quantized).run(X, trace=True, batch_size=3)
    index = json.loads((tmp_path / "trace" / "index.json").read_text())
    for t, fname in index.items():
        assert bits(np.load(tmp_path / "trace" / fname)) == bits(ref[t]), t


def test_run_sim_refuses_dtype(capsys, tmp_path, quantized, calib):
    y = tmp_path / "y.npy"
    code, _, err = cli(capsys, "run", quantized, "--mode", "sim", "--dtype", "float32",
                       "--input", calib["npy"][0], "--output", y)
    assert_error(code, err, "--dtype")
    assert not y.exists()


# ----------------------------------------------------------------------------- report

def test_report_json_and_top(capsys, tmp_path, quantized, calib):
    rj = tmp_path / "rep.json"
    code, out, err = cli(capsys, "report", quantized, "--data", calib["dir"][0], "--json", rj,
                         "--top", 2, "--quiet")
    assert code == 0 and err == "", err
    sim = QuantSim.load(quantized)
    ref = quant_report(sim, calib["dir"][1])
    assert ref["batches"] == 2
    doc = json.loads(rj.read_text())   # the full report (tests/test_cli_report.py)
    assert out == format_report(ref, top=2) + "\n"
    assert len(out.splitlines()) == 2 + 2 + 2
    table = next(s for s in doc["sections"] if s["id"] == "quantizers")["tables"][0]
    assert len(table["rows"]) == len(sim.quantizers)  # the JSON holds every row


def test_report_all_rows_with_batch_size(capsys, quantized, calib):
    code, out, err = cli(capsys, "report", quantized, "--data", calib["npz"][0],
                         "--batch-size", 3, "--quiet")
    assert code == 0, err
    ref = quant_report(QuantSim.load(quantized), X, batch_size=3)
    assert ref["batches"] == 3
    assert out == format_report(ref) + "\n"


def test_report_json_is_strict_json(capsys, tmp_path):
    g = Graph([TensorSpec("x", (None, 1))], ["y"], [
        Node("fc", "dense", ["x"], ["h"], {}, {"weight": np.array([[1.0], [0.304]], f32),
                                               "bias": np.array([-2.0, -0.305], f32)}),
        Node("act", "relu", ["h"], ["a"]),
        Node("fc2", "dense", ["a"], ["y"], {}, {"weight": np.array([[1.0, 1.0]], f32)}),
    ])
    x = np.array([[1.0], [0.0]], f32)
    np.save(tmp_path / "x.npy", x)
    QuantSim(g, "per_tensor").compute_encodings(x).save(tmp_path / "q.refq.h5")
    code, _, err = cli(capsys, "report", tmp_path / "q.refq.h5", "--data", tmp_path / "x.npy",
                       "--json", tmp_path / "r.json", "--quiet")
    assert code == 0, err

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)


# ----------------------------------------------------------------------------- equalize

def test_equalize(capsys, tmp_path, model):
    out, rep = tmp_path / "eq.refq.h5", tmp_path / "cle.json"
    code, stdout, err = cli(capsys, "equalize", model, "-o", out, "--report", rep)
    assert code == 0 and err == "", err
    assert stdout == f"equalized {model}: 2 batch norms folded, 1 equalization sets -> {out}\n"
    g, report = prepare(small_graph(), fold_bn=True, cle=True)
    same_params(refq.load(out), g)
    assert json.loads(rep.read_text()) == json.loads(json.dumps(report))
    # the float function is preserved (BN fold and CLE scaling; high-bias absorption is
    # exact here unless a pre-activation falls below the absorbed shift)
    y0 = refq.run(small_graph(), X)["prob"]
    code, _, err = cli(capsys, "equalize", model, "-o", tmp_path / "eq2.refq.h5", "--no-high-bias",
                       "--quiet")
    assert code == 0, err
    y1 = refq.run(refq.load(tmp_path / "eq2.refq.h5"), X)["prob"]
    np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- errors

def _files(tmp_path):
    return sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("case", ["shape", "empty_dir", "nan", "scheme", "param_bw", "config_key",
                                  "config_and_per_channel", "bc_without_calib",
                                  "no_calib_at_all", "shape_bc", "nan_bc"])
def test_quantize_errors(capsys, tmp_path, model, calib, case):
    bad = {"shape": X[:, :5], "nan": np.where(np.arange(X.size).reshape(X.shape) == 100, np.nan,
                                              X).astype(f32)}
    for k, v in bad.items():
        np.save(tmp_path / f"{k}.npy", v)
    os.makedirs(tmp_path / "empty")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"defaults": {"ops": {}, "params": {}, "colour": "blue"},
                               "params": {}, "op_type": {}, "supergroups": [], "model_input": {},
                               "model_output": {}}))
    good = calib["npy"][0]
    argv, needles = {
        "shape": (["--calib", tmp_path / "shape.npy"], ["[8, 5, 6, 3]", "6, 3]"]),
        "empty_dir": (["--calib", tmp_path / "empty"], ["empty", "no .npy files"]),
        "nan": (["--calib", tmp_path / "nan.npy"], ["nan.npy", "input 'x'", "not finite"]),
        "scheme": (["--calib", good, "--scheme", "minimax"], ["--scheme", "minimax"]),
        "param_bw": (["--calib", good, "--param-bw", "1"], ["--param-bw", "1"]),
        "config_key": (["--calib", good, "--config", cfg], ["cfg.json", "colour"]),
        "config_and_per_channel": (["--calib", good, "--config", cfg, "--per-channel"],
                                   ["--config", "--per-channel"]),
        "bc_without_calib": (["--load-encodings", tmp_path / "none.encodings", "--fold-bn",
                              "--bias-correction", "empirical"], ["empirical", "--calib"]),
        "no_calib_at_all": ([], ["--calib", "--load-encodings"]),
        "shape_bc": (["--calib", tmp_path / "shape.npy", "--fold-bn", "--bias-correction",
                      "empirical"], ["[8, 5, 6, 3]"]),
        "nan_bc": (["--calib", tmp_path / "nan.npy", "--fold-bn", "--bias-correction",
                    "empirical"], ["nan.npy", "not finite"]),
    }[case]
    before = _files(tmp_path)
    out, enc, rep = tmp_path / "q.refq.h5", tmp_path / "q.encodings", tmp_path / "r.json"
    code, stdout, err = cli(capsys, "quantize", model, "-o", out, "--encodings", enc,
                            "--report", rep, *argv, "--quiet")
    assert_error(code, err, *needles)
    assert stdout == ""
    assert not out.exists() and not enc.exists() and not rep.exists()
    assert _files(tmp_path) == before  # no temporary files either


def test_quantize_shape_error_names_the_calibration_file(capsys, tmp_path, model):
    os.makedirs(tmp_path / "cal")
    np.save(tmp_path / "cal" / "a.npy", X[:4])
    np.save(tmp_path / "cal" / "b.npy", X[4:, :5])
    code, _, err = cli(capsys, "quantize", model, "--calib", tmp_path / "cal", "-o",
                       tmp_path / "q.refq.h5", "--quiet")
    assert_error(code, err, "b.npy")


def test_run_sim_on_a_float_model(capsys, tmp_path, model, calib):
    y = tmp_path / "y.npy"
    code, _, err = cli(capsys, "run", model, "--mode", "sim", "--input", calib["npy"][0],
                       "--output", y)
    assert_error(code, err, model, "not a quantization simulation", "refq quantize")
    assert not y.exists()


def test_report_on_a_float_model(capsys, tmp_path, model, calib):
    rj = tmp_path / "r.json"
    code, out, err = cli(capsys, "report", model, "--data", calib["npy"][0], "--json", rj)
    assert_error(code, err, model, "without a quantization simulation", "refq quantize")
    assert out == "" and not rj.exists()


def test_report_data_of_the_wrong_shape(capsys, tmp_path, quantized):
    np.save(tmp_path / "bad.npy", X[:, :, :5])
    rj = tmp_path / "r.json"
    code, out, err = cli(capsys, "report", quantized, "--data", tmp_path / "bad.npy", "--json", rj,
                         "--quiet")
    assert_error(code, err, "[8, 6, 5, 3]")
    assert out == "" and not rj.exists()
