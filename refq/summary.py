"""Per-node summary of a graph: op, output shape, parameter count and MACs per batch element.

Each row also carries AIMET's compression cost of the node (`refq.compression.cost`):
aimet_macs and aimet_params for conv2d and dense nodes, None for the others. aimet_macs equals
the node's macs (same formula); aimet_params counts the weight only (no bias). The table ends with
the model's AIMET cost, the sums over those layers that compression ratios refer to (they leave out
the bias and every other node: batch norms, pooling, ...)."""
from __future__ import annotations

from .compression.cost import COSTED_OPS, node_cost
from .graph import Graph
from .ops import get_op

__all__ = ["summarize", "format_table"]


def summarize(graph: Graph) -> list:
    """One dict per node in topological order: name, op, inputs, output_shape, params, macs,
    aimet_macs, aimet_params (module docstring)."""
    shapes = graph.infer_shapes()
    rows = []
    for n in graph.topological_order():
        op = get_op(n.op)
        in_shapes = [shapes[t] for t in n.inputs]
        out = shapes[n.outputs[0]]
        aimet = node_cost(n, out) if n.op in COSTED_OPS else None
        rows.append({
            "name": n.name, "op": n.op, "inputs": list(n.inputs),
            "output_shape": list(out),
            "params": int(sum(a.size for a in n.params.values())),
            "macs": int(op.macs(in_shapes, out, n.attrs, n.params)),
            "aimet_macs": None if aimet is None else aimet.macs,
            "aimet_params": None if aimet is None else aimet.params,
        })
    return rows


def format_table(rows: list, title: str = "") -> str:
    """A plain-text table of `summarize` rows with totals, then (when there are conv2d/dense
    layers) one line with the model's AIMET compression cost."""
    def shape(s):
        return "(" + ", ".join("N" if d is None else str(d) for d in s) + ")"

    cols = [("node", lambda r: r["name"]), ("op", lambda r: r["op"]),
            ("output shape", lambda r: shape(r["output_shape"])),
            ("params", lambda r: f"{r['params']:,}"), ("MACs", lambda r: f"{r['macs']:,}")]
    body = [[f(r) for _, f in cols] for r in rows]
    total = ["total", f"{len(rows)} nodes", "", f"{sum(r['params'] for r in rows):,}",
             f"{sum(r['macs'] for r in rows):,}"]
    widths = [max(len(h), *(len(b[i]) for b in body + [total])) for i, (h, _) in enumerate(cols)]
    right = {3, 4}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [title] if title else []
    out += [line([h for h, _ in cols]), line(["-" * w for w in widths])]
    out += [line(b) for b in body] + [line(["-" * w for w in widths]), line(total)]
    layers = [r for r in rows if r.get("aimet_params") is not None]
    if layers:
        macs = [r["aimet_macs"] for r in layers]
        macs_text = "MACs unknown (free input height/width)" if None in macs \
            else f"{sum(macs):,} MACs"
        noun = "layer" if len(layers) == 1 else "layers"
        out.append(f"AIMET compression cost of the {len(layers)} conv2d/dense {noun}: {macs_text}, "
                   f"{sum(r['aimet_params'] for r in layers):,} weights (no biases)")
    return "\n".join(out)
