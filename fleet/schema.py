"""docs/asyncapi.yaml, generated: ``python -m fleet.schema > docs/asyncapi.yaml``.

The AsyncAPI 3.0 document of the whole MQTT contract: the agent's channels, messages and schemas
(:mod:`agent.mqtt.schema`: a server's topics and Home Assistant's) and the campaign's topics under
``allworx/campaigns/{id}/``, whose payloads' JSON Schemas come from the ``TypedDict`` s of
:mod:`fleet.campaign.documents` through pydantic's ``TypeAdapter``. Generated here because only the
fleet sees both: the agent does not import the fleet.

Invariant: the document is a pure function of the models, so the published file and the code
never differ (a test compares them).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from agent.mqtt import schema as agent_schema
from common.jsonedge import JsonObject  # the generated AsyncAPI and JSON Schema documents
from fleet.campaign.controller import CAMPAIGNS
from fleet.campaign.documents import ControlDocument, CoreDocument, LogEntry, MemberDocument, SummaryDocument

CAMPAIGN: dict[str, Any] = {  # the message name -> its payload's type
    "CampaignStatus": SummaryDocument,
    "CampaignState": CoreDocument,
    "CampaignServer": MemberDocument,
    "CampaignLog": list[LogEntry],
    "CampaignControl": ControlDocument,
}

DESCRIPTION = """\
What an Allworx upgrade agent publishes and obeys, under `allworx/{site}/{serial}/` (and, with
`--ha-discovery`, Home Assistant's discovery topics), and what a campaign's controller and its
operators publish under `allworx/campaigns/{id}/`.
Every JSON message of the agent carries `"schema": 1`, but an `events` message, a batch of events,
which carries `"schema": 2`. Reason codes are those of `common/reasons.py`; rule IDs
those of docs/rules.md (and CMD-1..CMD-5 in docs/mqtt.md).
Generated from the message models (agent/mqtt/messages.py, agent/events.py, agent/documents.py,
agent/mqtt/discovery.py, fleet/campaign/documents.py) by `python -m fleet.schema >
docs/asyncapi.yaml`: edit the models, not this file.
"""

SERVERS = {
    "mosquitto": {
        "host": "127.0.0.1:1883",
        "protocol": "mqtt",
        "protocolVersion": "5",
        "description": "The real broker. MQTT 5 first; agents fall back to 3.1.1 for brokers without it.",
    },
    "embedded": {
        "host": "127.0.0.1:1883",
        "protocol": "mqtt",
        "protocolVersion": "3.1.1",
        "description": "The simulator's embedded amqtt broker (MQTT 3.1.1 only).",
    },
}
ID = {"id": {"description": "The campaign's id (one topic level; `allworx-fleet campaign start --id`)."}}


def channels() -> JsonObject:
    """A channel per campaign topic."""

    def channel(leaf: str, message: str, **parameters: JsonObject) -> JsonObject:
        return {
            "address": f"{CAMPAIGNS}/{{id}}/{leaf}",
            "parameters": {**ID, **parameters},
            "messages": {message.lower(): {"$ref": f"#/components/messages/{message}"}},
        }

    serial = {"description": "The member's serial number."}
    return {
        "campaignStatus": channel("status", "CampaignStatus"),
        "campaignState": channel("state", "CampaignState"),
        "campaignServer": channel("servers/{serial}", "CampaignServer", serial=serial),
        "campaignLog": channel("log", "CampaignLog"),
        "campaignControl": channel("control", "CampaignControl"),
    }


def operations() -> JsonObject:
    """Who sends each campaign topic, with QoS and retain (all retained, QoS 1)."""

    def op(action: str, channel: str, summary: str) -> JsonObject:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "bindings": {"mqtt": {"qos": 1, "retain": True}},
        }

    return {
        "publishCampaignStatus": op(
            "send",
            "campaignStatus",
            "The controller: the bounded summary, under 2 KB at any fleet size, at most every "
            "publish interval and at the end (after the other campaign topics).",
        ),
        "publishCampaignState": op(
            "send",
            "campaignState",
            "The controller: what it resumes from (the campaign without its members and log), "
            "when it changed.",
        ),
        "publishCampaignServer": op(
            "send", "campaignServer", "The controller: one member's outcome, when it changed."
        ),
        "publishCampaignLog": op(
            "send",
            "campaignLog",
            "The controller: the campaign's events, operator requests among them, in order.",
        ),
        "receiveCampaignControl": op(
            "receive",
            "campaignControl",
            "From an operator (`allworx-fleet campaign pause|resume|abort`): a signed request the controller "
            "applies once per nonce; an unsigned, untrusted or other campaign's request is ignored.",
        ),
    }


def messages() -> JsonObject:
    """Each campaign message, named, with its payload's schema."""
    payloads, _ = agent_schema.typed_payloads(CAMPAIGN)
    return {name: {"name": name.lower(), "payload": payload} for name, payload in payloads.items()}


def document() -> JsonObject:
    """The AsyncAPI document (the JSON edge: plain data for the YAML writer).

    Raises:
        ValueError: two different schemas have one name.
    """
    schemas = agent_schema.merge(agent_schema.schemas(), agent_schema.typed_payloads(CAMPAIGN)[1])
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Allworx upgrade agent — fleet MQTT contract",
            "version": "2.1.0",
            "description": agent_schema.markdown(DESCRIPTION),
        },
        "defaultContentType": "application/json",
        "servers": SERVERS,
        "channels": {**agent_schema.channels(), **channels()},
        "operations": {**agent_schema.operations(), **operations()},
        "components": {"messages": {**agent_schema.messages(), **messages()}, "schemas": schemas},
    }


def render() -> str:
    """The document as YAML text (what docs/asyncapi.yaml holds)."""
    import yaml

    header = "# Generated by `python -m fleet.schema` from the message models: do not edit.\n"
    plain = json.loads(json.dumps(document()))  # no shared objects, so no YAML anchors
    return header + str(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=110))


def main() -> None:
    """Print the document on stdout."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
