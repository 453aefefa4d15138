"""A QuantSim re-run with other sets of enabled quantizers, computing only what each change reaches.

A configuration is a set C of enabled quantizer names, drawn from E (the quantizers enabled in
`sim.enabled`); its scored output (one graph output) is bit for bit that of
`sim.run(feeds, enabled=C)`. Two base runs per batch: the float run (`refq.Plan`, C = {}) and the
all-quantized run (`sim.plan()`, C = E), each traced at the scored output and at the tensors the
configurations read from it, one trace in memory at a time.

`PartialSim.compile(C)` builds, once, a plan of the nodes the change can reach: the nodes whose
parameters, inputs or output a changed quantizer quantizes (the readers of a graph input), and
every node downstream of them that the scored output needs. Changed means C against the float run
({} ^ C = C) or against the all-quantized run (E ^ C); the base is the one that reaches fewer
nodes (ties: float). The plan's inputs are the tensors it reads from that base run's trace
(already quantized there when the base quantizes them) and the graph inputs it reads raw; its hooks
fake-quantize, with C's encodings, the input quantizers of its nodes and the activation
quantizers of the tensors it computes or reads raw. A change reaching no node the scored output
needs has no plan: its output is the base run's.

Fake-quantized weights are computed once and shared by every plan; each plan cuts a batch into the
chunks the whole graph's plan uses (the same rows per BLAS call, on both cores), so that every
output is that of the full simulation, bit for bit. Worker processes would gain nothing (the CPU
time with 1 and with 2 threads is the same) and are not used.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node, TensorSpec
from ..plan import Plan
from ..progress import progress
from .encoding import quantize_dequantize
from .fakequant import fake_quantize_inplace

__all__ = ["PartialSim", "PartialRun"]


class PartialRun:
    """A compiled configuration: `plan` over the nodes its change reaches (None: the scored
    output is the base run's), fed from the base run ("float" or "all") at `from_base` and with
    the graph inputs `raw`, run with `hooks`."""

    def __init__(self, base, plan=None, from_base=(), raw=(), hooks=None):
        self.base, self.plan, self.from_base, self.raw = base, plan, list(from_base), list(raw)
        self.hooks = hooks or {}


class PartialSim:
    """The float and all-quantized plans of QuantSim `sim`, scored at graph output `output`, and
    the compiler of configurations (module docstring)."""

    def __init__(self, sim, output: str):
        self.sim, self.graph, self.output = sim, sim.graph, output
        self.order = self.graph.topological_order()
        self.nodes = {n.name: n for n in self.order}
        self.producers, self.readers = self.graph.producers(), self.graph.consumers()
        self.shapes = self.graph.validated_shapes()
        self.input_specs = {s.name: s for s in self.graph.inputs}
        self.float_plan = Plan(self.graph, sim.numerics.dtype.type, fold_batch_norms=False)
        self.all_set = frozenset(n for n in sim.quantizers if sim.enabled.get(n, False))
        self.all_plan = sim.plan({n: True for n in self.all_set})
        self.needed, todo = set(), [output]
        while todo:
            p = self.producers.get(todo.pop())
            if p is not None and p.name not in self.needed:
                self.needed.add(p.name)
                todo.extend(p.inputs)
        self.weights: dict = {}

    def reached(self, changed) -> list:
        """The nodes, in model order, that the scored output needs and whose result a change of
        the quantizers `changed` can alter: those they quantize the parameters, inputs or output
        of (the readers of a graph input) and every node downstream."""
        todo = []
        for name in changed:
            q = self.sim.quantizers[name]
            if q.kind != "activation":
                todo.append(q.node)
            for t in q.tensors if q.kind == "activation" else ():
                p = self.producers.get(t)
                todo += [p.name] if p is not None else [r.name for r in self.readers.get(t, ())]
        reached = set(todo)
        while todo:
            for r in self.readers.get(self.nodes[todo.pop()].outputs[0], ()):
                if r.name not in reached:
                    reached.add(r.name)
                    todo.append(r.name)
        return [n for n in self.order if n.name in reached and n.name in self.needed]

    def compile(self, enabled: frozenset) -> PartialRun:
        """The PartialRun of configuration `enabled` (a set of quantizer names; module
        docstring)."""
        from_float, from_all = self.reached(enabled), self.reached(enabled ^ self.all_set)
        base, nodes = ("float", from_float) if len(from_float) <= len(from_all) else \
            ("all", from_all)
        names = {n.name for n in nodes}
        if self.producers[self.output].name not in names:
            return PartialRun(base)
        produced = {n.outputs[0] for n in nodes}
        inputs = list(dict.fromkeys(t for n in nodes for t in n.inputs if t not in produced))
        raw = [t for t in inputs if t in self.input_specs]
        sub = Graph([self.input_specs.get(t) or TensorSpec(t, tuple(self.shapes[t]))
                     for t in inputs], [self.output],
                    [Node(n.name, n.op, list(n.inputs), list(n.outputs), dict(n.attrs), n.params)
                     for n in nodes], name=self.graph.name)
        sim, num = self.sim, self.sim.numerics
        params, hooks = {}, {"tensor_hooks": {}, "inplace_hooks": {}, "input_hooks": {}}
        for name in sorted(enabled):
            q = sim.quantizers[name]
            if q.kind == "param" and q.node in names:
                if name not in self.weights:
                    self.weights[name] = quantize_dequantize(
                        self.nodes[q.node].params[q.param], sim._encoding(name), num)
                params.setdefault(q.node, dict(self.nodes[q.node].params))[q.param] = \
                    self.weights[name]
            elif q.kind == "input" and q.node in names:
                hooks["input_hooks"][(q.node, q.input_index)] = \
                    lambda x, e=sim._encoding(name): quantize_dequantize(x, e, num)
            elif q.kind == "activation":
                enc = sim._encoding(name)
                for t in q.tensors:   # a tensor read from the base trace is already quantized
                    if t in produced or t in raw:
                        if enc.axis is None:
                            hooks["inplace_hooks"][t] = \
                                lambda a, e=enc: fake_quantize_inplace(a, e, num)
                        else:
                            hooks["tensor_hooks"][t] = \
                                lambda x, e=enc: quantize_dequantize(x, e, num)
        plan = Plan(sub, num.dtype.type, params=params, fold_batch_norms=False)
        plan.chunk_images = self.float_plan.chunk_images   # the whole graph's batch chunks
        return PartialRun(base, plan, [t for t in inputs if t not in raw], raw, hooks)

    def outputs(self, feeds, jobs: dict, quiet: bool = True, label: str = "partial runs"):
        """Yield (enabled set, scored output) of one batch for the float run, the all-quantized
        run and every job of `jobs` ({enabled set: job}), one base run's trace alive at a time
        (traced at the scored output and the tensors its jobs start from); the progress of a
        base run's jobs is shown as "<label> (<base> base)" unless `quiet`."""
        for base, plan, enabled in (("float", self.float_plan, frozenset()),
                                    ("all", self.all_plan, self.all_set)):
            mine = [(s, j) for s, j in jobs.items() if j.base == base]
            trace = plan.run(feeds, trace={self.output}.union(*[j.from_base for _, j in mine]))
            yield enabled, trace[self.output]
            for s, job in progress(mine, desc=f"{label} ({base} base)", quiet=quiet,
                                   unit="run"):
                yield s, self.run(job, feeds, trace)
            del trace   # before the next base run

    def run(self, job: PartialRun, feeds, trace) -> np.ndarray:
        """The scored output of `job` on one batch, given its base run's `trace`."""
        if job.plan is None:
            return trace[self.output]
        sub = {t: trace[t] for t in job.from_base}
        sub.update({t: feeds[t] for t in job.raw})
        return job.plan.run(sub, **job.hooks)[self.output]
