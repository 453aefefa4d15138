"""Where an integer model departs from the integer-faithful simulation, layer by layer, in LSBs.

    report = compare(sim, "tflite", x)          # x: an array, {input: array} or batches of them
    print(format_compare(report))

Both graphs are lowered from the same simulation (`lower(sim, profile)` and
`faithful_graph(sim, like=profile)`), so they have the same nodes, tensors and encodings and differ
only in their roundings (see refq.fixedpoint.run). For every integer node:
  local       the profile's node evaluated on the faithful simulation's own inputs, against the
              faithful node's output: a difference is the node's own requantization, never an
              inherited one. `max_lsb <= requantizations` is the bound a rounding-only difference
              satisfies (`within_bound`) when every intermediate rounding of the node is on a grid
              no coarser than its output's (not so for an avg_pool2d whose input scale exceeds
              twice its output scale, nor for TFLite's fixed-point hard_swish, whose truncations
              are not roundings of the same real: such excesses are reported, not hidden).
  cumulative  the full profile run against the full faithful run: what the differences become
              downstream.
Each holds {elements, differ, max_lsb, histogram {lsb: count}}. Integer codes are compared
directly (both graphs hold identical encodings), so 1 LSB = one step of the tensor's scale.
Accumulator statistics (`run_int`) of both runs are included, and per graph output the dequantized
results are compared: SQNR (dB) and top-1 agreement of the profile against the faithful simulation
and against the QuantSim float simulation.
The report is a plain JSON-serialisable dict; `format_compare` renders it as text.
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from ..ops import get_op
from ..progress import plural
from ..data_io import iterate_batches
from .lowering import lower
from .profiles import get_profile
from .run import faithful_graph, run_int

__all__ = ["compare", "format_compare"]


def _new():
    return {"elements": 0, "differ": 0, "max_lsb": 0, "histogram": {}}


def _tally(rec, a, b):
    d = np.abs(np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64)).ravel()
    rec["elements"] += int(d.size)
    nz = d[d > 0]
    rec["differ"] += int(nz.size)
    if nz.size:
        rec["max_lsb"] = max(rec["max_lsb"], int(nz.max()))
        vals, counts = np.unique(nz, return_counts=True)
        for v, c in zip(vals.tolist(), counts.tolist()):
            rec["histogram"][str(v)] = rec["histogram"].get(str(v), 0) + int(c)


def _params(node):
    return {k: (v.astype(np.float64) if v.dtype.kind == "f" else v.astype(np.int64))
            for k, v in node.params.items()}


def _merge_acc(total, stats):
    for k, s in stats.items():
        t = total.setdefault(k, dict(s))
        t["max_abs_acc"] = max(t["max_abs_acc"], s["max_abs_acc"])
        t["headroom_bits"] = min(t["headroom_bits"], s["headroom_bits"])
        t["overflowed"] = t["overflowed"] or s["overflowed"]


def _sqnr_parts(ref, x):
    ref = np.asarray(ref, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    return float(np.sum(ref * ref)), float(np.sum((ref - x) ** 2))


def _sqnr_db(sig, noise):
    if noise == 0.0:
        return None  # identical
    if sig == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(sig / noise))


def compare(sim, profile, data, batch_size: int | None = None, quiet: bool = True,
            graph=None) -> dict:
    """Per-layer LSB differences between `lower(sim, profile)` and the integer-faithful simulation
    on `data` (see the module docstring). Returns the report dict. graph: `lower(sim, profile)`
    when the caller already has it (saves lowering again)."""
    p = get_profile(profile)
    gp = lower(sim, p) if graph is None else graph
    gf = faithful_graph(sim, like=p)
    order = gp.topological_order()
    fnodes = {n.name: n for n in gf.nodes}
    for n in order:
        f = fnodes.get(n.name)
        if f is None or f.op != n.op or f.inputs != n.inputs or f.outputs != n.outputs:
            raise FixedPointError(f"compare: node '{n.name}' differs in structure between the "
                                  f"'{p.name}' graph and the faithful simulation")
    metas = gp.meta["integer"], gf.meta["integer"]
    if metas[0]["tensors"] != metas[1]["tensors"]:
        raise FixedPointError("compare: the two graphs hold different tensor encodings")
    int_nodes = [n for n in order if n.op != "int_dequantize"]
    local = {n.name: _new() for n in int_nodes}
    cumul = {n.name: _new() for n in int_nodes}
    acc_p, acc_f = {}, {}
    outs = {t: {"sig": 0.0, "noise": 0.0, "sig_sim": 0.0, "noise_sim": 0.0, "n": 0,
                "top1_faithful": 0, "top1_sim": 0} for t in gp.outputs}
    params = {n.name: _params(n) for n in int_nodes}
    batches = 0
    for feeds in iterate_batches(data, sim.graph, batch_size):
        batches += 1
        tf, sf = run_int(gf, feeds, trace=True, quiet=quiet)
        tp, sp = run_int(gp, feeds, trace=True, quiet=quiet)
        _merge_acc(acc_f, sf)
        _merge_acc(acc_p, sp)
        for n in int_nodes:
            y = get_op(n.op).forward([tf[t] for t in n.inputs], params[n.name], n.attrs)
            _tally(local[n.name], y, tf[n.outputs[0]])
            _tally(cumul[n.name], tp[n.outputs[0]], tf[n.outputs[0]])
        ys = sim.run(feeds)
        for t, o in outs.items():
            a, b, s = tp[t], tf[t], ys[t]
            sig, noise = _sqnr_parts(b, a)
            o["sig"] += sig
            o["noise"] += noise
            sig, noise = _sqnr_parts(s, a)
            o["sig_sim"] += sig
            o["noise_sim"] += noise
            if a.ndim >= 2:
                o["n"] += int(np.prod(a.shape[:-1]))
                o["top1_faithful"] += int(np.sum(a.argmax(-1) == b.argmax(-1)))
                o["top1_sim"] += int(np.sum(a.argmax(-1) == s.argmax(-1)))
    if not batches:
        raise FixedPointError("compare: the data holds no batch")
    reqs = gp.meta["integer"]["requantizations"]
    layers = []
    for n in int_nodes:
        k = int(reqs.get(n.name, 0))
        layers.append({"node": n.name, "op": n.op, "requantizations": k,
                       "local": local[n.name], "cumulative": cumul[n.name],
                       "within_bound": local[n.name]["max_lsb"] <= k,
                       "accumulator": acc_p.get(n.name)})
    outputs = {}
    for t, o in outs.items():
        outputs[t] = {
            "sqnr_vs_faithful_db": _sqnr_db(o["sig"], o["noise"]),
            "sqnr_vs_sim_db": _sqnr_db(o["sig_sim"], o["noise_sim"]),
            "top1_agreement_faithful": (o["top1_faithful"] / o["n"]) if o["n"] else None,
            "top1_agreement_sim": (o["top1_sim"] / o["n"]) if o["n"] else None,
        }
    differ_nodes = [r for r in layers if r["local"]["differ"]]
    summary = {
        "nodes": len(layers),
        "local_differ_nodes": len(differ_nodes),
        "local_differ_elements": sum(r["local"]["differ"] for r in layers),
        "local_elements": sum(r["local"]["elements"] for r in layers),
        "local_max_lsb": max((r["local"]["max_lsb"] for r in layers), default=0),
        "local_within_bound": all(r["within_bound"] for r in layers),
        "local_out_of_bound": [r["node"] for r in layers if not r["within_bound"]],
        "cumulative_differ_elements": sum(r["cumulative"]["differ"] for r in layers),
        "cumulative_max_lsb": max((r["cumulative"]["max_lsb"] for r in layers), default=0),
        "min_headroom_bits": min((s["headroom_bits"] for s in acc_p.values()), default=None),
    }
    return {"profile": p.name, "batches": batches, "summary": summary, "layers": layers,
            "outputs": outputs, "faithful_accumulators": acc_f,
            "notes": list(gp.meta["integer"].get("notes", []))}


def _fmt_db(v):
    return "exact" if v is None else f"{v:.1f} dB"


def format_compare(report: dict, all_layers: bool = False) -> str:
    """A text rendering of `compare`'s report: the summary, then one row per layer that differs
    (every layer with all_layers=True), then the outputs and notes."""
    s = report["summary"]
    lines = [f"profile {report['profile']} vs the integer-faithful simulation "
             f"({report['batches']} batch(es))",
             f"  local: {s['local_differ_elements']} of {s['local_elements']} elements differ in "
             f"{s['local_differ_nodes']} of {s['nodes']} nodes, max {s['local_max_lsb']} LSB "
             f"({'all within' if s['local_within_bound'] else 'NOT all within'} 1 LSB per "
             "requantization)",
             f"  cumulative: {s['cumulative_differ_elements']} elements differ, max "
             f"{s['cumulative_max_lsb']} LSB; smallest accumulator headroom "
             f"{plural(s['min_headroom_bits'], 'bit')}", ""]
    rows = [("node", "op", "rq", "local differ", "max", "cumul differ", "max", "headroom")]
    for r in report["layers"]:
        if not all_layers and not r["local"]["differ"] and not r["cumulative"]["differ"]:
            continue
        acc = r["accumulator"]
        rows.append((r["node"], r["op"], str(r["requantizations"]),
                     f"{r['local']['differ']}/{r['local']['elements']}",
                     str(r["local"]["max_lsb"]) + ("" if r["within_bound"] else "!"),
                     f"{r['cumulative']['differ']}/{r['cumulative']['elements']}",
                     str(r["cumulative"]["max_lsb"]),
                     "-" if acc is None else str(acc["headroom_bits"])))
    if len(rows) > 1:
        w = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines += ["  " + "  ".join(c.ljust(w[i]) for i, c in enumerate(row)).rstrip()
                  for row in rows]
    else:
        lines.append("  no layer differs")
    lines.append("")
    for t, o in report["outputs"].items():
        lines.append(f"  output {t}: SQNR vs faithful {_fmt_db(o['sqnr_vs_faithful_db'])}, vs "
                     f"sim {_fmt_db(o['sqnr_vs_sim_db'])}; top-1 agreement faithful "
                     f"{o['top1_agreement_faithful']}, sim {o['top1_agreement_sim']}")
    for note in report["notes"]:
        lines.append(f"  note: {note}")
    return "\n".join(lines) + "\n"
