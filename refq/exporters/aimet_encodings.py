"""AIMET encodings JSON, versions 0.6.1 and 1.0.0: write a QuantSim's encodings, read them back.

AIMET 2.42 conventions (aimet.md §0.2.4, §0.2.7, §3.5). This module is the only place where refq's
zero point and AIMET's exported `offset` meet.

Offsets
    refq:   q = clamp(round(x/s) + zero_point, qmin, qmax),  x̂ = (q − zero_point)·s
    AIMET:  internal offset o = −zero_point (`aimet_offset`); the files store the offset on the
            unsigned grid [0, qmax − qmin], i.e.
                offset = o + qmin = qmin − zero_point
            signed symmetric  [−2^(b−1), 2^(b−1)−1], zero_point 0:  offset = −2^(b−1)   (−128 at 8 bits)
            asymmetric        [0, 2^b−1]:                           offset = −zero_point ∈ [−(2^b−1), 0]
            strict symmetric  [−(2^(b−1)−1), 2^(b−1)−1] (1.x):      offset = −(2^(b−1)−1) (−127)
            unsigned symmetric [0, 2^b−1], zero_point 0 (1.x):      offset = 0
    Both versions write this same number: 0.6.1 as `offset = o + qmin`, 1.0.0 as `o − 2^(bw−1)` for
    signed grids and `o` otherwise, which are equal.

0.6.1 (`AffineEncoding._to_legacy_format`)
    `activation_encodings` and `param_encodings` map a name to a list with one entry per channel
    (one entry = per-tensor). Entry: bitwidth, dtype "int", is_symmetric as the string "True" /
    "False", min = fl(s·(qmin − zero_point)), max = fl(s·(qmax − zero_point)) (the effective range,
    `Encoding.min/max`), offset, scale.
1.0.0 (`_export_to_1_0_0`)
    Both sections are lists of entries {bw, dtype "INT", enc_type PER_TENSOR | PER_CHANNEL,
    is_sym (JSON bool), name, offset [ints], scale [floats]}; no min/max.
Both files carry `excluded_layers: []`, `quantizer_args`, `producer` {"package": "refq",
"version": refq.__version__} and `version`, and are written with sorted keys and indent 4.

Names
    activation entries: tensor names. A shared activation quantizer is written under every tensor
    it quantizes, with the same encoding; an input quantizer (`<node>:input<i>`) under the tensor
    it reads. Parameter entries: `<node>.<AIMET param name>` (`conv_1.weight`, `bn.weight` for a
    batch_norm gamma), the refq quantizer name.

Exactness
    Scales are float32. They are written as the Python float of the float32 value; its shortest
    repr round-trips that double exactly, and the double converts back to the same float32, so
    export -> load reproduces every scale bit for bit. min/max are float32 values written the same
    way. A scale in a file that is not a float32 value is rounded to float32 (AIMET's dtype).
"""
from __future__ import annotations

import copy
import json
import math
import os

import numpy as np

from ..atomic import atomic_path
from ..errors import FormatError, QuantError
from ..quant.config import PARAM_TYPE
from ..quant.encoding import Encoding, check_bitwidth, integer_grid

__all__ = ["export_aimet_encodings", "load_aimet_encodings", "aimet_encodings_dict",
           "exported_offset", "SUPPORTED_VERSIONS"]

SUPPORTED_VERSIONS = ("0.6.1", "1.0.0")

QUANT_SCHEME_NAMES = {
    "minmax": "min_max", "min_max": "min_max", "tf": "min_max",
    "tf_enhanced": "post_training_tf_enhanced", "percentile": "post_training_percentile",
}
"""refq scheme -> AIMET's QuantScheme enum name in `quantizer_args`; refq schemes AIMET 2.42 does
not have (sqnr, mse) are written under their refq name."""

_UNSUPPORTED_ENC_TYPES = ("PER_BLOCK", "LPBQ", "VECTOR")


# ----------------------------------------------------------------------------- offsets

def exported_offset(enc: Encoding) -> np.ndarray:
    """The `offset` AIMET's 0.6.1 and 1.0.0 files store: qmin − zero_point (int64, per channel)."""
    return np.int64(enc.qmin) - np.atleast_1d(enc.zero_point).astype(np.int64)


def _grid_from_offset(bitwidth: int, symmetric: bool, offset: int):
    """(qmin, qmax, zero_point, grid kind) of one exported (bitwidth, is_symmetric, offset), or None
    when the offset does not lie on any grid of that kind. The inverse of `exported_offset`."""
    if not symmetric:
        qmin, qmax = integer_grid(bitwidth, False)
        zp = -offset
        return (qmin, qmax, zp, "asymmetric") if qmin <= zp <= qmax else None
    for kind, strict, unsigned in (("signed", False, False), ("strict", True, False),
                                   ("unsigned", False, True)):
        qmin, qmax = integer_grid(bitwidth, True, strict=strict, unsigned=unsigned)
        if offset == qmin:
            return qmin, qmax, 0, kind
    return None


# ----------------------------------------------------------------------------- export

def _f(x) -> float:
    """The Python float of a float32 value (exact)."""
    return float(np.float32(x))


def _legacy_entries(enc: Encoding) -> list:
    offsets = exported_offset(enc)
    with np.errstate(over="ignore"):          # an overflow to inf is refused by the JSON writer
        scales, mins, maxs = (np.atleast_1d(a) for a in (enc.scale, enc.min, enc.max))
    sym = "True" if enc.symmetric else "False"
    return [{"bitwidth": enc.bitwidth, "dtype": "int", "is_symmetric": sym, "max": _f(hi),
             "min": _f(lo), "offset": int(o), "scale": _f(s)}
            for s, o, lo, hi in zip(scales, offsets, mins, maxs)]


def _v1_entry(name: str, enc: Encoding) -> dict:
    return {"bw": enc.bitwidth, "dtype": "INT",
            "enc_type": "PER_TENSOR" if enc.axis is None else "PER_CHANNEL",
            "is_sym": bool(enc.symmetric), "name": name,
            "offset": [int(o) for o in exported_offset(enc)],
            "scale": [_f(s) for s in np.atleast_1d(enc.scale)]}


def _named_encodings(sim) -> tuple[list, list]:
    """([(tensor, Encoding)], [(param name, Encoding)]) of the enabled quantizers with encodings,
    in the sim's quantizer order. QuantError when two quantizers put different encodings on one
    tensor name (an output and an input quantizer of the same tensor), which the format cannot hold,
    or when a parameter encoding is per-channel on an axis other than 0."""
    acts, params, owner = [], [], {}
    for q in sim.quantizers.values():
        if not sim.enabled.get(q.name, False) or q.name not in sim.encodings:
            continue
        enc = sim.encodings[q.name]
        if q.kind == "param":
            if enc.axis not in (None, 0):
                raise QuantError(f"export_aimet_encodings: quantizer '{q.name}' is per-channel on "
                                 f"axis {enc.axis}; AIMET's files hold per-channel encodings on the "
                                 "output-channel axis 0 only")
            params.append((q.name, enc))
            continue
        for t in (q.tensors if q.kind == "activation" else q.tensors[:1]):
            if t in owner:
                other, other_enc = owner[t]
                if other_enc != enc:
                    raise QuantError(f"export_aimet_encodings: tensor '{t}' carries two different "
                                     f"encodings (quantizers '{other}' and '{q.name}'); an AIMET "
                                     "encodings file holds one per tensor name. Disable one of them "
                                     "or give them the same encoding")
                continue
            owner[t] = (q.name, enc)
            acts.append((t, enc))
    return acts, params


def _quantizer_args(sim) -> dict:
    pq = [q for q in sim.quantizers.values() if q.kind == "param"]
    return {"activation_bitwidth": sim.act_bw, "dtype": "int",
            "is_symmetric": all(q.symmetric for q in pq),
            "param_bitwidth": sim.param_bw,
            "per_channel_quantization": any(q.axis is not None for q in pq),
            "quant_scheme": QUANT_SCHEME_NAMES.get(sim.scheme, sim.scheme)}


def aimet_encodings_dict(sim, version: str = "1.0.0") -> dict:
    """The AIMET encodings document of `sim` as a dict of plain Python values (what
    `export_aimet_encodings` writes). See the module docstring for every field.

    quantizer_args: activation_bitwidth / param_bitwidth are the sim's act_bw / param_bw;
    is_symmetric is true when every parameter quantizer is symmetric (true when there is none);
    per_channel_quantization is true when any parameter quantizer is per-channel; quant_scheme as
    `QUANT_SCHEME_NAMES`. These fields are informational: `load_aimet_encodings` ignores them.
    """
    from .. import __version__

    if version not in SUPPORTED_VERSIONS:
        raise QuantError(f"export_aimet_encodings: unsupported encodings version {version!r}; "
                         f"refq writes {', '.join(SUPPORTED_VERSIONS)}")
    acts, params = _named_encodings(sim)
    if version == "0.6.1":
        act_section = {t: _legacy_entries(e) for t, e in acts}
        param_section = {n: _legacy_entries(e) for n, e in params}
    else:
        act_section = [_v1_entry(t, e) for t, e in acts]
        param_section = [_v1_entry(n, e) for n, e in params]
    return {"activation_encodings": act_section, "excluded_layers": [],
            "param_encodings": param_section, "producer": {"package": "refq",
                                                           "version": __version__},
            "quantizer_args": _quantizer_args(sim), "version": version}


def export_aimet_encodings(sim, path, version: str = "1.0.0") -> dict:
    """Write `sim`'s encodings as an AIMET encodings JSON file (version "0.6.1" or "1.0.0", the
    AIMET 2.42 default) and return the document written.

    Only enabled quantizers that have an encoding are written; activation entries are named after
    tensors (every tensor of a shared quantizer), parameter entries `<node>.<AIMET param name>`.
    Floats round-trip exactly: every scale (and 0.6.1 min/max) is a float32 value written as the
    Python float of that value, whose repr converts back to the same float32. Keys are sorted,
    indent 4. The file is written atomically; on any error nothing is written.
    Raises QuantError on an unsupported version, on a tensor carrying two different encodings,
    and on an effective range that overflows float32.
    """
    doc = aimet_encodings_dict(sim, version)
    try:
        text = json.dumps(doc, sort_keys=True, indent=4, allow_nan=False)
    except ValueError:
        raise QuantError(f"export_aimet_encodings: an effective min/max overflows float32 (the "
                         f"scale is too large to export); nothing written to {os.fspath(path)}") \
            from None
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return doc


# ----------------------------------------------------------------------------- load

def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(Exception):
    pass


def _read(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FormatError(f"{path}: no such encodings file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: cannot read the encodings file ({e})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: not valid JSON ({e}); an AIMET encodings file is a JSON "
                          "object") from None
    except _DuplicateKey as e:
        raise QuantError(f"{path}: the key '{e.args[0]}' appears twice in one JSON object; "
                         "each name may carry one encoding") from None


def _detect(doc, src) -> str:
    """The layout version: "0.6.1" (dict sections) or "1.0.0" (list sections)."""
    if not isinstance(doc, dict):
        raise QuantError(f"{src}: not an AIMET encodings file (the top level is a "
                         f"{type(doc).__name__}, not an object)")
    version = doc.get("version")
    if "version" in doc and version not in SUPPORTED_VERSIONS:
        raise QuantError(f"{src}: unknown encodings version {version!r}; refq reads "
                         f"{', '.join(SUPPORTED_VERSIONS)} (and 1.x files without a version "
                         "in the 0.6.1 layout)")
    sections = [doc[k] for k in ("activation_encodings", "param_encodings") if k in doc]
    if not sections:
        raise QuantError(f"{src}: not an AIMET encodings file (it has neither "
                         "'activation_encodings' nor 'param_encodings')")
    if "version" not in doc:
        if not all(isinstance(s, dict) for s in sections):
            raise QuantError(f"{src}: the file has no 'version' and its sections are not the 0.6.1 "
                             "layout (objects mapping names to lists of entries)")
        version = "0.6.1"
    kind = dict if version == "0.6.1" else list
    for k in ("activation_encodings", "param_encodings"):
        if k in doc and not isinstance(doc[k], kind):
            raise QuantError(f"{src}: '{k}' must be a JSON {'object' if kind is dict else 'array'} "
                             f"in version {version}, got {type(doc[k]).__name__}")
    return version


def _is_int(v) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or \
        (isinstance(v, float) and math.isfinite(v) and v == int(v))


def _bool_field(v, where, key):
    if isinstance(v, bool):
        return v
    if v in ("True", "False"):
        return v == "True"
    raise QuantError(f"{where}: '{key}' must be \"True\"/\"False\" or a JSON bool, got {v!r}")


def _channel(where, bitwidth, symmetric, scale, offset):
    """Check one channel's (bitwidth, is_symmetric, scale, offset); return (b, sym, s32, grid)."""
    try:
        b = check_bitwidth(bitwidth)
    except QuantError:
        raise QuantError(f"{where}: bitwidth {bitwidth!r} is out of range; refq holds integer "
                         "encodings of 2..16 bits (or 32, pass-through)") from None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
            or not scale > 0:
        raise QuantError(f"{where}: scale {scale!r} must be a finite positive number")
    with np.errstate(over="ignore", under="ignore"):
        s32 = np.float32(scale)
    if not (np.isfinite(s32) and s32 > 0):
        raise QuantError(f"{where}: scale {scale!r} is not a positive finite float32 value")
    if not _is_int(offset):
        raise QuantError(f"{where}: offset {offset!r} must be an integer")
    grid = _grid_from_offset(b, symmetric, int(offset))
    if grid is None:
        if symmetric:
            half = 2 ** (b - 1)
            msg = (f"a symmetric {b}-bit offset must be {-half} (signed grid), {-(half - 1)} "
                   "(strict symmetric, AIMET 1.x) or 0 (unsigned symmetric, AIMET 1.x)")
        else:
            msg = f"an asymmetric {b}-bit offset lies in [{-(2 ** b - 1)}, 0]"
        raise QuantError(f"{where}: offset {int(offset)} is out of the grid; {msg}")
    return b, symmetric, s32, grid


class _Entry:
    """One file entry reduced to per-channel arrays; `per_channel` is True / False (1.0.0
    enc_type) or None (0.6.1: decided from the channel count)."""

    def __init__(self, name, where, channels, per_channel):
        self.name, self.where, self.per_channel = name, where, per_channel
        kinds = {(b, sym, g[0], g[1], g[3]) for b, sym, _, g in channels}
        if len(kinds) != 1:
            raise QuantError(f"{where}: the channels disagree on bitwidth, symmetry or grid "
                             f"({sorted(kinds)}); one encoding has one grid")
        self.bitwidth, self.symmetric, self.qmin, self.qmax, self.grid = kinds.pop()
        self.scale = np.array([c[2] for c in channels], dtype=np.float32)
        self.zero_point = np.array([c[3][2] for c in channels], dtype=np.int64)

    def encoding(self, axis) -> Encoding:
        if axis is None:
            scale, zp = self.scale[0], self.zero_point[0]
        else:
            scale, zp = self.scale, self.zero_point
        return Encoding(scale, zp, self.bitwidth, self.qmin, self.qmax, self.symmetric, axis)


def _entries_061(section: dict, what: str, src: str) -> list:
    out = []
    for name, lst in section.items():
        where = f"{src}: {what} entry '{name}'"
        if not isinstance(lst, list) or not lst:
            raise QuantError(f"{where}: expected a non-empty list of per-channel entries, got "
                             f"{lst!r}")
        channels = []
        for i, e in enumerate(lst):
            w = f"{where}[{i}]" if len(lst) > 1 else where
            if not isinstance(e, dict):
                raise QuantError(f"{w}: an entry is a JSON object, got {type(e).__name__}")
            dtype = e.get("dtype", "int")
            if dtype != "int":
                raise QuantError(f"{w}: dtype {dtype!r} is not supported; refq reads integer "
                                 "encodings (dtype \"int\") only")
            missing = [k for k in ("bitwidth", "is_symmetric", "offset", "scale") if k not in e]
            if missing:
                raise QuantError(f"{w}: missing field(s) {missing}")
            sym = _bool_field(e["is_symmetric"], w, "is_symmetric")
            channels.append(_channel(w, e["bitwidth"], sym, e["scale"], e["offset"]))
        out.append(_Entry(name, where, channels, None))
    return out


def _entries_100(section: list, what: str, src: str) -> list:
    out = []
    for i, e in enumerate(section):
        if not isinstance(e, dict):
            raise QuantError(f"{src}: {what}[{i}] is not a JSON object")
        name = e.get("name")
        if not isinstance(name, str):
            raise QuantError(f"{src}: {what}[{i}] has no string 'name'")
        where = f"{src}: {what} entry '{name}'"
        missing = [k for k in ("bw", "dtype", "enc_type", "is_sym", "offset", "scale") if k not in e]
        if missing:
            raise QuantError(f"{where}: missing field(s) {missing}")
        if e["dtype"] != "INT":
            raise QuantError(f"{where}: dtype {e['dtype']!r} is not supported; refq reads integer "
                             "encodings (dtype \"INT\") only")
        enc_type = e["enc_type"]
        if enc_type in _UNSUPPORTED_ENC_TYPES:
            raise QuantError(f"{where}: enc_type {enc_type} is not supported; refq reads "
                             "PER_TENSOR and PER_CHANNEL")
        if enc_type not in ("PER_TENSOR", "PER_CHANNEL"):
            raise QuantError(f"{where}: unknown enc_type {enc_type!r}")
        scales, offsets = e["scale"], e["offset"]
        if not isinstance(scales, list) or not isinstance(offsets, list) or not scales \
                or len(scales) != len(offsets):
            raise QuantError(f"{where}: 'scale' and 'offset' must be non-empty lists of one length")
        if enc_type == "PER_TENSOR" and len(scales) != 1:
            raise QuantError(f"{where}: a PER_TENSOR entry has one scale, got {len(scales)}")
        sym = _bool_field(e["is_sym"], where, "is_sym")
        channels = [_channel(where if len(scales) == 1 else f"{where} channel {c}",
                             e["bw"], sym, s, o) for c, (s, o) in enumerate(zip(scales, offsets))]
        out.append(_Entry(name, where, channels, enc_type == "PER_CHANNEL"))
    return out


def _parse(doc, src):
    version = _detect(doc, src)
    parse = _entries_061 if version == "0.6.1" else _entries_100
    acts = parse(doc.get("activation_encodings", {} if version == "0.6.1" else []),
                 "activation_encodings", src)
    params = parse(doc.get("param_encodings", {} if version == "0.6.1" else []),
                   "param_encodings", src)
    for what, entries in (("activation_encodings", acts), ("param_encodings", params)):
        seen = set()
        for e in entries:
            if e.name in seen:
                raise QuantError(f"{src}: {what} names '{e.name}' twice")
            seen.add(e.name)
    return version, acts, params


def load_aimet_encodings(sim, path, *, strict: bool = True):
    """A new QuantSim: a deep copy of `sim` whose encodings come from the AIMET encodings file at
    `path` (0.6.1, 1.0.0, or an AIMET 1.x file without `version` in the 0.6.1 layout). `sim` itself
    is never modified.

    Grids are rebuilt from bitwidth, is_symmetric and offset (the inverse of `exported_offset`):
    asymmetric -> [0, 2^b−1] with zero_point = −offset; symmetric with offset −2^(b−1) -> the signed
    grid [−2^(b−1), 2^(b−1)−1], zero_point 0; symmetric with offset −(2^(b−1)−1) (AIMET 1.x strict
    symmetric, −127) -> the strict grid [−(2^(b−1)−1), 2^(b−1)−1]; symmetric with offset 0 (AIMET
    1.x unsigned symmetric) -> [0, 2^b−1] with zero_point 0. Scales are rounded to float32; 0.6.1
    min/max are derived values and are ignored. Unknown keys in an entry are ignored.

    Matching: an activation entry names a tensor and sets every quantizer on it (the activation
    quantizer that quantizes it, shared or not, and input quantizers reading it); two tensors of
    one shared quantizer with different encodings are an error. A parameter entry names
    `<node>.<param>` with AIMET's parameter name (`conv_1.weight`, `bn.weight` for gamma) or
    refq's (`bn.gamma`). Per-channel: 1.0.0 follows `enc_type`; a 0.6.1 list with one entry per
    output channel (C > 1) is per-channel on axis 0, a single entry is per-tensor (per-channel
    only when the quantizer is per-channel and the parameter has one channel).

    The new sim: quantizers that received an encoding are enabled, all others disabled; their
    specs take bitwidth, symmetry, grid (strict / unsigned) and per-channel axis from the file.
    Every quantizer enabled in `sim` must receive an encoding, and every entry naming a tensor or
    parameter of the graph must find a quantizer; otherwise QuantError listing all of them at once.
    `strict=False` leaves such quantizers disabled and skips such entries instead.

    Errors (the message names the file and the entry): FormatError for a missing or unreadable
    file or invalid JSON; QuantError for an unknown version or layout, duplicate names, an entry
    naming a tensor or parameter the graph lacks, a per-channel count that does not match the
    parameter's output channels, a per-channel activation entry, a float or blockwise entry, a
    bitwidth outside 2..16 (or 32), a scale that is not finite and positive in float32, an offset
    off the grid, and the unmatched quantizers/entries above.
    """
    src = os.fspath(path)
    version, act_entries, param_entries = _parse(_read(src), src)
    graph = sim.graph
    tensors = {s.name for s in graph.inputs} | {t for n in graph.nodes for t in n.outputs}
    param_names = {}
    for n in graph.nodes:
        for p in n.params:
            for key in {f"{n.name}.{p}", f"{n.name}.{PARAM_TYPE.get(p, p)}"}:
                if param_names.get(key, (n.name, p)) != (n.name, p):
                    raise QuantError(f"{src}: parameter name '{key}' is ambiguous in graph "
                                     f"'{graph.name}'")
                param_names[key] = (n.name, p)

    on_tensor, on_param = {}, {}
    for q in sim.quantizers.values():
        if q.kind == "activation":
            for t in q.tensors:
                on_tensor.setdefault(t, []).append(q)
        elif q.kind == "input":
            on_tensor.setdefault(q.tensors[0], []).append(q)
        else:
            on_param[(q.node, q.param)] = q

    assigned = {}        # quantizer name -> (entry name, Encoding)
    unused = []

    def assign(q, entry, enc):
        if q.name in assigned and assigned[q.name][1] != enc:
            raise QuantError(f"{src}: tensors '{assigned[q.name][0]}' and '{entry.name}' share "
                             f"quantizer '{q.name}' but carry different encodings; a shared "
                             "quantizer has one encoding")
        assigned.setdefault(q.name, (entry.name, enc))

    for e in act_entries:
        if e.name not in tensors:
            raise QuantError(f"{e.where}: graph '{graph.name}' has no tensor '{e.name}'")
        if len(e.scale) != 1 or e.per_channel:
            raise QuantError(f"{e.where}: per-channel activation encodings are not supported "
                             f"({len(e.scale)} channels); refq quantizes activations per tensor")
        qs = on_tensor.get(e.name, [])
        if not qs:
            unused.append(f"activation '{e.name}'")
        for q in qs:
            assign(q, e, e.encoding(None))

    for e in param_entries:
        if e.name not in param_names:
            raise QuantError(f"{e.where}: graph '{graph.name}' has no parameter '{e.name}' "
                             "(expected '<node>.<param>', e.g. 'conv_1.weight')")
        node_name, p = param_names[e.name]
        channels = graph.node(node_name).params[p].shape[0]
        q = on_param.get((node_name, p))
        n = len(e.scale)
        if e.per_channel is None:          # 0.6.1
            if n == 1:
                per_channel = channels == 1 and q is not None and q.axis is not None
            elif n == channels:
                per_channel = True
            else:
                raise QuantError(f"{e.where}: {n} per-channel entries, but parameter '{p}' of "
                                 f"node '{node_name}' has {channels} output channels (give 1 entry "
                                 f"per-tensor or {channels} per-channel)")
        else:
            per_channel = e.per_channel
            if per_channel and n != channels:
                raise QuantError(f"{e.where}: {n} per-channel scales, but parameter '{p}' of node "
                                 f"'{node_name}' has {channels} output channels")
        if q is None:
            unused.append(f"parameter '{e.name}'")
            continue
        assign(q, e, e.encoding(0 if per_channel else None))

    missing = [q.name for q in sim.quantizers.values()
               if sim.enabled.get(q.name, False) and q.name not in assigned]
    if strict and (missing or unused):
        parts = []
        if missing:
            parts.append(f"no encoding for the enabled quantizer(s) {missing}")
        if unused:
            parts.append(f"entries for tensors/parameters the sim does not quantize: "
                         f"{', '.join(unused)}")
        raise QuantError(f"{src}: {'; '.join(parts)}. The file and the sim's quantizer placement "
                         "differ; pass strict=False to leave those quantizers disabled and skip "
                         "those entries")

    new = copy.deepcopy(sim)
    new.encodings = {}
    new.enabled = {}
    for name, q in new.quantizers.items():
        if name not in assigned:
            new.enabled[name] = False
            continue
        enc = assigned[name][1]
        new.encodings[name] = enc
        new.enabled[name] = True
        q.bitwidth, q.symmetric = enc.bitwidth, enc.symmetric
        q.strict = enc.symmetric and enc.qmin == -enc.qmax
        q.unsigned_symmetric = enc.symmetric and enc.qmin == 0
        if q.kind == "param":
            q.axis = enc.axis
    return new
