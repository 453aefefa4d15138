"""`generate` writes the golden suite; `check` regenerates it and compares every byte.

    generate("golden", pattern=None)        # every case (or those matching the fnmatch globs)
    report = check("golden")                 # {"ok", "checked", "mismatches", "regenerated"}

generate renders each selected case in memory, writes it into a temporary directory inside the
output directory (each file atomically), then swaps the case directories in and rewrites
manifest.json; an interrupted or failing run leaves every committed case as it was. A full
generation (no pattern) also removes case directories of cases that no longer exist.
`run_integer` and `quantization_of` (`refq.conformance.integer_graphs`, re-exported here) compute
what integer and model cases hold; `reproduce` runs a loaded case again.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

from ..atomic import atomic_path
from ..errors import FormatError, OutputError
from ..progress import progress
from .case import CASES, MANIFEST, manifest_entry, render, render_manifest, select
from .case_reader import case_dir_hint, read_manifest
from .integer_graphs import quantization_of, run_integer  # re-exported

__all__ = ["generate", "check", "format_check", "check_failure", "reproduce", "run_integer",
           "quantization_of"]


def _write(path, data: bytes):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def _read_manifest(directory) -> dict:
    """The manifest entries of suite `directory` ({} when it has no manifest.json yet), checked by
    refq.conformance.case_reader.read_manifest."""
    path = os.path.join(directory, MANIFEST)
    return dict(read_manifest(path)) if os.path.exists(path) else {}


def _case_dirs(directory) -> set:
    """Names of the subdirectories of `directory` that hold a case.json."""
    if not os.path.isdir(directory):
        return set()
    return {d for d in os.listdir(directory) if not d.startswith(".")
            and os.path.isfile(os.path.join(directory, d, "case.json"))}


def generate(out_dir="golden", pattern: str | None = None, quiet: bool = False) -> dict:
    """Write the selected cases (all by default) to `out_dir` and update its manifest.json.
    Returns {"cases", "files", "bytes", "seconds"}. InputError for a pattern matching no case."""
    t0 = time.perf_counter()
    cases = select(pattern)
    out = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"{out_dir}: exists and is not a directory; give the suite directory "
                         "with --out")
    entries = {} if pattern is None else _read_manifest(out)
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".golden-tmp-", dir=out)
    nfiles = nbytes = 0
    try:
        for case in progress(cases, total=len(cases), desc="golden generate", quiet=quiet):
            files = render(case)
            for rel, data in files.items():
                _write(os.path.join(tmp, "new", case.id, *rel.split("/")), data)
                nfiles, nbytes = nfiles + 1, nbytes + len(data)
            entries[case.id] = manifest_entry(case, files["case.json"])
        old = os.path.join(tmp, "old")
        os.makedirs(old)
        stale = _case_dirs(out) - set(CASES) if pattern is None else set()
        for cid in sorted(stale):
            os.replace(os.path.join(out, cid), os.path.join(old, cid))
        for case in cases:
            dst = os.path.join(out, case.id)
            if os.path.exists(dst):
                os.replace(dst, os.path.join(old, case.id))
            os.replace(os.path.join(tmp, "new", case.id), dst)
        entries = {k: v for k, v in entries.items() if k in CASES}
        _write(os.path.join(out, MANIFEST), render_manifest(entries))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"cases": len(cases), "files": nfiles, "bytes": nbytes,
            "seconds": time.perf_counter() - t0}


def _disk_files(case_dir) -> dict:
    out = {}
    for root, _, names in os.walk(case_dir):
        for nm in names:
            p = os.path.join(root, nm)
            out[os.path.relpath(p, case_dir).replace(os.sep, "/")] = p
    return out


def _first_difference(files: dict, case_dir: str):
    """(file, reason) of the first difference between rendered `files` and `case_dir`, or None.
    Data files are compared before case.json (which lists their hashes)."""
    if not os.path.isdir(case_dir):
        return "(case directory)", "missing from the committed suite"
    disk = _disk_files(case_dir)
    order = sorted(set(files) | set(disk), key=lambda r: (r == "case.json", r))
    for rel in order:
        if rel not in disk:
            return rel, "missing from the committed case"
        if rel not in files:
            return rel, "in the committed case but no longer generated"
        with open(disk[rel], "rb") as f:
            old = f.read()
        new = files[rel]
        if old != new:
            k = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old),
                                                                                  len(new)))
            return rel, (f"differs from the regenerated bytes (first at byte {k}; committed "
                         f"{len(old)} bytes, regenerated {len(new)})")
    return None


def check(golden_dir="golden", pattern: str | None = None, quiet: bool = True) -> dict:
    """Regenerate the selected cases (all by default) in memory and compare every byte with
    `golden_dir`, and its manifest.json. Returns {"ok", "checked", "mismatches": [{"case",
    "file", "reason"}] (the first differing file of each case, in case order), "regenerated":
    a temporary directory holding the regenerated cases that differ, or None}."""
    cases = select(pattern)
    gdir = os.path.abspath(os.fspath(golden_dir))
    if not os.path.isdir(gdir):
        raise FormatError(f"{golden_dir}: no golden directory; create it with `refq golden "
                          f"generate --out {golden_dir}`")
    if not os.path.isfile(os.path.join(gdir, MANIFEST)) and not _case_dirs(gdir):
        raise FormatError(f"{golden_dir}: not a golden suite (no manifest.json, no case "
                          f"directories), so there is nothing to check{case_dir_hint(gdir)}; "
                          f"generate it with `refq golden generate --out {golden_dir}`")
    manifest = _read_manifest(gdir)
    mismatches, bad_files, entries = [], {}, {}
    for case in progress(cases, total=len(cases), desc="golden check", quiet=quiet):
        files = render(case)
        entries[case.id] = manifest_entry(case, files["case.json"])
        diff = _first_difference(files, os.path.join(gdir, case.id))
        if diff is None and manifest.get(case.id) != entries[case.id]:
            diff = (MANIFEST, "(the suite's) entry for this case is missing" if case.id not in
                    manifest else "(the suite's) entry for this case differs from the "
                    "regenerated one")
        if diff is not None:
            mismatches.append({"case": case.id, "file": diff[0], "reason": diff[1]})
            if diff[0] != "(case directory)":
                bad_files[case.id] = files
    if pattern is None:
        for cid in sorted((_case_dirs(gdir) | set(manifest)) - set(CASES)):
            mismatches.append({"case": cid, "file": "(case directory)", "reason":
                               "committed, but no such case is generated any more (stale)"})
        if not mismatches:
            with open(os.path.join(gdir, MANIFEST), "rb") as f:
                if f.read() != render_manifest(entries):
                    mismatches.append({"case": "(manifest)", "file": MANIFEST,
                                       "reason": "manifest.json differs from the regenerated one"})
    regenerated = None
    if bad_files:
        regenerated = tempfile.mkdtemp(prefix="refq-golden-check-")
        for cid, files in bad_files.items():
            for rel, data in files.items():
                _write(os.path.join(regenerated, cid, *rel.split("/")), data)
    return {"ok": not mismatches, "checked": len(cases), "golden_dir": gdir,
            "mismatches": mismatches, "regenerated": regenerated}


def check_failure(report: dict) -> str:
    """One line: how many cases of a failed check differ, the first case, file and reason, where
    the regenerated cases are, and what to do."""
    ms = report["mismatches"]
    m = ms[0]
    where = f"; regenerated cases written to {report['regenerated']} (diff them)" \
        if report["regenerated"] else ""
    return (f"{report['golden_dir']}: golden check failed: {len(ms)} of {report['checked']} "
            f"cases differ; first: case {m['case']}, file {m['file']}: {m['reason']}{where}; if "
            f"the change is intended, regenerate with `refq golden generate --out "
            f"{report['golden_dir']}` and commit, otherwise restore the changed files")


def format_check(report: dict, limit: int = 20) -> str:
    if report["ok"]:
        return f"golden check: {report['checked']} cases identical to {report['golden_dir']}"
    ms = report["mismatches"]
    lines = [f"golden check failed: {len(ms)} of {report['checked']} cases differ from "
             f"{report['golden_dir']}; first: case {ms[0]['case']}, file {ms[0]['file']}"]
    lines += [f"  {m['case']}: {m['file']}: {m['reason']}" for m in ms[:limit]]
    if len(ms) > limit:
        lines.append(f"  ... and {len(ms) - limit} more")
    if report["regenerated"]:
        lines.append(f"  regenerated cases written to {report['regenerated']} (diff them); if the "
                     "change is intended, run `refq golden generate` and commit")
    return "\n".join(lines)


def reproduce(graph, inputs: dict, case_json: dict) -> tuple:
    """(outputs, trace) of a loaded case computed again by refq (exactly as generated)."""
    kind = case_json["kind"]
    if kind == "float":
        from .cases_float import run_float

        return run_float(graph, inputs, check_refq=False)
    if kind == "integer":
        return run_integer(graph, inputs)
    if kind == "quant":
        from .cases_quant import compute

        _, outputs = compute(inputs["x"], case_json["quantization"]["x"]["derived_from"])
        return outputs, {}
    raise FormatError(f"case {case_json.get('case')}: unknown kind {kind!r}")
