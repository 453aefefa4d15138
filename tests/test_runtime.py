"""run(): outputs, traces, batching, compute dtype, determinism and input checking."""
from __future__ import annotations

import numpy as np
import pytest

from refq.errors import InputError, RefqError
from refq.graph import Graph, Node, TensorSpec
from refq.runtime import run

RNG = np.random.default_rng(1234)
W1 = RNG.normal(size=(5, 4))
B1 = RNG.normal(size=5)
W2 = RNG.normal(size=(3, 5)).astype(np.float32)
B2 = RNG.normal(size=3).astype(np.float32)


def mlp():
    """x[N,4] -> dense(5) -> relu -> dense(3) -> softmax; also exposes the hidden layer."""
    return Graph(
        [TensorSpec("x", (None, 4), "float32")],
        ["prob", "hidden"],
        [
            Node("fc1", "dense", ["x"], ["fc1_out"], {}, {"weight": W1.copy(), "bias": B1.copy()}),
            Node("act", "relu", ["fc1_out"], ["hidden"]),
            Node("fc2", "dense", ["hidden"], ["logits"], {}, {"weight": W2.copy(),
                                                              "bias": B2.copy()}),
            Node("sm", "softmax", ["logits"], ["prob"]),
        ], name="mlp")


def mlp_reference(x):
    x = x.astype(np.float64)
    h = np.maximum(x @ W1.T + B1, 0)
    z = h @ W2.astype(np.float64).T + B2.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), h


def two_input():
    """img[N,3,3,2] * gate[N,1,1,2] -> batch_norm -> concat with img -> flatten -> dense(2)."""
    c = 2
    bn = {"gamma": np.array([1.5, -0.5]), "beta": np.array([0.1, 0.2]),
          "mean": np.array([0.3, -0.3]), "variance": np.array([2.0, 0.5])}
    return Graph(
        [TensorSpec("img", (None, 3, 3, c), "float32"), TensorSpec("gate", (None, 1, 1, c))],
        ["y"],
        [
            Node("se", "multiply", ["img", "gate"], ["m"]),
            Node("bn", "batch_norm", ["m"], ["n"], {"epsilon": 1e-3}, bn),
            Node("cat", "concat", ["n", "img"], ["c"], {"axis": -1}),
            Node("flat", "flatten", ["c"], ["f"]),
            Node("fc", "dense", ["f"], ["y"], {}, {"weight": np.linspace(-1, 1, 2 * 36).reshape(2, 36)}),
        ], name="two_input")


def two_input_reference(img, gate, g):
    bn = g.node("bn").params
    m = img.astype(np.float64) * gate
    n = (m - bn["mean"]) / np.sqrt(bn["variance"] + 1e-3) * bn["gamma"] + bn["beta"]
    c = np.concatenate([n, img], axis=-1)
    return c.reshape(len(c), -1) @ g.node("fc").params["weight"].T


def feeds_two(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"img": rng.normal(size=(n, 3, 3, 2)).astype(np.float32),
            "gate": rng.uniform(0, 1, size=(n, 1, 1, 2)).astype(np.float32)}


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8).tobytes()


# ---- results --------------------------------------------------------------------------------
def test_mlp_matches_numpy():
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    out = run(mlp(), {"x": x})
    assert set(out) == {"prob", "hidden"}
    prob, hidden = mlp_reference(x)
    assert out["prob"].dtype == np.float64 and out["prob"].shape == (6, 3)
    np.testing.assert_allclose(out["prob"], prob, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(out["hidden"], hidden, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(out["prob"].sum(axis=1), 1, rtol=1e-14)


def test_single_array_feed_for_single_input_graph():
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    a = run(mlp(), x)
    b = run(mlp(), {"x": x})
    assert bits(a["prob"]) == bits(b["prob"])


def test_multi_input_graph_matches_numpy():
    g = two_input()
    f = feeds_two(5)
    out = run(g, f)
    assert list(out) == ["y"] and out["y"].shape == (5, 2)
    np.testing.assert_allclose(out["y"], two_input_reference(f["img"], f["gate"], g),
                               rtol=1e-12, atol=1e-12)
    # feed order does not matter
    out2 = run(g, {"gate": f["gate"], "img": f["img"]})
    assert bits(out2["y"]) == bits(out["y"])


def test_same_tensor_read_twice_by_one_node():
    g = Graph([TensorSpec("x", (None, 3))], ["y"],
              [Node("sq", "multiply", ["x", "x"], ["s"]),
               Node("sum", "add", ["s", "s", "x"], ["y"])])
    x = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])
    np.testing.assert_array_equal(run(g, x)["y"], 2 * x * x + x)
    np.testing.assert_array_equal(run(g, x, batch_size=1)["y"], 2 * x * x + x)


def test_output_consumed_downstream_and_input_as_output():
    g = Graph([TensorSpec("x", (None, 3))], ["a", "b", "x"],
              [Node("n1", "relu", ["x"], ["a"]), Node("n2", "tanh", ["a"], ["b"])])
    x = np.array([[-1.0, 0.5, 2.0]])
    out = run(g, x)
    assert set(out) == {"a", "b", "x"}
    np.testing.assert_array_equal(out["a"], np.maximum(x, 0))
    np.testing.assert_array_equal(out["b"], np.tanh(np.maximum(x, 0)))
    np.testing.assert_array_equal(out["x"], x)


def test_run_does_not_mutate_inputs_or_params():
    g = mlp()
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    x0 = x.copy()
    run(g, x, dtype=np.float32)
    run(g, x)
    np.testing.assert_array_equal(x, x0)
    assert bits(g.node("fc1").params["weight"]) == bits(W1)
    assert bits(g.node("fc2").params["bias"]) == bits(B2)
    assert g.node("fc2").params["weight"].dtype == np.float32


# ---- trace ----------------------------------------------------------------------------------
def test_trace_returns_every_tensor():
    g = mlp()
    x = RNG.normal(size=(4, 4)).astype(np.float32)
    tr = run(g, x, trace=True)
    assert set(tr) == {"x", "fc1_out", "hidden", "logits", "prob"}
    plain = run(g, x)
    for k in plain:
        assert bits(tr[k]) == bits(plain[k])
    np.testing.assert_array_equal(tr["x"], x.astype(np.float64))
    assert tr["x"].dtype == np.float64
    np.testing.assert_allclose(tr["fc1_out"], x.astype(np.float64) @ W1.T + B1, rtol=1e-13)
    np.testing.assert_array_equal(tr["hidden"], np.maximum(tr["fc1_out"], 0))


def test_trace_of_multi_input_graph_with_batches():
    g = two_input()
    f = feeds_two(5, seed=3)
    tr = run(g, f, trace=True, batch_size=2)
    assert set(tr) == {"img", "gate", "m", "n", "c", "f", "y"}
    assert tr["c"].shape == (5, 3, 3, 4) and tr["f"].shape == (5, 36)
    whole = run(g, f, trace=True)
    for k in whole:
        np.testing.assert_allclose(tr[k], whole[k], rtol=1e-12, atol=1e-15, err_msg=k)
    again = run(g, f, trace=True, batch_size=2)
    for k in tr:
        assert bits(tr[k]) == bits(again[k]), k


# ---- batching, dtype, determinism -----------------------------------------------------------
@pytest.mark.parametrize("graph,feeds", [(mlp, lambda: {"x": RNG.normal(size=(7, 4))}),
                                         (two_input, lambda: feeds_two(7, seed=5))])
def test_batching_in_float64(graph, feeds):
    """Chunking changes at most the last bits (BLAS may pick another kernel for another row
    count); a given batch_size is byte-identical from run to run."""
    g, f = graph(), feeds()
    ref = run(g, f)
    for bs in (1, 3, 7, 100, None):
        out = run(g, f, batch_size=bs)
        assert out.keys() == ref.keys()
        for k in ref:
            assert out[k].shape == ref[k].shape
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-12, atol=1e-15, err_msg=str(bs))
            assert bits(out[k]) == bits(run(g, f, batch_size=bs)[k]), (bs, k)


def test_batching_is_byte_identical_without_dense():
    """The runtime's chunking alone (elementwise, softmax, batch_norm, shape ops) changes no bit."""
    g = Graph([TensorSpec("img", (None, 3, 3, 2)), TensorSpec("gate", (None, 1, 1, 2))], ["y", "s"],
              [Node("se", "multiply", ["img", "gate"], ["m"]),
               Node("bn", "batch_norm", ["m"], ["n"], {"epsilon": 1e-3}, two_input().node("bn").params),
               Node("cat", "concat", ["n", "img"], ["c"], {"axis": 2}),
               Node("flat", "flatten", ["c"], ["f"]),
               Node("s", "sigmoid", ["f"], ["s"]),
               Node("sm", "softmax", ["f"], ["y"])])
    f = feeds_two(7, seed=11)
    for dtype in (np.float64, np.float32):
        ref = run(g, f, dtype=dtype, trace=True)
        for bs in (1, 3, None):
            out = run(g, f, dtype=dtype, batch_size=bs, trace=True)
            for k in ref:
                assert out[k].dtype == dtype
                assert bits(out[k]) == bits(ref[k]), (dtype, bs, k)


def test_batching_float32():
    g = mlp()
    x = RNG.normal(size=(7, 4)).astype(np.float32)
    ref = run(g, x, dtype=np.float32)
    for bs in (1, 3):
        out = run(g, x, dtype=np.float32, batch_size=bs)
        for k in ref:
            assert out[k].dtype == np.float32
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, "float32", np.dtype(np.float32)])
def test_float32_mode(dtype):
    g = mlp()
    x = RNG.normal(size=(5, 4))  # a float64 feed is cast to the compute dtype
    out = run(g, x, dtype=dtype)
    tr = run(g, x, dtype=dtype, trace=True)
    assert all(v.dtype == np.float32 for v in out.values())
    assert all(v.dtype == np.float32 for v in tr.values())
    np.testing.assert_allclose(out["prob"], mlp_reference(x)[0], rtol=1e-5, atol=1e-6)
    f = feeds_two(3)
    assert run(two_input(), f, dtype=np.float32)["y"].dtype == np.float32


def test_float64_mode_is_the_default_and_float16_feed_is_cast():
    x = RNG.normal(size=(2, 4)).astype(np.float16)
    out = run(mlp(), x)
    assert out["prob"].dtype == np.float64
    np.testing.assert_allclose(out["prob"], mlp_reference(x.astype(np.float64))[0], rtol=1e-13)


def test_determinism():
    g = two_input()
    f = feeds_two(6, seed=9)
    a = run(g, f, trace=True)
    b = run(two_input(), {k: v.copy() for k, v in f.items()}, trace=True)
    for k in a:
        assert bits(a[k]) == bits(b[k])


def test_empty_batch():
    g = Graph([TensorSpec("x", (None, 2, 3))], ["y", "r"],
              [Node("fl", "flatten", ["x"], ["f"]),
               Node("rs", "reshape", ["x"], ["r"], {"shape": [-1, 2]}),
               Node("fc", "dense", ["f"], ["d"], {}, {"weight": np.ones((4, 6))}),
               Node("sm", "softmax", ["d"], ["y"])])
    out = run(g, np.zeros((0, 2, 3)))
    assert out["y"].shape == (0, 4) and out["r"].shape == (0, 3, 2)
    out = run(g, np.zeros((0, 2, 3)), batch_size=2)
    assert out["y"].shape == (0, 4) and out["r"].shape == (0, 3, 2)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": -2}, {"dtype": np.int32},
                                    {"dtype": np.float16}])
def test_bad_run_options(kwargs):
    with pytest.raises(InputError):
        run(mlp(), np.zeros((2, 4)), **kwargs)


# ---- input errors ---------------------------------------------------------------------------
def input_error(graph, feeds, *needles):
    with pytest.raises(RefqError) as info:
        run(graph, feeds)
    assert type(info.value) is InputError, (type(info.value), str(info.value))
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_wrong_shape():
    input_error(mlp(), {"x": np.zeros((2, 5))}, "'x'", "[2, 5]", "4")
    input_error(two_input(), {"img": np.zeros((2, 3, 2, 2)), "gate": np.zeros((2, 1, 1, 2))},
                "'img'", "[2, 3, 2, 2]")
    input_error(two_input(), {"img": np.zeros((2, 3, 3, 2)), "gate": np.zeros((2, 3, 3, 2))},
                "'gate'")


def test_wrong_rank():
    input_error(mlp(), {"x": np.zeros((2, 4, 1))}, "'x'", "shape")
    input_error(mlp(), {"x": np.zeros(4)}, "'x'", "shape")
    input_error(mlp(), {"x": np.float64(1.0) * np.ones(())}, "'x'")


@pytest.mark.parametrize("arr", [np.zeros((2, 4), np.int64), np.zeros((2, 4), np.uint8),
                                 np.zeros((2, 4), bool), np.zeros((2, 4), object),
                                 np.zeros((2, 4), np.complex128), np.array([["a"] * 4] * 2)])
def test_wrong_dtype(arr):
    input_error(mlp(), {"x": arr}, "'x'", str(arr.dtype), "float32")


def test_missing_and_unknown_names():
    f = feeds_two(2)
    input_error(two_input(), {"img": f["img"]}, "missing ['gate']")
    input_error(two_input(), {**f, "extra": f["img"]}, "unknown ['extra']")
    input_error(mlp(), {"X": np.zeros((2, 4))}, "missing ['x']", "unknown ['X']")
    input_error(two_input(), f["img"], "dict")  # a bare array for a two-input graph


def test_mismatched_batches():
    f = feeds_two(3)
    f["gate"] = f["gate"][:2]
    input_error(two_input(), f, "'gate'", "batch", "2", "3")


@pytest.mark.parametrize("value", [[[0.0, 1.0, 2.0, 3.0]], 1.5, None, "x"])
def test_not_an_array(value):
    input_error(mlp(), {"x": value}, "'x'", "NumPy array")


def test_feeds_not_a_dict():
    input_error(mlp(), [np.zeros((1, 4))], "dict")
