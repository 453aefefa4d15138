"""A QuantSim -> a QDQ ONNX model (NCHW) that onnxruntime loads: `export_qdq(sim, path)`.

What is written (ONNX opset 17, or 21 when a 16-bit, 4-bit-weight or blocked encoding is
present):
- every graph input of rank 4 as NCHW [N, C, H, W] (a free batch is the dimension "N");
- every refq node as the ONNX operator of the same definition, in NCHW (conv weights OHWI ->
  OIHW, depthwise [C·m, kh, kw, 1] -> [C·m, 1, kh, kw] with group = C; dense -> Gemm with
  transB = 1; NHWC axes of concat and softmax mapped to NCHW; refq's NHWC flatten and reshape
  wrapped in Transposes; "same" padding as explicit pads where H and W are known, else
  auto_pad SAME_UPPER);
- every enabled activation quantizer as QuantizeLinear -> DequantizeLinear on its tensor (the
  DQ output is named `<tensor>/dq`; readers and graph outputs take it), every input quantizer
  as such a pair on its one edge (`<tensor>/<node>:input<k>/dq`); the output of a
  grid-preserving op (max pooling, padding, reshapes; `Traits.grid_preserving`) without a
  quantizer of its own, whose input is quantized, gets a pair with its input's encoding: its
  values already lie on that grid, so the pair changes nothing, and onnxruntime's QDQ fusion
  sees quantized inputs everywhere (the import drops such pairs again);
- every enabled weight quantizer as its integer codes q = quantize(w) (the simulation's own
  numerics, so (q − zp)·s is bit for bit the simulation's weight) stored as int8 (symmetric
  grids) or uint8 (asymmetric), 4-bit weights as int4 / uint4 (opset 21), with scale, zero
  point and axis 0 for per-channel encodings,
  followed by DequantizeLinear; a blocked weight encoding (per output channel and block of B
  input channels) as DequantizeLinear with `block_size` B and `axis` the input-channel axis of
  the ONNX weight (1 of OIHW and of Gemm's [out, in]), its scale and zero point of the weight's
  rank with n_blocks on that axis and the block's value repeated over kh and kw (opset 21);
- a bias of a layer whose weight and input (directly or through such a pair) are quantized as
  int32 codes
  round_half_even(b / (s_x·s_w)) with scale fl32(s_x·s_w) (per channel), zero point 0: what
  onnxruntime's QDQ fusion expects. A code beyond the int32 range is a QuantError naming the
  node and channel. Other biases stay float, as do those of layers with blocked weights (a
  block's own s_w leaves no single bias scale per output channel).
Encodings map exactly: scale float32, zero point on the grid's integer type ([0, 255] uint8,
[−128, 127] int8, 16-bit alike). Strict symmetric activation grids [−127, 127] and other
bitwidths have no ONNX type and are refused (QuantError). Batch norms must be folded first
(`refq quantize` folds them). The file is written atomically.
"""
from __future__ import annotations

import numpy as np

from ..atomic import atomic_path
from ..errors import QuantError
from ..layers import ops_with
from ..quant.fakequant import quantize

__all__ = ["export_qdq"]

_TYPES = {(0, 255): np.uint8, (-128, 127): np.int8, (-127, 127): np.int8,
          (0, 65535): np.uint16, (-32768, 32767): np.int16, (-32767, 32767): np.int16}
_INT4 = ((0, 15), (-8, 7), (-7, 7))     # weight grids stored as uint4 / int4 (opset 21)
_INT32 = 2 ** 31 - 1
_NCHW_AXIS = {1: 2, 2: 3, 3: 1}
_GRID = ops_with("grid_preserving")


class _Writer:
    """The ONNX nodes and initializers of one export, and what each refq tensor is read as."""

    def __init__(self, onnx, sim):
        self.onnx, self.sim, self.h = onnx, sim, onnx.helper
        self.nodes, self.inits = [], []
        self.read = {}          # refq tensor -> ONNX name its readers take
        self.shapes = {}
        self.opset = 17
        tq = sim.tensor_quantizers()
        self.act = {t: sim.encodings[q] for t, q in tq.items() if self._on(q)}
        self.inp = {k: sim.encodings[q] for k, q in sim.input_quantizers().items() if self._on(q)}
        self.par = {(q.node, q.param): sim.encodings[q.name] for q in sim.quantizers.values()
                    if q.kind == "param" and self._on(q.name)}
        self.grid = dict(self.act)   # tensor -> the encoding whose grid its values lie on

    def _on(self, name):
        enc = self.sim.encodings.get(name)
        return self.sim.enabled.get(name, False) and enc is not None and not enc.is_pass_through

    def init(self, name, array):
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, outputs, name, **attrs):
        self.nodes.append(self.h.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0]

    def _dtype(self, enc, what, activation):
        key = (enc.qmin, enc.qmax)
        if not activation and key in _INT4:        # weights only, opset 21
            import ml_dtypes     # an onnx dependency: onnx stores INT4/UINT4 from its arrays

            self.opset = 21
            return ml_dtypes.uint4 if key == (0, 15) else ml_dtypes.int4
        if key not in _TYPES or (activation and key == (-127, 127)) or \
                (activation and key == (-32767, 32767)):
            raise QuantError(f"{what}: the {enc.bitwidth}-bit grid [{enc.qmin}, {enc.qmax}] has "
                             "no ONNX QuantizeLinear type (uint8, int8, uint16, int16; int4 and "
                             "uint4 for weights)")
        if enc.bitwidth == 16:
            self.opset = 21
        return _TYPES[key]

    def qdq(self, src, enc, base, what):
        """Q -> DQ of tensor `src` with `enc`; returns the DQ output `<base>/dq`."""
        dtype = self._dtype(enc, what, True)
        s = self.init(f"{base}/scale", np.float32(enc.scale))
        z = self.init(f"{base}/zero_point", np.asarray(enc.zero_point, dtype))
        q = self.node("QuantizeLinear", [src, s, z], [f"{base}/q"], f"{base}/quantize")
        return self.node("DequantizeLinear", [q, s, z], [f"{base}/dq"], f"{base}/dequantize")

    def weight(self, node, param, array_onnx, enc, what):
        """The ONNX name of a weight: codes + DQ when quantized, else float."""
        base = f"{node.name}/{param}"
        if enc is None:
            return self.init(base, array_onnx.astype(np.float32))
        dtype = self._dtype(enc, what, False)
        w = node.params[param]
        codes = quantize(w, enc, self.sim.numerics)
        perm = (0, 3, 1, 2) if w.ndim == 4 else tuple(range(w.ndim))
        self.init(f"{base}/quantized", codes.transpose(perm).astype(dtype))
        scale, zp, attrs = enc.scale, enc.zero_point, {} if enc.axis is None else {"axis": 0}
        if enc.is_blocked:
            scale, zp = (_full_rank(v, enc, w.shape, perm) for v in (enc.scale, enc.zero_point))
            attrs = {"axis": perm.index(enc.block_axis), "block_size": enc.block_size}
            self.opset = 21
        self.init(f"{base}/scale", np.asarray(scale, np.float32))
        self.init(f"{base}/zero_point", np.asarray(zp, dtype))
        return self.node("DequantizeLinear", [f"{base}/quantized", f"{base}/scale",
                                              f"{base}/zero_point"], [base],
                         f"{base}/dequantize", **attrs)

    def bias(self, node, s_in, w_enc):
        b = node.params.get("bias")
        if b is None:
            return []
        base = f"{node.name}/bias"
        if s_in is None or w_enc is None or w_enc.is_blocked:
            return [self.init(base, b.astype(np.float32))]
        scale = (np.float32(s_in.scale) * np.asarray(w_enc.scale, np.float32)).astype(np.float32)
        scale = np.broadcast_to(scale, b.shape).astype(np.float32)
        codes = np.rint(b.astype(np.float64) / scale.astype(np.float64))
        over = np.flatnonzero(np.abs(codes) > _INT32)
        if over.size:
            c = int(over[0])
            raise QuantError(f"node '{node.name}': bias[{c}] = {b[c]} is {codes[c]:.0f} steps of "
                             f"s_x·s_w = {scale[c]}; it does not fit int32")
        self.init(f"{base}/quantized", codes.astype(np.int32))
        self.init(f"{base}/scale", scale)
        self.init(f"{base}/zero_point", np.zeros(b.shape, np.int32))
        return [self.node("DequantizeLinear", [f"{base}/quantized", f"{base}/scale",
                                               f"{base}/zero_point"], [base],
                          f"{base}/dequantize", axis=0)]

    def window(self, attrs, in_shape, kernel, dil=(1, 1)):
        """ONNX pads/auto_pad attributes for refq padding."""
        padding, pads = attrs.get("padding", "valid"), attrs.get("pads", [0, 0, 0, 0])
        if padding == "explicit":
            t, b, l, r = pads
            return {"pads": [t, l, b, r]}
        if padding == "valid":
            return {"pads": [0, 0, 0, 0]}
        if None in in_shape[1:3]:
            return {"auto_pad": "SAME_UPPER"}
        out = []
        for n, k, s, d in zip(in_shape[1:3], kernel, attrs["strides"], dil):
            o = -(-n // s)
            total = max((o - 1) * s + (k - 1) * d + 1 - n, 0)
            out.append((total // 2, total - total // 2))
        return {"pads": [out[0][0], out[1][0], out[0][1], out[1][1]]}

    # ---- ops ---------------------------------------------------------------------------------
    def input_of(self, node, i):
        """The ONNX name node input i reads: the tensor's reader name, through an input
        quantizer's Q/DQ pair when it has one."""
        t = node.inputs[i]
        enc = self.inp.get((node.name, i))
        if enc is None:
            return self.read[t]
        return self.qdq(self.read[t], enc, f"{t}/{node.name}:input{i}",
                        f"input {i} of node '{node.name}'")

    def input_encoding(self, node):
        return self.inp.get((node.name, 0), self.grid.get(node.inputs[0]))

    def emit(self, node):
        op, a, name = node.op, node.attrs, node.name
        x_shape = self.shapes[node.inputs[0]]
        ins = [self.input_of(node, i) for i in range(len(node.inputs))]
        out = node.outputs[0]
        rank4 = len(x_shape) == 4
        if op == "conv2d":
            w_enc = self.par.get((name, "weight"))
            w = node.params["weight"]
            wn = self.weight(node, "weight", w.transpose(0, 3, 1, 2), w_enc,
                             f"weight of node '{name}'")
            bn = self.bias(node, self.input_encoding(node), w_enc)
            self.node("Conv", [ins[0], wn] + bn, [out], name, kernel_shape=list(w.shape[1:3]),
                      strides=list(a["strides"]), dilations=list(a["dilations"]),
                      group=int(a["groups"]), **self.window(a, x_shape, w.shape[1:3],
                                                             a["dilations"]))
        elif op == "dense":
            if len(x_shape) != 2:
                raise QuantError(f"node '{name}': a dense layer on a rank-{len(x_shape)} input "
                                 "has no NCHW Gemm form; export models whose dense layers read "
                                 "[N, K]")
            w_enc = self.par.get((name, "weight"))
            wn = self.weight(node, "weight", node.params["weight"], w_enc,
                             f"weight of node '{name}'")
            bn = self.bias(node, self.input_encoding(node), w_enc)
            self.node("Gemm", [ins[0], wn] + bn, [out], name, transB=1)
        elif op in ("max_pool2d", "avg_pool2d"):
            self.node("MaxPool" if op == "max_pool2d" else "AveragePool", ins, [out], name,
                      kernel_shape=list(a["pool_size"]), strides=list(a["strides"]),
                      **self.window(a, x_shape, a["pool_size"]))
        elif op == "global_avg_pool2d":
            if a["keepdims"]:
                self.node("GlobalAveragePool", ins, [out], name)
            else:
                pooled = self.node("GlobalAveragePool", ins, [f"{out}/pooled"], name)
                self.node("Flatten", [pooled], [out], f"{name}/flatten", axis=1)
        elif op in ("add", "multiply"):
            onnx_op = "Add" if op == "add" else "Mul"
            acc = ins[0]
            for k, other in enumerate(ins[1:], 1):
                last = k == len(ins) - 1
                acc = self.node(onnx_op, [acc, other], [out if last else f"{out}/partial{k}"],
                                name if last else f"{name}/partial{k}")
        elif op in ("relu", "sigmoid", "tanh", "hard_swish", "identity"):
            self.node({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh",
                       "hard_swish": "HardSwish", "identity": "Identity"}[op], ins, [out], name)
        elif op in ("relu6", "clip"):
            lo, hi = (0.0, 6.0) if op == "relu6" else (a["min"], a["max"])
            bounds = [self.init(f"{name}/min", np.float32(lo)),
                      self.init(f"{name}/max", np.float32(hi))]
            self.node("Clip", ins + bounds, [out], name)
        elif op == "leaky_relu":
            self.node("LeakyRelu", ins, [out], name, alpha=float(a["alpha"]))
        elif op == "hard_sigmoid":
            self.node("HardSigmoid", ins, [out], name, alpha=float(a["alpha"]),
                      beta=float(a["beta"]))
        elif op in ("softmax", "concat"):
            axis = a["axis"] % len(x_shape)
            axis = _NCHW_AXIS[axis] if rank4 else axis
            self.node("Softmax" if op == "softmax" else "Concat", ins, [out], name, axis=axis)
        elif op == "zero_pad2d":
            t, b, l, r = a["pads"]
            pads = self.init(f"{name}/pads", np.array([0, 0, t, l, 0, 0, b, r], np.int64))
            self.node("Pad", [ins[0], pads], [out], name)
        elif op in ("flatten", "reshape"):
            self.reshape(node, ins[0], x_shape)
        else:
            raise QuantError(f"node '{name}' ({op}): no QDQ ONNX export for this op"
                             + ("; fold batch norms first (`refq quantize` folds them unless "
                                "--no-fold-bn)" if op == "batch_norm" else ""))

    def reshape(self, node, x, x_shape):
        """refq's NHWC flatten/reshape: Transpose to NHWC, Reshape, Transpose back to NCHW."""
        name, out = node.name, node.outputs[0]
        out_rank = len(self.shapes[out])
        if len(x_shape) == 4:
            x = self.node("Transpose", [x], [f"{out}/nhwc_in"], f"{name}/to_nhwc",
                          perm=[0, 2, 3, 1])
        if node.op == "flatten":
            self.node("Flatten", [x], [out], name, axis=1)
            return
        shape = self.init(f"{name}/shape", np.array([0] + list(node.attrs["shape"]), np.int64))
        if out_rank == 4:
            y = self.node("Reshape", [x, shape], [f"{out}/nhwc"], name)
            self.node("Transpose", [y], [out], f"{name}/to_nchw", perm=[0, 3, 1, 2])
        else:
            self.node("Reshape", [x, shape], [out], name)


def _full_rank(values, enc, shape, perm):
    """A blocked encoding's (C, n_blocks) `values` in ONNX's blocked form: the rank of the weight
    (refq `shape`, then transposed by `perm`), n_blocks on the block axis, the channel's value on
    the channel axis and repeated along every other axis."""
    full = list(shape)
    full[enc.block_axis] = values.shape[1]
    b = [1] * len(shape)
    b[enc.axis], b[enc.block_axis] = values.shape
    v = values if enc.axis < enc.block_axis else values.T
    return np.broadcast_to(v.reshape(b), full).transpose(perm)


def _onnx_shape(shape):
    s = list(shape)
    if len(s) == 4:
        s = [s[0], s[3], s[1], s[2]]
    return ["N" if k == 0 and d is None else d for k, d in enumerate(s)]


def export_qdq(sim, path) -> dict:
    """Write QuantSim `sim` as a QDQ ONNX model at `path` (module docstring); return a report
    {"nodes", "quantize_linear", "opset"}."""
    from ..importers.onnx_load import onnx_module

    onnx = onnx_module()
    graph = sim.graph
    w = _Writer(onnx, sim)
    if not (w.act or w.inp or w.par):
        raise QuantError(f"model '{graph.name}': the simulation has no enabled quantizer with an "
                         "encoding; calibrate it first (`refq quantize --calib DATA`)")
    w.shapes = graph.validated_shapes()
    for spec in graph.inputs:
        w.read[spec.name] = spec.name
        if spec.name in w.act:
            w.read[spec.name] = w.qdq(spec.name, w.act[spec.name], spec.name,
                                      f"input '{spec.name}'")
    for node in graph.topological_order():
        w.emit(node)
        t = node.outputs[0]
        source = w.inp.get((node.name, 0), w.grid.get(node.inputs[0]))
        if t not in w.act and node.op in _GRID and len(node.inputs) == 1 and source is not None \
                and source.axis is None:
            w.grid[t] = source      # values on the input's grid: an exact Q/DQ, for ORT's fusion
        w.read[t] = t if t not in w.grid else w.qdq(t, w.grid[t], t, f"tensor '{t}'")
    h = onnx.helper
    inputs = [h.make_tensor_value_info(s.name, onnx.TensorProto.FLOAT, _onnx_shape(s.shape))
              for s in graph.inputs]
    outputs = [h.make_tensor_value_info(w.read[t], onnx.TensorProto.FLOAT,
                                        _onnx_shape(w.shapes[t])) for t in graph.outputs]
    g = h.make_graph(w.nodes, graph.name, inputs, outputs, w.inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", w.opset)],
                         producer_name="refq")
    model.ir_version = 8 if w.opset <= 17 else 10
    onnx.checker.check_model(model)
    with atomic_path(path) as tmp:
        onnx.save(model, tmp)
    return {"nodes": len(w.nodes), "opset": w.opset,
            "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in w.nodes)}
