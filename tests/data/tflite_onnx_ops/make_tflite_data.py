"""Make LiteRT's expected codes for int_matmul and int_conv_transpose2d under the "tflite"
profile (tests/test_lowering_onnx_ops.py).

Runs in the TensorFlow virtual environment, never in refq's:
    /tmp/tfenv/bin/python tests/data/tflite_onnx_ops/make_tflite_data.py
(/tmp/tfenv: tensorflow 2.21, ai-edge-litert 2.3, numpy).

Two fully-integer int8 models are converted (representative dataset of uniform random inputs,
seed 3) and run with LiteRT's reference kernels (`OpResolverType.BUILTIN_REF`) on int8 codes:
  batch_matmul     tf.linalg.matmul of two inputs a [1, 4, 6] and b [1, 6, 3] -> BATCH_MATMUL
  transpose_conv   Keras Conv2DTranspose(4, 3, strides 2, padding "valid", bias) on
                   [1, 3, 3, 2] -> TRANSPOSE_CONV (per-channel int8 weights, int32 bias)
Written, data.npz: per model the input codes (x_* over 6 random code rows), LiteRT's output
codes (y_*), the quantization of every input and output (JSON text `quant`), and for
transpose_conv the weight codes as LiteRT holds them ([O, kh, kw, I], refq's layout), their
per-channel scales and the int32 bias. Nothing of the model files is kept.
"""
import json
import os
import tempfile

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

HERE = os.path.dirname(os.path.abspath(__file__))


def convert(fn, rep):
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([np.asarray(t, np.float32) for t in r] for r in rep)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path = os.path.join(tempfile.mkdtemp(), "m.tflite")
    with open(path, "wb") as f:
        f.write(conv.convert())
    return path


def q(d):
    s, z = d["quantization"]
    return {"scale": float(s), "zero_point": int(z)}


def run(path, feeds_by_name):
    it = Interpreter(model_path=path, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    ins = sorted(it.get_input_details(), key=lambda d: d["name"])
    rows = len(next(iter(feeds_by_name.values())))
    ys = []
    for r in range(rows):
        for d in ins:
            key = next(k for k in feeds_by_name if k in d["name"])
            it.set_tensor(d["index"], feeds_by_name[key][r][None])
        it.invoke()
        ys.append(it.get_tensor(it.get_output_details()[0]["index"])[0])
    return it, ins, np.stack(ys)


def ops_of(it):
    return sorted({d["op_name"] for d in it._get_ops_details()})


def main():
    rng = np.random.default_rng(3)
    out, quant = {}, {}

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 6], tf.float32, name="a"),
                                  tf.TensorSpec([1, 6, 3], tf.float32, name="b")])
    def mm(a, b):
        return tf.linalg.matmul(a, b)

    rep = [(rng.uniform(-1, 1, (1, 4, 6)), rng.uniform(-2, 1, (1, 6, 3))) for _ in range(32)]
    path = convert(mm, rep)
    codes = {"a": rng.integers(-128, 128, (6, 4, 6)).astype(np.int8),
             "b": rng.integers(-128, 128, (6, 6, 3)).astype(np.int8)}
    it, ins, y = run(path, codes)
    print("batch_matmul ops", ops_of(it))
    quant["batch_matmul"] = {**{k: q(next(d for d in ins if k in d["name"])) for k in codes},
                             "y": q(it.get_output_details()[0])}
    out.update(x_mm_a=codes["a"], x_mm_b=codes["b"], y_mm=y)

    layer = tf.keras.layers.Conv2DTranspose(4, 3, strides=2, padding="valid")
    layer.build((1, 3, 3, 2))
    layer.set_weights([rng.normal(0, 0.4, (3, 3, 4, 2)).astype(np.float32),
                       rng.normal(0, 0.3, 4).astype(np.float32)])

    @tf.function(input_signature=[tf.TensorSpec([1, 3, 3, 2], tf.float32, name="x")])
    def ct(x):
        return layer(x)

    rep = [(rng.uniform(-1, 1, (1, 3, 3, 2)),) for _ in range(32)]
    path = convert(ct, rep)
    x = rng.integers(-128, 128, (6, 3, 3, 2)).astype(np.int8)
    it, ins, y = run(path, {"x": x})
    print("transpose_conv ops", ops_of(it))
    op = next(o for o in it._get_ops_details() if o["op_name"] == "TRANSPOSE_CONV")
    # TRANSPOSE_CONV inputs: output_shape, weights, input, bias
    wd = it.get_tensor_details()
    w_det = next(d for d in wd if d["index"] == op["inputs"][1])
    b_det = next(d for d in wd if d["index"] == op["inputs"][3])
    w = it.get_tensor(w_det["index"])
    qp = w_det["quantization_parameters"]
    quant["transpose_conv"] = {"x": q(ins[0]), "y": q(it.get_output_details()[0]),
                               "weight_scale": [float(s) for s in qp["scales"]],
                               "weight_zero_point": [int(z) for z in qp["zero_points"]],
                               "weight_axis": int(qp["quantized_dimension"])}
    out.update(x_ct=x, y_ct=y, w_ct=w, b_ct=it.get_tensor(b_det["index"]))
    print({k: v.shape for k, v in out.items()}, quant)
    np.savez_compressed(os.path.join(HERE, "data.npz"), quant=np.array(json.dumps(quant)), **out)


if __name__ == "__main__":
    main()
