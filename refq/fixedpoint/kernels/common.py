"""Helpers shared by the integer kernels: attribute schemas, validation, requantization dispatch.

Conventions of every `int_*` kernel (the integer graph contract):
- inputs are int64 NumPy arrays whose values lie in their tensor's dtype (int8, uint8, int16 or
  int32); outputs are int64 arrays (floats only for `int_dequantize`). Every kernel also accepts
  inputs of a narrower integer dtype holding the same values (`int_input` converts them, or the
  kernel reads them as they are): `run_int` passes the outputs of the `NARROW` kernels, the same
  values in the dtype `act_dtype` of their [act_min, act_max];
- attributes arrive normalised (`Op.normalise_attrs`: defaults filled in), parameters as int64
  (integer parameters) or float64 (floating ones, e.g. `real_multiplier`);
- a kernel does not know its node's name: errors name the op, attribute, parameter, value and index,
  and the caller prefixes the node.

Validation (run by `infer_shape`, hence by `Graph.validate`, and again by every forward):
- ShapeError: inconsistent tensor shapes;
- ParamError: a missing parameter, a parameter of the wrong dtype kind or length (a per-channel
  multiplier must have one entry per output channel, or exactly one);
- FixedPointError: attribute or parameter values outside their domain: act_min > act_max, a zero
  point outside its dtype, a multiplier/shift outside its scheme's range, a bias outside int32.

No int64 overflow: activations and their zero points are bounded by 2^16 in magnitude
(|x − zp| < 2^17; int_requantize's int32 inputs give |x − zp| < 2^32), weights by 2^8, so an
int_add left shift (<= 30) stays below 2^47, an int_multiply product below 2^34, window and mean
sums below 2^17·(taps) (< 2^63 for any array that fits in memory), and the convolution bound is
checked per call (`conv.blas_is_exact`, `conv._check_operands`); the primitives prove their own
steps.

Accumulators: a kernel with an accumulator returns (y, `AccExtremes`) from `Op.accumulate`: the
largest |acc| as an int, with the signed extremes (min, max) attached. The accumulator policy and
the requantization's preconditions are decided from those bounds (`fit_accumulator`,
`finish_accumulator`, `requantize_bounded`), and fall back to the elementwise check (naming the
first offending value and its index) whenever the bounds do not prove them. `finish_fast` is
`finish_accumulator` evaluated block by block by a `Requantizer` (`requant_fast`) from bounds
that may be loose (the kernel's bound from its operands), the exact extremes taken per block.

Kept between calls (speed only): a `Requantizer` per set of requantization parameters
(`REQUANTIZERS`) and the lookup tables of int_add and int_requantize (`TABLES`), keyed by the
parameter values; and, within one `run_int`, per node, what a kernel derives from its parameters
(`memo`).

Zero-point domains: the output dtype of a kernel is taken to be the narrowest of int8, uint8,
int16, int32 whose range holds [act_min, act_max] (`output_dtype`); `output_zp` must lie in it.
Input zero points must lie in [−32768, 32767] (the union of the activation dtypes int8, uint8
and int16), except where an input may be an int32 tensor (`int_requantize`, `int_dequantize`:
int32).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ...errors import FixedPointError, ParamError
from ...layers.base import Attr
from ..requantize import FLOAT_SCHEMES, INTEGER_SCHEMES, REQUANT_SCHEMES, requantize_bounded
from ..rounding import INT32_MAX, INT32_MIN, OVERFLOW_POLICIES, _bounds, apply_overflow_policy
from .requant_fast import Requantizer

#: Value ranges of the integer tensor dtypes of the contract, narrowest first.
DTYPE_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
                "int32": (INT32_MIN, INT32_MAX)}
#: The range every activation zero point must lie in (int8 ∪ uint8 ∪ int16).
ACT_ZP_RANGE = (-32768, 32767)

#: (lo, hi) of the multiplier and of the shift per requantization scheme (`requantize`).
_MULT_RANGE = {"tflite_double": ((0, INT32_MAX), (-31, 30)),
               "single_round": ((0, INT32_MAX), (-31, 30)),
               "tosa_single": ((0, INT32_MAX), (2, 62)), "tosa_double": ((0, INT32_MAX), (2, 62)),
               "tosa16": ((0, (1 << 15) - 1), (2, 62))}

ACT_ATTRS = {"act_min": Attr("int"), "act_max": Attr("int")}
REQUANT_ATTRS = {"scheme": Attr("str", choices=REQUANT_SCHEMES),
                 "zp_before_round": Attr("bool", False)}
ACC_ATTRS = {"accumulator_bits": Attr("int", 32),
             "overflow": Attr("str", "error", choices=OVERFLOW_POLICIES)}
REQUANT_PARAMS = {"multiplier": False, "shift": False, "real_multiplier": False}


def int_values(x, what: str) -> np.ndarray:
    """x as an integer array of its own dtype; FixedPointError if it is not an integer array."""
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise FixedPointError(f"{what}: expected an integer tensor (int64 values of an integer "
                              f"dtype), got dtype {a.dtype}; quantize it first (int_quantize)")
    return a


def int_input(x, what: str) -> np.ndarray:
    """x as an int64 array; FixedPointError if it is not an integer array."""
    return int_values(x, what).astype(np.int64, copy=False)


def act_dtype(attrs) -> np.dtype:
    """The NumPy dtype of a kernel's output in `run_int`: `output_dtype` of [act_min, act_max]."""
    return np.dtype(output_dtype(attrs["act_min"], attrs["act_max"]))


def output_dtype(act_min: int, act_max: int) -> str:
    """The narrowest of int8, uint8, int16, int32 whose range holds [act_min, act_max]."""
    for name, (lo, hi) in DTYPE_RANGES.items():
        if lo <= act_min and act_max <= hi:
            return name
    raise FixedPointError(f"act_min {act_min} / act_max {act_max} do not fit int32")


def check_act(attrs, what: str, zp_name: str | None = "output_zp") -> str:
    """Check act_min <= act_max (both int32) and the output zero point; return the output dtype."""
    lo, hi = attrs["act_min"], attrs["act_max"]
    if lo > hi:
        raise FixedPointError(f"{what}: act_min {lo} > act_max {hi}; the clamp is empty")
    dtype = output_dtype(lo, hi)
    if zp_name is not None:
        check_zp(attrs[zp_name], f"{what}: {zp_name}", DTYPE_RANGES[dtype],
                 f"the output dtype {dtype} implied by [act_min, act_max] = [{lo}, {hi}]")
    return dtype


def check_zp(zp: int, what: str, bounds=ACT_ZP_RANGE, why: str = "an activation dtype") -> None:
    if not bounds[0] <= zp <= bounds[1]:
        raise FixedPointError(f"{what} = {zp} lies outside [{bounds[0]}, {bounds[1]}] ({why})")


def check_int_values(arr, lo: int, hi: int, what: str, err=ParamError) -> np.ndarray:
    """`arr` must be an integer array with values in [lo, hi]; returns it as int64."""
    checked_range(arr, lo, hi, what, err)
    return np.asarray(arr).astype(np.int64, copy=False)


def forward_of(accumulate):
    """An op's forward from its `accumulate(inputs, params, attrs) -> (y, extremes)`: y alone,
    with the accumulate function's docstring (the op's page)."""
    def forward(inputs, params, attrs):
        return accumulate(inputs, params, attrs)[0]
    forward.__doc__ = accumulate.__doc__
    return forward


def check_int16_layer(params, attrs, channels: int, what: str, bias_range, bias_type: str):
    """The checks every int8-weight, int16-activation contraction shares: int8 weights, a bias of
    `bias_type` within `bias_range` of shape [channels], and [act_min, act_max] a non-empty range
    within int16 (ParamError / FixedPointError)."""
    check_int_values(params["weight"], -128, 127, f"{what}: parameter 'weight' (int8)")
    if "bias" in params:
        b = check_int_values(params["bias"], bias_range[0], bias_range[1],
                             f"{what}: parameter 'bias' ({bias_type}; index = output channel)")
        if b.shape != (channels,):
            raise ParamError(f"{what}: parameter 'bias' has shape {list(b.shape)}, expected "
                             f"[{channels}]")
    lo, hi = attrs["act_min"], attrs["act_max"]
    if not -(1 << 15) <= lo <= hi <= (1 << 15) - 1:
        raise FixedPointError(f"{what}: [act_min, act_max] = [{lo}, {hi}] must be a non-empty "
                              "range within int16")


def checked_range(arr, lo: int, hi: int, what: str, err=ParamError) -> tuple[int, int]:
    """`check_int_values` returning (min, max) of arr ((0, 0) when empty), read in arr's own
    dtype; the elementwise search for the first offending value only when one is outside."""
    a = np.asarray(arr)
    if a.dtype.kind not in "iu":
        raise ParamError(f"{what} must be an integer array, got dtype {a.dtype}")
    bounds = _bounds(a)
    if bounds[0] < lo or bounds[1] > hi:
        a = a.astype(np.int64, copy=False)
        bad = (a < lo) | (a > hi)
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise err(f"{what} must lie in [{lo}, {hi}]; {int(bad.sum())} value(s) do not, the "
                  f"first is {int(a[idx])} at index {list(idx)}")
    return bounds


def check_channels(arr, channels, what: str) -> None:
    """A per-channel parameter: shape (channels,) or (1,) (a scalar is accepted as one value)."""
    shape = tuple(np.shape(arr))
    ok = shape in ((), (1,)) or (channels is not None and shape == (channels,)) or (
        channels is None and len(shape) == 1)
    if not ok:
        want = "[1]" if channels is None else f"[{channels}] (one per output channel) or [1]"
        raise ParamError(f"{what} has shape {list(shape)}, expected {want}")


def check_requant(params, attrs, channels, what: str) -> None:
    """The requantization parameters the scheme needs are present, of the right length and range.

    Integer schemes need `multiplier` and `shift` in the scheme's ranges (`real_multiplier` is
    ignored if present) and zp_before_round False; float schemes need `real_multiplier` (finite,
    >= 0; `multiplier`/`shift` are ignored if present).
    """
    scheme = attrs["scheme"]
    if scheme in INTEGER_SCHEMES:
        if attrs.get("zp_before_round", False):
            raise FixedPointError(f"{what}: zp_before_round applies to float schemes only, not "
                                  f"{scheme!r}")
        (mlo, mhi), (slo, shi) = _MULT_RANGE[scheme]
        for name, lo, hi in (("multiplier", mlo, mhi), ("shift", slo, shi)):
            if name not in params:
                raise ParamError(f"{what}: scheme {scheme!r} needs parameter '{name}'")
            check_channels(params[name], channels, f"{what}: parameter '{name}'")
            check_int_values(params[name], lo, hi, f"{what}: parameter '{name}' ({scheme})",
                             FixedPointError)
        if np.shape(params["multiplier"]) != np.shape(params["shift"]):
            raise ParamError(f"{what}: 'multiplier' {list(np.shape(params['multiplier']))} and "
                             f"'shift' {list(np.shape(params['shift']))} differ in shape")
    else:
        if "real_multiplier" not in params:
            raise ParamError(f"{what}: float scheme {scheme!r} needs parameter 'real_multiplier'")
        m = np.asarray(params["real_multiplier"])
        check_channels(m, channels, f"{what}: parameter 'real_multiplier'")
        if m.dtype.kind not in "fiu" or not np.all(np.isfinite(m)) or np.any(m < 0):
            raise FixedPointError(f"{what}: real_multiplier must be finite and >= 0, got {m!r}")


def _requant_args(params, attrs, prefix="", scheme=None):
    """(multiplier, shift, scheme) of the node: the real multiplier (float64) and shift None for
    float schemes, else the integer multiplier and shift (names prefixed by `prefix`)."""
    scheme = scheme or attrs["scheme"]
    if scheme in FLOAT_SCHEMES:
        return np.asarray(params[prefix + "real_multiplier"], dtype=np.float64), None, scheme
    return params[prefix + "multiplier"], params[prefix + "shift"], scheme


def requant(acc, params, attrs, *, zero_point: int, scheme: str | None = None, prefix: str = "",
            bounds=None, overwrite: bool = False):
    """`requantize(acc, ...)` with the node's scheme and parameters (names prefixed by `prefix`):
    integer schemes read `<prefix>multiplier`/`<prefix>shift`, float schemes
    `<prefix>real_multiplier`; clamp to [act_min, act_max]. `bounds`: (lo, hi) holding every
    value of acc when known; acc may be int32 or exact float32/float64; overwrite: acc is a temporary
    whose buffer may take the result (`requantize_bounded`)."""
    m, sh, scheme = _requant_args(params, attrs, prefix, scheme)
    return requantize_bounded(np.asarray(acc), bounds, m, sh, scheme, zero_point=zero_point,
                              act_min=attrs["act_min"], act_max=attrs["act_max"],
                              zp_before_round=bool(attrs.get("zp_before_round", False)),
                              overwrite=overwrite)


def check_acc_attrs(attrs, what: str) -> None:
    bits = attrs["accumulator_bits"]
    if not 16 <= bits <= 64:
        raise FixedPointError(f"{what}: accumulator_bits must lie in [16, 64], got {bits}")
    if attrs["overflow"] not in OVERFLOW_POLICIES:
        raise FixedPointError(f"{what}: unknown overflow policy {attrs['overflow']!r}; choose one "
                              f"of {OVERFLOW_POLICIES}")


class AccExtremes(int):
    """The largest |accumulator| as an int (what `Op.accumulate` reports) that also carries the
    signed extremes: `lo` = min and `hi` = max over the accumulator values it describes. `run_int`
    decides overflow from lo and hi (|acc| alone cannot tell −2^(N−1), which fits N bits, from
    +2^(N−1), which does not). `of(*bounds)` combines several (lo, hi) pairs."""

    lo: int
    hi: int

    def __new__(cls, lo: int = 0, hi: int = 0):
        self = super().__new__(cls, max(-int(lo), int(hi), 0))
        self.lo, self.hi = int(lo), int(hi)
        return self

    @classmethod
    def of(cls, *bounds) -> "AccExtremes":
        return cls(min(b[0] for b in bounds), max(b[1] for b in bounds))


def fit_accumulator(acc, attrs, bounds=None) -> np.ndarray:
    """The accumulator policy (`apply_overflow_policy`) with the node's accumulator_bits/overflow:
    "error" raises FixedPointError naming the first value that does not fit and its index. When
    `bounds` (lo, hi) holding every value lie in the accumulator range the policy is the identity
    and acc is returned as it is (int64, int32, or float32/float64 holding integers exactly)."""
    n = attrs["accumulator_bits"]
    if bounds is not None and -(1 << (n - 1)) <= bounds[0] and bounds[1] <= (1 << (n - 1)) - 1:
        return acc
    return apply_overflow_policy(np.asarray(acc).astype(np.int64, copy=False), n,
                                 attrs["overflow"], what="accumulator")


def finish_accumulator(acc, bounds, params, attrs):
    """(y, AccExtremes) for an exact accumulator `acc` (int64, int32, or float32/float64 holding
    integers exactly) whose exact (min, max) are `bounds`: y = requant(fit_accumulator(acc)) with the
    node's output zero point, the accumulator policy and the requantization each checked from
    the bounds. acc is the caller's temporary: y may be written into its buffer."""
    a = fit_accumulator(acc, attrs, bounds)
    y = requant(a, params, attrs, zero_point=attrs["output_zp"],
                bounds=bounds if a is acc else None, overwrite=True)
    return y, AccExtremes(*bounds)


def requantizer(params, attrs, channels: int, memo=None) -> Requantizer:
    """The node's `Requantizer` (its scheme, parameters, output zero point and clamp), from
    `REQUANTIZERS` (keyed by those values), and kept in `memo` when given."""
    rq = memo.get("requant") if memo is not None else None
    if rq is None:
        m, sh, scheme = _requant_args(params, attrs)
        kw = {"zero_point": attrs["output_zp"], "act_min": attrs["act_min"],
              "act_max": attrs["act_max"],
              "zp_before_round": bool(attrs.get("zp_before_round", False)), "channels": channels}
        rq = REQUANTIZERS.get("requantizer", {"m": m, "shift": sh, "scheme": scheme, **kw},
                              lambda: Requantizer(m, sh, scheme, **kw))
        if memo is not None:
            memo["requant"] = rq
    return rq


def finish_fast(acc, bounds, params, attrs, dtype=np.int64, exact: bool = False, memo=None):
    """`finish_accumulator` through `requantize_fast`: (y as an array of `dtype`, AccExtremes),
    the same values. `bounds` (lo, hi) hold every value of acc (the exact min and max when
    `exact`, else possibly loose, e.g. a bound from the operands); when they do not prove the
    accumulator policy the identity and the requantization's preconditions, the exact bounds are
    taken, and when those do not either, the plain `finish_accumulator`. memo: a dict kept for
    the node during a run, which keeps the `Requantizer` (None: none)."""
    n = attrs["accumulator_bits"]
    rq = requantizer(params, attrs, np.shape(acc)[-1] if np.ndim(acc) else 1, memo)
    while True:
        if -(1 << (n - 1)) <= bounds[0] and bounds[1] <= (1 << (n - 1)) - 1:
            r = rq(acc, bounds, dtype)
            if r is not None:
                return r[0], AccExtremes(*r[1])
        if exact:
            y, big = finish_accumulator(acc, bounds, params, attrs)
            return y.astype(dtype, copy=False), big
        bounds, exact = _bounds(acc), True


def _frozen(v):
    if isinstance(v, (list, tuple)):
        return tuple(_frozen(u) for u in v)
    if isinstance(v, (np.ndarray, np.generic)):
        return (v.dtype.str, v.shape, tuple(v.ravel().tolist()))
    return v


class _ValueCache:
    """Objects built from small parameter values, kept under those values (not the arrays'
    identity: dtypes, shapes and every value are the key), the least recently used dropped beyond
    `size` entries. What it keeps is read-only for its users."""

    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, kind: str, values: dict, build):
        key = (kind, tuple(sorted((k, _frozen(v)) for k, v in values.items())))
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        obj = build()
        with self.lock:
            self.items[key] = obj
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return obj


#: Lookup tables of int_add and int_requantize (`cached_table`; up to about 300 KiB each).
TABLES = _ValueCache(64)
#: `Requantizer`s of conv, dense and int_requantize nodes (`requantizer`; up to about 256 KiB).
REQUANTIZERS = _ValueCache(160)


def cached_table(kind: str, params, attrs, extra, build, memo=None):
    """build(), a lookup table of a kernel that is a function of the values of `params` (small
    arrays), `attrs` and `extra` alone, kept in `TABLES` under those values, and in `memo` (the
    node's dict during a run, or None) under `extra`."""
    key = ("table", extra)
    if memo is not None and key in memo:
        return memo[key]
    table = TABLES.get(kind, {"params": sorted(params.items()), "attrs": sorted(attrs.items()),
                              "extra": extra}, build)
    if memo is not None:
        memo[key] = table
    return table


def shifted_absmax(x, zp: int) -> int:
    """max |x − zp| of an int64 array as a Python int, from its min and max (0 when empty)."""
    if not np.size(x):
        return 0
    lo, hi = _bounds(x)
    return max(abs(lo - zp), abs(hi - zp))


def absmax(a) -> int:
    """max |a| of an int64 array as a Python int (0 for an empty array)."""
    return int(np.max(np.abs(a))) if np.size(a) else 0


def check_float_scales(params, names, what, mode):
    """The float32 scales `names` of a node in a float mode (`mode`, e.g. "qdq", "ort"): each
    present, one value, finite and > 0 in float32; ParamError / FixedPointError naming it."""
    for n in names:
        if n not in params:
            raise ParamError(f"{what}: mode {mode!r} needs parameter '{n}'")
        v = np.asarray(params[n], dtype=np.float64)
        if v.size != 1 or not np.isfinite(v).all() or not np.float32(v.ravel()[0]) > 0:
            raise FixedPointError(f"{what}: parameter '{n}' must be one finite scale > 0 in "
                                  f"float32, got {v.tolist()}")
