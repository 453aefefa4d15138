"""Per-node summary of a graph: op, output shape, parameter count and MACs per batch element."""
from __future__ import annotations

from .graph import Graph
from .ops import get_op

__all__ = ["summarize", "format_table"]


def summarize(graph: Graph) -> list:
    """One dict per node in topological order: name, op, inputs, output_shape, params, macs."""
    shapes = graph.infer_shapes()
    rows = []
    for n in graph.topological_order():
        op = get_op(n.op)
        in_shapes = [shapes[t] for t in n.inputs]
        out = shapes[n.outputs[0]]
        rows.append({
            "name": n.name, "op": n.op, "inputs": list(n.inputs),
            "output_shape": list(out),
            "params": int(sum(a.size for a in n.params.values())),
            "macs": int(op.macs(in_shapes, out, n.attrs, n.params)),
        })
    return rows


def format_table(rows: list, title: str = "") -> str:
    """A plain-text table of `summarize` rows with totals."""
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
    return "\n".join(out)
