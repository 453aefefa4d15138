"""Spec tests of refq.fixedpoint.profiles: the shipped profiles, the registry and the table."""
import dataclasses

import numpy as np
import pytest

from refq.errors import FixedPointError
from refq.fixedpoint import (FLOAT_SCHEMES, INT32_MAX, PROFILES, Profile, describe_profiles,
                             get_profile, quantize_multiplier, requantize, tosa_scale32)

NAMES = ("tflite", "tflite-single", "tosa", "onnx", "ort", "cmsis-nn")
KW = dict(zero_point=-3, act_min=-128, act_max=127)


def test_exactly_the_six_profiles_ship():
    assert tuple(PROFILES) == NAMES
    with pytest.raises(TypeError):
        PROFILES["mine"] = PROFILES["tflite"]  # the registry is read-only


@pytest.mark.parametrize("name", NAMES)
def test_shipped_profile_is_valid_and_frozen(name):
    p = PROFILES[name]
    assert isinstance(p, Profile) and p.name == name and p.description
    assert dataclasses.replace(p) == p  # re-validates every field
    hash(p)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.requant = "float_rne"
    assert p.acc_bits == 32 and p.overflow == "error" and p.bias_bits == 32
    assert p.conv_padding == "input_zero_point"


def test_profiles_encode_the_notes_table():
    t, ts, tosa, onnx, ort, cm = (PROFILES[n] for n in NAMES)
    assert (t.requant, ts.requant, tosa.requant, onnx.requant, ort.requant, cm.requant) == (
        "tflite_double", "single_round", "tosa_double", "float_rne", "float32_rne",
        "tflite_double")
    assert [p.zp_before_round for p in (t, ts, tosa, onnx, ort, cm)] == [
        False, False, False, True, False, False]
    assert [p.quantize_rounding for p in (t, tosa, onnx, ort, cm)] == [
        "half_away", "half_even", "half_even", "half_even", "half_away"]
    assert not t.weight_zero_point and tosa.weight_zero_point and onnx.per_channel_weight_zero_point
    assert ort.weight_zero_point and ort.per_channel_weight_zero_point
    assert (t.add, tosa.add, onnx.add, ort.add, cm.add) == ("tflite", "tosa", "qdq", "ort",
                                                             "tflite")
    # the ONNX spec computes every non-conv op as DequantizeLinear -> float32 op -> QuantizeLinear
    assert (onnx.avgpool, onnx.mean, onnx.mul, onnx.rescale, onnx.logistic_tanh, onnx.softmax,
            onnx.hard_swish) == ("qdq", "qdq", "qdq", "qdq", "float32", "float32", "float32")
    # onnxruntime's fused kernels where it fuses, float32 inside QDQ elsewhere
    assert (ort.avgpool, ort.mean, ort.mul, ort.rescale, ort.logistic_tanh) == (
        "ort", "ort", "ort", "qdq", "float32")
    assert (ort.multiplier, ort.scale_math, ort.multiplier_bits) == ("float32", "float32", 32)
    assert [p.mul for p in (t, tosa, cm)] == ["requant"] * 3
    assert (t.logistic_tanh, cm.logistic_tanh) == ("lut_float", "gemmlowp")
    assert t.fc_requant == "float_half_away" and cm.fc_requant is None
    assert cm.fc_per_tensor_scale_math == "float32_product" and onnx.scale_math == "float32"


def test_get_profile():
    for n in NAMES:
        assert get_profile(n) is PROFILES[n]
    for bad in ("tfl", "", None, 3):
        with pytest.raises(FixedPointError) as exc:
            get_profile(bad)
        assert all(n in str(exc.value) for n in NAMES)


@pytest.mark.parametrize("change, match", [
    (dict(requant="bogus"), "requant must be one of"),
    (dict(multiplier_bits=16), "multiplier_bits"),
    (dict(requant="tosa_double"), "does not take a 'tflite' multiplier"),
    (dict(zp_before_round=True, fc_requant=None), "zp_before_round needs float"),
    (dict(per_channel_weight_zero_point=True), "needs weight_zero_point"),
    (dict(activation_dtypes=["int8"]), "non-empty tuple"),
    (dict(weight_dtypes=("int2",)), "weight_dtypes"),
    (dict(acc_bits=8), "acc_bits"),
    (dict(overflow="clip"), "overflow must be one of"),
    (dict(add_left_shift=40), "add_left_shift"),
    (dict(name=""), "non-empty"),
    (dict(weight_zero_point=1), "must be a bool"),
    (dict(fc_requant="tosa_single"), "fc_requant"),
])
def test_invalid_profile_fields_raise(change, match):
    with pytest.raises(FixedPointError, match=match):
        dataclasses.replace(PROFILES["tflite"], **change)


def test_describe_profiles():
    text = describe_profiles()
    for n in NAMES:
        assert n in text
    lines = text.splitlines()
    header = next(line for line in lines if line.strip().startswith("field"))
    assert header.split() == ["field", *NAMES]
    for field in ("requant", "zp_before_round", "quantize_rounding", "multiplier", "avgpool",
                  "add", "mean", "mul", "rescale"):
        row = next(line.split() for line in lines if line.strip().startswith(field + " "))
        assert row[1:] == [str(getattr(PROFILES[n], field)) for n in NAMES]
    shared = next(line for line in lines if line.startswith("Shared by all"))
    assert "acc_bits=32" in shared and "overflow=error" in shared
    sub = describe_profiles(["tflite", "tflite-single"])
    assert "requant" in sub and "tosa" not in sub.split("Fields that differ:")[1]
    with pytest.raises(FixedPointError):
        describe_profiles(["tflite", "nope"])


# The profile methods apply the conventions they name ------------------------------------------

ACC = np.arange(-40000, 40000, 7, dtype=np.int64)


def test_tflite_and_tosa_profiles_agree_on_conv_requant():
    t, tosa = get_profile("tflite"), get_profile("tosa")
    for M in (3 / 32, 0.0123, 0.7, 2.0 ** -20):
        a = t.requantize(ACC, *t.derive_multiplier(M), **KW)
        b = tosa.requantize(ACC, *tosa.derive_multiplier(M), **KW)
        np.testing.assert_array_equal(a, b)
        m, s = quantize_multiplier(M)
        np.testing.assert_array_equal(a, requantize(ACC, m, s, "tflite_double", **KW))


def test_tflite_single_profile_uses_single_rounding_and_its_clamp():
    ts = get_profile("tflite-single")
    m, s = tosa_scale32(3 / 32)
    np.testing.assert_array_equal(ts.requantize(ACC, *ts.derive_multiplier(3 / 32), **KW),
                                  requantize(ACC, m, s, "tosa_single", **KW))
    assert tuple(map(int, ts.derive_multiplier(2.0 ** 31))) == (INT32_MAX, 30)
    t = get_profile("tflite")
    m, s = t.derive_multiplier(2.0 ** 31)
    assert (int(m), int(s)) == (1 << 30, 32)
    with pytest.raises(FixedPointError, match="shift"):
        t.requantize(ACC, m, s, **KW)


def test_tflite_reference_fc_requantizes_in_float_half_away():
    t, cm = get_profile("tflite"), get_profile("cmsis-nn")
    M = t.real_multiplier(0.02, 0.0041, 0.05, kind="conv")
    fc = t.requantize(ACC, M, None, fc=True, **KW)
    want = requantize(ACC, M, None, "float_half_away", **KW)
    np.testing.assert_array_equal(fc, want)
    # CMSIS-NN (TFLM) keeps the integer multiplier for FC
    m, s = cm.derive_multiplier(M)
    np.testing.assert_array_equal(cm.requantize(ACC, m, s, fc=True, **KW),
                                  requantize(ACC, m, s, "tflite_double", **KW))


def test_onnx_profile_float32_multiplier_and_zero_point_before_rounding():
    o = get_profile("onnx")
    M = o.real_multiplier(0.02, 0.0041, 0.05)
    assert M == float(np.float32(np.float32(np.float32(0.02) * np.float32(0.0041)) /
                                 np.float32(0.05)))
    m, s = o.derive_multiplier(M)
    assert m.dtype == np.float64 and int(s) == 0
    acc = np.array([16, 48, -16, -48])  # ·3/32 = ±1.5, ±4.5: ties
    got = o.requantize(acc, 3 / 32, None, zero_point=1, act_min=-128, act_max=127)
    np.testing.assert_array_equal(got, [2, 6, 0, -4])  # rint(x + 1), not rint(x) + 1
    assert o.requant in FLOAT_SCHEMES


def test_profile_quantize_and_activation_range_rounding():
    t, o, tosa = get_profile("tflite"), get_profile("onnx"), get_profile("tosa")
    assert int(t.quantize(2.5, 1.0, 0, qmin=-128, qmax=127)) == 3
    assert int(o.quantize(2.5, 1.0, 0, qmin=-128, qmax=127)) == 2
    assert int(tosa.quantize(2.5, 1.0, 0, qmin=-128, qmax=127)) == 2
    # 1/0.4f is exactly 2.5 in float32: TFLite (and the TOSA legalizer) round half away
    assert t.activation_range("relu_n1_to_1", 0.4, 0, qmin=-128, qmax=127) == (-3, 3)
    assert tosa.activation_range("relu_n1_to_1", 0.4, 0, qmin=-128, qmax=127) == (-3, 3)
    assert o.activation_range("relu_n1_to_1", 0.4, 0, qmin=-128, qmax=127) == (-2, 2)
    with pytest.raises(FixedPointError, match="kind"):
        t.real_multiplier(0.1, 0.1, 0.1, kind="add")
    fc = t.real_multiplier(0.0123, 0.0031, 0.047, kind="fc_per_tensor")
    # LiteRT's reference FC (float requant, §2.5) forms M with the double formula
    assert fc == float(np.float32(0.0123)) * float(np.float32(0.0031)) / float(np.float32(0.047))
    cm_fc = get_profile("cmsis-nn").real_multiplier(0.0123, 0.0031, 0.047, kind="fc_per_tensor")
    assert cm_fc == float(np.float32(np.float32(0.0123) * np.float32(0.0031))) / float(
        np.float32(0.047))


def test_ort_profile_float32_multiplier_and_zero_point_after_rounding():
    """onnxruntime `MlasRequantizeOutput`: rint(float32(acc)·float32(M)) + zp, M formed as
    float32(float32(s_x·s_w)/s_y) (`ComputeOutputScale`)."""
    o = get_profile("ort")
    M = o.real_multiplier(0.02, 0.0041, 0.05)
    assert M == float(np.float32(np.float32(np.float32(0.02) * np.float32(0.0041)) /
                                 np.float32(0.05)))
    m, s = o.derive_multiplier(M)
    assert m.dtype == np.float32 and int(s) == 0
    acc = np.array([16, 48, -16, -48])  # ·3/32 = ±1.5, ±4.5: ties
    got = o.requantize(acc, np.float32(3 / 32), None, zero_point=1, act_min=-128, act_max=127)
    np.testing.assert_array_equal(got, [3, 5, -1, -3])  # rint(x) + 1, not rint(x + 1)
    onnx = get_profile("onnx").requantize(acc, 3 / 32, None, zero_point=1, act_min=-128,
                                          act_max=127)
    np.testing.assert_array_equal(onnx, [2, 6, 0, -4])
    # float32(acc) is inexact beyond 2^24: 2^24 + 1 becomes 2^24 before the product (float64
    # keeps it)
    big, wide = np.array([(1 << 24) + 1]), dict(zero_point=0, act_min=-(1 << 31),
                                                 act_max=(1 << 31) - 1)
    assert int(o.requantize(big, np.float32(1.0), None, **wide)[0]) == 1 << 24
    assert int(get_profile("onnx").requantize(big, 1.0, None, **wide)[0]) == (1 << 24) + 1


def test_new_profile_fields_are_validated():
    for field, bad in (("mul", "float"), ("rescale", "ort"), ("add", "onnx"), ("mean", "x"),
                       ("softmax", "float16")):
        with pytest.raises(FixedPointError, match=field):
            dataclasses.replace(PROFILES["onnx"], **{field: bad})
