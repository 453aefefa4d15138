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
from ..runtime import feeds_dict
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


def train(model, data, loss, optimizer, *, targets=None, epochs: int = 1,
          batch_size: int = 32, seed: int = 0, output: str | None = None, wrt=None,
          dtype=np.float64, evaluate=None, quiet: bool = True, learn_ranges: bool = False):
    """(trained copy of `model`, report): `epochs` passes over `data` ({input: array} or one
    array, batch on axis 0) with `targets` (batch on axis 0, or None for a loss that needs none),
    minimising `loss` on tensor `output` with `optimizer` (`refq.grad.optim`); `model` a Graph or
    a QuantSim (module docstring). evaluate: None or a callable(model) -> number recorded after
    each epoch."""
    from ..quant.quantsim import QuantSim
    from .sim import learnable_ranges, sim_value_and_grad

    if epochs < 1 or batch_size < 1:
        raise InputError(f"train: epochs and batch_size must be positive, got {epochs} and "
                         f"{batch_size}")
    ranges = {}
    if isinstance(model, QuantSim):
        m = copy.deepcopy(model)
        g = m.graph
        ranges = learnable_ranges(m) if learn_ranges else {}

        def grads_of(batch, t):
            if not learn_ranges:
                return sim_value_and_grad(m, batch, loss, t, output=output, wrt=wrt)
            value, grads, range_grads = sim_value_and_grad(m, batch, loss, t, output=output,
                                                           wrt=wrt, ranges=ranges)
            return value, {**grads, **{(RANGE, name): per for name, per in range_grads.items()}}
    else:
        if learn_ranges:
            raise InputError("train: learn_ranges needs a QuantSim, not a float graph")
        m = g = model.copy()

        def grads_of(batch, t):
            return value_and_grad(g, batch, loss, t, output=output, wrt=wrt, dtype=dtype)
    feeds = feeds_dict(g, data)
    n = next(iter(feeds.values())).shape[0] if feeds else 0
    if n == 0:
        raise InputError("train: the training data holds no samples")
    if targets is not None and len(targets) != n:
        raise InputError(f"train: {len(targets)} targets for {n} samples")
    order = [node.name for node in g.topological_order()]
    nodes = {node.name: node for node in g.nodes}
    report = {"epochs": epochs, "steps": 0, "loss": [], "eval": []}
    batches = [(e, b) for e in range(epochs) for b in batch_order(n, batch_size, seed, e)]
    bar = progress(batches, total=len(batches), desc="train", quiet=quiet, unit="step")
    epoch_done, stored = 0, {}
    range_keys = {(RANGE, name) for name in ranges}
    report["ranges"] = len(ranges)
    for step, (epoch, idx) in enumerate(bar):
        if epoch != epoch_done:
            if evaluate is not None:
                report["eval"].append(evaluate(m))
            epoch_done = epoch
        value, grads = grads_of({k: v[idx] for k, v in feeds.items()},
                                None if targets is None else targets[idx])
        bad = _first_non_finite(grads, order)
        if not np.isfinite(value) or bad is not None:
            where = f"; first non-finite gradient: '{bad}'" if bad else ""
            raise TrainingError(f"train: step {step} (epoch {epoch}) gave loss {value!r}{where}; "
                                "lower the learning rate or check the data")
        params = {(node, k): ranges[node[1]][k == "max"] if node in range_keys
                  else nodes[node].params[k] for node, per in grads.items() for k in per}
        flat = {(node, k): v for node, per in grads.items() for k, v in per.items()}
        for (node, k), p in params.items():
            if node not in range_keys and p.dtype != np.dtype(dtype):   # trained in the compute dtype (stored back at the end)
                stored.setdefault((node, k), p.dtype)
                nodes[node].params[k] = params[(node, k)] = p.astype(dtype)
        optimizer.step(params, flat)
        report["loss"].append(float(value))
        report["steps"] += 1
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{value:.4g}", refresh=False)
    for (node, k), dt in stored.items():
        nodes[node].params[k] = nodes[node].params[k].astype(dt)
    for name, (lo, hi) in ranges.items():   # the encodings of the learned ranges
        m.encodings[name] = _learned_encoding(m, name, lo, hi)
    if evaluate is not None:
        report["eval"].append(evaluate(m))
    return m, report
