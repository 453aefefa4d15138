"""The hooks calibration runs (`QuantSim.compute_encodings`): each quantized tensor's statistics,
batch by batch, into its analyzer.

Analyzers whose statistics do not depend on how a batch is cut (`chunk_invariant`: min/max) take the
statistics of its parts: blocks of the per-tensor quantizers' tensors while they are in cache
(in-place hooks of `refq.plan`, which leave the blocks unchanged), whole chunks of the others'. The
parts may be computed on several threads or, once TWIN_AFTER_BATCHES batches have run (counted
over the calibrations that reuse these observers, `reset`), in a twin process (`refq.plan`,
`refq.twin`): their statistics are recorded where they are computed (`take` hands them
over, `give` receives them), then merged into the analyzers after each batch (`end_batch`). The min
and max of the parts are the batch's exactly, whatever the parts and their order; a channel with no
finite value in the whole batch is the error `check_finite_extremes` raises. The other analyzers
see each batch whole, in order, on one thread.
"""
from __future__ import annotations

import threading

import numpy as np

from .histogram import check_finite_extremes

__all__ = ["Observers", "TWIN_AFTER_BATCHES"]

#: Calibration batches computed on threads before the others may go to a twin process (speed
#: only), as a plan forks its twin from its second run (`refq.plan.TWIN_AFTER_RUNS`): a one-batch
#: calibration does not pay for the fork. Measured on MobileNetV2-0.35, 256 images in 64-image
#: batches, 2 CPUs, least of 7: 528-638 ms from the second batch, 554-636 ms from the first,
#: 618-682 ms on threads alone, with and without TensorFlow loaded in the process.
TWIN_AFTER_BATCHES = 1


class Observers:
    """The calibration hooks of `analyzers` ({quantizer: Analyzer}) for the tensor quantizers tq
    ({tensor: quantizer}) and input quantizers iq ({(node, index): quantizer}): `hooks` (keyword
    arguments of `refq.Plan.run`), `effects` (its take/give pair) and `end_batch()`."""

    def __init__(self, analyzers: dict, tq: dict, iq: dict):
        self.analyzers = analyzers
        self.invariant = all(a.chunk_invariant for a in analyzers.values())
        self._lock = threading.Lock()
        self._recorded: dict = {}   # {quantizer: [statistics of a part]} made here, not yet taken
        self._batch: dict = {}      # {quantizer: [statistics of a part]} of this batch
        per_tensor = {t: n for t, n in tq.items()
                      if n in analyzers and self.invariant and analyzers[n].axis is None}
        self.hooks = {
            "inplace_hooks": {t: self._observer(n, True) for t, n in per_tensor.items()},
            "tensor_hooks": {t: self._observer(n) for t, n in tq.items()
                             if n in analyzers and t not in per_tensor},
            "input_hooks": {k: self._observer(n) for k, n in iq.items() if n in analyzers}}
        self.effects = (self.take, self.give)
        self.batches = 0            # batches merged (`end_batch`) since these observers were made

    def reset(self, analyzers: dict) -> None:
        """Observe into `analyzers` from now on (the same quantizers, analyzers of the same kinds:
        a new calibration with these hooks), with nothing recorded yet."""
        assert analyzers.keys() == self.analyzers.keys()
        self.analyzers = analyzers
        with self._lock:
            self._recorded.clear()
        self._batch.clear()

    def in_twin(self) -> bool:
        """The next batch may go in part to a twin process (`refq.plan`'s processes=True)."""
        return self.invariant and self.batches >= TWIN_AFTER_BATCHES

    def _observer(self, name: str, in_place: bool = False):
        def observe(x):
            a = self.analyzers[name]
            if self.invariant:
                stats = a.block_statistics(x)
                with self._lock:
                    self._recorded.setdefault(name, []).append(stats)
            else:
                a.update(x)
            return None if in_place else x
        return observe

    def take(self) -> dict:
        """The statistics recorded in this process since the last call."""
        with self._lock:
            taken = dict(self._recorded)
            self._recorded.clear()
        return taken

    def give(self, taken: dict) -> None:
        """Add statistics recorded elsewhere (a twin) to this batch's."""
        for name, parts in taken.items():
            self._batch.setdefault(name, []).extend(parts)

    def end_batch(self) -> None:
        """Merge this batch's statistics into the analyzers (QuantError for a channel without a
        finite value in the batch)."""
        self.give(self.take())
        for name, parts in self._batch.items():
            mn = np.min([p[0] for p in parts], axis=0)
            mx = np.max([p[1] for p in parts], axis=0)
            check_finite_extremes(mn, f"{self.analyzers[name].kind} analyzer")
            self.analyzers[name].merge((mn, mx))
        self._batch.clear()
        self.batches += 1
