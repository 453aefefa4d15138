"""Mixed float/integer graphs: float segments inside an integer graph.

A model quantized by a converter may compute some operators in float between integer ones (TFLite:
DEQUANTIZE -> float op -> QUANTIZE where an operator has no int8 kernel; onnxruntime's QOperator
quantizer: DequantizeLinear -> float op -> QuantizeLinear around an operator it has no QLinear
form for). Its refq integer graph holds the same structure:

    ... int_* -> int_dequantize -> float ops -> int_quantize -> int_* ...

int_dequantize and int_quantize may therefore stand anywhere in an integer graph, not only at its
inputs and outputs; the tensors between them are float tensors (no entry in
graph.meta["integer"]["tensors"]) holding float32 values, computed by float32 kernels that round
as the file's runtime does (`kernels.float_ref`: LiteRT's reference kernels). A graph input read
by a float op (not by int_quantize) is a float input, and a graph output computed by a float op a
float output: `run_int(..., codes=True)` takes and returns such tensors as float values (they
have no encoding). Integer graphs are built first, with each segment boundary as a graph input
(the int_quantize after the segment) or output (the int_dequantize before it) of
`lower_from_params`, and then joined by `splice`.
"""
from __future__ import annotations

from ..errors import FixedPointError, RefqError
from ..graph import Graph, Node

__all__ = ["splice", "float_nodes"]


def splice(g: Graph, inputs, outputs, nodes=(), *, drop=(), read=None, tensors=None,
           where: str = "") -> Graph:
    """Integer graph `g` joined with further nodes: a new validated Graph (g is not changed).

    inputs: its graph inputs (TensorSpec list); outputs: its graph outputs (tensor names); nodes:
    Nodes added (float ops, int_dequantize / int_quantize / int_requantize at segment and dtype
    boundaries); drop: names of nodes of g left out; read: {node of g: {tensor: tensor}} the
    inputs of those nodes renamed (an int_quantize of g then reads the float tensor a segment
    computes instead of a graph input); tensors: {integer tensor: TensorQ} of added integer
    tensors, joining graph.meta["integer"]["tensors"]. Nodes are kept in topological order.
    FixedPointError naming `where` (the file) when the result is not a valid graph.
    """
    read = read or {}
    kept = []
    for n in g.nodes:
        if n.name in drop:
            continue
        if n.name in read:
            names = read[n.name]
            n = Node(n.name, n.op, [names.get(t, t) for t in n.inputs], list(n.outputs),
                     dict(n.attrs), dict(n.params))
        kept.append(n)
    meta = {k: (dict(v) if isinstance(v, dict) else v) for k, v in g.meta.items()}
    meta["integer"] = dict(meta["integer"])
    meta["integer"]["tensors"] = {**g.meta["integer"]["tensors"],
                                  **{t: q.to_json() for t, q in (tensors or {}).items()}}
    out = Graph(list(inputs), list(outputs), kept + list(nodes), name=g.name, meta=meta)
    try:
        out.nodes = out.topological_order()
        out.validate()
    except FixedPointError as e:
        raise FixedPointError(f"{where}: {e}") from None
    except RefqError as e:
        raise FixedPointError(f"{where}: the integer graph with its float segments is invalid: "
                              f"{e}") from None
    return out


def float_nodes(g: Graph) -> list:
    """The names of the nodes of integer graph `g` that compute on float tensors (float
    segments), in topological order: every node whose output is not an integer tensor, except
    the int_dequantize nodes."""
    tensors = g.meta.get("integer", {}).get("tensors", {})
    return [n.name for n in g.topological_order()
            if n.op != "int_dequantize" and n.outputs[0] not in tensors]
