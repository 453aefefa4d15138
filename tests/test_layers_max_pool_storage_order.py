"""max_pool{1,2,3}d_indices with storage_order 1 (refq.layers.max_pool_scan): the column-major
index c·Π spatial + Σ_a coord_a·Π_{b<a} n_b of the picked tap, from the naive row-major indices of
tests/test_layers_onnx_ops.py (the Definition tap by tap) re-read column-major, on every padding,
dilation and ceil_mode geometry; storage_order 0 unchanged; values other than 0 and 1 refused.
"""
from __future__ import annotations

import numpy as np
import pytest

from refq.errors import GraphError
from refq.layers import get_op
from test_layers_onnx_ops import naive_pool

rng = np.random.default_rng(515)


def column_major(row_major, spatial):
    """Row-major flat indices c·Π n + (row-major position) re-read as c·Π n + (column-major
    position) of the same coordinates."""
    size = int(np.prod(spatial))
    c, pos = np.divmod(row_major, size)
    coords = np.unravel_index(pos, spatial, order="C")
    return c * size + np.ravel_multi_index(coords, spatial, order="F")


GEOMETRIES = [  # (x shape, attrs)
    ((2, 5, 6, 2), {"pool_size": [2, 2], "strides": [2, 2]}),
    ((2, 5, 7, 3), {"pool_size": [2, 3], "strides": [1, 2], "padding": "same"}),
    ((1, 7, 6, 2), {"pool_size": [2, 2], "strides": [2, 2], "dilations": [2, 2],
                    "padding": "explicit", "pads": [1, 0, 1, 1], "ceil_mode": True}),
    ((2, 8, 3), {"pool_size": [3], "strides": [2], "padding": "same_lower"}),
    ((1, 3, 4, 5, 2), {"pool_size": [2, 2, 3], "strides": [1, 2, 1], "dilations": [1, 1, 2]}),
    ((1, 4, 3, 5, 2), {"pool_size": [2, 3, 2], "strides": [2, 1, 2], "padding": "same"}),
]


@pytest.mark.parametrize("shape,attrs", GEOMETRIES)
@pytest.mark.parametrize("order", [0, 1])
def test_indices_storage_order(shape, attrs, order):
    r = len(shape) - 2
    op = get_op(f"max_pool{r}d_indices")
    a = op.normalise_attrs({**attrs, "storage_order": order}, "t")
    x = rng.integers(-2, 3, size=shape).astype(np.float64)        # ties
    y = op.forward([x], {}, a)
    assert y.dtype == np.int64 and tuple(y.shape) == op.infer_shape([x.shape], a, {})
    row = naive_pool(x, "indices", a["pool_size"], a["strides"], a["dilations"], a["padding"],
                     a["pads"], a["ceil_mode"])
    want = column_major(row, shape[1:-1]) if order else row
    np.testing.assert_array_equal(y, want)


def test_storage_order_default_and_bounds():
    op = get_op("max_pool2d_indices")
    assert op.normalise_attrs({"pool_size": [2, 2], "strides": [2, 2]}, "t")["storage_order"] == 0
    for bad in (2, -1):
        with pytest.raises(GraphError, match="storage_order"):
            op.normalise_attrs({"pool_size": [2, 2], "strides": [2, 2], "storage_order": bad},
                               "t")
    with pytest.raises(GraphError, match="unknown attribute"):
        get_op("max_pool2d").normalise_attrs({"pool_size": [2, 2], "strides": [2, 2],
                                              "storage_order": 1}, "t")
