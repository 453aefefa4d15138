"""Makes the 16x8 activation test models and their expected tensors (tests/test_int16_activations.py).

Run once with the TensorFlow virtual environment (never by the tests):
    /tmp/tfenv/bin/python tests/data/tflite/make_int16_act.py
(/tmp/tfenv: tensorflow 2.21, ai-edge-litert 2.3, numpy.) It reuses `convert` (mode "16x8":
`EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`) and `expected` (LiteRT's
`OpResolverType.BUILTIN_REF` with every tensor preserved) of make_expected.py beside it.

Models (seeded weights; representative dataset: 16 uniform images in [-1, 1], seed 5):
    act16.tflite    conv 3x3 with large weights (outputs beyond ±10, so that LOGISTIC and TANH
                    reach the saturated end of their table) -> sigmoid, tanh, swish (LOGISTIC ·
                    x); conv 1x1 with small weights -> sigmoid (fine interpolation) and a softmax
                    over the channels of the NHWC tensor; all concatenated -> dense with large
                    weights -> softmax (differences beyond 10, so that the exp table's input
                    clamps): LOGISTIC, TANH, MUL, SOFTMAX on int16 tensors
    leaky16.tflite  conv 3x3 -> LeakyReLU(0.2) -> conv 1x1: LEAKY_RELU on int16 tensors
    act16_pot.tflite  act16.tflite with power-of-two scales edited into the two conv outputs
                    (2^-11 on the large one, 2^-12 on the small one), so that TANH and the second
                    LOGISTIC take LiteRT's power-of-two path (input_multiplier 0: the input
                    multiplied by 3·2^shift) and the first LOGISTIC, whose scale 2^-11 is not
                    its power of two (2^-12), the general path (multiplier 24576, shift 12)
    relu16.tflite   conv 3x3 -> global average pool (MEAN) -> ReLU (a RELU operator on int16
                    tensors, which refq does not read) -> dense; no expected tensors
Expected tensors, `<model>.npz` (`t<index>` = TFLite tensor <index>, batch first, beside
`inputs`): two uniform images in [-1, 1] and one in [-4, 4] (beyond the calibration range, so
that the input's int16 codes clamp), seed 6.
"""
import os
import sys

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))


sys.path.insert(0, HERE)
import make_expected as _base  # noqa: E402  (tests/data/tflite/make_expected.py)

expected, convert, write = _base.expected, _base.convert, _base.write


def seeded(model, seed, scales):
    """Weights uniform in ±scales[layer name] (±0.5 for unnamed layers)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            a = scales.get(layer.name, 0.5)
            w.assign(rng.uniform(-a, a, w.shape).astype(np.float32))
    return model


def act16():
    L = tf.keras.layers
    x = tf.keras.Input((6, 6, 3), batch_size=1)
    a = L.Conv2D(4, 3, padding="same", name="big")(x)
    s = L.Activation("sigmoid")(a)
    t = L.Activation("tanh")(a)
    w = L.Activation("swish")(a)
    b = L.Conv2D(4, 1, name="small")(x)
    u = L.Activation("sigmoid")(b)
    v = L.Softmax()(b)
    c = L.Concatenate()([s, t, w, u, v])
    d = L.Dense(10, name="logits")(L.Flatten()(c))
    y = L.Softmax()(d)
    return seeded(tf.keras.Model(x, y), 7, {"big": 3.0, "small": 0.3, "logits": 1.5})


def leaky16():
    L = tf.keras.layers
    x = tf.keras.Input((6, 6, 2), batch_size=1)
    a = L.Conv2D(4, 3)(x)
    b = L.LeakyReLU(0.2)(a)
    y = L.Conv2D(3, 1)(b)
    return seeded(tf.keras.Model(x, y), 8, {})


def relu16():
    L = tf.keras.layers
    x = tf.keras.Input((6, 6, 2), batch_size=1)
    a = L.GlobalAveragePooling2D()(L.Conv2D(4, 3)(x))
    y = L.Dense(3)(L.ReLU()(a))
    return seeded(tf.keras.Model(x, y), 9, {})


def pot_scales(data, scales):
    """`data` with the scale of each int16 tensor named in `scales` ({tensor-name prefix:
    scale}) replaced in the flatbuffer (a float32 edit in place)."""
    from tensorflow.lite.python import schema_py_generated as fb

    buf = bytearray(data)
    g = fb.Model.GetRootAs(buf, 0).Subgraphs(0)
    done = set()
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        name = t.Name().decode()
        for prefix, value in scales.items():
            if name.startswith(prefix) and t.Type() == fb.TensorType.INT16:
                arr = t.Quantization().ScaleAsNumpy()
                assert arr.size == 1, name
                arr[0] = np.float32(value)
                done.add(prefix)
    assert done == set(scales), done
    return bytes(buf)


def main():
    for name, make, shape in (("act16", act16, (6, 6, 3)), ("leaky16", leaky16, (6, 6, 2))):
        rep = np.random.default_rng(5).uniform(-1, 1, (16,) + shape).astype(np.float32)
        rng = np.random.default_rng(6)
        xs = np.concatenate([rng.uniform(-1, 1, (2,) + shape),
                             rng.uniform(-4, 4, (1,) + shape)]).astype(np.float32)
        expected(write(name + ".tflite", convert(make(), "16x8", rep)), xs)
    with open(os.path.join(HERE, "act16.tflite"), "rb") as f:
        pot = pot_scales(f.read(), {"functional_1/big_1/BiasAdd": 2.0 ** -11,
                                    "functional_1/small_1/BiasAdd": 2.0 ** -12})
    rng = np.random.default_rng(6)
    xs = np.concatenate([rng.uniform(-1, 1, (2, 6, 6, 3)),
                         rng.uniform(-4, 4, (1, 6, 6, 3))]).astype(np.float32)
    expected(write("act16_pot.tflite", pot), xs)
    rep = np.random.default_rng(5).uniform(-1, 1, (16, 6, 6, 2)).astype(np.float32)
    write("relu16.tflite", convert(relu16(), "16x8", rep))


if __name__ == "__main__":
    main()
