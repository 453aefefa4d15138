"""Batch-norm folding: hand-worked numbers, exactness, search rules, reasons, real models."""
from __future__ import annotations

import json

import numpy as np
import pytest

import refq
from refq.algorithms.bn_fold import fold_batch_norms
from refq.errors import ParamError
from refq.graph import Graph, Node, TensorSpec

from real_models import MODELS


def bn_params(rng, c, positive_gamma=False):
    gamma = rng.uniform(0.5, 2.0, c) * (1 if positive_gamma else rng.choice([-1, 1], c))
    return {"gamma": gamma, "beta": rng.normal(size=c), "mean": rng.normal(size=c),
            "variance": rng.uniform(0.2, 3.0, c)}


def conv(name, x, y, w, b=None, **attrs):
    params = {"weight": w} if b is None else {"weight": w, "bias": b}
    return Node(name, "conv2d", [x], [y], attrs, params)


def bn(name, x, y, params, eps=1e-3):
    return Node(name, "batch_norm", [x], [y], {"epsilon": eps}, params)


def rel_diff(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def outputs(g, x):
    return refq.run(g, {g.inputs[0].name: x})


def snapshot(g):
    return ([(n.name, n.op, list(n.inputs), list(n.outputs), json.dumps(n.attrs, sort_keys=True),
              {k: (v.dtype.str, v.tobytes()) for k, v in n.params.items()}) for n in g.nodes],
            json.dumps(g.meta, sort_keys=True), list(g.outputs))


# ---- hand-worked numbers ----------------------------------------------------------------
def tiny_backward(bias):
    bnp = {"gamma": np.array([4.0]), "beta": np.array([3.0]), "mean": np.array([1.0]),
           "variance": np.array([3.0])}  # sigma = sqrt(3 + 1) = 2, k = 4 / 2 = 2
    return Graph([TensorSpec("x", (None, 2, 2, 1))], ["out"], [
        conv("c", "x", "c_out", np.full((1, 1, 1, 1), 3.0, np.float32),
             None if bias is None else np.array([bias], np.float32)),
        bn("bn", "c_out", "bn_out", bnp, eps=1.0),
        Node("act", "relu", ["bn_out"], ["out"]),
    ])


@pytest.mark.parametrize("bias, expect_b", [(None, 1.0), (0.5, 2.0)])
def test_backward_fold_hand_worked(bias, expect_b):
    # W' = W·k = 3·2 = 6;  b' = beta − (mean − b)·k = 3 − (1 − b)·2
    g, rep = fold_batch_norms(tiny_backward(bias))
    c = g.node("c")
    assert [n.name for n in g.nodes] == ["c", "act"]
    assert c.outputs == ["bn_out"] and g.node("act").inputs == ["bn_out"]
    assert c.params["weight"].dtype == np.float64 and c.params["bias"].dtype == np.float64
    assert c.params["weight"].ravel().tolist() == [6.0]
    assert c.params["bias"].tolist() == [expect_b]
    assert rep["folded"] == [{"bn": "bn", "into": "c", "direction": "backward"}]
    assert rep["not_folded"] == []
    assert g.meta["folded_bn"] == {"c": {"gamma": [4.0], "beta": [3.0]}}
    json.dumps(rep)


def test_forward_fold_hand_worked():
    # BN: k = gamma/sqrt(var + eps) = [2, 0.5]; shift t = beta − mean·k = [1 − 2, 0 − 1] = [−1, −1]
    bnp = {"gamma": np.array([2.0, 1.0]), "beta": np.array([1.0, 0.0]),
           "mean": np.array([1.0, 2.0]), "variance": np.array([0.5, 3.5])}
    w = np.zeros((1, 2, 1, 2))
    w[0, :, 0, 0] = [1.0, 2.0]   # Ŵ[0, 0] = 3
    w[0, :, 0, 1] = [-1.0, 4.0]  # Ŵ[0, 1] = 3
    g0 = Graph([TensorSpec("x", (None, 3, 3, 2))], ["y"], [
        bn("bn", "x", "bn_out", bnp, eps=0.5),
        conv("c", "bn_out", "y", w, np.array([10.0]), padding="valid"),
    ])
    g, rep = fold_batch_norms(g0)
    c = g.node("c")
    assert [n.name for n in g.nodes] == ["c"] and c.inputs == ["x"] and c.outputs == ["y"]
    np.testing.assert_array_equal(c.params["weight"][0, :, 0, 0], [2.0, 4.0])
    np.testing.assert_array_equal(c.params["weight"][0, :, 0, 1], [-0.5, 2.0])
    assert c.params["bias"].tolist() == [10.0 + 3 * -1.0 + 3 * -1.0]
    assert rep["folded"] == [{"bn": "bn", "into": "c", "direction": "forward"}]
    assert "folded_bn" not in g.meta  # forward folds describe the input, not the output


def test_negative_variance_is_an_error():
    g = tiny_backward(None)
    g.node("bn").params["variance"] = np.array([-2.0])
    with pytest.raises(ParamError, match="node .bn.*variance"):
        fold_batch_norms(g)


# ---- exactness and search rules ---------------------------------------------------------
def mixed_graph(seed=0):
    """BN->conv(valid), conv->BN, dw->BN, 1x1 'same' conv->BN, BN->dense, dense->BN (output)."""
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.normal(size=s)  # noqa: E731
    return Graph([TensorSpec("x", (None, 8, 8, 3))], ["y"], [
        bn("bn_a", "x", "a", bn_params(rng, 3)),
        conv("c1", "a", "c1", r(4, 3, 3, 3), padding="valid"),
        bn("bn_b", "c1", "b", bn_params(rng, 4)),
        Node("relu", "relu", ["b"], ["b_r"]),
        conv("dw", "b_r", "dw", r(4, 3, 3, 1), r(4), padding="same", groups=4),
        bn("bn_c", "dw", "c", bn_params(rng, 4)),
        conv("pw", "c", "pw", r(5, 1, 1, 4), padding="same", strides=[2, 2]),
        bn("bn_d", "pw", "d", bn_params(rng, 5)),
        Node("flat", "flatten", ["d"], ["f"]),
        bn("bn_e", "f", "e", bn_params(rng, 45)),
        Node("fc", "dense", ["e"], ["fc"], {}, {"weight": r(6, 45), "bias": r(6)}),
        bn("bn_f", "fc", "y", bn_params(rng, 6)),
    ])


def test_all_fold_kinds_preserve_the_function():
    g0 = mixed_graph()
    before = snapshot(g0)
    g, rep = fold_batch_norms(g0)
    assert snapshot(g0) == before  # the input is untouched
    got = {(f["bn"], f["into"], f["direction"]) for f in rep["folded"]}
    assert got == {("bn_b", "c1", "backward"), ("bn_c", "dw", "backward"),
                   ("bn_d", "pw", "backward"), ("bn_f", "fc", "backward"),
                   ("bn_a", "c1", "forward"), ("bn_e", "fc", "forward")}
    assert [f["direction"] for f in rep["folded"]] == ["backward"] * 4 + ["forward"] * 2
    assert not any(n.op == "batch_norm" for n in g.nodes)
    assert sorted(g.meta["folded_bn"]) == ["c1", "dw", "fc", "pw"]
    assert g.outputs == ["y"] and g.node("fc").outputs == ["y"]
    x = np.random.default_rng(1).normal(size=(3, 8, 8, 3))
    assert rel_diff(outputs(g0, x)["y"], outputs(g, x)["y"]) <= 1e-12
    for n in g.nodes:
        for v in n.params.values():
            assert v.dtype == np.float64


def test_backward_fold_has_priority():
    rng = np.random.default_rng(2)
    g0 = Graph([TensorSpec("x", (None, 5, 5, 2))], ["y"], [
        conv("c1", "x", "c1", rng.normal(size=(3, 1, 1, 2))),
        bn("bn", "c1", "bn", bn_params(rng, 3)),
        conv("c2", "bn", "y", rng.normal(size=(2, 1, 1, 3))),  # a valid forward target too
    ])
    g, rep = fold_batch_norms(g0)
    assert rep["folded"] == [{"bn": "bn", "into": "c1", "direction": "backward"}]
    np.testing.assert_array_equal(g.node("c2").params["weight"], g0.node("c2").params["weight"])
    assert "bias" not in g.node("c2").params


def reason(rep, name):
    (r,) = [e["reason"] for e in rep["not_folded"] if e["bn"] == name]
    return r


def test_unfoldable_batch_norms_are_reported_and_kept():
    rng = np.random.default_rng(3)
    g0 = Graph([TensorSpec("x", (None, 6, 6, 2))], ["y1", "y2", "y3", "y4"], [
        bn("bn_pad", "x", "p", bn_params(rng, 2)),
        conv("c_same", "p", "c_same", rng.normal(size=(2, 3, 3, 2)), padding="same"),
        bn("bn_dw", "c_same", "q", bn_params(rng, 2)),  # backward into c_same instead
        conv("c_fan", "x", "c_fan", rng.normal(size=(2, 1, 1, 2))),
        bn("bn_fan", "c_fan", "f", bn_params(rng, 2)),
        Node("relu_fan", "relu", ["c_fan"], ["y2"]),
        bn("bn_grp", "f", "g", bn_params(rng, 2)),
        conv("dw", "g", "y1", rng.normal(size=(2, 3, 3, 1)), groups=2),
        bn("bn_relu", "q", "r", bn_params(rng, 2)),
        Node("relu", "relu", ["r"], ["y3"]),
        bn("bn_two", "x", "t", bn_params(rng, 2)),
        Node("add", "add", ["t", "t"], ["y4"]),
    ])
    before = snapshot(g0)
    g, rep = fold_batch_norms(g0)
    assert snapshot(g0) == before
    assert rep["folded"] == [{"bn": "bn_dw", "into": "c_same", "direction": "backward"}]
    assert "forward fold into a padded conv is not exact" in reason(rep, "bn_pad")
    assert "graph input" in reason(rep, "bn_pad")
    assert "conv2d output has 2 consumers" in reason(rep, "bn_fan")
    assert "groups != 1" in reason(rep, "bn_grp")
    assert "consumer 'relu' is relu, not conv2d/dense" in reason(rep, "bn_relu")
    assert "output has 2 consumers" in reason(rep, "bn_two")
    assert sorted(n.name for n in g.nodes if n.op == "batch_norm") == [
        "bn_fan", "bn_grp", "bn_pad", "bn_relu", "bn_two"]
    x = rng.normal(size=(2, 6, 6, 2))
    y0, y = outputs(g0, x), outputs(g, x)
    for k in g0.outputs:
        assert rel_diff(y0[k], y[k]) <= 1e-12
    json.dumps(rep)


def test_explicit_padding_blocks_a_forward_fold_and_zero_pads_do_not():
    rng = np.random.default_rng(4)
    for pads, folds in (([0, 0, 0, 0], True), ([0, 1, 0, 0], False)):
        g0 = Graph([TensorSpec("x", (None, 5, 5, 2))], ["y"], [
            bn("bn", "x", "b", bn_params(rng, 2)),
            conv("c", "b", "y", rng.normal(size=(3, 2, 2, 2)), padding="explicit", pads=pads),
        ])
        g, rep = fold_batch_norms(g0)
        assert bool(rep["folded"]) == folds
        x = rng.normal(size=(2, 5, 5, 2))
        assert rel_diff(outputs(g0, x)["y"], outputs(g, x)["y"]) <= 1e-12


def test_graph_without_batch_norm_is_returned_equal():
    g0 = tiny_backward(0.5)
    g0.nodes = [n for n in g0.nodes if n.op != "batch_norm"]
    g0.node("act").inputs = ["c_out"]
    g, rep = fold_batch_norms(g0)
    assert rep["folded"] == [] and rep["not_folded"] == []
    assert snapshot(g) == snapshot(g0.copy().validate()) and g is not g0  # attrs normalised


# ---- real models ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real():
    return {k: refq.import_keras(p) for k, p in MODELS.items()}


EXPECTED_FOLDS = {"fer": 14, "digit": 0, "mnv1": 11, "ppocr": 35}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_models_fold_exactly(real, name):
    g0 = real[name]
    before = snapshot(g0)
    g, rep = fold_batch_norms(g0)
    assert snapshot(g0) == before
    assert len(rep["folded"]) == EXPECTED_FOLDS[name] and rep["not_folded"] == []
    assert all(f["direction"] == "backward" for f in rep["folded"])
    assert not any(n.op == "batch_norm" for n in g.nodes)
    assert len(g.meta.get("folded_bn", {})) == EXPECTED_FOLDS[name]
    json.dumps(rep)
    json.dumps(g.meta)
    shape = g0.inputs[0].shape[1:]
    x = np.random.default_rng(5).normal(size=(3, *shape))
    (out,) = g0.outputs
    assert rel_diff(outputs(g0, x)[out], outputs(g, x)[out]) <= 1e-9
