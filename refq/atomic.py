"""Atomic file output: write to a temporary file beside the target, then rename over it.

A crash or an exception while writing leaves the target untouched (either the old file or none)
and removes the temporary file.
"""
from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np

__all__ = ["atomic_path", "save_npy"]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's directory; on success rename it to `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # the permissions a plain open() would give, not mkstemp's 0600
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_npy(path, array: np.ndarray):
    """np.save, atomically, never pickling."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
