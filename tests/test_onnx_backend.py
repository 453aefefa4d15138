"""The ONNX backend node tests in refq's scope, imported with `refq.importers.onnx` and run by refq.

Data: tests/data/onnx/backend (made by make_backend.py there from the `onnx` package's own node
test generator): `manifest.json` names every node test of that onnx version with its op types;
`node/<test>/` holds, in ONNX's layout, the model and test_data_set_0 (inputs and expected
outputs, TensorProtos, gzip-compressed) of each test in refq's scope: every op type of its graph
in `make_backend.SCOPE` (the float ops refq has, QuantizeLinear/DequantizeLinear, QLinearConv,
QLinearMatMul, ConvInteger, MatMulInteger), tensors only, at most 100 kB.

How a test runs (the test harness's reading of a node test as a refq model):
- Weights are constants in refq; ONNX's node tests pass them as graph inputs. An input is made a
  constant of the model (an initializer with its test value) when it feeds a parameter slot
  (`PARAM_SLOTS`: a weight, bias, scale, zero point, shape, pads, bounds, ...), or when it is an
  operand other than the first whose rank differs from the first's (a broadcast constant); the
  second operand of MatMul, QLinearMatMul and MatMulInteger is a constant unless both operands
  have the same rank >= 3 (refq's batched matmul of two activations). Every other input is a
  graph input of the refq model, batch axis first.
- refq holds channels-first ONNX tensors (NCHW, NCL, NCDHW) channels-last; `graph.meta
  ["onnx_layouts"]` says which inputs and outputs the importer holds so, and the harness moves the
  channel axis accordingly.
- Float models run in float64 (refq's reference precision) and are compared as ONNX's backend
  runner compares (onnx/backend/test/runner: `assert_allclose(out, ref, rtol, atol)` with the
  node tests' rtol 1e-3, atol 1e-7, set in onnx/backend/test/case/node/__init__.py `expect`).
  Integer outputs (integer models run with `run_int(..., codes=True)`, MaxPool indices) are
  compared exactly, dtype included (float outputs are refq's float64).

Every in-scope test either passes, or is listed in `REFUSED` (refq must refuse it with one clear
RefqError) with the reason. The suite fails when a test of the data is neither, when a listed test
starts passing (remove it from the list), or when the data and the manifest disagree.

Figures (onnx 1.23.2; `test_pass_count` prints them): 1884 node tests; 261 with every op in
SCOPE, of which 2 hold sequences or optionals and 7 exceed 100 kB (3-D pools on 32³ inputs; the
committed 3-D pool tests are smaller); 252 with data: 139 pass, 113 refused (REFUSED's reasons).
"""
from __future__ import annotations

import gzip
import json
import os
import sys

import numpy as np
import pytest

import refq
from refq.errors import RefqError

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from refq.importers.onnx import import_onnx  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "onnx", "backend")
sys.path.insert(0, DATA)
from make_backend import MAX_BYTES, SCOPE  # noqa: E402

with open(os.path.join(DATA, "manifest.json")) as _f:
    MANIFEST = json.load(_f)
NODE = os.path.join(DATA, "node")
TESTS = sorted(os.listdir(NODE))
RTOL, ATOL = 1e-3, 1e-7

#: ONNX input slots that hold parameters (constants of a refq model).
PARAM_SLOTS = {
    "Conv": {1, 2}, "ConvTranspose": {1, 2}, "Gemm": {1, 2}, "BatchNormalization": {1, 2, 3, 4},
    "Clip": {1, 2}, "Reshape": {1}, "Pad": {1, 2, 3}, "Squeeze": {1}, "Unsqueeze": {1},
    "Dropout": {1, 2}, "QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2},
    "QLinearConv": {1, 2, 3, 4, 5, 6, 7, 8}, "QLinearMatMul": {1, 2, 4, 5, 6, 7},
    "ConvInteger": {1, 2, 3}, "MatMulInteger": {2, 3}}
#: Ops whose operand in this slot is a constant unless both operands have one rank >= 3.
BATCHED_SLOT = {"MatMul": 1, "QLinearMatMul": 3, "MatMulInteger": 1}

_NO_BATCH = "refq tensors have the batch axis first: a rank-1 (or rank-0) input has no batch axis"
_INT_FLOAT_OP = ("integer inputs to a float op: refq's float graphs compute on float tensors "
                 "(integer arithmetic is the integer model's, through QLinear operators)")
_GRID = ("a float8 / float4 / int4 / int2 grid: refq quantizes to int8, uint8, int16 and "
         "uint16 (and the input has no batch axis)")
_BATCH_AXIS = "the op works across the batch axis (axis 0), which refq keeps first and apart"
_TRAINING = "training-mode outputs (random masks, batch statistics): refq imports inference models"
_PER_AXIS_ACT = ("a per-channel activation encoding alone (no QLinear operator around it): refq's "
                 "activation encodings are per tensor")

#: In-scope node tests refq refuses, and why (each must raise one clear RefqError).
REFUSED = {
    **{t: _NO_BATCH for t in (
        "test_clip_default_inbounds", "test_clip_default_inbounds_expanded", "test_clip_example",
        "test_clip_inbounds", "test_clip_min_greater_than_max", "test_clip_outbounds",
        "test_clip_splitbounds", "test_concat_1d_axis_0", "test_concat_1d_axis_negative_1",
        "test_div_example", "test_dropout_default_old", "test_hardsigmoid_example",
        "test_leakyrelu_example", "test_matmul_1d_1d", "test_matmul_1d_3d", "test_mul_example",
        "test_round", "test_sigmoid_example", "test_sub_example", "test_tanh_example",
        "test_dequantizelinear", "test_dequantizelinear_int16", "test_dequantizelinear_uint16",
        "test_quantizelinear", "test_quantizelinear_int16", "test_quantizelinear_uint16")},
    **{f"test_{op}_{t}": _INT_FLOAT_OP for op in ("add", "sub", "mul", "div")
       for t in ("int8", "int16", "uint8", "uint16", "uint32", "uint64")},
    "test_div_int32_trunc": _INT_FLOAT_OP,
    **{t: _INT_FLOAT_OP for t in ("test_clip_default_int8_inbounds",
                                  "test_clip_default_int8_inbounds_expanded",
                                  "test_clip_default_int8_max", "test_clip_default_int8_min",
                                  "test_maxpool_2d_uint8")},
    **{t: _INT_FLOAT_OP + "; and a mode other than constant zeros" for t in (
        "test_edge_pad", "test_reflect_pad", "test_wrap_pad")},
    **{t: _GRID for t in (
        "test_dequantizelinear_e4m3fn", "test_dequantizelinear_e4m3fn_float16",
        "test_dequantizelinear_e4m3fn_zero_point", "test_dequantizelinear_e5m2",
        "test_dequantizelinear_float4e2m1", "test_dequantizelinear_int2",
        "test_dequantizelinear_int4", "test_dequantizelinear_uint2", "test_dequantizelinear_uint4",
        "test_quantizelinear_e4m3fn", "test_quantizelinear_e5m2",
        "test_quantizelinear_float4e2m1", "test_quantizelinear_int2", "test_quantizelinear_int4",
        "test_quantizelinear_uint2", "test_quantizelinear_uint4")},
    "test_dequantizelinear_axis": _PER_AXIS_ACT,
    "test_quantizelinear_axis": _PER_AXIS_ACT,
    "test_dequantizelinear_blocked": "blocked quantization (block_size): refq quantizes per "
                                     "tensor or per channel",
    "test_quantizelinear_blocked_asymmetric": "blocked quantization (block_size) along axis 1 of "
                                              "a rank-2 tensor: refq quantizes per tensor or per "
                                              "channel",
    "test_quantizelinear_blocked_symmetric": "blocked quantization (block_size) along axis 1 of "
                                             "a rank-2 tensor: refq quantizes per tensor or per "
                                             "channel",
    **{t: _BATCH_AXIS + ": concatenation along it" for t in (
        "test_concat_2d_axis_0", "test_concat_2d_axis_negative_2", "test_concat_3d_axis_0",
        "test_concat_3d_axis_negative_3")},
    "test_softmax_axis_0": _BATCH_AXIS + ": softmax over it",
    "test_squeeze": _BATCH_AXIS + ": squeezes it",
    "test_unsqueeze_axis_0": _BATCH_AXIS + ": inserts an axis before it",
    "test_flatten_axis0": _BATCH_AXIS + ": flattens it into the columns",
    "test_flatten_negative_axis4": _BATCH_AXIS + ": flattens it into the columns",
    **{t: _BATCH_AXIS + ": the target shape moves it" for t in (
        "test_reshape_allowzero_reordered", "test_reshape_negative_extended_dims",
        "test_reshape_one_dim", "test_reshape_reordered_all_dims")},
    "test_gemm_transposeA": _BATCH_AXIS + ": transA = 1 sums over it",
    "test_gemm_all_attributes": _BATCH_AXIS + ": transA = 1 sums over it",
    "test_gemm_default_matrix_bias": "a bias C [M, N] varying along the rows is tied to one batch "
                                     "size, which refq does not fix",
    "test_matmul_bcast": "the second operand [1, 2, 4, 2] broadcasts along the batch axis against "
                         "[3, 1, 3, 4]: refq's two activations share one batch",
    **{f"test_transpose_all_permutations_{k}": _BATCH_AXIS + ": the permutation moves it"
       for k in range(2, 6)},
    "test_transpose_default": _BATCH_AXIS + ": the permutation moves it",
    **{t: _TRAINING for t in (
        "test_batchnorm_epsilon_training_mode", "test_batchnorm_example_training_mode",
        "test_dropout_default_mask", "test_dropout_default_mask_ratio", "test_training_dropout",
        "test_training_dropout_default", "test_training_dropout_default_mask",
        "test_training_dropout_mask", "test_training_dropout_zero_ratio",
        "test_training_dropout_zero_ratio_mask")},
    "test_constant": "the output is a constant: a refq graph computes its outputs from inputs",
}


def _load_tensor(path):
    t = onnx.TensorProto()
    with gzip.open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def load_case(name):
    """(model, [inputs], [expected outputs]) of node test `name`."""
    d = os.path.join(NODE, name)
    model = onnx.load(os.path.join(d, "model.onnx"))
    data = os.path.join(d, "test_data_set_0")
    files = sorted(os.listdir(data), key=lambda f: (f.split("_")[0], int(f.split("_")[1][:-6])))
    inputs = [_load_tensor(os.path.join(data, f)) for f in files if f.startswith("input_")]
    outputs = [_load_tensor(os.path.join(data, f)) for f in files if f.startswith("output_")]
    return model, inputs, outputs


def constant_inputs(model, inputs):
    """{graph input name: value} of the inputs the harness makes constants (module docstring)."""
    values = {v.name: a for v, a in zip(model.graph.input, inputs)}
    out = {}
    for node in model.graph.node:
        first = values.get(node.input[0]) if node.input else None
        for slot, name in enumerate(node.input):
            if name not in values or slot == 0:
                continue
            if slot in PARAM_SLOTS.get(node.op_type, ()):
                out[name] = values[name]
            elif BATCHED_SLOT.get(node.op_type) == slot:
                if first is None or values[name].ndim < 3 or values[name].ndim != first.ndim:
                    out[name] = values[name]
            elif first is not None and values[name].ndim != first.ndim:
                out[name] = values[name]
    return out


def as_refq_model(model, constants, path):
    """`model` with the `constants` moved from its inputs to its initializers, saved at `path`."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [v for v in m.graph.input if v.name not in constants]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    for name, value in constants.items():
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    onnx.save(m, str(path))
    return path


def to_refq(a, layout):
    return np.moveaxis(a, 1, -1) if layout == "nchw" else a


def from_refq(a, layout):
    return np.moveaxis(a, -1, 1) if layout == "nchw" else a


def run_case(name, tmp_path):
    """(refq's outputs, expected outputs) of node test `name` (module docstring)."""
    model, inputs, expected = load_case(name)
    constants = constant_inputs(model, inputs)
    g = import_onnx(as_refq_model(model, constants, tmp_path / "model.onnx"))
    layouts = g.meta["onnx_layouts"]
    feeds = {v.name: to_refq(a, layouts["inputs"][v.name])
             for v, a in zip(model.graph.input, inputs) if v.name not in constants}
    if "integer" in g.meta:
        from refq.fixedpoint.run import run_int
        ys, _ = run_int(g, feeds, codes=True)
    else:
        ys = refq.run(g, feeds)
    got = [from_refq(ys[t], layouts["outputs"][v.name])
           for t, v in zip(g.outputs, model.graph.output)]
    return got, expected


def compare(name, got, expected):
    assert len(got) == len(expected)
    for k, (y, want) in enumerate(zip(got, expected)):
        assert tuple(y.shape) == tuple(want.shape), (name, k, y.shape, want.shape)
        if want.dtype.kind in "iub":
            assert y.dtype == want.dtype and np.array_equal(y, want), (name, k, y.dtype)
        else:
            np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL, err_msg=f"{name} output {k}")


PASSING = [t for t in TESTS if t not in REFUSED]


@pytest.mark.parametrize("name", PASSING)
def test_node(name, tmp_path):
    got, expected = run_case(name, tmp_path)
    compare(name, got, expected)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_node(name, tmp_path):
    """A listed test is refused with one clear error; if it starts passing, take it off the
    list."""
    with pytest.raises(RefqError) as e:
        run_case(name, tmp_path)
    assert "\n" not in str(e.value) and str(e.value), (name, str(e.value))


def test_data_matches_the_manifest_and_the_lists():
    """Every node test of the manifest whose ops lie in SCOPE has its data here (unless it is
    not made of tensors or larger than MAX_BYTES), nothing else has, and the lists name only
    tests of the data."""
    tests = MANIFEST["tests"]
    in_scope = {t for t, ops in tests.items() if set(ops) <= SCOPE}
    assert set(TESTS) == in_scope - set(MANIFEST["not_tensors"]) - set(MANIFEST["too_large"])
    assert all(size > MAX_BYTES for size in MANIFEST["too_large"].values())
    assert set(REFUSED) <= set(TESTS)


def test_pass_count():
    """The figures of the suite: node tests of the onnx version, in refq's scope, passing."""
    n_all, n_scope = len(MANIFEST["tests"]), len(TESTS)
    print(f"onnx {MANIFEST['onnx']}: {n_all} node tests, {n_scope} in refq's scope with data, "
          f"{len(PASSING)} pass, {len(REFUSED)} refused")
    assert (n_all, n_scope, len(PASSING)) == (1884, 252, 139)
