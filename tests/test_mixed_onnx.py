"""A QOperator ONNX model with float segments (DequantizeLinear -> Sigmoid / Tanh, Flatten /
Softmax -> QuantizeLinear), made by onnxruntime's quantize_static, against onnxruntime and
onnx.reference (`refq.importers.onnx_mixed`, `refq.fixedpoint.mixed`).

Expected tensors: tests/data/onnx/mixed/mixed_expected.npz (make_mixed.py): `ort_<tensor>` every
node output of onnxruntime (graph optimisations disabled), `ort_default_y` its output with the
default optimisations, `ref_<tensor>` every node output of onnx.reference.
Every integer tensor equals both targets bit for bit, under both profiles. The float tensors of
the segments are refq's float32 kernels (C's expf / tanhf, `kernels.float_ref`); the targets use
other implementations of the same functions, so they differ in the last bits. Measured (max ulp,
count of the 3072 / 768 / 40 values):
                 vs onnx.reference      vs onnxruntime
    Sigmoid      2 (734)                30 (1414)   MLAS's rational approximation of logistic
    Tanh         2 (363)                3 (437)     NumPy's float32 tanh / MLAS's tanh
    Softmax      2 (15)                 2 (14)      NumPy's float32 exp / MLAS's exp and sum
None of these moves a quantized value on this data (every QuantizeLinear output is exact).
"""
import pathlib

import numpy as np
import pytest

from refq.errors import UnsupportedLayerError
from refq.fixedpoint.mixed import float_nodes
from refq.fixedpoint.run import input_encodings, output_encodings, run_int
from refq.importers.onnx import import_onnx
from refq.importers.onnx_ops_shape import flat_permutation

onnx = pytest.importorskip("onnx")

DATA = pathlib.Path(__file__).resolve().parent / "data" / "onnx" / "mixed"
#: refq tensor -> ONNX tensor of mixed.onnx
TENSORS = {"x:q": "x_quantized", "conv1_quant:q": "c1_quantized", "c1": "c1", "s": "s",
           "s:q": "s_quantized", "conv2_quant:q": "c2_quantized", "c2": "c2", "t": "t",
           "f": "f", "f:q": "f_quantized", "fc_quant:q": "mm_quantized", "mm": "mm", "y": "y"}
#: the measured float differences (module docstring): {target: {tensor: max ulp}}
ULPS = {"ref": {"s": 2, "t": 2, "f": 2, "y": 2}, "ort": {"s": 30, "t": 3, "f": 3, "y": 2}}


@pytest.fixture(scope="module")
def expected():
    with np.load(DATA / "mixed_expected.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _held(name, e):
    """An ONNX tensor as refq holds it: NCHW -> NHWC, the NCHW flattening in NHWC order."""
    if e.ndim == 4:
        return e.transpose(0, 2, 3, 1)
    if name in ("f", "f:q"):
        return e[:, flat_permutation(6, 4, 4)]
    return e


def _ulps(a, b):
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


@pytest.mark.parametrize("profile", ["onnx", "ort"])
@pytest.mark.parametrize("target", ["ref", "ort"])
def test_every_tensor_against_the_targets(expected, profile, target):
    g = import_onnx(DATA / "mixed.onnx", profile=profile)
    out, _ = run_int(g, {"x": expected["x"].transpose(0, 2, 3, 1)}, trace=True)
    for t, o in TENSORS.items():
        want, got = _held(t, expected[f"{target}_{o}"]), np.asarray(out[t])
        assert got.shape == want.shape, t
        if want.dtype.kind == "f":
            got32 = got.astype(np.float32)
            assert np.array_equal(got32.astype(np.float64), got), t      # float32 values
            assert _ulps(got32, want).max() <= ULPS[target].get(t, 0), t
        else:
            assert np.array_equal(got.astype(np.int64), want.astype(np.int64)), t


def test_graph_structure_and_codes_io(expected):
    g = import_onnx(DATA / "mixed.onnx", profile="ort")
    ops = [n.op for n in g.nodes]
    assert ops.count("int_quantize") == 3 and ops.count("int_dequantize") == 3
    assert float_nodes(g) == ["sig", "tanh", "flat", "softmax"]
    (q,) = input_encodings(g).values()
    assert q.dtype == "uint8" and output_encodings(g) == {}        # the softmax output is float
    codes = expected["ort_x_quantized"].transpose(0, 2, 3, 1)
    y, _ = run_int(g, {"x": codes}, codes=True)
    assert _ulps(y["y"].astype(np.float32), expected["ort_default_y"]).max() <= 2


def _edited(tmp_path, edit):
    m = onnx.load(DATA / "mixed.onnx")
    edit(m)
    path = tmp_path / "edited.onnx"
    onnx.save(m, path)
    return path


def test_float_op_refq_lacks_is_one_line_error(tmp_path):
    def erf(m):
        next(n for n in m.graph.node if n.op_type == "Tanh").op_type = "Erf"

    with pytest.raises(UnsupportedLayerError) as e:
        import_onnx(_edited(tmp_path, erf))
    msg = str(e.value)
    assert "\n" not in msg and "node 'tanh' (Erf)" in msg and "float segment" in msg


def test_quantize_with_an_encoding_its_reader_does_not_state_is_one_line_error(tmp_path):
    from onnx import numpy_helper

    def other_scale(m):
        m.graph.initializer.append(numpy_helper.from_array(np.float32(0.5), "other_scale"))
        q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "s")
        q.input[1] = "other_scale"

    with pytest.raises(UnsupportedLayerError) as e:
        import_onnx(_edited(tmp_path, other_scale))
    msg = str(e.value)
    assert "\n" not in msg and "(QLinearConv)" in msg and "differ from that tensor's encoding" in msg


def test_softmax_over_another_axis_is_one_line_error(tmp_path):
    def axis0(m):
        n = next(n for n in m.graph.node if n.op_type == "Softmax")
        del n.attribute[:]
        n.attribute.append(onnx.helper.make_attribute("axis", 0))

    with pytest.raises(UnsupportedLayerError) as e:
        import_onnx(_edited(tmp_path, axis0))
    msg = str(e.value)
    assert "\n" not in msg and "softmax over axis 0" in msg


def test_golden_case_of_the_mixed_model(expected, tmp_path):
    from refq.cli import main
    from refq.conformance import load_case, reproduce

    np.save(tmp_path / "x.npy", expected["x"][:2].transpose(0, 2, 3, 1))
    assert main(["golden", "generate", "--model", str(DATA / "mixed.onnx"), "--inputs",
                 str(tmp_path / "x.npy"), "--out", str(tmp_path / "g"), "--quiet"]) == 0
    graph, inputs, outputs, trace, doc = load_case(tmp_path / "g" / "model.mixed.onnx")
    assert doc["kind"] == "integer" and doc["profile"] == "onnx"
    y, tr = reproduce(graph, inputs, doc)
    assert all(np.array_equal(tr[t], trace[t]) for t in trace)
    assert sorted(t for t in trace if trace[t].dtype == np.float32) == \
        ["c1", "c2", "f", "mm", "s", "t", "y"]
    assert _ulps(outputs["y"], expected["ref_y"][:2]).max() <= 2
