"""Mixed float/integer TFLite models and uint8 inputs and outputs against LiteRT's reference
kernels, tensor by tensor (`refq.fixedpoint.mixed`, `refq.importers.tflite_mixed`).

Expected tensors (tests/data/tflite/mixed/<model>.npz, made by make_mixed.py with LiteRT's
`OpResolverType.BUILTIN_REF` and every tensor preserved): `t<index>` is TFLite tensor <index> for
the inputs in `inputs`. Integer tensors must match bit for bit, float32 tensors bit for bit as
float32, except where LiteRT's LOGISTIC calls glibc's expf: refq's float32 logistic
(`kernels.float_ref`, int_f32_unary) uses float64 exp rounded to float32, and glibc's expf is not
correctly rounded; measured: 1 of 2400 LOGISTIC outputs of float_first differs by 1 ulp
(5.96e-8; so does the MUL reading it), and none of float_mid's. Those two tensors are compared to
1 ulp, and `test_litert_logistic_is_glibc_expf` shows that 1 / (1 + expf(−x)) with glibc's expf
(`kernels.libm_expf`) reproduces every LOGISTIC output exactly.
"""
import dataclasses
import pathlib

import numpy as np
import pytest

from refq.errors import UnsupportedLayerError
from refq.fixedpoint.kernels.libm_expf import expf
from refq.fixedpoint.mixed import float_nodes
from refq.fixedpoint.run import IntPlan, input_encodings, output_encodings, run_int
from refq.importers import tflite as tflite_importer
from refq.importers.tflite import import_tflite
from expected_data import load_npz

pytest.importorskip("tflite")

DATA = pathlib.Path(__file__).resolve().parent / "data" / "tflite" / "mixed"
#: TFLite tensors computed from glibc's expf (LOGISTIC) and their readers: compared to 1 ulp.
ULP1 = {"float_first": {9, 10}}


def _expected(name):
    return load_npz(DATA / f"{name}.npz")


def _ulps(a, b):
    """|a − b| in float32 ulps (same-sign finite float32 arrays)."""
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


def _compare(name, codes=False):
    exp = _expected(name)
    g = import_tflite(DATA / f"{name}.tflite")
    x = exp["inputs"]
    out, _ = run_int(g, {g.inputs[0].name: x}, trace=True, codes=codes)
    index = g.meta["tflite"]["tensors"]
    checked = set()
    for tensor, i in index.items():
        if f"t{i}" not in exp or tensor not in out:
            continue
        want, got = exp[f"t{i}"], np.asarray(out[tensor])
        assert got.shape == want.shape, tensor
        if want.dtype.kind == "f":
            got32 = got.astype(np.float32)
            assert np.array_equal(got32.astype(got.dtype), got), tensor   # float32 values
            tol = 1 if i in ULP1.get(name, ()) else 0
            assert _ulps(got32, want).max() <= tol, (tensor, i)
        else:
            assert np.array_equal(got.astype(np.int64), want.astype(np.int64)), (tensor, i)
        checked.add(i)
    missing = [k for k in exp if k.startswith("t") and int(k[1:]) not in checked]
    assert not missing, missing          # every input and operator output is compared
    return g, exp, out


@pytest.mark.parametrize("name", ["float_mid", "float_first"])
def test_float_segments_equal_litert_on_every_tensor(name):
    g, exp, out = _compare(name)
    ops = [n.op for n in g.nodes]
    assert "int_f32_unary" in ops and "int_f32_binary" in ops and "int_f32_softmax" in ops
    assert ops.count("int_quantize") == 1 + (name == "float_mid")
    assert float_nodes(g)[-1] == g.nodes[-1].name              # the float softmax output
    assert g.meta["tflite"]["kind"] == "integer"


def test_float_first_takes_a_float_input():
    g = import_tflite(DATA / "float_first.tflite")
    assert g.nodes[0].op == "int_f32_conv2d" and g.nodes[0].inputs == [g.inputs[0].name]
    assert input_encodings(g) == {} and output_encodings(g) == {}


def test_measured_logistic_difference_is_at_most_one_element_of_one_ulp():
    exp = _expected("float_first")
    g = import_tflite(DATA / "float_first.tflite")
    out, _ = run_int(g, {g.inputs[0].name: exp["inputs"]}, trace=True)
    name = next(t for t, i in g.meta["tflite"]["tensors"].items() if i == 9)
    d = _ulps(np.asarray(out[name]).astype(np.float32), exp["t9"])
    assert d.max() <= 1 and np.count_nonzero(d) <= 1 and d.size == 2400   # measured: 1, 1


@pytest.mark.parametrize("name,x,y", [("float_first", "t8", "t9"), ("float_mid", "t10", "t11")])
def test_litert_logistic_is_glibc_expf(name, x, y):
    exp = _expected(name)
    one = np.float32(1)
    assert np.array_equal(one / (one + expf(-exp[x])), exp[y])


def test_uint8_io_codes_in_and_out():
    g, exp, out = _compare("uint8_io", codes=True)
    (q_in,), (q_out,) = input_encodings(g).values(), output_encodings(g).values()
    assert (q_in.dtype, q_in.qmin, q_in.qmax) == ("uint8", 0, 255)
    assert (q_out.dtype, q_out.qmin, q_out.qmax) == ("uint8", 0, 255)
    y, _ = run_int(g, {g.inputs[0].name: exp["inputs"]}, codes=True)
    (v,) = y.values()
    assert v.dtype == np.uint8 and np.array_equal(v, exp["t15"])
    ops = [n.op for n in g.nodes]
    assert ops[:2] == ["int_quantize", "int_requantize"] and ops[-2:] == ["int_requantize",
                                                                          "int_dequantize"]


def test_uint8_io_float_input_is_the_dequantized_codes():
    exp = _expected("uint8_io")
    g = import_tflite(DATA / "uint8_io.tflite")
    (q,) = input_encodings(g).values()
    x = ((exp["inputs"].astype(np.float32) - np.float32(q.zero_point)) * np.float32(q.scale))
    y, _ = run_int(g, {g.inputs[0].name: x})
    (q_out,) = output_encodings(g).values()
    want = (exp["t15"].astype(np.float32) - np.float32(q_out.zero_point)) * \
        np.float32(q_out.scale)
    assert np.array_equal(next(iter(y.values())), want.astype(np.float64))


def test_mixed_graph_codes_in_float_out_and_plan_reuse():
    exp = _expected("float_mid")
    g = import_tflite(DATA / "float_mid.tflite")
    (q,) = input_encodings(g).values()
    assert output_encodings(g) == {}                       # the softmax output is float
    codes = exp["t8"]                                       # LiteRT's int8 input codes
    plan = IntPlan(g)
    for _ in range(2):
        y, _ = plan.run({g.inputs[0].name: codes}, codes=True)
        assert np.array_equal(y[g.outputs[0]].astype(np.float32), exp["t18"])
    y, _ = plan.run({g.inputs[0].name: exp["inputs"]}, batch_size=1)
    assert np.array_equal(y[g.outputs[0]].astype(np.float32), exp["t18"])


def test_golden_case_and_info_of_a_mixed_model(tmp_path, capsys):
    from refq.cli import main
    from refq.conformance import load_case, reproduce
    from refq.conformance.model_file import file_case

    exp = _expected("float_mid")
    case, data = file_case(DATA / "float_mid.tflite", exp["inputs"][:1])
    assert case.kind == "integer"
    floats = [t for t, v in data.trace.items() if v.dtype == np.float32]
    assert len(floats) == 5
    assert np.array_equal(next(iter(data.outputs.values())), exp["t18"][:1])
    np.save(tmp_path / "x.npy", exp["inputs"][:1])
    assert main(["golden", "generate", "--model", str(DATA / "float_mid.tflite"), "--inputs",
                 str(tmp_path / "x.npy"), "--out", str(tmp_path / "g"), "--quiet"]) == 0
    graph, inputs, outputs, trace, doc = load_case(tmp_path / "g" / "model.float_mid.tflite")
    assert doc["kind"] == "integer" and doc["tolerance"] == {"kind": "exact"}
    y, tr = reproduce(graph, inputs, doc)
    assert all(np.array_equal(tr[t], trace[t]) for t in trace)
    assert sum(trace[t].dtype == np.float32 for t in trace) == 5
    capsys.readouterr()
    model, x, y = tmp_path / "u8.refq.h5", tmp_path / "u8.npy", tmp_path / "y.npy"
    np.save(x, _expected("uint8_io")["inputs"])
    assert main(["import", str(DATA / "uint8_io.tflite"), "-o", str(model)]) == 0
    assert main(["info", str(model)]) == 0
    assert "int_requantize" in capsys.readouterr().out
    assert main(["run", str(model), "--input", str(x), "--output", str(y), "--codes"]) == 0
    got = np.load(y)
    assert got.dtype == np.uint8 and np.array_equal(got, _expected("uint8_io")["t15"])


def _edited(monkeypatch, edit):
    """import_tflite reading models edited by `edit(model)` after parsing."""
    read = tflite_importer.read_tflite

    def read_edited(path):
        model = read(path)
        edit(model)
        return model

    monkeypatch.setattr(tflite_importer, "read_tflite", read_edited)


def test_float_op_refq_lacks_is_one_line_error(monkeypatch):
    def sin(model):
        op = next(o for o in model.operators if o.opcode == "LOGISTIC")
        model.operators[op.index] = dataclasses.replace(op, opcode="SIN")

    _edited(monkeypatch, sin)
    with pytest.raises(UnsupportedLayerError) as e:
        import_tflite(DATA / "float_mid.tflite")
    msg = str(e.value)
    assert "\n" not in msg and "float_mid.tflite: operator 3 (SIN)" in msg
    assert "float segment" in msg and "LOGISTIC" in msg


@pytest.mark.parametrize("tensor,dtype,words", [
    (15, "int16", "QUANTIZE from int8 to int16"),     # uint8_io's output QUANTIZE
    (8, "int16", "QUANTIZE of uint8 input"),          # uint8_io's input QUANTIZE
])
def test_quantize_between_other_types_is_one_line_error(monkeypatch, tensor, dtype, words):
    def retype(model):
        model.tensors[tensor] = dataclasses.replace(model.tensors[tensor], type=dtype)

    _edited(monkeypatch, retype)
    with pytest.raises(UnsupportedLayerError) as e:
        import_tflite(DATA / "uint8_io.tflite")
    msg = str(e.value)
    assert "\n" not in msg and "uint8_io.tflite: operator" in msg and words in msg


def test_quantize_of_a_float_tensor_to_uint8_inside_is_one_line_error(monkeypatch):
    def retype(model):
        model.tensors[13] = dataclasses.replace(model.tensors[13], type="uint8")

    _edited(monkeypatch, retype)
    with pytest.raises(UnsupportedLayerError) as e:
        import_tflite(DATA / "float_mid.tflite")
    msg = str(e.value)
    assert "\n" not in msg and "operator 5 (QUANTIZE)" in msg and "uint8" in msg


def test_libm_expf_equals_the_machines_glibc():
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("needs glibc")
    libm = ctypes.CDLL("libm.so.6")
    libm.expf.restype, libm.expf.argtypes = ctypes.c_float, [ctypes.c_float]
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 1 << 32, 100000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([bits[np.isfinite(bits) & (np.abs(bits) < 120)],
                        rng.uniform(-110, 95, 100000).astype(np.float32),
                        np.float32([0, -0.0, np.inf, -np.inf, 88.72283, 88.72284, -103.97,
                                    -103.98, 1e-30, -1e-30])])
    want = np.fromiter((libm.expf(float(v)) for v in x), np.float32, count=x.size)
    assert np.array_equal(expf(x).view(np.int32), want.view(np.int32))
    assert np.isnan(expf(np.float32([np.nan]))[0])


def test_litert_logistic_cutoffs():
    """LiteRT's float32 LOGISTIC: expf(x) below −9, 1 above 16.619047, else 1 / (1 + expf(−x))
    (`reference_ops::Logistic`), with glibc's expf, on points spanning both cutoffs."""
    with np.load(DATA / "logistic_litert.npz") as z:
        x, y = z["x"], z["y"]
    one = np.float32(1)
    want = np.where(x > np.float32(16.619047164916992188), one,
                    np.where(x < np.float32(-9), expf(x), one / (one + expf(-x))))
    assert np.array_equal(want.view(np.int32), y.view(np.int32))


def test_codes_need_one_kind_of_reader_per_input_and_dequantized_integer_outputs():
    from refq.errors import FixedPointError
    from refq.fixedpoint.mixed import splice
    from refq.graph import Node

    g = import_tflite(DATA / "float_mid.tflite")
    x = g.inputs[0].name
    both = splice(g, g.inputs, g.outputs, [Node("extra", "int_f32_unary", [x], ["extra"],
                                                {"kind": "tanh"}, {})], where="m.tflite")
    codes = np.zeros((1, 10, 10, 3), np.int8)
    with pytest.raises(FixedPointError, match="read by int_quantize and by float ops"):
        run_int(both, {x: codes}, codes=True)
    q = next(n.outputs[0] for n in g.nodes if n.op == "int_conv2d")
    raw = splice(g, g.inputs, [q], where="m.tflite")
    with pytest.raises(FixedPointError, match="not produced by int_dequantize"):
        run_int(raw, {x: codes}, codes=True)
    with pytest.raises(FixedPointError) as e:
        splice(g, g.inputs, ["nowhere"], where="m.tflite")
    assert str(e.value).startswith("m.tflite: ") and "\n" not in str(e.value)


def test_hardware_export_of_a_mixed_model_names_the_float_segment(tmp_path):
    from refq.errors import InputError
    from refq.exporters.hardware import export_integer_model

    g = import_tflite(DATA / "float_mid.tflite")
    with pytest.raises(InputError, match=r"float_mid\.tflite: node '.*' \(.*\) computes on float "
                                         r"tensors .*float segment") as e:
        export_integer_model(g, tmp_path / "out", source=str(DATA / "float_mid.tflite"))
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
    g = import_tflite(DATA / "float_first.tflite")   # the segment at the graph input
    with pytest.raises(InputError, match=r"computes on float tensors"):
        export_integer_model(g, tmp_path / "out2")
