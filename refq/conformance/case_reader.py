"""Reading a golden case directory back, checked: `read_case` (case.json, whose rules are
`refq.conformance.schema`, the sha256 of every file, the manifest entry) and `load_case` (the graph
and arrays); `GoldenCase` reads each array on demand.

Every problem is one FormatError naming the case, the file and what to do (restore the case from
the suite, or regenerate it with `refq golden generate`): unknown or missing keys (the allowed ones
are listed), wrong types, sha256 mismatches, missing or extra files, arrays that are truncated,
pickled or of the wrong dtype or shape.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from ..errors import FormatError, RefqError, one_line
from ..exporters.npy import read_npy
from ..exporters.sidecar import read_json_file
from ..graph import Graph, Node, TensorSpec
from .case import MANIFEST, sha256
from .schema import CASE_KEYS, SECTIONS, check_case_json, read_manifest

__all__ = ["read_case", "load_case", "read_manifest", "case_dir_hint", "GoldenCase",
           "SECTIONS", "CASE_KEYS"]

class GoldenCase:
    """A golden case directory whose integrity `read_case` has checked."""

    def __init__(self, case_dir: str, case_json: dict):
        self.case_dir = case_dir
        self.case_json = case_json
        self._cache: dict = {}

    @property
    def id(self) -> str:
        return self.case_json["case"]

    @property
    def tolerance(self) -> dict:
        return self.case_json["tolerance"]

    def entries(self, section: str) -> dict:
        return self.case_json[section]

    def array(self, section: str, name: str) -> np.ndarray:
        """The array `name` of `section` (params/inputs/outputs/trace), read without unpickling;
        FormatError when it is not a .npy file of the dtype and shape case.json declares."""
        key = (section, name)
        if key not in self._cache:
            e = self.entries(section)[name]
            path = os.path.join(self.case_dir, *e["file"].split("/"))
            try:
                a = read_npy(path)
            except FormatError as err:
                raise FormatError(f"{err} ({section} '{name}'); {_fix(self.case_dir, self.id)}") \
                    from None
            if a.dtype != np.dtype(e["dtype"]).newbyteorder("<") or list(a.shape) != e["shape"]:
                held = a.dtype.name + (" big-endian" if a.dtype.byteorder == ">" else "")
                raise FormatError(f"{path}: {section} '{name}' holds {held} {list(a.shape)}, but "
                                  f"case.json declares {e['dtype']} {e['shape']} (little-endian); "
                                  f"{_fix(self.case_dir, self.id)}")
            self._cache[key] = a
        return self._cache[key]

    def tensor_order(self) -> dict:
        """{tensor: (order, layer)}: every node output by graph node order, trace entries as
        case.json says."""
        out = {}
        for i, n in enumerate(self.case_json["graph"]["nodes"]):
            for t in n["outputs"]:
                out[t] = (i, n["name"])
        for t, e in self.entries("trace").items():
            out[t] = (e["order"], e["layer"])
        return out


def _fix(case_dir, cid=None) -> str:
    """What to do about a damaged case."""
    cid = cid or os.path.basename(os.path.normpath(os.path.abspath(case_dir)))
    suite = os.path.dirname(os.path.normpath(case_dir)) or "."
    return (f"the case was changed or damaged: restore it, or regenerate it with `refq golden "
            f"generate --cases {cid} --out {suite}`")


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def case_dir_hint(directory) -> str:
    """' (it is a case directory: give the suite that contains it)' when `directory`, given as a
    suite, holds a case.json; else ''."""
    if os.path.isfile(os.path.join(directory, "case.json")):
        return " (it is a case directory: give the suite that contains it)"
    return ""


def read_case(case_dir) -> GoldenCase:
    """Open golden case directory `case_dir` and check it, each failure a FormatError naming the
    file and what to do:
    - case.json is UTF-8 JSON with exactly the keys CASE_KEYS, each of its type; its "format" is
      "refq-golden" version 1; the array entries of params/inputs/outputs/trace have exactly the
      keys ENTRY_KEYS, a golden dtype and a shape, and name a file listed in "files"; "graph" has
      the keys GRAPH_KEYS (nodes NODE_KEYS), a trace entry's layer/order is the node producing it;
      "outputs" is not empty (a case that compares nothing is damaged);
    - when the directory sits in a suite (../manifest.json exists; read_manifest checks it), the
      directory is named by the case id and case.json's sha256 is the manifest's;
    - every file listed in "files" lies inside the directory, exists and has that sha256, and the
      directory holds no other file.
    The arrays themselves are read (and their dtype and shape checked) by GoldenCase.array."""
    case_dir = os.fspath(case_dir)
    cj_path = os.path.join(case_dir, "case.json")
    if not os.path.isdir(case_dir):
        what = "is not a directory" if os.path.exists(case_dir) else "no such case directory"
        raise FormatError(f"{case_dir}: {what}; give a golden case directory, e.g. "
                          "golden/float.dense.basic")
    if not os.path.isfile(cj_path):
        if os.path.isfile(os.path.join(case_dir, MANIFEST)):
            example = os.path.join(case_dir, "float.dense.basic")
            raise FormatError(f"{case_dir}: this is a golden suite, not a case; give one of its "
                              f"case directories, e.g. {example}")
        raise FormatError(f"{case_dir}: no case.json; not a golden case directory")
    fix = _fix(case_dir)

    def bad(what):
        return FormatError(f"{cj_path}: {what}; {fix}")

    doc, raw = read_json_file(cj_path, bad)
    check_case_json(doc, bad)
    cid = doc["case"]
    fix = _fix(case_dir, cid)
    manifest = os.path.join(os.path.dirname(os.path.abspath(case_dir)), MANIFEST)
    if os.path.isfile(manifest):
        entry = read_manifest(manifest).get(cid)
        dirname = os.path.basename(os.path.abspath(case_dir))
        if dirname != cid:
            raise bad(f"the case id is '{cid}' but its directory in the suite is '{dirname}'")
        if entry is not None and entry["sha256"] != sha256(raw):
            raise bad(f"its sha256 is {sha256(raw)[:16]}... but {manifest} says "
                      f"{entry['sha256'][:16]}...")
    present = set()
    for root, dirs, names in os.walk(case_dir):
        dirs.sort()
        for nm in names:
            rel = os.path.relpath(os.path.join(root, nm), case_dir).replace(os.sep, "/")
            if rel != "case.json":
                present.add(rel)
    for rel, digest in sorted(doc["files"].items()):
        path = os.path.join(case_dir, *rel.split("/"))
        if rel not in present:
            raise FormatError(f"{path}: listed in case.json 'files' but missing; {fix}")
        got = _sha256_file(path)
        if got != digest:
            raise FormatError(f"{path}: does not match its sha256 in case.json (the file hashes "
                              f"to {got[:16]}..., case.json says {digest[:16]}...); {fix}")
    extra = sorted(present - set(doc["files"]))
    if extra:
        raise FormatError(f"{os.path.join(case_dir, *extra[0].split('/'))}: not listed in "
                          f"case.json 'files' (a case directory holds only its listed files); "
                          "remove it")
    return GoldenCase(case_dir, doc)


def load_case(case_dir) -> tuple:
    """(Graph, inputs, outputs, trace, case_json) of golden case directory `case_dir`, checked by
    `read_case`; the arrays are read without unpickling and the graph is rebuilt and validated
    (FormatError naming case.json). inputs/outputs: {name: array}; trace: {tensor: array}."""
    gc = read_case(case_dir)
    doc = gc.case_json
    cj_path = os.path.join(os.fspath(case_dir), "case.json")
    gj = doc["graph"]
    names = {n["name"] for n in gj["nodes"]}
    params: dict = {}
    for key in doc["params"]:
        node, _, pname = key.rpartition("/")
        if node not in names:
            raise FormatError(f"{cj_path}: params '{key}' belongs to no node of the graph (keys "
                              f"are '<node>/<param>'); {_fix(case_dir, gc.id)}")
        params.setdefault(node, {})[pname] = gc.array("params", key)
    try:
        nodes = [Node(n["name"], n["op"], list(n["inputs"]), list(n["outputs"]),
                      dict(n.get("attrs", {})), params.get(n["name"], {})) for n in gj["nodes"]]
        graph = Graph([TensorSpec.from_json(s) for s in gj["inputs"]], list(gj["outputs"]),
                      nodes, gj.get("name", "graph"), dict(gj.get("meta", {})))
        graph.validate()
    except RefqError as e:
        raise FormatError(f"{cj_path}: 'graph' is invalid ({one_line(e)}); "
                          f"{_fix(case_dir, gc.id)}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FormatError(f"{cj_path}: 'graph' is malformed ({type(e).__name__}: {one_line(e)}); "
                          f"{_fix(case_dir, gc.id)}") from None
    inputs = {k: gc.array("inputs", k) for k in doc["inputs"]}
    outputs = {k: gc.array("outputs", k) for k in doc["outputs"]}
    trace = {k: gc.array("trace", k) for k in doc["trace"]}
    return graph, inputs, outputs, trace, doc
