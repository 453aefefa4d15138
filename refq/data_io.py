"""Data for `refq run`, calibration and reports, as batches {input name: array}.

`iterate_batches` takes data in memory (an array, a dict of arrays, or an iterable of either);
`iter_batches` reads .npy, .npz, or a directory of .npy batches. Nothing is ever unpickled
(`allow_pickle=False`). A single .npy file is memory-mapped, so batches are read one at a time and
memory stays bounded by one batch.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import FormatError, InputError, QuantError, one_line
from .feeds import check_input

__all__ = ["load_arrays", "iter_batches", "iterate_batches", "check_data", "DEFAULT_BATCH_SIZE"]

DEFAULT_BATCH_SIZE = 64  # images per batch when reading data files for calibration and reports


def load_arrays(path: str, mmap: bool = False):
    """An .npy file (one array) or an .npz file ({name: array})."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory; give an .npy or .npz file")
    save_hint = "save arrays with np.save / np.savez"
    try:
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic == b"\x89HDF\r\n\x1a\n":
            raise FormatError(f"{path}: is an HDF5 file (a model?), not an .npy/.npz array file; "
                              f"{save_hint}")
        if not magic.startswith((b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")):
            raise FormatError(f"{path}: is not an .npy or .npz file (it starts with {magic!r}); "
                              f"{save_hint}")
        data = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        if isinstance(data, np.ndarray):
            return data
        with data:  # the members of an .npz are read (and refused if pickled) only here
            return {k: data[k] for k in data.files}
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt file can make np.load raise nearly anything
        # (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, tokenize.TokenError, ...)
        if "Object arrays" in str(e) or "Python objects" in str(e):
            raise FormatError(f"{path}: holds pickled Python objects, which refq never loads; "
                              f"{save_hint} of numbers (allow_pickle=False)") from None
        raise FormatError(f"{path}: not a readable .npy/.npz file ({type(e).__name__}: "
                          f"{one_line(e, 160)}); {save_hint}") from None


def check_data(x: np.ndarray, source: str, name: str) -> np.ndarray:
    """`x` as data for input `name`: a numeric array with a batch axis, at least one sample, and
    only finite values; else an InputError naming `source`, the input and the first bad index."""
    return check_finite(check_batched(x, source, name), source, name)


def check_batched(x: np.ndarray, source: str, name: str) -> np.ndarray:
    """`x` is a numeric array with a batch axis and at least one sample (its values unread, so a
    memory-mapped file stays on disk); else an InputError naming `source` and the input."""
    where = f"{source}: input '{name}'"
    if x.dtype.kind not in "biuf":
        raise InputError(f"{where}: dtype {x.dtype} is not numeric; save the data as float32 or "
                         "an integer type")
    if x.ndim == 0:
        raise InputError(f"{where}: a scalar, not a batch; save an array of shape [N, ...] with "
                         "the batch first")
    if x.shape[0] == 0:
        raise InputError(f"{where}: holds no samples (shape {list(x.shape)}); give at least one")
    return x


def check_finite(x: np.ndarray, source: str, name: str) -> np.ndarray:
    """`x` holds no NaN or Inf; else an InputError naming `source`, the input and the first bad
    index."""
    where = f"{source}: input '{name}'"
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"{where}: value {x[index]} at index {list(index)} is not finite "
                             f"({int(bad.sum())} such values); clean the data")
    return x


def _as_feeds(data, input_names, source):
    if isinstance(data, dict):
        if not data:
            raise InputError(f"{source}: the .npz file holds no arrays; the model needs inputs "
                             f"{input_names}")
        if len(input_names) == 1 and len(data) == 1:
            return {input_names[0]: next(iter(data.values()))}
        missing = [n for n in input_names if n not in data]
        if missing:
            raise InputError(f"{source}: holds arrays {sorted(data)}, the model needs inputs "
                             f"{input_names}")
        return {n: data[n] for n in input_names}
    if len(input_names) != 1:
        raise InputError(f"{source}: the model has inputs {input_names}; give an .npz keyed by "
                         "input name")
    return {input_names[0]: data}


def iter_batches(path: str, inputs: list, batch_size: int | None = None):
    """Yield {input name: array} batches from an .npy/.npz file or a directory of .npy files.

    `inputs` are the model's input names, or its TensorSpecs (`graph.inputs`) to check every
    array's shape and dtype against them (`refq.feeds.check_input`) before anything runs.

    A directory yields its `*.npy` files in sorted name order, each split into `batch_size` chunks;
    a file is split into chunks of `batch_size` (default `DEFAULT_BATCH_SIZE`). Every array is
    checked with `check_data` (numeric, batched, non-empty, finite), one chunk at a time."""
    path = os.fspath(path)
    specs = [s for s in inputs if not isinstance(s, str)]
    input_names = [s if isinstance(s, str) else s.name for s in inputs]
    batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if batch_size <= 0:
        raise InputError(f"batch size must be positive, got {batch_size}")
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
        if not files:
            raise InputError(f"{path}: the directory holds no .npy files")
        sources = [os.path.join(path, f) for f in files]
    else:
        sources = [path]
    for src in sources:
        feeds = _as_feeds(load_arrays(src, mmap=src.endswith(".npy")), input_names, src)
        for name, x in feeds.items():
            check_batched(x, src, name)
        for spec in specs:
            try:
                check_input(spec, feeds[spec.name])
            except InputError as e:
                raise InputError(f"{src}: {e}") from None
        for chunk in _chunks(feeds, batch_size):
            yield SourcedBatch({k: check_finite(np.asarray(v), src, k) for k, v in chunk.items()},
                               src)


def _chunks(feeds: dict, batch_size: int | None):
    """`feeds` split along the batch axis into chunks of `batch_size` (all at once when None)."""
    n = len(next(iter(feeds.values())))
    step = batch_size or max(n, 1)
    for s in range(0, n, step):
        yield {k: v[s:s + step] for k, v in feeds.items()}


def iterate_batches(data, graph, batch_size: int | None = None):
    """Yield {input name: array} batches of `graph` from an array, a dict of arrays (split into
    chunks of `batch_size`, default `DEFAULT_BATCH_SIZE`, so that memory stays bounded by one
    batch), or an iterable of either (taken as it comes)."""
    names = [s.name for s in graph.inputs]

    def as_feeds(item):
        if isinstance(item, dict):
            return item
        if len(names) != 1:
            raise InputError(f"graph '{graph.name}' has inputs {names}: give batches as dicts")
        return {names[0]: item}

    if isinstance(data, (np.ndarray, dict)):
        feeds = as_feeds(data)
        if not feeds:
            raise QuantError("the data holds no arrays; give at least one non-empty batch")
        yield from _chunks(feeds, DEFAULT_BATCH_SIZE if batch_size is None else batch_size)
        return
    for item in data:
        yield as_feeds(item)


class SourcedBatch(dict):
    """A batch {input name: array} that remembers the file it was read from (`source`), so that
    an error about it can name the file."""

    def __init__(self, feeds: dict, source: str):
        super().__init__(feeds)
        self.source = source
