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
