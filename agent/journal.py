"""The persisted upgrade journal: written atomically *before* each side effect.

Invariants:
- the journal (:class:`Journal`) is JSON Lines, one document a persisted state: a step's first
  state creates it by an atomic write (:func:`agent.fileio.write_atomic`), each later state is
  appended (one write and one fsync, no rename), and a reader takes the last whole line, so a cut
  mid-append leaves the previous state;
- every flush goes through the :class:`~agent.fileio.Disk` the journal was given (durable unless
  its builder passed another);
- ``persist_count`` counts every persisted step of one upgrade; past :data:`MAX_PERSISTS` the
  upgrade is ended as failed and rolled back (a crash-loop breaker, as Mender's
  ``kMaxStateDataStoreCount``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, NotRequired

from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic reads a TypedDict from here before Python 3.12

from agent.fileio import DURABLE, Disk, append_flushed, disk_error, write_atomic
from common.reasons import Reason

MAX_PERSISTS = 28  # as Mender: more persisted steps than this in one upgrade is a crash loop


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
_ENCODER = json.JSONEncoder(sort_keys=True)  # one encoder for every save (json.dumps makes one a call)


class Journal:
    """The journal file of one server: one compact JSON document a line, the last whole one counts.

    A step's first state is written atomically (:func:`write_atomic`), creating the file; each later
    state is appended as ``\\n{document}\\n`` and fsynced. A power cut mid-append leaves a torn
    last line, which :meth:`load` skips (the previous state stands), and the next append starts on
    a line of its own. An append the disk refuses is cut back off. :meth:`clear` ends the step by
    removing the file, so it holds one step's states (:data:`MAX_PERSISTS` bounds them); past
    :data:`COMPACT_BYTES` a save rewrites it with the latest state alone. A file of one state is a
    plain JSON document, the format of earlier agents.
    """

    COMPACT_BYTES = 64 * 1024

    def __init__(self, path: Path, *, disk: Disk = DURABLE) -> None:
        self.path = path
        self.disk = disk

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
        line = b"\n" + _line(job).encode() + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            fd = None
        except OSError as exc:
            raise disk_error(exc, f"cannot write {self.path}") from exc
        if fd is not None:
            try:
                size = os.lseek(fd, 0, os.SEEK_END)
                if size < self.COMPACT_BYTES:
                    append_flushed(fd, line, size, self.disk, "journal.write")  # a cut: a torn last line
                    return
            except OSError as exc:
                raise disk_error(exc, f"cannot write {self.path}") from exc
            finally:
                os.close(fd)
        # the step's first state, or compacting
        write_atomic(self.path, line[1:], point="journal.write", disk=self.disk)

    def clear(self) -> None:
        """Remove the journal (through the disk): the server is idle."""
        self.disk.remove(self.path)
        self.disk.fsync_dir(self.path.parent)


_text = encode_basestring_ascii  # the encoder's spelling of a string (ASCII, escaped)
_integer = int.__repr__  # the encoder's spelling of an integer


def _line(job: Job) -> str:
    """The journal line of ``job``: its fields as :data:`_ENCODER` writes them (keys sorted).

    A running step's job (no error, its position as two integers) is written out key by key, each
    value spelt as the encoder spells it, at about a fifth of its cost; any other job, or a value of
    another type, is left to the encoder.
    """
    extra = job.extra
    step, steps = extra.get("step"), extra.get("steps")
    plain = job.error is None and len(extra) == 2 and type(step) is int and type(steps) is int
    numbers = type(job.persist_count) is int and type(job.db_schema) is int  # not a bool, not an enum
    if plain and numbers and type(job.rebuilds_database) is bool:
        try:
            return (
                f'{{"build": {_text(job.build)}, "db_schema": {_integer(job.db_schema)}, "error": null, '
                f'"extra": {{"step": {_integer(step)}, "steps": {_integer(steps)}}}, '
                f'"from_build": {_text(job.from_build)}, "from_release": {_text(job.from_release)}, '
                f'"job_id": {_text(job.job_id)}, "new_slot": {_text(job.new_slot)}, '
                f'"old_slot": {_text(job.old_slot)}, "persist_count": {_integer(job.persist_count)}, '
                f'"phone_firmware": {_text(job.phone_firmware)}, '
                f'"rebuilds_database": {"true" if job.rebuilds_database else "false"}, '
                f'"release": {_text(job.release)}, "started_at": {_text(job.started_at)}, '
                f'"state": {_text(job.state)}, "target": {_text(job.target)}}}'
            )
        except TypeError:
            pass  # a value that is not a string: the encoder spells it
    document = {name: getattr(job, name) for name in _JOB_FIELDS}  # shallow: encoded at once
    return _ENCODER.encode(document)


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
