"""Golden cases made from a model file: `refq golden generate --model M.tflite|M.onnx --inputs X`.

    case, data = file_case("model.tflite", {"x": x})      # import, run, trace every layer
    write_file_case("out/", "model.tflite", "x.npy")       # a case directory + out/manifest.json

The model is imported with `refq.importers.by_suffix.import_model` and run as the import gives it:

    integer   an integer graph (fully integer TFLite, ONNX QLinear*): `run_int`, every node
              output in its declared dtype; exact
    float32   a TFLite dynamic-range graph (int_hybrid_* and int_f32_* kernels): `refq.run` in
              float32, LiteRT's reference kernels bit for bit; exact
    float     a float graph: float64, sigmoid/tanh/softmax correctly rounded
              (`cases_float.run_float`); allclose
    sim       a QuantSim (an ONNX QDQ model): `QuantSim.run` (float32 fake-quant); allclose

Float and sim cases of a real model are not byte-stable across machines (the weights are not
dyadic, so sums depend on the summation order) and an implementation in float32 differs from them
by rounding: their tolerance is `FILE_TOLERANCE` unless given. A sim case keeps the simulation
(`QuantSim.to_json()`) in graph.meta["quantsim"], so that `reproduce` rebuilds it.
The case holds the graph, its parameters, the inputs (float32), the outputs and the trace of every
node output, in the format of golden/README.md, so `refq golden verify` and `load_case` read it.
"""
from __future__ import annotations

import os
import re

import numpy as np

from ..errors import InputError
from ..feeds import check_input
from .case import _ID, EXACT, Case, CaseData, allclose, manifest_entry, render
from .integer_graphs import quantization_of, run_integer

__all__ = ["file_case", "write_file_case", "load_inputs", "model_feeds", "default_case_id",
           "model_kind", "FILE_TOLERANCE", "run_model_case"]

#: allclose tolerance of float and sim cases made from a model file (see the module docstring)
FILE_TOLERANCE = allclose(1e-5, 1e-5)
SUFFIXES = (".tflite", ".onnx")


def default_case_id(path) -> str:
    """`model.<file stem>.<tflite|onnx>`, the stem lower-cased with other characters than
    [a-z0-9_] replaced by `_`."""
    stem, suffix = os.path.splitext(os.path.basename(os.fspath(path)))
    stem = re.sub(r"[^a-z0-9_]", "_", stem.lower()).strip("_") or "model"
    return f"model.{stem}.{suffix.lower().lstrip('.')}"


def _import(path):
    from ..importers.by_suffix import import_model

    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: a golden case is made from a .tflite or .onnx model; got "
                         f"'{suffix or 'no suffix'}' (Keras models: import, quantize and lower "
                         "them with `refq`, then write cases with refq.conformance)")
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such model file")
    return import_model(path)


#: the name prefixes of LiteRT's dynamic-range and float32 reference kernels
LITERT_FLOAT_KERNELS = ("int_hybrid_", "int_f32_")


def model_kind(model) -> str:
    """The case kind of an imported model (module docstring)."""
    from ..quant.quantsim import QuantSim

    if isinstance(model, QuantSim):
        return "sim"
    if "integer" in model.meta:
        return "integer"
    if model.meta.get("tflite", {}).get("kind") == "dynamic_range" or \
            any(n.op.startswith(LITERT_FLOAT_KERNELS) for n in model.nodes) and \
            model.meta.get("tflite", {}).get("kind") != "float":
        return "float32"
    return "float"


def load_inputs(path, graph) -> dict:
    """{input name: float32 array} from an .npy file (a single-input model) or an .npz file keyed
    by input name, checked by `model_feeds`."""
    from ..data_io import load_arrays

    return model_feeds(graph, load_arrays(path), os.fspath(path))


def model_feeds(graph, data, source: str) -> dict:
    """{input name: float32 array} from `data` (an array for a single-input model, or {input
    name: array}); InputError naming `source` and the input when an array does not fit (NHWC
    activations, the batch first, finite float values)."""
    from ..data_io import check_data

    names = [s.name for s in graph.inputs]
    if not isinstance(data, dict):
        if len(names) != 1:
            raise InputError(f"{source}: the model has inputs {names}; give an .npz file keyed "
                             "by input name")
        data = {names[0]: data}
    elif len(names) == 1 and len(data) == 1:
        data = {names[0]: next(iter(data.values()))}
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError(f"{source}: holds arrays {sorted(data)}; the model needs inputs {names}")
    feeds = {}
    for spec in graph.inputs:
        x = check_data(np.asarray(data[spec.name]), source, spec.name)
        if x.dtype.kind != "f":
            raise InputError(f"{source}: input '{spec.name}' has dtype {x.dtype}; give float "
                             "values (the case feeds float32)")
        try:
            check_input(spec, x)
        except InputError as e:
            raise InputError(f"{source}: {e}; refq activations are NHWC with the batch "
                             "first") from None
        feeds[spec.name] = np.ascontiguousarray(x, dtype=np.float32)
    return feeds


def _sim_quantization(sim) -> dict:
    """case.json "quantization" of a QuantSim: each enabled quantizer's encoding, keyed by its
    tensor or by "<node>/<param>"."""
    q = {}
    for qz in sim.quantizers.values():
        enc = sim.encodings.get(qz.name)
        if enc is None or not sim.enabled.get(qz.name, True):
            continue
        scale = np.atleast_1d(np.asarray(enc.scale, dtype=np.float64)).tolist()
        zp = np.atleast_1d(np.asarray(enc.zero_point)).astype(np.int64).tolist()
        signed = int(enc.qmin) < 0
        bits = int(np.ceil(np.log2(int(enc.qmax) - int(enc.qmin) + 1)))
        dtype = ("int" if signed else "uint") + str(8 if bits <= 8 else 16 if bits <= 16 else 32)
        entry = {"scale": scale, "zero_point": zp, "qmin": int(enc.qmin), "qmax": int(enc.qmax),
                 "axis": enc.axis if len(scale) > 1 else None, "dtype": dtype}
        keys = [f"{qz.node}/{qz.param}"] if qz.kind == "param" else list(qz.tensors)
        for k in keys:
            q[k] = entry
    return q


def run_model_case(graph, inputs: dict, kind: str) -> tuple:
    """(outputs, trace) of a model-file case of `kind` (module docstring); the trace holds every
    node output. Used to generate the case and by `refq.conformance.generate.reproduce`."""
    if kind == "integer":
        return run_integer(graph, inputs)
    if kind == "float":
        from .cases_float import run_float

        return run_float(graph, inputs, check_refq=False)
    if kind == "float32":
        from ..runtime import run

        values = run(graph, inputs, trace=True, dtype=np.float32)
    elif kind == "sim":
        from ..quant.quantsim import QuantSim

        sim = QuantSim.from_json(graph, graph.meta["quantsim"], source=f"case {graph.name}")
        values = sim.run(inputs, trace=True)
    else:
        raise InputError(f"model case kind {kind!r} is not one of integer, float, float32, sim")
    trace = {}
    for n in graph.topological_order():
        v = np.asarray(values[n.outputs[0]])
        if v.dtype != np.float32:
            raise AssertionError(f"graph {graph.name}: tensor {n.outputs[0]} is {v.dtype}, "
                                 "not float32")
        trace[n.outputs[0]] = v
    return {t: trace[t] for t in graph.outputs}, trace


def file_case(model_path, inputs=None, case_id=None, description=None, inputs_path=None,
              tolerance=None, kind=None) -> tuple:
    """(Case, CaseData) of the model in `model_path` run on `inputs` (an array or {input name:
    array}, `model_feeds`; or read from `inputs_path` by `load_inputs`). `kind`, when given, is
    the kind the import must give (the committed cases state it). tolerance: of float and sim
    cases (default FILE_TOLERANCE); integer and float32 cases are exact."""
    cid = case_id or default_case_id(model_path)
    if not _ID.match(cid) or ".." in cid or "__" in cid:
        raise InputError(f"case id {cid!r}: give a name of [a-z0-9_.-] without '..' or '__', "
                         "e.g. model.mynet.tflite")
    model = _import(model_path)
    got = model_kind(model)
    if kind is not None and got != kind:
        raise AssertionError(f"{model_path}: imported as a {got} model, expected {kind}")
    graph = model.graph.copy() if got == "sim" else model
    name = os.path.basename(os.fspath(model_path))
    graph.name = cid
    if got == "sim":
        graph.meta["quantsim"] = model.to_json()
    feeds = (load_inputs(inputs_path, graph) if inputs is None else
             model_feeds(graph, inputs, f"inputs of {name}"))
    outputs, trace = run_model_case(graph, feeds, got)
    profile = graph.meta["integer"]["profile"] if got == "integer" else None
    quantization = (quantization_of(graph, {}) if got == "integer" else
                    _sim_quantization(model) if got == "sim" else {})
    what = {"integer": f"integer graph, profile {profile}", "float32": "dynamic-range graph, "
            "LiteRT's float32 and hybrid reference kernels", "float": "float graph, float64",
            "sim": "QDQ quantization simulation"}[got]
    rows = next(iter(feeds.values())).shape[0]
    desc = description or (f"{name} imported by refq ({what}), run on {rows} input"
                           f"{'s' if rows != 1 else ''}; per-layer trace")
    tol = dict(EXACT) if got in ("integer", "float32") else dict(tolerance or FILE_TOLERANCE)
    data = CaseData(graph, feeds, outputs, trace, quantization)
    return Case(cid, got, lambda: data, desc, seed=0, profile=profile, tolerance=tol), data


def write_file_case(out_dir, model_path, inputs_path, case_id=None, tolerance=None) -> dict:
    """Make the case of `model_path` on the inputs in `inputs_path` and write it into suite
    directory `out_dir` (created if needed; its manifest.json gains or updates the case's entry).
    Returns {"case", "kind", "profile", "files", "bytes", "path"}."""
    from .suite_files import install_cases, read_suite_manifest

    case, data = file_case(model_path, case_id=case_id, inputs_path=inputs_path,
                           tolerance=tolerance)
    files = render(case, data)
    entries = read_suite_manifest(out_dir) if os.path.isdir(out_dir) else {}
    entries[case.id] = manifest_entry(case, files["case.json"])
    install_cases(out_dir, {case.id: files}, entries)
    return {"case": case.id, "kind": case.kind, "profile": case.profile, "files": len(files),
            "bytes": sum(len(b) for b in files.values()),
            "path": os.path.join(os.fspath(out_dir), case.id)}
