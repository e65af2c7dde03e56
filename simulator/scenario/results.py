"""What running a scenario produced: failed expectations and the scenario's outcome.

Invariant: every value in a :class:`Failure` is JSON-able (strings, numbers, booleans, lists,
null), so the CLI's ``--json``, the JUnit report and the pytest plugin print the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["passed", "failed", "error"]


def render(value: Any) -> str:
    """A value as a scenario file would spell it (``"7.1"``, ``true``, ``["T1"]``)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True, slots=True)
class Failure:
    """One expectation that did not hold."""

    step: int
    kind: str  # the step's ``do``
    field: str
    expected: Any
    observed: Any
    detail: str = ""  # e.g. the refusal's sentence

    def describe(self, file: str) -> str:
        """One line naming the file, the step, the field, what was expected and what was observed."""
        extra = f" ({self.detail})" if self.detail else ""
        where = f"{file}: step {self.step} ({self.kind}), field '{self.field}'"
        return f"{where}: expected {render(self.expected)}, observed {render(self.observed)}{extra}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"step": self.step, "do": self.kind, "field": self.field, "expected": self.expected,
                "observed": self.observed, "detail": self.detail}  # fmt: skip


@dataclass
class ScenarioResult:
    """How one scenario file ended.

    ``error`` is set when the scenario could not be run to its end (a malformed file, or a step
    that raised, e.g. the vendor desk refusing an impossible request); ``failures`` lists every
    expectation that did not hold among the steps that ran.
    """

    path: str
    title: str
    rules: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    error: str | None = None
    duration: float = 0.0
    steps_run: int = 0
    steps_total: int = 0
    detail: str = ""  # a traceback for an internal error, for the JUnit report

    @property
    def status(self) -> Status:
        """passed, failed (an expectation did not hold) or error (the scenario could not run)."""
        if self.error is not None:
            return "error"
        return "failed" if self.failures else "passed"

    @property
    def passed(self) -> bool:
        """Whether every expectation held."""
        return self.status == "passed"

    def messages(self) -> list[str]:
        """Every failure or the error, one line each, naming the file."""
        lines = [f.describe(self.path) for f in self.failures]
        if self.error is not None:
            lines.append(self.error)
        return lines

    def as_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``allworx-sim scenario run --json``."""
        return {
            "path": self.path, "title": self.title, "status": self.status, "rules": self.rules,
            "duration": round(self.duration, 3), "steps_run": self.steps_run, "steps_total": self.steps_total,
            "failures": [f.as_dict() for f in self.failures], "error": self.error,
        }  # fmt: skip
