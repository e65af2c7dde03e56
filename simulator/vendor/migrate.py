"""Allworx Migrate™: copy configuration and data from an old server to a new one (rules MIG-1, MIG-2).

Rules:

- MIG-1: both servers must run 8.0 or newer (``MIGRATE_REQUIRES_8_0`` otherwise, naming the
  single steps the server below 8.0 still has to take, SEQ-1: a 7.6 goes through 7.7). Records
  are imported under the vendor's import rules (:func:`agent.database.import_records`): the
  target's user limit, login-name and extension conflicts, MAC conflicts. Software keys are never
  copied: the target's ``keys/`` folder is not touched.
- MIG-2: the vendor may issue the old server a temporary upgrade key with ceiling 8.0.

The target's user limit is what its keys license (the base licence plus its highest valid user
key, :func:`agent.keys.licensed_users`) capped at its model's maximum: a new server whose
transferred user key has not been delivered yet takes only the base licence's users.

Invariants: the old server is only read (its database opened read-only); the import is one
transaction on the target's committed database, so it applies completely or not at all; a
refused or failed Migrate changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from agent import database
from agent.clock import as_date
from agent.keys import KeyCheck, KeyInfo, KeyKind, Plan, licensed_users, parse_key
from agent.policy import ServerFacts
from agent.store import ServerDir
from common.reasons import Reason, Refusal
from releases.catalog import Catalog, version_key
from simulator.issuer import issue_key
from simulator.keyring import VendorKeyring
from simulator.vendor.errors import DeskError, VendorRefusedError

MIGRATE_MINIMUM = "8.0"  # rule MIG-1
TEMPORARY_CEILING = "8.0"  # rule MIG-2


@dataclass(frozen=True, slots=True)
class MigrateReport:
    """What Migrate did (rule MIG-1); ``keys_copied`` is always 0."""

    old_serial: str
    new_serial: str
    old_release: str
    new_release: str
    user_limit: int
    imported: tuple[str, ...]
    disabled: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...]
    moved_extensions: tuple[tuple[int, int], ...]
    dropped_phones: tuple[str, ...]
    attendants: int
    voicemail: int
    call_log: int
    keys_copied: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "old_serial": self.old_serial,
            "new_serial": self.new_serial,
            "old_release": self.old_release,
            "new_release": self.new_release,
            "user_limit": self.user_limit,
            "imported": list(self.imported),
            "disabled": list(self.disabled),
            "renamed": [list(r) for r in self.renamed],
            "moved_extensions": [list(m) for m in self.moved_extensions],
            "dropped_phones": list(self.dropped_phones),
            "attendants": self.attendants,
            "voicemail": self.voicemail,
            "call_log": self.call_log,
            "keys_copied": self.keys_copied,
        }


def steps_to(catalog: Catalog, release: str, target: str = MIGRATE_MINIMUM) -> tuple[str, ...]:
    """The single releases a server on ``release`` installs to reach ``target`` (rule SEQ-1); () if there."""
    current, goal = catalog.release(release), catalog.release(target)
    return tuple(r.version for r in catalog.releases[current.index + 1 : goal.index + 1])


def judge_migrate(catalog: Catalog, old: ServerFacts, new: ServerFacts) -> Refusal | None:
    """Return why Migrate cannot run between these servers, or None (rule MIG-1)."""
    minimum = version_key(MIGRATE_MINIMUM)
    for role, facts in (("old", old), ("new", new)):
        if version_key(facts.release) < minimum:
            chain = " -> ".join((facts.release, *steps_to(catalog, facts.release)))
            return Refusal(
                Reason.MIGRATE_REQUIRES_8_0,
                "MIG-1",
                f"Migrate needs both servers on {MIGRATE_MINIMUM} or newer; the {role} server {facts.serial} "
                f"runs {facts.release}: upgrade it {chain}, one release at a time, first.",
            )
    return None


def user_limit(catalog: Catalog, model: str, checks: Sequence[KeyCheck]) -> int:
    """The users a server may hold: what its keys license, capped at its model's maximum."""
    return min(catalog.model(model).max_users, licensed_users(checks, catalog.base_users))


def _open(path: Path) -> ServerDir:
    server = ServerDir(path)
    server.check_exists()
    if server.journal.load() is not None:
        raise DeskError(
            f"{path}: an upgrade is in progress; Migrate waits for it to end",
            reason=Reason.UPGRADE_IN_PROGRESS,
        )
    return server


def migrate(catalog: Catalog, old_dir: Path, new_dir: Path, now: datetime | date) -> MigrateReport:
    """Copy configuration and data from the old server to the new one (rule MIG-1).

    Raises:
        VendorRefusedError: ``MIGRATE_REQUIRES_8_0`` when either server runs a release below 8.0.
        DeskError: the two directories are one server, or an upgrade is in progress on either.
        StoreError: a directory is not a server directory.
        DatabaseError: a database is missing or unreadable; the new server is then unchanged.
    """
    old, new = _open(old_dir), _open(new_dir)
    old_facts, new_facts = old.facts(), new.facts()
    if old_facts.serial == new_facts.serial:
        raise DeskError(f"{old_dir} and {new_dir} are the same server ({old_facts.serial})")
    refusal = judge_migrate(catalog, old_facts, new_facts)
    if refusal is not None:
        raise VendorRefusedError(refusal)
    limit = user_limit(catalog, new_facts.model, new.key_checks(as_date(now)))
    report = database.import_records(
        old.db_path(old.active_slot()), new.db_path(new.active_slot()), max_users=limit
    )
    return MigrateReport(
        old_serial=old_facts.serial,
        new_serial=new_facts.serial,
        old_release=old_facts.release,
        new_release=new_facts.release,
        user_limit=limit,
        imported=report.imported,
        disabled=report.disabled,
        renamed=report.renamed,
        moved_extensions=report.moved_extensions,
        dropped_phones=report.dropped_phones,
        attendants=report.attendants,
        voicemail=report.voicemail,
        call_log=report.call_log,
    )


def temporary_key(
    keyring: VendorKeyring,
    catalog: Catalog,
    server_dir: Path,
    now: datetime | date,
    ceiling: str = TEMPORARY_CEILING,
) -> KeyInfo:
    """Issue and install a temporary upgrade key with a ceiling release (rule MIG-2).

    Raises:
        DeskError: the server already runs the ceiling or newer, or the key did not install.
        KeyIssueError: ``ceiling`` is not a release in the catalogue.
        StoreError: not a server directory.
    """
    server, today = ServerDir(server_dir), as_date(now)
    facts = server.facts()
    if catalog.get(ceiling) is not None and version_key(facts.release) >= version_key(ceiling):
        raise DeskError(
            f"server {facts.serial} already runs {facts.release}: no temporary key to {ceiling} needed"
        )
    text = issue_key(
        keyring,
        serial=facts.serial,
        kind=KeyKind.MAINTENANCE,
        plan=Plan.TEMPORARY,
        start=today,
        ceiling=ceiling,
        catalog=catalog,
    )
    check = server.install_key(text, today)
    if not check.valid:
        raise DeskError(
            f"the temporary key did not install on {facts.serial}: {check.message}",
            reason=check.reason or Reason.BAD_INPUT,
        )
    return parse_key(text).info
