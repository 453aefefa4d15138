"""Make the onnxruntime expected data of the QLinearSoftmax cases of tests/test_profile_ort.py.

Runs in the onnxruntime virtual environment, never in refq's:
    python3 -m venv /tmp/ortenv && /tmp/ortenv/bin/pip install -q onnxruntime onnx numpy
    /tmp/ortenv/bin/python tests/data/ort/softmax/make_ort_softmax.py
(made with onnxruntime 1.32.0, onnx 1.23.2, numpy 2.4.6, x86-64 with AVX2/FMA/AVX-512BW).

Each case is DequantizeLinear -> Softmax (opset 21) -> QuantizeLinear of one 8-bit type, which
onnxruntime fuses into com.microsoft QLinearSoftmax; written into this folder as
../make_ort_data.py writes its cases (<case>.onnx, <case>.npz with x_x, y_opt, y_noopt, spec,
ops_opt, nchw, config). A folder of their own: onnxruntime's unfused float Softmax (y_noopt)
sums long rows in another order than `onnx.reference`, which tests/test_profile_onnx.py compares
with the files of ../. The inputs:
  d1            an axis of length 1 (every code): the output is floor(1/s_out) + zp, saturated
  d2_pairs      every pair of codes (65536 rows of 2): every difference −255..255 and the ties
                of equal pairs; s_out = 0.2 (floor(fl32(1/s_out)) = 5, a double would give 4:
                q = 2.5 on equal pairs, rounded half to even) and s_out = 1/255 (254, PP-OCR)
  d10_edges     all equal, one dominant code, two and three tied maxima, the other end of the
                range, near-maximal rows, uniform rows
  d37_general   general scales, an output zero point inside the range
  d1000_near_max  long rows of near-maximal codes
  d3_log, d1000_sum, d3_quotient
                rows chosen where a candidate rounding disagrees with the profile's (a double
                logarithm in the table, NumPy's pairwise float32 sum, the float32 quotient
                fl32(fl32(e·g)/S)): the expected codes are onnxruntime's, whatever the candidate
  nchw_axis1    a [N, C, H, W] Softmax over axis 1 (onnxruntime transposes it to the last axis;
                refq's NHWC graph reads it as the last axis)
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
from onnx import helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import make_ort_data  # noqa: E402
from make_ort_data import NP, RANGE, Model, codes, enc, save  # noqa: E402

make_ort_data.HERE = HERE            # `save` writes the cases here

F32 = np.float32


def softmax_case(name, x_nhwc, act, e_in, e_out, axis=-1):
    """x: the codes, NHWC when 4-D (then the ONNX Softmax reads axis 1, the channels)."""
    m = Model(name)
    e_in, e_out = enc(*e_in, act), enc(*e_out, act)
    m.input("x", np.ascontiguousarray(x_nhwc).astype(NP[act]), e_in)
    m.nodes.append(helper.make_node("Softmax", [m.dq("x", e_in)], ["f"], axis=axis))
    m.q("f", e_out, "y")
    m.output("y", e_out, x_nhwc.ndim)
    save(m, [{"name": "y", "op": "softmax", "output": e_out}], "y")


def edge_rows(rng, act, d):
    lo, hi = RANGE[act]
    rows = [np.full(d, lo), np.full(d, hi), np.full(d, (lo + hi) // 2)]
    for j in (0, d // 2, d - 1):                      # one dominant code
        r = np.full(d, lo)
        r[j] = hi
        rows.append(r)
    r = np.full(d, lo)
    r[[1, 4]] = hi                                    # two tied maxima
    rows.append(r)
    r = np.full(d, hi - 40)
    r[[0, 3, 7]] = hi - 2                             # three tied maxima
    rows.append(r)
    rows.append(np.where(np.arange(d) % 2 == 0, lo, hi))
    rows.append(np.where(np.arange(d) == 5, hi - 1, hi))
    rows += [rng.integers(hi - k, hi + 1, d) for k in (1, 3, 8, 30)]
    rows += [rng.integers(lo, hi + 1, d) for _ in range(12)]
    return np.stack(rows)


# -- the candidate roundings, only to pick rows where they disagree ------------------------------
def _table(s_in, d, double_log=False):
    m = float(F32(F32(np.finfo(F32).max) / F32(d)))
    log_m = math.log(m) if double_log else float(F32(math.log(m)))
    shift = max(0.0, log_m - 5.0) / float(F32(s_in))
    return np.array([math.exp((k - 255.0 + shift) * float(F32(s_in)))
                     for k in range(256)]).astype(F32)


def _candidates(x, s_in, s_out, zp, lo, hi):
    g = float(np.floor(F32(1) / F32(s_out)))
    out = []
    for double_log, pairwise, f32_quotient in ((False, False, False), (True, False, False),
                                               (False, True, False), (False, False, True)):
        e = _table(s_in, x.shape[1], double_log)[255 + x - x.max(axis=1, keepdims=True)]
        s = e.sum(axis=1, keepdims=True, dtype=F32) if pairwise else \
            np.add.accumulate(e, axis=1, dtype=F32)[:, -1:]
        with np.errstate(over="ignore"):
            q = (np.rint((e * F32(g)) / s).astype(np.float64) if f32_quotient else
                 np.rint(e.astype(np.float64) * g / s.astype(np.float64)))
        out.append(np.clip(q + zp, lo, hi))
    return out


def rounding_rows(rng, act, s_in, s_out, d, candidate, rows, span=255, want=48):
    """Up to `want` rows of length d (codes uniform in [hi − span, hi]) on which candidate 1 (a
    double logarithm), 2 (a pairwise sum) or 3 (a float32 quotient) rounds otherwise than
    candidate 0."""
    lo, hi = RANGE[act]
    x = rng.integers(hi - span, hi + 1, (rows, d))
    cands = _candidates(x, s_in, s_out, lo, lo, hi)
    picked = x[np.nonzero(np.any(cands[candidate] != cands[0], axis=1))[0][:want]]
    assert len(picked) > 0, (act, s_in, s_out, d, candidate)
    return picked


def main():
    rng = np.random.default_rng(20261203)
    for act in ("int8", "uint8"):
        lo, hi = RANGE[act]
        z = 0 if act == "int8" else 128
        every = np.arange(lo, hi + 1)
        softmax_case(f"softmax_{act}_d1", every.reshape(256, 1), act, (0.1, z), (1 / 256, lo))
        pairs = np.stack([np.repeat(every, 256), np.tile(every, 256)], axis=1)
        softmax_case(f"softmax_{act}_d2_pairs", pairs, act, (0.0371, z + 3), (0.2, lo + 3))
        softmax_case(f"softmax_{act}_d2_pairs_255", pairs, act, (0.0625, z - 5), (1 / 255, lo))
        softmax_case(f"softmax_{act}_d10_edges", edge_rows(rng, act, 10), act, (0.0625, z + 3),
                     (1 / 256, lo))
        softmax_case(f"softmax_{act}_d37_general", codes(rng, (37,), act, batch=24), act,
                     (0.0417, z - 11), (0.0123, lo + 40))
        softmax_case(f"softmax_{act}_d1000_near_max", rng.integers(hi - 60, hi + 1, (32, 1000)),
                     act, (0.0093, z), (1 / 2048 if act == "uint8" else 1 / 1024, lo))
        # scales found by searching for rows where the candidates disagree
        for case, s_in, s_out, d, cand, rows, span in (
                ("d3_log", 0.00553620932623744, 0.014919435605406761, 3, 1, 2000000, 255),
                ("d1000_sum", 0.0093, 1 / 131072, 1000, 2, 4000, 60),
                ("d3_quotient", 0.28005343675613403, 0.016675807535648346, 3, 3, 200000, 255)):
            x = rounding_rows(rng, act, s_in, s_out, d, cand, rows, span,
                              want=16 if d > 100 else 48)
            softmax_case(f"softmax_{act}_{case}", x, act, (s_in, z), (s_out, lo))
        softmax_case(f"softmax_{act}_nchw_axis1", codes(rng, (5, 4, 6), act, batch=6), act,
                     (0.0581, z + 2), (1 / 256, lo), axis=1)


if __name__ == "__main__":
    main()
