"""The daemon thins progress before it costs anything: a report its thinner would drop never becomes
an event (nor leaves the database's worker thread), and each phase's 100% is always recorded."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.clock import SimClock
from agent.events import AgentEvent, Progress, ResultEvent
from agent.limits import Limits
from agent.mqtt.connection import BrokerSettings
from agent.mqtt.daemon import Agent, AgentOptions
from simulator.server import ServerSpec, create_server

NOW = datetime(2010, 1, 1, tzinfo=UTC)
NO_BROKER = "mqtt://127.0.0.1:1"  # nothing listens: the upgrade runs while the daemon keeps reconnecting


class Ended:
    """An observer of the daemon: set once a request's result is recorded."""

    def __init__(self) -> None:
        self.result = asyncio.Event()

    def session(self, up: bool) -> None:
        """No broker here."""

    def state_published(self) -> None:
        """No broker here."""

    def event(self, event: AgentEvent) -> None:
        """A recorded event: the result ends the request."""
        if isinstance(event, ResultEvent):
            self.result.set()


async def _upgrade_offline(agent: Agent, ended: Ended, target: str) -> None:
    """Run the daemon, have it upgrade to ``target`` (no broker needed), and stop it."""
    running = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(60):
            while True:
                try:
                    agent.start_job(lambda upgrader: upgrader.upgrade(target), "upgrade-test")
                    break
                except RuntimeError:  # not serving yet
                    await asyncio.sleep(0.01)
            await ended.result.wait()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_progress_the_thinner_drops_is_never_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download reporting every 4 KiB with an hour between kept reports: the events made are exactly
    those recorded (the first report and 100%), far fewer than the reports; the database's 100% too."""
    server = create_server(tmp_path / "s", ServerSpec(model="6x", release="7.0", users=5, call_log_rows=50))
    made: Counter[str] = Counter()
    for phase in ("download", "database"):
        real = getattr(Progress, phase).__func__

        def counting(cls: type[Progress], build: str, done: int, total: int, *, real: Any = real) -> Progress:
            event: Progress = real(cls, build, done, total)
            made[event.phase] += 1
            return event

        monkeypatch.setattr(Progress, phase, classmethod(counting))
    limits = Limits(chunk_size=4096, progress_interval=4096, bandwidth=None)
    options = AgentOptions(broker=BrokerSettings(url=NO_BROKER), progress_interval=3600.0, limits=limits)
    ended = Ended()
    agent = Agent(server, options, clock=SimClock(NOW, speed=float("inf")), observer=ended)
    asked: Counter[str] = Counter()
    due = agent.progress_due

    def counting_due(build: str, done: int, total: int) -> bool:
        asked[build] += 1
        return due(build, done, total)

    agent.progress_due = counting_due  # type: ignore[method-assign]  # reason: counts the upgrader's questions
    await _upgrade_offline(agent, ended, "7.1")
    recorded = [r.event for r in agent.outbox.pending() if isinstance(r.event, Progress)]
    downloads = [e.percent for e in recorded if e.phase == "download"]
    databases = [e.percent for e in recorded if e.phase == "database"]
    assert made["download"] == len(downloads)
    assert made["database"] == len(databases)
    assert sum(asked.values()) > 10 * len(recorded)
    assert downloads[-1] == 100
    assert databases[-1] == 100
    assert len(downloads) <= 2
