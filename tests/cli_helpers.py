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
