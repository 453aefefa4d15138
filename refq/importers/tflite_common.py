"""The pieces the TFLite graph builders share (`tflite_float`, `tflite_int`, `tflite_int16`):
operator options (activation, padding, pooling windows), tensor names, the error for an operator
refq cannot represent, and an integer graph's nodes replaced and validated (`with_nodes`)."""
from __future__ import annotations

from ..errors import FixedPointError, RefqError, UnsupportedLayerError
from ..graph import Graph

__all__ = ["ACTIVATIONS", "Names", "unsupported", "padding", "pool_options", "check_window",
           "activation"]

#: TFLite ActivationFunctionType -> refq activation name (TANH and SIGN_BIT are not fused here).
ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}


def unsupported(model, op, why: str) -> UnsupportedLayerError:
    """The error for operator `op` of `model` that refq cannot represent."""
    return UnsupportedLayerError(f"{model.path}: operator {op.index} ({op.opcode}): {why}")


def pool_options(model, op) -> dict:
    """{pool_size, strides, padding} of a pooling operator's Pool2DOptions."""
    o = op.options
    if not {"FilterHeight", "FilterWidth", "StrideH", "StrideW"} <= set(o):
        raise unsupported(model, op, "its Pool2DOptions are missing; the file is damaged")
    out = {"pool_size": [int(o["FilterHeight"]), int(o["FilterWidth"])],
           "strides": [int(o["StrideH"]), int(o["StrideW"])], "padding": padding(model, op)}
    check_window(model, op, out["pool_size"], out["strides"])
    return out


def check_window(model, op, kernel, strides, dilations=(1, 1)):
    """UnsupportedLayerError unless the window (kernel, strides, dilations) of `op` fits its input:
    strides at most the input size and an effective kernel (k − 1)·d + 1 at most twice it plus
    one (larger values only come from a damaged file; padding to them would allocate without
    bound)."""
    shape = model.tensors[op.inputs[0]].shape
    hw = [d for d in shape[1:3] if d > 0] if len(shape) == 4 else []
    if not hw:
        return
    size = max(hw)
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if min(list(kernel) + list(strides) + list(dilations)) < 1 or max(strides) > size or \
            max(eff) > 2 * size + 1:
        raise unsupported(model, op, f"window {list(kernel)} with strides {list(strides)} and "
                                     f"dilations {list(dilations)} does not fit an input of "
                                     f"{shape[1]}x{shape[2]}; the file is damaged")


def padding(model, op) -> str:
    code = op.options.get("Padding", 0)
    if code not in (0, 1):
        raise unsupported(model, op, f"padding code {code} is neither SAME nor VALID")
    return "same" if code == 0 else "valid"


def activation(model, op) -> str:
    code = op.options.get("FusedActivationFunction", 0)
    if code not in ACTIVATIONS:
        raise unsupported(model, op, f"fused activation code {code} (TANH or SIGN_BIT) has no "
                                     "refq form; only NONE, RELU, RELU6 and RELU_N1_TO_1 fuse")
    return ACTIVATIONS[code]


class Names:
    """Refq names of TFLite tensors: the TFLite name up to the first ';', unique (`_<index>`
    appended on a clash); `index` maps each refq tensor back to its TFLite index."""

    def __init__(self, model):
        self.model, self.of, self.index, self._taken = model, {}, {}, set()

    def __call__(self, t: int) -> str:
        if t not in self.of:
            base = self.model.tensors[t].name.split(";")[0].strip() or f"tensor{t}"
            name = base if base not in self._taken else f"{base}_{t}"
            self.alias(t, name)
        return self.of[t]

    def alias(self, t: int, name: str):
        """Name TFLite tensor t `name` (a tensor that shares a refq tensor takes its name)."""
        self.of[t] = name
        self._taken.add(name)
        self.index.setdefault(name, t)

    def fresh(self, base: str) -> str:
        name, k = base, 2
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        return name


def with_nodes(g, nodes, path, what: str):
    """Integer graph `g` with `nodes` in place of its own (same inputs, outputs, name and meta),
    validated; FixedPointError naming the file and `what` changed when it is invalid."""
    out = Graph(list(g.inputs), list(g.outputs), nodes, name=g.name, meta=g.meta)
    try:
        out.validate()
    except RefqError as e:
        raise FixedPointError(f"{path}: the integer graph with its {what} is invalid: "
                              f"{e}") from None
    return out
