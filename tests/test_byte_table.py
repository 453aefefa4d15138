"""ByteTable: a lookup two bytes at a time equals np.take on the index bytes, value for value."""
import numpy as np
import pytest

from refq.fixedpoint.kernels.byte_table import PAIRS_FROM, ByteTable


@pytest.mark.parametrize("xdtype", [np.int8, np.uint8])
@pytest.mark.parametrize("tdtype", [np.int8, np.uint8])
@pytest.mark.parametrize("size", [0, 1, 7, PAIRS_FROM - 1, PAIRS_FROM, PAIRS_FROM + 1,
                                  3 * PAIRS_FROM + 5])
def test_byte_table_equals_take(xdtype, tdtype, size):
    rng = np.random.default_rng(size)
    table = rng.integers(0, 256, 256).astype(np.uint8).view(tdtype)
    x = rng.integers(0, 256, size).astype(np.uint8).view(xdtype)
    x[:256 if size >= 256 else size] = np.arange(min(size, 256)).astype(np.uint8).view(xdtype)
    got = ByteTable(table)(x)
    want = np.take(table, x.view(np.uint8))
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_every_pair_of_bytes_and_other_layouts():
    """All 65536 pairs at both parities of the start, a non-contiguous view, an N-d array and a
    0-d one give the 256-entry lookup."""
    table = np.arange(256, dtype=np.uint8)[::-1] ^ np.uint8(0x5A)
    lookup = ByteTable(table.view(np.int8))
    v = np.arange(1 << 16, dtype=np.uint16).view(np.uint8).view(np.int8)
    x = np.concatenate([v, v[1:], v[:3]])
    for a in (x, x[1:], x[::3], x[:-(x.size % 96) or None].reshape(-1, 4, 24)):
        assert lookup(a).tobytes() == np.take(table.view(np.int8), a.view(np.uint8)).tobytes()
    assert lookup(np.int8(-3)).tobytes() == table.view(np.int8)[253:254].tobytes()


def test_byte_table_refuses_wider_values():
    with pytest.raises(ValueError):
        ByteTable(np.zeros(256, np.int16))
    with pytest.raises(ValueError):
        ByteTable(np.zeros(256, np.int8))(np.zeros(4, np.int16))
