"""When events go out, and which progress events are worth sending: pure, on an injected clock.

The daemon records every event in the outbox at once (durably) and publishes the recorded ones as
batches (:class:`agent.mqtt.messages.EventBatch`). :class:`Batcher` decides when the open batch is
due; :class:`ProgressThinner` drops progress events before they are recorded. Neither sleeps, reads
a clock or does I/O: the caller passes ``now`` (monotonic seconds).

Invariants:
- a batch is due at once when it holds an event that ends or decides something (:func:`urgent`),
  when it holds ``size`` events, or when its oldest event has waited ``interval`` seconds; never
  later than that;
- the events left of a batch not sent whole keep its deadline and its urgency (none is younger);
- of a job's progress events, 0% and 100% are always kept, any other at most one per ``interval``
  seconds after the last one kept; :meth:`ProgressThinner.due` answers, before an event is made,
  what :meth:`ProgressThinner.keep` would answer for it at the same instant.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.events import AgentEvent, CommandAnswered, Progress, Refused, ResultEvent, Staged, Transition
from agent.machine import State

BATCH_INTERVAL = 0.25  # seconds an event may wait for others to share its message
BATCH_SIZE = 64  # events in one message at most
PROGRESS_INTERVAL = 1.0  # seconds between two progress events of one job (0% and 100% aside)
_DECIDING_STATES = frozenset({State.ROLLING_BACK, State.ROLLED_BACK})


def urgent(event: AgentEvent) -> bool:
    """Whether ``event`` ends or decides something (a result, a refusal, a stage's end, a command's
    answer, a rollback): the batch holding it goes out at once."""
    if isinstance(event, Transition):
        return event.state in _DECIDING_STATES
    return isinstance(event, ResultEvent | Refused | Staged | CommandAnswered)


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How long an event may wait for company, and how many share one message."""

    interval: float = BATCH_INTERVAL
    size: int = BATCH_SIZE

    def __post_init__(self) -> None:
        """Check the bounds.

        Raises:
            ValueError: ``interval`` is negative or ``size`` is below 1.
        """
        if self.interval < 0 or self.size < 1:
            raise ValueError("the batch interval must be >= 0 and its size >= 1")


class Batcher:
    """The open batch: the recorded events not yet handed to the publisher.

    ``pending`` events recorded before it was made (an outbox reopened with undelivered events)
    are due at once.
    """

    def __init__(self, policy: BatchPolicy, *, pending: int = 0, now: float = 0.0) -> None:
        self.policy = policy
        self._count = pending
        self._since: float | None = now if pending else None  # when the oldest open event was recorded
        self._urgent = pending > 0

    @property
    def count(self) -> int:
        """How many events wait."""
        return self._count

    def add(self, now: float, *, urgent: bool = False) -> bool:
        """Record one event at ``now``; return whether the publisher must be woken (the batch just
        opened, so its timer starts, or it just became due)."""
        opened = self._count == 0
        if opened:
            self._since = now
        self._count += 1
        self._urgent = self._urgent or urgent
        return opened or self.wait(now) == 0.0

    def wait(self, now: float) -> float | None:
        """Seconds until the open batch is due at ``now``: 0.0 when it is due, None when it is empty."""
        if self._count == 0 or self._since is None:
            return None
        if self._urgent or self._count >= self.policy.size:
            return 0.0
        return max(0.0, self._since + self.policy.interval - now)

    def sent(self, count: int) -> None:
        """``count`` of the waiting events (the oldest) were handed to the publisher."""
        self._count = max(0, self._count - count)
        if self._count == 0:
            self._since = None
            self._urgent = False


class ProgressThinner:
    """Which progress events of each job are kept: 0%, 100%, and at most one per ``interval`` between."""

    def __init__(self, interval: float = PROGRESS_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}  # job (its build) -> when its last progress was kept

    def due(self, build: str, percent: float, now: float) -> bool:
        """Whether a progress event of ``build`` at ``percent``, emitted at ``now``, would be kept
        (asked before the event is made; nothing is counted: :meth:`keep` counts the one made).

        Only reads, so it may be asked from another thread than :meth:`keep`'s."""
        if percent in {0, 100}:
            return True
        last = self._last.get(build)
        return last is None or now - last >= self.interval

    def keep(self, event: Progress, now: float) -> bool:
        """Whether ``event``, emitted at ``now``, is kept (and then counted as the job's last)."""
        if not self.due(event.build, event.percent, now):
            return False
        self._last[event.build] = now
        return True
