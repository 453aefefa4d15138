"""The refq model format: exact round trips, deterministic and atomic saving, load errors."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

import refq
from refq.errors import FormatError, ParamError, RefqError
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
        save(make_graph(), tmp_path / "sub" / "m.refq.h5")
    assert os.listdir(tmp_path / "sub") == []


# ---- load errors ----------------------------------------------------------------------------
def load_error(path, cls=FormatError, *needles):
    with pytest.raises(RefqError) as info:
        load(path)
    assert type(info.value) is cls, (type(info.value), str(info.value))
    msg = str(info.value)
    assert str(path) in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def test_missing_file(tmp_path):
    load_error(tmp_path / "nope.refq.h5", FormatError, "no such file")
    with pytest.raises(FormatError, match="no such file"):
        read_graph_json(tmp_path / "nope.refq.h5")


def test_not_hdf5(tmp_path):
    p = tmp_path / "model.refq.h5"
    p.write_text("this is not an HDF5 file\n" * 20)
    load_error(p, FormatError, "HDF5")
    empty = tmp_path / "empty.refq.h5"
    empty.write_bytes(b"")
    load_error(empty, FormatError)


def test_truncated_file(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    data = p.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 100):
        t = tmp_path / f"cut{cut}.refq.h5"
        t.write_bytes(data[:cut])
        load_error(t, FormatError)


def test_keras_file_suggests_import(tmp_path):
    p = tmp_path / "keras_model.h5"
    with h5py.File(p, "w") as f:
        f.attrs["keras_version"] = "2.13.1"
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {}})
        f.create_group("model_weights")
    load_error(p, FormatError, "refq_format", "refq import")
    q = tmp_path / "weights_only.h5"
    with h5py.File(q, "w") as f:
        f.create_group("model_weights")
    load_error(q, FormatError, "refq import")
    r = tmp_path / "other.h5"
    with h5py.File(r, "w") as f:
        f.create_dataset("data", data=np.arange(3))
    msg = load_error(r, FormatError, "not a refq model")
    assert "import" not in msg


def rewrite(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize("version", ["2.0", "0.9", "11", 2])
def test_unsupported_major_version(tmp_path, version):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, lambda f: f.attrs.__setitem__("refq_format", version))
    load_error(p, FormatError, "version", str(version), "upgrade")
    with pytest.raises(FormatError, match="version"):
        read_graph_json(p)


def test_newer_minor_version_is_read(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    major = FORMAT_VERSION.split(".")[0]
    rewrite(p, lambda f: f.attrs.__setitem__("refq_format", f"{major}.7"))
    assert load(p).to_json() == make_graph().validate().to_json()


def _edit_json(fn):
    def apply(f):
        d = json.loads(f.attrs["graph"])
        f.attrs["graph"] = json.dumps(fn(d))
    return apply


def _set(key, value):
    def fn(d):
        d[key] = value
        return d
    return fn


def _node_field(i, key, value):
    def fn(d):
        if value is _DEL:
            del d["nodes"][i][key]
        else:
            d["nodes"][i][key] = value
        return d
    return fn


_DEL = object()


@pytest.mark.parametrize("edit", [
    lambda f: f.attrs.__setitem__("graph", "{not json"),
    lambda f: f.attrs.__setitem__("graph", "[1, 2, 3]"),
    lambda f: f.attrs.__setitem__("graph", ""),
    lambda f: f.attrs.__delitem__("graph"),
    lambda f: f.attrs.__setitem__("graph", np.arange(4)),
    _edit_json(lambda d: {k: v for k, v in d.items() if k != "nodes"}),
    _edit_json(lambda d: {k: v for k, v in d.items() if k != "inputs"}),
    _edit_json(lambda d: {k: v for k, v in d.items() if k != "outputs"}),
    _edit_json(_set("nodes", {"a": 1})),
    _edit_json(_set("nodes", [1, 2])),
    _edit_json(_set("inputs", [{"shape": [None, 3]}])),
    _edit_json(_set("inputs", [{"name": "x", "shape": 5}])),
    _edit_json(_node_field(0, "op", _DEL)),
    _edit_json(_node_field(0, "name", _DEL)),
    _edit_json(_node_field(0, "inputs", 7)),
    _edit_json(_node_field(2, "name", 5)),
    _edit_json(_node_field(2, "name", None)),
    _edit_json(_node_field(2, "attrs", [1, 2])),
], ids=["not-json", "list", "empty", "absent", "array", "no-nodes", "no-inputs", "no-outputs",
        "nodes-dict", "nodes-ints", "input-no-name", "input-shape-int", "node-no-op",
        "node-no-name", "node-inputs-int", "node-name-int", "node-name-null", "attrs-list"])
def test_malformed_graph_json(tmp_path, edit):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, edit)
    load_error(p, FormatError)


def test_malformed_graph_json_is_a_format_error(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, lambda f: f.attrs.__setitem__("graph", "{not json"))
    load_error(p, FormatError, "graph")


def test_missing_params_dataset(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, lambda f: f.__delitem__("params/block_1%2Fbn/variance"))
    load_error(p, ParamError, "'block_1/bn'", "'variance'", "missing")
    rewrite(p, lambda f: f.__delitem__("params/block_1%2Fbn"))
    load_error(p, ParamError, "'block_1/bn'", "missing")


def test_bad_params_in_file(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)

    def wrong_shape(f):
        del f["params/block_1%2Fbn/gamma"]
        f["params/block_1%2Fbn/gamma"] = np.ones(4, np.float32)
    rewrite(p, wrong_shape)
    load_error(p, ParamError, "'block_1/bn'", "'gamma'")

    def nan(f):
        f["params/block_1%2Fbn/gamma"][...] = np.array([1, np.nan, 1, 1, 1], np.float32)
    save(make_graph(), p)
    rewrite(p, nan)
    load_error(p, ParamError, "'block_1/bn'", "'gamma'", "NaN")

    def strings(f):
        del f["params/block_1%2Fbn/gamma"]
        f["params/block_1%2Fbn/gamma"] = np.array([b"a", b"b", b"c", b"d", b"e"])
    save(make_graph(), p)
    rewrite(p, strings)
    load_error(p, ParamError, "'block_1/bn'", "'gamma'")

    def extra(f):
        f["params/block_1%2Fbn/kernel"] = np.ones(5, np.float32)
    save(make_graph(), p)
    rewrite(p, extra)
    load_error(p, ParamError, "'block_1/bn'", "'kernel'")

    def group_not_dataset(f):
        del f["params/block_1%2Fbn/gamma"]
        f.create_group("params/block_1%2Fbn/gamma")
    save(make_graph(), p)
    rewrite(p, group_not_dataset)
    load_error(p, FormatError, "gamma")


def test_invalid_graph_in_file_names_the_file(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, _edit_json(_node_field(3, "op", "teleport")))
    load_error(p, refq.GraphError, "teleport", "'pad'")


def test_damaged_file_raises_only_refq_errors(tmp_path):
    """Overwriting any 48 bytes of a model either leaves it loadable or gives a RefqError."""
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    data = p.read_bytes()
    damaged = tmp_path / "damaged.refq.h5"
    outcomes = set()
    for off in range(0, len(data), 48):
        b = bytearray(data)
        b[off:off + 48] = b"\xff" * 48
        damaged.write_bytes(bytes(b))
        for fn in (load, read_graph_json):
            try:
                fn(damaged)
                outcomes.add("ok")
            except RefqError as e:
                assert str(damaged) in str(e)
                outcomes.add(type(e).__name__)
    assert "FormatError" in outcomes
