"""Bad-input corpus of the specs and configs a user writes, the stored simulation, lowering and
calibration data: every case fails with one clean line naming the file (or spec), the key path or
node, the bad value and what to do, and writes nothing.

Through the CLI where a command reads the input (`refq quantize --config`, `--load-encodings`,
`--calib`, `refq lower`, `refq equalize`, `refq report` of damaged or wrong-kind models); through
the Python API (pytest.raises) for `lower_from_params` specs, in-memory calibration data and
integer codes fed to `run_int`.
"""
import copy
import json

import numpy as np
import pytest

from cli_helpers import fails_cleanly
from refq import save
from refq.algorithms import correct_bias, equalize, fold_batch_norms
from refq.errors import FixedPointError, InputError, QuantError, RefqError
from refq.exporters import export_aimet_encodings
from refq.fixedpoint.lowering import lower, lower_from_params
from refq.fixedpoint.run import run_int
from refq.graph import Graph, Node, TensorSpec
from refq.model_io import load, load_section
from refq.quant.config import load_config
from refq.quant.quantsim import QuantSim

f32 = np.float32


# ----------------------------------------------------------------------------- small models

def _graph(bn: bool) -> Graph:
    """x [N, 6, 6, 3] -> conv (-> batch_norm) -> relu -> global pool -> dense."""
    r = np.random.default_rng(0)
    nodes = [Node("conv", "conv2d", ["x"], ["c"], {"padding": "same"},
                  {"weight": r.normal(0, 0.4, (4, 3, 3, 3)).astype(f32),
                   "bias": r.normal(0, 0.1, 4).astype(f32)})]
    t = "c"
    if bn:
        nodes.append(Node("bn", "batch_norm", ["c"], ["b"], {"epsilon": 1e-3},
                          {"gamma": (1 + 0.1 * r.normal(size=4)).astype(f32),
                           "beta": r.normal(size=4).astype(f32),
                           "mean": r.normal(size=4).astype(f32),
                           "variance": (1 + np.abs(r.normal(size=4))).astype(f32)}))
        t = "b"
    nodes += [Node("relu", "relu", [t], ["r"]),
              Node("gap", "global_avg_pool2d", ["r"], ["p"]),
              Node("fc", "dense", ["p"], ["y"], {}, {"weight": r.normal(0, 0.5, (5, 4)).astype(f32),
                                                      "bias": r.normal(0, 0.1, 5).astype(f32)})]
    return Graph([TensorSpec("x", (None, 6, 6, 3))], ["y"], nodes, name="bn_net" if bn else "net")


def _calib(n=4, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 6, 6, 3)).astype(f32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The good files every case damages or misuses (in their own directory, not under the
    case's tmp_path, so `fails_cleanly` watches only what a case could write)."""
    d = tmp_path_factory.mktemp("corpus")
    x = _calib()
    out = {"dir": d, "calib": d / "calib.npy", "float": d / "float.refq.h5",
           "bn_float": d / "bn_float.refq.h5", "q": d / "q.refq.h5",
           "unfolded_q": d / "unfolded_q.refq.h5", "int": d / "int.refq.h5"}
    np.save(out["calib"], x)
    save(_graph(False), out["float"])
    save(_graph(True), out["bn_float"])
    sim = QuantSim(_graph(False), "per_tensor").compute_encodings(x)
    sim.save(out["q"])
    save(lower(sim, "tflite"), out["int"])
    QuantSim(_graph(True), "per_tensor").compute_encodings(x).save(out["unfolded_q"])
    for v in ("0.6.1", "1.0.0"):
        out[v] = export_aimet_encodings(sim, d / f"good_{v}.encodings", version=v)
    with open(load_config("per_tensor").source, encoding="utf-8") as f:
        out["config"] = json.load(f)
    return out


def _write_json(path, doc):
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- quantsim configs

def _cfg(change):
    def apply(d):
        d = copy.deepcopy(d)
        change(d)
        return d
    return apply


CONFIG_CASES = {
    "top_unknown_key": (_cfg(lambda d: d.update(op_types={})), ("'op_types'", "allowed keys")),
    "defaults_unknown_key": (_cfg(lambda d: d["defaults"].update(per_channel_quantisation="True")),
                             ("per_channel_quantisation", "allowed keys", "defaults")),
    "defaults_ops_unknown_key": (_cfg(lambda d: d["defaults"]["ops"].update(is_quantized="True")),
                                 ("defaults.ops", "'is_quantized'", "is_output_quantized")),
    "defaults_wrong_type": (_cfg(lambda d: d["defaults"].update(strict_symmetric="yes")),
                            ("defaults.strict_symmetric", "\"True\"", "'yes'")),
    "params_unknown_param_name": (_cfg(lambda d: d["params"].update(weights={})),
                                  ("'weights'", "running_var")),
    "params_unknown_key": (_cfg(lambda d: d["params"]["bias"].update(quantized="False")),
                           ("params.bias", "'quantized'", "is_quantized")),
    "op_type_unknown_type": (_cfg(lambda d: d["op_type"].update(Cnv={})),
                             ("op_type", "'Cnv'", "did you mean 'Conv'")),
    "op_type_refq_op_name": (_cfg(lambda d: d["op_type"].update(conv2d={})),
                             ("'conv2d'", "ONNX operator names")),
    "op_type_member_unknown_key": (
        _cfg(lambda d: d["op_type"].update(Conv={"per_channel": "True"})),
        ("op_type.Conv", "'per_channel'", "per_channel_quantization")),
    "op_type_member_wrong_type": (
        _cfg(lambda d: d["op_type"].update(Conv={"per_channel_quantization": 1})),
        ("op_type.Conv.per_channel_quantization", "\"True\"")),
    "op_type_params_unknown_key": (
        _cfg(lambda d: d["op_type"].update(Conv={"params": {"weight": {"bits": 4}}})),
        ("op_type.Conv.params.weight", "'bits'", "is_symmetric")),
    "op_type_constraints_inverted": (
        _cfg(lambda d: d["op_type"].update(Relu={"encoding_constraints": {"min": 1, "max": 0}})),
        ("op_type.Relu.encoding_constraints", "min <= max")),
    "supergroup_not_object": (_cfg(lambda d: d["supergroups"].insert(0, ["Conv", "Relu"])),
                              ("supergroups[0]", "op_list")),
    "supergroup_unknown_key": (
        _cfg(lambda d: d["supergroups"][0].update(ops=["Conv"])),
        ("supergroups[0]", "'ops'", "['op_list']")),
    "supergroup_unknown_op_type": (
        _cfg(lambda d: d["supergroups"][0].update(op_list=["Conv", "Relu6"])),
        ("supergroups[0].op_list[1]", "'Relu6'")),
    "model_input_unknown_key": (_cfg(lambda d: d["model_input"].update(is_quantized="True")),
                                ("model_input", "'is_quantized'", "is_input_quantized")),
    "model_output_wrong_type": (_cfg(lambda d: d["model_output"].update(is_output_quantized=0)),
                                ("model_output.is_output_quantized", "\"True\"")),
    "missing_section": (_cfg(lambda d: d.pop("model_input")), ("missing", "model_input")),
    "not_an_object": (lambda d: [d], ("JSON object",)),
    "invalid_json": (lambda d: json.dumps(d)[:-5], ("not a readable JSON config",)),
}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=list(CONFIG_CASES))
def test_bad_quantsim_config(files, tmp_path, capsys, case):
    damage, needles = CONFIG_CASES[case]
    bad = _write_json(tmp_path / "bad_config.json", damage(files["config"]))
    fails_cleanly(capsys, tmp_path, "quantize", files["float"], "--calib", files["calib"],
                  "--config", bad, "-o", tmp_path / "out.refq.h5", "--quiet",
                  needles=("bad_config.json",) + needles)


# ----------------------------------------------------------------------------- AIMET encodings

def _edited(entry_of, changes):
    """A function doc -> a deep copy of doc with the entry `entry_of(doc)` changed by `changes`
    (a value `_DELETE` removes the key)."""
    def apply(doc):
        doc = copy.deepcopy(doc)
        entry = entry_of(doc)
        for k, v in changes.items():
            if v is _DELETE:
                del entry[k]
            else:
                entry[k] = v
        return doc
    return apply


def _v100(section, index=0, **changes):
    return "1.0.0", _edited(lambda doc: doc[section][index], changes)


def _v061(section, name, index=0, **changes):
    return "0.6.1", _edited(lambda doc: doc[section][name][index], changes)


_DELETE = object()


def _top(version, **changes):
    def apply(doc):
        return dict(copy.deepcopy(doc), **changes)
    return version, apply


def _renamed_tensor(doc):
    doc = copy.deepcopy(doc)
    doc["activation_encodings"][0]["name"] = "ghost"
    return doc


def _short_per_channel(doc):
    doc = copy.deepcopy(doc)
    doc["param_encodings"]["conv.weight"] = doc["param_encodings"]["conv.weight"] * 3
    return doc


ENCODING_CASES = {
    "v100_unknown_key": (_v100("activation_encodings", offsets=[0]),
                         ("activation_encodings entry 'x'", "'offsets'", "allowed keys")),
    "v100_missing_key": (_v100("param_encodings", scale=_DELETE),
                         ("param_encodings entry 'conv.weight'", "missing", "scale")),
    "v100_bitwidth_wrong_type": (_v100("param_encodings", bw="8"),
                                 ("'conv.weight'", "bitwidth '8'", "integer")),
    "v100_bitwidth_out_of_range": (_v100("activation_encodings", bw=17),
                                   ("entry 'x'", "bitwidth 17", "2..16")),
    "v100_nan_scale": (_v100("activation_encodings", scale=[float("nan")]),
                       ("entry 'x'", "scale nan", "finite positive")),
    "v100_negative_scale": (_v100("param_encodings", scale=[-0.01]),
                            ("'conv.weight'", "scale -0.01", "finite positive")),
    "v100_per_channel_wrong_length": (_v100("param_encodings", enc_type="PER_CHANNEL",
                                            scale=[0.01] * 3, offset=[-128] * 3),
                                      ("'conv.weight'", "3 per-channel scales", "4 output "
                                                                                 "channels")),
    "v100_scale_offset_lengths": (_v100("param_encodings", scale=[0.01, 0.02]),
                                  ("'conv.weight'", "one length")),
    "v100_offset_off_grid": (_v100("param_encodings", offset=[-100]),
                             ("'conv.weight'", "offset -100", "-128")),
    "v100_is_sym_wrong_type": (_v100("param_encodings", is_sym="yes"),
                               ("'conv.weight'", "is_sym", "'yes'")),
    "v100_unknown_tensor": (("1.0.0", _renamed_tensor),
                            ("has no tensor 'ghost'", "`refq quantize MODEL --load-encodings")),
    "v061_unknown_key": (_v061("activation_encodings", "x", bit_width=8),
                         ("activation_encodings entry 'x'", "'bit_width'", "allowed keys")),
    "v061_missing_key": (_v061("param_encodings", "conv.weight", offset=_DELETE),
                         ("'conv.weight'", "missing", "offset")),
    "v061_is_symmetric_wrong_type": (_v061("param_encodings", "conv.weight", is_symmetric=1),
                                     ("'conv.weight'", "is_symmetric", "\"True\"")),
    "v061_min_wrong_type": (_v061("activation_encodings", "x", min="low"),
                            ("entry 'x'", "'min' must be a number")),
    "v061_per_channel_wrong_count": (("0.6.1", _short_per_channel),
                                     ("'conv.weight'", "3 per-channel entries", "4 output "
                                                                                "channels")),
    "top_unknown_key": (_top("1.0.0", encodings=[]), ("unknown key 'encodings'",
                                                      "activation_encodings")),
    "top_wrong_type": (_top("0.6.1", quantizer_args=[]), ("'quantizer_args' must be an object",)),
}


@pytest.mark.parametrize("case", ENCODING_CASES, ids=list(ENCODING_CASES))
def test_bad_aimet_encodings(files, tmp_path, capsys, case):
    (version, damage), needles = ENCODING_CASES[case]
    bad = _write_json(tmp_path / "bad.encodings", damage(files[version]))
    fails_cleanly(capsys, tmp_path, "quantize", files["float"], "--config", "per_tensor",
                  "--load-encodings", bad, "-o", tmp_path / "out.refq.h5", "--quiet",
                  needles=("bad.encodings",) + needles)


def test_the_good_encodings_load(files, tmp_path, capsys):
    """The files the encoding cases damage load as they are (so each case tests its damage)."""
    from cli_helpers import cli

    for v in ("0.6.1", "1.0.0"):
        code, _, err = cli(capsys, "quantize", files["float"], "--config", "per_tensor",
                           "--load-encodings", files["dir"] / f"good_{v}.encodings",
                           "-o", tmp_path / f"q_{v}.refq.h5", "--quiet")
        assert code == 0, err


# ----------------------------------------------------------------------------- wrong-kind models

WRONG_KIND = {
    "lower_float_model": (("lower", "{float}", "--profile", "tflite", "-o", "{out}"),
                          ("float.refq.h5", "without a quantization simulation",
                           "`refq quantize")),
    "lower_integer_model": (("lower", "{int}", "--profile", "tflite", "-o", "{out}"),
                            ("int.refq.h5", "integer model", "lowered for profile 'tflite'",
                             "`refq quantize`")),
    "lower_unfolded_batch_norm": (("lower", "{unfolded_q}", "--profile", "tflite", "-o", "{out}"),
                                  ("batch_norm 'bn' is not folded", "without --no-fold-bn")),
    "quantize_integer_model": (("quantize", "{int}", "--calib", "{calib}", "-o", "{out}"),
                               ("int.refq.h5", "holds an integer model", "float model")),
    "equalize_integer_model": (("equalize", "{int}", "-o", "{out}"),
                               ("int.refq.h5", "holds an integer model", "float model")),
    "report_integer_model": (("report", "{int}", "--data", "{calib}"),
                             ("int.refq.h5", "integer model", "`refq run --mode int`")),
    "sim_run_float_model": (("run", "{float}", "--mode", "sim", "--input", "{calib}",
                             "--output", "{out_npy}"),
                            ("float.refq.h5", "`refq quantize")),
}


@pytest.mark.parametrize("case", WRONG_KIND, ids=list(WRONG_KIND))
def test_wrong_kind_of_model(files, tmp_path, capsys, case):
    argv, needles = WRONG_KIND[case]
    names = {k: v for k, v in files.items() if k in ("float", "int", "unfolded_q", "calib")}
    argv = [a.format(out=tmp_path / "out.refq.h5", out_npy=tmp_path / "y.npy", **names)
            for a in argv]
    fails_cleanly(capsys, tmp_path, *argv, "--quiet", needles=needles)


def test_algorithms_refuse_integer_models(files):
    from refq.model_io import load

    g = load(files["int"])
    for algorithm in (fold_batch_norms, equalize, lambda g: correct_bias(g, _calib())):
        with pytest.raises(QuantError, match="model 'net' is an integer model .* float model"):
            algorithm(g)
    with pytest.raises(FixedPointError, match="already an integer model"):
        lower(g, "tflite")
    with pytest.raises(FixedPointError, match="float model without a quantization simulation"):
        lower(load(files["float"]), "tflite")


# ----------------------------------------------------------------------------- stored simulation

def _section(settings=None, drop=None, quantizer=None, config=None):
    def apply(doc):
        doc = copy.deepcopy(doc)
        if settings:
            doc["settings"].update(settings)
        if drop:
            del doc[drop]
        if quantizer:
            doc["quantizers"][0].update(quantizer)
        if config:
            doc["settings"]["config"]["document"]["op_type"].update(config)
        return doc
    return apply


SECTION_CASES = {
    "settings_unknown_key": (_section(settings={"config_path": "/home/me/cfg.json"}),
                             ("quantsim section, settings", "'config_path'", "allowed keys",
                              "`refq quantize`")),
    "settings_wrong_type": (_section(settings={"param_bw": "8"}),
                            ("settings.param_bw", "an integer")),
    "missing_quantizers": (_section(drop="quantizers"), ("missing key 'quantizers'",)),
    "quantizer_wrong_kind": (_section(quantizer={"kind": "weight"}),
                             ("quantizers[0].kind", "'weight'", "\"param\"")),
    "quantizer_unknown_key": (_section(quantizer={"per_channel": True}),
                              ("quantizers[0]", "'per_channel'")),
    "encoding_unknown_key": (_section(quantizer={"encoding": {"scale": 0.1}}),
                             ("quantizers[0]", "encoding", "missing key")),
    "stored_config_unknown_key": (_section(config={"Conv": {"per_channel": "True"}}),
                                  ("settings.config.document", "op_type.Conv",
                                   "'per_channel'")),
}


@pytest.mark.parametrize("case", SECTION_CASES, ids=list(SECTION_CASES))
def test_bad_stored_simulation(files, tmp_path, capsys, case):
    damage, needles = SECTION_CASES[case]
    bad = tmp_path / "damaged.refq.h5"   # written by refq's own writer: only the content is bad
    save(load(files["q"]), bad, sections={"encodings": damage(load_section(files["q"],
                                                                           "encodings"))})
    fails_cleanly(capsys, tmp_path, "lower", bad, "--profile", "tflite", "-o",
                  tmp_path / "int.refq.h5", "--quiet", needles=("damaged.refq.h5",) + needles)


def test_stored_simulation_keeps_the_config_not_a_path(files):
    doc = load_section(files["q"], "encodings")
    assert str(files["dir"]) not in json.dumps(doc)
    assert doc["settings"]["config"]["name"] == "per_tensor"
    back = QuantSim.load(files["q"])
    assert back.config == load_config("per_tensor") and back.config_source == "per_tensor"


# ----------------------------------------------------------------------------- calibration data

def _npy(array):
    return lambda path: np.save(path, array)


CALIB_FILES = {
    "scalar": (_npy(np.float32(1.0)), ("scalar",)),
    "empty": (_npy(np.zeros((0, 6, 6, 3), f32)), ()),
    "nan": (_npy(np.where(np.arange(4 * 108).reshape(4, 6, 6, 3) == 7, np.nan, 1.0).astype(f32)),
            ("nan",)),
    "complex": (_npy(np.ones((2, 6, 6, 3), np.complex64)), ("complex64",)),
    "strings": (_npy(np.full((2, 6, 6, 3), "a")), ("<U1",)),
    "wrong_rank": (_npy(np.ones((2, 6, 6), f32)), ("shape",)),
}


@pytest.mark.parametrize("case", CALIB_FILES, ids=list(CALIB_FILES))
def test_bad_calibration_file(files, tmp_path, capsys, case):
    write, needles = CALIB_FILES[case]
    write(tmp_path / "bad_calib.npy")
    fails_cleanly(capsys, tmp_path, "quantize", files["float"], "--calib",
                  tmp_path / "bad_calib.npy", "-o", tmp_path / "out.refq.h5", "--quiet",
                  needles=("bad_calib.npy", "'x'") + needles)


CALIB_ARRAYS = {
    "no_batches": ([], QuantError, "holds no batch"),
    "zero_length_batch": ([np.zeros((0, 6, 6, 3), f32)], QuantError, "batch 0: input 'x' is empty"),
    "scalar": ([np.float32(0.5)], InputError, "batch 0: input 'x' is a scalar"),
    "wrong_rank": ([_calib(), np.ones((2, 6, 6), f32)], InputError,
                   r"batch 1: input 'x' has shape \[2, 6, 6\], the model takes \[N, 6, 6, 3\]"),
    "inf": ([np.full((1, 6, 6, 3), np.inf, f32)], QuantError, "input 'x' holds NaN or Inf"),
    "complex": ([np.ones((1, 6, 6, 3), np.complex128)], QuantError, "dtype complex128"),
    "object": ([np.full((1, 6, 6, 3), None, object)], QuantError, "dtype object"),
    "bool": ([np.ones((1, 6, 6, 3), bool)], QuantError, "dtype bool"),
}


@pytest.mark.parametrize("case", CALIB_ARRAYS, ids=list(CALIB_ARRAYS))
def test_bad_calibration_arrays(case):
    data, error, match = CALIB_ARRAYS[case]
    with pytest.raises(error, match=match):
        QuantSim(_graph(False), "per_tensor").compute_encodings(data)
    if case != "no_batches":   # bias correction reads the same data the same way
        with pytest.raises(RefqError, match=match.replace("batch 1", "batch 1")):
            correct_bias(_graph(False), data, config="per_tensor")


def test_integer_calibration_data_is_accepted():
    sim = QuantSim(_graph(False), "per_tensor")
    sim.compute_encodings([np.arange(108, dtype=np.uint8).reshape(1, 6, 6, 3)])
    assert sim.encodings["x"].max > 100


# ----------------------------------------------------------------------------- lower_from_params

def _spec():
    return {"name": "tiny",
            "inputs": [{"name": "x", "shape": [None, 2, 2, 2], "scale": 0.5, "zero_point": -1}],
            "layers": [{"name": "c", "op": "conv2d",
                        "weight": np.array([[[[1, -2]]], [[[3, 4]]]], np.int8),
                        "weight_scale": [0.25, 0.125], "bias": np.array([4, -8], np.int32),
                        "activation": "relu", "output": {"scale": 0.25, "zero_point": -128}},
                       {"name": "g", "op": "global_avg_pool2d"},
                       {"name": "fc", "op": "dense", "weight": np.array([[2, -1]], np.int8),
                        "weight_scale": 0.5, "output": {"scale": 0.5, "zero_point": 3}}]}


def _set(path, value):
    """A spec with `value` at `path` (keys and list indices); value _DELETE removes the key."""
    def apply(spec):
        cur = spec
        for k in path[:-1]:
            cur = cur[k]
        if value is _DELETE:
            del cur[path[-1]]
        else:
            cur[path[-1]] = value
        return spec
    return apply


SPEC_CASES = {
    "misspelt_fused_activation": (_set(["layers", 0, "fused_activation"], "relu"),
                                  r"layer 0 'c' \(conv2d\): unknown key 'fused_activation'; "
                                  r"allowed keys: \[.*'activation'"),
    "misspelt_zeropoint": (_set(["layers", 0, "output", "zeropoint"], 0),
                           r"layer 0 'c' \(conv2d\) output: unknown key 'zeropoint'; allowed keys: "
                           r"\['scale', 'zero_point'"),
    "input_unknown_key": (_set(["inputs", 0, "zero_pt"], 0), r"input 0 'x': unknown key 'zero_pt'"),
    "spec_unknown_key": (_set(["output"], ["fc"]), r"spec: unknown key 'output'.*'outputs'"),
    "pool_unknown_key": (_set(["layers", 1, "keep_dims"], True),
                         r"layer 1 'g' \(global_avg_pool2d\): unknown key 'keep_dims'.*'keepdims'"),
    "activation_dict_unknown_key": (_set(["layers", 0, "activation"], {"min": 0, "maxi": 6}),
                                    r"'c' \(conv2d\) activation: unknown key 'maxi'"),
    "activation_unknown_name": (_set(["layers", 0, "activation"], "swish"),
                                r"activation must be one of \['none', 'relu'"),
    "weight_scale_wrong_length": (_set(["layers", 0, "weight_scale"], [0.1, 0.2, 0.3]),
                                  r"'c' \(conv2d\): weight_scale has 3 values; give 1 .* or 2"),
    "bias_wrong_length": (_set(["layers", 0, "bias"], np.array([1, 2, 3], np.int32)),
                          r"'c' \(conv2d\): 'bias' has shape \[3\]; .* shape \[2\]"),
    "bias_float": (_set(["layers", 0, "bias"], np.array([1.5, 2.0])), r"'bias' must hold int32"),
    "weight_float": (_set(["layers", 2, "weight"], np.array([[0.5, -1.0]])),
                     r"'fc' \(dense\): 'weight' must hold integer codes"),
    "weight_wrong_rank": (_set(["layers", 0, "weight"], np.ones((2, 2), np.int8)),
                          r"'c' \(conv2d\): 'weight' must be 4-d"),
    "weight_codes_out_of_int4": (lambda spec: _set(["layers", 0, "weight_dtype"], "int4")(
        _set(["layers", 0, "weight"], np.array([[[[1, -2]]], [[[9, 4]]]], np.int8))(spec)),
                                 r"weight code .* outside the int4 range \[-8, 7\]"),
    "zero_point_not_integer": (_set(["inputs", 0, "zero_point"], 1.5),
                               r"input 0 'x': 'zero_point' must be an integer, got 1.5"),
    "scale_not_number": (_set(["layers", 2, "output", "scale"], "0.5"),
                         r"'fc' \(dense\) output: scale must be a positive number"),
    "weight_scale_nan": (_set(["layers", 2, "weight_scale"], float("nan")),
                         r"'fc' \(dense\) weight_scale: scale must be finite and positive"),
    "inputs_not_a_list": (_set(["layers", 1, "inputs"], "c"), r"'inputs' must be a list"),
    "outputs_unknown": (_set(["outputs"], ["logits"]), r"'outputs' \['logits'\] must name layers"),
    "shape_not_sizes": (_set(["inputs", 0, "shape"], [None, "2", 2, 2]),
                        r"input 0 'x': 'shape' must be a list of positive sizes"),
    "layer_not_a_dict": (_set(["layers", 1], "global_avg_pool2d"),
                         r"layer 1: expected a dict, got str"),
    "missing_weight_scale": (_set(["layers", 2, "weight_scale"], _DELETE),
                             r"'fc' \(dense\): needs 'weight' \(integer codes\) and 'weight_scale'"),
}


@pytest.mark.parametrize("case", SPEC_CASES, ids=list(SPEC_CASES))
def test_bad_lower_from_params_spec(case):
    damage, match = SPEC_CASES[case]
    with pytest.raises(FixedPointError, match=match) as err:
        lower_from_params(damage(_spec()), "tflite")
    msg = str(err.value)
    assert msg.startswith("lower_from_params: ") and "\n" not in msg


def test_the_good_spec_lowers():
    g = lower_from_params(_spec(), "tflite")
    assert [n.op for n in g.topological_order()][1] == "int_conv2d"


# ----------------------------------------------------------------------------- integer codes

CODE_CASES = {
    "float_codes": (np.zeros((1, 6, 6, 3), f32), "integer codes must have an integer dtype"),
    "bool_codes": (np.zeros((1, 6, 6, 3), bool), "integer dtype"),
    "out_of_range": (np.full((1, 6, 6, 3), 200, np.int16),
                     r"input 'x': code 200 at index \[0, 0, 0, 0\] lies outside \[-128, 127\]"),
}


@pytest.mark.parametrize("case", CODE_CASES, ids=list(CODE_CASES))
def test_bad_integer_codes(files, case):
    from refq.model_io import load

    codes, match = CODE_CASES[case]
    with pytest.raises(InputError, match=match):
        run_int(load(files["int"]), {"x": codes}, codes=True)
