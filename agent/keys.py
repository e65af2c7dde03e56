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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from agent import armor, crypto
from agent.crypto import Certificate, SignatureCheck, SignedDocument
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
from common.errors import KeyFormatError, SignatureError
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
    starts: date | None = None
    expires: date | None = None
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
    data: dict[str, Any] = {"type": "allworx-software-key"}
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
    if attr in ("issued", "starts", "expires"):
        return armor.parse_date(name, value)
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
        if not value.isdigit() or not 1 <= int(value) <= 100_000:
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
    if info.starts and info.expires and info.expires < info.starts:
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
    values: dict[str, Any] = {}
    for name, attr in _KEY_FIELDS.items():
        if name in found:
            values[attr] = _convert(attr, name, found[name])
    for needed in ("Key-Id", "Kind", "Serial", "Issued"):
        if needed not in found:
            raise KeyFormatError(f"the {needed} field is missing")
    info = KeyInfo(**values)
    validate_info(info)
    certificate, signature = armor.signature_parts(found)
    return SignedKey(info, certificate, signature)


parse_key_text = parse_key  # the name the server directory (agent/store.py) uses


def installed_keys(folder: Path) -> list[SignedKey]:
    """Every ``*.key`` file in ``folder`` that parses, by file name (one that does not is skipped:
    it was never valid)."""
    keys = []
    for path in sorted(folder.glob("*.key")):
        try:
            keys.append(parse_key(path.read_text()))
        except (KeyFormatError, OSError, UnicodeDecodeError):
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


# ---------------------------------------------------------------------------- verification


def _fail(info: KeyInfo, reason: Reason, passed: int, message: str) -> KeyCheck:
    return KeyCheck(info=info, valid=False, reason=reason, message=message, passed=passed)


def _window(info: KeyInfo, today: date) -> KeyCheck:
    """Check 5: today within [starts, expires], both inclusive (rule SWM-2)."""
    if info.starts is not None and today < info.starts:
        return _fail(
            info,
            Reason.KEY_NOT_YET_VALID,
            4,
            f"Key {info.key_id} is not valid until {info.starts.isoformat()}.",
        )
    if info.expires is not None and today > info.expires:
        if info.kind is KeyKind.MAINTENANCE:
            return _fail(
                info,
                Reason.MAINTENANCE_KEY_EXPIRED,
                4,
                f"The software maintenance key {info.key_id} expired on "
                f"{info.expires.isoformat()}; renew maintenance to upgrade.",
            )
        return _fail(info, Reason.KEY_EXPIRED, 4, f"Key {info.key_id} expired on {info.expires.isoformat()}.")
    return KeyCheck(info=info, valid=True, message=f"Key {info.key_id} is valid.", passed=5)


def check_key(
    key: SignedKey, trust: TrustStore, serial: str, today: date, *, check: SignatureCheck = crypto.verify
) -> KeyCheck:
    """Verify a parsed key for server ``serial`` on ``today``: signature (by ``check``), serial,
    revocation, window.

    Never raises: the result says which check failed first and why (rule SWM-2).
    """
    info = key.info
    result = crypto.verify_document(key.document, trust.root_public, "keys", today, check=check)
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
    return _window(info, today)


def check_key_text(text: str | bytes, trust: TrustStore, serial: str, today: date) -> KeyCheck:
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
    return check_key(key, trust, serial, today)


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


def _expiry_rank(info: KeyInfo | None) -> date:
    if info is None:
        return date.min
    if info.plan is Plan.TEMPORARY:
        return date.min  # a full maintenance key beats a ceilinged one (rule MIG-2)
    return info.expires or date.max


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
    "install_revocation_list",
    "installed_keys",
    "licensed_users",
    "load_trust",
    "maintenance_state",
    "parse_key",
    "parse_key_text",
    "parse_revocation_list",
    "parse_users",
    "patch_authorised",
    "payload_bytes",
    "require_valid",
    "sign_key",
    "sign_revocation_list",
    "user_range",
    "validate_info",
    "write_trust",
]
