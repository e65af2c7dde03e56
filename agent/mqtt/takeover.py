"""Session takeovers: another client connecting with the agent's client id (pure; times are arguments).

An MQTT broker lets one session hold a client id: a second CONNECT with the id ends the first.
A broker may say so (MQTT 5 DISCONNECT "session taken over", 0x8E); Mosquitto 2.0 and MQTT 3.1.1
just close the socket, so a session the broker ends within :data:`SHORT_SESSION` seconds of its
start counts as taken over too (a restarting broker refuses connections instead). One takeover is normal
(the agent's own stale session after a network break). Many are a storm: a clone or an attacker
reconnecting with the id, each CONNECT pushing the agent off, which would leave it reconnecting
and never listening.

Policy: :data:`STORM_TAKEOVERS` takeovers within :data:`STORM_WINDOW` seconds start a storm; the
agent then connects with a client id of its own for the storm (the usual id and a random suffix),
which the other client does not know, so it keeps its place on the broker and answers commands.
After :data:`STORM_HOLD` seconds, the next reconnection tries the usual id again (a storm still
going on is noticed again after as many takeovers). The caller backs off with jitter between
attempts and logs ``session_takeover_storm``.

Invariants: ``takeovers`` and ``storms`` only grow; the identifier is the usual one outside a storm.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field

STORM_TAKEOVERS = 3  # takeovers ...
STORM_WINDOW = 30.0  # ... within this many seconds are a storm
STORM_HOLD = 600.0  # seconds a storm's own client id is kept before the usual one is tried again
SHORT_SESSION = 5.0  # seconds: a session the broker ends sooner counts as taken over


@dataclass
class TakeoverWatch:
    """Counts takeovers of one agent's sessions and chooses the client id of the next connection."""

    usual: str  # the agent's client id: ``allworx-agent-{site}-{serial}``
    identifier: str = ""  # the id of the next connection
    takeovers: int = 0  # every takeover seen
    storms: int = 0  # every storm started
    storm_since: float | None = None  # when the current storm began (None: no storm)
    _recent: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.identifier = self.identifier or self.usual

    @property
    def in_storm(self) -> bool:
        """Whether the agent connects with a storm's own client id."""
        return self.storm_since is not None

    def taken_over(self, now: float) -> bool:
        """Record a takeover at ``now`` (seconds, monotonic); return whether it starts a storm.

        A storm switches :attr:`identifier` to a fresh ``{usual}-{random}`` id.
        """
        self.takeovers += 1
        self._recent.append(now)
        while self._recent and now - self._recent[0] > STORM_WINDOW:
            self._recent.popleft()
        if len(self._recent) < STORM_TAKEOVERS:
            return False
        self._recent.clear()
        self.storms += 1
        self.storm_since = now
        self.identifier = f"{self.usual}-{secrets.token_hex(4)}"
        return True

    def reconnecting(self, now: float) -> str:
        """The client id for a connection made at ``now``: the usual one once a storm is held long enough."""
        if self.storm_since is not None and now - self.storm_since >= STORM_HOLD:
            self.storm_since = None
            self.identifier = self.usual
        return self.identifier
