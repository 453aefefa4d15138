"""Feeds checked against a graph's inputs: `check_input`, `feeds_dict` and `_check_feeds`, for
`refq.plan.Plan.run` and the other runners (re-exported by `refq.runtime`).
"""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .graph import Graph

__all__ = ["check_input", "feeds_dict"]


def check_input(spec, x) -> None:
    """`x` is an array that fits TensorSpec `spec`: a float array for a float input (an integer
    one for an integer input), of the declared rank and every fixed dimension after the batch;
    else an InputError naming the input."""
    if not isinstance(x, np.ndarray):
        raise InputError(f"input '{spec.name}': expected a NumPy array, got {type(x).__name__}")
    want_kind = "f" if spec.dtype.startswith("float") else "iu"
    if x.dtype.kind not in want_kind:
        raise InputError(f"input '{spec.name}': dtype {x.dtype} does not match the declared "
                         f"{spec.dtype}; convert it first (e.g. x.astype(np.{spec.dtype}))")
    if x.ndim != len(spec.shape) or any(
            d is not None and d != s for d, s in zip(spec.shape[1:], x.shape[1:])):
        raise InputError(f"input '{spec.name}': shape {list(x.shape)} does not match the "
                         f"declared {['N' if d is None else d for d in spec.shape]}")


def feeds_dict(graph: Graph, feeds) -> dict:
    """`feeds` as {input name: array}: one array is the single input of a single-input graph;
    anything but a dict otherwise is an InputError."""
    if isinstance(feeds, np.ndarray) and len(graph.inputs) == 1:
        feeds = {graph.inputs[0].name: feeds}
    if not isinstance(feeds, dict):
        raise InputError(f"graph '{graph.name}': feeds must be a dict {{input name: array}}, "
                         f"got {type(feeds).__name__}")
    return feeds


def _check_feeds(graph: Graph, feeds) -> dict:
    feeds = feeds_dict(graph, feeds)
    names = [s.name for s in graph.inputs]
    missing = [n for n in names if n not in feeds]
    unknown = [n for n in feeds if n not in names]
    if missing or unknown:
        raise InputError(f"graph '{graph.name}': inputs are {names}; missing {missing}, "
                         f"unknown {unknown}")
    out = {}
    batch = None
    for spec in graph.inputs:
        x = feeds[spec.name]
        check_input(spec, x)
        if batch is not None and x.shape[0] != batch:
            raise InputError(f"input '{spec.name}': batch {x.shape[0]} differs from the other "
                             f"inputs' batch {batch}")
        batch = x.shape[0]
        out[spec.name] = x
    return out
