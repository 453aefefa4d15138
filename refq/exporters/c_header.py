"""C headers: `write_c_header`, `read_c_header` and `c_identifier`.

A header with a first-line provenance comment (refq version, case, profile, tensor), an include
guard, `#include <stdint.h>`, defines NAME_RANK, NAME_DIM0.., NAME_SIZE (elements),
NAME_ELEMENT_BITS, NAME_SIGNED, NAME_PACK, NAME_WORDS and NAME_DTYPE ("int8"...), and one array
`const TYPE name[] = {...};`. Unpacked (k = 1): TYPE is the element's container (int8_t for int4
and int8, ..., uint32_t, float, double) holding the element's value (sign-extended), written in
decimal (INT32_MIN/INT64_MIN for the most negative values); floats are written with enough digits
to round-trip. Packed (k > 1): TYPE is the word's container, uint8_t/uint16_t/uint32_t/uint64_t
(the smallest holding word_bits <= 64), holding the words (`refq.exporters.packing`) in
hexadecimal. NAME is the tensor name with every character outside [A-Za-z0-9_] replaced by '_'
(prefixed with 't_' when it would start with a digit); the defines use NAME in upper case.

The header describes itself; a sidecar (`refq.exporters.sidecar`), when present, is checked.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np

from ..errors import FormatError, InputError
from .packing import _check_pack, _container_bytes, _from_bytes, _to_bytes
from .sidecar import (ElementType, _layout_of, _provenance, _sidecar, _write, element_type,
                      read_sidecar)

_C_KEYWORDS = {"auto", "break", "case", "char", "const", "continue", "default", "do", "double",
               "else", "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long",
               "register", "restrict", "return", "short", "signed", "sizeof", "static", "struct",
               "switch", "typedef", "union", "unsigned", "void", "volatile", "while", "bool"}


def c_identifier(name: str) -> str:
    """A C identifier for tensor `name` (see the module docstring)."""
    s = re.sub(r"[^0-9A-Za-z_]", "_", str(name))
    if not s or s[0].isdigit():
        s = "t_" + s
    return s + "_" if s in _C_KEYWORDS else s


def _c_literal(v, et: ElementType) -> str:
    if et.kind == "f":
        x = float(v)
        if not math.isfinite(x):
            raise InputError("a C header cannot hold NaN or Inf values")
        return repr(x) + ("f" if et.bits == 32 else "")
    v = int(v)
    if et.kind == "i" and et.bits >= 32 and v == -(1 << (et.bits - 1)):
        return f"INT{et.bits}_MIN"
    if et.kind == "u" and et.bits >= 32:
        return f"{v}u" if et.bits == 32 else f"{v}ull"
    if et.kind == "i" and et.bits == 64:
        return f"{v}ll"
    return str(v)


def check_c_array(a: np.ndarray, et: ElementType, pack: int):
    """InputError unless a C header can hold `a` as elements `et` packed `pack` per word: not
    empty, float16 only packed, unpacked floats finite (C has no NaN/Inf literal)."""
    if a.size == 0:
        raise InputError("a C array cannot be empty (export it as hex or bin)")
    if et.kind == "f" and et.bits == 16 and pack == 1:
        raise InputError("C has no portable float16 type; export float16 packed (pack >= 2) or "
                         "as hex/bin")
    if et.kind == "f" and pack == 1 and not np.isfinite(a).all():
        raise InputError("a C header cannot hold NaN or Inf values (export it as hex or bin)")


def write_c_header(path, array, name: str | None = None, *, pack: int = 1,
                   bits: int | None = None, layout: str | None = None, case: str | None = None,
                   profile: str | None = None, c_name: str | None = None) -> dict:
    """Write `array` as a C header and its sidecar; return the sidecar."""
    a = np.asarray(array)
    et = element_type(a, bits)
    pack = _check_pack(pack, et, "c")
    name = name if name is not None else os.path.splitext(os.path.basename(os.fspath(path)))[0]
    try:
        check_c_array(a, et, pack)
    except InputError as e:
        raise InputError(f"'{name}': {e}") from None
    ident = c_name or c_identifier(name)
    up = ident.upper()
    flat = a.reshape(-1)
    cb = _container_bytes(pack * et.bits, pack, et, "c")
    if pack == 1:
        ctype = et.c_type()
        lits = [_c_literal(v, et) for v in flat.tolist()]
        per_line = 8 if et.bits > 16 or et.kind == "f" else 16
    else:
        ctype = f"uint{8 * cb}_t"
        words = _to_bytes(flat, et, pack, cb).view(f"<u{cb}").reshape(-1)
        suffix = {1: "u", 2: "u", 4: "u", 8: "ull"}[cb]
        lits = [f"0x{int(w):0{2 * cb}x}{suffix}" for w in words.tolist()]
        per_line = 8 if cb <= 4 else 4
    guard = f"REFQ_{up}_H"
    lines = [f"// {_provenance(name, et, a.shape, layout, pack, case, profile)}",
             f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
             f"#define {up}_RANK {a.ndim}"]
    lines += [f"#define {up}_DIM{i} {d}" for i, d in enumerate(a.shape)]
    lines += [f"#define {up}_SIZE {a.size}", f"#define {up}_ELEMENT_BITS {et.bits}",
              f"#define {up}_SIGNED {int(et.kind != 'u')}",
              f"#define {up}_PACK {pack}  /* elements per word, element 0 in the least "
              "significant bits */",
              f"#define {up}_WORDS {len(lits)}", f'#define {up}_DTYPE "{et.name}"', "",
              f"const {ctype} {ident}[] = {{"]
    for i in range(0, len(lits), per_line):
        lines.append("    " + ", ".join(lits[i:i + per_line]) + ",")
    lines += ["};", "", f"#endif  /* {guard} */", ""]
    data = "\n".join(lines).encode()
    sc = _sidecar("c", path, data, name, et, a.shape, layout, pack, case, profile, cb, ident)
    _write(path, data, sc)
    return sc


_C_ARRAY = re.compile(r"(?:static\s+)?const\s+(\w+)\s+(\w+)\s*\[[^\]]*\]\s*=\s*\{(.*?)\}\s*;", re.S)
_C_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s+(.*?)\s*$", re.M)


def _c_int(tok: str, where: str) -> int:
    t = tok.strip()
    limits = {"INT8_MIN": -128, "INT16_MIN": -(1 << 15), "INT32_MIN": -(1 << 31),
              "INT64_MIN": -(1 << 63), "INT8_MAX": 127, "INT16_MAX": (1 << 15) - 1,
              "INT32_MAX": (1 << 31) - 1, "INT64_MAX": (1 << 63) - 1}
    if t in limits:
        return limits[t]
    m = re.fullmatch(r"\(?\s*(-?)\s*(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\s*\)?", t)
    if not m:
        raise FormatError(f"{where}: {tok!r} is not an integer literal")
    v = int(m.group(2), 0) if m.group(2)[:2].lower() == "0x" else int(m.group(2))
    return -v if m.group(1) else v


def read_c_header(path, sidecar=None) -> np.ndarray:
    """Parse a C header written by `write_c_header` (or any header with one `const T name[]`
    initializer and the NAME_* defines). The header's own defines describe it; a sidecar
    (`sidecar`, or `path` + ".json" when it exists) is checked against them."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError(f"{path}: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not a text file") from None
    sc = None
    if sidecar is not None or os.path.isfile(path + ".json"):
        sc = read_sidecar(path, sidecar)
        layout = _layout_of(path, sc, "c")  # sha256 and field checks
    body = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    body = re.sub(r"//[^\n]*", " ", body)
    arrays = _C_ARRAY.findall(body)
    if sc is not None and sc.get("c_name"):
        arrays = [x for x in arrays if x[1] == sc["c_name"]]
    if len(arrays) != 1:
        raise FormatError(f"{path}: expected exactly one `const TYPE name[] = {{...}};` array, "
                          f"found {len(arrays)}")
    ctype, ident, init = arrays[0]
    up = ident.upper()
    defs = {k: v for k, v in _C_DEFINE.findall(body)}

    def define(key, default=None):
        if up + key not in defs:
            if default is None:
                raise FormatError(f"{path}: no #define {up}{key}")
            return default
        return defs[up + key].strip()

    if sc is not None:
        et, shape, pack, count = layout
    else:
        dt = define("_DTYPE").strip('"')
        try:
            et = ElementType(dt)
        except FormatError as e:
            raise FormatError(f"{path}: {e}") from None
        rank = _c_int(define("_RANK"), path)
        if not 0 <= rank <= 32:
            raise FormatError(f"{path}: #define {up}_RANK {rank} is not a rank (0 to 32)")
        shape = tuple(_c_int(define(f"_DIM{i}"), path) for i in range(rank))
        pack = _c_int(define("_PACK", "1"), path)
        if any(d < 0 for d in shape) or not 1 <= pack or pack * et.bits > 64:
            raise FormatError(f"{path}: #define {up}_DIM* {list(shape)} or {up}_PACK {pack} is "
                              f"invalid for {et.name} (dimensions >= 0, words of at most 64 bits)")
        count = int(math.prod(shape))
    for key, want in (("_ELEMENT_BITS", et.bits), ("_PACK", pack), ("_SIZE", count)):
        if up + key in defs and _c_int(defs[up + key], path) != want:
            raise FormatError(f"{path}: #define {up}{key} {defs[up + key]} disagrees with "
                              f"{want} ({et.name} {list(shape)}, pack {pack})")
    toks = [t for t in (s.strip() for s in init.split(",")) if t]
    cb = _container_bytes(pack * et.bits, pack, et, "c")
    nwords = -(-count // pack)
    if len(toks) != nwords:
        raise FormatError(f"{path}: {len(toks)} initializers, expected {nwords} ({et.name} "
                          f"{list(shape)} packed {pack}); the header is truncated or its defines "
                          "are wrong")
    if pack == 1 and et.kind == "f":
        try:
            vals = np.array([float(t.rstrip("fF")) for t in toks], dtype=et.np)
        except ValueError:
            raise FormatError(f"{path}: a float initializer is malformed") from None
        return vals.reshape(shape)
    ints = [_c_int(t, path) for t in toks]
    if pack == 1:
        lo = -(1 << (et.bits - 1)) if et.kind == "i" else 0
        hi = (1 << (et.bits - 1)) - 1 if et.kind == "i" else (1 << et.bits) - 1
        if ints and (min(ints) < lo or max(ints) > hi):
            bad = next(v for v in ints if v < lo or v > hi)
            raise FormatError(f"{path}: value {bad} is outside {et.name} [{lo}, {hi}]")
        return np.array(ints, dtype=et.np).reshape(shape)
    if any(v < 0 or v >= (1 << (8 * cb)) for v in ints):
        raise FormatError(f"{path}: a packed word is outside uint{8 * cb}_t")
    b = np.array(ints, dtype=np.uint64).astype(f"<u{cb}").view(np.uint8).reshape(nwords, cb)
    return _from_bytes(b, et, pack, count, path).reshape(shape)
