"""The vendor's signed revocation list and the server's trust store.

A revocation list names revoked key ids; it is signed by a certificate with purpose
"revocations" that chains to the pinned vendor root, and carries an issue date and a sequence
number. Invariant: an installed list is only ever replaced by one with a higher sequence, so an
older list can never un-revoke a key (raises :class:`~common.errors.StaleRevocationError`).

Files in a server's trust directory: ``vendor-root.pub`` (the pinned root, raw Ed25519 public key
in hex) and the optional ``revocations.key`` (the newest installed list, text).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from agent import armor, crypto
from agent.crypto import Certificate, SignatureCheck, SignedDocument
from agent.fileio import DURABLE, Disk, read_bounded, write_atomic
from common.errors import KeyFormatError, StaleRevocationError, StoreError

REVOCATIONS_BEGIN = "-----BEGIN ALLWORX REVOCATION LIST-----"
REVOCATIONS_END = "-----END ALLWORX REVOCATION LIST-----"
ROOT_FILE = "vendor-root.pub"
REVOCATIONS_FILE = "revocations.key"


@dataclass(frozen=True, slots=True)
class RevocationList:
    """A signed list of revoked key ids; a higher ``sequence`` supersedes a lower one."""

    sequence: int
    issued: date
    revoked: frozenset[str]
    certificate: Certificate
    signature: bytes

    @staticmethod
    def payload(sequence: int, issued: date, revoked: Iterable[str]) -> bytes:
        """Return the canonical bytes a revocation list's signature covers."""
        return crypto.canonical_json(
            {
                "type": "allworx-revocation-list",
                "sequence": sequence,
                "issued": issued.isoformat(),
                "revoked": sorted(revoked),
            }
        )

    @property
    def document(self) -> SignedDocument:
        """The signed document the signature covers."""
        payload = self.payload(self.sequence, self.issued, self.revoked)
        return SignedDocument(payload, self.certificate, self.signature)

    def text(self) -> str:
        """Return the canonical revocation-list text."""
        lines = [f"Sequence: {self.sequence}", f"Issued: {self.issued.isoformat()}"]
        lines += [f"Revoked: {key_id}" for key_id in sorted(self.revoked)]
        return armor.render_block(REVOCATIONS_BEGIN, REVOCATIONS_END, lines, self.certificate, self.signature)


def parse_revocation_list(text: str | bytes) -> RevocationList:
    """Parse a revocation list (tolerating what email does to text, like key files).

    Raises:
        KeyFormatError: anything malformed.
    """
    pairs = armor.parse_block(text, REVOCATIONS_BEGIN, REVOCATIONS_END)
    revoked = frozenset(armor.parse_token("Revoked", v) for n, v in pairs if n == "Revoked")
    others = [(n, v) for n, v in pairs if n != "Revoked"]
    found = armor.single_fields(others, ["Sequence", "Issued", *armor.BLOCK_FIELDS])
    sequence = found.get("Sequence", "")
    if not (sequence.isascii() and sequence.isdigit()) or len(sequence) > 12:
        raise KeyFormatError(f"Sequence must be a whole number, got {sequence[:20]!r}")
    if "Issued" not in found:
        raise KeyFormatError("the Issued field is missing")
    certificate, signature = armor.signature_parts(found)
    issued = armor.parse_date("Issued", found["Issued"])
    return RevocationList(int(sequence), issued, revoked, certificate, signature)


def sign_revocation_list(
    sequence: int, issued: date, revoked: Iterable[str], signer_private: bytes, certificate: Certificate
) -> RevocationList:
    """Sign a revocation list (vendor side).

    Raises:
        ValueError: the signing key does not match the certificate.
    """
    ids = frozenset(revoked)
    doc = crypto.sign_document(RevocationList.payload(sequence, issued, ids), signer_private, certificate)
    return RevocationList(sequence, issued, ids, certificate, doc.signature)


@dataclass(frozen=True, slots=True)
class TrustStore:
    """The pinned vendor root and the revoked key ids of the newest verified revocation list."""

    root_public: bytes
    revoked: frozenset[str] = frozenset()
    revocation_sequence: int = -1  # -1: no list installed yet

    def accept(
        self, revocations: RevocationList, today: date, *, check: SignatureCheck = crypto.verify
    ) -> TrustStore:
        """Return a store updated with a newer revocation list (its signatures verified by ``check``).

        Raises:
            SignatureError: the list is not signed by a "revocations" certificate of the root.
            StaleRevocationError: the list is not newer than the installed one.
        """
        crypto.require_document(revocations.document, self.root_public, "revocations", today, check=check)
        if revocations.sequence <= self.revocation_sequence:
            raise StaleRevocationError(
                f"revocation list {revocations.sequence} is not newer than the installed "
                f"list {self.revocation_sequence}"
            )
        return replace(self, revoked=revocations.revoked, revocation_sequence=revocations.sequence)


def load_trust(directory: Path, *, check: SignatureCheck = crypto.verify) -> TrustStore:
    """Read ``DIR/vendor-root.pub`` (hex) and the optional ``DIR/revocations.key``.

    The stored list is verified (signatures by ``check``) as of its own issue date (it was checked
    when installed).

    Raises:
        StoreError: the root file is missing or not a 32-byte hex key, or the list is unreadable.
        KeyFormatError: the revocation list is malformed.
        SignatureError: the revocation list is not signed by the root's revocations key.
    """
    try:
        root_text = read_bounded(directory / ROOT_FILE, 1024).decode("ascii")
        root = crypto.decode_hex(root_text, crypto.KEY_SIZE)
    except (OSError, StoreError, UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"{directory / ROOT_FILE}: cannot read the pinned vendor root: {exc}") from exc
    trust = TrustStore(root)
    path = directory / REVOCATIONS_FILE
    try:
        text = read_bounded(path, 4 * armor.MAX_TEXT)
    except FileNotFoundError:
        return trust
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror}") from exc
    revocations = parse_revocation_list(text)
    return trust.accept(revocations, revocations.issued, check=check)


def write_trust(directory: Path, root_public: bytes, revocations_text: str | None = None) -> None:
    """Create a trust directory: the pinned root and, optionally, a revocation list (durable
    atomic writes, :func:`agent.fileio.write_atomic`).

    Raises:
        StoreError: the directory cannot be written.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{directory}: cannot create: {exc.strerror}") from exc
    write_atomic(directory / ROOT_FILE, (root_public.hex() + "\n").encode("ascii"))
    if revocations_text is not None:
        write_atomic(directory / REVOCATIONS_FILE, revocations_text.encode("utf-8"))


def install_revocation_list(
    directory: Path,
    text: str | bytes,
    today: date,
    *,
    check: SignatureCheck = crypto.verify,
    disk: Disk = DURABLE,
) -> TrustStore:
    """Verify a revocation list (signatures by ``check``) and, if newer than the installed one,
    store it by an atomic write through ``disk``.

    Raises:
        StoreError: the trust directory is unreadable or unwritable.
        KeyFormatError: the list is malformed.
        SignatureError: the list is not signed by the root's revocations key.
        StaleRevocationError: the list is not newer than the installed one.
    """
    trust = load_trust(directory, check=check).accept(parse_revocation_list(text), today, check=check)
    data = text.encode("utf-8") if isinstance(text, str) else text
    write_atomic(directory / REVOCATIONS_FILE, data, disk=disk)
    return trust
