"""Typed reading of Keras layer-config fields: every number, flag and name a converter uses is read
through one of these functions, which state the field's type and range.

Rules (a value Keras itself never writes is refused, never coerced):
- an integer is a JSON integer: `true`/`false`, `3.5`, `3.0`, `"3"` and `[3]` are not integers;
  every integer lies in [-2**31, 2**31);
- a size (kernel_size, strides, dilation_rate, pool_size, filters, units, groups,
  depth_multiplier) is an integer >= 1; a padding amount is an integer >= 0;
- a number is a JSON integer or float (not a boolean, not a string) that is finite: NaN and
  Infinity, which Python's JSON reader accepts, are refused;
- a flag is `true` or `false`, never 0/1 or a string;
- a field given as "one or N integers" is an integer or a list of exactly N integers;
- a field that is absent takes its Keras default; a field that is present but `null` is refused
  unless `null` is one of its documented values.
A refused value raises `BadField`, whose text names the field and shows the value as it appears
in the JSON; the caller adds the file and the layer. A valid Keras value that refq has no op for
raises `Unsupported` instead (`verdict` tells the two apart for the error report).
"""
from __future__ import annotations

import json
import math

from ..model_io.strict_json import is_json_int

__all__ = ["BadField", "Unsupported", "MISSING", "RESAVE", "show", "verdict", "is_builtin_module",
           "integer", "integers", "number", "flag", "name", "single_axis"]

INT_LIMIT = 2 ** 31
MISSING = object()  # "no default: the field is required"
RESAVE = "save the model again"


class BadField(Exception):
    """A config field holds a value of the wrong type or out of range (text: field and value)."""


class Unsupported(Exception):
    """A valid Keras layer or field value that refq cannot import (text: why, and what to do)."""


def verdict(e) -> tuple:
    """("unsupported", reason) for an `Unsupported`, ("damaged", reason) for a `BadField`; each
    reason ends with what to do."""
    if isinstance(e, Unsupported):
        return "unsupported", str(e)
    return "damaged", f"{e}; the config is damaged: correct the field or {RESAVE} from Keras"


def is_builtin_module(module) -> bool:
    """A `module` field naming Keras itself (`keras...`, `tf_keras...`), not user code."""
    return isinstance(module, str) and module.split(".")[0] in ("keras", "tf_keras")


def show(value, limit: int = 60) -> str:
    """`value` as it appears in the JSON (true, null, "64", NaN), shortened to `limit` chars."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _get(cfg, key, default, nullable):
    if key not in cfg:
        if default is MISSING:
            raise BadField(f"its config has no '{key}'")
        return default, True
    value = cfg[key]
    if value is None and not nullable:
        raise BadField(f"its {key} is null")
    return value, False



def _check_int(value, label, minimum):
    if not is_json_int(value):
        raise BadField(f"its {label} is {show(value)}, not an integer")
    if not -INT_LIMIT <= value < INT_LIMIT:
        raise BadField(f"its {label} is {value}, out of range")
    if minimum is not None and value < minimum:
        need = {0: "an integer >= 0", 1: "a positive integer"}.get(minimum,
                                                                  f"an integer >= {minimum}")
        raise BadField(f"its {label} is {value}; it must be {need}")
    return value


def integer(cfg, key, default=MISSING, *, minimum=None, nullable=False):
    """The integer field `key` (>= `minimum` when given); `default` when absent."""
    value, absent = _get(cfg, key, default, nullable)
    if absent or value is None:
        return value
    return _check_int(value, key, minimum)


def integers(cfg, key, n, default=MISSING, *, minimum=None, nullable=False):
    """The field `key` given as one integer or a list of `n`, as a list of `n` integers."""
    value, absent = _get(cfg, key, default, nullable)
    if value is None:
        return None
    if absent:
        value = default
    if is_json_int(value):
        return [_check_int(value, key, minimum)] * n
    if not isinstance(value, (list, tuple)):
        raise BadField(f"its {key} is {show(value)}, not an integer or a list of {n}")
    if len(value) != n:
        raise BadField(f"its {key} is {show(value)}, not an integer or a list of {n} "
                       f"({len(value)} given; refq imports 2-D layers only)")
    return [_check_int(v, f"{key}[{i}]", minimum) for i, v in enumerate(value)]


def number(cfg, key, default=MISSING, *, minimum=None, maximum=None, nullable=False):
    """The finite number field `key` as a float, within [`minimum`, `maximum`] when given."""
    value, absent = _get(cfg, key, default, nullable)
    if absent or value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadField(f"its {key} is {show(value)}, not a number")
    if isinstance(value, int) and not -2 ** 1023 < value < 2 ** 1023:
        raise BadField(f"its {key} is out of range")
    if not math.isfinite(value):
        raise BadField(f"its {key} is {show(value)}, not a finite number")
    if minimum is not None and value < minimum:
        raise BadField(f"its {key} is {value}; it must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise BadField(f"its {key} is {value}; it must be <= {maximum}")
    return float(value)


def flag(cfg, key, default=MISSING):
    """The boolean field `key`."""
    value, absent = _get(cfg, key, default, False)
    if not absent and not isinstance(value, bool):
        raise BadField(f"its {key} is {show(value)}, not true or false")
    return value


def name(cfg, key, default=MISSING, *, nullable=False):
    """The string field `key` (a name such as a padding or activation)."""
    value, absent = _get(cfg, key, default, nullable)
    if not absent and value is not None and not isinstance(value, str):
        raise BadField(f"its {key} is {show(value)}, not a name")
    return value


def single_axis(cfg, default=-1):
    """An `axis` field holding one integer (or a list of one); Unsupported for several axes."""
    axis = cfg.get("axis", default)
    if isinstance(axis, list) and len(axis) == 1:
        return integer({"axis[0]": axis[0]}, "axis[0]")
    if isinstance(axis, list) and len(axis) > 1:
        raise Unsupported(f"it works over the axes {show(axis)}; refq supports a single axis: "
                          f"use one and {RESAVE}")
    return integer(cfg, "axis", default)
