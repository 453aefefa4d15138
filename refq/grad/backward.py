"""Reverse-mode differentiation of a graph: `value_and_grad`.

    value, grads = value_and_grad(graph, feeds, loss, targets)
    grads["conv1"]["weight"]          # ∂value/∂(conv1's weight), the weight's shape

For L = loss(y, targets) of the tensor y (a graph output, or any tensor named by `output`):
- forward: the plain node-by-node forward of a `refq.Plan` (the compute dtype, float64 by
  default), keeping every tensor of the chunk (the backward reads each node's inputs and output);
- backward: ∂L/∂y from the loss, then every node upstream of y in reverse topological order:
      (g_inputs, g_params) = op.vjp(inputs, params, attrs, output, ∂L/∂output)
  ∂L/∂t of a tensor read by several nodes is the sum over its readers (fan-out), added in the
  readers' reverse topological order; a parameter's gradient is kept when `wrt` asks for it.
  Only the nodes through which a gradient reaches a wanted parameter run their VJP (a node with
  such a parameter, or one reading the output of such a node): the rest of the graph, e.g. a
  zero_pad2d of the graph's input, is skipped, and no gradient is kept for a graph input.
- batches: the batch runs in chunks (of `batch_size` samples, or the plan's own chunks: about
  `refq.plan.CHUNK_BYTES` of activations, an even number of them), forward and backward, on
  `refq.parallel.threads()` threads; memory is bounded by the tensors of the chunks in flight. The
  loss of the batch is Σ total / Σ count of the loss's chunk sums (`refq.grad.losses`), the chunks'
  gradients are summed in chunk order and divided by Σ count once at the end, so the result is the
  one-batch value up to the order of the float sums, and the same for the same chunking whatever
  the threads.
A node whose op has no VJP (an integer kernel) is an error naming the node and op when a
gradient must flow through it.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError, InputError
from ..layers import get_op
from .. import parallel
from ..plan import Plan
from ..feeds import feeds_dict

__all__ = ["value_and_grad", "param_names"]


def param_names(graph) -> list:
    """["node/param", ...] of every parameter of `graph`, in topological order."""
    return [f"{n.name}/{k}" for n in graph.topological_order() for k in n.params]


def _wanted(graph, wrt) -> set:
    """{(node, param)} named by wrt: None = every parameter; else names "node" (all of that node's
    parameters) or "node/param"; an unknown name is an InputError listing the known ones."""
    every = {(n.name, k) for n in graph.nodes for k in n.params}
    if wrt is None:
        return every
    out = set()
    for name in ([wrt] if isinstance(wrt, str) else wrt):
        name = str(name)
        hit = {(a, b) for a, b in every if a == name}        # a node (its name may hold "/")
        if not hit:
            node, _, param = name.rpartition("/")               # "node/param"
            hit = {(a, b) for a, b in every if a == node and b == param}
        if not hit:
            raise InputError(f"value_and_grad: wrt names '{name}', which is not a parameter of "
                             f"graph '{graph.name}'; parameters are {param_names(graph)[:20]}"
                             + (" ..." if len(every) > 20 else ""))
        out |= hit
    return out


def value_and_grad(graph, feeds, loss, targets=None, *, output: str | None = None, wrt=None,
                   dtype=np.float64, batch_size: int | None = None, params: dict | None = None):
    """(loss value, {node: {param: gradient}}) of `loss` (a `refq.grad.losses` function, or any
    callable with its contract) on the tensor `output` (default: the graph's only output) for
    `feeds` and `targets` (an array with the batch on axis 0, or None), with respect to the
    parameters named by `wrt` (module docstring). params: {node: {param: array}} replacing the
    nodes' own parameters (as `refq.run`). Gradients have the compute dtype."""
    plan = Plan(graph, dtype, params, fold_batch_norms=False)
    if output is None:
        if len(graph.outputs) != 1:
            raise InputError(f"value_and_grad: graph '{graph.name}' has outputs "
                             f"{graph.outputs}; name the one the loss reads with output=")
        output = graph.outputs[0]
    if output not in plan.slot:
        raise InputError(f"value_and_grad: graph '{graph.name}' has no tensor '{output}'")
    wanted = _wanted(graph, wrt)
    nodes = _upstream(plan.order, output)
    feeds = feeds_dict(graph, feeds)
    n = next(iter(feeds.values())).shape[0] if feeds else 0
    if targets is not None and np.shape(targets)[:1] != (n,):
        raise InputError(f"value_and_grad: targets have {np.shape(targets)[:1]} samples for a "
                         f"batch of {n}")
    if batch_size is not None and batch_size <= 0:
        raise InputError(f"value_and_grad: batch_size must be positive, got {batch_size}")
    grads = {node: {k: np.zeros_like(plan.params[node][k]) for k in plan.params[node]
                    if (node, k) in wanted} for node in {a for a, _ in wanted}}

    schedule = _schedule(nodes, {a for a, _ in wanted})

    def one(chunk):
        s, e = chunk
        t = plan.run({k: v[s:e] for k, v in feeds.items()}, trace=True, batch_size=e - s)
        try:
            part, g_out, c = loss(t[output], None if targets is None else targets[s:e])
        except InputError as err:   # the loss sees one chunk: say which
            raise InputError(f"{err} (in the chunk of samples {s} to {e - 1} of the batch)") \
                from None
        mine = {node: {k: np.zeros_like(v) for k, v in per.items()} for node, per in grads.items()}
        _backward(plan, schedule, t, output, np.asarray(g_out, dtype=plan.dtype), mine)
        return part, c, mine

    total, count = 0.0, 0
    chunks = plan.chunk_bounds(n, batch_size)
    for part, c, mine in parallel.map_threads(one, chunks, parallel.threads()):
        total, count = total + part, count + c   # summed in chunk order, whatever the threads
        for node, per in mine.items():
            for k, v in per.items():
                grads[node][k] += v
    if count == 0:
        raise InputError("value_and_grad: the loss counted no terms (an empty batch?)")
    for g in grads.values():
        for v in g.values():
            v /= count
    return total / count, grads


def _upstream(order, output):
    """The nodes whose output `output` depends on, in topological order."""
    needed, keep = {output}, []
    for node in reversed(order):
        if node.outputs[0] in needed:
            keep.append(node)
            needed.update(node.inputs)
    return keep[::-1]


def _schedule(nodes, wanted_nodes) -> list:
    """[(node, runs, keep)] for the reverse pass over `nodes` (topological order), last node
    first. runs: whether the node's VJP is needed, i.e. it has a wanted parameter (its name is in
    `wanted_nodes`) or an input that is the output of a node that runs (a gradient reaching such
    a parameter flows through it); the others, e.g. a zero_pad2d of the graph's input, are
    skipped. keep: per input, whether its gradient is kept (it is the output of a node that runs;
    not a graph input)."""
    flows, out = set(), []
    for node in nodes:
        runs = node.name in wanted_nodes or any(t in flows for t in node.inputs)
        if runs:
            flows.add(node.outputs[0])
        out.append((node, runs, [t in flows for t in node.inputs]))
    return out[::-1]


def _backward(plan, schedule, values, output, g_out, grads):
    """Add ∂L/∂p of this chunk into `grads` (the reverse pass of the module docstring), by the
    `_schedule` of the upstream nodes. The chunk's trace is kept whole until the pass ends:
    the peak memory is the trace itself, and freeing each tensor after its last VJP would hand
    pages back to the system that the next allocations fault in again, at a cost in time."""
    g = {output: g_out}
    for node, runs, keep in schedule:
        gy = g.pop(node.outputs[0], None)
        if not runs or gy is None:
            continue
        op = get_op(node.op)
        if op.vjp is None:
            raise GraphError(f"node '{node.name}': op '{node.op}' has no gradient (VJP); a "
                             "gradient cannot flow through it")
        xs = [values[t] for t in node.inputs]
        p = plan.params[node.name]
        g_in, g_par = op.vjp(xs, p, plan.attrs[node.name], values[node.outputs[0]], gy)
        for t, kept, gx in zip(node.inputs, keep, g_in):
            if kept and gx is not None:
                g[t] = gx if t not in g else g[t] + gx
        mine = grads.get(node.name)
        if mine:
            for k, v in mine.items():
                v += g_par[k]
