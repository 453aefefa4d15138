"""Winnowing: remove input channels from a layer and the channels that only fed them upstream.

Definition
    winnow(graph, layer, keep) returns a graph computing what `graph` computes when the input
    channels of `layer` (a conv2d or dense reading one tensor) outside `keep` are masked to zero
    (up to the order of floating-point sums), with those channels removed instead of zeroed: layer weight w[..., keep] (OHWI:
    the last axis is the input channel) and, upstream, every channel that reaches nothing but
    the removed inputs, removed where it is made.

Mask propagation (a mask is a bool vector over the last axis of a tensor: the channels kept)
    Starting at the layer's input with `keep`, a tensor t with mask m (not all kept) is reduced
    through its producer p when p is
      a weighted producer  conv2d with groups 1, dense: its output channels outside m are
                           removed (weight rows, bias entries); propagation ends there;
      a depthwise conv2d   groups = C = O (multiplier 1): weight rows and bias entries removed,
                           groups set to the kept count; the mask continues to its input;
      channelwise          batch_norm over the last axis (gamma, beta, mean, variance entries
                           removed), the one-input elementwise activations, identity,
                           zero_pad2d, max/avg pooling 2-D and the global poolings: the mask
                           continues to the input unchanged;
      add, multiply        the mask continues to every input whose last axis has C entries (an
                           input broadcast over channels, last axis 1, is read as it is);
      concat               over the last axis: the mask is split into the parts of the inputs; a
                           part with no kept channel is dropped from the concat.
Where propagation stops (the rule)
    t keeps all its channels, and the consumers that read it reduced read a channel selection
    of it instead, when
      - t is a graph input or a graph output, or its producer is none of the above (grouped
        conv2d, depthwise with multiplier > 1, reshape, flatten, softmax, matmul, ...);
      - some reader of t is not reducing it (t still needs all channels there, e.g. the other
        branch of a residual connection, or a squeeze-excitation pooling), or two readers ask
        for different masks;
      - its producer has no parameters (add, multiply, concat, activations, pads, poolings)
        and every input it would reduce stops: the selection then moves below that node (one
        selection of its output instead of one per input; below a global pooling it reads one
        value per channel instead of a whole feature map).
    The stops are found by a fixed point: propagate, mark the tensors that break a rule as
    stops, propagate again from the start, until no new stop appears.
Channel selection node
    A `gather_channels` node keeping the channels of the mask (its `indices`), named
    "<layer>/channel_select" ("..._2", ... when one layer needs several) and listed in
    graph.meta["channel_selections"] ({node: [kept channels]}): AIMET's DownsampleLayer. It moves
    values only, so it costs no MACs and no parameters, and a quantized model keeps its input's
    grid through it.
Afterwards nodes whose outputs nobody reads (the producers of dropped concat parts) are removed.
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph, Node

__all__ = ["winnow", "CHANNELWISE_OPS", "SELECT_SUFFIX", "SELECTIONS_META"]

#: one-input ops that act on every channel independently (output channel c reads input channel c)
CHANNELWISE_OPS = ("relu", "relu6", "clip", "round", "leaky_relu", "sigmoid", "tanh",
                   "hard_sigmoid", "hard_swish", "identity", "zero_pad2d", "max_pool2d",
                   "avg_pool2d", "global_avg_pool2d", "global_max_pool2d")
ELEMENTWISE_OPS = ("add", "multiply")
SELECT_SUFFIX = "/channel_select"
#: graph.meta key: {selection node name: [kept channel indices]}
SELECTIONS_META = "channel_selections"


def _kind(node: Node, shapes: dict) -> str:
    """How a mask on the output of `node` propagates: "producer", "depthwise", "channelwise",
    "elementwise", "concat" or "stop" (module docstring)."""
    op = node.op
    rank = len(shapes[node.outputs[0]])
    if op == "dense":
        return "producer"
    if op == "conv2d":
        groups, (o, _, _, cg) = node.attrs.get("groups", 1), node.params["weight"].shape
        if groups == 1:
            return "producer"
        if cg == 1 and groups == o:
            return "depthwise"
        return "stop"
    if op == "batch_norm":
        return "channelwise" if node.attrs.get("axis", -1) in (-1, rank - 1) else "stop"
    if op in CHANNELWISE_OPS:
        return "channelwise"
    if op in ELEMENTWISE_OPS:
        return "elementwise"
    if op == "concat":
        return "concat" if node.attrs.get("axis", -1) in (-1, rank - 1) else "stop"
    return "stop"


def _input_masks(node: Node, kind: str, mask: np.ndarray, shapes: dict) -> list:
    """[(input index, mask)] a reduced output with `mask` asks of the inputs of `node`."""
    if kind in ("depthwise", "channelwise"):
        return [(0, mask)]
    if kind == "elementwise":
        return [(i, mask) for i, t in enumerate(node.inputs)
                if len(shapes[t]) and shapes[t][-1] == mask.size]
    if kind == "concat":
        out, start = [], 0
        for i, t in enumerate(node.inputs):
            size = shapes[t][-1]
            out.append((i, mask[start:start + size]))
            start += size
        return out
    return []


def _region(graph: Graph, layer: Node, keep_mask: np.ndarray, shapes: dict, stops: set):
    """One propagation with the stop tensors `stops` (module docstring).

    Returns (uses, reduced, new_stops): uses {tensor: [(reader name, input index, mask)]};
    reduced {node name: (kind, output mask)} the nodes whose output is reduced; new_stops the
    tensors found to break a rule."""
    producers = graph.producers()
    outputs = set(graph.outputs)
    uses, reduced, new_stops = {}, {}, set()
    work = [(layer.name, 0, layer.inputs[0], keep_mask)]
    while work:
        reader, index, t, mask = work.pop()
        if mask.all():
            continue
        first = t not in uses
        uses.setdefault(t, []).append((reader, index, mask))
        if not first or t in stops:
            continue
        p = producers.get(t)
        kind = "stop" if p is None or t in outputs else _kind(p, shapes)
        if kind == "stop":
            new_stops.add(t)
            continue
        reduced[p.name] = (kind, mask)
        for i, m in _input_masks(p, kind, mask, shapes):
            if m.any():
                work.append((p.name, i, p.inputs[i], m))
    for t, readers in uses.items():
        if t in stops:
            continue
        reads = sum(n.inputs.count(t) for n in graph.nodes)
        if len(readers) != reads or any(not np.array_equal(readers[0][2], r[2]) for r in readers):
            new_stops.add(t)
    by_name = {n.name: n for n in graph.nodes}
    for name, (kind, _) in reduced.items():
        node = by_name[name]
        if kind in ("producer", "depthwise") or node.params:
            continue
        asked = [node.inputs[i] for i, m in _input_masks(node, kind, reduced[name][1], shapes)
                 if m.any() and not m.all()]
        if asked and all(t in stops or t in new_stops for t in asked):
            new_stops.add(node.outputs[0])
    return uses, reduced, new_stops - stops


def _selection(name: str, tensor: str, mask: np.ndarray, rank: int, dtype) -> Node:
    """The node computing the channels `mask` keeps of `tensor` (module docstring)."""
    kept = [int(c) for c in np.flatnonzero(mask)]
    return Node(name, "gather_channels", [tensor], [name], {"indices": kept})


def _unique(base: str, taken: set) -> str:
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def winnow(graph: Graph, layer: str, keep, *, in_place: bool = False) -> tuple:
    """(new graph, info): `graph` with the input channels of node `layer` outside `keep` (sorted
    distinct indices) removed and the mask propagated upstream (module docstring). `graph` is
    unchanged unless in_place=True (then it is the graph returned). info: {"reduced": {node:
    channels removed from its output}, "selections": [selection node names]}."""
    g = graph if in_place else graph.copy()
    shapes = g.infer_shapes()
    node = g.node(layer)
    c = shapes[node.inputs[0]][-1]
    keep_mask = np.zeros(c, bool)
    keep_mask[np.asarray(keep, dtype=np.int64)] = True
    stops: set = set()
    while True:
        uses, reduced, new = _region(g, node, keep_mask, shapes, stops)
        if not new:
            break
        stops |= new
    by_name = {n.name: n for n in g.nodes}
    info = {"reduced": {}, "selections": []}
    for name, (kind, mask) in reduced.items():
        n = by_name[name]
        info["reduced"][name] = int(mask.size - mask.sum())
        if kind in ("producer", "depthwise", "channelwise"):
            n.params = {k: v[mask] for k, v in n.params.items()}
            _reduce_meta(g, name, mask)
        if kind == "depthwise":
            n.attrs = dict(n.attrs, groups=int(mask.sum()))
        if kind == "concat":
            parts = _input_masks(n, kind, mask, shapes)
            n.inputs = [t for (i, m), t in zip(parts, n.inputs) if m.any()]
    taken = {n.name for n in g.nodes} | {t for n in g.nodes for t in n.outputs} | \
        {s.name for s in g.inputs}
    for t in sorted(stops & set(uses)):
        made = {}
        for reader, index, mask in uses[t]:
            key = mask.tobytes()
            if key not in made:
                name = _unique(layer + SELECT_SUFFIX, taken)
                taken.add(name)
                sel = _selection(name, t, mask, len(shapes[t]), node.params["weight"].dtype)
                made[key] = sel
                g.nodes.append(sel)
                info["selections"].append(name)
                g.meta.setdefault(SELECTIONS_META, {})[name] = [int(i) for i in
                                                                np.flatnonzero(mask)]
            by_name[reader].inputs[index] = made[key].outputs[0]
    node.params = dict(node.params, weight=node.params["weight"][..., keep_mask])
    _remove_dead(g)
    g.nodes = g.topological_order()
    return g.validate(), info


def _reduce_meta(g: Graph, name: str, mask: np.ndarray):
    """The per-output-channel records of node `name` in graph.meta keep the entries of the kept
    channels: "channel_selections" and "folded_bn" (`refq.algorithms.bn_fold`)."""
    selections = g.meta.get(SELECTIONS_META, {})
    if name in selections:   # a channel selection losing outputs selects fewer channels
        selections[name] = [c for c, m in zip(selections[name], mask) if m]
    stats = g.meta.get("folded_bn", {}).get(name)
    if isinstance(stats, dict):
        g.meta["folded_bn"][name] = {
            k: [x for x, m in zip(v, mask) if m] if isinstance(v, list) and len(v) == mask.size
            else v for k, v in stats.items()}


def _remove_dead(g: Graph):
    """Remove nodes whose outputs are neither read nor graph outputs, until none is left (and
    their records in graph.meta)."""
    while True:
        read = {t for n in g.nodes for t in n.inputs} | set(g.outputs)
        alive = [n for n in g.nodes if any(t in read for t in n.outputs)]
        if len(alive) == len(g.nodes):
            return
        gone = {n.name for n in g.nodes} - {n.name for n in alive}
        for key in (SELECTIONS_META, "folded_bn"):
            records = g.meta.get(key)
            if isinstance(records, dict):
                for name in gone & set(records):
                    del records[name]
        g.nodes = alive
