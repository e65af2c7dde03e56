"""The live view's snapshot: retained messages parsed with the contract's models, counted."""

from __future__ import annotations

from agent.mqtt.connection import Inbound
from fleet.watch import FleetSnapshot

STATE = (
    b'{"schema":1,"serial":"AWX1","model":"6x","site":"lab","release":"7.1","build":"7.1.4.7",'
    b'"db_schema":20,"state":"idle","maintenance_key":null,"last_result":{"from":"7.0","to":"7.2",'
    b'"final_release":"7.1","outcome":"rejected","steps":[],"at":"2010-01-01T00:00:00+00:00",'
    b'"reason":"NOT_YET_RELEASED","rule":"REL-1","message":"Not yet."},'
    b'"updated_at":"2010-01-01T00:00:00Z","mac":"00:0A:DD:39:52:61","shipped":"2009-02-16","keys":[],'
    b'"features_active":[],"features_inactive":[],"phone_firmware":"2.0.1"}'
)


def retained(topic: str, payload: bytes) -> Inbound:
    return Inbound(topic=topic, payload=payload, retain=True)


def test_a_state_and_its_availability_are_counted() -> None:
    """A state and an online availability make one server, online, with its refusal counted."""
    snapshot = FleetSnapshot()
    snapshot.absorb(retained("allworx/lab/AWX1/state", STATE))
    snapshot.absorb(retained("allworx/lab/AWX1/availability", b"online"))
    facts = snapshot.facts()
    assert (facts.servers, facts.offline) == (1, 0)
    assert facts.releases == {"7.1": 1}
    assert facts.refusals == {"NOT_YET_RELEASED (REL-1)": 1}


def test_messages_off_the_contract_are_ignored() -> None:
    """A state missing its fields, a JSON availability (not the plain word) and non-JSON change nothing."""
    snapshot = FleetSnapshot()
    snapshot.absorb(retained("allworx/lab/AWX2/state", b'{"schema":1,"serial":"AWX2"}'))
    snapshot.absorb(
        retained("allworx/lab/AWX2/availability", b'{"schema":1,"serial":"AWX2","status":"online"}')
    )
    snapshot.absorb(retained("allworx/lab/AWX3/state", b"{nope"))
    assert snapshot.states == {}
    assert snapshot.online == {}


def test_a_cleared_availability_reads_offline() -> None:
    """An empty retained availability (cleared) marks the server offline."""
    snapshot = FleetSnapshot()
    snapshot.absorb(retained("allworx/lab/AWX1/availability", b"online"))
    snapshot.absorb(retained("allworx/lab/AWX1/availability", b""))
    assert snapshot.online == {"AWX1": False}
