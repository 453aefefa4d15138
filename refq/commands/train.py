"""The learned-quantization commands: `refq qat` (quantization-aware fine-tuning of a quantized
model, `refq.grad.train` on its QuantSim, with labels or a teacher), `refq adaround` (AdaRound of
its weights) and `refq bn-reestimate` (batch-norm statistics re-estimated on data). Each writes
the input's `/history` section forward; qat and adaround append what they did (loss curves,
`refq.analysis.history`)."""
from __future__ import annotations

import sys

import numpy as np

from ..data_io import DEFAULT_BATCH_SIZE as DEFAULT_DATA_BATCH
from ..errors import InputError
from ..grad.train import logits_tensor
from . import BATCH_HELP, bitwidth, check_outputs, model_argument, positive_int


def _training_data(path, graph):
    """{input name: float32 array} from an .npy (one-input model) or .npz file, checked."""
    from ..data_io import check_data, load_arrays
    from ..feeds import check_input

    arrays = load_arrays(path)
    if not isinstance(arrays, dict):
        if len(graph.inputs) != 1:
            raise InputError(f"{path}: the model has inputs {[s.name for s in graph.inputs]}; "
                             "give an .npz keyed by input name")
        arrays = {graph.inputs[0].name: arrays}
    feeds = {}
    for spec in graph.inputs:
        if spec.name not in arrays:
            raise InputError(f"{path}: no array for input '{spec.name}'")
        x = check_data(np.asarray(arrays[spec.name]), path, spec.name)
        try:
            check_input(spec, x)
        except InputError as e:
            raise InputError(f"{path}: {e}") from None
        feeds[spec.name] = x.astype(np.float32)
    n = {len(v) for v in feeds.values()}
    if len(n) != 1:
        raise InputError(f"{path}: the inputs have different numbers of samples {sorted(n)}")
    return feeds, n.pop()


def _labels(path, n, classes):
    from ..data_io import load_arrays

    y = load_arrays(path)
    if isinstance(y, dict) or y.ndim != 1 or y.dtype.kind not in "iu":
        raise InputError(f"--labels {path}: expected a 1-d integer .npy array of class indices")
    if len(y) != n:
        raise InputError(f"--labels {path}: {len(y)} labels for {n} samples")
    bad = np.flatnonzero((y < 0) | (y >= classes))
    if bad.size:
        raise InputError(f"--labels {path}: label {int(y[bad[0]])} at index {int(bad[0])} is "
                         f"outside [0, {classes})")
    return y.astype(np.int64)


def _teacher_logits(path, feeds, logits, batch_size):
    """The float teacher's logits (tensor `logits` of the teacher) on every sample, float32."""
    from ..plan import Plan
    from .quant import load_float_model

    teacher = load_float_model(path, "`refq qat --teacher`")
    name = logits_tensor(teacher, logits)
    plan = Plan(teacher, np.float32)
    n = len(next(iter(feeds.values())))
    parts = [plan.run({k: v[s:s + batch_size] for k, v in feeds.items()}, trace=True)[name]
             for s in range(0, n, batch_size)]
    return np.concatenate(parts)


def _quantized(path, command: str):
    """The QuantSim of `path`; an InputError naming the file when it holds none."""
    from ..model_io import load, load_section
    from ..quant.placement import integer_model_kind
    from ..quant.quantsim import QuantSim

    if integer_model_kind(load(path)) is not None:
        raise InputError(f"{path}: an integer model; {command} takes the quantized model it was "
                         "lowered from (the output of `refq quantize`)")
    if load_section(path, "encodings") is None:
        raise InputError(f"{path}: a float model without a quantization simulation; quantize it "
                         f"first (`refq quantize {path} --calib DATA -o Q.refq.h5`)")
    return QuantSim.load(path)


def cmd_qat(args):
    from ..analysis.history import carry, load_history, qat_entry
    from ..grad import Adam, cross_entropy, kl_divergence
    from ..grad.optim import batch_order
    from ..grad.train import train

    if (args.labels is None) == (args.teacher is None):
        raise InputError("give --labels LABELS.npy (cross-entropy) or --teacher FLOAT.refq.h5 "
                         "(distillation), one of the two")
    check_outputs(args.output, args.checkpoint)
    sim = _quantized(args.model, "`refq qat`")
    earlier = load_history(args.model)
    logits = logits_tensor(sim.graph, args.logits)
    feeds, n = _training_data(args.data, sim.graph)
    if n < args.batch_size:
        raise InputError(f"{args.data}: {n} samples, fewer than --batch-size {args.batch_size}")
    if args.labels is not None:
        classes = np.shape(sim.run({k: v[:1] for k, v in feeds.items()}, trace=True)[logits])[-1]
        targets, loss = _labels(args.labels, n, classes), cross_entropy
    else:
        targets, loss = _teacher_logits(args.teacher, feeds, args.logits, 64), kl_divergence
    tuned, report = train(None if args.resume else sim, feeds, loss, Adam(args.lr),
                          targets=targets, epochs=args.epochs, batch_size=args.batch_size,
                          seed=args.seed, output=logits, learn_ranges=args.learn_ranges,
                          checkpoint=args.checkpoint, resume=args.resume, quiet=args.quiet)
    options = {"loss": "cross-entropy" if args.labels is not None else "distillation (KL)",
               "logits": logits, "epochs": args.epochs, "lr": args.lr,
               "batch_size": args.batch_size, "seed": args.seed,
               "learn_ranges": bool(args.learn_ranges)}
    tuned.save(args.output, history=carry(earlier, qat_entry(
        report, model=sim.graph.name, options=options, samples=n,
        steps_per_epoch=len(batch_order(n, args.batch_size, args.seed, 0)))))
    if not args.quiet:
        k = max(1, min(10, report["steps"] // 4))   # mean of the first and of the last k steps
        first, last = np.mean(report["loss"][:k]), np.mean(report["loss"][-k:])
        what = "cross-entropy" if args.labels is not None else "distillation (KL)"
        ranges = f", {report['ranges']} ranges learned" if args.learn_ranges else ""
        print(f"fine-tuned {args.model}: {report['steps']} steps over {args.epochs} epoch(s), "
              f"{what} on '{logits}'{ranges}, loss {first:.4g} (first {k}) -> {last:.4g} (last {k}) "
              f"-> {args.output}",
              file=sys.stdout)


def cmd_adaround(args):
    from ..algorithms.adaround import adaround
    from ..analysis.history import CURVE_POINTS, adaround_entry, carry, load_history

    check_outputs(args.output, args.encodings)
    sim = _quantized(args.model, "`refq adaround`")
    earlier = load_history(args.model)
    feeds, n = _training_data(args.data, sim.graph)
    try:
        beta = tuple(float(v) for v in args.beta.split(","))
    except ValueError:
        beta = ()
    if len(beta) != 2:
        raise InputError(f"--beta {args.beta}: give the start and end, e.g. 20,2")
    if n < args.batch_size:
        raise InputError(f"{args.data}: {n} samples, fewer than --batch-size {args.batch_size}")
    rounded, report = adaround(sim, feeds, iterations=args.iterations, reg=args.reg, beta=beta,
                               warm_start=args.warm_start, seed=args.seed,
                               batch_size=args.batch_size, param_bw=args.param_bw,
                               curve_points=CURVE_POINTS)
    if args.encodings:
        from ..exporters.aimet_encodings import export_aimet_encodings

        export_aimet_encodings(rounded, args.encodings)
    options = {"iterations": report["iterations"], "reg": args.reg, "beta": list(beta),
               "warm_start": args.warm_start, "batch_size": args.batch_size, "seed": args.seed,
               "param_bw": args.param_bw}
    rounded.save(args.output, history=carry(earlier, adaround_entry(
        report, model=sim.graph.name, options=options, samples=n)))
    if not args.quiet:
        layers = report["layers"]
        print(f"AdaRound of {args.model}: {len(layers)} layers, {n} samples -> {args.output}"
              + (f"; AIMET encodings {args.encodings}" if args.encodings else ""))


def cmd_bn_reestimate(args):
    from ..algorithms.bn_reestimation import fold_reestimated_bns, reestimate_bn_stats
    from ..analysis.history import carry, load_history
    from ..model_io import load, load_section
    from ..quant.quantsim import QuantSim

    check_outputs(args.output)
    model = QuantSim.load(args.model) if load_section(args.model, "encodings") is not None \
        else load(args.model)
    history = carry(load_history(args.model))
    graph = model.graph if isinstance(model, QuantSim) else model
    feeds, _ = _training_data(args.data, graph)
    new, report = reestimate_bn_stats(model, feeds, num_batches=args.num_batches,
                                      batch_size=args.batch_size, quiet=args.quiet)
    if args.fold:
        new, _ = fold_reestimated_bns(new)
    if isinstance(new, QuantSim):
        new.save(args.output, history=history)
    else:
        from ..model_io import save

        save(new, args.output, sections=None if history is None else {"history": history})
    if not args.quiet:
        print(f"re-estimated the batch norms of {args.model} ({len(report['batch_norms'])} "
              f"nodes, {report['num_batches']} batches)"
              + (", folded" if args.fold else "") + f" -> {args.output}")

def _sampling_options(s, unit: str):
    """--batch-size and --seed of a command that draws seeded samples every `unit`."""
    s.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                   help=f"samples per {unit} (default 32)")
    s.add_argument("--seed", type=int, default=0,
                   help=f"seed of the samples each {unit} draws (default 0)")


def add_learning_parsers(sub):
    """Add `refq qat`, `refq adaround` and `refq bn-reestimate` to `sub`."""
    s = sub.add_parser("qat", help="quantization-aware fine-tuning of a quantized model")
    model_argument(s, "a quantized model (.refq.h5 from `refq quantize`)")
    s.add_argument("--data", required=True, metavar="TRAIN",
                   help="training inputs: .npy (one-input model) or .npz keyed by input name")
    s.add_argument("--labels", metavar="LABELS.npy",
                   help="class index per sample: cross-entropy on the logits")
    s.add_argument("--teacher", metavar="FLOAT.refq.h5",
                   help="a float model whose logits are the targets (distillation, KL divergence)")
    s.add_argument("-o", "--output", required=True, metavar="T.refq.h5",
                   help="output .refq.h5 with the fine-tuned simulation")
    s.add_argument("--epochs", type=positive_int, default=1, help="passes over the data "
                                                                    "(default 1)")
    s.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    _sampling_options(s, "step")
    s.add_argument("--learn-ranges", action="store_true",
                   help="learn every quantizer's min and max too (AIMET 2.42 range learning; "
                        "default: ranges frozen)")
    s.add_argument("--logits", metavar="TENSOR",
                   help="the tensor the loss reads (default: the input of the final softmax, "
                        "else the output)")
    s.add_argument("--checkpoint", metavar="CK.refq.h5",
                   help="write the model and its training state after every epoch")
    s.add_argument("--resume", metavar="CK.refq.h5",
                   help="go on from a checkpoint (same data, seed and batch size)")
    s.set_defaults(func=cmd_qat)

    s = sub.add_parser("adaround", help="AdaRound the weights of a quantized model")
    model_argument(s, "a quantized model (.refq.h5 from `refq quantize`)")
    s.add_argument("--data", required=True, metavar="CALIB",
                   help="calibration inputs: .npy (one-input model) or .npz keyed by input name")
    s.add_argument("-o", "--output", required=True, metavar="R.refq.h5",
                   help="output .refq.h5 with the rounded weights and their encodings")
    s.add_argument("--iterations", type=positive_int, default=None, metavar="N",
                   help="iterations per layer (default AIMET's: 10000 at >= 8-bit weights, "
                        "else 15000)")
    s.add_argument("--param-bw", type=bitwidth, default=None, metavar="BITS",
                   help="weight bitwidth (default: the model's)")
    s.add_argument("--reg", type=float, default=0.01, help="rounding regularizer weight "
                                                           "(default 0.01)")
    s.add_argument("--beta", default="20,2", help="start,end of the annealed beta (default 20,2)")
    s.add_argument("--warm-start", type=float, default=0.2,
                   help="fraction of the iterations without the regularizer (default 0.2)")
    _sampling_options(s, "iteration")
    s.add_argument("--encodings", metavar="OUT.encodings",
                   help="also write AIMET encodings JSON here")
    s.set_defaults(func=cmd_adaround)

    s = sub.add_parser("bn-reestimate", help="re-estimate batch-norm statistics on data")
    model_argument(s, "a float or quantized model with batch norms")
    s.add_argument("--data", required=True, metavar="DATA",
                   help="inputs: .npy (one-input model) or .npz keyed by input name")
    s.add_argument("-o", "--output", required=True, metavar="OUT.refq.h5", help="output .refq.h5")
    s.add_argument("--num-batches", type=positive_int, default=100, metavar="N",
                   help="batches to average over (default 100, AIMET's)")
    s.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help=BATCH_HELP.format(DEFAULT_DATA_BATCH))
    s.add_argument("--fold", action="store_true",
                   help="then fold the batch norms (into the quantized weights' scales for a "
                        "quantized model)")
    s.set_defaults(func=cmd_bn_reestimate)
