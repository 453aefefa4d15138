"""refq.exporters.hardware: $readmemh hex, C headers and raw binaries parse back to the arrays they
were written from (int4 .. int32, signed and unsigned, packed and not, odd lengths), with bit-level
checks of the documented layout, sidecars, provenance, atomic writes and parse errors."""
import hashlib
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from refq import __version__
from refq.errors import FormatError, InputError
from refq.exporters.hardware import (c_identifier, export_arrays, export_integer_model, read_bin,
                                     read_c_header, read_dump, read_hex, write_bin,
                                     write_c_header, write_hex)

WRITERS = {"hex": (write_hex, read_hex, ".hex"), "c": (write_c_header, read_c_header, ".h"),
           "bin": (write_bin, read_bin, ".bin")}
# (numpy dtype, element bits, low, high)
TYPES = [("int8", 4, -8, 7), ("uint8", 4, 0, 15), ("int8", 8, -128, 127), ("uint8", 8, 0, 255),
         ("int16", 16, -(1 << 15), (1 << 15) - 1), ("uint16", 16, 0, (1 << 16) - 1),
         ("int32", 32, -(1 << 31), (1 << 31) - 1), ("uint32", 32, 0, (1 << 32) - 1)]


def _array(dtype, lo, hi, shape, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64)
    flat = a.reshape(-1)
    if flat.size >= 3:
        flat[0], flat[1], flat[2] = lo, hi, 0     # the extremes and zero always appear
    return a.astype(dtype)


def _packs(bits, fmt):
    packs = [1, 2, 3, 4, 8] if bits <= 8 else [1, 2, 3]
    return [k for k in packs if fmt != "c" or k == 1 or k * bits <= 64]


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("dtype,bits,lo,hi", TYPES)
def test_round_trip(tmp_path, fmt, dtype, bits, lo, hi):
    write, read, suffix = WRITERS[fmt]
    for k in _packs(bits, fmt):
        for shape in [(1,), (7,), (2, 3, 5), (4, 4)]:  # odd lengths: padding in the last word
            a = _array(dtype, lo, hi, shape, seed=k)
            path = tmp_path / f"{dtype}_{bits}_{k}_{len(shape)}{suffix}"
            sc = write(path, a, "conv1/weight", pack=k, bits=bits, layout="OHWI",
                       case="integer.demo", profile="tflite")
            back = read(path)
            assert back.dtype == a.dtype and back.shape == a.shape
            np.testing.assert_array_equal(back, a)
            np.testing.assert_array_equal(read_dump(path), a)
            count = int(np.prod(shape))
            words = -(-count // k)
            assert sc["words"] == words and sc["padding_elements"] == words * k - count
            assert sc["element_bits"] == bits and sc["pack"] == k
            assert sc["signed"] == dtype.startswith("int")
            assert sc["dtype"] == (("u" if not sc["signed"] else "") + f"int{bits}")
            on_disk = json.loads((tmp_path / (path.name + ".json")).read_text())
            assert on_disk == sc
            assert on_disk["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            for key in ("name", "dtype", "shape", "layout", "element_bits", "signed", "pack",
                        "order", "element_order", "sha256", "refq_version", "case", "profile"):
                assert key in on_disk
            assert (on_disk["refq_version"], on_disk["case"], on_disk["profile"]) == \
                (__version__, "integer.demo", "tflite")
            assert on_disk["layout"] == "OHWI" and on_disk["order"] == "C"


def test_same_arrays_in_every_format(tmp_path):
    a = _array("int8", -128, 127, (3, 5))
    index = export_arrays({"fc/weight": a, "fc/bias": _array("int32", -1000, 1000, (3,))},
                          tmp_path, pack=4, case="c1", profile="tosa")
    assert index["fc/weight"] == {"hex": "fc%2Fweight.hex", "c": "fc%2Fweight.h",
                                  "bin": "fc%2Fweight.bin"}
    for fmt, rel in index["fc/weight"].items():
        np.testing.assert_array_equal(read_dump(tmp_path / rel), a)
    # pack applies to elements of <= 8 bits by default: the int32 bias stays one per word
    bias = json.loads((tmp_path / "fc%2Fbias.h.json").read_text())
    weight = json.loads((tmp_path / "fc%2Fweight.h.json").read_text())
    assert bias["pack"] == 1 and weight["pack"] == 4
    # int32 packed 4 per word is a 128-bit word: fine for hex and bin, too wide for a C type
    index = export_arrays({"b": np.arange(3, dtype=np.int32)}, tmp_path / "w", ("hex", "bin"),
                          pack=4, pack_bits=None)
    assert (tmp_path / "w" / "b.hex").read_text() == "0" * 8 + "00000002" + "00000001" + "0" * 8 \
        + "\n"
    np.testing.assert_array_equal(read_bin(tmp_path / "w" / "b.bin"), np.arange(3))
    with pytest.raises(InputError, match="64 bits"):
        export_arrays({"b": np.zeros(3, np.int32)}, tmp_path / "c", formats=("c",), pack=4,
                      pack_bits=None)


def test_hex_bit_layout(tmp_path):
    # two's complement at the element width, element 0 in the least significant bits, padding 0
    write_hex(tmp_path / "a.hex", np.array([-8, 6, -3, 2, -6, 5, 7], np.int8), "a", pack=3, bits=4)
    assert (tmp_path / "a.hex").read_text() == "d68\n5a2\n007\n"
    write_hex(tmp_path / "b.hex", np.array([1, -1, 0x1234, -32768], np.int16), "b", pack=3)
    assert (tmp_path / "b.hex").read_text() == "1234ffff0001\n000000008000\n"
    write_hex(tmp_path / "c.hex", np.array([[-1, 0], [5, -128]], np.int8), "c")
    assert (tmp_path / "c.hex").read_text() == "ff\n00\n05\n80\n"       # flat C order
    write_hex(tmp_path / "d.hex", np.array([9, 0, 15], np.uint8), "d", bits=4)
    assert (tmp_path / "d.hex").read_text() == "9\n0\nf\n"


def test_bin_bit_layout(tmp_path):
    write_bin(tmp_path / "a.bin", np.array([1, -1, 0x1234, -32768], np.int16), "a", pack=3)
    # 48-bit words in 64-bit little-endian containers
    assert (tmp_path / "a.bin").read_bytes().hex() == "0100ffff34120000" + "0080000000000000"
    write_bin(tmp_path / "b.bin", np.array([-3, 7, 1], np.int8), "b", bits=4)
    assert (tmp_path / "b.bin").read_bytes() == bytes([0xFD, 0x07, 0x01])   # sign-extended
    write_bin(tmp_path / "c.bin", np.array([-3, 7, 1], np.int8), "c", bits=4, pack=2)
    assert (tmp_path / "c.bin").read_bytes() == bytes([0x7D, 0x01])          # low nibble first


def test_c_header_text(tmp_path):
    a = np.array([[1, -2147483648], [3, 4]], np.int32)
    write_c_header(tmp_path / "b.h", a, "conv1/bias", case="layer.x", profile="tflite",
                   layout="NC")
    text = (tmp_path / "b.h").read_text()
    first = text.splitlines()[0]
    assert first.startswith("//") and f"refq {__version__}" in first and "case: layer.x" in first \
        and "profile: tflite" in first
    for line in ("#ifndef REFQ_CONV1_BIAS_H", "#define CONV1_BIAS_DIM0 2",
                 "#define CONV1_BIAS_DIM1 2",
                 "#define CONV1_BIAS_ELEMENT_BITS 32", "const int32_t conv1_bias[] = {",
                 "#include <stdint.h>"):
        assert line in text
    assert "INT32_MIN" in text
    # the header describes itself: parsed without its sidecar too
    os.unlink(tmp_path / "b.h.json")
    np.testing.assert_array_equal(read_c_header(tmp_path / "b.h"), a)
    assert c_identifier("3x/conv:0") == "t_3x_conv_0" and c_identifier("int") == "int_"


def test_float_arrays(tmp_path):
    a = np.array([[0.1, -2.5e-30, 3.0]], np.float32)
    for fmt, (write, read, suf) in WRITERS.items():
        write(tmp_path / f"f{suf}", a, "f")
        back = read(tmp_path / f"f{suf}")
        assert back.dtype == a.dtype
        assert back.tobytes() == a.tobytes()
    write_hex(tmp_path / "g.hex", np.array([1.0], np.float32), "g")
    assert (tmp_path / "g.hex").read_text() == "3f800000\n"              # IEEE-754 bits


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_c_header_compiles(tmp_path):
    write_c_header(tmp_path / "w.h", np.array([-8, 7, -1], np.int8), "w", bits=4)
    write_c_header(tmp_path / "p.h", np.array([1, -2, 3, 4, 5], np.int8), "p", pack=4)
    write_c_header(tmp_path / "b.h", np.array([-2147483648, 5], np.int32), "b")
    (tmp_path / "m.c").write_text(
        '#include <stdio.h>\n#include "w.h"\n#include "p.h"\n#include "b.h"\n'
        'int main(void) { printf("%d %d %u %u %ld %d\\n", w[0], W_DIM0, p[0], p[1], (long)b[0], '
        'P_PACK); return 0; }\n')
    exe = tmp_path / "m"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-pedantic", "-o", str(exe),
                    str(tmp_path / "m.c")], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    assert out == ["-8", "3", str(0x0403FE01), "5", "-2147483648", "4"]


def test_parse_errors(tmp_path):
    a = np.array([1, -2, 3], np.int8)
    write_hex(tmp_path / "a.hex", a, "a")
    (tmp_path / "a.hex").write_text("1\nfe\n3\n")  # same values, not the exported bytes
    np.testing.assert_array_equal(read_hex(tmp_path / "a.hex", {"dtype": "int8", "shape": [3]}), a)
    with pytest.raises(FormatError, match="sha256"):
        read_hex(tmp_path / "a.hex")
    sc = {"dtype": "int8", "shape": [3]}
    cases = {"01\nfe\n": "missing", "01\nfe\n03\n04\n": "more words", "01\nzz\n03\n": "not a hex",
             "01\n1fe\n03\n": "more than 8 bits"}
    for text, msg in cases.items():
        (tmp_path / "b.hex").write_text(text)
        with pytest.raises(FormatError, match=msg):
            read_hex(tmp_path / "b.hex", sc)
    # what $readmemh accepts: comments, several words per line, '_', short words, @addresses
    (tmp_path / "c.hex").write_text("// dump\n@2 3 /* c */\n@0 1 f_e\n")
    np.testing.assert_array_equal(read_hex(tmp_path / "c.hex", sc), a)
    # padding of the last packed word must be zero (a wrong element order shows up here)
    (tmp_path / "d.hex").write_text("fe01\n0103\n")
    with pytest.raises(FormatError, match="padding"):
        read_hex(tmp_path / "d.hex", {"dtype": "int8", "shape": [3], "pack": 2})
    with pytest.raises(FormatError, match="sidecar"):
        read_hex(tmp_path / "c.hex")
    (tmp_path / "e.bin").write_bytes(b"\x01\x02")
    with pytest.raises(FormatError, match="bytes"):
        read_bin(tmp_path / "e.bin", sc)
    with pytest.raises(FormatError, match="no such file"):
        read_bin(tmp_path / "nope.bin", sc)


def test_write_errors_and_atomicity(tmp_path):
    with pytest.raises(InputError, match="do not fit int4"):
        write_hex(tmp_path / "x.hex", np.array([8], np.int8), "x", bits=4)
    with pytest.raises(InputError, match="pack"):
        write_hex(tmp_path / "x.hex", np.array([1], np.int8), "x", pack=0)
    with pytest.raises(InputError, match="bits"):
        write_hex(tmp_path / "x.hex", np.array([1], np.int8), "x", bits=12)
    assert sorted(os.listdir(tmp_path)) == []       # nothing half-written
    write_bin(tmp_path / "y.bin", np.array([1, 2], np.int8), "y")
    before = (tmp_path / "y.bin").read_bytes()
    with pytest.raises(InputError):
        write_bin(tmp_path / "y.bin", np.array([300], np.int16), "y", bits=8)
    assert (tmp_path / "y.bin").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["y.bin", "y.bin.json"]
    # an export checks every array and format before it writes its first file
    with pytest.raises(InputError, match=r"tensor 'wide' \(c\): .*64 bits"):
        export_arrays({"ok": np.zeros(3, np.int8), "wide": np.zeros(3, np.int32)},
                      tmp_path / "many", ("hex", "c"), pack=4, pack_bits=None)
    assert not (tmp_path / "many").exists()
    with pytest.raises(InputError, match="at most 4096 bits"):
        write_bin(tmp_path / "z.bin", np.zeros(3, np.int8), "z", pack=513)


def test_export_integer_model(tmp_path):
    from refq.fixedpoint.lowering import lower_from_params

    w = np.arange(-6, 6).reshape(3, 4).astype(np.int8)
    spec = {"inputs": [{"name": "x", "shape": [None, 4], "scale": 0.02, "zero_point": -3}],
            "layers": [{"name": "fc", "op": "dense", "weight": w, "weight_scale": 0.01,
                        "bias": np.array([1, -2, 3], np.int32),
                        "output": {"scale": 0.05, "zero_point": -128}}]}
    g = lower_from_params(spec, "tflite")
    index = export_integer_model(g, tmp_path, formats=("hex", "c"), pack=4)
    assert set(index["arrays"]) == {"fc/weight", "fc/bias", "fc/multiplier", "fc/shift"}
    np.testing.assert_array_equal(read_hex(tmp_path / index["arrays"]["fc/weight"]["hex"]), w)
    sc = json.loads((tmp_path / "fc%2Fweight.hex.json").read_text())
    assert sc["layout"] == "OI" and sc["profile"] == "tflite" and sc["pack"] == 4
    disk = json.loads((tmp_path / "index.json").read_text())
    assert disk["tensors"]["x:q"]["zero_point"] == -3
    assert [n["name"] for n in disk["nodes"]] == [n.name for n in g.nodes]


def test_cli_export(tmp_path, capsys):
    from refq import save
    from refq.cli import main
    from refq.fixedpoint.lowering import lower_from_params
    from refq.graph import Graph, Node, TensorSpec
    from test_verify import int_mlp_case

    w = np.arange(-6, 6).reshape(3, 4).astype(np.int8)
    spec = {"inputs": [{"name": "x", "shape": [None, 4], "scale": 0.02, "zero_point": -3}],
            "layers": [{"name": "fc", "op": "dense", "weight": w, "weight_scale": 0.01,
                        "output": {"scale": 0.05, "zero_point": -128}}]}
    save(lower_from_params(spec, "tflite"), tmp_path / "int.refq.h5")
    out = tmp_path / "hw"
    assert main(["export", str(tmp_path / "int.refq.h5"), "--format", "hex,c", "-o", str(out),
                 "--pack", "4"]) == 0
    assert "exported" in capsys.readouterr().out
    np.testing.assert_array_equal(read_hex(out / "fc%2Fweight.hex"), w)
    np.testing.assert_array_equal(read_c_header(out / "fc%2Fweight.h"), w)
    assert (out / "fc%2Fweight.hex").read_text().splitlines()[0] == "fdfcfbfa"   # -6 -5 -4 -3
    # a golden case directory: every array, in params/ inputs/ outputs/ trace/
    d, every = int_mlp_case(str(tmp_path / "golden"))
    assert main(["export", d, "--format", "bin", "-o", str(tmp_path / "case"), "--quiet"]) == 0
    np.testing.assert_array_equal(read_bin(tmp_path / "case" / "trace" / "fc2.bin"), every["fc2"])
    sc = json.loads((tmp_path / "case" / "trace" / "fc2.bin.json").read_text())
    assert sc["case"] == "integer.mlp3.tflite" and sc["profile"] == "tflite"
    assert sc["layout"] == "NC"
    index = json.loads((tmp_path / "case" / "index.json").read_text())
    assert index["arrays"]["outputs"]["fc3"] == {"bin": "outputs/fc3.bin"}
    # errors: not an integer model, unknown format, damaged case
    g = Graph([TensorSpec("x", (None, 2), "float32")], ["y"], [Node("r", "relu", ["x"], ["y"])])
    save(g, tmp_path / "float.refq.h5")
    assert main(["export", str(tmp_path / "float.refq.h5"), "--format", "hex", "-o",
                 str(tmp_path / "no")]) == 1
    assert "not an integer model" in capsys.readouterr().err
    assert main(["export", d, "--format", "vhdl", "-o", str(tmp_path / "no")]) == 1
    np.save(os.path.join(d, "trace", "fc1.npy"), np.zeros((3, 8), np.int8))
    assert main(["export", d, "--format", "hex", "-o", str(tmp_path / "no")]) == 1
    assert "sha256" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_export_generated_int4_case(tmp_path):
    """int4 weights of a generated case (held in int8 arrays) export as 4-bit elements."""
    from refq.conformance import generate
    from refq.exporters.hardware import export_case

    cid = "integer.conv2d.int4_weights.tflite"
    generate(str(tmp_path / "g"), cid, quiet=True)
    d = tmp_path / "g" / cid
    index = export_case(d, tmp_path / "hw", pack=8)
    w = np.load(d / "params" / "conv2d%2Fweight.npy")
    for fmt, rel in index["arrays"]["params"]["conv2d/weight"].items():
        np.testing.assert_array_equal(read_dump(tmp_path / "hw" / rel), w)
    sc = json.loads((tmp_path / "hw" / "params" / "conv2d%2Fweight.hex.json").read_text())
    assert (sc["dtype"], sc["layout"], sc["pack"], sc["word_bits"]) == ("int4", "OHWI", 8, 32)
    assert sc["case"] == cid and sc["profile"] == "tflite"
    assert len((tmp_path / "hw" / "params" / "conv2d%2Fweight.hex").read_text().split()) == \
        -(-w.size // 8)
    x = np.load(d / "trace" / "x%3Aq.npy")
    np.testing.assert_array_equal(read_bin(tmp_path / "hw" / "trace" / "x%3Aq.bin"), x)
