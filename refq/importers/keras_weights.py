"""Reading the weights of one layer from an opened Keras file (dialects A-D of `keras_h5`).

`KerasFile.weights(layer, class)` returns the layer's arrays in stored order with the dataset each
came from, or None when the file has no entry for the layer:
- legacy HDF5 (A, B): the layer group's `weight_names` attribute gives the order and the dataset
  paths relative to the group; chunked attributes (`weight_names0, 1, ...`) are joined;
- Keras 3 (C, D): `layers/<key>/vars/0, 1, ...`. The layer is found by the `name` attribute of
  the `vars` group when every group has one, else by rebuilding Keras' key (snake_case of the class
  name, made unique with `_1, _2, ...` in the order of `model.layers`, which for a Sequential model
  leaves out the InputLayer).
Arrays keep their stored dtype; NaN/Inf and non-numeric data are refused with a ParamError, and
any h5py error becomes a FormatError naming the file, layer and dataset.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError, ParamError, RefqError
from .keras_config import config_layers, layer_name

__all__ = ["KerasFile", "LayerWeights", "keras_major", "snake_case", "as_text", "str_list_attr"]


def h5py_module():
    import h5py  # imported lazily so that `import refq` does not need h5py

    return h5py


def as_text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return as_text(value[()])
    return str(value)


def str_list_attr(group, key: str):
    """A list-of-strings attribute, joining Keras' chunks `key0, key1, ...`; None when absent."""
    attrs = group.attrs
    if key in attrs:
        values = attrs[key]
    elif f"{key}0" in attrs:
        values, i = [], 0
        while f"{key}{i}" in attrs:
            values.extend(list(attrs[f"{key}{i}"]))
            i += 1
    else:
        return None
    return [as_text(v) for v in np.asarray(values).reshape(-1)]


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
                f"{self.where}: layer '{name}' ({class_name}): cannot read its weights ({e}); the "
                "file is truncated or damaged: copy or save it again") from None

    def _legacy_weights(self, name, class_name):
        root = self._root
        names = str_list_attr(root, "layer_names") or []
        if name not in names or name not in root:
            return None
        group = root[name]
        wnames = str_list_attr(group, "weight_names") or []
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
            if vars_group is not None and "name" in vars_group.attrs:
                by_attr[as_text(vars_group.attrs["name"])] = f"layers/{key}/vars"
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
        try:
            arr = np.asarray(dataset[()])
        except (OSError, RuntimeError, ValueError, TypeError) as e:
            raise FormatError(
                f"{self.where}: layer '{layer}': cannot read the weight '{label}' ({e}); the file "
                "is truncated or damaged: copy or save it again") from None
        if arr.dtype.kind not in "fiu":
            raise ParamError(
                f"{self.where}: layer '{layer}': the weight '{label}' has dtype {arr.dtype}, not a "
                "real number type; save the weights from Keras again")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0].tolist()
            raise ParamError(
                f"{self.where}: layer '{layer}': the weight '{label}' holds NaN or Inf (first at "
                f"index {bad}: {arr[tuple(bad)]}); fix or retrain the model before importing it")
        return arr
