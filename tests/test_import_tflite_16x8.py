"""TFLite 16x8 models (int16 activations, int8 weights, int64 biases) against LiteRT's reference
kernels, the 16-bit-multiplier requantization against Python integers, the 16x8 kernels against
loop transcriptions of their definitions, and the operators refq refuses with int16 activations.

Expected tensors: tests/data/tflite_16x8/<model>.npz, made by make_expected.py beside them with
LiteRT's `OpResolverType.BUILTIN_REF` and every tensor preserved (`t<index>` = TFLite tensor
<index> for the images in `inputs`; the third image lies beyond the calibration range).
"""
import pathlib
from fractions import Fraction

import numpy as np
import pytest

import refq
from refq.cli import main
from refq.errors import FixedPointError, ParamError, UnsupportedLayerError
from refq.fixedpoint.kernels import INT_REGISTRY, NARROW
from refq.fixedpoint.kernels import conv16x8
from refq.fixedpoint.requantize16 import multiply_by_quantized_multiplier_64, reduce_multiplier_16
from refq.fixedpoint.run import run_int

pytest.importorskip("tflite")

from refq.importers.tflite import fold_constants, import_tflite, shape_only_ops  # noqa: E402
from refq.importers.tflite_int import integer_graph  # noqa: E402
from refq.importers.tflite_read import read_tflite  # noqa: E402
from expected_data import load_npz, same_bits  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parent / "data" / "tflite_16x8"
MODELS = ["cnn16", "gap16", "cat16"]


def _expected(name):
    return load_npz(DATA / f"{name}.npz")


_same = same_bits


# ---- the models, tensor by tensor -----------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_every_tensor_equals_litert_reference_kernels(name):
    exp = _expected(name)
    g = import_tflite(DATA / f"{name}.tflite")
    assert g.meta["tflite"]["kind"] == "integer"
    out, _ = run_int(g, {g.inputs[0].name: exp["inputs"]}, trace=True)
    held = g.meta["tflite"]["tensors"]
    pairs = [(t, exp[f"t{i}"], out[t]) for t, i in held.items() if f"t{i}" in exp and t in out]
    missing = sorted(k for k in exp if k.startswith("t") and
                     k not in {f"t{i}" for t, i in held.items() if t in out})
    assert missing == [] and len(pairs) == len(exp) - 1
    for tensor, want, got in pairs:
        assert np.shape(got) == want.shape, tensor
        assert _same(got, want), tensor
    # the saturating third image clamps the input's int16 codes
    q = exp[f"t{held[g.inputs[0].name + ':q']}"]
    assert q.min() == -32768 or q.max() == 32767


@pytest.mark.parametrize("name", MODELS)
def test_fast_run_and_codes_equal_the_trace(name):
    exp = _expected(name)
    g = import_tflite(DATA / f"{name}.tflite")
    held = g.meta["tflite"]["tensors"]
    spec, out_name = g.inputs[0].name, g.outputs[0]
    y, stats = run_int(g, {spec: exp["inputs"]})
    assert _same(y[out_name], exp[f"t{held[out_name]}"])
    codes, _ = run_int(g, {spec: exp[f"t{held[spec + ':q']}"]}, codes=True)
    assert codes[out_name].dtype == np.int16
    assert _same(codes[out_name], exp[f"t{held[out_name + ':q']}"])
    acc = [s for n, s in stats.items() if s["op"] in ("int_conv2d_16x8", "int_dense_16x8")]
    assert acc and all(s["accumulator_bits"] == 64 and not s["overflowed"] for s in acc)


def test_graph_holds_the_files_16x8_parameters():
    g = import_tflite(DATA / "cnn16.tflite")
    model = read_tflite(DATA / "cnn16.tflite")
    ops = [n.op for n in g.nodes]
    assert ops.count("int_conv2d_16x8") == 3 and ops.count("int_dense_16x8") == 2
    add = next(n for n in g.nodes if n.op == "int_add")
    assert add.attrs["left_shift"] == 15
    convs = [op for op in model.operators if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D",
                                                            "FULLY_CONNECTED")]
    nodes = [n for n in g.nodes if n.op.endswith("_16x8")]
    for op, n in zip(convs, nodes):
        bias = model.tensors[op.inputs[2]]
        assert bias.type == "int64" and np.array_equal(n.params["bias"], bias.data)
        w = model.tensors[op.inputs[1]].data
        if op.opcode == "DEPTHWISE_CONV_2D":
            w = np.transpose(w, (3, 1, 2, 0))
        assert np.array_equal(n.params["weight"], w)
        if op.opcode == "FULLY_CONNECTED":
            assert n.attrs["requant"] == "float_half_away"
    relu = nodes[0]
    assert (relu.attrs["act_min"], relu.attrs["act_max"]) == (0, 32767)


def test_subtract_and_add_use_the_int16_shift():
    g = import_tflite(DATA / "cat16.tflite")
    sub = next(n for n in g.nodes if n.op == "int_add")
    neg = next(n for n in g.nodes if n.op == "int_lut")
    assert sub.inputs[1] == neg.outputs[0] and sub.attrs["left_shift"] == 15
    codes = np.array([-32768, -1, 0, 32767])
    assert np.array_equal(neg.params["table"][codes + 32768], -codes)
    ops = [n.op for n in g.nodes]
    assert {"int_multiply", "int_concat", "int_pad", "int_requantize"} <= set(ops)


def test_saved_model_runs_the_same(tmp_path, capsys):
    exp = _expected("cnn16")
    model, x, y = tmp_path / "m.refq.h5", tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, exp["inputs"])
    assert main(["import", str(DATA / "cnn16.tflite"), "-o", str(model)]) == 0
    assert main(["run", str(model), "--input", str(x), "--output", str(y)]) == 0
    assert "ran --mode int" in capsys.readouterr().err
    g = refq.load(model)
    assert _same(np.load(y), exp[f"t{g.meta['tflite']['tensors'][g.outputs[0]]}"])


def test_reference_fully_connected_requantizes_in_float():
    """LiteRT's BUILTIN_REF FULLY_CONNECTED on int16 rounds float64(acc)·M half away (the
    integer 16-bit multiplier form differs on some values of this layer)."""
    exp = _expected("cnn16")
    g = import_tflite(DATA / "cnn16.tflite")
    held = g.meta["tflite"]["tensors"]
    n = next(n for n in g.nodes if n.op == "int_dense_16x8")
    x, want = exp[f"t{held[n.inputs[0]]}"], exp[f"t{held[n.outputs[0]]}"]
    op = INT_REGISTRY["int_dense_16x8"]
    attrs = op.normalise_attrs(n.attrs, n.name)
    assert _same(op.forward([x], n.params, attrs), want)
    from refq.fixedpoint.multiplier import quantize_multiplier

    m, s = quantize_multiplier(n.params["real_multiplier"])
    params = {"weight": n.params["weight"], "bias": n.params["bias"], "multiplier": m, "shift": s}
    integer = op.forward([x], params, {**attrs, "requant": "multiplier16"})
    assert 0 < np.count_nonzero(integer != want) <= 8


# ---- the primitive against Python integers ---------------------------------------------------
def _mbqm64_reference(x: int, m: int, shift: int) -> int:
    """TFLite's int64 MultiplyByQuantizedMultiplier in exact rationals: r = round_half_up(m/2^16)
    (0x7FFF from 0x7FFF0000 on), y = floor(x·r/2^(15 − shift) + 1/2), converted to int32
    modulo 2^32."""
    r = 0x7FFF if m >= 0x7FFF0000 else (Fraction(m, 1 << 16) + Fraction(1, 2)).__floor__()
    y = (Fraction(x * r, 1 << (15 - shift)) + Fraction(1, 2)).__floor__()
    return (y + (1 << 31)) % (1 << 32) - (1 << 31)


def _edge_grid():
    xs = {0, 1, -1, (1 << 47) - 1, -(1 << 47)}
    for k in range(0, 47):
        for d in (-2, -1, 0, 1, 2):
            for sgn in (1, -1):
                v = sgn * ((1 << k) + d)
                if -(1 << 47) <= v < (1 << 47):
                    xs.add(v)
    ms = [0, 1, (1 << 15) - 1, 1 << 15, (1 << 15) + 1, (1 << 16) - 1, 3 << 15, 1 << 30,
          (1 << 30) + (1 << 15), (1 << 30) + (1 << 15) - 1, 0x7FFEFFFF, 0x7FFF0000, (1 << 31) - 1,
          1518500250, 1686629713]
    return sorted(xs), ms, list(range(-31, 8))


def test_multiply_by_quantized_multiplier_64_against_python_integers():
    xs, ms, shifts = _edge_grid()
    x = np.array(xs, np.int64)
    for m in ms:
        for s in shifts:
            got = multiply_by_quantized_multiplier_64(x, m, s)
            want = [_mbqm64_reference(v, m, s) for v in xs]
            assert got.tolist() == want, (m, s)


def test_multiply_by_quantized_multiplier_64_ties_round_up():
    """x·r exactly halfway between two multiples of 2^t rounds toward +inf."""
    m, s = 1 << 30, -3                      # r = 2^14, t = 18: ties at odd multiples of 2^3
    x = np.array([8, -8, 24, -24, 7, -9], np.int64)
    assert multiply_by_quantized_multiplier_64(x, m, s).tolist() == [1, 0, 2, -1, 0, -1]
    assert [_mbqm64_reference(int(v), m, s) for v in x] == [1, 0, 2, -1, 0, -1]


def test_reduce_multiplier_16_and_per_channel_broadcast():
    assert reduce_multiplier_16([0, 32767, 32768, 0x7FFEFFFF, 0x7FFF0000, 2**31 - 1]).tolist() \
        == [0, 0, 1, 0x7FFF, 0x7FFF, 0x7FFF]
    x = np.arange(-6, 6, dtype=np.int64).reshape(3, 4) * 123456789
    m = np.array([1 << 30, 1518500250, 0x7FFF0000, 12345], np.int64)
    s = np.array([-1, -20, 3, 0], np.int64)
    got = multiply_by_quantized_multiplier_64(x, m, s)
    want = [[_mbqm64_reference(int(x[i, j]), int(m[j]), int(s[j])) for j in range(4)]
            for i in range(3)]
    assert got.tolist() == want


@pytest.mark.parametrize("x, m, s", [(1 << 47, 1 << 30, 0), (-(1 << 47) - 1, 1 << 30, 0),
                                     (5, -1, 0), (5, 1 << 31, 0), (5, 1 << 30, 8),
                                     (5, 1 << 30, -32)])
def test_multiply_by_quantized_multiplier_64_preconditions(x, m, s):
    with pytest.raises(FixedPointError):
        multiply_by_quantized_multiplier_64(np.array([x], np.int64), m, s)


# ---- the kernels against loop transcriptions -------------------------------------------------
def _conv_reference(x, w, bias, m, s, stride, pad, dil, groups, lo, hi):
    """A loop transcription of int_conv2d_16x8 with Python integers (explicit padding)."""
    n, h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    pt, pb, pl, pr = pad
    dh, dw = dil
    oh = (h + pt + pb - (kh - 1) * dh - 1) // stride + 1
    ow = (wd + pl + pr - (kw - 1) * dw - 1) // stride + 1
    y = np.zeros((n, oh, ow, o), np.int64)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                for oc in range(o):
                    g = oc // (o // groups)
                    acc = int(bias[oc])
                    for u in range(kh):
                        for v in range(kw):
                            iy, ix = i * stride - pt + u * dh, j * stride - pl + v * dw
                            if 0 <= iy < h and 0 <= ix < wd:
                                for ci in range(cg):
                                    acc += int(w[oc, u, v, ci]) * int(x[b, iy, ix, g * cg + ci])
                    y[b, i, j, oc] = min(max(_mbqm64_reference(acc, int(m[oc]), int(s[oc])),
                                             lo), hi)
    return y


@pytest.mark.parametrize("groups, mult", [(1, 1), (3, 2), (3, 1)])
@pytest.mark.parametrize("int64_path", [False, True])
def test_conv2d_16x8_against_loops(groups, mult, int64_path, monkeypatch):
    rng = np.random.default_rng(7)
    c = 3
    o = c * mult if groups == c else 4
    cg = c // groups
    x = rng.integers(-32768, 32768, (2, 5, 6, c))
    x[0, 0, 0] = -32768
    x[0, 0, 1] = 32767
    w = rng.integers(-128, 128, (o, 3, 2, cg))
    w[0, 0, 0] = -128
    bias = rng.integers(-(1 << 40), 1 << 40, o)
    m = rng.integers(1 << 30, 1 << 31, o)
    s = rng.integers(-20, 2, o)
    attrs = {"strides": [2, 2], "dilations": [1, 2], "padding": "explicit", "pads": [1, 0, 1, 2],
             "groups": groups, "act_min": -30000, "act_max": 32767, "accumulator_bits": 64}
    params = {"weight": w, "bias": bias, "multiplier": m, "shift": s}
    if int64_path:
        monkeypatch.setattr(conv16x8, "EXACT_TERMS", 1)
    op = INT_REGISTRY["int_conv2d_16x8"]
    attrs = op.normalise_attrs(attrs, "t")
    op.infer_shape([x.shape], attrs, params)
    got, acc = op.accumulate([x], params, attrs)
    want = _conv_reference(x, w, bias, m, s, 2, (1, 0, 1, 2), (1, 2), groups, -30000, 32767)
    assert got.tolist() == want.tolist()
    narrow, _ = NARROW["int_conv2d_16x8"]([x.astype(np.int16)], params, attrs, {})
    assert narrow.dtype == np.int16 and np.array_equal(narrow, got)
    assert acc.lo <= acc.hi and int(acc) == max(-acc.lo, acc.hi, 0)


def _round_half_away(v: float) -> int:
    f = Fraction(v)
    return int((abs(f) + Fraction(1, 2)).__floor__()) * (1 if f >= 0 else -1)


@pytest.mark.parametrize("requant", ["float_half_away", "multiplier16"])
def test_dense_16x8_against_loops(requant):
    rng = np.random.default_rng(3)
    x = rng.integers(-32768, 32768, (3, 2, 7))
    x[0, 0] = -32768
    w = rng.integers(-128, 128, (5, 7))
    bias = rng.integers(-(1 << 35), 1 << 35, 5)
    real = rng.uniform(1e-6, 1e-3, 5)
    m = rng.integers(1 << 30, 1 << 31, 5)
    s = rng.integers(-25, 0, 5)
    params = {"weight": w, "bias": bias}
    params.update({"real_multiplier": real} if requant == "float_half_away" else
                  {"multiplier": m, "shift": s})
    op = INT_REGISTRY["int_dense_16x8"]
    attrs = op.normalise_attrs({"act_min": -32768, "act_max": 20000, "requant": requant}, "t")
    op.infer_shape([x.shape], attrs, params)
    got = op.forward([x], params, attrs)
    want = np.zeros((3, 2, 5), np.int64)
    for i in np.ndindex(3, 2):
        for o in range(5):
            acc = int(bias[o]) + sum(int(w[o, d]) * int(x[i][d]) for d in range(7))
            v = (_round_half_away(float(acc) * float(real[o])) if requant == "float_half_away"
                 else _mbqm64_reference(acc, int(m[o]), int(s[o])))
            want[i][o] = min(max(v, -32768), 20000)
    assert got.tolist() == want.tolist()


def test_dense_float_requant_rounds_like_c_round():
    """Ties go away from zero; the largest double below 0.5 rounds to 0 (not floor(v + 0.5))."""
    below_half = np.nextafter(0.5, 0.0)
    got = conv16x8.round_half_away_f64([0.5, -0.5, 1.5, -2.5, below_half, -below_half, 2.0 ** 52])
    assert got.tolist() == [1, -1, 2, -3, 0, 0, 2 ** 52]


def test_kernels_refuse_out_of_range_parameters_and_accumulators():
    op = INT_REGISTRY["int_conv2d_16x8"]
    attrs = op.normalise_attrs({}, "t")
    w = np.ones((1, 1, 1, 1), np.int64)
    good = {"weight": w, "multiplier": [1 << 30], "shift": [0]}
    with pytest.raises(ParamError, match="'shift'"):
        op.infer_shape([(1, 2, 2, 1)], attrs, {**good, "shift": [8]})
    with pytest.raises(ParamError, match="'weight'"):
        op.infer_shape([(1, 2, 2, 1)], attrs, {**good, "weight": w * 200})
    with pytest.raises(FixedPointError, match="2\\^47"):
        op.accumulate([np.ones((1, 2, 2, 1), np.int64)], {**good, "bias": [1 << 47]}, attrs)
    dense = INT_REGISTRY["int_dense_16x8"]
    with pytest.raises(FixedPointError, match="outside int32"):
        dense.forward([np.full((1, 3), 32767)], {"weight": np.ones((1, 3), np.int64),
                                                 "real_multiplier": [1e6]},
                      dense.normalise_attrs({}, "t"))


# ---- refusals --------------------------------------------------------------------------------
def _import_edited(name, edit):
    model = read_tflite(DATA / f"{name}.tflite")
    edit(model)
    skip = shape_only_ops(model) | fold_constants(model)
    return integer_graph(model, skip)


def test_unsupported_int16_operator_names_index_and_opcode():
    """An int16 operator refq has no exact form of (LiteRT has no int16 RELU_N1_TO_1: the
    opcode of relu16.tflite's RELU edited) is refused, naming file, index and opcode."""
    model = read_tflite(DATA.parent / "tflite" / "relu16.tflite")
    model.operators[3].opcode = "RELU_N1_TO_1"
    with pytest.raises(UnsupportedLayerError, match=r"relu16.tflite: operator 3 \(RELU_N1_TO_1\): "
                                                    r"refq has no int16-activation"):
        integer_graph(model, shape_only_ops(model) | fold_constants(model))


def test_int16_logistic_of_misc16_imports_as_its_table():
    g = import_tflite(DATA / "misc16.tflite")
    assert [n.op for n in g.nodes if n.op == "int_lut"] == ["int_lut"]
    assert g.node(next(n.name for n in g.nodes if n.op == "int_lut")).params["table"].size == \
        65536


def _op(model, opcode):
    return next(op for op in model.operators if op.opcode == opcode)


def test_int16_zero_point_other_than_zero_is_refused():
    def edit(model):
        model.tensors[_op(model, "ADD").outputs[0]].zero_points[:] = 3
    with pytest.raises(UnsupportedLayerError, match=r"operator 4 \(ADD\).*zero point"):
        _import_edited("cnn16", edit)


def test_int8_tensor_beside_int16_ones_is_refused():
    def edit(model):
        t = model.tensors[_op(model, "MAX_POOL_2D").outputs[0]]
        t.type = "int8"
    with pytest.raises(UnsupportedLayerError, match=r"operator 6 \(MAX_POOL_2D\).*int8 beside"):
        _import_edited("cnn16", edit)


def test_int32_bias_is_refused():
    def edit(model):
        b = model.tensors[_op(model, "CONV_2D").inputs[2]]
        b.type, b.data = "int32", b.data.astype(np.int32)
    with pytest.raises(UnsupportedLayerError, match=r"operator 1 \(CONV_2D\).*int32"):
        _import_edited("cnn16", edit)


def test_per_tensor_fully_connected_weights_are_refused():
    def edit(model):
        w = model.tensors[_op(model, "FULLY_CONNECTED").inputs[1]]
        w.scales, w.zero_points = w.scales[:1].copy(), w.zero_points[:1].copy()
    with pytest.raises(UnsupportedLayerError, match=r"operator 8 \(FULLY_CONNECTED\).*per-tensor"):
        _import_edited("cnn16", edit)


def test_power_of_two_add_is_refused():
    def edit(model):
        op = _op(model, "ADD")
        op.options["PotScaleInt16"] = True
        for t in op.inputs + op.outputs:
            model.tensors[t].scales = np.array([2.0 ** -13], np.float32)
    with pytest.raises(UnsupportedLayerError, match=r"operator 4 \(ADD\).*power-of-two"):
        _import_edited("cnn16", edit)


def test_one_convolution_16x8_model_imports():
    g = import_tflite(DATA.parent / "tflite" / "conv_16x8.tflite")
    assert [n.op for n in g.nodes] == ["int_quantize", "int_conv2d_16x8", "int_dequantize"]


@pytest.mark.parametrize("src", ["cnn16", "cat16"])
def test_damaged_bytes_import_and_run_or_raise_one_refq_error(tmp_path, src):
    """Bytes changed anywhere: the model imports and runs, or one RefqError says why."""
    from test_import_tflite import import_damaged_copies

    import_damaged_copies(DATA / f"{src}.tflite", tmp_path / "damaged.tflite", seed=11, rounds=60,
                          fill=1.0)
