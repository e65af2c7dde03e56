"""A server directory: the agent's view of the server it runs on (layout in docs/architecture.md).

Invariants: every change is an atomic write (:mod:`agent.journal`); reading never changes
anything; a key is verified before it is written, and a refused key leaves ``keys/`` as it was;
a persisted value out of range (identity, slot descriptor, journal state, bootloader) is an error
(``STATE_INVALID``, :mod:`agent.persisted`), never read as a default.

Caching: the identity, the trust store and the verified key checks are kept in memory, each
keyed by a :func:`fingerprint` (a digest of the names and bytes) of the files it was computed
from and, for key checks, by ``today``. Parsing and verification are pure for a given file
content, trust and date, so a cached result is exactly what a fresh verification would give: the
files are read again on every call (a few small reads), and any change to ``keys/``, ``trust/``
or ``identity.json``, by this process or another, misses the cache. Only the parsing and the
Ed25519 signature checks are saved.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from agent.bootloader import Bootloader
from agent.journal import Job, Journal, read_json, write_atomic, write_json
from agent.keys import (
    REVOCATIONS_FILE,
    KeyCheck,
    SignedKey,
    TrustStore,
    check_key,
    install_revocation_list,
    load_trust,
    parse_key_text,
)
from agent.persisted import check_identity, check_job, check_slot, unreadable
from agent.policy import ServerFacts
from common.errors import KeyFormatError, StoreError
from common.reasons import Reason


def fingerprint(folder: Path, suffix: str = "") -> bytes:
    """A SHA-256 over the names and contents of the regular files in ``folder`` ending with ``suffix``.

    Keyed by content, not by timestamps: any change of a file's bytes, any new or removed file
    changes it, however fast the edits come. A missing folder has the digest of nothing.
    """
    digest = hashlib.sha256()
    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if e.name.endswith(suffix) and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        names = []
    for name in names:
        try:
            data = (folder / name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue  # removed meanwhile: as if it were never there
        digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return digest.digest()


@dataclass(frozen=True, slots=True)
class Identity:
    """The server's fixed identity."""

    serial: str
    model: str
    mac: str
    shipped: date
    site: str
    repo: str  # the release repository (the vendor portal) this server downloads from


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """What a release slot holds."""

    version: str
    build: str
    db_schema: int


class ServerDir:
    """Paths and reads/writes of one server directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bootloader = Bootloader(root / "boot.json")
        self.journal = Journal(root / "journal.json")
        self._identity: tuple[bytes, Identity] | None = None  # (identity.json's bytes, parsed)
        self._trust: tuple[bytes, TrustStore] | None = None  # (fingerprint of trust/, loaded)
        self._checks: tuple[tuple[Any, ...], tuple[KeyCheck, ...]] | None = None  # (inputs, checks)

    # --- layout ---------------------------------------------------------------------------
    @property
    def keys_dir(self) -> Path:
        """Installed key files."""
        return self.root / "keys"

    @property
    def trust_dir(self) -> Path:
        """The pinned vendor root and the revocation list."""
        return self.root / "trust"

    @property
    def update_area(self) -> Path:
        """Where staged images wait (the vendor's *Update Area*)."""
        return self.root / "update"

    def slot_dir(self, slot: str) -> Path:
        """The folder of release slot ``slot``."""
        return self.root / "slots" / slot

    def db_path(self, slot: str) -> Path:
        """The database of slot ``slot``."""
        return self.slot_dir(slot) / "pbx.db"

    # --- reads ----------------------------------------------------------------------------
    def check_exists(self) -> None:
        """Raise StoreError unless this looks like a server directory."""
        if not (self.root / "identity.json").is_file():
            raise StoreError(f"{self.root} is not a server directory (no identity.json)")

    def identity(self) -> Identity:
        """Return the server's identity.

        Raises:
            StoreError: missing or malformed.
        """
        path = self.root / "identity.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"{self.root} is not a server directory (no identity.json)") from exc
        except OSError as exc:
            raise StoreError(f"{path} is unreadable: {exc}") from exc
        if self._identity is not None and self._identity[0] == data:
            return self._identity[1]
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise StoreError(f"{path} is unreadable or not JSON: {exc}") from exc
        if isinstance(raw, dict):
            check_identity(raw, path)  # fail closed on a value out of range
        try:
            identity = Identity(
                serial=raw["serial"],
                model=raw["model"],
                mac=raw["mac"],
                shipped=date.fromisoformat(raw["shipped"]),
                site=raw.get("site", "default"),
                repo=raw.get("repo", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{self.root / 'identity.json'} is malformed: {exc}") from exc
        self._identity = (data, identity)
        return identity

    def slot_info(self, slot: str) -> SlotInfo | None:
        """Return what ``slot`` holds, or None when it is empty (no ``release.json``).

        Raises:
            StoreError: (``STATE_INVALID``) the descriptor is unreadable or a value is out of
                range: a damaged descriptor is never read as an empty slot.
        """
        path = self.slot_dir(slot) / "release.json"
        try:
            raw = read_json(path)
        except StoreError as exc:
            if not path.exists():
                return None
            raise unreadable(path, "the slot descriptor is not JSON") from exc
        return SlotInfo(*check_slot(raw, path))

    def load_job(self) -> Job | None:
        """The journal's upgrade state (None when idle), its values checked (fail closed).

        Raises:
            StoreError: (``STATE_INVALID``) the last whole state holds a value out of range.
        """
        job = self.journal.load()
        if job is not None:
            check_job(job, self.journal.path)
        return job

    def check_state(self) -> Job | None:
        """Read and check every persisted file the agent steers by; return the journal's state.

        The identity, the bootloader environment, the committed slot's descriptor and the journal:
        a command that changes the server calls this before it writes anything (fail closed).

        Raises:
            StoreError: one of them is missing, unreadable or holds a value out of range
                (``STATE_INVALID`` names the file and the field).
        """
        self.identity()
        self.committed()
        return self.load_job()

    def active_slot(self) -> str:
        """The committed slot."""
        return self.bootloader.env().active

    def committed(self) -> SlotInfo:
        """The committed release.

        Raises:
            StoreError: the active slot holds no release (a bricked server).
        """
        info = self.slot_info(self.active_slot())
        if info is None:
            raise StoreError(f"{self.root}: the active slot holds no release")
        return info

    def facts(self) -> ServerFacts:
        """What policy needs to know."""
        ident, info = self.identity(), self.committed()
        return ServerFacts(serial=ident.serial, model=ident.model, release=info.version, build=info.build)

    def trust(self) -> TrustStore:
        """The pinned vendor root and revocations (cached while ``trust/`` is unchanged).

        Raises:
            StoreError: the root is missing or malformed, or the revocation list unreadable.
            VerificationError: the stored revocation list is malformed or not signed by the root.
        """
        digest = fingerprint(self.trust_dir)
        if self._trust is not None and self._trust[0] == digest:
            return self._trust[1]
        trust = load_trust(self.trust_dir)
        self._trust = (digest, trust)
        return trust

    def _trust_digest(self) -> bytes:
        """The fingerprint the cached trust store was loaded from (call after :meth:`trust`)."""
        return self._trust[0] if self._trust is not None else b""

    def installed_keys(self) -> list[SignedKey]:
        """Every installed key that parses (a file that does not is skipped: it was never valid)."""
        keys = []
        for path in sorted(self.keys_dir.glob("*.key")):
            try:
                keys.append(parse_key_text(path.read_text()))
            except (KeyFormatError, OSError, UnicodeDecodeError):
                continue
        return keys

    def key_checks(self, today: date) -> list[KeyCheck]:
        """Every installed key verified for this server on ``today``.

        Cached: a key check is pure for a given key file, trust store, serial and date, so the
        result is reused while ``keys/``, ``trust/``, ``identity.json`` and ``today`` are unchanged.

        Raises:
            StoreError: the trust store or the identity is unreadable.
        """
        trust, serial = self.trust(), self.identity().serial
        inputs = (fingerprint(self.keys_dir, ".key"), self._trust_digest(), serial, today)
        if self._checks is not None and self._checks[0] == inputs:
            return list(self._checks[1])
        checks = tuple(check_key(key, trust, serial, today) for key in self.installed_keys())
        self._checks = (inputs, checks)
        return list(checks)

    def key_digest(self) -> str:
        """A content checksum of every installed key (for "keys intact" checks)."""
        import hashlib

        digest = hashlib.sha256()
        for path in sorted(self.keys_dir.glob("*.key")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    # --- writes ---------------------------------------------------------------------------
    def install_revocations(self, text: str, today: date) -> TrustStore:
        """Verify the vendor's revocation list and install it when newer; return the trust store.

        The same list as the installed one is accepted and changes nothing; any other refusal
        raises before anything is written.

        Raises:
            KeyFormatError: the list is malformed.
            SignatureError: the list is not signed by the pinned root's revocations key.
            StaleRevocationError: the list is older than the installed one.
            StoreError: the trust folder cannot be read or written.
        """
        installed = self.trust_dir / REVOCATIONS_FILE
        if installed.is_file() and installed.read_text() == text:
            return self.trust()
        return install_revocation_list(self.trust_dir, text, today)

    def install_key(self, text: str, today: date) -> KeyCheck:
        """Verify a key and install it when acceptable; a refused key changes nothing.

        A key that is valid, or valid only from a later start date, is installed. Every other
        failure (format, signature, serial, revoked, expired) is returned as the refusal.
        """
        trust, serial = self.trust(), self.identity().serial
        try:
            key = parse_key_text(text)
        except KeyFormatError as exc:
            return KeyCheck(
                info=None, valid=False, reason=Reason.KEY_FORMAT_INVALID, message=str(exc), passed=0
            )
        check = check_key(key, trust, serial, today)
        if not check.valid and check.reason is not Reason.KEY_NOT_YET_VALID:
            return check
        target = self.keys_dir / f"{key.info.key_id}.key"
        if target.exists() and target.read_text() == key.text():
            return KeyCheck(
                info=key.info,
                valid=check.valid,
                reason=check.reason,
                message="This key is already installed.",
                passed=check.passed,
            )
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(target, key.text().encode(), point="keys.install")
        return check

    def write_slot_info(self, slot: str, info: SlotInfo) -> None:
        """Record what ``slot`` holds."""
        write_json(
            self.slot_dir(slot) / "release.json",
            {"version": info.version, "build": info.build, "db_schema": info.db_schema},
        )

    def offer_phone_firmware(self, version: str, release: str) -> None:
        """Rule PHONE-1: the booted release's phone firmware is offered to the phones, no key check."""
        phones = self.root / "phones"
        phones.mkdir(exist_ok=True)
        write_json(phones / "offered.json", {"firmware": version, "release": release})

    def offered_phone_firmware(self) -> str | None:
        """The phone firmware version currently offered to phones."""
        try:
            return str(read_json(self.root / "phones" / "offered.json")["firmware"])
        except (StoreError, KeyError, TypeError):
            return None

    def last_result(self) -> dict[str, Any] | None:
        """The last upgrade outcome recorded on this server."""
        path = self.root / "last_result.json"
        try:
            return dict(read_json(path)) if path.exists() else None
        except (StoreError, TypeError, ValueError):
            return None

    def record_result(self, result: dict[str, Any]) -> None:
        """Remember the last upgrade outcome."""
        write_json(self.root / "last_result.json", result)


def checks_json(checks: Sequence[KeyCheck]) -> list[dict[str, Any]]:
    """The JSON form of verified keys (``status`` and ``keys list``)."""
    out = []
    for check in checks:
        info = check.info
        entry: dict[str, Any] = {"valid": check.valid, "reason": check.reason.value if check.reason else None}
        if info is not None:
            entry.update(
                key_id=info.key_id,
                kind=info.kind.value,
                plan=info.plan.value if info.plan else None,
                starts=info.starts.isoformat() if info.starts else None,
                expires=info.expires.isoformat() if info.expires else None,
                feature=info.feature,
                users=info.users,
                ceiling=info.ceiling,
                patch_build=info.patch_build,
                count=info.count,
            )
        entry["message"] = check.message
        out.append(entry)
    return out
