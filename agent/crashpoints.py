"""Named crash points: every place the agent persists a step or changes something on the server.

Each point is declared once in :data:`REGISTRY`. Code calls :func:`hit` at the point; normally it
does nothing. A test or the chaos simulator installs an injector (:func:`injecting`) that may raise
:class:`PowerCut` (an in-process cut) or ``os.kill(os.getpid(), SIGKILL)`` (a real one) there.

Invariant: a name passed to :func:`hit` must be in the registry (an undeclared point raises), so
the table-driven power-cut tests can prove every declared point is exercised.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

REGISTRY: dict[str, str] = {
    "journal.write": "mid-write of the persisted upgrade state (a step's first: temp file half written, not"
    " yet renamed; a later one: its line half appended)",
    "recover": "on restart: the journal was read, nothing resumed yet (a cut during recovery)",
    "stage.download": "mid-download of the release image into the Update Area (after each chunk)",
    "stage.promote": "staged image complete and fsynced as .part, not yet renamed into the Update Area",
    "stage.verified": "image verified in the Update Area, state not yet persisted",
    "db.export": "mid-export of the old database's records",
    "db.rebuild": "mid-build of the new database (7.1 rebuild or migrated copy), before verification",
    "db.verified": "new database verified and renamed into the new slot, state not yet persisted",
    "slot.write": "mid-write of the release image into the inactive slot (temp copy not yet renamed)",
    "slot.written": "between the rebuild and the slot switch (image and release.json in the new slot)",
    "boot.switch": "mid-update of the bootloader to try the new slot",
    "boot.attempt": "mid-update of the bootloader's boot-attempt counter at power-on",
    "boot.trial": "after the slot switch, during the trial boot, before commit",
    "commit": "during commit (bootloader marks the new slot good)",
    "rollback": "during rollback to the old slot",
    "finish": "step ended and persisted; phone firmware offer, Update Area cleanup, journal removal",
    "keys.install": "mid-install of a key file",
}

Injector = Callable[[str], None]
_injector: ContextVar[Injector | None] = ContextVar("crash_injector", default=None)
_env_point = os.environ.get("ALLWORX_CRASH_AT")  # "name" or "name:N" (the N-th hit): real SIGKILL
_env_hits: dict[str, int] = {}


class PowerCut(
    BaseException
):  # reason: it models an event, not an error, and must not be caught by `except Exception`
    """Raised by an injector to model the power failing at a crash point."""

    def __init__(self, point: str) -> None:
        super().__init__(point)
        self.point = point


def hit(point: str) -> None:
    """Mark that execution reached crash point ``point``.

    Raises:
        KeyError: ``point`` is not declared in :data:`REGISTRY` (a programming error).
        PowerCut: an installed injector chose to cut power here.
    """
    if point not in REGISTRY:
        raise KeyError(f"undeclared crash point {point!r}")
    if _env_point is not None:
        _maybe_sigkill(point)
    injector = _injector.get()
    if injector is not None:
        injector(point)


def _maybe_sigkill(point: str) -> None:
    name, _, nth = (_env_point or "").partition(":")
    if name != point:
        return
    _env_hits[point] = _env_hits.get(point, 0) + 1
    if _env_hits[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def injecting(injector: Injector) -> Iterator[None]:
    """Install ``injector`` for crash points reached in this context."""
    token = _injector.set(injector)
    try:
        yield
    finally:
        _injector.reset(token)


class FaultAt:
    """An injector that counts every hit and raises one fault at the ``nth`` hit of ``point``.

    ``fault`` builds what is raised (default: :class:`PowerCut`; a test may pass, e.g., a
    factory of ``OSError(ENOSPC)``). ``hits`` counts every point reached, cut or not, so a test
    can prove which points a run went through.
    """

    def __init__(self, point: str, nth: int = 1, fault: Callable[[str], BaseException] = PowerCut) -> None:
        if point not in REGISTRY:
            raise KeyError(f"undeclared crash point {point!r}")
        self.point, self.nth, self.fault = point, nth, fault
        self.hits: Counter[str] = Counter()
        self.fired = False

    def __call__(self, point: str) -> None:
        self.hits[point] += 1
        if not self.fired and point == self.point and self.hits[point] == self.nth:
            self.fired = True
            raise self.fault(point)
