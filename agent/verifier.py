"""What the agent verifies, as one interface given to it at construction: signatures, release
targets (through the release repository's TUF metadata), the trust store, installed keys,
database files and release images.

Invariant: the agent's default, :data:`DURABLE_VERIFIER`, verifies everything from the files as
they are at each call and keeps nothing between calls: a file damaged after a good verification
is verified again, and fails. Whoever builds an agent may give another :class:`Verifier` (a fleet
simulation, whose many servers share the same files, remembers what it verified).
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Protocol

from agent import crypto
from agent.database import DatabaseVerifier, Recompute
from agent.fetcher import VerifyResult, require_verified
from agent.keys import KeyCheck, TrustStore, check_key, installed_keys, load_trust
from agent.manifest import Manifest
from agent.releasetrust import release_target


class Verifier(DatabaseVerifier, Protocol):
    """Signatures, release targets, trust, keys, database files (:class:`DatabaseVerifier`) and
    release images."""

    def signature(self, public: bytes, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``public``'s Ed25519 signature of ``message``; never raises."""

    def release(self, trust_dir: Path, repo: str, build: str) -> Manifest:
        """What ``build``'s image is, as the repository ``repo`` signs it, trusted from the release
        root pinned in ``trust_dir`` (:func:`agent.releasetrust.release_target`).

        Raises:
            VerificationError: the metadata or the target failed a check (its reason code).
            TransportError: the repository could not be reached.
            StoreError: the pinned root or the trusted metadata cannot be read or written.
        """

    def trust(self, folder: Path) -> TrustStore:
        """The trust store in ``folder`` (the pinned root and the verified revocation list).

        Raises:
            StoreError: the root is missing or malformed, or the revocation list unreadable.
            VerificationError: the stored revocation list is malformed or not signed by the root.
        """

    def key_checks(
        self, folder: Path, trust: TrustStore, serial: str, now: datetime | date
    ) -> list[KeyCheck]:
        """Every key file in ``folder`` verified for server ``serial`` at ``now`` (a date: all its day);
        never raises."""

    def image(self, path: Path, size: int, sha256: str) -> VerifyResult:
        """Check the image file at ``path`` as it is now against its signed ``size`` and ``sha256``.

        Returns:
            The passing :class:`~agent.fetcher.VerifyResult`.

        Raises:
            DigestError: the digest differs (``IMAGE_DIGEST_MISMATCH``).
            VerificationError: the size differs (``IMAGE_TOO_LARGE`` or ``IMAGE_TRUNCATED``).
            OSError: the file cannot be opened or read.
        """

    def image_verified(self, path: Path, size: int, sha256: str) -> None:
        """Told that the file at ``path`` holds exactly the ``size`` bytes hashing to the signed
        ``sha256``, nothing having run since that could change it: the caller hashed the bytes
        itself as it wrote them (a download), or :meth:`image` just verified the file, since renamed."""


class DurableVerifier(Recompute):
    """The agent's :class:`Verifier`: every call verifies again, from the files as they are now."""

    def signature(self, public: bytes, message: bytes, signature: bytes) -> bool:
        """Verify the Ed25519 signature (:func:`agent.crypto.verify`)."""
        return crypto.verify(public, message, signature)

    def release(self, trust_dir: Path, repo: str, build: str) -> Manifest:
        """Refresh the release metadata and read ``build``'s target
        (:func:`agent.releasetrust.release_target`).

        Raises:
            VerificationError: the metadata or the target failed a check (its reason code).
            TransportError: the repository could not be reached.
            StoreError: the pinned root or the trusted metadata cannot be read or written.
        """
        return release_target(trust_dir, repo, build)

    def trust(self, folder: Path) -> TrustStore:
        """Load the trust store (:func:`agent.keys.load_trust`).

        Raises:
            StoreError: the root is missing or malformed, or the revocation list unreadable.
            VerificationError: the stored revocation list is malformed or not signed by the root.
        """
        return load_trust(folder, check=self.signature)

    def key_checks(
        self, folder: Path, trust: TrustStore, serial: str, now: datetime | date
    ) -> list[KeyCheck]:
        """Parse and check every key file (:func:`agent.keys.check_key`)."""
        return [check_key(key, trust, serial, now, check=self.signature) for key in installed_keys(folder)]

    def image(self, path: Path, size: int, sha256: str) -> VerifyResult:
        """Hash the file as it is now (:func:`agent.fetcher.require_verified`).

        Raises:
            DigestError: the digest differs (``IMAGE_DIGEST_MISMATCH``).
            VerificationError: the size differs (``IMAGE_TOO_LARGE`` or ``IMAGE_TRUNCATED``).
            OSError: the file cannot be opened or read.
        """
        return require_verified(path, size, sha256)

    def image_verified(self, path: Path, size: int, sha256: str) -> None:
        """Keep nothing: the next check hashes the file again."""


DURABLE_VERIFIER: Verifier = DurableVerifier()
