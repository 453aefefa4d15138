"""Bit-exactness tests of the depthwise convolution kernel (refq/layers/depthwise.py).

The reference is the definition evaluated per element in the order the kernel guarantees: the
padded input built with np.pad, the channel o reading input channel o // m, then
acc = p(0, 0) and acc = acc + p(u, v) for the other taps in row-major order, each product
p(u, v) = x_pad[n, i·sh + u·dh, j·sw + v·dw, o // m] · w[o, u, v] rounded on its own, and
acc + b last. Every elementwise NumPy operation rounds each element independently, so the
reference gives each element exactly that sequence of roundings. Results are compared byte for
byte (signed zeros and NaN payloads included), over strides, dilations, paddings, multipliers,
kernel sizes, dtypes, batch sizes, bias or none, and blockings from one output row per block to
several images per block (DW_BLOCK_BYTES patched).
"""
from __future__ import annotations

import itertools
import threading
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import ShapeError
from refq.layers import depthwise as dw_mod
from refq.layers.conv import window_geometry
from refq.layers.depthwise import depthwise_conv

DEFAULT_BLOCK_BYTES = dw_mod.DW_BLOCK_BYTES


def reference(x, pads, w, b, strides, dil, oh, ow):
    """The depthwise convolution, tap by tap in row-major order, one rounding per operation."""
    o, kh, kw, _ = w.shape
    m = o // x.shape[3]
    t, bottom, l, r = pads
    xm = np.pad(x, ((0, 0), (t, bottom), (l, r), (0, 0)))[..., np.arange(o) // m]
    (sh, sw), (dh, dw) = strides, dil
    ii, jj = np.arange(oh)[:, None], np.arange(ow)[None, :]
    acc = None
    for u, v in itertools.product(range(kh), range(kw)):
        p = xm[:, ii * sh + u * dh, jj * sw + v * dw] * w[:, u, v, 0]
        acc = p if acc is None else acc + p
    return acc if b is None else acc + b


def same_bytes(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


def operands(rng, n, hw, c, m, k, dtype, bias):
    """x [n, h, w, c], w [c·m, kh, kw, 1], b [c·m] or None; floats with many signed zeros."""
    shape_w = (c * m,) + k + (1,)
    if np.dtype(dtype).kind == "i":
        x = rng.integers(-1000, 1000, (n,) + hw + (c,)).astype(dtype)
        w = rng.integers(-100, 100, shape_w).astype(dtype)
        b = rng.integers(-10**6, 10**6, c * m).astype(dtype) if bias else None
        return x, w, b
    x = rng.standard_normal((n,) + hw + (c,)).astype(dtype)
    x[rng.random(x.shape) < 0.2] = -0.0
    x[rng.random(x.shape) < 0.1] = 0.0
    w = rng.standard_normal(shape_w).astype(dtype)
    w[rng.random(w.shape) < 0.2] = -0.0
    b = rng.standard_normal(c * m).astype(dtype) if bias else None
    if bias:
        b[::3] = -0.0
    return x, w, b


def geometry(hw, k, strides, dil, padding):
    """(pads, (oh, ow)) or None when the kernel does not fit."""
    explicit = isinstance(padding, tuple)
    try:
        return window_geometry(hw, k, strides, dil, "explicit" if explicit else padding,
                               padding if explicit else (0, 0, 0, 0))
    except ShapeError:
        return None


def block_bytes(mode, oh, ow, o, itemsize, strides):
    """DW_BLOCK_BYTES giving one output row per block, three rows, two whole images, or the
    default."""
    pixel = dw_mod.pixel_bytes(o, itemsize, strides)
    return {"rows1": 1, "rows3": 3 * ow * pixel, "images2": 2 * oh * ow * pixel,
            "default": DEFAULT_BLOCK_BYTES}[mode]


def run(x, pads, w, b, oh, ow, strides, dil, epilogue=None):
    y = np.full((x.shape[0], oh, ow, w.shape[0]), 7, x.dtype)   # every element must be written
    depthwise_conv(x, pads, w, b, y, oh, ow, strides, dil, epilogue)
    return y


KERNELS = [(1, 1), (3, 3), (5, 5), (3, 1)]
STRIDES = [(1, 1), (2, 2), (3, 3), (2, 1), (1, 3)]
DILATIONS = [(1, 1), (2, 2), (1, 2)]
PADDINGS = ["valid", "same", (2, 0, 1, 3), (0, 3, 4, 1)]


@pytest.mark.parametrize("k", KERNELS)
@pytest.mark.parametrize("strides", STRIDES)
@pytest.mark.parametrize("dil", DILATIONS)
@pytest.mark.parametrize("padding", PADDINGS, ids=str)
def test_bytes_equal_the_reference(monkeypatch, k, strides, dil, padding):
    """Every dtype, multiplier 1/2/3, batch 1/5 with and without bias, and four blockings, on an
    odd-sized input."""
    geo = geometry((9, 7), k, strides, dil, padding)
    if geo is None:
        pytest.skip("kernel larger than the padded input")
    pads, (oh, ow) = geo
    rng = np.random.default_rng(zlib.crc32(repr((k, strides, dil, padding)).encode()))
    for dtype, m, (n, bias) in itertools.product(
            [np.float32, np.float64, np.int32], [1, 2, 3], [(1, True), (1, False), (5, True), (5, False)]):
        x, w, b = operands(rng, n, (9, 7), 3, m, k, dtype, bias)
        ref = reference(x, pads, w, b, strides, dil, oh, ow)
        for mode in ["rows1", "rows3", "images2", "default"]:
            monkeypatch.setattr(dw_mod, "DW_BLOCK_BYTES",
                                block_bytes(mode, oh, ow, 3 * m, x.itemsize, strides))
            y = run(x, pads, w, b, oh, ow, strides, dil)
            assert same_bytes(y, ref), (np.dtype(dtype).name, m, n, bias, mode)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 12), wd=st.integers(1, 12), c=st.integers(1, 5),
       m=st.integers(1, 3), kh=st.integers(1, 5), kw=st.integers(1, 5),
       sh=st.integers(1, 3), sw=st.integers(1, 3), dh=st.integers(1, 3), dw=st.integers(1, 3),
       pads=st.tuples(*[st.integers(0, 4)] * 4), dtype=st.sampled_from(["float32", "float64", "int32"]),
       bias=st.booleans(), block=st.integers(1, 4096), seed=st.integers(0, 2**32 - 1))
def test_random_geometries(n, h, wd, c, m, kh, kw, sh, sw, dh, dw, pads, dtype, bias, block, seed):
    geo = geometry((h, wd), (kh, kw), (sh, sw), (dh, dw), pads)
    if geo is None:
        return
    pads, (oh, ow) = geo
    x, w, b = operands(np.random.default_rng(seed), n, (h, wd), c, m, (kh, kw), dtype, bias)
    saved = dw_mod.DW_BLOCK_BYTES
    try:
        dw_mod.DW_BLOCK_BYTES = block
        y = run(x, pads, w, b, oh, ow, (sh, sw), (dh, dw))
    finally:
        dw_mod.DW_BLOCK_BYTES = saved
    assert same_bytes(y, reference(x, pads, w, b, (sh, sw), (dh, dw), oh, ow))


@pytest.mark.parametrize("mode", ["rows1", "rows3", "images2", "default"])
@pytest.mark.parametrize("strides,padding", [((1, 1), "same"), ((2, 2), "same"), ((1, 2), (1, 0, 0, 2))])
def test_epilogue_runs_once_on_every_finished_block(monkeypatch, mode, strides, padding):
    """The blocks handed to the epilogue are contiguous pieces of y that cover it exactly once,
    each after its bias (an epilogue adding 1 in place gives the reference + 1, bit for bit), and
    the epilogue runs with the caller's NumPy buffer size."""
    rng = np.random.default_rng(5)
    x, w, b = operands(rng, 5, (11, 9), 4, 2, (3, 3), np.float32, True)
    pads, (oh, ow) = geometry((11, 9), (3, 3), strides, (1, 1), padding)
    monkeypatch.setattr(dw_mod, "DW_BLOCK_BYTES", block_bytes(mode, oh, ow, 8, 4, strides))
    y = np.empty((5, oh, ow, 8), np.float32)
    start = y.__array_interface__["data"][0]
    cover = np.zeros(y.size, int)

    def epilogue(block):
        assert np.shares_memory(block, y) and block.flags.c_contiguous
        assert block.shape[2:] == (ow, 8)
        first = (block.__array_interface__["data"][0] - start) // y.itemsize
        cover[first:first + block.size] += 1
        shapes.append(block.shape[:2])
        assert np.getbufsize() == bufsize   # the caller's NumPy settings
        block += np.float32(1)

    shapes, bufsize = [], 4096
    saved = np.setbufsize(bufsize)
    try:
        depthwise_conv(x, pads, w, b, y, oh, ow, strides, (1, 1), epilogue)
        assert np.getbufsize() == bufsize
    finally:
        np.setbufsize(saved)
    assert (cover == 1).all()
    expect = {"rows1": (1, 1), "rows3": (1, 3), "images2": (2, oh), "default": (5, oh)}[mode]
    assert shapes[0] == expect and all(s[0] <= expect[0] and s[1] <= expect[1] for s in shapes)
    assert same_bytes(y, reference(x, pads, w, b, strides, (1, 1), oh, ow) + np.float32(1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_signed_zeros_and_non_finite_values(dtype):
    """−0.0 sums, the +0.0 or −0.0 a padded tap adds (0·w), NaN from 0·inf in the padding, inf
    inputs and NaN payloads come out as in the reference."""
    rng = np.random.default_rng(2)
    x = rng.choice(np.array([-0.0, 0.0, 1.0, -2.5, np.inf, -np.inf], dtype), (2, 6, 5, 3))
    x[0, 1, 1, 0] = np.array(0x7FC01234, np.uint32).view(np.float32) if dtype == np.float32 \
        else np.array(0x7FF8000000001234, np.uint64).view(np.float64)
    w = rng.choice(np.array([-0.0, 0.0, 1.0, -1.0, 3.0], dtype), (6, 3, 3, 1))
    w[4, 2, 2, 0] = np.inf
    b = np.array([-0.0, 0.0, -0.0, 1.0, -0.0, 0.0], dtype)
    x0 = np.where(rng.random(x.shape) < 0.1, -0.0, 0.0).astype(dtype)   # sums of ±0.0 only
    for strides in [(1, 1), (2, 2)]:
        pads, (oh, ow) = geometry((6, 5), (3, 3), strides, (1, 1), "same")
        with np.errstate(invalid="ignore", over="ignore"):
            y = run(x, pads, w, b, oh, ow, strides, (1, 1))
            ref = reference(x, pads, w, b, strides, (1, 1), oh, ow)
            y0 = run(x0, pads, -np.abs(w), None, oh, ow, strides, (1, 1))
            ref0 = reference(x0, pads, -np.abs(w), None, strides, (1, 1), oh, ow)
        assert same_bytes(y, ref) and same_bytes(y0, ref0)
        assert np.signbit(ref0).any() and not np.signbit(ref0).all() and np.isnan(ref).any()


def test_non_contiguous_input():
    rng = np.random.default_rng(3)
    x, w, b = operands(rng, 2, (8, 7), 4, 1, (3, 3), np.float32, True)
    xt = np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)   # H and W swapped in memory
    for padding in ["valid", "same"]:
        pads, (oh, ow) = geometry((8, 7), (3, 3), (1, 1), (1, 1), padding)
        assert same_bytes(run(xt, pads, w, b, oh, ow, (1, 1), (1, 1)),
                          reference(x, pads, w, b, (1, 1), (1, 1), oh, ow))


def test_two_threads_at_once():
    """Each thread has its own scratch buffers."""
    rng = np.random.default_rng(4)
    cases = []
    for strides, dtype in [((1, 1), np.float32), ((2, 2), np.float32), ((2, 1), np.float64)]:
        x, w, b = operands(rng, 6, (40, 37), 16, 1, (3, 3), dtype, True)
        pads, (oh, ow) = geometry((40, 37), (3, 3), strides, (1, 1), "same")
        cases.append(((x, pads, w, b, oh, ow, strides, (1, 1)),
                      reference(x, pads, w, b, strides, (1, 1), oh, ow)))
    results = {}

    def work(i):
        args, _ = cases[i % len(cases)]
        results[i] = all(same_bytes(run(*args), cases[i % len(cases)][1]) for _ in range(5))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == {i: True for i in range(4)}
