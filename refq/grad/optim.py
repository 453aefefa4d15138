"""Optimizers and learning-rate schedules with PyTorch's update rules, in their order of operations.

An optimizer updates parameters in place: `opt.step(params, grads)` with params and grads two
dicts {name: array} of the same keys (the arrays of `params` are overwritten), its state kept per
name (`state()` / `load_state()` for checkpoints). The arithmetic is that of PyTorch's single-tensor implementations (torch.optim.SGD and
torch.optim.Adam with foreach=False, fused=False), written out below, so that one step can be
compared number for number in float64:

SGD(lr, momentum=0, dampening=0, weight_decay=0, nesterov=False), per parameter p with gradient g:
    g ← g + wd·p                                   (when wd ≠ 0)
    b ← g on the first step, else b ← μ·b + (1 − dampening)·g       (when μ ≠ 0)
    g ← g + μ·b if nesterov else b                 (when μ ≠ 0)
    p ← p − lr·g
Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0), step t = 1, 2, ...:
    g ← g + wd·p                                   (when wd ≠ 0)
    m ← lerp(m, g, 1 − β1)    lerp(a, b, w) = a + w·(b − a) for w < 0.5, else b − (b − a)·(1 − w)
    v ← β2·v, then v ← v + ((1 − β2)·g)·g
    c1 = 1 − β1^t, c2 = 1 − β2^t,  step = lr / c1
    d ← sqrt(v) / sqrt(c2), then d ← d + eps
    p ← p + (−step·m) / d
(m and v start at 0.) Schedules give the learning rate of epoch (or step) t:
    cosine_lr(t, T, lr0, lr_min)  = lr_min + (lr0 − lr_min)·(1 + cos(π·t/T))/2  (CosineAnnealingLR's
                                    closed form)
    step_lr(t, step_size, lr0, γ) = lr0·γ^floor(t/step_size)                  (StepLR)
`batch_order(n, batch_size, seed, epoch)`: the seeded shuffle of one epoch, the same for the same
(seed, epoch) on every machine.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

__all__ = ["SGD", "Adam", "cosine_lr", "step_lr", "batch_order"]


def _check_same(params: dict, grads: dict, what: str):
    if set(params) != set(grads):
        raise InputError(f"{what}.step: gradients for {sorted(set(grads) - set(params))[:5]} "
                         f"and none for {sorted(set(params) - set(grads))[:5]}")
    for k, p in params.items():
        if np.shape(grads[k]) != np.shape(p):
            raise InputError(f"{what}.step: gradient of '{k}' has shape "
                             f"{list(np.shape(grads[k]))}, the parameter {list(np.shape(p))}")


def _positive(name, value, strict=False):
    if not (value > 0 if strict else value >= 0) or not math.isfinite(value):
        raise InputError(f"{name} must be {'positive' if strict else '>= 0'} and finite, got "
                         f"{value!r}")


class SGD:
    """Stochastic gradient descent with momentum, dampening, weight decay and Nesterov momentum
    (module docstring)."""

    def __init__(self, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        _positive("SGD lr", lr)
        _positive("SGD momentum", momentum)
        _positive("SGD weight_decay", weight_decay)
        if nesterov and (momentum == 0 or dampening != 0):
            raise InputError("SGD: nesterov momentum needs momentum > 0 and dampening 0")
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov
        self.buffers: dict = {}

    def step(self, params: dict, grads: dict) -> None:
        _check_same(params, grads, "SGD")
        for k, p in params.items():
            g = np.asarray(grads[k], dtype=p.dtype)
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                b = self.buffers.get(k)
                if b is None:
                    b = self.buffers[k] = g.copy()
                else:
                    b *= self.momentum
                    b += (1 - self.dampening) * g
                g = g + self.momentum * b if self.nesterov else b
            p -= self.lr * g

    def state(self) -> dict:
        """{"buffers": {key: array}}: what `load_state` restores (a checkpoint)."""
        return {"buffers": dict(self.buffers)}

    def load_state(self, state: dict) -> None:
        self.buffers = {k: np.array(v) for k, v in state["buffers"].items()}


class Adam:
    """Adam with PyTorch's defaults and order of operations (module docstring); `t` counts the
    steps taken."""

    def __init__(self, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        _positive("Adam lr", lr)
        _positive("Adam eps", eps)
        _positive("Adam weight_decay", weight_decay)
        if not all(0 <= b < 1 for b in betas) or len(betas) != 2:
            raise InputError(f"Adam betas must be two numbers in [0, 1), got {betas!r}")
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.t = 0
        self.m: dict = {}
        self.v: dict = {}

    def step(self, params: dict, grads: dict) -> None:
        _check_same(params, grads, "Adam")
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        size, c2_sqrt = self.lr / c1, math.sqrt(c2)
        for k, p in params.items():
            g = np.asarray(grads[k], dtype=p.dtype)
            if self.weight_decay:
                g = g + self.weight_decay * p
            m = self.m.setdefault(k, np.zeros_like(p))
            v = self.v.setdefault(k, np.zeros_like(p))
            w = 1 - b1
            if w < 0.5:
                m += w * (g - m)
            else:
                m[...] = g - (g - m) * (1 - w)
            v *= b2
            v += ((1 - b2) * g) * g
            d = np.sqrt(v) / c2_sqrt
            d += self.eps
            p += (-size * m) / d

    def state(self) -> dict:
        """{"t", "m", "v"}: what `load_state` restores (a checkpoint)."""
        return {"t": self.t, "m": dict(self.m), "v": dict(self.v)}

    def load_state(self, state: dict) -> None:
        self.t = int(state["t"])
        self.m = {k: np.array(v) for k, v in state["m"].items()}
        self.v = {k: np.array(v) for k, v in state["v"].items()}


def cosine_lr(t: int, total: int, lr0: float, lr_min: float = 0.0) -> float:
    """lr_min + (lr0 − lr_min)·(1 + cos(π·t/total))/2 for t in [0, total]."""
    if total <= 0:
        raise InputError(f"cosine_lr: total must be positive, got {total}")
    return lr_min + (lr0 - lr_min) * (1 + math.cos(math.pi * t / total)) / 2


def step_lr(t: int, step_size: int, lr0: float, gamma: float = 0.1) -> float:
    """lr0·gamma^floor(t/step_size)."""
    if step_size <= 0:
        raise InputError(f"step_lr: step_size must be positive, got {step_size}")
    return lr0 * gamma ** (t // step_size)


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list:
    """[index arrays] of one epoch's batches: a permutation of range(n) drawn from
    np.random.default_rng((seed, epoch)), cut into batches of `batch_size` (the last one
    shorter)."""
    if batch_size <= 0:
        raise InputError(f"batch_order: batch_size must be positive, got {batch_size}")
    perm = np.random.default_rng((int(seed), int(epoch))).permutation(n)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
