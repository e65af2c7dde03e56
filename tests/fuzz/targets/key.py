"""Key files (agent/keys.py ``parse_key``): they come by email, on USB sticks and in ``install-key``.

Documented: parsing raises only KeyFormatError; a parsed key renders as text that parses back to
the same key; verifying a parsed key never raises (it returns a KeyCheck).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from agent.keys import KeyInfo, KeyKind, Plan, TrustStore, check_key, parse_key, sign_key
from common.errors import KeyFormatError
from tests.fuzz import fixtures

INFOS = [
    KeyInfo("MNT-1", KeyKind.MAINTENANCE, fixtures.SERIAL, date(2015, 1, 1), date(2015, 1, 1),
            date(2016, 1, 1), Plan.ANYTIME_1Y),
    KeyInfo("MNT-2", KeyKind.MAINTENANCE, fixtures.SERIAL, date(2015, 1, 1), fixtures.NOW,
            fixtures.NOW + timedelta(days=30), Plan.TEMPORARY, ceiling="8.0"),
    KeyInfo("FEA-1", KeyKind.FEATURE, fixtures.SERIAL, date(2015, 1, 1), feature="T1", count=4),
    KeyInfo("USR-1", KeyKind.USERS, fixtures.SERIAL, date(2015, 1, 1), users="51-100"),
    KeyInfo("PAT-1", KeyKind.PATCH, "AWX99999", date(2015, 1, 1), patch_build="7.6.4.9",
            expires=datetime.fromisoformat("2015-06-01T18:05:00+02:00")),
]  # fmt: skip
TRUST = TrustStore(fixtures.ROOT_PUBLIC, revoked=frozenset({"FEA-1"}), revocation_sequence=1)


def seeds() -> list[bytes]:
    """One signed key of each kind (dates and instants), and one quoted as in a reply email."""
    cert = fixtures.certificate()
    texts = [sign_key(info, fixtures.SIGNER, cert).text() for info in INFOS]
    quoted = "Hi,\r\n\r\n" + "".join(f"> {line}\r\n" for line in texts[0].splitlines()) + "Bye\r\n"
    return [t.encode() for t in [*texts, quoted]]


def check(data: bytes) -> None:
    """Parse ``data`` as a key file; verify what parses at three instants; render it and parse it back."""
    try:
        key = parse_key(data)
    except KeyFormatError:
        return
    for now in (fixtures.TODAY, fixtures.NOW, date(2999, 12, 31)):
        check_key(key, TRUST, fixtures.SERIAL, now)
    again = parse_key(key.text())
    assert again == key, (again, key)


def tokens() -> list[str]:
    """Words of the format for libFuzzer's dictionary."""
    names = [
        f"{name}: "
        for name in (
            "Key-Id",
            "Kind",
            "Serial",
            "Plan",
            "Issued",
            "Starts",
            "Expires",
            "Ceiling",
            "Feature",
            "Users",
            "Patch-Build",
            "Count",
        )
    ]
    words = [
        *KeyKind,
        *Plan,
        "Certificate:",
        "Signature:",
        "-----BEGIN ALLWORX SOFTWARE KEY-----",
        "-----END ALLWORX SOFTWARE KEY-----",
    ]
    return [*names, *words, *fixtures.TRICKY]  # fmt: skip
