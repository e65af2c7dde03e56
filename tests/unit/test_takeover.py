"""The takeover watch (agent/mqtt/takeover.py): when a storm starts, which client id comes next."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.mqtt.takeover import STORM_HOLD, STORM_TAKEOVERS, STORM_WINDOW, TakeoverWatch

USUAL = "allworx-agent-hq-AWX1"


@given(st.lists(st.floats(min_value=0.01, max_value=60.0), min_size=1, max_size=40))
def test_a_storm_starts_exactly_when_enough_takeovers_fall_in_the_window(gaps: list[float]) -> None:
    """Whatever the spacing, a storm starts on the takeover that makes STORM_TAKEOVERS within
    STORM_WINDOW seconds (counting since the last storm), and only then."""
    watch, now, recent = TakeoverWatch(USUAL), 0.0, list[float]()
    for gap in gaps:
        now += gap
        recent = [t for t in [*recent, now] if now - t <= STORM_WINDOW]
        expected = len(recent) >= STORM_TAKEOVERS
        assert watch.taken_over(now) is expected
        if expected:
            recent = []
    assert watch.takeovers == len(gaps)


def test_a_storm_has_its_own_client_id_until_the_hold_passes() -> None:
    """In a storm the next connection uses a fresh id; after STORM_HOLD the usual one again."""
    watch = TakeoverWatch(USUAL)
    assert watch.reconnecting(0.0) == USUAL
    started = [watch.taken_over(t) for t in (1.0, 2.0, 3.0)]
    assert started == [False, False, True]
    storm_id = watch.reconnecting(4.0)
    assert storm_id.startswith(USUAL + "-")
    assert storm_id != USUAL
    assert watch.reconnecting(3.0 + STORM_HOLD - 1) == storm_id
    assert watch.reconnecting(3.0 + STORM_HOLD) == USUAL
    assert not watch.in_storm
    assert watch.storms == 1
