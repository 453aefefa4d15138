"""The base of the encoding analyzers (`refq.quant.analyzers`, `refq.quant.sqnr`): channel handling
and the update / compute_encoding protocol. `refq.quant.analyzers` re-exports `Analyzer`.
"""
from __future__ import annotations

import numpy as np

from ..errors import QuantError
from .encoding import AIMET_V2, Encoding, EncodingNumerics

__all__ = ["Analyzer"]


class Analyzer:
    """Base of the streaming analyzers: channel handling and the update / compute_encoding protocol."""

    kind = "?"
    #: True when the statistics do not depend on how the data is cut into updates nor on their
    #: order; such an analyzer has `statistics(x)` (of one batch, changing nothing) and
    #: `merge(stats)`, with update(x) = merge(statistics(x)), so that calibration computes the
    #: statistics of batch chunks on several threads and merges them one at a time.
    chunk_invariant = False

    def __init__(self, axis: int | None = None):
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
            raise QuantError(f"{self.kind}: axis must be None or an integer, got {axis!r}")
        self.axis = None if axis is None else int(axis)
        self.num_channels = None

    def rows(self, x) -> np.ndarray:
        """`x` as a float32 (C, n) array: C = 1 per-tensor, else the channels of `axis`."""
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            raise QuantError(f"{self.kind} analyzer: empty batch of shape {x.shape}")
        if self.axis is None:
            rows = x.reshape(1, -1)
        else:
            if not -x.ndim <= self.axis < x.ndim:
                raise QuantError(f"{self.kind} analyzer: axis {self.axis} does not exist in a batch "
                                 f"of shape {x.shape}")
            rows = np.moveaxis(x, self.axis, 0).reshape(x.shape[self.axis], -1)
        if self.num_channels is not None and rows.shape[0] != self.num_channels:
            raise QuantError(f"{self.kind} analyzer: the batch has {rows.shape[0]} channels on axis "
                             f"{self.axis}, earlier batches had {self.num_channels}")
        self.num_channels = rows.shape[0]
        return rows

    def update(self, x) -> None:
        """Add one batch to the statistics."""
        raise NotImplementedError

    def compute_encoding(self, bitwidth, symmetric, *, numerics: EncodingNumerics = AIMET_V2,
                         strict=False, unsigned_symmetric=False) -> Encoding:
        """The encoding of everything seen so far (the statistics are kept)."""
        raise NotImplementedError

    def _require_data(self, seen: bool):
        if not seen:
            raise QuantError(f"{self.kind} analyzer: compute_encoding before any update(); "
                             "calibrate with at least one batch")

    def _out(self, values: np.ndarray) -> np.ndarray:
        """(C,) per-channel values, or the scalar of a per-tensor analyzer."""
        return values.reshape(()) if self.axis is None else values

    def _require_v2(self, numerics: EncodingNumerics):
        if not numerics.is_aimet_v2_range:
            raise QuantError(f"{self.kind} analyzer implements AIMET 2.42's algorithm only; the 1.x "
                             "histogram analyzers (aimet.md §2.2, §2.4 v1) are not implemented, so "
                             "min_range and symmetric_delta must be 'aimet_v2'")
