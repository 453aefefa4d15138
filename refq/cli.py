"""The `refq` command.

    refq import MODEL.h5|MODEL.tflite|MODEL.onnx -o MODEL.refq.h5 [--architecture ARCH.json]
               [--input-shape NAME=N,C,H,W] [--profile P]
    refq info MODEL.refq.h5 [--json]
    refq run MODEL.refq.h5 --input X.npy --output Y.npy [--mode float|sim|int] [--codes]
             [--trace DIR] [--max-trace-size SIZE] [--dtype float64|float32] [--batch-size N]
    refq quantize MODEL.refq.h5 --calib CALIB.npy -o Q.refq.h5 [--config CFG | --per-channel]
             [--scheme minmax|tf_enhanced|percentile|sqnr|mse] [--param-bw 8] [--act-bw 8]
             [--encodings OUT.encodings] [--load-encodings AIMET.encodings] [--batch-size N]
             [--no-fold-bn] [--cle [--relu6-to-relu] [--through-se] [--no-high-bias]]
             [--bias-correction empirical|analytical] [--seq-mse] [--report DFQ.json]
    refq qat Q.refq.h5 --data TRAIN.npy (--labels Y.npy | --teacher F.refq.h5) -o T.refq.h5
             [--epochs 1] [--lr 1e-3] [--batch-size 32] [--seed 0] [--learn-ranges]
             [--logits TENSOR] [--checkpoint CK.refq.h5] [--resume CK.refq.h5]
    refq adaround Q.refq.h5 --data CALIB.npy -o R.refq.h5 [--iterations N] [--param-bw B]
             [--reg 0.01] [--beta 20,2] [--warm-start 0.2] [--seed S] [--encodings OUT]
    refq bn-reestimate MODEL.refq.h5 --data X.npy -o OUT.refq.h5 [--num-batches 100] [--fold]
    refq compress MODEL.refq.h5 --method spatial-svd|weight-svd|channel-pruning
               (--target-macs R | --target-params R | --ratios L=R,...) [--eval X] [--labels Y.npy]
               -o C.refq.h5 [--candidates 10] [--eval-table S.json] [--fine-tune-epochs E]
    refq equalize MODEL.refq.h5 -o EQ.refq.h5 [--report CLE.json] [--relu6-to-relu]
             [--through-se] [--no-high-bias]
    refq report Q.refq.h5 --data X.npy [--json REPORT.json] [--top N] [--batch-size N]
    refq lower Q.refq.h5 --profile tflite -o INT.refq.h5
    refq compare Q.refq.h5 --profile tflite --data X.npy [--json CMP.json] [--all-layers]
    refq profiles
    refq golden generate [--cases PATTERN] [--out DIR]
    refq golden check [--golden DIR] [--cases PATTERN]
    refq golden verify CASE_DIR --dut DIR [--json REPORT]
    refq export INT.refq.h5|CASE_DIR --format hex|c|bin[,...] -o DIR [--pack K]
    refq export Q.refq.h5 --format onnx-qdq -o MODEL.onnx
    refq conformance run --adapter MODULE:FUNCTION [--golden DIR] [--cases PATTERN] [--json R]
             [--max-skipped N]
    refq demo

Every command takes --quiet. Errors (bad input, usage, an operating-system error such as a bad
path or a full disk, a closed stdout) print one line `refq: error: ...` and exit with status 1.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys

import numpy as np

from . import __version__
from .commands import BATCH_HELP, bitwidth, input_shape, model_argument, positive_int
from .commands.golden import add_golden_parsers
from .commands.integer import cmd_compare, cmd_export, cmd_lower, cmd_profiles
from .commands.model import DEFAULT_MAX_TRACE, cmd_demo, cmd_import, cmd_info, cmd_run
from .commands.compress import add_compress_parser
from .commands.quant import cmd_equalize, cmd_quantize, cmd_report
from .commands.train import add_learning_parsers
from .data_io import DEFAULT_BATCH_SIZE as DEFAULT_DATA_BATCH
from .errors import RefqError
from .progress import loop_lines


def _byte_size(text):
    """argparse type: a size in bytes, with an optional K/M/G/T suffix (powers of 1024)."""
    units = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    suffix = t[-1] if t and t[-1] in units else ""
    try:
        value = float(t[:len(t) - len(suffix)]) * units[suffix]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 500M or 2G, got '{text}'") \
            from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive size, got '{text}'")
    return int(value)


def _profile_names():
    from .fixedpoint.profiles import PROFILES

    return list(PROFILES)


def _scheme_names():
    from .quant.analyzers import ANALYZERS

    return list(ANALYZERS)


def _equalize_options(s):
    s.add_argument("--weights-html", metavar="WEIGHTS.html",
                   help="write per-channel weight ranges before and after BN folding and CLE as "
                        "one self-contained HTML file")
    s.add_argument("--relu6-to-relu", action="store_true",
                   help="replace ReLU6 by ReLU so CLE can pass it (AIMET <= 2.3; changes the model)")
    s.add_argument("--through-se", action="store_true",
                   help="let CLE pass squeeze-excitation blocks (a refq extension)")
    s.add_argument("--no-high-bias", action="store_true", help="skip high-bias absorption")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="refq", description="refq: reference quantization toolkit. Errors print one "
                "line `refq: error: ...` and exit with status 1.")
    p.add_argument("--version", action="version", version=f"refq {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    profiles, schemes = _profile_names(), _scheme_names()

    s = sub.add_parser("import", help="import a Keras, TFLite or ONNX model into the refq format")
    model_argument(s, "Keras .h5/.hdf5, .keras or .weights.h5 file, .tflite or .onnx file")
    s.add_argument("-o", "--output", required=True, metavar="OUT.refq.h5",
                   help="the refq model to write")
    s.add_argument("--architecture", metavar="ARCH.json",
                   help="architecture JSON (model.to_json()), required for .weights.h5")
    s.add_argument("--input-shape", type=input_shape, action="append", metavar="NAME=N,C,H,W",
                   help="the NCHW shape of an ONNX input the file leaves free (-1: stays free); "
                        "repeat for several inputs")
    s.add_argument("--profile", default=None, metavar="PROFILE",
                   help="the numerics profile of an ONNX model with integer operators "
                        "(QLinearConv, ...; default onnx, or ort for onnxruntime's kernels)")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("info", help="print a model's nodes, shapes, parameters and MACs")
    model_argument(s)
    s.add_argument("--json", action="store_true", help="print the graph JSON instead")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("run", help="run a model on an input array")
    model_argument(s, "a float, quantized (`refq quantize`) or integer (`refq lower`) model")
    s.add_argument("--input", required=True, metavar="X.npy|X.npz",
                   help=".npy (single input) or .npz {input name: array}")
    s.add_argument("--output", required=True, metavar="Y.npy|Y.npz",
                   help=".npy (single output) or .npz (every output)")
    s.add_argument("--trace", metavar="DIR", help="also write every tensor as DIR/<tensor>.npy "
                                                  "with DIR/index.json")
    s.add_argument("--max-trace-size", type=_byte_size, default=DEFAULT_MAX_TRACE, metavar="SIZE",
                   help="refuse a --trace larger than this estimate, e.g. 500M or 20G "
                        "(default 1G)")
    s.add_argument("--mode", choices=["float", "sim", "int"], default=None,
                   help="float: the definition; sim: the quantization simulation of a quantized "
                        "model; int: an integer model (default: what the file holds, stated on "
                        "stderr)")
    s.add_argument("--codes", action="store_true",
                   help="--mode int: the input holds integer codes of the input quantizer and "
                        "the output is written as integer codes (default: real values)")
    s.add_argument("--dtype", choices=["float64", "float32"], default=None,
                   help="float mode compute dtype (default float64; float32 folds batch "
                        "norms into the convolutions before them, as frameworks do)")
    s.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help=BATCH_HELP.format("the whole input"))
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("quantize", help="place quantizers, calibrate, store the simulation")
    model_argument(s, "a float model (.refq.h5 from `refq import`)")
    s.add_argument("--calib", metavar="DATA",
                   help="calibration data: .npy, .npz or a directory of .npy batches")
    s.add_argument("-o", "--output", required=True, metavar="Q.refq.h5",
                   help="output .refq.h5 with the simulation and its encodings")
    s.add_argument("--config", help="AIMET quantsim config JSON, or per_tensor | per_channel "
                                     "(default per_tensor)")
    s.add_argument("--per-channel", action="store_true", help="the bundled per-channel config")
    s.add_argument("--block-size", type=positive_int, default=None, metavar="B",
                   help="quantize conv/dense weights per output channel and block of B input "
                        "channels (AIMET's blockwise quantization; the last block may be partial)")
    s.add_argument("--scheme", default="minmax", choices=schemes,
                   help="range analyzer for weights and activations (default minmax)")
    s.add_argument("--percentile", type=float, help="percentile for --scheme percentile "
                                                    "(default 99.9)")
    s.add_argument("--param-bw", type=bitwidth, default=8, metavar="BITS",
                   help="weight bitwidth (default 8)")
    s.add_argument("--act-bw", type=bitwidth, default=8, metavar="BITS",
                   help="activation bitwidth (default 8)")
    s.add_argument("--encodings", metavar="OUT.encodings",
                   help="also write AIMET encodings JSON here")
    s.add_argument("--encodings-version", default="1.0.0", choices=["0.6.1", "1.0.0"],
                   help="AIMET encodings format of --encodings (default 1.0.0)")
    s.add_argument("--load-encodings", metavar="AIMET.encodings",
                   help="take encodings from an AIMET encodings file instead of calibrating")
    s.add_argument("--allow-weight-clipping", action="store_true",
                   help="with --load-encodings: accept weight encodings that clip more than 1%% "
                        "of their weights (refused by default: they usually belong to other "
                        "weights, e.g. to the model with unfolded batch norms)")
    s.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help=BATCH_HELP.format(DEFAULT_DATA_BATCH))
    s.add_argument("--fold-bn", action="store_true", default=True,
                   help="fold batch norms into the preceding layers first (the default)")
    s.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                   help="keep batch norms as float ops (AIMET's unfolded simulation; such a model "
                        "cannot be lowered to integers)")
    s.add_argument("--cle", action="store_true",
                   help="cross-layer equalization with high-bias absorption")
    s.add_argument("--bias-correction", choices=["empirical", "analytical"],
                   help="correct the mean output error of weight quantization (default: off)")
    s.add_argument("--seq-mse", action="store_true",
                   help="Sequential MSE: search each conv/dense layer's per-channel weight ranges "
                        "on the calibration data and freeze them (weights of 4 bits or fewer)")
    s.add_argument("--report", metavar="DFQ.json",
                   help="write the BN fold / CLE / bias correction / SeqMSE report (JSON)")
    _equalize_options(s)
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("equalize", help="fold batch norms and equalize across layers")
    model_argument(s, "a float model (.refq.h5)")
    s.add_argument("-o", "--output", required=True, metavar="EQ.refq.h5", help="output .refq.h5")
    s.add_argument("--report", metavar="CLE.json",
                   help="write the fold and equalization report (JSON)")
    _equalize_options(s)
    s.set_defaults(func=cmd_equalize)

    s = sub.add_parser("report", help="where the accuracy went: per-quantizer SQNR table; with "
                       "--html/--plots/--json weights, histograms, sensitivity, integer profiles")
    model_argument(s, "a quantized model (.refq.h5 from `refq quantize`)")
    s.add_argument("--data", required=True, help=".npy, .npz or a directory of .npy batches")
    s.add_argument("--html", metavar="REPORT.html",
                   help="write the full report as one self-contained HTML file")
    s.add_argument("--plots", metavar="DIR", help="write the full report's figures into DIR")
    s.add_argument("--plot-format", choices=("png", "svg"), default="png",
                   help="file format of --plots (default: png)")
    s.add_argument("--json", metavar="REPORT.json",
                   help="write the full report's numbers (every table and figure) as JSON")
    s.add_argument("--labels", metavar="Y.npy",
                   help="class labels of --data (1-D integers): sensitivity scored by accuracy")
    s.add_argument("--float-model", metavar="M.refq.h5",
                   help="the float model before quantization: weight ranges before and after "
                        "BN folding and CLE")
    s.add_argument("--sections", metavar="LIST",
                   help="comma-separated sections of the full report (default: all of "
                        "weights,quantizers,sensitivity,integer,history)")
    s.add_argument("--profiles", metavar="LIST",
                   help="comma-separated numerics profiles of the integer section (default: all)")
    s.add_argument("--top", type=positive_int, default=None, metavar="N",
                   help="show only the N worst quantizers (default: all)")
    s.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help=BATCH_HELP.format(DEFAULT_DATA_BATCH))
    s.set_defaults(func=cmd_report)

    add_learning_parsers(sub)
    add_compress_parser(sub)

    s = sub.add_parser("lower", help="lower a quantized model to an integer model for a profile")
    model_argument(s, "a quantized model (.refq.h5 from `refq quantize`)")
    s.add_argument("--profile", required=True, choices=profiles,
                   help="numerics profile (see `refq profiles`)")
    s.add_argument("-o", "--output", required=True, metavar="INT.refq.h5",
                   help="the integer model to write")
    s.set_defaults(func=cmd_lower)

    s = sub.add_parser("compare", help="per layer LSB differences: integer model vs simulation")
    model_argument(s, "a quantized model (.refq.h5 from `refq quantize`)")
    s.add_argument("--profile", required=True, choices=profiles,
                   help="numerics profile (see `refq profiles`)")
    s.add_argument("--data", required=True, help=".npy, .npz or a directory of .npy batches")
    s.add_argument("--json", metavar="CMP.json", help="also write the comparison as JSON")
    s.add_argument("--all-layers", action="store_true", help="list layers without differences too")
    s.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help=BATCH_HELP.format(DEFAULT_DATA_BATCH))
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("profiles", help="list the integer numerics profiles and how they differ")
    s.set_defaults(func=cmd_profiles)

    s = sub.add_parser("demo", help="the main job on the bundled PP-OCR model and test set")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("export", help="write integer parameters or a golden case's arrays as "
                                      "$readmemh hex, C headers or raw binaries, with sidecars")
    model_argument(s, "an integer .refq.h5 (from `refq lower`) or a golden case directory; "
                      "with --format onnx-qdq a quantized .refq.h5 (from `refq quantize`)")
    s.add_argument("--format", required=True, help="hex | c | bin, or a comma list (hex,c,bin); "
                                                    "or onnx-qdq: a quantized Q.refq.h5 as a QDQ "
                                                    "ONNX model")
    s.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="directory to write (onnx-qdq: the .onnx file)")
    s.add_argument("--pack", type=positive_int, default=1, metavar="K",
                   help="K elements per memory word, element 0 in the least significant bits; "
                        "applies to elements of <= 8 bits (wider ones stay one per word; "
                        "default 1)")
    s.set_defaults(func=cmd_export)

    add_golden_parsers(sub)

    for s in sub.choices.values():
        s.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    return p


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line `refq: error: ...` and status 1, like every error."""

    def error(self, message):
        self.exit(1, f"refq: error: {message} (see `{self.prog} --help`)\n")


def _lines_joined(message) -> str:
    """`message` on one line, its lines joined by '; ' (a last guard: messages are one line, but
    one that quotes a library's multi-line text keeps its line structure readable)."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _os_error(e: OSError) -> str:
    """An operating-system error (bad path, permissions, full disk) as the message of one line."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or type(e).__name__
    hint = {"ENOSPC": "free some disk space or write elsewhere",
            "EACCES": "check the permissions or write elsewhere",
            "EROFS": "write to a writable file system",
            "ENAMETOOLONG": "use a shorter file name",
            "EISDIR": "give a file path, not a directory",
            "ENOTDIR": "a component of the path is a file, not a directory; fix the path",
            "ENOENT": "check the path"}.get(errno.errorcode.get(e.errno, ""), "check the path")
    return f"{where + ': ' if where else ''}{what}; {hint}"


def _stdout_closed() -> int:
    """stdout was closed by its reader (e.g. `refq info | head`): say so once, on stderr."""
    with contextlib.suppress(OSError, ValueError):  # nothing more can reach that pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print("refq: error: standard output was closed before all output was written (stdout is a "
          "closed pipe); read the whole output or write it to a file", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    """Run `refq ARGV`; return the exit status: 0 success, 1 an error (printed as one line
    `refq: error: ...`) or a failed comparison, 3 an incomplete conformance run, 130 interrupted."""
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help, --version, or a usage error already printed
            return e.code if isinstance(e.code, int) else 1
        loop_lines(args.func is not cmd_demo)  # the demo prints its own stage lines
        with np.errstate(all="ignore"):  # overflow shows in the results, which commands check
            status = args.func(args)  # None = success; commands that compare return their status
        sys.stdout.flush()
    except RefqError as e:
        print(f"refq: error: {_lines_joined(e)}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _stdout_closed()
    except OSError as e:
        print(f"refq: error: {_lines_joined(_os_error(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("refq: interrupted", file=sys.stderr)
        return 130
    finally:
        loop_lines(False)
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
