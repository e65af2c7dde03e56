"""Every message of the fleet contract, one model each (docs/asyncapi.yaml is generated from them).

Every message carries ``"schema": 1`` (:data:`SCHEMA_VERSION`), but an ``events`` batch, which
carries ``"schema": 2`` (:data:`EVENTS_SCHEMA_VERSION`): a reader rejects a version it does not
know rather than guess. The agent builds what it sends with these models and the fleet tools
parse what they receive with them (at the JSON edge), so both sides hold typed messages.

Invariants: a command's ``args`` are validated by the model of its ``command`` name; unknown
fields are refused in commands (a signed field the agent ignored would be a field an attacker
could add) and replies; availability is a bare word (``online``/``offline``, not JSON); the state
and events are read leniently (an unknown field is ignored). An ``events`` message is a batch: the
envelope (``schema``, ``serial``, ``site``) and a list of events, each flat (``seq`` and ``at``
beside the event's own fields).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    RootModel,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema

from agent.documents import IsoTime, KeyReport, LastResult, PlanReport, Wire
from agent.events import AgentEvent
from common.jsonedge import JsonObject  # a command's arguments as signed, and the serialised form

SCHEMA_VERSION = 1
EVENTS_SCHEMA_VERSION = 2  # an events message is a batch of events (schema 1: one event)
MAX_COMMAND_BYTES = 64 * 1024  # bytes, the largest command payload read at all
MAX_KEY_TEXT = 16 * 1024  # characters of a key file sent with install-key
CommandName = Literal["upgrade", "plan", "stage", "cancel", "install-key", "report"]
Status = Literal["accepted", "rejected"]

_HEX64 = r"^[0-9a-f]{128}$"
_TOKEN = r"^[A-Za-z0-9._:-]{1,64}$"  # noqa: S105  # reason: a pattern for client tokens, not a secret
_RELEASE = r"^[0-9]{1,2}(\.[0-9]{1,4}){1,3}$"


class _Strict(Wire):
    model_config = ConfigDict(extra="forbid", strict=True)


class UpgradeArgs(_Strict):
    """``upgrade``: go to release ``to``, one committed step at a time (SEQ-1)."""

    to: str = Field(pattern=_RELEASE)


class PlanArgs(_Strict):
    """``plan``: the steps to release ``to`` and each verdict; changes nothing."""

    to: str = Field(pattern=_RELEASE)


class StageArgs(_Strict):
    """``stage``: download and verify every image a plan to ``to`` needs; activate nothing."""

    to: str = Field(pattern=_RELEASE)


class NoArgs(_Strict):
    """``cancel`` and ``report`` take no arguments."""


class InstallKeyArgs(_Strict):
    """``install-key``: the text of a key file."""

    key: str = Field(min_length=1, max_length=MAX_KEY_TEXT)


CommandArgs = UpgradeArgs | PlanArgs | StageArgs | NoArgs | InstallKeyArgs
ARGS_MODELS: dict[str, type[CommandArgs]] = {
    "upgrade": UpgradeArgs,
    "plan": PlanArgs,
    "stage": StageArgs,
    "cancel": NoArgs,
    "install-key": InstallKeyArgs,
    "report": NoArgs,
}


class Command(_Strict):
    """A signed operator command, published on ``cmd/{command}``.

    Signed by an operator key the server trusts (``SERVER_DIR/trust/operators/*.pub``):
    ``signature`` is Ed25519 over the canonical JSON (sorted keys, compact, ASCII) of every other
    field, by the key whose fingerprint is ``key_id``. At most 64 KiB; valid for at most 15
    minutes; each nonce is accepted once.
    """

    schema_version: Literal[1] = Field(alias="schema")
    command: CommandName
    args: JsonObject  # the JSON edge: the signed object as received
    """The arguments, checked by the command's model: ``{"to": release}`` for upgrade, plan and
    stage; ``{"key": key file text}`` for install-key; ``{}`` for cancel and report. (Kept as
    the signed JSON object: the signature covers exactly these values.)"""
    site: str = Field(pattern=_TOKEN)
    serial: str = Field(pattern=_TOKEN)
    client_token: str = Field(pattern=_TOKEN)
    """Echoed in the reply (MQTT 3.1.1 requesters match replies by it)."""
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    """The operator key's fingerprint: the first 16 hex digits of SHA-256 of the raw public key."""
    nonce: str = Field(pattern=r"^[0-9a-f]{16,64}$")
    issued_at: AwareDatetime
    expires_at: AwareDatetime
    signature: str | None = Field(default=None, pattern=_HEX64)

    @property
    def arguments(self) -> CommandArgs:
        """The arguments, validated by the model of this command.

        Raises:
            pydantic.ValidationError: they do not fit it (checked on receipt: see
                :func:`agent.mqtt.commands.check_command`).
        """
        return ARGS_MODELS[self.command].model_validate(self.args)


class MaintenanceKey(Wire):
    """The server's best maintenance key: its plan and expiry, and whether it is valid today."""

    model_config = ConfigDict(extra="forbid")

    key_id: str | None
    plan: str | None
    """ship-90d, anytime-1y, bundle-5y or temporary."""
    expires: IsoTime | date | None
    """A date (valid through the end of that UTC day) or an instant (valid through that instant)."""
    valid: bool
    reason: str | None
    """Why it is not valid (a reason code), or null."""


class ResultSummary(LastResult):
    """The last request's outcome, with the deciding step's reason code, rule and message on top
    (null when it succeeded)."""

    reason: str | None
    rule: str | None
    message: str | None


class StateDocument(Wire):
    """The retained ``state``: the ``allworx-agent status --json`` document (less ``now``, and the
    site the agent serves) plus the contract's fields."""

    schema_version: Literal[1] = Field(default=1, alias="schema")
    serial: str
    model: str
    site: str
    release: str
    """The committed release."""
    build: str
    db_schema: int
    state: str
    """``idle``, or the persisted upgrade state (``staging`` ... ``committed``, ``rolling_back``,
    ``rolled_back``)."""
    maintenance_key: MaintenanceKey | None
    last_result: ResultSummary | None
    updated_at: datetime
    mac: str
    shipped: date
    keys: tuple[KeyReport, ...]
    features_active: tuple[str, ...]
    features_inactive: tuple[str, ...]
    phone_firmware: str | None


class Availability(RootModel[Literal["online", "offline"]]):
    """The retained ``availability``: the plain text ``online``, or ``offline`` (also the last will).

    Not JSON: the bare word, as Home Assistant and most MQTT dashboards expect (an empty retained
    message clears the topic). Any other payload is invalid.
    """

    model_config = ConfigDict(frozen=True, strict=True)

    def payload(self) -> bytes:
        """The bytes published: ``online`` or ``offline``."""
        return self.root.encode()

    @classmethod
    def parse(cls, payload: bytes) -> Availability:
        """Read a received payload.

        Raises:
            ValueError: it is not exactly ``online`` or ``offline``.
        """
        try:
            return cls(payload.decode("ascii"))  # type: ignore[arg-type]  # reason: strict validation checks the text
        except (UnicodeDecodeError, ValidationError):
            raise ValueError(f"{payload[:64]!r} is neither online nor offline") from None


_RECORD = ("seq", "at")


class EventRecord(Wire):
    """One event in a batch: its ``seq`` and ``at`` beside the event's own fields, flat."""

    seq: Annotated[int, Field(ge=1)] | SkipJsonSchema[None] = None
    """Per server: +1 per event, never repeated or skipped, across batches and restarts (the outbox
    sets it)."""
    at: IsoTime
    event: AgentEvent

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        """Read the flat wire form: every field but ``seq`` and ``at`` is the event's."""
        if isinstance(data, dict) and "event" not in data:
            record = {k: data[k] for k in _RECORD if k in data}
            return {**record, "event": {k: v for k, v in data.items() if k not in _RECORD}}
        return data

    def _shape(self, data: JsonObject) -> JsonObject:
        event = data.pop("event")
        return {**data, **event}

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The flat form: ``seq`` and ``at``, and exactly one event's properties (``oneOf``, by ``type``)."""
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        event = target["properties"].pop("event")
        target["required"] = [name for name in target["required"] if name != "event"]
        target["oneOf"] = event["oneOf"]
        return schema


class EventBatch(Wire):
    """One ``events`` message: a server's events in ``seq`` order, each numbered one more than the
    one before it, continuing from the previous batch (QoS 1, through the agent's on-disk outbox)."""

    schema_version: Literal[2] = Field(default=2, alias="schema")
    serial: str
    site: str
    events: tuple[EventRecord, ...] = Field(min_length=1)
    """At most 64. A batch is sent at once after an event that ends or decides something (a result,
    a refusal, a stage's end, a command's answer, a rollback), else within the agent's batch
    interval (250 ms by default) of its first event."""


class JobReply(Wire):
    """``upgrade`` and ``stage``: the job started (the request's ``client_token``) and its plan; a
    rejected one carries the plan alone."""

    _omittable: ClassVar[frozenset[str]] = frozenset({"job"})

    job: str | SkipJsonSchema[None] = None
    plan: PlanReport


class Cancelling(Wire):
    """``cancel``: the running job was asked to stop (before it activates anything)."""

    cancelling: bool


ReplyResult = JobReply | PlanReport | StateDocument | KeyReport | Cancelling


class Reply(Wire):
    """The answer to a command: on the MQTT 5 response topic, or ``cmd/{name}/accepted|rejected``."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = Field(default=1, alias="schema")
    command: str
    client_token: str | None
    serial: str
    site: str
    status: Status
    """``rejected`` carries ``reason`` and ``rule`` (a policy refusal, or a command check)."""
    at: datetime
    seq: int | None = None
    """The ``command`` event recording this answer: the events of the job it started follow it."""
    reason: str | None = None
    rule: str | None = None
    message: str | None = None
    result: ReplyResult | None = None
    """upgrade, stage: the job and plan; plan: the plan; report: the state; install-key: the key's
    check; cancel: ``{"cancelling": true}``."""


def dump(model: Wire) -> bytes:
    """Return the JSON bytes of an outbound message (aliases, so ``schema`` is spelt as published)."""
    return model.model_dump_json(by_alias=True).encode()
