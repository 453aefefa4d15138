"""Compression of the bundled PP-OCR classifier to a target share of its MACs: spatial SVD, weight
SVD and channel pruning, each layer's ratio chosen by AIMET's greedy search, then fine-tuned.

    python bench/compression.py [--methods spatial-svd,weight-svd,channel-pruning]
        [--target 0.5] [--eval-lines 200] [--score accuracy|agreement] [--epochs 8]
        [--lr 1e-3] [--distill] [--tables DIR] [--monotone-fit] [--json OUT.json]

- The greedy search scores each (layer, candidate ratio) on the first --eval-lines training lines
  (`refq.ppocr_data.load_training_set`): top-1 accuracy on their labels, or with --score
  agreement the top-1 agreement with the float model; 10 candidates; float32 evaluations. The
  eval tables are written to --tables (default /tmp/refq-compression-tables) and read back on a
  later run, so a rerun skips the search's evaluations.
- Channel pruning reconstructs each pruned layer from the same lines (10 samples per line).
- Fine-tuning: `refq.grad.train` on all 1,000 training lines with their labels (cross-entropy),
  or with --distill to the float model's logits (KL divergence), Adam --lr, batch 32, --epochs,
  float32; the batch norms' moving statistics stay frozen.
- Accuracy is measured on the 1,000 test lines (no training line has a test line's text);
  FP32 97.9%.
Each method prints its per-layer ratios and a row: MAC ratio reached, test accuracy compressed and
after fine-tuning, and the wall times of the search and of the fine-tuning.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import refq
from refq.compression import METHODS, get_method
from refq.compression.compress import (accuracy_evaluator, agreement_evaluator, compress_model,
                                       fine_tune)
from refq.ppocr_data import EXPECTED_FP32_ACCURACY, load_model, load_test_set, load_training_set


def _available(names):
    """The methods of `names` whose module imports (the others are reported and skipped)."""
    out = []
    for name in names:
        try:
            get_method(name)
            out.append(name)
        except ImportError as e:
            print(f"{name}: not available ({e})")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--target", type=float, default=0.5, help="target MAC ratio (default 0.5)")
    ap.add_argument("--eval-lines", type=int, default=200)
    ap.add_argument("--score", choices=["accuracy", "agreement"], default="accuracy")
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--distill", action="store_true",
                    help="fine-tune by distillation to the float model's logits, not the labels")
    ap.add_argument("--tables", default="/tmp/refq-compression-tables")
    ap.add_argument("--monotone-fit", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    graph = load_model()
    train_x, train_y = load_training_set()
    test_x, test_y = load_test_set()[:2]
    eval_x, eval_y = train_x[:args.eval_lines], train_y[:args.eval_lines]
    test = accuracy_evaluator(test_x, test_y, dtype=np.float32)
    if args.score == "accuracy":
        evaluate = accuracy_evaluator(eval_x, eval_y, dtype=np.float32)
    else:
        evaluate = agreement_evaluator(graph, eval_x, dtype=np.float32)
    fp32 = test(graph)
    print(f"PP-OCR text-direction classifier: FP32 test accuracy {fp32:.1%} (expected "
          f"{EXPECTED_FP32_ACCURACY:.1%}); target {args.target:g} of the MACs; search score: "
          f"{evaluate.description}; fine-tuning: {args.epochs} epochs on {len(train_x)} "
          f"training lines ({'distillation' if args.distill else 'labels'}, lr {args.lr:g})")
    results = {"fp32": fp32, "target": args.target, "methods": {}}
    rows = []
    for name in _available(args.methods.split(",")):
        table = os.path.join(args.tables, f"{name}_{args.score}{args.eval_lines}_"
                                          f"c{args.candidates}.json")
        t0 = time.perf_counter()
        small, report = compress_model(graph, name, target_macs=args.target, evaluate=evaluate,
                                       candidates=args.candidates, eval_table=table,
                                       data=eval_x, seed=0, quiet=False,
                                       monotone_fit=args.monotone_fit)
        search = time.perf_counter() - t0
        compressed = test(small)
        t0 = time.perf_counter()
        tuned, train_report = fine_tune(small, train_x, labels=None if args.distill else train_y,
                                        teacher=graph, epochs=args.epochs,
                                        lr=args.lr, batch_size=32, seed=0, dtype=np.float32,
                                        quiet=False)
        tuning = time.perf_counter() - t0
        tuned_acc = test(tuned)
        refq.save(tuned, os.path.join(args.tables, f"{name}_tuned.refq.h5"))
        ratios = {k: v["ratio"] for k, v in report["layers"].items()}
        print(f"\n{name}: {len(ratios)} of {len(get_method(name).layers(graph))} layers "
              f"compressed, MAC ratio {report['model']['ratio']:.3f}, parameter ratio "
              f"{report['model']['params_after'] / report['model']['params_before']:.3f}; "
              f"eval table {report['eval_table']} ({report['evaluations']} evaluations)")
        print("  " + ", ".join(f"{k}={v:g}" for k, v in ratios.items()))
        results["methods"][name] = {
            "ratios": ratios, "mac_ratio": report["model"]["ratio"],
            "param_ratio": report["model"]["params_after"] / report["model"]["params_before"],
            "accuracy_compressed": compressed, "accuracy_fine_tuned": tuned_acc,
            "search_seconds": search, "fine_tune_seconds": tuning,
            "evaluations": report["evaluations"], "selected_score": report["selected_score"],
            "loss_first": float(np.mean(train_report["loss"][:10])),
            "loss_last": float(np.mean(train_report["loss"][-10:]))}
        rows.append((name, report["model"]["ratio"], compressed, tuned_acc, search, tuning))
        print(f"  test accuracy: compressed {compressed:.1%}, fine-tuned {tuned_acc:.1%} (FP32 "
              f"{fp32:.1%}); search {search:.0f} s, fine-tuning {tuning:.0f} s", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    print(f"\nPP-OCR at {args.target:g} of the MACs (test accuracy on {len(test_y)} lines, "
          f"FP32 {fp32:.1%})")
    print(f"  {'method':18s}{'MAC ratio':>10s}{'compressed':>12s}{'fine-tuned':>12s}"
          f"{'vs FP32':>9s}{'search':>10s}{'fine-tune':>11s}")
    for name, ratio, comp, tuned_acc, search, tuning in rows:
        print(f"  {name:18s}{ratio:10.3f}{comp:11.1%} {tuned_acc:11.1%} "
              f"{100 * (tuned_acc - fp32):+8.1f}{search:9.0f} s{tuning:9.0f} s")


if __name__ == "__main__":
    main()
