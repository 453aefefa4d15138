"""The "ort" profile is onnxruntime's CPU kernels on a QDQ model with graph optimizations on.

Rules (each documented with its source in refq.fixedpoint.profiles and the kernels):
  QLinearConv/QLinearMatMul  rint(fl32(fl32(acc)·fl32(fl32(s_x·s_w)/s_y))) + zp (zero point after
                             rounding; `MlasRequantizeOutput`)
  QLinearAdd                 fma(x_a, r_a, fma(x_b, r_b, F)) on the raw codes, rounded half to
                             even (MLAS `qladd_avx2.cpp`)
  QLinearMul                 fl32(fl32(p)·M) + fl32(zp), then rint (MLAS `qlmul.cpp`)
  QLinearAveragePool         sequential float32 window sum / n, nearbyintf(m/s + zp)
  QLinearGlobalAveragePool   exact int sum, M = fl32(s_in/fl32(s_out·n)), MlasRequantizeOutput
  anything else              DequantizeLinear -> float32 op -> QuantizeLinear: the tables of
                             QLinearConcat, QLinearSigmoid, QLinearLeakyRelu and QLinearSoftmax,
                             and the unfused Tanh, HardSigmoid, HardSwish, compute the same on
                             these grids

Checked with hand-computed numbers (tolerance 0) and bit for bit against onnxruntime 1.32.0's
outputs with optimizations on, committed in tests/data/ort (made by make_ort_data.py in a separate
virtual environment; onnxruntime is never imported here).
"""
import glob
import json
import os

import numpy as np
import pytest

from refq.fixedpoint import get_profile, lower_from_params, run_int
from refq.fixedpoint.kernels.add import OPS as ADD_OPS
from refq.fixedpoint.kernels.elementwise import OPS as ELEMENTWISE_OPS
from refq.fixedpoint.kernels.pooling import OPS as POOL_OPS
from refq.fixedpoint.kernels.qdq import fma32

DATA = os.path.join(os.path.dirname(__file__), "data", "ort")
CASES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(DATA, "*.npz")))
OPS = {op.name: op for op in ADD_OPS + ELEMENTWISE_OPS + POOL_OPS}
FUSED = {"conv": "QLinearConv", "matmul": "QLinearMatMul", "add": "QLinearAdd",
         "mul": "QLinearMul", "avgpool": "QLinearAveragePool", "gap": "QLinearGlobalAveragePool",
         "concat": "QLinearConcat", "sigmoid": "QLinearSigmoid", "leaky": "QLinearLeakyRelu",
         "softmax": "QLinearSoftmax"}


def load(case):
    d = np.load(os.path.join(DATA, case + ".npz"), allow_pickle=False)
    feeds = {k[2:]: d[k] for k in d.files if k.startswith("x_")}
    return d, json.loads(str(d["spec"])), feeds


def run_profile(spec, feeds, profile):
    out, _ = run_int(lower_from_params(spec, profile), feeds, codes=True)
    return out[spec["outputs"][0]].astype(np.int64)


def f32(v):
    return np.array([float(np.float32(v))])


# ---- hand-computed cases ---------------------------------------------------------------------

def test_fma32_rounds_once():
    """(1 + 2^-12)² − 1 = 2^-11 + 2^-24 exactly (representable); an unfused float32 product
    rounds (1 + 2^-12)² = 1 + 2^-11 + 2^-24 to 1 + 2^-11 (a tie, to even) and gives 2^-11."""
    a = np.float32(1 + 2.0 ** -12)
    assert fma32(a, a, np.float32(-1.0)) == np.float32(2.0 ** -11 + 2.0 ** -24)
    assert np.float32(a * a) - np.float32(1.0) == np.float32(2.0 ** -11)
    # a float32 midpoint reached only by the float64 rounding of the sum: 1 + 2^-24 + 2^-60
    # (above the midpoint between 1 and 1 + 2^-23) rounds up, not to even
    r = fma32(np.float32(2.0 ** -30), np.float32(2.0 ** -30), np.float32(1 + 2.0 ** -23))
    assert r == np.float32(1 + 2.0 ** -23)
    r = fma32(np.float32(1 + 2.0 ** -23), np.float32(2.0 ** -24), np.float32(1.0))
    assert r == np.float32(1 + 2.0 ** -23)  # exactly 1 + 2^-24 + 2^-47: above the midpoint


def test_ort_add_adds_the_zero_point_before_rounding():
    """s_a = s_b = 0.5, s_out = 1, zero points 0, 0, 1: r_a = r_b = 0.5, F = 1.
    x_a = 1, x_b = 0: v = 0.5 + 1 = 1.5 -> 2 (QuantizeLinear: rint(0.5) + 1 = 1);
    x_a = 3, x_b = 0: v = 2.5 -> 2 (QuantizeLinear: rint(1.5) + 1 = 3);
    x_a = 127, x_b = 127: v = 128 -> saturates at 127."""
    base = dict(a_zp=0, b_zp=0, output_zp=1, act_min=-128, act_max=127, scheme="float32_rne",
                left_shift=20, accumulator_bits=32, overflow="error")
    params = {"a_scale": f32(0.5), "b_scale": f32(0.5), "out_scale": f32(1.0)}
    xa, xb = np.array([1, 3, 127, -3]), np.array([0, 0, 127, 0])
    np.testing.assert_array_equal(OPS["int_add"].forward([xa, xb], params, dict(base, add="ort")),
                                  [2, 2, 127, 0])   # −1.5 + 1 = −0.5 -> 0
    np.testing.assert_array_equal(OPS["int_add"].forward([xa, xb], params, dict(base, add="qdq")),
                                  [1, 3, 127, -1])  # rint(−1.5) + 1 = −1


def test_ort_multiply_adds_the_zero_point_before_rounding():
    """M = fl32(fl32(1·1)/2) = 0.5, zp 1: p = 1 -> 0.5 + 1 = 1.5 -> 2; p = 3 -> 2.5 -> 2."""
    g = lower_from_params({
        "inputs": [{"name": "a", "shape": [None, 4], "scale": 1.0, "zero_point": 0},
                   {"name": "b", "shape": [None, 4], "scale": 1.0, "zero_point": 0}],
        "layers": [{"name": "m", "op": "multiply", "inputs": ["a", "b"],
                    "output": {"scale": 2.0, "zero_point": 1}}]}, "ort")
    n = g.node("m")
    assert n.attrs["scheme"] == "float32_rne" and n.attrs["zp_before_round"]
    out, _ = run_int(g, {"a": np.array([[1, 3, -1, 5]], np.int8),
                         "b": np.array([[1, 1, 1, 1]], np.int8)}, codes=True)
    np.testing.assert_array_equal(out["m"], [[2, 2, 0, 4]])   # −0.5 + 1 = 0.5 -> 0; 3.5 -> 4


def test_ort_average_pool_rounds_after_the_zero_point_and_global_windows_are_integer():
    """Windows of means 0.25, 0.5, 1.5, 2.5 (s = 1), zp_out = 1: nearbyintf(m + 1) = 1, 2, 2, 4
    (QuantizeLinear would give 1, 1, 3, 3). A window covering the whole unpadded image runs the
    global average pool (integer sum, zero point after rounding); the mean of all 16 codes
    (Σ = 19) with s_out = 0.25: M = fl32(1/fl32(0.25·16)) = 0.25, rint(4.75) + 1 = 6."""
    x = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]])
    x = x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(1, 4, 4, 1)
    attrs = dict(pool_size=[2, 2], strides=[2, 2], padding="valid", pads=[0, 0, 0, 0],
                 input_zp=0, output_zp=1, act_min=-128, act_max=127, avg="ort", scheme="none",
                 zp_before_round=False)
    params = {"in_scale": f32(1.0), "out_scale": f32(1.0)}
    np.testing.assert_array_equal(OPS["int_avg_pool2d"].forward([x], params, attrs).ravel(),
                                  [1, 2, 2, 4])
    # the whole 2x2 image [2, 3, 2, 3]: the integer path gives rint(10/4 = 2.5) + 1 = 3, the
    # float path would give nearbyintf(2.5 + 1) = 4
    x2 = np.array([2, 3, 2, 3]).reshape(1, 2, 2, 1)
    whole = dict(attrs, strides=[1, 1])
    np.testing.assert_array_equal(OPS["int_avg_pool2d"].forward([x2], params, whole).ravel(), [3])
    mattrs = dict(keepdims=False, input_zp=0, output_zp=1, act_min=-128, act_max=127,
                  mean="ort", scheme="float32_rne", accumulator_bits=32, overflow="error")
    np.testing.assert_array_equal(OPS["int_mean"].forward([x], dict(params, out_scale=f32(
        0.25)), mattrs), [[6]])


def test_ort_mean_refuses_what_onnxruntime_refuses():
    from refq.errors import FixedPointError

    mattrs = dict(keepdims=False, input_zp=0, output_zp=0, act_min=-128, act_max=127,
                  mean="ort", scheme="float32_rne", accumulator_bits=32, overflow="error")
    x = np.zeros((1, 2, 2, 1), np.int64)
    with pytest.raises(FixedPointError, match="256"):
        OPS["int_mean"].forward([x], {"in_scale": f32(1100.0), "out_scale": f32(1.0)}, mattrs)


def test_ort_profile_lowering():
    p = get_profile("ort")
    assert (p.add, p.mul, p.avgpool, p.mean, p.rescale, p.requant) == (
        "ort", "ort", "ort", "ort", "qdq", "float32_rne")
    assert not p.zp_before_round and p.multiplier == "float32"


# ---- against onnxruntime ---------------------------------------------------------------------

def test_the_data_was_fused_by_onnxruntime():
    whole = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearAveragePool",
             "QLinearGlobalAveragePool"}
    for case in CASES:
        d, _, _ = load(case)
        ops = set(json.loads(str(d["ops_opt"])))
        if case == "qdqchain_int8":
            # x86-64 leaves int8-activation QDQ Conv/MatMul as float ops between
            # DequantizeLinear and QuantizeLinear unless session.qdqisint8allowed is set
            assert {"Conv", "MatMul", "QLinearAdd"} <= ops and "QLinearConv" not in ops
        elif case.startswith("qdqchain"):
            assert whole <= ops, (case, ops)
        elif FUSED.get(case.split("_")[0]) is not None:
            assert FUSED[case.split("_")[0]] in ops, (case, ops)
        else:   # tanh, hard_sigmoid, hard_swish and a plain requantization stay float
            assert "DequantizeLinear" in ops and "QuantizeLinear" in ops, (case, ops)


@pytest.mark.parametrize("case", CASES)
def test_ort_profile_is_onnxruntime_optimized_bit_for_bit(case):
    """The output, and in the whole-model cases every quantized intermediate tensor."""
    d, spec, feeds = load(case)
    traced, _ = run_int(lower_from_params(spec, "ort"), feeds, trace=True, codes=True)
    out = spec["outputs"][0]
    y = traced[out if out in traced else out + ":q"]
    np.testing.assert_array_equal(y, d["y_opt"].astype(np.int64))
    for k in d.files:
        if k.startswith("t_opt_"):
            got = traced[k[6:]]
            np.testing.assert_array_equal(got, d[k].astype(np.int64).reshape(got.shape),
                                          err_msg=k)


def test_the_grids_tell_the_profiles_and_the_fusion_apart():
    """On these grids onnxruntime's fused kernels differ from its own unfused QDQ path (and from
    the "onnx" profile) on ties: the data could not pass with the other rules."""
    fused_vs_float, onnx_vs_ort = {}, {}
    for case in CASES:
        d, spec, feeds = load(case)
        y = d["y_opt"].astype(np.int64)
        fused_vs_float[case] = int(np.count_nonzero(y != d["y_noopt"].astype(np.int64)))
        onnx_vs_ort[case] = int(np.count_nonzero(run_profile(spec, feeds, "onnx") != y))
    for kind in ("add", "mul", "avgpool"):
        assert sum(v for k, v in fused_vs_float.items() if k.startswith(kind)) > 0, kind
    for kind in ("conv", "add", "mul", "avgpool"):
        assert sum(v for k, v in onnx_vs_ort.items() if k.startswith(kind)) > 0, kind
    # the 65536-pair grids contain codes where a fused multiply-add rounds differently
    assert fused_vs_float["add_int8_all_pairs"] > 0 and fused_vs_float["add_uint8_all_pairs"] > 0


def test_only_the_fused_multiply_adds_reproduce_qlinearadd():
    """On the 65536-pair grids, the unfused float32 evaluation of the same formula (each product
    rounded) and an unfused zero-point constant each miss codes that onnxruntime produces: the
    fused forms of the "ort" rule are needed, not incidental."""
    missed = {"unfused": 0, "unfused_constant": 0}
    for dt in ("int8", "uint8"):
        d, spec, feeds = load(f"add_{dt}_all_pairs")
        ea, eb = spec["inputs"]
        eo = spec["layers"][0]["output"]
        sa, sb, so = (np.float32(e["scale"]) for e in (ea, eb, eo))
        za, zb, zo = (np.float32(e["zero_point"]) for e in (ea, eb, eo))
        a, b = (feeds[k].astype(np.float32).ravel() for k in ("a", "b"))
        ra, rb = sa / so, sb / so
        lo, hi = (-128, 127) if dt == "int8" else (0, 255)
        want = d["y_opt"].astype(np.int64).ravel()

        def codes(v):
            return np.clip(np.rint(v), lo, hi).astype(np.int64)
        fixed_unfused = zo - (ra * za + rb * zb)
        missed["unfused"] += int(np.count_nonzero(
            codes(a * ra + (b * rb + fixed_unfused)) != want))
        missed["unfused_constant"] += int(np.count_nonzero(
            codes(fma32(a, ra, fma32(b, rb, fixed_unfused))) != want))
        fixed = zo - fma32(ra, za, rb * zb)
        assert np.array_equal(codes(fma32(a, ra, fma32(b, rb, fixed))), want)
    assert missed["unfused"] > 0 and missed["unfused_constant"] > 0, missed
