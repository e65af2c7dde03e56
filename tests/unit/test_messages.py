"""What the agent sends validates against docs/asyncapi.yaml (the published contract)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agent.clock import SimClock
from agent.mqtt.commands import sign_command
from agent.mqtt.messages import Availability, Reply, dump
from agent.mqtt.report import event_message, state_document
from agent.store import ServerDir
from agent.upgrader import Upgrader
from fleet.operator import default_operator
from releases.catalog import default_catalog
from simulator.server import ServerSpec, create_server

ASYNCAPI = Path(__file__).parents[2] / "docs" / "asyncapi.yaml"
NOW = datetime(2010, 1, 1, tzinfo=UTC)


@cache
def _document() -> dict[str, Any]:
    return dict(yaml.safe_load(ASYNCAPI.read_text()))


def validate(schema_name: str, message: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``message`` fits the named contract schema."""
    document = _document()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(message)


def _upgrade(server: ServerDir, target: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    upgrader = Upgrader(server, default_catalog(), SimClock(NOW, speed=float("inf")), on_event=events.append)
    asyncio.run(upgrader.upgrade(target))
    return events


@pytest.fixture
def server(tmp_path: Path) -> ServerDir:
    """A small virtual 6x on 7.0."""
    return create_server(tmp_path / "s", ServerSpec(model="6x", release="7.0", users=5, call_log_rows=50))


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


def test_every_upgrade_event_validates(server: ServerDir) -> None:
    """Transitions, progress, refusals and results of a real upgrade validate as events."""
    raw = _upgrade(server, "7.2")  # 7.1 commits, 7.2 is refused: every kind of event
    assert {e["type"] for e in raw} >= {"transition", "progress", "refused", "result"}
    for seq, event in enumerate(raw, start=1):
        validate("Event", {**event_message(event, serial="AWX1", site="lab", at=NOW), "seq": seq})


def test_state_validates_before_and_after_an_upgrade(server: ServerDir) -> None:
    """The retained state validates, with and without a last result."""
    validate("State", state_document(server, "lab", NOW).model_dump(mode="json", by_alias=True))
    _upgrade(server, "7.2")
    document = state_document(server, "lab", NOW).model_dump(mode="json", by_alias=True)
    validate("State", document)
    assert (document["last_result"]["outcome"], document["last_result"]["reason"]) == (
        "rejected",
        "NOT_YET_RELEASED",
    )


@pytest.mark.parametrize("status", ["online", "offline"])
def test_availability_validates(status: str) -> None:
    """Both availability payloads validate."""
    import json

    validate("Availability", json.loads(dump(Availability(serial="AWX1", status=status))))  # type: ignore[arg-type]


def test_replies_and_signed_commands_validate() -> None:
    """Accepted and rejected replies, and what the fleet tool signs, validate."""
    import json

    for reply in (
        Reply(
            command="upgrade",
            client_token="t1",
            serial="AWX1",
            site="lab",
            status="accepted",
            at=NOW,
            seq=3,
            result={"job": "t1"},
        ),
        Reply(
            command="upgrade",
            client_token=None,
            serial="AWX1",
            site="lab",
            status="rejected",
            at=NOW,
            reason="COMMAND_UNSIGNED",
            rule="CMD-1",
            message="The command is not signed.",
        ),
    ):
        validate("Reply", json.loads(dump(reply)))
    validate(
        "Command",
        sign_command(
            default_operator().private, "upgrade", {"to": "7.1"}, site="lab", serial="AWX1", now=NOW
        ),
    )


def test_a_message_off_the_contract_is_caught() -> None:
    """The validator is not vacuous: a wrong schema version or a missing sequence number fails."""
    with pytest.raises(jsonschema.ValidationError):
        validate("Availability", {"schema": 2, "serial": "AWX1", "status": "online"})
    with pytest.raises(jsonschema.ValidationError):
        validate(
            "Event",
            {"schema": 1, "serial": "AWX1", "site": "lab", "at": NOW.isoformat(), "type": "transition"},
        )
