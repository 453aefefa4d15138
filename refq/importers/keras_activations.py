"""Keras activations -> refq ops: the fused `activation=` field and the activation layers (ReLU,
LeakyReLU, Softmax) read as (op, attrs).

"linear" (or null) is no op. hard_sigmoid uses the Keras 2 definition (alpha 0.2, beta 0.5) for
files written by Keras < 3 and the Keras 3 one (alpha 1/6) otherwise; "hard_silu"/"hard_swish" ->
hard_swish; "leaky_relu" has the slope 0.2 of keras.activations.leaky_relu. ReLU maps to relu,
relu6 (max_value 6), clip(0, max_value) (other maxima) or leaky_relu (negative_slope, no maximum,
threshold 0); other combinations are refused. LeakyReLU reads `negative_slope` (Keras 3) or
`alpha` (Keras 2), default 0.3. Keras 3 may serialise a built-in activation as
{"class_name": "function", "config": NAME, "module": "keras..."}; any other object is refused,
since its code is never executed.
"""
from __future__ import annotations

from ..layers.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3
from .keras_fields import MISSING, RESAVE, BadField, Unsupported, is_builtin_module, number, \
    show, single_axis

__all__ = ["activation_op", "activation_field", "relu_op", "leaky_relu_op", "softmax_op"]

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
                f"built-in activation by name ({_ACTIVATION_NAMES}) and {RESAVE}")
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
                      f"and {RESAVE}")


def activation_field(cfg, default="linear"):
    """The `activation` field (a name, null for linear, or a serialised built-in), checked;
    `default` when absent (MISSING: the field is required, as for the Activation layer)."""
    if default is MISSING and "activation" not in cfg:
        raise BadField("its config has no 'activation'")
    act = cfg.get("activation", default)
    activation_op(act, 3)
    return act


def relu_op(cfg):
    """ReLU: max_value null or >= 0, negative_slope >= 0, threshold >= 0 (Keras' own ranges)."""
    max_value = number(cfg, "max_value", None, minimum=0, nullable=True)
    slope = number(cfg, "negative_slope", 0.0, minimum=0)
    threshold = number(cfg, "threshold", 0.0, minimum=0)
    if threshold != 0.0:
        raise Unsupported(f"its threshold {threshold} has no refq op: use threshold 0 and "
                          f"{RESAVE}")
    if slope != 0.0:
        if max_value is not None:
            raise Unsupported(f"negative_slope={slope} together with max_value={max_value} has "
                              f"no refq op: use one of them and {RESAVE}")
        return "leaky_relu", {"alpha": slope}
    if max_value is None:
        return "relu", {}
    if max_value == 6.0:
        return "relu6", {}
    return "clip", {"min": 0.0, "max": max_value}


def leaky_relu_op(cfg):
    """LeakyReLU: negative_slope (Keras 3) or alpha (Keras 2) >= 0, default 0.3."""
    key = "negative_slope" if "negative_slope" in cfg else "alpha"
    return "leaky_relu", {"alpha": number(cfg, key, 0.3, minimum=0)}


def softmax_op(cfg):
    """Softmax: one axis (default -1)."""
    return "softmax", {"axis": single_axis(cfg)}
