"""The steps of a `refq.Plan`: one per node (`plain_steps`), or with the fused and in-place forms
its docstring describes (`fused_steps`: epilogues of a conv2d or dense layer, residual adds,
float32 batch-norm folds, pads into convolutions, elementwise ops in place), and their lifetimes
(`set_lifetimes`). Either way a float32 plan's conv2d steps carry its Winograd choice
(`forward_fused`)."""
from __future__ import annotations

import functools

import numpy as np

from .layers.normalization import fold_into_producer
from .layers.winograd import TransformedWeights
from .ops import get_op

__all__ = ["Step", "plain_steps", "fused_steps", "set_lifetimes", "inplace_step"]


class Step:
    """One unit of work: `fn(inputs) -> array` on the values in slots `ins`, result into slot
    `out`; `free` lists the slots released after it. `inplace(inputs) -> bool`, when given,
    computes the same result into inputs[0] if it can (True) and is tried when inputs[0] is not
    used again. `names` are the graph nodes the step evaluates, the first one reading `ins`;
    `hooked`: its epilogue already applied the output's in-place hook."""

    __slots__ = ("fn", "ins", "out", "free", "inplace", "names", "hooked")

    def __init__(self, fn, ins, out, names, inplace=None, hooked=False):
        self.fn, self.ins, self.out, self.names = fn, ins, out, names
        self.inplace, self.hooked, self.free = inplace, hooked, ()


def plain_steps(plan, call):
    """One step per node: `op.forward` on its parameters (a conv2d's with the plan's Winograd
    choice, `forward_fused`), or `call(node, op, xs, params)`."""
    steps = []
    for node in plan.order:
        op, p, a = get_op(node.op), plan.params[node.name], plan.attrs[node.name]
        if call is not None:
            fn = lambda xs, node=node, op=op, p=p: call(node, op, xs, p)  # noqa: E731
        elif node.op == "conv2d" and plan.winograd:
            fn = lambda xs, f=forward_fused(plan, node), p=p, a=a: f(xs, p, a, None)  # noqa: E731
        else:
            fn = lambda xs, op=op, p=p, a=a: op.forward(xs, p, a)  # noqa: E731
        steps.append(Step(fn, [plan.slot[t] for t in node.inputs], plan.slot[node.outputs[0]],
                           (node.name,)))
    return steps


def fused_steps(plan, hooks):
    """Steps with fusion and in-place forms (`refq.plan`'s docstring). Graph outputs and tensors
    with a tensor hook stay visible; a node with a hooked input reads the hooked value, so it
    is never fused into its producer; a tensor's in-place hook runs in the epilogue where the
    tensor is produced, and the epilogue may go on to its one reader."""
    kept = frozenset(plan.outputs) | frozenset(hooks.tensor_hooks)
    if hooks.on_tensor is not None:
        kept |= frozenset(hooks.inplace_hooks)
    read_hooked = {n for n, _ in hooks.input_hooks}
    readers: dict = {}
    for node in plan.order:
        for t in node.inputs:
            readers.setdefault(t, []).append(node)

    def private(t):
        """t is read once, by one node, and seen by nothing else but its in-place hook."""
        r = readers.get(t, ())
        return t not in kept and len(r) == 1 and r[0].inputs.count(t) == 1 \
            and r[0].name not in read_hooked

    skip, pads_of, steps = set(), {}, []
    ready = {plan.slot[s.name] for s in plan.inputs}   # slots computed by earlier steps
    for node in plan.order:
        if node.name in skip:
            continue
        a, p, out = plan.attrs[node.name], plan.params[node.name], node.outputs[0]
        if node.op == "zero_pad2d" and private(out) and node.name not in read_hooked \
                and out not in hooks.inplace_hooks:
            conv = readers[out][0]
            ca = plan.attrs[conv.name]
            if conv.op == "conv2d" and ca["padding"] in ("valid", "explicit"):
                base = ca["pads"] if ca["padding"] == "explicit" else [0, 0, 0, 0]
                pads_of[conv.name] = (node.inputs[0], [u + v for u, v in zip(a["pads"], base)])
                continue
        ins = list(node.inputs)
        if node.name in pads_of:
            ins[0], pads = pads_of[node.name]
            a = dict(a, padding="explicit", pads=pads)
        slots = [plan.slot[t] for t in ins]
        if get_op(node.op).forward_fused is not None:
            epilogue, names, last, extra = [], [node.name], node, []
            bn = _foldable_batch_norm(plan, node, hooks, private, readers)
            if bn is not None:
                p = dict(p, **plan._folded[node.name])
                names.append(bn.name)
                skip.add(bn.name)
                last = bn
            while True:
                t = last.outputs[0]
                hook = hooks.inplace_hooks.get(t) if t not in kept else None
                if hook is not None:
                    epilogue.append(hook)   # the hooked value is what the reader sees
                if not private(t):
                    break
                nxt = readers[t][0]
                other = _residual(plan, nxt, t, ready)
                if other is not None:
                    step = _ResidualAdd(len(slots) + len(extra))
                    extra.append(other)
                else:
                    step = inplace_step(nxt.op, plan.params[nxt.name], plan.attrs[nxt.name],
                                        plan.dtype)
                if step is None:
                    break
                epilogue.append(step)
                names.append(nxt.name)
                skip.add(nxt.name)
                last = nxt
            steps.append(Step(_producer(forward_fused(plan, node), p, a,
                                         _fused_chains(epilogue), len(slots)), slots + extra,
                               plan.slot[last.outputs[0]], tuple(names),
                               hooked=hook is not None))
            ready.add(steps[-1].out)
            continue
        op = get_op(node.op)
        step = Step(lambda xs, op=op, p=p, a=a: op.forward(xs, p, a), slots, plan.slot[out],
                     (node.name,))
        unary = inplace_step(node.op, p, a, plan.dtype)
        if unary is not None:
            step.inplace = lambda xs, f=unary: f(xs[0]) is None
        elif node.op == "add" and len(ins) == 2:
            step.inplace = _add_into
        steps.append(step)
        ready.add(step.out)
    return steps


def forward_fused(plan, node):
    """The `forward_fused` of `node`'s op in `plan`: a conv2d's with the plan's Winograd choice
    and the node's `TransformedWeights`, which the plan keeps for all its runs."""
    f = get_op(node.op).forward_fused
    if node.op == "conv2d" and plan.winograd:
        kept = plan._winograd.setdefault(node.name, TransformedWeights())
        return functools.partial(f, winograd=kept)
    return f


def _fused_chains(epilogue):
    """The epilogue with in-place hooks fused with their neighbours (`refq.quant.fq_chain`): a
    hook that has `then`, the step after it and the hook after that replaced by
    hook.then(step, next hook) (a fake quantization, a clamp and another one), else a step and
    a hook after it that has `after` by hook.after(step) (a clamp, then a fake quantization),
    where those fuse."""
    out = []
    for f in epilogue:
        out.append(f)
        then = getattr(out[-3], "then", None) if len(out) >= 3 else None
        fused = then(out[-2], out[-1]) if then is not None else None
        if fused is not None:
            out[-3:] = [fused]
            continue
        after = getattr(out[-1], "after", None) if len(out) >= 2 else None
        fused = after(out[-2]) if after is not None else None
        if fused is not None:
            out[-2:] = [fused]
    return out


def _foldable_batch_norm(plan, node, hooks, private, readers):
    """The batch_norm node that reads `node`'s output and is folded into its parameters
    (`refq.plan`'s docstring, Batch norms in float32), or None."""
    t = node.outputs[0]
    if not plan.fold_batch_norms or t in hooks.inplace_hooks or not private(t):
        return None
    bn = readers[t][0]
    if bn.op != "batch_norm" or inplace_step(bn.op, plan.params[bn.name],
                                             plan.attrs[bn.name], plan.dtype) is None:
        return None   # not on the last (channel) axis
    if node.name not in plan._folded:
        plan._folded[node.name] = fold_into_producer(
            plan.params[node.name], plan.params[bn.name], plan.attrs[bn.name]["epsilon"],
            plan.dtype)
    return bn if plan._folded[node.name] is not None else None


def _residual(plan, node, t, ready):
    """The slot of the other operand when `node` is an add of t and a tensor already computed
    (`ready`) of the same fully static shape, which the producer of t can add block by block;
    else None."""
    if node.op != "add" or len(node.inputs) != 2 or node.inputs.count(t) != 1:
        return None
    other = node.inputs[1] if node.inputs[0] == t else node.inputs[0]
    shape = plan.shapes.get(t)
    if plan.slot[other] not in ready or plan.shapes.get(other) != shape or shape is None \
            or any(d is None for d in shape[1:]):
        return None
    return plan.slot[other]


def inplace_step(op: str, params, attrs, dtype):
    """The in-place step of op `op` for these parameters (`Op.inplace`), or None."""
    make = get_op(op).inplace
    return None if make is None else make(params, attrs, dtype)


def _producer(forward_fused, params, attrs, epilogue, n_in):
    """fn(xs) running a conv2d/dense forward on xs[:n_in] with the epilogue steps applied per
    block; a `_ResidualAdd` step reads its operand from xs."""
    if not any(isinstance(f, _ResidualAdd) for f in epilogue):
        if not epilogue:
            return lambda xs: forward_fused(xs, params, attrs, None)
        if len(epilogue) == 1:
            return lambda xs: forward_fused(xs, params, attrs, epilogue[0])

    def run(xs):
        steps = [f.bind(xs) if isinstance(f, _ResidualAdd) else f for f in epilogue]

        def chain(block):
            for f in steps:
                f(block)
        return forward_fused(xs[:n_in], params, attrs, chain)
    return run


class _ResidualAdd:
    """The epilogue step block += the same block of xs[k], the other operand of an add: an output
    block is a C-contiguous run of the producer's output array (the base of the block's view), so
    the same run of the other operand, of the same shape, is its element-wise partner."""

    def __init__(self, k):
        self.k = k

    def bind(self, xs):
        flat = np.ascontiguousarray(xs[self.k]).reshape(-1)

        def step(block):
            root = block if block.base is None else block.base
            start = (block.__array_interface__["data"][0] -
                     root.__array_interface__["data"][0]) // block.itemsize
            if root.size != flat.size or not block.flags.c_contiguous or \
                    not 0 <= start <= flat.size - block.size or block.dtype != flat.dtype:
                raise AssertionError("a fused residual add got a block that is not a contiguous "
                                     "run of an output of the operand's size")
            np.add(block, flat[start:start + block.size].reshape(block.shape), out=block)
        return step


def _add_into(xs) -> bool:
    """a + b into a, when a has the shape of the result (a + b = b + a exactly)."""
    a, b = xs
    if a.shape != np.broadcast_shapes(a.shape, b.shape) or a.dtype != b.dtype:
        return False
    np.add(a, b, out=a)
    return True


def set_lifetimes(steps, keep: set):
    """Give each step the input slots read for the last time by it (never the `keep` slots)."""
    last = {}
    for k, s in enumerate(steps):
        for i in s.ins:
            last[i] = k
    for k, s in enumerate(steps):
        s.free = tuple(sorted({i for i in s.ins if last[i] == k and i not in keep}))
