"""Losses for training and fine-tuning: each returns a sum, its gradient and what the sum counts.

A loss is called on one batch (or one chunk of a batch) as

    total, g, count = loss(y, target)

with `total` the sum of the per-element (or per-sample) terms over the chunk, `g` = ∂total/∂y
(y's shape and dtype) and `count` the number of terms; the loss of a whole batch is
Σ total / Σ count over its chunks, its gradient Σ g / Σ count, which is how `value_and_grad`
streams a batch in chunks. The reductions are PyTorch's defaults, so that a value can be
compared number for number:

- `mse`: mean over every element, torch.nn.MSELoss(reduction="mean"):
      L = Σ (y − t)² / numel,     ∂/∂y = 2 (y − t) / numel.
- `cross_entropy`: from logits z [N, K] and integer labels [N] (or probabilities [N, K]),
  torch.nn.CrossEntropyLoss(reduction="mean"):
      L = Σ_n −log softmax(z_n)[label_n] / N,     ∂/∂z = (softmax(z) − onehot) / N,
  log softmax computed as z − max − log Σ exp(z − max) (stable for any finite z).
- `kl_divergence`: KL(teacher ‖ student) from the student's logits z and the teacher's logits,
  torch.nn.KLDivLoss(reduction="batchmean") on log_softmax(z) and softmax(teacher):
      L = Σ_n Σ_k p_k (log p_k − log q_k) / N,  p = softmax(teacher), q = softmax(z),
      ∂/∂z = (q − p) / N   (terms with p_k = 0 contribute 0).
  Training without labels: the teacher is the float model's output on the same batch.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["mse", "cross_entropy", "kl_divergence", "log_softmax", "LOSSES"]


def log_softmax(z, axis: int = -1):
    """z − max − log Σ exp(z − max) along `axis`, in z's dtype."""
    m = np.max(z, axis=axis, keepdims=True)
    s = z - m
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def _pair(y, t, what):
    y = np.asarray(y)
    if y.dtype.kind != "f":
        raise InputError(f"{what}: the model output must be floating point, got {y.dtype}")
    t = np.asarray(t)
    return y, t


def mse(y, target):
    """(Σ (y − t)², 2 (y − t), y.size): the mean squared error over every element."""
    y, t = _pair(y, target, "mse")
    if t.shape != y.shape:
        raise InputError(f"mse: target shape {list(t.shape)} differs from the output's "
                         f"{list(y.shape)}")
    d = y - t.astype(y.dtype, copy=False)
    return float(np.sum(d * d)), 2 * d, y.size


def cross_entropy(logits, target):
    """(Σ_n −log softmax(z_n)[label_n], softmax(z) − onehot, N) for integer labels [N] in
    [0, K), or with probabilities [N, K] as target: (Σ −p·log softmax(z), softmax(z)·Σp − p, N)."""
    z, t = _pair(logits, target, "cross_entropy")
    if z.ndim != 2:
        raise InputError(f"cross_entropy: logits must be [N, classes], got shape {list(z.shape)}")
    n, k = z.shape
    ls = log_softmax(z)
    p = np.exp(ls)
    if t.dtype.kind in "iu":
        if t.shape != (n,):
            raise InputError(f"cross_entropy: labels must be [N] = [{n}], got shape "
                             f"{list(t.shape)}")
        if n and (t.min() < 0 or t.max() >= k):
            bad = int(np.flatnonzero((t < 0) | (t >= k))[0])
            raise InputError(f"cross_entropy: label {int(t[bad])} at index {bad} is outside "
                             f"[0, {k})")
        rows = np.arange(n)
        total = -float(np.sum(ls[rows, t]))
        g = p
        g[rows, t] -= 1
        return total, g, n
    if t.shape != z.shape:
        raise InputError(f"cross_entropy: target probabilities must have the logits' shape "
                         f"{list(z.shape)}, got {list(t.shape)}")
    t = t.astype(z.dtype, copy=False)
    total = -float(np.sum(t * ls))
    return total, p * np.sum(t, axis=1, keepdims=True) - t, n


def kl_divergence(logits, teacher_logits):
    """(Σ_n KL(softmax(teacher_n) ‖ softmax(z_n)), softmax(z) − softmax(teacher), N)."""
    z, t = _pair(logits, teacher_logits, "kl_divergence")
    if t.shape != z.shape or z.ndim != 2:
        raise InputError(f"kl_divergence: logits {list(z.shape)} and teacher logits "
                         f"{list(t.shape)} must both be [N, classes]")
    lq = log_softmax(z)
    lp = log_softmax(t.astype(z.dtype, copy=False))
    p = np.exp(lp)
    total = float(np.sum(np.where(p > 0, p * (lp - lq), 0)))
    return total, np.exp(lq) - p, z.shape[0]


LOSSES = {"mse": mse, "cross_entropy": cross_entropy, "kl_divergence": kl_divergence}
