"""The integer-model section: per numerics profile, where its integer model departs from the
integer-faithful simulation (in LSBs, layer by layer) and how much accumulator headroom each
layer keeps.

    section = integer_section(sim, data)                 # every shipped profile
    section = integer_section(sim, data, profiles=["tflite", "onnx"])

For every profile p this is `refq.fixedpoint.compare.compare(sim, p, data)` (what `refq compare`
prints), one pass over the data per profile: the integer model `lower(sim, p)` and the
integer-faithful simulation (the same integer graph with exact requantization: float64 multiplier,
round half to even; `refq.fixedpoint.run`) hold identical tensor encodings, so their integer codes
compare directly and 1 LSB is one step of the tensor's scale. Per integer layer L:
  values compared   elements of L's output over the data (`local.elements`)
  values that differ  #{i : y_p[i] ≠ y_f[i]}, y_p = L under profile p evaluated on the faithful
                    simulation's own inputs of L, y_f = L's faithful output: a difference is
                    L's own rounding, never an inherited one (`local.differ`)
  max |LSB|         max_i |y_p[i] − y_f[i]| (`local.max_lsb`); "LSB counts" lists
                    |y_p − y_f| = k : #values for every k > 0 (`local.histogram`)
  within bound      max |LSB| ≤ the number of requantizations in L, the bound a rounding-only
                    difference satisfies (see refq.fixedpoint.compare)
  downstream        the same counts for the full profile run against the full faithful run
                    (`cumulative`): what the differences become further down the network.
Per profile, the summary adds the totals (Σ over layers), the layers with a difference, the worst
layer (most differing values; ties: the first in model order), the dequantized output's SQNR
against the faithful output, 10·log10(Σ y_f² / Σ (y_p − y_f)²) in dB (inf: identical), and the
top-1 agreement of the two outputs (the worst over the graph outputs).

Accumulator headroom: `compare`'s run of the profile's integer model (`run_int`) keeps each
layer's largest |accumulator| A over all the data (so no second pass is needed). Every integer
node with an accumulator has two attributes set by the profile: `accumulator_bits` B (32 in every
shipped profile, the int32 accumulator of 8-bit kernels) and `overflow`, what an accumulator
outside the signed B-bit range does ("error" raises, "wrap" wraps modulo 2^B, "saturate" clamps;
"error" in every shipped profile, because no target defines overflow).
    headroom = B − 1 − ceil(log2(A + 1)) = B − 1 − bit_length(A)     (31 − bit_length(A) for int32)
is the number of times A could double and still fit: A·2^h < 2^(B−1) ≤ A·2^(h+1); negative when
A reached 2^(B−1) (under "wrap"/"saturate" the table then says "overflowed"). The accumulator is
the op's: bias + Σ (x − zp_x)(w − zp_w) for conv/dense, the sum for int_mean, and for int_add the
largest of its shifted inputs and their sum (TFLite shifts |x − zp| ≤ 255 left by 20 bits, so an
8-bit add keeps only 3 or more bits, by design). HEADROOM_THRESHOLD_BITS = 2: a layer under it
could overflow on an input 4x larger than any in the data; such layers are highlighted in the
headroom figure and counted in the summary.

A profile that refuses the model is listed with its one-line error, status "refused"; a profile
whose integer run fails on the data is listed with status "failed" (`compare_profiles` of
`refq.analysis.integer_profiles`, which runs the profiles; its docstring).

Figures (numbers only; see refq.analysis.document): "integer.differences" (bars: differing values
per layer, one series per profile, only layers that differ somewhere; log scale when the non-zero
counts span LOG_SPAN or more), "integer.headroom" (bars: headroom bits per layer with an
accumulator, one series per profile, layers under the threshold highlighted) and, for each of the
first MAX_PROFILE_FIGURES profiles that differ, "integer.propagation.<profile>" (bars: the
layer's own differing values against the differing values downstream). Profiles whose series are
identical share one series, named by all of them.

Data: as `compare_profiles` takes it (an array, a dict of arrays or a re-iterable of feed
batches), read once per profile; `max_samples` limits the comparison to the first samples.
"""
from __future__ import annotations

from ..progress import plural
from .document import Figure, Panel, Section, Table, slug
from .integer_profiles import compare_profiles

__all__ = ["integer_section", "HEADROOM_THRESHOLD_BITS", "LOG_SPAN", "MAX_PROFILE_FIGURES"]

#: Layers whose accumulator headroom is below this many bits are highlighted.
HEADROOM_THRESHOLD_BITS = 2
#: A bars figure uses a log scale when its largest non-zero count is this many times its smallest.
LOG_SPAN = 100
#: At most this many per-profile propagation figures (the section then has at most 8).
MAX_PROFILE_FIGURES = 6

_ID = "integer"


def _lsb_counts(histogram: dict) -> str:
    """"1:67, 2:3": |LSB difference| : number of values, by difference."""
    return ", ".join(f"{k}:{histogram[k]}" for k in sorted(histogram, key=int))


LAYER_COLUMNS = ["layer", "op", "requantizations", "values compared", "values that differ",
                 "max |LSB|", "LSB counts", "within bound", "differ downstream",
                 "max |LSB| downstream", "accumulator bits", "overflow policy",
                 "max |accumulator|", "headroom bits", "overflowed"]


def _layer_table(outcome: dict) -> Table:
    """Every integer layer of one profile: the compare counts and the accumulator statistics."""
    rep, name = outcome["report"], outcome["name"]
    rows = []
    for r in rep["layers"]:
        loc, cum, acc = r["local"], r["cumulative"], r["accumulator"] or {}
        rows.append([r["node"], r["op"], r["requantizations"], loc["elements"], loc["differ"],
                     loc["max_lsb"], _lsb_counts(loc["histogram"]), r["within_bound"],
                     cum["differ"], cum["max_lsb"], acc.get("accumulator_bits"),
                     acc.get("overflow_policy"), acc.get("max_abs_acc"),
                     acc.get("headroom_bits"), acc.get("overflowed")])
    note = ("Values that differ: the layer under this profile evaluated on the faithful "
            "simulation's inputs against the faithful layer (its own rounding); downstream: the "
            "full runs. Headroom = accumulator bits − 1 − bit_length(max |accumulator|); empty "
            "for layers without an accumulator.")
    notes = rep.get("notes") or []
    if notes:
        note += " Lowering notes: " + "; ".join(notes)
    return Table(f"{_ID}.layers.{slug(name)}", f"Profile {name}: per layer, differences from the "
                 f"integer-faithful simulation and accumulator headroom "
                 f"({plural(rep['batches'], 'batch')})", list(LAYER_COLUMNS), rows, note=note)


def _worst(layers, key):
    """The first layer (model order) with the largest key(layer), or None when it is 0 for all."""
    best = None
    for r in layers:
        if key(r) > 0 and (best is None or key(r) > key(best)):
            best = r
    return best


def _least_headroom(layers):
    """The first layer (model order) with the smallest headroom, or None without accumulators."""
    acc = [r for r in layers if r["accumulator"]]
    return min(acc, key=lambda r: r["accumulator"]["headroom_bits"]) if acc else None


SUMMARY_COLUMNS = ["profile", "status", "layers", "values compared", "values that differ",
                   "differ (ppm)", "layers with differences", "max |LSB|", "worst layer",
                   "worst layer values", "within 1 LSB per requantization", "differ downstream",
                   "max |LSB| downstream", "output SQNR vs faithful (dB)", "top-1 agreement",
                   "min headroom bits", "at layer", f"layers under {HEADROOM_THRESHOLD_BITS} bits",
                   "error"]


def _summary_row(outcome) -> list:
    if outcome["status"] != "ok":
        return [outcome["name"], outcome["status"]] + [None] * (len(SUMMARY_COLUMNS) - 3) + \
            [outcome["error"]]
    rep = outcome["report"]
    s, layers = rep["summary"], rep["layers"]
    worst = _worst(layers, lambda r: r["local"]["differ"])
    least = _least_headroom(layers)
    outs = list(rep["outputs"].values())
    sqnrs = [float("inf") if o["sqnr_vs_faithful_db"] is None else o["sqnr_vs_faithful_db"]
             for o in outs]
    agree = [o["top1_agreement_faithful"] for o in outs if o["top1_agreement_faithful"] is not None]
    under = sum(1 for r in layers if r["accumulator"]
                and r["accumulator"]["headroom_bits"] < HEADROOM_THRESHOLD_BITS)
    ppm = 1e6 * s["local_differ_elements"] / s["local_elements"] if s["local_elements"] else 0.0
    return [outcome["name"], "ok", s["nodes"], s["local_elements"], s["local_differ_elements"],
            ppm, s["local_differ_nodes"], s["local_max_lsb"],
            worst["node"] if worst else None, worst["local"]["differ"] if worst else 0,
            s["local_within_bound"], s["cumulative_differ_elements"], s["cumulative_max_lsb"],
            min(sqnrs) if sqnrs else None, min(agree) if agree else None,
            s["min_headroom_bits"], least["node"] if least else None, under, ""]


def _merged_series(named_values: list) -> list:
    """[{"name", "values"}]: profiles with identical values share one series, named by all of
    them (in order of first appearance)."""
    groups: dict = {}
    for name, values in named_values:
        groups.setdefault(tuple(values), []).append(name)
    return [{"name": ", ".join(names), "values": list(values)} for values, names in groups.items()]


def _log_scale(series: list) -> bool:
    nz = [v for s in series for v in s["values"] if v]
    return bool(nz) and max(nz) >= LOG_SPAN * min(nz)


def _by_layer(done: list, value) -> tuple:
    """(layer names in model order, [(profile, {layer: value(row)})]) over every profile's integer
    layers (the first profile's order, then layers only later profiles have); rows for which
    value() is None are left out."""
    order: dict = {}
    per = []
    for o in done:
        vals = {}
        for r in o["report"]["layers"]:
            order.setdefault(r["node"], len(order))
            v = value(r)
            if v is not None:
                vals[r["node"]] = v
        per.append((o["name"], vals))
    return list(order), per


def _differences_figure(done: list):
    layers, per = _by_layer(done, lambda r: r["local"]["differ"])
    keep = [n for n in layers if any(v.get(n, 0) for _, v in per)]
    if not keep:
        return None
    series = _merged_series([(p, [v.get(n, 0) for n in keep]) for p, v in per])
    return Figure(f"{_ID}.differences", "Values that differ from the integer-faithful simulation, "
                  "per layer", [Panel("bars", {
                      "labels": keep, "series": series, "xlabel": "layer",
                      "ylabel": "values that differ (own rounding)", "horizontal": False,
                      "highlight": [], "log_y": _log_scale(series)})],
                  caption="Each layer evaluated on the faithful simulation's inputs, so a bar is "
                  "that layer's own rounding; layers without a difference under any profile are "
                  "left out (every layer is in the tables).")


def _headroom_figure(done: list):
    layers, per = _by_layer(done, lambda r: (r["accumulator"] or {}).get("headroom_bits"))
    names = [n for n in layers if all(n in v for _, v in per)]
    if not names:
        return None
    values = [(p, [v[n] for n in names]) for p, v in per]
    low = [n for i, n in enumerate(names) if any(v[i] < HEADROOM_THRESHOLD_BITS for _, v in values)]
    return Figure(f"{_ID}.headroom", "Accumulator headroom per layer", [Panel("bars", {
        "labels": names, "series": _merged_series(values), "xlabel": "layer",
        "ylabel": "headroom (bits)", "horizontal": False, "highlight": low})],
        caption=f"headroom = accumulator bits − 1 − bit_length(max |accumulator|) on the data; "
        f"highlighted: under {HEADROOM_THRESHOLD_BITS} bits under some profile (layers with an "
        "accumulator under every profile; all of them are in the tables).")


def _propagation_figures(done: list) -> list:
    """One figure per group of profiles with identical per-layer counts (the first
    MAX_PROFILE_FIGURES groups that differ anywhere)."""
    groups: dict = {}
    for o in done:
        layers = o["report"]["layers"]
        key = tuple((r["local"]["differ"], r["cumulative"]["differ"]) for r in layers)
        if any(a or b for a, b in key):
            groups.setdefault(key, []).append(o)
    figures = []
    for group in list(groups.values())[:MAX_PROFILE_FIGURES]:
        layers = group[0]["report"]["layers"]
        keep = [r for r in layers if r["local"]["differ"] or r["cumulative"]["differ"]]
        series = [{"name": "own rounding", "values": [r["local"]["differ"] for r in keep]},
                  {"name": "downstream", "values": [r["cumulative"]["differ"] for r in keep]}]
        names = ", ".join(o["name"] for o in group)
        figures.append(Figure(
            f"{_ID}.propagation.{slug(group[0]['name'])}",
            f"Profile{'s' if len(group) > 1 else ''} {names}: own rounding vs downstream",
            [Panel("bars", {"labels": [r["node"] for r in keep], "series": series,
                            "xlabel": "layer", "ylabel": "values that differ",
                            "horizontal": False, "highlight": [],
                            "log_y": _log_scale(series)})],
            caption="Own rounding: the layer on the faithful inputs; downstream: the full "
            "profile run against the full faithful run. Layers where both are 0 are left out."))
    return figures


def _findings(outcomes: list, done: list) -> list:
    out = [] if done else ["No profile lowers this model and runs on these data; the errors "
                           "follow."]
    if done:
        total = {o["name"]: o["report"]["summary"]["local_differ_elements"] for o in done}
        top = max(total.values())
        if top == 0:
            out.append("Every profile equals the integer-faithful simulation on every layer.")
        else:
            most = [o for o in done if total[o["name"]] == top]
            s = most[0]["report"]["summary"]
            worst = _worst(most[0]["report"]["layers"], lambda r: r["local"]["differ"])
            out.append(f"{', '.join(o['name'] for o in most)} differ{'s' if len(most) == 1 else ''}"
                       f" most from the integer-faithful simulation: {top:,} of "
                       f"{s['local_elements']:,} values in {s['local_differ_nodes']} of "
                       f"{s['nodes']} layers, at most {s['local_max_lsb']} LSB; worst layer "
                       f"{worst['node']} ({worst['op']}): {worst['local']['differ']:,} values.")
            low = min(v for v in total.values() if v)
            if low < top:
                fewest = [o for o in done if total[o["name"]] == low]
                s = fewest[0]["report"]["summary"]
                out.append(f"Fewest differences (not zero): {', '.join(o['name'] for o in fewest)}"
                           f", {low:,} values in {s['local_differ_nodes']} layer(s).")
        exact = [o["name"] for o in done if o["report"]["summary"]["local_differ_elements"] == 0]
        if exact and len(exact) < len(done):
            out.append(f"{', '.join(exact)}: bit for bit the integer-faithful simulation on every "
                       "layer.")
        for o in done:
            bad = o["report"]["summary"]["local_out_of_bound"]
            if bad:
                out.append(f"{o['name']}: {len(bad)} layer(s) exceed 1 LSB per requantization "
                           f"(not a rounding-only difference): {', '.join(bad[:5])}"
                           + (" ..." if len(bad) > 5 else "") + ".")
        out += _headroom_findings(done)
    for o in outcomes:
        if o["status"] == "refused":
            out.append(f"{o['name']} refuses the model: {o['error']}")
        elif o["status"] == "failed":
            out.append(f"{o['name']} fails on the data: {o['error']}")
    return out


def _headroom_findings(done: list) -> list:
    least = []   # (headroom, model index, layer, profile)
    for o in done:
        for i, r in enumerate(o["report"]["layers"]):
            if r["accumulator"]:
                least.append((r["accumulator"]["headroom_bits"], i, r, o["name"]))
    if not least:
        return []
    h, i, r, _ = min(least, key=lambda t: (t[0], t[1]))
    where = [p for hh, ii, _, p in least if hh == h and ii == i]
    acc = r["accumulator"]
    out = [f"Least accumulator headroom: {r['node']} ({r['op']}), {h} bits under "
           f"{', '.join(where)} (max |accumulator| {acc['max_abs_acc']:,} in "
           f"{acc['accumulator_bits']} bits)."]
    by_op: dict = {}
    for hh, ii, rr, _ in sorted(least, key=lambda t: (t[0], t[1])):
        by_op.setdefault(rr["op"], (hh, rr["node"]))
    if len(by_op) > 1:
        out.append("Least headroom by op: " + ", ".join(
            f"{op} {hh} bits ({node})" for op, (hh, node) in sorted(by_op.items())) + ".")
    low = sorted({rr["node"] for hh, _, rr, _ in least if hh < HEADROOM_THRESHOLD_BITS})
    if low:
        out.append(f"{len(low)} layer(s) keep under {HEADROOM_THRESHOLD_BITS} bits of headroom: "
                   f"{', '.join(low[:8])}" + (" ..." if len(low) > 8 else "") + ".")
    over = sorted({(p, rr["node"]) for _, _, rr, p in least if rr["accumulator"]["overflowed"]})
    if over:
        out.append("Accumulators overflowed (wrapped or saturated): "
                   + ", ".join(f"{node} under {p}" for p, node in over[:8]) + ".")
    return out


def integer_section(sim, data, *, profiles=None, batch_size=None, quiet=True,
                    max_samples: int | None = None) -> Section:
    """The integer-model section (module docstring) of calibrated QuantSim `sim` on `data`, for
    `profiles` (names or Profile records; default: every shipped profile). batch_size: rows per
    batch when `data` is an array or dict of arrays. max_samples: compare on the first
    max_samples samples only (default: all; the cost is about one traced integer run, one
    faithful run and one simulation per sample and profile). quiet: no progress on stderr.
    InputError for empty or non-finite data; FixedPointError for an unknown profile name."""
    outcomes, batches = compare_profiles(sim, data, profiles=profiles, batch_size=batch_size,
                                         quiet=quiet, max_samples=max_samples)
    done = [o for o in outcomes if o["status"] == "ok"]
    tables = [Table(f"{_ID}.profiles", "Per profile: differences from the integer-faithful "
                    "simulation and the least accumulator headroom", list(SUMMARY_COLUMNS),
                    [_summary_row(o) for o in outcomes],
                    formats={"differ (ppm)": "{:.1f}", "output SQNR vs faithful (dB)": "{:.1f}",
                             "top-1 agreement": "{:.4f}"},
                    note="Values that differ: Σ over layers of the values each layer's own "
                    "rounding changes (ppm of the values compared); downstream: the full runs. "
                    "SQNR inf: identical outputs. Status refused: the profile does not lower "
                    "the model (error column).")]
    tables += [_layer_table(o) for o in done]
    figures = []
    if done:
        figures += [f for f in (_differences_figure(done), _headroom_figure(done)) if f]
        figures += _propagation_figures(done)
    samples = f"{plural(batches.samples, 'sample')} in {plural(batches.batches, 'batch')}" \
        if done else "no profile ran"
    summary = ("Each numerics profile's integer model against the integer-faithful simulation "
               "(the same codes with exact requantization): per layer, the values its own "
               "rounding changes and by how many LSBs, what they become downstream, and the "
               "accumulator headroom, bits − 1 − bit_length(max |accumulator|) "
               f"({samples}).")
    return Section(_ID, "Integer model", summary, _findings(outcomes, done), tables, figures)
