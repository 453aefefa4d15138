"""Spec tests of transpose, divide and pad (refq.layers.shape_ops, refq.layers.elementwise): the
forwards against naive loop transcriptions of their Definitions (Python floats, explicit index
loops), the VJPs against central finite differences (tests/vjp_check.py), every bad input, and the
integer lowering: transpose keeps codes and encoding under every profile (tolerance 0), divide and
pad are refused by name.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from refq.errors import FixedPointError, GraphError, ShapeError
from refq.fixedpoint import PROFILES
from refq.fixedpoint.lowering import lower, lower_from_params
from refq.fixedpoint.run import run_int
from refq.graph import Graph, Node, TensorSpec
from refq.layers import REGISTRY, get_op
from vjp_check import check_vjp

rng = np.random.default_rng(2026)


def fwd(name, inputs, attrs=None):
    op = get_op(name)
    a = op.normalise_attrs(dict(attrs or {}), f"test {name}")
    shape = op.infer_shape([x.shape for x in inputs], a, {})
    y = op.forward(list(inputs), {}, a)
    assert tuple(y.shape) == tuple(shape), (name, y.shape, shape)
    return y


# ---- naive references -----------------------------------------------------------------------
def naive_transpose(x, perm):
    """y[j_0, ..., j_{r−1}] = x[i] with i[perm[k]] = j[k] (y.shape[k] = x.shape[perm[k]])."""
    shape = [x.shape[p] for p in perm]
    y = np.zeros(shape)
    for j in itertools.product(*map(range, shape)):
        i = [0] * x.ndim
        for k, p in enumerate(perm):
            i[p] = j[k]
        y[j] = float(x[tuple(i)])
    return y


def ieee_div(a, b):
    """a / b of Python floats with IEEE 754's rules where Python raises: a / ±0 = ±inf (sign of
    a times sign of the zero), 0 / 0 and nan / 0 = nan."""
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def naive_divide(a, b):
    shape = np.broadcast_shapes(a.shape, b.shape)
    y = np.zeros(shape)
    for j in itertools.product(*map(range, shape)):
        ia = tuple(0 if a.shape[k] == 1 else j[k] for k in range(len(shape)))
        ib = tuple(0 if b.shape[k] == 1 else j[k] for k in range(len(shape)))
        y[j] = ieee_div(float(a[ia]), float(b[ib]))
    return y


def naive_pad(x, pads, value):
    """y[n, i_1 + b_1, ...] = x[n, i_1, ...], value elsewhere (pads [b_1, e_1, b_2, e_2, ...])."""
    sides = [(pads[2 * k], pads[2 * k + 1]) for k in range(x.ndim - 1)]
    shape = [x.shape[0]] + [d + b + e for d, (b, e) in zip(x.shape[1:], sides)]
    y = np.zeros(shape)
    for j in itertools.product(*map(range, shape)):
        i = [j[0]] + [jj - b for jj, (b, _) in zip(j[1:], sides)]
        inside = all(0 <= ii < d for ii, d in zip(i[1:], x.shape[1:]))
        y[j] = float(x[tuple(i)]) if inside else value
    return y


# ---- transpose ------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [2, 3, 4, 5])
def test_transpose_every_permutation_keeping_the_batch_axis(rank):
    x = rng.standard_normal((2, 3, 4, 2, 3)[:rank])
    for rest in itertools.permutations(range(1, rank)):
        perm = [0, *rest]
        y = fwd("transpose", [x], {"perm": perm})
        assert y.flags.c_contiguous
        np.testing.assert_array_equal(y, naive_transpose(x, perm))


def test_transpose_keeps_dtype_and_free_axes():
    x = rng.integers(-128, 128, (2, 3, 4)).astype(np.int8)
    y = fwd("transpose", [x], {"perm": [0, 2, 1]})
    assert y.dtype == np.int8 and np.array_equal(y, x.transpose(0, 2, 1))
    op = get_op("transpose")
    assert op.infer_shape([(None, None, 4)], {"perm": [0, 2, 1]}, {}) == (None, 4, None)


@pytest.mark.parametrize("perm,match", [
    ([1, 0, 2], "batch axis"), ([2, 1, 0], "batch axis"), ([0, 1], "not a permutation"),
    ([0, 1, 1], "not a permutation"), ([0, 1, 3], "not a permutation"),
    ([0, 1, 2, 3], "not a permutation")])
def test_transpose_bad_perm(perm, match):
    op = get_op("transpose")
    with pytest.raises(ShapeError, match=match):
        op.infer_shape([(2, 3, 4)], {"perm": perm}, {})
    with pytest.raises(ShapeError, match=match):
        op.forward([np.zeros((2, 3, 4))], {}, {"perm": perm})
    g = Graph([TensorSpec("x", (None, 3, 4))], ["y"], [Node("t", "transpose", ["x"], ["y"],
                                                            {"perm": perm})])
    with pytest.raises(ShapeError, match="node 't'"):
        g.validate()


def test_transpose_perm_is_required_and_non_negative():
    op = get_op("transpose")
    with pytest.raises(GraphError, match="perm"):
        op.normalise_attrs({}, "t")
    with pytest.raises(GraphError, match="minimum"):
        op.normalise_attrs({"perm": [0, -1, 1]}, "t")


@pytest.mark.parametrize("perm", [[0, 2, 1], [0, 3, 1, 2], [0, 2, 3, 1], [0, 1, 2]])
def test_transpose_vjp(perm):
    x = rng.standard_normal((2, 3, 4, 2)[:len(perm)])
    check_vjp("transpose", [x], attrs={"perm": perm})
    op = REGISTRY["transpose"]
    gy = rng.standard_normal([x.shape[p] for p in perm])
    (gx,), _ = op.vjp([x], {}, {"perm": perm}, None, gy)
    np.testing.assert_array_equal(gx, naive_transpose(gy, list(np.argsort(perm))))
    assert gx.flags.c_contiguous and not np.shares_memory(gx, gy)


# ---- divide ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sa,sb", [((2, 3, 4), (2, 3, 4)), ((2, 3, 4, 5), (2, 1, 1, 5)),
                                   ((2, 1, 4), (2, 3, 1)), ((2, 5), (1, 5)), ((1, 3), (2, 3))])
def test_divide_against_python_floats(sa, sb):
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    np.testing.assert_array_equal(fwd("divide", [a, b]), naive_divide(a, b))


def test_divide_by_zero_follows_ieee_without_warnings():
    a = np.array([[1.0, -1.0, 0.0, -0.0, np.nan, np.inf, 2.0, 1.0]])
    b = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.0, np.inf]])
    with np.errstate(all="raise"):
        y = fwd("divide", [a, b])
    want = naive_divide(a, b)
    np.testing.assert_array_equal(y, want)            # NaN == NaN for array_equal of floats
    assert list(np.signbit(y[0, :2])) == [False, True] and y[0, 6] == -np.inf


def test_divide_float32_stays_float32():
    a, b = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2))
    y = fwd("divide", [a, b])
    assert y.dtype == np.float32 and np.array_equal(y, a / b)


def test_divide_bad_inputs():
    op = get_op("divide")
    with pytest.raises(GraphError, match="takes 2 inputs"):
        op.check_arity(3, "node 'd'")
    with pytest.raises(ShapeError, match="do not broadcast"):
        op.infer_shape([(2, 3), (2, 4)], {}, {})
    with pytest.raises(ShapeError, match="different ranks"):
        op.infer_shape([(2, 3), (3,)], {}, {})


@pytest.mark.parametrize("sa,sb", [((2, 3, 4), (2, 3, 4)), ((2, 3, 4, 2), (2, 1, 1, 2)),
                                   ((2, 1, 4), (2, 3, 1))])
def test_divide_vjp(sa, sb):
    a = rng.standard_normal(sa)
    b = rng.uniform(0.5, 2.0, sb) * rng.choice([-1.0, 1.0], sb)   # away from the pole at 0
    check_vjp("divide", [a, b], samples=30)


def test_divide_vjp_closed_form_and_at_zero():
    a, b = np.array([[3.0, 1.0, 0.0]]), np.array([[2.0, 0.0, 0.0]])
    op = REGISTRY["divide"]
    with np.errstate(all="raise"):
        y = op.forward([a, b], {}, {})
        (ga, gb), _ = op.vjp([a, b], {}, {}, y, np.ones_like(y))
    np.testing.assert_array_equal(ga, [[0.5, np.inf, np.inf]])
    np.testing.assert_array_equal(gb, [[-0.75, -np.inf, np.nan]])


# ---- pad ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,pads,value", [
    ((2, 3, 4, 2), [0, 0, 1, 3, 0, 0], 1.2), ((2, 3, 4, 2), [1, 2, 0, 1, 2, 0], -0.5),
    ((2, 3), [2, 1], 0.0), ((1, 2, 3), [0, 0, 0, 0], 7.0),
    ((2, 2, 2, 2, 2), [1, 0, 0, 1, 1, 1, 0, 2], 3.0)])
def test_pad_against_loops(shape, pads, value):
    x = rng.standard_normal(shape)
    np.testing.assert_array_equal(fwd("pad", [x], {"pads": pads, "value": value}),
                                  naive_pad(x, pads, value))


def test_pad_with_zero_equals_zero_pad2d():
    x = rng.standard_normal((2, 3, 4, 2))
    np.testing.assert_array_equal(fwd("pad", [x], {"pads": [1, 2, 0, 3, 0, 0]}),
                                  fwd("zero_pad2d", [x], {"pads": [1, 2, 0, 3]}))


def test_pad_bad_inputs():
    op = get_op("pad")
    with pytest.raises(ShapeError, match="2 entries"):
        op.infer_shape([(2, 3, 4)], {"pads": [1, 1], "value": 0.0}, {})
    with pytest.raises(GraphError, match="minimum"):
        op.normalise_attrs({"pads": [0, -1]}, "p")
    with pytest.raises(GraphError, match="finite"):
        op.normalise_attrs({"pads": [0, 1], "value": float("inf")}, "p")
    assert op.infer_shape([(None, None, 4)], {"pads": [1, 1, 0, 2], "value": 0.0}, {}) == \
        (None, None, 6)


@pytest.mark.parametrize("shape,pads", [((2, 3, 4, 2), [1, 0, 2, 1, 0, 1]), ((2, 3), [2, 1])])
def test_pad_vjp(shape, pads):
    check_vjp("pad", [rng.standard_normal(shape)], attrs={"pads": pads, "value": 1.5})


# ---- integer lowering -----------------------------------------------------------------------
@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_transpose_lowers_to_a_code_transpose_under_every_profile(profile, dtype):
    """A transpose moves codes: the integer graph's output codes are the input codes transposed,
    in the input's dtype and encoding (tolerance 0)."""
    if dtype not in PROFILES[profile].activation_dtypes:
        pytest.skip(f"profile {profile} has no {dtype} activations")
    spec = {"inputs": [{"name": "x", "shape": [None, 3, 4, 2], "scale": 0.05, "zero_point": 3,
                        "dtype": dtype}],
            "layers": [{"name": "t", "op": "transpose", "perm": [0, 2, 3, 1]}]}
    g = lower_from_params(spec, profile)
    assert [n.op for n in g.nodes] == ["int_quantize", "transpose", "int_dequantize"]
    enc = g.meta["integer"]["tensors"]
    assert enc[g.nodes[1].outputs[0]] == enc[g.nodes[1].inputs[0]]
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (3, 3, 4, 2)).astype(dtype)
    y, _ = run_int(g, {"x": x}, codes=True)
    out = y[g.outputs[0]]
    assert out.dtype == np.dtype(dtype) and np.array_equal(out, naive_transpose(x, [0, 2, 3, 1]))


def _conv_then(node):
    r = np.random.default_rng(5)
    conv = Node("c", "conv2d", ["x"], ["c"], {}, {"weight": r.standard_normal((4, 3, 3, 3))})
    conv2 = Node("c2", "conv2d", ["x"], ["c2"], {}, {"weight": r.standard_normal((4, 3, 3, 3))})
    return Graph([TensorSpec("x", (None, 4, 5, 3))], [node.outputs[0]], [conv, conv2, node])


@pytest.mark.parametrize("node", [Node("d", "divide", ["c", "c2"], ["y"]),
                                  Node("p", "pad", ["c"], ["y"], {"pads": [1, 0, 0, 1, 0, 0],
                                                                   "value": 0.5})])
def test_divide_and_pad_have_no_integer_lowering(node):
    from refq.quant.quantsim import QuantSim
    x = np.random.default_rng(6).standard_normal((4, 4, 5, 3)).astype(np.float32)
    sim = QuantSim(_conv_then(node)).compute_encodings(x)
    with pytest.raises(FixedPointError, match=f"node '{node.name}' \\({node.op}\\): op "
                                              f"'{node.op}' has no integer lowering"):
        lower(sim, "onnx")


def test_transpose_in_a_quantsim_lowers_like_the_faithful_simulation():
    """conv2d -> transpose -> relu from a QuantSim: the integer graph under an exact float
    profile equals the integer-faithful simulation bit for bit, and every shipped profile stays
    within its bound per requantization (`refq.fixedpoint.compare`)."""
    from test_lowering_onnx_ops import _faithful_and_compare, _sim_of
    r = np.random.default_rng(7)
    x = r.standard_normal((6, 4, 5, 3)).astype(np.float32)
    nodes = [Node("c", "conv2d", ["x"], ["c"], {}, {"weight": r.standard_normal((4, 3, 3, 3)),
                                                   "bias": r.standard_normal(4)}),
             Node("t", "transpose", ["c"], ["t"], {"perm": [0, 2, 1, 3]}),
             Node("r", "relu", ["t"], ["y"])]
    traced = _faithful_and_compare(_sim_of(nodes, (4, 5, 3), x), x)
    assert traced["t"].shape == (6, 3, 2, 4)
