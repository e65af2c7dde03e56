"""The one transition table: edges, recovery map, and the generated diagram."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import diagram
from agent.machine import TRANSITIONS, Event, State, TransitionError, next_state, resume_state


def test_every_state_has_a_restart_edge() -> None:
    """A power cut in any persisted state has a defined place to resume."""
    assert {s for (s, e) in TRANSITIONS if e is Event.RESTART} == set(State)


def test_unknown_persisted_state_rolls_back() -> None:
    """Anything the agent does not recognise in its journal rolls back."""
    assert resume_state("half-written-garbage") is State.ROLLING_BACK
    assert resume_state("staging") is State.STAGING


def test_unhandled_pair_raises_loudly() -> None:
    """An event with no edge is a bug, not something to ignore."""
    with pytest.raises(TransitionError):
        next_state(State.IDLE, Event.COMMITTED)


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_every_walk_stays_in_the_table(events: list[Event]) -> None:
    """Random event sequences either follow edges or raise; commit only after a verified boot."""
    state = State.IDLE
    seen: list[State] = [state]
    for event in events:
        try:
            state = next_state(state, event)
        except TransitionError:
            continue
        seen.append(state)
        if state is State.COMMITTED:
            assert State.TRIAL_BOOT in seen, "no commit without a trial boot"


def test_docs_diagram_matches_the_table() -> None:
    """docs/state-machine.md is generated from the table (run `python -m agent.diagram`)."""
    assert diagram.DOC.read_text() == diagram.render()
