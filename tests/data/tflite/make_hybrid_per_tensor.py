"""Makes the per-tensor dynamic-range test model and its expected tensors
(tests/test_import_tflite_hybrid_per_tensor.py).

Run once with the TensorFlow virtual environment (never by the tests):
    /tmp/tfenv/bin/python tests/data/tflite/make_hybrid_per_tensor.py
(/tmp/tfenv: tensorflow 2.21, ai-edge-litert 2.3, numpy.) It reuses `expected` (LiteRT's
`OpResolverType.BUILTIN_REF` with every tensor preserved) and `write` of make_expected.py.

hybrid_pt.tflite: conv 3x3 same (relu) -> conv 3x3 stride 2 -> flatten -> dense, seeded weights, converted with `optimizations=[DEFAULT]`, no representative
dataset and `_experimental_disable_per_channel = True`: one weight scale per tensor, so that
LiteRT runs its convolutions by `EvalHybrid` (conv.cc: symmetric per-image input quantization,
`optimized_ops::HybridConv`) instead of `EvalHybridPerChannel`.
Expected tensors, `hybrid_pt.npz` (`t<index>` = TFLite tensor <index>, batch first, beside
`inputs`): two uniform images in [-1, 1], one in [-4, 4] and one of zeros, seed 11.
(A per-tensor DEPTHWISE_CONV_2D is not made: LiteRT's hybrid depthwise kernel reads one scale
per output channel, past the end of a one-scale array.)
"""
import os
import sys

import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))


sys.path.insert(0, HERE)
import make_expected as _base  # noqa: E402  (tests/data/tflite/make_expected.py)



def hybrid_pt():
    L = tf.keras.layers
    x = tf.keras.Input((10, 10, 8), batch_size=1)
    a = L.Conv2D(16, 3, padding="same", activation="relu")(x)      # 1152 weights
    c = L.Conv2D(12, 3, strides=2)(a)                                # 1728 weights
    y = L.Dense(10)(L.Flatten()(c))
    model = tf.keras.Model(x, y)
    rng = np.random.default_rng(10)
    for w in model.weights:
        w.assign(rng.uniform(-0.3, 0.3, w.shape).astype(np.float32))
    return model


def main():
    conv = tf.lite.TFLiteConverter.from_keras_model(hybrid_pt())
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv._experimental_disable_per_channel = True
    path = _base.write("hybrid_pt.tflite", conv.convert())
    rng = np.random.default_rng(11)
    xs = np.concatenate([rng.uniform(-1, 1, (2, 10, 10, 8)), rng.uniform(-4, 4, (1, 10, 10, 8)),
                         np.zeros((1, 10, 10, 8))]).astype(np.float32)
    _base.expected(path, xs)


if __name__ == "__main__":
    main()
