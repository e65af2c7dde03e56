"""Retained documents are untrusted (fleet/client.py), and a campaign touches only its members
(fleet/campaign/spec.py, setup.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.mqtt.messages import StateDocument
from fleet.campaign.setup import create
from fleet.campaign.spec import CampaignSpec
from fleet.client import Invalid, check_availability, check_state
from releases.catalog import default_catalog

TOPIC = "allworx/hq/AWX1/state"
WIRE = Path(__file__).resolve().parents[1] / "data" / "wire_format.json"
GOOD: dict[str, Any] = {**json.loads(WIRE.read_text())["state"], "serial": "AWX1", "site": "hq"}


def test_a_state_of_the_contract_validates() -> None:
    """The agent's own document passes, read back as the same JSON."""
    checked = check_state(TOPIC, json.dumps(GOOD).encode())
    assert not isinstance(checked, Invalid), checked
    assert json.loads(json.dumps(checked.wire(), default=str)) == GOOD


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"site": "bad site!"}, "site"),
        ({"site": "east"}, "site"),
        ({"serial": "AWX2"}, "serial"),
        ({"release": "seven"}, "release"),
        ({"release": 7.6}, "release"),
        ({"build": "../x"}, "build"),
        ({"model": "6x/+"}, "model"),
        ({"state": "Idle; rm"}, "state"),
        ({"db_schema": "17"}, "db_schema"),
        ({"last_result": ["x"]}, "last_result"),
        ({"last_result": {**GOOD["last_result"], "at": 5}}, "last_result.at"),
        ({"maintenance_key": "yes"}, "maintenance_key"),
    ],
)
def test_a_value_out_of_range_or_another_topics_is_invalid(change: dict[str, Any], why: str) -> None:
    """Each bad field makes the document invalid, naming the field."""
    checked = check_state(TOPIC, json.dumps({**GOOD, **change}).encode())
    assert isinstance(checked, Invalid)
    assert checked.reason.startswith(why)


@given(st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
).map(lambda v: json.dumps(v).encode()))  # fmt: skip
def test_no_payload_makes_the_checks_raise(payload: bytes) -> None:
    """Whatever a stranger retains, the checks answer a document or an Invalid, never an exception."""
    assert isinstance(check_state(TOPIC, payload), dict | Invalid)
    assert isinstance(check_availability("allworx/hq/AWX1/availability", payload), bool | Invalid)


def test_availability_is_online_offline_or_invalid() -> None:
    """Only online and offline count; an empty retained message is offline; another serial is invalid."""
    topic = "allworx/hq/AWX1/availability"
    assert check_availability(topic, b"online") is True
    assert check_availability(topic, b"offline") is False
    assert check_availability(topic, b"") is False
    assert isinstance(check_availability(topic, b"up"), Invalid)
    assert isinstance(check_availability(topic, b"online\n"), Invalid)


def test_json_availability_is_invalid() -> None:
    """The JSON form (``{"status": "online"}``) is not the plain contract: reported invalid, not read."""
    topic = "allworx/hq/AWX1/availability"
    assert isinstance(
        check_availability(topic, b'{"schema": 1, "serial": "AWX1", "status": "online"}'), Invalid
    )
    assert isinstance(check_availability(topic, b'"online"'), Invalid)


def test_a_campaign_with_members_leaves_every_other_server_out() -> None:
    """Servers reporting but not among the members are not in the campaign (nor its dry run)."""
    now = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    states = {
        s: StateDocument.model_validate({**GOOD, "serial": s, "release": "8.2", "build": "8.2.0.1"})
        for s in ("A1", "A2", "B1")
    }
    spec = CampaignSpec(campaign_id="c", target="8.3", members=("A1", "A2"))
    campaign = create(spec, states, set(states), {}, catalog=default_catalog(), now=now)
    assert sorted(campaign.members) == ["A1", "A2"]
    assert CampaignSpec.from_dict(spec.to_dict()) == spec
