"""Lowering of the layers that compute on the integer grid: conv2d/dense, add/multiply, pooling
(global_avg_pool2d, avg_pool2d, max_pool2d) and data movement (zero_pad2d, concat, flatten, reshape,
identity, gather_channels, transpose). Each `lower_*(w, n)` lowers float node n in the walk w
(`lower_graph.Walk`) into integer nodes emitted through w.b (`lower_graph.Builder`), by the rules
of the `refq.fixedpoint.lowering` module docstring ("conv2d/dense", "Rescaling ops", the op
mapping); a fused activation (conv2d/dense/add/multiply + relu/relu6/clip) becomes the node's
clamp on the output grid (`lower_activations.act_range`).
"""
from __future__ import annotations

import numpy as np

from ..errors import FixedPointError
from . import lower_16x8, lower_tosa16
from .lower_activations import act_range
from .lower_encodings import where_of
from .kernels.pool_nd import GEOMETRY_KEYS
from .requantize import FLOAT_SCHEMES

__all__ = ["FAMILIES", "emit_weighted"]

_CONV_GEOMETRY = ("strides", "dilations", "padding", "pads", "groups")


def _fused(w, n, where):
    """(output tensor, its TensorQ, (act_min, act_max)) of node n with its fused activation."""
    kind, kattrs, t_out = w.src.acts.get(n.name, ("none", {}, n.outputs[0]))[:3]
    q_out = w.tq[t_out]
    return t_out, q_out, act_range(w.p, kind, kattrs, q_out, where)


# ---- accumulating layers ---------------------------------------------------------------------

def lower_conv(w, n):
    """conv2d/dense -> int_conv2d/int_dense: weight codes, optional int32 bias, per-channel
    requantization, the fused activation's clamp, the profile's accumulator width and policy."""
    x, tq_in = w.read(n, 0)
    weight = w.src.weight(n)
    bias = w.src.bias(n, tq_in, weight[2], lower_tosa16.wide_bias_bits(w, tq_in))
    geometry = {k: n.attrs[k] for k in _CONV_GEOMETRY} if n.op == "conv2d" else {}
    emit_weighted(w, n, "int_" + n.op, x, tq_in, weight, bias, geometry)


def emit_weighted(w, n, op, x, tq_in, weight, bias, geometry):
    """Emit integer node `op` (int_conv2d, int_dense, int_conv_transpose2d) for float node n
    reading integer tensor x (encoding tq_in): weight = (codes [O, ...], weight zero point (an
    int: the attribute weight_zp; an int array [O] from `weight_form`: the parameter weight_zp),
    s_w float32 [O], per_channel), bias int32 [O] or None, `geometry` the op's geometry attrs.
    M[o] = s_in·s_w[o]/s_out by the profile's scale math ("fc_per_tensor" for a per-tensor
    int_dense), the profile's scheme (fc_requant for int_dense), the fused activation's clamp.
    An int_conv2d / int_dense on int16 activations under the "tflite" int16 family is emitted as
    its 16x8 node instead (`lower_16x8.emit_16x8`; bias int64); under the "tosa" family every
    op here on int16 activations as its TOSA 16x8 node (`lower_tosa16.emit_tosa16`; bias int48),
    and an 8-bit-input layer with an int16 output requantizes by the legalizer's scale16
    RESCALE (`lower_tosa16.scale16_params`)."""
    codes, weight_zp, s_w, per_channel = weight
    t_out, tq_out, act = _fused(w, n, where_of(n))
    out = w.out_name(t_out)
    if op in ("int_conv2d", "int_dense") and lower_16x8.is_16x8(w, tq_in):
        return lower_16x8.emit_16x8(w, n, op, x, out, tq_in, tq_out, weight, bias, geometry, act)
    if lower_tosa16.applies(w, tq_in):
        return lower_tosa16.emit_tosa16(w, n, op, x, out, tq_in, tq_out, weight, bias, geometry,
                                        act)
    p, b = w.p, w.b
    fc = op == "int_dense"
    scheme = (p.fc_requant or p.requant) if fc else p.requant
    kind = "fc_per_tensor" if fc and not per_channel else "conv"
    where = f"node '{n.name}' ({n.op})"
    s_w = np.broadcast_to(np.asarray(s_w, dtype=np.float32), (codes.shape[0],))
    try:
        real = p.real_multiplier(tq_in.scale, s_w, tq_out.scale, kind=kind)
    except FixedPointError as e:
        raise FixedPointError(f"{where}: {e}") from None
    params = {"weight": codes}
    if np.ndim(weight_zp):
        params["weight_zp"] = np.asarray(weight_zp).astype(np.int32)
        weight_zp = 0
    if bias is not None:
        params["bias"] = bias
    requants = 1
    if lower_tosa16.scale16_output(w, n, tq_in, tq_out):
        scheme, rq, requants = lower_tosa16.scale16_params(p, real, per_channel, where)
        params.update(rq)
    else:
        params.update(b.requant_params(real, scheme, where))
    attrs = dict(geometry)
    attrs.update({"input_zp": tq_in.zero_point, "weight_zp": int(weight_zp),
                  "output_zp": tq_out.zero_point, "act_min": int(act[0]), "act_max": int(act[1]),
                  **b.scheme_attrs(scheme), "accumulator_bits": p.acc_bits,
                  "overflow": p.overflow})
    b.emit(n.name, op, [x], out, attrs, params, tq=tq_out, requants=requants)


# ---- add, multiply ---------------------------------------------------------------------------

def _add(b, name, a, c, out, tq_a, tq_b, tq_out, act, left_shift=None):
    """int_add by the profile's Add scheme ("tosa" is the TFLite formula with TOSA RESCALEs,
    fixedpoint.md §4.3; a float-requantizing profile uses "float"); left_shift: that of the
    "tflite"/"tosa" formula when it is not the profile's add_left_shift (TFLite's int16 Add:
    15, `lower_16x8.add_left_shift`)."""
    p = b.profile
    where = f"node '{name}' (add)"
    sa, sb, so = (np.float64(np.float32(t.scale)) for t in (tq_a, tq_b, tq_out))
    attrs = {"a_zp": tq_a.zero_point, "b_zp": tq_b.zero_point, "output_zp": tq_out.zero_point,
             "act_min": int(act[0]), "act_max": int(act[1]), "accumulator_bits": p.acc_bits,
             "overflow": p.overflow}
    if p.add in ("qdq", "ort"):
        params = {"a_scale": np.array([sa]), "b_scale": np.array([sb]), "out_scale": np.array([so])}
        attrs.update(scheme=b.float_scheme(), add=p.add)
        return b.emit(name, "int_add", [a, c], out, attrs, params, tq=tq_out, requants=1)
    if p.add in ("tflite", "tosa") and p.requant not in FLOAT_SCHEMES:
        ls = p.add_left_shift if left_shift is None else left_shift
        twice = 2.0 * max(sa, sb)
        params = {}
        for key, real in (("a", sa / twice), ("b", sb / twice),
                          ("out", twice / (float(1 << ls) * so))):
            r = b.requant_params(real, p.requant, where)
            params[f"{key}_multiplier"], params[f"{key}_shift"] = r["multiplier"], r["shift"]
        attrs.update(scheme=p.requant, add=p.add, left_shift=ls)
        return b.emit(name, "int_add", [a, c], out, attrs, params, tq=tq_out, requants=3)
    if p.add != "float":
        b.notes.append(f"{name}: add scheme {p.add!r} with float requantization "
                       f"{p.requant!r} is computed as 'float'")
    params = {"a_real": np.array([sa / so]), "b_real": np.array([sb / so])}
    attrs.update(scheme=b.float_scheme(), add="float")
    return b.emit(name, "int_add", [a, c], out, attrs, params, tq=tq_out, requants=1)


def _multiply(b, name, a, c, out, tq_a, tq_b, tq_out, act):
    """int_multiply by the profile's `mul`: "requant" (M = s_a·s_b/s_out by mul_scale_math, the
    profile's requant scheme), "qdq" (float32 DequantizeLinear -> Mul -> QuantizeLinear), "ort"
    (onnxruntime QLinearMul: scheme float32_rne, float32 M, zero point before rounding)."""
    p = b.profile
    where = f"node '{name}' (multiply)"
    attrs = {"a_zp": tq_a.zero_point, "b_zp": tq_b.zero_point, "output_zp": tq_out.zero_point,
             "act_min": int(act[0]), "act_max": int(act[1])}
    if p.mul == "qdq":
        attrs.update(scheme=b.float_scheme(), zp_before_round=False, mode="qdq")
        params = {"a_scale": np.array([np.float64(np.float32(tq_a.scale))]),
                  "b_scale": np.array([np.float64(np.float32(tq_b.scale))]),
                  "out_scale": np.array([np.float64(np.float32(tq_out.scale))])}
        return b.emit(name, "int_multiply", [a, c], out, attrs, params, tq=tq_out, requants=1)
    real = p.real_multiplier(tq_a.scale, tq_b.scale, tq_out.scale, kind="mul")
    if p.mul == "ort":
        attrs.update(scheme="float32_rne", zp_before_round=True)
        return b.emit(name, "int_multiply", [a, c], out, attrs,
                      b.requant_params(real, "float32_rne", where), tq=tq_out, requants=1)
    attrs.update(b.scheme_attrs(p.requant))
    return b.emit(name, "int_multiply", [a, c], out, attrs,
                  b.requant_params(real, p.requant, where), tq=tq_out, requants=1)


def lower_binary(w, n):
    """add -> int_add, multiply -> int_multiply (two inputs, with the fused activation)."""
    where = where_of(n)
    if len(n.inputs) != 2:
        raise FixedPointError(f"{where}: the integer {n.op} takes 2 inputs, got "
                              f"{len(n.inputs)}; split it into a chain of binary ops")
    (xa, qa), (xb, qb) = w.read(n, 0), w.read(n, 1)
    t_out, q_out, act = _fused(w, n, where)
    if n.op == "add":
        _add(w.b, n.name, xa, xb, w.out_name(t_out), qa, qb, q_out, act,
             lower_16x8.add_left_shift(w, qa, qb))
    else:
        _multiply(w.b, n.name, xa, xb, w.out_name(t_out), qa, qb, q_out, act)


# ---- pooling ---------------------------------------------------------------------------------

def lower_mean(w, n):
    """global_avg_pool2d -> int_mean over H, W by the profile's Mean scheme (H·W is needed by the
    "tosa" scheme's multiplier)."""
    x, tq_in = w.read(n, 0)
    h, wd = w.shapes[n.inputs[0]][1:3]
    count = h * wd if h is not None and wd is not None else None
    out, tq_out = w.out_name(n.outputs[0]), w.tq[n.outputs[0]]
    p, b = w.p, w.b
    where = f"node '{n.name}' (global_avg_pool2d)"
    s_in, s_out = np.float64(np.float32(tq_in.scale)), np.float64(np.float32(tq_out.scale))
    if p.mean in ("qdq", "ort"):
        scheme = b.float_scheme()
        params = {"in_scale": np.array([s_in]), "out_scale": np.array([s_out])}
    elif p.mean == "float":
        scheme = b.float_scheme()
        params = {"multiplier": np.zeros(1, np.int32), "shift": np.zeros(1, np.int32),
                  "real_multiplier": np.array([s_in / s_out])}
    elif p.mean == "tflite":
        scheme = p.requant
        params = b.requant_params(s_in / s_out, scheme, where)
    else:  # "tosa": REDUCE_SUM + RESCALE(s_in/(n·s_out)), single round (fixedpoint.md §5.3)
        if count is None:
            raise FixedPointError(f"{where}: the 'tosa' mean needs static H and W")
        scheme = "tosa_single"
        params = b.requant_params(s_in / (count * s_out), scheme, where)
    b.emit(n.name, "int_mean", [x], out, {
        "keepdims": bool(n.attrs["keepdims"]), "input_zp": tq_in.zero_point,
        "output_zp": tq_out.zero_point, "act_min": tq_out.qmin, "act_max": tq_out.qmax,
        "mean": p.mean, "scheme": scheme, "accumulator_bits": p.acc_bits,
        "overflow": p.overflow}, params, tq=tq_out, requants=1)


def _pool_rank(op) -> int:
    """The spatial rank of a pool op (max_pool1d -> 1, global_max_pool2d -> 2)."""
    return int(op.rstrip("d")[-1])


def check_pool_support(n, p):
    """FixedPointError naming the node, the attribute values and the profile when a pool uses
    geometry beyond plain 2-D pooling that the profile's kernels do not define
    (`Profile.max_pool_attributes` / `avg_pool_attributes`): lowering must not drop or
    reinterpret it."""
    a = n.attrs
    r = _pool_rank(n.op)
    used = {}
    if list(a.get("dilations", [1] * r)) != [1] * r:
        used["dilations"] = list(a["dilations"])
    for k in ("ceil_mode", "count_include_pad"):
        if a.get(k, False):
            used[k] = True
    if a.get("padding") == "same_lower":
        used["same_lower"] = "padding"
    if r != 2:
        used[f"{r}d"] = "rank"
    avg = n.op.startswith("avg_pool")
    allowed = p.avg_pool_attributes if avg else p.max_pool_attributes
    missing = {k: v for k, v in used.items() if k not in allowed}
    if missing:
        shown = {("padding" if v == "padding" else "spatial rank" if v == "rank" else k):
                 (k if v in ("padding", "rank") else v) for k, v in missing.items()}
        field = "avg_pool_attributes" if avg else "max_pool_attributes"
        raise FixedPointError(f"{where_of(n)}: {n.op} with {shown} has no integer lowering under "
                              f"profile '{p.name}', whose {'average' if avg else 'max'} pooling "
                              f"kernels define {list(allowed) or 'none of these'} beyond plain "
                              f"2-D pooling; choose a profile that defines them (`refq "
                              f"profiles`, field {field}; 'onnx' defines all) or change the "
                              "model")


def _pool_geometry(n):
    """The window attributes of pool node n that its integer op takes."""
    return {k: n.attrs[k] for k in GEOMETRY_KEYS if k in n.attrs}


def lower_avg_pool(w, n):
    """avg_pool{r}d -> int_avg_pool{r}d by the profile's AvgPool scheme with the node's window
    attributes (`check_pool_support`), with requantization parameters when the output encoding
    differs from the input's."""
    check_pool_support(n, w.p)
    x, tq_in = w.read(n, 0)
    attrs = _pool_geometry(n)
    out, tq_out = w.out_name(n.outputs[0]), w.tq[n.outputs[0]]
    p, b = w.p, w.b
    op = "int_" + n.op
    where = f"node '{n.name}' ({n.op})"
    attrs.update({"input_zp": tq_in.zero_point, "output_zp": tq_out.zero_point,
                  "act_min": tq_out.qmin, "act_max": tq_out.qmax, "avg": p.avgpool})
    params = {}
    if p.avgpool in ("qdq", "ort"):
        params = {"in_scale": np.array([np.float64(np.float32(tq_in.scale))]),
                  "out_scale": np.array([np.float64(np.float32(tq_out.scale))])}
        return b.emit(n.name, op, [x], out, attrs, params, tq=tq_out, requants=1)
    if (tq_in.scale, tq_in.zero_point) != (tq_out.scale, tq_out.zero_point):
        scheme = b.float_scheme() if p.avgpool == "float" else p.requant
        real = p.real_multiplier(tq_in.scale, 1.0, tq_out.scale)
        params = b.requant_params(real, scheme, where)
        attrs.update(b.scheme_attrs(scheme))
    b.emit(n.name, op, [x], out, attrs, params, tq=tq_out,
           requants=1 + bool(params and p.avgpool != "float"))


# ---- ops on the input's grid -----------------------------------------------------------------

def lower_grid_op(w, n):
    """max_pool{r}d -> int_max_pool{r}d (clamped to the grid; `check_pool_support`),
    global_max_pool2d -> int_max_pool2d over the whole image (static H, W) and a flatten unless
    keepdims (exact: a maximum of codes is the code of the maximum), zero_pad2d -> int_pad
    (value = the input zero point, the image of 0), flatten/reshape/identity/gather_channels/
    transpose unchanged (they move codes: exact under every profile); each
    produces its input's encoding and is followed by an int_requantize when the output's
    differs."""
    x, q_in = w.read(n, 0)
    b, a = w.b, n.attrs
    if n.op.startswith("max_pool"):
        check_pool_support(n, w.p)

        def emit(name, out, tq):
            attrs = _pool_geometry(n)
            attrs.update(act_min=tq.qmin, act_max=tq.qmax)
            return b.emit(name, "int_" + n.op, [x], out, attrs, tq=tq)
    elif n.op == "global_max_pool2d":
        h, wd = w.shapes[n.inputs[0]][1:3]
        if h is None or wd is None:
            raise FixedPointError(f"{where_of(n)}: the integer global max pool is int_max_pool2d "
                                  "over the whole image and needs static H and W; give the "
                                  "model input a fixed spatial size")

        def emit(name, out, tq):
            attrs = {"pool_size": [h, wd], "strides": [1, 1], "act_min": tq.qmin,
                     "act_max": tq.qmax}
            if a["keepdims"]:
                return b.emit(name, "int_max_pool2d", [x], out, attrs, tq=tq)
            mid = b.emit(name, "int_max_pool2d", [x], b.fresh(f"{out}:pooled"), attrs, tq=tq)
            return b.emit(b.fresh(f"{name}:flatten", "node"), "flatten", [mid], out, {}, tq=tq)
    elif n.op == "zero_pad2d":
        def emit(name, out, tq):
            return b.emit(name, "int_pad", [x], out,
                          {"pads": list(a["pads"]), "value": tq.zero_point}, tq=tq)
    else:
        def emit(name, out, tq):
            return b.emit(name, n.op, [x], out, dict(a), tq=tq)
    w.finish(n, q_in, emit)


def lower_concat(w, n):
    """concat -> int_concat, with an int_requantize on every input whose encoding differs from
    the output's."""
    b = w.b
    q_out = w.tq[n.outputs[0]]
    xs = []
    for i in range(len(n.inputs)):
        x, q = w.read(n, i)
        if q != q_out:
            x = b.requantize(b.fresh(f"{n.name}:requant{i}", "node"), x,
                             b.fresh(f"{n.name}:requant{i}"), q, q_out)
        xs.append(x)
    b.emit(n.name, "int_concat", xs, w.out_name(n.outputs[0]), {"axis": int(n.attrs["axis"])},
           tq=q_out)


#: The lowering function of each family of `Traits.lowering` this module lowers.
FAMILIES = {"conv": lower_conv, "binary": lower_binary, "mean": lower_mean,
            "avg_pool": lower_avg_pool, "concat": lower_concat, "grid": lower_grid_op}
