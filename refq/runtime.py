"""Float execution of a graph: `run(graph, feeds)`.

Nodes run in topological order; each op's `forward` receives its inputs and parameters cast to the
compute dtype (float64 by default, the reference precision; float32 to compare with float32
frameworks). `run` builds a `refq.plan.Plan` and runs it once: the plan's docstring says how the
batch is cut into chunks, which evaluations it fuses (none changes a number) and how memory stays
bounded. This module also checks feeds (`check_input`, `feeds_dict`) for the other runners.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .graph import Graph

__all__ = ["run"]


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


def run(graph: Graph, feeds, trace: bool = False, dtype=np.float64, batch_size: int | None = None,
        quiet: bool = True, params: dict | None = None, on_tensor=None, on_input=None,
        call=None, threads: int | None = None) -> dict:
    """Run `graph` on `feeds` ({input name: array}, or one array for a single-input graph).

    Returns {output name: array}; with trace=True, every tensor of the graph by name (inputs,
    intermediates and outputs). dtype: compute dtype (np.float64 or np.float32). batch_size: split
    the batch into chunks of this size (None = chunks chosen by `refq.plan`). quiet=False shows a
    progress bar over chunks on a terminal.

    Hooks used by the quantization simulator:
    params: {node name: {param name: array}} replacing the nodes' own parameters (e.g. weights
      after quantize-dequantize); nodes not listed keep theirs.
    on_tensor(name, array) -> array: called on every graph input and node output as soon as it is
      produced; what it returns is what consumers (and the trace) see.
    on_input(node name, input index, array) -> array: called on each input as one node reads it;
      what it returns is seen by that node only.
    call(node, op, inputs, params) -> array: replaces `op.forward(inputs, params, node.attrs)`
      (the integer runtime uses it to collect accumulator statistics per node).
    With any of these three hooks the graph runs node by node, one chunk after the other unless
    `threads` (as in `Plan.run`) says the hooks are thread-safe.
    Integer parameters (integer graphs) are passed to ops as int64; floating ones in `dtype`.

    Each call validates the graph and copies its parameters; to run one graph many times, build
    a `refq.Plan(graph, dtype)` once and call its `run`.
    """
    from .plan import Plan

    return Plan(graph, dtype, params).run(feeds, trace, batch_size, quiet, on_tensor=on_tensor,
                                          on_input=on_input, call=call, threads=threads)
