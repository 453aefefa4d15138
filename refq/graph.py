"""The layer graph: nodes, tensors, validation, topological order and shape inference.

A graph is a list of nodes. Each node applies one op to named input tensors and produces named
output tensors; graph inputs are tensors nobody produces. Parameters (weights) live on their node
as NumPy arrays, axis 0 = output channel. A graph is valid when
- node names are unique and every tensor is produced exactly once (by a graph input or one node);
- every node input and graph output is produced somewhere (no dangling tensors);
- the nodes form no cycle;
- node and tensor names are non-empty strings;
- every graph input has a known dtype and a shape of positive ints (None for free dimensions);
- every op is known, its attributes match the op's schema and its parameters are present, finite,
  of the shapes shape inference expects and within the op's own value rules (`Op.check_params`);
- no inferred dimension exceeds MAX_DIM and no tensor holds more than MAX_ELEMENTS values per batch
  element (larger tensors cannot be allocated: such a graph would fail only when run).
`Graph.from_json` reads the JSON form `to_json` writes and checks the type of every field.
"""
from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field

import numpy as np

from .errors import GraphError, ParamError, ShapeError
from .layers.base import short_repr

__all__ = ["TensorSpec", "Node", "Graph"]

_DTYPES = ("float32", "float64", "float16", "int8", "uint8", "int16", "int32", "int64")
MAX_DIM = 2 ** 31 - 1        # largest dimension of any tensor
MAX_ELEMENTS = 2 ** 31       # largest number of values of a tensor per batch element


def _is_dim(d) -> bool:
    """A shape entry: None (free) or a positive int (not a bool) up to MAX_DIM."""
    return d is None or (isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM)


def _short(value) -> str:
    """repr(value) cut to 60 characters, for messages about malformed graph JSON."""
    return short_repr(value, 60)


def _fields(d, where: str, required: tuple, optional: tuple) -> dict:
    """`d` if it is a dict with every `required` key and no key outside required + optional."""
    if not isinstance(d, dict):
        raise GraphError(f"{where} must be a JSON object, got {type(d).__name__} {_short(d)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise GraphError(f"{where} lacks the field(s) {missing}")
    unknown = sorted(str(k) for k in d if k not in required + optional)
    if unknown:
        raise GraphError(f"{where} has unknown field(s) {unknown}; known: "
                         f"{sorted(required + optional)}")
    return d


def _names(value, where: str, what: str) -> list:
    """`value` as a list of strings (tensor names), else GraphError."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GraphError(f"{where} must be a list of {what} (strings), got {_short(value)}")
    return list(value)


def _string(value, where: str) -> str:
    if not isinstance(value, str):
        raise GraphError(f"{where} must be a string, got {_short(value)}")
    return value


@dataclass
class TensorSpec:
    """A graph input: name, shape (batch dimension first, None when free) and dtype name."""

    name: str
    shape: tuple
    dtype: str = "float32"

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_json(d: dict, where: str = "graph input") -> "TensorSpec":
        """The spec in `d` ({name, shape, dtype}); GraphError naming `where` and the field."""
        _fields(d, where, ("name", "shape"), ("dtype",))
        name = _string(d["name"], f"{where}: field 'name'")
        where = f"{where} ('{name}')"
        shape = d["shape"]
        if not isinstance(shape, list) or not all(_is_dim(x) for x in shape):
            raise GraphError(f"{where}: field 'shape' must be a list of positive ints up to "
                             f"{MAX_DIM} or null, got {_short(shape)}")
        dtype = _string(d.get("dtype", "float32"), f"{where}: field 'dtype'")
        return TensorSpec(name, tuple(shape), dtype)


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

    @staticmethod
    def from_json(d: dict, params: dict | None = None) -> "Graph":
        """The graph in `d` (the form `to_json` writes), node `n` taking `params[n]` (arrays).

        Checks the type of every field at every level (unknown fields are errors) and raises
        GraphError naming the node and field; the graph is not validated (see `validate`)."""
        params = params or {}
        _fields(d, "graph JSON", ("inputs", "outputs", "nodes"), ("name", "meta"))
        name = _string(d.get("name", "graph"), "graph JSON: field 'name'")
        if not isinstance(d["inputs"], list):
            raise GraphError(f"graph JSON: field 'inputs' must be a list, got "
                             f"{_short(d['inputs'])}")
        inputs = [TensorSpec.from_json(s, f"graph JSON: input {i}")
                  for i, s in enumerate(d["inputs"])]
        outputs = _names(d["outputs"], "graph JSON: field 'outputs'", "tensor names")
        if not isinstance(d["nodes"], list):
            raise GraphError(f"graph JSON: field 'nodes' must be a list, got {_short(d['nodes'])}")
        nodes = []
        for i, nd in enumerate(d["nodes"]):
            where = f"graph JSON: node {i}"
            _fields(nd, where, ("name", "op", "inputs", "outputs"), ("attrs",))
            node_name = _string(nd["name"], f"{where}: field 'name'")
            where = f"graph JSON: node {i} ('{node_name}')"
            op = _string(nd["op"], f"{where}: field 'op'")
            attrs = nd.get("attrs", {})
            if not isinstance(attrs, dict):
                raise GraphError(f"{where}: field 'attrs' must be a JSON object, got "
                                 f"{_short(attrs)}")
            nodes.append(Node(node_name, op, _names(nd["inputs"], f"{where}: field 'inputs'",
                                                    "tensor names"),
                              _names(nd["outputs"], f"{where}: field 'outputs'", "tensor names"),
                              dict(attrs), dict(params.get(node_name, {}))))
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise GraphError(f"graph JSON: field 'meta' must be a JSON object, got {_short(meta)}")
        return Graph(inputs, outputs, nodes, name, dict(meta))

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
        for kind, value in ([("node name", n.name) for n in self.nodes]
                            + [("tensor name", t) for n in self.nodes for t in n.inputs + n.outputs]
                            + [("tensor name", s.name) for s in self.inputs]
                            + [("tensor name", t) for t in self.outputs]):
            if not isinstance(value, str) or not value or "\0" in value:
                raise GraphError(f"graph '{self.name}': {kind} {_short(value)} is not a non-empty "
                                 "string without NUL characters")
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
        from .ops import get_op

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

        check_values: also reject NaN/Inf in floating-point parameters and values the op's
          `check_params` refuses.
        """
        self.validated_shapes(check_values)
        return self

    def validated_shapes(self, check_values: bool = True) -> dict:
        """`validate`, returning the shapes it inferred (as `infer_shapes`) instead of self."""
        from .ops import get_op

        order = self.topological_order()
        for spec in self.inputs:
            if spec.dtype not in _DTYPES:
                raise GraphError(f"graph '{self.name}': input '{spec.name}' has unsupported dtype "
                                 f"'{spec.dtype}'; use one of {list(_DTYPES)}")
            if not isinstance(spec.shape, (tuple, list)) or not spec.shape or \
                    not all(_is_dim(d) for d in spec.shape):
                raise GraphError(f"graph '{self.name}': input '{spec.name}' has invalid shape "
                                 f"{_short(spec.shape)}; give positive ints up to {MAX_DIM} "
                                 "or None")
            _check_size(spec.shape, f"graph '{self.name}': input '{spec.name}'")
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
            if check_values and op.check_params is not None:
                op.check_params(n.params, n.attrs, where)
            _check_size(out, f"{where}: output tensor '{n.outputs[0]}'")
            shapes[n.outputs[0]] = out
        return shapes

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


def _check_size(shape, where: str):
    """ShapeError when a dimension is < 1 or > MAX_DIM or the values per batch element exceed
    MAX_ELEMENTS."""
    dims = [d for d in list(shape)[1:] if d is not None]
    if any(d < 1 for d in dims):
        raise ShapeError(f"{where} would have shape {list(shape)}, with an empty dimension; check "
                         "the attributes (sizes, pads, strides) and input shapes")
    if any(d > MAX_DIM for d in dims) or int(np.prod(dims, dtype=object)) > MAX_ELEMENTS:
        raise ShapeError(f"{where} would have shape {list(shape)}, more than {MAX_ELEMENTS} values "
                         "per batch element; check the attributes (sizes, pads, strides) and "
                         "input shapes")


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
