"""An event's logged and published line is its model's JSON, however it was made and encoded."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from agent.documents import StepReport
from agent.events import (
    AgentEvent,
    CommandAnswered,
    Progress,
    Refused,
    ResultEvent,
    Resumed,
    Staged,
    Transition,
)
from agent.machine import State
from agent.mqtt.messages import EventRecord
from agent.mqtt.outbox import PLAIN_EVENTS, encode, encode_stamped

TEXT = st.text(max_size=12)  # any characters: quotes, controls, non-ASCII (JSON escapes them)
NUMBER = st.integers(min_value=-(2**70), max_value=2**70)
MAYBE = st.none() | TEXT
POSITION = {"release": TEXT, "build": TEXT, "step": NUMBER, "steps": NUMBER}

EVENTS: dict[type[typing.Any], st.SearchStrategy[AgentEvent]] = {
    Transition: st.builds(Transition, job_id=TEXT, state=st.sampled_from(State), **POSITION),
    Resumed: st.builds(Resumed, job_id=TEXT, persisted=TEXT, state=st.sampled_from(State), **POSITION),
    Refused: st.builds(Refused, reason=TEXT, rule=TEXT, message=TEXT, **POSITION),
    Progress: st.builds(
        Progress,
        phase=st.sampled_from(["download", "database"]),
        build=TEXT,
        bytes=st.none() | NUMBER,
        rows=st.none() | NUMBER,
        total=NUMBER,
        percent=st.floats(min_value=0, max_value=100) | st.integers(min_value=0, max_value=100),
    ),
    Staged: st.builds(
        Staged,
        target=TEXT,
        outcome=st.sampled_from(["staged", "failed"]),
        builds=st.lists(TEXT, max_size=3).map(tuple),
        reason=MAYBE,
        message=MAYBE,
    ),
    CommandAnswered: st.builds(
        CommandAnswered,
        command=TEXT,
        client_token=MAYBE,
        status=st.sampled_from(["accepted", "rejected"]),
        reason=MAYBE,
        rule=MAYBE,
        message=MAYBE,
    ),
    ResultEvent: st.builds(
        ResultEvent,
        from_release=TEXT,
        to=TEXT,
        final_release=TEXT,
        outcome=st.sampled_from(["succeeded", "rejected", "failed", "cancelled"]),
        steps=st.lists(
            st.builds(
                StepReport,
                release=TEXT,
                build=TEXT,
                outcome=st.sampled_from(["committed", "refused", "failed", "cancelled"]),
                reason=MAYBE,
            ),
            max_size=2,
        ).map(tuple),
    ),
}
INSTANTS = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.just(UTC) | st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)


def test_every_kind_of_event_is_checked() -> None:
    """The table below covers every event of the contract, the fast-encoded ones among them."""
    kinds = set(typing.get_args(typing.get_args(AgentEvent)[0]))
    assert set(EVENTS) == kinds
    assert set(PLAIN_EVENTS) <= kinds


@given(st.one_of(*EVENTS.values()), INSTANTS, st.integers(min_value=1, max_value=2**53))
def test_an_event_is_logged_as_its_records_model_json(event: AgentEvent, at: datetime, seq: int) -> None:
    """The outbox's line of any event, field values and omitted fields included, is byte for byte the
    JSON of its record model (``EventRecord.wire()``, keys sorted, compact)."""
    assert encode_stamped(event, at, seq) == encode(EventRecord(at=at, event=event, seq=seq))


@given(EVENTS[Progress], INSTANTS)
def test_progress_leaves_out_exactly_its_unset_counter(event: Progress, at: datetime) -> None:
    """A progress line carries ``bytes`` or ``rows`` only when set (never null), everything else always."""
    line = json.loads(encode_stamped(event, at, 1))
    assert ("bytes" in line) is (event.bytes is not None)
    assert ("rows" in line) is (event.rows is not None)
    assert {"type", "phase", "build", "total", "percent", "at", "seq"} <= set(line)


@given(
    job_id=TEXT,
    release=TEXT,
    build=TEXT,
    step=NUMBER,
    steps=NUMBER,
    state=st.sampled_from(State),
)
def test_a_transition_made_without_validation_is_the_validated_one(
    job_id: str, release: str, build: str, step: int, steps: int, state: State
) -> None:
    """``Transition.of`` makes, of typed values, the event the validating constructor makes: the same
    fields in the same order, the same fields set, the same JSON."""
    values = {"job_id": job_id, "release": release, "build": build, "step": step, "steps": steps}
    made = Transition.of(**values, state=state)
    validated = Transition(**values, state=state)
    assert made == validated
    assert list(made.__dict__.items()) == list(validated.__dict__.items())
    assert made.model_fields_set == validated.model_fields_set
    assert made.model_dump_json() == validated.model_dump_json()
    assert encode_stamped(made, datetime(2010, 1, 1, tzinfo=UTC), 3) == encode_stamped(
        validated, datetime(2010, 1, 1, tzinfo=UTC), 3
    )
