"""The stored quantization simulation: the `/encodings` section of a .refq.h5 file (version 3),
its schema and its checks.

`section_json(sim)` gives the document: settings, the quantsim config itself (its checked JSON
document and display name, never a path of the machine that made the file), placement and every
quantizer with its encoding. `sim_from_section(cls, graph, doc, source)` rebuilds the simulation on
`graph` without re-placing quantizers. Reading checks every key against `_SECTION_SCHEMA`: unknown,
missing or mistyped keys are a QuantError naming the file and the key path; then
`check_against_graph` checks that every quantizer fits the graph (its node, parameter, input and
tensors exist; a per-channel encoding has the parameter's channel count). Version 3 records for
each quantizer whether its encoding is frozen (`QuantSim.freeze`); version 2 sections (none
frozen) and version 1 sections (a `config_source` string instead of the config, which is then
unknown) are still read. Version 4 is version 3 with blocked weights: each quantizer has the key
`block_size` (an integer >= 1, or null) and blocked encodings carry `block_axis`/`block_size`
(`Encoding.to_json`); it is written only when a quantizer or an encoding is blocked, so a
simulation without blocked weights is stored exactly as before (version 3).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..errors import QuantError
from ..graph import Graph
from ..model_io.strict_json import is_json_int
from .analyzers import ANALYZERS
from .config import parse_config
from .encoding import Encoding, EncodingNumerics
from .placement import QuantizerSpec, require_float_model

__all__ = ["section_json", "sim_from_section", "check_against_graph"]


def _numerics_json(n: EncodingNumerics) -> dict:
    d = dataclasses.asdict(n)
    d["dtype"] = np.dtype(n.dtype).name
    return d


def _kind(desc, pred):
    return (desc, pred)



_INT = _kind("an integer", is_json_int)
_BOOL = _kind("true or false", lambda v: isinstance(v, bool))
_STR = _kind("a string", lambda v: isinstance(v, str))
_OBJ = _kind("an object", lambda v: isinstance(v, dict))
_LIST = _kind("a list", lambda v: isinstance(v, list))
_OPT_STR = _kind("a string or null", lambda v: v is None or isinstance(v, str))
_OPT_INT = _kind("an integer or null", lambda v: v is None or is_json_int(v))
_BLOCK = _kind("an integer >= 1 or null", lambda v: v is None or (is_json_int(v) and v >= 1))
_NUMBER = (int, float)
_SETTINGS = {"param_bw": _INT, "act_bw": _INT, "scheme": _STR, "scheme_options": _OBJ,
             "numerics": _OBJ, "overflow_protection": _BOOL, "detect_prequantized": _BOOL}
_CONFIG = _kind('null or {"name": string, "document": object}',
                lambda v: v is None or (isinstance(v, dict) and set(v) == {"name", "document"}
                                        and isinstance(v["name"], str)
                                        and isinstance(v["document"], dict)))
_QUANTIZER = {
    "name": _STR, "kind": _kind('"activation", "input" or "param"',
                                lambda v: v in ("activation", "input", "param")),
    "bitwidth": _INT, "symmetric": _BOOL,
    "tensors": _kind("a list of strings",
                     lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v)),
    "node": _OPT_STR, "param": _OPT_STR, "input_index": _OPT_INT, "axis": _OPT_INT,
    "strict": _BOOL, "unsigned_symmetric": _BOOL,
    "fixed_range": _kind("null or [min, max]", lambda v: v is None or (
        isinstance(v, list) and len(v) == 2
        and all(isinstance(x, _NUMBER) and not isinstance(x, bool) for x in v))),
    "enabled": _BOOL, "encoding": _kind("an object or null",
                                        lambda v: v is None or isinstance(v, dict)),
}
_SECTION_SCHEMA = {
    "format": _kind('"refq-quantsim"', lambda v: v == "refq-quantsim"),
    "version": _kind("1, 2, 3 or 4", lambda v: is_json_int(v) and v in (1, 2, 3, 4)),
    "settings": {4: dict(_SETTINGS, config=_CONFIG), 3: dict(_SETTINGS, config=_CONFIG),
                 2: dict(_SETTINGS, config=_CONFIG), 1: dict(_SETTINGS, config_source=_STR)},
    "placement": {"supergroups": _LIST, "fused_batch_norms": _OBJ, "shared": _LIST,
                  "activation_quantizers": _INT, "param_quantizers": _INT},
    "quantizers": {4: [dict(_QUANTIZER, frozen=_BOOL, block_size=_BLOCK)],
                   3: [dict(_QUANTIZER, frozen=_BOOL)], 2: [_QUANTIZER], 1: [_QUANTIZER]},
}
"""The keys of the stored quantsim section, each with what its value must be; `settings` and
`quantizers` depend on the section's version."""


def _check_value(value, schema, path, where, hint):
    at = f"{where}, {path}" if path else where
    if isinstance(schema, tuple):
        desc, pred = schema
        if not pred(value):
            raise QuantError(f"{at}: expected {desc}, got {value!r:.80}{hint}")
        return
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise QuantError(f"{at}: expected a list, got {value!r:.80}{hint}")
        for i, item in enumerate(value):
            _check_value(item, schema[0], f"{path}[{i}]", where, hint)
        return
    if not isinstance(value, dict):
        raise QuantError(f"{at}: expected an object, got {value!r:.80}{hint}")
    unknown = [k for k in value if k not in schema]
    missing = [k for k in schema if k not in value]
    if unknown or missing:
        what = f"unknown key '{unknown[0]}'" if unknown else f"missing key '{missing[0]}'"
        raise QuantError(f"{at}: {what}; allowed keys: {sorted(schema)}{hint}")
    for key, sub in schema.items():
        _check_value(value[key], sub, f"{path}.{key}" if path else key, where, hint)


def _check_section(doc, where, hint):
    """QuantError naming the key path unless `doc` follows `_SECTION_SCHEMA`."""
    if not isinstance(doc, dict):
        raise QuantError(f"{where}: expected a JSON object, got {type(doc).__name__}{hint}")
    for key in ("format", "version"):
        if key not in doc:
            raise QuantError(f"{where}: missing key '{key}'; allowed keys: "
                             f"{sorted(_SECTION_SCHEMA)}{hint}")
        _check_value(doc[key], _SECTION_SCHEMA[key], key, where, hint)
    v = doc["version"]
    schema = dict(_SECTION_SCHEMA, settings=_SECTION_SCHEMA["settings"][v],
                  quantizers=_SECTION_SCHEMA["quantizers"][v])
    _check_value(doc, schema, "", where, hint)


def section_json(sim) -> dict:
    """The `/encodings` section of QuantSim `sim`: version 3, or 4 when a weight is blocked; see
    the module docstring."""
    config = None if sim.config is None else {"name": sim.config.name,
                                              "document": sim.config.to_json()}
    blocked = any(q.block_size is not None for q in sim.quantizers.values()) or \
        any(e.is_blocked for e in sim.encodings.values())
    extra = (lambda q: {"block_size": q.block_size}) if blocked else (lambda q: {})
    return {
        "format": "refq-quantsim", "version": 4 if blocked else 3,
        "settings": {"param_bw": sim.param_bw, "act_bw": sim.act_bw, "scheme": sim.scheme,
                     "scheme_options": sim.scheme_options,
                     "numerics": _numerics_json(sim.numerics),
                     "overflow_protection": sim.overflow_protection,
                     "detect_prequantized": sim.detect_prequantized,
                     "config": config},
        "placement": sim.placement,
        "quantizers": [dict(q.to_json(), enabled=sim.enabled[q.name],
                            encoding=(sim.encodings[q.name].to_json()
                                      if q.name in sim.encodings else None),
                            frozen=q.name in sim.frozen, **extra(q))
                       for q in sim.quantizers.values()],
    }


def sim_from_section(cls, graph: Graph, doc: dict, source: str):
    """A `cls` (QuantSim) on `graph` from section `doc`, checked key by key and against the graph;
    QuantError naming `source` and the key path."""
    where = f"{source}: quantsim section"
    hint = "; re-quantize the model with `refq quantize`"
    _check_section(doc, where, hint)
    s = doc["settings"]
    nd = dict(s["numerics"])
    try:
        nd["dtype"] = np.dtype(nd["dtype"])
        numerics = EncodingNumerics(**nd)
    except (TypeError, ValueError, QuantError) as e:
        raise QuantError(f"{where}, settings.numerics: {e}{hint}") from None
    if s["scheme"] not in ANALYZERS:
        raise QuantError(f"{where}, settings.scheme: unknown scheme {s['scheme']!r}; known: "
                         f"{', '.join(ANALYZERS)}{hint}")
    sim = cls.__new__(cls)
    require_float_model(graph, "a quantization simulation", "the simulation belongs to the "
                        "float model; re-quantize the float model with `refq quantize`")
    graph.validate()
    sim.graph = graph.copy()
    if doc["version"] == 1:   # a path in the file; the config itself was not kept
        sim.config = None
        sim.config_source = os.path.basename(str(s["config_source"]))
    elif s["config"] is None:
        sim.config, sim.config_source = None, "<unknown>"
    else:
        sim.config = parse_config(s["config"]["document"],
                                  source=f"{where}, settings.config.document",
                                  name=s["config"]["name"])
        sim.config_source = sim.config.name
    sim.param_bw, sim.act_bw = s["param_bw"], s["act_bw"]
    sim.scheme, sim.scheme_options = s["scheme"], dict(s["scheme_options"])
    sim.numerics = numerics
    sim.overflow_protection = s["overflow_protection"]
    sim.detect_prequantized = s["detect_prequantized"]
    sim.placement = doc["placement"]
    sim.quantizers, sim.enabled, sim.encodings, sim.frozen = {}, {}, {}, set()
    sim._calibration = None
    for i, qd in enumerate(doc["quantizers"]):
        qd = dict(qd)
        enabled, enc = qd.pop("enabled"), qd.pop("encoding")
        if qd.pop("frozen", False):
            if enc is None:
                raise QuantError(f"{where}, quantizers[{i}] ('{qd['name']}'): frozen without an "
                                 f"encoding{hint}")
            sim.frozen.add(qd["name"])
        q = QuantizerSpec.from_json(qd)
        if q.name in sim.quantizers:
            raise QuantError(f"{where}, quantizers[{i}]: the name '{q.name}' appears twice"
                             f"{hint}")
        sim.quantizers[q.name] = q
        sim.enabled[q.name] = enabled
        if enc is not None:
            try:
                sim.encodings[q.name] = Encoding.from_json(enc)
            except QuantError as e:
                raise QuantError(f"{where}, quantizers[{i}] ('{q.name}').encoding: {e}{hint}") \
                    from None
    check_against_graph(sim, source)
    return sim


def check_against_graph(sim, source) -> None:
    """QuantError naming the quantizer when the stored placement of `sim` does not fit its graph."""
    where = f"{source}: quantsim section"
    hint = "; the simulation does not belong to this graph: re-quantize with `refq quantize`"
    graph = sim.graph
    tensors = {s.name for s in graph.inputs} | {n.outputs[0] for n in graph.nodes}
    nodes = {n.name: n for n in graph.nodes}
    for q in sim.quantizers.values():
        what = f"{where}, quantizer '{q.name}'"
        enc = sim.encodings.get(q.name)
        if q.kind == "param":
            node = nodes.get(q.node)
            if node is None or q.param not in node.params:
                raise QuantError(f"{what} refers to parameter '{q.param}' of node "
                                 f"'{q.node}', which the graph lacks{hint}")
            shape = node.params[q.param].shape
            if (enc is not None and enc.is_blocked) or q.block_size is not None:
                _check_blocked(q, enc, shape, what, hint)
                continue
            if enc is not None and enc.axis is not None and (
                    not -len(shape) <= enc.axis < len(shape)
                    or enc.scale.shape[0] != shape[enc.axis]):
                raise QuantError(f"{what}: its encoding has {enc.scale.shape[0]} channels on "
                                 f"axis {enc.axis}; parameter '{q.param}' of node '{q.node}' "
                                 f"has shape {list(shape)}{hint}")
            continue
        if enc is not None and enc.axis is not None:
            raise QuantError(f"{what}: activation encodings are per tensor, this one has "
                             f"axis {enc.axis}{hint}")
        if q.block_size is not None:
            raise QuantError(f"{what}: blocked quantization applies to weights only, this "
                             f"activation quantizer has block_size {q.block_size}{hint}")
        if not q.tensors or (q.kind == "input" and len(q.tensors) != 1):
            raise QuantError(f"{what}: quantizes tensors {q.tensors}; an activation "
                             "quantizer needs at least one, an input quantizer exactly one"
                             f"{hint}")
        if q.kind == "input":
            node = nodes.get(q.node)
            if node is None or q.input_index is None or \
                    not 0 <= q.input_index < len(node.inputs):
                raise QuantError(f"{what} refers to input {q.input_index} of node "
                                 f"'{q.node}', which the graph lacks{hint}")
        missing = [t for t in q.tensors if t not in tensors]
        if missing:
            raise QuantError(f"{what} refers to tensors {missing}, which the graph lacks"
                             f"{hint}")


def _check_blocked(q, enc, shape, what, hint) -> None:
    """QuantError unless weight quantizer `q` and its encoding (None when not computed) agree on
    the block size and the encoding fits a parameter of `shape`."""
    if enc is None:
        return
    if q.block_size != enc.block_size:
        raise QuantError(f"{what}: block_size {q.block_size} of the quantizer differs from "
                         f"block_size {enc.block_size} of its encoding{hint}")
    try:
        enc.broadcast(shape)
    except QuantError as e:
        raise QuantError(f"{what}: {e}{hint}") from None
