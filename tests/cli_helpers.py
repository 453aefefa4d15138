"""Driving `refq.cli.main` in-process from tests."""
from refq.cli import main


def cli(capsys, *argv):
    """(exit code, stdout, stderr) of `refq ARGV`."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(code, err, *needles):
    """The CLI failed cleanly: status 1, one `refq: error:` line, no traceback, naming `needles`."""
    assert code == 1
    assert err.startswith("refq: error: "), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert str(needle) in err, (needle, err)


def snapshot(root):
    """{relative path: sha256} of every file under `root` (to show that a failed command changed
    nothing)."""
    import hashlib
    import os

    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def fails_cleanly(capsys, root, *argv, needles=()):
    """`refq ARGV` on bad input: status 1, exactly one line `refq: error: ...` naming `needles`, no
    traceback, nothing on stdout after the error, and no file under `root` created or changed.
    Returns the error line."""
    before = snapshot(root)
    code, out, err = cli(capsys, *argv)
    assert_error(code, err, *needles)
    after = snapshot(root)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"
    return err.strip()
