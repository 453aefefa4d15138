"""`SimPlan`: a QuantSim's forward compiled once (`QuantSim.plan()`)."""
from __future__ import annotations

from ..plan import Plan
from .encoding import quantize_dequantize
from .fq_chain import InplaceFakeQuant

__all__ = ["SimPlan"]


class SimPlan:
    """A QuantSim's forward compiled once: `sim.plan().run(feeds)` returns what `sim.run(feeds)`
    returns. It holds a `refq.Plan` of the graph with the fake-quantized parameters of the enabled
    parameter quantizers, and the hooks that fake-quantize the enabled tensor and input
    quantizers' tensors with their encodings (per-tensor encodings in place, in the epilogue of the
    step that produces the tensor, where a quantized tensor, a clamp and its quantized output fuse
    into one step: `refq.quant.fq_chain`; `refq.plan`). The hooks are pure functions fixed when the
    SimPlan is built, so a large run may send half its batch to a twin process."""

    def __init__(self, sim, enabled: dict):
        tq = {t: n for t, n in sim.tensor_quantizers().items() if enabled.get(n, False)}
        iq = {k: n for k, n in sim.input_quantizers().items() if enabled.get(n, False)}
        encs = {n: sim._encoding(n) for n in set(tq.values()) | set(iq.values())}
        num = sim.numerics

        def fake_quant(name):
            return lambda x: quantize_dequantize(x, encs[name], num)

        per_tensor = {t for t, n in tq.items() if encs[n].axis is None}
        self.plan = Plan(sim.graph, num.dtype.type, params=sim.sim_params(enabled),
                         fold_batch_norms=False)
        self.hooks = {"tensor_hooks": {t: fake_quant(n) for t, n in tq.items()
                                       if t not in per_tensor},
                      "inplace_hooks": {t: InplaceFakeQuant(encs[tq[t]], num) for t in per_tensor},
                      "input_hooks": {k: fake_quant(n) for k, n in iq.items()}}

    def run(self, feeds, *, trace=False, batch_size: int | None = None,
            quiet: bool = True) -> dict:
        """The simulated forward (`QuantSim.run`); trace as `refq.Plan.run`'s (True, or the
        names of the tensors to return)."""
        return self.plan.run(feeds, trace=trace, batch_size=batch_size, quiet=quiet,
                             processes=True, **self.hooks)
