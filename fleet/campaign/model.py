"""The campaign state machine (pure): members, phases, the next actions, and what the fleet said.

The controller (:mod:`fleet.campaign.controller`) feeds in what it hears (state documents,
command replies, lost commands, operator requests) and carries out the actions
:meth:`Campaign.decide` returns; nothing here awaits or touches the network. Times are seconds of
the campaign's clock since the campaign was created.

Invariants:
- every server is in exactly one status; the terminal ones are :data:`OUTCOMES`; every status
  change, of the campaign or of a server, is an edge of the tables in
  :mod:`fleet.campaign.machine` (anything else raises ``TransitionError``);
- an outcome is final (a late or repeated message is ignored), except ``offline`` after a lost
  upgrade command, which the server's own result replaces when it comes;
- phases run in order: no server of phase ``n+1`` starts while one of phase ``n`` is unfinished;
- with a window, no upgrade starts outside it (staging may start before it opens);
- the rate limit (a token bucket on the campaign clock) and ``max_in_flight`` are never exceeded;
- ``from_dict(to_dict(c))`` is ``c``, and so is ``from_parts(core_dict(), [m.as_dict() ...], log)``:
  the retained topics are enough to restart the controller;
- :meth:`Campaign.summary_dict` is bounded whatever the fleet's size (counts, not lists: under
  :data:`SUMMARY_LIMIT` bytes of JSON).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Unpack

from common.reasons import Reason
from fleet.campaign.documents import (
    CampaignDocument,
    CoreDocument,
    LogDetails,
    LogEntry,
    MemberDocument,
    RefusalCount,
    SummaryDocument,
    check_member_types,
)
from fleet.campaign.machine import (
    ACTIVE,
    ENDED,
    OUTCOMES,
    CampaignEvent,
    CampaignStatus,
    CommandReply,
    MemberEvent,
    MemberStatus,
    PauseReason,
    ServerState,
    Why,
    accepts,
    campaign_next,
    member_next,
)
from fleet.campaign.plan import Prediction
from fleet.campaign.spec import CampaignSpec
from fleet.select import brief


class Command(StrEnum):
    """The commands a campaign sends."""

    UPGRADE = "upgrade"
    STAGE = "stage"
    CANCEL = "cancel"


Action = tuple[Command, str, str]  # (command, serial, target)
_REFUSED = frozenset(
    {MemberStatus.REJECTED, MemberStatus.FAILED, MemberStatus.CANCELLED, MemberStatus.OFFLINE}
)  # the outcomes listed by reason code
_SILENT = "The server did not answer the upgrade command."
SUMMARY_LIMIT = 2048  # bytes: the retained summary's JSON never grows past this
_SUMMARY_REFUSALS = 5  # the most frequent reason codes the summary names


@dataclass
class Member:
    """One server in the campaign."""

    serial: str
    site: str
    model: str
    release: str  # when the campaign started
    target: str
    phase: int
    status: MemberStatus = MemberStatus.PENDING
    current: str = ""  # the release last reported
    prediction: Prediction | None = None
    reason: str | None = None
    rule: str | None = None
    message: str | None = None
    staged: bool = False
    started: float | None = None
    finished: float | None = None
    baseline: str | None = None  # the ``last_result.at`` seen before the upgrade was sent
    last_at: str | None = None  # the latest ``last_result.at`` seen
    steps: list[tuple[float, str]] = field(default_factory=list)  # (when, release) of each commit

    @property
    def done(self) -> bool:
        """Whether the server reached an outcome."""
        return self.status in OUTCOMES

    def step(self, event: MemberEvent, t: float | None = None, why: Why | None = None) -> None:
        """Move along the member table; reaching an outcome records ``t`` and ``why``.

        Raises:
            TransitionError: the member's status has no edge for ``event``.
        """
        self.status = member_next(self.status, event)
        if self.done:
            self.finished = t
            self.reason, self.rule, self.message = (why.reason, why.rule, why.message) if why else (None,) * 3

    def as_dict(self) -> MemberDocument:
        """The JSON form."""
        return {
            "serial": self.serial,
            "site": self.site,
            "model": self.model,
            "release": self.release,
            "target": self.target,
            "phase": self.phase,
            "status": self.status.value,
            "current": self.current,
            "reason": self.reason,
            "rule": self.rule,
            "message": self.message,
            "staged": self.staged,
            "started": self.started,
            "finished": self.finished,
            "baseline": self.baseline,
            "last_at": self.last_at,
            "prediction": self.prediction.as_dict() if self.prediction else None,
            "steps": [[round(t, 3), r] for t, r in self.steps],
        }

    @classmethod
    def from_dict(cls, raw: MemberDocument) -> Member:
        """Parse the JSON form (a field left out takes its default, but for the first six).

        Raises:
            ValueError: the status is unknown.
            TypeError: a field is missing or unknown, or of another JSON type than its own.
        """
        unknown = set(raw) - _MEMBER_FIELDS
        missing = _MEMBER_REQUIRED - set(raw)
        if unknown or missing:
            raise TypeError(f"member fields unknown {sorted(unknown)}, missing {sorted(missing)}")
        check_member_types(raw)
        pred = raw.get("prediction")
        return cls(
            serial=raw["serial"],
            site=raw["site"],
            model=raw["model"],
            release=raw["release"],
            target=raw["target"],
            phase=raw["phase"],
            status=MemberStatus(raw.get("status", MemberStatus.PENDING)),
            current=raw.get("current", ""),
            prediction=Prediction.from_dict(pred) if pred else None,
            reason=raw.get("reason"),
            rule=raw.get("rule"),
            message=raw.get("message"),
            staged=raw.get("staged", False),
            started=raw.get("started"),
            finished=raw.get("finished"),
            baseline=raw.get("baseline"),
            last_at=raw.get("last_at"),
            steps=[(float(t), str(r)) for t, r in raw.get("steps", [])],
        )


_MEMBER_FIELDS = MemberDocument.__required_keys__ | MemberDocument.__optional_keys__
_MEMBER_REQUIRED = frozenset({"serial", "site", "model", "release", "target", "phase"})  # the rest default


def _committed_between(member: Member, release: str) -> list[str]:
    """The releases ``member`` committed to go from its last reported release to ``release``.

    One retained-state publish can carry two commits (the state is read when it is sent), so a
    jump along the planned chain (SEQ-1: every release in order) counts each release passed;
    a release off the plan counts as one step.
    """
    chain = list(member.prediction.steps) if member.prediction is not None else []
    if release not in chain:
        return [release]
    if member.current in chain:
        start = chain.index(member.current) + 1
    elif member.current == member.release:
        start = 0
    else:
        return [release]
    end = chain.index(release) + 1
    return chain[start:end] if start < end else [release]


@dataclass
class Campaign:
    """A campaign in progress."""

    spec: CampaignSpec
    created: datetime
    members: dict[str, Member]
    phases: list[list[str]]
    status: CampaignStatus = CampaignStatus.RUNNING
    phase: int = 0
    paused_reason: PauseReason | None = None
    acknowledged: list[int] = field(default_factory=list)  # phases whose abort rule a resume overrode
    tokens: float = 0.0
    token_time: float = 0.0
    needing_keys: dict[str, list[str]] = field(default_factory=dict)  # SITE-1: network -> serials
    log: list[LogEntry] = field(default_factory=list)  # campaign-level events, for the report

    # --- time -------------------------------------------------------------------------------
    def seconds(self, now: datetime) -> float:
        """Campaign-clock seconds since creation."""
        return (now - self.created).total_seconds()

    def note(self, now: datetime, what: str, **details: Unpack[LogDetails]) -> None:
        """Record a campaign-level event."""
        self.log.append({"t": round(self.seconds(now), 3), "event": what, "phase": self.phase, **details})

    # --- deciding ---------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """Whether the campaign ended (completed or cancelled, and nothing is in flight)."""
        return self.status in ENDED and not any(m.status in ACTIVE for m in self.members.values())

    def decide(self, now: datetime) -> list[Action]:
        """Advance the campaign at ``now`` and return the commands to send."""
        if self.status is CampaignStatus.PAUSED or self.status in ENDED:
            return []
        early = self._window(now)
        if early is not None:
            return early
        tripped = self._check_abort(now)
        if tripped is not None:
            return tripped
        if not self.phases or all(self.members[s].done for s in self.phases[self.phase]):
            if self.phase + 1 >= len(self.phases):
                self._go(CampaignEvent.COMPLETE)
                self.note(now, "completed")
                return []
            self.note(now, "phase_finished")
            self.phase += 1
            if self.spec.gate_phases:
                self._pause(now, PauseReason.PHASE_GATE)
                return []
            self.note(now, "phase_started")
        return self._dispatch(now)

    def _go(self, event: CampaignEvent) -> None:
        self.status = campaign_next(self.status, event)

    def _pause(self, now: datetime, reason: PauseReason) -> None:
        self._go(CampaignEvent.PAUSE)
        self.paused_reason = reason
        self.note(now, "paused", reason=reason.value)

    def _window(self, now: datetime) -> list[Action] | None:
        """The actions before the window opens or after it closed; None inside it (or without one)."""
        window = self.spec.window
        if window is not None and now < window.opens:
            self._go(CampaignEvent.WAIT)
            return self._stage(now) if self.spec.stage_early else []
        if self.status is CampaignStatus.SCHEDULED:
            self._go(CampaignEvent.OPEN)
            self.note(now, "window_opened")
        if window is not None and now >= window.closes:
            self._close(now, Reason.WINDOW_CLOSED, "The maintenance window closed before this server's turn.")
            self._go(CampaignEvent.COMPLETE)
            self.note(now, "window_closed")
            return []
        return None

    def _check_abort(self, now: datetime) -> list[Action] | None:
        rule = self.spec.abort
        if rule is None or not self.phases or self.phase in self.acknowledged:
            return None
        counts = Counter(self.members[s].status for s in self.phases[self.phase])
        succeeded, failed = counts[MemberStatus.SUCCEEDED], counts[MemberStatus.FAILED]
        if not rule.tripped(succeeded, failed):
            return None
        self.note(now, "abort_rule", action=rule.action, succeeded=succeeded, failed=failed)
        if rule.action == "pause":
            self._go(CampaignEvent.PAUSE)
            self.paused_reason = PauseReason.ABORT_RULE
            return []
        return self.cancel(now)

    def _budget(self, t: float) -> int:
        in_flight = sum(1 for m in self.members.values() if m.status in ACTIVE)
        budget = (self.spec.max_in_flight - in_flight) if self.spec.max_in_flight else 1 << 30
        rate = self.spec.rate_per_minute
        if rate is not None:
            self.tokens = min(max(rate, 1.0), self.tokens + (t - self.token_time) * rate / 60)
            self.token_time = t
            budget = min(budget, int(self.tokens))
        return max(budget, 0)

    def _take(self, count: int) -> None:
        if self.spec.rate_per_minute is not None:
            self.tokens -= count

    def _dispatch(self, now: datetime) -> list[Action]:
        t = self.seconds(now)
        budget = self._budget(t)
        actions: list[Action] = []
        for serial in self.phases[self.phase]:
            if len(actions) >= budget:
                break
            member = self.members[serial]
            if member.status in (MemberStatus.PENDING, MemberStatus.STAGED):
                member.step(MemberEvent.START)
                member.started, member.baseline = t, member.last_at
                actions.append((Command.UPGRADE, serial, member.target))
        self._take(len(actions))
        return actions

    def _stage(self, now: datetime) -> list[Action]:
        budget = self._budget(self.seconds(now))
        actions: list[Action] = []
        for member in self.members.values():
            if len(actions) >= budget:
                break
            if member.status is MemberStatus.PENDING:
                member.step(MemberEvent.STAGE)
                actions.append((Command.STAGE, member.serial, member.target))
        self._take(len(actions))
        return actions

    def _close(self, now: datetime, reason: Reason, message: str) -> None:
        why = Why(reason.value, "CAMPAIGN", message)
        for member in self.members.values():
            if member.status in (MemberStatus.PENDING, MemberStatus.STAGED, MemberStatus.STAGING):
                member.step(MemberEvent.CLOSED, self.seconds(now), why)

    # --- operator requests ------------------------------------------------------------------
    def pause(self, now: datetime) -> None:
        """Stop starting servers (those in flight finish); nothing happens unless running or scheduled."""
        if accepts(self.status, CampaignEvent.PAUSE):
            self._pause(now, PauseReason.OPERATOR)

    def resume(self, now: datetime) -> None:
        """Carry on after a pause; a pause by the abort rule is overridden for its phase."""
        if not accepts(self.status, CampaignEvent.RESUME):
            return
        if self.paused_reason is PauseReason.ABORT_RULE and self.phase not in self.acknowledged:
            self.acknowledged.append(self.phase)
        if self.paused_reason is PauseReason.PHASE_GATE:
            self.note(now, "phase_started")
        self._go(CampaignEvent.RESUME)
        self.paused_reason = None
        self.note(now, "resumed")

    def cancel(self, now: datetime) -> list[Action]:
        """End the campaign: servers not started are cancelled; running ones are asked to cancel."""
        if not accepts(self.status, CampaignEvent.CANCEL):
            return []
        self._close(now, Reason.CAMPAIGN_CANCELLED, "The campaign was cancelled before this server's turn.")
        self._go(CampaignEvent.CANCEL)
        self.paused_reason = None
        self.note(now, "cancelled")
        running = (m for m in self.members.values() if m.status is MemberStatus.RUNNING)
        return [(Command.CANCEL, m.serial, m.target) for m in running]

    # --- what the fleet says ------------------------------------------------------------------
    def record(self, serial: str, event: MemberEvent, now: datetime, why: Why | None = None) -> None:
        """Apply one event to a server (creation's decisions: absent, up to date, rejected by its plan).

        Raises:
            KeyError: no such server.
            TransitionError: the server's status has no edge for ``event``.
        """
        self.members[serial].step(event, self.seconds(now), why)

    def on_state(self, serial: str, state: ServerState, now: datetime) -> None:
        """A server's retained state document arrived."""
        member = self.members.get(serial)
        if member is None:
            return
        release = state.release
        if member.current and release and release != member.current and not member.done:
            t = self.seconds(now)
            member.steps.extend((t, passed) for passed in _committed_between(member, release))
        member.current = release or member.current
        result = state.result
        member.last_at = (result.at if result is not None else None) or member.last_at
        # a lost command's server was busy, not offline, when its own result comes after all
        late = member.status is MemberStatus.OFFLINE and member.started is not None
        waiting = member.status is MemberStatus.RUNNING or late
        if waiting and state.idle and result is not None and result.at != member.baseline:
            member.step(result.outcome.event, self.seconds(now), result.why)

    def on_reply(self, serial: str, command: Command, reply: CommandReply, now: datetime) -> None:
        """A server answered a command."""
        member = self.members.get(serial)
        if member is None:
            return
        if command is Command.STAGE and member.status is MemberStatus.STAGING:
            member.step(MemberEvent.STAGED)
            member.staged = not reply.rejected
        elif command is Command.UPGRADE and reply.rejected and member.status is MemberStatus.RUNNING:
            member.step(MemberEvent.REJECTED, self.seconds(now), reply.why)

    def on_lost(self, serial: str, command: Command, now: datetime) -> None:
        """A command got no answer in time: the server is offline (until a later result says otherwise)."""
        member = self.members.get(serial)
        if member is None:
            return
        if command is Command.STAGE and member.status is MemberStatus.STAGING:
            member.step(MemberEvent.STAGED)
        elif command is Command.UPGRADE and member.status is MemberStatus.RUNNING:
            if member.current != member.release:
                return  # it moved: busy, not offline; its result will come
            why = Why(Reason.SERVER_OFFLINE.value, "CAMPAIGN", _SILENT)
            member.step(MemberEvent.LOST, self.seconds(now), why)

    # --- reading ----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Servers per status (every server counted once)."""
        return dict(Counter(m.status.value for m in self.members.values()))

    def refusals(self) -> dict[str, RefusalCount]:
        """Rejected and failed servers by reason code, with the rule."""
        out: dict[str, RefusalCount] = {}
        for member in self.members.values():
            if member.status in _REFUSED and member.reason:
                entry = out.setdefault(
                    member.reason, {"rule": member.rule, "count": 0, "outcome": member.status.value}
                )
                entry["count"] += 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["count"]))

    def summary_dict(self, now: datetime) -> SummaryDocument:
        """The bounded summary (the retained ``status``): state, phase, counts, target, selection, times."""
        refusals = dict(list(self.refusals().items())[:_SUMMARY_REFUSALS])
        return {
            "schema": 2,
            "campaign_id": self.spec.campaign_id,
            "status": self.status.value,
            "paused_reason": self.paused_reason.value if self.paused_reason else None,
            "phase": self.phase,
            "phases": len(self.phases),
            "target": self.spec.target,
            "selection": brief(self.spec.selection),
            "members": len(self.members),
            "listed": len(self.spec.members),  # serials the spec names (0: every server reporting)
            "counts": self.counts(),
            "refusals": {k: {"rule": v["rule"], "count": v["count"]} for k, v in refusals.items()},
            "needing_keys": sum(len(v) for v in self.needing_keys.values()),
            "created": self.created.isoformat(),
            "updated": now.isoformat(),
        }

    def core_dict(self) -> CoreDocument:
        """The campaign without its members and log (the controller's retained ``state``)."""
        return {
            "schema": 1,
            "spec": self.spec.to_dict(),
            "created": self.created.isoformat(),
            "status": self.status.value,
            "phase": self.phase,
            "phases": self.phases,
            "paused_reason": self.paused_reason.value if self.paused_reason else None,
            "acknowledged": self.acknowledged,
            "tokens": self.tokens,
            "token_time": self.token_time,
            "needing_keys": self.needing_keys,
        }

    @classmethod
    def from_parts(cls, core: CoreDocument, members: list[MemberDocument], log: list[LogEntry]) -> Campaign:
        """Rebuild a campaign from :meth:`core_dict`, each member's :meth:`Member.as_dict`, and its log.

        Raises:
            KeyError, ValueError, TypeError: a part is not of a campaign state.
        """
        return cls.from_dict({**core, "counts": {}, "refusals": {}, "members": members, "log": log})

    def to_dict(self) -> CampaignDocument:
        """The JSON form (the whole campaign: what the report reads)."""
        return {
            **self.core_dict(),
            "counts": self.counts(),
            "refusals": self.refusals(),
            "log": self.log,
            "members": [m.as_dict() for m in self.members.values()],
        }

    @classmethod
    def from_dict(cls, raw: CampaignDocument) -> Campaign:
        """Parse the JSON form (its ``counts`` and ``refusals`` are derived, not read).

        Raises:
            KeyError, ValueError, TypeError: the document is not a campaign state (an unknown
                status or pause reason is a ``ValueError``).
        """
        members = [Member.from_dict(m) for m in raw["members"]]
        paused = raw.get("paused_reason")
        return cls(
            spec=CampaignSpec.from_dict(raw["spec"]),
            created=datetime.fromisoformat(raw["created"]),
            members={m.serial: m for m in members},
            phases=[list(p) for p in raw["phases"]],
            status=CampaignStatus(raw["status"]),
            phase=int(raw["phase"]),
            paused_reason=PauseReason(paused) if paused else None,
            acknowledged=list(raw.get("acknowledged", [])),
            tokens=float(raw.get("tokens", 0.0)),
            token_time=float(raw.get("token_time", 0.0)),
            needing_keys=dict(raw.get("needing_keys", {})),
            log=list(raw.get("log", [])),
        )
