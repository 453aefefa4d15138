"""High-bias absorption, the second step of `refq.algorithms.cle.equalize`.

Definition (Nagel et al. 2019 §4.2; AIMET `HighBiasFold`, reference notes aimet.md §5.d and §0.2.9)
    For a pair L1 -> [transparent ops] -> L2 produced by cross-layer scaling, where L1's output is
    ~ N(β̃, γ̃²) per channel (graph.meta["folded_bn"][L1], already divided by the pair's scale s by
    `equalize`: β̃ = β/s, γ̃ = γ/s) and both layers have a bias:
        c  = max(0, β̃ − 3·|γ̃|)      when a relu or leaky_relu lies between L1 and L2
        c  = β̃                       when nothing nonlinear does (pads/identities only)
        (a relu/leaky_relu anywhere in the link selects the first rule; AIMET looks at L1's direct
        consumer, which is the same thing for the graphs it builds)
        b1 ← b1 − c
        b2 ← b2 + Ŵ2 · c             Ŵ2[o, i] = Σ_{kh,kw} W2[o, kh, kw, i] (current weights);
                                     elementwise Ŵ2[o] · c_o when L2 is depthwise
    and graph.meta["folded_bn"][L1] becomes {"gamma": γ̃, "beta": β̃ − c}, the statistics after the
    shift, for a later analytical bias correction.
Exactness
    With a relu between the layers, relu(z − c) + c = relu(z) wherever the pre-activation z >= c
    (c >= 0): the 3-sigma rule picks c so that, if z ~ N(β̃, γ̃²), this fails for about 0.13% of
    the values. Where z < c the element changes by relu(z − c) + c − relu(z) ∈ (0, c], so a value
    of L2's output changes by at most Σ_{kh,kw,i} |W2[o,kh,kw,i]| · c_i. leaky_relu(alpha) is exact
    under the same condition and changes an element by at most |1 − alpha|·c otherwise.
    Without an activation the absorption is exact, except at borders:
    L2 adds Ŵ2·c as if every tap read a shifted value, but a padded zero (a zero_pad2d between the
    layers, or L2's own "same"/explicit padding) is not shifted. AIMET computes the absorption
    there too (its convolutions pad internally); refq does the same and reports
    `inexact_at_borders`.
Not absorbed (reported with the reason): L1 without folded-BN statistics (no BN was folded
backward into it), L1 or L2 without a bias, statistics of the wrong length, and a pair linked
through a squeeze-excitation block (refq extension): the gate multiplies the shifted tensor, so
x ⊙ gate − c ⊙ gate cannot be undone by a bias.
"""
from __future__ import annotations

import numpy as np

from ..layers import ops_with

from .bn_fold import reads_padding

__all__ = ["absorb_in_place", "absorbed_shift", "HBA_SIGMAS", "NONLINEAR_LINK_OPS"]

HBA_SIGMAS = 3.0
"""c = max(0, β̃ − HBA_SIGMAS·|γ̃|) across a ReLU (AIMET `HbfImpl`, the paper's 3 sigma)."""

#: The links of a CLE chain that are not linear (relu, leaky_relu): where the shift moved across
#: them must stay below the activation's kink (`Traits.cle_transparent`, not grid-preserving).
NONLINEAR_LINK_OPS = tuple(op for op in ops_with("cle_transparent")
                           if op not in ops_with("grid_preserving"))


def absorbed_shift(beta, gamma, through_relu: bool) -> np.ndarray:
    """The per-channel shift c (float64) moved from L1's bias into L2's."""
    beta = np.asarray(beta, np.float64)
    if not through_relu:
        return beta.copy()
    return np.maximum(0.0, beta - HBA_SIGMAS * np.abs(np.asarray(gamma, np.float64)))


def absorb_in_place(g, pairs):
    """Absorb high biases for `pairs` on `g`, which the caller owns (equalize passes its copy).

    pairs: [{"l1", "l2", "l2_kind" ("conv" | "depthwise"), "link": [steps]}] in processing order,
    where a step is {"op": ..., ...} as built by `cle.find_chains`.
    Returns (absorbed, skipped): report entries.
    """
    stats = g.meta.get("folded_bn", {})
    absorbed, skipped = [], []
    for p in pairs:
        l1, l2 = g.node(p["l1"]), g.node(p["l2"])
        ops = [s["op"] for s in p["link"]]
        why = None
        if l1.name not in stats:
            why = f"'{l1.name}' has no folded batch_norm statistics"
        elif "bias" not in l1.params or "bias" not in l2.params:
            why = f"'{(l2 if 'bias' in l1.params else l1).name}' has no bias"
        elif len(stats[l1.name]["beta"]) != l1.params["weight"].shape[0]:
            why = f"the folded batch_norm statistics of '{l1.name}' do not match its channels"
        elif "squeeze_excite" in ops:
            why = "the pair is linked through a squeeze-excitation gate"
        if why:
            skipped.append({"l1": l1.name, "l2": l2.name, "reason": why})
            continue
        relu = any(op in NONLINEAR_LINK_OPS for op in ops)
        beta = np.asarray(stats[l1.name]["beta"], np.float64)
        c = absorbed_shift(beta, stats[l1.name]["gamma"], relu)
        w2 = l2.params["weight"].astype(np.float64)
        w_hat = w2.sum(axis=(1, 2))  # [O, I]
        shift = w_hat[:, 0] * c if p["l2_kind"] == "depthwise" else w_hat @ c
        l1.params["bias"] = l1.params["bias"].astype(np.float64) - c
        l2.params["bias"] = l2.params["bias"].astype(np.float64) + shift
        stats[l1.name] = {"gamma": list(stats[l1.name]["gamma"]),
                          "beta": [float(v) for v in beta - c]}
        absorbed.append({
            "l1": l1.name, "l2": l2.name,
            "activation": "relu" if relu else "none",
            "absorbed": [float(v) for v in c],
            "inexact_at_borders": "zero_pad2d" in ops or reads_padding(l2),
        })
    return absorbed, skipped
