"""Cross-check of the committed node test data against onnxruntime (not used by the tests).

Runs in an onnxruntime environment (python3 -m venv /tmp/ortenv && /tmp/ortenv/bin/pip install
onnxruntime onnx numpy; /tmp/ortenv/bin/python tests/data/onnx/backend/check_with_onnxruntime.py):
every model under node/ runs in onnxruntime on its stored inputs and its outputs are compared with
the stored ones as ONNX's backend runner compares (integers exactly, floats rtol 1e-3, atol 1e-7).
Prints the tests that differ or that onnxruntime cannot run, then the counts. Measured with
onnxruntime 1.32.0 / onnx 1.23.2: 220 agree; 4 differ (the training-mode Dropout tests, whose masks
are random); 28 cannot run (QuantizeLinear/DequantizeLinear of opset 28, and ConvInteger with
per-channel weight zero points, which onnxruntime's kernel refuses).
"""
import gzip
import os

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper

NODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


def load(path):
    t = onnx.TensorProto()
    with gzip.open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def main():
    agree = differ = failed = 0
    for name in sorted(os.listdir(NODE)):
        data = os.path.join(NODE, name, "test_data_set_0")
        files = sorted(os.listdir(data), key=lambda f: (f.split("_")[0], int(f.split("_")[1][:-6])))
        inputs = [load(os.path.join(data, f)) for f in files if f.startswith("input_")]
        expected = [load(os.path.join(data, f)) for f in files if f.startswith("output_")]
        try:
            s = onnxruntime.InferenceSession(os.path.join(NODE, name, "model.onnx"))
            got = s.run(None, {i.name: a for i, a in zip(s.get_inputs(), inputs)})
        except Exception as e:      # an operator or attribute onnxruntime lacks
            failed += 1
            print("cannot run", name, str(e).splitlines()[0][:120])
            continue
        try:
            for y, want in zip(got, expected):
                if want.dtype.kind in "iub":
                    assert np.array_equal(y, want)
                else:
                    np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-7)
            agree += 1
        except AssertionError:
            differ += 1
            print("differs", name)
    print(agree, "agree,", differ, "differ,", failed, "cannot run")


if __name__ == "__main__":
    main()
