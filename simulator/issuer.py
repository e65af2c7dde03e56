"""Key issuance, the vendor's side: signed key files for one serial.

Expiry comes from the plan unless given (docs/rules.md "Keys", SWM-4, SWM-5, MIG-2): ship-90d lasts 90
days from the start, anytime-1y one year, bundle-5y five years, temporary 60 days and carries a
ceiling release; feature, user and patch keys do not expire unless ``expires`` is given. ``start``
and ``expires`` may each be a date or an aware instant; a plan's expiry is always a date, counted
from the start's UTC day, and the issue date is that day too.

Key ids are unique and readable: ``<MNT|FEA|USR|PAT>-<serial>-<8 hex>``.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import TypeVar

from agent.keys import KeyInfo, KeyKind, Plan, parse_key, sign_key, utc_day, validate_info
from common.errors import KeyFormatError, KeyIssueError
from releases.catalog import REBUILD_RELEASE, Catalog, default_catalog
from simulator.keyring import VendorKeyring

TEMPORARY_DAYS = 60  # rule MIG-2: simulated lifetime of a temporary upgrade key
SHIP_DAYS = 90  # rule SWM-4
_E = TypeVar("_E", KeyKind, Plan)
_PREFIX = {KeyKind.MAINTENANCE: "MNT", KeyKind.FEATURE: "FEA", KeyKind.USERS: "USR", KeyKind.PATCH: "PAT"}


def add_years(start: date, years: int) -> date:
    """Return ``start`` moved ``years`` calendar years on (29 February becomes 28 February)."""
    try:
        return start.replace(year=start.year + years)
    except ValueError:
        return start.replace(year=start.year + years, day=28)


def plan_expiry(plan: Plan, start: date) -> date:
    """Return when a maintenance key of ``plan`` starting on ``start`` expires (inclusive)."""
    match plan:
        case Plan.SHIP_90D:
            return start + timedelta(days=SHIP_DAYS)  # rule SWM-4
        case Plan.ANYTIME_1Y:
            return add_years(start, 1)  # rule SWM-5
        case Plan.BUNDLE_5Y:
            return add_years(start, 5)  # rule SWM-5
        case Plan.TEMPORARY:
            return start + timedelta(days=TEMPORARY_DAYS)  # rule MIG-2
    raise AssertionError(plan)  # pragma: no cover


def new_key_id(kind: KeyKind, serial: str) -> str:
    """Return a fresh readable key id such as ``MNT-AWX00A1B2-1f2e3d4c``."""
    return f"{_PREFIX[kind]}-{serial}-{secrets.token_hex(4)}"


def _enum(cls: type[_E], value: str | _E, what: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(member.value for member in cls)
        raise KeyIssueError(f"unknown {what} {value!r} (choose from {choices})") from None


def _check_references(catalog: Catalog, ceiling: str | None, patch_build: str | None) -> None:
    if ceiling is not None and catalog.get(ceiling) is None:
        raise KeyIssueError(f"the ceiling {ceiling!r} is not a release in the catalogue")
    if patch_build is not None and catalog.patch(patch_build) is None and catalog.get(patch_build) is None:
        raise KeyIssueError(f"the patch build {patch_build!r} is not in the catalogue")


def issue_key(
    keyring: VendorKeyring,
    *,
    serial: str,
    kind: KeyKind | str,
    plan: Plan | str | None = None,
    start: date | datetime,
    ceiling: str | None = None,
    feature: str | None = None,
    users: str | None = None,
    patch_build: str | None = None,
    count: int = 1,
    expires: date | datetime | None = None,
    issued: date | None = None,
    catalog: Catalog | None = None,
) -> str:
    """Issue a signed key and return its key-file text.

    Raises:
        KeyIssueError: an unknown kind or plan, a missing or misplaced field (e.g. a temporary key
            without a ceiling), or a ceiling or patch build not in the catalogue.
    """
    key_kind = _enum(KeyKind, kind, "kind")
    key_plan = _enum(Plan, plan, "plan") if plan is not None else None
    if key_kind is KeyKind.MAINTENANCE and key_plan is None:
        raise KeyIssueError("a maintenance key needs a plan")
    if key_plan is not None and expires is None:
        expires = plan_expiry(key_plan, utc_day(start))
    _check_references(catalog or default_catalog(), ceiling, patch_build)
    info = KeyInfo(
        key_id=new_key_id(key_kind, serial),
        kind=key_kind,
        serial=serial,
        issued=utc_day(issued or start),
        starts=start,
        expires=expires,
        plan=key_plan,
        ceiling=ceiling,
        feature=feature,
        users=users,
        patch_build=patch_build,
        count=count,
    )
    try:
        validate_info(info)
        private, cert = keyring.signing_key("keys")
        return sign_key(info, private, cert).text()
    except KeyFormatError as exc:
        raise KeyIssueError(str(exc)) from exc


def ship_key(
    keyring: VendorKeyring, serial: str, shipped: date, catalog: Catalog | None = None
) -> str | None:
    """Return the 90-day maintenance key a new server ships with, or None before the programme (SWM-4).

    The programme began with 7.1: servers shipped before 7.1's release date came with no key.
    """
    catalog = catalog or default_catalog()
    if shipped < catalog.release(REBUILD_RELEASE).date:  # rule SWM-4
        return None
    return issue_key(keyring, serial=serial, kind=KeyKind.MAINTENANCE, plan=Plan.SHIP_90D, start=shipped)


def tamper(text: str) -> str:
    """Return the key with its payload altered after signing, so its signature no longer matches.

    Pushes Expires out a year (or, for a key without one, raises its Count), keeping the
    original certificate and signature: what a partner editing a key file would produce.

    Raises:
        KeyFormatError: ``text`` is not a key file.
    """
    key = parse_key(text)
    info = key.info
    if info.expires is not None:
        altered = replace(info, expires=add_years(info.expires, 1))
    elif info.kind in (KeyKind.FEATURE, KeyKind.USERS):
        altered = replace(info, count=info.count + 100)
    else:
        altered = replace(info, expires=add_years(info.starts or info.issued, 10))
    return replace(key, info=altered).text()
