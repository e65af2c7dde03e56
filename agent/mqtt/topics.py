"""Topic names of the fleet contract (docs/asyncapi.yaml), under ``allworx/{site}/{serial}/``.

Invariants: a site or serial is one non-empty topic level (no ``/``, ``+``, ``#`` or NUL), so a
server's topics never overlap another's; the agent subscribes to ``cmd/+`` only, so its own
``cmd/{name}/accepted`` and ``cmd/{name}/rejected`` replies never come back to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "allworx"
COMMANDS = ("upgrade", "plan", "stage", "cancel", "install-key", "report")
_LEVEL = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def check_level(name: str, what: str) -> str:
    """Return ``name`` when it is a valid single topic level.

    Raises:
        ValueError: empty, too long, or holding characters outside ``[A-Za-z0-9._-]``.
    """
    if not _LEVEL.match(name):
        raise ValueError(f"{what} {name!r} must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return name


@dataclass(frozen=True, slots=True)
class ServerTopics:
    """Every topic of one server."""

    site: str
    serial: str

    def __post_init__(self) -> None:
        check_level(self.site, "site")
        check_level(self.serial, "serial")

    @property
    def base(self) -> str:
        """``allworx/{site}/{serial}``."""
        return f"{ROOT}/{self.site}/{self.serial}"

    @property
    def state(self) -> str:
        """The retained state document (QoS 1)."""
        return f"{self.base}/state"

    @property
    def availability(self) -> str:
        """Retained ``online``/``offline`` (the last will says ``offline``)."""
        return f"{self.base}/availability"

    @property
    def events(self) -> str:
        """Transitions and progress, each with a per-server sequence number (QoS 1)."""
        return f"{self.base}/events"

    @property
    def commands(self) -> str:
        """The filter the agent subscribes to: ``cmd/+``."""
        return f"{self.base}/cmd/+"

    def command(self, name: str) -> str:
        """The request topic of command ``name``."""
        return f"{self.base}/cmd/{name}"

    def accepted(self, name: str) -> str:
        """The MQTT 3.1.1 reply topic of an accepted command."""
        return f"{self.base}/cmd/{name}/accepted"

    def rejected(self, name: str) -> str:
        """The MQTT 3.1.1 reply topic of a rejected command."""
        return f"{self.base}/cmd/{name}/rejected"

    def command_name(self, topic: str) -> str | None:
        """The command named by a request topic of this server, or None for any other topic."""
        prefix = f"{self.base}/cmd/"
        if not topic.startswith(prefix):
            return None
        name = topic[len(prefix) :]
        return name if name and "/" not in name else None


def all_states(site: str | None = None) -> str:
    """The filter matching every server's retained state (of one site, or of all)."""
    return f"{ROOT}/{check_level(site, 'site') if site else '+'}/+/state"
