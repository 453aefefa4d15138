"""Reading a TFLite flatbuffer into plain Python data with the maintained `tflite` package.

`read_tflite(path)` returns a `TfModel`: every tensor of the main subgraph (name, shape, type,
constant data, quantization) and every operator (opcode name, input and output tensor indices,
the builtin options the importer uses) in execution order. All flatbuffer access happens here, in
one guarded pass: a truncated or damaged file raises one FormatError naming the file, never a
parser traceback. Nothing in the file is executed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError, InputError, RefqError, one_line

__all__ = ["TfModel", "TfTensor", "TfOperator", "read_tflite", "TYPE_NAMES"]

#: TFLite TensorType -> (name, NumPy dtype of its stored data).
TYPE_NAMES = {0: ("float32", "<f4"), 1: ("float16", "<f2"), 2: ("int32", "<i4"),
              3: ("uint8", "u1"), 4: ("int64", "<i8"), 6: ("bool", "?"), 7: ("int16", "<i2"),
              9: ("int8", "i1"), 10: ("float64", "<f8"), 15: ("uint32", "<u4"),
              16: ("uint16", "<u2")}
#: The builtin options read per option table type name: {table: {key: accessor}}.
_OPTION_FIELDS = {
    "Conv2DOptions": ("Padding", "StrideW", "StrideH", "FusedActivationFunction",
                      "DilationWFactor", "DilationHFactor"),
    "DepthwiseConv2DOptions": ("Padding", "StrideW", "StrideH", "DepthMultiplier",
                               "FusedActivationFunction", "DilationWFactor", "DilationHFactor"),
    "FullyConnectedOptions": ("FusedActivationFunction", "WeightsFormat", "KeepNumDims",
                              "AsymmetricQuantizeInputs"),
    "AddOptions": ("FusedActivationFunction", "PotScaleInt16"),
    "SubOptions": ("FusedActivationFunction", "PotScaleInt16"),
    "MulOptions": ("FusedActivationFunction",),
    "Pool2DOptions": ("Padding", "StrideW", "StrideH", "FilterWidth", "FilterHeight",
                      "FusedActivationFunction"),
    "ReducerOptions": ("KeepDims",), "ConcatenationOptions": ("Axis", "FusedActivationFunction"),
    "SoftmaxOptions": ("Beta",), "LeakyReluOptions": ("Alpha",),
}


@dataclass
class TfTensor:
    """One tensor: index, name, shape (-1 = free, from shape_signature when given), type name,
    constant data (None for activations), quantization (scales, zero points, axis; empty when
    not quantized)."""

    index: int
    name: str
    shape: tuple
    type: str
    data: np.ndarray | None
    scales: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    zero_points: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    axis: int = 0

    @property
    def quantized(self) -> bool:
        return self.scales.size > 0


@dataclass
class TfOperator:
    """One operator: position in the execution order, opcode name (BuiltinOperator name, or
    "CUSTOM(<code>)"), input and output tensor indices (-1 = optional input left out), and the
    builtin options the importer reads."""

    index: int
    opcode: str
    inputs: list
    outputs: list
    options: dict


@dataclass
class TfModel:
    path: str
    tensors: list
    operators: list
    inputs: list
    outputs: list
    description: str = ""


def _package():
    try:
        import tflite
    except ImportError:
        raise InputError("reading .tflite files needs the tflite package: pip install "
                         "'refq[tflite]'") from None
    return tflite


def read_tflite(path) -> TfModel:
    """The main subgraph of the TFLite file at `path` (module docstring). FormatError naming the
    file when it is missing, unreadable, not a TFLite flatbuffer, truncated or damaged; InputError
    when the `tflite` package is not installed."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory, not a .tflite file")
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file; check the path") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot be read ({one_line(e, 160)})") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise FormatError(f"{path}: not a TFLite flatbuffer (no 'TFL3' identifier); convert the "
                          "model with TensorFlow's TFLiteConverter")
    tfl = _package()
    try:
        return _read(tfl, buf, path)
    except RefqError:
        raise
    except Exception as e:  # a damaged flatbuffer fails inside the generated accessors
        raise FormatError(f"{path}: the TFLite flatbuffer is truncated or damaged "
                          f"({type(e).__name__}: {one_line(e, 120)}); convert the model again"
                          ) from None


def _read(tfl, buf, path) -> TfModel:
    model = tfl.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() < 1:
        raise FormatError(f"{path}: the TFLite model has no subgraph")
    g = model.Subgraphs(0)
    names = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    tensors = [_tensor(model, g.Tensors(i), i, buf, path) for i in range(g.TensorsLength())]
    ops = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        if builtin == getattr(tfl.BuiltinOperator, "CUSTOM", 32):
            name = f"CUSTOM({(code.CustomCode() or b'').decode('utf-8', 'replace')})"
        else:
            name = names.get(builtin, f"BUILTIN_{builtin}")
        ins = [int(t) for t in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else []
        for t in ins + outs:
            if not -1 <= t < len(tensors):
                raise FormatError(f"{path}: operator {i} ({name}) names tensor {t}, but the "
                                  f"model has {len(tensors)} tensors")
        ops.append(TfOperator(i, name, ins, outs, _options(tfl, op)))
    io = [[int(t) for t in (arr() if n() else [])] for arr, n in
          ((g.InputsAsNumpy, g.InputsLength), (g.OutputsAsNumpy, g.OutputsLength))]
    for what, ts in (("input", io[0]), ("output", io[1])):
        bad = [t for t in ts if not 0 <= t < len(tensors)]
        if bad:
            raise FormatError(f"{path}: the model's {what} names tensor {bad[0]}, but the model "
                              f"has {len(tensors)} tensors")
    desc = model.Description()
    return TfModel(path, tensors, ops, io[0], io[1],
                   desc.decode("utf-8", "replace") if desc else "")


def _tensor(model, t, index, buf, path) -> TfTensor:
    raw_name = t.Name()
    name = raw_name.decode("utf-8", "replace") if raw_name else f"tensor{index}"
    sig = t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else None
    shape = t.ShapeAsNumpy() if t.ShapeLength() else np.zeros(0, np.int32)
    shape = tuple(int(d) for d in (sig if sig is not None and len(sig) == len(shape) else shape))
    code = int(t.Type())
    tname, dtype = TYPE_NAMES.get(code, (f"type{code}", None))
    data = None
    b = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
    if b is not None:
        raw = None
        if b.DataLength():
            raw = b.DataAsNumpy().tobytes()
        elif b.Offset() > 1:
            off, size = int(b.Offset()), int(b.Size())
            if off + size > len(buf):
                raise FormatError(f"{path}: tensor {index} ('{name}') has data beyond the end of "
                                  "the file; the file is truncated")
            raw = buf[off:off + size]
        if raw is not None:
            if dtype is None:
                data = np.frombuffer(raw, np.uint8)
            else:
                count = int(np.prod(shape)) if all(d >= 0 for d in shape) else -1
                data = np.frombuffer(raw, dtype)
                if count >= 0 and data.size != count:
                    raise FormatError(f"{path}: tensor {index} ('{name}') holds {data.size} "
                                      f"values, its shape {list(shape)} needs {count}")
                data = data.reshape(shape).copy()
    tt = TfTensor(index, name, shape, tname, data)
    q = t.Quantization()
    if q is not None and q.ScaleLength():
        tt.scales = q.ScaleAsNumpy().astype(np.float32)
        zp = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(tt.scales.size, np.int64)
        tt.zero_points = np.broadcast_to(np.asarray(zp, np.int64), tt.scales.shape).copy()
        tt.axis = int(q.QuantizedDimension())
    return tt


def _options(tfl, op) -> dict:
    table = op.BuiltinOptions()
    if table is None:
        return {}
    kinds = {v: k for k, v in vars(tfl.BuiltinOptions).items() if not k.startswith("_")}
    kind = kinds.get(op.BuiltinOptionsType())
    fields = _OPTION_FIELDS.get(kind)
    if fields is None:
        return {}
    opt = getattr(tfl, kind)()
    opt.Init(table.Bytes, table.Pos)
    return {f: getattr(opt, f)() for f in fields}
