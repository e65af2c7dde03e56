"""Checks of the values read back from a server's persisted files: the agent fails closed on them.

The bootloader environment (``boot.json``), the journal's last whole state (``journal.json``), the
slot descriptors (``slots/*/release.json``) and the identity (``identity.json``) steer what the
agent does next. A value out of its range there is never repaired or guessed (a flipped byte in
``boot.json`` that quietly meant slot ``a`` would report the old release and rebuild the new one
from the old database): it raises :class:`~common.errors.StoreError` with reason
``STATE_INVALID``, naming the file and the field, before anything is written.

What the power-cut design expects stays as it was (docs/power-cuts.md): a journal whose last line
is torn reads as the state before it, and a journal with no whole state, or an alien document
(missing fields, fields of the wrong JSON type), reads as unknown and rolls back. Only a whole
document of the right shape whose values are out of range fails closed: no crash writes one.

Invariant: the checks only read the values given; they never touch the disk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, TypedDict

from agent.machine import State
from common.errors import StoreError
from common.reasons import Reason

SLOTS = ("a", "b")
MAX_BOOT_ATTEMPTS_LIMIT = 100  # a bootloader counting more failed boots than this is not ours
_VERSION = re.compile(r"^[0-9]{1,2}(\.[0-9]{1,4}){1,3}$")  # 7.1, 8.0
_BUILD = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,6}){1,5}$")  # 7.1.4.7
_LEVEL = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # one topic level: a serial, a site
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_JOB_ID = re.compile(r"^[0-9a-z]{1,64}$")
_STATES = frozenset(s.value for s in State)


def invalid(path: Path, field: str, value: Any, expected: str) -> StoreError:
    """The error of one out-of-range value: ``FILE: field F is V, not E; nothing was changed``."""
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return StoreError(
        f"{path}: field {field!r} is {shown}, not {expected}; the server was left as it is "
        "(repair or restore the file)",
        reason=Reason.STATE_INVALID,
    )


def unreadable(path: Path, why: str) -> StoreError:
    """The error of a persisted file that cannot be read at all."""
    return StoreError(f"{path}: {why}; the server was left as it is", reason=Reason.STATE_INVALID)


def _int(value: Any, low: int, high: int | None = None) -> bool:
    whole = isinstance(value, int) and not isinstance(value, bool)
    return whole and low <= value and (high is None or value <= high)


def _matches(value: Any, pattern: re.Pattern[str]) -> bool:
    return isinstance(value, str) and pattern.match(value) is not None


class BootVariables(TypedDict):
    """The variables of ``boot.json``, each in range."""

    active: str  # a slot
    trial: str | None  # the other slot, or null
    attempts: int  # 0..max_attempts
    max_attempts: int  # 1..MAX_BOOT_ATTEMPTS_LIMIT


def check_boot(raw: Any, path: Path) -> BootVariables:
    """Return the bootloader variables of ``boot.json`` when every one is in range.

    Raises:
        StoreError: (``STATE_INVALID``) not an object of exactly ``active``, ``trial``,
            ``attempts`` and ``max_attempts``, or one of them out of range.
    """
    fields = ("active", "trial", "attempts", "max_attempts")
    if not isinstance(raw, dict):
        raise unreadable(path, "not a bootloader environment (not a JSON object)")
    for name in fields:
        if name not in raw:
            raise invalid(path, name, None, "present")
    for name in sorted(set(raw) - set(fields)):
        raise invalid(path, name, raw[name], "a bootloader variable")
    if raw["active"] not in SLOTS:
        raise invalid(path, "active", raw["active"], "slot a or b")
    if raw["trial"] is not None and (raw["trial"] not in SLOTS or raw["trial"] == raw["active"]):
        raise invalid(path, "trial", raw["trial"], "null or the slot that is not active")
    if not _int(raw["max_attempts"], 1, MAX_BOOT_ATTEMPTS_LIMIT):
        expected = f"a whole number 1..{MAX_BOOT_ATTEMPTS_LIMIT}"
        raise invalid(path, "max_attempts", raw["max_attempts"], expected)
    if not _int(raw["attempts"], 0, raw["max_attempts"]):
        raise invalid(path, "attempts", raw["attempts"], f"a whole number 0..{raw['max_attempts']}")
    return {
        "active": raw["active"],
        "trial": raw["trial"],
        "attempts": raw["attempts"],
        "max_attempts": raw["max_attempts"],
    }


def check_slot(raw: Any, path: Path) -> tuple[str, str, int]:
    """Return ``(version, build, db_schema)`` of a slot descriptor when they are in range.

    Raises:
        StoreError: (``STATE_INVALID``) not an object, or a field missing or out of range.
    """
    if not isinstance(raw, dict):
        raise unreadable(path, "not a slot descriptor (not a JSON object)")
    if not _matches(raw.get("version"), _VERSION):
        raise invalid(path, "version", raw.get("version"), "a release such as 7.1")
    if not _matches(raw.get("build"), _BUILD):
        raise invalid(path, "build", raw.get("build"), "a build such as 7.1.4.7")
    if not _int(raw.get("db_schema"), 0, 10_000):
        raise invalid(path, "db_schema", raw.get("db_schema"), "a whole number 0..10000")
    return raw["version"], raw["build"], raw["db_schema"]


def check_identity(raw: Mapping[str, Any], path: Path) -> None:
    """Check the values of ``identity.json`` (the caller parses the shipping date).

    Raises:
        StoreError: (``STATE_INVALID``) the serial, site, model, MAC or repository out of range.
    """
    for name in ("serial", "site"):
        if name in raw and not _matches(raw[name], _LEVEL):
            raise invalid(path, name, raw[name], "1-64 letters, digits, '.', '_' or '-'")
    if not _matches(raw.get("model"), _LEVEL):
        raise invalid(path, "model", raw.get("model"), "a model name")
    if not _matches(raw.get("mac"), _MAC):
        raise invalid(path, "mac", raw.get("mac"), "a MAC address such as 00:0A:DD:12:34:56")
    if "repo" in raw and not isinstance(raw["repo"], str):
        raise invalid(path, "repo", raw["repo"], "a path")
    if "shipped" in raw and not isinstance(raw["shipped"], str | date):
        raise invalid(path, "shipped", raw["shipped"], "a date YYYY-MM-DD")


def check_job(job: Any, path: Path) -> None:
    """Check the values of the journal's last whole state (an :class:`agent.journal.Job`).

    The journal's own "unknown" (no whole state, an alien document) is not checked: it rolls back.

    Raises:
        StoreError: (``STATE_INVALID``) a state, slot, release, build, count or error out of range.
    """
    if job.state == "unknown":
        return
    if job.state not in _STATES:
        raise invalid(path, "state", job.state, "a state of the upgrade's transition table")
    if not _matches(job.job_id, _JOB_ID):
        raise invalid(path, "job_id", job.job_id, "a job id")
    for name in ("old_slot", "new_slot"):
        if getattr(job, name) not in SLOTS:
            raise invalid(path, name, getattr(job, name), "slot a or b")
    if job.old_slot == job.new_slot:
        raise invalid(path, "new_slot", job.new_slot, "the slot that is not old_slot")
    _check_releases(job, path)
    if not _int(job.persist_count, 0):
        raise invalid(path, "persist_count", job.persist_count, "a count")
    if not _int(job.db_schema, 0, 10_000):
        raise invalid(path, "db_schema", job.db_schema, "a whole number 0..10000")
    if not isinstance(job.rebuilds_database, bool):
        raise invalid(path, "rebuilds_database", job.rebuilds_database, "true or false")
    if not isinstance(job.extra, dict):
        raise invalid(path, "extra", job.extra, "an object")
    _check_error(job.error, path)


def _check_releases(job: Any, path: Path) -> None:
    for name in ("target", "release", "from_release"):
        if not _matches(getattr(job, name), _VERSION):
            raise invalid(path, name, getattr(job, name), "a release such as 7.1")
    for name in ("build", "from_build"):
        if not _matches(getattr(job, name), _BUILD):
            raise invalid(path, name, getattr(job, name), "a build such as 7.1.4.7")


def _check_error(error: Any, path: Path) -> None:
    if error is None:
        return
    if not isinstance(error, dict) or not all(isinstance(v, str) for v in error.values()):
        raise invalid(path, "error", error, "null, or an object of a reason and a message")
    if error.get("reason", Reason.BAD_INPUT.value) not in Reason.__members__:
        raise invalid(path, "error.reason", error.get("reason"), "a reason code")


OWN_FOLDERS = ("slots", "slots/a", "slots/b", "update", "keys", "trust", "agent", "phones")


def check_folders(root: Path) -> None:
    """Every folder the agent writes in is a real folder of ``root``, not a link that would take a
    write outside the server directory (a missing one is made when needed).

    Raises:
        StoreError: (``STATE_INVALID``) one of them is a symbolic link or not a folder.
    """
    for name in OWN_FOLDERS:
        path = root / name
        if path.is_symlink():
            raise unreadable(path, "a symbolic link where the server's own folder belongs")
        if path.exists() and not path.is_dir():
            raise unreadable(path, "not a folder")
