"""Private scratch directories for spilled partitions and staged rows, and the removal of those a
killed run left behind.

Why: a first ingest of 10^7 rows stages ~1.5 GB under ``$TMPDIR``, and a run may be killed at any
moment; the operating system only clears /tmp at boot. Each directory made here holds an
exclusive ``flock`` on its ``.owner`` file for as long as the process that made it lives; the
kernel drops that lock when the process dies, however it dies (SIGKILL, OOM killer, power cut of
a container). Making a new directory first removes every ``plait-*`` directory under the same
root whose lock it can take: their owners are gone. A live run's directory is never touched, and
neither is anything without an ``.owner`` file (other users' or other programs' files).
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import weakref

log = logging.getLogger("plait.store")

PREFIX = "plait-"
OWNER = ".owner"


class SpillDirectory:
    """A ``plait-<prefix>-*`` directory under ``root`` (default: ``$TMPDIR``), removed by
    :meth:`cleanup`, at the end of a ``with`` block (which yields its path), when collected, or
    by the next run after this process dies."""

    def __init__(self, prefix: str, root: str | os.PathLike | None = None):
        sweep_orphans(root)
        self.name = tempfile.mkdtemp(prefix=f"{PREFIX}{prefix}-", dir=root)
        self._owner = _take_ownership(self.name)
        self._finalizer = weakref.finalize(self, _remove, self.name, self._owner, os.getpid())

    def cleanup(self) -> None:
        self._finalizer()

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"SpillDirectory({self.name!r})"


def spill_directory(prefix: str, root: str | os.PathLike | None = None) -> SpillDirectory:
    """A private directory for spilled partitions (see :class:`SpillDirectory`). Where /tmp is a
    RAM disk, point ``TMPDIR`` at a real disk, or the spilled keys sit in memory after all."""
    return SpillDirectory(prefix, root)


def sweep_orphans(root: str | os.PathLike | None = None) -> list[str]:
    """Remove the ``plait-*`` directories under ``root`` whose owner process has died; returns them."""
    root = os.fspath(root) if root is not None else tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        try:
            if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            fd = os.open(os.path.join(entry.path, OWNER), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # no owner file (not ours, or made by an older plait), or not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its owner is alive
            os.close(fd)
            continue
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(entry.path)
    if removed:
        log.warning("removed %d scratch director%s left by killed plait runs: %s", len(removed),
                    "y" if len(removed) == 1 else "ies", ", ".join(removed))
    return removed


def _take_ownership(directory: str) -> int:
    """Lock ``directory/.owner`` for the life of this process. The lock is taken on a file under
    another name and then renamed, so a sweep never sees an ``.owner`` that is not yet locked."""
    pending = os.path.join(directory, ".owner-pending")
    fd = os.open(pending, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.rename(pending, os.path.join(directory, OWNER))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove(directory: str, owner_fd: int, owner_pid: int) -> None:
    if os.getpid() != owner_pid:  # a forked child exiting: the directory is its parent's
        return
    try:
        shutil.rmtree(directory, ignore_errors=True)  # under the lock: a sweep cannot race it
    finally:
        os.close(owner_fd)
