"""refq.importers.onnx on Transpose of the non-batch axes, Div of two activations, Pad with a
constant value and an axes input, MaxPool's Indices with storage_order 1, and ConvTranspose of
1-D and 3-D tensors: each model's refq graph against a NumPy / Python-loop transcription of the
ONNX operator's definition on the ONNX layout (the importer's layouts undone with
graph.meta["onnx_layouts"]), and every input refq refuses as a one-line UnsupportedLayerError
naming the node, op type and attribute.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import refq
from refq.errors import UnsupportedLayerError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from refq.importers.onnx import import_onnx  # noqa: E402
from test_import_onnx import _model  # noqa: E402

F, I64 = TensorProto.FLOAT, TensorProto.INT64
rng = np.random.default_rng(808)


def model(tmp_path, nodes, inputs, outputs, inits=None, name="m.onnx", opset=18):
    """An ONNX model (`test_import_onnx._model`) at opset 18, which has Pad's axes input."""
    return _model(tmp_path, nodes, inputs, outputs, inits, name, opset)


def run(graph, feeds):
    """Every output of `graph` for feeds in ONNX layout, back in ONNX layout."""
    lay = graph.meta["onnx_layouts"]
    f = {k: np.moveaxis(v, 1, -1) if lay["inputs"][k] == "nchw" else v for k, v in feeds.items()}
    ys = refq.run(graph, f)
    return [np.moveaxis(ys[t], -1, 1) if lay["outputs"][o] == "nchw" else ys[t]
            for t, o in zip(graph.outputs, lay["outputs"])]


def refused(path, *needles):
    with pytest.raises(UnsupportedLayerError) as e:
        import_onnx(path)
    text = str(e.value)
    assert "\n" not in text and all(n in text for n in needles), (needles, text)


def conv_nchw(x, w):
    """ONNX Conv (no pads, stride 1) as loops of NumPy dot products."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    y = np.zeros((n, o, h - kh + 1, wd - kw + 1))
    for i, j in itertools.product(range(h - kh + 1), range(wd - kw + 1)):
        y[:, :, i, j] = np.einsum("nchw,ochw->no", x[:, :, i:i + kh, j:j + kw], w)
    return y


# ---- Transpose ------------------------------------------------------------------------------
def test_transpose_of_a_conv_output_against_numpy(tmp_path):
    """Conv (NCHW, held channels-last) -> Transpose(0, 2, 1, 3): refq's transpose of its NHWC
    array with perm (0, 1, 3, 2), the output held as ONNX's."""
    w = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 1, 3])]
    g = import_onnx(model(tmp_path, nodes, [("x", F, [2, 2, 5, 4])], [("y", F, 4)], {"w": w}))
    assert [n.op for n in g.nodes] == ["conv2d", "transpose"]
    assert g.nodes[1].attrs["perm"] == [0, 1, 3, 2]
    assert g.meta["onnx_layouts"]["outputs"] == {"y": "same"}
    x = rng.standard_normal((2, 2, 5, 4))
    np.testing.assert_allclose(run(g, {"x": x})[0], conv_nchw(x, w).transpose(0, 2, 1, 3),
                               rtol=1e-12, atol=1e-12)


def test_transpose_read_by_a_conv_is_held_channels_last(tmp_path):
    """x [N, H, C, W] -> Transpose(0, 2, 1, 3) -> Conv: the transpose's output is NCHW for the
    Conv, so refq holds it channels-last (perm (0, 1, 3, 2) of the input held as it is)."""
    w = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),
             helper.make_node("Conv", ["t", "w"], ["y"])]
    g = import_onnx(model(tmp_path, nodes, [("x", F, [2, 5, 2, 4])], [("y", F, 4)], {"w": w}))
    assert [n.op for n in g.nodes] == ["transpose", "conv2d"]
    assert g.nodes[0].attrs["perm"] == [0, 1, 3, 2]
    assert g.meta["onnx_layouts"] == {"inputs": {"x": "same"}, "outputs": {"y": "nchw"}}
    x = rng.standard_normal((2, 5, 2, 4))
    np.testing.assert_allclose(run(g, {"x": x})[0], conv_nchw(x.transpose(0, 2, 1, 3), w),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 2, 4), (2, 2, 3, 2, 3)])
def test_every_permutation_keeping_the_batch_axis(tmp_path, shape):
    """Relu then Transpose on an input held as it is (rank 3, 4, 5) and on one held
    channels-last (a MaxPool 1x1 reads it): every perm with perm[0] = 0 against NumPy."""
    rank = len(shape)
    x = rng.standard_normal(shape)
    for pooled, rest in itertools.product((False, True), itertools.permutations(range(1, rank))):
        perm = [0, *rest]
        nodes = [helper.make_node("MaxPool" if pooled else "Relu", ["x"], ["a"],
                                  **({"kernel_shape": [1] * (rank - 2)} if pooled else {})),
                 helper.make_node("Transpose", ["a"], ["y"], perm=perm)]
        g = import_onnx(model(tmp_path, nodes, [("x", F, list(shape))], [("y", F, rank)]))
        want = (x if pooled else np.maximum(x, 0)).transpose(perm)
        np.testing.assert_array_equal(run(g, {"x": x})[0], want)
        assert len(g.nodes) <= 2


def test_layout_changes_take_no_node(tmp_path):
    w = rng.standard_normal((3, 2, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 3, 1])]
    g = import_onnx(model(tmp_path, nodes, [("x", F, [1, 2, 3, 3])], [("y", F, 4)], {"w": w}))
    assert [n.op for n in g.nodes] == ["conv2d"]


@pytest.mark.parametrize("perm,needles", [
    ([1, 0, 2], ("perm=[1, 0, 2]", "batch axis")), (None, ("perm=[2, 1, 0]", "batch axis")),
    ([0, 1, 1], ("not a permutation",)), ([0, 2], ("not a permutation",))])
def test_transpose_refusals(tmp_path, perm, needles):
    node = helper.make_node("Transpose", ["x"], ["y"], name="tr",
                            **({} if perm is None else {"perm": perm}))
    refused(model(tmp_path, [node], [("x", F, [2, 3, 4])], [("y", F, 3)]), "'tr'",
            "(Transpose)", *needles)


def test_transpose_of_a_flattening_is_refused(tmp_path):
    w = rng.standard_normal((3, 2, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("Transpose", ["f"], ["y"], name="tr", perm=[0, 1])]
    refused(model(tmp_path, nodes, [("x", F, [1, 2, 3, 3])], [("y", F, 2)], {"w": w}),
            "'tr'", "flattened NCHW")


# ---- Div ------------------------------------------------------------------------------------
def test_div_of_two_activations(tmp_path):
    w1, w2 = (rng.standard_normal((3, 2, 2, 2)).astype(np.float32) for _ in range(2))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]),
             helper.make_node("Conv", ["x", "w2"], ["b"]),
             helper.make_node("Div", ["a", "b"], ["y"])]
    g = import_onnx(model(tmp_path, nodes, [("x", F, [2, 2, 4, 4])], [("y", F, 4)],
                          {"w1": w1, "w2": w2}))
    assert [n.op for n in g.nodes] == ["conv2d", "conv2d", "divide"]
    x = rng.standard_normal((2, 2, 4, 4))
    np.testing.assert_allclose(run(g, {"x": x})[0], conv_nchw(x, w1) / conv_nchw(x, w2),
                               rtol=1e-12)


def test_div_broadcasts_and_divides_by_zero_as_ieee(tmp_path):
    nodes = [helper.make_node("Div", ["a", "b"], ["y"])]
    g = import_onnx(model(tmp_path, nodes, [("a", F, [2, 3, 4]), ("b", F, [2, 1, 4])],
                          [("y", F, 3)]))
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 1, 4))
    b[0, 0, :2] = 0.0
    a[0, 0, 0] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        want = a / b
    np.testing.assert_array_equal(run(g, {"a": a, "b": b})[0], want)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("shape", [[2, 3, 4], [2, 3, 4, 5], [2, 3, 2, 4, 2]])
def test_operands_of_two_layouts_are_aligned_by_a_transpose(tmp_path, op, shape):
    """y (held as ONNX's) op MaxPool(x) (held channels-last): y is moved channels-last first."""
    r = len(shape) - 2
    nodes = [helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[1] * r),
             helper.make_node(op, ["y", "m"], ["z"])]
    g = import_onnx(model(tmp_path, nodes, [("x", F, shape), ("y", F, shape)],
                          [("z", F, len(shape))]))
    assert g.meta["onnx_layouts"]["inputs"] == {"x": "nchw", "y": "same"}
    t = [n for n in g.nodes if n.op == "transpose"]
    assert len(t) == 1 and t[0].inputs == ["y"] and t[0].attrs["perm"] == [0, *range(2, r + 2), 1]
    x, y = rng.standard_normal(shape), rng.standard_normal(shape)
    want = {"Add": y + x, "Sub": y - x, "Mul": y * x, "Div": y / x}[op]
    np.testing.assert_allclose(run(g, {"x": x, "y": y})[0], want, rtol=1e-15, atol=0)


def test_constant_divided_by_an_activation_is_refused(tmp_path):
    nodes = [helper.make_node("Div", ["c", "x"], ["y"], name="dv")]
    refused(model(tmp_path, nodes, [("x", F, [2, 3])], [("y", F, 2)],
                  {"c": np.float32(2.0)}), "'dv'", "(Div)", "constant by an activation")


# ---- Pad ------------------------------------------------------------------------------------
def onnx_pad(x, pads, value, axes=None):
    """ONNX Pad (mode constant) with NumPy: pads [b..., e...] over `axes` (default all)."""
    axes = list(range(x.ndim)) if axes is None else [a % x.ndim for a in axes]
    width = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        width[a] = (pads[i], pads[i + len(axes)])
    return np.pad(x, width, constant_values=value)


@pytest.mark.parametrize("pads,value,axes,op", [
    ([0, 0, 1, 3, 0, 0, 2, 4], 1.2, None, "pad"),            # H, W with a value
    ([0, 0, 1, 3, 0, 0, 2, 4], 0.0, None, "zero_pad2d"),      # H, W with zeros: zero_pad2d
    ([0, 2, 0, 0, 0, 1, 0, 0], 0.0, None, "pad"),             # the channel axis
    ([0, 3, 0, 4], 1.2, [1, 3], "pad"), ([0, 3, 0, 4], 1.2, [-3, -1], "pad"),
    ([1, 2, 0, 1], 0.0, [2, 3], "zero_pad2d"), ([2, 1], -1.5, [-2], "pad")])
def test_pad_of_an_nchw_tensor(tmp_path, pads, value, axes, op):
    inputs = ["x", "p", "v"] + (["ax"] if axes is not None else [])
    inits = {"p": np.array(pads, np.int64), "v": np.float32(value)}
    if axes is not None:
        inits["ax"] = np.array(axes, np.int64)
    nodes = [helper.make_node("Pad", inputs, ["y"], mode="constant")]
    g = import_onnx(model(tmp_path, nodes, [("x", F, [2, 3, 4, 5])], [("y", F, 4)], inits))
    assert g.meta["onnx_layouts"]["inputs"] == {"x": "nchw"} and [n.op for n in g.nodes] == [op]
    x = rng.standard_normal((2, 3, 4, 5))
    np.testing.assert_array_equal(run(g, {"x": x})[0],
                                  onnx_pad(x, pads, np.float64(np.float32(value)), axes))


def test_pad_before_opset_11_and_of_a_tensor_held_as_it_is(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Pad", ["r"], ["y"], mode="constant", pads=[0, 1, 2, 0, 0, 1],
                              value=0.25)]
    g = import_onnx(model(tmp_path, nodes, [("x", F, [2, 3, 4])], [("y", F, 3)], opset=10))
    assert [n.op for n in g.nodes] == ["relu", "pad"]
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(run(g, {"x": x})[0],
                                  onnx_pad(np.maximum(x, 0), [0, 1, 2, 0, 0, 1], 0.25))


@pytest.mark.parametrize("pads,extra,needles", [
    ([1, 0, 0, 0, 0, 0, 0, 0], {}, ("batch axis",)),
    ([0, 0, -1, 0, 0, 0, 0, 0], {}, ("negative pads",)),
    ([0, 0, 1, 0, 0, 0], {}, ("2 entries per padded axis",)),
    ([0, 1, 0, 1], {"ax": np.array([1, 1], np.int64)}, ("axes [1, 1]",)),
    ([0, 1, 0, 1], {"ax": np.array([1, 4], np.int64)}, ("axes [1, 4]",)),
    ([0, 0, 1, 0, 0, 0, 0, 0], {"v": np.float32(np.inf)}, ("finite number",)),
    ([0, 0, 1, 0, 0, 0, 0, 0], {"mode": "edge"}, ("mode='edge'",))])
def test_pad_refusals(tmp_path, pads, extra, needles):
    extra = dict(extra)
    mode = extra.pop("mode", "constant")
    inits = {"p": np.array(pads, np.int64), "v": extra.pop("v", np.float32(1.0)), **extra}
    inputs = ["x", "p", "v"] + (["ax"] if "ax" in inits else [])
    nodes = [helper.make_node("Pad", inputs, ["y"], name="pd", mode=mode)]
    refused(model(tmp_path, nodes, [("x", F, [2, 3, 4, 5])], [("y", F, 4)], inits), "'pd'",
            "(Pad)", *needles)


def test_pad_axes_computed_at_run_time_is_refused(tmp_path):
    nodes = [helper.make_node("Relu", ["a"], ["ax"]),
             helper.make_node("Pad", ["x", "p", "v", "ax"], ["y"], name="pd")]
    refused(model(tmp_path, nodes, [("x", F, [2, 3, 4, 5]), ("a", F, [2, 2])], [("y", F, 4)],
                  {"p": np.array([0, 1, 0, 1], np.int64), "v": np.float32(1.0)}),
            "'pd'", "axes input is computed at run time")


# ---- MaxPool's Indices with storage_order ---------------------------------------------------
def onnx_argmax(x, k, s):
    """ONNX MaxPool's Indices of one image batch (valid padding): the first maximum in row-major
    window order, as (spatial coordinates) per output."""
    n, c, *sp = x.shape
    outs = [(d - kk) // ss + 1 for d, kk, ss in zip(sp, k, s)]
    picks = np.zeros((n, c, *outs, len(sp)), np.int64)
    for nn, cc in itertools.product(range(n), range(c)):
        for i in itertools.product(*map(range, outs)):
            best, where = -np.inf, None
            for u in itertools.product(*map(range, k)):
                p = tuple(ii * ss + uu for ii, ss, uu in zip(i, s, u))
                if x[(nn, cc, *p)] > best:
                    best, where = x[(nn, cc, *p)], p
            picks[(nn, cc, *i)] = where
    return picks


@pytest.mark.parametrize("shape,k,s", [((1, 2, 5, 5), [2, 2], [2, 2]),
                                       ((1, 2, 4, 5), [2, 3], [1, 2]),
                                       ((1, 2, 3, 4, 5), [2, 2, 3], [1, 2, 1]),
                                       ((1, 2, 6), [3], [2])])
@pytest.mark.parametrize("order", [0, 1])
def test_maxpool_indices_storage_order(tmp_path, shape, k, s, order):
    """storage_order 0: c·Π spatial + row-major position; 1: c·Π spatial + column-major position
    (the first spatial axis fastest; ONNX's reference implementation)."""
    r = len(shape) - 2
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=k, strides=s,
                            storage_order=order)
    p = model(tmp_path, [node], [("x", F, list(shape))], [("y", F, r + 2), ("i", I64, r + 2)])
    g = import_onnx(p)
    assert g.nodes[1].op == f"max_pool{r}d_indices" and g.nodes[1].attrs["storage_order"] == order
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64)
    _, got = run(g, {"x": x})
    picks = onnx_argmax(x, k, s)
    sp = shape[2:]
    want = np.zeros(picks.shape[:-1], np.int64)
    for idx in np.ndindex(*picks.shape[:-1]):
        coord = picks[idx]
        pos = np.ravel_multi_index(tuple(coord), sp, order="F" if order else "C")
        want[idx] = idx[1] * int(np.prod(sp)) + int(pos)
    assert got.dtype == np.int64 and np.array_equal(got, want)


def test_maxpool_storage_order_beyond_1_is_refused(tmp_path):
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", kernel_shape=[2, 2],
                            storage_order=2)
    refused(model(tmp_path, [node], [("x", F, [1, 2, 4, 4])], [("y", F, 4), ("i", I64, 4)]),
            "'mp'", "(MaxPool)", "storage_order=2")


# ---- ConvTranspose 1-D and 3-D --------------------------------------------------------------
def onnx_conv_transpose(x, w, b, s, d, g, out_pad, pads_b, pads_e):
    """ONNX ConvTranspose on [N, C, *spatial] with W [C, O/g, *k], as loops: scatter, then crop
    pads_b before and pads_e after per axis."""
    n, c, *sp = x.shape
    _, og, *k = w.shape
    cg = c // g
    full = [(sp[a] - 1) * s[a] + (k[a] - 1) * d[a] + 1 + out_pad[a] for a in range(len(sp))]
    yf = np.zeros((n, og * g, *full))
    for nn, cc in itertools.product(range(n), range(c)):
        grp = cc // cg
        for i in itertools.product(*map(range, sp)):
            for o, u in itertools.product(range(og), itertools.product(*map(range, k))):
                pos = tuple(i[a] * s[a] + u[a] * d[a] for a in range(len(sp)))
                yf[(nn, grp * og + o, *pos)] += float(x[(nn, cc, *i)]) * float(w[(cc, o, *u)])
    crop = tuple(slice(pb, f - pe) for pb, pe, f in zip(pads_b, pads_e, full))
    y = yf[(slice(None), slice(None)) + crop]
    return y if b is None else y + b.reshape((1, -1) + (1,) * len(sp))


@pytest.mark.parametrize("r,attrs", [
    (1, {}), (1, {"group": 2, "strides": [2], "dilations": [2], "output_padding": [1],
                  "pads": [1, 2]}),
    (3, {}), (3, {"group": 2, "strides": [2, 1, 3], "dilations": [1, 2, 1],
                  "output_padding": [1, 0, 2], "pads": [1, 0, 0, 0, 1, 2]})])
def test_conv_transpose_1d_3d_against_loops(tmp_path, r, attrs):
    sp = [4] if r == 1 else [2, 3, 2]
    k = [3] if r == 1 else [2, 2, 3]
    g = attrs.get("group", 1)
    x = rng.standard_normal((2, 4, *sp)).astype(np.float32)
    w = rng.standard_normal((4, 3, *k)).astype(np.float32)
    b = rng.standard_normal(3 * g).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)
    m = import_onnx(model(tmp_path, [node], [("x", F, [2, 4, *sp])], [("y", F, r + 2)],
                          {"w": w, "b": b}))
    assert [n.op for n in m.nodes] == [f"conv_transpose{r}d"]
    pads = attrs.get("pads", [0] * (2 * r))
    want = onnx_conv_transpose(x, w, b, attrs.get("strides", [1] * r),
                               attrs.get("dilations", [1] * r), g,
                               attrs.get("output_padding", [0] * r), pads[:r], pads[r:])
    np.testing.assert_allclose(run(m, {"x": x})[0], want, rtol=1e-10, atol=1e-10)


def test_conv_transpose_3d_output_shape_and_auto_pad(tmp_path):
    x = rng.standard_normal((1, 2, 2, 3, 2)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3, 3)).astype(np.float32)
    for at, size in [({"output_shape": [5, 7, 5], "strides": [2, 2, 2]}, [5, 7, 5]),
                     ({"auto_pad": "SAME_UPPER", "strides": [2, 1, 2]}, [4, 3, 4])]:
        node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], **at)
        g = import_onnx(model(tmp_path, [node], [("x", F, [1, 2, 2, 3, 2])], [("y", F, 5)],
                              {"w": w}))
        s = at["strides"]
        full = [(n - 1) * ss + 3 for n, ss in zip((2, 3, 2), s)]
        total = [f - o for f, o in zip(full, size)]
        before = [t // 2 if "auto_pad" in at else t - t // 2 for t in total]
        want = onnx_conv_transpose(x, w, None, s, [1, 1, 1], 1, [0, 0, 0], before,
                                   [t - bb for t, bb in zip(total, before)])
        np.testing.assert_allclose(run(g, {"x": x})[0], want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("wshape,xshape,attrs,needles", [
    ((2, 2, 3), [1, 2, 4], {"pads": [1, 0, 0, 1]}, ("pads=[1, 0, 0, 1]", "2 non-negative")),
    ((2, 2, 3), [1, 2, 4], {"strides": [1, 1]}, ("strides=[1, 1]", "expected 1 values")),
    ((2, 2, 3), [1, 2, 4], {"kernel_shape": [2]}, ("kernel_shape=[2]",)),
    ((2, 2, 3, 3), [1, 2, 4], {}, ("1-D, 2-D and 3-D",)),
    ((2, 2, 3), [1, 2, 4], {"output_shape": [1, 2, 3, 4]}, ("output_shape=[1, 2, 3, 4]",))])
def test_conv_transpose_refusals(tmp_path, wshape, xshape, attrs, needles):
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="ct", **attrs)
    refused(model(tmp_path, [node], [("x", F, xshape)], [("y", F, len(xshape))],
                  {"w": np.ones(wshape, np.float32)}), "'ct'", "(ConvTranspose)", *needles)
