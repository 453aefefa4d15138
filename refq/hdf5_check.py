"""HDF5 files that the HDF5 library itself cannot read safely: `check_global_heaps`.

The HDF5 library (seen with 2.0) loops forever, or crashes, reading a text attribute whose global
heap collection is damaged, instead of returning an error. Every reader of HDF5 files from users
(the refq model format, the Keras importers) calls `check_global_heaps` before h5py reads anything
from the file.
"""
from __future__ import annotations

import mmap

from .errors import FormatError, one_line

__all__ = ["check_global_heaps"]


def check_global_heaps(source, label: str, hint: str):
    """FormatError when a global heap collection of an HDF5 file (where HDF5 keeps variable-length
    strings: the JSON attributes) has object sizes that leave the collection. `source` is a path
    or an open binary file; `label` names it in the message, `hint` says what to do.

    The HDF5 library loops forever on such a collection instead of failing (seen with HDF5 2.0),
    so the collections are walked here first, by the File Format Specification (section III.E):
    "GCOL", version 1, 3 reserved bytes, the collection size (8 bytes), then objects of a 16-byte
    header (index 2, reference count 2, reserved 4, size 8) and their data padded to 8 bytes;
    object 0 is the free space, its size counting its header."""
    try:
        if hasattr(source, "read"):  # an open binary file (e.g. a .keras archive member)
            pos = source.tell()
            data = source.read()
            source.seek(pos)
            _walk_global_heaps(data, label, hint)
            return
        with open(source, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _walk_global_heaps(data, label, hint)
    except (OSError, ValueError) as e:
        raise FormatError(f"{label}: cannot read the file ({one_line(e)})") from None


def _walk_global_heaps(data, label: str, hint: str):
    start = data.find(b"GCOL")
    while start >= 0:
        if data[start + 4:start + 5] == b"\x01" and len(data) >= start + 16:
            size = int.from_bytes(data[start + 8:start + 16], "little")
            end = start + size
            p = start + 16
            ok = size >= 16 and end <= len(data)
            while ok and p < end:
                if p + 16 > end:  # a tail too short for a header is free space
                    break
                index = int.from_bytes(data[p:p + 2], "little")
                length = int.from_bytes(data[p + 8:p + 16], "little")
                need = length if index == 0 else 16 + (length + 7) // 8 * 8
                ok = need >= 16 and p + need <= end
                p += need
            if not ok:
                raise FormatError(f"{label}: a global heap collection at byte {start} (the "
                                  f"storage of the text attributes) is damaged; {hint}")
        start = data.find(b"GCOL", start + 4)
