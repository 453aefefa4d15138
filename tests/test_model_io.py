"""The refq model format: exact round trips, deterministic and atomic saving (load errors:
test_model_io_load.py)."""
from __future__ import annotations

import errno
import json
import os

import h5py
import numpy as np
import pytest

import refq
from refq.errors import OutputError, RefqError
from refq.graph import Graph, Node, TensorSpec
from refq.model_io import FORMAT_VERSION, load, read_graph_json, save


def bn_params(c, dtype, seed):
    rng = np.random.default_rng(seed)
    p = {"gamma": rng.normal(size=c), "beta": rng.normal(size=c), "mean": rng.normal(size=c),
         "variance": rng.uniform(0.1, 2, c)}
    p = {k: v.astype(dtype) for k, v in p.items()}
    # values whose bits a sloppy round trip would change
    p["beta"][0] = -0.0
    p["mean"][0] = np.finfo(dtype).smallest_subnormal
    p["gamma"][0] = np.nextafter(dtype(1), dtype(2))
    return p


def make_graph():
    return Graph(
        [TensorSpec("in/0%", (None, 3, 2, 5), "float32")],
        ["out/prob", "block_1/bn%2F"],
        [
            Node("block_1/bn", "batch_norm", ["in/0%"], ["block_1/bn:0"], {"epsilon": 1e-5},
                 bn_params(5, np.float32, 1)),
            Node("block_1/bn%2F", "batch_norm", ["block_1/bn:0"], ["block_1/bn%2F"],
                 {"epsilon": 0.001, "axis": 3}, bn_params(5, np.float64, 2)),
            Node("act%", "hard_sigmoid", ["block_1/bn%2F"], ["a"], {"alpha": 0.2, "beta": 0.5}),
            Node("pad", "zero_pad2d", ["a"], ["p"], {"pads": [1, 0, 0, 2]}),
            Node("flat", "flatten", ["p"], ["f"]),
            Node("out/prob", "softmax", ["f"], ["out/prob"]),
        ],
        name="round/trip%model",
        meta={"source": "unit test", "nested": {"list": [1, 2.5, None, "x"]}},
    )


def bits(a):
    return a.view(np.uint8).tobytes()


# ---- round trips ----------------------------------------------------------------------------
def test_round_trip_is_exact(tmp_path):
    g = make_graph()
    path = tmp_path / "m.refq.h5"
    save(g, path)
    h = load(path)
    assert h.to_json() == g.to_json()
    assert json.dumps(h.to_json(), sort_keys=True) == json.dumps(g.to_json(), sort_keys=True)
    assert [n.name for n in h.nodes] == [n.name for n in g.nodes]
    for n in g.nodes:
        m = h.node(n.name)
        assert sorted(m.params) == sorted(n.params)
        for k, v in n.params.items():
            w = m.params[k]
            assert isinstance(w, np.ndarray)
            assert w.dtype == v.dtype and w.shape == v.shape, (n.name, k)
            assert bits(w) == bits(v), (n.name, k)
    assert h.node("block_1/bn").params["gamma"].dtype == np.float32
    assert h.node("block_1/bn%2F").params["gamma"].dtype == np.float64
    assert h.meta == g.meta and h.name == "round/trip%model"
    assert h.inputs == g.inputs
    # the escaped names do not collide in the file
    with h5py.File(path, "r") as f:
        assert sorted(f["params"]) == sorted(["block_1%2Fbn", "block_1%2Fbn%252F"])
        assert f.attrs["refq_format"] == FORMAT_VERSION
        assert json.loads(f.attrs["graph"]) == g.to_json()


def test_round_trip_outputs_agree(tmp_path):
    g = make_graph()
    save(g, tmp_path / "m.refq.h5")
    h = load(tmp_path / "m.refq.h5")
    x = np.random.default_rng(0).normal(size=(2, 3, 2, 5)).astype(np.float32)
    a, b = refq.run(g, x), refq.run(h, x)
    assert a.keys() == b.keys()
    for k in a:
        assert bits(a[k]) == bits(b[k])


def test_save_twice_gives_identical_bytes_and_round_trip_again(tmp_path):
    g = make_graph()
    save(g, tmp_path / "a.refq.h5")
    save(g, tmp_path / "b.refq.h5")
    save(load(tmp_path / "a.refq.h5"), tmp_path / "c.refq.h5")
    a = (tmp_path / "a.refq.h5").read_bytes()
    assert a == (tmp_path / "b.refq.h5").read_bytes()
    assert a == (tmp_path / "c.refq.h5").read_bytes()


def test_read_graph_json(tmp_path):
    g = make_graph()
    save(g, tmp_path / "m.refq.h5")
    d = read_graph_json(tmp_path / "m.refq.h5")
    assert d == g.to_json()
    assert [n["name"] for n in d["nodes"]] == [n.name for n in g.topological_order()]


def test_save_validates_and_does_not_write_invalid_graph(tmp_path):
    g = make_graph()
    g.node("flat").op = "no_such_op"
    with pytest.raises(RefqError):
        save(g, tmp_path / "bad.refq.h5")
    assert os.listdir(tmp_path) == []


def test_save_writes_nodes_in_topological_order(tmp_path):
    g = make_graph()
    g.nodes.reverse()
    save(g, tmp_path / "m.refq.h5")
    h = load(tmp_path / "m.refq.h5")
    assert [n.name for n in h.nodes] == [n.name for n in make_graph().nodes]


# ---- atomic saving --------------------------------------------------------------------------
def test_failed_save_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.refq.h5"
    save(make_graph(), path)
    before = path.read_bytes()

    calls = []
    real = h5py.Group.create_dataset

    def failing(self, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("name"))
        if len(calls) == 3:
            raise RuntimeError("disk full (simulated)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    g = make_graph()
    g.node("block_1/bn").params["gamma"] += 1
    with pytest.raises(RuntimeError, match="simulated"):
        save(g, path)
    assert len(calls) == 3
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.refq.h5"]
    monkeypatch.undo()
    load(path).validate()


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    def failing(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(KeyboardInterrupt):
        save(make_graph(), tmp_path / "sub" / "deeper" / "m.refq.h5")
    assert os.listdir(tmp_path) == []  # neither the temporary file nor the directories made for it


def _dead_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_name_carries_the_pid_and_fits(tmp_path):
    from refq.atomic import atomic_path

    long_name = "m" * 250 + ".npy"
    for name in ("m.npy", long_name):
        with atomic_path(tmp_path / name) as tmp:
            base = os.path.basename(tmp)
            assert base.startswith(f".tmp-{os.getpid()}-"), base
            assert len(base.encode()) <= 255
            with open(tmp, "w") as f:
                f.write("x")
        assert (tmp_path / name).read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npy", long_name])


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    from refq.atomic import save_npy

    dead = _dead_pid()
    stale = tmp_path / f".tmp-{dead}-ab12cd_3-m.npy"
    alive = tmp_path / f".tmp-{os.getpid()}-zz99zz99-m.npy"      # a writer still running
    other = tmp_path / f".tmp-{dead}-ab12cd_3-other.npy"         # another target's
    for p in (stale, alive, other):
        p.write_bytes(b"partial")
    save_npy(tmp_path / "m.npy", np.arange(3))
    assert not stale.exists() and alive.exists() and other.exists()
    assert np.load(tmp_path / "m.npy").tolist() == [0, 1, 2]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_write_failure_is_one_output_error_and_keeps_the_target(tmp_path, monkeypatch, err):
    from refq.atomic import save_npy

    path = tmp_path / "m.refq.h5"
    save(make_graph(), path)
    before = path.read_bytes()

    def failing(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    monkeypatch.setattr(np, "save", failing)
    for write in (lambda: save(make_graph(), path), lambda: save_npy(path, np.zeros(2))):
        with pytest.raises(OutputError) as info:
            write()
        msg = str(info.value)
        assert str(path) in msg and os.strerror(err) in msg and "\n" not in msg
        assert path.read_bytes() == before
        assert os.listdir(tmp_path) == ["m.refq.h5"]


@pytest.mark.parametrize("target, needle", [
    ("adir", "existing directory"), ("afile/x.npy", "is a file, not a directory"),
    ("afile/deeper/x.npy", "is a file, not a directory"), ("x" * 300, "longer than"),
    ("adir/", "not a file name")])
def test_unwritable_output_paths(tmp_path, target, needle):
    from refq.atomic import save_npy

    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("text")
    with pytest.raises(OutputError, match=needle):
        save_npy(os.path.join(tmp_path, target), np.zeros(2))
    assert sorted(os.listdir(tmp_path)) == ["adir", "afile"]
    assert os.listdir(tmp_path / "adir") == []
