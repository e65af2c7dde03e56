"""The injected clock: every decision reads ``now`` once, from here.

``SimClock`` compresses time: it starts at a simulated instant and advances ``speed`` times
faster than the monotonic clock, so a fleet's hours of work take seconds with the same code.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the agent needs of time."""

    def now(self) -> datetime:
        """Return the current wall-clock instant (UTC, aware)."""
        ...

    def monotonic(self) -> float:
        """Return seconds on a clock that never goes back."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        """Return the real current instant."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Return ``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        await asyncio.sleep(seconds)


class SimClock:
    """Simulated time: starts at ``start`` and runs ``speed`` times faster than real time."""

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self._start = start
        self._speed = speed
        self._origin = time.monotonic()
        self._offset = 0.0

    def now(self) -> datetime:
        """Return the simulated instant."""
        return self._start + timedelta(seconds=self.monotonic())

    def monotonic(self) -> float:
        """Return simulated seconds since the clock started (only sleeps advance an infinite-speed clock)."""
        if self._speed == float("inf"):
            return self._offset
        return (time.monotonic() - self._origin) * self._speed + self._offset

    def advance(self, seconds: float) -> None:
        """Jump simulated time forward (for tests and scenarios)."""
        self._offset += seconds

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of simulated time (``seconds / speed`` real seconds)."""
        if self._speed == float("inf"):
            self._offset += seconds
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds / self._speed)


def parse_now(text: str | None) -> datetime:
    """Parse a ``--now`` value (``YYYY-MM-DD`` or ISO 8601); ``None`` means real time.

    Raises:
        ValueError: the text is not a date.
    """
    if text is None:
        return datetime.now(UTC)
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def as_date(value: datetime | date) -> date:
    """Return the calendar date of ``value``."""
    return value.date() if isinstance(value, datetime) else value


def exponential_backoff(
    base: float = 0.5,
    cap: float = 30.0,
    factor: float = 2.0,
    *,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield retry delays: exponential from ``base``, capped at ``cap``, with jitter taken off.

    The one backoff of the agent (image downloads and broker reconnection). Each delay is the capped
    exponential value less a random share of it up to ``jitter``: with ``jitter=0.5`` a delay lies in
    ``[d/2, d]`` ("equal jitter"), so a fleet's retries spread out but never wait past ``cap``. A plain
    generator: a test reads the delays without waiting.

    Args:
        base: the first delay, in seconds (before jitter).
        cap: the longest delay, in seconds.
        factor: how much each delay grows over the one before.
        jitter: the share of each delay that may be taken off at random, 0 (none) to 1.
        rng: the randomness (seed it for reproducible delays); default a fresh ``random.Random()``.

    Raises:
        ValueError: on the first ``next()``, when a bound is negative, ``factor`` below 1 or
            ``jitter`` outside [0, 1].
    """
    if min(base, cap) < 0 or factor < 1 or not 0 <= jitter <= 1:
        raise ValueError("backoff: base and cap >= 0, factor >= 1, 0 <= jitter <= 1")
    draw = (rng or random.Random()).random
    delay = min(base, cap)
    while True:
        yield delay * (1.0 - jitter * draw())
        delay = min(delay * factor, cap)  # stays finite however long the retries go on
