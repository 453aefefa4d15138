"""The demo's learned-quantization table: PP-OCR at W4A8 per-channel (batch norms folded), nearest
rounding against the methods that learn from data.

The methods learn from the bundled training lines (`refq.ppocr_data.load_training_set`, none with
a test line's text) and are measured on the 1,000 test lines:
- nearest: the W4A8 simulation (AIMET's per-channel config, minmax) calibrated on the first
  LEARNED_CALIBRATION_LINES training lines, weights rounded to nearest;
- SeqMSE: `refq.algorithms.seq_mse` on those lines (20 candidates, mse, symqt), then the
  activations recalibrated with the chosen weight encodings frozen;
- AdaRound: `refq.algorithms.adaround` on those lines, ADAROUND_ITERATIONS per layer (AIMET's
  default at 4 bits is 15,000: the demo runs fewer, and says so), then the activations
  recalibrated with the rounded weights' encodings frozen (AIMET's flow);
- QAT: `refq.grad.train` on every training line for QAT_EPOCHS epochs, cross-entropy on the
  labels, Adam 1e-3, batch 32, the encodings frozen (the weights learn through the STE).
Each row's time is the method's own (calibration included), not the evaluation on the test set.
"""
from __future__ import annotations

import time

from .progress import plural, stage

LEARNED_CALIBRATION_LINES = 64
ADAROUND_ITERATIONS = 300
QAT_EPOCHS = 2
METHODS = ("nearest", "SeqMSE", "AdaRound", "QAT")


def nearest_sim(folded, calib, quiet):
    """(W4A8 per-channel QuantSim of `folded` calibrated on `calib`, seconds)."""
    from .quant.quantsim import QuantSim

    t = time.perf_counter()
    sim = QuantSim(folded, "per_channel", param_bw=4, act_bw=8)
    sim.compute_encodings(calib, batch_size=100, quiet=quiet)
    return sim, time.perf_counter() - t


def learned_jobs(sim, seconds, calib, train, x, y, quiet) -> list:
    """[(("learned", method), job)]: each job returns (test accuracy, the method's seconds).
    `sim` is the nearest-rounding simulation (calibrated in `seconds`), `calib` its calibration
    lines, `train` = (inputs, labels) the QAT training lines, x, y the test set."""
    def accuracy(s):
        probs = s.run({s.graph.inputs[0].name: x}, batch_size=100)[s.graph.outputs[0]]
        return float((probs.argmax(axis=1) == y).mean())

    def method(name, make):
        def job():
            with stage(f"W4A8 {name}", quiet) as st:
                t = time.perf_counter()
                learned = make()
                spent = seconds + time.perf_counter() - t
                acc = accuracy(learned)
                st.detail = f"accuracy {acc:.1%}"
            return acc, spent
        return job

    def seq_mse():
        from .algorithms import seq_mse as search

        return search(sim, calib)[0].compute_encodings(calib, batch_size=100)

    def adaround():
        from .algorithms import adaround as rounding

        return rounding(sim, calib, iterations=ADAROUND_ITERATIONS)[0].compute_encodings(
            calib, batch_size=100)

    def qat():
        from .grad import Adam, cross_entropy
        from .grad.train import logits_tensor, train as fine_tune

        logits = logits_tensor(sim.graph)
        return fine_tune(sim, train[0], cross_entropy, Adam(1e-3), targets=train[1],
                         epochs=QAT_EPOCHS, batch_size=32, output=logits)[0]

    makers = {"nearest": lambda: sim, "SeqMSE": seq_mse, "AdaRound": adaround, "QAT": qat}
    return [(("learned", name), method(name, makers[name])) for name in METHODS]


class LearnedPrinter:
    """The table, once every learned job is done; `out["learned"]` = {method: {accuracy,
    seconds}} and `out["learned_recovered"]` = {method: share of nearest's loss recovered}."""

    def __init__(self, out, lines, train_lines):
        self.out, self.lines, self.train_lines = out, lines, train_lines

    def _indices(self, jobs):
        return {key[1]: i for i, (key, _) in enumerate(jobs) if key[0] == "learned"}

    def ready(self, jobs, results):
        return all(i in results for i in self._indices(jobs).values())

    def emit(self, jobs, results):
        rows = {m: results[i] for m, i in self._indices(jobs).items()}
        fp32 = self.out["fp32_accuracy"]
        lost = fp32 - rows["nearest"][0]
        print(f"\nlearned quantization, W4A8 per-channel, BN folded (accuracy on {self.lines} "
              f"test lines, FP32 {fp32:.1%}; calibration, SeqMSE and AdaRound on "
              f"{LEARNED_CALIBRATION_LINES} training lines, QAT on {self.train_lines}; no test "
              "line among them)")
        print(f"  {'method':34s}{'accuracy':>9s}{'recovered':>11s}{'time':>9s}")
        details = {"nearest": "nearest rounding",
                   "SeqMSE": "SeqMSE (20 candidates, mse)",
                   "AdaRound": f"AdaRound ({plural(ADAROUND_ITERATIONS, 'iteration')}/layer)",
                   "QAT": f"QAT ({QAT_EPOCHS} epoch{'s' * (QAT_EPOCHS != 1)}, labels)"}
        self.out["learned"], self.out["learned_recovered"] = {}, {}
        for m in METHODS:
            acc, seconds = rows[m]
            share = (acc - rows["nearest"][0]) / lost if lost > 0 else float("nan")
            self.out["learned"][m] = {"accuracy": acc, "seconds": seconds}
            self.out["learned_recovered"][m] = share
            shown = "" if m == "nearest" else f"{share:.0%}"
            print(f"  {details[m]:34s}{100 * acc:8.1f}%{shown:>11s}{seconds:8.1f} s")
