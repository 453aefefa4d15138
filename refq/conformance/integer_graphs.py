"""What integer and model cases hold: the outputs and per-layer trace of an integer graph in the
dtypes it declares (`run_integer`, also used by `refq.conformance.generate.reproduce`) and the
case.json "quantization" of its tensors (`quantization_of`).
"""
from __future__ import annotations

import numpy as np

from ..fixedpoint.run import run_int

__all__ = ["run_integer", "quantization_of"]


def run_integer(graph, feeds) -> tuple:
    """(outputs, trace) of integer graph `graph`: every node output, integer tensors in their
    declared dtype (graph.meta["integer"]["tensors"]), float tensors as float32 (they hold
    float32 values)."""
    values, _ = run_int(graph, feeds, trace=True)
    tensors = graph.meta["integer"]["tensors"]
    trace = {}
    for n in graph.topological_order():
        t = n.outputs[0]
        v = values[t]
        if t in tensors:
            info = np.iinfo(tensors[t]["dtype"])
            if v.size and (v.min() < info.min or v.max() > info.max):
                raise AssertionError(f"tensor {t} leaves its dtype {tensors[t]['dtype']}")
            trace[t] = v.astype(tensors[t]["dtype"])
        else:
            v32 = v.astype(np.float32)
            if not np.array_equal(v32.astype(v.dtype), v):
                raise AssertionError(f"float tensor {t} does not hold float32 values")
            trace[t] = v32
    outputs = {t: trace[t] for t in graph.outputs}
    return outputs, trace


def quantization_of(graph, weight_scales: dict) -> dict:
    """case.json "quantization": every integer tensor's encoding, and each "<node>/weight"."""
    q = {}
    for t, e in graph.meta["integer"]["tensors"].items():
        q[t] = {"scale": [e["scale"]], "zero_point": [e["zero_point"]], "qmin": e["qmin"],
                "qmax": e["qmax"], "axis": None, "dtype": e["dtype"]}
    for node, (s_w, zp, dtype) in weight_scales.items():
        s = np.atleast_1d(np.asarray(s_w, dtype=np.float32)).astype(np.float64).tolist()
        lo, hi = {"int4": (-8, 7), "int8": (-128, 127), "uint8": (0, 255)}[dtype]
        q[f"{node}/weight"] = {"scale": s, "zero_point": [int(zp)] * len(s), "qmin": lo,
                               "qmax": hi, "axis": 0 if len(s) > 1 else None, "dtype": dtype}
    return q
