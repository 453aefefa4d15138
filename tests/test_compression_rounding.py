"""`rounded_ratio`, one quantity for every method: the per-layer ratio after AIMET's rounding as
`CompRatioRounder.round` returns it (aimet_common/comp_ratio_rounder.py, aimet.md §8–§10), in
the unit `compress` takes. Channel pruning against a plain transcription of `ChannelRounder.round`
and of the pruner's channel count (`select_channels_to_prune`); the SVDs' `RankRounder` has its
own transcription in test_compression_cost.py, and here the properties every method shares:
multiplicity 1 keeps the ratio, rounding twice changes nothing, compressing at the rounded
ratio builds the same layer, and the compression report gives the same number."""
from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from refq.compression import METHODS, get_method
from refq.compression import cost as C
from refq.compression.channel_pruning import keep_count
from refq.graph import Graph, Node, TensorSpec


# ---- AIMET, transcribed plainly -------------------------------------------------------------

def aimet_round_up(multiplicity, num, max_allowable_num):
    """utils.round_up_to_multiplicity."""
    larger_multiple = math.ceil(float(num) / float(multiplicity)) * multiplicity
    if larger_multiple >= max_allowable_num:
        return max_allowable_num
    return int(larger_multiple)


def aimet_channel_round(in_channels, comp_ratio: Decimal, multiplicity):
    """ChannelRounder.round."""
    if multiplicity == 1:
        return comp_ratio
    keep_inp_channels = in_channels * comp_ratio
    keep_inp_channels = aimet_round_up(multiplicity, keep_inp_channels, in_channels)
    return Decimal(keep_inp_channels) / Decimal(in_channels)


def aimet_channels_kept(in_channels, comp_ratio: Decimal):
    """select_channels_to_prune: the number of input channels kept at the (rounded) ratio."""
    return max(1, int(in_channels * comp_ratio))


# ---- a layer every method compresses ----------------------------------------------------------

def conv_layer(c_in=16, c_out=12, seed=0):
    """x [N, 9, 9, c_in] -> conv2d "c" (3x3, same, bias) -> y."""
    w = np.random.default_rng(seed).normal(size=(c_out, 3, 3, c_in))
    node = Node("c", "conv2d", ["x"], ["y"], {"strides": [1, 1], "padding": "same"},
                {"weight": w, "bias": np.zeros(c_out)})
    return Graph([TensorSpec("x", (None, 9, 9, c_in), "float64")], ["y"], [node]).validate()


RATIOS = [Decimal(k) / 10 for k in range(1, 11)] + [Decimal("0.55"), Decimal("0.333"),
                                                    Decimal("0.07"), Decimal("0.999")]


@pytest.mark.parametrize("channels", [1, 3, 10, 16, 24, 37])
@pytest.mark.parametrize("multiplicity", [1, 2, 4, 8])
def test_channel_rounding_matches_the_aimet_transcription(channels, multiplicity):
    g = conv_layer(c_in=channels)
    method = dataclasses.replace(get_method("channel-pruning"), multiplicity=multiplicity)
    for ratio in RATIOS:
        want = aimet_channel_round(channels, ratio, multiplicity)
        want_keep = aimet_channels_kept(channels, want)
        if multiplicity > 1:
            rounded_keep = aimet_round_up(multiplicity, channels * ratio, channels)
            if want_keep != rounded_keep:
                # AIMET's Decimal(keep) / Decimal(C) (28 digits) can fall short of keep / C, and
                # its pruner then keeps keep − 1 channels (24 channels at 0.3, multiplicity 2:
                # 8/24 = 0.333...3, int(24 · 0.333...3) = 7); refq keeps the rounded count
                assert want < Fraction(rounded_keep, channels) and want_keep == rounded_keep - 1
                want_keep = rounded_keep
        for given in (float(ratio), ratio):
            got = method.rounded_ratio(g, "c", given)
            if multiplicity == 1:
                assert got == float(ratio)
            else:   # keep / C as the smallest float not below it
                assert C.exact_ratio(got) >= Fraction(want_keep, channels)
                assert got == C.ratio_float(Fraction(want_keep, channels))
                assert abs(got - float(want)) <= 2 ** -52
            assert method.keep(g, "c", given) == want_keep
            assert method.keep(g, "c", got) == want_keep


def test_channel_rounding_by_hand():
    """16 channels at 0.55 with multiplicity 4: C · ratio = 8.8, rounded up to 12 (AIMET rounds
    the unfloored product), ratio 0.75; 10 channels at 0.3: 3 -> 4, ratio 0.4; at 0.8: 8, kept."""
    assert keep_count(16, 0.55, 4) == 12 and keep_count(16, 0.55) == 8
    assert keep_count(10, 0.3, 4) == 4 and keep_count(10, 0.8, 4) == 8
    assert keep_count(10, 0.05, 4) == 4 and keep_count(10, 0.05) == 1
    assert keep_count(10, 0.95, 4) == 10                      # capped at C
    assert keep_count(12, C.ratio_float(Fraction(2, 3)), 4) == 8   # 0.666...67 means 8 of 12
    g16, g10 = conv_layer(16), conv_layer(10)
    m4 = dataclasses.replace(get_method("channel-pruning"), multiplicity=4)
    assert m4.rounded_ratio(g16, "c", 0.55) == 0.75
    assert m4.rounded_ratio(g10, "c", 0.3) == 0.4
    assert m4.rounded_ratio(g10, "c", 0.8) == 0.8


@pytest.mark.parametrize("name", list(METHODS))
def test_multiplicity_one_keeps_the_ratio_for_every_method(name):
    """Both of AIMET's rounders return the ratio unchanged with multiplicity 1."""
    g = conv_layer()
    method = get_method(name)
    for ratio in [0.1, 0.25, 1 / 3, 0.55, 0.999, 1.0]:
        for cost in ("macs", "params"):
            assert method.rounded_ratio(g, "c", ratio, cost) == ratio


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("multiplicity", [1, 3, 4, 8])
def test_rounding_twice_and_compressing_at_the_rounded_ratio_change_nothing(name, multiplicity):
    g = conv_layer()
    method = dataclasses.replace(get_method(name), multiplicity=multiplicity)
    for ratio in [float(r) for r in RATIOS]:
        for cost in ("macs", "params"):
            once = method.rounded_ratio(g, "c", ratio, cost)
            assert method.rounded_ratio(g, "c", once, cost) == once
            assert C.exact_ratio(once) >= C.exact_ratio(ratio)
            at_ratio, report = method.compress(g, {"c": ratio}, cost=cost, reconstruct=False)
            at_rounded, _ = method.compress(g, {"c": once}, cost=cost, reconstruct=False)
            assert [(n.name, {k: v.shape for k, v in n.params.items()}) for n in at_ratio.nodes] \
                == [(n.name, {k: v.shape for k, v in n.params.items()}) for n in at_rounded.nodes]
            entry = report["layers"]["c"]
            assert entry["ratio"] == ratio and entry["rounded_ratio"] == once


def test_svd_rounded_ratio_is_the_cost_ratio_of_the_rounded_rank():
    """Weight SVD of the 16 -> 12 3x3 layer, MACs: cost(r) = (16 r + 108 r) · 81, the layer
    16 · 12 · 9 · 81; ratio 0.5 gives r = floor(864 / 124) = 6, with multiplicity 4 rounded up to
    8, ratio 8 · 124 / 1728; with multiplicity 3 r = 6 stays and so does the ratio."""
    g = conv_layer()
    weight = get_method("weight-svd")
    m4 = dataclasses.replace(weight, multiplicity=4)
    m3 = dataclasses.replace(weight, multiplicity=3)
    assert weight.rank(g, "c", 0.5) == 6 and m4.rank(g, "c", 0.5) == 8
    assert m4.rounded_ratio(g, "c", 0.5) == C.ratio_float(Fraction(8 * 124, 1728))
    assert m3.rank(g, "c", 0.5) == 6 and m3.rounded_ratio(g, "c", 0.5) == 0.5
