"""Weight zero points per output channel in the integer contractions (int_conv2d incl. grouped and
depthwise, int_dense, int_conv_transpose2d): the kernels against naive Python-integer loops of
acc[o] = Σ (x − zx)·(w[o] − zw[o]) + bias[o] (tolerance 0), the exactness bounds that choose
int32 / float32 / float64 / int64 at the right sizes, the lowering and the integer model file,
and ONNX models (QLinearConv, ConvInteger, MatMulInteger, QLinearMatMul) whose w − zp does not fit
int8 against onnx.reference and onnxruntime (tests/data/onnx_zero_points, made by make_data.py
there)."""
from __future__ import annotations

import dataclasses
import glob
import os
import zlib

import numpy as np
import pytest

import fixedpoint_kernel_refs as ref
from refq.errors import FixedPointError, ParamError, RefqError
from refq.fixedpoint.kernels import INT_REGISTRY
from refq.fixedpoint.kernels import conv as kconv
from refq.fixedpoint.kernels import operands as kops
from refq.fixedpoint.lowering import lower_from_params
from refq.fixedpoint.profiles import PROFILES, get_profile
from refq.fixedpoint.run import run_int

I32 = (-(1 << 31), (1 << 31) - 1)
GRIDS = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
DATA = os.path.join(os.path.dirname(__file__), "data", "onnx_zero_points")


# ---- naive references (Python ints, explicit loops) -------------------------------------------
def naive_conv(x, w, zw, bias, zx, strides, dilations, padding, pads, groups):
    """acc[n][i][j][o] = bias[o] + Σ_{u,v,c} (x[n, i·sh − pt + u·dh, j·sw − pl + v·dw,
    g·Cg + c] − zx)·(w[o, u, v, c] − zw[o]) over the in-bounds taps (padding contributes 0)."""
    N, H, W, _ = x.shape
    O, KH, KW, CG = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    pt, oh = ref.pads_and_out(H, KH, sh, dh, padding, (pads[0], pads[1]))
    pl, ow = ref.pads_and_out(W, KW, sw, dw, padding, (pads[2], pads[3]))
    out = np.zeros((N, oh, ow, O), dtype=object)
    for n, i, j, o in np.ndindex(N, oh, ow, O):
        g = o // (O // groups)
        acc = 0 if bias is None else int(bias[o])
        for u in range(KH):
            for v in range(KW):
                r, c0 = i * sh - pt + u * dh, j * sw - pl + v * dw
                if 0 <= r < H and 0 <= c0 < W:
                    for c in range(CG):
                        acc += (int(x[n, r, c0, g * CG + c]) - zx) * \
                            (int(w[o, u, v, c]) - int(zw[o]))
        out[n, i, j, o] = acc
    return out


def naive_dense(x, w, zw, bias, zx):
    rows = x.reshape(-1, x.shape[-1])
    out = np.zeros((rows.shape[0], w.shape[0]), dtype=object)
    for r, o in np.ndindex(*out.shape):
        out[r, o] = sum((int(rows[r, i]) - zx) * (int(w[o, i]) - int(zw[o]))
                        for i in range(w.shape[1])) + (0 if bias is None else int(bias[o]))
    return out.reshape(x.shape[:-1] + (w.shape[0],))


def naive_conv_transpose(x, w, zw, bias, zx, strides, dilations, groups, pads, out_hw):
    """Scatter: full[n, i·sh + u·dh, j·sw + v·dw, o] += (x[n, i, j, g·Cg + c] − zx)·(w[o, u, v, c]
    − zw[o]); the output is full cropped at (pt, pl) to out_hw, plus bias[o]."""
    N, H, W, _ = x.shape
    O, KH, KW, CG = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    full = np.zeros(((H - 1) * sh + (KH - 1) * dh + 1, (W - 1) * sw + (KW - 1) * dw + 1),
                    dtype=object)
    out = np.zeros((N, out_hw[0], out_hw[1], O), dtype=object)
    for n, o in np.ndindex(N, O):
        g = o // (O // groups)
        full[:] = 0
        for i, j, u, v, c in np.ndindex(H, W, KH, KW, CG):
            full[i * sh + u * dh, j * sw + v * dw] += \
                (int(x[n, i, j, g * CG + c]) - zx) * (int(w[o, u, v, c]) - int(zw[o]))
        for p, q in np.ndindex(*out_hw):
            a, b = p + pads[0], q + pads[2]
            inside = a < full.shape[0] and b < full.shape[1]
            out[n, p, q, o] = (full[a, b] if inside else 0) + (0 if bias is None else int(bias[o]))
    return out


# ---- operands --------------------------------------------------------------------------------
def codes(rng, dtype, shape):
    """Random codes of `dtype` with both ends of the grid in every output channel (axis 0)."""
    lo, hi = GRIDS[dtype]
    a = rng.integers(lo, hi + 1, shape).astype(np.uint8 if dtype == "uint8" else np.int8)
    flat = a.reshape(shape[0], -1)
    flat[:, 0], flat[:, -1] = lo, hi
    return a


def channel_zps(rng, dtype, o):
    """One zero point per output channel: both ends of the grid, the middle, then random."""
    lo, hi = GRIDS[dtype]
    zw = rng.integers(lo, hi + 1, o)
    zw[:3] = [lo, hi, (lo + hi) // 2][:min(3, o)]
    return zw.astype(np.int64)


def identity_attrs(**extra):
    """Requantization by 1.0 (float_rne) onto the int32 grid: y = acc exactly."""
    return {"output_zp": 0, "act_min": I32[0], "act_max": I32[1], "scheme": "float_rne",
            "accumulator_bits": 64, **extra}


def run(name, x, params, attrs):
    op = INT_REGISTRY[name]
    a = op.normalise_attrs(attrs, name)
    op.infer_shape([x.shape], a, params)
    y = op.forward([x], params, a)
    y2, _ = op.accumulate([x], params, a)
    np.testing.assert_array_equal(y, y2)
    return y, a


def exact(y, want):
    assert all(I32[0] <= int(v) <= I32[1] for v in want.ravel())   # nothing clamped
    np.testing.assert_array_equal(y.astype(np.int64), want.astype(np.int64))


CONV_GEOMETRIES = [  # (H, W, C, O, k, strides, dilations, padding, pads, groups)
    (6, 5, 3, 4, 3, (1, 1), (1, 1), "same", (0, 0, 0, 0), 1),
    (7, 6, 3, 5, 3, (2, 2), (1, 1), "valid", (0, 0, 0, 0), 1),
    (6, 6, 2, 3, 2, (2, 1), (2, 1), "explicit", (1, 0, 2, 1), 1),
    (5, 5, 4, 6, 3, (1, 2), (1, 1), "same", (0, 0, 0, 0), 2),     # grouped
    (6, 5, 3, 6, 3, (2, 1), (1, 1), "same", (0, 0, 0, 0), 3),     # depthwise, multiplier 2
    (5, 6, 4, 4, 3, (1, 1), (1, 2), "same", (0, 0, 0, 0), 4),     # depthwise, dilated
]
ENCODINGS = [  # (activation dtype, input zero point, weight dtype)
    ("uint8", 0, "uint8"), ("uint8", 255, "uint8"), ("int8", -128, "int8"),
    ("int8", 127, "int8"), ("uint8", 128, "int8"), ("int16", -32768, "uint8"),
]


def conv_case(geo, enc, batch=2):
    h, w_, c, o, k, strides, dil, padding, pads, groups = geo
    adt, zx, wdt = enc
    rng = np.random.default_rng(zlib.crc32(repr((geo, enc)).encode()))
    lo, hi = GRIDS[adt]
    x = rng.integers(lo, hi + 1, (batch, h, w_, c)).astype(np.int64)
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = lo, hi
    params = {"weight": codes(rng, wdt, (o, k, k, c // groups)),
              "weight_zp": channel_zps(rng, wdt, o),
              "bias": rng.integers(-5000, 5001, o).astype(np.int32),
              "real_multiplier": np.ones(1)}
    attrs = identity_attrs(strides=list(strides), dilations=list(dil), padding=padding,
                           pads=list(pads), groups=groups, input_zp=zx)
    return x, params, attrs


@pytest.mark.parametrize("geo", CONV_GEOMETRIES, ids=lambda g: f"{g[7]}-s{g[5][0]}-g{g[9]}")
@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: f"{e[0]}{e[1]}-{e[2]}")
def test_conv2d_per_channel_weight_zero_points_match_loops(geo, enc):
    x, params, attrs = conv_case(geo, enc)
    y, a = run("int_conv2d", x, params, attrs)
    want = naive_conv(x, params["weight"], params["weight_zp"], params["bias"], attrs["input_zp"],
                      a["strides"], a["dilations"], a["padding"], a["pads"], a["groups"])
    exact(y, want)
    exact(kconv.conv_plain([x], params, a)[0], want)


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: f"{e[0]}{e[1]}-{e[2]}")
def test_dense_per_channel_weight_zero_points_match_loops(enc):
    adt, zx, wdt = enc
    rng = np.random.default_rng(zlib.crc32(repr(enc).encode()))
    lo, hi = GRIDS[adt]
    x = rng.integers(lo, hi + 1, (2, 3, 9)).astype(np.int64)
    x[0, 0, :2] = lo, hi
    params = {"weight": codes(rng, wdt, (5, 9)), "weight_zp": channel_zps(rng, wdt, 5),
              "bias": rng.integers(-5000, 5001, 5).astype(np.int32),
              "real_multiplier": np.ones(1)}
    y, a = run("int_dense", x, params, identity_attrs(input_zp=zx))
    want = naive_dense(x, params["weight"], params["weight_zp"], params["bias"], zx)
    exact(y, want)
    exact(kconv.dense_plain([x], params, a)[0], want)


@pytest.mark.parametrize("geo", [((2, 2), (1, 1), 1, "valid", (0, 0, 0, 0), (0, 0)),
                                 ((2, 1), (1, 2), 2, "explicit", (1, 0, 0, 2), (1, 0)),
                                 ((1, 2), (1, 1), 2, "explicit", (0, 1, 1, 0), (0, 1))],
                         ids=["s2", "grouped-dilated", "grouped-pads"])
@pytest.mark.parametrize("enc", ENCODINGS[:4], ids=lambda e: f"{e[0]}{e[1]}-{e[2]}")
def test_conv_transpose2d_per_channel_weight_zero_points_match_loops(geo, enc):
    strides, dil, groups, padding, pads, outpad = geo
    adt, zx, wdt = enc
    rng = np.random.default_rng(zlib.crc32(repr((geo, enc)).encode()))
    lo, hi = GRIDS[adt]
    x = rng.integers(lo, hi + 1, (2, 3, 4, 4)).astype(np.int64)
    params = {"weight": codes(rng, wdt, (6, 3, 2, 4 // groups)),
              "weight_zp": channel_zps(rng, wdt, 6),
              "bias": rng.integers(-5000, 5001, 6).astype(np.int32),
              "real_multiplier": np.ones(1)}
    attrs = identity_attrs(strides=list(strides), dilations=list(dil), groups=groups,
                           padding=padding, pads=list(pads), output_padding=list(outpad),
                           input_zp=zx)
    y, a = run("int_conv_transpose2d", x, params, attrs)
    want = naive_conv_transpose(x, params["weight"], params["weight_zp"], params["bias"], zx,
                                strides, dil, groups, pads, y.shape[1:3])
    exact(y, want)


def test_equal_zero_points_per_channel_equal_the_attribute():
    x, params, attrs = conv_case(CONV_GEOMETRIES[3], ENCODINGS[2])
    params["weight_zp"] = np.full(6, -7)
    y_vec, _ = run("int_conv2d", x, params, attrs)
    scalar = {k: v for k, v in params.items() if k != "weight_zp"}
    y_att, _ = run("int_conv2d", x, scalar, {**attrs, "weight_zp": -7})
    np.testing.assert_array_equal(y_vec, y_att)


@pytest.mark.parametrize("change, needle", [
    (lambda p, a: p.update(weight_zp=np.zeros(5, np.int64)), r"shape \[5\].*shape \[6\]"),
    (lambda p, a: p.update(weight_zp=np.full(6, 256)), "weight_zp"),
    (lambda p, a: p.update(weight_zp=np.zeros(6)), "integer array"),
    (lambda p, a: a.update(weight_zp=3), "both the attribute weight_zp"),
])
def test_bad_per_channel_zero_points_are_refused(change, needle):
    x, params, attrs = conv_case(CONV_GEOMETRIES[3], ENCODINGS[2])
    change(params, attrs)
    with pytest.raises((ParamError, FixedPointError), match=needle):
        run("int_conv2d", x, params, attrs)


# ---- exactness bounds: the dtype switches exactly at the bound --------------------------------
def bound_of(x, zx, wd, bias):
    """The per-channel bound of the operands module docstring, in Python ints from its
    definition: with h = max(x − zx) ∨ 0 and l = max(zx − x) ∨ 0, channel o's partial sums lie in
    [−(l·pos + h·neg), h·pos + l·neg] (pos, neg = Σ max(±wd[o], 0)), plus |bias[o]|."""
    h = max(int(x.max()) - zx, 0)
    low = max(zx - int(x.min()), 0)
    best = 0
    for o in range(wd.shape[0]):
        vals = [int(v) for v in wd[o].ravel()]
        pos, neg = sum(v for v in vals if v > 0), sum(-v for v in vals if v < 0)
        b = 0 if bias is None else abs(int(bias[o]))
        best = max(best, max(h * pos + low * neg, low * pos + h * neg) + b)
    return best


def spy(monkeypatch):
    seen = {"dtypes": [], "int64": []}
    real_params, real_conv, real_dense = kops.blas_params, kconv.conv_int64, kconv.dense_int64
    monkeypatch.setattr(kops, "blas_params", lambda wd, bias, dtype=np.float64:
                        seen["dtypes"].append(np.dtype(dtype)) or real_params(wd, bias, dtype))
    monkeypatch.setattr(kconv, "conv_int64",
                        lambda *a: seen["int64"].append(1) or real_conv(*a))
    monkeypatch.setattr(kconv, "dense_int64",
                        lambda *a: seen["int64"].append(1) or real_dense(*a))
    return seen


@pytest.mark.parametrize("geo", [CONV_GEOMETRIES[0], CONV_GEOMETRIES[3], CONV_GEOMETRIES[4]],
                         ids=["group1", "grouped", "depthwise"])
def test_float64_bound_switches_to_int64_at_the_per_channel_bound(monkeypatch, geo):
    x, params, attrs = conv_case(geo, ENCODINGS[5])   # int16 activations, uint8 weights
    wd = params["weight"].astype(np.int64) - params["weight_zp"].reshape(-1, 1, 1, 1)
    bound = bound_of(x, attrs["input_zp"], wd, params["bias"])
    seen = spy(monkeypatch)
    a = INT_REGISTRY["int_conv2d"].normalise_attrs(attrs, "int_conv2d")
    want = naive_conv(x, params["weight"], params["weight_zp"], params["bias"], a["input_zp"],
                      a["strides"], a["dilations"], a["padding"], a["pads"], a["groups"])
    for limit, fallback in ((bound, False), (bound - 1, True)):
        monkeypatch.setattr(kops, "FLOAT64_EXACT", limit)
        monkeypatch.setattr(kops, "INT32_EXACT", min(limit, kops.INT32_EXACT))
        seen["int64"].clear()
        y, _ = run("int_conv2d", x, params, attrs)
        assert bool(seen["int64"]) == fallback
        exact(y, want)


def test_dense_float64_bound_switches_at_the_per_channel_bound(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.integers(-32768, 32768, (3, 11)).astype(np.int64)
    params = {"weight": codes(rng, "uint8", (4, 11)), "weight_zp": np.array([0, 255, 9, 200]),
              "real_multiplier": np.ones(1)}
    wd = params["weight"].astype(np.int64) - params["weight_zp"][:, None]
    bound = bound_of(x, -32768, wd, None)
    seen = spy(monkeypatch)
    want = naive_dense(x, params["weight"], params["weight_zp"], None, -32768)
    for limit, fallback in ((bound, False), (bound - 1, True)):
        monkeypatch.setattr(kops, "FLOAT64_EXACT", limit)
        seen["int64"].clear()
        y, _ = run("int_dense", x, params, identity_attrs(input_zp=-32768))
        assert bool(seen["int64"]) == fallback
        exact(y, want)


def test_float32_bound_switches_at_the_per_channel_bound(monkeypatch):
    x, params, attrs = conv_case(CONV_GEOMETRIES[3], ENCODINGS[1])   # grouped: no split path
    wd = params["weight"].astype(np.int64) - params["weight_zp"].reshape(-1, 1, 1, 1)
    bound = bound_of(x, attrs["input_zp"], wd, params["bias"])
    assert bound <= kops.FLOAT32_EXACT
    seen = spy(monkeypatch)
    for limit, dtype in ((bound, np.float32), (bound - 1, np.float64)):
        monkeypatch.setattr(kops, "FLOAT32_EXACT", limit)
        seen["dtypes"].clear()
        run("int_conv2d", x, params, attrs)
        assert set(seen["dtypes"]) == {np.dtype(dtype)}


@pytest.mark.parametrize("k, dtype", [(11, np.int32), (12, np.float64)])
def test_depthwise_int32_path_ends_where_a_channel_zero_point_takes_it_past_int32(monkeypatch, k,
                                                                                   dtype):
    """Depthwise, int16 input at x − zx = 65535 everywhere; channel 0 has w = 255, zw = 0 and
    channel 1 w = 0, zw = 255 (wd = −255: without its zero point it would contribute nothing).
    Bound 65535·255·k²: 2 022 082 425 (k = 11) fits int32, 2 406 445 200 (k = 12) needs float64.
    Both are exact."""
    x = np.full((1, k, k, 2), 32767, np.int64)
    w = np.zeros((2, k, k, 1), np.uint8)
    w[0] = 255
    params = {"weight": w, "weight_zp": np.array([0, 255]), "real_multiplier": np.ones(1)}
    attrs = INT_REGISTRY["int_conv2d"].normalise_attrs(
        identity_attrs(groups=2, input_zp=-32768), "int_conv2d")
    assert bound_of(x, -32768, w.astype(np.int64) - np.array([0, 255]).reshape(-1, 1, 1, 1),
                    None) == 65535 * 255 * k * k
    seen = spy(monkeypatch)
    acc, _ = kconv.conv_accumulator(x, params, attrs)   # the accumulator (it may leave int32)
    assert set(seen["dtypes"]) == {np.dtype(dtype)} and acc.dtype == dtype
    assert acc.reshape(-1).tolist() == [65535 * 255 * k * k, -65535 * 255 * k * k]


# ---- lowering and the integer model file ------------------------------------------------------
def lower_spec(zp, wdtype="int8", act="int8"):
    rng = np.random.default_rng(3)
    w = codes(rng, wdtype, (4, 3, 3, 2))
    return {"inputs": [{"name": "x", "shape": [None, 5, 5, 2], "scale": 0.05,
                        "zero_point": 3 if act == "int8" else 128, "dtype": act}],
            "layers": [{"name": "c", "op": "conv2d", "weight": w, "weight_dtype": wdtype,
                        "weight_scale": [0.01, 0.02, 0.015, 0.01], "weight_zero_point": zp,
                        "bias": np.arange(4, dtype=np.int32), "padding": "same",
                        "output": {"scale": 0.5, "zero_point": -2 if act == "int8" else 120,
                                   "dtype": act}}]}


def test_lowering_keeps_per_channel_zero_points_and_the_file_round_trips(tmp_path):
    import refq.model_io as model_io

    g = lower_from_params(lower_spec([-128, 127, 0, 5]), "onnx")
    node = next(n for n in g.nodes if n.op == "int_conv2d")
    assert node.attrs["weight_zp"] == 0 and node.params["weight_zp"].tolist() == [-128, 127, 0, 5]
    path = str(tmp_path / "pc.refq.h5")
    model_io.save(g, path)
    back = model_io.load(path)
    node2 = next(n for n in back.nodes if n.op == "int_conv2d")
    np.testing.assert_array_equal(node2.params["weight_zp"], node.params["weight_zp"])
    x = np.random.default_rng(4).uniform(-6, 6, (2, 5, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(run_int(g, {"x": x})[0]["c"], run_int(back, {"x": x})[0]["c"])


@pytest.mark.parametrize("op", ["gemm", "conv_transpose2d"])
def test_gemm_and_conv_transpose_keep_zero_points_per_output_channel(op):
    """gemm (transB = 0: B [K, P], one zero point per column) becomes int_dense with weight Bᵀ
    and the same zero points per output unit; conv_transpose2d keeps its [O] zero points."""
    rng = np.random.default_rng(6)
    zp = [0, 255, 17]
    if op == "gemm":
        w, shape, extra = codes(rng, "uint8", (3, 5)).T.copy(), [None, 5], {"transB": 0}
    else:
        w, shape, extra = codes(rng, "uint8", (3, 2, 2, 2)), [None, 3, 3, 2], {"strides": [2, 2]}
    spec = {"inputs": [{"name": "x", "shape": shape, "scale": 0.05, "zero_point": 128,
                        "dtype": "uint8"}],
            "layers": [{"name": "l", "op": op, "weight": w, "weight_dtype": "uint8",
                        "weight_scale": 0.01, "weight_zero_point": zp,
                        "output": {"scale": 0.5, "zero_point": 100, "dtype": "uint8"}, **extra}]}
    node = next(n for n in lower_from_params(spec, "onnx").nodes if "weight" in n.params)
    assert node.op == {"gemm": "int_dense", "conv_transpose2d": "int_conv_transpose2d"}[op]
    assert node.params["weight_zp"].tolist() == zp and node.attrs["weight_zp"] == 0
    np.testing.assert_array_equal(node.params["weight"], w.T if op == "gemm" else w)


def test_equal_zero_points_keep_the_single_attribute():
    for zp in ([5, 5, 5, 5], [5], 5):
        node = next(n for n in lower_from_params(lower_spec(zp), "onnx").nodes
                    if n.op == "int_conv2d")
        assert node.attrs["weight_zp"] == 5 and "weight_zp" not in node.params


@pytest.mark.parametrize("profile, needle", [
    ("tflite", "symmetric"), ("cmsis-nn", "symmetric"),
    ("tosa", "profile 'tosa' holds one weight zero point per layer"),
])
def test_profiles_without_per_channel_zero_points_refuse_them_by_name(profile, needle):
    with pytest.raises(FixedPointError, match=needle) as e:
        lower_from_params(lower_spec([-128, 127, 0, 5]), profile)
    assert f"'{profile}'" in str(e.value) and "'c'" in str(e.value)


def test_a_quantsim_with_asymmetric_per_channel_weights_lowers_under_onnx():
    """AIMET-style asymmetric per-channel weights: every conv/dense keeps its zero points per
    output channel (the weight encodings'), the float-scheme lowering equals the faithful
    simulation bit for bit, and profiles that hold one zero point per layer refuse by name."""
    from test_lowering import FLOAT_PROFILE, cfg, data, se_graph
    from refq.fixedpoint.lowering import lower
    from refq.fixedpoint.run import faithful_graph
    from refq.quant.quantsim import QuantSim

    sim = QuantSim(se_graph(), cfg("per_channel", params={"weight": {"is_symmetric": "False"}}))
    sim.compute_encodings(data())
    g = lower(sim, "onnx")
    weighted = [n for n in g.nodes if "weight" in n.params]
    assert weighted and all(n.attrs["weight_zp"] == 0 and np.ptp(n.params["weight_zp"]) > 0
                            for n in weighted)
    for n in weighted:   # onnx has uint8 weights: the encodings' own zero points
        enc = sim.encodings[f"{n.name}.weight"]
        assert n.params["weight_zp"].tolist() == np.atleast_1d(enc.zero_point).tolist()
    x = data(6, seed=11)
    ta = run_int(lower(sim, FLOAT_PROFILE), {"x": x}, trace=True)[0]
    tf = run_int(faithful_graph(sim, like=FLOAT_PROFILE), {"x": x}, trace=True)[0]
    assert ta.keys() == tf.keys() and all(np.array_equal(ta[k], tf[k]) for k in ta)
    for name in (p.name for p in PROFILES.values() if not p.per_channel_weight_zero_point):
        with pytest.raises(FixedPointError, match=f"node 'c1'.*'{name}'"):
            lower(sim, name)


# ---- ONNX models whose w − zp does not fit int8 -----------------------------------------------
CASES = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(DATA, "*.onnx")))
#: onnxruntime 1.32's QLinearConv, MatMulInteger and QLinearMatMul take a per-channel weight zero
#: point (checked by the data: y_ort); the shipped `ort` profile states one per layer
#: (per_channel_weight_zero_point False), so its ORT comparison runs with that field set.
ORT_PER_CHANNEL = dataclasses.replace(get_profile("ort"), per_channel_weight_zero_point=True)


def run_onnx(name, profile):
    from refq.importers.onnx import import_onnx

    d = np.load(os.path.join(DATA, f"{name}.npz"), allow_pickle=False)
    g = import_onnx(os.path.join(DATA, f"{name}.onnx"), profile=profile)
    lay = g.meta["onnx_layouts"]
    x = d["x"].transpose(0, 2, 3, 1) if lay["inputs"]["x"] == "nchw" else d["x"]
    y = run_int(g, {"x": x}, codes=True)[0][g.outputs[0]]
    return g, d, (y.transpose(0, 3, 1, 2) if lay["outputs"]["y"] == "nchw" else y)


def test_onnx_cases_are_present():
    assert CASES == ["convinteger_u8", "matmulinteger_u8", "qlinearconv_depthwise",
                     "qlinearconv_i8_groups", "qlinearconv_u8", "qlinearmatmul_i8"]


@pytest.mark.parametrize("name", CASES)
def test_onnx_per_channel_zero_points_match_the_onnx_reference(name):
    import onnx
    from onnx import numpy_helper

    g, d, y = run_onnx(name, "onnx")
    assert y.dtype == d["y_ref"].dtype
    np.testing.assert_array_equal(y, d["y_ref"])
    node = next(n for n in g.nodes if "weight" in n.params)
    m = onnx.load(os.path.join(DATA, f"{name}.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    wname, zname = ("b", "zb") if "matmul" in name else ("w", "zw")
    zp, file_w = inits[zname].astype(np.int64), inits[wname]
    span = file_w.astype(np.int64) - (zp if "matmul" in name else zp.reshape(-1, 1, 1, 1))
    assert span.min() < -128 or span.max() > 127                 # w − zp beyond int8
    assert node.params["weight_zp"].tolist() == zp.tolist()      # kept, not rewritten
    kept = file_w.T if "matmul" in name else file_w.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(node.params["weight"], kept)


@pytest.mark.parametrize("name", [c for c in CASES if c != "convinteger_u8"])
def test_onnx_per_channel_zero_points_match_onnxruntime(name):
    _, d, y = run_onnx(name, ORT_PER_CHANNEL)
    assert y.dtype == d["y_ort"].dtype
    np.testing.assert_array_equal(y, d["y_ort"])


def test_onnxruntime_refuses_per_channel_conv_integer():
    d = np.load(os.path.join(DATA, "convinteger_u8.npz"), allow_pickle=False)
    assert "y_ort" not in d and "Non per-tensor quantization" in str(d["ort_error"])


@pytest.mark.parametrize("name", ["convinteger_u8", "matmulinteger_u8", "qlinearconv_i8_groups",
                                  "qlinearmatmul_i8"])
@pytest.mark.parametrize("profile", [p.name for p in PROFILES.values()
                                     if not p.per_channel_weight_zero_point])
def test_onnx_per_channel_zero_points_refused_by_profiles_without_them(name, profile):
    with pytest.raises(RefqError) as e:
        run_onnx(name, profile)
    text = str(e.value)
    assert f"profile '{profile}'" in text and "\n" not in text
    assert "weight zero point" in text or "symmetric" in text
