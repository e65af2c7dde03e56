"""systemd's notify protocol (``sd_notify``): a datagram to the socket ``NOTIFY_SOCKET`` names.

The protocol is a few lines of text over an ``AF_UNIX`` datagram socket, so it is written here
rather than taken from a library. Without ``NOTIFY_SOCKET`` (not started by systemd) every call
does nothing. A name starting with ``@`` is in the abstract namespace.

Invariant: a notification never raises and never blocks: systemd being gone, or a manager that
does not read its socket (a full datagram queue), must not stop or stall an upgrade; such a
notification is dropped.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("agent.service")


class Notifier:
    """Sends state lines (``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``) to systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        number = usec.isascii() and usec.isdigit()  # int() takes other digits ("١٢"), or refuses them ("²")
        self.watchdog_interval = int(usec) / 2_000_000 if number and int(usec) > 0 and mine else None
        self._last_status = ""
        self.dropped = 0  # notifications dropped because the manager's queue was full

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return bool(self._address)

    def send(self, *lines: str) -> None:
        """Send ``lines`` as one notification (nothing without ``NOTIFY_SOCKET``)."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto("\n".join(lines).encode(), self._address)
        except BlockingIOError:
            self.dropped += 1  # the manager's queue is full: this notification is lost, not waited for
        except OSError as exc:
            log.warning("notify_failed", error=str(exc))

    def ready(self, status: str) -> None:
        """Tell the manager the service is up (``READY=1``) with a readable status."""
        self._last_status = status
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """Update the line ``systemctl status`` shows (sent only when it changed)."""
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        """Tell the manager the event loop still turns."""
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell the manager the service is stopping."""
        self.send("STOPPING=1", "STATUS=stopping")

    def reloading(self) -> None:
        """Tell the manager the service re-reads its configuration."""
        self.send("RELOADING=1")
