"""Golden cases: the `Case` record, the registry and rendering a case to bytes (reading a case
directory back, checked, is `refq.conformance.case_reader`).

A case is code: a function that builds a graph and its inputs (seeded) and computes the outputs and
the per-layer trace with refq, returning a `CaseData`. `render(case)` turns it into the bytes of its
directory (the format of golden/README.md): `case.json` plus `.npy` files. Rendering is
deterministic: arrays are saved little-endian, C order, npy format 1.0, never pickled; JSON has
sorted keys, indent 1, a trailing newline and repr floats.
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InputError
from ..graph import Graph
from ..model_io import escape_name

__all__ = ["Case", "CaseData", "CASES", "register", "select", "render", "render_manifest",
           "manifest_entry", "sha256", "dumps", "FORMAT", "FORMAT_VERSION", "KINDS", "EXACT",
           "allclose", "layout_of", "MANIFEST"]

FORMAT = "refq-golden"
FORMAT_VERSION = 1
KINDS = ("float", "quant", "integer", "float32", "sim")
MANIFEST = "manifest.json"
EXACT = {"kind": "exact"}
_ID = re.compile(r"^[a-z0-9_][a-z0-9_.-]*$")
#: dtypes a golden array may have
_DTYPES = ("int8", "uint8", "int16", "int32", "int64", "float32", "float64")


def allclose(atol: float, rtol: float) -> dict:
    return {"kind": "allclose", "atol": float(atol), "rtol": float(rtol)}


@dataclass
class CaseData:
    """What a case function returns.

    graph: the graph (Graph.to_json() goes into case.json, parameters into params/);
    inputs, outputs: {name: array}; trace: {tensor: array} for node outputs (any order; written with
    the producing node and its topological index); quantization: {tensor or "<node>/<param>":
    encoding dict}; layouts: {name: layout} overriding `layout_of`; generators: {input name: [name
    of the generator of each batch row]}.
    """

    graph: Graph
    inputs: dict
    outputs: dict
    trace: dict = field(default_factory=dict)
    quantization: dict = field(default_factory=dict)
    layouts: dict = field(default_factory=dict)
    generators: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One golden case: `build()` returns its CaseData."""

    id: str
    kind: str
    build: Callable
    description: str
    seed: int = 0
    profile: str | None = None
    tolerance: dict = field(default_factory=lambda: dict(EXACT))


#: Every registered case by id, in registration order (the case modules register theirs when
#: `refq.conformance` is imported).
CASES: dict = {}


def register(case: Case) -> Case:
    if not _ID.match(case.id) or ".." in case.id or "__" in case.id:
        raise ValueError(f"case id {case.id!r} must match [a-z0-9_.-]+ without '..' or '__'")
    if case.id in CASES:
        raise ValueError(f"case {case.id!r} registered twice")
    if case.kind not in KINDS:
        raise ValueError(f"case {case.id!r}: kind must be one of {KINDS}")
    CASES[case.id] = case
    return case


def select(pattern: str | None = None) -> list:
    """The cases whose id matches `pattern` (fnmatch globs, comma-separated; None = all), in
    registration order. InputError when a glob matches no case."""
    if pattern is None:
        return list(CASES.values())
    chosen = match_ids(
        CASES, pattern, "empty case pattern; give a glob such as 'float.*' or '*.tflite'",
        lambda g, groups: f"no golden case matches {g!r}; case ids look like "
                          f"'float.conv2d.basic' or 'integer.add.basic.tflite' (fnmatch globs, "
                          f"comma-separated); groups: {', '.join(groups)}")
    return [c for cid, c in CASES.items() if cid in chosen]


def match_ids(ids, pattern: str, empty: str, no_match) -> set:
    """The case ids among `ids` that match a glob of `pattern` (fnmatch globs, comma-separated).
    InputError(`empty`) when the pattern holds no glob, InputError(no_match(glob, groups)) when a
    glob matches no id (groups: the ids' first components, as 'float.*')."""
    globs = [p.strip() for p in str(pattern).split(",") if p.strip()]
    if not globs:
        raise InputError(empty)
    chosen = set()
    for g in globs:
        hits = [cid for cid in ids if fnmatch.fnmatchcase(cid, g)]
        if not hits:
            groups = sorted({cid.split(".")[0] + ".*" for cid in ids})
            raise InputError(no_match(g, groups))
        chosen.update(hits)
    return chosen


# ---- bytes ------------------------------------------------------------------------------------

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def dumps(doc) -> bytes:
    """Sorted keys, indent 1, repr floats, ASCII, trailing newline."""
    return (json.dumps(doc, sort_keys=True, indent=1, allow_nan=False, default=_json_default)
            + "\n").encode("ascii")


def npy_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a)
    if a.dtype.name not in _DTYPES:
        raise ValueError(f"golden arrays are {_DTYPES}, got {a.dtype}")
    a = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")   # (0-d stays 0-d)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def layout_of(a: np.ndarray) -> str:
    return {0: "scalar", 1: "C", 2: "NC", 3: "NWC", 4: "NHWC", 5: "NDHWC"}.get(
        np.ndim(a), f"rank{np.ndim(a)}")


def _entry(path, a, layout=None):
    d = {"file": path, "dtype": a.dtype.name, "shape": list(a.shape)}
    if layout is not None:
        d["layout"] = layout
    return d


def render(case: Case, data: CaseData | None = None) -> dict:
    """{relative path: bytes} of the case directory, case.json included."""
    from .. import __version__

    data = case.build() if data is None else data
    g = data.graph
    gjson = g.to_json()
    order = {n["outputs"][0]: (n["name"], i) for i, n in enumerate(gjson["nodes"])}
    files, doc = {}, {"params": {}, "inputs": {}, "outputs": {}, "trace": {}}
    taken = {}

    def put(section, key, a, layout=None):
        path = f"{section}/{escape_name(key)}.npy"
        low = path.lower()
        if low in taken:
            raise ValueError(f"case {case.id}: files {taken[low]!r} and {path!r} differ only in "
                             "case")
        taken[low] = path
        files[path] = npy_bytes(a)
        return _entry(path, np.asarray(a), layout)

    for n in g.topological_order():
        for pname, arr in n.params.items():
            doc["params"][f"{n.name}/{pname}"] = put("params", f"{n.name}/{pname}", arr)
    for name, a in data.inputs.items():
        e = put("inputs", name, a, data.layouts.get(name, layout_of(a)))
        if name in data.generators:
            e["generators"] = list(data.generators[name])
        doc["inputs"][name] = e
    for name, a in data.outputs.items():
        doc["outputs"][name] = put("outputs", name, a, data.layouts.get(name, layout_of(a)))
    for t, a in data.trace.items():
        if t not in order:
            raise ValueError(f"case {case.id}: trace tensor {t!r} is produced by no node")
        e = put("trace", t, a, data.layouts.get(t, layout_of(a)))
        e["layer"], e["order"] = order[t]
        doc["trace"][t] = e
    doc.update({
        "refq_version": __version__, "format": FORMAT, "format_version": FORMAT_VERSION,
        "case": case.id, "description": case.description, "kind": case.kind,
        "profile": case.profile, "seed": int(case.seed), "graph": gjson,
        "quantization": data.quantization, "tolerance": case.tolerance,
        "files": {p: sha256(b) for p, b in sorted(files.items())},
    })
    files["case.json"] = dumps(doc)
    return files


def render_manifest(entries: dict) -> bytes:
    """manifest.json from {case id: {"sha256", "kind", "profile", "description"}}."""
    from .. import __version__

    return dumps({"format": FORMAT, "format_version": FORMAT_VERSION,
                  "refq_version": __version__, "cases": dict(sorted(entries.items()))})


def manifest_entry(case: Case, case_json: bytes) -> dict:
    return {"sha256": sha256(case_json), "kind": case.kind, "profile": case.profile,
            "description": case.description}
