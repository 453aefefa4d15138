"""Quantization simulation cost on the bundled PP-OCR model, as ratios measured in this run.

    python bench/quantsim.py [--images N] [--batch-size B] [--scheme minmax]

Prints sim forward time / float forward time and calibration time / float forward time, both
against the float forward in float32 (the dtype the AIMET-numerics simulation runs in) on the same
images and batch size. Targets: <= 1.3 for the sim forward, <= 1.5 for minmax calibration.
Each figure is the minimum over --repeats runs.
"""
from __future__ import annotations

import argparse

import numpy as np

import refq
from refq.ppocr_data import load_model, load_test_set
from refq.quant.quantsim import QuantSim
from timing import best_of, blas_environment


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--scheme", default="minmax")
    ap.add_argument("--config", default="per_tensor")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(blas_environment())
    graph = load_model()
    x = load_test_set()[0][:args.images]
    feeds = {graph.inputs[0].name: x}
    sim = QuantSim(graph, args.config, scheme=args.scheme)
    t_float = best_of(lambda: refq.run(graph, feeds, dtype=np.float32,
                                       batch_size=args.batch_size), args.repeats)
    t_calib = best_of(lambda: sim.compute_encodings(x, batch_size=args.batch_size), args.repeats)
    t_sim = best_of(lambda: sim.run(feeds, batch_size=args.batch_size), args.repeats)
    print(f"PP-OCR, {args.images} images, batch {args.batch_size}, {args.config}, "
          f"scheme {args.scheme}")
    print(f"  float32 forward   {t_float:7.3f} s  ({args.images / t_float:6.1f} images/s)")
    print(f"  sim forward       {t_sim:7.3f} s  ratio {t_sim / t_float:5.2f}  (target <= 1.3)")
    print(f"  calibration       {t_calib:7.3f} s  ratio {t_calib / t_float:5.2f}  "
          f"(target <= 1.5 for minmax)")


if __name__ == "__main__":
    main()
