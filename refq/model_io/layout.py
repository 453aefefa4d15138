"""The parts of a refq model file: the version, the reserved names, how node names become HDF5
path components, how each part is digested and how the messages name it (see `refq.model_io`)."""
from __future__ import annotations

import hashlib
import json

import numpy as np

__all__ = ["FORMAT_VERSION", "CHECKSUMS", "RECREATE", "DAMAGED", "RESERVED", "escape_name",
           "param_part", "describe", "sha", "array_digest"]

FORMAT_VERSION = "1.1"
CHECKSUMS = "refq_checksums"
RECREATE = "re-create it (`refq import`, `refq quantize` or `refq lower`, whichever wrote it)"
DAMAGED = "the file was modified or damaged after it was written; " + RECREATE
RESERVED = ("params",)  # root members that are not sections


def escape_name(name: str) -> str:
    """A tensor or node name made safe as one HDF5 path component or file name: `%` -> `%25`,
    `/` -> `%2F`, `:` -> `%3A`, and the name `.` (HDF5's "this group") -> `%2E`."""
    if name == ".":
        return "%2E"
    return name.replace("%", "%25").replace("/", "%2F").replace(":", "%3A")


def param_part(node_key: str, pname: str) -> str:
    """The part name (and HDF5 path) of parameter `pname` of the node escaped as `node_key`."""
    return f"/params/{node_key}/{pname}"


def describe(part: str) -> str:
    """A part of the file as the messages name it."""
    if part == "graph":
        return "the graph JSON (attribute 'graph')"
    if part == "refq_format":
        return "the format version (attribute 'refq_format')"
    if part.startswith("/params/"):
        return f"parameter {part}"
    return f"section '{part}'"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def array_digest(arr: np.ndarray) -> str:
    """SHA-256 over dtype, shape and C-order bytes (what Fletcher-32 does not cover)."""
    head = f"{arr.dtype.str} {json.dumps(list(arr.shape))}\n".encode()
    return sha(head + np.ascontiguousarray(arr).tobytes())
