"""The JSON documents of a campaign: what the controller retains, the report reads and a dry run prints.

Retained under ``allworx/campaigns/{id}/``: ``status`` (:class:`SummaryDocument`, bounded),
``state`` (:class:`CoreDocument`), ``log`` (a list of :class:`LogEntry`), ``servers/{serial}``
(:class:`MemberDocument`) and an operator's ``control`` (:class:`ControlDocument`); the whole
campaign (:class:`CampaignDocument`) is what the report is built from. Their keys, and the order
they are written in, are the published form: docs/asyncapi.yaml is generated from these classes
(``python -m fleet.schema``), their docstrings and their fields' comments being its descriptions.

They are ``TypedDict`` s, not pydantic models: every member's document is rebuilt and compared at
each publish, for every server of the fleet, where a plain dict costs least.

Invariant: a document read back is parsed by the class that wrote it (``Member.from_dict``,
``Campaign.from_parts``, ``CampaignSpec.from_dict``); one that does not fit raises there.
"""

from __future__ import annotations

from typing import Literal

from typing_extensions import TypedDict  # pydantic reads a TypedDict from here before Python 3.12


class AbortDocument(TypedDict):
    """The abort rule: stop a phase past ``threshold`` once ``min_finished`` servers finished."""

    threshold: float
    min_finished: int
    action: Literal["pause", "cancel"]


class WindowDocument(TypedDict):
    """The maintenance window (ISO 8601 instants)."""

    opens: str
    closes: str


class SpecDocument(TypedDict):
    """A campaign's request (``CampaignSpec``)."""

    campaign_id: str
    target: str
    canary: int
    batch: str
    rate_per_minute: float | None
    max_in_flight: int | None
    abort: AbortDocument | None
    window: WindowDocument | None
    stage_early: bool
    gate_phases: bool
    networks: dict[str, list[str]]
    members: list[str]
    selection: list[str]


class PredictionDocument(TypedDict):
    """What a server will do when asked to upgrade to its target (``Prediction``)."""

    outcome: str
    final_release: str
    steps: list[str]
    reason: str | None
    rule: str | None
    message: str | None


class ServerPlace(TypedDict):
    """A server of a campaign: where it is, what it runs and is asked for, and its phase."""

    serial: str
    site: str
    model: str
    release: str
    target: str
    phase: int


class DryRunRow(PredictionDocument, ServerPlace):
    """One server of a dry run: where it is, what it is asked for, and its prediction."""


class MemberDocument(ServerPlace):
    """One server of the campaign (retained on ``servers/{serial}``)."""

    status: str
    current: str
    reason: str | None
    rule: str | None
    message: str | None
    staged: bool
    started: float | None
    finished: float | None
    baseline: str | None
    last_at: str | None
    prediction: PredictionDocument | None
    steps: list[list[float | str]]  # [when, release] of each commit


_TEXT, _NUMBER, _NONE = (str,), (int, float), (type(None),)
MEMBER_TYPES: dict[str, tuple[type, ...]] = {  # the JSON types of each field of a MemberDocument
    **dict.fromkeys(("serial", "site", "model", "release", "target", "status", "current"), _TEXT),
    **dict.fromkeys(("reason", "rule", "message", "baseline", "last_at"), _TEXT + _NONE),
    "phase": (int,), "staged": (bool,), "started": _NUMBER + _NONE, "finished": _NUMBER + _NONE,
    "prediction": (dict, *_NONE), "steps": (list,),
}  # fmt: skip


def _is(value: object, kinds: tuple[type, ...]) -> bool:
    """Whether ``value`` is of one of ``kinds`` (``true`` and ``false`` are no numbers)."""
    return isinstance(value, kinds) and (not isinstance(value, bool) or bool in kinds)


def check_member_types(raw: MemberDocument) -> None:
    """Check that each field of a member's document (retained: any broker client may write it) has its
    JSON type, and each of its steps is a ``[seconds, release]`` pair.

    Raises:
        TypeError: naming the first field of another type (or unknown).
    """
    for name, value in raw.items():
        kinds = MEMBER_TYPES.get(name)
        if kinds is None or not _is(value, kinds):
            allowed = " or ".join(k.__name__ for k in kinds or ())
            raise TypeError(f"member field {name!r} must be {allowed or 'left out'}, got {value!r:.60}")
    for step in raw.get("steps", []):
        if not (isinstance(step, list) and len(step) == 2 and _is(step[0], _NUMBER) and _is(step[1], _TEXT)):
            raise TypeError(f"member field 'steps' must hold [seconds, release] pairs, got {step!r:.60}")


class LogDetails(TypedDict, total=False):
    """What a log entry may tell beyond its time, event and phase."""

    reason: str  # paused: why
    action: str  # abort_rule: pause or cancel; operator: the request
    succeeded: int  # abort_rule: the phase's counts when it tripped
    failed: int
    servers: int  # created: servers in the campaign
    phases: int
    serial: str  # operator: the server a command went to
    key_id: str  # operator: who (the operator key's fingerprint)
    wall: str  # operator: when, by the wall clock
    nonce: str | None  # operator: the request's nonce (each is recorded once)


class LogEntry(LogDetails):
    """A campaign-level event (retained on ``log``, in order)."""

    t: float  # seconds of the campaign clock since it was created
    event: str
    phase: int


class RefusalCount(TypedDict):
    """Servers refused or failed with one reason code."""

    rule: str | None
    count: int
    outcome: str


class SummaryRefusal(TypedDict):
    """A reason code's count in the bounded summary."""

    rule: str | None
    count: int


class SummaryDocument(TypedDict):
    """The bounded summary (retained on ``status``): under ``SUMMARY_LIMIT`` bytes at any fleet size."""

    schema: Literal[2]
    campaign_id: str
    status: str
    paused_reason: str | None
    phase: int
    phases: int
    target: str
    selection: list[str]  # the selection, bounded (see fleet.select.brief)
    members: int
    listed: int  # serials the spec names (0: every server reporting)
    counts: dict[str, int]
    refusals: dict[str, SummaryRefusal]
    needing_keys: int
    created: str
    updated: str


class CoreDocument(TypedDict):
    """The campaign without its members and log (retained on ``state``)."""

    schema: Literal[1]
    spec: SpecDocument
    created: str
    status: str
    phase: int
    phases: list[list[str]]
    paused_reason: str | None
    acknowledged: list[int]
    tokens: float
    token_time: float
    needing_keys: dict[str, list[str]]


class CampaignDocument(CoreDocument):
    """The whole campaign: what the report reads."""

    counts: dict[str, int]
    refusals: dict[str, RefusalCount]
    log: list[LogEntry]
    members: list[MemberDocument]


class StatusDocument(TypedDict):
    """What ``allworx-fleet campaign status`` and ``start`` print: status, phase, counts, refusals."""

    campaign_id: str
    status: str
    phase: int
    phases: int
    paused_reason: str | None
    counts: dict[str, int]
    refusals: dict[str, RefusalCount]
    needing_keys: dict[str, list[str]]


class ControlDocument(TypedDict):
    """An operator's request (retained on ``control``), applied once per nonce.

    ``signature`` is Ed25519, hex, by a trusted operator key over the canonical JSON (sorted keys,
    compact, ASCII) of the other fields; ``at`` is when it was signed (ISO 8601, UTC).
    """

    campaign_id: str
    action: Literal["pause", "resume", "abort"]
    nonce: str
    at: str
    key_id: str  # the operator key's fingerprint
    signature: str
