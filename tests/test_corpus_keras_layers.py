"""The bad-input corpus of the Keras importers, the model config and its layers: `refq import FILE
-o OUT.refq.h5` refuses a damaged model config (JSON, nesting, topology), layers refq does not
import (Lambda, custom code, nested models, ...), damaged input shapes and every config field
holding a value Keras never writes, in the legacy .h5 (Keras 2 and 3 configs) and .keras dialects,
with one line `refq: error: ...` naming the file, the
layer and the field, and writes nothing. The machinery is in `keras_corpus`.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from keras_corpus import conv, keras_zip, legacy, refuses_cleanly, registry
from keras_fixtures import Layer, config, one_layer, tiny_layers

CASES = []
case = registry(CASES)


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
    refuses_cleanly(tmp_path, capsys, write, needles)
