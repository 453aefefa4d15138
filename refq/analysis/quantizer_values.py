"""What each quantizer sees: its values on the data (or its weight) as a MinMaxAnalyzer and a
histogram, for the quantizers section of the report (`refq.analysis.quantizers`).

- values: an activation quantizer (model inputs included) sees the float run's tensors at its place,
  in the simulation's dtype (a shared quantizer: all its tensors); an input quantizer the float
  tensor its node reads; a parameter quantizer the weight (as float32, AIMET's parameter dtype).
- histogram: `bins` equal bins over the values' [lo, hi] = [min, max] (constant values:
  [v − 0.5, v + 0.5], as np.histogram does), edges e_i = np.histogram_bin_edges, and
      counts_i = #{x : e_i ≤ x < e_{i+1}}   (the last bin also holds x = e_B)
  i.e. exactly np.histogram(all values concatenated, bins=edges). Two passes over the data: the
  first takes min and max of every quantizer's values (refq's MinMaxAnalyzer), the second bins
  each batch over the now fixed edges and adds the counts. Memory stays bounded by one batch and
  the counts do not depend on how the data is batched. The data must therefore be re-iterable
  (an array, a dict of arrays, a list of batches, `refq.analysis.build.Batches`).
Speed: the values are observed by tensor hooks of the float run (`refq.plan`), in the threads that
compute the batch's chunks, so binning runs on both cores beside the forward pass and no tensor is
kept (min, max and integer counts do not depend on the order in which chunks are merged).
Errors: QuantError for data without a batch, a batch or tensor holding NaN or ±inf (naming the
batch and the tensor), data that changes between the passes, an empty weight.
"""
from __future__ import annotations

import threading

import numpy as np

from ..data_io import iterate_batches
from ..errors import QuantError
from ..plan import Plan
from ..progress import progress
from ..quant.analyzers import MinMaxAnalyzer
from ..quant.quantsim import check_calibration_batch

__all__ = ["QuantizerValues", "value_histograms", "weight_values", "finite_range"]


def finite_range(x, where):
    """(min, max) of `x` as float32 (1,)-arrays; NaN and ±inf show in them: QuantError naming
    `where`."""
    mn, mx = np.min(x).astype(np.float32).reshape(1), np.max(x).astype(np.float32).reshape(1)
    if not (np.isfinite(mn[0]) and np.isfinite(mx[0])):
        raise QuantError(f"{where} holds NaN or infinite values; check the data and the "
                         "model's ranges (the report needs finite tensors)")
    return mn, mx


class QuantizerValues:
    """What one quantizer saw: its MinMaxAnalyzer, and the histogram once the range is known."""

    def __init__(self, axis=None):
        self.analyzer = MinMaxAnalyzer(axis)
        self.lo = self.hi = None         # float32 (1,): min and max over every value
        self.counts = self.edges = None
        self.count = 0                   # values seen in the first pass

    def merge_range(self, mn, mx, size):
        """Fold the (min, max) of `size` more values into the range and the minmax analyzer."""
        self.lo = mn if self.lo is None else np.minimum(self.lo, mn)
        self.hi = mx if self.hi is None else np.maximum(self.hi, mx)
        self.count += size
        if self.analyzer.axis is None:
            self.analyzer.merge((mn, mx))

    def start_histogram(self, bins):
        self.edges = np.histogram_bin_edges(np.zeros(0), bins, range=self._range())
        self.counts = np.zeros(bins, dtype=np.int64)

    def _range(self):
        """float64 ends: np.histogram then bins in float64 whatever the values' dtype."""
        return np.float64(self.lo[0]), np.float64(self.hi[0])

    def histogram(self, x):
        """np.histogram counts of `x` over this quantizer's edges (changes nothing)."""
        return np.histogram(x, bins=self.counts.size, range=self._range())[0]


def value_histograms(sim, data, names, *, batch_size=None, bins=128, quiet=True) -> dict:
    """{quantizer name: QuantizerValues} for the activation and input quantizers `names` of
    `sim`, by the two passes of the module docstring over `data` (float run in the simulation's
    dtype)."""
    graph = sim.graph
    where_tensor = {}
    for name in names:
        q = sim.quantizers[name]
        where_tensor[name] = (list(q.tensors) if q.kind == "activation"
                              else [graph.node(q.node).inputs[q.input_index]])
    by_tensor = {}
    for name, tensors in where_tensor.items():
        for t in tensors:
            by_tensor.setdefault(t, []).append(name)
    values = {name: QuantizerValues() for name in names}
    if not names:
        return values
    plan = Plan(graph, sim.numerics.dtype.type, fold_batch_norms=False)
    lock = threading.Lock()

    def hook(t, where, first):
        """Observe tensor t of one batch chunk (the plan runs chunks on both cores): the
        statistics are computed in the chunk's thread and merged under the lock."""
        def observe(x):
            if first:
                mn, mx = finite_range(x, f"{where}: tensor '{t}' (quantizer '{by_tensor[t][0]}')")
                with lock:
                    for name in by_tensor[t]:
                        values[name].merge_range(mn, mx, x.size)
            else:
                counts = [values[name].histogram(x) for name in by_tensor[t]]
                with lock:
                    for name, c in zip(by_tensor[t], counts):
                        values[name].counts += c
            return x
        return observe

    for first in (True, False):
        if not first:
            for v in values.values():
                v.start_histogram(bins)
        seen = 0
        batches = iterate_batches(data, graph, batch_size)
        for k, feeds in enumerate(progress(batches, desc="quantizer ranges" if first
                                           else "quantizer histograms", quiet=quiet)):
            src = getattr(feeds, "source", None)
            where = f"batch {k}" + (f" (from {src})" if src else "")
            feeds = check_calibration_batch(graph, feeds, where)
            plan.run(feeds, tensor_hooks={t: hook(t, where, first) for t in by_tensor})
            seen += 1
        if not seen:
            raise QuantError("the data holds no batch; give at least one sample")
    for name, v in values.items():
        if int(v.counts.sum()) != v.count:
            raise QuantError(f"quantizer '{name}': the second pass over the data saw "
                             f"{int(v.counts.sum())} values in [{v.lo[0]}, {v.hi[0]}], the first "
                             f"{v.count}; the data must give the same batches on every pass")
    return values


def weight_values(sim, q, enc, bins) -> QuantizerValues:
    """The QuantizerValues of parameter quantizer `q` (encoding `enc`): minmax statistics of
    its weight on the encoding's axis, histogram of every value in `bins` bins."""
    w = sim.graph.node(q.node).params[q.param].astype(np.float32)
    if w.size == 0:
        raise QuantError(f"quantizer '{q.name}': weight {q.node}/{q.param} is empty")
    v = QuantizerValues(enc.axis)
    v.merge_range(*finite_range(w, f"weight {q.node}/{q.param} (quantizer '{q.name}')"), w.size)
    if enc.axis is not None:
        v.analyzer.update(w)
    v.start_histogram(bins)
    v.counts += v.histogram(w)
    return v
