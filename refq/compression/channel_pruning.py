"""Channel pruning: input channels of a conv2d removed by magnitude, winnowed upstream, and the
layer's weights reconstructed by least squares (../shared/reference/aimet.md §9; AIMET
`InputChannelPruner`, `select_channels_to_prune`, `DataSubSampler`, `WeightReconstructor`).

Layers (AIMET's `ConvNoDepthwiseLayerSelector`)
    conv2d with groups 1 and dilations (1, 1), in forward order. Dense layers are not pruned
    (AIMET prunes Conv2d only); they lose output channels when a pruned layer's mask reaches them.
Channels kept for a ratio (the fraction of input channels kept, AIMET's per-layer ratio)
    x = C · ratio, exact (`refq.compression.cost.exact_ratio`: 0.3 is 3/10 as AIMET's Decimal
    candidates; a ratio that is `ratio_float(k / C)`, the float `rounded_ratio` returns for k
    channels, counts as k / C);
        multiplicity 1 (the default):  keep = max(1, floor(x))   (`select_channels_to_prune`)
        multiplicity m > 1:            keep = min(ceil(x / m) · m, C)
    (AIMET's `ChannelRounder.round` rounds C · ratio up, unfloored, with
    `round_up_to_multiplicity`, and its pruner keeps int(C · rounded ratio) of them. Its rounded
    ratio is Decimal(keep) / Decimal(C) to 28 digits, which can fall short of keep / C, and the
    pruner then keeps keep − 1 channels: 24 channels at 0.3 with multiplicity 2 keep 7 there;
    refq keeps the rounded count, 8.)
    `rounded_ratio` is AIMET's `ChannelRounder.round`: the ratio itself with multiplicity 1,
    else keep / C (as the smallest float not below it, `ratio_float`); both are fractions of
    channels, the quantity `compress` takes, and compressing at the rounded ratio keeps the same
    channels as at the ratio. The cost ratio that pruning one layer
    really reaches (the layers upstream lose output channels too) is `cost_ratio`: the model
    cost after winnowing a copy without reconstruction over the model cost before (AIMET's
    `ChannelPruningCostCalculator`; `pruned_cost`). Options: `dataclasses.replace(METHOD,
    multiplicity=8)`; `prune(..., keep_channels=, num_samples=)` (also accepted by `compress`).
Selection (`select_channels`)
    score[c] = Σ_{o,u,v} w[o, u, v, c]² (float64) over the OHWI weight; the `keep` channels of
    largest score are kept, a tie going to the lower channel index (a stable sort of −score); the
    kept indices are returned ascending. Manual mode: keep_channels={layer: [indices]} names
    them instead (distinct ints in 0..C−1, at least one); its ratio is ignored.
Pruning, layer by layer in forward order, each on the graph pruned so far
    1. select the kept channels from the layer's current weight;
    2. winnow (`refq.compression.winnow`): the other input channels are removed from the layer
       and upstream as far as the mask propagates;
    3. with reconstruct=True: sample (`refq.compression.sampling`; one generator
       np.random.default_rng(seed) for all layers, drawn in forward order) input patches of
       the layer in the pruned graph and all its outputs in the original graph on `data`
       (`sampling.RECONSTRUCTION_BATCH` images per forward pass), and solve the ordinary least squares
           with a bias:    [X, 1] · [Wᵀ; b] ≈ Y    (np.linalg.lstsq, rcond=None)
           without:        X · Wᵀ ≈ Y
       w' = Wᵀ's transpose reshaped to [O, kh, kw, keep] (OHWI), b' = the intercept, both cast to
       the weight's dtype. AIMET fits sklearn's LinearRegression(fit_intercept=has bias), which
       centres X and Y: the same solution when [X, 1] has full column rank; with fewer samples
       than unknowns the two minimum-norm solutions differ. The report gives per layer the
       samples, the distinct (image, pixel) pairs among them and the unknowns per output
       channel: a layer with a 1x1 output (after a global pooling) draws the same pixel ten
       times, so it needs more images than unknowns, or the fit is ill-posed and its weights
       grow large.
    A layer that keeps all its input channels is left as it is (no winnowing, no
    reconstruction): pruning with every ratio 1 returns the graph bit for bit.
    All images of `data` are used (num_samples = 10 · images); `prune(..., num_samples=S)`
    takes the first S // 10 images, as AIMET's `images = int(num_samples / 10)`.
Report (JSON-serialisable)
    {"method", "cost", "seed", "reconstruct", "multiplicity", "layers": {L: {"ratio",
    "rounded_ratio", "input_channels", "kept", "kept_channels", "selection": "magnitude" |
    "manual", "reduced": {node: channels removed}, "selections": [nodes], "samples",
    "distinct_samples", "unknowns", "before", "after"}}, "model": {"before", "after"},
    "channel_selections"} with before/after {"macs", "params"}: a layer's own cost in the
    original and in the pruned graph (its input channels removed, its output channels too when a
    later layer's mask reached it), and the model's.
Cost (`pruned_cost`)
    AIMET's model cost (`refq.compression.cost`), in which a channel selection inserted by
    winnowing counts nothing, as AIMET's DownsampleLayer (an index-select, no conv2d or linear
    layer) does: it is a gather of channels, which refq can only write as a 1x1 conv2d with a
    0/1 weight. What those convolutions would cost as such is reported apart
    ("channel_selections": {"macs", "params"}); `refq.compression.cost.model_cost` of the
    pruned graph counts them.
Errors (one line)
    InputError: unknown layer, a layer that cannot be pruned, a ratio outside (0, 1], a channel
    index out of range or repeated, no data with reconstruct=True, too few images, a bad
    multiplicity or cost metric; QuantError for an integer model.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np

from ..errors import InputError
from ..feeds import check_input, feeds_dict
from ..graph import Graph
from ..quant.placement import require_float_model
from . import cost as C
from .sampling import (SAMPLES_PER_IMAGE, distinct_pixels, draw_pixels, sampled_outputs,
                       sampled_patches)
from .winnow import SELECTIONS_META, winnow

__all__ = ["METHOD", "ChannelPruning", "select_channels", "keep_count", "reconstruct_weights",
           "prune", "pruned_cost"]


def select_channels(weight: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` input channels of largest Σ w² of an OHWI weight, ascending (module
    docstring; ties to the lower index)."""
    w = np.asarray(weight, np.float64)
    score = np.sum(w.reshape(-1, w.shape[-1]) ** 2, axis=0)
    order = np.argsort(-score, kind="stable")
    return np.sort(order[:keep])


def _channels_times_ratio(channels: int, ratio) -> Fraction:
    """C · ratio exactly; k when `ratio` is `ratio_float(k / C)` (module docstring)."""
    x = C.exact_ratio(ratio) * channels
    k = math.floor(x)
    if x != k and isinstance(ratio, float) and ratio == C.ratio_float(Fraction(k, channels)):
        return Fraction(k)
    return x


def keep_count(channels: int, ratio, multiplicity: int = 1) -> int:
    """The input channels kept of `channels` at `ratio` (module docstring): max(1, floor(C ·
    ratio)) with multiplicity 1, else C · ratio rounded up to a multiple of `multiplicity`,
    capped at `channels`."""
    x = _channels_times_ratio(channels, ratio)
    if multiplicity == 1:
        return max(1, math.floor(x))
    return C.round_up_to_multiplicity(multiplicity, x, channels)


def reconstruct_weights(x: np.ndarray, y: np.ndarray, has_bias: bool) -> tuple:
    """(W [O, K], b [O] or None): the least-squares fit Y ≈ X Wᵀ (+ b) of X [S, K] and Y [S, O]
    (module docstring, step 3), float64."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if has_bias:
        a = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
        coef = np.linalg.lstsq(a, y, rcond=None)[0]
        return coef[:-1].T, coef[-1]
    return np.linalg.lstsq(x, y, rcond=None)[0].T, None


def _is_ratio(value) -> bool:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, Decimal,
                                                                      Fraction)):
        return False
    return bool(np.isfinite(float(value))) and 0 < C.exact_ratio(value) <= 1


def pruned_cost(graph: Graph, shapes: dict | None = None) -> tuple:
    """(model cost, cost of the channel selections): AIMET's model cost (`refq.compression.cost`)
    over the conv2d and dense nodes other than the channel selections winnowing inserted
    (graph.meta["channel_selections"]), which count as AIMET's DownsampleLayer, nothing; their
    own cost as 1x1 convolutions apart."""
    shapes = graph.infer_shapes() if shapes is None else shapes
    selections = graph.meta.get(SELECTIONS_META, {})
    model, apart = C.Cost(0, 0), C.Cost(0, 0)
    for node in graph.topological_order():
        if node.op in C.COSTED_OPS:
            one = C.node_cost(node, shapes[node.outputs[0]])
            if node.name in selections:
                apart = apart + one
            else:
                model = model + one
    return model, apart


@dataclass(frozen=True)
class ChannelPruning:
    """The METHOD object (module docstring). `dataclasses.replace(METHOD, multiplicity=8)`
    rounds kept channel counts up to multiples of 8."""

    name: str = "channel-pruning"
    multiplicity: int = 1

    def layers(self, graph: Graph) -> list:
        """The prunable layers: conv2d with groups 1 and dilation 1, in forward order (channel
        selections inserted by an earlier pruning excluded)."""
        selections = graph.meta.get(SELECTIONS_META, {})
        return [n.name for n in graph.topological_order()
                if self._why_not(n) is None and n.name not in selections]

    @staticmethod
    def _why_not(node) -> str | None:
        if node.op != "conv2d":
            return f"its op is {node.op}; channel pruning prunes conv2d layers"
        if node.attrs.get("groups", 1) != 1:
            return f"it has groups {node.attrs['groups']}; only groups 1 is pruned"
        if list(node.attrs.get("dilations", [1, 1])) != [1, 1]:
            return f"it has dilations {node.attrs['dilations']}; only dilation 1 is pruned"
        return None

    def _layer(self, graph: Graph, layer):
        names = {n.name: n for n in graph.nodes}
        if not isinstance(layer, str) or layer not in names:
            raise InputError(f"{self.name}: graph '{graph.name}' has no node named {layer!r}; "
                             f"its prunable layers: {C.name_list(self.layers(graph))}")
        why = self._why_not(names[layer])
        if why is None and layer in graph.meta.get(SELECTIONS_META, {}):
            why = "it is a channel selection an earlier pruning inserted"
        if why is not None:
            raise InputError(f"{self.name}: layer '{layer}' cannot be pruned: {why}")
        return names[layer]

    def _check(self, graph: Graph, layer, ratio):
        node = self._layer(graph, layer)
        if not _is_ratio(ratio):
            raise InputError(f"{self.name}: the ratio (fraction of input channels kept) of layer "
                             f"'{layer}' must be a number in (0, 1], got {ratio!r}")
        m = self.multiplicity
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise InputError(f"{self.name}: the channel multiplicity must be an integer >= 1, "
                             f"got {m!r}")
        return node

    def keep(self, graph: Graph, layer: str, ratio) -> int:
        """The number of input channels `compress` keeps in `layer` at `ratio`."""
        node = self._check(graph, layer, ratio)
        return keep_count(node.params["weight"].shape[-1], ratio, self.multiplicity)

    def rounded_ratio(self, graph: Graph, layer: str, ratio, cost: str = "macs") -> float:
        """AIMET's `ChannelRounder.round` (module docstring): `ratio` with multiplicity 1, else
        keep / C, the fraction of input channels `compress` keeps."""
        C.metric_name(cost)
        node = self._check(graph, layer, ratio)
        if self.multiplicity == 1:
            return float(ratio)
        channels = node.params["weight"].shape[-1]
        return C.ratio_float(Fraction(keep_count(channels, ratio, self.multiplicity), channels))

    def cost_ratio(self, graph: Graph, layer: str, ratio, cost: str = "macs") -> float:
        """Model cost after pruning `layer` alone at `ratio` (winnowed, not reconstructed) over
        the model cost before, in metric `cost`."""
        metric = C.metric_name(cost)
        pruned, _ = self.compress(graph, {layer: ratio}, cost=metric, reconstruct=False)
        before, after = pruned_cost(graph)[0].get(metric), pruned_cost(pruned)[0].get(metric)
        if before is None or after is None:
            raise InputError(f"{self.name}: the MACs of graph '{graph.name}' are unknown (a "
                             "layer's output height or width is not fixed); give the model "
                             "input a fixed height and width")
        return after / before

    def compress(self, graph: Graph, ratios: dict, *, cost: str = "macs", data=None,
                 seed: int = 0, reconstruct: bool = True, keep_channels: dict | None = None,
                 num_samples: int | None = None):
        """(new graph, report): `prune` with this method's multiplicity."""
        return prune(graph, ratios, cost=cost, data=data, seed=seed, reconstruct=reconstruct,
                     keep_channels=keep_channels, num_samples=num_samples, method=self)


def _manual(graph: Graph, method: ChannelPruning, keep_channels) -> dict:
    """{layer: ascending index array} of the manual mode, checked."""
    if keep_channels is None:
        return {}
    if not isinstance(keep_channels, dict):
        raise InputError(f"{method.name}: keep_channels must be a dict {{layer name: [channel "
                         f"indices]}}, got {type(keep_channels).__name__}")
    out = {}
    for layer, indices in keep_channels.items():
        node = method._layer(graph, layer)
        channels = node.params["weight"].shape[-1]
        if isinstance(indices, np.ndarray):
            indices = indices.tolist()
        if not isinstance(indices, (list, tuple)) or not indices or any(
                isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in indices):
            raise InputError(f"{method.name}: the channels to keep of layer '{layer}' must be a "
                             f"non-empty list of integers, got {indices!r}")
        bad = [int(i) for i in indices if not 0 <= i < channels]
        if bad:
            raise InputError(f"{method.name}: channel index {bad[0]} of layer '{layer}' is out of "
                             f"range; it has {channels} input channels (0..{channels - 1})")
        if len(set(int(i) for i in indices)) != len(indices):
            raise InputError(f"{method.name}: the channels to keep of layer '{layer}' repeat an "
                             f"index: {sorted(indices)}")
        out[layer] = np.array(sorted(int(i) for i in indices), np.int64)
    return out


def _feeds(graph: Graph, data, num_samples, name: str) -> dict:
    """{input: the images used} of `data` (module docstring)."""
    feeds = feeds_dict(graph, data)
    for spec in graph.inputs:
        if spec.name not in feeds:
            raise InputError(f"{name}: the reconstruction data lacks the input '{spec.name}'")
        if not isinstance(feeds[spec.name], np.ndarray) or feeds[spec.name].ndim < 1:
            raise InputError(f"{name}: the reconstruction data of input '{spec.name}' must be an "
                             "array with the images on axis 0")
        check_input(spec, feeds[spec.name])
    images = min(len(feeds[s.name]) for s in graph.inputs)
    if num_samples is not None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) \
                or num_samples < SAMPLES_PER_IMAGE:
            raise InputError(f"{name}: num_samples must be an integer >= {SAMPLES_PER_IMAGE} "
                             f"(one image gives {SAMPLES_PER_IMAGE} samples), got {num_samples!r}")
        wanted = int(num_samples) // SAMPLES_PER_IMAGE
        if wanted > images:
            raise InputError(f"{name}: num_samples {num_samples} needs {wanted} images, the data "
                             f"holds {images}; give more images or fewer samples")
        images = wanted
    if images < 1:
        raise InputError(f"{name}: the reconstruction data holds no image")
    return {s.name: feeds[s.name][:images] for s in graph.inputs}


def prune(graph: Graph, ratios: dict, *, cost: str = "macs", data=None, seed: int = 0,
          reconstruct: bool = True, keep_channels: dict | None = None,
          num_samples: int | None = None, method: ChannelPruning | None = None):
    """(new graph, report): every layer of `ratios` ({layer: fraction of input channels kept})
    and of `keep_channels` ({layer: [indices]}, manual mode) pruned in forward order (module
    docstring); `graph` is unchanged."""
    method = METHOD if method is None else method
    require_float_model(graph, f"{method.name} compression", "compress the float model")
    metric = C.metric_name(cost)
    if not isinstance(ratios, dict):
        raise InputError(f"{method.name}: ratios must be a dict {{layer name: ratio}}, got "
                         f"{type(ratios).__name__}")
    manual = _manual(graph, method, keep_channels)
    for layer, ratio in ratios.items():
        if layer not in manual:
            method._check(graph, layer, ratio)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InputError(f"{method.name}: the seed must be an integer, got {seed!r}")
    feeds = None
    if reconstruct:
        if data is None:
            raise InputError(f"{method.name}: reconstruction needs data (images to sample the "
                             "layers' inputs and outputs from); pass data= or reconstruct=False")
        feeds = _feeds(graph, data, num_samples, method.name)
    original = graph.copy().validate()
    shapes = original.infer_shapes()
    before = pruned_cost(original, shapes)[0]
    order = [n.name for n in original.topological_order()
             if n.name in ratios or n.name in manual]
    counts = {n: manual[n].size if n in manual else
              keep_count(original.node(n).params["weight"].shape[-1], ratios[n],
                         method.multiplicity) for n in order}
    pruned = [n for n in order if counts[n] < original.node(n).params["weight"].shape[-1]]
    pixels, targets = {}, {}
    if reconstruct and pruned:
        pixels = draw_pixels(original, feeds, pruned, np.random.default_rng(seed))
        targets = sampled_outputs(original, feeds, pixels)
    g, layers = original.copy(), {}
    for name in order:
        node = g.node(name)
        channels = node.params["weight"].shape[-1]
        if name in manual:
            kept, how = manual[name], "manual"
        else:
            kept, how = select_channels(node.params["weight"], counts[name]), "magnitude"
        info = {"reduced": {}, "selections": []}
        if kept.size < channels:
            g, info = winnow(g, name, kept, in_place=True)   # g is this function's copy
        entry = {"ratio": None if name not in ratios else float(ratios[name]),
                 "rounded_ratio": None if name not in ratios or name in manual
                 else method.rounded_ratio(original, name, ratios[name], metric),
                 "input_channels": int(channels), "kept": int(kept.size),
                 "kept_channels": [int(i) for i in kept], "selection": how,
                 "reduced": info["reduced"], "selections": info["selections"], "samples": 0,
                 "distinct_samples": 0, "unknowns": 0}
        if reconstruct and kept.size < channels:
            entry.update(_reconstruct(g, name, feeds, pixels[name], targets[name]))
        layers[name] = entry
    after, selections = pruned_cost(g)
    final = {n.name: n for n in g.nodes}
    new_shapes = g.infer_shapes()
    for name, entry in layers.items():
        entry["before"] = C.node_cost(original.node(name), shapes[original.node(name).outputs[0]]
                                      ).to_json()
        entry["after"] = (C.node_cost(final[name], new_shapes[final[name].outputs[0]]).to_json()
                          if name in final else {"macs": 0, "params": 0})
    report = {"method": method.name, "cost": metric, "seed": int(seed),
              "reconstruct": bool(reconstruct), "multiplicity": method.multiplicity,
              "layers": layers, "model": {"before": before.to_json(), "after": after.to_json()},
              "channel_selections": selections.to_json()}
    return g, report


def _reconstruct(g: Graph, name: str, feeds: dict, pixels: tuple, y: np.ndarray) -> dict:
    """Step 3 of the module docstring on node `name` of `g` (changed in place) with its sampled
    pixels (h, w) and original outputs there y; {"samples", "distinct_samples" (different
    (image, pixel) pairs), "unknowns" (coefficients per output channel)}."""
    node = g.node(name)
    w = node.params["weight"]
    xs = sampled_patches(g, feeds, name, pixels)
    new_w, new_b = reconstruct_weights(xs, y, "bias" in node.params)
    params = dict(node.params, weight=new_w.reshape(w.shape).astype(w.dtype))
    if new_b is not None:
        params["bias"] = new_b.astype(node.params["bias"].dtype)
    node.params = params
    return {"samples": int(xs.shape[0]), "distinct_samples": distinct_pixels(*pixels),
            "unknowns": int(xs.shape[1] + ("bias" in node.params))}


METHOD = ChannelPruning()
