"""Training checkpoints: the model in a .refq.h5 file, the training state in a file beside it.

    save_checkpoint(path, model, state)
    model, state = load_checkpoint(path)

`path` holds the model as refq saves it (a float graph: `refq.save`; a QuantSim with its encodings:
`QuantSim.save`), so a checkpoint is also a model every command reads. `path + ".state.npz"`
holds the training state `train` resumes from: the parameters in the training dtype, the
optimizer's state, learned ranges, the epoch and step reached and the losses so far. Arrays are
stored by NumPy (np.savez, read back with allow_pickle=False) and everything else as one JSON
document in the same file, which also gives every array's place in the state.

The state file is written first, then the model, each atomically (temporary file and rename);
the model's graph.meta["training"] records the SHA-256 of the state file, so that a state file
that does not belong to the model (a crash between the two writes, a copied file) is refused.
"""
from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError

__all__ = ["save_checkpoint", "load_checkpoint", "state_path"]

_INDEX = "__state__"


def state_path(path) -> str:
    return os.fspath(path) + ".state.npz"


def _flatten(value, arrays):
    """value with every array replaced by {"array": name} (stored in `arrays`), tuples by lists and
    dicts with non-string keys by {"pairs": [[key, value], ...]}."""
    if isinstance(value, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {"array": name}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"dict": {k: _flatten(v, arrays) for k, v in value.items()}}
        return {"pairs": [[_flatten(k, arrays), _flatten(v, arrays)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"tuple" if isinstance(value, tuple) else "list":
                [_flatten(v, arrays) for v in value]}
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _unflatten(value, arrays):
    if not isinstance(value, dict):
        return value
    if "array" in value:
        return arrays[value["array"]]
    if "dict" in value:
        return {k: _unflatten(v, arrays) for k, v in value["dict"].items()}
    if "pairs" in value:
        return {_key(_unflatten(k, arrays)): _unflatten(v, arrays) for k, v in value["pairs"]}
    if "tuple" in value:
        return tuple(_unflatten(v, arrays) for v in value["tuple"])
    return [_unflatten(v, arrays) for v in value["list"]]


def _key(k):
    return tuple(_key(v) for v in k) if isinstance(k, (list, tuple)) else k


def save_checkpoint(path, model, state: dict) -> None:
    """Write `state` beside `path`, then `model` (a Graph or QuantSim) to `path` (module
    docstring)."""
    from ..model_io import save
    from ..quant.quantsim import QuantSim

    arrays: dict = {}
    doc = json.dumps(_flatten(state, arrays), allow_nan=False)
    buf = io.BytesIO()
    np.savez(buf, **arrays, **{_INDEX: np.array(doc)})
    data = buf.getvalue()
    with atomic_path(state_path(path)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    graph = model.graph if isinstance(model, QuantSim) else model
    graph.meta["training"] = {"state_sha256": hashlib.sha256(data).hexdigest(),
                              "epochs_done": int(state["epochs_done"]),
                              "steps": int(state["steps"])}
    if isinstance(model, QuantSim):
        model.save(path)
    else:
        save(graph, path)


def load_checkpoint(path):
    """(model, state) from a checkpoint written by `save_checkpoint`: a QuantSim when the file holds
    a simulation, else a Graph. InputError naming the file when the state file is missing or does
    not belong to the model."""
    from ..model_io import load, load_section
    from ..quant.quantsim import QuantSim

    path = os.fspath(path)
    graph = load(path)
    meta = graph.meta.get("training")
    if not isinstance(meta, dict) or "state_sha256" not in meta:
        raise InputError(f"{path}: not a training checkpoint (no graph.meta['training']); resume "
                         "from a file that train(..., checkpoint=PATH) wrote")
    spath = state_path(path)
    try:
        with open(spath, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{spath}: the checkpoint's training state cannot be read ({e.strerror})"
                         ) from None
    if hashlib.sha256(data).hexdigest() != meta["state_sha256"]:
        raise InputError(f"{spath}: this training state does not belong to {path} (its SHA-256 "
                         "differs from the one the model records); the two files were not "
                         "written together")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    state = _unflatten(json.loads(str(arrays.pop(_INDEX))), arrays)
    model = QuantSim.load(path) if load_section(path, "encodings") is not None else graph
    return model, state
