"""int_add: integer addition of two tensors with different encodings, and its byte-pair table.
Sections (§n) refer to ../shared/reference/fixedpoint.md."""
from __future__ import annotations

import numpy as np

from ...errors import FixedPointError, ParamError
from ...layers.base import Attr, Op
from ...layers.elementwise import broadcast_shape
from ..multiplier import round_half_away_float
from ..requantize import FLOAT_SCHEMES, INTEGER_SCHEMES, REQUANT_SCHEMES, requantize_bounded
from ..rounding import INT32_MAX, INT32_MIN, _bounds
from .common import (ACC_ATTRS, ACT_ATTRS, ACT_ZP_RANGE, AccExtremes, act_dtype, cached_table,
                     check_acc_attrs, check_act, check_requant, check_zp, fit_accumulator,
                     forward_of, int_input, int_values)
from .qdq import dequantize32, f32, fma32
from .requant_fast import BLOCK

ADD_MODES = ("tflite", "tosa", "float", "qdq", "ort")
_SCALE_PARAMS = ("a_scale", "b_scale", "out_scale")
_ADD_INT_PARAMS = ("a_multiplier", "a_shift", "b_multiplier", "b_shift", "out_multiplier",
                   "out_shift")
_FLOAT_ROUNDING = {"float_rne": ("float64", "half_even"), "float32_rne": ("float32", "half_even"),
                   "float_half_away": ("float64", "half_away")}


def _add_shape(in_shapes, attrs, params):
    out = broadcast_shape(in_shapes)
    what = "int_add"
    for name in ("a_zp", "b_zp"):
        check_zp(attrs[name], f"{what}: {name}", ACT_ZP_RANGE)
    check_act(attrs, what)
    check_acc_attrs(attrs, what)
    if not 0 <= attrs["left_shift"] <= 30:
        raise FixedPointError(f"{what}: left_shift must lie in [0, 30], got {attrs['left_shift']}")
    if attrs["add"] in ("qdq", "ort"):
        names = _SCALE_PARAMS
    elif attrs["add"] == "float":
        if attrs["scheme"] not in FLOAT_SCHEMES:
            raise FixedPointError(f"{what}: add 'float' rounds by a float scheme "
                                  f"{FLOAT_SCHEMES}, got {attrs['scheme']!r}")
        names = ("a_real", "b_real")
    else:
        if attrs["scheme"] not in INTEGER_SCHEMES:
            raise FixedPointError(f"{what}: add {attrs['add']!r} needs an integer scheme "
                                  f"{INTEGER_SCHEMES}, got {attrs['scheme']!r}")
        names = _ADD_INT_PARAMS
        for p in ("a_", "b_", "out_"):
            sub = {k[len(p):]: v for k, v in params.items() if k.startswith(p)}
            check_requant(sub, {"scheme": attrs["scheme"]}, 1, f"{what} ({p}*)")
    for name in names:
        if name not in params:
            raise ParamError(f"{what}: add {attrs['add']!r} needs parameter '{name}'")
        if np.size(params[name]) != 1:
            raise ParamError(f"{what}: parameter '{name}' must hold one value, got shape "
                             f"{list(np.shape(params[name]))}")
    if attrs["add"] in ("float", "qdq", "ort"):
        r = np.asarray([np.asarray(params[n]).ravel()[0] for n in names], dtype=np.float64)
        if not np.all(np.isfinite(r)) or np.any(r < 0) or (
                attrs["add"] != "float" and np.any(np.float32(r) <= 0)):
            raise FixedPointError(f"{what}: {'/'.join(names)} must be finite and "
                                  f"{'>= 0' if attrs['add'] == 'float' else '> 0 in float32'}, "
                                  f"got {r}")
    return out



def _scalar(params, name, dtype=np.int64):
    return np.asarray(params[name], dtype=dtype).reshape(())


def _add_accumulate(inputs, params, attrs):
    """int_add — integer addition of two tensors with different encodings (broadcasting).

    Definition
        add "tflite" (and its alias "tosa"; fixedpoint.md §4.1, §4.3), with L = left_shift (20):
            a = (x_a − a_zp)·2^L,  b = (x_b − b_zp)·2^L                 (int32)
            a' = R(a; a_multiplier, a_shift),  b' = R(b; b_multiplier, b_shift)
            s = a' + b'                                                  (int32)
            y = clamp(R(s; out_multiplier, out_shift) + output_zp, act_min, act_max)
          where R is the scheme's `requantize` without zero point or clamp. The lowering derives
          (TFLite `PrepareGeneralSubOp`): twice_max = 2·max(s_a, s_b), real_a = s_a/twice_max,
          real_b = s_b/twice_max, real_out = twice_max/(2^L·s_out), each encoded for the scheme
          (QuantizeMultiplier for tflite_double/single_round; tosa_scale32 for tosa_double, which
          is the TF->TOSA legalizer's RESCALE chain RESCALE(<<L) -> RESCALE -> ADD -> RESCALE and
          bit-identical to TFLite, §4.3).
        add "float": y = clamp(round(v) + output_zp, act_min, act_max) with
            v = (x_a − a_zp)·a_real + (x_b − b_zp)·b_real
          (a_real = s_a/s_out, b_real = s_b/s_out) evaluated with the rounding of the float scheme:
          float_rne: float64, half to even; float32_rne: float32 operands and operations, half to
          even; float_half_away: float64, half away from zero.
        add "qdq" (the ONNX spec: DequantizeLinear -> float32 Add -> QuantizeLinear, §4.4, §8.1),
          with the float32 scales a_scale, b_scale, out_scale:
            v = fl32(fl32((x_a − a_zp)·s_a) + fl32((x_b − b_zp)·s_b))
            y = clamp(rint(fl32(v / s_out)) + output_zp, act_min, act_max)
        add "ort" (onnxruntime QLinearAdd on x86-64, MLAS `qladd_avx2.cpp`
          `MlasQLinearAddKernelAvx2Helper`), on the raw codes x_a, x_b (zero points folded into a
          constant), every operation float32, fma = one rounding (`qdq.fma32`):
            r_a = fl32(s_a / s_out), r_b = fl32(s_b / s_out)
            F = fl32(output_zp − fma(r_a, a_zp, fl32(r_b·b_zp)))
            v = fma(x_a, r_a, fma(x_b, r_b, F))
            y = clamp(rint(v), act_min, act_max)   (cvtps_epi32 half to even, then the saturating
                                                    packs to 16 and 8 bits)
          The source writes F = zp − (r_a·a_zp + r_b·b_zp), and, when one input holds one value
          per NCHW span, folds that value into F with a separate multiply and add; the shipped
          x86-64 build contracts these into fused multiply-adds, so that every broadcast gives
          the form above (measured: onnxruntime 1.32.0 agrees with it on all 65536 code pairs of
          tests/data/ort, same-shape and per-span broadcasts of either input, and differs from
          the unfused forms). The zero point is part of v, i.e. added before rounding, unlike
          QuantizeLinear.
    Integer semantics
        The accumulator policy (accumulator_bits, overflow; an addition to the contract, defaults
        32 / "error") applies to a, b and s, the int32 values of the C kernel: "wrap" is what C
        does, "error" raises naming the value and index, "saturate" clamps. For "float" it applies
        to round(v) (the C kernel's int32 cast; for "qdq"/"ort" to round(v) − output_zp).
        `accumulate` reports max(|a|, |b|, |s|) (float modes: max |round(v)|).
    Shapes
        x_a, x_b broadcast (same rank), y the broadcast shape; the six integer parameters
        (tflite/tosa), a_real, b_real (float) or a_scale, b_scale, out_scale (qdq, ort) hold one
        value each.
    Errors
        ShapeError when the shapes do not broadcast; ParamError for a missing parameter or one of
        more than one value; FixedPointError for an integer scheme with add "float" (or a float
        scheme with "tflite"/"tosa"), left_shift outside [0, 30], parameters outside the scheme's
        ranges, act_min > act_max, zero points outside their dtype, accumulator overflow under
        "error".
    """
    _add_shape([x.shape for x in inputs], attrs, params)
    xa = int_input(inputs[0], "int_add input a") - attrs["a_zp"]
    xb = int_input(inputs[1], "int_add input b") - attrs["b_zp"]
    y, _, bounds = _add_values(xa, xb, params, attrs)
    return y, AccExtremes.of(*bounds)


def _float_sum(xa, xb, params, attrs):
    """round(v) − output_zp of add "qdq"/"ort" (int64), from xa = x_a − a_zp, xb = x_b − b_zp."""
    sa, sb, so = (f32(params[n]) for n in _SCALE_PARAMS)
    if attrs["add"] == "qdq":
        v = dequantize32(xa, sa, 0) + dequantize32(xb, sb, 0)
        v /= so
        zp = 0
    else:
        za, zb, zp = attrs["a_zp"], attrs["b_zp"], attrs["output_zp"]
        ra, rb = sa / so, sb / so
        fixed = np.float32(zp) - fma32(ra, np.float32(za), rb * np.float32(zb))
        ua, ub = (xa + za).astype(np.float32), (xb + zb).astype(np.float32)
        v = fma32(ua, ra, fma32(ub, rb, fixed))
    if not np.all(np.isfinite(v)):
        raise FixedPointError(f"int_add: the float32 sum of add {attrs['add']!r} is not finite")
    return np.rint(np.clip(v, -2.0 ** 31, 2.0 ** 31)).astype(np.int64) - zp


def _add_values(xa, xb, params, attrs, keep_s: bool = False):
    """(y, s or None, [(min, max) of a, of b, of s] ([of s] for the float modes)) of int_add on the
    int64 arrays xa = x_a − a_zp, xb = x_b − b_zp (temporaries of the caller); s (a copy, before
    the accumulator policy) only with keep_s."""
    scheme = attrs["scheme"]
    if attrs["add"] in ("qdq", "ort"):
        s = _float_sum(xa, xb, params, attrs)
        bs = _bounds(s)
        y = np.clip(fit_accumulator(s, attrs, bs) + attrs["output_zp"], attrs["act_min"],
                    attrs["act_max"])
        return y, s if keep_s else None, [bs]
    if attrs["add"] == "float":
        precision, rounding = _FLOAT_ROUNDING[scheme]
        ra, rb = (_scalar(params, n, np.float64).astype(precision) for n in ("a_real", "b_real"))
        v = xa.astype(precision) * ra + xb.astype(precision) * rb
        r = np.rint(v) if rounding == "half_even" else round_half_away_float(v)
        if not np.all(np.isfinite(r)) or np.any(np.abs(r) > 2.0 ** 62):
            raise FixedPointError("int_add: the float sum is not finite or beyond 2^62")
        s = r.astype(np.int64)
        bs = _bounds(s)
        y = np.clip(fit_accumulator(s, attrs, bs) + attrs["output_zp"], attrs["act_min"],
                    attrs["act_max"])
        return y, s if keep_s else None, [bs]
    shift = attrs["left_shift"]
    xa <<= shift  # a, b: the int32 values of the C kernel (xa, xb are this kernel's temporaries)
    xb <<= shift
    ba, bb = _bounds(xa), _bounds(xb)
    a, b = fit_accumulator(xa, attrs, ba), fit_accumulator(xb, attrs, bb)
    full = dict(zero_point=0, act_min=INT32_MIN, act_max=INT32_MAX, overwrite=True)
    a2, b2 = (requantize_bounded(v, bv if v is x else None, _scalar(params, p + "_multiplier"),
                                 _scalar(params, p + "_shift"), scheme, **full)
              for v, x, bv, p in ((a, xa, ba, "a"), (b, xb, bb, "b")))
    s = np.add(a2, b2, out=a2 if a2.shape == np.broadcast_shapes(a2.shape, b2.shape) else None)
    bs = _bounds(s)
    kept = s.copy() if keep_s else None
    t = fit_accumulator(s, attrs, bs)
    y = requantize_bounded(t, bs if t is s else None, _scalar(params, "out_multiplier"),
                           _scalar(params, "out_shift"), scheme, zero_point=attrs["output_zp"],
                           act_min=attrs["act_min"], act_max=attrs["act_max"], overwrite=True)
    return y, kept, [ba, bb, bs]


class _PairTable:
    """int_add on every pair of byte-sized codes: y[256·u + v] and s[256·u + v] for the input
    values whose bit patterns are the bytes u, v (`_add_values` on the 65536 pairs: the values of
    the definition, elementwise), or ok False when the definition raises on some pair. For a y
    of more than one byte they are kept as the arrays `y` and `s` (`packed` None); for a
    byte-sized y as `packed` and `levels` alone (`y` and `s` None):

    `packed` holds both in one uint32 per pair, rank·256 + (y's
    bits as 0..255), where rank is the index of s in `levels`, the distinct values of s in
    increasing order (at most 65536, so packed < 2^24), so that one lookup gives both (speed
    only: one lookup, of 4 bytes, instead of two): y is the packed value modulo 256 (the cast to
    y's unsigned view), and the min (max) of s over a block is levels[min (max) >> 8], since
    (rank·256 + r) >> 8 = rank for 0 <= r < 256 and the packing is increasing in s."""

    def __init__(self, da, db, params, attrs, dtype):
        va, vb = (np.arange(256, dtype=np.uint8).view(d).astype(np.int64) for d in (da, db))
        xa, xb = np.repeat(va, 256) - attrs["a_zp"], np.tile(vb, 256) - attrs["b_zp"]
        try:
            y, s, _ = _add_values(xa, xb, params, attrs, keep_s=True)
        except FixedPointError:
            self.ok = False
            return
        self.ok, y = True, y.astype(dtype)
        if y.itemsize == 1:
            self.levels, rank = np.unique(s, return_inverse=True)
            self.packed = (rank.astype(np.uint32) << 8) | y.view(np.uint8)
            self.y = self.s = None
        else:
            small = s.size and INT32_MIN <= s.min() and s.max() <= INT32_MAX
            self.y, self.s = y, s.astype(np.int32) if small else s
            self.packed = self.levels = None


def add_narrow(inputs, params, attrs, memo=None, dtype=None):
    """(int_add's y as an array of `dtype`, AccExtremes): for two byte-sized inputs (int8, uint8)
    a lookup in the `_PairTable` of its parameters (`cached_table`), block by block:
    the same values as the definition, elementwise, and the same extremes (a and b from the
    inputs' min and max, a = (x_a − a_zp)·2^L being increasing in x_a; s from the table); else
    the plain path. dtype None: `act_dtype`."""
    xa, xb = (int_values(x, f"int_add input {k}") for x, k in zip(inputs, "ab"))
    if memo is None or "checked" not in memo:
        _add_shape([xa.shape, xb.shape], attrs, params)
        if memo is not None:
            memo["checked"] = True
    dtype = act_dtype(attrs) if dtype is None else dtype
    table = None
    if xa.itemsize == xb.itemsize == 1 and xa.size and xb.size:
        table = cached_table("int_add", params, attrs, (xa.dtype.str, xb.dtype.str,
                                                        np.dtype(dtype).str),
                             lambda: _PairTable(xa.dtype, xb.dtype, params, attrs, dtype), memo)
    if table is None or not table.ok:
        y, m = _add_accumulate(inputs, params, attrs)
        return y.astype(dtype, copy=False), m
    ua, ub = xa.view(np.uint8), xb.view(np.uint8)
    if ua.shape != ub.shape:
        ua, ub = np.broadcast_arrays(ua, ub)
        ua, ub = np.ascontiguousarray(ua), np.ascontiguousarray(ub)
    y = np.empty(ua.shape, dtype)
    fa, fb, fy = ua.reshape(-1), ub.reshape(-1), y.reshape(-1)
    packed = table.packed
    pair = np.empty(min(fa.size, BLOCK), np.uint16)
    s = np.empty(pair.size, table.s.dtype if packed is None else np.uint32)
    lo, hi = [], []
    for i in range(0, fa.size, BLOCK):
        n = min(BLOCK, fa.size - i)
        p, sb = pair[:n], s[:n]
        np.left_shift(fa[i:i + n], 8, out=p, dtype=np.uint16)
        p |= fb[i:i + n]   # every uint16 is an index of the tables: mode "clip" changes none
        if packed is None:
            np.take(table.y, p, out=fy[i:i + n], mode="clip")
            np.take(table.s, p, out=sb, mode="clip")
            lo.append(int(sb.min()))
            hi.append(int(sb.max()))
        else:
            np.take(packed, p, out=sb, mode="clip")
            np.copyto(fy[i:i + n].view(np.uint8), sb, casting="unsafe")   # modulo 256
            lo.append(int(table.levels[int(sb.min()) >> 8]))
            hi.append(int(table.levels[int(sb.max()) >> 8]))
    bounds = [(min(lo), max(hi))]
    if attrs["add"] in ("tflite", "tosa"):
        shift = attrs["left_shift"]
        bounds += [((int(x.min()) - attrs[zp]) << shift, (int(x.max()) - attrs[zp]) << shift)
                   for x, zp in ((xa, "a_zp"), (xb, "b_zp"))]
    return y, AccExtremes.of(*bounds)


_add_forward = forward_of(_add_accumulate)


OPS = [
    Op("int_add", _add_forward, _add_shape, num_inputs=2,
       attrs={"a_zp": Attr("int", 0), "b_zp": Attr("int", 0), "output_zp": Attr("int", 0),
              **ACT_ATTRS, "scheme": Attr("str", choices=REQUANT_SCHEMES),
              "add": Attr("str", choices=ADD_MODES), "left_shift": Attr("int", 20), **ACC_ATTRS},
       params={**{k: False for k in _ADD_INT_PARAMS}, "a_real": False, "b_real": False,
               **{k: False for k in _SCALE_PARAMS}},
       accumulate=_add_accumulate),
]

#: `run_int`'s kernel: (y in the narrowest dtype holding [act_min, act_max], AccExtremes).
NARROW = {"int_add": add_narrow}
