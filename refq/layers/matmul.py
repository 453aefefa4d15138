"""matmul (ONNX MatMul of two activations) and gemm (ONNX Gemm with a weight).

matmul
    Definition   y[b..., i, j] = Σ_k a[b..., i, k] · c[b..., k, j]    (NumPy matmul)
                 over the last two axes; the leading axes (the batch axis first) broadcast as
                 NumPy does, a size-1 axis stretched along the other's. Both operands are
                 activations (inputs, no parameter). Every refq tensor has the batch axis first,
                 so both operands have the same rank >= 3 and the same batch axis: ONNX's
                 promotion of 1-D operands and of missing leading axes is the importer's (it
                 adds size-1 axes); a constant operand of rank 2 is a `dense` or `gemm` weight.
    Shapes       a [N, ..., M, K], c [N, ..., K, P] -> y [N, ..., M, P] (leading axes broadcast).
    VJP          ∂L/∂a = sum_to(a's shape, gy · cᵀ),  ∂L/∂c = sum_to(c's shape, aᵀ · gy)
                 (ᵀ swaps the last two axes; sum_to sums over the axes broadcasting stretched,
                 `refq.layers.elementwise.sum_to`). Bilinear: no kinks.
    MACs         Π(y's axes after the batch) · K.
    Errors       ShapeError when a rank is < 3, the ranks differ, K differs, or the leading
                 axes do not broadcast.

gemm
    Definition   y = alpha · A' · B' + beta · C,  A' = A (transA = 0), B' = B (transB = 0) or
                 Bᵀ (transB = 1); C = 0 without a bias. Evaluated as A @ B', times alpha when
                 alpha ≠ 1, plus beta·C (C itself when beta = 1): with alpha = beta = 1 and
                 transB = 1 the same operations as `dense`.
    Parameters   weight B as ONNX stores it: [K, P] (transB = 0) or [P, K] (transB = 1, the
                 layout of dense's weight, axis 0 the output); bias C (optional) of shape [],
                 [1], [P], [1, 1] or [1, P]: broadcast over the rows as ONNX's unidirectional
                 broadcast to [M, P].
    Refused      transA = 1 (A [K, M] would sum over the batch axis, which refq cuts into
                 chunks), and a bias varying along the rows (C [M, 1] or [M, P] with M > 1,
                 tied to one batch size).
    Shapes       A [N, K] (the rows are the batch) -> y [N, P].
    VJP          G = gy: ∂L/∂A = alpha · G · B'ᵀ; ∂L/∂B' = alpha · Aᵀ · G (transposed back for
                 transB = 1); ∂L/∂C = beta · sum_to(C's shape, G). Linear in each operand: no kinks.
    MACs         K · P per batch element.
    Errors       ShapeError on the shapes above; GraphError for transA = 1.
"""
from __future__ import annotations

import numpy as np

from ..errors import GraphError, ParamError, ShapeError
from .base import Attr, Op, Traits
from .elementwise import broadcast_shape, sum_to


# ---- matmul --------------------------------------------------------------------------------
def _matmul_shape(in_shapes, attrs, params):
    a, c = (tuple(s) for s in in_shapes)
    if len(a) < 3 or len(a) != len(c):
        raise ShapeError(f"matmul needs two operands of the same rank >= 3 (batch first, then "
                         f"matrices), got {list(a)} and {list(c)}; add size-1 axes to align them")
    if a[-1] is not None and c[-2] is not None and a[-1] != c[-2]:
        raise ShapeError(f"matmul: a's last axis {a[-1]} differs from c's second-to-last axis "
                         f"{c[-2]} (shapes {list(a)} and {list(c)})")
    try:
        lead = broadcast_shape([a[:-2], c[:-2]])
    except ShapeError:
        raise ShapeError(f"matmul: the leading axes of {list(a)} and {list(c)} do not "
                         "broadcast") from None
    return tuple(lead) + (a[-2], c[-1])


def _matmul(inputs, params, attrs):
    a, c = inputs
    _matmul_shape([a.shape, c.shape], attrs, params)
    return np.matmul(a, c)


def _matmul_vjp(inputs, params, attrs, y, gy):
    """∂L/∂a = sum_to(a, gy · cᵀ), ∂L/∂c = sum_to(c, aᵀ · gy), ᵀ on the last two axes
    (module docstring); in each operand's dtype."""
    a, c = inputs
    gy = np.asarray(gy, dtype=np.result_type(a, c))
    ga = sum_to(np.matmul(gy, np.swapaxes(c, -1, -2)), a.shape).astype(a.dtype, copy=False)
    gc = sum_to(np.matmul(np.swapaxes(a, -1, -2), gy), c.shape).astype(c.dtype, copy=False)
    return [np.ascontiguousarray(ga), np.ascontiguousarray(gc)], {}


def _matmul_macs(in_shapes, out_shape, attrs, params):
    k = in_shapes[0][-1]
    rest = out_shape[1:]
    if k is None or None in rest:
        return 0
    return int(np.prod(rest, dtype=np.int64)) * int(k)


# ---- gemm ----------------------------------------------------------------------------------
def _gemm_weight(params):
    if "weight" not in params:
        raise ParamError("gemm: parameter 'weight' (B: [K, P], or [P, K] with transB = 1) is "
                         "missing")
    return params["weight"]


def _gemm_shape(in_shapes, attrs, params):
    x = tuple(in_shapes[0])
    if attrs["transA"]:
        raise GraphError("gemm: transA = 1 would sum over the batch axis (axis 0 of every refq "
                         "tensor); refq runs the batch in chunks and cannot: give A as [N, K] "
                         "(transA = 0)")
    if len(x) != 2:
        raise ShapeError(f"gemm expects A of rank 2 [N, K], got shape {list(x)}")
    w = _gemm_weight(params)
    if w.ndim != 2:
        raise ShapeError(f"gemm weight must be a matrix, got shape {list(w.shape)}")
    k, p = (w.shape[1], w.shape[0]) if attrs["transB"] else w.shape
    if x[1] is not None and x[1] != k:
        raise ShapeError(f"gemm: A has {x[1]} columns but the weight {list(w.shape)} (transB = "
                         f"{attrs['transB']}) expects {k}")
    if "bias" in params:
        cs = tuple(params["bias"].shape)
        ok = cs in ((), (1,), (p,), (1, 1), (1, p))
        if not ok:
            rows = " (a bias varying along the rows is tied to one batch size, which refq "
            rows += "does not fix)" if len(cs) == 2 and cs[0] > 1 else ""
            raise ShapeError(f"gemm bias C has shape {list(cs)}; it must be [], [1], [{p}], "
                             f"[1, 1] or [1, {p}]{rows}")
    return (x[0], p)


def _gemm_b(params, attrs, dtype):
    """B' [K, P] in `dtype`."""
    w = params["weight"].astype(dtype, copy=False)
    return w.T if attrs["transB"] else w


def _gemm(inputs, params, attrs):
    x = inputs[0]
    _gemm_shape([x.shape], attrs, params)
    t = x.dtype.type
    y = np.matmul(x, _gemm_b(params, attrs, x.dtype))
    if attrs["alpha"] != 1.0:
        y *= t(attrs["alpha"])
    if "bias" in params:
        c = params["bias"].astype(x.dtype, copy=False)
        y += c if attrs["beta"] == 1.0 else t(attrs["beta"]) * c
    return y


def _gemm_vjp(inputs, params, attrs, y, gy):
    """∂L/∂A = alpha·G·B'ᵀ, ∂L/∂B' = alpha·Aᵀ·G (transposed back for transB = 1), ∂L/∂C =
    beta·sum_to(C, G) (module docstring); computed in A's dtype, each gradient in its operand's
    dtype."""
    x = inputs[0]
    t = x.dtype.type
    g = np.asarray(gy, dtype=x.dtype)
    alpha = t(attrs["alpha"])
    b = _gemm_b(params, attrs, x.dtype)
    gx = np.matmul(g, b.T)
    gb = np.matmul(x.T, g)
    if attrs["alpha"] != 1.0:
        gx *= alpha
        gb *= alpha
    w = params["weight"]
    out = {"weight": np.ascontiguousarray(gb.T if attrs["transB"] else gb).astype(w.dtype,
                                                                                  copy=False)}
    if "bias" in params:
        c = params["bias"]
        gc = sum_to(g, (1,) * (2 - c.ndim) + c.shape).reshape(c.shape) * t(attrs["beta"])
        out["bias"] = np.asarray(gc).astype(c.dtype, copy=False)
    return [gx], out


def _gemm_macs(in_shapes, out_shape, attrs, params):
    w = _gemm_weight(params)
    return int(w.shape[0] * w.shape[1])


OPS = [
    Op("matmul", _matmul, _matmul_shape, num_inputs=2, vjp=_matmul_vjp, macs=_matmul_macs,
       traits=Traits("MatMul", takes_activation=True, lowering="matmul")),
    Op("gemm", _gemm, _gemm_shape,
       attrs={"alpha": Attr("float", 1.0), "beta": Attr("float", 1.0),
              "transA": Attr("int", 0, minimum=0, maximum=1),
              "transB": Attr("int", 0, minimum=0, maximum=1)},
       params={"weight": True, "bias": False}, param_shapes=lambda s, a: {}, macs=_gemm_macs,
       vjp=_gemm_vjp, traits=Traits("Gemm", takes_activation=True, lowering="gemm")),
]
