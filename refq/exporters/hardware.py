"""Hardware formats for tensors: Verilog `$readmemh` hex, C headers and raw little-endian binaries.

    sidecar = write_hex("w.hex", codes, name="conv1/weight", pack=4)       # + w.hex.json
    sidecar = write_c_header("w.h", codes, name="conv1/weight")            # + w.h.json
    sidecar = write_bin("w.bin", codes, name="conv1/weight")               # + w.bin.json
    codes = read_hex("w.hex")       # read_c_header("w.h"), read_bin("w.bin"): the same array back
    export_arrays({"conv1/weight": codes, ...}, "out/", formats=("hex", "c", "bin"), pack=1)
    export_integer_model(graph, "out/")       # the integer parameters of a lowered graph
    export_case("golden/layer.dense.basic", "out/")   # every array of a golden case

All three formats are produced from the same array by the same bit layout. This is the public
entry point; the work is split in five modules:
    `refq.exporters.packing`   the bit layout: elements' bit patterns, packed into words;
    `refq.exporters.sidecar`   element types (dtype, width) and the JSON sidecar every file gets;
    `refq.exporters.hex`       `$readmemh` hex (`write_hex`, `read_hex`);
    `refq.exporters.c_header`  C headers (`write_c_header`, `read_c_header`, `c_identifier`);
    `refq.exporters.binary`    raw little-endian binaries (`write_bin`, `read_bin`).
Here: reading any dump by its suffix (`read_dump`) and exporting many arrays at once
(`export_arrays`, `export_integer_model`, `export_case`).

Every file is written atomically (refq.atomic); a parse error is a FormatError naming the file.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..atomic import atomic_path
from ..errors import FormatError, InputError
from . import sidecar as _sidecar_module
from .binary import read_bin, write_bin
from .c_header import c_identifier, read_c_header, write_c_header
from .hex import read_hex, write_hex
from .sidecar import _version, element_type, read_sidecar

__all__ = ["FORMATS", "SUFFIXES", "write_hex", "write_c_header", "write_bin", "read_hex",
           "read_c_header", "read_bin", "read_sidecar", "read_dump", "export_arrays",
           "export_integer_model", "export_case", "c_identifier", "element_type"]

FORMATS = ("hex", "c", "bin")
SUFFIXES = {"hex": ".hex", "c": ".h", "bin": ".bin"}

# Public before the split but outside __all__: still importable from here.
ElementType = _sidecar_module.ElementType
SIDECAR_VERSION = _sidecar_module.SIDECAR_VERSION


_READERS = {"hex": read_hex, "c": read_c_header, "bin": read_bin}
_WRITERS = {"hex": write_hex, "c": write_c_header, "bin": write_bin}


def read_dump(path, sidecar=None) -> np.ndarray:
    """Read a .npy, .hex, .h or .bin file by its suffix (hex/bin with their sidecars)."""
    path = os.fspath(path)
    if path.endswith(".npy"):
        if not os.path.isfile(path):
            raise FormatError(f"{path}: no such file")
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise FormatError(f"{path}: not a readable .npy file ({e})") from None
    for fmt, suf in SUFFIXES.items():
        if path.endswith(suf):
            return _READERS[fmt](path, sidecar)
    raise FormatError(f"{path}: unknown dump format; use .npy, .hex, .h or .bin")


# ---- exporting many arrays ----------------------------------------------------------------------

def _check_formats(formats):
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"unknown export format(s) {bad}; choose from {list(FORMATS)}")
    return formats


def export_arrays(arrays: dict, out_dir, formats=FORMATS, *, pack: int = 1,
                  pack_bits: int | None = 8, layouts: dict | None = None,
                  bits: dict | None = None, case: str | None = None,
                  profile: str | None = None, subdir: str = "") -> dict:
    """Write every array of `arrays` ({name: array}) in every format under `out_dir`/`subdir`,
    files named `escape_name(name)` + suffix, each with its sidecar. `pack` applies to arrays whose
    elements have at most `pack_bits` bits (default 8: int4/int8/uint8 weights and activations);
    wider ones (int16, int32 biases, multipliers, shifts, floats) are written one per word
    (`pack_bits=None`: pack every array). `layouts`/`bits` map names to layouts/element widths.
    Returns {name: {format: relative file path}}. C identifiers are made unique by a numeric
    suffix when two names map to the same one."""
    from ..model_io import escape_name

    formats = _check_formats(formats)
    layouts, bits = layouts or {}, bits or {}
    index, idents = {}, set()
    for name, arr in arrays.items():
        a = np.asarray(arr)
        index[name] = {}
        for fmt in formats:
            rel = os.path.join(subdir, escape_name(name) + SUFFIXES[fmt]) if subdir \
                else escape_name(name) + SUFFIXES[fmt]
            path = os.path.join(out_dir, rel)
            k = pack
            if pack_bits is not None and a.dtype.kind in "iuf":
                ebits = bits.get(name) or a.dtype.itemsize * 8
                k = pack if ebits <= pack_bits and a.dtype.kind != "f" else 1
            kw = dict(pack=k, bits=bits.get(name), layout=layouts.get(name), case=case,
                      profile=profile)
            try:
                if fmt == "c":
                    ident, i = c_identifier(name), 2
                    while ident in idents:
                        ident, i = f"{c_identifier(name)}_{i}", i + 1
                    idents.add(ident)
                    _WRITERS[fmt](path, a, name, c_name=ident, **kw)
                else:
                    _WRITERS[fmt](path, a, name, **kw)
            except InputError as e:
                raise InputError(f"tensor '{name}': {e}") from None
            index[name][fmt] = rel.replace(os.sep, "/")
    return index


def _write_index(out_dir, doc):
    with atomic_path(os.path.join(out_dir, "index.json")) as tmp:
        with open(tmp, "w") as f:
            f.write(json.dumps(doc, sort_keys=True, indent=1) + "\n")


_PARAM_LAYOUTS = {("int_conv2d", "weight"): "OHWI", ("int_dense", "weight"): "OI"}


def export_integer_model(graph, out_dir, formats=FORMATS, *, pack: int = 1,
                         pack_bits: int | None = 8, bits: dict | None = None,
                         case: str | None = None) -> dict:
    """Export the integer parameters (weights, int32 biases, multipliers, shifts, tables) of an
    integer graph (from `refq.fixedpoint.lowering.lower`) under `out_dir`, named "<node>/<param>",
    plus `index.json`: {refq_version, profile, case, arrays: {name: {format: file}}, nodes: [{name,
    op, inputs, outputs, attrs, params: [names]}], tensors: graph.meta["integer"]["tensors"] (scale,
    zero point, dtype per integer tensor)}. Float parameters (e.g. real_multiplier, kept for
    reference) are skipped. Returns the index."""
    formats = _check_formats(formats)
    meta = graph.meta.get("integer")
    if not isinstance(meta, dict):
        raise InputError(f"graph '{graph.name}' is not an integer graph (no meta['integer']); "
                         "lower it first with `refq lower`")
    profile = meta.get("profile")
    arrays, layouts, nodes = {}, {}, []
    for n in graph.topological_order():
        names = []
        for pname, arr in n.params.items():
            if np.asarray(arr).dtype.kind not in "iu":
                continue
            key = f"{n.name}/{pname}"
            arrays[key] = arr
            names.append(key)
            lay = _PARAM_LAYOUTS.get((n.op, pname))
            if lay is None and np.ndim(arr) == 1 and pname in ("bias", "multiplier", "shift"):
                lay = "O"
            layouts[key] = lay
        nodes.append({"name": n.name, "op": n.op, "inputs": list(n.inputs),
                      "outputs": list(n.outputs), "attrs": n.attrs, "params": names})
    files = export_arrays(arrays, out_dir, formats, pack=pack, pack_bits=pack_bits,
                          layouts=layouts, bits=bits, case=case, profile=profile)
    index = {"refq_version": _version(), "profile": profile, "case": case, "graph": graph.name,
             "arrays": files, "nodes": nodes, "tensors": meta.get("tensors", {})}
    _write_index(out_dir, json.loads(json.dumps(index, default=_json_default)))
    return index


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def export_case(case_dir, out_dir, formats=FORMATS, *, pack: int = 1,
                pack_bits: int | None = 8) -> dict:
    """Export every array of golden case `case_dir` (params, inputs, outputs, trace; its hashes
    are checked first) under `out_dir`/<section>/, with `index.json` {refq_version, case, kind,
    profile, arrays: {section: {name: {format: file}}}}. Parameters whose encoding in the case's
    "quantization" has dtype int4/uint4 are written as 4-bit elements; weights get the layout
    OHWI (rank 4) or OI (rank 2), per-channel vectors O. Returns the index."""
    from ..conformance.verify import read_case

    formats = _check_formats(formats)
    case = read_case(case_dir)
    cj = case.case_json
    index = {"refq_version": _version(), "case": cj.get("case"), "kind": cj.get("kind"),
             "profile": cj.get("profile"), "arrays": {}}
    quant = cj.get("quantization") or {}
    # 4-bit tensors (int4 weights) are held in int8 arrays; their encoding declares the dtype
    bits = {name: 4 for name, enc in quant.items()
            if isinstance(enc, dict) and enc.get("dtype") in ("int4", "uint4")}
    for section in ("params", "inputs", "outputs", "trace"):
        entries = cj.get(section) or {}
        arrays = {name: case.array(section, name) for name in entries}
        layouts = {name: e.get("layout") for name, e in entries.items()}
        if section == "params":
            for name, a in arrays.items():
                pname = name.rsplit("/", 1)[-1]
                if layouts.get(name) is None and pname == "weight" and np.ndim(a) in (2, 4):
                    layouts[name] = "OHWI" if np.ndim(a) == 4 else "OI"
                elif layouts.get(name) is None and np.ndim(a) == 1 and \
                        pname in ("bias", "multiplier", "shift", "real_multiplier"):
                    layouts[name] = "O"
        index["arrays"][section] = export_arrays(
            arrays, out_dir, formats, pack=pack, pack_bits=pack_bits, layouts=layouts,
            bits={k: v for k, v in bits.items() if k in arrays}, case=cj.get("case"),
            profile=cj.get("profile"), subdir=section)
    _write_index(out_dir, index)
    return index
