"""Gradients of a quantization simulation: `sim_value_and_grad`, with frozen or learned ranges.

    value, grads = sim_value_and_grad(sim, feeds, loss, targets, output="logits")
    grads["conv1"]["weight"]          # ∂value/∂(conv1's float weight), through its quantizer
    value, grads, range_grads = sim_value_and_grad(sim, feeds, loss, targets, ranges=ranges)
    range_grads["conv0_relu"]["min"]  # ∂value/∂(that quantizer's min)

The simulated forward is `QuantSim.run`'s, evaluated node by node in the simulation's dtype
(sim.numerics.dtype): each enabled parameter quantizer's node computes with the fake-quantized
parameter ŵ = qdq(w); an enabled input quantizer gives its node qdq(x) for that input; an enabled
activation quantizer replaces its tensor t by qdq(t) for every reader. The backward runs each
node's VJP (`Op.vjp`) on what the node saw (its possibly quantized inputs and parameters, its raw
output) and passes every quantizer with the straight-through estimator of its frozen encoding
(`refq.quant.ste.fake_quant_ste`: ∂L/∂t = ∂L/∂qdq(t) where t's code before clamping lies in the
grid, 0 outside):
    ∂L/∂w = STE_w(∂L/∂ŵ),   ∂L/∂x = STE_in(∂L/∂qdq(x)),   ∂L/∂t = STE_t(∂L/∂qdq(t)).
Range learning (AIMET 2.42, aimet.md §0.2.4, §1.5, §12): with `ranges` = {quantizer: (min, max)}
(float32; () per tensor, (C,) per channel), those quantizers compute from their trainable min and
max instead, by AIMET's autograd path (`refq.quant.ste.learned_range_forward`: the scale and
offset derived from min/max in float32, x/s by division) and pass the gradient by its VJP
(`learned_range_vjp`), which also gives ∂L/∂min and ∂L/∂max, summed over every place a shared
quantizer quantizes; they are returned as a third element {quantizer: {"min", "max"}}.
`learnable_ranges(sim)` gives the initial ranges: each encoding's effective min and max.
The losses, `output`, `wrt`, `batch_size` and the normalisation by the loss's count are those of
`refq.grad.value_and_grad`.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError, InputError
from ..layers import get_op
from ..quant.fakequant import quantize_dequantize
from ..quant.ste import fake_quant_ste, learned_range_forward, learned_range_vjp
from ..feeds import feeds_dict
from .backward import _upstream, _wanted

__all__ = ["sim_value_and_grad", "learnable_ranges"]


class _Quantizers:
    """The enabled quantizers of `sim` by place (tensor, (node, input index), (node, param)), each
    with its frozen encoding or, when named in `ranges`, its learned (min, max)."""

    def __init__(self, sim, enabled, ranges):
        on = {n for n, v in enabled.items() if v}
        self.numerics, self.dtype = sim.numerics, sim.numerics.dtype.type
        self.tensor = {t: n for t, n in sim.tensor_quantizers().items() if n in on}
        self.input = {k: n for k, n in sim.input_quantizers().items() if n in on}
        self.param = {(q.node, q.param): q.name for q in sim.quantizers.values()
                      if q.kind == "param" and q.name in on}
        used = set(self.tensor.values()) | set(self.input.values()) | set(self.param.values())
        self.enc = {n: sim._encoding(n) for n in used}
        self.spec = sim.quantizers
        self.ranges = dict(ranges or {})
        unknown = sorted(set(self.ranges) - used)
        if unknown:
            raise InputError(f"sim_value_and_grad: ranges name {unknown[:5]}, which are not "
                             "enabled quantizers of this simulation")

    def forward(self, x, name):
        """(x̂, what `backward` needs): the learned forward and its context, or qdq(x) and x."""
        if name in self.ranges:
            lo, hi = self.ranges[name]
            q = self.spec[name]
            return learned_range_forward(x, lo, hi, q.bitwidth, q.symmetric,
                                         axis=self.enc[name].axis)
        return quantize_dequantize(x, self.enc[name], self.numerics), x

    def backward(self, saved, name, g, range_grads):
        """∂L/∂x from g = ∂L/∂x̂; a learned range's ∂L/∂min, ∂L/∂max added into range_grads."""
        if name in self.ranges:
            gx, g_lo, g_hi = learned_range_vjp(saved, g)
            acc = range_grads[name]
            acc["min"] += g_lo
            acc["max"] += g_hi
            return gx
        return fake_quant_ste(saved, self.enc[name], g, self.numerics)


def learnable_ranges(sim, enabled: dict | None = None) -> dict:
    """{quantizer: (min, max)}: the effective range of every enabled quantizer's encoding as
    float32 arrays (() per tensor, (C,) per channel), for range learning; quantizers with a
    strict or unsigned symmetric grid or a pass-through bitwidth keep their frozen encoding."""
    enabled = sim.enabled if enabled is None else enabled
    out = {}
    for q in sim.quantizers.values():
        if not enabled.get(q.name, False) or q.strict or q.unsigned_symmetric or q.bitwidth > 16:
            continue
        enc = sim._encoding(q.name)
        out[q.name] = (np.array(enc.min, dtype=np.float32), np.array(enc.max, dtype=np.float32))
    return out


def sim_value_and_grad(sim, feeds, loss, targets=None, *, output: str | None = None, wrt=None,
                       batch_size: int | None = None, enabled: dict | None = None,
                       ranges: dict | None = None):
    """(loss value, {node: {param: gradient}}) of `loss` on tensor `output` of the simulation
    `sim` (a calibrated QuantSim), its enabled quantizers frozen; with `ranges`, those quantizers
    learned and a third element {quantizer: {"min": ∂L/∂min, "max": ∂L/∂max}} (module
    docstring)."""
    graph = sim.graph
    q = _Quantizers(sim, sim.enabled if enabled is None else enabled, ranges)
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
    grads = {name: {k: np.zeros_like(params[name][k]) for k in params.get(name, {})
                    if (name, k) in wanted} for name in {a for a, _ in wanted}}
    grads = {name: per for name, per in grads.items() if per}
    range_grads = {n: {"min": np.zeros_like(lo), "max": np.zeros_like(hi)}
                   for n, (lo, hi) in q.ranges.items()}
    step = batch_size or max(n, 1)
    total, count = 0.0, 0
    for s in range(0, max(n, 1), step):
        run = _forward(graph, nodes, params, q, {k: v[s:s + step] for k, v in feeds.items()})
        part, g_out, c = loss(run["seen"][output],
                              None if targets is None else targets[s:s + step])
        total, count = total + part, count + c
        _backward(nodes, run, q, output, np.asarray(g_out, dtype=q.dtype), grads, range_grads)
    if count == 0:
        raise InputError("sim_value_and_grad: the loss counted no terms (an empty batch?)")
    for per in list(grads.values()) + list(range_grads.values()):
        for v in per.values():
            v /= count
    if ranges is None:
        return total / count, grads
    return total / count, grads, range_grads


def _forward(graph, nodes, params, q, feeds) -> dict:
    """One chunk's simulated forward: {"raw": tensor values before their activation quantizer,
    "seen": what their readers see, "saved": what each quantizer's backward needs (by place),
    "params": the parameters each node computes with}."""
    raw, seen, saved, used = {}, {}, {}, {}
    for node in nodes:
        p = dict(params[node.name])
        for k in p:
            if (node.name, k) in q.param:
                p[k], saved[(node.name, k)] = q.forward(p[k], q.param[(node.name, k)])
        used[node.name] = p
    for spec in graph.inputs:
        x = np.asarray(feeds[spec.name]).astype(q.dtype)
        raw[spec.name] = seen[spec.name] = x
        if spec.name in q.tensor:
            seen[spec.name], saved[spec.name] = q.forward(x, q.tensor[spec.name])
    for node in nodes:
        xs = []
        for i, t in enumerate(node.inputs):
            x = seen[t]
            if (node.name, i) in q.input:
                x, saved[(node.name, i)] = q.forward(x, q.input[(node.name, i)])
            xs.append(x)
        saved[("inputs", node.name)] = xs
        y = get_op(node.op).forward(xs, used[node.name], node.attrs)
        t = node.outputs[0]
        raw[t] = seen[t] = y
        if t in q.tensor:
            seen[t], saved[t] = q.forward(y, q.tensor[t])
    return {"raw": raw, "seen": seen, "saved": saved, "params": used}


def _backward(nodes, run, q, output, g_out, grads, range_grads):
    """Add this chunk's ∂L/∂p (and ∂L/∂min, ∂L/∂max of learned ranges) into `grads` and
    `range_grads` (module docstring)."""
    raw, saved = run["raw"], run["saved"]
    g = {output: g_out}   # gradients w.r.t. the values readers see
    for node in reversed(nodes):
        t = node.outputs[0]
        gy = g.pop(t, None)
        if gy is None:
            continue
        if t in q.tensor:
            gy = q.backward(saved[t], q.tensor[t], gy, range_grads)
        op = get_op(node.op)
        if op.vjp is None:
            raise GraphError(f"node '{node.name}': op '{node.op}' has no gradient (VJP); a "
                             "gradient cannot flow through it")
        g_in, g_par = op.vjp(saved[("inputs", node.name)], run["params"][node.name], node.attrs,
                             raw[t], gy)
        for i, (u, gx) in enumerate(zip(node.inputs, g_in)):
            if gx is None:
                continue
            if (node.name, i) in q.input:
                gx = q.backward(saved[(node.name, i)], q.input[(node.name, i)], gx, range_grads)
            g[u] = gx if u not in g else g[u] + gx
        mine = grads.get(node.name, {})
        for k, gp in g_par.items():
            if (node.name, k) in q.param:
                if k not in mine and q.param[(node.name, k)] not in q.ranges:
                    continue
                gp = q.backward(saved[(node.name, k)], q.param[(node.name, k)], gp, range_grads)
            if k in mine:
                mine[k] += gp
    for spec_name, name in q.tensor.items():   # graph inputs: only their ranges learn
        if spec_name in g and spec_name in saved and name in q.ranges:
            q.backward(saved[spec_name], name, g.pop(spec_name), range_grads)
