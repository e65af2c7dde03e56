"""The rejection budget of the command dispatcher (agent/mqtt/dispatch.py): a token bucket."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.mqtt.dispatch import REJECT_BURST, REJECT_RATE, Budget


@given(st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=300))
def test_rejections_answered_never_exceed_the_burst_plus_the_rate(gaps: list[float]) -> None:
    """Whatever the arrival times, at most burst + rate x elapsed rejections are answered."""
    budget, now, granted = Budget(), 0.0, 0
    for gap in gaps:
        now += gap
        granted += budget.take(now)
        assert granted <= REJECT_BURST + REJECT_RATE * now + 1e-9


def test_a_burst_is_answered_at_once_then_the_rate_refills() -> None:
    """A flood at one instant gets exactly the burst; a second later, the rate's worth more."""
    budget = Budget()
    assert sum(budget.take(10.0) for _ in range(1000)) == REJECT_BURST
    assert sum(budget.take(11.0) for _ in range(1000)) == int(REJECT_RATE)
