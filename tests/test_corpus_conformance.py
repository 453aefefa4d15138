"""Bad-input corpus of the golden vectors, conformance runs and hardware export: every kind of
damage to a golden case, a suite manifest, a DUT's dumps, an adapter or an integer model, through
the CLI (`refq golden verify | check`, `refq export`, `refq conformance run`), fails with one line
`refq: error: ...` naming the file and what to do, without a traceback and without writing
anything. Verdicts that are not errors (a run that compared nothing is INCOMPLETE, status 3; an
adapter raising on one case fails that case) are tested with `cli`.

Everything works on copies (under tmp_path) of two small committed cases: float.dense.basic and
integer.add.basic.tflite, in a suite of their own."""
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import textwrap

import numpy as np
import pytest

from cli_helpers import cli, fails_cleanly
from refq.exporters.hardware import write_bin, write_c_header, write_hex
from refq.model_io import escape_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "golden"
FLOAT, INT = "float.dense.basic", "integer.add.basic.tflite"
BOTH = f"{FLOAT},{INT}"


# ---- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A suite of the two cases, copied from golden/, with a manifest listing only them."""
    root = tmp_path_factory.mktemp("pristine") / "golden"
    for cid in (FLOAT, INT):
        shutil.copytree(GOLDEN / cid, root / cid)
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    manifest["cases"] = {cid: manifest["cases"][cid] for cid in (FLOAT, INT)}
    (root / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    return root


@pytest.fixture
def suite(pristine, tmp_path):
    dst = tmp_path / "golden"
    shutil.copytree(pristine, dst)
    return dst


@pytest.fixture(scope="module")
def mods(tmp_path_factory):
    """Adapter modules, outside every test's tmp_path."""
    d = tmp_path_factory.mktemp("mods")
    modules = {
        "adapter_ok": "from refq.runtime import run as refq_run\n\n"
                      "def run(case):\n    return refq_run(case.graph, case.inputs)\n",
        "adapter_syntax": "def run(case)\n    return {}\n",
        "adapter_imports": "import surely_not_installed_xyz\n\ndef run(case):\n    return {}\n",
        "adapter_raises_on_import": "x = 1 / 0\n",
        "adapter_no_function": "def other(case):\n    return {}\n",
        "adapter_not_callable": "run = 5\n",
        "adapter_no_argument": "def run():\n    return {}\n",
        "adapter_skips": "def run(case):\n    raise NotImplementedError(f'{case.id}: not yet')\n",
        "adapter_mixed": textwrap.dedent("""
            import numpy as np
            from refq.runtime import run as refq_run

            def run(case):
                if case.id.startswith("float."):
                    return refq_run(case.graph, case.inputs)
                raise NotImplementedError("integer cases are not implemented")
        """),
        "adapter_misbehaves": textwrap.dedent("""
            def run(case):
                if case.id.startswith("float."):
                    raise KeyError("weight\\nsecond line")
                return "not a dict"
        """),
        "adapter_bad_values": textwrap.dedent("""
            def run(case):
                return {name: [[1, 2], [3]] for name in case.output_names}
        """),
    }
    for name, text in modules.items():
        (d / f"{name}.py").write_text(text)
    return d


@pytest.fixture
def adapters(mods, monkeypatch):
    monkeypatch.setattr(sys, "path", [str(mods)] + sys.path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    for name in [m for m in sys.modules if m.startswith("adapter_")]:
        monkeypatch.delitem(sys.modules, name)
    return mods


@pytest.fixture
def regenerated(tmp_path_factory, monkeypatch):
    """`refq golden check` writes the regenerated cases to a temporary directory: not under the
    tmp_path that fails_cleanly watches."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("regenerated")))


# ---- tampering helpers --------------------------------------------------------------------------

def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _doc(case):
    return json.loads((case / "case.json").read_text())


def _save(case, doc, manifest=True):
    """Write case.json; with `manifest`, make the suite's manifest agree (consistent tampering,
    so that the check under test is the one that fires)."""
    raw = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()
    (case / "case.json").write_bytes(raw)
    mpath = case.parent / "manifest.json"
    if manifest and mpath.exists():
        m = json.loads(mpath.read_text())
        if case.name in m.get("cases", {}):
            m["cases"][case.name]["sha256"] = _sha(raw)
            mpath.write_text(json.dumps(m, sort_keys=True, indent=1) + "\n")


def edit(fn, manifest=True):
    def damage(case):
        doc = _doc(case)
        fn(doc)
        _save(case, doc, manifest)
    return damage


def replace(rel, data):
    """Replace file `rel` by `data` (bytes, or a function of the old bytes) and re-hash it in
    case.json and the manifest."""
    def damage(case):
        p = case / rel
        new = data(p.read_bytes()) if callable(data) else data
        p.write_bytes(new)
        doc = _doc(case)
        doc["files"][rel] = _sha(new)
        _save(case, doc)
    return damage


def flip_byte(rel):
    def damage(case):
        b = bytearray((case / rel).read_bytes())
        b[-1] ^= 1
        (case / rel).write_bytes(bytes(b))
    return damage


def npy(a, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, y=np.zeros((3, 3)))
    return buf.getvalue()


def setitem(*path, value):
    def fn(doc):
        d = doc
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return fn


def delitem(*path):
    def fn(doc):
        d = doc
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return fn


def write(rel, data):
    def damage(case):
        (case / rel).write_bytes(data)
    return damage


# ---- damaged cases: verify, export and conformance run ----------------------------------------

Y = "outputs/y.npy"
CASE_DAMAGE = [
    pytest.param(edit(setitem("extra", value=1)),
                 ("case.json: the top level has unknown key(s) 'extra'", "allowed keys are case,"),
                 id="unknown-key"),
    pytest.param(edit(delitem("tolerance")),
                 ("case.json: the top level lacks the key(s) 'tolerance'",), id="missing-key"),
    pytest.param(edit(setitem("seed", value="7")), ("case.json", "'seed' must be an integer"),
                 id="seed-not-integer"),
    pytest.param(edit(setitem("outputs", value=[])), ("case.json", "'outputs' must be an object"),
                 id="outputs-not-object"),
    pytest.param(edit(setitem("outputs", value={})), ("case.json", "'outputs' is empty"),
                 id="no-outputs"),
    pytest.param(edit(setitem("outputs", "y", "scale", value=1.0)),
                 ("case.json", "outputs 'y' has unknown key(s) 'scale'"), id="entry-unknown-key"),
    pytest.param(edit(delitem("outputs", "y", "shape")),
                 ("case.json", "outputs 'y' lacks the key(s) 'shape'"), id="entry-missing-key"),
    pytest.param(edit(setitem("outputs", "y", "dtype", value="object")),
                 ("case.json", "dtype 'object'"), id="entry-bad-dtype"),
    pytest.param(edit(setitem("outputs", "y", "shape", value=[3, -1])),
                 ("case.json", "outputs 'y' has shape [3, -1]"), id="entry-bad-shape"),
    pytest.param(edit(setitem("outputs", "y", "file", value="outputs/z.npy")),
                 ("case.json", "'outputs/z.npy'", "does not list"), id="entry-unlisted-file"),
    pytest.param(edit(setitem("trace", "y", "order", value=5)),
                 ("case.json", "trace 'y'", "does not produce it"), id="trace-wrong-layer"),
    pytest.param(edit(setitem("tolerance", value={"kind": "allclose", "atol": -1, "rtol": 0})),
                 ("case.json", "'tolerance' 'atol'"), id="tolerance-negative"),
    pytest.param(edit(setitem("tolerance", value={"kind": "roughly"})),
                 ("case.json", "'tolerance' must be"), id="tolerance-unknown-kind"),
    pytest.param(edit(setitem("graph", "nodes", 0, "weights", value=[])),
                 ("case.json", "graph node #0 has unknown key(s) 'weights'"),
                 id="graph-node-unknown-key"),
    pytest.param(edit(setitem("files", "../evil.npy", value="0" * 64)),
                 ("case.json", "'../evil.npy'", "not a path inside"), id="file-outside-case"),
    pytest.param(edit(setitem("format_version", value=2)),
                 ("case.json", "version 2 is not refq-golden version 1"), id="format-version"),
    pytest.param(edit(setitem("description", value="loosened"), manifest=False),
                 ("case.json", "manifest.json says"), id="case-json-vs-manifest"),
    pytest.param(write("case.json", b"{\"case\": "), ("case.json", "not valid JSON"),
                 id="case-json-truncated"),
    pytest.param(write("case.json", b"\xff\xfe{}"), ("case.json", "not UTF-8"),
                 id="case-json-not-utf8"),
    pytest.param(write("case.json", b'{"tolerance": NaN}'), ("case.json", "NaN is not JSON"),
                 id="case-json-nan"),
    pytest.param(flip_byte(Y), ("outputs/y.npy", "does not match its sha256", "regenerate"),
                 id="sha256-mismatch"),
    pytest.param(lambda case: (case / "trace" / "y.npy").unlink(),
                 ("trace/y.npy", "listed in case.json 'files' but missing"), id="file-missing"),
    pytest.param(write("trace/extra.npy", npy(np.zeros(2))),
                 ("trace/extra.npy", "not listed in case.json 'files'"), id="file-extra"),
    pytest.param(replace(Y, lambda b: b[:-8]), ("outputs/y.npy", "truncated or padded"),
                 id="npy-truncated"),
    pytest.param(replace(Y, lambda b: b + b"\0" * 8), ("outputs/y.npy", "truncated or padded"),
                 id="npy-trailing-bytes"),
    pytest.param(replace(Y, npy(np.array([1.0, None], dtype=object), allow_pickle=True)),
                 ("outputs/y.npy", "Python objects"), id="npy-pickled"),
    pytest.param(replace(Y, npy(np.zeros((3, 3), np.float32))),
                 ("outputs/y.npy", "holds float32 [3, 3]", "declares float64"),
                 id="npy-wrong-dtype"),
    pytest.param(replace(Y, npy(np.zeros((3, 3), ">f8"))),
                 ("outputs/y.npy", "big-endian"), id="npy-big-endian"),
    pytest.param(replace(Y, npy(np.zeros((3, 4)))),
                 ("outputs/y.npy", "holds float64 [3, 4]", "declares float64 [3, 3]"),
                 id="npy-wrong-shape"),
    pytest.param(replace(Y, b"hello, world"), ("outputs/y.npy", "not a readable .npy file"),
                 id="npy-garbage"),
    pytest.param(replace(Y, npz()), ("outputs/y.npy", "not a readable .npy file"), id="npy-is-npz"),
]


def _clean_dut(dut, case):
    """Dumps of the case's own outputs: what a perfect implementation writes."""
    doc = _doc(case)
    dut.mkdir(parents=True, exist_ok=True)
    for name, e in doc["outputs"].items():
        shutil.copy(case / e["file"], dut / (escape_name(name) + ".npy"))


@pytest.mark.parametrize("damage,needles", CASE_DAMAGE)
def test_verify_damaged_case(suite, tmp_path, capsys, damage, needles):
    case = suite / FLOAT
    _clean_dut(tmp_path / "dut", case)
    damage(case)
    fails_cleanly(capsys, tmp_path, "golden", "verify", case, "--dut", tmp_path / "dut",
                  "--json", tmp_path / "report.json", needles=needles)


EXPORT_AND_RUN_DAMAGE = [p for p in CASE_DAMAGE if p.id in (
    "unknown-key", "missing-key", "seed-not-integer", "sha256-mismatch", "file-missing",
    "file-extra", "npy-truncated", "npy-pickled", "npy-wrong-dtype", "case-json-vs-manifest")]


@pytest.mark.parametrize("damage,needles", EXPORT_AND_RUN_DAMAGE)
def test_export_damaged_case(suite, tmp_path, capsys, damage, needles):
    damage(suite / FLOAT)
    fails_cleanly(capsys, tmp_path, "export", suite / FLOAT, "--format", "hex,c,bin", "-o",
                  tmp_path / "hw", needles=needles)


@pytest.mark.parametrize("damage,needles", EXPORT_AND_RUN_DAMAGE)
def test_conformance_run_damaged_case(suite, tmp_path, capsys, adapters, damage, needles):
    damage(suite / FLOAT)
    fails_cleanly(capsys, tmp_path, "conformance", "run", "--adapter", "adapter_ok:run",
                  "--golden", suite, "--json", tmp_path / "r.json", needles=needles)


# ---- damaged cases: golden check (regenerates and compares bytes) -----------------------------

@pytest.mark.parametrize("damage,needles", [
    pytest.param(flip_byte(Y), (FLOAT, "file outputs/y.npy", "differs from the regenerated"),
                 id="byte-changed"),
    pytest.param(lambda case: (case / "trace" / "y.npy").unlink(),
                 (FLOAT, "file trace/y.npy", "missing from the committed case"), id="file-missing"),
    pytest.param(write("trace/extra.npy", b"x"), (FLOAT, "file trace/extra.npy",
                                                  "no longer generated"), id="file-extra"),
    pytest.param(edit(setitem("extra", value=1)), (FLOAT, "file case.json"), id="case-json-edited"),
    pytest.param(lambda case: shutil.rmtree(case),
                 (FLOAT, "(case directory)", "missing from the committed suite"),
                 id="case-directory-missing"),
    pytest.param(edit(setitem("description", value="x"), manifest=False),
                 (FLOAT, "file case.json"), id="case-json-vs-manifest"),
])
def test_check_damaged_case(suite, tmp_path, capsys, regenerated, damage, needles):
    damage(suite / FLOAT)
    err = fails_cleanly(capsys, tmp_path, "golden", "check", "--golden", suite, "--cases", BOTH,
                        "--quiet", needles=needles + ("golden check failed", "refq golden "
                                                      "generate"))
    assert "1 of 2 cases differ" in err


# ---- damaged suites: manifest.json, suite directories ------------------------------------------

MANIFEST_DAMAGE = [
    pytest.param(b"[]", "the manifest is a list, not an object", id="not-an-object"),
    pytest.param(b'{"format": "refq-golden"', "not valid JSON", id="truncated"),
    pytest.param(b"\xff", "not UTF-8", id="not-utf8"),
    pytest.param(None, "unknown key(s) 'comment'", id="unknown-key"),
    pytest.param(b'{"format": "refq-golden", "format_version": 1, "refq_version": "0", '
                 b'"cases": {"float.dense.basic": {"sha256": "abc", "kind": "float", '
                 b'"profile": null, "description": ""}}}', "not 64 hex digits", id="bad-sha256"),
    pytest.param(b'{"format": "refq-golden", "format_version": 1, "refq_version": "0", '
                 b'"cases": {"../etc": {}}}', "is not a case id", id="case-id-escapes"),
]


def _damage_manifest(suite, data):
    m = suite / "manifest.json"
    if data is None:
        doc = json.loads(m.read_text())
        doc["comment"] = "edited"
        data = json.dumps(doc).encode()
    m.write_bytes(data)


@pytest.mark.parametrize("command", ["verify", "run", "check"])
@pytest.mark.parametrize("data,needle", MANIFEST_DAMAGE)
def test_damaged_manifest(suite, tmp_path, capsys, adapters, regenerated, command, data, needle):
    _clean_dut(tmp_path / "dut", suite / FLOAT)
    _damage_manifest(suite, data)
    argv = {"verify": ("golden", "verify", suite / FLOAT, "--dut", tmp_path / "dut"),
            "run": ("conformance", "run", "--adapter", "adapter_ok:run", "--golden", suite),
            "check": ("golden", "check", "--golden", suite, "--cases", BOTH)}[command]
    fails_cleanly(capsys, tmp_path, *argv, needles=("manifest.json", needle, "damaged"))


def test_verify_a_renamed_case_in_a_suite(suite, tmp_path, capsys):
    _clean_dut(tmp_path / "dut", suite / FLOAT)
    (suite / FLOAT).rename(suite / "float.dense.other")
    fails_cleanly(capsys, tmp_path, "golden", "verify", suite / "float.dense.other", "--dut",
                  tmp_path / "dut", needles=("case.json", "its directory in the suite is "
                                                          "'float.dense.other'"))


@pytest.mark.parametrize("target,needles", [
    pytest.param("suite", ("this is a golden suite, not a case",), id="suite-given"),
    pytest.param("nowhere", ("no such case directory",), id="no-such-directory"),
    pytest.param("file", ("is not a directory",), id="a-file"),
    pytest.param("empty", ("no case.json; not a golden case directory",), id="empty-directory"),
])
def test_verify_not_a_case(suite, tmp_path, capsys, target, needles):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    _clean_dut(tmp_path / "dut", suite / FLOAT)
    path = {"suite": suite, "nowhere": tmp_path / "nowhere", "file": tmp_path / "file",
            "empty": tmp_path / "empty"}[target]
    fails_cleanly(capsys, tmp_path, "golden", "verify", path, "--dut", tmp_path / "dut",
                  needles=needles)


@pytest.mark.parametrize("argv,needles", [
    pytest.param(("--golden", "{tmp}/empty"), ("not a golden suite", "nothing to check"),
                 id="empty-directory"),
    pytest.param(("--golden", "{tmp}/golden/" + FLOAT), ("it is a case directory",),
                 id="case-directory-given"),
    pytest.param(("--golden", "{tmp}/nowhere"), ("no golden directory",), id="no-such-directory"),
    pytest.param(("--golden", "{tmp}/golden", "--cases", "nothing.*"),
                 ("no golden case matches 'nothing.*'",), id="pattern-matches-nothing"),
    pytest.param(("--golden", "{tmp}/golden", "--cases", " , "), ("empty case pattern",),
                 id="empty-pattern"),
])
def test_check_compares_nothing(suite, tmp_path, capsys, regenerated, argv, needles):
    (tmp_path / "empty").mkdir()
    argv = [str(a).replace("{tmp}", str(tmp_path)) for a in argv]
    fails_cleanly(capsys, tmp_path, "golden", "check", *argv, needles=needles)


# ---- DUT dumps ----------------------------------------------------------------------------------

def _int_dut(dut, case):
    """Clean dumps of the integer case: the output as .npy, the trace int8 tensor add:q as hex
    with its sidecar."""
    _clean_dut(dut, case)
    (dut / "trace").mkdir()
    write_hex(dut / "trace" / "add%3Aq.hex", np.load(case / "trace" / "add%3Aq.npy"), "add:q")


def _sidecar(edit_fn):
    def damage(dut, case):
        p = dut / "trace" / "add%3Aq.hex.json"
        sc = json.loads(p.read_text())
        edit_fn(sc)
        p.write_text(json.dumps(sc))
    return damage


def _hex_text(fn):
    def damage(dut, case):
        p = dut / "trace" / "add%3Aq.hex"
        p.write_bytes(fn(p.read_bytes()))
        sc = json.loads((dut / "trace" / "add%3Aq.hex.json").read_text())
        sc.pop("sha256")            # a hand-written dump: the sidecar has no hash
        (dut / "trace" / "add%3Aq.hex.json").write_text(json.dumps(sc))
    return damage


def _replace_dump(name, data):
    def damage(dut, case):
        for p in dut.rglob(escape_name(name) + ".*"):
            p.unlink()
        target = dut / (escape_name(name) + ".npy")
        target.write_bytes(data(case) if callable(data) else data)
    return damage


def _other_format(fmt_writer, suffix, mangle):
    """The trace tensor add:q dumped as .bin or .h instead of hex, then damaged by `mangle`."""
    def damage(dut, case):
        for p in (dut / "trace").glob("add%3Aq.*"):
            p.unlink()
        path = dut / "trace" / ("add%3Aq" + suffix)
        fmt_writer(path, np.load(case / "trace" / "add%3Aq.npy"), "add:q")
        mangle(path)
    return damage


def _bin_short(path):
    path.write_bytes(path.read_bytes()[:-3])
    sc = json.loads(pathlib.Path(str(path) + ".json").read_text())
    sc.pop("sha256")
    pathlib.Path(str(path) + ".json").write_text(json.dumps(sc))


def _header_short(path):
    path.write_text(re.sub(r"(= \{\s*)-?\w+,\s*", r"\1", path.read_text(), count=1))
    os.unlink(str(path) + ".json")


OUT = "outputs_add"
DUT_DAMAGE = [
    pytest.param(lambda dut, case: [p.unlink() for p in dut.rglob("*") if p.is_file()],
                 ("holds no dump", "dump at least its outputs ('add')"), id="no-dumps"),
    pytest.param(lambda dut, case: (dut / "add.npy").unlink(),
                 ("no DUT dump of output tensor 'add'",), id="output-missing"),
    pytest.param(_replace_dump("add", lambda case: npy(np.zeros((6, 4, 5), np.float32))),
                 ("add.npy", "shape [6, 4, 5], expected [6, 4, 5, 3]"), id="wrong-shape"),
    pytest.param(_replace_dump("add", lambda case: npy(np.zeros((6, 4, 5, 3), np.int64))),
                 ("add.npy", "dtype int64, expected a float tensor"), id="float-as-integers"),
    pytest.param(_replace_dump("add:q", lambda case: npy(np.load(case / "trace" / "add%3Aq.npy")
                                                         .astype(np.int32))),
                 ("add%3Aq.npy", "dtype int32, expected int8", "cast to int8"),
                 id="integer-wrong-dtype"),
    pytest.param(_replace_dump("add", npy(np.array([1.0, None], dtype=object), True)),
                 ("add.npy", "Python objects", "re-dump it"), id="npy-pickled"),
    pytest.param(_replace_dump("add", lambda case: (case / "outputs" / "add.npy").read_bytes()
                               [:-10]), ("add.npy", "truncated"), id="npy-truncated"),
    pytest.param(_replace_dump("add", b"\x93NUMPY garbage"), ("add.npy", "not a readable .npy"),
                 id="npy-garbage"),
    pytest.param(_replace_dump("add", lambda case: npy(np.zeros((6, 4, 5, 3), np.complex64))),
                 ("add.npy", "complex64 is not numeric"), id="npy-complex"),
    pytest.param(lambda dut, case: (dut / "trace" / "add%3Aq.hex.json").write_bytes(b"\xff{}"),
                 ("add%3Aq.hex.json", "not UTF-8"), id="sidecar-not-utf8"),
    pytest.param(lambda dut, case: (dut / "trace" / "add%3Aq.hex.json").write_text('{"dtype":'),
                 ("add%3Aq.hex.json", "not valid JSON"), id="sidecar-malformed-json"),
    pytest.param(lambda dut, case: (dut / "trace" / "add%3Aq.hex.json").write_text("[1, 2]"),
                 ("add%3Aq.hex.json", "not a JSON object"), id="sidecar-not-object"),
    pytest.param(lambda dut, case: (dut / "trace" / "add%3Aq.hex.json").unlink(),
                 ("add%3Aq.hex", "no sidecar"), id="sidecar-missing"),
    pytest.param(_sidecar(lambda sc: sc.pop("shape")), ("add%3Aq.hex", "lacks 'shape'"),
                 id="sidecar-no-shape"),
    pytest.param(_sidecar(lambda sc: sc.update(shape=[6, 4, 5, 2.5])),
                 ("add%3Aq.hex", "not a list of integers"), id="sidecar-float-shape"),
    pytest.param(_sidecar(lambda sc: sc.update(pack=0)), ("add%3Aq.hex", "pack 0"),
                 id="sidecar-pack-zero"),
    pytest.param(_sidecar(lambda sc: sc.update(pack="2")), ("add%3Aq.hex", "pack '2'"),
                 id="sidecar-pack-string"),
    pytest.param(_sidecar(lambda sc: sc.update(dtype="int7")),
                 ("add%3Aq.hex", "dtype 'int7' is not an element type"), id="sidecar-bad-dtype"),
    pytest.param(_sidecar(lambda sc: sc.update(element_bits=16)),
                 ("add%3Aq.hex", "element_bits", "imply 8"), id="sidecar-disagrees"),
    pytest.param(_sidecar(lambda sc: sc.update(element_order="msb_first")),
                 ("add%3Aq.hex", "element_order"), id="sidecar-msb-first"),
    pytest.param(_sidecar(lambda sc: sc.update(sha256="0" * 64)),
                 ("add%3Aq.hex", "differs from its sidecar"), id="sidecar-sha256"),
    pytest.param(_sidecar(lambda sc: sc.update(shape=[10 ** 12], count=10 ** 12,
                                               words=10 ** 12)),
                 ("add%3Aq.hex", "words are missing"), id="sidecar-huge-shape"),
    pytest.param(_hex_text(lambda b: b.replace(b"\n", b"\nzz\n", 1)),
                 ("add%3Aq.hex", "'zz', not a hexadecimal number"), id="hex-bad-digits"),
    pytest.param(_hex_text(lambda b: b[:-3]), ("add%3Aq.hex", "1 of 360 words are missing"),
                 id="hex-too-few-words"),
    pytest.param(_hex_text(lambda b: b + b"00\n"), ("add%3Aq.hex", "more words than the 360"),
                 id="hex-too-many-words"),
    pytest.param(_hex_text(lambda b: b"\xe9" + b), ("add%3Aq.hex", "not ASCII"),
                 id="hex-not-ascii"),
    pytest.param(_hex_text(lambda b: b.replace(b"\n", b"\n1ff\n", 1)[:-3]),
                 ("add%3Aq.hex", "more than 8 bits"), id="hex-word-too-wide"),
    pytest.param(_hex_text(lambda b: b"@-4\n" + b), ("add%3Aq.hex", "bad address directive"),
                 id="hex-bad-address"),
    pytest.param(_other_format(write_bin, ".bin", _bin_short), ("add%3Aq.bin", "bytes, expected"),
                 id="bin-wrong-size"),
    pytest.param(_other_format(write_c_header, ".h", _header_short),
                 ("add%3Aq.h", "initializers, expected 360"), id="c-header-wrong-count"),
]


@pytest.mark.parametrize("damage,needles", DUT_DAMAGE)
def test_verify_damaged_dumps(suite, tmp_path, capsys, damage, needles):
    case = suite / INT
    dut = tmp_path / "dut"
    _int_dut(dut, case)
    assert cli(capsys, "golden", "verify", case, "--dut", dut, "--quiet")[0] == 0   # clean
    damage(dut, case)
    fails_cleanly(capsys, tmp_path, "golden", "verify", case, "--dut", dut, "--json",
                  tmp_path / "report.json", needles=needles)


@pytest.mark.parametrize("dut,needles", [
    pytest.param("nowhere", ("no such DUT dump directory", "--dut"), id="no-such-directory"),
    pytest.param("file", ("is not a directory", "--dut"), id="a-file"),
])
def test_verify_dut_not_a_directory(suite, tmp_path, capsys, dut, needles):
    (tmp_path / "file").write_text("x")
    fails_cleanly(capsys, tmp_path, "golden", "verify", suite / INT, "--dut", tmp_path / dut,
                  needles=needles)


def test_verify_report_path_is_a_directory(suite, tmp_path, capsys):
    _clean_dut(tmp_path / "dut", suite / FLOAT)
    (tmp_path / "reports").mkdir()
    fails_cleanly(capsys, tmp_path, "golden", "verify", suite / FLOAT, "--dut", tmp_path / "dut",
                  "--json", tmp_path / "reports", needles=("--json", "is an existing directory"))


# ---- adapters -----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,needles", [
    pytest.param("nocolon", ("'nocolon'", "not a 'module:function' name"), id="no-colon"),
    pytest.param("a:b:c", ("'a:b:c'", "not a 'module:function' name"), id="two-colons"),
    pytest.param(".relative:run", ("not a 'module:function' name",), id="relative-module"),
    pytest.param("adapter_ok:", ("not a 'module:function' name",), id="no-function"),
    pytest.param("adapter/ok:run", ("not a 'module:function' name",), id="path-not-module"),
    pytest.param("adapter_nowhere_xyz:run", ("cannot import module 'adapter_nowhere_xyz'",
                                             "PYTHONPATH"), id="module-missing"),
    pytest.param("adapter_syntax:run", ("module 'adapter_syntax' has a syntax error",
                                        "adapter_syntax.py, line 1"), id="syntax-error"),
    pytest.param("adapter_imports:run", ("importing module 'adapter_imports' failed",
                                         "surely_not_installed_xyz"), id="import-error"),
    pytest.param("adapter_raises_on_import:run", ("raised ZeroDivisionError",
                                                  "adapter_raises_on_import.py:1"),
                 id="raises-on-import"),
    pytest.param("adapter_no_function:run", ("has no function 'run'", "its functions: other"),
                 id="function-missing"),
    pytest.param("adapter_not_callable:run", ("'adapter_not_callable.run' is int",
                                              "not a function"), id="not-callable"),
    pytest.param("adapter_no_argument:run", ("cannot be called with one argument",
                                             "def run(case)"), id="takes-no-argument"),
])
def test_bad_adapter(suite, tmp_path, capsys, adapters, spec, needles):
    fails_cleanly(capsys, tmp_path, "conformance", "run", "--adapter", spec, "--golden", suite,
                  "--json", tmp_path / "r.json", needles=needles)


@pytest.mark.parametrize("damage,argv,needles", [
    pytest.param(lambda s: shutil.rmtree(s), (), ("no such golden suite directory",),
                 id="suite-missing"),
    pytest.param(lambda s: (s / "manifest.json").unlink(), (), ("no manifest.json",),
                 id="no-manifest"),
    pytest.param(lambda s: _damage_manifest(s, json.dumps(
        {"format": "refq-golden", "format_version": 1, "refq_version": "0", "cases": {}})
        .encode()), (), ("lists no case", "compare nothing"), id="manifest-lists-no-case"),
    pytest.param(lambda s: shutil.rmtree(s / INT), (), (f"lists case '{INT}'", "is missing"),
                 id="case-directory-missing"),
    pytest.param(lambda s: None, ("--cases", "quant.*"), ("no case of", "'quant.*'",
                                                          "groups: float.*, integer.*"),
                 id="pattern-matches-nothing"),
    pytest.param(lambda s: None, ("--max-skipped", "-1"), ("--max-skipped must be >= 0",),
                 id="max-skipped-negative"),
])
def test_conformance_run_bad_suite(suite, tmp_path, capsys, adapters, damage, argv, needles):
    damage(suite)
    fails_cleanly(capsys, tmp_path, "conformance", "run", "--adapter", "adapter_ok:run",
                  "--golden", suite, *argv, needles=needles)


# ---- verdicts (not errors) ----------------------------------------------------------------------

def test_run_that_compares_nothing_is_incomplete(suite, capsys, adapters):
    code, out, err = cli(capsys, "conformance", "run", "--adapter", "adapter_skips:run",
                         "--golden", suite)
    assert code == 3 and err == ""
    last = out.strip().splitlines()[-1]
    assert "2 cases, 0 compared, 0 passed, 0 failed, 0 errors, 2 skipped" in last
    assert last.endswith("INCOMPLETE (nothing was compared: the adapter skipped every case)")


def test_max_skipped(suite, capsys, adapters):
    argv = ("conformance", "run", "--adapter", "adapter_mixed:run", "--golden", suite)
    code, out, _ = cli(capsys, *argv)
    assert code == 0 and "1 compared, 1 passed" in out and out.strip().endswith(": PASS")
    code, out, _ = cli(capsys, *argv, "--max-skipped", "1")
    assert code == 0 and "1 skipped (at most 1): PASS" in out
    code, out, _ = cli(capsys, *argv, "--max-skipped", "0")
    assert code == 3 and "more than --max-skipped 0" in out and "INCOMPLETE" in out


def test_adapter_errors_fail_their_case(suite, tmp_path, capsys, adapters):
    """An adapter that raises, or returns something that is not a dict of arrays, fails that
    case with a one-line reason; the run goes on and its verdict is FAIL (status 1)."""
    code, out, err = cli(capsys, "conformance", "run", "--adapter", "adapter_misbehaves:run",
                         "--golden", suite, "--json", tmp_path / "r.json")
    assert code == 1 and err == "" and "Traceback" not in out
    rows = {r["case"]: r for r in json.loads((tmp_path / "r.json").read_text())["cases"]}
    f, i = rows[FLOAT], rows[INT]
    assert f["status"] == "error" and "\n" not in f["detail"]
    assert "adapter_misbehaves:run raised KeyError" in f["detail"]
    assert "adapter_misbehaves.py:4" in f["detail"]
    assert i["status"] == "fail" and "returned str" in i["detail"]
    assert "1 failed, 1 errors" in out and out.strip().endswith(
        "FAIL (1 failed, 1 adapter errors)")
    code, out, _ = cli(capsys, "conformance", "run", "--adapter", "adapter_bad_values:run",
                       "--golden", suite, "--cases", FLOAT)
    assert code == 1 and "output 'y': not an array" in out


def _help(capsys, *argv) -> str:
    try:
        code, out, _ = cli(capsys, *argv, "--help")
    except SystemExit as e:  # argparse's own exit, when main lets it through
        code, out = e.code, capsys.readouterr().out
    assert code == 0
    return out


def test_help_lists_verify_documents_exit_statuses_and_defaults(capsys):
    out = _help(capsys, "conformance", "run")
    for needle in ("--max-skipped", "default: no limit", "0  PASS", "1  FAIL", "3  INCOMPLETE"):
        assert needle in out
    assert "verify" in _help(capsys, "golden")
    for argv in (("golden", "generate"), ("golden", "check"), ("golden", "verify"),
                 ("conformance", "run")):
        text = " ".join(_help(capsys, *argv).split())
        options = [w for w in text.split() if w.startswith("--") and w != "--help"]
        for opt in set(options):
            assert "default" in text.split(opt, 2)[-1].split(" --")[0] or "required" in \
                text.split(opt, 2)[-1].split(" --")[0], (argv, opt)


# ---- export -------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,needles", [
    pytest.param(("--format", "c", "--pack", "9"), ("tensor 'a:q' (c)", "at most 64 bits",
                                                    "--pack"), id="pack-too-wide-for-c"),
    pytest.param(("--format", "hex", "--pack", "1000"), ("8000-bit word", "at most 4096"),
                 id="pack-too-wide"),
    pytest.param(("--format", "hex", "--pack", "0"), ("--pack",), id="pack-zero"),
    pytest.param(("--format", "vhdl"), ("--format", "vhdl"), id="unknown-format"),
    pytest.param(("--format", "hex", "-o", "{case}/hw"), ("inside the golden case",),
                 id="output-inside-case"),
    pytest.param(("--format", "hex", "-o", "{tmp}/file"), ("is not a directory",),
                 id="output-is-a-file"),
])
def test_export_case_bad_options(suite, tmp_path, capsys, argv, needles):
    (tmp_path / "file").write_text("x")
    argv = [str(a).replace("{case}", str(suite / INT)).replace("{tmp}", str(tmp_path))
            for a in argv]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "hw")]
    fails_cleanly(capsys, tmp_path, "export", suite / INT, *argv, needles=needles)


def _int_model():
    from refq.fixedpoint.lowering import lower_from_params

    spec = {"inputs": [{"name": "x", "shape": [None, 4], "scale": 0.02, "zero_point": -3}],
            "layers": [{"name": "fc", "op": "dense",
                        "weight": np.arange(-6, 6).reshape(3, 4).astype(np.int8),
                        "weight_scale": 0.01, "output": {"scale": 0.05, "zero_point": -128}}]}
    return lower_from_params(spec, "tflite")


@pytest.mark.parametrize("damage,needles", [
    pytest.param(lambda m: m["tensors"].pop("fc:q"),
                 ("node 'fc' (int_dense), tensor 'fc:q'", "no encoding", "`refq lower`"),
                 id="tensor-encoding-missing"),
    pytest.param(lambda m: m["tensors"].pop("x:q"), ("tensor 'x:q'", "no encoding"),
                 id="input-encoding-missing"),
    pytest.param(lambda m: m.pop("tensors"), ("no 'tensors' table", "`refq lower`"),
                 id="no-tensors-table"),
    pytest.param(lambda m: m["tensors"]["fc:q"].update(scale=0.0),
                 ("tensor 'fc:q'", "malformed (scale 0.0", "`refq lower`"), id="scale-zero"),
    pytest.param(lambda m: m["tensors"]["fc:q"].pop("zero_point"),
                 ("tensor 'fc:q'", "zero_point None"), id="zero-point-missing"),
    pytest.param(lambda m: m["tensors"]["fc:q"].update(dtype="int12"),
                 ("tensor 'fc:q'", "dtype 'int12'"), id="bad-dtype"),
    pytest.param(lambda m: m.pop("profile"), ("names no profile", "`refq lower`"),
                 id="profile-missing"),
])
def test_export_integer_model_without_metadata(tmp_path, capsys, damage, needles):
    from refq import save

    g = _int_model()
    damage(g.meta["integer"])
    save(g, tmp_path / "int.refq.h5")
    fails_cleanly(capsys, tmp_path, "export", tmp_path / "int.refq.h5", "--format", "hex,c,bin",
                  "-o", tmp_path / "hw", needles=needles)


def test_export_integer_model_pack_too_wide_writes_nothing(tmp_path, capsys):
    from refq import save

    save(_int_model(), tmp_path / "int.refq.h5")
    fails_cleanly(capsys, tmp_path, "export", tmp_path / "int.refq.h5", "--format", "hex,c",
                  "-o", tmp_path / "hw", "--pack", "16", needles=("tensor 'fc/weight' (c)",
                                                                  "64 bits"))
