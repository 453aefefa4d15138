"""The "onnx" profile is the ONNX specification as `onnx.reference` evaluates it.

QLinearConv/QLinearMatMul: M = float32(float32(s_x·s_w)/s_y), float64(acc)·M, + y_zp, then round
half to even (fixedpoint.md §8.2); every other op: DequantizeLinear -> the float32 op ->
QuantizeLinear (round half to even, saturate; §4.4, §5, §8.1).

Checked two ways: hand-computed cases with explicit numbers (tolerance 0), and bit for bit against
`onnx.reference.ReferenceEvaluator` on the models of tests/data/ort (made by
tests/data/ort/make_ort_data.py: QLinearConv/QLinearMatMul nodes and QDQ groups around Add, Mul,
AveragePool, GlobalAveragePool, Concat, Sigmoid, Tanh, LeakyRelu, HardSigmoid, HardSwish,
Softmax and a DequantizeLinear -> QuantizeLinear requantization, int8 and uint8, per-channel
weights, ties, saturation, all 65536 code pairs of Add and Mul; and whole QDQ models, qdqchain_*).
The onnx package is used only to run the reference evaluator on those models.
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

DATA = os.path.join(os.path.dirname(__file__), "data", "ort")
CASES = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(DATA, "*.npz")))
OPS = {op.name: op for op in ADD_OPS + ELEMENTWISE_OPS + POOL_OPS}


def load(case):
    d = np.load(os.path.join(DATA, case + ".npz"), allow_pickle=False)
    feeds = {k[2:]: d[k] for k in d.files if k.startswith("x_")}
    return d, json.loads(str(d["spec"])), json.loads(str(d["nchw"])), feeds


def run_profile(spec, feeds, profile):
    out, _ = run_int(lower_from_params(spec, profile), feeds, codes=True)
    return out[spec["outputs"][0]].astype(np.int64)


def f32(v):
    return np.array([float(np.float32(v))])


# ---- hand-computed cases ---------------------------------------------------------------------

def test_qdq_add_is_float32_dequantize_add_quantize():
    """s_a = s_b = 0.1, s_out = 0.2, x_a = −2, x_b = 3 (zero points 0). Exactly, −0.2 + 0.3 = 0.1
    and 0.1/0.2 = 0.5, a tie that rounds to 0. In float32: fl32(−2·0.1f) = −0.20000000298,
    fl32(3·0.1f) = 0.30000001192, their sum 0.10000000894, / 0.2f = 0.50000005960 -> 1."""
    attrs = dict(a_zp=0, b_zp=0, output_zp=0, act_min=-128, act_max=127, scheme="float_rne",
                 add="qdq", left_shift=20, accumulator_bits=32, overflow="error")
    params = {"a_scale": f32(0.1), "b_scale": f32(0.1), "out_scale": f32(0.2)}
    y = OPS["int_add"].forward([np.array([-2, 2, 5]), np.array([3, -3, 0])], params, attrs)
    np.testing.assert_array_equal(y, [1, -1, 2])   # 5·0.1f/0.2f = 2.5 exactly: ties to even
    # the float64 ("float") mode of the same op rounds the exact tie to 0
    f64 = dict(attrs, add="float")
    y64 = OPS["int_add"].forward([np.array([-2]), np.array([3])],
                                 {"a_real": np.array([0.5]), "b_real": np.array([0.5])}, f64)
    np.testing.assert_array_equal(y64, [0])


def test_qdq_multiply_and_requantize_round_after_the_zero_point():
    """QuantizeLinear adds the zero point after rounding: 0.5 -> 0 (+ zp 1 = 1), 1.5 -> 2 (3)."""
    attrs = dict(a_zp=0, b_zp=0, output_zp=1, act_min=-128, act_max=127, scheme="float_rne",
                 zp_before_round=False, mode="qdq")
    params = {"a_scale": f32(0.5), "b_scale": f32(1.0), "out_scale": f32(1.0)}
    y = OPS["int_multiply"].forward([np.array([1, 3, -1, 127]), np.array([1, 1, 1, 127])],
                                    params, attrs)
    np.testing.assert_array_equal(y, [1, 3, 1, 127])   # 0.5, 1.5, −0.5, 8064.5 (saturates)
    rq = dict(input_zp=0, output_zp=1, act_min=-128, act_max=127, scheme="float_rne",
              zp_before_round=False, mode="qdq")
    y = OPS["int_requantize"].forward([np.array([1, 3, 5, -3])],
                                      {"in_scale": f32(0.25), "out_scale": f32(0.5)}, rq)
    np.testing.assert_array_equal(y, [1, 3, 3, -1])     # 0.5, 1.5, 2.5, −1.5 -> 0, 2, 2, −2


def test_qdq_average_pool_and_mean():
    """2x2 windows of codes (s = 1, zp 0) with means 0.25, 0.5, 1.5, 2.5 quantized with
    s_out = 1, zp_out = 3: rint(m) + 3 = 3, 3, 5, 5; global mean 19/16 = 1.1875 -> 1 + 3; a
    global mean of exactly 2.5 (codes 2 and 3) -> 2 + 3."""
    x = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3]).reshape(1, 4, 4, 1)
    x = x.reshape(1, 2, 2, 2, 2, 1).transpose(0, 1, 3, 2, 4, 5).reshape(1, 4, 4, 1)
    attrs = dict(pool_size=[2, 2], strides=[2, 2], padding="valid", pads=[0, 0, 0, 0],
                 input_zp=0, output_zp=3, act_min=-128, act_max=127, avg="qdq", scheme="none",
                 zp_before_round=False)
    params = {"in_scale": f32(1.0), "out_scale": f32(1.0)}
    y = OPS["int_avg_pool2d"].forward([x], params, attrs)
    np.testing.assert_array_equal(y.ravel(), [3, 3, 5, 5])
    mattrs = dict(keepdims=False, input_zp=0, output_zp=3, act_min=-128, act_max=127,
                  mean="qdq", scheme="float_rne", accumulator_bits=32, overflow="error")
    np.testing.assert_array_equal(OPS["int_mean"].forward([x], params, mattrs), [[4]])
    x2 = np.array([2, 3, 2, 3]).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(OPS["int_mean"].forward([x2], params, mattrs), [[5]])


def test_float32_tables_use_the_onnx_formula():
    """ONNX HardSwish is x·max(0, min(1, x·fl32(1/6) + 0.5)). With s_in = 0.05, s_out = 0.01
    and code 18: x = fl32(18·0.05f) = 0.90000004, fl32(x/6) + 0.5 = 0.65, x·0.65 = 0.585 and
    0.585/0.01f = 58.5 in float32, a tie -> 58; Keras's x·relu6(x + 3)/6 in float32 gives
    58.500004 -> 59 (and so does the float64 table)."""
    from refq.fixedpoint.kernels.lut import build_lut

    t = build_lut("hard_swish", 0.05, 0, 0.01, 0, -128, 127, "float32")
    assert t[18 + 128] == 58
    keras = build_lut(lambda x: x * np.minimum(np.maximum(x + np.float32(3), np.float32(0)),
                                               np.float32(6)) / np.float32(6),
                      0.05, 0, 0.01, 0, -128, 127, "float32")
    assert keras[18 + 128] == 59
    assert build_lut("hard_swish", 0.05, 0, 0.01, 0, -128, 127, "float")[18 + 128] == 59
    # LeakyRelu (alpha 0.1): x·fl32(alpha) for x <= 0; QuantizeLinear saturates
    from refq.fixedpoint.kernels.lut import onnx_float32_function

    lr = build_lut(onnx_float32_function("leaky_relu", {"alpha": 0.1}), 1.0, 0, 0.5, 0, -128,
                   127, "float32")
    np.testing.assert_array_equal(lr[[0, 118, 128, 129, 255]], [-26, -2, 0, 2, 127])


def test_onnx_profile_lowering_uses_the_qdq_kernels():
    spec = {"inputs": [{"name": "a", "shape": [None, 2, 2, 3], "scale": 0.1, "zero_point": 3},
                       {"name": "b", "shape": [None, 2, 2, 3], "scale": 0.2, "zero_point": -1}],
            "layers": [{"name": "s", "op": "add", "inputs": ["a", "b"],
                        "output": {"scale": 0.3, "zero_point": 2}},
                       {"name": "m", "op": "multiply", "inputs": ["s", "b"],
                        "output": {"scale": 0.05, "zero_point": 0}},
                       {"name": "p", "op": "global_avg_pool2d",
                        "output": {"scale": 0.04, "zero_point": 1}}]}
    g = lower_from_params(spec, "onnx")
    assert g.node("s").attrs["add"] == "qdq" and g.node("m").attrs["mode"] == "qdq"
    assert g.node("p").attrs["mean"] == "qdq"
    p = get_profile("onnx")
    assert (p.add, p.mul, p.avgpool, p.mean, p.rescale) == ("qdq",) * 5


# ---- against onnx.reference --------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference_outputs():
    """{case: {output name: codes, NHWC}} of onnx.reference on every committed model."""
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    out = {}
    for case in CASES:
        _, _, nchw, feeds = load(case)
        ref = ReferenceEvaluator(onnx.load(os.path.join(DATA, case + ".onnx")))
        ys = ref.run(None, {k: np.ascontiguousarray(v.transpose(0, 3, 1, 2)) if nchw[k] else v
                            for k, v in feeds.items()})
        out[case] = {name: (y.transpose(0, 2, 3, 1) if nchw[name] else y).astype(np.int64)
                     for name, y in zip(ref.output_names, ys)}
    return out


def test_the_data_covers_the_ops():
    kinds = {c.split("_")[0] for c in CASES}
    assert kinds >= {"conv", "matmul", "add", "mul", "avgpool", "gap", "concat", "sigmoid",
                     "tanh", "requantize", "leaky"}
    assert any("uint8" in c or "u8" in c for c in CASES) and any("int8" in c for c in CASES)


@pytest.mark.parametrize("case", CASES)
def test_onnx_profile_is_the_reference_evaluator_bit_for_bit(case, reference_outputs):
    """Every output; the whole-model cases (qdqchain_*) also output their quantized intermediate
    tensors (ONNX conv1, conv2, s, p, g = refq c1, c2, s, p, g). Their convolutions and MatMul
    are QDQ, which the reference evaluates as a float Conv between DequantizeLinear and
    QuantizeLinear; the QLinearConv rule of the profile gives the same codes there (measured on
    these grids; the two are equal up to float32 rounding of the sum, not by definition)."""
    _, spec, _, feeds = load(case)
    out, _ = run_int(lower_from_params(spec, "onnx"), feeds, trace=True, codes=True)
    refq_name = {"conv1": "c1", "conv2": "c2"}
    for name, want in reference_outputs[case].items():
        got = out[refq_name.get(name, name)].astype(np.int64)
        np.testing.assert_array_equal(got, want.reshape(got.shape), err_msg=f"{case} {name}")


def test_onnx_profile_is_onnxruntime_without_fusion_on_qdq_models():
    """onnxruntime with graph optimizations off runs the float op between DequantizeLinear and
    QuantizeLinear: the spec again (QLinearConv/MatMul nodes excepted: those are onnxruntime's own
    kernels, which add the zero point after rounding)."""
    differ = {}
    for case in CASES:
        d, spec, _, feeds = load(case)
        y = run_profile(spec, feeds, "onnx")
        n = int(np.count_nonzero(y != d["y_noopt"].astype(np.int64)))
        if case.startswith(("conv", "matmul")):
            differ[case] = n
        else:
            assert n == 0, case
    # ties with an odd output zero point: the two orders of zero-point add and rounding differ
    assert differ["conv_s8_ties"] > 0 and differ["conv_u8_ties"] > 0
    assert differ["conv_s8_perchannel"] == 0


def test_qdq_kernels_refuse_missing_or_bad_scales():
    from refq.errors import FixedPointError, ParamError

    add = dict(a_zp=0, b_zp=0, output_zp=0, act_min=-128, act_max=127, scheme="float_rne",
               add="qdq", left_shift=20, accumulator_bits=32, overflow="error")
    x = np.zeros((1, 2), np.int64)
    with pytest.raises(ParamError, match="out_scale"):
        OPS["int_add"].forward([x, x], {"a_scale": f32(1), "b_scale": f32(1)}, add)
    with pytest.raises(FixedPointError, match="finite"):
        OPS["int_add"].forward([x, x], {"a_scale": f32(1), "b_scale": f32(0),
                                        "out_scale": f32(1)}, add)
    mul = dict(a_zp=0, b_zp=0, output_zp=0, act_min=-128, act_max=127, scheme="float_rne",
               zp_before_round=False, mode="qdq")
    with pytest.raises(ParamError, match="b_scale"):
        OPS["int_multiply"].forward([x, x], {"a_scale": f32(1), "out_scale": f32(1)}, mul)
    pool = dict(pool_size=[1, 1], strides=[1, 1], padding="valid", pads=[0, 0, 0, 0],
                input_zp=0, output_zp=0, act_min=-128, act_max=127, avg="qdq", scheme="none",
                zp_before_round=False)
    with pytest.raises(FixedPointError, match="in_scale"):
        OPS["int_avg_pool2d"].forward([np.zeros((1, 2, 2, 1), np.int64)],
                                      {"in_scale": np.array([np.inf]), "out_scale": f32(1)},
                                      pool)
