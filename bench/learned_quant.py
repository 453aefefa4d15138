"""Learned quantization on the bundled PP-OCR classifier at W4A8 per-channel: accuracy and wall time
of nearest rounding, Sequential MSE, AdaRound and quantization-aware training.

    python bench/learned_quant.py [--adaround-iterations 1000] [--qat-epochs 2] [--calib 64]

The methods learn from the bundled training lines (`refq.ppocr_data.load_training_set`: 1,000
lines from the test set's generator, none with a test line's text) and are evaluated on the 1,000
test lines, so no method sees an evaluated line.
The model's batch norms are folded; the simulation is AIMET's per-channel config, minmax, 4-bit
weights and 8-bit activations, calibrated on the first --calib training lines.
- nearest: that simulation as calibrated;
- SeqMSE: `refq.algorithms.seq_mse` on the --calib lines (20 candidates, mse, symqt), then the
  activations recalibrated with the chosen weight encodings frozen;
- AdaRound: `refq.algorithms.adaround` on the --calib lines, --adaround-iterations per layer
  (AIMET's default is 15,000 at 4 bits);
- QAT: `refq.grad.train` on the --qat-lines training lines for --qat-epochs, distillation (KL
  divergence to the float model's logits, no labels) or, with --labels, cross-entropy; Adam 1e-3,
  batch 32, ranges frozen.
Each row prints the accuracy on the evaluation lines, the share of the accuracy that nearest
rounding loses which the method recovers, and its wall time.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import refq
from refq.algorithms import adaround, fold_batch_norms, seq_mse
from refq.grad import Adam, kl_divergence
from refq.grad.train import train
from refq.grad import cross_entropy
from refq.ppocr_data import load_model, load_test_set, load_training_set
from refq.quant.quantsim import QuantSim


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adaround-iterations", type=int, default=1000)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--calib", type=int, default=64, help="calibration lines (default 64)")
    ap.add_argument("--qat-lines", type=int, default=1000, help="QAT training lines (default 1000)")
    ap.add_argument("--labels", action="store_true", help="QAT with cross-entropy on the labels")
    ap.add_argument("--skip", default="", help="comma-separated methods to skip (SeqMSE,AdaRound,QAT)")
    args = ap.parse_args(argv)
    graph, _ = fold_batch_norms(load_model())
    train_x, train_y = load_training_set(args.qat_lines)
    test_x, test_y = load_test_set()[:2]
    calib = train_x[:args.calib]
    out = graph.outputs[0]
    logits = next(n for n in graph.nodes if n.outputs[0] == out).inputs[0]

    def accuracy(run):
        return float(np.mean(run(test_x)[out].argmax(1) == test_y))

    fp = accuracy(lambda x: refq.run(graph, x, dtype=np.float32))
    rows = []

    def timed(name, make):
        t = time.perf_counter()
        sim = make()
        rows.append((name, accuracy(sim.run), time.perf_counter() - t))
        print(f"   {name:<10} {rows[-1][1]:6.1%} {rows[-1][2]:7.1f} s", flush=True)
        return sim

    skip = set(args.skip.split(","))
    print(f"PP-OCR W4A8 per-channel; float32 {fp:.1%} on the {len(test_y)} test lines; "
          f"{len(train_y)} training lines")
    nearest = timed("nearest", lambda: QuantSim(graph, "per_channel", param_bw=4, act_bw=8)
                    .compute_encodings(calib))
    if "SeqMSE" not in skip:
        timed("SeqMSE", lambda: seq_mse(nearest, calib)[0].compute_encodings(calib))
    if "AdaRound" not in skip:
        timed("AdaRound", lambda: adaround(nearest, calib, iterations=args.adaround_iterations)[0])
    if "QAT" not in skip:
        if args.labels:
            loss, targets = cross_entropy, train_y
        else:
            loss, targets = kl_divergence, refq.Plan(graph, np.float32).run(train_x, trace=True)[logits]
        timed("QAT", lambda: train(nearest, train_x, loss, Adam(1e-3), targets=targets,
                                   epochs=args.qat_epochs, batch_size=32, output=logits)[0])
    lost = fp - rows[0][1]
    print(f"\n   {'method':<10} {'accuracy':>8} {'recovered':>10} {'time':>8}")
    for name, acc, seconds in rows:
        recovered = (acc - rows[0][1]) / lost if lost > 0 else float("nan")
        print(f"   {name:<10} {acc:8.1%} {recovered:10.0%} {seconds:7.1f} s")


if __name__ == "__main__":
    main()
