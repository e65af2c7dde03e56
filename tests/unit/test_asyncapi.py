"""The campaign's and Home Assistant's topics in docs/asyncapi.yaml, and what is published on them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.mqtt.discovery import Discovery, values
from agent.mqtt.report import state_document
from agent.mqtt.topics import ServerTopics
from common.reasons import Reason
from fleet.campaign.controller import (
    control_topic,
    log_topic,
    member_topic,
    sign_control,
    state_topic,
    status_topic,
)
from fleet.campaign.machine import MemberEvent, Why
from fleet.campaign.model import Campaign
from fleet.campaign.spec import CampaignSpec
from fleet.operator import default_operator
from simulator.server import ServerSpec, create_server
from tests.unit.test_campaign import NOW, fleet
from tests.unit.test_messages import _document, validate


def _campaign() -> Campaign:
    """A running 10-server campaign: one refused, two succeeded, one lost, keys needed, a pause."""
    campaign = fleet(10, CampaignSpec(campaign_id="c1", canary=2, batch="50%", selection=("site=east",)))
    campaign.members["S000"].step(MemberEvent.START)
    campaign.record(
        "S000", MemberEvent.REJECTED, NOW, Why(Reason.NOT_YET_RELEASED.value, "SWM-1", "Not yet.")
    )
    for serial in ("S001", "S002"):
        campaign.members[serial].step(MemberEvent.START)
        campaign.record(serial, MemberEvent.SUCCEEDED, NOW + timedelta(seconds=30))
    campaign.members["S003"].step(MemberEvent.START)
    campaign.record("S003", MemberEvent.LOST, NOW + timedelta(seconds=40))
    campaign.needing_keys = {"net0": ["S004", "S005"]}
    campaign.note(NOW, "operator", action="pause", key_id="k" * 16, wall=NOW.isoformat(), nonce="ab" * 8)
    return campaign


def _channel(address: str) -> tuple[str, dict[str, Any]]:
    """The name and channel of the published document with this address."""
    found = [(name, c) for name, c in _document()["channels"].items() if c["address"] == address]
    assert len(found) == 1, address
    return found[0]


@pytest.mark.parametrize(
    ("leaf", "topic"),
    [
        ("status", status_topic("c1")),
        ("state", state_topic("c1")),
        ("log", log_topic("c1")),
        ("servers/{serial}", member_topic("c1", "{serial}")),
        ("control", control_topic("c1")),
    ],
)
def test_every_campaign_topic_is_a_channel(leaf: str, topic: str) -> None:
    """Each campaign topic the controller uses is a channel of the contract, retained at QoS 1."""
    address = f"allworx/campaigns/{{id}}/{leaf}"
    assert topic.replace("c1", "{id}", 1) == address
    name, _ = _channel(address)
    operations = [
        o for o in _document()["operations"].values() if o["channel"]["$ref"] == f"#/channels/{name}"
    ]
    assert len(operations) == 1
    assert operations[0]["bindings"]["mqtt"] == {"qos": 1, "retain": True}


def test_every_retained_campaign_document_validates() -> None:
    """The summary, state, log and each member's document of a real campaign fit their payloads."""
    campaign = _campaign()
    summary = campaign.summary_dict(NOW + timedelta(minutes=1))
    validate("CampaignStatus", json.loads(json.dumps(summary)))
    validate("CampaignState", json.loads(json.dumps(campaign.core_dict())))
    validate("CampaignLog", json.loads(json.dumps(campaign.log)))
    members = [json.loads(json.dumps(m.as_dict())) for m in campaign.members.values()]
    for member in members:
        validate("CampaignServer", member)
    assert {m["status"] for m in members} >= {"rejected", "succeeded", "offline", "pending"}


def test_a_signed_control_request_validates() -> None:
    """What ``allworx-fleet campaign pause`` publishes on ``control`` fits its payload."""
    request = json.loads(sign_control(default_operator(), "c1", "pause"))
    validate("CampaignControl", request)
    with pytest.raises(jsonschema.ValidationError):
        validate("CampaignControl", {**request, "action": "stop"})


def test_a_campaign_document_off_the_contract_is_caught() -> None:
    """A summary without a field, or with one of the wrong type, and a log entry without its time fail."""
    campaign = _campaign()
    summary = json.loads(json.dumps(campaign.summary_dict(NOW)))
    with pytest.raises(jsonschema.ValidationError):
        validate("CampaignStatus", {k: v for k, v in summary.items() if k != "listed"})
    with pytest.raises(jsonschema.ValidationError):
        validate("CampaignStatus", {**summary, "members": "10"})
    with pytest.raises(jsonschema.ValidationError):
        validate("CampaignLog", [{k: v for k, v in campaign.log[0].items() if k != "t"}])


def test_home_assistant_discovery_documents_validate(tmp_path: Path) -> None:
    """Each discovery config, on a topic of the discovery channel, and the values document validate."""
    server = create_server(tmp_path / "s", ServerSpec(model="6x", release="7.0", users=5, call_log_rows=50))
    discovery = Discovery(ServerTopics("east", "AWX1"))
    _, channel = _channel("{prefix}/{component}/allworx_{serial}/{object}/config")
    for topic, config in discovery.configs("6x"):
        prefix, component, node, object_id, _ = topic.split("/")
        assert prefix == "homeassistant"
        assert component in channel["parameters"]["component"]["enum"]
        assert node == "allworx_AWX1"
        assert object_id in channel["parameters"]["object"]["enum"]
        validate("HaConfig", json.loads(json.dumps(config)))
    _channel("allworx/{site}/{serial}/ha")
    assert discovery.values_topic == "allworx/east/AWX1/ha"
    document = values(state_document(server, "east", NOW), "7.1", now=NOW)
    validate("HaValues", json.loads(json.dumps(document)))
    with pytest.raises(jsonschema.ValidationError):
        validate("HaValues", {**document, "update": {}})


def test_a_typed_dicts_docstring_and_field_comments_are_its_description() -> None:
    """A campaign document's docstring, and the comment after a field (its base's too), describe it."""
    schemas = _document()["components"]["schemas"]
    assert schemas["LogEntry"]["description"].startswith("A campaign-level event")
    assert schemas["LogEntry"]["properties"]["t"]["description"].startswith("seconds of the campaign clock")
    assert schemas["LogEntry"]["properties"]["key_id"]["description"].startswith("operator: who")
    assert "0: every server reporting" in schemas["SummaryDocument"]["properties"]["listed"]["description"]
