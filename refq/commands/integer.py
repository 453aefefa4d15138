"""`refq lower`, `refq compare`, `refq profiles` and `refq export`: integer models for the numerics
profiles (refq.fixedpoint) and their parameters as hardware files."""
from __future__ import annotations

import os

from ..errors import InputError
from . import check_outputs, write_json


def cmd_lower(args):
    from ..fixedpoint.lowering import lower
    from ..model_io import save
    from ..quant.quantsim import QuantSim

    check_outputs(args.output)
    graph = lower(QuantSim.load(args.model), args.profile)
    save(graph, args.output)
    if not args.quiet:
        ops = sum(n.op.startswith("int_") for n in graph.nodes)
        print(f"lowered {args.model} for profile '{args.profile}': {ops} integer nodes "
              f"-> {args.output}")


def cmd_compare(args):
    from ..data_io import iter_batches
    from ..fixedpoint.compare import compare, format_compare
    from ..quant.quantsim import QuantSim

    check_outputs(args.json)
    sim = QuantSim.load(args.model)
    inputs = sim.graph.inputs
    report = compare(sim, args.profile, iter_batches(args.data, inputs, args.batch_size),
                     quiet=args.quiet)
    if args.json:
        write_json(args.json, report)
    print(format_compare(report, all_layers=args.all_layers), end="")


def cmd_profiles(args):
    from ..fixedpoint.profile_table import describe_profiles

    print(describe_profiles())


def cmd_export(args):
    from ..exporters.hardware import FORMATS, export_case, export_integer_model

    if args.format.strip() == "onnx-qdq":
        from ..exporters.onnx_qdq import export_qdq
        from ..quant.quantsim import QuantSim

        check_outputs(args.output)
        report = export_qdq(QuantSim.load(args.model), args.output)
        if not args.quiet:
            print(f"exported {args.model} as a QDQ ONNX model (opset {report['opset']}, "
                  f"{report['quantize_linear']} QuantizeLinear) -> {args.output}")
        return
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(f"--format: unknown format(s) {bad}; use hex, c, bin or a comma list, "
                         "or onnx-qdq")
    if args.pack < 1:
        raise InputError(f"--pack must be >= 1, got {args.pack}")
    if os.path.isdir(args.model):
        index = export_case(args.model, args.output, formats, pack=args.pack)
        n = sum(len(v) for v in index["arrays"].values())
        what = f"{n} arrays of case '{index['case']}'"
    else:
        from ..model_io import load

        graph = load(args.model)
        if "integer" not in graph.meta:
            raise InputError(f"{args.model} is not an integer model; lower it first with "
                             "`refq lower` (or give a golden case directory)")
        index = export_integer_model(graph, args.output, formats, pack=args.pack,
                                     source=args.model)
        what = f"{len(index['arrays'])} integer parameters of {args.model}"
    if not args.quiet:
        print(f"exported {what} as {', '.join(formats)} (pack {args.pack}) with JSON sidecars "
              f"-> {args.output}")
