"""Three standard image classifiers as refq Graphs with random weights, for the speed benchmarks.

    mobilenet_v2(alpha=1.0, resolution=224)   MobileNetV2 (Sandler et al. 2018), 300 M MACs at 224
    resnet50(resolution=224)                  ResNet50 v1 (He et al. 2016), ~3.9 G MACs at 224
    ARCHITECTURES                             the three benchmark configurations, by name

The graphs follow the Keras applications layer by layer (`keras.applications.MobileNetV2`,
`keras.applications.ResNet50`), so that they have the nodes a Keras import gives:
- MobileNetV2: conv 3x3/2 + BN + ReLU6; 17 inverted residual blocks (1x1 expansion by 6 except in
  the first block, depthwise 3x3, linear 1x1 projection, each followed by BN; ReLU6 after the
  first two; a residual add when stride is 1 and the widths match); stride-2 depthwise convs read
  an explicit `zero_pad2d` (Keras' `correct_pad`) and use 'valid' padding; conv 1x1 to 1280 + BN +
  ReLU6; global average pool; dense 1000 + softmax. Widths are `make_divisible(c·alpha, 8)`.
  Convolutions have no bias; BN epsilon 1e-3.
- ResNet50 v1: zero_pad2d 3, conv 7x7/2 64, BN, ReLU, zero_pad2d 1, max pool 3x3/2; four stages
  of 3, 4, 6, 3 bottlenecks (1x1 with the stage's stride, 3x3, 1x1 to 4x the width, BN after each,
  ReLU after the first two), the first of each stage with a 1x1 projection shortcut + BN, then
  add and ReLU; global average pool; dense 1000 + softmax. Convolutions have a bias; BN epsilon
  1.001e-5.
Parameter counts equal Keras' (3,538,984 for MobileNetV2-1.0, 25,636,712 for ResNet50, batch-norm
statistics included). Layout: NHWC activations, OHWI conv weights (depthwise `[C, 3, 3, 1]`,
groups = C), dense `[out, in]`.

Weights are drawn from np.random.default_rng(seed): conv kernels He-normal (std sqrt(2/fan_in)),
biases N(0, 0.1²), dense N(0, 1/fan_in). The batch norms have non-trivial statistics chosen so that
activations stay O(1): while the graph is built, each node runs (float32) on a probe batch of
N(0, 1) images from the same generator (2 at 224x224, more at smaller sizes, up to 32, so that the
last stage still sees enough pixels); a batch norm takes as moving mean the probe's channel mean
plus 0.1 std of noise and as moving variance the probe's channel variance (at least 1e-2) times
U(0.7, 1.4); gamma is U(0.6, 1.4) (U(0.2, 0.5) on the last BN of a residual branch, so that the
residual sums stay O(1) with depth) and beta N(0, 0.2²). Fed N(0, 1) images, every tensor then
has a standard deviation of order one. `resolution` builds the same layers at another input size
(the tests build them at 32x32); it must be at least 32 so that the last stage keeps one pixel.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from refq.graph import Graph, Node, TensorSpec
from refq.layers import get_op

__all__ = ["mobilenet_v2", "resnet50", "Architecture", "ARCHITECTURES", "make_divisible"]


def make_divisible(v: float, divisor: int = 8) -> int:
    """Keras' `_make_divisible`: the nearest multiple of `divisor` not below 90 % of v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class _Builder:
    """Appends nodes to a graph under construction and runs each on the probe batch as it goes."""

    def __init__(self, name: str, resolution: int, seed: int):
        if resolution < 32:
            raise ValueError(f"{name}: resolution must be at least 32, got {resolution}")
        self.name, self.rng, self.nodes = name, np.random.default_rng(seed), []
        self.input = TensorSpec("image", (None, resolution, resolution, 3), "float32")
        batch = min(32, max(2, round(2 * (224 / resolution) ** 2)))
        self.probe = {"image": self.rng.standard_normal((batch, resolution, resolution, 3))
                      .astype(np.float32)}

    def node(self, op: str, inputs, name: str, attrs=None, params=None) -> str:
        """Add node `name` = op(inputs); return its output tensor (also called `name`)."""
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        params = {k: np.asarray(v, np.float32) for k, v in (params or {}).items()}
        spec = get_op(op)
        attrs = spec.normalise_attrs(dict(attrs or {}), f"{self.name}: node '{name}'")
        self.nodes.append(Node(name, op, inputs, [name], attrs, params))
        self.probe[name] = spec.forward([self.probe[t] for t in inputs], params, attrs)
        return name

    def conv(self, x: str, name: str, cout: int, k: int, stride: int = 1, padding: str = "same",
             depthwise: bool = False, bias: bool = False) -> str:
        cin = self.probe[x].shape[-1]
        shape = (cin, k, k, 1) if depthwise else (cout, k, k, cin)
        fan_in = k * k * (1 if depthwise else cin)
        params = {"weight": self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)}
        if bias:
            params["bias"] = self.rng.normal(0.0, 0.1, shape[0])
        attrs = {"strides": [stride, stride], "padding": padding}
        if depthwise:
            attrs["groups"] = cin
        return self.node("conv2d", x, name, attrs, params)

    def bn(self, x: str, name: str, epsilon: float, last_in_branch: bool = False) -> str:
        """Batch norm with statistics near the probe's (see the module docstring)."""
        v = self.probe[x].astype(np.float64)
        axes = tuple(range(v.ndim - 1))
        mean, std = v.mean(axis=axes), v.std(axis=axes)
        c = mean.shape[0]
        params = {"mean": mean + 0.1 * np.maximum(std, 0.1) * self.rng.standard_normal(c),
                  "variance": np.maximum(std ** 2, 1e-2) * self.rng.uniform(0.7, 1.4, c),
                  "gamma": self.rng.uniform(*((0.2, 0.5) if last_in_branch else (0.6, 1.4)), c),
                  "beta": self.rng.normal(0.0, 0.2, c)}
        return self.node("batch_norm", x, name, {"epsilon": epsilon}, params)

    def head(self, x: str, classes: int) -> str:
        x = self.node("global_avg_pool2d", x, "avg_pool")
        fan_in = self.probe[x].shape[-1]
        x = self.node("dense", x, "predictions", {}, {
            "weight": self.rng.standard_normal((classes, fan_in)) * np.sqrt(1.0 / fan_in),
            "bias": self.rng.normal(0.0, 0.1, classes)})
        return self.node("softmax", x, "probs")

    def graph(self, output: str) -> Graph:
        return Graph([self.input], [output], self.nodes, name=self.name).validate()


# (output width, stride, expansion, repeats) of MobileNetV2's inverted residual stages.
MOBILENET_V2_STAGES = [(16, 1, 1, 1), (24, 2, 6, 2), (32, 2, 6, 3), (64, 2, 6, 4), (96, 1, 6, 3),
                       (160, 2, 6, 3), (320, 1, 6, 1)]


def mobilenet_v2(alpha: float = 1.0, resolution: int = 224, seed: int = 0,
                 classes: int = 1000) -> Graph:
    """MobileNetV2 with width multiplier `alpha` at `resolution`x`resolution` (module docstring)."""
    b = _Builder(f"mobilenet_v2_{alpha:g}_{resolution} (random weights)", resolution, seed)
    eps = 1e-3
    x = b.conv("image", "Conv1", make_divisible(32 * alpha), 3, 2)
    x = b.node("relu6", b.bn(x, "bn_Conv1", eps), "Conv1_relu")
    block = 0
    for width, stride, expansion, repeats in MOBILENET_V2_STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            p = f"block_{block}_" if block else "expanded_conv_"
            cin, cout = b.probe[x].shape[-1], make_divisible(int(width * alpha))
            h = x
            if block:
                h = b.conv(h, p + "expand", expansion * cin, 1)
                h = b.node("relu6", b.bn(h, p + "expand_BN", eps), p + "expand_relu")
            if s == 2:
                h = b.node("zero_pad2d", h, p + "pad", {"pads": [0, 1, 0, 1]} if
                           b.probe[h].shape[1] % 2 == 0 else {"pads": [1, 1, 1, 1]})
            h = b.conv(h, p + "depthwise", 0, 3, s, "valid" if s == 2 else "same", depthwise=True)
            h = b.node("relu6", b.bn(h, p + "depthwise_BN", eps), p + "depthwise_relu")
            h = b.conv(h, p + "project", cout, 1)
            residual = s == 1 and cin == cout
            h = b.bn(h, p + "project_BN", eps, last_in_branch=residual)
            x = b.node("add", [x, h], p + "add") if residual else h
            block += 1
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = b.conv(x, "Conv_1", last, 1)
    x = b.node("relu6", b.bn(x, "Conv_1_bn", eps), "out_relu")
    return b.graph(b.head(x, classes))


# (bottleneck width, blocks) of ResNet50's four stages; the first stage has stride 1.
RESNET50_STAGES = [(64, 3), (128, 4), (256, 6), (512, 3)]


def resnet50(resolution: int = 224, seed: int = 0, classes: int = 1000) -> Graph:
    """ResNet50 v1 at `resolution`x`resolution` (see the module docstring)."""
    b = _Builder(f"resnet50_{resolution} (random weights)", resolution, seed)
    eps = 1.001e-5
    x = b.node("zero_pad2d", "image", "conv1_pad", {"pads": [3, 3, 3, 3]})
    x = b.conv(x, "conv1_conv", 64, 7, 2, "valid", bias=True)
    x = b.node("relu", b.bn(x, "conv1_bn", eps), "conv1_relu")
    x = b.node("zero_pad2d", x, "pool1_pad", {"pads": [1, 1, 1, 1]})
    x = b.node("max_pool2d", x, "pool1_pool", {"pool_size": [3, 3], "strides": [2, 2]})
    for stage, (width, blocks) in enumerate(RESNET50_STAGES, 2):
        for i in range(1, blocks + 1):
            p = f"conv{stage}_block{i}_"
            s = 2 if i == 1 and stage > 2 else 1
            if i == 1:
                shortcut = b.bn(b.conv(x, p + "0_conv", 4 * width, 1, s, bias=True), p + "0_bn",
                                eps, last_in_branch=True)
            else:
                shortcut = x
            h = b.conv(x, p + "1_conv", width, 1, s, bias=True)
            h = b.node("relu", b.bn(h, p + "1_bn", eps), p + "1_relu")
            h = b.conv(h, p + "2_conv", width, 3, 1, bias=True)
            h = b.node("relu", b.bn(h, p + "2_bn", eps), p + "2_relu")
            h = b.bn(b.conv(h, p + "3_conv", 4 * width, 1, bias=True), p + "3_bn", eps,
                     last_in_branch=True)
            x = b.node("relu", b.node("add", [shortcut, h], p + "add"), p + "out")
    return b.graph(b.head(x, classes))


class Architecture(NamedTuple):
    """One benchmarked configuration: how to build it, at which size, what it should cost."""

    build: Callable      # build(resolution=..., seed=0) -> Graph
    resolution: int      # the input size the published figures are for
    macs: tuple          # (low, high) MACs per image at `resolution` as counted by refq.summarize
    target_share: float  # target: float32 GFLOP/s at batch 32 / NumPy matmul GFLOP/s, at least
    keras: tuple         # (keras.applications class name, its keyword arguments)


#: The three benchmark configurations. MAC ranges: MobileNetV2 300 M at 1.0/224 and 11 M at
#: 0.35/96 (Sandler et al. 2018 and the TF-Slim checkpoint table); ResNet50 v1 3.8 G (He et al.
#: 2016, table 1), 4.1 G as usually quoted for the stride-on-3x3 variant. refq's count adds one MAC
#: per element for each batch norm (+2 % on MobileNets) and Keras' MobileNetV2-0.35 keeps 16
#: channels in its first layers where TF-Slim has 8, hence the upper bound of 13 M for it.
ARCHITECTURES = {
    "mobilenet_v2_1.0_224": Architecture(
        lambda resolution=224, seed=0: mobilenet_v2(1.0, resolution, seed), 224, (285e6, 320e6),
        0.25, ("MobileNetV2", {"alpha": 1.0})),
    "resnet50_224": Architecture(
        lambda resolution=224, seed=0: resnet50(resolution, seed), 224, (3.8e9, 4.2e9),
        0.80, ("ResNet50", {})),
    "mobilenet_v2_0.35_96": Architecture(
        lambda resolution=96, seed=0: mobilenet_v2(0.35, resolution, seed), 96, (10.5e6, 13e6),
        0.11, ("MobileNetV2", {"alpha": 0.35})),
}
