"""Channel pruning (refq.compression.channel_pruning, winnow, sampling): keeping every channel is
the identity; winnowing computes what masking the pruned input channels to zero computes;
sampling equals a plain loop transcription of its definition; reconstruction equals a direct
np.linalg.lstsq on the same patches; the manual mode; a real model pruned, quantized and lowered;
bad input as one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

import refq
from refq.compression import get_method
from refq.compression import cost as C
from refq.compression.channel_pruning import (METHOD, keep_count, prune, reconstruct_weights,
                                              select_channels)
from refq.compression.sampling import SAMPLES_PER_IMAGE, conv_geometry, sample_patches
from refq.compression.winnow import SELECTIONS_META, winnow
from refq.errors import InputError, RefqError
from refq.graph import Graph, Node, TensorSpec


def conv(name, x, w, b=None, **attrs):
    a = {"strides": [1, 1], "padding": "same"}
    a.update(attrs)
    params = {"weight": w} if b is None else {"weight": w, "bias": b}
    return Node(name, "conv2d", [x], [name], a, params)


def bn(name, x, c, rng):
    return Node(name, "batch_norm", [x], [name], {"epsilon": 1e-3},
                {"gamma": rng.uniform(0.5, 2, c), "beta": rng.normal(size=c),
                 "mean": rng.normal(size=c), "variance": rng.uniform(0.5, 2, c)})


def act(name, op, x):
    return Node(name, op, [x], [name])


def branchy_graph(seed=0, extra_reader=False):
    """x -> convA -> bnA -> relu -> depthwise -> bnB ─┐
       x -> convB -> relu6 ───────────────────────── add ─┐
       x -> convC -> hard_swish ──────────────────────── concat -> zero_pad2d -> L -> out
       and a squeeze-excitation multiply on the concat side; extra_reader: convB's relu6 is also
       a graph output (propagation must stop there)."""
    rng = np.random.default_rng(seed)
    r = rng.normal
    nodes = [
        conv("convA", "x", r(size=(6, 3, 3, 3)), r(size=6)),
        bn("bnA", "convA", 6, rng), act("reluA", "relu", "bnA"),
        conv("dw", "reluA", r(size=(6, 3, 3, 1)), r(size=6), groups=6),
        bn("bnB", "dw", 6, rng),
        conv("convB", "x", r(size=(6, 1, 1, 3)), r(size=6)), act("relu6B", "relu6", "convB"),
        Node("add", "add", ["bnB", "relu6B"], ["add"]),
        conv("convC", "x", r(size=(4, 1, 1, 3))), act("hsC", "hard_swish", "convC"),
        Node("gap", "global_avg_pool2d", ["x"], ["gap"], {"keepdims": True}),
        conv("convS", "gap", r(size=(4, 1, 1, 3)), r(size=4)), act("sig", "sigmoid", "convS"),
        Node("se", "multiply", ["hsC", "sig"], ["se"]),
        Node("cat", "concat", ["add", "se"], ["cat"], {"axis": -1}),
        Node("pad", "zero_pad2d", ["cat"], ["pad"], {"pads": [1, 1, 1, 1]}),
        conv("L", "pad", r(size=(5, 3, 3, 10)), r(size=5), padding="valid", strides=[2, 1]),
    ]
    outputs = ["L"] + (["relu6B"] if extra_reader else [])
    return Graph([TensorSpec("x", (None, 7, 9, 3), "float64")], outputs, nodes).validate()


def masked(graph, layer, keep):
    """`graph` with the input channels of `layer` outside `keep` zeroed in its weight."""
    g = graph.copy()
    w = g.node(layer).params["weight"].copy()
    drop = np.setdiff1d(np.arange(w.shape[-1]), keep)
    w[..., drop] = 0
    g.node(layer).params["weight"] = w
    return g


def images(n=4, seed=1, shape=(7, 9, 3)):
    return np.random.default_rng(seed).normal(size=(n,) + shape)


# ---- identity ------------------------------------------------------------------------------

def test_keeping_every_channel_is_the_identity_bit_for_bit():
    g = branchy_graph()
    x = images()
    for reconstruct in (False, True):
        new, report = METHOD.compress(g, {"L": 1.0, "convA": 1}, data=x, reconstruct=reconstruct)
        for a, b in zip(g.nodes, new.nodes):
            assert a.name == b.name and a.inputs == b.inputs and a.attrs == b.attrs
            for k in a.params:
                np.testing.assert_array_equal(a.params[k], b.params[k])
        assert np.array_equal(refq.run(g, x)["L"], refq.run(new, x)["L"])
        assert report["layers"]["L"]["kept"] == 10 and report["layers"]["L"]["samples"] == 0


@pytest.fixture(scope="module")
def ppocr():
    """(model, 60 labelled text lines): the bundled classifier and the first test lines."""
    from refq.ppocr_data import data_path, load_model, textline_inputs

    with np.load(data_path("textlines_test1000.npz"), allow_pickle=False) as z:
        x = textline_inputs(z["X"][:60], z["widths"][:60])
        labels = z["y"][:60]
    return load_model(), x, labels


def test_real_model_all_channels_kept_is_identity(ppocr):
    g, x, _ = ppocr
    new, _ = METHOD.compress(g, {name: 1.0 for name in METHOD.layers(g)}, data=x[:4])
    assert np.array_equal(refq.run(g, x[:4])[g.outputs[0]], refq.run(new, x[:4])[g.outputs[0]])


# ---- winnowing ------------------------------------------------------------------------------

@pytest.mark.parametrize("keep", [[0, 2, 3, 7, 9], [1, 4, 5], [6, 8], [0, 1, 2, 3, 4, 5]])
def test_winnowing_equals_masking(keep):
    g = branchy_graph()
    x = images()
    new, info = winnow(g, "L", keep)
    want = refq.run(masked(g, "L", keep), x)["L"]
    np.testing.assert_allclose(refq.run(new, x)["L"], want, rtol=1e-12, atol=1e-12)
    assert info["selections"] == []
    shapes = new.infer_shapes()
    kept_a = sum(k < 6 for k in keep)
    if kept_a:
        for name in ("convA", "bnA", "reluA", "dw", "bnB", "convB", "relu6B", "add"):
            assert shapes[name][-1] == kept_a, name
        assert new.node("dw").attrs["groups"] == kept_a
        assert new.node("bnA").params["gamma"].shape == (kept_a,)
    else:  # the add branch dropped from the concat, its producers removed
        assert {"convA", "convB", "add"}.isdisjoint(n.name for n in new.nodes)
    kept_c = len(keep) - kept_a
    if kept_c:
        assert shapes["convC"][-1] == shapes["convS"][-1] == kept_c
        assert shapes["gap"][-1] == 3  # the pooling of the graph input keeps its channels
    else:
        assert {"convC", "convS", "se"}.isdisjoint(n.name for n in new.nodes)
    assert new.node("L").params["weight"].shape == (5, 3, 3, len(keep))


def test_winnowing_stops_at_a_tensor_another_reader_needs_whole():
    g = branchy_graph(extra_reader=True)
    x = images()
    keep = [0, 2, 3, 7, 9]
    new, info = winnow(g, "L", keep)
    got = refq.run(new, x)
    want = refq.run(masked(g, "L", keep), x)
    np.testing.assert_allclose(got["L"], want["L"], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got["relu6B"], want["relu6B"])   # the other reader unchanged
    shapes = new.infer_shapes()
    assert shapes["convB"][-1] == 6 and shapes["convA"][-1] == 3
    assert info["selections"] == ["L/channel_select"]
    sel = new.node("L/channel_select")
    assert sel.inputs == ["relu6B"] and sel.op == "gather_channels"
    assert sel.attrs["indices"] == [0, 2, 3]
    assert new.meta[SELECTIONS_META] == {"L/channel_select": [0, 2, 3]}
    assert "L/channel_select" in new.node("add").inputs


def test_a_graph_input_stops_propagation_with_a_selection():
    rng = np.random.default_rng(3)
    g = Graph([TensorSpec("x", (None, 5, 5, 4), "float64")], ["c"],
              [act("r", "relu", "x"), conv("c", "r", rng.normal(size=(2, 3, 3, 4)))]).validate()
    new, info = winnow(g, "c", [1, 3])
    assert info["selections"] == ["c/channel_select"]
    assert new.node("c/channel_select").inputs == ["r"]   # moved below the relu (no params)
    x = images(3, shape=(5, 5, 4))
    np.testing.assert_allclose(refq.run(new, x)["c"], refq.run(masked(g, "c", [1, 3]), x)["c"],
                               rtol=1e-12, atol=1e-12)


def test_winnowing_equals_masking_on_every_layer_of_a_real_model():
    from real_models import MODELS

    g = refq.import_keras(str(MODELS["fer"]))
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 1))
    selections = 0
    for layer in METHOD.layers(g):
        w = g.node(layer).params["weight"]
        keep = select_channels(w, keep_count(w.shape[-1], 0.5))
        new, info = winnow(g, layer, keep)
        selections += len(info["selections"])
        t = g.node(layer).outputs[0]
        got = refq.run(new, x, trace=True)
        want = refq.run(masked(g, layer, keep), x, trace=True)
        for name in (t, g.outputs[0]):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-12,
                                       atol=1e-12 * np.abs(want[name]).max(), err_msg=layer)
    assert selections == 8   # the layers reading a residual tensor another branch reads whole


def test_a_rank_2_selection_and_a_dense_layer_can_be_winnowed():
    rng = np.random.default_rng(4)
    g = Graph([TensorSpec("x", (None, 6), "float64")], ["d2"],
              [Node("d1", "dense", ["x"], ["d1"], {}, {"weight": rng.normal(size=(5, 6))}),
               Node("d2", "dense", ["d1"], ["d2"], {}, {"weight": rng.normal(size=(3, 5)),
                                                         "bias": rng.normal(size=3)})]).validate()
    x = rng.normal(size=(4, 6))
    for layer, keep in (("d2", [0, 3]), ("d1", [1, 2, 5])):
        new, info = winnow(g, layer, keep)
        np.testing.assert_allclose(refq.run(new, x)["d2"],
                                   refq.run(masked(g, layer, keep), x)["d2"], rtol=1e-12)
    assert info["selections"] == ["d1/channel_select"]
    assert new.node("d1/channel_select").op == "gather_channels"
    new, info = winnow(g, "d2", [0, 3])
    assert info["reduced"] == {"d1": 3} and new.node("d1").params["weight"].shape == (2, 6)


# ---- selection, counts, ratios ------------------------------------------------------------------

def test_selection_by_magnitude_with_ties_to_the_lower_index():
    w = np.zeros((2, 1, 1, 6))
    w[0, 0, 0] = [1, 3, 2, 3, 1, 2]
    assert select_channels(w, 3).tolist() == [1, 2, 3]
    assert select_channels(w, 2).tolist() == [1, 3]
    assert select_channels(w, 4).tolist() == [1, 2, 3, 5]
    w[1, 0, 0] = [2, 0, 0, 0, 0, 0]    # channel 0: 1 + 4 = 5 < 9
    assert select_channels(w, 5).tolist() == [0, 1, 2, 3, 5]
    assert select_channels(np.ones((3, 2, 2, 5)), 2).tolist() == [0, 1]


def test_keep_count_and_rounded_ratio():
    assert keep_count(10, 0.3) == 3           # exact 3/10, not floor(2.9999...)
    assert keep_count(10, 0.05) == 1          # at least one channel
    assert keep_count(49, 1 / 49) == 1
    assert keep_count(10, 0.3, 4) == 4 and keep_count(10, 0.9, 4) == 10
    g = branchy_graph()
    assert METHOD.rounded_ratio(g, "L", 0.5) == 0.5
    from dataclasses import replace
    m4 = replace(METHOD, multiplicity=4)
    assert m4.rounded_ratio(g, "L", 0.3) == 0.4
    assert m4.keep(g, "L", m4.rounded_ratio(g, "L", 0.3)) == 4
    assert m4.rounded_ratio(g, "L", 0.8) == 0.8     # 8 channels, already a multiple


def test_cost_ratio_measures_the_winnowed_model():
    g = branchy_graph()
    new, report = METHOD.compress(g, {"L": 0.5}, reconstruct=False)
    before, after = C.model_cost(g).macs, C.model_cost(new).macs
    assert METHOD.cost_ratio(g, "L", 0.5) == after / before < 1
    assert report["model"] == {"before": C.model_cost(g).to_json(),
                               "after": C.model_cost(new).to_json()}
    # by hand: L keeps 5 of 10 channels (3 of convA's 6 outputs and convB's, 2 of convC's 4)
    shapes = new.infer_shapes()
    kept = report["layers"]["L"]["kept_channels"]
    ka = sum(k < 6 for k in kept)
    hand = (5 * 3 * 3 * 5 * shapes["L"][1] * shapes["L"][2]
            + 7 * 9 * (ka * 9 * 3 + ka * 9 + ka * 3 + (5 - ka) * 3) + (5 - ka) * 3)
    assert report["model"]["after"]["macs"] == hand
    area = shapes["L"][1] * shapes["L"][2]
    assert report["layers"]["L"]["before"] == {"macs": 5 * 9 * 10 * area, "params": 5 * 9 * 10}
    assert report["layers"]["L"]["after"] == {"macs": 5 * 9 * 5 * area, "params": 5 * 9 * 5}


def test_channel_selections_cost_nothing_in_the_report():
    """A selection is a gather_channels node: no MACs, no parameters, so the report's model cost
    is `model_cost` of the pruned graph."""
    g = branchy_graph(extra_reader=True)
    new, report = METHOD.compress(g, {"L": 0.5}, reconstruct=False)
    assert new.node("L/channel_select").op == "gather_channels"
    assert report["channel_selections"] == {"macs": 0, "params": 0}
    assert report["model"]["after"]["macs"] == C.model_cost(new).macs
    assert METHOD.cost_ratio(g, "L", 0.5) == (report["model"]["after"]["macs"]
                                              / report["model"]["before"]["macs"])


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


# ---- manual mode --------------------------------------------------------------------------------

def test_manual_mode_keeps_the_named_channels():
    g = branchy_graph()
    x = images()
    new, report = METHOD.compress(g, {}, keep_channels={"L": [9, 1, 4]}, reconstruct=False)
    entry = report["layers"]["L"]
    assert entry["selection"] == "manual" and entry["kept_channels"] == [1, 4, 9]
    np.testing.assert_array_equal(new.node("L").params["weight"],
                                  g.node("L").params["weight"][..., [1, 4, 9]])
    np.testing.assert_allclose(refq.run(new, x)["L"], refq.run(masked(g, "L", [1, 4, 9]), x)["L"],
                               rtol=1e-12, atol=1e-12)
    # the manual choice overrides a ratio given for the same layer
    again, _ = METHOD.compress(g, {"L": 0.9}, keep_channels={"L": np.array([1, 4, 9])},
                               reconstruct=False)
    assert again.node("L").params["weight"].shape[-1] == 3


# ---- a real model --------------------------------------------------------------------------------

def test_ppocr_pruned_at_half_validates_runs_quantizes_and_lowers(ppocr, tmp_path):
    from refq.algorithms import fold_batch_norms
    from refq.fixedpoint.lowering import lower
    from refq.quant.quantsim import QuantSim

    g, x, _ = ppocr
    ratios = {n: 0.5 for n in METHOD.layers(g)}
    new, report = get_method("channel-pruning").compress(g, ratios, data=x[:12], seed=0)
    new.validate()
    assert report["model"]["after"]["macs"] < 0.7 * report["model"]["before"]["macs"]
    assert json.loads(json.dumps(report)) == report
    se_reduce = report["layers"]["conv_3"]          # reads a global pooling: one pixel per image
    assert (se_reduce["samples"], se_reduce["distinct_samples"]) == (120, 12)
    y0 = refq.run(g, x[:30])[g.outputs[0]]
    y = refq.run(new, x[:30])[new.outputs[0]]
    assert y.shape == (30, 2) and np.all(np.isfinite(y))
    refq.save(new, tmp_path / "cp.refq.h5")
    loaded = refq.load(tmp_path / "cp.refq.h5")
    assert loaded.meta[SELECTIONS_META] == new.meta[SELECTIONS_META]
    np.testing.assert_array_equal(refq.run(loaded, x[:30])[g.outputs[0]], y)
    # reconstruction brings the outputs closer to the original than winnowing alone
    plain, _ = METHOD.compress(g, ratios, reconstruct=False)
    assert np.abs(y - y0).mean() < np.abs(refq.run(plain, x[:30])[g.outputs[0]] - y0).mean()
    folded, _ = fold_batch_norms(new)
    sim = QuantSim(folded, "per_channel")
    sim.compute_encodings([x[:16]])
    lowered = lower(sim, "tflite")
    yq = refq.run(lowered, x[:16].astype(np.float32))[lowered.outputs[0]]
    assert yq.shape == (16, 2) and np.all(np.isfinite(yq))
    assert np.mean(yq.argmax(-1) == y[:16].argmax(-1)) >= 0.75


# ---- bad input ---------------------------------------------------------------------------------

def one_line(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text and text
    return text


@pytest.mark.parametrize("call,needle", [
    (lambda g: METHOD.compress(g, {"nope": 0.5}, reconstruct=False), "no node named 'nope'"),
    (lambda g: METHOD.compress(g, {"dw": 0.5}, reconstruct=False), "groups 6"),
    (lambda g: METHOD.compress(g, {"add": 0.5}, reconstruct=False), "its op is add"),
    (lambda g: METHOD.compress(g, {"L": 0}, reconstruct=False), "(0, 1]"),
    (lambda g: METHOD.compress(g, {"L": 1.5}, reconstruct=False), "(0, 1]"),
    (lambda g: METHOD.compress(g, {"L": float("nan")}, reconstruct=False), "(0, 1]"),
    (lambda g: METHOD.compress(g, {"L": True}, reconstruct=False), "(0, 1]"),
    (lambda g: METHOD.compress(g, {"L": "0.5"}, reconstruct=False), "(0, 1]"),
    (lambda g: METHOD.compress(g, [("L", 0.5)], reconstruct=False), "must be a dict"),
    (lambda g: METHOD.compress(g, {}, keep_channels={"L": [0, 10]}, reconstruct=False),
     "channel index 10 of layer 'L' is out of range"),
    (lambda g: METHOD.compress(g, {}, keep_channels={"L": [-1]}, reconstruct=False),
     "out of range"),
    (lambda g: METHOD.compress(g, {}, keep_channels={"L": [1, 1]}, reconstruct=False),
     "repeat"),
    (lambda g: METHOD.compress(g, {}, keep_channels={"L": []}, reconstruct=False), "non-empty"),
    (lambda g: METHOD.compress(g, {"L": 0.5}), "needs data"),
    (lambda g: METHOD.compress(g, {"L": 0.5}, data=images(0)), "no image"),
    (lambda g: prune(g, {"L": 0.5}, data=images(2), num_samples=30), "needs 3 images"),
    (lambda g: METHOD.compress(g, {"L": 0.5}, cost="flops", reconstruct=False), "cost metric"),
    (lambda g: METHOD.compress(g, {"L": 0.5}, data=images(2, shape=(5, 5, 3))),
     "does not match"),
    (lambda g: METHOD.compress(g, {"L": 0.5}, data={"y": images(2)}), "lacks the input 'x'"),
    (lambda g: METHOD.rounded_ratio(g, "L", -0.1), "(0, 1]"),
])
def test_bad_input_is_one_line_error(call, needle):
    with pytest.raises(RefqError) as e:
        call(branchy_graph())
    assert needle in one_line(e)
    assert isinstance(e.value, InputError)
