"""Write the ONNX backend node tests in refq's scope, in ONNX's own layout, and a manifest of
every node test of the installed `onnx` package.

Runs in refq's own environment (the `onnx` package, no runtime): the cases come from
`onnx.backend.test.case.node.collect_testcases`, the generator behind ONNX's
`backend-test-tools generate-data`; the inputs and expected outputs are the ones ONNX's own
NumPy reference definitions compute there (the global NumPy seed is fixed first, as some cases
draw random inputs). Output, beside this script:
    manifest.json      {"onnx": version, "tests": {name: [op types of its graph]}} for every
                       node test
    node/<name>/model.onnx, node/<name>/test_data_set_0/{input,output}_<k>.pb.gz
                       for each test whose op types all lie in SCOPE and whose inputs and
                       outputs are tensors (tests/test_onnx_backend.py imports SCOPE from here):
                       ONNX's layout, each TensorProto gzip-compressed (mtime 0: the bytes are
                       reproducible); a test over MAX_BYTES is only named in the manifest
Run: python tests/data/onnx/backend/make_backend.py
"""
import gzip
import json
import os
import shutil
import sys

import numpy as np

#: The ONNX op types refq's importer reads (float converters, constant folding, QDQ and integer
#: operators). A node test is in refq's scope when every op type of its graph is here.
SCOPE = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "BatchNormalization", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool", "Clip", "Relu", "Sigmoid", "Tanh", "Softmax",
    "LeakyRelu", "HardSigmoid", "HardSwish", "Identity", "Dropout", "Round", "Flatten",
    "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Pad", "Add", "Sub", "Mul", "Div",
    "Constant", "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger"})

#: The largest test (bytes of its model and compressed tensors) written; larger ones are listed
#: in the manifest's "too_large" with their size, keeping the folder small.
MAX_BYTES = 100_000


def main():
    import onnx
    from onnx import numpy_helper
    from onnx.backend.test.case.node import collect_testcases

    here = os.path.dirname(os.path.abspath(__file__))
    np.random.seed(0)
    cases = collect_testcases(None)
    manifest = {"onnx": onnx.__version__, "tests": {}, "not_tensors": [], "too_large": {}}
    out_dir = os.path.join(here, "node")
    shutil.rmtree(out_dir, ignore_errors=True)
    for case in cases:
        ops = sorted({n.op_type for n in case.model.graph.node})
        manifest["tests"][case.name] = ops
        if not set(ops) <= SCOPE or any(n.domain not in ("", "ai.onnx")
                                        for n in case.model.graph.node):
            continue
        inputs, outputs = case.data_sets[0]
        if not all(isinstance(v, (np.ndarray, onnx.TensorProto)) or np.isscalar(v)
                   for v in list(inputs) + list(outputs)):
            manifest["not_tensors"].append(case.name)      # sequences, optionals
            continue
        files = {"model.onnx": case.model.SerializeToString()}
        for kind, values, infos in (("input", inputs, case.model.graph.input),
                                    ("output", outputs, case.model.graph.output)):
            for k, (v, info) in enumerate(zip(values, infos)):
                t = v if isinstance(v, onnx.TensorProto) else \
                    numpy_helper.from_array(np.asarray(v), info.name)   # float8: a TensorProto
                files[f"test_data_set_0/{kind}_{k}.pb.gz"] = gzip.compress(
                    t.SerializeToString(), mtime=0)
        size = sum(len(b) for b in files.values())
        if size > MAX_BYTES:
            manifest["too_large"][case.name] = size
            continue
        for rel, data in files.items():
            path = os.path.join(out_dir, case.name, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    manifest["not_tensors"].sort()
    tests = manifest.pop("tests")
    text = json.dumps(manifest, sort_keys=True)[:-1] + ', "tests": {\n'
    text += ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(tests.items()))
    with open(os.path.join(here, "manifest.json"), "w") as f:
        f.write(text + "\n}}\n")
    print(len(tests), "node tests;", len(os.listdir(out_dir)), "in scope",
          file=sys.stderr)


if __name__ == "__main__":
    main()
