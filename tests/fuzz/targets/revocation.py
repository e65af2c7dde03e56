"""Revocation lists (agent/revocation.py ``parse_revocation_list``): the vendor publishes them, people
install them by hand.

Documented: parsing raises only KeyFormatError; accepting a parsed list into a trust store raises
only SignatureError or StaleRevocationError.
"""

from __future__ import annotations

from datetime import date

from agent.revocation import TrustStore, parse_revocation_list, sign_revocation_list
from common.errors import KeyFormatError, SignatureError, StaleRevocationError
from tests.fuzz import fixtures

TRUST = TrustStore(fixtures.ROOT_PUBLIC, revoked=frozenset({"OLD-1"}), revocation_sequence=2)


def seeds() -> list[bytes]:
    """Lists of no, one and several ids, and one signed by a certificate not made for revocations."""
    cert = fixtures.certificate()
    lists = [
        sign_revocation_list(3, date(2015, 6, 1), [], fixtures.SIGNER, cert),
        sign_revocation_list(4, date(2015, 6, 2), ["MNT-1"], fixtures.SIGNER, cert),
        sign_revocation_list(10**11, date(2015, 6, 3), ["A-1", "B 2", "c.3"], fixtures.SIGNER, cert),
        sign_revocation_list(5, date(2015, 6, 1), ["X"], fixtures.SIGNER, fixtures.certificate(("keys",))),
    ]
    return [revocations.text().encode() for revocations in lists]


def check(data: bytes) -> None:
    """Parse ``data`` as a revocation list and offer what parses to a trust store, as of its issue date."""
    try:
        revocations = parse_revocation_list(data)
    except KeyFormatError:
        return
    try:
        TRUST.accept(revocations, revocations.issued)
    except (SignatureError, StaleRevocationError):
        return
    assert revocations.text() == parse_revocation_list(revocations.text()).text()


def tokens() -> list[str]:
    """Words of the format for libFuzzer's dictionary."""
    words = [
        "Sequence: ",
        "Issued: ",
        "Revoked: ",
        "Certificate:",
        "Signature:",
        "-----BEGIN ALLWORX REVOCATION LIST-----",
        "-----END ALLWORX REVOCATION LIST-----",
    ]
    return [*words, *fixtures.TRICKY]  # fmt: skip
