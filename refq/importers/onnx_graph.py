"""The ONNX-to-refq float graph builder: tensors, layouts, node emission and the conversion loop.

Layouts. ONNX activations are channels-first (NCL, NCHW, NCDHW), refq's channels-last. Every
converted tensor records its layout:
    "nchw"   a channels-first ONNX tensor [N, C, *spatial] (rank 3 to 5) held by refq as
             [N, *spatial, C] (the name is the rank-4 case's);
    "same"   refq holds the ONNX tensor as it is (rank 2, a tensor no channel op reads, a
             rank-4 tensor after an explicit Transpose to NHWC, or the output of a Transpose no
             channel op reads: `onnx_ops_shape`);
    ("flat", C, H, W)   the flattening [N, C·H·W] of an NCHW tensor with H·W > 1, held by refq in
             NHWC order [N, H·W·C]: index c·H·W + h·W + w of ONNX is index (h·W + w)·C + c of
             refq. Only a dense layer (Gemm, MatMul) may read it: its weight columns are permuted
             to match, which is exact.
Graph inputs. Axis 0 of every input is its batch axis: inputs of rank 0 or 1 are refused. An input
of rank 3 to 5 is channels-first ("nchw", held channels-last by the refq graph) when a channel op
(`CHANNEL_OPS`: convolutions, poolings, BatchNormalization, Pad; for rank 4 also a Transpose
with perm (0, 2, 3, 1), NCHW -> NHWC) reads it, directly or through layout-free ops
(`LAYOUT_FREE`: elementwise and activation ops, Concat, Softmax); otherwise, and at rank 2 or
above 5, refq holds it as it is ("same": e.g. an NHWC input that a Transpose (0, 3, 1, 2) turns
into NCHW).
`graph.meta["onnx_layouts"]` = {"inputs": {name: layout}, "outputs": {ONNX name: layout}} says
which tensors a caller feeds or reads with the channel axis last.

`Builder.convert()` walks the ONNX nodes in file order (ONNX requires topological order): nodes
whose inputs are all constants are folded (`onnx_fold`), the rest go to the converter of their
op type (`onnx_ops.CONVERTERS`), which emits refq nodes through `Builder.emit`. Errors name the
file, the node, its op type and the attribute or input at fault.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError, UnsupportedLayerError
from ..graph import Graph, Node, TensorSpec
from ..layers import REGISTRY
from .onnx_fold import BATCH, FOLDABLE, fold
from .onnx_load import OnnxModel, attributes

__all__ = ["Tensor", "Builder", "CHANNEL_OPS", "LAYOUT_FREE"]

#: ONNX ops that read a channels-first tensor as such (module docstring, Graph inputs).
CHANNEL_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
               "GlobalMaxPool", "BatchNormalization", "Pad")
#: ONNX ops whose output has its input's layout whatever it is (elementwise, activations).
LAYOUT_FREE = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Identity",
               "Dropout", "Clip", "Round", "Add", "Sub", "Mul", "Div", "Concat", "Softmax")
#: ONNX ops with a second output refq computes (the converter emits it).
MULTI_OUTPUT = ("MaxPool",)

_NP_TO_REFQ = {np.dtype(t).name for t in (np.float32, np.float64, np.float16)}


@dataclass
class Tensor:
    """A converted activation: its refq tensor name, refq shape and layout (module docstring)."""

    name: str
    shape: tuple
    layout: object = "same"

    @property
    def onnx_shape(self) -> tuple:
        s = self.shape
        if self.layout == "nchw":
            return (s[0], s[-1], *s[1:-1])
        return tuple(s)


class Builder:
    """Converts one ONNX graph (an `OnnxModel`) into a refq float `Graph`."""

    def __init__(self, model: OnnxModel, input_shapes=None, aliases=None):
        self.model = model
        self.path = model.path
        self.opset = model.opset
        self.consts = dict(model.constants)
        self.tensors: dict = {}
        self.nodes: list = []
        self.names: set = set()
        self.skip: set = set()          # indices of ONNX nodes already converted by a fusion
        self.aliases: dict = dict(aliases or {})   # ONNX tensor -> the tensor it equals
        #                                            (removed Q/DQ pairs)
        self.edges: dict = {}           # (ONNX node index, input slot) -> (refq node, input index)
        self.weights: dict = {}         # ONNX constant name -> [(refq node, param)]
        self.consumers: dict = {}
        for i, n in enumerate(model.nodes):
            for slot, t in enumerate(n.input):
                if t:
                    self.consumers.setdefault(t, []).append((i, slot))
        self.graph_inputs = self._inputs(input_shapes or {})

    # ---- naming and lookup -----------------------------------------------------------------
    def where(self, node) -> str:
        return f"{self.path}: node '{self.node_name(node)}' ({node.op_type})"

    def node_name(self, node) -> str:
        return node.name or f"{node.op_type}:{node.output[0]}"

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def resolve(self, name: str) -> str:
        while name in self.aliases:
            name = self.aliases[name]
        return name

    def is_const(self, name: str) -> bool:
        return not name or self.resolve(name) in self.consts

    def const(self, name: str):
        return self.consts.get(self.resolve(name)) if name else None

    def tensor(self, node, name: str) -> Tensor:
        t = self.tensors.get(self.resolve(name))
        if t is None:
            raise UnsupportedLayerError(f"{self.where(node)}: input '{name}' is neither an "
                                        "activation refq converted nor a constant")
        return t

    def readers(self, name: str) -> list:
        """(ONNX node index, slot) of every node reading `name`, through removed Q/DQ pairs."""
        out = list(self.consumers.get(name, []))
        for alias, target in self.aliases.items():
            if target == name:
                out += self.readers(alias)
        return out

    def sole_reader(self, name: str):
        """The one ONNX node (index, node) reading `name`, or None (several, or a graph output)."""
        r = self.consumers.get(name, [])
        if len(r) != 1 or name in self.model.outputs or name in self.aliases.values():
            return None   # several readers, a graph output, or a quantized (Q/DQ) edge
        return r[0][0], self.model.nodes[r[0][0]]

    def unsupported(self, node, what: str):
        return UnsupportedLayerError(f"{self.where(node)}: {what}")

    # ---- inputs ----------------------------------------------------------------------------
    def _inputs(self, given: dict):
        specs = []
        unknown = sorted(set(given) - {name for name, *_ in self.model.inputs})
        if unknown:
            raise UnsupportedLayerError(f"{self.path}: input_shapes names {unknown}, which are "
                                        f"not inputs of the model "
                                        f"({[n for n, *_ in self.model.inputs]})")
        for name, dims, dtype, has_shape in self.model.inputs:
            if name in given:
                dims = tuple(None if d in (None, -1) else int(d) for d in given[name])
            elif not has_shape:
                raise UnsupportedLayerError(
                    f"{self.path}: input '{name}' declares no shape; give a fixed shape: "
                    f"input_shapes={{'{name}': [N, C, H, W]}}")
            if dtype is None or np.dtype(dtype).name not in _NP_TO_REFQ:
                raise UnsupportedLayerError(f"{self.path}: input '{name}' has element type "
                                            f"{dtype}; refq imports float inputs")
            if len(dims) < 2:
                raise UnsupportedLayerError(
                    f"{self.path}: input '{name}' has shape {list(dims)}: refq tensors have the "
                    "batch axis first, and a rank-0 or rank-1 input has no batch axis; give the "
                    "model a batch axis")
            channels_first = 3 <= len(dims) <= 5 and self.reads_channels(name, len(dims))
            if channels_first and dims[1] is None:
                raise UnsupportedLayerError(
                    f"{self.path}: input '{name}' has shape "
                    f"{['?' if d is None else d for d in dims]}; refq needs a known channel "
                    f"count (axis 1): give a fixed shape, input_shapes={{'{name}': "
                    f"[1, C, ...]}}")
            if channels_first:
                t = Tensor(name, (dims[0], *dims[2:], dims[1]), "nchw")
            else:
                t = Tensor(name, tuple(dims), "same")
            self.tensors[name] = t
            self.names.add(name)
            specs.append(TensorSpec(name, t.shape, np.dtype(dtype).name))
        return specs

    def reads_channels(self, name: str, rank: int) -> bool:
        """True when a channel op reads ONNX tensor `name` of rank `rank`, directly or through
        layout-free ops (module docstring, Graph inputs; also how a Transpose chooses the layout
        of its output)."""
        seen, todo = set(), [name]
        while todo:
            t = todo.pop()
            for index, _ in self.readers(t):
                if index in seen:
                    continue
                seen.add(index)
                n = self.model.nodes[index]
                if n.op_type in CHANNEL_OPS or (n.op_type == "Transpose" and rank == 4 and
                                                list(attributes(n).get("perm", [])) ==
                                                [0, 2, 3, 1]):
                    return True
                if n.op_type in LAYOUT_FREE:
                    todo.extend(o for o in n.output if o)
        return False

    # ---- emission --------------------------------------------------------------------------
    def emit(self, node, op: str, inputs: list, output: str, attrs=None, params=None,
             layout=None, suffix: str = "", slots=None) -> Tensor:
        """Append a refq node `op` reading the Tensors `inputs` and writing the ONNX tensor
        `output`; its shape comes from the op's own shape inference. `slots[i]` is the ONNX input
        slot that refq input i stands for (recorded for quantizers placed on edges)."""
        spec = REGISTRY[op]
        full = {}
        for key, a in spec.attrs.items():
            value = (attrs or {}).get(key, None if a.required else a.default)
            full[key] = a.check(list(value) if isinstance(value, tuple) else value,
                                f"{self.where(node)}: attribute {key}")
        params = {k: np.asarray(v) for k, v in (params or {}).items()}
        try:
            shape = tuple(spec.infer_shape([t.shape for t in inputs], full, params))
        except ShapeError as e:
            raise ShapeError(f"{self.where(node)}: {e}") from None
        name = self.unique(self.node_name(node) + suffix)
        out_name = output if not suffix else output + suffix
        self.nodes.append(Node(name, op, [t.name for t in inputs], [out_name], full, params))
        index = self.index_of.get(id(node))
        for i, slot in enumerate(slots if slots is not None else range(len(inputs))):
            if index is not None and slot is not None:
                self.edges[(index, slot)] = (name, i)
        t = Tensor(out_name, shape, inputs[0].layout if layout is None else layout)
        if not suffix:
            self.tensors[output] = t
        return t

    def record_weight(self, onnx_name: str, node_name: str, param: str):
        self.weights.setdefault(self.resolve(onnx_name), []).append((node_name, param))

    # ---- the loop --------------------------------------------------------------------------
    def convert(self, converters) -> Graph:
        self.index_of = {id(n): i for i, n in enumerate(self.model.nodes)}
        for i, node in enumerate(self.model.nodes):   # constant subgraphs first: fusions see them
            if node.op_type in FOLDABLE and all(self.is_const(t) for t in node.input):
                self.consts[node.output[0]] = np.asarray(fold(
                    node.op_type, [self.const(t) for t in node.input], attributes(node),
                    self.opset, self.where(node)))
                self.skip.add(i)
        for i, node in enumerate(self.model.nodes):
            if i in self.skip:
                continue
            attrs = attributes(node)
            if node.op_type in FOLDABLE and all(self.is_const(t) for t in node.input):
                value = fold(node.op_type, [self.const(t) for t in node.input], attrs,
                             self.opset, self.where(node))
                self.consts[node.output[0]] = np.asarray(value)
                continue
            if node.op_type == "Shape" and not self.is_const(node.input[0]):
                self.consts[node.output[0]] = self._shape(node, attrs)
                continue
            convert = converters.get(node.op_type)
            if convert is None:
                raise self.unsupported(node, f"op type {node.op_type} is not supported by refq; "
                                       f"supported: {', '.join(sorted(converters))}")
            for extra in node.output[1:] if node.op_type not in MULTI_OUTPUT else ():
                if extra and self.readers(extra) or extra in self.model.outputs:
                    raise self.unsupported(node, f"its output '{extra}' is used; refq "
                                           "computes only the first output")
            convert(self, i, node, attrs)
        outputs, layouts = [], {}
        for o in self.model.outputs:
            r = self.resolve(o)
            if r in self.consts:
                raise UnsupportedLayerError(f"{self.path}: output '{o}' is a constant; refq "
                                            "graphs compute their outputs from inputs")
            t = self.tensors[r]
            if isinstance(t.layout, tuple):
                raise UnsupportedLayerError(
                    f"{self.path}: output '{o}' is the NCHW flattening of a tensor with "
                    f"{t.layout[2]}x{t.layout[3]} pixels, which refq holds in NHWC order; refq "
                    "lets only a dense layer read such a flattening")
            outputs.append(t.name)
            layouts[o] = t.layout
        name = self.model.model.graph.name or "onnx"
        graph = Graph(list(self.graph_inputs), outputs, self.nodes, name,
                      {"source": "onnx", "onnx_opset": self.opset, "onnx_layouts": {
                          "inputs": {s.name: self.tensors[s.name].layout
                                     for s in self.graph_inputs}, "outputs": layouts}})
        graph.validate()
        return graph

    def _shape(self, node, attrs):
        t = self.tensor(node, node.input[0])
        dims = []
        for k, d in enumerate(t.onnx_shape):
            if d is None and k > 0:
                raise self.unsupported(node, f"takes the shape of '{node.input[0]}', whose "
                                       f"dimension {k} is free; give the model fixed input "
                                       "shapes (input_shapes=...)")
            dims.append(BATCH if d is None else d)
        start, end = attrs.get("start", 0), attrs.get("end", None)
        return np.array(dims[start:end], dtype=np.int64)
