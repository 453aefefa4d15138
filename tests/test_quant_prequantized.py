"""Pre-quantized weight detection (aimet.md §0.2.5) and its verified AIMET 2.42 examples."""
import numpy as np

from refq.quant import encoding_from_min_max
from refq.quant.prequantized import detect_prequantized, prequantized_encoding

f32 = np.float32


def test_ternary_weights_get_scale_point_one():
    """{-0.1, 0, 0.1} -> s = 0.1, range [-12.8, 12.7] (not the min/max scale 0.1/127)."""
    w = np.random.default_rng(0).choice(f32([-0.1, 0, 0.1]), size=(8, 3, 3, 4))
    assert detect_prequantized(w, 8) == f32(0.1)
    assert np.all(detect_prequantized(w, 8, axis=0) == f32(0.1))
    e = prequantized_encoding(w, 8)
    assert e.scale == f32(0.1) and (e.min, e.max) == (f32(-12.8), f32(12.7))
    assert e.scale != encoding_from_min_max(w.min(), w.max(), 8, True).scale


def test_hundredths_grid_gets_scale_point_zero_one():
    """0.01 × integers in [-64, 63] -> s = 0.01."""
    ints = np.random.default_rng(1).integers(-64, 64, size=(16, 32))
    ints[0, 0] = -64
    for w in ((ints * 0.01).astype(f32), ints.astype(f32) * f32(0.01)):
        assert detect_prequantized(w, 8) == f32(0.01)
        assert np.all(detect_prequantized(w, 8, axis=0) == f32(0.01))


def test_ordinary_float_weights_are_rejected():
    rng = np.random.default_rng(2)
    assert detect_prequantized(rng.normal(size=(16, 3, 3, 8)).astype(f32), 8, axis=0) is None
    assert detect_prequantized(rng.normal(size=(4, 5)).astype(f32), 8, axis=0) is None
    assert detect_prequantized(rng.normal(size=(4, 5)).astype(f32), 8) is None
    assert detect_prequantized(np.zeros((3, 3), f32), 8) is None          # codes all zero
    assert prequantized_encoding(rng.normal(size=(64,)).astype(f32), 8) is None


def test_dead_channel_gets_minimum_scale():
    w = np.zeros((3, 10), f32)
    w[0, :4] = [0.5, -0.25, 0.75, 0]
    w[2, :3] = [2, -3, 1]
    s = detect_prequantized(w, 8, axis=0)
    assert s.tolist() == [f32(0.25), f32(2.0 ** -23), f32(1.0)]


def _choose_k_one_block(x, u, kmax):
    """Steps 2–4 of the module docstring for one non-zero block, written out block by block."""
    a = np.abs(x)
    absmax = a.max()
    nonzero = np.unique(a[a > 0])
    estimates = [absmax / nonzero[0]]
    if nonzero.size > 1:
        estimates.append(absmax / np.diff(nonzero).min())
    ks = {1, kmax}
    for e in estimates:
        centre = int(np.rint(e)) if np.isfinite(e) and e < 4 * kmax else kmax + 3
        ks.update(range(centre - 2, centre + 3))
    ks = np.array(sorted(k for k in ks if 1 <= k <= kmax), dtype=np.float64)
    r = x[None, :] / (absmax / ks)[:, None]
    dev = np.abs(r - np.rint(r))
    off = (dev > 3 * u * np.abs(r)).mean(axis=1)
    mean_dev = dev.mean(axis=1)
    keep = off <= off.min() + 0.005
    keep &= mean_dev <= 1.5 * mean_dev[keep].min()
    i = np.flatnonzero(keep)[0]
    return ks[i], off[i]


def test_the_divisor_choice_of_all_blocks_at_once_equals_the_one_block_definition():
    """`_choose_ks` (every block of a group at once) against steps 2–4 block by block: the same
    k and off-grid fraction, bit for bit, on grids with and without noise, one distinct
    magnitude, tiny blocks and both grid sizes."""
    from refq.quant.prequantized import _choose_ks

    rng = np.random.default_rng(7)
    for trial in range(120):
        n = int(rng.choice([1, 2, 5, 9, 50, 300]))
        x = rng.integers(-127, 128, (7, n)) * rng.uniform(0.001, 0.1, (7, 1))
        if trial % 3 == 1:
            x = x + rng.standard_normal(x.shape) * 1e-6
        if trial % 3 == 2:
            x = np.sign(x) * 0.25 + (x == 0)        # one magnitude
        x[:, 0] += 1e-9                              # no all-zero block
        for kmax in (7, 127):
            ks, offs = _choose_ks(x, 2.0 ** -20, kmax)
            for c in range(len(x)):
                assert (ks[c], offs[c]) == _choose_k_one_block(x[c], 2.0 ** -20, kmax)


def test_detection_stops_early_with_the_same_answer(monkeypatch):
    """Groups of blocks stop once too many are rejected: a tensor whose last blocks are off grid
    gets the same answer whatever the group sizes, and an all-on-grid one is accepted."""
    import refq.quant.prequantized as pq

    rng = np.random.default_rng(8)
    ints = rng.integers(-127, 128, size=(100, 60)).astype(np.float64)
    ints[:, 0] = 127
    for bad in (0, 5, 10, 11, 40):
        w = (ints * 0.02).astype(f32)
        if bad:
            w[-bad:] = rng.standard_normal((bad, 60)).astype(f32)
        answers = []
        for cap in (1, 60 * 12 * 3, 1 << 21):
            monkeypatch.setattr(pq, "CHOOSE_VALUES", cap)
            s = detect_prequantized(w, 8, axis=0)
            answers.append(None if s is None else s.tobytes())
        assert answers[0] == answers[1] == answers[2]
        assert (answers[0] is None) == (bad > 0)
