"""Data-free quantization as one pipeline: BN folding -> cross-layer equalization -> bias correction.

    graph, report = prepare(graph, fold_bn=True, cle=True, bias_correction="empirical", data=calib,
                            config="per_tensor", param_bw=8)

Each step is the algorithm of its own module (`bn_fold`, `cle`, `bias_correction`); this module only
orders them and gathers their reports under "bn_fold", "cle" and "bias_correction". CLE folds batch
norms first when asked for without `fold_bn` (an unfolded BN ends every chain, and AIMET's
`equalize_model` folds first too). Bias correction must use the weight quantization the model will
be simulated with, so `config`, `param_bw`, `scheme` and `scheme_options` are passed through.
"""
from __future__ import annotations

from ..graph import Graph
from .bias_correction import correct_bias
from .bn_fold import fold_batch_norms
from .cle import equalize

__all__ = ["prepare"]


def prepare(graph: Graph, *, fold_bn: bool = False, cle: bool = False,
            relu6_to_relu: bool = False, absorb_high_bias: bool = True,
            through_squeeze_excite: bool = False, bias_correction: str | None = None, data=None,
            config=None, param_bw: int = 8, scheme: str = "minmax",
            scheme_options: dict | None = None, batch_size: int | None = None,
            quiet: bool = True) -> tuple:
    """(graph, report) after the requested steps; the input graph is never modified."""
    report = {}
    g = graph
    if fold_bn or cle:
        g, report["bn_fold"] = fold_batch_norms(g)
    if cle:
        g, report["cle"] = equalize(g, relu6_to_relu=relu6_to_relu,
                                    absorb_high_bias=absorb_high_bias,
                                    through_squeeze_excite=through_squeeze_excite)
    if bias_correction:
        g, report["bias_correction"] = correct_bias(
            g, data, mode=bias_correction, config=config, param_bw=param_bw, scheme=scheme,
            scheme_options=scheme_options, batch_size=batch_size, quiet=quiet)
    return (g if g is not graph else graph.copy()), report
