"""ONNX model files: open safely, read constants, attributes and input shapes.

`load_model(path)` parses a `.onnx` file with the maintained `onnx` package (the `refq[onnx]`
extra, imported only here and only when an ONNX file is read) and checks it with
`onnx.checker`. Nothing in the file is executed. Tensors stored as external data are read only
from files inside the model's own folder (no absolute paths, no `..`), after checking that each
exists and holds the declared bytes.

`OnnxModel` holds what the converters need: the graph's nodes, the constants (initializers and
`Constant` nodes, as NumPy arrays in the file's NCHW layout), the default-domain opset, and the
declared input shapes with free dimensions as None.

Errors: FormatError for a missing, empty, truncated or undecodable file, for a model the checker
refuses and for bad external data; InputError (one line) when the `onnx` package is missing.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import FormatError, InputError, UnsupportedLayerError, one_line

__all__ = ["onnx_module", "load_model", "OnnxModel", "attributes", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'refq[onnx]'"
#: The com.microsoft (onnxruntime) operators refq reads, in integer models (`onnx_integer`).
MICROSOFT_INTEGER_OPS = ("QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearGlobalAveragePool")


def onnx_module():
    """The `onnx` package; InputError with the install command when it is missing."""
    try:
        import onnx
    except ImportError:
        raise InputError(f"reading ONNX files needs the onnx package: {INSTALL_HINT}") from None
    return onnx


def attributes(node) -> dict:
    """{name: value} of an ONNX node's attributes (strings decoded, tensors as arrays)."""
    onnx = onnx_module()
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, onnx.TensorProto):
            v = onnx.numpy_helper.to_array(v)
        out[a.name] = v
    return out


def _external_data(onnx, model, path):
    """Read the external tensors of `model` from files beside `path`; FormatError on any that
    lies outside the model's folder, is missing or is shorter than declared."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    folder = os.path.dirname(os.path.abspath(path))
    external = [t for t in _get_all_tensors(model) if uses_external_data(t)]
    for t in external:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        where = f"{path}: tensor '{t.name}' is stored as external data in '{location}'"
        target = os.path.abspath(os.path.join(folder, location))
        if (not location or os.path.isabs(location) or ".." in location.replace("\\", "/")
                .split("/") or os.path.commonpath([folder, target]) != folder):
            raise FormatError(f"{where}, outside the model's folder; refq reads external data "
                              "only from files in the folder of the .onnx file")
        if not os.path.isfile(target):
            raise FormatError(f"{where}, which does not exist; copy it beside the model")
        offset, length = int(info.get("offset", 0) or 0), info.get("length")
        if length is not None and offset + int(length) > os.path.getsize(target):
            raise FormatError(f"{where}, which is shorter than the {offset + int(length)} bytes "
                              "declared; the file is truncated")
    if external:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, folder)
        except (OSError, ValueError) as e:
            raise FormatError(f"{path}: reading external data failed ({one_line(e, 200)})") \
                from None


def load_model(path):
    """The checked `onnx.ModelProto` in `path` (see the module docstring)."""
    onnx = onnx_module()
    from google.protobuf.message import DecodeError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FormatError(f"{path}: no such file; give the path of an .onnx model")
    if os.path.getsize(path) == 0:
        raise FormatError(f"{path}: the file is empty; it is not an ONNX model")
    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not an ONNX model, or truncated (protobuf: "
                          f"{one_line(e, 120)})") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read the file ({one_line(e, 120)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise FormatError(f"{path}: holds no ONNX graph (no nodes); it is not an ONNX model, "
                          "or it is truncated")
    _external_data(onnx, model, path)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise FormatError(f"{path}: onnx.checker refuses the model ({one_line(e, 200)}); the "
                          "file is damaged or truncated") from None
    return model


class OnnxModel:
    """A loaded ONNX model: nodes, constants, opset and declared inputs (module docstring)."""

    def __init__(self, path, model):
        onnx = onnx_module()
        self.path = os.fspath(path)
        self.model = model
        graph = model.graph
        self.opset = 1
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                self.opset = int(o.version)
        self.constants: dict = {}
        for t in graph.initializer:
            self.constants[t.name] = self._array(onnx, t, f"initializer '{t.name}'")
        self.nodes = []
        for node in graph.node:
            if node.domain not in ("", "ai.onnx") and not (
                    node.domain == "com.microsoft" and node.op_type in MICROSOFT_INTEGER_OPS):
                raise UnsupportedLayerError(
                    f"{self.path}: node '{node.name}' ({node.op_type}) is in the domain "
                    f"'{node.domain}'; refq reads the default ONNX domain (and "
                    f"{', '.join(MICROSOFT_INTEGER_OPS)} of com.microsoft)")
            if node.op_type == "Constant":
                self.constants[node.output[0]] = self._constant(onnx, node)
            else:
                self.nodes.append(node)
        self.inputs = []
        for v in graph.input:
            if v.name in self.constants:
                continue   # an initializer listed as an input (IR < 4): a constant
            tt = v.type.tensor_type
            if not v.type.HasField("tensor_type"):
                raise UnsupportedLayerError(f"{self.path}: input '{v.name}' is not a tensor")
            dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                         for d in tt.shape.dim)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else None
            self.inputs.append((v.name, dims, dtype, tt.HasField("shape")))
        self.outputs = [v.name for v in graph.output]

    def _array(self, onnx, tensor, what):
        try:
            a = onnx.numpy_helper.to_array(tensor)
        except (ValueError, TypeError, RuntimeError) as e:
            raise FormatError(f"{self.path}: {what} cannot be read ({one_line(e, 120)})") \
                from None
        return np.array(a)

    def _constant(self, onnx, node):
        attrs = attributes(node)
        where = f"Constant node '{node.name}' ('{node.output[0]}')"
        if "value" in attrs:
            return np.array(attrs["value"])
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in attrs:
                return np.array(attrs[key], dtype=dtype)
        raise UnsupportedLayerError(f"{self.path}: {where} has attribute(s) {sorted(attrs)}; "
                                    "refq reads tensor, float and int constants")
