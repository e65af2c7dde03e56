"""The vendor's keyring: the root private key, one signing key per purpose, the revocation state.

Created on first use so every command works with no set-up, in ``$ALLWORX_SIM_HOME/vendor/``
when that variable is set, else ``~/.local/share/allworx-sim/vendor/`` (or an explicit path).

Invariants:

- Creation is safe when processes race (parallel tests, fleet workers): the keyring is built in a
  temp folder next to its place and ``os.rename`` d into it; the loser of the race loads the
  winner's keyring and discards its own, so everyone ends up with the same root.
- Every signing certificate is signed by the root and valid over the simulated years 2008-2040.
- Revocation lists are issued under a file lock with strictly increasing sequence numbers.

Layout: ``keyring.json`` (root and signing keys, hex, certificates), ``revocations.key`` (the
newest revocation list), ``.lock``; the release repository's TUF keys: ``tuf-roles.json`` (one
Ed25519 key each for the targets, snapshot and timestamp roles) and, kept apart in its own file as an
offline key would be, ``tuf-root.key`` (the TUF root role's key). Both are made on first use, under
the lock, mode 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from agent import crypto
from agent.armor import parse_token
from agent.crypto import Certificate, SignedDocument
from agent.fileio import create_folder_once, write_atomic
from agent.revocation import (
    REVOCATIONS_FILE,
    RevocationList,
    parse_revocation_list,
    sign_revocation_list,
    write_trust,
)
from common.errors import KeyFormatError, StoreError

HOME_VARIABLE = "ALLWORX_SIM_HOME"
KEYRING_FILE = "keyring.json"
SIGNING_PURPOSES = ("keys", "releases", "revocations")
VALID_FROM = date(2008, 1, 1)  # simulated: the certificates cover every simulated year
VALID_UNTIL = date(2040, 12, 31)
FORMAT = 1
TUF_ROOT_FILE = "tuf-root.key"
TUF_ROLES_FILE = "tuf-roles.json"
TUF_ONLINE_ROLES = ("targets", "snapshot", "timestamp")


def sim_home() -> Path:
    """Return the simulator's home: ``$ALLWORX_SIM_HOME`` or ``~/.local/share/allworx-sim``."""
    configured = os.environ.get(HOME_VARIABLE)
    return Path(configured) if configured else Path.home() / ".local" / "share" / "allworx-sim"


def default_keyring_dir() -> Path:
    """Return where the vendor keyring lives by default."""
    return sim_home() / "vendor"


class VendorKeyring:
    """The vendor's signing keys (load with :meth:`load_or_create`)."""

    def __init__(
        self, path: Path, root_private: bytes, signers: dict[str, tuple[bytes, Certificate]]
    ) -> None:
        self.path = path
        self._root_private = root_private
        self._signers = signers
        self.root_public = crypto.public_key(root_private)

    @property
    def root_public_hex(self) -> str:
        """The pinned root public key as hex (the content of a server's ``vendor-root.pub``)."""
        return self.root_public.hex()

    # --- creation and loading -------------------------------------------------------------
    @classmethod
    def load_or_create(cls, path: Path | None = None) -> VendorKeyring:
        """Load the keyring at ``path`` (default location if None), creating it on first use.

        Raises:
            StoreError: the keyring exists but is unreadable or malformed, or cannot be created.
        """
        path = path if path is not None else default_keyring_dir()
        if not (path / KEYRING_FILE).exists():
            cls._create(path)
        return cls._load(path)

    @classmethod
    def _create(cls, path: Path) -> None:
        create_folder_once(path, KEYRING_FILE, cls._build, "vendor keyring")

    @staticmethod
    def _build(work: Path) -> None:
        root = crypto.generate_private_key()
        signers: dict[str, Any] = {}
        for purpose in SIGNING_PURPOSES:
            private = crypto.generate_private_key()
            cert = crypto.issue_certificate(
                root,
                signer_id=f"vendor-{purpose}-{crypto.fingerprint(crypto.public_key(private))[:8]}",
                public=crypto.public_key(private),
                purposes=(purpose,),
                not_before=VALID_FROM,
                not_after=VALID_UNTIL,
            )
            signers[purpose] = {"private": private.hex(), "certificate": cert.to_dict()}
        data = {"format": FORMAT, "simulated": True, "root_private": root.hex(), "signers": signers}
        (work / KEYRING_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.chmod(work / KEYRING_FILE, 0o600)
        rev_private = bytes.fromhex(signers["revocations"]["private"])
        rev_cert = Certificate.from_dict(signers["revocations"]["certificate"])
        empty = sign_revocation_list(0, VALID_FROM, (), rev_private, rev_cert)
        (work / REVOCATIONS_FILE).write_text(empty.text())

    @classmethod
    def _load(cls, path: Path) -> VendorKeyring:
        file = path / KEYRING_FILE
        try:
            data = json.loads(file.read_text())
            root = crypto.decode_hex(data["root_private"], crypto.KEY_SIZE)
            signers = {}
            for purpose in SIGNING_PURPOSES:
                entry = data["signers"][purpose]
                private = crypto.decode_hex(entry["private"], crypto.KEY_SIZE)
                signers[purpose] = (private, Certificate.from_dict(entry["certificate"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{file}: not a readable vendor keyring: {exc}") from exc
        return cls(path, root, signers)

    # --- signing --------------------------------------------------------------------------
    def certificate(self, purpose: str) -> Certificate:
        """Return the signing certificate for ``purpose``.

        Raises:
            KeyError: no signing key for that purpose.
        """
        return self._signers[purpose][1]

    def signing_key(self, purpose: str) -> tuple[bytes, Certificate]:
        """Return the private signing key and certificate for ``purpose`` (simulator use only).

        Raises:
            KeyError: no signing key for that purpose.
        """
        return self._signers[purpose]

    def sign(self, purpose: str, payload: bytes) -> SignedDocument:
        """Sign ``payload`` with the signing key for ``purpose``.

        Raises:
            KeyError: no signing key for that purpose.
        """
        private, cert = self._signers[purpose]
        return crypto.sign_document(payload, private, cert)

    def certify(
        self, public: bytes, *, signer_id: str, purposes: tuple[str, ...], not_before: date, not_after: date
    ) -> Certificate:
        """Issue a root-signed certificate for someone else's key (e.g. a fleet operator's).

        Raises:
            ValueError: unknown purposes, an empty period or a bad key.
        """
        return crypto.issue_certificate(
            self._root_private,
            signer_id=signer_id,
            public=public,
            purposes=purposes,
            not_before=not_before,
            not_after=not_after,
        )

    # --- the release repository's TUF keys -----------------------------------------------------
    def release_keys(self) -> dict[str, bytes]:
        """The raw Ed25519 private keys of the TUF roles: root (its own file), targets, snapshot, timestamp.

        Made on first use (under the keyring's lock, so racing processes share one set).

        Raises:
            StoreError: the key files are unreadable or malformed, or cannot be written.
        """
        if not (self.path / TUF_ROOT_FILE).exists() or not (self.path / TUF_ROLES_FILE).exists():
            with self._locked():
                if not (self.path / TUF_ROLES_FILE).exists():
                    roles = {role: crypto.generate_private_key().hex() for role in TUF_ONLINE_ROLES}
                    text = json.dumps({"format": FORMAT, "simulated": True, "roles": roles}, indent=2)
                    # shared: written through mkstemp, so the key file is mode 0600
                    write_atomic(self.path / TUF_ROLES_FILE, (text + "\n").encode(), shared=True)
                if not (self.path / TUF_ROOT_FILE).exists():
                    self.replace_release_root(crypto.generate_private_key())
        try:
            roles = json.loads((self.path / TUF_ROLES_FILE).read_text())["roles"]
            keys = {role: crypto.decode_hex(roles[role], crypto.KEY_SIZE) for role in TUF_ONLINE_ROLES}
            root_hex = (self.path / TUF_ROOT_FILE).read_text().strip()
            keys["root"] = crypto.decode_hex(root_hex, crypto.KEY_SIZE)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.path}: the release repository keys are unreadable: {exc}") from exc
        return keys

    def replace_release_root(self, private: bytes) -> None:
        """Keep ``private`` as the TUF root role's key from now on (a root rotation's new key).

        Raises:
            StoreError: the key file cannot be written.
        """
        # shared: written through mkstemp, so the key file is mode 0600
        write_atomic(self.path / TUF_ROOT_FILE, (private.hex() + "\n").encode(), shared=True)

    # --- revocation -----------------------------------------------------------------------
    def revocation_list_text(self) -> str:
        """Return the newest revocation list (text).

        Raises:
            StoreError: the stored list is unreadable.
        """
        try:
            return (self.path / REVOCATIONS_FILE).read_text()
        except OSError as exc:
            raise StoreError(f"{self.path / REVOCATIONS_FILE}: cannot read: {exc.strerror}") from exc

    def revoked(self) -> frozenset[str]:
        """Return the key ids revoked so far.

        Raises:
            StoreError: the stored list is unreadable or malformed.
        """
        return self._current().revoked

    def revoke(self, key_id: str, today: date) -> str:
        """Add ``key_id`` to the revocation list; return the new list's text (next sequence number).

        Raises:
            KeyFormatError: ``key_id`` is not a valid key id.
            StoreError: the list cannot be read or written.
        """
        parse_token("Key-Id", key_id)
        with self._locked():
            current = self._current()
            text = self.sign_revocations(
                current.revoked | {key_id}, current.sequence + 1, max(today, current.issued)
            )
            write_atomic(self.path / REVOCATIONS_FILE, text.encode("utf-8"))
        return text

    def sign_revocations(self, revoked: Iterable[str], sequence: int, issued: date) -> str:
        """Sign a revocation list without publishing it (a scenario keeps its own, apart from others').

        Raises:
            KeyFormatError: a key id is not valid.
        """
        ids = frozenset(revoked)
        for key_id in ids:
            parse_token("Key-Id", key_id)
        private, cert = self._signers["revocations"]
        return sign_revocation_list(sequence, issued, ids, private, cert).text()

    def write_trust(self, directory: Path) -> None:
        """Write a server trust directory: the pinned root and the current revocation list.

        Raises:
            StoreError: the directory cannot be written.
        """
        write_trust(directory, self.root_public, self.revocation_list_text())

    def _current(self) -> RevocationList:
        try:
            return parse_revocation_list(self.revocation_list_text())
        except KeyFormatError as exc:
            raise StoreError(f"{self.path / REVOCATIONS_FILE}: malformed: {exc}") from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            handle = (self.path / ".lock").open("a")
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot lock the keyring: {exc.strerror}") from exc
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
