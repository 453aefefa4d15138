"""`refq golden generate | check | verify` and `refq conformance run`: the golden vectors
(refq.conformance) and other implementations checked against them."""
from __future__ import annotations

import argparse
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


def add_golden_parsers(sub):
    """Add `refq golden generate | check | verify` and `refq conformance run` to `sub`."""
    g = sub.add_parser("golden", help="golden vectors: generate the suite, check it")
    gsub = g.add_subparsers(dest="golden_command", required=True)
    s = gsub.add_parser("generate", help="write the golden cases and manifest.json")
    s.add_argument("--cases", metavar="PATTERN", help="fnmatch globs of case ids, comma-separated "
                                                      "(default: every case)")
    s.add_argument("--out", default="golden", metavar="DIR", help="suite directory (golden/)")
    s.set_defaults(func=cmd_golden_generate)
    s = gsub.add_parser("check", help="regenerate and compare every byte with a committed suite")
    s.add_argument("--golden", default="golden", metavar="DIR", help="suite directory (golden/)")
    s.add_argument("--cases", metavar="PATTERN", help="fnmatch globs of case ids, comma-separated "
                                                      "(default: every case)")
    s.set_defaults(func=cmd_golden_check)
    for s in gsub.choices.values():
        s.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars or chatter")
    s = gsub.add_parser("verify", help="compare another implementation's dumps with a golden case "
                                       "and name the first diverging layer")
    s.add_argument("case", metavar="CASE_DIR", help="a golden case directory")
    s.add_argument("--dut", required=True, metavar="DIR",
                   help="the implementation's dumps: <tensor>.npy, or .hex/.bin with .json "
                        "sidecars (outputs required, trace tensors optional)")
    s.add_argument("--json", metavar="REPORT", help="also write the report as JSON")
    s.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="only the verdict and the first divergence")
    s.set_defaults(func=cmd_golden_verify)

    s = sub.add_parser("conformance", help="run another implementation on the golden suite")
    csub = s.add_subparsers(dest="conformance_command", required=True)
    c = csub.add_parser("run", help="call an adapter function on every golden case and compare")
    c.add_argument("--adapter", required=True, metavar="MODULE:FUNCTION",
                   help="e.g. examples.adapter_numpy:run (imported from the current directory)")
    c.add_argument("--golden", default="golden", metavar="DIR", help="golden suite (default "
                                                                      "golden/)")
    c.add_argument("--cases", metavar="PATTERN", help="fnmatch globs, comma-separated")
    c.add_argument("--json", metavar="REPORT", help="also write the results as JSON")
    c.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars or chatter")
    c.set_defaults(func=cmd_conformance_run)
