"""Keras model configs: the two config dialects and the two model kinds, read into one topology.

Model kinds (`class_name` of the model config):
- `Sequential`: `config` is `{"name", "layers": [...]}` (Keras 2.2.3+ and Keras 3) or a bare layer
  list (Keras 2.0-2.2). The first layer is an `InputLayer`, or carries `batch_input_shape`
  (Keras 2) / the model carries `build_input_shape`; every other layer reads the previous one.
- `Model` (Keras 2) / `Functional` (Keras 3): `config` has `layers`, `input_layers`,
  `output_layers`; each layer lists its callers in `inbound_nodes`.

Config dialects, recognised per file (`keras3` when any layer shows a Keras 3 feature):
- Keras 2: `InputLayer.config.batch_input_shape`; `inbound_nodes` is a list of calls, each a list
  of `[layer_name, node_index, tensor_index, kwargs]`; `input_layers`/`output_layers` are lists
  of `[name, 0, 0]`; `dtype` is a string.
- Keras 3: `InputLayer.config.batch_shape`; each call is `{"args": [...], "kwargs": {...}}` where
  the inputs are `{"class_name": "__keras_tensor__", "config": {"keras_history": [name, 0, 0]}}`
  (merge layers pass a list of them as the first argument); a single input or output layer is
  given as a flat `[name, 0, 0]`; `dtype` is a policy dict (Keras >= 3.4; a string before).
  Layers carry `module` and `registered_name` (so do tf.keras 2.13+ configs).

Only the topology is read here (names, classes, configs, who reads whom); layer semantics live in
`keras_layers`. Problems that make a layer unimportable (a layer called more than once, a nested
model) are collected in `ModelSpec.problems`, so that one error can list all of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import FormatError, GraphError
from .keras_fields import INT_LIMIT, show

__all__ = ["LayerSpec", "ModelSpec", "parse_model", "config_layers", "layer_name"]

MODEL_CLASSES = ("Sequential", "Model", "Functional")


def config_layers(model_config: dict) -> list:
    """The layer list of a Sequential or Functional config (Keras 2.0-2.2 Sequential: a bare
    list)."""
    cfg = model_config.get("config")
    if isinstance(cfg, list):
        return cfg
    if isinstance(cfg, dict) and isinstance(cfg.get("layers"), list):
        return cfg["layers"]
    return []


def layer_name(entry: dict) -> str:
    """The name of one layer entry of a config (top-level `name`, else `config.name`)."""
    name = entry.get("name")
    if not isinstance(name, str) and isinstance(entry.get("config"), dict):
        name = entry["config"].get("name")
    return name if isinstance(name, str) else ""


@dataclass
class LayerSpec:
    """One Keras layer: name, class, its config dict and the layers whose outputs it reads."""

    name: str
    class_name: str
    config: dict
    inbound: list
    entry: dict = field(default_factory=dict, repr=False)


@dataclass
class ModelSpec:
    """A model's topology, layers in an order where every layer comes after those it reads."""

    name: str
    kind: str
    dialect: str
    inputs: list          # [(name, shape tuple with None for the batch, dtype name)]
    layers: list          # [LayerSpec], InputLayers excluded
    outputs: list         # [layer name]
    problems: list = field(default_factory=list)  # [(layer, class, reason)]


def _is_keras3(entries: list) -> bool:
    """Keras 3 features: `batch_shape`, dict inbound nodes, dtype policy dicts. (`module` and
    `registered_name` are no signal: tf.keras 2.13+ writes them too.)"""
    for e in entries:
        if not isinstance(e, dict):
            continue
        cfg = e.get("config") if isinstance(e.get("config"), dict) else {}
        if "batch_shape" in cfg or isinstance(cfg.get("dtype"), dict):
            return True
        calls = e.get("inbound_nodes")
        if isinstance(calls, list) and any(isinstance(call, dict) for call in calls):
            return True
    return False


def _input_spec(name, cfg, where, cls="InputLayer", field_owner=None):
    """(name, shape, dtype) of a model input. The shape field (`batch_shape`, Keras 3, or
    `batch_input_shape`, Keras 2) is a list whose first entry (the batch) is null or an integer
    >= 1 and whose other entries are null (free) or integers >= 1; anything else is refused."""
    key = "batch_shape" if "batch_shape" in cfg else "batch_input_shape"
    shape = cfg.get(key)
    owner = field_owner or f"the input layer '{name}' ({cls})"
    if not isinstance(shape, (list, tuple)) or not shape:
        raise FormatError(f"{where}: {owner} has no batch_shape / batch_input_shape (found "
                          f"{show(shape)}); save the model with a fixed input shape "
                          "(keras.Input(shape=...))")
    for i, d in enumerate(shape):
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1
                              or d >= INT_LIMIT):
            raise FormatError(
                f"{where}: {owner}: {key}[{i}] is {show(d)}, not a positive integer or null; "
                f"the input shape is damaged: correct {key} or save the model again from Keras")
    dims = (None,) + tuple(shape[1:])
    dtype = cfg.get("dtype", "float32")
    if isinstance(dtype, dict):  # a dtype policy: {"class_name": "DTypePolicy", "config": {"name"}}
        dtype = (dtype.get("config") or {}).get("name", "float32")
    if dtype is None or (isinstance(dtype, str) and dtype.startswith("mixed_")):
        dtype = "float32"
    if not isinstance(dtype, str):
        raise FormatError(f"{where}: {owner}: dtype is {show(dtype)}, not a dtype name; correct "
                          "it or save the model again from Keras")
    return (name, dims, dtype)


def _refs_keras2(call, where, lname):
    refs = []
    if not isinstance(call, list):
        raise FormatError(f"{where}: layer '{lname}': cannot read inbound node {show(call)}; "
                          "the config is damaged: save the model again")
    for item in call:
        if not isinstance(item, list) or len(item) < 3 or not isinstance(item[0], str):
            raise FormatError(f"{where}: layer '{lname}': cannot read inbound reference "
                              f"{show(item)}, expected [layer_name, node_index, tensor_index, "
                              "kwargs]; the config is damaged: save the model again")
        refs.append((item[0], item[1], item[2]))
    return refs


def _collect_tensors(value, out):
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            hist = (value.get("config") or {}).get("keras_history")
            out.append(hist)
        else:
            for v in value.values():
                _collect_tensors(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect_tensors(v, out)


def _refs_keras3(call, where, lname):
    if isinstance(call, list):  # a Keras 2 style call inside a Keras 3 file
        return _refs_keras2(call, where, lname)
    if not isinstance(call, dict):
        raise FormatError(f"{where}: layer '{lname}': cannot read inbound node {show(call)}; "
                          "the config is damaged: save the model again")
    hist, kw_hist = [], []
    _collect_tensors(call.get("args", []), hist)
    _collect_tensors(call.get("kwargs", {}), kw_hist)
    if kw_hist:
        raise GraphError(f"{where}: layer '{lname}' receives tensors as keyword arguments "
                         f"({[h[0] for h in kw_hist if h]}), which refq does not support; pass "
                         "them positionally")
    refs = []
    for h in hist:
        if not isinstance(h, list) or len(h) < 3 or not isinstance(h[0], str):
            raise FormatError(f"{where}: layer '{lname}': cannot read keras_history {show(h)}; "
                              "the config is damaged: save the model again")
        refs.append((h[0], h[1], h[2]))
    return refs


def _endpoint_names(value, where, key):
    """`input_layers` / `output_layers` in either form -> [layer name]."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str) \
            and isinstance(value[1], int):
        value = [value]
    if isinstance(value, dict):
        value = list(value.values())
    names = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, list) and item and isinstance(item[0], str):
            if len(item) >= 3 and item[2] != 0:
                raise GraphError(f"{where}: {key} refers to output {show(item[2])} of layer "
                                 f"'{item[0]}'; only single-output layers are supported: "
                                 "rebuild the model and save it again")
            names.append(item[0])
        else:
            raise FormatError(f"{where}: cannot read the {key} entry {show(item)}, expected "
                              "[layer_name, 0, 0]; the config is damaged: save the model again")
    if not names:
        raise FormatError(f"{where}: the model config has no {key}; save the model again")
    return names


def _entry(e, where, i):
    """(name, class, config) of layer entry `i`: the class a string, the name a string without
    control characters, the config a JSON object."""
    if not isinstance(e, dict) or not isinstance(e.get("class_name"), str):
        raise FormatError(f"{where}: layer entry {i} of the model config is not a layer "
                          f"({show(e, 80)}); the config is damaged: save the model again")
    cls = e["class_name"]
    name = layer_name(e)
    if not name:
        raise FormatError(f"{where}: layer entry {i} ({show(cls)}) has no name; the config is "
                          "damaged: save the model again")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name + cls):
        raise FormatError(f"{where}: layer entry {i} has the name {show(name)} and class "
                          f"{show(cls)}, which hold control characters; the config is damaged: "
                          "rename the layer and save the model again")
    cfg = e.get("config")
    if not isinstance(cfg, dict):
        raise FormatError(f"{where}: layer '{name}' ({cls}) has the config {show(cfg)}, not a "
                          "JSON object; the config is damaged: save the model again")
    return name, cls, cfg


def parse_model(model_config: dict, where: str) -> ModelSpec:
    """Read a model config (either dialect, either kind) into a ModelSpec; `where` names the
    file."""
    kind = model_config.get("class_name")
    if kind not in MODEL_CLASSES:
        raise FormatError(f"{where}: the model class is {show(kind)}; only Sequential and "
                          "Functional (Keras 2 'Model') models can be imported, not subclassed "
                          "models: rebuild it with the functional API and save again")
    entries = config_layers(model_config)
    if not entries:
        raise FormatError(f"{where}: the model config has no layers; save the model again")
    cfg = model_config.get("config") if isinstance(model_config.get("config"), dict) else {}
    name = cfg.get("name") or "model"
    dialect = "keras3" if _is_keras3(entries) else "keras2"
    if kind == "Sequential":
        spec = _parse_sequential(entries, cfg, where, name, dialect)
    else:
        spec = _parse_functional(entries, cfg, where, name, dialect)
    spec.layers = _topological(spec, where)
    return spec


def _parse_sequential(entries, cfg, where, name, dialect):
    specs = [_entry(e, where, i) for i, e in enumerate(entries)]
    layers, inputs = [], []
    first_name, first_class, first_cfg = specs[0]
    if first_class == "InputLayer":
        inputs.append(_input_spec(first_name, first_cfg, where))
        specs = specs[1:]
    else:
        shape_cfg = dict(first_cfg)
        owner = f"the first layer '{first_name}' ({first_class})"
        if "batch_input_shape" not in shape_cfg and "batch_shape" not in shape_cfg:
            shape_cfg["batch_shape"] = cfg.get("build_input_shape")
            owner = "the Sequential model (build_input_shape, as batch_shape)"
        inputs.append(_input_spec(f"{first_name}_input", shape_cfg, where, first_class, owner))
    prev = inputs[0][0]
    for (lname, cls, lcfg), e in zip(specs, entries[len(entries) - len(specs):]):
        if cls == "InputLayer":
            raise FormatError(f"{where}: Sequential model has an InputLayer '{lname}' after "
                              "its first layer; the config is damaged")
        layers.append(LayerSpec(lname, cls, lcfg, [prev], e))
        prev = lname
    if not layers:
        raise FormatError(f"{where}: the Sequential model has no layers besides its input")
    return ModelSpec(name, "Sequential", dialect, inputs, layers, [prev])


def _parse_functional(entries, cfg, where, name, dialect):
    inputs, layers, problems, seen = [], [], [], set()
    read_refs = _refs_keras3 if dialect == "keras3" else _refs_keras2
    for i, e in enumerate(entries):
        lname, cls, lcfg = _entry(e, where, i)
        if lname in seen:
            raise FormatError(f"{where}: two layers are named '{lname}'; layer names must be "
                              "unique: rename one and save again")
        seen.add(lname)
        calls = e.get("inbound_nodes") or []
        if not isinstance(calls, list):
            raise FormatError(f"{where}: layer '{lname}' has inbound_nodes {show(calls)}, not a "
                              "list; the config is damaged: save the model again")
        if cls == "InputLayer":
            inputs.append(_input_spec(lname, lcfg, where))
            continue
        if len(calls) != 1:
            problems.append((lname, cls, "it is called %d times (a shared layer); refq imports "
                             "each layer applied once: give each use its own layer and save "
                             "the model again" % len(calls) if calls else
                             "it is not connected to any input: connect or remove it and save "
                             "the model again"))
            calls = calls[:1]
        refs = read_refs(calls[0], where, lname) if calls else []
        for src, node_index, tensor_index in refs:
            if node_index != 0 or tensor_index != 0:
                problems.append((lname, cls, f"it reads output {show(tensor_index)} of call "
                                 f"{show(node_index)} of layer '{src}'; shared or multi-output "
                                 "layers are not supported: give each use its own layer and "
                                 "save the model again"))
        layers.append(LayerSpec(lname, cls, lcfg, [r[0] for r in refs], e))
    input_names = _endpoint_names(cfg.get("input_layers"), where, "input_layers")
    outputs = _endpoint_names(cfg.get("output_layers"), where, "output_layers")
    by_name = {s[0]: s for s in inputs}
    missing = [n for n in input_names if n not in by_name]
    if missing:
        raise FormatError(f"{where}: input_layers names {missing}, which are not InputLayers of "
                          "the model; the config is damaged: save the model again")
    inputs = [by_name[n] for n in input_names]
    return ModelSpec(name, "Functional", dialect, inputs, layers, outputs, problems)


def _topological(spec: ModelSpec, where: str) -> list:
    """Layers reordered (stably) so that each comes after the layers it reads."""
    known = {s[0] for s in spec.inputs}
    names = {lay.name for lay in spec.layers}
    for lay in spec.layers:
        for src in lay.inbound:
            if src not in names and src not in known:
                raise GraphError(f"{where}: layer '{lay.name}' reads layer '{src}', which is not "
                                 "in the model; the config is damaged: save the model again")
    for out in spec.outputs:
        if out not in names and out not in known:
            raise GraphError(f"{where}: output_layers names '{out}', which is not a layer of "
                             "the model")
    order, pending = [], list(spec.layers)
    while pending:
        rest = [lay for lay in pending if not all(s in known for s in lay.inbound)]
        ready = [lay for lay in pending if all(s in known for s in lay.inbound)]
        if not ready:
            raise GraphError(f"{where}: the layers {[lay.name for lay in rest[:8]]} form a cycle")
        order.extend(ready)
        known.update(lay.name for lay in ready)
        pending = rest
    return order
