"""VJPs of the ops and attributes for ONNX models: conv_transpose2d, matmul, gemm, pooling with
dilations / ceil_mode / count_include_pad / same_lower, 1-D and 3-D pooling, global_max_pool2d,
the max-pool indices, round, flatten at an axis and clip with one bound.

Each VJP is checked against central finite differences in float64 (tests/vjp_check.py) away from
kinks; the one-sided conventions at kinks (max-pool ties, clip at its one bound, round at a
half-integer) are checked on hand-made inputs with exact expected values.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from refq.layers import REGISTRY
from vjp_check import away_from_kinks, check_vjp

rng = np.random.default_rng(777)


def distinct(shape, step=0.01):
    """Values spaced `step` apart in random order: no two within a finite-difference step."""
    n = math.prod(shape)
    return (rng.permutation(n) - n / 2).reshape(shape) * step


def vjp(name, inputs, attrs=None, params=None, gy=None):
    op = REGISTRY[name]
    a = op.normalise_attrs(dict(attrs or {}), name)
    y = op.forward(inputs, dict(params or {}), a)
    gy = np.ones(y.shape) if gy is None else gy
    return op.vjp(inputs, dict(params or {}), a, y, gy)


@pytest.mark.parametrize("attrs,cin,wshape", [
    ({}, 3, (4, 2, 3, 3)),
    ({"strides": [2, 3], "dilations": [1, 2], "groups": 2, "output_padding": [1, 0],
      "padding": "explicit", "pads": [1, 0, 2, 1]}, 4, (6, 3, 2, 2)),
    ({"strides": [2, 2], "padding": "same_lower"}, 2, (3, 3, 3, 2)),
    ({"strides": [2, 2], "output_shape": [11, 12]}, 2, (3, 3, 3, 2)),    # negative pads
    ({"groups": 3, "strides": [1, 2]}, 3, (6, 2, 3, 1)),
])
def test_conv_transpose2d_vjp(attrs, cin, wshape):
    x = rng.standard_normal((2, 4, 5, cin))
    params = {"weight": rng.standard_normal(wshape), "bias": rng.standard_normal(wshape[0])}
    check_vjp("conv_transpose2d", [x], params, attrs, samples=30)


@pytest.mark.parametrize("sa,sc", [((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (2, 3, 4, 2)),
                                   ((2, 3, 2, 4), (2, 1, 4, 3))])
def test_matmul_vjp(sa, sc):
    check_vjp("matmul", [rng.standard_normal(sa), rng.standard_normal(sc)])


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias_shape", [(), (3,), (1, 3), (1, 1)])
def test_gemm_vjp(trans_b, bias_shape):
    params = {"weight": rng.standard_normal((3, 5) if trans_b else (5, 3)),
              "bias": rng.standard_normal(bias_shape)}
    check_vjp("gemm", [rng.standard_normal((4, 5))], params,
              {"transB": trans_b, "alpha": 0.75, "beta": -1.5})


POOLS = [
    ("2d", {"pool_size": [3, 3], "strides": [2, 2], "padding": "explicit", "pads": [1, 1, 1, 1],
            "ceil_mode": True}, (7, 6)),
    ("2d", {"pool_size": [2, 3], "strides": [1, 2], "dilations": [2, 2], "padding": "explicit",
            "pads": [0, 1, 1, 2]}, (6, 7)),
    ("2d", {"pool_size": [3, 2], "strides": [2, 2], "padding": "same_lower"}, (6, 5)),
    ("1d", {"pool_size": [3], "strides": [2], "padding": "explicit", "pads": [1, 1],
            "ceil_mode": True}, (10,)),
    ("3d", {"pool_size": [2, 2, 3], "strides": [2, 1, 2], "dilations": [1, 2, 1],
            "padding": "explicit", "pads": [1, 0, 0, 1, 1, 1]}, (4, 5, 6)),
]


@pytest.mark.parametrize("rank,attrs,spatial", POOLS)
def test_pool_vjps(rank, attrs, spatial):
    x = distinct((2, *spatial, 2))
    check_vjp(f"max_pool{rank}", [x], {}, attrs)
    for include in (False, True):
        check_vjp(f"avg_pool{rank}", [x], {}, dict(attrs, count_include_pad=include))


def test_global_max_pool_vjp_and_its_tie():
    check_vjp("global_max_pool2d", [distinct((2, 3, 4, 2))], {}, {"keepdims": True})
    x = np.zeros((1, 2, 2, 1))
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = 1.0
    (gx,), _ = vjp("global_max_pool2d", [x], gy=np.full((1, 1), 3.0))
    assert gx[0, :, :, 0].tolist() == [[0.0, 3.0], [0.0, 0.0]]   # the first maximum takes all


def test_dilated_max_pool_tie_goes_to_the_first_tap():
    x = np.zeros((1, 5, 1))
    x[0, 0, 0] = x[0, 2, 0] = x[0, 4, 0] = 2.0     # every tap of the dilated window ties
    (gx,), _ = vjp("max_pool1d", [x], {"pool_size": [3], "strides": [1], "dilations": [2]},
                   gy=np.full((1, 1, 1), 5.0))
    assert gx[0, :, 0].tolist() == [5.0, 0.0, 0.0, 0.0, 0.0]


def test_indices_and_round_have_zero_vjps():
    x = distinct((1, 4, 4, 2))
    check_vjp("max_pool2d_indices", [x], {}, {"pool_size": [2, 2], "strides": [2, 2]})
    check_vjp("round", [away_from_kinks(rng.standard_normal((3, 7)) * 3,
                                        np.arange(-20, 20) + 0.5)])
    (g,), _ = vjp("round", [np.array([[0.5, 1.5, -2.5]])], gy=np.array([[1.0, np.inf, np.nan]]))
    assert g.tolist() == [[0.0, 0.0, 0.0]]


@pytest.mark.parametrize("axis", [1, 2, 3, -1])
def test_flatten_vjp(axis):
    check_vjp("flatten", [rng.standard_normal((2, 3, 4, 2))], {}, {"axis": axis})


@pytest.mark.parametrize("bounds", [{"min": -0.3}, {"max": 0.4}, {}])
def test_clip_with_one_bound_vjp(bounds):
    kinks = [v for v in bounds.values()]
    check_vjp("clip", [away_from_kinks(rng.standard_normal((4, 9)), kinks)], {}, bounds)


def test_clip_at_its_one_bound_is_zero():
    x = np.array([[-1.0, 0.0, 1.0]])
    (g,), _ = vjp("clip", [x], {"min": 0.0}, gy=np.full((1, 3), 2.0))
    assert g.tolist() == [[0.0, 0.0, 2.0]]
    (g,), _ = vjp("clip", [x], {"max": 0.0}, gy=np.full((1, 3), 2.0))
    assert g.tolist() == [[2.0, 0.0, 0.0]]
    (g,), _ = vjp("clip", [np.array([[np.nan, 1.0]])], {"min": 0.0}, gy=np.ones((1, 2)))
    assert np.isnan(g[0, 0]) and g[0, 1] == 1.0


def test_gather_channels_forward_vjp_and_errors():
    """y[..., k] = x[..., indices[k]] against a loop; the VJP against finite differences and
    the scatter written out; bad indices are ShapeErrors."""
    from refq.errors import ShapeError
    from refq.layers import REGISTRY

    op = REGISTRY["gather_channels"]
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 3, 4, 6))
    attrs = {"indices": [4, 0, 5]}
    y = op.forward([x], {}, attrs)
    for k, c in enumerate(attrs["indices"]):
        np.testing.assert_array_equal(y[..., k], x[..., c])
    gy = rng.normal(size=y.shape)
    (gx,), _ = op.vjp([x], {}, attrs, y, gy)
    want = np.zeros_like(x)
    for k, c in enumerate(attrs["indices"]):
        want[..., c] = gy[..., k]
    np.testing.assert_array_equal(gx, want)
    check_vjp("gather_channels", [x], {}, attrs)
    for bad in ([6], [1, 1], []):
        with pytest.raises(ShapeError):
            op.infer_shape([(None, 3, 4, 6)], {"indices": bad}, {})
