"""The on-disk outbox: ordered, durable, numbered without repeats or gaps across restarts."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import CommandAnswered, Refused, Resumed, Transition
from agent.fileio import DurableDisk
from agent.machine import State
from agent.mqtt import outbox as outbox_module
from agent.mqtt.messages import EventRecord
from agent.mqtt.outbox import Outbox
from common.errors import StoreError


def event(n: int = 0, token: str = "t") -> EventRecord:
    """A command event (``n`` names its client token, so events differ)."""
    answered = CommandAnswered(command="report", client_token=f"{token}{n}", status="accepted")
    return EventRecord(at=datetime(2010, 1, 1, tzinfo=UTC), event=answered)


def seqs(box: Outbox) -> list[int | None]:
    return [e.seq for e in box.pending()]


def test_sequence_numbers_continue_across_restarts(tmp_path: Path) -> None:
    """Numbers start at 1 and continue after a reopen, delivered or not."""
    box = Outbox(tmp_path)
    assert [box.append(event(i)) for i in range(3)] == [1, 2, 3]
    box.delivered(2)
    box.close()
    with Outbox(tmp_path) as again:
        assert seqs(again) == [3]
        assert again.append(event(3)) == 4


def test_a_torn_last_line_is_dropped_and_its_number_reused(tmp_path: Path) -> None:
    """A power cut mid-append leaves a partial line: it is discarded, the next event takes its number."""
    box = Outbox(tmp_path)
    box.append(event(1))
    box.close()
    with (tmp_path / "events.log").open("ab") as log:
        log.write(b'{"seq": 2, "n"')
    again = Outbox(tmp_path)
    assert seqs(again) == [1]
    assert again.append(event(2)) == 2
    again.close()
    with Outbox(tmp_path) as last:
        assert seqs(last) == [1, 2]


def test_compaction_keeps_the_numbering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once everything is delivered the log is truncated, and numbering still continues."""
    monkeypatch.setattr(outbox_module, "COMPACT_BYTES", 10)
    with Outbox(tmp_path) as box:
        for i in range(5):
            box.append(event(i))
        box.delivered(5)
        assert (tmp_path / "events.log").stat().st_size == 0
    with Outbox(tmp_path) as again:
        assert again.pending() == []
        assert again.append(event(5)) == 6


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.booleans()), max_size=12))
def test_any_mix_of_appends_acks_and_restarts_keeps_order_without_gaps(
    script: list[tuple[int, bool, bool]],
) -> None:
    """Appends, acknowledgements and restarts in any order never repeat, skip or reorder a number."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        box, assigned, acked = Outbox(folder), list[int](), 0
        for appends, ack, restart in script:
            assigned += [box.append(event()) for _ in range(appends)]
            if ack and box.pending_count:
                acked = box.pending_payloads()[-1][0]
                box.delivered(acked)
            if restart:
                box.close()
                box = Outbox(folder)
            assert seqs(box) == [s for s in assigned if s > acked]
        assert assigned == list(range(1, len(assigned) + 1))
        box.close()


def test_a_lazy_cursor_is_written_at_most_every_interval_and_a_crash_only_resends(tmp_path: Path) -> None:
    """With ``cursor_every``, deliveries inside the interval stay in memory; a crash re-sends them."""
    now = [0.0]
    box = Outbox(tmp_path, cursor_every=2.0, monotonic=lambda: now[0])
    for i in range(4):
        box.append(event(i))
    box.delivered(1)  # the first delivery writes the cursor
    now[0] = 1.0
    box.delivered(3)  # within the interval: not written
    assert box.cursor_behind
    crashed = Outbox(tmp_path)  # what a restart now would read: events 2 and 3 again, then 4
    assert seqs(crashed) == [2, 3, 4]
    crashed.close()
    now[0] = 3.5
    box.delivered(3)  # past the interval: written
    assert not box.cursor_behind
    with Outbox(tmp_path) as again:
        assert seqs(again) == [4]
    box.delivered(4)
    box.close()  # a clean stop writes what is behind
    with Outbox(tmp_path) as last:
        assert last.pending() == []
        assert last.append(event(4)) == 5


def test_the_payload_published_is_the_line_logged_before_and_after_a_restart(tmp_path: Path) -> None:
    """pending_payloads gives each event's JSON as written to the log (encoded once, the same
    bytes a reader of events.log sees), in order, also when read back after a restart."""
    import json

    from agent.mqtt.outbox import encode

    with Outbox(tmp_path) as box:
        for n in range(3):
            box.append(event(n, token="é"))
        box.delivered(1)
        first = box.pending_payloads()
        assert [seq for seq, _ in first] == [2, 3]
        assert [payload for _, payload in first] == [encode(e) for e in box.pending()]
        assert [json.loads(payload) for _, payload in first] == [e.wire() for e in box.pending()]
    logged = (tmp_path / "events.log").read_bytes().splitlines()
    assert [payload for _, payload in first] == logged[1:]
    with Outbox(tmp_path) as again:
        assert again.pending_payloads() == first
        assert again.pending_payloads(limit=1) == first[:1]


def test_the_cursor_file_keeps_its_format(tmp_path: Path) -> None:
    """cursor.json stays the compact ``{"delivered": N, "last": M}`` document an older agent reads."""
    with Outbox(tmp_path) as box:
        for i in range(3):
            box.append(event(i))
        box.delivered(2)
    assert (tmp_path / "cursor.json").read_bytes() == b'{"delivered": 2, "last": 3}\n'


def test_pending_events_replay_as_batches_continuing_the_numbering_without_gaps_or_repeats(
    tmp_path: Path,
) -> None:
    """150 events, 10 delivered, then a restart: the rest go out as batches of 64 whose events, read
    back, continue from 11 to 150 in order, each number once."""
    import json

    from agent.mqtt.outbox import encode_batch

    with Outbox(tmp_path) as box:
        for i in range(150):
            box.append(event(i))
        box.delivered(10)
    with Outbox(tmp_path) as again:
        pending = again.pending_payloads()
    batches = [
        json.loads(encode_batch("AWX1", "lab", [line for _, line in pending[i : i + 64]]))
        for i in range(0, len(pending), 64)
    ]
    assert [len(batch["events"]) for batch in batches] == [64, 64, 12]
    assert [e["seq"] for batch in batches for e in batch["events"]] == list(range(11, 151))
    assert {(batch["schema"], batch["serial"], batch["site"]) for batch in batches} == {(2, "AWX1", "lab")}


def test_a_line_logged_as_a_whole_message_replays_as_an_event_of_a_batch(tmp_path: Path) -> None:
    """An undelivered line an agent logged with the envelope (schema 1) is replayed without it."""
    import json

    line = {"schema": 1, "seq": 1, "serial": "AWX1", "site": "lab", "at": "2010-01-01T00:00:00+00:00"}
    line |= {"type": "command", "command": "report", "client_token": "t", "status": "accepted"}
    (tmp_path / "events.log").write_text(json.dumps(line) + "\n")
    with Outbox(tmp_path) as box:
        ((seq, payload),) = box.pending_payloads()
        assert box.append(event(2)) == 2
    assert seq == 1
    assert json.loads(payload) == {k: v for k, v in line.items() if k not in {"schema", "serial", "site"}}


@pytest.mark.parametrize(
    "plain",
    [
        Transition(job_id="j1", release="7.5", build="7.5.1.12", step=1, steps=4, state=State.STAGING),
        Resumed(
            job_id="j1", release="7.5", build="7.5.1.12", step=2, steps=4, persisted="x", state=State.STAGED
        ),
        Refused(
            release="7.5", build="7.5.1.12", step=1, steps=1, reason="KEY_EXPIRED", rule="SWM-2", message="m"
        ),
    ],
    ids=lambda event: event.type,
)
def test_a_plain_event_is_encoded_as_its_wire_form(plain: Transition | Resumed | Refused) -> None:
    """The fast encoding of the plain events gives exactly the line of their pydantic wire form."""
    at = datetime(2010, 1, 1, tzinfo=UTC)
    assert type(plain) in outbox_module.PLAIN_EVENTS
    wire = outbox_module.encode(EventRecord(at=at, event=plain, seq=7))
    assert outbox_module.encode_stamped(plain, at, 7) == wire


class SizeAtFlush(DurableDisk):
    """The durable disk, recording the size of each file it flushes when it flushes it."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def fsync(self, fd: int) -> None:
        self.sizes.append(os.fstat(fd).st_size)
        super().fsync(fd)


def test_each_append_is_flushed_once_its_whole_line_is_in_the_file(tmp_path: Path) -> None:
    """Every append fsyncs the log once, after its whole line reached the file (nothing held in a
    buffer of the process), and the log holds exactly the encoded lines."""
    disk = SizeAtFlush()
    with Outbox(tmp_path, disk=disk) as box:
        for n in range(3):
            box.append(event(n))
        logged = (tmp_path / "events.log").read_bytes()
        lines = [outbox_module.encode(e) + b"\n" for e in box.pending()]
    assert logged == b"".join(lines)
    assert disk.sizes[:3] == [len(b"".join(lines[: n + 1])) for n in range(3)]


def test_a_line_the_disk_refused_part_way_leaves_nothing_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line cut short by a full disk is taken back out of the log, so the events appended after it
    are all there when the outbox is opened again."""
    box = Outbox(tmp_path)
    box.append(event(0))
    real, writes = os.write, []

    def short_then_full(fd: int, data: bytes) -> int:
        writes.append(len(data))
        if len(writes) == 1:
            return real(fd, bytes(data[:3]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(StoreError):
        box.append(event(1))
    monkeypatch.undo()
    box.append(event(2))
    box.append(event(3))
    box.close()
    with Outbox(tmp_path) as again:
        assert seqs(again) == [1, 2, 3]
