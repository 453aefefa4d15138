"""`refq golden verify`: compare another implementation's dumps with a golden case.

    report = verify("golden/layer.conv2d.depthwise_same", "dut_dumps/")
    print(format_verify(report))          # per tensor pass/fail and the first divergence
    report["passed"], report["first_divergence"]

The device-under-test (DUT) directory holds one file per tensor, named like the case's own files:
`refq.model_io.escape_name(tensor)` + a suffix, either directly in the directory (the layout of
`refq run --trace DIR`) or in an `outputs/` or `trace/` subdirectory:
- `.npy` (np.save; never unpickled), or
- `.hex` / `.bin` with a JSON sidecar `.hex.json` / `.bin.json` (refq.exporters.hardware: at least
  {"dtype": "int8", "shape": [...]}, optional "pack"; element 0 of a word in its least significant
  bits; flat C order), or `.h` (a C header as written by `refq export`).
The first file found in the order outputs/ or trace/, then the directory itself; .npy, .hex, .bin,
.h is used. Every case output must be dumped; trace tensors are optional (those dumped are
compared, the others are listed as absent).

Checks, each a RefqError before anything is compared (and nothing is written):
- the case (refq.conformance.case_reader.read_case): case.json well formed (exactly its keys, each of its
  type, at least one output), every file listed in "files" present with that sha256 and no other
  file, each array of its declared dtype and shape, and case.json's sha256 equal to the one in
  ../manifest.json when the case sits in a suite (FormatError: the case was modified);
- the dumps: a DUT directory holding no dump at all, a missing output, an unreadable file or
  sidecar, a shape that differs from the case's, an integer tensor dumped in another dtype (cast
  it to the dtype case.json declares: int8, uint8, int16 or int32; `refq run --mode int` computes
  in int64), or a float tensor dumped as integers (InputError). Float tensors may be dumped in any
  float width; they are compared under the case tolerance.

Comparison, per tensor, under the case tolerance: "exact" means equal values (NaN equals NaN);
{"kind": "allclose", "atol", "rtol"} means |actual − expected| <= atol + rtol·|expected| in float64.
The report gives, per tensor, pass/fail, the number of mismatching elements, the largest difference
(in LSB, i.e. integer steps, for integer tensors; absolute for floats), a histogram of integer
differences, and the first mismatching element in C order (index, expected, actual, difference).
Tensors are ordered by the position of their producing layer in the case's topological order
(trace "order", or the graph's node order for outputs); the first failing one is the
`first_divergence`: the earliest layer where the DUT departs from refq.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import InputError, RefqError, one_line
from .case_reader import GoldenCase, read_case

__all__ = ["verify", "format_verify", "read_case", "GoldenCase", "compare_arrays",
           "check_dump", "find_dump", "diff_text", "describe_divergence", "DUMP_SUFFIXES"]

DUMP_SUFFIXES = (".npy", ".hex", ".bin", ".h")
_DUMP_HELP = "re-dump it (formats: golden/README.md, `refq golden verify`)"


# ---- DUT dumps ----------------------------------------------------------------------------------

def find_dump(dut_dir, name: str, section: str):
    """The DUT file of tensor `name` (module docstring search order), or None."""
    from ..model_io import escape_name

    base = escape_name(name)
    for d in (os.path.join(dut_dir, section), dut_dir):
        for suf in DUMP_SUFFIXES:
            p = os.path.join(d, base + suf)
            if os.path.isfile(p):
                return p
    return None


def _searched(dut_dir, name, section) -> str:
    from ..model_io import escape_name

    base = escape_name(name)
    return ", ".join(os.path.join(d, base + ".npy|.hex|.bin|.h")
                     for d in (os.path.join(dut_dir, section), dut_dir))


def check_dump(expected: np.ndarray, actual, where: str, todo: str = "") -> np.ndarray:
    """`actual` as an array of `expected`'s shape and a compatible dtype, or InputError
    "`where`: what is wrong; `todo`"."""
    end = f"; {todo}" if todo else ""
    try:
        a = np.asarray(actual)
    except (ValueError, TypeError) as e:
        raise InputError(f"{where}: not an array ({one_line(e)}){end}") from None
    if a.dtype.kind not in "iuf":
        raise InputError(f"{where}: dtype {a.dtype} is not numeric{end}")
    if tuple(a.shape) != tuple(expected.shape):
        raise InputError(f"{where}: shape {list(a.shape)}, expected {list(expected.shape)} "
                         f"({expected.dtype}){end}")
    if expected.dtype.kind in "iu" and a.dtype != expected.dtype:
        raise InputError(f"{where}: dtype {a.dtype}, expected {expected.dtype}; integer tensors "
                         f"are compared in their declared dtype (cast to {expected.dtype}){end}")
    if expected.dtype.kind == "f" and a.dtype.kind != "f":
        raise InputError(f"{where}: dtype {a.dtype}, expected a float tensor "
                         f"({expected.dtype}){end}")
    return a


def _scalar(v):
    if isinstance(v, (np.integer, int)):
        return int(v)
    x = float(v)
    return x if np.isfinite(x) else repr(x)


def compare_arrays(expected: np.ndarray, actual: np.ndarray, tolerance: dict) -> dict:
    """Compare two arrays of the same shape under `tolerance` (module docstring); returns {status,
    count, mismatches, max_diff, diff_unit, histogram (integers), first}."""
    e, a = np.asarray(expected), np.asarray(actual)
    integer = e.dtype.kind in "iu" and a.dtype.kind in "iu"
    kind = (tolerance or {}).get("kind", "exact")
    if integer:
        diff = a.astype(np.int64) - e.astype(np.int64)
        if kind == "exact":
            bad = diff != 0
        else:
            tol = float(tolerance.get("atol", 0.0)) + float(tolerance.get("rtol", 0.0)) * \
                np.abs(e.astype(np.float64))
            bad = np.abs(diff.astype(np.float64)) > tol
    else:
        e64, a64 = e.astype(np.float64), a.astype(np.float64)
        both_nan = np.isnan(e64) & np.isnan(a64)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = a64 - e64
            if kind == "exact":
                bad = ~((a64 == e64) | both_nan)
            else:
                tol = float(tolerance.get("atol", 0.0)) + float(tolerance.get("rtol", 0.0)) * \
                    np.abs(e64)
                bad = ~((np.abs(diff) <= tol) | both_nan)
    n_bad = int(np.count_nonzero(bad))
    out = {"status": "pass" if n_bad == 0 else "fail", "count": int(e.size), "mismatches": n_bad,
           "diff_unit": "LSB" if integer else "abs", "max_diff": 0, "first": None}
    if n_bad:
        d = diff[bad]
        if integer:
            out["max_diff"] = int(np.abs(d).max())
            vals, counts = np.unique(d, return_counts=True)
            top = sorted(zip(counts.tolist(), vals.tolist()), key=lambda t: (-t[0], t[1]))[:8]
            out["histogram"] = {f"{v:+d}": c for c, v in sorted(top, key=lambda t: t[1])}
        else:
            ad = np.abs(d)
            out["max_diff"] = _scalar(np.nanmax(ad) if not np.all(np.isnan(ad)) else np.nan)
        flat = int(np.argmax(bad.reshape(-1)))
        idx = [int(i) for i in np.unravel_index(flat, e.shape)] if e.ndim else []
        fd = diff.reshape(-1)[flat]
        out["first"] = {"index": idx, "expected": _scalar(e.reshape(-1)[flat]),
                        "actual": _scalar(a.reshape(-1)[flat]),
                        "diff": int(fd) if integer else _scalar(fd)}
    return out


def _load_dump(path, where) -> np.ndarray:
    from ..exporters.hardware import read_dump

    try:
        return read_dump(path)
    except RefqError as e:
        todo = f"; {_DUMP_HELP}" if path.endswith(".npy") else ""
        raise InputError(f"{one_line(e)} ({where}){todo}") from None


def _has_dumps(dut_dir) -> bool:
    for d in (dut_dir, os.path.join(dut_dir, "outputs"), os.path.join(dut_dir, "trace")):
        if os.path.isdir(d) and any(nm.endswith(DUMP_SUFFIXES) for nm in os.listdir(d)):
            return True
    return False


# ---- verify -------------------------------------------------------------------------------------

def verify(case_dir, dut_dir, require_trace: bool = False) -> dict:
    """Compare the dumps in `dut_dir` with golden case `case_dir`; see the module docstring.
    require_trace: also fail (InputError) when a trace tensor is not dumped. Writes nothing."""
    case = read_case(case_dir)
    dut_dir = os.fspath(dut_dir)
    if not os.path.isdir(dut_dir):
        what = "is not a directory" if os.path.exists(dut_dir) else "no such DUT dump directory"
        raise InputError(f"{dut_dir}: {what}; --dut names the directory of the implementation's "
                         "dumps")
    if not _has_dumps(dut_dir):
        outs = ", ".join(f"'{t}'" for t in case.entries("outputs"))
        raise InputError(f"{dut_dir}: holds no dump (.npy, .hex, .bin or .h, directly or in "
                         f"outputs/ or trace/), so nothing can be compared with case "
                         f"'{case.id}'; dump at least its outputs ({outs}) there")
    order = case.tensor_order()
    tol = case.tolerance
    todo = [(n, "outputs") for n in case.entries("outputs")]
    todo += [(n, "trace") for n in case.entries("trace") if n not in case.entries("outputs")]
    loaded, absent = [], []
    for name, section in todo:  # every file is loaded and checked before anything is compared
        path = find_dump(dut_dir, name, section)
        if path is None:
            if section == "outputs" or require_trace:
                role = "output" if section == "outputs" else "trace"
                raise InputError(f"{dut_dir}: no DUT dump of {role} tensor '{name}' of case "
                                 f"'{case.id}' (looked for {_searched(dut_dir, name, section)}); "
                                 "dump it")
            absent.append(name)
            continue
        expected = case.array(section, name)
        where = f"DUT dump of tensor '{name}', case '{case.id}'"
        actual = check_dump(expected, _load_dump(path, where), f"{path}: {where}", _DUMP_HELP)
        loaded.append((name, section, path, expected, actual))
    rows = []
    for name, section, path, expected, actual in loaded:
        o, layer = order.get(name, (None, None))
        row = {"name": name, "role": "output" if section == "outputs" else "trace",
               "layer": layer, "order": o, "file": os.path.relpath(path, dut_dir),
               "dtype": str(expected.dtype), "dut_dtype": str(actual.dtype),
               "shape": list(expected.shape)}
        row.update(compare_arrays(expected, actual, tol))
        rows.append(row)
    rows.sort(key=lambda r: (r["order"] if r["order"] is not None else 1 << 30,
                             r["role"] != "trace", r["name"]))
    if not rows:  # unreachable: read_case requires an output and every output is dumped
        raise InputError(f"case '{case.id}': nothing was compared")
    failed = [r for r in rows if r["status"] == "fail"]
    first = None
    if failed:
        r = failed[0]
        first = {"tensor": r["name"], "layer": r["layer"], "order": r["order"], "role": r["role"],
                 "diff_unit": r["diff_unit"], **r["first"]}
    cj = case.case_json
    return {"case": case.id, "case_dir": os.fspath(case_dir), "dut_dir": dut_dir,
            "kind": cj.get("kind"), "profile": cj.get("profile"),
            "golden_refq_version": cj.get("refq_version"), "tolerance": tol,
            "passed": not failed, "compared": len(rows), "failed": len(failed),
            "trace_compared": sum(r["role"] == "trace" for r in rows), "absent_trace": absent,
            "tensors": rows, "first_divergence": first}


def _fmt_value(v):
    return repr(v) if isinstance(v, float) else str(v)


def diff_text(diff, unit: str) -> str:
    """'+1 LSB' for integers, '|diff| 0.5' for floats."""
    if unit == "LSB":
        return f"{int(diff):+d} LSB"
    return f"|diff| {abs(diff)!r}" if isinstance(diff, float) else f"diff {diff}"


def describe_divergence(d: dict) -> str:
    """One line: layer, tensor, index, expected, actual, difference."""
    diff = diff_text(d["diff"], d["diff_unit"])
    layer = f"layer '{d['layer']}' (#{d['order']} in topological order)" if d.get("layer") \
        else "an unknown layer"
    return (f"first divergence at {layer}, tensor '{d['tensor']}', index {d['index']}: expected "
            f"{_fmt_value(d['expected'])}, actual {_fmt_value(d['actual'])} ({diff})")


def format_verify(report: dict) -> str:
    """A human-readable verify report."""
    tol = report["tolerance"]
    tol_s = "exact" if tol.get("kind") == "exact" else \
        f"allclose atol={tol.get('atol')} rtol={tol.get('rtol')}"
    head = (f"case '{report['case']}' ({report['kind']}, profile {report['profile'] or '-'}, "
            f"{tol_s}): {'PASS' if report['passed'] else 'FAIL'}: {report['compared']} tensors "
            f"compared ({report['trace_compared']} from the trace), {report['failed']} differ")
    lines = [head]
    w = max([len(r["name"]) for r in report["tensors"]] + [6])
    lines.append(f"  {'#':>3}  {'tensor':<{w}}  {'role':<6}  {'status':<6}  {'mismatches':>14}  "
                 f"max diff")
    for r in report["tensors"]:
        mm = f"{r['mismatches']}/{r['count']}"
        md = "" if r["status"] == "pass" else \
            (f"{r['max_diff']} LSB" if r["diff_unit"] == "LSB" else f"{r['max_diff']!r}")
        o = "" if r["order"] is None else r["order"]
        lines.append(f"  {o!s:>3}  {r['name']:<{w}}  {r['role']:<6}  {r['status']:<6}  "
                     f"{mm:>14}  {md}".rstrip())
        if r.get("histogram"):
            hist = ", ".join(f"{k}: {v}" for k, v in r["histogram"].items())
            lines.append(f"  {'':>3}  {'':<{w}}  LSB differences {hist}")
    if report["absent_trace"]:
        names = ", ".join(report["absent_trace"][:6])
        extra = len(report["absent_trace"]) - 6
        more = f" and {extra} more" if extra > 0 else ""
        lines.append(f"  not dumped (trace): {names}{more}")
    if report["first_divergence"]:
        lines.append(describe_divergence(report["first_divergence"]))
        if report["trace_compared"] == 0:
            lines.append("  (no trace tensors were dumped; dump them to locate the first "
                         "diverging layer)")
    return "\n".join(lines) + "\n"
