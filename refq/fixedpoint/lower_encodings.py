"""Integer encodings of the lowering: `TensorQ` (the encoding of one integer tensor), the integer
encoding of an activation (`activation_q`), the weight codes (`weight_form`) and the int32 bias
(`bias_int`) of a layer. The rules are the "Activation dtypes" and "conv2d/dense" items of the
`refq.fixedpoint.lowering` module docstring; weight codes on an unsigned grid are shifted to the
signed one the same way as activations when the profile has no uint8 weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FixedPointError
from .profiles import Profile

__all__ = ["DTYPE_RANGES", "NP_DTYPES", "TensorQ", "where_of", "check_scale", "activation_q",
           "weight_form", "bias_int"]

#: The integer tensor dtypes of the contract and their value ranges.
DTYPE_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
                "int32": (-(1 << 31), (1 << 31) - 1)}
NP_DTYPES = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16, "int32": np.int32}


def where_of(n) -> str:
    """How error messages name a node."""
    return f"node '{n.name}' ({n.op})"


@dataclass(frozen=True)
class TensorQ:
    """The encoding of one integer tensor: real value = (q − zero_point)·scale, q ∈ [qmin, qmax],
    held in `dtype`. `scale` is the float32 scale as a Python float."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int
    dtype: str

    def __post_init__(self):
        s = float(self.scale)
        if not np.isfinite(s) or s <= 0 or float(np.float32(s)) != s:
            raise FixedPointError(f"scale must be a finite positive float32 value, got {s!r}")
        if self.dtype not in DTYPE_RANGES:
            raise FixedPointError(f"dtype must be one of {list(DTYPE_RANGES)}, got {self.dtype!r}")
        lo, hi = DTYPE_RANGES[self.dtype]
        if not (lo <= self.qmin <= self.qmax <= hi and lo <= self.zero_point <= hi):
            raise FixedPointError(f"grid [{self.qmin}, {self.qmax}] with zero point "
                                  f"{self.zero_point} does not fit {self.dtype}")

    def to_json(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point, "dtype": self.dtype,
                "qmin": self.qmin, "qmax": self.qmax}


def check_scale(scale, where: str):
    """`scale` as a float64 array; FixedPointError unless every value is finite and positive,
    and unless it is one value or one per channel: a blocked (per-block) weight encoding, whose
    scale has shape (C, n_blocks), has no integer form here (one requantization multiplier per
    output channel needs one weight scale per channel)."""
    s = np.asarray(scale, dtype=np.float64)
    if s.ndim > 1:
        raise FixedPointError(f"{where}: the encoding is blocked (scales of shape "
                              f"{list(s.shape)}, per output channel and input-channel block); "
                              "the integer graph needs one weight scale per output channel: "
                              "re-quantize without --block-size (`refq quantize`), or run the "
                              "simulation (`refq run --mode sim`)")
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise FixedPointError(f"{where}: scale must be finite and positive, got {s.tolist()}; "
                              "recalibrate or fix the encodings")
    return s


def activation_q(enc, profile: Profile, where: str) -> TensorQ:
    """The integer encoding of an activation tensor from its sim `Encoding` (module docstring:
    unsigned grids shifted to signed ones when the profile has no unsigned type)."""
    if enc.is_pass_through:
        raise FixedPointError(f"{where}: the encoding is a 32-bit pass-through; the tensor is not "
                              "quantized, so it has no integer form: re-quantize with 2..16-bit "
                              "activations (`refq quantize --act-bw 8`)")
    if enc.axis is not None:
        raise FixedPointError(f"{where}: per-channel activation encodings are not supported by "
                              "the integer graph; re-quantize with `refq quantize` (activations "
                              "per tensor)")
    check_scale(enc.scale, where)
    bits, qmin, qmax, zp = enc.bitwidth, int(enc.qmin), int(enc.qmax), int(enc.zero_point)
    if bits > 16:
        raise FixedPointError(f"{where}: {bits}-bit activations are not supported; re-quantize "
                              "with `refq quantize --act-bw 8` (or up to 16)")
    signed, unsigned = ("int8", "uint8") if bits <= 8 else ("int16", "uint16")
    if qmin >= 0:
        if unsigned in profile.activation_dtypes:
            dtype = unsigned
        else:
            off = 1 << (bits - 1)
            qmin, qmax, zp, dtype = qmin - off, qmax - off, zp - off, signed
    else:
        dtype = signed
    if dtype not in profile.activation_dtypes:
        raise FixedPointError(f"{where}: profile '{profile.name}' does not support {bits}-bit "
                              f"activations ({dtype}); it supports "
                              f"{list(profile.activation_dtypes)}: re-quantize with another "
                              "--act-bw or choose another --profile (`refq profiles`)")
    return TensorQ(float(np.float32(enc.scale)), zp, qmin, qmax, dtype)


def weight_form(codes, zp, bits, signed_grid, profile, where):
    """(codes in their integer dtype, weight zero point) for `profile`, or FixedPointError. The
    zero point `zp` is one integer or one per output channel; it comes back as an int when all
    agree (the attribute weight_zp of the integer node), else as an int64 array [O] (its
    parameter weight_zp), which needs a profile with per_channel_weight_zero_point; a non-zero
    zero point needs weight_zero_point (the TFLite and CMSIS-NN kernels have no weight offset,
    TOSA's weight_zp is one value)."""
    zp = np.atleast_1d(np.asarray(zp, dtype=np.int64))
    codes = np.asarray(codes, dtype=np.int64)
    if bits > 8:
        raise FixedPointError(f"{where}: profile '{profile.name}' does not support {bits}-bit "
                              f"weights; it supports {list(profile.weight_dtypes)}: re-quantize "
                              "with `refq quantize --param-bw 8`")
    if not signed_grid and "uint8" not in profile.weight_dtypes:
        off = 1 << (bits - 1)
        codes, zp, signed_grid = codes - off, zp - off, True
    if np.any(zp != 0):
        if not profile.weight_zero_point:
            raise FixedPointError(f"{where}: weights must be quantized symmetric (zero point 0) "
                                  f"for profile '{profile.name}'; got zero point(s) "
                                  f"{sorted(set(zp.tolist()))[:4]}. Quantize with a symmetric "
                                  "weight config (`refq quantize --config`, params.weight."
                                  "is_symmetric \"True\", as the bundled configs)")
        if np.any(zp != zp[0]) and not profile.per_channel_weight_zero_point:
            raise FixedPointError(f"{where}: weight zero points differ per output channel "
                                  f"({zp.tolist()[:4]}...); profile '{profile.name}' holds one "
                                  "weight zero point per layer (per_channel_weight_zero_point "
                                  "False): quantize with symmetric weights (`refq quantize "
                                  "--config`) or choose a profile that allows them (`refq "
                                  "profiles`: onnx)")
    if signed_grid:
        dtype = "int4" if bits <= 4 and "int4" in profile.weight_dtypes else "int8"
    else:
        dtype = "uint8"
    if dtype not in profile.weight_dtypes:
        raise FixedPointError(f"{where}: profile '{profile.name}' does not support {dtype} "
                              f"weights; it supports {list(profile.weight_dtypes)}: choose "
                              "another --profile (`refq profiles`) or re-quantize")
    npt = np.uint8 if dtype == "uint8" else np.int8
    info = np.iinfo(npt)
    if codes.size and (codes.min() < info.min or codes.max() > info.max):
        raise FixedPointError(f"{where}: weight codes [{codes.min()}, {codes.max()}] do not fit "
                              f"{dtype}")
    if zp.size > 1 and np.any(zp != zp[0]):
        return codes.astype(npt), zp.reshape(-1)
    return codes.astype(npt), int(zp[0])


def bias_int(b, s_in, s_w, profile, where, bits=None):
    """round_half_even(b / (s_in·s_w[c])) in float64 as int32 (int64 when `bits` > 32); error
    naming the first channel that does not fit `bits` (default the profile's bias_bits; the 16x8
    layers pass 48: |q| ≤ 2^47 − 1). float64 holds every such q exactly (< 2^53)."""
    if b is None:
        return None
    acc_scale = np.float64(np.float32(s_in)) * np.asarray(s_w, dtype=np.float32).astype(np.float64)
    q = np.rint(np.asarray(b, dtype=np.float64) / acc_scale)
    bits = profile.bias_bits if bits is None else int(bits)
    lim = float((1 << (bits - 1)) - 1)
    bad = ~(np.abs(q) <= lim)
    if np.any(bad):
        c = int(np.argmax(bad))
        raise FixedPointError(
            f"{where}: bias channel {c} ({float(np.asarray(b).ravel()[c])!r}) quantizes to "
            f"{float(q[c])!r}, which does not fit int{bits} (scale s_in·s_w = "
            f"{float(np.broadcast_to(acc_scale, q.shape)[c])!r}); {int(np.count_nonzero(bad))} "
            "channel(s) overflow. Re-quantize with `refq quantize` (its overflow protection widens "
            "the weight scale; Python: QuantSim(overflow_protection=True)) or widen the input's "
            "range")
    return q.astype(np.int64 if bits > 32 else np.int32)
