"""Dynamic-range TFLite convolutions with one weight scale (LiteRT's `EvalHybrid` path of conv.cc:
symmetric per-image input quantization, `optimized_ops::HybridConv`) against LiteRT's BUILTIN_REF
tensors, the kernel against a loop transcription, and the per-tensor forms LiteRT reads past its
scale array, refused.

Expected tensors: tests/data/tflite/hybrid_pt.npz, made by make_hybrid_per_tensor.py beside it.
"""
import pathlib

import numpy as np
import pytest

import refq
from refq.errors import UnsupportedLayerError
from refq.ops import get_op

pytest.importorskip("tflite")

from refq.importers.tflite import fold_constants, import_tflite, shape_only_ops  # noqa: E402
from refq.importers.tflite_float import float_graph  # noqa: E402
from refq.importers.tflite_read import read_tflite  # noqa: E402
from expected_data import load_npz  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parent / "data" / "tflite"
F32 = np.float32


def _expected():
    return load_npz(DATA / "hybrid_pt.npz")


def test_every_tensor_equals_litert_reference_kernels():
    exp = _expected()
    g = import_tflite(DATA / "hybrid_pt.tflite")
    assert g.meta["tflite"]["kind"] == "dynamic_range"
    convs = [n for n in g.nodes if n.op == "int_hybrid_conv2d"]
    assert len(convs) == 2
    for n in convs:
        assert n.attrs["asymmetric"] is False and n.attrs["scale_order"] == "depthwise"
        assert n.params["weight_scale"].shape == (1,)
    out = refq.run(g, {g.inputs[0].name: exp["inputs"]}, trace=True, dtype=np.float32)
    held = g.meta["tflite"]["tensors"]
    pairs = [(t, exp[f"t{i}"], out[t]) for t, i in held.items() if f"t{i}" in exp and t in out]
    assert len(pairs) == 5                   # input, two convs, flatten, dense
    for tensor, want, got in pairs:
        assert got.shape == want.shape, tensor
        assert np.array_equal(np.asarray(got, F32).view(np.int32), want.view(np.int32)), tensor
    assert not np.any(exp["inputs"][3])      # the all-zero image: scale 1, codes 0


def _loop(x, w, ws, bias, act, stride, pad):
    """EvalHybrid on one image, loop by loop: symmetric quantization (s = max|x|/127, codes
    round_half_away(x·fl(127/max|x|)) clamped to ±127), sf = fl(s·ws), y = fl(acc)·sf + bias."""
    x = x.astype(F32)
    r = F32(np.abs(x).max())
    if r == 0:
        s, q = F32(1), np.zeros(x.shape, np.int64)
    else:
        s = F32(r / F32(127))
        v = (x * F32(F32(127) / r)).astype(np.float64)
        q = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -127, 127).astype(np.int64)
    sf = F32(s * F32(ws))
    o, kh, kw, c = w.shape
    h, wd, _ = x.shape
    oh, ow = (h + pad[0] + pad[1] - kh) // stride + 1, (wd + pad[2] + pad[3] - kw) // stride + 1
    y = np.zeros((oh, ow, o), F32)
    for i in range(oh):
        for j in range(ow):
            for k in range(o):
                acc = 0
                for u in range(kh):
                    for v_ in range(kw):
                        yy, xx = i * stride + u - pad[0], j * stride + v_ - pad[2]
                        if 0 <= yy < h and 0 <= xx < wd:
                            acc += int(np.dot(w[k, u, v_].astype(np.int64), q[yy, xx]))
                t = F32(F32(acc) * sf) + F32(bias[k])
                y[i, j, k] = max(t, F32(0)) if act == "relu" else t
    return y


def test_kernel_against_a_loop_transcription():
    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (3, 3, 3, 2)).astype(np.int64)
    bias = rng.normal(0, 0.3, 3).astype(F32)
    op = get_op("int_hybrid_conv2d")
    x = np.stack([rng.normal(0, 1, (5, 6, 2)), np.zeros((5, 6, 2)),
                  rng.normal(0, 40, (5, 6, 2))]).astype(F32)
    for stride, padding, pad, act in ((1, "same", (1, 1, 1, 1), "relu"),
                                      (2, "valid", (0, 0, 0, 0), "none")):
        attrs = op.normalise_attrs({"groups": 1, "strides": [stride, stride],
                                    "padding": padding, "asymmetric": False,
                                    "scale_order": "depthwise", "activation": act}, "t")
        y = op.forward([x], {"weight": w, "weight_scale": np.array([0.0123], F32),
                             "bias": bias}, attrs)
        for n in range(x.shape[0]):
            want = _loop(x[n], w, F32(0.0123), bias, act, stride, pad)
            assert np.array_equal(np.asarray(y[n], F32).view(np.int32), want.view(np.int32))


def _edited(edit):
    model = read_tflite(DATA / "hybrid_pt.tflite")
    edit(model)
    skip = shape_only_ops(model) | fold_constants(model)
    return float_graph(model, skip, hybrid=True)[0]


def test_equal_per_channel_scales_take_the_per_tensor_path():
    def equal(model):
        w = model.tensors[model.operators[1].inputs[1]]
        w.scales = np.full(12, w.scales[0], np.float32)
        w.zero_points = np.zeros(12, np.int64)
    g = _edited(equal)
    n = [n for n in g.nodes if n.op == "int_hybrid_conv2d"][1]
    assert n.attrs["asymmetric"] is False and n.params["weight_scale"].shape == (1,)

    def differ(model):
        w = model.tensors[model.operators[1].inputs[1]]
        w.scales = np.linspace(0.01, 0.02, 12).astype(np.float32)
        w.zero_points = np.zeros(12, np.int64)
    n = [n for n in _edited(differ).nodes if n.op == "int_hybrid_conv2d"][1]
    assert n.attrs["asymmetric"] is True and n.attrs["scale_order"] == "conv"


def test_one_scale_for_several_channels_is_refused_where_litert_reads_past_it():
    def wrong_count(model):
        w = model.tensors[model.operators[1].inputs[1]]
        w.scales = np.linspace(0.01, 0.02, 3).astype(np.float32)
        w.zero_points = np.zeros(3, np.int64)
    with pytest.raises(UnsupportedLayerError, match=r"operator 1 \(CONV_2D\): int8 weights with "
                                                    r"3 scale\(s\) for 12 output channels"):
        _edited(wrong_count)
