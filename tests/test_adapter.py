"""refq.conformance.adapter / `refq conformance run`: the example adapter on a small generated suite
(pass where it implements the ops, skipped elsewhere), and the harness's verdicts for adapters that
return wrong values, wrong shapes, missing outputs or raise; exit codes through refq.cli.main."""
import json
import os
import sys
import textwrap

import numpy as np
import pytest

from refq.cli import main
from refq.conformance.adapter import format_adapter, golden_case_ids, run_adapter
from refq.errors import FormatError, InputError
from refq.graph import Graph, Node, TensorSpec
from refq.runtime import run
from test_verify import int_mlp_case, write_case

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_CASES = "float.dense.basic,float.relu.kinks,float.add.two,float.softmax.last_axis," \
    "integer.add.basic.tflite"


def _generate(root, pattern):
    from refq.conformance import generate

    generate(root, pattern=pattern, quiet=True)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("golden"))
    _generate(root, EXAMPLE_CASES)
    return root


def _float_case(root, cid, nodes, feeds, seed=0):
    g = Graph([TensorSpec(k, (None,) + v.shape[1:], "float64") for k, v in feeds.items()],
              [nodes[-1].outputs[0]], nodes, name=cid).validate()
    every = run(g, feeds, trace=True)
    write_case(root, cid, g, feeds, {g.outputs[0]: every[g.outputs[0]]},
               {n.outputs[0]: every[n.outputs[0]] for n in nodes[:-1]}, kind="float",
               profile=None, tolerance={"kind": "allclose", "atol": 1e-12, "rtol": 1e-12})


@pytest.fixture
def suite(tmp_path):
    """A hand-written suite (golden contract): dense+relu, add, softmax (float), an integer MLP."""
    root = str(tmp_path / "golden")
    rng = np.random.default_rng(1)
    w, b = rng.integers(-8, 8, (3, 5)) / 4.0, rng.integers(-8, 8, 3) / 4.0
    _float_case(root, "float.dense_relu", [
        Node("fc", "dense", ["x"], ["h"], {}, {"weight": w, "bias": b}),
        Node("act", "relu", ["h"], ["y"])], {"x": rng.integers(-8, 8, (4, 5)) / 8.0})
    _float_case(root, "float.add", [Node("add", "add", ["a", "b"], ["y"])],
                {"a": rng.integers(-8, 8, (2, 3)) / 8.0, "b": rng.integers(-8, 8, (2, 3)) / 8.0})
    _float_case(root, "float.softmax", [Node("sm", "softmax", ["x"], ["y"])],
                {"x": rng.integers(-8, 8, (2, 4)) / 8.0})
    int_mlp_case(root, "integer.mlp3.tflite")
    return root


def test_example_adapter_on_generated_suite(generated, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", REPO)])
    r = run_adapter("examples.adapter_numpy:run", generated)
    status = {c["case"]: c["status"] for c in r["cases"]}
    assert status == {"float.dense.basic": "pass", "float.relu.kinks": "pass",
                      "float.add.two": "pass", "float.softmax.last_axis": "skipped",
                      "integer.add.basic.tflite": "skipped"}
    assert r["passed"] and r["counts"] == {"pass": 3, "fail": 0, "skipped": 2, "error": 0}
    assert "softmax" in next(c["detail"] for c in r["cases"] if c["case"].startswith("float.soft"))
    assert main(["conformance", "run", "--adapter", "examples.adapter_numpy:run", "--golden",
                 generated, "--cases", "float.*", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "float.dense.basic" in out and "3 passed" in out and "1 skipped" in out


def test_example_adapter_on_hand_written_suite(suite, monkeypatch):
    monkeypatch.chdir(REPO)
    r = run_adapter("examples.adapter_numpy:run", suite)
    assert {c["case"]: c["status"] for c in r["cases"]} == {
        "float.add": "pass", "float.dense_relu": "pass", "float.softmax": "skipped",
        "integer.mlp3.tflite": "skipped"}


def test_case_object(suite):
    seen = {}

    def adapter(case):
        seen[case.id] = case
        raise NotImplementedError("just looking")

    r = run_adapter(adapter, suite)
    assert r["verdict"] == "INCOMPLETE" and not r["passed"] and r["counts"]["skipped"] == 4
    c = seen["integer.mlp3.tflite"]
    assert c.kind == "integer" and c.profile == "tflite" and c.output_names == ["fc3"]
    assert c.tolerance == {"kind": "exact"} and set(c.inputs) == {"x"}
    assert c.integer["nodes"]["fc2"]["op"] == "int_dense"
    assert c.integer["nodes"]["fc2"]["params"]["weight"].dtype == np.int8
    assert c.integer["tensors"]["fc2"]["dtype"] == "int8"
    assert [n.name for n in c.graph.nodes][:2] == ["x:quantize", "fc1"]
    f = seen["float.dense_relu"]
    assert f.integer is None and f.layouts == {"x": "NC"} and f.graph.nodes[0].op == "dense"


def test_verdicts(suite, tmp_path, monkeypatch, capsys):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "bad_adapter.py").write_text(textwrap.dedent("""
        import numpy as np
        from refq.runtime import run as refq_run

        def run(case):
            out = refq_run(case.graph, case.inputs)
            if case.id == "float.add":
                y = out["y"].copy()
                y[1, 2] += 1e-6
                return {"y": y}
            if case.id == "float.dense_relu":
                return {"y": out["y"][:, :2]}
            if case.id == "float.softmax":
                return {"z": out["y"]}
            raise ValueError("boom")
    """))
    monkeypatch.chdir(tmp_path / "mods")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path / "mods"))])
    r = run_adapter("bad_adapter:run", suite)
    rows = {c["case"]: c for c in r["cases"]}
    assert not r["passed"] and r["counts"] == {"pass": 0, "fail": 3, "skipped": 0, "error": 1}
    assert "first at [1, 2]" in rows["float.add"]["detail"] and "1/6" in rows["float.add"]["detail"]
    assert "shape [4, 2], expected [4, 3]" in rows["float.dense_relu"]["detail"]
    assert "output 'y' missing" in rows["float.softmax"]["detail"]
    assert rows["integer.mlp3.tflite"]["status"] == "error" and "boom" in \
        rows["integer.mlp3.tflite"]["detail"]
    text = format_adapter(r)
    assert "FAIL" in text and "3 failed, 1 errors" in text
    assert main(["conformance", "run", "--adapter", "bad_adapter:run", "--golden", suite,
                 "--quiet"]) == 1
    assert "float.add" in capsys.readouterr().out


def test_pattern_and_errors(suite, tmp_path, monkeypatch, capsys):
    assert golden_case_ids(suite, "float.*") == ["float.add", "float.dense_relu", "float.softmax"]
    assert golden_case_ids(suite, "integer.*,float.add") == ["float.add", "integer.mlp3.tflite"]
    with pytest.raises(InputError, match="no case"):
        golden_case_ids(suite, "quant.*")
    with pytest.raises(InputError, match="module:function"):
        run_adapter("no_colon", suite)
    with pytest.raises(InputError, match="cannot import"):
        run_adapter("surely_not_a_module_xyz:run", suite)
    with pytest.raises(FormatError, match="no such golden suite"):
        run_adapter(lambda c: {}, str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="no manifest.json"):
        run_adapter(lambda c: {}, str(tmp_path / "empty"))
    # a damaged suite is refused before the adapter runs
    calls = []
    path = os.path.join(suite, "float.add", "outputs", "y.npy")
    np.save(path, np.zeros((2, 3)))
    with pytest.raises(FormatError, match="sha256"):
        run_adapter(lambda c: calls.append(c), suite)
    assert calls == []
    assert main(["conformance", "run", "--adapter", "x:y", "--golden", suite, "--quiet"]) == 1
    assert "refq: error:" in capsys.readouterr().err
    doc = json.loads(open(os.path.join(suite, "manifest.json")).read())
    assert set(doc["cases"]) == {"float.add", "float.dense_relu", "float.softmax",
                                 "integer.mlp3.tflite"}


def test_quant_case_outputs_are_the_case_outputs(tmp_path):
    """A quant case's graph is a placeholder: the adapter returns the case's outputs (q, x_dq,
    x_fq), which output_names lists."""
    from refq.conformance import generate, load_case

    generate(tmp_path, "quant.signed.b8.per_tensor", quiet=True)

    def adapter(case):
        assert case.output_names == ["q", "x_dq", "x_fq"]
        return load_case(case.case_dir)[2]

    r = run_adapter(adapter, tmp_path, max_skipped=0)
    assert r["verdict"] == "PASS" and r["compared"] == 1


def test_verdict_rules():
    from refq.conformance.adapter import verdict

    c = {"pass": 2, "fail": 0, "skipped": 3, "error": 0}
    assert verdict(c)[0] == "PASS" and verdict(c, 3)[0] == "PASS"
    assert verdict(c, 2)[0] == "INCOMPLETE"
    assert verdict(dict(c, **{"pass": 0}))[0] == "INCOMPLETE"
    assert verdict(dict(c, error=1))[0] == verdict(dict(c, fail=1))[0] == "FAIL"
    with pytest.raises(InputError, match="max-skipped"):
        run_adapter(lambda case: {}, "golden", max_skipped=-1)
