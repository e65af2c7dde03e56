"""docs/asyncapi.yaml, generated: ``python -m agent.mqtt.schema > docs/asyncapi.yaml``.

The AsyncAPI 3.0 document of the fleet contract: a channel per topic (:mod:`agent.mqtt.topics`),
the operations on them, and the JSON Schemas of the messages, each from its model's
``model_json_schema`` (:mod:`agent.mqtt.messages`, with :mod:`agent.events` and
:mod:`agent.documents`): the models' and fields' docstrings are the descriptions.

Invariant: the document is a pure function of the models, so the published file and the code
never differ (a test compares them).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import sys
import textwrap
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from agent.documents import Wire
from agent.mqtt.messages import (
    Availability,
    Command,
    EventBatch,
    InstallKeyArgs,
    NoArgs,
    PlanArgs,
    Reply,
    StageArgs,
    StateDocument,
    UpgradeArgs,
)
from agent.mqtt.topics import COMMANDS, ROOT
from common.jsonedge import JsonObject  # the generated AsyncAPI and JSON Schema documents

REF = "#/components/schemas/{model}"
MESSAGES: dict[str, type[BaseModel]] = {  # the message name -> its payload's model
    "State": StateDocument,
    "Availability": Availability,
    "Events": EventBatch,
    "Command": Command,
    "Reply": Reply,
}
ARGS: tuple[type[BaseModel], ...] = (UpgradeArgs, PlanArgs, StageArgs, NoArgs, InstallKeyArgs)
_NOISE = frozenset({"title", "default", "discriminator"})  # pydantic's, not the contract's

DESCRIPTION = """\
What an Allworx upgrade agent publishes and obeys, under `allworx/{site}/{serial}/`.
Every JSON message carries `"schema": 1`, but an `events` message, a batch of events, which carries
`"schema": 2`. Reason codes are those of `common/reasons.py`; rule IDs
those of docs/rules.md (and CMD-1..CMD-5 in docs/mqtt.md).
Generated from the message models (agent/mqtt/messages.py, agent/events.py, agent/documents.py)
by `python -m agent.mqtt.schema > docs/asyncapi.yaml`: edit the models, not this file.
"""


def schemas() -> JsonObject:
    """The JSON Schema of every message payload and of what they contain, by model name."""
    models = [(model, "validation") for model in (*MESSAGES.values(), *ARGS)]
    _, top = models_json_schema(models, ref_template=REF)  # type: ignore[arg-type]  # reason: the literal mode is widened to str in the list
    classes = {model.__name__: model for model in _models(Wire)}
    found: JsonObject = {}
    for name, schema in top["$defs"].items():
        if name in classes:  # a model (an enum has no fields)
            _describe_fields(schema, classes[name])
        found[name] = _tidy(schema)
    args = found[Command.__name__]["properties"]["args"]
    args["anyOf"] = [{"$ref": REF.format(model=model.__name__)} for model in ARGS]
    return dict(sorted(found.items()))


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """``root`` and every model derived from it."""
    found = [root]
    for sub in root.__subclasses__():
        found += _models(sub)
    return found


def _describe_fields(schema: JsonObject, model: type[BaseModel]) -> None:
    """Give each property without a description its field's docstring (the string under the field).

    Read here rather than by pydantic (``use_attribute_docstrings``), which would parse each model's
    source whenever the agent starts.
    """
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__module__.startswith("agent."):
            docs.update(_field_docstrings(cls))
    properties = schema.get("properties", {})
    for name, field in model.model_fields.items():
        key = field.serialization_alias or field.alias or name
        if key in properties and "description" not in properties[key] and name in docs:
            properties[key] = {"description": docs[name], **properties[key]}


def _field_docstrings(cls: type) -> dict[str, str]:
    """The docstrings of a class's annotated attributes (a string statement right under each)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    found: dict[str, str] = {}
    statements = body.body if isinstance(body, ast.ClassDef) else []
    for field, doc in itertools.pairwise(statements):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(doc, ast.Expr)
            and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)
        ):
            found[field.target.id] = inspect.cleandoc(doc.value.value)
    return found


def _tidy(node: Any) -> Any:
    """Drop pydantic's titles, defaults and OpenAPI discriminators (the wire always carries a field)."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: JsonObject = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _tidy(schema) for name, schema in value.items()}
        elif key == "description":
            out[key] = _markdown(value)
        elif key not in _NOISE:
            out[key] = _tidy(value)
    return out


def _markdown(docstring: str) -> str:
    """A docstring as a CommonMark description: paragraphs on one line, code in single backticks."""
    paragraphs = (" ".join(block.split()) for block in docstring.split("\n\n"))
    return "\n\n".join(paragraphs).replace("``", "`")


def _address(leaf: str) -> str:
    return f"{ROOT}/{{site}}/{{serial}}/{leaf}"


SERVER_PARAMETERS = {
    "site": {"description": "The server's site (one topic level: letters, digits, '.', '_', '-')."},
    "serial": {"description": "The server's serial number (one topic level)."},
}


def channels() -> JsonObject:
    """A channel per topic of one server, and the MQTT 5 response topic."""

    def channel(leaf: str, message: str, **more: Any) -> JsonObject:
        ref = {"$ref": f"#/components/messages/{message}"}
        return {"address": _address(leaf), "parameters": SERVER_PARAMETERS, **more,
                "messages": {message.lower(): ref}}  # fmt: skip

    command_parameters = {
        **SERVER_PARAMETERS,
        "name": {
            "enum": list(COMMANDS),
            "description": "The command (any other name is rejected COMMAND_UNKNOWN).",
        },
    }
    reply_parameters = {**SERVER_PARAMETERS, "name": {"description": "The command answered."}}
    return {
        "state": channel("state", "State"),
        "availability": channel("availability", "Availability"),
        "events": channel("events", "Events"),
        "command": {**channel("cmd/{name}", "Command"), "parameters": command_parameters},
        "accepted": {**channel("cmd/{name}/accepted", "Reply"), "parameters": reply_parameters},
        "rejected": {**channel("cmd/{name}/rejected", "Reply"), "parameters": reply_parameters},
        "response": {
            "address": None,
            "description": (
                "The MQTT 5 response topic named by the request; the reply echoes its correlation data."
            ),
            "messages": {"reply": {"$ref": "#/components/messages/Reply"}},
        },
    }


def operations() -> JsonObject:
    """What the agent sends and receives on each channel, with QoS and retain."""

    def send(channel: str, summary: str, retain: bool | None = None) -> JsonObject:
        found: JsonObject = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
        }
        if retain is not None:
            found["bindings"] = {"mqtt": {"qos": 1, "retain": retain}}
        return found

    v311 = "The answer for MQTT 3.1.1 requesters (no response topic), matched by client_token."
    return {
        "publishState": send(
            "state",
            "Retained, QoS 1. One coalesced document: republished on every (re)connection and on "
            "change, at most every 250 ms (the latest state), at once on a result.",
            retain=True,
        ),
        "publishAvailability": send(
            "availability",
            "Retained, QoS 1. `online` on connection; `offline` on a clean stop and as the last will.",
            retain=True,
        ),
        "publishEvents": send(
            "events",
            "QoS 1, not retained. A batch of events, in order, through an on-disk outbox; `seq` "
            "increases by one per event, across batches, and never repeats. A batch goes at once "
            "after a result, a refusal, a stage's end, a command's answer or a rollback, else within "
            "250 ms of its first event or at 64 events.",
            retain=False,
        ),
        "receiveCommand": {
            "action": "receive",
            "channel": {"$ref": "#/channels/command"},
            "summary": "Signed operator commands (Ed25519), QoS 1. Retained commands are ignored.",
            "reply": {
                "channel": {"$ref": "#/channels/response"},
                "address": {"location": "$message.header#/responseTopic"},
            },
        },
        "answerAccepted": send("accepted", v311),
        "answerRejected": send("rejected", v311),
    }


def messages() -> JsonObject:
    """Each message, named, with its payload's schema (commands and replies carry correlation data)."""
    found: JsonObject = {}
    for name, model in MESSAGES.items():
        message: JsonObject = {"name": name.lower()}
        if model in (Command, Reply):
            message["correlationId"] = {"location": "$message.header#/correlationData"}
        if model is Availability:  # the bare word, not JSON
            message["contentType"] = "text/plain"
        message["payload"] = {"$ref": REF.format(model=model.__name__)}
        found[name] = message
    return found


def document() -> JsonObject:
    """The AsyncAPI document (the JSON edge: plain data for the YAML writer)."""
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Allworx upgrade agent — fleet MQTT contract",
            "version": "2.0.0",
            "description": _markdown(DESCRIPTION),
        },
        "defaultContentType": "application/json",
        "servers": {
            "mosquitto": {
                "host": "127.0.0.1:1883",
                "protocol": "mqtt",
                "protocolVersion": "5",
                "description": (
                    "The real broker. MQTT 5 first; agents fall back to 3.1.1 for brokers without it."
                ),
            },
            "embedded": {
                "host": "127.0.0.1:1883",
                "protocol": "mqtt",
                "protocolVersion": "3.1.1",
                "description": "The simulator's embedded amqtt broker (MQTT 3.1.1 only).",
            },
        },
        "channels": channels(),
        "operations": operations(),
        "components": {"messages": messages(), "schemas": schemas()},
    }


def render() -> str:
    """The document as YAML text (what docs/asyncapi.yaml holds)."""
    import yaml

    header = "# Generated by `python -m agent.mqtt.schema` from the message models: do not edit.\n"
    plain = json.loads(json.dumps(document()))  # no shared objects, so no YAML anchors
    return header + str(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=110))


def main() -> None:
    """Print the document on stdout."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
