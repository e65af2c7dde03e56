"""What the fleet tools read from the broker (fleet/client.py; the models of agent/mqtt/messages.py):
a server's retained ``state`` and ``availability``, command replies and event batches. Any client of an
open broker can publish them.

The first byte of an input picks the message. Documented: ``check_state`` and
``check_availability`` never raise (a message that does not validate is an ``Invalid``); a reply
or an event batch that does not validate raises pydantic's ValidationError (its readers skip it); a
state that validates is shown by ``allworx-fleet status`` (table and JSON) without raising.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from agent.mqtt.messages import EventBatch, Reply, StateDocument
from fleet.client import Invalid, check_availability, check_state
from fleet.status import FleetStatus, as_json, table
from tests.fuzz import fixtures

WIRE = Path(__file__).resolve().parents[2] / "data" / "wire_format.json"
MESSAGES = ("state", "availability", "reply", "event")


def topic(kind: str) -> str:
    """The topic of the server the seeds' state names."""
    return f"allworx/lab/AWX4C98E9111/{kind}"


FORMAT, PREFIX = "json", 1  # the structured mutator reads inputs after PREFIX bytes as JSON


def seeds() -> list[bytes]:
    """The contract's pinned examples: a state, ``online``, four replies, the batch and every event alone."""
    pinned = json.loads(WIRE.read_text())
    replies = [pinned[name] for name in ("plan_reply", "upgrade_reply", "rejected_reply", "report_reply")]
    out = [bytes([0]) + json.dumps(pinned["state"]).encode(), bytes([1]) + pinned["availability"].encode()]
    out += [bytes([2]) + json.dumps(reply).encode() for reply in replies]
    batches = [pinned["events_message"]]
    batches += [{**pinned["events_message"], "events": [event]} for event in pinned["events"]]
    return out + [bytes([3]) + json.dumps(batch).encode() for batch in batches]


def check(data: bytes) -> None:
    """Give ``data[1:]`` to the reader ``data[0]`` picks; show a state that validates."""
    if not data:
        return
    kind, payload = MESSAGES[data[0] % len(MESSAGES)], data[1:]
    if kind == "state":
        state = check_state(topic("state"), payload)
        if isinstance(state, StateDocument):
            status = FleetStatus([state])
            Console(file=io.StringIO(), width=200).print(table(status))
            json.dumps(as_json(status))
        else:
            assert isinstance(state, Invalid)
    elif kind == "availability":
        assert isinstance(check_availability(topic("availability"), payload), bool | Invalid)
    else:
        model = Reply if kind == "reply" else EventBatch
        try:
            model.model_validate_json(payload)
        except ValidationError:
            return


def tokens() -> list[str]:
    """The messages' JSON keys for libFuzzer's dictionary."""
    keys = [f'"{name}":' for name in fixtures.field_names(StateDocument, Reply, EventBatch)]
    return [*keys, "online", "offline", "null", "true", "[]", "{}", *fixtures.TRICKY]
