"""The description of one operator: its attributes, parameters, shape inference, MACs and forward.

An `Op` is the executable form of an operator page. Every op in `refq.layers` is one `Op` value built
from plain functions; its vector-Jacobian product (`vjp`) sits beside its `forward`.

Conventions shared by every op:
- shapes are tuples whose first entry is the batch dimension, `None` when unknown;
- activations are NHWC; axis 0 of every weight is its output channel;
- `forward(inputs, params, attrs)` receives arrays already cast to the compute dtype and returns one
  array of that dtype; it never mutates its arguments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import GraphError

Shape = tuple  # (batch or None, d1, d2, ...)

_REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    """Schema of one attribute.

    kind: "int", "float", "bool", "str", or "ints" (a list of ints, of `length` if given).
    default: the value when absent; `Attr.REQUIRED` when it must be given. A default of None
      makes the attribute optional: None (JSON null, how a saved graph keeps an absent value)
      is then accepted as a value too, and means "not given" (e.g. clip's missing bound).
    choices: the allowed values of a "str" attribute.
    minimum, maximum: inclusive bounds of an "int" or "float" value or of every entry of "ints"
      (e.g. minimum=1 for strides and sizes, minimum=0 for pads and epsilons).
    Every int must lie in the int64 range and every float must be finite: larger values cannot be
    computed with and are refused at validation instead of failing at run time.
    """

    kind: str
    default: Any = _REQUIRED
    choices: tuple = ()
    length: int | None = None
    minimum: float | None = None
    maximum: float | None = None

    REQUIRED = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def check(self, value, where: str):
        """Return `value` normalised to its kind (tuples to lists, ints to floats); raise GraphError."""
        kind = self.kind
        if value is None and self.default is None:
            return None
        if kind == "bool":
            if not isinstance(value, bool):
                raise GraphError(f"{where}: expected a bool, got {value!r}")
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise GraphError(f"{where}: expected an int, got {short_repr(value)}")
            return self._bounded(value, where)
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise GraphError(f"{where}: expected a number, got {short_repr(value)}")
            if isinstance(value, int) and not -_FLOAT_MAX <= value <= _FLOAT_MAX:
                raise GraphError(f"{where}: expected a finite number, got {short_repr(value)}")
            if not math.isfinite(value):  # NaN/Inf: undefined results, and not storable as JSON
                raise GraphError(f"{where}: expected a finite number, got {value!r}")
            return self._bounded(float(value), where)
        if kind == "str":
            if not isinstance(value, str):
                raise GraphError(f"{where}: expected a string, got {value!r}")
            if self.choices and value not in self.choices:
                raise GraphError(f"{where}: {value!r} is not one of {list(self.choices)}")
            return value
        if kind == "ints":
            if not isinstance(value, (list, tuple)) or any(
                isinstance(v, bool) or not isinstance(v, int) for v in value
            ):
                raise GraphError(f"{where}: expected a list of ints, got {short_repr(value)}")
            if self.length is not None and len(value) != self.length:
                raise GraphError(f"{where}: expected {self.length} ints, got "
                                 f"{short_repr(list(value))}")
            return [self._bounded(v, where) for v in value]
        raise AssertionError(f"unknown attribute kind {kind!r}")

    def _bounded(self, value, where: str):
        """`value` if it lies in the int64 range (ints) and within minimum..maximum."""
        if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
            raise GraphError(f"{where}: {short_repr(value)} is outside the int64 range")
        if self.minimum is not None and value < self.minimum:
            raise GraphError(f"{where}: {value!r} is below the minimum {self.minimum!r}")
        if self.maximum is not None and value > self.maximum:
            raise GraphError(f"{where}: {value!r} is above the maximum {self.maximum!r}")
        return value


_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_FLOAT_MAX = 1.7976931348623157e308


def short_repr(value, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters, for messages about a bad value (it can be a huge
    number or a deep list); also used by `refq.graph` for malformed graph JSON."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # ValueError: an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Traits:
    """What other parts of refq need to know about an op, so that no module keeps a list of op
    names of its own (`refq.layers.ops_with` derives every such list from these records).

    onnx_type: the ONNX op type AIMET's quantsim config and supergroups name it by (ReLU6 is
      "Clip", as it exports).
    grid_preserving: every output value is one of the input's values or 0 (max pooling, padding,
      reshapes): an integer model keeps the input's encoding, no requantization of its own.
    fusable_activation: a clamp an integer producer applies as its output clamp (act_min/act_max).
    takes_activation: an integer producer whose output clamp can take a fusable activation.
    cle_transparent: positively homogeneous per channel, f(s ⊙ x) = s ⊙ f(x) for s > 0, and a
      cross-layer-equalization chain continues through it (AIMET ends chains at pooling, which
      is homogeneous too).
    lowering: the family of its integer lowering in refq.fixedpoint (`lower_graph.LOWERINGS`
      maps each family to its function): "conv" (conv2d, dense), "binary" (add, multiply),
      "mean", "avg_pool", "concat", "grid" (the input's codes pass unchanged), "clamp" (relu,
      relu6, clip), "softmax", "lut" (a table of the 256 or 65536 input codes, round included),
      "conv_transpose", "gemm", "matmul" (`lower_contractions`); None when it has no lowering
      (batch_norm, folded first; the max-pool indices, which the lowering refuses by name). An
      op without a lowering claims none of the traits the lowering reads (grid_preserving,
      fusable_activation, takes_activation), even where they hold.
    bn_foldable: a weighted layer (weight [O, ...], optional bias [O]): a batch norm folds into
      it (and fuses with it in a quantization simulation), bias correction adjusts its bias, and
      its weight is the one a per-channel config quantizes per output channel.
    """

    onnx_type: str
    grid_preserving: bool = False
    fusable_activation: bool = False
    takes_activation: bool = False
    cle_transparent: bool = False
    lowering: str | None = None
    bn_foldable: bool = False


def _no_macs(in_shapes, out_shape, attrs, params) -> int:
    return 0


def _no_params(in_shapes, attrs) -> dict:
    return {}


@dataclass(frozen=True)
class Op:
    """One operator.

    name: lower snake case op name used in graphs.
    forward(inputs, params, attrs) -> array.
    infer_shape(in_shapes, attrs, params) -> output shape; raises ShapeError on inconsistent inputs.
      `params` maps parameter names to arrays (only their shapes may be used).
    num_inputs: exact count, or (min, max) with max None for unbounded.
    attrs: attribute schema.
    params: parameter names -> True if required, False if optional.
    param_shapes(in_shapes, attrs) -> {name: expected shape} for the parameters present; checked on
      validation. Only required for ops with parameters.
    macs(in_shapes, out_shape, attrs, params) -> multiply-accumulates per batch element.
    accumulate(inputs, params, attrs) -> (output, largest |accumulator|): for integer kernels
      with an accumulator, the forward that also reports it (None elsewhere).
    check_params(params, attrs, where) -> None: raises ParamError on parameter values the op's
      Definition excludes (e.g. a negative variance); run by graph validation, so that such a
      model is refused when it is loaded or imported, not when it runs (None: no such values).
    vjp(inputs, params, attrs, y, gy) -> (g_inputs, g_params): the vector-Jacobian product of
      the forward at `inputs` (y = forward(inputs, params, attrs), gy = ∂L/∂y of y's shape):
      g_inputs is a list with ∂L/∂x_i for every input (None for an input nothing differentiable
      flows to), g_params {name: ∂L/∂p} for every parameter present, each of its operand's shape
      and dtype. At a kink (relu at 0, a clip bound, a max-pool tie) it takes the one-sided
      derivative its docstring names. None: the op has no gradient (integer kernels).
    traits: its `Traits` (every float op has them; None for integer kernels).
    inplace(params, attrs, dtype) -> step(a) or None: the op computed in place on an array, bit
      for bit its forward (`refq.layers.inplace`); the compiled plan runs it as an epilogue of
      the convolution before it. None: no in-place form.
    forward_fused(inputs, params, attrs, epilogue): the forward that applies `epilogue` to each
      output block while it is in cache (conv2d, dense; `refq.plan`). None: no such form.
    """

    name: str
    forward: Callable
    infer_shape: Callable
    num_inputs: int | tuple = 1
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    param_shapes: Callable = _no_params
    macs: Callable = _no_macs
    accumulate: Callable | None = None
    check_params: Callable | None = None
    vjp: Callable | None = None
    traits: Traits | None = None
    inplace: Callable | None = None
    forward_fused: Callable | None = None

    def check_arity(self, n: int, where: str):
        if isinstance(self.num_inputs, int):
            ok = n == self.num_inputs
            want = str(self.num_inputs)
        else:
            lo, hi = self.num_inputs
            ok = n >= lo and (hi is None or n <= hi)
            want = f"at least {lo}" if hi is None else f"{lo} to {hi}"
        if not ok:
            raise GraphError(f"{where}: op '{self.name}' takes {want} inputs, got {n}")

    def normalise_attrs(self, attrs: dict, where: str) -> dict:
        """Check `attrs` against the schema and return them with defaults filled in."""
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            raise GraphError(
                f"{where}: unknown attribute(s) {unknown} for op '{self.name}'; "
                f"known: {sorted(self.attrs)}"
            )
        out = {}
        for key, spec in self.attrs.items():
            if key in attrs:
                out[key] = spec.check(attrs[key], f"{where}: attribute '{key}'")
            elif spec.required:
                raise GraphError(f"{where}: op '{self.name}' needs attribute '{key}'")
            else:
                out[key] = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        return out
