"""The wire format is pinned: each message, built with the models, against a copy of its JSON.

The copies (tests/data/wire_format.json) are the published form of the contract: events and an
events message (a batch) compare byte for byte as the outbox encodes them (keys sorted), replies
byte for byte in
their field order, the state and the CLI's documents JSON-equal. A change to a model that changes
the public contract fails here.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.clock import SimClock
from agent.events import CommandAnswered, Progress, Refused, ResultEvent, Resumed, Staged, Transition
from agent.keys import KeyCheck, KeyInfo, KeyKind, Plan
from agent.machine import State
from agent.mqtt.messages import Availability, EventBatch, EventRecord, JobReply, Reply, StateDocument, dump
from agent.mqtt.outbox import encode, encode_batch
from agent.mqtt.report import maintenance_key, state_document
from agent.planner import plan
from agent.results import StepResult, UpgradeResult
from agent.status import status_document
from agent.store import ServerDir, key_reports
from agent.upgrader import Upgrader
from common.reasons import Reason, Refusal
from releases.catalog import default_catalog
from simulator.server import ServerSpec, create_server

AT = datetime(2010, 1, 1, 12, 30, 5, 250000, tzinfo=UTC)
NOW = datetime(2010, 1, 1, tzinfo=UTC)
REFUSAL = Refusal(Reason.NOT_YET_RELEASED, "REL-1", "Release 7.2 is not published until 2010-06-01.")


def compact(document: Any) -> bytes:
    """JSON as the agent publishes it: no spaces, keys in the given order."""
    return json.dumps(document, separators=(",", ":")).encode()


def sorted_compact(document: Any) -> bytes:
    """JSON as the outbox logs and publishes an event: no spaces, keys sorted."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def a_result() -> UpgradeResult:
    """A request with a recovered step, a committed step and a refused one."""
    result = UpgradeResult("7.0", "7.2", "7.1", recovered=StepResult("7.0.1", "7.0.1.5", "committed"))
    result.steps += [
        StepResult("7.1", "7.1.0.1", "committed"),
        StepResult("7.2", "7.2.0.3", "refused", REFUSAL),
    ]
    return result


EVENTS = [
    Transition(job_id="abc123", release="7.1", build="7.1.0.1", step=1, steps=2, state=State.STAGING),
    Resumed(
        job_id="abc123",
        release="7.1",
        build="7.1.0.1",
        step=1,
        steps=2,
        persisted="trial_boot",
        state=State.TRIAL_BOOT,
    ),
    Refused(
        release="7.2",
        build="7.2.0.3",
        step=2,
        steps=2,
        reason="NOT_YET_RELEASED",
        rule="REL-1",
        message=REFUSAL.message,
    ),
    Progress.download("7.1.0.1", 500, 1000),
    Progress.database("7.1.0.1", 1000, 1000),
    ResultEvent.of(a_result().report()),
    Staged(target="8.0", outcome="staged", builds=("7.1.0.1", "7.2.0.3")),
    Staged(target="8.0", outcome="failed", builds=(), reason="IMAGE_DIGEST_MISMATCH", message="bad image"),
    CommandAnswered(command="upgrade", client_token="tok1", status="accepted"),
    CommandAnswered(
        command="upgrade",
        client_token=None,
        status="rejected",
        reason="COMMAND_UNSIGNED",
        rule="CMD-1",
        message="The command is not signed.",
    ),
]
WIRE = json.loads((Path(__file__).parents[1] / "data" / "wire_format.json").read_text())
WIRE_EVENTS: list[dict[str, Any]] = WIRE["events"]


@pytest.mark.parametrize(
    ("event", "wire"), list(zip(EVENTS, WIRE_EVENTS, strict=True)), ids=[e["type"] for e in WIRE_EVENTS]
)
def test_each_kind_of_event_is_published_byte_for_byte(event: Any, wire: dict[str, Any]) -> None:
    """An event stamped and encoded by the outbox is the pinned bytes."""
    record = EventRecord(at=AT, event=event, seq=wire["seq"])
    assert encode(record) == sorted_compact(wire)


@pytest.mark.parametrize("wire", WIRE_EVENTS, ids=[e["type"] for e in WIRE_EVENTS])
def test_a_published_event_reads_back_as_the_same_event(wire: dict[str, Any]) -> None:
    """What a fleet tool parses from an event in a batch encodes to the same bytes again."""
    record = EventRecord.model_validate_json(sorted_compact(wire))
    assert record.event.type == wire["type"]
    assert encode(record) == sorted_compact(wire)


def test_an_events_message_is_the_pinned_batch() -> None:
    """The events payload the outbox builds from its logged lines is the pinned batch, schema 2."""
    pinned = WIRE["events_message"]
    lines = [encode(EventRecord(at=AT, event=event, seq=n)) for n, event in enumerate(EVENTS[:3], 1)]
    assert encode_batch("AWX1", "lab", lines) == sorted_compact(pinned)


def test_an_events_message_reads_back_as_the_same_batch() -> None:
    """A fleet tool reads the pinned batch as its events, in order, and the model dumps the same JSON."""
    pinned = WIRE["events_message"]
    batch = EventBatch.model_validate_json(sorted_compact(pinned))
    assert [record.seq for record in batch.events] == [1, 2, 3]
    assert sorted_compact(batch.wire()) == sorted_compact(pinned)


@pytest.fixture
def server(tmp_path: Path) -> ServerDir:
    """A 6x on 7.0 with a fixed serial, upgraded towards 7.2 (7.1 commits, 7.2 is refused)."""
    spec = ServerSpec(
        model="6x", release="7.0", serial="AWX4C98E9111", shipped=date(2009, 2, 16), users=5, call_log_rows=50
    )
    made = create_server(tmp_path / "s", spec)
    asyncio.run(Upgrader(made, default_catalog(), SimClock(NOW, speed=float("inf"))).upgrade("7.2"))
    return made


STATE, STATUS = WIRE["state"], WIRE["status"]


def test_the_retained_state_is_the_same_document(server: ServerDir) -> None:
    """The retained state of a server after an upgrade is JSON-equal to the pinned one."""
    assert json.loads(dump(state_document(server, "lab", NOW))) == STATE


def test_a_state_read_back_is_the_same_document() -> None:
    """What a fleet tool parses from the retained state dumps to the same document."""
    parsed = StateDocument.model_validate_json(compact(STATE))
    assert parsed.wire() == STATE


def test_the_status_document_is_the_same(server: ServerDir) -> None:
    """``allworx-agent status --json`` prints the pinned document."""
    assert status_document(server, NOW).wire() == STATUS


def test_the_last_result_file_keeps_its_format(server: ServerDir) -> None:
    """last_result.json is the pinned document, indented, keys sorted."""
    text = (server.root / "last_result.json").read_text()
    assert text == json.dumps(STATUS["last_result"], indent=1, sort_keys=True) + "\n"


PLAN_REPLY, UPGRADE_REPLY, REJECTED_REPLY = WIRE["plan_reply"], WIRE["upgrade_reply"], WIRE["rejected_reply"]


def test_replies_are_published_byte_for_byte(server: ServerDir) -> None:
    """A plan reply, an accepted upgrade's and a rejected command's are the pinned bytes."""
    planned = plan(default_catalog(), server.facts(), server.key_checks(NOW.date()), "8.0", NOW).report()
    common: dict[str, Any] = {"serial": "AWX1", "site": "lab", "at": AT}
    accepted: dict[str, Any] = {"client_token": "t1", "status": "accepted", "seq": 7, **common}
    assert dump(Reply(command="plan", result=planned, **accepted)) == compact(PLAN_REPLY)
    assert dump(Reply(command="upgrade", result=JobReply(job="t1", plan=planned), **accepted)) == compact(
        UPGRADE_REPLY
    )
    rejected = Reply(
        command="upgrade",
        client_token=None,
        status="rejected",
        reason="COMMAND_UNSIGNED",
        rule="CMD-1",
        message="The command is not signed.",
        **common,
    )
    assert dump(rejected) == compact(REJECTED_REPLY)


def test_a_report_reply_carries_the_state(server: ServerDir) -> None:
    """A ``report`` reply carries the retained state (JSON-equal to the pinned one) and reads back so."""
    state = state_document(server, "lab", NOW)
    reply = Reply(
        command="report",
        client_token="t2",
        status="accepted",
        seq=9,
        result=state,
        serial="AWX1",
        site="lab",
        at=AT,
    )
    assert json.loads(dump(reply)) == WIRE["report_reply"]
    assert isinstance(Reply.model_validate_json(dump(reply)).result, StateDocument)


@pytest.mark.parametrize(
    "wire", [PLAN_REPLY, UPGRADE_REPLY, REJECTED_REPLY], ids=["plan", "upgrade", "rejected"]
)
def test_a_reply_read_back_is_the_same_bytes(wire: dict[str, Any]) -> None:
    """A fleet tool parses a reply (its result by shape) and it dumps to the same bytes."""
    assert dump(Reply.model_validate_json(compact(wire))) == compact(wire)


def test_availability_is_published_byte_for_byte() -> None:
    """The availability payload is the pinned plain word, not JSON."""
    assert Availability("online").payload() == WIRE["availability"].encode()


CHECKS = [
    KeyCheck(
        KeyInfo(
            "MNT-AWX1-0a1b2c3d",
            KeyKind.MAINTENANCE,
            "AWX1",
            date(2009, 1, 1),
            date(2009, 1, 1),
            date(2010, 1, 1),
            Plan.ANYTIME_1Y,
        ),
        True,
    ),
    KeyCheck(
        KeyInfo(
            "MNT-AWX1-ffff0000",
            KeyKind.MAINTENANCE,
            "AWX1",
            date(2008, 1, 1),
            date(2008, 1, 1),
            date(2008, 4, 1),
            Plan.SHIP_90D,
        ),
        False,
        Reason.KEY_EXPIRED,
        "The key expired.",
        4,
    ),
    KeyCheck(KeyInfo("FEA-AWX1-00000001", KeyKind.FEATURE, "AWX1", date(2009, 1, 1), feature="T1"), True),
    KeyCheck(None, False, Reason.KEY_FORMAT_INVALID, "not a key", 0),
]


def test_key_reports_and_the_maintenance_key_keep_their_bytes() -> None:
    """Parsed keys carry every field (null or not), an unparsed one three; the best maintenance key too."""
    reports = key_reports(CHECKS)
    assert json.dumps([r.wire() for r in reports]) == json.dumps(WIRE["key_reports"])
    best = maintenance_key(reports)
    assert best is not None
    assert dump(best) == compact(WIRE["maintenance_key"])


def test_the_upgrade_result_document_is_the_same() -> None:
    """``allworx-agent upgrade --json`` prints the pinned document, byte for byte."""
    assert json.dumps(a_result().report().wire(), indent=2) == json.dumps(WIRE["upgrade_result"], indent=2)
