"""The quantizers section of the report: what each quantizer sees, the range it chose, its cost.

For every enabled quantizer with an encoding (the rows of `refq.report.quant_report`):
- values and histogram: what the quantizer sees (for an activation quantizer the float run's
  tensors, the x of the report's local SQNR; for a parameter quantizer the weight) and their
  histogram in `bins` equal bins over [min, max], by two passes over the data, which must
  therefore be re-iterable (`refq.analysis.quantizer_values`, its docstring).
- chosen range: the grid's ends [scale·(qmin − zp), scale·(qmax − zp)] of the encoding
  (`Encoding.min`, `.max`); per-channel weights: the envelope [min_c min_c, max_c max_c] over the
  channels.
- minmax range: the grid's ends of what the minmax scheme would have chosen on the same values:
  `MinMaxAnalyzer` over them, `compute_encoding` with the quantizer's bitwidth, grid and numerics
  (AIMET 2.42: [min(min, 0), max(max, 0)], the minimum range, symmetric widening, snapped to the
  grid; `refq.quant.encoding`). Per-channel weights: per channel on axis `enc.axis`, then the
  envelope.
- range ratio = (chosen max − chosen min) / (minmax max − minmax min). Below 1 the scheme narrowed
  the range and clips (tf_enhanced, percentile, SQNR search); above 1 the grid is wider than the
  values need (a fixed range, an encoding calibrated on other data, overflow protection).
- clipped fraction, local and cumulative SQNR: `refq.report.quant_report`'s (its docstring):
  clipped = the share of values beyond the grid's ends by more than half a step; local SQNR =
  10·log10(Σx² / Σ(x − qdq(x))²) dB; cumulative SQNR = the same against the simulated run's
  tensor. None: no error ("exact"), an all-zero tensor, or (cumulative) a parameter.
- cumulative drop: consecutive quantizers along the data path, not in node order (in node order a
  squeeze-excite gate, at a high SQNR, would come right before the product on the main path and
  look like a large drop). The upstream quantizers U(q) of q are those met first walking back from
  q's tensors through unquantized tensors (`upstream_quantizers`), and
      drop(q) = min_{u ∈ U(q)} cum(u) − cum(q) dB
  the SQNR lost from the worst of q's quantized sources to q (quantizers with a cumulative SQNR
  only; none for the model inputs).
Table: every quantizer, worst local SQNR first, ties by name; those without a local SQNR last, by
name. Figures: bars of local and cumulative SQNR of the BAR_QUANTIZERS worst, and a log-y
histogram of each of the `top` worst, the chosen range shaded, the minmax range as vertical lines.
Errors: QuantError for data without a batch, a batch or tensor holding NaN or ±inf (naming the
batch and the tensor), data that changes between the passes, a `report` of another simulation;
InputError for a one-shot iterator and a bad `top` or `bins`.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ..errors import InputError, QuantError
from .document import Figure, Panel, Section, Table, slug, unique_ids
from .quantizer_values import value_histograms, weight_values

__all__ = ["quantizers_section", "BAR_QUANTIZERS", "value_histograms"]

BAR_QUANTIZERS = 30      # quantizers in the SQNR bars figure (the worst by local SQNR)
FINDING_NAMES = 5        # quantizers named per finding
CLIP_FINDING = 1e-4      # clipped fractions above this are named in the findings


def _envelope(enc_min, enc_max):
    return float(np.min(enc_min)), float(np.max(enc_max))


def _minmax_range(q, enc, analyzer, numerics):
    """The grid ends (envelope) of the minmax encoding of `analyzer`'s statistics; None for a
    pass-through quantizer."""
    if enc.is_pass_through:
        return None
    strict = enc.symmetric and enc.qmin == -enc.qmax
    mm = analyzer.compute_encoding(enc.bitwidth, enc.symmetric, numerics=numerics, strict=strict,
                                   unsigned_symmetric=q.unsigned_symmetric)
    return _envelope(mm.min, mm.max)


def upstream_quantizers(sim, names) -> dict:
    """quantizer name -> the quantizers among `names` met first walking back along the data path
    from where it quantizes (module docstring), sorted by name.

    An activation quantizer starts at the nodes producing its tensors, an input quantizer at the
    tensor its node reads. At a node, input i's quantizer (node, i) is taken when it is in `names`;
    else the tensor is followed: its activation quantizer when in `names` (the quantizer itself is
    passed through), else its producer's inputs; a graph input ends the walk."""
    graph = sim.graph
    producer = graph.producers()
    on_tensor = {t: q for t, q in sim.tensor_quantizers().items() if q in names}
    on_input = {k: q for k, q in sim.input_quantizers().items() if q in names}
    out = {}
    for name in sorted(names):
        q = sim.quantizers[name]
        found, seen = set(), set()
        if q.kind == "input":
            stack = [("tensor", graph.node(q.node).inputs[q.input_index])]
        else:
            stack = [("node", producer[t].name) for t in q.tensors if t in producer]
        while stack:
            kind, item = stack.pop()
            if (kind, item) in seen:
                continue
            seen.add((kind, item))
            if kind == "node":
                node = graph.node(item)
                for i, t in enumerate(node.inputs):
                    if on_input.get((item, i), name) != name:
                        found.add(on_input[(item, i)])
                    else:
                        stack.append(("tensor", t))
            elif on_tensor.get(item, name) != name:
                found.add(on_tensor[item])
            elif item in producer:
                stack.append(("node", producer[item].name))
        out[name] = sorted(found)
    return out


def _sqnr_key(row):
    s = row["local_sqnr_db"]
    return (s is None, 0.0 if s is None else s, row["quantizer"])


def _rows(sim, report, seen, bins):
    """One dict per quantizer of the report (module docstring), worst local SQNR first; `seen`:
    the activation and input quantizers' `value_histograms`."""
    rows = sorted(report["quantizers"], key=_sqnr_key)
    out = []
    for r in rows:
        name = r["quantizer"]
        q, enc = sim.quantizers[name], sim.encodings[name]
        v = weight_values(sim, q, enc, bins) if q.kind == "param" else seen[name]
        chosen = _envelope(enc.min, enc.max)
        minmax = _minmax_range(q, enc, v.analyzer, sim.numerics)
        ratio = None
        if minmax is not None and minmax[1] > minmax[0]:
            ratio = (chosen[1] - chosen[0]) / (minmax[1] - minmax[0])
        out.append({"quantizer": name, "kind": q.kind, "bitwidth": enc.bitwidth,
                    "symmetric": enc.symmetric, "per_channel": enc.axis is not None,
                    "range": chosen, "minmax_range": minmax, "range_ratio": ratio,
                    "clipped_fraction": r["clipped_fraction"],
                    "local_sqnr_db": r["local_sqnr_db"],
                    "cumulative_sqnr_db": r["cumulative_sqnr_db"],
                    "zero_signal": r.get("zero_signal", False),
                    "edges": v.edges, "counts": v.counts})
    return out


def _grid_name(row) -> str:
    return (("symmetric" if row["symmetric"] else "asymmetric")
            + (" per-channel" if row["per_channel"] else ""))


def _table(rows, drops) -> Table:
    drop = {q: d for d, q, *_ in drops}
    body = []
    for r in rows:
        mm = r["minmax_range"] or (None, None)
        body.append([r["quantizer"], r["kind"], r["bitwidth"], _grid_name(r),
                     r["range"][0], r["range"][1], mm[0], mm[1],
                     r["range_ratio"], 100 * r["clipped_fraction"], r["local_sqnr_db"],
                     r["cumulative_sqnr_db"], drop.get(r["quantizer"])])
    return Table(
        "quantizers.table", "Every quantizer, worst local SQNR first",
        ["quantizer", "kind", "bits", "grid", "range min", "range max", "minmax min",
         "minmax max", "range ratio", "clipped %", "local SQNR dB", "cumulative SQNR dB",
         "cumulative drop dB"],
        body, formats={"range ratio": "{:.3f}", "clipped %": "{:.3f}", "local SQNR dB": "{:.2f}",
                       "cumulative SQNR dB": "{:.2f}", "cumulative drop dB": "{:.2f}"},
        note="range: the chosen grid's ends (per-channel weights: the envelope over channels); "
             "minmax: what the minmax scheme would have chosen on the same values; range ratio = "
             "chosen width / minmax width. clipped: values beyond the grid's ends by more than "
             "half a step. An empty SQNR: no error, an all-zero tensor, or (cumulative) a weight. "
             "cumulative drop: the worst cumulative SQNR among the quantizers just upstream on the "
             "data path minus this one's.")


def _bars(rows, highlight) -> Figure:
    """Bars of the BAR_QUANTIZERS worst; a missing SQNR is NaN (no bar; None in JSON)."""
    worst = rows[:BAR_QUANTIZERS]
    labels = [r["quantizer"] for r in worst]

    def values(key):
        return [math.nan if r[key] is None else r[key] for r in worst]

    return Figure(
        "quantizers.sqnr", f"Local and cumulative SQNR of the {len(worst)} worst quantizers",
        [Panel("bars", {"labels": labels,
                        "series": [{"name": "local SQNR", "values": values("local_sqnr_db")},
                                   {"name": "cumulative SQNR",
                                    "values": values("cumulative_sqnr_db")}],
                        "xlabel": "quantizer (worst local SQNR first)", "ylabel": "SQNR (dB)",
                        "horizontal": False,
                        "highlight": [n for n in labels if n in highlight]})],
        caption="Higher is better. Local: the quantizer alone on the float tensor; cumulative: "
                "every quantizer on, against the float run (weights have none). Highlighted: "
                f"quantizers that clip more than {100 * CLIP_FINDING:g}% of their values.")


def _histogram(row, fig_id) -> Figure:
    lo, hi = row["range"]
    mm = row["minmax_range"]
    vlines = [] if mm is None else [{"x": mm[0], "label": "minmax min"},
                                    {"x": mm[1], "label": "minmax max"}]
    return Figure(
        fig_id, f"{row['quantizer']}: histogram of its "
                + ("weight values" if row["kind"] == "param" else "float values"),
        [Panel("histogram", {"edges": row["edges"], "counts": row["counts"],
                             "xlabel": "value", "ylabel": "count", "log_y": True,
                             "vlines": vlines,
                             "spans": [{"lo": lo, "hi": hi, "label": "chosen range"}]})],
        caption=f"{row['bitwidth']}-bit {_grid_name(row)}; chosen range [{lo:.4g}, {hi:.4g}]"
                + (" (envelope of the per-channel ranges)" if row["per_channel"] else "")
                + (", minmax range n/a" if mm is None else
                   f", minmax range [{mm[0]:.4g}, {mm[1]:.4g}]")
                + f"; clipped {100 * row['clipped_fraction']:.3f}%; local SQNR "
                + _db(row["local_sqnr_db"], row["zero_signal"]) + ".")


def _figure_ids(rows) -> list:
    """quantizers.hist.<slug> per row, made unique in order (two names may share a slug)."""
    return unique_ids("quantizers.hist." + slug(r["quantizer"]) for r in rows)


def _db(v, zero_signal=False) -> str:
    if v is None:
        return "n/a (all-zero tensor)" if zero_signal else "exact (no error)"
    return f"{v:.1f} dB"


def cumulative_drops(rows, upstream) -> list:
    """[(drop dB, quantizer, upstream quantizer, its dB, dB)], largest drop first, ties by name:
    for each quantizer with a cumulative SQNR and upstream quantizers with one (`upstream`), the
    worst upstream cumulative SQNR minus its own (module docstring)."""
    cum = {r["quantizer"]: r["cumulative_sqnr_db"] for r in rows
           if r["cumulative_sqnr_db"] is not None}
    drops = []
    for name in sorted(cum):
        ups = [u for u in upstream.get(name, []) if u in cum]
        if ups:
            prev = min(ups, key=lambda u: (cum[u], u))
            drops.append((cum[prev] - cum[name], name, prev, cum[prev], cum[name]))
    return sorted(drops, key=lambda d: (-d[0], d[1]))


def _findings(rows, drops, clipping) -> list:
    out = []
    worst = [r for r in rows if r["local_sqnr_db"] is not None][:FINDING_NAMES]
    if worst:
        out.append(f"Worst local SQNR (of {len(rows)} quantizers): " + "; ".join(
            f"{r['quantizer']} {r['local_sqnr_db']:.1f} dB ({r['kind']}, {r['bitwidth']}-bit"
            + (f", range ratio {r['range_ratio']:.2f}" if r["range_ratio"] is not None else "")
            + ")" for r in worst) + ".")
    falls = [d for d in drops if d[0] > 0][:3]
    if falls:
        out.append("Cumulative SQNR drops most (from the worst upstream quantizer) at: "
                   + "; ".join(
            f"{q} loses {d:.1f} dB ({before:.1f} dB at {prev} -> {after:.1f} dB)"
            for d, q, prev, before, after in falls) + ".")
    if clipping:
        out.append(f"{len(clipping)} quantizer(s) clip more than {100 * CLIP_FINDING:g}% of their "
                   "values: " + "; ".join(
                       f"{r['quantizer']} {100 * r['clipped_fraction']:.2f}%"
                       + (f" (range ratio {r['range_ratio']:.2f})"
                          if r["range_ratio"] is not None else "")
                       for r in clipping[:FINDING_NAMES]) + ".")
    else:
        out.append(f"No quantizer clips more than {100 * CLIP_FINDING:g}% of its values.")
    return out


def quantizers_section(sim, data, *, batch_size=None, top=12, bins=128, quiet=True,
                       report=None) -> Section:
    """The "quantizers" section of QuantSim `sim` on `data` (module docstring).

    report: `refq.report.quant_report(sim, data)` when the caller has it (else computed here);
    top: quantizers with a histogram figure; bins: histogram bins."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0:
        raise InputError(f"top must be an integer >= 0 (quantizers with a histogram), got {top!r}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise InputError(f"bins must be an integer >= 1, got {bins!r}")
    if isinstance(data, Iterator):
        raise InputError("the quantizers section reads the data twice (value ranges, then "
                         "histograms); give an array, a dict of arrays, a list of batches or a "
                         "re-iterable source (refq.analysis.build.Batches), not a one-shot "
                         "iterator")
    if report is None:
        names = [n for n, q in sim.quantizers.items()
                 if q.kind != "param" and sim.enabled.get(n) and n in sim.encodings]
    else:
        unknown = [r["quantizer"] for r in report["quantizers"]
                   if r["quantizer"] not in sim.quantizers or r["quantizer"] not in sim.encodings]
        if unknown:
            raise QuantError(f"the given per-quantizer report names '{unknown[0]}', which is not "
                             "a calibrated quantizer of this simulation; compute the report "
                             "(refq.report.quant_report) of this simulation")
        names = [r["quantizer"] for r in report["quantizers"]
                 if sim.quantizers[r["quantizer"]].kind != "param"]
    # the value passes first: they check every batch and name the one holding NaN
    seen = value_histograms(sim, data, names, batch_size=batch_size, bins=int(bins), quiet=quiet)
    if report is None:
        from ..report import quant_report

        report = quant_report(sim, data, batch_size=batch_size, quiet=quiet)
    rows = _rows(sim, report, seen, int(bins))
    with_cum = {r["quantizer"] for r in rows if r["cumulative_sqnr_db"] is not None}
    drops = cumulative_drops(rows, upstream_quantizers(sim, with_cum))
    clipping = sorted((r for r in rows if r["clipped_fraction"] > CLIP_FINDING),
                      key=lambda r: (-r["clipped_fraction"], r["quantizer"]))
    figures = [_bars(rows, {r["quantizer"] for r in clipping})] if rows else []
    figures += [_histogram(r, i) for r, i in zip(rows[:int(top)], _figure_ids(rows[:int(top)]))]
    return Section(
        "quantizers", "Quantizers: ranges, clipping and SQNR",
        summary="For every quantizer: the histogram of the values it sees on the data, the range "
                "its encoding chose and the one minmax would have chosen, the share of values it "
                "clips, its local SQNR (the quantizer alone) and the cumulative SQNR (every "
                "quantizer on, against the float run). A low local SQNR marks a grid too coarse "
                "for its values; a large cumulative drop marks where the network's error grows.",
        findings=_findings(rows, drops, clipping),
        tables=[_table(rows, drops)], figures=figures)
