"""Where quantizers go: AIMET 2.42's placement rules applied to a refq graph.

`place_quantizers(graph, config, param_bw, act_bw)` returns the list of quantizers a simulation
needs and a report of the decisions. The rules (aimet.md §0.2.6, §3.2-3.3), in order:
1. Every op's output gets a quantizer when `config.output_quantized(type)` says so (defaults,
   op_type overrides, and the implicit rule: grid-preserving ops such as Flatten, Reshape, MaxPool,
   Pad and Identity stay unquantized unless the config names them). Input quantizers exist only
   where an op_type sets `is_input_quantized`.
2. Parameters: weights by `params`/`op_type.params`; a bias is never quantized in simulation.
   Per-channel where `per_channel_quantization` holds for the op type, weights only, on the
   weight's output-channel axis (`weight_output_axis`): axis 0 for conv2d, dense and
   conv_transpose2d (refq's layouts put the output channel first; AIMET's axis 1 of ConvTranspose
   is the same channel in PyTorch's layout, aimet.md §1.6), and for gemm axis 1 of B [K, P]
   (transB = 0) or axis 0 of B [P, K] (transB = 1), the output column of ONNX's Gemm.
3. BN fusion: a conv2d/dense whose only consumer is a batch_norm hands its output quantizer state
   to the BN output; the BN's input and parameter quantizers are turned off.
4. Supergroups, longest pattern first, disjoint: inside a match the first op's output, the middle
   ops' inputs and outputs and the last op's inputs are unquantized. A node whose output has more
   than one consumer cannot continue a pattern; a depthwise conv cannot start one; a fused BN that
   the pattern does not name is skipped transparently (Conv→BN→Relu matches [Conv, Relu]).
5. `model_input` quantizes the graph inputs; `model_output` (when given) overrides the outputs.
6. Encoding propagation: the output quantizer of a Relu (and of a Concat, for each input) is shared
   with its producer when the producer has an enabled output quantizer; the walk back passes
   through unquantized grid-preserving ops. So dw-conv(+BN)→Relu share one quantizer, whose range
   covers the pre-ReLU negatives.
Activation quantizers are asymmetric unless the op type says `is_symmetric`; parameter quantizers
take `is_symmetric` from the params rules (symmetric by default).

Quantizers are placed on float models only: an integer model (ops `int_*`, or
graph.meta["integer"], the output of `refq lower`) is refused by `require_float_model`, which the
simulation and the algorithms that prepare a model for it call first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import QuantError
from ..graph import Graph
from ..layers import REGISTRY, ops_with
from .config import GRID_PRESERVING, ONNX_TYPE, PARAM_TYPE, QuantsimConfig
from .grid import check_bitwidth

#: The weighted layers (`Traits.bn_foldable`): a batch norm after them is fused, their weights
#: are quantized per output channel where the config says so.
WEIGHTED = ops_with("bn_foldable")
#: The layers with a weight parameter (the op record requires one): their weights may be
#: quantized per output channel (`weight_output_axis`), whether or not a batch norm folds in.
PER_CHANNEL_WEIGHTED = tuple(name for name, op in REGISTRY.items() if op.params.get("weight"))

__all__ = ["QuantizerSpec", "place_quantizers", "param_quantizer_name", "is_depthwise",
           "integer_model_kind", "require_float_model", "weight_output_axis",
           "weight_input_axis", "blockwise_weights", "PER_CHANNEL_WEIGHTED"]


def weight_output_axis(node) -> int:
    """The axis of `node`'s weight that indexes its output channels: 0 (refq's convention,
    DESIGN.md) except for gemm with transB = 0, whose weight is ONNX's B [K, P] (axis 1)."""
    return 1 if node.op == "gemm" and not node.attrs.get("transB", 0) else 0


def weight_input_axis(node) -> int:
    """The axis of `node`'s weight that indexes its input channels, along which blocked weight
    encodings run: the last for conv2d and the transposed convolutions (OHWI, [out, kh, kw,
    in/groups], and the 1-D and 3-D forms), 1 for dense ([out, in]) and gemm with transB = 1, 0
    for gemm with transB = 0 (B [K, P])."""
    if node.op.startswith("conv"):
        return node.params["weight"].ndim - 1
    return 0 if node.op == "gemm" and not node.attrs.get("transB", 0) else 1


def integer_model_kind(graph) -> str | None:
    """How `graph` shows that it is an integer model ("lowered for profile 'tflite'", "ops
    int_conv2d, ..."), or None for a float model."""
    meta = graph.meta.get("integer") if isinstance(graph.meta, dict) else None
    if meta is not None:
        profile = meta.get("profile") if isinstance(meta, dict) else None
        return f"lowered for profile '{profile}'" if profile else "graph.meta['integer']"
    ops = sorted({n.op for n in graph.nodes if n.op.startswith("int_")})
    if ops:
        return "ops " + ", ".join(ops[:3]) + (", ..." if len(ops) > 3 else "")
    return None


def require_float_model(graph, what: str, hint: str) -> None:
    """QuantError naming the model when `graph` is an integer model: `what` (e.g. "quantization
    (`refq quantize`)") needs a float model; `hint` says what to do instead."""
    kind = integer_model_kind(graph)
    if kind is not None:
        raise QuantError(f"model '{graph.name}' is an integer model ({kind}); {what} takes a "
                         f"float model: {hint}")


@dataclass
class QuantizerSpec:
    """One quantizer. Activation quantizers observe and quantize every tensor in `tensors`
    (several when shared); an input quantizer quantizes `tensors[0]` as node `node` reads its input
    `input_index`; a parameter quantizer quantizes `node`'s parameter `param`."""

    name: str
    kind: str                       # "activation" | "input" | "param"
    bitwidth: int
    symmetric: bool
    tensors: list = field(default_factory=list)
    node: str | None = None
    param: str | None = None
    input_index: int | None = None
    axis: int | None = None
    strict: bool = False
    unsigned_symmetric: bool = False
    fixed_range: tuple | None = None
    block_size: int | None = None

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["tensors"] = list(self.tensors)
        d["fixed_range"] = None if self.fixed_range is None else list(self.fixed_range)
        if self.block_size is None:
            del d["block_size"]
        return d

    @staticmethod
    def from_json(d: dict) -> "QuantizerSpec":
        d = dict(d)
        if d.get("fixed_range") is not None:
            d["fixed_range"] = tuple(d["fixed_range"])
        return QuantizerSpec(**d)


def param_quantizer_name(node: str, param: str) -> str:
    """`<node>.<AIMET parameter name>`, the name AIMET's encodings files use (`conv1.weight`)."""
    return f"{node}.{PARAM_TYPE.get(param, param)}"


def is_depthwise(node) -> bool:
    """A conv2d with one input channel per group and more than one group."""
    return (node.op == "conv2d" and node.attrs.get("groups", 1) > 1
            and node.params["weight"].shape[-1] == 1)


def _match(start, pattern, consumers, fused_bn, taken):
    """The nodes of `pattern` matched from `start` (fused BNs skipped), or None."""
    if start.name in taken or ONNX_TYPE[start.op] != pattern[0] or is_depthwise(start):
        return None
    chain = [start]
    node = start
    k = 1
    while k < len(pattern):
        nxt = consumers.get(node.outputs[0], [])
        if len(nxt) != 1 or nxt[0].name in taken:
            return None
        node = nxt[0]
        if node.name in fused_bn and pattern[k] != "BatchNormalization":
            chain.append(node)
            continue
        if ONNX_TYPE[node.op] != pattern[k]:
            return None
        chain.append(node)
        k += 1
    return chain


def place_quantizers(graph: Graph, config: QuantsimConfig, param_bw: int = 8,
                     act_bw: int = 8) -> tuple:
    """(quantizers, report) for `graph` under `config`. See the module docstring."""
    order = graph.topological_order()
    consumers = graph.consumers()
    producers = graph.producers()
    otype = {n.name: ONNX_TYPE[n.op] for n in order}

    out_on = {n.name: config.output_quantized(otype[n.name]) for n in order}
    in_on = {(n.name, i): config.input_quantized(otype[n.name]) for n in order
             for i in range(len(n.inputs))}
    param_on = {(n.name, p): PARAM_TYPE.get(p, p) != "bias"
                and config.param_setting(otype[n.name], PARAM_TYPE.get(p, p), "is_quantized")
                for n in order for p in n.params}

    # 3. BN fusion
    fused_bn = {}
    for n in order:
        nxt = consumers.get(n.outputs[0], [])
        if n.op in WEIGHTED and len(nxt) == 1 and nxt[0].op == "batch_norm":
            bn = nxt[0]
            fused_bn[bn.name] = n.name
            out_on[bn.name], out_on[n.name] = out_on[n.name], False
            in_on[(bn.name, 0)] = False
            for p in bn.params:
                param_on[(bn.name, p)] = False

    # 4. supergroups
    taken, groups = set(), []
    for pattern in sorted(config.supergroups, key=len, reverse=True):
        for n in order:
            chain = _match(n, pattern, consumers, fused_bn, taken)
            if chain is None:
                continue
            taken.update(c.name for c in chain)
            groups.append([c.name for c in chain])
            for pos, c in enumerate(chain):
                if pos < len(chain) - 1:
                    out_on[c.name] = False
                if pos > 0:
                    for i in range(len(c.inputs)):
                        in_on[(c.name, i)] = False

    # 5. model outputs
    if config.model_output_quantized is not None:
        for t in graph.outputs:
            if t in producers:
                out_on[producers[t].name] = config.model_output_quantized

    # activation quantizers, one per quantized tensor, then merged by sharing (6.)
    owner = {}  # tensor -> representative tensor (union-find)

    def find(t):
        while owner[t] != t:
            owner[t] = owner[owner[t]]
            t = owner[t]
        return t

    act_symmetric = {}
    fixed = {}
    if config.model_input_quantized:
        for spec in graph.inputs:
            owner[spec.name] = spec.name
            act_symmetric[spec.name] = config.output_symmetric("")
    for n in order:
        if out_on[n.name]:
            t = n.outputs[0]
            owner[t] = t
            act_symmetric[t] = config.output_symmetric(otype[n.name])
            fixed[t] = config.encoding_constraints(otype[n.name])

    def quantized_source(t):
        """Walk back from tensor t through unquantized grid-preserving single-input ops."""
        while t in producers:
            p = producers[t]
            if out_on[p.name]:
                return t
            if otype[p.name] not in GRID_PRESERVING or len(p.inputs) != 1:
                return None
            t = p.inputs[0]
        return None

    shared = []
    for n in order:
        if not out_on[n.name] or otype[n.name] not in ("Relu", "Concat"):
            continue
        for t_in in n.inputs:
            src = quantized_source(t_in)
            if src is not None and find(src) != find(n.outputs[0]):
                owner[find(src)] = find(n.outputs[0])
                shared.append([src, n.outputs[0]])

    groups_of = {}
    for t in owner:  # insertion order = graph inputs, then topological order
        groups_of.setdefault(find(t), []).append(t)
    quantizers = []
    for root, tensors in groups_of.items():
        first = tensors[0]
        fr = next((fixed[t] for t in tensors if fixed.get(t)), None)
        quantizers.append(QuantizerSpec(
            name=first, kind="activation", bitwidth=act_bw,
            symmetric=act_symmetric[root], tensors=tensors, fixed_range=fr,
            strict=config.strict_symmetric, unsigned_symmetric=config.unsigned_symmetric))
    for n in order:
        for i, t in enumerate(n.inputs):
            if in_on[(n.name, i)]:
                quantizers.append(QuantizerSpec(
                    name=f"{n.name}:input{i}", kind="input", bitwidth=act_bw,
                    symmetric=config.output_symmetric(otype[n.name]), tensors=[t], node=n.name,
                    input_index=i, strict=config.strict_symmetric,
                    unsigned_symmetric=config.unsigned_symmetric))
        for p in n.params:
            if not param_on[(n.name, p)]:
                continue
            ptype = PARAM_TYPE.get(p, p)
            per_channel = (ptype == "weight" and n.op in PER_CHANNEL_WEIGHTED
                           and config.per_channel(otype[n.name]))
            quantizers.append(QuantizerSpec(
                name=param_quantizer_name(n.name, p), kind="param", bitwidth=param_bw,
                symmetric=config.param_setting(otype[n.name], ptype, "is_symmetric"),
                node=n.name, param=p, axis=weight_output_axis(n) if per_channel else None,
                strict=config.strict_symmetric, unsigned_symmetric=config.unsigned_symmetric))
    report = {"supergroups": groups, "fused_batch_norms": fused_bn, "shared": shared,
              "activation_quantizers": sum(q.kind != "param" for q in quantizers),
              "param_quantizers": sum(q.kind == "param" for q in quantizers)}
    return quantizers, report


def blockwise_weights(graph: Graph, quantizers: dict, block_size, ops=None, *,
                      bitwidth=None, symmetric=None, frozen=()) -> list:
    """Make weight quantizers blocked, in place: `block_size` B along the weight's input-channel
    axis (`weight_input_axis`), per channel on its output-channel axis (`weight_output_axis`),
    as AIMET's `set_blockwise_quantization_for_weights` with an integer block size
    (aimet_torch/v2/quantsim/config_utils.py: blocks on the in-channels axis, −1, i.e. whole,
    on the kernel axes). `ops`: refq op names or node names (default: every conv2d, dense,
    conv_transpose2d and gemm); `bitwidth`/`symmetric` replace the quantizers' own when given.
    `quantizers`: {name: QuantizerSpec}. Returns the names changed; QuantError (one line), with
    nothing changed, for a block size that is not an integer >= 1, a name that is neither a
    weighted op nor a node with a weight quantizer, a chosen quantizer in `frozen`, or nothing
    to change."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise QuantError(f"block size (--block-size) must be an integer >= 1, got "
                         f"{block_size!r}")
    if bitwidth is not None:
        bitwidth = check_bitwidth(bitwidth)
    nodes = {n.name: n for n in graph.nodes}
    weights = {q.node: q for q in quantizers.values()
               if q.kind == "param" and q.param == "weight" and q.node in nodes
               and nodes[q.node].op in PER_CHANNEL_WEIGHTED}
    wanted = set(PER_CHANNEL_WEIGHTED) if ops is None else set(ops)
    unknown = sorted(w for w in wanted if w not in PER_CHANNEL_WEIGHTED and w not in weights)
    if unknown:
        raise QuantError(f"blockwise weights: '{unknown[0]}' is neither a weighted op "
                         f"({', '.join(PER_CHANNEL_WEIGHTED)}) nor a node with a weight quantizer")
    chosen = [(nodes[n], q) for n, q in weights.items() if nodes[n].op in wanted or n in wanted]
    if not chosen:
        raise QuantError(f"blockwise weights: no weight quantizer of {sorted(wanted)} in graph "
                         f"'{graph.name}'")
    hit = sorted(q.name for _, q in chosen if q.name in frozen)
    if hit:
        raise QuantError(f"blockwise weights: quantizer '{hit[0]}' is frozen; set block sizes "
                         "before freezing encodings")
    for node, q in chosen:
        q.block_size, q.axis = int(block_size), weight_output_axis(node)
        q.bitwidth = q.bitwidth if bitwidth is None else bitwidth
        q.symmetric = q.symmetric if symmetric is None else bool(symmetric)
    return [q.name for _, q in chosen]
