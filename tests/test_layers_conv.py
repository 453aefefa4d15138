"""Spec tests of conv2d.

The reference is a naive transcription of the Definition in refq/layers/conv.py: explicit Python
loops over n, i, j, o, u, v, c on Python floats, with the padding computed here from the
TensorFlow 'same' rule as stated in the docstring. groups = 1 is also checked against
scipy.signal.correlate. Every evaluation path (1x1 matmul, depthwise taps, row-fold, im2col, the
blocking of the work) is reached by the shapes below, with BLOCK_ROWS shrunk for the block tests.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.signal
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from refq.errors import GraphError, ParamError, ShapeError
from refq.layers import conv as conv_mod
from refq.layers import depthwise as depthwise_mod
from refq.layers import get_op


# ---- reference ------------------------------------------------------------------------------
def ref_pads(size, k, s, d, padding, explicit):
    """(before, after) per axis, transcribed from the docstring."""
    keff = (k - 1) * d + 1
    if padding == "valid":
        return 0, 0
    if padding == "explicit":
        return explicit
    out = math.ceil(size / s)
    total = max((out - 1) * s + keff - size, 0)
    return total // 2, total - total // 2


def naive_conv(x, w, b=None, strides=(1, 1), dilations=(1, 1), padding="valid",
               pads=(0, 0, 0, 0), groups=1):
    n_, h, wd, c = x.shape
    o_, kh, kw, cg = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    pt, pb = ref_pads(h, kh, sh, dh, padding, pads[0:2])
    pl, pr = ref_pads(wd, kw, sw, dw, padding, pads[2:4])

    def xpad(n, hh, ww, cc):
        hh, ww = hh - pt, ww - pl
        return float(x[n, hh, ww, cc]) if 0 <= hh < h and 0 <= ww < wd else 0.0

    oh = (h + pt + pb - ((kh - 1) * dh + 1)) // sh + 1
    ow = (wd + pl + pr - ((kw - 1) * dw + 1)) // sw + 1
    og = o_ // groups
    y = np.zeros((n_, oh, ow, o_))
    for n, i, j, o in itertools.product(range(n_), range(oh), range(ow), range(o_)):
        g = o // og
        acc = 0.0 if b is None else float(b[o])
        for u, v, cc in itertools.product(range(kh), range(kw), range(cg)):
            acc += xpad(n, i * sh + u * dh, j * sw + v * dw, g * cg + cc) * float(w[o, u, v, cc])
        y[n, i, j, o] = acc
    return y


def run(x, w, b=None, **attrs):
    op = get_op("conv2d")
    a = op.normalise_attrs(attrs, "test conv2d")
    params = {"weight": w} if b is None else {"weight": w, "bias": b}
    return op.forward([x], params, a)


def shape(in_shape, w_shape, bias=False, **attrs):
    op = get_op("conv2d")
    a = op.normalise_attrs(attrs, "test conv2d")
    params = {"weight": np.zeros(w_shape)}
    if bias:
        params["bias"] = np.zeros(w_shape[:1])
    out = op.infer_shape([in_shape], a, params)
    return out, op.macs([in_shape], out, a, params)


def close(y, ref, rtol=1e-12):
    scale = max(1.0, float(np.max(np.abs(ref))))
    np.testing.assert_allclose(y, ref, rtol=rtol, atol=rtol * scale)


rng = np.random.default_rng(1234)


def rand(*s, dtype=np.float64):
    return rng.standard_normal(s).astype(dtype)


# ---- against the definition ------------------------------------------------------------------
CASES = [  # (x shape, w shape, attrs)
    ((2, 7, 6, 3), (4, 3, 3, 3), {}),
    ((2, 7, 6, 3), (4, 3, 3, 3), {"strides": [2, 2]}),
    ((1, 8, 7, 3), (5, 3, 2, 3), {"strides": [2, 1], "padding": "same"}),
    ((1, 9, 8, 2), (3, 3, 3, 2), {"dilations": [2, 2]}),
    ((1, 9, 10, 2), (3, 3, 2, 2), {"dilations": [2, 3], "strides": [1, 2], "padding": "same"}),
    ((2, 6, 6, 3), (4, 3, 3, 3), {"strides": [2, 2], "padding": "same"}),
    ((1, 5, 6, 2), (3, 2, 3, 2), {"padding": "explicit", "pads": [1, 2, 0, 3]}),
    ((1, 5, 5, 2), (2, 1, 1, 2), {}),                                    # 1x1, one matmul
    ((2, 7, 5, 3), (4, 1, 1, 3), {"strides": [2, 2]}),                    # 1x1 strided
    ((1, 5, 5, 2), (3, 1, 1, 2), {"padding": "explicit", "pads": [1, 0, 0, 1]}),
    ((2, 6, 5, 4), (6, 3, 3, 2), {"groups": 2}),                          # grouped
    ((1, 7, 7, 6), (6, 2, 2, 2), {"groups": 3, "strides": [2, 2], "padding": "same"}),
    ((1, 4, 4, 4), (8, 1, 1, 2), {"groups": 2}),                          # grouped 1x1
    ((2, 7, 6, 3), (3, 3, 3, 1), {"groups": 3, "padding": "same"}),       # depthwise
    ((1, 7, 7, 3), (6, 3, 3, 1), {"groups": 3, "strides": [2, 2], "padding": "same"}),  # mult 2
    ((1, 9, 8, 2), (4, 3, 3, 1), {"groups": 2, "dilations": [2, 1]}),
    ((2, 6, 6, 1), (5, 3, 3, 1), {"padding": "same"}),                    # C = 1
    ((1, 4, 3, 2), (3, 4, 3, 2), {}),                                     # kernel = input
]


@pytest.mark.parametrize("xs,ws,attrs", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_matches_definition_float64(xs, ws, attrs, bias):
    x, w = rand(*xs), rand(*ws)
    b = rand(ws[0]) if bias else None
    y = run(x, w, b, **attrs)
    assert y.dtype == np.float64
    close(y, naive_conv(x, w, b, **attrs))


@pytest.mark.parametrize("xs,ws,attrs", CASES[::3])
def test_float32_in_float32_out(xs, ws, attrs):
    x, w, b = rand(*xs, dtype=np.float32), rand(*ws, dtype=np.float32), rand(ws[0], dtype=np.float32)
    y = run(x, w, b, **attrs)
    assert y.dtype == np.float32
    close(y, naive_conv(x, w, b, **attrs), rtol=1e-5)


def test_float64_weights_with_float32_input_give_float32():
    x, w = rand(1, 5, 5, 2, dtype=np.float32), rand(3, 3, 3, 2)
    assert run(x, w, rand(3)).dtype == np.float32


@pytest.mark.parametrize("xs,ws,attrs", [CASES[2], CASES[7], CASES[11], CASES[14]])
def test_inputs_not_mutated_and_views_accepted(xs, ws, attrs):
    base, w, b = rand(xs[0], xs[3], xs[2], xs[1]), rand(*ws), rand(ws[0])
    x = base.transpose(0, 3, 2, 1)  # a non-contiguous view
    copies = [a.copy() for a in (base, w, b)]
    y = run(x, w, b, **attrs)
    for a, c in zip((base, w, b), copies):
        np.testing.assert_array_equal(a, c)
    close(y, naive_conv(np.ascontiguousarray(x), w, b, **attrs))


@pytest.mark.parametrize("xs,ws,attrs", [
    ((2, 7, 6, 3), (2, 3, 3, 3), {"padding": "same"}),
    ((1, 9, 8, 2), (2, 3, 2, 2), {"dilations": [2, 1], "strides": [1, 2]}),
    ((3, 7, 6, 3), (2, 3, 3, 3), {"strides": [2, 1], "padding": "same"}),
    ((1, 11, 9, 2), (2, 4, 3, 2), {"strides": [3, 2], "dilations": [2, 2], "padding": "same"}),
    ((2, 6, 5, 2), (3, 2, 3, 2), {"padding": "explicit", "pads": [2, 1, 0, 2], "strides": [2, 2]}),
    ((3, 7, 6, 2), (4, 3, 3, 1), {"groups": 2, "padding": "same"}),                       # depthwise
    ((1, 9, 9, 2), (2, 3, 3, 1), {"groups": 2, "strides": [2, 3], "dilations": [1, 2]}),
    ((2, 8, 7, 3), (6, 5, 5, 1), {"groups": 3, "padding": "explicit", "pads": [6, 1, 2, 3]}),
    ((1, 6, 5, 2), (2, 3, 3, 1), {"groups": 2, "padding": "explicit", "pads": [0, 5, 1, 0],
                                  "strides": [2, 1]}),
    ((3, 6, 6, 4), (4, 3, 3, 2), {"groups": 2, "strides": [1, 2]}),
])
@pytest.mark.parametrize("block", [1, 7, 40, 10**6])
@pytest.mark.parametrize("rowfold", [True, False])
def test_every_path_and_blocking_agree_with_the_definition(monkeypatch, xs, ws, attrs, block, rowfold):
    """Row-fold and im2col (forced), row bands and multi-image blocks (BLOCK_ROWS and
    DW_BLOCK_BYTES shrunk; depthwise blocks are padded one by one, so a band may start or end in
    the padding). Depthwise sums do not depend on the blocking, bit for bit."""
    x, w, b = rand(*xs), rand(*ws), rand(ws[0])
    whole = run(x, w, b, **attrs)
    monkeypatch.setattr(conv_mod, "BLOCK_ROWS", block)
    monkeypatch.setattr(conv_mod, "ROWFOLD_ROWS", block)
    monkeypatch.setattr(conv_mod, "BLOCK_BYTES", 0)
    monkeypatch.setattr(depthwise_mod, "DW_BLOCK_BYTES", block)
    monkeypatch.setattr(conv_mod, "_use_rowfold", lambda *args: rowfold)
    y = run(x, w, b, **attrs)
    close(y, naive_conv(x, w, b, **attrs))
    if ws[3] == 1 and attrs.get("groups", 1) == xs[3]:
        np.testing.assert_array_equal(y, whole)


# ---- against scipy -------------------------------------------------------------------------
@pytest.mark.parametrize("xs,ws,strides,dil", [
    ((2, 30, 28, 3), (4, 3, 3, 3), (1, 1), (1, 1)),
    ((1, 17, 19, 5), (3, 5, 3, 5), (2, 3), (1, 2)),
    ((1, 40, 40, 8), (8, 3, 3, 8), (1, 1), (2, 2)),
])
def test_groups1_matches_scipy_correlate(xs, ws, strides, dil):
    x, w = rand(*xs), rand(*ws)
    o, kh, kw, c = w.shape
    wd = np.zeros((o, (kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1, c))
    wd[:, ::dil[0], ::dil[1], :] = w
    ref = np.stack([np.stack([scipy.signal.correlate(x[n], wd[k], mode="valid", method="direct")[..., 0]
                              for k in range(o)], axis=-1) for n in range(x.shape[0])])
    ref = ref[:, ::strides[0], ::strides[1]]
    close(run(x, w, strides=list(strides), dilations=list(dil)), ref)


# ---- shapes, MACs, errors ---------------------------------------------------------------------
def test_same_padding_is_tensorflows_rule():
    # in 6, k 3, s 2: out 3, total pad 1 -> 0 before, 1 after (the extra row at the bottom)
    assert conv_mod.window_geometry((6, 5), (3, 3), (2, 2), (1, 1), "same", None) == ((0, 1, 1, 1), (3, 3))
    # in 7, k 3, dilation 2 (effective 5), s 1: out 7, total 4 -> 2, 2
    assert conv_mod.window_geometry((7, 7), (3, 3), (1, 1), (2, 2), "same", None) == ((2, 2, 2, 2), (7, 7))
    # stride larger than the kernel: in 5, k 1, s 3 -> out 2, total max(3+1-5, 0) = 0
    assert conv_mod.window_geometry((5, 5), (1, 1), (3, 3), (1, 1), "same", None) == ((0, 0, 0, 0), (2, 2))


def test_shapes_and_macs_hand_worked():
    # 8x8x3 -> 16, 3x3 same: 8*8*16*3*3*3
    assert shape((None, 8, 8, 3), (16, 3, 3, 3), padding="same") == ((None, 8, 8, 16), 27648)
    # valid, stride 2: (9-3)//2+1 = 4; 4*4*8*3*3*3
    assert shape((2, 9, 9, 3), (8, 3, 3, 3), bias=True, strides=[2, 2]) == ((2, 4, 4, 8), 3456)
    # depthwise multiplier 2, 3x3 valid on 8x8x4: 6*6*8*9*1
    assert shape((1, 8, 8, 4), (8, 3, 3, 1), groups=4) == ((1, 6, 6, 8), 2592)
    # groups 2: 4x4 out, 6 outputs, 2x2 kernel, 2 channels per group
    assert shape((1, 5, 5, 4), (6, 2, 2, 2), groups=2) == ((1, 4, 4, 6), 4 * 4 * 6 * 2 * 2 * 2)
    # explicit pads [1, 2, 0, 3] on 5x6, 2x3 kernel: (5+3-2)//1+1 = 7, (6+3-3)+1 = 7
    assert shape((1, 5, 6, 2), (3, 2, 3, 2), padding="explicit", pads=[1, 2, 0, 3])[0] == (1, 7, 7, 3)
    # unknown spatial size: shape unknown, MACs 0
    assert shape((None, None, None, 3), (4, 3, 3, 3), padding="same") == ((None, None, None, 4), 0)


@pytest.mark.parametrize("xs,ws,attrs,bias,match", [
    ((1, 8, 8, 3), (4, 3, 3, 2), {}, False, "channel mismatch.*3 channels"),
    ((1, 8, 8, 6), (4, 3, 3, 2), {"groups": 2}, False, "expects 2"),
    ((1, 8, 8, 5), (4, 3, 3, 2), {"groups": 2}, False, "does not divide the 5 input"),
    ((1, 8, 8, 4), (5, 3, 3, 2), {"groups": 2}, False, "does not divide the 5 output"),
    ((1, 8, 8, 4), (4, 3, 3, 4), {"groups": 0}, False, "groups must be >= 1"),
    ((1, 2, 8, 3), (4, 3, 3, 3), {}, False, "height 3.*padded input height 2"),
    ((1, 5, 5, 3), (4, 3, 3, 3), {"dilations": [3, 1]}, False, "effective 7"),
    ((1, 5, 5, 3), (4, 3, 3, 3), {"padding": "explicit", "pads": [0, -1, 0, 0]}, False, ">= 0"),
    ((1, 5, 5, 3), (4, 3, 3, 3), {"strides": [0, 1]}, False, ">= 1"),
    ((1, 5, 5, 3), (4, 3, 3, 3), {}, True, "bias must be"),
    ((5, 5, 3), (4, 3, 3, 3), {}, False, "rank 4"),
    ((1, 5, 5, 3), (4, 3, 3), {}, False, "OHWI"),
])
def test_shape_errors(xs, ws, attrs, bias, match):
    op = get_op("conv2d")
    a = op.normalise_attrs(attrs, "t")
    params = {"weight": np.zeros(ws)}
    if bias:
        params["bias"] = np.zeros(ws[0] + 1)
    with pytest.raises(ShapeError, match=match):
        op.infer_shape([xs], a, params)
    if len(xs) == 4:
        with pytest.raises(ShapeError, match=match):
            op.forward([np.zeros(xs)], params, a)


def test_missing_weight_and_bad_attrs():
    op = get_op("conv2d")
    with pytest.raises(ParamError, match="weight"):
        op.infer_shape([(1, 5, 5, 3)], op.normalise_attrs({}, "t"), {})
    with pytest.raises(GraphError, match="one of"):
        op.normalise_attrs({"padding": "full"}, "t")
    with pytest.raises(GraphError, match="2 ints"):
        op.normalise_attrs({"strides": [1, 1, 1]}, "t")


# ---- laws ---------------------------------------------------------------------------------
geom = st.fixed_dictionaries({
    "n": st.integers(1, 2), "h": st.integers(3, 9), "w": st.integers(3, 9),
    "cg": st.integers(1, 3), "groups": st.integers(1, 3), "og": st.integers(1, 3),
    "kh": st.integers(1, 3), "kw": st.integers(1, 3),
    "strides": st.lists(st.integers(1, 3), min_size=2, max_size=2),
    "dilations": st.lists(st.integers(1, 2), min_size=2, max_size=2),
    "padding": st.sampled_from(["valid", "same"]), "seed": st.integers(0, 2**31),
})


@settings(max_examples=40, deadline=None)
@given(geom, st.floats(-3, 3))
def test_linear_in_the_input(g, alpha):
    for size, k, d in ((g["h"], g["kh"], g["dilations"][0]), (g["w"], g["kw"], g["dilations"][1])):
        assume(g["padding"] == "same" or (k - 1) * d + 1 <= size)
    r = np.random.default_rng(g["seed"])
    c, o = g["cg"] * g["groups"], g["og"] * g["groups"]
    x1, x2 = r.standard_normal((2, g["n"], g["h"], g["w"], c))
    w = r.standard_normal((o, g["kh"], g["kw"], g["cg"]))
    attrs = {k: g[k] for k in ("strides", "dilations", "padding", "groups")}
    y = run(alpha * x1 + x2, w, **attrs)
    close(y, alpha * run(x1, w, **attrs) + run(x2, w, **attrs), rtol=1e-10)
    if g["h"] * g["w"] * o <= 120:  # and the definition, on the smaller cases
        close(y, naive_conv(alpha * x1 + x2, w, **attrs))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 8),
       st.integers(1, 8), st.integers(0, 2**31))
def test_1x1_conv_equals_dense_on_last_axis(n, h, w, c, o, seed):
    r = np.random.default_rng(seed)
    x, wt, b = r.standard_normal((n, h, w, c)), r.standard_normal((o, c)), r.standard_normal(o)
    dense = get_op("dense")
    yd = dense.forward([x], {"weight": wt, "bias": b}, dense.normalise_attrs({}, "t"))
    close(run(x, wt.reshape(o, 1, 1, c), b), yd)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**31))
def test_depthwise_equals_per_channel_convolutions(c, m, seed):
    """Output channel o of a depthwise conv is input channel o // m convolved with w[o]."""
    r = np.random.default_rng(seed)
    x, w = r.standard_normal((2, 6, 7, c)), r.standard_normal((c * m, 3, 2, 1))
    y = run(x, w, groups=c, padding="same", strides=[2, 1])
    for o in range(c * m):
        close(y[..., o:o + 1], run(x[..., o // m:o // m + 1], w[o:o + 1], padding="same", strides=[2, 1]))
