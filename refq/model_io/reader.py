"""Reading a refq model file: `load`, `load_section`, `read_graph_json`, and `compute_checksums`
for tools that edit a file in place. Every check listed in `refq.model_io` under "Loading" is
made here; every failure is one FormatError (GraphError, ParamError for the graph) line naming the
file and the part."""
from __future__ import annotations

import contextlib
import os

import h5py
import numpy as np

from ..errors import FormatError, GraphError, RefqError, one_line
from ..graph import Graph
from ..hdf5_check import check_global_heaps
from .layout import (CHECKSUMS, DAMAGED, FORMAT_VERSION, RECREATE, RESERVED, array_digest,
                     describe, escape_name, param_part, sha)
from .strict_json import parse_json

__all__ = ["load", "load_section", "read_graph_json", "compute_checksums"]

_H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, AttributeError,
              IndexError, MemoryError, SystemError)
_CHECKSUMS_ATTR = f"the checksums (attribute '{CHECKSUMS}')"


def _why(e: BaseException) -> str:
    """An HDF5 library error as a short line (its type when it has no message)."""
    return one_line(e, 160) or type(e).__name__


# ---- the HDF5 objects ----------------------------------------------------------------------
@contextlib.contextmanager
def _h5(path: str, what: str):
    """Turn an HDF5 library error while reading `what` into one FormatError line."""
    try:
        yield
    except RefqError:
        raise
    except _H5_ERRORS as e:
        raise FormatError(f"{path}: cannot read {what} ({_why(e)}); the file is truncated or "
                          f"damaged: {RECREATE}") from None


def _open(path: str):
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory, not a refq model file")
    try:
        f = h5py.File(path, "r")
    except _H5_ERRORS as e:
        raise FormatError(f"{path}: not a readable HDF5 file ({_why(e)}); is it truncated or of "
                          "another format?") from None
    try:
        check_global_heaps(path, path, DAMAGED)
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
                              f"{aid.dtype} {aid.shape}); {DAMAGED}")
        if info.length is None:
            raw = np.empty((), dtype=object)
            aid.read(raw, mtype=h5py.h5t.py_create(h5py.string_dtype("ascii")))
            raw = raw[()]
        else:
            raw = obj.attrs[name]
        return bytes(raw)


def _member(f, name: str, path: str, what: str, kind):
    """The hard-linked member `name` of group `f`, which must be a `kind` (Group or Dataset)."""
    with _h5(path, what):
        link = f.get(name, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise FormatError(f"{path}: {what} is a {type(link).__name__}, not stored in the "
                              f"file; {DAMAGED}")
        obj = f[name]
    if not isinstance(obj, kind):
        found = "dataset" if isinstance(obj, h5py.Dataset) else "group"
        want = "dataset" if kind is h5py.Dataset else "group"
        raise FormatError(f"{path}: {what} is a {found} where a {want} belongs; {DAMAGED}")
    return obj


# ---- text, JSON and digests ----------------------------------------------------------------
def _json(raw: bytes, path: str, what: str):
    """`raw` as UTF-8 text parsed by the format's JSON rules; FormatError naming `what`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: {what} is not UTF-8 text (byte {e.start}: "
                          f"{raw[e.start:e.start + 1]!r}); {DAMAGED}") from None
    try:
        return parse_json(text)
    except ValueError as e:
        raise FormatError(f"{path}: {what} is not valid refq JSON ({e}); {DAMAGED}") from None


def _verify(digests: dict, part: str, digest: str, path: str):
    if part not in digests:
        raise FormatError(f"{path}: {describe(part)} has no checksum; {DAMAGED}")
    if digests[part] != digest:
        raise FormatError(f"{path}: {describe(part)} does not match its checksum; {DAMAGED}")


def _header(f, path: str) -> dict:
    """Check the version; return the digests {part: sha256}."""
    raw = _text_attr(f, "refq_format", path, describe("refq_format"))
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
    raw_digests = _text_attr(f, CHECKSUMS, path, _CHECKSUMS_ATTR)
    if raw_digests is None:
        raise FormatError(f"{path}: {_CHECKSUMS_ATTR} are missing; {DAMAGED}")
    digests = _json(raw_digests, path, _CHECKSUMS_ATTR)
    if not isinstance(digests, dict) or not all(
            isinstance(v, str) and len(v) == 64 for v in digests.values()):
        raise FormatError(f"{path}: {_CHECKSUMS_ATTR} are not a {{part: sha256}} object; "
                          f"{DAMAGED}")
    _verify(digests, "refq_format", sha(raw), path)
    return digests


# ---- the parts -----------------------------------------------------------------------------
def _graph_json(f, path: str, digests: dict) -> dict:
    what = describe("graph")
    raw = _text_attr(f, "graph", path, what)
    if raw is None:
        raise FormatError(f"{path}: {what} is missing; {DAMAGED}")
    _verify(digests, "graph", sha(raw), path)
    return _json(raw, path, what)


def _structure(d, path: str) -> Graph:
    """Graph.from_json with the file named in its errors."""
    try:
        return Graph.from_json(d)
    except GraphError as e:
        raise GraphError(f"{path}: {e}; {DAMAGED}") from None


def _section_json(f, name: str, path: str, digests: dict):
    what = describe("/" + name)
    group = _member(f, name, path, what, h5py.Group)
    if group is None:
        return None
    raw = _text_attr(group, "json", path, f"{what} (attribute 'json')")
    if raw is None:
        raise FormatError(f"{path}: {what} has no 'json' attribute; {DAMAGED}")
    _verify(digests, "/" + name, sha(raw), path)
    return _json(raw, path, what)


def _read_params(f, path: str, digests: dict, node_names: list) -> dict:
    """{node name: {param: array}} from /params, every dataset checked against its digest."""
    by_key = {escape_name(n): n for n in node_names}
    out = {}
    group = _member(f, "params", path, "group /params", h5py.Group)
    if group is None:
        raise FormatError(f"{path}: the group /params is missing; {DAMAGED}")
    with _h5(path, "group /params"):
        keys = list(group)
    for key in keys:
        if key not in by_key:
            raise FormatError(f"{path}: /params/{key} belongs to no node of the graph JSON; "
                              f"{DAMAGED}")
        node = by_key[key]
        ngroup = _member(group, key, path, f"/params/{key} (node '{node}')", h5py.Group)
        with _h5(path, f"/params/{key} (node '{node}')"):
            pnames = list(ngroup)
        params = {}
        for pname in pnames:
            part = param_part(key, pname)
            what = f"parameter {part} (node '{node}', tensor '{pname}')"
            ds = _member(ngroup, pname, path, what, h5py.Dataset)
            with _h5(path, what):
                dtype = ds.dtype
            if dtype.kind not in "fiu" or dtype.fields is not None or dtype.subdtype is not None:
                raise FormatError(f"{path}: {what} has dtype {dtype}, not a real numeric dtype; "
                                  f"{DAMAGED}")
            with _h5(path, what):
                arr = np.asarray(ds[()])
            _verify(digests, part, array_digest(arr), path)
            params[pname] = arr
        out[node] = params
    return out


# ---- the public readers --------------------------------------------------------------------
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
    for part in ("refq_format", "graph"):
        with contextlib.suppress(FormatError):
            raw = _text_attr(f, part, path, part)
            if raw is not None:
                digests[part] = sha(raw)
    for name, obj in f.items():
        if name == "params" and isinstance(obj, h5py.Group):
            for key, ngroup in obj.items():
                for pname, ds in (ngroup.items() if isinstance(ngroup, h5py.Group) else ()):
                    if isinstance(ds, h5py.Dataset) and ds.dtype.kind in "fiu":
                        digests[param_part(key, pname)] = array_digest(np.asarray(ds[()]))
        elif name not in RESERVED and isinstance(obj, h5py.Group):
            with contextlib.suppress(FormatError):
                raw = _text_attr(obj, "json", path, name)
                if raw is not None:
                    digests["/" + name] = sha(raw)
    return digests


def load(path) -> Graph:
    """Read, check (see `refq.model_io`) and validate a .refq.h5 file."""
    path = os.fspath(path)
    with _open(path) as f:
        digests = _header(f, path)
        graph = _structure(_graph_json(f, path, digests), path)
        with _h5(path, "the root group"):
            members = list(f)
        present = {"refq_format", "graph"}
        for name in members:
            if name in RESERVED:
                continue
            _section_json(f, name, path, digests)
            present.add("/" + name)
        params = _read_params(f, path, digests, [n.name for n in graph.nodes])
        present.update(param_part(escape_name(n), p) for n, ps in params.items() for p in ps)
    missing = sorted(set(digests) - present)
    if missing:
        raise FormatError(f"{path}: {describe(missing[0])} is listed in the checksums but "
                          f"missing from the file; {DAMAGED}")
    for node in graph.nodes:
        node.params = params.get(node.name, {})
    try:
        return graph.validate()
    except RefqError as e:
        raise type(e)(f"{path}: {e}") from None
