"""Write synthetic Keras-format files (with h5py and zipfile only) for the importer tests.

A model is described once as a list of `Layer`s (name, class, config, inbound layer names, weights
as (keras weight name, array) pairs) and written in any dialect:
- `config(...)`: the model config in the Keras 2 or the Keras 3 config dialect, Sequential or
  Functional;
- `write_legacy_h5`: legacy full-model HDF5 (root `model_config`, `model_weights/<layer>` with
  `weight_names`), Keras 2 (`<layer>_1/kernel:0`) or Keras 3 (`<layer>/kernel`) weight names;
- `write_legacy_weights_h5`: Keras 2 `save_weights` layout (root `layer_names`);
- `write_keras3_weights`: Keras 3 `layers/<key>/vars/<i>` layout (optionally without the `name`
  attributes of older Keras 3 versions);
- `write_keras_zip`: a `.keras` archive.
Every writer takes overrides so that the error tests can damage exactly one thing.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field

import h5py
import numpy as np


@dataclass
class Layer:
    name: str
    class_name: str
    config: dict
    inbound: list = field(default_factory=list)
    weights: list = field(default_factory=list)  # [(short name e.g. "kernel", array)]


def _snake(class_name):
    s = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def tiny_layers(seed=0, input_shape=(6, 6, 2), activation="relu"):
    """Input -> Conv2D(3, 3x3, activation) -> BatchNormalization -> Flatten -> Dense(2, softmax)."""
    rng = np.random.RandomState(seed)
    h, w, c = input_shape
    f32 = np.float32
    kernel = rng.randn(3, 3, c, 3).astype(f32)
    return [
        Layer("inp", "InputLayer", {"shape": [None, h, w, c]}),
        Layer("conv", "Conv2D", {"filters": 3, "kernel_size": [3, 3], "strides": [1, 1],
                                 "padding": "valid", "data_format": "channels_last",
                                 "dilation_rate": [1, 1], "activation": activation,
                                 "use_bias": True},
              ["inp"], [("kernel", kernel), ("bias", rng.randn(3).astype(f32))]),
        Layer("bn", "BatchNormalization", {"axis": -1, "epsilon": 0.001, "center": True,
                                           "scale": True},
              ["conv"], [("gamma", rng.uniform(0.5, 2, 3).astype(f32)),
                         ("beta", rng.randn(3).astype(f32)),
                         ("moving_mean", rng.randn(3).astype(f32)),
                         ("moving_variance", rng.uniform(0.5, 2, 3).astype(f32))]),
        Layer("flat", "Flatten", {"data_format": "channels_last"}, ["bn"]),
        Layer("fc", "Dense", {"units": 2, "activation": "softmax", "use_bias": True}, ["flat"],
              [("kernel", rng.randn((h - 2) * (w - 2) * 3, 2).astype(f32)),
               ("bias", rng.randn(2).astype(f32))]),
    ]


def _entry(layer, dialect, functional):
    cfg = dict(layer.config)
    cfg["name"] = layer.name
    if layer.class_name == "InputLayer":
        shape = cfg.pop("shape")
        cfg["batch_shape" if dialect == "keras3" else "batch_input_shape"] = shape
        cfg["dtype"] = "float32"
    elif dialect == "keras3":
        cfg.setdefault("dtype", {"module": "keras", "class_name": "DTypePolicy",
                                 "config": {"name": "float32"}, "registered_name": None})
    entry = {"class_name": layer.class_name, "config": cfg}
    if dialect == "keras3":
        entry = {"module": "keras.layers", **entry, "registered_name": None}
    if functional:
        entry["name"] = layer.name
        if layer.class_name == "InputLayer":
            entry["inbound_nodes"] = []
        elif dialect == "keras3":
            tensors = [{"class_name": "__keras_tensor__",
                        "config": {"shape": None, "dtype": "float32",
                                   "keras_history": [src, 0, 0]}} for src in layer.inbound]
            entry["inbound_nodes"] = [{"args": [tensors if len(tensors) > 1 else tensors[0]],
                                       "kwargs": {}}]
        else:
            entry["inbound_nodes"] = [[[src, 0, 0, {}] for src in layer.inbound]]
    return entry


def config(layers, dialect="keras2", kind="Functional", name="tiny", outputs=None):
    """The model config dict. kind: "Functional" ("Model" in the Keras 2 dialect) or
    "Sequential"."""
    functional = kind != "Sequential"
    entries = [_entry(lay, dialect, functional) for lay in layers]
    if not functional:
        cfg = {"name": name, "layers": entries}
        return {"class_name": "Sequential", "config": cfg}
    inputs = [lay.name for lay in layers if lay.class_name == "InputLayer"]
    outputs = outputs or [layers[-1].name]
    if dialect == "keras3":
        ins = [[n, 0, 0] for n in inputs]
        outs = [[n, 0, 0] for n in outputs]
        cfg = {"name": name, "trainable": True, "layers": entries,
               "input_layers": ins[0] if len(ins) == 1 else ins,
               "output_layers": outs[0] if len(outs) == 1 else outs}
        return {"module": "keras.src.models.functional", "class_name": "Functional",
                "config": cfg, "registered_name": "Functional"}
    cfg = {"name": name, "layers": entries, "input_layers": [[n, 0, 0] for n in inputs],
           "output_layers": [[n, 0, 0] for n in outputs]}
    return {"class_name": "Model", "config": cfg}


def _weight_name(layer, short, dialect):
    return f"{layer}_1/{short}:0" if dialect == "keras2" else f"{layer}/{short}"


def _write_layer_groups(root, layers, dialect, drop_groups=(), drop_datasets=(), chunk=False,
                        replace=None):
    names = [lay.name for lay in layers]
    _set_str_list(root, "layer_names", names, chunk)
    for lay in layers:
        if lay.name in drop_groups:
            continue
        g = root.create_group(lay.name)
        wnames = [_weight_name(lay.name, short, dialect) for short, _ in lay.weights]
        _set_str_list(g, "weight_names", wnames, chunk)
        for (short, arr), wn in zip(lay.weights, wnames):
            if (lay.name, short) in drop_datasets:
                continue
            if replace and (lay.name, short) in replace:
                arr = replace[(lay.name, short)]
            g.create_dataset(wn, data=arr)


def _set_str_list(group, key, values, chunk):
    data = np.array([v.encode() for v in values], dtype="S") if values else np.zeros((0,))
    if chunk and len(values) > 1:
        half = len(values) // 2
        group.attrs[f"{key}0"] = data[:half]
        group.attrs[f"{key}1"] = data[half:]
    else:
        group.attrs[key] = data


def write_legacy_h5(path, layers, dialect="keras2", kind="Functional", keras_version=None,
                    model_config=None, with_config=True, with_weights=True, drop_groups=(),
                    drop_datasets=(), chunk=False, replace=None, outputs=None):
    """Legacy full-model HDF5. model_config: a dict or raw text replacing the generated config."""
    keras_version = keras_version or ("2.0.5" if dialect == "keras2" else "3.15.1")
    cfg = model_config if model_config is not None else config(layers, dialect, kind,
                                                               outputs=outputs)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = keras_version
        f.attrs["backend"] = "tensorflow"
        if with_config:
            f.attrs["model_config"] = cfg if isinstance(cfg, str) else json.dumps(cfg)
        if with_weights:
            mw = f.create_group("model_weights")
            _write_layer_groups(mw, layers, dialect, drop_groups, drop_datasets, chunk, replace)
    return path


def write_legacy_weights_h5(path, layers, dialect="keras2", keras_version="2.4.0", **kw):
    """Keras 2 `save_weights("w.h5")`: root attribute layer_names, layer groups at the root."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = keras_version
        f.attrs["backend"] = "tensorflow"
        _write_layer_groups(f, layers, dialect, **kw)
    return path


def _keras3_weights(f, layers, kind, name_attrs=True, drop_layers=(), extra=None):
    listed = [lay for lay in layers
              if not (kind == "Sequential" and lay.class_name == "InputLayer")]
    used = {}
    top = f.create_group("layers")
    for lay in listed:
        base = _snake(lay.class_name)
        n = used.get(base, 0)
        used[base] = n + 1
        key = base if n == 0 else f"{base}_{n}"
        if lay.name in drop_layers:
            continue
        v = top.create_group(key).create_group("vars")
        if name_attrs:
            v.attrs["name"] = lay.name
        arrays = [a for _, a in lay.weights] + list((extra or {}).get(lay.name, []))
        for i, arr in enumerate(arrays):
            v.create_dataset(str(i), data=arr)
    f.create_group("vars").attrs["name"] = "tiny"


def write_keras3_weights(path, layers, kind="Functional", **kw):
    with h5py.File(path, "w") as f:
        _keras3_weights(f, layers, kind, **kw)
    return path


def write_architecture(path, layers, dialect="keras3", kind="Functional", outputs=None):
    with open(path, "w") as f:
        json.dump(config(layers, dialect, kind, outputs=outputs), f)
    return path


def write_keras_zip(path, layers, kind="Functional", members=("config.json", "metadata.json",
                                                              "model.weights.h5"),
                    model_config=None, **kw):
    """A `.keras` archive. model_config: a dict, or raw text or bytes replacing config.json."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        _keras3_weights(f, layers, kind, **kw)
    cfg = model_config if model_config is not None else config(layers, "keras3", kind)
    content = {"config.json": cfg if isinstance(cfg, (str, bytes)) else json.dumps(cfg),
               "metadata.json": json.dumps({"keras_version": "3.15.1"}),
               "model.weights.h5": buf.getvalue()}
    with zipfile.ZipFile(path, "w") as z:
        for m in members:
            z.writestr(m, content[m])
    return path


def reference_forward(layers, x):
    """NumPy float64 forward pass of `tiny_layers` (the model above), independent of refq."""
    conv, bn, _, fc = layers[1:]
    k = conv.weights[0][1].astype(np.float64)
    b = conv.weights[1][1].astype(np.float64)
    n, h, w, _ = x.shape
    y = np.zeros((n, h - 2, w - 2, k.shape[3]))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nhwc,co->nhwo", x[:, i:i + h - 2, j:j + w - 2, :], k[i, j])
    y = y + b
    act = conv.config["activation"]
    if act == "relu":
        y = np.maximum(y, 0)
    elif act != "linear":
        raise ValueError(f"reference_forward knows relu and linear, not {act!r}")
    gamma, beta, mean, var = (a.astype(np.float64) for _, a in bn.weights)
    y = (y - mean) / np.sqrt(var + bn.config["epsilon"]) * gamma + beta
    y = y.reshape(n, -1) @ fc.weights[0][1].astype(np.float64) + fc.weights[1][1]
    e = np.exp(y - y.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---- damaging one thing in a written file ------------------------------------------------------
def one_layer(class_name, cfg, weights=(), shape=(4,), name="L"):
    """Input(shape) -> one layer `name` of `class_name` with config `cfg` and `weights`."""
    return [Layer("inp", "InputLayer", {"shape": [None, *shape]}),
            Layer(name, class_name, dict(cfg), ["inp"], list(weights))]


def set_attr(path, group, key, value, utf8=False):
    """Overwrite the attribute `key` of `group` in the HDF5 file `path`. `value` bytes are stored
    as they are: fixed-length bytes, or with `utf8` a variable-length string marked UTF-8 (so
    that bytes which are not UTF-8 reach the reader as h5py gives them)."""
    with h5py.File(path, "r+") as f:
        g = f[group]
        if key in g.attrs:
            del g.attrs[key]
        if utf8:
            g.attrs.create(key, data=value, dtype=h5py.string_dtype("utf-8"))
        else:
            g.attrs[key] = value
    return path


def _central_entries(data, member):
    """Offsets of the central-directory entries of `member` in zip bytes `data`."""
    out, pos, name = [], data.find(b"PK\x01\x02"), member.encode()
    while pos != -1:
        n = int.from_bytes(data[pos + 28:pos + 30], "little")
        if data[pos + 46:pos + 46 + n] == name:
            out.append(pos)
        pos = data.find(b"PK\x01\x02", pos + 4)
    return out


def declare_zip_size(path, member, size):
    """Patch the central directory so that `member` declares `size` uncompressed bytes."""
    data = bytearray(open(path, "rb").read())
    for pos in _central_entries(bytes(data), member):
        data[pos + 24:pos + 28] = size.to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path


def corrupt_zip_member(path, member):
    """Flip one byte inside the stored data of `member` (the CRC check then fails)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    data = bytearray(open(path, "rb").read())
    off = info.header_offset
    start = off + 30 + int.from_bytes(data[off + 26:off + 28], "little") \
        + int.from_bytes(data[off + 28:off + 30], "little")
    data[start + info.compress_size // 2] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path
