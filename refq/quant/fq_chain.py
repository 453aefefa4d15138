"""A fake quantization, a clamp and another fake quantization fused into one in-place step; a
clamp and the fake quantization after it, likewise.

A simulated convolution whose output and activation (relu, relu6, clip) are both quantized runs,
per element (`fakequant._fake_quant_half_even`; per-tensor encodings, integer clamp, half-even
rounding; f = fl(1/s) or a division by s, as the numerics say):

    fq1     c1 = clip(rint(x·f1), L1, H1);  x1 = c1·s1 + 0        5 passes
    clamp   x2 = clamp(x1)                                         1 pass
    fq2     c2 = clip(rint(x2·f2), L2, H2); y = c2·s2 + 0          5 passes

Every value fq1 produces is c·s1 + 0 for a code c in [L1, H1] (or NaN), so the rest of the chain
is a function G of the code alone, non-decreasing (each step is). The fused step evaluates

    c = rint(x·f1);  y = clip(rint(c·k), lo, hi)·s2 + 0                              7 passes

with one constant k > 0 of the dtype: the first of fl(s1·f2), fl(s1/s2) and their neighbours (a
few units in the last place either side) for which the fused form gives G's output bit for bit on
every code c in [L1, H1] (at most 2^16 of them: `fuse_chain` evaluates the chain's own three
steps on all of them when the plan is built, and fuses only when all agree); lo and hi are the
codes of G(L1) and G(H1).

fq1's clip to [L1, H1] is left out: the check at L1 and H1 gives rint(L1·k) <= lo and
rint(H1·k) >= hi, and c ↦ clip(rint(c·k), lo, hi) is non-decreasing on all floats (a correctly
rounded product by k > 0, rint and clip are), so a code below L1 gives lo, as L1 does, and one
above H1 gives hi, as H1 does, ±inf included. NaN stays NaN in both forms, and both end in + 0,
so a zero result is +0 in both.

A clamp to [a, b] (a bound may be absent: ∓inf) and then fq2 alone (relu6 then its quantizer,
6 passes) fuse into fq2 with the bounds

    lo' = clip(g(a), L2, H2),  hi' = clip(g(b), L2, H2),  g(v) = rint(v·f2) (f2's own operation)

in 5 passes: u = rint(x·f2) is a non-decreasing function of x, so u of the clamped x is
clip(u, g(a), g(b)) (g(a) <= g(b)), and clip(clip(u, A, B), L2, H2) = clip(u, clip(A, L2, H2),
clip(B, L2, H2)) for A <= B. NaN stays NaN, and + 0 ends both.
"""
from __future__ import annotations

import numpy as np

from .fakequant import BLOCK, HalfEvenFactors, fake_quantize_inplace
from .grid import Encoding
from .numerics import AIMET_V2, EncodingNumerics

__all__ = ["InplaceFakeQuant", "FusedFakeQuantChain", "fuse_chain", "fuse_clamp"]

#: Units in the last place tried either side of each candidate constant k.
K_NEIGHBOURS = 4


class InplaceFakeQuant:
    """`fake_quantize_inplace(a, enc, numerics)` as an in-place hook that keeps its encoding, so
    that it can fuse with the steps beside it in a plan's epilogue (`then`, `after`)."""

    def __init__(self, enc: Encoding, numerics: EncodingNumerics = AIMET_V2):
        self.enc, self.numerics = enc, numerics
        # a per-tensor encoding's constants, formed once (the same for every block)
        self.factors = HalfEvenFactors(enc, numerics, np.zeros(1, numerics.dtype)) \
            if _fusable(self) else None

    def __call__(self, a: np.ndarray) -> None:
        fake_quantize_inplace(a, self.enc, self.numerics, self.factors)

    def then(self, step, nxt):
        """One in-place step equal to self, then `step`, then `nxt` (`fuse_chain`), or None."""
        return fuse_chain(self, step, nxt)

    def after(self, step):
        """One in-place step equal to the clamp `step`, then self (`fuse_clamp`), or None."""
        return fuse_clamp(step, self)


def _fusable(hook) -> bool:
    """A per-tensor, integer-clamped, half-even `InplaceFakeQuant`."""
    if not isinstance(hook, InplaceFakeQuant):
        return False
    n, e = hook.numerics, hook.enc
    return n.clamp == "integer" and n.rounding == "half_even" and e.axis is None and \
        not e.is_blocked and not e.is_pass_through


def fuse_chain(first, step, second):
    """A `FusedFakeQuantChain` equal to first, step, second applied in place one after the other
    (module docstring), or None: when a hook is not a per-tensor, integer-clamped, half-even
    `InplaceFakeQuant`, the two use different numerics, `step` is not marked `monotone`, or no
    constant k reproduces the chain on every code."""
    if not (_fusable(first) and _fusable(second) and first.numerics == second.numerics
            and getattr(step, "monotone", False)):
        return None
    dt, f1, f2 = first.numerics.dtype, first.factors, second.factors
    codes = np.arange(int(f1.lo), int(f1.hi) + 1).astype(dt)
    chain = codes * f1.scale + dt.type(0)     # fq1's output for each code
    step(chain)
    second(chain)
    lo, hi = (np.rint(chain[i] / f2.scale) for i in (0, -1))
    for k in _candidates(f1.scale, f2, dt):
        fused = np.rint(codes * k)
        np.clip(fused, lo, hi, out=fused)
        fused *= f2.scale
        fused += 0
        if fused.tobytes() == chain.tobytes():
            return FusedFakeQuantChain(f1, k, lo, hi, f2.scale)
    return None


def fuse_clamp(step, hook):
    """A `FusedFakeQuantChain` equal to the clamp `step` (an `refq.layers.inplace.Clamp`), then
    `hook` (module docstring), or None when the hook is not fusable or step is no Clamp."""
    if not (_fusable(hook) and getattr(step, "monotone", False) and hasattr(step, "lo")):
        return None
    dt, f = hook.numerics.dtype, hook.factors
    ends = np.array([-np.inf if step.lo is None else step.lo,
                     np.inf if step.hi is None else step.hi], dt)
    f.apply(ends, f.factor, out=ends)
    np.rint(ends, out=ends)
    lo, hi = np.clip(ends, f.lo, f.hi)
    return FusedFakeQuantChain(f, None, lo, hi, f.scale)


def _candidates(s1, f2, dt):
    """k candidates, each finite and > 0: fl(s1·f2) (or fl(s1/s2) for divide numerics), fl(s1/s2)
    and their K_NEIGHBOURS nearest floats either side."""
    s1 = dt.type(s1)
    base = [s1 * f2.factor if f2.apply is np.multiply else s1 / f2.factor, s1 / f2.scale]
    seen = []
    for b in base:
        for d in range(K_NEIGHBOURS + 1):
            for k in ((b,) if d == 0 else (_step_ulps(b, -d), _step_ulps(b, d))):
                k = dt.type(k)
                if np.isfinite(k) and k > 0 and k not in seen:
                    seen.append(k)
    return seen


def _step_ulps(v, n):
    for _ in range(abs(n)):
        v = np.nextafter(v, v.dtype.type(np.inf if n > 0 else 0))
    return v


class FusedFakeQuantChain:
    """fq1, a clamp and fq2 in place on a block, in 7 passes; with k None, a clamp and fq2 in 5
    (module docstring): f1 the first quantization's constants (fq2's for k None)."""

    def __init__(self, f1: HalfEvenFactors, k, lo, hi, scale2):
        self.f1, self.k, self.lo, self.hi, self.scale2 = f1, k, lo, hi, scale2

    def __call__(self, a: np.ndarray) -> None:
        f1 = self.f1
        parts = [a]
        if a.flags.c_contiguous:   # cache-sized runs
            flat = a.reshape(-1)
            parts = [flat[i:i + BLOCK] for i in range(0, flat.size, BLOCK)]
        for v in parts:
            f1.apply(v, f1.factor, out=v)
            np.rint(v, out=v)
            if self.k is not None:
                v *= self.k
                np.rint(v, out=v)
            np.clip(v, self.lo, self.hi, out=v)
            v *= self.scale2
            v += 0
