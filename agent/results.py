"""How an upgrade ends: one step's result, a whole request's, and the rule a failure cites.

The outcome vocabulary is the field's (AWS IoT Jobs, hawkBit): a policy refusal is ``rejected``
(the server would not), ``failed`` is tried and rolled back, ``succeeded`` committed every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.reasons import Reason, Refusal


@dataclass
class StepResult:
    """How one step ended."""

    release: str
    build: str
    outcome: str  # committed | refused | failed | cancelled
    refusal: Refusal | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used by the CLI and MQTT."""
        out: dict[str, Any] = {"release": self.release, "build": self.build, "outcome": self.outcome}
        if self.refusal is not None:
            out.update(self.refusal.as_dict())
        return out


@dataclass
class UpgradeResult:
    """How a whole request ended."""

    from_release: str
    target: str
    final_release: str
    steps: list[StepResult] = field(default_factory=list)
    recovered: StepResult | None = None  # an interrupted step finished before this request

    @property
    def outcome(self) -> str:
        """succeeded, rejected (refused by policy), failed (tried and rolled back) or cancelled."""
        last = self.steps[-1].outcome if self.steps else "committed"
        return {"committed": "succeeded", "refused": "rejected"}.get(last, last)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of ``upgrade`` and ``install``."""
        return {
            "from": self.from_release,
            "to": self.target,
            "final_release": self.final_release,
            "outcome": self.outcome,
            "steps": [s.as_dict() for s in self.steps],
            **({"recovered": self.recovered.as_dict()} if self.recovered is not None else {}),
        }


def failure_rule(reason: Reason, *, rebuilds_database: bool) -> str:
    """The rule a failed, rolled-back step cites (docs/rules.md): IMG-1, SAFE-1, or the database's."""
    if reason.value.startswith("IMAGE_"):
        return "IMG-1"  # a release image installs only if it verifies against the vendor's signature
    if reason in (Reason.BOOT_CHECK_FAILED, Reason.CRASH_LOOP, Reason.NO_SPACE, Reason.JOURNAL_UNREADABLE):
        return "SAFE-1"  # any failure ends on the old release, every record and key as before
    return "DB-1" if rebuilds_database else "DB-2"  # the database's rollback guarantee that held
