"""Spec tests of conv2d's vector-Jacobian product (refq/layers/conv.py, Vector-Jacobian product).

Three references:
- central finite differences in float64 (tests/vjp_check.py) on every combination of strides,
  dilations, padding (valid, same, explicit, explicit pads wide enough that some output pixels
  read only padding) and groups (1, 2, depthwise, depthwise with multiplier 2), with kernels
  1x1, 3x3, 2x3 and 5x5 in turn;
- every entry of the gradients, on those combinations times every kernel, against the forward
  itself: conv2d is linear in x and in w, so ∂L/∂x[n, p] = <conv(e_p, w), gy[n]> for the one-hot
  images e_p (one forward over a batch of them), and ∂L/∂w[o, u, v, c] = Σ gy[.., o] ·
  patch[.., u, v, c] with the patches of x taken by a group-1 convolution with one-hot kernels;
- the adjoint identities <conv(x, w), gy> = <x, ∂L/∂x> = <w, ∂L/∂w> on larger shapes;
plus hand-worked values, the pixels no window reads and the windows that read only padding,
non-finite values and dtypes. conv2d has no kinks (bilinear in x and w).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from vjp_check import check_vjp

from refq.layers import REGISTRY
from refq.layers.conv import window_geometry

OP = REGISTRY["conv2d"]

STRIDES = [(1, 1), (2, 2), (1, 2)]
DILATIONS = [(1, 1), (2, 2), (2, 1)]
PADDINGS = ["valid", "same", "explicit", "wide"]   # wide: explicit pads >= the effective kernel
GROUPS = ["1", "2", "C", "Cx2"]                    # (C, O, groups): see channels()
KERNELS = [(1, 1), (3, 3), (2, 3), (5, 5)]


def channels(kind):
    """(C, O, groups) of a groups kind."""
    return {"1": (3, 4, 1), "2": (4, 6, 2), "C": (3, 3, 3), "Cx2": (3, 6, 3)}[kind]


def attrs_of(**attrs):
    return OP.normalise_attrs(attrs, "test conv2d")


def make_case(kernel, strides, dil, padding, groups, seed):
    """(x, params, attrs) of one geometry, with random sizes (seeded) that need not divide the
    stride; bias on every other seed."""
    r = np.random.default_rng(seed)
    c, o, g = channels(groups)
    keff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    if padding == "explicit":    # asymmetric (random, top > 0)
        pads = [int(r.integers(1, 4)), *(int(p) for p in r.integers(0, 3, 3))]
    elif padding == "wide":      # the first output row and the last column read only padding
        pads = [keff[0], int(r.integers(0, 2)), int(r.integers(0, 2)), keff[1] + 1]
    else:
        pads = [0, 0, 0, 0]
    lo = [max(1, keff[0] - pads[0] - pads[1]), max(1, keff[1] - pads[2] - pads[3])]
    if padding == "same":
        lo = [max(1, k - 3) for k in keff]
    h, w = (int(r.integers(a, k + 3)) for a, k in zip(lo, keff))
    x = r.standard_normal((int(r.integers(1, 3)), h, w, c))
    params = {"weight": r.standard_normal((o, *kernel, c // g))}
    if seed % 2 == 0:
        params["bias"] = r.standard_normal(o)
    attrs = {"strides": list(strides), "dilations": list(dil), "groups": g,
             "padding": "explicit" if padding == "wide" else padding}
    if attrs["padding"] == "explicit":
        attrs["pads"] = pads
    return x, params, attrs


GEOMETRIES = list(itertools.product(KERNELS, STRIDES, DILATIONS, PADDINGS, GROUPS))
# finite differences: every attribute combination once, the kernel cycling so that each kernel
# meets every (padding, groups) pair and every stride and dilation
ATTR_GEOMETRIES = [(KERNELS[(a + b + c + d) % 4], s, dl, p, g) for (a, s), (b, dl), (c, p), (d, g)
                   in itertools.product(*map(enumerate, (STRIDES, DILATIONS, PADDINGS, GROUPS)))]


def ids(geometries):
    return [f"k{k[0]}x{k[1]}-s{s[0]}{s[1]}-d{d[0]}{d[1]}-{p}-g{g}" for k, s, d, p, g in geometries]


IDS = ids(GEOMETRIES)


def vjp(x, params, attrs, gy=None, seed=1):
    """(y, gy, g_x, g_params) with a random gy unless given."""
    attrs = attrs_of(**attrs)
    y = OP.forward([x], params, attrs)
    if gy is None:
        gy = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    (gx,), gp = OP.vjp([x], params, attrs, y, gy)
    return y, gy, gx, gp


def reference(x, w, attrs, gy):
    """(∂L/∂x, ∂L/∂w) of L = <conv(x, w), gy> from the forward alone (module docstring)."""
    attrs = attrs_of(**attrs)
    n, h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    g = attrs["groups"]
    _, oh, ow, _ = gy.shape
    eye = np.eye(h * wd * c).reshape(-1, h, wd, c)                       # the images e_p
    y_e = OP.forward([eye], {"weight": w}, attrs)                      # [H·W·C, OH, OW, O]
    gx = np.einsum("kijo,nijo->nk", y_e, gy).reshape(x.shape)
    taps = np.eye(kh * kw * c).reshape(-1, kh, kw, c)                   # one-hot kernels
    patches = OP.forward([x], {"weight": taps}, {**attrs, "groups": 1})  # [N, OH, OW, kh·kw·C]
    patches = patches.reshape(n, oh, ow, kh, kw, g, cg)
    gw = np.einsum("nijgo,nijuvgc->gouvc", gy.reshape(n, oh, ow, g, o // g), patches)
    return gx, gw.reshape(w.shape)


def close(a, ref, rtol=1e-12):
    scale = max(1.0, float(np.max(np.abs(ref), initial=0.0)))
    np.testing.assert_allclose(a, ref, rtol=rtol, atol=rtol * scale)


# ---- every geometry -----------------------------------------------------------------------------
@pytest.mark.parametrize("geometry", ATTR_GEOMETRIES, ids=ids(ATTR_GEOMETRIES))
def test_matches_finite_differences(geometry):
    x, params, attrs = make_case(*geometry, seed=GEOMETRIES.index(geometry))
    check_vjp("conv2d", [x], params, attrs, seed=3, samples=30)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=IDS)
def test_every_entry_matches_the_forward(geometry):
    x, params, attrs = make_case(*geometry, seed=GEOMETRIES.index(geometry))
    _, gy, gx, gp = vjp(x, params, attrs)
    rx, rw = reference(x, params["weight"], attrs, gy)
    close(gx, rx)
    close(gp["weight"], rw)
    assert set(gp) == set(params)
    if "bias" in params:
        close(gp["bias"], gy.sum(axis=(0, 1, 2)))


@pytest.mark.parametrize("geometry", GEOMETRIES[::7], ids=IDS[::7])
def test_parameter_gradients_alone_are_the_same_numbers(geometry):
    """inputs_grad=False (AdaRound's weight-only VJP) gives bit-identical parameter gradients and
    no ∂L/∂x where the evaluation can skip it (depthwise, pointwise and group-1 kernels)."""
    x, params, attrs = make_case(*geometry, seed=GEOMETRIES.index(geometry))
    y, gy, gx, gp = vjp(x, params, attrs)
    (gx2,), gp2 = OP.vjp([x], params, attrs_of(**attrs), y, gy, inputs_grad=False)
    assert set(gp2) == set(gp)
    for k in gp:
        np.testing.assert_array_equal(gp2[k], gp[k])
    groups = attrs["groups"]
    if groups == 1 or groups == x.shape[3] == params["weight"].shape[0]:
        assert gx2 is None
    else:
        np.testing.assert_array_equal(gx2, gx)


ADJOINT = [  # (C, O, attrs) on x [3, 17, 19, C] with a 3x3 kernel unless "k" says otherwise
    (8, 12, {}),
    (8, 12, {"padding": "same", "strides": [2, 2]}),
    (8, 12, {"padding": "same", "dilations": [2, 1], "strides": [1, 2]}),
    (8, 12, {"padding": "explicit", "pads": [4, 0, 1, 5], "strides": [2, 2], "dilations": [2, 2]}),
    (8, 12, {"groups": 2, "padding": "same"}),
    (8, 12, {"groups": 4, "strides": [1, 2], "k": (2, 3)}),
    (8, 8, {"groups": 8, "padding": "same", "strides": [2, 2]}),
    (8, 16, {"groups": 8, "padding": "explicit", "pads": [1, 3, 0, 2], "k": (5, 5)}),
    (8, 12, {"k": (1, 1), "strides": [2, 2]}),
    (64, 12, {"padding": "same"}),                       # kw·C >= 128: the forward's row-fold
]


@pytest.mark.parametrize("c,o,attrs", ADJOINT)
def test_adjoint_identities(c, o, attrs):
    """<conv(x, w), gy> == <x, ∂L/∂x> == <w, ∂L/∂w> without bias (linear in x and in w)."""
    attrs = dict(attrs)
    kh, kw = attrs.pop("k", (3, 3))
    r = np.random.default_rng(c + o)
    x = r.standard_normal((3, 17, 19, c))
    w = r.standard_normal((o, kh, kw, c // attrs.get("groups", 1)))
    y, gy, gx, gp = vjp(x, {"weight": w}, attrs, seed=2)
    terms = y * gy
    lhs, scale = float(np.sum(terms)), float(np.sum(np.abs(terms)))
    assert abs(float(np.sum(x * gx)) - lhs) <= 1e-12 * scale
    assert abs(float(np.sum(w * gp["weight"])) - lhs) <= 1e-12 * scale
    assert set(gp) == {"weight"}


# ---- hand-worked ---------------------------------------------------------------------------------
def test_hand_worked_3x3_input_2x2_kernel():
    x = np.arange(1.0, 10.0).reshape(1, 3, 3, 1)          # [[1 2 3] [4 5 6] [7 8 9]]
    w = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
    gy = np.array([1.0, -1.0, 2.0, 0.5]).reshape(1, 2, 2, 1)
    _, _, gx, gp = vjp(x, {"weight": w, "bias": np.zeros(1)}, {}, gy=gy)
    # gx[p, q] = Σ gy[i, j] w[p - i, q - j]: the full convolution of gy with w
    np.testing.assert_array_equal(gx[0, :, :, 0], [[1, 1, -2], [5, 5.5, -3], [6, 9.5, 2]])
    # gw[u, v] = Σ gy[i, j] x[i + u, j + v]
    np.testing.assert_array_equal(gp["weight"][0, :, :, 0], [[9.5, 12], [17, 19.5]])
    np.testing.assert_array_equal(gp["bias"], [2.5])


def test_hand_worked_depthwise_multiplier_reads_channel_o_over_m():
    """Output channel o reads input channel o // m: ∂L/∂x[.., c] = Σ_k gy[.., c·m + k] w[c·m + k]."""
    x = np.array([[[[1.0, 10.0]]]])                         # 1x1 image, C = 2
    w = np.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1, 1)  # m = 2
    gy = np.array([[[[1.0, 0.5, -1.0, 2.0]]]])
    _, _, gx, gp = vjp(x, {"weight": w}, {"groups": 2}, gy=gy)
    np.testing.assert_array_equal(gx.ravel(), [1 + 1.0, -3 + 8.0])
    np.testing.assert_array_equal(gp["weight"].ravel(), [1.0, 0.5, -10.0, 20.0])


def test_hand_worked_strided_same():
    """5 rows, k 3, s 2, same: out 3, total pad 2 -> 1 top, 1 bottom; output row i reads padded
    rows 2i..2i+2, i.e. input rows 2i-1..2i+1, so input row 2 gets the taps u=0 of out row 1 and
    u=2 of out row 0 (1 column, C = O = 1)."""
    x = np.arange(1.0, 6.0).reshape(1, 5, 1, 1)
    w = np.array([1.0, 10.0, 100.0]).reshape(1, 3, 1, 1)
    gy = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    _, _, gx, gp = vjp(x, {"weight": w}, {"padding": "same", "strides": [2, 1]}, gy=gy)
    np.testing.assert_array_equal(gx.ravel(), [10, 100 + 2, 20, 200 + 3, 30])
    # gw[u] = Σ_i gy[i] x_pad[2i + u] with x_pad = [0 1 2 3 4 5 0]
    np.testing.assert_array_equal(gp["weight"].ravel(), [0 + 4 + 12, 1 + 6 + 15, 2 + 8 + 0])


# ---- pixels no window reads, windows that read only padding --------------------------------------
@pytest.mark.parametrize("groups", ["1", "2", "C", "Cx2"])
@pytest.mark.parametrize("h,w,kernel,attrs,unread_rows,unread_cols", [
    (8, 10, (3, 3), {"strides": [2, 2]}, [7], [9]),                    # (8-3)//2+1 = 3: rows 0..6
    (10, 7, (3, 2), {"strides": [2, 3], "dilations": [2, 1]}, [1, 3, 5, 7, 9], [2, 5, 6]),
    (7, 7, (1, 1), {"strides": [3, 2]}, [1, 2, 4, 5], [1, 3, 5]),
    (6, 6, (2, 2), {"strides": [2, 2], "dilations": [2, 2], "padding": "explicit",
                    "pads": [1, 0, 0, 1]}, [0, 2, 4], [1, 3, 5]),
])
def test_pixels_no_window_reads_get_exactly_zero(groups, h, w, kernel, attrs, unread_rows,
                                                 unread_cols):
    c, o, g = channels(groups)
    r = np.random.default_rng(5)
    x = r.standard_normal((2, h, w, c))
    wt = r.standard_normal((o, *kernel, c // g))
    _, _, gx, _ = vjp(x, {"weight": wt}, {**attrs, "groups": g})
    read = np.ones((h, w), bool)
    read[unread_rows] = False
    read[:, unread_cols] = False
    assert np.all(gx[:, ~read] == 0)
    assert np.all(gx[:, read] != 0)   # every other pixel is read (random values: no zero sum)


@pytest.mark.parametrize("groups", ["1", "2", "C", "Cx2"])
def test_windows_that_read_only_padding(groups):
    """pads [4, 0, 0, 4] with a 3x3 kernel: output rows 0, 1 and the last two columns read only
    padding; their gy reaches no ∂L/∂x entry and adds gy · 0 to ∂L/∂w, gy to ∂L/∂b."""
    c, o, g = channels(groups)
    r = np.random.default_rng(6)
    x = r.standard_normal((2, 5, 6, c))
    params = {"weight": r.standard_normal((o, 3, 3, c // g)), "bias": r.standard_normal(o)}
    attrs = {"padding": "explicit", "pads": [4, 0, 0, 4], "groups": g}
    y = OP.forward([x], params, attrs_of(**attrs))
    assert y.shape[1:3] == (7, 8)
    only_pad = np.zeros(y.shape[1:3], bool)
    only_pad[:2] = only_pad[:, -2:] = True
    gy = np.where(only_pad[None, :, :, None], r.standard_normal(y.shape), 0.0)
    np.testing.assert_array_equal(y[:, only_pad], np.broadcast_to(params["bias"], y[:, only_pad].shape))
    _, _, gx, gp = vjp(x, params, attrs, gy=gy)
    assert np.all(gx == 0) and np.all(gp["weight"] == 0)
    np.testing.assert_allclose(gp["bias"], gy.sum(axis=(0, 1, 2)), rtol=1e-15)
    assert np.all(gp["bias"] != 0)


# ---- non-finite values ---------------------------------------------------------------------------
NAN_CASES = [
    ("1", {"padding": "same"}), ("2", {"strides": [2, 1], "padding": "same"}),
    ("C", {"dilations": [2, 2], "padding": "same"}), ("Cx2", {"strides": [2, 2]}),
]


def geometry(h, w, attrs, kernel):
    return window_geometry((h, w), kernel, attrs["strides"], attrs["dilations"],
                           attrs["padding"], attrs["pads"])


def taps_reading(h, w, attrs, kernel, pixel):
    """Boolean [kh, kw]: the taps (u, v) that read input pixel (p, q) for some output pixel."""
    pads, (oh, ow) = geometry(h, w, attrs, kernel)
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilations"]
    p, q = pixel[0] + pads[0], pixel[1] + pads[2]
    out = np.zeros(kernel, bool)
    for u, v in itertools.product(range(kernel[0]), range(kernel[1])):
        i, j = divmod(p - u * dh, sh), divmod(q - v * dw, sw)
        out[u, v] = i[1] == 0 and j[1] == 0 and 0 <= i[0] < oh and 0 <= j[0] < ow
    return out


@pytest.mark.parametrize("groups,attrs", NAN_CASES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_reaches_exactly_the_weight_taps_that_read_it(groups, attrs, bad):
    c, o, g = channels(groups)
    r = np.random.default_rng(7)
    x = r.standard_normal((2, 7, 6, c))
    params = {"weight": r.standard_normal((o, 3, 3, c // g)), "bias": r.standard_normal(o)}
    attrs = attrs_of(**attrs, groups=g)
    clean = vjp(x, params, attrs)
    x[1, 4, 2, c - 1] = bad
    with np.errstate(invalid="ignore"):
        _, _, gx, gp = vjp(x, params, attrs)
    np.testing.assert_array_equal(gx, clean[2])              # ∂L/∂x does not depend on x
    np.testing.assert_array_equal(gp["bias"], clean[3]["bias"])
    expect = np.zeros(params["weight"].shape, bool)           # group of channel c-1, its last slot
    og = o // g
    expect[(g - 1) * og:, :, :, -1] = taps_reading(7, 6, attrs, (3, 3), (4, 2))[None]
    assert expect.any()
    np.testing.assert_array_equal(~np.isfinite(gp["weight"]), expect)
    np.testing.assert_array_equal(gp["weight"][~expect], clean[3]["weight"][~expect])


@pytest.mark.parametrize("groups,attrs", NAN_CASES)
def test_infinite_weight_reaches_exactly_the_pixels_its_tap_scatters_to(groups, attrs):
    c, o, g = channels(groups)
    r = np.random.default_rng(8)
    x = r.standard_normal((2, 7, 6, c))
    w = r.standard_normal((o, 3, 3, c // g))
    attrs = attrs_of(**attrs, groups=g)
    clean = vjp(x, {"weight": w}, attrs)
    w[0, 2, 1, 0] = np.inf                                    # group 0, input channel 0, tap (2, 1)
    with np.errstate(invalid="ignore"):
        _, _, gx, gp = vjp(x, {"weight": w}, attrs)
    np.testing.assert_array_equal(gp["weight"], clean[3]["weight"])   # ∂L/∂w does not depend on w
    expect = np.zeros(x.shape, bool)
    for p, q in itertools.product(range(7), range(6)):
        expect[:, p, q, 0] = taps_reading(7, 6, attrs, (3, 3), (p, q))[2, 1]
    assert expect.any() and not expect.all()
    np.testing.assert_array_equal(~np.isfinite(gx), expect)
    np.testing.assert_array_equal(gx[~expect], clean[2][~expect])


@pytest.mark.parametrize("groups,attrs", NAN_CASES)
def test_infinite_cotangent(groups, attrs):
    """gy = inf at one output pixel of channel o: ∂L/∂b[o] = inf, every ∂L/∂w[o] non-finite
    (0 · inf = NaN where the window reads padding), ∂L/∂x non-finite exactly in that window's
    pixels and group channels; the rest unchanged."""
    c, o, g = channels(groups)
    r = np.random.default_rng(9)
    x = r.standard_normal((1, 7, 6, c))
    params = {"weight": r.standard_normal((o, 3, 3, c // g)), "bias": r.standard_normal(o)}
    attrs = attrs_of(**attrs, groups=g)
    y, gy, *clean = vjp(x, params, attrs)
    gy[0, 0, 0, o - 1] = np.inf                                # the corner: reads padding if any
    with np.errstate(invalid="ignore"):
        _, _, gx, gp = vjp(x, params, attrs, gy=gy)
    assert gp["bias"][o - 1] == np.inf
    np.testing.assert_array_equal(gp["bias"][:-1], clean[1]["bias"][:-1])
    np.testing.assert_array_equal(gp["weight"][:-1], clean[1]["weight"][:-1])
    pads, _ = geometry(7, 6, attrs, (3, 3))
    (dh, dw) = attrs["dilations"]
    reads_pad = np.array([[not (0 <= u * dh - pads[0] < 7 and 0 <= v * dw - pads[2] < 6)
                           for v in range(3)] for u in range(3)])
    assert reads_pad.any() == any(pads)
    np.testing.assert_array_equal(np.isnan(gp["weight"][o - 1]),
                                  np.broadcast_to(reads_pad[:, :, None], (3, 3, c // g)))
    assert np.isinf(gp["weight"][o - 1][~reads_pad]).all()
    expect = np.zeros(x.shape, bool)
    rows = [u * dh - pads[0] for u in range(3) if 0 <= u * dh - pads[0] < 7]
    cols = [v * dw - pads[2] for v in range(3) if 0 <= v * dw - pads[2] < 6]
    expect[0, np.ix_(rows, cols)[0], np.ix_(rows, cols)[1], c - c // g:] = True
    np.testing.assert_array_equal(~np.isfinite(gx), expect)
    np.testing.assert_array_equal(gx[~expect], clean[0][~expect])


# ---- dtypes, operands ----------------------------------------------------------------------------
@pytest.mark.parametrize("geometry", GEOMETRIES[::37], ids=IDS[::37])
def test_float32_inputs_give_float32_gradients(geometry):
    x, params, attrs = make_case(*geometry, seed=GEOMETRIES.index(geometry))
    params["bias"] = np.ones(params["weight"].shape[0])
    _, gy, gx, gp = vjp(x, params, attrs)
    x32, p32 = x.astype(np.float32), {k: v.astype(np.float32) for k, v in params.items()}
    _, _, gx32, gp32 = vjp(x32, p32, attrs, gy=gy.astype(np.float32))
    assert gx32.dtype == gp32["weight"].dtype == gp32["bias"].dtype == np.float32
    close(gx32, gx, rtol=1e-5)
    close(gp32["weight"], gp["weight"], rtol=1e-5)
    close(gp32["bias"], gp["bias"], rtol=1e-5)
    # float64 parameters (and a float64 gy) with a float32 input: computed in float32, each
    # gradient in its operand's dtype
    _, _, gx_m, gp_m = vjp(x32, params, attrs, gy=gy)
    assert gx_m.dtype == np.float32 and gp_m["weight"].dtype == gp_m["bias"].dtype == np.float64
    np.testing.assert_array_equal(gx_m, gx32)
    np.testing.assert_array_equal(gp_m["weight"], gp32["weight"])


def test_operands_not_mutated_views_accepted_y_unused():
    r = np.random.default_rng(10)
    base = r.standard_normal((2, 4, 7, 6))
    x = base.transpose(0, 3, 2, 1)                             # [2, 6, 7, 4], not contiguous
    params = {"weight": r.standard_normal((6, 3, 2, 2)), "bias": r.standard_normal(6)}
    attrs = attrs_of(groups=2, padding="same", strides=[2, 1])
    y = OP.forward([x], params, attrs)
    gy = r.standard_normal(y.shape)[..., ::-1]                # a view too
    copies = [a.copy() for a in (base, params["weight"], params["bias"], y, gy)]
    (gx,), gp = OP.vjp([x], params, attrs, y, gy)
    for a, c in zip((base, params["weight"], params["bias"], y, gy), copies):
        np.testing.assert_array_equal(a, c)
    (gx2,), gp2 = OP.vjp([np.ascontiguousarray(x)], params, attrs, np.full(y.shape, np.nan),
                         np.ascontiguousarray(gy))
    np.testing.assert_array_equal(gx, gx2)
    np.testing.assert_array_equal(gp["weight"], gp2["weight"])
    rx, rw = reference(np.ascontiguousarray(x), params["weight"], attrs, np.ascontiguousarray(gy))
    close(gx, rx)
    close(gp["weight"], rw)
