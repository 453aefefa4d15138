"""refq.quant.config: AIMET's quantsim config JSON, its schema and the rules it expresses.

Schema (aimet.md §3.2): six required sections; booleans are the strings "True"/"False" (JSON
true/false accepted); unknown keys and wrong types are errors at every level; AIMET's own refusals
(defaults.ops.is_output_quantized "False", op_type.X.is_input_quantized "False", is_input_quantized
in defaults) are errors. Every error is a QuantError naming the file and the key path.
Rules (§0.2.6, §3.2): the grid-preserving implicit rule, op_type overrides, and the param-setting
precedence op_type.params > params > defaults.params.
"""
import copy
import json
from importlib import resources

import pytest

from refq.errors import QuantError, RefqError
from refq.quant.config import (BUNDLED_CONFIGS, GRID_PRESERVING, ONNX_TYPE, PARAM_TYPE,
                               QuantsimConfig, load_config, parse_config)

SRC = "my_config.json"


def minimal():
    """The smallest valid config: the six sections, nothing else."""
    return {"defaults": {}, "params": {}, "op_type": {}, "supergroups": [], "model_input": {},
            "model_output": {}}


def full():
    """A config using every key the schema knows."""
    return {
        "defaults": {"ops": {"is_output_quantized": "True", "is_symmetric": "False"},
                     "params": {"is_quantized": "True", "is_symmetric": "True"},
                     "strict_symmetric": "False", "unsigned_symmetric": "False",
                     "per_channel_quantization": "False", "hw_version": "V73",
                     "supported_kernels": []},
        "params": {"bias": {"is_quantized": "False"}, "weight": {"is_symmetric": "True"}},
        "op_type": {"Conv": {"is_input_quantized": "True", "is_output_quantized": "True",
                             "is_symmetric": "False", "per_channel_quantization": "True",
                             "params": {"weight": {"is_quantized": "True", "is_symmetric": "True"}},
                             "supported_kernels": [],
                             "encoding_constraints": {"min": -1.0, "max": 1}}},
        "supergroups": [{"op_list": ["Conv", "Relu"]}],
        "supergroup_pass_list": ["MatmulAdd"],
        "model_input": {"is_input_quantized": "True"},
        "model_output": {"is_output_quantized": "False"},
    }


def with_(base, path, value):
    """A deep copy of `base` with `value` set at the dotted `path` (created as needed)."""
    d = copy.deepcopy(base)
    *head, last = path.split(".")
    cur = d
    for k in head:
        cur = cur.setdefault(k, {})
    cur[last] = value
    return d


def refused(data, *fragments, source=SRC):
    """parse_config(data) must raise a QuantError whose message holds the source and fragments."""
    with pytest.raises(QuantError) as err:
        parse_config(data, source=source)
    msg = str(err.value)
    assert source in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


def write(tmp_path, data, name="cfg.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data), encoding="utf-8")
    return p


# ------------------------------------------------------------------------------------ bundled

def test_bundled_names():
    assert BUNDLED_CONFIGS["default"] == BUNDLED_CONFIGS["per_channel"]
    assert BUNDLED_CONFIGS["per_tensor"] != BUNDLED_CONFIGS["per_channel"]
    for fname in set(BUNDLED_CONFIGS.values()):
        assert resources.files("refq.quant").joinpath("configs", fname).is_file()


def test_default_is_per_channel_and_none_selects_default():
    default, per_channel, none = load_config("default"), load_config("per_channel"), load_config()
    assert default == per_channel == none
    assert isinstance(default, QuantsimConfig)


def test_bundled_per_channel_content():
    c = load_config("per_channel")
    for t in ("Conv", "ConvTranspose", "Gemm", "MatMul", "PRelu"):
        assert c.per_channel(t) is True, t
    for t in ("Relu", "Add", "BatchNormalization", "GlobalAveragePool"):
        assert c.per_channel(t) is False, t
    assert set(c.supergroups) == {("Conv", "Relu"), ("ConvTranspose", "Relu"), ("Conv", "Clip"),
                                  ("Add", "Relu"), ("Gemm", "Relu")}
    assert c.model_input_quantized is True
    assert c.model_output_quantized is None
    assert c.output_quantized("Cast") is False
    assert c.param_setting("BatchNormalization", "running_mean", "is_quantized") is False
    assert c.param_setting("BatchNormalization", "running_var", "is_quantized") is False
    assert c.param_setting("BatchNormalization", "weight", "is_quantized") is True
    assert c.param_setting("Conv", "bias", "is_quantized") is False
    assert c.param_setting("Conv", "weight", "is_quantized") is True
    assert c.param_setting("Conv", "weight", "is_symmetric") is True
    assert c.output_symmetric("Relu") is False
    assert c.strict_symmetric is False and c.unsigned_symmetric is False
    assert c.extra == {"supergroup_pass_list": ["MatmulAdd"]}


def test_bundled_per_tensor_differs_only_in_per_channel():
    pc, pt = load_config("per_channel"), load_config("per_tensor")
    assert pt != pc
    for t in ("Conv", "ConvTranspose", "Gemm", "MatMul", "PRelu", "Relu"):
        assert pt.per_channel(t) is False, t
    assert set(pt.supergroups) == set(pc.supergroups)
    assert pt.defaults == pc.defaults and pt.params == pc.params
    assert pt.model_input == pc.model_input and pt.model_output == pc.model_output
    strip = {k: {kk: vv for kk, vv in v.items() if kk != "per_channel_quantization"}
             for k, v in pc.op_type.items()}
    assert {k: v for k, v in strip.items() if v} == pt.op_type


def test_mapping_tables_cover_the_refq_ops():
    from refq.layers import REGISTRY

    for op in REGISTRY:  # every registered op has an ONNX type
        assert op in ONNX_TYPE, op
    assert ONNX_TYPE["relu6"] == "Clip" and ONNX_TYPE["clip"] == "Clip"
    assert ONNX_TYPE["conv2d"] == "Conv" and ONNX_TYPE["dense"] == "Gemm"
    assert PARAM_TYPE["gamma"] == "weight" and PARAM_TYPE["beta"] == "bias"
    assert PARAM_TYPE["mean"] == "running_mean" and PARAM_TYPE["variance"] == "running_var"
    for t in ("MaxPool", "Flatten", "Reshape", "Pad", "Identity"):
        assert t in GRID_PRESERVING
    for t in ("AveragePool", "GlobalAveragePool", "Relu", "Concat", "Add"):
        assert t not in GRID_PRESERVING


# ------------------------------------------------------------------------------------ parsing

def test_minimal_and_full_configs_parse():
    c = parse_config(minimal(), SRC)
    assert c.source == SRC and c.supergroups == () and c.extra == {}
    f = parse_config(full(), SRC)
    assert f.supergroups == (("Conv", "Relu"),)
    assert f.extra == {"supergroup_pass_list": ["MatmulAdd"]}
    assert f.defaults["hw_version"] == "V73"
    assert f.encoding_constraints("Conv") == (-1.0, 1.0)
    assert isinstance(f.encoding_constraints("Conv")[1], float)


def test_string_booleans_become_bools():
    f = parse_config(full(), SRC)
    assert f.defaults["ops"] == {"is_output_quantized": True, "is_symmetric": False}
    assert f.op_type["Conv"]["params"]["weight"] == {"is_quantized": True, "is_symmetric": True}
    assert f.model_input == {"is_input_quantized": True}
    assert f.model_output == {"is_output_quantized": False}


def test_json_booleans_accepted_and_equal_to_strings():
    d = json.loads(json.dumps(full()).replace('"True"', "true").replace('"False"', "false"))
    assert parse_config(d, SRC) == parse_config(full(), SRC)


@pytest.mark.parametrize("section", ["defaults", "params", "op_type", "supergroups",
                                     "model_input", "model_output"])
def test_missing_section(section):
    d = minimal()
    del d[section]
    refused(d, section)


@pytest.mark.parametrize("data", [[], "text", 3, None])
def test_top_level_not_an_object(data):
    refused(data, "object")


@pytest.mark.parametrize("path, key", [
    ("bogus", "bogus"),
    ("defaults.bogus", "bogus"),
    ("defaults.ops.bogus", "bogus"),
    ("defaults.params.bogus", "bogus"),
    ("params.weight.bogus", "bogus"),
    ("op_type.Conv.bogus", "bogus"),
    ("op_type.Conv.params.weight.bogus", "bogus"),
    ("op_type.Conv.encoding_constraints.bogus", "bogus"),
    ("model_input.bogus", "bogus"),
    ("model_output.bogus", "bogus"),
])
def test_unknown_key_at_every_level(path, key):
    parent = path.rsplit(".", 1)[0] if "." in path else None
    msg = refused(with_(full(), path, "True"), f"'{key}'", "unknown key")
    if parent:
        assert parent in msg


def test_is_input_quantized_in_defaults_refused():
    refused(with_(full(), "defaults.ops.is_input_quantized", "True"), "defaults.ops",
            "is_input_quantized")


def test_defaults_params_per_param_entry_refused():
    # defaults.params holds is_quantized/is_symmetric, not per-parameter entries
    refused(with_(full(), "defaults.params.weight", {"is_quantized": "True"}), "defaults.params",
            "'weight'")


@pytest.mark.parametrize("path, value", [
    ("defaults.ops.is_symmetric", "true"),
    ("defaults.ops.is_symmetric", "TRUE"),
    ("defaults.ops.is_symmetric", 1),
    ("defaults.ops.is_symmetric", 0),
    ("defaults.ops.is_symmetric", None),
    ("defaults.ops.is_symmetric", ["True"]),
    ("defaults.per_channel_quantization", "yes"),
    ("defaults.strict_symmetric", "false"),
    ("defaults.params.is_quantized", 1.0),
    ("params.bias.is_quantized", "no"),
    ("op_type.Conv.is_output_quantized", "1"),
    ("op_type.Conv.per_channel_quantization", {}),
    ("op_type.Conv.params.weight.is_symmetric", 1),
    ("model_input.is_input_quantized", "on"),
    ("model_output.is_output_quantized", 0),
])
def test_wrong_boolean(path, value):
    refused(with_(full(), path, value), path, "True")


@pytest.mark.parametrize("path, value", [
    ("defaults", []),
    ("defaults.ops", "True"),
    ("defaults.params", ["is_quantized"]),
    ("params", []),
    ("params.weight", "True"),
    ("op_type", ["Conv"]),
    ("op_type.Conv", "True"),
    ("op_type.Conv.params", []),
    ("op_type.Conv.params.weight", "False"),
    ("op_type.Conv.encoding_constraints", [0, 1]),
    ("model_input", "True"),
    ("model_output", []),
])
def test_section_not_an_object(path, value):
    refused(with_(full(), path, value), path, "object")


@pytest.mark.parametrize("path, value", [
    ("defaults.hw_version", 73),
    ("defaults.supported_kernels", "int8"),
    ("op_type.Conv.supported_kernels", {}),
    ("supergroups", {"op_list": ["Conv", "Relu"]}),
    ("supergroup_pass_list", "MatmulAdd"),
    ("op_type.Conv.encoding_constraints.min", "0"),
    ("op_type.Conv.encoding_constraints.max", True),
    ("op_type.Conv.encoding_constraints.max", None),
])
def test_wrong_type(path, value):
    refused(with_(full(), path, value), path)


def test_defaults_output_quantized_false_refused():
    refused(with_(full(), "defaults.ops.is_output_quantized", "False"),
            "defaults.ops.is_output_quantized")
    refused(with_(full(), "defaults.ops.is_output_quantized", False),
            "defaults.ops.is_output_quantized")


def test_op_type_input_quantized_false_refused():
    refused(with_(full(), "op_type.Relu.is_input_quantized", "False"),
            "op_type.Relu.is_input_quantized")
    c = parse_config(with_(full(), "op_type.Relu.is_input_quantized", "True"), SRC)
    assert c.input_quantized("Relu") is True


def test_model_flags_may_be_false():
    d = with_(with_(full(), "model_input.is_input_quantized", "False"),
              "model_output.is_output_quantized", "False")
    c = parse_config(d, SRC)
    assert c.model_input_quantized is False and c.model_output_quantized is False


@pytest.mark.parametrize("groups", [
    [["Conv", "Relu"]],
    ["Conv"],
    [{"op_list": ["Conv"]}],
    [{"op_list": []}],
    [{"op_list": "ConvRelu"}],
    [{"op_list": ["Conv", 3]}],
    [{"op_list": ["Conv", "Relu"], "extra": 1}],
    [{"ops": ["Conv", "Relu"]}],
    [{"op_list": ["Conv", "Relu"]}, {}],
])
def test_malformed_supergroups(groups):
    d = with_(full(), "supergroups", groups)
    bad = len(groups) - 1 if groups and groups[0] == {"op_list": ["Conv", "Relu"]} else 0
    refused(d, f"supergroups[{bad}]")


def test_supergroup_of_three_kept_in_order():
    d = with_(minimal(), "supergroups", [{"op_list": ["Conv", "BatchNormalization", "Relu"]},
                                         {"op_list": ["Add", "Relu"]}])
    assert parse_config(d, SRC).supergroups == (("Conv", "BatchNormalization", "Relu"),
                                                ("Add", "Relu"))


@pytest.mark.parametrize("constraints", [
    {"min": 0.0},
    {"max": 1.0},
    {},
    {"min": 2.0, "max": 1.0},
])
def test_bad_encoding_constraints(constraints):
    refused(with_(full(), "op_type.Relu.encoding_constraints", constraints),
            "op_type.Relu.encoding_constraints")


def test_encoding_constraints_equal_bounds_and_ints_accepted():
    c = parse_config(with_(full(), "op_type.Relu.encoding_constraints", {"min": 0, "max": 0}), SRC)
    assert c.encoding_constraints("Relu") == (0.0, 0.0)
    assert c.encoding_constraints("Sigmoid") is None


@pytest.mark.parametrize("lo, hi", [(float("-inf"), 1.0), (0.0, float("inf"))])
def test_non_finite_encoding_constraints_refused(lo, hi):
    refused(with_(full(), "op_type.Relu.encoding_constraints", {"min": lo, "max": hi}),
            "op_type.Relu.encoding_constraints")


def test_nan_encoding_constraints_refused():
    refused(with_(full(), "op_type.Relu.encoding_constraints", {"min": float("nan"), "max": 1.0}),
            "op_type.Relu.encoding_constraints")


def test_parse_does_not_modify_its_input():
    d = full()
    before = copy.deepcopy(d)
    parse_config(d, SRC)
    assert d == before


def test_quant_error_is_a_refq_error():
    with pytest.raises(RefqError):
        parse_config({}, SRC)


# ------------------------------------------------------------------------------------ files

def test_load_from_file(tmp_path):
    p = write(tmp_path, full())
    c = load_config(str(p))
    assert c.source == str(p)
    assert c == parse_config(full(), str(p))
    assert load_config(p) == c           # a path object works too


def test_error_in_file_names_file_and_path(tmp_path):
    p = write(tmp_path, with_(full(), "op_type.Conv.params.weight.is_symmetric", "yes"))
    with pytest.raises(QuantError) as err:
        load_config(str(p))
    assert str(p) in str(err.value)
    assert "op_type.Conv.params.weight.is_symmetric" in str(err.value)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.json"
    with pytest.raises(QuantError) as err:
        load_config(str(p))
    assert str(p) in str(err.value)


def test_unknown_bundled_name_is_a_missing_file():
    with pytest.raises(QuantError) as err:
        load_config("per_layer")
    assert "per_layer" in str(err.value)


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(QuantError) as err:
        load_config(str(tmp_path))
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("content", [b"{", b"", b"{'defaults': {}}", b"\xff\xfe\x00garbage",
                                     b"True"])
def test_unreadable_content(tmp_path, content):
    p = tmp_path / "bad.json"
    p.write_bytes(content)
    with pytest.raises(QuantError) as err:
        load_config(str(p))
    assert str(p) in str(err.value)


def test_json_array_file(tmp_path):
    p = write(tmp_path, [minimal()])
    with pytest.raises(QuantError) as err:
        load_config(str(p))
    assert str(p) in str(err.value) and "object" in str(err.value)


# ------------------------------------------------------------------------------------ rules

def test_output_quantized_defaults_and_implicit_rule():
    c = parse_config(minimal(), SRC)
    for t in ("Conv", "Gemm", "Relu", "Clip", "Add", "Mul", "Concat", "AveragePool",
              "GlobalAveragePool", "HardSwish", "Softmax", "BatchNormalization"):
        assert c.output_quantized(t) is True, t
    for t in ("MaxPool", "Flatten", "Reshape", "Pad", "Identity"):
        assert c.output_quantized(t) is False, t


def test_op_type_overrides_is_output_quantized():
    d = minimal()
    d["op_type"] = {"MaxPool": {"is_output_quantized": "True"},
                    "Flatten": {"is_output_quantized": "True"},
                    "Relu": {"is_output_quantized": "False"},
                    "Cast": {"is_output_quantized": "False"}}
    c = parse_config(d, SRC)
    assert c.output_quantized("MaxPool") is True
    assert c.output_quantized("Flatten") is True
    assert c.output_quantized("Relu") is False
    assert c.output_quantized("Reshape") is False       # not named: implicit rule
    assert c.output_quantized("Conv") is True


def test_naming_a_grid_preserving_type_lifts_the_implicit_rule():
    d = minimal()
    d["op_type"] = {"MaxPool": {"is_symmetric": "True"}, "Reshape": {}}
    c = parse_config(d, SRC)
    assert c.output_quantized("MaxPool") is True     # named -> the defaults apply
    assert c.output_quantized("Reshape") is True
    assert c.output_quantized("Flatten") is False    # not named


def test_output_symmetric():
    c = parse_config(minimal(), SRC)
    assert c.output_symmetric("Relu") is False
    d = with_(minimal(), "defaults.ops.is_symmetric", "True")
    d["op_type"] = {"Relu": {"is_symmetric": "False"}}
    c = parse_config(d, SRC)
    assert c.output_symmetric("Conv") is True
    assert c.output_symmetric("Relu") is False
    d = minimal()
    d["op_type"] = {"Sigmoid": {"is_symmetric": "True"}}
    c = parse_config(d, SRC)
    assert c.output_symmetric("Sigmoid") is True and c.output_symmetric("Tanh") is False


def test_input_quantized():
    d = minimal()
    d["op_type"] = {"Add": {"is_input_quantized": "True"}}
    c = parse_config(d, SRC)
    assert c.input_quantized("Add") is True
    assert c.input_quantized("Conv") is False


def test_per_channel_overrides():
    d = minimal()
    d["op_type"] = {"Conv": {"per_channel_quantization": "True"}}
    c = parse_config(d, SRC)
    assert c.per_channel("Conv") is True and c.per_channel("Gemm") is False
    d = with_(minimal(), "defaults.per_channel_quantization", "True")
    d["op_type"] = {"Gemm": {"per_channel_quantization": "False"}}
    c = parse_config(d, SRC)
    assert c.per_channel("Conv") is True and c.per_channel("Gemm") is False


def test_param_setting_precedence():
    d = minimal()
    d["defaults"] = {"params": {"is_quantized": "True", "is_symmetric": "True"}}
    d["params"] = {"weight": {"is_symmetric": "False"}, "bias": {"is_quantized": "False"}}
    d["op_type"] = {"Conv": {"params": {"weight": {"is_symmetric": "True"}}},
                    "Gemm": {"params": {"weight": {"is_quantized": "False"},
                                        "bias": {"is_quantized": "True"}}}}
    c = parse_config(d, SRC)
    # op_type.params > params
    assert c.param_setting("Conv", "weight", "is_symmetric") is True
    assert c.param_setting("Gemm", "bias", "is_quantized") is True
    # params > defaults.params
    assert c.param_setting("Gemm", "weight", "is_symmetric") is False
    assert c.param_setting("Relu", "weight", "is_symmetric") is False
    assert c.param_setting("Conv", "bias", "is_quantized") is False
    # a key the more specific level does not set falls through to the next one
    assert c.param_setting("Conv", "weight", "is_quantized") is True
    assert c.param_setting("Gemm", "weight", "is_quantized") is False
    # defaults.params for a parameter no level names
    assert c.param_setting("BatchNormalization", "running_mean", "is_quantized") is True
    assert c.param_setting("BatchNormalization", "running_mean", "is_symmetric") is True


def test_param_setting_defaults_false():
    d = minimal()
    d["defaults"] = {"params": {"is_quantized": "False", "is_symmetric": "False"}}
    d["op_type"] = {"Conv": {"params": {"weight": {"is_quantized": "True"}}}}
    c = parse_config(d, SRC)
    assert c.param_setting("Conv", "weight", "is_quantized") is True
    assert c.param_setting("Conv", "weight", "is_symmetric") is False
    assert c.param_setting("Gemm", "weight", "is_quantized") is False


def test_param_setting_without_any_level():
    c = parse_config(minimal(), SRC)
    assert c.param_setting("Conv", "weight", "is_quantized") is True
    assert c.param_setting("Conv", "weight", "is_symmetric") is True


def test_strict_and_unsigned_symmetric_flags():
    d = with_(with_(minimal(), "defaults.strict_symmetric", "True"),
              "defaults.unsigned_symmetric", "True")
    c = parse_config(d, SRC)
    assert c.strict_symmetric is True and c.unsigned_symmetric is True
    c = parse_config(minimal(), SRC)
    assert c.strict_symmetric is False and c.unsigned_symmetric is False
    assert c.model_input_quantized is False and c.model_output_quantized is None


# ------------------------------------------------------------------------- supported kernels

def _kernel(act, param, dtype="int"):
    return {"activation": {"bitwidth": act, "dtype": dtype}, "param": {"bitwidth": param,
                                                                      "dtype": dtype}}


def test_supported_kernels_allow_only_the_listed_integer_kernels():
    """defaults.supported_kernels [A8/W8, A16/W8, fp16]: A8/W8 and A16/W8 pass, A8/W4 is refused
    naming the key path and the allowed pairs; an op type's own list applies when the model has
    that op type; an empty list or none allows every bitwidth."""
    cfg = parse_config(with_(minimal(), "defaults.supported_kernels",
                             [_kernel(8, 8), _kernel(16, 8), _kernel(16, 16, "float")]), SRC)
    cfg.check_bitwidths(8, 8)
    cfg.check_bitwidths(8, 16)
    with pytest.raises(QuantError) as err:
        cfg.check_bitwidths(4, 8)
    msg = str(err.value)
    for part in (SRC, "defaults.supported_kernels", "A8/W8, A16/W8", "parameter bitwidth 4"):
        assert part in msg, msg
    conv = parse_config(with_(minimal(), "op_type.Conv.supported_kernels", [_kernel(8, 4)]), SRC)
    conv.check_bitwidths(8, 8)                    # no Conv in the model
    with pytest.raises(QuantError, match="op_type.Conv.supported_kernels allows A8/W4"):
        conv.check_bitwidths(8, 8, {"Conv", "Relu"})
    conv.check_bitwidths(4, 8, {"Conv"})
    parse_config(full(), SRC).check_bitwidths(3, 5, {"Conv"})   # empty lists


def test_quantsim_and_adaround_refuse_a_bitwidth_the_config_forbids():
    import numpy as np

    from refq.algorithms import adaround
    from refq.graph import Graph, Node, TensorSpec
    from refq.quant.quantsim import QuantSim

    g = Graph([TensorSpec("x", (None, 3), "float32")], ["y"],
              [Node("fc", "dense", ["x"], ["y"], {}, {"weight": np.eye(2, 3)})])
    cfg = with_(minimal(), "defaults.supported_kernels", [_kernel(8, 8)])
    with pytest.raises(QuantError, match="allows A8/W8"):
        QuantSim(g, cfg, param_bw=4)
    sim = QuantSim(g, cfg).compute_encodings(np.ones((4, 3), np.float32))
    with pytest.raises(QuantError, match="parameter bitwidth 4"):
        adaround(sim, np.ones((4, 3), np.float32), iterations=2, param_bw=4)
