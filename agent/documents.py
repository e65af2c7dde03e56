"""The agent's JSON documents: what ``allworx-agent ... --json`` prints and the MQTT messages carry.

Each document is a frozen pydantic model. Its JSON (:meth:`Wire.wire`) is the published form and
its ``model_json_schema()`` the published schema: docs/asyncapi.yaml is generated from these models
(``python -m fleet.schema``), so the docstrings below, the models' and the fields' (a string
under a field), are the contract's descriptions.

Invariants:
- a field a model names in ``_omittable`` may be absent from the JSON: it is left out when it is
  None (a step carries ``reason``, ``rule`` and ``message`` only when it was refused or failed);
  every other field is always present, null or not, and the JSON schema requires exactly those;
- the timestamps the agent writes with ``datetime.isoformat`` (``+00:00``) keep that spelling
  (:data:`IsoTime`), so reading a document and writing it again gives the same JSON;
- documents read leniently (an unknown field is ignored) unless a model says otherwise.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from common.jsonedge import JsonObject  # the serialised form: what the JSON edge prints, stores or sends

StepOutcome = Literal["committed", "refused", "failed", "cancelled"]
RequestOutcome = Literal["succeeded", "rejected", "failed", "cancelled"]


def _required_on_the_wire(schema: JsonDict, model: type[Any]) -> None:
    """Require every field the JSON always carries (defaults included), none of the omittable."""
    omittable: frozenset[str] = getattr(model, "_omittable", frozenset())
    fields = model.model_fields.items()
    schema["required"] = [
        field.serialization_alias or field.alias or name for name, field in fields if name not in omittable
    ]


def _isoformat(moment: datetime) -> str:
    return moment.isoformat()


IsoTime = Annotated[AwareDatetime, PlainSerializer(_isoformat, return_type=str, when_used="json")]
"""An instant written as ``datetime.isoformat`` writes it (``2010-01-01T00:00:00+00:00``)."""


class Wire(BaseModel):
    """A document with a fixed JSON form (see the module's invariants)."""

    model_config = ConfigDict(
        frozen=True,
        populate_by_name=True,
        json_schema_extra=_required_on_the_wire,
    )
    _omittable: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> Any:
        return self._shape(handler(self))

    def _shape(self, data: JsonObject) -> JsonObject:
        """Adjust the serialised fields: by default, leave out the omittable ones that are None."""
        for name in self._omittable:
            if name in data and data[name] is None:
                del data[name]
        return data

    def wire(self) -> JsonObject:
        """The JSON form as Python data (the JSON edge: what is printed, stored or sent)."""
        return self.model_dump(mode="json", by_alias=True)


class StepReport(Wire):
    """How one step ended: ``committed``, or ``refused``, ``failed`` or ``cancelled`` and why."""

    _omittable = frozenset({"reason", "rule", "message"})

    release: str
    build: str
    outcome: StepOutcome
    """``refused``: a policy would not install it; ``failed``: tried and rolled back."""
    reason: str | SkipJsonSchema[None] = None
    """The reason code (``common/reasons.py``), when the step did not commit."""
    rule: str | SkipJsonSchema[None] = None
    """The rule ID the refusal or failure cites (docs/rules.md; CMD-n in docs/mqtt.md)."""
    message: str | SkipJsonSchema[None] = None
    """One sentence a partner understands."""


class UpgradeReport(Wire):
    """How a request (``upgrade``, ``install``) ended, as ``allworx-agent upgrade --json`` prints it."""

    _omittable = frozenset({"recovered"})

    from_release: str = Field(validation_alias="from", serialization_alias="from")
    """The release the server ran when the request came."""
    to: str
    """The release asked for."""
    final_release: str
    """The release the server runs now."""
    outcome: RequestOutcome
    """``rejected``: a policy refused (the server would not); ``failed``: it tried and rolled back."""
    steps: tuple[StepReport, ...]
    recovered: StepReport | SkipJsonSchema[None] = None
    """A step a power cut or a kill interrupted, finished before this request."""


class LastResult(UpgradeReport):
    """The last request's outcome, as the server keeps it (``last_result.json``)."""

    at: IsoTime
    """When it ended."""

    @classmethod
    def of(cls, report: UpgradeReport, at: datetime) -> Self:
        """``report`` as it ended at ``at``."""
        return cls(**dict(report), at=at)


class PlanStep(Wire):
    """One step of a plan: ``would-install`` (with what authorises it) or ``refused`` (and why)."""

    _omittable = frozenset({"rebuilds_database", "authorised_by", "reason", "rule", "message"})

    release: str
    build: str
    outcome: Literal["would-install", "refused"]
    rebuilds_database: bool | SkipJsonSchema[None] = None
    """Whether the step rebuilds the database (rule DB-1)."""
    authorised_by: str | SkipJsonSchema[None] = None
    """``not-required``, ``maintenance:<key id>`` or ``patch:<key id>``."""
    reason: str | SkipJsonSchema[None] = None
    rule: str | SkipJsonSchema[None] = None
    message: str | SkipJsonSchema[None] = None


class PlanReport(Wire):
    """The chain of single steps to a release and each one's verdict (``plan``); changes nothing."""

    from_release: str = Field(validation_alias="from", serialization_alias="from")
    to: str
    final_release: str
    """Where the server would end: the last step that would install, or where it is."""
    steps: tuple[PlanStep, ...]


_KEY_FIELDS = frozenset(
    {"key_id", "kind", "plan", "starts", "expires", "feature", "users", "ceiling", "patch_build", "count"}
)


class KeyReport(Wire):
    """One installed key verified today; a key that does not parse has ``valid``, ``reason`` and
    ``message`` only."""

    _omittable = _KEY_FIELDS

    valid: bool
    reason: str | None
    """Why it is not valid (a reason code), or null."""
    key_id: str | None = None
    kind: str | None = None
    """maintenance, feature, users, patch."""
    plan: str | None = None
    """A maintenance key's plan: ship-90d, anytime-1y, bundle-5y or temporary."""
    starts: IsoTime | date | None = None
    """A date (from the start of that UTC day) or an instant."""
    expires: IsoTime | date | None = None
    """A date (valid through the end of that UTC day) or an instant (valid through that instant)."""
    feature: str | None = None
    users: str | None = None
    ceiling: str | None = None
    """A temporary key's highest release."""
    patch_build: str | None = None
    count: int | None = None
    message: str

    def _shape(self, data: JsonObject) -> JsonObject:
        """A key that parsed carries every field (null or not); one that did not, none of them."""
        if self.key_id is None:
            for name in _KEY_FIELDS:
                data.pop(name, None)
        return data
