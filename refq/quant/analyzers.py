"""Encoding analyzers: streaming statistics of one quantizer's tensor -> an `Encoding`.

    a = make_analyzer("minmax" | "tf_enhanced" | "percentile" | "sqnr" | "mse", axis=None | 0, **options)
    for batch in data: a.update(batch)
    enc = a.compute_encoding(bitwidth, symmetric, numerics=AIMET_V2, strict=False, unsigned_symmetric=False)

Per-tensor (axis=None) statistics reduce over every element; per-channel (axis=k) over every axis but
k. Data are cast to float32 first: AIMET's statistics are float32 (aimet.md §0.2.2–§0.2.3).

Errors (QuantError): an empty batch; a batch with a channel holding no finite value; a change in the
number of channels; `compute_encoding` before any data (AIMET raises StatisticsNotFoundError).

Non-finite values: MinMax and the histogram ranges use the finite values only. The histograms drop
NaN and count ±inf in their end bins (AIMET 2.42). AIMET's MinMax would propagate NaN and clamp ±inf
to ±float32 max; refq ignores them instead, so that one bad value cannot produce a useless encoding.

Blocked weights (`blocked_encoding`): the weight is cut into blocks, block j of channel c holding
the indices [j·B, (j+1)·B) of the block axis at index c of the channel axis (every other axis
whole; the last block may be shorter), each block is one row of an analyzer with axis 0 (one
analyzer for the whole blocks, one for the partial last blocks), and the per-row encodings are
arranged as the (C, n_blocks) scale of a blocked `Encoding`. With minmax this is
`encoding_from_block_min_max` of the per-block finite min/max.

AIMET 2.42 mapping (§0.2.1): min_max/tf -> MinMaxAnalyzer; tf_enhanced -> TfEnhancedAnalyzer;
percentile -> PercentileAnalyzer. SqnrAnalyzer is AIMET's public SqnrEncodingAnalyzer, which no
QuantScheme selects; "mse" is SqnrAnalyzer(gamma=1), a histogram MSE search (AIMET 2.42 has no MSE
analyzer, §2.5).
"""
from __future__ import annotations

import numpy as np

from ..errors import QuantError
from .analyzer_base import Analyzer  # re-exported
from .encoding import AIMET_V2, Encoding, encoding_from_min_max
from .histogram import HistogramObserver, finite_extremes
from .sqnr import SqnrAnalyzer, TfEnhancedAnalyzer

__all__ = ["Analyzer", "MinMaxAnalyzer", "PercentileAnalyzer", "make_analyzer", "ANALYZERS",
           "block_rows", "blocked_encoding"]


class MinMaxAnalyzer(Analyzer):
    """Running min and max (AIMET 2.42 `MinMaxEncodingAnalyzer`, §0.2.2; 1.x `TfEncodingAnalyzer`).

    compute_encoding = `encoding_from_min_max(min, max, ...)` with the given numerics.
    """

    kind = "minmax"
    chunk_invariant = True   # min and max of a union are the min and max of the parts' extremes

    def __init__(self, axis: int | None = None):
        super().__init__(axis)
        self.min = self.max = None

    def statistics(self, x):
        """(min, max) per channel of the finite values of one batch."""
        return finite_extremes(self.rows(x), f"{self.kind} analyzer")

    def block_statistics(self, x):
        """`statistics` of a part of a batch, (+inf, −inf) for a channel with no finite value
        there: the batch's are the min and max of its parts' (`check_finite_extremes` then)."""
        return finite_extremes(self.rows(x), f"{self.kind} analyzer", allow_empty=True)

    def merge(self, stats) -> None:
        mn, mx = stats
        if self.min is None:
            self.min, self.max = mn, mx
        else:
            self.min, self.max = np.minimum(self.min, mn), np.maximum(self.max, mx)

    def update(self, x) -> None:
        self.merge(self.statistics(x))

    def compute_encoding(self, bitwidth, symmetric, *, numerics=AIMET_V2, strict=False,
                         unsigned_symmetric=False) -> Encoding:
        self._require_data(self.min is not None)
        return encoding_from_min_max(self._out(self.min), self._out(self.max), bitwidth, symmetric,
                                     axis=self.axis, strict=strict,
                                     unsigned_symmetric=unsigned_symmetric, numerics=numerics)


class PercentileAnalyzer(Analyzer):
    """AIMET 2.42 `PercentileEncodingAnalyzer` (§2.4 v2): a 2048-bin histogram without growth cap.

    Per channel, with c = cumsum(counts) in float32 and T = c[−1]:
        p = 100: min = e_0, max = e_B
        else:    imax = #(c < fl(fl(T·p)/100)), imin = #(c < fl(T·fl(1 − p/100)))   (searchsorted, left)
                 min = e_imin, max = e_imax   (the left edge of the bin holding the percentile)
    then `encoding_from_min_max` without the 2-bit rule (AIMET's `adjust_min_max`). p ∈ [50, 100].
    """

    kind = "percentile"

    def __init__(self, axis: int | None = None, *, percentile: float = 100.0, num_bins: int = 2048):
        super().__init__(axis)
        self.set_percentile(percentile)
        self.histogram = HistogramObserver(num_bins, growth_limit=None)

    def set_percentile(self, percentile: float) -> None:
        """AIMET's `set_percentile`; takes effect at the next compute_encoding."""
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.number)) \
                or not 50 <= percentile <= 100:
            raise QuantError(f"percentile must be a number in [50, 100], got {percentile!r}")
        self.percentile = float(percentile)

    def update(self, x) -> None:
        self.histogram.update(self.rows(x))

    def compute_range(self):
        """The (min, max) of the percentile, per channel, float32 (C,), before `adjust_min_max`."""
        hist = self.histogram
        self._require_data(not hist.empty)
        edges, b = hist.edges, hist.num_bins
        if self.percentile == 100:
            return edges[:, 0], edges[:, -1]
        c = np.cumsum(hist.counts, axis=1, dtype=np.float32)
        total = c[:, -1:]
        upper = (total * np.float32(self.percentile)) / np.float32(100)
        lower = total * np.float32(1 - self.percentile / 100)
        imax = np.minimum((c < upper).sum(axis=1), b)
        imin = np.minimum((c < lower).sum(axis=1), b)
        ch = np.arange(edges.shape[0])
        return edges[ch, imin], edges[ch, imax]

    def compute_encoding(self, bitwidth, symmetric, *, numerics=AIMET_V2, strict=False,
                         unsigned_symmetric=False) -> Encoding:
        self._require_v2(numerics)
        lo, hi = self.compute_range()
        return encoding_from_min_max(self._out(lo), self._out(hi), bitwidth, symmetric, axis=self.axis,
                                     strict=strict, unsigned_symmetric=unsigned_symmetric,
                                     numerics=numerics, two_bit_rule=False)


#: the names `make_analyzer` accepts, with AIMET's QuantScheme aliases "min_max" and "tf".
ANALYZERS = ("minmax", "min_max", "tf", "tf_enhanced", "percentile", "sqnr", "mse")


def make_analyzer(kind: str, axis: int | None = None, **options) -> Analyzer:
    """A fresh analyzer for one quantizer. Options go to the class (QuantError on unknown ones):
    percentile: percentile, num_bins; sqnr/mse/tf_enhanced: see `refq.quant.sqnr`."""
    classes = {"minmax": MinMaxAnalyzer, "min_max": MinMaxAnalyzer, "tf": MinMaxAnalyzer,
               "tf_enhanced": TfEnhancedAnalyzer, "percentile": PercentileAnalyzer,
               "sqnr": SqnrAnalyzer, "mse": SqnrAnalyzer}
    if kind not in classes:
        raise QuantError(f"unknown analyzer {kind!r}; known: {', '.join(ANALYZERS)}")
    if kind == "mse":
        if "gamma" in options:
            raise QuantError("the 'mse' analyzer is SqnrAnalyzer(gamma=1); use 'sqnr' to set gamma")
        options["gamma"] = 1.0
    try:
        analyzer = classes[kind](axis, **options)
    except TypeError as e:
        raise QuantError(f"analyzer {kind!r}: {e}") from None
    analyzer.kind = "mse" if kind == "mse" else analyzer.kind
    return analyzer


def block_rows(w, axis: int, block_axis: int, block_size: int) -> list:
    """`w` cut into blocks (module docstring) as float32 row arrays: [(rows, n)] with first the
    whole blocks, rows (C·n, B·R), row c·n + j = block j of channel c, then, when the length L of
    the block axis is not a multiple of B, the partial last block of every channel, rows
    (C, (L mod B)·R), n = 1 (R: the product of the other axes). QuantError on a bad block size or
    axes."""
    w = np.asarray(w, dtype=np.float32)
    if isinstance(block_size, (bool, np.bool_)) or not isinstance(block_size, (int, np.integer)) \
            or block_size < 1:
        raise QuantError(f"block_size must be an integer >= 1, got {block_size!r}")
    if not (0 <= axis < w.ndim and 0 <= block_axis < w.ndim) or axis == block_axis:
        raise QuantError(f"blocks along axis {block_axis}, channels along axis {axis}: a tensor "
                         f"of shape {list(w.shape)} needs two different axes of its own")
    x = np.moveaxis(w, (axis, block_axis), (0, 1))
    c, length = x.shape[:2]
    whole, rest = divmod(length, block_size)
    parts = []
    if whole:
        x_whole = x[:, :whole * block_size]
        parts.append((x_whole.reshape(c, whole, block_size, -1).reshape(c * whole, -1), whole))
    if rest:
        parts.append((x[:, whole * block_size:].reshape(c, -1), 1))
    return parts


def blocked_encoding(w, scheme: str, bitwidth: int, symmetric: bool, *, axis: int,
                     block_axis: int, block_size: int, numerics=AIMET_V2, strict=False,
                     unsigned_symmetric=False, **options) -> Encoding:
    """The blocked encoding of weight `w` (module docstring): the analyzer `scheme` (with
    `options`) on each block, the whole blocks and a partial last block in two analyzers of
    axis 0. QuantError when the two parts end on different grids (unsigned_symmetric, where
    the grid depends on the signs of every block)."""
    w = np.asarray(w, dtype=np.float32)
    encs = []
    for rows, n in block_rows(w, axis, block_axis, block_size):
        a = make_analyzer(scheme, 0, **options)
        a.update(rows)
        encs.append((a.compute_encoding(bitwidth, symmetric, numerics=numerics, strict=strict,
                                        unsigned_symmetric=unsigned_symmetric), n))
    c = w.shape[axis]
    grids = {(e.qmin, e.qmax) for e, _ in encs}
    if len(grids) > 1:
        raise QuantError(f"blocked encoding: the whole blocks and the partial last block fall on "
                         f"different grids {sorted(grids)} (unsigned symmetric); choose a block "
                         f"size that divides {w.shape[block_axis]}")
    first = encs[0][0]
    scale = np.concatenate([e.scale.reshape(c, n) for e, n in encs], axis=1)
    zp = np.concatenate([e.zero_point.reshape(c, n) for e, n in encs], axis=1)
    return Encoding(scale, zp, first.bitwidth, first.qmin, first.qmax, first.symmetric, axis,
                    block_axis, block_size)
