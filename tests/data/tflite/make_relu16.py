"""Makes the expected tensors of relu16.tflite and the RELU / RELU6 test models
(tests/test_tflite_relu16.py).

Run once with the TensorFlow virtual environment (never by the tests):
    /tmp/tfenv/bin/python tests/data/tflite/make_relu16.py
(/tmp/tfenv: tensorflow 2.21, ai-edge-litert 2.3, numpy.) It reuses `convert` (modes "16x8":
`EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`, and "int8") and `expected` (LiteRT's
`OpResolverType.BUILTIN_REF` with every tensor preserved) of make_expected.py beside it.

Models:
    relu16.tflite   made by make_int16_act.py (conv 3x3 -> global average pool (MEAN) -> ReLU
                    -> dense): only its expected tensors are written here
    relu6_16.tflite conv 3x3 with weights uniform in ±1.5 -> MEAN -> ReLU6 -> dense (the MEAN
                    keeps the converter from fusing the activation into the conv; RELU6's input
                    and output scales differ); representative dataset: 16 uniform images in
                    [-1, 1], seed 5
    relu_codes16.tflite  the float input (65536 values) -> ReLU and ReLU6, two graph outputs
                    (representative dataset: 16 rows uniform in [−1, 8], seed 5, so that each
                    output scale differs from the input's); its expected tensors hold one input
                    row whose QUANTIZE gives every int16 code once (x = code·scale of the file's
                    input encoding), so that RELU and RELU6 run on all 65536 codes
    relu_codes8.tflite  the same model fully int8 (representative rows uniform in [−1, 8]): the
                    input row gives every int8 code −128..127 once (x = (code − zp)·scale)
Expected tensors of the first two, `<model>.npz` (`t<index>` = TFLite tensor <index>, batch
first, beside `inputs`): two uniform images in [-1, 1] and one in [-4, 4], seed 6.
"""
import os
import sys

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))


sys.path.insert(0, HERE)
import make_expected as _base  # noqa: E402  (tests/data/tflite/make_expected.py)

expected, convert, write = _base.expected, _base.convert, _base.write


def relu6_16():
    L = tf.keras.layers
    x = tf.keras.Input((6, 6, 2), batch_size=1)
    a = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, name="big")(x))
    y = L.Dense(3)(L.ReLU(6.0)(a))
    model = tf.keras.Model(x, y)
    rng = np.random.default_rng(11)
    for layer in model.layers:
        for w in layer.weights:
            s = 1.5 if layer.name == "big" else 0.5
            w.assign(rng.uniform(-s, s, w.shape).astype(np.float32))
    return model


def relu_codes16(n=65536):
    L = tf.keras.layers
    x = tf.keras.Input((n,), batch_size=1)
    return tf.keras.Model(x, [L.ReLU()(x), L.ReLU(6.0)(x)])


def every_code(path):
    """The float input row whose int16 QUANTIZE is −32768..32767 in the file at `path`."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path)
    q = next(op for op in it._get_ops_details() if op["op_name"] == "QUANTIZE")
    scale, zp = it.get_tensor_details()[q["outputs"][0]]["quantization"]
    assert zp == 0
    return (np.arange(-32768, 32768) * np.float32(scale)).astype(np.float32)[None]


def every_code8(path):
    """The float input row whose int8 QUANTIZE is −128..127 in the file at `path`."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path)
    q = next(op for op in it._get_ops_details() if op["op_name"] == "QUANTIZE")
    scale, zp = it.get_tensor_details()[q["outputs"][0]]["quantization"]
    return ((np.arange(-128, 128) - zp) * np.float32(scale)).astype(np.float32)[None]


def main():
    shape = (6, 6, 2)
    rng = np.random.default_rng(6)
    xs = np.concatenate([rng.uniform(-1, 1, (2,) + shape),
                         rng.uniform(-4, 4, (1,) + shape)]).astype(np.float32)
    expected(os.path.join(HERE, "relu16.tflite"), xs)
    rep = np.random.default_rng(5).uniform(-1, 1, (16,) + shape).astype(np.float32)
    expected(write("relu6_16.tflite", convert(relu6_16(), "16x8", rep)), xs)
    rep = np.random.default_rng(5).uniform(-1, 8, (16, 65536)).astype(np.float32)
    path = write("relu_codes16.tflite", convert(relu_codes16(), "16x8", rep))
    expected(path, every_code(path))
    path = write("relu_codes8.tflite", convert(relu_codes16(256), "int8", rep[:, :256]))
    expected(path, every_code8(path))


if __name__ == "__main__":
    main()
