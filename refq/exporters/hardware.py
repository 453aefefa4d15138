"""Hardware formats for tensors: Verilog `$readmemh` hex, C headers and raw little-endian binaries.

    sidecar = write_hex("w.hex", codes, name="conv1/weight", pack=4)       # + w.hex.json
    sidecar = write_c_header("w.h", codes, name="conv1/weight")            # + w.h.json
    sidecar = write_bin("w.bin", codes, name="conv1/weight")               # + w.bin.json
    codes = read_hex("w.hex")       # read_c_header("w.h"), read_bin("w.bin"): the same array back
    export_arrays({"conv1/weight": codes, ...}, "out/", formats=("hex", "c", "bin"), pack=1)
    export_integer_model(graph, "out/")       # the integer parameters of a lowered graph
    export_case("golden/layer.dense.basic", "out/")   # every array of a golden case

All three formats are produced from the same array by the same bit layout:

Elements. An array is taken flat in C order (row-major: the last axis varies fastest; `layout`,
e.g. "NHWC" or "OHWI", names the axes). Each element is an `element_bits`-bit pattern:
- signed integers: two's complement at the element width (int4 -3 = 0xd, int8 -1 = 0xff);
- unsigned integers: the value (uint4 9 = 0x9);
- floats (float16/32/64): the IEEE-754 bit pattern.
element_bits is the dtype's width (4, 8, 16, 32 or 64); `bits=4` (or 8, 16, 32) stores a wider
integer array at that width when every value fits (int4 codes held in an int8 array).

Words. `pack=k` puts k consecutive elements into one memory word of k·element_bits bits, element 0
in the least significant bits ("lsb_first"): word j = Σ_i pattern[j·k + i] << (i·element_bits).
When the element count is not a multiple of k, the last word is completed with zero elements in
its high bits (`padding_elements` in the sidecar); parsers check that they are zero.

Formats.
- hex (`$readmemh`): one word per line, lower-case hexadecimal, exactly ceil(word_bits/4) digits
  (zero-padded), no address directives and, unless `comment=True`, no comments; word 0 first.
  Words may be arbitrarily wide. The parser also accepts what `$readmemh` accepts: `//` and
  `/* */` comments, several words per line, `_` separators, fewer digits, and `@address`
  directives that fill every word exactly once.
- c: a header with a first-line provenance comment (refq version, case, profile, tensor), an
  include guard, `#include <stdint.h>`, defines NAME_RANK, NAME_DIM0.., NAME_SIZE (elements),
  NAME_ELEMENT_BITS, NAME_SIGNED, NAME_PACK, NAME_WORDS and NAME_DTYPE ("int8"...), and one array
  `const TYPE name[] = {...};`. Unpacked (k = 1): TYPE is the element's container (int8_t for int4
  and int8, ..., uint32_t, float, double) holding the element's value (sign-extended), written in
  decimal (INT32_MIN/INT64_MIN for the most negative values); floats are written with enough digits
  to round-trip. Packed (k > 1): TYPE is the word's container, uint8_t/uint16_t/uint32_t/uint64_t
  (the smallest holding word_bits <= 64), holding the words in hexadecimal. NAME is the tensor
  name with every character outside [A-Za-z0-9_] replaced by '_' (prefixed with 't_' when it would
  start with a digit); the defines use NAME in upper case.
- bin: the words, each in its container (the smallest power-of-two number of bytes holding
  word_bits; one byte for k = 1 and 4-bit elements, which are sign-extended in that byte like the
  C header's int8_t), little-endian, word 0 first, no header.

Sidecar. Every file `F` gets `F.json` (sorted keys, indent 1): format ("hex" | "c" | "bin"), file,
name, dtype (the element type: int4, uint4, int8, ..., float64), shape, layout (or null), count
(elements), element_bits, signed, encoding ("twos_complement" | "unsigned" | "ieee754"), pack,
word_bits, words, padding_elements, container_bits (c, bin; null for hex), hex_digits (hex),
byte_order ("little" for bin, else null), order ("C"), element_order ("lsb_first"), c_name (c),
sha256 (of F's bytes), refq_version, case, profile, sidecar_version (1). The parsers need only
`dtype` and `shape` (`pack` defaults to 1), so another implementation can describe its own dumps
with a two-field sidecar; `sha256`, when present, is checked.

Parsed arrays have the numpy dtype of the element type (int8 for int4, uint8 for uint4). Every
file is written atomically (refq.atomic); a parse error is a FormatError naming the file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re

import numpy as np

from ..atomic import atomic_path
from ..errors import FormatError, InputError

__all__ = ["FORMATS", "SUFFIXES", "write_hex", "write_c_header", "write_bin", "read_hex",
           "read_c_header", "read_bin", "read_sidecar", "read_dump", "export_arrays",
           "export_integer_model", "export_case", "c_identifier", "element_type"]

FORMATS = ("hex", "c", "bin")
SUFFIXES = {"hex": ".hex", "c": ".h", "bin": ".bin"}
SIDECAR_VERSION = 1
_INT_BITS = (4, 8, 16, 32, 64)
_FLOATS = {"float16": 16, "float32": 32, "float64": 64}
_C_KEYWORDS = {"auto", "break", "case", "char", "const", "continue", "default", "do", "double",
               "else", "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long",
               "register", "restrict", "return", "short", "signed", "sizeof", "static", "struct",
               "switch", "typedef", "union", "unsigned", "void", "volatile", "while", "bool"}
_HEXDIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _version():
    from .. import __version__

    return __version__


# ---- element types ------------------------------------------------------------------------------

class ElementType:
    """dtype name, bits, kind ('i' signed, 'u' unsigned, 'f' float) and numpy container dtype."""

    def __init__(self, name: str):
        if name in _FLOATS:
            self.kind, self.bits = "f", _FLOATS[name]
        else:
            m = re.fullmatch(r"(u?)int(\d+)", str(name))
            if not m or int(m.group(2)) not in _INT_BITS:
                raise FormatError(f"unsupported element dtype {name!r}; use int4, int8, int16, "
                                  "int32, int64, their uint forms, float16, float32 or float64")
            self.kind, self.bits = ("u" if m.group(1) else "i"), int(m.group(2))
        self.name = name
        self.np = np.dtype(name if self.bits >= 8 else ("uint8" if self.kind == "u" else "int8"))

    @property
    def encoding(self):
        return {"i": "twos_complement", "u": "unsigned", "f": "ieee754"}[self.kind]

    def c_type(self):
        if self.kind == "f":
            return "float" if self.bits == 32 else ("double" if self.bits == 64 else "uint16_t")
        return f"{'u' if self.kind == 'u' else ''}int{max(self.bits, 8)}_t"


def element_type(array: np.ndarray, bits: int | None = None) -> ElementType:
    """The element type of `array` stored at `bits` (default: the dtype's width); InputError when
    the values do not fit or the dtype is not an integer/float type."""
    a = np.asarray(array)
    if a.dtype.kind == "f":
        if a.dtype.name not in _FLOATS:
            raise InputError(f"unsupported float dtype {a.dtype}")
        if bits not in (None, a.dtype.itemsize * 8):
            raise InputError(f"bits={bits} does not apply to {a.dtype} (floats keep their width)")
        return ElementType(a.dtype.name)
    if a.dtype.kind not in "iu":
        raise InputError(f"cannot export an array of dtype {a.dtype}; integers and floats only")
    width = a.dtype.itemsize * 8 if bits is None else int(bits)
    if width not in _INT_BITS:
        raise InputError(f"element bits must be one of {list(_INT_BITS)}, got {bits}")
    et = ElementType(f"{'u' if a.dtype.kind == 'u' else ''}int{width}")
    if a.size and width < 64:
        lo = 0 if et.kind == "u" else -(1 << (width - 1))
        hi = (1 << width) - 1 if et.kind == "u" else (1 << (width - 1)) - 1
        mn, mx = int(a.min()), int(a.max())
        if mn < lo or mx > hi:
            raise InputError(f"values [{mn}, {mx}] do not fit {et.name} [{lo}, {hi}]")
    return et


def _patterns(flat: np.ndarray, et: ElementType) -> np.ndarray:
    """Element bit patterns as uint64."""
    if et.kind == "f":
        return flat.astype(et.np).view(f"u{et.bits // 8}").astype(np.uint64)
    if et.bits == 64:
        return flat.astype(et.np).view(np.uint64)
    return (flat.astype(np.int64) & ((1 << et.bits) - 1)).astype(np.uint64)


def _values(patterns: np.ndarray, et: ElementType) -> np.ndarray:
    """Inverse of _patterns."""
    if et.kind == "f":
        return patterns.astype(f"u{et.bits // 8}").view(et.np)
    if et.bits == 64:
        return patterns.view(et.np)
    v = patterns.astype(np.int64)
    if et.kind == "i":
        v = np.where(v >= (1 << (et.bits - 1)), v - (1 << et.bits), v)
    return v.astype(et.np)


# ---- words <-> byte matrices --------------------------------------------------------------------

def _container_bytes(word_bits: int, pack: int, et: ElementType, fmt: str) -> int:
    if fmt == "hex":
        return (word_bits + 7) // 8
    if pack == 1:
        return max(et.bits, 8) // 8
    n = (word_bits + 7) // 8
    return 1 << (n - 1).bit_length()


def _to_bytes(values: np.ndarray, et: ElementType, pack: int, cbytes: int,
              sext: bool = False) -> np.ndarray:
    """(words, cbytes) uint8 matrix: each row one word, little-endian. sext: unpacked int4 is
    sign-extended in its byte (bin) instead of a bare nibble (hex)."""
    n = values.size
    words = -(-n // pack) if n else 0
    if sext and pack == 1 and et.bits == 4 and et.kind == "i":
        return values.astype(np.int8).view(np.uint8).reshape(n, 1)  # sign-extended container
    pat = np.zeros(words * pack, dtype=np.uint64)
    pat[:n] = _patterns(values, et)
    pat = pat.reshape(words, pack)
    if et.bits == 4:
        nib = np.zeros((words, pack + (pack & 1)), dtype=np.uint8)
        nib[:, :pack] = pat
        b = nib[:, 0::2] | (nib[:, 1::2] << 4)
    else:
        b = pat.astype(f"<u{et.bits // 8}").view(np.uint8).reshape(words, pack * et.bits // 8)
    out = np.zeros((words, cbytes), dtype=np.uint8)
    out[:, :b.shape[1]] = b
    return out


def _from_bytes(b: np.ndarray, et: ElementType, pack: int, count: int, where: str,
                sext: bool = False) -> np.ndarray:
    """Inverse of _to_bytes: the flat element values; FormatError on non-zero padding."""
    words = b.shape[0]
    if words != (-(-count // pack) if count else 0):
        raise FormatError(f"{where}: holds {words} words, expected {-(-count // pack)} for "
                          f"{count} elements packed {pack} per word")
    if sext and pack == 1 and et.bits == 4 and et.kind == "i":
        v = b[:, 0].view(np.int8)
        if v.size and (v.min() < -8 or v.max() > 7):
            raise FormatError(f"{where}: a byte holds {int(v.min() if v.min() < -8 else v.max())}, "
                              "outside int4 [-8, 7]")
        return v.astype(np.int8)
    if et.bits == 4:
        used = (pack + 1) // 2
        nib = np.empty((words, 2 * used), dtype=np.uint8)
        nib[:, 0::2] = b[:, :used] & 15
        nib[:, 1::2] = b[:, :used] >> 4
        extra_bits = nib[:, pack:]
        pat = nib[:, :pack].astype(np.uint64)
    else:
        used = pack * et.bits // 8
        pat = np.ascontiguousarray(b[:, :used]).view(f"<u{et.bits // 8}").reshape(words, pack)
        pat = pat.astype(np.uint64)
        extra_bits = None
    rest = b[:, used:]
    if rest.size and rest.any() or extra_bits is not None and extra_bits.size and extra_bits.any():
        w = int(np.argmax((rest.any(axis=1) if rest.size else 0) |
                          (extra_bits.any(axis=1) if extra_bits is not None and extra_bits.size
                           else 0)))
        raise FormatError(f"{where}: word {w} has bits set above its {pack} element(s) of "
                          f"{et.bits} bits; wrong element width or packing?")
    flat = pat.reshape(-1)
    if flat[count:].any():
        raise FormatError(f"{where}: the padding elements of the last word are not zero; wrong "
                          "packing or element order (element 0 belongs in the least significant "
                          "bits)?")
    return _values(flat[:count], et)


# ---- sidecars -----------------------------------------------------------------------------------

def _sidecar(fmt, path, data: bytes, name, et, shape, layout, pack, case, profile, cbytes,
             c_name=None):
    count = int(math.prod(shape))
    words = -(-count // pack) if count else 0
    return {
        "format": fmt, "file": os.path.basename(path), "name": name, "dtype": et.name,
        "shape": [int(d) for d in shape], "layout": layout, "count": count,
        "element_bits": et.bits, "signed": et.kind != "u", "encoding": et.encoding,
        "pack": pack, "word_bits": pack * et.bits, "words": words,
        "padding_elements": words * pack - count,
        "container_bits": None if fmt == "hex" else 8 * cbytes,
        "hex_digits": -(-pack * et.bits // 4) if fmt == "hex" else None,
        "byte_order": "little" if fmt == "bin" else None, "order": "C",
        "element_order": "lsb_first", "c_name": c_name,
        "sha256": hashlib.sha256(data).hexdigest(), "refq_version": _version(),
        "case": case, "profile": profile, "sidecar_version": SIDECAR_VERSION,
    }


def _write(path, data: bytes, sidecar: dict):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    with atomic_path(os.fspath(path) + ".json") as tmp:
        with open(tmp, "w") as f:
            f.write(json.dumps(sidecar, sort_keys=True, indent=1) + "\n")


def read_sidecar(path, sidecar=None) -> dict:
    """The sidecar of data file `path`: `sidecar` (a dict or a path), default `path` + ".json"."""
    if isinstance(sidecar, dict):
        return sidecar
    sp = os.fspath(sidecar) if sidecar is not None else os.fspath(path) + ".json"
    if not os.path.isfile(sp):
        raise FormatError(f"{path}: no sidecar {sp}; a hex or bin dump needs a JSON sidecar with "
                          "at least 'dtype' and 'shape'")
    try:
        with open(sp) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        raise FormatError(f"{sp}: not a readable JSON sidecar ({e})") from None
    if not isinstance(d, dict):
        raise FormatError(f"{sp}: a sidecar is a JSON object")
    return d


def _layout_of(path, sc: dict, fmt: str):
    """(ElementType, shape, pack, count) from a sidecar, checked; and the sha256 check."""
    where = os.fspath(path)
    if sc.get("format", fmt) != fmt:
        raise FormatError(f"{where}: the sidecar describes a '{sc.get('format')}' file, not {fmt}")
    try:
        et = ElementType(sc["dtype"])
        shape = tuple(int(d) for d in sc["shape"])
        pack = int(sc.get("pack", 1))
    except KeyError as e:
        raise FormatError(f"{where}: the sidecar lacks {e}; it needs 'dtype' and 'shape'") from None
    except (TypeError, ValueError):
        raise FormatError(f"{where}: the sidecar's dtype/shape/pack are malformed") from None
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from None
    if pack < 1 or any(d < 0 for d in shape):
        raise FormatError(f"{where}: invalid pack {pack} or shape {list(shape)} in the sidecar")
    if "element_bits" in sc and int(sc["element_bits"]) != et.bits:
        raise FormatError(f"{where}: sidecar element_bits {sc['element_bits']} disagrees with "
                          f"dtype {et.name}")
    if sc.get("order", "C") != "C" or sc.get("element_order", "lsb_first") != "lsb_first":
        raise FormatError(f"{where}: only order 'C' and element_order 'lsb_first' are supported")
    if "sha256" in sc:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != sc["sha256"]:
            raise FormatError(f"{where}: sha256 {digest[:12]}… differs from its sidecar's "
                              f"{str(sc['sha256'])[:12]}…; the file was modified after export")
    return et, shape, pack, int(math.prod(shape))


def _check_pack(pack, et, fmt):
    if not isinstance(pack, (int, np.integer)) or isinstance(pack, bool) or pack < 1:
        raise InputError(f"pack must be a positive integer, got {pack!r}")
    if fmt == "c" and pack > 1 and pack * et.bits > 64:
        raise InputError(f"a C header word holds at most 64 bits; pack {pack} × {et.bits} bits "
                         "is too wide (use hex or bin for wider words)")
    return int(pack)


# ---- hex ----------------------------------------------------------------------------------------

def write_hex(path, array, name: str | None = None, *, pack: int = 1, bits: int | None = None,
              layout: str | None = None, case: str | None = None, profile: str | None = None,
              comment: bool = False) -> dict:
    """Write `array` as `$readmemh` hex (one word per line) and its sidecar; return the sidecar."""
    a = np.asarray(array)
    et = element_type(a, bits)
    pack = _check_pack(pack, et, "hex")
    name = name if name is not None else os.path.basename(os.fspath(path))
    b = _to_bytes(a.reshape(-1), et, pack, _container_bytes(pack * et.bits, pack, et, "hex"))
    digits = -(-pack * et.bits // 4)
    nib = np.empty((b.shape[0], 2 * b.shape[1]), dtype=np.uint8)
    nib[:, 0::2] = b & 15
    nib[:, 1::2] = b >> 4
    text = np.empty((b.shape[0], digits + 1), dtype=np.uint8)
    text[:, :digits] = _HEXDIGITS[nib[:, :digits][:, ::-1]]
    text[:, digits] = ord("\n")
    data = text.tobytes()
    if comment:
        data = (f"// {_provenance(name, et, a.shape, layout, pack, case, profile)}\n").encode() \
            + data
    sc = _sidecar("hex", path, data, name, et, a.shape, layout, pack, case, profile, 0)
    _write(path, data, sc)
    return sc


_HEX_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def read_hex(path, sidecar=None) -> np.ndarray:
    """Parse a `$readmemh` file described by its sidecar (`path` + ".json" or `sidecar`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError(f"{path}: no such file")
    sc = read_sidecar(path, sidecar)
    et, shape, pack, count = _layout_of(path, sc, "hex")
    digits = -(-pack * et.bits // 4)
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: cannot read as text ({e})") from None
    text = _HEX_COMMENTS.sub(" ", text) if "/" in text else text
    tokens = text.split()
    nwords = -(-count // pack) if count else 0
    cb = _container_bytes(pack * et.bits, pack, et, "hex")
    if len(tokens) == nwords and "@" not in text and "_" not in text \
            and all(len(t) == digits for t in tokens):  # the common case, vectorised
        chars = np.frombuffer("".join(tokens).lower().encode(), dtype=np.uint8)
        nib = _HEX_VALUES[chars]
        if not (nib > 15).any():
            return _hex_words(nib.reshape(nwords, digits), et, pack, count, cb, digits,
                              path).reshape(shape)
    slots: list = [None] * nwords
    pos = 0
    for tok in tokens:
        if tok.startswith("@"):
            try:
                pos = int(tok[1:], 16)
            except ValueError:
                raise FormatError(f"{path}: bad address directive {tok!r}") from None
            continue
        t = tok.replace("_", "").lower()
        if not t or any(c not in "0123456789abcdef" for c in t):
            raise FormatError(f"{path}: word {pos} is {tok!r}, not a hexadecimal number (x/z "
                              "digits are not values)")
        if len(t) > digits:
            if t[:-digits].strip("0"):
                raise FormatError(f"{path}: word {pos} = {tok} has more than {pack * et.bits} "
                                  f"bits ({pack} × {et.name}); wrong width or packing?")
            t = t[-digits:]
        if pos >= nwords:
            raise FormatError(f"{path}: more words than the {nwords} expected for {count} "
                              f"elements of {et.name} packed {pack} per word (shape "
                              f"{list(shape)})")
        if slots[pos] is not None:
            raise FormatError(f"{path}: word {pos} is given twice")
        slots[pos] = t.rjust(digits, "0")
        pos += 1
    missing = [i for i, s in enumerate(slots) if s is None]
    if missing:
        raise FormatError(f"{path}: {len(missing)} of {nwords} words are missing (first: word "
                          f"{missing[0]}) for shape {list(shape)} {et.name} packed {pack}")
    chars = np.frombuffer("".join(slots).encode(), dtype=np.uint8)
    return _hex_words(_HEX_VALUES[chars].reshape(nwords, digits), et, pack, count, cb, digits,
                      path).reshape(shape)


def _hex_values():
    t = np.full(256, 255, dtype=np.uint8)
    for i, c in enumerate(b"0123456789abcdef"):
        t[c] = i
    return t


_HEX_VALUES = _hex_values()


def _hex_words(nib, et, pack, count, cb, digits, where):
    """Flat element values from a (words, digits) matrix of hex digit values, most significant
    digit first."""
    full = np.zeros((nib.shape[0], 2 * cb), dtype=np.uint8)
    full[:, :digits] = nib[:, ::-1]
    b = (full[:, 0::2] | (full[:, 1::2] << 4)).astype(np.uint8)
    return _from_bytes(b, et, pack, count, where)


# ---- bin ----------------------------------------------------------------------------------------

def write_bin(path, array, name: str | None = None, *, pack: int = 1, bits: int | None = None,
              layout: str | None = None, case: str | None = None,
              profile: str | None = None) -> dict:
    """Write `array` as raw little-endian words and its sidecar; return the sidecar."""
    a = np.asarray(array)
    et = element_type(a, bits)
    pack = _check_pack(pack, et, "bin")
    name = name if name is not None else os.path.basename(os.fspath(path))
    cb = _container_bytes(pack * et.bits, pack, et, "bin")
    data = _to_bytes(a.reshape(-1), et, pack, cb, sext=True).tobytes()
    sc = _sidecar("bin", path, data, name, et, a.shape, layout, pack, case, profile, cb)
    _write(path, data, sc)
    return sc


def read_bin(path, sidecar=None) -> np.ndarray:
    """Parse a raw binary described by its sidecar (`path` + ".json" or `sidecar`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError(f"{path}: no such file")
    sc = read_sidecar(path, sidecar)
    et, shape, pack, count = _layout_of(path, sc, "bin")
    cb = _container_bytes(pack * et.bits, pack, et, "bin")
    if "container_bits" in sc and sc["container_bits"] is not None \
            and int(sc["container_bits"]) != 8 * cb:
        raise FormatError(f"{path}: sidecar container_bits {sc['container_bits']} differs from "
                          f"the {8 * cb} bits this layout uses")
    with open(path, "rb") as f:
        raw = f.read()
    nwords = -(-count // pack) if count else 0
    if len(raw) != nwords * cb:
        raise FormatError(f"{path}: {len(raw)} bytes, expected {nwords * cb} ({nwords} words of "
                          f"{cb} bytes for shape {list(shape)} {et.name} packed {pack})")
    b = np.frombuffer(raw, dtype=np.uint8).reshape(nwords, cb)
    return _from_bytes(b, et, pack, count, path, sext=True).reshape(shape)


# ---- C header -----------------------------------------------------------------------------------

def c_identifier(name: str) -> str:
    """A C identifier for tensor `name` (see the module docstring)."""
    s = re.sub(r"[^0-9A-Za-z_]", "_", str(name))
    if not s or s[0].isdigit():
        s = "t_" + s
    return s + "_" if s in _C_KEYWORDS else s


def _provenance(name, et, shape, layout, pack, case, profile) -> str:
    lay = f" layout {layout}" if layout else ""
    pk = f", {pack} per word" if pack > 1 else ""
    return (f"generated by refq {_version()} | case: {case or '-'} | profile: {profile or '-'} | "
            f"tensor '{name}' {et.name} {list(shape)}{lay}{pk}")


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


def write_c_header(path, array, name: str | None = None, *, pack: int = 1,
                   bits: int | None = None, layout: str | None = None, case: str | None = None,
                   profile: str | None = None, c_name: str | None = None) -> dict:
    """Write `array` as a C header and its sidecar; return the sidecar."""
    a = np.asarray(array)
    et = element_type(a, bits)
    pack = _check_pack(pack, et, "c")
    name = name if name is not None else os.path.splitext(os.path.basename(os.fspath(path)))[0]
    if a.size == 0:
        raise InputError(f"'{name}': a C array cannot be empty")
    if et.kind == "f" and et.bits == 16 and pack == 1:
        raise InputError(f"'{name}': C has no portable float16 type; export float16 packed "
                         "(pack >= 2) or as hex/bin")
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
        _layout_of(path, sc, "c")  # sha256 and field checks
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
        et, shape, pack, count = ElementType(sc["dtype"]), tuple(sc["shape"]), \
            int(sc.get("pack", 1)), int(math.prod(sc["shape"]))
    else:
        dt = define("_DTYPE").strip('"')
        try:
            et = ElementType(dt)
        except FormatError as e:
            raise FormatError(f"{path}: {e}") from None
        rank = _c_int(define("_RANK"), path)
        shape = tuple(_c_int(define(f"_DIM{i}"), path) for i in range(rank))
        pack = _c_int(define("_PACK", "1"), path)
        count = int(math.prod(shape))
    for key, want in (("_ELEMENT_BITS", et.bits), ("_PACK", pack), ("_SIZE", count)):
        if up + key in defs and _c_int(defs[up + key], path) != want:
            raise FormatError(f"{path}: #define {up}{key} {defs[up + key]} disagrees with "
                              f"{want} ({et.name} {list(shape)}, pack {pack})")
    toks = [t for t in (s.strip() for s in init.split(",")) if t]
    cb = _container_bytes(pack * et.bits, pack, et, "c")
    nwords = -(-count // pack)
    if len(toks) != nwords:
        raise FormatError(f"{path}: {len(toks)} initializers, expected {nwords}")
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
