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
"""
from __future__ import annotations

import dataclasses

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
from .placement import QuantizerSpec, place_quantizers
from .prequantized import prequantized_encoding

__all__ = ["QuantSim", "iterate_batches"]

_BIAS_LIMIT = 2.0 ** 31 - 2.0 ** 15
_UNDERFLOW = 2.0 ** -23.5


def _numerics_json(n: EncodingNumerics) -> dict:
    d = dataclasses.asdict(n)
    d["dtype"] = np.dtype(n.dtype).name
    return d


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
        graph.validate()
        if scheme not in ANALYZERS:
            raise QuantError(f"unknown scheme {scheme!r}; known: {', '.join(ANALYZERS)}")
        if isinstance(config, QuantsimConfig):
            self.config = config
        elif isinstance(config, dict):
            self.config = parse_config(config)
        else:
            self.config = load_config(config)
        self.config_source = self.config.source
        make_analyzer(scheme, None, **dict(scheme_options or {}))  # reject bad options early
        for what, bw in (("param_bw", param_bw), ("act_bw", act_bw)):
            if isinstance(bw, (bool, np.bool_)) or not isinstance(bw, (int, np.integer)) \
                    or not (2 <= bw <= 16 or bw == 32):
                raise QuantError(f"{what} must be an integer in 2..16 (or 32), got {bw!r}")
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
            raise QuantError(f"quantizer '{name}' has no encoding; run compute_encodings() "
                             "or load encodings first") from None

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
            for name, x in feeds.items():
                x = np.asarray(x)
                if x.size == 0:
                    raise QuantError(f"{where}: input '{name}' is empty")
                if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
                    bad = np.argwhere(~np.isfinite(x))[0].tolist()
                    raise QuantError(f"{where}: input '{name}' holds NaN or Inf "
                                     f"(first at index {bad}); clean the calibration data")
            try:
                run_graph(self.graph, feeds, dtype=self.numerics.dtype.type, params=params,
                          on_tensor=observe, on_input=observe_input)
            except InputError as e:
                raise InputError(f"{where}: {e}") from None
            seen += 1
        if not seen:
            raise QuantError("compute_encodings: the calibration data holds no batch; give at "
                             "least one non-empty batch")
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
        """Settings, placement and encodings as one JSON document (stored in .refq.h5 files)."""
        return {
            "format": "refq-quantsim", "version": 1,
            "settings": {"param_bw": self.param_bw, "act_bw": self.act_bw, "scheme": self.scheme,
                         "scheme_options": self.scheme_options,
                         "numerics": _numerics_json(self.numerics),
                         "overflow_protection": self.overflow_protection,
                         "detect_prequantized": self.detect_prequantized,
                         "config_source": self.config_source},
            "placement": self.placement,
            "quantizers": [dict(q.to_json(), enabled=self.enabled[q.name],
                                encoding=(self.encodings[q.name].to_json()
                                          if q.name in self.encodings else None))
                           for q in self.quantizers.values()],
        }

    @classmethod
    def from_json(cls, graph: Graph, doc: dict, source: str = "<quantsim>") -> "QuantSim":
        """Rebuild a QuantSim on `graph` from `to_json()` output, without re-placing quantizers."""
        try:
            if doc.get("format") != "refq-quantsim":
                raise KeyError("format")
            s = doc["settings"]
            nd = dict(s["numerics"])
            nd["dtype"] = np.dtype(nd["dtype"])
            sim = cls.__new__(cls)
            graph.validate()
            sim.graph = graph.copy()
            sim.config = None  # the placement below is what the config decided
            sim.config_source = s.get("config_source", "<unknown>")
            sim.param_bw, sim.act_bw = s["param_bw"], s["act_bw"]
            sim.scheme, sim.scheme_options = s["scheme"], dict(s["scheme_options"])
            sim.numerics = EncodingNumerics(**nd)
            sim.overflow_protection = s["overflow_protection"]
            sim.detect_prequantized = s["detect_prequantized"]
            sim.placement = doc["placement"]
            sim.quantizers, sim.enabled, sim.encodings = {}, {}, {}
            for qd in doc["quantizers"]:
                qd = dict(qd)
                enabled, enc = qd.pop("enabled"), qd.pop("encoding")
                q = QuantizerSpec.from_json(qd)
                sim.quantizers[q.name] = q
                sim.enabled[q.name] = bool(enabled)
                if enc is not None:
                    sim.encodings[q.name] = Encoding.from_json(enc)
        except (KeyError, TypeError, ValueError) as e:
            raise QuantError(f"{source}: malformed quantsim section ({e})") from None
        sim._check_against_graph(source)
        return sim

    def _check_against_graph(self, source):
        tensors = {s.name for s in self.graph.inputs} | {n.outputs[0] for n in self.graph.nodes}
        for q in self.quantizers.values():
            if q.kind == "param":
                node = next((n for n in self.graph.nodes if n.name == q.node), None)
                if node is None or q.param not in node.params:
                    raise QuantError(f"{source}: quantizer '{q.name}' refers to parameter "
                                     f"'{q.param}' of node '{q.node}', which the graph lacks")
                enc = self.encodings.get(q.name)
                if enc is not None and enc.axis is not None and \
                        enc.scale.shape[0] != node.params[q.param].shape[enc.axis]:
                    raise QuantError(f"{source}: quantizer '{q.name}' has {enc.scale.shape[0]} "
                                     f"channels, parameter has "
                                     f"{node.params[q.param].shape[enc.axis]}")
            else:
                if q.kind == "input":
                    node = next((n for n in self.graph.nodes if n.name == q.node), None)
                    if node is None or not 0 <= (q.input_index or 0) < len(node.inputs):
                        raise QuantError(f"{source}: input quantizer '{q.name}' refers to input "
                                         f"{q.input_index} of node '{q.node}', which the graph "
                                         "lacks")
                missing = [t for t in q.tensors if t not in tensors]
                if missing:
                    raise QuantError(f"{source}: quantizer '{q.name}' refers to tensors "
                                     f"{missing}, which the graph lacks")

    def save(self, path) -> None:
        """Write the graph with this simulation (section `/encodings`) to a .refq.h5 file."""
        from ..model_io import save

        save(self.graph, path, sections={"encodings": self.to_json()})

    @classmethod
    def load(cls, path) -> "QuantSim":
        """Read a .refq.h5 file written by `save`."""
        from ..model_io import load, load_section

        doc = load_section(path, "encodings")
        if doc is None:
            raise QuantError(f"{path}: holds no quantization simulation; create one with "
                             "`refq quantize`")
        return cls.from_json(load(path), doc, source=str(path))
