"""Keras model files: recognise the file dialect, find the model config and each layer's weights.

Four file dialects exist. They are recognised by content (magic bytes, attributes, groups), never by
the file name:

A. **legacy full-model HDF5** (`model.save("m.h5")` in Keras 2.x and in Keras 3): an HDF5 file whose
   root has the attribute `model_config` (JSON text) and usually `keras_version`, `backend`. The
   group `model_weights` has the attribute `layer_names`; each layer group has `weight_names`, the
   dataset paths relative to that group, in the layer's weight order (Keras 2 writes
   `conv2d_1_1/kernel:0`, Keras 3 `conv2d_1/kernel` or `<model>/<layer>/kernel`). Long attributes
   are split by Keras into `layer_names0`, `layer_names1`, ... and are joined back here.
B. **legacy weights-only HDF5** (Keras 2 `model.save_weights("w.h5")`): like A but without a config,
   with `layer_names` on the root and the layer groups directly under the root. Needs
   `architecture=` (the JSON of `model.to_json()`).
C. **Keras 3 weights HDF5** (`model.save_weights("m.weights.h5")`): groups `layers/<key>/vars/<i>`
   with datasets `0, 1, ...` in the layer's weight order. `<key>` is not the layer name but the
   snake_case class name made unique with `_1, _2, ...` in the order of `model.layers` (which for a
   Sequential model leaves out the InputLayer). Recent Keras 3 versions also store the layer name
   as the attribute `name` of each `vars` group; it is used when present, else the key is rebuilt
   from the config. Needs `architecture=`.
D. **`.keras` zip archive** (Keras 3 `model.save("m.keras")`): `config.json` (the model config),
   `metadata.json` (`keras_version`) and `model.weights.h5` (layout C).

Weights are taken strictly in the stored order (`weight_names`, or `vars/0, 1, ...`); dataset names
are never used to guess which weight is which. Every h5py, zip, JSON or OS error is turned into a
one-line `FormatError` or `ParamError` that names the file, the layer and the dataset (a library's
own text is reduced to one short line).

What is refused on opening:
- text attributes (`model_config`, `keras_version`, `backend`, `layer_names`, `weight_names`, the
  `name` of a `vars` group) that are not UTF-8 text;
- a config that is not a JSON object with `class_name`, or is nested more than `MAX_JSON_DEPTH`
  levels; an architecture file or a `.keras` JSON member larger than `MAX_JSON_BYTES`, a
  `model.weights.h5` member larger than `MAX_WEIGHTS_BYTES` (judged from the sizes the archive
  declares, before reading);
- files written by Keras 1 or with the Theano backend, whose weights Keras itself converts on
  loading (Theano stores convolution kernels flipped).

This module recognises the dialect and opens the file; `keras_weights` reads each layer's weights,
`keras_config` reads the topology (the config dialects), `keras_fields` reads typed config fields,
`keras_check` decides from the config alone which layers can be imported, `keras_layers` (with
`keras_activations`) converts layers and `keras_graph` assembles and checks the Graph.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
import zlib

from ..errors import FormatError, RefqError, one_line
from ..hdf5_check import check_global_heaps
from .keras_weights import KerasFile, NotText, as_text, h5py_module, keras_major, \
    str_list_attr, text_attr

__all__ = ["import_keras", "open_keras_file", "MAX_JSON_BYTES", "MAX_WEIGHTS_BYTES",
           "MAX_JSON_DEPTH"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
MAX_JSON_BYTES = 64 * 2 ** 20     # a model config, metadata or architecture JSON
MAX_WEIGHTS_BYTES = 8 * 2 ** 30   # the weights member of a .keras archive (read into memory)
MAX_JSON_DEPTH = 100              # nesting of a config (Keras writes about 10 levels)
_ARCH_HINT = ("pass the architecture with `refq import FILE --architecture model.json` "
              "(import_keras(path, architecture=...)), the JSON of model.to_json()")


def import_keras(path, architecture=None):
    """Import a Keras model file as a validated `refq.graph.Graph`.

    path: a legacy `.h5`/`.hdf5` model (dialect A), a `.keras` archive (D), or a weights-only file
      (B or C) together with `architecture`.
    architecture: path of a JSON file written from `model.to_json()`. Required for weights-only
      files; when given for a full model it replaces the stored config.
    Raises FormatError, ParamError, GraphError or UnsupportedLayerError, each with a one-line
    message; never executes code.
    """
    from .keras_graph import build_graph

    try:
        with open_keras_file(path, architecture) as kf:
            return build_graph(kf)
    except RefqError as e:
        if "\n" in str(e) or "\r" in str(e):  # messages are one line, whatever they embed
            raise type(e)(one_line(e, limit=2000)) from None
        raise


# ---- opening -----------------------------------------------------------------------------------
def _sniff(path) -> str:
    """'hdf5', 'zip' or 'other' from the magic bytes (HDF5 may sit after a user block)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head.startswith(_ZIP_MAGIC) or head.startswith(b"PK\x05\x06"):
                return "zip"
            offset = 0
            while True:
                if head == _HDF5_MAGIC:
                    return "hdf5"
                offset = 512 if offset == 0 else offset * 2
                f.seek(offset)
                head = f.read(8)
                if len(head) < 8:
                    return "other"
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, not a Keras file; pass the .h5, .hdf5 or "
                          ".keras file (a TensorFlow SavedModel directory is not supported)"
                          ) from None
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file; check the path") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot be read ({one_line(e, 160)}); check the path and its "
                          "permissions") from None


def _open_h5(source, label):
    h5py = h5py_module()
    check_global_heaps(source, label, "the file is damaged: copy or save it again")
    try:
        return h5py.File(source, "r")
    except (OSError, RuntimeError, ValueError) as e:
        raise FormatError(
            f"{label}: starts like an HDF5 file but cannot be opened ({one_line(e, 160)}); it is "
            "probably truncated or damaged: copy or save it again") from None


def _depth(value) -> int:
    """The nesting depth of a JSON value (a scalar has depth 0), computed without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


_TOO_DEEP = object()  # json.loads hit the recursion limit


def _parse_json(text, label, what):
    """The Keras model config in `text` (bytes or str): a UTF-8 JSON object with 'class_name'
    nested at most MAX_JSON_DEPTH levels; FormatError naming `label` and `what` otherwise."""
    try:
        value = json.loads(as_text(text))
    except NotText as e:
        raise FormatError(f"{label}: {what} {e}; save the model again from Keras") from None
    except RecursionError:
        value = _TOO_DEEP
    except ValueError as e:
        raise FormatError(f"{label}: {what} is not valid JSON ({one_line(e, 160)}); save the model "
                          "again") from None
    if value is _TOO_DEEP or _depth(value) > MAX_JSON_DEPTH:
        raise FormatError(f"{label}: {what} is nested more than {MAX_JSON_DEPTH} levels deep, "
                          "which no Keras config is; the file is damaged: save the model again")
    if not isinstance(value, dict) or "class_name" not in value:
        kind = "a JSON object without 'class_name'" if isinstance(value, dict) else \
            f"a JSON {type(value).__name__.replace('NoneType', 'null')}"
        raise FormatError(f"{label}: {what} is {kind}, not a Keras model config (an object with "
                          "'class_name' and 'config'); pass the output of model.to_json()")
    return value


def _read_architecture(architecture):
    try:
        size = os.path.getsize(architecture)
        if size > MAX_JSON_BYTES:
            raise FormatError(f"{architecture}: the architecture JSON is {size} bytes, more than "
                              f"the {MAX_JSON_BYTES} a model config can be; {_ARCH_HINT}")
        with open(architecture, "rb") as f:
            text = f.read()
    except OSError as e:
        raise FormatError(f"{architecture}: cannot read the architecture JSON ({one_line(e, 160)}); "
                          f"{_ARCH_HINT}") from None
    cfg = _parse_json(text, str(architecture), "the architecture file")
    # Keras 2's to_json() wraps {"class_name", "config", "keras_version", "backend"}.
    version = cfg.get("keras_version")
    return cfg, version if isinstance(version, str) else None


def open_keras_file(path, architecture=None) -> KerasFile:
    """Recognise the dialect of `path` (module docstring) and return an opened KerasFile."""
    path = os.fspath(path)
    kind = _sniff(path)
    arch_cfg, arch_version = (None, None)
    if architecture is not None:
        arch_cfg, arch_version = _read_architecture(os.fspath(architecture))
    if kind == "zip":
        return _open_zip(path, arch_cfg, architecture)
    if kind != "hdf5":
        raise FormatError(
            f"{path}: is neither an HDF5 file (.h5, .hdf5, .weights.h5) nor a zip archive "
            "(.keras); pass a file written by Keras model.save() or model.save_weights()")
    h5 = _open_h5(path, path)
    try:
        return _classify_h5(path, h5, arch_cfg, arch_version, architecture)
    except BaseException:
        h5.close()
        raise


def _check_writer(path, group):
    """Refuse files whose weights Keras itself converts on loading: Keras 1 layouts and the
    Theano backend's flipped convolution kernels (keras.saving preprocess_weights_for_loading)."""
    version = text_attr(group, "keras_version", path)
    backend = text_attr(group, "backend", path)
    if keras_major(version) == 1:
        raise FormatError(f"{path}: was written by Keras {version}, whose layer configs and "
                          "weight layouts refq does not read; load it in Keras 2 and save it "
                          "again")
    if backend == "theano":
        raise FormatError(f"{path}: was saved with the Theano backend, which stores "
                          "convolution kernels flipped; load it in Keras with the TensorFlow "
                          "backend and save it again")
    return version


def _classify_h5(path, h5, arch_cfg, arch_version, architecture):
    h5py = h5py_module()
    try:
        version = _check_writer(path, h5)
        if "model_config" in h5.attrs:
            text = text_attr(h5, "model_config", path)
            config = arch_cfg or _parse_json(text, path, "the attribute 'model_config'")
            if "model_weights" not in h5 or not isinstance(h5["model_weights"], h5py.Group):
                raise FormatError(
                    f"{path}: has a model_config but no group 'model_weights'; the weights are "
                    "missing: save the model again with model.save()")
            root = h5["model_weights"]
            if str_list_attr(root, "layer_names", path) is None:
                raise FormatError(f"{path}: the group 'model_weights' has no attribute "
                                  "'layer_names'; the file is damaged: save the model again")
            version = version or _check_writer(path, root)
            return KerasFile(path, "legacy-model-h5", config, version or arch_version, h5, root,
                             config_source=architecture or path)
        if str_list_attr(h5, "layer_names", path) is not None:
            dialect = "legacy-weights-h5"
        elif "layers" in h5 or "vars" in h5:
            dialect = "keras3-weights-h5"
            version = version or arch_version or "3"
        elif "model_weights" in h5:
            raise FormatError(
                f"{path}: has a group 'model_weights' but no root attribute 'model_config', so "
                f"the architecture is missing; {_ARCH_HINT}, or save the full model with "
                "model.save()")
        else:
            raise FormatError(
                f"{path}: is an HDF5 file but not a Keras model or weights file (no "
                "'model_config' attribute, no 'layer_names' attribute, no 'layers' group); pass "
                "a file written by Keras model.save() or model.save_weights()")
    except (KeyError, OSError, RuntimeError, ValueError) as e:
        raise FormatError(f"{path}: cannot read the HDF5 structure ({one_line(e, 160)}); the file "
                          "is truncated or damaged: save it again") from None
    if arch_cfg is None:
        raise FormatError(f"{path}: holds weights only (no 'model_config'); {_ARCH_HINT}")
    return KerasFile(path, dialect, arch_cfg, version or arch_version, h5, h5,
                     config_source=architecture)


def _read_member(zf, path, name, limit):
    """The bytes of archive member `name` (None when absent), refusing members whose declared
    size exceeds `limit` before reading them."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        return None
    if info.file_size > limit:
        raise FormatError(f"{path}: the member '{name}' of the .keras archive declares "
                          f"{info.file_size} bytes, more than the {limit} refq reads; the "
                          "archive is damaged or not a Keras model: save the model again")
    return zf.read(info)


def _open_zip(path, arch_cfg, architecture):
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            config_text = _read_member(zf, path, "config.json", MAX_JSON_BYTES)
            meta_text = _read_member(zf, path, "metadata.json", MAX_JSON_BYTES)
            weights = _read_member(zf, path, "model.weights.h5", MAX_WEIGHTS_BYTES)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError, zlib.error, MemoryError) as e:
        raise FormatError(f"{path}: is not a readable zip archive ({one_line(e, 160)}); a .keras "
                          "file is a zip archive: it is probably truncated or damaged, save it "
                          "again") from None
    if weights is None:
        sharded = "model.weights.json" in names
        raise FormatError(
            f"{path}: the .keras archive has no 'model.weights.h5' (members: "
            f"{one_line(sorted(names), 200)}); "
            + ("sharded weights are not supported: save without max_shard_size" if sharded
               else "save the model again with model.save('m.keras')"))
    if arch_cfg is None and config_text is None:
        raise FormatError(f"{path}: the .keras archive has no 'config.json' (members: "
                          f"{one_line(sorted(names), 200)}); save the model again, or "
                          f"{_ARCH_HINT}")
    config = arch_cfg or _parse_json(config_text, f"{path}[config.json]", "config.json")
    version = None
    if meta_text is not None:
        try:
            meta = json.loads(as_text(meta_text))
            found = meta.get("keras_version") if isinstance(meta, dict) else None
            version = found if isinstance(found, str) else None
        except (ValueError, RecursionError):
            version = None  # metadata is informative only
    h5 = _open_h5(io.BytesIO(weights), f"{path}[model.weights.h5]")
    return KerasFile(path, "keras-zip", config, version or "3", h5, h5,
                     zip_member="model.weights.h5", config_source=architecture or path)
