"""`refq import`, `refq info`, `refq run` and `refq demo`: a model in the refq format."""
from __future__ import annotations

import json
import os

import numpy as np

from ..atomic import atomic_path, save_npy
from ..data_io import load_arrays
from ..errors import InputError
from ..model_io import escape_name


def cmd_import(args):
    from .. import import_keras, save

    graph = import_keras(args.model, architecture=args.architecture)
    save(graph, args.output)
    if not args.quiet:
        print(f"imported {args.model}: {len(graph.nodes)} nodes -> {args.output}")


def cmd_info(args):
    from ..model_io import load, read_graph_json
    from ..summary import format_table, summarize

    if args.json:
        print(json.dumps(read_graph_json(args.model), indent=1))
        return
    graph = load(args.model)
    ins = ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in graph.inputs)
    print(format_table(summarize(graph), title=f"{graph.name}: inputs {ins}; outputs "
                                                f"{', '.join(graph.outputs)}"))


def cmd_run(args):
    from ..model_io import load

    feeds = load_arrays(args.input)
    stats = None
    if args.mode == "int":
        from ..fixedpoint.run import run_int

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
        from ..quant.quantsim import QuantSim

        if args.dtype is not None:
            raise InputError("--dtype applies to --mode float; a simulation runs in its numerics' "
                             "dtype (float32 for AIMET numerics)")
        sim = QuantSim.load(args.model)
        graph = sim.graph
        runner = sim.run
        kwargs = {}
    else:
        from ..runtime import run

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


def cmd_demo(args):
    from ..demo import main

    main(quiet=args.quiet)
