"""Files written so that a reader, or a power cut, finds the old content or the new, never a torn one.

Invariants:
- :func:`write_atomic` writes a temp file in the same folder, flushes it (``fsync``), renames it
  over the target and flushes the folder: a reader sees the old document or the new one;
- every flush and rename goes through a :class:`Disk`, given by the caller; the default,
  :data:`DURABLE`, always flushes and renames with ``os.replace``. The agent never chooses
  anything else by itself: whoever builds it (a fleet simulation) may pass another disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agent import crashpoints
from common.errors import StoreError
from common.reasons import Reason


class Disk(Protocol):
    """How written bytes reach stable storage, how a new file takes an old one's name and how a file goes."""

    def fsync(self, fd: int) -> None:
        """Flush an open file's bytes to stable storage.

        Raises:
            OSError: the flush failed.
        """

    def fsync_dir(self, folder: Path | str) -> None:
        """Flush a folder's entries (after a rename or a removal in it).

        Raises:
            OSError: the folder cannot be opened or flushed.
        """

    def replace(self, src: Path | str, dst: Path | str) -> None:
        """Atomically make ``dst`` name the file at ``src``: a reader sees the old file or the new.

        Raises:
            OSError: the rename failed.
        """

    def write_temp(self, tmp: Path, data: bytes, point: str | None) -> None:
        """Make the temp file ``tmp`` (:func:`temp_path`) hold exactly ``data`` and flush it,
        hitting crash point ``point`` when half of ``data`` is written (:func:`write_halves`).

        Raises:
            OSError: the file cannot be opened, written or flushed.
            PowerCut: an injector cut the power at ``point``.
        """

    def replace_temp(self, tmp: Path, dst: Path) -> None:
        """Atomically make ``dst`` name the file :meth:`write_temp` wrote at ``tmp``: a reader sees
        the old file or the new. Afterwards ``tmp`` is gone or names a file that nothing reads.

        Raises:
            OSError: the rename failed.
        """

    def remove(self, path: Path) -> None:
        """Remove the file at ``path`` (nothing when there is none); the folder is not flushed.
        Afterwards ``path`` names nothing; its temp name (:func:`temp_path`) may name the old file.

        Raises:
            OSError: the removal failed.
        """


class DurableDisk:
    """Every flush is done and every rename is ``os.replace``: what a real server needs."""

    def fsync(self, fd: int) -> None:
        """Flush an open file's bytes to stable storage (``os.fsync``).

        Raises:
            OSError: the flush failed.
        """
        os.fsync(fd)

    def fsync_dir(self, folder: Path | str) -> None:
        """Flush a folder's entries to stable storage.

        Raises:
            OSError: the folder cannot be opened or flushed.
        """
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, src: Path | str, dst: Path | str) -> None:
        """Rename ``src`` over ``dst`` (``os.replace``, atomic on POSIX).

        Raises:
            OSError: the rename failed.
        """
        os.replace(src, dst)

    def write_temp(self, tmp: Path, data: bytes, point: str | None) -> None:
        """Create (or truncate) ``tmp``, write ``data`` into it and flush it (:meth:`fsync`).

        Raises:
            OSError: the file cannot be opened, written or flushed.
            PowerCut: an injector cut the power at ``point``.
        """
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            write_halves(fd, data, point)
            self.fsync(fd)
        finally:
            os.close(fd)

    def replace_temp(self, tmp: Path, dst: Path) -> None:
        """Rename ``tmp`` over ``dst`` (:meth:`replace`): ``tmp`` is gone.

        Raises:
            OSError: the rename failed.
        """
        self.replace(tmp, dst)

    def remove(self, path: Path) -> None:
        """Unlink ``path`` (nothing when there is none).

        Raises:
            OSError: the removal failed.
        """
        path.unlink(missing_ok=True)


DURABLE: Disk = DurableDisk()


def temp_path(path: Path) -> Path:
    """The temp file :func:`write_atomic` writes before it renames it to ``path``: ``.<name>.tmp``."""
    return path.with_name(f".{path.name}.tmp")


def write_halves(fd: int, data: bytes, point: str | None) -> None:
    """Write ``data`` at the open file's position, hitting crash point ``point`` (when given) after
    the first half, so that a cut there leaves a torn file.

    Raises:
        OSError: a write failed.
        PowerCut: an injector cut the power at ``point``.
    """
    half = len(data) // 2
    _write_all(fd, data[:half])
    if point is not None:
        crashpoints.hit(point)
    _write_all(fd, data[half:])


def append_flushed(fd: int, data: bytes, size: int, disk: Disk, point: str | None = None) -> None:
    """Append ``data`` to the open file of ``size`` bytes and flush it (``point``: as
    :func:`write_halves`, else one write); cut the file back to ``size`` if the disk refuses, so no
    part of ``data`` stays in front of what is appended next.

    Raises:
        OSError: the write or the flush failed (the file is cut back to its size before it).
        PowerCut: an injector cut the power at ``point`` (the file is left torn, as a cut leaves it).
    """
    try:
        if point is None:
            _write_all(fd, data)
        else:
            write_halves(fd, data, point)
        disk.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (``os.write`` may write fewer; the next call then raises why).

    Raises:
        OSError: the disk refused.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_file(path: Path | str, disk: Disk = DURABLE) -> None:
    """Flush the bytes of the file at ``path`` through ``disk``.

    Raises:
        OSError: the file cannot be opened or flushed.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        disk.fsync(fd)
    finally:
        os.close(fd)


def disk_error(exc: OSError, what: str = "disk error") -> StoreError:
    """Translate an OS error into the product's error (reason NO_SPACE when the disk is full)."""
    reason = Reason.NO_SPACE if exc.errno == errno.ENOSPC else Reason.BAD_INPUT
    return StoreError(f"{what}: {exc.strerror or exc}", reason=reason)


def write_atomic(
    path: Path, data: bytes, *, point: str | None = None, disk: Disk = DURABLE, shared: bool = False
) -> None:
    """Replace ``path`` with ``data`` atomically, optionally hitting crash point ``point`` mid-way.

    The temp file is ``.<name>.tmp`` beside ``path`` (:func:`temp_path`), written and renamed by
    ``disk`` (:meth:`Disk.write_temp`, :meth:`Disk.replace_temp`): a cut at ``point`` (in the middle
    of writing it) leaves it torn next to an intact ``path``; readers never look at it, and the next
    write rewrites it whole. ``shared``: several processes may write ``path`` at once, so each writes
    a temp file of its own (``.<name>-<random>.tmp``, created anew, flushed through ``disk`` and
    renamed with :meth:`Disk.replace`; removed on failure).

    Raises:
        StoreError: the disk refused (reason NO_SPACE when it is full).
    """
    temp, fd = temp_path(path), -1
    if shared:
        try:
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
        except OSError as exc:
            raise disk_error(exc, f"cannot write {path}") from exc
        temp = Path(name)
    try:
        if shared:
            try:
                write_halves(fd, data, point)
                disk.fsync(fd)
            finally:
                os.close(fd)
            disk.replace(temp, path)
        else:
            disk.write_temp(temp, data, point)
            disk.replace_temp(temp, path)
        disk.fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise disk_error(exc, f"cannot write {path}") from exc


def write_json(
    path: Path, document: Any, *, point: str | None = None, compact: bool = False, disk: Disk = DURABLE
) -> None:
    """Write ``document`` as JSON atomically (:func:`write_atomic`): indented for people, or
    ``compact`` (one line, the C encoder) for files an upgrade rewrites many times a step.

    Raises:
        StoreError: the disk refused (reason NO_SPACE when it is full).
    """
    text = (_COMPACT if compact else _INDENTED).encode(document)
    write_atomic(path, text.encode() + b"\n", point=point, disk=disk)


_COMPACT = json.JSONEncoder(sort_keys=True)  # as json.dumps(document, sort_keys=True), one encoder
_INDENTED = json.JSONEncoder(indent=1, sort_keys=True)


MAX_SMALL_FILE = 1024 * 1024  # bytes: a JSON document, key or trust file of a server is far smaller


def read_bounded(path: Path, limit: int = MAX_SMALL_FILE) -> bytes:
    """Read a regular file of at most ``limit`` bytes, without ever blocking or reading past it.

    A FIFO, a device (``/dev/zero``), a folder or a link to one of them is refused before any
    read: the file is opened non-blocking and checked with ``fstat``.

    Raises:
        FileNotFoundError: there is no such file.
        StoreError: not a regular file, larger than ``limit``, or unreadable.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StoreError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise StoreError(f"{path} is larger than {limit} bytes")
        chunks, size = [], 0
        while chunk := os.read(fd, min(65536, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise StoreError(f"{path} is larger than {limit} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def read_json(path: Path, limit: int = MAX_SMALL_FILE) -> Any:
    """Read a JSON document (a regular file of at most ``limit`` bytes).

    Raises:
        StoreError: missing, not a regular file, too large, or not JSON.
    """
    try:
        return json.loads(read_bounded(path, limit))
    except FileNotFoundError as exc:
        raise StoreError(f"{path} is missing") from exc
    except ValueError as exc:
        raise StoreError(f"{path} is unreadable or not JSON: {exc}") from exc


def create_folder_once(folder: Path, marker: str, build: Callable[[Path], None], what: str) -> None:
    """Create ``folder`` by running ``build`` on a temporary sibling and renaming it into place.

    Race-safe: when several processes create the same folder at once, one rename wins and the
    others drop their work, as long as the winner's ``marker`` file is there.

    Raises:
        StoreError: the folder cannot be created.
    """
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError as exc:
        raise StoreError(f"{folder}: cannot create the {what}: {exc.strerror}") from exc
    try:
        build(work)
        try:
            os.rename(work, folder)  # atomic; fails when another process created it first
        except OSError:
            if not (folder / marker).exists():
                raise
    except OSError as exc:
        raise StoreError(f"{folder}: cannot create the {what}: {exc.strerror}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
