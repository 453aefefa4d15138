"""refq.exporters.aimet_encodings: AIMET encodings JSON 0.6.1 / 1.0.0 (aimet.md §0.2.4, §0.2.7, §3.5)."""
import json
import os

import numpy as np
import pytest

import refq
from refq import Graph, Node, TensorSpec
from refq.errors import FormatError, QuantError
from refq.exporters import (aimet_encodings_dict, export_aimet_encodings, exported_offset,
                            load_aimet_encodings)
from refq.quant import Encoding, encoding_from_min_max
from refq.quant.placement import QuantizerSpec
from refq.quant.quantsim import QuantSim

f32 = np.float32
VERSIONS = ("0.6.1", "1.0.0")


# ----------------------------------------------------------------------------- fixtures

def _graph(seed=0):
    """x -> conv_1 -> bn_1 -> relu_1 (supergroup, BN fused) -> depthwise conv_2 -> relu_2 (shared
    quantizer c2/r2) -> add(r1, r2) -> global pool -> dense fc."""
    rng = np.random.default_rng(seed)
    w = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    nodes = [
        Node("conv_1", "conv2d", ["x"], ["c1"], {"padding": "same"},
             {"weight": w(4, 3, 3, 3), "bias": w(4)}),
        Node("bn_1", "batch_norm", ["c1"], ["b1"], {"epsilon": 1e-3},
             {"gamma": 1 + 0.1 * w(4), "beta": w(4), "mean": w(4), "variance": 1 + np.abs(w(4))}),
        Node("relu_1", "relu", ["b1"], ["r1"]),
        Node("conv_2", "conv2d", ["r1"], ["c2"], {"padding": "same", "groups": 4},
             {"weight": w(4, 3, 3, 1)}),
        Node("relu_2", "relu", ["c2"], ["r2"]),
        Node("add_1", "add", ["r1", "r2"], ["a1"]),
        Node("gap", "global_avg_pool2d", ["a1"], ["p"]),
        Node("fc", "dense", ["p"], ["y"], {}, {"weight": w(5, 4), "bias": w(5)}),
    ]
    return Graph([TensorSpec("x", (None, 6, 6, 3))], ["y"], nodes, name="small")


def _x(seed=1, n=3):
    return np.random.default_rng(seed).normal(size=(n, 6, 6, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def calibrated():
    return QuantSim(_graph()).compute_encodings(_x())


def _state(sim):
    return json.dumps(sim.to_json(), sort_keys=True)


def _write(tmp_path, doc, name="enc.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _tiny(input_name="input.1", conv="conv1", out="/conv1/Conv_output_0", channels=2):
    """input -> conv (1x1, one input channel) -> out: quantizers input, out, conv.weight."""
    w = np.arange(1, channels + 1, dtype=np.float32).reshape(channels, 1, 1, 1) / 4
    g = Graph([TensorSpec(input_name, (None, 2, 2, 1))], [out],
              [Node(conv, "conv2d", [input_name], [out], {}, {"weight": w})], name="tiny")
    return QuantSim(g)


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip_exact(calibrated, tmp_path, version):
    sim = calibrated
    before = _state(sim)
    path = tmp_path / f"sim_{version}.encodings"
    export_aimet_encodings(sim, path, version)
    back = load_aimet_encodings(sim, path)
    assert _state(sim) == before                       # the caller's sim is untouched
    assert back is not sim and back.encodings.keys() == sim.encodings.keys()
    for name, enc in sim.encodings.items():
        got = back.encodings[name]
        assert got == enc
        assert got.scale.tobytes() == enc.scale.tobytes()
        assert got.zero_point.tobytes() == enc.zero_point.tobytes()
        assert (got.qmin, got.qmax, got.axis) == (enc.qmin, enc.qmax, enc.axis)
    assert back.enabled == sim.enabled
    x = _x(seed=7, n=4)
    a, b = sim.run({"x": x}, trace=True), back.run({"x": x}, trace=True)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    # exporting the loaded sim gives the same file
    path2 = tmp_path / f"again_{version}.encodings"
    export_aimet_encodings(back, path2, version)
    assert path2.read_text() == path.read_text()


@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip_every_grid_and_extreme_scales(tmp_path, version):
    """Random float32 bit patterns (subnormals, huge, tiny) and every grid refq knows survive."""
    units = 300
    rng = np.random.default_rng(3)
    g = Graph([TensorSpec("x", (None, 2))], ["y"],
              [Node("fc", "dense", ["x"], ["y"], {}, {"weight": rng.normal(size=(units, 2))})])
    sim = QuantSim(g)
    bits = rng.integers(1, 0x77000000, size=units, dtype=np.int64).astype(np.uint32)
    scales = bits.view(np.float32)
    scales[:3] = [np.finfo(np.float32).smallest_subnormal, f32(1e-30), f32(1.0)]
    assert np.all(np.isfinite(scales) & (scales > 0))
    cases = [
        (Encoding(scales, np.zeros(units), 8, -128, 127, True, 0), Encoding(f32(0.1), 0, 8, 0, 255, False)),
        (Encoding(scales[:units], np.zeros(units), 8, -127, 127, True, 0),      # strict (1.x)
         Encoding(f32(3e-5), 0, 8, 0, 255, True)),                               # unsigned symmetric
        (Encoding(scales, np.zeros(units), 4, -8, 7, True, 0), Encoding(f32(7.5), 255, 8, 0, 255, False)),
        (Encoding(scales, rng.integers(0, 65536, units), 16, 0, 65535, False, 0),
         Encoding(f32(1e-3), 1, 2, 0, 3, False)),
        (Encoding(f32(0.03), 0, 2, -2, 1, True), Encoding(f32(1e-3), 0, 32, 0, 2 ** 32 - 1, False)),
    ]
    for k, (w_enc, act_enc) in enumerate(cases):
        sim.encodings = {"fc.weight": w_enc, "x": act_enc, "y": act_enc}
        path = tmp_path / f"{k}.json"
        export_aimet_encodings(sim, path, version)
        back = load_aimet_encodings(sim, path)
        assert back.encodings["fc.weight"] == w_enc, k
        assert back.encodings["x"] == act_enc and back.encodings["y"] == act_enc, k
        q = back.quantizers["fc.weight"]
        assert (q.bitwidth, q.symmetric, q.axis) == (w_enc.bitwidth, w_enc.symmetric, w_enc.axis)
        assert q.strict == (w_enc.symmetric and w_enc.qmin == -w_enc.qmax)


@pytest.mark.parametrize("version", VERSIONS)
def test_per_channel_weight_with_one_channel(tmp_path, version):
    """0.6.1 writes one list entry both per-tensor and per-channel with C = 1: the quantizer decides."""
    sim = _tiny(channels=1)
    sim.encodings = {"input.1": Encoding(f32(0.5), 3, 8, 0, 255, False),
                     "/conv1/Conv_output_0": Encoding(f32(0.25), 0, 8, 0, 255, False),
                     "conv1.weight": Encoding([f32(0.01)], [0], 8, -128, 127, True, 0)}
    assert sim.quantizers["conv1.weight"].axis == 0
    export_aimet_encodings(sim, tmp_path / "e.json", version)
    back = load_aimet_encodings(sim, tmp_path / "e.json")
    assert back.encodings["conv1.weight"] == sim.encodings["conv1.weight"]
    sim.encodings["conv1.weight"] = Encoding(f32(0.01), 0, 8, -128, 127, True)
    export_aimet_encodings(sim, tmp_path / "e.json", version)
    back = load_aimet_encodings(sim, tmp_path / "e.json")
    if version == "1.0.0":      # the file says PER_TENSOR: the spec follows it
        assert back.encodings["conv1.weight"] == sim.encodings["conv1.weight"]
        assert back.quantizers["conv1.weight"].axis is None
    else:                       # 0.6.1 cannot tell: one entry on a per-channel quantizer, C = 1
        assert back.encodings["conv1.weight"] == Encoding([f32(0.01)], [0], 8, -128, 127, True, 0)


def test_real_model_end_to_end(tmp_path):
    from refq.ppocr_data import load_calibration_set

    graph = refq.import_keras(os.path.join(os.path.dirname(refq.__file__), "data", "ppocr_cls",
                                           "ppocr_cls_mbv3s.h5"))
    x = load_calibration_set(4)
    sim = QuantSim(graph).compute_encodings(x)
    assert any(len(q.tensors) > 1 for q in sim.quantizers.values())     # shared quantizers exist
    out = graph.outputs[0]
    ref = sim.run({"x": x})[out]
    for version in VERSIONS:
        path = tmp_path / f"ppocr_{version}.encodings"
        export_aimet_encodings(sim, path, version)
        back = load_aimet_encodings(sim, path)
        assert back.encodings.keys() == sim.encodings.keys()
        assert all(back.encodings[k] == e for k, e in sim.encodings.items())
        assert back.run({"x": x})[out].tobytes() == ref.tobytes()


# ----------------------------------------------------------------------------- file contents

def _hand_sim():
    """The notes' examples: activation [−0.8, 3.95] asymmetric, a symmetric 8-bit per-channel
    weight from [−1, 0.5] and [−0.5, 0.25], and a 4-bit symmetric output."""
    sim = _tiny()
    sim.encodings = {
        "input.1": encoding_from_min_max(-0.8, 3.95, 8, False),
        "conv1.weight": encoding_from_min_max(np.array([-1.0, -0.5]), np.array([0.5, 0.25]), 8, True,
                                              axis=0),
        "/conv1/Conv_output_0": encoding_from_min_max(-1.0, 0.5, 4, True),
    }
    return sim


def test_hand_worked_values_0_6_1(tmp_path):
    doc = export_aimet_encodings(_hand_sim(), tmp_path / "e.json", "0.6.1")
    assert json.loads((tmp_path / "e.json").read_text()) == doc
    [act] = doc["activation_encodings"]["input.1"]
    assert act["offset"] == -43 and act["bitwidth"] == 8 and act["dtype"] == "int"
    assert act["is_symmetric"] == "False" and isinstance(act["is_symmetric"], str)
    assert act["scale"] == float(f32(4.75) / f32(255)) == float(f32(4.75 / 255))
    s = f32(act["scale"])
    assert act["min"] == float(s * f32(-43)) and act["max"] == float(s * f32(255 - 43))
    assert abs(act["min"] + 0.8009804) < 1e-7 and abs(act["max"] - 3.9490196) < 1e-7
    w = doc["param_encodings"]["conv1.weight"]
    assert len(w) == 2
    assert [e["offset"] for e in w] == [-128, -128]
    assert [e["is_symmetric"] for e in w] == ["True", "True"]
    assert [e["scale"] for e in w] == [1 / 128, 1 / 256]
    assert [(e["min"], e["max"]) for e in w] == [(-1.0, 0.9921875), (-0.5, 0.49609375)]
    [out] = doc["activation_encodings"]["/conv1/Conv_output_0"]
    assert out["offset"] == -8 and out["bitwidth"] == 4 and out["scale"] == 0.125
    assert (out["min"], out["max"]) == (-1.0, 0.875)
    assert doc["excluded_layers"] == [] and doc["version"] == "0.6.1"
    assert doc["producer"] == {"package": "refq", "version": refq.__version__}
    assert doc["quantizer_args"] == {"activation_bitwidth": 8, "dtype": "int", "is_symmetric": True,
                                     "param_bitwidth": 8, "per_channel_quantization": True,
                                     "quant_scheme": "min_max"}


def test_hand_worked_values_1_0_0(tmp_path):
    path = tmp_path / "e.json"
    doc = export_aimet_encodings(_hand_sim(), path, "1.0.0")
    acts = {e["name"]: e for e in doc["activation_encodings"]}
    assert acts["input.1"] == {"bw": 8, "dtype": "INT", "enc_type": "PER_TENSOR", "is_sym": False,
                               "name": "input.1", "offset": [-43], "scale": [float(f32(4.75 / 255))]}
    assert acts["/conv1/Conv_output_0"]["offset"] == [-8]
    assert acts["/conv1/Conv_output_0"]["is_sym"] is True
    [w] = doc["param_encodings"]
    assert w == {"bw": 8, "dtype": "INT", "enc_type": "PER_CHANNEL", "is_sym": True,
                 "name": "conv1.weight", "offset": [-128, -128], "scale": [1 / 128, 1 / 256]}
    assert "min" not in w and "max" not in w
    # the text: sorted keys at every level, indent 4, JSON bools
    text = path.read_text()
    orders = []
    json.loads(text, object_pairs_hook=lambda pairs: orders.append([k for k, _ in pairs]) or dict(pairs))
    assert orders and all(keys == sorted(keys) for keys in orders)
    assert text.startswith('{\n    "activation_encodings": [\n        {\n            "bw": 8,')
    assert '"is_sym": false' in text and '"is_sym": true' in text


def test_offset_conversion_rule():
    assert exported_offset(Encoding(f32(1), 43, 8, 0, 255, False)).tolist() == [-43]
    assert exported_offset(Encoding(f32(1), 0, 8, -128, 127, True)).tolist() == [-128]
    assert exported_offset(Encoding(f32(1), 0, 4, -8, 7, True)).tolist() == [-8]
    assert exported_offset(Encoding(f32(1), 0, 8, -127, 127, True)).tolist() == [-127]
    assert exported_offset(Encoding(f32(1), 0, 8, 0, 255, True)).tolist() == [0]


def test_shared_quantizer_written_under_every_tensor(calibrated):
    q = calibrated.quantizers["c2"]
    assert q.tensors == ["c2", "r2"]
    d061 = aimet_encodings_dict(calibrated, "0.6.1")["activation_encodings"]
    assert d061["c2"] == d061["r2"]
    d100 = {e["name"]: e for e in aimet_encodings_dict(calibrated, "1.0.0")["activation_encodings"]}
    assert {k: v for k, v in d100["c2"].items() if k != "name"} == \
        {k: v for k, v in d100["r2"].items() if k != "name"}
    # unquantized tensors (inside the supergroup, the fused BN) are absent
    assert "c1" not in d061 and "b1" not in d061 and set(d061) == set(d100)
    assert set(d061) == {"x", "r1", "c2", "r2", "a1", "p", "y"}


def test_only_enabled_quantizers_with_encodings_are_written(calibrated):
    sim = QuantSim.__new__(QuantSim)
    sim.__dict__.update(calibrated.__dict__)
    sim.enabled = dict(calibrated.enabled, a1=False)
    sim.encodings = {k: v for k, v in calibrated.encodings.items() if k != "fc.weight"}
    for version in VERSIONS:
        doc = aimet_encodings_dict(sim, version)
        names = (set(doc["activation_encodings"]) if version == "0.6.1"
                 else {e["name"] for e in doc["activation_encodings"]})
        pnames = (set(doc["param_encodings"]) if version == "0.6.1"
                  else {e["name"] for e in doc["param_encodings"]})
        assert "a1" not in names and "p" in names
        assert pnames == {"conv_1.weight", "conv_2.weight"}


@pytest.mark.parametrize("scheme,name", [("minmax", "min_max"), ("tf_enhanced", "post_training_tf_enhanced"),
                                         ("percentile", "post_training_percentile"), ("sqnr", "sqnr")])
def test_quant_scheme_names(scheme, name):
    sim = QuantSim(_graph(), "per_tensor", scheme=scheme, param_bw=4, act_bw=16)
    args = aimet_encodings_dict(sim, "0.6.1")["quantizer_args"]
    assert args == {"activation_bitwidth": 16, "dtype": "int", "is_symmetric": True, "param_bitwidth": 4,
                    "per_channel_quantization": False, "quant_scheme": name}


# ----------------------------------------------------------------------------- handwritten files

AIMET_061 = """{
  "version": "0.6.1",
  "activation_encodings": {
    "input.1": [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False",
                 "max": 3.9490196, "min": -0.8009804, "offset": -43, "scale": 0.0186274509}],
    "/conv1/Conv_output_0": [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False",
                 "max": 3.9304306507110596, "min": -3.961378812789917, "offset": -128,
                 "scale": 0.030948271974921227}]
  },
  "param_encodings": {
    "conv1.weight": [
      {"bitwidth": 8, "dtype": "int", "is_symmetric": "True",
       "max": 0.5, "min": -0.503937, "offset": -128, "scale": 0.003937008},
      {"bitwidth": 8, "dtype": "int", "is_symmetric": "True",
       "max": 0.25, "min": -0.2519685, "offset": -128, "scale": 0.0019685039}]
  },
  "excluded_layers": [],
  "quantizer_args": {"activation_bitwidth": 8, "dtype": "int", "is_symmetric": true,
                     "param_bitwidth": 8, "per_channel_quantization": true,
                     "quant_scheme": "post_training_tf_enhanced"},
  "producer": {"package": "aimet-torch", "version": "2.42.0"}
}"""

AIMET_100 = """{
  "version": "1.0.0",
  "activation_encodings": [
    {"bw": 8, "dtype": "INT", "enc_type": "PER_TENSOR", "is_sym": false,
     "name": "input.1", "offset": [-43], "scale": [0.0186274509]},
    {"bw": 8, "dtype": "INT", "enc_type": "PER_TENSOR", "is_sym": false,
     "name": "/conv1/Conv_output_0", "offset": [-128], "scale": [0.030948271974921227]}
  ],
  "param_encodings": [
    {"bw": 8, "dtype": "INT", "enc_type": "PER_CHANNEL", "is_sym": true,
     "name": "conv1.weight", "offset": [-128, -128], "scale": [0.003937008, 0.0019685039]}
  ],
  "excluded_layers": [],
  "quantizer_args": {"activation_bitwidth": 8, "dtype": "int", "is_symmetric": true,
                     "param_bitwidth": 8, "per_channel_quantization": true,
                     "quant_scheme": "post_training_tf_enhanced"},
  "producer": {"package": "aimet-torch", "version": "2.42.0"}
}"""

EXPECTED = {
    "input.1": Encoding(f32(0.0186274509), 43, 8, 0, 255, False),
    "/conv1/Conv_output_0": Encoding(f32(0.030948271974921227), 128, 8, 0, 255, False),
    "conv1.weight": Encoding(np.array([0.003937008, 0.0019685039], dtype=f32), [0, 0], 8, -128, 127,
                             True, 0),
}


@pytest.mark.parametrize("text", [AIMET_061, AIMET_100], ids=VERSIONS)
def test_handwritten_files_load(tmp_path, text):
    sim = _tiny()
    before = _state(sim)
    back = load_aimet_encodings(sim, _write(tmp_path, text))
    assert back.encodings == EXPECTED
    assert back.encodings["conv1.weight"].scale.tolist() == [float(f32(0.003937008)),
                                                             float(f32(0.0019685039))]
    assert all(back.enabled.values())
    assert _state(sim) == before and sim.encodings == {}
    y = back.run({"input.1": np.full((1, 2, 2, 1), 1.0, np.float32)})["/conv1/Conv_output_0"]
    assert y.dtype == np.float32 and y.shape == (1, 2, 2, 2)
    # a single 0.6.1 entry on a per-channel weight of C > 1 channels is per-tensor
    doc = json.loads(AIMET_061)
    del doc["param_encodings"]["conv1.weight"][1]
    back = load_aimet_encodings(sim, _write(tmp_path, doc))
    assert back.encodings["conv1.weight"] == Encoding(f32(0.003937008), 0, 8, -128, 127, True)
    assert back.quantizers["conv1.weight"].axis is None and sim.quantizers["conv1.weight"].axis == 0


def test_aimet_1x_file_without_version(tmp_path):
    """AIMET 1.x: no `version`, 0.6.1 layout, JSON-bool is_symmetric accepted, strict symmetric
    (offset −127) -> strict grid, unsigned symmetric (offset 0) -> [0, 255] with zero point 0."""
    doc = json.loads(AIMET_061)
    del doc["version"], doc["producer"]
    doc["param_encodings"]["conv1.weight"][0]["offset"] = -127
    doc["param_encodings"]["conv1.weight"][1]["offset"] = -127
    doc["activation_encodings"]["input.1"] = [{"bitwidth": 8, "is_symmetric": True, "offset": 0,
                                               "scale": 0.5, "min": 0.0, "max": 127.5}]
    back = load_aimet_encodings(_tiny(), _write(tmp_path, doc))
    w = back.encodings["conv1.weight"]
    assert (w.qmin, w.qmax, w.symmetric, w.axis) == (-127, 127, True, 0)
    assert back.quantizers["conv1.weight"].strict
    a = back.encodings["input.1"]
    assert a == Encoding(f32(0.5), 0, 8, 0, 255, True)
    assert back.quantizers["input.1"].unsigned_symmetric


def test_adaround_style_and_per_channel_conv(tmp_path):
    """A 4-bit per-channel conv weight in AIMET's AdaRound file layout (param_encodings only)."""
    entries = [{"bitwidth": 4, "dtype": "int", "is_symmetric": "True", "max": 0.0690616,
                "min": -0.0789275, "offset": -8, "scale": s}
               for s in (0.009865951724350452, 0.02, 0.0125)]
    doc = {"param_encodings": {"conv1.weight": entries}}
    sim = _tiny(channels=3)
    with pytest.raises(QuantError, match="input.1"):         # activations left without encodings
        load_aimet_encodings(sim, _write(tmp_path, doc))
    back = load_aimet_encodings(sim, _write(tmp_path, doc), strict=False)
    w = back.encodings["conv1.weight"]
    assert w == Encoding(np.array([0.009865951724350452, 0.02, 0.0125], f32), [0, 0, 0], 4, -8, 7, True, 0)
    assert back.enabled == {"input.1": False, "/conv1/Conv_output_0": False, "conv1.weight": True}
    assert back.quantizers["conv1.weight"].bitwidth == 4
    back.run({"input.1": np.ones((1, 2, 2, 1), np.float32)})       # disabled ones are skipped


def test_batch_norm_param_names(tmp_path):
    """A free-standing BN's gamma is quantized as `<node>.weight`; `<node>.gamma` is accepted too."""
    g = Graph([TensorSpec("x", (None, 3))], ["y"],
              [Node("bn", "batch_norm", ["x"], ["y"], {"epsilon": 1e-3}, {"gamma": np.array([1.0, 2.0, 3.0]),
               "beta": np.zeros(3), "mean": np.zeros(3), "variance": np.ones(3)})])
    sim = QuantSim(g)
    assert "bn.weight" in sim.quantizers
    act = [{"bitwidth": 8, "dtype": "int", "is_symmetric": "False", "offset": 0, "scale": 0.1}]
    for pname in ("bn.weight", "bn.gamma"):
        doc = {"version": "0.6.1", "activation_encodings": {"x": act, "y": act},
               "param_encodings": {pname: [{"bitwidth": 8, "dtype": "int", "is_symmetric": "True",
                                            "offset": -128, "scale": 0.025}]}}
        back = load_aimet_encodings(sim, _write(tmp_path, doc))
        assert back.encodings["bn.weight"] == Encoding(f32(0.025), 0, 8, -128, 127, True)
    out = aimet_encodings_dict(back, "0.6.1")
    assert set(out["param_encodings"]) == {"bn.weight"}


def test_input_quantizer_named_after_its_tensor(tmp_path):
    sim = _tiny()
    sim.quantizers["conv1:input0"] = QuantizerSpec("conv1:input0", "input", 8, False,
                                                   tensors=["input.1"], node="conv1", input_index=0)
    sim.enabled["conv1:input0"] = True
    loaded = load_aimet_encodings(sim, _write(tmp_path, AIMET_100))
    assert loaded.encodings["conv1:input0"] == EXPECTED["input.1"] == loaded.encodings["input.1"]
    doc = aimet_encodings_dict(loaded, "1.0.0")
    assert [e["name"] for e in doc["activation_encodings"]].count("input.1") == 1
    # two different encodings on one tensor name cannot be written
    loaded.encodings["conv1:input0"] = Encoding(f32(0.5), 1, 8, 0, 255, False)
    path = tmp_path / "out.json"
    with pytest.raises(QuantError, match="input.1.*conv1:input0"):
        export_aimet_encodings(loaded, path)
    assert not path.exists()


# ----------------------------------------------------------------------------- errors

def _load_error(tmp_path, doc, match, err=QuantError, sim=None, **kw):
    sim = _tiny() if sim is None else sim
    before = _state(sim)
    path = _write(tmp_path, doc)
    with pytest.raises(err, match=match) as info:
        load_aimet_encodings(sim, path, **kw)
    assert str(path) in str(info.value)
    assert _state(sim) == before
    assert sorted(os.listdir(tmp_path)) == ["enc.json"]
    return str(info.value)


def _v061(section, name, **changes):
    doc = json.loads(AIMET_061)
    doc[section][name][0].update(changes)
    return doc


def _v100(section, index, **changes):
    doc = json.loads(AIMET_100)
    doc[section][index].update(changes)
    return doc


def test_error_unreadable(tmp_path):
    _load_error(tmp_path, AIMET_061[:-10], "not valid JSON", FormatError)
    _load_error(tmp_path, "", "not valid JSON", FormatError)
    with pytest.raises(FormatError, match="no such encodings file"):
        load_aimet_encodings(_tiny(), tmp_path / "missing.encodings")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(FormatError, match="bin.json"):
        load_aimet_encodings(_tiny(), tmp_path / "bin.json")


def test_error_structure(tmp_path):
    _load_error(tmp_path, "[1, 2]", "not an AIMET encodings file")
    _load_error(tmp_path, {"version": "1.0.0"}, "neither")
    _load_error(tmp_path, AIMET_061.replace('"0.6.1"', '"2.0.0"'), "unknown encodings version '2.0.0'")
    _load_error(tmp_path, {"version": "2.0.0", "encodings": []}, "unknown encodings version '2.0.0'")
    _load_error(tmp_path, {"version": None, "param_encodings": {}}, "unknown encodings version None")
    _load_error(tmp_path, AIMET_100.replace('"1.0.0"', '"0.6.1"'), "must be a JSON object")
    _load_error(tmp_path, AIMET_061.replace('"0.6.1"', '"1.0.0"'), "must be a JSON array")
    no_version = json.loads(AIMET_100)
    del no_version["version"]
    _load_error(tmp_path, no_version, "no 'version'")
    dup = AIMET_061.replace('"param_encodings": {', '"param_encodings": {"conv1.weight": [], ')
    _load_error(tmp_path, dup, "'conv1.weight' appears twice")
    doc = json.loads(AIMET_100)
    doc["param_encodings"].append(dict(doc["param_encodings"][0]))
    _load_error(tmp_path, doc, "names 'conv1.weight' twice")
    _load_error(tmp_path, _v100("param_encodings", 0, enc_type="LPBQ"),
                "conv1.weight': enc_type LPBQ is not supported")
    _load_error(tmp_path, _v100("activation_encodings", 0, dtype="FLOAT"), "input.1': dtype 'FLOAT'")
    _load_error(tmp_path, _v061("activation_encodings", "input.1", dtype="float"), "input.1': dtype 'float'")
    _load_error(tmp_path, _v100("activation_encodings", 0, scale=[0.1, 0.2], offset=[0]),
                "input.1': 'scale' and 'offset'")
    _load_error(tmp_path, _v100("activation_encodings", 0, scale=[0.1, 0.2], offset=[0, 0]),
                "PER_TENSOR entry has one scale")
    doc = json.loads(AIMET_061)
    doc["activation_encodings"]["input.1"] = []
    _load_error(tmp_path, doc, "input.1': expected a non-empty list")
    doc = json.loads(AIMET_061)
    del doc["param_encodings"]["conv1.weight"][1]["scale"]
    _load_error(tmp_path, doc, r"conv1.weight'\[1\]: missing field\(s\) \['scale'\]")
    _load_error(tmp_path, _v061("activation_encodings", "input.1", is_symmetric="yes"), "is_symmetric")


def test_error_names_not_in_graph(tmp_path):
    doc = json.loads(AIMET_061)
    doc["activation_encodings"]["/relu/Relu_output_0"] = doc["activation_encodings"]["input.1"]
    _load_error(tmp_path, doc, "'/relu/Relu_output_0': graph 'tiny' has no tensor")
    doc = json.loads(AIMET_100)
    doc["param_encodings"][0]["name"] = "conv2.weight"
    _load_error(tmp_path, doc, "'conv2.weight': graph 'tiny' has no parameter")
    doc["param_encodings"][0]["name"] = "conv1.bias"                # conv1 has no bias
    _load_error(tmp_path, doc, "'conv1.bias': graph 'tiny' has no parameter")


def test_error_per_channel_count(tmp_path):
    doc = json.loads(AIMET_061)
    w = doc["param_encodings"]["conv1.weight"]
    w.append(dict(w[0]))
    _load_error(tmp_path, doc, "conv1.weight': 3 per-channel entries.*2 output channels")
    _load_error(tmp_path, _v100("param_encodings", 0, offset=[-128] * 3, scale=[0.1] * 3),
                "conv1.weight': 3 per-channel scales.*2 output channels")
    _load_error(tmp_path, _v100("activation_encodings", 0, enc_type="PER_CHANNEL"),
                "input.1': per-channel activation encodings are not supported")
    doc = json.loads(AIMET_061)
    doc["activation_encodings"]["input.1"] = doc["param_encodings"]["conv1.weight"]
    _load_error(tmp_path, doc, "input.1': per-channel activation")


@pytest.mark.parametrize("bw", [1, 17, 31, 64, 0, -8, "8", 8.5, True, None])
def test_error_bitwidth(tmp_path, bw):
    what = "is out of range" if isinstance(bw, int) and not isinstance(bw, bool) else \
        "must be an integer in 2..16"
    _load_error(tmp_path, _v061("activation_encodings", "input.1", bitwidth=bw),
                f"input.1': bitwidth .* {what}")
    _load_error(tmp_path, _v100("param_encodings", 0, bw=bw),
                f"conv1.weight' channel 0: bitwidth .* {what}")


@pytest.mark.parametrize("scale", [0, 0.0, -0.01, "NaN", "Infinity", 1e-50, 1e39, "0.1", True, None])
def test_error_scale(tmp_path, scale):
    text = json.dumps(_v061("activation_encodings", "input.1", scale="@@"))
    value = scale if scale in ("NaN", "Infinity") else json.dumps(scale)
    _load_error(tmp_path, text.replace('"@@"', value), "input.1': scale .* positive")
    text = json.dumps(_v100("param_encodings", 0, scale=["@@", 0.1]))
    _load_error(tmp_path, text.replace('"@@"', value), "conv1.weight' channel 0: scale .* positive")


@pytest.mark.parametrize("sym,offset,bw", [(False, 1, 8), (False, -256, 8), (False, -16, 4),
                                           (True, -5, 8), (True, -129, 8), (True, -128, 4),
                                           (True, -1, 8), (False, -1.5, 8), (False, "-3", 8)])
def test_error_offset(tmp_path, sym, offset, bw):
    s061, s100 = ("True", True) if sym else ("False", False)
    doc = _v061("activation_encodings", "input.1", offset=offset, is_symmetric=s061, bitwidth=bw)
    msg = "must be an integer" if isinstance(offset, (str, float)) else "is out of the grid"
    _load_error(tmp_path, doc, f"input.1': offset .*{msg}")
    _load_error(tmp_path, _v100("activation_encodings", 0, offset=[offset], is_sym=s100, bw=bw),
                f"input.1': offset .*{msg}")


def test_error_mixed_channels(tmp_path):
    doc = json.loads(AIMET_061)
    doc["param_encodings"]["conv1.weight"][1]["offset"] = -127
    _load_error(tmp_path, doc, "conv1.weight': the channels disagree")


def test_error_quantizers_without_encoding(tmp_path):
    doc = json.loads(AIMET_061)
    del doc["activation_encodings"]["input.1"]
    del doc["param_encodings"]
    msg = _load_error(tmp_path, doc, "no encoding for the enabled quantizer")
    assert "'input.1'" in msg and "'conv1.weight'" in msg and "strict=False" in msg
    sim = _tiny()
    back = load_aimet_encodings(sim, tmp_path / "enc.json", strict=False)
    assert back.enabled == {"input.1": False, "/conv1/Conv_output_0": True, "conv1.weight": False}
    assert set(back.encodings) == {"/conv1/Conv_output_0"} and sim.encodings == {}
    # a quantizer the caller disabled is not required, and stays off
    sim.enabled["input.1"] = sim.enabled["conv1.weight"] = False
    back = load_aimet_encodings(sim, tmp_path / "enc.json")
    assert back.enabled == {"input.1": False, "/conv1/Conv_output_0": True, "conv1.weight": False}


def test_error_entry_without_quantizer(calibrated, tmp_path):
    """`c1` (conv output inside the Conv+BN+Relu supergroup) exists but is not quantized."""
    doc = json.loads(json.dumps(aimet_encodings_dict(calibrated, "1.0.0")))
    extra = dict(doc["activation_encodings"][0], name="c1")
    doc["activation_encodings"].append(extra)
    doc["param_encodings"].append(dict(doc["param_encodings"][0], name="fc.bias", enc_type="PER_TENSOR",
                                       offset=[-128], scale=[0.5]))
    msg = _load_error(tmp_path, doc, "does not quantize", sim=calibrated)
    assert "activation 'c1'" in msg and "parameter 'fc.bias'" in msg
    back = load_aimet_encodings(calibrated, tmp_path / "enc.json", strict=False)
    assert all(back.encodings[k] == e for k, e in calibrated.encodings.items())
    assert back.encodings.keys() == calibrated.encodings.keys()


def test_error_shared_quantizer_conflict(calibrated, tmp_path):
    doc = json.loads(json.dumps(aimet_encodings_dict(calibrated, "0.6.1")))
    doc["activation_encodings"]["r2"][0]["offset"] -= 1
    _load_error(tmp_path, doc, "'c2' and 'r2' share quantizer 'c2'", sim=calibrated)
    doc["activation_encodings"]["r2"][0]["offset"] += 1
    del doc["activation_encodings"]["c2"]                  # any one tensor of the group suffices
    path = _write(tmp_path, doc)
    back = load_aimet_encodings(calibrated, path)
    assert back.encodings["c2"] == calibrated.encodings["c2"]


def test_export_errors_write_nothing(calibrated, tmp_path):
    path = tmp_path / "keep.encodings"
    path.write_text("old")
    for version in ("2.0.0", "0.6.0", 1):
        with pytest.raises(QuantError, match="unsupported encodings version"):
            export_aimet_encodings(calibrated, path, version)
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["keep.encodings"]
    sim = _tiny()
    sim.encodings = {"input.1": Encoding(np.finfo(f32).max, 0, 8, 0, 255, False)}
    with pytest.raises(QuantError, match="overflows float32"):
        export_aimet_encodings(sim, path, "0.6.1")
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["keep.encodings"]
