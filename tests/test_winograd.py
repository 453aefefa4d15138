"""Winograd F(2x2, 3x3) (refq.layers.winograd): within its stated bound of the exact convolution,
taken only where it applies, and the same tensors in every run of a float32 plan."""
import numpy as np
import pytest

import refq
from refq.graph import Graph, Node, TensorSpec
from refq.layers.conv import forward_fused
from refq.layers.conv_geometry import check
from refq.layers.winograd import (LIMIT, MIN_CHANNELS, TransformedWeights, applies,
                                  error_bound, transformed_weights, winograd_conv)

U32 = 2.0 ** -24


def _attrs(padding="same", pads=(0, 0, 0, 0), strides=(1, 1), dilations=(1, 1), groups=1):
    return {"strides": strides, "dilations": dilations, "padding": padding, "pads": pads,
            "groups": groups}


def _exact(x, w, b, attrs):
    """The float64 direct convolution of the float32 operands (their products and sums exact
    to about 2^-53 relative: the reference the bound is stated against)."""
    return forward_fused([x.astype(np.float64)], {"weight": w.astype(np.float64),
                                                  "bias": b.astype(np.float64)}, attrs, None)


CASES = [  # n, h, w, c, o, padding, pads
    (2, 7, 9, 64, 64, "same", (0, 0, 0, 0)),
    (1, 8, 8, 64, 80, "valid", (0, 0, 0, 0)),
    (3, 5, 4, 70, 64, "same", (0, 0, 0, 0)),
    (1, 6, 11, 96, 64, "explicit", (2, 0, 1, 3)),
    (2, 3, 3, 64, 64, "valid", (0, 0, 0, 0)),
    (1, 40, 36, 64, 64, "same", (0, 0, 0, 0)),
]


@pytest.mark.parametrize("n, h, w, c, o, padding, pads", CASES)
@pytest.mark.parametrize("data", ["normal", "one_sign", "wide_range"])
def test_winograd_within_its_bound_of_the_exact_convolution(n, h, w, c, o, padding, pads, data):
    """Every output within (C + 6)·u·E + u·|y| of the float64 convolution (module docstring),
    on odd and even sizes, every padding, inputs of one sign and of 2^±20 magnitudes."""
    rng = np.random.default_rng(n * 1000 + h * 10 + w)
    x = rng.standard_normal((n, h, w, c))
    if data == "one_sign":
        x = np.abs(x)
    elif data == "wide_range":
        x *= 2.0 ** rng.integers(-20, 21, x.shape)
    x = x.astype(np.float32)
    wt = (rng.standard_normal((o, 3, 3, c)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    attrs = _attrs(padding, pads)
    assert applies(x, wt, attrs)
    got = forward_fused([x], {"weight": wt, "bias": b}, attrs, None, winograd=TransformedWeights())
    want = _exact(x, wt, b, attrs)
    pads_, (oh, ow), _ = check(x.shape, attrs, {"weight": wt})
    bound = error_bound(x, pads_, wt, oh, ow) + 2 * U32 * np.abs(want)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.all(np.abs(got - want) <= bound)


def test_transformed_weights_are_g_w_gt_rounded_once():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 3, 3, 4)).astype(np.float32)
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    want = np.empty((4, 4, 4, 5))
    for o in range(5):
        for c in range(4):
            want[:, :, c, o] = g @ w[o, :, :, c].astype(np.float64) @ g.T
    assert transformed_weights(w).tobytes() == want.astype(np.float32).tobytes()


def test_winograd_conv_runs_the_epilogue_on_every_output_once():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 9, 7, 64)).astype(np.float32)
    wt = rng.standard_normal((64, 3, 3, 64)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    pads = (1, 1, 1, 1)
    plain, counted = np.empty((2, 9, 7, 64), np.float32), np.empty((2, 9, 7, 64), np.float32)
    u = transformed_weights(wt)
    winograd_conv(x, pads, u, b, plain)
    seen = np.zeros(plain.shape, int)

    def epilogue(band):
        seen[np.unravel_index(_offsets(band, counted), counted.shape)] += 1
        np.multiply(band, 2, out=band)

    winograd_conv(x, pads, u, b, counted, epilogue)
    assert np.all(seen == 1)
    assert (counted / 2).tobytes() == plain.tobytes()


def _offsets(band, root):
    start = (band.__array_interface__["data"][0] - root.__array_interface__["data"][0]) // 4
    return start + np.arange(band.size)


@pytest.mark.parametrize("change", ["float64", "stride", "dilation", "groups", "channels",
                                    "outputs", "kernel", "nan", "inf", "huge", "empty"])
def test_the_direct_path_where_winograd_does_not_apply(change):
    """Outside the conditions the plan's forward is the direct one, bit for bit (NaN and
    infinities included)."""
    rng = np.random.default_rng(5)
    n, c, o, k = 1, MIN_CHANNELS, MIN_CHANNELS, 3
    attrs = _attrs()
    if change == "stride":
        attrs = _attrs(strides=(2, 1))
    elif change == "dilation":
        attrs = _attrs(dilations=(1, 2))
    elif change == "groups":
        attrs, c, o = _attrs(groups=2), 2 * MIN_CHANNELS, 2 * MIN_CHANNELS
    elif change == "channels":
        c = MIN_CHANNELS - 1
    elif change == "outputs":
        o = MIN_CHANNELS - 1
    elif change == "kernel":
        k = 5
    elif change == "empty":
        n = 0
    dtype = np.float64 if change == "float64" else np.float32
    x = rng.standard_normal((n, 6, 6, c)).astype(dtype)
    wt = rng.standard_normal((o, k, 3, c // attrs["groups"])).astype(dtype)
    if change == "nan":
        x[0, 2, 3, 5] = np.nan
    elif change == "inf":
        x[0, 5, 5, 0] = -np.inf
    elif change == "huge":
        x[0, 0, 0, 0] = 2 * LIMIT
    params = {"weight": wt, "bias": rng.standard_normal(o).astype(dtype)}
    assert not applies(x, wt, attrs)
    got = forward_fused([x], params, attrs, None, winograd=TransformedWeights())
    assert got.tobytes() == forward_fused([x], params, attrs, None).tobytes()


def test_transformed_weights_follow_the_weight_array():
    rng = np.random.default_rng(6)
    w1, w2 = (rng.standard_normal((64, 3, 3, 64)).astype(np.float32) for _ in range(2))
    kept = TransformedWeights()
    u1 = kept.of(w1)
    assert kept.of(w1) is u1
    u2 = kept.of(w2)
    assert u2.tobytes() == transformed_weights(w2).tobytes()
    assert kept.of(w1) is u1 and kept.of(w2) is u2   # a node's own and folded weights
    kept.of(w1.copy())
    assert kept.of(w1) is not u1 and kept.of(w1).tobytes() == u1.tobytes()


def test_a_plan_with_hooks_transforms_its_weights_once(monkeypatch):
    """Steps with hooks are built for every run; the transformed weights stay with the plan."""
    from refq.layers import winograd

    made = []
    real = winograd.transformed_weights
    monkeypatch.setattr(winograd, "transformed_weights", lambda w: made.append(1) or real(w))
    plan = refq.Plan(_graph(), np.float32)
    x = np.random.default_rng(9).standard_normal((2, 10, 10, 64)).astype(np.float32)
    hooks = {"inplace_hooks": {"a": lambda a: None}}
    first = plan.run(x, **hooks)["y"]
    assert plan.run(x, **hooks)["y"].tobytes() == first.tobytes()
    assert len(made) == 2   # two convolutions, once each


def _graph():
    rng = np.random.default_rng(7)
    nodes = [Node("c1", "conv2d", ["x"], ["a"], {"padding": "same"},
                  {"weight": rng.standard_normal((64, 3, 3, 64)) * 0.05,
                   "bias": rng.standard_normal(64)}),
             Node("r", "relu", ["a"], ["b"]),
             Node("c2", "conv2d", ["b"], ["y"], {"padding": "same"},
                  {"weight": rng.standard_normal((64, 3, 3, 64)) * 0.05})]
    return Graph([TensorSpec("x", (None, 10, 10, 64))], ["y"], nodes, name="wino")


def test_a_float32_plan_takes_winograd_in_every_run_and_float64_never():
    """Traced and untraced runs of a float32 plan give the same tensors; winograd=False gives
    the direct forwards; a float64 plan is the definition whatever it is asked."""
    g = _graph()
    x = np.random.default_rng(8).standard_normal((3, 10, 10, 64)).astype(np.float32)
    plan = refq.Plan(g, np.float32)
    assert plan.winograd
    y = plan.run(x)["y"]
    assert y.tobytes() == plan.run(x, trace=True)["y"].tobytes()
    direct = refq.Plan(g, np.float32, winograd=False)
    yd = direct.run(x)["y"]
    assert yd.tobytes() != y.tobytes()
    assert yd.tobytes() == direct.run(x, trace=True)["y"].tobytes()
    np.testing.assert_allclose(y, yd, rtol=1e-4, atol=1e-5)
    assert not refq.Plan(g, np.float64, winograd=True).winograd
