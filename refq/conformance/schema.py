"""The golden suite's JSON documents and their rules: `read_manifest` (manifest.json) and
`check_case_json` (case.json; the directory around it is `refq.conformance.case_reader`).

Both are read as strict JSON (UTF-8, no NaN or Infinity) and checked key by key: unknown or
missing keys (the allowed ones are listed), wrong types and broken cross references are each one
FormatError made by the caller's `bad(what)`, which names the file and what to do.
"""
from __future__ import annotations

import json
import math
import os
import posixpath
import re

from ..errors import FormatError, one_line
from ..exporters.sidecar import read_json_file
from ..model_io.strict_json import is_json_int
from .case import _DTYPES, _ID, FORMAT, FORMAT_VERSION, KINDS

__all__ = ["read_manifest", "check_case_json", "SECTIONS", "CASE_KEYS", "ENTRY_KEYS",
           "GRAPH_KEYS", "NODE_KEYS", "INPUT_KEYS", "MANIFEST_KEYS", "MANIFEST_ENTRY_KEYS"]

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


def _check_format(doc, bad):
    """`doc`, when an object, says format "refq-golden" version 1."""
    if isinstance(doc, dict) and (doc.get("format") != FORMAT or
                                  doc.get("format_version") != FORMAT_VERSION):
        raise bad(f"format {doc.get('format')!r} version {doc.get('format_version')!r} is not "
                  f"{FORMAT} version {FORMAT_VERSION}")


def read_manifest(path) -> dict:
    """The {case id: entry} of suite manifest `path`, checked: a JSON object with exactly the keys
    MANIFEST_KEYS, format "refq-golden" version 1, and per case id (lower case, [a-z0-9_.-]) an
    entry with exactly MANIFEST_ENTRY_KEYS (sha256: 64 hex digits). FormatError otherwise."""
    path = os.fspath(path)
    suite = os.path.dirname(path) or "."

    def bad(what):
        return FormatError(f"{path}: {what}; the suite manifest is damaged (restore it, or "
                           f"regenerate the suite with `refq golden generate --out {suite}`)")

    doc, _ = read_json_file(path, bad)
    _check_format(doc, bad)
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
    if not isinstance(e["shape"], list) or not all(is_json_int(d) and d >= 0 for d in e["shape"]):
        raise bad(f"{what} has shape {e['shape']!r}; a shape is a list of integers >= 0")
    if not isinstance(e.get("layout", ""), str):
        raise bad(f"{what} 'layout' must be a string")
    if "generators" in e:
        _check_str_list(e["generators"], f"{what} 'generators'", bad)
    if section == "trace":
        o = e["order"]
        if not is_json_int(o) or not 0 <= o < len(nodes) or nodes[o]["name"] != e["layer"] or \
                name not in nodes[o]["outputs"]:
            raise bad(f"{what} says it is produced by layer {e['layer']!r}, node #{o!r} of the "
                      "graph, which does not produce it")


def check_case_json(doc, bad):
    """The rules of case.json (golden/README.md): keys, types, and cross references; `bad(what)`
    makes the FormatError of a broken rule."""
    _check_format(doc, bad)
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
    if not is_json_int(doc["seed"]):
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

