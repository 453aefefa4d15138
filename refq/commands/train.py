"""The learned-quantization commands: `refq qat` (quantization-aware fine-tuning of a quantized
model, `refq.grad.train` on its QuantSim, with labels or a teacher), `refq adaround` (AdaRound of
its weights) and `refq bn-reestimate` (batch-norm statistics re-estimated on data)."""
from __future__ import annotations

import sys

import numpy as np

from ..errors import InputError
from . import check_outputs


def logits_tensor(graph, name=None) -> str:
    """`name` when given (it must be a tensor of the graph), else the input of the graph's final
    softmax, else its only output."""
    tensors = {s.name for s in graph.inputs} | {t for n in graph.nodes for t in n.outputs}
    if name is not None:
        if name not in tensors:
            raise InputError(f"--logits {name}: model '{graph.name}' has no such tensor")
        return name
    if len(graph.outputs) != 1:
        raise InputError(f"model '{graph.name}' has outputs {graph.outputs}; name the logits "
                         "tensor with --logits")
    producer = {n.outputs[0]: n for n in graph.nodes}.get(graph.outputs[0])
    return producer.inputs[0] if producer is not None and producer.op == "softmax" \
        else graph.outputs[0]


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


def cmd_qat(args):
    from ..grad import Adam, cross_entropy, kl_divergence
    from ..grad.train import train
    from ..model_io import load, load_section
    from ..quant.placement import integer_model_kind
    from ..quant.quantsim import QuantSim

    if (args.labels is None) == (args.teacher is None):
        raise InputError("give --labels LABELS.npy (cross-entropy) or --teacher FLOAT.refq.h5 "
                         "(distillation), one of the two")
    check_outputs(args.output, args.checkpoint)
    graph = load(args.model)
    if integer_model_kind(graph) is not None:
        raise InputError(f"{args.model}: an integer model; `refq qat` fine-tunes the quantized "
                         "model it was lowered from (the output of `refq quantize`)")
    if load_section(args.model, "encodings") is None:
        raise InputError(f"{args.model}: a float model without a quantization simulation; "
                         f"quantize it first (`refq quantize {args.model} --calib DATA -o "
                         "Q.refq.h5`)")
    sim = QuantSim.load(args.model)
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
    tuned.save(args.output)
    if not args.quiet:
        k = max(1, min(10, report["steps"] // 4))   # mean of the first and of the last k steps
        first, last = np.mean(report["loss"][:k]), np.mean(report["loss"][-k:])
        what = "cross-entropy" if args.labels is not None else "distillation (KL)"
        ranges = f", {report['ranges']} ranges learned" if args.learn_ranges else ""
        print(f"fine-tuned {args.model}: {report['steps']} steps over {args.epochs} epoch(s), "
              f"{what} on '{logits}'{ranges}, loss {first:.4g} (first {k}) -> {last:.4g} (last {k}) "
              f"-> {args.output}",
              file=sys.stdout)


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


def cmd_adaround(args):
    from ..algorithms.adaround import adaround

    check_outputs(args.output, args.encodings)
    sim = _quantized(args.model, "`refq adaround`")
    feeds, n = _training_data(args.data, sim.graph)
    try:
        beta = tuple(float(v) for v in args.beta.split(","))
    except ValueError:
        beta = ()
    if len(beta) != 2:
        raise InputError(f"--beta {args.beta}: give the start and end, e.g. 20,2")
    rounded, report = adaround(sim, feeds, iterations=args.iterations, reg=args.reg, beta=beta,
                               warm_start=args.warm_start, seed=args.seed,
                               batch_size=args.batch_size, param_bw=args.param_bw)
    if args.encodings:
        from ..exporters.aimet_encodings import export_aimet_encodings

        export_aimet_encodings(rounded, args.encodings)
    rounded.save(args.output)
    if not args.quiet:
        layers = report["layers"]
        print(f"AdaRound of {args.model}: {len(layers)} layers, {n} samples -> {args.output}"
              + (f"; AIMET encodings {args.encodings}" if args.encodings else ""))


def cmd_bn_reestimate(args):
    from ..algorithms.bn_reestimation import fold_reestimated_bns, reestimate_bn_stats
    from ..model_io import load, load_section
    from ..quant.quantsim import QuantSim

    check_outputs(args.output)
    model = QuantSim.load(args.model) if load_section(args.model, "encodings") is not None \
        else load(args.model)
    graph = model.graph if isinstance(model, QuantSim) else model
    feeds, _ = _training_data(args.data, graph)
    new, report = reestimate_bn_stats(model, feeds, num_batches=args.num_batches,
                                      batch_size=args.batch_size, quiet=args.quiet)
    if args.fold:
        new, _ = fold_reestimated_bns(new)
    if isinstance(new, QuantSim):
        new.save(args.output)
    else:
        from ..model_io import save

        save(new, args.output)
    if not args.quiet:
        print(f"re-estimated the batch norms of {args.model} ({len(report['batch_norms'])} "
              f"nodes, {report['num_batches']} batches)"
              + (", folded" if args.fold else "") + f" -> {args.output}")
