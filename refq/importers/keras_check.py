"""The static check of a Keras layer: whether it can be imported, judged from its config alone,
before any weight is read or any node is built (so that every refused layer of a model is
reported in one error).

A layer is refused as "unsupported" (a valid Keras layer refq does not import) when it is a nested
model, a Lambda/TFOpLambda, a GlobalMaxPooling2D, a custom layer (a `module` outside Keras or a
`registered_name` "package>Name"), a Keras-quantized layer, a class without a converter, a layer
whose config holds an object naming code outside Keras (or a serialised lambda; training-only
fields `*_initializer`, `*_regularizer`, `*_constraint` are skipped), channels_first, or a field
value refq has no op for. It is refused as "damaged" when a config field holds a value Keras never
writes (`keras_fields`). No code from the file is ever executed.
"""
from __future__ import annotations

from .keras_config import MODEL_CLASSES
from .keras_fields import RESAVE, BadField, Unsupported, is_builtin_module, show, verdict
from .keras_layers import CONVERTERS, data_format

__all__ = ["static_check"]

_REFUSED = {
    "Lambda": "it holds Python code, which refq never executes or deserialises: rewrite the "
              f"Lambda as built-in layers and {RESAVE}",
    "TFOpLambda": "it holds TensorFlow calls, which refq never executes: rewrite them as built-in "
                  f"Keras layers and {RESAVE}",
    "GlobalMaxPooling2D": "refq has no global max pooling op: use GlobalAveragePooling2D or a "
                          f"MaxPooling2D over the whole feature map and {RESAVE}",
}

# Config keys whose objects only matter for training; a custom object there is not refused.
_TRAINING_ONLY = ("_initializer", "_regularizer", "_constraint")


def _custom_code(module, registered) -> bool:
    """A `module` outside keras/tf_keras or a `registered_name` "package>Name": user code."""
    return (module is not None and not is_builtin_module(module)) or (
        isinstance(registered, str) and ">" in registered)


def _foreign_object(value, path="config"):
    """The path and description of the first object in a layer config that names code outside
    Keras (a `module` outside keras/tf_keras, a `registered_name` "package>Name", a Lambda
    function), skipping training-only fields; None when there is none."""
    stack = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, dict):
            module, registered = v.get("module"), v.get("registered_name")
            if _custom_code(module, registered) or v.get("class_name") == "__lambda__":
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
                f"flatten: rebuild the model with the inner model's layers inlined and {RESAVE}")
    if cls in _REFUSED:
        return "unsupported", _REFUSED[cls]
    if _custom_code(module, registered):
        return ("unsupported", f"it is a custom layer (module {show(module)}, registered as "
                f"{show(registered)}), whose code refq never executes: replace it with built-in "
                f"layers and {RESAVE}")
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict) and "Quantized" in str(dtype.get("class_name", "")):
        return ("unsupported", f"it is a Keras-quantized layer (dtype policy "
                f"{show(dtype.get('class_name'))}): import the float model instead")
    if cls not in CONVERTERS:
        return ("unsupported", "it is not a layer class refq imports (unknown or custom; "
                f"supported: {', '.join(sorted(CONVERTERS))}): replace it with supported "
                f"layers and {RESAVE}")
    foreign = _foreign_object(cfg)
    if foreign:
        return ("unsupported", f"its {foreign} names code outside Keras, which refq never "
                f"executes: use built-in Keras objects and {RESAVE}")
    try:
        data_format(cfg)
        check = CONVERTERS[cls][1]
        if check is not None:
            check(cfg)
    except (Unsupported, BadField) as e:
        return verdict(e)
    return None
