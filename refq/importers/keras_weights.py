"""Reading the weights of one layer from an opened Keras file (dialects A-D of `keras_h5`).

`KerasFile.weights(layer, class)` returns the layer's arrays in stored order with the dataset each
came from, or None when the file has no entry for the layer:
- legacy HDF5 (A, B): the layer group's `weight_names` attribute gives the order and the dataset
  paths relative to the group; chunked attributes (`weight_names0, 1, ...`) are joined;
- Keras 3 (C, D): `layers/<key>/vars/0, 1, ...`. The layer is found by the `name` attribute of
  the `vars` group when every group has one, else by rebuilding Keras' key (snake_case of the class
  name, made unique with `_1, _2, ...` in the order of `model.layers`, which for a Sequential model
  leaves out the InputLayer).
Arrays keep their stored dtype; non-numeric data are refused with a ParamError (NaN/Inf are refused
by `keras_graph`, which knows each weight's role), and any h5py error becomes a one-line
FormatError naming the file, layer and dataset. Attribute text must be UTF-8 (`text_attr`,
`str_list_attr`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError, ParamError, RefqError, one_line
from .keras_config import config_layers, layer_name

__all__ = ["KerasFile", "LayerWeights", "NotText", "keras_major", "snake_case", "as_text",
           "text_attr", "str_list_attr"]


def h5py_module():
    import h5py  # imported lazily so that `import refq` does not need h5py

    return h5py


class NotText(ValueError):
    """A value that should be UTF-8 text is not (str(e) says what it is instead)."""


def as_text(value) -> str:
    """`value` (str, bytes, or a one-element NumPy array of either, as h5py returns attributes)
    as a str. Raises NotText for bytes that are not UTF-8 (h5py returns those as a str with lone
    surrogates, which are refused too) and for anything that is not text."""
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "SUO":
        value = value.reshape(())[()]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NotText(f"is not UTF-8 text (byte {value[e.start:e.start + 1]!r} at offset "
                          f"{e.start})") from None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise NotText(f"is not UTF-8 text (an undecodable byte at offset {e.start})") from None
        return str(value)
    raise NotText(f"is not text but {type(value).__name__} {one_line(repr(value), 40)}")


def _attr_error(group, key, where, reason):
    owner = "the root" if group.name == "/" else f"the group '{group.name}'"
    return FormatError(f"{where}: the attribute '{key}' of {owner} {reason}; the file is "
                       "damaged or was not written by Keras: save the model again from Keras")


def _read_attr(group, key, where):
    try:
        return group.attrs[key]
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as e:
        raise _attr_error(group, key, where, f"cannot be read ({one_line(e, 160)})") from None


def text_attr(group, key: str, where: str):
    """The text attribute `key` of `group`, or None when absent; FormatError naming `where`, the
    group and the attribute when it cannot be read or is not UTF-8 text."""
    if key not in group.attrs:
        return None
    try:
        return as_text(_read_attr(group, key, where))
    except NotText as e:
        raise _attr_error(group, key, where, str(e)) from None


def str_list_attr(group, key: str, where: str):
    """A list-of-strings attribute, joining Keras' chunks `key0, key1, ...`; None when absent.
    FormatError naming `where`, the group and the attribute when an entry is not UTF-8 text."""
    attrs = group.attrs
    if key in attrs:
        chunks = [(key, _read_attr(group, key, where))]
    elif f"{key}0" in attrs:
        chunks, i = [], 0
        while f"{key}{i}" in attrs:
            chunks.append((f"{key}{i}", _read_attr(group, f"{key}{i}", where)))
            i += 1
    else:
        return None
    out = []
    for k, values in chunks:
        values = np.asarray(values)
        if values.size and values.dtype.kind not in "SUO":
            raise _attr_error(group, k, where, f"is not a list of names (dtype {values.dtype})")
        for i, v in enumerate(values.reshape(-1)):
            try:
                out.append(as_text(v))
            except NotText as e:
                raise _attr_error(group, k, where, f"has an entry {i} that {e}") from None
    return out


def keras_major(version) -> int | None:
    """The major version number of a `keras_version` string ("2.0.5" -> 2), or None."""
    m = re.match(r"\s*(\d+)", version or "")
    return int(m.group(1)) if m else None


def snake_case(class_name: str) -> str:
    """Keras 3's key for an object of class `class_name` in a weights file (Conv2D -> conv2d,
    ReLU -> re_lu, BatchNormalization -> batch_normalization)."""
    s = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


@dataclass
class LayerWeights:
    """The weights of one layer in stored order: `labels[i]` is where `arrays[i]` came from."""

    layer: str
    where: str
    labels: list
    arrays: list


# ---- the file object ---------------------------------------------------------------------------
class KerasFile:
    """An opened Keras file: `config` (the model config dict), `keras_version`, `dialect`, and
    `weights(layer_name, class_name)` -> LayerWeights (None when the file has no entry for the
    layer). Use as a context manager; h5py handles are closed on exit."""

    def __init__(self, path, dialect, config, keras_version, h5, weights_root, zip_member=None,
                 config_source=None):
        self.path = path
        self.dialect = dialect
        self.config = config
        self.keras_version = keras_version
        self.config_source = config_source or path
        self._h5 = h5
        self._root = weights_root
        self._zip_member = zip_member
        self._vars_index = None

    # -- context manager
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:  # closing a damaged file must not hide the real error
                pass
            self._h5 = None

    @property
    def where(self) -> str:
        """The weights file as named in messages (the zip member for `.keras`)."""
        return f"{self.path}[{self._zip_member}]" if self._zip_member else str(self.path)

    # -- weights
    def weights(self, name: str, class_name: str):
        try:
            if self.dialect in ("legacy-model-h5", "legacy-weights-h5"):
                return self._legacy_weights(name, class_name)
            return self._keras3_weights(name, class_name)
        except RefqError:
            raise
        except (KeyError, OSError, RuntimeError, ValueError, TypeError, AttributeError) as e:
            raise FormatError(
                f"{self.where}: layer '{name}' ({class_name}): cannot read its weights "
                f"({one_line(e, 160)}); the file is truncated or damaged: copy or save it again"
            ) from None

    def _legacy_weights(self, name, class_name):
        root = self._root
        names = str_list_attr(root, "layer_names", self.where) or []
        if name not in names or name not in root:
            return None
        group = root[name]
        if not isinstance(group, h5py_module().Group):
            raise FormatError(
                f"{self.where}: layer '{name}' ({class_name}): '{group.name}' is a dataset, not "
                "a group of weights; the file is damaged: save the model again")
        wnames = str_list_attr(group, "weight_names", self.where) or []
        arrays = []
        for w in wnames:
            if w not in group:
                raise ParamError(
                    f"{self.where}: layer '{name}' ({class_name}) lists the weight '{w}' in its "
                    f"weight_names, but the dataset '{group.name}/{w}' is missing; the file is "
                    "incomplete: save the model again")
            arrays.append(self._read(group[w], name, f"{group.name}/{w}"))
        return LayerWeights(name, group.name, [f"{group.name}/{w}" for w in wnames], arrays)

    def _keras3_weights(self, name, class_name):
        if self._vars_index is None:
            self._vars_index = self._index_vars()
        path = self._vars_index.get(name)
        if path is None:
            return None
        group = self._root[path]
        keys = list(group.keys())
        expected = [str(i) for i in range(len(keys))]
        if sorted(keys, key=lambda k: (len(k), k)) != expected:
            raise FormatError(
                f"{self.where}: layer '{name}' ({class_name}): the group '{group.name}' holds "
                f"{sorted(keys)}, expected datasets named 0..{len(keys) - 1}; the file is not a "
                "Keras 3 weights file or is damaged: save the model again")
        labels = [f"{group.name}/{k}" for k in expected]
        arrays = [self._read(group[k], name, lab) for k, lab in zip(expected, labels)]
        return LayerWeights(name, group.name, labels, arrays)

    def _index_vars(self) -> dict:
        """layer name -> path of its `vars` group, from the `name` attributes or rebuilt keys."""
        layers = self._root.get("layers") if hasattr(self._root, "get") else None
        if layers is None or not isinstance(layers, h5py_module().Group):
            raise FormatError(
                f"{self.where}: there is no group 'layers', so this is not a Keras 3 weights file "
                "(dialect C); save the weights again with model.save_weights('m.weights.h5')")
        by_attr, keys = {}, list(layers.keys())
        for key in keys:
            vars_group = layers[key].get("vars")
            name = text_attr(vars_group, "name", self.where) if vars_group is not None else None
            if name is None:
                continue
            if name in by_attr:
                raise FormatError(
                    f"{self.where}: the groups '/{by_attr[name]}' and '/layers/{key}/vars' both "
                    f"carry the layer name '{name}' (attribute 'name'); the file is damaged: "
                    "save the weights again with model.save_weights()")
            by_attr[name] = f"layers/{key}/vars"
        if by_attr and len(by_attr) == len(keys):
            return by_attr
        # Rebuild Keras' keys: snake_case(class name), made unique in the order of model.layers.
        entries = config_layers(self.config)
        if self.config.get("class_name") == "Sequential":
            entries = [e for e in entries if e.get("class_name") != "InputLayer"]
        used, index = {}, {}
        for e in entries:
            base = snake_case(str(e.get("class_name", "")))
            n = used.get(base, 0)
            used[base] = n + 1
            key = base if n == 0 else f"{base}_{n}"
            if key in layers and "vars" in layers[key]:
                index[layer_name(e)] = f"layers/{key}/vars"
        index.update(by_attr)
        return index

    def _read(self, dataset, layer, label):
        if not isinstance(dataset, h5py_module().Dataset):
            raise FormatError(
                f"{self.where}: layer '{layer}': '{label}' is a group, not a weight dataset; the "
                "file is damaged: save the model again")
        try:
            arr = np.asarray(dataset[()])
        except MemoryError:
            raise FormatError(
                f"{self.where}: layer '{layer}': the weight '{label}' declares the shape "
                f"{dataset.shape}, too large to read; the file is damaged: save the model "
                "again") from None
        except (OSError, RuntimeError, ValueError, TypeError) as e:
            raise FormatError(
                f"{self.where}: layer '{layer}': cannot read the weight '{label}' "
                f"({one_line(e, 160)}); the file is truncated or damaged: copy or save it again"
            ) from None
        if arr.dtype.kind not in "fiu":
            raise ParamError(
                f"{self.where}: layer '{layer}': the weight '{label}' has dtype {arr.dtype}, not a "
                "real number type; save the weights from Keras again")
        return arr
