"""A server directory: the agent's view of the server it runs on (layout in docs/architecture.md).

Invariants: every change is an atomic write (:mod:`agent.fileio`) through the directory's
:class:`~agent.fileio.Disk`; reading never changes anything; a key is verified before it is
written, and a refused key leaves ``keys/`` as it was; a persisted value out of range (identity,
slot descriptor, journal state, bootloader) is an error (``STATE_INVALID``, :mod:`agent.persisted`),
never read as a default. Every read of the trust store and the key checks goes to the directory's
:class:`~agent.verifier.Verifier`. Both are given at construction and default to the durable ones
(always fsync; verify from the files on every call). So is its :class:`Offload`, where the upgrade's
long blocking work on local files runs: by default a worker thread (:func:`asyncio.to_thread`), so
the event loop stays responsive.

Memory: a :class:`ServerDir` keeps the identity (which no one writes once the server is built), the
last result and the offered phone firmware (which only this object writes) once read or written, and
the committed slot's descriptor for as long as the bootloader names the same active slot (read on
every call) and no descriptor was written through this object; :meth:`ServerDir.check_state`, the
guard before anything changes the server, forgets them and reads every file again, and so does each
upgrade step before it is judged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar

from pydantic import ValidationError

from agent.bootloader import SLOTS, BootEnv, Bootloader
from agent.documents import KeyReport, LastResult
from agent.fileio import DURABLE, Disk, read_bounded, read_json, write_atomic, write_json
from agent.journal import Job, Journal
from agent.keys import (
    REVOCATIONS_FILE,
    KeyCheck,
    SignedKey,
    TrustStore,
    check_key,
    install_revocation_list,
    installed_keys,
    parse_key_text,
)
from agent.persisted import check_folders, check_identity, check_job, check_slot, unreadable
from agent.policy import ServerFacts
from agent.verifier import DURABLE_VERIFIER, Verifier
from common.errors import KeyFormatError, StoreError
from common.reasons import Reason

P = ParamSpec("P")
T = TypeVar("T")


class Offload(Protocol):
    """Runs a blocking call for a coroutine and returns (or raises) what the call did, as
    :func:`asyncio.to_thread` does (the default: a worker thread, the event loop stays responsive)."""

    async def __call__(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Return ``func(*args, **kwargs)``.

        Raises:
            Exception: whatever ``func`` raised, unchanged.
        """
        ...


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
    """Paths and reads/writes of one server directory.

    ``disk`` flushes and renames every write (the journal's, the bootloader's, the upgrade's);
    ``verifier`` verifies the trust store, keys, manifests and databases; ``offload`` runs the
    upgrade's long blocking work on local files (preparing the new database, copying a large image
    into a slot). The upgrader and the daemon built on this directory use them.
    """

    def __init__(
        self,
        root: Path,
        *,
        disk: Disk = DURABLE,
        verifier: Verifier = DURABLE_VERIFIER,
        offload: Offload = asyncio.to_thread,
    ) -> None:
        self.root = root
        self.disk = disk
        self.verifier = verifier
        self.offload = offload
        self.bootloader = Bootloader(root / "boot.json", disk=disk)
        self.journal = Journal(root / "journal.json", disk=disk)
        self._identity: Identity | None = None
        self._last_result: tuple[LastResult | None] | None = None  # (the value,) once known
        self._phone_firmware: tuple[str | None] | None = None
        self._committed: tuple[str, SlotInfo] | None = None  # (the active slot, its descriptor) once read
        self._slot_dirs = {slot: root / "slots" / slot for slot in SLOTS}  # the layout, built once
        self._db_paths = {slot: path / "pbx.db" for slot, path in self._slot_dirs.items()}

    def forget(self) -> None:
        """Drop what this object remembers of the files: the next reads go to the disk."""
        self._identity = self._last_result = self._phone_firmware = self._committed = None

    # --- layout ---------------------------------------------------------------------------
    @cached_property
    def keys_dir(self) -> Path:
        """Installed key files."""
        return self.root / "keys"

    @cached_property
    def trust_dir(self) -> Path:
        """The pinned vendor root and the revocation list."""
        return self.root / "trust"

    @cached_property
    def update_area(self) -> Path:
        """Where staged images wait (the vendor's *Update Area*)."""
        return self.root / "update"

    def slot_dir(self, slot: str) -> Path:
        """The folder of release slot ``slot`` (the same object on every call for ``a`` and ``b``)."""
        found = self._slot_dirs.get(slot)
        return found if found is not None else self.root / "slots" / slot

    def db_path(self, slot: str) -> Path:
        """The database of slot ``slot`` (the same object on every call for ``a`` and ``b``)."""
        found = self._db_paths.get(slot)
        return found if found is not None else self.slot_dir(slot) / "pbx.db"

    # --- reads ----------------------------------------------------------------------------
    def check_exists(self) -> None:
        """Raise StoreError unless this looks like a server directory."""
        if not (self.root / "identity.json").is_file():
            raise StoreError(f"{self.root} is not a server directory (no identity.json)")

    def identity(self) -> Identity:
        """Return the server's identity (read once; :meth:`check_state` reads it again).

        Raises:
            StoreError: missing or malformed.
        """
        if self._identity is None:
            self._identity = self._read_identity()
        return self._identity

    def _read_identity(self) -> Identity:
        path = self.root / "identity.json"
        try:
            data = read_bounded(path)
        except FileNotFoundError as exc:
            raise StoreError(f"{self.root} is not a server directory (no identity.json)") from exc
        except OSError as exc:
            raise StoreError(f"{path} is unreadable: {exc}") from exc
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

        The server's own folders (never a link out of the directory), the identity, the bootloader
        environment, the committed slot's descriptor and the journal: a command that changes the
        server calls this before it writes anything (fail closed).

        Raises:
            StoreError: one of them is missing, unreadable or holds a value out of range
                (``STATE_INVALID`` names the file and the field).
        """
        self.forget()
        check_folders(self.root)
        self.identity()
        self.committed()
        return self.load_job()

    def active_slot(self) -> str:
        """The committed slot."""
        return self.bootloader.env().active

    def committed(self, env: BootEnv | None = None) -> SlotInfo:
        """The committed release (the bootloader is read each time, unless the caller hands the
        environment it just read as ``env``; the active slot's descriptor once while that slot stays
        active, until :meth:`forget` or a descriptor is written).

        Raises:
            StoreError: the active slot holds no release (a bricked server), or the bootloader
                environment or the descriptor is unreadable (``STATE_INVALID``).
        """
        active = env.active if env is not None else self.active_slot()
        known = self._committed
        if known is not None and known[0] == active:
            return known[1]
        info = self.slot_info(active)
        if info is None:
            raise StoreError(f"{self.root}: the active slot holds no release")
        self._committed = (active, info)
        return info

    def facts(self, env: BootEnv | None = None) -> ServerFacts:
        """What policy needs to know (``env``: the bootloader environment the caller just read)."""
        ident, info = self.identity(), self.committed(env)
        return ServerFacts(serial=ident.serial, model=ident.model, release=info.version, build=info.build)

    def trust(self) -> TrustStore:
        """The pinned vendor root and revocations, as the verifier reads them from ``trust/``.

        Raises:
            StoreError: the root is missing or malformed, or the revocation list unreadable.
            VerificationError: the stored revocation list is malformed or not signed by the root.
        """
        return self.verifier.trust(self.trust_dir)

    def installed_keys(self) -> list[SignedKey]:
        """Every installed key that parses (a file that does not is skipped: it was never valid)."""
        return installed_keys(self.keys_dir)

    def key_checks(self, now: datetime | date) -> list[KeyCheck]:
        """Every installed key verified (by the verifier) for this server at the instant ``now``
        (a date: all its day).

        Raises:
            StoreError: the trust store or the identity is unreadable.
        """
        trust, serial = self.trust(), self.identity().serial
        return self.verifier.key_checks(self.keys_dir, trust, serial, now)

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
        return install_revocation_list(
            self.trust_dir, text, today, check=self.verifier.signature, disk=self.disk
        )

    def install_key(self, text: str, now: datetime | date) -> KeyCheck:
        """Verify a key at the instant ``now`` (a date: all its day) and install it when acceptable.

        A refused key changes nothing. A key that is valid, or valid only from a later start, is
        installed. Every other failure (format, signature, serial, revoked, expired) is returned as
        the refusal.
        """
        trust, serial = self.trust(), self.identity().serial
        try:
            key = parse_key_text(text)
        except KeyFormatError as exc:
            return KeyCheck(
                info=None, valid=False, reason=Reason.KEY_FORMAT_INVALID, message=str(exc), passed=0
            )
        check = check_key(key, trust, serial, now, check=self.verifier.signature)
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
        write_atomic(target, key.text().encode(), point="keys.install", disk=self.disk)
        return check

    def write_slot_info(self, slot: str, info: SlotInfo) -> None:
        """Record what ``slot`` holds."""
        self._committed = None
        write_json(
            self.slot_dir(slot) / "release.json",
            {"version": info.version, "build": info.build, "db_schema": info.db_schema},
            disk=self.disk,
        )

    def offer_phone_firmware(self, version: str, release: str) -> None:
        """Rule PHONE-1: the booted release's phone firmware is offered to the phones, no key check."""
        phones = self.root / "phones"
        phones.mkdir(exist_ok=True)
        self._phone_firmware = None
        write_json(phones / "offered.json", {"firmware": version, "release": release}, disk=self.disk)
        self._phone_firmware = (version,)

    def offered_phone_firmware(self) -> str | None:
        """The phone firmware version currently offered to phones."""
        if self._phone_firmware is None:
            try:
                found: str | None = str(read_json(self.root / "phones" / "offered.json")["firmware"])
            except (StoreError, KeyError, TypeError):
                found = None
            self._phone_firmware = (found,)
        return self._phone_firmware[0]

    def last_result(self) -> LastResult | None:
        """The last upgrade outcome recorded on this server (None when none, or unreadable)."""
        if self._last_result is None:
            path = self.root / "last_result.json"
            try:
                found = LastResult.model_validate(read_json(path)) if path.exists() else None
            except (StoreError, ValidationError):
                found = None
            self._last_result = (found,)
        return self._last_result[0]

    def record_result(self, result: LastResult) -> None:
        """Remember the last upgrade outcome."""
        self._last_result = None
        write_json(self.root / "last_result.json", result.wire(), disk=self.disk)
        self._last_result = (result,)


def key_reports(checks: Sequence[KeyCheck]) -> tuple[KeyReport, ...]:
    """The JSON form of verified keys (``status`` and ``keys list``)."""
    return tuple(key_report(check) for check in checks)


def key_report(check: KeyCheck) -> KeyReport:
    """The JSON form of one verified key."""
    reason = check.reason.value if check.reason else None
    info = check.info
    if info is None:
        return KeyReport(valid=check.valid, reason=reason, message=check.message)
    return KeyReport(
        valid=check.valid,
        reason=reason,
        key_id=info.key_id,
        kind=info.kind.value,
        plan=info.plan.value if info.plan else None,
        starts=info.starts,
        expires=info.expires,
        feature=info.feature,
        users=info.users,
        ceiling=info.ceiling,
        patch_build=info.patch_build,
        count=info.count,
        message=check.message,
    )
