"""The op record is the one source of every fact about an op: each float op has all of them, and
the lists other modules use are derived from the records."""
from __future__ import annotations

import pytest

from refq.layers import REGISTRY, ops_with
from refq.quant.config import ONNX_OP_TYPES, ONNX_TYPE


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_float_op_has_every_entry(name):
    op = REGISTRY[name]
    assert op.forward is not None and op.infer_shape is not None
    assert op.vjp is not None, f"op '{name}' has no VJP"
    assert op.traits is not None, f"op '{name}' has no Traits"
    assert op.traits.onnx_type in ONNX_OP_TYPES, op.traits.onnx_type
    assert (op.vjp.__doc__ or "").strip(), f"op '{name}': its VJP has no docstring"


#: Float ops without an integer lowering (lowering family None): lowering refuses them by name.
NO_LOWERING_YET = {"max_pool2d_indices", "max_pool1d_indices", "max_pool3d_indices", "divide",
                   "pad", "conv_transpose1d", "conv_transpose3d"}


def test_ops_without_a_lowering_have_no_lowering_traits():
    """An op the integer model cannot run claims nothing the lowering reads."""
    for name in NO_LOWERING_YET:
        t = REGISTRY[name].traits
        assert t.lowering is None and not (t.grid_preserving or t.fusable_activation
                                           or t.takes_activation or t.bn_foldable), name


def test_the_derived_lists():
    """What the quantizer placement, the lowering and the algorithms read from the records."""
    assert ONNX_TYPE["relu6"] == ONNX_TYPE["clip"] == "Clip" and ONNX_TYPE["dense"] == "Gemm"
    assert set(ONNX_TYPE) == set(REGISTRY)
    assert set(ops_with("grid_preserving")) == {"max_pool1d", "max_pool2d", "max_pool3d",
                                                "global_max_pool2d", "zero_pad2d", "flatten",
                                                "reshape", "identity", "gather_channels",
                                                "transpose"}
    assert set(ops_with("takes_activation")) == {"conv2d", "dense", "add", "multiply",
                                                 "conv_transpose2d", "gemm", "matmul"}
    assert set(ops_with("fusable_activation")) == {"relu", "relu6", "clip"}
    assert set(ops_with("cle_transparent")) == {"relu", "leaky_relu", "zero_pad2d", "identity"}
    assert set(ops_with("bn_foldable")) == {"conv2d", "dense"}
    from refq.algorithms.bias_analytical import CORRECTED_OPS
    from refq.algorithms.bn_fold import LAYER_OPS
    from refq.algorithms.cle import TRANSPARENT_OPS
    from refq.fixedpoint.lower_graph import FUSABLE_ACTIVATIONS, FUSABLE_PRODUCERS, GRID_PASS
    assert GRID_PASS == ops_with("grid_preserving") and TRANSPARENT_OPS == ops_with(
        "cle_transparent")
    assert FUSABLE_PRODUCERS == ops_with("takes_activation")
    assert FUSABLE_ACTIVATIONS == ops_with("fusable_activation")
    assert LAYER_OPS == CORRECTED_OPS == ops_with("bn_foldable")
    from refq.fixedpoint.lower_graph import LOWERINGS, SUPPORTED_OPS
    from refq.quant.placement import WEIGHTED
    assert WEIGHTED == LAYER_OPS
    assert SUPPORTED_OPS == ops_with("lowering") and set(LOWERINGS) == set(SUPPORTED_OPS)
    assert set(REGISTRY) - set(SUPPORTED_OPS) == {"batch_norm"} | NO_LOWERING_YET  # bn: folded
    from refq.fixedpoint import lower_activations, lower_contractions, lower_layers
    families = {**lower_layers.FAMILIES, **lower_contractions.FAMILIES,
                **lower_activations.FAMILIES}
    assert {op.traits.lowering for op in REGISTRY.values()} - {None} == set(families)
    assert set(ops_with("lowering", "grid")) == set(ops_with("grid_preserving"))
    assert set(ops_with("lowering", "clamp")) == set(ops_with("fusable_activation"))
    assert set(ops_with("lowering", "lut")) == {"hard_swish", "sigmoid", "tanh", "hard_sigmoid",
                                               "leaky_relu", "round"}


def test_an_unknown_trait_is_an_error():
    with pytest.raises(AttributeError):
        ops_with("no_such_trait")
