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


def import_onnx(path, input_shapes=None, profile="onnx", numerics=None):
    """Import an `.onnx` model (float, QDQ or integer-op); needs the `onnx` extra. input_shapes:
    {input name: NCHW shape} for inputs whose shape the file leaves free; profile: the numerics
    profile of an integer-op model; numerics: the encoding numerics of a QDQ model's simulation
    (default ONNX's own, x / s)."""
    from .importers.onnx import import_onnx as _import

    return _import(path, input_shapes=input_shapes, profile=profile, numerics=numerics)


__all__ = [
    "Graph", "Node", "TensorSpec", "load", "save", "run", "Plan", "import_keras", "import_tflite",
    "import_onnx", "summarize",
    "RefqError", "FormatError", "GraphError", "ShapeError", "ParamError",
    "UnsupportedLayerError", "InputError", "OutputError", "QuantError", "__version__",
]
