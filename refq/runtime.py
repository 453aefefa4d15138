"""Float execution of a graph: `run(graph, feeds)`.

Nodes run in topological order; each op's `forward` receives its inputs and parameters cast to the
compute dtype (float64 by default, the reference precision; float32 to compare with float32
frameworks). Large inputs are split along the batch axis into chunks of `batch_size`; the result
is the concatenation. For a given chunking the result is byte-identical from run to run; another
chunking may change the last bits, because BLAS may choose another kernel for another row count. Without a trace, a tensor is released
as soon as its last consumer has run, so memory stays bounded by the live activations of one chunk.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError
from .graph import Graph
from .layers import get_op
from .progress import progress

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


def _as_compute(v, dtype):
    """Floating-point parameters in the compute dtype; integer parameters (integer graphs) as int64."""
    v = np.asarray(v)
    return v.astype(dtype) if v.dtype.kind == "f" else v.astype(np.int64)


def _forward_chunk(order, last_use, params, feeds, dtype, outputs, trace, on_tensor, on_input,
                   call):
    values = {k: v.astype(dtype, copy=False) for k, v in feeds.items()}
    if on_tensor is not None:
        values = {k: on_tensor(k, v) for k, v in values.items()}
    for i, node in enumerate(order):
        op = get_op(node.op)
        xs = [values[t] for t in node.inputs]
        if on_input is not None:
            xs = [on_input(node.name, k, x) for k, x in enumerate(xs)]
        y = op.forward(xs, params[node.name], node.attrs) if call is None else \
            call(node, op, xs, params[node.name])
        if on_tensor is not None:
            y = on_tensor(node.outputs[0], y)
        values[node.outputs[0]] = y
        if not trace:
            for t in set(node.inputs):  # a node may read one tensor twice (add(x, x))
                if last_use.get(t) == i and t not in outputs:
                    del values[t]
    return values if trace else {t: values[t] for t in outputs}


def run(graph: Graph, feeds, trace: bool = False, dtype=np.float64, batch_size: int | None = None,
        quiet: bool = True, params: dict | None = None, on_tensor=None, on_input=None,
        call=None) -> dict:
    """Run `graph` on `feeds` ({input name: array}, or one array for a single-input graph).

    Returns {output name: array}; with trace=True, every tensor of the graph by name (inputs,
    intermediates and outputs). dtype: compute dtype (np.float64 or np.float32). batch_size: split
    the batch into chunks of this size (None = all at once). quiet=False shows a progress bar over
    chunks on a terminal.

    Hooks used by the quantization simulator:
    params: {node name: {param name: array}} replacing the nodes' own parameters (e.g. weights
      after quantize-dequantize); nodes not listed keep theirs.
    on_tensor(name, array) -> array: called on every graph input and node output as soon as it is
      produced; what it returns is what consumers (and the trace) see.
    on_input(node name, input index, array) -> array: called on each input as one node reads it;
      what it returns is seen by that node only.
    call(node, op, inputs, params) -> array: replaces `op.forward(inputs, params, node.attrs)`
      (the integer runtime uses it to collect accumulator statistics per node).
Integer parameters (integer graphs) are passed to ops as int64; floating ones in `dtype`.
    """
    dtype = np.dtype(dtype).type
    if dtype not in (np.float64, np.float32):
        raise InputError(f"run: dtype must be float64 or float32, got {np.dtype(dtype).name}")
    graph.validate()
    feeds = _check_feeds(graph, feeds)
    order = graph.topological_order()
    last_use = {t: i for i, n in enumerate(order) for t in n.inputs}
    override = params or {}
    params = {n.name: {k: _as_compute(v, dtype) for k, v in override.get(n.name, n.params).items()}
              for n in order}
    n = next(iter(feeds.values())).shape[0] if feeds else 0
    if batch_size is not None and batch_size <= 0:
        raise InputError(f"run: batch_size must be positive, got {batch_size}")
    step = n if not batch_size or n == 0 else batch_size
    starts = range(0, max(n, 1), max(step, 1))
    chunks = []
    for s in progress(starts, total=len(starts), desc="run", quiet=quiet, unit="batch"):
        part = {k: v[s:s + step] for k, v in feeds.items()}
        chunks.append(_forward_chunk(order, last_use, params, part, dtype, graph.outputs, trace,
                                     on_tensor, on_input, call))
    if len(chunks) == 1:
        return chunks[0]
    return {k: np.concatenate([c[k] for c in chunks], axis=0) for k in chunks[0]}
