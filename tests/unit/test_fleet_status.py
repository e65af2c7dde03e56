"""``allworx-fleet status``: the cells of the table and the JSON beside each state."""

from __future__ import annotations

from datetime import UTC, datetime

from fleet.status import FleetStatus, Seen, as_json, job_cell, key_cell
from tests.unit.test_select import state

SEEN = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def test_an_offline_server_is_not_shown_idle() -> None:
    """An idle server whose availability is offline (or unknown) shows offline in red, not a blank job."""
    doc = state(serial="AWX1")
    gone = FleetStatus([doc], {"AWX1": Seen(False, SEEN)})
    unknown = FleetStatus([doc])
    up = FleetStatus([doc], {"AWX1": Seen(True, SEEN)})
    assert job_cell(gone, doc).plain == "offline"
    assert job_cell(gone, doc).style == "red"
    assert job_cell(unknown, doc).plain == "offline"
    assert job_cell(up, doc).plain == ""


def test_the_key_cell_says_valid_expired_or_none() -> None:
    """Valid until its date, expired (red) with its date, or none."""
    assert key_cell(state(key="valid")).plain == "valid until 2030-01-01"
    expired = key_cell(state(key="expired"))
    assert expired.plain == "expired 2009-05-01"
    assert expired.style == "red"
    assert key_cell(state(key="none")).plain == "none"


def test_json_keeps_the_state_and_adds_availability() -> None:
    """``--json`` keeps the servers/invalid shape and adds availability, since and key beside the state."""
    doc = state(serial="AWX1", key="expired")
    found = as_json(FleetStatus([doc], {"AWX1": Seen(True, SEEN)}))
    assert set(found) == {"servers", "invalid"}
    (server,) = found["servers"]
    assert server["release"] == doc.release
    assert server["availability"] == "online"
    assert server["availability_since"] == SEEN.isoformat()
    assert server["key"] == "expired"
