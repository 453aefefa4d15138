"""Writing a refq model file: `save` (the layout is described in `refq.model_io`)."""
from __future__ import annotations

import json

import h5py
import numpy as np

from ..atomic import atomic_path
from ..graph import Graph
from .layout import CHECKSUMS, FORMAT_VERSION, RESERVED, array_digest, escape_name, param_part, sha
from .strict_json import dumps

__all__ = ["save"]


def save(graph: Graph, path, sections: dict | None = None) -> None:
    """Validate `graph` and write it to `path` atomically, with optional JSON `sections`."""
    graph.validate()
    text = dumps(graph.to_json(), f"graph '{graph.name}'", indent=1, sort_keys=False)
    docs = {}
    for name, doc in (sections or {}).items():
        if name in RESERVED or not isinstance(name, str) or not name or "/" in name \
                or name == "." or "\0" in name:
            raise ValueError(f"section name {name!r} is reserved or not one HDF5 name")
        docs[name] = dumps(doc, f"section '/{name}'")
    digests = {"refq_format": sha(FORMAT_VERSION.encode()), "graph": sha(text.encode())}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.attrs["refq_format"] = FORMAT_VERSION
            f.attrs["graph"] = text
            params = f.create_group("params", track_order=True)
            for node in graph.topological_order():
                if not node.params:
                    continue
                key = escape_name(node.name)
                g = params.create_group(key, track_order=True)
                for pname, arr in node.params.items():
                    arr = np.ascontiguousarray(arr)
                    g.create_dataset(pname, data=arr, track_times=False, fletcher32=True)
                    digests[param_part(key, pname)] = array_digest(arr)
            for name, doc_text in docs.items():
                f.create_group(name).attrs["json"] = doc_text
                digests["/" + name] = sha(doc_text.encode())
            f.attrs[CHECKSUMS] = json.dumps(digests, sort_keys=True)
