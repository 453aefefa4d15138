""".npy files read safely (`read_npy`): the reader of golden-case arrays and of .npy dumps
(`refq.exporters.hardware` re-exports it).
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..errors import FormatError, one_line

__all__ = ["read_npy"]


def read_npy(path) -> np.ndarray:
    """The array of .npy file `path`, read with numpy.lib.format: never unpickled, never an .npz.
    FormatError naming the file when it is missing, is not a .npy file (format 1.0 or 2.0), holds
    Python objects (pickled data), or when its data is shorter or longer than its header says
    (checked before anything is allocated)."""
    path = os.fspath(path)
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"npy format version {version[0]}.{version[1]} is not read here "
                                 "(1.0 and 2.0 are)")
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = header(f)
            if dtype.hasobject:
                raise ValueError(f"it holds Python objects (dtype {dtype}), which are pickled "
                                 "data; numeric arrays only")
            have = os.fstat(f.fileno()).st_size - f.tell()
            want = math.prod(shape) * dtype.itemsize
            if have != want:
                raise ValueError(f"its header declares {dtype} {list(shape)} ({want} bytes of "
                                 f"data) but {have} bytes follow (truncated or padded)")
            f.seek(0)
            return fmt.read_array(f, allow_pickle=False)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, not a .npy file") from None
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as e:
        raise FormatError(f"{path}: not a readable .npy file ({one_line(e)})") from None
