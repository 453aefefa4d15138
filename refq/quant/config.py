"""AIMET's quantsim configuration JSON: schema check and the rules it expresses.

The file has six sections, applied from general to specific (later ones override earlier ones):
`defaults` -> `params` -> `op_type` -> `supergroups` -> `model_input` -> `model_output`.

    {"defaults": {"ops": {"is_output_quantized": "True", "is_symmetric": "False"},
                  "params": {"is_quantized": "True", "is_symmetric": "True"},
                  "strict_symmetric": "False", "unsigned_symmetric": "False",
                  "per_channel_quantization": "False"},
     "params": {"bias": {"is_quantized": "False"}},
     "op_type": {"Conv": {"per_channel_quantization": "True", "is_output_quantized": "True",
                          "params": {"weight": {"is_symmetric": "True"}},
                          "encoding_constraints": {"min": 0.0, "max": 1.0}}},
     "supergroups": [{"op_list": ["Conv", "Relu"]}],
     "model_input": {"is_input_quantized": "True"},
     "model_output": {"is_output_quantized": "False"}}

Booleans are the strings "True"/"False" as AIMET writes them (JSON true/false are accepted too).
Op types are ONNX names (`Conv`, `Gemm`, `Relu`, ...); `ONNX_TYPE` maps refq ops to them, and
`PARAM_TYPE` maps refq parameter names to AIMET's (`gamma` -> `weight`, ...). Keys AIMET accepts
but that have no effect on a simulation (`hw_version`, `supported_kernels`,
`supergroup_pass_list`) are checked for type and kept; any other key is an error.

Bundled configs (`refq/quant/configs/`): `default_per_channel.json`, equal in meaning to AIMET
2.42's `default_config_per_channel.json` (what `config_file=None` selects): per-channel weights for
Conv, ConvTranspose, Gemm, MatMul and PRelu; and `default_per_tensor.json`, equal to AIMET 2.42's
`default_config.json`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources

from ..errors import QuantError

__all__ = ["QuantsimConfig", "load_config", "parse_config", "BUNDLED_CONFIGS", "ONNX_TYPE",
           "PARAM_TYPE", "GRID_PRESERVING"]

BUNDLED_CONFIGS = {"default": "default_per_channel.json",
                   "per_channel": "default_per_channel.json",
                   "per_tensor": "default_per_tensor.json"}

ONNX_TYPE = {
    "conv2d": "Conv", "dense": "Gemm", "batch_norm": "BatchNormalization", "relu": "Relu",
    "relu6": "Clip", "clip": "Clip", "leaky_relu": "LeakyRelu", "sigmoid": "Sigmoid",
    "tanh": "Tanh", "hard_sigmoid": "HardSigmoid", "hard_swish": "HardSwish",
    "softmax": "Softmax", "max_pool2d": "MaxPool", "avg_pool2d": "AveragePool",
    "global_avg_pool2d": "GlobalAveragePool", "add": "Add", "multiply": "Mul",
    "concat": "Concat", "flatten": "Flatten", "reshape": "Reshape", "zero_pad2d": "Pad",
    "identity": "Identity",
}
"""refq op -> the ONNX op type AIMET's config names (ReLU6 exports as Clip)."""

PARAM_TYPE = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
              "mean": "running_mean", "variance": "running_var"}
"""refq parameter name -> AIMET's (PyTorch) parameter name."""

GRID_PRESERVING = frozenset({"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool",
                             "Pad", "Dropout", "Slice", "Gather", "Split", "Tile", "TopK",
                             "ReduceMax", "ReduceMin", "Identity", "Expand", "DepthToSpace",
                             "SpaceToDepth"})
"""Op types whose output lies on the input's grid; AIMET 2.42 leaves their outputs unquantized
unless the config names the type (`common/onnx/_utils.py::_is_grid_preserving_op`)."""

_BOOL = "bool"
_QUANT_SETTINGS = {"is_quantized": _BOOL, "is_symmetric": _BOOL}
_SCHEMA = {
    "defaults": {
        "ops": {"is_output_quantized": _BOOL, "is_symmetric": _BOOL},
        "params": _QUANT_SETTINGS,
        "strict_symmetric": _BOOL, "unsigned_symmetric": _BOOL,
        "per_channel_quantization": _BOOL, "hw_version": str, "supported_kernels": list,
    },
    "params": {"*": _QUANT_SETTINGS},
    "op_type": {"*": {
        "is_input_quantized": _BOOL, "is_output_quantized": _BOOL, "is_symmetric": _BOOL,
        "params": {"*": _QUANT_SETTINGS}, "per_channel_quantization": _BOOL,
        "supported_kernels": list, "encoding_constraints": {"min": float, "max": float},
    }},
    "supergroups": list,
    "supergroup_pass_list": list,
    "model_input": {"is_input_quantized": _BOOL},
    "model_output": {"is_output_quantized": _BOOL},
}
_REQUIRED = ("defaults", "params", "op_type", "supergroups", "model_input", "model_output")


def _check(value, schema, path, source):
    """Return `value` with "True"/"False" turned into bools; QuantError on unknown keys/types."""
    where = f"{source}: {path}" if path else source
    if schema is _BOOL:
        if isinstance(value, bool):
            return value
        if value in ("True", "False"):
            return value == "True"
        raise QuantError(f"{where}: expected \"True\" or \"False\", got {value!r}")
    if schema is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise QuantError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if schema in (str, list):
        if not isinstance(value, schema):
            raise QuantError(f"{where}: expected a {schema.__name__}, got {value!r}")
        return value
    if not isinstance(value, dict):
        raise QuantError(f"{where}: expected an object, got {value!r}")
    out = {}
    for key, v in value.items():
        sub = schema.get(key, schema.get("*"))
        if sub is None:
            raise QuantError(f"{where}: unknown key '{key}'; known keys: {sorted(schema)}")
        out[key] = _check(v, sub, f"{path}.{key}" if path else key, source)
    return out


@dataclass(frozen=True)
class QuantsimConfig:
    """A checked quantsim config. Each section is kept as parsed, booleans as bools."""

    defaults: dict
    params: dict
    op_type: dict
    supergroups: tuple
    model_input: dict
    model_output: dict
    source: str = "<config>"
    extra: dict = field(default_factory=dict)

    # ---- the rules ---------------------------------------------------------------------------
    def output_quantized(self, op_type: str) -> bool:
        """Whether an op of this type gets an output quantizer before supergroups apply."""
        spec = self.op_type.get(op_type, {})
        if "is_output_quantized" in spec:
            return spec["is_output_quantized"]
        if op_type in GRID_PRESERVING and op_type not in self.op_type:
            return False
        return self.defaults.get("ops", {}).get("is_output_quantized", True)

    def output_symmetric(self, op_type: str) -> bool:
        spec = self.op_type.get(op_type, {})
        if "is_symmetric" in spec:
            return spec["is_symmetric"]
        return self.defaults.get("ops", {}).get("is_symmetric", False)

    def input_quantized(self, op_type: str) -> bool:
        return self.op_type.get(op_type, {}).get("is_input_quantized", False)

    def param_setting(self, op_type: str, param: str, key: str):
        """is_quantized / is_symmetric of parameter `param` (AIMET name) of an op type."""
        for level in (self.op_type.get(op_type, {}).get("params", {}), self.params,
                      {"*": self.defaults.get("params", {})}):
            spec = level.get(param, level.get("*", {}))
            if key in spec:
                return spec[key]
        return {"is_quantized": True, "is_symmetric": True}[key]

    def per_channel(self, op_type: str) -> bool:
        spec = self.op_type.get(op_type, {})
        if "per_channel_quantization" in spec:
            return spec["per_channel_quantization"]
        return self.defaults.get("per_channel_quantization", False)

    def encoding_constraints(self, op_type: str):
        """(min, max) fixed by the config for this op type's output, or None."""
        c = self.op_type.get(op_type, {}).get("encoding_constraints")
        return None if c is None else (c["min"], c["max"])

    @property
    def strict_symmetric(self) -> bool:
        return self.defaults.get("strict_symmetric", False)

    @property
    def unsigned_symmetric(self) -> bool:
        return self.defaults.get("unsigned_symmetric", False)

    @property
    def model_input_quantized(self) -> bool:
        return self.model_input.get("is_input_quantized", False)

    @property
    def model_output_quantized(self):
        """True/False when the config says so, None when it leaves outputs to the other rules."""
        return self.model_output.get("is_output_quantized")


def parse_config(data: dict, source: str = "<config>") -> QuantsimConfig:
    """Check a config dict (as read from JSON) and return a QuantsimConfig."""
    if not isinstance(data, dict):
        raise QuantError(f"{source}: a quantsim config is a JSON object, got {type(data).__name__}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise QuantError(f"{source}: missing required section(s) {missing}")
    d = _check(data, _SCHEMA, "", source)
    if "is_output_quantized" in d["defaults"].get("ops", {}) and \
            not d["defaults"]["ops"]["is_output_quantized"]:
        raise QuantError(f"{source}: defaults.ops.is_output_quantized \"False\" is not allowed "
                         "(AIMET rejects it); turn outputs off per op_type instead")
    for t, spec in d["op_type"].items():
        if spec.get("is_input_quantized") is False:
            raise QuantError(f"{source}: op_type.{t}.is_input_quantized may only be \"True\"")
        c = spec.get("encoding_constraints")
        if c is not None and (set(c) != {"min", "max"} or not math.isfinite(c["min"])
                              or not math.isfinite(c["max"]) or not c["min"] <= c["max"]):
            raise QuantError(f"{source}: op_type.{t}.encoding_constraints needs finite "
                             "min <= max")
    groups = []
    for i, g in enumerate(d["supergroups"]):
        if not isinstance(g, dict) or set(g) != {"op_list"}:
            raise QuantError(f"{source}: supergroups[{i}] must be {{\"op_list\": [...]}}, got {g!r}")
        ops = g["op_list"]
        if not isinstance(ops, list) or len(ops) < 2 or not all(isinstance(o, str) for o in ops):
            raise QuantError(f"{source}: supergroups[{i}].op_list must list at least 2 op types")
        groups.append(tuple(ops))
    extra = {k: d[k] for k in d if k not in _REQUIRED}
    return QuantsimConfig(d["defaults"], d["params"], d["op_type"], tuple(groups),
                          d["model_input"], d["model_output"], source, extra)


def load_config(path_or_name: str | None = None) -> QuantsimConfig:
    """A config from a JSON file, or a bundled one by name ('default' = 'per_channel',
    'per_tensor'). None selects 'default', as AIMET 2.42's `config_file=None` does."""
    name = "default" if path_or_name is None else os.fspath(path_or_name)
    if name in BUNDLED_CONFIGS:
        path = os.fspath(resources.files("refq.quant").joinpath("configs", BUNDLED_CONFIGS[name]))
    else:
        path = name
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise QuantError(f"{path}: no such config file; give a JSON path or one of "
                         f"{sorted(BUNDLED_CONFIGS)}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QuantError(f"{path}: not a readable JSON config ({e})") from None
    return parse_config(data, source=path)
