"""The JSON form of a graph: the fields `to_json` writes and the type checks of `from_json`."""
from __future__ import annotations

import pytest

from refq.errors import GraphError
from refq.graph import Graph, TensorSpec
from test_graph import good_graph


def test_to_json_round_trip_fields():
    g = good_graph().validate()
    d = g.to_json()
    assert d["name"] == "g" and d["outputs"] == ["y"]
    assert d["inputs"] == [{"name": "x", "shape": [None, 4, 4, 3], "dtype": "float32"}]
    assert d["nodes"][0] == {"name": "bn", "op": "batch_norm", "inputs": ["x"],
                             "outputs": ["t_bn"], "attrs": {"epsilon": 1e-3, "axis": -1}}
    assert TensorSpec.from_json(d["inputs"][0]) == g.inputs[0]


# ---- from_json: the type of every field ---------------------------------------------------------
def _doc():
    return good_graph().validate().to_json()


@pytest.mark.parametrize("edit, needles", [
    (lambda d: [d], ("graph JSON", "object")),
    (lambda d: {**d, "nodes": {}}, ("'nodes'", "list")),
    (lambda d: {**d, "nodes": ["bn"]}, ("node 0", "object")),
    (lambda d: {**d, "meta": 3}, ("'meta'",)),
    (lambda d: {**d, "surprise": 1}, ("unknown field", "surprise")),
    (lambda d: {**d, "outputs": "y"}, ("'outputs'",)),
    (lambda d: {**d, "inputs": [{"name": "x", "shape": [None, 4.0, 4, 3]}]}, ("'x'", "'shape'")),
    (lambda d: {**d, "inputs": [{"name": "x", "shape": [None, "4", 4, 3]}]}, ("'x'", "'shape'")),
    (lambda d: {**d, "inputs": [{"name": "x", "shape": [None, 4, 4, 3], "dtype": 7}]},
     ("'x'", "'dtype'")),
], ids=["list", "nodes-dict", "node-string", "meta-number", "unknown-field", "outputs-string",
        "shape-float", "shape-string", "dtype-number"])
def test_from_json_checks_types(edit, needles):
    with pytest.raises(GraphError) as info:
        Graph.from_json(edit(_doc()))
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


@pytest.mark.parametrize("field, value", [("inputs", [["x", 1]]), ("inputs", "x"),
                                          ("inputs", [None]), ("outputs", [1]), ("attrs", [1]),
                                          ("op", 3), ("name", None)])
def test_from_json_node_fields(field, value):
    d = _doc()
    d["nodes"][1][field] = value
    with pytest.raises(GraphError, match=f"node 1.*'{field}'"):
        Graph.from_json(d)


def test_from_json_round_trip():
    g = good_graph().validate()
    params = {n.name: n.params for n in g.nodes}
    h = Graph.from_json(g.to_json(), params).validate()
    assert h.to_json() == g.to_json()
    assert h.node("bn").params.keys() == g.node("bn").params.keys()
