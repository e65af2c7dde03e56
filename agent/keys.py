"""Software keys: the data model, the text key-file format and verification into results.

Kinds (docs/rules.md, "Keys"): maintenance (plans ship-90d, anytime-1y, bundle-5y, temporary with a
ceiling release), feature, user expansion (a range such as 31-50), patch authorisation. Every key
is vendor-signed and bound to one serial.

Invariant: verification never raises for a bad key; it returns a :class:`KeyCheck` saying why.
The ordered checks are: format, signature chain, serial, revocation, validity window.
Parsing raises only :class:`~common.errors.KeyFormatError`, whatever the input.

The key file is text a partner can paste into an email::

    -----BEGIN ALLWORX SOFTWARE KEY-----
    Key-Id: MNT-AWX1234-0a1b2c3d
    Kind: maintenance
    ...
    Certificate:
     <base64 lines>
    Signature:
     <base64 lines>
    -----END ALLWORX SOFTWARE KEY-----

The signature covers the canonical JSON of the parsed :class:`KeyInfo`, not the text, so
line endings, indentation and quoting do not matter but any change to a value does.

``Starts`` and ``Expires`` are each a date or an instant. A date covers its whole UTC day: a key
starting on a date is valid from the first instant of that day, one expiring on it until the last.
An instant (ISO 8601 with its UTC offset, ``2026-11-30T18:05:00Z``) means exactly that instant;
both ends are inclusive. A key is judged at an instant (``now``); a bare date stands for its whole
UTC day, on which a key is valid only if it is valid all day. Dates and instants are never compared
directly: :func:`valid_from` and :func:`valid_until` turn both into aware instants.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from agent import armor, crypto
from agent.crypto import Certificate, SignatureCheck, SignedDocument
from agent.fileio import read_bounded
from agent.revocation import (
    REVOCATIONS_FILE,
    ROOT_FILE,
    RevocationList,
    TrustStore,
    install_revocation_list,
    load_trust,
    parse_revocation_list,
    sign_revocation_list,
    write_trust,
)
from common.errors import KeyFormatError, SignatureError, StoreError
from common.reasons import Reason


class KeyKind(StrEnum):
    """What a key licenses."""

    MAINTENANCE = "maintenance"
    FEATURE = "feature"
    USERS = "users"
    PATCH = "patch"


class Plan(StrEnum):
    """Maintenance plans (SWM-4, SWM-5, MIG-2)."""

    SHIP_90D = "ship-90d"
    ANYTIME_1Y = "anytime-1y"
    BUNDLE_5Y = "bundle-5y"
    TEMPORARY = "temporary"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """The signed payload of a key."""

    key_id: str
    kind: KeyKind
    serial: str
    issued: date
    starts: date | datetime | None = None  # a date (its whole UTC day) or an aware instant
    expires: date | datetime | None = None
    plan: Plan | None = None  # maintenance keys
    ceiling: str | None = None  # temporary maintenance keys: the highest release they allow
    feature: str | None = None  # feature keys, e.g. "T1"
    users: str | None = None  # user expansion keys, e.g. "51-100"
    patch_build: str | None = None  # patch authorisations, e.g. "7.6.4.9"
    count: int = 1  # licence count; keys of one product stack


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """The result of verifying one key for one server at one instant.

    ``passed`` counts the ordered checks that passed (format, signature, serial, revocation,
    window), so the best of several invalid keys is the one with the highest count (SWM-2).
    """

    info: KeyInfo | None
    valid: bool
    reason: Reason | None = None
    message: str = ""
    passed: int = 5

    @property
    def kind(self) -> KeyKind | None:
        """The key's kind, if it could be parsed."""
        return self.info.kind if self.info else None


KEY_BEGIN = "-----BEGIN ALLWORX SOFTWARE KEY-----"
KEY_END = "-----END ALLWORX SOFTWARE KEY-----"

# text field name -> KeyInfo attribute, in rendering order
_KEY_FIELDS = {
    "Key-Id": "key_id",
    "Kind": "kind",
    "Serial": "serial",
    "Plan": "plan",
    "Issued": "issued",
    "Starts": "starts",
    "Expires": "expires",
    "Ceiling": "ceiling",
    "Feature": "feature",
    "Users": "users",
    "Patch-Build": "patch_build",
    "Count": "count",
}
# the payload attributes each kind may and must carry
_ALLOWED = {
    KeyKind.MAINTENANCE: {"plan", "starts", "expires", "ceiling"},
    KeyKind.FEATURE: {"feature", "starts", "expires", "count"},
    KeyKind.USERS: {"users", "starts", "expires", "count"},
    KeyKind.PATCH: {"patch_build", "starts", "expires"},
}
_REQUIRED = {
    KeyKind.MAINTENANCE: {"plan", "starts", "expires"},
    KeyKind.FEATURE: {"feature"},
    KeyKind.USERS: {"users"},
    KeyKind.PATCH: {"patch_build"},
}
_USERS = re.compile(r"(\d{1,6})-(\d{1,6})")


# ---------------------------------------------------------------------------- key payloads


def payload_bytes(info: KeyInfo) -> bytes:
    """Return the canonical bytes a key's signature covers."""
    data: dict[str, str] = {"type": "allworx-software-key"}
    for f in fields(info):
        value = getattr(info, f.name)
        if value is not None:
            data[f.name] = value.isoformat() if isinstance(value, date) else str(value)
    return crypto.canonical_json(data)


def parse_users(text: str) -> tuple[int, int]:
    """Parse a user range such as ``"51-100"``.

    Raises:
        KeyFormatError: not ``LOW-HIGH`` with ``LOW <= HIGH``.
    """
    match = _USERS.fullmatch(text)
    if not match or int(match.group(1)) > int(match.group(2)):
        raise KeyFormatError(f"Users must be a range like 51-100, got {text[:20]!r}")
    return int(match.group(1)), int(match.group(2))


def _convert(attr: str, name: str, value: str) -> Any:
    if attr == "issued":
        return armor.parse_date(name, value)
    if attr in ("starts", "expires"):
        return armor.parse_when(name, value)
    if attr == "kind":
        try:
            return KeyKind(value)
        except ValueError:
            raise KeyFormatError(f"unknown Kind {value[:20]!r}") from None
    if attr == "plan":
        try:
            return Plan(value)
        except ValueError:
            raise KeyFormatError(f"unknown Plan {value[:20]!r}") from None
    if attr == "count":
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 100_000:
            raise KeyFormatError(f"Count must be a whole number from 1, got {value[:20]!r}")
        return int(value)
    return armor.parse_token(name, value)


def validate_info(info: KeyInfo) -> None:
    """Check that a payload is coherent for its kind.

    Raises:
        KeyFormatError: a field is missing, not allowed for the kind, or out of order.
    """
    present = {f.name for f in fields(info) if getattr(info, f.name) is not None}
    present -= {"key_id", "kind", "serial", "issued", "count"}
    if info.count != 1:
        present.add("count")
    if missing := _REQUIRED[info.kind] - present:
        raise KeyFormatError(f"a {info.kind} key needs {', '.join(sorted(missing))}")
    if extra := present - _ALLOWED[info.kind]:
        raise KeyFormatError(f"a {info.kind} key cannot carry {', '.join(sorted(extra))}")
    if info.plan is Plan.TEMPORARY and info.ceiling is None:  # rule MIG-2
        raise KeyFormatError("a temporary maintenance key needs a Ceiling release")
    if info.plan is not Plan.TEMPORARY and info.ceiling is not None:
        raise KeyFormatError("only a temporary maintenance key carries a Ceiling release")
    if isinstance(info.issued, datetime):
        raise KeyFormatError("Issued must be a date, not an instant")
    for name, when in (("Starts", info.starts), ("Expires", info.expires)):
        if isinstance(when, datetime) and when.utcoffset() is None:
            raise KeyFormatError(f"{name} must carry a UTC offset (e.g. 2026-11-30T18:05:00Z)")
    start, until = valid_from(info), valid_until(info)
    if start is not None and until is not None and until < start:
        raise KeyFormatError("the key expires before it starts")
    if info.users is not None:
        parse_users(info.users)


@dataclass(frozen=True, slots=True)
class SignedKey:
    """A parsed key file: its payload, the signer's certificate and the signature."""

    info: KeyInfo
    certificate: Certificate
    signature: bytes

    @property
    def document(self) -> SignedDocument:
        """The signed document the signature covers."""
        return SignedDocument(payload_bytes(self.info), self.certificate, self.signature)

    def text(self) -> str:
        """Return the canonical key-file text."""
        lines = []
        for name, attr in _KEY_FIELDS.items():
            value = getattr(self.info, attr)
            if value is None or (attr == "count" and value == 1):
                continue
            lines.append(f"{name}: {value.isoformat() if isinstance(value, date) else value}")
        return armor.render_block(KEY_BEGIN, KEY_END, lines, self.certificate, self.signature)


def parse_key(text: str | bytes) -> SignedKey:
    """Parse a key file, tolerating CRLF, blank lines, indentation and email quoting around it.

    Raises:
        KeyFormatError: anything malformed (the message says what).
    """
    found = armor.single_fields(
        armor.parse_block(text, KEY_BEGIN, KEY_END), [*_KEY_FIELDS, *armor.BLOCK_FIELDS]
    )
    values = {attr: _convert(attr, name, found[name]) for name, attr in _KEY_FIELDS.items() if name in found}
    for needed in ("Key-Id", "Kind", "Serial", "Issued"):
        if needed not in found:
            raise KeyFormatError(f"the {needed} field is missing")
    info = KeyInfo(**values)
    validate_info(info)
    certificate, signature = armor.signature_parts(found)
    return SignedKey(info, certificate, signature)


parse_key_text = parse_key  # the name the server directory (agent/store.py) uses


MAX_KEY_BYTES = 4 * armor.MAX_TEXT  # bytes: UTF-8 of the longest key text armor accepts


def installed_keys(folder: Path) -> list[SignedKey]:
    """Every ``*.key`` file in ``folder`` that parses, by file name (one that does not is skipped:
    it was never valid)."""
    keys = []
    for path in sorted(folder.glob("*.key")):
        try:
            keys.append(parse_key(read_bounded(path, MAX_KEY_BYTES).decode()))
        except (KeyFormatError, StoreError, OSError, UnicodeDecodeError):
            continue
    return keys


def sign_key(info: KeyInfo, signer_private: bytes, certificate: Certificate) -> SignedKey:
    """Sign a payload (vendor side; the simulator's issuer calls this).

    Raises:
        KeyFormatError: the payload is not coherent for its kind.
        ValueError: the signing key does not match the certificate.
    """
    validate_info(info)
    doc = crypto.sign_document(payload_bytes(info), signer_private, certificate)
    return SignedKey(info, certificate, doc.signature)


# ---------------------------------------------------------------------------- validity in time


def first_instant(when: date) -> datetime:
    """The first instant ``when`` covers: an instant is itself, a date the start of its UTC day."""
    if isinstance(when, datetime):
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return datetime.combine(when, time.min, UTC)


def last_instant(when: date) -> datetime:
    """The last instant ``when`` covers: an instant is itself, a date the end of its UTC day."""
    if isinstance(when, datetime):
        return first_instant(when)
    return datetime.combine(when, time.max, UTC)


def valid_from(info: KeyInfo) -> datetime | None:
    """The first instant the key is valid (None: no start)."""
    return first_instant(info.starts) if info.starts is not None else None


def valid_until(info: KeyInfo) -> datetime | None:
    """The last instant the key is valid, inclusive (None: it never expires)."""
    return last_instant(info.expires) if info.expires is not None else None


def utc_day(now: date) -> date:
    """The UTC calendar day of an instant (a date is its own day)."""
    return first_instant(now).astimezone(UTC).date() if isinstance(now, datetime) else now


def _when(value: date) -> str:
    """``on 2026-11-30`` for a date, ``at 2026-11-30T18:05:00+00:00`` for an instant."""
    return f"at {value.isoformat()}" if isinstance(value, datetime) else f"on {value.isoformat()}"


# ---------------------------------------------------------------------------- verification


def _fail(info: KeyInfo, reason: Reason, passed: int, message: str) -> KeyCheck:
    return KeyCheck(info=info, valid=False, reason=reason, message=message, passed=passed)


def _window(info: KeyInfo, now: date) -> KeyCheck:
    """Check 5: ``now`` within [starts, expires], both inclusive (rule SWM-2); a date: all its day."""
    if info.starts is not None and first_instant(now) < first_instant(info.starts):
        return _fail(
            info,
            Reason.KEY_NOT_YET_VALID,
            4,
            f"Key {info.key_id} is not valid until {info.starts.isoformat()}.",
        )
    if info.expires is not None and last_instant(now) > last_instant(info.expires):
        if info.kind is KeyKind.MAINTENANCE:
            return _fail(
                info,
                Reason.MAINTENANCE_KEY_EXPIRED,
                4,
                f"The software maintenance key {info.key_id} expired {_when(info.expires)}; "
                "renew maintenance to upgrade.",
            )
        return _fail(info, Reason.KEY_EXPIRED, 4, f"Key {info.key_id} expired {_when(info.expires)}.")
    return KeyCheck(info=info, valid=True, message=f"Key {info.key_id} is valid.", passed=5)


def check_key(
    key: SignedKey,
    trust: TrustStore,
    serial: str,
    now: datetime | date,
    *,
    check: SignatureCheck = crypto.verify,
) -> KeyCheck:
    """Verify a parsed key for server ``serial`` at ``now``: signature (by ``check``), serial,
    revocation, window.

    ``now`` is an aware instant; a date stands for its whole UTC day. The vendor certificate is
    checked on ``now``'s UTC day. Never raises: the result says which check failed first and why
    (rule SWM-2).
    """
    info = key.info
    result = crypto.verify_document(key.document, trust.root_public, "keys", utc_day(now), check=check)
    if not result:
        if result.problem is crypto.Problem.SIGNATURE_MISMATCH:
            return _fail(
                info,
                Reason.KEY_SIGNATURE_INVALID,
                1,
                f"Key {info.key_id} has been altered or forged: its signature does not match.",
            )
        return _fail(
            info,
            Reason.KEY_SIGNER_UNTRUSTED,
            1,
            f"Key {info.key_id} is not signed by a trusted vendor key ({result.message}).",
        )
    if info.serial != serial:
        return _fail(
            info,
            Reason.KEY_SERIAL_MISMATCH,
            2,
            f"Key {info.key_id} was issued for server {info.serial}, not this server ({serial}).",
        )
    if info.key_id in trust.revoked:
        return _fail(info, Reason.KEY_REVOKED, 3, f"Key {info.key_id} has been revoked by the vendor.")
    return _window(info, now)


def rejudge(check: KeyCheck, now: datetime | date) -> KeyCheck:
    """``check`` (made by :func:`check_key` on ``now``'s UTC day) judged again at the instant ``now``.

    Only the window depends on the instant; the earlier checks (signature chain, serial,
    revocation) depend on the day at most, so a check that failed one of them stands.
    """
    if check.info is None or check.passed < 4:
        return check
    return _window(check.info, now)


def check_key_text(text: str | bytes, trust: TrustStore, serial: str, now: datetime | date) -> KeyCheck:
    """Parse and verify a key file; a malformed file gives ``KEY_FORMAT_INVALID`` with ``passed=0``."""
    try:
        key = parse_key(text)
    except KeyFormatError as exc:
        return KeyCheck(
            info=None,
            valid=False,
            reason=Reason.KEY_FORMAT_INVALID,
            message=f"The key file is malformed: {exc}.",
            passed=0,
        )
    return check_key(key, trust, serial, now)


def require_valid(check: KeyCheck) -> KeyInfo:
    """Return the payload of a valid check (a thin raising wrapper over the result).

    Raises:
        KeyFormatError: the key could not be parsed.
        SignatureError: any other failed check (carrying its reason code).
    """
    if check.valid and check.info is not None:
        return check.info
    if check.info is None:
        raise KeyFormatError(check.message)
    raise SignatureError(check.message, reason=check.reason or Reason.KEY_SIGNATURE_INVALID)


# ---------------------------------------------------------------------------- pure helpers for the policy


def _valid(checks: Sequence[KeyCheck], kind: KeyKind) -> list[KeyInfo]:
    return [c.info for c in checks if c.valid and c.info is not None and c.info.kind is kind]


def best_check(checks: Sequence[KeyCheck], kind: KeyKind = KeyKind.MAINTENANCE) -> KeyCheck | None:
    """Return the best key of ``kind``: a valid one lasting longest, else the most checks passed (SWM-2)."""
    mine = [c for c in checks if c.info is not None and c.info.kind is kind]
    if not mine:
        return None
    return max(mine, key=lambda c: (c.valid, c.passed, _expiry_rank(c.info)))


def _expiry_rank(info: KeyInfo | None) -> datetime:
    if info is None:
        return _EARLIEST
    if info.plan is Plan.TEMPORARY:
        return _EARLIEST  # a full maintenance key beats a ceilinged one (rule MIG-2)
    return valid_until(info) or _LATEST


_EARLIEST, _LATEST = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def maintenance_state(checks: Sequence[KeyCheck]) -> Literal["valid", "expired", "none"]:
    """Return "valid" (a valid maintenance key), "expired" (only invalid ones) or "none" (SWM-1, SWM-2)."""
    maintenance = [c for c in checks if c.info is not None and c.info.kind is KeyKind.MAINTENANCE]
    if not maintenance:
        return "none"
    return "valid" if any(c.valid for c in maintenance) else "expired"


def feature_counts(checks: Sequence[KeyCheck]) -> dict[str, int]:
    """Return licence counts per feature from valid feature keys; keys of one product stack."""
    counts: dict[str, int] = {}
    for info in _valid(checks, KeyKind.FEATURE):
        if info.feature:
            counts[info.feature] = counts.get(info.feature, 0) + info.count
    return dict(sorted(counts.items()))


def active_features(checks: Sequence[KeyCheck]) -> frozenset[str]:
    """Return the features with a valid feature key (rule SWM-6)."""
    return frozenset(feature_counts(checks))


def user_range(checks: Sequence[KeyCheck]) -> tuple[int, int] | None:
    """Return the range of the highest valid user expansion key, or None."""
    ranges = [parse_users(info.users) for info in _valid(checks, KeyKind.USERS) if info.users]
    return max(ranges, key=lambda r: (r[1], r[0])) if ranges else None


def licensed_users(checks: Sequence[KeyCheck], base_users: int) -> int:
    """Return how many users the keys license: the top of the highest user key, else ``base_users``."""
    found = user_range(checks)
    return max(base_users, found[1]) if found else base_users


def patch_authorised(checks: Sequence[KeyCheck], build: str) -> KeyInfo | None:
    """Return a valid patch authorisation for exactly ``build``, or None (rule SWM-7)."""
    return next((i for i in _valid(checks, KeyKind.PATCH) if i.patch_build == build), None)


__all__ = [
    "REVOCATIONS_FILE",
    "ROOT_FILE",
    "KeyCheck",
    "KeyInfo",
    "KeyKind",
    "Plan",
    "RevocationList",
    "SignedKey",
    "TrustStore",
    "active_features",
    "best_check",
    "check_key",
    "check_key_text",
    "feature_counts",
    "first_instant",
    "install_revocation_list",
    "installed_keys",
    "last_instant",
    "licensed_users",
    "load_trust",
    "maintenance_state",
    "parse_key",
    "parse_key_text",
    "parse_revocation_list",
    "parse_users",
    "patch_authorised",
    "payload_bytes",
    "rejudge",
    "require_valid",
    "sign_key",
    "sign_revocation_list",
    "user_range",
    "utc_day",
    "valid_from",
    "valid_until",
    "validate_info",
    "write_trust",
]
