"""Hardware formats for tensors: Verilog `$readmemh` hex, C headers and raw little-endian binaries.

    sidecar = write_hex("w.hex", codes, name="conv1/weight", pack=4)       # + w.hex.json
    sidecar = write_c_header("w.h", codes, name="conv1/weight")            # + w.h.json
    sidecar = write_bin("w.bin", codes, name="conv1/weight")               # + w.bin.json
    codes = read_hex("w.hex")       # read_c_header("w.h"), read_bin("w.bin"): the same array back
    export_arrays({"conv1/weight": codes, ...}, "out/", formats=("hex", "c", "bin"), pack=1)
    export_integer_model(graph, "out/")       # the integer parameters of a lowered graph
    export_case("golden/layer.dense.basic", "out/")   # every array of a golden case

All three formats are produced from the same array by the same bit layout. This is the public
entry point; the work is split in six modules:
    `refq.exporters.packing`   the bit layout: elements' bit patterns, packed into words;
    `refq.exporters.sidecar`   element types (dtype, width) and the JSON sidecar every file gets;
    `refq.exporters.hex`       `$readmemh` hex (`write_hex`, `read_hex`);
    `refq.exporters.c_header`  C headers (`write_c_header`, `read_c_header`, `c_identifier`);
    `refq.exporters.binary`    raw little-endian binaries (`write_bin`, `read_bin`);
    `refq.exporters.npy`       .npy files, never unpickled (`read_npy`).
Here: reading any dump by its suffix (`read_dump`) and exporting many arrays at once
(`export_arrays`, `export_integer_model` after `check_integer_metadata`, `export_case`); an export
checks every input before it writes its first file.

Every file is written atomically (refq.atomic); a parse error is a FormatError naming the file.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..atomic import atomic_path
from ..errors import FormatError, InputError, OutputError, one_line
from ..fixedpoint.mixed import float_nodes
from . import sidecar as _sidecar_module
from .binary import read_bin, write_bin
from .c_header import check_c_array, c_identifier, read_c_header, write_c_header
from .hex import read_hex, write_hex
from .npy import read_npy
from .packing import _check_pack
from .sidecar import _is_int, _version, element_type, read_sidecar

__all__ = ["FORMATS", "SUFFIXES", "write_hex", "write_c_header", "write_bin", "read_hex",
           "read_c_header", "read_bin", "read_sidecar", "read_dump", "read_npy", "export_arrays",
           "export_integer_model", "export_case", "check_integer_metadata", "c_identifier",
           "element_type"]

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
        return read_npy(path)
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


def _check_out_dir(out_dir, case_dir=None):
    """OutputError when `out_dir` exists and is not a directory, or lies inside golden case
    directory `case_dir` (whose files it would change)."""
    out = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"{out_dir}: exists and is not a directory; give an output directory "
                         "with -o")
    if case_dir is not None:
        case = os.path.abspath(os.fspath(case_dir))
        if out == case or out.startswith(case + os.sep):
            raise OutputError(f"{out_dir}: lies inside the golden case {case_dir}, whose files it "
                             "would change; give an output directory outside it with -o")


def _plan(arrays: dict, formats, *, pack, pack_bits, layouts, bits, case, profile, subdir,
          source) -> list:
    """[(name, format, relative path, array, writer keywords)] of `export_arrays`, every array and
    format checked first (element type, packing, what a C header can hold): InputError naming
    `source`, the tensor and the format."""
    from ..model_io import escape_name

    jobs, idents = [], set()
    for name, arr in arrays.items():
        a = np.asarray(arr)
        for fmt in formats:
            rel = escape_name(name) + SUFFIXES[fmt]
            rel = f"{subdir}/{rel}" if subdir else rel
            k = pack
            if pack_bits is not None and a.dtype.kind in "iuf":
                ebits = bits.get(name) or a.dtype.itemsize * 8
                k = pack if ebits <= pack_bits and a.dtype.kind != "f" else 1
            kw = dict(pack=k, bits=bits.get(name), layout=layouts.get(name), case=case,
                      profile=profile)
            try:
                et = element_type(a, bits.get(name))
                _check_pack(k, et, fmt)
                if fmt == "c":
                    check_c_array(a, et, k)
            except InputError as e:
                prefix = f"{source}: " if source else ""
                raise InputError(f"{prefix}tensor '{name}' ({fmt}): {one_line(e)}") from None
            if fmt == "c":
                ident, i = c_identifier(name), 2
                while ident in idents:
                    ident, i = f"{c_identifier(name)}_{i}", i + 1
                idents.add(ident)
                kw["c_name"] = ident
            jobs.append((name, fmt, rel, a, kw))
    return jobs


def _write_jobs(jobs: list, out_dir) -> dict:
    """Write planned jobs under `out_dir`; {name: {format: relative path}}."""
    index: dict = {}
    for name, fmt, rel, a, kw in jobs:
        _WRITERS[fmt](os.path.join(out_dir, *rel.split("/")), a, name, **kw)
        index.setdefault(name, {})[fmt] = rel
    return index


def export_arrays(arrays: dict, out_dir, formats=FORMATS, *, pack: int = 1,
                  pack_bits: int | None = 8, layouts: dict | None = None,
                  bits: dict | None = None, case: str | None = None,
                  profile: str | None = None, subdir: str = "", source: str | None = None) -> dict:
    """Write every array of `arrays` ({name: array}) in every format under `out_dir`/`subdir`,
    files named `escape_name(name)` + suffix, each with its sidecar. `pack` applies to arrays whose
    elements have at most `pack_bits` bits (default 8: int4/int8/uint8 weights and activations);
    wider ones (int16, int32 biases, multipliers, shifts, floats) are written one per word
    (`pack_bits=None`: pack every array). `layouts`/`bits` map names to layouts/element widths.
    Returns {name: {format: relative file path}}. C identifiers are made unique by a numeric
    suffix when two names map to the same one. Every array is checked before the first file is
    written (InputError naming `source`, the tensor and the format), so a refused export writes
    nothing."""
    formats = _check_formats(formats)
    _check_out_dir(out_dir)
    jobs = _plan(arrays, formats, pack=pack, pack_bits=pack_bits, layouts=layouts or {},
                 bits=bits or {}, case=case, profile=profile, subdir=subdir, source=source)
    return _write_jobs(jobs, out_dir)


def _write_index(out_dir, doc):
    with atomic_path(os.path.join(out_dir, "index.json")) as tmp:
        with open(tmp, "w") as f:
            f.write(json.dumps(doc, sort_keys=True, indent=1) + "\n")


_PARAM_LAYOUTS = {("int_conv2d", "weight"): "OHWI", ("int_dense", "weight"): "OI",
                  ("int_conv_transpose2d", "weight"): "OHWI"}
#: dtypes of the integer tensors of an integer graph (graph.meta["integer"]["tensors"])
_INT_TENSOR_DTYPES = ("int8", "uint8", "int16", "int32")
_RELOWER = "lower the model again with `refq lower` (refq.fixedpoint.lowering.lower)"


def _is_real_param(pname: str) -> bool:
    """Float reference parameters that an integer graph keeps beside the integer ones (they are
    not exported): real_multiplier, and names ending in _real (a_real, b_real)."""
    return pname == "real_multiplier" or pname.endswith("_real")


def _number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def check_integer_metadata(graph, source: str) -> dict:
    """graph.meta["integer"] of an integer graph, checked for what an export writes (sidecars and
    index.json): a profile name; an encoding {scale > 0 finite, zero_point, dtype, qmin <= qmax}
    in "tensors" for every integer tensor (each node output except int_dequantize's, and every
    int_dequantize input); every parameter an integer array except the float reference ones
    (`_is_real_param`). InputError naming `source`, the node and the tensor otherwise."""
    meta = graph.meta.get("integer")
    if not isinstance(meta, dict):
        raise InputError(f"{source}: not an integer model (no meta['integer']); lower it first "
                         "with `refq lower`, or give a golden case directory")
    profile = meta.get("profile")
    if not isinstance(profile, str) or not profile:
        raise InputError(f"{source}: meta['integer'] names no profile (the sidecars and "
                         f"index.json record it); {_RELOWER}")
    tensors = meta.get("tensors")
    if not isinstance(tensors, dict):
        raise InputError(f"{source}: meta['integer'] has no 'tensors' table of encodings "
                         f"(scale, zero point, dtype of every integer tensor); {_RELOWER}")
    # float kernels (not an integer op whose encoding is missing, which is named below)
    floats = [t for t in float_nodes(graph) if not graph.node(t).op.startswith("int_")
              or graph.node(t).op.startswith("int_f32_")]
    if floats:
        first = graph.node(floats[0])
        raise InputError(f"{source}: node '{first.name}' ({first.op}) computes on float tensors "
                         f"(one of {len(floats)} nodes of a float segment between int_dequantize "
                         "and int_quantize); an export writes integer layers only: export a "
                         "model without float segments, or use its golden case (refq golden "
                         "generate --model)")
    for n in graph.topological_order():
        needed = n.inputs[:1] if n.op == "int_dequantize" else n.outputs
        for t in needed:
            e = tensors.get(t)
            where = f"{source}: node '{n.name}' ({n.op}), tensor '{t}'"
            if not isinstance(e, dict):
                raise InputError(f"{where}: no encoding in meta['integer']['tensors'], so the "
                                 f"export would have no scale or zero point; {_RELOWER}")
            ok = (_number(e.get("scale")) and np.isfinite(e["scale"]) and e["scale"] > 0
                  and e.get("dtype") in _INT_TENSOR_DTYPES
                  and all(_is_int(e.get(k)) for k in ("zero_point", "qmin", "qmax"))
                  and e["qmin"] <= e["qmax"])
            if not ok:
                raise InputError(f"{where}: its encoding in meta['integer']['tensors'] is "
                                 f"malformed (scale {e.get('scale')!r}, zero_point "
                                 f"{e.get('zero_point')!r}, dtype {e.get('dtype')!r}, qmin "
                                 f"{e.get('qmin')!r}, qmax {e.get('qmax')!r}); {_RELOWER}")
        for pname, arr in n.params.items():
            if np.asarray(arr).dtype.kind not in "iu" and not _is_real_param(pname):
                raise InputError(f"{source}: node '{n.name}' ({n.op}), parameter '{pname}': "
                                 f"dtype {np.asarray(arr).dtype}, not an integer array; "
                                 f"{_RELOWER}")
    return meta


def export_integer_model(graph, out_dir, formats=FORMATS, *, pack: int = 1,
                         pack_bits: int | None = 8, bits: dict | None = None,
                         case: str | None = None, source: str | None = None) -> dict:
    """Export the integer parameters (weights, int32 biases, multipliers, shifts, tables) of an
    integer graph (from `refq.fixedpoint.lowering.lower`) under `out_dir`, named "<node>/<param>",
    plus `index.json`: {refq_version, profile, case, arrays: {name: {format: file}}, nodes: [{name,
    op, inputs, outputs, attrs, params: [names]}], tensors: graph.meta["integer"]["tensors"] (scale,
    zero point, dtype per integer tensor)}. The float reference parameters (real_multiplier,
    a_real, b_real) are skipped. `source` (the model file) prefixes error messages. The metadata
    (`check_integer_metadata`) and every array are checked before anything is written. Returns
    the index."""
    source = source or f"model '{graph.name}'"
    formats = _check_formats(formats)
    _check_out_dir(out_dir)
    meta = check_integer_metadata(graph, source)
    profile = meta["profile"]
    arrays, layouts, nodes = {}, {}, []
    for n in graph.topological_order():
        names = []
        for pname, arr in n.params.items():
            if _is_real_param(pname):
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
    jobs = _plan(arrays, formats, pack=pack, pack_bits=pack_bits, layouts=layouts,
                 bits=bits or {}, case=case, profile=profile, subdir="", source=source)
    try:
        doc = json.loads(json.dumps({"nodes": nodes, "tensors": meta["tensors"]},
                                    default=_json_default))
    except (TypeError, ValueError) as e:
        raise InputError(f"{source}: node attributes or meta['integer']['tensors'] cannot be "
                         f"written as JSON ({one_line(e)}); {_RELOWER}") from None
    files = _write_jobs(jobs, out_dir)
    index = {"refq_version": _version(), "profile": profile, "case": case, "graph": graph.name,
             "arrays": files, **doc}
    _write_index(out_dir, index)
    return index


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def export_case(case_dir, out_dir, formats=FORMATS, *, pack: int = 1,
                pack_bits: int | None = 8) -> dict:
    """Export every array of golden case `case_dir` (params, inputs, outputs, trace) under
    `out_dir`/<section>/, with `index.json` {refq_version, case, kind, profile, arrays: {section:
    {name: {format: file}}}}. The case is checked first (refq.conformance.case_reader.read_case: its
    case.json, hashes and arrays), then every array and format; a refused export writes nothing,
    and `out_dir` may not lie inside the case. Parameters whose encoding in the case's
    "quantization" has dtype int4/uint4 are written as 4-bit elements; weights get the layout
    OHWI (rank 4) or OI (rank 2), per-channel vectors O. Returns the index."""
    from ..conformance.case_reader import read_case
    from ..conformance.schema import SECTIONS

    formats = _check_formats(formats)
    _check_out_dir(out_dir, case_dir)
    case = read_case(case_dir)
    cj = case.case_json
    source = f"golden case {os.fspath(case_dir)}"
    quant = cj["quantization"]
    # 4-bit tensors (int4 weights) are held in int8 arrays; their encoding declares the dtype
    bits = {name: 4 for name, enc in quant.items()
            if isinstance(enc, dict) and enc.get("dtype") in ("int4", "uint4")}
    planned = {}
    for section in SECTIONS:
        entries = cj[section]
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
        planned[section] = _plan(arrays, formats, pack=pack, pack_bits=pack_bits,
                                 layouts=layouts, bits={k: v for k, v in bits.items()
                                                        if k in arrays},
                                 case=cj["case"], profile=cj["profile"], subdir=section,
                                 source=f"{source}, {section}")
    index = {"refq_version": _version(), "case": cj["case"], "kind": cj["kind"],
             "profile": cj["profile"],
             "arrays": {section: _write_jobs(jobs, out_dir) for section, jobs in planned.items()}}
    _write_index(out_dir, index)
    return index
