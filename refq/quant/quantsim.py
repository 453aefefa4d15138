"""QuantSim: quantization simulation of a refq graph, as AIMET 2.42's QuantizationSimModel runs it.

    sim = QuantSim(graph, config="per_channel", param_bw=8, act_bw=8, scheme="minmax")
    sim.compute_encodings(batches)          # an iterable of arrays (or {input: array} dicts)
    y = sim.run({"x": x})                   # quantize-dequantize at every placed quantizer

Placement follows `refq.quant.placement` (AIMET 2.42's rules). Calibration (aimet.md §0.2.6):
1. parameter encodings are computed from the weights (cast to float32, AIMET's parameter dtype);
   a symmetric weight that already is integer × scale keeps that scale (AIMET 2.42's pre-quantized
   weight detection, `refq.quant.prequantized`; `detect_prequantized=False` turns it off);
2. every batch runs with quantize-dequantized weights and *float* activations, while each activation
   quantizer's analyzer observes its tensors (a shared quantizer observes all of them); the plan
   and its hooks are kept for the next calibration that would build the same ones
   (`refq.quant.calibration_run`);
3. activation encodings are finalised (a config's `encoding_constraints` fix the range with the
   min/max rule); then 4. AIMET's overflow protection re-snaps the weight scales of conv2d, dense,
   conv_transpose2d and gemm (AIMET's QuantizedConv*, QuantizedConvTranspose*, QuantizedLinear;
   `refq.quant.overflow_protection`).
The simulation forward runs in `numerics.dtype` (float32 for AIMET_V2): weights and every
quantized tensor are replaced by their fake-quantized values; biases stay float.

Inputs it refuses (QuantError, or InputError for shapes; one line naming the model, batch, input
or key): an integer model
(`refq.quant.placement.require_float_model`); calibration data that is empty (no batch, or a batch
of zero samples), a scalar, of the wrong rank or shape, of a non-real dtype (complex, object,
strings, bool) or holding NaN/Inf (`check_calibration_batch`, naming the batch, its source file
and the input).

Blocked weights (`set_blockwise`): one encoding per output channel and block of B input channels
(`refq.quant.analyzers.blocked_encoding`: the scheme's analyzer on each block), without
pre-quantized detection.

Persistence (`to_json` / `from_json`, `save` / `load`): the `/encodings` section of a .refq.h5,
written, read and checked key by key by `refq.quant.sim_section`.
"""
from __future__ import annotations

import numpy as np

from ..data_io import iterate_batches
from ..errors import InputError, QuantError
from ..graph import Graph
from ..progress import progress
from .analyzers import ANALYZERS, blocked_encoding, make_analyzer
from .config import ONNX_TYPE, QuantsimConfig, load_config, parse_config
from .encoding import AIMET_V2, Encoding, EncodingNumerics, encoding_from_min_max, \
    quantize_dequantize
from .calibration_run import calibration_run
from .overflow_protection import protect_overflow
from .placement import (QuantizerSpec, blockwise_weights, integer_model_kind,
                        place_quantizers, require_float_model, weight_input_axis)
from .prequantized import prequantized_encoding
from .sim_plan import SimPlan
from .sim_section import section_json, sim_from_section

__all__ = ["QuantSim", "iterate_batches", "check_calibration_batch"]

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
        self.config.check_bitwidths(int(param_bw), int(act_bw),
                                    {ONNX_TYPE.get(n.op) for n in graph.nodes})
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
        self.frozen: set = set()   # quantizers whose encoding calibration does not change
        self._calibration = None   # the last calibration's plan and hooks (`calibration_run`)

    def __getstate__(self):
        """A copy (copy.deepcopy) leaves the kept calibration plan behind: it holds a process."""
        state = dict(self.__dict__)
        state["_calibration"] = None
        return state

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
        node = self.graph.node(q.node)
        w = node.params[q.param].astype(np.float32)
        if q.block_size is not None:
            return blocked_encoding(w, self.scheme, q.bitwidth, q.symmetric, axis=q.axis,
                                    block_axis=weight_input_axis(node), block_size=q.block_size,
                                    numerics=self.numerics, strict=q.strict,
                                    unsigned_symmetric=q.unsigned_symmetric,
                                    **self.scheme_options)
        if self.detect_prequantized and q.symmetric and not q.strict:
            enc = prequantized_encoding(w, q.bitwidth, axis=q.axis, numerics=self.numerics)
            if enc is not None:
                return enc
        a = make_analyzer(self.scheme, q.axis, **self.scheme_options)
        a.update(w)
        return a.compute_encoding(q.bitwidth, q.symmetric, numerics=self.numerics, strict=q.strict,
                                  unsigned_symmetric=q.unsigned_symmetric)

    def compute_param_encodings(self) -> None:
        """Encodings of every parameter quantizer that is not frozen, from the current weights."""
        for q in self._by_kind("param"):
            if q.name not in self.frozen:
                self.encodings[q.name] = self._param_encoding(q)

    def set_blockwise(self, block_size: int, ops=None, *, bitwidth: int | None = None,
                      symmetric: bool | None = None) -> "QuantSim":
        """Quantize weights per output channel and block of `block_size` input channels
        (`refq.quant.placement.blockwise_weights`: AIMET's set_blockwise_quantization_for_weights);
        `ops`: op or node names (default: every conv2d, dense, conv_transpose2d, gemm). The
        chosen quantizers lose their encodings (recompute them). QuantError for a bad block size
        or name, or a frozen quantizer. Returns self."""
        changed = blockwise_weights(self.graph, self.quantizers, block_size, ops,
                                    bitwidth=bitwidth, symmetric=symmetric, frozen=self.frozen)
        for name in changed:
            self.encodings.pop(name, None)
        return self

    def freeze(self, names=None) -> "QuantSim":
        """Keep the encodings of the quantizers `names` (default: every quantizer that has one)
        through later calibration (`compute_param_encodings`, `compute_encodings`, its overflow
        protection), as AIMET's `set_and_freeze_param_encodings` does; saved with the simulation.
        QuantError for a name that is not a quantizer with an encoding. Returns self."""
        names = [n for n in self.quantizers if n in self.encodings] if names is None \
            else list(names)
        for n in names:
            if n not in self.encodings:
                raise QuantError(f"freeze: '{n}' is not a quantizer with an encoding of this "
                                 "simulation")
        self.frozen.update(names)
        return self

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
                     if q.kind != "param" and q.fixed_range is None and q.name not in self.frozen}

        self._calibration = calibration_run(self._calibration, self.graph,
                                            self.numerics.dtype, params, tq, iq, analyzers)
        plan, observers = self._calibration.plan, self._calibration.observers
        invariant = observers.invariant
        seen = 0
        for k, feeds in enumerate(progress(iterate_batches(data, self.graph, batch_size),
                                           desc="calibration", quiet=quiet)):
            src = getattr(feeds, "source", None)
            where = f"calibration batch {k}" + (f" (from {src})" if src else "")
            feeds = check_calibration_batch(self.graph, feeds, where)
            try:
                n = max((len(v) for v in feeds.values() if np.ndim(v)), default=0)
                plan.run(feeds, batch_size=None if invariant else max(n, 1),
                         threads=None if invariant else 1,
                         processes=observers.in_twin(),
                         effects=observers.effects, **observers.hooks)
                if invariant:
                    observers.end_batch()
            except InputError as e:
                raise InputError(f"{where}: {e}") from None
            seen += 1
        if not seen:
            raise QuantError("compute_encodings: the calibration data holds no batch; give at "
                             "least one non-empty batch (`refq quantize --calib DATA`)")
        for q in self.quantizers.values():
            if q.kind == "param" or q.name in self.frozen:
                continue
            if q.fixed_range is not None:
                self.encodings[q.name] = encoding_from_min_max(
                    *q.fixed_range, q.bitwidth, q.symmetric, numerics=self.numerics)
            else:
                self.encodings[q.name] = analyzers[q.name].compute_encoding(
                    q.bitwidth, q.symmetric, numerics=self.numerics, strict=q.strict,
                    unsigned_symmetric=q.unsigned_symmetric)
        if self.overflow_protection:
            protect_overflow(self)
        return self

    # ---- simulation -------------------------------------------------------------------------
    def run(self, feeds, *, trace: bool = False, batch_size: int | None = None,
            quiet: bool = True, enabled: dict | None = None) -> dict:
        """The simulated forward: like `refq.run`, with the enabled quantizers applied.

        enabled: {quantizer name: bool} overriding `self.enabled` (missing names count as off).
        Each call fake-quantizes the parameters and builds the plan; to run the same simulation
        many times, build `sim.plan()` once and call its `run`."""
        return self.plan(enabled).run(feeds, trace=trace, batch_size=batch_size, quiet=quiet)

    def plan(self, enabled: dict | None = None) -> "SimPlan":
        """The simulation compiled once (`SimPlan`): a snapshot of the graph, its fake-quantized
        parameters and the encodings as they are now (later changes do not reach it)."""
        return SimPlan(self, self.enabled if enabled is None else enabled)

    # ---- persistence (`refq.quant.sim_section`) ----------------------------------------------
    def to_json(self) -> dict:
        """Settings, the config, placement and encodings as one JSON document (the `/encodings`
        section of .refq.h5 files, version 3). The config is stored as its checked document with
        its display name, so the file does not depend on (or reveal) the machine that made it."""
        return section_json(self)

    @classmethod
    def from_json(cls, graph: Graph, doc: dict, source: str = "<quantsim>") -> "QuantSim":
        """Rebuild a QuantSim on `graph` from `to_json()` output, without re-placing quantizers.
        Every key is checked (`sim_section._SECTION_SCHEMA`); QuantError naming `source` and the
        key path."""
        return sim_from_section(cls, graph, doc, source)

    def save(self, path, history: dict | None = None) -> None:
        """Write the graph with this simulation (section `/encodings`) to a .refq.h5 file;
        `history`, when given, is written as section `/history` (`refq.analysis.history`)."""
        from ..model_io import save

        sections = {"encodings": self.to_json()}
        if history is not None:
            sections["history"] = history
        save(self.graph, path, sections=sections)

    @classmethod
    def load(cls, path) -> "QuantSim":
        """Read a .refq.h5 file written by `save`. QuantError when the file is an integer model
        (from `refq lower`) or a float model without a simulation, saying which file to give."""
        from ..model_io import load, load_section

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
