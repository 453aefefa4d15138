"""The `refq` command, driven in-process through `refq.cli.main` and once as `python -m refq`."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import refq
from cli_helpers import assert_error, cli
from refq.graph import Graph, Node, TensorSpec
from refq.runtime import run


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8).tobytes()


def single_graph():
    """x[N,2,2,3] -> batch_norm -> relu -> flatten -> dense(4) -> softmax."""
    rng = np.random.default_rng(7)
    bn = {"gamma": np.array([1.0, 2.0, 0.5], np.float32), "beta": np.zeros(3, np.float32),
          "mean": np.array([0.1, -0.1, 0.0], np.float32), "variance": np.ones(3, np.float32)}
    return Graph(
        [TensorSpec("x", (None, 2, 2, 3), "float32")], ["prob"],
        [
            Node("block/bn", "batch_norm", ["x"], ["block/bn:0"], {"epsilon": 1e-3}, bn),
            Node("block/relu", "relu", ["block/bn:0"], ["block/relu:0"]),
            Node("flat", "flatten", ["block/relu:0"], ["flat:0"]),
            Node("fc", "dense", ["flat:0"], ["logits"], {},
                 {"weight": rng.normal(size=(4, 12)).astype(np.float32),
                  "bias": rng.normal(size=4).astype(np.float32)}),
            Node("sm", "softmax", ["logits"], ["prob"]),
        ], name="tiny")


def two_graph():
    """a[N,3] * b[N,3] -> (product, sigmoid(product)): two inputs, two outputs."""
    return Graph([TensorSpec("a", (None, 3)), TensorSpec("b", (None, 3))], ["prod", "sig"],
                 [Node("mul", "multiply", ["a", "b"], ["prod"]),
                  Node("sig", "sigmoid", ["prod"], ["sig"])], name="two")


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "tiny.refq.h5"
    refq.save(single_graph(), path)
    return str(path)


@pytest.fixture
def x_npy(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 2, 2, 3)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    return str(path), x


# ---- info -----------------------------------------------------------------------------------
def test_info_table(capsys, model):
    code, out, err = cli(capsys, "info", model)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("tiny (a float model): inputs x [None, 2, 2, 3] float32; outputs prob")
    assert lines[1].split() == ["node", "op", "output", "shape", "params", "MACs"]
    rows = {ln.split()[0]: ln.split() for ln in lines[3:-3]}
    assert list(rows) == ["block/bn", "block/relu", "flat", "fc", "sm"]
    assert rows["block/bn"] == ["block/bn", "batch_norm", "(N,", "2,", "2,", "3)", "12", "12"]
    assert rows["flat"] == ["flat", "flatten", "(N,", "12)", "0", "0"]
    assert rows["fc"] == ["fc", "dense", "(N,", "4)", "52", "48"]
    assert rows["sm"][-2:] == ["0", "0"]
    assert lines[-2].split() == ["total", "5", "nodes", "64", "60"]
    assert lines[-1] == ("AIMET compression cost of the 1 conv2d/dense layer: 48 MACs, "
                         "48 weights (no biases)")


def test_info_json(capsys, model):
    code, out, err = cli(capsys, "info", model, "--json")
    assert code == 0 and err == ""
    assert json.loads(out) == single_graph().validate().to_json()


def test_info_thousands_separator(capsys, tmp_path):
    g = Graph([TensorSpec("x", (None, 40))], ["y"],
              [Node("fc", "dense", ["x"], ["y"], {}, {"weight": np.ones((50, 40))})])
    refq.save(g, tmp_path / "m.refq.h5")
    code, out, _ = cli(capsys, "info", tmp_path / "m.refq.h5")
    assert code == 0
    assert out.splitlines()[-2].split() == ["total", "1", "nodes", "2,000", "2,000"]


# ---- run ------------------------------------------------------------------------------------
def test_run_npy(capsys, tmp_path, model, x_npy):
    xpath, x = x_npy
    code, out, err = cli(capsys, "run", model, "--input", xpath, "--output", tmp_path / "y.npy")
    assert code == 0 and err == f"refq: ran --mode float: {model} holds a float model\n"
    assert "y.npy" in out and "[5, 4]" in out
    y = np.load(tmp_path / "y.npy", allow_pickle=False)
    ref = run(single_graph(), x)["prob"]
    assert y.dtype == np.float64 and bits(y) == bits(ref)
    assert sorted(os.listdir(tmp_path)) == ["tiny.refq.h5", "x.npy", "y.npy"]  # no temp files


def test_run_quiet_prints_nothing(capsys, tmp_path, model, x_npy):
    code, out, err = cli(capsys, "run", model, "--input", x_npy[0], "--output",
                         tmp_path / "y.npy", "--quiet")
    assert code == 0 and out == "" and err == ""


def test_run_npz_two_inputs_two_outputs(capsys, tmp_path):
    refq.save(two_graph(), tmp_path / "two.refq.h5")
    a = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    b = np.array([[2.0, 2.0, 2.0], [-1.0, 0.5, 4.0]])
    np.savez(tmp_path / "in.npz", a=a, b=b)
    code, out, err = cli(capsys, "run", tmp_path / "two.refq.h5", "--input", tmp_path / "in.npz",
                         "--output", tmp_path / "out.npz")
    assert code == 0, err
    with np.load(tmp_path / "out.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["prod", "sig"]
        np.testing.assert_array_equal(z["prod"], a * b)
        ref = run(two_graph(), {"a": a, "b": b})
        assert bits(z["sig"]) == bits(ref["sig"])
    # several outputs cannot go to one .npy
    code, out, err = cli(capsys, "run", tmp_path / "two.refq.h5", "--input", tmp_path / "in.npz",
                         "--output", tmp_path / "out.npy")
    assert_error(code, err, "two.refq.h5", "prod", ".npz")
    assert not (tmp_path / "out.npy").exists()


def test_run_single_output_to_npz(capsys, tmp_path, model, x_npy):
    code, _, err = cli(capsys, "run", model, "--input", x_npy[0], "--output", tmp_path / "y.npz")
    assert code == 0, err
    with np.load(tmp_path / "y.npz") as z:
        assert z.files == ["prob"]
        assert bits(z["prob"]) == bits(run(single_graph(), x_npy[1])["prob"])


def test_run_trace(capsys, tmp_path, model, x_npy):
    tdir = tmp_path / "trace"
    code, out, err = cli(capsys, "run", model, "--input", x_npy[0], "--output", tmp_path / "y.npy",
                         "--trace", tdir)
    assert code == 0, err
    assert "trace" in out
    index = json.loads((tdir / "index.json").read_text())
    ref = run(single_graph(), x_npy[1], trace=True)
    assert set(index) == set(ref) == {"x", "block/bn:0", "block/relu:0", "flat:0", "logits",
                                      "prob"}
    files = sorted(os.listdir(tdir))
    assert files == sorted(["index.json", *index.values()])
    assert len(set(index.values())) == len(index)
    assert index["block/bn:0"] == "block%2Fbn%3A0.npy"
    for name, fname in index.items():
        arr = np.load(tdir / fname, allow_pickle=False)
        assert arr.dtype == ref[name].dtype and bits(arr) == bits(ref[name]), name
    assert bits(np.load(tmp_path / "y.npy")) == bits(ref["prob"])


def test_run_float32(capsys, tmp_path, model, x_npy):
    code, _, err = cli(capsys, "run", model, "--input", x_npy[0], "--output", tmp_path / "y.npy",
                       "--dtype", "float32", "--trace", tmp_path / "t")
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32
    assert bits(y) == bits(run(single_graph(), x_npy[1], dtype=np.float32)["prob"])
    index = json.loads((tmp_path / "t" / "index.json").read_text())
    for fname in index.values():
        assert np.load(tmp_path / "t" / fname).dtype == np.float32


def test_run_batch_size(capsys, tmp_path, model, x_npy):
    code, _, err = cli(capsys, "run", model, "--input", x_npy[0], "--output", tmp_path / "y.npy",
                       "--batch-size", "2")
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (5, 4)
    assert bits(y) == bits(run(single_graph(), x_npy[1], batch_size=2)["prob"])
    np.testing.assert_allclose(y, run(single_graph(), x_npy[1])["prob"], rtol=1e-13)
    code, _, err = cli(capsys, "run", model, "--input", x_npy[0], "--output", tmp_path / "z.npy",
                       "--batch-size", "0")
    assert_error(code, err, "--batch-size", "positive integer")


# ---- errors ---------------------------------------------------------------------------------
def test_missing_model(capsys, tmp_path, x_npy):
    missing = tmp_path / "nope.refq.h5"
    assert_error(*cli(capsys, "info", missing)[::2], missing, "no such file")
    assert_error(*cli(capsys, "info", missing, "--json")[::2], missing)
    code, _, err = cli(capsys, "run", missing, "--input", x_npy[0], "--output", tmp_path / "y.npy")
    assert_error(code, err, missing)
    assert not (tmp_path / "y.npy").exists()


def test_non_hdf5_model(capsys, tmp_path, x_npy):
    bad = tmp_path / "model.refq.h5"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert_error(*cli(capsys, "info", bad)[::2], bad, "HDF5")
    code, _, err = cli(capsys, "run", bad, "--input", x_npy[0], "--output", tmp_path / "y.npy")
    assert_error(code, err, bad)


def test_keras_file_given_to_info(capsys, tmp_path):
    import h5py

    p = tmp_path / "keras.h5"
    with h5py.File(p, "w") as f:
        f.attrs["model_config"] = "{}"
    assert_error(*cli(capsys, "info", p)[::2], p, "refq import")


def test_input_of_wrong_shape(capsys, tmp_path, model):
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 3, 3), np.float32))
    code, _, err = cli(capsys, "run", model, "--input", tmp_path / "bad.npy", "--output",
                       tmp_path / "y.npy")
    assert_error(code, err, tmp_path / "bad.npy", "'x'", "[2, 3, 3, 3]")
    assert not (tmp_path / "y.npy").exists()


def test_input_of_wrong_dtype(capsys, tmp_path, model):
    np.save(tmp_path / "ints.npy", np.zeros((2, 2, 2, 3), np.int32))
    code, _, err = cli(capsys, "run", model, "--input", tmp_path / "ints.npy", "--output",
                       tmp_path / "y.npy")
    assert_error(code, err, tmp_path / "ints.npy", "'x'", "int32")


class Boom:
    """Unpickling this would run code: the CLI must refuse before that."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_object_npy_is_refused(capsys, tmp_path, model):
    p = tmp_path / "obj.npy"
    arr = np.empty((1, 2, 2, 3), dtype=object)
    arr[...] = 1.0
    arr[0, 0, 0, 0] = Boom()
    np.save(p, arr, allow_pickle=True)
    code, _, err = cli(capsys, "run", model, "--input", p, "--output", tmp_path / "y.npy")
    assert_error(code, err, p)
    assert not (tmp_path / "y.npy").exists()


def test_pickled_object_npz_is_refused(capsys, tmp_path):
    refq.save(two_graph(), tmp_path / "two.refq.h5")
    arr = np.empty((1, 3), dtype=object)
    arr[...] = 1.0
    np.savez(tmp_path / "in.npz", a=arr, b=np.ones((1, 3)))
    code, _, err = cli(capsys, "run", tmp_path / "two.refq.h5", "--input", tmp_path / "in.npz",
                       "--output", tmp_path / "y.npz")
    assert_error(code, err, "in.npz")


def test_plain_pickle_and_corrupt_inputs_are_refused(capsys, tmp_path, model):
    cases = {"pickle.npy": pickle.dumps(np.zeros((1, 2, 2, 3))),
             "text.npy": b"1 2 3\n",
             "empty.npy": b"",
             "broken.npz": b"PK\x03\x04" + bytes(64)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        code, _, err = cli(capsys, "run", model, "--input", tmp_path / name, "--output",
                           tmp_path / "y.npy")
        assert_error(code, err, name)
    rng = np.random.default_rng(0)
    np.savez_compressed(tmp_path / "c.npz", x=rng.normal(size=(40, 2, 2, 3)))
    good = bytearray((tmp_path / "c.npz").read_bytes())
    for lo in (40, 120, 200, 400):  # zeroed bytes inside the compressed member
        bad = good.copy()
        bad[lo:lo + 60] = bytes(60)
        (tmp_path / f"corrupt{lo}.npz").write_bytes(bytes(bad))
        code, _, err = cli(capsys, "run", model, "--input", tmp_path / f"corrupt{lo}.npz",
                           "--output", tmp_path / "y.npy")
        assert_error(code, err, f"corrupt{lo}.npz")
    truncated = tmp_path / "trunc.npy"
    np.save(truncated, np.zeros((2, 2, 2, 3), np.float32))
    truncated.write_bytes(truncated.read_bytes()[:-10])
    code, _, err = cli(capsys, "run", model, "--input", truncated, "--output", tmp_path / "y.npy")
    assert_error(code, err, "trunc.npy")


def test_missing_input_file(capsys, tmp_path, model):
    code, _, err = cli(capsys, "run", model, "--input", tmp_path / "none.npy", "--output",
                       tmp_path / "y.npy")
    assert_error(code, err, "none.npy", "no such file")


def test_npz_with_wrong_names(capsys, tmp_path):
    refq.save(two_graph(), tmp_path / "two.refq.h5")
    np.savez(tmp_path / "in.npz", a=np.ones((1, 3)), c=np.ones((1, 3)))
    code, _, err = cli(capsys, "run", tmp_path / "two.refq.h5", "--input", tmp_path / "in.npz",
                       "--output", tmp_path / "y.npz")
    assert_error(code, err, tmp_path / "in.npz", "missing ['b']", "unknown ['c']")


# ---- as a separate process ------------------------------------------------------------------
def test_python_dash_m(tmp_path, model, x_npy):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    r = subprocess.run([sys.executable, "-m", "refq", "run", model, "--input", x_npy[0],
                        "--output", str(tmp_path / "y.npy"), "--trace", str(tmp_path / "t")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert bits(np.load(tmp_path / "y.npy")) == bits(run(single_graph(), x_npy[1])["prob"])
    assert (tmp_path / "t" / "index.json").exists()

    bad = tmp_path / "not_a_model.refq.h5"
    bad.write_text("hello")
    r = subprocess.run([sys.executable, "-m", "refq", "info", str(bad)], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith("refq: error: ") and str(bad) in r.stderr
    assert "Traceback" not in r.stderr
