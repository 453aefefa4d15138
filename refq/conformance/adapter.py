"""The adapter harness: run another implementation on every golden case and compare.

    results = run_adapter("mypkg.refq_adapter:run", "golden/", pattern="float.*")
    print(format_adapter(results))
    refq conformance run --adapter mypkg.refq_adapter:run [--golden DIR] [--cases PATTERN]

The adapter contract
--------------------
An adapter is a function `fn(case) -> {output name: array}` named "module:function". The module is
imported with the current directory first on sys.path, so `examples.adapter_numpy:run` works from
the repository root. It is called once per case with an `AdapterCase` (read only; arrays are
copies):

    case.id           the case id, e.g. "float.dense.basic"
    case.kind         "float" | "quant" | "integer" | "float32" | "sim"
    case.profile      the numerics profile name (integer cases), else None
    case.description  one line
    case.graph        the model as a refq Graph: case.graph.nodes in topological order, each with
                      .name, .op, .inputs, .outputs (tensor names), .attrs (dict) and .params
                      ({name: np.ndarray}); case.graph.inputs (TensorSpec name/shape/dtype),
                      case.graph.outputs (tensor names); case.graph.meta (dict)
    case.inputs       {graph input name: np.ndarray} (float arrays; integer graphs quantize them
                      in their first `int_quantize` node)
    case.layouts      {input name: layout string, e.g. "NHWC"}
    case.output_names the outputs the adapter must return: the graph outputs (quant cases: the
                      case's outputs q, x_dq, x_fq, see golden/README.md "quant")
    case.tolerance    {"kind": "exact"} or {"kind": "allclose", "atol": a, "rtol": r}
    case.quantization {tensor or "<node>/<param>": encoding dict} (quant cases), else {}
    case.integer      integer cases: {"profile": name, "profile_fields": {...}, "tensors": {tensor:
                      {scale, zero_point, dtype, qmin, qmax}}, "nodes": {node name: {"op",
                      "inputs", "outputs", "attrs": {...}, "params": {name: np.ndarray}}}} in
                      topological order (int8/int32 weights, biases, multipliers, shifts); else None

The function returns {output name: array-like} with every name of `case.output_names`, each of the
expected shape (a bare array is accepted when there is one output). Integer outputs must have the
expected integer dtype; float outputs may be any float width. Values are compared under the case
tolerance exactly as `refq golden verify` compares dumps (refq.conformance.verify.compare_arrays).

Outcomes per case: "pass"; "fail" (a value, shape, dtype or missing output, or a result that is
not a dict of arrays; the detail names the first mismatching output, index, expected and actual
values and the LSB or absolute difference); "skipped" when the adapter raises NotImplementedError
(its message is the detail: "op softmax not supported"); "error" when it raises anything else (the
detail is one line: the exception and the line that raised it; the run continues).

Before any adapter call, each a RefqError (one line naming the adapter, the suite or the case): a
name that is not "module:function", a module that cannot be found or fails to import (syntax
error, import error, any exception), a missing or non-callable function, or one that cannot take
one argument; a directory that is not a suite, a damaged manifest.json or one listing no case, a
--cases glob matching no case, and a damaged case (refq.conformance.case_reader.read_case: case.json,
sha256 of every file, arrays).

The verdict (`verdict`): FAIL when a case failed or errored (exit status 1); INCOMPLETE when
nothing was compared or more cases were skipped than `max_skipped` allows (exit status 3); PASS
otherwise (exit status 0): skipping is never passing by itself.
"""
from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError, InputError, RefqError, one_line
from .case import MANIFEST, match_ids
from .case_reader import case_dir_hint, load_case, read_manifest
from .verify import check_dump, compare_arrays, diff_text

__all__ = ["AdapterCase", "run_adapter", "format_adapter", "load_adapter", "golden_case_ids",
           "verdict", "EXIT_STATUS"]


@dataclass
class AdapterCase:
    """What an adapter receives (see the module docstring)."""

    id: str
    kind: str
    profile: str | None
    description: str
    graph: object
    inputs: dict
    layouts: dict
    output_names: list
    tolerance: dict
    quantization: dict = field(default_factory=dict)
    integer: dict | None = None
    case_dir: str = ""


_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def load_adapter(spec):
    """The callable named by "module:function" (or `spec` itself when it is callable). InputError
    naming the adapter when the name is not "dotted.module:function", the module cannot be found,
    fails to import (a syntax error, an import error, any exception), lacks the function, or the
    attribute is not a function of one argument (the case)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise InputError(f"adapter {one_line(repr(spec))[:80]}: not a 'module:function' name (a "
                         "dotted Python module, a colon, a function), e.g. --adapter "
                         "examples.adapter_numpy:run")
    module, func = spec.split(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    fix = "fix the module or name another adapter with --adapter"
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise InputError(f"adapter {spec}: cannot import module '{module}': no such module "
                             "(it is imported with the current directory first on sys.path); "
                             "run from the directory that contains it or put it on PYTHONPATH") \
                from None
        raise InputError(f"adapter {spec}: importing module '{module}' failed: it imports "
                         f"'{e.name}', which is not installed; {fix}") from None
    except SyntaxError as e:
        raise InputError(f"adapter {spec}: module '{module}' has a syntax error "
                         f"({os.path.basename(e.filename or '?')}, line {e.lineno}: "
                         f"{one_line(e.msg)}); {fix}") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - foreign code runs on import
        raise InputError(f"adapter {spec}: importing module '{module}' raised "
                         f"{type(e).__name__}: {one_line(e)[:200]}{_at(e)}; {fix}") from None
    fn = getattr(mod, func, None)
    if fn is None:
        have = sorted(k for k, v in vars(mod).items() if callable(v) and not k.startswith("_")
                      and getattr(v, "__module__", None) == mod.__name__)
        raise InputError(f"adapter {spec}: module '{module}' has no function '{func}' (its "
                         f"functions: {', '.join(have) or 'none'}); {fix}")
    if not callable(fn):
        raise InputError(f"adapter {spec}: '{module}.{func}' is {type(fn).__name__}, not a "
                         f"function; {fix}")
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        raise InputError(f"adapter {spec}: function '{func}' cannot be called with one argument "
                         f"(the case); define it as `def {func}(case)`") from None
    except ValueError:  # no signature (a builtin): let the call decide
        pass
    return fn


def _at(e: BaseException) -> str:
    """' (at file.py:12)': where in foreign code `e` was raised, or ''."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {os.path.basename(f.filename)}:{f.lineno})"


def golden_case_ids(golden_dir, pattern: str | None = None) -> list:
    """The case ids of golden suite `golden_dir` (its manifest.json, sorted) matching `pattern`
    (fnmatch globs, comma-separated, as `refq golden generate --cases`). FormatError when the
    directory is not a suite, its manifest is damaged or lists no case, or a selected case's
    directory is missing; InputError when a glob matches no case."""
    golden_dir = os.fspath(golden_dir)
    path = os.path.join(golden_dir, MANIFEST)
    if not os.path.isdir(golden_dir):
        raise FormatError(f"{golden_dir}: no such golden suite directory; give one with --golden "
                          "(create it with `refq golden generate --out DIR`)")
    if not os.path.isfile(path):
        raise FormatError(f"{golden_dir}: no manifest.json; not a golden suite"
                          f"{case_dir_hint(golden_dir)} (generate "
                          f"one with `refq golden generate --out {golden_dir}`)")
    ids = sorted(read_manifest(path))
    if not ids:
        raise FormatError(f"{path}: lists no case, so a run would compare nothing; generate the "
                          f"suite with `refq golden generate --out {golden_dir}`")
    chosen = set(ids)
    if pattern is not None:
        chosen = match_ids(
            ids, pattern, "--cases: empty case pattern; give a glob such as 'float.*'",
            lambda g, groups: f"--cases: no case of {golden_dir} matches {g!r} (fnmatch globs, "
                              f"comma-separated; the suite's groups: {', '.join(groups)})")
    for cid in sorted(chosen):
        if not os.path.isdir(os.path.join(golden_dir, cid)):
            raise FormatError(f"{path}: lists case '{cid}' but {os.path.join(golden_dir, cid)} "
                              f"is missing; restore it, or regenerate with `refq golden generate "
                              f"--cases {cid} --out {golden_dir}`")
    return [c for c in ids if c in chosen]


def _integer_view(graph, cj_path) -> dict | None:
    """AdapterCase.integer of an integer graph; FormatError naming case.json when its
    graph.meta.integer has no profile, profile_fields or tensors of the right type."""
    meta = graph.meta.get("integer")
    if not isinstance(meta, dict) or not isinstance(meta.get("profile"), str) or \
            not isinstance(meta.get("profile_fields", {}), dict) or \
            not isinstance(meta.get("tensors"), dict):
        raise FormatError(f"{cj_path}: 'graph' 'meta' 'integer' lacks a profile name, "
                          "profile_fields or tensors (an integer case needs them); the case was "
                          "changed or damaged: restore it, or regenerate it with `refq golden "
                          "generate`")
    nodes = {}
    for n in graph.topological_order():
        nodes[n.name] = {"op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
                         "attrs": json.loads(json.dumps(n.attrs)),
                         "params": {k: np.array(v) for k, v in n.params.items()}}
    return {"profile": meta.get("profile"), "profile_fields": dict(meta.get("profile_fields", {})),
            "tensors": json.loads(json.dumps(meta.get("tensors", {}))), "nodes": nodes}


def _adapter_case(case_dir):
    graph, inputs, outputs, _trace, cj = load_case(case_dir)  # checked: refq.conformance.case_reader
    names = [t for t in graph.outputs if t in outputs] + [t for t in outputs
                                                          if t not in graph.outputs]
    ac = AdapterCase(
        id=cj["case"], kind=cj["kind"], profile=cj["profile"], description=cj["description"],
        graph=graph, inputs={k: np.array(v) for k, v in inputs.items()},
        layouts={k: e.get("layout") for k, e in cj["inputs"].items()},
        output_names=names, tolerance=dict(cj["tolerance"]),
        quantization=json.loads(json.dumps(cj["quantization"])),
        integer=_integer_view(graph, os.path.join(os.fspath(case_dir), "case.json"))
        if cj["kind"] == "integer" else None,
        case_dir=os.fspath(case_dir))
    return ac, {t: outputs[t] for t in names}


_RETURN = "return a dict {output name: array} with every name of case.output_names"


def _judge(ac: AdapterCase, expected: dict, got) -> tuple:
    """(status, detail, per-output comparisons) of an adapter's result: "fail" with a one-line
    detail when it is not a dict of arrays of the expected outputs (a bare array is accepted for
    a single output) or when a value differs."""
    if not isinstance(got, dict):
        if len(expected) == 1 and isinstance(got, (np.ndarray, np.generic, list, tuple, int,
                                                    float)) and not isinstance(got, bool):
            got = {next(iter(expected)): got}
        else:
            return "fail", (f"the adapter returned {type(got).__name__}; {_RETURN} "
                            f"({', '.join(expected)})"), []
    rows = []
    for name, e in expected.items():
        if name not in got:
            keys = ", ".join(sorted(one_line(repr(k))[:40] for k in got)[:8]) or "nothing"
            return "fail", f"output '{name}' missing from the adapter's result (it has " \
                           f"{keys}); {_RETURN}", rows
        try:
            a = check_dump(e, got[name], f"output '{name}'", _RETURN)
        except RefqError as err:
            return "fail", one_line(err), rows
        c = compare_arrays(e, a, ac.tolerance)
        c["name"] = name
        rows.append(c)
    bad = [c for c in rows if c["status"] == "fail"]
    if not bad:
        return "pass", "", rows
    c = bad[0]
    f = c["first"]
    diff = diff_text(f["diff"], c["diff_unit"])
    return "fail", (f"output '{c['name']}': {c['mismatches']}/{c['count']} elements differ; "
                    f"first at {f['index']}: expected {f['expected']!r}, actual "
                    f"{f['actual']!r} ({diff})"), rows


#: The verdicts of a run and their exit statuses (`refq conformance run`).
EXIT_STATUS = {"PASS": 0, "FAIL": 1, "INCOMPLETE": 3}


def verdict(counts: dict, max_skipped: int | None = None) -> tuple:
    """(verdict, reason) of a run's counts {pass, fail, skipped, error}:
    FAIL        a case failed (a mismatch, a wrong or missing output) or the adapter raised;
    INCOMPLETE  otherwise, when no case was compared (every case skipped) or more than
                `max_skipped` were skipped (None: no limit);
    PASS        otherwise: every compared case matched, at least one was compared."""
    if counts["fail"] or counts["error"]:
        return "FAIL", f"{counts['fail']} failed, {counts['error']} adapter errors"
    if counts["pass"] == 0:
        return "INCOMPLETE", "nothing was compared: the adapter skipped every case"
    if max_skipped is not None and counts["skipped"] > max_skipped:
        return "INCOMPLETE", f"{counts['skipped']} cases skipped, more than --max-skipped " \
                             f"{max_skipped}"
    return "PASS", ""


def run_adapter(adapter, golden_dir="golden", pattern: str | None = None,
                max_skipped: int | None = None) -> dict:
    """Run `adapter` ("module:function" or a callable) on every case of `golden_dir` matching
    `pattern`; return {adapter, golden, pattern, verdict, reason, passed (verdict == "PASS"),
    compared, max_skipped, counts: {pass, fail, skipped, error}, cases: [{case, kind, profile,
    status, detail, seconds, outputs}]}. Every case is loaded and checked before the adapter is
    called; an exception the adapter raises is recorded as an "error" of that case (its type,
    message and line) and the run continues. See the module docstring for the contract and
    `verdict` for the verdict."""
    if max_skipped is not None and (not isinstance(max_skipped, int) or max_skipped < 0):
        raise InputError(f"--max-skipped must be an integer >= 0, got {max_skipped!r}")
    fn = load_adapter(adapter)
    name = adapter if isinstance(adapter, str) else getattr(adapter, "__name__", repr(adapter))
    golden_dir = os.fspath(golden_dir)
    ids = golden_case_ids(golden_dir, pattern)
    loaded = [_adapter_case(os.path.join(golden_dir, cid)) for cid in ids]  # all checked first
    rows = []
    for ac, expected in loaded:
        t0 = time.perf_counter()
        try:
            got = fn(ac)
        except NotImplementedError as e:
            status, detail, comps = "skipped", one_line(e)[:200] or "not implemented", []
        except (Exception, SystemExit) as e:  # noqa: BLE001 - foreign code; report, continue
            status, comps = "error", []
            detail = f"{name} raised {type(e).__name__}: {one_line(e)[:200]}{_at(e)}"
        else:
            status, detail, comps = _judge(ac, expected, got)
        rows.append({"case": ac.id, "kind": ac.kind, "profile": ac.profile, "status": status,
                     "detail": detail, "seconds": round(time.perf_counter() - t0, 6),
                     "outputs": comps})
    counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "fail", "skipped", "error")}
    v, reason = verdict(counts, max_skipped)
    return {"adapter": name, "golden": golden_dir, "pattern": pattern, "verdict": v,
            "reason": reason, "passed": v == "PASS", "compared": counts["pass"] + counts["fail"],
            "max_skipped": max_skipped, "counts": counts, "cases": rows}


def format_adapter(results: dict) -> str:
    """The pass/fail table of `run_adapter` and its summary line: cases, compared, passed,
    failed, adapter errors, skipped, the verdict and why."""
    rows = results["cases"]
    w = max([len(r["case"]) for r in rows] + [4])
    lines = [f"{'case':<{w}}  {'kind':<7}  {'profile':<13}  {'status':<7}  detail"]
    for r in rows:
        lines.append(f"{r['case']:<{w}}  {r['kind'] or '-':<7}  {r['profile'] or '-':<13}  "
                     f"{r['status']:<7}  {r['detail']}".rstrip())
    c = results["counts"]
    limit = "" if results.get("max_skipped") is None else f" (at most {results['max_skipped']})"
    why = f" ({results['reason']})" if results["verdict"] != "PASS" else ""
    lines.append(f"adapter {results['adapter']} on {results['golden']}: {len(rows)} cases, "
                 f"{results['compared']} compared, {c['pass']} passed, {c['fail']} failed, "
                 f"{c['error']} errors, {c['skipped']} skipped{limit}: "
                 f"{results['verdict']}{why}")
    return "\n".join(lines) + "\n"
