"""The streaming histogram of AIMET 2.42's `_HistogramObserver` (aimet.md §0.2.3 (a), §2.3), float32.

One histogram of B bins per channel (rows of a (C, n) array), all channels updated at once.
fl = rounding to float32; every step below is float32 arithmetic.

First batch (per channel): mn, mx = extremes of the finite values; [lo, hi] = [mn − 0.5, mx + 0.5] if
mn == mx else [mn, mx]; step = fl(fl(hi − lo)/B); edges e_i = fl(fl(i·step) + lo), i = 0..B. Counts are
`histc` over [e_0, e_B]. The stored min/max are the raw mn, mx.

histc over [a, b] (torch.histc on CPU, plus AIMET's end-bin additions): a finite x in [a, b] goes to
bin trunc(fl(fl(fl(x − a)·B)/fl(b − a))), capped at B − 1; x < a (including −inf) is added to bin 0 and
x > b (including +inf) to bin B − 1; NaN is dropped.

Growth cap (`growth_limit` g, None = unlimited), fixed by the first histogram: R = fl(e_B − e_0),
L = fl(e_0 − fl(R·g/2)), U = fl(e_B + fl(R·g/2)); the histogram never spans more than [L, U].

Later batches: with nmin, nmax the finite extremes of the batch, lo' = min(max(nmin, L), e_0) and
hi' = min(max(nmax, e_B), U). Unless (lo', hi') equals the stored (min, max) exactly, the counts are
re-binned onto [lo', hi']: w' = fl(fl(hi' − lo')/B), w = fl(e_1 − e_0); old bin i (left edge s_i,
count c_i) goes to j = min(int(fl(fl(s_i − lo')/w')), B − 1) with
part = min(round_he(fl(fl(fl(end − s_i)/w)·c_i)), c_i), end = fl(lo' + fl(w'·(j + 1))); a positive
remainder c_i − part goes to min(int(fl(fl(fl(s_i + w') − lo')/w')), B − 1). Then the batch's histc over
[lo', hi'] is added (so values beyond the cap land in the end bins), the edges are rebuilt from
(lo', hi') as in the first batch, and the stored min/max become lo', hi'.

Counts are float32 integers: exact while a bin holds fewer than 2^24 samples (refq counts in int64 and
rounds once; torch accumulates in float32, which differs only beyond that).
"""
from __future__ import annotations

import numpy as np

from ..errors import QuantError

__all__ = ["HistogramObserver", "finite_extremes"]

_F32 = np.float32


def finite_extremes(rows: np.ndarray, what: str, allow_empty: bool = False):
    """Per-row (min, max) over the finite values of a float32 (C, n) array; QuantError if a row has
    none, or with allow_empty (+inf, −inf) for it (`check_finite_extremes` raises the error later).

    The plain min and max come first: NaN propagates through them and ±inf is an extreme, so
    when both are finite every value is, and they are the answer (two passes instead of four)."""
    mn, mx = rows.min(axis=1), rows.max(axis=1)
    if np.isfinite(mn).all() and np.isfinite(mx).all():
        return mn, mx
    finite = np.isfinite(rows)
    if not finite.all(axis=1).all():
        if not allow_empty:
            check_finite_extremes(np.where(finite.any(axis=1), 0, np.inf), what)
        return (np.where(finite, rows, np.inf).min(axis=1).astype(np.float32),
                np.where(finite, rows, -np.inf).max(axis=1).astype(np.float32))
    return rows.min(axis=1), rows.max(axis=1)


def check_finite_extremes(mn: np.ndarray, what: str):
    """QuantError naming the first row whose min over the finite values is +inf (none there)."""
    bad = np.flatnonzero(np.asarray(mn) == np.inf)
    if bad.size:
        raise QuantError(f"{what}: channel {int(bad[0])} of the batch holds no finite value")


def _edges(lo: np.ndarray, hi: np.ndarray, num_bins: int) -> np.ndarray:
    step = (hi - lo) / _F32(num_bins)
    return np.arange(num_bins + 1, dtype=np.float32)[None, :] * step[:, None] + lo[:, None]


def _histc(rows: np.ndarray, a: np.ndarray, b: np.ndarray, num_bins: int) -> np.ndarray:
    """(C, B) float32 counts of `rows` over [a_c, b_c] per channel (module docstring)."""
    c = rows.shape[0]
    a_, b_ = a[:, None], b[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        inside = (rows >= a_) & (rows <= b_)
        pos = ((rows - a_) * _F32(num_bins)) / (b_ - a_)
    idx = np.minimum(np.trunc(np.where(inside, pos, 0)), num_bins - 1).astype(np.int64)
    flat = (idx + (np.arange(c, dtype=np.int64) * num_bins)[:, None])[inside]
    counts = np.bincount(flat, minlength=c * num_bins).reshape(c, num_bins)
    counts[:, 0] += (rows < a_).sum(axis=1)
    counts[:, -1] += (rows > b_).sum(axis=1)
    return counts.astype(np.float32)


def _rebin(counts, edges, lo, hi, num_bins):
    """Re-bin (C, B) counts with `edges` onto [lo_c, hi_c] (module docstring), float32."""
    c = counts.shape[0]
    w_new = ((hi - lo) / _F32(num_bins))[:, None]
    w_old = (edges[:, 1] - edges[:, 0])[:, None]
    lo_ = lo[:, None]
    left = edges[:, :num_bins]
    j = np.minimum(((left - lo_) / w_new).astype(np.int32), num_bins - 1)
    end = lo_ + w_new * (j + 1).astype(np.float32)
    part = np.minimum(np.rint(((end - left) / w_old) * counts), counts)
    rest = counts - part
    j2 = np.minimum((((left + w_new) - lo_) / w_new).astype(np.int32), num_bins - 1)
    base = (np.arange(c, dtype=np.int64) * num_bins)[:, None]
    out = np.bincount((base + j).ravel(), weights=part.ravel().astype(np.float64), minlength=c * num_bins)
    out += np.bincount((base + j2).ravel(), weights=np.where(rest > 0, rest, 0).ravel().astype(np.float64),
                       minlength=c * num_bins)
    return out.reshape(c, num_bins).astype(np.float32)


class HistogramObserver:
    """AIMET 2.42's streaming histogram, one per channel. `update(rows)` takes a float32 (C, n) array.

    Attributes after the first update: `counts` (C, B) float32, `edges` (C, B+1) float32, `min`/`max`
    (C,) float32 (the stored range, see module docstring), `cap` = (L, U) or None.
    """

    def __init__(self, num_bins: int, growth_limit: float | None = None):
        if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
            raise QuantError(f"num_bins must be an integer ≥ 2, got {num_bins!r}")
        if growth_limit is not None and not (np.isfinite(growth_limit) and growth_limit >= 1):
            raise QuantError(f"growth_limit must be None (unlimited) or a number ≥ 1, got {growth_limit!r}")
        self.num_bins = int(num_bins)
        self.growth_limit = None if growth_limit is None else float(growth_limit)
        self.counts = self.edges = self.min = self.max = self.cap = None

    @property
    def empty(self) -> bool:
        return self.counts is None

    def update(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float32)
        nmin, nmax = finite_extremes(rows, "histogram update")
        if self.empty:
            self._first(rows, nmin, nmax)
            return
        if rows.shape[0] != self.counts.shape[0]:
            raise QuantError(f"histogram update: the batch has {rows.shape[0]} channels, "
                             f"earlier batches had {self.counts.shape[0]}")
        low_cap, high_cap = self.cap if self.cap is not None else (-np.inf, np.inf)
        e0, eb = self.edges[:, 0], self.edges[:, -1]
        lo = np.minimum(np.maximum(nmin, low_cap), e0).astype(np.float32)
        hi = np.minimum(np.maximum(nmax, eb), high_cap).astype(np.float32)
        moved = (lo != self.min) | (hi != self.max)
        counts = self.counts
        if moved.any():
            counts = np.where(moved[:, None], _rebin(counts, self.edges, lo, hi, self.num_bins), counts)
        self.counts = counts + _histc(rows, lo, hi, self.num_bins)
        self._set_range(lo, hi)
        self.min, self.max = lo, hi

    def _first(self, rows, mn, mx):
        const = mn == mx
        lo = np.where(const, mn - _F32(0.5), mn).astype(np.float32)
        hi = np.where(const, mx + _F32(0.5), mx).astype(np.float32)
        self._set_range(lo, hi)
        e0, eb = self.edges[:, 0], self.edges[:, -1]
        self.counts = _histc(rows, e0, eb, self.num_bins)
        self.min, self.max = mn, mx
        if self.growth_limit is not None:
            grow = (eb - e0) * _F32(self.growth_limit / 2)
            self.cap = (e0 - grow, eb + grow)

    def _set_range(self, lo, hi):
        with np.errstate(over="ignore", invalid="ignore"):
            edges = _edges(lo, hi, self.num_bins)
            width = edges[:, -1] - edges[:, 0]
        bad = ~(np.isfinite(width) & (width > 0) & (edges[:, 1] > edges[:, 0]))
        if bad.any():
            c = int(np.flatnonzero(bad)[0])
            raise QuantError(f"histogram: channel {c} range [{lo[c]}, {hi[c]}] cannot be split into "
                             f"{self.num_bins} float32 bins (too wide, or a constant too large for ±0.5)")
        self.edges = edges
