"""The `refq` command.

    refq import MODEL.h5 -o MODEL.refq.h5 [--architecture ARCH.json]
    refq info MODEL.refq.h5 [--json]
    refq run MODEL.refq.h5 --input X.npy --output Y.npy [--mode float|sim] [--trace DIR]
             [--dtype float64|float32] [--batch-size N] [--quiet]
    refq quantize MODEL.refq.h5 --calib CALIB.npy -o Q.refq.h5 [--config CFG | --per-channel]
             [--scheme minmax|tf_enhanced|percentile|sqnr|mse] [--param-bw 8] [--act-bw 8]
             [--encodings OUT.encodings] [--load-encodings AIMET.encodings] [--batch-size N]
             [--fold-bn] [--cle [--relu6-to-relu] [--through-se] [--no-high-bias]]
             [--bias-correction empirical|analytical] [--report DFQ.json]
    refq equalize MODEL.refq.h5 -o EQ.refq.h5 [--report CLE.json] [--relu6-to-relu]
             [--through-se] [--no-high-bias]
    refq report Q.refq.h5 --data X.npy [--json REPORT.json] [--top N] [--batch-size N]
    refq lower Q.refq.h5 --profile tflite -o INT.refq.h5
    refq run INT.refq.h5 --mode int --input X.npy --output Y.npy [--trace DIR]
    refq compare Q.refq.h5 --profile tflite --data X.npy [--json CMP.json] [--all-layers]
    refq profiles
    refq golden generate [--cases PATTERN] [--out DIR]
    refq golden check [--golden DIR] [--cases PATTERN]
    refq golden verify CASE_DIR --dut DIR [--json REPORT]
    refq export INT.refq.h5|CASE_DIR --format hex|c|bin[,...] -o DIR [--pack K]
    refq conformance run --adapter MODULE:FUNCTION [--golden DIR] [--cases PATTERN] [--json R]
    refq demo [--quiet]

Errors in the input (RefqError) are printed as one line `refq: error: ...` and exit with status 1.
"""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands.golden import add_golden_parsers
from .commands.integer import cmd_compare, cmd_export, cmd_lower, cmd_profiles
from .commands.model import cmd_demo, cmd_import, cmd_info, cmd_run
from .commands.quant import cmd_equalize, cmd_quantize, cmd_report
from .errors import RefqError


def _equalize_options(s):
    s.add_argument("--relu6-to-relu", action="store_true",
                   help="replace ReLU6 by ReLU so CLE can pass it (AIMET <= 2.3; changes the model)")
    s.add_argument("--through-se", action="store_true",
                   help="let CLE pass squeeze-excitation blocks (a refq extension)")
    s.add_argument("--no-high-bias", action="store_true", help="skip high-bias absorption")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refq", description="refq: reference quantization toolkit")
    p.add_argument("--version", action="version", version=f"refq {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("import", help="import a Keras HDF5 model into the refq format")
    s.add_argument("model", help="Keras .h5/.hdf5, .keras or .weights.h5 file")
    s.add_argument("-o", "--output", required=True, help="output .refq.h5 file")
    s.add_argument("--architecture", help="architecture JSON (model.to_json()) for .weights.h5")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("info", help="print a model's nodes, shapes, parameters and MACs")
    s.add_argument("model")
    s.add_argument("--json", action="store_true", help="print the graph JSON instead")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("run", help="run a model on an input array")
    s.add_argument("model")
    s.add_argument("--input", required=True, help=".npy (single input) or .npz {input name: array}")
    s.add_argument("--output", required=True, help=".npy (single output) or .npz")
    s.add_argument("--trace", metavar="DIR", help="also write every tensor as DIR/<tensor>.npy")
    s.add_argument("--mode", choices=["float", "sim", "int"], default="float",
                   help="float: the definition; sim: the quantization simulation of a quantized "
                        "model; int: an integer model (from `refq lower`)")
    s.add_argument("--dtype", choices=["float64", "float32"], default=None,
                   help="float mode compute dtype (default float64)")
    s.add_argument("--batch-size", type=int, default=None)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("quantize", help="place quantizers, calibrate, store the simulation")
    s.add_argument("model")
    s.add_argument("--calib", help="calibration data: .npy, .npz or a directory of .npy batches")
    s.add_argument("-o", "--output", required=True, help="output .refq.h5 with encodings")
    s.add_argument("--config", help="AIMET quantsim config JSON, or per_tensor | per_channel "
                                     "(default per_tensor)")
    s.add_argument("--per-channel", action="store_true", help="the bundled per-channel config")
    s.add_argument("--scheme", default="minmax", help="minmax | tf_enhanced | percentile | sqnr | mse")
    s.add_argument("--percentile", type=float, help="percentile for --scheme percentile")
    s.add_argument("--param-bw", type=int, default=8)
    s.add_argument("--act-bw", type=int, default=8)
    s.add_argument("--encodings", help="also write AIMET encodings JSON here")
    s.add_argument("--encodings-version", default="1.0.0", choices=["0.6.1", "1.0.0"])
    s.add_argument("--load-encodings", help="take encodings from an AIMET encodings file")
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--fold-bn", action="store_true", help="fold batch norms first")
    s.add_argument("--cle", action="store_true",
                   help="cross-layer equalization with high-bias absorption (folds BN first)")
    s.add_argument("--bias-correction", choices=["empirical", "analytical"],
                   help="correct the mean output error of weight quantization")
    s.add_argument("--report", help="write the BN fold / CLE / bias correction report (JSON)")
    _equalize_options(s)
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("equalize", help="fold batch norms and equalize across layers")
    s.add_argument("model")
    s.add_argument("-o", "--output", required=True, help="output .refq.h5")
    s.add_argument("--report", help="write the fold and equalization report (JSON)")
    _equalize_options(s)
    s.set_defaults(func=cmd_equalize)

    s = sub.add_parser("report", help="per-quantizer SQNR report of a quantized model")
    s.add_argument("model")
    s.add_argument("--data", required=True, help=".npy, .npz or a directory of .npy batches")
    s.add_argument("--json", help="also write the report as JSON")
    s.add_argument("--top", type=int, default=None, help="show only the N worst quantizers")
    s.add_argument("--batch-size", type=int, default=None)
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("lower", help="lower a quantized model to an integer model for a profile")
    s.add_argument("model", help="a quantized .refq.h5 (from `refq quantize`, BN folded)")
    s.add_argument("--profile", required=True, help="tflite | tflite-single | tosa | onnx | cmsis-nn")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(func=cmd_lower)

    s = sub.add_parser("compare", help="per layer LSB differences: integer model vs simulation")
    s.add_argument("model", help="a quantized .refq.h5")
    s.add_argument("--profile", required=True)
    s.add_argument("--data", required=True, help=".npy, .npz or a directory of .npy batches")
    s.add_argument("--json", help="also write the comparison as JSON")
    s.add_argument("--all-layers", action="store_true", help="list layers without differences too")
    s.add_argument("--batch-size", type=int, default=None)
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("profiles", help="list the integer numerics profiles and how they differ")
    s.set_defaults(func=cmd_profiles)

    s = sub.add_parser("demo", help="the main job on the bundled PP-OCR model and test set")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("export", help="write integer parameters or a golden case's arrays as "
                                      "$readmemh hex, C headers or raw binaries, with sidecars")
    s.add_argument("model", help="an integer .refq.h5 (from `refq lower`) or a golden case "
                                 "directory")
    s.add_argument("--format", required=True, help="hex | c | bin, or a comma list (hex,c,bin)")
    s.add_argument("-o", "--output", required=True, metavar="DIR")
    s.add_argument("--pack", type=int, default=1, metavar="K",
                   help="K elements per memory word, element 0 in the least significant bits; "
                        "applies to elements of <= 8 bits (wider ones stay one per word)")
    s.set_defaults(func=cmd_export)

    add_golden_parsers(sub)

    for s in sub.choices.values():
        s.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)  # None = success; commands that compare return 1 on failure
    except RefqError as e:
        print(f"refq: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("refq: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
