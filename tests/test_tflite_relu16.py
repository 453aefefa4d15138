"""RELU and RELU6 of 16x8 and int8 TFLite files: LiteRT's `QuantizedReluX<T>` (activations.cc
`ReluPrepare`, `ReluEval`, `Relu6Eval`; reference `ReluX`) against a Python-integer transcription
on every int16 and int8 code, and the imported models against LiteRT's BUILTIN_REF on every tensor.

Expected tensors: tests/data/tflite/relu16.npz, relu6_16.npz, relu_codes16.npz and
relu_codes8.npz, made by make_relu16.py beside them (the codes models run RELU and RELU6 on every
code).
"""
from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

from refq.fixedpoint.run import run_int
from refq.importers.tflite import import_tflite
from refq.importers.tflite_read import read_tflite
from expected_data import load_npz

DATA = pathlib.Path(__file__).parent / "data" / "tflite"
f32 = np.float32


def _quantize_multiplier(real: float):
    q, e = math.frexp(real)
    m = int(math.floor(q * 2.0 ** 31 + 0.5))
    if m == 1 << 31:
        m, e = m // 2, e + 1
    return (0, 0) if e < -31 else (m, e)


def _mbqm(x, m, shift):
    v = (x << max(shift, 0)) & 0xFFFFFFFF
    v = v - (1 << 32) if v >= 1 << 31 else v
    ab = v * m
    t = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    h = (abs(t) >> 31) * (1 if t >= 0 else -1)
    e = max(-shift, 0)
    mask = (1 << e) - 1
    return (h >> e) + (1 if (h & mask) > (mask >> 1) + (1 if h < 0 else 0) else 0)


def relu_x_loop(codes, s_in, zp_in, s_out, zp_out, act_max, qmin=-32768, qmax=32767):
    """`ReluPrepare` (real = double(fl32(s_in/s_out)), QuantizeMultiplier) and `QuantizedReluX`
    with act_min 0 and act_max (None: inf, RELU): lo = max(qmin, zp_out + roundf(0/s_out)),
    hi = qmax or min(qmax, zp_out + roundf(fl32(act_max)/s_out));
    y = clamp(zp_out + MBQM(x − zp_in), lo, hi)."""
    m, e = _quantize_multiplier(float(f32(f32(s_in) / f32(s_out))))
    lo, hi = max(qmin, zp_out), qmax
    if act_max is not None:
        v = float(f32(act_max) / f32(s_out))
        hi = min(qmax, zp_out + int(math.copysign(math.floor(abs(v) + 0.5), v)))
    return [min(max(zp_out + _mbqm(int(x) - zp_in, m, e), lo), hi) for x in codes]


def _expected(name):
    return load_npz(DATA / f"{name}.npz")


@pytest.mark.parametrize("name,lo,hi", [("relu_codes16", -32768, 32767),
                                         ("relu_codes8", -128, 127)])
def test_every_code_against_python_integers_and_litert(name, lo, hi):
    """RELU and RELU6 on every int16 code (zero points 0) and every int8 code (zero points −100
    in, −128 out; both int8 operators change encoding)."""
    model = read_tflite(DATA / f"{name}.tflite")
    exp = _expected(name)
    seen = set()
    for op in model.operators:
        if op.opcode not in ("RELU", "RELU6"):
            continue
        t_in, t_out = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
        x = exp[f"t{op.inputs[0]}"].ravel()
        assert sorted(x.tolist()) == list(range(lo, hi + 1))
        want = relu_x_loop(x, float(t_in.scales[0]), int(t_in.zero_points[0]),
                           float(t_out.scales[0]), int(t_out.zero_points[0]),
                           6.0 if op.opcode == "RELU6" else None, lo, hi)
        assert exp[f"t{op.outputs[0]}"].ravel().tolist() == want
        seen.add(op.opcode)
    assert seen == {"RELU", "RELU6"}


@pytest.mark.parametrize("name", ["relu16", "relu6_16", "relu_codes16", "relu_codes8"])
def test_imported_model_equals_litert_on_every_tensor(name):
    exp = _expected(name)
    g = import_tflite(DATA / f"{name}.tflite")
    out, _ = run_int(g, {g.inputs[0].name: exp["inputs"]}, trace=True)
    held = g.meta["tflite"]["tensors"]
    pairs = [(t, exp[f"t{i}"], out[t]) for t, i in held.items() if f"t{i}" in exp and t in out]
    assert len(pairs) == len(exp) - 1 >= 4
    for tensor, want, got in pairs:
        if want.dtype.kind == "f":
            assert np.array_equal(np.asarray(got).astype(np.float32).view(np.int32),
                                  want.view(np.int32)), tensor
        else:
            assert np.array_equal(np.asarray(got).astype(np.int64), want.astype(np.int64)), tensor


@pytest.mark.parametrize("name,opcode", [("relu6_16", "RELU6"), ("relu_codes16", "RELU6"),
                                         ("relu_codes8", "RELU"), ("relu_codes8", "RELU6")])
def test_relu_requantize_takes_relu_prepare_multiplier(name, opcode):
    """A RELU / RELU6 whose scales differ lowers to int_requantize; the importer sets LiteRT's
    multiplier from the float32 quotient, which differs from the float64 one in its low bits
    here."""
    model = read_tflite(DATA / f"{name}.tflite")
    op = next(o for o in model.operators if o.opcode == opcode)
    s_in, s_out = (float(model.tensors[t].scales[0]) for t in (op.inputs[0], op.outputs[0]))
    g = import_tflite(DATA / f"{name}.tflite")
    index = g.meta["tflite"]["tensors"]
    n = next(n for n in g.nodes if index.get(n.outputs[0]) == op.outputs[0])
    assert n.op == "int_requantize"
    m32 = _quantize_multiplier(float(f32(f32(s_in) / f32(s_out))))
    m64 = _quantize_multiplier(s_in / s_out)
    assert (int(n.params["multiplier"][0]), int(n.params["shift"][0])) == m32 != m64


def test_relu_of_one_encoding_is_a_clamp():
    g = import_tflite(DATA / "relu16.tflite")
    clamps = [n for n in g.nodes if n.op == "int_clamp"]
    assert len(clamps) == 1 and (clamps[0].attrs["act_min"], clamps[0].attrs["act_max"]) == \
        (0, 32767)
