"""What an image is: the agent's view of one verified release target.

The release repository is a TUF repository (docs/releases.md); an image is the target
``images/<build>.img`` and its release facts are the target's ``custom`` metadata::

    {"version": "7.6", "build": "7.6.4.1", "kind": "release", "date": "2014-05-12",
     "db_schema": 24, "models": ["24x", ...], "phone_firmware": "2.9.1"}

Invariant: a :class:`Manifest` is only ever built from target information that
:mod:`agent.releasetrust` verified first (signatures, versions, expiry); :func:`manifest_from_target`
only checks that the signed facts are well formed, and raises
:class:`~common.errors.VerificationError` (``RELEASE_METADATA_INVALID``) when they are not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from common.errors import VerificationError
from common.reasons import Reason

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Manifest:
    """What one published image is: a release build or a patch build of a release."""

    version: str  # the two-part release, e.g. "7.6"
    build: str  # the four-part build the image holds, e.g. "7.6.4.1" or the patch "7.6.4.9"
    kind: str  # "release" or "patch" (rule SWM-7)
    date: date  # published on
    size: int  # bytes
    sha256: str  # hex digest of the image
    db_schema: int
    models: tuple[str, ...]
    phone_firmware: str


def _invalid(path: str, problem: str) -> VerificationError:
    return VerificationError(f"release target {path}: {problem}", reason=Reason.RELEASE_METADATA_INVALID)


def _field(custom: Mapping[str, Any], key: str, kind: type, path: str) -> Any:
    value = custom.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _invalid(path, f"field {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def manifest_from_target(
    path: str, length: int, hashes: Mapping[str, str], fields: Mapping[str, Any]
) -> Manifest:
    """Read the release facts of the verified target ``path`` (its length, hashes and other fields).

    Raises:
        VerificationError: (``RELEASE_METADATA_INVALID``) no SHA-256, no ``custom`` release facts,
            or a fact is missing or malformed.
    """
    sha256 = hashes.get("sha256")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise _invalid(path, "no SHA-256 of 64 lowercase hex digits")
    custom = fields.get("custom")
    if not isinstance(custom, Mapping):
        raise _invalid(path, "no release facts (custom metadata)")
    models = _field(custom, "models", list, path)
    if not all(isinstance(m, str) for m in models):
        raise _invalid(path, "models must be strings")
    kind = _field(custom, "kind", str, path)
    if kind not in ("release", "patch"):
        raise _invalid(path, f"kind must be 'release' or 'patch', got {kind!r}")
    try:
        published = date.fromisoformat(_field(custom, "date", str, path))
    except ValueError:
        raise _invalid(path, "date must be YYYY-MM-DD") from None
    return Manifest(
        version=_field(custom, "version", str, path),
        build=_field(custom, "build", str, path),
        kind=kind,
        date=published,
        size=length,
        sha256=sha256,
        db_schema=_field(custom, "db_schema", int, path),
        models=tuple(models),
        phone_firmware=_field(custom, "phone_firmware", str, path),
    )
