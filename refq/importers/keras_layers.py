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
A moving variance must be >= 0 and moving_variance + epsilon > 0 (epsilon >= 0).

Activations (fused `activation=` and the Activation, ReLU, LeakyReLU, Softmax layers): "linear"
(or null) adds no node (an `identity` node for an Activation layer, so that its name still
exists); hard_sigmoid uses the Keras 2 definition (alpha 0.2, beta 0.5) for files written by
Keras < 3 and the Keras 3 one (alpha 1/6) otherwise; "hard_silu"/"hard_swish" -> hard_swish. ReLU
maps to relu, relu6 (max_value 6), clip(0, max_value) (other maxima) or leaky_relu
(negative_slope, no maximum, threshold 0); other combinations are refused. LeakyReLU reads
`negative_slope` (Keras 3) or `alpha` (Keras 2), default 0.3.

Config fields are read with `keras_fields` (types and ranges stated there; ranges below). Each
layer's weights are taken in stored order and checked against the count and the shapes its
config implies. Every layer is judged from its config first (`static_check`): unsupported layers
(Lambda, custom or unknown classes, nested models, channels_first, unsupported activations) and
damaged configs are all collected and reported in one error; no code from the file is ever
executed. An object anywhere in a layer config whose `module` lies outside Keras, whose
`registered_name` is "package>Name", or that is a serialised lambda, refuses the layer, except in
the training-only fields (`*_initializer`, `*_regularizer`, `*_constraint`).
"""
from __future__ import annotations

import numpy as np

from ..layers.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3
from .keras_config import MODEL_CLASSES
from .keras_fields import BadField, flag, integer, integers, name, number, show

__all__ = ["CONVERTERS", "IDENTITY_CLASSES", "Unsupported", "BadField", "activation_op",
           "static_check", "is_builtin_module"]

IDENTITY_CLASSES = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization")

_RESAVE = "save the model again"


class Unsupported(Exception):
    """Raised by a converter's check: why a valid Keras layer cannot be imported (collected)."""


def is_builtin_module(module) -> bool:
    """A `module` field naming Keras itself (`keras...`, `tf_keras...`), not user code."""
    return isinstance(module, str) and module.split(".")[0] in ("keras", "tf_keras")


# ---- activations -------------------------------------------------------------------------------
_SIMPLE_ACTIVATIONS = {"relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "tanh": "tanh",
                       "hard_silu": "hard_swish", "hard_swish": "hard_swish"}
_ACTIVATION_NAMES = ("linear, relu, relu6, sigmoid, tanh, softmax, hard_sigmoid, "
                     "hard_swish/hard_silu, leaky_relu")


def activation_op(act, keras_major: int):
    """(op, attrs) for a Keras activation given by name; None for "linear" or null; raises
    Unsupported (a valid Keras activation refq lacks) or BadField (not an activation name)."""
    if isinstance(act, dict):  # Keras 3 may serialise a built-in as {"class_name": "function"}
        if act.get("class_name") == "function" and isinstance(act.get("config"), str) \
                and is_builtin_module(act.get("module")):
            act = act["config"]
        else:
            raise Unsupported(
                f"its activation is a serialised object (class {show(act.get('class_name'))}, "
                f"module {show(act.get('module'))}), whose code refq never executes: use a "
                f"built-in activation by name ({_ACTIVATION_NAMES}) and {_RESAVE}")
    if act is None or act == "linear":
        return None
    if not isinstance(act, str):
        raise BadField(f"its activation is {show(act)}, not an activation name")
    if act in _SIMPLE_ACTIVATIONS:
        return _SIMPLE_ACTIVATIONS[act], {}
    if act == "softmax":
        return "softmax", {"axis": -1}
    if act == "hard_sigmoid":
        return "hard_sigmoid", dict(HARD_SIGMOID_KERAS2 if keras_major < 3 else HARD_SIGMOID_KERAS3)
    if act == "leaky_relu":  # keras.activations.leaky_relu / tf.nn.leaky_relu default slope
        return "leaky_relu", {"alpha": 0.2}
    raise Unsupported(f"its activation {show(act)} has no refq op: use one of {_ACTIVATION_NAMES} "
                      f"and {_RESAVE}")


def _activation(cfg):
    """The `activation` field (a name, null or a serialised built-in), checked."""
    act = cfg.get("activation", "linear")
    activation_op(act, 3)
    return act


def _relu_op(cfg):
    """ReLU: max_value null or >= 0, negative_slope >= 0, threshold >= 0 (Keras' own ranges)."""
    max_value = number(cfg, "max_value", None, minimum=0, nullable=True)
    slope = number(cfg, "negative_slope", 0.0, minimum=0)
    threshold = number(cfg, "threshold", 0.0, minimum=0)
    if threshold != 0.0:
        raise Unsupported(f"its threshold {threshold} has no refq op: use threshold 0 and "
                          f"{_RESAVE}")
    if slope != 0.0:
        if max_value is not None:
            raise Unsupported(f"negative_slope={slope} together with max_value={max_value} has "
                              f"no refq op: use one of them and {_RESAVE}")
        return "leaky_relu", {"alpha": slope}
    if max_value is None:
        return "relu", {}
    if max_value == 6.0:
        return "relu6", {}
    return "clip", {"min": 0.0, "max": max_value}


def _leaky_relu_op(cfg):
    """LeakyReLU: negative_slope (Keras 3) or alpha (Keras 2) >= 0, default 0.3."""
    key = "negative_slope" if "negative_slope" in cfg else "alpha"
    return "leaky_relu", {"alpha": number(cfg, key, 0.3, minimum=0)}


def _single_axis(cfg, default=-1):
    """An `axis` field holding one integer (or a list of one)."""
    axis = cfg.get("axis", default)
    if isinstance(axis, list) and len(axis) == 1:
        return integer({"axis[0]": axis[0]}, "axis[0]")
    if isinstance(axis, list) and len(axis) > 1:
        raise Unsupported(f"it works over the axes {show(axis)}; refq supports a single axis: "
                          f"use one and {_RESAVE}")
    return integer({"axis": axis}, "axis")


def _softmax_op(cfg):
    return "softmax", {"axis": _single_axis(cfg)}


# ---- config fields shared by several layers ----------------------------------------------------
def _padding(cfg):
    """`padding`: "valid" or "same" (any case)."""
    padding = name(cfg, "padding", "valid")
    if padding.lower() in ("valid", "same"):
        return padding.lower()
    if padding.lower() in ("causal", "full"):
        raise Unsupported(f"its padding {show(padding)} has no refq op: use \"valid\" or "
                          f"\"same\" and {_RESAVE}")
    raise BadField(f"its padding is {show(padding)}, not \"valid\" or \"same\"")


def _data_format(cfg):
    """`data_format`: absent, null or "channels_last"; "channels_first" is refused."""
    fmt = name(cfg, "data_format", None, nullable=True)
    if fmt == "channels_first":
        raise Unsupported("it uses data_format \"channels_first\"; refq is NHWC: rebuild the "
                          f"model with channels_last and {_RESAVE}")
    if fmt not in (None, "channels_last"):
        raise BadField(f"its data_format is {show(fmt)}, not \"channels_last\"")


def _conv_fields(cfg, kind):
    """Conv2D / DepthwiseConv2D / SeparableConv2D: kernel_size, strides, dilation_rate (one or two
    integers >= 1), padding, use_bias, activation; filters >= 1 (Conv2D, SeparableConv2D),
    groups >= 1 (Conv2D), depth_multiplier >= 1 (the depthwise ones)."""
    f = {"kernel_size": integers(cfg, "kernel_size", 2, minimum=1),
         "strides": integers(cfg, "strides", 2, 1, minimum=1),
         "dilation_rate": integers(cfg, "dilation_rate", 2, 1, minimum=1),
         "padding": _padding(cfg),
         "use_bias": flag(cfg, "use_bias", True),
         "activation": _activation(cfg)}
    if kind in ("Conv2D", "SeparableConv2D"):
        f["filters"] = integer(cfg, "filters", minimum=1)
    if kind == "Conv2D":
        f["groups"] = integer(cfg, "groups", 1, minimum=1)
    else:
        f["depth_multiplier"] = integer(cfg, "depth_multiplier", 1, minimum=1)
    return f


def _conv_attrs(f, groups):
    return {"strides": f["strides"], "dilations": f["dilation_rate"], "padding": f["padding"],
            "groups": groups}


def _dense_fields(cfg):
    """Dense: units >= 1, use_bias, activation."""
    return {"units": integer(cfg, "units", minimum=1), "use_bias": flag(cfg, "use_bias", True),
            "activation": _activation(cfg)}


def _batch_norm_fields(cfg):
    """BatchNormalization: axis (one integer), epsilon >= 0 (default 1e-3), momentum in [0, 1]
    (read only to be checked), center and scale (flags)."""
    number(cfg, "momentum", 0.99, minimum=0, maximum=1)
    return {"axis": _single_axis(cfg), "epsilon": number(cfg, "epsilon", 1e-3, minimum=0),
            "center": flag(cfg, "center", True), "scale": flag(cfg, "scale", True)}


def _pool_attrs(cfg):
    """MaxPooling2D / AveragePooling2D: pool_size (default 2) and strides (default pool_size) one
    or two integers >= 1, padding."""
    size = integers(cfg, "pool_size", 2, 2, minimum=1)
    strides = integers(cfg, "strides", 2, None, minimum=1, nullable=True)
    return {"pool_size": size, "strides": size if strides is None else strides,
            "padding": _padding(cfg)}


def _gap_attrs(cfg):
    return {"keepdims": flag(cfg, "keepdims", False)}


def _concat_attrs(cfg):
    return {"axis": integer(cfg, "axis", -1)}


def _reshape_attrs(cfg):
    """Reshape: target_shape, a list of integers >= 1 with at most one -1 (inferred)."""
    shape = cfg.get("target_shape")
    if not isinstance(shape, (list, tuple)):
        raise BadField(f"its target_shape is {show(shape)}, not a list of integers")
    dims = [integer({f"target_shape[{i}]": d}, f"target_shape[{i}]", minimum=-1)
            for i, d in enumerate(shape)]
    for i, d in enumerate(dims):
        if d == 0:
            raise BadField(f"its target_shape[{i}] is 0; it must be a positive integer or -1")
    if dims.count(-1) > 1:
        raise BadField(f"its target_shape {show(shape)} has more than one -1")
    return {"shape": dims}


def _zero_pad_attrs(cfg):
    """ZeroPadding2D: padding, an integer, (h, w) or ((top, bottom), (left, right)), each >= 0."""
    value = cfg.get("padding", 1)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (list, tuple)) for v in value):
        pads = []
        for i, pair in enumerate(value):
            pads += integers({f"padding[{i}]": pair}, f"padding[{i}]", 2, minimum=0)
        return {"pads": pads}
    h, w = integers({"padding": value}, "padding", 2, minimum=0)
    return {"pads": [h, h, w, w]}


# ---- converters ---------------------------------------------------------------------------------
# A converter is fn(ctx, layer, inputs): it reads weights with ctx.weights / ctx.expect and adds
# nodes with ctx.emit(layer, parts, activation, labels), where each part is
# (name suffix, op, inputs or None for the previous part's output, attrs, params).
def _conv2d(ctx, layer, inputs):
    f = _conv_fields(layer.config, "Conv2D")
    (kh, kw), filters, use_bias = f["kernel_size"], f["filters"], f["use_bias"]
    w = ctx.weights(layer, ["kernel"] + (["bias"] if use_bias else []))
    ctx.expect(layer, w, "kernel", (kh, kw, None, filters))
    params = {"weight": np.ascontiguousarray(w["kernel"].transpose(3, 0, 1, 2))}
    if use_bias:
        ctx.expect(layer, w, "bias", (filters,))
        params["bias"] = w["bias"]
    ctx.emit(layer, [("", "conv2d", inputs, _conv_attrs(f, f["groups"]), params)],
             activation_op(f["activation"], ctx.keras_major),
             labels={"weight": w.label("kernel"), "bias": w.label("bias")})


def _depthwise_kernel(k):
    """(kh, kw, in, mult) -> [in*mult, kh, kw, 1], output channel c*mult + m."""
    kh, kw, cin, mult = k.shape
    return np.ascontiguousarray(k.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[..., None])


def _depthwise(ctx, layer, inputs):
    f = _conv_fields(layer.config, "DepthwiseConv2D")
    (kh, kw), mult, use_bias = f["kernel_size"], f["depth_multiplier"], f["use_bias"]
    w = ctx.weights(layer, ["depthwise_kernel"] + (["bias"] if use_bias else []))
    ctx.expect(layer, w, "depthwise_kernel", (kh, kw, None, mult))
    cin = w["depthwise_kernel"].shape[2]
    params = {"weight": _depthwise_kernel(w["depthwise_kernel"])}
    if use_bias:
        ctx.expect(layer, w, "bias", (cin * mult,))
        params["bias"] = w["bias"]
    ctx.emit(layer, [("", "conv2d", inputs, _conv_attrs(f, cin), params)],
             activation_op(f["activation"], ctx.keras_major),
             labels={"weight": w.label("depthwise_kernel"), "bias": w.label("bias")})


def _separable(ctx, layer, inputs):
    f = _conv_fields(layer.config, "SeparableConv2D")
    (kh, kw), mult, use_bias = f["kernel_size"], f["depth_multiplier"], f["use_bias"]
    filters = f["filters"]
    roles = ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if use_bias else [])
    w = ctx.weights(layer, roles)
    ctx.expect(layer, w, "depthwise_kernel", (kh, kw, None, mult))
    cin = w["depthwise_kernel"].shape[2]
    ctx.expect(layer, w, "pointwise_kernel", (1, 1, cin * mult, filters))
    pw = {"weight": np.ascontiguousarray(w["pointwise_kernel"].transpose(3, 0, 1, 2))}
    if use_bias:
        ctx.expect(layer, w, "bias", (filters,))
        pw["bias"] = w["bias"]
    dw_attrs = _conv_attrs(f, cin)
    pw_attrs = {"strides": [1, 1], "dilations": [1, 1], "padding": "valid", "groups": 1}
    ctx.emit(layer, [("/depthwise", "conv2d", inputs, dw_attrs,
                      {"weight": _depthwise_kernel(w["depthwise_kernel"])}),
                     ("/pointwise", "conv2d", None, pw_attrs, pw)],
             activation_op(f["activation"], ctx.keras_major),
             labels={"weight": w.label("pointwise_kernel"), "bias": w.label("bias"),
                     "/depthwise weight": w.label("depthwise_kernel")})


def _dense(ctx, layer, inputs):
    f = _dense_fields(layer.config)
    units, use_bias = f["units"], f["use_bias"]
    w = ctx.weights(layer, ["kernel"] + (["bias"] if use_bias else []))
    ctx.expect(layer, w, "kernel", (None, units))
    params = {"weight": np.ascontiguousarray(w["kernel"].T)}
    if use_bias:
        ctx.expect(layer, w, "bias", (units,))
        params["bias"] = w["bias"]
    ctx.emit(layer, [("", "dense", inputs, {}, params)],
             activation_op(f["activation"], ctx.keras_major),
             labels={"weight": w.label("kernel"), "bias": w.label("bias")})


def _batch_norm(ctx, layer, inputs):
    f = _batch_norm_fields(layer.config)
    center, scale, axis, eps = f["center"], f["scale"], f["axis"], f["epsilon"]
    rank = len(ctx.shape(inputs[0]))
    if axis not in (-1, rank - 1):
        raise Unsupported(f"it normalises axis {axis} of a rank-{rank} input; refq supports "
                          f"only the channel (last) axis: use axis -1 and {_RESAVE}")
    roles = (["gamma"] if scale else []) + (["beta"] if center else []) + ["moving_mean",
                                                                           "moving_variance"]
    w = ctx.weights(layer, roles)
    channels = w["moving_mean"].shape
    for role in roles:
        ctx.expect(layer, w, role, channels)
    var = w["moving_variance"]
    ctx.refuse_values(layer, w, "moving_variance", var < 0, "is negative",
                      "a variance is never negative: the statistics are damaged; recompute them "
                      f"in Keras and {_RESAVE}")
    ctx.refuse_values(layer, w, "moving_variance", var + eps <= 0,
                      f"plus epsilon {eps} is 0",
                      "batch normalization would divide by zero: give the layer an epsilon > 0 "
                      f"and {_RESAVE}")
    mean = w["moving_mean"]
    params = {"gamma": w["gamma"] if scale else np.ones_like(mean),
              "beta": w["beta"] if center else np.zeros_like(mean),
              "mean": mean, "variance": var}
    labels = {"gamma": w.label("gamma"), "beta": w.label("beta"),
              "mean": w.label("moving_mean"), "variance": w.label("moving_variance")}
    ctx.emit(layer, [("", "batch_norm", inputs, {"epsilon": eps, "axis": -1}, params)],
             None, labels=labels)


def _simple(op, attrs_fn=None):
    def convert(ctx, layer, inputs):
        attrs = attrs_fn(layer.config) if attrs_fn else {}
        ctx.emit(layer, [("", op, inputs, attrs, {})], None)
    return convert


def _activation_fields(cfg):
    """Activation: `activation` is required (a name, null for linear, or a serialised built-in)."""
    if "activation" not in cfg:
        raise BadField("its config has no 'activation'")
    activation_op(cfg["activation"], 3)
    return cfg["activation"]


def _activation_layer(ctx, layer, inputs):
    act = activation_op(_activation_fields(layer.config), ctx.keras_major)
    op, attrs = act if act is not None else ("identity", {})
    ctx.emit(layer, [("", op, inputs, attrs, {})], None)


def _op_layer(op_fn):
    def convert(ctx, layer, inputs):
        op, attrs = op_fn(layer.config)
        ctx.emit(layer, [("", op, inputs, attrs, {})], None)
    return convert


def _merge(op):
    def convert(ctx, layer, inputs):
        if len(inputs) < 2:
            raise Unsupported(f"it merges {len(inputs)} input(s); {layer.class_name} needs at "
                              f"least 2: connect its inputs and {_RESAVE}")
        attrs = _concat_attrs(layer.config) if op == "concat" else {}
        ctx.emit(layer, [("", op, inputs, attrs, {})], None)
    return convert


# class name -> (converter, reader that checks the config's fields, or None)
CONVERTERS = {
    "Conv2D": (_conv2d, lambda cfg: _conv_fields(cfg, "Conv2D")),
    "DepthwiseConv2D": (_depthwise, lambda cfg: _conv_fields(cfg, "DepthwiseConv2D")),
    "SeparableConv2D": (_separable, lambda cfg: _conv_fields(cfg, "SeparableConv2D")),
    "Dense": (_dense, _dense_fields),
    "BatchNormalization": (_batch_norm, _batch_norm_fields),
    "Activation": (_activation_layer, _activation_fields),
    "ReLU": (_op_layer(_relu_op), _relu_op),
    "LeakyReLU": (_op_layer(_leaky_relu_op), _leaky_relu_op),
    "Softmax": (_op_layer(_softmax_op), _softmax_op),
    "MaxPooling2D": (_simple("max_pool2d", _pool_attrs), _pool_attrs),
    "AveragePooling2D": (_simple("avg_pool2d", _pool_attrs), _pool_attrs),
    "GlobalAveragePooling2D": (_simple("global_avg_pool2d", _gap_attrs), _gap_attrs),
    "Add": (_merge("add"), None),
    "Multiply": (_merge("multiply"), None),
    "Concatenate": (_merge("concat"), _concat_attrs),
    "Flatten": (_simple("flatten"), None),
    "Reshape": (_simple("reshape", _reshape_attrs), _reshape_attrs),
    "ZeroPadding2D": (_simple("zero_pad2d", _zero_pad_attrs), _zero_pad_attrs),
}
for _cls in IDENTITY_CLASSES:
    CONVERTERS[_cls] = (_simple("identity"), None)

_REFUSED = {
    "Lambda": "it holds Python code, which refq never executes or deserialises: rewrite the "
              f"Lambda as built-in layers and {_RESAVE}",
    "TFOpLambda": "it holds TensorFlow calls, which refq never executes: rewrite them as built-in "
                  f"Keras layers and {_RESAVE}",
    "GlobalMaxPooling2D": "refq has no global max pooling op: use GlobalAveragePooling2D or a "
                          f"MaxPooling2D over the whole feature map and {_RESAVE}",
}

# Config keys whose objects only matter for training; a custom object there is not refused.
_TRAINING_ONLY = ("_initializer", "_regularizer", "_constraint")


def _foreign_object(value, path="config"):
    """The path and description of the first object in a layer config that names code outside
    Keras (a `module` outside keras/tf_keras, a `registered_name` "package>Name", a Lambda
    function), skipping training-only fields; None when there is none."""
    stack = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, dict):
            module, registered = v.get("module"), v.get("registered_name")
            if (module is not None and not is_builtin_module(module)) or (
                    isinstance(registered, str) and ">" in registered) or \
                    v.get("class_name") == "__lambda__":
                return f"{where} (module {show(module)}, registered as {show(registered)})"
            stack.extend((f"{where}.{k}", x) for k, x in v.items()
                         if not str(k).endswith(_TRAINING_ONLY))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", x) for i, x in enumerate(v))
    return None


def static_check(layer):
    """Why `layer` cannot be imported, judged from its config alone: None when it can, else
    ("unsupported", reason) for a valid Keras layer refq does not import, or ("damaged", reason)
    for a config field Keras never writes. Each reason ends with what to do."""
    entry, cls, cfg = layer.entry, layer.class_name, layer.config
    module = entry.get("module")
    registered = entry.get("registered_name")
    if cls in MODEL_CLASSES or isinstance(cfg.get("layers"), list):
        return ("unsupported", "it is a nested model used as a layer, which refq does not "
                f"flatten: rebuild the model with the inner model's layers inlined and {_RESAVE}")
    if cls in _REFUSED:
        return "unsupported", _REFUSED[cls]
    if (module is not None and not is_builtin_module(module)) or (
            isinstance(registered, str) and ">" in registered):
        return ("unsupported", f"it is a custom layer (module {show(module)}, registered as "
                f"{show(registered)}), whose code refq never executes: replace it with built-in "
                f"layers and {_RESAVE}")
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict) and "Quantized" in str(dtype.get("class_name", "")):
        return ("unsupported", f"it is a Keras-quantized layer (dtype policy "
                f"{show(dtype.get('class_name'))}): import the float model instead")
    if cls not in CONVERTERS:
        return ("unsupported", "it is not a layer class refq imports (unknown or custom; "
                f"supported: {', '.join(sorted(CONVERTERS))}): replace it with supported "
                f"layers and {_RESAVE}")
    foreign = _foreign_object(cfg)
    if foreign:
        return ("unsupported", f"its {foreign} names code outside Keras, which refq never "
                f"executes: use built-in Keras objects and {_RESAVE}")
    try:
        _data_format(cfg)
        check = CONVERTERS[cls][1]
        if check is not None:
            check(cfg)
    except Unsupported as e:
        return "unsupported", str(e)
    except BadField as e:
        return "damaged", damaged_reason(e)
    return None


def damaged_reason(e: BadField) -> str:
    """The reason text of a damaged config field, with what to do."""
    return f"{e}; the config is damaged: correct the field or {_RESAVE} from Keras"
