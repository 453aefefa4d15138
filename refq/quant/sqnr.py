"""SQNR candidate search over a histogram: AIMET 2.42's `SqnrEncodingAnalyzer` and its subclass
`TfEnhancedEncodingAnalyzer` (aimet.md §0.2.3 (b)–(e), §2.3). All arithmetic is float32 (fl).

Inputs per channel: the histogram's stored range (min, max), edges e and counts. N = 2^b − 1,
ms = min(2^−23, 0.01/N), D = number of delta candidates, K = min(N + 2, offset candidates).
    m = min(min, 0), M = max(max, 0), M = max(M, fl(m + fl(ms·N)))
Asymmetric candidates (D·K):
    Δm = fl(fl(M − m)/N), oo = round_he(fl(m/Δm)), obsMin = fl(Δm·oo), obsMax = fl(obsMin + fl(Δm·N))
    Δ_k = fl(fl(Δm·k)/(D − 1)), k = 1..D                          (17 deltas: k/16)
    o_j = round_he(−N + j·N/(K − 2)), j = 0..K − 2, then oo       (8-bit: −255, −242, −228, …, −13, 0, oo)
    per pair: tmin = fl(Δ_k·o_j), tmax = fl(tmin + fl(Δ_k·N)), tmin = max(obsMin, tmin),
    tmax = min(obsMax, tmax); candidate Δ = max(fl(fl(tmax − tmin)/N), ms), o = round_he(fl(tmin/Δ))
Symmetric candidates (D): Δm = fl(fl(2·max(M, −m))/N), Δ_k = max(fl(fl(Δm·k)/(D − 1)), ms), one
    offset (−N)//2 (−128 at 8-bit): q ∈ [0, N] is the signed grid shifted by 128.
Cost of a candidate (Δ, o): bin midpoints mid_j = fl(fl(e_0 + h/2) + fl(h·j)), h = fl(e_1 − e_0);
    q = round_he(fl(fl(mid/Δ) − o)), clipped = q < 0 or q > N, q = clamp(q, 0, N),
    err = fl(fl(fl(fl(fl(q + o)·Δ) − mid)²)·count), times γ if clipped; cost = float32 Σ_j err
    (NumPy pairwise; the order only matters for exact ties).
Selection: the first minimum over the delta-major flattened grid (ties: smaller delta, then earlier
    offset). Result min = fl(o·Δ), max = fl(min + fl(N·Δ)), handed to `encoding_from_range` (the
    quantizer's set_range: s = fl(fl(max − min)/N), which can differ from Δ by an ulp).
The offset grid is computed in float64: no value of N·i/(K − 2) is within 1/38 of a .5 tie for
b ≤ 16, so float32 evaluation rounds identically.
"""
from __future__ import annotations

import numpy as np

from ..errors import QuantError
from .analyzer_base import Analyzer
from .encoding import AIMET_V2, Encoding, check_bitwidth, encoding_from_range, minimum_scale
from .histogram import HistogramObserver

__all__ = ["SqnrAnalyzer", "TfEnhancedAnalyzer", "sqnr_candidates", "sqnr_search", "offset_grid"]

_F32 = np.float32
_CHUNK_ELEMENTS = 1 << 22   # bound on candidates × bins × channels per vectorised cost block


def offset_grid(num_steps: int, offset_candidates: int) -> np.ndarray:
    """The K − 1 fixed asymmetric offsets round_he(−N + j·N/(K − 2)), K = min(N + 2, candidates)."""
    k = min(num_steps + 2, offset_candidates)
    j = np.arange(k - 1, dtype=np.float64)
    return np.rint(-num_steps + j * (num_steps / (k - 2))).astype(np.float32)


def sqnr_candidates(stat_min, stat_max, bitwidth, symmetric, *, delta_candidates,
                    offset_candidates=21):
    """Candidate (Δ, o) per channel as float32 arrays of shape (C, D, K) (symmetric: K = 1)."""
    n = 2 ** bitwidth - 1
    nf, ms = _F32(n), minimum_scale(n)
    m = np.minimum(stat_min, _F32(0))
    big_m = np.maximum(np.maximum(stat_max, _F32(0)), m + _F32(float(ms) * n))
    k = np.arange(1, delta_candidates + 1, dtype=np.float32)
    div = _F32(delta_candidates - 1)
    if symmetric:
        dm = (_F32(2) * np.maximum(big_m, -m)) / nf
        deltas = np.maximum((dm[:, None] * k) / div, ms)[:, :, None]
        return deltas, np.full_like(deltas, _F32((-n) // 2))
    dm = (big_m - m) / nf
    oo = np.rint(m / dm)
    obs_min = dm * oo
    obs_max = obs_min + dm * nf
    deltas = ((dm[:, None] * k) / div)[:, :, None]                                   # (C, D, 1)
    grid = offset_grid(n, offset_candidates)
    offsets = np.concatenate([np.broadcast_to(grid, (len(m), grid.size)), oo[:, None]], axis=1)
    tmin = deltas * offsets[:, None, :]                                               # (C, D, K)
    tmax = tmin + deltas * nf
    tmin = np.maximum(obs_min[:, None, None], tmin)
    tmax = np.minimum(obs_max[:, None, None], tmax)
    delta = np.maximum((tmax - tmin) / nf, ms)
    return delta, np.rint(tmin / delta)


def _costs(delta, offset, edges, counts, n, gamma):
    """float32 cost (C, D, K) of every candidate against every channel's histogram."""
    b = counts.shape[1]
    h = edges[:, 1] - edges[:, 0]
    mids = ((edges[:, 0] + h / _F32(2))[:, None] + h[:, None] * np.arange(b, dtype=np.float32))
    mids = mids[:, None, None, :]                                                    # (C, 1, 1, B)
    d, o = delta[..., None], offset[..., None]                                       # (C, D, K, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint(mids / d - o)
        clipped = (q < 0) | (q > _F32(n))
        q = np.clip(q, _F32(0), _F32(n))
        diff = (q + o) * d - mids
        err = (diff * diff) * counts[:, None, None, :]
        err = np.where(clipped, err * _F32(gamma), err)
        return err.sum(axis=-1, dtype=np.float32)


def sqnr_search(stat_min, stat_max, edges, counts, bitwidth, symmetric, *, delta_candidates,
                offset_candidates=21, gamma=3.0):
    """(min, max) float32 (C,) of the best candidate per channel (module docstring)."""
    n = 2 ** bitwidth - 1
    delta, offset = sqnr_candidates(stat_min, stat_max, bitwidth, symmetric,
                                    delta_candidates=delta_candidates,
                                    offset_candidates=offset_candidates)
    channels, per_channel = delta.shape[0], delta[0].size * counts.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // per_channel)
    best = np.empty(channels, dtype=np.int64)
    for c0 in range(0, channels, chunk):
        sl = slice(c0, c0 + chunk)
        cost = _costs(delta[sl], offset[sl], edges[sl], counts[sl], n, gamma)
        best[sl] = cost.reshape(cost.shape[0], -1).argmin(axis=1)
    ch = np.arange(channels)
    d_best = delta.reshape(channels, -1)[ch, best]
    o_best = offset.reshape(channels, -1)[ch, best]
    lo = o_best * d_best
    return lo, lo + _F32(n) * d_best


class SqnrAnalyzer(Analyzer):
    """AIMET 2.42 `SqnrEncodingAnalyzer`: a histogram (no growth limit by default) and the SQNR search.

    Defaults are AIMET's: 2048 bins, 17 asymmetric / 101 symmetric delta candidates, 21 offset
    candidates, γ = 3 (clipped-bin weight), p = 2. γ = 1 is a plain histogram MSE search ("mse").
    Only AIMET 2.x grids: symmetric = signed [−2^(b−1), 2^(b−1)−1], asymmetric = [0, 2^b−1].
    """

    kind = "sqnr"

    def __init__(self, axis: int | None = None, *, num_bins: int = 2048,
                 asymmetric_delta_candidates: int = 17, symmetric_delta_candidates: int = 101,
                 offset_candidates: int = 21, gamma: float = 3.0, growth_limit: float | None = None):
        super().__init__(axis)
        for name, value, low in (("asymmetric_delta_candidates", asymmetric_delta_candidates, 2),
                                 ("symmetric_delta_candidates", symmetric_delta_candidates, 2),
                                 ("offset_candidates", offset_candidates, 3)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise QuantError(f"{self.kind}: {name} must be an integer ≥ {low}, got {value!r}")
        if not (isinstance(gamma, (int, float, np.number)) and np.isfinite(gamma) and gamma > 0):
            raise QuantError(f"{self.kind}: gamma must be a positive number, got {gamma!r}")
        self.asymmetric_delta_candidates = int(asymmetric_delta_candidates)
        self.symmetric_delta_candidates = int(symmetric_delta_candidates)
        self.offset_candidates = int(offset_candidates)
        self.gamma = float(gamma)
        self.histogram = HistogramObserver(num_bins, growth_limit)

    def update(self, x) -> None:
        self.histogram.update(self.rows(x))

    def compute_range(self, bitwidth, symmetric):
        """The chosen (min, max), float32 (C,), before the quantizer's set_range."""
        b = check_bitwidth(bitwidth)
        if b == 32:
            raise QuantError(f"{self.kind} analyzer: a 32-bit (pass-through) quantizer has no search")
        hist = self.histogram
        self._require_data(not hist.empty)
        d = self.symmetric_delta_candidates if symmetric else self.asymmetric_delta_candidates
        return sqnr_search(hist.min, hist.max, hist.edges, hist.counts, b, symmetric,
                           delta_candidates=d, offset_candidates=self.offset_candidates,
                           gamma=self.gamma)

    def compute_encoding(self, bitwidth, symmetric, *, numerics=AIMET_V2, strict=False,
                         unsigned_symmetric=False) -> Encoding:
        self._require_v2(numerics)
        if strict or unsigned_symmetric:
            raise QuantError(f"{self.kind} analyzer: strict and unsigned symmetric grids are AIMET 1.x "
                             "only; AIMET 2.42's search covers the signed and unsigned grids")
        lo, hi = self.compute_range(bitwidth, symmetric)
        return encoding_from_range(self._out(lo), self._out(hi), bitwidth, symmetric, axis=self.axis,
                                   numerics=numerics)


class TfEnhancedAnalyzer(SqnrAnalyzer):
    """AIMET 2.42 `TfEnhancedEncodingAnalyzer` (the tf_enhanced scheme, §0.2.3): SqnrAnalyzer with the
    1.x constants — 512 bins, 17/101/21 candidates, γ = 3 — and a histogram growth cap g = 3 (at most
    the first range plus 1.5R per side). `growth_limit` replaces AIMET's `set_growth_limit` class
    method (which changes quantizers created afterwards) by a per-analyzer option."""

    kind = "tf_enhanced"

    def __init__(self, axis: int | None = None, *, growth_limit: float = 3.0):
        super().__init__(axis, num_bins=512, asymmetric_delta_candidates=17,
                         symmetric_delta_candidates=101, offset_candidates=21, gamma=3.0,
                         growth_limit=growth_limit)
