"""QuantSim: quantization simulation of a refq graph, as AIMET 2.42's QuantizationSimModel runs it.

    sim = QuantSim(graph, config="per_channel", param_bw=8, act_bw=8, scheme="minmax")
    sim.compute_encodings(batches)          # an iterable of arrays (or {input: array} dicts)
    y = sim.run({"x": x})                   # quantize-dequantize at every placed quantizer

Placement follows `refq.quant.placement` (AIMET 2.42's rules). Calibration (aimet.md §0.2.6):
1. parameter encodings are computed from the weights (cast to float32, AIMET's parameter dtype);
   a symmetric weight that already is integer × scale keeps that scale (AIMET 2.42's pre-quantized
   weight detection, `refq.quant.prequantized`; `detect_prequantized=False` turns it off);
2. every batch runs with quantize-dequantized weights and *float* activations, while each activation
   quantizer's analyzer observes its tensors (a shared quantizer observes all of them);
3. activation encodings are finalised (a config's `encoding_constraints` fix the range with the
   min/max rule); then 4. AIMET's overflow protection re-snaps conv2d/dense weight scales.
The simulation forward runs in `numerics.dtype` (float32 for AIMET_V2): weights and every
quantized tensor are replaced by their fake-quantized values; biases stay float.

Overflow protection (§0.2.5, `_compute_encodings_with_overflow_protection`), for a conv2d/dense with
a quantized weight, an input encoding s_in (the tensor it reads is quantized) and its own output
quantizer (s_out, offset o_out = −zero_point), in float64:
    s' = max(s_w, |b| / ((2^31 − 2^15)·s_in))            bias must fit int32 (per channel)
    s' = max(s', 2^−23.5 · s_out / s_in)                  requantization underflow
    b_acc = round(b/(s_in s')) + round(o_out·s_out/(s_in s')); s' = max(s', |b_acc·s_in·s'| / ((2^31 − 2^15)·s_in))
    weight encoding <- set_range(s'·(qmin − zp), s'·(qmax − zp))   the re-snap, also when nothing
                                                          overflowed (zp = 0 for symmetric weights)
A per-tensor weight uses b = max|b| throughout (AIMET `true_quant.py`).
Without an output quantizer of its own (e.g. conv inside a Conv+Relu supergroup) nothing changes.

Inputs it refuses (QuantError, or InputError for shapes; one line naming the model, batch, input
or key): an integer model
(`refq.quant.placement.require_float_model`); calibration data that is empty (no batch, or a batch
of zero samples), a scalar, of the wrong rank or shape, of a non-real dtype (complex, object,
strings, bool) or holding NaN/Inf (`check_calibration_batch`, naming the batch, its source file
and the input).

Persistence (`to_json` / `from_json`, the `/encodings` section of a .refq.h5, version 2): settings,
the quantsim config itself (its checked JSON document and display name, never a path of the machine
that made the file), placement and every quantizer with its encoding. Reading checks every key:
unknown, missing or mistyped keys are a QuantError naming the file and the key path. Version 1
sections (a `config_source` string instead of the config) are still read; their config is unknown.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..data_io import iterate_batches
from ..errors import InputError, QuantError
from ..graph import Graph
from ..progress import progress
from ..runtime import run as run_graph
from .analyzers import ANALYZERS, make_analyzer
from .config import QuantsimConfig, load_config, parse_config
from .encoding import AIMET_V2, Encoding, EncodingNumerics, encoding_from_min_max, \
    encoding_from_range, quantize_dequantize
from .placement import QuantizerSpec, place_quantizers, require_float_model
from .prequantized import prequantized_encoding

__all__ = ["QuantSim", "iterate_batches", "check_calibration_batch"]

_BIAS_LIMIT = 2.0 ** 31 - 2.0 ** 15
_UNDERFLOW = 2.0 ** -23.5


def _numerics_json(n: EncodingNumerics) -> dict:
    d = dataclasses.asdict(n)
    d["dtype"] = np.dtype(n.dtype).name
    return d


def check_calibration_batch(graph: Graph, feeds, where: str) -> dict:
    """{input name: array} of one calibration batch, checked: every array is a real (float or
    integer) array of the input's rank and declared sizes, with at least one sample and no NaN/Inf.
    Errors name `where` (the batch and its source) and the input: InputError for a scalar or a
    wrong shape, QuantError for a non-real dtype, no samples or NaN/Inf. Missing or unknown input
    names are left to `refq.runtime.run` (InputError)."""
    out = dict(feeds)
    for spec in graph.inputs:
        if spec.name not in feeds:
            continue
        x = np.asarray(feeds[spec.name])
        want = "[" + ", ".join("N" if d is None else str(d) for d in spec.shape) + "]"
        if x.dtype.kind not in "fiu":
            raise QuantError(f"{where}: input '{spec.name}' has dtype {x.dtype}; calibration data "
                             "is real numbers: save it as float32 (or an integer type)")
        if x.ndim == 0:
            raise InputError(f"{where}: input '{spec.name}' is a scalar; give an array of shape "
                             f"{want}, batch first")
        if x.ndim != len(spec.shape) or any(d is not None and d != n for d, n in
                                            zip(spec.shape[1:], x.shape[1:])):
            raise InputError(f"{where}: input '{spec.name}' has shape {list(x.shape)}, the model "
                             f"takes {want} (batch first)")
        if x.size == 0:
            raise QuantError(f"{where}: input '{spec.name}' is empty (shape {list(x.shape)}); give "
                             "at least one sample")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            bad = np.argwhere(~np.isfinite(x))[0].tolist()
            raise QuantError(f"{where}: input '{spec.name}' holds NaN or Inf (first at index "
                             f"{bad}); clean the calibration data")
        if x.dtype.kind in "iu" and spec.dtype.startswith("float"):
            x = x.astype(np.float64)  # integer data (e.g. uint8 images) of a float input
        out[spec.name] = x
    return out


# ---- the stored section: its schema ------------------------------------------------------------

def _kind(desc, pred):
    return (desc, pred)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


_INT = _kind("an integer", _is_int)
_BOOL = _kind("true or false", lambda v: isinstance(v, bool))
_STR = _kind("a string", lambda v: isinstance(v, str))
_OBJ = _kind("an object", lambda v: isinstance(v, dict))
_LIST = _kind("a list", lambda v: isinstance(v, list))
_OPT_STR = _kind("a string or null", lambda v: v is None or isinstance(v, str))
_OPT_INT = _kind("an integer or null", lambda v: v is None or _is_int(v))
_NUMBER = (int, float)
_SETTINGS = {"param_bw": _INT, "act_bw": _INT, "scheme": _STR, "scheme_options": _OBJ,
             "numerics": _OBJ, "overflow_protection": _BOOL, "detect_prequantized": _BOOL}
_SECTION_SCHEMA = {
    "format": _kind('"refq-quantsim"', lambda v: v == "refq-quantsim"),
    "version": _kind("1 or 2", lambda v: _is_int(v) and v in (1, 2)),
    "settings": {2: dict(_SETTINGS, config=_kind(
                     'null or {"name": string, "document": object}',
                     lambda v: v is None or (isinstance(v, dict) and set(v) == {"name", "document"}
                                             and isinstance(v["name"], str)
                                             and isinstance(v["document"], dict)))),
                 1: dict(_SETTINGS, config_source=_STR)},
    "placement": {"supergroups": _LIST, "fused_batch_norms": _OBJ, "shared": _LIST,
                  "activation_quantizers": _INT, "param_quantizers": _INT},
    "quantizers": [{
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
    }],
}
"""The keys of the stored quantsim section, each with what its value must be; `settings` depends
on the section's version."""


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
    schema = dict(_SECTION_SCHEMA, settings=_SECTION_SCHEMA["settings"][doc["version"]])
    _check_value(doc, schema, "", where, hint)


class QuantSim:
    """A graph with quantizers placed by an AIMET quantsim config. See the module docstring.

    config: a QuantsimConfig, a config dict, a JSON path, or a bundled name ('per_channel' =
      'default', 'per_tensor'); None = AIMET 2.42's default (per-channel).
    scheme: the analyzer for parameters and activations alike, as AIMET does: minmax | tf_enhanced |
      percentile | sqnr | mse; scheme_options go to the analyzer (e.g. {"percentile": 99.9}).
    """

    def __init__(self, graph: Graph, config=None, *, param_bw: int = 8, act_bw: int = 8,
                 scheme: str = "minmax", scheme_options: dict | None = None,
                 numerics: EncodingNumerics = AIMET_V2, overflow_protection: bool = True,
                 detect_prequantized: bool = True):
        require_float_model(graph, "quantization (`refq quantize`, QuantSim)",
                            "quantize the float model it was lowered from (`refq quantize "
                            "FLOAT.refq.h5 --calib DATA -o Q.refq.h5`)")
        graph.validate()
        if scheme not in ANALYZERS:
            raise QuantError(f"unknown scheme {scheme!r} (--scheme); known: {', '.join(ANALYZERS)}")
        if isinstance(config, QuantsimConfig):
            self.config = config
        elif isinstance(config, dict):
            self.config = parse_config(config)
        else:
            self.config = load_config(config)
        self.config_source = self.config.name  # a display name, never a path
        make_analyzer(scheme, None, **dict(scheme_options or {}))  # reject bad options early
        for what, bw in (("param_bw", param_bw), ("act_bw", act_bw)):
            if isinstance(bw, (bool, np.bool_)) or not isinstance(bw, (int, np.integer)) \
                    or not (2 <= bw <= 16 or bw == 32):
                raise QuantError(f"{what} (--{what.replace('_', '-')}) must be an integer in "
                                 f"2..16 (or 32), got {bw!r}")
        self.graph = graph.copy()
        self.param_bw, self.act_bw = int(param_bw), int(act_bw)
        self.scheme, self.scheme_options = scheme, dict(scheme_options or {})
        self.numerics = numerics
        self.overflow_protection = overflow_protection
        self.detect_prequantized = detect_prequantized
        specs, self.placement = place_quantizers(self.graph, self.config, param_bw, act_bw)
        self.quantizers = {q.name: q for q in specs}
        self.encodings: dict = {}
        self.enabled = {q.name: True for q in specs}

    # ---- lookups ----------------------------------------------------------------------------
    def _by_kind(self, kind):
        return [q for q in self.quantizers.values() if q.kind == kind]

    def tensor_quantizers(self) -> dict:
        """tensor name -> name of the activation quantizer that quantizes it."""
        return {t: q.name for q in self._by_kind("activation") for t in q.tensors}

    def input_quantizers(self) -> dict:
        """(node, input index) -> name of the input quantizer."""
        return {(q.node, q.input_index): q.name for q in self._by_kind("input")}

    def _encoding(self, name):
        try:
            return self.encodings[name]
        except KeyError:
            raise QuantError(f"quantizer '{name}' has no encoding; calibrate with `refq quantize "
                             "--calib DATA` (QuantSim.compute_encodings) or load AIMET encodings "
                             "(`refq quantize --load-encodings FILE`)") from None

    # ---- parameters -------------------------------------------------------------------------
    def _param_encoding(self, q: QuantizerSpec) -> Encoding:
        w = self.graph.node(q.node).params[q.param].astype(np.float32)
        if self.detect_prequantized and q.symmetric and not q.strict:
            enc = prequantized_encoding(w, q.bitwidth, axis=q.axis, numerics=self.numerics)
            if enc is not None:
                return enc
        a = make_analyzer(self.scheme, q.axis, **self.scheme_options)
        a.update(w)
        return a.compute_encoding(q.bitwidth, q.symmetric, numerics=self.numerics, strict=q.strict,
                                  unsigned_symmetric=q.unsigned_symmetric)

    def compute_param_encodings(self) -> None:
        """Encodings of every parameter quantizer, from the current weights."""
        for q in self._by_kind("param"):
            self.encodings[q.name] = self._param_encoding(q)

    def sim_params(self, enabled: dict | None = None) -> dict:
        """{node: {param: array}} with every enabled parameter quantizer applied."""
        enabled = self.enabled if enabled is None else enabled
        out = {}
        for q in self._by_kind("param"):
            if not enabled.get(q.name, False):
                continue
            node = self.graph.node(q.node)
            params = out.setdefault(q.node, dict(node.params))
            params[q.param] = quantize_dequantize(node.params[q.param], self._encoding(q.name),
                                                  self.numerics)
        return out

    # ---- calibration ------------------------------------------------------------------------
    def compute_encodings(self, data, batch_size: int | None = None, quiet: bool = True):
        """Calibrate on `data` (see `iterate_batches`), streaming batch by batch; return self."""
        self.compute_param_encodings()
        params = self.sim_params()
        tq, iq = self.tensor_quantizers(), self.input_quantizers()
        analyzers = {q.name: make_analyzer(self.scheme, None, **self.scheme_options)
                     for q in self.quantizers.values()
                     if q.kind != "param" and q.fixed_range is None}

        def observe(t, x):
            if t in tq and tq[t] in analyzers:
                analyzers[tq[t]].update(x)
            return x

        def observe_input(node, i, x):
            name = iq.get((node, i))
            if name in analyzers:
                analyzers[name].update(x)
            return x

        seen = 0
        for k, feeds in enumerate(progress(iterate_batches(data, self.graph, batch_size),
                                           desc="calibration", quiet=quiet)):
            src = getattr(feeds, "source", None)
            where = f"calibration batch {k}" + (f" (from {src})" if src else "")
            feeds = check_calibration_batch(self.graph, feeds, where)
            try:
                run_graph(self.graph, feeds, dtype=self.numerics.dtype.type, params=params,
                          on_tensor=observe, on_input=observe_input)
            except InputError as e:
                raise InputError(f"{where}: {e}") from None
            seen += 1
        if not seen:
            raise QuantError("compute_encodings: the calibration data holds no batch; give at "
                             "least one non-empty batch (`refq quantize --calib DATA`)")
        for q in self.quantizers.values():
            if q.kind == "param":
                continue
            if q.fixed_range is not None:
                self.encodings[q.name] = encoding_from_min_max(
                    *q.fixed_range, q.bitwidth, q.symmetric, numerics=self.numerics)
            else:
                self.encodings[q.name] = analyzers[q.name].compute_encoding(
                    q.bitwidth, q.symmetric, numerics=self.numerics, strict=q.strict,
                    unsigned_symmetric=q.unsigned_symmetric)
        if self.overflow_protection:
            self._protect_overflow()
        return self

    def _protect_overflow(self):
        tq = self.tensor_quantizers()
        iq = self.input_quantizers()
        for q in self._by_kind("param"):
            node = self.graph.node(q.node)
            if node.op not in ("conv2d", "dense") or q.param != "weight":
                continue
            in_name = iq.get((node.name, 0), tq.get(node.inputs[0]))
            out_name = tq.get(node.outputs[0])
            if in_name is None or out_name is None:
                continue
            s_in = float(self._encoding(in_name).scale)
            out = self._encoding(out_name)
            s_out, o_out = float(out.scale), -float(out.zero_point)
            w_enc = self._encoding(q.name)
            s = w_enc.scale.astype(np.float64)
            b = node.params.get("bias")
            b = np.zeros(node.params["weight"].shape[0]) if b is None else b.astype(np.float64)
            if w_enc.axis is None:  # a per-tensor weight protects its largest bias (AIMET)
                b = np.abs(b).max(initial=0.0)
            s = np.maximum(s, np.abs(b) / (_BIAS_LIMIT * s_in))
            s = np.maximum(s, _UNDERFLOW * s_out / s_in)
            b_acc = np.round(b / (s_in * s)) + np.round(o_out * s_out / (s_in * s))
            s = np.maximum(s, np.abs(b_acc * s_in * s) / (_BIAS_LIMIT * s_in))
            s32 = s.astype(np.float32)
            zp = w_enc.zero_point.astype(np.float32)
            self.encodings[q.name] = encoding_from_range(
                s32 * (np.float32(w_enc.qmin) - zp), s32 * (np.float32(w_enc.qmax) - zp),
                q.bitwidth, w_enc.symmetric, axis=w_enc.axis, numerics=self.numerics,
                strict=q.strict, unsigned_symmetric=q.unsigned_symmetric)

    # ---- simulation -------------------------------------------------------------------------
    def run(self, feeds, *, trace: bool = False, batch_size: int | None = None,
            quiet: bool = True, enabled: dict | None = None) -> dict:
        """The simulated forward: like `refq.run`, with the enabled quantizers applied.

        enabled: {quantizer name: bool} overriding `self.enabled` (missing names count as off)."""
        enabled = self.enabled if enabled is None else enabled
        tq = {t: n for t, n in self.tensor_quantizers().items() if enabled.get(n, False)}
        iq = {k: n for k, n in self.input_quantizers().items() if enabled.get(n, False)}
        encs = {n: self._encoding(n) for n in set(tq.values()) | set(iq.values())}
        num = self.numerics

        def on_tensor(t, x):
            return quantize_dequantize(x, encs[tq[t]], num) if t in tq else x

        def on_input(node, i, x):
            name = iq.get((node, i))
            return x if name is None else quantize_dequantize(x, encs[name], num)

        return run_graph(self.graph, feeds, trace=trace, dtype=num.dtype.type,
                         batch_size=batch_size, quiet=quiet, params=self.sim_params(enabled),
                         on_tensor=on_tensor if tq else None, on_input=on_input if iq else None)

    # ---- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict:
        """Settings, the config, placement and encodings as one JSON document (the `/encodings`
        section of .refq.h5 files, version 2). The config is stored as its checked document with
        its display name, so the file does not depend on (or reveal) the machine that made it."""
        config = None if self.config is None else {"name": self.config.name,
                                                   "document": self.config.to_json()}
        return {
            "format": "refq-quantsim", "version": 2,
            "settings": {"param_bw": self.param_bw, "act_bw": self.act_bw, "scheme": self.scheme,
                         "scheme_options": self.scheme_options,
                         "numerics": _numerics_json(self.numerics),
                         "overflow_protection": self.overflow_protection,
                         "detect_prequantized": self.detect_prequantized,
                         "config": config},
            "placement": self.placement,
            "quantizers": [dict(q.to_json(), enabled=self.enabled[q.name],
                                encoding=(self.encodings[q.name].to_json()
                                          if q.name in self.encodings else None))
                           for q in self.quantizers.values()],
        }

    @classmethod
    def from_json(cls, graph: Graph, doc: dict, source: str = "<quantsim>") -> "QuantSim":
        """Rebuild a QuantSim on `graph` from `to_json()` output, without re-placing quantizers.
        Every key is checked (`_SECTION_SCHEMA`); QuantError naming `source` and the key path."""
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
        sim.quantizers, sim.enabled, sim.encodings = {}, {}, {}
        for i, qd in enumerate(doc["quantizers"]):
            qd = dict(qd)
            enabled, enc = qd.pop("enabled"), qd.pop("encoding")
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
        sim._check_against_graph(source)
        return sim

    def _check_against_graph(self, source):
        """QuantError naming the quantizer when the stored placement does not fit the graph."""
        where = f"{source}: quantsim section"
        hint = "; the simulation does not belong to this graph: re-quantize with `refq quantize`"
        tensors = {s.name for s in self.graph.inputs} | {n.outputs[0] for n in self.graph.nodes}
        nodes = {n.name: n for n in self.graph.nodes}
        for q in self.quantizers.values():
            what = f"{where}, quantizer '{q.name}'"
            enc = self.encodings.get(q.name)
            if q.kind == "param":
                node = nodes.get(q.node)
                if node is None or q.param not in node.params:
                    raise QuantError(f"{what} refers to parameter '{q.param}' of node "
                                     f"'{q.node}', which the graph lacks{hint}")
                shape = node.params[q.param].shape
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

    def save(self, path) -> None:
        """Write the graph with this simulation (section `/encodings`) to a .refq.h5 file."""
        from ..model_io import save

        save(self.graph, path, sections={"encodings": self.to_json()})

    @classmethod
    def load(cls, path) -> "QuantSim":
        """Read a .refq.h5 file written by `save`. QuantError when the file is an integer model
        (from `refq lower`) or a float model without a simulation, saying which file to give."""
        from ..model_io import load, load_section
        from .placement import integer_model_kind

        graph = load(path)
        kind = integer_model_kind(graph)
        if kind is not None:
            raise QuantError(f"{path}: an integer model ({kind}) holds no quantization "
                             "simulation; give the quantized model it was lowered from (the "
                             "output of `refq quantize`), or run this one with `refq run --mode int`")
        doc = load_section(path, "encodings")
        if doc is None:
            raise QuantError(f"{path}: a float model without a quantization simulation; quantize "
                             f"it first (`refq quantize {path} --calib DATA -o Q.refq.h5`) and give "
                             "Q.refq.h5")
        return cls.from_json(graph, doc, source=str(path))
