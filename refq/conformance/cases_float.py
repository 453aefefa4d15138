"""Float cases: every op of the float registry with attribute variants, in float64.

Inputs and weights are dyadic (k / 2^8 with |k| small), so every product and every sum of a
convolution, dense layer or pooling window is exact in float64: the result does not depend on the
summation order, hence not on the BLAS or CPU that generates it. Elementwise IEEE operations
(+, −, ×, /, sqrt) are correctly rounded everywhere. The transcendental ops (sigmoid, tanh,
softmax) are evaluated by `exact_call` in 60-digit decimal arithmetic and rounded once to float64
(correctly rounded values), because libm and SIMD exp/tanh differ by an ulp between machines;
refq's own float64 forward agrees with them within the case tolerance (checked at generation).
"""
from __future__ import annotations

import decimal

import numpy as np

from ..graph import Graph, Node, TensorSpec
from ..layers.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3
from ..runtime import run
from .case import Case, CaseData, allclose, register

TOLERANCE = allclose(1e-12, 1e-12)
TRANSCENDENTAL = ("sigmoid", "tanh", "softmax")


# ---- correctly rounded transcendental ops ------------------------------------------------------

def _dec(v: float) -> decimal.Decimal:
    return decimal.Decimal(float(v))


def _prec(d: decimal.Decimal) -> int:
    return 60 + (max(0, -d.adjusted()) if d else 0)


def _sigmoid1(v: float) -> float:
    d = _dec(v)
    with decimal.localcontext() as ctx:
        ctx.prec, ctx.rounding = 60, decimal.ROUND_HALF_EVEN
        return float(1 / (1 + (-d).exp()))


def _tanh1(v: float) -> float:
    d = _dec(v)
    if not d:
        return float(v)
    with decimal.localcontext() as ctx:
        ctx.prec, ctx.rounding = _prec(d), decimal.ROUND_HALF_EVEN
        e = (-2 * abs(d)).exp()
        t = (1 - e) / (1 + e)
        return float(t if d > 0 else -t)


def _softmax_rows(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of a 2-D float64 array, correctly rounded."""
    out = np.empty_like(x)
    with decimal.localcontext() as ctx:
        ctx.prec, ctx.rounding = 60, decimal.ROUND_HALF_EVEN
        for i, row in enumerate(x):
            m = _dec(max(row.tolist()))
            e = [(_dec(v) - m).exp() for v in row.tolist()]
            s = sum(e, decimal.Decimal(0))
            out[i] = [float(v / s) for v in e]
    return out


def exact_forward(op: str, x: np.ndarray, attrs: dict) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if op == "sigmoid":
        return np.array([_sigmoid1(v) for v in x.ravel().tolist()]).reshape(x.shape)
    if op == "tanh":
        return np.array([_tanh1(v) for v in x.ravel().tolist()]).reshape(x.shape)
    axis = attrs["axis"] % x.ndim
    moved = np.moveaxis(x, axis, -1)
    y = _softmax_rows(moved.reshape(-1, moved.shape[-1])).reshape(moved.shape)
    return np.ascontiguousarray(np.moveaxis(y, -1, axis))


def exact_call(node, op, xs, params):
    """A `refq.run` call hook: transcendental ops correctly rounded, every other op as refq."""
    if node.op in TRANSCENDENTAL:
        return exact_forward(node.op, xs[0], node.attrs)
    return op.forward(xs, params, node.attrs)


def run_float(graph: Graph, feeds: dict, check_refq: bool = True) -> tuple:
    """(outputs, trace of every node output) in float64 with `exact_call`; with check_refq, also
    run refq's plain forward and require it to agree within TOLERANCE."""
    values = run(graph, feeds, trace=True, dtype=np.float64, call=exact_call)
    if check_refq:
        plain = run(graph, feeds, trace=True, dtype=np.float64)
        for k, v in values.items():
            if not np.allclose(plain[k], v, atol=TOLERANCE["atol"], rtol=TOLERANCE["rtol"]):
                raise AssertionError(f"graph {graph.name}: refq's float64 '{k}' differs from the "
                                     "correctly rounded value beyond the tolerance")
    produced = [n.outputs[0] for n in graph.topological_order()]
    return {t: values[t] for t in graph.outputs}, {t: values[t] for t in produced}


# ---- data ------------------------------------------------------------------------------------

def dyadic(rng, shape, lim: float = 4.0, bits: int = 8) -> np.ndarray:
    """Uniform values k / 2^bits in [−lim, lim] (float64, exact products and sums)."""
    k = int(lim * (1 << bits))
    return rng.integers(-k, k + 1, size=shape).astype(np.float64) / (1 << bits)


def with_specials(x: np.ndarray, specials) -> np.ndarray:
    """x with its first len(specials) values (C order) replaced by `specials`."""
    flat = x.ravel().copy()
    s = np.asarray(specials, dtype=np.float64)[:flat.size]
    flat[:s.size] = s
    return flat.reshape(x.shape)


def _kinks(points, eps=2.0 ** -20):
    return [v for p in points for v in (p - eps, p, p + eps)]


# ---- registration ----------------------------------------------------------------------------

def float_case(cid, description, nodes, inputs, outputs=None, seed=0, layouts=None):
    """Register float case `cid`: `nodes` (list of Node, or a function rng -> list) over graph
    inputs {name: (shape without batch, function rng -> array)}; `layouts` ({tensor: layout})
    overrides the layout named by the rank (`refq.conformance.case.layout_of`)."""

    def build():
        rng = np.random.default_rng(seed)
        feeds = {k: fn(rng) for k, (_, fn) in inputs.items()}
        ns = nodes(rng) if callable(nodes) else nodes
        specs = [TensorSpec(k, (None,) + tuple(shape), "float64") for k, (shape, _) in
                 inputs.items()]
        outs = outputs or [ns[-1].outputs[0]]
        g = Graph(specs, outs, ns, name=cid).validate()
        y, tr = run_float(g, feeds)
        return CaseData(g, feeds, y, tr, layouts=dict(layouts or {}))

    register(Case(cid, "float", build, description, seed=seed, tolerance=TOLERANCE))


def _x(shape, lim=4.0, specials=None, n=2):
    def fn(rng):
        x = dyadic(rng, (n,) + tuple(shape), lim)
        return with_specials(x, specials) if specials is not None else x
    return (tuple(shape), fn)


def _p(rng, shape, lim=1.0):
    return dyadic(rng, shape, lim)


def conv(name, x, y, wshape, bias=True, **attrs):
    def make(rng):
        p = {"weight": _p(rng, wshape)}
        if bias:
            p["bias"] = _p(rng, (wshape[0],), 2.0)
        return Node(name, "conv2d", [x], [y], attrs, p)
    return make


def single(maker):
    return lambda rng: [maker(rng)]


def simple(op, attrs=None, x="x", y="y"):
    return single(lambda rng: Node(op, op, [x], [y], dict(attrs or {})))


_CONV = [
    ("basic", "3x3 valid, stride 1, bias", (6, 6, 3), (4, 3, 3, 3), {}),
    ("same_stride2", "3x3 'same' (TF rule: the extra pad row/column bottom/right), stride 2, odd "
     "input", (7, 7, 3), (5, 3, 3, 3), {"padding": "same", "strides": [2, 2]}),
    ("same_even_stride2", "4x4 kernel 'same' stride 2 on an even input", (8, 8, 2), (3, 4, 4, 2),
     {"padding": "same", "strides": [2, 2]}),
    ("strides_dilations", "3x3 valid, strides [2, 1], dilations [2, 2]", (9, 9, 2), (3, 3, 3, 2),
     {"strides": [2, 1], "dilations": [2, 2]}),
    ("same_dilated", "3x3 'same' with dilations [1, 2]", (6, 7, 2), (2, 3, 3, 2),
     {"padding": "same", "dilations": [1, 2]}),
    ("explicit_pads", "2x3 kernel, explicit pads [top 2, bottom 0, left 1, right 3]", (5, 5, 2),
     (3, 2, 3, 2), {"padding": "explicit", "pads": [2, 0, 1, 3]}),
    ("groups", "grouped convolution, groups 2 (4 -> 6 channels)", (5, 5, 4), (6, 3, 3, 2),
     {"groups": 2}),
    ("depthwise", "depthwise 3x3 'same' (groups = channels, multiplier 1)", (6, 6, 3),
     (3, 3, 3, 1), {"groups": 3, "padding": "same"}),
    ("depthwise_multiplier", "depthwise multiplier 2 (output channel o reads input o // 2), "
     "'same', stride 2", (7, 7, 3), (6, 3, 3, 1), {"groups": 3, "padding": "same",
                                                      "strides": [2, 2]}),
    ("pointwise", "1x1, stride 2", (5, 5, 4), (3, 1, 1, 4), {"strides": [2, 2]}),
    ("rowfold", "3x4 kernel over 32 channels with a tall output (refq's row-fold path)",
     (18, 5, 32), (2, 3, 4, 32), {}),
]
for _i, (_name, _desc, _xs, _ws, _attrs) in enumerate(_CONV):
    float_case(f"float.conv2d.{_name}", f"conv2d: {_desc}",
               single(conv("conv", "x", "y", _ws, **_attrs)), {"x": _x(_xs)}, seed=_i)
float_case("float.conv2d.no_bias", "conv2d without bias, 3x3 valid",
           single(conv("conv", "x", "y", (2, 3, 3, 2), bias=False)), {"x": _x((4, 4, 2))})

float_case("float.dense.basic", "dense 5 -> 3 with bias",
           single(lambda r: Node("fc", "dense", ["x"], ["y"], {},
                                 {"weight": _p(r, (3, 5)), "bias": _p(r, (3,))})),
           {"x": _x((5,), n=3)})
float_case("float.dense.rank3_no_bias", "dense on the last axis of a rank-3 input, no bias",
           single(lambda r: Node("fc", "dense", ["x"], ["y"], {}, {"weight": _p(r, (2, 4))})),
           {"x": _x((3, 4))})


def _bn(c, eps=None, x="x", y="y"):
    def make(rng):
        p = {"gamma": _p(rng, (c,), 2.0), "beta": _p(rng, (c,), 2.0),
             "mean": _p(rng, (c,), 1.0),
             "variance": np.abs(_p(rng, (c,), 2.0)) + 2.0 ** -6}
        p["variance"][0] = 0.0  # variance 0: only epsilon under the square root
        attrs = {} if eps is None else {"epsilon": eps}
        return Node("bn", "batch_norm", [x], [y], attrs, p)
    return make


float_case("float.batch_norm.nhwc", "batch_norm (inference) on NHWC, epsilon 1e-3 (Keras), one "
           "channel with variance 0", single(_bn(3, 1e-3)), {"x": _x((3, 3, 3))})
float_case("float.batch_norm.nc_eps1e-5", "batch_norm on [N, C], epsilon 1e-5 (PyTorch)",
           single(_bn(4, 1e-5)), {"x": _x((4,), n=3)})

_ACT = [  # (op, variant, attrs, values placed first in the input)
    ("relu", "kinks", {}, [0.0, -0.0] + _kinks([0.0])),
    ("relu6", "kinks", {}, _kinks([0.0, 6.0]) + [7.5, -7.5]),
    ("clip", "kinks", {"min": -1.5, "max": 2.25}, _kinks([-1.5, 2.25])),
    ("leaky_relu", "kinks", {}, _kinks([0.0]) + [-4.0]),
    ("leaky_relu", "alpha0.2", {"alpha": 0.2}, _kinks([0.0]) + [-4.0]),
    ("hard_sigmoid", "keras2", dict(HARD_SIGMOID_KERAS2), _kinks([-2.5, 2.5, 0.0])),
    ("hard_sigmoid", "keras3", dict(HARD_SIGMOID_KERAS3), _kinks([-3.0, 3.0, 0.0])),
    ("hard_swish", "kinks", {}, _kinks([-3.0, 3.0, 0.0])),
    ("sigmoid", "extremes", {}, [0.0, 2.0 ** -30, -2.0 ** -30, 36.0, -36.0, 745.0, -745.0, 40.0]),
    ("tanh", "extremes", {}, [0.0, 2.0 ** -30, -2.0 ** -30, 19.0, -19.0, 400.0, -400.0, 0.5]),
]
for _op, _v, _attrs, _spec in _ACT:
    _how = "".join(f" {k}={v!r}" for k, v in _attrs.items())
    float_case(f"float.{_op}.{_v}", f"{_op}{_how} at its kinks or extremes (exact "
               "points, ±2^-20, tiny and saturating values) and on uniform data",
               simple(_op, _attrs), {"x": _x((4, 8), lim=8.0, specials=_spec)}, seed=3)

float_case("float.softmax.last_axis", "softmax over the last axis with ordinary logits",
           simple("softmax"), {"x": _x((6,), n=3)})
float_case("float.softmax.large_logits", "softmax with logits of magnitude up to 1000 (exp "
           "overflows without the max subtraction), equal logits and one dominant logit",
           simple("softmax"),
           {"x": (((5,)), lambda r: np.array([[1000.0, 999.0, -1000.0, 0.0, 998.5],
                                               [-1000.0, -1000.0, -1000.0, -1000.0, -1000.0],
                                               [700.0, -700.0, 0.0, 0.0, 0.0],
                                               [0.0, 0.0, 0.0, 0.0, 40.0]]))})
float_case("float.softmax.axis1", "softmax over axis 1 of a rank-3 tensor", simple(
    "softmax", {"axis": 1}), {"x": _x((4, 3), lim=8.0)})

_POOL = [
    ("max_pool2d", "valid_2x2", {"pool_size": [2, 2], "strides": [2, 2]}, (6, 6, 2)),
    ("max_pool2d", "same_3x3_s2", {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
     (7, 6, 2)),
    ("max_pool2d", "explicit", {"pool_size": [3, 2], "strides": [1, 2], "padding": "explicit",
                                "pads": [1, 2, 0, 1]}, (5, 5, 2)),
    ("avg_pool2d", "valid_2x2", {"pool_size": [2, 2], "strides": [2, 2]}, (6, 6, 2)),
    ("avg_pool2d", "same_3x3_s2", {"pool_size": [3, 3], "strides": [2, 2], "padding": "same"},
     (7, 6, 2)),
    ("avg_pool2d", "explicit", {"pool_size": [3, 2], "strides": [1, 2], "padding": "explicit",
                                "pads": [1, 2, 0, 1]}, (5, 5, 2)),
]
for _op, _name, _attrs, _xs in _POOL:
    _how = ", ".join(f"{k} {v}" for k, v in _attrs.items())
    float_case(f"float.{_op}.{_name}", f"{_op} {_how} (padding never counts: max ignores it, "
               "avg divides by the number of valid taps)", simple(_op, _attrs),
               {"x": _x(_xs)})
# an all-negative input: max pooling must not pick a padded zero
float_case("float.max_pool2d.same_negative", "max_pool2d 'same' on an all-negative input "
           "(padding is −inf, never 0)", simple("max_pool2d", {"pool_size": [3, 3],
                                                               "strides": [2, 2],
                                                               "padding": "same"}),
           {"x": ((5, 5, 2), lambda r: -1.0 - np.abs(dyadic(r, (2, 5, 5, 2))))})
float_case("float.global_avg_pool2d.basic", "global_avg_pool2d", simple("global_avg_pool2d"),
           {"x": _x((5, 3, 4))})
float_case("float.global_avg_pool2d.keepdims", "global_avg_pool2d keepdims=True -> [N,1,1,C]",
           simple("global_avg_pool2d", {"keepdims": True}), {"x": _x((3, 3, 2))})

float_case("float.add.two", "add of two tensors", single(
    lambda r: Node("add", "add", ["a", "b"], ["y"])), {"a": _x((3, 3, 2)), "b": _x((3, 3, 2))})
float_case("float.add.three_broadcast", "add of three tensors with broadcasting [N,H,W,C] + "
           "[N,1,1,C] + [N,H,1,1]", single(lambda r: Node("add", "add", ["a", "b", "c"], ["y"])),
           {"a": _x((3, 4, 2)), "b": _x((1, 1, 2)), "c": _x((3, 1, 1))})
float_case("float.multiply.se_broadcast", "multiply [N,H,W,C] by [N,1,1,C] (squeeze-excitation)",
           single(lambda r: Node("mul", "multiply", ["a", "b"], ["y"])),
           {"a": _x((3, 3, 4)), "b": _x((1, 1, 4), lim=1.0)})
float_case("float.multiply.three", "multiply of three tensors", single(
    lambda r: Node("mul", "multiply", ["a", "b", "c"], ["y"])),
    {"a": _x((4,)), "b": _x((4,)), "c": _x((4,))})

float_case("float.concat.channels", "concat of three tensors on the channel axis", single(
    lambda r: Node("cat", "concat", ["a", "b", "c"], ["y"])),
    {"a": _x((2, 2, 1)), "b": _x((2, 2, 3)), "c": _x((2, 2, 2))})
float_case("float.concat.axis1", "concat on axis 1 (height)", single(
    lambda r: Node("cat", "concat", ["a", "b"], ["y"], {"axis": 1})),
    {"a": _x((1, 3, 2)), "b": _x((2, 3, 2))})
float_case("float.flatten.nhwc", "flatten of NHWC in C order (Keras channels_last)",
           simple("flatten"), {"x": _x((2, 3, 2))})
float_case("float.reshape.minus_one", "reshape to [-1, 4] (one free size)",
           simple("reshape", {"shape": [-1, 4]}), {"x": _x((2, 3, 2))})
float_case("float.zero_pad2d.asymmetric", "zero_pad2d [top 1, bottom 2, left 0, right 3]",
           simple("zero_pad2d", {"pads": [1, 2, 0, 3]}), {"x": _x((2, 3, 2))})
float_case("float.identity.basic", "identity (dropout at inference)", simple("identity"),
           {"x": _x((3,))})


def _dyadic_bn(rng):
    """batch_norm whose scale gamma/sqrt(var + eps) is dyadic (var + eps = 1, 4, 1/4, 16), so
    that the layers after it still sum exactly."""
    eps = 2.0 ** -4
    p = {"gamma": _p(rng, (4,), 2.0), "beta": _p(rng, (4,), 2.0), "mean": _p(rng, (4,), 1.0),
         "variance": np.array([1.0, 4.0, 0.25, 16.0]) - eps}
    return Node("bn", "batch_norm", ["c1"], ["bn"], {"epsilon": eps}, p)


def _block(rng):
    return [
        conv("c1", "x", "c1", (4, 3, 3, 3), padding="same")(rng),
        _dyadic_bn(rng),
        Node("act", "relu6", ["bn"], ["act"]),
        conv("c2", "act", "c2", (4, 1, 1, 4))(rng),
        Node("res", "add", ["c2", "act"], ["res"]),
        Node("gap", "global_avg_pool2d", ["res"], ["gap"]),
        Node("fc", "dense", ["gap"], ["logits"], {},
             {"weight": _p(rng, (3, 4)), "bias": _p(rng, (3,))}),
        Node("sm", "softmax", ["logits"], ["probs"]),
    ]


float_case("float.graph.residual_block", "a small network: conv 'same' -> batch_norm -> relu6 -> "
           "1x1 conv -> residual add -> global average -> dense -> softmax, with the trace of "
           "every layer (values stay dyadic up to the softmax, so every sum is exact)", _block,
           {"x": _x((4, 4, 3))}, seed=11)
