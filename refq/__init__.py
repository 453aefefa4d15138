"""refq: a pure-NumPy reference implementation of neural-network quantization and compression."""
from .errors import (FormatError, GraphError, InputError, OutputError, ParamError, QuantError,
                     RefqError, ShapeError, UnsupportedLayerError)
from .graph import Graph, Node, TensorSpec
from .model_io import load, save
from .plan import Plan
from .runtime import run
from .summary import summarize

__version__ = "0.1.0"


def import_keras(path, architecture=None) -> Graph:
    """Import a Keras HDF5 model (.h5/.hdf5, .keras, or .weights.h5 + `architecture` JSON)."""
    from .importers import import_keras as _import

    return _import(path, architecture=architecture)


def import_tflite(path):
    """Import a `.tflite` model (float, fully integer or dynamic-range); needs the `tflite` extra."""
    from .importers.tflite import import_tflite as _import

    return _import(path)


def import_onnx(path):
    """Import an `.onnx` model (float, QDQ or integer-op); needs the `onnx` extra."""
    from .importers.onnx import import_onnx as _import

    return _import(path)


__all__ = [
    "Graph", "Node", "TensorSpec", "load", "save", "run", "Plan", "import_keras", "import_tflite",
    "import_onnx", "summarize",
    "RefqError", "FormatError", "GraphError", "ShapeError", "ParamError",
    "UnsupportedLayerError", "InputError", "OutputError", "QuantError", "__version__",
]
