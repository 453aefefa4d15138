"""Optimizer steps against the update rules written out element by element in Python floats
(exact in float64), schedules and the seeded batch order."""
from __future__ import annotations

import math

import numpy as np
import pytest

from refq.errors import InputError
from refq.grad.optim import SGD, Adam, batch_order, cosine_lr, step_lr

RNG = np.random.default_rng(3)


def sgd_by_hand(p, grads, lr, mu, damp, wd, nesterov):
    p, buf = list(p), None
    for g in grads:
        g = list(g)
        if wd:
            g = [gi + wd * pi for gi, pi in zip(g, p)]
        if mu:
            buf = list(g) if buf is None else [mu * b + (1 - damp) * gi for b, gi in zip(buf, g)]
            g = [gi + mu * b for gi, b in zip(g, buf)] if nesterov else list(buf)
        p = [pi - lr * gi for pi, gi in zip(p, g)]
    return p


def adam_by_hand(p, grads, lr, b1, b2, eps, wd):
    p = list(p)
    m, v = [0.0] * len(p), [0.0] * len(p)
    for t, g in enumerate(grads, start=1):
        g = list(g)
        if wd:
            g = [gi + wd * pi for gi, pi in zip(g, p)]
        w = 1 - b1
        m = [mi + w * (gi - mi) if w < 0.5 else gi - (gi - mi) * (1 - w) for mi, gi in zip(m, g)]
        v = [vi * b2 + ((1 - b2) * gi) * gi for vi, gi in zip(v, g)]
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        size = lr / c1
        d = [math.sqrt(vi) / math.sqrt(c2) + eps for vi in v]
        p = [pi + (-size * mi) / di for pi, mi, di in zip(p, m, d)]
    return p


@pytest.mark.parametrize("mu,damp,wd,nesterov", [(0, 0, 0, False), (0.9, 0, 0, False),
                                                  (0.9, 0.1, 1e-2, False), (0.8, 0, 5e-3, True)])
def test_sgd_steps_equal_the_rule_exactly(mu, damp, wd, nesterov):
    p0 = RNG.standard_normal(7)
    grads = [RNG.standard_normal(7) for _ in range(3)]
    params = {"w": p0.copy()}
    opt = SGD(0.05, momentum=mu, dampening=damp, weight_decay=wd, nesterov=nesterov)
    for g in grads:
        opt.step(params, {"w": g})
    assert params["w"].tolist() == sgd_by_hand(p0, grads, 0.05, mu, damp, wd, nesterov)


@pytest.mark.parametrize("betas,wd", [((0.9, 0.999), 0.0), ((0.5, 0.9), 1e-2), ((0.3, 0.99), 0.0)])
def test_adam_steps_equal_the_rule_exactly(betas, wd):
    p0 = RNG.standard_normal((2, 3))
    grads = [RNG.standard_normal((2, 3)) for _ in range(4)]
    params = {"w": p0.copy(), "b": np.zeros(1)}
    opt = Adam(1e-2, betas=betas, weight_decay=wd)
    for g in grads:
        opt.step(params, {"w": g, "b": np.ones(1)})
    want = adam_by_hand(p0.ravel(), [g.ravel() for g in grads], 1e-2, *betas, 1e-8, wd)
    assert params["w"].ravel().tolist() == want
    assert opt.t == 4 and params["b"][0] < 0


def test_adam_defaults_and_float32_state():
    opt = Adam()
    assert (opt.lr, opt.betas, opt.eps, opt.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0.0)
    params = {"w": np.ones(3, np.float32)}
    opt.step(params, {"w": np.array([1.0, -2.0, 0.0])})
    assert params["w"].dtype == np.float32 and opt.m["w"].dtype == np.float32
    # first step: m/c1 = g, sqrt(v/c2) = |g|: each weight moves by lr·sign(g) (0 stays)
    np.testing.assert_allclose(params["w"], [1 - 1e-3, 1 + 1e-3, 1.0], rtol=1e-6)


def test_bad_optimizer_input():
    with pytest.raises(InputError, match="lr"):
        SGD(-1.0)
    with pytest.raises(InputError, match="nesterov"):
        SGD(0.1, nesterov=True)
    with pytest.raises(InputError, match="betas"):
        Adam(betas=(0.9, 1.0))
    opt = Adam()
    with pytest.raises(InputError, match="none for"):
        opt.step({"w": np.zeros(2)}, {"v": np.zeros(2)})
    with pytest.raises(InputError, match="shape"):
        opt.step({"w": np.zeros(2)}, {"w": np.zeros(3)})


def test_schedules():
    assert cosine_lr(0, 10, 0.1) == 0.1 and cosine_lr(10, 10, 0.1, 0.01) == pytest.approx(0.01)
    assert cosine_lr(5, 10, 0.1) == pytest.approx(0.05)
    assert [step_lr(t, 3, 1.0, 0.5) for t in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    with pytest.raises(InputError):
        cosine_lr(1, 0, 0.1)


def test_batch_order_is_seeded_and_covers_every_sample():
    a = batch_order(10, 4, seed=7, epoch=0)
    assert [len(b) for b in a] == [4, 4, 2]
    assert sorted(np.concatenate(a).tolist()) == list(range(10))
    same = batch_order(10, 4, seed=7, epoch=0)
    assert all(np.array_equal(x, y) for x, y in zip(a, same))
    other = batch_order(10, 4, seed=7, epoch=1)
    assert not all(np.array_equal(x, y) for x, y in zip(a, other))
