"""The importer a model file's suffix names: Keras HDF5, TFLite flatbuffers or ONNX protobuf."""
from __future__ import annotations

import os

from ..errors import InputError


def import_model(path, architecture=None, input_shapes=None, profile=None):
    """The model in `path`: a `Graph` (float or integer) or a `QuantSim` (an ONNX QDQ model).

    `.tflite` needs the `tflite` extra and `.onnx` the `onnx` extra; anything else is read as a
    Keras HDF5 file (`.h5`, `.hdf5`, `.keras`, `.weights.h5` with `architecture`). input_shapes
    ({input: NCHW shape}) and profile (of an integer-op model) apply to ONNX files only."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in (".tflite", ".onnx") and architecture is not None:
        raise InputError(f"{path}: --architecture applies to Keras .weights.h5 files only")
    if suffix != ".onnx" and (input_shapes or profile is not None):
        raise InputError(f"{path}: --input-shape and --profile apply to .onnx files only")
    if suffix == ".tflite":
        from .tflite import import_tflite

        return import_tflite(path)
    if suffix == ".onnx":
        from .onnx import import_onnx

        return import_onnx(path, input_shapes=input_shapes,
                           profile="onnx" if profile is None else profile)
    from . import import_keras

    return import_keras(path, architecture=architecture)
