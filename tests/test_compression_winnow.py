"""Winnowing (refq.compression.winnow): keeping every channel is the identity bit for bit;
winnowing computes what masking the pruned input channels to zero computes, on a graph with
branches, a squeeze-excitation and a concat and on every layer of a real model; where the mask
stops, a channel selection."""
from __future__ import annotations

import numpy as np
import pytest

import refq
from refq.compression.channel_pruning import METHOD, keep_count, select_channels
from refq.compression.winnow import SELECTIONS_META, winnow
from refq.graph import Graph, Node, TensorSpec

from test_compression_pruning import act, branchy_graph, conv, images, masked, ppocr_model_and_lines


@pytest.fixture(scope="module")
def ppocr():
    return ppocr_model_and_lines()


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
