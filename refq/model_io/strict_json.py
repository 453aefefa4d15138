"""The JSON of a refq model file: strict JSON (no NaN/Infinity, numbers within float64/int64 range,
nesting at most `MAX_JSON_DEPTH` levels), read by `parse_json` and written by `dumps`."""
from __future__ import annotations

import json
import math

from ..errors import GraphError, one_line

__all__ = ["MAX_JSON_DEPTH", "parse_json", "dumps", "is_json_int"]

MAX_JSON_DEPTH = 64


def is_json_int(value) -> bool:
    """A JSON integer as Python's json module reads it: an int, and not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_constant(name):
    raise ValueError(f"the literal {name} (JSON has no NaN or Infinity)")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond the float64 range")
    return value


def _int64(text):
    if len(text.lstrip("-")) > 19 or not -(2 ** 63) <= int(text) < 2 ** 63:
        raise ValueError(f"the integer {text[:40]}{'...' if len(text) > 40 else ''} is beyond "
                         "the int64 range")
    return int(text)


def _depth(doc) -> int:
    """Nesting depth of a parsed JSON document (iterative: no recursion limit)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                return level
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, level + 1) for v in items)
    return deepest


def parse_json(text: str):
    """`text` parsed under the format's rules; ValueError with a one-line reason otherwise."""
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                         parse_int=_int64)
    except RecursionError:
        raise ValueError(f"nesting deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{e.msg} at line {e.lineno} column {e.colno}") from None
    if _depth(doc) > MAX_JSON_DEPTH:
        raise ValueError(f"nesting deeper than {MAX_JSON_DEPTH} levels")
    return doc


def dumps(doc, what: str, **kwargs) -> str:
    """JSON text of `doc` that `parse_json` reads back; GraphError naming `what` otherwise."""
    try:
        text = json.dumps(doc, allow_nan=False, **kwargs)
        parse_json(text)
    except (TypeError, ValueError, RecursionError) as e:
        raise GraphError(f"{what} cannot be stored as refq JSON ({one_line(e, 200)}); keep it to "
                         f"JSON types, finite float64 and int64 numbers and at most "
                         f"{MAX_JSON_DEPTH} levels of nesting") from None
    return text
