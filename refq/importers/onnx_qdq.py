"""QDQ ONNX models -> a `QuantSim` of the float graph, with the file's encodings.

A QDQ model marks quantization with operator pairs (onnx.ai QuantizeLinear/DequantizeLinear):
    QuantizeLinear     q = saturate(round_half_even(x / s) + zp)  on the grid of zp's type
    DequantizeLinear   x̂ = (q − zp)·s
An activation t quantized as Q(t) -> DQ -> readers is the refq quantizer with the encoding
    scale = s (float32, exact), zero_point = zp, bitwidth and grid from zp's type
    (int8 [−128, 127], uint8 [0, 255], int16 [−32768, 32767], uint16 [0, 65535]),
    symmetric when the grid is signed and zp = 0, per-channel axis = the DQ's `axis`.
Placement follows the file: a tensor every reader takes through Q/DQ pairs of one encoding gets an
activation quantizer (named by the tensor); a pair that only some readers take, or a second
pair after a DQ, is an input quantizer of each such reader (`node:inputK`). A pair on the
output of a grid-preserving op (pooling by max, padding, reshapes) with its input's encoding is
exactly the identity and is dropped, as refq places no quantizer there. A DequantizeLinear of a
constant integer weight (int8, uint8, ...) gives the float weight (q − zp)·s and a parameter
quantizer `node.weight` (per channel on the output channel, refq axis 0); an int32 bias DQ gives
the float bias only (a simulation keeps biases float). A Q -> DQ pair on a float constant is that
constant, quantized (its value DQ(Q(c)) in the graph). A quantized constant that refq folds into another op (a per-channel Mul, say)
is used as its dequantized value, which is what the file computes.

The simulation runs with `ONNX_QDQ_NUMERICS`: ONNX's definition, x / s (not x·(1/s)) rounded half
to even, integer clamp, in float32; every encoding is frozen.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import UnsupportedLayerError
from ..quant.encoding import Encoding, EncodingNumerics, quantize_dequantize
from ..quant.placement import QuantizerSpec, param_quantizer_name
from .onnx_fold import dequantize_linear
from .onnx_load import attributes

__all__ = ["ONNX_QDQ_NUMERICS", "split_qdq", "qdq_sim", "GRIDS"]

#: ONNX QuantizeLinear: x / scale, round half to even, saturate; float32.
ONNX_QDQ_NUMERICS = EncodingNumerics(fake_quant="divide")

#: integer element type -> (bitwidth, qmin, qmax)
GRIDS = {np.dtype(np.int8): (8, -128, 127), np.dtype(np.uint8): (8, 0, 255),
         np.dtype(np.int16): (16, -32768, 32767), np.dtype(np.uint16): (16, 0, 65535)}
try:    # onnx reads INT4/UINT4 tensors as ml_dtypes arrays (ml_dtypes is an onnx dependency)
    import ml_dtypes
    GRIDS.update({np.dtype(ml_dtypes.int4): (4, -8, 7), np.dtype(ml_dtypes.uint4): (4, 0, 15)})
except ImportError:     # pragma: no cover
    pass


def _encoding(m, node, where, data_dtype=None):
    """The Encoding of a Q or DQ node (module docstring)."""
    scale = m.constants.get(node.input[1]) if len(node.input) > 1 else None
    zp = m.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None:
        raise UnsupportedLayerError(f"{where}: its scale '{node.input[1]}' is not a constant")
    if zp is None:
        dtype = np.dtype(np.uint8) if data_dtype is None else np.dtype(data_dtype)
        zp = np.zeros(np.shape(scale), dtype)
    if zp.dtype not in GRIDS:
        raise UnsupportedLayerError(f"{where}: zero point of type {zp.dtype}; refq reads int8, "
                                    "uint8, int16 and uint16 grids (int4, uint4 for weights)")
    bits, qmin, qmax = GRIDS[zp.dtype]
    scale = np.asarray(scale, np.float32)
    a = attributes(node)
    if a.get("block_size", 0):
        raise UnsupportedLayerError(f"{where}: blocked quantization (block_size="
                                    f"{a['block_size']}) of a tensor that is not a constant "
                                    "integer weight; refq quantizes activations per tensor and "
                                    "reads blocked encodings of Conv, ConvTranspose, Gemm and "
                                    "MatMul weights stored as integer codes")
    per_tensor = scale.ndim == 0 or scale.shape == (1,)
    signed = qmin < 0
    return Encoding(scale.reshape(()) if per_tensor else scale,
                    zp.astype(np.int64).reshape(()) if per_tensor else zp.astype(np.int64),
                    bits, qmin, qmax, bool(signed and not np.any(zp)),
                    None if per_tensor else int(a.get("axis", 1))), zp.dtype


def split_qdq(m):
    """Remove the Q/DQ nodes of OnnxModel `m` in place; return (aliases, activation edges, weight
    encodings): aliases {DQ output: quantized tensor}, edges {DQ output: (tensor, Encoding)},
    weights {constant name: Encoding} (the constant now holds the dequantized float value)."""
    producers = {o: n for n in m.nodes for o in n.output}
    readers = {}
    for n in m.nodes:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    kept, edges, weights = [], {}, {}
    for n in m.nodes:
        where = f"{m.path}: node '{n.name or n.output[0]}' ({n.op_type})"
        if n.op_type == "QuantizeLinear":
            bad = [r for r in readers.get(n.output[0], []) if r.op_type != "DequantizeLinear"]
            if bad or n.output[0] in m.outputs:
                raise UnsupportedLayerError(f"{where}: its integer output is read by "
                                            f"{bad[0].op_type if bad else 'the graph output'}; "
                                            "refq reads QDQ models, where every QuantizeLinear "
                                            "feeds DequantizeLinear nodes")
            continue
        if n.op_type != "DequantizeLinear":
            kept.append(n)
            continue
        x = n.input[0]
        if x in m.constants and attributes(n).get("block_size", 0):
            m.constants[n.output[0]], weights[n.output[0]] = _blocked_weight(m, n, where)
            continue
        if x in m.constants:
            data = m.constants[x]
            if data.dtype == np.int32:      # a bias: its float value, no quantizer
                scale = m.constants.get(n.input[1])
                zp = m.constants.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
                m.constants[n.output[0]] = dequantize_linear(data, scale, zp,
                                                             attributes(n).get("axis", 1))
                continue
            enc, _ = _encoding(m, n, where, data.dtype)
            axis = None if enc.axis is None else enc.axis % data.ndim
            m.constants[n.output[0]] = dequantize_linear(data, enc.scale, enc.zero_point,
                                                         axis or 0)
            weights[n.output[0]] = (enc, axis)
            continue
        q = producers.get(x)
        if q is None or q.op_type != "QuantizeLinear":
            raise UnsupportedLayerError(f"{where}: dequantizes '{x}', which no QuantizeLinear "
                                        "produces; refq reads QDQ models")
        enc, dtype = _encoding(m, n, where)
        enc_q, _ = _encoding(m, q, where, dtype)
        if enc != enc_q:
            raise UnsupportedLayerError(f"{where}: its scale or zero point differ from those of "
                                        f"the QuantizeLinear before it; refq needs equal ones")
        t = q.input[0]
        if t in m.constants:     # the file's value: DQ(Q(c)), on the grid
            m.constants[n.output[0]] = quantize_dequantize(m.constants[t], enc,
                                                           ONNX_QDQ_NUMERICS)
            rank = m.constants[t].ndim
            weights[n.output[0]] = (enc, None if enc.axis is None else enc.axis % rank)
        else:
            edges[n.output[0]] = (t, enc)
    m.nodes = kept
    return {dq: t for dq, (t, _) in edges.items()}, edges, weights


@dataclasses.dataclass(frozen=True, eq=False)
class _Blocked:
    """A blocked DequantizeLinear of a constant weight in ONNX's layout: per-element scale and
    zero point (the file's, expanded along `axis`), the ONNX axis, block size and grid."""

    value: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int
    block_size: int
    bits: int
    qmin: int
    qmax: int
    symmetric: bool


def _blocked_weight(m, n, where):
    """(float weight (q − zp)·s in float32, (_Blocked, None)) of blocked DequantizeLinear `n` of a
    constant integer weight; UnsupportedLayerError (one line) on a malformed node."""
    q = m.constants[n.input[0]]
    if q.dtype not in GRIDS:
        raise UnsupportedLayerError(f"{where}: blocked DequantizeLinear of a {q.dtype} constant; "
                                    "refq reads blocked weights of int4, uint4, int8, uint8, "
                                    "int16 and uint16 codes")
    a = attributes(n)
    size, axis = int(a["block_size"]), int(a.get("axis", 1))
    scale = m.constants.get(n.input[1]) if len(n.input) > 1 else None
    zp = m.constants.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
    if scale is None:
        raise UnsupportedLayerError(f"{where}: its scale '{n.input[1]}' is not a constant")
    if not -q.ndim <= axis < q.ndim or size < 1:
        raise UnsupportedLayerError(f"{where}: axis {axis} and block_size {size} do not fit a "
                                    f"weight of shape {list(q.shape)}")
    axis %= q.ndim
    want = list(q.shape)
    want[axis] = -(-q.shape[axis] // size)
    zp = np.zeros(np.shape(scale), q.dtype) if zp is None else zp
    if list(np.shape(scale)) != want or np.shape(zp) != np.shape(scale) or zp.dtype != q.dtype:
        raise UnsupportedLayerError(f"{where}: block_size {size} on axis {axis} of a weight of "
                                    f"shape {list(q.shape)} needs scale and zero point of shape "
                                    f"{want} and the weight's type; got {list(np.shape(scale))}, "
                                    f"{list(np.shape(zp))} ({zp.dtype})")
    idx = np.arange(q.shape[axis]) // size
    s_full = np.take(np.asarray(scale, np.float32), idx, axis=axis)
    z_full = np.take(zp.astype(np.int64), idx, axis=axis)
    bits, qmin, qmax = GRIDS[q.dtype]
    value = (q.astype(np.int64) - z_full).astype(np.float32) * s_full
    return value, (_Blocked(value, s_full, z_full, axis, size, bits, qmin, qmax,
                            bool(qmin < 0 and not np.any(z_full))), None)


def _to_refq_layout(node, rank):
    """(transpose of the ONNX weight into refq's, ONNX axis of the input channels), or None for
    a weight refq does not read blocked."""
    a = attributes(node)
    if node.op_type == "Conv" and rank == 4:
        return (lambda v: v.transpose(0, 2, 3, 1)), 1
    if node.op_type == "ConvTranspose" and rank == 4 and a.get("group", 1) == 1:
        return (lambda v: v.transpose(1, 2, 3, 0)), 0
    if node.op_type == "Gemm" and a.get("transB", 0) and rank == 2:
        return (lambda v: v), 1
    if node.op_type in ("Gemm", "MatMul") and rank == 2:
        return (lambda v: v.T), 0
    if node.op_type == "MatMul" and rank == 1:
        return (lambda v: v.reshape(1, -1)), 0
    return None


def _refq_blocked(b, onnx_node, blk, node, param):
    """The blocked `Encoding` of weight `param` of refq node `node` from `_Blocked` `blk`."""
    from ..quant.placement import weight_input_axis

    where = f"{b.path}: the weight of node '{node.name}' ({onnx_node.op_type})"
    param = node.params[param]
    layout = _to_refq_layout(onnx_node, blk.scale.ndim)
    if layout is None:
        raise UnsupportedLayerError(f"{where}: blocked weights are read for Conv, ConvTranspose "
                                    "(group 1), Gemm and MatMul only")
    move, in_axis = layout
    if blk.axis != in_axis:
        raise UnsupportedLayerError(f"{where}: blocks run along ONNX axis {blk.axis}; refq's "
                                    f"blocks run along the input channels (axis {in_axis})")
    s, z = move(blk.scale), move(blk.zero_point)
    if s.shape != param.shape or not np.array_equal(move(blk.value), param):
        raise UnsupportedLayerError(f"{where}: refq reorders the input channels of this weight "
                                    "(a dense layer reading a flattened NCHW tensor), so its "
                                    "blocks would not be contiguous")
    k = weight_input_axis(node)
    first = [0] * param.ndim
    first[0], first[k] = slice(None), slice(None, None, blk.block_size)
    enc = Encoding(s[tuple(first)], z[tuple(first)], blk.bits, blk.qmin, blk.qmax,
                   blk.symmetric, 0, k, blk.block_size)
    full = [np.broadcast_to(v, param.shape) for v in enc.broadcast(param.shape)]
    if not (np.array_equal(full[0], s) and np.array_equal(full[1], z)):
        raise UnsupportedLayerError(f"{where}: its block scales or zero points vary along the "
                                    "kernel window; refq's blocks span the whole kh × kw window")
    return enc


def _weight_axis(node, onnx_axis):
    """refq axis (0) of a per-channel weight whose ONNX axis is `onnx_axis`, or None if that axis
    is not the output channel."""
    if onnx_axis is None:
        return None
    out_axis = {"Conv": 0, "MatMul": 1}.get(node.op_type)
    if node.op_type == "ConvTranspose":     # W [C, O/group, kh, kw]: per channel of O at group 1
        out_axis = 1 if attributes(node).get("group", 1) == 1 else None
    if node.op_type == "Gemm":
        out_axis = 0 if attributes(node).get("transB", 0) else 1
    return 0 if onnx_axis == out_axis else -1


def _drop_grid_repeats(graph, quantizers):
    """The activation quantizers without those on the output of a grid-preserving op whose input
    has an activation quantizer of the same per-tensor encoding: that output already lies on the
    grid, so quantizing it again is exactly the identity (refq places none there)."""
    from ..layers import ops_with

    grid_ops = ops_with("grid_preserving")
    producers = graph.producers()
    enc_of = {q.tensors[0]: e for q, e in quantizers if q.kind == "activation"}
    out = []
    for q, e in quantizers:
        p = producers.get(q.tensors[0]) if q.kind == "activation" else None
        if p is not None and p.op in grid_ops and len(p.inputs) == 1 and \
                enc_of.get(p.inputs[0]) == e and e.axis is None:
            continue
        out.append((q, e))
    return out


def qdq_sim(b, graph, edges, weights, numerics=None):
    """The QuantSim of `graph` (built by Builder `b`) with the file's quantizers."""
    from ..quant.quantsim import QuantSim

    quantizers = []
    by_source: dict = {}
    for dq, (t, enc) in edges.items():
        by_source.setdefault(t, []).append((dq, enc))
    taken = set()     # (node, input index) with an input quantizer
    for t, pairs in by_source.items():
        raw = b.consumers.get(t, []) or t in b.model.outputs
        tensor = b.tensors[b.resolve(t)].name
        nested = t in edges          # a pair on a DQ output: the edges after it only
        if not nested and not raw and all(e == pairs[0][1] for _, e in pairs):
            quantizers.append((QuantizerSpec(tensor, "activation", pairs[0][1].bitwidth,
                                             pairs[0][1].symmetric, [tensor]), pairs[0][1]))
            continue
        for dq, enc in pairs:
            if dq in b.model.outputs:
                raise UnsupportedLayerError(f"{b.path}: output '{dq}' is quantized while other "
                                            f"readers of '{t}' are not; refq needs one encoding")
            for index, slot in b.consumers.get(dq, []):
                if (index, slot) not in b.edges:
                    raise UnsupportedLayerError(
                        f"{b.where(b.model.nodes[index])}: its input {slot} is quantized, but "
                        "refq merged this node into another op")
                node, i = b.edges[(index, slot)]
                if (node, i) in taken:
                    raise UnsupportedLayerError(
                        f"{b.where(b.model.nodes[index])}: its input {slot} passes two Q/DQ "
                        "pairs of its own; refq has one input quantizer per input")
                taken.add((node, i))
                quantizers.append((QuantizerSpec(f"{node}:input{i}", "input", enc.bitwidth,
                                                 enc.symmetric, [tensor], node=node,
                                                 input_index=i), enc))
    quantizers = _drop_grid_repeats(graph, quantizers)
    nodes_by_name = {n.name: n for n in graph.nodes}
    onnx_by_refq = {}
    for (index, _), (node, _) in b.edges.items():
        onnx_by_refq.setdefault(node, b.model.nodes[index])
    for const, (enc, onnx_axis) in weights.items():
        for node, param in b.weights.get(const, []):
            if isinstance(enc, _Blocked):
                e = _refq_blocked(b, onnx_by_refq[node], enc, nodes_by_name[node], param)
                quantizers.append((QuantizerSpec(param_quantizer_name(node, param), "param",
                                                 e.bitwidth, e.symmetric, node=node, param=param,
                                                 axis=0, block_size=e.block_size), e))
                continue
            axis = _weight_axis(onnx_by_refq[node], onnx_axis)
            if axis == -1 or (enc.axis is not None and nodes_by_name[node].params[param].shape[0]
                              != enc.scale.shape[0]):
                raise UnsupportedLayerError(f"{b.path}: the weight of node '{node}' is quantized "
                                            f"per channel on an axis other than its output "
                                            "channel")
            enc = Encoding(enc.scale, enc.zero_point, enc.bitwidth, enc.qmin, enc.qmax,
                           enc.symmetric, axis)
            quantizers.append((QuantizerSpec(param_quantizer_name(node, param), "param",
                                             enc.bitwidth, enc.symmetric, node=node, param=param,
                                             axis=axis), enc))
    numerics = numerics or ONNX_QDQ_NUMERICS
    nd = dataclasses.asdict(numerics)
    nd["dtype"] = np.dtype(numerics.dtype).name

    def bits(param):
        return max([q.bitwidth for q, _ in quantizers if (q.kind == "param") == param],
                   default=8)

    blocked = any(e.is_blocked for _, e in quantizers)     # version 4 holds block sizes
    doc = {"format": "refq-quantsim", "version": 4 if blocked else 3,
           "settings": {"param_bw": bits(True), "act_bw": bits(False), "scheme": "minmax",
                        "scheme_options": {}, "numerics": nd, "overflow_protection": False,
                        "detect_prequantized": False, "config": None},
           "placement": {"supergroups": [], "fused_batch_norms": {}, "shared": [],
                         "activation_quantizers": sum(q.kind != "param" for q, _ in quantizers),
                         "param_quantizers": sum(q.kind == "param" for q, _ in quantizers)},
           "quantizers": [dict(q.to_json(), enabled=True, encoding=e.to_json(), frozen=True,
                               **({"block_size": q.block_size} if blocked else {}))
                          for q, e in quantizers]}
    return QuantSim.from_json(graph, doc, source=b.path)
