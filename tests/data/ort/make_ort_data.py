"""Make the onnxruntime expected data of tests/test_profile_ort.py and tests/test_profile_onnx.py.

Runs in the onnxruntime virtual environment, never in refq's:
    python3 -m venv /tmp/ortenv && /tmp/ortenv/bin/pip install -q onnxruntime onnx numpy
    /tmp/ortenv/bin/python tests/data/ort/make_ort_data.py
(made with onnxruntime 1.32.0, onnx 1.23.2, numpy 2.4.6, x86-64 with AVX2/FMA/AVX-512BW).

Every case is one small ONNX model built with onnx.helper (NCHW, as ONNX is): QLinearConv or
QLinearMatMul nodes, and DequantizeLinear -> float op -> QuantizeLinear (QDQ) around every other
op. The model takes integer codes and returns integer codes. It is run once with onnxruntime's
graph optimizations on (ORT_ENABLE_ALL: QDQ groups become QLinearAdd, QLinearMul,
QLinearAveragePool, QLinearGlobalAveragePool, QLinearConcat, QLinearSigmoid, ...) and once with
them off (ORT_DISABLE_ALL: the float ops between DequantizeLinear and QuantizeLinear), on one
thread. Written per case: <case>.onnx and <case>.npz holding
    x_<input>   the input codes, NHWC (refq's layout; transposed to NCHW for onnxruntime)
    y_opt       onnxruntime's output codes with optimizations, NHWC
    y_noopt     the same without optimizations
    spec        JSON text: the refq `lower_from_params` spec of the same model (NHWC, OHWI)
    ops_opt     JSON text: the op types of the optimized graph (what onnxruntime fused)
    nchw        JSON text: {input or output name: True when transposed for onnxruntime}
    config      JSON text: session config entries used (qdqchain_int8_fused sets
                session.qdqisint8allowed, without which x86-64 onnxruntime leaves int8 QDQ
                Conv/MatMul unfused)
    t_opt_<t>, t_noopt_<t>   the whole-model cases (qdqchain_*) also output every quantized
                intermediate tensor; <t> is its refq name (ONNX conv1, conv2 = refq c1, c2)
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
F32 = np.float32
NP = {"int8": np.int8, "uint8": np.uint8}
TP = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8}
RANGE = {"int8": (-128, 127), "uint8": (0, 255)}


def enc(scale, zp, dtype):
    return {"scale": float(F32(scale)), "zero_point": int(zp), "dtype": dtype}


def codes(rng, shape, dtype, batch=6):
    """[batch, *shape] codes: uniform, qmin, qmax, alternating extremes, near-qmin, near-qmax."""
    lo, hi = RANGE[dtype]
    n = int(np.prod(shape))
    rows = [rng.integers(lo, hi + 1, n), np.full(n, lo), np.full(n, hi),
            np.where(np.arange(n) % 2 == 0, lo, hi), rng.integers(lo, lo + 8, n),
            rng.integers(hi - 7, hi + 1, n)]
    rows += [rng.integers(lo, hi + 1, n) for _ in range(batch - len(rows))]
    return np.stack(rows[:batch]).reshape((batch,) + tuple(shape)).astype(NP[dtype])


class Model:
    """An ONNX graph under construction (codes in, codes out) and its refq spec."""

    def __init__(self, name):
        self.name, self.nodes, self.inits, self.inputs, self.outputs = name, [], [], [], []
        self.layers, self.spec_inputs, self.feeds, self.nchw = [], [], {}, {}
        self.trace = {}     # {onnx tensor: refq tensor} of intermediate outputs
        self.k = 0

    def const(self, value, dtype=None):
        self.k += 1
        n = f"c{self.k}"
        a = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
        self.inits.append(numpy_helper.from_array(a, n))
        return n

    def qparams(self, e):
        return self.const(F32(e["scale"])), self.const(e["zero_point"], NP[e["dtype"]])

    def input(self, name, x_nhwc, e):
        """A graph input of codes x (NHWC); returns its dequantized float tensor name."""
        nchw = x_nhwc.ndim == 4
        shape = list(x_nhwc.shape)
        onnx_shape = [shape[0], shape[3], shape[1], shape[2]] if nchw else shape
        self.inputs.append(helper.make_tensor_value_info(name, TP[e["dtype"]], onnx_shape))
        self.feeds[name] = x_nhwc
        self.nchw[name] = nchw
        self.spec_inputs.append({"name": name, "shape": [None] + shape[1:], **e})
        return name

    def dq(self, t, e):
        s, z = self.qparams(e)
        out = f"{t}_dq{self.k}"
        self.nodes.append(helper.make_node("DequantizeLinear", [t, s, z], [out]))
        return out

    def q(self, t, e, out):
        s, z = self.qparams(e)
        self.nodes.append(helper.make_node("QuantizeLinear", [t, s, z], [out]))
        return out

    def output(self, name, e, rank):
        self.outputs.append(helper.make_tensor_value_info(name, TP[e["dtype"]], [None] * rank))
        self.nchw[name] = rank == 4

    def build(self):
        g = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21),
                                                helper.make_opsetid("com.microsoft", 1)])
        m.ir_version = 10
        onnx.checker.check_model(m)
        return m


def run(model, feeds, nchw, level, config=None):
    so = ort.SessionOptions()
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    so.graph_optimization_level = level
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    path = os.path.join(tempfile.mkdtemp(), "opt.onnx")
    so.optimized_model_filepath = path
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    f = {k: (np.ascontiguousarray(v.transpose(0, 3, 1, 2)) if nchw[k] else v)
         for k, v in feeds.items()}
    names = [o.name for o in sess.get_outputs()]
    out = dict(zip(names, sess.run(None, f)))
    out = {k: np.ascontiguousarray(v.transpose(0, 2, 3, 1) if nchw[k] else v)
           for k, v in out.items()}
    ops = [n.op_type for n in onnx.load(path).graph.node]
    return out, ops


def save(m: Model, spec_layers, out_name, config=None):
    model = m.build()
    opt, ops = run(model, m.feeds, m.nchw, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, config)
    noopt, _ = run(model, m.feeds, m.nchw, ort.GraphOptimizationLevel.ORT_DISABLE_ALL, config)
    y_opt, y_noopt = opt["y"], noopt["y"]
    traced = {}
    for onnx_name, refq_name in m.trace.items():
        traced[f"t_opt_{refq_name}"] = opt[onnx_name]
        traced[f"t_noopt_{refq_name}"] = noopt[onnx_name]
    spec = {"name": m.name, "inputs": m.spec_inputs, "layers": spec_layers,
            "outputs": [out_name]}
    onnx.save(model, os.path.join(HERE, f"{m.name}.onnx"))
    arrays = {f"x_{k}": v for k, v in m.feeds.items()}
    np.savez_compressed(os.path.join(HERE, f"{m.name}.npz"), y_opt=y_opt, y_noopt=y_noopt,
                        spec=np.array(json.dumps(spec)), ops_opt=np.array(json.dumps(ops)),
                        nchw=np.array(json.dumps(m.nchw)), config=np.array(json.dumps(config or {})),
                        **arrays, **traced)
    diff = int(np.count_nonzero(y_opt.astype(np.int64) != y_noopt.astype(np.int64)))
    print(f"{m.name}: ops {sorted(set(ops))}, optimized vs not: {diff} of {y_opt.size} differ")


# ---- cases -----------------------------------------------------------------------------------

def conv_case(name, rng, act, wdt, s_in, zp_in, s_w, zp_w, s_out, zp_out, *, k=3, cin=4, cout=6,
              hw=7, pads=1, stride=1, group=1, wrange=None, bias_range=2000):
    m = Model(name)
    e_in, e_out = enc(s_in, zp_in, act), enc(s_out, zp_out, act)
    x = codes(rng, (hw, hw, cin), act)
    m.input("x", x, e_in)
    lo, hi = wrange or RANGE[wdt]
    w = rng.integers(lo, hi + 1, (cout, cin // group, k, k)).astype(NP[wdt])
    w[0] = hi          # extreme channels: all max, all min
    w[1] = lo
    s_w = np.broadcast_to(np.asarray(s_w, dtype=F32), (cout,)).copy()
    bias = rng.integers(-bias_range, bias_range + 1, cout).astype(np.int32)
    xs, xz = m.qparams(e_in)
    ws = m.const(s_w if s_w.size > 1 and np.any(s_w != s_w[0]) else F32(s_w[0]))
    wz = m.const(np.full(cout, zp_w, NP[wdt]) if s_w.size > 1 and np.any(s_w != s_w[0])
                 else np.asarray(zp_w, NP[wdt]))
    ys, yz = m.qparams(e_out)
    m.nodes.append(helper.make_node(
        "QLinearConv", ["x", xs, xz, m.const(w), ws, wz, ys, yz, m.const(bias)], ["y"],
        kernel_shape=[k, k], pads=[pads] * 4, strides=[stride, stride], group=group))
    m.output("y", e_out, 4)
    layer = {"name": "y", "op": "conv2d", "weight": w.transpose(0, 2, 3, 1).tolist(),
             "weight_dtype": wdt, "weight_scale": [float(v) for v in s_w],
             "weight_zero_point": int(zp_w), "bias": bias.tolist(), "strides": [stride, stride],
             "padding": "explicit", "pads": [pads] * 4, "groups": group, "output": e_out}
    save(m, [layer], "y")


def matmul_case(name, rng, act, wdt, s_in, zp_in, s_w, zp_w, s_out, zp_out, *, k=24, units=8):
    m = Model(name)
    e_in, e_out = enc(s_in, zp_in, act), enc(s_out, zp_out, act)
    x = codes(rng, (k,), act, batch=12)
    m.input("x", x, e_in)
    lo, hi = RANGE[wdt]
    w = rng.integers(lo, hi + 1, (units, k)).astype(NP[wdt])        # refq [units, in]
    s_w = np.broadcast_to(np.asarray(s_w, dtype=F32), (units,)).copy()
    per = s_w.size > 1 and np.any(s_w != s_w[0])
    xs, xz = m.qparams(e_in)
    ys, yz = m.qparams(e_out)
    m.nodes.append(helper.make_node(
        "QLinearMatMul", ["x", xs, xz, m.const(np.ascontiguousarray(w.T)),
                          m.const(s_w if per else F32(s_w[0])),
                          m.const(np.full(units, zp_w, NP[wdt]) if per
                                  else np.asarray(zp_w, NP[wdt])), ys, yz], ["y"]))
    m.output("y", e_out, 2)
    layer = {"name": "y", "op": "dense", "weight": w.tolist(), "weight_dtype": wdt,
             "weight_scale": [float(v) for v in s_w], "weight_zero_point": int(zp_w),
             "output": e_out}
    save(m, [layer], "y")


def binary_case(name, rng, op, act, ea, eb, eo, shape_a, shape_b):
    m = Model(name)
    ea, eb, eo = (enc(*e, act) for e in (ea, eb, eo))
    a = codes(rng, shape_a, act)
    b = codes(rng, shape_b, act)
    m.input("a", a, ea)
    m.input("b", b, eb)
    y = f"{op.lower()}_f"
    m.nodes.append(helper.make_node(op, [m.dq("a", ea), m.dq("b", eb)], [y]))
    m.q(y, eo, "y")
    m.output("y", eo, 1 + len(shape_a))
    save(m, [{"name": "y", "op": {"Add": "add", "Mul": "multiply"}[op], "inputs": ["a", "b"],
              "output": eo}], "y")


def pairs_case(name, op, act, ea, eb, eo, per_span):
    """Every pair of codes (65536): a [1, 256, 256, 1] with b of the same shape (onnxruntime's
    general form), or a [1, 16, 16, 256] (every code once per channel) with b [1, 1, 1, 256] (one
    code per channel: one value per NCHW span, the IsScalarB form; per_span "a": the other way
    round, IsScalarA)."""
    m = Model(name)
    ea, eb, eo = (enc(*e, act) for e in (ea, eb, eo))
    lo = RANGE[act][0]
    v = np.arange(lo, lo + 256)
    if per_span:
        a = np.broadcast_to(v.reshape(1, 16, 16, 1), (1, 16, 16, 256))
        b = v.reshape(1, 1, 1, 256)
        if per_span == "a":
            a, b = b, a
    else:
        a, b = np.repeat(v, 256).reshape(1, 256, 256, 1), np.tile(v, 256).reshape(1, 256, 256, 1)
    m.input("a", np.ascontiguousarray(a).astype(NP[act]), ea)
    m.input("b", np.ascontiguousarray(b).astype(NP[act]), eb)
    m.nodes.append(helper.make_node(op, [m.dq("a", ea), m.dq("b", eb)], ["f"]))
    m.q("f", eo, "y")
    m.output("y", eo, 4)
    save(m, [{"name": "y", "op": {"Add": "add", "Mul": "multiply"}[op], "inputs": ["a", "b"],
              "output": eo}], "y")


def avgpool_case(name, rng, act, ei, eo, hw, k, s, p, c=5):
    m = Model(name)
    ei, eo = enc(*ei, act), enc(*eo, act)
    m.input("x", codes(rng, (hw, hw, c), act), ei)
    m.nodes.append(helper.make_node("AveragePool", [m.dq("x", ei)], ["p"], kernel_shape=[k, k],
                                    strides=[s, s], pads=[p] * 4, count_include_pad=0))
    m.q("p", eo, "y")
    m.output("y", eo, 4)
    save(m, [{"name": "y", "op": "avg_pool2d", "pool_size": [k, k], "strides": [s, s],
              "padding": "explicit", "pads": [p] * 4, "output": eo}], "y")


def gap_case(name, rng, act, ei, eo, hw, c=6):
    m = Model(name)
    ei, eo = enc(*ei, act), enc(*eo, act)
    m.input("x", codes(rng, (hw, hw, c), act), ei)
    m.nodes.append(helper.make_node("GlobalAveragePool", [m.dq("x", ei)], ["p"]))
    m.q("p", eo, "y")
    m.output("y", eo, 4)
    save(m, [{"name": "y", "op": "global_avg_pool2d", "keepdims": True, "output": eo}], "y")


def unary_case(name, rng, op, act, ei, eo, attrs=None, refq_op=None, refq_attrs=None):
    m = Model(name)
    ei, eo = enc(*ei, act), enc(*eo, act)
    lo, hi = RANGE[act]
    x = np.concatenate([np.arange(lo, hi + 1), np.arange(lo, hi + 1)[::-1]]).reshape(2, 256)
    m.input("x", x.astype(NP[act]), ei)
    m.nodes.append(helper.make_node(op, [m.dq("x", ei)], ["f"], **(attrs or {})))
    m.q("f", eo, "y")
    m.output("y", eo, 2)
    save(m, [{"name": "y", "op": refq_op, "output": eo, **(refq_attrs or {})}], "y")


def concat_case(name, rng, act, e1, e2, eo):
    m = Model(name)
    e1, e2, eo = (enc(*e, act) for e in (e1, e2, eo))
    m.input("a", codes(rng, (4, 4, 3), act), e1)
    m.input("b", codes(rng, (4, 4, 2), act), e2)
    m.nodes.append(helper.make_node("Concat", [m.dq("a", e1), m.dq("b", e2)], ["c"], axis=1))
    m.q("c", eo, "y")
    m.output("y", eo, 4)
    save(m, [{"name": "y", "op": "concat", "inputs": ["a", "b"], "axis": -1, "output": eo}], "y")


def qdq_conv(m, x_f, e_in, w, s_w, bias, e_out, relu, pads, name):
    """DequantizeLinear(int8 weight, per channel) -> Conv (+ DequantizeLinear(int32 bias), + Relu)
    -> QuantizeLinear: the QDQ form that onnxruntime fuses into QLinearConv."""
    wq = m.const(w)
    per = m.const(np.asarray(s_w, F32))
    wz = m.const(np.zeros(len(s_w), np.int8))
    wd = f"{name}_w"
    m.nodes.append(helper.make_node("DequantizeLinear", [wq, per, wz], [wd], axis=0))
    bd = f"{name}_b"
    bs = m.const((F32(e_in["scale"]) * np.asarray(s_w, F32)).astype(F32))
    m.nodes.append(helper.make_node("DequantizeLinear", [m.const(bias), bs,
                                                         m.const(np.zeros(len(s_w), np.int32))],
                                    [bd], axis=0))
    c = f"{name}_f"
    m.nodes.append(helper.make_node("Conv", [x_f, wd, bd], [c], pads=[pads] * 4,
                                    kernel_shape=list(w.shape[2:])))
    if relu:
        m.nodes.append(helper.make_node("Relu", [c], [c + "_relu"]))
        c = c + "_relu"
    return m.q(c, e_out, name)


def chain_case(name, rng, act, config=None):
    """A whole QDQ model: conv+relu, a 1x1 conv branch, Add, AveragePool, GlobalAveragePool,
    MatMul, every op between DequantizeLinear and QuantizeLinear (no QLinear nodes)."""
    lo = RANGE[act][0]
    z = 0 if act == "int8" else 128
    m = Model(name)
    e_x, e1 = enc(0.031, z + 5, act), enc(0.027, lo, act)
    e2, e3, e4 = enc(0.043, z - 7, act), enc(0.051, z + 3, act), enc(0.0213, z - 9, act)
    e5, e6 = enc(0.0188, z + 11, act), enc(0.094, z + 1, act)
    x = codes(rng, (8, 8, 3), act)
    m.input("x", x, e_x)
    w1 = rng.integers(-127, 128, (6, 3, 3, 3)).astype(np.int8)
    s1 = [0.0041, 0.0033, 0.0057, 0.0021, 0.0049, 0.0038]
    b1 = rng.integers(-3000, 3000, 6).astype(np.int32)
    y1 = qdq_conv(m, m.dq("x", e_x), e_x, w1, s1, b1, e1, True, 1, "conv1")
    w2 = rng.integers(-127, 128, (6, 6, 1, 1)).astype(np.int8)
    s2 = [0.0061, 0.0044, 0.0029, 0.0071, 0.0052, 0.0036]
    b2 = rng.integers(-2000, 2000, 6).astype(np.int32)
    y2 = qdq_conv(m, m.dq(y1, e1), e1, w2, s2, b2, e2, False, 0, "conv2")
    m.nodes.append(helper.make_node("Add", [m.dq(y1, e1), m.dq(y2, e2)], ["s_f"]))
    m.q("s_f", e3, "s")
    m.nodes.append(helper.make_node("AveragePool", [m.dq("s", e3)], ["p_f"], kernel_shape=[2, 2],
                                    strides=[2, 2]))
    m.q("p_f", e4, "p")
    m.nodes.append(helper.make_node("GlobalAveragePool", [m.dq("p", e4)], ["g_f"]))
    m.q("g_f", e5, "g")
    m.nodes.append(helper.make_node("Flatten", [m.dq("g", e5)], ["fl_f"]))
    m.q("fl_f", e5, "fl")
    w3 = rng.integers(-127, 128, (4, 6)).astype(np.int8)          # refq [units, in]
    s3 = F32(0.0063)
    wd = "fc_w"
    m.nodes.append(helper.make_node("DequantizeLinear", [m.const(np.ascontiguousarray(w3.T)),
                                                         m.const(s3), m.const(np.int8(0))], [wd]))
    m.nodes.append(helper.make_node("MatMul", [m.dq("fl", e5), wd], ["fc_f"]))
    m.q("fc_f", e6, "y")
    m.output("y", e6, 2)
    for onnx_name, refq_name, e, rank in (("conv1", "c1", e1, 4), ("conv2", "c2", e2, 4),
                                          ("s", "s", e3, 4), ("p", "p", e4, 4),
                                          ("g", "g", e5, 4)):
        m.output(onnx_name, e, rank)
        m.trace[onnx_name] = refq_name

    def conv(lname, inp, w, s, b, e, act_):
        return {"name": lname, "op": "conv2d", "inputs": [inp],
                "weight": w.transpose(0, 2, 3, 1).tolist(), "weight_scale": s,
                "bias": b.tolist(), "padding": "explicit", "pads": [w.shape[2] // 2] * 4,
                "activation": act_, "output": e}
    layers = [conv("c1", "x", w1, s1, b1, e1, "relu"), conv("c2", "c1", w2, s2, b2, e2, "none"),
              {"name": "s", "op": "add", "inputs": ["c1", "c2"], "output": e3},
              {"name": "p", "op": "avg_pool2d", "pool_size": [2, 2], "strides": [2, 2],
               "output": e4},
              {"name": "g", "op": "global_avg_pool2d", "output": e5},
              {"name": "y", "op": "dense", "weight": w3.tolist(), "weight_scale": float(s3),
               "output": e6}]
    save(m, layers, "y", config)


def main():
    rng = np.random.default_rng(20261202)
    # QLinearConv: per-tensor and per-channel weights, power-of-two scales (ties), both signs
    conv_case("conv_s8_ties", rng, "int8", "int8", 2 ** -4, 3, 2 ** -2, 0, 2 ** -3, -5, k=1,
              cin=2, pads=0, wrange=(-4, 4), bias_range=16)
    conv_case("conv_u8_ties", rng, "uint8", "uint8", 2 ** -4, 128, 2 ** -2, 128, 2 ** -3, 125,
              k=1, cin=2, pads=0, wrange=(124, 132), bias_range=16)
    conv_case("conv_u8s8_full", rng, "uint8", "int8", 0.02, 0, 0.004, 0, 0.5, 0)
    conv_case("conv_s8_perchannel", rng, "int8", "int8", 0.0213, -7,
              [0.0031, 0.0047, 0.00113, 0.0062, 0.0009, 0.0025], 0, 0.137, 4)
    conv_case("conv_u8u8", rng, "uint8", "uint8", 0.0175, 131, 0.0042, 121, 0.211, 127)
    conv_case("conv_u8s8_7bit", rng, "uint8", "int8", 2 ** -3, 128, 2 ** -5, 0, 2 ** -1, 131,
              wrange=(-64, 63))
    conv_case("conv_s8_depthwise", rng, "int8", "int8", 0.05, -128, [0.011, 0.02, 0.007, 0.016],
              0, 0.09, 127, cin=4, cout=4, group=4, stride=2)
    chain_case("qdqchain_int8", rng, "int8")
    chain_case("qdqchain_uint8", rng, "uint8")
    # onnxruntime on x86-64 fuses int8-activation QDQ Conv/MatMul only when asked to
    chain_case("qdqchain_int8_fused", rng, "int8", {"session.qdqisint8allowed": "1"})
    # QLinearMatMul
    matmul_case("matmul_s8", rng, "int8", "int8", 2 ** -4, -3, 2 ** -7, 0, 2 ** -2, 1)
    matmul_case("matmul_u8_perchannel", rng, "uint8", "uint8", 0.0191, 120,
                [0.003 + 0.0007 * i for i in range(8)], 128, 0.31, 125)
    # QDQ Add / Mul: ties (power-of-two ratios), general scales, extreme zero points, broadcasts
    for act in ("int8", "uint8"):
        z = 0 if act == "int8" else 128
        binary_case(f"add_{act}_ties", rng, "Add", act, (2 ** -3, z + 3), (2 ** -4, z - 5),
                    (2 ** -2, z + 1), (6, 6, 4), (6, 6, 4))
        binary_case(f"add_{act}_general", rng, "Add", act, (0.0317, z - 9), (0.0213, z + 17),
                    (0.0561, z + 2), (6, 6, 4), (6, 6, 4))
        binary_case(f"add_{act}_se_broadcast", rng, "Add", act, (0.05, z + 7), (0.021, z - 3),
                    (0.063, z), (5, 5, 4), (1, 1, 4))
        binary_case(f"add_{act}_saturate", rng, "Add", act, (0.2, z), (0.15, z + 40),
                    (0.02, z - 20), (4, 4, 3), (4, 4, 3))
        binary_case(f"mul_{act}_ties", rng, "Mul", act, (2 ** -3, z + 3), (2 ** -4, z - 5),
                    (2 ** -2, z + 1), (6, 6, 4), (6, 6, 4))
        binary_case(f"mul_{act}_general", rng, "Mul", act, (0.0317, z - 9), (0.0213, z + 17),
                    (0.0233, z + 2), (6, 6, 4), (6, 6, 4))
        binary_case(f"mul_{act}_se_broadcast", rng, "Mul", act, (0.05, z + 7), (0.0039, z - 128
                    if act == "int8" else 0), (0.021, z), (5, 5, 4), (1, 1, 4))
        lo = RANGE[act][0]
        # scales found by searching for pairs where fused and unfused float32 operations differ
        sc = {"int8": ((0.04430990666151047, -12), (0.0052369385957717896, -21),
                       (0.04195527732372284, 16)),
              "uint8": ((0.013933451846241951, 122), (0.021340712904930115, 119),
                        (0.0130732711404562, 117))}[act]
        pairs_case(f"add_{act}_all_pairs", "Add", act, *sc, per_span=False)
        pairs_case(f"add_{act}_all_pairs_per_span", "Add", act, *sc, per_span="b")
        pairs_case(f"add_{act}_all_pairs_per_span_a", "Add", act, *sc, per_span="a")
        pairs_case(f"mul_{act}_all_pairs", "Mul", act, (0.0625, z + 3), (0.0317, z - 7),
                   (0.0421, z + 5), per_span=False)
        avgpool_case(f"avgpool_{act}_4x4", rng, act, (0.0377, z - 3), (0.0117, z + 1), 8, 4, 1, 1,
                     c=8)
        avgpool_case(f"avgpool_{act}_2x2", rng, act, (0.0432, z + 5), (0.0432, z + 5), 6, 2, 2, 0)
        avgpool_case(f"avgpool_{act}_3x3_pad", rng, act, (0.037, z - 11), (0.029, z + 3), 7, 3,
                     1, 1)
        avgpool_case(f"avgpool_{act}_ties", rng, act, (2 ** -4, z + 1), (2 ** -4, z), 4, 2, 2, 0)
        avgpool_case(f"avgpool_{act}_whole", rng, act, (0.05, z + 9), (0.0301, z - 4), 5, 5, 1, 0)
        gap_case(f"gap_{act}", rng, act, (0.0475, z - 13), (0.0133, z + 6), 7)
        gap_case(f"gap_{act}_ties", rng, act, (2 ** -3, z + 2), (2 ** -3, z + 1), 2)
        concat_case(f"concat_{act}", rng, act, (0.031, z + 4), (0.017, lo + 10), (0.043, z - 2))
        unary_case(f"sigmoid_{act}", rng, "Sigmoid", act, (0.0625, z + 3), (1 / 256, lo),
                   refq_op="sigmoid")
        unary_case(f"requantize_{act}", rng, "Identity", act, (0.0373, z - 6), (0.0219, z + 9),
                   refq_op="identity")
        unary_case(f"leaky_relu_{act}", rng, "LeakyRelu", act, (0.041, z + 20), (0.039, z + 30),
                   {"alpha": 0.1}, refq_op="leaky_relu", refq_attrs={"alpha": 0.1})
        unary_case(f"tanh_{act}", rng, "Tanh", act, (0.031, z), (1 / 128, z), refq_op="tanh")
        unary_case(f"hardswish_{act}", rng, "HardSwish", act, (0.047, z - 30), (0.029, z - 60),
                   refq_op="hard_swish")
        unary_case(f"hardsigmoid_{act}", rng, "HardSigmoid", act, (0.043, z + 5), (1 / 255, lo),
                   {"alpha": 0.2, "beta": 0.5}, refq_op="hard_sigmoid",
                   refq_attrs={"alpha": 0.2, "beta": 0.5})
        unary_case(f"softmax_{act}", rng, "Softmax", act, (0.0625, z + 3), (1 / 256, lo),
                   {"axis": -1}, refq_op="softmax")


if __name__ == "__main__":
    main()
