"""refq.quant.placement: AIMET 2.42's quantizer placement on small hand-built graphs.

Every expected set below is written by hand from aimet.md §0.2.6 and §3.2-3.3: outputs quantized
unless grid-preserving; bias never; BN after conv/dense fused (its output takes the conv's output
quantizer, its parameters and input are unquantized); supergroups longest first, disjoint, no fan-out
inside, never started by a depthwise conv; a Relu/Concat shares its output quantizer with a producer
that has one (through unquantized grid-preserving ops).
"""
import copy
import json

import numpy as np
import pytest

from refq.graph import Graph, Node, TensorSpec
from refq.quant.config import load_config, parse_config
from refq.quant.placement import (QuantizerSpec, is_depthwise, param_quantizer_name,
                                  place_quantizers)

f32 = np.float32
RNG = np.random.default_rng(1234)


# ------------------------------------------------------------------------------------ builders

def conv(name, x, y, cin, cout, k=1, groups=1, bias=True):
    p = {"weight": RNG.normal(size=(cout, k, k, cin // groups)).astype(f32)}
    if bias:
        p["bias"] = RNG.normal(size=cout).astype(f32)
    return Node(name, "conv2d", [x], [y], {"strides": [1, 1], "padding": "same", "groups": groups}, p)


def dwconv(name, x, y, c, k=3):
    return conv(name, x, y, c, c, k=k, groups=c)


def bn(name, x, y, c):
    return Node(name, "batch_norm", [x], [y], {"epsilon": 1e-3},
                {"gamma": RNG.uniform(0.5, 1.5, c).astype(f32), "beta": RNG.normal(size=c).astype(f32),
                 "mean": RNG.normal(size=c).astype(f32), "variance": RNG.uniform(0.5, 2, c).astype(f32)})


def dense(name, x, y, cin, units, bias=True):
    p = {"weight": RNG.normal(size=(units, cin)).astype(f32)}
    if bias:
        p["bias"] = RNG.normal(size=units).astype(f32)
    return Node(name, "dense", [x], [y], {}, p)


def op(name, kind, inputs, y, **attrs):
    return Node(name, kind, list(inputs), [y], attrs)


def img(c=3):
    return TensorSpec("x", (None, 6, 6, c))


def vec(n=4):
    return TensorSpec("x", (None, n))


def graph(inputs, outputs, nodes):
    return Graph(inputs if isinstance(inputs, list) else [inputs], outputs, nodes).validate()


def _cfg_dict(name):
    from importlib import resources
    p = resources.files("refq.quant").joinpath("configs", f"default_{name}.json")
    return json.loads(p.read_text(encoding="utf-8"))


def cfg(name="per_channel", **changes):
    """A bundled config with top-level sections replaced / op_type entries merged."""
    d = copy.deepcopy(_cfg_dict(name))
    for k, v in changes.items():
        if k == "op_type":
            d["op_type"].update(v)
        else:
            d[k] = v
    return parse_config(d, source=f"<{name} test>")


class Placement:
    """The quantizers of `place_quantizers`, as sets a test can compare with hand-written ones."""

    def __init__(self, g, config="per_channel"):
        config = load_config(config) if isinstance(config, str) else config
        self.specs, self.report = place_quantizers(g, config)
        self.by_name = {q.name: q for q in self.specs}
        assert len(self.by_name) == len(self.specs), "quantizer names must be unique"

    @property
    def activations(self):
        """{frozenset of tensors} of the activation quantizers."""
        return {frozenset(q.tensors) for q in self.specs if q.kind == "activation"}

    @property
    def params(self):
        """{quantizer name: axis} of the parameter quantizers."""
        return {q.name: q.axis for q in self.specs if q.kind == "param"}

    @property
    def inputs(self):
        """{(node, index): tensor} of the input quantizers."""
        return {(q.node, q.input_index): tuple(q.tensors) for q in self.specs if q.kind == "input"}

    def quantized(self):
        """Every activation tensor some activation quantizer covers."""
        return set().union(*self.activations) if self.activations else set()


def S(*groups):
    """Hand-written expected activation sets: S('x', ('b', 'r')) -> {{x}, {b, r}}."""
    return {frozenset([g] if isinstance(g, str) else g) for g in groups}


# ------------------------------------------------------------------------------------ spec type

def test_quantizer_spec_json_round_trip():
    q = QuantizerSpec(name="a", kind="activation", bitwidth=8, symmetric=False, tensors=["a", "b"],
                      fixed_range=(0.0, 6.0))
    d = json.loads(json.dumps(q.to_json()))
    assert QuantizerSpec.from_json(d) == q


def test_param_quantizer_names():
    assert param_quantizer_name("conv1", "weight") == "conv1.weight"
    assert param_quantizer_name("bn", "gamma") == "bn.weight"
    assert param_quantizer_name("bn", "variance") == "bn.running_var"


def test_is_depthwise():
    assert is_depthwise(dwconv("d", "x", "y", 3))
    assert not is_depthwise(conv("c", "x", "y", 3, 3))
    assert not is_depthwise(conv("g", "x", "y", 4, 4, groups=2))   # 2 input channels per group
    assert not is_depthwise(conv("one", "x", "y", 1, 4))            # groups = 1, 1 input channel
    assert not is_depthwise(dense("fc", "x", "y", 3, 3))


def test_place_does_not_modify_the_graph():
    g = graph(img(), ["r"], [conv("conv", "x", "c", 3, 4), bn("bn", "c", "b", 4),
                             op("relu", "relu", ["b"], "r")])
    before = copy.deepcopy(g)
    Placement(g)
    assert g.to_json() == before.to_json()
    for n, m in zip(g.nodes, before.nodes):
        for k in n.params:
            assert np.array_equal(n.params[k], m.params[k])


# ------------------------------------------------------------------------------------ supergroups

def test_conv_relu():
    g = graph(img(), ["r"], [conv("conv", "x", "c", 3, 4), op("relu", "relu", ["c"], "r")])
    p = Placement(g)
    assert p.activations == S("x", "r")
    assert p.params == {"conv.weight": 0}
    assert p.inputs == {}
    assert p.report["supergroups"] == [["conv", "relu"]]


def test_conv_bn_relu_bn_fused_and_skipped():
    g = graph(img(), ["r"], [conv("conv", "x", "c", 3, 4), bn("bn", "c", "b", 4),
                             op("relu", "relu", ["b"], "r")])
    p = Placement(g)
    assert p.activations == S("x", "r")
    assert p.params == {"conv.weight": 0}        # no bn.weight / bias / running stats
    assert p.report["fused_batch_norms"] == {"bn": "conv"}
    assert p.report["supergroups"] == [["conv", "bn", "relu"]]


def test_conv_bn_without_relu_bn_output_takes_conv_quantizer():
    g = graph(img(), ["b"], [conv("conv", "x", "c", 3, 4), bn("bn", "c", "b", 4)])
    p = Placement(g)
    assert p.activations == S("x", "b")
    assert p.params == {"conv.weight": 0}


def test_depthwise_conv_bn_relu_shares_one_quantizer():
    g = graph(img(), ["r"], [dwconv("dw", "x", "d", 3), bn("bn", "d", "b", 3),
                             op("relu", "relu", ["b"], "r")])
    p = Placement(g)
    assert p.activations == S("x", ("b", "r"))
    assert p.params == {"dw.weight": 0}
    assert p.report["supergroups"] == []
    assert p.report["fused_batch_norms"] == {"bn": "dw"}
    shared = [q for q in p.specs if set(q.tensors) == {"b", "r"}][0]
    assert shared.tensors == ["b", "r"] and shared.symmetric is False


def test_depthwise_conv_relu_without_bn_shares():
    g = graph(img(), ["r"], [dwconv("dw", "x", "d", 3), op("relu", "relu", ["d"], "r")])
    p = Placement(g)
    assert p.activations == S("x", ("d", "r"))
    assert p.report["supergroups"] == []


def test_grouped_conv_is_not_depthwise_and_starts_a_supergroup():
    g = graph(img(4), ["r"], [conv("gconv", "x", "c", 4, 4, groups=2),
                              op("relu", "relu", ["c"], "r")])
    p = Placement(g)
    assert p.activations == S("x", "r")
    assert p.report["supergroups"] == [["gconv", "relu"]]


@pytest.mark.parametrize("act", ["relu6", "clip"])
def test_conv_relu6_or_clip_is_a_conv_clip_supergroup(act):
    attrs = {"min": 0.0, "max": 6.0} if act == "clip" else {}
    g = graph(img(), ["r"], [conv("conv", "x", "c", 3, 4), op("act", act, ["c"], "r", **attrs)])
    p = Placement(g)
    assert p.activations == S("x", "r")
    assert p.report["supergroups"] == [["conv", "act"]]


def test_conv_bn_relu6():
    g = graph(img(), ["r"], [conv("conv", "x", "c", 3, 4), bn("bn", "c", "b", 4),
                             op("act", "relu6", ["b"], "r")])
    p = Placement(g)
    assert p.activations == S("x", "r")
    assert p.params == {"conv.weight": 0}


def test_conv_hard_swish_is_no_supergroup():
    g = graph(img(), ["h"], [conv("conv", "x", "c", 3, 4), op("hs", "hard_swish", ["c"], "h")])
    p = Placement(g)
    assert p.activations == S("x", "c", "h")
    assert p.report["supergroups"] == []


def test_add_relu():
    g = graph(img(), ["r"], [conv("a", "x", "ya", 3, 4), conv("b", "x", "yb", 3, 4),
                             op("add", "add", ["ya", "yb"], "s"), op("relu", "relu", ["s"], "r")])
    p = Placement(g)
    assert p.activations == S("x", "ya", "yb", "r")
    assert p.params == {"a.weight": 0, "b.weight": 0}
    assert p.report["supergroups"] == [["add", "relu"]]


def test_dense_relu():
    g = graph(vec(), ["r"], [dense("fc", "x", "y", 4, 3), op("relu", "relu", ["y"], "r")])
    p = Placement(g)
    assert p.activations == S("x", "r")
    assert p.params == {"fc.weight": 0}            # Gemm is per-channel in the default config
    assert p.report["supergroups"] == [["fc", "relu"]]
    p = Placement(g, "per_tensor")
    assert p.activations == S("x", "r")
    assert p.params == {"fc.weight": None}


def test_dense_bn_relu():
    g = graph(vec(), ["r"], [dense("fc", "x", "y", 4, 3), bn("bn", "y", "b", 3),
                             op("relu", "relu", ["b"], "r")])
    p = Placement(g)
    assert p.activations == S("x", "r")
    assert p.report["fused_batch_norms"] == {"bn": "fc"}


def test_fan_out_cannot_continue_a_pattern():
    # the conv output is read by relu6 and by add: [Conv, Clip] cannot match
    g = graph(img(), ["s"], [conv("conv", "x", "c", 3, 3), op("r6", "relu6", ["c"], "r"),
                             op("add", "add", ["c", "r"], "s")])
    p = Placement(g)
    assert p.activations == S("x", "c", "r", "s")
    assert p.report["supergroups"] == []


def test_fan_out_into_relu_shares_with_the_conv():
    # no supergroup (fan-out); the Relu's quantizer is shared with its producer's (§0.2.6)
    g = graph(img(), ["s"], [conv("conv", "x", "c", 3, 3), op("relu", "relu", ["c"], "r"),
                             op("add", "add", ["c", "r"], "s")])
    p = Placement(g)
    assert p.report["supergroups"] == []
    assert p.activations == S("x", ("c", "r"), "s")


def test_conv_with_fan_out_is_not_bn_fused():
    g = graph(img(), ["s"], [conv("conv", "x", "c", 3, 3), bn("bn", "c", "b", 3),
                             op("add", "add", ["c", "b"], "s")])
    p = Placement(g)
    assert p.report["fused_batch_norms"] == {}
    assert p.activations == S("x", "c", "b", "s")
    # an unfused BN keeps its weight (gamma) quantizer; beta and the running stats never
    assert p.params == {"conv.weight": 0, "bn.weight": None}


def test_bn_with_fan_out_stops_the_pattern():
    g = graph(img(), ["s"], [conv("conv", "x", "c", 3, 3), bn("bn", "c", "b", 3),
                             op("r6", "relu6", ["b"], "r"), op("add", "add", ["b", "r"], "s")])
    p = Placement(g)
    assert p.report["supergroups"] == []
    assert p.report["fused_batch_norms"] == {"bn": "conv"}
    assert p.activations == S("x", "b", "r", "s")


def test_longest_pattern_first():
    sg = [{"op_list": ["Add", "Relu"]}, {"op_list": ["Conv", "Add", "Relu"]}]
    g = graph(img(), ["r"], [conv("conv", "x", "c", 3, 3), op("add", "add", ["c", "x"], "s"),
                             op("relu", "relu", ["s"], "r")])
    p = Placement(g, cfg(supergroups=sg))
    assert p.report["supergroups"] == [["conv", "add", "relu"]]
    assert p.activations == S("x", "r")
    # only the short pattern: the conv output stays quantized
    p = Placement(g, cfg(supergroups=sg[:1]))
    assert p.report["supergroups"] == [["add", "relu"]]
    assert p.activations == S("x", "c", "r")


def test_matches_are_disjoint():
    sg = [{"op_list": ["Conv", "Relu"]}, {"op_list": ["Relu", "Conv"]}]
    g = graph(img(), ["r2"], [conv("conv1", "x", "c1", 3, 3), op("relu1", "relu", ["c1"], "r1"),
                              conv("conv2", "r1", "c2", 3, 3), op("relu2", "relu", ["c2"], "r2")])
    p = Placement(g, cfg(supergroups=sg))
    assert p.report["supergroups"] == [["conv1", "relu1"], ["conv2", "relu2"]]
    assert p.activations == S("x", "r1", "r2")


def test_three_op_pattern_through_a_fused_bn():
    sg = [{"op_list": ["Conv", "Relu", "Add"]}]
    g = graph(img(), ["s"], [conv("conv", "x", "c", 3, 3), bn("bn", "c", "b", 3),
                             op("relu", "relu", ["b"], "r"), op("add", "add", ["r", "x"], "s")])
    p = Placement(g, cfg(supergroups=sg))
    assert p.report["supergroups"] == [["conv", "bn", "relu", "add"]]
    assert p.activations == S("x", "s")


def test_no_supergroups():
    g = graph(img(), ["r"], [conv("conv", "x", "c", 3, 4), op("relu", "relu", ["c"], "r")])
    p = Placement(g, cfg(supergroups=[]))
    assert p.activations == S("x", ("c", "r"))      # no supergroup: the Relu shares instead


# ------------------------------------------------------------------------------------ grid-preserving

def test_maxpool_and_flatten_unquantized():
    g = graph(img(), ["y"], [conv("conv", "x", "c", 3, 4), op("relu", "relu", ["c"], "r"),
                             op("mp", "max_pool2d", ["r"], "m", pool_size=[2, 2], strides=[2, 2]),
                             op("fl", "flatten", ["m"], "f"), dense("fc", "f", "y", 36, 5)])
    p = Placement(g)
    assert p.activations == S("x", "r", "y")
    assert p.params == {"conv.weight": 0, "fc.weight": 0}


@pytest.mark.parametrize("kind, attrs", [("reshape", {"shape": [-1, 144]}),
                                         ("zero_pad2d", {"pads": [1, 1, 1, 1]}),
                                         ("identity", {})])
def test_other_grid_preserving_ops_unquantized(kind, attrs):
    out = "g"
    g = graph(img(4), [out], [op("op", kind, ["x"], out, **attrs)])
    p = Placement(g)
    assert p.activations == S("x")


def test_avg_pools_are_quantized():
    g = graph(img(), ["gp"], [op("ap", "avg_pool2d", ["x"], "a", pool_size=[2, 2], strides=[2, 2]),
                              op("gap", "global_avg_pool2d", ["a"], "gp")])
    assert Placement(g).activations == S("x", "a", "gp")


def test_naming_maxpool_with_output_quantized_true():
    g = graph(img(), ["m"], [conv("conv", "x", "c", 3, 4),
                             op("mp", "max_pool2d", ["c"], "m", pool_size=[2, 2], strides=[2, 2])])
    assert Placement(g).activations == S("x", "c")
    p = Placement(g, cfg(op_type={"MaxPool": {"is_output_quantized": "True"}}))
    assert p.activations == S("x", "c", "m")


def test_relu_after_maxpool_shares_through_it():
    g = graph(img(), ["r"], [conv("conv", "x", "c", 3, 4),
                             op("mp", "max_pool2d", ["c"], "m", pool_size=[2, 2], strides=[2, 2]),
                             op("relu", "relu", ["m"], "r")])
    assert Placement(g).activations == S("x", ("c", "r"))


def test_relu_on_the_graph_input_shares_nothing():
    g = graph(img(), ["r"], [op("relu", "relu", ["x"], "r")])
    assert Placement(g).activations == S("x", "r")


def test_output_quantizer_turned_off_by_op_type():
    g = graph(img(), ["h"], [conv("conv", "x", "c", 3, 4), op("hs", "hard_swish", ["c"], "h")])
    p = Placement(g, cfg(op_type={"HardSwish": {"is_output_quantized": "False"}}))
    assert p.activations == S("x", "c")


# ------------------------------------------------------------------------------------ concat

def test_concat_shares_with_its_producers():
    g = graph(img(), ["k"], [conv("a", "x", "ya", 3, 2), conv("b", "x", "yb", 3, 2),
                             op("cat", "concat", ["ya", "yb"], "k", axis=-1)])
    p = Placement(g)
    assert p.activations == S("x", ("ya", "yb", "k"))


def test_concat_with_the_graph_input():
    g = graph(img(), ["k"], [conv("a", "x", "ya", 3, 2),
                             op("cat", "concat", ["x", "ya"], "k", axis=-1)])
    assert Placement(g).activations == S("x", ("ya", "k"))


def test_concat_of_supergroup_outputs():
    g = graph(img(), ["k"], [conv("a", "x", "ya", 3, 2), op("ra", "relu", ["ya"], "za"),
                             conv("b", "x", "yb", 3, 2), op("rb", "relu", ["yb"], "zb"),
                             op("cat", "concat", ["za", "zb"], "k", axis=-1)])
    p = Placement(g)
    assert p.activations == S("x", ("za", "zb", "k"))
    assert p.report["supergroups"] == [["a", "ra"], ["b", "rb"]]


# ------------------------------------------------------------------------------------ model in/out

def test_model_input_off():
    g = graph(img(), ["r"], [conv("conv", "x", "c", 3, 4), op("relu", "relu", ["c"], "r")])
    p = Placement(g, cfg(model_input={"is_input_quantized": "False"}))
    assert p.activations == S("r")
    p = Placement(g, cfg(model_input={}))
    assert p.activations == S("r")


def test_model_output_off():
    g = graph(img(), ["r"], [conv("conv", "x", "c", 3, 4), op("relu", "relu", ["c"], "r")])
    p = Placement(g, cfg(model_output={"is_output_quantized": "False"}))
    assert p.activations == S("x")


def test_model_output_on_forces_a_grid_preserving_output():
    g = graph(img(), ["f"], [conv("conv", "x", "c", 3, 4), op("fl", "flatten", ["c"], "f")])
    assert Placement(g).activations == S("x", "c")
    p = Placement(g, cfg(model_output={"is_output_quantized": "True"}))
    assert p.activations == S("x", "c", "f")


def test_model_output_applies_to_every_output_only():
    g = graph(vec(), ["y1", "y2"], [dense("fc1", "x", "y1", 4, 3), dense("fc2", "y1", "y2", 3, 2),
                                    op("sm", "softmax", ["x"], "s")])
    g.outputs = ["y1", "y2"]
    p = Placement(g, cfg(model_output={"is_output_quantized": "False"}))
    assert p.activations == S("x", "s")


# ------------------------------------------------------------------------------------ parameters

def _mixed_graph():
    return graph(img(), ["y"], [conv("conv", "x", "c", 3, 4), dwconv("dw", "c", "d", 4),
                                op("gap", "global_avg_pool2d", ["d"], "gp"),
                                dense("fc", "gp", "y", 4, 3)])


def test_per_channel_config():
    p = Placement(_mixed_graph(), "per_channel")
    assert p.params == {"conv.weight": 0, "dw.weight": 0, "fc.weight": 0}


def test_per_tensor_config():
    p = Placement(_mixed_graph(), "per_tensor")
    assert p.params == {"conv.weight": None, "dw.weight": None, "fc.weight": None}


def test_per_channel_for_conv_only():
    c = cfg("per_tensor", op_type={"Conv": {"per_channel_quantization": "True"}})
    p = Placement(_mixed_graph(), c)
    assert p.params == {"conv.weight": 0, "dw.weight": 0, "fc.weight": None}


def test_bias_never_quantized_even_if_the_config_says_so():
    c = cfg(params={"bias": {"is_quantized": "True"}},
            op_type={"Conv": {"per_channel_quantization": "True",
                              "params": {"bias": {"is_quantized": "True"}}}})
    g = graph(img(), ["s"], [conv("conv", "x", "c", 3, 3), op("add", "add", ["c", "c"], "a"),
                             bn("bn", "a", "s", 3)])
    p = Placement(g, c)
    assert "conv.bias" not in p.params and "bn.bias" not in p.params
    assert p.params == {"conv.weight": 0, "bn.weight": None}


def test_param_quantizers_follow_the_config():
    c = cfg(op_type={"Conv": {"params": {"weight": {"is_symmetric": "False"}}},
                     "Gemm": {"params": {"weight": {"is_quantized": "False"}}}})
    p = Placement(_mixed_graph(), c)
    assert set(p.params) == {"conv.weight", "dw.weight"}
    assert p.by_name["conv.weight"].symmetric is False
    assert p.by_name["dw.weight"].symmetric is False           # dw is a Conv too
    assert p.by_name["conv.weight"].node == "conv" and p.by_name["conv.weight"].param == "weight"
    assert p.by_name["conv.weight"].tensors == []


def test_param_quantizers_default_symmetric_8bit():
    specs, _ = place_quantizers(_mixed_graph(), load_config(), param_bw=4, act_bw=16)
    for q in specs:
        if q.kind == "param":
            assert q.symmetric is True and q.bitwidth == 4
        else:
            assert q.symmetric is False and q.bitwidth == 16


def test_unfused_bn_running_stats_never_quantized():
    g = graph(img(), ["b"], [op("relu", "relu", ["x"], "r"), bn("bn", "r", "b", 3)])
    p = Placement(g)
    assert p.params == {"bn.weight": None}
    assert p.activations == S("x", "r", "b")


# ------------------------------------------------------------------------------------ options

def test_is_input_quantized_on_an_op_type():
    c = cfg(op_type={"Add": {"is_input_quantized": "True"}})
    g = graph(img(), ["s"], [conv("a", "x", "ya", 3, 3), op("h", "hard_swish", ["ya"], "hs"),
                             op("add", "add", ["ya", "hs"], "s")])
    p = Placement(g, c)
    assert p.inputs == {("add", 0): ("ya",), ("add", 1): ("hs",)}
    assert p.activations == S("x", "ya", "hs", "s")
    q = p.by_name["add:input0"]
    assert q.kind == "input" and q.node == "add" and q.input_index == 0 and q.symmetric is False


def test_input_quantizer_of_a_supergroup_tail_is_off():
    c = cfg(op_type={"Relu": {"is_input_quantized": "True"}})
    g = graph(img(), ["r2"], [conv("conv", "x", "c", 3, 3), op("relu", "relu", ["c"], "r"),
                              op("h", "hard_swish", ["r"], "hs"), op("relu2", "relu", ["hs"], "r2")])
    p = Placement(g, c)
    assert p.inputs == {("relu2", 0): ("hs",)}


def test_symmetric_activation_by_op_type():
    c = cfg(op_type={"HardSwish": {"is_symmetric": "True"}})
    g = graph(img(), ["h"], [conv("conv", "x", "c", 3, 4), op("hs", "hard_swish", ["c"], "h")])
    p = Placement(g, c)
    sym = {frozenset(q.tensors): q.symmetric for q in p.specs if q.kind == "activation"}
    assert sym == {frozenset(["x"]): False, frozenset(["c"]): False, frozenset(["h"]): True}


def test_encoding_constraints_become_fixed_ranges():
    c = cfg(op_type={"Sigmoid": {"encoding_constraints": {"min": 0.0, "max": 1.0}}})
    g = graph(img(), ["s"], [conv("conv", "x", "c", 3, 4), op("sg", "sigmoid", ["c"], "s")])
    p = Placement(g, c)
    fixed = {tuple(q.tensors): q.fixed_range for q in p.specs if q.kind == "activation"}
    assert fixed == {("x",): None, ("c",): None, ("s",): (0.0, 1.0)}


def test_strict_and_unsigned_flags_reach_the_quantizers():
    d = copy.deepcopy(_cfg_dict("per_tensor"))
    d["defaults"]["strict_symmetric"] = "True"
    specs, _ = place_quantizers(_mixed_graph(), parse_config(d, "<strict>"))
    assert all(q.strict for q in specs)


def test_report_counts():
    g = graph(img(), ["r"], [dwconv("dw", "x", "d", 3), bn("bn", "d", "b", 3),
                             op("relu", "relu", ["b"], "r")])
    p = Placement(g)
    assert p.report["activation_quantizers"] == 2
    assert p.report["param_quantizers"] == 1
    assert p.report["shared"] == [["b", "r"]]
    json.dumps(p.report)       # JSON-serialisable


def test_mobilenet_like_block():
    """conv-bn-relu6 -> dw-bn-relu6 -> conv-bn (project) -> add(residual) -> gap -> dense."""
    g = graph(img(4), ["y"], [
        conv("expand", "x", "e", 4, 8), bn("bn1", "e", "eb", 8), op("r1", "relu6", ["eb"], "er"),
        dwconv("dw", "er", "d", 8), bn("bn2", "d", "db", 8), op("r2", "relu6", ["db"], "dr"),
        conv("project", "dr", "p", 8, 4), bn("bn3", "p", "pb", 4),
        op("add", "add", ["pb", "x"], "s"),
        op("gap", "global_avg_pool2d", ["s"], "gp"), dense("fc", "gp", "y", 4, 2)])
    p = Placement(g)
    # relu6 is not a Relu: the dw BN output keeps its own quantizer, nothing is shared
    assert p.activations == S("x", "er", "db", "dr", "pb", "s", "gp", "y")
    assert p.params == {"expand.weight": 0, "dw.weight": 0, "project.weight": 0, "fc.weight": 0}
    assert p.report["supergroups"] == [["expand", "bn1", "r1"]]


# ----------------------------------------------------- weighted ops without a batch-norm fold

@pytest.mark.parametrize("trans_b,axis", [(0, 1), (1, 0)])
def test_gemm_weight_is_per_channel_on_its_output_axis(trans_b, axis):
    """gemm's B is ONNX's [K, P] (transB = 0: the output column is axis 1) or [P, K]; the
    per-channel config quantizes it per output column (aimet.md §0.2.6: Gemm per-channel),
    with one scale per column; Gemm + Relu is a supergroup."""
    from refq.quant.quantsim import QuantSim
    w = RNG.normal(size=(4, 3) if trans_b == 0 else (3, 4)).astype(f32)
    g = graph(vec(), ["r"], [Node("gm", "gemm", ["x"], ["y"], {"transB": trans_b},
                                  {"weight": w, "bias": RNG.normal(size=3).astype(f32)}),
                             op("relu", "relu", ["y"], "r")])
    p = Placement(g)
    assert p.params == {"gm.weight": axis} and p.activations == S("x", "r")
    assert p.report["supergroups"] == [["gm", "relu"]]
    assert Placement(g, "per_tensor").params == {"gm.weight": None}
    sim = QuantSim(g, cfg()).compute_encodings(RNG.normal(size=(8, 4)).astype(f32))
    enc = sim.encodings["gm.weight"]
    assert enc.axis == axis and enc.scale.shape == (3,)
    from refq.quant.analyzers import make_analyzer
    for j in range(3):   # each column's scale is that column's own per-tensor encoding
        a = make_analyzer(sim.scheme, None)
        a.update(np.take(w, j, axis=axis))
        alone = a.compute_encoding(8, True, numerics=sim.numerics)
        assert enc.scale[j] == alone.scale


def test_conv_transpose_weight_is_per_channel_on_axis_0():
    """conv_transpose2d's weight [O, kh, kw, C/groups] has its output channel first (AIMET's
    ConvTranspose axis 1 of [C, O/g, kh, kw], aimet.md §1.6); ConvTranspose + Relu is a
    supergroup."""
    w = RNG.normal(size=(5, 3, 3, 3)).astype(f32)
    g = graph(img(), ["r"], [Node("ct", "conv_transpose2d", ["x"], ["y"], {"strides": [2, 2]},
                                  {"weight": w}), op("relu", "relu", ["y"], "r")])
    p = Placement(g)
    assert p.params == {"ct.weight": 0} and p.activations == S("x", "r")
    assert p.report["supergroups"] == [["ct", "relu"]]
    assert Placement(g, "per_tensor").params == {"ct.weight": None}


def test_matmul_of_two_activations_has_no_parameter_quantizer():
    g = graph(TensorSpec("x", (None, 3, 4)), ["m"],
              [op("rs", "reshape", ["x"], "t", shape=[4, 3]), op("mm", "matmul", ["x", "t"], "m")])
    p = Placement(g)
    assert p.params == {} and p.activations == S("x", "m")
