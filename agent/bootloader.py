"""The bootloader's persistent environment (as U-Boot's or GRUB's env for RAUC/Mender).

A/B slots: ``active`` is the committed slot; ``trial`` is a slot to try on the next boot.
Each boot of a trial slot counts an attempt *before* booting it; past ``max_attempts`` the
bootloader falls back to ``active`` by itself, so no power cut can leave a server that boots
nothing. Only :meth:`commit` after a verified boot makes the trial slot active.

Every change is one atomic write of ``boot.json`` through the given :class:`~agent.fileio.Disk`
(a power cut leaves the old environment or the new one, never a torn one); the crash points
``boot.switch``, ``boot.attempt``, ``commit`` and ``rollback`` sit in the middle of those writes.
A variable out of range (bit rot, a hand edit) is an error (``STATE_INVALID``,
:mod:`agent.persisted`), never a guess: nothing is written then.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from agent.fileio import DURABLE, Disk, read_json, write_json
from agent.persisted import SLOTS, check_boot, unreadable
from common.errors import StoreError

__all__ = ["MAX_BOOT_ATTEMPTS", "SLOTS", "BootEnv", "Bootloader"]
MAX_BOOT_ATTEMPTS = 3


@dataclass
class BootEnv:
    """The bootloader's variables."""

    active: str = "a"
    trial: str | None = None
    attempts: int = 0
    max_attempts: int = MAX_BOOT_ATTEMPTS

    @property
    def inactive(self) -> str:
        """The slot that is not active (where an upgrade writes)."""
        return SLOTS[1] if self.active == SLOTS[0] else SLOTS[0]


class Bootloader:
    """Reads and changes ``boot.json`` of one server."""

    def __init__(self, path: Path, *, disk: Disk = DURABLE) -> None:
        self.path = path
        self.disk = disk

    def env(self) -> BootEnv:
        """Return the current environment; every variable must be in range (fail closed).

        Raises:
            StoreError: (``STATE_INVALID``) the file is missing, unreadable, or a variable is out
                of range (an ``active`` that is not ``a`` or ``b`` is never read as ``a``).
        """
        try:
            raw = read_json(self.path)
        except StoreError as exc:
            raise unreadable(self.path, "the bootloader environment is missing or not JSON") from exc
        return BootEnv(**check_boot(raw, self.path))

    def _write(self, env: BootEnv, point: str | None) -> None:
        write_json(self.path, asdict(env), point=point, compact=True, disk=self.disk)

    def try_slot(self, slot: str) -> None:
        """Arrange for the next boot to try ``slot`` on trial."""
        env = self.env()
        if env.trial == slot:
            return
        env.trial, env.attempts = slot, 0
        self._write(env, "boot.switch")

    def boot(self) -> str:
        """Power on: return the slot that boots, counting a trial attempt first."""
        env = self.env()
        if env.trial is None:
            return env.active
        if env.attempts >= env.max_attempts:  # too many failed boots: fall back by itself
            env.trial, env.attempts = None, 0
            self._write(env, "boot.attempt")
            return env.active
        env.attempts += 1
        self._write(env, "boot.attempt")
        return env.trial

    def commit(self) -> None:
        """Make the trial slot the active one (after a verified boot)."""
        env = self.env()
        if env.trial is None:
            return
        self._write(BootEnv(active=env.trial, max_attempts=env.max_attempts), "commit")

    def rollback(self) -> None:
        """Forget the trial slot: the old active slot boots."""
        env = self.env()
        if env.trial is None and env.attempts == 0:
            return
        self._write(BootEnv(active=env.active, max_attempts=env.max_attempts), "rollback")
