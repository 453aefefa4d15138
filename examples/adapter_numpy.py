"""A worked example adapter: a tiny independent NumPy implementation checked against the goldens.

Run it from the repository root (the harness puts the current directory on sys.path):

    refq golden generate                      # if golden/ is not there yet
    refq conformance run --adapter examples.adapter_numpy:run
    refq conformance run --adapter examples.adapter_numpy:run --cases 'float.dense.*,float.relu.*'

or from Python:

    from refq.conformance.adapter import run_adapter, format_adapter
    print(format_adapter(run_adapter("examples.adapter_numpy:run", "golden")))

The contract (refq/conformance/adapter.py): `run(case)` receives one golden case (`case.graph`, a
refq Graph whose nodes are in topological order; `case.inputs`, {input name: array}; `case.kind`;
...) and returns {output name: array}. Raising NotImplementedError marks the case "skipped", so an
implementation can grow op by op; skipping never passes by itself: a run that compares nothing is
INCOMPLETE (exit status 3), and `--max-skipped N` makes more than N skipped cases INCOMPLETE too.
This one knows four float ops -- relu, dense, add, identity -- and skips every other op and every
quant/integer case. To adapt your own framework, replace `OPS` by calls into it (build its model
from `case.graph`, feed `case.inputs`, return its outputs).
"""
import numpy as np


def _relu(xs, params, attrs):
    return np.maximum(xs[0], 0.0)


def _dense(xs, params, attrs):
    x, w = xs[0], params["weight"]          # weight [units, in]: y = x . W^T + b on the last axis
    y = np.tensordot(x, w, axes=([x.ndim - 1], [1]))
    return y + params["bias"] if "bias" in params else y


def _add(xs, params, attrs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x                       # NumPy broadcasting, as refq's add
    return out


def _identity(xs, params, attrs):
    return xs[0]


OPS = {"relu": _relu, "dense": _dense, "add": _add, "identity": _identity}


def run(case):
    """Evaluate `case.graph` on `case.inputs` with OPS; NotImplementedError for anything else."""
    if case.kind != "float":
        raise NotImplementedError(f"{case.kind} cases are not implemented by this example")
    missing = sorted({n.op for n in case.graph.nodes} - set(OPS))
    if missing:
        raise NotImplementedError(f"op(s) {', '.join(missing)} not implemented")
    env = {name: np.asarray(a, dtype=np.float64) for name, a in case.inputs.items()}
    for node in case.graph.nodes:           # topological order
        xs = [env[t] for t in node.inputs]
        env[node.outputs[0]] = OPS[node.op](xs, node.params, node.attrs)
    return {name: env[name] for name in case.output_names}
