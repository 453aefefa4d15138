"""Analytical (data-free) bias correction: a layer's expected input from batch-norm statistics.

Reference: Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction"
(ICCV 2019), §4.2.1; AIMET 1.x, aimet.md §6. `refq.algorithms.bias_correction.correct_bias` uses
this in mode="analytical" (see there for the whole algorithm, which layers are corrected this way
and what happens to the others).

Data-free rule
    Per layer L: its input comes from a conv2d/dense P with recorded output statistics
    graph.meta["folded_bn"][P] = {"gamma": [...], "beta": [...]} (written by BN folding; P's output,
    the pre-activation, is taken as N(β_c, γ_c²)), through at most one activation among relu, relu6
    and clip(lo, hi), and any number of zero_pad2d / identity ops. Then, per input channel c with
    σ = |γ_c|, E[x_c] is the mean of a normal clipped to [lo, hi] (`clipped_normal_mean`):
        no activation   E[x] = β
        relu            E[x] = β(1 − Φ(−β/σ)) + σ φ(−β/σ)
        relu6 (b = 6), clip(0, b)
                        E[x] = σ(φ(−β/σ) − φ((b−β)/σ)) + β(Φ((b−β)/σ) − Φ(−β/σ))
                               + b(1 − Φ((b−β)/σ))
    (general clip(lo, hi): lo Φ(α) + hi(1 − Φ(ω)) + β(Φ(ω) − Φ(α)) + σ(φ(α) − φ(ω)), α = (lo−β)/σ,
    ω = (hi−β)/σ; σ = 0 gives clip(β, lo, hi)). ε = Σ_{kh,kw}(W_q − W) as [out, in/groups]
    (dense: W_q − W), e_o = Σ_i ε[o, i] E[x_{g(o)·Cg + i}] (groups == 1: ε·E[x]; depthwise: the
    elementwise product with the channel the output reads), b ← b − e.
    Inexact by construction: zero padding (a zero_pad2d on the path, or L's own "same"/explicit
    padding) feeds zeros instead of samples of the clipped normal at the borders, so E[x] is wrong
    there; the reason string says so. The statistics describe the float model, not the quantized
    model's actual input (the approximation of the paper).
    σ = |γ|: a folded BN with negative γ still gives a normal of standard deviation |γ|. AIMET uses
    γ as-is (§6), which for γ < 0 gives wrong means (ReLU with β = 0, γ = −1: −0.399 instead of
    +0.399).
"""
from __future__ import annotations

import numpy as np
from scipy import special, stats

from ..errors import QuantError
from ..graph import Graph
from ..layers.conv import window_geometry
from ..layers import ops_with

__all__ = ["clipped_normal_mean", "CORRECTED_OPS"]

CORRECTED_OPS = ops_with("bn_foldable")   # the weighted layers (`Traits.bn_foldable`)
"""The ops whose bias is corrected."""
#: Linear links (zero padding, identity) and the clamps (relu, relu6, clip) between a batch norm's
#: statistics and the layer they feed (`Traits`).
_TRANSPARENT = tuple(op for op in ops_with("cle_transparent") if op in ops_with("grid_preserving"))
_ACTIVATIONS = ops_with("fusable_activation")


def clipped_normal_mean(beta, gamma, lo=-np.inf, hi=np.inf) -> np.ndarray:
    """E[clip(X, lo, hi)] for X ~ N(beta, gamma²), elementwise, in float64 (σ = |gamma|).

    lo Φ(α) + hi(1 − Φ(ω)) + β(Φ(ω) − Φ(α)) + σ(φ(α) − φ(ω)), α = (lo − β)/σ, ω = (hi − β)/σ,
    with the terms of an infinite bound dropped (Φ(−∞) = 0, φ(±∞) = 0); σ = 0 gives clip(β, lo, hi).
    lo = −∞, hi = ∞: β; lo = 0, hi = ∞: ReLU; lo = 0, hi = 6: ReLU6. Φ = scipy.special.ndtr,
    φ = scipy.stats.norm.pdf.
    """
    beta = np.asarray(beta, dtype=np.float64)
    sigma = np.abs(np.asarray(gamma, dtype=np.float64))
    beta, sigma = np.broadcast_arrays(beta, sigma)
    shape = beta.shape
    beta, sigma = beta.ravel(), sigma.ravel()
    lo, hi = float(lo), float(hi)
    if not lo <= hi:
        raise QuantError(f"clipped_normal_mean: need lo <= hi, got lo={lo} hi={hi}")
    out = np.clip(beta, lo, hi)  # the point mass of σ = 0
    pos = sigma > 0
    mu, s = beta[pos], sigma[pos]
    if np.isneginf(lo):
        cdf_a, pdf_a, lo_term = 0.0, 0.0, 0.0
    else:
        a = (lo - mu) / s
        cdf_a, pdf_a = special.ndtr(a), stats.norm.pdf(a)
        lo_term = lo * cdf_a
    if np.isposinf(hi):
        cdf_w, pdf_w, hi_term = 1.0, 0.0, 0.0
    else:
        w = (hi - mu) / s
        cdf_w, pdf_w = special.ndtr(w), stats.norm.pdf(w)
        hi_term = hi * (1.0 - cdf_w)
    out[pos] = lo_term + hi_term + mu * (cdf_w - cdf_a) + s * (pdf_a - pdf_w)
    return out.reshape(shape)


def _activation_bounds(node) -> tuple:
    if node is None:
        return -np.inf, np.inf
    if node.op == "relu":
        return 0.0, np.inf
    if node.op == "relu6":
        return 0.0, 6.0
    lo, hi = node.attrs["min"], node.attrs["max"]   # clip: a missing bound is None
    return (-np.inf if lo is None else float(lo)), (np.inf if hi is None else float(hi))


def _stats_of(graph: Graph, producer) -> tuple:
    """(beta, gamma) float64 arrays recorded for `producer`; QuantError when malformed."""
    rec = graph.meta["folded_bn"][producer.name]
    where = f"graph '{graph.name}': meta['folded_bn']['{producer.name}']"
    try:
        gamma = np.asarray(rec["gamma"], dtype=np.float64)
        beta = np.asarray(rec["beta"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise QuantError(f"{where}: expected {{'gamma': [...], 'beta': [...]}} ({e}); "
                         "start again from the model with its batch norms (`refq quantize` folds "
                         "them unless --no-fold-bn; Python: refq.algorithms.fold_batch_norms)") \
            from None
    channels = producer.params["weight"].shape[0]
    if gamma.shape != (channels,) or beta.shape != (channels,):
        raise QuantError(f"{where}: gamma {list(gamma.shape)} and beta {list(beta.shape)} must "
                         f"both be [{channels}], the output channels of '{producer.name}'; start "
                         "again from the model with its batch norms (`refq quantize`)")
    if not (np.all(np.isfinite(gamma)) and np.all(np.isfinite(beta))):
        raise QuantError(f"{where}: the statistics hold NaN or Inf; start again from the model "
                         "with its batch norms (`refq quantize`)")
    return beta, gamma


def _own_padding(node, shapes) -> bool:
    """True when conv2d `node` pads its input with zeros (or may: unknown spatial size)."""
    if node.op != "conv2d":
        return False
    a = node.attrs
    if a["padding"] == "valid":
        return False
    if a["padding"] == "explicit":
        return any(a["pads"])
    _, kh, kw, _ = node.params["weight"].shape
    hw = shapes[node.inputs[0]][1:3]
    pads, _ = window_geometry(hw, (kh, kw), a["strides"], a["dilations"], a["padding"], a["pads"])
    return any(p is None or p > 0 for p in pads)


def _analytical_source(graph, node, producers, shapes):
    """(info, None) when `node` satisfies the data-free rule (module docstring), else (None, why).
    """
    recorded = graph.meta.get("folded_bn") or {}
    t = node.inputs[0]
    path, act = [], None
    while True:
        p = producers.get(t)
        if p is None:
            return None, f"its input '{t}' is a graph input, whose statistics are unknown"
        if p.op in _TRANSPARENT or (p.op in _ACTIVATIONS and act is None):
            if p.op in _ACTIVATIONS:
                act = p
            path.append(p)
            t = p.inputs[0]
            continue
        break
    if p.op in CORRECTED_OPS and p.name in recorded:
        beta, gamma = _stats_of(graph, p)
        lo, hi = _activation_bounds(act)
        through = ("through " + ", ".join(n.op for n in reversed(path))) if path \
            else "directly (no activation)"
        reason = f"analytical: input from bn-folded {p.op} '{p.name}' {through}"
        borders = []
        if any(n.op == "zero_pad2d" for n in path):
            borders.append("zero_pad2d")
        if _own_padding(node, shapes):
            borders.append("own zero padding")
        if borders:
            reason += f" ({' and '.join(borders)}: inexact at the borders)"
        return {"source": p.name, "activation": None if act is None else act.op,
                "bounds": [lo, hi], "expected_input": clipped_normal_mean(beta, gamma, lo, hi),
                "reason": reason}, None
    if p.op in CORRECTED_OPS:
        return None, (f"its input comes from {p.op} '{p.name}', which has no recorded BN "
                      "statistics (graph.meta['folded_bn'])")
    if p.op in _ACTIVATIONS:
        return None, (f"its input passes through two activations ('{p.name}' and "
                      f"'{act.name}'); the data-free rule allows one")
    return None, (f"its input comes from '{p.name}' ({p.op}); the data-free rule needs a "
                  "bn-folded conv2d/dense followed only by relu/relu6/clip and "
                  "zero_pad2d/identity")


def _expected_error(node, w, wq, ex) -> np.ndarray:
    """e = ε·E[x] per output channel (module docstring), float64."""
    if node.op == "dense":
        return (wq - w) @ ex
    eps = (wq - w).sum(axis=(1, 2))  # [O, C/groups]
    groups = node.attrs["groups"]
    if groups == 1:
        return eps @ ex
    o, cg = eps.shape
    ex_o = ex.reshape(groups, cg)[np.arange(o) // (o // groups)]  # input channels output o reads
    return (eps * ex_o).sum(axis=1)
