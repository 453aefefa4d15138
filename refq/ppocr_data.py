"""The bundled PP-OCR text-direction classifier and its 1,000 labelled text lines.

The model (MobileNetV3-small x0.35, Keras 3 HDF5) and the lines ship in `refq/data/ppocr_cls/`
(Apache-2.0, see LICENSE and NOTICE there). `load_test_set` gives the labelled test inputs,
`load_calibration_set` unlabelled calibration inputs drawn with another noise seed, and
`load_training_set` 1,000 further labelled lines (none with a test line's text) for the methods
that learn from data (SeqMSE, AdaRound, quantization-aware training).
"""
from __future__ import annotations

import os
from importlib import resources

import numpy as np

__all__ = ["load_model", "load_test_set", "load_calibration_set", "textline_inputs", "data_path",
           "EXPECTED_FP32_ACCURACY", "CALIBRATION_LINES", "CALIBRATION_NOISE_SEED", "load_training_set",
           "TRAINING_NOISE_SEED"]

DATA = "data/ppocr_cls"
EXPECTED_FP32_ACCURACY = 0.979
CALIBRATION_LINES = 200
CALIBRATION_NOISE_SEED = 1
TRAINING_NOISE_SEED = 2


def data_path(name: str) -> str:
    return os.fspath(resources.files("refq").joinpath(f"{DATA}/{name}"))


def textline_inputs(X: np.ndarray, widths: np.ndarray, noise_seed: int = 0,
                    max_sigma: float = 6.0) -> np.ndarray:
    """The test set's model input, NHWC float32 (N, 48, 192, 3).

    With rs = np.random.RandomState(noise_seed) (the legacy generator, stable across NumPy):
    sigma_i = float32(rs.uniform(0, max_sigma, N)), noise = float32(rs.standard_normal((N,H,W,3)));
    z = clip(X + noise·sigma_i, 0, 255) on 3 replicated channels; z = (z/255 − 0.5)/0.5; z = 0 at
    columns >= widths_i (right of the text), as the PP-OCR classifier's preprocessing pads.
    """
    rs = np.random.RandomState(noise_seed)
    n, h, w = X.shape
    sigma = rs.uniform(0, max_sigma, n).astype(np.float32)
    noise = rs.standard_normal((n, h, w, 3)).astype(np.float32)
    z = np.clip(X[..., None].astype(np.float32) + noise * sigma[:, None, None, None], 0, 255)
    z = (z / 255.0 - 0.5) / 0.5
    z = np.where(np.arange(w)[None, None, :, None] >= widths[:, None, None, None], 0.0, z)
    return z.astype(np.float32)


def _lines():
    with np.load(data_path("textlines_test1000.npz"), allow_pickle=False) as z:
        return z["X"], z["y"], z["widths"], z["p_onnx"]


def load_test_set():
    """(inputs NHWC float32, labels, onnxruntime probabilities) of the 1,000 bundled lines."""
    X, y, widths, p_onnx = _lines()
    return textline_inputs(X, widths), y, p_onnx


def load_calibration_set(n: int = CALIBRATION_LINES) -> np.ndarray:
    """Unlabelled calibration inputs: the first n lines with noise seed CALIBRATION_NOISE_SEED."""
    X, _, widths, _ = _lines()
    return textline_inputs(X[:n], widths[:n], noise_seed=CALIBRATION_NOISE_SEED)


def load_training_set(n: int | None = None):
    """(inputs NHWC float32, labels) of the first n (default all 1,000) training lines, drawn with
    noise seed TRAINING_NOISE_SEED. The lines come from the test set's generator with another seed,
    and no line has the text of a test line (NOTICE)."""
    with np.load(data_path("textlines_train1000.npz"), allow_pickle=False) as z:
        X, y, widths = z["X"][:n], z["y"][:n], z["widths"][:n]
    return textline_inputs(X, widths, noise_seed=TRAINING_NOISE_SEED), y


def load_model():
    from .importers import import_keras

    return import_keras(data_path("ppocr_cls_mbv3s.h5"))
