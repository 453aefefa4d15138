"""Pre-quantized weight detection: AIMET 2.42 `_decompose_prequantized_tensor` (aimet.md §0.2.5).

Before calibrating a symmetric, centred (ceil((qmin + qmax)/2) = 0: signed or strict grid) parameter
quantizer, AIMET tries to write the weight as integer × scale, one block per channel (per-channel) or
one block for the whole tensor. On success the range is [s·qmin, s·qmax] and no analyzer runs.

The notes fix the following; refq's choices for what they leave open are marked (refq).
1. Early rejection: with L = max(|qmin|, qmax) + 1, the tensor is rejected if any of its first 64 blocks
   has more than L distinct magnitudes among its first 2L values (block order: C order of the block).
2. Divisors k, step s_k = absmax/k: ±2 windows around round(absmax/min_nonzero) and
   round(absmax/smallest gap between distinct non-zero magnitudes), plus k = 1 and k = L − 1
   (128 at 8 bits); (refq) k is limited to [1, L − 1].
3. On grid: |r − round(r)| ≤ 3·u·|r| with r = x/s_k; u = 2^−20 for float32 data, 2^−11 for float16
   (bf16 2^−8 is not a NumPy dtype; (refq) float64 data count as float32).
4. Per block: keep the k whose off-grid fraction is within 0.005 of the best, then those whose mean
   deviation mean|r − round(r)| is within 1.5× the best of those, and take the smallest k. The block is
   accepted if that k leaves at most 5% of its elements off grid. All-zero blocks are accepted.
5. Tensor: ≥ 90% of the blocks accepted, the codes not all zero, and the relative RMS error
   ‖x − s·q‖/‖x‖ ≤ max(5u, 1e-3).
6. Scale per block: s0 = median of |x|/|q| over the non-zero codes q = round(x/s_k); then 4
   least-squares (Lloyd) steps q = clamp(round(x/s), qmin, qmax), s = Σxq/Σq², keeping the s with the
   smallest squared error (ties: the earlier); floored at the minimum scale. All-zero blocks get it.
   (refq) Statistics are computed in float64; the scale is rounded to float32 at the end.
Verified examples (AIMET 2.42): {−0.1, 0, 0.1} -> s = 0.1 (range [−12.8, 12.7]); 0.01 × integers in
[−64, 63] -> s = 0.01.
"""
from __future__ import annotations

import numpy as np

from ..errors import QuantError
from .encoding import AIMET_V2, Encoding, encoding_from_range, integer_grid, minimum_scale

__all__ = ["detect_prequantized", "prequantized_encoding", "storage_precision"]


def storage_precision(dtype) -> float:
    """u of the on-grid test: 2^−11 for float16, else 2^−20 (float32 storage)."""
    return 2.0 ** -11 if np.dtype(dtype) == np.float16 else 2.0 ** -20


def _blocks(w: np.ndarray, axis):
    if axis is None:
        return w.reshape(1, -1)
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def _too_many_magnitudes(blocks: np.ndarray, limit: int) -> bool:
    head = np.abs(blocks[:64, :2 * limit])
    return any(np.unique(row).size > limit for row in head)


def _divisors(a: np.ndarray, kmax: int) -> np.ndarray:
    absmax = a.max()
    nonzero = np.unique(a[a > 0])
    estimates = [absmax / nonzero[0]]
    if nonzero.size > 1:
        estimates.append(absmax / np.diff(nonzero).min())
    ks = {1, kmax}
    for e in estimates:
        centre = int(np.rint(e)) if np.isfinite(e) and e < 4 * kmax else kmax + 3
        ks.update(range(centre - 2, centre + 3))
    return np.array(sorted(k for k in ks if 1 <= k <= kmax), dtype=np.float64)


def _choose_k(x: np.ndarray, u: float, kmax: int):
    """(k, off-grid fraction) of one non-zero block (module docstring, steps 2–4)."""
    a = np.abs(x)
    ks = _divisors(a, kmax)
    r = x[None, :] / (a.max() / ks)[:, None]                        # (K, n)
    dev = np.abs(r - np.rint(r))
    off = (dev > 3 * u * np.abs(r)).mean(axis=1)
    mean_dev = dev.mean(axis=1)
    keep = off <= off.min() + 0.005
    keep &= mean_dev <= 1.5 * mean_dev[keep].min()
    i = np.flatnonzero(keep)[0]                                     # ks is sorted: the smallest k
    return ks[i], off[i]


def _refine(x: np.ndarray, s0: float, qmin: int, qmax: int) -> float:
    def sq_error(s):
        q = np.clip(np.rint(x / s), qmin, qmax)
        return np.sum((x - s * q) ** 2), q

    best_s, (best_err, q) = s0, sq_error(s0)
    s = s0
    for _ in range(4):
        denom = np.sum(q * q)
        if denom == 0:
            break
        s = np.sum(x * q) / denom
        err, q = sq_error(s)
        if err < best_err:
            best_s, best_err = s, err
    return best_s


def detect_prequantized(w, bitwidth: int, *, axis: int | None = None, strict: bool = False):
    """Scale (float32, shape () or (C,)) if `w` is integer × scale on the symmetric grid, else None."""
    w = np.asarray(w)
    if w.size == 0 or not np.all(np.isfinite(w)):
        return None
    qmin, qmax = integer_grid(bitwidth, True, strict=strict)
    limit = max(-qmin, qmax) + 1
    u = storage_precision(w.dtype)
    blocks = _blocks(w.astype(np.float64), axis)
    if _too_many_magnitudes(blocks, limit):
        return None
    ms = float(minimum_scale(qmax - qmin))
    # steps 2-4 for every block first: the scales (step 6) only for a tensor that can pass step 5
    divisor = np.zeros(blocks.shape[0])   # k of each non-zero block; 0 for an all-zero block
    accepted = 0
    for c, x in enumerate(blocks):
        if accepted + blocks.shape[0] - c < 0.9 * blocks.shape[0]:
            return None   # too many blocks rejected already: step 5 fails whatever follows
        if not np.any(x):
            accepted += 1
            continue
        divisor[c], off = _choose_k(x, u, limit - 1)
        accepted += off <= 0.05
    if accepted < 0.9 * blocks.shape[0]:
        return None
    scales = np.full(blocks.shape[0], ms)
    codes_nonzero, err2 = False, 0.0
    for c in np.flatnonzero(divisor):
        x, k = blocks[c], divisor[c]
        q = np.rint(x / (np.abs(x).max() / k))
        s0 = np.median(np.abs(x[q != 0]) / np.abs(q[q != 0]))
        s = max(_refine(x, s0, qmin, qmax), ms)
        scales[c] = s
        q = np.clip(np.rint(x / s), qmin, qmax)
        codes_nonzero |= bool(np.any(q))
        err2 += float(np.sum((x - s * q) ** 2))
    total2 = float(np.sum(blocks ** 2))
    if not codes_nonzero:
        return None
    if np.sqrt(err2 / total2) > max(5 * u, 1e-3):
        return None
    scales = scales.astype(np.float32)
    return scales.reshape(()) if axis is None else scales


def prequantized_encoding(w, bitwidth: int, *, axis: int | None = None, strict: bool = False,
                          numerics=AIMET_V2) -> Encoding | None:
    """The encoding AIMET sets for a pre-quantized weight: set_range(s·qmin, s·qmax), or None."""
    if bitwidth == 32:
        raise QuantError("prequantized_encoding: a 32-bit (pass-through) quantizer has no grid")
    s = detect_prequantized(w, bitwidth, axis=axis, strict=strict)
    if s is None:
        return None
    qmin, qmax = integer_grid(bitwidth, True, strict=strict)
    return encoding_from_range(s * np.float32(qmin), s * np.float32(qmax), bitwidth, True, axis=axis,
                               strict=strict, numerics=numerics)
