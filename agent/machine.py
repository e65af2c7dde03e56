"""The upgrade state machine: one transition table.

One step (one release) goes through two phases, as the vendor's guides describe them: *stage*
(the image lands verified in the Update Area) and *activate* (database prepared in the inactive
slot, image written there, trial boot, commit), or rollback.

Invariants:
- every edge is one line of :data:`TRANSITIONS`; an unhandled ``(state, event)`` raises
  :class:`TransitionError` (a bug, never silently ignored);
- ``Event.RESTART`` edges are the crash-recovery map: where a restarted agent resumes from each
  persisted state. States after the slot switch that cannot simply be redone go through the
  bootloader's trial or roll back; anything unknown rolls back (:func:`resume_state`).
- ``committing`` fails forward or back around one instant, the bootloader's commit write: a
  failure before it rolls back (``failed``), one after it still ends ``committed`` (the shell
  checks the bootloader); what a power cut at each crash point leads to is in docs/power-cuts.md.
- ``committed`` and ``rolled_back`` are terminal: only ``Event.RESTART`` leaves them (to
  themselves). The shell closes the step there (phone firmware offer, cleanup, journal removal);
  the next step starts from ``idle`` with a new journal;
- the events that can stop a step on request are exactly the ``Event.CANCEL`` edges (the shell
  asks this table, :func:`cancellable`);
- the docs' state diagram is generated from this table (:func:`mermaid`).
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Persisted states of one upgrade step."""

    IDLE = "idle"
    STAGING = "staging"  # downloading and verifying into the Update Area
    STAGED = "staged"  # a verified image waits in the Update Area
    PREPARING_DB = "preparing_db"  # export/rebuild (DB-1) or migrate a copy (DB-2) into the new slot
    DB_READY = "db_ready"
    WRITING_SLOT = "writing_slot"  # the image is written into the inactive slot
    SLOT_WRITTEN = "slot_written"
    SWITCHING = "switching"  # the bootloader is told to try the new slot
    TRIAL_BOOT = "trial_boot"  # rebooted on trial into the new slot; boot check under way
    COMMITTING = "committing"  # the bootloader marks the new slot good
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"  # back to the old slot and the old database
    ROLLED_BACK = "rolled_back"


class Event(StrEnum):
    """What happens to an upgrade step."""

    START = "start"
    STAGED = "staged"
    ACTIVATE = "activate"
    DB_READY = "db_ready"
    SLOT_WRITTEN = "slot_written"
    SWITCHED = "switched"
    BOOT_OK = "boot_ok"
    BOOT_FAILED = "boot_failed"
    COMMITTED = "committed"
    FAILED = "failed"  # an error during the step: roll back
    CANCEL = "cancel"
    ROLLED_BACK = "rolled_back"
    RESTART = "restart"  # the agent starts after a power cut or a kill


class TransitionError(RuntimeError):
    """An event arrived in a state that has no edge for it (a bug)."""


S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.IDLE,          E.START):        S.STAGING,
    (S.IDLE,          E.RESTART):      S.IDLE,
    (S.STAGING,       E.STAGED):       S.STAGED,
    (S.STAGING,       E.FAILED):       S.ROLLED_BACK,
    (S.STAGING,       E.CANCEL):       S.ROLLED_BACK,
    (S.STAGING,       E.RESTART):      S.STAGING,
    (S.STAGED,        E.ACTIVATE):     S.PREPARING_DB,
    (S.STAGED,        E.CANCEL):       S.ROLLED_BACK,
    (S.STAGED,        E.FAILED):       S.ROLLED_BACK,
    (S.STAGED,        E.RESTART):      S.STAGED,
    (S.PREPARING_DB,  E.DB_READY):     S.DB_READY,
    (S.PREPARING_DB,  E.FAILED):       S.ROLLING_BACK,
    (S.PREPARING_DB,  E.CANCEL):       S.ROLLING_BACK,
    (S.PREPARING_DB,  E.RESTART):      S.PREPARING_DB,
    (S.DB_READY,      E.ACTIVATE):     S.WRITING_SLOT,
    (S.DB_READY,      E.FAILED):       S.ROLLING_BACK,
    (S.DB_READY,      E.CANCEL):       S.ROLLING_BACK,
    (S.DB_READY,      E.RESTART):      S.DB_READY,
    (S.WRITING_SLOT,  E.SLOT_WRITTEN): S.SLOT_WRITTEN,
    (S.WRITING_SLOT,  E.FAILED):       S.ROLLING_BACK,
    (S.WRITING_SLOT,  E.RESTART):      S.WRITING_SLOT,
    (S.SLOT_WRITTEN,  E.ACTIVATE):     S.SWITCHING,
    (S.SLOT_WRITTEN,  E.FAILED):       S.ROLLING_BACK,
    (S.SLOT_WRITTEN,  E.RESTART):      S.SLOT_WRITTEN,
    (S.SWITCHING,     E.SWITCHED):     S.TRIAL_BOOT,
    (S.SWITCHING,     E.FAILED):       S.ROLLING_BACK,
    (S.SWITCHING,     E.RESTART):      S.SWITCHING,
    (S.TRIAL_BOOT,    E.BOOT_OK):      S.COMMITTING,
    (S.TRIAL_BOOT,    E.BOOT_FAILED):  S.ROLLING_BACK,
    (S.TRIAL_BOOT,    E.RESTART):      S.TRIAL_BOOT,
    (S.COMMITTING,    E.COMMITTED):    S.COMMITTED,
    (S.COMMITTING,    E.FAILED):       S.ROLLING_BACK,
    (S.COMMITTING,    E.RESTART):      S.COMMITTING,
    (S.COMMITTED,     E.RESTART):      S.COMMITTED,
    (S.ROLLING_BACK,  E.ROLLED_BACK):  S.ROLLED_BACK,
    (S.ROLLING_BACK,  E.RESTART):      S.ROLLING_BACK,
    (S.ROLLED_BACK,   E.RESTART):      S.ROLLED_BACK,
}  # fmt: skip


def next_state(state: State, event: Event) -> State:
    """Return the state ``event`` leads to from ``state``.

    Raises:
        TransitionError: there is no such edge.
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise TransitionError(f"no transition from {state.value!r} on {event.value!r}") from None


def cancellable(state: State) -> bool:
    """Whether a cancel request in ``state`` has an edge (before the slot is written)."""
    return (state, Event.CANCEL) in TRANSITIONS


def resume_state(persisted: str) -> State:
    """Map a persisted state name to where a restarted agent resumes; unknown rolls back."""
    try:
        state = State(persisted)
    except ValueError:
        return State.ROLLING_BACK
    return TRANSITIONS.get((state, Event.RESTART), State.ROLLING_BACK)


def mermaid() -> str:
    """Render the transition table as a Mermaid state diagram (crash-recovery edges dashed)."""
    lines = ["stateDiagram-v2", "    [*] --> idle"]
    for (state, event), target in TRANSITIONS.items():
        if event is Event.RESTART:
            if state is not State.IDLE:
                lines.append(f"    {state.value} --> {target.value}: restart (power cut)")
            continue
        lines.append(f"    {state.value} --> {target.value}: {event.value}")
    lines.append(
        "    note right of trial_boot: restart = the bootloader counts a boot attempt;\\n"
        "too many failed boots fall back to the old slot"
    )
    return "\n".join(lines)
