"""One writer per run directory: an advisory lock file, ``<run_dir>/.fwi.lock``.

Every command that writes a run directory (``fwi model``, ``invert``, ``sweep``) holds an
exclusive ``flock`` on this file while it works. A second process asking for the same
directory fails at once with a :class:`~fwi_cli.errors.RunLockedError` that names the holder
(pid, host, start time, command line: written into the file by the holder), so two sweeps
started on one run directory never write the same store.

The kernel drops the lock when the holder's file descriptor closes, including when the
process is killed (SIGKILL), so a crashed sweep never leaves a stale lock; the file itself
stays (deleting it would let a third process lock a different inode). The lock is
re-entrant within one :class:`RunLock` object (a sweep takes it, then its jobs take it
again). Local file systems only: ``flock`` over some network file systems is a no-op.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from fwi_cli.errors import RunLockedError, StorageError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".fwi.lock"


class RunLock:
    """Exclusive, re-entrant lock of a run directory (a context manager).

    Args:
        run_dir: the run directory (created if missing).

    Raises (on entry):
        RunLockedError: another process holds the lock; the message names it.
        StorageError: the directory or the lock file cannot be created.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot create the run directory lock {self.path}: {exc.strerror or exc}; "
                "choose a writable output_dir"
            ) from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunLockedError(
                    f"{self.run_dir} is in use by another fwi process ({holder}); wait for it "
                    "to finish, or give this run another name or output_dir"
                ) from None
        try:
            os.ftruncate(fd, 0)
            info = (f"pid {os.getpid()} on {socket.gethostname()}, since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)[:200]}")
            os.pwrite(fd, info.encode("utf-8", "replace"), 0)
        except OSError:
            pass  # the description is informative only
        self._fd = fd
        self._depth = 1

    def release(self) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 400, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"
