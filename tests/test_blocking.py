"""Blocks of a convolution's output and the L2 size that sizes them (speed only: the blocking
changes no number; these check the cover and the cache reading)."""
from __future__ import annotations

import numpy as np
import pytest

from refq.layers.blocking import (DEFAULT_L2_BYTES, Bias, blocks, l2_cache_bytes,
                                  matmul_in_bands)


@pytest.mark.parametrize("n,oh,ow,target,even", [
    (3, 7, 5, 4, False), (3, 7, 5, 4, True), (5, 2, 3, 20, True), (1, 1, 1, 1, False),
    (4, 9, 9, 1000, False), (2, 13, 4, 9, True)])
def test_blocks_cover_the_output_once_in_order(n, oh, ow, target, even):
    seen = np.zeros((n, oh), int)
    last = (-1, -1)
    for n0, n1, i0, i1 in blocks(n, oh, ow, target, even):
        assert 0 <= n0 < n1 <= n and 0 <= i0 < i1 <= oh
        assert (n1 - n0 == 1) or (i0, i1) == (0, oh)   # a contiguous slice of y
        assert (n0, i0) > last
        last = (n0, i0)
        seen[n0:n1, i0:i1] += 1
    assert (seen == 1).all()


@pytest.mark.parametrize("band_bytes", [24, 70, 1 << 22])
def test_matmul_in_bands_adds_the_bias_and_applies_the_epilogue_to_every_row(band_bytes):
    """Bands of 1, of 4 (the last of 2) and of all 10 rows; integer values, so every product is
    exact whatever the band."""
    a = np.arange(40.0).reshape(10, 4) - 17
    wt = np.arange(12.0).reshape(4, 3) - 5
    want = np.maximum(a @ wt + [1.0, -40.0, 2.0], 0)
    y = matmul_in_bands(a, wt, np.array([1.0, -40.0, 2.0]), lambda v: np.maximum(v, 0, out=v),
                        band_bytes)
    assert np.array_equal(y, want)
    assert np.array_equal(matmul_in_bands(a, wt, None, None, band_bytes), a @ wt)
    assert matmul_in_bands(a[:0], wt, np.zeros(3), None).shape == (0, 3)


@pytest.mark.parametrize("o, rows", [(3, 1), (3, 5000), (5, 4000), (8192, 2), (1000, 9)])
def test_bias_adds_what_block_plus_b_adds(o, rows):
    """Over long rows of the repeated bias, the tail a prefix of them, or (a view, another dtype)
    as block += b: the same bits."""
    rng = np.random.default_rng(o * rows)
    b = rng.standard_normal(o).astype(np.float32)
    block = rng.standard_normal((rows, o)).astype(np.float32)
    for target in (block.copy(), block.copy()[::2], block.astype(np.float64)):
        want = target + b
        Bias(b).add_to(target)
        assert target.tobytes() == want.tobytes()


def _cache(tmp_path, entries):
    for k, (level, kind, size) in enumerate(entries):
        d = tmp_path / f"index{k}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    return str(tmp_path)


@pytest.mark.parametrize("entries,want", [
    ([(1, "Data", "48K"), (1, "Instruction", "64K"), (2, "Unified", "2048K"), (3, "Unified", "491520K")],
     2 << 20),
    ([(1, "Data", "32K"), (2, "Data", "1M")], 1 << 20),
    ([(2, "Instruction", "1M")], DEFAULT_L2_BYTES),
    ([(1, "Data", "32K"), (3, "Unified", "8M")], DEFAULT_L2_BYTES),
    ([(2, "Unified", "lots")], DEFAULT_L2_BYTES),
    ([(2, "Unified", "")], DEFAULT_L2_BYTES),
    ([(2, "Unified", "1G")], DEFAULT_L2_BYTES),
    ([(2, "Unified", "16K")], DEFAULT_L2_BYTES),
    ([], DEFAULT_L2_BYTES),
])
def test_l2_cache_bytes_reads_linux_sysfs(tmp_path, entries, want):
    assert l2_cache_bytes.__wrapped__(_cache(tmp_path, entries)) == want


def test_l2_cache_bytes_of_a_missing_directory_is_the_default(tmp_path):
    assert l2_cache_bytes.__wrapped__(str(tmp_path / "none")) == DEFAULT_L2_BYTES
