"""Float execution of a graph: `run(graph, feeds)`.

Nodes run in topological order; each op's `forward` receives its inputs and parameters cast to the
compute dtype (float64 by default, the reference precision; float32 to compare with float32
frameworks). `run` builds a `refq.plan.Plan` and runs it once: the plan's docstring says how the
batch is cut into chunks, which evaluations it fuses (none changes a number, except that a float32
plan folds batch norms into the convolutions before them, within a stated bound) and how memory
stays bounded. The feed checks (`check_input`, `feeds_dict`) are in `refq.feeds`.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph
from .plan import Plan

__all__ = ["run"]


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
    return Plan(graph, dtype, params).run(feeds, trace, batch_size, quiet, on_tensor=on_tensor,
                                          on_input=on_input, call=call, threads=threads)
