"""Raw little-endian binaries: `write_bin` and `read_bin`.

The words of `refq.exporters.packing`, each in its container (the smallest power-of-two number of
bytes holding word_bits; one byte for k = 1 and 4-bit elements, which are sign-extended in that
byte like the C header's int8_t), little-endian, word 0 first, no header. The sidecar
(`refq.exporters.sidecar`) is required to parse the file.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import FormatError
from .packing import _check_pack, _container_bytes, _from_bytes, _to_bytes
from .sidecar import _layout_of, _sidecar, _write, element_type, read_sidecar


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
    if sc.get("container_bits") is not None and sc["container_bits"] != 8 * cb:
        raise FormatError(f"{path}: the sidecar's container_bits {sc['container_bits']!r} differs "
                          f"from the {8 * cb} bits this layout uses; fix the sidecar")
    with open(path, "rb") as f:
        raw = f.read()
    nwords = -(-count // pack)
    if len(raw) != nwords * cb:
        raise FormatError(f"{path}: {len(raw)} bytes, expected {nwords * cb} ({nwords} words of "
                          f"{cb} bytes for shape {list(shape)} {et.name} packed {pack}); the "
                          "dump is truncated or padded, or its sidecar is wrong")
    b = np.frombuffer(raw, dtype=np.uint8).reshape(nwords, cb)
    return _from_bytes(b, et, pack, count, path, sext=True).reshape(shape)
