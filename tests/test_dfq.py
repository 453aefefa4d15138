"""refq.algorithms.dfq.prepare: BN folding -> CLE -> bias correction as one pipeline.

`prepare` only orders the three algorithms, so its result must be bit for bit what calling
`fold_batch_norms`, `equalize` and `correct_bias` by hand gives, it never touches its input, CLE
alone folds first, and no step gives an equal copy. On the bundled PP-OCR classifier: fold + CLE
(without high-bias absorption) keeps the float function, and fold + CLE + empirical bias correction
improves a per-tensor W6A8 simulation over fold alone.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import refq
from refq.algorithms import correct_bias, equalize, fold_batch_norms, prepare
from refq.graph import Graph, Node, TensorSpec
from refq.quant.quantsim import QuantSim

f32 = np.float32


def _bn(c, r):
    return {"gamma": r.uniform(0.5, 2, c).astype(f32), "beta": r.normal(0, 0.3, c).astype(f32),
            "mean": r.normal(0, 0.2, c).astype(f32), "variance": r.uniform(0.5, 2, c).astype(f32)}


def net(act2="relu"):
    """conv 3x3 -> BN -> relu -> depthwise 3x3 -> BN -> act2 -> conv 1x1 -> BN -> relu -> gap ->
    dense: one CLE triplet (conv, depthwise, conv) when act2 is relu."""
    r = np.random.default_rng(5)
    return Graph([TensorSpec("x", (None, 7, 7, 3))], ["y"], [
        Node("c1", "conv2d", ["x"], ["c1"], {"padding": "same"},
             {"weight": r.normal(0, 0.5, (4, 3, 3, 3)).astype(f32)}),
        Node("bn1", "batch_norm", ["c1"], ["b1"], {"epsilon": 1e-3}, _bn(4, r)),
        Node("r1", "relu", ["b1"], ["r1"]),
        Node("dw", "conv2d", ["r1"], ["dw"], {"padding": "same", "groups": 4},
             {"weight": (r.normal(0, 0.5, (4, 3, 3, 1)) * [[[[0.1]]], [[[3]]], [[[1]]], [[[0.5]]]])
              .astype(f32), "bias": r.normal(0, 0.1, 4).astype(f32)}),
        Node("bn2", "batch_norm", ["dw"], ["b2"], {"epsilon": 1e-3}, _bn(4, r)),
        Node("r2", act2, ["b2"], ["r2"]),
        Node("c2", "conv2d", ["r2"], ["c2"], {},
             {"weight": r.normal(0, 0.5, (6, 1, 1, 4)).astype(f32)}),
        Node("bn3", "batch_norm", ["c2"], ["b3"], {"epsilon": 1e-3}, _bn(6, r)),
        Node("r3", "relu", ["b3"], ["r3"]),
        Node("gap", "global_avg_pool2d", ["r3"], ["g"]),
        Node("fc", "dense", ["g"], ["y"], {},
             {"weight": r.normal(0, 0.5, (3, 6)).astype(f32), "bias": np.zeros(3, f32)}),
    ], name="dfq_net")


X = np.random.default_rng(6).normal(size=(16, 7, 7, 3)).astype(f32)


def snapshot(g):
    """Everything a graph holds, with parameters as (dtype, shape, bytes)."""
    return (g.name, [s.to_json() for s in g.inputs], list(g.outputs),
            [(n.to_json(), {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in n.params.items()})
             for n in g.nodes],
            json.dumps(g.meta, sort_keys=True))


def by_hand(g, fold_bn=False, cle=False, bias_correction=None, data=None, **kw):
    """The pipeline written out: fold, equalize, correct_bias."""
    cle_kw = {k: kw.pop(k) for k in ("relu6_to_relu", "absorb_high_bias") if k in kw}
    if "through_squeeze_excite" in kw:
        cle_kw["through_squeeze_excite"] = kw.pop("through_squeeze_excite")
    report = {}
    if fold_bn or cle:
        g, report["bn_fold"] = fold_batch_norms(g)
    if cle:
        g, report["cle"] = equalize(g, **cle_kw)
    if bias_correction:
        g, report["bias_correction"] = correct_bias(g, data, mode=bias_correction, **kw)
    return g, report


STEPS = {
    "fold": dict(fold_bn=True),
    "fold+cle": dict(fold_bn=True, cle=True),
    "fold+cle, no high bias": dict(fold_bn=True, cle=True, absorb_high_bias=False),
    "fold+cle+empirical": dict(fold_bn=True, cle=True, bias_correction="empirical", data=X,
                               config="per_tensor", param_bw=4),
    "fold+cle+empirical, per-channel, tf_enhanced": dict(
        fold_bn=True, cle=True, bias_correction="empirical", data=X, config="per_channel",
        param_bw=5, scheme="tf_enhanced"),
    "fold+analytical": dict(fold_bn=True, bias_correction="analytical", data=X,
                            config="per_tensor", param_bw=4),
    "empirical only": dict(bias_correction="empirical", data=X, config="per_tensor", param_bw=4,
                           batch_size=5),
}


@pytest.mark.parametrize("steps", list(STEPS))
def test_prepare_is_the_composition(steps):
    kw = STEPS[steps]
    g = net()
    before = snapshot(g)
    got, report = prepare(g, **kw)
    want, want_report = by_hand(net(), **dict(kw))
    assert snapshot(got) == snapshot(want)  # bit-identical parameters, same structure and meta
    assert json.dumps(report, sort_keys=True) == json.dumps(want_report, sort_keys=True)
    assert snapshot(g) == before  # the input is untouched
    assert got is not g
    assert not any(np.shares_memory(p, q) for n in got.nodes for p in n.params.values()
                   for m in g.nodes for q in m.params.values())


@pytest.mark.parametrize("steps", list(STEPS))
def test_prepare_report_is_strict_json(steps):
    _, report = prepare(net(), **STEPS[steps])
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == json.loads(json.dumps(report))


def test_prepare_did_something():
    """Guard for the test above: the small net has folds, a CLE triplet and corrections."""
    _, report = prepare(net(), **STEPS["fold+cle+empirical"])
    assert len(report["bn_fold"]["folded"]) == 3
    assert [s["kind"] for s in report["cle"]["sets"]] == ["triplet"]
    assert report["bias_correction"]


def test_prepare_passes_the_cle_options():
    g = net(act2="relu6")
    plain, r_plain = prepare(g, cle=True)
    assert r_plain["cle"]["sets"] == []  # relu6 ends the chain (AIMET 2.x)
    swapped, r_swapped = prepare(g, cle=True, relu6_to_relu=True)
    want, _ = by_hand(g, cle=True, relu6_to_relu=True)
    assert snapshot(swapped) == snapshot(want)
    assert r_swapped["cle"]["relu6_replaced"] and [s["kind"] for s in r_swapped["cle"]["sets"]] \
        == ["triplet"]
    assert g.node("r2").op == "relu6"


def test_cle_alone_folds_batch_norms_first():
    g = net()
    a, ra = prepare(g, cle=True)
    b, rb = prepare(g, fold_bn=True, cle=True)
    assert snapshot(a) == snapshot(b)
    assert set(ra) == {"bn_fold", "cle"} and json.dumps(ra) == json.dumps(rb)
    assert not any(n.op == "batch_norm" for n in a.nodes)
    # equalize on the unfolded graph would find nothing: every BN ends a chain
    _, unfolded = equalize(g)
    assert unfolded["sets"] == []


@pytest.mark.parametrize("kw", [{}, {"data": X}, {"fold_bn": False, "cle": False,
                                                   "bias_correction": None}])
def test_no_steps_return_an_equal_copy(kw):
    g = net()
    got, report = prepare(g, **kw)
    assert report == {}
    assert got is not g and snapshot(got) == snapshot(g)
    assert all(a is not b for a, b in zip(got.nodes, g.nodes))
    got.node("c1").params["weight"][0, 0, 0, 0] += 1  # a real copy: the input does not change
    assert snapshot(g) == snapshot(net())


def test_prepare_does_not_mutate_a_graph_with_a_bias_free_layer():
    """correct_bias adds biases where there were none; on the input nothing appears."""
    g = net()
    assert "bias" not in g.node("c1").params
    got, _ = prepare(g, bias_correction="empirical", data=X, config="per_tensor", param_bw=4)
    assert "bias" in got.node("c1").params and "bias" not in g.node("c1").params


# ----------------------------------------------------------------------------- PP-OCR

def sqnr_db(ref, got):
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))


@pytest.fixture(scope="module")
def ppocr():
    from refq import ppocr_data

    g = ppocr_data.load_model()
    calib = ppocr_data.load_calibration_set(32)   # the first 32 lines, noise seed 1
    x, _, _ = ppocr_data.load_test_set()
    held_out = x[-32:]                      # the last 32 lines, noise seed 0
    return g, calib, held_out, refq.run(g, held_out)[g.outputs[0]]


def test_ppocr_fold_and_cle_keep_the_float_function(ppocr):
    g, _, x, y0 = ppocr
    before = snapshot(g)
    gc, report = prepare(g, fold_bn=True, cle=True, absorb_high_bias=False)
    assert snapshot(g) == before
    assert report["bn_fold"]["folded"] and report["cle"]["sets"]
    assert not any(n.op == "batch_norm" for n in gc.nodes)
    y1 = refq.run(gc, x)[g.outputs[0]]
    assert np.max(np.abs(y1 - y0)) <= 1e-9 * np.max(np.abs(y0))


def test_ppocr_dfq_improves_w6a8_per_tensor(ppocr):
    """Measured (last 32 lines): fold alone 13.5 dB, fold + CLE + empirical BC 19.6 dB."""
    g, calib, x, y0 = ppocr
    out = g.outputs[0]
    folded, _ = prepare(g, fold_bn=True)
    dfq, report = prepare(g, fold_bn=True, cle=True, bias_correction="empirical", data=calib,
                          config="per_tensor", param_bw=6)
    assert report["bias_correction"]
    s_fold = sqnr_db(y0, QuantSim(folded, "per_tensor", param_bw=6).compute_encodings(calib)
                     .run(x)[out])
    s_dfq = sqnr_db(y0, QuantSim(dfq, "per_tensor", param_bw=6).compute_encodings(calib)
                    .run(x)[out])
    assert s_dfq > s_fold + 1.0, (s_fold, s_dfq)
