"""Operator commands: verify (``agent.mqtt.commands``), dispatch with ``match``, answer.

Replies go to the MQTT 5 response topic with the request's correlation data when the request
named one, else to ``cmd/{name}/accepted`` or ``cmd/{name}/rejected`` (as AWS IoT Jobs), always
carrying the request's ``client_token``. Every command, accepted or not, is also recorded as a
``command`` event, so the fleet's audit trail is the events stream.

Invariants: a bad command never raises out of :meth:`Dispatcher.handle`, so the agent keeps
running whatever it receives; a retained message on a command topic is ignored (a command is a
request of one moment, never state); a refusal carries a reason code and a rule ID.

Floods: rejecting is cheap and bounded. The checks run cheapest first (size, JSON, shape, then the
operator keys are read and the signature verified: :mod:`agent.mqtt.commands`), and a rejection
is answered and recorded (an event, written durably) only within a budget, :data:`REJECT_BURST` at
once and :data:`REJECT_RATE` a second after that; past it a rejected command is dropped unanswered
(counted, and logged ``commands_dropped`` at most once a second). A sender cannot be told apart on
MQTT (no authenticated publisher identity reaches a subscriber), so the budget is the agent's. An
accepted command, which only a trusted operator can sign, is never dropped, so a real command
waits at most for the cheap rejection of what came before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from agent.documents import LastResult
from agent.events import AgentEvent, CommandAnswered, Staged
from agent.mqtt.commands import NonceWindow, check_command
from agent.mqtt.connection import Inbound, Link
from agent.mqtt.messages import (
    Cancelling,
    Command,
    InstallKeyArgs,
    JobReply,
    NoArgs,
    PlanArgs,
    Reply,
    ReplyResult,
    StageArgs,
    Status,
    UpgradeArgs,
    dump,
)
from agent.mqtt.report import state_document
from agent.opkeys import load_operator_keys
from agent.planner import Plan
from agent.planner import plan as make_plan
from agent.results import StepResult
from agent.store import key_report
from common.errors import AllworxError, StoreError
from common.reasons import Reason, Refusal

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from agent.clock import Clock
    from agent.mqtt.topics import ServerTopics
    from agent.store import ServerDir
    from agent.upgrader import Upgrader
    from releases.catalog import Catalog

log = structlog.get_logger("agent.mqtt.commands")
Outcome = tuple[Refusal | None, ReplyResult | None]
REJECT_BURST = 20  # rejected commands answered at once ...
REJECT_RATE = 5.0  # ... and per second after that; past it they are dropped unanswered
DROP_LOG_SECONDS = 1.0  # the least time between two ``commands_dropped`` logs
REPLIES_IN_FLIGHT = 32  # replies published at once, each waiting for its PUBACK while the next is read


@dataclass
class Budget:
    """A token bucket: ``burst`` at once, ``rate`` a second after that (times in seconds, given)."""

    burst: float = REJECT_BURST
    rate: float = REJECT_RATE
    tokens: float = field(init=False)
    last: float | None = None

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float) -> bool:
        """Spend one token at ``now`` if there is one."""
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _OperatorKeys(Mapping[str, bytes]):
    """The trusted operator keys, read from the server directory only when first looked up
    (a command rejected on its size or shape never reads them)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._keys: dict[str, bytes] | None = None

    def _loaded(self) -> dict[str, bytes]:
        if self._keys is None:
            self._keys = load_operator_keys(self._root)
        return self._keys

    def __getitem__(self, key_id: str) -> bytes:
        return self._loaded()[key_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


class Host(Protocol):
    """What the dispatcher needs of the agent it answers for (``agent.mqtt.daemon.Agent`` fits)."""

    server: ServerDir
    clock: Clock  # the policy clock
    wall: Clock  # real time: command expiry
    catalog: Catalog
    topics: ServerTopics

    @property
    def upgrading(self) -> bool: ...  # a job is running

    @property
    def staging(self) -> bool: ...  # the running job only stages

    def start_job(
        self, work: Callable[[Upgrader], Awaitable[object]], what: str, *, staging: bool = False
    ) -> None: ...

    def cancel_job(self) -> bool: ...

    def mark_state_dirty(self, *, urgent: bool = True) -> None: ...

    def record(self, event: AgentEvent) -> int: ...


class Dispatcher:
    """Receives the commands of one agent."""

    def __init__(self, agent: Host, window: NonceWindow, rejections: Budget | None = None) -> None:
        self.agent = agent
        self.window = window
        self.rejections = rejections or Budget()  # rejected commands answered (the rest dropped)
        self.dropped = 0  # rejected commands dropped unanswered, past the budget
        self._dropped_logged = (0, float("-inf"))  # (dropped, when) at the last log

    async def listen(self, link: Link) -> None:
        """Answer every command received on ``link`` until it drops.

        Raises:
            BrokerError: the connection was lost.
        """
        in_flight = asyncio.Semaphore(REPLIES_IN_FLIGHT)

        async def answer(message: Inbound, reply: Reply) -> None:
            try:
                await self._answer(link, message, reply)
            finally:
                in_flight.release()

        async with asyncio.TaskGroup() as replies:  # a reply's PUBACK is not waited for before the next
            async for message in link.messages():
                name = self.agent.topics.command_name(message.topic)
                if name is None or message.retain:
                    continue
                reply = self.handle(message.payload, name)
                if reply is not None:
                    await in_flight.acquire()
                    replies.create_task(answer(message, reply))

    def handle(self, payload: bytes, name: str) -> Reply | None:
        """Verify and carry out one command; return the reply, or None for a rejection past the
        budget (dropped unanswered). Never raises for bad input."""
        agent = self.agent
        check = check_command(
            payload,
            name,
            trusted=_OperatorKeys(agent.server.root),
            site=agent.topics.site,
            serial=agent.topics.serial,
            now=agent.wall.now(),
            window=self.window,
        )
        if check.command is None:
            if not self.rejections.take(agent.wall.monotonic()):
                self._drop(name)
                return None
            why = check.refusal or Refusal(Reason.COMMAND_MALFORMED, "CMD-4", "The command is malformed.")
            return self._reply(name, check.client_token, why, None)
        command = check.command
        try:
            self.window.remember(command.nonce, command.expires_at, agent.wall.now())  # rule CMD-3
            refusal, result = self._dispatch(command)
        except StoreError as exc:
            refusal, result = Refusal(exc.reason, "SAFE-1", str(exc)), None  # not carried out
        return self._reply(name, command.client_token, refusal, result)

    def _drop(self, name: str) -> None:
        """Count a rejection past the budget; log the count at most every :data:`DROP_LOG_SECONDS`."""
        self.dropped += 1
        now = self.agent.wall.monotonic()
        if now - self._dropped_logged[1] >= DROP_LOG_SECONDS:
            since = self.dropped - self._dropped_logged[0]
            log.warning("commands_dropped", dropped=since, total=self.dropped, command=name)
            self._dropped_logged = (self.dropped, now)

    def _dispatch(self, command: Command) -> Outcome:  # noqa: PLR0911  # reason: one return per command
        match command.command, command.arguments:
            case "upgrade", UpgradeArgs(to=target):
                return self._upgrade(target, command.client_token)
            case "plan", PlanArgs(to=target):
                return None, self._plan(target).report()
            case "stage", StageArgs(to=target):
                return self._stage(target, command.client_token)
            case "cancel", NoArgs():
                if not self.agent.cancel_job():
                    return Refusal(Reason.NO_UPGRADE_RUNNING, "CMD-5", "No upgrade is running."), None
                return None, Cancelling(cancelling=True)
            case "install-key", InstallKeyArgs(key=text):
                return self._install_key(text)
            case "report", NoArgs():
                self.agent.mark_state_dirty()
                return None, state_document(self.agent.server, self.agent.topics.site, self.agent.clock.now())
            case other:  # the schema admits no other name: reaching here is a bug
                raise RuntimeError(f"unhandled command {other!r}")

    def _plan(self, target: str) -> Plan:
        server, now = self.agent.server, self.agent.clock.now()
        return make_plan(self.agent.catalog, server.facts(), server.key_checks(now), target, now)

    def _upgrade(self, target: str, token: str) -> Outcome:
        if self.agent.upgrading and not self.agent.staging:  # a staging job is waited for
            return Refusal(Reason.UPGRADE_IN_PROGRESS, "CMD-5", "An upgrade is already running."), None
        planned = self._plan(target)
        if planned.steps and not planned.steps[0].allowed and planned.refusal is not None:
            self._remember_rejection(planned)
            return planned.refusal, JobReply(plan=planned.report())  # the server would not: rejected
        self.agent.start_job(lambda upgrader: upgrader.upgrade(target), f"upgrade-{token}")
        return None, JobReply(job=token, plan=planned.report())

    def _remember_rejection(self, planned: Plan) -> None:
        """A refused upgrade is the server's last result too: the retained state must say why."""
        refused = [StepResult(s.release, s.build, "refused", s.refusal) for s in planned.steps if s.refusal]
        result = LastResult(
            from_release=planned.from_release,
            to=planned.target,
            final_release=planned.final_release,
            outcome="rejected",
            steps=tuple(step.report() for step in refused),
            at=self.agent.clock.now(),
        )
        self.agent.server.record_result(result)
        self.agent.mark_state_dirty()

    def _stage(self, target: str, token: str) -> Outcome:
        """Start downloading and verifying the plan's images (``Upgrader.stage``); activate nothing.

        Answered at once like ``upgrade``; the end arrives as a ``staged`` event. An ``upgrade``
        received meanwhile waits for the staging and reuses what it verified.
        """
        if self.agent.upgrading:
            return Refusal(Reason.UPGRADE_IN_PROGRESS, "CMD-5", "An upgrade is already running."), None
        planned = self._plan(target)
        if planned.steps and not planned.steps[0].allowed and planned.refusal is not None:
            return planned.refusal, JobReply(plan=planned.report())  # nothing the server may install
        agent = self.agent

        async def stage(upgrader: Upgrader) -> None:
            try:
                builds = await upgrader.stage(target)
            except AllworxError as exc:
                agent.record(Staged(target=target, outcome="failed", builds=(),
                                    reason=exc.reason.value, message=str(exc)))  # fmt: skip
                raise
            agent.record(Staged(target=target, outcome="staged", builds=tuple(builds)))

        agent.start_job(stage, f"stage-{token}", staging=True)
        return None, JobReply(job=token, plan=planned.report())

    def _install_key(self, text: str) -> Outcome:
        check = self.agent.server.install_key(text, self.agent.clock.now())
        document = key_report(check)
        self.agent.mark_state_dirty()
        if check.valid or check.reason is Reason.KEY_NOT_YET_VALID:
            return None, document
        reason = check.reason or Reason.KEY_FORMAT_INVALID
        return Refusal(reason, "SWM-2", check.message or "The key was refused."), document  # rule SWM-2

    def _reply(
        self, name: str, token: str | None, refusal: Refusal | None, result: ReplyResult | None
    ) -> Reply:
        agent = self.agent
        status: Status = "rejected" if refusal else "accepted"
        why = refusal.as_dict() if refusal else {}
        log.info("command_answered", command=name, client_token=token, status=status, **why)
        reason, rule, message = why.get("reason"), why.get("rule"), why.get("message")
        seq = None
        try:
            answered = CommandAnswered(
                command=name, client_token=token, status=status, reason=reason, rule=rule, message=message
            )
            seq = agent.record(answered)
        except StoreError as exc:
            log.warning("command_not_recorded", error=str(exc))
        return Reply(
            command=name,
            client_token=token,
            serial=agent.topics.serial,
            site=agent.topics.site,
            status=status,
            at=agent.clock.now(),
            seq=seq,
            reason=reason,
            rule=rule,
            message=message,
            result=result,
        )

    async def _answer(self, link: Link, message: Inbound, reply: Reply) -> None:
        payload = dump(reply)
        if message.response_topic:
            await link.publish(
                message.response_topic, payload, qos=1, correlation_data=message.correlation_data
            )
            return
        topics = self.agent.topics
        where = topics.accepted if reply.status == "accepted" else topics.rejected
        await link.publish(where(reply.command), payload, qos=1)
