"""Bad-input corpus of the command line itself: bad options, bad data arrays, modes a file cannot
run, unwritable output paths, oversized traces and closed pipes. Each case ends with status 1 and
exactly one line `refq: error: ...` naming what is wrong, with no traceback and no file created or
changed."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import refq
from cli_helpers import cli, fails_cleanly
from refq.cli import main
from refq.graph import Graph, Node, TensorSpec

f32 = np.float32


def conv_graph():
    """x[N,6,6,3] -> conv2d(4, 3x3) -> batch_norm -> relu -> global average pool -> dense(3)."""
    r = np.random.default_rng(3)
    bn = {"gamma": r.uniform(0.5, 2, 4).astype(f32), "beta": r.normal(size=4).astype(f32),
          "mean": r.normal(size=4).astype(f32), "variance": r.uniform(0.5, 2, 4).astype(f32)}
    return Graph([TensorSpec("x", (None, 6, 6, 3))], ["logits"], [
        Node("conv", "conv2d", ["x"], ["c"], {"padding": "same"},
             {"weight": r.normal(size=(4, 3, 3, 3)).astype(f32),
              "bias": r.normal(size=4).astype(f32)}),
        Node("bn", "batch_norm", ["c"], ["b"], {"epsilon": 1e-3}, bn),
        Node("relu", "relu", ["b"], ["r"]),
        Node("gap", "global_avg_pool2d", ["r"], ["g"]),
        Node("fc", "dense", ["g"], ["logits"], {},
             {"weight": r.normal(size=(3, 4)).astype(f32), "bias": r.normal(size=3).astype(f32)}),
    ], name="conv")


X = np.random.default_rng(0).normal(size=(6, 6, 6, 3)).astype(f32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A float model, its simulation (q), its integer model (int) and data (x), read-only."""
    d = tmp_path_factory.mktemp("models")
    refq.save(conv_graph(), d / "float.refq.h5")
    np.save(d / "x.npy", X)
    argv = [["quantize", d / "float.refq.h5", "--calib", d / "x.npy", "-o", d / "q.refq.h5"],
            ["lower", d / "q.refq.h5", "--profile", "tflite", "-o", d / "int.refq.h5"]]
    for a in argv:
        assert main([str(v) for v in a] + ["--quiet"]) == 0
    return {k: str(d / f"{k}.refq.h5") for k in ("float", "q", "int")} | {"x": str(d / "x.npy")}


def bad_arrays():
    """name -> (array or None for a raw file, raw bytes, the words the error must contain)."""
    return {
        "scalar": (np.array(1.5, f32), None, ["scalar.npy", "scalar"]),
        "no_samples": (np.zeros((0, 6, 6, 3), f32), None, ["no_samples.npy", "no samples"]),
        "nan": (np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X).astype(f32), None,
                ["nan.npy", "not finite", "[0, 0, 2, 1]"]),
        "inf": (np.where(np.arange(X.size).reshape(X.shape) == 0, -np.inf, X).astype(f32), None,
                ["inf.npy", "not finite"]),
        "complex": (X.astype(np.complex64), None, ["complex.npy", "complex64"]),
        "strings": (np.array([["a", "b"]]), None, ["strings.npy", "not numeric"]),
        "wrong_rank": (X[..., 0], None, ["wrong_rank.npy", "shape"]),
        "wrong_shape": (X[:, :5], None, ["wrong_shape.npy", "[6, 5, 6, 3]"]),
        "truncated": (None, b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
                            b"'shape': (6, 6, 6, 3), }" + b" " * 50 + b"\n" + b"\0" * 40,
                      ["truncated.npy", "not a readable"]),
        "pickled": (None, b"\x80\x04\x95" + b"\0" * 30, ["pickled.npy", "not an .npy or .npz"]),
        "text": (None, b"1,2,3\n4,5,6\n", ["text.npy", "not an .npy or .npz"]),
        "object_array": (np.array([{"a": 1}], dtype=object), None,
                         ["object_array.npy", "pickled Python objects"]),
        "hdf5": (None, b"\x89HDF\r\n\x1a\n" + b"\0" * 100, ["hdf5.npy", "HDF5 file"]),
    }


def _write_bad(tmp_path, name):
    array, raw, needles = bad_arrays()[name]
    path = tmp_path / f"{name}.npy"
    if raw is None:
        np.save(path, array)
    else:
        path.write_bytes(raw)
    return path, needles


DATA_COMMANDS = {
    "run": lambda f, data, out: ["run", f["float"], "--input", data, "--output", out / "y.npy"],
    "run_sim": lambda f, data, out: ["run", f["q"], "--input", data, "--output", out / "y.npy"],
    "quantize": lambda f, data, out: ["quantize", f["float"], "--calib", data, "-o",
                                      out / "q.refq.h5"],
    "report": lambda f, data, out: ["report", f["q"], "--data", data, "--json", out / "r.json"],
    "compare": lambda f, data, out: ["compare", f["q"], "--profile", "tflite", "--data", data],
}


@pytest.mark.parametrize("command", sorted(DATA_COMMANDS))
@pytest.mark.parametrize("name", sorted(bad_arrays()))
def test_bad_data_arrays(capsys, tmp_path, files, command, name):
    path, needles = _write_bad(tmp_path, name)
    fails_cleanly(capsys, tmp_path, *DATA_COMMANDS[command](files, path, tmp_path),
                  needles=needles)


def test_empty_npz_and_empty_directory(capsys, tmp_path, files):
    np.savez(tmp_path / "empty.npz")
    os.makedirs(tmp_path / "nothing")
    fails_cleanly(capsys, tmp_path, "run", files["float"], "--input", tmp_path / "empty.npz",
                  "--output", tmp_path / "y.npy", needles=["empty.npz", "no arrays"])
    fails_cleanly(capsys, tmp_path, "report", files["q"], "--data", tmp_path / "empty.npz",
                  needles=["empty.npz", "no arrays"])
    fails_cleanly(capsys, tmp_path, "quantize", files["float"], "--calib", tmp_path / "nothing",
                  "-o", tmp_path / "q.refq.h5", needles=["nothing", "no .npy files"])


USAGE = {
    "top_negative": (["report", "{q}", "--data", "{x}", "--top", "-3"], ["--top", "-3"]),
    "top_zero": (["report", "{q}", "--data", "{x}", "--top", "0"], ["--top", "0"]),
    "batch_zero": (["run", "{float}", "--input", "{x}", "--output", "y.npy", "--batch-size", "0"],
                   ["--batch-size"]),
    "batch_text": (["report", "{q}", "--data", "{x}", "--batch-size", "ten"], ["--batch-size",
                                                                               "ten"]),
    "param_bw_1": (["quantize", "{float}", "--calib", "{x}", "-o", "q.refq.h5", "--param-bw", "1"],
                   ["--param-bw", "1"]),
    "act_bw_33": (["quantize", "{float}", "--calib", "{x}", "-o", "q.refq.h5", "--act-bw", "33"],
                  ["--act-bw", "33"]),
    "scheme": (["quantize", "{float}", "--calib", "{x}", "-o", "q.refq.h5", "--scheme", "max"],
               ["--scheme", "max"]),
    "profile_lower": (["lower", "{q}", "--profile", "tflight", "-o", "i.refq.h5"],
                      ["--profile", "tflight", "tosa"]),
    "profile_compare": (["compare", "{q}", "--profile", "arm", "--data", "{x}"],
                        ["--profile", "arm", "cmsis-nn"]),
    "mode": (["run", "{float}", "--input", "{x}", "--output", "y.npy", "--mode", "fixed"],
             ["--mode", "fixed"]),
    "trace_size": (["run", "{float}", "--input", "{x}", "--output", "y.npy", "--trace", "t",
                    "--max-trace-size", "lots"], ["--max-trace-size", "lots"]),
    "trace_size_negative": (["run", "{float}", "--input", "{x}", "--output", "y.npy", "--trace",
                             "t", "--max-trace-size", "-5M"], ["--max-trace-size"]),
    "pack_zero": (["export", "{int}", "--format", "hex", "-o", "hw", "--pack", "0"], ["--pack"]),
    "unknown_command": (["frobnicate"], ["frobnicate"]),
    "missing_output": (["import", "model.h5"], ["-o/--output"]),
    "unknown_option": (["info", "{float}", "--colour"], ["--colour"]),
    "config_and_per_channel": (["quantize", "{float}", "--calib", "{x}", "-o", "q.refq.h5",
                                "--config", "per_tensor", "--per-channel"],
                               ["--config", "--per-channel"]),
    "cle_without_fold": (["quantize", "{float}", "--calib", "{x}", "-o", "q.refq.h5", "--cle",
                          "--no-fold-bn"], ["--cle", "--no-fold-bn"]),
    "percentile_other_scheme": (["quantize", "{float}", "--calib", "{x}", "-o", "q.refq.h5",
                                 "--percentile", "99"], ["--percentile"]),
    "no_calibration": (["quantize", "{float}", "-o", "q.refq.h5"], ["--calib"]),
    "sim_on_float": (["run", "{float}", "--mode", "sim", "--input", "{x}", "--output", "y.npy"],
                     ["float.refq.h5", "refq quantize"]),
    "int_on_float": (["run", "{float}", "--mode", "int", "--input", "{x}", "--output", "y.npy"],
                     ["float.refq.h5", "refq lower"]),
    "int_on_sim": (["run", "{q}", "--mode", "int", "--input", "{x}", "--output", "y.npy"],
                   ["q.refq.h5", "refq lower"]),
    "float_on_int": (["run", "{int}", "--mode", "float", "--input", "{x}", "--output", "y.npy"],
                     ["int.refq.h5", "--mode int"]),
    "codes_on_float": (["run", "{float}", "--codes", "--input", "{x}", "--output", "y.npy"],
                       ["--codes", "--mode int"]),
    "dtype_on_sim": (["run", "{q}", "--dtype", "float32", "--input", "{x}", "--output", "y.npy"],
                     ["--dtype"]),
    "trace_too_big": (["run", "{float}", "--input", "{x}", "--output", "y.npy", "--trace", "t",
                       "--max-trace-size", "1K"], ["--trace", "--max-trace-size", "1.0 KiB"]),
    "report_float_model": (["report", "{float}", "--data", "{x}"], ["float.refq.h5",
                                                                     "refq quantize"]),
    "lower_float_model": (["lower", "{float}", "--profile", "tflite", "-o", "i.refq.h5"],
                          ["float.refq.h5", "refq quantize"]),
    "export_float_model": (["export", "{float}", "--format", "hex", "-o", "hw"],
                           ["float.refq.h5", "refq lower"]),
    "export_format": (["export", "{int}", "--format", "vhdl", "-o", "hw"], ["vhdl"]),
    "trace_is_a_file": (["run", "{float}", "--input", "{x}", "--output", "y.npy", "--trace",
                          "{x}"], ["x.npy", "not a directory"]),
}


@pytest.mark.parametrize("case", sorted(USAGE))
def test_usage_and_mode_errors(capsys, tmp_path, files, monkeypatch, case):
    argv, needles = USAGE[case]
    monkeypatch.chdir(tmp_path)
    fails_cleanly(capsys, tmp_path, *[a.format(**files) for a in argv], needles=needles)


def _outputs(tmp_path):
    """{kind: (an output path that cannot be written, words of the error)}."""
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "a_dir").mkdir()
    long = "y" * 300 + ".npy"
    return {
        "is_directory": (tmp_path / "a_dir", ["a_dir"]),
        "under_a_file": (tmp_path / "a_file" / "y.npy", ["a_file"]),
        "name_too_long": (tmp_path / long, ["y" * 20]),
    }


@pytest.mark.parametrize("where", ["is_directory", "under_a_file", "name_too_long"])
@pytest.mark.parametrize("command", ["run", "quantize_o", "quantize_encodings", "lower",
                                     "report_json", "equalize"])
def test_unwritable_outputs(capsys, tmp_path, files, command, where):
    out, needles = _outputs(tmp_path)[where]
    argv = {
        "run": ["run", files["float"], "--input", files["x"], "--output", out],
        "quantize_o": ["quantize", files["float"], "--calib", files["x"], "-o", out],
        "quantize_encodings": ["quantize", files["float"], "--calib", files["x"], "-o", tmp_path / "q.h5",
                     "--encodings", out],
        "lower": ["lower", files["q"], "--profile", "onnx", "-o", out],
        "report_json": ["report", files["q"], "--data", files["x"], "--json", out],
        "equalize": ["equalize", files["float"], "-o", out],
    }[command]
    fails_cleanly(capsys, tmp_path, *argv, needles=needles)


def test_full_disk_is_one_line_and_keeps_the_old_file(capsys, tmp_path, files, monkeypatch):
    import errno

    out = tmp_path / "y.npy"
    np.save(out, np.zeros(3))
    real_save = np.save

    def full(f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    err = fails_cleanly(capsys, tmp_path, "run", files["float"], "--input", files["x"],
                        "--output", out, needles=["No space left on device", "disk space"])
    monkeypatch.setattr(np, "save", real_save)
    assert err.startswith("refq: error: ")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def _closed_pipe(argv):
    """Run `refq ARGV` with stdout a pipe that its reader has closed (before refq writes)."""
    p = subprocess.Popen([sys.executable, "-m", "refq", *map(str, argv)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    return p.returncode, err


@pytest.mark.parametrize("command", ["info", "info_json", "profiles"])
def test_closed_stdout_is_one_line(files, command):
    argv = {"info": ["info", files["float"]], "info_json": ["info", files["float"], "--json"],
            "profiles": ["profiles"]}[command]
    code, err = _closed_pipe(argv)
    assert code == 1, err
    assert err.startswith("refq: error: ") and len(err.strip().splitlines()) == 1, err
    assert "closed" in err and "Traceback" not in err


def test_help_names_every_default():
    """Every option of every command has help text; options with a value state their default."""
    from refq.cli import build_parser

    def walk(parser, path):
        for action in parser._actions:
            if action.dest == "help" or action.help == "==SUPPRESS==":
                continue
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    yield from walk(sub, path + [name])
                continue
            yield path, action

    for path, action in walk(build_parser(), ["refq"]):
        assert action.help, (path, action.dest)
        if action.option_strings and action.nargs != 0 and action.default is not None:
            assert "default" in action.help, (path, action.option_strings, action.help)


def test_file_modes_are_stated(capsys, tmp_path, files):
    for key, mode in (("float", "float"), ("q", "sim"), ("int", "int")):
        code, _, err = cli(capsys, "run", files[key], "--input", files["x"], "--output",
                           tmp_path / f"{key}.npy")
        assert code == 0, err
        assert err.startswith(f"refq: ran --mode {mode}: "), err


def test_integer_codes_in_and_out(capsys, tmp_path, files):
    """`refq run --codes`: integer codes of the input quantizer in, codes of the output out, equal
    to the integer model's own quantize -> run -> quantize of real values; codes out of range are
    refused naming the file, the input and the allowed range."""
    from refq.fixedpoint.run import input_encodings, output_encodings, run_int

    graph = refq.load(files["int"])
    (name, enc), = input_encodings(graph).items()
    codes = np.clip(np.round(X / enc.scale) + enc.zero_point, enc.qmin, enc.qmax).astype(enc.dtype)
    np.save(tmp_path / "codes.npy", codes)
    code, _, err = cli(capsys, "run", files["int"], "--codes", "--input", tmp_path / "codes.npy",
                       "--output", tmp_path / "y.npy")
    assert code == 0, err
    got = np.load(tmp_path / "y.npy", allow_pickle=False)
    ref, _ = run_int(graph, {name: codes}, codes=True)
    (out_name, out_enc), = output_encodings(graph).items()
    assert got.dtype == np.dtype(out_enc.dtype) and np.array_equal(got, ref[out_name])
    real, _ = run_int(graph, {name: (codes.astype(np.float64) - enc.zero_point) * enc.scale})
    np.testing.assert_allclose((got.astype(np.float64) - out_enc.zero_point) * out_enc.scale,
                               real[out_name], rtol=0, atol=1e-6)
    bad = codes.astype(np.int32)
    bad[0, 0, 0, 0] = enc.qmax + 1
    np.save(tmp_path / "bad.npy", bad)
    fails_cleanly(capsys, tmp_path, "run", files["int"], "--codes", "--input",
                  tmp_path / "bad.npy", "--output", tmp_path / "z.npy",
                  needles=["bad.npy", name, str(enc.qmax)])


def test_encodings_of_unfolded_weights_are_refused_on_a_folded_model(capsys, tmp_path, files):
    """AIMET encodings computed on the model with its batch norms unfolded clip the folded
    weights: refused naming the weight and --no-fold-bn, accepted with --no-fold-bn (or with
    --allow-weight-clipping)."""
    d = tmp_path / "work"
    d.mkdir()
    g = conv_graph()
    g.node("bn").params["gamma"] = np.array([6.0, 0.2, 3.0, 0.5], f32)  # folding scales channels
    model, enc = d / "m.refq.h5", d / "unfolded.encodings"
    refq.save(g, model)
    assert main(["quantize", str(model), "--calib", files["x"], "-o", str(d / "u.refq.h5"),
                 "--no-fold-bn", "--encodings", str(enc), "--quiet"]) == 0
    fails_cleanly(capsys, tmp_path, "quantize", model, "--load-encodings", enc, "-o",
                  d / "q.refq.h5", needles=["unfolded.encodings", "conv.weight", "--no-fold-bn"])
    for extra in (["--no-fold-bn"], ["--allow-weight-clipping"]):
        code, _, err = cli(capsys, "quantize", model, "--load-encodings", enc, "-o",
                           d / "q.refq.h5", "--quiet", *extra)
        assert code == 0, err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_devices_are_written_in_place_never_replaced(capsys, tmp_path, files):
    """An output that is a device is written, not renamed over: /dev/full fails with a full disk
    (one line) and stays a device; /dev/null takes the output."""
    import stat

    fails_cleanly(capsys, tmp_path, "run", files["float"], "--input", files["x"], "--output",
                  "/dev/full", needles=["/dev/full", "No space left on device"])
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    code, _, err = cli(capsys, "run", files["float"], "--input", files["x"], "--output",
                       "/dev/null", "--quiet")
    assert code == 0, err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_overflow_to_non_finite_outputs_is_said_in_one_line(capsys, tmp_path, files):
    """Finite inputs that overflow float32 give NaN/Inf outputs: the run succeeds (that is the
    definition in float32) but says so in one warning line, without NumPy's warnings; the
    simulation saturates at the grid's ends and says nothing."""
    np.save(tmp_path / "big.npy", np.full((2, 6, 6, 3), 3e38, f32))
    code, _, err = cli(capsys, "run", files["float"], "--input", tmp_path / "big.npy",
                       "--output", tmp_path / "y.npy", "--dtype", "float32", "--quiet")
    assert code == 0
    assert err == ("refq: warning: output 'logits' holds 6 non-finite values (NaN/Inf) from finite "
                   "inputs (float32 overflow? try --dtype float64)\n")
    code, _, err = cli(capsys, "run", files["q"], "--input", tmp_path / "big.npy",
                       "--output", tmp_path / "y.npy", "--quiet")
    assert code == 0 and err == ""
    assert np.isfinite(np.load(tmp_path / "y.npy")).all()
