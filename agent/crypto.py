"""Ed25519 keys, root-signed certificates and signed documents: the one module importing ``cryptography``.

Every third-party exception is translated here: callers see ``ValueError`` for bad key
material of their own, and :class:`~common.errors.SignatureError` from :func:`require_document`.

Trust model: one pinned vendor *root* (a raw Ed25519 public key) signs :class:`Certificate` s for
signing keys, each limited to purposes ("keys", "releases", "revocations", "operator") and a
validity period. A document is trusted for a purpose when its certificate is signed by the pinned
root, allows the purpose, is within its period, and the document's signature verifies under the
certificate's key. Verification never raises: it returns a :class:`VerificationResult` saying why.

Invariant: canonical encodings are deterministic (sorted-key compact ASCII JSON), and Ed25519
signatures are deterministic, so signing the same payload with the same key yields the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any, Literal, TypedDict

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from common.errors import SignatureError
from common.reasons import Reason

PURPOSES = ("keys", "releases", "revocations", "operator")
KEY_SIZE = 32  # bytes, raw Ed25519 private and public keys
SIGNATURE_SIZE = 64  # bytes, an Ed25519 signature

SignatureCheck = Callable[[bytes, bytes, bytes], bool]  # (public, message, signature): as :func:`verify`


# ---------------------------------------------------------------------------- raw Ed25519


def generate_private_key() -> bytes:
    """Return a new raw 32-byte Ed25519 private key."""
    return Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _private(private: bytes) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_private_bytes(private)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"an Ed25519 private key must be {KEY_SIZE} raw bytes") from exc


def public_key(private: bytes) -> bytes:
    """Return the raw 32-byte public key of a raw private key.

    Raises:
        ValueError: ``private`` is not a 32-byte Ed25519 private key.
    """
    return _private(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(private: bytes, message: bytes) -> bytes:
    """Return the 64-byte Ed25519 signature of ``message`` (used for documents and operator commands).

    Raises:
        ValueError: ``private`` is not a 32-byte Ed25519 private key.
    """
    return _private(private).sign(message)


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Return whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public``.

    Every call verifies; never raises.
    """
    if len(public) != KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def fingerprint(public: bytes) -> str:
    """Return a short readable id of a public key (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(public).hexdigest()[:16]


def canonical_json(value: Any) -> bytes:
    """Return the deterministic encoding signed everywhere: sorted keys, compact, ASCII."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def decode_hex(text: str, size: int | None = None) -> bytes:
    """Decode hex text (whitespace ignored), optionally requiring ``size`` bytes.

    Raises:
        ValueError: not hex, or the wrong length.
    """
    try:
        raw = bytes.fromhex("".join(text.split()))
    except ValueError as exc:
        raise ValueError("not hexadecimal") from exc
    if size is not None and len(raw) != size:
        raise ValueError(f"expected {size} bytes, got {len(raw)}")
    return raw


def decode_base64(text: str) -> bytes:
    """Decode strict base64 text (whitespace ignored).

    Raises:
        ValueError: not valid base64.
    """
    try:
        return base64.b64decode("".join(text.split()).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not valid base64") from exc


# ---------------------------------------------------------------------------- certificates


class CertificateFields(TypedDict):
    """What the vendor root signs of a certificate (keys in canonical order)."""

    not_after: str  # ISO date
    not_before: str  # ISO date
    public_key: str  # hex
    purposes: list[str]
    signer_id: str
    type: Literal["allworx-certificate"]


class CertificateJson(CertificateFields):
    """A certificate's JSON form: the signed fields and the root's signature (hex)."""

    signature: str


@dataclass(frozen=True, slots=True)
class Certificate:
    """A signing key's public half, its purposes and validity, signed by the vendor root."""

    signer_id: str
    public_key: bytes
    purposes: tuple[str, ...]
    not_before: date
    not_after: date
    signature: bytes = b""

    def _signed_fields(self) -> CertificateFields:
        return {
            "not_after": self.not_after.isoformat(),
            "not_before": self.not_before.isoformat(),
            "public_key": self.public_key.hex(),
            "purposes": list(self.purposes),
            "signer_id": self.signer_id,
            "type": "allworx-certificate",
        }

    def tbs(self) -> bytes:
        """Return the canonical bytes the root signs (every field but the signature)."""
        return canonical_json(self._signed_fields())

    def to_dict(self) -> CertificateJson:
        """Return the JSON form (with the signature)."""
        return {**self._signed_fields(), "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, data: Any) -> Certificate:
        """Parse the JSON form.

        Raises:
            ValueError: a field is missing or malformed.
        """
        if not isinstance(data, dict) or data.get("type") != "allworx-certificate":
            raise ValueError("not an Allworx certificate")
        try:
            purposes = data["purposes"]
            if not isinstance(purposes, list) or not all(p in PURPOSES for p in purposes):
                raise ValueError(f"unknown purposes {purposes!r}")
            signer_id = data["signer_id"]
            if not isinstance(signer_id, str) or not signer_id:
                raise ValueError("signer_id must be a non-empty string")
            return cls(
                signer_id=signer_id,
                public_key=decode_hex(_text(data["public_key"]), KEY_SIZE),
                purposes=tuple(purposes),
                not_before=date.fromisoformat(_text(data["not_before"])),
                not_after=date.fromisoformat(_text(data["not_after"])),
                signature=decode_hex(_text(data["signature"]), SIGNATURE_SIZE),
            )
        except KeyError as exc:
            raise ValueError(f"certificate field {exc.args[0]!r} is missing") from exc

    def encode(self) -> str:
        """Return the certificate as one base64 string (for text files)."""
        return base64.b64encode(canonical_json(self.to_dict())).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Certificate:
        """Parse :meth:`encode` output (whitespace ignored).

        Raises:
            ValueError: not a well-formed certificate.
        """
        raw = decode_base64(text)
        try:
            data = json.loads(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ValueError("certificate is not JSON") from exc
        return cls.from_dict(data)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def issue_certificate(
    root_private: bytes,
    *,
    signer_id: str,
    public: bytes,
    purposes: tuple[str, ...],
    not_before: date,
    not_after: date,
) -> Certificate:
    """Return a certificate for ``public`` signed by the root.

    Raises:
        ValueError: an unknown purpose, an empty period, or bad key material.
    """
    if not purposes or any(p not in PURPOSES for p in purposes):
        raise ValueError(f"purposes must be among {PURPOSES}, got {purposes!r}")
    if not_after < not_before:
        raise ValueError("a certificate's period must not end before it starts")
    if len(public) != KEY_SIZE:
        raise ValueError(f"a public key must be {KEY_SIZE} bytes")
    unsigned = Certificate(signer_id, public, tuple(purposes), not_before, not_after)
    return Certificate(
        signer_id, public, tuple(purposes), not_before, not_after, sign(root_private, unsigned.tbs())
    )


# ---------------------------------------------------------------------------- documents


class Problem(StrEnum):
    """Why a signed document did not verify (first failed check, in this order)."""

    CERTIFICATE_UNTRUSTED = "certificate_untrusted"
    CERTIFICATE_PURPOSE = "certificate_purpose"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    CERTIFICATE_EXPIRED = "certificate_expired"
    SIGNATURE_MISMATCH = "signature_mismatch"


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """The outcome of verifying a signed document: ok, or the problem and why."""

    ok: bool
    message: str
    problem: Problem | None = None
    signer_id: str | None = None

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True, slots=True)
class SignedDocument:
    """Payload bytes, the certificate of the key that signed them, and the signature."""

    payload: bytes
    certificate: Certificate
    signature: bytes


def sign_document(payload: bytes, signer_private: bytes, certificate: Certificate) -> SignedDocument:
    """Sign ``payload`` with a signing key whose certificate is ``certificate``.

    Raises:
        ValueError: bad key material, or the private key does not match the certificate.
    """
    if public_key(signer_private) != certificate.public_key:
        raise ValueError("the signing key does not match its certificate")
    return SignedDocument(payload, certificate, sign(signer_private, payload))


def check_certificate(
    cert: Certificate, root_public: bytes, purpose: str, today: date, *, check: SignatureCheck = verify
) -> VerificationResult:
    """Verify a certificate against the pinned root for ``purpose`` on ``today``; never raises.

    ``check`` verifies the root's signature (:func:`verify` unless the caller gives another).
    """
    if not check(root_public, cert.tbs(), cert.signature):
        return VerificationResult(
            False, "certificate not signed by the pinned root", Problem.CERTIFICATE_UNTRUSTED, cert.signer_id
        )
    if purpose not in cert.purposes:
        return VerificationResult(
            False, f"certificate lacks purpose {purpose!r}", Problem.CERTIFICATE_PURPOSE, cert.signer_id
        )
    if today < cert.not_before:
        return VerificationResult(
            False,
            f"certificate not valid before {cert.not_before.isoformat()}",
            Problem.CERTIFICATE_NOT_YET_VALID,
            cert.signer_id,
        )
    if today > cert.not_after:
        return VerificationResult(
            False,
            f"certificate expired on {cert.not_after.isoformat()}",
            Problem.CERTIFICATE_EXPIRED,
            cert.signer_id,
        )
    return VerificationResult(True, f"certificate {cert.signer_id} is trusted", None, cert.signer_id)


def verify_document(
    doc: SignedDocument, root_public: bytes, purpose: str, today: date, *, check: SignatureCheck = verify
) -> VerificationResult:
    """Verify the certificate chain and the signature of ``doc`` (each by ``check``); never raises."""
    chain = check_certificate(doc.certificate, root_public, purpose, today, check=check)
    if not chain:
        return chain
    if not check(doc.certificate.public_key, doc.payload, doc.signature):
        return VerificationResult(
            False, "signature does not match", Problem.SIGNATURE_MISMATCH, doc.certificate.signer_id
        )
    return VerificationResult(True, f"signed by {doc.certificate.signer_id}", None, doc.certificate.signer_id)


def require_document(
    doc: SignedDocument,
    root_public: bytes,
    purpose: str,
    today: date,
    *,
    reason: Reason = Reason.KEY_SIGNATURE_INVALID,
    check: SignatureCheck = verify,
) -> VerificationResult:
    """Verify ``doc`` like :func:`verify_document`, raising on failure.

    Raises:
        SignatureError: the document does not verify (carrying ``reason``).
    """
    result = verify_document(doc, root_public, purpose, today, check=check)
    if not result:
        raise SignatureError(result.message, reason=reason)
    return result
