"""Reading a golden case directory back, checked: `read_case`, `load_case`, `read_manifest`.

Every problem is one FormatError naming the case, the file and what to do (restore the case from
the suite, or regenerate it with `refq golden generate`): unknown or missing keys (the allowed ones
are listed), wrong types, sha256 mismatches, missing or extra files, arrays that are truncated,
pickled or of the wrong dtype or shape.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import re

import numpy as np

from ..errors import FormatError, RefqError, one_line
from ..graph import Graph, Node, TensorSpec
from .case import _DTYPES, _ID, FORMAT, FORMAT_VERSION, KINDS, MANIFEST, sha256

__all__ = ["read_case", "load_case", "read_manifest", "GoldenCase", "SECTIONS", "CASE_KEYS"]

#: Every key of case.json; all are required (golden/README.md, "case.json").
CASE_KEYS = ("case", "description", "files", "format", "format_version", "graph", "inputs",
             "kind", "outputs", "params", "profile", "quantization", "refq_version", "seed",
             "tolerance", "trace")
#: The array sections of a case, in the order their files are written.
SECTIONS = ("params", "inputs", "outputs", "trace")
#: The keys of an array entry of each section: (required, optional).
ENTRY_KEYS = {"params": (("dtype", "file", "shape"), ()),
              "inputs": (("dtype", "file", "shape"), ("generators", "layout")),
              "outputs": (("dtype", "file", "shape"), ("layout",)),
              "trace": (("dtype", "file", "layer", "order", "shape"), ("layout",))}
#: The keys of case.json "graph", of each of its nodes and inputs: (required, optional).
GRAPH_KEYS = (("inputs", "nodes", "outputs"), ("meta", "name"))
NODE_KEYS = (("inputs", "name", "op", "outputs"), ("attrs",))
INPUT_KEYS = (("name", "shape"), ("dtype",))
#: Every key of manifest.json and of each of its case entries; all are required.
MANIFEST_KEYS = ("cases", "format", "format_version", "refq_version")
MANIFEST_ENTRY_KEYS = ("description", "kind", "profile", "sha256")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    return {dict: "an object", list: "a list", str: "a string", int: "an integer",
            float: "a number"}.get(type(v), type(v).__name__)


def _quoted(names) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _check_keys(d, keys: tuple, what: str, bad):
    """`d` is an object with every required key of `keys` = (required, optional) and no other."""
    required, optional = keys
    if not isinstance(d, dict):
        raise bad(f"{what} is {_json_type(d)}, not an object")
    unknown = sorted(set(d) - set(required) - set(optional))
    if unknown:
        raise bad(f"{what} has unknown key(s) {_quoted(unknown)}; the allowed keys are "
                  f"{', '.join(sorted(required + optional))}")
    missing = [k for k in required if k not in d]
    if missing:
        raise bad(f"{what} lacks the key(s) {_quoted(missing)}")


def _check_str_list(v, what: str, bad, nonempty: bool = False):
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise bad(f"{what} must be a list of strings, got {_json_type(v)}")
    if nonempty and not v:
        raise bad(f"{what} is empty")


def _read_json_file(path, bad) -> tuple:
    """(parsed JSON, raw bytes) of `path`: UTF-8, strict JSON (no NaN or Infinity)."""
    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise bad(f"cannot be read ({one_line(e.strerror or e)})") from None
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constants), raw
    except UnicodeDecodeError:
        raise bad("is not UTF-8 text") from None
    except ValueError as e:
        raise bad(f"is not valid JSON ({one_line(e)})") from None


def read_manifest(path) -> dict:
    """The {case id: entry} of suite manifest `path`, checked: a JSON object with exactly the keys
    MANIFEST_KEYS, format "refq-golden" version 1, and per case id (lower case, [a-z0-9_.-]) an
    entry with exactly MANIFEST_ENTRY_KEYS (sha256: 64 hex digits). FormatError otherwise."""
    path = os.fspath(path)
    suite = os.path.dirname(path) or "."

    def bad(what):
        return FormatError(f"{path}: {what}; the suite manifest is damaged (restore it, or "
                           f"regenerate the suite with `refq golden generate --out {suite}`)")

    doc, _ = _read_json_file(path, bad)
    if isinstance(doc, dict) and (doc.get("format") != FORMAT or
                                  doc.get("format_version") != FORMAT_VERSION):
        raise bad(f"format {doc.get('format')!r} version {doc.get('format_version')!r} is not "
                  f"{FORMAT} version {FORMAT_VERSION}")
    _check_keys(doc, (MANIFEST_KEYS, ()), "the manifest", bad)
    cases = doc["cases"]
    if not isinstance(cases, dict):
        raise bad(f"'cases' is {_json_type(cases)}, not an object")
    for cid, e in cases.items():
        if not _ID.match(cid) or ".." in cid:
            raise bad(f"case id {cid!r} is not a case id ([a-z0-9_.-])")
        _check_keys(e, (MANIFEST_ENTRY_KEYS, ()), f"the entry of case '{cid}'", bad)
        if not isinstance(e["sha256"], str) or not _SHA256.match(e["sha256"]):
            raise bad(f"the sha256 of case '{cid}' is not 64 hex digits")
        if e["kind"] not in KINDS or not isinstance(e["description"], str) or \
                not isinstance(e["profile"], (str, type(None))):
            raise bad(f"the entry of case '{cid}' has a wrong kind, profile or description")
    return cases


def _check_graph_json(g, bad):
    _check_keys(g, GRAPH_KEYS, "'graph'", bad)
    if not isinstance(g["inputs"], list):
        raise bad(f"'graph' 'inputs' must be a list, got {_json_type(g['inputs'])}")
    for i, spec in enumerate(g["inputs"]):
        _check_keys(spec, INPUT_KEYS, f"graph input #{i}", bad)
    _check_str_list(g["outputs"], "'graph' 'outputs'", bad, nonempty=True)
    if not isinstance(g["nodes"], list) or not g["nodes"]:
        raise bad("'graph' 'nodes' must be a non-empty list")
    for i, n in enumerate(g["nodes"]):
        _check_keys(n, NODE_KEYS, f"graph node #{i}", bad)
        if not isinstance(n["name"], str) or not isinstance(n["op"], str):
            raise bad(f"graph node #{i}: 'name' and 'op' must be strings")
        _check_str_list(n["inputs"], f"node '{n['name']}' 'inputs'", bad)
        _check_str_list(n["outputs"], f"node '{n['name']}' 'outputs'", bad, nonempty=True)
        if not isinstance(n.get("attrs", {}), dict):
            raise bad(f"node '{n['name']}' 'attrs' must be an object")
    if not isinstance(g.get("meta", {}), dict) or not isinstance(g.get("name", ""), str):
        raise bad("'graph' 'meta' must be an object and 'name' a string")


def _check_tolerance(tol, bad):
    if isinstance(tol, dict) and tol.get("kind") == "exact":
        _check_keys(tol, (("kind",), ()), "'tolerance'", bad)
        return
    if isinstance(tol, dict) and tol.get("kind") == "allclose":
        _check_keys(tol, (("atol", "kind", "rtol"), ()), "'tolerance'", bad)
        for k in ("atol", "rtol"):
            v = tol[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0:
                raise bad(f"'tolerance' '{k}' must be a finite number >= 0, got {v!r}")
        return
    raise bad("'tolerance' must be {\"kind\": \"exact\"} or {\"kind\": \"allclose\", \"atol\": "
              f"a, \"rtol\": r}}, got {one_line(json.dumps(tol))[:80]}")


def _check_entry(section, name, e, files, nodes, bad):
    what = f"{section} '{name}'"
    _check_keys(e, ENTRY_KEYS[section], what, bad)
    if e["file"] not in files:
        raise bad(f"{what} names file {e['file']!r}, which 'files' does not list with a sha256")
    if e["dtype"] not in _DTYPES:
        raise bad(f"{what} has dtype {e['dtype']!r}; golden arrays are {', '.join(_DTYPES)}")
    if not isinstance(e["shape"], list) or not all(_is_int(d) and d >= 0 for d in e["shape"]):
        raise bad(f"{what} has shape {e['shape']!r}; a shape is a list of integers >= 0")
    if not isinstance(e.get("layout", ""), str):
        raise bad(f"{what} 'layout' must be a string")
    if "generators" in e:
        _check_str_list(e["generators"], f"{what} 'generators'", bad)
    if section == "trace":
        o = e["order"]
        if not _is_int(o) or not 0 <= o < len(nodes) or nodes[o]["name"] != e["layer"] or \
                name not in nodes[o]["outputs"]:
            raise bad(f"{what} says it is produced by layer {e['layer']!r}, node #{o!r} of the "
                      "graph, which does not produce it")


def _check_case_json(doc, bad):
    """The rules of case.json (golden/README.md): keys, types, and cross references."""
    if isinstance(doc, dict) and (doc.get("format") != FORMAT or
                                  doc.get("format_version") != FORMAT_VERSION):
        raise bad(f"format {doc.get('format')!r} version {doc.get('format_version')!r} is not "
                  f"{FORMAT} version {FORMAT_VERSION}")
    _check_keys(doc, (CASE_KEYS, ()), "the top level", bad)
    for key in ("case", "description", "kind", "refq_version"):
        if not isinstance(doc[key], str):
            raise bad(f"'{key}' must be a string, got {_json_type(doc[key])}")
    if not _ID.match(doc["case"]) or ".." in doc["case"]:
        raise bad(f"'case' {doc['case']!r} is not a case id ([a-z0-9_.-])")
    if doc["kind"] not in KINDS:
        raise bad(f"'kind' {doc['kind']!r} is not one of {', '.join(KINDS)}")
    if not isinstance(doc["profile"], (str, type(None))):
        raise bad(f"'profile' must be a string or null, got {_json_type(doc['profile'])}")
    if not _is_int(doc["seed"]):
        raise bad(f"'seed' must be an integer, got {_json_type(doc['seed'])}")
    for key in ("files", "quantization") + SECTIONS:
        if not isinstance(doc[key], dict):
            raise bad(f"'{key}' must be an object, got {_json_type(doc[key])}")
    _check_tolerance(doc["tolerance"], bad)
    _check_graph_json(doc["graph"], bad)
    for rel, digest in doc["files"].items():
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise bad(f"'files' gives file {rel!r} the sha256 {digest!r}, not 64 hex digits")
        norm = posixpath.normpath(rel)
        if "\\" in rel or norm != rel or rel.startswith("/") or norm.split("/")[0] == ".." \
                or rel == "case.json":
            raise bad(f"'files' lists {rel!r}, which is not a path inside the case directory")
    if not doc["outputs"]:
        raise bad("'outputs' is empty: a case without outputs compares nothing")
    for section in SECTIONS:
        for name, e in doc[section].items():
            _check_entry(section, name, e, doc["files"], doc["graph"]["nodes"], bad)


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
        from ..exporters.hardware import read_npy

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

    doc, raw = _read_json_file(cj_path, bad)
    _check_case_json(doc, bad)
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
