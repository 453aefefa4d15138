"""Write the small real Keras fixtures in this folder, with Keras' own outputs on a fixed input.

NEEDS KERAS. It is NOT run by the tests and keras is not a dependency of refq or of its tests; the
files it writes are committed. To regenerate (in a scratch environment outside the repository):

    python -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install keras jax scipy h5py
    KERAS_BACKEND=numpy /tmp/kvenv/bin/python tests/data/keras/make_fixtures.py

Written (Keras 3.15.1, numpy backend):
- seq_k3.keras             Sequential .keras archive
- seq_k3_legacy.h5         the same model as a legacy full-model HDF5 (model.save("m.h5"))
- seq_k3.weights.h5        its weights in the Keras 3 layout (model.save_weights)
- seq_k3_w_legacy.h5       its weights in the Keras 2 weights-only HDF5 layout (root layer_names)
- seq_k3.json              its architecture (model.to_json())
- seq_k3_ref.npz           x (2,8,8,3), y = model(x), stats/<layer> = [mean, std, min, max] of
                           each layer's output for x[:1]
- fun_k3.keras, fun_k3.json, fun_k3_ref.npz   the same for a Functional model with two outputs
  (y0 'probs', y1 'aux'); its model.weights.h5 member has the layout of model.save_weights(), so
  the tests extract it to test weights + architecture for a Functional model too
Total about 270 KB.
Weights are random (seeded) instead of the initialisers' values, so that BN and biases matter.
"""
import json
import os

os.environ.setdefault("KERAS_BACKEND", "numpy")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def randomise(model, seed):
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        new = []
        for w in layer.weights:
            shape = tuple(w.shape)
            if "variance" in w.path:
                new.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
            else:
                new.append((rng.randn(*shape) * 0.5).astype("float32"))
        if new:
            layer.set_weights(new)


def seq_model():
    return keras.Sequential([
        keras.Input((8, 8, 3), name="img"),
        layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_relu"),
        layers.SeparableConv2D(8, 3, padding="same", activation="relu", name="sep"),
        layers.BatchNormalization(center=False, name="bn_nocenter"),
        layers.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same", name="dw_mult2"),
        layers.ReLU(max_value=6, name="relu6"),
        layers.MaxPooling2D(2, name="pool"),
        layers.Flatten(name="flat"),
        layers.Dense(5, name="dense"),
    ], name="seq_k3")


def fun_model():
    x = keras.Input((10, 10, 4), name="image")
    a = layers.ZeroPadding2D(((1, 0), (0, 1)), name="zpad")(x)
    a = layers.Conv2D(8, 3, strides=2, use_bias=False, name="conv_s2")(a)
    a = layers.BatchNormalization(scale=False, name="bn_noscale")(a)
    a = layers.LeakyReLU(negative_slope=0.1, name="leaky")(a)
    b = layers.Conv2D(8, 3, strides=2, padding="same", groups=2, name="conv_g2")(x)
    s = layers.Add(name="add")([a, b])
    g = layers.Conv2D(8, 1, activation="hard_sigmoid", name="gate")(s)
    m = layers.Multiply(name="mul")([s, g])
    c = layers.Concatenate(name="cat")([m, b])
    c = layers.Conv2D(8, 3, dilation_rate=2, padding="same", name="dil")(c)
    c = layers.Activation("hard_silu", name="hswish")(c)
    p = layers.AveragePooling2D(3, strides=2, padding="same", name="avg")(c)
    se = layers.GlobalAveragePooling2D(keepdims=True, name="gap_keep")(p)
    se = layers.Conv2D(8, 1, name="se")(se)
    se = layers.ReLU(max_value=1.0, name="se_clip")(se)
    p = layers.Multiply(name="se_mul")([p, se])
    d = layers.Dropout(0.5, name="drop")(p)
    r = layers.Reshape((3, 24), name="reshape")(d)
    r = layers.Softmax(axis=-1, name="softmax3d")(r)
    r = layers.Activation("tanh", name="tanh")(r)
    f = layers.Flatten(name="flat")(r)
    probs = layers.Dense(4, activation="softmax", name="probs")(f)
    aux = layers.Dense(3, activation="sigmoid", name="aux")(layers.GlobalAveragePooling2D(name="gap")(d))
    return keras.Model(x, [probs, aux], name="fun_k3")


def layer_stats(model, x):
    out = {}
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        y = np.asarray(keras.Model(model.inputs, layer.output)(x[:1]), dtype=np.float64)
        out[f"stats/{layer.name}"] = np.array([y.mean(), y.std(), y.min(), y.max()])
    return out


def main():
    seq = seq_model()
    randomise(seq, 1)
    x = np.random.RandomState(0).uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    seq.save(os.path.join(HERE, "seq_k3.keras"))
    seq.save(os.path.join(HERE, "seq_k3_legacy.h5"))
    seq.save_weights(os.path.join(HERE, "seq_k3.weights.h5"))
    with open(os.path.join(HERE, "seq_k3.json"), "w") as f:
        f.write(seq.to_json())
    with h5py.File(os.path.join(HERE, "seq_k3_w_legacy.h5"), "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, seq)
    np.savez_compressed(os.path.join(HERE, "seq_k3_ref.npz"), x=x, y=np.asarray(seq(x)),
                        **layer_stats(seq, x))

    fun = fun_model()
    randomise(fun, 2)
    x = np.random.RandomState(0).uniform(-1, 1, (2, 10, 10, 4)).astype("float32")
    fun.save(os.path.join(HERE, "fun_k3.keras"))
    with open(os.path.join(HERE, "fun_k3.json"), "w") as f:
        f.write(fun.to_json())
    y0, y1 = fun(x)
    np.savez_compressed(os.path.join(HERE, "fun_k3_ref.npz"), x=x, y0=np.asarray(y0),
                        y1=np.asarray(y1), **layer_stats(fun, x))
    print(json.dumps({n: os.path.getsize(os.path.join(HERE, n)) for n in sorted(os.listdir(HERE))}))


if __name__ == "__main__":
    main()
