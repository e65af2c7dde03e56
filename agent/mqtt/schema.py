"""The agent's part of docs/asyncapi.yaml (the whole document: ``python -m fleet.schema``).

The AsyncAPI 3.0 channels, operations, messages and JSON Schemas of what the agent publishes and
obeys: a channel per topic (:mod:`agent.mqtt.topics`), the Home Assistant discovery topics
(:mod:`agent.mqtt.discovery`), and the JSON Schemas of the messages, each from its model's
``model_json_schema`` (:mod:`agent.mqtt.messages`, with :mod:`agent.events` and
:mod:`agent.documents`) or, for a ``TypedDict``, from pydantic's ``TypeAdapter``
(:func:`typed_payloads`): the models' and fields' docstrings (a ``TypedDict`` field's comment) are
the descriptions.
:mod:`fleet.schema` adds the campaign topics and writes the document (the agent cannot import
the fleet).

Invariant: every part is a pure function of the models, so the published file and the code
never differ (a test compares them).
"""

from __future__ import annotations

import ast
import inspect
import io
import itertools
import textwrap
import tokenize
from collections.abc import Mapping
from typing import Any, get_args, get_type_hints

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema
from typing_extensions import is_typeddict

from agent.documents import Wire
from agent.mqtt.discovery import Discovery, HaEntity, HaValues
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
from agent.mqtt.topics import COMMANDS, ROOT, ServerTopics
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
HOME_ASSISTANT: dict[str, Any] = {  # the message name -> its payload's TypedDict (--ha-discovery)
    "HaConfig": HaEntity,
    "HaValues": HaValues,
}
_NOISE = frozenset({"title", "default", "discriminator"})  # pydantic's, not the contract's


def schemas() -> JsonObject:
    """The JSON Schema of every message payload and of what they contain, by model name.

    Raises:
        ValueError: two different schemas have one name.
    """
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
    return merge(found, typed_payloads(HOME_ASSISTANT)[1])


def typed_payloads(payloads: Mapping[str, Any]) -> tuple[JsonObject, JsonObject]:
    """The JSON Schemas of payloads typed as ``TypedDict`` s, or lists or unions of them.

    Args:
        payloads: the message name -> its payload's type.

    Returns:
        Each message's payload schema (a ``$ref``, or an array or ``anyOf`` of them), by message
        name; and the schemas they refer to, by name, a field's comment its description.
    """
    inputs = [(name, "validation", TypeAdapter(kind)) for name, kind in payloads.items()]
    top, found = TypeAdapter.json_schemas(inputs, ref_template=REF)  # type: ignore[arg-type]  # reason: the literal mode is widened to str in the list
    defs: JsonObject = found.get("$defs", {})
    classes: dict[str, type] = {}
    for kind in payloads.values():
        _typed_dicts(kind, classes)
    for name, cls in classes.items():
        properties = defs.get(name, {}).get("properties", {})
        for field, comment in _field_comments(cls).items():
            if field in properties and "description" not in properties[field]:
                properties[field] = {"description": comment, **properties[field]}
    tops = {name: _tidy(top[(name, "validation")]) for name in payloads}
    return tops, {name: _tidy(schema) for name, schema in defs.items()}


def _typed_dicts(kind: Any, found: dict[str, type]) -> None:
    """Add to ``found`` every ``TypedDict`` that ``kind`` is or contains, by name."""
    if is_typeddict(kind):
        if kind.__name__ in found:
            return
        found[kind.__name__] = kind
        for hint in get_type_hints(kind).values():
            _typed_dicts(hint, found)
    for arg in get_args(kind):
        _typed_dicts(arg, found)


def _field_comments(cls: type) -> dict[str, str]:
    """The comments after a ``TypedDict``'s fields (``name: type  # comment``), its bases' too."""
    found: dict[str, str] = {}
    for base in getattr(cls, "__orig_bases__", ()):
        if is_typeddict(base):
            found.update(_field_comments(base))
    source = textwrap.dedent(inspect.getsource(cls))
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}
    body = ast.parse(source).body[0]
    for field in body.body if isinstance(body, ast.ClassDef) else []:
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and field.lineno in comments
        ):
            found[field.target.id] = comments[field.lineno]
    return found


def merge(*parts: JsonObject) -> JsonObject:
    """Schemas by name from several parts, sorted by name.

    Raises:
        ValueError: two different schemas have one name.
    """
    found: JsonObject = {}
    for part in parts:
        for name, schema in part.items():
            if found.setdefault(name, schema) != schema:
                raise ValueError(f"two different schemas are named {name}")
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
            out[key] = markdown(value)
        elif key not in _NOISE:
            out[key] = _tidy(value)
    return out


def markdown(docstring: str) -> str:
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
    """A channel per topic of one server, the MQTT 5 response topic and Home Assistant's."""

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
        "haConfig": {
            "address": "{prefix}/{component}/allworx_{serial}/{object}/config",
            "parameters": _discovery_parameters(),
            "messages": {"haconfig": {"$ref": "#/components/messages/HaConfig"}},
        },
        "haValues": channel("ha", "HaValues"),
    }


def _discovery_parameters() -> JsonObject:
    """The levels of a discovery topic, the components and objects read from the configs built."""
    topics = [topic.split("/") for topic, _ in Discovery(ServerTopics("s", "S"), "p").configs("m")]
    return {
        "prefix": {"description": "Home Assistant's discovery prefix (`--ha-prefix`, `homeassistant`)."},
        "component": {"enum": sorted({levels[1] for levels in topics}), "description": "The entity's kind."},
        "serial": {
            "description": "The server's serial number, each character outside `[A-Za-z0-9_-]` written `_`."
        },
        "object": {"enum": [levels[3] for levels in topics], "description": "The entity."},
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
        "publishHaConfig": send(
            "haConfig",
            "Retained, QoS 1, only with `--ha-discovery`: each entity's Home Assistant discovery config, "
            "on every (re)connection.",
            retain=True,
        ),
        "publishHaValues": send(
            "haValues",
            "Retained, QoS 1, only with `--ha-discovery`: the values the entities read, with each state.",
            retain=True,
        ),
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
    for name, payload in typed_payloads(HOME_ASSISTANT)[0].items():
        found[name] = {"name": name.lower(), "payload": payload}
    return found
