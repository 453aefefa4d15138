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
Names are checked too: an op type (a key of `op_type`, a member of a supergroup's `op_list`) must
be an ONNX operator name (`ONNX_OP_TYPES`; a near miss such as "conv" or "Relu6" is refused with
the closest name), a parameter name (a key of `params` or `op_type.<T>.params`) one of AIMET's
(`AIMET_PARAM_NAMES`). Every error names the file, the key path
(`op_type.Conv.per_channel_quantization`), the bad key or value and what is allowed.

A config keeps the file it came from (`source`, for messages) and a display name (`name`: the
bundled name, or the file's basename); `to_json()` gives the checked config as a JSON document
that `parse_config` reads back unchanged, so a saved simulation can carry its config instead of a
path of the machine that made it.

Bundled configs (`refq/quant/configs/`): `default_per_channel.json`, equal in meaning to AIMET
2.42's `default_config_per_channel.json` (what `config_file=None` selects): per-channel weights for
Conv, ConvTranspose, Gemm, MatMul and PRelu; and `default_per_tensor.json`, equal to AIMET 2.42's
`default_config.json`.
"""
from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources

from ..errors import QuantError
from ..layers import REGISTRY

__all__ = ["QuantsimConfig", "load_config", "parse_config", "BUNDLED_CONFIGS", "ONNX_TYPE",
           "PARAM_TYPE", "GRID_PRESERVING", "ONNX_OP_TYPES", "AIMET_PARAM_NAMES"]

BUNDLED_CONFIGS = {"default": "default_per_channel.json",
                   "per_channel": "default_per_channel.json",
                   "per_tensor": "default_per_tensor.json"}

ONNX_TYPE = {name: op.traits.onnx_type for name, op in REGISTRY.items()}
"""refq op -> the ONNX op type AIMET's config names (ReLU6 exports as Clip): `Traits.onnx_type`."""

PARAM_TYPE = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
              "mean": "running_mean", "variance": "running_var"}
"""refq parameter name -> AIMET's (PyTorch) parameter name."""

GRID_PRESERVING = frozenset({"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool",
                             "Pad", "Dropout", "Slice", "Gather", "Split", "Tile", "TopK",
                             "ReduceMax", "ReduceMin", "Identity", "Expand", "DepthToSpace",
                             "SpaceToDepth"})
"""Op types whose output lies on the input's grid; AIMET 2.42 leaves their outputs unquantized
unless the config names the type (`common/onnx/_utils.py::_is_grid_preserving_op`)."""

ONNX_OP_TYPES = frozenset("""
    Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
    BatchNormalization Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor
    BlackmanWindow Cast CastLike Ceil Celu CenterCropPad Clip Col2Im Compress Concat
    ConcatFromSequence Constant ConstantOfShape Conv ConvInteger ConvTranspose Cos Cosh CumSum DFT
    DeformConv DepthToSpace DequantizeLinear Det Div Dropout DynamicQuantizeLinear Einsum Elu
    Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm
    GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
    GroupNormalization HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
    ImageDecoder InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul MatMulInteger Max MaxPool
    MaxRoiPool MaxUnpool Mean MeanVarianceNormalization MelWeightMatrix Min Mish Mod Mul
    Multinomial Neg NegativeLogLikelihoodLoss NonMaxSuppression NonZero Not OneHot Optional
    OptionalGetElement OptionalHasElement Or PRelu Pad Pow QLinearConv QLinearMatMul
    QuantizeLinear RMSNormalization RNN RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
    ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare RegexFullMatch Relu Reshape Resize
    ReverseSequence RoiAlign RotaryEmbedding Round STFT Scan Scatter ScatterElements ScatterND
    Selu SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
    SequenceMap Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax SoftmaxCrossEntropyLoss
    Softplus Softsign SpaceToDepth Split SplitToSequence Sqrt Squeeze StringConcat
    StringNormalizer StringSplit Sub Sum Swish Tan Tanh TensorScatter TfIdfVectorizer
    ThresholdedRelu Tile TopK Transpose Trilu Unique Unsqueeze Upsample Where Xor
""".split())
"""The op type names a config may use: the operators of ONNX's default domain (AIMET's configs
name op types by their ONNX names)."""

AIMET_PARAM_NAMES = frozenset(PARAM_TYPE.values())
"""The parameter names a config's `params` sections may use (AIMET's PyTorch names)."""

_BOOL = "bool"
_OP_TYPE = "op type"
_PARAM_NAME = "param name"
_QUANT_SETTINGS = {"is_quantized": _BOOL, "is_symmetric": _BOOL}
_SCHEMA = {
    "defaults": {
        "ops": {"is_output_quantized": _BOOL, "is_symmetric": _BOOL},
        "params": _QUANT_SETTINGS,
        "strict_symmetric": _BOOL, "unsigned_symmetric": _BOOL,
        "per_channel_quantization": _BOOL, "hw_version": str, "supported_kernels": list,
    },
    "params": {_PARAM_NAME: _QUANT_SETTINGS},
    "op_type": {_OP_TYPE: {
        "is_input_quantized": _BOOL, "is_output_quantized": _BOOL, "is_symmetric": _BOOL,
        "params": {_PARAM_NAME: _QUANT_SETTINGS}, "per_channel_quantization": _BOOL,
        "supported_kernels": list, "encoding_constraints": {"min": float, "max": float},
    }},
    "supergroups": list,
    "supergroup_pass_list": list,
    "model_input": {"is_input_quantized": _BOOL},
    "model_output": {"is_output_quantized": _BOOL},
}
_REQUIRED = ("defaults", "params", "op_type", "supergroups", "model_input", "model_output")


def _name_problem(name, kind):
    """Why `name` is not a valid op type / parameter name (a one-line hint), or None."""
    known = ONNX_OP_TYPES if kind == _OP_TYPE else AIMET_PARAM_NAMES
    if isinstance(name, str) and name in known:
        return None
    if kind == _PARAM_NAME:
        return f"unknown parameter name {name!r}; AIMET's parameter names are {sorted(known)}"
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    case = [k for k in known if k.lower() == str(name).lower()]
    hint = f"; did you mean '{(case or close)[0]}'?" if case or close else ""
    return (f"unknown op type {name!r}: op types are ONNX operator names (refq's ops map to "
            f"{sorted(set(ONNX_TYPE.values()))}){hint}")


def _check(value, schema, path, source):
    """Return `value` with "True"/"False" turned into bools; QuantError naming the key path on
    unknown keys or names and on wrong types or values."""
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
    if schema is str:
        if not isinstance(value, str):
            raise QuantError(f"{where}: expected a string, got {value!r}")
        return value
    if schema is list:
        if not isinstance(value, list):
            raise QuantError(f"{where}: expected a list, got {value!r}")
        return value
    if not isinstance(value, dict):
        raise QuantError(f"{where}: expected an object, got {value!r}")
    out = {}
    named = next((k for k in (_OP_TYPE, _PARAM_NAME) if k in schema), None)
    for key, v in value.items():
        sub = schema.get(key) if named is None else schema[named]
        if sub is None:
            raise QuantError(f"{where}: unknown key '{key}'; allowed keys: {sorted(schema)}")
        if named is not None:
            problem = _name_problem(key, named)
            if problem:
                raise QuantError(f"{where}: {problem}")
        out[key] = _check(v, sub, f"{path}.{key}" if path else key, source)
    return out


def _check_objects(value, path, source):
    """`supported_kernels`: a list of objects (AIMET's kernel descriptions, kept unread)."""
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise QuantError(f"{source}: {path}[{i}]: expected an object (a kernel description), "
                             f"got {item!r}")


def _check_strings(value, path, source, kind=None):
    """A list of strings (op types when `kind` is _OP_TYPE); QuantError naming the bad member."""
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise QuantError(f"{source}: {path}[{i}]: expected a string, got {item!r}")
        problem = kind and _name_problem(item, kind)
        if problem:
            raise QuantError(f"{source}: {path}[{i}]: {problem}")


@dataclass(frozen=True)
class QuantsimConfig:
    """A checked quantsim config. Each section is kept as parsed, booleans as bools.

    source: where it was read from (a path, for messages); name: its display name (the bundled
    name, or the file's basename), the only trace of its origin that a saved simulation keeps."""

    defaults: dict
    params: dict
    op_type: dict
    supergroups: tuple
    model_input: dict
    model_output: dict
    source: str = field(default="<config>", compare=False)
    extra: dict = field(default_factory=dict)
    name: str = field(default="<config>", compare=False)

    def to_json(self) -> dict:
        """The config as a JSON document (booleans as JSON booleans) that `parse_config` reads
        back to an equal config."""
        doc = {"defaults": self.defaults, "params": self.params, "op_type": self.op_type,
               "supergroups": [{"op_list": list(g)} for g in self.supergroups],
               "model_input": self.model_input, "model_output": self.model_output}
        doc.update(self.extra)
        return json.loads(json.dumps(doc))  # a deep copy of plain values

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

    def check_bitwidths(self, param_bw: int, act_bw: int, op_types=()) -> None:
        """QuantError when the config lists `supported_kernels` (in `defaults`, or in `op_type.<T>`
        for a T of `op_types`) and none of them is the integer kernel (activation bitwidth
        act_bw, parameter bitwidth param_bw). AIMET's kernel descriptions read
        {"activation": {"bitwidth": 8, "dtype": "int"}, "param": {"bitwidth": 8, "dtype": "int"}}
        (a missing dtype is int). A config without `supported_kernels` allows every bitwidth."""
        levels = [("defaults", self.defaults)] + [(f"op_type.{t}", self.op_type[t])
                                                  for t in op_types if t in self.op_type]
        for path, spec in levels:
            kernels = spec.get("supported_kernels")
            if not kernels:
                continue
            allowed = [(k.get("activation", {}).get("bitwidth"), k.get("param", {}).get("bitwidth"))
                       for k in kernels
                       if all(k.get(kind, {}).get("dtype", "int") == "int"
                              for kind in ("activation", "param"))]
            if (act_bw, param_bw) not in allowed:
                listed = ", ".join(f"A{a}/W{w}" for a, w in allowed) or "no integer kernel"
                raise QuantError(f"{self.source}: {path}.supported_kernels allows {listed}; "
                                 f"activation bitwidth {act_bw} with parameter bitwidth "
                                 f"{param_bw} is not among them (choose --act-bw/--param-bw "
                                 "from that list, or another config)")

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


def parse_config(data: dict, source: str = "<config>", name: str | None = None) -> QuantsimConfig:
    """Check a config dict (as read from JSON) and return a QuantsimConfig. `source` names it in
    messages; `name` is its display name (default: the basename of `source`)."""
    if not isinstance(data, dict):
        raise QuantError(f"{source}: a quantsim config is a JSON object, got {type(data).__name__}")
    d = _check(data, _SCHEMA, "", source)
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise QuantError(f"{source}: missing required section(s) {missing}; a quantsim config has "
                         f"the sections {list(_REQUIRED)} (supergroup_pass_list optional)")
    if "supported_kernels" in d["defaults"]:
        _check_objects(d["defaults"]["supported_kernels"], "defaults.supported_kernels", source)
    for t, spec in d["op_type"].items():
        if "supported_kernels" in spec:
            _check_objects(spec["supported_kernels"], f"op_type.{t}.supported_kernels", source)
    if "supergroup_pass_list" in d:
        _check_strings(d["supergroup_pass_list"], "supergroup_pass_list", source)
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
        if not isinstance(g, dict):
            raise QuantError(f"{source}: supergroups[{i}] must be {{\"op_list\": [...]}}, got {g!r}")
        unknown = sorted(set(g) - {"op_list"})
        if unknown:
            raise QuantError(f"{source}: supergroups[{i}]: unknown key '{unknown[0]}'; allowed "
                             "keys: ['op_list']")
        if "op_list" not in g:
            raise QuantError(f"{source}: supergroups[{i}] must be {{\"op_list\": [...]}}, got {g!r}")
        ops = g["op_list"]
        if not isinstance(ops, list) or len(ops) < 2:
            raise QuantError(f"{source}: supergroups[{i}].op_list must list at least 2 op types, "
                             f"got {ops!r}")
        _check_strings(ops, f"supergroups[{i}].op_list", source, _OP_TYPE)
        groups.append(tuple(ops))
    extra = {k: d[k] for k in d if k not in _REQUIRED}
    name = os.path.basename(str(source)) if name is None else name
    return QuantsimConfig(d["defaults"], d["params"], d["op_type"], tuple(groups),
                          d["model_input"], d["model_output"], source, extra, name)


def load_config(path_or_name: str | None = None) -> QuantsimConfig:
    """A config from a JSON file, or a bundled one by name ('default' = 'per_channel',
    'per_tensor'). None selects 'default', as AIMET 2.42's `config_file=None` does. Its display
    name is the bundled config's name ('per_channel' for 'default') or the file's basename."""
    name = "default" if path_or_name is None else os.fspath(path_or_name)
    if name in BUNDLED_CONFIGS:
        path = os.fspath(resources.files("refq.quant").joinpath("configs", BUNDLED_CONFIGS[name]))
        display = BUNDLED_CONFIGS[name].removeprefix("default_").removesuffix(".json")
    else:
        path, display = name, os.path.basename(name)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise QuantError(f"{path}: no such config file; give a JSON path or one of "
                         f"{sorted(BUNDLED_CONFIGS)}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QuantError(f"{path}: not a readable JSON config ({e}); give a quantsim config JSON "
                         f"file (`refq quantize --config FILE.json`) or one of "
                         f"{sorted(BUNDLED_CONFIGS)}") from None
    return parse_config(data, source=path, name=display)
