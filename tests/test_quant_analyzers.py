"""refq.quant analyzers: MinMax, percentile, the 2.42 histogram and the SQNR / tf_enhanced search.

The tf_enhanced check runs an independent scalar transcription of aimet.md §0.2.3 (plain loops over
elements, bins and candidates on np.float32 scalars) against the vectorised implementation.
"""
import numpy as np
import pytest

from refq.errors import QuantError
from refq.quant import (AIMET_V1, AIMET_V2, HistogramObserver, MinMaxAnalyzer, SqnrAnalyzer,
                        TfEnhancedAnalyzer, encoding_from_min_max, encoding_from_range, make_analyzer)
from refq.quant.sqnr import offset_grid, sqnr_candidates

f = np.float32
MS = f(2.0 ** -23)


# ------------------------------------------------------------------------------ slow reference

def ref_histc(values, a, b, nbins):
    counts = [0] * nbins
    for v in values:
        if np.isnan(v):
            continue
        if v < a:
            counts[0] += 1
        elif v > b:
            counts[nbins - 1] += 1
        else:
            i = int(f(f(f(v - a) * f(nbins)) / f(b - a)))
            counts[min(i, nbins - 1)] += 1
    return [f(c) for c in counts]


def ref_edges(lo, hi, nbins):
    step = f(f(hi - lo) / f(nbins))
    return [f(f(f(i) * step) + lo) for i in range(nbins + 1)]


class RefHistogram:
    def __init__(self, nbins, growth):
        self.nbins, self.growth, self.counts = nbins, growth, None

    def update(self, values):
        values = [f(v) for v in values]
        finite = [v for v in values if np.isfinite(v)]
        nmin, nmax = min(finite), max(finite)
        B = self.nbins
        if self.counts is None:
            lo, hi = (f(nmin - f(0.5)), f(nmax + f(0.5))) if nmin == nmax else (nmin, nmax)
            self.edges = ref_edges(lo, hi, B)
            self.counts = ref_histc(values, self.edges[0], self.edges[B], B)
            self.min, self.max = nmin, nmax
            r = f(self.edges[B] - self.edges[0])
            half = f(r * f(self.growth / 2))
            self.low_cap, self.high_cap = f(self.edges[0] - half), f(self.edges[B] + half)
            return
        lo = min(max(nmin, self.low_cap), self.edges[0])
        hi = min(max(nmax, self.edges[B]), self.high_cap)
        if not (lo == self.min and hi == self.max):
            new_w, old_w = f(f(hi - lo) / f(B)), f(self.edges[1] - self.edges[0])
            new = [f(0)] * B
            for i in range(B):
                c, s = self.counts[i], self.edges[i]
                if c == 0:
                    continue
                j = min(int(f(f(s - lo) / new_w)), B - 1)
                end = f(lo + f(new_w * f(j + 1)))
                part = min(f(np.rint(f(f(f(end - s) / old_w) * c))), c)
                new[j] = f(new[j] + part)
                if f(c - part) > 0:
                    j2 = min(int(f(f(f(s + new_w) - lo) / new_w)), B - 1)
                    new[j2] = f(new[j2] + f(c - part))
            self.counts = new
        add = ref_histc(values, lo, hi, B)
        self.counts = [f(c + a) for c, a in zip(self.counts, add)]
        self.edges = ref_edges(lo, hi, B)
        self.min, self.max = lo, hi


def ref_search(hist, bits, symmetric):
    """§0.2.3 (b)-(d), one scalar at a time; returns the chosen (min, max)."""
    N = 2 ** bits - 1
    nf, ms = f(N), f(min(2.0 ** -23, 0.01 / N))
    m = min(hist.min, f(0))
    M = max(max(hist.max, f(0)), f(m + f(ms * N)))
    cands = []
    if symmetric:
        dm = f(f(f(2) * max(M, f(-m))) / nf)
        for k in range(1, 102):
            cands.append((max(f(f(dm * f(k)) / f(100)), ms), f(-((N + 1) // 2))))
    else:
        dm = f(f(M - m) / nf)
        oo = f(np.rint(f(m / dm)))
        obs_min = f(dm * oo)
        obs_max = f(obs_min + f(dm * nf))
        K = min(N + 2, 21)
        offsets = [f(round(-N + j * N / (K - 2))) for j in range(K - 1)] + [oo]
        for k in range(1, 18):
            dk = f(f(dm * f(k)) / f(16))
            for o in offsets:
                tmin = f(dk * o)
                tmax = f(tmin + f(dk * nf))
                tmin, tmax = max(obs_min, tmin), min(obs_max, tmax)
                d = max(f(f(tmax - tmin) / nf), ms)
                cands.append((d, f(np.rint(f(tmin / d)))))
    e0, h = hist.edges[0], f(hist.edges[1] - hist.edges[0])
    occupied = [j for j in range(hist.nbins) if hist.counts[j] != 0]
    mids = {j: f(f(e0 + f(h / f(2))) + f(h * f(j))) for j in occupied}
    best, best_cost = None, None
    for d, o in cands:
        err = np.zeros(hist.nbins, dtype=np.float32)      # empty bins contribute exactly +0
        for j in occupied:
            q = f(np.rint(f(f(mids[j] / d) - o)))
            clipped = q < 0 or q > nf
            q = min(max(q, f(0)), nf)
            diff = f(f(f(q + o) * d) - mids[j])
            e = f(f(diff * diff) * hist.counts[j])
            err[j] = f(e * f(3)) if clipped else e
        cost = err.sum(dtype=np.float32)                   # the summation order of the notes' check
        if best_cost is None or cost < best_cost:
            best, best_cost = (d, o), cost
    d, o = best
    lo = f(o * d)
    return lo, f(lo + f(nf * d))


def _batches(rng, count):
    out = []
    for i in range(count):
        kind = rng.integers(0, 4)
        n = int(rng.integers(20, 120))
        if kind == 0:
            x = rng.normal(rng.normal(), rng.uniform(0.1, 3), size=n)
        elif kind == 1:
            x = rng.uniform(0, rng.uniform(0.5, 6), size=n)                 # post-ReLU
        elif kind == 2:
            x = rng.laplace(0, 1, size=n) * (5 if i else 1)                  # may exceed the cap
        else:
            x = rng.normal(size=n)
            x[rng.integers(n)] = rng.choice([-40.0, 40.0])                   # one outlier
        out.append(x.astype(np.float32))
    return out


@pytest.mark.parametrize("seed", range(10))
def test_tf_enhanced_matches_scalar_reference(seed):
    rng = np.random.default_rng(seed)
    bits, symmetric = [(8, False), (8, True), (4, False), (4, True)][seed % 4]
    batches = _batches(rng, 1 + seed % 3)
    a, ref = TfEnhancedAnalyzer(), RefHistogram(512, 3.0)
    for x in batches:
        a.update(x)
        ref.update(x)
    h = a.histogram
    assert np.array_equal(h.counts[0], np.array(ref.counts, dtype=np.float32))
    assert np.array_equal(h.edges[0], np.array(ref.edges, dtype=np.float32))
    assert (h.min[0], h.max[0]) == (ref.min, ref.max)
    lo, hi = a.compute_range(bits, symmetric)
    rlo, rhi = ref_search(ref, bits, symmetric)
    assert (lo[0], hi[0]) == (rlo, rhi), (bits, symmetric)
    assert a.compute_encoding(bits, symmetric) == encoding_from_range(rlo, rhi, bits, symmetric)


def test_tf_enhanced_all_zero_and_constant_match_reference():
    for x in (np.zeros(50, np.float32), np.full(30, 2.5, np.float32)):
        for symmetric in (False, True):
            a, ref = TfEnhancedAnalyzer(), RefHistogram(512, 3.0)
            for batch in (x, x):
                a.update(batch)
                ref.update(batch)
            assert tuple(v[0] for v in a.compute_range(8, symmetric)) == ref_search(ref, 8, symmetric)


def test_offset_candidate_grids():
    """§0.2.3 (b): the fixed asymmetric offsets at 8, 4 and 16 bits."""
    assert offset_grid(255, 21).tolist() == [-255, -242, -228, -215, -201, -188, -174, -161, -148, -134,
                                             -121, -107, -94, -81, -67, -54, -40, -27, -13, 0]
    assert offset_grid(15, 21).tolist() == list(range(-15, 1))
    g16 = offset_grid(65535, 21)
    assert g16.size == 20 and g16[:2].tolist() == [-65535, -62086] and g16[-2:].tolist() == [-3449, 0]
    delta, offset = sqnr_candidates(np.array([-1.0], f), np.array([3.0], f), 8, False,
                                    delta_candidates=17)
    assert delta.shape == offset.shape == (1, 17, 21)
    delta, offset = sqnr_candidates(np.array([-1.0], f), np.array([3.0], f), 8, True,
                                    delta_candidates=101)
    assert delta.shape == (1, 101, 1) and np.all(offset == -128)
    assert delta[0, 99, 0] == f(f(f(6) / f(255)) * f(100)) / f(100)       # k = 100: Δm


def test_histogram_growth_cap_clips_outliers_into_end_bins():
    a = TfEnhancedAnalyzer()
    a.update(np.linspace(0, 1, 101, dtype=np.float32))      # R = 1: cap [-1.5, 2.5]
    h = a.histogram
    assert h.edges[0, 0] == 0 and h.edges[0, -1] == 1 and h.cap == (f(-1.5), f(2.5))
    a.update(np.array([0.5, 100, -100, np.nan, np.inf], np.float32))
    assert (h.min[0], h.max[0]) == (-1.5, 2.5) and h.edges[0, -1] == 2.5
    assert h.counts.sum() == 105                            # NaN dropped, inf and ±100 clipped
    assert h.counts[0, 0] == 1 and h.counts[0, -1] == 2
    counts = h.counts.copy()
    a.update(np.array([1e6, -1e6], np.float32))             # range unchanged: counts kept
    assert (h.min[0], h.max[0]) == (-1.5, 2.5)
    assert np.array_equal(h.counts[0, 1:-1], counts[0, 1:-1]) and h.counts[0, 0] == 2


def test_histogram_rebinning_by_hand():
    """3 bins: [0, 1, 1.5, 3] -> [1, 2, 1] over [0, 3]; then -1.5 widens to [-1.5, 3] (w' = 1.5):
    bin 0 -> new bin 1; bin 1 [1, 2) splits rint(0.5·2) = 1 into bin 1 and 1 into bin 2; bin 2 -> 2."""
    h = HistogramObserver(3)
    h.update(np.array([[0, 1, 1.5, 3]], np.float32))
    assert h.counts.tolist() == [[1, 2, 1]] and h.edges.tolist() == [[0, 1, 2, 3]]
    h.update(np.array([[-1.5]], np.float32))
    assert h.counts.tolist() == [[1, 2, 2]] and h.edges.tolist() == [[-1.5, 0, 1.5, 3]]
    assert (h.min[0], h.max[0]) == (-1.5, 3)
    h = HistogramObserver(4)                                # constant first batch: ±0.5
    h.update(np.array([[2, 2]], np.float32))
    assert h.edges.tolist() == [[1.5, 1.75, 2, 2.25, 2.5]] and h.counts.tolist() == [[0, 0, 2, 0]]
    assert (h.min[0], h.max[0]) == (2, 2)


def test_per_channel_tf_enhanced_equals_per_tensor_per_channel():
    rng = np.random.default_rng(7)
    w = rng.normal(size=(6, 3, 3, 4)).astype(np.float32) * rng.uniform(0.1, 2, (6, 1, 1, 1)).astype(f)
    w[2] = 0
    w[4] = 0.25
    for cls, symmetric in ((TfEnhancedAnalyzer, True), (TfEnhancedAnalyzer, False),
                           (SqnrAnalyzer, False)):
        pc = cls(axis=0)
        pc.update(w)
        pc.update(w * f(1.7))
        enc = pc.compute_encoding(8, symmetric)
        assert enc.axis == 0 and enc.scale.shape == (6,)
        for c in range(6):
            pt = cls()
            pt.update(w[c])
            pt.update(w[c] * f(1.7))
            e = pt.compute_encoding(8, symmetric)
            assert e.scale == enc.scale[c] and e.zero_point == enc.zero_point[c]


def test_minmax_analyzer():
    a = make_analyzer("minmax")
    a.update(np.array([-0.8, 1.0, np.nan], np.float32))
    a.update(np.array([3.95, np.inf, -np.inf], np.float32))  # non-finite values are ignored
    assert a.compute_encoding(8, False) == encoding_from_min_max(-0.8, 3.95, 8, False)
    assert a.compute_encoding(8, True, numerics=AIMET_V1) == \
        encoding_from_min_max(-0.8, 3.95, 8, True, numerics=AIMET_V1)
    pc = MinMaxAnalyzer(axis=-1)                            # NHWC activations, per channel
    x = np.zeros((2, 3, 3, 4), np.float32)
    x[..., 1] = 5.0
    pc.update(x)
    enc = pc.compute_encoding(8, False)
    assert enc.scale.tolist() == [MS, f(5) / f(255), MS, MS] and enc.axis == -1


def test_percentile_analyzer():
    a = make_analyzer("percentile")
    a.update(np.arange(1000, dtype=np.float32))
    e = a.histogram.edges[0]
    assert [v[0] for v in a.compute_range()] == [0, e[-1]]
    a.set_percentile(99)
    # upper = 1000·99/100 = 990 -> the bin of the 990th value (989): trunc(989·2048/999) = 2027;
    # lower = fl(1000·fl(0.01)) = 10 -> the bin of the 10th value (9): trunc(9·2048/999) = 18
    lo, hi = a.compute_range()
    assert (lo[0], hi[0]) == (e[18], e[2027])
    assert a.compute_encoding(8, False) == encoding_from_min_max(e[18], e[2027], 8, False)
    two = make_analyzer("percentile")
    two.update(np.array([-1, 1], np.float32))
    assert two.compute_encoding(2, True).scale == 1.0       # adjust_min_max has no 2-bit rule
    for bad in (49.9, 100.5, True):
        with pytest.raises(QuantError):
            a.set_percentile(bad)


def test_mse_is_sqnr_with_gamma_one():
    rng = np.random.default_rng(3)
    x = rng.laplace(size=500).astype(np.float32)
    mse, sq = make_analyzer("mse"), SqnrAnalyzer(gamma=1.0)
    mse.update(x)
    sq.update(x)
    assert mse.gamma == 1.0 and mse.histogram.num_bins == 2048
    assert mse.compute_encoding(8, False) == sq.compute_encoding(8, False)


def test_analyzer_errors():
    for kind in ("minmax", "tf_enhanced", "percentile", "sqnr", "mse"):
        a = make_analyzer(kind, axis=0)
        with pytest.raises(QuantError, match="before any update"):
            a.compute_encoding(8, True)
        with pytest.raises(QuantError, match="empty"):
            a.update(np.zeros((0, 3), np.float32))
        with pytest.raises(QuantError, match="no finite"):
            a.update(np.array([[1.0, 2.0], [np.nan, np.inf]]))
        a.update(np.ones((2, 3)))
        with pytest.raises(QuantError, match="channels"):
            a.update(np.ones((3, 3)))
        with pytest.raises(QuantError, match="axis 0 does not exist"):
            a.update(np.float32(1.0))
    with pytest.raises(QuantError, match="unknown analyzer"):
        make_analyzer("entropy")
    with pytest.raises(QuantError, match="num_bins"):
        make_analyzer("minmax", num_bins=3)
    t = make_analyzer("tf_enhanced")
    t.update(np.ones(4))
    with pytest.raises(QuantError, match="1.x"):
        t.compute_encoding(8, True, numerics=AIMET_V1)
    with pytest.raises(QuantError, match="strict"):
        t.compute_encoding(8, True, strict=True)
    assert t.compute_encoding(8, True, numerics=AIMET_V2).symmetric
