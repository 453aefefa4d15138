"""Per-quantizer error report of a quantization simulation: where the quantization noise comes from.

For every quantizer, streamed over the data batch by batch:
- local SQNR: the quantizer alone on its float input. Activations: x = the float run's tensor,
  x̂ = qdq(x); parameters: x = the weight, x̂ = qdq(w). SQNR = 10·log10(Σx² / Σ(x − x̂)²) dB.
- cumulative SQNR: everything on. x̂ = the simulated run's tensor at the same place, against the float
  run's tensor (what the network has accumulated up to there). Model outputs are listed too.
- rmse/scale: sqrt(mean((x − qdq(x))²)) / scale (per-channel weights: the error in grid steps,
  sqrt(mean(((x − qdq(x))/scale_c)²))). Rounding alone gives 1/√12 ≈ 0.289 (uniform error
  over one step); clipping or a grid much coarser than the data's detail pushes it up, a tensor
  whose values sit on few grid points pulls it down.
- clipped: the fraction of values beyond the grid's ends by more than half a step.
- per-channel weight SQNR (and its minimum) for per-channel and per-tensor weights alike.
The float reference runs in the simulation's dtype (float32 for AIMET numerics). Quantizers are
listed worst first (lowest local SQNR). SQNR is None when there is no error ("exact") or when the
float tensor is all zero (SQNR undefined); the table tells the two apart.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import QuantError
from .quant.encoding import quantize_dequantize
from .progress import progress
from .runtime import run as run_graph

__all__ = ["quant_report", "format_report", "clipped_mask", "IDEAL_RMSE_OVER_SCALE"]

IDEAL_RMSE_OVER_SCALE = 1 / math.sqrt(12)


def _sqnr(signal: float, noise: float):
    """SQNR in dB; None when there is no noise ("exact") or no signal (undefined)."""
    if noise == 0 or signal == 0:
        return None
    return 10 * math.log10(signal / noise)


class _Acc:
    """Running sums for one tensor: Σx², Σ(local error)², Σ(cumulative error)², count, clipped."""

    def __init__(self):
        self.sig = self.local = self.cum = 0.0
        self.n = self.clipped = 0

    def add(self, x, xq_local, x_sim, enc):
        x64 = x.astype(np.float64)
        self.sig += float(np.sum(x64 * x64))
        if xq_local is not None:
            d = x64 - xq_local
            self.local += float(np.sum(d * d))
            self.clipped += int(np.sum(clipped_mask(x64, enc)))
        d = x64 - x_sim
        self.cum += float(np.sum(d * d))
        self.n += x.size


def clipped_mask(x, enc) -> np.ndarray:
    """Where `x` lies beyond the ends of `enc`'s grid by more than half a step (a per-channel
    encoding: channel on axis 0 of `x`), in float64."""
    shape = (-1,) + (1,) * (x.ndim - 1) if enc.axis is not None else ()
    half = np.reshape(enc.scale.astype(np.float64), shape) / 2
    lo = np.reshape(enc.min.astype(np.float64), shape) - half
    hi = np.reshape(enc.max.astype(np.float64), shape) + half
    return (x < lo) | (x > hi)


def _weight_rows(sim, q):
    node = sim.graph.node(q.node)
    w = node.params[q.param].astype(np.float32)
    wq = quantize_dequantize(w, sim.encodings[q.name], sim.numerics).astype(np.float64)
    w = w.astype(np.float64)
    rows_w = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(-1, 1)
    rows_q = wq.reshape(rows_w.shape)
    return rows_w, rows_q


def quant_report(sim, data, batch_size: int | None = None, quiet: bool = True) -> dict:
    """The report dict (JSON-ready) of QuantSim `sim` on `data` (see `iterate_batches`)."""
    from .data_io import iterate_batches

    dtype = sim.numerics.dtype.type
    tq = {t: name for t, name in sim.tensor_quantizers().items() if sim.enabled.get(name)}
    iq = {k: name for k, name in sim.input_quantizers().items() if sim.enabled.get(name)}
    acc = {t: _Acc() for t in list(tq) + [f"{n}:input{i}" for n, i in iq]}
    outputs = {t: _Acc() for t in sim.graph.outputs}
    agree = total = 0
    batches = 0
    source = "the data"
    for feeds in progress(iterate_batches(data, sim.graph, batch_size), desc="report", quiet=quiet):
        source = getattr(feeds, "source", source)
        ref = run_graph(sim.graph, feeds, trace=True, dtype=dtype)
        got = sim.run(feeds, trace=True)
        for t, name in tq.items():
            enc = sim.encodings[name]
            acc[t].add(ref[t], quantize_dequantize(ref[t], enc, sim.numerics).astype(np.float64),
                       got[t].astype(np.float64), enc)
        for (node, i), name in iq.items():
            t = sim.graph.node(node).inputs[i]
            enc = sim.encodings[name]
            acc[f"{node}:input{i}"].add(
                ref[t], quantize_dequantize(ref[t], enc, sim.numerics).astype(np.float64),
                quantize_dequantize(got[t], enc, sim.numerics).astype(np.float64), enc)
        for t in sim.graph.outputs:
            outputs[t].add(ref[t], None, got[t].astype(np.float64), None)
            if ref[t].ndim == 2 and ref[t].shape[1] > 1:
                agree += int(np.sum(ref[t].argmax(1) == got[t].argmax(1)))
                total += ref[t].shape[0]
        batches += 1
    if batches == 0:
        raise QuantError(f"{source}: holds no samples; give at least one image of data")
    bad = [t for t, a in {**acc, **outputs}.items()
           if not all(math.isfinite(v) for v in (a.sig, a.local, a.cum))]
    if bad:
        raise QuantError(f"{source}: tensor '{bad[0]}' is not finite in the float or the simulated "
                         f"run ({len(bad)} tensors); check the data and the model's ranges")
    rows = []
    for name, q in sim.quantizers.items():
        if not sim.enabled.get(name) or name not in sim.encodings:
            continue
        enc = sim.encodings[name]
        row = {"quantizer": name, "kind": q.kind, "bitwidth": enc.bitwidth,
               "symmetric": enc.symmetric, "per_channel": enc.axis is not None}
        if q.kind == "param":
            rw, rq = _weight_rows(sim, q)
            sig_c = np.sum(rw * rw, axis=1)
            noise_c = np.sum((rw - rq) ** 2, axis=1)
            scales = np.broadcast_to(enc.scale.astype(np.float64), (rw.shape[0],)) \
                if enc.axis is not None else np.full(rw.shape[0], float(enc.scale))
            ch = [_sqnr(float(s), float(n)) for s, n in zip(sig_c, noise_c)]
            finite = [c for c in ch if c is not None]
            clipped = int(np.sum(clipped_mask(rw, enc)))
            row.update(tensors=[f"{q.node}/{q.param}"],
                       local_sqnr_db=_sqnr(float(sig_c.sum()), float(noise_c.sum())),
                       cumulative_sqnr_db=None,
                       rmse_over_scale=math.sqrt(float(np.sum(noise_c / scales ** 2)) / rw.size),
                       clipped_fraction=clipped / rw.size,
                       channel_sqnr_db=ch, min_channel_sqnr_db=min(finite) if finite else None,
                       scale=float(np.min(enc.scale)))
        else:
            keys = q.tensors if q.kind == "activation" else [f"{q.node}:input{q.input_index}"]
            a = [acc[k] for k in keys if k in acc]
            if not a:
                continue
            sig, loc = sum(x.sig for x in a), sum(x.local for x in a)
            n, clipped = sum(x.n for x in a), sum(x.clipped for x in a)
            row.update(tensors=list(q.tensors), zero_signal=sig == 0, local_sqnr_db=_sqnr(sig, loc),
                       cumulative_sqnr_db=_sqnr(sig, sum(x.cum for x in a)),
                       rmse_over_scale=math.sqrt(loc / max(n, 1)) / float(enc.scale),
                       clipped_fraction=clipped / max(n, 1), scale=float(enc.scale))
        rows.append(row)
    rows.sort(key=lambda r: math.inf if r["local_sqnr_db"] is None else r["local_sqnr_db"])
    out_rows = [{"tensor": t, "zero_signal": a.sig == 0, "cumulative_sqnr_db": _sqnr(a.sig, a.cum)}
                for t, a in outputs.items()]
    return {"batches": batches, "ideal_rmse_over_scale": IDEAL_RMSE_OVER_SCALE,
            "outputs": out_rows,
            "top1_agreement": agree / total if total else None,
            "quantizers": rows}


def _db(v, zero_signal=False):
    if v is None:
        return "n/a" if zero_signal else "exact"
    return f"{v:.1f}"


def format_report(report: dict, top: int | None = None) -> str:
    """A readable table of `quant_report` output, worst quantizers first."""
    rows = report["quantizers"] if top is None else report["quantizers"][:top]
    head = ["quantizer", "kind", "grid", "local dB", "cumul. dB", "rmse/scale", "clipped",
            "min ch dB"]
    body = []
    for r in rows:
        grid = f"{'s' if r['symmetric'] else 'a'}{r['bitwidth']}{'/ch' if r['per_channel'] else ''}"
        zero = r.get("zero_signal", False)
        body.append([r["quantizer"], r["kind"], grid, _db(r["local_sqnr_db"], zero),
                     "-" if r["kind"] == "param" else _db(r["cumulative_sqnr_db"], zero),
                     f"{r['rmse_over_scale']:.3f}", f"{100 * r['clipped_fraction']:.2f}%",
                     _db(r.get("min_channel_sqnr_db")) if r["kind"] == "param" else "-"])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
    outs = ", ".join(f"{o['tensor']} {_db(o['cumulative_sqnr_db'], o['zero_signal'])} dB"
                     for o in report["outputs"])
    lines.append(f"outputs: {outs}" + (f"; top-1 agreement with float "
                                       f"{100 * report['top1_agreement']:.1f}%"
                                       if report["top1_agreement"] is not None else ""))
    lines.append(f"rmse/scale is {IDEAL_RMSE_OVER_SCALE:.3f} (1/sqrt(12)) for pure rounding noise; "
                 "larger values mean clipping or a coarse grid. SQNR 'exact': no error; "
                 "'n/a': the float tensor is all zero.")
    return "\n".join(lines)
