"""The agent's one retry backoff (``agent.clock.exponential_backoff``): read without waiting."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.clock import exponential_backoff


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    """Without jitter the delays double from the base and stop at the cap."""
    delays = exponential_backoff(1.0, 5.0)
    assert list(itertools.islice(delays, 5)) == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_equal_jitter_keeps_each_delay_within_its_upper_half() -> None:
    """With jitter 0.5 each delay lies in [d/2, d] of its unjittered value and the draws differ."""
    plain = list(itertools.islice(exponential_backoff(0.5, 30.0), 12))
    jittered = list(itertools.islice(exponential_backoff(0.5, 30.0, jitter=0.5, rng=random.Random(3)), 12))
    for delay, ceiling in zip(jittered, plain, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(jittered[-6:])) == 6  # capped delays still spread a fleet's retries


def test_a_seeded_generator_repeats_its_delays() -> None:
    """The same seed gives the same delays (a fleet run is reproducible)."""
    first = exponential_backoff(1.0, 8.0, jitter=0.5, rng=random.Random(42))
    second = exponential_backoff(1.0, 8.0, jitter=0.5, rng=random.Random(42))
    assert list(itertools.islice(first, 8)) == list(itertools.islice(second, 8))


@given(
    base=st.floats(0.0, 10.0),
    cap=st.floats(0.0, 60.0),
    factor=st.floats(1.0, 4.0),
    jitter=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
def test_no_delay_is_negative_or_past_the_cap(
    base: float, cap: float, factor: float, jitter: float, seed: int
) -> None:
    """Whatever the settings, every delay lies in [0, cap], for hundreds of retries."""
    delays = exponential_backoff(base, cap, factor, jitter=jitter, rng=random.Random(seed))
    for delay in itertools.islice(delays, 300):
        assert 0.0 <= delay <= cap


@pytest.mark.parametrize(
    ("base", "cap", "factor", "jitter"),
    [
        (-1.0, 5.0, 2.0, 0.0),
        (1.0, -1.0, 2.0, 0.0),
        (1.0, 5.0, 0.5, 0.0),
        (1.0, 5.0, 2.0, -0.1),
        (1.0, 5.0, 2.0, 1.5),
    ],
)
def test_bad_settings_are_refused(base: float, cap: float, factor: float, jitter: float) -> None:
    """A negative bound, a shrinking factor or a jitter outside [0, 1] raises ValueError."""
    with pytest.raises(ValueError, match="backoff"):
        next(exponential_backoff(base, cap, factor, jitter=jitter))
