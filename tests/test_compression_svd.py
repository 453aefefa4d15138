"""refq.compression.spatial_svd and weight_svd: the splits against plain transcriptions of AIMET's
NCHW code (aimet.md §8), full rank reproducing the layer to float64 round-off, the node layout,
costs, rank rounding, sign normalisation, a real model through quantization and lowering, and
bad input."""
import dataclasses

import numpy as np
import pytest

import refq
from refq.compression import cost as C
from refq.compression import get_method
from refq.compression.spatial_svd import METHOD as SPATIAL, normalise_signs, spatial_factors
from refq.compression.weight_svd import METHOD as WEIGHT, weight_factors
from refq.errors import GraphError, InputError, QuantError
from refq.graph import Graph, Node, TensorSpec

METHODS = [SPATIAL, WEIGHT]
ids = lambda m: m.name  # noqa: E731


def conv_dense_graph(seed=0, hw=(9, 11), cin=4, cout=6, k=(3, 5), bias=True, dtype=np.float64,
                     **attrs):
    """conv -> relu -> flatten -> dense (+ a depthwise conv on the side, summed in)."""
    r = np.random.default_rng(seed)
    p = {"weight": r.normal(size=(cout, *k, cin)).astype(dtype)}
    if bias:
        p["bias"] = r.normal(size=cout).astype(dtype)
    nodes = [Node("conv", "conv2d", ["x"], ["c"], dict(attrs), p),
             Node("dw", "conv2d", ["c"], ["d"], {"groups": cout, "padding": "same"},
                  {"weight": r.normal(size=(cout, 3, 3, 1)).astype(dtype)}),
             Node("sum", "add", ["c", "d"], ["s"]),
             Node("act", "relu", ["s"], ["a"]),
             Node("flat", "flatten", ["a"], ["f"])]
    g = Graph([TensorSpec("x", (None, *hw, cin), "float64")], ["f"], nodes)
    n_f = int(np.prod(g.infer_shapes()["f"][1:]))
    dense = {"weight": r.normal(size=(7, n_f)).astype(dtype)}
    if bias:
        dense["bias"] = r.normal(size=7).astype(dtype)
    g.nodes.append(Node("fc", "dense", ["f"], ["y"], {}, dense))
    g.outputs = ["y"]
    return g.validate()


CONV_CASES = {
    "valid": {},
    "same-stride": {"padding": "same", "strides": [2, 3]},
    "explicit": {"padding": "explicit", "pads": [1, 2, 0, 3], "strides": [2, 1]},
    "dilated": {"padding": "same", "dilations": [2, 2]},
    "no-bias": {"padding": "same", "bias": False},
}


def full_ranks(method, g):
    return {layer: method.full_rank(g.node(layer)) for layer in method.layers(g)}


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("method", METHODS, ids=ids)
def test_full_rank_reproduces_the_layers(method, case):
    attrs = dict(CONV_CASES[case])
    g = conv_dense_graph(bias=attrs.pop("bias", True), **attrs)
    x = np.random.default_rng(1).normal(size=(3, 9, 11, 4))
    y = refq.run(g, {"x": x})["y"]
    new, report = method.split(g, full_ranks(method, g))
    assert set(report["layers"]) == ({"conv"} if method is SPATIAL else {"conv", "fc"})
    y2 = refq.run(new, {"x": x})["y"]
    assert np.max(np.abs(y2 - y)) <= 1e-13 * np.max(np.abs(y))


def test_full_rank_reproduces_dense_on_rank3_input():
    r = np.random.default_rng(2)
    g = Graph([TensorSpec("x", (None, 5, 12), "float64")], ["y"],
              [Node("fc", "dense", ["x"], ["y"], {}, {"weight": r.normal(size=(9, 12)),
                                                      "bias": r.normal(size=9)})]).validate()
    x = r.normal(size=(4, 5, 12))
    new, _ = WEIGHT.split(g, {"fc": 9})
    assert [n.params["weight"].shape for n in new.nodes] == [(9, 12), (9, 9)]
    y, y2 = refq.run(g, {"x": x})["y"], refq.run(new, {"x": x})["y"]
    assert np.max(np.abs(y2 - y)) <= 1e-13 * np.max(np.abs(y))


# ---- plain transcriptions of AIMET's NCHW code, with refq's sign rule applied to the SVD ----
def signed_svd(m, full_matrices=False):
    u, s, vt = np.linalg.svd(m, full_matrices=full_matrices)
    u, vt = normalise_signs(u, vt)
    return u, s, vt


def aimet_spatial(weight_tensor, rank):
    """SpatialSvdPruner.lingalg_spatial_svd: (conv B [O, r, 1, kw], conv A [r, C, kh, 1])."""
    out_channels, in_channels, height, width = weight_tensor.shape
    weight_tensor = np.transpose(weight_tensor, [1, 2, 0, 3])
    weight_tensor = weight_tensor.reshape(in_channels * height, out_channels * width)
    v, s, h = signed_svd(weight_tensor, full_matrices=False)
    v, s, h = v[:, :rank], s[:rank], h[:rank, :]
    sqrt_s = np.sqrt(s)
    v = v * sqrt_s
    h = sqrt_s.reshape(sqrt_s.shape[0], 1) * h
    h = np.transpose(h.reshape([rank, out_channels, width, 1]), [1, 0, 3, 2])
    v = np.transpose(v.reshape((in_channels, 1, height, rank)), [3, 0, 2, 1])
    return h, v


def aimet_weight(weight_tensor, rank):
    """lingalg_weight_svd as aimet.md §8.2 states it: (A [r, C, 1, 1], B [O, r, kh, kw])."""
    o, c, kh, kw = weight_tensor.shape
    m = np.transpose(weight_tensor, [1, 0, 2, 3]).reshape(c, o * kh * kw)
    u, s, vt = signed_svd(m, full_matrices=False)
    a = u[:, :rank].T.reshape(rank, c, 1, 1)
    b = (np.diag(s[:rank]) @ vt[:rank]).reshape(rank, o, kh, kw).transpose(1, 0, 2, 3)
    return a, b


@pytest.mark.parametrize("rank", [1, 3, 12])
def test_spatial_factors_equal_aimet_transcription(rank):
    w = np.random.default_rng(3).normal(size=(6, 3, 5, 4))          # OHWI: O 6, kh 3, kw 5, C 4
    a, b = spatial_factors(w, rank)
    h, v = aimet_spatial(w.transpose(0, 3, 1, 2), rank)              # AIMET reads NCHW
    np.testing.assert_allclose(a, v.transpose(0, 2, 3, 1), rtol=0, atol=1e-14)
    np.testing.assert_allclose(b, h.transpose(0, 2, 3, 1), rtol=0, atol=1e-14)
    assert a.shape == (rank, 3, 1, 4) and b.shape == (6, 1, 5, rank)


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_weight_factors_equal_aimet_transcription(rank):
    w = np.random.default_rng(4).normal(size=(6, 3, 5, 4))
    a, b = weight_factors(w, rank)
    ta, tb = aimet_weight(w.transpose(0, 3, 1, 2), rank)
    np.testing.assert_allclose(a, ta.transpose(0, 2, 3, 1), rtol=0, atol=1e-14)
    np.testing.assert_allclose(b, tb.transpose(0, 2, 3, 1), rtol=0, atol=1e-14)
    # dense [O, C]: A = U_rᵀ [r, C], B = (S_r V_rᵀ)ᵀ [O, r]
    wd = np.random.default_rng(5).normal(size=(7, 10))
    u, s, vt = signed_svd(wd.T)
    g = Graph([TensorSpec("x", (None, 10), "float64")], ["y"],
              [Node("fc", "dense", ["x"], ["y"], {}, {"weight": wd})]).validate()
    new, _ = WEIGHT.split(g, {"fc": rank})
    np.testing.assert_allclose(new.node("fc/svd_a").params["weight"], u[:, :rank].T, atol=1e-14)
    np.testing.assert_allclose(new.node("fc/svd_b").params["weight"],
                               (s[:rank, None] * vt[:rank]).T, atol=1e-14)


def test_node_layout_and_biases():
    g = conv_dense_graph(padding="explicit", pads=[1, 2, 0, 3], strides=[2, 3], dilations=[1, 2])
    sp, rep = SPATIAL.split(g, {"conv": 3})
    a, b = sp.node("conv/svd_a"), sp.node("conv/svd_b")
    assert [n.name for n in sp.nodes][:2] == ["conv/svd_a", "conv/svd_b"]
    assert (a.inputs, a.outputs, b.inputs, b.outputs) == (["x"], ["conv/svd_a"], ["conv/svd_a"],
                                                          ["c"])
    assert list(a.attrs["strides"]) == [2, 1] and list(a.attrs["pads"]) == [1, 2, 0, 0]
    assert list(b.attrs["strides"]) == [1, 3] and list(b.attrs["pads"]) == [0, 0, 0, 3]
    assert list(a.attrs["dilations"]) == [1, 1] and list(b.attrs["dilations"]) == [1, 2]
    assert "bias" not in a.params
    np.testing.assert_array_equal(b.params["bias"], g.node("conv").params["bias"])
    assert a.params["weight"].shape == (3, 3, 1, 4) and b.params["weight"].shape == (6, 1, 5, 3)
    assert rep["layers"]["conv"]["nodes"] == ["conv/svd_a", "conv/svd_b"]
    ws, _ = WEIGHT.split(g, {"conv": 2, "fc": 3})
    a, b = ws.node("conv/svd_a"), ws.node("conv/svd_b")
    assert list(a.attrs["strides"]) == [1, 1] and a.attrs["padding"] == "valid"
    assert {k: b.attrs[k] for k in ("strides", "padding", "pads", "dilations")} == \
        {k: g.node("conv").attrs[k] for k in ("strides", "padding", "pads", "dilations")}
    np.testing.assert_array_equal(a.params["bias"], np.zeros(2))      # AIMET: zeros in A
    np.testing.assert_array_equal(b.params["bias"], g.node("conv").params["bias"])
    np.testing.assert_array_equal(ws.node("fc/svd_a").params["bias"], np.zeros(3))
    nb = conv_dense_graph(bias=False)
    ws, _ = WEIGHT.split(nb, {"conv": 2, "fc": 3})
    assert all("bias" not in n.params for n in ws.nodes)
    # float32 layers stay float32
    g32 = conv_dense_graph(dtype=np.float32)
    sp32, _ = SPATIAL.compress(g32, {"conv": 0.5})
    assert {a.dtype for n in sp32.nodes for a in n.params.values()} == {np.dtype(np.float32)}


def test_layers_selected():
    g = conv_dense_graph()
    assert SPATIAL.layers(g) == ["conv"]                  # not the depthwise, not the dense
    assert WEIGHT.layers(g) == ["conv", "fc"]
    assert get_method("spatial-svd") is SPATIAL and get_method("weight-svd") is WEIGHT


@pytest.mark.parametrize("method", METHODS, ids=ids)
def test_sign_flips_of_the_svd_give_identical_results(method):
    flips = np.random.default_rng(6)

    def flipped_svd(m, full_matrices=False):
        u, s, vt = np.linalg.svd(m, full_matrices=full_matrices)
        sign = flips.choice([-1.0, 1.0], size=s.shape)
        return u * sign, s, vt * sign[:, None]

    g = conv_dense_graph(padding="same")
    ratios = {layer: 0.5 for layer in method.layers(g)}
    ref, _ = method.compress(g, ratios)
    for _ in range(3):
        got, _ = dataclasses.replace(method, svd=flipped_svd).compress(g, ratios)
        for n_ref, n_got in zip(ref.nodes, got.nodes):
            for k in n_ref.params:
                np.testing.assert_array_equal(n_ref.params[k], n_got.params[k])
    u, vt = normalise_signs(*np.linalg.svd(np.random.default_rng(7).normal(size=(5, 8)),
                                           full_matrices=False)[::2])
    assert np.all(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])] > 0)


@pytest.mark.parametrize("method", METHODS, ids=ids)
def test_ratios_below_one_reduce_macs_as_computed(method):
    # stride 1, "same": conv A's output has the original's height and width, so the model cost
    # counted on the compressed graph equals AIMET's cost given rank
    g = conv_dense_graph(hw=(12, 12), cin=8, cout=8, k=(3, 3), padding="same")
    before = C.model_cost(g)
    for ratio in (0.9, 0.5, 0.2):
        new, rep = method.compress(g, {layer: ratio for layer in method.layers(g)})
        after = C.model_cost(new)
        assert after.macs < before.macs and after.params < before.params
        assert rep["model"] == {"before": before.to_json(), "after": after.to_json()}
        for layer, entry in rep["layers"].items():
            node, out = g.node(layer), g.infer_shapes()[g.node(layer).outputs[0]]
            assert entry["after"] == method.cost_given_rank(node, out, entry["rank"]).to_json()
            assert entry["after"]["macs"] <= ratio * entry["before"]["macs"] or entry["rank"] == 1
            assert entry["achieved_ratio"] == entry["after"]["macs"] / entry["before"]["macs"]
            counted = sum(C.layer_cost(new, n).macs for n in entry["nodes"])
            assert counted == entry["after"]["macs"]


def test_rounding_in_compress():
    g = conv_dense_graph(hw=(12, 12), cin=8, cout=8, k=(3, 3), padding="same")
    m4 = dataclasses.replace(WEIGHT, multiplicity=4)
    new, rep = m4.compress(g, {"conv": 0.3, "fc": 0.3})
    for layer, entry in rep["layers"].items():
        cap = WEIGHT.rank(g, layer, 1.0)
        assert entry["rank"] % 4 == 0 or entry["rank"] == cap
        assert entry["rank"] >= WEIGHT.rank(g, layer, 0.3)
        assert entry["rounded_ratio"] >= 0.3
        assert m4.rank(g, layer, entry["rounded_ratio"]) == entry["rank"]
        assert new.node(f"{layer}/svd_a").params["weight"].shape[0] == entry["rank"]


def test_input_unchanged_and_folded_bn_moves():
    g = conv_dense_graph()
    g.meta["folded_bn"] = {"conv": {"gamma": [1.0] * 6, "beta": [0.0] * 6}}
    snapshot = g.copy()
    new, _ = SPATIAL.compress(g, {"conv": 0.4}, data=None, seed=3, reconstruct=False)
    assert [n.name for n in g.nodes] == [n.name for n in snapshot.nodes]
    for n, m in zip(g.nodes, snapshot.nodes):
        assert all(np.array_equal(n.params[k], m.params[k]) for k in n.params)
    assert g.meta == snapshot.meta
    assert new.meta["folded_bn"] == {"conv/svd_b": {"gamma": [1.0] * 6, "beta": [0.0] * 6}}


def test_real_model_compresses_quantizes_and_lowers(tmp_path):
    from real_models import MODELS
    from refq.algorithms import fold_batch_norms
    from refq.fixedpoint.lowering import lower
    from refq.fixedpoint.run import run_int
    from refq.quant.quantsim import QuantSim

    g, _ = fold_batch_norms(refq.import_keras(MODELS["fer"]))
    layers = SPATIAL.layers(g)
    assert len(layers) == 15
    new, rep = SPATIAL.compress(g, {layer: 0.5 for layer in layers})
    assert rep["model"]["after"]["macs"] < 0.6 * rep["model"]["before"]["macs"]
    new.validate()
    x = np.random.default_rng(8).normal(size=(6, 64, 64, 1)).astype(np.float32)
    y = refq.run(new, {"input_1": x})
    path = tmp_path / "c.refq.h5"
    refq.save(new, path)
    again = refq.load(path)
    (k, y0), = y.items()
    np.testing.assert_array_equal(refq.run(again, {"input_1": x})[k], y0)
    sim = QuantSim(again, "per_channel")
    sim.compute_encodings(x)
    y_sim = sim.run({"input_1": x})[k]
    out, _ = run_int(lower(sim, "tflite"), {"input_1": x})
    assert out[k].shape == y0.shape and np.all(np.isfinite(out[k]))
    assert np.max(np.abs(out[k] - y_sim)) < 0.1        # softmax outputs, a few LSBs apart
    with pytest.raises(QuantError, match="integer model"):
        SPATIAL.compress(lower(sim, "tflite"), {layers[0]: 0.5})


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS, ids=ids)
def test_bad_input_is_one_clear_line(method):
    g = conv_dense_graph()

    def error(exc, match, *args, fn=method.compress, **kw):
        with pytest.raises(exc, match=match) as e:
            fn(g, *args, **kw)
        assert "\n" not in str(e.value)

    error(InputError, "no node named 'nope'.*can compress: 'conv'", {"nope": 0.5})
    for bad in (0, -0.1, 1.5, float("nan"), float("inf"), True, "0.5", None):
        error(InputError, r"ratio of layer 'conv' must be a number in \(0, 1\]", {"conv": bad})
    error(InputError, "cannot compress node 'dw'.*groups 6", {"dw": 0.5})
    error(InputError, "cannot compress node 'act'.*relu", {"act": 0.5})
    error(InputError, "unknown cost metric", {"conv": 0.5}, cost="flops")
    error(InputError, "ratios must be a dict", [("conv", 0.5)])
    error(InputError, r"rank of layer 'conv' must be an integer in 1\.\.(12|4),", {"conv": 0},
          fn=method.split)
    error(InputError, "rank of layer 'conv'", {"conv": 99}, fn=method.split)
    error(InputError, "multiplicity", {"conv": 0.5},
          fn=dataclasses.replace(method, multiplicity=0).compress)
    clash = g.copy()
    clash.nodes[3].outputs = ["conv/svd_a"]
    clash.nodes[4].inputs = ["conv/svd_a"]
    with pytest.raises(GraphError, match="already has a node or tensor 'conv/svd_a'"):
        method.compress(clash, {"conv": 0.5})
    if method is SPATIAL:
        error(InputError, "cannot compress node 'fc'.*dense", {"fc": 0.5})
    free = Graph([TensorSpec("x", (None, None, None, 4))], ["y"],
                 [Node("c", "conv2d", ["x"], ["y"], {}, {"weight": np.ones((2, 3, 3, 4))})])
    with pytest.raises(InputError, match="height and width of layer 'c' are unknown"):
        method.compress(free, {"c": 0.5})
    assert method.compress(free, {"c": 0.5}, cost="params")[1]["model"]["after"]["macs"] is None
