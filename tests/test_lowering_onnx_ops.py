"""int_conv_transpose2d and int_matmul against naive Python-integer loops (tolerance 0), and the
lowering of conv_transpose2d, gemm and matmul from a QuantSim and from explicit parameters: the
integer graph under a float requantization profile equals the integer-faithful simulation bit
for bit, every shipped profile stays within 1 LSB per requantization of it, and the per-profile
matmul requantization matches each target's definition."""
from __future__ import annotations

import dataclasses
import json
from importlib import resources

import numpy as np
import pytest

import fixedpoint_kernel_refs as ref
from refq.errors import FixedPointError, ParamError, ShapeError
from refq.fixedpoint import PROFILES, get_profile
from refq.fixedpoint.compare import compare
from refq.fixedpoint.kernels import INT_REGISTRY, NARROW
from refq.fixedpoint.kernels import conv_transpose as kct
from refq.fixedpoint.kernels import matmul as kmm
from refq.fixedpoint.lowering import lower, lower_from_params
from refq.fixedpoint.run import REFERENCE, faithful_graph, run_int
from refq.graph import Graph, Node, TensorSpec
from refq.layers import REGISTRY
from refq.layers.conv_transpose import transpose_geometry
from refq.quant.config import parse_config
from refq.quant.encoding import quantize
from refq.quant.quantsim import QuantSim
from test_fixedpoint_kernels_conv import requant_params

f32 = np.float32
FLOAT_PROFILE = dataclasses.replace(REFERENCE, name="float-exact",
                                    activation_dtypes=("int8", "int16"))


# ---- int_conv_transpose2d against the definition -----------------------------------------------

def ct_acc_naive(x, w, bias, a):
    """The Definition of int_conv_transpose2d with Python ints: every input pixel scatters
    (x − input_zp)·(w − weight_zp) through the kernel into the full output, which is then read at
    offset (pt, pl) (pads and sizes from the float op's geometry)."""
    n_, h, wd, c = x.shape
    o_, kh, kw, cg = w.shape
    g = a["groups"]
    og = o_ // g
    (sh, sw), (dh, dw) = a["strides"], a["dilations"]
    pads, (hf, wf), (oh, ow), _ = transpose_geometry(x.shape, a, {"weight": w})
    full = [[[[0] * o_ for _ in range(wf)] for _ in range(hf)] for _ in range(n_)]
    for n in range(n_):
        for i in range(h):
            for j in range(wd):
                for o in range(o_):
                    grp = o // og
                    for u in range(kh):
                        for v in range(kw):
                            s = 0
                            for cc in range(cg):
                                s += (int(x[n, i, j, grp * cg + cc]) - a["input_zp"]) * \
                                     (int(w[o, u, v, cc]) - a["weight_zp"])
                            full[n][i * sh + u * dh][j * sw + v * dw][o] += s
    out = np.zeros((n_, oh, ow, o_), dtype=object)
    for n in range(n_):
        for p in range(oh):
            for q in range(ow):
                for o in range(o_):
                    r, t = p + pads[0], q + pads[2]
                    v = full[n][r][t][o] if 0 <= r < hf and 0 <= t < wf else 0
                    out[n, p, q, o] = v + (int(bias[o]) if bias is not None else 0)
    return out


CT_GEOMETRIES = [  # (H, W, C, O, kh, kw, attrs)
    (3, 4, 3, 4, 3, 3, {"strides": [2, 2]}),
    (3, 3, 4, 6, 2, 3, {"strides": [2, 1], "dilations": [1, 2], "groups": 2,
                        "padding": "explicit", "pads": [1, 0, 0, 2]}),
    (4, 3, 2, 3, 3, 2, {"strides": [2, 3], "output_padding": [1, 2], "padding": "same_upper"}),
    (3, 4, 3, 3, 3, 3, {"strides": [1, 2], "padding": "same_lower", "groups": 3}),
    (2, 3, 2, 2, 2, 2, {"strides": [3, 2], "output_shape": [7, 5]}),   # pads from output_shape
    (2, 2, 3, 2, 3, 3, {"strides": [1, 1], "output_shape": [6, 4]}),   # negative pads: bias only
]
CT_ENCODINGS = [  # (act dtype range, input_zp, weight range, weight_zp, scheme, zp_before, act)
    ((-128, 127), -128, (-127, 127), 0, "tflite_double", False, (-128, 127)),
    ((-128, 127), 7, (-7, 7), 0, "single_round", False, (-3, 127)),
    ((0, 255), 200, (0, 255), 128, "float_rne", True, (0, 255)),
    ((-128, 127), -5, (-127, 127), 3, "tosa_double", False, (-128, 90)),
    ((-32768, 32767), 0, (-127, 127), 0, "float32_rne", False, (-32768, 32767)),
    ((-128, 127), 1, (-127, 127), 0, "float_half_away", False, (-128, 127)),
]


def ct_case(seed, geo, enc, bias=True):
    h, wd, c, o, kh, kw, geo_attrs = geo
    (lo, hi), izp, (wlo, whi), wzp, scheme, zpb, (amin, amax) = enc
    rng = np.random.default_rng(seed)
    g = geo_attrs.get("groups", 1)
    x = rng.integers(lo, hi + 1, (2, h, wd, c)).astype(np.int64)
    w = rng.integers(wlo, whi + 1, (o, kh, kw, c // g)).astype(np.int64)
    params = {"weight": w}
    if bias:
        params["bias"] = rng.integers(-5000, 5001, o).astype(np.int64)
    k = kh * kw * c // g
    base = 100.0 / (np.sqrt(k) * (hi - lo) * max(whi - wlo, 1) / 8.0 + 1.0)
    reals = base * np.array([1.0, 0.5, 2.0 ** np.round(np.log2(base)) / base, 4.0, 1.3, 0.77])[
        np.arange(o) % 6]
    params.update(requant_params(scheme, reals))
    op = INT_REGISTRY["int_conv_transpose2d"]
    attrs = op.normalise_attrs(dict(geo_attrs, input_zp=izp, weight_zp=wzp, output_zp=3 if
                                    amin < 0 else 100, act_min=amin, act_max=amax, scheme=scheme,
                                    zp_before_round=zpb), "int_conv_transpose2d")
    return x, params, attrs


@pytest.mark.parametrize("gi", range(len(CT_GEOMETRIES)))
@pytest.mark.parametrize("ei", range(len(CT_ENCODINGS)))
def test_int_conv_transpose2d_is_the_definition(gi, ei):
    x, params, attrs = ct_case(100 * gi + ei, CT_GEOMETRIES[gi], CT_ENCODINGS[ei],
                               bias=(gi + ei) % 3 != 0)
    op = INT_REGISTRY["int_conv_transpose2d"]
    want_acc = ct_acc_naive(x, params["weight"], params.get("bias"), attrs)
    acc, bounds = kct.conv_transpose_accumulator(x, params, attrs)
    np.testing.assert_array_equal(np.asarray(acc).astype(np.int64), want_acc.astype(np.int64))
    assert bounds == (int(want_acc.min()), int(want_acc.max()))
    want = ref.finish(want_acc, params, attrs)
    y, big = op.accumulate([x], params, attrs)
    np.testing.assert_array_equal(y, want)
    assert int(big) == max(abs(int(want_acc.min())), abs(int(want_acc.max())))
    np.testing.assert_array_equal(kct.conv_transpose_plain([x], params, attrs)[0], want)
    memo = {}
    for _ in range(2):   # the second call reads the memo
        yn, _ = NARROW["int_conv_transpose2d"]([x.astype(np.int16)], params, attrs, memo=memo)
        np.testing.assert_array_equal(yn, want)
    assert y.shape == REGISTRY["conv_transpose2d"].infer_shape(
        [x.shape], {k: attrs[k] for k in kct._GEOMETRY}, params)


def test_int_conv_transpose2d_float64_and_int64_paths_are_exact(monkeypatch):
    """int16 inputs push the bound past 2^24 (float64 path); with the BLAS dtypes turned off
    the int64 scatter gives the same integers."""
    geo = (3, 3, 8, 4, 3, 3, {"strides": [2, 2], "padding": "same_upper"})
    enc = ((-32768, 32767), -32768, (-127, 127), 0, "tflite_double", False, (-128, 127))
    x, params, attrs = ct_case(7, geo, enc)
    want_acc = ct_acc_naive(x, params["weight"], params["bias"], attrs).astype(np.int64)
    acc, _ = kct.conv_transpose_accumulator(x, params, attrs)
    assert acc.dtype == np.float64
    np.testing.assert_array_equal(acc.astype(np.int64), want_acc)
    monkeypatch.setattr(kct, "blas_dtype", lambda bound, depthwise: None)
    acc, _ = kct.conv_transpose_accumulator(x, params, attrs)
    assert acc.dtype == np.int64
    np.testing.assert_array_equal(acc, want_acc)


def test_int_conv_transpose2d_overflow_policies():
    geo = (2, 2, 8, 2, 2, 2, {"strides": [1, 1]})
    enc = ((-32768, 32767), -32768, (127, 127), 0, "tflite_double", False, (-128, 127))
    x, params, attrs = ct_case(3, geo, enc, bias=False)
    x[:] = 32767
    op = INT_REGISTRY["int_conv_transpose2d"]
    a = dict(attrs, accumulator_bits=24)
    with pytest.raises(FixedPointError, match=r"accumulator.*index"):
        op.accumulate([x], params, a)
    want = ref.finish(ct_acc_naive(x, params["weight"], None, a), params, a, bits=24, pol="wrap")
    np.testing.assert_array_equal(op.accumulate([x], params, dict(a, overflow="wrap"))[0], want)


# ---- int_matmul against the definition ---------------------------------------------------------

def mm_acc_naive(a, b, az, bz):
    """Σ_k (a − a_zp)(b − b_zp) with Python ints, leading axes broadcast (size-1 stretched)."""
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    out = np.zeros(lead + (a.shape[-2], b.shape[-1]), dtype=object)
    for idx in np.ndindex(lead):
        ia = tuple(i if s > 1 else 0 for i, s in zip(idx, a.shape[:-2]))
        ib = tuple(i if s > 1 else 0 for i, s in zip(idx, b.shape[:-2]))
        for i in range(a.shape[-2]):
            for j in range(b.shape[-1]):
                out[idx + (i, j)] = sum((int(a[ia + (i, k)]) - az) * (int(b[ib + (k, j)]) - bz)
                                        for k in range(a.shape[-1]))
    return out


MM_CASES = [  # (a shape, b shape, range, a_zp, b_zp, scheme, zp_before, act)
    ((2, 3, 4), (2, 4, 5), (-128, 127), -3, 10, "tflite_double", False, (-128, 127)),
    ((2, 1, 3, 6), (2, 4, 6, 2), (-128, 127), -128, 127, "single_round", False, (-20, 127)),
    ((2, 3, 5), (2, 5, 3), (0, 255), 128, 3, "float_rne", True, (0, 255)),
    ((2, 2, 3, 4), (2, 1, 4, 3), (-128, 127), 0, 0, "tosa_double", False, (-128, 127)),
    ((2, 4, 7), (2, 7, 2), (0, 255), 0, 255, "float32_rne", False, (0, 255)),
    ((2, 3, 50), (2, 50, 2), (-3000, 3000), 5, -7, "float_half_away", False,   # float64 path
     (-32768, 32767)),
]


@pytest.mark.parametrize("case", MM_CASES)
def test_int_matmul_is_the_definition(case):
    sa, sb, (lo, hi), az, bz, scheme, zpb, (amin, amax) = case
    rng = np.random.default_rng(sum(sa) + sum(sb))
    a = rng.integers(lo, hi + 1, sa).astype(np.int64)
    b = rng.integers(lo, hi + 1, sb).astype(np.int64)
    k = sa[-1]
    params = requant_params(scheme, [60.0 / (np.sqrt(k) * (hi - lo) ** 2 / 8)])
    op = INT_REGISTRY["int_matmul"]
    attrs = op.normalise_attrs({"a_zp": az, "b_zp": bz, "output_zp": 1 if amin < 0 else 9,
                                "act_min": amin, "act_max": amax, "scheme": scheme,
                                "zp_before_round": zpb}, "int_matmul")
    want_acc = mm_acc_naive(a, b, az, bz)
    acc, bounds = kmm.matmul_accumulator(a, b, attrs)
    assert acc.dtype == (np.float64 if hi > 255 else np.float32)
    np.testing.assert_array_equal(acc.astype(np.int64), want_acc.astype(np.int64))
    assert bounds == (int(want_acc.min()), int(want_acc.max()))
    want = ref.finish(want_acc, params, attrs)
    y, big = op.accumulate([a, b], params, attrs)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(kmm.matmul_plain([a, b], params, attrs)[0], want)
    yn, _ = NARROW["int_matmul"]([a.astype(np.int32), b.astype(np.int32)], params, attrs, memo={})
    np.testing.assert_array_equal(yn, want)
    assert y.shape == REGISTRY["matmul"].infer_shape([sa, sb], {}, {})


def test_int_matmul_errors():
    op = INT_REGISTRY["int_matmul"]
    attrs = op.normalise_attrs({"act_min": -128, "act_max": 127, "scheme": "float_rne"}, "m")
    a = np.zeros((1, 2, 3), np.int64)
    with pytest.raises(ParamError, match="needs parameter 'real_multiplier'"):
        op.infer_shape([a.shape, (1, 3, 2)], attrs, {"multiplier": np.ones(1, np.int32)})
    with pytest.raises(ShapeError, match="differs"):
        op.infer_shape([a.shape, (1, 2, 2)], attrs, {"real_multiplier": np.ones(1)})
    with pytest.raises(ParamError, match=r"shape \[2\]"):
        op.infer_shape([a.shape, (1, 3, 2)], attrs, {"real_multiplier": np.ones(2)})
    with pytest.raises(FixedPointError, match="integer tensor"):
        op.forward([a.astype(np.float64), a.reshape(1, 3, 2)], {"real_multiplier": np.ones(1)},
                   attrs)


# ---- lowering from a QuantSim ------------------------------------------------------------------

def cfg(name="per_channel"):
    p = resources.files("refq.quant").joinpath("configs", f"default_{name}.json")
    return parse_config(json.loads(p.read_text(encoding="utf-8")), source=f"<{name} test>")


def onnx_ops_graph(seed=0, trans_b=0):
    """conv_transpose2d + relu (the [ConvTranspose, Relu] supergroup) -> reshape -> matmul of the
    activation with itself -> flatten -> gemm (transB given, beta 0.5, bias [1, P])."""
    r = np.random.default_rng(seed)
    wg = r.normal(0, 0.1, (256, 5) if trans_b == 0 else (5, 256)).astype(f32)
    nodes = [
        Node("ct", "conv_transpose2d", ["x"], ["ct"], {"strides": [2, 2], "padding": "same_upper"},
             {"weight": r.normal(0, 0.4, (4, 3, 3, 3)).astype(f32),
              "bias": r.normal(0, 0.2, 4).astype(f32)}),
        Node("r1", "relu", ["ct"], ["r1"]),
        Node("rs", "reshape", ["r1"], ["rs"], {"shape": [16, 16]}),
        Node("mm", "matmul", ["rs", "rs"], ["mm"]),
        Node("fl", "flatten", ["mm"], ["fl"]),
        Node("g", "gemm", ["fl"], ["g"], {"transB": trans_b, "beta": 0.5},
             {"weight": wg, "bias": r.normal(0, 0.2, (1, 5)).astype(f32)}),
    ]
    return Graph([TensorSpec("x", (None, 4, 4, 3))], ["g"], nodes, name=f"onnx_ops{trans_b}")


def data(n=8, seed=3):
    return np.random.default_rng(seed).normal(0, 1, (n, 4, 4, 3)).astype(f32)


@pytest.fixture(scope="module", params=[0, 1])
def sim(request):
    return QuantSim(onnx_ops_graph(trans_b=request.param), cfg()).compute_encodings(data(16))


def test_structure_weights_and_biases_are_the_sims(sim):
    g = lower(sim, "tflite")
    ops = {n.name: n.op for n in g.nodes}
    assert (ops["ct"], ops["mm"], ops["g"]) == ("int_conv_transpose2d", "int_matmul", "int_dense")
    assert "r1" not in ops and g.meta["integer"]["fused"] == {"ct": "r1"}
    src = {n.name: n for n in sim.graph.nodes}
    s_x = np.float64(sim.encodings["x"].scale)
    ct, w_enc = g.node("ct"), sim.encodings["ct.weight"]
    assert w_enc.axis == 0 and w_enc.scale.shape == (4,)
    assert np.array_equal(ct.params["weight"], quantize(src["ct"].params["weight"], w_enc,
                                                        sim.numerics))
    want = np.rint(src["ct"].params["bias"].astype(np.float64) / (s_x * w_enc.scale.astype(
        np.float64)))
    assert np.array_equal(ct.params["bias"], want.astype(np.int32))
    assert ct.attrs["strides"] == [2, 2] and ct.attrs["padding"] == "same_upper"
    assert ct.attrs["act_min"] == g.meta["integer"]["tensors"]["r1"]["zero_point"]
    # gemm: codes on dense's [P, K], per output column, bias = beta·C
    gn, g_enc = g.node("g"), sim.encodings["g.weight"]
    trans_b = src["g"].attrs["transB"]
    assert g_enc.axis == (0 if trans_b else 1) and g_enc.scale.shape == (5,)
    codes = quantize(src["g"].params["weight"], g_enc, sim.numerics)
    assert np.array_equal(gn.params["weight"], codes if trans_b else codes.T)
    s_in = np.float64(g.meta["integer"]["tensors"]["fl"]["scale"])
    want = np.rint(0.5 * src["g"].params["bias"].astype(np.float64).ravel()
                   / (s_in * g_enc.scale.astype(np.float64)))
    assert np.array_equal(gn.params["bias"], want.astype(np.int32))
    assert gn.params["multiplier"].shape == (5,) and gn.attrs["scheme"] == "float_half_away"
    # matmul: both zero points, one multiplier by the per-tensor FC scale math
    mm, t = g.node("mm"), g.meta["integer"]["tensors"]
    assert (mm.attrs["a_zp"], mm.attrs["b_zp"]) == (t["rs"]["zero_point"],) * 2
    p = get_profile("tflite")
    m, s = p.derive_multiplier(p.real_multiplier(t["rs"]["scale"], t["rs"]["scale"],
                                                 t["mm"]["scale"], kind="fc_per_tensor"))
    assert (mm.params["multiplier"].tolist(), mm.params["shift"].tolist()) == \
        (np.atleast_1d(m).tolist(), np.atleast_1d(s).tolist())
    assert mm.attrs["scheme"] == "tflite_double"


def test_float_scheme_equals_the_faithful_simulation_bit_for_bit(sim):
    x = data(6, seed=11)
    ta, _ = run_int(lower(sim, FLOAT_PROFILE), {"x": x}, trace=True)
    tf, _ = run_int(faithful_graph(sim, like=FLOAT_PROFILE), {"x": x}, trace=True)
    assert ta.keys() == tf.keys()
    for k in ta:
        np.testing.assert_array_equal(ta[k], tf[k], err_msg=k)
    # and the faithful simulation is the QuantSim up to its output rounding
    ys = sim.run({"x": x})["g"]
    step = float(lower(sim, FLOAT_PROFILE).meta["integer"]["tensors"]["g:q"]["scale"])
    assert np.abs(ys - tf["g"]).max() < 4 * step


@pytest.mark.parametrize("name", tuple(PROFILES))
def test_every_profile_within_one_lsb_per_requantization(sim, name):
    rep = compare(sim, name, data(6, seed=12))
    rows = {r["node"]: r for r in rep["layers"]}
    for node in ("ct", "mm", "g"):
        assert rows[node]["within_bound"], (node, rows[node]["local"])
    if name in ("onnx", "ort", "tflite-single"):
        assert rep["summary"]["local_max_lsb"] <= 1


def test_matmul_requantization_per_profile():
    """int_matmul under onnx is ONNX's QLinearMatMul reference (float32 M, float64 product, zero
    point added before round half to even, clip), under ort onnxruntime's (float32 product, clamp,
    round half to even, + zp), under tflite TFLite's BATCH_MATMUL (Q31 multiplier of the per-tensor
    FC scale math, double rounding): each checked against that definition written out."""
    r = np.random.default_rng(4)
    a = r.integers(-128, 128, (3, 4, 6))
    b = r.integers(-128, 128, (3, 6, 5))
    sa, sb, so, az, bz, oz = 0.021, 0.037, 0.09, -7, 12, 5
    spec = {"inputs": [{"name": "a", "shape": [None, 4, 6], "scale": sa, "zero_point": az},
                       {"name": "b", "shape": [None, 6, 5], "scale": sb, "zero_point": bz}],
            "layers": [{"name": "mm", "op": "matmul", "inputs": ["a", "b"],
                        "output": {"scale": so, "zero_point": oz}}]}
    acc = (a - az) @ (b - bz)
    s32 = [float(f32(v)) for v in (sa, sb, so)]
    for name in ("onnx", "ort", "tflite", "tosa"):
        g = lower_from_params(spec, name)
        q, _ = run_int(g, {"a": (a.astype(np.float64) - az) * s32[0],
                           "b": (b.astype(np.float64) - bz) * s32[1]}, codes=False)
        got = np.rint(q["mm"] / s32[2]).astype(np.int64) + oz
        m32 = f32(f32(f32(sa) * f32(sb)) / f32(so))
        if name == "onnx":
            want = np.clip(np.rint(acc * np.float64(m32) + oz), -128, 127)
        elif name == "ort":
            v = np.clip(acc.astype(f32) * m32, f32(-128 - oz), f32(127 - oz))
            want = np.rint(v).astype(np.int64) + oz
        else:
            m, s = get_profile(name).derive_multiplier(s32[0] * s32[1] / s32[2])
            scheme = get_profile(name).requant
            want = np.vectorize(lambda v: ref.requant(int(v), int(m), int(s), scheme, oz, -128,
                                                      127))(acc)
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_gemm_alpha_and_lower_from_params_errors():
    g = onnx_ops_graph(trans_b=1)
    g.node("g").attrs["alpha"] = 2.0
    s = QuantSim(g, cfg()).compute_encodings(data(4))
    with pytest.raises(FixedPointError, match=r"node 'g' \(gemm\).*alpha = 2.0.*fold alpha"):
        lower(s, "tflite")
    w = np.ones((6, 3), np.int8)   # B [K = 6, P = 3], transB = 0
    spec = {"inputs": [{"name": "x", "shape": [None, 6], "scale": 0.1}],
            "layers": [{"name": "g", "op": "gemm", "weight": w, "weight_scale": [0.1, 0.2, 0.3],
                        "bias": np.array([1, 2, 3], np.int32), "output": {"scale": 0.2}}]}
    ig = lower_from_params(spec, "tflite")
    assert ig.node("g").op == "int_dense" and ig.node("g").params["weight"].shape == (3, 6)
    bad = dict(spec, layers=[dict(spec["layers"][0], weight_scale=[0.1] * 6)])
    with pytest.raises(FixedPointError, match=r"weight_scale has 6 values.*or 3"):
        lower_from_params(bad, "tflite")
    bad = dict(spec, layers=[dict(spec["layers"][0], beta=0.5)])
    with pytest.raises(FixedPointError, match=r"'g' \(gemm\).*alpha = beta = 1"):
        lower_from_params(bad, "tflite")
    ct = {"inputs": [{"name": "x", "shape": [None, 2, 2, 2], "scale": 0.1}],
          "layers": [{"name": "ct", "op": "conv_transpose2d", "weight_scale": 0.1,
                      "weight": np.ones((3, 2, 2), np.int8), "output": {"scale": 0.2}}]}
    with pytest.raises(FixedPointError, match=r"'weight' must be 4-d \(\[out, kh, kw, in/gr"):
        lower_from_params(ct, "tflite")


def test_golden_cases_build_and_run_exactly():
    """Every case of refq.conformance.cases_integer_onnx_ops builds under each profile that
    supports it; its integer graph reproduces its outputs and trace when run again."""
    from refq.conformance import CASES
    from refq.conformance import cases_integer_onnx_ops as mod
    from refq.conformance.integer_graphs import run_integer
    ids = []
    for name, variant in mod.REGISTERED:
        mine = [c for c in CASES if c.startswith(f"integer.{name}.{variant}.")]
        assert mine, (name, variant)
        ids += mine
    ops = set()
    for cid in ids:
        d = CASES[cid].build()
        ops |= {n.op for n in d.graph.nodes}
        outputs, trace = run_integer(d.graph, d.inputs)
        for t in d.trace:
            np.testing.assert_array_equal(trace[t], d.trace[t], err_msg=f"{cid} {t}")
        assert d.quantization and all(np.all(np.isfinite(v)) for v in d.outputs.values())
    assert {"int_conv_transpose2d", "int_dense", "int_matmul", "int_avg_pool2d",
            "int_max_pool2d"} <= ops


# ---- integer pooling of rank 1-3 with dilations, ceil_mode, count_include_pad, same_lower -------

from fractions import Fraction  # noqa: E402

from refq.layers.pool_geometry import pool_geometry  # noqa: E402

POOLS = [  # (spatial, C, attrs)
    ((7,), 2, {"pool_size": [3], "strides": [2], "dilations": [2], "padding": "explicit",
               "pads": [1, 2], "count_include_pad": True}),
    ((6,), 3, {"pool_size": [2], "strides": [2], "ceil_mode": True, "padding": "explicit",
               "pads": [1, 0]}),
    ((5, 6), 2, {"pool_size": [3, 2], "strides": [2, 2], "padding": "same_lower"}),
    ((6, 5), 2, {"pool_size": [2, 3], "strides": [2, 1], "dilations": [2, 1],
                 "padding": "explicit", "pads": [1, 0, 1, 2], "count_include_pad": True}),
    ((6, 5), 3, {"pool_size": [3, 3], "strides": [2, 2], "ceil_mode": True}),
    ((4, 5, 3), 2, {"pool_size": [2, 3, 2], "strides": [2, 1, 1], "padding": "same"}),
    ((5, 4, 4), 1, {"pool_size": [2, 2, 3], "strides": [2, 2, 1], "ceil_mode": True,
                    "padding": "explicit", "pads": [0, 1, 1, 0, 1, 1],
                    "count_include_pad": True}),
]


def windows(spatial, a):
    """{output index: [(tap position in the input or None for a padded tap, counted)]} by the
    module docstring of refq.fixedpoint.kernels.pool_nd, from the float pool's geometry."""
    full = {"dilations": [1] * len(spatial), "ceil_mode": False, "padding": "valid",
            "pads": [0] * 2 * len(spatial), "count_include_pad": False, **a}
    sides, outs, _ = pool_geometry(spatial, full, "test")
    out = {}
    for idx in np.ndindex(*outs):
        taps = []
        for u in np.ndindex(*full["pool_size"]):
            pos = [i * s + k * d - b for i, s, k, d, (b, _) in
                   zip(idx, full["strides"], u, full["dilations"], sides)]
            inside = all(0 <= p < n for p, n in zip(pos, spatial))
            in_pad = all(-b <= p < n + e for p, n, (b, e) in zip(pos, spatial, sides))
            if inside:
                taps.append((tuple(pos), True))
            elif in_pad and full["count_include_pad"]:
                taps.append((None, True))
        out[idx] = taps
    return out


def avg_attrs(r, a, mode, izp, ozp, lo=-128, hi=127):
    op = INT_REGISTRY[f"int_avg_pool{r}d"]
    return op, op.normalise_attrs(dict(a, input_zp=izp, output_zp=ozp, act_min=lo, act_max=hi,
                                       avg=mode), f"int_avg_pool{r}d")


@pytest.mark.parametrize("pi", range(len(POOLS)))
@pytest.mark.parametrize("mode", ["tflite", "tosa", "float"])
def test_int_avg_pool_nd_is_the_definition(pi, mode):
    spatial, c, a = POOLS[pi]
    if mode != "float" and a.get("count_include_pad"):
        op, attrs = avg_attrs(len(spatial), a, mode, 3, -2)
        with pytest.raises(FixedPointError, match="count_include_pad"):
            op.forward([np.zeros((1, *spatial, c), np.int64)], {}, attrs)
        return
    r = len(spatial)
    rng = np.random.default_rng(pi)
    x = rng.integers(-128, 128, (2, *spatial, c))
    x[0, ..., 0] = 5   # constant windows: exact ties of sums / 2 and / 4
    izp, ozp, m = (-7, 4, 0.8125)
    op, attrs = avg_attrs(r, a, mode, izp, ozp)
    params = {"real_multiplier": np.array([m])} if mode == "float" else {}
    got = op.forward([x], params, attrs)
    win = windows(spatial, a)
    assert got.shape == (2, *next(iter([np.array(list(win)).max(0) + 1])), c)
    for n in range(2):
        for idx, taps in win.items():
            for ch in range(c):
                vals = [int(x[(n, *p, ch)]) if p is not None else izp for p, _ in taps]
                cnt = len(vals)
                if mode == "tflite":
                    v = ref.round_half_away(Fraction(sum(vals), cnt)) - izp + ozp
                elif mode == "tosa":
                    mult, sh = ref.reciprocal_scale(cnt)
                    v = ref.apply_scale_32(sum(vals) - cnt * izp, mult, sh, False) + ozp
                else:
                    v = round(float(sum(vals) - cnt * izp) / cnt * m) + ozp
                assert got[(n, *idx, ch)] == max(-128, min(127, v)), (n, idx, ch)


@pytest.mark.parametrize("pi", range(len(POOLS)))
def test_int_max_pool_nd_is_the_definition(pi):
    spatial, c, a = POOLS[pi]
    a = {k: v for k, v in a.items() if k != "count_include_pad"}
    r = len(spatial)
    x = np.random.default_rng(pi).integers(-128, 128, (2, *spatial, c))
    op = INT_REGISTRY[f"int_max_pool{r}d"]
    attrs = op.normalise_attrs(dict(a, act_min=-100, act_max=90), "max")
    got = op.forward([x], {}, attrs)
    narrow, _ = NARROW[f"int_max_pool{r}d"]([x.astype(np.int8)], {}, attrs)
    np.testing.assert_array_equal(narrow, got)
    for idx, taps in windows(spatial, a).items():
        want = np.max([x[(slice(None), *p)] for p, _ in taps if p is not None], axis=0)
        np.testing.assert_array_equal(got[(slice(None), *idx)], np.clip(want, -100, 90))


def _onnx_qdq_avg_pool(x_nchw, s_in, zp_in, s_out, zp_out, a, dtype):
    """onnx.reference on DequantizeLinear -> AveragePool (opset 21) -> QuantizeLinear."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    r = x_nchw.ndim - 2
    t = {np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8}[dtype]
    kw = {"kernel_shape": a["pool_size"], "strides": a["strides"],
          "dilations": a.get("dilations", [1] * r), "ceil_mode": int(a.get("ceil_mode", False)),
          "count_include_pad": int(a.get("count_include_pad", False))}
    pad = a.get("padding", "valid")
    if pad in ("explicit", "valid"):   # onnx.reference takes ceil_mode with explicit pads only
        p = a.get("pads", [0] * 2 * r)
        kw["pads"] = [p[2 * i] for i in range(r)] + [p[2 * i + 1] for i in range(r)]
    else:
        kw["auto_pad"] = {"valid": "VALID", "same": "SAME_UPPER", "same_lower": "SAME_LOWER"}[pad]
    inits = [helper.make_tensor("si", TensorProto.FLOAT, [], [s_in]),
             helper.make_tensor("zi", t, [], [zp_in]),
             helper.make_tensor("so", TensorProto.FLOAT, [], [s_out]),
             helper.make_tensor("zo", t, [], [zp_out])]
    nodes = [helper.make_node("DequantizeLinear", ["x", "si", "zi"], ["d"]),
             helper.make_node("AveragePool", ["d"], ["p"], **kw),
             helper.make_node("QuantizeLinear", ["p", "so", "zo"], ["y"])]
    g = helper.make_graph(nodes, "qdq_pool", [helper.make_tensor_value_info("x", t, None)],
                          [helper.make_tensor_value_info("y", t, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    return ReferenceEvaluator(m).run(None, {"x": x_nchw})[0]


@pytest.mark.parametrize("pi", range(len(POOLS)))
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_int_avg_pool_qdq_is_onnx_reference_bit_for_bit(pi, dtype):
    """avg "qdq" against onnx.reference's QDQ AveragePool, ranks 1-3, every new attribute
    (ceil_mode cases whose extra padding is at most 1: onnx.reference 1.23 shifts the input by
    half of a larger one, which the ONNX spec does not)."""
    spatial, c, a = POOLS[pi]
    r = len(spatial)
    lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
    rng = np.random.default_rng(10 + pi)
    x = rng.integers(lo, int(hi) + 1, (2, *spatial, c))
    x[1, ..., 0] = lo + 3
    izp, ozp = (3, -5) if dtype == np.int8 else (130, 120)
    s_in, s_out = 0.0371, 0.029
    op, attrs = avg_attrs(r, a, "qdq", izp, ozp, lo, hi)
    params = {"in_scale": np.array([s_in]), "out_scale": np.array([s_out])}
    got = op.forward([x], params, attrs)
    want = _onnx_qdq_avg_pool(np.moveaxis(x, -1, 1).astype(dtype), s_in, izp, s_out, ozp, a,
                              dtype)
    np.testing.assert_array_equal(got, np.moveaxis(want, 1, -1).astype(np.int64))


@pytest.mark.parametrize("pi", range(len(POOLS)))
def test_int_avg_pool_ort_is_its_transcription(pi):
    """avg "ort" against a loop transcription of onnxruntime's QLinearAveragePool arithmetic
    (float32 dequantize, sequential float32 sum over the window in row-major order, / count,
    nearbyintf(m / s_out + zp_out), clamp; with count_include_pad the count is the whole kernel,
    as onnxruntime 1.32 was measured to divide, test_pools_match_onnxruntime_bit_for_bit)."""
    spatial, c, a = POOLS[pi]
    r = len(spatial)
    rng = np.random.default_rng(20 + pi)
    x = rng.integers(-128, 128, (1, *spatial, c))
    izp, ozp, s_in, s_out = -3, 6, f32(0.0371), f32(0.029)
    op, attrs = avg_attrs(r, a, "ort", izp, ozp)
    got = op.forward([x], {"in_scale": np.array([s_in]), "out_scale": np.array([s_out])}, attrs)
    for idx, taps in windows(spatial, a).items():
        for ch in range(c):
            acc = f32(0)
            for p, _ in taps:
                if p is not None:
                    acc = f32(acc + f32(f32(x[(0, *p, ch)] - izp) * s_in))
            # with count_include_pad onnxruntime divides by the whole kernel (overhang too)
            cnt = int(np.prod(a["pool_size"])) if a.get("count_include_pad") else len(taps)
            m = f32(acc / f32(cnt))
            v = int(np.rint(f32(f32(m / s_out) + f32(ozp))))
            assert got[(0, *idx, ch)] == max(-128, min(127, v)), (idx, ch)


# ---- lowering of 1-D / 3-D pools, global_max_pool2d and round (their op records name a family) --

def _lowers(*ops):
    return pytest.mark.skipif(any(REGISTRY[o].traits.lowering is None for o in ops),
                              reason=f"the records of {ops} name no lowering family")


def _sim_of(nodes, shape, x):
    g = Graph([TensorSpec("x", (None,) + shape)], [nodes[-1].outputs[0]], nodes)
    return QuantSim(g, cfg()).compute_encodings(x)


def _faithful_and_compare(sim, x, names=tuple(PROFILES)):
    ta, _ = run_int(lower(sim, FLOAT_PROFILE), {"x": x}, trace=True)
    tf, _ = run_int(faithful_graph(sim, like=FLOAT_PROFILE), {"x": x}, trace=True)
    for k in ta:
        np.testing.assert_array_equal(ta[k], tf[k], err_msg=k)
    for name in names:
        rep = compare(sim, name, x)
        assert all(r["within_bound"] for r in rep["layers"]), (name, rep["layers"])
    return tf


@_lowers("avg_pool1d", "max_pool1d", "avg_pool3d", "max_pool3d")
def test_rank_1_and_3_pools_lower_per_profile():
    rng = np.random.default_rng(6)
    x1 = rng.normal(0, 1, (8, 9, 3)).astype(f32)
    sim1 = _sim_of([Node("a", "avg_pool1d", ["x"], ["a"], {"pool_size": [3], "strides": [2],
                                                           "padding": "same"}),
                    Node("m", "max_pool1d", ["a"], ["m"], {"pool_size": [2], "strides": [1]})],
                   (9, 3), x1)
    for name in PROFILES:   # every profile defines 1-D pooling (its 2-D kernel on [N, 1, L, C])
        ig = lower(sim1, name)
        assert (ig.node("a").op, ig.node("m").op) == ("int_avg_pool1d", "int_max_pool1d")
    _faithful_and_compare(sim1, x1)
    x3 = rng.normal(0, 1, (4, 4, 5, 4, 2)).astype(f32)
    sim3 = _sim_of([Node("a", "avg_pool3d", ["x"], ["a"], {
        "pool_size": [2, 2, 2], "strides": [1, 2, 1], "ceil_mode": True,
        "count_include_pad": True, "padding": "explicit", "pads": [1, 0, 0, 1, 1, 0]})],
        (4, 5, 4, 2), x3)
    for name in ("tflite", "tosa", "cmsis-nn"):
        with pytest.raises(FixedPointError, match=rf"node 'a' \(avg_pool3d\).*spatial rank.*3d"
                                                  rf".*profile '{name}'"):
            lower(sim3, name)
    _faithful_and_compare(sim3, x3, ("onnx", "ort"))


@_lowers("global_max_pool2d")
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_max_pool_is_exact_on_the_grid(keepdims):
    x = data(6, seed=8)
    r = np.random.default_rng(1)
    sim = _sim_of([Node("c", "conv2d", ["x"], ["c"], {},
                        {"weight": r.normal(0, .4, (5, 1, 1, 3)).astype(f32)}),
                   Node("gm", "global_max_pool2d", ["c"], ["gm"], {"keepdims": keepdims})],
                  (4, 4, 3), x)
    ig = lower(sim, "tflite")
    assert ig.node("gm").op == "int_max_pool2d" and ig.node("gm").attrs["pool_size"] == [4, 4]
    t, _ = run_int(ig, {"x": x}, trace=True)
    pooled = t[ig.node("gm").outputs[0]]   # the maximum of the codes, on the input's grid
    np.testing.assert_array_equal(pooled, t[ig.node("gm").inputs[0]].max(axis=(1, 2),
                                                                          keepdims=True))
    assert t[ig.meta["integer"]["float_tensors"]["gm"]].shape == ((6, 1, 1, 5) if keepdims
                                                                   else (6, 5))
    _faithful_and_compare(sim, x)


@_lowers("round")
def test_round_lowers_to_a_table_of_every_code():
    """round is not grid-preserving (its integers lie on the input grid only for special
    scales): a table q -> quantize(round(dequantize(q))) per the profile's float scheme."""
    x = data(6, seed=9) * 3
    r = np.random.default_rng(2)
    sim = _sim_of([Node("c", "conv2d", ["x"], ["c"], {},
                        {"weight": r.normal(0, .6, (4, 1, 1, 3)).astype(f32)}),
                   Node("rd", "round", ["c"], ["rd"])], (4, 4, 3), x)
    for name in PROFILES:
        ig = lower(sim, name)
        assert ig.node("rd").op == "int_lut"
    tf = _faithful_and_compare(sim, x)
    # the faithful table is round in float64 of every input code, quantized half to even
    ig = lower(sim, FLOAT_PROFILE)
    t = ig.meta["integer"]["tensors"]
    q_in, q_out = t["c"], t["rd:q"]
    codes = np.arange(q_in["qmin"], q_in["qmax"] + 1)
    real = np.round((codes - q_in["zero_point"]) * np.float64(q_in["scale"]))
    want = np.clip(np.rint(real / np.float64(q_out["scale"])) + q_out["zero_point"],
                   q_out["qmin"], q_out["qmax"])
    np.testing.assert_array_equal(ig.node("rd").params["table"], want)
    assert tf["rd"].shape == (6, 4, 4, 4)


ORT_POOLS = __import__("os").path.join(__import__("os").path.dirname(__file__), "data",
                                       "ort_onnx_ops", "pools.npz")


def _ort_pool_cases():
    with np.load(ORT_POOLS, allow_pickle=False) as d:
        return json.loads(str(d["cases"]))


@pytest.mark.parametrize("case", sorted(_ort_pool_cases()))
def test_pools_match_onnxruntime_bit_for_bit(case):
    """int_avg_pool{r}d "ort" against onnxruntime's QLinearAveragePool and int_max_pool{r}d
    against its int8 MaxPool, with dilations (max), ceil_mode, count_include_pad, SAME_LOWER
    and ranks 1-3 (tests/data/ort_onnx_ops, made by make_ort_data.py with onnxruntime)."""
    meta = _ort_pool_cases()[case]
    with np.load(ORT_POOLS, allow_pickle=False) as d:
        x, want = d[f"x_{case}"].astype(np.int64), d[f"y_{case}"].astype(np.int64)
    op = INT_REGISTRY["int_" + meta["op"]]
    if meta["op"].startswith("avg"):
        attrs = op.normalise_attrs(dict(meta["attrs"], input_zp=meta["in_zp"],
                                        output_zp=meta["out_zp"], act_min=-128, act_max=127,
                                        avg="ort"), case)
        params = {"in_scale": np.array([meta["in_scale"]]),
                  "out_scale": np.array([meta["out_scale"]])}
    else:
        attrs = op.normalise_attrs(dict(meta["attrs"], act_min=-128, act_max=127), case)
        params = {}
    np.testing.assert_array_equal(op.forward([x], params, attrs), want)


ORT_MATMUL = ORT_POOLS.replace("pools.npz", "matmul.npz")


def _ort_matmul_cases():
    with np.load(ORT_MATMUL, allow_pickle=False) as d:
        return json.loads(str(d["cases"]))


def _qlinear_matmul_reference(a, b, e, dt):
    """onnx.reference's QLinearMatMul of codes a, b (scales and zero points e)."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator
    tp = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8}[dt]
    inits = []
    for key in ("a", "b", "y"):
        inits += [helper.make_tensor(f"s{key}", TensorProto.FLOAT, [], [e[key][0]]),
                  helper.make_tensor(f"z{key}", tp, [], [e[key][1]])]
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"],
                            ["y"])
    g = helper.make_graph([node], "mm", [helper.make_tensor_value_info("a", tp, None),
                                         helper.make_tensor_value_info("b", tp, None)],
                          [helper.make_tensor_value_info("y", tp, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    return ReferenceEvaluator(m).run(None, {"a": a, "b": b})[0]


@pytest.mark.parametrize("case", sorted(_ort_matmul_cases()))
def test_int_matmul_is_qlinear_matmul_of_onnxruntime_and_onnx_reference(case):
    """matmul lowered under "ort" gives onnxruntime's QLinearMatMul codes (tests/data/
    ort_onnx_ops/matmul.npz, both operands dynamic) and under "onnx" onnx.reference's, bit for
    bit, int8 and uint8, broadcast leading axes, power-of-two ties."""
    e = _ort_matmul_cases()[case]
    with np.load(ORT_MATMUL, allow_pickle=False) as d:
        a, b, y_ort = d[f"a_{case}"], d[f"b_{case}"], d[f"y_{case}"]
    dt = e["dtype"]

    def encoding(key):
        return {"scale": e[key][0], "zero_point": e[key][1], "dtype": dt}
    spec = {"inputs": [dict(encoding("a"), name="a", shape=[None, *a.shape[1:]]),
                       dict(encoding("b"), name="b", shape=[None, *b.shape[1:]])],
            "layers": [{"name": "mm", "op": "matmul", "inputs": ["a", "b"],
                        "output": encoding("y")}]}
    for profile, want in (("ort", y_ort), ("onnx", _qlinear_matmul_reference(a, b, e, dt))):
        out, _ = run_int(lower_from_params(spec, profile), {"a": a, "b": b}, codes=True)
        np.testing.assert_array_equal(out["mm"], want, err_msg=profile)


TFLITE_DATA = ORT_POOLS.replace("ort_onnx_ops", "tflite_onnx_ops").replace("pools.npz",
                                                                          "data.npz")


def test_tflite_profile_is_litert_batch_matmul_and_transpose_conv():
    """Under "tflite", matmul and conv_transpose2d give LiteRT's reference BATCH_MATMUL and
    TRANSPOSE_CONV int8 codes bit for bit (tests/data/tflite_onnx_ops, made by
    make_tflite_data.py with LiteRT's BUILTIN_REF kernels; weight codes, scales and bias as
    the converter wrote them)."""
    with np.load(TFLITE_DATA, allow_pickle=False) as d:
        data = {k: d[k] for k in d.files}
    quant = json.loads(str(data["quant"]))
    qm = quant["batch_matmul"]
    spec = {"inputs": [dict(qm["a"], name="a", shape=[None, 4, 6]),
                       dict(qm["b"], name="b", shape=[None, 6, 3])],
            "layers": [{"name": "mm", "op": "matmul", "inputs": ["a", "b"], "output": qm["y"]}]}
    out, _ = run_int(lower_from_params(spec, "tflite"),
                     {"a": data["x_mm_a"], "b": data["x_mm_b"]}, codes=True)
    np.testing.assert_array_equal(out["mm"], data["y_mm"])
    qc = quant["transpose_conv"]
    assert qc["weight_axis"] == 0 and not any(qc["weight_zero_point"])
    spec = {"inputs": [dict(qc["x"], name="x", shape=[None, 3, 3, 2])],
            "layers": [{"name": "ct", "op": "conv_transpose2d", "weight": data["w_ct"],
                        "weight_scale": qc["weight_scale"], "bias": data["b_ct"],
                        "strides": [2, 2], "padding": "valid", "output": qc["y"]}]}
    out, _ = run_int(lower_from_params(spec, "tflite"), {"x": data["x_ct"]}, codes=True)
    np.testing.assert_array_equal(out["ct"], data["y_ct"])


@pytest.mark.parametrize("op", ["gemm", "conv_transpose2d"])
def test_overflow_protection_covers_gemm_and_conv_transpose(op):
    """AIMET's overflow protection (aimet.md §0.2.5: QuantizedLinear, QuantizedConvTranspose*)
    widens the weight scale of a channel whose bias would leave int32, so that the lowering's
    bias fits; without it the lowering names the layer and channel."""
    r = np.random.default_rng(4)
    if op == "gemm":   # B [K, P] (transB = 0), bias [1, P] scaled by beta
        node = Node("w", "gemm", ["x"], ["y"], {"transB": 0, "beta": 2.0},
                    {"weight": r.normal(0, .3, (6, 4)).astype(f32),
                     "bias": np.array([[0.1, -0.2, 5e6, 0.3]], f32)})
        shape, xs = (6,), r.normal(0, 1, (16, 6)).astype(f32)
    else:
        node = Node("w", "conv_transpose2d", ["x"], ["y"], {"strides": [2, 2]},
                    {"weight": r.normal(0, .3, (4, 2, 2, 3)).astype(f32),
                     "bias": np.array([0.1, -0.2, 1e7, 0.3], f32)})
        shape, xs = (3, 3, 3), r.normal(0, 1, (16, 3, 3, 3)).astype(f32)
    g = Graph([TensorSpec("x", (None,) + shape)], ["y"], [node])
    with pytest.raises(FixedPointError, match=rf"node 'w' \({op}\): bias channel 2 .*int32"):
        lower(QuantSim(g, cfg(), overflow_protection=False).compute_encodings(xs), "tflite")
    s = QuantSim(g, cfg()).compute_encodings(xs)
    ig = lower(s, "tflite")
    bias = ig.node("w").params["bias"]
    assert 2 ** 30 < abs(int(bias[2])) < 2 ** 31   # widened to just below the int32 limit
    s_in = np.float64(s.encodings["x"].scale)
    b2 = 1e7 if op == "conv_transpose2d" else 2.0 * np.float64(f32(5e6))
    assert s.encodings["w.weight"].scale[2] >= f32(b2 / ((2 ** 31 - 2 ** 15) * s_in))
    np.testing.assert_allclose(run_int(ig, {"x": xs})[0]["y"][..., 2],
                               s.run({"x": xs})["y"][..., 2], rtol=1e-3, atol=1e-3 * b2)
