"""A server's trust files: ``vendor-root.pub``, ``revocations.key`` (agent/revocation.py ``load_trust``,
``install_revocation_list``) and operator keys ``trust/operators/*.pub`` (agent/opkeys.py).

The first byte of an input picks the file the rest replaces (the others stay valid).
Documented: ``load_trust`` raises only StoreError, KeyFormatError or SignatureError; installing a
list adds StaleRevocationError; ``load_operator_keys`` never raises (a bad file trusts nobody).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from agent import crypto
from agent.opkeys import load_operator_keys, operators_dir
from agent.revocation import (
    REVOCATIONS_FILE,
    ROOT_FILE,
    install_revocation_list,
    load_trust,
    sign_revocation_list,
)
from common.errors import KeyFormatError, SignatureError, StaleRevocationError, StoreError
from tests.fuzz import fixtures

ROOT_TEXT = (fixtures.ROOT_PUBLIC.hex() + "\n").encode()
LIST_TEXT = (
    sign_revocation_list(2, date(2015, 6, 1), ["MNT-1"], fixtures.SIGNER, fixtures.certificate())
    .text()
    .encode()
)
OPERATOR_TEXT = (fixtures.OPERATOR_PUBLIC.hex() + "\n").encode()
FILES = ("root", "revocations", "install", "operator")
PREFIX = 1  # the byte that picks the file
_server: Path | None = None


def seeds() -> list[bytes]:
    """Each file's valid content, behind the byte that picks it."""
    contents = [ROOT_TEXT, LIST_TEXT, LIST_TEXT, OPERATOR_TEXT]
    return [bytes([i]) + content for i, content in enumerate(contents)]


def server() -> Path:
    """A server folder of this process with valid trust files (made once)."""
    global _server  # noqa: PLW0603  # reason: one folder per fuzzing process, made on first use
    if _server is None:
        _server = fixtures.scratch_folder("trust")
        operators_dir(_server).mkdir(parents=True)
    return _server


def check(data: bytes) -> None:
    """Write the picked file from ``data``, the others valid, and load the trust store or operator keys."""
    if not data:
        return
    which, content = FILES[data[0] % len(FILES)], data[1:]
    trust = server() / "trust"
    (trust / ROOT_FILE).write_bytes(content if which == "root" else ROOT_TEXT)
    (trust / REVOCATIONS_FILE).write_bytes(content if which == "revocations" else LIST_TEXT)
    (operators_dir(server()) / "fuzz.pub").write_bytes(content if which == "operator" else OPERATOR_TEXT)
    if which == "operator":
        keys = load_operator_keys(server())
        assert all(len(key) == crypto.KEY_SIZE for key in keys.values())
        return
    try:
        if which == "install":
            (trust / REVOCATIONS_FILE).unlink()
            install_revocation_list(trust, content, fixtures.TODAY)
        else:
            load_trust(trust)
    except (StoreError, KeyFormatError, SignatureError, StaleRevocationError):
        return
