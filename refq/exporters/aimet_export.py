"""AIMET encodings JSON, versions 0.6.1 and 1.0.0: the format, its offset rules, and the writer.

AIMET 2.42 conventions (aimet.md §0.2.4, §0.2.7, §3.5). This module is the only place where refq's
zero point and AIMET's exported `offset` meet (`exported_offset` and its inverse
`_grid_from_offset`, which the reader `refq.exporters.aimet_load` uses).

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
    A blocked weight encoding is enc_type PER_BLOCK with `block_size` B: AIMET 2.x
    `aimet_torch/v2/quantization/affine/encoding.py::AffineEncoding.to_qnn_encoding_dict` writes
    `scale.flatten()` and the offsets of its quantizer, whose scale has shape (O, n_blocks, 1, 1)
    for a Conv2d weight (O, I, kh, kw) and (O, n_blocks) for a Linear weight (O, I)
    (`aimet_torch/v2/quantsim/config_utils.py::_get_block_size_array_for_module`: B on the input
    channels, −1, i.e. whole, on the kernel axes), and `block_size` = B of the block axis
    (`_get_block_axis`, axis 1). That is refq's (C, n_blocks) scale in row-major order, channel
    by channel. AIMET needs the input channels to be a multiple of B
    (`_get_layers_to_quantizer_shapes_for_block_size`), so a partial last block is refused, and
    0.6.1 (one legacy entry per scale, no block size) cannot hold a blocked encoding.
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

import json
import os

import numpy as np

from ..atomic import atomic_path
from ..errors import QuantError
from ..quant.encoding import Encoding, integer_grid

__all__ = ["export_aimet_encodings", "aimet_encodings_dict", "exported_offset",
           "SUPPORTED_VERSIONS", "QUANT_SCHEME_NAMES"]

SUPPORTED_VERSIONS = ("0.6.1", "1.0.0")

QUANT_SCHEME_NAMES = {
    "minmax": "min_max", "min_max": "min_max", "tf": "min_max",
    "tf_enhanced": "post_training_tf_enhanced", "percentile": "post_training_percentile",
}
"""refq scheme -> AIMET's QuantScheme enum name in `quantizer_args`; refq schemes AIMET 2.42 does
not have (sqnr, mse) are written under their refq name."""


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
    entry = {"bw": enc.bitwidth, "dtype": "INT",
             "enc_type": "PER_TENSOR" if enc.axis is None else "PER_CHANNEL",
             "is_sym": bool(enc.symmetric), "name": name,
             "offset": [int(o) for o in exported_offset(enc).reshape(-1)],
             "scale": [_f(s) for s in np.atleast_1d(enc.scale).reshape(-1)]}
    if enc.is_blocked:
        entry.update(enc_type="PER_BLOCK", block_size=enc.block_size)
    return entry


def _check_blocked(sim, name: str, enc: Encoding, version: str) -> None:
    """QuantError unless blocked encoding `enc` of quantizer `name` fits AIMET's PER_BLOCK entry
    (module docstring): version 1.0.0, blocks along the weight's input channels, whole blocks."""
    from ..quant.placement import weight_input_axis

    where = f"export_aimet_encodings: quantizer '{name}'"
    if version != "1.0.0":
        raise QuantError(f"{where} is blocked (block_size {enc.block_size}); version {version} "
                         "has no block size: write version 1.0.0 (--encodings-version 1.0.0)")
    q = sim.quantizers[name]
    w = sim.graph.node(q.node).params[q.param]
    if enc.block_axis != weight_input_axis(sim.graph.node(q.node)):
        raise QuantError(f"{where}: its blocks run along axis {enc.block_axis}, not along the "
                         "input channels, which AIMET's PER_BLOCK entries assume")
    if w.shape[enc.block_axis] % enc.block_size:
        raise QuantError(f"{where}: {w.shape[enc.block_axis]} input channels are not a "
                         f"multiple of block_size {enc.block_size}; AIMET's blockwise "
                         "quantizers need whole blocks: choose a block size that divides them")


def _named_encodings(sim, version: str) -> tuple[list, list]:
    """([(tensor, Encoding)], [(param name, Encoding)]) of the enabled quantizers with encodings,
    in the sim's quantizer order. QuantError when two quantizers put different encodings on one
    tensor name (an output and an input quantizer of the same tensor), which the format cannot hold,
    when a parameter encoding is per-channel on an axis other than 0, or when a blocked one does
    not fit a PER_BLOCK entry of `version` (`_check_blocked`)."""
    acts, params, owner = [], [], {}
    for q in sim.quantizers.values():
        if not sim.enabled.get(q.name, False) or q.name not in sim.encodings:
            continue
        enc = sim.encodings[q.name]
        if q.kind == "param":
            if enc.is_blocked:
                _check_blocked(sim, q.name, enc, version)
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
    acts, params = _named_encodings(sim, version)
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
