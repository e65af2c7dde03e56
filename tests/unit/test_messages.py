"""What the agent sends validates against docs/asyncapi.yaml, which is generated from the models."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agent.clock import SimClock
from agent.events import AgentEvent, Progress
from agent.mqtt import schema
from agent.mqtt.commands import sign_command
from agent.mqtt.messages import (
    Availability,
    Cancelling,
    EventBatch,
    EventRecord,
    JobReply,
    Reply,
    ReplyResult,
    dump,
)
from agent.mqtt.report import state_document
from agent.planner import plan
from agent.store import ServerDir, key_report
from agent.upgrader import Upgrader
from fleet import schema as contract
from fleet.operator import default_operator
from releases.catalog import default_catalog
from simulator.server import ServerSpec, create_server

ASYNCAPI = Path(__file__).parents[2] / "docs" / "asyncapi.yaml"
NOW = datetime(2010, 1, 1, tzinfo=UTC)


@cache
def _document() -> dict[str, Any]:
    return dict(yaml.safe_load(ASYNCAPI.read_text()))


def validate(message_name: str, message: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``message`` fits the payload of the named message
    (a message of docs/asyncapi.yaml: State, Availability, Events, Command, Reply, HaConfig, HaValues,
    CampaignStatus, CampaignState, CampaignServer, CampaignLog, CampaignControl)."""
    document = _document()
    payload = document["components"]["messages"][message_name]["payload"]
    schema_ = {**payload, "components": document["components"]}
    jsonschema.Draft202012Validator(schema_, format_checker=jsonschema.FormatChecker()).validate(message)


def _upgrade(server: ServerDir, target: str) -> list[AgentEvent]:
    events: list[AgentEvent] = []
    upgrader = Upgrader(server, default_catalog(), SimClock(NOW, speed=float("inf")), on_event=events.append)
    asyncio.run(upgrader.upgrade(target))
    return events


@pytest.fixture
def server(tmp_path: Path) -> ServerDir:
    """A small virtual 6x on 7.0."""
    return create_server(tmp_path / "s", ServerSpec(model="6x", release="7.0", users=5, call_log_rows=50))


def test_the_published_contract_is_generated_from_the_models() -> None:
    """docs/asyncapi.yaml is exactly what ``python -m fleet.schema`` prints from the models."""
    assert ASYNCAPI.read_text() == contract.render(), "run: python -m fleet.schema > docs/asyncapi.yaml"


def test_the_contract_is_an_asyncapi_3_document() -> None:
    """docs/asyncapi.yaml declares AsyncAPI 3 and every channel of the topic contract."""
    document = _document()
    assert document["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in document["channels"].values()}
    for leaf in (
        "state",
        "availability",
        "events",
        "cmd/{name}",
        "cmd/{name}/accepted",
        "cmd/{name}/rejected",
    ):
        assert f"allworx/{{site}}/{{serial}}/{leaf}" in addresses


def test_every_reference_in_the_contract_resolves() -> None:
    """Each ``$ref`` of the generated document names a schema, message or channel it defines."""
    document = contract.document()
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def test_the_models_descriptions_are_the_contracts() -> None:
    """A model's and a field's docstrings are their descriptions in the contract (written once)."""
    schemas = schema.schemas()
    assert schemas["Availability"]["description"].startswith("The retained `availability`")
    assert "rule DB-1" in schemas["PlanStep"]["properties"]["rebuilds_database"]["description"]


def test_every_upgrade_event_validates(server: ServerDir) -> None:
    """Transitions, progress, refusals and results of a real upgrade validate in an events batch."""
    raw = _upgrade(server, "7.2")  # 7.1 commits, 7.2 is refused: every kind of event
    assert {e.type for e in raw} >= {"transition", "progress", "refused", "result"}
    records = tuple(EventRecord(at=NOW, event=event, seq=seq) for seq, event in enumerate(raw, start=1))
    validate("Events", EventBatch(serial="AWX1", site="lab", events=records).wire())


def test_state_validates_before_and_after_an_upgrade(server: ServerDir) -> None:
    """The retained state validates, with and without a last result."""
    validate("State", state_document(server, "lab", NOW).wire())
    _upgrade(server, "7.2")
    document = state_document(server, "lab", NOW).wire()
    validate("State", document)
    assert document["last_result"]["outcome"] == "rejected"
    assert document["last_result"]["reason"] == "NOT_YET_RELEASED"


@pytest.mark.parametrize("status", ["online", "offline"])
def test_availability_validates(status: str) -> None:
    """Both availability payloads validate."""
    validate("Availability", Availability.parse(status.encode()).payload().decode())


def _results(server: ServerDir) -> list[ReplyResult]:
    planned = plan(default_catalog(), server.facts(), server.key_checks(NOW.date()), "8.0", NOW).report()
    key = key_report(server.install_key("not a key", NOW.date()))
    state = state_document(server, "lab", NOW)
    return [
        JobReply(job="t1", plan=planned),
        JobReply(plan=planned),
        planned,
        key,
        state,
        Cancelling(cancelling=True),
    ]


def test_replies_and_signed_commands_validate(server: ServerDir) -> None:
    """Replies carrying each kind of result, a rejected one, and what the fleet tool signs, validate."""
    for result in _results(server):
        reply = Reply(
            command="upgrade",
            client_token="t1",
            serial="AWX1",
            site="lab",
            status="accepted",
            at=NOW,
            seq=3,
            result=result,
        )
        validate("Reply", json.loads(dump(reply)))
        assert type(Reply.model_validate_json(dump(reply)).result) is type(result)
    rejected = Reply(
        command="upgrade",
        client_token=None,
        serial="AWX1",
        site="lab",
        status="rejected",
        at=NOW,
        reason="COMMAND_UNSIGNED",
        rule="CMD-1",
        message="The command is not signed.",
    )
    validate("Reply", json.loads(dump(rejected)))
    signed = sign_command(
        default_operator().private, "upgrade", {"to": "7.1"}, site="lab", serial="AWX1", now=NOW
    )
    validate("Command", signed)


def test_a_message_off_the_contract_is_caught() -> None:
    """The validator is not vacuous: a wrong schema version, a missing sequence number or field fails."""
    with pytest.raises(jsonschema.ValidationError):
        validate("Availability", {"schema": 1, "serial": "AWX1", "status": "online"})
    progress = EventRecord(at=NOW, event=Progress.download("7.1", 1, 2), seq=1).wire()
    batch = {"schema": 2, "serial": "AWX1", "site": "lab", "events": [progress]}
    validate("Events", batch)
    with pytest.raises(jsonschema.ValidationError):
        validate("Events", {**batch, "events": [{"at": NOW.isoformat(), "type": "transition"}]})
    with pytest.raises(jsonschema.ValidationError):
        validate("Events", {**batch, "events": [{**progress, "type": "refused"}]})
    with pytest.raises(jsonschema.ValidationError):
        validate("Events", {**batch, "schema": 1})
    with pytest.raises(jsonschema.ValidationError):
        validate("Events", {**batch, "events": []})
    with pytest.raises(jsonschema.ValidationError):
        validate(
            "Command",
            {
                **sign_command(default_operator().private, "cancel", {}, site="lab", serial="AWX1", now=NOW),
                "extra": 1,
            },
        )
