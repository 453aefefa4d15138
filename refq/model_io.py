"""The refq model format: one HDF5 file, `NAME.refq.h5`.

Layout (format version `FORMAT_VERSION`):
- root attribute `refq_format`: the format version string;
- root attribute `graph`: the graph as JSON text (name, inputs with shapes and dtypes, outputs,
  nodes in topological order with name, op, inputs, outputs, attrs, and a free `meta` dict);
- datasets `/params/<node>/<param>`: every parameter array, dtype as stored in the graph, with a
  Fletcher-32 checksum on its chunks. Node names are escaped for HDF5 paths (`escape_name`).
- optional sections: a group `/<section>` whose attribute `json` holds a JSON document, e.g.
  `/encodings` (the quantization simulation: quantizer placement, settings and encodings);
- root attribute `refq_checksums`: JSON text {part: SHA-256 hex digest} over every other part:
  `refq_format` and `graph` (the attribute's UTF-8 bytes), `/<section>` (its JSON text's UTF-8
  bytes) and `/params/<node>/<param>` (the bytes "<dtype.str> <shape as a JSON list>\\n" followed
  by the array's C-order bytes). Fletcher-32 misses damage to attributes, dtypes and shapes; the
  digests do not.

Loading checks, in order: the version (a file of another major version, or of 1.0, which has no
digests, is refused: a damaged version number must not switch the checks off); that the parts in
the file are exactly the parts the digests list, and every digest; UTF-8 text; strict JSON (no
NaN/Infinity, numbers within float64/int64 range, nesting at most `MAX_JSON_DEPTH` levels); the
type of every graph JSON field (`Graph.from_json`); parameters of real numeric dtypes in datasets
under groups (no links); then `Graph.validate`. Every failure is one line naming the file, the part
and what to do. Loading never executes or unpickles anything.

Saving validates the graph, checks that its JSON reads back under the rules above, and writes a
temporary file that it renames over the target (`atomic_path`); dataset timestamps are off, so the
same graph and sections give byte-identical files.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os

import h5py
import numpy as np

from .atomic import atomic_path
from .errors import FormatError, GraphError, RefqError, one_line
from .graph import Graph
from .hdf5_check import check_global_heaps

__all__ = ["save", "load", "load_section", "FORMAT_VERSION", "read_graph_json", "escape_name",
           "compute_checksums"]

FORMAT_VERSION = "1.1"
MAX_JSON_DEPTH = 64
CHECKSUMS = "refq_checksums"
RECREATE = "re-create it (`refq import`, `refq quantize` or `refq lower`, whichever wrote it)"
_DAMAGED = "the file was modified or damaged after it was written; " + RECREATE
_RESERVED = ("params",)


def escape_name(name: str) -> str:
    """A tensor or node name made safe as one HDF5 path component or file name: `%` -> `%25`,
    `/` -> `%2F`, `:` -> `%3A`, and the name `.` (HDF5's "this group") -> `%2E`."""
    if name == ".":
        return "%2E"
    return name.replace("%", "%25").replace("/", "%2F").replace(":", "%3A")


# ---- digests --------------------------------------------------------------------------------
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _array_digest(arr: np.ndarray) -> str:
    """SHA-256 over dtype, shape and C-order bytes (what Fletcher-32 does not cover)."""
    head = f"{arr.dtype.str} {json.dumps(list(arr.shape))}\n".encode()
    return _sha(head + np.ascontiguousarray(arr).tobytes())


def _param_part(node_key: str, pname: str) -> str:
    return f"/params/{node_key}/{pname}"


def _describe(part: str) -> str:
    """A part of the file as the messages name it."""
    if part == "graph":
        return "the graph JSON (attribute 'graph')"
    if part == "refq_format":
        return "the format version (attribute 'refq_format')"
    if part.startswith("/params/"):
        return f"parameter {part}"
    return f"section '{part}'"


# ---- strict JSON ----------------------------------------------------------------------------
def _reject_constant(name):
    raise ValueError(f"the literal {name} (JSON has no NaN or Infinity)")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond the float64 range")
    return value


def _int64(text):
    if len(text.lstrip("-")) > 19 or not -(2 ** 63) <= int(text) < 2 ** 63:
        raise ValueError(f"the integer {text[:40]}{'...' if len(text) > 40 else ''} is beyond "
                         "the int64 range")
    return int(text)


def _depth(doc) -> int:
    """Nesting depth of a parsed JSON document (iterative: no recursion limit)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                return level
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, level + 1) for v in items)
    return deepest


def parse_json(text: str):
    """`text` parsed under the format's rules; ValueError with a one-line reason otherwise."""
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                         parse_int=_int64)
    except RecursionError:
        raise ValueError(f"nesting deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{e.msg} at line {e.lineno} column {e.colno}") from None
    if _depth(doc) > MAX_JSON_DEPTH:
        raise ValueError(f"nesting deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _dumps(doc, what: str, **kwargs) -> str:
    """JSON text of `doc` that `parse_json` reads back; GraphError naming `what` otherwise."""
    try:
        text = json.dumps(doc, allow_nan=False, **kwargs)
        parse_json(text)
    except (TypeError, ValueError, RecursionError) as e:
        raise GraphError(f"{what} cannot be stored as refq JSON ({one_line(e, 200)}); keep it to "
                         f"JSON types, finite float64 and int64 numbers and at most {MAX_JSON_DEPTH} "
                         "levels of nesting") from None
    return text


# ---- saving ---------------------------------------------------------------------------------
def save(graph: Graph, path, sections: dict | None = None) -> None:
    """Validate `graph` and write it to `path` atomically, with optional JSON `sections`."""
    graph.validate()
    text = _dumps(graph.to_json(), f"graph '{graph.name}'", indent=1, sort_keys=False)
    docs = {}
    for name, doc in (sections or {}).items():
        if name in _RESERVED or not isinstance(name, str) or not name or "/" in name \
                or name == "." or "\0" in name:
            raise ValueError(f"section name {name!r} is reserved or not one HDF5 name")
        docs[name] = _dumps(doc, f"section '/{name}'")
    digests = {"refq_format": _sha(FORMAT_VERSION.encode()), "graph": _sha(text.encode())}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["refq_format"] = FORMAT_VERSION
            f.attrs["graph"] = text
            params = f.create_group("params", track_order=True)
            for node in graph.topological_order():
                if not node.params:
                    continue
                key = escape_name(node.name)
                g = params.create_group(key, track_order=True)
                for pname, arr in node.params.items():
                    arr = np.ascontiguousarray(arr)
                    g.create_dataset(pname, data=arr, track_times=False, fletcher32=True)
                    digests[_param_part(key, pname)] = _array_digest(arr)
            for name, doc_text in docs.items():
                f.create_group(name).attrs["json"] = doc_text
                digests["/" + name] = _sha(doc_text.encode())
            f.attrs[CHECKSUMS] = json.dumps(digests, sort_keys=True)


# ---- reading --------------------------------------------------------------------------------
_H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, AttributeError,
              IndexError, MemoryError, SystemError)


@contextlib.contextmanager
def _h5(path: str, what: str):
    """Turn an HDF5 library error while reading `what` into one FormatError line."""
    try:
        yield
    except RefqError:
        raise
    except _H5_ERRORS as e:
        raise FormatError(f"{path}: cannot read {what} ({one_line(e, 160) or type(e).__name__}); the file is truncated "
                          f"or damaged: {RECREATE}") from None


def _open(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory, not a refq model file")
    try:
        f = h5py.File(path, "r")
    except _H5_ERRORS as e:
        raise FormatError(f"{path}: not a readable HDF5 file ({one_line(e, 160) or type(e).__name__}); is it truncated "
                          "or of another format?") from None
    try:
        check_global_heaps(path, path, _DAMAGED)
    except BaseException:
        f.close()
        raise
    return f


def _text_attr(obj, name: str, path: str, what: str) -> bytes | None:
    """The raw bytes of the scalar string attribute `name` of `obj`, None when absent."""
    with _h5(path, what):
        if name not in obj.attrs:
            return None
        aid = obj.attrs.get_id(name)
        info = h5py.check_string_dtype(aid.dtype)
        if info is None or aid.shape != ():
            raise FormatError(f"{path}: {what} is not a text attribute (it holds "
                              f"{aid.dtype} {aid.shape}); {_DAMAGED}")
        if info.length is None:
            raw = np.empty((), dtype=object)
            aid.read(raw, mtype=h5py.h5t.py_create(h5py.string_dtype("ascii")))
            raw = raw[()]
        else:
            raw = obj.attrs[name]
        return bytes(raw)


def _decode(raw: bytes, path: str, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: {what} is not UTF-8 text (byte {e.start}: "
                          f"{raw[e.start:e.start + 1]!r}); {_DAMAGED}") from None


def _json(raw: bytes, path: str, what: str):
    text = _decode(raw, path, what)
    try:
        return parse_json(text)
    except ValueError as e:
        raise FormatError(f"{path}: {what} is not valid refq JSON ({e}); {_DAMAGED}") from None


def _header(f, path: str) -> dict:
    """Check the version; return the digests {part: sha256}."""
    raw = _text_attr(f, "refq_format", path, "the format version (attribute 'refq_format')")
    if raw is None:
        with _h5(path, "the root attributes"):
            keras = "model_config" in f.attrs or "model_weights" in f
        hint = " (a Keras file? use `refq import`)" if keras else ""
        raise FormatError(f"{path}: not a refq model: no 'refq_format' attribute{hint}")
    version = raw.decode("ascii", "backslashreplace")
    parts = version.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or parts[0] != "1":
        raise FormatError(f"{path}: refq format version {version[:20]!r} is not supported by "
                          f"this refq (reads {FORMAT_VERSION}); upgrade refq, or re-create the "
                          f"file if it is damaged")
    if int(parts[1]) < 1:
        raise FormatError(f"{path}: refq format version {version} has no checksums and is no "
                          f"longer read; {RECREATE} with this refq")
    raw_digests = _text_attr(f, CHECKSUMS, path, f"the checksums (attribute '{CHECKSUMS}')")
    if raw_digests is None:
        raise FormatError(f"{path}: the checksums (attribute '{CHECKSUMS}') are missing; "
                          f"{_DAMAGED}")
    digests = _json(raw_digests, path, f"the checksums (attribute '{CHECKSUMS}')")
    if not isinstance(digests, dict) or not all(
            isinstance(v, str) and len(v) == 64 for v in digests.values()):
        raise FormatError(f"{path}: the checksums (attribute '{CHECKSUMS}') are not a "
                          f"{{part: sha256}} object; {_DAMAGED}")
    _verify(digests, "refq_format", _sha(raw), path)
    return digests


def _verify(digests: dict, part: str, digest: str, path: str):
    if part not in digests:
        raise FormatError(f"{path}: {_describe(part)} has no checksum; {_DAMAGED}")
    if digests[part] != digest:
        raise FormatError(f"{path}: {_describe(part)} does not match its checksum; {_DAMAGED}")


def _graph_json(f, path: str, digests: dict) -> dict:
    raw = _text_attr(f, "graph", path, "the graph JSON (attribute 'graph')")
    if raw is None:
        raise FormatError(f"{path}: the graph JSON (attribute 'graph') is missing; {_DAMAGED}")
    _verify(digests, "graph", _sha(raw), path)
    return _json(raw, path, "the graph JSON (attribute 'graph')")


def _structure(d, path: str, params=None) -> Graph:
    """Graph.from_json with the file named in its errors."""
    try:
        return Graph.from_json(d, params)
    except GraphError as e:
        raise GraphError(f"{path}: {e}; {_DAMAGED}") from None


def _member(f, name: str, path: str, what: str, kind):
    """The hard-linked member `name` of group `f`, which must be a `kind` (Group or Dataset)."""
    with _h5(path, what):
        link = f.get(name, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise FormatError(f"{path}: {what} is a {type(link).__name__}, not stored in the "
                              f"file; {_DAMAGED}")
        obj = f[name]
    if not isinstance(obj, kind):
        found = "dataset" if isinstance(obj, h5py.Dataset) else "group"
        want = "dataset" if kind is h5py.Dataset else "group"
        raise FormatError(f"{path}: {what} is a {found} where a {want} belongs; {_DAMAGED}")
    return obj


def _section_json(f, name: str, path: str, digests: dict):
    what = f"section '/{name}'"
    group = _member(f, name, path, what, h5py.Group)
    if group is None:
        return None
    raw = _text_attr(group, "json", path, f"{what} (attribute 'json')")
    if raw is None:
        raise FormatError(f"{path}: {what} has no 'json' attribute; {_DAMAGED}")
    _verify(digests, "/" + name, _sha(raw), path)
    return _json(raw, path, what)


def _read_params(f, path: str, digests: dict, node_names: list) -> dict:
    """{node name: {param: array}} from /params, every dataset checked against its digest."""
    by_key = {escape_name(n): n for n in node_names}
    out = {}
    group = _member(f, "params", path, "group /params", h5py.Group)
    if group is None:
        raise FormatError(f"{path}: the group /params is missing; {_DAMAGED}")
    with _h5(path, "group /params"):
        keys = list(group)
    for key in keys:
        if key not in by_key:
            raise FormatError(f"{path}: /params/{key} belongs to no node of the graph JSON; "
                              f"{_DAMAGED}")
        node = by_key[key]
        ngroup = _member(group, key, path, f"/params/{key} (node '{node}')", h5py.Group)
        with _h5(path, f"/params/{key} (node '{node}')"):
            pnames = list(ngroup)
        params = {}
        for pname in pnames:
            part = _param_part(key, pname)
            what = f"parameter {part} (node '{node}', tensor '{pname}')"
            ds = _member(ngroup, pname, path, what, h5py.Dataset)
            with _h5(path, what):
                dtype = ds.dtype
            if dtype.kind not in "fiu" or dtype.fields is not None or dtype.subdtype is not None:
                raise FormatError(f"{path}: {what} has dtype {dtype}, not a real numeric dtype; "
                                  f"{_DAMAGED}")
            with _h5(path, what):
                arr = np.asarray(ds[()])
            _verify(digests, part, _array_digest(arr), path)
            params[pname] = arr
        out[node] = params
    return out


def read_graph_json(path) -> dict:
    """The graph JSON of a .refq.h5 file, checked (version, digest, strict JSON, field types)
    without reading parameters (for `refq info --json`)."""
    path = os.fspath(path)
    with _open(path) as f:
        d = _graph_json(f, path, _header(f, path))
    _structure(d, path)
    return d


def load_section(path, name: str):
    """The JSON document stored in section `name` of a .refq.h5 file, or None if absent."""
    path = os.fspath(path)
    with _open(path) as f:
        digests = _header(f, path)
        _graph_json(f, path, digests)
        return _section_json(f, name, path, digests)


def compute_checksums(f) -> dict:
    """The digests {part: sha256} of the parts an open h5py file holds now, as `save` records
    them (for tools that edit a file in place and then store new digests). Parts that are not
    text attributes or numeric datasets are left out (loading refuses them anyway)."""
    path = f.filename
    digests = {}
    for part, obj, name in (("refq_format", f, "refq_format"), ("graph", f, "graph")):
        with contextlib.suppress(FormatError):
            raw = _text_attr(obj, name, path, part)
            if raw is not None:
                digests[part] = _sha(raw)
    for name, obj in f.items():
        if name == "params" and isinstance(obj, h5py.Group):
            for key, ngroup in obj.items():
                for pname, ds in (ngroup.items() if isinstance(ngroup, h5py.Group) else ()):
                    if isinstance(ds, h5py.Dataset) and ds.dtype.kind in "fiu":
                        digests[_param_part(key, pname)] = _array_digest(np.asarray(ds[()]))
        elif name not in _RESERVED and isinstance(obj, h5py.Group):
            with contextlib.suppress(FormatError):
                raw = _text_attr(obj, "json", path, name)
                if raw is not None:
                    digests["/" + name] = _sha(raw)
    return digests


def load(path) -> Graph:
    """Read, check (see the module docstring) and validate a .refq.h5 file."""
    path = os.fspath(path)
    with _open(path) as f:
        digests = _header(f, path)
        graph = _structure(_graph_json(f, path, digests), path)
        with _h5(path, "the root group"):
            members = list(f)
        present = {"refq_format", "graph"}
        for name in members:
            if name in _RESERVED:
                continue
            _section_json(f, name, path, digests)
            present.add("/" + name)
        params = _read_params(f, path, digests, [n.name for n in graph.nodes])
        present.update(_param_part(escape_name(n), p) for n, ps in params.items() for p in ps)
    missing = sorted(set(digests) - present)
    if missing:
        raise FormatError(f"{path}: {_describe(missing[0])} is listed in the checksums but "
                          f"missing from the file; {_DAMAGED}")
    for node in graph.nodes:
        node.params = params.get(node.name, {})
    try:
        return graph.validate()
    except RefqError as e:
        raise type(e)(f"{path}: {e}") from None
