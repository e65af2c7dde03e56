"""How an upgrade ends: one step's result, a whole request's, and the rule a failure cites.

The outcome vocabulary is the field's (AWS IoT Jobs, hawkBit): a policy refusal is ``rejected``
(the server would not), ``failed`` is tried and rolled back, ``succeeded`` committed every step.
Their JSON forms are :class:`agent.documents.StepReport` and :class:`agent.documents.UpgradeReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.documents import RequestOutcome, StepOutcome, StepReport, UpgradeReport
from common.reasons import Reason, Refusal


@dataclass
class StepResult:
    """How one step ended."""

    release: str
    build: str
    outcome: StepOutcome
    refusal: Refusal | None = None

    def report(self) -> StepReport:
        """The JSON form used by the CLI and MQTT."""
        refusal = self.refusal
        return StepReport(
            release=self.release,
            build=self.build,
            outcome=self.outcome,
            reason=refusal.reason.value if refusal else None,
            rule=refusal.rule if refusal else None,
            message=refusal.message if refusal else None,
        )


@dataclass
class UpgradeResult:
    """How a whole request ended."""

    from_release: str
    target: str
    final_release: str
    steps: list[StepResult] = field(default_factory=list)
    recovered: StepResult | None = None  # an interrupted step finished before this request

    @property
    def outcome(self) -> RequestOutcome:
        """succeeded, rejected (refused by policy), failed (tried and rolled back) or cancelled."""
        match self.steps[-1].outcome if self.steps else "committed":
            case "committed":
                return "succeeded"
            case "refused":
                return "rejected"
            case other:
                return other

    def report(self) -> UpgradeReport:
        """The JSON form of ``upgrade`` and ``install``."""
        return UpgradeReport(
            from_release=self.from_release,
            to=self.target,
            final_release=self.final_release,
            outcome=self.outcome,
            steps=tuple(s.report() for s in self.steps),
            recovered=self.recovered.report() if self.recovered is not None else None,
        )


def failure_rule(reason: Reason, *, rebuilds_database: bool) -> str:
    """The rule a failed, rolled-back step cites (docs/rules.md): IMG-1, SAFE-1, or the database's."""
    if reason.value.startswith(("IMAGE_", "RELEASE_")):
        return "IMG-1"  # a release image installs only if it verifies against the vendor's signed metadata
    if reason in (Reason.BOOT_CHECK_FAILED, Reason.CRASH_LOOP, Reason.NO_SPACE, Reason.JOURNAL_UNREADABLE):
        return "SAFE-1"  # any failure ends on the old release, every record and key as before
    return "DB-1" if rebuilds_database else "DB-2"  # the database's rollback guarantee that held
