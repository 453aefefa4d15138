"""`refq import`, `refq info`, `refq run` and `refq demo`: a model in the refq format."""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from ..atomic import atomic_path, save_npy
from ..data_io import load_arrays
from ..errors import InputError
from ..model_io import escape_name
from ..progress import plural
from . import check_outputs


def cmd_import(args):
    """Keras HDF5 files become float graphs; `.tflite` and `.onnx` files become what they hold
    (a float graph, a quantization simulation or an integer graph), through their readers."""
    from .. import save
    from ..importers.by_suffix import import_model

    check_outputs(args.output)
    model = import_model(args.model, architecture=args.architecture,
                         input_shapes=dict(args.input_shape or ()), profile=args.profile)
    if hasattr(model, "save"):
        model.save(args.output)
        nodes = len(model.graph.nodes)
    else:
        save(model, args.output)
        nodes = len(model.nodes)
    if not args.quiet:
        print(f"imported {args.model}: {nodes} nodes -> {args.output}")


def cmd_info(args):
    from ..model_io import load, read_graph_json
    from ..summary import format_table, summarize

    if args.json:
        print(json.dumps(read_graph_json(args.model), indent=1))
        return
    graph = load(args.model)
    ins = ", ".join(f"{s.name} {list(s.shape)} {s.dtype}" for s in graph.inputs)
    print(format_table(summarize(graph), title=f"{graph.name} ({MODES[file_mode(args.model)]}): "
                                                f"inputs {ins}; outputs {', '.join(graph.outputs)}"))


DEFAULT_MAX_TRACE = 2 ** 30  # bytes: `refq run --trace` refuses a larger trace unless raised

MODES = {"float": "a float model", "sim": "a quantization simulation (from `refq quantize`)",
         "int": "an integer model (from `refq lower`)"}


def file_mode(path) -> str:
    """What a .refq.h5 file holds: "int" (lowered), "sim" (quantized) or "float"."""
    from ..model_io import load_section, read_graph_json

    if "integer" in (read_graph_json(path).get("meta") or {}):
        return "int"
    return "sim" if load_section(path, "encodings") is not None else "float"


def _choose_mode(args) -> str:
    """--mode, or the mode of what the file holds; refuses a mode the file cannot run."""
    held = file_mode(args.model)
    mode = args.mode or held
    if held == "int" and mode != "int":
        raise InputError(f"{args.model}: holds {MODES['int']}; run it with --mode int")
    if mode == "int" and held != "int":
        raise InputError(f"{args.model}: holds {MODES[held]}, not an integer model; lower it "
                         "first with `refq lower MODEL --profile NAME -o INT.refq.h5`")
    if mode == "sim" and held != "sim":
        raise InputError(f"{args.model}: holds {MODES[held]}, not a quantization simulation; "
                         "quantize it first with `refq quantize MODEL --calib DATA -o Q.refq.h5`")
    if args.dtype is not None and mode != "float":
        raise InputError(f"--dtype applies to --mode float; {MODES[mode]} computes in its own "
                         "numerics (float32 for AIMET's, exact integers for an integer model)")
    if args.codes and mode != "int":
        raise InputError("--codes applies to --mode int (integer codes in and out of an integer "
                         "model)")
    return mode


def _check_trace_size(args, graph, feeds, itemsize: int):
    """Estimate the bytes `--trace` writes (every tensor, whole batch) and refuse past the limit."""
    batch = len(next(iter(feeds.values())))
    shapes = graph.infer_shapes()
    total = sum(int(np.prod(shape[1:], dtype=np.int64)) * batch * itemsize
                for shape in shapes.values())
    if total > args.max_trace_size:
        raise InputError(f"--trace {args.trace}: would write about {_size(total)} "
                         f"({len(shapes)} tensors x {batch} samples), more than "
                         f"--max-trace-size {_size(args.max_trace_size)}; trace fewer samples or "
                         f"raise --max-trace-size")


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def cmd_run(args):
    from ..data_io import check_data
    from ..model_io import load

    check_outputs(args.output)
    if not args.output.endswith((".npy", ".npz")) and not os.path.exists(args.output):
        raise InputError(f"--output {args.output}: give a file name ending in .npy (one output) "
                         "or .npz (every output)")
    mode = _choose_mode(args)
    feeds = load_arrays(args.input)
    if isinstance(feeds, dict) and not feeds:
        raise InputError(f"{args.input}: the .npz file holds no arrays")
    for name, x in (feeds.items() if isinstance(feeds, dict) else [("input", feeds)]):
        if not (args.codes and x.dtype.kind in "iu"):
            check_data(x, args.input, name)
    stats = None
    if mode == "int":
        from ..fixedpoint.run import run_int

        graph = load(args.model)

        def runner(f, **kw):
            nonlocal stats
            out, stats = run_int(graph, f, **({"codes": True} if args.codes else {}), **kw)
            return out

        itemsize = 8
    elif mode == "sim":
        from ..quant.quantsim import QuantSim

        sim = QuantSim.load(args.model)
        graph = sim.graph
        runner = sim.run
        itemsize = np.dtype(sim.numerics.dtype).itemsize
    else:
        from ..runtime import run

        graph = load(args.model)
        dtype = np.dtype(args.dtype or "float64")
        runner = lambda f, **kw: run(graph, f, dtype=dtype.type, **kw)  # noqa: E731
        itemsize = dtype.itemsize
    if not isinstance(feeds, dict):
        if len(graph.inputs) != 1:
            raise InputError(f"{args.input}: {args.model} has inputs "
                             f"{[s.name for s in graph.inputs]}; give an .npz keyed by input name")
        feeds = {graph.inputs[0].name: feeds}
    if args.trace:
        _check_trace_size(args, graph, feeds, itemsize)
    try:
        result = runner(feeds, trace=bool(args.trace), batch_size=args.batch_size,
                        quiet=args.quiet)
    except InputError as e:  # name the file the arrays came from
        raise InputError(f"{args.input}: {e}") from None
    outputs = {k: result[k] for k in graph.outputs}
    _warn_non_finite(outputs, mode)
    if not args.output.endswith(".npz") and len(outputs) != 1:
        raise InputError(f"{args.model} has {len(outputs)} outputs {list(outputs)}; "
                         "write them with --output FILE.npz")
    if args.trace:
        _write_trace(args.trace, result)
    if args.output.endswith(".npz"):
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **outputs)
    else:
        save_npy(args.output, next(iter(outputs.values())))
    if not args.quiet:
        if args.mode is None:
            print(f"refq: ran --mode {mode}: {args.model} holds {MODES[mode]}", file=sys.stderr)
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
        print(f"wrote {shapes} to {args.output}" + (f"; trace in {args.trace}" if args.trace else ""))
        if stats:
            worst = min(stats.items(), key=lambda kv: kv[1]["headroom_bits"])
            print(f"accumulators: {len(stats)} nodes, least headroom "
                  f"{plural(worst[1]['headroom_bits'], 'bit')} at '{worst[0]}' (max |acc| "
                  f"{worst[1]['max_abs_acc']:,} of {worst[1]['accumulator_bits']} bits)")


def _warn_non_finite(outputs: dict, mode: str):
    """One stderr line per output that holds NaN or Inf (the inputs were checked finite): the
    result is the definition's, but almost always an overflow the user should know about."""
    for name, y in outputs.items():
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            n = int(np.size(y) - np.isfinite(y).sum())
            hint = " (float32 overflow? try --dtype float64)" if y.dtype == np.float32 and \
                mode == "float" else ""
            print(f"refq: warning: output '{name}' holds {n} non-finite values (NaN/Inf) from "
                  f"finite inputs{hint}", file=sys.stderr)


def _write_trace(directory, result: dict):
    """Every tensor as DIR/<escaped name>.npy, then DIR/index.json {tensor: file}."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise InputError(f"--trace {directory}: exists and is not a directory; give a directory")
    os.makedirs(directory, exist_ok=True)
    index = {}
    for name, value in result.items():
        index[name] = escape_name(name) + ".npy"
        save_npy(os.path.join(directory, index[name]), value)
    with atomic_path(os.path.join(directory, "index.json")) as tmp:
        with open(tmp, "w") as f:
            json.dump(index, f, indent=1)


def cmd_demo(args):
    from ..demo import main

    main(quiet=args.quiet)
