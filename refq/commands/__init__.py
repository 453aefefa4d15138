"""The implementations of the `refq` subcommands, by area; `refq.cli` holds the parser and `main`.

    model    import, info, run, demo
    quant    quantize, equalize, report
    integer  lower, compare, profiles, export
    golden   golden generate / check / verify, conformance run

Each `cmd_*` takes the parsed arguments and returns None (success) or an exit status. The heavy
modules are imported inside the commands, so that `refq --help` starts quickly.
"""
from __future__ import annotations

import json

from ..atomic import atomic_path


def write_json(path, doc):
    """Write `doc` as indented JSON to `path`, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
