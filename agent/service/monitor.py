"""What a running agent tells its service manager and its health listener.

The daemon hands the monitor every event it records and every change of its broker session; the
monitor turns them into Prometheus counters, the ``/healthz`` document and the ``STATUS=`` line
``systemctl status`` shows. It reads the clock it is given, so tests drive it without waiting.

Invariant: the monitor only observes; nothing it does can change or delay an upgrade.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.clock import Clock
from agent.events import AgentEvent, CommandAnswered, Refused, Transition
from agent.machine import State
from agent.service.health import Health, Metrics
from agent.service.notify import Notifier

ENDS = frozenset({State.COMMITTED, State.ROLLED_BACK})


@dataclass(frozen=True, slots=True)
class Probe:
    """What the monitor reads of the agent when asked: the outbox, the journal, the job."""

    outbox_depth: Callable[[], int]
    journal_state: Callable[[], str | None]
    current_job: Callable[[], str | None]


class Monitor:
    """Counts what the agent does and reports it to systemd and the health listener."""

    def __init__(self, clock: Clock, probe: Probe, notifier: Notifier | None = None) -> None:
        self.clock = clock
        self.probe = probe
        self.notifier = notifier or Notifier({})
        self.metrics = Metrics()
        self.connected = False
        self.ready = False
        self._sessions = 0
        self._down_since: float | None = clock.monotonic()
        self._last_state: float | None = None
        self._journal: tuple[str | None, float] = (None, clock.monotonic())
        self._step_started: dict[str, float] = {}
        self._upgrading: str | None = None  # "7.4 -> 7.5" while a step runs

    # --- what the daemon reports -------------------------------------------------------------
    def session(self, up: bool) -> None:
        """The broker session came up (``up``) or went down."""
        self.connected = up
        if up:
            self._sessions += 1
            if self._sessions > 1:
                self.metrics.reconnects.inc()
            self._down_since = None
        elif self._down_since is None:
            self._down_since = self.clock.monotonic()
        self.update_status()

    def state_published(self) -> None:
        """A retained state went out: the first one after start makes the service ready."""
        self._last_state = self.clock.monotonic()
        if not self.ready:
            self.ready = True
            self.notifier.ready(self.status_line())
        else:
            self.update_status()

    def event(self, event: AgentEvent) -> None:
        """Count one recorded event."""
        match event:
            case Transition(state=state, job_id=job, release=release):
                self._transition(state, job, release)
            case Refused(reason=reason):
                self.metrics.refusals.labels(reason=reason).inc()
            case CommandAnswered(command=name, status=status, reason=reason):
                self.metrics.commands.labels(name=name, verdict=status).inc()
                if reason is not None:  # refused before any job started (a job's refusal is Refused)
                    self.metrics.refusals.labels(reason=reason).inc()
            case _:
                pass
        self.metrics.outbox_depth.set(self.probe.outbox_depth())
        self.update_status()

    def _transition(self, state: State, job: str, release: str) -> None:
        now = self.clock.monotonic()
        started = self._step_started.setdefault(job, now)
        self._upgrading = None if state in ENDS else f"upgrading to {release}"
        if state in ENDS:  # a step ends committed or rolled back (a resumed one too)
            self.metrics.steps.labels(outcome=str(state)).inc()
            self.metrics.step_seconds.observe(now - started)
            del self._step_started[job]
        if state is State.ROLLED_BACK:
            self.metrics.rollbacks.inc()

    # --- what others read -------------------------------------------------------------------------
    def status_line(self) -> str:
        """The one line ``systemctl status`` shows: connected or not, idle or upgrading, outbox depth."""
        link = "connected" if self.connected else "broker unreachable"
        work = self._upgrading or ("upgrading" if self.probe.current_job() else "idle")
        return f"{link}, {work}, outbox {self.probe.outbox_depth()}"

    def update_status(self) -> None:
        """Send the status line to systemd if it changed (only once ready)."""
        if self.ready:
            self.notifier.status(self.status_line())

    def health(self) -> Health:
        """The ``/healthz`` facts now."""
        now = self.clock.monotonic()
        journal = self.probe.journal_state()
        if journal != self._journal[0]:
            self._journal = (journal, now)
        return Health(
            broker_connected=self.connected,
            broker_down_seconds=0.0 if self._down_since is None else now - self._down_since,
            seconds_since_state=None if self._last_state is None else now - self._last_state,
            outbox_depth=self.probe.outbox_depth(),
            journal_state=journal,
            journal_state_seconds=now - self._journal[1],
            current_job=self.probe.current_job(),
        )
