"""The disk a fleet simulation gives the agents it hosts: no flush to stable storage, exchange renames,
temp files used again.

Why that is safe there and nowhere else (docs/power-cuts.md): an fsync protects against the
operating system losing its page cache (a power cut or kernel crash of the machine), not against
a process dying, and a fleet simulation simulates neither. Everything else stays: the write order
(persist before acting), the temp files and the atomic renames, so a killed host process still
leaves every file old or new.

Invariants: :class:`FastDisk` never flushes; its :meth:`~FastDisk.replace` leaves ``dst`` naming
the new file whatever happens (a kill between its two calls leaves the new file in place and the
old bytes under the temp name, which nothing reads and the next write overwrites). The small
files of :func:`agent.fileio.write_atomic` keep two inodes that swap names: the temp file is
rewritten in place (:meth:`~FastDisk.write_temp`), exchanged with the target, and keeps the old
file under the temp name (:meth:`~FastDisk.replace_temp`); a removed file is renamed to its temp
name (:meth:`~FastDisk.remove`): creating, allocating and freeing a file costs the kernel about
eight times what rewriting one in place does. A reader sees the old file or the new one whole,
unless it holds the file open across two later writes (the second rewrites the inode it holds);
every reader in the agent reads a file whole at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

from agent.fileio import temp_path, write_halves

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange_function() -> Callable[[str, str], int] | None:
    """libc's ``renameat2`` bound to RENAME_EXCHANGE, or None where there is no such call."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        call = libc.renameat2
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    call.restype = ctypes.c_int

    def exchange(src: str, dst: str) -> int:
        return int(call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_EXCHANGE))

    return exchange


class FastDisk:
    """A :class:`agent.fileio.Disk` for simulated servers that no power cut can hit."""

    def __init__(self) -> None:
        self.exchange = _exchange_function()  # None: every rename is a plain ``os.replace``

    def fsync(self, fd: int) -> None:
        """Do nothing: no OS crash is simulated, so the page cache is as good as the disk."""

    def fsync_dir(self, folder: Path | str) -> None:
        """Do nothing (as :meth:`fsync`)."""

    def replace(self, src: Path | str, dst: Path | str) -> None:
        """Make ``dst`` name the file at ``src``: swap the two names, then unlink the old file.

        A rename over an existing file makes ext4 write the new file's blocks out at once
        (``auto_da_alloc``, its guard for programs that do not fsync); an exchange does not. A new
        name (nothing to swap with) or a filesystem without the exchange takes ``os.replace``.

        Raises:
            OSError: the rename failed.
        """
        if self._exchange(src, dst):
            with contextlib.suppress(OSError):  # the new file is in place; a leftover is only a temp file
                os.unlink(src)
            return
        os.replace(src, dst)

    def write_temp(self, tmp: Path, data: bytes, point: str | None) -> None:
        """Write ``data`` over the temp file in place (created when missing), then cut it to the
        length of ``data``: no new file, no truncation to nothing, no flush.

        A cut at ``point`` leaves the temp file torn (new bytes, then old ones), as a cut in a new
        temp file leaves it torn; nothing reads it.

        Raises:
            OSError: the file cannot be opened or written.
            PowerCut: an injector cut the power at ``point``.
        """
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            write_halves(fd, data, point)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def replace_temp(self, tmp: Path, dst: Path) -> None:
        """Swap the names of ``tmp`` and ``dst`` and keep the old file under the temp name, for
        :meth:`write_temp` to rewrite next time; a new name takes ``os.replace``.

        Raises:
            OSError: the rename failed.
        """
        if not self._exchange(tmp, dst):
            os.replace(tmp, dst)

    def remove(self, path: Path) -> None:
        """Rename ``path`` to its temp name (nothing when there is none), so the next write of
        ``path`` rewrites that file instead of creating one.

        Raises:
            OSError: the rename failed.
        """
        tmp = temp_path(path)
        if self._exchange(path, tmp):  # a temp file was there: ``path`` now names it
            os.unlink(path)
            return
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, tmp)

    def _exchange(self, src: Path | str, dst: Path | str) -> bool:
        """Whether the names of ``src`` and ``dst`` were swapped (False: one is missing, or no exchange)."""
        return self.exchange is not None and self.exchange(os.fspath(src), os.fspath(dst)) == 0
