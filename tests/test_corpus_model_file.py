"""Bad-input corpus for the refq model file (`.refq.h5`) and for output paths, through the CLI.

Each case damages one thing in a copy of a small valid model (or gives one bad output path) and
checks that the command fails cleanly: status 1, one `refq: error:` line naming the file and the
part involved, no traceback, and no file created or changed. Edits to the graph JSON and sections
are followed by fresh digests ("resealed") when the case is about the checks behind the digests.
"""
from __future__ import annotations

import errno
import json
import os
import shutil

import h5py
import numpy as np
import pytest

from cli_helpers import fails_cleanly
from keras_fixtures import tiny_layers, write_legacy_h5
from refq.cli import main
from refq.graph import Graph, Node, TensorSpec
from refq.model_io import CHECKSUMS, save
from test_model_io_load import rewrite


def float_graph():
    """x[N,4,4,2] -> conv2d(3, 3x3) -> batch_norm -> relu -> flatten -> dense(2)."""
    rng = np.random.default_rng(5)
    f32 = np.float32
    bn = {"gamma": rng.uniform(0.5, 2, 3).astype(f32), "beta": rng.normal(size=3).astype(f32),
          "mean": rng.normal(size=3).astype(f32), "variance": rng.uniform(0.5, 2, 3).astype(f32)}
    return Graph(
        [TensorSpec("x", (None, 4, 4, 2), "float32")], ["y"],
        [Node("conv_1", "conv2d", ["x"], ["c"], {},
              {"weight": rng.normal(size=(3, 3, 3, 2)).astype(f32),
               "bias": rng.normal(size=3).astype(f32)}),
         Node("bn", "batch_norm", ["c"], ["b"], {"epsilon": 0.001}, bn),
         Node("act", "relu", ["b"], ["r"]),
         Node("flat", "flatten", ["r"], ["f"]),
         Node("fc", "dense", ["f"], ["y"], {},
              {"weight": rng.normal(size=(2, 12)).astype(f32),
               "bias": rng.normal(size=2).astype(f32)})],
        name="corpus")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{kind: path}: float model, quantized model (BN folded), input, Keras file."""
    root = tmp_path_factory.mktemp("corpus_sources")
    x = np.random.default_rng(0).normal(size=(4, 4, 4, 2)).astype(np.float32)
    paths = {"float": root / "float.refq.h5", "quant": root / "quant.refq.h5",
             "x": root / "x.npy", "keras": root / "tiny.h5"}
    np.save(paths["x"], x)
    save(float_graph(), paths["float"])
    assert main(["quantize", str(paths["float"]), "--calib", str(paths["x"]), "--fold-bn",
                 "-o", str(paths["quant"]), "--quiet"]) == 0
    write_legacy_h5(paths["keras"], tiny_layers())
    return paths


@pytest.fixture
def work(tmp_path, sources):
    """A fresh directory with copies of the models, `m.refq.h5` (float) and `q.refq.h5`."""
    shutil.copy(sources["float"], tmp_path / "m.refq.h5")
    shutil.copy(sources["quant"], tmp_path / "q.refq.h5")
    return tmp_path


def _commands(work, sources, model):
    x = sources["x"]
    return {
        "info": ["info", model],
        "info-json": ["info", model, "--json"],
        "run": ["run", model, "--input", x, "--output", work / "y.npy"],
        "quantize": ["quantize", model, "--calib", x, "-o", work / "out.refq.h5"],
        "lower": ["lower", model, "--profile", "tflite", "-o", work / "int.refq.h5"],
    }


def fails_after(capsys, work, sources, command, model, damage, needles):
    """`damage(path)` the copy of model `model` ("m": float, "q": quantized) in `work`, then check
    that `command` on it fails cleanly, naming the file and `needles`."""
    p = work / f"{model}.refq.h5"
    damage(p)
    fails_cleanly(capsys, work, *_commands(work, sources, p)[command], needles=(p.name,) + needles)


def resealed(edit):
    """A damage that applies `edit(f)` to the open file, then stores fresh digests (so that the
    checks behind the digests are reached)."""
    return lambda path: rewrite(path, edit)


# ---- damaged bytes: truncation and flips -----------------------------------------------------
@pytest.mark.parametrize("command, fraction", [
    ("info", 0.5), ("info-json", 0.9), ("run", 0.97), ("quantize", 0.3), ("lower", 0.6),
    ("info", 0.01),
], ids=lambda v: str(v))
def test_truncated(capsys, work, sources, command, fraction):
    name = "q.refq.h5" if command == "lower" else "m.refq.h5"
    p = work / name
    data = p.read_bytes()
    p.write_bytes(data[:max(1, int(len(data) * fraction))])
    fails_cleanly(capsys, work, *_commands(work, sources, p)[command], needles=(name,))


def _flip_in(text_of):
    """Flip the lowest bit of the middle byte of the text `text_of(f)` in the file."""
    def damage(path):
        with h5py.File(path, "r") as f:
            text = text_of(f).encode()
        data = bytearray(path.read_bytes())
        at = data.find(text) + len(text) // 2
        data[at] ^= 0x01
        path.write_bytes(bytes(data))
    return damage


def _flip_param(path):
    with h5py.File(path, "r") as f:
        offset = f["params/conv_1/weight"].id.get_offset()
    if offset is None:  # chunked (Fletcher-32): find the first chunk
        with h5py.File(path, "r") as f:
            offset = f["params/conv_1/weight"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 5] ^= 0x10
    path.write_bytes(bytes(data))


def _flip_heap_header(path):
    data = bytearray(path.read_bytes())
    at = data.find(b"GCOL")
    size = int.from_bytes(data[at + 8:at + 16], "little")
    p = at + 16
    while int.from_bytes(data[p:p + 2], "little") != 0:  # to the free-space object
        p += 16 + (int.from_bytes(data[p + 8:p + 16], "little") + 7) // 8 * 8
    data[p + 8:p + 16] = (size * 1000).to_bytes(8, "little")
    path.write_bytes(bytes(data))


def _epsilon_digit(path):
    with h5py.File(path, "r") as f:
        text = f.attrs["graph"]
    at = text.index('"epsilon": 0.001') + len('"epsilon": 0.00')
    data = bytearray(path.read_bytes())
    data[data.find(text.encode()) + len(text[:at].encode())] ^= 0x03  # 0.001 -> 0.002
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command, model, damage, needles", [
    ("info-json", "m", _flip_in(lambda f: f.attrs["graph"]), ("graph JSON", "checksum")),
    ("run", "m", _epsilon_digit, ("graph JSON", "checksum")),
    ("info", "m", _flip_in(lambda f: f.attrs[CHECKSUMS]), ("checksum",)),
    ("info", "m", _flip_in(lambda f: f.attrs["refq_format"]), ("version",)),
    ("run", "m", _flip_param, ("/params/conv_1/weight",)),
    ("lower", "q", _flip_in(lambda f: f["encodings"].attrs["json"]),
     ("section '/encodings'", "checksum")),
    ("info-json", "m", _flip_heap_header, ("global heap",)),
], ids=["graph-json", "epsilon-digit", "checksums", "version", "param-bytes", "encodings",
        "global-heap"])
def test_flipped_byte(capsys, work, sources, command, model, damage, needles):
    fails_after(capsys, work, sources, command, model, damage, needles)


# ---- the graph JSON: wrong types at every level (resealed) ------------------------------------
def _graph(edit):
    def fn(f):
        f.attrs["graph"] = json.dumps(edit(json.loads(f.attrs["graph"])))
    return fn


def _node(i, key, value):
    def edit(d):
        d["nodes"][i][key] = value
        return d
    return _graph(edit)


def _top(key, value):
    return _graph(lambda d: {**d, key: value})


def _input(key, value):
    def edit(d):
        d["inputs"][0][key] = value
        return d
    return _graph(edit)


@pytest.mark.parametrize("command, edit, needles", [
    ("info-json", _graph(lambda d: [d]), ("graph JSON", "object")),
    ("info", _top("nodes", {"conv_1": {}}), ("'nodes'", "list")),
    ("info-json", _top("nodes", ["conv_1"]), ("node 0", "object")),
    ("run", _node(1, "inputs", [["c"]]), ("node 1 ('bn')", "'inputs'")),
    ("info", _node(1, "inputs", "c"), ("node 1 ('bn')", "'inputs'")),
    ("info", _node(2, "outputs", None), ("node 2 ('act')", "'outputs'")),
    ("info", _node(1, "attrs", [0.001]), ("node 1 ('bn')", "'attrs'")),
    ("info", _node(1, "attrs", {"epsilon": "0.001"}), ("'bn'", "'epsilon'")),
    ("info", _node(1, "attrs", {"epsilon": [1]}), ("'bn'", "'epsilon'")),
    ("info", _node(0, "attrs", {"strides": [1.0, 1]}), ("'conv_1'", "'strides'")),
    ("info", _node(0, "op", 7), ("node 0 ('conv_1')", "'op'")),
    ("info-json", _node(3, "name", None), ("node 3", "'name'")),
    ("info", _top("meta", 5), ("'meta'",)),
    ("info", _top("outputs", "y"), ("'outputs'",)),
    ("info-json", _top("extra", 1), ("unknown field", "extra")),
    ("run", _input("shape", [None, 4.0, 4, 2]), ("'x'", "'shape'")),
    ("run", _input("shape", [None, "4", 4, 2]), ("'x'", "'shape'")),
    ("run", _input("shape", [None, True, 4, 2]), ("'x'", "'shape'")),
    ("run", _input("dtype", "complex128"), ("'x'", "complex128")),
    ("info", _node(0, "op", "teleport"), ("'conv_1'", "teleport")),
], ids=["graph-list", "nodes-dict", "node-string", "inputs-nested", "inputs-string",
        "outputs-null", "attrs-list", "attr-string", "attr-list", "strides-float", "op-number",
        "name-null", "meta-number", "outputs-string", "unknown-field", "shape-float",
        "shape-string", "shape-bool", "dtype-unknown", "op-unknown"])
def test_wrong_type_in_graph_json(capsys, work, sources, command, edit, needles):
    fails_after(capsys, work, sources, command, "m", resealed(edit), needles)


# ---- the JSON text itself: nesting, numbers, literals, encoding (resealed) ------------------
def _raw_graph(fn):
    def edit(f):
        f.attrs["graph"] = fn(f.attrs["graph"])
    return edit


def _meta(text):
    return _raw_graph(lambda t: t[:t.rindex('"meta"')] + f'"meta": {text}\n}}')


def _non_utf8_attr(obj_of, name):
    def edit(f):
        obj = obj_of(f)
        raw = obj.attrs[name].encode()
        obj.attrs.create(name, raw[:5] + b"\xff\xfe" + raw[5:], dtype=h5py.string_dtype())
    return edit


@pytest.mark.parametrize("command, model, edit, needles", [
    ("info-json", "m", _meta("[" * 100000 + "]" * 100000), ("graph JSON", "nesting")),
    ("info", "m", _meta('{"a": ' * 70 + "1" + "}" * 70), ("graph JSON", "nesting")),
    ("info", "m", _meta('{"big": 1e999}'), ("graph JSON", "float64")),
    ("info-json", "m", _meta('{"big": ' + "9" * 5000 + "}"), ("graph JSON", "int64")),
    ("info", "m", _raw_graph(lambda t: t.replace('"epsilon": 0.001', '"epsilon": NaN')),
     ("graph JSON", "NaN")),
    ("run", "m", _raw_graph(lambda t: t.replace('"epsilon": 0.001', '"epsilon": -Infinity')),
     ("graph JSON", "Infinity")),
    ("info", "m", _non_utf8_attr(lambda f: f, "graph"), ("graph JSON", "UTF-8")),
    ("info-json", "m", _non_utf8_attr(lambda f: f, "refq_format"), ("version", "\\xff")),
    ("lower", "q", _non_utf8_attr(lambda f: f["encodings"], "json"),
     ("section '/encodings'", "UTF-8")),
], ids=["nesting-100000", "nesting-70", "float-overflow", "int-5000-digits", "nan-literal",
        "infinity-literal", "graph-not-utf8", "version-not-utf8", "section-not-utf8"])
def test_malformed_json_text(capsys, work, sources, command, model, edit, needles):
    fails_after(capsys, work, sources, command, model, resealed(edit), needles)


# ---- HDF5 structure: groups, datasets, dtypes, links (resealed) -------------------------------
def _replace_param(data, **kw):
    def edit(f):
        del f["params/conv_1/bias"]
        f.create_dataset("params/conv_1/bias", data=data, **kw)
    return edit


def _params_as_dataset(f):
    del f["params"]
    f["params"] = np.zeros(3)


def _node_group_as_dataset(f):
    del f["params/conv_1"]
    f["params/conv_1"] = np.zeros(3)


def _param_as_group(f):
    del f["params/conv_1/bias"]
    f.create_group("params/conv_1/bias")


def _section_as_dataset(f):
    del f["encodings"]
    f["encodings"] = np.zeros(3)


def _external_link(f):
    del f["params/conv_1/bias"]
    f["params/conv_1/bias"] = h5py.ExternalLink("/etc/hosts", "/x")


@pytest.mark.parametrize("command, model, edit, needles", [
    ("info", "m", _params_as_dataset, ("/params", "dataset where a group belongs")),
    ("run", "m", _node_group_as_dataset, ("/params/conv_1", "dataset where a group belongs")),
    ("info", "m", _param_as_group, ("/params/conv_1/bias", "group where a dataset belongs")),
    ("lower", "q", _section_as_dataset, ("section '/encodings'", "dataset where a group")),
    ("info", "m", _replace_param(np.array([b"a", b"b", b"c"])), ("'bias'", "dtype")),
    ("info", "m", _replace_param(np.array(["a", "b", "c"], dtype=h5py.string_dtype())),
     ("'bias'", "dtype")),
    ("run", "m", _replace_param(np.zeros(3, dtype=[("a", "f4"), ("b", "i4")])),
     ("'bias'", "dtype")),
    ("info", "m", _replace_param(np.zeros(3, dtype=bool)), ("'bias'", "dtype")),
    ("info", "m", _external_link, ("/params/conv_1/bias", "ExternalLink")),
    ("info", "m", _replace_param(np.zeros((3, 1), np.float32)), ("'conv_1'", "bias", "shape")),
], ids=["params-dataset", "node-dataset", "param-group", "section-dataset", "param-bytes-dtype",
        "param-vlen-string", "param-compound", "param-bool", "external-link", "param-shape"])
def test_structure(capsys, work, sources, command, model, edit, needles):
    fails_after(capsys, work, sources, command, model, resealed(edit), needles)


# ---- batch norm statistics (resealed: a file written by another tool) -------------------------
def _bn(name, index, value):
    def edit(f):
        f[f"params/bn/{name}"][index] = value
    return edit


@pytest.mark.parametrize("command, edit, needles", [
    ("info", _bn("variance", 2, -0.25), ("'bn'", "variance[2]", "negative")),
    ("run", _graph(lambda d: (d["nodes"][1]["attrs"].update(epsilon=-0.001), d)[1]),
     ("'bn'", "'epsilon'", "minimum")),
    ("quantize", lambda f: (_bn("variance", 1, 0.0)(f),
                            _graph(lambda d: (d["nodes"][1]["attrs"].update(epsilon=0.0),
                                              d)[1])(f)),
     ("'bn'", "variance[1]", "not positive")),
], ids=["negative-variance", "negative-epsilon", "zero-variance-plus-epsilon"])
def test_bad_batch_norm_statistics(capsys, work, sources, command, edit, needles):
    fails_after(capsys, work, sources, command, "m", resealed(edit), needles)


# ---- output paths --------------------------------------------------------------------------
def _no_space(monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "save", full)
    monkeypatch.setattr(h5py.Group, "create_dataset", full)


def _read_only(monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    import tempfile
    monkeypatch.setattr(tempfile, "mkstemp", denied)


@pytest.mark.parametrize("command, target, patch, needles", [
    ("import", "dir", None, ("existing directory",)),
    ("run", "dir", None, ("existing directory",)),
    ("quantize", "dir", None, ("existing directory",)),
    ("import", "under-file", None, ("is a file, not a directory",)),
    ("run", "under-file", None, ("is a file, not a directory",)),
    ("lower", "under-file", None, ("is a file, not a directory",)),
    ("run", "too-long", None, ("longer than the filesystem allows",)),
    ("import", "too-long", None, ("longer than the filesystem allows",)),
    ("run", "plain", _read_only, ("not writable", "Permission denied")),
    ("import", "plain", _read_only, ("not writable",)),
    ("run", "existing", _no_space, ("No space left on device", "free disk space")),
    ("import", "existing", _no_space, ("No space left on device", "free disk space")),
    ("run", "empty", None, ("not a file name",)),
], ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", "-"))
def test_bad_output_path(capsys, work, sources, monkeypatch, command, target, patch, needles):
    (work / "adir").mkdir()
    (work / "afile").write_text("a regular file\n")
    (work / "old.npy").write_bytes(b"previous contents")
    out = {"dir": work / "adir", "under-file": work / "afile" / "sub" / "o.npy",
           "too-long": work / ("o" * 300 + ".npy"), "plain": work / "new.npy",
           "existing": work / "old.npy", "empty": ""}[target]
    argv = {
        "import": ["import", sources["keras"], "-o", out],
        "run": ["run", work / "m.refq.h5", "--input", sources["x"], "--output", out],
        "quantize": ["quantize", work / "m.refq.h5", "--calib", sources["x"], "-o", out],
        "lower": ["lower", work / "q.refq.h5", "--profile", "tflite", "-o", out],
    }[command]
    if patch:
        patch(monkeypatch)
    fails_cleanly(capsys, work, *argv, "--quiet",
                  needles=((str(out),) if target != "empty" else ()) + needles)
    assert not [n for n in os.listdir(work) if n.startswith(".tmp-")]


def test_trace_under_a_file(capsys, work, sources):
    (work / "afile").write_text("a regular file\n")
    fails_cleanly(capsys, work, "run", work / "m.refq.h5", "--input", sources["x"],
                  "--output", work / "y.npy", "--trace", work / "afile" / "trace", "--quiet",
                  needles=("afile",))
