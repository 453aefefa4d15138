"""Makes the int8 LEAKY_RELU test model and its expected tensors (tests/test_tflite_leaky_relu8.py).

Run once with the TensorFlow virtual environment (never by the tests):
    /tmp/tfenv/bin/python tests/data/tflite/make_leaky8.py
(/tmp/tfenv: tensorflow 2.21, ai-edge-litert 2.3, numpy.) It reuses `convert` (mode "int8",
fully integer with float input and output) and `expected` (LiteRT's `OpResolverType.BUILTIN_REF`
with every tensor preserved) of make_expected.py beside it.

Model leaky8.tflite (seeded weights uniform in ±0.5; representative dataset: 16 uniform images in
[-1, 1], seed 5, so that the conv outputs, and the LEAKY_RELU inputs, have non-zero zero points):
    conv 3x3 -> LeakyReLU(0.2)  \
    conv 3x3 -> LeakyReLU(0.01)  -> concatenated -> conv 1x1
    conv 3x3 -> LeakyReLU(1.7)  /
three int8 LEAKY_RELU operators, each with its own input and output encoding (alpha 1.7 makes
the alpha multiplier exceed 1).
Model leaky8_codes.tflite: the float input (256 values) -> LeakyReLU(0.2), LeakyReLU(0.01) and
tf.nn.leaky_relu with alpha −0.5, three graph outputs (representative dataset: 16 rows uniform in
[−1, 2], seed 5). Its expected tensors hold one input row whose QUANTIZE gives every int8 code
−128..127 once (x = (code − zp)·scale of the file's input encoding), so that each LEAKY_RELU runs
on all 256 codes.
Model leaky8_ties.tflite: leaky8_codes.tflite with the output scales of its three LEAKY_RELU
operators edited (float32, in place) to s_in (alpha −0.5: the alpha multiplier is −0.5 exactly),
2·s_in (alpha 0.2: identity multiplier 0.5) and 4·s_in (alpha 0.01: identity 0.25), so that
MultiplyByQuantizedMultiplier meets exact ties (SaturatingRoundingDoublingHighMul's and the
rounding right shift's); the same every-code input row.
Expected tensors, leaky8.npz (`t<index>` = TFLite tensor <index>, batch first, beside `inputs`):
two uniform images in [-1, 1] and one in [-4, 4] (beyond the calibration range, so that the
int8 codes clamp), seed 6.
"""
import os
import sys

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))


sys.path.insert(0, HERE)
import make_expected as _base  # noqa: E402  (tests/data/tflite/make_expected.py)

expected, convert, write = _base.expected, _base.convert, _base.write

ALPHAS = (0.2, 0.01, 1.7)


def leaky8():
    L = tf.keras.layers
    x = tf.keras.Input((6, 6, 2), batch_size=1)
    ys = [L.LeakyReLU(a)(L.Conv2D(4, 3)(x)) for a in ALPHAS]
    y = L.Conv2D(3, 1)(L.Concatenate()(ys))
    model = tf.keras.Model(x, y)
    rng = np.random.default_rng(10)
    for layer in model.layers:
        for w in layer.weights:
            w.assign(rng.uniform(-0.5, 0.5, w.shape).astype(np.float32))
    return model


def leaky8_codes():
    L = tf.keras.layers
    x = tf.keras.Input((256,), batch_size=1)
    ys = [L.LeakyReLU(0.2)(x), L.LeakyReLU(0.01)(x),
          L.Lambda(lambda t: tf.nn.leaky_relu(t, alpha=-0.5))(x)]
    return tf.keras.Model(x, ys)


def every_code(path):
    """The float input row whose int8 QUANTIZE is −128..127 in the file at `path`."""
    from ai_edge_litert.interpreter import Interpreter

    scale, zp = Interpreter(model_path=path).get_input_details()[0]["quantization"]
    if scale == 0:   # a float input read by a QUANTIZE operator: that operator's encoding
        it = Interpreter(model_path=path)
        q = next(op for op in it._get_ops_details() if op["op_name"] == "QUANTIZE")
        scale, zp = it.get_tensor_details()[q["outputs"][0]]["quantization"]
    return ((np.arange(-128, 128) - zp) * np.float32(scale)).astype(np.float32)[None]


def tie_scales(data):
    """`data` with each LEAKY_RELU output scale set to a power of two times its input scale
    (module docstring)."""
    from tensorflow.lite.python import schema_py_generated as fb

    buf = bytearray(data)
    model = fb.Model.GetRootAs(buf, 0)
    g = model.Subgraphs(0)
    factor = {-0.5: 1.0, 0.2: 2.0, 0.01: 4.0}
    done = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != fb.BuiltinOperator.LEAKY_RELU:
            continue
        opts = fb.LeakyReluOptions()
        t = op.BuiltinOptions()
        opts.Init(t.Bytes, t.Pos)
        alpha = min(factor, key=lambda a: abs(a - opts.Alpha()))
        s_in = g.Tensors(op.Inputs(0)).Quantization().ScaleAsNumpy()
        s_out = g.Tensors(op.Outputs(0)).Quantization().ScaleAsNumpy()
        s_out[0] = np.float32(s_in[0] * factor[alpha])
        done.append(alpha)
    assert sorted(done) == sorted(factor), done
    return bytes(buf)


def main():
    shape = (6, 6, 2)
    rep = np.random.default_rng(5).uniform(-1, 1, (16,) + shape).astype(np.float32)
    rng = np.random.default_rng(6)
    xs = np.concatenate([rng.uniform(-1, 1, (2,) + shape),
                         rng.uniform(-4, 4, (1,) + shape)]).astype(np.float32)
    expected(write("leaky8.tflite", convert(leaky8(), "int8", rep)), xs)
    rep = np.random.default_rng(5).uniform(-1, 2, (16, 256)).astype(np.float32)
    path = write("leaky8_codes.tflite", convert(leaky8_codes(), "int8", rep))
    expected(path, every_code(path))
    with open(path, "rb") as f:
        ties = write("leaky8_ties.tflite", tie_scales(f.read()))
    expected(ties, every_code(ties))


if __name__ == "__main__":
    main()
