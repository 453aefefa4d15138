"""Gradients of a quantization simulation with frozen encodings: `sim_value_and_grad`.

    value, grads = sim_value_and_grad(sim, feeds, loss, targets, output="logits")
    grads["conv1"]["weight"]          # ∂value/∂(conv1's float weight), through its quantizer

The simulated forward is `QuantSim.run`'s, evaluated node by node in the simulation's dtype
(sim.numerics.dtype): each enabled parameter quantizer's node computes with the fake-quantized
parameter ŵ = qdq(w); an enabled input quantizer gives its node qdq(x) for that input; an enabled
activation quantizer replaces its tensor t by qdq(t) for every reader. The backward runs each
node's VJP (`Op.vjp`) on what the node saw (its possibly quantized inputs and parameters, its raw
output) and passes every quantizer with the straight-through estimator of its frozen encoding
(`refq.quant.ste.fake_quant_ste`: ∂L/∂t = ∂L/∂qdq(t) where t's code before clamping lies in the
grid, 0 outside):
    ∂L/∂w = STE_w(∂L/∂ŵ),   ∂L/∂x = STE_in(∂L/∂qdq(x)),   ∂L/∂t = STE_t(∂L/∂qdq(t)).
The losses, `output`, `wrt`, `batch_size` and the normalisation by the loss's count are those of
`refq.grad.value_and_grad`. The encodings are constants here; learning them (range learning) is
`refq.quant.ste.learned_range_vjp`.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError, InputError
from ..layers import get_op
from ..quant.fakequant import quantize_dequantize
from ..quant.ste import fake_quant_ste
from ..runtime import feeds_dict
from .backward import _upstream, _wanted

__all__ = ["sim_value_and_grad"]


class _Frozen:
    """The enabled quantizers of `sim` by place, with their encodings."""

    def __init__(self, sim, enabled):
        on = {n for n, v in enabled.items() if v}
        self.numerics, self.dtype = sim.numerics, sim.numerics.dtype.type
        self.tensor = {t: sim._encoding(n) for t, n in sim.tensor_quantizers().items() if n in on}
        self.input = {k: sim._encoding(n) for k, n in sim.input_quantizers().items() if n in on}
        self.param = {(q.node, q.param): sim._encoding(q.name) for q in sim.quantizers.values()
                      if q.kind == "param" and q.name in on}

    def qdq(self, x, enc):
        return quantize_dequantize(x, enc, self.numerics)

    def ste(self, x, enc, g):
        return fake_quant_ste(x, enc, g, self.numerics)


def sim_value_and_grad(sim, feeds, loss, targets=None, *, output: str | None = None, wrt=None,
                       batch_size: int | None = None, enabled: dict | None = None):
    """(loss value, {node: {param: gradient}}) of `loss` on tensor `output` of the simulation
    `sim` (a calibrated QuantSim) with its enabled quantizers frozen (module docstring)."""
    graph = sim.graph
    q = _Frozen(sim, sim.enabled if enabled is None else enabled)
    if output is None:
        if len(graph.outputs) != 1:
            raise InputError(f"sim_value_and_grad: graph '{graph.name}' has outputs "
                             f"{graph.outputs}; name the one the loss reads with output=")
        output = graph.outputs[0]
    order = graph.topological_order()
    if output not in {t for n in order for t in n.outputs} | {s.name for s in graph.inputs}:
        raise InputError(f"sim_value_and_grad: graph '{graph.name}' has no tensor '{output}'")
    wanted = _wanted(graph, wrt)
    nodes = _upstream(order, output)
    feeds = feeds_dict(graph, feeds)
    n = next(iter(feeds.values())).shape[0] if feeds else 0
    if targets is not None and np.shape(targets)[:1] != (n,):
        raise InputError(f"sim_value_and_grad: targets have {np.shape(targets)[:1]} samples for "
                         f"a batch of {n}")
    params = {node.name: {k: np.asarray(v, q.dtype) for k, v in node.params.items()}
              for node in nodes}
    seen_params = {name: {k: q.qdq(v, q.param[(name, k)]) if (name, k) in q.param else v
                          for k, v in p.items()} for name, p in params.items()}
    grads = {name: {k: np.zeros_like(params[name][k]) for k in params.get(name, {})
                    if (name, k) in wanted} for name in {a for a, _ in wanted}}
    grads = {name: per for name, per in grads.items() if per}
    step = batch_size or max(n, 1)
    total, count = 0.0, 0
    for s in range(0, max(n, 1), step):
        raw, seen = _forward(graph, nodes, seen_params, q,
                             {k: v[s:s + step] for k, v in feeds.items()})
        part, g_out, c = loss(seen[output], None if targets is None else targets[s:s + step])
        total, count = total + part, count + c
        _backward(nodes, params, seen_params, q, raw, seen, output,
                  np.asarray(g_out, dtype=q.dtype), grads)
    if count == 0:
        raise InputError("sim_value_and_grad: the loss counted no terms (an empty batch?)")
    for per in grads.values():
        for v in per.values():
            v /= count
    return total / count, grads


def _forward(graph, nodes, seen_params, q, feeds):
    """({tensor: value before its activation quantizer}, {tensor: value its readers see})."""
    raw, seen = {}, {}
    for spec in graph.inputs:
        x = np.asarray(feeds[spec.name]).astype(q.dtype)
        raw[spec.name] = x
        seen[spec.name] = q.qdq(x, q.tensor[spec.name]) if spec.name in q.tensor else x
    for node in nodes:
        xs = [seen[t] for t in node.inputs]
        xs = [q.qdq(x, q.input[(node.name, i)]) if (node.name, i) in q.input else x
              for i, x in enumerate(xs)]
        y = get_op(node.op).forward(xs, seen_params[node.name], node.attrs)
        t = node.outputs[0]
        raw[t] = y
        seen[t] = q.qdq(y, q.tensor[t]) if t in q.tensor else y
    return raw, seen


def _backward(nodes, params, seen_params, q, raw, seen, output, g_out, grads):
    """Add this chunk's ∂L/∂p into `grads` (module docstring)."""
    g = {output: g_out}   # gradients w.r.t. the values readers see
    for node in reversed(nodes):
        t = node.outputs[0]
        gy = g.pop(t, None)
        if gy is None:
            continue
        if t in q.tensor:
            gy = q.ste(raw[t], q.tensor[t], gy)
        op = get_op(node.op)
        if op.vjp is None:
            raise GraphError(f"node '{node.name}': op '{node.op}' has no gradient (VJP); a "
                             "gradient cannot flow through it")
        xs = [seen[u] for u in node.inputs]
        xq = [q.qdq(x, q.input[(node.name, i)]) if (node.name, i) in q.input else x
              for i, x in enumerate(xs)]
        g_in, g_par = op.vjp(xq, seen_params[node.name], node.attrs, raw[t], gy)
        for i, (u, gx) in enumerate(zip(node.inputs, g_in)):
            if gx is None:
                continue
            if (node.name, i) in q.input:
                gx = q.ste(xs[i], q.input[(node.name, i)], gx)
            g[u] = gx if u not in g else g[u] + gx
        for k, v in grads.get(node.name, {}).items():
            gp = g_par[k]
            if (node.name, k) in q.param:
                gp = q.ste(params[node.name][k], q.param[(node.name, k)], gp)
            v += gp
    # a graph input with an activation quantizer: nothing to pass on (no parameters upstream)
