"""LiteRT's int16 LOGISTIC, TANH, LEAKY_RELU and SOFTMAX (refq.fixedpoint.kernels.act16): the
kernels against Python-integer transcriptions of the C++ reference kernels on edge grids
(tolerance 0), the softmax tables against a transcription of `LUTPopulateInt16` in exact rational
rounding, and the imported 16x8 models against LiteRT's BUILTIN_REF tensors.

Expected tensors: tests/data/tflite/act16.npz and leaky16.npz, made by make_int16_act.py beside
them (`t<index>` = TFLite tensor <index> for the images in `inputs`; the third image lies beyond
the calibration range).
"""
import math
import pathlib
from fractions import Fraction

import numpy as np
import pytest

from refq.errors import FixedPointError
from refq.fixedpoint.kernels import act16
from refq.fixedpoint.kernels.act16 import SIGMOID_TABLE_UINT16 as T
from refq.fixedpoint.kernels.lut import build_lut
from refq.fixedpoint.run import run_int
from refq.graph import Node
from refq.ops import get_op
from expected_data import load_npz, same_bits

DATA = pathlib.Path(__file__).resolve().parent / "data" / "tflite"
CODES = list(range(-32768, 32768))


# ---- Python-integer transcriptions of the C++ kernels ----------------------------------------
def _i16(v):
    return ((v + 32768) & 0xFFFF) - 32768


def _i32(v):
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _scaled(x, m, shift):
    if m == 0:
        m, shift = 3 << shift, 0
    rnd = (1 << (shift - 1)) if shift > 0 else 0
    return _i32(x * m + rnd) >> shift


def logistic_loop(x, m, shift):
    """integer_ops/logistic.h, int16 `Logistic`, with uint32 arithmetic."""
    v = _scaled(x, m, shift)
    a = abs(v) & 0xFFFFFFFF
    h = a >> 9
    if h >= 255:
        r = 0x7FFF << 10
    else:
        r = ((T[h] << 9) + (a & 0x1FF) * (T[h + 1] - T[h])) & 0xFFFFFFFF
    r = (r + (1 << 9)) if v >= 0 else ((1 << 25) - r + (1 << 9) - 1)
    return _i16((r & 0xFFFFFFFF) >> 10)


def tanh_loop(x, m, shift):
    """integer_ops/tanh.h, int16 `Tanh`: int32 result, arithmetic shift."""
    v = _scaled(x, m, shift)
    a = abs(v) & 0xFFFFFFFF
    h = a >> 8
    r = (0xFFFF << 8) if h >= 255 else _i32((T[h] << 8) + (a & 0xFF) * (T[h + 1] - T[h]))
    r = (r - (1 << 23) + (1 << 7)) if v >= 0 else (-r + (1 << 23) + (1 << 7) - 1)
    return _i16(r >> 8)


def _srdhm(a, b):
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    ab = a * b
    t = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    q = abs(t) >> 31
    return q if t >= 0 else -q


def _rdbpot(x, e):
    mask = (1 << e) - 1
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if (x & mask) > thr else 0)


def mbqm(x, m, shift, single=False):
    if single:
        total = 31 - shift
        return (x * m + (1 << (total - 1))) >> total
    return _rdbpot(_srdhm(_i32(x * (1 << max(shift, 0))), m), max(-shift, 0))


def leaky_loop(x, params, single=False):
    (ma, sa), (mi, si) = params
    if x >= 0:
        y = mbqm(x, mi, si, single)
    else:
        y = mbqm(x, abs(ma), sa, single)
        y = -y if ma < 0 else y
    return min(max(y, -32768), 32767)


def lookup_loop(v, lut):
    """common.h `LUTLookup(int16, const int16*)`."""
    index = 256 + (v >> 7)
    slope = _i16(int(lut[index + 1]) - int(lut[index]))
    return _i16(int(lut[index]) + ((slope * (v & 0x7F) + 64) >> 7))


def softmax_loop(row, m, shift, single=False):
    """reference/softmax.h `SoftmaxInt16` on one row of Python ints."""
    E, R = act16.softmax16_tables()
    mx = max(row)
    e = [lookup_loop(min(max(mbqm(v - mx, m, shift, single) + 32767, -32768), 32767), E)
         for v in row]
    s = sum(e)
    hp1 = 32 - s.bit_length()
    shifted = ((s << (hp1 - 1)) + (1 << 13)) >> 14
    r = lookup_loop(min(max(shifted - ((1 << 15) + (1 << 16)), -32768), 32767), R)
    rs = 31 - hp1
    return [min(max((v * r + (1 << (rs - 1))) >> rs, 0), 32767) for v in e]


def _cround(x: float) -> int:
    """std::round of a double, exactly: half away from zero on the rational value."""
    f = Fraction(x)
    n = math.floor(abs(f) + Fraction(1, 2))
    return n if f >= 0 else -n


def gen_lut_loop(fn, s_in, zp_in, s_out, zp_out):
    """common.h `detail::LUTPopulateInt16<double>`, line by line."""
    in_min, in_max = s_in * (-32768 - zp_in), s_in * (32767 - zp_in)
    out_min, out_max = s_out * (-32768 - zp_out), s_out * (32767 - zp_out)
    step = (in_max - in_min) / 512
    half_step = step / 2
    inv = 65536.0 / (out_max - out_min)
    lut = []
    for i in range(512):
        val = fn(in_min + i * step)
        val_mid = fn(in_min + i * step + half_step)
        val_next = fn(in_min + (i + 1) * step)
        sample_val = _cround(val * inv)
        midpoint_interp_val = _cround((val_next * inv + _cround(val * inv)) / 2)
        midpoint_err = midpoint_interp_val - _cround(val_mid * inv)
        bias = _cround(midpoint_err / 2)
        lut.append(min(max(sample_val - bias, -32768), 32767))
    lut.append(min(max(_cround(fn(in_max) * inv), -32768), 32767))
    return lut


# ---- kernels ---------------------------------------------------------------------------------
SCALES = [2.0 ** -12, 2.0 ** -11, 2.0 ** -12 * 1.0004, 3.05e-5, 2.4067367e-05, 5.237739e-4,
          1.1e-3, 0.05, 1.0, 5.0, 1e-9]


@pytest.mark.parametrize("kind", ["logistic", "tanh"])
@pytest.mark.parametrize("scale", SCALES)
def test_logistic_tanh_against_python_integers_on_every_code(kind, scale):
    m, shift = act16.sigmoid_tanh16_params(kind, scale)
    fn, loop = (act16.tanh16, tanh_loop) if kind == "tanh" else (act16.logistic16, logistic_loop)
    got = fn(np.array(CODES, np.int64), m, shift)
    want = [loop(x, m, shift) for x in CODES]
    assert got.tolist() == want


def test_sigmoid_tanh_params_follow_prepare():
    # power-of-two scales (CheckedLog2 within 1e-3 in log2) keep multiplier 0
    assert act16.sigmoid_tanh16_params("logistic", 2.0 ** -12) == (0, 0)
    assert act16.sigmoid_tanh16_params("logistic", 2.0 ** -12 * 1.0004) == (0, 0)
    assert act16.sigmoid_tanh16_params("tanh", 2.0 ** -11) == (0, 1)
    assert act16.sigmoid_tanh16_params("logistic", 2.0 ** -11)[0] > 0      # shift 1: general
    # general: M = s·12288 doubled into (16383.5, 32767], truncated
    m, shift = act16.sigmoid_tanh16_params("logistic", 5.237739e-4)
    real = float(np.float32(5.237739e-4)) * 12288.0 * 2.0 ** shift
    assert m == int(real) and 16383.5 < real <= 32767
    assert act16.sigmoid_tanh16_params("tanh", 1e-9)[1] == 31
    with pytest.raises(FixedPointError, match="leave int32"):
        act16.sigmoid_tanh16_params("tanh", 6.0)
    with pytest.raises(FixedPointError, match="finite and > 0"):
        act16.sigmoid_tanh16_params("logistic", 0.0)


def test_sigmoid_table_is_the_sources_sigmoid_in_q016():
    i = np.arange(256)
    ref = np.minimum(np.round(65536.0 / (1.0 + np.exp(-i / 24.0))), 65535)
    assert T[0] == 32768 and T[255] == 65535 and np.all(np.diff(T) >= 0)
    assert np.max(np.abs(T - ref)) <= 1


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("alpha", [0.2, 0.01, 1.7, -0.5])
def test_leaky_relu_against_python_integers(alpha, single):
    for s_in, s_out in ((7.382599e-05, 6.020952e-05), (1e-3, 1e-3), (3e-4, 1.1e-3)):
        params = act16.leaky_relu16_params(s_in, s_out, alpha)
        got = act16.leaky_relu16(np.array(CODES[::7] + [-32768, -1, 0, 1, 32767], np.int64),
                                 params, single_rounding=single)
        want = [leaky_relu for leaky_relu in (leaky_loop(x, params, single) for x in
                                              CODES[::7] + [-32768, -1, 0, 1, 32767])]
        assert got.tolist() == want
    # the multipliers: float32 arithmetic as LeakyReluPrepare writes it
    (ma, sa), (mi, si) = act16.leaky_relu16_params(7.382599e-05, 6.020952e-05, 0.2)
    f32 = np.float32
    assert ma * 2.0 ** (sa - 31) == pytest.approx(float(f32(f32(f32(7.382599e-05) * f32(0.2)) /
                                                           f32(6.020952e-05))), rel=2 ** -30)
    assert mi * 2.0 ** (si - 31) == pytest.approx(float(f32(f32(7.382599e-05) /
                                                           f32(6.020952e-05))), rel=2 ** -30)


def test_softmax_tables_against_a_transcription_of_lut_populate():
    E, R = act16.softmax16_tables()
    assert E.tolist() == gen_lut_loop(math.exp, 10.0 / 65535, 32767, 2.0 / 65535, 0)
    assert R.tolist() == gen_lut_loop(lambda v: 1.0 / (1.0 + v), 1.0 / 65535, -32768,
                                      2.0 / 65535, 0)
    assert E[512] == 32767 and R[0] == 32767 and R[512] == 16384 and E.size == R.size == 513
    assert not E.flags.writeable
    # the generator on other encodings, against the same transcription
    got = act16.gen_lut16(math.tanh, 8.0 / 65535, 0, 2.0 / 65535, 0)
    assert got.tolist() == gen_lut_loop(math.tanh, 8.0 / 65535, 0, 2.0 / 65535, 0)


def test_lut_lookup_against_python_integers_on_every_code():
    E, R = act16.softmax16_tables()
    for lut in (E, R, np.array([(-1) ** i * 32767 for i in range(513)])):   # slopes wrap
        got = act16.lut16_lookup(np.array(CODES, np.int64), lut)
        assert got.tolist() == [lookup_loop(v, lut) for v in CODES]


def _rows(rng):
    rows = [[0] * 7, [32767, -32768, 0], [5], [-32768] * 3 + [32767], list(range(-30, 30, 3)),
            [int(v) for v in rng.integers(-32768, 32768, 40)],
            [int(v) for v in rng.integers(-200, 200, 12)]]
    return rows


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("scale", [2.4067367e-05, 3.871229e-3, 1e-4, 0.5])
def test_softmax_against_python_integers(scale, single):
    p = act16.softmax16_params(scale, single_rounding=single)
    m, shift = p["input_multiplier"], p["input_left_shift"]
    for row in _rows(np.random.default_rng(int(scale * 1e6))):
        got = act16.softmax16(np.array([row], np.int64), m, shift, single_rounding=single)
        assert got[0].tolist() == softmax_loop(row, m, shift, single), row


def test_int_softmax_tflite16_node_and_its_refusals():
    op = get_op("int_softmax")
    p = act16.softmax16_params(1e-3)
    attrs = op.normalise_attrs({"softmax": "tflite16", "act_min": -32768, "act_max": 32767,
                                **p}, "t")
    x = np.array([[1, 5, -300, 32767], [0, 0, 0, 0]], np.int64)
    np.testing.assert_array_equal(op.forward([x], {}, attrs),
                                  act16.softmax16(x, p["input_multiplier"],
                                                  p["input_left_shift"]))
    with pytest.raises(FixedPointError, match="tflite16.*int16 codes with zero point 0"):
        op.forward([x], {}, dict(attrs, output_zp=3))
    with pytest.raises(FixedPointError, match="tflite16.*int16 codes"):
        op.forward([x], {}, dict(attrs, act_min=-128, act_max=127))
    with pytest.raises(FixedPointError, match="input_multiplier"):
        op.forward([x], {}, dict(attrs, input_multiplier=0))
    with pytest.raises(FixedPointError, match="sum of the int16 exponentials"):
        act16.softmax16(np.zeros((1, 70000), np.int64), p["input_multiplier"],
                        p["input_left_shift"])


def test_int16_tables_of_build_lut_and_their_refusals():
    t = build_lut("sigmoid", 1e-3, 0, 2.0 ** -15, 0, -32768, 32767, "tflite_int16",
                  input_range=(-32768, 32767))
    assert t.size == 65536 and t.tolist() == [logistic_loop(x, *act16.sigmoid_tanh16_params(
        "logistic", 1e-3)) for x in CODES]
    lut = get_op("int_lut")
    node = Node("s", "int_lut", ["x"], ["y"], {"input_qmin": -32768}, {"table": t})
    x = np.array([-32768, -1, 0, 1, 32767], np.int64)
    np.testing.assert_array_equal(lut.forward([x], node.params, node.attrs), t[x + 32768])
    with pytest.raises(FixedPointError, match="output scale 2\\^-15"):
        build_lut("tanh", 1e-3, 0, 1e-3, 0, -32768, 32767, "tflite_int16",
                  input_range=(-32768, 32767))
    with pytest.raises(FixedPointError, match="zero points 0"):
        build_lut("leaky_relu", 1e-3, 4, 1e-3, 0, -32768, 32767, "tflite_int16",
                  input_range=(-32768, 32767), alpha=0.2)
    with pytest.raises(FixedPointError, match="tabulates int16 inputs"):
        build_lut("sigmoid", 1e-3, 0, 2.0 ** -15, 0, -128, 127, "tflite_int16")
    with pytest.raises(FixedPointError, match="sigmoid, tanh and leaky_relu"):
        build_lut("hard_swish", 1e-3, 0, 1e-3, 0, -32768, 32767, "tflite_int16",
                  input_range=(-32768, 32767))


# ---- the imported models against LiteRT ------------------------------------------------------
tflite = pytest.importorskip("tflite")


def _expected(name):
    return load_npz(DATA / f"{name}.npz")


_same = same_bits


@pytest.mark.parametrize("name", ["act16", "act16_pot"])
def test_act16_every_tensor_equals_litert_reference_kernels(name):
    """act16_pot: power-of-two input scales, so TANH and the second LOGISTIC run LiteRT's
    power-of-two path (input_multiplier 0)."""
    from refq.importers.tflite import import_tflite

    exp = _expected(name)
    g = import_tflite(DATA / f"{name}.tflite")
    ops = [n.op for n in g.nodes]
    assert ops.count("int_lut") == 3 and ops.count("int_softmax") == 2
    assert {n.attrs["softmax"] for n in g.nodes if n.op == "int_softmax"} == {"tflite16"}
    out, _ = run_int(g, {g.inputs[0].name: exp["inputs"]}, trace=True)
    held = g.meta["tflite"]["tensors"]
    pairs = [(t, exp[f"t{i}"], out[t]) for t, i in held.items() if f"t{i}" in exp and t in out]
    assert len(pairs) == len(exp) - 1 == 18
    for tensor, want, got in pairs:
        assert _same(got, want), tensor
    luts = [n for n in g.nodes if n.op == "int_lut"]
    params = [act16.sigmoid_tanh16_params("tanh" if "Tanh" in n.name else "logistic",
                                          g.meta["integer"]["tensors"][n.inputs[0]]["scale"])
              for n in luts]
    if name == "act16_pot":
        assert sorted(params) == [(0, 0), (0, 1), (24576, 12)]
    else:
        assert all(m > 0 for m, _ in params)
    # fast run equals the trace; and the data reaches the tables' saturated ends
    y, _ = run_int(g, {g.inputs[0].name: exp["inputs"]})
    assert _same(y[g.outputs[0]], exp[f"t{held[g.outputs[0]]}"])
    lut_in = [out[n.inputs[0]] for n in g.nodes if n.op == "int_lut"]
    m, shift = act16.sigmoid_tanh16_params("logistic", g.meta["integer"]["tensors"][
        next(n.inputs[0] for n in g.nodes if n.op == "int_lut")]["scale"])
    assert np.max(np.abs(act16._scaled_input(lut_in[0], m, shift))) >> 9 >= 255
    sm = [n for n in g.nodes if n.op == "int_softmax"][-1]
    d = out[sm.inputs[0]] - out[sm.inputs[0]].max(-1, keepdims=True)
    scaled = act16.multiply_by_quantized_multiplier(d, sm.attrs["input_multiplier"],
                                                    sm.attrs["input_left_shift"])
    assert np.min(scaled) + 32767 < -32768          # the exp table's input clamps


def test_leaky_relu_kernel_equals_litert_on_the_files_tensors():
    """LEAKY_RELU of leaky16.tflite: the kernel on LiteRT's int16 input codes with the file's
    scales and the Keras layer's alpha (0.2) equals LiteRT's output codes, and so does every
    tensor of the imported model."""
    from refq.importers.tflite import import_tflite
    from refq.importers.tflite_read import read_tflite

    exp = _expected("leaky16")
    model = read_tflite(DATA / "leaky16.tflite")
    op = next(o for o in model.operators if o.opcode == "LEAKY_RELU")
    t_in, t_out = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    assert t_in.type == t_out.type == "int16" and t_in.scales[0] != t_out.scales[0]
    params = act16.leaky_relu16_params(float(t_in.scales[0]), float(t_out.scales[0]), 0.2)
    x = exp[f"t{op.inputs[0]}"].astype(np.int64)
    assert np.any(x < 0) and np.any(x > 0)
    np.testing.assert_array_equal(act16.leaky_relu16(x, params), exp[f"t{op.outputs[0]}"])
    table = act16.int16_table("leaky_relu", float(t_in.scales[0]), 0, float(t_out.scales[0]), 0,
                              alpha=0.2)
    np.testing.assert_array_equal(table[x + 32768], exp[f"t{op.outputs[0]}"])
    g = import_tflite(DATA / "leaky16.tflite")
    out, _ = run_int(g, {g.inputs[0].name: exp["inputs"]}, trace=True)
    held = g.meta["tflite"]["tensors"]
    pairs = [(t, exp[f"t{i}"], out[t]) for t, i in held.items() if f"t{i}" in exp and t in out]
    assert len(pairs) == len(exp) - 1 >= 3
    for tensor, want, got in pairs:
        assert _same(got, want), tensor


def test_q15_output_scale_is_required_by_the_importer():
    from refq.errors import UnsupportedLayerError
    from refq.importers.tflite import fold_constants, shape_only_ops
    from refq.importers.tflite_int import integer_graph
    from refq.importers.tflite_read import read_tflite

    model = read_tflite(DATA / "act16.tflite")
    op = next(o for o in model.operators if o.opcode == "TANH")
    model.tensors[op.outputs[0]].scales[:] = 2.0 ** -14
    with pytest.raises(UnsupportedLayerError, match=r"operator 3 \(TANH\).*Q0.15"):
        integer_graph(model, shape_only_ops(model) | fold_constants(model))
    model = read_tflite(DATA / "act16.tflite")
    op = next(o for o in model.operators if o.opcode == "LOGISTIC")
    model.tensors[op.outputs[0]].zero_points[:] = 2
    with pytest.raises(UnsupportedLayerError, match=r"operator 2 \(LOGISTIC\).*zero point"):
        integer_graph(model, shape_only_ops(model) | fold_constants(model))
