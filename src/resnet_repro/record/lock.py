"""``run.lock``: one process per run directory.

An OS file lock (flock), released by the kernel when its holder dies, however it dies: a lock
left by a killed process is taken over, and said so. The file holds its holder's pid, host and
start time, which a refusal names.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from ..errors import RunDirError
from .files import LOCK_FILE, UMASK

log = logging.getLogger("resnet_repro")
_HELD = (
    errno.EWOULDBLOCK,
    errno.EAGAIN,
    errno.EACCES,
)  # flock's answers for "another process holds it"


class RunLock:
    """``run.lock`` of a run directory, or (``file``, ``what``) another folder's lock: a sweep
    folder's ``sweep.lock``, held by the sweep's command while it runs."""

    def __init__(self, run_dir: str | Path, file: str = LOCK_FILE, what: str = "run"):
        self.dir = Path(run_dir)
        self.path = self.dir / file
        self.what = what
        self._fd: int | None = None

    def _holder(self, fd: int) -> str:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()

    def _flock(self, fd: int, how: int) -> bool | None:
        """Lock ``fd`` without waiting: True when taken, False when another live process holds it,
        None on a filesystem without file locks (some NFS or Lustre mounts)."""
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
        except OSError as ex:
            return False if ex.errno in _HELD else None
        return True

    def acquire(self) -> None:
        """Hold the lock for this process's lifetime; refuse when another live process holds it.
        Temp files of a write that a kill cut short are removed once it is held."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
        taken = self._flock(fd, fcntl.LOCK_EX)
        if taken is None:  # run, but say so
            log.warning(
                "Cannot lock %s: this filesystem has no file locks, so nothing stops a second "
                "process from using the same run directory.",
                self.path,
            )
            self._fd = fd
            return
        if not taken:
            holder = self._holder(fd) or "another process"
            os.close(fd)
            raise self._in_use(holder)
        if old := self._holder(fd):
            log.info("Took over the lock of %s, which is no longer running (%s).", self.dir, old)
        me = (
            f"pid {os.getpid()} on {platform.node()} since "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}"
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        self._fd = fd
        for stale in self.dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def try_acquire(self) -> bool:
        """Take the lock quietly when no live process holds it (True), naming nobody in it; False
        when one does. For removing a directory nobody has started in (``release`` after)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
        except OSError:
            return False
        if self._flock(fd, fcntl.LOCK_EX) is False:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def check_free(self) -> None:
        """Refuse when a live process holds the lock, without taking it (nothing is written)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return  # no lock file: nobody runs here
        try:
            if self._flock(fd, fcntl.LOCK_SH) is False:
                raise self._in_use(self._holder(fd) or "another process")
        finally:
            os.close(fd)  # closing releases the probe's shared lock

    def held(self) -> bool | None:
        """Whether a live process holds the lock now (None: cannot tell: no lock file, or a
        filesystem without file locks). Nothing is written."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            taken = self._flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)
        return None if taken is None else not taken

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def _in_use(self, holder: str) -> RunDirError:
        if self.what == "sweep":
            return RunDirError(
                f"{self.dir} is in use by another sweep, {holder} ({self.path.name}). Wait for it "
                f"to finish or stop it, or give this sweep its own folder (hydra.sweep.dir=<dir>); "
                f"no job was started."
            )
        return RunDirError(
            f"{self.dir} is in use by {holder} ({self.path.name}). Wait for that run to finish or "
            f"stop it, or give this run its own directory (name=<new name> or hydra.run.dir=<dir>)."
        )
