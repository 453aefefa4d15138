"""Graph validation, topological order, shape inference and copy semantics."""
from __future__ import annotations

import numpy as np
import pytest

from refq.errors import GraphError, ParamError, RefqError, ShapeError
from refq.graph import Graph, Node, TensorSpec

BN = ("gamma", "beta", "mean", "variance")


def bn_params(c, dtype=np.float32):
    return {"gamma": np.ones(c, dtype), "beta": np.zeros(c, dtype), "mean": np.zeros(c, dtype),
            "variance": np.ones(c, dtype)}


def chain(*nodes, inputs=None, outputs=None, name="g"):
    inputs = inputs or [TensorSpec("x", (None, 4, 4, 3), "float32")]
    outputs = outputs or [nodes[-1].outputs[0]]
    return Graph(inputs, outputs, list(nodes), name)


def good_graph():
    """x -> bn -> relu -> (add with x) -> softmax."""
    return chain(
        Node("bn", "batch_norm", ["x"], ["t_bn"], {"epsilon": 1e-3}, bn_params(3)),
        Node("act", "relu", ["t_bn"], ["t_act"]),
        Node("sum", "add", ["t_act", "x"], ["t_sum"]),
        Node("prob", "softmax", ["t_sum"], ["y"], {"axis": -1}),
    )


def raises(cls, graph, *needles):
    """graph.validate() raises exactly `cls` (not a parent) with every needle in the message."""
    with pytest.raises(RefqError) as info:
        graph.validate()
    assert type(info.value) is cls, (type(info.value), str(info.value))
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    return str(info.value)


def test_good_graph_validates_and_normalises_attrs():
    g = good_graph()
    assert g.validate() is g
    assert g.node("bn").attrs == {"epsilon": 1e-3, "axis": -1}
    assert g.node("prob").attrs == {"axis": -1}
    assert g.node("act").attrs == {}


# ---- structure ------------------------------------------------------------------------------
def test_duplicate_node_names():
    g = chain(Node("a", "relu", ["x"], ["t1"]), Node("a", "relu", ["t1"], ["t2"]))
    raises(GraphError, g, "'a'", "unique")


def test_tensor_produced_twice():
    g = chain(Node("a", "relu", ["x"], ["t"]), Node("b", "relu6", ["x"], ["t"]))
    raises(GraphError, g, "'t'", "'a'", "'b'")


def test_node_overwriting_a_graph_input():
    g = chain(Node("a", "relu", ["x"], ["x"]))
    raises(GraphError, g, "'x'", "'a'", "graph input")


def test_graph_input_declared_twice():
    spec = TensorSpec("x", (None, 3), "float32")
    g = Graph([spec, spec], ["y"], [Node("a", "relu", ["x"], ["y"])])
    raises(GraphError, g, "'x'", "twice")


def test_dangling_input():
    g = chain(Node("a", "relu", ["x"], ["t"]), Node("b", "add", ["t", "ghost"], ["y"]))
    raises(GraphError, g, "'b'", "'ghost'", "dangling")


def test_dangling_output():
    g = chain(Node("a", "relu", ["x"], ["t"]), outputs=["nowhere"])
    raises(GraphError, g, "'nowhere'")


def test_cycle():
    g = chain(Node("a", "add", ["x", "t3"], ["t1"]), Node("b", "relu", ["t1"], ["t2"]),
              Node("c", "relu", ["t2"], ["t3"]), Node("d", "relu", ["x"], ["y"]),
              outputs=["y"])
    msg = raises(GraphError, g, "cycle", "'a'", "'b'", "'c'")
    assert "'d'" not in msg


def test_self_loop():
    g = chain(Node("a", "add", ["x", "t"], ["t"]))
    raises(GraphError, g, "cycle", "'a'")


def test_unknown_op():
    g = chain(Node("n1", "frobnicate", ["x"], ["y"]))
    raises(GraphError, g, "'n1'", "'frobnicate'", "unknown op")


def test_wrong_arity_and_output_count():
    raises(GraphError, chain(Node("n1", "relu", ["x", "x"], ["y"])), "'n1'", "inputs")
    raises(GraphError, chain(Node("n1", "add", ["x"], ["y"])), "'n1'", "inputs")
    raises(GraphError, chain(Node("n1", "relu", ["x"], ["y", "z"])), "'n1'", "one output")


@pytest.mark.parametrize("spec", [TensorSpec("x", (None, 3), "complex64"),
                                  TensorSpec("x", (None, 0), "float32"),
                                  TensorSpec("x", (None, -1), "float32"),
                                  TensorSpec("x", (None, 2.0), "float32"),
                                  TensorSpec("x", (), "float32")])
def test_bad_graph_input_spec(spec):
    raises(GraphError, Graph([spec], ["y"], [Node("a", "relu", ["x"], ["y"])]), "'x'")


# ---- attributes -----------------------------------------------------------------------------
def test_unknown_attribute():
    g = chain(Node("act", "relu", ["x"], ["y"], {"alpha": 0.1}))
    raises(GraphError, g, "'act'", "'alpha'", "unknown attribute")


def test_missing_attribute():
    g = chain(Node("bn", "batch_norm", ["x"], ["y"], {}, bn_params(3)))
    raises(GraphError, g, "'bn'", "'epsilon'")
    g = chain(Node("rs", "reshape", ["x"], ["y"]))
    raises(GraphError, g, "'rs'", "'shape'")


@pytest.mark.parametrize("op,attrs,key", [
    ("softmax", {"axis": "1"}, "axis"),
    ("softmax", {"axis": 1.0}, "axis"),
    ("softmax", {"axis": True}, "axis"),
    ("clip", {"min": "0", "max": 6.0}, "min"),
    ("clip", {"min": 0.0, "max": "6"}, "max"),
    ("leaky_relu", {"alpha": False}, "alpha"),
    ("zero_pad2d", {"pads": [1, 1, 1]}, "pads"),
    ("zero_pad2d", {"pads": 1}, "pads"),
    ("zero_pad2d", {"pads": [1, 1, 1.5, 1]}, "pads"),
    ("reshape", {"shape": "48"}, "shape"),
    ("clip", {"min": 0.0, "max": float("inf")}, "max"),
    ("leaky_relu", {"alpha": float("nan")}, "alpha"),
    ("batch_norm", {"epsilon": float("-inf")}, "epsilon"),
])
def test_wrongly_typed_attribute(op, attrs, key):
    g = chain(Node("n7", op, ["x"], ["y"], attrs))
    raises(GraphError, g, "'n7'", f"'{key}'")


def test_attribute_normalisation():
    g = chain(Node("clamp", "clip", ["x"], ["t"], {"min": 0, "max": 6}),
              Node("pad", "zero_pad2d", ["t"], ["y"], {"pads": (1, 0, 0, 1)}))
    g.validate()
    assert g.node("clamp").attrs == {"min": 0.0, "max": 6.0}
    assert isinstance(g.node("clamp").attrs["min"], float)
    assert g.node("pad").attrs == {"pads": [1, 0, 0, 1]}


# ---- parameters -----------------------------------------------------------------------------
def test_missing_parameter():
    p = bn_params(3)
    del p["variance"]
    g = chain(Node("bn1", "batch_norm", ["x"], ["y"], {"epsilon": 1e-3}, p))
    raises(ParamError, g, "'bn1'", "'variance'", "missing")


def test_unknown_parameter():
    p = bn_params(3)
    p["scale"] = np.ones(3, np.float32)
    g = chain(Node("bn1", "batch_norm", ["x"], ["y"], {"epsilon": 1e-3}, p))
    raises(ParamError, g, "'bn1'", "'scale'")
    g = chain(Node("act", "relu", ["x"], ["y"], {}, {"w": np.ones(1)}))
    raises(ParamError, g, "'act'", "'w'")


def test_parameter_of_wrong_shape():
    p = bn_params(3)
    p["gamma"] = np.ones(4, np.float32)
    g = chain(Node("bn1", "batch_norm", ["x"], ["y"], {"epsilon": 1e-3}, p))
    raises(ParamError, g, "'bn1'", "'gamma'", "[4]", "[3]")
    p = bn_params(3)
    p["mean"] = np.zeros((3, 1), np.float32)
    raises(ParamError, chain(Node("bn1", "batch_norm", ["x"], ["y"], {"epsilon": 1e-3}, p)), "'bn1'", "'mean'")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_parameter(bad):
    p = bn_params(3)
    p["beta"][2] = bad
    g = chain(Node("bn1", "batch_norm", ["x"], ["y"], {"epsilon": 1e-3}, p))
    raises(ParamError, g, "'bn1'", "'beta'", "[2]")
    g.validate(check_values=False)  # values are only checked on request


@pytest.mark.parametrize("value", [[1.0, 1.0, 1.0], np.array(["a", "b", "c"]),
                                   np.array([1, 2, 3], dtype=object),
                                   np.array([True, False, True])])
def test_parameter_not_a_real_array(value):
    p = bn_params(3)
    p["gamma"] = value
    g = chain(Node("bn1", "batch_norm", ["x"], ["y"], {"epsilon": 1e-3}, p))
    raises(ParamError, g, "'bn1'", "'gamma'")


# ---- shapes ---------------------------------------------------------------------------------
def test_shape_errors_name_node_and_tensors():
    g = chain(Node("pool", "reshape", ["x"], ["t"], {"shape": [5, -1]}))
    raises(ShapeError, g, "'pool'", "'x'", "cannot reshape")
    g = Graph([TensorSpec("a", (None, 4, 4, 3)), TensorSpec("b", (None, 4, 4, 2))], ["y"],
              [Node("se", "multiply", ["a", "b"], ["y"])])
    raises(ShapeError, g, "'se'", "'a'", "'b'", "broadcast")
    g = chain(Node("cat", "concat", ["x", "x"], ["y"], {"axis": 0}))
    raises(ShapeError, g, "'cat'", "'x'", "axis")
    g = chain(Node("pad", "zero_pad2d", ["x"], ["y"], {"pads": [0, 0, -1, 0]}))
    raises(ShapeError, g, "'pad'", "'x'", ">= 0")
    g = chain(Node("clamp", "clip", ["x"], ["y"], {"min": 6.0, "max": 0.0}))
    raises(ShapeError, g, "'clamp'", "'x'", "min <= max")
    assert issubclass(ShapeError, GraphError)


def test_infer_shapes_hand_worked():
    g = Graph(
        [TensorSpec("img", (None, 5, 6, 2)), TensorSpec("gate", (None, 1, 1, 2))],
        ["logits", "flat"],
        [
            Node("pad", "zero_pad2d", ["img"], ["p"], {"pads": [1, 0, 2, 1]}),   # (N, 6, 9, 2)
            Node("se", "multiply", ["p", "gate"], ["m"]),                        # (N, 6, 9, 2)
            Node("cat", "concat", ["m", "p"], ["c"], {"axis": -1}),              # (N, 6, 9, 4)
            Node("flat_node", "flatten", ["c"], ["flat"]),                        # (N, 216)
            Node("rs", "reshape", ["flat"], ["r"], {"shape": [-1, 12]}),         # (N, 18, 12)
            Node("sm", "softmax", ["r"], ["logits"]),                            # (N, 18, 12)
        ])
    expect = {"img": (None, 5, 6, 2), "gate": (None, 1, 1, 2), "p": (None, 6, 9, 2),
              "m": (None, 6, 9, 2), "c": (None, 6, 9, 4), "flat": (None, 216),
              "r": (None, 18, 12), "logits": (None, 18, 12)}
    # inference works before validation fills in defaults (softmax axis, flatten nothing)
    assert g.infer_shapes() == expect
    g.validate()
    assert g.infer_shapes() == expect


def test_infer_shapes_needs_no_prior_validate_and_does_not_mutate():
    g = chain(Node("bn", "batch_norm", ["x"], ["t"], {"epsilon": 1e-3}, bn_params(3)),
              Node("pad", "zero_pad2d", ["t"], ["y"]))
    assert g.infer_shapes()["y"] == (None, 4, 4, 3)
    assert g.node("bn").attrs == {"epsilon": 1e-3} and g.node("pad").attrs == {}


def test_infer_shapes_reports_shape_errors_and_bad_attrs():
    g = chain(Node("rs", "reshape", ["x"], ["y"], {"shape": [7]}))
    with pytest.raises(ShapeError, match="'rs'"):
        g.infer_shapes()
    g = chain(Node("rs", "reshape", ["x"], ["y"]))
    with pytest.raises(GraphError, match="'rs'"):
        g.infer_shapes()


# ---- topological order ----------------------------------------------------------------------
def names(nodes):
    return [n.name for n in nodes]


def assert_topological(graph, order):
    ready = {s.name for s in graph.inputs}
    for n in order:
        assert all(t in ready for t in n.inputs), n.name
        ready.update(n.outputs)
    assert sorted(names(order)) == sorted(names(graph.nodes))


def test_topological_order_keeps_a_valid_order():
    g = good_graph()
    assert names(g.topological_order()) == ["bn", "act", "sum", "prob"]
    # independent branches keep their given order
    g = chain(Node("b2", "relu", ["x"], ["u"]), Node("b1", "tanh", ["x"], ["v"]),
              Node("j", "add", ["u", "v"], ["y"]))
    assert names(g.topological_order()) == ["b2", "b1", "j"]


def test_topological_order_of_a_graph_given_out_of_order():
    g = chain(
        Node("c", "add", ["tb", "x"], ["tc"]),   # needs b
        Node("b", "relu", ["ta"], ["tb"]),       # needs a
        Node("e", "relu", ["tc"], ["y"]),        # needs c
        Node("a", "relu", ["x"], ["ta"]),        # ready
        Node("d", "tanh", ["x"], ["td"]),        # ready
        outputs=["y", "td"])
    order = g.topological_order()
    assert_topological(g, order)
    # stable: at each step the ready node given first is taken
    # ready {a, d} -> a; ready {b, d} -> b; ready {c, d} -> c; ready {e, d} -> e; then d
    assert names(order) == ["a", "b", "c", "e", "d"]
    assert names(g.topological_order()) == names(order)  # deterministic
    assert names(g.nodes) == ["c", "b", "e", "a", "d"]   # the graph itself is untouched
    g.validate()
    assert [n["name"] for n in g.to_json()["nodes"]] == ["a", "b", "c", "e", "d"]


def test_topological_order_reversed_chain():
    n = 40
    nodes = [Node(f"n{i}", "relu", [f"t{i - 1}" if i else "x"], [f"t{i}"]) for i in range(n)]
    g = chain(*reversed(nodes), outputs=[f"t{n - 1}"])
    assert names(g.topological_order()) == [f"n{i}" for i in range(n)]


# ---- copies ---------------------------------------------------------------------------------
def test_copy_is_deep():
    g = good_graph()
    g.node("prob").attrs = {"axis": -1}
    g.meta = {"source": {"file": "a.h5"}}
    c = g.copy()
    c.node("bn").params["gamma"][0] = 42.0
    c.node("bn").params["beta"] = np.full(3, 7, np.float32)
    c.node("prob").attrs["axis"] = 1
    c.node("act").inputs[0] = "x"
    c.inputs[0].name = "renamed"
    c.outputs.append("t_bn")
    c.meta["source"]["file"] = "b.h5"
    c.nodes.pop()
    assert g.node("bn").params["gamma"][0] == 1.0
    np.testing.assert_array_equal(g.node("bn").params["beta"], np.zeros(3))
    assert g.node("prob").attrs == {"axis": -1}
    assert g.node("act").inputs == ["t_bn"]
    assert g.inputs[0].name == "x" and g.outputs == ["y"]
    assert g.meta == {"source": {"file": "a.h5"}}
    assert len(g.nodes) == 4
    assert c.node("bn").params["gamma"] is not g.node("bn").params["gamma"]
    g.validate()


def test_lookups():
    g = good_graph()
    assert g.node("act").op == "relu"
    with pytest.raises(GraphError, match="'nope'"):
        g.node("nope")
    assert {t: n.name for t, n in g.producers().items()} == {
        "t_bn": "bn", "t_act": "act", "t_sum": "sum", "y": "prob"}
    assert {t: names(ns) for t, ns in g.consumers().items()} == {
        "x": ["bn", "sum"], "t_bn": ["act"], "t_act": ["sum"], "t_sum": ["prob"]}


# ---- values the definitions exclude, refused at validation ------------------------------------
@pytest.mark.parametrize("variance, epsilon, cls, needles", [
    ([1, 1, 1, -0.5], 1e-3, ParamError, ("variance[3]", "negative")),
    ([1, 0, 1, 1], 0.0, ParamError, ("variance[1]", "not positive")),
    ([1, 0, 1, 1], 1e-50, ParamError, ("variance[1]", "float32")),
    ([1, 1, 1, 1], -1e-3, GraphError, ("'epsilon'", "minimum")),
    ([1, 1, 1, 1], float("nan"), GraphError, ("'epsilon'", "finite")),
], ids=["negative-variance", "zero-sum", "underflows-float32", "negative-epsilon", "nan-epsilon"])
def test_batch_norm_statistics(variance, epsilon, cls, needles):
    p = bn_params(4)
    p["variance"] = np.array(variance, np.float32)
    g = chain(Node("bn", "batch_norm", ["x"], ["y"], {"epsilon": epsilon}, p),
              inputs=[TensorSpec("x", (None, 4), "float32")])
    raises(cls, g, "node 'bn'", *needles)


@pytest.mark.parametrize("shape", [(None, True, 3), (None, 2.0), (None, 2 ** 31), (None, 0),
                                   (None, 70000, 70000)],
                         ids=["bool", "float", "huge-dim", "zero", "too-many-values"])
def test_graph_input_shape_entries(shape):
    g = chain(Node("a", "relu", ["x"], ["y"]), inputs=[TensorSpec("x", shape, "float32")])
    with pytest.raises(GraphError, match="'x'"):
        g.validate()


def test_absurd_attribute_values_are_refused_at_validation():
    big = chain(Node("p", "zero_pad2d", ["x"], ["y"], {"pads": [0, 0, 2 ** 40, 0]}))
    raises(ShapeError, big, "'p'", "values per batch element")
    huge = chain(Node("p", "zero_pad2d", ["x"], ["y"], {"pads": [0, 0, 2 ** 70, 0]}))
    raises(GraphError, huge, "'p'", "int64")
    floaty = chain(Node("l", "leaky_relu", ["x"], ["y"], {"alpha": 10 ** 400}))
    raises(GraphError, floaty, "'l'", "finite")


@pytest.mark.parametrize("name", ["", "a\0b"], ids=["empty", "nul"])
def test_names_must_be_non_empty_strings(name):
    raises(GraphError, chain(Node(name, "relu", ["x"], ["y"])), "node name")
    raises(GraphError, chain(Node("a", "relu", ["x"], [name]), outputs=["y"]), "tensor name")
