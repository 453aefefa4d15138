"""The shared machinery of the Keras bad-input corpus (`test_corpus_keras`,
`test_corpus_keras_layers`): case registration, the writers of each file dialect, small damaged
models, and the check that `refq import` refuses a case in one line naming the file and needles.

Each case is a function that writes one damaged file into a directory and returns the arguments of
`refq import` (the file first); the needles are what the error line must name besides that file.
"""
from __future__ import annotations

import numpy as np
import pytest

from cli_helpers import fails_cleanly
from keras_fixtures import (one_layer, write_architecture, write_keras3_weights, write_keras_zip,
                            write_legacy_h5)


def registry(cases):
    """A decorator `case(case_id, *needles)` registering the decorated writer into `cases`."""
    def case(case_id, *needles):
        """Register the decorated writer as the corpus case `case_id`."""
        def register(write):
            cases.append(pytest.param(write, needles, id=case_id))
            return write
        return register
    return case


def refuses_cleanly(tmp_path, capsys, write, needles):
    """`refq import` of the case written by `write` fails with one line naming the file (or the
    architecture file, when a needle names it) and every needle, and writes nothing."""
    args = [str(a) for a in write(tmp_path)]
    named = args[0] if not any("arch.json" in n for n in needles) else args[-1]
    fails_cleanly(capsys, tmp_path, "import", *args, "-o", tmp_path / "out.refq.h5",
                  needles=(named,) + tuple(needles))


def legacy(d, layers, dialect="keras2", **kw):
    return [write_legacy_h5(d / "m.h5", layers, dialect, **kw)]


def keras_zip(d, layers, **kw):
    return [write_keras_zip(d / "m.keras", layers, **kw)]


def weights_h5(d, layers, arch_layers=None, **kw):
    arch = write_architecture(d / "arch.json", arch_layers or layers)
    return [write_keras3_weights(d / "m.weights.h5", layers, **kw), "--architecture", arch]


def with_config(layers, index, **changes):
    """`layers` with the config of layer `index` updated by `changes`."""
    layers[index].config = dict(layers[index].config, **changes)
    return layers


def conv(**changes):
    """Input(6, 6, 2) -> Conv2D 'L' (3 filters, 3x3) with `changes` applied to its config."""
    k = np.ones((3, 3, 2, 3), np.float32)
    cfg = {"filters": 3, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid",
           "dilation_rate": [1, 1], "activation": "linear", "use_bias": False, **changes}
    return one_layer("Conv2D", cfg, [("kernel", k)], shape=(6, 6, 2))


def bn(eps=1e-3, var=(1.0, 2.0, 3.0, 4.0), mean=(0.0, 0.0, 0.0, 0.0)):
    return one_layer("BatchNormalization", {"axis": -1, "epsilon": eps, "center": False,
                                            "scale": False},
                     [("moving_mean", np.array(mean, np.float32)),
                      ("moving_variance", np.array(var, np.float32))])


def raw_bytes(d, name, data):
    p = d / name
    p.write_bytes(data)
    return [p]
