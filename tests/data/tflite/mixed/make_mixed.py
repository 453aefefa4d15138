"""Makes the mixed float/integer and uint8-I/O TFLite models of tests/test_mixed_tflite.py and
LiteRT's tensors for them.

Run once with the TensorFlow virtual environment (never by the tests):
    /tmp/tfenv/bin/python tests/data/tflite/mixed/make_mixed.py
(/tmp/tfenv: tensorflow 2.21, ai-edge-litert, numpy.)

Models written here (weights uniform in [-0.4, 0.4], seed 0; representative data 16 uniform
random images, seed 1):
    float_mid.tflite   conv(relu) -> x·sigmoid(x) -> conv -> mean -> dense -> softmax, fully
                       integer except LOGISTIC, MUL and SOFTMAX, left in float32 by the
                       quantization debugger's denylist (`QuantizationDebugOptions(
                       denylisted_ops=...)`, `get_nondebug_quantized_model`): DEQUANTIZE ->
                       LOGISTIC, MUL -> QUANTIZE inside the model, DEQUANTIZE -> SOFTMAX at its
                       end (a float output)
    float_first.tflite the same model with its first CONV_2D denylisted too: a float graph input
                       read by a float32 convolution, then QUANTIZE
    uint8_io.tflite    conv(relu6) -> depthwise -> add -> avg pool -> dense, fully integer with
                       inference_input_type = inference_output_type = tf.uint8 (QUANTIZE
                       uint8 -> int8 after the input, int8 -> uint8 before the output)
logistic_litert.npz: x and y = LiteRT's float32 reference LOGISTIC (BUILTIN_REF) of a one-op
float model on 16 points spanning its cutoffs (−9 and 16.619047, `reference_ops::Logistic`)
(the model itself is not kept).
Expected tensors, `<model>.npz`: for each of a few inputs, LiteRT's reference kernels
(`OpResolverType.BUILTIN_REF`, `experimental_preserve_all_tensors=True`) are run and the model
input and every operator output are stored as `t<index>` (stacked over the inputs, batch
first) beside `inputs` (float32; uint8 codes for uint8_io). uint8_io's codes are uniform on
[0, 255] and include 0, 127, 128 and 255.
"""
import os
import sys

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from make_expected import expected  # noqa: E402  (tests/data/tflite/make_expected.py)

L = tf.keras.layers


def weights(model):
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.uniform(-0.4, 0.4, w.shape).astype(np.float32))
    return model


def mid_model():
    x = tf.keras.Input((10, 10, 3), batch_size=1)
    a = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    m = L.Multiply()([a, L.Activation("sigmoid")(a)])
    b = L.Conv2D(8, 3, padding="same")(m)
    y = L.Dense(10)(L.GlobalAveragePooling2D()(b))
    return weights(tf.keras.Model(x, L.Softmax()(y)))


def uint8_model():
    x = tf.keras.Input((8, 8, 3), batch_size=1)
    a = L.Conv2D(8, 3, padding="same", activation="relu6")(x)
    b = L.DepthwiseConv2D(3, padding="same")(a)
    c = L.AveragePooling2D(2)(L.Add()([a, b]))
    return weights(tf.keras.Model(x, L.Dense(6)(L.Flatten()(c))))


def converter(model, rep):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([r[None]] for r in rep)
    return conv


def denylisted(model, rep, ops=(), nodes=()):
    """The model fully integer except the denylisted operators (left in float32)."""
    conv = converter(model, rep)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                      tf.lite.OpsSet.TFLITE_BUILTINS]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(ops),
                                                            denylisted_nodes=list(nodes))
    dbg = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=lambda: ([r[None]] for r in rep[:2]),
        debug_options=options)
    return dbg.get_nondebug_quantized_model()


def write(name, data):
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def first_conv_name(data):
    """The name of the output tensor of the model's first CONV_2D (a denylisted node)."""
    path = write("_probe.tflite", data)
    it = Interpreter(model_path=path)
    details = it.get_tensor_details()
    op = next(op for op in it._get_ops_details() if op["op_name"] == "CONV_2D")
    os.remove(path)
    return details[int(op["outputs"][0])]["name"]


def logistic_points():
    x = tf.keras.Input((16,), batch_size=1)
    path = write("_logistic.tflite", tf.lite.TFLiteConverter.from_keras_model(
        tf.keras.Model(x, L.Activation("sigmoid")(x))).convert())
    it = Interpreter(model_path=path, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    v = np.float32([-30, -20, -12, -10, -9.5, -9.01, -8.99, -3, 0, 3, 10, 16.5, 16.7, 17, 20,
                    30])[None]
    it.set_tensor(it.get_input_details()[0]["index"], v)
    it.invoke()
    y = it.get_tensor(it.get_output_details()[0]["index"])
    os.remove(path)
    np.savez_compressed(os.path.join(HERE, "logistic_litert.npz"), x=v[0], y=y[0])


def main():
    logistic_points()
    rng = np.random.default_rng(1)
    xs = rng.uniform(-1, 1, (16, 10, 10, 3)).astype(np.float32)
    mid = mid_model()
    data = denylisted(mid, xs, ops=("LOGISTIC", "MUL", "SOFTMAX"))
    expected(write("float_mid.tflite", data), xs[:3])
    conv_name = first_conv_name(data)
    data = denylisted(mid, xs, ops=("LOGISTIC", "MUL", "SOFTMAX"), nodes=(conv_name,))
    expected(write("float_first.tflite", data), xs[:3])

    small = uint8_model()
    conv = converter(small, xs[:, :8, :8])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.uint8
    codes = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    codes[0, 0, :4, 0] = [0, 127, 128, 255]
    expected(write("uint8_io.tflite", conv.convert()), codes)


if __name__ == "__main__":
    main()
