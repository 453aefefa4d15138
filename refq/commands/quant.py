"""`refq quantize`, `refq equalize` and `refq report`: the quantization simulation and the
algorithms that prepare a model for it (BN folding, cross-layer equalization, bias correction)."""
from __future__ import annotations

from ..errors import InputError, RefqError
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
    from ..analysis.history import carry, load_history
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
    block_size = getattr(args, "block_size", None)
    if block_size is not None and (args.seq_mse or args.load_encodings is not None):
        raise InputError("--block-size calibrates blocked weight encodings: drop "
                         + ("--seq-mse (it searches per-channel ranges)" if args.seq_mse else
                            "--load-encodings (the file decides each weight's blocks)"))
    check_outputs(args.output, args.encodings, args.report, args.weights_html)
    if args.weights_html and not (args.fold_bn or args.cle or args.bias_correction):
        raise InputError("--weights-html shows the weights before and after BN folding / CLE; "
                         "drop --no-fold-bn or add --cle")
    graph = load_float_model(args.model, "`refq quantize`")
    history = carry(load_history(args.model))
    imported = graph
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
    if block_size is not None:     # AIMET's set_blockwise_quantization_for_weights
        sim.set_blockwise(block_size)
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
    if args.weights_html:
        _write_weights_html(args.weights_html, args.model, imported, sim.graph, report, args.quiet)
    sim.save(args.output, history=history)
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
        enc = sim.encodings[name]
        if enc.is_blocked:        # the grid ends of each element's block, half a step out
            scale, zp = (v.astype(np.float64) for v in enc.broadcast(w.shape))
            clipped = float(np.mean((w < scale * (enc.qmin - zp - 0.5))
                                    | (w > scale * (enc.qmax - zp + 0.5))))
        else:
            clipped = float(np.mean(clipped_mask(w, enc)))
        if clipped > MAX_CLIPPED_WEIGHTS:
            hint = ("they may come from the model with unfolded batch norms: add --no-fold-bn"
                    if folded else "check that they belong to this model")
            raise InputError(f"{path}: the encoding of '{name}' clips {clipped:.1%} of its weights "
                             f"(weights span [{w.min():.4g}, {w.max():.4g}]); {hint}, or accept "
                             "the clipping with --allow-weight-clipping")


def _write_weights_html(path, model_path, imported, prepared, report: dict, quiet: bool):
    """The weights section alone (imported, BN folded, after CLE / bias correction) as HTML."""
    import os

    from ..analysis.build import weight_stages
    from ..analysis.document import Report
    from ..analysis.html import write_html
    from ..analysis.weights import weights_section

    done = [label for key, label in (("cle", "CLE"), ("bias_correction", "bias correction"))
            if key in report]
    stages = weight_stages(imported, prepared, last_label=" + ".join(done) or "prepared")
    name = os.path.basename(os.fspath(model_path))
    write_html(Report(f"refq weights: {name}", [weights_section(stages, quiet=quiet)],
                      {"model": name, "steps": _steps(report)}), path)


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
    from ..analysis.history import carry, load_history
    from ..model_io import save

    check_outputs(args.output, args.report, args.weights_html)
    graph = imported = load_float_model(args.model, "`refq equalize`")
    history = carry(load_history(args.model))
    graph, report = prepare(graph, fold_bn=True, cle=True, relu6_to_relu=args.relu6_to_relu,
                            absorb_high_bias=not args.no_high_bias,
                            through_squeeze_excite=args.through_se)
    if args.report:
        write_json(args.report, report)
    if args.weights_html:
        _write_weights_html(args.weights_html, args.model, imported, graph, report, args.quiet)
    save(graph, args.output, sections=None if history is None else {"history": history})
    if not args.quiet:
        folded = len(report["bn_fold"].get("folded", []))
        cle = report["cle"]
        print(f"equalized {args.model}: {folded} batch norms folded, "
              f"{len(cle.get('sets', []))} equalization sets -> {args.output}")


def cmd_report(args):
    from ..data_io import iter_batches
    from ..quant.quantsim import QuantSim
    from ..report import format_report, quant_report

    check_outputs(args.json, flag="--json")
    check_outputs(args.html, flag="--html")
    sim = QuantSim.load(args.model)
    blocked = sorted(n for n, e in sim.encodings.items() if e.is_blocked)
    if blocked:     # the report's per-channel weight statistics have no per-block form yet
        raise InputError(f"{args.model}: weight quantizer '{blocked[0]}' is blocked (per block of "
                         f"{sim.encodings[blocked[0]].block_size} input channels); `refq report` "
                         "reads per-tensor and per-channel weights: compare outputs with `refq "
                         "run --mode sim` instead")
    full = args.html or args.plots or args.json
    if not full:
        for name in ("labels", "float_model", "sections", "profiles"):
            if getattr(args, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise InputError(f"{flag} applies to the full report: add --html, --plots or --json")
    options = _full_report_options(args) if full else None   # every check before any work
    report = quant_report(sim, iter_batches(args.data, sim.graph.inputs, args.batch_size),
                          quiet=args.quiet)
    if full:
        _write_full_report(args, sim, report, options)
    print(format_report(report, top=args.top))


def _full_report_options(args) -> dict:
    """The full report's sections, profiles, labels and float model from the options, checked
    (output paths, names, files) before any analysis runs."""
    import os

    from ..analysis.build import SECTIONS, check_sections
    from ..analysis.integer_profiles import profile_records
    from ..data_io import load_arrays

    if args.plots is not None:
        if os.path.exists(args.plots) and not os.path.isdir(args.plots):
            raise InputError(f"--plots {args.plots}: exists and is not a directory; give a "
                             "directory")
        check_outputs(os.path.join(args.plots, "figure.png"), flag="--plots")
    sections = SECTIONS if args.sections is None else tuple(
        s.strip() for s in args.sections.split(",") if s.strip())
    try:
        check_sections(sections)
    except InputError as e:
        raise InputError(f"--sections: {e}") from None
    profiles = None if args.profiles is None else [
        p.strip() for p in args.profiles.split(",") if p.strip()]
    if profiles is not None:
        try:
            profile_records(profiles)
        except RefqError as e:
            raise InputError(f"--profiles: {e}") from None
    return {"sections": sections, "profiles": profiles,
            "labels": None if args.labels is None else _load_labels(args.labels, load_arrays),
            "float_graph": None if args.float_model is None else load_float_model(
                args.float_model, "`refq report --float-model`")}


def _write_full_report(args, sim, sqnr, options: dict):
    """Every analysis of `refq.analysis.build` on the data, written as HTML, plot files and JSON."""
    import os

    from ..analysis.build import Batches, build_report
    from ..analysis.history import load_history
    from ..data_io import iter_batches

    name = os.path.basename
    data = Batches(lambda: iter_batches(args.data, sim.graph.inputs, args.batch_size))
    meta = {"model": name(args.model), "data": name(args.data),
            "labels": None if args.labels is None else name(args.labels),
            "float model": None if args.float_model is None else name(args.float_model),
            "numerics": _numerics_name(sim.numerics), "config": sim.config_source,
            "scheme": sim.scheme}
    doc = build_report(sim, data, labels=options["labels"], float_graph=options["float_graph"],
                       history=load_history(args.model), sections=options["sections"],
                       profiles=options["profiles"], batch_size=args.batch_size, meta=meta,
                       sqnr_report=sqnr, title=f"refq report: {name(args.model)}",
                       quiet=args.quiet)
    if args.json:
        write_json(args.json, doc.to_json())
    if args.plots is not None:
        from ..analysis.plots import write_plots

        write_plots(doc, args.plots, args.plot_format, quiet=args.quiet)
    if args.html:
        from ..analysis.html import write_html

        write_html(doc, args.html, quiet=args.quiet)


def _numerics_name(numerics) -> str:
    """"AIMET 2.42", "AIMET 1.x" or the numerics' fields."""
    from ..quant.numerics import AIMET_V1, AIMET_V2

    return {AIMET_V2: "AIMET 2.42", AIMET_V1: "AIMET 1.x"}.get(numerics, repr(numerics))


def _load_labels(path, load_arrays):
    """Class labels: a 1-D integer array (an .npy file, or an .npz holding exactly one array)."""
    import numpy as np

    arrays = load_arrays(path)
    if isinstance(arrays, dict):
        if len(arrays) != 1:
            raise InputError(f"{path}: give the labels as an .npy file or an .npz with one array "
                             f"(found {len(arrays)})")
        arrays = next(iter(arrays.values()))
    y = np.asarray(arrays)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{path}: labels must be a 1-D integer array (one class per input), got "
                         f"{y.dtype} of shape {list(y.shape)}")
    return y
