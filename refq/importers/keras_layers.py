"""Keras layers -> refq nodes: one converter per supported layer class, and the reader of the
config fields each class uses (`CONVERTERS`: class name -> (converter, field reader or None)).

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

Activations (fused `activation=` and the Activation, ReLU, LeakyReLU, Softmax layers) are read by
`keras_activations`; "linear" (or null) adds no node (an `identity` node for an Activation layer,
so that its name still exists).

Config fields are read with `keras_fields` (types and ranges stated there; ranges below). Each
layer's weights are taken in stored order and checked against the count and the shapes its
config implies. Before any layer is converted, every layer is judged from its config alone
(`keras_check.static_check`, which runs the field readers of this table).
"""
from __future__ import annotations

import numpy as np

from .keras_activations import activation_field, activation_op, leaky_relu_op, relu_op, \
    softmax_op
from .keras_fields import MISSING, RESAVE, BadField, Unsupported, flag, integer, integers, name, \
    number, show, single_axis

__all__ = ["CONVERTERS", "IDENTITY_CLASSES", "data_format"]

IDENTITY_CLASSES = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization")

# ---- config fields shared by several layers ----------------------------------------------------
def _padding(cfg):
    """`padding`: "valid" or "same" (any case)."""
    padding = name(cfg, "padding", "valid")
    if padding.lower() in ("valid", "same"):
        return padding.lower()
    if padding.lower() in ("causal", "full"):
        raise Unsupported(f"its padding {show(padding)} has no refq op: use \"valid\" or "
                          f"\"same\" and {RESAVE}")
    raise BadField(f"its padding is {show(padding)}, not \"valid\" or \"same\"")


def data_format(cfg):
    """`data_format`: absent, null or "channels_last"; "channels_first" is refused."""
    fmt = name(cfg, "data_format", None, nullable=True)
    if fmt == "channels_first":
        raise Unsupported("it uses data_format \"channels_first\"; refq is NHWC: rebuild the "
                          f"model with channels_last and {RESAVE}")
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
         "activation": activation_field(cfg)}
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
            "activation": activation_field(cfg)}


#: Keras's BatchNormalization(epsilon=1e-3): the value a config without the field means (Keras
#: 2 and 3 `keras.layers.BatchNormalization`); the node states it, as every batch_norm must.
KERAS_BN_EPSILON = 1e-3


def _batch_norm_fields(cfg):
    """BatchNormalization: axis (one integer), epsilon >= 0 (the config's; KERAS_BN_EPSILON when
    the config has none, as Keras reads it), momentum in [0, 1] (read only to be checked),
    center and scale (flags)."""
    number(cfg, "momentum", 0.99, minimum=0, maximum=1)
    return {"axis": single_axis(cfg),
            "epsilon": number(cfg, "epsilon", KERAS_BN_EPSILON, minimum=0),
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
    h, w = integers(cfg, "padding", 2, 1, minimum=0)
    return {"pads": [h, h, w, w]}


# ---- converters ---------------------------------------------------------------------------------
# A converter is fn(ctx, layer, inputs): it reads weights with ctx.weights / ctx.expect and adds
# nodes with ctx.emit(layer, parts, activation, labels), where each part is
# (name suffix, op, inputs or None for the previous part's output, attrs, params).
def _roles(kernels, use_bias):
    """The weight roles of a layer: its kernel(s), then "bias" when use_bias."""
    return kernels + (["bias"] if use_bias else [])


def _with_bias(ctx, layer, w, params, channels):
    """`params` plus the layer's bias (when it has one), checked to hold `channels` values."""
    if "bias" in w:
        ctx.expect(layer, w, "bias", (channels,))
        params["bias"] = w["bias"]
    return params


def _ohwi(k):
    """A Conv2D kernel HWIO (kh, kw, in, out) -> OHWI."""
    return np.ascontiguousarray(k.transpose(3, 0, 1, 2))


def _conv2d(ctx, layer, inputs):
    f = _conv_fields(layer.config, "Conv2D")
    (kh, kw), filters = f["kernel_size"], f["filters"]
    w = ctx.weights(layer, _roles(["kernel"], f["use_bias"]))
    ctx.expect(layer, w, "kernel", (kh, kw, None, filters))
    params = _with_bias(ctx, layer, w, {"weight": _ohwi(w["kernel"])}, filters)
    ctx.emit(layer, [("", "conv2d", inputs, _conv_attrs(f, f["groups"]), params)],
             activation_op(f["activation"], ctx.keras_major),
             labels={"weight": w.label("kernel"), "bias": w.label("bias")})


def _depthwise_kernel(k):
    """(kh, kw, in, mult) -> [in*mult, kh, kw, 1], output channel c*mult + m."""
    kh, kw, cin, mult = k.shape
    return np.ascontiguousarray(k.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[..., None])


def _depthwise(ctx, layer, inputs):
    f = _conv_fields(layer.config, "DepthwiseConv2D")
    (kh, kw), mult = f["kernel_size"], f["depth_multiplier"]
    w = ctx.weights(layer, _roles(["depthwise_kernel"], f["use_bias"]))
    ctx.expect(layer, w, "depthwise_kernel", (kh, kw, None, mult))
    cin = w["depthwise_kernel"].shape[2]
    params = _with_bias(ctx, layer, w, {"weight": _depthwise_kernel(w["depthwise_kernel"])},
                        cin * mult)
    ctx.emit(layer, [("", "conv2d", inputs, _conv_attrs(f, cin), params)],
             activation_op(f["activation"], ctx.keras_major),
             labels={"weight": w.label("depthwise_kernel"), "bias": w.label("bias")})


def _separable(ctx, layer, inputs):
    f = _conv_fields(layer.config, "SeparableConv2D")
    (kh, kw), mult, filters = f["kernel_size"], f["depth_multiplier"], f["filters"]
    w = ctx.weights(layer, _roles(["depthwise_kernel", "pointwise_kernel"], f["use_bias"]))
    ctx.expect(layer, w, "depthwise_kernel", (kh, kw, None, mult))
    cin = w["depthwise_kernel"].shape[2]
    ctx.expect(layer, w, "pointwise_kernel", (1, 1, cin * mult, filters))
    pw = _with_bias(ctx, layer, w, {"weight": _ohwi(w["pointwise_kernel"])}, filters)
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
    units = f["units"]
    w = ctx.weights(layer, _roles(["kernel"], f["use_bias"]))
    ctx.expect(layer, w, "kernel", (None, units))
    params = _with_bias(ctx, layer, w, {"weight": np.ascontiguousarray(w["kernel"].T)}, units)
    ctx.emit(layer, [("", "dense", inputs, {}, params)],
             activation_op(f["activation"], ctx.keras_major),
             labels={"weight": w.label("kernel"), "bias": w.label("bias")})


def _batch_norm(ctx, layer, inputs):
    f = _batch_norm_fields(layer.config)
    center, scale, axis, eps = f["center"], f["scale"], f["axis"], f["epsilon"]
    rank = len(ctx.shape(inputs[0]))
    if axis not in (-1, rank - 1):
        raise Unsupported(f"it normalises axis {axis} of a rank-{rank} input; refq supports "
                          f"only the channel (last) axis: use axis -1 and {RESAVE}")
    roles = (["gamma"] if scale else []) + (["beta"] if center else []) + ["moving_mean",
                                                                           "moving_variance"]
    w = ctx.weights(layer, roles)
    channels = w["moving_mean"].shape
    for role in roles:
        ctx.expect(layer, w, role, channels)
    var = w["moving_variance"]
    ctx.refuse_values(layer, w, "moving_variance", var < 0, "is negative",
                      "a variance is never negative: the statistics are damaged; recompute them "
                      f"in Keras and {RESAVE}")
    ctx.refuse_values(layer, w, "moving_variance", var + eps <= 0,
                      f"plus epsilon {eps} is 0",
                      "batch normalization would divide by zero: give the layer an epsilon > 0 "
                      f"and {RESAVE}")
    mean = w["moving_mean"]
    params = {"gamma": w["gamma"] if scale else np.ones_like(mean),
              "beta": w["beta"] if center else np.zeros_like(mean),
              "mean": mean, "variance": var}
    labels = {"gamma": w.label("gamma"), "beta": w.label("beta"),
              "mean": w.label("moving_mean"), "variance": w.label("moving_variance")}
    ctx.emit(layer, [("", "batch_norm", inputs, {"epsilon": eps, "axis": -1}, params)],
             None, labels=labels)


def _op_layer(op_fn):
    """The converter of a weightless one-node layer whose (op, attrs) `op_fn` reads from its
    config."""
    def convert(ctx, layer, inputs):
        op, attrs = op_fn(layer.config)
        ctx.emit(layer, [("", op, inputs, attrs, {})], None)
    return convert


def _simple(op, attrs_fn=None):
    """The converter of a weightless one-node layer of op `op`, attrs read by `attrs_fn`."""
    return _op_layer(lambda cfg: (op, attrs_fn(cfg) if attrs_fn else {}))


def _activation_fields(cfg):
    """Activation: `activation` is required (a name, null for linear, or a serialised built-in)."""
    return activation_field(cfg, MISSING)


def _activation_layer(ctx, layer, inputs):
    act = activation_op(_activation_fields(layer.config), ctx.keras_major)
    op, attrs = act if act is not None else ("identity", {})
    ctx.emit(layer, [("", op, inputs, attrs, {})], None)


def _merge(op):
    def convert(ctx, layer, inputs):
        if len(inputs) < 2:
            raise Unsupported(f"it merges {len(inputs)} input(s); {layer.class_name} needs at "
                              f"least 2: connect its inputs and {RESAVE}")
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
    "ReLU": (_op_layer(relu_op), relu_op),
    "LeakyReLU": (_op_layer(leaky_relu_op), leaky_relu_op),
    "Softmax": (_op_layer(softmax_op), softmax_op),
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

