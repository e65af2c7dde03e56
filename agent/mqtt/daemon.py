"""The agent daemon: one server directory, one broker connection, the fleet contract (docs/mqtt.md).

Shape: an outer reconnect loop with capped, jittered backoff; one
:func:`agent.mqtt.connection.connect` per attempt (MQTT 5 first, 3.1.1 once a broker refuses
it); per connection an ``asyncio.TaskGroup`` of named tasks: ``events`` (drains the outbox in
batches), ``state`` (republishes the retained state when it changed) and ``commands`` (verifies and
dispatches operator commands with ``match``). The upgrade itself runs in the daemon's outer
task group, so it carries on while the broker is away.

Invariants:
- every event goes through the on-disk outbox before it is published, so nothing produced while
  disconnected is lost, and events arrive in sequence order after reconnection;
- events are published in batches (:class:`agent.mqtt.messages.EventBatch`), when the
  :class:`agent.mqtt.batching.Batcher` says: at once after an event that ends or decides
  something, else within ``batch_interval`` or at ``batch_size`` events; progress is thinned
  (:class:`agent.mqtt.batching.ProgressThinner`) before it is recorded, and a progress report the
  thinner would drop is dropped before its event is made or leaves the thread that reported it;
- at most one upgrade runs at a time; a second ``upgrade`` is rejected ``UPGRADE_IN_PROGRESS``;
- on start, an upgrade interrupted by a kill or power cut is recovered (``Upgrader.recover``);
- the retained state is republished on every (re)connection and after persisted transitions, at
  most once per ``state_interval`` (the latest state), at once on a result or a command's effect;
- a command's nonce is persisted before the command acts (rule CMD-3);
- a session taken over by another client with the agent's id is counted; a storm of them makes the
  agent connect with a client id of its own for a while, backing off with jitter in between
  (:mod:`agent.mqtt.takeover`), so it keeps answering commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import typing
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from typing import Any

import structlog

from agent.clock import Clock, SystemClock, exponential_backoff
from agent.events import AgentEvent, Progress, ResultEvent, Resumed, Transition, percent_of
from agent.limits import DEFAULT_LIMITS, Limits
from agent.lock import ServerLock
from agent.mqtt.batching import BATCH_INTERVAL, BATCH_SIZE, Batcher, BatchPolicy, ProgressThinner, urgent
from agent.mqtt.commands import NonceWindow
from agent.mqtt.connection import BrokerSettings, Link, Protocol, connect
from agent.mqtt.discovery import Discovery, reachable, values
from agent.mqtt.dispatch import Dispatcher
from agent.mqtt.messages import Availability, StateDocument, dump
from agent.mqtt.outbox import Outbox, encode_batch
from agent.mqtt.report import state_document
from agent.mqtt.takeover import SHORT_SESSION, TakeoverWatch
from agent.mqtt.topics import ServerTopics
from agent.store import ServerDir
from agent.upgrader import Timing, Upgrader
from common.errors import AllworxError, BrokerError, StoreError
from releases.catalog import Catalog, default_catalog

log = structlog.get_logger("agent.mqtt")
BATCH = 32  # events messages (batches) kept in flight at once (each waits for its PUBACK)
STOP_SECONDS = 2.0  # on a stop: the longest wait for the offline PUBACK, and again for the DISCONNECT


def stop_on_sigterm(
    task: asyncio.Task[Any],
    again_after: float = 2.5 * STOP_SECONDS,
    *,
    on_stop: Callable[[], None] | None = None,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM,),
) -> None:
    """Cancel ``task`` on SIGTERM (or each of ``signals``), after calling ``on_stop``; if it still
    runs ``again_after`` seconds later, cancel every task.

    Once is not always enough on Python 3.11: a cancellation that lands just as an awaited
    operation completes (``asyncio.wait_for`` inside aiomqtt) can be lost, leaving the daemon's
    inner tasks running. The second round reaches each of them, so ``finally`` blocks still run.
    """
    loop = asyncio.get_running_loop()

    def cancel(everything: bool) -> None:
        if task.done():
            return
        if not everything and on_stop is not None:
            on_stop()
        for each in asyncio.all_tasks(loop) if everything else {task}:
            each.cancel()
        loop.call_later(again_after, cancel, True)

    for each in signals:
        loop.add_signal_handler(each, cancel, False)


class Observer(typing.Protocol):
    """What watches a running agent (``agent.service.monitor.Monitor`` fits): its broker session,
    its retained-state publishes and every event it records."""

    def session(self, up: bool) -> None: ...  # the broker session came up (or went down)

    def state_published(self) -> None: ...  # a retained state went out

    def event(self, event: AgentEvent) -> None: ...  # an event was recorded


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """How the daemon behaves; times in real seconds."""

    broker: BrokerSettings
    site: str | None = None  # default: the site in identity.json
    progress_interval: float = 1.0  # the least time between two progress events of one job (0%, 100% aside)
    state_interval: float = 0.25  # the least time between two retained-state publishes (the last wins)
    batch_interval: float = BATCH_INTERVAL  # the longest an event waits for others to share its message
    batch_size: int = BATCH_SIZE  # the most events in one message
    cursor_interval: float = 0.0  # the least time between two outbox cursor writes (0: every delivery)
    backoff_base: float = 0.5  # the first reconnect delay
    backoff_cap: float = 30.0  # the longest reconnect delay
    timing: Timing | None = None  # the simulated hardware's durations (reboot, database)
    protocol: Protocol | None = None  # None: MQTT 5 first, 3.1.1 when the broker refuses it
    limits: Limits = DEFAULT_LIMITS  # download limits; bandwidth paces downloads on the injected clock
    lock_server: bool = True  # hold the server directory's lock (agent/lock.py) while running
    ha_prefix: str | None = None  # Home Assistant MQTT discovery under this prefix (None: off)


class Agent:
    """The daemon of one server directory (run with :meth:`run`).

    Everything it writes (outbox, nonces, the upgrade) goes through the server directory's
    :class:`~agent.fileio.Disk`, and everything it verifies through its
    :class:`~agent.verifier.Verifier`: whoever builds the :class:`~agent.store.ServerDir` chooses
    them (durable by default).

    It holds the server directory's lock (:mod:`agent.lock`) from construction until :meth:`close`
    (the end of :meth:`run`), unless ``options.lock_server`` is off.

    Raises:
        ServerBusyError: on construction, when another process (an ``allworx-agent upgrade``, another
            daemon) holds the server directory; nothing was changed.
        StoreError: on construction, when the server directory or its outbox is unreadable, or a
            persisted file holds a value out of range (``STATE_INVALID``); nothing was changed.
    """

    def __init__(
        self,
        server: ServerDir,
        options: AgentOptions,
        *,
        clock: Clock,
        wall: Clock | None = None,
        catalog: Catalog | None = None,
        observer: Observer | None = None,
    ) -> None:
        ident = server.identity()
        self._loop = asyncio.get_running_loop()
        self.server = server
        self.options = options
        self.clock = clock  # the policy clock (simulated in the simulator)
        self.wall = wall or SystemClock()  # real time: network backoff, command expiry, rate limits
        self.catalog = catalog or default_catalog()
        self.topics = ServerTopics(options.site or ident.site, ident.serial)
        self._lock = ServerLock(server.root)
        if options.lock_server:
            self._lock.acquire()  # before the outbox: opening it may cut a torn tail off its log
        try:
            server.check_state()  # fail closed (STATE_INVALID) before the outbox is made
            self.outbox = Outbox(
                server.root / "agent" / "outbox", cursor_every=options.cursor_interval, disk=server.disk
            )
        except BaseException:
            self._lock.release()
            raise
        self.protocol = options.protocol or Protocol.V5
        self._state_dirty = asyncio.Event()
        self._state_urgent = asyncio.Event()
        self._events_ready = asyncio.Event()
        self._loop_thread = threading.get_ident()
        self._thinner = ProgressThinner(options.progress_interval)
        self._batcher = Batcher(
            BatchPolicy(options.batch_interval, options.batch_size),
            pending=self.outbox.pending_count,
            now=self.wall.monotonic(),
        )
        self._job: asyncio.Task[None] | None = None
        self._staging = False  # whether the running job only stages (an upgrade may follow it)
        self._cancel = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        nonces = NonceWindow(server.root / "agent" / "nonces.json", disk=server.disk)
        self.dispatcher = Dispatcher(self, nonces)
        self.connected = asyncio.Event()  # set while a connection is up (tests and tools wait on it)
        self.takeovers = TakeoverWatch(f"allworx-agent-{self.topics.site}-{self.topics.serial}")
        self.observer = observer
        self._session_task: asyncio.Future[None] | None = None
        self._reconnect = False  # the running session is being ended to connect with new settings
        self._connected_at = 0.0  # wall monotonic time the broker accepted the current (or last) session
        self._linked = False  # whether the broker accepted the session that just ended
        self._link_taken_over = False  # whether the broker said the last session was taken over

    # --- lifetime -------------------------------------------------------------------------
    async def run(self) -> None:
        """Recover an interrupted upgrade, then serve until cancelled; then :meth:`close`.

        Raises:
            StoreError: the server directory is unreadable at start, or a persisted file holds a
                value out of range (``STATE_INVALID``): the daemon does not start.
        """
        try:
            interrupted = self.server.check_state() is not None  # fail closed before anything runs
            log.info(
                "agent_started",
                serial=self.topics.serial,
                site=self.topics.site,
                broker=self.options.broker.url,
            )
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                if interrupted:
                    self.start_job(lambda upgrader: upgrader.recover(), "recover")
                tasks.create_task(self._connection_loop(), name="connection")
        finally:
            self.close()

    def close(self) -> None:
        """Close the outbox and release the server directory's lock (idempotent; :meth:`run` ends so)."""
        self.outbox.close()
        self._lock.release()

    @property
    def upgrading(self) -> bool:
        """Whether an upgrade (or a recovery) is running."""
        return self._job is not None and not self._job.done()

    @property
    def current_job(self) -> str | None:
        """The running job's name (``upgrade-...``, ``stage-...``, ``recover``), if one runs."""
        if self._job is None or self._job.done():
            return None
        return self._job.get_name().removeprefix("job-")

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
            progress_due=self.progress_due,
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

    def progress_due(self, build: str, done: int, total: int) -> bool:
        """The upgrader's check before it makes a progress event (from any thread): whether the
        thinner would keep one of ``build``, ``done`` of ``total``, now (:meth:`on_upgrade_event` decides)."""
        return self._thinner.due(build, percent_of(done, total), self.wall.monotonic())

    def on_upgrade_event(self, event: AgentEvent) -> None:
        """The upgrader's event sink: thin progress, then write the event to the outbox."""
        if threading.get_ident() != self._loop_thread:  # database progress comes from a worker thread
            self._loop.call_soon_threadsafe(self.on_upgrade_event, event)
            return
        if isinstance(event, Progress) and not self._thinner.keep(event, self.wall.monotonic()):
            return
        self.record(event)
        if isinstance(event, Transition | Resumed):
            self.mark_state_dirty(urgent=False)
        elif isinstance(event, ResultEvent):
            self.mark_state_dirty()

    def record(self, event: AgentEvent) -> int:
        """Write one event to the outbox (durably), wake the publisher when its batch opens or is
        due, return its sequence number.

        Raises:
            StoreError: the outbox cannot be written.
        """
        seq = self.outbox.add(event, self.clock.now())
        if self._batcher.add(self.wall.monotonic(), urgent=urgent(event)):
            self._events_ready.set()
        if self.observer is not None:
            self.observer.event(event)
        return seq

    # --- the connection -----------------------------------------------------------------------
    def reconnect(self, broker: BrokerSettings) -> None:
        """Use ``broker`` from now on: the session (if any) ends and a new one opens at once."""
        self.options = replace(self.options, broker=broker)
        if self._session_task is not None and not self._session_task.done():
            self._reconnect = True
            self._session_task.cancel()

    def _session_down(self) -> None:
        if self.connected.is_set() and self.observer is not None:
            self.observer.session(False)
        self.connected.clear()

    async def _connection_loop(self) -> None:
        delays = self._backoff()
        while True:
            self._session_task = asyncio.ensure_future(self._session())
            try:
                await self._session_task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not self._reconnect or (current is not None and current.cancelling()):
                    raise
                self._reconnect = False
                self._session_down()
                log.info("broker_reconnecting", broker=self.options.broker.url)
                delays = self._backoff()
            except BrokerError as exc:
                linked, self._linked = self._linked, False
                self._session_down()
                # the broker had accepted the session (even if it ended before the agent was serving):
                # start the backoff again from the base, unless another client took the session over
                # (then keep backing off: the client id is contested)
                if linked and not self._taken_over(exc):
                    delays = self._backoff()
                if exc.protocol_refused and self.protocol is Protocol.V5:
                    log.info("broker_mqtt5_refused", fallback=Protocol.V311.value)
                    self.protocol = Protocol.V311
                    continue
                delay = next(delays)
                log.warning("broker_unavailable", error=str(exc), retry_in=round(delay, 2))
                await self.wall.sleep(delay)

    def _taken_over(self, exc: BrokerError) -> bool:
        """Whether the session just lost was taken over; count it, and start a storm's own id when
        they come too often (:mod:`agent.mqtt.takeover`)."""
        now = self.wall.monotonic()
        short = now - self._connected_at < SHORT_SESSION
        if not (self._link_taken_over or short) or exc.protocol_refused:
            return False
        watch = self.takeovers
        if watch.taken_over(now):
            log.warning(
                "session_takeover_storm",
                serial=self.topics.serial,
                takeovers=watch.takeovers,
                storms=watch.storms,
                client_id=watch.identifier,
                usual_client_id=watch.usual,
            )
        else:
            log.info("session_taken_over", takeovers=watch.takeovers, client_id=watch.identifier)
        return True

    def _backoff(self) -> Iterator[float]:
        """Reconnect delays with "equal jitter" (each in [d/2, d]): a fleet's retries spread out."""
        return exponential_backoff(self.options.backoff_base, self.options.backoff_cap, jitter=0.5)

    async def _session(self) -> None:
        offline = Availability("offline").payload()
        self._link_taken_over = False
        async with connect(
            self.options.broker,
            protocol=self.protocol,
            will=(self.topics.availability, offline),
            identifier=self.takeovers.reconnecting(self.wall.monotonic()),
        ) as link:
            self._linked, self._connected_at = True, self.wall.monotonic()  # the broker accepted it
            try:
                await self._serve(link)
            except asyncio.CancelledError:
                link.bound(STOP_SECONDS)
                with contextlib.suppress(BrokerError, TimeoutError):
                    async with asyncio.timeout(STOP_SECONDS):  # a clean stop says offline itself (no will)
                        await link.publish(self.topics.availability, offline, retain=True)
                raise
            except BrokerError:
                self._link_taken_over = link.taken_over
                raise

    async def _serve(self, link: Link) -> None:
        await link.subscribe(self.topics.commands, qos=1)
        await link.publish(
            self.topics.availability,
            Availability("online").payload(),
            retain=True,
        )
        log.info("broker_connected", protocol=link.protocol.value, pending=self.outbox.pending_count)
        self.connected.set()
        if self.observer is not None:
            self.observer.session(True)
        if self.options.ha_prefix is not None:
            await self._announce(link, self.options.ha_prefix)
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
        """Publish the recorded events as batches whenever the batcher says they are due."""
        while True:
            self._events_ready.clear()
            wait = self._batcher.wait(self.wall.monotonic())
            if self.outbox.pending_count > self._batcher.count:  # sent before, never acknowledged
                wait = 0.0
            if wait is None:
                if self.outbox.cursor_behind:  # quiet for a while: bring the cursor up to date
                    if not await self._woken(self.options.cursor_interval):
                        self.outbox.flush()
                    continue
                await self._events_ready.wait()
                continue
            if wait:
                await self._woken(wait)
                continue
            await self._publish_pending(link)

    async def _woken(self, seconds: float) -> bool:
        """Wait for the publisher to be woken, at most ``seconds`` of real time; return whether it was."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._events_ready.wait()
        return self._events_ready.is_set()

    async def _publish_pending(self, link: Link) -> None:
        """Publish up to :data:`BATCH` batches of the undelivered events, in order, and record them
        delivered once every one is acknowledged."""
        size = self.options.batch_size
        pending = self.outbox.pending_payloads(limit=BATCH * size)
        self._batcher.sent(len(pending))
        if not pending:
            return
        payloads = [
            encode_batch(self.topics.serial, self.topics.site, [line for _seq, line in pending[i : i + size]])
            for i in range(0, len(pending), size)
        ]
        if len(payloads) == 1:  # the common case
            await link.publish(self.topics.events, payloads[0], qos=1)
        else:
            async with asyncio.TaskGroup() as tasks:  # in flight together; paho keeps their order
                for payload in payloads:
                    tasks.create_task(link.publish(self.topics.events, payload, qos=1))
        self.outbox.delivered(pending[-1][0])

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
            try:
                document = state_document(self.server, self.topics.site, self.clock.now())
            except StoreError as exc:  # the last good state stays retained; commands say why
                log.warning("state_unreadable", reason=exc.reason.value, error=str(exc))
                continue
            await link.publish(self.topics.state, dump(document), qos=1, retain=True)
            if self.options.ha_prefix is not None:
                await self._ha_values(link, document)
            if self.observer is not None:
                self.observer.state_published()

    async def _announce(self, link: Link, prefix: str) -> None:
        """Publish this server's Home Assistant discovery configs (retained)."""
        model = self.server.identity().model
        for topic, config in Discovery(self.topics, prefix).configs(model):
            await link.publish(topic, json.dumps(config).encode(), qos=1, retain=True)

    async def _ha_values(self, link: Link, document: StateDocument) -> None:
        """Publish the values Home Assistant's entities read (retained), beside the state."""
        now = self.clock.now()
        try:
            newest = reachable(self.catalog, self.server, now)
        except StoreError:
            newest = document.release
        found = values(document, newest, now=now)
        topic = Discovery(self.topics, self.options.ha_prefix or "").values_topic
        await link.publish(topic, json.dumps(found).encode(), qos=1, retain=True)

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
