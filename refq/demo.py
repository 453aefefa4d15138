"""`refq demo`: the main job on the bundled PP-OCR text-direction classifier.

The model and its 1,000 labelled text lines are `refq.ppocr_data`. The demo
1. imports the model, runs the test set in float64 and prints the FP32 accuracy (97.9% expected)
   and the agreement with the onnxruntime probabilities stored beside the data;
2. quantizes it W8A8 with AIMET 2.42's numerics and placement (minmax calibration on
   `CALIBRATION_LINES` unlabelled lines drawn with another noise seed), per-tensor and per-channel,
   prints both accuracies and the five worst quantizers of the per-tensor report;
3. prints the data-free quantization table (BN fold, CLE, bias correction at W8/W6/W5);
4. lowers the per-channel W8A8 model to an integer model for every shipped numerics profile and
   prints each one's accuracy and how many values differ from the integer-faithful simulation
   (each layer on the simulation's own inputs, so a difference belongs to that layer's rounding);
5. prints the learned-quantization table (`refq.demo_learned`): PP-OCR at W4A8 per-channel with
   nearest rounding, SeqMSE, AdaRound and quantization-aware training, learned from the bundled
   training lines and measured on the test lines, each with the share of nearest rounding's loss
   it recovers and its time;
6. prints its wall time with a breakdown by section, and the CPU time of each section (which a
   loaded machine does not inflate). The forward passes run as jobs in worker processes (Speed);
   the time of a section is the sum of its jobs' own times (plus, for import + FP32 and W8A8, the
   import and the calibration), so the sections overlap.

Off a terminal each finished stage prints one line on stderr (`refq.progress.stage`); on a terminal
the batch loops show bars instead. `--quiet` silences both.

Speed: work is shared where the printed numbers allow it (the BN-folded graph and the W8A8
simulations reused by the data-free table, the lowering done once per profile); BLAS runs on one
thread for the duration of the demo (`refq.parallel.single_blas_thread`). Only the import and
the two W8A8 calibrations (200 lines) and the W4A8 one (64 training lines) run first, in this
process; every pass over the test set is then an independent job (the FP32 forward, the two W8A8
accuracies, the report, each simulation of the data-free table, each integer profile, each
learned-quantization method), run in `refq.parallel.WORKERS` forked processes,
longest first, and their results are printed in the sequential order as soon as the jobs before
them are done (`refq.parallel.parallel`). Every number is that of the sequential run.
"""
from __future__ import annotations

import time

import numpy as np

from . import parallel as par
from . import demo_learned
from .ppocr_data import (EXPECTED_FP32_ACCURACY, load_calibration_set, load_model, load_test_set,
                         load_training_set)
from .progress import Stage, on_terminal, stage

def main(quiet: bool = False) -> dict:
    """Run the demo (module docstring); print to stdout and return the numbers as a dict."""
    with par.single_blas_thread():
        return _demo(quiet)


SECTIONS = (("fp32", "import + FP32"), ("w8a8", "W8A8"), ("report", "report"),
            ("data_free", "data-free"), ("integer", "integer"), ("learned", "learned"))


def _demo(quiet: bool) -> dict:
    """Import, data and the two W8A8 calibrations here (every job needs them), then every forward
    pass over the test set as an independent job in the worker processes: the FP32 forward, the
    two W8A8 accuracies, the report, the data-free table and the integer profiles. Results print
    in the sequential order as soon as the jobs before them are done."""
    from .algorithms import fold_batch_norms
    from .summary import summarize

    t0, c0 = time.perf_counter(), time.process_time() + par.children_cpu()
    quiet_loops = quiet or not on_terminal()   # the loops show bars on a terminal only
    with stage("import", quiet) as fp32:
        graph = load_model()
        rows = summarize(graph)
        x, y, p_onnx = load_test_set()
        print(f"model   {graph.name}: {len(graph.nodes)} nodes, "
              f"{sum(r['params'] for r in rows):,} parameters, "
              f"{sum(r['macs'] for r in rows) / 1e6:.1f} MMAC per image")
        print(f"data    {len(y)} text lines {list(x.shape[1:])}, {int((y == 0).sum())} upright / "
              f"{int((y == 1).sum())} rotated")
        fp32.detail = f"{len(y)} test lines"
    import_seconds = time.perf_counter() - t0
    with stage("W8A8 calibration", quiet) as w8a8:
        calib = load_calibration_set()
        folded, _ = fold_batch_norms(graph)
        sims = {config: _calibrated(folded, config, calib, quiet_loops)
                for config in ("per_tensor", "per_channel")}
        w8a8.detail = f"2 simulations on {len(calib)} lines"
    with stage("W4A8 calibration", quiet) as w4a8:
        train = load_training_set()
        w4_calib = train[0][:demo_learned.LEARNED_CALIBRATION_LINES]
        w4_sim, w4_seconds = demo_learned.nearest_sim(folded, w4_calib, quiet_loops)
        w4a8.detail = f"{len(w4_calib)} training lines"
    sequential = time.perf_counter() - t0
    out = {"calibration_lines": len(calib)}
    learned = demo_learned.learned_jobs(w4_sim, w4_seconds, w4_calib, train, x, y, quiet)
    # the longest jobs first (AdaRound, QAT, SeqMSE, bias correction, an integer profile, the FP32
    # forward), so that the workers finish together
    by_method = {key[1]: (key, job) for key, job in learned}
    jobs = [by_method[m] for m in ("AdaRound", "QAT", "SeqMSE")]
    jobs.append(("fp32", _fp32_job(graph, x, y, p_onnx, quiet)))
    data_free = _data_free_jobs(graph, folded, x, y, calib, quiet)
    jobs += [j for j in data_free if j[0][2] == "bias_correction"]
    jobs += _integer_jobs(sims["per_channel"], x, y, quiet)
    jobs.append(("report", _report_job(sims["per_tensor"], x, quiet)))
    jobs += [(("w8a8", config), _accuracy_job(config, sim, x, y, quiet))
             for config, sim in sims.items()]
    jobs += [j for j in data_free if j[0][2] != "bias_correction"]
    jobs.append(by_method["nearest"])
    printers = [_FP32Printer(out, len(y), import_seconds), _W8A8Printer(out, sims, w8a8.wall),
                _ReportPrinter(out), _DataFreePrinter(out, len(y)), _IntegerPrinter(out),
                demo_learned.LearnedPrinter(out, len(y), len(train[1]))]
    spent = {key: Stage(key) for key, _ in SECTIONS}
    spent["fp32"].wall, spent["fp32"].cpu = fp32.wall, fp32.cpu
    spent["w8a8"].wall, spent["w8a8"].cpu = w8a8.wall, w8a8.cpu
    spent["learned"].wall, spent["learned"].cpu = w4a8.wall, w4a8.cpu
    children = par.children_cpu()
    with stage("FP32, W8A8, report, data-free, integer, learned", quiet) as section:
        results = {}
        work = par.parallel([job for _, job in jobs], "jobs", quiet_loops)
        for i, (result, wall, cpu) in work:
            results[i] = result
            key = jobs[i][0] if isinstance(jobs[i][0], str) else jobs[i][0][0]
            spent[key].wall += wall
            spent[key].cpu += cpu
            while printers and printers[0].ready(jobs, results):
                printers.pop(0).emit(jobs, results)
        section.detail = f"{len(jobs)} jobs in {max(1, par.WORKERS)} processes"
    section.cpu += par.children_cpu() - children
    wall, cpu = time.perf_counter() - t0, time.process_time() + par.children_cpu() - c0
    out["seconds"] = {"total": wall, "total_cpu": cpu, "sequential": sequential,
                      "parallel": section.wall,
                      **{k: spent[k].wall for k, _ in SECTIONS},
                      **{f"{k}_cpu": spent[k].cpu for k, _ in SECTIONS}}
    print(f"\ntime    {wall:.0f} s: import and calibration {sequential:.0f} s, then "
          f"{section.wall:.0f} s in {max(1, par.WORKERS)} processes for "
          + ", ".join(f"{label} {spent[k].wall:.0f} s" for k, label in SECTIONS))
    print(f"        CPU {cpu:.0f} s: " + ", ".join(f"{label} {spent[k].cpu:.0f} s"
                                                 for k, label in SECTIONS))
    return out


def _calibrated(graph, config, calib, quiet, param_bw=8):
    """A QuantSim of `graph` with `config`, calibrated on `calib`; quiet: the loops' bars."""
    from .quant.quantsim import QuantSim

    sim = QuantSim(graph, config, param_bw=param_bw, act_bw=8)
    return sim.compute_encodings(calib, batch_size=100, quiet=quiet)


def _accuracy(sim, x, y, quiet):
    probs = sim.run({sim.graph.inputs[0].name: x}, batch_size=100, quiet=quiet)
    return float((probs[sim.graph.outputs[0]].argmax(axis=1) == y).mean())


def _simulate(graph, config, x, y, calib, quiet, param_bw=8):
    """(QuantSim calibrated on `calib`, its accuracy on x, y); quiet: the loops' bars."""
    sim = _calibrated(graph, config, calib, quiet, param_bw)
    return sim, _accuracy(sim, x, y, quiet)


def _fp32_job(graph, x, y, p_onnx, quiet):
    def job():
        from .runtime import run

        with stage("FP32", quiet) as st:
            probs = run(graph, {graph.inputs[0].name: x}, batch_size=100,
                        quiet=True)[graph.outputs[0]]
            pred = probs.argmax(axis=1)
            acc = float((pred == y).mean())
            st.detail = f"accuracy {acc:.1%}"
        return {
            "fp32_accuracy": acc,
            "upright_accuracy": float((pred[y == 0] == 0).mean()),
            "rotated_accuracy": float((pred[y == 1] == 1).mean()),
            "onnx_argmax_agreement": float((pred == p_onnx.argmax(axis=1)).mean()),
            "onnx_max_abs_prob_diff": float(np.abs(probs - p_onnx).max()),
            "forward_seconds": st.wall,
        }
    return job


def _index(jobs, key) -> int:
    """The index of the job whose key is `key`."""
    return next(i for i, (k, _) in enumerate(jobs) if k == key)


class _FP32Printer:
    def __init__(self, out, lines, import_seconds):
        self.out, self.lines, self.import_seconds = out, lines, import_seconds

    def ready(self, jobs, results):
        return _index(jobs, "fp32") in results

    def emit(self, jobs, results):
        r = dict(results[_index(jobs, "fp32")])
        forward = r.pop("forward_seconds")
        self.out.update(r)
        print(f"FP32    accuracy {r['fp32_accuracy']:.1%} (expected "
              f"{EXPECTED_FP32_ACCURACY:.1%}): upright {r['upright_accuracy']:.1%}, rotated "
              f"{r['rotated_accuracy']:.1%}")
        print(f"        agreement with onnxruntime: argmax {r['onnx_argmax_agreement']:.1%}, "
              f"max |p - p_onnx| {r['onnx_max_abs_prob_diff']:.1e}")
        print(f"time    import {self.import_seconds:.1f} s, float64 forward {forward:.1f} s "
              f"({self.lines / forward:.0f} images/s)")


def _accuracy_job(config, sim, x, y, quiet):
    def job():
        with stage(f"W8A8 {config.replace('_', '-')}", quiet) as st:
            acc = _accuracy(sim, x, y, True)
            st.detail = f"accuracy {acc:.1%}"
        return acc, st.wall
    return job


class _W8A8Printer:
    """The two W8A8 simulations' lines; each time is its share of the calibration plus its run."""

    def __init__(self, out, sims, calibration_seconds):
        self.out, self.sims, self.calibration = out, sims, calibration_seconds

    def _indices(self, jobs):
        return {key[1]: i for i, (key, _) in enumerate(jobs) if key[0] == "w8a8"}

    def ready(self, jobs, results):
        return all(i in results for i in self._indices(jobs).values())

    def emit(self, jobs, results):
        print(f"\nW8A8 quantization simulation (AIMET 2.42 numerics and placement, minmax, BN "
              f"folded, calibrated on {self.out['calibration_lines']} unlabelled lines)")
        for config, i in self._indices(jobs).items():
            acc, seconds = results[i]
            self.out[f"w8a8_{config}_accuracy"] = acc
            p = self.sims[config].placement
            print(f"  {config.replace('_', '-'):12s} accuracy {acc:.1%}   "
                  f"({p['activation_quantizers']} activation + {p['param_quantizers']} weight "
                  f"quantizers, {self.calibration / len(self.sims) + seconds:.1f} s)")


def _report_job(sim, x, quiet):
    def job():
        from .report import quant_report

        with stage("report", quiet) as st:
            report = quant_report(sim, x[:200], batch_size=100)
            st.detail = "per-tensor W8A8 on 200 lines"
        return report
    return job


class _ReportPrinter:
    def __init__(self, out):
        self.out = out

    def ready(self, jobs, results):
        return _index(jobs, "report") in results

    def emit(self, jobs, results):
        from .report import format_report

        report = results[_index(jobs, "report")]
        self.out["worst_quantizers"] = [r["quantizer"] for r in report["quantizers"][:5]]
        print("\nfive worst quantizers, per-tensor W8A8 (first 200 test lines):")
        print("\n".join("  " + line for line in format_report(report, top=5).splitlines()))


COMPARE_LINES = 16


def _integer_jobs(sim, x, y, quiet) -> list:
    """One job per profile: accuracy of the integer model and its LSB differences from the
    integer-faithful simulation (`compare` on COMPARE_LINES lines)."""
    from .fixedpoint.profiles import PROFILES

    name = sim.graph.inputs[0].name

    def job(profile):
        def run_profile():
            from .fixedpoint.compare import compare
            from .fixedpoint.lowering import lower
            from .fixedpoint.run import run_int

            with stage(f"integer {profile}", quiet) as st:
                graph = lower(sim, profile)
                probs, _ = run_int(graph, {name: x}, batch_size=100)
                acc = float((probs[graph.outputs[0]].argmax(axis=1) == y).mean())
                s = compare(sim, profile, x[:COMPARE_LINES], graph=graph)["summary"]
                st.detail = f"accuracy {acc:.1%}"
            return {"accuracy": acc, **s}
        return run_profile

    return [(("integer", profile), job(profile)) for profile in PROFILES]


class _IntegerPrinter:
    def __init__(self, out):
        self.out = out

    def ready(self, jobs, results):
        return all(i in results for i, (key, _) in enumerate(jobs) if key[0] == "integer")

    def emit(self, jobs, results):
        print(f"\ninteger models (per-channel W8A8 lowered per profile; differences from the "
              f"integer-faithful simulation on {COMPARE_LINES} lines)")
        print(f"  {'profile':14s}{'accuracy':>9s}{'differing values':>22s}{'max':>5s}"
              f"{'layers':>8s}{'headroom':>10s}")
        self.out["integer"] = {}
        for i, (key, _) in enumerate(jobs):
            if key[0] != "integer":
                continue
            profile, r = key[1], results[i]
            self.out["integer"][profile] = r
            print(f"  {profile:14s}{100 * r['accuracy']:8.1f}%{r['local_differ_elements']:>11,}"
                  f" of {r['local_elements']:>9,}{r['local_max_lsb']:>4d}"
                  f"{r['local_differ_nodes']:>5d}/{r['nodes']:<3d}"
                  f"{r['min_headroom_bits']:>6d} bits")


DFQ_COLUMNS = ("naive", "bn_fold", "cle", "bias_correction", "per_channel")
DFQ_BITWIDTHS = (8, 6, 5)


def _data_free_jobs(graph, folded, x, y, calib, quiet) -> list:
    """Per-tensor WbA8 accuracy jobs: naive (BN kept as a float op, the simulation AIMET gives an
    unfolded model), + BN fold, + CLE (through squeeze-excitation), + empirical bias correction,
    and per-channel (BN folded) for comparison. `folded` is `graph` with its batch norms folded.
    The W8A8 BN-fold and per-channel cells are the W8A8 simulations' own (the "w8a8" jobs)."""
    from .algorithms import prepare

    equalized, _ = prepare(graph, cle=True, through_squeeze_excite=True)

    def sim_job(column, g, config, bw, correct=False):
        def run_sim():
            with stage(f"data-free W{bw}A8 {column.replace('_', ' ')}", quiet) as st:
                if correct:
                    g2, _ = prepare(g, bias_correction="empirical", data=calib,
                                    config="per_tensor", param_bw=bw)
                else:
                    g2 = g
                acc = _simulate(g2, config, x, y, calib, True, bw)[1]
                st.detail = f"accuracy {acc:.1%}"
            return acc
        return run_sim

    jobs = []
    for bw in DFQ_BITWIDTHS:
        columns = [("bias_correction", equalized, "per_tensor", True),
                   ("naive", graph, "per_tensor", False), ("cle", equalized, "per_tensor", False)]
        if bw != 8:
            columns += [("bn_fold", folded, "per_tensor", False),
                        ("per_channel", folded, "per_channel", False)]
        jobs += [(("data_free", bw, column), sim_job(column, g, config, bw, correct))
                 for column, g, config, correct in columns]
    return jobs


class _DataFreePrinter:
    """Prints the table's rows in order, each as soon as its jobs are done."""

    def __init__(self, out, lines):
        self.out, self.lines = out, lines
        self.out["data_free"] = {}
        self.next = 0   # index into DFQ_BITWIDTHS of the next row to print

    def _row(self, jobs, results, bw):
        row = {}
        if bw == 8:   # printed after the W8A8 simulations, whose accuracies these are
            row = {"bn_fold": self.out["w8a8_per_tensor_accuracy"],
                   "per_channel": self.out["w8a8_per_channel_accuracy"]}
        for i, (key, _) in enumerate(jobs):
            if key[0] == "data_free" and key[1] == bw:
                if i not in results:
                    return None
                row[key[2]] = results[i]
        return row

    def ready(self, jobs, results):
        while self.next < len(DFQ_BITWIDTHS):
            bw = DFQ_BITWIDTHS[self.next]
            row = self._row(jobs, results, bw)
            if row is None:
                return False
            if self.next == 0:
                print("\ndata-free quantization, per-tensor weights, 8-bit activations "
                      f"(accuracy on {self.lines} lines)")
                print(f"  {'':6s}" + "".join(f"{c:>17s}" for c in (
                    "naive", "+ BN fold", "+ CLE", "+ bias corr.", "per-channel")))
            self.out["data_free"][f"W{bw}A8"] = row = {c: row[c] for c in DFQ_COLUMNS}
            print(f"  W{bw}A8 " + "".join(f"{100 * row[c]:16.1f}%" for c in DFQ_COLUMNS))
            self.next += 1
        return True

    def emit(self, jobs, results):
        pass
