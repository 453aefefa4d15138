"""Loading an AIMET encodings file onto a QuantSim: `load_aimet_encodings` matches the validated
entries of `refq.exporters.aimet_parse` to the sim's quantizers and returns a new sim."""
from __future__ import annotations

import copy
import os

from ..errors import QuantError
from ..quant.config import PARAM_TYPE
from ..quant.encoding import Encoding
from .aimet_parse import _parse, _read

__all__ = ["load_aimet_encodings"]


def load_aimet_encodings(sim, path, *, strict: bool = True):
    """A new QuantSim: a deep copy of `sim` whose encodings come from the AIMET encodings file at
    `path` (0.6.1, 1.0.0, or an AIMET 1.x file without `version` in the 0.6.1 layout). `sim` itself
    is never modified.

    Grids are rebuilt from bitwidth, is_symmetric and offset (the inverse of `exported_offset`):
    asymmetric -> [0, 2^b−1] with zero_point = −offset; symmetric with offset −2^(b−1) -> the signed
    grid [−2^(b−1), 2^(b−1)−1], zero_point 0; symmetric with offset −(2^(b−1)−1) (AIMET 1.x strict
    symmetric, −127) -> the strict grid [−(2^(b−1)−1), 2^(b−1)−1]; symmetric with offset 0 (AIMET
    1.x unsigned symmetric) -> [0, 2^b−1] with zero_point 0. Scales are rounded to float32; 0.6.1
    min/max are derived values and are not read (only type-checked). A key the format does not
    define is an error (`refq.exporters.aimet_parse`).

    Matching: an activation entry names a tensor and sets every quantizer on it (the activation
    quantizer that quantizes it, shared or not, and input quantizers reading it); two tensors of
    one shared quantizer with different encodings are an error. A parameter entry names
    `<node>.<param>` with AIMET's parameter name (`conv_1.weight`, `bn.weight` for gamma) or
    refq's (`bn.gamma`). Per-channel: 1.0.0 follows `enc_type`; a 0.6.1 list with one entry per
    output channel (C > 1) is per-channel on axis 0, a single entry is per-tensor (per-channel
    only when the quantizer is per-channel and the parameter has one channel). A 1.0.0 PER_BLOCK
    entry (`block_size` B) of a conv2d, dense, conv_transpose2d or gemm weight is a blocked
    encoding: per output channel (`weight_output_axis`) and block of B along the input channels
    (`weight_input_axis`), its C·n_blocks scales read channel by channel (n_blocks =
    ceil(L/B) for L input channels; `refq.exporters.aimet_export` cites AIMET's layout).

    The new sim: quantizers that received an encoding are enabled, all others disabled; their
    specs take bitwidth, symmetry, grid (strict / unsigned) and per-channel axis from the file.
    Every quantizer enabled in `sim` must receive an encoding, and every entry naming a tensor or
    parameter of the graph must find a quantizer; otherwise QuantError listing all of them at once.
    `strict=False` leaves such quantizers disabled and skips such entries instead.

    Errors (the message names the file and the entry): FormatError for a missing or unreadable
    file or invalid JSON; QuantError for an unknown version or layout, duplicate names, an entry
    naming a tensor or parameter the graph lacks, a per-channel count that does not match the
    parameter's output channels, a per-channel or PER_BLOCK activation entry, a PER_BLOCK entry
    of a parameter that is not a conv2d/dense/conv_transpose2d/gemm weight or whose scale count
    is not C·ceil(L/B), a float, LPBQ or VECTOR entry, a
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
            raise QuantError(f"{e.where}: graph '{graph.name}' has no tensor '{e.name}'; the "
                             "file was exported from another model: give the model it belongs to "
                             "(`refq quantize MODEL --load-encodings FILE`)")
        if e.block_size is not None:
            raise QuantError(f"{e.where}: blocked (PER_BLOCK) activation encodings are not "
                             "supported; refq quantizes activations per tensor (blocked "
                             "encodings are read for weights)")
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
                             "(expected '<node>.<param>', e.g. 'conv_1.weight'); the file was "
                             "exported from another model: give the model it belongs to")
        node_name, p = param_names[e.name]
        channels = graph.node(node_name).params[p].shape[0]
        q = on_param.get((node_name, p))
        n = len(e.scale)
        if e.block_size is not None:
            enc = _blocked(e, graph.node(node_name), p)
            if q is None:
                unused.append(f"parameter '{e.name}'")
            else:
                assign(q, e, enc)
            continue
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
                         "differ: quantize with the quantsim config the file was made with "
                         "(`refq quantize --config FILE.json --load-encodings ...`); Python: "
                         "load_aimet_encodings(..., strict=False) leaves those quantizers "
                         "disabled and skips those entries")

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
            q.axis, q.block_size = enc.axis, enc.block_size
    return new


def _blocked(e, node, param):
    """The blocked Encoding of PER_BLOCK entry `e` for parameter `param` of `node`."""
    from ..quant.placement import PER_CHANNEL_WEIGHTED, weight_input_axis, weight_output_axis

    if param != "weight" or node.op not in PER_CHANNEL_WEIGHTED:
        raise QuantError(f"{e.where}: PER_BLOCK encodings are read for the weights of "
                         f"{', '.join(PER_CHANNEL_WEIGHTED)}; '{param}' of node '{node.name}' "
                         f"({node.op}) is not one")
    w = node.params[param]
    axis, block_axis = weight_output_axis(node), weight_input_axis(node)
    c, length = w.shape[axis], w.shape[block_axis]
    nb = -(-length // e.block_size)
    if len(e.scale) != c * nb:
        raise QuantError(f"{e.where}: {len(e.scale)} scales, but block_size {e.block_size} on "
                         f"the {length} input channels of node '{node.name}' with {c} output "
                         f"channels needs {c} × {nb} = {c * nb}")
    return Encoding(e.scale.reshape(c, nb), e.zero_point.reshape(c, nb), e.bitwidth, e.qmin,
                    e.qmax, e.symmetric, axis, block_axis, e.block_size)
