"""Plan: the fused, in-place, chunked and threaded forward equals the plain node-by-node forward
bit for bit, never overwrites an array someone else holds, and is a snapshot of its graph."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import refq
from refq import parallel
from refq.errors import InputError
from refq.graph import Graph, Node, TensorSpec
from refq.plan import Plan
from refq.plan_chunks import CHUNK_MULTIPLE, batch_chunks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from architectures import ARCHITECTURES  # noqa: E402

RNG = np.random.default_rng(7)
EPILOGUES = ["batch_norm", "relu", "relu6", "clip", "hard_swish"]


def plain(graph, x, dtype, **kw):
    """The definition: op.forward node by node (the `call` hook turns every fusion off)."""
    return refq.run(graph, x, dtype=dtype, call=lambda n, op, xs, p: op.forward(xs, p, n.attrs),
                    **kw)


def same_bits(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.ascontiguousarray(a[k]).tobytes() == np.ascontiguousarray(b[k]).tobytes(), k


def node(op, name, inputs, attrs=None, params=None):
    return Node(name, op, list(inputs), [name], dict(attrs or {}), dict(params or {}))


def elementwise(op, name, x, c):
    if op == "batch_norm":
        return node(op, name, [x], {"epsilon": 1e-3},
                    {"gamma": RNG.uniform(0.5, 1.5, c), "beta": RNG.normal(size=c),
                     "mean": RNG.normal(size=c), "variance": RNG.uniform(0.2, 2, c)})
    if op == "clip":
        return node(op, name, [x], {"min": -0.5, "max": 0.75})
    return node(op, name, [x])


def conv(name, x, cin, cout, k, groups=1, bias=True, **attrs):
    p = {"weight": RNG.normal(size=(cout, k[0], k[1], cin // groups)) / np.sqrt(k[0] * k[1] * cin)}
    if bias:
        p["bias"] = RNG.normal(size=cout)
    return node("conv2d", name, [x], {"groups": groups, **attrs}, p)


def chain_graph(producer: Node, cout: int, ops: list, in_shape, outputs=None):
    nodes, t = [producer], producer.name
    for i, op in enumerate(ops):
        nodes.append(elementwise(op, f"e{i}", t, cout))
        t = nodes[-1].name
    return Graph([TensorSpec("x", (None,) + tuple(in_shape), "float32")], outputs or [t], nodes)


CONVS = {  # name: (node, cin, cout, input HW)
    "pointwise": lambda: (conv("c", "x", 8, 12, (1, 1)), 8, 12, (9, 7)),
    "pointwise_stride2": lambda: (conv("c", "x", 8, 12, (1, 1), strides=[2, 2]), 8, 12, (9, 7)),
    "rowfold": lambda: (conv("c", "x", 64, 16, (3, 3), padding="same"), 64, 16, (20, 9)),
    "im2col": lambda: (conv("c", "x", 5, 7, (3, 2), padding="explicit", pads=[1, 0, 2, 1],
                            strides=[2, 1]), 5, 7, (11, 8)),
    "grouped": lambda: (conv("c", "x", 6, 9, (3, 3), groups=3, padding="same"), 6, 9, (8, 8)),
    "depthwise": lambda: (conv("c", "x", 6, 6, (3, 3), groups=6, padding="same", bias=False),
                          6, 6, (10, 9)),
    "depthwise_m2_s2": lambda: (conv("c", "x", 4, 8, (3, 3), groups=4, padding="same",
                                     strides=[2, 2]), 4, 8, (9, 11)),
    "dense": lambda: (node("dense", "c", ["x"], {}, {"weight": RNG.normal(size=(10, 7)),
                                                     "bias": RNG.normal(size=10)}), 7, 10, None),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ops", [[], ["relu6"], ["batch_norm", "relu6"], ["batch_norm"],
                                 ["relu", "clip"], ["hard_swish"],
                                 ["batch_norm", "hard_swish", "relu", "batch_norm"]])
@pytest.mark.parametrize("kind", sorted(CONVS))
def test_fused_epilogues_equal_the_plain_forward(kind, ops, dtype):
    producer, cin, cout, hw = CONVS[kind]()
    shape = (cin,) if hw is None else hw + (cin,)
    g = chain_graph(producer, cout, ops, shape)
    for n in (1, 5):
        x = RNG.normal(size=(n,) + shape).astype(np.float32) * 3
        same_bits(Plan(g, dtype, fold_batch_norms=False).run(x), plain(g, x, dtype))


def test_fusion_stops_at_outputs_and_shared_tensors():
    producer, cin, cout, hw = CONVS["rowfold"]()
    g = chain_graph(producer, cout, ["batch_norm", "relu6", "relu"], hw + (cin,),
                    outputs=["e2", "e0"])         # e0 is an output: visible, not fused away
    g.nodes.append(node("add", "sum", ["e1", "e0"]))   # e1 read twice, e0 by two nodes
    g.outputs.append("sum")
    x = RNG.normal(size=(3,) + hw + (cin,)).astype(np.float32)
    same_bits(Plan(g, np.float32, fold_batch_norms=False).run(x), plain(g, x, np.float32))


def residual_graph(kind, after=(), first=True, other_later=False, hooked=None):
    """x -> producer -> batch_norm -> add(., s) -> `after` ops, s = relu(x) or a conv of x of the
    producer's output shape; `first`: the producer's branch is the add's first input;
    `other_later`: s is computed after the producer in the graph's order."""
    producer, cin, cout, hw = CONVS[kind]()
    shape = (cin,) if hw is None else hw + (cin,)
    bn = elementwise("batch_norm", "bn", "c", cout)
    if cin == cout and (hw is None or producer.attrs.get("strides", [1, 1]) == [1, 1]):
        side = node("relu", "s", ["x"])
    else:
        side = CONVS[kind]()[0]
        side.name, side.outputs = "s", ["s"]
    add = node("add", "sum", ["bn", "s"] if first else ["s", "bn"])
    nodes, t = [producer, bn, add] if other_later else [side, producer, bn, add], "sum"
    if other_later:
        nodes.insert(3, side)
    for i, op in enumerate(after):
        nodes.append(elementwise(op, f"a{i}", t, cout))
        t = nodes[-1].name
    return Graph([TensorSpec("x", (None,) + shape, "float32")], [t], nodes), shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("after", [(), ("relu",), ("relu6", "batch_norm")])
@pytest.mark.parametrize("kind", sorted(CONVS))
def test_fused_residual_add_equals_the_plain_forward(kind, after, dtype):
    for first in (True, False):
        g, shape = residual_graph(kind, after, first)
        plan = Plan(g, dtype, fold_batch_norms=False)
        fused = [s.names for s in plan._steps(plan_hooks(plan), True, False, None)]
        assert any("sum" in names and names[0] in ("c", "s") for names in fused), fused
        for n in (1, 4):
            x = RNG.normal(size=(n,) + shape).astype(np.float32) * 2
            keep = x.copy()
            same_bits(plan.run(x), plain(g, x, dtype))
            assert np.array_equal(x, keep)


def plan_hooks(plan, **kw):
    from refq.plan import _Hooks
    return _Hooks(plan, **kw)


def test_residual_add_fuses_into_the_later_producer_only():
    """When the other operand is computed after the producer, the add cannot join that
    producer's epilogue; it joins the other operand's producer (a conv) instead."""
    g, shape = residual_graph("rowfold", ("relu",), other_later=True)
    plan = Plan(g, np.float32, fold_batch_norms=False)
    steps = [s.names for s in plan._steps(plan_hooks(plan), True, False, None)]
    assert ("c", "bn") in steps and ("s", "sum", "a0") in steps, steps
    x = RNG.normal(size=(3,) + shape).astype(np.float32)
    same_bits(plan.run(x), plain(g, x, np.float32))


def test_residual_add_not_fused_when_hooked_traced_or_broadcast():
    g, shape = residual_graph("pointwise", ("relu",))
    x = RNG.normal(size=(3,) + shape).astype(np.float32)
    plan = Plan(g, np.float32)
    seen = []
    got = plan.run(x, tensor_hooks={"sum": lambda a: seen.append(a.copy()) or a},
                   inplace_hooks={"bn": lambda a: np.round(a, out=a)}, threads=1)
    rounded = refq.run(g, x, dtype=np.float32, trace=True,
                       call=lambda n, op, xs, p: (lambda y: np.round(y) if n.name == "bn" else y)(
                           op.forward(xs, p, n.attrs)))
    same_bits(got, {"a0": rounded["a0"]})
    same_bits({"sum": np.concatenate(seen)}, {"sum": rounded["sum"]})
    trace = plan.run(x, trace=True)
    same_bits(trace, plain(g, x, np.float32, trace=True))
    # a bias-like operand of another shape broadcasts: the add stays a node of its own
    c = node("dense", "c", ["x"], {}, {"weight": RNG.normal(size=(5, 5)), "bias": np.zeros(5)})
    b = Graph([TensorSpec("x", (None, 5), "float32"), TensorSpec("v", (None, 1), "float32")],
              ["sum"], [c, node("add", "sum", ["c", "v"])])
    p2 = Plan(b, np.float32)
    assert ("c",) in [s.names for s in p2._steps(plan_hooks(p2), True, False, None)]
    feeds = {"x": RNG.normal(size=(4, 5)), "v": RNG.normal(size=(4, 1))}
    same_bits(p2.run(feeds), plain(b, feeds, np.float32))


@pytest.mark.parametrize("conv_padding", ["valid", "explicit"])
def test_zero_pad_fused_into_the_convolution(conv_padding):
    pad = node("zero_pad2d", "p", ["x"], {"pads": [0, 1, 2, 1]})
    attrs = {"padding": conv_padding, "strides": [2, 2]}
    if conv_padding == "explicit":
        attrs["pads"] = [1, 2, 0, 1]
    for c_in, groups, c_out in ((6, 6, 6), (6, 1, 4)):
        c = conv("c", "p", c_in, c_out, (3, 3), groups=groups, **attrs)
        g = Graph([TensorSpec("x", (None, 9, 8, c_in), "float32")], ["r"],
                  [pad, c, node("relu6", "r", ["c"])])
        x = RNG.normal(size=(4, 9, 8, c_in)).astype(np.float32)
        same_bits(Plan(g, np.float32).run(x), plain(g, x, np.float32))
        # 'same' padding depends on the padded size: that pad stays a node, with the same result
        g.node("c").attrs["padding"] = "same"
        same_bits(Plan(g, np.float32).run(x), plain(g, x, np.float32))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_benchmark_architectures_bit_for_bit(name):
    g = ARCHITECTURES[name].build(resolution=32)
    x = RNG.standard_normal((5, 32, 32, 3)).astype(np.float32)
    for dtype in (np.float32, np.float64):
        same_bits(Plan(g, dtype, fold_batch_norms=False, winograd=False).run(x),
                  plain(g, x, dtype))
    # float32 with its batch norms folded and Winograd convolutions: close to float64 (the
    # bounds: test_plan_bn_fold.py, test_winograd.py)
    y32, y64 = Plan(g, np.float32).run(x), Plan(g, np.float64).run(x)
    for k in y32:
        np.testing.assert_allclose(y32[k], y64[k], rtol=1e-4, atol=1e-6)


def test_threads_do_not_change_a_bit(monkeypatch):
    g = ARCHITECTURES["mobilenet_v2_0.35_96"].build(resolution=32)
    x = RNG.standard_normal((7, 32, 32, 3)).astype(np.float32)
    plan = Plan(g, np.float32)
    monkeypatch.setattr(plan, "chunk_images", 2)        # several chunks on the threads
    two = plan.run(x)
    monkeypatch.setattr(parallel, "WORKERS", 1)
    same_bits(plan.run(x), two)


def test_residual_add_in_place_and_feeds_untouched():
    """x -> relu -> a; add(a, x): a dies at the add and is overwritten, x (a feed) never."""
    g = Graph([TensorSpec("x", (None, 6), "float32")], ["s", "t"],
              [node("relu", "a", ["x"]), node("add", "s", ["a", "x"]),
               node("relu6", "b", ["s"]), node("add", "t", ["x", "x"])])
    x = RNG.normal(size=(4, 6))
    keep = x.copy()
    for dtype in (np.float32, np.float64):   # float64: the feed itself reaches the ops
        same_bits(Plan(g, dtype).run(x), plain(g, x, dtype))
        assert np.array_equal(x, keep)


def test_trace_of_named_tensors_returns_those_bit_for_bit():
    """trace={names} returns exactly those tensors, equal to the full trace's; an unknown name
    is a GraphError naming it."""
    g = Graph([TensorSpec("x", (None, 6), "float32")], ["t"],
              [node("relu", "a", ["x"]), node("add", "s", ["a", "x"]),
               node("relu6", "b", ["s"]), node("add", "t", ["b", "x"])])
    x = RNG.normal(size=(70, 6))
    plan = Plan(g, np.float32)
    full = plan.run(x, trace=True, batch_size=16)
    some = plan.run(x, trace={"a", "s"}, batch_size=16)
    assert set(some) == {"a", "s"}
    same_bits(some, {k: full[k] for k in some})
    with pytest.raises(refq.GraphError, match="no tensor 'nope'"):
        plan.run(x, trace=["nope"])


def test_identity_and_reshape_views_are_never_overwritten():
    """identity returns its input and reshape a view of it: both stay live and correct while an
    in-place op consumes one of them."""
    g = Graph([TensorSpec("x", (None, 2, 3), "float32")], ["r", "i", "v"],
              [node("relu", "a", ["x"]), node("identity", "i", ["a"]),
               node("reshape", "v", ["a"], {"shape": [6]}), node("relu6", "r", ["i"])])
    x = RNG.normal(size=(3, 2, 3)).astype(np.float32) * 10
    same_bits(Plan(g, np.float32).run(x), plain(g, x, np.float32))


def test_hooks_see_what_the_plain_forward_gives_and_their_arrays_are_kept():
    producer, cin, cout, hw = CONVS["rowfold"]()
    g = chain_graph(producer, cout, ["batch_norm", "relu6", "relu"], hw + (cin,))
    x = RNG.normal(size=(4,) + hw + (cin,)).astype(np.float32)
    seen = {}

    def keep(name):
        def hook(a):
            seen[name] = a       # a reference kept: the runtime must not overwrite it later
            return a
        return hook

    halve = lambda a: np.multiply(a, 0.5, out=a)  # noqa: E731
    got = Plan(g, np.float32).run(x, batch_size=len(x),   # one chunk: `seen` holds whole tensors
                                  tensor_hooks={"c": keep("c"), "e1": keep("e1")},
                                  inplace_hooks={"e0": halve})
    trace = plain(g, x, np.float32, on_tensor=lambda t, a: a * np.float32(0.5) if t == "e0"
                  else a, trace=True)
    same_bits(got, {"e2": trace["e2"]})
    assert np.array_equal(seen["c"], trace["c"]) and np.array_equal(seen["e1"], trace["e1"])


def test_steps_kept_for_hook_dicts_promised_fixed(monkeypatch):
    """With processes=True (the hook dicts are not changed later) the steps built for a run's
    hooks are kept for the next run with the same dicts: the same values; without it, or with
    other dicts, they are built again; at most HOOKED_STEPS are kept."""
    import refq.plan as plan_module
    producer, cin, cout, hw = CONVS["rowfold"]()
    g = chain_graph(producer, cout, ["relu6"], hw + (cin,))
    x = RNG.normal(size=(2,) + hw + (cin,)).astype(np.float32)
    built = []
    real = plan_module.fused_steps
    monkeypatch.setattr(plan_module, "fused_steps", lambda *a: built.append(1) or real(*a))
    halve = lambda a: np.multiply(a, 0.5, out=a)  # noqa: E731
    hooks = {"inplace_hooks": {"c": halve}}
    plan = Plan(g, np.float32)
    want = plain(g, x, np.float32, on_tensor=lambda t, a: a * np.float32(0.5) if t == "c" else a)
    for _ in range(3):
        same_bits(plan.run(x, processes=True, **hooks), want)
    assert len(built) == 1
    plan.run(x, **hooks)                       # no promise: built for this run alone
    plan.run(x, processes=True, inplace_hooks=dict(hooks["inplace_hooks"]))
    assert len(built) == 3
    others = [{"c": halve} for _ in range(plan_module.HOOKED_STEPS)]
    for d in others:
        plan.run(x, processes=True, inplace_hooks=d)
    assert len(plan._hooked) == plan_module.HOOKED_STEPS
    plan.run(x, processes=True, **hooks)       # pushed out by the others: built again
    assert len(built) == 4 + plan_module.HOOKED_STEPS


def test_input_hooks_apply_to_that_node_only():
    producer, cin, cout, hw = CONVS["depthwise"]()
    g = chain_graph(producer, cout, ["relu"], hw + (cin,))
    g.nodes.append(node("add", "s", ["e0", "c"]))   # c read twice: not fused
    g.outputs = ["s"]
    x = RNG.normal(size=(2,) + hw + (cin,)).astype(np.float32)
    hooks = {("e0", 0): lambda a: a + 1}
    want = plain(g, x, np.float32, on_input=lambda n, i, a: a + 1 if (n, i) == ("e0", 0) else a)
    same_bits(Plan(g, np.float32).run(x, input_hooks=hooks), want)


def test_plan_is_a_snapshot_of_its_graph():
    producer, cin, cout, hw = CONVS["pointwise"]()
    g = chain_graph(producer, cout, ["relu"], hw + (cin,))
    x = RNG.normal(size=(2,) + hw + (cin,)).astype(np.float32)
    plan = Plan(g, np.float64)
    before = plan.run(x)
    g.node("c").params["weight"] *= 2
    same_bits(plan.run(x), before)
    assert not np.array_equal(Plan(g, np.float64).run(x)["e0"], before["e0"])


def test_error_state_reaches_the_threads():
    g = ARCHITECTURES["mobilenet_v2_0.35_96"].build(resolution=32)
    x = np.full((4, 32, 32, 3), 3e38, np.float32)
    plan = Plan(g, np.float32)
    plan.chunk_images = 1
    with np.errstate(all="raise"), pytest.raises(FloatingPointError):
        plan.run(x)


def test_hook_on_an_unknown_tensor():
    producer, cin, cout, hw = CONVS["pointwise"]()
    g = chain_graph(producer, cout, [], hw + (cin,))
    with pytest.raises(InputError, match="'nope'"):
        Plan(g).run(np.zeros((1,) + hw + (cin,)), tensor_hooks={"nope": lambda a: a})


@pytest.mark.parametrize("n", [1, 2, 3, 7, 32, 33, 128])
@pytest.mark.parametrize("chunk", [1, 3, 6, 100])
def test_chunks_cover_the_batch_evenly(n, chunk):
    parts = batch_chunks(n, None, chunk)
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    sizes = [e - s for s, e in parts]
    assert max(sizes) <= chunk and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert n == 1 or len(parts) % CHUNK_MULTIPLE == 0 or len(parts) == n
    assert batch_chunks(n, 4, chunk) == [(s, min(s + 4, n)) for s in range(0, n, 4)]
