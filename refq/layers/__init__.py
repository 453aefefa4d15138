"""Float semantics of every op, one module per op family, and the explicit registry of ops."""
from __future__ import annotations

from ..errors import GraphError
from . import (activations, conv, conv_transpose, dense, elementwise, matmul, normalization,
               pooling, shape_ops)
from .base import Attr, Op, Traits

__all__ = ["REGISTRY", "get_op", "ops_with", "Op", "Attr", "Traits"]

REGISTRY: dict = {}
for _module in (conv, dense, normalization, activations, pooling, elementwise, shape_ops,
                conv_transpose, matmul):
    for _op in _module.OPS:
        assert _op.name not in REGISTRY, _op.name
        REGISTRY[_op.name] = _op


def ops_with(trait: str, value=True) -> tuple:
    """The names of the float ops whose `Traits` field `trait` is true (or equals `value` when
    one is given other than True), in registry order."""
    return tuple(name for name, op in REGISTRY.items()
                 if (bool(getattr(op.traits, trait)) if value is True
                     else getattr(op.traits, trait) == value))


INTEGER_PREFIX = "int_"


def get_op(name: str, where: str = "") -> Op:
    """The float op called `name`; GraphError naming `where` if there is none.

    Float ops only: the integer kernels (`int_*`, the integer accelerator model) are in
    `refq.fixedpoint.kernels`, and `refq.ops.get_op` looks up both."""
    op = REGISTRY.get(name)
    if op is None:
        prefix = f"{where}: " if where else ""
        hint = (f"; the integer kernels {INTEGER_PREFIX}* are looked up with refq.ops.get_op"
                if name.startswith(INTEGER_PREFIX) else "")
        raise GraphError(f"{prefix}unknown op '{name}'; known ops: {', '.join(sorted(REGISTRY))}"
                         f"{hint}")
    return op
