"""refq.algorithms.seq_mse: Sequential MSE weight encodings (AIMET 2.42, aimet.md §12).

The hand example: one dense layer, W = [[28, −12, 5.25], [14, 6.375, −3.125], [−14, 0, 6]], 4-bit
symmetric per-channel, K = 4. Candidate k has max_k = absmax·k/4 = (7k, 3.5k, 3.5k), so the
scales are Δ_k = max_k/7 = (k, k/2, k/2) and the QDQ weights are
    k=1: [7, −8, 5]     [3.5, 3.5, −3]     [−4, 0, 3.5]
    k=2: [14, −12, 6]   [7, 6, −3]         [−8, 0, 6]
    k=3: [21, −12, 6]   [10.5, 6, −3]      [−12, 0, 6]
    k=4: [28, −12, 4]   [14, 6, −4]        [−14, 0, 6]
On the batches A = [[0.5, 1, 2]] and B = [[0, 1, 2]] (Y_A = (12.5, 7.125, 5), Y_B = (−1.5, 0.125,
12)) the errors Ŷ_k − Y are ERRORS below; each loss is computed from them by hand.
"""
import math

import numpy as np
import pytest

import refq
from refq.algorithms.seq_mse import (SUPPORTED_PARAM_BW, candidate_losses,
                                     candidate_ranges, seq_mse)
from refq.errors import QuantError, RefqError
from refq.graph import Graph, Node, TensorSpec
from refq.quant.encoding import encoding_from_min_max
from refq.quant.quantsim import QuantSim

W_HAND = np.array([[28, -12, 5.25], [14, 6.375, -3.125], [-14, 0, 6]], np.float32)
BATCH_A = np.array([[0.5, 1, 2]], np.float32)
BATCH_B = np.array([[0, 1, 2]], np.float32)
#: ERRORS[batch][k − 1] = Ŷ_k − Y per output channel (hand computation, module docstring)
ERRORS = {"A": [[-7, -63 / 8, 0], [-5.5, -29 / 8, 3], [-2, -15 / 8, 1], [-2.5, -17 / 8, 0]],
          "B": [[3.5, -21 / 8, -5], [1.5, -1 / 8, 0], [1.5, -1 / 8, 0], [-2.5, -17 / 8, 0]]}
Y = {"A": [12.5, 7.125, 5], "B": [-1.5, 0.125, 12]}


def dense_graph(w, n_in=3):
    node = Node("fc", "dense", ["x"], ["fc"], {}, {"weight": np.asarray(w, np.float32)})
    return Graph([TensorSpec("x", (None, n_in))], ["fc"], [node], name="one_dense")


def hand_sim(param_bw=4, **kw):
    return QuantSim(dense_graph(W_HAND), param_bw=param_bw, **kw)


def two_layer_graph(seed=0):
    """conv 3x3 (4 → 6, bias) → relu → conv 1x1 (6 → 5)."""
    r = np.random.default_rng(seed)
    nodes = [Node("c1", "conv2d", ["x"], ["c1"], {"padding": "same"},
                  {"weight": r.normal(0, 0.5, (6, 3, 3, 4)).astype(np.float32),
                   "bias": r.normal(0, 0.1, 6).astype(np.float32)}),
             Node("r1", "relu", ["c1"], ["r1"]),
             Node("c2", "conv2d", ["r1"], ["c2"], {},
                  {"weight": r.normal(0, 0.5, (5, 1, 1, 6)).astype(np.float32)})]
    return Graph([TensorSpec("x", (None, 6, 6, 4))], ["c2"], nodes, name="two_conv")


def two_layer_data(seed=1):
    r = np.random.default_rng(seed)
    return [r.normal(0, 1, (3, 6, 6, 4)).astype(np.float32) for _ in range(2)]


# ----------------------------------------------------------------------------- the hand example

def test_candidate_ranges_by_hand():
    lo, hi = candidate_ranges(W_HAND, 4, symmetric=True)
    np.testing.assert_array_equal(hi, [[7, 3.5, 3.5], [14, 7, 7], [21, 10.5, 10.5],
                                       [28, 14, 14]])
    np.testing.assert_array_equal(lo, -hi)
    lo, hi = candidate_ranges(W_HAND, 4, symmetric=False)
    np.testing.assert_array_equal(hi, [[7, 3.5, 1.5], [14, 7, 3], [21, 10.5, 4.5], [28, 14, 6]])
    np.testing.assert_array_equal(lo, [[-3, -0.78125, -3.5], [-6, -1.5625, -7],
                                       [-9, -2.34375, -10.5], [-12, -3.125, -14]])


def test_dense_hand_losses_and_choice_mse():
    sim = hand_sim()
    q = sim.quantizers["fc.weight"]
    assert (q.axis, q.symmetric, q.bitwidth) == (0, True, 4)
    losses, _, _ = candidate_losses(sim.graph.node("fc"), q, [BATCH_A, BATCH_B],
                                    [BATCH_A, BATCH_B], 4, "mse", sim.numerics)
    expected = [[61.25, 4410 / 64, 25], [32.5, 842 / 64, 9], [6.25, 226 / 64, 1],
                [12.5, 578 / 64, 0]]
    np.testing.assert_array_equal(losses, expected)
    new, report = seq_mse(sim, [BATCH_A, BATCH_B], num_candidates=4)
    layer, = report["layers"]
    assert layer["candidate"] == [3, 3, 4]
    assert layer["loss"] == [6.25, 226 / 64, 0.0]
    assert layer["loss_full_range"] == [12.5, 578 / 64, 0.0]
    enc = new.encodings["fc.weight"]
    np.testing.assert_array_equal(enc.scale, np.float32([3, 1.5, 2]))
    assert enc == encoding_from_min_max(np.float32([-21, -10.5, -14]), np.float32([21, 10.5, 14]),
                                        4, True, axis=0)
    w_hat = new.sim_params()["fc"]["weight"]
    np.testing.assert_array_equal(w_hat, [[21, -12, 6], [10.5, 6, -3], [-14, 0, 6]])
    assert report["skipped"] == [] and report["num_batches"] == 2


def test_dense_hand_losses_l1_and_sqnr():
    sim = hand_sim()
    node, q = sim.graph.node("fc"), sim.quantizers["fc.weight"]
    l1, _, _ = candidate_losses(node, q, [BATCH_A, BATCH_B], [BATCH_A, BATCH_B], 4, "l1",
                                sim.numerics)
    np.testing.assert_array_equal(l1, [[10.5, 84 / 8, 5], [7, 30 / 8, 3], [3.5, 16 / 8, 1],
                                       [5, 34 / 8, 0]])
    sqnr, _, _ = candidate_losses(node, q, [BATCH_A, BATCH_B], [BATCH_A, BATCH_B], 4, "sqnr",
                                  sim.numerics)
    # one sample per batch: −10·log10(y² / (e² + 1e-10)), summed over the two batches
    want = [[sum(-10 * math.log10(Y[b][c] ** 2 / (ERRORS[b][k][c] ** 2 + 1e-10)) for b in "AB")
             for c in range(3)] for k in range(4)]
    np.testing.assert_allclose(sqnr, want, rtol=1e-12)
    _, report = seq_mse(sim, [BATCH_A, BATCH_B], num_candidates=4, loss_fn="l1")
    assert report["layers"][0]["candidate"] == [3, 3, 4]
    _, report = seq_mse(sim, [BATCH_A, BATCH_B], num_candidates=4, loss_fn="sqnr")
    # channel 2: k = 1 and k = 4 are exact on batch A (−114 dB each); B decides for k = 4
    assert report["layers"][0]["candidate"] == [3, 3, 4]


def test_tie_goes_to_the_lowest_candidate():
    """On batch B alone, k = 2 and k = 3 tie for channels 0 and 1 (errors 1.5 and −1/8), and
    k = 2, 3, 4 all give 0 for channel 2: the lowest index wins."""
    sim = hand_sim()
    losses, _, _ = candidate_losses(sim.graph.node("fc"), sim.quantizers["fc.weight"], [BATCH_B],
                                    [BATCH_B], 4, "mse", sim.numerics)
    np.testing.assert_array_equal(losses, [[12.25, 441 / 64, 25], [2.25, 1 / 64, 0],
                                           [2.25, 1 / 64, 0], [6.25, 289 / 64, 0]])
    new, report = seq_mse(sim, [BATCH_B], num_candidates=4)
    assert report["layers"][0]["candidate"] == [2, 2, 2]
    np.testing.assert_array_equal(new.encodings["fc.weight"].scale, np.float32([2, 1, 1]))


def test_per_tensor_weight_takes_the_widest_chosen_range():
    sim = hand_sim(config="per_tensor")
    q = sim.quantizers["fc.weight"]
    assert q.axis is None
    new, report = seq_mse(sim, [BATCH_A, BATCH_B], num_candidates=4)
    chosen = report["layers"][0]["candidate"]
    k_max = max(chosen)
    assert new.encodings["fc.weight"] == encoding_from_min_max(-7.0 * k_max, 7.0 * k_max, 4,
                                                               True)


# ----------------------------------------------------------------------------- two layers

@pytest.mark.parametrize("loss_fn", ["mse", "l1", "sqnr"])
@pytest.mark.parametrize("inp_symmetry", ["symqt", "symfp", "asym"])
def test_two_layer_inputs_follow_inp_symmetry(inp_symmetry, loss_fn):
    """The second layer's losses equal candidate_losses on inputs recomputed independently: the
    float model's (refq.run) and the sim's with the first layer's chosen encoding, every other
    quantizer off."""
    g, data = two_layer_graph(), two_layer_data()
    sim = QuantSim(g, param_bw=4)
    new, report = seq_mse(sim, data, num_candidates=6, inp_symmetry=inp_symmetry, loss_fn=loss_fn)
    assert [layer["node"] for layer in report["layers"]] == ["c1", "c2"]
    float_in = [refq.run(g, x, trace=True)["r1"] for x in data]
    only_c1 = {"c1.weight": True}
    quant_in = [new.run(x, trace=True, enabled=only_c1)["r1"] for x in data]
    x, xq = {"symqt": (quant_in, quant_in), "symfp": (float_in, float_in),
             "asym": (float_in, quant_in)}[inp_symmetry]
    q2 = new.quantizers["c2.weight"]
    losses, lo, hi = candidate_losses(g.node("c2"), q2, x, xq, 6, loss_fn, new.numerics)
    best = np.argmin(losses, axis=0)
    layer = report["layers"][1]
    assert layer["candidate"] == (best + 1).tolist()
    np.testing.assert_array_equal(layer["loss"], losses[best, np.arange(5)])
    assert new.encodings["c2.weight"] == encoding_from_min_max(
        lo[best, np.arange(5)], hi[best, np.arange(5)], 4, True, axis=0)
    for rec in report["layers"]:
        assert all(a <= b for a, b in zip(rec["loss"], rec["loss_full_range"]))
    if inp_symmetry != "symfp":
        assert not np.array_equal(quant_in[0], float_in[0])   # the first layer's choice matters


def test_wider_weights_are_skipped_as_aimet_does():
    g, data = two_layer_graph(), two_layer_data()
    sim = QuantSim(g, param_bw=8)
    new, report = seq_mse(sim, data, num_candidates=4)
    assert report["layers"] == []
    assert report["skipped"] == [{"node": n, "reason": f"weight bitwidth 8 > {SUPPORTED_PARAM_BW} "
                                  "(AIMET SUPPORTED_PARAM_BW)"} for n in ("c1", "c2")]
    ref = QuantSim(g, param_bw=8)
    ref.compute_param_encodings()
    assert new.encodings == ref.encodings and new.frozen == set()


# ----------------------------------------------------------------------------- contract

def test_input_sim_unchanged_and_result_frozen():
    g, data = two_layer_graph(), two_layer_data()
    sim = QuantSim(g, param_bw=4)
    sim.compute_encodings(data)
    before = sim.to_json()
    weights = {n.name: n.params["weight"].copy() for n in sim.graph.nodes if n.params}
    new, _ = seq_mse(sim, data, num_candidates=5)
    assert sim.to_json() == before and type(sim) is QuantSim
    for name, w in weights.items():
        np.testing.assert_array_equal(sim.graph.node(name).params["weight"], w)
    assert type(new) is QuantSim and new.graph is not sim.graph
    assert new.frozen == {"c1.weight", "c2.weight"} and sim.frozen == set()
    chosen = {k: new.encodings[k] for k in ("c1.weight", "c2.weight")}
    assert chosen["c1.weight"] != sim.encodings["c1.weight"]
    new.compute_param_encodings()
    assert {k: new.encodings[k] for k in chosen} == chosen
    new.compute_encodings(data)       # activations calibrated, the weights stay chosen (re-snap)
    for k, enc in chosen.items():
        np.testing.assert_allclose(new.encodings[k].scale, enc.scale, rtol=1e-6)


def test_deterministic():
    g, data = two_layer_graph(), two_layer_data()
    runs = [seq_mse(QuantSim(g, param_bw=4), data, num_candidates=5, loss_fn="sqnr")
            for _ in range(2)]
    assert runs[0][1] == runs[1][1]
    assert runs[0][0].encodings == runs[1][0].encodings


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_candidates=0), "num_candidates must be a positive integer, got 0"),
    (dict(num_candidates=True), "num_candidates must be a positive integer, got True"),
    (dict(num_candidates=2.5), "num_candidates must be a positive integer, got 2.5"),
    (dict(inp_symmetry="sym"), "unknown inp_symmetry 'sym'; use one of symqt, symfp, asym"),
    (dict(loss_fn="l2"), "unknown loss_fn 'l2'; use one of mse, l1, sqnr"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(QuantError, match=match) as e:
        seq_mse(hand_sim(), [BATCH_A], **kwargs)
    assert "\n" not in str(e.value)


def test_bad_sim_and_data():
    with pytest.raises(QuantError, match="sim must be a refq QuantSim, got Graph"):
        seq_mse(dense_graph(W_HAND), [BATCH_A])
    with pytest.raises(QuantError, match="the data holds no batch"):
        seq_mse(hand_sim(), [])
    with pytest.raises(QuantError, match="seq_mse data, batch 1: input 'x' holds NaN"):
        seq_mse(hand_sim(), [BATCH_A, np.float32([[np.nan, 0, 0]])])
    with pytest.raises(RefqError, match="seq_mse data, batch 0: input 'x' has shape"):
        seq_mse(hand_sim(), [np.zeros((1, 4), np.float32)])
