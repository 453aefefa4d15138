"""Model compression as AIMET implements it (../shared/reference/aimet.md §8–§10): spatial SVD,
weight SVD and channel pruning with reconstruction, each layer's ratio chosen by hand or by the
greedy search, then fine-tuning.

Every method is a module exposing `METHOD`, an object with:
    name                                    "spatial-svd", "weight-svd" or "channel-pruning"
    layers(graph) -> [node name]            the layers it can compress, in forward order
    rounded_ratio(graph, layer, ratio, cost="macs") -> float
                                            the ratio after AIMET's rounding
                                            (`CompRatioRounder.round`), in the unit `compress`
                                            takes (below)
    compress(graph, ratios, *, cost="macs", data=None, seed=0, reconstruct=True)
        -> (Graph, report)                  a new graph with each layer of `ratios` ({node name:
                                            ratio}) compressed; `graph` is unchanged
A layer's ratio is the method's own quantity: for the SVDs the layer's cost ratio in `cost`
(MACs or parameters, the rank following from it), for channel pruning the fraction of input
channels kept. `rounded_ratio` is that ratio after rounding the rank or the channel count up to
the method's `multiplicity`, as AIMET's `RankRounder.round` and `ChannelRounder.round` return it:
with multiplicity 1 the ratio itself, unchanged, for every method; otherwise the ratio of the
rounded rank (cost(rank') / cost(layer); the ratio itself when the rank does not change) or of
the rounded channel count (keep' / C). Either way compressing at the rounded ratio builds the
same layer as compressing at the ratio, and rounding it again changes nothing.
`refq.compression.cost` gives layer and model costs (MACs, parameters) by AIMET's formulas;
`get_method(name)` finds a method by its name.
"""
from __future__ import annotations

from importlib import import_module

from ..errors import InputError

__all__ = ["METHODS", "get_method"]

#: method name -> the module (in this package) that defines its METHOD
METHODS = {"spatial-svd": "spatial_svd", "weight-svd": "weight_svd",
           "channel-pruning": "channel_pruning"}


def get_method(name: str):
    """The METHOD object of compression method `name` (InputError naming the known ones)."""
    if name not in METHODS:
        raise InputError(f"unknown compression method {name!r}; known: {', '.join(METHODS)}")
    return import_module(f".{METHODS[name]}", __name__).METHOD
