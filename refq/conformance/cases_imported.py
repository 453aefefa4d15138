"""Model cases imported from the repository's TFLite and ONNX test models, made by
`refq.conformance.model_file` (the machinery of `refq golden generate --model`).

They cover what only an import produces: the kernels of LiteRT's dynamic-range path
(`int_hybrid_conv2d`, `int_hybrid_dense`, `int_f32_*`, no numerics profile: kind "float32", exact)
and integer graphs read from a file rather than lowered by refq (kind "integer"). Each runs on the
fixed inputs stored beside its model (tests/data/tflite*/<model>.npz `inputs`, the images LiteRT's
reference kernels were run on to make that file; tests/data/onnx/qlinear_expected.npz `x`, NCHW,
transposed to NHWC), so its outputs are also the outputs the framework computed (checked in
tests/test_golden_model.py).
"""
from __future__ import annotations

import numpy as np

from .case import EXACT, Case, register
from .cases_models import _repo_file
from .model_file import file_case

TFLITE = "tests/data/tflite"


def _tflite_inputs(stem):
    def load():
        with np.load(_repo_file(f"{TFLITE}/{stem}.npz"), allow_pickle=False) as z:
            return z["inputs"]
    return load


def _tflite_inputs16(stem):
    def load():
        with np.load(_repo_file(f"tests/data/tflite_16x8/{stem}.npz"), allow_pickle=False) as z:
            return z["inputs"]
    return load


def _qlinear_inputs():
    with np.load(_repo_file("tests/data/onnx/qlinear_expected.npz"), allow_pickle=False) as z:
        return z["x"][:4].transpose(0, 2, 3, 1)


#: (case id, model file, inputs loader, kind, profile, description)
IMPORTED = [
    ("model.fer_hybrid.tflite", f"{TFLITE}/fer_hybrid.tflite", _tflite_inputs("fer_hybrid"),
     "float32", None, "fer mini-Xception, TFLite dynamic range (int8 per-channel weights, float32 "
     "activations; int_hybrid_conv2d with per-image asymmetric input quantization, int_f32_*), "
     "one fer image; every tensor as LiteRT's reference kernels compute it"),
    ("model.ops_hybrid.tflite", f"{TFLITE}/ops_hybrid.tflite", _tflite_inputs("ops_hybrid"),
     "float32", None, "a small model of many TFLite operators, dynamic range (int_hybrid_conv2d, "
     "int_hybrid_dense with asymmetric per-row input quantization, int_f32_conv2d, _dense, "
     "_binary, _avg_pool2d, _mean, _softmax, _unary), two seeded images"),
    ("model.ops_hybrid_sym.tflite", f"{TFLITE}/ops_hybrid_sym.tflite",
     _tflite_inputs("ops_hybrid_sym"), "float32", None, "ops_hybrid with symmetric input "
     "quantization in its fully connected layer (asymmetric_quantize_inputs false), two seeded "
     "images"),
    ("model.ops_int8.tflite", f"{TFLITE}/ops_int8.tflite", _tflite_inputs("ops_int8"),
     "integer", "tflite", "the same operator model, fully integer TFLite (int8), imported "
     "with its own scales and multipliers, two seeded images; per-layer integer trace"),
    ("model.cnn16.tflite", "tests/data/tflite_16x8/cnn16.tflite", _tflite_inputs16("cnn16"),
     "integer", "tflite", "a small conv net converted 16x8 by TFLite (int16 activations, int8 "
     "per-channel weights, int64 biases: int_conv2d_16x8 incl. depthwise, the int16 add, pools, "
     "int_dense_16x8), three seeded images, one beyond the calibration range; per-layer integer "
     "trace"),
    ("model.gap16.tflite", "tests/data/tflite_16x8/gap16.tflite", _tflite_inputs16("gap16"),
     "integer", "tflite", "a strided conv, a depthwise conv with multiplier 2, global average "
     "pooling and a fully connected layer converted 16x8 by TFLite, three seeded images; "
     "per-layer integer trace"),
    ("model.qlinear.onnx", "tests/data/onnx/qlinear.onnx", _qlinear_inputs, "integer", "onnx",
     "an ONNX QOperator model (QuantizeLinear, QLinearConv, MaxPool, depthwise QLinearConv, "
     "Flatten, QLinearMatMul, DequantizeLinear) imported under profile onnx, four seeded "
     "inputs; per-layer integer trace"),
]


def imported_case(cid, model, inputs, kind, profile, description):
    def build():
        case, data = file_case(_repo_file(model), inputs(), case_id=cid,
                               description=description, kind=kind)
        if case.profile != profile:
            raise AssertionError(f"{model}: imported with profile {case.profile}, expected "
                                 f"{profile}")
        return data

    register(Case(cid, kind, build, description, seed=0, profile=profile,
                  tolerance=dict(EXACT)))


for _entry in IMPORTED:
    imported_case(*_entry)
