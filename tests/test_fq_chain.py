"""Fused fake-quantization chains (refq.quant.fq_chain) against the steps they replace, applied one
after the other, bit for bit: on grids of ties, code boundaries, clamp bounds, ±0, huge values,
±inf and NaN, for many encodings, clamps and numerics; and in a simulated model's plan."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.layers.inplace import Clamp
from refq.quant import EncodingNumerics, encoding_from_min_max
from refq.quant.fakequant import fake_quantize_inplace
from refq.quant.fq_chain import FusedFakeQuantChain, InplaceFakeQuant, fuse_chain, fuse_clamp

NUMERICS = [EncodingNumerics(), EncodingNumerics(fake_quant="divide"),
            EncodingNumerics(dtype=np.dtype(np.float64))]
CLAMPS = [Clamp(0, None), Clamp(0, 6), Clamp(np.float32(-1.5), np.float32(2.25))]


def _grid(encs, dt):
    """Values around every code of each encoding (ties ± 0.5, the codes, their neighbours), the
    clamp bounds, zeros, tiny and huge values, ±inf and NaN."""
    parts = [np.array([0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, 3e38, -3e38, np.inf, -np.inf,
                       np.nan, 6.0, -1.5, 2.25, np.nextafter(6.0, 7.0), np.nextafter(0.0, -1.0)])]
    for e in encs:
        s = float(e.scale)
        k = np.arange(e.qmin - int(e.zero_point) - 3, e.qmax - int(e.zero_point) + 4,
                      dtype=np.float64)
        if k.size > 4000:
            k = k[np.linspace(0, k.size - 1, 4000).astype(int)]
        parts += [(k + 0.5) * s, (k - 0.5) * s, k * s, np.nextafter(k * s, np.inf),
                  np.nextafter(k * s, -np.inf)]
    return np.concatenate(parts).astype(dt)


def _steps(x, *steps):
    """x after the steps, each in place; an InplaceFakeQuant runs as the definition's
    `fake_quantize_inplace` (the reference), any other step as itself."""
    a = x.copy()
    for f in steps:
        if type(f) is InplaceFakeQuant:
            fake_quantize_inplace(a, f.enc, f.numerics)
        else:
            f(a)
    return a


def _encoding(lo, hi, bits, symmetric, numerics):
    return encoding_from_min_max(np.float32(lo), np.float32(hi), bits, symmetric,
                                 numerics=numerics)


RANGES = [(-3.7, 9.8, 8, False), (-0.8, 3.95, 8, False), (0.0, 6.0, 8, False),
          (-1.0, 1.0, 8, True), (-20.0, 20.0, 8, True), (0.0, 5.3, 16, False),
          (-2.0, 0.7, 4, False), (-6.0, -0.5, 8, False), (1e-4, 3e-3, 8, False)]


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value")
@pytest.mark.parametrize("numerics", NUMERICS, ids=["reciprocal", "divide", "float64"])
@pytest.mark.parametrize("clamp", CLAMPS, ids=["relu", "relu6", "clip"])
@pytest.mark.parametrize("first", RANGES)
def test_a_fused_chain_equals_its_three_steps(first, clamp, numerics):
    dt = numerics.dtype
    fused_any = 0
    for second in RANGES:
        e1, e2 = _encoding(*first, numerics), _encoding(*second, numerics)
        h1, h2 = InplaceFakeQuant(e1, numerics), InplaceFakeQuant(e2, numerics)
        fused = fuse_chain(h1, clamp, h2)
        if fused is None:
            continue
        fused_any += 1
        x = _grid([e1, e2], dt)
        want = _steps(x, h1, clamp, h2)
        got = _steps(x, fused)
        assert got.tobytes() == want.tobytes(), (first, second, fused.k)
        # a block view of a larger array, and a non-contiguous one, in place
        big = np.stack([x, x])
        fused(big[1])
        assert big[1].tobytes() == want.tobytes()
        strided = np.stack([x, x], axis=1)
        fused(strided[:, 0])
        assert strided[:, 0].tobytes() == want.tobytes()
    assert fused_any >= len(RANGES) - 2   # the search finds a constant for nearly every pair


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value")
@pytest.mark.parametrize("numerics", NUMERICS, ids=["reciprocal", "divide", "float64"])
@pytest.mark.parametrize("clamp", CLAMPS + [Clamp(np.float32(7.5), np.float32(8.0)),
                                            Clamp(np.float32(-9.0), np.float32(-8.0))],
                         ids=["relu", "relu6", "clip", "above", "below"])
@pytest.mark.parametrize("second", RANGES)
def test_a_clamp_then_fake_quant_equals_its_two_steps(second, clamp, numerics):
    e = _encoding(*second, numerics)
    h = InplaceFakeQuant(e, numerics)
    fused = fuse_clamp(clamp, h)
    assert isinstance(fused, FusedFakeQuantChain) and fused.k is None
    x = _grid([e], numerics.dtype)
    assert _steps(x, fused).tobytes() == _steps(x, clamp, h).tobytes()


@settings(max_examples=150, deadline=None)
@given(lo=st.floats(-50, 0), width=st.floats(1e-3, 100), lo2=st.floats(-50, 0),
       width2=st.floats(1e-3, 100), bits=st.sampled_from([4, 8, 16]),
       symmetric=st.booleans(), divide=st.booleans(), cap=st.floats(0.01, 60))
def test_fused_chains_on_random_encodings(lo, width, lo2, width2, bits, symmetric, divide, cap):
    numerics = EncodingNumerics(fake_quant="divide" if divide else "reciprocal_float32")
    e1 = _encoding(lo, lo + width, bits, symmetric, numerics)
    e2 = _encoding(lo2, lo2 + width2, 8, False, numerics)
    h1, h2 = InplaceFakeQuant(e1, numerics), InplaceFakeQuant(e2, numerics)
    clamp = Clamp(0, np.float32(cap))
    x = _grid([e1, e2], np.float32)
    with np.errstate(over="ignore", invalid="ignore"):   # the grid reaches float32's extremes
        want = _steps(x, h1, clamp, h2)
        fused = fuse_chain(h1, clamp, h2)
        if fused is not None:
            assert _steps(x, fused).tobytes() == want.tobytes()
        assert _steps(x, fuse_clamp(clamp, h2)).tobytes() == _steps(x, clamp, h2).tobytes()


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value")
@pytest.mark.parametrize("numerics", NUMERICS, ids=["reciprocal", "divide", "float64"])
def test_an_inplace_hook_equals_fake_quantize_inplace(numerics):
    """InplaceFakeQuant's constants formed once give fake_quantize_inplace's bits; a
    non-contiguous block, another dtype and a per-channel encoding take fake_quantize_inplace
    itself."""
    for r in RANGES:
        e = _encoding(*r, numerics)
        h = InplaceFakeQuant(e, numerics)
        assert h.factors is not None
        x = _grid([e], numerics.dtype)
        a = x.copy()
        h(a)
        assert a.tobytes() == _steps(x, h).tobytes()
        strided = np.stack([x, x], axis=1)
        h(strided[:, 1])
        assert strided[:, 1].tobytes() == a.tobytes()
    per_channel = encoding_from_min_max(np.array([-1.0, -2.0], np.float32),
                                        np.array([1.0, 2.0], np.float32), 8, False, axis=1,
                                        numerics=numerics)
    h = InplaceFakeQuant(per_channel, numerics)
    assert h.factors is None
    x = np.linspace(-3, 3, 40, dtype=numerics.dtype).reshape(20, 2)
    a = x.copy()
    h(a)
    assert a.tobytes() == _steps(x, h).tobytes()


def test_fake_quantize_inplace_on_a_view_or_another_dtype():
    """A view that no flat view covers (every other column of a block) and a float64 array
    under float32 numerics get quantize_dequantize's values (before, the first was left
    unchanged and the second computed in float64)."""
    from refq.quant.fakequant import quantize_dequantize

    e = _encoding(-1.0, 3.0, 8, False, EncodingNumerics())
    x = np.linspace(-2, 4, 60, dtype=np.float32).reshape(5, 6, 2)
    a = x.copy()
    fake_quantize_inplace(a[:, :3, 0], e)
    assert a[:, :3, 0].tobytes() == quantize_dequantize(x[:, :3, 0], e).tobytes()
    assert a[:, 3:].tobytes() == x[:, 3:].tobytes() and a[:, :, 1].tobytes() == x[:, :, 1].tobytes()
    b = np.linspace(-2, 4, 61)   # float64; float32 numerics
    want = quantize_dequantize(b, e).astype(np.float64)
    fake_quantize_inplace(b, e)
    assert b.tobytes() == want.tobytes()
    h = InplaceFakeQuant(e)
    c = x.copy()
    h(c[:, :3, 0])
    assert c.tobytes() == a.tobytes()


def test_values_beyond_the_first_quantizers_range_give_its_end_codes():
    """fq1's range ends inside the clamp and fq2's grid reaches past it: a value beyond fq1's top
    code gives the chain's output for that top code, without fq1's own clip."""
    n = EncodingNumerics()
    h1 = InplaceFakeQuant(_encoding(-0.5, 2.0, 8, False, n), n)
    h2 = InplaceFakeQuant(_encoding(0.0, 5.3, 8, False, n), n)
    fused = fuse_chain(h1, Clamp(0, 6), h2)
    assert fused is not None
    x = np.array([5.0, 2.0, 2.1, 100.0, np.inf, -3.0, -0.6, -np.inf], np.float32)
    want = _steps(x, h1, Clamp(0, 6), h2)
    assert _steps(x, fused).tobytes() == want.tobytes()
    assert want[0] == want[1] < 2.1 and want[-1] == 0


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value")
def test_a_plan_epilogue_fuses_what_it_can():
    """_fused_chains: a chain no constant k reproduces (fq2's scale 6/255 puts products of codes
    on ties) keeps fq1 and fuses the clamp into fq2; a lone hook, a hook before a clamp and
    other steps stay as they are."""
    from refq.plan_steps import _fused_chains

    n = EncodingNumerics()
    h1 = InplaceFakeQuant(_encoding(-0.5, 2.0, 8, False, n), n)
    h2 = InplaceFakeQuant(_encoding(0.0, 6.0, 8, False, n), n)
    relu6 = Clamp(0, 6)
    assert fuse_chain(h1, relu6, h2) is None
    out = _fused_chains([h1, relu6, h2])
    assert out[0] is h1 and len(out) == 2 and out[1].k is None
    x = _grid([h1.enc, h2.enc], np.float32)
    assert _steps(x, *out).tobytes() == _steps(x, h1, relu6, h2).tobytes()
    h3 = InplaceFakeQuant(_encoding(0.0, 5.3, 8, False, n), n)
    other = [lambda a: None, h1, relu6, h3, relu6]
    out = _fused_chains(other)
    assert out[0] is other[0] and out[-1] is relu6 and len(out) == 3 and out[1].k is not None
    assert _fused_chains([h1]) == [h1] and _fused_chains([h1, relu6]) == [h1, relu6]
    relu = Clamp(0, None)
    out = _fused_chains([h3, relu6, relu, relu6, h1])   # no hook after the first clamp
    assert out[:3] == [h3, relu6, relu] and len(out) == 4 and out[3].k is None
    assert fuse_chain(h3, relu6, relu) is None and fuse_chain(relu6, relu6, h3) is None


def test_what_does_not_fuse():
    n = EncodingNumerics()
    e = _encoding(-1.0, 3.0, 8, False, n)
    h = InplaceFakeQuant(e, n)
    per_channel = encoding_from_min_max(np.array([-1.0, -2.0], np.float32),
                                        np.array([1.0, 2.0], np.float32), 8, False, axis=1)
    half_away = EncodingNumerics(rounding="half_away")
    other = EncodingNumerics(fake_quant="divide")
    assert fuse_chain(h, Clamp(0, 6), InplaceFakeQuant(per_channel, n)) is None
    assert fuse_chain(h, Clamp(0, 6), InplaceFakeQuant(e, half_away)) is None
    assert fuse_chain(h, Clamp(0, 6), InplaceFakeQuant(e, other)) is None
    assert fuse_chain(h, lambda a: np.negative(a, out=a), h) is None   # not monotone
    assert fuse_clamp(lambda a: None, h) is None
    passthrough = _encoding(-1.0, 3.0, 32, False, n)
    assert fuse_clamp(Clamp(0, 6), InplaceFakeQuant(passthrough, n)) is None


def test_a_simulated_plan_with_fused_chains_equals_the_unfused_one(monkeypatch):
    """A depthwise block with both the convolution's output and its relu6 quantized (a fused
    chain) and an expansion with relu6 then a quantizer (a fused clamp): the SimPlan's output
    equals that of the plan with the fusion switched off, bit for bit."""
    import refq.plan_steps as plan_steps
    from refq.graph import Graph, Node, TensorSpec
    from refq.quant.quantsim import QuantSim

    rng = np.random.default_rng(3)
    nodes = [Node("expand", "conv2d", ["x"], ["e"], {"padding": "same"},
                  {"weight": rng.standard_normal((12, 1, 1, 4)).astype(np.float32),
                   "bias": rng.standard_normal(12).astype(np.float32)}),
             Node("expand_relu", "relu6", ["e"], ["er"]),
             Node("dw", "conv2d", ["er"], ["d"], {"padding": "same", "groups": 12},
                  {"weight": rng.standard_normal((12, 3, 3, 1)).astype(np.float32),
                   "bias": rng.standard_normal(12).astype(np.float32)}),
             Node("dw_relu", "relu6", ["d"], ["dr"]),
             Node("project", "conv2d", ["dr"], ["p"], {"padding": "same"},
                  {"weight": rng.standard_normal((5, 1, 1, 12)).astype(np.float32)})]
    g = Graph([TensorSpec("x", (None, 9, 9, 4), "float32")], ["p"], nodes)
    sim = QuantSim(g, "per_channel", scheme="minmax")
    x = rng.standard_normal((6, 9, 9, 4)).astype(np.float32) * 2
    sim.compute_encodings([x])
    seen = []
    real = plan_steps._fused_chains

    def spy(epilogue):
        out = real(epilogue)
        seen.extend(f.k is None for f in out if isinstance(f, FusedFakeQuantChain))
        return out
    monkeypatch.setattr(plan_steps, "_fused_chains", spy)
    got = sim.plan().run({"x": x})["p"]
    assert sorted(seen) == [False, True]   # the depthwise chain, the expansion's clamp
    monkeypatch.setattr(plan_steps, "_fused_chains", lambda epilogue: epilogue)
    want = sim.plan().run({"x": x})["p"]
    assert got.tobytes() == want.tobytes()
    assert got.tobytes() == sim.run({"x": x}, trace=True)["p"].tobytes()


@pytest.mark.parametrize("op, attrs", [("relu", {}), ("relu6", {}), ("clip", {"min": -0.25}),
                                       ("clip", {"max": 0.5}), ("clip", {"min": -1.0, "max": 1.5}),
                                       ("clip", {"min": 0.0}), ("clip", {"min": -0.0})])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clamp_steps_equal_their_forwards_and_report_in_place(op, attrs, dtype):
    """relu, relu6 and clip in place: the forward's bits (NaN of either sign, ±0, ±inf,
    subnormals included, at every offset of a vector register and in the vectorised body of a
    long array), and None, which the plan reads as "computed in place" (else it computes the
    node again)."""
    from refq.layers import REGISTRY
    from refq.plan_steps import inplace_step

    tiny = np.finfo(dtype).smallest_subnormal
    special = np.array([-np.inf, -3.0, -0.5, -0.0, 0.0, 0.25, 0.5, 1.5, 6.0, 7.0, np.inf, np.nan,
                        -np.nan, tiny, -tiny, -0.25, 0.0, -0.0], dtype)
    rng = np.random.default_rng(0)
    x = np.concatenate([special[k:] for k in range(len(special))] +
                       [rng.standard_normal(1000).astype(dtype) * 4, special])[None]
    full = {**{k: a.default for k, a in REGISTRY[op].attrs.items()}, **attrs}
    want = REGISTRY[op].forward([x], {}, full)
    step = inplace_step(op, {}, full, np.dtype(dtype).type)
    a = x.copy()
    assert step(a) is None and getattr(step, "monotone", False)
    assert a.tobytes() == want.tobytes()
