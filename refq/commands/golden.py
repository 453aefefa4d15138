"""`refq golden generate | check | verify` and `refq conformance run`: the golden vectors
(refq.conformance) and other implementations checked against them."""
from __future__ import annotations

import sys

from . import write_json


def cmd_golden_generate(args):
    from ..conformance import generate

    r = generate(args.out, args.cases, quiet=args.quiet)
    if not args.quiet:
        print(f"golden: wrote {r['cases']} cases ({r['files']} files, {r['bytes'] / 1e6:.1f} MB) "
              f"to {args.out} in {r['seconds']:.1f} s")


def cmd_golden_check(args):
    from ..conformance import check, format_check

    report = check(args.golden, args.cases, quiet=args.quiet)
    if not report["ok"]:
        print(f"refq: error: {format_check(report)}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(format_check(report))
    return 0


def cmd_golden_verify(args):
    from ..conformance.verify import describe_divergence, format_verify, verify

    report = verify(args.case, args.dut)  # raises before anything is written
    if args.json:
        write_json(args.json, report)
    if args.quiet:
        print(f"case '{report['case']}': {'PASS' if report['passed'] else 'FAIL'}")
        if report["first_divergence"]:
            print(describe_divergence(report["first_divergence"]))
    else:
        print(format_verify(report), end="")
    return 0 if report["passed"] else 1


def cmd_conformance_run(args):
    from ..conformance.adapter import format_adapter, run_adapter

    results = run_adapter(args.adapter, args.golden, args.cases)
    if args.json:
        write_json(args.json, results)
    print(format_adapter(results), end="")
    return 0 if results["passed"] else 1
