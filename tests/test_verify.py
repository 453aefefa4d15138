"""refq.conformance.verify / `refq golden verify`: injected faults in a DUT's dumps are located at
the right layer, index and value; malformed dumps and damaged cases are clear errors that write
nothing; exit codes through refq.cli.main.

The case used here is written by hand, following the golden directory contract (case.json,
params/, inputs/, outputs/, trace/, sha256 of every file, manifest.json beside it): a three-layer
integer MLP lowered for the tflite profile, traced with run_int."""
import hashlib
import json
import os

import numpy as np
import pytest

from refq import __version__
from refq.cli import main
from refq.conformance.verify import format_verify, read_case, verify
from refq.errors import FormatError, InputError
from refq.exporters.hardware import write_hex
from refq.model_io import escape_name


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_case(root, cid, graph, inputs, outputs, trace, kind="integer", profile="tflite",
               tolerance=None, quantization=None):
    """A golden case directory `root/cid` per the contract, and root/manifest.json listing it."""
    d = os.path.join(root, cid)
    doc = {"params": {}, "inputs": {}, "outputs": {}, "trace": {}}
    files = {}

    def put(section, name, a, layout=None):
        rel = f"{section}/{escape_name(name)}.npy"
        os.makedirs(os.path.join(d, section), exist_ok=True)
        with open(os.path.join(d, rel), "wb") as f:
            np.save(f, np.asarray(a), allow_pickle=False)
        files[rel] = _digest(os.path.join(d, rel))
        e = {"file": rel, "dtype": str(np.asarray(a).dtype), "shape": list(np.shape(a))}
        if layout:
            e["layout"] = layout
        return e

    gj = graph.to_json()
    order = {n["outputs"][0]: (n["name"], i) for i, n in enumerate(gj["nodes"])}
    for n in graph.topological_order():
        for p, a in n.params.items():
            doc["params"][f"{n.name}/{p}"] = put("params", f"{n.name}/{p}", a)
    for k, a in inputs.items():
        doc["inputs"][k] = put("inputs", k, a, "NC")
    for k, a in outputs.items():
        doc["outputs"][k] = put("outputs", k, a, "NC")
    for k, a in trace.items():
        e = put("trace", k, a, "NC")
        e["layer"], e["order"] = order[k]
        doc["trace"][k] = e
    doc.update({"refq_version": __version__, "format": "refq-golden", "format_version": 1,
                "case": cid, "description": "test case", "kind": kind, "profile": profile,
                "seed": 0, "graph": gj, "quantization": quantization or {},
                "tolerance": tolerance or {"kind": "exact"}, "files": files})
    raw = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()
    with open(os.path.join(d, "case.json"), "wb") as f:
        f.write(raw)
    mpath = os.path.join(root, "manifest.json")
    manifest = {"format": "refq-golden", "format_version": 1, "refq_version": __version__,
                "cases": {}}
    if os.path.exists(mpath):
        with open(mpath) as f:
            manifest = json.load(f)
    manifest["cases"][cid] = {"sha256": hashlib.sha256(raw).hexdigest(), "kind": kind,
                              "profile": profile, "description": "test case"}
    with open(mpath, "w") as f:
        f.write(json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    return d


def int_mlp_case(root, cid="integer.mlp3.tflite", tolerance=None):
    """(case dir, {tensor: array} of everything the integer graph computes)."""
    from refq.fixedpoint.lowering import lower_from_params
    from refq.fixedpoint.run import run_int

    rng = np.random.default_rng(7)

    def layer(name, n_in, n_out, out):
        return {"name": name, "op": "dense",
                "weight": rng.integers(-127, 128, (n_out, n_in)).astype(np.int8),
                "weight_scale": 0.02, "bias": rng.integers(-500, 500, n_out).astype(np.int32),
                "activation": "relu", "output": out}

    spec = {"name": "mlp3",
            "inputs": [{"name": "x", "shape": [None, 6], "scale": 0.05, "zero_point": 0}],
            "layers": [layer("fc1", 6, 8, {"scale": 0.1, "zero_point": -128}),
                       layer("fc2", 8, 8, {"scale": 0.1, "zero_point": -128}),
                       layer("fc3", 8, 4, {"scale": 0.2, "zero_point": -128})]}
    g = lower_from_params(spec, "tflite")
    x = np.round(rng.uniform(-3, 3, (3, 6)), 3).astype(np.float32)
    every, _ = run_int(g, {"x": x}, trace=True)
    tensors = g.meta["integer"]["tensors"]    # integer tensors in their declared dtypes
    every = {k: v.astype(tensors[k]["dtype"]) if k in tensors else v for k, v in every.items()}
    trace = {n.outputs[0]: every[n.outputs[0]] for n in g.topological_order()
             if n.outputs[0] not in g.outputs}
    d = write_case(root, cid, g, {"x": x}, {g.outputs[0]: every[g.outputs[0]]}, trace,
                   tolerance=tolerance)
    return d, every


def inner_index(a):
    """The index of the last element of `a` away from its dtype's limits (safe to nudge)."""
    flat = np.flatnonzero((a.ravel() > -100) & (a.ravel() < 100))
    return tuple(int(i) for i in np.unravel_index(flat[-1], a.shape))


def dump(dut, arrays, sub=""):
    os.makedirs(os.path.join(dut, sub), exist_ok=True)
    for k, a in arrays.items():
        np.save(os.path.join(dut, sub, escape_name(k) + ".npy"), a)


def snapshot(*dirs):
    out = {}
    for d in dirs:
        for root, _, names in os.walk(d):
            for n in names:
                p = os.path.join(root, n)
                out[p] = _digest(p)
    return out


@pytest.fixture
def case(tmp_path):
    return int_mlp_case(str(tmp_path / "golden"))


def test_case_as_written(case):
    d, every = case
    c = read_case(d)
    trace = c.entries("trace")
    assert sorted(trace, key=lambda t: trace[t]["order"]) == ["x:q", "fc1", "fc2", "fc3:q"]
    assert [trace[t]["layer"] for t in ("x:q", "fc1", "fc3:q")] == ["x:quantize", "fc", "fc3"][:1] \
        + ["fc1", "fc3"]
    assert every["fc2"].dtype == np.int8


def test_clean_dut_passes(case, tmp_path, capsys):
    d, every = case
    dut = str(tmp_path / "dut")
    dump(dut, every)                      # like `refq run --trace DIR`: every tensor, flat
    r = verify(d, dut)
    assert r["passed"] and r["failed"] == 0 and r["first_divergence"] is None
    assert r["compared"] == 5 and r["trace_compared"] == 4 and r["absent_trace"] == []
    assert "PASS" in format_verify(r)
    assert main(["golden", "verify", d, "--dut", dut, "--quiet"]) == 0


def test_one_lsb_fault_in_a_middle_layer(case, tmp_path, capsys):
    d, every = case
    dut = str(tmp_path / "dut")
    bad = {k: v.copy() for k, v in every.items()}
    i = inner_index(every["fc2"])
    bad["fc2"][i] += 1                    # one LSB in the middle layer ...
    bad["fc3:q"] = np.minimum(bad["fc3:q"].astype(np.int64) + 1, 127).astype(np.int8)  # ...
    assert (bad["fc3:q"] != every["fc3:q"]).any()                     # which propagates
    bad["fc3"] = bad["fc3"] + np.float32(0.2)
    dump(dut, {k: v for k, v in bad.items() if k != "fc3"}, "trace")
    dump(dut, {"fc3": bad["fc3"]}, "outputs")
    before = snapshot(d, dut)
    r = verify(d, dut)
    assert not r["passed"] and r["failed"] == 3
    f = r["first_divergence"]
    assert (f["layer"], f["tensor"], f["order"], f["index"]) == ("fc2", "fc2", 2, list(i))
    assert (f["expected"], f["actual"], f["diff"], f["diff_unit"]) == \
        (int(every["fc2"][i]), int(every["fc2"][i]) + 1, 1, "LSB")
    rows = {t["name"]: t for t in r["tensors"]}
    assert rows["fc1"]["status"] == "pass" and rows["x:q"]["status"] == "pass"
    assert rows["fc2"]["mismatches"] == 1 and rows["fc2"]["histogram"] == {"+1": 1}
    assert rows["fc3:q"]["status"] == "fail" and rows["fc3"]["diff_unit"] == "abs"
    text = format_verify(r)
    assert "FAIL" in text and "layer 'fc2'" in text and f"index {list(i)}" in text \
        and "+1 LSB" in text

    report = tmp_path / "report.json"
    assert main(["golden", "verify", d, "--dut", dut, "--json", str(report), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "first divergence at layer 'fc2'" in out and f"expected {every['fc2'][i]}" in out
    assert json.loads(report.read_text())["first_divergence"]["index"] == list(i)
    after = snapshot(d, dut)
    assert after == before                # verify never touches the case or the dumps


def test_hex_dumps_with_sidecars(case, tmp_path):
    d, every = case
    dut = tmp_path / "dut"
    (dut / "trace").mkdir(parents=True)
    bad = every["fc1"].copy()
    i = inner_index(bad)
    bad[i] -= 3
    for t in ("x:q", "fc2", "fc3:q"):
        write_hex(dut / "trace" / (escape_name(t) + ".hex"), every[t], t, pack=4)
    # a DUT's own minimal sidecar: dtype and shape are enough
    words = "".join(f"{v & 0xff:02x}\n" for v in bad.ravel().tolist())
    (dut / "trace" / "fc1.hex").write_text(words)
    (dut / "trace" / "fc1.hex.json").write_text(json.dumps({"dtype": "int8", "shape": [3, 8]}))
    dump(str(dut), {"fc3": every["fc3"]})
    r = verify(d, str(dut))
    f = r["first_divergence"]
    assert (f["layer"], f["index"], f["diff"]) == ("fc1", list(i), -3)
    assert {t["name"]: t["status"] for t in r["tensors"]} == {
        "x:q": "pass", "fc1": "fail", "fc2": "pass", "fc3:q": "pass", "fc3": "pass"}


def test_outputs_only(case, tmp_path):
    d, every = case
    dut = str(tmp_path / "dut")
    y = every["fc3"].copy()
    y[0, 3] += np.float32(0.4)
    dump(dut, {"fc3": y})
    r = verify(d, dut)
    assert r["trace_compared"] == 0 and len(r["absent_trace"]) == 4
    assert r["first_divergence"]["tensor"] == "fc3" and r["first_divergence"]["index"] == [0, 3]
    assert "dump them to locate" in format_verify(r)


def test_float_tolerance(tmp_path):
    d, every = int_mlp_case(str(tmp_path / "g"), "quant.mlp3",
                            tolerance={"kind": "allclose", "atol": 1e-3, "rtol": 0.0})
    dut = str(tmp_path / "dut")
    dump(dut, {"fc3": every["fc3"].astype(np.float64) + 5e-4})   # another float width is fine
    assert verify(d, dut)["passed"]
    dump(dut, {"fc3": every["fc3"] + np.float32(2e-3)})
    r = verify(d, dut)
    assert not r["passed"] and r["first_divergence"]["diff_unit"] == "abs"
    assert r["first_divergence"]["diff"] == pytest.approx(2e-3, rel=1e-3)


def _errors(d, dut, tmp_path, capsys, exc, match):
    with pytest.raises(exc, match=match):
        verify(d, dut)
    report = tmp_path / "r.json"
    before = snapshot(d, dut)
    assert main(["golden", "verify", d, "--dut", dut, "--json", str(report), "--quiet"]) == 1
    assert "refq: error:" in capsys.readouterr().err
    assert not report.exists()            # nothing written
    assert snapshot(d, dut) == before


def test_wrong_shape_dtype_missing(case, tmp_path, capsys):
    d, every = case
    dut = str(tmp_path / "dut")
    dump(dut, every)
    dump(dut, {"fc2": every["fc2"][:, :7]})
    _errors(d, dut, tmp_path, capsys, InputError, r"fc2.*shape \[3, 7\], expected \[3, 8\]")
    dump(dut, {"fc2": every["fc2"].astype(np.int32)})
    _errors(d, dut, tmp_path, capsys, InputError, "dtype int32, expected int8")
    dump(dut, {"fc2": every["fc2"]})
    os.unlink(os.path.join(dut, "fc3.npy"))
    _errors(d, dut, tmp_path, capsys, InputError, "no DUT dump of output tensor 'fc3'")
    dump(dut, {"fc3": every["fc3"]})
    os.unlink(os.path.join(dut, "fc1.npy"))
    write_hex(os.path.join(dut, "fc1.hex"), every["fc1"], "fc1")
    os.unlink(os.path.join(dut, "fc1.hex.json"))
    _errors(d, dut, tmp_path, capsys, InputError, "sidecar")
    _errors(d, str(tmp_path / "nope"), tmp_path, capsys, InputError, "no such DUT")


def test_tampered_case(case, tmp_path, capsys):
    d, every = case
    dut = str(tmp_path / "dut")
    dump(dut, every)
    path = os.path.join(d, "trace", "fc2.npy")
    original = open(path, "rb").read()
    a = every["fc2"].copy()
    a[0, 0] += 1                          # the "expected" value edited to match a DUT
    np.save(path, a)
    _errors(d, dut, tmp_path, capsys, FormatError, "does not match its sha256")
    with open(path, "wb") as f:
        f.write(original)
    cj = os.path.join(d, "case.json")
    doc = json.load(open(cj))
    doc["tolerance"] = {"kind": "allclose", "atol": 10.0, "rtol": 0.0}   # loosened by hand
    with open(cj, "w") as f:
        f.write(json.dumps(doc, sort_keys=True, indent=1) + "\n")
    _errors(d, dut, tmp_path, capsys, FormatError, "manifest")
    _errors(str(tmp_path / "none"), dut, tmp_path, capsys, FormatError, "no such case")


def test_generated_model_case(tmp_path):
    """A case written by `refq.conformance.generate` (the FER model lowered for tflite, 35 traced
    tensors): its own arrays pass; one LSB in a middle layer, dumped as packed hex, is located."""
    from refq.conformance import generate

    root = str(tmp_path / "golden")
    cid = "model.fer.w8a8_per_channel.tflite"
    generate(root, cid, quiet=True)
    d = os.path.join(root, cid)
    c = read_case(d)
    dut = str(tmp_path / "dut")
    dump(dut, {t: c.array("trace", t) for t in c.entries("trace")}, "trace")
    dump(dut, {t: c.array("outputs", t) for t in c.entries("outputs")}, "outputs")
    r = verify(d, dut)
    assert r["passed"] and r["compared"] == len(set(c.entries("trace")) | set(c.entries("outputs")))
    trace = c.entries("trace")
    ints = sorted((e["order"], t) for t, e in trace.items() if e["dtype"] == "int8")
    order, t = ints[len(ints) // 2]                       # a middle layer
    a = c.array("trace", t).copy()
    i = inner_index(a)
    a[i] -= 1
    os.unlink(os.path.join(dut, "trace", escape_name(t) + ".npy"))
    write_hex(os.path.join(dut, "trace", escape_name(t) + ".hex"), a, t, pack=4)
    r = verify(d, dut)
    f = r["first_divergence"]
    assert (f["tensor"], f["layer"], f["order"], f["index"], f["diff"]) == \
        (t, trace[t]["layer"], order, list(i), -1)
    assert f["expected"] == int(c.array("trace", t)[i]) and f["actual"] == int(a[i])
    assert r["failed"] == 1 and not r["passed"]
