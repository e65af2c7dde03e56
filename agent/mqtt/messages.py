"""Message schemas of the fleet contract (docs/asyncapi.yaml is the published form of the same).

Every message carries ``"schema": 1`` (:data:`SCHEMA_VERSION`): a reader rejects a version it does
not know rather than guess. Inbound commands are validated strictly with pydantic; outbound
messages are built through the models here, so what the agent sends always has the documented shape.

Invariants: a command's ``args`` are validated by the model of its ``command`` name; unknown
fields are refused (a signed field the agent ignored would be a field an attacker could add).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
MAX_COMMAND_BYTES = 64 * 1024  # bytes, the largest command payload read at all
MAX_KEY_TEXT = 16 * 1024  # characters of a key file sent with install-key
CommandName = Literal["upgrade", "plan", "stage", "cancel", "install-key", "report"]
Status = Literal["accepted", "rejected"]

_HEX64 = r"^[0-9a-f]{128}$"
_TOKEN = r"^[A-Za-z0-9._:-]{1,64}$"  # noqa: S105  # reason: a pattern for client tokens, not a secret
_RELEASE = r"^[0-9]{1,2}(\.[0-9]{1,4}){1,3}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


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


ARGS_MODELS: dict[str, type[_Strict]] = {
    "upgrade": UpgradeArgs,
    "plan": PlanArgs,
    "stage": StageArgs,
    "cancel": NoArgs,
    "install-key": InstallKeyArgs,
    "report": NoArgs,
}


class Command(_Strict):
    """A signed operator command, published on ``cmd/{command}``.

    The signature is Ed25519 over the canonical JSON (sorted keys, compact, ASCII) of every other
    field, by the operator key whose fingerprint is ``key_id``.
    """

    schema_version: Literal[1] = Field(alias="schema")
    command: CommandName
    args: dict[str, Any]
    site: str = Field(pattern=_TOKEN)
    serial: str = Field(pattern=_TOKEN)
    client_token: str = Field(pattern=_TOKEN)
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    nonce: str = Field(pattern=r"^[0-9a-f]{16,64}$")
    issued_at: AwareDatetime
    expires_at: AwareDatetime
    signature: str | None = Field(default=None, pattern=_HEX64)


class Reply(_Strict):
    """The answer to a command: on the MQTT 5 response topic, or ``cmd/{name}/accepted|rejected``."""

    schema_version: Literal[1] = Field(default=1, alias="schema")
    command: str
    client_token: str | None
    serial: str
    site: str
    status: Status
    at: datetime
    seq: int | None = None  # the ``command`` event recording this answer: later events follow it
    reason: str | None = None
    rule: str | None = None
    message: str | None = None
    result: dict[str, Any] | None = None


class MaintenanceKey(_Strict):
    """The server's best maintenance key: its plan and expiry, and whether it is valid today."""

    key_id: str | None
    plan: str | None
    expires: str | None
    valid: bool
    reason: str | None


class StateDocument(BaseModel):
    """The retained ``state``: the ``allworx-agent status`` document plus the contract's fields."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    schema_version: Literal[1] = Field(default=1, alias="schema")
    serial: str
    model: str
    site: str
    release: str
    build: str
    db_schema: int
    state: str
    maintenance_key: MaintenanceKey | None
    last_result: dict[str, Any] | None
    updated_at: datetime


class EventMessage(BaseModel):
    """One ``events`` message: a transition, progress, refusal, resumption, result, staging or command."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    schema_version: Literal[1] = Field(default=1, alias="schema")
    seq: int = Field(ge=1)
    serial: str
    site: str
    at: datetime
    type: Literal["transition", "progress", "refused", "resumed", "result", "staged", "command"]


class Availability(_Strict):
    """The retained ``availability``: ``online``, or ``offline`` (also the last will)."""

    schema_version: Literal[1] = Field(default=1, alias="schema")
    serial: str
    status: Literal["online", "offline"]


def dump(model: BaseModel) -> bytes:
    """Return the JSON bytes of an outbound message (aliases, so ``schema`` is spelt as published)."""
    return model.model_dump_json(by_alias=True, exclude_none=False).encode()
