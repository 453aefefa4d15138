"""Golden cases made from model files (`refq golden generate --model`, refq.conformance.model_file)
and the committed cases made from the TFLite and ONNX test models: their tensors are the
framework's own (LiteRT's reference kernels, tests/data/tflite/*.npz; onnx.reference,
tests/data/onnx/qlinear_expected.npz), bit for bit; the written case loads, reproduces and passes
`refq golden verify` with the framework's dumps; a changed dump is located; bad input is one clear
error."""
import json
import pathlib

import numpy as np
import pytest

from cli_helpers import assert_error, cli
from refq.conformance import load_case, reproduce
from refq.conformance.model_file import FILE_TOLERANCE, default_case_id
from refq.model_io import escape_name

pytest.importorskip("tflite")
pytest.importorskip("onnx")

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "golden"
TFLITE = ROOT / "tests" / "data" / "tflite"
ONNX = ROOT / "tests" / "data" / "onnx"


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _litert_tensors(doc, expected) -> dict:
    """{refq tensor: LiteRT's tensor} of every case tensor that LiteRT's file holds."""
    index = doc["graph"]["meta"]["tflite"]["tensors"]
    return {t: expected[f"t{index[t]}"] for t in doc["trace"]
            if t in index and f"t{index[t]}" in expected}


def _same_bits(want, got):
    if want.dtype.kind == "f":
        return got.dtype == np.float32 and np.array_equal(got.view(np.int32),
                                                          want.view(np.int32))
    return np.array_equal(got.astype(np.int64), want.astype(np.int64))


@pytest.mark.parametrize("cid, stem, kind", [
    ("model.fer_hybrid.tflite", "fer_hybrid", "float32"),
    ("model.ops_hybrid.tflite", "ops_hybrid", "float32"),
    ("model.ops_hybrid_sym.tflite", "ops_hybrid_sym", "float32"),
    ("model.ops_int8.tflite", "ops_int8", "integer"),
    ("model.cnn16.tflite", "../tflite_16x8/cnn16", "integer"),
    ("model.gap16.tflite", "../tflite_16x8/gap16", "integer")])
def test_committed_tflite_cases_are_litert_bit_for_bit(cid, stem, kind):
    graph, inputs, outputs, trace, doc = load_case(GOLDEN / cid)
    assert doc["kind"] == kind and doc["tolerance"] == {"kind": "exact"}
    assert doc["profile"] == ("tflite" if kind == "integer" else None)
    exp = _npz(TFLITE / f"{stem}.npz")
    assert np.array_equal(next(iter(inputs.values())), exp["inputs"])
    pairs = _litert_tensors(doc, exp)
    # every tensor LiteRT holds (refq's integer graph adds a few intermediates, e.g. a negated
    # operand of a subtraction)
    held = {f"t{i}" for i in doc["graph"]["meta"]["tflite"]["tensors"].values()}
    assert len(pairs) == len([k for k in exp if k in held and k != "t0"]) >= 5
    for t, want in pairs.items():
        assert trace[t].shape == want.shape and _same_bits(want, trace[t]), t
    for t, y in outputs.items():
        assert _same_bits(pairs[t], y), t


def test_committed_qlinear_case_is_onnx_reference():
    _, inputs, outputs, trace, doc = load_case(GOLDEN / "model.qlinear.onnx")
    z = _npz(ONNX / "qlinear_expected.npz")
    assert (doc["kind"], doc["profile"]) == ("integer", "onnx")
    assert np.array_equal(inputs["x"], z["x"][:4].transpose(0, 2, 3, 1))
    assert np.array_equal(outputs["fc"], z["y_reference"][:4])   # onnx.reference, exact


def test_hybrid_kernels_appear_only_in_imported_cases():
    manifest = json.loads((GOLDEN / "manifest.json").read_text())["cases"]
    for cid in ("model.fer_hybrid.tflite", "model.ops_hybrid.tflite"):
        ops = {n["op"] for n in json.loads((GOLDEN / cid / "case.json").read_text())
               ["graph"]["nodes"]}
        assert any(op.startswith("int_hybrid_") for op in ops), cid
        assert manifest[cid]["kind"] == "float32" and manifest[cid]["profile"] is None


def _dump(dut: pathlib.Path, tensors: dict):
    dut.mkdir(parents=True, exist_ok=True)
    for t, a in tensors.items():
        np.save(dut / f"{escape_name(t)}.npy", a)


def _generate(capsys, tmp_path, model, x, *extra):
    np.save(tmp_path / "x.npy", x)
    code, out, err = cli(capsys, "golden", "generate", "--model", model, "--inputs",
                         tmp_path / "x.npy", "--out", tmp_path / "suite", *extra)
    assert code == 0, err
    return out


@pytest.mark.parametrize("stem, kind, profile", [("digit_int8", "integer", "tflite"),
                                                  ("fer_hybrid", "float32", None)])
def test_generate_from_tflite_then_verify_litert_dumps(tmp_path, capsys, stem, kind, profile):
    exp = _npz(TFLITE / f"{stem}.npz")
    out = _generate(capsys, tmp_path, TFLITE / f"{stem}.tflite", exp["inputs"])
    cid = f"model.{stem}.tflite"
    assert f"wrote case {cid} ({kind}" in out
    case = tmp_path / "suite" / cid
    graph, inputs, outputs, trace, doc = load_case(case)   # hashes, manifest, schema checked
    assert (doc["kind"], doc["profile"], doc["tolerance"]) == (kind, profile, {"kind": "exact"})
    assert [n["name"] for n in doc["graph"]["nodes"]] == [n.name for n in graph.nodes]
    y, tr = reproduce(graph, inputs, doc)
    assert all(np.array_equal(tr[t], trace[t]) for t in trace)
    litert = _litert_tensors(doc, exp)
    for t, want in litert.items():
        assert _same_bits(want, trace[t]), t
    # LiteRT's own tensors as the implementation's dumps: verify passes
    _dump(tmp_path / "dut", {t: want.astype(trace[t].dtype) for t, want in litert.items()})
    code, text, err = cli(capsys, "golden", "verify", case, "--dut", tmp_path / "dut")
    assert code == 0 and "PASS" in text, text + err
    # one element of one layer changed: verify names that layer as the first divergence
    order = sorted(litert, key=lambda t: doc["trace"][t]["order"])
    bad = order[len(order) // 2]
    a = litert[bad].astype(trace[bad].dtype).copy()
    a.flat[3] = a.flat[3] + (1 if a.dtype.kind in "iu" else np.float32(0.5))
    np.save(tmp_path / "dut" / f"{escape_name(bad)}.npy", a)
    code, text, _ = cli(capsys, "golden", "verify", case, "--dut", tmp_path / "dut", "--quiet")
    assert code == 1 and f"first divergence at layer '{doc['trace'][bad]['layer']}'" in text


def test_generate_from_onnx_qlinear_and_qdq_in_one_suite(tmp_path, capsys):
    z = _npz(ONNX / "qlinear_expected.npz")
    x = z["x"][:6].transpose(0, 2, 3, 1)
    _generate(capsys, tmp_path, ONNX / "qlinear.onnx", x, "--case", "model.qlinear.six")
    graph, inputs, outputs, _, doc = load_case(tmp_path / "suite" / "model.qlinear.six")
    assert (doc["kind"], doc["profile"]) == ("integer", "onnx")
    assert np.array_equal(outputs["fc"], z["y_reference"][:6])
    assert doc["quantization"]["x:q"]["dtype"] == "uint8"
    # a QDQ model gives a simulation case: rebuilt from graph.meta["quantsim"], reproduced
    rng = np.random.default_rng(0)
    _generate(capsys, tmp_path, ONNX / "small_qdq.onnx",
              rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32))
    graph, inputs, outputs, trace, doc = load_case(tmp_path / "suite" / "model.small_qdq.onnx")
    assert doc["kind"] == "sim" and doc["tolerance"] == FILE_TOLERANCE
    assert "quantsim" in doc["graph"]["meta"] and doc["quantization"]["conv1/weight"]["axis"] == 0
    y, tr = reproduce(graph, inputs, doc)
    assert all(np.array_equal(tr[t], trace[t]) for t in trace)
    manifest = json.loads((tmp_path / "suite" / "manifest.json").read_text())["cases"]
    assert set(manifest) == {"model.qlinear.six", "model.small_qdq.onnx"}
    # a float TFLite model: kind float (float64, allclose)
    exp = _npz(TFLITE / "ops_float.npz")
    _generate(capsys, tmp_path, TFLITE / "ops_float.tflite", exp["inputs"])
    _, _, outputs, _, doc = load_case(tmp_path / "suite" / "model.ops_float.tflite")
    assert doc["kind"] == "float" and doc["tolerance"] == FILE_TOLERANCE
    y = outputs[doc["graph"]["outputs"][0]]
    want = _litert_tensors(doc, exp)[doc["graph"]["outputs"][0]]   # LiteRT's float32 kernels
    assert y.dtype == np.float64 and np.allclose(y, want, atol=FILE_TOLERANCE["atol"],
                                                 rtol=FILE_TOLERANCE["rtol"])


def test_default_case_id():
    assert default_case_id("dir/My-Net v2.TFLite") == "model.my_net_v2.tflite"
    assert default_case_id("a/qlinear.onnx") == "model.qlinear.onnx"


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 3), np.float32))
    model = TFLITE / "fer_hybrid.tflite"
    x = tmp_path / "x.npy"
    out = tmp_path / "suite"
    cases = [
        (["--model", model, "--inputs", x], ["--out DIR"]),
        (["--model", model, "--out", out], ["--inputs"]),
        (["--inputs", x, "--out", out], ["--model"]),
        (["--model", model, "--inputs", x, "--out", out, "--cases", "float.*"], ["--cases"]),
        (["--model", model, "--inputs", x, "--out", out], ["x.npy", "[1, 8, 8, 3]", "NHWC"]),
        (["--model", tmp_path / "m.h5", "--inputs", x, "--out", out], [".tflite or .onnx"]),
        (["--model", tmp_path / "none.tflite", "--inputs", x, "--out", out], ["no such model"]),
        (["--model", model, "--inputs", x, "--out", out, "--case", "Bad Name"], ["Bad Name"]),
        (["--model", model, "--inputs", tmp_path / "missing.npy", "--out", out],
         ["missing.npy"]),
    ]
    for argv, needles in cases:
        code, _, err = cli(capsys, "golden", "generate", *argv)
        assert_error(code, err, *needles)
    np.save(tmp_path / "i.npy", np.zeros((1, 64, 64, 1), np.int8))
    code, _, err = cli(capsys, "golden", "generate", "--model", model, "--inputs",
                       tmp_path / "i.npy", "--out", out)
    assert_error(code, err, "int8", "float")
    assert not out.exists()
