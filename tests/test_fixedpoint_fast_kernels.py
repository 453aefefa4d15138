"""The kernels `run_int` calls (`kernels.NARROW`: narrow output dtypes, the float64 block
requantization, lookup tables) against the plain definitions, tolerance 0: every geometry and
encoding of the conv tests, inputs in int64 and in their narrow dtype, batch 1 and > 1, every
scheme, the accumulator policies and their errors; and `run_int` itself (narrow, threaded) against
its traced plain path on the benchmark architectures for every profile."""
from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from refq import parallel
from refq.errors import FixedPointError
from refq.fixedpoint.kernels import INT_REGISTRY, NARROW
from refq.fixedpoint.kernels import add as kadd
from refq.fixedpoint.kernels import conv as kconv
from refq.fixedpoint.kernels import operands as kops
from refq.fixedpoint.kernels import elementwise as kel
from refq.fixedpoint.kernels import shape as kshape
from refq.fixedpoint.kernels.common import AccExtremes, act_dtype
from refq.fixedpoint.profiles import PROFILES
from refq.fixedpoint.rounding import INT32_MAX, INT32_MIN
from refq.fixedpoint.run import faithful_graph
from test_fixedpoint_kernels_conv import (ACT, ENCODINGS, GEOMETRIES, _overflow_case, make_case,
                                          requant_params)
from test_fixedpoint_kernels_ops import add_params


PROFILE_NAMES = list(PROFILES) + ["reference"]


def norm(name, attrs):
    return INT_REGISTRY[name].normalise_attrs(attrs, name)


def same(got, want):
    """Equal values, and equal signed extremes when accumulators are reported."""
    (y1, m1), (y2, m2) = got, want
    np.testing.assert_array_equal(y1, y2)
    assert y1.shape == y2.shape
    if m2 is not None:
        assert isinstance(m1, AccExtremes) and (m1.lo, m1.hi, int(m1)) == (m2.lo, m2.hi, int(m2))


def narrow_inputs(x, adt):
    return [x, x.astype(adt)]


# ---- int_conv2d / int_dense --------------------------------------------------------------------
@pytest.mark.parametrize("geo", GEOMETRIES)
@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: f"{e[0]}-zp{e[1]}-{e[2]}-{e[4]}")
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_narrow_equals_plain(geo, enc, batch):
    x, params, attrs = make_case(zlib.crc32(repr((geo, enc, batch)).encode()), geo, enc, batch)
    attrs = norm("int_conv2d", attrs)
    want = kconv.conv_plain([x], params, attrs)
    memo = {}
    for xi in narrow_inputs(x, enc[0]):
        for dtype in (None, np.int64):
            got = kconv.conv_narrow([xi], params, attrs, memo, dtype)
            assert got[0].dtype == (act_dtype(attrs) if dtype is None else dtype)
            same(got, want)
    same(INT_REGISTRY["int_conv2d"].accumulate([x], params, attrs), want)


@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: f"{e[0]}-zp{e[1]}-{e[2]}-{e[4]}")
def test_dense_narrow_equals_plain(enc):
    adt, izp, wkind, wzp, scheme, zpb, act = enc
    rng = np.random.default_rng(zlib.crc32(repr(enc).encode()))
    lo, hi = ACT[adt]
    for shape in ((1, 7), (4, 3, 9)):
        x = rng.integers(lo, hi + 1, size=shape)
        w = rng.integers(-127 if wkind != "uint8" else 0, 128, size=(5, shape[-1]))
        w = w.astype(np.int8 if wkind != "uint8" else np.uint8)
        params = {"weight": w, "bias": rng.integers(-999, 1000, 5).astype(np.int32),
                  **requant_params(scheme, 2.0 ** rng.uniform(-12, -4, 5))}
        attrs = norm("int_dense", {"input_zp": izp, "weight_zp": wzp, "output_zp": 0,
                                   "act_min": lo, "act_max": hi, "scheme": scheme,
                                   "zp_before_round": zpb})
        want = kconv.dense_plain([x], params, attrs)
        for xi in narrow_inputs(x, adt):
            same(kconv.dense_narrow([xi], params, attrs, {}), want)


@pytest.mark.parametrize("policy", ["error", "wrap", "saturate"])
def test_conv_narrow_accumulator_policies(policy):
    x, params, attrs = _overflow_case()
    attrs = norm("int_conv2d", {**attrs, "overflow": policy})
    if policy == "error":
        with pytest.raises(FixedPointError, match=r"accumulator.*16-bit.*first is -?\d+ at index"):
            kconv.conv_narrow([x.astype(np.int8)], params, attrs, {})
        return
    same(kconv.conv_narrow([x.astype(np.int8)], params, attrs, {}),
         kconv.conv_plain([x], params, attrs))


def test_conv_float32_bound_is_per_channel(monkeypatch):
    """The exactness bound is max over channels of max|x − zp|·Σ|w − wzp| + |bias|: a layer whose
    k·max|x|·max|w| exceeds 2^24 still accumulates in float32 when every channel's sum does not."""
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, size=(2, 4, 4, 600)).astype(np.int8)
    w = rng.integers(-20, 21, size=(3, 1, 1, 600)).astype(np.int8)
    w[0, 0, 0, 0] = 127
    params = {"weight": w, **requant_params("tflite_double", [2.0 ** -12] * 3)}
    attrs = norm("int_conv2d", {"input_zp": -128, "output_zp": 0, "act_min": -128,
                                "act_max": 127, "scheme": "tflite_double"})
    assert not kops.blas_is_exact(600, 255, 127, 0, kops.FLOAT32_EXACT)
    seen = []
    real = kops.blas_params
    monkeypatch.setattr(kops, "blas_params", lambda wd, b, dtype=np.float64: seen.append(dtype)
                        or real(wd, b, dtype))
    same(kconv.conv_narrow([x], params, attrs, {}), kconv.conv_plain([x], params, attrs))
    assert seen[0] == np.float32


@pytest.mark.parametrize("izp", [-128, 0, 37])
@pytest.mark.parametrize("geo", [(3, 3, (1, 1), "same"), (1, 1, (2, 2), "valid"),
                                 (3, 2, (2, 1), "valid")])
def test_conv_float64_layer_runs_as_float32_channel_parts(izp, geo, monkeypatch):
    """A group-1 layer whose bound needs float64 is accumulated as float32 parts over ranges of
    input channels (each part within 2^24, the bias in the first), summed in float64: the same
    integers."""
    kh, kw, strides, padding = geo
    rng = np.random.default_rng(9)
    c = 5400 // (kh * kw)  # about 243000 for Σ|w| over the taps: beyond 2^24 / 255 · 2
    x = rng.integers(-128, 128, size=(2, 5, 6, c)).astype(np.int8)
    x[0, 0, 0, :] = 127
    w = rng.integers(-90, 91, size=(4, kh, kw, c)).astype(np.int8)
    w[1] = np.abs(w[1])  # one output channel with weights of one sign
    params = {"weight": w, "bias": rng.integers(-50000, 50000, 4).astype(np.int32),
              **requant_params("tflite_double", [2.0 ** -14] * 4)}
    attrs = norm("int_conv2d", {"strides": list(strides), "padding": padding, "input_zp": izp,
                                "output_zp": 3, "act_min": -128, "act_max": 127,
                                "scheme": "tflite_double"})
    seen = []
    real = kops.blas_params
    monkeypatch.setattr(kops, "blas_params", lambda wd, b, dtype=np.float64: seen.append(
        (np.dtype(dtype).name, wd.shape[-1], b is not None)) or real(wd, b, dtype))
    want = kconv.conv_plain([x], params, attrs)
    assert seen == [("float64", c, True)]
    seen.clear()
    same(kconv.conv_narrow([x], params, attrs, {}), want)
    assert len(seen) > 1 and {d for d, _, _ in seen} == {"float32"}
    assert sum(n for _, n, _ in seen) == c and [b for _, _, b in seen] == \
        [True] + [False] * (len(seen) - 1)


# ---- int_requantize ------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["tflite_double", "single_round", "tosa_double", "tosa_single",
                                    "float_rne", "float32_rne", "float_half_away"])
@pytest.mark.parametrize("adt", ["int8", "uint8", "int16"])
def test_requantize_narrow_equals_plain(scheme, adt):
    lo, hi = ACT[adt]
    x = np.concatenate([np.arange(lo, hi + 1), np.arange(lo, hi + 1)[::-1]])
    x = np.resize(x, (3, (len(x) + 11) // 12, 4))
    for reals in ([3 / 32], [0.5], [1.7], [0.01, 1 / 3, 2.5, 0.75]):
        params = requant_params(scheme, reals)
        for izp, ozp, amin, amax in ((0, 0, -128, 127), (-5, -128, -128, 127), (17, 3, 0, 255),
                                     (lo, 100, -32768, 32767), (hi, -7, INT32_MIN, INT32_MAX)):
            attrs = norm("int_requantize", {"input_zp": izp, "output_zp": ozp, "act_min": amin,
                                            "act_max": amax, "scheme": scheme,
                                            "zp_before_round": scheme.startswith("float")
                                            and ozp == 3})
            try:
                want = kel.requant_plain([x], params, attrs)
            except FixedPointError:
                continue
            for xi in narrow_inputs(x, adt):
                for dtype in (None, np.int64):
                    y, _ = kel.requant_narrow([xi], params, attrs, {}, dtype)
                    np.testing.assert_array_equal(y, want)
                    assert y.dtype == (act_dtype(attrs) if dtype is None else dtype)


def test_requantize_table_is_keyed_by_values():
    """The lookup tables are kept under the parameter values: new arrays with other values get
    their own table, the same values share one."""
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 256, 1)
    attrs = norm("int_requantize", {"input_zp": 0, "output_zp": 0, "act_min": -128,
                                    "act_max": 127, "scheme": "tflite_double"})
    p1, p2 = requant_params("tflite_double", [0.5]), requant_params("tflite_double", [0.25])
    y1 = kel.requant_narrow([x], p1, attrs)[0]
    y2 = kel.requant_narrow([x], p2, attrs)[0]
    y1b = kel.requant_narrow([x], {k: v.copy() for k, v in p1.items()}, attrs)[0]
    np.testing.assert_array_equal(y1, kel.requant_plain([x], p1, attrs))
    np.testing.assert_array_equal(y2, kel.requant_plain([x], p2, attrs))
    np.testing.assert_array_equal(y1b, y1)


def test_tables_kept_in_the_node_memo(monkeypatch):
    """With a memo (one node during a run) the lookup table is looked up by value once: later
    calls take it from the memo, and give the same values."""
    from refq.fixedpoint.kernels import common
    looked = []
    real = common.TABLES.get
    monkeypatch.setattr(common.TABLES, "get", lambda *a: looked.append(a[0]) or real(*a))
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 256, 1)
    attrs = norm("int_requantize", {"input_zp": 0, "output_zp": 0, "act_min": -128,
                                    "act_max": 127, "scheme": "tflite_double"})
    params = requant_params("tflite_double", [0.5])
    add_attrs = norm("int_add", {"a_zp": 0, "b_zp": 0, "output_zp": 0, "act_min": -128,
                                 "act_max": 127, "scheme": "tflite_double", "add": "tflite"})
    add_p = add_params(0.02, 0.05, 0.04, "tflite_double")
    memo, add_memo = {}, {}
    for _ in range(3):
        np.testing.assert_array_equal(kel.requant_narrow([x], params, attrs, memo)[0],
                                      kel.requant_plain([x], params, attrs))
        same(kadd.add_narrow([x, x[:, ::-1]], add_p, add_attrs, add_memo),
             INT_REGISTRY["int_add"].accumulate([x, x[:, ::-1]], add_p, add_attrs))
    assert sorted(looked) == ["int_add", "int_requantize"]


# ---- int_add -------------------------------------------------------------------------------------
ADD_CASES = [("tflite_double", "tflite"), ("single_round", "tflite"), ("tosa_double", "tosa"),
             ("float_rne", "float"), ("float32_rne", "float"), ("float_half_away", "float")]


@pytest.mark.parametrize("scheme,mode", ADD_CASES)
@pytest.mark.parametrize("adt", ["int8", "uint8", "int16"])
def test_add_narrow_equals_plain(scheme, mode, adt):
    rng = np.random.default_rng(zlib.crc32(repr((scheme, adt)).encode()))
    lo, hi = ACT[adt]
    a = rng.integers(lo, hi + 1, size=(3, 5, 4, 6))
    b = rng.integers(lo, hi + 1, size=(3, 5, 4, 6))
    a[0, 0, 0, :4], b[0, 0, 0, :4] = [lo, hi, lo, hi], [lo, hi, hi, lo]
    for shapes in ((a, b), (a, b[:, :1, :1]), (a[:1], b)):
        for s_a, s_b, s_o in ((0.02, 0.05, 0.04), (0.5, 0.5, 0.01), (0.01, 0.013, 0.2)):
            if mode == "float":
                params = {"a_real": np.array([s_a / s_o]), "b_real": np.array([s_b / s_o])}
            else:
                params = add_params(s_a, s_b, s_o, scheme)
            for zps in ((0, 0, 0), (lo, hi, 5), (3, -1, lo)):
                attrs = norm("int_add", {"a_zp": zps[0], "b_zp": zps[1], "output_zp": zps[2],
                                         "act_min": lo, "act_max": hi, "scheme": scheme,
                                         "add": mode})
                try:
                    want = INT_REGISTRY["int_add"].accumulate(list(shapes), params, attrs)
                except FixedPointError as e:  # int16 << 20 leaves the int32 accumulator
                    for xa, xb in ((shapes[0].astype(adt), shapes[1].astype(adt)), shapes):
                        with pytest.raises(FixedPointError, match=re.escape(str(e))):
                            kadd.add_narrow([xa, xb], params, attrs, {})
                    continue
                for xa, xb in ((shapes[0].astype(adt), shapes[1].astype(adt)), shapes):
                    same(kadd.add_narrow([xa, xb], params, attrs, {}), want)


@pytest.mark.parametrize("policy", ["error", "wrap", "saturate"])
def test_add_narrow_accumulator_policies(policy):
    """A table whose pairs overflow the accumulator under "error" is not built: the plain path
    then raises only when the data overflow."""
    params = add_params(0.02, 0.03, 0.05, "tflite_double", left_shift=9)
    attrs = norm("int_add", {"a_zp": 0, "b_zp": 0, "output_zp": 0, "act_min": -128,
                             "act_max": 127, "scheme": "tflite_double", "add": "tflite",
                             "left_shift": 9, "accumulator_bits": 16, "overflow": policy})
    small = (np.array([[-3, 0, 5, 60]], np.int8), np.array([[7, 0, -60, 2]], np.int8))
    big = (np.array([[-128, -3, 0, 100, 127]], np.int8), np.array([[127, 7, 0, -100, 127]],
                                                                   np.int8))
    same(kadd.add_narrow(list(small), params, attrs, {}),
         INT_REGISTRY["int_add"].accumulate(list(small), params, attrs))
    if policy == "error":
        with pytest.raises(FixedPointError, match="accumulator.*index"):
            kadd.add_narrow(list(big), params, attrs, {})
        return
    same(kadd.add_narrow(list(big), params, attrs, {}),
         INT_REGISTRY["int_add"].accumulate(list(big), params, attrs))


# ---- int_quantize, int_pad, int_concat, int_max_pool2d ------------------------------------------
@pytest.mark.parametrize("rounding", ["half_away", "half_even"])
@pytest.mark.parametrize("grid", [(-128, 127, -1), (0, 255, 128), (-32768, 32767, 0),
                                  (-128, 127, 127)])
def test_quantize_narrow_equals_plain(rounding, grid):
    qmin, qmax, zp = grid
    rng = np.random.default_rng(7)
    scale = 0.5
    ties = (np.arange(-300, 300) + 0.5) * scale  # x / scale = k + 1/2 exactly
    x = np.concatenate([ties, rng.standard_normal(5000) * 100, [0.0, -0.0, 1e30, -1e30, np.inf,
                                                              -np.inf, 0.24999999, 0.25]])
    for dtype in (np.float32, np.float64):
        xs = x.astype(dtype).reshape(1, -1, 1)
        attrs = norm("int_quantize", {"scale": scale, "zero_point": zp, "qmin": qmin,
                                      "qmax": qmax, "rounding": rounding})
        want = INT_REGISTRY["int_quantize"].forward([xs], {}, attrs)
        y, _ = kel.quantize_narrow([xs], {}, attrs)
        np.testing.assert_array_equal(y, want)
        assert y.dtype == np.dtype({(-128, 127): "int8", (0, 255): "uint8"}.get((qmin, qmax),
                                                                                "int16"))
    with pytest.raises(FixedPointError, match="NaN"):
        kel.quantize_narrow([np.array([[1.0, np.nan]])], {}, attrs)


def test_pad_and_concat_narrow_equal_plain():
    a = (np.arange(24).reshape(1, 2, 3, 4) - 12).astype(np.int8)
    b = np.arange(6).reshape(1, 2, 3, 1).astype(np.uint8)
    for pads, value in (([1, 0, 2, 1], -128), ([0, 1, 0, 1], 7), ([2, 2, 2, 2], 300)):
        attrs = {"pads": pads, "value": value}
        y, _ = kshape.pad_narrow([a], {}, attrs)
        np.testing.assert_array_equal(y, INT_REGISTRY["int_pad"].forward([a.astype(np.int64)],
                                                                          {}, attrs))
        assert y.dtype == (np.int8 if -128 <= value <= 127 else np.int64)
    y, _ = kshape.concat_narrow([a, b], {}, {"axis": -1})
    np.testing.assert_array_equal(y, INT_REGISTRY["int_concat"].forward(
        [a.astype(np.int64), b.astype(np.int64)], {}, {"axis": -1}))


@pytest.mark.parametrize("pool", [((3, 3), (2, 2), "same", (0, 0, 0, 0)),
                                  ((2, 2), (1, 1), "valid", (0, 0, 0, 0)),
                                  ((3, 2), (2, 1), "explicit", (1, 1, 0, 1))])
@pytest.mark.parametrize("adt", ["int8", "uint8", "int16"])
def test_max_pool_narrow_equals_plain(pool, adt):
    from refq.fixedpoint.kernels import pooling as kpool

    size, strides, padding, pads = pool
    lo, hi = ACT[adt]
    x = np.random.default_rng(8).integers(lo, hi + 1, size=(2, 7, 6, 3))
    x[0, 0, 0] = lo  # the least value of the dtype: padding must not win over it
    for amin, amax in ((lo, hi), (max(lo, 0), hi), (lo + 10, hi - 10), (-(1 << 20), 1 << 20)):
        attrs = norm("int_max_pool2d", {"pool_size": list(size), "strides": list(strides),
                                        "padding": padding, "pads": list(pads),
                                        "act_min": amin, "act_max": amax})
        want = kpool.max_pool_plain([x], {}, attrs)
        for xi in narrow_inputs(x, adt):
            for dtype in (None, np.int64):
                y, _ = kpool.max_pool_narrow([xi], {}, attrs, {}, dtype)
                np.testing.assert_array_equal(y, want)
                assert y.dtype == (act_dtype(attrs) if dtype is None else dtype)


def test_every_narrow_kernel_takes_a_memo():
    assert set(NARROW) <= set(INT_REGISTRY)
    assert {"int_conv2d", "int_dense", "int_requantize", "int_add", "int_pad", "int_concat",
            "int_quantize"} <= set(NARROW)


# ---- run_int: the narrow, threaded forward against the traced plain one -------------------------
@pytest.fixture(scope="module")
def tiny_int_graphs():
    """The benchmark architectures at 32x32, BN folded, per-channel W8A8, lowered per profile."""
    import sys
    from pathlib import Path

    from refq.algorithms import fold_batch_norms
    from refq.fixedpoint.lowering import lower
    from refq.quant.quantsim import QuantSim

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from architectures import ARCHITECTURES

    rng = np.random.default_rng(3)
    graphs = {}
    for name in sorted(ARCHITECTURES):
        folded, _ = fold_batch_norms(ARCHITECTURES[name].build(resolution=32))
        sim = QuantSim(folded, "per_channel")
        sim.compute_encodings([rng.standard_normal((4, 32, 32, 3)).astype(np.float32)])
        for profile in PROFILE_NAMES:
            graphs[name, profile] = lower(sim, profile) if profile != "reference" else \
                faithful_graph(sim)
    return graphs


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_run_int_narrow_threaded_equals_traced_plain(tiny_int_graphs, profile, monkeypatch):
    import refq.fixedpoint.run as R

    x = np.random.default_rng(4).standard_normal((5, 32, 32, 3)).astype(np.float32) * 2
    for (name, prof), g in tiny_int_graphs.items():
        if prof != profile:
            continue
        traced, st_plain = R.run_int(g, x, trace=True)
        calls, real_map = [], parallel.map_threads   # the plan's chunks, on the threads
        monkeypatch.setattr(parallel, "map_threads",
                            lambda fn, items, workers: calls.append((len(items), workers))
                            or real_map(fn, items, workers))
        out, st = R.run_int(g, x)
        monkeypatch.undo()
        assert calls == [(2, R.threads())]
        for t in g.outputs:
            assert out[t].dtype == traced[t].dtype
            np.testing.assert_array_equal(out[t], traced[t])
        assert st == st_plain and list(st) == list(st_plain)
        monkeypatch.setattr(R, "threads", lambda: 1)
        out1, st1 = R.run_int(g, x, batch_size=2)
        monkeypatch.undo()
        for t in g.outputs:
            np.testing.assert_array_equal(out1[t], traced[t])
        assert st1 == st_plain
        assert all(v.dtype == np.int64 for k, v in traced.items()
                   if k not in [i.name for i in g.inputs] and v.dtype.kind in "iu")


@pytest.mark.parametrize("adt, odt", [("int8", "int8"), ("uint8", "uint8"), ("int8", "int16")])
def test_add_narrow_over_several_blocks(adt, odt):
    """Inputs longer than a block, the output byte-sized (one lookup of s and y packed) or not:
    the definition's values and accumulator extremes."""
    rng = np.random.default_rng(11)
    lo, hi = ACT[adt]
    olo, ohi = ACT[odt]
    a, b = (rng.integers(lo, hi + 1, size=(3, 250_000)) for _ in range(2))
    a[2, -1], b[2, -1] = hi, hi        # the largest sum in the last block
    params = add_params(0.02, 0.05, 0.04, "tflite_double")
    attrs = norm("int_add", {"a_zp": 3, "b_zp": -1, "output_zp": 5, "act_min": olo,
                             "act_max": ohi, "scheme": "tflite_double", "add": "tflite"})
    want = INT_REGISTRY["int_add"].accumulate([a, b], params, attrs)
    got = kadd.add_narrow([a.astype(adt), b.astype(adt)], params, attrs, {})
    assert got[0].dtype == np.dtype(odt)
    same(got, want)
