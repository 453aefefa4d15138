"""Every op by name: the float ops (`refq.layers.REGISTRY`) and the integer kernels of the
accelerator model (`int_*`, `refq.fixedpoint.kernels.INT_REGISTRY`). Graph validation, the runtime
and everything that runs integer graphs look ops up here; `refq.layers.get_op` finds float ops only.
"""
from __future__ import annotations

from .errors import GraphError
from .layers import INTEGER_PREFIX, REGISTRY
from .layers.base import Op

__all__ = ["get_op"]


def get_op(name: str, where: str = "") -> Op:
    """The registered op called `name`; GraphError naming `where` if there is none.

    Float ops live in `refq.layers`; integer kernels (`int_*`, the integer accelerator model) in
    `refq.fixedpoint.kernels`, imported on first use: importing `refq.fixedpoint` imports the
    lowering and the integer runtime, which build on the graph and the plan that import this
    module."""
    op = REGISTRY.get(name)
    if op is None and name.startswith(INTEGER_PREFIX):
        from .fixedpoint.kernels import INT_REGISTRY

        op = INT_REGISTRY.get(name)
    if op is None:
        prefix = f"{where}: " if where else ""
        raise GraphError(f"{prefix}unknown op '{name}'; known ops: {', '.join(sorted(REGISTRY))} "
                         f"and the integer kernels {INTEGER_PREFIX}*")
    return op
