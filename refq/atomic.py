"""Atomic file output: write to a temporary file beside the target, then rename over it.

Rules:
- A failure while writing (an exception, a full disk) leaves the target untouched (either the old
  file or none), removes the temporary file and any directory created for it.
- The temporary file is `.tmp-<pid>-<random>-<name>` in the target's directory (`<name>` is the
  target's file name, shortened so that the temporary name fits the filesystem). A writer that was
  killed leaves its temporary file behind; the next `atomic_path` for the same target removes the
  temporary files of that target whose writer process no longer exists.
- An existing target that is not a regular file (/dev/null, /dev/stdout, a FIFO) is written in
  place, not replaced.
- An output path that cannot be written gives one `OutputError` naming the path and what to do:
  an existing directory, a path under a regular file, a name longer than the filesystem allows,
  a directory without write permission, or an OSError while writing (e.g. ENOSPC, disk full).
  Bodies of `atomic_path` only write, so an OSError inside one is a failure to write the target.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile

import numpy as np

from .errors import OutputError, one_line

__all__ = ["atomic_path", "save_npy", "check_output_path", "remove_stale_temps"]

_TMP = re.compile(r"\.tmp-(\d+)-[A-Za-z0-9_]+-(.*)\Z", re.S)
_TMP_SUFFIX_BYTES = 200  # longest target name kept in a temporary name (NAME_MAX is usually 255)
_ADVICE = "choose another output path"


def _reason(e: OSError) -> str:
    """One line for an OSError: its strerror, else its first line."""
    return one_line(e.strerror or str(e) or type(e).__name__)


def _name_max(directory: str) -> int:
    """The longest file name (bytes) allowed in the existing `directory`."""
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_output_path(path) -> str:
    """Refuse an output `path` that cannot become a file, before any work is done; return it.

    OutputError when `path` is empty or ends in a separator, is an existing directory, has a
    directory component that is a regular file, or has a component longer than the filesystem
    allows. Permissions and free space are found out only by writing."""
    path = os.fspath(path)
    base = os.path.basename(path)
    if not base or base in (".", ".."):
        raise OutputError(f"output path '{path}' is not a file name; {_ADVICE}")
    if os.path.isdir(path):
        example = os.path.join(path, "out" + os.path.splitext(base)[1])
        raise OutputError(f"{path}: is an existing directory, not a file; give a file name "
                          f"inside it (e.g. {example}) or {_ADVICE}")
    directory = os.path.dirname(os.path.abspath(path))
    ancestor = directory
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise OutputError(f"{path}: '{ancestor}' is a file, not a directory, so nothing can be "
                          f"written under it; {_ADVICE}")
    limit = _name_max(ancestor)
    for part in os.path.abspath(path).split(os.sep):
        if len(os.fsencode(part)) > limit:
            raise OutputError(f"{path}: the name '{part[:40]}...' is {len(os.fsencode(part))} "
                              f"bytes, longer than the filesystem allows ({limit}); choose a "
                              "shorter output name")
    return path


def _tmp_suffix(base: str) -> str:
    """The target name as it appears in its temporary names (shortened to fit NAME_MAX)."""
    while len(os.fsencode(base)) > _TMP_SUFFIX_BYTES:
        base = base[:-1]
    return base


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process id refq writes; leave the file alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: the process exists but belongs to someone else
        return True
    return True


def remove_stale_temps(directory: str, base: str) -> list:
    """Remove the temporary files of target `base` in `directory` whose writer process no longer
    exists; return their names."""
    suffix = _tmp_suffix(base)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TMP.match(name)
        if not m or m.group(2) != suffix or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if os.path.isfile(os.path.join(directory, name)):
                os.unlink(os.path.join(directory, name))
                removed.append(name)
    return removed


def _missing_dirs(directory: str) -> list:
    """The directories from `directory` up that do not exist yet, deepest first."""
    out = []
    while not os.path.exists(directory):
        out.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return out


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's directory; on success rename it to `path`.

    An existing target that is not a regular file (a device such as /dev/null, a FIFO) is
    written in place: renaming over it would replace the device. Raises OutputError (see the
    module docstring) when `path` cannot be written."""
    path = check_output_path(path)
    if os.path.exists(path) and not os.path.isfile(path):
        try:
            yield path
        except OSError as e:
            raise OutputError(f"{path}: writing failed ({_reason(e)}); {_ADVICE}") from None
        return
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    created = _missing_dirs(directory)
    tmp = None
    try:
        try:
            os.makedirs(directory, exist_ok=True)
            remove_stale_temps(directory, base)
            fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-",
                                       suffix="-" + _tmp_suffix(base), dir=directory)
            os.close(fd)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # the permissions of a plain open(), not mkstemp's 0600
        except OSError as e:
            denied = e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            what = "directory is not writable" if denied else "cannot create a file there"
            raise OutputError(f"{path}: {what} ({_reason(e)}); {_ADVICE}") from None
        try:
            yield tmp
            os.replace(tmp, path)
        except OSError as e:
            hint = ("free disk space or " if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
                    else "")
            raise OutputError(f"{path}: writing failed ({_reason(e)}); {hint}{_ADVICE}; the "
                              "previous file, if any, is unchanged") from None
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for d in created:  # deepest first; only directories this call created and left empty
            with contextlib.suppress(OSError):
                os.rmdir(d)
        raise


def save_npy(path, array: np.ndarray):
    """np.save, atomically, never pickling."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
