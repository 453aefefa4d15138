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
   (refq) Steps 2–4 run on groups of blocks at once (`_choose_ks`; the first group the fewest
   blocks whose rejection alone fails step 5, at least 8, then twice as many each time), the same
   arithmetic on each block, and stop once too many blocks are rejected for step 5's 90%.
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
    """Step 1: some block of the first 64 has more than `limit` distinct magnitudes among its
    first 2·limit values (the sorted magnitudes of each: 1 + the number of rises)."""
    head = np.sort(np.abs(blocks[:64, :2 * limit]), axis=1)
    return bool((np.count_nonzero(np.diff(head, axis=1), axis=1) + 1 > limit).any())


#: Values of the (blocks, divisors, block length) arrays `_choose_ks` forms at once (memory only).
CHOOSE_VALUES = 1 << 21


def _divisors(a: np.ndarray, kmax: int):
    """Step 2 for each row of the magnitudes `a` (C, n) of non-zero blocks: ((C, 12) divisors k,
    each row's sorted ascending and each k once, the unused places after them holding 0; the
    rows' maxima)."""
    s = np.sort(a, axis=1)
    absmax = s[:, -1]
    smallest = np.where(s > 0, s, np.inf).min(axis=1)
    rises = np.diff(s, axis=1)
    gap = np.where((s[:, :-1] > 0) & (rises > 0), rises, np.inf).min(axis=1, initial=np.inf)
    windows = []
    for e, present in ((absmax / smallest, True), (absmax / gap, np.isfinite(gap))):
        centre = np.where(np.isfinite(e) & (e < 4 * kmax),
                          np.rint(np.where(np.isfinite(e), e, 0)), kmax + 3)
        w = centre[:, None] + np.arange(-2, 3)
        windows.append(np.where(np.asarray(present)[..., None], w, 0))   # 0: no k (dropped)
    cand = np.concatenate([np.ones((len(a), 1)), np.full((len(a), 1), kmax)] + windows, axis=1)
    cand = np.where((cand >= 1) & (cand <= kmax), cand, np.inf)
    cand.sort(axis=1)
    cand[:, 1:][cand[:, 1:] == cand[:, :-1]] = np.inf
    cand.sort(axis=1)
    return np.where(np.isfinite(cand), cand, 0), absmax


def _choose_ks(x: np.ndarray, u: float, kmax: int):
    """(k, off-grid fraction) of each row of x (C, n), non-zero blocks (module docstring, steps
    2–4)."""
    a = np.abs(x)
    ks, absmax = _divisors(a, kmax)
    used = ks > 0
    step = absmax[:, None] / np.where(used, ks, 1)
    r = x[:, None, :] / step[:, :, None]                                  # (C, K, n)
    dev = np.abs(r - np.rint(r))
    off = np.where(used, (dev > 3 * u * np.abs(r)).mean(axis=2), np.inf)
    mean_dev = np.where(used, dev.mean(axis=2), np.inf)
    keep = off <= off.min(axis=1, keepdims=True) + 0.005
    keep &= mean_dev <= 1.5 * np.where(keep, mean_dev, np.inf).min(axis=1, keepdims=True)
    i = np.argmax(keep, axis=1)                                          # the smallest such k
    rows = np.arange(len(x))
    return ks[rows, i], off[rows, i]


def _groups(n: int, values_per_row: int, first: int = 8):
    """(start, end) of groups of rows: `first` rows, then twice as many each time, at most about
    CHOOSE_VALUES / values_per_row."""
    cap, start, size = max(1, CHOOSE_VALUES // values_per_row), 0, first
    while start < n:
        end = min(n, start + min(size, cap))
        yield start, end
        start, size = end, 2 * size


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
    nonzero = np.flatnonzero(np.any(blocks, axis=1))
    accepted = blocks.shape[0] - nonzero.size
    # the first group: the fewest blocks whose rejection alone leaves fewer than 90% accepted
    first = max(8, int(0.1 * blocks.shape[0]) + 1)
    for g0, g1 in _groups(nonzero.size, 12 * blocks.shape[1], first):
        rows = nonzero[g0:g1]
        divisor[rows], off = _choose_ks(blocks[rows], u, limit - 1)
        accepted += int(np.count_nonzero(off <= 0.05))
        if accepted + nonzero.size - g1 < 0.9 * blocks.shape[0]:
            return None   # too many blocks rejected already: step 5 fails whatever follows
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
