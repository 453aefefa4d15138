"""`refq quantize`, `refq equalize` and `refq report`: the quantization simulation and the
algorithms that prepare a model for it (BN folding, cross-layer equalization, bias correction)."""
from __future__ import annotations

from ..errors import InputError
from . import check_outputs, write_json


def load_float_model(path, command: str):
    """The float graph of `path`; an InputError naming the file when it holds an integer model."""
    from ..model_io import load

    graph = load(path)
    if "integer" in graph.meta:
        raise InputError(f"{path}: holds an integer model (from `refq lower`); {command} takes a "
                         "float model: give the .refq.h5 from `refq import` (or its quantized "
                         "model)")
    return graph


def cmd_quantize(args):
    from ..data_io import iter_batches
    from ..quant.quantsim import QuantSim

    if args.config and args.per_channel:
        raise InputError("give either --config or --per-channel, not both")
    if args.calib is not None and args.load_encodings is not None:
        raise InputError("give either --calib (calibrate) or --load-encodings (take AIMET's "
                         "encodings), not both")
    if args.percentile is not None and args.scheme != "percentile":
        raise InputError("--percentile applies to --scheme percentile only")
    if args.calib is None and args.load_encodings is None:
        raise InputError("give calibration data (--calib) or an AIMET encodings file "
                         "(--load-encodings)")
    if args.seq_mse and args.calib is None:
        raise InputError("--seq-mse searches weight encodings on calibration data: give --calib")
    if args.bias_correction == "empirical" and args.calib is None:
        raise InputError("--bias-correction empirical needs calibration data (--calib)")
    if args.cle and not args.fold_bn:
        raise InputError("--cle folds batch norms first; drop --no-fold-bn")
    check_outputs(args.output, args.encodings, args.report)
    graph = load_float_model(args.model, "`refq quantize`")
    inputs = graph.inputs
    options = {} if args.percentile is None else {"percentile": args.percentile}
    config = args.config or ("per_channel" if args.per_channel else "per_tensor")
    report = {}
    if args.fold_bn or args.cle or args.bias_correction:
        from ..algorithms import prepare

        data = None if args.calib is None else iter_batches(args.calib, inputs, args.batch_size)
        graph, report = prepare(
            graph, fold_bn=args.fold_bn, cle=args.cle, relu6_to_relu=args.relu6_to_relu,
            absorb_high_bias=not args.no_high_bias, through_squeeze_excite=args.through_se,
            bias_correction=args.bias_correction, data=data, config=config,
            param_bw=args.param_bw, scheme=args.scheme, scheme_options=options,
            batch_size=args.batch_size, quiet=args.quiet)
    sim = QuantSim(graph, config, param_bw=args.param_bw, act_bw=args.act_bw, scheme=args.scheme,
                   scheme_options=options)
    if args.load_encodings:
        from ..exporters.aimet_encodings import load_aimet_encodings

        sim = load_aimet_encodings(sim, args.load_encodings)
        if not args.allow_weight_clipping:
            _check_loaded_weight_ranges(sim, args.load_encodings, folded="bn_fold" in report)
    else:
        if args.seq_mse:   # weight encodings searched first and frozen, then the calibration
            from ..algorithms.seq_mse import seq_mse

            sim, report["seq_mse"] = seq_mse(
                sim, list(iter_batches(args.calib, inputs, args.batch_size)))
        sim.compute_encodings(iter_batches(args.calib, inputs, args.batch_size), quiet=args.quiet)
    if args.encodings:
        from ..exporters.aimet_encodings import export_aimet_encodings

        export_aimet_encodings(sim, args.encodings, version=args.encodings_version)
    if args.report is not None:
        write_json(args.report, report)
    sim.save(args.output)
    if not args.quiet:
        p = sim.placement
        print(f"quantized {args.model} ({_steps(report)}): W{args.param_bw}A{args.act_bw} "
              f"{sim.config_source}, {sim.scheme}; {p['activation_quantizers']} activation and "
              f"{p['param_quantizers']} parameter quantizers, {len(p['supergroups'])} supergroups, "
              f"{len(p['shared'])} shared -> {args.output}"
              + (f"; AIMET encodings {args.encodings}" if args.encodings else ""))


MAX_CLIPPED_WEIGHTS = 0.01  # a loaded weight encoding may clip at most this fraction of values


def _check_loaded_weight_ranges(sim, path, folded: bool):
    """Refuse loaded weight encodings that clip more than MAX_CLIPPED_WEIGHTS of their weights
    (beyond half a step): they were made for other weights, typically for the model with its
    batch norms unfolded (AIMET's default)."""
    import numpy as np

    from ..report import clipped_mask

    for name, q in sim.quantizers.items():
        if q.kind != "param" or name not in sim.encodings:
            continue
        w = np.asarray(sim.graph.node(q.node).params[q.param], np.float64)
        clipped = float(np.mean(clipped_mask(w, sim.encodings[name])))
        if clipped > MAX_CLIPPED_WEIGHTS:
            hint = ("they may come from the model with unfolded batch norms: add --no-fold-bn"
                    if folded else "check that they belong to this model")
            raise InputError(f"{path}: the encoding of '{name}' clips {clipped:.1%} of its weights "
                             f"(weights span [{w.min():.4g}, {w.max():.4g}]); {hint}, or accept "
                             "the clipping with --allow-weight-clipping")


def _steps(report: dict) -> str:
    """What `prepare` did, in a few words: batch norms folded, CLE sets, layers bias-corrected."""
    steps = []
    if "bn_fold" in report:
        steps.append(f"{len(report['bn_fold'].get('folded', []))} batch norms folded")
    else:
        steps.append("batch norms not folded")
    if "cle" in report:
        steps.append(f"CLE {len(report['cle'].get('sets', []))} sets")
    if "bias_correction" in report:
        bc = report["bias_correction"]
        steps.append(f"{bc['mode']} bias correction of {len(bc['corrected'])} layers")
    if "seq_mse" in report:
        steps.append(f"SeqMSE weight ranges of {len(report['seq_mse']['layers'])} layers")
    return ", ".join(steps)


def cmd_equalize(args):
    from ..algorithms import prepare
    from ..model_io import save

    check_outputs(args.output, args.report)
    graph = load_float_model(args.model, "`refq equalize`")
    graph, report = prepare(graph, fold_bn=True, cle=True, relu6_to_relu=args.relu6_to_relu,
                            absorb_high_bias=not args.no_high_bias,
                            through_squeeze_excite=args.through_se)
    if args.report:
        write_json(args.report, report)
    save(graph, args.output)
    if not args.quiet:
        folded = len(report["bn_fold"].get("folded", []))
        cle = report["cle"]
        print(f"equalized {args.model}: {folded} batch norms folded, "
              f"{len(cle.get('sets', []))} equalization sets -> {args.output}")


def cmd_report(args):
    from ..data_io import iter_batches
    from ..quant.quantsim import QuantSim
    from ..report import format_report, quant_report

    check_outputs(args.json)
    sim = QuantSim.load(args.model)
    inputs = sim.graph.inputs
    report = quant_report(sim, iter_batches(args.data, inputs, args.batch_size), quiet=args.quiet)
    if args.json:
        write_json(args.json, report)
    print(format_report(report, top=args.top))
