"""The fer set-up of bench/compression.py against plain loop transcriptions: Pillow's BILINEAR
resize of an 8-bit image (Resample.c: precompute_coeffs, normalize_coeffs_8bpc, the horizontal
then the vertical 8-bit pass), the shifted and mirrored copies, and the fidelity figures (top-1
agreement, mean KL). Nothing here reads the LFW wheel or runs a model."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from compression import (fidelity, pil_bilinear_resize, pil_bilinear_weights,  # noqa: E402
                         shifted_variants)

PRECISION_BITS = 22


def pillow_coefficients(in_size, out_size):
    """precompute_coeffs + normalize_coeffs_8bpc, one output position at a time."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    out = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = int(center - support + 0.5)
        if xmin < 0:
            xmin = 0
        xmax = int(center + support + 0.5)
        if xmax > in_size:
            xmax = in_size
        xmax -= xmin
        k, ww = [], 0.0
        for x in range(xmax):
            t = abs((x + xmin - center + 0.5) * ss)
            w = 1.0 - t if t < 1.0 else 0.0
            k.append(w)
            ww += w
        k = [w / ww if ww != 0.0 else w for w in k]
        out.append((xmin, [int(0.5 + w * (1 << PRECISION_BITS)) for w in k]))
    return out


def clip8(v):
    if v >= (1 << PRECISION_BITS << 8):
        return 255
    if v <= 0:
        return 0
    return v >> PRECISION_BITS


def pillow_resize(image, height, width):
    """ImagingResampleInner for one grey image: horizontal pass, then vertical pass."""
    h, w = image.shape
    rows = image
    if w != width:
        coeffs = pillow_coefficients(w, width)
        rows = np.zeros((h, width), np.uint8)
        for y in range(h):
            for xx, (xmin, k) in enumerate(coeffs):
                acc = 1 << (PRECISION_BITS - 1)
                for x, kk in enumerate(k):
                    acc += int(image[y, xmin + x]) * kk
                rows[y, xx] = clip8(acc)
    if h == height:
        return rows
    coeffs = pillow_coefficients(h, height)
    out = np.zeros((height, rows.shape[1]), np.uint8)
    for yy, (ymin, k) in enumerate(coeffs):
        for xx in range(rows.shape[1]):
            acc = 1 << (PRECISION_BITS - 1)
            for y, kk in enumerate(k):
                acc += int(rows[ymin + y, xx]) * kk
            out[yy, xx] = clip8(acc)
    return out


@pytest.mark.parametrize("sizes", [(25, 64), (7, 3), (10, 10), (5, 12), (64, 25), (3, 1)])
def test_weights_equal_the_transcription(sizes):
    got = pil_bilinear_weights(*sizes)
    for xx, (xmin, k) in enumerate(pillow_coefficients(*sizes)):
        row = np.zeros(sizes[0], np.int64)
        row[xmin:xmin + len(k)] = k
        np.testing.assert_array_equal(got[xx], row)


@pytest.mark.parametrize("shape", [(25, 25, 64, 64), (6, 9, 13, 4), (9, 9, 9, 17), (8, 5, 8, 5)])
def test_resize_equals_the_transcription(shape):
    h, w, height, width = shape
    images = np.random.default_rng(h * w).integers(0, 256, (2, h, w)).astype(np.uint8)
    images[0, :2] = 255                      # saturated and dark rows reach both clip ends
    images[1, -2:] = 0
    got = pil_bilinear_resize(images, height, width)
    assert got.dtype == np.uint8 and got.shape == (2, height, width)
    for i in range(2):
        np.testing.assert_array_equal(got[i], pillow_resize(images[i], height, width))


def test_shifted_variants_equal_the_definition():
    x = np.random.default_rng(0).normal(size=(3, 6, 7, 2))
    out = shifted_variants(x, 4, 2, seed=3)
    rng = np.random.default_rng(3)
    flip = rng.integers(0, 2, (4, 3)).astype(bool)
    dy, dx = rng.integers(-2, 3, (2, 4, 3))
    flip[0], dy[0], dx[0] = False, 0, 0
    np.testing.assert_array_equal(out[:3], x)
    for v in range(4):
        for i in range(3):
            for r in range(6):
                for c in range(7):
                    src = min(max(c - dx[v, i], 0), 6)
                    src = 6 - src if flip[v, i] else src
                    np.testing.assert_array_equal(out[v * 3 + i, r, c],
                                                  x[i, min(max(r - dy[v, i], 0), 5), src])


class _Softmax:
    """A stand-in graph whose output is given (fidelity runs it through refq.plan.Plan)."""


def test_fidelity_equals_the_definition(monkeypatch):
    import compression

    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(7), 20)
    p[0] = [1, 0, 0, 0, 0, 0, 0]                       # a zero probability contributes nothing
    q = rng.dirichlet(np.ones(7), 20)
    monkeypatch.setattr(compression, "_softmax_outputs", lambda graph, x: q)
    got = fidelity(p, _Softmax(), None)
    kl = [sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(pi, qi) if pk > 0)
          for pi, qi in zip(p, q)]
    assert got["kl"] == pytest.approx(sum(kl) / 20, rel=1e-12)
    assert got["agreement"] == np.mean(p.argmax(1) == q.argmax(1))
