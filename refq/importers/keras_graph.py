"""Build a refq Graph from an opened Keras file: topology, unsupported-layer check, conversion.

Steps: read the topology (`keras_config.parse_model`); judge every layer from its config
(`keras_check.static_check`) and raise one error listing all that cannot be imported
(UnsupportedLayerError when one of them is a valid Keras layer refq does not import, FormatError
when all are damaged configs); convert the layers in topological order
(`keras_layers.CONVERTERS`), checking each layer's weights (count, shape, finite values) and each
new node against its op's schema, shape inference and parameter shapes as it is added (so an error
names the file, the Keras layer, the node and the dataset); finally `Graph.validate()`.

Every message is one line: the list of refused layers is inline, grouped by reason, and cut after
`MAX_LISTED` layers with "and N more".

The hard_sigmoid definition follows the Keras major version: the file's `keras_version` when it
has one, otherwise the config dialect (Keras 3 features -> 3, else 2).
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import FormatError, GraphError, ParamError, RefqError, ShapeError, \
    UnsupportedLayerError, one_line
from ..graph import Graph, Node, TensorSpec
from .keras_config import parse_model
from .keras_weights import keras_major
from .keras_check import static_check
from .keras_fields import BadField, Unsupported, verdict
from .keras_layers import CONVERTERS

__all__ = ["build_graph", "MAX_LISTED"]

MAX_LISTED = 5  # layers named in one "cannot be imported" message; the rest are counted


class _Weights(dict):
    """role -> array for one layer, remembering where each array came from."""

    def __init__(self, arrays: dict, labels: dict):
        super().__init__(arrays)
        self._labels = labels

    def label(self, role):
        return self._labels.get(role)


def _fmt_shape(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


class _Builder:
    def __init__(self, kf, spec):
        self.kf = kf
        self.spec = spec
        self.where = kf.where
        major = keras_major(kf.keras_version)
        self.keras_major = major if major is not None else (3 if spec.dialect == "keras3" else 2)
        self.shapes = {name: shape for name, shape, _ in spec.inputs}
        self.nodes = []
        self.layer_nodes = {}

    # -- used by converters
    def shape(self, tensor):
        return self.shapes[tensor]

    def weights(self, layer, roles) -> _Weights:
        lw = self.kf.weights(layer.name, layer.class_name)
        if lw is None:
            raise FormatError(
                f"{self.where}: there are no weights for layer '{layer.name}' "
                f"({layer.class_name}), which needs {len(roles)} ({', '.join(roles)}); the "
                f"weights do not belong to this architecture ({self.kf.config_source}): save the "
                "model and its weights together again")
        if len(lw.arrays) != len(roles):
            held = ", ".join(lw.labels) or "none"
            raise ParamError(
                f"{self.where}: layer '{layer.name}' ({layer.class_name}) needs {len(roles)} "
                f"weight(s) ({', '.join(roles)}) for its config, but '{lw.where}' holds "
                f"{len(lw.arrays)} ({held}); a weight is missing or the config does not match "
                "the weights: save the model again")
        w = _Weights(dict(zip(roles, lw.arrays)), dict(zip(roles, lw.labels)))
        for role in roles:
            arr = w[role]
            if arr.dtype.kind == "f":
                self.refuse_values(layer, w, role, ~np.isfinite(arr), "is not a finite number",
                                   "fix or retrain the model in Keras and save it again")
        return w

    def refuse_values(self, layer, w, role, bad, what, todo):
        """ParamError naming the first element where the boolean array `bad` holds, as
        `role[index] = value`, with the dataset it came from; nothing when `bad` is all False."""
        if not np.any(bad):
            return
        bad = np.asarray(bad).reshape(w[role].shape)
        index = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.ndim else ()
        element = f"{role}[{', '.join(map(str, index))}]" if index else role
        count = int(np.count_nonzero(bad))
        more = f", and {count - 1} more element(s)" if count > 1 else ""
        raise ParamError(
            f"{self.where}: layer '{layer.name}' ({layer.class_name}): the weight "
            f"{element} = {w[role][index]} {what} (dataset '{w.label(role)}'{more}); {todo}")

    def expect(self, layer, w, role, template):
        arr = w[role]
        if len(arr.shape) != len(template) or any(
                t is not None and d != t for d, t in zip(arr.shape, template)):
            raise ParamError(
                f"{self.where}: layer '{layer.name}' ({layer.class_name}): the weight "
                f"'{w.label(role)}' ({role}) has shape {_fmt_shape(arr.shape)}, but the layer "
                f"config implies {_fmt_shape(template)}; the weights do not match the "
                "architecture: save the model again")

    def emit(self, layer, parts, activation, labels=None):
        labels = labels or {}
        if activation is not None:
            parts = list(parts) + [("/act", activation[0], None, activation[1], {})]
        names, prev = [], None
        for i, (suffix, op, inputs, attrs, params) in enumerate(parts):
            name = layer.name + suffix
            if i == len(parts) - 1:
                out = layer.name
            else:
                out = f"{layer.name}/preact" if name == layer.name else name
            node = Node(name, op, list(prev if inputs is None else inputs), [out], dict(attrs),
                        dict(params))
            self._add(layer, node, {p: labels.get(f"{suffix} {p}", labels.get(p))
                                    for p in params})
            names.append(name)
            prev = [out]
        self.layer_nodes[layer.name] = names

    # -- internal
    def _check_input_channels(self, where, node, in_shapes, labels):
        """ParamError when a weight was made for another number of input channels."""
        if not node.params or len(in_shapes) != 1 or not in_shapes[0]:
            return
        c = in_shapes[0][-1]
        if c is None:
            return
        if node.op == "conv2d":
            made_for = node.params["weight"].shape[-1] * int(node.attrs.get("groups", 1))
            pname = "weight"
        elif node.op == "dense":
            made_for, pname = node.params["weight"].shape[-1], "weight"
        elif node.op == "batch_norm":
            bad = [p for p, a in node.params.items() if a.shape != (c,)]
            made_for, pname = (node.params[bad[0]].shape[0], bad[0]) if bad else (c, None)
        else:
            return
        if made_for != c:
            raise ParamError(
                f"{where}: the weight '{labels.get(pname)}' (refq '{pname}', shape "
                f"{_fmt_shape(node.params[pname].shape)}) is made for {made_for} input channels, "
                f"but the input '{node.inputs[0]}' has shape {_fmt_shape(in_shapes[0])} with {c}; "
                "the weights do not match the architecture: save the model again")

    def _add(self, layer, node, labels):
        from ..ops import get_op

        where = (f"{self.where}: layer '{layer.name}' ({layer.class_name}), node '{node.name}' "
                 f"({node.op})")
        op = get_op(node.op, where=where)
        in_shapes = [self.shapes[t] for t in node.inputs]
        self._check_input_channels(where, node, in_shapes, labels)
        try:
            op.check_arity(len(node.inputs), where)
            node.attrs = op.normalise_attrs(node.attrs, where)
            out = op.infer_shape(in_shapes, node.attrs, node.params)
            expected = op.param_shapes(in_shapes, node.attrs)
        except ShapeError as e:
            raise ShapeError(f"{where}: {one_line(e, 160)} (input shapes "
                             f"{[_fmt_shape(s) for s in in_shapes]}); the layer config does not "
                             "fit its inputs: correct it and save the model again") from None
        except GraphError as e:
            msg = one_line(e, 160)
            raise GraphError(msg if msg.startswith(where) else f"{where}: {msg}") from None
        for pname, want in expected.items():
            have = node.params.get(pname)
            if have is not None and tuple(have.shape) != tuple(want):
                raise ParamError(
                    f"{where}: the weight '{labels.get(pname)}' gives refq parameter '{pname}' "
                    f"the shape {_fmt_shape(have.shape)}, but the input(s) "
                    f"{', '.join(repr(t) for t in node.inputs)} of shape "
                    f"{', '.join(_fmt_shape(s) for s in in_shapes)} need {_fmt_shape(want)}; the "
                    "weights do not match the architecture: save the model again")
        self.shapes[node.outputs[0]] = tuple(out)
        self.nodes.append(node)


def _problems_message(where, problems):
    """One line naming the refused layers, grouped by reason; after `MAX_LISTED` layers the rest
    are counted by class ("and 3 more (Lambda x2, MyLayer)")."""
    groups = {}
    for lname, cls, reason in problems:
        groups.setdefault(reason, []).append((lname, cls))
    parts, hidden, listed = [], [], 0
    for reason, layers in groups.items():
        room = MAX_LISTED - listed
        shown, rest = layers[:room], layers[room:]
        hidden += rest
        listed += len(shown)
        if shown:
            parts.append((reason, shown))
    text = "; ".join(", ".join(f"'{lname}' ({cls})" for lname, cls in shown) + f": {reason}"
                     for reason, shown in parts)
    if hidden:
        tally = {}
        for _, cls in hidden:
            tally[cls] = tally.get(cls, 0) + 1
        text += f"; and {len(hidden)} more (" + ", ".join(
            cls if k == 1 else f"{cls} x{k}" for cls, k in tally.items()) + ")"
    n = len(problems)
    return f"{where}: {n} layer{'s' if n != 1 else ''} cannot be imported: {text}"


def _problems_error(where, problems):
    """UnsupportedLayerError, or FormatError when every problem is a damaged config."""
    text = _problems_message(where, [(lname, cls, reason) for lname, cls, _, reason in problems])
    if all(kind == "damaged" for _, _, kind, _ in problems):
        return FormatError(text)
    return UnsupportedLayerError(text)


# Errors a damaged config can provoke in plain Python code that reads it (a string where a list
# was expected, a missing key, ...). They are reported as FormatError naming the layer.
_MALFORMED = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
              RecursionError)


def _malformed(where, layer, e):
    what = f"layer '{layer.name}' ({layer.class_name})" if layer is not None else "the model config"
    return FormatError(f"{where}: {what} has a malformed config ({type(e).__name__}: "
                       f"{one_line(e, 160)}); the config is damaged or from an unsupported Keras "
                       "version: save the model again")


def build_graph(kf) -> Graph:
    """The validated Graph of an opened `KerasFile`."""
    source = str(kf.config_source)
    try:
        spec = parse_model(kf.config, source)
    except _MALFORMED as e:
        raise _malformed(source, None, e) from None
    problems = [(lname, cls, "unsupported", reason) for lname, cls, reason in spec.problems]
    for layer in spec.layers:
        try:
            refusal = static_check(layer)
        except _MALFORMED as e:
            raise _malformed(source, layer, e) from None
        if refusal:
            problems.append((layer.name, layer.class_name) + refusal)
    if problems:
        raise _problems_error(source, problems)

    b = _Builder(kf, spec)
    for layer in spec.layers:
        convert = CONVERTERS[layer.class_name][0]
        try:
            convert(b, layer, list(layer.inbound))
        except (Unsupported, BadField) as e:
            raise _problems_error(source, [(layer.name, layer.class_name) + verdict(e)]) from None
        except _MALFORMED as e:
            raise _malformed(source, layer, e) from None

    graph = Graph(
        inputs=[TensorSpec(name, shape, dtype) for name, shape, dtype in spec.inputs],
        outputs=list(spec.outputs),
        nodes=b.nodes,
        name=spec.name,
        meta={"source": {"format": "keras", "file": os.path.basename(str(kf.path)),
                         "dialect": kf.dialect, "config_dialect": spec.dialect,
                         "keras_version": kf.keras_version, "keras_major": b.keras_major},
              "keras_layers": b.layer_nodes},
    )
    try:
        return graph.validate()
    except RefqError as e:
        raise type(e)(f"{kf.where}: {one_line(e, 160)}") from None
