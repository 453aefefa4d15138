"""`refq compress`: spatial SVD, weight SVD or channel pruning of a float model, each layer's
ratio chosen by AIMET's greedy search to reach a target MAC or parameter ratio (or given by hand
with --ratios), optionally fine-tuned after (`refq.compression.compress`). The output's
`/history` section gets what the run did (`refq.analysis.history`): the score table, the chosen
ratios, the costs and the fine-tuning losses."""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

from ..errors import InputError
from . import check_outputs, model_argument, positive_int

#: a model ratio this far from the target gets a note under the report
NOTE_DISTANCE = 0.01


def _ratio(text):
    """argparse type: a ratio in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a ratio in (0, 1], got '{text}'")
    return value


def _layer_ratios(text) -> dict:
    """argparse type of --ratios LAYER=R,LAYER=R: {layer: ratio}."""
    ratios = {}
    for item in text.split(","):
        name, sep, value = item.strip().rpartition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected LAYER=RATIO[,LAYER=RATIO...], got "
                                             f"'{item.strip()}'")
        if name in ratios:
            raise argparse.ArgumentTypeError(f"layer '{name}' is given twice")
        ratios[name] = _ratio(value)
    return ratios


def add_compress_parser(sub):
    """Add `refq compress` to `sub`."""
    from ..compression import METHODS

    s = sub.add_parser("compress", help="compress a float model: spatial SVD, weight SVD or "
                                        "channel pruning, per-layer ratios by greedy search")
    model_argument(s, "a float model (.refq.h5 from `refq import`)")
    s.add_argument("--method", required=True, choices=list(METHODS),
                   help="the compression method (AIMET's)")
    target = s.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-macs", type=_ratio, metavar="R",
                        help="greedy search for this ratio of the model's MACs, e.g. 0.5")
    target.add_argument("--target-params", type=_ratio, metavar="R",
                        help="greedy search for this ratio of the model's parameters")
    target.add_argument("--ratios", type=_layer_ratios, metavar="LAYER=R,...",
                        help="per-layer ratios by hand (SVD: the layer's MAC ratio; channel "
                             "pruning: the fraction of input channels kept)")
    s.add_argument("--eval", metavar="DATA",
                   help="evaluation inputs: .npy (one-input model) or .npz keyed by input name; "
                        "also the reconstruction and fine-tuning data (needed by the greedy "
                        "search, channel pruning and fine-tuning)")
    s.add_argument("--labels", metavar="LABELS.npy",
                   help="class index per --eval sample: the score is top-1 accuracy and "
                        "fine-tuning uses cross-entropy (default: top-1 agreement with the "
                        "original model, fine-tuning by distillation to its logits)")
    s.add_argument("-o", "--output", required=True, metavar="C.refq.h5",
                   help="the compressed float model to write")
    s.add_argument("--candidates", type=positive_int, default=10, metavar="N",
                   help="candidate ratios k/N, k = 1..N-1 (default 10)")
    s.add_argument("--eval-table", metavar="SCORES.json",
                   help="the greedy search's scores per layer and ratio: read when the file "
                        "exists, else computed and written there (JSON)")
    s.add_argument("--monotone-fit", action="store_true",
                   help="fit each layer's scores with AIMET's monotone polynomial first")
    s.add_argument("--fine-tune-epochs", type=int, default=0, metavar="E",
                   help="fine-tune the compressed model for E epochs on --eval (default 0)")
    s.add_argument("--lr", type=float, default=1e-3, help="fine-tuning Adam learning rate "
                                                          "(default 1e-3)")
    s.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                   help="fine-tuning samples per step (default 32)")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the reconstruction samples and of the fine-tuning batch order "
                        "(default 0)")
    s.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="compute dtype of the evaluations and fine-tuning (default float64)")
    s.set_defaults(func=cmd_compress)


def _count(n: int) -> str:
    for size, unit in ((10 ** 9, "G"), (10 ** 6, "M"), (10 ** 3, "k")):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def _print_report(args, report, scores, what):
    metric = report["cost"]
    model = report["model"]
    target = "" if report["target"] is None else f", target {report['target']:g}"
    print(f"compressed {args.model} with {report['method']} ({report['mode']}): MACs "
          f"{_count(model['macs_before'])} -> {_count(model['macs_after'])}, parameters "
          f"{_count(model['params_before'])} -> {_count(model['params_after'])} ({metric} ratio "
          f"{model['ratio']:.3f}{target}) -> {args.output}")
    layers = report["layers"]
    width = max([len("layer")] + [len(k) for k in layers])
    print(f"  {'layer':{width}s} {'ratio':>7s} {'MACs before':>12s} {'MACs after':>11s} "
          f"{'params before':>14s} {'params after':>13s}")
    for name, row in layers.items():
        print(f"  {name:{width}s} {row['ratio']:7.3f} {row['macs_before']:12d} "
              f"{row['macs_after']:11d} {row['params_before']:14d} {row['params_after']:13d}")
    if not layers:
        print("  (no layer compressed)")
    if report["mode"] == "greedy":
        print(f"eval table: {report['eval_table']}; {report['evaluations']} evaluations; "
              f"selected score {report['selected_score']:.4f}")
        if abs(model["ratio"] - report["target"]) > NOTE_DISTANCE:
            print(f"note: the search ended at a {metric} ratio of {model['ratio']:.3f}, away "
                  f"from the target {report['target']:g}: no score gives a choice closer (the "
                  "per-layer ratios move in steps, equal scores move together), so it took the "
                  "lower end of its last score window, as AIMET's does; more --candidates make "
                  "finer steps, --ratios sets them by hand")
    if scores:
        print(f"{what}: " + ", ".join(f"{k} {v:.2%}" for k, v in scores.items()))


def cmd_compress(args):
    from ..analysis.history import (carry, compress_entry, eval_table_doc, load_history,
                                    training_record)
    from ..compression import get_method
    from ..compression.compress import (accuracy_evaluator, agreement_evaluator,
                                        compress_model, fine_tune)
    from ..compression.eval_table import load_eval_table
    from ..grad.optim import batch_order
    from ..model_io import save
    from .quant import load_float_model
    from .train import _labels, _training_data

    check_outputs(args.output)
    check_outputs(args.eval_table, flag="--eval-table")
    if args.fine_tune_epochs < 0:
        raise InputError(f"--fine-tune-epochs {args.fine_tune_epochs}: give 0 or more epochs")
    if args.candidates < 2:
        raise InputError(f"--candidates {args.candidates}: give at least 2 (candidates k/N, "
                         "k = 1..N-1)")
    needs_data = args.ratios is None or args.fine_tune_epochs > 0 \
        or args.method == "channel-pruning"
    if args.eval is None and needs_data:
        raise InputError("give evaluation data with --eval DATA (the greedy search, channel "
                         "pruning's reconstruction and fine-tuning use it)")
    if args.ratios is not None and (args.eval_table is not None or args.monotone_fit):
        raise InputError("--eval-table and --monotone-fit belong to the greedy search; with "
                         "--ratios there is none (give --target-macs or --target-params)")
    if args.labels is not None and args.eval is None:
        raise InputError("--labels label the --eval samples: give --eval too")
    method = get_method(args.method)
    graph = load_float_model(args.model, "`refq compress`")
    earlier = load_history(args.model)
    dtype = np.float32 if args.dtype == "float32" else np.float64
    feeds, labels, evaluate, what, n = None, None, None, "", None
    if args.eval is not None:
        feeds, n = _training_data(args.eval, graph)
        if args.labels is not None:
            classes = int(np.shape(_first_output(graph, feeds))[-1])
            labels = _labels(args.labels, n, classes)
            evaluate = accuracy_evaluator(feeds, labels, dtype=dtype)
        else:
            evaluate = agreement_evaluator(graph, feeds, dtype=dtype)
        what = evaluate.description
    if args.fine_tune_epochs > 0 and n < args.batch_size:
        raise InputError(f"{args.eval}: {n} samples, fewer than --batch-size {args.batch_size}")
    greedy = args.ratios is None
    with tempfile.TemporaryDirectory() as tmp:
        # the search's scores go to the history: through a scratch eval table when none is given
        table_path = args.eval_table if args.eval_table is not None or not greedy \
            else os.path.join(tmp, "scores.json")
        compressed, report = compress_model(
            graph, method, target_macs=args.target_macs, target_params=args.target_params,
            ratios=args.ratios, evaluate=evaluate, candidates=args.candidates,
            eval_table=table_path, data=feeds, seed=args.seed, quiet=args.quiet,
            monotone_fit=args.monotone_fit)
        table = eval_table_doc(*load_eval_table(table_path)) if greedy else None
    if greedy and args.eval_table is None:
        report["eval_table"] = "computed"
    scores, tuned = {}, None
    if evaluate is not None:
        scores = {"original": report["score_before"], "compressed": report["score_after"]}
    if args.fine_tune_epochs > 0:
        compressed, ft = fine_tune(compressed, feeds, labels=labels,
                                   teacher=None if labels is not None else graph,
                                   epochs=args.fine_tune_epochs, lr=args.lr,
                                   batch_size=args.batch_size, seed=args.seed, dtype=dtype,
                                   quiet=args.quiet)
        score = evaluate(compressed)
        scores[f"fine-tuned ({args.fine_tune_epochs} epoch"
               f"{'s' * (args.fine_tune_epochs != 1)})"] = score
        tuned = {**training_record(ft["loss"], len(batch_order(n, args.batch_size, args.seed,
                                                                 0))), "score": float(score)}
    tuning = args.fine_tune_epochs > 0
    options = {"method": method.name, "mode": report["mode"], "cost": report["cost"],
               "target": report["target"], "candidates": args.candidates if greedy else None,
               "monotone_fit": bool(args.monotone_fit), "seed": args.seed, "dtype": args.dtype,
               "fine_tune_epochs": args.fine_tune_epochs, "lr": args.lr if tuning else None,
               "batch_size": args.batch_size if tuning else None}
    entry = compress_entry(report, model=graph.name, options=options, samples=n,
                           evaluation=what, eval_table=table, fine_tune=tuned)
    save(compressed, args.output, sections={"history": carry(earlier, entry)})
    _print_report(args, report, scores, what)


def _first_output(graph, feeds):
    from ..plan import Plan

    return Plan(graph).run({k: v[:1] for k, v in feeds.items()})[graph.outputs[0]]
