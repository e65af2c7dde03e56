"""The on-disk outbox: every event is written here, in order, before it is published.

Layout under ``SERVER_DIR/agent/outbox/``: ``events.log`` (append-only JSON lines, one
:class:`~agent.mqtt.messages.EventRecord` each, exactly as it appears in a published batch, fsync'd) and
``cursor.json`` (:class:`Cursor`: ``{"delivered": N, "last": M}``, written atomically, after every
delivery or, with ``cursor_every``, at most that often).

Invariants:
- sequence numbers start at 1 and increase by exactly one per event, across restarts and
  compactions: the next number is one more than the highest ever assigned (the log's last line,
  or the cursor's ``last`` once the log was compacted), so they never repeat or gap;
- an event is on disk (flushed through the outbox's :class:`~agent.fileio.Disk`, by default an
  fsync) before :meth:`Outbox.append` returns, so a kill loses nothing;
- :meth:`Outbox.pending` returns the undelivered events in sequence order; they are published as
  batches (:func:`encode_batch`: the logged lines, in order, in one message), so replay after an
  outage neither skips nor repeats a number within what it sends; delivery is at-least-once (a
  crash between PUBACK and :meth:`Outbox.delivered` re-sends), and readers drop a sequence number
  they have already seen;
- a torn last line (power cut mid-append) is discarded on open: its event was never acknowledged
  to anyone, and its number is reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from json.encoder import encode_basestring_ascii
from pathlib import Path

from pydantic import BaseModel, ValidationError

from agent.events import AgentEvent, CommandAnswered, Progress, Refused, Resumed, Staged, Transition
from agent.fileio import DURABLE, Disk, append_flushed, disk_error, read_json, write_json
from agent.mqtt.messages import EVENTS_SCHEMA_VERSION, EventRecord
from common.errors import StoreError

COMPACT_BYTES = 256 * 1024  # bytes of fully delivered log after which it is truncated
_ENVELOPE = ("schema", "serial", "site")  # in a line logged as a whole message (schema 1): dropped


def encode(record: EventRecord) -> bytes:
    """An event's JSON: compact, keys sorted (its line in the log and its place in a batch)."""
    return json.dumps(record.wire(), separators=(",", ":"), sort_keys=True).encode()


def encode_stamped(event: AgentEvent, at: datetime, seq: int) -> bytes:
    """:func:`encode` of the record of ``event`` at ``at`` numbered ``seq``, made from the event's
    own JSON: a record's flat form is the event's fields beside ``at`` and ``seq``."""
    if type(event) is Transition:  # most of a step's events
        return _transition_line(event, at.isoformat(), seq)
    omittable = PLAIN_EVENTS.get(type(event))
    if omittable is None:
        flat = event.wire()
    elif omittable:
        fields = event.__dict__.items()
        flat = {name: value for name, value in fields if value is not None or name not in omittable}
    else:
        flat = dict(event.__dict__)
    flat["at"], flat["seq"] = at.isoformat(), seq
    return _ENCODER.encode(flat).encode()


_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
PLAIN_EVENTS: dict[type[BaseModel], frozenset[str]] = {
    kind: kind._omittable for kind in (Transition, Resumed, Refused, Progress, Staged, CommandAnswered)
}
"""Events whose JSON is their fields as they are, but the omittable ones (their value here) that are
None, which are left out: strings, numbers, string enums, null and tuples of strings, none renamed
or serialised their own way. Their pydantic dump is skipped (a step's events are all of these)."""


_text = encode_basestring_ascii  # the encoder's spelling of a string (ASCII, escaped)
_integer = int.__repr__  # the encoder's spelling of an integer


def _transition_line(event: Transition, at: str, seq: int) -> bytes:
    """:func:`encode_stamped` of a transition written out key by key, in sorted order, each value
    spelt as the encoder spells it: its strings, integers and state (a string enum) give the
    encoder's bytes, at about half its cost."""
    return (
        f'{{"at":{_text(at)},"build":{_text(event.build)},"job_id":{_text(event.job_id)},'
        f'"release":{_text(event.release)},"seq":{_integer(seq)},"state":{_text(event.state)},'
        f'"step":{_integer(event.step)},"steps":{_integer(event.steps)},"type":"transition"}}'
    ).encode()


def encode_batch(serial: str, site: str, records: Sequence[bytes]) -> bytes:
    """The ``events`` payload of the encoded ``records`` (:func:`encode`), in order: the JSON of an
    :class:`~agent.mqtt.messages.EventBatch`, keys sorted, made from the logged lines as they are."""
    head = b'{"events":[' + b",".join(records) + b'],"schema":' + str(EVENTS_SCHEMA_VERSION).encode()
    tail = b',"serial":' + json.dumps(serial).encode() + b',"site":' + json.dumps(site).encode() + b"}"
    return head + tail


class Cursor(BaseModel):
    """``cursor.json``: the last sequence number the broker acknowledged, and the last assigned."""

    delivered: int = 0
    last: int | None = None  # absent in a cursor written before any compaction: ``delivered``


class Outbox:
    """An ordered, durable queue of events with per-server sequence numbers.

    Raises:
        StoreError: on construction, when the cursor is unreadable.
    """

    def __init__(
        self,
        folder: Path,
        *,
        cursor_every: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
        disk: Disk = DURABLE,
    ) -> None:
        """Open (or create) the outbox in ``folder``.

        ``cursor_every`` > 0 writes the cursor at most that often (seconds of ``monotonic``), and
        on :meth:`flush`, :meth:`close` and before a compaction: a crash then re-sends at most that
        much of delivered events, which readers drop by sequence number (at-least-once). ``disk``
        flushes the log and writes the cursor.
        """
        self.folder = folder
        self.disk = disk
        self.cursor_every = cursor_every
        self._monotonic = monotonic
        self._written: tuple[int, float] | None = None  # (delivered, when) of the cursor on disk
        self.log_path = folder / "events.log"
        self.cursor_path = folder / "cursor.json"
        folder.mkdir(parents=True, exist_ok=True)
        cursor = _read_cursor(self.cursor_path) if self.cursor_path.exists() else Cursor()
        self._delivered = cursor.delivered
        self._last = cursor.last if cursor.last is not None else cursor.delivered
        self._pending: deque[tuple[int, bytes]] = deque()  # (seq, the event's JSON as logged)
        self._load()

    def _load(self) -> None:
        good = 0
        if self.log_path.exists():
            data = self.log_path.read_bytes()
            for line in data.splitlines(keepends=True):
                try:
                    event = json.loads(line) if line.endswith(b"\n") else None
                except ValueError:
                    event = None
                if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
                    break  # a torn tail: everything after it was never acknowledged
                good += len(line)
                self._last = max(self._last, event["seq"])
                if event["seq"] > self._delivered:
                    self._pending.append((event["seq"], _record_line(event, line)))
            if good < len(data):
                os.truncate(self.log_path, good)
        self._log = self.log_path.open("ab", buffering=0)

    @property
    def last_seq(self) -> int:
        """The highest sequence number assigned so far (0 before the first event)."""
        return self._last

    @property
    def delivered_seq(self) -> int:
        """The highest sequence number acknowledged by the broker."""
        return self._delivered

    def append(self, record: EventRecord) -> int:
        """Give ``record`` the next sequence number, write it durably, and return the number.

        Raises:
            StoreError: the disk refused (reason NO_SPACE when full).
        """
        return self.add(record.event, record.at)

    def add(self, event: AgentEvent, at: datetime) -> int:
        """:meth:`append` the record of ``event`` at ``at`` (no record model built).

        Raises:
            StoreError: the disk refused (reason NO_SPACE when full).
        """
        payload = encode_stamped(event, at, self._last + 1)
        try:
            append_flushed(self._log.fileno(), payload + b"\n", self._log.tell(), self.disk)
        except OSError as exc:
            raise disk_error(exc, f"cannot write {self.log_path}") from exc
        self._last += 1
        self._pending.append((self._last, payload))
        return self._last

    @property
    def pending_count(self) -> int:
        """How many events are not delivered yet."""
        return len(self._pending)

    def pending(self, limit: int | None = None) -> list[EventRecord]:
        """The undelivered events in sequence order (at most ``limit``), read from their JSON.

        Raises:
            pydantic.ValidationError: a logged line is not an event of the contract.
        """
        return [EventRecord.model_validate_json(payload) for _seq, payload in self.pending_payloads(limit)]

    def pending_payloads(self, limit: int | None = None) -> list[tuple[int, bytes]]:
        """The undelivered events as ``(seq, line)``, the line the event's JSON in the log
        (:func:`encode`): what is published is what was made durable, encoded once."""
        count = len(self._pending) if limit is None else min(limit, len(self._pending))
        return [self._pending[i] for i in range(count)]

    def delivered(self, seq: int) -> None:
        """Record that every event up to ``seq`` was acknowledged; compact a delivered log.

        Raises:
            StoreError: the cursor cannot be written.
        """
        while self._pending and self._pending[0][0] <= seq:
            self._pending.popleft()
        self._delivered = max(self._delivered, seq)
        compact = not self._pending and self._log.tell() > COMPACT_BYTES
        written = self._written
        if compact or written is None or self._monotonic() - written[1] >= self.cursor_every:
            self.flush()
        if compact:
            self._log.close()
            os.truncate(self.log_path, 0)  # the cursor (written first) keeps ``last``
            self._log = self.log_path.open("ab", buffering=0)

    @property
    def cursor_behind(self) -> bool:
        """Whether deliveries were recorded that the cursor on disk does not show yet."""
        return self._written is None or self._written[0] != self._delivered

    def flush(self) -> None:
        """Write the cursor now if it is behind.

        Raises:
            StoreError: the cursor cannot be written.
        """
        if not self.cursor_behind:
            return
        cursor = {"delivered": self._delivered, "last": self._last}  # a Cursor's fields, as its dump
        write_json(self.cursor_path, cursor, compact=True, disk=self.disk)
        self._written = (self._delivered, self._monotonic())

    def close(self) -> None:
        """Write the cursor if it is behind (best effort), and close the log file."""
        with contextlib.suppress(StoreError):
            self.flush()
        self._log.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _record_line(event: dict[str, object], line: bytes) -> bytes:
    """The logged ``line`` (parsed: ``event``) as a batch's record: a line an agent logged as a
    whole message (schema 1) loses the envelope's fields."""
    if not any(key in event for key in _ENVELOPE):
        return line.rstrip(b"\n")
    record = {k: v for k, v in event.items() if k not in _ENVELOPE}
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def _read_cursor(path: Path) -> Cursor:
    """Read ``cursor.json``.

    Raises:
        StoreError: it is unreadable, not JSON, or not a cursor.
    """
    try:
        return Cursor.model_validate(read_json(path))
    except ValidationError as exc:
        raise StoreError(f"{path} is not an outbox cursor: {exc.errors()[0]['msg']}") from exc
