"""AIMET's sampling of output pixels and input patches for the reconstruction of a pruned conv2d.

Definition (aimet.md §9, DataSubSampler, with a seeded generator instead of NumPy's global one)
    For images n = 0..N−1 and samples_per_image = SAMPLES_PER_IMAGE = 10 samples each, from a
    generator rng = np.random.default_rng(seed) that channel pruning creates once and draws from
    for every layer in forward order:
        h = rng.integers(h_lo, h_hi, size=(N, 10))      drawn first, then
        w = rng.integers(w_lo, w_hi, size=(N, 10))      (uniform, with replacement)
    with [h_lo, h_hi) = [0, OH), unless a pad is larger than the kernel (pad_top > kh or
    pad_bottom > kh): then [pad_top, OH − pad_bottom), refq's reading of AIMET's restriction to
    [p, H − p) for its symmetric pads (an output pixel that would read padding only is not
    drawn); the same for the width with pad_left, pad_right and kw.
    Sample s = (n, h, w), in row-major order of (n, sample):
        X[s] = x_pad[n, h·sh : h·sh + kh, w·sw : w·sw + kw, :] flattened in (kh, kw, C) order
               (the OHWI order of the weight, so that y = X · w.reshape(O, −1)ᵀ + b), where x_pad
               is the layer input with the conv's pads of zeros, i.e. the input patch at
               (h·sh − pt, w·sw − pl) with zeros where it falls into the padding;
        Y[s] = y[n, h, w, :], all O outputs of the layer (bias included).
    The layer input x comes from the model compressed so far and the output y from the original
    model (`refq.compression.channel_pruning`). Dilation is 1 (prunable layers only).
Shapes
    x [N, H, W, C], y [N, OH, OW, O] -> X [10·N, kh·kw·C], Y [10·N, O].
On a model (`draw_pixels`, `sampled_outputs`, `sampled_patches`)
    The pixels of all layers are drawn first, layer after layer in forward order (pruning
    changes no layer's spatial geometry, so this equals drawing each layer's pixels when it is
    pruned); the model then runs on RECONSTRUCTION_BATCH images at a time (only the nodes the
    wanted tensors depend on) and keeps only the sampled values, so memory stays bounded by one
    chunk's activations.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..graph import Graph, TensorSpec
from ..layers.conv_geometry import pad_hw, window_geometry
from ..runtime import run

__all__ = ["SAMPLES_PER_IMAGE", "RECONSTRUCTION_BATCH", "pixel_range", "sample_pixels",
           "conv_geometry", "patches_at", "outputs_at", "sample_patches", "tensor_values",
           "draw_pixels", "sampled_outputs", "sampled_patches", "distinct_pixels"]

SAMPLES_PER_IMAGE = 10  # AIMET's hard-coded samples_per_image
#: images per forward pass while sampling a model (memory only: one chunk's activations held)
RECONSTRUCTION_BATCH = 32


def pixel_range(out: int, pad_before: int, pad_after: int, kernel: int) -> tuple:
    """[lo, hi) of the output rows (or columns) sampled along one axis (module docstring)."""
    if pad_before > kernel or pad_after > kernel:
        lo, hi = pad_before, out - pad_after
    else:
        lo, hi = 0, out
    if hi <= lo:
        raise InputError(f"no output pixel to sample: the range [{lo}, {hi}) is empty (output "
                         f"size {out}, pads {pad_before}, {pad_after}, kernel {kernel})")
    return lo, hi


def sample_pixels(rng: np.random.Generator, images: int, out_hw, pads, kernel) -> tuple:
    """(h, w), each int64 [images, SAMPLES_PER_IMAGE]: the sampled output pixels, heights drawn
    before widths. out_hw (OH, OW), pads (top, bottom, left, right), kernel (kh, kw)."""
    h_lo, h_hi = pixel_range(out_hw[0], pads[0], pads[1], kernel[0])
    w_lo, w_hi = pixel_range(out_hw[1], pads[2], pads[3], kernel[1])
    h = rng.integers(h_lo, h_hi, size=(images, SAMPLES_PER_IMAGE))
    w = rng.integers(w_lo, w_hi, size=(images, SAMPLES_PER_IMAGE))
    return h, w


def conv_geometry(x_shape, attrs: dict, weight_shape) -> tuple:
    """(pads (top, bottom, left, right), (OH, OW)) of conv2d `attrs` on an input of x_shape."""
    return window_geometry(x_shape[1:3], weight_shape[1:3], attrs["strides"], (1, 1),
                           attrs["padding"], attrs["pads"])


def patches_at(x: np.ndarray, attrs: dict, kernel, h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """X [10·N, kh·kw·C]: the input patches of the conv2d with `attrs` and kernel (kh, kw) on
    x [N, H, W, C] at the output pixels h, w [N, 10] (module docstring), rows in row-major
    order of (image, sample)."""
    kh, kw = kernel
    pads, _ = conv_geometry(x.shape, attrs, (None, kh, kw))
    img = np.repeat(np.arange(h.shape[0]), h.shape[1])
    sh, sw = attrs["strides"]
    xp = pad_hw(x, pads)
    rows = h.reshape(-1, 1) * sh + np.arange(kh)
    cols = w.reshape(-1, 1) * sw + np.arange(kw)
    patches = xp[img[:, None, None], rows[:, :, None], cols[:, None, :]]   # [S, kh, kw, C]
    return patches.reshape(img.size, -1)


def outputs_at(y: np.ndarray, h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Y [10·N, O]: y [N, OH, OW, O] at the output pixels h, w [N, 10] (module docstring)."""
    img = np.repeat(np.arange(h.shape[0]), h.shape[1])
    return y[img, h.reshape(-1), w.reshape(-1)]


def sample_patches(x: np.ndarray, y: np.ndarray, attrs: dict, kernel,
                   rng: np.random.Generator) -> tuple:
    """(X [10·N, kh·kw·C], Y [10·N, O]) for the conv2d with `attrs` and kernel (kh, kw) whose
    input is x [N, H, W, C] and output y [N, OH, OW, O] (module docstring), drawing the pixels
    from `rng`."""
    pads, (oh, ow) = conv_geometry(x.shape, attrs, (None,) + tuple(kernel))
    if y.shape[1:3] != (oh, ow) or y.shape[0] != x.shape[0]:
        raise InputError(f"layer output of shape {list(y.shape)} does not match the input "
                         f"{list(x.shape)} (expected {oh}x{ow} pixels per image)")
    h, w = sample_pixels(rng, x.shape[0], (oh, ow), pads, kernel)
    return patches_at(x, attrs, kernel, h, w), outputs_at(y, h, w)


# ---- samples of a model on data ------------------------------------------------------------

def tensor_values(graph: Graph, feeds: dict, tensors: list) -> dict:
    """{tensor: value} of `tensors` of `graph` on `feeds` (float64), running only the nodes
    they depend on."""
    producers = graph.producers()
    needed, stack = set(), list(tensors)
    while stack:
        t = stack.pop()
        p = producers.get(t)
        if p is not None and p.name not in needed:
            needed.add(p.name)
            stack.extend(p.inputs)
    nodes = [n for n in graph.nodes if n.name in needed]
    read = {t for n in nodes for t in n.inputs} | set(tensors)
    inputs = [s for s in graph.inputs if s.name in read]
    sub = Graph(inputs, list(dict.fromkeys(tensors)), nodes, graph.name, {})
    return run(sub, {s.name: feeds[s.name] for s in inputs})


def _chunks(feeds: dict):
    """(first image, {input: its images}) in chunks of RECONSTRUCTION_BATCH images."""
    n = len(next(iter(feeds.values())))
    for i0 in range(0, n, RECONSTRUCTION_BATCH):
        yield i0, {k: v[i0:i0 + RECONSTRUCTION_BATCH] for k, v in feeds.items()}


def draw_pixels(graph: Graph, feeds: dict, layers: list, rng) -> dict:
    """{layer: (h, w)}: the output pixels of every layer to reconstruct, drawn from `rng` layer
    after layer in forward order (`sample_pixels`, module docstring)."""
    specs = [TensorSpec(s.name, (None,) + tuple(feeds[s.name].shape[1:]), s.dtype)
             for s in graph.inputs]
    shapes = Graph(specs, graph.outputs, graph.nodes, graph.name).infer_shapes()
    images = len(next(iter(feeds.values())))
    out = {}
    for name in layers:
        node = graph.node(name)
        kernel = tuple(node.params["weight"].shape[1:3])
        pads, out_hw = conv_geometry(shapes[node.inputs[0]], node.attrs, (None,) + kernel)
        out[name] = sample_pixels(rng, images, out_hw, pads, kernel)
    return out


def sampled_outputs(graph: Graph, feeds: dict, pixels: dict) -> dict:
    """{layer: Y [10·N, O]}: the outputs of the layers of `pixels` in `graph` at their pixels,
    computed chunk by chunk (memory: one chunk's activations)."""
    tensors = {graph.node(name).outputs[0]: name for name in pixels}
    parts = {name: [] for name in pixels}
    for i0, chunk in _chunks(feeds):
        values = tensor_values(graph, chunk, list(tensors))
        for t, name in tensors.items():
            h, w = pixels[name]
            i1 = i0 + len(values[t])
            parts[name].append(outputs_at(values[t], h[i0:i1], w[i0:i1]))
    return {name: np.concatenate(p) for name, p in parts.items()}


def sampled_patches(graph: Graph, feeds: dict, layer: str, pixels: tuple) -> np.ndarray:
    """X [10·N, kh·kw·C]: the input patches of conv2d `layer` of `graph` on `feeds` at its
    pixels (h, w) (`patches_at`), computed chunk by chunk."""
    node = graph.node(layer)
    h, w = pixels
    parts = []
    for i0, chunk in _chunks(feeds):
        x = tensor_values(graph, chunk, [node.inputs[0]])[node.inputs[0]]
        parts.append(patches_at(x, node.attrs, node.params["weight"].shape[1:3],
                                h[i0:i0 + len(x)], w[i0:i0 + len(x)]))
    return np.concatenate(parts)


def distinct_pixels(h: np.ndarray, w: np.ndarray) -> int:
    """The number of different (image, h, w) among the sampled pixels h, w [N, 10]."""
    img = np.repeat(np.arange(h.shape[0]), h.shape[1])
    return int(np.unique(np.stack([img, h.reshape(-1), w.reshape(-1)], axis=1), axis=0).shape[0])
