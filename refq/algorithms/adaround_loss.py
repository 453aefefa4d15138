"""AdaRound's rounding parameterisation, loss terms and their gradients (aimet.md §0.2.10, §7).

AIMET 2.42 (`_base/adaround/*`, `adaround/adaround_loss.py`); float32 wherever AIMET is float32
(α, h, ŵ and every quantity derived from them), with fl(·) rounding to float32.

Rectified sigmoid (`AdaroundConstants`: ζ = 1.1, γ = −0.1; ζ − γ = fl(1.2))
    s(α) = sigmoid(α)·(ζ − γ) + γ,     h(α) = clamp(s(α), 0, 1)
    h'(α) = sigmoid(α)·(1 − sigmoid(α))·(ζ − γ) where 0 ≤ s(α) ≤ 1, else 0
    (torch.clamp passes the gradient on the closed interval, bounds included).
Initialisation (`_initialize_alpha`), with Δ the weight scale broadcast over the weight:
    w_floor = floor(fl(w/Δ)),   r = fl(w/Δ) − w_floor,   α = −log((ζ − γ)/(r − γ) − 1)
    so that h(α) = r up to float32 rounding: the soft weights start at the float weights.
Rounded weight (`apply_adaround`), with o = −zero_point (0 for symmetric grids):
    w_int = clamp(w_floor + h − o, qmin, qmax),    ŵ = (w_int + o)·Δ
    ∂ŵ/∂h = Δ where qmin ≤ w_floor + h − o ≤ qmax, else 0.
    Hard rounding uses h = 1[α ≥ 0].
Reconstruction loss (`compute_recon_loss`: torch.norm(·, dim=1)² then mean), f the following
activation (identity when there is none), C the channel axis (the last one, NHWC), R the number
of rows (samples × pixels):
    recon = (1/R)·Σ_rows Σ_c (f(ŷ) − f(y))²,    ∂recon/∂f(ŷ) = 2·(f(ŷ) − f(y))/R
Rounding regulariser (`compute_round_loss`), zero while iteration < warm_start·T, afterwards
    round = λ·Σ (1 − |2h − 1|^β)
    ∂round/∂h = −2λβ·|2h − 1|^(β−1)·sign(2h − 1)
β (`_compute_beta`, float64 as AIMET's numpy):
    t0 = warm_start·T,   β = β_end + ½(β_start − β_end)·(1 + cos(π·(t − t0)/(T − t0)))
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["ZETA", "GAMMA", "soft_rounding", "soft_rounding_grad", "initial_alpha", "floor_codes",
           "rounded_weight", "beta_at", "in_warm_start", "round_loss_and_grad",
           "recon_loss_and_grad"]

_F32 = np.float32
ZETA = 1.1
GAMMA = -0.1
_STRETCH = _F32(ZETA - GAMMA)   # fl(1.2000000000000002) = fl(1.2)
_SHIFT = _F32(GAMMA)


def _sigmoid(alpha):
    """1/(1 + exp(−α)) in α's dtype, evaluated without overflow."""
    e = np.exp(-np.abs(alpha))
    return np.where(alpha >= 0, 1 / (1 + e), e / (1 + e)).astype(alpha.dtype)


def soft_rounding(alpha):
    """h(α) = clamp(sigmoid(α)·(ζ − γ) + γ, 0, 1), float32."""
    alpha = np.asarray(alpha, dtype=_F32)
    return np.clip(_sigmoid(alpha) * _STRETCH + _SHIFT, _F32(0), _F32(1))


def soft_rounding_grad(alpha):
    """h'(α) = sigmoid(α)(1 − sigmoid(α))(ζ − γ) where 0 ≤ s(α) ≤ 1, else 0; float32."""
    alpha = np.asarray(alpha, dtype=_F32)
    sig = _sigmoid(alpha)
    s = sig * _STRETCH + _SHIFT
    inside = (s >= 0) & (s <= 1)
    return np.where(inside, (_F32(1) - sig) * sig * _STRETCH, _F32(0))


def floor_codes(weight, scale):
    """(w_floor, r): floor(fl(w/Δ)) and the remainder fl(w/Δ) − w_floor, float32."""
    ratio = np.asarray(weight, dtype=_F32) / np.asarray(scale, dtype=_F32)
    w_floor = np.floor(ratio)
    return w_floor, ratio - w_floor


def initial_alpha(weight, scale):
    """α = −log((ζ − γ)/(r − γ) − 1), float32: h(α) = r = w/Δ − floor(w/Δ)."""
    _, r = floor_codes(weight, scale)
    with np.errstate(divide="ignore"):
        return -np.log(_STRETCH / (r - _SHIFT) - _F32(1))


def rounded_weight(w_floor, h, scale, zero_point, qmin, qmax):
    """(ŵ, ∂ŵ/∂h): ŵ = (clamp(w_floor + h − o, qmin, qmax) + o)·Δ with o = −zero_point;
    the derivative is Δ inside the clamp (bounds included), 0 outside. float32."""
    zp = np.asarray(zero_point, dtype=_F32)
    scale = np.asarray(scale, dtype=_F32)
    code = w_floor + h + zp
    w_int = np.clip(code, _F32(qmin), _F32(qmax))
    inside = (code >= qmin) & (code <= qmax)
    return (w_int - zp) * scale, np.where(inside, scale, _F32(0))


def in_warm_start(iteration: int, iterations: int, warm_start: float) -> bool:
    """AIMET's test `cur_iter < num_iterations·warm_start` (no rounding loss yet)."""
    return iteration < iterations * warm_start


def beta_at(iteration: int, iterations: int, beta_range=(20, 2), warm_start: float = 0.2) -> float:
    """β of the cosine schedule (module docstring), float64."""
    start, end = beta_range
    t0 = warm_start * iterations
    rel = (iteration - t0) / (iterations - t0)
    return end + 0.5 * (start - end) * (1 + math.cos(rel * math.pi))


def round_loss_and_grad(alpha, reg: float, beta: float):
    """(λ·Σ(1 − |2h − 1|^β), its gradient w.r.t. α) with h = h(α); the gradient float32."""
    h = soft_rounding(alpha)
    u = _F32(2) * h - _F32(1)
    a = np.abs(u)
    b32 = _F32(beta)
    value = float(_F32(reg) * np.sum(_F32(1) - a ** b32, dtype=_F32))
    d_h = _F32(-2 * reg) * b32 * a ** (b32 - _F32(1)) * np.sign(u)
    return value, (d_h * soft_rounding_grad(alpha)).astype(_F32)


def recon_loss_and_grad(out, target):
    """(mean over rows of Σ_channels (out − target)², ∂/∂out), channels on the last axis."""
    d = out - target
    rows = d.size // d.shape[-1] if d.ndim else 1
    value = float(np.sum(d * d, dtype=np.float64) / rows)
    return value, (d * d.dtype.type(2 / rows)).astype(out.dtype)
