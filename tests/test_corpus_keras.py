"""The bad-input corpus of the Keras importers, the file and its weights: `refq import FILE -o
OUT.refq.h5` (with `--architecture` for weights-only files) refuses every kind of damage to the
file itself, text attributes, .keras archive members and weights in the legacy .h5, .keras and
.weights.h5 dialects with one line `refq: error: ...` naming the file, the layer and the field or
weight, and writes nothing. A damaged model config or an unsupported or damaged layer config is in
`test_corpus_keras_layers`; the machinery is in `keras_corpus`.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from keras_corpus import (bn, keras_zip, legacy, raw_bytes, refuses_cleanly, registry, weights_h5,
                          with_config)
from keras_fixtures import (config, corrupt_zip_member, declare_zip_size, set_attr, tiny_layers,
                            write_keras3_weights, write_keras_zip, write_legacy_h5,
                            write_legacy_weights_h5)
from test_corpus_keras_layers import CASES as LAYER_CASES

CASES = []
case = registry(CASES)


# ---- the file itself ---------------------------------------------------------------------------
@case("empty-h5", "neither an HDF5 file")
def _(d):
    return raw_bytes(d, "m.h5", b"")


@case("random-bytes-h5", "neither an HDF5 file")
def _(d):
    return raw_bytes(d, "m.h5", np.random.default_rng(0).bytes(4096))


@case("hdf5-magic-then-garbage", "cannot be opened", "truncated or damaged")
def _(d):
    return raw_bytes(d, "m.h5", b"\x89HDF\r\n\x1a\n" + np.random.default_rng(1).bytes(2000))


@case("truncated-legacy-h5", "truncated")
def _(d):
    p = write_legacy_h5(d / "full.h5", tiny_layers())
    data = p.read_bytes()
    p.unlink()
    return raw_bytes(d, "m.h5", data[:len(data) // 2])


@case("truncated-keras-zip", "zip", "truncated or damaged")
def _(d):
    p = write_keras_zip(d / "full.keras", tiny_layers())
    data = p.read_bytes()
    p.unlink()
    return raw_bytes(d, "m.keras", data[:len(data) // 2])


@case("random-bytes-keras", "neither an HDF5 file")
def _(d):
    return raw_bytes(d, "m.keras", np.random.default_rng(2).bytes(3000))


@case("hdf5-not-keras", "not a Keras model")
def _(d):
    import h5py

    with h5py.File(d / "m.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    return [d / "m.h5"]


@case("weights-h5-without-architecture", "weights only", "--architecture")
def _(d):
    return [write_keras3_weights(d / "m.weights.h5", tiny_layers())]


@case("legacy-weights-without-architecture", "weights only", "--architecture")
def _(d):
    return [write_legacy_weights_h5(d / "w.h5", tiny_layers())]


@case("architecture-not-json", "arch.json", "not valid JSON")
def _(d):
    (d / "arch.json").write_text("{oops")
    return [write_keras3_weights(d / "m.weights.h5", tiny_layers()), "--architecture",
            d / "arch.json"]


@case("architecture-json-array", "arch.json", "a JSON list", "model.to_json()")
def _(d):
    (d / "arch.json").write_text("[1, 2, 3]")
    return [write_keras3_weights(d / "m.weights.h5", tiny_layers()), "--architecture",
            d / "arch.json"]


@case("architecture-deep-nesting", "arch.json", "nested more than")
def _(d):
    (d / "arch.json").write_text("[" * 100000 + "]" * 100000)
    return [write_keras3_weights(d / "m.weights.h5", tiny_layers()), "--architecture",
            d / "arch.json"]


# ---- text encodings of HDF5 attributes and zip members -----------------------------------------
@case("model-config-not-utf8", "'model_config'", "not UTF-8")
def _(d):
    p = write_legacy_h5(d / "m.h5", tiny_layers())
    return [set_attr(p, "/", "model_config", np.bytes_(b'{"class_name": "Model\xff"}'))]


@case("model-config-vlen-not-utf8", "'model_config'", "not UTF-8")
def _(d):
    p = write_legacy_h5(d / "m.h5", tiny_layers())
    return [set_attr(p, "/", "model_config", b'{"class_name": "\xfe"}', utf8=True)]


@case("layer-names-not-utf8", "'layer_names'", "/model_weights", "not UTF-8")
def _(d):
    p = write_legacy_h5(d / "m.h5", tiny_layers())
    return [set_attr(p, "model_weights", "layer_names",
                     np.array([b"conv", b"b\xffn", b"fc"], dtype="S"))]


@case("weight-names-not-utf8", "'weight_names'", "/model_weights/conv", "not UTF-8")
def _(d):
    p = write_legacy_h5(d / "m.h5", tiny_layers())
    return [set_attr(p, "model_weights/conv", "weight_names",
                     np.array([b"conv_1/kernel:0", b"conv_1/bias\xc3:0"], dtype="S"))]


@case("weight-names-not-text", "'weight_names'", "not a list of names")
def _(d):
    p = write_legacy_h5(d / "m.h5", tiny_layers())
    return [set_attr(p, "model_weights/conv", "weight_names", np.arange(2))]


@case("keras-version-not-utf8", "'keras_version'", "not UTF-8")
def _(d):
    return [set_attr(write_legacy_h5(d / "m.h5", tiny_layers()), "/", "keras_version",
                     np.bytes_(b"2.\xff"))]


@case("backend-not-utf8", "'backend'", "not UTF-8")
def _(d):
    return [set_attr(write_legacy_h5(d / "m.h5", tiny_layers()), "/", "backend",
                     b"tensor\xffflow", utf8=True)]


@case("backend-theano", "Theano", "flipped")
def _(d):
    return [set_attr(write_legacy_h5(d / "m.h5", tiny_layers()), "/", "backend", "theano")]


@case("keras-1-file", "Keras 1.2.2", "Keras 2")
def _(d):
    return legacy(d, tiny_layers(), keras_version="1.2.2")


@case("vars-name-not-utf8", "'name'", "/layers/dense/vars", "not UTF-8")
def _(d):
    args = weights_h5(d, tiny_layers())
    set_attr(args[0], "layers/dense/vars", "name", np.bytes_(b"f\xffc"))
    return args


@case("zip-config-not-utf8", "config.json", "not UTF-8")
def _(d):
    return keras_zip(d, tiny_layers(), model_config=b'{"class_name": "\xff"}')


# ---- .keras archive members --------------------------------------------------------------------
@case("zip-without-weights", "model.weights.h5")
def _(d):
    return keras_zip(d, tiny_layers(), members=("config.json", "metadata.json"))


@case("zip-without-config", "config.json")
def _(d):
    return keras_zip(d, tiny_layers(), members=("model.weights.h5",))


@case("zip-config-not-json", "config.json", "not valid JSON")
def _(d):
    return keras_zip(d, tiny_layers(), model_config="{")


@case("zip-member-crc-damaged", "not a readable zip archive")
def _(d):
    return [corrupt_zip_member(keras_zip(d, tiny_layers())[0], "model.weights.h5")]


@case("zip-config-huge", "config.json", "declares 4000000000 bytes")
def _(d):
    return [declare_zip_size(keras_zip(d, tiny_layers())[0], "config.json", 4_000_000_000)]


@case("zip-weights-garbage", "model.weights.h5", "cannot be opened")
def _(d):
    import zipfile

    with zipfile.ZipFile(d / "m.keras", "w") as z:
        z.writestr("config.json", json.dumps(config(tiny_layers(), "keras3")))
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    return [d / "m.keras"]


# ---- weights -----------------------------------------------------------------------------------
@case("legacy-no-model-weights", "model_weights")
def _(d):
    return legacy(d, tiny_layers(), with_weights=False)


@case("legacy-missing-layer-group", "'conv' (Conv2D)", "no weights")
def _(d):
    return legacy(d, tiny_layers(), drop_groups=("conv",))


@case("legacy-missing-dataset", "'bn'", "bn_1/beta:0", "missing")
def _(d):
    return legacy(d, tiny_layers(), drop_datasets=(("bn", "beta"),))


@case("legacy-missing-bias", "'conv' (Conv2D)", "needs 2 weight(s)")
def _(d):
    layers = tiny_layers()
    layers[1].weights = layers[1].weights[:1]
    return legacy(d, layers)


@case("legacy-kernel-wrong-shape", "'conv' (Conv2D)", "conv_1/kernel:0", "(3, 3, 2, 4)")
def _(d):
    return legacy(d, tiny_layers(),
                  replace={("conv", "kernel"): np.zeros((3, 3, 2, 4), np.float32)})


@case("legacy-kernel-wrong-input-channels", "'conv'", "conv_1/kernel:0", "5 input channels")
def _(d):
    return legacy(d, tiny_layers(),
                  replace={("conv", "kernel"): np.zeros((3, 3, 5, 3), np.float32)})


@case("legacy-weight-not-numeric", "'fc'", "fc_1/bias:0", "dtype")
def _(d):
    return legacy(d, tiny_layers(), replace={("fc", "bias"): np.array([b"a", b"b"])})


@case("weights-h5-missing-layer", "'fc' (Dense)", "no weights")
def _(d):
    return weights_h5(d, tiny_layers(), drop_layers=("fc",))


@case("weights-h5-extra-weight", "'conv' (Conv2D)", "vars/2")
def _(d):
    return weights_h5(d, tiny_layers(), extra={"conv": [np.zeros(3, np.float32)]})


@case("legacy-kernel-nan", "'conv' (Conv2D)", "kernel[1, 2, 0, 1] = nan", "conv_1/kernel:0")
def _(d):
    k = tiny_layers()[1].weights[0][1].copy()
    k[1, 2, 0, 1] = np.nan
    return legacy(d, tiny_layers(), replace={("conv", "kernel"): k})


@case("zip-bias-inf", "'fc' (Dense)", "bias[1] = inf", "vars/1")
def _(d):
    layers = tiny_layers()
    layers[4].weights[1] = ("bias", np.array([1.0, np.inf], np.float32))
    return keras_zip(d, layers)


@case("weights-h5-gamma-minus-inf", "'bn' (BatchNormalization)", "gamma[0] = -inf")
def _(d):
    layers = tiny_layers()
    layers[2].weights[0] = ("gamma", np.array([-np.inf, 1, 1], np.float32))
    return weights_h5(d, layers)


# ---- batch normalization statistics ------------------------------------------------------------
@case("bn-negative-variance", "'L' (BatchNormalization)", "moving_variance[3] = -0.5",
      "negative", "L_1/moving_variance:0")
def _(d):
    return legacy(d, bn(var=(1, 2, 3, -0.5)))


@case("bn-nan-variance-keras-zip", "'L' (BatchNormalization)", "moving_variance[1] = nan")
def _(d):
    return keras_zip(d, bn(var=(1, np.nan, 3, 4)))


@case("bn-nan-mean-weights-h5", "'L' (BatchNormalization)", "moving_mean[2] = nan", "vars/0")
def _(d):
    return weights_h5(d, bn(mean=(0, 0, np.nan, 0)))


@case("bn-zero-variance-zero-epsilon", "'L' (BatchNormalization)", "moving_variance[0]",
      "epsilon > 0")
def _(d):
    return legacy(d, bn(eps=0.0, var=(0, 1, 1, 1)))


@case("bn-negative-epsilon", "'L' (BatchNormalization)", "epsilon is -0.001")
def _(d):
    return legacy(d, bn(eps=-1e-3))


@case("bn-nan-epsilon", "'L' (BatchNormalization)", "epsilon is NaN")
def _(d):
    return keras_zip(d, bn(eps=float("nan")))


@case("bn-momentum-out-of-range", "'L' (BatchNormalization)", "momentum is 2")
def _(d):
    return legacy(d, with_config(bn(), 1, momentum=2))


@case("bn-center-not-bool", "'L' (BatchNormalization)", "center is \"no\"")
def _(d):
    return legacy(d, with_config(bn(), 1, center="no"))


@pytest.mark.parametrize("write,needles", CASES)
def test_import_refuses_cleanly(tmp_path, capsys, write, needles):
    refuses_cleanly(tmp_path, capsys, write, needles)


def test_corpus_size():
    assert len(CASES) + len(LAYER_CASES) >= 45


@pytest.mark.parametrize("source", ["legacy_h5", "weights_h5"])
def test_damaged_global_heap_is_refused_not_hung(tmp_path, source):
    """A global heap object (HDF5's storage of text attributes) whose size runs past its collection
    makes the HDF5 library loop forever; the import refuses it in one line first. Run in a child
    process so that a regression fails by timeout instead of hanging the suite."""
    import subprocess
    import sys

    from real_models import ROOT

    src = {"legacy_h5": "seq_k3_legacy.h5", "weights_h5": "seq_k3.weights.h5"}[source]
    data = bytearray(open(ROOT / "tests" / "data" / "keras" / src, "rb").read())
    start = data.find(b"GCOL")
    size = int.from_bytes(data[start + 8:start + 16], "little")
    data[start + 16 + 8:start + 16 + 16] = (size * 4).to_bytes(8, "little")  # object 1's size
    bad = tmp_path / ("bad.h5" if source == "legacy_h5" else "bad.weights.h5")
    bad.write_bytes(bytes(data))
    argv = [sys.executable, "-m", "refq", "import", str(bad), "-o", str(tmp_path / "m.refq.h5")]
    if source == "weights_h5":
        argv += ["--architecture", str(ROOT / "tests" / "data" / "keras" / "seq_k3.json")]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith("refq: error: ") and len(p.stderr.strip().splitlines()) == 1
    assert "global heap" in p.stderr and str(bad) in p.stderr
    assert not (tmp_path / "m.refq.h5").exists()
