"""Verilog `$readmemh` hex: `write_hex` and `read_hex`.

One word per line, lower-case hexadecimal, exactly ceil(word_bits/4) digits (zero-padded), no
address directives and, unless `comment=True`, no comments; word 0 first. Words may be
arbitrarily wide. The parser also accepts what `$readmemh` accepts: `//` and `/* */` comments,
several words per line, `_` separators, fewer digits, and `@address` directives that fill every
word exactly once.

The words are those of `refq.exporters.packing`; the sidecar (`refq.exporters.sidecar`: no
`container_bits`, `hex_digits` digits per word) is required to parse the file.
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..errors import FormatError, one_line
from .packing import _check_pack, _container_bytes, _from_bytes, _to_bytes
from .sidecar import (_layout_of, _provenance, _sidecar, _write, element_type,
                      read_sidecar)

_HEXDIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


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
        with open(path, "rb") as f:
            text = f.read().decode("ascii")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: byte {e.start} is not ASCII; a hex dump is ASCII text, one "
                          "hexadecimal word per line") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot be read ({one_line(e.strerror or e)})") from None
    text = _HEX_COMMENTS.sub(" ", text) if "/" in text else text
    tokens = text.split()
    nwords = -(-count // pack)
    words_given = sum(not t.startswith("@") for t in tokens)
    if words_given < nwords:  # checked before anything the size of the sidecar's shape exists
        raise FormatError(f"{path}: {nwords - words_given} of {nwords} words are missing "
                          f"({count} elements of {et.name} packed {pack} per word, shape "
                          f"{list(shape)}); the dump is truncated or its sidecar is wrong")
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
                if pos < 0:
                    raise ValueError
            except ValueError:
                raise FormatError(f"{path}: bad address directive {one_line(tok)[:40]!r}; an "
                                  "address is @ and hexadecimal digits") from None
            continue
        t = tok.replace("_", "").lower()
        if not t or any(c not in "0123456789abcdef" for c in t):
            raise FormatError(f"{path}: word {pos} is {one_line(tok)[:40]!r}, not a hexadecimal "
                              "number (x/z digits are not values); dump plain hex digits")
        if len(t) > digits:
            if t[:-digits].strip("0"):
                raise FormatError(f"{path}: word {pos} = {tok} has more than {pack * et.bits} "
                                  f"bits ({pack} × {et.name}); wrong width or packing?")
            t = t[-digits:]
        if pos >= nwords:
            raise FormatError(f"{path}: more words than the {nwords} expected for {count} "
                              f"elements of {et.name} packed {pack} per word (shape "
                              f"{list(shape)}); the dump is too long or its sidecar is wrong")
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
