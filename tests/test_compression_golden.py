"""The golden case of a compressed model (refq.conformance.cases_compressed): regenerating it
gives the committed bytes of golden/ file for file; its graph holds what compression made (the
winnowed layers, a channel selection, the SVD splits) and its integer output follows the
compressed float model's."""
from __future__ import annotations

import os

import numpy as np

import refq
from refq.conformance import CASES, render
from refq.conformance.case import sha256
from refq.conformance.cases_compressed import CASE_ID, COMPRESSION_SVD, compressed_fer

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")


def test_the_compressed_model_case_regenerates_byte_for_byte():
    case_dir = os.path.join(GOLDEN, CASE_ID)
    files = render(CASES[CASE_ID])
    on_disk = {os.path.relpath(os.path.join(root, f), case_dir).replace(os.sep, "/")
               for root, _, names in os.walk(case_dir) for f in names}
    assert set(files) == on_disk
    for rel, data in files.items():
        with open(os.path.join(case_dir, rel), "rb") as f:
            assert f.read() == data, rel
    import json

    manifest = json.loads(open(os.path.join(GOLDEN, "manifest.json")).read())
    assert manifest["cases"][CASE_ID]["sha256"] == sha256(files["case.json"])
    doc = json.loads(files["case.json"])
    names = [n["name"] for n in doc["graph"]["nodes"]]
    assert "conv2d_4/channel_select" in names
    for layer in COMPRESSION_SVD:
        assert f"{layer}/svd_a" in names and f"{layer}/svd_b" in names
    # the winnowed producer lost half its outputs: conv2d_1 keeps 4 of 8 (conv2d_2 keeps 4 of 8)
    shapes = {k: v["shape"] for k, v in doc["params"].items()}
    assert shapes["conv2d_1/weight"][0] == 4 and shapes["conv2d_2/weight"][-1] == 4
    # the integer model agrees with the compressed float model on the case's input
    small, _, image = compressed_fer()
    expected = refq.run(small, image)[small.outputs[0]]
    got = np.load(os.path.join(case_dir, "outputs", "predictions.npy"), allow_pickle=False)
    assert got.argmax(-1) == expected.argmax(-1) and np.abs(got - expected).max() < 0.05
