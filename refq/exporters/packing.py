"""The bit layout shared by the hardware formats (hex, C header, bin): element bit patterns,
packed into memory words, held as little-endian byte matrices (one row per word) that the format
modules print, parse and check.

Elements. An array is taken flat in C order (row-major: the last axis varies fastest; `layout`,
e.g. "NHWC" or "OHWI", names the axes). Each element is an `element_bits`-bit pattern (element
types: `refq.exporters.sidecar`):
- signed integers: two's complement at the element width (int4 -3 = 0xd, int8 -1 = 0xff);
- unsigned integers: the value (uint4 9 = 0x9);
- floats (float16/32/64): the IEEE-754 bit pattern.

Words. `pack=k` puts k consecutive elements into one memory word of k·element_bits bits, element 0
in the least significant bits ("lsb_first"): word j = Σ_i pattern[j·k + i] << (i·element_bits).
When the element count is not a multiple of k, the last word is completed with zero elements in
its high bits (`padding_elements` in the sidecar); parsers check that they are zero.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError, InputError
from .sidecar import MAX_WORD_BITS, ElementType


# ---- element bit patterns -----------------------------------------------------------------------

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
    if words != -(-count // pack):
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


def _check_pack(pack, et, fmt):
    """`pack` as an int: an integer >= 1 whose word of pack × element bits fits the format
    (MAX_WORD_BITS; 64 bits in a C header). InputError otherwise."""
    if not isinstance(pack, (int, np.integer)) or isinstance(pack, bool) or pack < 1:
        raise InputError(f"pack must be a positive integer, got {pack!r}")
    if pack * et.bits > MAX_WORD_BITS:
        raise InputError(f"pack {pack} × {et.bits} bits makes a {pack * et.bits}-bit word; "
                         f"words are at most {MAX_WORD_BITS} bits (use a smaller --pack)")
    if fmt == "c" and pack > 1 and pack * et.bits > 64:
        raise InputError(f"a C header word holds at most 64 bits; pack {pack} × {et.bits} bits "
                         "is too wide (use a smaller --pack, or hex or bin for wider words)")
    return int(pack)
