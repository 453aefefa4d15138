"""Keras layers -> refq nodes: one converter per supported layer class.

Naming: a Keras layer `L` that becomes one node gives a node `L` writing the tensor `L`. A layer
that is split writes the tensor `L` from its last node, so that traces line up with Keras layer
outputs; its other nodes write tensors named after themselves:
- fused activation (`Conv2D(activation="relu")`, `Dense(activation="softmax")`, ...): node `L`
  (the linear op, writing `L/preact`) then node `L/act` (writing `L`);
- `SeparableConv2D`: `L/depthwise` (grouped conv, no bias), `L/pointwise` (1x1 conv with the
  bias), then `L/act` if an activation is fused.
Identity layers (Dropout, SpatialDropout2D, GaussianNoise, ...) become `identity` nodes; InputLayer
becomes a graph input.

Weights: axis 0 is the output channel. Conv2D kernels go from HWIO `(kh, kw, in/groups, out)` to
OHWI; DepthwiseConv2D kernels `(kh, kw, in, mult)` to `[in*mult, kh, kw, 1]` with output channel
`c*mult + m` (Keras' order) and groups = in; Dense kernels `(in, out)` to `[out, in]`.
BatchNormalization stores gamma (if scale), beta (if center), moving_mean, moving_variance; a
missing gamma becomes ones and a missing beta zeros. Arrays keep the dtype they were stored with.

Activations (fused `activation=` and the Activation, ReLU, LeakyReLU, Softmax layers): "linear"
adds no node (an `identity` node for an Activation layer, so that its name still exists);
hard_sigmoid uses the Keras 2 definition (alpha 0.2, beta 0.5) for files written by Keras < 3 and
the Keras 3 one (alpha 1/6) otherwise; "hard_silu"/"hard_swish" -> hard_swish. ReLU maps to relu,
relu6 (max_value 6), clip(0, max_value) (other maxima) or leaky_relu (negative_slope, no maximum,
threshold 0); other combinations are refused. LeakyReLU reads `negative_slope` (Keras 3) or
`alpha` (Keras 2), default 0.3.

Each layer's weights are taken in stored order and checked against the count and the shapes its
config implies. Unsupported layers (Lambda, custom or unknown classes, nested models,
channels_first, unsupported activations) are all collected first and reported in one
UnsupportedLayerError; no code from the file is ever executed.
"""
from __future__ import annotations

import numpy as np

from ..layers.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3
from .keras_config import MODEL_CLASSES

__all__ = ["CONVERTERS", "IDENTITY_CLASSES", "Unsupported", "activation_op", "static_check"]

IDENTITY_CLASSES = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization")


class Unsupported(Exception):
    """Raised by a converter's check: the reason a layer cannot be imported (collected)."""


# ---- activations -------------------------------------------------------------------------------
_SIMPLE_ACTIVATIONS = {"relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "tanh": "tanh",
                       "hard_silu": "hard_swish", "hard_swish": "hard_swish"}


def activation_op(act, keras_major: int):
    """(op, attrs) for a Keras activation given by name; None for "linear"; raises Unsupported."""
    if isinstance(act, dict):  # Keras 3 may serialise a built-in as {"class_name": "function"}
        module = str(act.get("module", ""))
        if act.get("class_name") == "function" and isinstance(act.get("config"), str) \
                and module.startswith("keras"):
            act = act["config"]
        else:
            raise Unsupported(f"its activation is a serialised object ({act.get('class_name')!r}); "
                              "only built-in activations given by name are supported")
    if act is None or act == "linear":
        return None
    if not isinstance(act, str):
        raise Unsupported(f"its activation {act!r} is not a name")
    if act in _SIMPLE_ACTIVATIONS:
        return _SIMPLE_ACTIVATIONS[act], {}
    if act == "softmax":
        return "softmax", {"axis": -1}
    if act == "hard_sigmoid":
        return "hard_sigmoid", dict(HARD_SIGMOID_KERAS2 if keras_major < 3 else HARD_SIGMOID_KERAS3)
    if act == "leaky_relu":  # keras.activations.leaky_relu / tf.nn.leaky_relu default slope
        return "leaky_relu", {"alpha": 0.2}
    raise Unsupported(f"the activation '{act}' has no refq op (supported: linear, relu, relu6, "
                      "sigmoid, tanh, softmax, hard_sigmoid, hard_swish/hard_silu, leaky_relu)")


def _relu_op(cfg):
    max_value = cfg.get("max_value")
    slope = float(cfg.get("negative_slope") or 0.0)
    threshold = float(cfg.get("threshold") or 0.0)
    if threshold != 0.0:
        raise Unsupported(f"ReLU with threshold={threshold} has no refq op; use threshold 0")
    if slope != 0.0:
        if max_value is not None:
            raise Unsupported(f"ReLU with negative_slope={slope} and max_value={max_value} has "
                              "no refq op; use one of them")
        return "leaky_relu", {"alpha": slope}
    if max_value is None:
        return "relu", {}
    if float(max_value) == 6.0:
        return "relu6", {}
    return "clip", {"min": 0.0, "max": float(max_value)}


def _leaky_relu_op(cfg):
    alpha = cfg.get("negative_slope", cfg.get("alpha", 0.3))  # Keras 3 name, then Keras 2 name
    return "leaky_relu", {"alpha": float(0.3 if alpha is None else alpha)}


def _softmax_axis(cfg):
    axis = cfg.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise Unsupported(f"softmax over axes {axis!r} is not supported; use a single axis")
    return axis


# ---- helpers for converters --------------------------------------------------------------------
def _pair(value, what):
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    raise Unsupported(f"its {what} {value!r} is not one or two integers (2-D layers only)")


def _padding(cfg):
    padding = str(cfg.get("padding", "valid")).lower()
    if padding not in ("valid", "same"):
        raise Unsupported(f"padding '{padding}' is not supported (valid, same)")
    return padding


def _conv_attrs(cfg, groups):
    return {"strides": _pair(cfg.get("strides", 1), "strides"),
            "dilations": _pair(cfg.get("dilation_rate", 1), "dilation_rate"),
            "padding": _padding(cfg), "groups": groups}


def _check_conv(cfg):
    _pair(cfg.get("kernel_size"), "kernel_size")
    _conv_attrs(cfg, 1)
    activation_op(cfg.get("activation", "linear"), 3)


def _zero_pads(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * 4
    if isinstance(value, (list, tuple)) and len(value) == 2:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [value[0], value[0], value[1], value[1]]
        if all(isinstance(v, (list, tuple)) and len(v) == 2 for v in value):
            pads = [value[0][0], value[0][1], value[1][0], value[1][1]]
            if all(isinstance(p, int) and not isinstance(p, bool) for p in pads):
                return pads
    raise Unsupported(f"its padding {value!r} is not an int, (h, w) or ((top, bottom), "
                      "(left, right))")


# ---- converters ---------------------------------------------------------------------------------
# A converter is fn(ctx, layer, inputs): it reads weights with ctx.weights / ctx.expect and adds
# nodes with ctx.emit(layer, parts, activation, labels), where each part is
# (name suffix, op, inputs or None for the previous part's output, attrs, params).
def _conv2d(ctx, layer, inputs):
    cfg = layer.config
    kh, kw = _pair(cfg.get("kernel_size"), "kernel_size")
    groups = int(cfg.get("groups", 1) or 1)
    use_bias = bool(cfg.get("use_bias", True))
    w = ctx.weights(layer, ["kernel"] + (["bias"] if use_bias else []))
    filters = cfg.get("filters")
    ctx.expect(layer, w, "kernel", (kh, kw, None, filters))
    params = {"weight": np.ascontiguousarray(w["kernel"].transpose(3, 0, 1, 2))}
    if use_bias:
        ctx.expect(layer, w, "bias", (filters,))
        params["bias"] = w["bias"]
    ctx.emit(layer, [("", "conv2d", inputs, _conv_attrs(cfg, groups), params)],
             activation_op(cfg.get("activation"), ctx.keras_major),
             labels={"weight": w.label("kernel"), "bias": w.label("bias")})


def _depthwise_kernel(k):
    """(kh, kw, in, mult) -> [in*mult, kh, kw, 1], output channel c*mult + m."""
    kh, kw, cin, mult = k.shape
    return np.ascontiguousarray(k.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[..., None])


def _depthwise(ctx, layer, inputs):
    cfg = layer.config
    kh, kw = _pair(cfg.get("kernel_size"), "kernel_size")
    mult = int(cfg.get("depth_multiplier", 1) or 1)
    use_bias = bool(cfg.get("use_bias", True))
    w = ctx.weights(layer, ["depthwise_kernel"] + (["bias"] if use_bias else []))
    ctx.expect(layer, w, "depthwise_kernel", (kh, kw, None, mult))
    cin = w["depthwise_kernel"].shape[2]
    params = {"weight": _depthwise_kernel(w["depthwise_kernel"])}
    if use_bias:
        ctx.expect(layer, w, "bias", (cin * mult,))
        params["bias"] = w["bias"]
    ctx.emit(layer, [("", "conv2d", inputs, _conv_attrs(cfg, cin), params)],
             activation_op(cfg.get("activation"), ctx.keras_major),
             labels={"weight": w.label("depthwise_kernel"), "bias": w.label("bias")})


def _separable(ctx, layer, inputs):
    cfg = layer.config
    kh, kw = _pair(cfg.get("kernel_size"), "kernel_size")
    mult = int(cfg.get("depth_multiplier", 1) or 1)
    use_bias = bool(cfg.get("use_bias", True))
    filters = cfg.get("filters")
    roles = ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if use_bias else [])
    w = ctx.weights(layer, roles)
    ctx.expect(layer, w, "depthwise_kernel", (kh, kw, None, mult))
    cin = w["depthwise_kernel"].shape[2]
    ctx.expect(layer, w, "pointwise_kernel", (1, 1, cin * mult, filters))
    pw = {"weight": np.ascontiguousarray(w["pointwise_kernel"].transpose(3, 0, 1, 2))}
    if use_bias:
        ctx.expect(layer, w, "bias", (filters,))
        pw["bias"] = w["bias"]
    dw_attrs = _conv_attrs(cfg, cin)
    pw_attrs = {"strides": [1, 1], "dilations": [1, 1], "padding": "valid", "groups": 1}
    ctx.emit(layer, [("/depthwise", "conv2d", inputs, dw_attrs,
                      {"weight": _depthwise_kernel(w["depthwise_kernel"])}),
                     ("/pointwise", "conv2d", None, pw_attrs, pw)],
             activation_op(cfg.get("activation"), ctx.keras_major),
             labels={"weight": w.label("pointwise_kernel"), "bias": w.label("bias"),
                     "/depthwise weight": w.label("depthwise_kernel")})


def _dense(ctx, layer, inputs):
    cfg = layer.config
    units = cfg.get("units")
    use_bias = bool(cfg.get("use_bias", True))
    w = ctx.weights(layer, ["kernel"] + (["bias"] if use_bias else []))
    ctx.expect(layer, w, "kernel", (None, units))
    params = {"weight": np.ascontiguousarray(w["kernel"].T)}
    if use_bias:
        ctx.expect(layer, w, "bias", (units,))
        params["bias"] = w["bias"]
    ctx.emit(layer, [("", "dense", inputs, {}, params)],
             activation_op(cfg.get("activation"), ctx.keras_major),
             labels={"weight": w.label("kernel"), "bias": w.label("bias")})


def _batch_norm(ctx, layer, inputs):
    cfg = layer.config
    center, scale = bool(cfg.get("center", True)), bool(cfg.get("scale", True))
    axis = cfg.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:
        axis = axis[0]
    rank = len(ctx.shape(inputs[0]))
    if not isinstance(axis, int) or axis not in (-1, rank - 1):
        raise Unsupported(f"BatchNormalization over axis {axis!r} of a rank-{rank} input is not "
                          "supported; only the channel (last) axis is")
    roles = (["gamma"] if scale else []) + (["beta"] if center else []) + ["moving_mean",
                                                                           "moving_variance"]
    w = ctx.weights(layer, roles)
    channels = w["moving_mean"].shape
    for role in roles:
        ctx.expect(layer, w, role, channels)
    mean = w["moving_mean"]
    params = {"gamma": w["gamma"] if scale else np.ones_like(mean),
              "beta": w["beta"] if center else np.zeros_like(mean),
              "mean": mean, "variance": w["moving_variance"]}
    labels = {"gamma": w.label("gamma"), "beta": w.label("beta"),
              "mean": w.label("moving_mean"), "variance": w.label("moving_variance")}
    ctx.emit(layer, [("", "batch_norm", inputs,
                      {"epsilon": float(cfg.get("epsilon", 1e-3)), "axis": -1}, params)],
             None, labels=labels)


def _simple(op, attrs_fn=None):
    def convert(ctx, layer, inputs):
        attrs = attrs_fn(layer.config) if attrs_fn else {}
        ctx.emit(layer, [("", op, inputs, attrs, {})], None)
    return convert


def _activation_layer(ctx, layer, inputs):
    act = activation_op(layer.config.get("activation"), ctx.keras_major)
    op, attrs = act if act is not None else ("identity", {})
    ctx.emit(layer, [("", op, inputs, attrs, {})], None)


def _op_layer(op_fn):
    def convert(ctx, layer, inputs):
        op, attrs = op_fn(layer.config)
        ctx.emit(layer, [("", op, inputs, attrs, {})], None)
    return convert


def _pool_attrs(cfg):
    size = _pair(cfg.get("pool_size", 2), "pool_size")
    strides = cfg.get("strides")
    return {"pool_size": size, "strides": size if strides is None else _pair(strides, "strides"),
            "padding": _padding(cfg)}


def _merge(op):
    def convert(ctx, layer, inputs):
        if len(inputs) < 2:
            raise Unsupported(f"{layer.class_name} needs at least 2 inputs, got {len(inputs)}")
        attrs = {"axis": _concat_axis(layer.config)} if op == "concat" else {}
        ctx.emit(layer, [("", op, inputs, attrs, {})], None)
    return convert


def _concat_axis(cfg):
    axis = cfg.get("axis", -1)
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise Unsupported(f"Concatenate axis {axis!r} is not an integer")
    return axis


def _reshape_attrs(cfg):
    shape = cfg.get("target_shape")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) for d in shape):
        raise Unsupported(f"Reshape target_shape {shape!r} is not a list of integers")
    return {"shape": list(shape)}


# class name -> (converter, static check of the config or None)
CONVERTERS = {
    "Conv2D": (_conv2d, _check_conv),
    "DepthwiseConv2D": (_depthwise, _check_conv),
    "SeparableConv2D": (_separable, _check_conv),
    "Dense": (_dense, lambda cfg: activation_op(cfg.get("activation", "linear"), 3)),
    "BatchNormalization": (_batch_norm, None),
    "Activation": (_activation_layer, lambda cfg: activation_op(cfg.get("activation"), 3)),
    "ReLU": (_op_layer(_relu_op), _relu_op),
    "LeakyReLU": (_op_layer(_leaky_relu_op), _leaky_relu_op),
    "Softmax": (_op_layer(lambda cfg: ("softmax", {"axis": _softmax_axis(cfg)})), _softmax_axis),
    "MaxPooling2D": (_simple("max_pool2d", _pool_attrs), _pool_attrs),
    "AveragePooling2D": (_simple("avg_pool2d", _pool_attrs), _pool_attrs),
    "GlobalAveragePooling2D": (_simple("global_avg_pool2d",
                                       lambda cfg: {"keepdims": bool(cfg.get("keepdims", False))}),
                               None),
    "Add": (_merge("add"), None),
    "Multiply": (_merge("multiply"), None),
    "Concatenate": (_merge("concat"), _concat_axis),
    "Flatten": (_simple("flatten"), None),
    "Reshape": (_simple("reshape", _reshape_attrs), _reshape_attrs),
    "ZeroPadding2D": (_simple("zero_pad2d",
                              lambda cfg: {"pads": _zero_pads(cfg.get("padding", 1))}),
                      lambda cfg: _zero_pads(cfg.get("padding", 1))),
}
for _cls in IDENTITY_CLASSES:
    CONVERTERS[_cls] = (_simple("identity"), None)

_REFUSED = {
    "Lambda": "Lambda layers hold Python code, which refq never executes or deserialises; "
              "rebuild the model with built-in layers",
    "TFOpLambda": "TF op layers hold TensorFlow calls, which refq never executes; rebuild the "
                  "model with built-in layers",
    "GlobalMaxPooling2D": "refq has no global max pooling op; use GlobalAveragePooling2D or "
                          "MaxPooling2D over the whole feature map",
}


def static_check(layer) -> str | None:
    """Why `layer` cannot be imported, judged from its config alone; None when it can."""
    entry, cls, cfg = layer.entry, layer.class_name, layer.config
    module = entry.get("module")
    registered = entry.get("registered_name")
    if cls in MODEL_CLASSES or isinstance(cfg.get("layers"), list):
        return ("is a nested model used as a layer, which refq does not flatten; rebuild the "
                "model with the inner model's layers inlined")
    if cls in _REFUSED:
        return _REFUSED[cls]
    if (isinstance(module, str) and not module.startswith(("keras", "tf_keras"))) or (
            isinstance(registered, str) and ">" in registered):
        return (f"is a custom layer (module {module!r}, registered as {registered!r}); refq "
                "never executes custom code: replace it with built-in layers")
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict) and "Quantized" in str(dtype.get("class_name", "")):
        return (f"is a Keras-quantized layer (dtype policy {dtype.get('class_name')}); import the "
                "float model instead")
    if cls not in CONVERTERS:
        return ("is not a layer class refq can import (unknown or custom); supported: "
                + ", ".join(sorted(CONVERTERS)))
    if cfg.get("data_format", "channels_last") == "channels_first":
        return ("uses data_format='channels_first'; refq is NHWC: rebuild the model with "
                "channels_last and save again")
    check = CONVERTERS[cls][1]
    try:
        if check is not None:
            check(cfg)
    except Unsupported as e:
        return str(e)
    return None
