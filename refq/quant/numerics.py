"""The named numerical conventions of encoding derivation and fake quantization (DESIGN principle 3).

`EncodingNumerics` names every choice with its source in aimet.md; `AIMET_V2` (aimet-torch 2.42) is the
default everywhere in refq, `AIMET_V1` names the 1.x (libpymo) conventions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QuantError

__all__ = ["EncodingNumerics", "AIMET_V2", "AIMET_V1", "round_half_even", "round_half_away"]


@dataclass(frozen=True)
class EncodingNumerics:
    """The numerical conventions of encoding derivation and fake quantization, each with its source.

    rounding: "half_even" — q = rint(x/s) + zero_point, and the asymmetric zero point is
        round_he(−min/s) (AIMET 2.x: `torch.fake_quantize_*`, `torch.round`; §0.2.4).
        "half_away" — 1.x libpymo: the unsigned-grid value u = x/s + zero_point − qmin (non-negative
        after the float clamp) is rounded half away from zero, q = round_ha(u) + qmin, and the zero
        point is round_ha(−min/s) (`quantizeValueCpu`, `getComputedEncodings`; §1.2, §1.4). The
        clamp, division and rounding then run in float64, as libpymo's double encoding fields make
        them (in float32, x/s + 32768 would lose 8 bits at 16-bit grids).
    clamp: "integer" — clamp the rounded code to [qmin, qmax] (2.x). "float" — first clamp x to the
        effective range [s(qmin − zp), s(qmax − zp)] in float, then round (1.x; §1.4).
    min_range: "aimet_v2" — scale floor ms = min(2^−23, 0.01/N') with the additive widening of
        §0.2.2 step 2. "aimet_v1" — max ≥ min + 0.01 (`TfEncodingAnalyzer` MIN_RANGE; §1.3).
    symmetric_delta: "aimet_v2" — Δ = max(M/P', −m/Q) with the 2-bit P' = P + 1 rule, range
        [−QΔ, PΔ], then s re-derived by set_range (§0.2.2 step 3). "aimet_v1" — Δ = max(|m|, M)/qmax
        (= absmax/127 at 8 bits) stored as the scale; unsigned-symmetric grids use Δ = M/N (§1.2).
    fake_quant: "reciprocal_float32" — x·fl(1/s), the `torch.fake_quantize_per_*_affine` CPU fast path
        that AIMET's calibration and no-grad inference take (bit-exact, §0.2.4). "divide" — x/s, the
        autograd fallback `QuantDequantFunc` (2.x) and the 1.x kernel.
    dtype: the dtype of the fake-quant arithmetic (float32 or float64). Inputs are cast to it and
        results returned in it. Scales and encoding derivation are float32 regardless, as AIMET's
        min/max parameters are float32 (1.x libpymo kept doubles: its scales can differ by an ulp).
    """

    rounding: str = "half_even"
    clamp: str = "integer"
    min_range: str = "aimet_v2"
    symmetric_delta: str = "aimet_v2"
    fake_quant: str = "reciprocal_float32"
    dtype: np.dtype = np.dtype(np.float32)

    def __post_init__(self):
        choices = {"rounding": ("half_even", "half_away"), "clamp": ("integer", "float"),
                   "min_range": ("aimet_v2", "aimet_v1"), "symmetric_delta": ("aimet_v2", "aimet_v1"),
                   "fake_quant": ("reciprocal_float32", "divide")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise QuantError(f"EncodingNumerics.{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        dtype = np.dtype(self.dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise QuantError(f"EncodingNumerics.dtype must be float32 or float64, got {dtype}")
        object.__setattr__(self, "dtype", dtype)

    @property
    def is_aimet_v2_range(self) -> bool:
        """True when the range rules (min_range, symmetric_delta) are AIMET 2.x's."""
        return self.min_range == "aimet_v2" and self.symmetric_delta == "aimet_v2"


#: AIMET 2.42 (aimet-torch 2.42.0), the default everywhere.
AIMET_V2 = EncodingNumerics()
#: AIMET 1.x (libpymo): clamp in float, then round half away; Δ = absmax/127; 0.01 minimum range.
AIMET_V1 = EncodingNumerics(rounding="half_away", clamp="float", min_range="aimet_v1",
                            symmetric_delta="aimet_v1", fake_quant="divide")


def round_half_even(v):
    """Round to the nearest integer, ties to even (numpy.rint, torch.round)."""
    return np.rint(v)


def round_half_away(v):
    """Round to the nearest integer, ties away from zero (C `round`), exact: no `floor(v + 0.5)`."""
    v = np.asarray(v)
    t = np.trunc(v)
    return t + np.sign(v) * (np.abs(v - t) >= 0.5)
