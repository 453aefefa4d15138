"""AdaRound speed: time of one optimisation iteration / time of one forward + backward of the
same layer, per conv2d/dense layer of the bundled PP-OCR classifier.

    python bench/adaround.py [--samples 64] [--iterations 20] [--repeats 3]

One iteration (`refq.algorithms.adaround.LayerProblem`) draws 32 cached samples, computes the
soft-rounded weight, the layer forward, the following activation, the loss, the VJPs back to α
and one Adam step. The baseline is the layer's `forward` and `vjp` (`refq.layers.REGISTRY`) on
the same 32 inputs with its float weight and an all-ones output gradient. Both in float32 on the
inputs the quantized model (4-bit weights, float activations) gives the layer; the minimum of
--repeats timings of --iterations calls each. Prints both times and the ratio per layer and in
total, and which BLAS settings were in effect (OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are left as
the environment sets them).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import refq
from refq.algorithms.adaround import ROUNDED_OPS, LayerProblem, following_activation
from refq.grad.optim import Adam
from refq.layers import REGISTRY
from refq.ppocr_data import load_calibration_set, load_model
from refq.quant.quantsim import QuantSim


def best_of(fn, calls, repeats):
    """Minimum over `repeats` of the mean time of `calls` calls of fn."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    print("BLAS: OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s" % (
        os.environ.get("OPENBLAS_CORETYPE", "(unset)"), os.environ.get("OPENBLAS_L2_SIZE", "(unset)")))
    graph = load_model()
    x = load_calibration_set(args.samples)
    sim = QuantSim(graph, param_bw=4)
    sim.detect_prequantized = False
    sim.compute_param_encodings()
    only_params = {n: q.kind == "param" for n, q in sim.quantizers.items()}
    quant = sim.plan(only_params).run(x, trace=True)
    ref = refq.Plan(graph, np.float32).run(x, trace=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(args.samples)[:32]
    total_iter = total_base = 0.0
    print(f"{'layer':28s} {'op':7s} {'iteration ms':>13s} {'fwd+bwd ms':>11s} {'ratio':>6s}")
    for node in graph.topological_order():
        name = f"{node.name}.weight"
        if node.op not in ROUNDED_OPS or name not in sim.encodings:
            continue
        xin = quant[node.inputs[0]]
        problem = LayerProblem(node, sim.encodings[name], xin, ref[node.outputs[0]],
                               following_activation(graph, node), iterations=10000, reg=0.01,
                               beta=(20.0, 2.0), warm_start=0.2)
        alpha, adam = problem.alpha0.copy(), Adam()

        def iteration():
            batch = rng.permutation(args.samples)[:32]
            _, _, _, g = problem.loss_and_grad(alpha, batch, 5000)
            adam.step({"alpha": alpha}, {"alpha": g})

        op, xb = REGISTRY[node.op], xin[idx]
        params = {k: v.astype(np.float32) for k, v in node.params.items()}

        def forward_backward():
            y = op.forward([xb], params, node.attrs)
            op.vjp([xb], params, node.attrs, y, np.ones_like(y))

        t_iter = best_of(iteration, args.iterations, args.repeats)
        t_base = best_of(forward_backward, args.iterations, args.repeats)
        total_iter, total_base = total_iter + t_iter, total_base + t_base
        print(f"{node.name[:28]:28s} {node.op:7s} {1e3 * t_iter:13.3f} {1e3 * t_base:11.3f} "
              f"{t_iter / t_base:6.2f}")
    print(f"{'total':36s} {1e3 * total_iter:13.3f} {1e3 * total_base:11.3f} "
          f"{total_iter / total_base:6.2f}")


if __name__ == "__main__":
    main()
