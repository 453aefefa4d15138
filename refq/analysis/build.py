"""The whole report of a quantized model: every analysis, in the order a reader needs them.

Sections (each its own module; `SECTIONS` names them, `--sections` chooses):
- weights      per-channel weight ranges of every layer, before and after BN folding and CLE
               when the float model is given (`float_graph`), else of the quantized model alone
- quantizers   per quantizer: histogram of its values, chosen range vs minmax, clipping, SQNR
- sensitivity  AIMET's quantization analyzer: one quantizer group enabled / disabled at a time
- integer      per numerics profile: LSB differences from the integer-faithful simulation and
               accumulator headroom, on the first `INTEGER_SAMPLES` samples
- history      what compression, AdaRound and QAT recorded in the model file (curves, scores)
The data is streamed once per analysis (and per profile), batch by batch, so memory stays bounded
by one batch; `data` is re-iterable (`Batches`).
"""
from __future__ import annotations

from ..errors import InputError
from .document import Report

__all__ = ["SECTIONS", "Batches", "build_report", "check_sections", "weight_stages"]

SECTIONS = ("weights", "quantizers", "sensitivity", "integer", "history")
#: Samples of the integer comparison (three forwards per profile and sample), as `refq demo` does.
INTEGER_SAMPLES = 16


class Batches:
    """A re-iterable source of feed batches: `make()` is called for every pass over the data."""

    def __init__(self, make):
        self._make = make

    def __iter__(self):
        return iter(self._make())


def weight_stages(float_graph, quantized_graph, last_label: str = "quantized model") -> list:
    """(label, graph) stages for the weights section: the float model as given, with its batch
    norms folded, and `quantized_graph` (as `last_label`) when its weights differ from the folded
    ones (CLE, bias correction or AdaRound changed them)."""
    import numpy as np

    from ..algorithms.bn_fold import fold_batch_norms

    if float_graph is None:
        return [(last_label, quantized_graph)]
    stages = [("float model", float_graph)]
    if any(n.op == "batch_norm" for n in float_graph.nodes):
        folded = fold_batch_norms(float_graph)[0]
        stages.append(("BN folded", folded))
    last = stages[-1][1]

    def same(a, b):
        pa = {n.name: n.params for n in a.nodes}
        pb = {n.name: n.params for n in b.nodes}
        return pa.keys() == pb.keys() and all(
            pa[k].keys() == pb[k].keys() and all(np.array_equal(pa[k][p], pb[k][p]) for p in pa[k])
            for k in pa)

    if not same(last, quantized_graph):
        stages.append((last_label, quantized_graph))
    return stages


def check_sections(sections) -> None:
    """InputError unless `sections` names at least one section, each of `SECTIONS`."""
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise InputError(f"unknown report section(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(SECTIONS)}")
    if not sections:
        raise InputError(f"the list names no section; choose from {', '.join(SECTIONS)}")


def build_report(sim, data, *, labels=None, float_graph=None, history=(), sections=SECTIONS,
                 profiles=None, batch_size=None, top: int = 12, title: str = "refq report",
                 integer_samples: int | None = INTEGER_SAMPLES,
                 meta: dict | None = None, sqnr_report: dict | None = None,
                 quiet: bool = True) -> Report:
    """The report of QuantSim `sim` on `data` (re-iterable feed batches, see `Batches`).

    labels: int class per data row (scores become accuracy); float_graph: the float model before
    folding (adds the before/after weight stages); history: the model file's recorded history;
    sqnr_report: `refq.report.quant_report` of the same data when the caller has it;
    integer_samples: the first samples of the data the integer profiles are compared on (None: all)."""
    check_sections(sections)
    out = []
    sqnr = sqnr_report
    if "weights" in sections:
        from .weights import weights_section

        out.append(weights_section(weight_stages(float_graph, sim.graph), quiet=quiet))
    if sqnr is None and ("quantizers" in sections or "sensitivity" in sections):
        from ..report import quant_report

        sqnr = quant_report(sim, data, batch_size=batch_size, quiet=quiet)
    if "quantizers" in sections:
        from .quantizers import quantizers_section

        out.append(quantizers_section(sim, data, batch_size=batch_size, top=top, quiet=quiet,
                                      report=sqnr))
    if "sensitivity" in sections:
        from .sensitivity import sensitivity_section

        out.append(sensitivity_section(sim, data, labels, batch_size=batch_size, quiet=quiet,
                                       sqnr_report=sqnr))
    if "integer" in sections:
        from .integer import integer_section

        out.append(integer_section(sim, data, profiles=profiles, batch_size=batch_size,
                                   quiet=quiet, max_samples=integer_samples))
    if "history" in sections and history:
        from .history_report import history_sections

        out.extend(history_sections(list(history)))
    report = Report(title, out, dict(meta or {}))
    report.check_ids()
    return report
