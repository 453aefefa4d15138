"""Progress bars for long work: shown on a terminal, silent with quiet=True or when not a TTY."""
from __future__ import annotations

import sys


def progress(iterable, total=None, desc="", quiet=False):
    """Wrap `iterable` in a tqdm bar when stderr is a terminal and tqdm is installed."""
    if quiet or not sys.stderr.isatty():
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr)
