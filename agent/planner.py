"""The planner: turn "take this server to release R" into the chain of single steps (rule SEQ-1).

Pure. Each step is judged by :func:`agent.policy.judge_step` against the server as it would be
after the previous steps; the plan stops at the first refusal, which it includes, so the server
is left on the last step that would commit.

Invariants (property-tested): a plan never skips a release, never goes down, and nothing follows
a refused step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from agent.documents import PlanReport, PlanStep
from agent.keys import KeyCheck
from agent.policy import ServerFacts, Verdict, judge_step
from common.reasons import Reason, Refusal
from releases.catalog import Catalog, version_key


@dataclass(frozen=True, slots=True)
class Plan:
    """The chain of steps from the server's release to a target."""

    from_release: str
    target: str
    steps: tuple[Verdict, ...]

    @property
    def refusal(self) -> Refusal | None:
        """The refusal that ends the plan, if any."""
        return self.steps[-1].refusal if self.steps else None

    @property
    def final_release(self) -> str:
        """Where the server would end: the last allowed step's release, or where it started."""
        allowed = [s for s in self.steps if s.allowed]
        return allowed[-1].release if allowed else self.from_release

    def report(self) -> PlanReport:
        """The JSON form of ``plan`` (outcomes ``would-install`` or ``refused``)."""
        return PlanReport(
            from_release=self.from_release,
            to=self.target,
            final_release=self.final_release,
            steps=tuple(plan_step(s) for s in self.steps),
        )


def plan_step(step: Verdict) -> PlanStep:
    """The JSON form of one step: ``would-install`` with what authorises it, or ``refused`` and why."""
    if step.refusal is None:
        return PlanStep(
            release=step.release,
            build=step.build,
            outcome="would-install",
            rebuilds_database=step.rebuilds_database,
            authorised_by=step.authorised_by,
        )
    return PlanStep(
        release=step.release,
        build=step.build,
        outcome="refused",
        reason=step.refusal.reason.value,
        rule=step.refusal.rule,
        message=step.refusal.message,
    )


def candidates(catalog: Catalog, server: ServerFacts, target: str) -> list[str] | Verdict:
    """The builds a plan to ``target`` walks through, or a verdict refusing the whole target."""
    patch = catalog.patch(target)
    release = catalog.get(patch.release if patch else target)
    if release is None:
        return judge_step(catalog, server, [], target, datetime.max)
    current = catalog.release(server.release)
    if release.index < current.index or (
        patch is not None
        and release.index == current.index
        and version_key(patch.build) <= version_key(server.build)
    ):
        return Verdict(
            release.version,
            patch.build if patch else release.build,
            Refusal(
                Reason.DOWNGRADE_REFUSED,
                "DOWN-1",
                f"The server runs {server.build}; going back to {target} is not allowed.",
            ),
        )
    chain = [r.version for r in catalog.releases[current.index + 1 : release.index + 1]]
    if patch is not None:
        if chain:
            chain[-1] = patch.build  # the patch build is the step into its release
        else:
            chain = [patch.build]
    return chain


def plan(
    catalog: Catalog,
    server: ServerFacts,
    checks: Sequence[KeyCheck],
    target: str,
    now: datetime,
) -> Plan:
    """Plan the single steps from ``server``'s release to ``target`` and judge each (SEQ-1).

    Args:
        catalog: the release catalogue.
        server: the server as it is now.
        checks: its keys verified at ``now``.
        target: the release (or build, or patch build) to reach.
        now: the instant of the decision.

    Returns:
        The plan; empty when the server already runs ``target``.
    """
    walk = candidates(catalog, server, target)
    if isinstance(walk, Verdict):
        return Plan(server.release, target, (walk,))
    steps: list[Verdict] = []
    facts = server
    for candidate in walk:
        verdict = judge_step(catalog, facts, checks, candidate, now)
        steps.append(verdict)
        if not verdict.allowed:
            break
        facts = replace(facts, release=verdict.release, build=verdict.build)
    return Plan(server.release, target, tuple(steps))
