"""Golden vectors: the conformance suite of refq (format: golden/README.md).

    from refq.conformance import generate, check, load_case
    generate("golden")                          # write every case (refq golden generate)
    report = check("golden")                    # regenerate, compare every byte (refq golden check)
    graph, inputs, outputs, trace, doc = load_case("golden/float.conv2d.basic")

Cases are code (cases_float, cases_float_ops, cases_float_ops_more, cases_quant,
cases_integer, cases_integer_int16, cases_integer_onnx_ops, cases_models, cases_compressed,
cases_imported), registered in `CASES` when this package is imported (building a case's data
happens only when it is rendered). `refq.conformance.model_file` makes a case from a .tflite or .onnx model file
(`refq golden generate --model`).
"""
from .case import CASES, Case, CaseData, render, select
from .case_reader import load_case
from .generate import check, format_check, generate, reproduce
from . import (cases_compressed, cases_float, cases_float_ops, cases_float_ops_more,  # noqa: F401
               cases_imported, cases_integer, cases_integer_int16, cases_integer_onnx_ops,
               cases_models, cases_quant)  # (register)

__all__ = ["CASES", "Case", "CaseData", "load_case", "render", "select", "generate", "check",
           "format_check", "reproduce"]
