"""Gradients: the reverse pass over a graph (`value_and_grad`), the losses it differentiates and
the optimizers that apply its gradients.

Each op's vector-Jacobian product sits beside its forward (`Op.vjp`, refq.layers)."""
from __future__ import annotations

from .backward import param_names, value_and_grad
from .losses import LOSSES, cross_entropy, kl_divergence, log_softmax, mse
from .optim import SGD, Adam, batch_order, cosine_lr, step_lr

__all__ = ["value_and_grad", "param_names", "mse", "cross_entropy", "kl_divergence",
           "log_softmax", "LOSSES", "SGD", "Adam", "batch_order", "cosine_lr", "step_lr"]
