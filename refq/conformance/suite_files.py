"""Writing and reading a suite directory's files: case directories swapped in whole
(`install_cases`), manifest.json read back, the case directories present.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from ..atomic import atomic_path
from ..errors import OutputError
from .case import MANIFEST, render_manifest
from .case_reader import read_manifest

__all__ = ["install_cases", "read_suite_manifest", "case_dirs", "write_bytes"]


def write_bytes(path, data: bytes):
    """Write `data` to `path` atomically (its directories created)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def read_suite_manifest(directory) -> dict:
    """The manifest entries of suite `directory` ({} when it has no manifest.json yet), checked by
    refq.conformance.case_reader.read_manifest."""
    path = os.path.join(directory, MANIFEST)
    return dict(read_manifest(path)) if os.path.exists(path) else {}


def case_dirs(directory) -> set:
    """Names of the subdirectories of `directory` that hold a case.json."""
    if not os.path.isdir(directory):
        return set()
    return {d for d in os.listdir(directory) if not d.startswith(".")
            and os.path.isfile(os.path.join(directory, d, "case.json"))}


def install_cases(out_dir, rendered: dict, entries: dict, stale=()) -> None:
    """Write `rendered` ({case id: {relative path: bytes}}) into suite directory `out_dir`: each
    case into a temporary directory inside it first (each file atomically), then the case
    directories swapped in, the `stale` case directories removed and manifest.json rewritten
    from `entries` ({case id: manifest entry}, every case the suite keeps). An interrupted or
    failing run leaves every case directory as it was."""
    out = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"{out_dir}: exists and is not a directory; give the suite directory "
                         "with --out")
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".golden-tmp-", dir=out)
    try:
        for cid, files in rendered.items():
            for rel, data in files.items():
                write_bytes(os.path.join(tmp, "new", cid, *rel.split("/")), data)
        old = os.path.join(tmp, "old")
        os.makedirs(old)
        for cid in sorted(stale):
            os.replace(os.path.join(out, cid), os.path.join(old, cid))
        for cid in rendered:
            dst = os.path.join(out, cid)
            if os.path.exists(dst):
                os.replace(dst, os.path.join(old, cid))
            os.replace(os.path.join(tmp, "new", cid), dst)
        write_bytes(os.path.join(out, MANIFEST), render_manifest(entries))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

