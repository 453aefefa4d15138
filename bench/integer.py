"""Integer model cost on the bundled PP-OCR model, as ratios measured in this run.

    python bench/integer.py [--images N] [--batch-size B] [--profile tflite] [--repeats R]

Prints integer forward time / float forward time (float64, the reference precision, and float32)
for the model lowered with the given profile (BN folded, per-channel W8A8, minmax calibration on
32 lines). Integer convolutions run through float64 BLAS (exact while partial sums stay below 2^53).
Target: <= 1.5 against the float64 forward. Each figure is the minimum over --repeats runs.
"""
from __future__ import annotations

import argparse

import numpy as np

import refq
from refq.algorithms import fold_batch_norms
from refq.ppocr_data import load_calibration_set, load_model, load_test_set
from refq.fixedpoint.lowering import lower
from refq.fixedpoint.run import run_int
from refq.quant.quantsim import QuantSim
from timing import best_of, blas_environment


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--profile", default="tflite")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(blas_environment())
    graph, _ = fold_batch_norms(load_model())
    sim = QuantSim(graph, "per_channel").compute_encodings(load_calibration_set(32))
    int_graph = lower(sim, args.profile)
    x = load_test_set()[0][:args.images]
    feeds = {graph.inputs[0].name: x}
    bs = args.batch_size
    t64 = best_of(lambda: refq.run(graph, feeds, batch_size=bs), args.repeats)
    t32 = best_of(lambda: refq.run(graph, feeds, dtype=np.float32, batch_size=bs), args.repeats)
    t_int = best_of(lambda: run_int(int_graph, feeds, batch_size=bs), args.repeats)
    print(f"PP-OCR, {args.images} images, batch {bs}, profile {args.profile}")
    print(f"  float64 forward   {t64:7.3f} s  ({args.images / t64:6.1f} images/s)")
    print(f"  float32 forward   {t32:7.3f} s  ({args.images / t32:6.1f} images/s)")
    print(f"  integer forward   {t_int:7.3f} s  ratio vs float64 {t_int / t64:5.2f} (target <= 1.5), "
          f"vs float32 {t_int / t32:5.2f}")


if __name__ == "__main__":
    main()
