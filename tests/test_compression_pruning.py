"""Channel pruning (refq.compression.channel_pruning): selection by magnitude, kept-channel
counts, the cost of a pruned model, the manual mode, a real model pruned, quantized and lowered,
bad input as one-line errors. The graphs and images of this file are shared with
test_compression_winnow.py and test_compression_reconstruction.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

import refq
from refq.compression import get_method
from refq.compression import cost as C
from refq.compression.channel_pruning import METHOD, keep_count, prune, select_channels
from refq.compression.winnow import SELECTIONS_META
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

def ppocr_model_and_lines():
    """(model, 60 labelled text lines): the bundled classifier and the first test lines."""
    from refq.ppocr_data import data_path, load_model, textline_inputs

    with np.load(data_path("textlines_test1000.npz"), allow_pickle=False) as z:
        x = textline_inputs(z["X"][:60], z["widths"][:60])
        labels = z["y"][:60]
    return load_model(), x, labels


@pytest.fixture(scope="module")
def ppocr():
    return ppocr_model_and_lines()


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
