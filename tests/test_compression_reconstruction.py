"""Channel pruning's data (refq.compression.sampling) and reconstruction: sampling equals a
plain loop transcription of its definition and is seeded; the least-squares fit equals a direct
np.linalg.lstsq on the same patches, with and without a bias; chunking changes no number."""
from __future__ import annotations

import numpy as np
import pytest

import refq
from refq.compression.channel_pruning import (METHOD, keep_count, prune, reconstruct_weights,
                                              select_channels)
from refq.compression.sampling import SAMPLES_PER_IMAGE, conv_geometry, sample_patches
from refq.compression.winnow import winnow
from refq.graph import Graph, Node, TensorSpec

from test_compression_pruning import branchy_graph, images


# ---- sampling ---------------------------------------------------------------------------------

def transcribed_patches(x, y, kernel, strides, pads, seed):
    """Plain loops over the definition in refq.compression.sampling."""
    rng = np.random.default_rng(seed)
    n, hgt, wid, c = x.shape
    kh, kw = kernel
    oh, ow = y.shape[1:3]
    (pt, pb, pl, pr), (sh, sw) = pads, strides
    h_lo, h_hi = (pt, oh - pb) if pt > kh or pb > kh else (0, oh)
    w_lo, w_hi = (pl, ow - pr) if pl > kw or pr > kw else (0, ow)
    hs = rng.integers(h_lo, h_hi, size=(n, SAMPLES_PER_IMAGE))
    ws = rng.integers(w_lo, w_hi, size=(n, SAMPLES_PER_IMAGE))
    xs, ys = [], []
    for i in range(n):
        for s in range(SAMPLES_PER_IMAGE):
            h, w = hs[i, s], ws[i, s]
            patch = np.zeros((kh, kw, c))
            for u in range(kh):
                for v in range(kw):
                    r, q = h * sh - pt + u, w * sw - pl + v
                    if 0 <= r < hgt and 0 <= q < wid:
                        patch[u, v] = x[i, r, q]
            xs.append(patch.reshape(-1))
            ys.append(y[i, h, w])
    return np.array(xs), np.array(ys)


@pytest.mark.parametrize("attrs,kernel", [
    ({"strides": [1, 1], "padding": "same", "pads": [0, 0, 0, 0]}, (3, 3)),
    ({"strides": [2, 3], "padding": "valid", "pads": [0, 0, 0, 0]}, (3, 2)),
    ({"strides": [1, 2], "padding": "explicit", "pads": [4, 3, 1, 0]}, (2, 3)),   # pad > kernel
])
def test_sampling_equals_a_plain_transcription_and_is_seeded(attrs, kernel):
    x = images(3, 5, (9, 11, 2))
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4,) + kernel + (2,))
    g = Graph([TensorSpec("x", (None, 9, 11, 2), "float64")], ["c"],
              [Node("c", "conv2d", ["x"], ["c"], dict(attrs), {"weight": w})]).validate()
    y = refq.run(g, x)["c"]
    pads, _ = conv_geometry(x.shape, g.node("c").attrs, w.shape)
    a = sample_patches(x, y, g.node("c").attrs, kernel, np.random.default_rng(7))
    b = sample_patches(x, y, g.node("c").attrs, kernel, np.random.default_rng(7))
    want = transcribed_patches(x, y, kernel, attrs["strides"], pads, 7)
    for got, again, ref in zip(a, b, want):
        np.testing.assert_array_equal(got, again)
        np.testing.assert_array_equal(got, ref)
    assert a[0].shape == (30, kernel[0] * kernel[1] * 2)
    # a patch times the weight gives the sampled output
    np.testing.assert_allclose(a[0] @ w.reshape(4, -1).T, a[1], rtol=1e-12, atol=1e-12)
    other = sample_patches(x, y, g.node("c").attrs, kernel, np.random.default_rng(8))
    assert not np.array_equal(a[0], other[0])


# ---- reconstruction ---------------------------------------------------------------------------

def test_reconstruction_equals_direct_lstsq_on_the_same_patches():
    g = branchy_graph()
    x = images(6)
    new, report = METHOD.compress(g, {"convA": 0.67, "L": 0.5}, data=x, seed=5)
    # the same steps by hand: forward order convA then L, one generator, the input from the
    # graph pruned so far, the target from the original graph
    rng = np.random.default_rng(5)
    original = refq.run(g, x, trace=True)
    ref = g.copy()
    for name, ratio in (("convA", 0.67), ("L", 0.5)):
        w = ref.node(name).params["weight"]
        keep = select_channels(w, keep_count(w.shape[-1], ratio))
        assert report["layers"][name]["kept_channels"] == keep.tolist()
        ref, _ = winnow(ref, name, keep)
        node = ref.node(name)
        xin = refq.run(ref, x, trace=True)[node.inputs[0]]
        xs, ys = sample_patches(xin, original[name], node.attrs, w.shape[1:3], rng)
        coef = np.linalg.lstsq(np.hstack([xs, np.ones((len(xs), 1))]), ys, rcond=None)[0]
        node.params["weight"] = coef[:-1].T.reshape(node.params["weight"].shape)
        node.params["bias"] = coef[-1]
        assert report["layers"][name]["samples"] == 60
        assert report["layers"][name]["unknowns"] == node.params["weight"][0].size + 1
        assert 0 < report["layers"][name]["distinct_samples"] <= 60
    assert [n.name for n in ref.nodes] == [n.name for n in new.nodes]
    for a, b in zip(ref.nodes, new.nodes):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])


def test_reconstruction_of_a_layer_without_bias_fits_no_intercept():
    g = branchy_graph()
    x = images(3)
    new, report = METHOD.compress(g, {"convC": 0.67}, data=x, seed=9)
    assert "bias" not in new.node("convC").params
    assert report["layers"]["convC"]["selections"] == ["convC/channel_select"]
    keep = report["layers"]["convC"]["kept_channels"]
    xs, ys = sample_patches(x[..., keep], refq.run(g, x, trace=True)["convC"],
                            g.node("convC").attrs, (1, 1), np.random.default_rng(9))
    want = np.linalg.lstsq(xs, ys, rcond=None)[0].T
    np.testing.assert_array_equal(new.node("convC").params["weight"].reshape(4, -1), want)


def test_reconstruction_without_bias_and_exact_fit():
    rng = np.random.default_rng(2)
    xs = rng.normal(size=(40, 6))
    w = rng.normal(size=(3, 6))
    got, b = reconstruct_weights(xs, xs @ w.T, has_bias=False)
    assert b is None
    np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-12)
    got, b = reconstruct_weights(xs, xs @ w.T + [1, 2, 3], has_bias=True)
    np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b, [1, 2, 3], rtol=1e-12)


def test_reconstruction_is_deterministic_and_seeded():
    g = branchy_graph()
    x = images(5)
    a, _ = METHOD.compress(g, {"L": 0.4}, data=x, seed=1)
    b, _ = METHOD.compress(g, {"L": 0.4}, data=x, seed=1)
    c, _ = METHOD.compress(g, {"L": 0.4}, data=x, seed=2)
    np.testing.assert_array_equal(a.node("L").params["weight"], b.node("L").params["weight"])
    assert not np.array_equal(a.node("L").params["weight"], c.node("L").params["weight"])
    _, report = prune(g, {"L": 0.4}, data=x, num_samples=20)
    assert report["layers"]["L"]["samples"] == 20


def test_chunked_sampling_changes_no_number(monkeypatch):
    import refq.compression.sampling as sampling

    g = branchy_graph()
    x = images(7)
    whole, _ = METHOD.compress(g, {"convA": 0.5, "L": 0.3}, data=x, seed=3)
    monkeypatch.setattr(sampling, "RECONSTRUCTION_BATCH", 2)
    chunked, _ = METHOD.compress(g, {"convA": 0.5, "L": 0.3}, data=x, seed=3)
    for a, b in zip(whole.nodes, chunked.nodes):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
