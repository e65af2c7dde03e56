"""What the agent reports as it works: the upgrader's events, a staging's end, a command answered.

The upgrader (:mod:`agent.upgrader`) hands each event to its sink (:data:`EventSink`): the
terminal's progress view, or the MQTT daemon, which stamps it (``seq``, ``at``:
:class:`agent.mqtt.messages.EventRecord`) and publishes it on ``events`` in a batch
(:class:`agent.mqtt.messages.EventBatch`, with ``schema``, ``serial`` and ``site``). This
module sits below the MQTT shell: the upgrader emits typed events without importing ``agent.mqtt``.

A sink that thins progress may also answer, before a progress event is made, whether it would keep
it (:data:`ProgressDue`): the upgrader then makes no event that would be dropped.

Invariant: every event names its kind in ``type`` (:data:`AgentEvent` is discriminated by it), and
each kind's fields are fixed by its model; the JSON of each is that of :mod:`agent.documents`. An
event made without validation (:meth:`Transition.of`) is the event the validating constructor makes
of the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, Self

from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from agent.documents import UpgradeReport, Wire
from agent.machine import State

_new = object.__new__
_set = object.__setattr__  # a model is frozen: its slots are set past pydantic's __setattr__


class _StepEvent(Wire):
    """Where in a request a step is."""

    job_id: str
    """The step's job (a new one per step)."""
    release: str
    build: str
    step: int
    """This step's number (i of n)."""
    steps: int
    """The number of steps (n)."""


class Transition(_StepEvent):
    """A step reached a new persisted state (written to the journal before it is acted on)."""

    type: Literal["transition"] = "transition"
    state: State

    @classmethod
    def of(cls, *, job_id: str, release: str, build: str, step: int, steps: int, state: State) -> Self:
        """The transition of a step to ``state``, made of values that already have their types (the
        upgrader's journal): the event ``Transition(...)`` makes of them, without validating them again."""
        # what ``model_construct`` does (its generic walk costs more than validating), for these fields
        event = _new(cls)
        fields = {"job_id": job_id, "release": release, "build": build, "step": step, "steps": steps}
        fields["type"], fields["state"] = "transition", state  # in the model's order
        _set(event, "__dict__", fields)
        _set(event, "__pydantic_fields_set__", {"job_id", "release", "build", "step", "steps", "state"})
        _set(event, "__pydantic_extra__", None)
        _set(event, "__pydantic_private__", None)
        return event


class Resumed(_StepEvent):
    """A step a power cut or a kill interrupted resumes (``persisted`` is where it stopped)."""

    type: Literal["resumed"] = "resumed"
    persisted: str
    """The state the journal held (``unknown`` when it was unreadable)."""
    state: State
    """Where the step resumes (the transition table's restart edge)."""


class Refused(Wire):
    """A policy refused a step: the request stops there, on the last committed release."""

    type: Literal["refused"] = "refused"
    release: str
    build: str
    step: int
    steps: int
    reason: str
    """The reason code (``common/reasons.py``)."""
    rule: str
    """The rule ID (docs/rules.md)."""
    message: str


class Progress(Wire):
    """How far a download or a database build has come (thinned: 0%, 100%, and at most one a second
    of a job between)."""

    _omittable = frozenset({"bytes", "rows"})

    type: Literal["progress"] = "progress"
    phase: Literal["download", "database"]
    build: str
    bytes: int | SkipJsonSchema[None] = None
    """Bytes downloaded (download phase)."""
    rows: int | SkipJsonSchema[None] = None
    """Rows done (database phase)."""
    total: int
    percent: float = Field(ge=0, le=100)

    @classmethod
    def download(cls, build: str, done: int, total: int) -> Self:
        """``done`` of ``total`` bytes of ``build``'s image downloaded."""
        return cls(phase="download", build=build, bytes=done, total=total, percent=percent_of(done, total))

    @classmethod
    def database(cls, build: str, done: int, total: int) -> Self:
        """``done`` of ``total`` rows of ``build``'s database built."""
        return cls(phase="database", build=build, rows=done, total=total, percent=percent_of(done, total))


def percent_of(done: int, total: int) -> float:
    """``done`` of ``total`` as a progress event's ``percent`` (one decimal; 0 of 0 is 0%)."""
    return round(100 * done / max(total, 1), 1)


class ResultEvent(UpgradeReport):
    """A request ended (also the state's ``last_result``)."""

    type: Literal["result"] = "result"

    @classmethod
    def of(cls, report: UpgradeReport) -> Self:
        """The event announcing ``report``."""
        return cls(**dict(report))


class Staged(Wire):
    """A ``stage`` command's end: the images verified in the Update Area, or why it failed."""

    _omittable = frozenset({"reason", "message"})

    type: Literal["staged"] = "staged"
    target: str
    """The release the stage command named."""
    outcome: Literal["staged", "failed"]
    builds: tuple[str, ...]
    """The builds now verified in the Update Area."""
    reason: str | SkipJsonSchema[None] = None
    """Why staging failed (failed only)."""
    message: str | SkipJsonSchema[None] = None


class CommandAnswered(Wire):
    """A command was answered (every one, accepted or not: the fleet's audit trail)."""

    _omittable = frozenset({"reason", "rule", "message"})

    type: Literal["command"] = "command"
    command: str
    client_token: str | None
    status: Literal["accepted", "rejected"]
    reason: str | SkipJsonSchema[None] = None
    """Why it was rejected (rejected only)."""
    rule: str | SkipJsonSchema[None] = None
    message: str | SkipJsonSchema[None] = None


AgentEvent = Annotated[
    Transition | Resumed | Refused | Progress | ResultEvent | Staged | CommandAnswered,
    Field(discriminator="type"),
]
"""Any event, told apart by ``type``."""
EventSink = Callable[[AgentEvent], None]
ProgressDue = Callable[[str, int, int], bool]
"""Whether a progress event of a job (its build), ``done`` of ``total``, would be kept by the sink: asked
before the event is made, from whichever thread reports the progress (the database is built in a
worker thread), and answered without waiting."""
