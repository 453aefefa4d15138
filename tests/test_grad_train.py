"""The training loop: it lowers the loss, is deterministic, leaves its input alone and stops on a
loss that is not finite, naming the step and parameter."""
from __future__ import annotations

import numpy as np
import pytest

from refq.graph import Graph, Node, TensorSpec
from refq.grad import SGD, Adam, cross_entropy, mse
from refq.grad.train import TrainingError, train
from refq.runtime import run


def mlp(seed=0):
    rng = np.random.default_rng(seed)
    nodes = [
        Node("fc1", "dense", ["x"], ["h"], params={"weight": rng.standard_normal((8, 2)) * 0.5,
                                                   "bias": np.zeros(8)}),
        Node("act", "relu", ["h"], ["a"]),
        Node("fc2", "dense", ["a"], ["logits"],
             params={"weight": rng.standard_normal((2, 8)) * 0.5, "bias": np.zeros(2)}),
    ]
    g = Graph([TensorSpec("x", (None, 2))], ["logits"], nodes, name="mlp")
    g.validate()
    return g


def two_blobs(n=64, seed=1):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    x = rng.standard_normal((n, 2)) * 0.5 + np.where(labels[:, None] == 1, 1.5, -1.5)
    return x, labels


def accuracy(g, x, labels):
    return float(np.mean(run(g, {"x": x})["logits"].argmax(1) == labels))


def test_training_lowers_the_loss_and_is_deterministic():
    g, (x, labels) = mlp(), two_blobs()
    before = {n.name: {k: v.copy() for k, v in n.params.items()} for n in g.nodes}
    trained, report = train(g, x, cross_entropy, Adam(0.05), targets=labels, epochs=3,
                            batch_size=16, evaluate=lambda m: accuracy(m, x, labels))
    assert report["steps"] == 12 and len(report["loss"]) == 12 and len(report["eval"]) == 3
    assert np.mean(report["loss"][-4:]) < 0.5 * np.mean(report["loss"][:4])
    assert report["eval"][-1] > 0.95
    for n in g.nodes:   # the input graph is unchanged
        for k, v in n.params.items():
            assert np.array_equal(v, before[n.name][k])
    again, report2 = train(g, x, cross_entropy, Adam(0.05), targets=labels, epochs=3,
                           batch_size=16)
    assert report2["loss"] == report["loss"]
    for a, b in zip(trained.nodes, again.nodes):
        for k in a.params:
            assert a.params[k].tobytes() == b.params[k].tobytes()


def test_parameters_keep_their_dtype_and_wrt_freezes_the_rest():
    g, (x, labels) = mlp(), two_blobs(32)
    for n in g.nodes:
        for k in n.params:
            n.params[k] = n.params[k].astype(np.float32)
    trained, _ = train(g, x.astype(np.float32), mse, SGD(0.1),
                       targets=np.eye(2)[labels], wrt=["fc2"], epochs=1, batch_size=8)
    nodes = {n.name: n for n in trained.nodes}
    assert all(v.dtype == np.float32 for n in trained.nodes for v in n.params.values())
    assert np.array_equal(nodes["fc1"].params["weight"], g.nodes[0].params["weight"])
    assert not np.array_equal(nodes["fc2"].params["weight"], g.nodes[2].params["weight"])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_loss_that_is_not_finite_stops_training_naming_step_and_parameter():
    g, (x, labels) = mlp(), two_blobs(32)
    with pytest.raises(TrainingError, match=r"step \d+ \(epoch 0\) gave loss .*first non-finite "
                                            r"gradient: 'fc"):
        train(g, x * 1e200, mse, SGD(1.0), targets=np.eye(2)[labels] * 1e200, batch_size=8)


def test_bad_training_input():
    g, (x, labels) = mlp(), two_blobs(8)
    from refq.errors import InputError
    with pytest.raises(InputError, match="targets for"):
        train(g, x, cross_entropy, SGD(0.1), targets=labels[:5])
    with pytest.raises(InputError, match="positive"):
        train(g, x, cross_entropy, SGD(0.1), targets=labels, epochs=0)
    with pytest.raises(InputError, match="no samples"):
        train(g, x[:0], cross_entropy, SGD(0.1), targets=labels[:0])


def test_resuming_from_a_checkpoint_gives_the_uninterrupted_run(tmp_path):
    import refq
    from refq.errors import InputError

    g, (x, labels) = mlp(), two_blobs(40)
    for n in g.nodes:   # stored as float32, trained in float64
        for k in n.params:
            n.params[k] = n.params[k].astype(np.float32)
    kw = dict(targets=labels, batch_size=16, seed=3)
    straight, report = train(g, x, cross_entropy, Adam(0.05), epochs=3, **kw)
    path = str(tmp_path / "ck.refq.h5")
    train(g, x, cross_entropy, Adam(0.05), epochs=2, checkpoint=path, **kw)
    saved = refq.load(path)
    assert saved.meta["training"]["epochs_done"] == 2
    assert all(v.dtype == np.float32 for n in saved.nodes for v in n.params.values())
    resumed, report2 = train(None, x, cross_entropy, Adam(0.05), epochs=3, resume=path, **kw)
    assert report2["loss"] == report["loss"] and report2["steps"] == report["steps"] == 9
    for a, b in zip(straight.nodes, resumed.nodes):
        for k in a.params:
            assert a.params[k].tobytes() == b.params[k].tobytes(), (a.name, k)
    with pytest.raises(InputError, match="trained with seed 3 \\(given 4\\)"):
        train(None, x, cross_entropy, Adam(0.05), epochs=3, resume=path, targets=labels,
              batch_size=16, seed=4)
    with pytest.raises(InputError, match="optimizer 'Adam' \\(given 'SGD'\\)"):
        train(None, x, cross_entropy, SGD(0.1), epochs=3, resume=path, **kw)
    state = tmp_path / "ck.refq.h5.state.npz"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not belong to"):
        train(None, x, cross_entropy, Adam(0.05), epochs=3, resume=path, **kw)
    state.unlink()
    with pytest.raises(InputError, match="cannot be read"):
        train(None, x, cross_entropy, Adam(0.05), epochs=3, resume=path, **kw)
    with pytest.raises(InputError, match="not a training checkpoint"):
        refq.save(g, str(tmp_path / "plain.refq.h5"))
        train(None, x, cross_entropy, Adam(0.05), resume=str(tmp_path / "plain.refq.h5"), **kw)
