"""The agent daemon: one server directory, one broker connection, the fleet contract (docs/mqtt.md).

Shape (STYLE 5): an outer reconnect loop with capped, jittered backoff; one
:func:`agent.mqtt.connection.connect` per attempt (MQTT 5 first, 3.1.1 once a broker refuses
it); per connection an ``asyncio.TaskGroup`` of named tasks: ``events`` (drains the outbox),
``state`` (republishes the retained state when it changed) and ``commands`` (verifies and
dispatches operator commands with ``match``). The upgrade itself runs in the daemon's outer
task group, so it carries on while the broker is away.

Invariants:
- every event goes through the on-disk outbox before it is published, so nothing produced while
  disconnected is lost, and events arrive in sequence order after reconnection;
- at most one upgrade runs at a time; a second ``upgrade`` is rejected ``UPGRADE_IN_PROGRESS``;
- on start, an upgrade interrupted by a kill or power cut is recovered (``Upgrader.recover``);
- the retained state is republished on every (re)connection and after every persisted transition;
- a command's nonce is persisted before the command acts (rule CMD-3).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from agent.clock import Clock, SystemClock, exponential_backoff
from agent.limits import DEFAULT_LIMITS, Limits
from agent.mqtt.commands import NonceWindow
from agent.mqtt.connection import BrokerSettings, Link, Protocol, connect
from agent.mqtt.dispatch import Dispatcher
from agent.mqtt.messages import Availability, dump
from agent.mqtt.outbox import Outbox
from agent.mqtt.report import event_message, state_document
from agent.mqtt.topics import ServerTopics
from agent.store import ServerDir
from agent.upgrader import Timing, Upgrader
from common.errors import AllworxError, BrokerError
from releases.catalog import Catalog, default_catalog

log = structlog.get_logger("agent.mqtt")
URGENT_STATES = frozenset({"committed", "rolled_back", "rolling_back"})  # the release or outcome changes
BATCH = 32  # events kept in flight at once (each waits for its PUBACK)
STOP_SECONDS = 2.0  # on a stop: the longest wait for the offline PUBACK, and again for the DISCONNECT


def stop_on_sigterm(task: asyncio.Task[Any], again_after: float = 2.5 * STOP_SECONDS) -> None:
    """Cancel ``task`` on SIGTERM; if it still runs ``again_after`` seconds later, cancel every task.

    Once is not always enough on Python 3.11: a cancellation that lands just as an awaited
    operation completes (``asyncio.wait_for`` inside aiomqtt) can be lost, leaving the daemon's
    inner tasks running. The second round reaches each of them, so ``finally`` blocks still run.
    """
    loop = asyncio.get_running_loop()

    def cancel(everything: bool) -> None:
        if task.done():
            return
        for each in asyncio.all_tasks(loop) if everything else {task}:
            each.cancel()
        loop.call_later(again_after, cancel, True)

    loop.add_signal_handler(signal.SIGTERM, cancel, False)


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """How the daemon behaves; times in real seconds."""

    broker: BrokerSettings
    site: str | None = None  # default: the site in identity.json
    progress_interval: float = 1.0  # the least time between two progress events of one phase
    state_interval: float = 0.0  # the least time between two retained-state publishes (the last wins)
    cursor_interval: float = 0.0  # the least time between two outbox cursor writes (0: every delivery)
    backoff_base: float = 0.5  # the first reconnect delay
    backoff_cap: float = 30.0  # the longest reconnect delay
    timing: Timing | None = None  # the simulated hardware's durations (reboot, database)
    protocol: Protocol | None = None  # None: MQTT 5 first, 3.1.1 when the broker refuses it
    limits: Limits = DEFAULT_LIMITS  # download limits; bandwidth paces downloads on the injected clock


class Agent:
    """The daemon of one server directory (run with :meth:`run`)."""

    def __init__(
        self,
        server: ServerDir,
        options: AgentOptions,
        *,
        clock: Clock,
        wall: Clock | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        ident = server.identity()
        self.server = server
        self.options = options
        self.clock = clock  # the policy clock (simulated in the simulator)
        self.wall = wall or SystemClock()  # real time: network backoff, command expiry, rate limits
        self.catalog = catalog or default_catalog()
        self.topics = ServerTopics(options.site or ident.site, ident.serial)
        self.outbox = Outbox(server.root / "agent" / "outbox", cursor_every=options.cursor_interval)
        self.protocol = options.protocol or Protocol.V5
        self._state_dirty = asyncio.Event()
        self._state_urgent = asyncio.Event()
        self._events_ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._last_progress: dict[str, float] = {}
        self._job: asyncio.Task[None] | None = None
        self._staging = False  # whether the running job only stages (an upgrade may follow it)
        self._cancel = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self.dispatcher = Dispatcher(self, NonceWindow(server.root / "agent" / "nonces.json"))
        self.connected = asyncio.Event()  # set while a connection is up (tests and tools wait on it)

    # --- lifetime -------------------------------------------------------------------------
    async def run(self) -> None:
        """Recover an interrupted upgrade, then serve until cancelled.

        Raises:
            StoreError: the server directory is unreadable at start.
        """
        log.info(
            "agent_started", serial=self.topics.serial, site=self.topics.site, broker=self.options.broker.url
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                if self.server.journal.load() is not None:
                    self.start_job(lambda upgrader: upgrader.recover(), "recover")
                tasks.create_task(self._connection_loop(), name="connection")
        finally:
            self.outbox.close()

    @property
    def upgrading(self) -> bool:
        """Whether an upgrade (or a recovery) is running."""
        return self._job is not None and not self._job.done()

    @property
    def staging(self) -> bool:
        """Whether the running job is a ``stage`` (download and verify only)."""
        return self.upgrading and self._staging

    def start_job(
        self, work: Callable[[Upgrader], Awaitable[Any]], what: str, *, staging: bool = False
    ) -> None:
        """Run ``work`` with a fresh upgrader in the background (one at a time).

        A job started while a staging job runs waits for it first (it then finds the images
        staged and verified), so two jobs never touch the server at once.

        Raises:
            RuntimeError: an upgrade is already running, or the daemon is not running.
        """
        if (self.upgrading and not self.staging) or self._tasks is None:
            raise RuntimeError("an upgrade is already running, or the agent is not running")
        previous = self._job if self.upgrading else None
        self._staging = staging
        self._cancel = asyncio.Event()
        upgrader = Upgrader(
            self.server,
            self.catalog,
            self.clock,
            on_event=self.on_upgrade_event,
            cancel=self._cancel,
            timing=self.options.timing,
            limits=self.options.limits,
        )
        job = self._guard_job(work(upgrader), what, previous)
        self._job = self._tasks.create_task(job, name=f"job-{what}")

    def cancel_job(self) -> bool:
        """Ask the running upgrade to stop; return whether one was running."""
        if not self.upgrading:
            return False
        self._cancel.set()
        return True

    async def _guard_job(
        self, work: Awaitable[Any], what: str, previous: asyncio.Task[None] | None = None
    ) -> None:
        with structlog.contextvars.bound_contextvars(serial=self.topics.serial, job=what):
            try:
                if previous is not None:
                    try:
                        await asyncio.shield(previous)  # the staging this job follows (it never raises)
                    except BaseException:
                        if isinstance(work, Coroutine):
                            work.close()  # never started: close it rather than leave it un-awaited
                        raise
                await work
            except AllworxError as exc:
                log.warning("upgrade_aborted", reason=exc.reason.value, error=str(exc))
            except Exception:  # reason: a bug in one upgrade must not stop the agent serving
                log.exception("upgrade_crashed")
        self.mark_state_dirty()

    # --- events and state -------------------------------------------------------------------
    def mark_state_dirty(self, *, urgent: bool = True) -> None:
        """Ask for the retained state to be republished: at once when ``urgent``, else within
        ``state_interval`` (a step's intermediate transitions coalesce; a commit, a rollback, a
        result or a command's effect is published without waiting)."""
        self._state_dirty.set()
        if urgent:
            self._state_urgent.set()

    def on_upgrade_event(self, event: dict[str, Any]) -> None:
        """The upgrader's event sink: rate-limit progress, then write the event to the outbox."""
        if threading.get_ident() != self._loop_thread:  # database progress comes from a worker thread
            self._loop.call_soon_threadsafe(self.on_upgrade_event, event)
            return
        if event.get("type") == "progress" and not self._progress_due(event):
            return
        self.record(event)
        kind = event.get("type")
        if kind == "transition":
            self.mark_state_dirty(urgent=event.get("state") in URGENT_STATES)
        elif kind in ("result", "resumed"):
            self.mark_state_dirty()

    def _progress_due(self, event: dict[str, Any]) -> bool:
        key = f"{event.get('phase')}:{event.get('build')}"
        now = self.wall.monotonic()
        last = self._last_progress.get(key)
        if last is not None and now - last < self.options.progress_interval and event.get("percent") != 100:
            return False
        self._last_progress[key] = now
        return True

    def record(self, event: dict[str, Any]) -> int:
        """Write one event to the outbox (durably), wake the publisher, return its sequence number.

        Raises:
            StoreError: the outbox cannot be written.
        """
        document = event_message(event, serial=self.topics.serial, site=self.topics.site, at=self.clock.now())
        seq = int(self.outbox.append(document)["seq"])
        self._events_ready.set()
        return seq

    # --- the connection -----------------------------------------------------------------------
    async def _connection_loop(self) -> None:
        delays = self._backoff()
        while True:
            try:
                await self._session()
            except BrokerError as exc:
                if self.connected.is_set():  # it was up: start the backoff again from the base
                    delays = self._backoff()
                self.connected.clear()
                if exc.protocol_refused and self.protocol is Protocol.V5:
                    log.info("broker_mqtt5_refused", fallback=Protocol.V311.value)
                    self.protocol = Protocol.V311
                    continue
                delay = next(delays)
                log.warning("broker_unavailable", error=str(exc), retry_in=round(delay, 2))
                await self.wall.sleep(delay)

    def _backoff(self) -> Iterator[float]:
        """Reconnect delays with "equal jitter" (each in [d/2, d]): a fleet's retries spread out."""
        return exponential_backoff(self.options.backoff_base, self.options.backoff_cap, jitter=0.5)

    async def _session(self) -> None:
        offline = dump(Availability(serial=self.topics.serial, status="offline"))
        async with connect(
            self.options.broker,
            protocol=self.protocol,
            will=(self.topics.availability, offline),
            identifier=f"allworx-agent-{self.topics.site}-{self.topics.serial}",
        ) as link:
            try:
                await self._serve(link)
            except asyncio.CancelledError:
                link.bound(STOP_SECONDS)
                with contextlib.suppress(BrokerError, TimeoutError):
                    async with asyncio.timeout(STOP_SECONDS):  # a clean stop says offline itself (no will)
                        await link.publish(self.topics.availability, offline, retain=True)
                raise

    async def _serve(self, link: Link) -> None:
        await link.subscribe(self.topics.commands, qos=1)
        await link.publish(
            self.topics.availability,
            dump(Availability(serial=self.topics.serial, status="online")),
            retain=True,
        )
        log.info("broker_connected", protocol=link.protocol.value, pending=len(self.outbox.pending()))
        self.connected.set()
        self.mark_state_dirty()
        self._events_ready.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._pump_events(link), name="events")
                tasks.create_task(self._pump_state(link), name="state")
                tasks.create_task(self.dispatcher.listen(link), name="commands")
        except* BrokerError as group:
            raise _first(group) from None

    async def _pump_events(self, link: Link) -> None:
        while True:
            batch = self.outbox.pending_payloads(limit=BATCH)
            if not batch:
                self._events_ready.clear()
                if self.outbox.cursor_behind:  # quiet for a while: bring the cursor up to date
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.options.cursor_interval):
                            await self._events_ready.wait()
                    if not self._events_ready.is_set():
                        self.outbox.flush()
                    continue
                await self._events_ready.wait()
                continue
            if len(batch) == 1:  # the common case: events come one at a time
                await link.publish(self.topics.events, batch[0][1], qos=1)
            else:
                async with asyncio.TaskGroup() as tasks:  # in flight together; paho keeps their order
                    for _seq, payload in batch:
                        tasks.create_task(link.publish(self.topics.events, payload, qos=1))
            self.outbox.delivered(batch[-1][0])

    async def _pump_state(self, link: Link) -> None:
        """Publish the retained state whenever it changed, at most once per ``state_interval``.

        A change that is not urgent waits up to the interval for the ones after it, and they go as
        one publish of the latest state, read when it is sent: the retained state always ends at the
        latest persisted state, never an older one. An urgent change ends the wait at once.
        """
        while True:
            await self._state_dirty.wait()
            if self.options.state_interval > 0 and not self._state_urgent.is_set():
                await self._until_urgent(self.options.state_interval)
            self._state_dirty.clear()
            self._state_urgent.clear()
            document = state_document(self.server, self.topics.site, self.clock.now())
            await link.publish(self.topics.state, dump(document), qos=1, retain=True)

    async def _until_urgent(self, seconds: float) -> None:
        """Wait ``seconds`` of the wall clock, or less if an urgent state change comes first."""
        pause = asyncio.ensure_future(self.wall.sleep(seconds))
        urgent = asyncio.ensure_future(self._state_urgent.wait())
        try:
            await asyncio.wait((pause, urgent), return_when=asyncio.FIRST_COMPLETED)
        finally:
            pause.cancel()
            urgent.cancel()


def _first(group: BaseExceptionGroup[BrokerError]) -> BrokerError:
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if isinstance(first, BrokerError) else BrokerError(str(first))
