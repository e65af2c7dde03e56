"""The disk a fleet simulation gives the agents it hosts: no flush to stable storage, exchange renames.

Why that is safe there and nowhere else (docs/power-cuts.md): an fsync protects against the
operating system losing its page cache (a power cut or kernel crash of the machine), not against
a process dying, and a fleet simulation simulates neither. Everything else stays: the write order
(persist before acting), the temp files and the atomic renames, so a killed host process still
leaves every file old or new.

Invariants: :class:`FastDisk` never flushes; its :meth:`~FastDisk.replace` leaves ``dst`` naming
the new file whatever happens (a kill between its two calls leaves the new file in place and the
old bytes under the temp name, which nothing reads and the next write truncates).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

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
        if self.exchange is not None and self.exchange(os.fspath(src), os.fspath(dst)) == 0:
            with contextlib.suppress(OSError):  # the new file is in place; a leftover is only a temp file
                os.unlink(src)
            return
        os.replace(src, dst)
