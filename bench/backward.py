"""Backward speed: forward + backward time / forward time on the bundled PP-OCR classifier.

    python bench/backward.py [--batch 32] [--repeats 3]

The forward is `refq.Plan(graph, np.float32).run` (built once, fused, on both cores); forward +
backward is `refq.grad.value_and_grad(graph, x, mse, zeros, dtype=np.float32)` with respect to
every parameter (its traced forward and the reverse pass through every op's VJP, batch chunks on
both cores). Both on the same calibration images, timed alternately (minimum of --repeats runs
after a warm-up); the ratio is printed beside its target (<= 3), with the time of each op's VJP
in one extra run.
"""
from __future__ import annotations

import argparse
import collections
import time
from dataclasses import replace

import numpy as np

import refq
from refq.grad import mse, value_and_grad
from refq.layers import REGISTRY
from refq.ppocr_data import load_calibration_set, load_model

TARGET = 3.0


def vjp_times(graph, x, zeros):
    """{op: seconds} of its VJPs in one value_and_grad on one thread."""
    times = collections.defaultdict(float)
    saved = dict(REGISTRY)

    def timed(name, fn):
        def vjp(*args):
            t = time.perf_counter()
            out = fn(*args)
            times[name] += time.perf_counter() - t
            return out
        return vjp
    try:
        for name, op in saved.items():
            REGISTRY[name] = replace(op, vjp=timed(name, op.vjp))
        value_and_grad(graph, x, mse, zeros, dtype=np.float32, batch_size=len(x))
    finally:
        REGISTRY.update(saved)
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    graph = load_model()
    x = load_calibration_set(args.batch)
    plan = refq.Plan(graph, np.float32)
    zeros = np.zeros_like(plan.run(x)[graph.outputs[0]])
    fns = {"forward": lambda: plan.run(x),
           "backward": lambda: value_and_grad(graph, x, mse, zeros, dtype=np.float32)}
    best = {k: float("inf") for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(args.repeats):
        for k, fn in fns.items():
            time.sleep(0.2)
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    ratio = best["backward"] / best["forward"]
    print(f"PP-OCR classifier, float32, batch {args.batch}: forward {best['forward'] * 1e3:.0f} "
          f"ms, forward + backward {best['backward'] * 1e3:.0f} ms, ratio {ratio:.2f} (target "
          f"<= {TARGET:g}) {'ok' if ratio <= TARGET else 'MISS'}")
    times = vjp_times(graph, x, zeros)
    total = sum(times.values())
    print(f"VJPs on one thread: {total * 1e3:.0f} ms; by op:")
    for name, t in sorted(times.items(), key=lambda kv: -kv[1])[:8]:
        print(f"   {name:<18} {t * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
