"""The implementations of the `refq` subcommands, by area; `refq.cli` holds the parser and `main`.

    model    import, info, run, demo
    quant    quantize, equalize, report
    train    qat, adaround, bn-reestimate
    integer  lower, compare, profiles, export
    golden   golden generate / check / verify, conformance run

Each `cmd_*` takes the parsed arguments and returns None (success) or an exit status. The heavy
modules are imported inside the commands, so that `refq --help` starts quickly.
"""
from __future__ import annotations

import json

from ..atomic import atomic_path, check_output_path
from ..errors import OutputError


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
