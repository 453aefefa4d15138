"""Float semantics of every op, one module per op family, and the explicit registry of ops."""
from __future__ import annotations

from ..errors import GraphError
from . import activations, conv, dense, elementwise, normalization, pooling, shape_ops
from .base import Attr, Op

__all__ = ["REGISTRY", "get_op", "Op", "Attr"]

REGISTRY: dict = {}
for _module in (conv, dense, normalization, activations, pooling, elementwise, shape_ops):
    for _op in _module.OPS:
        assert _op.name not in REGISTRY, _op.name
        REGISTRY[_op.name] = _op


def get_op(name: str, where: str = "") -> Op:
    """The registered op called `name`; GraphError naming `where` if there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        prefix = f"{where}: " if where else ""
        raise GraphError(f"{prefix}unknown op '{name}'; known ops: {', '.join(sorted(REGISTRY))}") from None
