"""Download and verification limits: one frozen config, units in comments.

Invariant: every number bounding a download lives here, so a test or a fleet scenario changes
behaviour by passing another :class:`Limits`, never by patching module constants.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1 << 20  # bytes in a mebibyte


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds for fetching and verifying a release image.

    Raises:
        ValueError: on construction, when a bound is not positive (or the jitter is outside [0, 1]).
    """

    chunk_size: int = MIB  # bytes read, hashed and written per step
    max_retries: int = 5  # retries after a retryable (transport) failure, per fetch call
    backoff_base: float = 0.5  # seconds, the delay before the first retry
    backoff_cap: float = 30.0  # seconds, the longest delay between retries
    backoff_jitter: float = 0.5  # share of each delay taken off at random, 0 (none) to 1
    bandwidth: float | None = 2_000_000.0  # bytes per second of the simulated link; None = unthrottled
    max_image_size: int = 4096 * MIB  # bytes, the ceiling whatever a signed manifest claims
    progress_interval: int = 8 * MIB  # bytes, the least progress between two progress callbacks
    min_rate: float = 1024.0  # bytes per second an attempt must average once past rate_grace
    rate_grace: float = 30.0  # seconds (real time) an attempt may run before its rate is judged

    def __post_init__(self) -> None:
        if self.chunk_size <= 0 or self.max_image_size <= 0 or self.progress_interval <= 0:
            raise ValueError("chunk_size, max_image_size and progress_interval must be positive")
        if self.max_retries < 0 or self.backoff_base < 0 or self.backoff_cap < 0:
            raise ValueError("max_retries, backoff_base and backoff_cap must not be negative")
        if not 0 <= self.backoff_jitter <= 1:
            raise ValueError("backoff_jitter is a share of each delay: 0 to 1")
        if self.min_rate < 0 or self.rate_grace < 0:
            raise ValueError("min_rate and rate_grace must not be negative")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError("bandwidth must be positive or None (unthrottled)")


DEFAULT_LIMITS = Limits()
