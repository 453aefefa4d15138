"""glibc's single-precision tanh (`tanhf`, with its `expm1f`), vectorised: LiteRT's float32
TANH calls libm, and glibc's result is not the correctly rounded tanh (38 of 288 values of the fer
dynamic-range model differ from float64 tanh rounded to float32), so the float reference kernels
(`float_ref`) port it operation by operation."""
from __future__ import annotations

import numpy as np

__all__ = ["tanhf"]

F32 = np.float32


def _expm1f(x):
    """expm1 of float32 x (|x| < 64) by glibc's fdlibm `expm1f` (s_expm1f.c): reduction
    x = k·ln2 + r (ln2_hi + ln2_lo), the rational approximation with Q1..Q5, then the
    reconstruction of each range of k; every operation in float32."""
    one, half = F32(1), F32(0.5)
    neg, hx = x < 0, x.view(np.int32) & 0x7fffffff
    ln2_hi, ln2_lo = F32(6.9313812256e-01), F32(9.0580006145e-06)
    near = (hx > 0x3eb17218) & (hx < 0x3F851592)            # 0.5·ln2 < |x| < 1.5·ln2
    far = hx >= 0x3F851592
    k = np.where(near, np.where(neg, -1, 1), 0)
    k = np.where(far, np.trunc(F32(1.4426950216) * x + np.where(neg, -half, half)), k)
    k = k.astype(np.int32)
    t = k.astype(F32)
    hi = np.where(near, x - t * ln2_hi, np.where(far, x - t * ln2_hi, x))
    lo = np.where(near | far, t * ln2_lo, F32(0))
    r = np.where(near | far, hi - lo, x)
    c = np.where(near | far, (hi - r) - lo, F32(0))
    hfx = half * r
    hxs = r * hfx
    q = (F32(-3.3333335072e-02), F32(1.5873016091e-03), F32(-7.9365076090e-05),
         F32(4.0082177293e-06), F32(-2.0109921195e-07))
    r1 = one + hxs * (q[0] + hxs * (q[1] + hxs * (q[2] + hxs * (q[3] + hxs * q[4]))))
    t3 = F32(3) - r1 * hfx
    e = hxs * ((r1 - t3) / (F32(6) - r * t3))
    e2 = (r * (e - c) - c) - hxs
    kk = np.clip(k, -30, 100)

    def scaled(y):       # y·2^k by adding k to the exponent field
        return (y.view(np.int32) + (kk << 23)).view(F32)

    y = np.where(k == 0, r - (r * e - hxs), scaled(one - (e2 - r)) - one)
    y = np.where(k == -1, half * (r - e2) - half, y)
    y = np.where(k == 1, np.where(r < F32(-0.25), F32(-2) * (e2 - (r + half)),
                                  one + F32(2) * (r - e2)), y)
    mid = (k >= 2) & (k < 23)
    t_mid = (0x3f800000 - (0x1000000 >> np.clip(kk, 0, 22))).astype(np.int32).view(F32)
    y = np.where(mid, scaled(t_mid - (e2 - r)), y)
    big = (k >= 23) & (k <= 56)
    t_big = ((0x7f - np.clip(kk, 23, 56)) << 23).astype(np.int32).view(F32)
    y = np.where(big, scaled((r - (e2 + t_big)) + one), y)
    return np.where(hx < 0x33000000, x, y)


def tanhf(x):
    """tanh of float32 x by glibc's fdlibm `tanhf` (s_tanhf.c), all in float32:
    |x| >= 22: ±1; 1 <= |x|: t = expm1f(2|x|), z = 1 − 2/(t + 2); |x| < 1: t = expm1f(−2|x|),
    z = −t/(t + 2); |x| < 2^−55: x·(1 + x); y = z with the sign of x."""
    x = np.asarray(x).astype(F32, copy=False)
    ax, two, one = np.abs(x), F32(2), F32(1)
    ix = ax.view(np.int32)
    with np.errstate(over="ignore", invalid="ignore"):
        t1, t2 = _expm1f(two * np.minimum(ax, F32(22))), _expm1f(-two * ax)
        z = np.where(ix >= 0x3f800000, one - two / (t1 + two), -t2 / (t2 + two))
    z = np.where(ix < 0x41b00000, z, one)
    z = np.where(ix < 0x24000000, ax * (one + ax), z)
    return np.where(np.signbit(x), -z, z).astype(F32)
