"""Software keys: the data model, the text key-file format and verification into results.

Kinds (SPEC "Keys"): maintenance (plans ship-90d, anytime-1y, bundle-5y, temporary with a
ceiling release), feature, user expansion (a range such as 31-50), patch authorisation. Every key
is vendor-signed and bound to one serial.

Invariant: verification never raises for a bad key; it returns a :class:`KeyCheck` saying why.
The ordered checks are: format, signature chain, serial, revocation, validity window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from agent.reasons import Reason


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
