"""The campaign's two state machines (pure): one transition table for the campaign, one per member.

A campaign is ``scheduled`` (its window has not opened), ``running``, ``paused``, or it ended
``cancelled`` or ``completed``. A member (one server) is ``pending``, ``staging``, ``staged`` or
``running`` until it reaches one of :data:`OUTCOMES`. The strings are those of the retained
campaign document (``allworx/campaigns/{id}/status``), a public contract: they never change.

Invariants:
- every status change is one line of :data:`CAMPAIGN_TRANSITIONS` or :data:`MEMBER_TRANSITIONS`;
  a ``(state, event)`` pair that is not there raises :class:`TransitionError` (a bug, never a
  silent default);
- an outcome is final, except ``offline`` after an unanswered upgrade command: the server's
  result, when it comes, replaces it;
- what crosses into the model is typed: :class:`ServerResult`, :class:`ServerState` and
  :class:`CommandReply` parse the servers' JSON and raise ``ValueError`` on anything they do not
  know (an unknown outcome is an error, not a failure of the server).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class TransitionError(RuntimeError):
    """An event arrived in a state that has no edge for it (a bug)."""


class CampaignStatus(StrEnum):
    """Where a campaign is."""

    SCHEDULED = "scheduled"  # the window has not opened (servers may stage)
    RUNNING = "running"
    PAUSED = "paused"  # by the operator, the abort rule or a phase gate (``PauseReason``)
    CANCELLED = "cancelled"
    COMPLETED = "completed"


class CampaignEvent(StrEnum):
    """What happens to a campaign."""

    WAIT = "wait"  # a decision before the window opens
    OPEN = "open"  # the window opened
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    COMPLETE = "complete"  # every phase finished, or the window closed


class PauseReason(StrEnum):
    """Why a campaign is paused."""

    ABORT_RULE = "abort_rule"
    PHASE_GATE = "phase_gate"
    OPERATOR = "operator"


class MemberStatus(StrEnum):
    """Where one server of a campaign is; the last six are its outcomes."""

    PENDING = "pending"
    STAGING = "staging"  # asked to download and verify before the window
    STAGED = "staged"  # the stage command was answered (or lost): ready to start
    RUNNING = "running"  # asked to upgrade; its result has not come yet
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    FAILED = "failed"
    CURRENT = "current"
    OFFLINE = "offline"
    CANCELLED = "cancelled"


class MemberEvent(StrEnum):
    """What happens to one server of a campaign."""

    STAGE = "stage"  # the stage command is sent
    STAGED = "staged"  # the stage command was answered or lost
    START = "start"  # the upgrade command is sent
    ABSENT = "absent"  # offline when the campaign was created
    UP_TO_DATE = "up_to_date"  # already on its target when the campaign was created
    REJECTED = "rejected"  # the server refused (by its plan, its reply or its result)
    SUCCEEDED = "succeeded"  # its result: every step committed
    FAILED = "failed"  # its result: tried and rolled back
    CANCELLED = "cancelled"  # its result: cancelled on request, rolled back
    LOST = "lost"  # the upgrade command got no answer in time
    CLOSED = "closed"  # the campaign ended (cancel, window closed) before this server started


OUTCOMES = (
    MemberStatus.SUCCEEDED,
    MemberStatus.REJECTED,
    MemberStatus.FAILED,
    MemberStatus.CURRENT,
    MemberStatus.OFFLINE,
    MemberStatus.CANCELLED,
)  # in the order reports list them
ACTIVE = frozenset({MemberStatus.STAGING, MemberStatus.RUNNING})  # a command is in flight
ENDED = frozenset({CampaignStatus.CANCELLED, CampaignStatus.COMPLETED})

C, CE = CampaignStatus, CampaignEvent
CAMPAIGN_TRANSITIONS: dict[tuple[CampaignStatus, CampaignEvent], CampaignStatus] = {
    (C.SCHEDULED, CE.WAIT):     C.SCHEDULED,
    (C.SCHEDULED, CE.OPEN):     C.RUNNING,
    (C.SCHEDULED, CE.PAUSE):    C.PAUSED,
    (C.SCHEDULED, CE.CANCEL):   C.CANCELLED,
    (C.RUNNING,   CE.WAIT):     C.SCHEDULED,
    (C.RUNNING,   CE.PAUSE):    C.PAUSED,
    (C.RUNNING,   CE.CANCEL):   C.CANCELLED,
    (C.RUNNING,   CE.COMPLETE): C.COMPLETED,
    (C.PAUSED,    CE.RESUME):   C.RUNNING,
    (C.PAUSED,    CE.CANCEL):   C.CANCELLED,
}  # fmt: skip

M, ME = MemberStatus, MemberEvent
MEMBER_TRANSITIONS: dict[tuple[MemberStatus, MemberEvent], MemberStatus] = {
    (M.PENDING, ME.STAGE):      M.STAGING,
    (M.PENDING, ME.START):      M.RUNNING,
    (M.PENDING, ME.ABSENT):     M.OFFLINE,
    (M.PENDING, ME.UP_TO_DATE): M.CURRENT,
    (M.PENDING, ME.REJECTED):   M.REJECTED,
    (M.PENDING, ME.CLOSED):     M.CANCELLED,
    (M.STAGING, ME.STAGED):     M.STAGED,
    (M.STAGING, ME.CLOSED):     M.CANCELLED,
    (M.STAGED,  ME.START):      M.RUNNING,
    (M.STAGED,  ME.CLOSED):     M.CANCELLED,
    (M.RUNNING, ME.SUCCEEDED):  M.SUCCEEDED,
    (M.RUNNING, ME.FAILED):     M.FAILED,
    (M.RUNNING, ME.REJECTED):   M.REJECTED,
    (M.RUNNING, ME.CANCELLED):  M.CANCELLED,
    (M.RUNNING, ME.LOST):       M.OFFLINE,
    (M.OFFLINE, ME.SUCCEEDED):  M.SUCCEEDED,  # a lost command's late result (started servers only)
    (M.OFFLINE, ME.FAILED):     M.FAILED,
    (M.OFFLINE, ME.REJECTED):   M.REJECTED,
    (M.OFFLINE, ME.CANCELLED):  M.CANCELLED,
}  # fmt: skip


def campaign_next(state: CampaignStatus, event: CampaignEvent) -> CampaignStatus:
    """Return the campaign status ``event`` leads to from ``state``.

    Raises:
        TransitionError: there is no such edge.
    """
    try:
        return CAMPAIGN_TRANSITIONS[(state, event)]
    except KeyError:
        raise TransitionError(f"campaign: no transition from {state.value!r} on {event.value!r}") from None


def member_next(state: MemberStatus, event: MemberEvent) -> MemberStatus:
    """Return the member status ``event`` leads to from ``state``.

    Raises:
        TransitionError: there is no such edge.
    """
    try:
        return MEMBER_TRANSITIONS[(state, event)]
    except KeyError:
        raise TransitionError(f"member: no transition from {state.value!r} on {event.value!r}") from None


def accepts(state: CampaignStatus, event: CampaignEvent) -> bool:
    """Whether the campaign has an edge for ``event`` in ``state`` (an operator request may have none)."""
    return (state, event) in CAMPAIGN_TRANSITIONS


class Outcome(StrEnum):
    """How a server says its upgrade ended (``last_result.outcome`` of its retained state)."""

    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def event(self) -> MemberEvent:
        """The member event this outcome is."""
        return MemberEvent(self.value)


@dataclass(frozen=True, slots=True)
class Why:
    """The refusal or failure behind an outcome: reason code, rule ID, one sentence."""

    reason: str | None = None
    rule: str | None = None
    message: str | None = None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Why:
        """Read ``reason``, ``rule`` and ``message`` of a reply or result.

        Raises:
            ValueError: one of them is present but not a string.
        """
        return cls(_text(raw, "reason"), _text(raw, "rule"), _text(raw, "message"))


@dataclass(frozen=True, slots=True)
class ServerResult:
    """A server's last upgrade result, as its retained state reports it."""

    outcome: Outcome
    at: str | None  # when it was recorded: a new ``at`` is a new result
    why: Why = Why()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ServerResult:
        """Parse ``last_result``.

        Raises:
            ValueError: the outcome is missing or unknown, or a field has the wrong type.
        """
        outcome = raw.get("outcome")
        if not isinstance(outcome, str):
            raise ValueError(f"last_result has no outcome: {outcome!r}")
        try:
            known = Outcome(outcome)
        except ValueError:
            raise ValueError(f"unknown outcome {outcome!r} in last_result") from None
        return cls(known, _text(raw, "at"), Why.of(raw))


@dataclass(frozen=True, slots=True)
class ServerState:
    """What the campaign reads of a server's retained state document."""

    release: str  # "" when the document names none
    idle: bool  # no upgrade is running on the server
    result: ServerResult | None

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> ServerState:
        """Parse a retained state document (``allworx/{site}/{serial}/state``).

        Raises:
            ValueError: ``release`` or ``state`` is not a string, or ``last_result`` is malformed.
        """
        last = doc.get("last_result")
        if last is not None and not isinstance(last, Mapping):
            raise ValueError(f"last_result is not an object: {last!r}")
        return cls(
            release=_text(doc, "release") or "",
            idle=_text(doc, "state") == "idle",
            result=ServerResult.parse(last) if last else None,
        )


@dataclass(frozen=True, slots=True)
class CommandReply:
    """A server's answer to a command."""

    rejected: bool
    why: Why = Why()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> CommandReply:
        """Parse a reply.

        Raises:
            ValueError: ``status`` is neither ``accepted`` nor ``rejected``, or a field has the wrong type.
        """
        status = raw.get("status")
        if status not in ("accepted", "rejected"):
            raise ValueError(f"a reply's status is accepted or rejected, not {status!r}")
        return cls(status == "rejected", Why.of(raw))


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {value!r}")
    return value
