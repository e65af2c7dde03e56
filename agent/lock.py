"""The server directory's lock: one process at a time changes a server.

Every command that changes a server (``upgrade``, ``install``, ``keys install``,
``keys install-revocations``) and the daemon (``allworx-agent run``, for its whole lifetime) hold
an exclusive ``flock`` on ``DIR/.lock`` before they read or write anything else. A second one is
refused at once with :class:`ServerBusyError` (reason ``SERVER_BUSY``) naming the holder's pid,
and changes nothing. Read-only commands (``status``, ``plan``) take no lock.

Invariants: the lock is an ``flock`` on an open file, so it is released with its holder however
the process ends (a kill, a power cut: nothing stale is left to clean up); the file is never
removed (removing it would let two processes lock two different files of the same name); it holds
the holder's pid for the message only, never for the decision. Two holders in one process (two
daemons on one folder) exclude each other too: an ``flock`` belongs to the open file, not the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from common.errors import StoreError
from common.reasons import Reason

LOCK_FILE = ".lock"  # in the server directory
_PID_TRIES, _PID_PAUSE = 100, 0.01  # the holder's pid is read for up to a second (refusals only)


class ServerBusyError(StoreError):
    """Another process holds the server directory's lock."""

    reason = Reason.SERVER_BUSY


class ServerLock:
    """The exclusive lock of one server directory (``with ServerLock(root):`` or acquire/release)."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock without waiting and write this process's pid into the lock file.

        Raises:
            ServerBusyError: another process (or another holder in this one) has it.
            StoreError: the lock file cannot be opened (no such server directory, a read-only disk).
        """
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot lock {self.path.parent}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ServerBusyError(
                f"{self.path.parent} is in use by {holder}; "
                "wait for it to finish (or stop that agent) and try again"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {self.path.parent}: {exc.strerror or exc}") from exc
        with contextlib.suppress(OSError):  # the pid is for the message only: a failed write is harmless
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent); the file stays."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file releases the flock

    def __enter__(self) -> ServerLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it: ``process 1234``, or a vaguer phrase.

    The holder writes its pid just after it took the lock: until then the file is empty (or holds a
    pid of an earlier holder, gone), so a pid of no live process is read again for a moment.
    """
    for _ in range(_PID_TRIES):
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            text = ""
        if text.isascii() and text.isdigit() and _alive(int(text)):
            return f"process {text}"
        time.sleep(_PID_PAUSE)
    return "another process"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


@contextlib.contextmanager
def server_lock(root: Path) -> Iterator[ServerLock]:
    """Hold the lock of the server directory ``root`` for the block.

    Raises:
        ServerBusyError: another process holds it.
        StoreError: the lock file cannot be opened.
    """
    with ServerLock(root) as lock:
        yield lock
