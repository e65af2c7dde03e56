"""Multi-site check: every server of a network must run the same release (rule SITE-1).

The release every member must reach is :func:`agent.site.network_target`'s, the one campaigns
use too: the newest one any member runs (typically a new Connect server just traded in), or a
named release when that is newer. For each member the check plans the single steps to it
(:func:`agent.planner.plan`, SEQ-1) with the member's own keys at ``now``, and reports the steps,
the first refusal, and whether the member lacks a maintenance key
(:func:`agent.site.needs_maintenance_key`) and so needs one bought: the bundle while its 90-day
window is open, else one 1-year anytime licence (SWM-5).

Invariant: the check only reads the server directories.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from agent.keys import maintenance_state
from agent.planner import plan
from agent.site import needs_maintenance_key, network_target
from agent.store import ServerDir
from common.reasons import Refusal
from releases.catalog import Catalog
from simulator.vendor.errors import DeskError
from simulator.vendor.plans import PurchaseOption, options_on, read_warranty


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member of the network against the site's target release."""

    server_dir: str
    serial: str
    model: str
    release: str
    steps: tuple[str, ...]  # the single releases to install, in order (SEQ-1)
    refusal: Refusal | None  # the first step that would be refused now, if any
    maintenance: str  # "valid", "expired" or "none"
    needs_maintenance_key: bool
    buy: str | None  # the plan to buy (SWM-5) when a key is needed

    @property
    def ready(self) -> bool:
        """Whether every step to the target would be allowed now."""
        return self.refusal is None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "server_dir": self.server_dir,
            "serial": self.serial,
            "model": self.model,
            "release": self.release,
            "steps": list(self.steps),
            "ready": self.ready,
            "refusal": self.refusal.as_dict() if self.refusal else None,
            "maintenance": self.maintenance,
            "needs_maintenance_key": self.needs_maintenance_key,
            "buy": self.buy,
        }


@dataclass(frozen=True, slots=True)
class SiteReport:
    """The network's target release and each member's way to it (rule SITE-1)."""

    target: str
    members: tuple[MemberStatus, ...]

    @property
    def consistent(self) -> bool:
        """Whether every member already runs the target."""
        return all(m.release == self.target for m in self.members)

    @property
    def ready(self) -> bool:
        """Whether every member could reach the target now."""
        return all(m.ready for m in self.members)

    @property
    def needs_keys(self) -> tuple[str, ...]:
        """Serials of the members that need a maintenance key bought."""
        return tuple(m.serial for m in self.members if m.needs_maintenance_key)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "target": self.target,
            "consistent": self.consistent,
            "ready": self.ready,
            "needs_keys": list(self.needs_keys),
            "members": [m.as_dict() for m in self.members],
        }


def _member(catalog: Catalog, server: ServerDir, target: str, now: datetime) -> MemberStatus:
    facts, checks = server.facts(), server.key_checks(now.date())
    result = plan(catalog, facts, checks, target, now)
    refusal = result.refusal
    needs_key = refusal is not None and needs_maintenance_key(refusal.rule)
    buy = None
    if needs_key:
        on_sale = options_on(read_warranty(server).purchased, now.date())
        buy = (
            PurchaseOption.BUNDLE_5Y if PurchaseOption.BUNDLE_5Y in on_sale else PurchaseOption.ANYTIME_1Y
        ).value
    current, goal = catalog.release(facts.release), catalog.release(target)
    steps = tuple(r.version for r in catalog.releases[current.index + 1 : goal.index + 1])  # rule SEQ-1
    return MemberStatus(
        server_dir=str(server.root),
        serial=facts.serial,
        model=facts.model,
        release=facts.release,
        steps=steps,
        refusal=refusal,
        maintenance=maintenance_state(checks),
        needs_maintenance_key=needs_key,
        buy=buy,
    )


def site_check(
    catalog: Catalog, server_dirs: Sequence[Path], now: datetime | date, target: str | None = None
) -> SiteReport:
    """Check a multi-site network against the release every member must reach (rule SITE-1).

    Args:
        catalog: the release catalogue.
        server_dirs: the members' server directories.
        now: the instant of the check.
        target: a release to reach; the network's target is the newest release a member runs,
            or ``target`` when that is newer (never older: the newest member cannot go back).

    Raises:
        DeskError: no members, the same server twice, or ``target`` not in the catalogue.
        StoreError: a directory is not a server directory.
    """
    moment = now if isinstance(now, datetime) else datetime(now.year, now.month, now.day, tzinfo=UTC)
    if not server_dirs:
        raise DeskError("a site check needs at least one server directory")
    servers = [ServerDir(Path(d)) for d in server_dirs]
    facts = [s.facts() for s in servers]
    if len({f.serial for f in facts}) != len(facts):
        raise DeskError("the same server is named twice")
    if target is not None and catalog.get(target) is None:
        raise DeskError(f"release {target!r} is not in the catalogue")
    wanted = () if target is None else (catalog.release(target).version,)
    try:
        goal = network_target(catalog, [f.release for f in facts], wanted)
    except ValueError as exc:
        raise DeskError(str(exc)) from exc
    return SiteReport(goal, tuple(_member(catalog, s, goal, moment) for s in servers))
