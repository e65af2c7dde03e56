"""The daemon as a system service: systemd's notifications, the watchdog, health and metrics,
SIGTERM/SIGINT and SIGHUP (``allworx-agent run``).

- READY=1 once the broker session is up and the first retained state is out; STATUS= lines a
  person reads in ``systemctl status``; WATCHDOG=1 every half ``WATCHDOG_USEC`` from the event loop
  (a wedged loop stops pinging and systemd restarts the service); STOPPING=1 on SIGTERM or SIGINT.
- SIGTERM and SIGINT stop the daemon: the current state stays persisted (an upgrade resumes from
  its journal at the next start), ``offline`` is published, and it exits 0.
- SIGHUP re-reads the configuration: a new log level or format applies at once, new broker
  settings reconnect; an upgrade in progress carries on. A configuration that does not load is
  logged and the running one kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from agent.clock import SystemClock
from agent.logs import configure_service_logging
from agent.mqtt.connection import BrokerSettings
from agent.mqtt.daemon import Agent, stop_on_sigterm
from agent.service.health import HealthServer
from agent.service.monitor import Monitor, Probe
from agent.service.notify import Notifier

log = structlog.get_logger("agent.service")


@dataclass(frozen=True, slots=True)
class Reload:
    """What a re-read configuration sets that applies without a restart."""

    log_level: str
    log_format: str
    broker: BrokerSettings


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """How the daemon runs as a service."""

    health: tuple[str, int] | None = None  # where /healthz and /metrics listen (None: nowhere)
    health_down_after: float = 60.0  # seconds of broker outage before /healthz says 503
    reload: Callable[[], Reload | None] | None = None  # re-read the configuration (None: it failed)


def monitor_for(notifier: Notifier, agent: Callable[[], Agent | None]) -> Monitor:
    """A monitor reading the agent ``agent()`` returns (None before it exists)."""

    def depth() -> int:
        running = agent()
        return running.outbox.pending_count if running is not None else 0

    def journal() -> str | None:
        running = agent()
        job = running.server.journal.load() if running is not None else None
        return str(job.state) if job is not None else None

    def job() -> str | None:
        running = agent()
        return running.current_job if running is not None else None

    return Monitor(SystemClock(), Probe(outbox_depth=depth, journal_state=journal, current_job=job), notifier)


async def serve(agent: Agent, monitor: Monitor, options: ServiceOptions) -> None:
    """Run ``agent`` as a service until SIGTERM or SIGINT.

    Raises:
        OSError: the health listener's address cannot be bound.
    """
    task = asyncio.current_task()
    if task is not None:
        stop_on_sigterm(task, on_stop=monitor.notifier.stopping, signals=(signal.SIGTERM, signal.SIGINT))
    loop = asyncio.get_running_loop()
    if options.reload is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload, agent, monitor, options.reload)
    health = None
    if options.health is not None:
        health = HealthServer(monitor.health, monitor.metrics, down_after=options.health_down_after)
        await health.start(*options.health)
    pings = asyncio.ensure_future(_watchdog(monitor.notifier))
    try:
        await agent.run()
    finally:
        pings.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pings
        if health is not None:
            await health.close()


async def _watchdog(notifier: Notifier) -> None:
    """Ping systemd's watchdog from the event loop every half ``WATCHDOG_USEC``."""
    if notifier.watchdog_interval is None:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(notifier.watchdog_interval)


def _reload(agent: Agent, monitor: Monitor, read: Callable[[], Reload | None]) -> None:
    monitor.notifier.reloading()
    try:
        new = read()
        if new is None:
            return
        log.info("config_reloaded", log_level=new.log_level, broker=new.broker.url)  # at the old level
        configure_service_logging(new.log_level, new.log_format)
        if new.broker != agent.options.broker:
            agent.reconnect(new.broker)
    finally:
        monitor.notifier.send("READY=1")
        monitor.update_status()
