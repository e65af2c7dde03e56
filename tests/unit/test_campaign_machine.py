"""The campaign's transition tables: typed inputs, edges that raise, and random event sequences."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.documents import PlanReport
from fleet.campaign import diagram
from fleet.campaign.machine import (
    ACTIVE,
    CAMPAIGN_TRANSITIONS,
    MEMBER_TRANSITIONS,
    OUTCOMES,
    CampaignEvent,
    CampaignStatus,
    CommandReply,
    MemberEvent,
    MemberStatus,
    Outcome,
    ServerState,
    TransitionError,
    campaign_next,
    member_next,
)
from fleet.campaign.model import Campaign, Command
from fleet.campaign.setup import create
from fleet.campaign.spec import AbortRule, CampaignSpec, Window
from fleet.report import build_report
from releases.catalog import default_catalog
from tests.unit.test_campaign import plan_to, reported, state

NOW = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
CATALOG = default_catalog()
KINDS = ("ok", "ok", "ok", "offline", "current", "refused", "partial")


def campaign_of(kinds: list[str], spec: CampaignSpec) -> Campaign:
    """A campaign over servers on 8.1 asked for 8.3: reachable, offline, current or refused."""
    states: dict[str, dict[str, Any]] = {}
    plans: dict[str, PlanReport] = {}
    for i, kind in enumerate(kinds):
        serial = f"S{i:03d}"
        states[serial] = state(serial, "8.3" if kind == "current" else "8.1", at="2024-01-01T00:00:00+00:00")
        plans[serial] = {
            "ok": plan_to("8.1", "8.3"),
            "offline": plan_to("8.1", "8.3"),
            "current": plan_to("8.3", "8.3"),
            "refused": plan_to("8.1", "8.3", refused_at="8.2"),
            "partial": plan_to("8.1", "8.3", refused_at="8.3"),
        }[kind]
    online = {s for s, kind in zip(states, kinds, strict=True) if kind != "offline"}
    return create(spec, reported(states), online, plans, catalog=CATALOG, now=NOW)


def result_state(serial: str, outcome: Outcome, at: str) -> ServerState:
    """A retained state saying the server's last upgrade ended with ``outcome`` at ``at``."""
    doc = state(serial, "8.3" if outcome is Outcome.SUCCEEDED else "8.1", at=at)
    doc["last_result"]["outcome"] = outcome.value
    return ServerState.parse(doc)


def reachable(start: CampaignStatus, end: CampaignStatus) -> bool:
    """Whether the campaign table leads from ``start`` to ``end`` (one decision may take two edges)."""
    seen, frontier = {start}, {start}
    while frontier:
        frontier = {t for (s, _), t in CAMPAIGN_TRANSITIONS.items() if s in frontier} - seen
        seen |= frontier
    return end in seen


def one_edge(before: MemberStatus, after: MemberStatus) -> bool:
    """Whether one line of the member table leads from ``before`` to ``after``."""
    return any(s is before and t is after for (s, _), t in MEMBER_TRANSITIONS.items())


def test_an_unknown_outcome_raises_instead_of_counting_as_failed() -> None:
    """A result whose outcome the campaign does not know is an error, not a failure of the server."""
    doc = state("S1", "8.1", at=NOW.isoformat())
    doc["last_result"]["outcome"] = "exploded"
    with pytest.raises(ValueError, match="unknown outcome 'exploded'"):
        ServerState.parse(doc)


def test_a_reply_with_an_unknown_status_raises() -> None:
    """A reply that is neither accepted nor rejected is refused, not read as accepted."""
    with pytest.raises(ValueError, match="accepted or rejected"):
        CommandReply.parse({"status": "maybe"})


@pytest.mark.parametrize(
    ("status", "event"),
    [(MemberStatus.SUCCEEDED, MemberEvent.START), (MemberStatus.STAGING, MemberEvent.LOST)],
)
def test_a_member_pair_outside_the_table_raises(status: MemberStatus, event: MemberEvent) -> None:
    """A member event its status has no edge for raises TransitionError."""
    with pytest.raises(TransitionError, match="no transition"):
        member_next(status, event)


def test_a_campaign_pair_outside_the_table_raises() -> None:
    """A campaign event its status has no edge for raises TransitionError."""
    with pytest.raises(TransitionError, match="no transition"):
        campaign_next(CampaignStatus.COMPLETED, CampaignEvent.RESUME)


def test_every_outcome_is_a_member_event_with_an_edge_from_running() -> None:
    """Each outcome a server reports leads from running to the status of the same name."""
    for outcome in Outcome:
        assert member_next(MemberStatus.RUNNING, outcome.event) is MemberStatus(outcome.value)


def test_a_repeated_or_late_result_changes_nothing() -> None:
    """A server with an outcome keeps it whatever result arrives after."""
    campaign = campaign_of(["ok"], CampaignSpec(campaign_id="c"))
    campaign.decide(NOW)
    campaign.on_state("S000", result_state("S000", Outcome.SUCCEEDED, "2024-03-01T09:05"), NOW)
    campaign.on_state("S000", result_state("S000", Outcome.FAILED, "2024-03-01T09:09"), NOW)
    assert campaign.members["S000"].status is MemberStatus.SUCCEEDED


def test_a_server_offline_from_the_start_keeps_offline_when_it_reports_an_old_result() -> None:
    """A server never started (offline at creation) is not given the result of an earlier upgrade."""
    campaign = campaign_of(["offline", "ok"], CampaignSpec(campaign_id="c"))
    campaign.decide(NOW)
    later = NOW + timedelta(minutes=5)
    campaign.on_state("S000", result_state("S000", Outcome.SUCCEEDED, "2023-12-01T00:00"), later)
    assert campaign.members["S000"].status is MemberStatus.OFFLINE


def test_the_retained_json_keeps_its_strings() -> None:
    """Statuses, pause reasons and counts are the contract's plain strings in the retained document."""
    spec = CampaignSpec(campaign_id="c", gate_phases=True, canary=1)
    campaign = campaign_of(["ok", "ok", "offline"], spec)
    campaign.decide(NOW)
    campaign.on_state("S000", result_state("S000", Outcome.SUCCEEDED, NOW.isoformat()), NOW)
    campaign.decide(NOW)
    doc = json.loads(json.dumps(campaign.to_dict()))
    assert (doc["status"], doc["paused_reason"]) == ("paused", "phase_gate")
    assert doc["counts"] == {"succeeded": 1, "pending": 1, "offline": 1}
    assert [m["status"] for m in doc["members"]] == ["succeeded", "pending", "offline"]
    assert Campaign.from_dict(doc).to_dict() == campaign.to_dict()


Op = tuple[Any, ...]
SERVER = st.tuples(st.booleans(), st.integers(0, 11))  # (aimed at a server awaiting it, which)
OPS = st.one_of(
    st.tuples(st.just("decide"), st.integers(0, 900)),
    st.tuples(st.just("result"), SERVER, st.sampled_from(list(Outcome))),
    st.tuples(st.just("reply"), SERVER, st.sampled_from(list(Command)[:2]), st.booleans()),
    st.tuples(st.just("lost"), SERVER, st.sampled_from(list(Command)[:2])),
    st.tuples(st.sampled_from(["pause", "resume", "cancel"])),
)
SPECS = st.builds(
    lambda canary, batch, flight, rate, abort, window, gate, networks: CampaignSpec(
        campaign_id="c",
        canary=canary,
        batch=str(batch),
        max_in_flight=flight,
        rate_per_minute=rate,
        abort=AbortRule(0.3, 2, abort) if abort else None,
        window=Window(NOW + timedelta(minutes=window), NOW + timedelta(minutes=window + 30))
        if window
        else None,
        gate_phases=gate,
        networks={"n": ("S000", "S001")} if networks else {},
    ),
    st.integers(0, 3),
    st.integers(1, 6),
    st.none() | st.integers(1, 4),
    st.none() | st.floats(1.0, 30.0),
    st.none() | st.sampled_from(["pause", "cancel"]),
    st.none() | st.integers(1, 20),
    st.booleans(),
    st.booleans(),
)


def pick(campaign: Campaign, server: tuple[bool, int], command: Command) -> str:
    """A server: any, or (aimed) one whose command is in flight, so that events often matter."""
    aimed, index = server
    awaiting = MemberStatus.STAGING if command is Command.STAGE else MemberStatus.RUNNING
    serials = [s for s, m in campaign.members.items() if m.status is awaiting] if aimed else []
    serials = serials or list(campaign.members)
    return serials[index % len(serials)]


def apply(campaign: Campaign, op: Op, clock: list[datetime], ats: itertools.count[int]) -> None:
    """Feed one random event to the campaign, as the controller would."""
    match op:
        case ("decide", seconds):
            clock[0] += timedelta(seconds=seconds)
            campaign.decide(clock[0])
        case ("result", server, outcome):
            serial = pick(campaign, server, Command.UPGRADE)
            at = (NOW + timedelta(days=1, seconds=next(ats))).isoformat()
            campaign.on_state(serial, result_state(serial, outcome, at), clock[0])
        case ("reply", server, command, rejected):
            campaign.on_reply(pick(campaign, server, command), command, CommandReply(rejected), clock[0])
        case ("lost", server, command):
            campaign.on_lost(pick(campaign, server, command), command, clock[0])
        case ("pause",):
            campaign.pause(clock[0])
        case ("resume",):
            campaign.resume(clock[0])
        case ("cancel",):
            campaign.cancel(clock[0])


@settings(max_examples=300, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=2, max_size=12),
    spec=SPECS,
    ops=st.lists(OPS, max_size=60),
)
def test_random_event_sequences_count_every_server_once_and_stay_in_the_tables(
    kinds: list[str], spec: CampaignSpec, ops: list[Op]
) -> None:
    """Whatever arrives in whatever order, every server is counted once and every change is a table edge."""
    campaign = campaign_of(kinds, spec)
    clock, ats = [NOW], itertools.count()
    for op in [*ops, ("cancel",)]:
        before = {s: m.status for s, m in campaign.members.items()}
        status = campaign.status
        apply(campaign, op, clock, ats)
        assert sum(campaign.counts().values()) == len(kinds)
        assert reachable(status, campaign.status), (status, campaign.status, op)
        for serial, member in campaign.members.items():
            was = before[serial]
            assert member.status is was or one_edge(was, member.status), (serial, was, member.status, op)
            if was in OUTCOMES and was is not MemberStatus.OFFLINE:
                assert member.status is was  # an outcome is final
        if spec.max_in_flight is not None:
            assert sum(1 for m in campaign.members.values() if m.status in ACTIVE) <= spec.max_in_flight
    for serial, member in campaign.members.items():  # the servers still upgrading report
        if member.status is MemberStatus.RUNNING:
            campaign.on_state(serial, result_state(serial, Outcome.CANCELLED, "2099-01-01T00:00"), clock[0])
    assert all(m.status in OUTCOMES for m in campaign.members.values())
    assert campaign.finished
    report = build_report(campaign)
    assert report["accounted"]
    assert sum(report["outcomes"].values()) == len(kinds)


def test_docs_campaign_diagram_matches_the_tables() -> None:
    """docs/campaign-machine.md is generated from the tables (run `python -m fleet.campaign.diagram`)."""
    assert diagram.DOC.read_text() == diagram.render()
