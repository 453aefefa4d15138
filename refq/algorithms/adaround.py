"""AdaRound: learn, layer by layer, whether each weight rounds down or up (aimet.md §0.2.10, §7).

    new_sim, report = adaround(sim, data, iterations=None, reg=0.01, beta=(20, 2),
                               warm_start=0.2, seed=0, batch_size=32, param_bw=None)

Reference: Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization" (ICML
2020); AIMET 2.42 `aimet_torch/_base/adaround/adaround_weight.py` and `adaround/*`. The
parameterisation, the loss terms and their gradients are in `refq.algorithms.adaround_loss`.

Setup (AIMET `apply_adaround` on a given sim)
    A working copy of `sim` (the input is never modified). With `param_bw` every parameter
    quantizer takes that bitwidth. Parameter encodings are computed once from the float weights
    with the sim's scheme, without pre-quantized weight detection and without overflow protection
    (AIMET `_compute_param_encodings`: neither §0.2.5 step). Input and output (activation)
    quantizers are off throughout; parameter quantizers stay on as `sim.enabled` has them.
Layers
    Every conv2d (depthwise included: AIMET's supported modules are Conv2d, ConvTranspose2d and
    Linear, and a depthwise convolution is a Conv2d with groups = in_channels) and dense whose
    weight quantizer is enabled, in topological order; the others are listed under "skipped".
Following activation f
    When the layer's output has a single consumer and that consumer is one of the elementwise
    activations of `refq.layers.activations` (relu, relu6, clip, leaky_relu, sigmoid, tanh,
    hard_sigmoid, hard_swish, softmax: all in AIMET's `ActivationTypes`), f is that op, applied to
    both outputs; otherwise f is the identity. (AIMET takes the first consumer of the traced
    graph even when there are several; refq requires a single one.)
Per layer
    X = the layer's input in the quantized model (quantized weights, float activations, earlier
    layers already rounded) on every sample of `data`; Y = its output in the float model (the
    input graph). Both in the simulation dtype (`sim.numerics.dtype`, float32 for AIMET_V2).
    α starts at `initial_alpha` (float32). For t = 0 .. T−1:
        idx = rng.permutation(N)[:batch_size]          rng = np.random.default_rng(seed), one
                                                       generator for the whole run (AIMET:
                                                       torch.randperm(N)[:32] on the global RNG)
        ŵ = rounded_weight(h(α)),  ŷ = layer(X[idx]; ŵ, b)
        L = recon(f(ŷ), f(Y[idx])) + (t ≥ warm_start·T) · λ·Σ(1 − |2h − 1|^β(t))
        ∂L/∂α = (∂recon/∂ŵ · ∂ŵ/∂h + ∂round/∂h) · h'(α)
        with ∂recon/∂ŵ = the layer's VJP w.r.t. its weight (`REGISTRY[op].vjp`) of
        gŷ = f's VJP of 2(f(ŷ) − f(Y[idx]))/R; then Adam (`refq.grad.optim.Adam`, PyTorch
        defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8) updates α.
    The layer's weight is then overwritten with the soft-rounded ŵ = rounded_weight(h(α))
    (float32), as AIMET does before the next layer; the next layers' inputs see it through the
    weight quantizer, i.e. nearest-rounded (= 1[α ≥ 0] except at ties h = 0.5).
    T = `iterations`, by default 10000 when every weight bitwidth is ≥ 8, else 15000.
Output
    A new QuantSim: the working copy, whose graph holds the soft-rounded weights and whose
    parameter encodings are the ones the rounding was optimised for, so that `new_sim.run` gives
    the rounded model (activation encodings the input sim had are kept as they were). The
    rounded layers' weight encodings are frozen (`QuantSim.freeze`, as AIMET's
    `set_and_freeze_param_encodings`): a later `compute_encodings` calibrates the activations and
    keeps them, also after saving and loading. Report: {"iterations", "layers": {name:
    {"op", "activation", "loss", "recon_loss", "round_loss", "hard_fraction", "up_fraction",
    "seconds"}}, "skipped": {name: reason}}, with the final iteration's losses, the fraction of h
    exactly 0 or 1 and the fraction of weights rounded up (α ≥ 0, i.e. hard h = 1).
    With curve_points = P each layer's entry also holds "curve" (`curve_iterations`): every
    k = ceil(T/P) iterations, i.e. at t = k−1, 2k−1, ..., and at t = T−1, the values that
    iteration computed: {"every": k, "iteration": [t], "recon_loss": [...], "round_loss": [...]
    (0 in the warm start), "beta": [β(t), None in the warm start]}; at most P points. Recording
    reads the numbers the optimisation computes and changes none of them.
Errors
    QuantError: no conv2d/dense has an enabled weight quantizer; data with no samples or NaN/Inf;
    bad iterations, reg, beta, warm_start, batch_size or param_bw, or a param_bw that the
    config's `supported_kernels` do not list. (Fewer samples than batch_size is allowed, as in
    AIMET: each step then uses all of them; `refq adaround` refuses it.) InputError: data that does not
    match the graph's inputs (a scalar, a wrong shape).
"""
from __future__ import annotations

import copy
import time

import numpy as np

from ..data_io import iterate_batches
from ..errors import QuantError
from ..grad.optim import Adam
from ..layers import REGISTRY, activations
from ..plan import Plan
from ..quant.config import ONNX_TYPE
from ..quant.grid import check_bitwidth
from ..quant.quantsim import QuantSim, check_calibration_batch
from .adaround_loss import (beta_at, floor_codes, in_warm_start, initial_alpha,
                            recon_loss_and_grad, round_loss_and_grad, rounded_weight,
                            soft_rounding, soft_rounding_grad)

__all__ = ["adaround", "LayerProblem", "ACTIVATIONS", "ROUNDED_OPS", "default_iterations",
           "following_activation", "curve_iterations"]

#: The layers AdaRound rounds (AIMET: Conv2d, ConvTranspose2d, Linear).
ROUNDED_OPS = ("conv2d", "dense")
#: The ops applied after a layer in the loss when they are its single consumer.
ACTIVATIONS = tuple(op.name for op in activations.OPS)


def curve_iterations(iterations: int, points: int) -> tuple:
    """(k, [t]): the iterations a curve of at most `points` points records: k = ceil(T/points),
    t = k−1, 2k−1, ... and T−1 (ceil(T/k) <= points of them)."""
    every = max(1, -(-int(iterations) // int(points)))
    marks = list(range(every - 1, int(iterations), every))
    if not marks or marks[-1] != iterations - 1:
        marks.append(int(iterations) - 1)
    return every, marks


def default_iterations(bitwidths) -> int:
    """AIMET `_adaround_model`: 10000 when the lowest weight bitwidth is ≥ 8, else 15000."""
    return 10000 if min(bitwidths) >= 8 else 15000


class LayerProblem:
    """One layer's AdaRound objective (module docstring) on cached inputs `x` and float outputs
    `y_float`: `loss_and_grad(alpha, idx, iteration)` -> (total, recon, round, ∂L/∂α)."""

    def __init__(self, node, encoding, x, y_float, activation=None, *, iterations, reg, beta,
                 warm_start):
        self.node, self.encoding = node, encoding
        self.op = REGISTRY[node.op]
        self.attrs = dict(node.attrs)
        w = node.params["weight"]
        shape = encoding.broadcast_shape(w.ndim)
        self.scale = encoding.scale.reshape(shape)
        self.zero_point = encoding.zero_point.reshape(shape)
        self.w_floor, _ = floor_codes(w, self.scale)
        self.alpha0 = initial_alpha(w, self.scale)
        self.x = x
        self.bias = {k: v.astype(x.dtype) for k, v in node.params.items() if k != "weight"}
        self.act = activation
        self.act_op = None if activation is None else REGISTRY[activation.op]
        self.target = self._activate(y_float)[0]
        self.iterations, self.reg, self.beta, self.warm_start = iterations, reg, beta, warm_start

    def _activate(self, y):
        if self.act_op is None:
            return y, None
        return self.act_op.forward([y], {}, dict(self.act.attrs)), y

    def weight(self, alpha, hard: bool = False):
        """(ŵ, ∂ŵ/∂h) for h = h(α), or h = 1[α ≥ 0] with hard=True."""
        h = (alpha >= 0).astype(np.float32) if hard else soft_rounding(alpha)
        return rounded_weight(self.w_floor, h, self.scale, self.zero_point, self.encoding.qmin,
                              self.encoding.qmax)

    def loss_and_grad(self, alpha, idx, iteration: int):
        """(total, recon, round, ∂total/∂α) on the samples `idx` at `iteration`."""
        w_hat, dw_dh = self.weight(alpha)
        x = self.x[idx]
        params = dict(self.bias, weight=w_hat.astype(x.dtype))
        y = self.op.forward([x], params, self.attrs)
        out, pre = self._activate(y)
        recon, g_out = recon_loss_and_grad(out, self.target[idx])
        g_y = g_out if self.act_op is None else \
            self.act_op.vjp([pre], {}, dict(self.act.attrs), out, g_out)[0][0]
        g_w = self.op.vjp([x], params, self.attrs, y, g_y, inputs_grad=False)[1]["weight"]
        grad = (g_w.astype(np.float32) * dw_dh) * soft_rounding_grad(alpha)
        round_value = 0.0
        if not in_warm_start(iteration, self.iterations, self.warm_start):
            beta = beta_at(iteration, self.iterations, self.beta, self.warm_start)
            round_value, g_round = round_loss_and_grad(alpha, self.reg, beta)
            grad = grad + g_round
        return recon + round_value, recon, round_value, grad.astype(np.float32)

    def optimize(self, rng, batch_size: int, curve_points: int | None = None):
        """(α after T Adam steps, the last iteration's (total, recon, round)). With
        `curve_points`, `self.curve` holds the losses of the iterations `curve_iterations`
        names (module docstring)."""
        alpha = self.alpha0.copy()
        adam = Adam()
        n = len(self.x)
        last = (0.0, 0.0, 0.0)
        marks = set()
        if curve_points is not None:
            every, ts = curve_iterations(self.iterations, curve_points)
            marks = set(ts)
            self.curve = {"every": every, "iteration": [], "recon_loss": [], "round_loss": [],
                          "beta": []}
        for t in range(self.iterations):
            idx = rng.permutation(n)[:batch_size]
            total, recon, round_value, grad = self.loss_and_grad(alpha, idx, t)
            adam.step({"alpha": alpha}, {"alpha": grad})
            last = (total, recon, round_value)
            if t in marks:
                self._record(t, recon, round_value)
        return alpha, last

    def _record(self, t, recon, round_value):
        warm = in_warm_start(t, self.iterations, self.warm_start)
        self.curve["iteration"].append(t)
        self.curve["recon_loss"].append(float(recon))
        self.curve["round_loss"].append(float(round_value))
        self.curve["beta"].append(None if warm else
                                  beta_at(t, self.iterations, self.beta, self.warm_start))


def _check_settings(iterations, reg, beta, warm_start, batch_size, param_bw):
    def bad(what, value, want):
        raise QuantError(f"adaround: {what} must be {want}, got {value!r}")

    if iterations is not None and (isinstance(iterations, bool)
                                   or not isinstance(iterations, (int, np.integer))
                                   or iterations < 1):
        bad("iterations", iterations, "a positive integer (or None for AIMET's default)")
    if not (isinstance(reg, (int, float)) and np.isfinite(reg) and reg >= 0):
        bad("reg", reg, "a finite number >= 0")
    if not (isinstance(beta, (tuple, list)) and len(beta) == 2
            and all(isinstance(b, (int, float)) and np.isfinite(b) and b > 0 for b in beta)):
        bad("beta", beta, "two positive numbers (start, end)")
    if not (isinstance(warm_start, (int, float)) and 0 <= warm_start < 1):
        bad("warm_start", warm_start, "a fraction in [0, 1)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        bad("batch_size", batch_size, "a positive integer")
    if param_bw is not None:
        try:
            if check_bitwidth(param_bw) == 32:
                raise QuantError("pass-through")
        except QuantError:
            bad("param_bw", param_bw, "an integer in 2..16 (or None: the sim's bitwidth)")


def _cache(graph, data) -> dict:
    """{input: array} of every sample of `data`, each batch checked."""
    parts: dict = {}
    for k, feeds in enumerate(iterate_batches(data, graph)):
        feeds = check_calibration_batch(graph, feeds, f"adaround data batch {k}")
        for name, v in feeds.items():
            parts.setdefault(name, []).append(np.asarray(v))
    if not parts:
        raise QuantError("adaround: the data holds no samples; give at least one non-empty batch")
    return {name: np.concatenate(v, axis=0) for name, v in parts.items()}


def _layers(sim, enabled):
    """([(node, weight quantizer name)] in topological order, {skipped name: reason})."""
    by_param = {(q.node, q.param): q.name for q in sim.quantizers.values() if q.kind == "param"}
    layers, skipped = [], {}
    for node in sim.graph.topological_order():
        if node.op not in ROUNDED_OPS:
            continue
        name = by_param.get((node.name, "weight"))
        if name is None or not enabled.get(name, False):
            skipped[node.name] = "its weight is not quantized"
        elif sim.quantizers[name].bitwidth == 32:
            skipped[node.name] = "its weight quantizer is pass-through (32-bit)"
        else:
            layers.append((node, name))
    return layers, skipped


def following_activation(graph, node):
    """The activation node that is the single consumer of `node`'s output, or None."""
    readers = graph.consumers().get(node.outputs[0], [])
    if len(readers) == 1 and readers[0].op in ACTIVATIONS:
        return readers[0]
    return None


def adaround(sim: QuantSim, data, iterations=None, reg=0.01, beta=(20, 2), warm_start=0.2,
             seed=0, batch_size=32, param_bw=None, curve_points=None):
    """(new QuantSim, report): AdaRound of `sim`'s conv2d/dense weights (module docstring);
    curve_points: None, or the most points of each layer's recorded loss curve."""
    _check_settings(iterations, reg, beta, warm_start, batch_size, param_bw)
    if curve_points is not None and (isinstance(curve_points, bool) or not isinstance(
            curve_points, (int, np.integer)) or curve_points < 1):
        raise QuantError(f"adaround: curve_points must be a positive integer or None, got "
                         f"{curve_points!r}")
    work = copy.deepcopy(sim)
    params_on = {q.name: q.kind == "param" and bool(sim.enabled.get(q.name, False))
                 for q in work.quantizers.values()}
    if param_bw is not None:
        work.config.check_bitwidths(int(param_bw), work.act_bw,
                                    {ONNX_TYPE.get(n.op) for n in work.graph.nodes})
        work.param_bw = int(param_bw)
        for q in work.quantizers.values():
            if q.kind == "param":
                q.bitwidth = int(param_bw)
    layers, skipped = _layers(work, params_on)
    if not layers:
        raise QuantError(f"adaround: no conv2d or dense layer of model '{sim.graph.name}' has an "
                         "enabled weight quantizer; give a QuantSim whose config quantizes "
                         "weights (param quantizers on)")
    feeds = _cache(work.graph, data)
    work.detect_prequantized = False
    work.compute_param_encodings()
    work.detect_prequantized = sim.detect_prequantized
    if iterations is None:
        iterations = default_iterations([work.quantizers[n].bitwidth for _, n in layers])
    dtype = work.numerics.dtype.type
    float_out = Plan(sim.graph, dtype).run(feeds, trace={n.outputs[0] for n, _ in layers})
    rng = np.random.default_rng(seed)
    report = {"iterations": int(iterations), "layers": {}, "skipped": skipped}
    for node, qname in layers:
        start = time.perf_counter()
        node = work.graph.node(node.name)
        x = work.plan(params_on).run(feeds, trace={node.inputs[0]})[node.inputs[0]]
        act = following_activation(work.graph, node)
        problem = LayerProblem(node, work.encodings[qname], x, float_out[node.outputs[0]], act,
                               iterations=int(iterations), reg=float(reg),
                               beta=tuple(float(b) for b in beta),
                               warm_start=float(warm_start))
        alpha, (total, recon, round_value) = problem.optimize(rng, int(batch_size),
                                                              curve_points)
        h = soft_rounding(alpha)
        node.params["weight"] = problem.weight(alpha)[0].astype(np.float32)
        report["layers"][node.name] = {
            "op": node.op, "activation": None if act is None else act.op,
            "loss": total, "recon_loss": recon, "round_loss": round_value,
            "hard_fraction": float(np.mean((h == 0) | (h == 1))),
            "up_fraction": float(np.mean(alpha >= 0)),
            "seconds": time.perf_counter() - start}
        if curve_points is not None:
            report["layers"][node.name]["curve"] = problem.curve
        work.freeze([qname])
    return work, report
