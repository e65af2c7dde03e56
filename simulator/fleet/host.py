"""Hosting many agents in one event loop, and spreading a fleet over worker processes.

Each virtual server gets the real daemon (:class:`agent.mqtt.daemon.Agent`) with its own MQTT
session; a host process runs hundreds or thousands of them in one ``asyncio`` loop. Every agent of
a fleet reads one simulated clock: :func:`anchored_clock` derives it from the fleet's start
instant, its speed and a wall-clock epoch, so agents in different processes (or on different
hosts with synchronised clocks) and the campaign controller agree on the simulated time.

Invariants: a host never writes outside its servers' folders; SIGTERM stops its agents cleanly
(each publishes ``offline`` itself); the workers are the caller's children and are stopped by it,
and on Linux each worker is sent SIGTERM by the kernel when its parent ends, even by SIGKILL
(``PR_SET_PDEATHSIG``), so no worker outlives the command that started it. Inside
:func:`sigterm_unwinds`, SIGTERM unwinds the caller like Ctrl-C (``finally`` blocks and context
managers run, :meth:`Workers.stop` among them) and the process then exits 143.

Shortcuts: a host whose :attr:`HostConfig.fast` is true (the default) builds its agents' server
directories with the simulation's :class:`~simulator.fleet.disk.FastDisk` (no fsync: no OS crash
or power cut is simulated, docs/power-cuts.md) and one
:class:`~simulator.fleet.verifier.RememberingVerifier` shared by all of them (its servers share
their key files, manifests and database contents), and has them run their blocking work on local
files (preparing a database, copying a large image) on the loop (:func:`run_inline`): thousands of
agents share the process's CPU, so a worker thread adds no CPU, and each hand-off costs 50-110 us
and a busy loop trading the GIL with it; the loop is blocked for one preparation at a time (a few
milliseconds for the simulation's databases). With ``fast`` false they get the agent's own durable disk
and verifier and its worker threads, as on a real server. Either way, while a host runs its agents
the process's garbage collector runs less often (:func:`collector_for_hosting`): that changes no
behaviour, only how often a process of thousands of agents walks their objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from agent.clock import SimClock
from agent.fileio import DURABLE
from agent.limits import DEFAULT_LIMITS, Limits
from agent.mqtt.connection import BrokerSettings, Link, Protocol
from agent.mqtt.daemon import Agent, AgentOptions, stop_on_sigterm
from agent.mqtt.messages import Availability, dump
from agent.mqtt.report import state_document
from agent.mqtt.topics import ServerTopics
from agent.store import ServerDir
from agent.upgrader import Timing
from agent.verifier import DURABLE_VERIFIER
from releases.catalog import default_catalog
from simulator.fleet.disk import FastDisk
from simulator.fleet.verifier import RememberingVerifier

P = ParamSpec("P")
T = TypeVar("T")


async def run_inline(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """An :class:`agent.store.Offload` that calls ``func`` here, on the event loop's thread.

    Raises:
        Exception: whatever ``func`` raised, unchanged.
    """
    return func(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class HostConfig:
    """How a host runs its agents."""

    broker: str  # mqtt://host:port
    start: datetime  # the simulated instant at ``epoch``
    speed: float  # simulated seconds per real second
    epoch: float  # time.time() when the simulated clock read ``start``
    protocol: str | None = None  # "5", "3.1.1", or None (MQTT 5, falling back)
    keepalive: int = 60  # seconds
    progress_interval: float = 2.0  # real seconds between two progress events of one phase
    state_interval: float = 2.0  # real seconds between two retained-state publishes of one agent
    batch_interval: float = 2.0  # real seconds an event may wait for others to share its message
    cursor_interval: float = 2.0  # real seconds between two outbox cursor writes of one agent
    limits: Limits = DEFAULT_LIMITS  # each agent's download limits (the link's bandwidth, on the sim clock)
    fast: bool = True  # the simulation's disk, verifier and inline work (False: the agent's own)


HOST_GC_THRESHOLDS = (50_000, 20, 100)  # collections of a process hosting agents (collector_for_hosting)


def anchored_clock(start: datetime, speed: float, epoch: float) -> SimClock:
    """The fleet's simulated clock, as read in this process now."""
    if speed == float("inf"):
        return SimClock(start, speed)
    return SimClock(start + timedelta(seconds=max(0.0, time.time() - epoch) * speed), speed)


def host_servers(dirs: Sequence[Path], config: HostConfig) -> list[ServerDir]:
    """The server directories a host's agents run on, with the disk, verifier and offload
    ``config.fast`` chooses (see the module docstring)."""
    if config.fast:
        disk, verifier = FastDisk(), RememberingVerifier()
        return [ServerDir(path, disk=disk, verifier=verifier, offload=run_inline) for path in dirs]
    return [ServerDir(path, disk=DURABLE, verifier=DURABLE_VERIFIER) for path in dirs]


def agent_options(config: HostConfig) -> AgentOptions:
    """The options every agent of a host runs with: the host's intervals, limits and protocol."""
    return AgentOptions(
        broker=BrokerSettings(
            url=config.broker, keepalive=config.keepalive, timeout=60.0, connect_timeout=30.0
        ),
        progress_interval=config.progress_interval,
        state_interval=config.state_interval,
        batch_interval=config.batch_interval,
        cursor_interval=config.cursor_interval,
        timing=Timing(),
        protocol=Protocol(config.protocol) if config.protocol else None,
        limits=config.limits,
        lock_server=False,  # the fleet folder is held (``in_use``); a lock each would cost a descriptor each
    )


async def host_agents(
    dirs: Sequence[Path], config: HostConfig, ready: Callable[[], None] | None = None
) -> None:
    """Run one agent per server folder in this loop until cancelled; call ``ready`` once all are connected.

    The operator side subscribes to wildcards only after ``ready`` (amqtt sends every retained
    message matching *any* subscription to each connecting client, and fails when subscriptions
    change meanwhile, so the agents connect first).

    ``config.fast`` chooses the disk, verifier and offload handed to the agents
    (:func:`host_servers`). Meanwhile the whole process (the controller and an embedded broker
    too, when they share it) collects garbage as :func:`collector_for_hosting` says.

    Raises:
        StoreError: a server folder is unreadable.
    """
    clock = anchored_clock(config.start, config.speed, config.epoch)
    catalog = default_catalog()
    options = agent_options(config)
    agents = [Agent(server, options, clock=clock, catalog=catalog) for server in host_servers(dirs, config)]
    with collector_for_hosting():
        async with asyncio.TaskGroup() as tasks:
            for agent in agents:
                tasks.create_task(agent.run(), name=f"agent-{agent.topics.serial}")
            for agent in agents:
                await agent.connected.wait()
            if ready is not None:
                ready()


@contextlib.contextmanager
def collector_for_hosting() -> Iterator[None]:
    """Run the garbage collector with :data:`HOST_GC_THRESHOLDS` meanwhile, then as before.

    A host process holds thousands of agents' long-lived objects. With Python's default thresholds
    (700, 10, 10) its young collections run every 700 allocations and promote the objects of every
    step in flight (an event batch waits 2 s, a PUBACK a round trip) into the older generations,
    whose collections then walk the whole process's objects again and again. A real agent, alone
    in its process, keeps the defaults. Hosts that overlap in one process share the setting: the
    first to enter sets it, the last to leave puts back what the first found.
    """
    if not _HOSTING:
        _HOSTING.append(gc.get_threshold())
        gc.set_threshold(*HOST_GC_THRESHOLDS)
    _HOSTING.append(HOST_GC_THRESHOLDS)
    try:
        yield
    finally:
        _HOSTING.pop()
        if len(_HOSTING) == 1:
            gc.set_threshold(*_HOSTING.pop())


_HOSTING: list[tuple[int, ...]] = []  # the thresholds found by the first host, then one entry a host


def quiet_logs(*, once: bool = False) -> None:
    """Log errors only: a fleet's thousands of agents report on MQTT, not on a terminal.

    ``once``: the process configures its logging here and never again (a host's worker), so each
    logger is put together on its first use rather than at every call (a log call the level drops
    then costs next to nothing). Not where logging may be configured again later (a command run in
    a test that captures logs): a logger already used would keep this configuration.
    """
    import logging

    import structlog

    from agent.logs import configure_logging

    configure_logging()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR), cache_logger_on_first_use=once
    )
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    logging.getLogger("transitions").setLevel(logging.CRITICAL)


TERMINATED = 128 + signal.SIGTERM  # the exit code after SIGTERM, as a shell reports a process it ended


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Handle SIGTERM as Ctrl-C in this (main) thread, then exit with :data:`TERMINATED`.

    Inside ``asyncio.run`` the signal goes to asyncio's Ctrl-C handler (the main task is cancelled,
    its context managers run); elsewhere it raises :class:`KeyboardInterrupt`. The
    :class:`KeyboardInterrupt` it causes is swallowed on the way out.

    Raises:
        SystemExit: with :data:`TERMINATED`, once the block has unwound after SIGTERM.
    """
    terminated = False

    def on_sigterm(_signum: int, frame: Any) -> None:
        nonlocal terminated
        terminated = True
        interrupt = signal.getsignal(signal.SIGINT)
        if callable(interrupt):
            interrupt(signal.SIGINT, frame)  # asyncio.run's handler, or default_int_handler
        else:  # Ctrl-C ignored in this process (started in the background): unwind all the same
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except KeyboardInterrupt:
        if not terminated:
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if terminated:
        raise SystemExit(TERMINATED)


def die_with_parent(parent: int | None) -> None:
    """Have the kernel send this process SIGTERM when ``parent`` ends (Linux only; elsewhere nothing).

    The request follows the parent *thread* that started this process: :meth:`Workers.start`
    must run in a thread that lives as long as the workers (the main thread).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if parent is not None and os.getppid() != parent:  # it ended before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _worker(dirs: list[str], config: HostConfig, ready: Any) -> None:
    """Worker-process entry: host ``dirs`` until SIGTERM (its own, or its parent's end)."""
    parent = multiprocessing.parent_process()
    die_with_parent(parent.pid if parent is not None else None)
    quiet_logs(once=True)  # this process only hosts agents: nothing configures logging again

    async def main() -> None:
        task = asyncio.current_task()
        if task is not None:
            stop_on_sigterm(task)
        await host_agents([Path(d) for d in dirs], config, ready.set)

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(main())


class Workers:
    """Worker processes sharing a fleet's agents (``with Workers(dirs, config, count):``)."""

    def __init__(self, dirs: Sequence[Path], config: HostConfig, count: int) -> None:
        count = max(1, min(count, len(dirs) or 1))
        self.shares = [[str(d) for d in dirs[i::count]] for i in range(count)]
        self.config = config
        self.processes: list[BaseProcess] = []
        self.ready: list[Any] = []

    def start(self) -> None:
        """Start the workers (spawned: nothing of this process's loop leaks into them)."""
        context = multiprocessing.get_context("spawn")
        for share in self.shares:
            if share:
                ready = context.Event()
                self.ready.append(ready)
                process = context.Process(target=_worker, args=(share, self.config, ready), daemon=True)
                process.start()
                self.processes.append(process)

    def wait_ready(self, timeout: float) -> bool:
        """Block until every worker's agents are connected (or ``timeout`` seconds passed)."""
        deadline = time.monotonic() + timeout
        return all(event.wait(max(0.0, deadline - time.monotonic())) for event in self.ready)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers (SIGTERM, then SIGKILL after ``timeout``)."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        self.processes.clear()

    def __enter__(self) -> Workers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def publish_ghosts(link: Link, dirs: Sequence[Path], now: datetime) -> None:
    """Publish, for powered-off servers, what the broker would retain from before they went down.

    A real server that is off left its retained ``state`` and its last will (``offline``); a
    simulated one that never ran has neither, so the simulation publishes both on its behalf.

    Raises:
        BrokerError: the publish failed.
    """
    for path in dirs:
        server = ServerDir(path)
        ident = server.identity()
        topics = ServerTopics(ident.site, ident.serial)
        await link.publish(topics.state, dump(state_document(server, ident.site, now)), qos=1, retain=True)
        await link.publish(topics.availability, Availability("offline").payload(), qos=1, retain=True)
