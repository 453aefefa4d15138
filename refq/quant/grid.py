"""Integer grids and the `Encoding` record: the grid [qmin, qmax] of a bitwidth, and one quantizer's
(scale, zero_point, bitwidth, qmin, qmax, symmetric, axis, block_axis, block_size).

Grids (`integer_grid`): asymmetric, and unsigned symmetric, [0, 2^b − 1]; symmetric
[−2^(b−1), 2^(b−1) − 1]; strict symmetric [−(2^(b−1) − 1), 2^(b−1) − 1]. Bitwidths are 2..16, or
32 = pass-through (`check_bitwidth`). How an encoding is computed from a range is
`refq.quant.encoding`, which re-exports everything here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..errors import QuantError

__all__ = ["Encoding", "PASS_THROUGH_BITWIDTH", "check_bitwidth", "integer_grid"]

PASS_THROUGH_BITWIDTH = 32


def check_bitwidth(bitwidth) -> int:
    """Return `bitwidth` as an int; QuantError unless it is in 2..16 or 32 (pass-through)."""
    if isinstance(bitwidth, (bool, np.bool_)) or not isinstance(bitwidth, (int, np.integer)) \
            or not (2 <= bitwidth <= 16 or bitwidth == PASS_THROUGH_BITWIDTH):
        raise QuantError(f"bitwidth must be an integer in 2..16, or 32 for pass-through; "
                         f"got {bitwidth!r}")
    return int(bitwidth)


def integer_grid(bitwidth, symmetric, *, strict=False, unsigned=False) -> tuple[int, int]:
    """(qmin, qmax): asymmetric or `unsigned` symmetric [0, 2^b−1]; symmetric [−2^(b−1), 2^(b−1)−1];
    `strict` symmetric [−(2^(b−1)−1), 2^(b−1)−1]."""
    b = check_bitwidth(bitwidth)
    if strict and unsigned:
        raise QuantError("a grid cannot be both strict symmetric and unsigned symmetric")
    if not symmetric or unsigned:
        return 0, 2 ** b - 1
    half = 2 ** (b - 1)
    return (-(half - 1) if strict else -half), half - 1


@dataclass(frozen=True, eq=False)
class Encoding:
    """One quantizer's encoding. q = clamp(round(x/scale) + zero_point, qmin, qmax).

    scale: float32, shape () per-tensor, (C,) per-channel or (C, n_blocks) blocked;
    zero_point: int64, same shape; bitwidth: 2..16, or 32 = pass-through; qmin/qmax: one of the
    grids of `integer_grid`; symmetric: zero_point is 0; axis: None per-tensor, else the channel
    axis of the tensor. Arrays are read-only copies. Equality compares every field exactly.

    Blocked (per-block) encodings: `block_axis` (≥ 0, ≠ axis) and `block_size` B ≥ 1 are set, the
    scale has shape (C, n_blocks) and the element whose index is c on `axis` and i on `block_axis`
    uses scale[c, i // B] and zero_point[c, i // B]; every other axis shares them (a conv kernel's
    block spans the whole kh × kw window, as AIMET's blockwise quantizers with block size −1 on
    those axes). A tensor of length L on `block_axis` needs n_blocks = ceil(L / B): the last block
    may be partial (ONNX DequantizeLinear's `block_size` allows it). AIMET's and ONNX's names for
    the same record: AIMET PER_BLOCK, block_size = B; ONNX scale of the tensor's rank with
    dim[block_axis] = n_blocks, repeated along the other axes.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    bitwidth: int
    qmin: int
    qmax: int
    symmetric: bool
    axis: int | None = None
    block_axis: int | None = None
    block_size: int | None = None

    def __post_init__(self):
        scale = np.array(self.scale, dtype=np.float32)
        zp = np.array(self.zero_point)
        if zp.dtype.kind == "f" and not np.array_equal(zp, np.round(zp)):
            raise QuantError(f"Encoding: zero_point must hold integers, got {zp}")
        zp = zp.astype(np.int64)
        bitwidth = check_bitwidth(self.bitwidth)
        where = f"Encoding(bitwidth={bitwidth}, qmin={self.qmin}, qmax={self.qmax})"
        blocked = _check_blocks(self.axis, self.block_axis, self.block_size, where)
        if blocked and (scale.ndim != 2 or zp.shape != scale.shape or 0 in scale.shape):
            raise QuantError(f"{where}: a blocked encoding has scale and zero_point of one shape "
                             f"(C, n_blocks); got {scale.shape} and {zp.shape}")
        if not blocked and (scale.ndim > 1 or zp.shape != scale.shape):
            raise QuantError(f"{where}: scale and zero_point must share shape () or (C,); "
                             f"got {scale.shape} and {zp.shape}")
        if (self.axis is None) != (scale.ndim == 0):
            raise QuantError(f"{where}: axis must be None exactly when the scale is per-tensor; "
                             f"got axis={self.axis} with scale shape {scale.shape}")
        grids = {integer_grid(bitwidth, s, strict=t) for s in (False, True) for t in (False, True)
                 if s or not t}
        if (int(self.qmin), int(self.qmax)) not in grids:
            raise QuantError(f"{where}: not a {bitwidth}-bit grid; expected one of {sorted(grids)}")
        show = _one_line if blocked else str
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise QuantError(f"{where}: scale must be finite and positive, got {show(scale)}")
        if np.any(zp < self.qmin) or np.any(zp > self.qmax):
            raise QuantError(f"{where}: zero_point {show(zp)} lies outside [qmin, qmax]")
        if self.symmetric and np.any(zp != 0):
            raise QuantError(f"{where}: a symmetric encoding has zero_point 0, got {show(zp)}")
        scale.setflags(write=False)
        zp.setflags(write=False)
        for name, value in (("scale", scale), ("zero_point", zp), ("bitwidth", bitwidth),
                            ("qmin", int(self.qmin)), ("qmax", int(self.qmax)),
                            ("symmetric", bool(self.symmetric)),
                            ("axis", None if self.axis is None else int(self.axis)),
                            ("block_axis", None if not blocked else int(self.block_axis)),
                            ("block_size", None if not blocked else int(self.block_size))):
            object.__setattr__(self, name, value)

    def __eq__(self, other):
        if not isinstance(other, Encoding):
            return NotImplemented
        return (np.array_equal(self.scale, other.scale) and self.scale.shape == other.scale.shape
                and np.array_equal(self.zero_point, other.zero_point)
                and (self.bitwidth, self.qmin, self.qmax, self.symmetric, self.axis,
                     self.block_axis, self.block_size)
                == (other.bitwidth, other.qmin, other.qmax, other.symmetric, other.axis,
                    other.block_axis, other.block_size))

    __hash__ = None

    @property
    def is_per_channel(self) -> bool:
        return self.axis is not None

    @property
    def is_blocked(self) -> bool:
        """Per block along `block_axis` (and per channel along `axis`)."""
        return self.block_size is not None

    @property
    def is_pass_through(self) -> bool:
        return self.bitwidth == PASS_THROUGH_BITWIDTH

    @property
    def min(self) -> np.ndarray:
        """Effective minimum fl(scale·(qmin − zero_point)) (AIMET `get_min`), float32."""
        return self.scale * (self.qmin - self.zero_point).astype(np.float32)

    @property
    def max(self) -> np.ndarray:
        """Effective maximum fl(scale·(qmax − zero_point)) (AIMET `get_max`), float32."""
        return self.scale * (self.qmax - self.zero_point).astype(np.float32)

    def broadcast_shape(self, ndim: int) -> tuple:
        """Shape that broadcasts scale/zero_point against a tensor of `ndim` dims (() per-tensor).
        A blocked encoding has none (its scales repeat along the block axis): use `broadcast`."""
        if self.is_blocked:
            raise QuantError(f"a blocked encoding (block_size {self.block_size} on axis "
                             f"{self.block_axis}) has no broadcast shape; use "
                             "Encoding.broadcast(shape)")
        if self.axis is None:
            return ()
        if not -ndim <= self.axis < ndim:
            raise QuantError(f"per-channel axis {self.axis} does not exist in a {ndim}-d tensor")
        shape = [1] * ndim
        shape[self.axis] = self.scale.shape[0]
        return tuple(shape)

    def broadcast(self, shape) -> tuple:
        """(scale, zero_point) as arrays that broadcast against a tensor of `shape`: () per
        tensor, the channel axis per channel, and for a blocked encoding the channel and block
        axes with scale[c, i // B] at index i of the block axis. QuantError (one line) when the
        tensor's channel count or block count differs from the encoding's."""
        shape = tuple(shape)
        if not self.is_blocked:
            b = self.broadcast_shape(len(shape))
            if self.axis is not None and shape[self.axis] != self.scale.shape[0]:
                raise QuantError(f"tensor of shape {shape} has {shape[self.axis]} channels on "
                                 f"axis {self.axis}, the encoding has {self.scale.shape[0]}")
            return self.scale.reshape(b), self.zero_point.reshape(b)
        a, k, size = self.axis, self.block_axis, self.block_size
        c, nb = self.scale.shape
        if max(a, k) >= len(shape) or shape[a] != c or -(-shape[k] // size) != nb:
            raise QuantError(f"tensor of shape {list(shape)} does not fit the blocked encoding of "
                             f"{c} channels on axis {a} and {nb} blocks of {size} on axis {k} "
                             f"(scale shape {list(self.scale.shape)})")
        idx = np.arange(shape[k]) // size
        b = [1] * len(shape)
        b[a], b[k] = c, shape[k]

        def spread(v):
            v = v[:, idx]
            return (v if a < k else v.T).reshape(b)
        return spread(self.scale), spread(self.zero_point)

    def to_json(self) -> dict:
        """A JSON-ready dict of plain Python values; floats round-trip exactly through `from_json`.
        The keys `block_axis` and `block_size` are present for blocked encodings only."""
        d = {"scale": self.scale.tolist(), "zero_point": self.zero_point.tolist(),
             "bitwidth": self.bitwidth, "qmin": self.qmin, "qmax": self.qmax,
             "symmetric": self.symmetric, "axis": self.axis}
        if self.is_blocked:
            d.update(block_axis=self.block_axis, block_size=self.block_size)
        return d

    @classmethod
    def from_json(cls, data) -> "Encoding":
        """Inverse of `to_json`; accepts the dict or its JSON text. QuantError naming the key on an
        unknown or missing key, a value of the wrong type, or a malformed value."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError as e:
                raise QuantError(f"an encoding is JSON text, got invalid JSON ({e})") from None
        keys = ("axis", "bitwidth", "qmax", "qmin", "scale", "symmetric", "zero_point")
        if not isinstance(data, dict):
            raise QuantError(f"an encoding is a JSON object with keys {list(keys)}, got "
                             f"{type(data).__name__}")
        blocked = "block_size" in data or "block_axis" in data
        if blocked:
            keys = keys[:1] + ("block_axis", "block_size") + keys[1:]
        unknown = sorted(set(data) - set(keys))
        missing = [k for k in keys if k not in data]
        if unknown or missing:
            what = f"unknown key '{unknown[0]}'" if unknown else f"missing key '{missing[0]}'"
            raise QuantError(f"an encoding: {what}; allowed keys: {list(keys)}")

        def number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        def integer(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def one_or_list(v, ok):
            return ok(v) or (isinstance(v, list) and len(v) > 0 and all(ok(x) for x in v))

        def rows(v, ok):
            return isinstance(v, list) and len(v) > 0 and all(
                isinstance(r, list) and len(r) == len(v[0]) > 0 and all(ok(x) for x in r)
                for r in v)

        if blocked:
            checks = {"scale": (rows(data["scale"], number), "a list of equal-length lists of "
                                                             "numbers (C × n_blocks)"),
                      "zero_point": (rows(data["zero_point"], integer),
                                     "a list of equal-length lists of integers"),
                      "block_axis": (integer(data["block_axis"]), "an integer"),
                      "block_size": (integer(data["block_size"]), "an integer")}
        else:
            checks = {"scale": (one_or_list(data["scale"], number),
                                "a number or a list of numbers"),
                      "zero_point": (one_or_list(data["zero_point"], integer),
                                     "an integer or a list of integers")}
        checks.update({
            "bitwidth": (integer(data["bitwidth"]), "an integer"),
            "qmin": (integer(data["qmin"]), "an integer"),
            "qmax": (integer(data["qmax"]), "an integer"),
            "symmetric": (isinstance(data["symmetric"], bool), "true or false"),
            "axis": (data["axis"] is None or integer(data["axis"]), "an integer or null")})
        for key, (ok, desc) in checks.items():
            if not ok:
                raise QuantError(f"an encoding: '{key}' must be {desc}, got {data[key]!r:.60}")
        return cls(**data)


def _check_blocks(axis, block_axis, block_size, where) -> bool:
    """Whether (block_axis, block_size) make a blocked encoding; QuantError (one line) unless
    both are None, or block_size is an integer ≥ 1 and block_axis an integer ≥ 0 other than
    the channel axis (which a blocked encoding needs, ≥ 0)."""
    if block_axis is None and block_size is None:
        return False

    def integer(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    if not integer(block_size) or block_size < 1:
        raise QuantError(f"{where}: block_size must be an integer >= 1, got {block_size!r}")
    if not integer(block_axis) or block_axis < 0:
        raise QuantError(f"{where}: a blocked encoding needs block_axis, an integer >= 0; got "
                         f"{block_axis!r}")
    if not integer(axis) or axis < 0 or axis == block_axis:
        raise QuantError(f"{where}: a blocked encoding is per channel on an axis >= 0 other than "
                         f"its block axis {block_axis}; got axis={axis!r}")
    return True


def _one_line(a: np.ndarray) -> str:
    """A short one-line rendering of an array for messages."""
    return np.array2string(a, threshold=8, edgeitems=2, max_line_width=10 ** 6).replace("\n", "")
