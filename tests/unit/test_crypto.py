"""Ed25519 primitives, root-signed certificates and signed documents (agent/crypto.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import pytest

from agent import crypto
from agent.crypto import Certificate, Problem
from common.errors import SignatureError
from common.reasons import Reason

ROOT = crypto.generate_private_key()
OTHER_ROOT = crypto.generate_private_key()
SIGNER = crypto.generate_private_key()
TODAY = date(2015, 6, 1)


def _cert(root: bytes = ROOT, purposes: tuple[str, ...] = ("releases",)) -> Certificate:
    return crypto.issue_certificate(
        root,
        signer_id="test-signer",
        public=crypto.public_key(SIGNER),
        purposes=purposes,
        not_before=date(2010, 1, 1),
        not_after=date(2020, 12, 31),
    )


def test_sign_and_verify_round_trip() -> None:
    """A signature verifies under its public key and fails for another message or key."""
    signature = crypto.sign(SIGNER, b"hello")
    assert crypto.verify(crypto.public_key(SIGNER), b"hello", signature)
    assert not crypto.verify(crypto.public_key(SIGNER), b"hellp", signature)
    assert not crypto.verify(crypto.public_key(ROOT), b"hello", signature)


@pytest.mark.parametrize(
    ("public", "signature"),
    [(b"short", b"x" * 64), (b"x" * 32, b"short"), (b"", b"")],
    ids=["short-key", "short-signature", "empty"],
)
def test_verify_never_raises_on_bad_lengths(public: bytes, signature: bytes) -> None:
    """Malformed key or signature bytes are simply not valid (no exception leaks out)."""
    assert crypto.verify(public, b"message", signature) is False


def test_bad_private_key_is_a_value_error() -> None:
    """A private key of the wrong size raises ValueError, translated from cryptography."""
    with pytest.raises(ValueError, match="32 raw bytes"):
        crypto.public_key(b"too short")


def test_signatures_and_canonical_json_are_deterministic() -> None:
    """Signing twice and encoding dicts in any key order give identical bytes."""
    assert crypto.sign(SIGNER, b"m") == crypto.sign(SIGNER, b"m")
    assert crypto.canonical_json({"b": 1, "a": [2]}) == crypto.canonical_json({"a": [2], "b": 1})


def test_certificate_encoding_round_trips() -> None:
    """A certificate survives encode/decode and its dict form unchanged."""
    cert = _cert()
    assert Certificate.decode(cert.encode()) == cert
    assert Certificate.from_dict(cert.to_dict()) == cert


@pytest.mark.parametrize(
    "text", ["", "not base64!", "aGVsbG8=", "eyJ0eXBlIjoiYWxsd29yeC1jZXJ0aWZpY2F0ZSJ9"], ids=str
)
def test_certificate_decode_rejects_garbage(text: str) -> None:
    """Garbage, non-JSON and incomplete certificates raise ValueError."""
    with pytest.raises(ValueError):  # reason: several distinct messages are valid here
        Certificate.decode(text)


@dataclass(frozen=True)
class CertCase:
    name: str
    cert: Certificate
    purpose: str
    today: date
    problem: Problem | None
    message: str


CERT_CASES = [
    CertCase("trusted", _cert(), "releases", TODAY, None, "trusted"),
    CertCase(
        "other root",
        _cert(OTHER_ROOT),
        "releases",
        TODAY,
        Problem.CERTIFICATE_UNTRUSTED,
        "certificate not signed by the pinned root",
    ),
    CertCase(
        "wrong purpose",
        _cert(),
        "keys",
        TODAY,
        Problem.CERTIFICATE_PURPOSE,
        "certificate lacks purpose 'keys'",
    ),
    CertCase(
        "expired",
        _cert(),
        "releases",
        date(2021, 1, 1),
        Problem.CERTIFICATE_EXPIRED,
        "certificate expired on 2020-12-31",
    ),
    CertCase("last day", _cert(), "releases", date(2020, 12, 31), None, "trusted"),
    CertCase(
        "not yet valid",
        _cert(),
        "releases",
        date(2009, 12, 31),
        Problem.CERTIFICATE_NOT_YET_VALID,
        "not valid before 2010-01-01",
    ),
    CertCase(
        "altered purposes",
        replace(_cert(), purposes=("releases", "keys")),
        "keys",
        TODAY,
        Problem.CERTIFICATE_UNTRUSTED,
        "not signed by the pinned root",
    ),
]


@pytest.mark.parametrize("case", CERT_CASES, ids=lambda c: c.name)
def test_certificate_checks(case: CertCase) -> None:
    """Each certificate problem is reported with its own problem and a message saying why."""
    result = crypto.check_certificate(case.cert, crypto.public_key(ROOT), case.purpose, case.today)
    assert result.ok is (case.problem is None)
    assert result.problem is case.problem
    assert case.message in result.message


def test_document_signature_mismatch_is_reported() -> None:
    """An altered payload under a trusted certificate fails with 'signature does not match'."""
    doc = crypto.sign_document(b"payload", SIGNER, _cert())
    assert crypto.verify_document(doc, crypto.public_key(ROOT), "releases", TODAY)
    altered = replace(doc, payload=b"payload!")
    result = crypto.verify_document(altered, crypto.public_key(ROOT), "releases", TODAY)
    assert result.problem is Problem.SIGNATURE_MISMATCH
    assert result.message == "signature does not match"


def test_require_document_raises_with_the_given_reason() -> None:
    """The thin wrapper raises SignatureError carrying the caller's reason code."""
    doc = crypto.sign_document(b"payload", SIGNER, _cert(OTHER_ROOT))
    with pytest.raises(SignatureError, match="pinned root") as caught:
        crypto.require_document(
            doc, crypto.public_key(ROOT), "releases", TODAY, reason=Reason.KEY_SIGNER_UNTRUSTED
        )
    assert caught.value.reason is Reason.KEY_SIGNER_UNTRUSTED


def test_sign_document_refuses_a_key_that_does_not_match_the_certificate() -> None:
    """Signing with a private key other than the certified one is a ValueError."""
    with pytest.raises(ValueError, match="does not match"):
        crypto.sign_document(b"payload", ROOT, _cert())


def test_issue_certificate_rejects_unknown_purposes_and_empty_periods() -> None:
    """Certificates only carry known purposes and a period that does not end before it starts."""
    public = crypto.public_key(SIGNER)
    with pytest.raises(ValueError, match="purposes"):
        crypto.issue_certificate(
            ROOT, signer_id="s", public=public, purposes=("admin",), not_before=TODAY, not_after=TODAY
        )
    with pytest.raises(ValueError, match="period"):
        crypto.issue_certificate(
            ROOT,
            signer_id="s",
            public=public,
            purposes=("keys",),
            not_before=TODAY,
            not_after=date(2000, 1, 1),
        )


def test_every_call_verifies_the_signature_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same valid bytes checked twice cost two Ed25519 checks: nothing is remembered."""
    private = crypto.generate_private_key()
    public = crypto.public_key(private)
    message = b"checked " + crypto.fingerprint(public).encode()
    signature = crypto.sign(private, message)
    checks: list[bytes] = []
    real = crypto.Ed25519PublicKey

    class Counting:
        @staticmethod
        def from_public_bytes(data: bytes) -> object:
            checks.append(data)
            return real.from_public_bytes(data)

    monkeypatch.setattr(crypto, "Ed25519PublicKey", Counting)
    assert crypto.verify(public, message, signature)
    assert crypto.verify(public, message, signature)
    assert len(checks) == 2
    forged = bytes([signature[0] ^ 1]) + signature[1:]
    assert not crypto.verify(public, message, forged)
    assert len(checks) == 3
