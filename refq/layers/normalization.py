"""batch_norm: batch normalisation in inference mode.

Definition
    y[..., c] = gamma[c] · (x[..., c] − mean[c]) / sqrt(variance[c] + epsilon) + beta[c]
    on the channel axis `axis` (−1 for NHWC). The moving statistics are used as given; epsilon is
    added to the variance inside the square root, as Keras, TensorFlow and PyTorch define it.
Shapes
    x: any rank >= 2, channels on `axis`; gamma, beta, mean, variance: [C]; y: as x.
Attributes
    epsilon (float >= 0, required: Keras's layer default is 1e-3, PyTorch's and ONNX's 1e-5, so
    every producer states its own; the Keras importer writes the file's value), axis (int, −1).
Errors
    ShapeError when `axis` is the batch axis or out of range; GraphError when epsilon is negative;
    ParamError when a statistic is not [C], a variance is negative, or a variance + epsilon is not
    positive in float32 (the least precise compute dtype: a positive float64 sum can round to 0).
    Graph validation checks these, so a model with such statistics is refused at import and load.
VJP (`_vjp`)
    With r = 1/sqrt(variance + epsilon) and Σ the sum over every axis but `axis`:
        ∂L/∂x[..., c] = gy[..., c]·gamma[c]·r[c]        ∂L/∂beta = Σ gy
        ∂L/∂gamma = r·Σ gy·(x − mean)                  ∂L/∂mean = −gamma·r·Σ gy
        ∂L/∂variance = −½·gamma·r³·Σ gy·(x − mean)
    The forward is smooth wherever it is defined (variance + epsilon > 0): there is no kink. A
    variance of exactly 0 (the edge of the statistics' domain, epsilon > 0) takes the same formula,
    the derivative of the definition, which extends smoothly down to −epsilon (as PyTorch's does).
    A non-finite x makes ∂L/∂gamma and ∂L/∂variance of its channel non-finite; ∂L/∂x, ∂L/∂beta
    and ∂L/∂mean do not depend on x and stay finite.
Training mode (`batch_norm_train`, `batch_norm_train_vjp`: functions, not an op)
    The batch's own statistics normalise: with M the number of values per channel (the product of
    every axis but `axis`, the batch axis included),
        μ[c] = Σ x / M,   σ²[c] = Σ (x − μ)² / M  (biased),
        y = gamma·(x − μ)/sqrt(σ² + epsilon) + beta.
    The running statistics move towards the batch's with PyTorch's convention (torch.nn.BatchNorm2d,
    whose default momentum is 0.1; Keras's `momentum` is 1 − this one):
        mean ← (1 − momentum)·mean + momentum·μ
        variance ← (1 − momentum)·variance + momentum·σ²·M/(M − 1)  (the unbiased batch variance).
    VJP, through the batch statistics (μ and σ² depend on x): with r = 1/sqrt(σ² + epsilon) and
    x̂ = (x − μ)·r,
        ∂L/∂beta = Σ gy,   ∂L/∂gamma = Σ gy·x̂,
        ∂L/∂x = gamma·r·(gy − (∂L/∂beta + x̂·∂L/∂gamma)/M).
    σ² is a polynomial of x, so for σ² + epsilon > 0 there is no kink, a channel constant over the
    batch included (x̂ = 0 there). A NaN or inf in x makes its whole channel of y and of ∂L/∂x NaN.
    Errors: ShapeError when M < 2 (the unbiased variance needs two values; PyTorch refuses it too:
    "Expected more than 1 value per channel when training"); ParamError when σ² + epsilon is 0
    (epsilon 0 and a channel constant over the batch); GraphError when momentum is outside [0, 1].
"""
from __future__ import annotations

import numpy as np

from ..errors import ParamError, ShapeError
from .base import Attr, Op, Traits

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


def fold_into_producer(producer: dict, bn: dict, epsilon, dtype):
    """The weight and bias of a convolution or dense layer (weight axis 0 = output channel)
    followed by this batch norm, as one layer in `dtype`: with s, t of `scale_and_shift` in
    float64, w'[o] = s[o]·w[o] and b' = s·b + t (b = 0 without a bias), each rounded once to
    `dtype`; None when a folded value is not finite (the two layers then stay apart).

    Rounding: for an output y* = s·(Σ_k w_k·x_k + b) + t of K products evaluated exactly, the
    folded layer in `dtype` (unit roundoff u) and the two layers one after the other are each
    within γ_{K+3}·(|s|·(Σ_k |w_k·x_k| + |b|) + |t|) of y*, γ_n = n·u/(1 − n·u), so they differ by
    at most twice that; bit for bit they usually differ in the last bits."""
    s, t = scale_and_shift(bn, epsilon, np.float64)
    w = np.asarray(producer["weight"], dtype=np.float64)
    b = np.asarray(producer.get("bias", 0.0), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        folded = {"weight": (w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(dtype),
                  "bias": (s * b + t).astype(dtype)}
    if not all(np.isfinite(v).all() for v in folded.values()):
        return None
    return folded


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


def _channel_shape(x, axis):
    """The shape that broadcasts a [C] vector along `axis` of x."""
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return shape


def _channel_sum(a, axis):
    """Σ a over every axis but `axis`: a [C] vector."""
    return np.sum(a, axis=tuple(d for d in range(a.ndim) if d != axis))


def _channel_dot(a, b, axis):
    """Σ a·b over every axis but `axis`: a [C] vector, one contraction without a temporary."""
    index = list(range(a.ndim))
    return np.einsum(a, index, b, index, [axis], optimize=False)


def _vjp(inputs, params, attrs, y, gy):
    """∂L/∂x = gy·gamma·r; ∂L/∂beta = Σ gy; ∂L/∂gamma = r·Σ gy·(x − mean); ∂L/∂mean =
    −gamma·r·Σ gy; ∂L/∂variance = −½·gamma·r³·Σ gy·(x − mean), with r = 1/sqrt(variance +
    epsilon) and Σ over every axis but `axis` (module docstring). No kink; ParamError when a
    variance + epsilon is not positive, as the forward. Channels last (a float x): computed in
    x's dtype, block by block (`_channel_sums`)."""
    x = inputs[0]
    axis = _axis(x.shape, attrs)
    t = x.dtype.type
    s, _ = scale_and_shift(params, attrs["epsilon"], t)   # gamma·r, the forward's slope
    r = 1 / np.sqrt(params["variance"].astype(t) + t(attrs["epsilon"]))
    gamma = params["gamma"].astype(t)
    mean = params["mean"].astype(t)
    if axis == x.ndim - 1 and x.dtype.kind == "f" and x.size:
        g_x, g_beta, centred_dot = _channel_sums(x, np.asarray(gy, dtype=x.dtype), s, mean)
    else:
        bshape = _channel_shape(x, axis)
        g_x = gy * s.reshape(bshape)
        g_beta = _channel_sum(gy, axis)
        centred_dot = _channel_dot(gy, x - mean.reshape(bshape), axis)
    grads = {"gamma": r * centred_dot, "beta": g_beta, "mean": -s * g_beta,
             "variance": t(-0.5) * gamma * r ** 3 * centred_dot}
    return [g_x.astype(x.dtype, copy=False)], {
        k: grads[k].astype(params[k].dtype) for k in params}


#: batch_norm's VJP views a channels-last array as rows of _VJP_ROW elements (whole rows of
#: channels, the per-channel vectors tiled to a row) and works on _VJP_BLOCK elements of them at a
#: time: long contiguous loops, few NumPy calls, a bounded scratch block (speed only).
_VJP_ROW, _VJP_BLOCK = 1 << 12, 1 << 18


def _channel_sums(x, gy, s, mean):
    """(gy·s, Σ gy, Σ gy·(x − mean)) for channels on the last axis, in x's dtype: x, gy and gy·s
    viewed as rows of k = (_VJP_ROW // C)·C elements (the last elements, fewer than k, as rows of
    C), s and mean tiled to a row; per block of rows, the product, then the sums over the block's
    rows as products with a ones vector (BLAS), added in block order; at the end each column's
    sum is folded onto its channel."""
    shape, c = x.shape, x.shape[-1]
    fx, fgy = np.ascontiguousarray(x).reshape(-1), np.ascontiguousarray(gy).reshape(-1)
    g_x = np.empty(x.size, x.dtype)
    k = max(1, _VJP_ROW // c) * c
    split = x.size // k * k
    g_beta = np.zeros(c, x.dtype)
    centred_dot = np.zeros(c, x.dtype)
    for lo, hi, width in ((0, split, k), (split, x.size, c)):
        if hi == lo:
            continue
        xs, gys, gxs = (a[lo:hi].reshape(-1, width) for a in (fx, fgy, g_x))
        s_row, m_row = np.tile(s, width // c), np.tile(mean, width // c)
        rows = max(1, _VJP_BLOCK // width)
        ones = np.ones(min(rows, len(xs)), x.dtype)
        tmp = np.empty((len(ones), width), x.dtype)
        beta_row, dot_row = np.zeros(width, x.dtype), np.zeros(width, x.dtype)
        for i in range(0, len(xs), rows):
            g_b = gys[i:i + rows]
            n = len(g_b)
            np.multiply(g_b, s_row, out=gxs[i:i + rows])
            beta_row += ones[:n] @ g_b
            d = np.subtract(xs[i:i + rows], m_row, out=tmp[:n])
            d *= g_b
            dot_row += ones[:n] @ d
        g_beta += beta_row.reshape(-1, c).sum(axis=0)
        centred_dot += dot_row.reshape(-1, c).sum(axis=0)
    return g_x.reshape(shape), g_beta, centred_dot


_MOMENTUM = Attr("float", minimum=0.0, maximum=1.0)


def _batch_statistics(x, attrs):
    """(axis, M, μ, σ² biased, r = 1/sqrt(σ² + epsilon)) of x in x's dtype (module docstring)."""
    axis = _axis(x.shape, attrs)
    m = x.size // x.shape[axis]
    if m < 2:
        raise ShapeError(f"batch_norm_train: {m} value(s) per channel on axis {axis} of shape "
                         f"{list(x.shape)}; training mode needs at least 2 (the unbiased variance "
                         "divides by M − 1)")
    t = x.dtype.type
    bshape = _channel_shape(x, axis)
    mu = _channel_sum(x, axis) / t(m)
    centred = x - mu.reshape(bshape)
    var = _channel_dot(centred, centred, axis) / t(m)
    total = var + t(attrs["epsilon"])
    zero = np.flatnonzero(total == 0)
    if zero.size:
        c = int(zero[0])
        raise ParamError(f"batch_norm_train: channel {c} is constant over the batch and epsilon is "
                         "0, so 1/sqrt(batch variance + epsilon) is undefined; use a positive "
                         "epsilon (e.g. 1e-3)")
    return axis, m, mu, var, 1 / np.sqrt(total)


def batch_norm_train(x, params, attrs, momentum):
    """Training-mode batch norm: (y, new_params) (module docstring, Training mode).

    y normalises x with the batch mean μ and biased variance σ²; new_params holds gamma and beta
    (copies) and the running statistics updated with PyTorch's convention: mean ← (1 − momentum)·
    mean + momentum·μ, variance ← (1 − momentum)·variance + momentum·σ²·M/(M − 1). attrs: the op's
    (epsilon, axis), normalised as for the forward. Computed in x's dtype; each new parameter has
    the dtype of the old one; the arguments are not modified."""
    momentum = _MOMENTUM.check(momentum, "batch_norm_train: momentum")
    axis, m, mu, var, r = _batch_statistics(x, attrs)
    t = x.dtype.type
    bshape = _channel_shape(x, axis)
    gamma, beta = params["gamma"].astype(t), params["beta"].astype(t)
    y = (x - mu.reshape(bshape)) * (gamma * r).reshape(bshape) + beta.reshape(bshape)
    keep, step = t(1 - momentum), t(momentum)
    new_mean = keep * params["mean"].astype(t) + step * mu
    new_var = keep * params["variance"].astype(t) + step * (var * t(m) / t(m - 1))
    new_params = {"gamma": params["gamma"].copy(), "beta": params["beta"].copy(),
                  "mean": new_mean.astype(params["mean"].dtype),
                  "variance": new_var.astype(params["variance"].dtype)}
    return y, new_params


def batch_norm_train_vjp(x, params, attrs, y, gy):
    """(∂L/∂x, {"gamma": ∂L/∂gamma, "beta": ∂L/∂beta}) of `batch_norm_train`'s y, through the
    batch statistics: with x̂ = (x − μ)·r, ∂L/∂beta = Σ gy, ∂L/∂gamma = Σ gy·x̂, ∂L/∂x =
    gamma·r·(gy − (∂L/∂beta + x̂·∂L/∂gamma)/M) (module docstring). x̂ is recomputed from x (y
    gives it only where gamma ≠ 0); the running statistics do not affect y and get no gradient."""
    axis, m, mu, var, r = _batch_statistics(x, attrs)
    t = x.dtype.type
    bshape = _channel_shape(x, axis)
    x_hat = (x - mu.reshape(bshape)) * r.reshape(bshape)
    g_beta = _channel_sum(gy, axis)
    g_gamma = _channel_dot(gy, x_hat, axis)
    scale = params["gamma"].astype(t) * r
    g_x = (gy - (g_beta.reshape(bshape) + x_hat * g_gamma.reshape(bshape)) / t(m)) \
        * scale.reshape(bshape)
    return g_x.astype(x.dtype, copy=False), {"gamma": g_gamma.astype(params["gamma"].dtype),
                                             "beta": g_beta.astype(params["beta"].dtype)}


def _inplace(params, attrs, dtype):
    """batch_norm in place (`refq.layers.inplace`): a *= s; a += t, with (s, t) of
    `scale_and_shift` (the forward's x·s + t), for the channel axis last; None otherwise."""
    if attrs["axis"] != -1:
        return None
    s, t = scale_and_shift(params, attrs["epsilon"], dtype)

    def step(a):
        a *= s
        a += t
    return step


OPS = [
    Op("batch_norm", _forward, _infer_shape,
       attrs={"epsilon": Attr("float", minimum=0.0), "axis": Attr("int", -1)},
       params={p: True for p in PARAMS}, param_shapes=_param_shapes, check_params=_check_params,
       vjp=_vjp, macs=lambda s, o, a, p: int(np.prod(o[1:])) if all(o[1:]) else 0,
       inplace=_inplace, traits=Traits("BatchNormalization")),
]
