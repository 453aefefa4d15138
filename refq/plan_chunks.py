"""How a `refq.Plan` run cuts its batch into chunks (`batch_chunks`), and how it shares them with
its twin process (`twin_rounds`, `with_twin`; `refq.twin`). The chunking depends on the batch and
the graph only, so a run gives the same result bit for bit whoever computes which chunk."""
from __future__ import annotations

import numpy as np

from . import twin

__all__ = ["CHUNK_MULTIPLE", "batch_chunks", "twin_rounds", "with_twin"]

#: The number of chunks is a multiple of this, so that both threads have work (speed only).
CHUNK_MULTIPLE = 2


def batch_chunks(n: int, batch_size, chunk_images: int) -> list:
    """[(start, end)] of the batch chunks: `batch_size` rows each when given; else the fewest
    chunks of at most `chunk_images` rows whose count is a multiple of CHUNK_MULTIPLE (while
    there are rows enough), of near-equal sizes, earlier chunks one row larger. The chunking
    depends on the batch and the graph only, never on the machine or the hooks."""
    if n == 0:
        return [(0, 0)]
    if batch_size:
        return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    k = -(-n // chunk_images)
    k = min(n, -(-k // CHUNK_MULTIPLE) * CHUNK_MULTIPLE)
    sizes = [n // k + (i < n % k) for i in range(k)]
    starts = np.cumsum([0] + sizes)
    return [(int(s), int(e)) for s, e in zip(starts[:-1], starts[1:])]


def twin_rounds(chunks, batch_size) -> list:
    """[(the twin's chunks, this process's chunks)] of a run with a twin: without batch_size, the
    first half of the chunks (the larger ones, and the odd one, since this process also sends the
    twin its feeds) and the rest; with batch_size, the batches two by two, so that memory stays
    bounded by two batches."""
    if batch_size:
        return [(chunks[i:i + 1], chunks[i + 1:i + 2]) for i in range(0, len(chunks), 2)]
    k = (len(chunks) + 1) // 2
    return [(chunks[:k], chunks[k:])]


def with_twin(mate, one, rounds, arrays, give=None):
    """Yield one(chunk) for every chunk, in order: in each round the twin `mate` (reserved by the
    caller) computes its chunks while this process computes its own (`refq.twin.alongside`:
    here too when the twin gives no result, errors raised in batch order). give: receives what
    the twin's hooks recorded."""
    for theirs, ours in rounds:
        s, e = theirs[0][0], theirs[-1][1]
        (parts, recorded), local = twin.alongside(
            mate, [v[s:e] for v in arrays], ([(a - s, b - s) for a, b in theirs],),
            lambda: ([one(c) for c in theirs], None), lambda: [one(c) for c in ours])
        if give is not None and recorded is not None:
            give(recorded)
        yield from parts
        yield from local
