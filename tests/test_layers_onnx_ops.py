"""Spec tests of the float ops and attributes for ONNX models: conv_transpose2d, matmul, gemm,
the pooling attributes (dilations, ceil_mode, count_include_pad, same_lower), 1-D and 3-D pooling,
max-pool indices, global_max_pool2d, round, flatten at an axis, clip with one bound, and
batch_norm's required epsilon.

References: naive loop transcriptions of each Definition (Python floats, explicit loops, the
window geometry recomputed from the docstrings' formulas), and onnxruntime's outputs for the same
single-node ONNX models (tests/data/onnx_ops/expected.npz, made by make_expected.py beside it;
float32 there, so compared with rtol 1e-5).
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from refq.errors import GraphError, ShapeError
from refq.layers import get_op

rng = np.random.default_rng(4242)
DATA = Path(__file__).parent / "data" / "onnx_ops" / "expected.npz"


def attrs_of(name, attrs):
    return get_op(name).normalise_attrs(dict(attrs), f"test {name}")


def fwd(name, inputs, attrs=None, params=None):
    op = get_op(name)
    a = attrs_of(name, attrs or {})
    out = op.infer_shape([x.shape for x in inputs], a, dict(params or {}))
    y = op.forward(list(inputs), dict(params or {}), a)
    assert tuple(y.shape) == tuple(out), (name, y.shape, out)
    return y


# ---- naive references -----------------------------------------------------------------------
def naive_conv_transpose(x, w, b, strides, dilations, groups, out_pad, padding, pads, out_shape):
    n, h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    og = o // groups
    full = [(sz - 1) * s + (k - 1) * d + 1 + op
            for sz, s, k, d, op in zip((h, wd), strides, (kh, kw), dilations, out_pad)]
    before = []
    for a in range(2):
        if out_shape or padding.startswith("same"):
            want = out_shape[a] if out_shape else (h, wd)[a] * strides[a]
            total = full[a] - want
            before.append(total // 2 if padding == "same_upper" else total - total // 2)
        else:
            before.append(pads[2 * a] if padding == "explicit" else 0)
    ends = []
    for a in range(2):
        if out_shape or padding.startswith("same"):
            want = out_shape[a] if out_shape else (h, wd)[a] * strides[a]
            ends.append(full[a] - want - before[a])
        else:
            ends.append(pads[2 * a + 1] if padding == "explicit" else 0)
    yf = np.zeros((n, full[0], full[1], o))
    for nn, i, j, oo, u, v, cc in itertools.product(range(n), range(h), range(wd), range(o),
                                                     range(kh), range(kw), range(cg)):
        g = oo // og
        yf[nn, i * strides[0] + u * dilations[0], j * strides[1] + v * dilations[1], oo] += \
            float(x[nn, i, j, g * cg + cc]) * float(w[oo, u, v, cc])
    oh, ow = full[0] - before[0] - ends[0], full[1] - before[1] - ends[1]
    y = np.zeros((n, oh, ow, o))
    for nn, p, q, oo in itertools.product(range(n), range(oh), range(ow), range(o)):
        pp, qq = p + before[0], q + before[1]
        v = yf[nn, pp, qq, oo] if 0 <= pp < full[0] and 0 <= qq < full[1] else 0.0
        y[nn, p, q, oo] = v + (0.0 if b is None else float(b[oo]))
    return y


def naive_pool(x, kind, k, s, d, padding="valid", pads=None, ceil=False, include_pad=False):
    """max / avg / indices over [N, *spatial, C] from the Definition, tap by tap."""
    spatial = x.shape[1:-1]
    geo = []
    for j, (n, kk, ss, dd) in enumerate(zip(spatial, k, s, d)):
        keff = (kk - 1) * dd + 1
        if padding in ("same", "same_lower"):
            out = math.ceil(n / ss)
            total = max((out - 1) * ss + keff - n, 0)
            b = total // 2 if padding == "same" else total - total // 2
            a = total - b
        else:
            b, a = (pads[2 * j], pads[2 * j + 1]) if padding == "explicit" else (0, 0)
            span = (n + b + a - keff) / ss
            out = (math.ceil(span) if ceil else math.floor(span)) + 1
            if ceil and (out - 1) * ss >= n + b:
                out -= 1
        geo.append((b, a, out))
    outs = [g[2] for g in geo]
    y = np.zeros((x.shape[0], *outs, x.shape[-1]), np.int64 if kind == "indices" else float)
    for nn in range(x.shape[0]):
        for i in itertools.product(*map(range, outs)):
            for c in range(x.shape[-1]):
                vals, where, count = [], [], 0
                for u in itertools.product(*map(range, k)):
                    pos = [ii * ss + uu * dd for ii, uu, ss, dd in zip(i, u, s, d)]
                    inside = all(g[0] <= p < g[0] + n for p, g, n in zip(pos, geo, spatial))
                    in_pad = all(p < g[0] + n + g[1] for p, g, n in zip(pos, geo, spatial))
                    if inside:
                        coord = [p - g[0] for p, g in zip(pos, geo)]
                        vals.append(float(x[(nn, *coord, c)]))
                        where.append(coord)
                        count += 1
                    elif include_pad and in_pad:
                        count += 1
                if kind == "max":
                    y[(nn, *i, c)] = max(vals)
                elif kind == "avg":
                    y[(nn, *i, c)] = sum(vals) / count
                else:
                    best = 0
                    for t in range(1, len(vals)):
                        if vals[t] > vals[best]:
                            best = t
                    flat = c
                    for coord, n in zip(where[best], spatial):
                        flat = flat * n + coord
                    y[(nn, *i, c)] = flat
    return y


def close(y, ref, rtol=1e-12):
    np.testing.assert_allclose(y, ref, rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(ref),
                                                                                initial=0))))


# ---- conv_transpose2d -----------------------------------------------------------------------
def _random_transpose_case(t):
    g = int(rng.integers(1, 3))
    cg, og = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    x = rng.standard_normal((2, int(rng.integers(1, 5)), int(rng.integers(1, 5)), g * cg))
    w = rng.standard_normal((g * og, int(rng.integers(1, 4)), int(rng.integers(1, 4)), cg))
    st = [int(v) for v in rng.integers(1, 4, 2)]
    di = [int(v) for v in rng.integers(1, 3, 2)]
    op = [int(rng.integers(0, max(s, d))) for s, d in zip(st, di)]
    padding = ["valid", "explicit", "same_upper", "same_lower"][t % 4]
    pads = [int(v) for v in rng.integers(0, 2, 4)] if padding == "explicit" else [0, 0, 0, 0]
    return x, w, st, di, g, op, padding, pads


@pytest.mark.parametrize("t", range(24))
def test_conv_transpose2d_matches_definition(t):
    x, w, st, di, g, op, padding, pads = _random_transpose_case(t)
    b = rng.standard_normal(w.shape[0]) if t % 2 else None
    attrs = {"strides": st, "dilations": di, "groups": g, "output_padding": op,
             "padding": padding, "pads": pads}
    params = {"weight": w} if b is None else {"weight": w, "bias": b}
    try:
        ref = naive_conv_transpose(x, w, b, st, di, g, op, padding, pads, [])
    except ValueError:   # an empty output: the op refuses it
        with pytest.raises(ShapeError):
            fwd("conv_transpose2d", [x], attrs, params)
        return
    if 0 in ref.shape[1:3]:
        with pytest.raises(ShapeError, match="no output"):
            fwd("conv_transpose2d", [x], attrs, params)
        return
    close(fwd("conv_transpose2d", [x], attrs, params), ref)


@pytest.mark.parametrize("out_shape", [[5, 7], [4, 4], [9, 12], [12, 14]])
def test_conv_transpose2d_output_shape_sets_pads_including_negative(out_shape):
    """output_shape below the full size crops (ONNX's pads rule); above it (negative pads) the
    extra rows and columns are the bias alone."""
    x = rng.standard_normal((1, 3, 4, 2))
    w = rng.standard_normal((3, 3, 3, 2))
    b = rng.standard_normal(3)
    for padding in ("valid", "same_upper"):
        attrs = {"strides": [2, 2], "padding": padding, "output_shape": out_shape}
        y = fwd("conv_transpose2d", [x], attrs, {"weight": w, "bias": b})
        ref = naive_conv_transpose(x, w, b, [2, 2], [1, 1], 1, [0, 0], padding, [0] * 4, out_shape)
        assert y.shape == (1, *out_shape, 3)
        close(y, ref)


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    """<conv_transpose2d(x; w), z> = <x, conv2d(z; K)> with K = conv2d_weight(w) (docstring)."""
    from refq.layers.conv_transpose import conv2d_weight
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((4, 3, 2, 3))   # groups 2: O = 4, C/groups = 3
    attrs = {"strides": [2, 3], "dilations": [1, 2], "groups": 2}
    y = fwd("conv_transpose2d", [x], attrs, {"weight": w})
    z = rng.standard_normal(y.shape)
    back = fwd("conv2d", [z], {"strides": [2, 3], "dilations": [1, 2], "groups": 2},
               {"weight": conv2d_weight(w, 2)})
    assert back.shape == x.shape
    assert math.isclose(float(np.sum(y * z)), float(np.sum(x * back)), rel_tol=1e-12)


def test_conv_transpose2d_shapes_macs_and_errors():
    op = get_op("conv_transpose2d")
    w = np.zeros((6, 3, 2, 2))
    a = attrs_of("conv_transpose2d", {"strides": [2, 2], "groups": 2})
    assert op.infer_shape([(None, 4, 5, 4)], a, {"weight": w}) == (None, 9, 10, 6)
    assert op.infer_shape([(None, None, 5, 4)], a, {"weight": w}) == (None, None, 10, 6)
    assert op.macs([(None, 4, 5, 4)], (None, 9, 10, 6), a, {"weight": w}) == 4 * 5 * 2 * 6 * 6
    cases = [
        ({"groups": 3}, "groups"),
        ({"output_padding": [2, 0], "strides": [2, 2]}, "output_padding"),
        ({"padding": "explicit", "pads": [1, 0, 0, 0], "output_shape": [9, 9]}, "either pads"),
        ({"output_shape": [9]}, "output_shape"),
        ({"padding": "explicit", "pads": [-1, 0, 0, 0]}, ">= 0"),
        ({"padding": "explicit", "pads": [3, 3, 0, 0]}, "no output"),
        ({"strides": [0, 1]}, ">= 1"),
    ]
    for extra, match in cases:
        with pytest.raises(ShapeError, match=match):
            op.infer_shape([(None, 4, 5, 4)], attrs_of("conv_transpose2d", {"groups": 2, **extra}),
                           {"weight": w})
    with pytest.raises(ShapeError, match="rank 4"):
        op.infer_shape([(None, 4, 4)], attrs_of("conv_transpose2d", {}), {"weight": w})
    with pytest.raises(ShapeError, match="bias"):
        op.infer_shape([(None, 4, 5, 4)], a, {"weight": w, "bias": np.zeros(5)})
    with pytest.raises(GraphError, match="not one of"):
        attrs_of("conv_transpose2d", {"padding": "same"})


# ---- matmul and gemm ------------------------------------------------------------------------
@pytest.mark.parametrize("sa,sc", [((2, 3, 4), (2, 4, 5)), ((2, 3, 1, 4, 2), (2, 1, 3, 2, 3)),
                                   ((3, 1, 2, 2), (3, 4, 2, 1))])
def test_matmul_matches_definition(sa, sc):
    a, c = rng.standard_normal(sa), rng.standard_normal(sc)
    y = fwd("matmul", [a, c])
    lead = tuple(max(p, q) for p, q in zip(sa[:-2], sc[:-2]))
    ref = np.zeros(lead + (sa[-2], sc[-1]))
    for idx in itertools.product(*map(range, lead)):
        ia = tuple(i if n > 1 else 0 for i, n in zip(idx, sa[:-2]))
        ic = tuple(i if n > 1 else 0 for i, n in zip(idx, sc[:-2]))
        for i, j in itertools.product(range(sa[-2]), range(sc[-1])):
            ref[idx + (i, j)] = sum(float(a[ia + (i, k)]) * float(c[ic + (k, j)])
                                    for k in range(sa[-1]))
    close(y, ref)
    op = get_op("matmul")
    assert op.macs([sa, sc], (None,) + y.shape[1:], {}, {}) == int(np.prod(y.shape[1:])) * sa[-1]


def test_matmul_errors():
    op = get_op("matmul")
    for sa, sc, match in [((None, 3), (None, 3), "rank >= 3"), ((2, 3, 4), (2, 2, 3, 4), "rank"),
                          ((2, 3, 4), (2, 5, 6), "second-to-last"),
                          ((2, 2, 3, 4), (2, 3, 4, 5), "broadcast")]:
        with pytest.raises(ShapeError, match=match):
            op.infer_shape([sa, sc], {}, {})
    assert op.infer_shape([(None, 1, 3, 4), (None, 6, 4, 2)], {}, {}) == (None, 6, 3, 2)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias_shape", [None, (), (1,), (3,), (1, 1), (1, 3)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, -2.0)])
def test_gemm_matches_definition(trans_b, bias_shape, alpha, beta):
    x = rng.standard_normal((4, 5))
    w = rng.standard_normal((3, 5) if trans_b else (5, 3))
    params = {"weight": w}
    if bias_shape is not None:
        params["bias"] = rng.standard_normal(bias_shape)
    y = fwd("gemm", [x], {"transB": trans_b, "alpha": alpha, "beta": beta}, params)
    ref = np.zeros((4, 3))
    for i, j in itertools.product(range(4), range(3)):
        acc = sum(float(x[i, k]) * float(w[j, k] if trans_b else w[k, j]) for k in range(5))
        cval = 0.0
        if bias_shape is not None:
            cb = np.broadcast_to(params["bias"], (4, 3))
            cval = float(cb[i, j])
        ref[i, j] = alpha * acc + beta * cval
    close(y, ref)


def test_gemm_with_unit_factors_is_dense_bit_for_bit():
    x = rng.standard_normal((7, 6)).astype(np.float32)
    w, b = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    y = fwd("gemm", [x], {"transB": 1}, {"weight": w, "bias": b})
    np.testing.assert_array_equal(y, fwd("dense", [x], {}, {"weight": w, "bias": b}))


def test_gemm_errors():
    op = get_op("gemm")
    w = np.zeros((5, 3))
    with pytest.raises(GraphError, match="transA = 1"):
        op.infer_shape([(None, 5)], attrs_of("gemm", {"transA": 1}), {"weight": w})
    with pytest.raises(ShapeError, match="rank 2"):
        op.infer_shape([(None, 2, 5)], attrs_of("gemm", {}), {"weight": w})
    with pytest.raises(ShapeError, match="expects 5"):
        op.infer_shape([(None, 4)], attrs_of("gemm", {}), {"weight": w})
    with pytest.raises(ShapeError, match="tied to one batch size"):
        op.infer_shape([(None, 5)], attrs_of("gemm", {}), {"weight": w, "bias": np.zeros((4, 3))})
    with pytest.raises(GraphError, match="above the maximum"):
        attrs_of("gemm", {"transB": 2})


# ---- pooling --------------------------------------------------------------------------------
POOL_CASES = [
    # (spatial, k, s, d, padding, pads, ceil, include_pad)
    ((8, 7), (3, 3), (2, 2), (1, 1), "explicit", (1, 1, 1, 1), True, True),
    ((8, 7), (3, 3), (2, 2), (1, 1), "explicit", (1, 1, 1, 1), True, False),
    ((7, 7), (2, 2), (3, 3), (1, 1), "valid", None, True, True),
    ((7, 9), (2, 3), (1, 2), (2, 2), "explicit", (0, 1, 1, 2), False, True),
    ((6, 5), (3, 2), (2, 2), (1, 1), "same_lower", None, False, False),
    ((6, 5), (3, 2), (2, 2), (2, 1), "same", None, True, False),
    ((10,), (3,), (2,), (1,), "explicit", (1, 1), True, False),
    ((9,), (4,), (3,), (2,), "valid", None, True, True),
    ((4, 5, 6), (2, 2, 3), (2, 1, 2), (1, 2, 1), "explicit", (1, 0, 0, 1, 1, 1), True, True),
    ((4, 5, 3), (2, 3, 2), (1, 2, 2), (1, 1, 1), "same_lower", None, False, False),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_pools_match_definition(case):
    spatial, k, s, d, padding, pads, ceil, include = case
    r = len(spatial)
    x = rng.standard_normal((2, *spatial, 3))
    x[0, (0,) * r] = np.round(x[0, (0,) * r])   # some ties
    base = {"pool_size": list(k), "strides": list(s), "dilations": list(d), "padding": padding,
            "ceil_mode": ceil}
    if pads is not None:
        base["pads"] = list(pads)
    close(fwd(f"avg_pool{r}d", [x], dict(base, count_include_pad=include)),
          naive_pool(x, "avg", k, s, d, padding, pads, ceil, include))
    np.testing.assert_array_equal(fwd(f"max_pool{r}d", [x], base),
                                  naive_pool(x, "max", k, s, d, padding, pads, ceil))
    idx = fwd(f"max_pool{r}d_indices", [x], base)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, naive_pool(x, "indices", k, s, d, padding, pads, ceil))


def test_indices_pick_the_first_maximum_of_a_tie():
    x = np.zeros((1, 2, 3, 1))
    x[0, 1, 0, 0] = x[0, 0, 2, 0] = 5.0
    idx = fwd("max_pool2d_indices", [x], {"pool_size": [2, 3], "strides": [1, 1]})
    assert idx.tolist() == [[[[2]]]]     # (0, 2) comes before (1, 0) in row-major order


def test_pool_geometry_errors():
    x = (None, 5, 5, 2)
    op = get_op("max_pool2d")
    with pytest.raises(ShapeError, match="no input element"):
        op.infer_shape([(None, 1, 1, 2)], attrs_of("max_pool2d", {
            "pool_size": [2, 2], "strides": [1, 1], "dilations": [2, 2], "padding": "explicit",
            "pads": [1, 1, 1, 1]}), {})
    with pytest.raises(ShapeError, match=">= 1"):
        op.infer_shape([x], attrs_of("max_pool2d", {"pool_size": [2, 2], "strides": [1, 1],
                                                    "dilations": [0, 1]}), {})
    with pytest.raises(ShapeError, match="rank 3"):
        get_op("avg_pool1d").infer_shape([x], attrs_of("avg_pool1d", {"pool_size": [2],
                                                                     "strides": [1]}), {})
    with pytest.raises(ShapeError, match="rank 5"):
        get_op("max_pool3d").infer_shape([x], attrs_of("max_pool3d", {
            "pool_size": [2, 2, 2], "strides": [1, 1, 1]}), {})
    with pytest.raises(GraphError, match="expected 6 ints"):
        attrs_of("max_pool3d", {"pool_size": [2, 2, 2], "strides": [1, 1, 1], "pads": [0] * 4})


def test_pool_unknown_sizes_and_macs():
    op = get_op("avg_pool3d")
    a = attrs_of("avg_pool3d", {"pool_size": [2, 2, 2], "strides": [2, 2, 2],
                                "padding": "same_lower"})
    assert op.infer_shape([(None, None, 4, 5, 3)], a, {}) == (None, None, 2, 3, 3)
    out = op.infer_shape([(None, 4, 4, 5, 3)], a, {})
    assert op.macs([(None, 4, 4, 5, 3)], out, a, {}) == 2 * 2 * 3 * 3 * 8


@pytest.mark.parametrize("keepdims", [False, True])
def test_global_max_pool(keepdims):
    x = rng.standard_normal((2, 3, 4, 5))
    y = fwd("global_max_pool2d", [x], {"keepdims": keepdims})
    ref = np.array([[max(float(x[n, h, w, c]) for h in range(3) for w in range(4))
                     for c in range(5)] for n in range(2)])
    np.testing.assert_array_equal(y.reshape(2, 5), ref)
    assert y.shape == ((2, 1, 1, 5) if keepdims else (2, 5))


# ---- round, flatten, clip -------------------------------------------------------------------
def test_round_is_half_to_even():
    x = np.array([[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49999999999999994, -3.7, 1e300]])
    y = fwd("round", [x])
    assert y.tolist() == [[float(round(v)) if abs(v) < 1e300 else v for v in x[0]]]
    assert y.dtype == np.float64
    assert fwd("round", [x[:, :-1].astype(np.float32)]).dtype == np.float32


@pytest.mark.parametrize("axis,shape", [(1, (2, 6 * 5 * 4)), (2, (2 * 6, 5 * 4)),
                                        (3, (2 * 6 * 5, 4)), (4, (2 * 6 * 5 * 4, 1)),
                                        (-1, (2 * 6 * 5, 4)), (-3, (2, 6 * 5 * 4))])
def test_flatten_at_an_axis(axis, shape):
    x = rng.standard_normal((2, 6, 5, 4))
    y = fwd("flatten", [x], {"axis": axis})
    assert y.shape == shape
    flat = [float(v) for v in itertools.chain.from_iterable(
        x[n, i, j].tolist() for n in range(2) for i in range(6) for j in range(5))]
    assert y.reshape(-1).tolist() == flat      # C order, whatever the axis
    op = get_op("flatten")
    a = attrs_of("flatten", {"axis": axis})
    assert op.infer_shape([(None, 6, 5, 4)], a, {}) == (None, shape[1])


def test_flatten_refuses_axis_zero_and_out_of_range():
    op = get_op("flatten")
    for axis in (0, -4, 5, -5):
        with pytest.raises(ShapeError, match="axis"):
            op.infer_shape([(None, 6, 5, 4)], attrs_of("flatten", {"axis": axis}), {})
    assert attrs_of("flatten", {}) == {"axis": 1}


@pytest.mark.parametrize("bounds", [{"min": -0.25}, {"max": 0.5}, {}, {"min": None, "max": 1.0}])
def test_clip_with_a_missing_bound(bounds):
    x = np.linspace(-2, 2, 33).reshape(1, 33)
    y = fwd("clip", [x], bounds)
    lo, hi = bounds.get("min"), bounds.get("max")
    ref = [min(max(v, lo) if lo is not None else v, hi) if hi is not None else
           (max(v, lo) if lo is not None else v) for v in x[0].tolist()]
    assert y[0].tolist() == ref
    from refq.layers.inplace import clip as clip_inplace
    z = x.copy()
    clip_inplace({}, attrs_of("clip", bounds), np.float64)(z)
    np.testing.assert_array_equal(z, y)


def test_clip_attrs_round_trip_through_json():
    a = attrs_of("clip", {"min": 0.0})
    assert a == {"min": 0.0, "max": None}
    assert attrs_of("clip", json.loads(json.dumps(a))) == a
    with pytest.raises(ShapeError, match="min <= max"):
        get_op("clip").infer_shape([(None, 3)], attrs_of("clip", {"min": 2.0, "max": 1.0}), {})
    with pytest.raises(GraphError, match="expected a number"):
        attrs_of("clip", {"min": "0"})


# ---- batch_norm epsilon -----------------------------------------------------------------------
def test_batch_norm_needs_its_epsilon():
    with pytest.raises(GraphError, match="needs attribute 'epsilon'"):
        attrs_of("batch_norm", {})
    assert attrs_of("batch_norm", {"epsilon": 1e-5}) == {"epsilon": 1e-5, "axis": -1}


def test_keras_importer_states_the_keras_epsilon():
    from refq.importers.keras_layers import KERAS_BN_EPSILON, _batch_norm_fields
    assert KERAS_BN_EPSILON == 1e-3
    assert _batch_norm_fields({"axis": -1})["epsilon"] == 1e-3
    assert _batch_norm_fields({"axis": -1, "epsilon": 1e-5})["epsilon"] == 1e-5


# ---- onnxruntime ------------------------------------------------------------------------------
def _cases():
    with np.load(DATA, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    names = sorted({k.split("/")[0] for k in data})
    return {n: {k.split("/", 1)[1]: v for k, v in data.items() if k.split("/")[0] == n}
            for n in names}


CASES = _cases()


def nhwc(a):
    return np.moveaxis(a, 1, -1)


def _pool_attrs(at, r):
    out = {"pool_size": at["kernel_shape"], "strides": at.get("strides", [1] * r),
           "dilations": at.get("dilations", [1] * r), "ceil_mode": bool(at.get("ceil_mode", 0))}
    auto = at.get("auto_pad", "NOTSET")
    if auto == "SAME_UPPER":
        out["padding"] = "same"
    elif auto == "SAME_LOWER":
        out["padding"] = "same_lower"
    elif "pads" in at:
        p = at["pads"]
        out["padding"], out["pads"] = "explicit", [v for j in range(r) for v in (p[j], p[r + j])]
    return out


def _refq_output(name, c):
    at = json.loads(str(c["attrs"]))
    f64 = {k: np.asarray(v, np.float64) for k, v in c.items() if k not in ("attrs", "y",
                                                                         "indices")}
    if name.startswith("ct_"):
        x, wo = nhwc(f64["x"]), f64["w"]
        g = at.get("group", 1)
        cin, og, kh, kw = wo.shape
        w = wo.reshape(g, cin // g, og, kh, kw).transpose(0, 2, 3, 4, 1).reshape(g * og, kh, kw,
                                                                                 cin // g)
        auto = at.get("auto_pad", "NOTSET")
        attrs = {"groups": g, "strides": at.get("strides", [1, 1]),
                 "dilations": at.get("dilations", [1, 1]),
                 "output_padding": at.get("output_padding", [0, 0]),
                 "output_shape": at.get("output_shape", [])}
        if auto.startswith("SAME"):
            attrs["padding"] = auto.lower()
        elif "pads" in at:
            p = at["pads"]
            attrs["padding"], attrs["pads"] = "explicit", [p[0], p[2], p[1], p[3]]
        params = {"weight": w, **({"bias": f64["b"]} if "b" in f64 else {})}
        return np.moveaxis(fwd("conv_transpose2d", [x], attrs, params), -1, 1), None
    if name.startswith(("mp_", "ap_")):
        x = nhwc(f64["x"])
        r = x.ndim - 2
        attrs = _pool_attrs(at, r)
        if name.startswith("ap_"):
            attrs["count_include_pad"] = bool(at.get("count_include_pad", 0))
            return np.moveaxis(fwd(f"avg_pool{r}d", [x], attrs), -1, 1), None
        y = fwd(f"max_pool{r}d", [x], attrs)
        idx = fwd(f"max_pool{r}d_indices", [x], attrs)
        return np.moveaxis(y, -1, 1), np.moveaxis(idx, -1, 1)
    if name == "global_max":
        return fwd("global_max_pool2d", [nhwc(f64["x"])], {"keepdims": True}).transpose(
            0, 3, 1, 2), None
    if name.startswith("matmul"):
        return fwd("matmul", [f64["a"], f64["c"]]), None
    if name.startswith("gemm"):
        return fwd("gemm", [f64["x"]], {"alpha": at.get("alpha", 1.0), "beta": at.get("beta", 1.0),
                                        "transB": at.get("transB", 0)},
                   {"weight": f64["w"], "bias": f64["b"]}), None
    if name == "round":
        return fwd("round", [f64["x"]]), None
    if name.startswith("flatten"):
        return fwd("flatten", [f64["x"]], {"axis": at["axis"]}), None
    if name.startswith("clip"):
        bounds = {k: float(f64[s]) for k, s in (("min", "lo"), ("max", "hi")) if s in f64}
        return fwd("clip", [f64["x"]], bounds), None
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_against_onnxruntime(name):
    c = CASES[name]
    y, idx = _refq_output(name, c)
    assert y.shape == c["y"].shape, (y.shape, c["y"].shape)
    np.testing.assert_allclose(y, c["y"], rtol=1e-5, atol=1e-5)
    if "indices" in c:
        n = c["x"].shape[0]
        per_image = int(np.prod(c["x"].shape[1:]))
        batch_term = (np.arange(n) * per_image).reshape((n,) + (1,) * (idx.ndim - 1))
        np.testing.assert_array_equal(idx + batch_term, c["indices"])


def test_the_onnxruntime_data_covers_every_new_op():
    assert len(CASES) == 27
    assert {n.split("_")[0] for n in CASES} >= {"ct", "mp", "ap", "global", "matmul", "gemm",
                                                "round", "flatten", "clip"}


@pytest.mark.parametrize("padding", ["valid", "same", "explicit"])
def test_the_original_four_pool_attributes_alone_still_work(padding):
    """Callers that pass only pool_size, strides, padding and pads (the integer kernels reuse the
    float forward that way) get what the normalised attributes give, bit for bit."""
    x = rng.standard_normal((2, 7, 6, 3))
    a = {"pool_size": [3, 2], "strides": [2, 1], "padding": padding, "pads": [1, 2, 0, 1]}
    for name in ("max_pool2d", "avg_pool2d", "max_pool2d_indices"):
        op = get_op(name)
        full = op.forward([x], {}, attrs_of(name, a))
        np.testing.assert_array_equal(op.forward([x], {}, dict(a)), full)
        assert op.infer_shape([x.shape], dict(a), {}) == full.shape
    xi = rng.integers(-128, 128, (2, 7, 6, 3))
    y = get_op("max_pool2d").forward([xi], {}, dict(a))
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, naive_pool(xi, "max", (3, 2), (2, 1), (1, 1), padding,
                                                a["pads"]))
