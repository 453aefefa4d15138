"""Spec tests of conv_transpose1d and conv_transpose3d (refq.layers.conv_transpose): the forward
against a naive loop transcription of the Definition (Python floats, one loop per index, the
pads recomputed from the docstring's formulas) on every combination of strides, dilations,
groups, output_padding and padding / pads / output_shape; the VJP against central finite
differences (tests/vjp_check.py); every bad input. The same naive transcription at r = 2 equals
conv_transpose2d, the op the 1-D and 3-D ones generalise.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from refq.errors import GraphError, ParamError, ShapeError
from refq.layers import get_op
from vjp_check import check_vjp

rng = np.random.default_rng(31)


def naive(x, w, b, a):
    """y of conv_transpose{r}d from the Definition: scatter x through w into y_full, crop at the
    pads before (negative: read outside y_full, 0 there), add the bias."""
    n, *sp, c = x.shape
    o, *k, cg = w.shape
    r, g = len(sp), a.get("groups", 1)
    og = o // g
    s = a.get("strides", [1] * r)
    d = a.get("dilations", [1] * r)
    op = a.get("output_padding", [0] * r)
    padding, pads, out_shape = a.get("padding", "valid"), a.get("pads", [0] * (2 * r)), \
        a.get("output_shape", [])
    full = [(sp[j] - 1) * s[j] + (k[j] - 1) * d[j] + 1 + op[j] for j in range(r)]
    before, out = [], []
    for j in range(r):
        if out_shape or padding.startswith("same"):
            want = out_shape[j] if out_shape else sp[j] * s[j]
            total = full[j] - want
            before.append(total // 2 if padding == "same_upper" else total - total // 2)
            out.append(want)
        elif padding == "explicit":
            before.append(pads[2 * j])
            out.append(full[j] - pads[2 * j] - pads[2 * j + 1])
        else:
            before.append(0)
            out.append(full[j])
    yf = np.zeros((n, *full, o))
    for nn in range(n):
        for i in itertools.product(*map(range, sp)):
            for oo in range(o):
                grp = oo // og
                for u in itertools.product(*map(range, k)):
                    for cc in range(cg):
                        pos = tuple(i[j] * s[j] + u[j] * d[j] for j in range(r))
                        yf[(nn, *pos, oo)] += float(x[(nn, *i, grp * cg + cc)]) * \
                            float(w[(oo, *u, cc)])
    y = np.zeros((n, *out, o))
    for nn in range(n):
        for p in itertools.product(*map(range, out)):
            q = tuple(p[j] + before[j] for j in range(r))
            inside = all(0 <= q[j] < full[j] for j in range(r))
            for oo in range(o):
                v = yf[(nn, *q, oo)] if inside else 0.0
                y[(nn, *p, oo)] = v + (0.0 if b is None else float(b[oo]))
    return y


def run(name, x, params, attrs):
    op = get_op(name)
    a = op.normalise_attrs(dict(attrs), f"test {name}")
    shape = op.infer_shape([x.shape], a, params)
    y = op.forward([x], params, a)
    assert tuple(y.shape) == tuple(shape)
    return y


def _paddings(r):
    """(padding attrs) of each padding kind: valid, two explicit pads, same_upper, same_lower,
    and an output_shape larger than y_full (negative pads) or smaller."""
    return [{}, {"padding": "explicit", "pads": [1, 0] * r},
            {"padding": "explicit", "pads": [0, 2] * r},
            {"padding": "same_upper"}, {"padding": "same_lower"}]


def _combos(r, strides, dilations, out_pads):
    for s, d, g, op, pad in itertools.product(strides, dilations, (1, 2), out_pads,
                                              _paddings(r)):
        if any(not 0 <= p < max(a, b) for p, a, b in zip(op, s, d)):
            continue
        yield {"strides": list(s), "dilations": list(d), "groups": g,
               "output_padding": list(op), **pad}


COMBOS_1D = list(_combos(1, [(1,), (2,), (3,)], [(1,), (2,)], [(0,), (1,)]))
COMBOS_3D = list(_combos(3, [(1, 1, 1), (2, 1, 3)], [(1, 1, 1), (1, 2, 1)],
                         [(0, 0, 0), (1, 0, 1)]))


def _case(r, attrs, with_bias=True):
    g = attrs["groups"]
    sp = (5,) if r == 1 else (2, 3, 2)
    k = (3,) if r == 1 else (2, 2, 3)
    x = rng.standard_normal((2, *sp, 4))
    w = rng.standard_normal((6, *k, 4 // g))
    params = {"weight": w}
    if with_bias:
        params["bias"] = rng.standard_normal(6)
    return x, params


@pytest.mark.parametrize("attrs", COMBOS_1D)
def test_conv_transpose1d_against_loops(attrs):
    x, params = _case(1, attrs, with_bias=attrs["groups"] == 1)
    np.testing.assert_allclose(run("conv_transpose1d", x, params, attrs),
                               naive(x, params["weight"], params.get("bias"), attrs),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("attrs", COMBOS_3D)
def test_conv_transpose3d_against_loops(attrs):
    x, params = _case(3, attrs, with_bias=attrs["strides"][0] == 1)
    np.testing.assert_allclose(run("conv_transpose3d", x, params, attrs),
                               naive(x, params["weight"], params.get("bias"), attrs),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("r,out_shape", [(1, [14]), (1, [9]), (3, [5, 6, 9]), (3, [3, 4, 5])])
def test_output_shape_sets_the_pads(r, out_shape):
    """output_shape larger than y_full (negative pads: zeros plus the bias) or smaller."""
    attrs = {"groups": 1, "strides": [2] * r, "output_shape": out_shape}
    x, params = _case(r, attrs)
    y = run(f"conv_transpose{r}d", x, params, attrs)
    assert list(y.shape[1:-1]) == out_shape
    np.testing.assert_allclose(y, naive(x, params["weight"], params["bias"], attrs),
                               rtol=1e-12, atol=1e-12)


def test_the_naive_definition_at_rank_2_is_conv_transpose2d():
    for attrs in [{"strides": [2, 1], "dilations": [1, 2], "groups": 2,
                   "output_padding": [1, 0], "padding": "explicit", "pads": [1, 0, 0, 2]},
                  {"strides": [2, 2], "padding": "same_lower"}]:
        x = rng.standard_normal((2, 3, 4, 4))
        params = {"weight": rng.standard_normal((6, 2, 3, 4 // attrs.get("groups", 1))),
                  "bias": rng.standard_normal(6)}
        np.testing.assert_allclose(run("conv_transpose2d", x, params, attrs),
                                   naive(x, params["weight"], params["bias"], attrs),
                                   rtol=1e-12, atol=1e-12)


def test_float32_and_empty_batch():
    attrs = {"strides": [2], "groups": 2}
    x, params = _case(1, attrs)
    x32 = x.astype(np.float32)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    y = run("conv_transpose1d", x32, p32, attrs)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, naive(x32, p32["weight"], p32["bias"], attrs), rtol=1e-5,
                               atol=1e-5)
    assert run("conv_transpose3d", np.zeros((0, 2, 3, 2, 4)), _case(3, {"groups": 1})[1],
               {}).shape == (0, 3, 4, 4, 6)


def test_macs():
    op = get_op("conv_transpose3d")
    _, params = _case(3, {"groups": 2})
    a = op.normalise_attrs({"groups": 2}, "t")
    assert op.macs([(None, 2, 3, 2, 4)], None, a, params) == 2 * 3 * 2 * 2 * 2 * 2 * 3 * 6
    assert op.macs([(None, None, 3, 2, 4)], None, a, params) == 0


@pytest.mark.parametrize("r,attrs", [
    (1, {}), (1, {"strides": [3], "dilations": [2], "groups": 2, "output_padding": [1],
                  "padding": "explicit", "pads": [1, 2]}),
    (1, {"strides": [2], "output_shape": [14]}), (1, {"padding": "same_lower", "strides": [2]}),
    (3, {}), (3, {"strides": [2, 1, 3], "dilations": [1, 2, 1], "groups": 2,
                  "output_padding": [1, 0, 2], "padding": "explicit", "pads": [1, 0, 0, 1, 1, 1]}),
    (3, {"strides": [2, 2, 1], "output_shape": [6, 7, 3]}),
])
def test_vjp(r, attrs):
    x, params = _case(r, {"groups": attrs.get("groups", 1)})
    check_vjp(f"conv_transpose{r}d", [x], params, attrs, samples=30)


@pytest.mark.parametrize("r,x_shape,w_shape,attrs,params_extra,match", [
    (1, (2, 5, 4), (6, 3, 4), {}, {}, None),
    (1, (2, 5, 3, 4), (6, 3, 4), {}, {}, "NLC input of rank 3"),
    (3, (2, 5, 4), (6, 2, 2, 2, 4), {}, {}, "NDHWC input of rank 5"),
    (1, (2, 5, 4), (6, 3, 3, 4), {}, {}, r"\[O, k, C/groups\]"),
    (3, (2, 2, 3, 2, 4), (6, 2, 2, 4), {}, {}, r"\[O, kd, kh, kw, C/groups\]"),
    (1, (2, 5, 4), (6, 3, 4), {"groups": 4}, {}, "groups 4"),
    (1, (2, 5, 4), (5, 3, 2), {"groups": 2}, {}, "groups 2"),
    (1, (2, 5, 4), (6, 3, 4), {}, {"bias": np.zeros(5)}, r"bias must be \[O\] = \[6\]"),
    (1, (2, 5, 4), (6, 3, 4), {"output_padding": [1]}, {}, "output_padding"),
    (3, (2, 2, 3, 2, 4), (6, 2, 2, 2, 4), {"output_padding": [0, 2, 0], "strides": [1, 2, 1]},
     {}, "output_padding"),
    (1, (2, 5, 4), (6, 3, 4), {"output_shape": [3, 4]}, {}, r"\[OL\]"),
    (3, (2, 2, 3, 2, 4), (6, 2, 2, 2, 4), {"output_shape": [3, 4]}, {}, r"\[OD, OH, OW\]"),
    (1, (2, 5, 4), (6, 3, 4), {"padding": "explicit", "pads": [4, 4]}, {}, "leave no output"),
    (1, (2, 5, 4), (6, 3, 4), {"padding": "explicit", "pads": [1, 0], "output_shape": [8]}, {},
     "either pads"),
])
def test_bad_shapes(r, x_shape, w_shape, attrs, params_extra, match):
    op = get_op(f"conv_transpose{r}d")
    a = op.normalise_attrs(attrs, "t")
    params = {"weight": np.zeros(w_shape), **params_extra}
    if match is None:
        assert op.infer_shape([x_shape], a, params) == (2, 7, 6)
        return
    with pytest.raises(ShapeError, match=match):
        op.infer_shape([x_shape], a, params)


def test_bad_attributes_and_missing_weight():
    op = get_op("conv_transpose3d")
    with pytest.raises(GraphError, match="expected 3 ints"):
        op.normalise_attrs({"strides": [1, 1]}, "t")
    with pytest.raises(GraphError, match="expected 2 ints"):
        get_op("conv_transpose1d").normalise_attrs({"pads": [0, 0, 0, 0]}, "t")
    with pytest.raises(ParamError, match=r"conv_transpose3d: parameter 'weight'"):
        op.infer_shape([(1, 2, 2, 2, 3)], op.normalise_attrs({}, "t"), {})
