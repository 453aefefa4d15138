"""Training a graph's or a simulation's parameters: `train(model, data, loss, optimizer, ...)`.

    trained, report = train(g, x, cross_entropy, Adam(1e-3), targets=labels, epochs=2,
                            output="logits")
    tuned, report = train(sim, x, cross_entropy, Adam(1e-4), targets=labels)  # a QuantSim

A Graph trains through `value_and_grad` in the compute dtype `dtype`; a QuantSim (calibrated)
through `sim_value_and_grad`: its simulated forward with every enabled quantizer, the gradients
passing each one by the straight-through estimator of its frozen encoding (quantization-aware
fine-tuning with fixed ranges), or with learn_ranges=True learning each quantizer's min and max
as well (AIMET 2.42 range learning, from `learnable_ranges`; the returned simulation's encodings
are those of the learned ranges; `report["ranges"]` counts them).

Each epoch visits the samples in the seeded order of `batch_order(n, batch_size, seed, epoch)`;
each step computes the loss of one batch and its gradients (`value_and_grad`, in the compute
dtype) and applies the optimizer to the parameters named by `wrt` (default: all), held in the
compute dtype while training and stored back in their own dtype at the end. The input
graph is not changed: training works on a copy, returned with a report
{"epochs", "steps", "loss": [loss of each step], "eval": [evaluate(graph) after each epoch]}.

Training stops with a TrainingError when a step's loss is not finite, naming the step and the
first parameter (in topological order) whose gradient is not finite, if one is; the parameters
are left as they were before that step. A progress bar shows the steps with the last loss on a
terminal (nothing with quiet=True or off a terminal).
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from ..errors import InputError, RefqError
from ..progress import progress
from ..feeds import feeds_dict
from .backward import value_and_grad
from .optim import batch_order

__all__ = ["train", "TrainingError"]


class TrainingError(RefqError):
    """Training cannot go on: a loss or gradient that is not finite."""


RANGE = "range"   # the first part of a learned range's key in the gradients (a tuple key)


def _learned_encoding(sim, name, lo, hi):
    """The encoding `learned_range_forward` computes with from (lo, hi), on the quantizer's axis."""
    from ..quant.ste import learned_range_forward

    q, enc = sim.quantizers[name], sim.encodings[name]
    probe = np.zeros(np.shape(lo), np.float32)   # one value per channel, on axis 0
    learned = learned_range_forward(probe, lo, hi, q.bitwidth, q.symmetric,
                                    axis=None if enc.axis is None else 0)[1].encoding
    return dataclasses.replace(learned, axis=enc.axis)


def _first_non_finite(grads, order):
    for node in order:
        for k, g in grads.get(node, {}).items():
            if not np.all(np.isfinite(g)):
                return f"{node}/{k}"
    return None


def logits_tensor(graph, name=None) -> str:
    """`name` when given (it must be a tensor of the graph), else the input of the graph's final
    softmax, else its only output."""
    tensors = {s.name for s in graph.inputs} | {t for n in graph.nodes for t in n.outputs}
    if name is not None:
        if name not in tensors:
            raise InputError(f"--logits {name}: model '{graph.name}' has no such tensor")
        return name
    if len(graph.outputs) != 1:
        raise InputError(f"model '{graph.name}' has outputs {graph.outputs}; name the logits "
                         "tensor (--logits)")
    producer = {n.outputs[0]: n for n in graph.nodes}.get(graph.outputs[0])
    return producer.inputs[0] if producer is not None and producer.op == "softmax" \
        else graph.outputs[0]


def train(model, data, loss, optimizer, *, targets=None, epochs: int = 1,
          batch_size: int = 32, seed: int = 0, output: str | None = None, wrt=None,
          dtype=np.float64, evaluate=None, quiet: bool = True, learn_ranges: bool = False,
          checkpoint=None, resume=None):
    """(trained copy of `model`, report): `epochs` passes over `data` ({input: array} or one
    array, batch on axis 0) with `targets` (batch on axis 0, or None for a loss that needs none),
    minimising `loss` on tensor `output` with `optimizer` (`refq.grad.optim`); `model` a Graph or
    a QuantSim (module docstring). evaluate: None or a callable(model) -> number recorded after
    each epoch. checkpoint: a .refq.h5 path written after every epoch (`refq.grad.checkpoint`);
    resume: such a path to go on from (model None: the checkpoint's model), up to `epochs` in all,
    with the same data, seed and batch size: the result is the uninterrupted run's, bit for bit."""
    from ..quant.quantsim import QuantSim

    if epochs < 1 or batch_size < 1:
        raise InputError(f"train: epochs and batch_size must be positive, got {epochs} and "
                         f"{batch_size}")
    state = None
    if resume is not None:
        from .checkpoint import load_checkpoint

        model, state = load_checkpoint(resume)
        _check_resume(state, resume, optimizer, seed, batch_size, learn_ranges)
    is_sim = isinstance(model, QuantSim)
    if learn_ranges and not is_sim:
        raise InputError("train: learn_ranges needs a QuantSim, not a float graph")
    m = copy.deepcopy(model) if is_sim else model.copy()
    g = m.graph if is_sim else m
    feeds = feeds_dict(g, data)
    n = next(iter(feeds.values())).shape[0] if feeds else 0
    if n == 0:
        raise InputError("train: the training data holds no samples")
    if targets is not None and len(targets) != n:
        raise InputError(f"train: {len(targets)} targets for {n} samples")
    run = _Run(m, is_sim, loss, output, wrt, dtype, learn_ranges)
    report = {"epochs": epochs, "steps": 0, "loss": [], "eval": [], "ranges": len(run.ranges)}
    first = 0
    if state is not None:
        run.restore(state)
        optimizer.load_state(state["optimizer"])
        report.update(steps=state["steps"], loss=list(state["loss"]), eval=list(state["eval"]))
        first = state["epochs_done"]
    order = [node.name for node in g.topological_order()]
    batches = [(e, b) for e in range(first, epochs) for b in batch_order(n, batch_size, seed, e)]
    bar = progress(batches, total=len(batches), desc="train", quiet=quiet, unit="step")
    for i, (epoch, idx) in enumerate(bar):
        value, grads = run.grads({k: v[idx] for k, v in feeds.items()},
                                 None if targets is None else targets[idx])
        bad = _first_non_finite(grads, order)
        if not np.isfinite(value) or bad is not None:
            where = f"; first non-finite gradient: '{bad}'" if bad else ""
            raise TrainingError(f"train: step {report['steps']} (epoch {epoch}) gave loss "
                                f"{value!r}{where}; lower the learning rate or check the data")
        optimizer.step(run.params(grads), {(a, k): v for a, per in grads.items()
                                           for k, v in per.items()})
        report["loss"].append(float(value))
        report["steps"] += 1
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{value:.4g}", refresh=False)
        if i + 1 == len(batches) or batches[i + 1][0] != epoch:   # the epoch is over
            if evaluate is not None:
                report["eval"].append(evaluate(run.finished()))
            if checkpoint is not None:
                from .checkpoint import save_checkpoint

                save_checkpoint(checkpoint, run.finished(), {
                    "epochs_done": epoch + 1, "steps": report["steps"], "loss": report["loss"],
                    "eval": report["eval"], "optimizer": optimizer.state(), **run.state(),
                    "config": {"optimizer": type(optimizer).__name__, "seed": seed,
                               "batch_size": batch_size, "learn_ranges": learn_ranges}})
    return run.finished(), report


def _check_resume(state, path, optimizer, seed, batch_size, learn_ranges):
    cfg = state["config"]
    mine = {"optimizer": type(optimizer).__name__, "seed": seed, "batch_size": batch_size,
            "learn_ranges": learn_ranges}
    diff = [f"{k} {cfg[k]!r} (given {v!r})" for k, v in mine.items() if cfg[k] != v]
    if diff:
        raise InputError(f"{path}: the checkpoint was trained with " + ", ".join(diff) +
                         "; resume with the same settings")


class _Run:
    """The model being trained: its parameters in the training dtype (each stored back in its
    own dtype by `finished`), learned ranges, and the gradient function."""

    def __init__(self, m, is_sim, loss, output, wrt, dtype, learn_ranges):
        from .sim import learnable_ranges, sim_value_and_grad

        self.m, self.is_sim, self.dtype = m, is_sim, np.dtype(dtype)
        g = m.graph if is_sim else m
        self.nodes = {node.name: node for node in g.nodes}
        self.ranges = learnable_ranges(m) if learn_ranges else {}
        self.stored = {}     # {(node, param): its dtype} of parameters held in the training dtype
        if is_sim and learn_ranges:
            def grads(batch, t):
                value, gr, range_grads = sim_value_and_grad(m, batch, loss, t, output=output,
                                                            wrt=wrt, ranges=self.ranges)
                return value, {**gr, **{(RANGE, name): per for name, per in range_grads.items()}}
        elif is_sim:
            def grads(batch, t):
                return sim_value_and_grad(m, batch, loss, t, output=output, wrt=wrt)
        else:
            def grads(batch, t):
                return value_and_grad(g, batch, loss, t, output=output, wrt=wrt, dtype=dtype)
        self.grads = grads

    def params(self, grads) -> dict:
        """{(node, param) or ((RANGE, quantizer), "min"|"max"): the array the optimizer updates}
        for every gradient, parameters moved to the training dtype on first use."""
        out = {}
        for a, per in grads.items():
            for k in per:
                if isinstance(a, tuple):   # a learned range
                    out[(a, k)] = self.ranges[a[1]][k == "max"]
                    continue
                p = self.nodes[a].params[k]
                if p.dtype != self.dtype:
                    self.stored.setdefault((a, k), p.dtype.str)
                    p = self.nodes[a].params[k] = p.astype(self.dtype)
                out[(a, k)] = p
        return out

    def state(self) -> dict:
        return {"params": {key: self.nodes[key[0]].params[key[1]] for key in self.stored},
                "stored": dict(self.stored), "ranges": dict(self.ranges)}

    def restore(self, state) -> None:
        for (node, k), v in state["params"].items():
            self.nodes[node].params[k] = np.array(v)
        self.stored = dict(state["stored"])
        for name, (lo, hi) in state["ranges"].items():
            self.ranges[name] = (np.array(lo), np.array(hi))

    def finished(self):
        """A copy of the model with each parameter in its own dtype and, for learned ranges, the
        encodings they give."""
        out = copy.deepcopy(self.m)
        nodes = {node.name: node for node in (out.graph if self.is_sim else out).nodes}
        for (node, k), dt in self.stored.items():
            nodes[node].params[k] = nodes[node].params[k].astype(dt)
        for name, (lo, hi) in self.ranges.items():
            out.encodings[name] = _learned_encoding(out, name, lo, hi)
        return out
