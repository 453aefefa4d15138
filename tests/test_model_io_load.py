"""The refq model format: load errors, the checksums over every part, malformed graph JSON."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import refq
from refq.errors import FormatError, GraphError, ParamError, RefqError
from refq.graph import Graph, Node, TensorSpec
from refq.model_io import (CHECKSUMS, FORMAT_VERSION, compute_checksums, load, load_section,
                           read_graph_json, save)
from test_model_io import bits, make_graph


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


def rewrite(path, fn, reseal=True):
    """Edit an h5py file in place; with `reseal`, store the digests of the edited parts, so that
    the checks behind the checksums are reached."""
    with h5py.File(path, "r+") as f:
        fn(f)
        if reseal:
            f.attrs[CHECKSUMS] = json.dumps(compute_checksums(f))


@pytest.mark.parametrize("version", ["2.0", "0.9", "11", "1.x", ""])
def test_unsupported_major_version(tmp_path, version):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, lambda f: f.attrs.__setitem__("refq_format", version))
    load_error(p, FormatError, "version", repr(version), "upgrade")
    with pytest.raises(FormatError, match="version"):
        read_graph_json(p)


def test_version_not_text(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, lambda f: f.attrs.__setitem__("refq_format", 2))
    load_error(p, FormatError, "refq_format", "not a text attribute")


def test_newer_minor_version_is_read(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    major = FORMAT_VERSION.split(".")[0]
    rewrite(p, lambda f: f.attrs.__setitem__("refq_format", f"{major}.7"))
    assert load(p).to_json() == make_graph().validate().to_json()


def test_version_without_checksums_is_refused(tmp_path):
    """A 1.0 file (no digests), or a damaged version reading 1.0, does not switch checking off."""
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, lambda f: f.attrs.__setitem__("refq_format", "1.0"))
    load_error(p, FormatError, "1.0", "no checksums", "refq import")
    rewrite(p, lambda f: (f.attrs.__setitem__("refq_format", FORMAT_VERSION),
                          f.attrs.__delitem__(CHECKSUMS)), reseal=False)
    load_error(p, FormatError, CHECKSUMS, "missing", "re-create")


def test_checksums_cover_every_part(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p, sections={"encodings": {"a": [1.5, 2]}, "extra": {}})
    with h5py.File(p, "r") as f:
        stored = json.loads(f.attrs[CHECKSUMS])
        assert stored == compute_checksums(f)
    assert sorted(stored) == sorted(
        ["refq_format", "graph", "/encodings", "/extra"]
        + [f"/params/{k}/{q}" for k in ("block_1%2Fbn", "block_1%2Fbn%252F")
           for q in ("gamma", "beta", "mean", "variance")])
    assert load_section(p, "encodings") == {"a": [1.5, 2]}


def _epsilon_digit(f):
    f.attrs["graph"] = f.attrs["graph"].replace('"epsilon": 0.001', '"epsilon": 0.002')


def _section_digit(f):
    f["encodings"].attrs["json"] = f["encodings"].attrs["json"].replace("1.5", "1.6")


def _param_value(f):
    f["params/block_1%2Fbn/gamma"][0] = 7.0


def _param_dtype(f):  # same bytes, another dtype: Fletcher-32 still passes
    data = f["params/block_1%2Fbn%252F/mean"][()]
    del f["params/block_1%2Fbn%252F/mean"]
    f.create_dataset("params/block_1%2Fbn%252F/mean", data=data.view(np.int64), fletcher32=True)


def _param_shape(f):
    data = f["params/block_1%2Fbn/mean"][()]
    del f["params/block_1%2Fbn/mean"]
    f.create_dataset("params/block_1%2Fbn/mean", data=data.reshape(5, 1), fletcher32=True)


def _extra_section(f):
    f.create_group("sneaked").attrs["json"] = "{}"


def _drop_section(f):
    del f["encodings"]


def _extra_param(f):
    f["params/block_1%2Fbn/kernel"] = np.ones(5, np.float32)


@pytest.mark.parametrize("edit, needles", [
    (_epsilon_digit, ("the graph JSON", "checksum")),
    (_section_digit, ("section '/encodings'", "checksum")),
    (_param_value, ("parameter /params/block_1%2Fbn/gamma",)),
    (_param_dtype, ("parameter /params/block_1%2Fbn%252F/mean", "checksum")),
    (_param_shape, ("parameter /params/block_1%2Fbn/mean", "checksum")),
    (_extra_section, ("section '/sneaked'", "no checksum")),
    (_drop_section, ("section '/encodings'", "missing")),
    (_extra_param, ("/params/block_1%2Fbn/kernel", "no checksum")),
], ids=["epsilon-digit", "section-digit", "param-value", "param-dtype", "param-shape",
        "extra-section", "dropped-section", "extra-param"])
def test_edits_break_the_checksums(tmp_path, edit, needles):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p, sections={"encodings": {"a": [1.5, 2]}})
    rewrite(p, edit, reseal=False)
    msg = load_error(p, FormatError, *needles)
    assert "modified or damaged" in msg and "re-create" in msg


def _flip_outcome(path, reference):
    """'same' when `path` loads as `reference` bit for bit, else the one-line FormatError."""
    try:
        graph = load(path)
        doc = load_section(path, "encodings")
    except FormatError as e:
        msg = str(e)
        assert "\n" not in msg and str(path) in msg, msg
        return "error"
    ref_graph, ref_doc = reference
    assert json.dumps(graph.to_json()) == json.dumps(ref_graph.to_json())
    assert doc == ref_doc
    for n, m in zip(graph.nodes, ref_graph.nodes):
        assert sorted(n.params) == sorted(m.params)
        for k in n.params:
            a, b = n.params[k], m.params[k]
            assert a.dtype == b.dtype and a.shape == b.shape and bits(a) == bits(b)
    return "same"


def test_every_flipped_byte_fails_cleanly_or_changes_nothing(tmp_path):
    """Property: a model with one byte changed (a seeded sample of positions, plus every byte of
    the JSON attributes with its lowest bit flipped: 0.001 -> 0.000) either loads identically or
    raises a one-line FormatError naming the file; never a different model."""
    g = Graph([TensorSpec("x", (None, 2), "float32")], ["y"],
              [Node("fc", "dense", ["x"], ["y"], {},
                    {"weight": np.array([[0.5, -1.0], [2.0, 0.001]], np.float32)})], name="flip")
    p = tmp_path / "m.refq.h5"
    section = {"scale": [0.125, 3]}
    save(g, p, sections={"encodings": section})
    reference = (load(p), section)
    data = p.read_bytes()
    with h5py.File(p, "r") as f:
        texts = [f.attrs["graph"], f.attrs[CHECKSUMS], f.attrs["refq_format"],
                 f["encodings"].attrs["json"]]
    positions = {}
    for text in texts:
        at = data.find(text.encode())
        assert at >= 0
        positions.update({i: 0x01 for i in range(at, at + len(text))})
    rng = np.random.default_rng(20240609)
    for i, x in zip(rng.choice(len(data), 400, replace=False), rng.integers(1, 256, 400)):
        positions.setdefault(int(i), int(x))
    damaged = tmp_path / "damaged.refq.h5"
    outcomes = {"same": 0, "error": 0}
    for i, x in positions.items():
        b = bytearray(data)
        b[i] ^= x
        damaged.write_bytes(bytes(b))
        outcomes[_flip_outcome(damaged, reference)] += 1
    assert outcomes["error"] > len(texts[0])


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


@pytest.mark.parametrize("edit, cls, needles", [
    (lambda f: f.attrs.__setitem__("graph", "{not json"), FormatError, ("graph JSON",)),
    (lambda f: f.attrs.__setitem__("graph", "[1, 2, 3]"), GraphError, ("graph JSON", "object")),
    (lambda f: f.attrs.__setitem__("graph", ""), FormatError, ("graph JSON",)),
    (lambda f: f.attrs.__delitem__("graph"), FormatError, ("graph JSON", "missing")),
    (lambda f: f.attrs.__setitem__("graph", np.arange(4)), FormatError, ("not a text",)),
    (_edit_json(lambda d: {k: v for k, v in d.items() if k != "nodes"}), GraphError, ("nodes",)),
    (_edit_json(lambda d: {k: v for k, v in d.items() if k != "inputs"}), GraphError, ("inputs",)),
    (_edit_json(lambda d: {k: v for k, v in d.items() if k != "outputs"}), GraphError,
     ("outputs",)),
    (_edit_json(_set("nodes", {"a": 1})), GraphError, ("'nodes'", "list")),
    (_edit_json(_set("nodes", [1, 2])), GraphError, ("node 0", "object")),
    (_edit_json(_set("inputs", [{"shape": [None, 3]}])), GraphError, ("input 0", "name")),
    (_edit_json(_set("inputs", [{"name": "x", "shape": 5}])), GraphError, ("'x'", "'shape'")),
    (_edit_json(_node_field(0, "op", _DEL)), GraphError, ("node 0", "op")),
    (_edit_json(_node_field(0, "name", _DEL)), GraphError, ("node 0", "name")),
    (_edit_json(_node_field(0, "inputs", 7)), GraphError, ("'block_1/bn'", "'inputs'")),
    (_edit_json(_node_field(2, "name", 5)), GraphError, ("node 2", "'name'")),
    (_edit_json(_node_field(2, "name", None)), GraphError, ("node 2", "'name'")),
    (_edit_json(_node_field(2, "attrs", [1, 2])), GraphError, ("'act%'", "'attrs'")),
], ids=["not-json", "list", "empty", "absent", "array", "no-nodes", "no-inputs", "no-outputs",
        "nodes-dict", "nodes-ints", "input-no-name", "input-shape-int", "node-no-op",
        "node-no-name", "node-inputs-int", "node-name-int", "node-name-null", "attrs-list"])
def test_malformed_graph_json(tmp_path, edit, cls, needles):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, edit)
    load_error(p, cls, *needles)


def test_malformed_graph_json_is_a_format_error(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, lambda f: f.attrs.__setitem__("graph", "{not json"))
    load_error(p, FormatError, "graph")


def test_missing_params_dataset(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, lambda f: f.__delitem__("params/block_1%2Fbn/variance"), reseal=False)
    load_error(p, FormatError, "/params/block_1%2Fbn/variance", "missing")
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
    load_error(p, FormatError, "'block_1/bn'", "'gamma'", "not a real numeric dtype")

    def extra(f):
        f["params/block_1%2Fbn/kernel"] = np.ones(5, np.float32)
    save(make_graph(), p)
    rewrite(p, extra)
    load_error(p, ParamError, "'block_1/bn'", "'kernel'")
    rewrite(p, lambda f: f.__delitem__("params/block_1%2Fbn/kernel"))

    def variance(f):
        f["params/block_1%2Fbn/variance"][3] = -0.5
    rewrite(p, variance)
    load_error(p, ParamError, "'block_1/bn'", "variance[3]", "negative")

    def group_not_dataset(f):
        del f["params/block_1%2Fbn/gamma"]
        f.create_group("params/block_1%2Fbn/gamma")
    save(make_graph(), p)
    rewrite(p, group_not_dataset)
    load_error(p, FormatError, "gamma", "group where a dataset belongs")


def test_invalid_graph_in_file_names_the_file(tmp_path):
    p = tmp_path / "m.refq.h5"
    save(make_graph(), p)
    rewrite(p, _edit_json(_node_field(3, "op", "teleport")))
    load_error(p, refq.GraphError, "teleport", "'pad'")
