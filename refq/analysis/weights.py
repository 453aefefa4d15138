"""The weights section: per-output-channel weight ranges of every layer, stage by stage.

Input: `stages`, a list of (label, Graph) in the order they happened, e.g. the imported model,
the model with its batch norms folded and the model after cross-layer equalization. Layers are
the nodes with a weight parameter (`refq.quant.placement.PER_CHANNEL_WEIGHTED`: conv2d, including
depthwise and grouped, conv_transpose2d, dense, gemm), matched across stages by node name (BN
folding and CLE keep layer names); a layer missing from a stage is left blank there.

Definitions, for one layer's weight W with C output channels. The output-channel axis is the one
the per-channel quantizers use (`refq.quant.placement.weight_output_axis`): axis 0 (conv2d and
conv_transpose2d OHWI, dense [out, in], gemm with transB = 1) and axis 1 for gemm with
transB = 0 (ONNX's B [K, P]). W_c is the flat vector of channel c's weights, in float64.
    channel statistics  min_c = min W_c, max_c = max W_c, mean_c = Σ W_c / n,
                        std_c = sqrt(Σ (W_c − mean_c)² / (n − 1))   (NaN when n = 1)
        These are the columns of pandas' `DataFrame.describe()` that AIMET plots per output
        channel (`aimet_torch/plotting_utils.py::get_weights` + `describe().T`; std is pandas'
        sample standard deviation).
    range               r_c = max_c − min_c
    relative range      rel_c = r_c / min{r_k : r_k > 0}
        AIMET's `identify_problematic_output_channels` divides by the smallest range as it is.
        A channel whose weights are all equal (r_c = 0, typically a dead all-zero channel) is
        exactly representable on any grid; refq gives it rel_c = 0 and divides the others by the
        smallest non-zero range (AIMET's pandas division would give inf and NaN there). When every
        channel has r_c = 0, every rel_c = 1. Only zero ranges make refq and AIMET differ.
    range ratio         max_c rel_c = max_c r_c / min{r_k > 0}   (1 for a single channel or
                        when every range is 0)
    outlier channels    {c : rel_c > Q3 + 1.5·(Q3 − Q1)}, Q1 and Q3 the 0.25 and 0.75 quantiles
        of rel over all channels with linear interpolation: sorted values v_0 ≤ .. ≤ v_{C−1},
        h = (C − 1)·p, Q = v_⌊h⌋ + (h − ⌊h⌋)·(v_⌊h⌋+1 − v_⌊h⌋). This is AIMET's
        `detect_outlier_channels` (quic/aimet, TrainingExtensions/torch/src/python/aimet_torch/
        plotting_utils.py: `Series.quantile(0.25)` / `quantile(0.75)`, pandas' default
        interpolation "linear", the same as NumPy's default method) with a strict ">". Only the
        upper fence is used, as in AIMET.
    step ratio          s = max_k a_k / min{a_c : a_c > 0},  a_c = max |W_c|
        how much coarser a per-tensor grid is than the worst channel's own per-channel grid. refq's
        (and AIMET's) default weight grids are symmetric: step = a / (2^(b−1) − 1) per tensor
        (a = max_k a_k) or per channel (a = a_c), so the ratio of the steps is the same for every
        bitwidth b, 8 included; log2(s) is the number of bits the per-tensor grid loses on that
        channel. Channels with a_c = 0 are all zero, exact on any grid, and left out (s = 1 when
        every channel is zero).

The section holds: one table over every layer and stage (min, max, range ratio, outlier count and
step ratio per stage); findings naming the layers whose range ratio grows or shrinks most between
consecutive stages (GROWTH_FACTOR or more), from the first stage to the last, and the worst layers
of the last stage; a figure per layer for the `top` layers with the largest range ratio in the last
stage, then for up to CHANGED_FIGURES more whose range ratio changes most (GROWTH_FACTOR or more,
up or down) between two consecutive stages, so a layer CLE repaired is shown beside the ones it
left wide (one "lines" panel per stage: min, max, mean per output channel, outlier channels
marked); and an overview bar chart of the range ratio of every layer, one series per stage.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError, ParamError, ShapeError
from ..graph import Graph
from ..progress import progress
from ..quant.placement import PER_CHANNEL_WEIGHTED, is_depthwise, weight_output_axis
from .document import Figure, Panel, Section, Table, slug, unique_ids

__all__ = ["weights_section", "channel_stats", "channel_ranges", "relative_ranges",
           "range_ratio", "quartile_fence", "outlier_channels", "step_ratio", "layer_summary",
           "SECTION_ID", "OUTLIER_IQR_FACTOR", "GROWTH_FACTOR", "FINDING_LAYERS"]

SECTION_ID = "weights"
OUTLIER_IQR_FACTOR = 1.5
"""Outlier fence Q3 + 1.5·IQR: AIMET's `detect_outlier_channels` (Tukey's rule)."""
GROWTH_FACTOR = 2.0
CHANGED_FIGURES = 3
"""A change of a layer's range ratio between stages is named in the findings from this factor on."""
FINDING_LAYERS = 5
"""At most this many layers are named in one finding."""


def _channels_first(weight, axis: int) -> np.ndarray:
    """W as float64 [C, n]: the output-channel axis first, every other axis flattened."""
    w = np.asarray(weight)
    if w.ndim < 1 or w.size == 0:
        raise ShapeError(f"weight statistics need a non-empty array with an output-channel axis; "
                         f"got shape {list(w.shape)}")
    if not -w.ndim <= axis < w.ndim:
        raise ShapeError(f"weight of shape {list(w.shape)} has no axis {axis}; the output-channel "
                         f"axis must be one of its {w.ndim} axes")
    w = np.moveaxis(w.astype(np.float64, copy=False), axis, 0)
    return w.reshape(w.shape[0], -1)


def channel_stats(weight, axis: int = 0) -> dict:
    """Per-output-channel {"min", "max", "mean", "std"} (float64 arrays [C]) of `weight`, whose
    output channels lie along `axis` (module docstring: std is the sample std, NaN for one value
    per channel). NaN/Inf weights give NaN statistics; `weights_section` refuses them first."""
    w = _channels_first(weight, axis)
    n = w.shape[1]
    mean = w.mean(axis=1)
    if n > 1:
        std = np.sqrt(np.square(w - mean[:, None]).sum(axis=1) / (n - 1))
    else:
        std = np.full(w.shape[0], np.nan)
    return {"min": w.min(axis=1), "max": w.max(axis=1), "mean": mean, "std": std}


def channel_ranges(weight, axis: int = 0) -> np.ndarray:
    """r_c = max W_c − min W_c per output channel (float64 [C])."""
    w = _channels_first(weight, axis)
    return w.max(axis=1) - w.min(axis=1)


def _relative(ranges: np.ndarray) -> np.ndarray:
    """rel_c = r_c / (smallest non-zero r); zero ranges stay 0; all ones when every r is 0."""
    positive = ranges[ranges > 0]
    if positive.size == 0:
        return np.ones_like(ranges)
    return ranges / positive.min()


def relative_ranges(weight, axis: int = 0) -> np.ndarray:
    """rel_c = r_c / min{r_k > 0} per output channel (AIMET's relative weight range; zero ranges:
    module docstring)."""
    return _relative(channel_ranges(weight, axis))


def range_ratio(rel) -> float:
    """max_c rel_c: widest channel range over the narrowest non-zero one (1 for all-zero ranges)."""
    rel = np.asarray(rel, np.float64)
    return float(rel.max()) if rel.size and rel.max() > 0 else 1.0


def quartile_fence(rel) -> tuple:
    """(Q1, Q3, Q3 + 1.5·(Q3 − Q1)) of `rel`, quantiles by linear interpolation (pandas' and
    NumPy's default)."""
    rel = np.asarray(rel, np.float64).ravel()
    if rel.size == 0:
        raise ShapeError("outlier channels need at least one channel")
    q1, q3 = np.quantile(rel, [0.25, 0.75])
    return float(q1), float(q3), float(q3 + OUTLIER_IQR_FACTOR * (q3 - q1))


def outlier_channels(rel) -> np.ndarray:
    """Indices (ascending, int64) of the channels with rel_c > Q3 + 1.5·IQR (AIMET's rule)."""
    rel = np.asarray(rel, np.float64).ravel()
    return np.flatnonzero(rel > quartile_fence(rel)[2]).astype(np.int64)


def step_ratio(weight, axis: int = 0) -> float:
    """max_k a_k / min{a_c > 0}, a_c = max |W_c|: a per-tensor symmetric grid's step over the worst
    channel's per-channel step, any bitwidth (1 when every channel is zero)."""
    a = np.abs(_channels_first(weight, axis)).max(axis=1)
    positive = a[a > 0]
    return float(a.max() / positive.min()) if positive.size else 1.0


def _op_kind(node) -> str:
    """The op, with depthwise / grouped convolutions said so."""
    groups = int(node.attrs.get("groups", 1) or 1)
    if node.op == "conv2d" and is_depthwise(node):
        return "conv2d (depthwise)"
    if node.op in ("conv2d", "conv_transpose2d") and groups > 1:
        return f"{node.op} (groups {groups})"
    if node.op == "gemm":
        return f"gemm (transB {int(node.attrs.get('transB', 0))})"
    return node.op


def layer_summary(node, stage: str = "") -> dict:
    """Everything the section shows about one layer in one stage: op, axis, channels, min, max,
    per-channel statistics, relative ranges, range ratio, outlier channels, step ratio.
    ParamError naming the stage, layer and parameter when the weight holds NaN or Inf."""
    w = np.asarray(node.params["weight"])
    bad = ~np.isfinite(w) if w.dtype.kind in "fc" else np.zeros(w.shape, bool)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"stage '{stage}', " if stage else ""
        raise ParamError(f"weights section: {where}layer '{node.name}' ({node.op}): parameter "
                         f"'weight' {list(w.shape)} holds {int(bad.sum())} NaN/Inf value(s), the "
                         f"first at index {first}; fix the model (re-import or re-run the step "
                         f"that produced it) before reporting its weight ranges")
    axis = weight_output_axis(node)
    stats = channel_stats(w, axis)
    rel = _relative(stats["max"] - stats["min"])
    return {"op": _op_kind(node), "axis": axis, "channels": int(rel.size),
            "min": float(stats["min"].min()), "max": float(stats["max"].max()),
            "stats": stats, "relative": rel, "range_ratio": range_ratio(rel),
            "outliers": outlier_channels(rel), "step_ratio": step_ratio(w, axis)}


def _check_stages(stages) -> list:
    """[(label, graph)] after checking the shape of `stages` (InputError naming the entry)."""
    if isinstance(stages, (str, bytes, Graph)) or not hasattr(stages, "__iter__"):
        raise InputError("weights section: `stages` must be a list of (label, Graph) pairs in the "
                         f"order they happened; got {type(stages).__name__}")
    stages = list(stages)
    if not stages:
        raise InputError("weights section: no stages given; pass at least one (label, Graph), "
                         "e.g. [('imported', graph)]")
    seen = set()
    for i, entry in enumerate(stages):
        if not (isinstance(entry, tuple) and len(entry) == 2):
            raise InputError(f"weights section: stage {i} is {type(entry).__name__}, not a "
                             f"(label, Graph) pair")
        label, graph = entry
        if not isinstance(label, str) or not label.strip():
            raise InputError(f"weights section: stage {i} has label {label!r}; give a non-empty "
                             f"string such as 'BN folded'")
        if not isinstance(graph, Graph):
            raise InputError(f"weights section: stage {i} ('{label}') is a "
                             f"{type(graph).__name__}, not a refq Graph; pass the model itself "
                             f"(refq.load or an import), not a file name or a simulation")
        if label in seen:
            raise InputError(f"weights section: stage label '{label}' is used twice; give each "
                             f"stage its own label")
        seen.add(label)
    return stages


def _layers(graph) -> list:
    return [n for n in graph.nodes if n.op in PER_CHANNEL_WEIGHTED and "weight" in n.params]


def _g(x: float) -> str:
    return f"{x:.3g}"


def _kind(op: str) -> str:
    """The op as a finding names it: "depthwise" for a depthwise conv2d, else the op alone."""
    return "depthwise" if op == "conv2d (depthwise)" else op.split(" ")[0]


def _ratio_change(a: str, b: str, names: list, table: dict, order: dict, grows: bool) -> str | None:
    """"From a to b, the range ratio grows most in L (op; r_a -> r_b, xf), ..." or None."""
    both = [n for n in names if a in table[n] and b in table[n]]
    change = {n: table[n][b]["range_ratio"] / table[n][a]["range_ratio"] for n in both}
    if grows:
        picked = [n for n in both if change[n] >= GROWTH_FACTOR]
        picked.sort(key=lambda n: (-change[n], order[n]))
    else:
        picked = [n for n in both if change[n] <= 1 / GROWTH_FACTOR]
        picked.sort(key=lambda n: (change[n], order[n]))
    if not picked:
        return None
    shown = picked[:FINDING_LAYERS]
    parts = [f"{n} ({_kind(table[n][b]['op'])}; {_g(table[n][a]['range_ratio'])} → "
             f"{_g(table[n][b]['range_ratio'])}, {_g(change[n] if grows else 1 / change[n])}x)"
             for n in shown]
    more = f" and {len(picked) - len(shown)} more" if len(picked) > len(shown) else ""
    verb = "grows" if grows else "shrinks"
    return (f"From {a} to {b} the per-channel range ratio {verb} most in " + ", ".join(parts)
            + more + ".")


def _findings(labels: list, names: list, table: dict, order: dict) -> list:
    out = []
    pairs = list(zip(labels, labels[1:]))
    if len(labels) > 2:
        pairs.append((labels[0], labels[-1]))
    for a, b in pairs:
        found = [f for f in (_ratio_change(a, b, names, table, order, True),
                             _ratio_change(a, b, names, table, order, False)) if f]
        out += found or [f"From {a} to {b} no layer's range ratio changes by "
                         f"{_g(GROWTH_FACTOR)}x or more."]
    last = labels[-1]
    present = [n for n in names if last in table[n]]
    worst = sorted(present, key=lambda n: (-table[n][last]["step_ratio"], order[n]))[:3]
    if worst:
        out.append(f"In {last}, a per-tensor grid hurts most in " + ", ".join(
            f"{n} (step {_g(table[n][last]['step_ratio'])}x its narrowest channel's, "
            f"{np.log2(table[n][last]['step_ratio']):.1f} bits lost; range ratio "
            f"{_g(table[n][last]['range_ratio'])}, {len(table[n][last]['outliers'])} of "
            f"{table[n][last]['channels']} channels outliers)" for n in worst) + ".")
        with_out = [n for n in present if len(table[n][last]["outliers"])]
        out.append(f"In {last}, {len(with_out)} of {len(present)} layers have outlier channels "
                   f"(relative range > Q3 + {OUTLIER_IQR_FACTOR}·IQR).")
    return out


def _table(labels: list, names: list, table: dict) -> Table:
    columns = ["layer", "op", "channels"]
    formats = {}
    for s in labels:
        cols = [f"min ({s})", f"max ({s})", f"range ratio ({s})", f"outliers ({s})",
                f"step ratio ({s})"]
        columns += cols
        formats.update({cols[2]: "{:.3g}", cols[4]: "{:.3g}"})
    rows = []
    for n in names:
        first = next(table[n][s] for s in labels if s in table[n])
        row = [n, first["op"], first["channels"]]
        for s in labels:
            t = table[n].get(s)
            row += ([t["min"], t["max"], t["range_ratio"], int(len(t["outliers"])),
                     t["step_ratio"]] if t else [None] * 5)
        rows.append(row)
    return Table(SECTION_ID + ".layers", "Per-layer weight ranges at each stage", columns, rows,
                 formats,
                 note="range ratio: widest / narrowest output-channel range (max − min); "
                 "outliers: channels whose relative range exceeds Q3 + 1.5·IQR; step ratio: "
                 "per-tensor symmetric step / the narrowest channel's own step (log2 = bits lost). "
                 "Empty cells: the layer is not in that stage.")


def _layer_figure(name: str, labels: list, entry: dict) -> Figure:
    panels = []
    for s in labels:
        t = entry.get(s)
        if t is None:
            continue
        x = list(range(t["channels"]))
        st = t["stats"]
        panels.append(Panel("lines", {
            "series": [{"name": k, "x": x, "y": st[k].tolist(), "style": "line"}
                       for k in ("min", "max", "mean")],
            "xlabel": "output channel", "ylabel": "weight", "log_y": False,
            "markers": [{"x": int(c), "y": float(st["max"][c]), "label": str(int(c))}
                        for c in t["outliers"]]},
            title=f"{s}: range ratio {_g(t['range_ratio'])}, {len(t['outliers'])} outliers"))
    op = next(entry[s]["op"] for s in labels if s in entry)
    op = op.replace(" (", ", ").rstrip(")")
    return Figure(f"{SECTION_ID}.ranges.{slug(name)}", f"{name} ({op}): weight range per output "
                  "channel", panels, caption="min, max and mean of each output channel's weights "
                  "at each stage; marked channels are outliers (relative range > Q3 + 1.5·IQR).")


def _overview(labels: list, names: list, table: dict) -> Figure:
    last = labels[-1]
    highlight = [n for n in names if last in table[n] and len(table[n][last]["outliers"])]
    series = [{"name": s, "values": [table[n][s]["range_ratio"] if s in table[n] else None
                                     for n in names]} for s in labels]
    return Figure(SECTION_ID + ".overview", "Range ratio per layer", [Panel("bars", {
        "labels": list(names), "series": series,
        "xlabel": "range ratio (widest / narrowest channel range)", "ylabel": "layer",
        "horizontal": True,
        "highlight": highlight})], caption=f"one bar per stage; highlighted layers have outlier "
        f"channels in {last}.")


def _most_changed(labels, names, table, order, exclude) -> list:
    """Up to CHANGED_FIGURES layers not in `exclude` whose range ratio changes by GROWTH_FACTOR or
    more between two consecutive stages, largest change (either way) first, ties in model order."""
    change = {}
    for n in names:
        ratios = [table[n][s]["range_ratio"] for s in labels if s in table[n]]
        steps = [max(b / a, a / b) for a, b in zip(ratios, ratios[1:]) if a > 0 and b > 0]
        if steps and max(steps) >= GROWTH_FACTOR and n not in exclude:
            change[n] = max(steps)
    return sorted(change, key=lambda n: (-change[n], order[n]))[:CHANGED_FIGURES]


def weights_section(stages, *, top: int = 8, quiet: bool = True) -> Section:
    """The "weights" section (module docstring) of `stages`: [(label, Graph)] in the order they
    happened; figures for the `top` layers with the largest range ratio in the last stage and the
    layers whose ratio changes most between stages."""
    stages = _check_stages(stages)
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0:
        raise InputError(f"weights section: top must be a whole number >= 0; got {top!r}")
    labels = [label for label, _ in stages]
    table, names = {}, []
    for label, graph in progress(stages, total=len(stages), desc="weights", quiet=quiet,
                                 unit="stage"):
        for node in _layers(graph):
            if node.name not in table:
                table[node.name] = {}
                names.append(node.name)
            table[node.name][label] = layer_summary(node, label)
    order = {n: i for i, n in enumerate(names)}
    title = "Weights: per-channel ranges" + (" across " + ", ".join(labels)
                                             if len(labels) > 1 else "")
    summary = ("Per-output-channel weight ranges of every conv/dense layer"
               + (f" at each stage ({', '.join(labels)})." if len(labels) > 1 else ".")
               + " Range ratio = widest / narrowest channel range (max − min); outlier channels "
               "have a range above Q3 + 1.5·IQR of the layer's relative ranges (AIMET's rule); "
               "step ratio = how much coarser a per-tensor 8-bit grid is than the narrowest "
               "channel's own (log2 of it = bits lost), large where per-tensor quantization hurts.")
    if not names:
        return Section(SECTION_ID, title, summary, ["No layer with a weight (conv2d, dense, "
                       "conv_transpose2d, gemm) in " + ", ".join(labels) + "."],
                       [_table(labels, names, table)], [])
    last = labels[-1]
    ranked = sorted((n for n in names if last in table[n]),
                    key=lambda n: (-table[n][last]["range_ratio"], order[n]))
    figures = [_layer_figure(n, labels, table[n]) for n in
               ranked[:top] + _most_changed(labels, names, table, order, exclude=ranked[:top])]
    for figure, fid in zip(figures, unique_ids(f.id for f in figures)):
        figure.id = fid
    figures.append(_overview(labels, names, table))
    return Section(SECTION_ID, title, summary, _findings(labels, names, table, order),
                   [_table(labels, names, table)], figures)
