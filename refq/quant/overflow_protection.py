"""AIMET 2.42's overflow protection of weight encodings, run at the end of `QuantSim`'s calibration.

Overflow protection (§0.2.5, `_compute_encodings_with_overflow_protection`), for a weighted layer
(`placement.PER_CHANNEL_WEIGHTED`; b per output channel: the bias, for gemm beta·C broadcast to
its P outputs) with a quantized weight, an input encoding s_in (the tensor it reads is quantized)
and its own output quantizer (s_out, offset o_out = −zero_point), in float64:
    s' = max(s_w, |b| / ((2^31 − 2^15)·s_in))            bias must fit int32 (per channel)
    s' = max(s', 2^−23.5 · s_out / s_in)                  requantization underflow
    b_acc = round(b/(s_in s')) + round(o_out·s_out/(s_in s'))
    s' = max(s', |b_acc·s_in·s'| / ((2^31 − 2^15)·s_in))
    weight encoding <- set_range(s'·(qmin − zp), s'·(qmax − zp))   the re-snap, also when nothing
                                                          overflowed (zp = 0 for symmetric weights)
A per-tensor weight uses b = max|b| throughout (AIMET `true_quant.py`).
Without an output quantizer of its own (e.g. conv inside a Conv+Relu supergroup) nothing changes.

Blocked weights, as AIMET's: a (C, n_blocks) scale with more than one axis longer than 1 is left
alone, otherwise the steps above run per block with its channel's bias.
"""
from __future__ import annotations

import numpy as np

from .encoding import as_blocked, encoding_from_range
from .placement import PER_CHANNEL_WEIGHTED, weight_output_axis

__all__ = ["protect_overflow"]

_BIAS_LIMIT = 2.0 ** 31 - 2.0 ** 15
_UNDERFLOW = 2.0 ** -23.5


def protect_overflow(sim) -> None:
    """AIMET's overflow protection of `sim`'s weight encodings, in place (module docstring)."""
    tq = sim.tensor_quantizers()
    iq = sim.input_quantizers()
    for q in sim._by_kind("param"):
        node = sim.graph.node(q.node)
        if node.op not in PER_CHANNEL_WEIGHTED or q.param != "weight" or q.name in sim.frozen:
            continue
        in_name = iq.get((node.name, 0), tq.get(node.inputs[0]))
        out_name = tq.get(node.outputs[0])
        if in_name is None or out_name is None:
            continue
        s_in = float(sim._encoding(in_name).scale)
        out = sim._encoding(out_name)
        s_out, o_out = float(out.scale), -float(out.zero_point)
        w_enc = sim._encoding(q.name)
        s = w_enc.scale.astype(np.float64)
        b = _output_bias(node)
        if w_enc.axis is None:  # a per-tensor weight protects its largest bias (AIMET)
            b = np.abs(b).max(initial=0.0)
        if w_enc.is_blocked:    # AIMET: only a scale with one axis longer than 1
            if min(s.shape) > 1:
                continue
            b = b[:, None]
        s = np.maximum(s, np.abs(b) / (_BIAS_LIMIT * s_in))
        s = np.maximum(s, _UNDERFLOW * s_out / s_in)
        b_acc = np.round(b / (s_in * s)) + np.round(o_out * s_out / (s_in * s))
        s = np.maximum(s, np.abs(b_acc * s_in * s) / (_BIAS_LIMIT * s_in))
        s32 = s.astype(np.float32)
        zp = w_enc.zero_point.astype(np.float32)
        lo, hi = s32 * (np.float32(w_enc.qmin) - zp), s32 * (np.float32(w_enc.qmax) - zp)
        blocked = w_enc.is_blocked
        enc = encoding_from_range(
            lo.reshape(-1) if blocked else lo, hi.reshape(-1) if blocked else hi,
            q.bitwidth, w_enc.symmetric, axis=w_enc.axis, numerics=sim.numerics,
            strict=q.strict, unsigned_symmetric=q.unsigned_symmetric)
        sim.encodings[q.name] = as_blocked(enc, s.shape, w_enc.axis, w_enc.block_axis,
                                            w_enc.block_size) if blocked else enc


def _output_bias(node) -> np.ndarray:
    """The real bias each output channel of a weighted layer adds, float64 [C] (zeros without a
    bias): the bias itself, for gemm beta·C broadcast to its outputs."""
    c = node.params["weight"].shape[weight_output_axis(node)]
    b = node.params.get("bias")
    if b is None:
        return np.zeros(c)
    b = np.asarray(b, dtype=np.float64)
    if node.op == "gemm":
        b = np.float64(node.attrs["beta"]) * np.broadcast_to(b.reshape(-1), (c,))
    return b
