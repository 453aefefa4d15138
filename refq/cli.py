"""The `refq` command.

    refq import MODEL.h5 -o MODEL.refq.h5 [--architecture ARCH.json]
    refq info MODEL.refq.h5 [--json]
    refq run MODEL.refq.h5 --input X.npy --output Y.npy [--trace DIR] [--dtype float64|float32]
             [--batch-size N] [--quiet]
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
from .errors import FormatError, InputError, RefqError
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
    from .runtime import run

    graph = load(args.model)
    feeds = load_arrays(args.input)
    try:
        result = run(graph, feeds, trace=bool(args.trace), dtype=np.dtype(args.dtype).type,
                     batch_size=args.batch_size, quiet=args.quiet)
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


def cmd_demo(args):
    from .demo import main

    main(quiet=args.quiet)


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
    s.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    s.add_argument("--batch-size", type=int, default=None)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("demo", help="the main job on the bundled PP-OCR model and test set")
    s.set_defaults(func=cmd_demo)

    for s in sub.choices.values():
        s.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RefqError as e:
        print(f"refq: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("refq: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
