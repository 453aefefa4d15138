"""Central finite differences for the VJPs of float ops (shared by the tests/test_vjp_*.py files).

For an op f with inputs x_i and parameters p, and a random cotangent gy, the VJP must give
    <∂L/∂x_i, e> = d/dt L(x_i + t·e) at t = 0,   L = Σ gy ⊙ f(...)
for every direction e; `check_vjp` compares, in float64, each gradient entry with the central
difference (L(x + h·e_k) − L(x − h·e_k)) / 2h along the unit vector e_k of that entry (all
entries of small operands, a seeded sample of `samples` entries of larger ones), and requires the
largest relative error, |analytic − numeric| / max(1, |numeric|, |analytic|), to be <= tol.
"""
from __future__ import annotations

import numpy as np

from refq.layers import REGISTRY

H = 1e-6


def loss(op, inputs, params, attrs, gy) -> float:
    return float(np.sum(gy * op.forward(inputs, params, attrs)))


def numeric_grad_entries(fn, a, idx, h=H):
    """Central differences of fn() with respect to the entries `idx` (flat indices) of array a,
    which fn reads (a is modified in place and restored)."""
    flat = a.reshape(-1)
    out = np.empty(len(idx))
    for j, k in enumerate(idx):
        v = flat[k]
        flat[k] = v + h
        up = fn()
        flat[k] = v - h
        down = fn()
        flat[k] = v
        out[j] = (up - down) / (2 * h)
    return out


def check_vjp(name, inputs, params=None, attrs=None, *, seed=0, samples=40, tol=1e-6,
              skip_inputs=()):
    """Assert that REGISTRY[name].vjp matches central differences (module docstring); returns the
    largest relative error seen. inputs/params are float64 arrays (copied); attrs are completed
    with the op's defaults; skip_inputs: indices of inputs with no gradient (None expected)."""
    op = REGISTRY[name]
    assert op.vjp is not None, f"op '{name}' has no vjp"
    attrs = op.normalise_attrs(dict(attrs or {}), name)
    inputs = [np.array(x, dtype=np.float64) for x in inputs]
    params = {k: np.array(v, dtype=np.float64) for k, v in (params or {}).items()}
    rng = np.random.default_rng(seed)
    y = op.forward(inputs, params, attrs)
    gy = rng.standard_normal(np.shape(y))
    g_in, g_par = op.vjp(inputs, params, attrs, y, gy)
    assert len(g_in) == len(inputs), f"{name}: {len(g_in)} input gradients for {len(inputs)}"
    assert set(g_par) == set(params), f"{name}: parameter gradients {sorted(g_par)} for {sorted(params)}"
    worst = 0.0
    targets = [(f"input {i}", x, g) for i, (x, g) in enumerate(zip(inputs, g_in))
               if i not in skip_inputs] + [(f"param {k}", params[k], g_par[k]) for k in params]
    for i in skip_inputs:
        assert g_in[i] is None, f"{name}: input {i} should have no gradient"
    for what, a, g in targets:
        assert g is not None, f"{name}: no gradient for {what}"
        g = np.asarray(g)
        assert g.shape == a.shape, f"{name}: {what} gradient shape {g.shape} != {a.shape}"
        assert g.dtype == a.dtype, f"{name}: {what} gradient dtype {g.dtype} != {a.dtype}"
        n = a.size
        idx = np.arange(n) if n <= samples else np.sort(rng.choice(n, samples, replace=False))
        num = numeric_grad_entries(lambda: loss(op, inputs, params, attrs, gy), a, idx)
        ana = g.reshape(-1)[idx]
        err = np.abs(ana - num) / np.maximum(1.0, np.maximum(np.abs(num), np.abs(ana)))
        worst = max(worst, float(err.max(initial=0.0)))
        assert err.max(initial=0.0) <= tol, (
            f"{name} {what}: max relative error {err.max():.3g} at flat index "
            f"{idx[int(err.argmax())]} (analytic {ana[int(err.argmax())]!r}, numeric "
            f"{num[int(err.argmax())]!r})")
    return worst


def away_from_kinks(x, kinks, margin=1e-3):
    """x with every entry within `margin` of a kink moved `margin`·4 away from it (finite
    differences across a kink measure neither one-sided derivative)."""
    x = np.array(x, dtype=np.float64)
    for k in kinks:
        near = np.abs(x - k) < margin
        x[near] = k + np.where(x[near] >= k, 4 * margin, -4 * margin)
    return x
