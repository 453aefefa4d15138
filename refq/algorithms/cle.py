"""Cross-layer equalization: `equalize(graph, ...) -> (graph, report)`.

Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction" (ICCV 2019),
§4.1 (scaling) and §4.2 (high-bias absorption, `refq.algorithms.high_bias`), with the choices of
AIMET 2.42 (`cross_layer_equalization.py`; reference notes aimet.md §0.2.9 and §5).

Input
    A graph whose batch norms are already folded (`refq.algorithms.bn_fold.fold_batch_norms`;
    AIMET's `equalize_model` runs that fold first). A remaining batch_norm ends a chain, and
    high-bias absorption needs the statistics the fold leaves in graph.meta["folded_bn"].
Chains (AIMET `GraphSearchUtils.find_layer_groups_to_scale`)
    Layers are conv2d with groups == 1 ("conv") and depthwise conv2d with multiplier 1
    (groups == C_in == C_out, "depthwise"). Starting at each layer not yet in a chain, in
    topological order, a chain follows the layer's output through ops that are positively
    homogeneous per channel, f(s ⊙ x) = s ⊙ f(x) for s > 0: relu, leaky_relu, zero_pad2d (padding
    zeros stay zero) and identity, up to the next layer. It ends at any other op (relu6, clip,
    hard_swish, sigmoid, pooling, add, dense, an unfolded batch_norm, a grouped conv with
    multiplier > 1, ...), at a tensor read by more than one node, and at a graph output. max_pool2d
    is positively homogeneous too, but AIMET ends chains there and so does refq.
    relu6_to_relu=True first rewrites every relu6 node as relu (AIMET <= 2.3 did this
    unconditionally; it changes the float function wherever an activation exceeded 6, and the
    report lists the nodes). The default False is AIMET 2.x: relu6 ends a chain. When no set is
    found, nothing is rewritten.
    through_squeeze_excite=True (a refq extension, beyond AIMET): a tensor x read only by
    global_avg_pool2d -> conv2d(groups 1)/dense -> single-input ops -> gate and by multiply(x, gate)
    is passed through. If x is scaled by 1/s, the first SE layer's input column c is multiplied by
    s_c, so gap(x/s) gives the same gate, and multiply(x/s, gate) = (x ⊙ gate)/s continues the
    chain. The scaling stays exact; high-bias absorption is not applied across such a link.
Sets (AIMET `convert_layer_group_to_cls_sets`, §5.a)
    Walking a chain: conv -> conv is a pair and the second conv opens the next set; conv -> dw ->
    conv is a triplet and its last conv opens the next set; conv -> dw -> (dw or chain end) yields
    nothing and the walk restarts at the dw; dw -> conv is a pair; dw -> dw yields nothing.
Scale factors (ClsImpl), ranges r = max|w|
    pair (L1, L2):        r1 per output channel of L1, r2 per input channel of L2,
                          s = r1 / (r1·r2)^(1/2);  W1·(1/s) per row, b1·(1/s), W2·s per column
    triplet (L0, D, L2):  r0 per output channel of L0, r1 per channel of D, r2 per input of L2,
                          g = (r0·r1·r2)^(1/3), s12 = r0/g, s23 = g/r2;
                          W0·(1/s12), b0·(1/s12), W_D·s12·(1/s23), b_D·(1/s23), W2·s23
    A scale that is NaN, +inf or exactly 0 becomes 1 (AIMET's only guard). Afterwards a pair's
    ranges are both (r1·r2)^(1/2) and a triplet's are all g. AIMET computes these in float32;
    refq computes ranges, scales and scaled weights in float64 (FLOAT_DTYPE) and stores the
    touched layers' parameters as float64, so the float function is preserved to ~1e-15.
    Sets are scaled one after another in chain order, each from the current weights (a layer that
    closes one set and opens the next is scaled by both). graph.meta["folded_bn"] entries of every
    layer whose output was scaled become γ/s and β/s.
High-bias absorption (absorb_high_bias=True, AIMET `HighBiasFold`)
    After all sets are scaled, for each pair of each set in order (a triplet gives L0 -> D and
    D -> L2): see `refq.algorithms.high_bias`. It changes the float function wherever a
    pre-activation falls below the absorbed shift, and at padded borders.
Report
    {"algorithm", "semantics", "precision", "relu6_to_relu", "relu6_replaced",
     "through_squeeze_excite", "chains": [{"layers", "kinds", "links", "ends"}],
     "unchained": [{"layer", "ends"}], "sets": [{"kind", "layers", "links", "scales",
     "ranges_before", "ranges_after", "squeeze_excite_compensated"}],
     "high_bias_absorption": {"enabled", "absorbed": [...], "skipped": [...]},
     "unfolded_batch_norms", "notes", "message"}
    ranges_* map each layer of the set to its per-channel ranges on the equalized axis, measured
    just before and just after that set is scaled.
The input graph is never modified; with no equalizable set, an unmodified copy is returned.
An integer model (`refq lower` output) is refused with a QuantError naming it
(`refq.quant.placement.require_float_model`).
"""
from __future__ import annotations

import numpy as np

from ..graph import Graph
from ..quant.placement import require_float_model
from .high_bias import absorb_in_place
from ..layers import ops_with

__all__ = ["equalize", "find_chains", "split_into_sets", "pair_scales", "triplet_scales",
           "layer_kind", "FLOAT_DTYPE"]

FLOAT_DTYPE = np.float64
"""Precision of ranges, scales and scaled weights (AIMET 2.42: float32)."""

TRANSPARENT_OPS = ops_with("cle_transparent")   # chains continue through them (`Traits`)


def layer_kind(node):
    """The CLE kind of a node: "conv", "depthwise" (multiplier 1) or None (not equalizable)."""
    if node.op != "conv2d":
        return None
    groups = node.attrs.get("groups", 1)
    o, _, _, cg = node.params["weight"].shape
    if groups == 1:
        return "conv"
    if cg == 1 and groups == o:
        return "depthwise"
    return None


def _guard(s):
    s = np.asarray(s, FLOAT_DTYPE)
    return np.where(np.isnan(s) | np.isposinf(s) | (s == 0), 1.0, s)


def pair_scales(r1, r2):
    """s = r1 / (r1·r2)^(1/2) per channel, NaN/+inf/0 -> 1."""
    r1, r2 = np.asarray(r1, FLOAT_DTYPE), np.asarray(r2, FLOAT_DTYPE)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _guard(r1 / np.power(r1 * r2, 0.5))


def triplet_scales(r0, r1, r2):
    """(s12, s23) with g = (r0·r1·r2)^(1/3), s12 = r0/g, s23 = g/r2, NaN/+inf/0 -> 1."""
    r0, r1, r2 = (np.asarray(r, FLOAT_DTYPE) for r in (r0, r1, r2))
    g = np.power(r0 * r1 * r2, 1.0 / 3.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _guard(r0 / g), _guard(g / r2)


def split_into_sets(kinds):
    """Index tuples of the pairs and triplets of a chain of layer kinds (see module docstring)."""
    sets, i, n = [], 0, len(kinds)
    while i < n - 1:
        if kinds[i] == "conv" and kinds[i + 1] == "depthwise":
            if i + 2 < n and kinds[i + 2] == "conv":
                sets.append((i, i + 1, i + 2))
                i += 2
            else:
                i += 1
            continue
        if kinds[i + 1] == "conv":
            sets.append((i, i + 1))
        i += 1
    return sets


# ---- chain search ---------------------------------------------------------------------------
class _Search:
    def __init__(self, g, through_se):
        self.g, self.through_se = g, through_se
        self.consumers = g.consumers()
        self.outputs = set(g.outputs)

    def follow(self, layer):
        """(next layer or None, link steps, why the chain ends or None)."""
        t, link = layer.outputs[0], []
        for _ in range(len(self.g.nodes) + 1):
            if t in self.outputs:
                return None, link, f"tensor '{t}' is a graph output"
            cons = self.consumers.get(t, [])
            if len(cons) != 1:
                se = self.squeeze_excite(t) if self.through_se else None
                if se is None:
                    return None, link, f"tensor '{t}' has {len(cons)} consumers"
                link.append(se)
                t = se["output"]
                continue
            node = cons[0]
            if node.op == "conv2d":
                if layer_kind(node) is None:
                    return None, link, f"'{node.name}' is a grouped conv2d (not equalizable)"
                return node, link, None
            if node.op not in TRANSPARENT_OPS:
                return None, link, f"'{node.name}' ({node.op}) ends the chain"
            link.append({"op": node.op, "node": node.name})
            t = node.outputs[0]
        raise AssertionError("unreachable: the graph is acyclic")

    def squeeze_excite(self, t):
        """The SE block reading t, as a link step, or None when t's consumers are not one."""
        cons = self.consumers.get(t, [])
        gaps = [c for c in cons if c.op == "global_avg_pool2d"]
        muls = [c for c in cons if c.op == "multiply"]
        if len(cons) != 2 or len(gaps) != 1 or len(muls) != 1:
            return None
        gap, mul = gaps[0], muls[0]
        if len(mul.inputs) != 2 or mul.inputs.count(t) != 1:
            return None
        gate = mul.inputs[1] if mul.inputs[0] == t else mul.inputs[0]
        u = gap.outputs[0]
        if u in self.outputs or len(self.consumers.get(u, [])) != 1:
            return None
        first = self.consumers[u][0]
        if not (first.op == "dense" or (first.op == "conv2d" and first.attrs["groups"] == 1)):
            return None
        node, path = first, [gap.name, first.name]
        while node.outputs[0] != gate:  # the gate depends on gap(x) only
            v = node.outputs[0]
            nxt = self.consumers.get(v, [])
            if v in self.outputs or len(nxt) != 1 or len(nxt[0].inputs) != 1 or len(path) > 64:
                return None
            node = nxt[0]
            path.append(node.name)
        return {"op": "squeeze_excite", "gap": gap.name, "first": first.name,
                "multiply": mul.name, "nodes": path, "output": mul.outputs[0]}


def find_chains(g: Graph, through_squeeze_excite=False):
    """(chains, unchained) of a validated graph; see the module docstring.

    chains: [{"layers", "kinds", "links", "ends"}] with >= 2 layers, in topological order of their
    first layer; links[i] is the list of steps between layers i and i+1.
    unchained: [{"layer", "ends"}] for equalizable layers that link to no other.
    """
    search = _Search(g, through_squeeze_excite)
    seen, chains, unchained = set(), [], []
    for node in g.topological_order():
        if node.name in seen or layer_kind(node) is None:
            continue
        layers, links, cur = [node], [], node
        seen.add(node.name)
        while True:
            nxt, link, why = search.follow(cur)
            if nxt is not None and nxt.name in seen:
                nxt, why = None, f"'{nxt.name}' is already in a chain"
            if nxt is None:
                break
            layers.append(nxt)
            links.append(link)
            seen.add(nxt.name)
            cur = nxt
        if len(layers) == 1:
            unchained.append({"layer": node.name, "ends": why})
            continue
        chains.append({"layers": [n.name for n in layers], "kinds": [layer_kind(n) for n in layers],
                       "links": links, "ends": why})
    return chains, unchained


# ---- scaling --------------------------------------------------------------------------------
def _w(node):
    return node.params["weight"].astype(FLOAT_DTYPE)


def _out_ranges(node):
    return np.max(np.abs(_w(node)), axis=(1, 2, 3))


def _in_ranges(node):
    return np.max(np.abs(_w(node)), axis=(0, 1, 2))


def _scale_rows(node, bias_factor, *weight_factors):
    """b·bias_factor and W[o] multiplied by each weight factor in turn (AIMET's order)."""
    w = _w(node)
    for f in weight_factors:
        w = w * f[:, None, None, None]
    node.params["weight"] = w
    if "bias" in node.params:
        node.params["bias"] = node.params["bias"].astype(FLOAT_DTYPE) * bias_factor


def _scale_columns(node, f):
    node.params["weight"] = _w(node) * f  # the input channel is the last axis (OHWI, [units, in])


def _compensate_se(g, link, s):
    names = []
    for step in link:
        if step["op"] == "squeeze_excite":
            _scale_columns(g.node(step["first"]), s)
            names.append(step["first"])
    return names


def _scale_stats(g, name, s, notes):
    stats = g.meta.get("folded_bn", {})
    if name not in stats:
        return
    if len(stats[name]["beta"]) != len(s):
        notes.append(f"graph.meta['folded_bn']['{name}'] does not match its {len(s)} channels; "
                     "left unscaled")
        return
    stats[name] = {k: [float(v) for v in np.asarray(stats[name][k], FLOAT_DTYPE) / s]
                   for k in ("gamma", "beta")}


def _floats(a):
    return [float(v) for v in a]


def _apply_set(g, layers, links, notes):
    """Scale one set in place; return its report entry."""
    nodes = [g.node(n) for n in layers]
    if len(nodes) == 2:
        l1, l2 = nodes
        before = {l1.name: _out_ranges(l1), l2.name: _in_ranges(l2)}
        s = pair_scales(*before.values())
        inv = 1.0 / s
        _scale_rows(l1, inv, inv)
        _scale_columns(l2, s)
        se = _compensate_se(g, links[0], s)
        _scale_stats(g, l1.name, s, notes)
        after = {l1.name: _out_ranges(l1), l2.name: _in_ranges(l2)}
        scales = {"s": _floats(s)}
    else:
        l0, d, l2 = nodes
        before = {l0.name: _out_ranges(l0), d.name: _out_ranges(d), l2.name: _in_ranges(l2)}
        s12, s23 = triplet_scales(*before.values())
        inv12, inv23 = 1.0 / s12, 1.0 / s23
        _scale_rows(l0, inv12, inv12)
        _scale_rows(d, inv23, s12, inv23)
        _scale_columns(l2, s23)
        se = _compensate_se(g, links[0], s12) + _compensate_se(g, links[1], s23)
        _scale_stats(g, l0.name, s12, notes)
        _scale_stats(g, d.name, s23, notes)
        after = {l0.name: _out_ranges(l0), d.name: _out_ranges(d), l2.name: _in_ranges(l2)}
        scales = {"s12": _floats(s12), "s23": _floats(s23)}
    return {"kind": "pair" if len(nodes) == 2 else "triplet", "layers": list(layers),
            "links": [[_step_name(s) for s in link] for link in links], "scales": scales,
            "ranges_before": {k: _floats(v) for k, v in before.items()},
            "ranges_after": {k: _floats(v) for k, v in after.items()},
            "squeeze_excite_compensated": se}


def _step_name(step):
    if step["op"] == "squeeze_excite":
        return f"squeeze_excite({step['gap']} .. {step['multiply']})"
    return f"{step['op']}({step['node']})"


def equalize(graph: Graph, relu6_to_relu=False, absorb_high_bias=True,
             through_squeeze_excite=False):
    """Cross-layer scaling and high-bias absorption; see the module docstring.

    Returns (new graph, report). The input graph is not modified.
    """
    require_float_model(graph, "cross-layer equalization (`refq equalize`, `refq quantize --cle`)",
                        "equalize the float model (the one `refq quantize` takes)")
    g = graph.copy()
    g.validate()
    replaced = []
    if relu6_to_relu:
        for n in g.nodes:
            if n.op == "relu6":
                n.op = "relu"
                replaced.append(n.name)
    chains, unchained = find_chains(g, through_squeeze_excite)
    todo = []  # (layers, links) per set, in chain order
    for ch in chains:
        for idx in split_into_sets(ch["kinds"]):
            todo.append(([ch["layers"][i] for i in idx], [ch["links"][i] for i in idx[:-1]]))
    report = {
        "algorithm": "cross_layer_equalization",
        "semantics": "AIMET 2.42" + (" (+ relu6_to_relu as AIMET <= 2.3)" if relu6_to_relu else "")
                     + (" + refq squeeze-excitation extension" if through_squeeze_excite else ""),
        "precision": np.dtype(FLOAT_DTYPE).name,
        "relu6_to_relu": relu6_to_relu, "relu6_replaced": replaced,
        "through_squeeze_excite": through_squeeze_excite,
        "chains": [{**ch, "links": [[_step_name(s) for s in link] for link in ch["links"]]}
                   for ch in chains],
        "unchained": unchained, "sets": [],
        "high_bias_absorption": {"enabled": absorb_high_bias, "absorbed": [], "skipped": []},
        "unfolded_batch_norms": [n.name for n in g.nodes if n.op == "batch_norm"],
        "notes": [],
    }
    if report["unfolded_batch_norms"]:
        report["notes"].append(f"{len(report['unfolded_batch_norms'])} batch_norm nodes remain and "
                               "end chains; fold them first (`refq equalize` and `refq quantize "
                               "--cle` do; Python: refq.algorithms.fold_batch_norms), as AIMET's "
                               "equalize_model does")
    if not todo:
        report["relu6_replaced"] = []
        report["message"] = ("no equalizable chain (conv/depthwise -> [relu|leaky_relu|zero_pad2d|"
                             "identity]* -> conv/depthwise) was found; the graph is returned "
                             "unchanged")
        return graph.copy(), report
    if replaced:
        report["notes"].append(f"relu6 -> relu on {len(replaced)} nodes (AIMET <= 2.3) changes the "
                               "float function wherever a value exceeded 6")
    for layers, links in todo:
        report["sets"].append(_apply_set(g, layers, links, report["notes"]))
    if absorb_high_bias:
        pairs = []
        for layers, links in todo:
            for i in range(len(layers) - 1):
                pairs.append({"l1": layers[i], "l2": layers[i + 1], "link": links[i],
                              "l2_kind": layer_kind(g.node(layers[i + 1]))})
        absorbed, skipped = absorb_in_place(g, pairs)
        report["high_bias_absorption"].update(absorbed=absorbed, skipped=skipped)
    counts = {k: sum(s["kind"] == k for s in report["sets"]) for k in ("pair", "triplet")}
    report["message"] = (f"equalized {len(todo)} sets ({counts['pair']} pairs, "
                         f"{counts['triplet']} triplets) in {len(chains)} chains")
    g.validate()
    return g, report
