"""The persisted upgrade journal: written atomically *before* each side effect.

Invariants:
- a write is temp file in the same folder, fsync, atomic rename (:func:`replace`), fsync of the
  folder: a reader sees the old document or the new one, never a torn one;
- the journal (:class:`Journal`) is JSON Lines, one document a persisted state: a step's first
  state creates it by such a write, each later state is appended (one write and one fsync, no
  rename), and a reader takes the last whole line, so a cut mid-append leaves the previous state;
- ``persist_count`` counts every persisted step of one upgrade; past :data:`MAX_PERSISTS` the
  upgrade is ended as failed and rolled back (a crash-loop breaker, as Mender's
  ``kMaxStateDataStoreCount``).

Durability: every fsync of the agent (journal, outbox, cursors, nonces, fetcher, database build)
goes through :func:`fsync` and :func:`fsync_dir`, which skip the flush only when
:func:`durable` says so, that is when :data:`NO_FSYNC_ENV` is ``1``. Only a fleet simulation's
worker processes set it (``simulator/fleet/host.py``): no OS crash is simulated there, and the
write order, the temp files and the atomic renames stay, so a killed process still leaves the old
or the new document. Power-cut tests, chaos and real servers keep it unset (docs/power-cuts.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NotRequired

from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic reads a TypedDict from here before Python 3.12

from agent import crashpoints
from common.errors import StoreError
from common.reasons import Reason

MAX_PERSISTS = 28  # as Mender: more persisted steps than this in one upgrade is a crash loop
NO_FSYNC_ENV = "ALLWORX_SIM_NO_FSYNC"  # "1": a simulated server that no power cut can hit skips fsync


def durable() -> bool:
    """Whether writes are flushed to stable storage (always, unless :data:`NO_FSYNC_ENV` is ``1``).

    The one place the simulation-only setting is read (docs/power-cuts.md says when it is safe).
    """
    return os.environ.get(NO_FSYNC_ENV) != "1"


def fsync(fd: int) -> None:
    """Flush an open file's bytes to stable storage (skipped in a no-fsync simulation)."""
    if durable():
        os.fsync(fd)


def _exchange_function() -> Callable[[str, str], int] | None:
    """libc's ``renameat2`` bound to RENAME_EXCHANGE, or None where there is no such call."""
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


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_exchange: Callable[[str, str], int] | None = _exchange_function() if sys.platform == "linux" else None


def replace(src: Path | str, dst: Path | str) -> None:
    """Atomically make ``dst`` name the file at ``src`` (``os.replace``), a reader seeing old or new.

    In a no-fsync simulation (:func:`durable` false) an existing ``dst`` is swapped with ``src``
    (``renameat2(RENAME_EXCHANGE)``), then the old file, now at ``src``, is unlinked: a rename over
    an existing file makes ext4 write the new file's blocks out at once (``auto_da_alloc``, its
    guard for programs that do not fsync), which cost a fleet host about 0.1 ms of each of its
    many atomic writes (105 us against 15 us for a 300-byte file; a 2,000-server fleet benchmark
    10-13% of its wall time, measured on the 2-core machine). A kill between the two calls leaves
    the new ``dst`` and the old file as the temp file, which readers never read and the next write
    truncates. Durable writes (real servers, tests of power cuts) keep the plain ``os.replace``
    after their fsync, as do filesystems without the exchange.

    Raises:
        OSError: the rename failed.
    """
    if _exchange is not None and not durable() and _exchange(os.fspath(src), os.fspath(dst)) == 0:
        with contextlib.suppress(OSError):  # the new file is in place; a leftover is only a temp file
            os.unlink(src)
        return
    os.replace(src, dst)  # durable, a new name (ENOENT), or no exchange on this filesystem


def fsync_dir(folder: Path | str) -> None:
    """Flush a folder's entries to disk (after a rename in it; skipped in a no-fsync simulation)."""
    if not durable():
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_error(exc: OSError, what: str = "disk error") -> StoreError:
    """Translate an OS error into the product's error (reason NO_SPACE when the disk is full)."""
    reason = Reason.NO_SPACE if exc.errno == errno.ENOSPC else Reason.BAD_INPUT
    return StoreError(f"{what}: {exc.strerror or exc}", reason=reason)


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


def write_atomic(path: Path, data: bytes, *, point: str | None = None) -> None:
    """Replace ``path`` with ``data`` atomically, optionally hitting crash point ``point`` mid-way.

    The crash point sits in the middle of writing the temp file, so a cut there leaves a torn
    (half-written) ``.<name>.tmp`` next to an intact ``path``: readers never look at the temp
    file, and the next write truncates it.

    Raises:
        StoreError: the disk refused (reason NO_SPACE when it is full).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as handle:
            half = len(data) // 2
            handle.write(data[:half])
            if point is not None:
                handle.flush()
                crashpoints.hit(point)
            handle.write(data[half:])
            handle.flush()
            fsync(handle.fileno())
        replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(exc, f"cannot write {path}") from exc


def write_json(path: Path, document: Any, *, point: str | None = None, compact: bool = False) -> None:
    """Write ``document`` as JSON atomically: indented for people, or ``compact`` (one line).

    Compact is for files an upgrade rewrites many times a step (journal, bootloader, outbox
    cursor): it takes the C encoder, which an indent turns off.
    """
    text = json.dumps(document, sort_keys=True) if compact else json.dumps(document, indent=1, sort_keys=True)
    write_atomic(path, text.encode() + b"\n", point=point)


def read_json(path: Path) -> Any:
    """Read a JSON document.

    Raises:
        StoreError: missing or not JSON.
    """
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise StoreError(f"{path} is missing") from exc
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path} is unreadable or not JSON: {exc}") from exc


class StepPosition(TypedDict):
    """Which step of the request a job is (i of n)."""

    step: NotRequired[int]
    steps: NotRequired[int]


@dataclass
class Job:
    """One upgrade step in flight, as persisted (one journal line: these fields, as JSON).

    A line is read back through pydantic (:data:`_JOB`): a field of the wrong type, a missing or
    an unknown one makes the journal unknown, never a half-read job.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    job_id: str
    state: str
    target: str  # what the operator asked for (the whole chain's end)
    release: str  # this step's release
    build: str
    from_release: str
    from_build: str
    old_slot: str
    new_slot: str
    started_at: str
    persist_count: int = 0
    rebuilds_database: bool = False
    db_schema: int = 0
    phone_firmware: str = ""
    error: dict[str, str] | None = None  # why it rolls back: reason (a code) and message
    extra: StepPosition = field(default_factory=StepPosition)


_JOB_FIELDS = tuple(f.name for f in fields(Job))
_JOB = TypeAdapter(Job)


class Journal:
    """The journal file of one server: one compact JSON document a line, the last whole one counts.

    A step's first state is written atomically (:func:`write_atomic`), creating the file; each later
    state is appended as ``\\n{document}\\n`` and fsynced. A power cut mid-append leaves a torn
    last line, which :meth:`load` skips (the previous state stands), and the next append starts on
    a line of its own. An append the disk refuses is cut back off. :meth:`clear` ends the step by
    removing the file, so it holds one step's states (:data:`MAX_PERSISTS` bounds them); past
    :data:`COMPACT_BYTES` a save rewrites it with the latest state alone. A file of one state is a
    plain JSON document, the format of earlier agents.

    An append costs about a tenth of an atomic rewrite (no new inode, no rename): the journal was
    10% of a fleet's CPU when every state was a rewrite.
    """

    COMPACT_BYTES = 64 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Job | None:
        """Return the persisted job, or None when idle. A garbled or alien file reads as unknown."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            return _unknown()
        try:
            return _job(json.loads(data))  # one document: a single state, or an earlier agent's file
        except ValueError:
            pass
        for line in reversed(data.split(b"\n")):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError:
                continue  # a torn append (a cut mid-write): the state before it stands
            return _job(raw)
        return _unknown()

    def save(self, job: Job) -> None:
        """Persist ``job`` (counting the write) before the caller's side effect.

        Raises:
            StoreError: the disk refused; the journal still reads as the previous state.
        """
        job.persist_count += 1
        document = {name: getattr(job, name) for name in _JOB_FIELDS}  # shallow: encoded at once
        line = b"\n" + json.dumps(document, sort_keys=True).encode() + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            fd = None
        except OSError as exc:
            raise disk_error(exc, f"cannot write {self.path}") from exc
        if fd is not None:
            try:
                size = os.fstat(fd).st_size
                if size < self.COMPACT_BYTES:
                    _append(fd, line, size)
                    return
            except OSError as exc:
                raise disk_error(exc, f"cannot write {self.path}") from exc
            finally:
                os.close(fd)
        write_atomic(self.path, line[1:], point="journal.write")  # the step's first state, or compacting

    def clear(self) -> None:
        """Remove the journal: the server is idle."""
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)


def _append(fd: int, line: bytes, size: int) -> None:
    """Append ``line`` to the open journal of ``size`` bytes and fsync it; cut it back to ``size``
    if the disk refuses.

    Raises:
        OSError: the write or the flush failed (the file is cut back to its size before it).
    """
    half = len(line) // 2
    try:
        _write_all(fd, line[:half])
        crashpoints.hit("journal.write")  # a cut here leaves a torn last line
        _write_all(fd, line[half:])
        fsync(fd)
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


def _job(raw: Any) -> Job | None:
    """The job a journal line holds: None for an empty document, unknown for an alien one."""
    if not raw:
        return None
    try:
        return _JOB.validate_python(raw)
    except ValidationError:
        return _unknown()


def _unknown() -> Job:
    unreadable = {"reason": Reason.JOURNAL_UNREADABLE.value,
                  "message": "the upgrade journal was unreadable; rolled back"}  # fmt: skip
    return Job("unknown", "unknown", "", "", "", "", "", "", "", "", MAX_PERSISTS, error=unreadable)
