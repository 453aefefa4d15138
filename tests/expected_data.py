"""Expected tensors stored as test data (made once by a framework in its own environment, by
the scripts beside the data) and the exact comparison the importer tests use."""
from __future__ import annotations

import numpy as np


def load_npz(path) -> dict:
    """{name: array} of an .npz file, read without unpickling."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def same_bits(got, want) -> bool:
    """got equals want exactly: float32 bit patterns for a float `want` (so a sign of zero or a
    NaN payload counts), integer values otherwise."""
    if want.dtype.kind == "f":
        return np.array_equal(np.asarray(got).astype(np.float32).view(np.int32),
                              want.view(np.int32))
    return np.array_equal(np.asarray(got).astype(np.int64), want.astype(np.int64))
