"""Signed release manifests: what an image is (size, SHA-256, schema, models), signed by the vendor.

A manifest file ``manifests/<build>.manifest`` is JSON::

    {"format": "allworx-signed-manifest", "manifest": {...}, "certificate": {...}, "signature": "<hex>"}

The signature covers the canonical JSON of the ``manifest`` object and must come from a
certificate with purpose "releases" chaining to the pinned vendor root.

Invariant: :func:`load_manifest` verifies the signature *before* trusting any field, and raises
:class:`~common.errors.SignatureError` (``IMAGE_SIGNATURE_INVALID``) for a bad or altered
manifest, :class:`~common.errors.CatalogError` (file, entry, problem) for a malformed one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from agent import crypto
from agent.crypto import Certificate, SignedDocument
from common.errors import CatalogError
from common.reasons import Reason

SCHEMA_VERSION = 1
FILE_FORMAT = "allworx-signed-manifest"
MANIFEST_TYPE = "allworx-release-manifest"
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
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object the signature covers."""
        return {
            "type": MANIFEST_TYPE,
            "schema_version": self.schema_version,
            "version": self.version,
            "build": self.build,
            "kind": self.kind,
            "date": self.date.isoformat(),
            "size": self.size,
            "sha256": self.sha256,
            "db_schema": self.db_schema,
            "models": list(self.models),
            "phone_firmware": self.phone_firmware,
        }


def _field(data: dict[str, Any], key: str, kind: type, file: str, entry: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CatalogError(file, entry, f"field {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def manifest_from_dict(data: dict[str, Any], file: str) -> Manifest:
    """Parse a manifest object.

    Raises:
        CatalogError: a field is missing or malformed.
    """
    entry = f"manifest {data.get('build')!r}"
    if data.get("type") != MANIFEST_TYPE or data.get("schema_version") != SCHEMA_VERSION:
        raise CatalogError(file, entry, f"not a version {SCHEMA_VERSION} release manifest")
    models = _field(data, "models", list, file, entry)
    if not all(isinstance(m, str) for m in models):
        raise CatalogError(file, entry, "models must be strings")
    sha256 = _field(data, "sha256", str, file, entry)
    if not _SHA256.fullmatch(sha256):
        raise CatalogError(file, entry, "sha256 must be 64 lowercase hex digits")
    size = _field(data, "size", int, file, entry)
    if size < 0:
        raise CatalogError(file, entry, "size must not be negative")
    kind = _field(data, "kind", str, file, entry)
    if kind not in ("release", "patch"):
        raise CatalogError(file, entry, f"kind must be 'release' or 'patch', got {kind!r}")
    try:
        published = date.fromisoformat(_field(data, "date", str, file, entry))
    except ValueError:
        raise CatalogError(file, entry, "date must be YYYY-MM-DD") from None
    return Manifest(
        version=_field(data, "version", str, file, entry),
        build=_field(data, "build", str, file, entry),
        kind=kind,
        date=published,
        size=size,
        sha256=sha256,
        db_schema=_field(data, "db_schema", int, file, entry),
        models=tuple(models),
        phone_firmware=_field(data, "phone_firmware", str, file, entry),
    )


def encode_signed_manifest(doc: SignedDocument) -> bytes:
    """Return the file content for a signed manifest document (payload: canonical manifest JSON)."""
    data = {
        "format": FILE_FORMAT,
        "manifest": json.loads(doc.payload),
        "certificate": doc.certificate.to_dict(),
        "signature": doc.signature.hex(),
    }
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("ascii")


def _parse_document(file: str, raw: bytes) -> tuple[SignedDocument, dict[str, Any]]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CatalogError(file, "(file)", f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
        raise CatalogError(file, "(file)", f"not a {FILE_FORMAT} file")
    manifest = data.get("manifest")
    entry = f"manifest {manifest.get('build')!r}" if isinstance(manifest, dict) else "manifest"
    if not isinstance(manifest, dict):
        raise CatalogError(file, entry, "the 'manifest' object is missing")
    try:
        certificate = Certificate.from_dict(data.get("certificate"))
        signature = crypto.decode_hex(str(data.get("signature", "")), crypto.SIGNATURE_SIZE)
    except ValueError as exc:
        raise CatalogError(file, entry, f"malformed certificate or signature: {exc}") from exc
    return SignedDocument(crypto.canonical_json(manifest), certificate, signature), manifest


def load_manifest(
    path: Path, root_public: bytes, today: date, *, check: crypto.SignatureCheck = crypto.verify
) -> Manifest:
    """Read, verify (signatures by ``check``) and parse a signed manifest.

    Raises:
        CatalogError: unreadable or malformed (names the file, the entry and the problem), or the
            manifest names another build than its file name.
        SignatureError: not signed by a "releases" certificate of the pinned root, or altered
            (reason ``IMAGE_SIGNATURE_INVALID``).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogError(str(path), "(file)", f"cannot read: {exc.strerror}") from exc
    return verify_manifest(str(path), raw, root_public, today, check=check)


def verify_manifest(
    file: str, raw: bytes, root_public: bytes, today: date, *, check: crypto.SignatureCheck = crypto.verify
) -> Manifest:
    """Verify and parse the bytes ``raw`` of the manifest file ``file`` (signatures by ``check``).

    Raises:
        CatalogError: malformed, or the manifest names another build than its file name.
        SignatureError: not signed by a "releases" certificate of the root, or altered
            (reason ``IMAGE_SIGNATURE_INVALID``).
    """
    doc, data = _parse_document(file, raw)
    crypto.require_document(
        doc, root_public, "releases", today, reason=Reason.IMAGE_SIGNATURE_INVALID, check=check
    )
    manifest = manifest_from_dict(data, file)
    path = Path(file)
    if path.suffix == ".manifest" and path.stem != manifest.build:
        raise CatalogError(file, f"manifest {manifest.build!r}", "the file name names another build")
    return manifest
