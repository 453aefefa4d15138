"""Quantizer cases (kind "quant"): encoding derivation and quantize / dequantize / fake-quant.

Each case derives an encoding from observed (min, max) with `encoding_from_min_max` for one grid
(signed, unsigned, strict, unsigned-symmetric), bitwidth (2, 4, 8, 16) and granularity (per tensor,
per channel on axis 0), then applies it to a float32 tensor x [channels, K] whose rows hold zero,
the grid's end points, values beyond both ends (saturation, up to ±1e30), exact rounding ties of
the numerics' own arithmetic, and uniform values. case.json "quantization" holds {"x": the encoding
+ "derived_from" (the min/max and settings it was derived from)}; the graph is an identity
placeholder (input x). Outputs: q (integer codes), x_dq = dequantize(q), x_fq = fake-quant(x).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..graph import Graph, Node, TensorSpec
from ..quant.encoding import (AIMET_V1, AIMET_V2, EncodingNumerics, dequantize,
                              encoding_from_min_max, quantize, quantize_dequantize)
from .case import EXACT, Case, CaseData, register

F32 = np.float32
K = 40  # values per row

GRIDS = {  # name -> (symmetric, strict, unsigned_symmetric)
    "signed": (True, False, False),
    "unsigned": (False, False, False),
    "strict": (True, True, False),
    "unsigned_symmetric": (True, False, True),
}
#: per-tensor (min, max) and per-channel [(min, max)] per grid: ordinary ranges, a power-of-two
#: scale (exact ties for every numerics), all-zero (minimum range) and all-equal channels
RANGES = {
    "signed": ((-1.0, 0.5), [(-1.0, 0.5), (0.0, 0.0), (-0.3, -0.3), (-0.37, 2.9)]),
    "unsigned": ((-0.8, 3.95), [(-0.8, 3.95), (0.0, 0.0), (0.4, 0.4), (-2.0, -0.5)]),
    "strict": ((-0.75, 1.3), [(-0.75, 1.3), (0.0, 0.0), (-1.0, 1.0), (2e-9, 5e-9)]),
    "unsigned_symmetric": ((0.0, 2.5), [(0.0, 2.5), (0.0, 0.0), (0.25, 0.25), (0.0, 4.0)]),
}


def numerics_json(n: EncodingNumerics) -> dict:
    d = dataclasses.asdict(n)
    d["dtype"] = np.dtype(n.dtype).name
    return d


def numerics_from_json(d: dict) -> EncodingNumerics:
    d = dict(d)
    d["dtype"] = np.dtype(d["dtype"])
    return EncodingNumerics(**d)


def code_dtype(qmin: int, qmax: int) -> str:
    for name in ("int8", "uint8", "int16", "int32"):
        info = np.iinfo(name)
        if info.min <= qmin and qmax <= info.max:
            return name
    raise ValueError(f"grid [{qmin}, {qmax}] does not fit int32")


def derive(derived_from: dict):
    """The Encoding that `derived_from` (case.json quantization.x.derived_from) describes."""
    d = derived_from
    return encoding_from_min_max(np.asarray(d["min"], dtype=F32), np.asarray(d["max"], dtype=F32),
                                 d["bitwidth"], d["symmetric"], axis=d["axis"], strict=d["strict"],
                                 unsigned_symmetric=d["unsigned_symmetric"],
                                 numerics=numerics_from_json(d["numerics"]))


def compute(x: np.ndarray, derived_from: dict) -> tuple:
    """(encoding dict for case.json, outputs {q, x_dq, x_fq}) of x under `derived_from`."""
    enc = derive(derived_from)
    num = numerics_from_json(derived_from["numerics"])
    q = quantize(x, enc, num)
    dt = code_dtype(enc.qmin, enc.qmax)
    outputs = {"q": q.astype(dt), "x_dq": dequantize(q, enc, num).astype(num.dtype),
               "x_fq": quantize_dequantize(x, enc, num)}
    encd = {"scale": np.atleast_1d(enc.scale).astype(np.float64).tolist(),
            "zero_point": np.atleast_1d(enc.zero_point).tolist(), "qmin": enc.qmin,
            "qmax": enc.qmax, "axis": enc.axis, "bitwidth": enc.bitwidth,
            "symmetric": enc.symmetric, "dtype": dt, "derived_from": derived_from}
    return encd, outputs


def _pre_round(x, s32, num: EncodingNumerics):
    """The value refq rounds (x/s in the numerics' arithmetic), for finding exact ties."""
    if num.rounding == "half_away":
        return np.float64(F32(x)) / np.float64(s32)
    if num.fake_quant == "reciprocal_float32":
        return F32(x) * (F32(1) / F32(s32))
    return F32(x) / F32(s32)


def exact_ties(s32, zp, qmin, qmax, num, count=8):
    """float32 x whose pre-rounding value is exactly k + 1/2 for codes around zero (both signs)."""
    out = []
    for k in (0, 1, 2, -1, -2, -3, 5, -6, 10, -11):
        if not qmin - zp <= k < qmax - zp:
            continue
        target = k + 0.5
        x0 = F32(target * float(s32))
        cands = [x0]
        up, down = x0, x0
        for _ in range(4):
            up, down = np.nextafter(up, F32(np.inf)), np.nextafter(down, F32(-np.inf))
            cands += [up, down]
        for c in cands:
            if float(_pre_round(c, s32, num)) == target:
                out.append(float(c))
                break
        if len(out) >= count:
            break
    return out


def _row(rng, lo, hi, s32, zp, qmin, qmax, num):
    s = float(s32)
    special = [0.0, -0.0, (qmin - zp) * s, (qmax - zp) * s, (qmax - zp + 3) * s,
               (qmin - zp - 3) * s, 1e30, -1e30, float(np.float32(lo)), float(np.float32(hi))]
    special += exact_ties(s32, zp, qmin, qmax, num)
    span = max(hi - lo, 1e-3)
    rest = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, K - len(special))
    return np.concatenate([np.asarray(special, dtype=np.float64), rest]).astype(F32)


def quant_case(cid, grid, bits, per_channel, numerics=AIMET_V2, seed=0, note=""):
    symmetric, strict, unsigned_symmetric = GRIDS[grid]
    rng_pt, rng_pc = RANGES[grid]
    ranges = rng_pc if per_channel else [rng_pt]

    def build():
        rng = np.random.default_rng(seed)
        mins = [float(F32(a)) for a, _ in ranges]
        maxs = [float(F32(b)) for _, b in ranges]
        derived = {"min": mins if per_channel else mins[0], "max": maxs if per_channel else maxs[0],
                   "bitwidth": bits, "symmetric": symmetric, "strict": strict,
                   "unsigned_symmetric": unsigned_symmetric, "axis": 0 if per_channel else None,
                   "numerics": numerics_json(numerics)}
        enc = derive(derived)
        scales, zps = np.atleast_1d(enc.scale), np.atleast_1d(enc.zero_point)
        rows = []
        for c in range(4):
            j = c if per_channel else 0
            lo, hi = ranges[j if per_channel else 0]
            rows.append(_row(rng, lo, hi, scales[j], int(zps[j]), enc.qmin, enc.qmax, numerics))
        x = np.stack(rows)
        encd, outputs = compute(x, derived)
        g = Graph([TensorSpec("x", (None, K), "float32")], ["x_out"],
                  [Node("quantizer", "identity", ["x"], ["x_out"])], name=cid).validate()
        lay = "OI" if per_channel else "NC"
        return CaseData(g, {"x": x}, outputs, {}, {"x": encd},
                        layouts={"x": lay, "q": lay, "x_dq": lay, "x_fq": lay})

    gran = "per-channel (axis 0, 4 channels incl. all-zero and all-equal ranges)" if per_channel \
        else "per-tensor"
    desc = (f"{bits}-bit {grid.replace('_', '-')} grid, {gran}: encoding from min/max, then "
            f"quantize, dequantize and fake-quant of zero, end points, saturation and exact ties "
            f"({note or 'AIMET 2.42 numerics'})")
    register(Case(cid, "quant", build, desc, seed=seed, tolerance=dict(EXACT)))


for _grid in GRIDS:
    for _bits in (2, 4, 8, 16):
        for _pc in (False, True):
            quant_case(f"quant.{_grid}.b{_bits}.{'per_channel' if _pc else 'per_tensor'}",
                       _grid, _bits, _pc, seed=_bits)
for _grid, _pc in (("signed", False), ("unsigned", True), ("unsigned_symmetric", False),
                   ("strict", False)):
    quant_case(f"quant.aimet_v1.{_grid}.b8.{'per_channel' if _pc else 'per_tensor'}", _grid, 8,
               _pc, numerics=AIMET_V1, seed=1,
               note="AIMET 1.x numerics: float clamp, round half away, Δ = absmax/127, 0.01 "
                    "minimum range")
