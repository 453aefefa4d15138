"""The `refq` command.

    refq import MODEL.h5 -o MODEL.refq.h5 [--architecture ARCH.json]
    refq info MODEL.refq.h5 [--json]
    refq run MODEL.refq.h5 --input X.npy --output Y.npy [--mode float|sim] [--trace DIR]
             [--dtype float64|float32] [--batch-size N] [--quiet]
    refq quantize MODEL.refq.h5 --calib CALIB.npy -o Q.refq.h5 [--config CFG | --per-channel]
             [--scheme minmax|tf_enhanced|percentile|sqnr|mse] [--param-bw 8] [--act-bw 8]
             [--encodings OUT.encodings] [--load-encodings AIMET.encodings] [--batch-size N]
             [--fold-bn] [--cle [--relu6-to-relu] [--through-se] [--no-high-bias]]
             [--bias-correction empirical|analytical] [--report DFQ.json]
    refq equalize MODEL.refq.h5 -o EQ.refq.h5 [--report CLE.json] [--relu6-to-relu]
             [--through-se] [--no-high-bias]
    refq report Q.refq.h5 --data X.npy [--json REPORT.json] [--top N] [--batch-size N]
    refq lower Q.refq.h5 --profile tflite -o INT.refq.h5
    refq run INT.refq.h5 --mode int --input X.npy --output Y.npy [--trace DIR]
    refq compare Q.refq.h5 --profile tflite --data X.npy [--json CMP.json] [--all-layers]
    refq profiles
    refq golden generate [--cases PATTERN] [--out DIR]
    refq golden check [--golden DIR] [--cases PATTERN]
    refq golden verify CASE_DIR --dut DIR [--json REPORT]
    refq export INT.refq.h5|CASE_DIR --format hex|c|bin[,...] -o DIR [--pack K]
    refq conformance run --adapter MODULE:FUNCTION [--golden DIR] [--cases PATTERN] [--json R]
    refq demo [--quiet]

Errors in the input (RefqError) are printed as one line `refq: error: ...` and exit with status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import __version__
from .atomic import atomic_path, save_npy
from .errors import InputError, RefqError
from .data_io import load_arrays
from .model_io import escape_name


def cmd_import(args):
    from . import import_keras, save

    graph = import_keras(args.model, architecture=args.architecture)
    save(graph, args.output)
    if not args.quiet:
        print(f"imported {args.model}: {len(graph.nodes)} nodes -> {args.output}")


def cmd_info(args):
    from .model_io import load, read_graph_json
    from .summary import format_table, summarize

    if args.json:
        print(json.dumps(read_graph_json(args.model), indent=1))
        return
    graph = load(args.model)
    ins = ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in graph.inputs)
    print(format_table(summarize(graph), title=f"{graph.name}: inputs {ins}; outputs "
                                                f"{', '.join(graph.outputs)}"))


def cmd_run(args):
    from .model_io import load

    feeds = load_arrays(args.input)
    stats = None
    if args.mode == "int":
        from .fixedpoint.run import run_int

        if args.dtype is not None:
            raise InputError("--dtype applies to --mode float; an integer model computes exactly")
        graph = load(args.model)
        if "integer" not in graph.meta:
            raise InputError(f"{args.model} is not an integer model; lower it first with "
                             "`refq lower`")

        def runner(f, **kw):
            nonlocal stats
            out, stats = run_int(graph, f, **kw)
            return out

        kwargs = {}
    elif args.mode == "sim":
        from .quant.quantsim import QuantSim

        if args.dtype is not None:
            raise InputError("--dtype applies to --mode float; a simulation runs in its numerics' "
                             "dtype (float32 for AIMET numerics)")
        sim = QuantSim.load(args.model)
        graph = sim.graph
        runner = sim.run
        kwargs = {}
    else:
        from .runtime import run

        graph = load(args.model)
        runner = lambda f, **kw: run(graph, f, **kw)  # noqa: E731
        kwargs = {"dtype": np.dtype(args.dtype or "float64").type}
    try:
        result = runner(feeds, trace=bool(args.trace), batch_size=args.batch_size,
                        quiet=args.quiet, **kwargs)
    except InputError as e:  # name the file the arrays came from
        raise InputError(f"{args.input}: {e}") from None
    outputs = {k: result[k] for k in graph.outputs}
    if args.output.endswith(".npz"):
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **outputs)
    elif len(outputs) == 1:
        save_npy(args.output, next(iter(outputs.values())))
    else:
        raise InputError(f"{args.model} has {len(outputs)} outputs {list(outputs)}; "
                         "write them with --output FILE.npz")
    if args.trace:
        os.makedirs(args.trace, exist_ok=True)
        index = {}
        for name, value in result.items():
            index[name] = escape_name(name) + ".npy"
            save_npy(os.path.join(args.trace, index[name]), value)
        with atomic_path(os.path.join(args.trace, "index.json")) as tmp:
            with open(tmp, "w") as f:
                json.dump(index, f, indent=1)
    if not args.quiet:
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
        print(f"wrote {shapes} to {args.output}" + (f"; trace in {args.trace}" if args.trace else ""))
        if stats:
            worst = min(stats.items(), key=lambda kv: kv[1]["headroom_bits"])
            print(f"accumulators: {len(stats)} nodes, least headroom {worst[1]['headroom_bits']} "
                  f"bits at '{worst[0]}' (max |acc| {worst[1]['max_abs_acc']:,} of "
                  f"{worst[1]['accumulator_bits']} bits)")


def cmd_quantize(args):
    from .data_io import iter_batches
    from .model_io import load
    from .quant.quantsim import QuantSim

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
    if args.bias_correction == "empirical" and args.calib is None:
        raise InputError("--bias-correction empirical needs calibration data (--calib)")
    graph = load(args.model)
    names = [s.name for s in graph.inputs]
    options = {} if args.percentile is None else {"percentile": args.percentile}
    config = args.config or ("per_channel" if args.per_channel else "per_tensor")
    report = None
    if args.fold_bn or args.cle or args.bias_correction:
        from .algorithms import prepare

        data = None if args.calib is None else iter_batches(args.calib, names, args.batch_size)
        graph, report = prepare(
            graph, fold_bn=args.fold_bn, cle=args.cle, relu6_to_relu=args.relu6_to_relu,
            absorb_high_bias=not args.no_high_bias, through_squeeze_excite=args.through_se,
            bias_correction=args.bias_correction, data=data, config=config,
            param_bw=args.param_bw, scheme=args.scheme, scheme_options=options,
            batch_size=args.batch_size, quiet=args.quiet)
    sim = QuantSim(graph, config, param_bw=args.param_bw, act_bw=args.act_bw, scheme=args.scheme,
                   scheme_options=options)
    if args.load_encodings:
        from .exporters.aimet_encodings import load_aimet_encodings

        sim = load_aimet_encodings(sim, args.load_encodings)
    else:
        sim.compute_encodings(iter_batches(args.calib, names, args.batch_size), quiet=args.quiet)
    if args.encodings:
        from .exporters.aimet_encodings import export_aimet_encodings

        export_aimet_encodings(sim, args.encodings, version=args.encodings_version)
    if args.report is not None:
        _write_json(args.report, report or {})
    sim.save(args.output)
    if not args.quiet:
        p = sim.placement
        print(f"quantized {args.model}: {p['activation_quantizers']} activation and "
              f"{p['param_quantizers']} parameter quantizers, {len(p['supergroups'])} supergroups, "
              f"{len(p['shared'])} shared -> {args.output}"
              + (f"; AIMET encodings {args.encodings}" if args.encodings else ""))


def _write_json(path, doc):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)


def cmd_equalize(args):
    from .algorithms import prepare
    from .model_io import load, save

    graph, report = prepare(load(args.model), fold_bn=True, cle=True,
                            relu6_to_relu=args.relu6_to_relu,
                            absorb_high_bias=not args.no_high_bias,
                            through_squeeze_excite=args.through_se)
    if args.report:
        _write_json(args.report, report)
    save(graph, args.output)
    if not args.quiet:
        folded = len(report["bn_fold"].get("folded", []))
        cle = report["cle"]
        print(f"equalized {args.model}: {folded} batch norms folded, "
              f"{len(cle.get('sets', []))} equalization sets -> {args.output}")


def cmd_report(args):
    from .data_io import iter_batches
    from .quant.quantsim import QuantSim
    from .report import format_report, quant_report

    sim = QuantSim.load(args.model)
    names = [s.name for s in sim.graph.inputs]
    report = quant_report(sim, iter_batches(args.data, names, args.batch_size), quiet=args.quiet)
    if args.json:
        _write_json(args.json, report)
    print(format_report(report, top=args.top))


def cmd_lower(args):
    from .fixedpoint.lowering import lower
    from .model_io import save
    from .quant.quantsim import QuantSim

    graph = lower(QuantSim.load(args.model), args.profile)
    save(graph, args.output)
    if not args.quiet:
        ops = sum(n.op.startswith("int_") for n in graph.nodes)
        print(f"lowered {args.model} for profile '{args.profile}': {ops} integer nodes "
              f"-> {args.output}")


def cmd_compare(args):
    from .data_io import iter_batches
    from .fixedpoint.compare import compare, format_compare
    from .quant.quantsim import QuantSim

    sim = QuantSim.load(args.model)
    names = [s.name for s in sim.graph.inputs]
    report = compare(sim, args.profile, iter_batches(args.data, names, args.batch_size),
                     quiet=args.quiet)
    if args.json:
        _write_json(args.json, report)
    print(format_compare(report, all_layers=args.all_layers), end="")


def cmd_profiles(args):
    from .fixedpoint.profiles import describe_profiles

    print(describe_profiles())


def cmd_demo(args):
    from .demo import main

    main(quiet=args.quiet)


def cmd_export(args):
    from .exporters.hardware import FORMATS, export_case, export_integer_model

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"--format: unknown format(s) {bad}; use hex, c, bin or a comma list")
    if args.pack < 1:
        raise InputError(f"--pack must be >= 1, got {args.pack}")
    if os.path.isdir(args.model):
        index = export_case(args.model, args.output, formats, pack=args.pack)
        n = sum(len(v) for v in index["arrays"].values())
        what = f"{n} arrays of case '{index['case']}'"
    else:
        from .model_io import load

        graph = load(args.model)
        if "integer" not in graph.meta:
            raise InputError(f"{args.model} is not an integer model; lower it first with "
                             "`refq lower` (or give a golden case directory)")
        index = export_integer_model(graph, args.output, formats, pack=args.pack)
        what = f"{len(index['arrays'])} integer parameters of {args.model}"
    if not args.quiet:
        print(f"exported {what} as {', '.join(formats)} (pack {args.pack}) with JSON sidecars "
              f"-> {args.output}")


def cmd_golden_verify(args):
    from .conformance.verify import describe_divergence, format_verify, verify

    report = verify(args.case, args.dut)  # raises before anything is written
    if args.json:
        _write_json(args.json, report)
    if args.quiet:
        print(f"case '{report['case']}': {'PASS' if report['passed'] else 'FAIL'}")
        if report["first_divergence"]:
            print(describe_divergence(report["first_divergence"]))
    else:
        print(format_verify(report), end="")
    return 0 if report["passed"] else 1


def cmd_conformance_run(args):
    from .conformance.adapter import format_adapter, run_adapter

    results = run_adapter(args.adapter, args.golden, args.cases)
    if args.json:
        _write_json(args.json, results)
    print(format_adapter(results), end="")
    return 0 if results["passed"] else 1


def cmd_golden_generate(args):
    from .conformance import generate

    r = generate(args.out, args.cases, quiet=args.quiet)
    if not args.quiet:
        print(f"golden: wrote {r['cases']} cases ({r['files']} files, {r['bytes'] / 1e6:.1f} MB) "
              f"to {args.out} in {r['seconds']:.1f} s")


def cmd_golden_check(args):
    from .conformance import check, format_check

    report = check(args.golden, args.cases, quiet=args.quiet)
    if not report["ok"]:
        print(f"refq: error: {format_check(report)}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(format_check(report))
    return 0


def _golden_parser(sub):
    """`refq golden ...` (refq.conformance); returns its subcommand parsers for more commands."""
    g = sub.add_parser("golden", help="golden vectors: generate the suite, check it")
    gsub = g.add_subparsers(dest="golden_command", required=True)
    s = gsub.add_parser("generate", help="write the golden cases and manifest.json")
    s.add_argument("--cases", metavar="PATTERN", help="fnmatch globs of case ids, comma-separated "
                                                      "(default: every case)")
    s.add_argument("--out", default="golden", metavar="DIR", help="suite directory (golden/)")
    s.set_defaults(func=cmd_golden_generate)
    s = gsub.add_parser("check", help="regenerate and compare every byte with a committed suite")
    s.add_argument("--golden", default="golden", metavar="DIR", help="suite directory (golden/)")
    s.add_argument("--cases", metavar="PATTERN", help="fnmatch globs of case ids, comma-separated "
                                                      "(default: every case)")
    s.set_defaults(func=cmd_golden_check)
    for s in gsub.choices.values():
        s.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars or chatter")
    return gsub


def _equalize_options(s):
    s.add_argument("--relu6-to-relu", action="store_true",
                   help="replace ReLU6 by ReLU so CLE can pass it (AIMET <= 2.3; changes the model)")
    s.add_argument("--through-se", action="store_true",
                   help="let CLE pass squeeze-excitation blocks (a refq extension)")
    s.add_argument("--no-high-bias", action="store_true", help="skip high-bias absorption")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refq", description="refq: reference quantization toolkit")
    p.add_argument("--version", action="version", version=f"refq {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("import", help="import a Keras HDF5 model into the refq format")
    s.add_argument("model", help="Keras .h5/.hdf5, .keras or .weights.h5 file")
    s.add_argument("-o", "--output", required=True, help="output .refq.h5 file")
    s.add_argument("--architecture", help="architecture JSON (model.to_json()) for .weights.h5")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("info", help="print a model's nodes, shapes, parameters and MACs")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="print the graph JSON instead")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("run", help="run a model on an input array")
    s.add_argument("model")
    s.add_argument("--input", required=True, help=".npy (single input) or .npz {input name: array}")
    s.add_argument("--output", required=True, help=".npy (single output) or .npz")
    s.add_argument("--trace", metavar="DIR", help="also write every tensor as DIR/<tensor>.npy")
    s.add_argument("--mode", choices=["float", "sim", "int"], default="float",
                   help="float: the definition; sim: the quantization simulation of a quantized "
                        "model; int: an integer model (from `refq lower`)")
    s.add_argument("--dtype", choices=["float64", "float32"], default=None,
                   help="float mode compute dtype (default float64)")
    s.add_argument("--batch-size", type=int, default=None)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("quantize", help="place quantizers, calibrate, store the simulation")
    s.add_argument("model")
    s.add_argument("--calib", help="calibration data: .npy, .npz or a directory of .npy batches")
    s.add_argument("-o", "--output", required=True, help="output .refq.h5 with encodings")
    s.add_argument("--config", help="AIMET quantsim config JSON, or per_tensor | per_channel "
                                     "(default per_tensor)")
    s.add_argument("--per-channel", action="store_true", help="the bundled per-channel config")
    s.add_argument("--scheme", default="minmax", help="minmax | tf_enhanced | percentile | sqnr | mse")
    s.add_argument("--percentile", type=float, help="percentile for --scheme percentile")
    s.add_argument("--param-bw", type=int, default=8)
    s.add_argument("--act-bw", type=int, default=8)
    s.add_argument("--encodings", help="also write AIMET encodings JSON here")
    s.add_argument("--encodings-version", default="1.0.0", choices=["0.6.1", "1.0.0"])
    s.add_argument("--load-encodings", help="take encodings from an AIMET encodings file")
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--fold-bn", action="store_true", help="fold batch norms first")
    s.add_argument("--cle", action="store_true",
                   help="cross-layer equalization with high-bias absorption (folds BN first)")
    s.add_argument("--bias-correction", choices=["empirical", "analytical"],
                   help="correct the mean output error of weight quantization")
    s.add_argument("--report", help="write the BN fold / CLE / bias correction report (JSON)")
    _equalize_options(s)
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("equalize", help="fold batch norms and equalize across layers")
    s.add_argument("model")
    s.add_argument("-o", "--output", required=True, help="output .refq.h5")
    s.add_argument("--report", help="write the fold and equalization report (JSON)")
    _equalize_options(s)
    s.set_defaults(func=cmd_equalize)

    s = sub.add_parser("report", help="per-quantizer SQNR report of a quantized model")
    s.add_argument("model")
    s.add_argument("--data", required=True, help=".npy, .npz or a directory of .npy batches")
    s.add_argument("--json", help="also write the report as JSON")
    s.add_argument("--top", type=int, default=None, help="show only the N worst quantizers")
    s.add_argument("--batch-size", type=int, default=None)
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("lower", help="lower a quantized model to an integer model for a profile")
    s.add_argument("model", help="a quantized .refq.h5 (from `refq quantize`, BN folded)")
    s.add_argument("--profile", required=True, help="tflite | tflite-single | tosa | onnx | cmsis-nn")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(func=cmd_lower)

    s = sub.add_parser("compare", help="per layer LSB differences: integer model vs simulation")
    s.add_argument("model", help="a quantized .refq.h5")
    s.add_argument("--profile", required=True)
    s.add_argument("--data", required=True, help=".npy, .npz or a directory of .npy batches")
    s.add_argument("--json", help="also write the comparison as JSON")
    s.add_argument("--all-layers", action="store_true", help="list layers without differences too")
    s.add_argument("--batch-size", type=int, default=None)
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("profiles", help="list the integer numerics profiles and how they differ")
    s.set_defaults(func=cmd_profiles)

    s = sub.add_parser("demo", help="the main job on the bundled PP-OCR model and test set")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("export", help="write integer parameters or a golden case's arrays as "
                                      "$readmemh hex, C headers or raw binaries, with sidecars")
    s.add_argument("model", help="an integer .refq.h5 (from `refq lower`) or a golden case "
                                 "directory")
    s.add_argument("--format", required=True, help="hex | c | bin, or a comma list (hex,c,bin)")
    s.add_argument("-o", "--output", required=True, metavar="DIR")
    s.add_argument("--pack", type=int, default=1, metavar="K",
                   help="K elements per memory word, element 0 in the least significant bits; "
                        "applies to elements of <= 8 bits (wider ones stay one per word)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("conformance", help="run another implementation on the golden suite")
    csub = s.add_subparsers(dest="conformance_command", required=True)
    c = csub.add_parser("run", help="call an adapter function on every golden case and compare")
    c.add_argument("--adapter", required=True, metavar="MODULE:FUNCTION",
                   help="e.g. examples.adapter_numpy:run (imported from the current directory)")
    c.add_argument("--golden", default="golden", metavar="DIR", help="golden suite (default "
                                                                      "golden/)")
    c.add_argument("--cases", metavar="PATTERN", help="fnmatch globs, comma-separated")
    c.add_argument("--json", metavar="REPORT", help="also write the results as JSON")
    c.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars or chatter")
    c.set_defaults(func=cmd_conformance_run)

    gsub = _golden_parser(sub)
    s = gsub.add_parser("verify", help="compare another implementation's dumps with a golden case "
                                       "and name the first diverging layer")
    s.add_argument("case", metavar="CASE_DIR", help="a golden case directory")
    s.add_argument("--dut", required=True, metavar="DIR",
                   help="the implementation's dumps: <tensor>.npy, or .hex/.bin with .json "
                        "sidecars (outputs required, trace tensors optional)")
    s.add_argument("--json", metavar="REPORT", help="also write the report as JSON")
    s.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="only the verdict and the first divergence")
    s.set_defaults(func=cmd_golden_verify)

    for s in sub.choices.values():
        s.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)  # None = success; commands that compare return 1 on failure
    except RefqError as e:
        print(f"refq: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("refq: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
