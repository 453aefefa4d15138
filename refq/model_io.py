"""The refq model format: one HDF5 file, `NAME.refq.h5`.

Layout (format version `FORMAT_VERSION`):
- root attribute `refq_format`: the format version string;
- root attribute `graph`: the graph as JSON text (name, inputs with shapes and dtypes, outputs,
  nodes in topological order with name, op, inputs, outputs, attrs, and a free `meta` dict);
- datasets `/params/<node>/<param>`: every parameter array, dtype as stored in the graph, with a
  Fletcher-32 checksum so that damaged bytes fail to load instead of loading silently. Node
  names are escaped for HDF5 paths: `%` -> `%25`, `/` -> `%2F`, `:` -> `%3A`.
- optional sections: a group `/<section>` whose attribute `json` holds a JSON document, e.g.
  `/encodings` (the quantization simulation: quantizer placement, settings and encodings).

Loading checks the version, parses the JSON, reads every parameter and validates the graph; it never
executes or unpickles anything. Saving writes a temporary file and renames it (atomic), with
dataset timestamps off so the same graph gives byte-identical files.
"""
from __future__ import annotations

import json
import os

import h5py
import numpy as np

from .atomic import atomic_path
from .errors import FormatError, RefqError
from .graph import Graph, Node, TensorSpec

__all__ = ["save", "load", "load_section", "FORMAT_VERSION", "read_graph_json"]

FORMAT_VERSION = "1.0"


def escape_name(name: str) -> str:
    """A tensor or node name made safe as one HDF5 path component or file name."""
    return name.replace("%", "%25").replace("/", "%2F").replace(":", "%3A")


def save(graph: Graph, path, sections: dict | None = None) -> None:
    """Validate `graph` and write it to `path` atomically, with optional JSON `sections`."""
    graph.validate()
    text = json.dumps(graph.to_json(), indent=1, sort_keys=False, allow_nan=False)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["refq_format"] = FORMAT_VERSION
            f.attrs["graph"] = text
            params = f.create_group("params", track_order=True)
            for node in graph.topological_order():
                if not node.params:
                    continue
                g = params.create_group(escape_name(node.name), track_order=True)
                for pname, arr in node.params.items():
                    g.create_dataset(pname, data=np.ascontiguousarray(arr), track_times=False,
                                     fletcher32=True)
            for name, doc in (sections or {}).items():
                if name in ("params",):
                    raise ValueError(f"section name '{name}' is reserved")
                f.create_group(name).attrs["json"] = json.dumps(doc, allow_nan=False)


def _open(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise FormatError(f"{path}: not a readable HDF5 file ({e}); is it truncated or of "
                          "another format?") from None


def read_graph_json(path) -> dict:
    """The graph JSON of a .refq.h5 file, without reading parameters (for `refq info --json`)."""
    with _open(path) as f:
        return _graph_json(f, os.fspath(path))


def _graph_json(f, path) -> dict:
    try:
        version = f.attrs.get("refq_format")
        keras = "model_config" in f.attrs or "model_weights" in f
        text = f.attrs.get("graph")
    except (KeyError, OSError) as e:  # h5py's errors for a damaged root object
        raise FormatError(f"{path}: cannot read the root attributes ({e}); the file is damaged") \
            from None
    if version is None:
        hint = " (a Keras file? use `refq import`)" if keras else ""
        raise FormatError(f"{path}: not a refq model: no 'refq_format' attribute{hint}")
    if isinstance(version, bytes):
        version = version.decode()
    if str(version).split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise FormatError(f"{path}: refq format version {version} is not supported by this refq "
                          f"(reads {FORMAT_VERSION}); upgrade refq")
    if isinstance(text, bytes):
        text = text.decode()
    try:
        d = json.loads(text)
        assert isinstance(d, dict) and isinstance(d["nodes"], list)
    except (TypeError, ValueError, KeyError, AssertionError):
        raise FormatError(f"{path}: the 'graph' attribute is not valid graph JSON") from None
    return d


def load_section(path, name: str):
    """The JSON document stored in section `name` of a .refq.h5 file, or None if absent."""
    path = os.fspath(path)
    with _open(path) as f:
        _graph_json(f, path)
        if name not in f:
            return None
        text = f[name].attrs.get("json")
        if isinstance(text, bytes):
            text = text.decode()
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            raise FormatError(f"{path}: section '/{name}' does not hold valid JSON") from None


def load(path) -> Graph:
    """Read and validate a .refq.h5 file."""
    path = os.fspath(path)
    with _open(path) as f:
        d = _graph_json(f, path)
        try:
            nodes = []
            for nd in d["nodes"]:
                if not isinstance(nd["name"], str):
                    raise FormatError(f"{path}: malformed graph JSON (node name {nd['name']!r} "
                                      "is not a string)")
                params = {}
                key = "params/" + escape_name(nd["name"])
                if key in f:
                    for pname, ds in f[key].items():
                        if not isinstance(ds, h5py.Dataset):
                            raise FormatError(f"{path}: /{key}/{pname} is not a dataset")
                        params[pname] = ds[()]
                nodes.append(Node(nd["name"], nd["op"], list(nd["inputs"]), list(nd["outputs"]),
                                  dict(nd.get("attrs", {})), params))
            graph = Graph([TensorSpec.from_json(s) for s in d["inputs"]], list(d["outputs"]),
                          nodes, d.get("name", "graph"), dict(d.get("meta", {})))
        except (KeyError, TypeError) as e:
            raise FormatError(f"{path}: malformed graph JSON (missing or wrong field {e})") from None
        except OSError as e:
            raise FormatError(f"{path}: cannot read parameters ({e}); the file may be truncated") \
                from None
    try:
        return graph.validate()
    except RefqError as e:
        raise type(e)(f"{path}: {e}") from None
