"""The errors refq raises. Every message names the file, node and tensor involved and what to do."""

__all__ = [
    "one_line", "RefqError", "FormatError", "GraphError", "ShapeError", "ParamError",
    "UnsupportedLayerError", "InputError", "QuantError", "FixedPointError", "OutputError",
]


class RefqError(Exception):
    """Base class of every error refq raises on bad input."""


class FormatError(RefqError):
    """A file is missing, truncated, not HDF5, or not in the expected layout."""


class GraphError(RefqError):
    """A graph is malformed: duplicate names, cycles, dangling inputs, unknown ops, bad attributes."""


class ShapeError(GraphError):
    """Tensor or parameter shapes are inconsistent with shape inference."""


class ParamError(RefqError):
    """A parameter (weight) is missing, has the wrong shape, or holds NaN/Inf."""


class UnsupportedLayerError(RefqError):
    """A model file contains layers refq refuses to import (Lambda, custom or unknown layers)."""


class InputError(RefqError):
    """Arrays fed to `run` do not match the graph's declared inputs."""


class QuantError(RefqError):
    """A quantization request is invalid: bad bitwidth or grid, NaN/Inf ranges, no calibration data."""


class FixedPointError(RefqError):
    """An integer (fixed-point) primitive got values outside its stated preconditions, an invalid
    real multiplier (negative, NaN, infinite, out of a target's range), or an unknown profile/scheme."""


class OutputError(RefqError):
    """An output path cannot be written: it is a directory, lies under a regular file, has a name
    too long for the filesystem, is not permitted, or the disk filled up while writing."""


def one_line(text, limit: int | None = None) -> str:
    """`text` (say an exception, whose message a library may spread over lines) as one line: every
    run of white space, newlines included, becomes one space; with `limit`, a longer text is cut to
    `limit` characters ending in "..."."""
    line = " ".join(str(text).split())
    return line if limit is None or len(line) <= limit else line[:limit - 3] + "..."
