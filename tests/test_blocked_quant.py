"""Blocked (per-block) weight encodings: the record (`refq.quant.grid.Encoding` with block_axis and
block_size), quantize / dequantize / fake quantization against naive loops over the elements
and over the blocks (tolerance 0), partial last blocks, the per-block encodings of a weight
against the per-channel ones, `QuantSim.set_blockwise`, the model file, the integer lowering's
refusal and `refq quantize --block-size`; bad inputs fail with one line."""
import json

import numpy as np
import pytest

from refq.errors import FixedPointError, InputError, QuantError
from refq.graph import Graph, Node, TensorSpec
from refq.importers.onnx_qdq import ONNX_QDQ_NUMERICS
from refq.quant.analyzers import block_rows, blocked_encoding, make_analyzer
from refq.quant.encoding import (AIMET_V2, Encoding, dequantize, encoding_from_block_min_max,
                                 encoding_from_min_max, quantize, quantize_dequantize)
from refq.quant.fakequant import fake_quantize_inplace
from refq.quant.quantsim import QuantSim

F32 = np.float32


def one_line(exc_type, fn, *needles):
    with pytest.raises(exc_type) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def random_blocked(rng, c, nb, axis, block_axis, size, symmetric=True, bits=8):
    """A blocked encoding of c channels and nb blocks with random scales and zero points."""
    scale = rng.uniform(0.01, 0.2, (c, nb)).astype(F32)
    if symmetric:
        qmin, qmax, zp = -2 ** (bits - 1), 2 ** (bits - 1) - 1, np.zeros((c, nb), np.int64)
    else:
        qmin, qmax = 0, 2 ** bits - 1
        zp = rng.integers(0, qmax + 1, (c, nb))
    return Encoding(scale, zp, bits, qmin, qmax, symmetric, axis, block_axis, size)


def naive_fake_quant(x, enc, numerics):
    """Element by element: the encoding of element (…c…i…) is [c, i // B] (float32 scalars)."""
    out = np.empty(x.shape, F32)
    for idx in np.ndindex(*x.shape):
        c, j = idx[enc.axis], idx[enc.block_axis] // enc.block_size
        s, zp = F32(enc.scale[c, j]), int(enc.zero_point[c, j])
        v = F32(x[idx]) * (F32(1) / s) if numerics.fake_quant == "reciprocal_float32" \
            else F32(x[idx]) / s
        r = float(np.rint(v))
        q = enc.qmax if r > 2 ** 40 else enc.qmin if r < -2 ** 40 else \
            min(max(int(r) + zp, enc.qmin), enc.qmax)
        out[idx] = F32(q - zp) * s
    return out


@pytest.mark.parametrize("shape,axis,block_axis,size", [
    ((3, 2, 2, 10), 0, 3, 4),     # conv OHWI, blocks on the input channels, last one partial
    ((5, 6), 0, 1, 4),            # dense [out, in], partial
    ((5, 8), 0, 1, 2),            # whole blocks
    ((7, 3), 1, 0, 3),            # gemm B [K, P]: channels on axis 1, blocks on axis 0, partial
    ((4, 3, 3, 1), 0, 3, 2),      # depthwise: one input channel, one (partial) block
])
@pytest.mark.parametrize("numerics", [AIMET_V2, ONNX_QDQ_NUMERICS], ids=["aimet", "onnx"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quantization_equals_naive_loops(shape, axis, block_axis, size, numerics,
                                              symmetric):
    rng = np.random.default_rng(abs(hash((shape, size, symmetric))) % 2 ** 32)
    nb = -(-shape[block_axis] // size)
    enc = random_blocked(rng, shape[axis], nb, axis, block_axis, size, symmetric)
    x = (rng.standard_normal(shape) * 8).astype(F32)
    x.reshape(-1)[:3] = [np.inf, -np.inf, 1e30]           # saturation
    y = quantize_dequantize(x, enc, numerics)
    assert y.dtype == F32 and np.array_equal(y, naive_fake_quant(x, enc, numerics))
    # block by block, each block a per-tensor encoding of its own
    for c in range(shape[axis]):
        for j in range(nb):
            sl = [slice(None)] * len(shape)
            sl[axis], sl[block_axis] = c, slice(j * size, (j + 1) * size)
            one = Encoding(enc.scale[c, j], enc.zero_point[c, j], 8, enc.qmin, enc.qmax,
                           symmetric)
            assert np.array_equal(y[tuple(sl)], quantize_dequantize(x[tuple(sl)], one, numerics))
    q = quantize(x, enc, numerics)
    assert q.dtype == np.int64 and np.array_equal(dequantize(q, enc, numerics), y)
    a = x.copy()
    fake_quantize_inplace(a, enc, numerics)
    assert np.array_equal(a, y)


def test_per_block_equals_per_channel_when_one_block_covers_the_axis():
    w = np.random.default_rng(1).standard_normal((6, 3, 3, 10)).astype(F32)
    for scheme, options in (("minmax", {}), ("tf_enhanced", {}), ("percentile", {"percentile": 99})):
        a = make_analyzer(scheme, 0, **options)
        a.update(w)
        per_channel = a.compute_encoding(4, True)
        for size in (10, 11, 64):
            b = blocked_encoding(w, scheme, 4, True, axis=0, block_axis=3, block_size=size,
                                 **options)
            assert b.scale.shape == (6, 1) and np.array_equal(b.scale[:, 0], per_channel.scale)
            assert np.array_equal(quantize_dequantize(w, b), quantize_dequantize(w, per_channel))


def test_per_block_min_max_is_the_encoding_formula_on_each_block():
    w = np.random.default_rng(2).standard_normal((4, 2, 2, 10)).astype(F32)
    enc = blocked_encoding(w, "minmax", 8, False, axis=0, block_axis=3, block_size=4)
    assert enc.scale.shape == (4, 3) and (enc.block_axis, enc.block_size) == (3, 4)
    for c in range(4):
        for j, (lo, hi) in enumerate(((0, 4), (4, 8), (8, 10))):     # the last block: 2 wide
            block = w[c, :, :, lo:hi]
            one = encoding_from_min_max(block.min(), block.max(), 8, False)
            assert enc.scale[c, j] == one.scale and enc.zero_point[c, j] == one.zero_point
    mn = np.array([[w[c, :, :, lo:hi].min() for lo, hi in ((0, 4), (4, 8), (8, 10))]
                   for c in range(4)])
    mx = np.array([[w[c, :, :, lo:hi].max() for lo, hi in ((0, 4), (4, 8), (8, 10))]
                   for c in range(4)])
    assert encoding_from_block_min_max(mn, mx, 8, False, block_axis=3, block_size=4) == enc
    (whole, n_whole), (last, n_last) = block_rows(w, 0, 3, 4)
    assert whole.shape == (8, 16) and last.shape == (4, 8) and (n_whole, n_last) == (2, 1)
    assert np.array_equal(np.sort(whole[5]), np.sort(w[2, :, :, 4:8], axis=None))
    assert np.array_equal(np.sort(last[2]), np.sort(w[2, :, :, 8:], axis=None))
    one_line(QuantError, lambda: block_rows(w, 0, 0, 4), "two different axes")
    one_line(QuantError, lambda: block_rows(w, 0, 3, 0), "block_size must be an integer >= 1")


def test_histogram_schemes_per_block_with_a_partial_last_block():
    """tf_enhanced on each block, the partial last block included: equal, block by block, to
    the per-tensor tf_enhanced encoding of that block alone."""
    w = np.random.default_rng(9).standard_normal((3, 2, 2, 10)).astype(F32)
    enc = blocked_encoding(w, "tf_enhanced", 8, True, axis=0, block_axis=3, block_size=4)
    for c in range(3):
        for j, (lo, hi) in enumerate(((0, 4), (4, 8), (8, 10))):
            a = make_analyzer("tf_enhanced")
            a.update(w[c, :, :, lo:hi])
            one = a.compute_encoding(8, True)
            assert enc.scale[c, j] == one.scale and enc.zero_point[c, j] == one.zero_point


def test_record_checks_and_json():
    enc = random_blocked(np.random.default_rng(3), 3, 2, 0, 3, 4, symmetric=False)
    d = enc.to_json()
    assert (d["block_axis"], d["block_size"]) == (3, 4) and len(d["scale"]) == 3
    assert Encoding.from_json(json.dumps(d)) == enc
    assert enc != Encoding(enc.scale, enc.zero_point, 8, 0, 255, False, 0, 3, 5)
    per_channel = Encoding(enc.scale[:, 0], enc.zero_point[:, 0], 8, 0, 255, False, 0)
    assert "block_size" not in per_channel.to_json() and not per_channel.is_blocked
    s, z = enc.scale, enc.zero_point
    for kwargs, needles in (
            (dict(block_axis=3, block_size=0), ("block_size must be an integer >= 1, got 0",)),
            (dict(block_axis=3, block_size=-2), ("block_size must be",)),
            (dict(block_axis=3, block_size=True), ("block_size must be",)),
            (dict(block_axis=None, block_size=4), ("needs block_axis",)),
            (dict(block_axis=0, block_size=4), ("other than its block axis 0",))):
        one_line(QuantError, lambda: Encoding(s, z, 8, 0, 255, False, 0, **kwargs), *needles)
    one_line(QuantError, lambda: Encoding(s[:, 0], z[:, 0], 8, 0, 255, False, 0, 3, 4),
             "(C, n_blocks)")
    one_line(QuantError, lambda: Encoding(-s, z, 8, 0, 255, False, 0, 3, 4),
             "scale must be finite and positive")
    one_line(QuantError, lambda: Encoding(s, z + 300, 8, 0, 255, False, 0, 3, 4),
             "lies outside [qmin, qmax]")
    # a tensor that does not fit: wrong channel count, wrong block count
    for shape in ((4, 2, 2, 8), (3, 2, 2, 9), (3, 2, 2, 4)):
        one_line(QuantError, lambda: quantize_dequantize(np.zeros(shape), enc),
                 "does not fit the blocked encoding", "2 blocks of 4 on axis 3")
    one_line(QuantError, lambda: enc.broadcast_shape(4), "Encoding.broadcast")
    bad = dict(d, scale=[[0.1, 0.2], [0.1]])
    one_line(QuantError, lambda: Encoding.from_json(bad), "'scale' must be a list of equal")
    bad = dict(d, block_size="4")
    one_line(QuantError, lambda: Encoding.from_json(bad), "'block_size' must be an integer")


def small_graph():
    rng = np.random.default_rng(4)
    nodes = [
        Node("conv", "conv2d", ["x"], ["c"], {"padding": "same"},
             {"weight": rng.standard_normal((6, 3, 3, 10)) * 0.3, "bias": rng.normal(size=6)}),
        Node("act", "relu", ["c"], ["a"]),
        Node("gap", "global_avg_pool2d", ["a"], ["g"]),
        Node("fc", "dense", ["g"], ["y"], {}, {"weight": rng.standard_normal((5, 6)) * 0.3}),
    ]
    return Graph([TensorSpec("x", (None, 6, 6, 10))], ["y"], nodes, "blk").validate()


def calibrated(block_size=4, ops=None, **kw):
    sim = QuantSim(small_graph(), "per_channel", **kw)
    sim.set_blockwise(block_size, ops)
    return sim.compute_encodings([np.random.default_rng(5).standard_normal((8, 6, 6, 10))])


def test_quantsim_set_blockwise_and_simulation():
    sim = calibrated(4, param_bw=4)
    conv, fc = sim.encodings["conv.weight"], sim.encodings["fc.weight"]
    assert conv.scale.shape == (6, 3) and (conv.axis, conv.block_axis, conv.block_size) == (0, 3, 4)
    assert fc.scale.shape == (5, 2) and (fc.axis, fc.block_axis) == (0, 1)
    assert sim.quantizers["conv.weight"].block_size == 4
    w = sim.graph.node("conv").params["weight"].astype(F32)
    assert conv == blocked_encoding(w, "minmax", 4, True, axis=0, block_axis=3, block_size=4)
    params = sim.sim_params()
    assert np.array_equal(params["conv"]["weight"], quantize_dequantize(w, conv))
    x = np.random.default_rng(6).standard_normal((2, 6, 6, 10))
    assert sim.run({"x": x})["y"].shape == (2, 5)
    only = calibrated(5, ["fc"])            # by node name: the conv stays per channel
    assert only.encodings["conv.weight"].scale.shape == (6,)
    assert only.encodings["fc.weight"].scale.shape == (5, 2)
    asym = QuantSim(small_graph(), "per_channel")
    asym.set_blockwise(3, ["conv2d"], bitwidth=4, symmetric=False)
    asym.compute_param_encodings()
    e = asym.encodings["conv.weight"]
    assert (e.bitwidth, e.qmin, e.qmax, e.symmetric) == (4, 0, 15, False)
    s = QuantSim(small_graph(), "per_channel")
    one_line(QuantError, lambda: s.set_blockwise(0), "--block-size", "integer >= 1, got 0")
    one_line(QuantError, lambda: s.set_blockwise(2, ["relu"]), "'relu' is neither")
    s.compute_param_encodings()
    s.freeze(["fc.weight"])
    one_line(QuantError, lambda: s.set_blockwise(2), "'fc.weight' is frozen")
    assert all(q.block_size is None for q in s.quantizers.values())     # nothing changed


def test_overflow_protection_of_blocked_weights():
    """AIMET leaves a weight alone when its scale has more than one axis longer than 1; one
    block per channel is protected (re-snapped) like a per-channel weight."""
    g = small_graph()
    g.node("fc").params["bias"] = np.full(5, 1e6)       # needs a wider weight scale
    for size, protected in ((4, False), (6, True)):
        on = QuantSim(g, "per_channel")
        on.set_blockwise(size, ["fc"])
        on.compute_encodings([np.random.default_rng(5).standard_normal((8, 6, 6, 10))])
        off = QuantSim(g, "per_channel", overflow_protection=False)
        off.set_blockwise(size, ["fc"])
        off.compute_encodings([np.random.default_rng(5).standard_normal((8, 6, 6, 10))])
        a, b = on.encodings["fc.weight"], off.encodings["fc.weight"]
        assert a.is_blocked and (np.all(a.scale > b.scale) if protected else a == b)


def test_model_file_round_trip_and_unblocked_files_unchanged(tmp_path):
    sim = calibrated(4, param_bw=4)
    doc = sim.to_json()
    assert doc["version"] == 4 and all("block_size" in q for q in doc["quantizers"])
    path = tmp_path / "b.refq.h5"
    sim.save(path)
    back = QuantSim.load(path)
    assert back.encodings.keys() == sim.encodings.keys()
    assert all(back.encodings[k] == e for k, e in sim.encodings.items())
    assert back.quantizers["conv.weight"].block_size == 4
    x = np.random.default_rng(7).standard_normal((2, 6, 6, 10))
    assert np.array_equal(back.run({"x": x})["y"], sim.run({"x": x})["y"])
    plain = QuantSim(small_graph(), "per_channel").compute_encodings(
        [np.random.default_rng(5).standard_normal((8, 6, 6, 10))])
    text = json.dumps(plain.to_json())
    assert plain.to_json()["version"] == 3 and "block" not in text
    # a stored quantizer that disagrees with its encoding, or a blocked activation
    bad = json.loads(json.dumps(doc))
    conv = next(q for q in bad["quantizers"] if q["name"] == "conv.weight")
    conv["block_size"] = 5
    one_line(QuantError, lambda: QuantSim.from_json(sim.graph, bad, "f.refq.h5"),
             "f.refq.h5", "conv.weight", "block_size 5 of the quantizer")
    bad = json.loads(json.dumps(doc))
    act = next(q for q in bad["quantizers"] if q["kind"] == "activation")
    act["block_size"] = 4
    one_line(QuantError, lambda: QuantSim.from_json(sim.graph, bad, "f.refq.h5"),
             "blocked quantization applies to weights only")
    bad = json.loads(json.dumps(doc))
    bad["quantizers"][0]["block_size"] = 0
    one_line(QuantError, lambda: QuantSim.from_json(sim.graph, bad, "f.refq.h5"),
             "block_size", "an integer >= 1 or null")


def test_integer_lowering_refuses_blocked_weights():
    from refq.fixedpoint.lowering import lower

    one_line(FixedPointError, lambda: lower(calibrated(4), "tflite"), "node 'conv' (conv2d)",
             "blocked", "[6, 3]")


def test_cli_quantize_block_size(tmp_path):
    """`refq quantize --block-size B`."""
    from refq.cli import build_parser
    from refq.model_io import save

    model, out = tmp_path / "m.refq.h5", tmp_path / "q.refq.h5"
    save(small_graph(), model)
    np.save(tmp_path / "calib.npy", np.random.default_rng(8).standard_normal((8, 6, 6, 10)))
    args = build_parser().parse_args(["quantize", str(model), "--calib",
                                      str(tmp_path / "calib.npy"), "-o", str(out),
                                      "--per-channel", "--param-bw", "4", "--block-size", "4",
                                      "--quiet"])
    assert args.block_size == 4
    args.func(args)
    sim = QuantSim.load(out)
    assert sim.encodings["conv.weight"].scale.shape == (6, 3)
    args.seq_mse = True
    one_line(InputError, lambda: args.func(args), "--block-size", "--seq-mse")


def test_cli_report_refuses_blocked_weights(tmp_path, capsys):
    """`refq report` has no per-block weight statistics: one line naming the quantizer."""
    from refq.cli import main

    calibrated(4).save(tmp_path / "q.refq.h5")
    np.save(tmp_path / "x.npy", np.random.default_rng(9).standard_normal((2, 6, 6, 10)))
    assert main(["report", str(tmp_path / "q.refq.h5"), "--data", str(tmp_path / "x.npy")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'conv.weight' is blocked" in err, err


def test_straight_through_gradient_of_a_blocked_encoding():
    """QAT's straight-through mask: the gradient passes where the element's own block code
    rint(x / s[c, i // B]) + zp lies on the grid (a loop over the elements)."""
    from refq.quant.ste import fake_quant_ste

    rng = np.random.default_rng(21)
    enc = random_blocked(rng, 3, 3, 0, 3, 4, symmetric=False)
    x = (rng.standard_normal((3, 2, 2, 10)) * 20).astype(F32)
    gy = rng.standard_normal(x.shape).astype(F32)
    got = fake_quant_ste(x, enc, gy)
    want = np.zeros_like(gy)
    for idx in np.ndindex(*x.shape):
        c, j = idx[0], idx[3] // 4
        r = float(np.rint(F32(x[idx]) * (F32(1) / F32(enc.scale[c, j]))))
        if enc.qmin <= r + int(enc.zero_point[c, j]) <= enc.qmax:
            want[idx] = gy[idx]
    assert np.array_equal(got, want) and 0 < np.count_nonzero(got) < got.size
