"""LiteRT's 8-bit LEAKY_RELU: the "tflite_leaky" table (`refq.fixedpoint.kernels.leaky_relu`)
against a Python-integer transcription of `LeakyReluPrepare` / `QuantizeLeakyRelu`, against
LiteRT's BUILTIN_REF outputs, in the importer and in the tflite / tflite-single lowering.

Expected tensors: tests/data/tflite/leaky8.npz, leaky8_codes.npz and leaky8_ties.npz, made by
make_leaky8.py beside them (the codes and ties models run each LEAKY_RELU on all 256 int8 codes).
"""
from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

from refq.errors import FixedPointError
from refq.fixedpoint.kernels.leaky_relu import leaky_relu_params, leaky_relu_table
from refq.fixedpoint.kernels.lut import build_lut
from refq.fixedpoint.lower_activations import lut_table
from refq.fixedpoint.lower_encodings import TensorQ
from refq.fixedpoint.run import run_int
from expected_data import load_npz, same_bits

DATA = pathlib.Path(__file__).parent / "data" / "tflite"
f32 = np.float32


# ---- a Python-integer transcription of the kernel --------------------------------------------
def _quantize_multiplier(real: float, single: bool):
    """quantization_util.cc `QuantizeMultiplier` on a double, sign kept as the C code keeps it."""
    if real == 0:
        return 0, 0
    q, e = math.frexp(real)
    m = int(math.copysign(math.floor(abs(q) * 2.0 ** 31 + 0.5), q))   # std::round, exact here
    if m == 1 << 31:
        m, e = m // 2, e + 1
    if e < -31:
        return 0, 0
    if single and e > 30:
        return (1 << 31) - 1, 30
    return m, e


def _srdhm(a, b):
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    ab = a * b
    t = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    q = abs(t) >> 31                      # C's division truncates toward zero
    return q if t >= 0 else -q


def _rdbpot(x, e):
    mask = (1 << e) - 1
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if (x & mask) > thr else 0)


def _mbqm(x, m, shift, single):
    if single:
        total = 31 - shift
        return (x * m + (1 << (total - 1))) >> total
    left = max(shift, 0)
    v = (x << left) & 0xFFFFFFFF
    v = v - (1 << 32) if v >= 1 << 31 else v
    return _rdbpot(_srdhm(v, m), max(-shift, 0))


def leaky_loop(v, s_in, zp_in, s_out, zp_out, alpha, single=False, lo=-128, hi=127):
    """activations.cc `LeakyReluPrepare` (float32 C expressions widened to double) and
    reference/leaky_relu.h `QuantizeLeakyRelu` on one code v."""
    real_a = float(f32(f32(f32(s_in) * f32(alpha)) / f32(s_out)))
    real_i = float(f32(f32(s_in) / f32(s_out)))
    ma, sa = _quantize_multiplier(real_a, single)
    mi, si = _quantize_multiplier(real_i, single)
    d = v - zp_in
    if d >= 0:
        y = zp_out + _mbqm(d, mi, si, single)
    else:
        r = _mbqm(d, abs(ma), sa, single)
        y = zp_out + (-r if ma < 0 else r)
    return min(max(y, lo), hi)


# (s_in, zp_in, s_out, zp_out, alpha): general scales, and exact ties of SRDHM and of the
# rounding shift (power-of-two ratios: identity 1/2, 1/4, alpha multiplier ±1/2, ±1/4)
CASES = [
    (0.0176940188, 13, 0.0231853165, 34, 0.2),
    (0.0173374955, 25, 0.0231853165, 34, 0.01),
    (0.0171304848, 1, 0.0231853165, 34, 1.7),
    (0.0117643820, -43, 0.0078428304, -128, -0.5),
    (0.02, 0, 0.04, 0, 0.5),
    (0.1, -7, 0.1, 5, 0.25),
    (0.05, 3, 0.2, -3, -0.25),
    (0.04, -128, 0.01, 127, 0.2),
    (0.5, 127, 1e-3, -128, 0.0),
    (0.0117643820, -43, 0.0117643820, -128, -0.5),
]


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_table_against_python_integers_on_every_code(case, single):
    s_in, zp_in, s_out, zp_out, alpha = case
    got = leaky_relu_table(s_in, zp_in, s_out, zp_out, -128, 127, alpha, single_rounding=single)
    want = [leaky_loop(v, s_in, zp_in, s_out, zp_out, alpha, single) for v in range(-128, 128)]
    assert got.tolist() == want
    assert build_lut("leaky_relu", s_in, zp_in, s_out, zp_out, -128, 127, "tflite_leaky",
                     alpha=alpha, single_rounding=single).tolist() == want
    u8 = leaky_relu_table(s_in, zp_in + 128, s_out, zp_out + 128, 0, 255, alpha,
                          single_rounding=single)
    assert (u8 - 128).tolist() == want          # LiteRT's uint8 form: the same on shifted codes


def test_the_cases_meet_ties():
    """Some of CASES put an exact tie into SRDHM (product ≡ 2^30 mod 2^31) or into the rounding
    shift, where double and single rounding part."""
    differ = 0
    for s_in, zp_in, s_out, zp_out, alpha in CASES:
        a = leaky_relu_table(s_in, zp_in, s_out, zp_out, -128, 127, alpha)
        b = leaky_relu_table(s_in, zp_in, s_out, zp_out, -128, 127, alpha, single_rounding=True)
        differ += int(np.sum(a != b))
    assert differ > 0


def test_params_and_errors():
    (ma, sa), (mi, si) = leaky_relu_params(0.02, 0.04, -0.5)
    assert (ma, sa, mi, si) == (-(1 << 30), -1, 1 << 30, 0)    # −0.25 and 0.5
    with pytest.raises(FixedPointError, match="finite and > 0"):
        leaky_relu_table(0.0, 0, 0.1, 0, -128, 127, 0.2)
    with pytest.raises(FixedPointError, match="alpha is missing"):
        leaky_relu_table(0.1, 0, 0.1, 0, -128, 127, None)
    with pytest.raises(FixedPointError, match="zero points"):
        leaky_relu_table(0.1, 200, 0.1, 0, -128, 127, 0.2)
    with pytest.raises(FixedPointError, match="LEAKY_RELU only"):
        build_lut("sigmoid", 0.1, 0, 0.1, 0, -128, 127, "tflite_leaky", alpha=0.2)


# ---- against LiteRT --------------------------------------------------------------------------
def _expected(name):
    return load_npz(DATA / f"{name}.npz")


def _leaky_ops(name):
    from refq.importers.tflite_read import read_tflite

    model = read_tflite(DATA / f"{name}.tflite")
    for op in model.operators:
        if op.opcode == "LEAKY_RELU":
            t_in, t_out = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
            yield op, (float(t_in.scales[0]), int(t_in.zero_points[0]),
                       float(t_out.scales[0]), int(t_out.zero_points[0])), op.options["Alpha"]


MODELS = ["leaky8", "leaky8_codes", "leaky8_ties"]


@pytest.mark.parametrize("name", MODELS)
def test_table_equals_litert(name):
    """Each LEAKY_RELU of the file: the table on LiteRT's input codes is LiteRT's output; on
    the codes and ties models every one of the 256 codes is covered."""
    exp = _expected(name)
    n = 0
    for op, enc, alpha in _leaky_ops(name):
        x = exp[f"t{op.inputs[0]}"].astype(np.int64).ravel()
        want = exp[f"t{op.outputs[0]}"].astype(np.int64).ravel()
        table = leaky_relu_table(*enc, -128, 127, alpha)
        np.testing.assert_array_equal(table[x + 128], want, err_msg=f"{name} alpha {alpha}")
        if name != "leaky8":
            assert sorted(set(x.tolist())) == list(range(-128, 128))
        assert enc[1] != 0 and enc[3] != 0
        n += 1
    assert n == 3


LUT_FLOAT_WRONG = {"leaky8": 12, "leaky8_codes": 24, "leaky8_ties": 86}


@pytest.mark.parametrize("name", MODELS)
def test_lut_float_table_differs_from_litert(name):
    """The float32 table ("lut_float", LiteRT's LUTPopulate scheme) that the tflite profiles
    built before gets this many of LiteRT's output codes wrong on the file's tensors."""
    exp = _expected(name)
    wrong = 0
    for op, (s_in, zp_in, s_out, zp_out), alpha in _leaky_ops(name):
        t = lut_table("leaky_relu", {"alpha": alpha}, TensorQ(s_in, zp_in, -128, 127, "int8"),
                      TensorQ(s_out, zp_out, -128, 127, "int8"), "lut_float", name)
        x = exp[f"t{op.inputs[0]}"].astype(np.int64)
        wrong += int(np.sum(t.astype(np.int64)[x + 128] != exp[f"t{op.outputs[0]}"]))
    assert wrong == LUT_FLOAT_WRONG[name]


_same = same_bits


@pytest.mark.parametrize("name", MODELS)
def test_imported_model_equals_litert_on_every_tensor(name):
    from refq.importers.tflite import import_tflite

    exp = _expected(name)
    g = import_tflite(DATA / f"{name}.tflite")
    assert sum(n.op == "int_lut" for n in g.nodes) == 3
    out, _ = run_int(g, {g.inputs[0].name: exp["inputs"]}, trace=True)
    held = g.meta["tflite"]["tensors"]
    pairs = [(t, exp[f"t{i}"], out[t]) for t, i in held.items() if f"t{i}" in exp and t in out]
    assert len(pairs) == len(exp) - 1
    for tensor, want, got in pairs:
        assert _same(got, want), tensor


def test_imported_tables_are_the_kernel():
    from refq.importers.tflite import import_tflite

    g = import_tflite(DATA / "leaky8.tflite")
    index = g.meta["tflite"]["tensors"]
    by_output = {index[n.outputs[0]]: n for n in g.nodes if n.op == "int_lut"}
    for op, enc, alpha in _leaky_ops("leaky8"):
        table = by_output[op.outputs[0]].params["table"]
        assert table.tolist() == leaky_relu_table(*enc, -128, 127, alpha).tolist()


# ---- the lowering ----------------------------------------------------------------------------
def _sim():
    from refq.graph import Graph, Node, TensorSpec
    from refq.quant.quantsim import QuantSim

    r = np.random.default_rng(3)
    nodes = [Node("c", "conv2d", ["x"], ["c"], {"groups": 1},
                  {"weight": r.normal(0, 0.5, (4, 3, 3, 2)).astype(f32),
                   "bias": r.normal(0, 0.3, 4).astype(f32)}),
             Node("lk", "leaky_relu", ["c"], ["lk"], {"alpha": 0.2})]
    g = Graph([TensorSpec("x", (None, 6, 6, 2))], ["lk"], nodes, name="leaky")
    return QuantSim(g).compute_encodings(r.uniform(-1, 1, (8, 6, 6, 2)).astype(f32))


@pytest.fixture(scope="module")
def sim():
    return _sim()


def _lut_and_encodings(g):
    n = next(n for n in g.nodes if n.op == "int_lut")
    tensors = g.meta["integer"]["tensors"]
    q_in, q_out = tensors[n.inputs[0]], tensors[n.outputs[0]]
    return n, (q_in["scale"], q_in["zero_point"], q_out["scale"], q_out["zero_point"])


@pytest.mark.parametrize("profile", ["tflite", "tflite-single"])
def test_tflite_lowering_builds_the_kernel_table(sim, profile):
    from refq.fixedpoint import lower

    g = lower(sim, profile)
    n, enc = _lut_and_encodings(g)
    assert enc[1] != 0 and enc[3] != 0
    single = profile == "tflite-single"
    want = [leaky_loop(v, *enc, 0.2, single) for v in range(-128, 128)]
    assert n.params["table"].astype(np.int64).tolist() == want
    assert n.params["table"].tolist() == leaky_relu_table(*enc, -128, 127, 0.2,
                                                          single_rounding=single).tolist()


def test_lowering_equals_the_imported_kernel_on_the_same_encodings(sim):
    """A lowered QuantSim and an imported file with the same encodings and alpha share the
    table: both are `leaky_relu_table`, checked on leaky8's encodings through lut_table."""
    from refq.fixedpoint import lower
    from refq.importers.tflite import import_tflite

    g = lower(sim, "tflite")
    n, enc = _lut_and_encodings(g)
    q_in = TensorQ(enc[0], enc[1], -128, 127, "int8")
    q_out = TensorQ(enc[2], enc[3], -128, 127, "int8")
    assert np.array_equal(lut_table("leaky_relu", {"alpha": 0.2}, q_in, q_out, "tflite_leaky",
                                    "lk"), n.params["table"])
    imported = import_tflite(DATA / "leaky8.tflite")
    index = imported.meta["tflite"]["tensors"]
    by_output = {index[m.outputs[0]]: m for m in imported.nodes if m.op == "int_lut"}
    for op, (s_in, zp_in, s_out, zp_out), alpha in _leaky_ops("leaky8"):
        t = lut_table("leaky_relu", {"alpha": alpha}, TensorQ(s_in, zp_in, -128, 127, "int8"),
                      TensorQ(s_out, zp_out, -128, 127, "int8"), "tflite_leaky", "lk")
        assert np.array_equal(t, by_output[op.outputs[0]].params["table"])


@pytest.mark.parametrize("profile,scheme", [("cmsis-nn", "lut_float"), ("tosa", "lut_float"),
                                            ("onnx", "float32"), ("ort", "float32")])
def test_other_profiles_keep_their_float_table(sim, profile, scheme):
    from refq.fixedpoint import lower

    g = lower(sim, profile)
    n, _ = _lut_and_encodings(g)
    tensors = g.meta["integer"]["tensors"]
    q_in, q_out = (TensorQ(**{k: tensors[t][k] for k in ("scale", "zero_point", "qmin", "qmax",
                                                         "dtype")})
                   for t in (n.inputs[0], n.outputs[0]))
    assert np.array_equal(n.params["table"], lut_table("leaky_relu", {"alpha": 0.2}, q_in, q_out,
                                                       scheme, "lk"))


def test_faithful_simulation_keeps_the_float_table(sim):
    from refq.fixedpoint.run import faithful_graph

    g = faithful_graph(sim, "tflite")
    n, enc = _lut_and_encodings(g)
    q_in = TensorQ(enc[0], enc[1], -128, 127, "int8")
    q_out = TensorQ(enc[2], enc[3], -128, 127, "int8")
    assert np.array_equal(n.params["table"], lut_table("leaky_relu", {"alpha": 0.2}, q_in, q_out,
                                                       "float", "lk"))
