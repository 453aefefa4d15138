"""dense: a fully connected layer on the last axis (Keras Dense semantics).

Definition
    y[..., o] = b[o] + Σ_{i<In} x[..., i] · W[o, i]        i.e. y = x · Wᵀ + b
    applied independently to every position of the leading axes; b = 0 when there is no bias.
VJP
    With the leading axes flattened to R rows (x → X [R, In], gy → G [R, units]):
    ∂L/∂X = G · W          ∂L/∂W = Gᵀ · X          ∂L/∂b = Σ_r G[r, :]
    (∂L/∂x is X's gradient reshaped to x's shape). dense is linear in each operand, so there is
    no kink; ∂L/∂x does not read x, and a NaN or inf in x[..., i] reaches only column i of ∂L/∂W.
Shapes
    x: [N, ..., In] (rank >= 2); weight: [units, In] (axis 0 = output); bias: [units];
    y: [N, ..., units].
Attributes
    none (the number of units is the weight's axis 0).
MACs
    units · In · (product of the axes between batch and the last) per batch element.
Errors
    ShapeError when x has rank < 2, the weight is not rank 2, its axis 1 differs from the last axis
    of x, or the bias is not [units].
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ParamError, ShapeError
from .base import Op, Traits
from .blocking import matmul_in_bands


def _weight_shape(params):
    if "weight" not in params:
        raise ParamError("dense: parameter 'weight' [units, in] is missing")
    return tuple(params["weight"].shape)


def _infer_shape(in_shapes, attrs, params):
    shape = tuple(in_shapes[0])
    if len(shape) < 2:
        raise ShapeError(f"dense expects an input of rank >= 2 (batch, ..., features), got {list(shape)}")
    wshape = _weight_shape(params)
    if len(wshape) != 2:
        raise ShapeError(f"dense weight must be [units, in], got shape {list(wshape)}")
    units, n_in = wshape
    if shape[-1] is not None and shape[-1] != n_in:
        raise ShapeError(f"dense input has {shape[-1]} features on its last axis, "
                         f"but the weight {list(wshape)} expects {n_in}")
    if "bias" in params and tuple(params["bias"].shape) != (units,):
        raise ShapeError(f"dense bias must be [units] = [{units}], got shape {list(params['bias'].shape)}")
    return shape[:-1] + (units,)


def _param_shapes(in_shapes, attrs):
    # The number of units lives only in the weight; infer_shape checks the parameter shapes.
    return {}


def _macs(in_shapes, out_shape, attrs, params):
    units, n_in = _weight_shape(params)
    inner = out_shape[1:-1]
    if any(d is None for d in inner):
        return 0
    return int(math.prod(inner) * units * n_in)


def _forward(inputs, params, attrs):
    return forward_fused(inputs, params, attrs, None)


def forward_fused(inputs, params, attrs, epilogue):
    """dense's forward, then the bias and `epilogue` (None or an in-place elementwise step,
    `refq.plan`), band by band of rows (`refq.layers.blocking.matmul_in_bands`)."""
    x = inputs[0]
    _infer_shape([x.shape], attrs, params)
    w = params["weight"].astype(x.dtype, copy=False)
    b = params["bias"].astype(x.dtype, copy=False) if "bias" in params else None
    y = matmul_in_bands(x.reshape(-1, x.shape[-1]), w.T, b, epilogue)
    return y.reshape(x.shape[:-1] + (w.shape[0],))


def _vjp(inputs, params, attrs, y, gy, inputs_grad: bool = True):
    """dense's vector-Jacobian product (module docstring, VJP): two BLAS matmuls on the rows of
    the flattened leading axes, in x's dtype; each parameter gradient in its parameter's dtype.
    inputs_grad=False: ∂L/∂x is not formed ([None]), for a caller that needs ∂L/∂w only."""
    x = inputs[0]
    w = params["weight"]
    units, n_in = w.shape
    rows = math.prod(x.shape[:-1])
    xr = x.reshape(rows, n_in)
    g = np.asarray(gy, dtype=x.dtype).reshape(rows, units)
    gx = np.matmul(g, w.astype(x.dtype, copy=False)).reshape(x.shape) if inputs_grad else None
    g_params = {"weight": np.matmul(g.T, xr).astype(w.dtype, copy=False)}
    if "bias" in params:
        g_params["bias"] = np.sum(g, axis=0).astype(params["bias"].dtype, copy=False)
    return [gx], g_params


OPS = [
    Op("dense", _forward, _infer_shape, params={"weight": True, "bias": False},
       param_shapes=_param_shapes, macs=_macs, vjp=_vjp,
       forward_fused=forward_fused,
       traits=Traits("Gemm", bn_foldable=True, takes_activation=True, lowering="conv")),
]
