"""Blocks of a convolution's output and the L2 size that sizes them (speed only: the blocking
changes no number; these check the cover and the cache reading)."""
from __future__ import annotations

import numpy as np
import pytest

from refq.layers.blocking import DEFAULT_L2_BYTES, blocks, l2_cache_bytes, rows_in_blocks


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


def test_rows_in_blocks_adds_the_bias_and_applies_the_epilogue_to_every_row():
    y = np.arange(30.0).reshape(2, 5, 3)
    want = np.maximum(y + [1.0, -40.0, 2.0], 0)
    rows_in_blocks(y, np.array([1.0, -40.0, 2.0]), lambda a: np.maximum(a, 0, out=a), rows=3)
    assert np.array_equal(y, want)


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
