"""Naive Python-integer transcriptions of the integer kernels' semantics (test references).

Everything here works on Python ints (and explicit float32/float64 scalars where a definition
computes in floating point) with explicit loops over n, i, j, o and the kernel taps; nothing is
vectorised and no refq.fixedpoint function is called, so a kernel compared against these at
tolerance 0 is checked against an independent transcription of its docstring.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

I32 = (-(1 << 31), (1 << 31) - 1)


# ---- scalar primitives (gemmlowp / TFLite / TOSA definitions, literal) -----------------------
def c_div(a: int, b: int) -> int:
    """C integer division (truncation toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def wrap(x: int, n: int = 32) -> int:
    m = 1 << n
    x %= m
    return x - m if x >= m // 2 else x


def sat(x: int, n: int) -> int:
    return max(-(1 << (n - 1)), min((1 << (n - 1)) - 1, x))


def srdhm(a: int, b: int) -> int:
    if a == b == I32[0]:
        return I32[1]
    p = a * b
    nudge = (1 << 30) if p >= 0 else 1 - (1 << 30)
    return c_div(p + nudge, 1 << 31)


def rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def round_half_away(f: Fraction) -> int:
    """Nearest integer of an exact rational, ties away from zero."""
    fl = math.floor(f)
    d = f - fl
    if d > Fraction(1, 2) or (d == Fraction(1, 2) and f > 0):
        return fl + 1
    return fl


def round_half_even_float(v: float) -> int:
    return int(round(v))  # Python rounds floats half to even


def round_half_away_float(v: float) -> int:
    return round_half_away(Fraction(v))


def mbqm(x: int, m: int, shift: int, single: bool = False) -> int:
    if single:
        total = 31 - shift
        return (x * m + (1 << (total - 1))) >> total
    left, right = max(shift, 0), max(-shift, 0)
    return rdbpot(srdhm(wrap(x * (1 << left)), m), right)


def apply_scale_32(v: int, m: int, s: int, double_round: bool) -> int:
    r = 1 << (s - 1)
    if double_round and s > 31:
        r += (1 << 30) if v >= 0 else -(1 << 30)
    return (v * m + r) >> s


def scaled(acc: int, m, sh, scheme: str, zp: int = 0, zp_before: bool = False) -> int:
    """The scheme's scaled value of acc, zero point added (before or after rounding)."""
    if scheme in ("tflite_double", "single_round"):
        return mbqm(acc, int(m), int(sh), scheme == "single_round") + zp
    if scheme in ("tosa_double", "tosa_single"):
        return apply_scale_32(acc, int(m), int(sh), scheme == "tosa_double") + zp
    if scheme == "float32_rne":
        v = np.float32(np.float64(acc)) * np.float32(m)
        if zp_before:
            return round_half_even_float(float(v + np.float32(zp)))
        return round_half_even_float(float(v)) + zp
    v = float(acc) * float(m)
    rnd = round_half_away_float if scheme == "float_half_away" else round_half_even_float
    return rnd(v + zp) if zp_before else rnd(v) + zp


def requant(acc: int, m, sh, scheme: str, zp: int, lo: int, hi: int, zp_before=False) -> int:
    return max(lo, min(hi, scaled(acc, m, sh, scheme, zp, zp_before)))


def policy(acc: int, bits: int, pol: str) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if pol == "wrap":
        return wrap(acc, bits)
    if pol == "saturate":
        return max(lo, min(hi, acc))
    assert lo <= acc <= hi, "reference: accumulator overflow"
    return acc


def pick(arr, o):
    """Per-channel parameter value o of a [C] or [1] array."""
    a = np.asarray(arr).ravel()
    return a[0] if a.size == 1 else a[o]


# ---- geometry ----------------------------------------------------------------------------------
def pads_and_out(n: int, k: int, s: int, d: int, padding: str, explicit=(0, 0)):
    keff = (k - 1) * d + 1
    if padding == "valid":
        b, a = 0, 0
    elif padding == "explicit":
        b, a = explicit
    else:
        out = -(-n // s)
        total = max((out - 1) * s + keff - n, 0)
        b, a = total // 2, total - total // 2
    return b, (n + b + a - keff) // s + 1


# ---- layers ------------------------------------------------------------------------------------
def conv_acc(x, w, bias, attrs):
    """acc[n][i][j][o] as nested Python ints, padding taps skipped (== padding with input_zp)."""
    N, H, W, C = x.shape
    O, KH, KW, CG = w.shape
    (sh, sw), (dh, dw), g = attrs["strides"], attrs["dilations"], attrs["groups"]
    p = attrs.get("pads", (0, 0, 0, 0))
    pt, oh = pads_and_out(H, KH, sh, dh, attrs["padding"], (p[0], p[1]))
    pl, ow = pads_and_out(W, KW, sw, dw, attrs["padding"], (p[2], p[3]))
    zx, zw = attrs["input_zp"], attrs["weight_zp"]
    opg = O // g
    out = np.zeros((N, oh, ow, O), dtype=object)
    for n in range(N):
        for i in range(oh):
            for j in range(ow):
                for o in range(O):
                    grp = o // opg
                    acc = 0
                    for u in range(KH):
                        for v in range(KW):
                            y, xx = i * sh - pt + u * dh, j * sw - pl + v * dw
                            if not (0 <= y < H and 0 <= xx < W):
                                continue
                            for c in range(CG):
                                acc += (int(x[n, y, xx, grp * CG + c]) - zx) * \
                                       (int(w[o, u, v, c]) - zw)
                    if bias is not None:
                        acc += int(bias[o])
                    out[n, i, j, o] = acc
    return out


def dense_acc(x, w, bias, attrs):
    x2 = x.reshape(-1, x.shape[-1])
    out = np.zeros((x2.shape[0], w.shape[0]), dtype=object)
    for r in range(x2.shape[0]):
        for o in range(w.shape[0]):
            acc = sum((int(x2[r, i]) - attrs["input_zp"]) * (int(w[o, i]) - attrs["weight_zp"])
                      for i in range(w.shape[1]))
            out[r, o] = acc + (int(bias[o]) if bias is not None else 0)
    return out.reshape(x.shape[:-1] + (w.shape[0],))


def finish(acc, params, attrs, bits=32, pol="error"):
    """policy + per-channel requantization + clamp of an object array of accumulators."""
    out = np.zeros(acc.shape, dtype=np.int64)
    scheme = attrs["scheme"]
    for idx in np.ndindex(acc.shape):
        o = idx[-1]
        a = policy(int(acc[idx]), bits, pol)
        if scheme.startswith("float"):
            m, sh = pick(params["real_multiplier"], o), 0
        else:
            m, sh = pick(params["multiplier"], o), pick(params["shift"], o)
        out[idx] = requant(a, m, sh, scheme, attrs["output_zp"], attrs["act_min"],
                           attrs["act_max"], attrs.get("zp_before_round", False))
    return out


def windows(H, W, k, s, padding, pads=(0, 0, 0, 0)):
    """[(i, j, [(y, x) in-bounds taps])] of a pooling window."""
    pt, oh = pads_and_out(H, k[0], s[0], 1, padding, (pads[0], pads[1]))
    pl, ow = pads_and_out(W, k[1], s[1], 1, padding, (pads[2], pads[3]))
    res = []
    for i in range(oh):
        for j in range(ow):
            taps = [(i * s[0] - pt + u, j * s[1] - pl + v)
                    for u in range(k[0]) for v in range(k[1])]
            res.append((i, j, [(y, x) for y, x in taps if 0 <= y < H and 0 <= x < W]))
    return oh, ow, res


def reciprocal_scale(count: int):
    k = (count - 1).bit_length()
    return (((1 << 30) + 1) << k) // count, 30 + k


# ---- gemmlowp, scalar and literal --------------------------------------------------------------
def g_sat_shl(x: int, e: int) -> int:
    if e == 0:
        return x
    t = (1 << (31 - e)) - 1
    return I32[1] if x > t else I32[0] if x < -t else x * (1 << e)


def g_half_sum(a: int, b: int) -> int:
    s = a + b
    return c_div(s + (1 if s >= 0 else -1), 2)


def g_exp_interval(a: int) -> int:
    x = wrap(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_4 = rdbpot(x4, 2)
    p = rdbpot(wrap(srdhm(wrap(x4_4 + x3), 715827883) + x2), 1)
    c = 1895147668
    return wrap(c + srdhm(c, wrap(x + p)))


def g_exp_neg(a: int, ib: int) -> int:
    frac = 31 - ib
    q = 1 << (frac - 2)
    m = (a & (q - 1)) - q
    r = g_exp_interval(g_sat_shl(m, ib))
    rem = m - a
    for k, mult in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                    (2, 39332535), (3, 720401), (4, 242)):
        if ib > k and rem & (1 << (frac + k)):
            r = srdhm(r, mult)
    if ib > 5 and a < -(1 << (36 - ib)):
        r = 0
    return I32[1] if a == 0 else r


def g_newton(d: int) -> int:
    x = wrap(1515870810 + srdhm(d, -1010580540))
    for _ in range(3):
        x = wrap(x + g_sat_shl(srdhm(x, wrap((1 << 29) - srdhm(d, x))), 2))
    return x


def g_one_over_one_plus_x(a: int) -> int:
    return g_sat_shl(g_newton(g_half_sum(a, I32[1])), 1)


def g_one_minus_x_over_one_plus_x(a: int) -> int:
    return g_sat_shl(wrap(g_newton(g_half_sum(a, I32[1])) - (1 << 29)), 2)


def g_logistic(a: int, ib: int) -> int:
    if a == 0:
        return 1 << 30
    p = g_one_over_one_plus_x(g_exp_neg(-abs(a), ib))
    return p if a > 0 else I32[1] - p


def g_tanh(a: int, ib: int) -> int:
    if a == 0:
        return 0
    t = g_one_minus_x_over_one_plus_x(g_exp_neg(-abs(a), ib + 1))
    return t if a > 0 else -t


def softmax_row_tflite(row, mult, left, diff_min, zp_out, lo, hi):
    mx = max(row)
    exps, total = [], 0
    for v in row:
        d = v - mx
        if d >= diff_min:
            e = g_exp_neg(srdhm(wrap(d * (1 << left)), mult), 5)
            exps.append(e)
            total = wrap(total + rdbpot(e, 12))
        else:
            exps.append(None)
    headroom = 32 - total.bit_length()
    nbits = 12 - headroom
    scale = g_one_over_one_plus_x(wrap((total << headroom) - (1 << 31)))
    out = []
    for e in exps:
        if e is None:
            out.append(max(lo, min(hi, zp_out)))
        else:
            out.append(max(lo, min(hi, rdbpot(srdhm(scale, e), nbits + 31 - 8) + zp_out)))
    return out
