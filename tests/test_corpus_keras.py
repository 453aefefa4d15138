"""The bad-input corpus of the Keras importers: `refq import FILE -o OUT.refq.h5` (with
`--architecture` for weights-only files) refuses every kind of damage in the legacy .h5, .keras and
.weights.h5 dialects with one line `refq: error: ...` naming the file, the layer and the field or
weight, and writes nothing.

Each case is a function that writes one damaged file into a directory and returns the arguments of
`refq import` (the file first); the needles are what the error line must name besides that file.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import fails_cleanly
from keras_fixtures import (Layer, config, corrupt_zip_member, declare_zip_size, one_layer,
                            set_attr, tiny_layers, write_architecture, write_keras3_weights,
                            write_keras_zip, write_legacy_h5, write_legacy_weights_h5)

CASES = []


def case(case_id, *needles):
    """Register the decorated writer as the corpus case `case_id`."""
    def register(write):
        CASES.append(pytest.param(write, needles, id=case_id))
        return write
    return register


def legacy(d, layers, dialect="keras2", **kw):
    return [write_legacy_h5(d / "m.h5", layers, dialect, **kw)]


def keras_zip(d, layers, **kw):
    return [write_keras_zip(d / "m.keras", layers, **kw)]


def weights_h5(d, layers, arch_layers=None, **kw):
    arch = write_architecture(d / "arch.json", arch_layers or layers)
    return [write_keras3_weights(d / "m.weights.h5", layers, **kw), "--architecture", arch]


def with_config(layers, index, **changes):
    """`layers` with the config of layer `index` updated by `changes`."""
    layers[index].config = dict(layers[index].config, **changes)
    return layers


def conv(**changes):
    """Input(6, 6, 2) -> Conv2D 'L' (3 filters, 3x3) with `changes` applied to its config."""
    k = np.ones((3, 3, 2, 3), np.float32)
    cfg = {"filters": 3, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid",
           "dilation_rate": [1, 1], "activation": "linear", "use_bias": False, **changes}
    return one_layer("Conv2D", cfg, [("kernel", k)], shape=(6, 6, 2))


def bn(eps=1e-3, var=(1.0, 2.0, 3.0, 4.0), mean=(0.0, 0.0, 0.0, 0.0)):
    return one_layer("BatchNormalization", {"axis": -1, "epsilon": eps, "center": False,
                                            "scale": False},
                     [("moving_mean", np.array(mean, np.float32)),
                      ("moving_variance", np.array(var, np.float32))])


def raw_bytes(d, name, data):
    p = d / name
    p.write_bytes(data)
    return [p]


# ---- the file itself ---------------------------------------------------------------------------
@case("empty-h5", "neither an HDF5 file")
def _(d):
    return raw_bytes(d, "m.h5", b"")


@case("random-bytes-h5", "neither an HDF5 file")
def _(d):
    return raw_bytes(d, "m.h5", np.random.default_rng(0).bytes(4096))


@case("hdf5-magic-then-garbage", "cannot be opened", "truncated or damaged")
def _(d):
    return raw_bytes(d, "m.h5", b"\x89HDF\r\n\x1a\n" + np.random.default_rng(1).bytes(2000))


@case("truncated-legacy-h5", "truncated")
def _(d):
    p = write_legacy_h5(d / "full.h5", tiny_layers())
    data = p.read_bytes()
    p.unlink()
    return raw_bytes(d, "m.h5", data[:len(data) // 2])


@case("truncated-keras-zip", "zip", "truncated or damaged")
def _(d):
    p = write_keras_zip(d / "full.keras", tiny_layers())
    data = p.read_bytes()
    p.unlink()
    return raw_bytes(d, "m.keras", data[:len(data) // 2])


@case("random-bytes-keras", "neither an HDF5 file")
def _(d):
    return raw_bytes(d, "m.keras", np.random.default_rng(2).bytes(3000))


@case("hdf5-not-keras", "not a Keras model")
def _(d):
    import h5py

    with h5py.File(d / "m.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    return [d / "m.h5"]


@case("weights-h5-without-architecture", "weights only", "--architecture")
def _(d):
    return [write_keras3_weights(d / "m.weights.h5", tiny_layers())]


@case("legacy-weights-without-architecture", "weights only", "--architecture")
def _(d):
    return [write_legacy_weights_h5(d / "w.h5", tiny_layers())]


@case("architecture-not-json", "arch.json", "not valid JSON")
def _(d):
    (d / "arch.json").write_text("{oops")
    return [write_keras3_weights(d / "m.weights.h5", tiny_layers()), "--architecture",
            d / "arch.json"]


@case("architecture-json-array", "arch.json", "a JSON list", "model.to_json()")
def _(d):
    (d / "arch.json").write_text("[1, 2, 3]")
    return [write_keras3_weights(d / "m.weights.h5", tiny_layers()), "--architecture",
            d / "arch.json"]


@case("architecture-deep-nesting", "arch.json", "nested more than")
def _(d):
    (d / "arch.json").write_text("[" * 100000 + "]" * 100000)
    return [write_keras3_weights(d / "m.weights.h5", tiny_layers()), "--architecture",
            d / "arch.json"]


# ---- the model config --------------------------------------------------------------------------
@case("model-config-not-json", "model_config", "not valid JSON")
def _(d):
    return legacy(d, tiny_layers(), model_config="{not json")


@case("model-config-json-null", "model_config", "JSON null")
def _(d):
    return legacy(d, tiny_layers(), model_config="null")


@case("model-config-nested-150", "model_config", "nested more than 100")
def _(d):
    cfg = config(tiny_layers())
    deep = inner = {}
    for _ in range(150):
        inner["x"] = {}
        inner = inner["x"]
    cfg["config"]["layers"][1]["config"]["extra"] = deep
    return legacy(d, tiny_layers(), model_config=cfg)


@case("subclassed-model", "MyModel", "functional API")
def _(d):
    cfg = config(tiny_layers())
    cfg["class_name"] = "MyModel"
    return legacy(d, tiny_layers(), model_config=cfg)


@case("layer-config-null", "'bn' (BatchNormalization)", "config null")
def _(d):
    cfg = config(tiny_layers())
    cfg["config"]["layers"][2]["config"] = None
    cfg["config"]["layers"][2]["name"] = "bn"
    return legacy(d, tiny_layers(), model_config=cfg)


@case("layer-config-list", "'flat' (Flatten)", "not a JSON object")
def _(d):
    cfg = config(tiny_layers(), "keras3")
    cfg["config"]["layers"][3]["config"] = [1, 2]
    return keras_zip(d, tiny_layers(), model_config=cfg)


@case("layer-name-with-newline", "control characters", "rename")
def _(d):
    layers = tiny_layers()
    layers[3].name = "fl\nat"
    layers[4].inbound = ["fl\nat"]
    return legacy(d, layers)


@case("dangling-inbound-layer", "'bn'", "ghost")
def _(d):
    layers = tiny_layers()
    layers[2].inbound = ["ghost"]
    return legacy(d, layers)


@case("shared-layer", "'flat' (Flatten)", "called 2 times")
def _(d):
    cfg = config(tiny_layers())
    entry = cfg["config"]["layers"][3]
    entry["inbound_nodes"] = entry["inbound_nodes"] * 2
    return legacy(d, tiny_layers(), model_config=cfg)


# ---- text encodings of HDF5 attributes and zip members -----------------------------------------
@case("model-config-not-utf8", "'model_config'", "not UTF-8")
def _(d):
    p = write_legacy_h5(d / "m.h5", tiny_layers())
    return [set_attr(p, "/", "model_config", np.bytes_(b'{"class_name": "Model\xff"}'))]


@case("model-config-vlen-not-utf8", "'model_config'", "not UTF-8")
def _(d):
    p = write_legacy_h5(d / "m.h5", tiny_layers())
    return [set_attr(p, "/", "model_config", b'{"class_name": "\xfe"}', utf8=True)]


@case("layer-names-not-utf8", "'layer_names'", "/model_weights", "not UTF-8")
def _(d):
    p = write_legacy_h5(d / "m.h5", tiny_layers())
    return [set_attr(p, "model_weights", "layer_names",
                     np.array([b"conv", b"b\xffn", b"fc"], dtype="S"))]


@case("weight-names-not-utf8", "'weight_names'", "/model_weights/conv", "not UTF-8")
def _(d):
    p = write_legacy_h5(d / "m.h5", tiny_layers())
    return [set_attr(p, "model_weights/conv", "weight_names",
                     np.array([b"conv_1/kernel:0", b"conv_1/bias\xc3:0"], dtype="S"))]


@case("weight-names-not-text", "'weight_names'", "not a list of names")
def _(d):
    p = write_legacy_h5(d / "m.h5", tiny_layers())
    return [set_attr(p, "model_weights/conv", "weight_names", np.arange(2))]


@case("keras-version-not-utf8", "'keras_version'", "not UTF-8")
def _(d):
    return [set_attr(write_legacy_h5(d / "m.h5", tiny_layers()), "/", "keras_version",
                     np.bytes_(b"2.\xff"))]


@case("backend-not-utf8", "'backend'", "not UTF-8")
def _(d):
    return [set_attr(write_legacy_h5(d / "m.h5", tiny_layers()), "/", "backend",
                     b"tensor\xffflow", utf8=True)]


@case("backend-theano", "Theano", "flipped")
def _(d):
    return [set_attr(write_legacy_h5(d / "m.h5", tiny_layers()), "/", "backend", "theano")]


@case("keras-1-file", "Keras 1.2.2", "Keras 2")
def _(d):
    return legacy(d, tiny_layers(), keras_version="1.2.2")


@case("vars-name-not-utf8", "'name'", "/layers/dense/vars", "not UTF-8")
def _(d):
    args = weights_h5(d, tiny_layers())
    set_attr(args[0], "layers/dense/vars", "name", np.bytes_(b"f\xffc"))
    return args


@case("zip-config-not-utf8", "config.json", "not UTF-8")
def _(d):
    return keras_zip(d, tiny_layers(), model_config=b'{"class_name": "\xff"}')


# ---- .keras archive members --------------------------------------------------------------------
@case("zip-without-weights", "model.weights.h5")
def _(d):
    return keras_zip(d, tiny_layers(), members=("config.json", "metadata.json"))


@case("zip-without-config", "config.json")
def _(d):
    return keras_zip(d, tiny_layers(), members=("model.weights.h5",))


@case("zip-config-not-json", "config.json", "not valid JSON")
def _(d):
    return keras_zip(d, tiny_layers(), model_config="{")


@case("zip-member-crc-damaged", "not a readable zip archive")
def _(d):
    return [corrupt_zip_member(keras_zip(d, tiny_layers())[0], "model.weights.h5")]


@case("zip-config-huge", "config.json", "declares 4000000000 bytes")
def _(d):
    return [declare_zip_size(keras_zip(d, tiny_layers())[0], "config.json", 4_000_000_000)]


@case("zip-weights-garbage", "model.weights.h5", "cannot be opened")
def _(d):
    import zipfile

    with zipfile.ZipFile(d / "m.keras", "w") as z:
        z.writestr("config.json", json.dumps(config(tiny_layers(), "keras3")))
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    return [d / "m.keras"]


# ---- weights -----------------------------------------------------------------------------------
@case("legacy-no-model-weights", "model_weights")
def _(d):
    return legacy(d, tiny_layers(), with_weights=False)


@case("legacy-missing-layer-group", "'conv' (Conv2D)", "no weights")
def _(d):
    return legacy(d, tiny_layers(), drop_groups=("conv",))


@case("legacy-missing-dataset", "'bn'", "bn_1/beta:0", "missing")
def _(d):
    return legacy(d, tiny_layers(), drop_datasets=(("bn", "beta"),))


@case("legacy-missing-bias", "'conv' (Conv2D)", "needs 2 weight(s)")
def _(d):
    layers = tiny_layers()
    layers[1].weights = layers[1].weights[:1]
    return legacy(d, layers)


@case("legacy-kernel-wrong-shape", "'conv' (Conv2D)", "conv_1/kernel:0", "(3, 3, 2, 4)")
def _(d):
    return legacy(d, tiny_layers(),
                  replace={("conv", "kernel"): np.zeros((3, 3, 2, 4), np.float32)})


@case("legacy-kernel-wrong-input-channels", "'conv'", "conv_1/kernel:0", "5 input channels")
def _(d):
    return legacy(d, tiny_layers(),
                  replace={("conv", "kernel"): np.zeros((3, 3, 5, 3), np.float32)})


@case("legacy-weight-not-numeric", "'fc'", "fc_1/bias:0", "dtype")
def _(d):
    return legacy(d, tiny_layers(), replace={("fc", "bias"): np.array([b"a", b"b"])})


@case("weights-h5-missing-layer", "'fc' (Dense)", "no weights")
def _(d):
    return weights_h5(d, tiny_layers(), drop_layers=("fc",))


@case("weights-h5-extra-weight", "'conv' (Conv2D)", "vars/2")
def _(d):
    return weights_h5(d, tiny_layers(), extra={"conv": [np.zeros(3, np.float32)]})


@case("legacy-kernel-nan", "'conv' (Conv2D)", "kernel[1, 2, 0, 1] = nan", "conv_1/kernel:0")
def _(d):
    k = tiny_layers()[1].weights[0][1].copy()
    k[1, 2, 0, 1] = np.nan
    return legacy(d, tiny_layers(), replace={("conv", "kernel"): k})


@case("zip-bias-inf", "'fc' (Dense)", "bias[1] = inf", "vars/1")
def _(d):
    layers = tiny_layers()
    layers[4].weights[1] = ("bias", np.array([1.0, np.inf], np.float32))
    return keras_zip(d, layers)


@case("weights-h5-gamma-minus-inf", "'bn' (BatchNormalization)", "gamma[0] = -inf")
def _(d):
    layers = tiny_layers()
    layers[2].weights[0] = ("gamma", np.array([-np.inf, 1, 1], np.float32))
    return weights_h5(d, layers)


# ---- batch normalization statistics ------------------------------------------------------------
@case("bn-negative-variance", "'L' (BatchNormalization)", "moving_variance[3] = -0.5",
      "negative", "L_1/moving_variance:0")
def _(d):
    return legacy(d, bn(var=(1, 2, 3, -0.5)))


@case("bn-nan-variance-keras-zip", "'L' (BatchNormalization)", "moving_variance[1] = nan")
def _(d):
    return keras_zip(d, bn(var=(1, np.nan, 3, 4)))


@case("bn-nan-mean-weights-h5", "'L' (BatchNormalization)", "moving_mean[2] = nan", "vars/0")
def _(d):
    return weights_h5(d, bn(mean=(0, 0, np.nan, 0)))


@case("bn-zero-variance-zero-epsilon", "'L' (BatchNormalization)", "moving_variance[0]",
      "epsilon > 0")
def _(d):
    return legacy(d, bn(eps=0.0, var=(0, 1, 1, 1)))


@case("bn-negative-epsilon", "'L' (BatchNormalization)", "epsilon is -0.001")
def _(d):
    return legacy(d, bn(eps=-1e-3))


@case("bn-nan-epsilon", "'L' (BatchNormalization)", "epsilon is NaN")
def _(d):
    return keras_zip(d, bn(eps=float("nan")))


@case("bn-momentum-out-of-range", "'L' (BatchNormalization)", "momentum is 2")
def _(d):
    return legacy(d, with_config(bn(), 1, momentum=2))


@case("bn-center-not-bool", "'L' (BatchNormalization)", "center is \"no\"")
def _(d):
    return legacy(d, with_config(bn(), 1, center="no"))


# ---- refused layers ----------------------------------------------------------------------------
@case("lambda", "'L' (Lambda)", "never executes", "rewrite the Lambda")
def _(d):
    return legacy(d, one_layer("Lambda", {"function": ["4wEAAAAA", None, None],
                                          "function_type": "lambda"}))


@case("tf-op-lambda", "'L' (TFOpLambda)", "never executes")
def _(d):
    return keras_zip(d, one_layer("TFOpLambda", {"function": "math.add"}))


@case("unknown-class", "'L' (MyFancyLayer)", "supported:")
def _(d):
    return legacy(d, one_layer("MyFancyLayer", {"k": 1}))


@case("custom-module-keras3", "'flat' (Flatten)", "custom layer", "my_package.layers")
def _(d):
    cfg = config(tiny_layers(), "keras3")
    cfg["config"]["layers"][3]["module"] = "my_package.layers"
    return keras_zip(d, tiny_layers(), model_config=cfg)


@case("custom-registered-name", "'flat' (Flatten)", "MyPackage>Flatten")
def _(d):
    cfg = config(tiny_layers(), "keras3")
    cfg["config"]["layers"][3]["registered_name"] = "MyPackage>Flatten"
    return keras_zip(d, tiny_layers(), model_config=cfg)


@case("custom-object-in-config", "'L' (Dense)", "my_pkg", "outside Keras")
def _(d):
    layers = one_layer("Dense", {"units": 2, "activation": "linear", "use_bias": False,
                                 "kernel_quantizer": {"module": "my_pkg", "class_name": "Q",
                                                      "config": {}}},
                       [("kernel", np.ones((4, 2), np.float32))])
    return legacy(d, layers, "keras3")


@case("custom-activation-object", "'L' (Dense)", "config.activation", "my_acts", "outside Keras")
def _(d):
    act = {"module": "my_acts", "class_name": "function", "config": "swishy",
           "registered_name": "swishy"}
    return keras_zip(d, one_layer("Dense", {"units": 2, "activation": act, "use_bias": False},
                                  [("kernel", np.ones((4, 2), np.float32))]))


@case("nested-model", "'inner' (Functional)", "nested model")
def _(d):
    inner = config(tiny_layers(), "keras3", name="inner")
    return legacy(d, [Layer("inp", "InputLayer", {"shape": [None, 6, 6, 2]}),
                      Layer("inner", "Functional", inner["config"], ["inp"])], "keras3")


@case("channels-first", "'L' (Conv2D)", "channels_first", "channels_last")
def _(d):
    return legacy(d, conv(data_format="channels_first"))


@case("unsupported-activation", "'L' (Activation)", "\"gelu\"", "no refq op")
def _(d):
    return keras_zip(d, one_layer("Activation", {"activation": "gelu"}))


@case("global-max-pooling", "'L' (GlobalMaxPooling2D)", "GlobalAveragePooling2D")
def _(d):
    return legacy(d, one_layer("GlobalMaxPooling2D", {}, shape=(4, 4, 2)))


@case("relu-threshold", "'L' (ReLU)", "threshold 0.5")
def _(d):
    return legacy(d, one_layer("ReLU", {"threshold": 0.5}))


@case("many-refused-layers", "12 layers", "'l0' (Lambda), 'l1' (Lambda)", "and 7 more")
def _(d):
    layers = [Layer("inp", "InputLayer", {"shape": [None, 4]})]
    for i in range(12):
        layers.append(Layer(f"l{i}", "Lambda", {"function": "x"}, [layers[-1].name]))
    return legacy(d, layers)


# ---- input shapes ------------------------------------------------------------------------------
def _input_shape(dim):
    @case(f"batch-shape-{json.dumps(dim).replace(' ', '')}", "'inp' (InputLayer)",
          "batch_input_shape[2]", json.dumps(dim))
    def _(d):
        layers = one_layer("Flatten", {}, shape=(4, 4, 2))
        layers[0].config["shape"] = [None, 4, dim, 2]
        return legacy(d, layers)


for _dim in (3.5, "64", True, -1, 0, [4, 4]):
    _input_shape(_dim)


@case("batch-shape-keras3-float", "'inp' (InputLayer)", "batch_shape[1]", "6.0")
def _(d):
    layers = tiny_layers()
    layers[0].config["shape"] = [None, 6.0, 6, 2]
    return keras_zip(d, layers)


@case("sequential-build-input-shape", "build_input_shape", "batch_shape[1]", "\"6\"")
def _(d):
    layers = tiny_layers()[1:]
    cfg = config(layers, "keras3", kind="Sequential")
    cfg["config"]["build_input_shape"] = [None, "6", 6, 2]
    return keras_zip(d, tiny_layers(), kind="Sequential", model_config=cfg)


@case("input-dtype-not-a-name", "'inp' (InputLayer)", "dtype is 5")
def _(d):
    cfg = config(tiny_layers())
    cfg["config"]["layers"][0]["config"]["dtype"] = 5
    return legacy(d, tiny_layers(), model_config=cfg)


# ---- numeric config fields ---------------------------------------------------------------------
FIELD_CASES = [
    ("conv-kernel-size-float", conv(kernel_size=[3.5, 3]), "kernel_size[0] is 3.5"),
    ("conv-kernel-size-bool", conv(kernel_size=[3, True]), "kernel_size[1] is true"),
    ("conv-kernel-size-3d", conv(kernel_size=[3, 3, 3]), "kernel_size is [3, 3, 3]"),
    ("conv-strides-zero", conv(strides=[0, 1]), "strides[0] is 0"),
    ("conv-dilation-negative", conv(dilation_rate=-1), "dilation_rate is -1"),
    ("conv-filters-string", conv(filters="3"), "filters is \"3\""),
    ("conv-filters-zero", conv(filters=0), "filters is 0"),
    ("conv-filters-huge", conv(filters=2 ** 40), "filters is 1099511627776, out of range"),
    ("conv-groups-zero", conv(groups=0), "groups is 0"),
    ("conv-use-bias-string", conv(use_bias="false"), "use_bias is \"false\""),
    ("conv-padding-number", conv(padding=5), "padding is 5"),
    ("conv-padding-unknown", conv(padding="bogus"), "padding is \"bogus\""),
    ("conv-padding-causal", conv(padding="causal"), "no refq op"),
    ("conv-activation-number", conv(activation=3), "activation is 3"),
    ("depthwise-multiplier-zero",
     one_layer("DepthwiseConv2D", {"kernel_size": 3, "depth_multiplier": 0, "use_bias": False},
               [("depthwise_kernel", np.ones((3, 3, 2, 1), np.float32))], shape=(6, 6, 2)),
     "depth_multiplier is 0"),
    ("dense-units-negative", one_layer("Dense", {"units": -2}), "units is -2"),
    ("dense-units-bool", one_layer("Dense", {"units": True}), "units is true"),
    ("dense-units-float", one_layer("Dense", {"units": 2.0}), "units is 2.0"),
    ("dense-units-missing", one_layer("Dense", {"activation": "relu"}), "no 'units'"),
    ("pool-size-zero", one_layer("MaxPooling2D", {"pool_size": [0, 2]}, shape=(4, 4, 2)),
     "pool_size[0] is 0"),
    ("pool-strides-float", one_layer("AveragePooling2D", {"pool_size": 2, "strides": 1.5},
                                     shape=(4, 4, 2)), "strides is 1.5"),
    ("zero-padding-negative", one_layer("ZeroPadding2D", {"padding": [1, -1]}, shape=(4, 4, 2)),
     "padding[1] is -1"),
    ("zero-padding-float-pair", one_layer("ZeroPadding2D", {"padding": [[1, 2.5], [0, 0]]},
                                          shape=(4, 4, 2)), "padding[0][1] is 2.5"),
    ("reshape-zero-dim", one_layer("Reshape", {"target_shape": [0, 4]}), "target_shape[0] is 0"),
    ("reshape-two-free-dims", one_layer("Reshape", {"target_shape": [-1, -1]}),
     "more than one -1"),
    ("reshape-not-a-list", one_layer("Reshape", {"target_shape": "4"}), "target_shape is \"4\""),
    ("concat-axis-string",
     [Layer("a", "InputLayer", {"shape": [None, 4]}),
      Layer("b", "InputLayer", {"shape": [None, 4]}),
      Layer("L", "Concatenate", {"axis": "last"}, ["a", "b"])], "axis is \"last\""),
    ("softmax-axis-bool", one_layer("Softmax", {"axis": True}), "axis is true"),
    ("leaky-relu-negative-alpha", one_layer("LeakyReLU", {"alpha": -0.1}), "alpha is -0.1"),
    ("leaky-relu-slope-string", one_layer("LeakyReLU", {"negative_slope": "0.3"}),
     "negative_slope is \"0.3\""),
    ("relu-max-value-negative", one_layer("ReLU", {"max_value": -1.0}), "max_value is -1.0"),
    ("relu-max-value-nan", one_layer("ReLU", {"max_value": float("nan")}), "max_value is NaN"),
    ("relu-slope-infinite", one_layer("ReLU", {"negative_slope": float("inf")}),
     "negative_slope is Infinity"),
    ("gap-keepdims-number", one_layer("GlobalAveragePooling2D", {"keepdims": 1}, shape=(4, 4, 2)),
     "keepdims is 1"),
    ("flatten-data-format-unknown", one_layer("Flatten", {"data_format": "NHWC"}),
     "data_format is \"NHWC\""),
]


def _field_case(case_id, layers, needle, dialect):
    cls = layers[-1].class_name

    @case(f"{case_id}-{dialect}", f"'L' ({cls})", needle)
    def _(d):
        if dialect == "keras-zip":
            return keras_zip(d, layers)
        return legacy(d, layers, dialect)


for _i, (_id, _layers, _needle) in enumerate(FIELD_CASES):
    _field_case(_id, _layers, _needle, ("keras2", "keras3", "keras-zip")[_i % 3])


@pytest.mark.parametrize("write,needles", CASES)
def test_import_refuses_cleanly(tmp_path, capsys, write, needles):
    args = [str(a) for a in write(tmp_path)]
    named = args[0] if not any("arch.json" in n for n in needles) else args[-1]
    fails_cleanly(capsys, tmp_path, "import", *args, "-o", tmp_path / "out.refq.h5",
                  needles=(named,) + tuple(needles))


def test_corpus_size():
    assert len(CASES) >= 45


@pytest.mark.parametrize("source", ["legacy_h5", "weights_h5"])
def test_damaged_global_heap_is_refused_not_hung(tmp_path, source):
    """A global heap object (HDF5's storage of text attributes) whose size runs past its collection
    makes the HDF5 library loop forever; the import refuses it in one line first. Run in a child
    process so that a regression fails by timeout instead of hanging the suite."""
    import subprocess
    import sys

    from real_models import ROOT

    src = {"legacy_h5": "seq_k3_legacy.h5", "weights_h5": "seq_k3.weights.h5"}[source]
    data = bytearray(open(ROOT / "tests" / "data" / "keras" / src, "rb").read())
    start = data.find(b"GCOL")
    size = int.from_bytes(data[start + 8:start + 16], "little")
    data[start + 16 + 8:start + 16 + 16] = (size * 4).to_bytes(8, "little")  # object 1's size
    bad = tmp_path / ("bad.h5" if source == "legacy_h5" else "bad.weights.h5")
    bad.write_bytes(bytes(data))
    argv = [sys.executable, "-m", "refq", "import", str(bad), "-o", str(tmp_path / "m.refq.h5")]
    if source == "weights_h5":
        argv += ["--architecture", str(ROOT / "tests" / "data" / "keras" / "seq_k3.json")]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith("refq: error: ") and len(p.stderr.strip().splitlines()) == 1
    assert "global heap" in p.stderr and str(bad) in p.stderr
    assert not (tmp_path / "m.refq.h5").exists()
