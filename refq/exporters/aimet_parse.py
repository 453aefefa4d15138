"""Reading an AIMET encodings file: JSON without duplicate keys, layout detection (0.6.1, 1.0.0,
or an AIMET 1.x file without `version` in the 0.6.1 layout) and validation of every entry, each
reduced to an `_Entry` whose grid is rebuilt from (bitwidth, is_symmetric, offset) by
`refq.exporters.aimet_export._grid_from_offset`. Matching the entries onto a QuantSim is
`refq.exporters.aimet_load`; the format is described in `refq.exporters.aimet_export`.

Every key is checked: a key the format does not define (`TOP_KEYS`, `ENTRY_KEYS_061`,
`ENTRY_KEYS_100`) is a QuantError naming the file, the entry and the allowed keys, never ignored;
so are missing keys and values of the wrong type (bitwidth not an integer, is_symmetric not a
boolean, scale not a finite positive number, offset not an integer, name not a string).
"""
from __future__ import annotations

import json
import math

import numpy as np

from ..errors import FormatError, QuantError
from ..quant.encoding import Encoding, check_bitwidth
from .aimet_export import SUPPORTED_VERSIONS, _grid_from_offset

_UNSUPPORTED_ENC_TYPES = ("LPBQ", "VECTOR")

TOP_KEYS = ("activation_encodings", "param_encodings", "excluded_layers", "quantizer_args",
            "producer", "version")
"""The top-level keys of an encodings file (both versions)."""
ENTRY_KEYS_061 = ("bitwidth", "dtype", "is_symmetric", "max", "min", "offset", "scale")
"""The keys of one 0.6.1 entry (one channel); min and max are derived and not read."""
ENTRY_KEYS_100 = ("bw", "dtype", "enc_type", "is_sym", "name", "offset", "scale")
"""The keys of one 1.0.0 entry (PER_TENSOR / PER_CHANNEL); PER_BLOCK adds `block_size` (an
integer >= 1; the C·n_blocks scales and offsets are in row-major (C, n_blocks) order, see
`refq.exporters.aimet_export`)."""
_TOP_TYPES = {"excluded_layers": (list, "a list"), "quantizer_args": (dict, "an object"),
              "producer": (dict, "an object")}


def _unknown_keys(entry, allowed, where):
    unknown = sorted(k for k in entry if k not in allowed)
    if unknown:
        raise QuantError(f"{where}: unknown key '{unknown[0]}'; allowed keys: {list(allowed)}")


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
    _unknown_keys(doc, TOP_KEYS, src)
    for k, (t, desc) in _TOP_TYPES.items():
        if k in doc and not isinstance(doc[k], t):
            raise QuantError(f"{src}: '{k}' must be {desc}, got {doc[k]!r:.60}")
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
    if isinstance(bitwidth, bool) or not isinstance(bitwidth, int):
        raise QuantError(f"{where}: bitwidth {bitwidth!r} must be an integer in 2..16 (or 32, "
                         "pass-through)")
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
    enc_type) or None (0.6.1: decided from the channel count); `block_size` is set for PER_BLOCK
    entries (whose scales are C·n_blocks values, channel by channel)."""

    def __init__(self, name, where, channels, per_channel, block_size=None):
        self.name, self.where, self.per_channel = name, where, per_channel
        self.block_size = block_size
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
            _unknown_keys(e, ENTRY_KEYS_061, w)
            for k in ("min", "max"):
                v = e.get(k, 0.0)
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise QuantError(f"{w}: '{k}' must be a number, got {v!r}")
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
                             "PER_TENSOR, PER_CHANNEL and PER_BLOCK")
        if enc_type not in ("PER_TENSOR", "PER_CHANNEL", "PER_BLOCK"):
            raise QuantError(f"{where}: unknown enc_type {enc_type!r}; refq reads PER_TENSOR, "
                             "PER_CHANNEL and PER_BLOCK")
        block_size = None
        if enc_type == "PER_BLOCK":
            _unknown_keys(e, ENTRY_KEYS_100 + ("block_size",), where)
            block_size = e.get("block_size")
            if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
                raise QuantError(f"{where}: a PER_BLOCK entry needs 'block_size', an integer "
                                 f">= 1; got {block_size!r}")
        else:
            _unknown_keys(e, ENTRY_KEYS_100, where)
        scales, offsets = e["scale"], e["offset"]
        if not isinstance(scales, list) or not isinstance(offsets, list) or not scales \
                or len(scales) != len(offsets):
            raise QuantError(f"{where}: 'scale' and 'offset' must be non-empty lists of one length")
        if enc_type == "PER_TENSOR" and len(scales) != 1:
            raise QuantError(f"{where}: a PER_TENSOR entry has one scale, got {len(scales)}")
        sym = _bool_field(e["is_sym"], where, "is_sym")
        channels = [_channel(where if len(scales) == 1 else f"{where} channel {c}",
                             e["bw"], sym, s, o) for c, (s, o) in enumerate(zip(scales, offsets))]
        out.append(_Entry(name, where, channels, enc_type != "PER_TENSOR", block_size))
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
