"""The implementations of the `refq` subcommands, by area; `refq.cli` holds the parser and `main`.

    model    import, info, run, demo
    quant    quantize, equalize, report
    train    qat, adaround, bn-reestimate
    integer  lower, compare, profiles, export
    golden   golden generate / check / verify, conformance run

Each `cmd_*` takes the parsed arguments and returns None (success) or an exit status. The heavy
modules are imported inside the commands, so that `refq --help` starts quickly. The argparse
types and arguments that several parsers share are here; `refq.cli` builds the parser (the golden
and learned-quantization subcommands through their modules' `add_*_parsers`).
"""
from __future__ import annotations

import argparse
import json

from ..atomic import atomic_path, check_output_path
from ..errors import OutputError, RefqError

#: Help of the --batch-size of the commands that stream data, formatted with their default.
BATCH_HELP = "images per forward pass (default: {} per batch; smaller uses less memory)"


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def bitwidth(text):
    """argparse type: a quantizer bitwidth (`refq.quant.encoding.check_bitwidth`)."""
    from ..quant.encoding import check_bitwidth

    value = positive_int(text)
    try:
        return check_bitwidth(value)
    except RefqError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def input_shape(text):
    """argparse type of --input-shape NAME=N,C,H,W: (name, [ints]), -1 for a free entry."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = [int(d) for d in dims.split(",")]
    except ValueError:
        shape = []
    if not sep or not name or not shape or any(d < -1 or d == 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected NAME=N,C,H,W with positive sizes (or -1 for "
                                         f"a free one), got {text!r}")
    return name, shape


def model_argument(s, what="a model in the refq format (.refq.h5)"):
    """The positional MODEL argument of a subcommand parser."""
    s.add_argument("model", metavar="MODEL", help=what)


def check_outputs(*paths, flag: str | None = None):
    """Refuse unwritable output paths (a directory, a path under a file, a name too long) before
    any work is done, so that a long run never ends in a failed write; None entries are skipped.
    `flag` (e.g. "--json") is named at the start of the error."""
    for path in paths:
        if path is not None:
            try:
                check_output_path(path)
            except OutputError as e:
                if flag is None:
                    raise
                raise OutputError(f"{flag} {e}") from None


def write_json(path, doc):
    """Write `doc` as indented JSON to `path`, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
