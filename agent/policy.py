"""The upgrade policy: may this server install this one release (or patch build) now?

Pure: takes the catalogue, the server's facts, its verified keys and ``now``; returns a
:class:`Verdict`. Never awaits, opens files or reads the clock.

Check order (the first that fails is the refusal): the release exists; it is published (REL-1);
it is not a downgrade or a re-install (DOWN-1); the model can run it (REL-1); a server below 7.1
goes through 7.1 (SEQ-2); only the successor is installable (SEQ-1); from 7.1 on, a valid
maintenance key or a patch authorisation is required (SWM-1, SWM-2, SWM-7, MIG-2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agent.keys import KeyCheck, KeyKind, Plan
from common.reasons import Reason, Refusal
from releases.catalog import REBUILD_RELEASE, Catalog, Release, version_key


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What policy needs to know of a server."""

    serial: str
    model: str
    release: str  # the committed release, e.g. "7.6"
    build: str  # its build, e.g. "7.6.4.1"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement of one step: install ``build`` of ``release``, or a refusal."""

    release: str
    build: str
    refusal: Refusal | None = None
    authorised_by: str | None = None  # "not-required", "maintenance:<key id>", "patch:<key id>"
    rebuilds_database: bool = False  # rule DB-1
    migrates_database: bool = False  # rule DB-2
    db_schema: int = 0
    phone_firmware: str = ""  # rule PHONE-1: offered to phones once the release boots
    inactive_features: tuple[str, ...] = field(default=())  # rule SWM-6

    @property
    def allowed(self) -> bool:
        """Whether the step may be carried out."""
        return self.refusal is None


def _refuse(release: str, build: str, reason: Reason, rule: str, message: str) -> Verdict:
    return Verdict(release=release, build=build, refusal=Refusal(reason, rule, message))


def judge_step(
    catalog: Catalog,
    server: ServerFacts,
    checks: Sequence[KeyCheck],
    candidate: str,
    now: datetime,
) -> Verdict:
    """Judge installing ``candidate`` (a release, a build of one, or a patch build) next.

    Args:
        catalog: the release catalogue.
        server: the server's committed release and identity.
        checks: every installed key, verified for this server at ``now``.
        candidate: what to install, e.g. ``"7.2"``, ``"7.2.3.9"`` or patch ``"7.6.4.9"``.
        now: the instant of the decision (read once by the caller).

    Returns:
        A verdict; a refusal carries a reason code, a rule ID and one plain sentence.
    """
    patch = catalog.patch(candidate)
    target = catalog.get(patch.release if patch else candidate)
    if target is None:
        return _refuse(
            candidate,
            candidate,
            Reason.UNKNOWN_RELEASE,
            "REL-1",
            f"Release {candidate} is not in the vendor's catalogue.",
        )
    build = patch.build if patch else target.build
    published = patch.date if patch else target.date
    if published > now.date():  # rule REL-1
        return _refuse(
            target.version,
            build,
            Reason.NOT_YET_RELEASED,
            "REL-1",
            f"Release {build} is not published until {published.isoformat()}.",
        )
    current = catalog.release(server.release)
    refusal = _judge_order(catalog, server, current, target, build)
    if refusal is not None:
        return Verdict(release=target.version, build=build, refusal=refusal)
    authorised_by, refusal = _judge_keys(catalog, current, target, build, checks)
    if refusal is not None:
        return Verdict(release=target.version, build=build, refusal=refusal)
    return Verdict(
        release=target.version,
        build=build,
        authorised_by=authorised_by,
        rebuilds_database=target.rebuilds_database and target.index != current.index,
        migrates_database=target.db_schema != current.db_schema,
        db_schema=target.db_schema,
        phone_firmware=target.phone_firmware,
        inactive_features=inactive_features(catalog, target.version, checks),
    )


def _judge_order(
    catalog: Catalog, server: ServerFacts, current: Release, target: Release, build: str
) -> Refusal | None:
    """Rules DOWN-1, REL-1 (model), SEQ-2 and SEQ-1."""
    if target.index < current.index or (
        target.index == current.index and version_key(build) < version_key(server.build)
    ):  # rule DOWN-1
        return Refusal(
            Reason.DOWNGRADE_REFUSED,
            "DOWN-1",
            f"The server runs {server.build}; going back to {build} is not allowed.",
        )
    if target.index == current.index and build == server.build:
        return Refusal(Reason.ALREADY_INSTALLED, "SEQ-1", f"The server already runs {build}.")
    if not target.supports(server.model):  # rule REL-1
        return Refusal(
            Reason.MODEL_UNSUPPORTED,
            "REL-1",
            f"An Allworx {server.model} cannot run release {target.version}.",
        )
    pivot = catalog.release(REBUILD_RELEASE)
    if current.index < pivot.index < target.index:  # rule SEQ-2
        return Refusal(
            Reason.MUST_INSTALL_7_1_FIRST,
            "SEQ-2",
            f"A server on {current.version} must install 7.1 (which rebuilds the database) "
            f"before any later release such as {target.version}.",
        )
    if target.index > current.index + 1:  # rule SEQ-1
        step = catalog.releases[current.index + 1].version
        return Refusal(
            Reason.SEQUENTIAL_STEP_REQUIRED,
            "SEQ-1",
            f"Releases install one at a time: from {current.version} the next one is {step}, "
            f"not {target.version}.",
        )
    return None


def _judge_keys(
    catalog: Catalog, current: Release, target: Release, build: str, checks: Sequence[KeyCheck]
) -> tuple[str | None, Refusal | None]:
    """Rules SWM-1, SWM-2, SWM-7 and MIG-2 (temporary key ceiling)."""
    if current.index < catalog.release(REBUILD_RELEASE).index:  # rule SWM-1: up to 7.1 is free
        return "not-required", None
    for check in checks:  # rule SWM-7: a patch authorisation for exactly this build
        info = check.info
        if check.valid and info and info.kind is KeyKind.PATCH and info.patch_build == build:
            return f"patch:{info.key_id}", None
    return _judge_maintenance(catalog, target, checks)


def _judge_maintenance(
    catalog: Catalog, target: Release, checks: Sequence[KeyCheck]
) -> tuple[str | None, Refusal | None]:
    """Rules SWM-1, SWM-2 and MIG-2: a valid maintenance key, within a temporary key's ceiling."""
    maintenance = [c for c in checks if c.info is not None and c.info.kind is KeyKind.MAINTENANCE]
    valid = [c.info for c in maintenance if c.valid and c.info is not None]
    full = [info for info in valid if info.plan is not Plan.TEMPORARY]
    within = [info for info in valid if info.ceiling is not None and _within(catalog, target, info.ceiling)]
    if full or within:
        return f"maintenance:{(full or within)[0].key_id}", None
    ceilings = [info.ceiling for info in valid if info.ceiling is not None]
    if ceilings:  # rule MIG-2
        return None, Refusal(
            Reason.TEMPORARY_KEY_CEILING,
            "MIG-2",
            f"The temporary upgrade key allows releases up to {ceilings[0]} only, not {target.version}.",
        )
    if not maintenance:  # rule SWM-1
        return None, Refusal(
            Reason.MAINTENANCE_KEY_REQUIRED,
            "SWM-1",
            f"Upgrading beyond 7.1 to {target.version} needs a valid software maintenance key, "
            "and this server has none.",
        )
    best = max(maintenance, key=lambda c: c.passed)  # rule SWM-2: the best key's first failed check
    reason = best.reason or Reason.MAINTENANCE_KEY_REQUIRED
    return None, Refusal(
        reason, "SWM-2", best.message or "The server's software maintenance key is not valid."
    )


def _within(catalog: Catalog, target: Release, ceiling: str) -> bool:
    release = catalog.get(ceiling)
    return release is not None and target.index <= release.index


def inactive_features(catalog: Catalog, version: str, checks: Sequence[KeyCheck]) -> tuple[str, ...]:
    """Optional features introduced up to ``version`` that lack a valid feature key (rule SWM-6)."""
    keyed = {c.info.feature for c in checks if c.valid and c.info and c.info.kind is KeyKind.FEATURE}
    upto = catalog.release(version).index
    introduced = [f for r in catalog.releases[: upto + 1] for f in r.features]
    return tuple(f for f in introduced if f not in keyed)


def active_features(checks: Sequence[KeyCheck]) -> tuple[str, ...]:
    """Feature keys in force (several keys of one product stack; a feature is listed once)."""
    found = {c.info.feature for c in checks if c.valid and c.info and c.info.kind is KeyKind.FEATURE}
    return tuple(sorted(f for f in found if f))
