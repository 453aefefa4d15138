"""Blocked weights in AIMET encodings JSON 1.0.0: PER_BLOCK entries (`block_size`, the
C·n_blocks scales and offsets channel by channel, as AIMET 2.x's
`AffineEncoding.to_qnn_encoding_dict` writes them) are written and read back exactly; what the
format (or AIMET) cannot hold is refused with one line naming the file or quantizer."""
import json

import numpy as np
import pytest

from refq.errors import QuantError
from refq.exporters.aimet_encodings import (aimet_encodings_dict, export_aimet_encodings,
                                            load_aimet_encodings)
from refq.graph import Graph, Node, TensorSpec
from refq.quant.quantsim import QuantSim

F32 = np.float32


def graph():
    rng = np.random.default_rng(11)
    nodes = [
        Node("conv", "conv2d", ["x"], ["c"], {"padding": "same"},
             {"weight": rng.standard_normal((6, 3, 3, 8)) * 0.3, "bias": rng.normal(size=6)}),
        Node("act", "relu", ["c"], ["a"]),
        Node("gap", "global_avg_pool2d", ["a"], ["g"]),
        Node("fc", "dense", ["g"], ["y"], {}, {"weight": rng.standard_normal((5, 6)) * 0.3}),
    ]
    return Graph([TensorSpec("x", (None, 4, 4, 8))], ["y"], nodes, "blk").validate()


def calibrated(block_size=2, symmetric=True):
    sim = QuantSim(graph(), "per_channel", param_bw=4)
    sim.set_blockwise(block_size, symmetric=symmetric)
    return sim.compute_encodings([np.random.default_rng(12).standard_normal((8, 4, 4, 8))])


def one_line(fn, *needles):
    with pytest.raises(QuantError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip_is_exact(tmp_path, symmetric):
    sim = calibrated(2, symmetric)
    path = tmp_path / "b.encodings"
    doc = export_aimet_encodings(sim, path)
    conv = next(e for e in doc["param_encodings"] if e["name"] == "conv.weight")
    assert set(conv) == {"bw", "block_size", "dtype", "enc_type", "is_sym", "name", "offset",
                         "scale"}
    assert (conv["enc_type"], conv["block_size"], conv["bw"]) == ("PER_BLOCK", 2, 4)
    enc = sim.encodings["conv.weight"]
    assert conv["scale"] == [float(s) for s in enc.scale.reshape(-1)]        # (C, n_blocks)
    assert conv["offset"] == [int(enc.qmin - z) for z in enc.zero_point.reshape(-1)]
    assert json.loads(path.read_text()) == doc
    fresh = QuantSim(graph(), "per_channel")                 # per channel, 8-bit, no blocks
    back = load_aimet_encodings(fresh, path)
    assert back.encodings.keys() == sim.encodings.keys()
    for name, e in sim.encodings.items():
        assert back.encodings[name] == e, name
    assert back.quantizers["conv.weight"].block_size == 2
    assert back.quantizers["fc.weight"].block_size == 2
    assert fresh.quantizers["conv.weight"].block_size is None            # untouched
    x = np.random.default_rng(13).standard_normal((2, 4, 4, 8))
    assert np.array_equal(back.run({"x": x})["y"], sim.run({"x": x})["y"])


def test_export_refusals(tmp_path):
    sim = calibrated(2)
    one_line(lambda: aimet_encodings_dict(sim, "0.6.1"), "'conv.weight' is blocked",
             "version 0.6.1 has no block size", "1.0.0")
    partial = calibrated(4)                 # fc: 6 inputs = 4 + 2
    one_line(lambda: export_aimet_encodings(partial, tmp_path / "p.encodings"),
             "'fc.weight'", "6 input channels are not a multiple of block_size 4")
    assert not (tmp_path / "p.encodings").exists()


def test_load_refusals(tmp_path):
    sim = calibrated(2)
    doc = aimet_encodings_dict(sim)
    path = tmp_path / "bad.encodings"

    def refused(d, *needles):
        path.write_text(json.dumps(d))
        one_line(lambda: load_aimet_encodings(QuantSim(graph(), "per_channel"), path),
                 str(path), *needles)

    def changed(section, name, **kw):
        d = json.loads(json.dumps(doc))
        entry = next(e for e in d[section] if e["name"] == name)
        entry.update(kw)
        for k in [k for k, v in kw.items() if v is None]:
            del entry[k]
        return d

    refused(changed("param_encodings", "conv.weight", block_size=None), "'block_size'")
    refused(changed("param_encodings", "conv.weight", block_size=0), "an integer >= 1; got 0")
    refused(changed("param_encodings", "conv.weight", block_size=3),
            "block_size 3", "needs 6 × 3 = 18")
    refused(changed("param_encodings", "conv.weight", enc_type="LPBQ"),
            "enc_type LPBQ is not supported")
    act = doc["activation_encodings"][0]["name"]
    refused(changed("activation_encodings", act, enc_type="PER_BLOCK", block_size=2),
            "PER_BLOCK", "activations per tensor")
    d = changed("param_encodings", "conv.weight", block_size=2)
    d["param_encodings"][0]["junk"] = 1
    refused(d, "unknown key 'junk'")


def test_cli_quantize_loads_blocked_encodings(tmp_path):
    """`refq quantize --load-encodings` with a PER_BLOCK file: the blocked encodings are taken
    (its weight-clipping check reads each element's block)."""
    from refq.cli import main
    from refq.model_io import save

    sim = calibrated(2)
    export_aimet_encodings(sim, tmp_path / "b.encodings")
    save(graph(), tmp_path / "m.refq.h5")
    assert main(["quantize", str(tmp_path / "m.refq.h5"), "--load-encodings",
                 str(tmp_path / "b.encodings"), "--per-channel", "--no-fold-bn",
                 "-o", str(tmp_path / "q.refq.h5"), "--quiet"]) in (0, None)
    back = QuantSim.load(tmp_path / "q.refq.h5")
    assert back.encodings["conv.weight"] == sim.encodings["conv.weight"]
    assert back.to_json()["version"] == 4
