"""Running integer graphs, and the integer-faithful simulation.

    y, stats = run_int(g_int, {"x": x})           # outputs (float) and accumulator statistics
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

from dataclasses import replace

from ..errors import FixedPointError
from ..runtime import run
from .kernels.common import AccExtremes
from .profiles import Profile, get_profile

__all__ = ["run_int", "faithful_graph", "run_faithful", "REFERENCE", "reference_profile",
           "accumulator_headroom"]

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
)


def reference_profile(like=None) -> Profile:
    """`REFERENCE`, or with the activation/weight dtypes of profile `like` (a name or Profile)."""
    if like is None:
        return REFERENCE
    like = like if isinstance(like, Profile) else get_profile(like)
    return replace(REFERENCE, activation_dtypes=like.activation_dtypes,
                   weight_dtypes=tuple(dict.fromkeys(like.weight_dtypes + ("int8",))))


def accumulator_headroom(max_abs: int, bits: int) -> int:
    """bits − 1 − ceil(log2(max_abs + 1)): free bits above the largest |accumulator|."""
    return int(bits) - 1 - int(max_abs).bit_length()


def run_int(graph, feeds, trace: bool = False, batch_size: int | None = None,
            quiet: bool = True):
    """Run integer graph `graph` on float `feeds`; return (outputs, or every tensor with
    trace=True, stats). stats = {node: {op, max_abs_acc, accumulator_bits, headroom_bits,
    overflow_policy, overflowed}} for every node whose op has an accumulator (`Op.accumulate`;
    `overflowed` and headroom as in the module docstring). FixedPointError raised by a kernel is
    re-raised naming the node."""
    stats: dict = {}

    def call(node, op, xs, params):
        try:
            if op.accumulate is None:
                return op.forward(xs, params, node.attrs)
            y, m = op.accumulate(xs, params, node.attrs)
        except FixedPointError as e:
            msg = str(e)
            if f"'{node.name}'" not in msg:
                msg = f"node '{node.name}' ({node.op}): {msg}"
            raise FixedPointError(msg) from None
        bits = int(node.attrs.get("accumulator_bits", 32))
        policy = node.attrs.get("overflow", "error")
        exact = isinstance(m, AccExtremes)
        lo, hi = (m.lo, m.hi) if exact else (-int(m), int(m))
        m = int(m)
        over = lo < -(1 << (bits - 1)) or hi > (1 << (bits - 1)) - 1
        if over and policy == "error" and exact:  # the kernel raises first; a safety net
            raise FixedPointError(f"node '{node.name}' ({node.op}): accumulator range "
                                  f"[{lo}, {hi}] does not fit {bits} bits (overflow policy "
                                  "'error')")
        s = stats.setdefault(node.name, {"op": node.op, "max_abs_acc": 0,
                                         "accumulator_bits": bits, "overflow_policy": policy,
                                         "overflowed": False})
        s["max_abs_acc"] = max(s["max_abs_acc"], m)
        s["overflowed"] = s["overflowed"] or over
        return y

    out = run(graph, feeds, trace=trace, batch_size=batch_size, quiet=quiet, call=call)
    for s in stats.values():
        s["headroom_bits"] = accumulator_headroom(s["max_abs_acc"], s["accumulator_bits"])
    return out, stats


def faithful_graph(sim, like=None):
    """The integer-faithful simulation of `sim`: `lower(sim, reference_profile(like))`."""
    from .lowering import lower

    return lower(sim, reference_profile(like))


def run_faithful(sim, feeds, trace: bool = False, batch_size: int | None = None,
                 quiet: bool = True, like=None):
    """`run_int(faithful_graph(sim, like), feeds, ...)`."""
    return run_int(faithful_graph(sim, like), feeds, trace=trace, batch_size=batch_size,
                   quiet=quiet)
