"""Running integer graphs, and the integer-faithful simulation.

    y, stats = run_int(g_int, {"x": x})           # outputs (float) and accumulator statistics
    q, stats = run_int(g_int, {"x": codes}, codes=True)   # integer codes in and out
    g_ref = faithful_graph(sim)                   # the integer-faithful simulation as a graph
    y, stats = run_faithful(sim, {"x": x})

`run_int` runs an integer graph with `refq.runtime.run`, passing a `call` hook that evaluates every
node with an accumulator through `Op.accumulate` and records, per node, the largest |accumulator|
over the run and its headroom in bits:
    headroom = accumulator_bits − 1 − ceil(log2(max|acc| + 1))
(negative = |acc| reached 2^(bits−1); computed from |acc|, so an accumulator of exactly
−2^(bits−1), which fits, also shows −1). The node's overflow policy applies, in the kernel: under
"error" an accumulator outside accumulator_bits raises FixedPointError naming the node; under
"wrap"/"saturate" the kernel wraps/saturates and the statistics say `overflowed: True`.
`overflowed` is exact: the kernels report the signed extremes of their accumulators
(`kernels.common.AccExtremes`: min < −2^(bits−1) or max > 2^(bits−1) − 1). For an op that reports
only |acc| (a plain int) the rule is conservative: |acc| > 2^(bits−1) − 1, which also counts
an accumulator of exactly −2^(bits−1).

Evaluation (speed only; no value, statistic or error depends on it): without a trace, the nodes
whose op has a kernel in `kernels.NARROW` run it instead (the same values in the narrowest dtype
holding the node's output range, e.g. int8 instead of int64; every kernel accepts such inputs),
with a per-node memo of what the kernel derives from its parameters during the run. The batch
chunks of the runtime's plan (`refq.plan`) run on `refq.parallel.threads()` threads (NumPy and
BLAS release the GIL; the statistics are merged under a lock); a run of at least
`refq.plan.TWIN_MIN_VALUES` activation values instead computes the first half of its batch in a
twin process (`refq.twin`), whose statistics are merged the same way.
With trace=True the nodes run through `Op.accumulate` / `Op.forward` (every traced integer
tensor is int64), on one thread.

Integer codes in and out (`codes=True`, for codes from another toolchain): each feed is the integer
codes of its input's quantizer, `input_encodings(g)[name]` (the encoding of the graph's
`int_quantize` node: q ∈ [qmin, qmax] holds the real value (q − zero_point)·scale); the
int_quantize step is skipped, and the codes enter the graph as they are. Each output is returned as
the codes of its encoding, `output_encodings(g)[name]`, in that encoding's dtype (int8, uint8,
int16), instead of the dequantized floats; int_dequantize is skipped. Hence, for float x,
    run_int(g, {n: quantize(x)}, codes=True) == quantize(run_int(g, {n: x})) exactly,
with quantize the input's int_quantize and the output's encoding (dequantization is exact in
float32 for |q − zp| < 2^24). Codes must have an integer dtype and lie in [qmin, qmax]; otherwise
InputError naming the input, the first bad index and value, and the allowed range.

Mixed graphs (`refq.fixedpoint.mixed`): int_quantize and int_dequantize may also stand inside the
graph, with float ops between them (float32 kernels; their tensors are traced as floats). A graph
input read by float ops instead of int_quantize, and a graph output computed by a float op, have
no encoding: with codes=True they are taken and returned as float values.

The integer-faithful simulation (DESIGN.md "Three ways to run one graph") is the same integer graph
lowered with the internal profile `REFERENCE` ("reference"): exact requantization, i.e. the real
multiplier M = s_in·s_w/s_out formed in float64 from the float32 scales and applied to the exact
integer accumulator in float64, rounded half to even, the zero point added after rounding; quantize
rounds half to even; Add, AvgPool, Mean, Softmax and lookup tables are computed as float functions of
the dequantized integers quantized half to even. Integer accumulation, int32 bias (scale s_in·s_w),
weight codes and activation clamps are those of every profile. Hence:
- a profile whose requantization is this float scheme (requant "float_rne" with scale_math
  "float64", zero point after rounding, float Add/AvgPool/Mean/LUT, half-even quantize) produces
  exactly this graph's integers, bit for bit;
- any other scheme differs from it only in its roundings: by at most 1 LSB per requantization when
  evaluated on the same inputs (`refq.fixedpoint.compare` counts them, layer by layer), except
  where a profile's algorithm is not a rounding of the same real (e.g. the TFLite fixed-point
  hard_swish, whose truncations are counted, not bounded).
`faithful_graph(sim, like=profile)` uses `like`'s activation and weight dtypes, so that both graphs
hold identical codes (an unsigned grid shifted to a signed one represents the same reals; every
float scheme above commutes with the shift).
"""
from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np

from ..errors import FixedPointError, InputError
from .. import twin
from ..parallel import threads
from ..plan import Plan
from ..feeds import feeds_dict
from .kernels import NARROW
from .kernels.common import AccExtremes, output_dtype
from .lower_encodings import NP_DTYPES, TensorQ
from .profiles import Profile, get_profile

__all__ = ["run_int", "IntPlan", "faithful_graph", "run_faithful", "REFERENCE", "reference_profile",
           "accumulator_headroom", "input_encodings", "output_encodings"]

#: The profile of the integer-faithful simulation (not a target; see the module docstring).
REFERENCE = Profile(
    name="reference",
    description="integer-faithful simulation: exact integer accumulation, float64 M from the "
                "float32 scales, round half to even, zero point after rounding",
    scale_math="float64", fc_per_tensor_scale_math="float64", mul_scale_math="float64",
    multiplier="float64", multiplier_bits=64, requant="float_rne", fc_requant=None,
    zp_before_round=False, quantize_rounding="half_even", activation_range_rounding="half_even",
    weight_zero_point=True, per_channel_weight_zero_point=True, add="float", avgpool="float",
    mean="float", logistic_tanh="float", hard_swish="float", softmax="float",
    activation_dtypes=("int8", "uint8", "int16"), weight_dtypes=("int8", "uint8", "int4"),
    max_pool_attributes=("dilations", "ceil_mode", "same_lower", "1d", "3d"),
    avg_pool_attributes=("dilations", "ceil_mode", "count_include_pad", "same_lower", "1d", "3d"),
)


def reference_profile(like=None) -> Profile:
    """`REFERENCE`, or with the activation/weight dtypes of profile `like` (a name or Profile)."""
    if like is None:
        return REFERENCE
    like = get_profile(like)
    return replace(REFERENCE, activation_dtypes=like.activation_dtypes,
                   weight_dtypes=tuple(dict.fromkeys(like.weight_dtypes + ("int8",))))


def accumulator_headroom(max_abs: int, bits: int) -> int:
    """bits − 1 − ceil(log2(max_abs + 1)): free bits above the largest |accumulator|."""
    return int(bits) - 1 - int(max_abs).bit_length()


def _not_integer(graph, what):
    return FixedPointError(f"model '{graph.name}' is not an integer model ({what}); lower it "
                           "first (`refq lower Q.refq.h5 --profile NAME -o INT.refq.h5`)")


def _tensor_q(graph, tensor, scale, zero_point, fallback):
    """The TensorQ of integer tensor `tensor` from graph.meta["integer"]["tensors"], or from
    `fallback` (qmin, qmax) with the dtype they imply."""
    meta = graph.meta.get("integer", {}).get("tensors", {}).get(tensor)
    if meta is not None:
        return TensorQ(float(meta["scale"]), int(meta["zero_point"]), int(meta["qmin"]),
                       int(meta["qmax"]), meta["dtype"])
    lo, hi = fallback
    return TensorQ(float(np.float32(scale)), int(zero_point), int(lo), int(hi),
                   output_dtype(int(lo), int(hi)))


def _boundary_nodes(graph):
    """({graph input: [its int_quantize nodes]}, {graph output: its int_dequantize node}) of an
    integer graph; FixedPointError when the graph does not follow the integer graph contract.
    A graph input read by no int_quantize (a float input of a float segment, `mixed`) and a graph
    output that is a float tensor computed by a float op (a float output) are left out: they
    have no encoding and pass as float values."""
    if "integer" not in graph.meta:
        raise _not_integer(graph, "no graph.meta['integer']")
    consumers, producers = graph.consumers(), graph.producers()
    ints = graph.meta["integer"].get("tensors", {})
    quant = {}
    for spec in graph.inputs:
        nodes = consumers.get(spec.name, [])
        coded = [n for n in nodes if n.op == "int_quantize"]
        if not nodes:
            raise _not_integer(graph, f"input '{spec.name}' is read by no node")
        if coded and len(coded) != len(nodes):
            raise _not_integer(graph, f"input '{spec.name}' is read by int_quantize and by "
                                      "float ops; give each its own graph input")
        if coded:
            quant[spec.name] = coded
    deq = {}
    for t in graph.outputs:
        n = producers.get(t)
        if n is None or (n.op != "int_dequantize" and t in ints):
            raise _not_integer(graph, f"output '{t}' is not produced by int_dequantize")
        if n.op == "int_dequantize":
            deq[t] = n
    return quant, deq


def input_encodings(graph) -> dict:
    """{graph input: TensorQ} of an integer graph: the encoding of the input's int_quantize node
    (scale, zero_point, qmin, qmax, dtype), i.e. what codes `run_int(..., codes=True)` takes."""
    return _input_qs(graph, _boundary_nodes(graph)[0])


def _input_qs(graph, quant) -> dict:
    out = {}
    for name, nodes in quant.items():
        a = nodes[0].attrs
        out[name] = _tensor_q(graph, nodes[0].outputs[0], a["scale"], a["zero_point"],
                              (a["qmin"], a["qmax"]))
    return out


def output_encodings(graph) -> dict:
    """{graph output: TensorQ} of an integer graph: the encoding of the tensor its int_dequantize
    node reads, i.e. what codes `run_int(..., codes=True)` returns."""
    return _output_qs(graph, _boundary_nodes(graph)[1])


def _output_qs(graph, deq) -> dict:
    out = {}
    for name, n in deq.items():
        a = n.attrs
        out[name] = _tensor_q(graph, n.inputs[0], a["scale"], a["zero_point"], (-(1 << 31),
                                                                                (1 << 31) - 1))
    return out


def _check_codes(graph, feeds, encs) -> dict:
    """Integer-code feeds as float64 arrays (exact) for the runtime's float graph inputs;
    InputError naming the input, the first bad index and value and the allowed range."""
    feeds = feeds_dict(graph, feeds)
    out = dict(feeds)
    for name, q in encs.items():
        if name not in feeds:
            continue  # the runtime names missing inputs
        x = np.asarray(feeds[name])
        if x.dtype.kind not in "iu":
            raise InputError(f"input '{name}': integer codes must have an integer dtype (e.g. "
                             f"{q.dtype}), got {x.dtype}; pass float inputs without codes=True "
                             "(`refq run --mode int` without --codes)")
        bad = (x < q.qmin) | (x > q.qmax)
        if np.any(bad):
            idx = np.argwhere(bad)[0]
            raise InputError(f"input '{name}': code {int(x[tuple(idx)])} at index {idx.tolist()} "
                             f"lies outside [{q.qmin}, {q.qmax}], the {q.dtype} grid of the "
                             f"input's encoding (scale {q.scale!r}, zero point {q.zero_point}); "
                             "give codes of that encoding")
        out[name] = x.astype(np.float64)
    return out


def run_int(graph, feeds, trace: bool = False, batch_size: int | None = None,
            quiet: bool = True, *, codes: bool = False):
    """Run integer graph `graph` on float `feeds`; return (outputs, or every tensor with
    trace=True, stats). stats = {node: {op, max_abs_acc, accumulator_bits, headroom_bits,
    overflow_policy, overflowed}} for every node whose op has an accumulator (`Op.accumulate`;
    `overflowed` and headroom as in the module docstring). FixedPointError raised by a kernel is
    re-raised naming the node.

    codes=True: `feeds` are integer codes of each input's encoding (`input_encodings`; integer
    dtype, every value in [qmin, qmax], else InputError naming the input, index, value and range)
    and the outputs are the integer codes of each output's encoding (`output_encodings`), as
    arrays of that encoding's dtype; see the module docstring. Inputs and outputs without an
    encoding (the float ones of a mixed graph, `refq.fixedpoint.mixed`) pass as float values.
    With trace=True the graph inputs are traced as the codes given (int64) and the other
    tensors as usual.

    Each call validates the graph and prepares every node's parameters; to run one integer graph
    many times, build an `IntPlan(graph)` once and call its `run`."""
    return IntPlan(graph).run(feeds, trace, batch_size, quiet, codes=codes)


class IntPlan:
    """An integer graph compiled once: `IntPlan(graph).run(feeds, ...)` returns what
    `run_int(graph, feeds, ...)` returns. Like `refq.Plan` (which it holds), it is a snapshot:
    the graph is validated and its parameters copied when it is built. What each node's kernel
    derives from its parameters (checked parameters, weight operands, requantization constants)
    is kept across runs, per shape of the feeds (a kernel checks its input shape once per memo)."""

    def __init__(self, graph):
        self.graph, self.plan = graph, Plan(graph, np.float64)
        self._memos: dict = {}      # {feed shapes after the batch: {node: memo}}
        self._boundary = None       # (int_quantize nodes per input, int_dequantize per output)
        self._twins: dict = {}      # {skipped nodes: (refq.twin.Twin, ())}

    def run(self, feeds, trace: bool = False, batch_size: int | None = None,
            quiet: bool = True, *, codes: bool = False):
        """(outputs, stats) as `run_int`. A large run without trace or batch_size computes the
        first half of its batch in a twin process (`refq.twin`; the same values and statistics)."""
        graph, skip, out_encs, in_encs = self.graph, frozenset(), {}, {}
        if codes:
            if self._boundary is None:
                self._boundary = _boundary_nodes(graph)
            quant, deq = self._boundary
            in_encs, out_encs = _input_qs(graph, quant), _output_qs(graph, deq)
            feeds = _check_codes(graph, feeds, in_encs)
            skip = frozenset({n.name for nodes in quant.values() for n in nodes} |
                             {n.name for n in deq.values()})
        feeds = feeds_dict(graph, feeds)
        n = next(iter(feeds.values())).shape[0] if feeds else 0
        b = None if trace or batch_size else self.plan.twin_share(n)
        if b is not None:
            out, stats = self._run_halves(feeds, b, skip, quiet)
        else:
            out, stats = self._run_here(feeds, trace, batch_size, quiet, skip, None)
        for s in stats.values():
            s["headroom_bits"] = accumulator_headroom(s["max_abs_acc"], s["accumulator_bits"])
        if codes:
            for name, q in out_encs.items():
                out[name] = out[name].astype(NP_DTYPES[q.dtype])
            for name in in_encs:
                if name in out:
                    out[name] = out[name].astype(np.int64)
        return out, stats

    def _run_halves(self, feeds: dict, b: int, skip, quiet):
        """Images [0, b) in the twin (or here, when it gives no result) and [b, n) here, each on
        one thread; the outputs concatenated and the statistics merged."""
        names = list(feeds)

        def share(arrays):
            return self._run_here(dict(zip(names, arrays)), False, None, True, skip, 1)

        mate = twin.for_owner(self, skip, lambda: share,
                              shared_bytes=sum(v[:b].nbytes for v in feeds.values()))
        if mate is None or not mate.acquire():
            return self._run_here(feeds, False, None, quiet, skip, None)
        first = [feeds[k][:b] for k in names]
        (out, stats), (out2, stats2) = twin.alongside(
            mate, first, (), lambda: share(first),
            lambda: self._run_here({k: v[b:] for k, v in feeds.items()}, False, None, quiet,
                                   skip, 1))
        for name, s2 in stats2.items():
            s = stats.setdefault(name, s2)
            s["max_abs_acc"] = max(s["max_abs_acc"], s2["max_abs_acc"])
            s["overflowed"] = s["overflowed"] or s2["overflowed"]
        return {k: np.concatenate([v, out2[k]], axis=0) for k, v in out.items()}, stats

    def _run_here(self, feeds: dict, trace, batch_size, quiet, skip, n_threads):
        """(outputs, stats without headroom) computed in this process, on n_threads threads (None:
        `refq.parallel.threads()`, or 1 with a trace)."""
        graph, stats, lock = self.graph, {}, threading.Lock()
        shapes = tuple(np.shape(feeds[s.name])[1:] if s.name in feeds else None
                       for s in graph.inputs)
        memos = self._memos.setdefault(shapes, {})

        def call(node, op, xs, params):
            if node.name in skip:  # codes in (int_quantize) and out (int_dequantize) pass unchanged
                return np.asarray(xs[0]).astype(np.int64)
            narrow = None if trace else NARROW.get(node.op)
            attrs = self.plan.attrs[node.name]
            try:
                if narrow is not None:
                    y, m = narrow(xs, params, attrs, memos.setdefault(node.name, {}))
                    if m is None:
                        return y
                elif op.accumulate is None:
                    return op.forward(xs, params, attrs)
                else:
                    y, m = op.accumulate(xs, params, attrs)
            except FixedPointError as e:
                msg = str(e)
                if f"'{node.name}'" not in msg:
                    msg = f"node '{node.name}' ({node.op}): {msg}"
                raise FixedPointError(msg) from None
            bits = int(attrs.get("accumulator_bits", 32))
            policy = attrs.get("overflow", "error")
            exact = isinstance(m, AccExtremes)
            lo, hi = (m.lo, m.hi) if exact else (-int(m), int(m))
            m = int(m)
            over = lo < -(1 << (bits - 1)) or hi > (1 << (bits - 1)) - 1
            if over and policy == "error" and exact:  # the kernel raises first; a safety net
                raise FixedPointError(f"node '{node.name}' ({node.op}): accumulator range "
                                      f"[{lo}, {hi}] does not fit {bits} bits (overflow policy "
                                      "'error')")
            with lock:
                s = stats.setdefault(node.name, {"op": node.op, "max_abs_acc": 0,
                                                 "accumulator_bits": bits,
                                                 "overflow_policy": policy, "overflowed": False})
                s["max_abs_acc"] = max(s["max_abs_acc"], m)
                s["overflowed"] = s["overflowed"] or over
            return y

        if n_threads is None:
            n_threads = 1 if trace else threads()
        out = self.plan.run(feeds, trace, batch_size, quiet, call=call, threads=n_threads)
        return out, stats


def faithful_graph(sim, like=None):
    """The integer-faithful simulation of `sim`: `lower(sim, reference_profile(like))`, with
    `like`'s int16 kernel family (`lower_16x8`), so that a 16x8 layer of `like` has its
    faithful counterpart: the same node with requant "float_rne" (exact requantization)."""
    from .lower_16x8 import int16_family
    from .lowering import lower

    family = int16_family(get_profile(like)) if like is not None else None
    return lower(sim, reference_profile(like), int16_kernels=family)


def run_faithful(sim, feeds, trace: bool = False, batch_size: int | None = None,
                 quiet: bool = True, like=None):
    """`run_int(faithful_graph(sim, like), feeds, ...)`."""
    return run_int(faithful_graph(sim, like), feeds, trace=trace, batch_size=batch_size,
                   quiet=quiet)
