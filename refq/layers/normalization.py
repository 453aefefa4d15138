"""batch_norm: batch normalisation in inference mode.

Definition
    y[..., c] = gamma[c] · (x[..., c] − mean[c]) / sqrt(variance[c] + epsilon) + beta[c]
    on the channel axis `axis` (−1 for NHWC). The moving statistics are used as given; epsilon is
    added to the variance inside the square root, as Keras, TensorFlow and PyTorch define it.
Shapes
    x: any rank >= 2, channels on `axis`; gamma, beta, mean, variance: [C]; y: as x.
Attributes
    epsilon (float, 1e-3: the Keras default; PyTorch uses 1e-5), axis (int, −1).
Errors
    ShapeError when `axis` is the batch axis or out of range; GraphError when epsilon is negative;
    ParamError when a statistic is not [C], a variance is negative, or a variance + epsilon is not
    positive in float32 (the least precise compute dtype: a positive float64 sum can round to 0).
    Graph validation checks these, so a model with such statistics is refused at import and load.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParamError, ShapeError
from .base import Attr, Op

PARAMS = ("gamma", "beta", "mean", "variance")


def _axis(shape, attrs):
    rank = len(shape)
    axis = attrs["axis"]
    if not -rank <= axis < rank or axis % rank == 0:
        raise ShapeError(f"batch_norm axis {axis} is not a channel axis of a rank-{rank} tensor")
    return axis % rank


def _infer_shape(in_shapes, attrs, params):
    _axis(in_shapes[0], attrs)
    return tuple(in_shapes[0])


def _param_shapes(in_shapes, attrs):
    c = in_shapes[0][_axis(in_shapes[0], attrs)]
    return {p: (c,) for p in PARAMS}


def scale_and_shift(params, epsilon, dtype=np.float64):
    """(s, t) with batch_norm(x) = s·x + t per channel: s = gamma/sqrt(var+eps), t = beta − s·mean.

    Raises ParamError when a variance + epsilon is not positive."""
    var = params["variance"].astype(dtype) + dtype(epsilon)
    if np.any(var <= 0):
        c = int(np.argmax(var <= 0))
        raise ParamError(f"batch_norm: variance[{c}] + epsilon = {var[c]} is not positive")
    s = params["gamma"].astype(dtype) / np.sqrt(var)
    return s, params["beta"].astype(dtype) - s * params["mean"].astype(dtype)


def _check_params(params, attrs, where):
    """ParamError naming `variance[c]` when a variance is negative or variance + epsilon is not
    positive in float32."""
    var = params["variance"]
    negative = np.flatnonzero(var < 0)
    if negative.size:
        c = int(negative[0])
        raise ParamError(f"{where}: parameter 'variance[{c}]' = {var[c]} is negative (a variance "
                         "is >= 0); the moving statistics are damaged: re-export or retrain them")
    with np.errstate(over="ignore"):  # a variance beyond float32 becomes inf: positive
        total = var.astype(np.float32) + np.float32(attrs["epsilon"])
    zero = np.flatnonzero(~(total > 0))
    if zero.size:
        c = int(zero[0])
        raise ParamError(f"{where}: parameter 'variance[{c}]' = {var[c]} + epsilon "
                         f"{attrs['epsilon']} is not positive in float32, so 1/sqrt(variance + "
                         "epsilon) is undefined; use a positive epsilon (e.g. 1e-3)")


#: Elements per block of batch_norm's two passes (whole rows of channels, the per-channel factors
#: tiled to the block): the block stays in cache between the product and the sum, and both are flat
#: contiguous loops (speed only; the same operations in the same order).
_BLOCK = 1 << 16


def _forward(inputs, params, attrs):
    """y = s·x + t per channel (`scale_and_shift`: the definition rearranged), as x·s then + t.
    Channels last and larger than a block: block by block (`_BLOCK`), elementwise as before."""
    x = inputs[0]
    axis = _axis(x.shape, attrs)
    s, t = scale_and_shift(params, attrs["epsilon"], x.dtype.type)
    if axis == x.ndim - 1 and x.dtype.kind == "f" and x.flags.c_contiguous and x.size > _BLOCK:
        c = x.shape[-1]
        step = max(1, _BLOCK // c) * c   # whole rows: a block starts at channel 0
        s_row, t_row = np.tile(s, step // c), np.tile(t, step // c)
        flat_x = x.reshape(-1)
        y = np.empty_like(x)
        flat_y = y.reshape(-1)
        for i in range(0, flat_x.size, step):
            j = min(i + step, flat_x.size)
            block = flat_y[i:j]
            np.multiply(flat_x[i:j], s_row[:j - i], out=block)
            block += t_row[:j - i]
        return y
    bshape = [1] * x.ndim
    bshape[axis] = x.shape[axis]
    y = x * s.reshape(bshape)
    y += t.reshape(bshape)
    return y


OPS = [
    Op("batch_norm", _forward, _infer_shape,
       attrs={"epsilon": Attr("float", 1e-3, minimum=0.0), "axis": Attr("int", -1)},
       params={p: True for p in PARAMS}, param_shapes=_param_shapes, check_params=_check_params,
       macs=lambda s, o, a, p: int(np.prod(o[1:])) if all(o[1:]) else 0),
]
