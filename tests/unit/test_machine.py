"""The one transition table: edges, recovery map, and the generated diagram."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import diagram
from agent.machine import TRANSITIONS, Event, State, TransitionError, cancellable, next_state, resume_state


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


def test_committed_and_rolled_back_are_terminal() -> None:
    """Only a restart leaves a finished step's state, and it leads back to the same state."""
    for state in (State.COMMITTED, State.ROLLED_BACK):
        assert {(e, t) for (s, e), t in TRANSITIONS.items() if s is state} == {(Event.RESTART, state)}


def test_cancellable_states_are_the_tables_cancel_edges() -> None:
    """A cancel request stops a step exactly where the table has a cancel edge: before the slot is written."""
    expected = {State.STAGING, State.STAGED, State.PREPARING_DB, State.DB_READY}
    assert {s for s in State if cancellable(s)} == expected
