"""Makes the 16x8 TFLite test models and the expected tensors of tests/test_import_tflite_16x8.py.

Run once with the TensorFlow virtual environment (never by the tests):
    /tmp/tfenv/bin/python tests/data/tflite_16x8/make_expected.py
(/tmp/tfenv: tensorflow 2.21, ai-edge-litert, numpy.)

Models (small Keras models with seeded weights, converted with int16 activations and int8
weights, `EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`, a seeded representative
dataset of 16 uniform images in [-1, 1]):
    cnn16.tflite   conv 3x3 (relu) -> depthwise 3x3 (relu6) -> conv 1x1 -> residual add ->
                   average pool 2x2 -> max pool 2x2 -> flatten -> dense (relu) -> dense
    gap16.tflite   conv 3x3 stride 2 -> depthwise 3x3 multiplier 2 (relu) ->
                   global average pool (MEAN) -> dense
    misc16.tflite  conv 3x3 -> sigmoid, concatenated with the conv output -> multiply by
                   itself -> dense: an int16 LOGISTIC (read since refq has LiteRT's int16
                   tables; tests/data/tflite/act16 checks them against LiteRT); no expected
                   tensors
    cat16.tflite   two convs -> concatenation (int16 requantizations before it) -> zero padding ->
                   multiply, subtract -> max pool -> flatten -> dense
Expected tensors, `<model>.npz`: LiteRT's reference kernels (`OpResolverType.BUILTIN_REF`,
`experimental_preserve_all_tensors=True`) run on each image; the model input and every operator
output are stored as `t<index>` (stacked over the images, batch first) beside `inputs`
(float32): two uniform images in [-1, 1] and one in [-3, 3] (beyond the calibration range, so
that clamps saturate), seed 1.
"""
import importlib.util
import os

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))


def _tflite_script():
    """tests/data/tflite/make_expected.py, whose `expected` writes the tensors of these models too."""
    spec = importlib.util.spec_from_file_location(
        "tflite_make_expected", os.path.join(HERE, "..", "tflite", "make_expected.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


expected = _tflite_script().expected


def convert(model, rep):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([r[None].astype(np.float32)] for r in rep)
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return conv.convert()


def seeded(model, seed):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.uniform(-0.5, 0.5, w.shape).astype(np.float32))
    return model


def cnn16():
    L = tf.keras.layers
    x = tf.keras.Input((10, 10, 3), batch_size=1)
    a = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    b = L.DepthwiseConv2D(3, padding="same", activation="relu6")(a)
    c = L.Conv2D(8, 1)(b)
    d = L.Add()([a, c])
    e = L.AveragePooling2D(2)(d)
    f = L.MaxPooling2D(2, padding="same")(e)
    g = L.Flatten()(f)
    h = L.Dense(16, activation="relu")(g)
    y = L.Dense(5)(h)
    return seeded(tf.keras.Model(x, y), 0)


def gap16():
    L = tf.keras.layers
    x = tf.keras.Input((9, 9, 2), batch_size=1)
    a = L.Conv2D(6, 3, strides=2)(x)
    b = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu")(a)
    c = L.GlobalAveragePooling2D()(b)
    y = L.Dense(4)(c)
    return seeded(tf.keras.Model(x, y), 2)


def misc16():
    L = tf.keras.layers
    x = tf.keras.Input((6, 6, 2), batch_size=1)
    a = L.Conv2D(4, 3)(x)
    b = L.Activation("sigmoid")(a)
    c = L.Concatenate()([a, b])
    d = L.Multiply()([c, c])
    y = L.Dense(3)(L.Flatten()(d))
    return seeded(tf.keras.Model(x, y), 3)


def cat16():
    L = tf.keras.layers
    x = tf.keras.Input((6, 6, 2), batch_size=1)
    a = L.Conv2D(3, 3, padding="same")(x)
    b = L.Conv2D(3, 1, activation="relu")(x)
    c = L.Concatenate()([a, b])
    c = L.ZeroPadding2D(1)(c)
    d = L.Multiply()([c, c])
    e = L.Subtract()([d, c])
    f = L.MaxPooling2D(2)(e)
    y = L.Dense(3)(L.Flatten()(f))
    return seeded(tf.keras.Model(x, y), 4)


def main():
    rng = np.random.default_rng(1)
    for name, make, shape in (("cnn16", cnn16, (10, 10, 3)), ("gap16", gap16, (9, 9, 2))):
        rep = rng.uniform(-1, 1, (16,) + shape).astype(np.float32)
        xs = np.concatenate([rng.uniform(-1, 1, (2,) + shape),
                             rng.uniform(-3, 3, (1,) + shape)]).astype(np.float32)
        path = os.path.join(HERE, name + ".tflite")
        with open(path, "wb") as f:
            f.write(convert(make(), rep))
        expected(path, xs)
    rep = rng.uniform(-1, 1, (16, 6, 6, 2)).astype(np.float32)
    with open(os.path.join(HERE, "misc16.tflite"), "wb") as f:
        f.write(convert(misc16(), rep))
    rep = rng.uniform(-1, 1, (16, 6, 6, 2)).astype(np.float32)
    xs = np.concatenate([rng.uniform(-1, 1, (2, 6, 6, 2)),
                         rng.uniform(-3, 3, (1, 6, 6, 2))]).astype(np.float32)
    path = os.path.join(HERE, "cat16.tflite")
    with open(path, "wb") as f:
        f.write(convert(cat16(), rep))
    expected(path, xs)


if __name__ == "__main__":
    main()
