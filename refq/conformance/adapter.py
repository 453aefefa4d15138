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
    case.kind         "float" | "quant" | "integer"
    case.profile      the numerics profile name (integer cases), else None
    case.description  one line
    case.graph        the model as a refq Graph: case.graph.nodes in topological order, each with
                      .name, .op, .inputs, .outputs (tensor names), .attrs (dict) and .params
                      ({name: np.ndarray}); case.graph.inputs (TensorSpec name/shape/dtype),
                      case.graph.outputs (tensor names); case.graph.meta (dict)
    case.inputs       {graph input name: np.ndarray} (float arrays; integer graphs quantize them
                      in their first `int_quantize` node)
    case.layouts      {input name: layout string, e.g. "NHWC"}
    case.output_names the graph outputs the adapter must return
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

Outcomes per case: "pass"; "fail" (a value, shape, dtype or missing output; the detail names the
first mismatching output, index, expected and actual values and the LSB or absolute difference);
"skipped" when the adapter raises NotImplementedError (its message is the detail: "op softmax not
supported"); "error" when it raises anything else (the exception is the detail; the run continues).
A golden directory that is damaged (a case whose files do not match their sha256) is a RefqError
before any adapter call. The run passes when no case fails or errors.
"""
from __future__ import annotations

import fnmatch
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError, InputError, RefqError
from .verify import check_dump, compare_arrays, diff_text, read_case

__all__ = ["AdapterCase", "run_adapter", "format_adapter", "load_adapter", "golden_case_ids"]


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


def load_adapter(spec):
    """The callable named by "module:function" (or `spec` itself when it is callable)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise InputError(f"adapter {spec!r}: name it as 'module:function', e.g. "
                         "'examples.adapter_numpy:run'")
    module, func = spec.split(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise InputError(f"adapter {spec!r}: cannot import module '{module}' ({e}); run from the "
                         "directory that contains it or put it on PYTHONPATH") from None
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise InputError(f"adapter {spec!r}: module '{module}' has no function '{func}'")
    return fn


def golden_case_ids(golden_dir, pattern: str | None = None) -> list:
    """The case ids of golden suite `golden_dir` (its manifest.json, sorted) matching `pattern`
    (fnmatch globs, comma-separated, as `refq golden generate --cases`)."""
    golden_dir = os.fspath(golden_dir)
    path = os.path.join(golden_dir, "manifest.json")
    if not os.path.isfile(path):
        raise FormatError(f"{golden_dir}: no manifest.json; not a golden suite (generate one with "
                          "`refq golden generate`)")
    try:
        with open(path) as f:
            cases = json.load(f)["cases"]
        ids = sorted(cases)
    except (OSError, ValueError, KeyError, TypeError):
        raise FormatError(f"{path}: not a valid golden manifest") from None
    if pattern is None:
        return ids
    globs = [g.strip() for g in str(pattern).split(",") if g.strip()]
    if not globs:
        raise InputError("empty case pattern; give a glob such as 'float.*'")
    chosen = set()
    for g in globs:
        hits = [c for c in ids if fnmatch.fnmatchcase(c, g)]
        if not hits:
            raise InputError(f"no case of {golden_dir} matches {g!r} (fnmatch globs, "
                             "comma-separated)")
        chosen.update(hits)
    return [c for c in ids if c in chosen]


def _integer_view(graph) -> dict | None:
    meta = graph.meta.get("integer")
    if not isinstance(meta, dict):
        return None
    nodes = {}
    for n in graph.topological_order():
        nodes[n.name] = {"op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
                         "attrs": json.loads(json.dumps(n.attrs)),
                         "params": {k: np.array(v) for k, v in n.params.items()}}
    return {"profile": meta.get("profile"), "profile_fields": dict(meta.get("profile_fields", {})),
            "tensors": json.loads(json.dumps(meta.get("tensors", {}))), "nodes": nodes}


def _adapter_case(case_dir):
    from .case import load_case

    gc = read_case(case_dir)  # sha256 of every file, manifest entry
    graph, inputs, outputs, _trace, cj = load_case(case_dir)
    ac = AdapterCase(
        id=gc.id, kind=cj.get("kind"), profile=cj.get("profile"),
        description=cj.get("description", ""), graph=graph,
        inputs={k: np.array(v) for k, v in inputs.items()},
        layouts={k: e.get("layout") for k, e in gc.entries("inputs").items()},
        output_names=list(graph.outputs), tolerance=dict(gc.tolerance),
        quantization=json.loads(json.dumps(cj.get("quantization") or {})),
        integer=_integer_view(graph) if cj.get("kind") == "integer" else None,
        case_dir=os.fspath(case_dir))
    return ac, outputs


def _judge(ac: AdapterCase, expected: dict, got) -> tuple:
    """(status, detail, per-output comparisons) of an adapter's result."""
    if not isinstance(got, dict):
        if len(expected) == 1 and got is not None and not isinstance(got, (str, bytes)):
            got = {next(iter(expected)): got}
        else:
            return "fail", (f"the adapter returned {type(got).__name__}; return a dict {{output "
                            f"name: array}} with {list(expected)}"), []
    rows = []
    for name, e in expected.items():
        if name not in got:
            return "fail", f"output '{name}' missing from the adapter's result " \
                           f"(got {sorted(map(str, got))})", rows
        try:
            a = check_dump(e, got[name], f"output '{name}'")
        except RefqError as err:
            return "fail", str(err), rows
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


def run_adapter(adapter, golden_dir="golden", pattern: str | None = None) -> dict:
    """Run `adapter` ("module:function" or a callable) on every case of `golden_dir` matching
    `pattern`; return {adapter, golden, passed, counts, cases: [{case, kind, profile, status,
    detail, seconds, outputs}]}. See the module docstring for the contract."""
    fn = load_adapter(adapter)
    golden_dir = os.fspath(golden_dir)
    ids = golden_case_ids(golden_dir, pattern)
    loaded = [_adapter_case(os.path.join(golden_dir, cid)) for cid in ids]  # all checked first
    rows = []
    for ac, expected in loaded:
        t0 = time.perf_counter()
        try:
            got = fn(ac)
        except NotImplementedError as e:
            status, detail, comps = "skipped", str(e) or "not implemented", []
        except Exception as e:  # noqa: BLE001 - the adapter is foreign code; report, continue
            status, detail, comps = "error", f"{type(e).__name__}: {e}", []
        else:
            status, detail, comps = _judge(ac, expected, got)
        rows.append({"case": ac.id, "kind": ac.kind, "profile": ac.profile, "status": status,
                     "detail": detail, "seconds": round(time.perf_counter() - t0, 6),
                     "outputs": comps})
    counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "fail", "skipped", "error")}
    name = adapter if isinstance(adapter, str) else getattr(adapter, "__name__", repr(adapter))
    return {"adapter": name, "golden": golden_dir, "pattern": pattern,
            "passed": counts["fail"] == 0 and counts["error"] == 0, "counts": counts,
            "cases": rows}


def format_adapter(results: dict) -> str:
    """The pass/fail table of `run_adapter`."""
    rows = results["cases"]
    w = max([len(r["case"]) for r in rows] + [4])
    lines = [f"{'case':<{w}}  {'kind':<7}  {'profile':<13}  {'status':<7}  detail"]
    for r in rows:
        lines.append(f"{r['case']:<{w}}  {r['kind'] or '-':<7}  {r['profile'] or '-':<13}  "
                     f"{r['status']:<7}  {r['detail']}".rstrip())
    c = results["counts"]
    lines.append(f"adapter {results['adapter']} on {results['golden']}: {c['pass']} passed, "
                 f"{c['fail']} failed, {c['error']} errors, {c['skipped']} skipped "
                 f"({len(rows)} cases): {'PASS' if results['passed'] else 'FAIL'}")
    return "\n".join(lines) + "\n"
