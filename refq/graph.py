"""The layer graph: nodes, tensors, validation, topological order and shape inference.

A graph is a list of nodes. Each node applies one op to named input tensors and produces named
output tensors; graph inputs are tensors nobody produces. Parameters (weights) live on their node
as NumPy arrays, axis 0 = output channel. A graph is valid when
- node names are unique and every tensor is produced exactly once (by a graph input or one node);
- every node input and graph output is produced somewhere (no dangling tensors);
- the nodes form no cycle;
- every op is known, its attributes match the op's schema and its parameters are present, finite
  and of the shapes shape inference expects.
"""
from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field

import numpy as np

from .errors import GraphError, ParamError, ShapeError

__all__ = ["TensorSpec", "Node", "Graph"]

_DTYPES = ("float32", "float64", "float16", "int8", "uint8", "int16", "int32", "int64")


@dataclass
class TensorSpec:
    """A graph input: name, shape (batch dimension first, None when free) and dtype name."""

    name: str
    shape: tuple
    dtype: str = "float32"

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_json(d: dict) -> "TensorSpec":
        return TensorSpec(d["name"], tuple(d["shape"]), d.get("dtype", "float32"))


@dataclass
class Node:
    """One op application. `params` maps parameter names to arrays (owned by the node)."""

    name: str
    op: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs),
                "outputs": list(self.outputs), "attrs": copy.deepcopy(self.attrs)}


@dataclass
class Graph:
    """A layer graph. Algorithms return new graphs (`copy()`) and never mutate their input."""

    inputs: list
    outputs: list
    nodes: list
    name: str = "graph"
    meta: dict = field(default_factory=dict)

    # ---- lookups ----------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise GraphError(f"graph '{self.name}': no node named '{name}'")

    def producers(self) -> dict:
        """tensor name -> producing node (graph inputs are absent)."""
        return {t: n for n in self.nodes for t in n.outputs}

    def consumers(self) -> dict:
        """tensor name -> list of nodes that read it, in node order."""
        out: dict = {}
        for n in self.nodes:
            for t in n.inputs:
                out.setdefault(t, []).append(n)
        return out

    def copy(self) -> "Graph":
        """A deep copy: new nodes, new attribute dicts and new parameter arrays."""
        return copy.deepcopy(self)

    # ---- structure --------------------------------------------------------------------------
    def topological_order(self) -> list:
        """Nodes in an order where every tensor is produced before it is read.

        Stable: at each step the ready node that comes first in `nodes` is taken, so a graph
        already in topological order keeps its order. Raises GraphError on duplicate names,
        tensors produced twice, dangling inputs and cycles.
        """
        names = set()
        produced = {}
        for spec in self.inputs:
            if spec.name in produced:
                raise GraphError(f"graph '{self.name}': input tensor '{spec.name}' declared twice")
            produced[spec.name] = "<graph input>"
        for n in self.nodes:
            if n.name in names:
                raise GraphError(f"graph '{self.name}': two nodes are named '{n.name}'; "
                                 "node names must be unique")
            names.add(n.name)
            for t in n.outputs:
                if t in produced:
                    raise GraphError(f"graph '{self.name}': tensor '{t}' is produced by both "
                                     f"'{produced[t]}' and node '{n.name}'")
                produced[t] = n.name
        for n in self.nodes:
            for t in n.inputs:
                if t not in produced:
                    raise GraphError(f"graph '{self.name}': node '{n.name}' reads tensor '{t}', "
                                     "which no node or graph input produces (dangling input)")
        for t in self.outputs:
            if t not in produced:
                raise GraphError(f"graph '{self.name}': output tensor '{t}' is never produced")

        # Kahn's algorithm, always taking the ready node that comes first in `self.nodes`
        waiting = [len({t for t in n.inputs if produced[t] != "<graph input>"}) for n in self.nodes]
        readers: dict = {}
        for i, n in enumerate(self.nodes):
            for t in set(n.inputs):
                readers.setdefault(t, []).append(i)
        ready = [i for i, w in enumerate(waiting) if w == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            i = heapq.heappop(ready)
            order.append(self.nodes[i])
            for t in self.nodes[i].outputs:
                for j in readers.get(t, ()):
                    waiting[j] -= 1
                    if waiting[j] == 0:
                        heapq.heappush(ready, j)
        if len(order) < len(self.nodes):
            placed = {id(n) for n in order}
            rest = [n for n in self.nodes if id(n) not in placed]
            cyc = ", ".join(f"'{n.name}'" for n in rest[:8])
            raise GraphError(f"graph '{self.name}': the nodes {cyc} form a cycle "
                             "(each waits for a tensor another one produces)")
        return order

    def infer_shapes(self) -> dict:
        """tensor name -> shape (batch first, None when free), by each op's shape inference."""
        from .layers import get_op

        shapes = {spec.name: tuple(spec.shape) for spec in self.inputs}
        for n in self.topological_order():
            op = get_op(n.op, where=f"node '{n.name}'")
            where = f"node '{n.name}' ({n.op})"
            attrs = op.normalise_attrs(n.attrs, where)  # defaults filled in; n is not changed
            in_shapes = [shapes[t] for t in n.inputs]
            try:
                out = op.infer_shape(in_shapes, attrs, n.params)
            except ShapeError as e:
                raise ShapeError(f"{where} on {_tensors(n.inputs)}: {e}") from None
            shapes[n.outputs[0]] = tuple(out)
        return shapes

    def validate(self, check_values: bool = True) -> "Graph":
        """Check everything listed in the module docstring; normalise attributes; return self.

        check_values: also reject NaN/Inf in floating-point parameters.
        """
        from .layers import get_op

        order = self.topological_order()
        for spec in self.inputs:
            if spec.dtype not in _DTYPES:
                raise GraphError(f"graph '{self.name}': input '{spec.name}' has unsupported dtype "
                                 f"'{spec.dtype}'; use one of {list(_DTYPES)}")
            if not spec.shape or any(d is not None and (not isinstance(d, int) or d <= 0)
                                     for d in spec.shape):
                raise GraphError(f"graph '{self.name}': input '{spec.name}' has invalid shape "
                                 f"{list(spec.shape)}")
        shapes = {spec.name: tuple(spec.shape) for spec in self.inputs}
        for n in order:
            where = f"node '{n.name}' ({n.op})"
            op = get_op(n.op, where=f"node '{n.name}'")
            op.check_arity(len(n.inputs), where)
            if len(n.outputs) != 1:
                raise GraphError(f"{where}: produces {len(n.outputs)} tensors; every op has one output")
            n.attrs = op.normalise_attrs(n.attrs, where)
            _check_params(n, op, where, check_values)
            in_shapes = [shapes[t] for t in n.inputs]
            try:
                out = tuple(op.infer_shape(in_shapes, n.attrs, n.params))
            except ShapeError as e:
                raise ShapeError(f"{where} on {_tensors(n.inputs)}: {e}") from None
            expected = op.param_shapes(in_shapes, n.attrs)
            for pname, want in expected.items():
                if pname in n.params and tuple(n.params[pname].shape) != tuple(want):
                    raise ParamError(f"{where}: parameter '{pname}' has shape "
                                     f"{list(n.params[pname].shape)}, expected {list(want)} "
                                     f"for inputs {[list(s) for s in in_shapes]}")
            shapes[n.outputs[0]] = out
        return self

    # ---- serialisation ----------------------------------------------------------------------
    def to_json(self) -> dict:
        """The graph without its parameter values, nodes in topological order."""
        return {
            "name": self.name,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": list(self.outputs),
            "nodes": [n.to_json() for n in self.topological_order()],
            "meta": copy.deepcopy(self.meta),
        }


def _tensors(names) -> str:
    return ("tensor " if len(names) == 1 else "tensors ") + ", ".join(f"'{t}'" for t in names)


def _check_params(n: Node, op, where: str, check_values: bool):
    for pname, required in op.params.items():
        if required and pname not in n.params:
            raise ParamError(f"{where}: parameter '{pname}' is missing")
    extra = sorted(set(n.params) - set(op.params))
    if extra:
        raise ParamError(f"{where}: unknown parameter(s) {extra}; op '{op.name}' takes "
                         f"{sorted(op.params)}")
    for pname, arr in n.params.items():
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
            raise ParamError(f"{where}: parameter '{pname}' must be a real numeric array, got "
                             f"{type(arr).__name__} {getattr(arr, 'dtype', '')}")
        if check_values and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0].tolist()
            raise ParamError(f"{where}: parameter '{pname}' holds NaN or Inf (first at index "
                             f"{bad}: {arr[tuple(bad)]}); fix or retrain the weights")
