"""What a campaign is asked to do: target, phases, rate limit, abort rule, window, networks.

Pure data with its JSON form (it is part of the retained campaign state, so a restarted
controller reads it back). Times are instants of the campaign's clock (simulated in a simulation,
real on lab servers); the rate limit counts servers started per minute of that clock.

Invariants: a spec is validated on construction (``ValueError``), and ``from_dict(to_dict(s)) == s``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

NEWEST = "newest"  # the target meaning "the newest release each server's model can run now"
_BATCH = re.compile(r"^[1-9][0-9]*%?$")
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True, slots=True)
class AbortRule:
    """Stop a phase whose failure rate passes ``threshold`` once ``min_finished`` servers finished.

    The rate is failed / (succeeded + failed) among the phase's servers: policy refusals, servers
    already current and offline ones are not failures of the rollout (they were predictable).
    """

    threshold: float  # fraction, 0 < threshold <= 1
    min_finished: int = 1  # servers of the phase that succeeded or failed before the rule applies
    action: Literal["pause", "cancel"] = "pause"

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1 or self.min_finished < 1 or self.action not in ("pause", "cancel"):
            raise ValueError("abort rule: 0 < threshold <= 1, min_finished >= 1, action pause|cancel")

    def tripped(self, succeeded: int, failed: int) -> bool:
        """Whether the rule stops the phase at these counts."""
        finished = succeeded + failed
        return finished >= self.min_finished and failed / finished > self.threshold


@dataclass(frozen=True, slots=True)
class Window:
    """The maintenance window: activation only inside ``[opens, closes)``; staging may come earlier."""

    opens: datetime
    closes: datetime

    def __post_init__(self) -> None:
        if self.closes <= self.opens or self.opens.tzinfo is None:
            raise ValueError("window: closes must follow opens, both timezone-aware")


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """A campaign's request.

    Raises:
        ValueError: on construction, when a field is out of range.
    """

    campaign_id: str
    target: str = NEWEST  # a release, or "newest"
    canary: int = 0  # servers in the canary phase (0: none)
    batch: str = "100%"  # each later phase: a count ("25") or a share of the fleet ("20%")
    rate_per_minute: float | None = None  # servers started per minute of the campaign's clock
    max_in_flight: int | None = None  # servers upgrading (or staging) at once
    abort: AbortRule | None = None
    window: Window | None = None
    stage_early: bool = True  # with a window: download and verify before it opens
    gate_phases: bool = False  # pause after each phase, for external checks, until resumed
    networks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # SITE-1: name -> serials
    members: tuple[str, ...] = ()  # the only servers the campaign may touch (empty: every one reporting)

    def __post_init__(self) -> None:
        if not _ID.match(self.campaign_id):
            raise ValueError("campaign id: 1-64 letters, digits, '.', '_' or '-'")
        if not all(isinstance(m, str) and _ID.match(m) for m in self.members):
            raise ValueError("members: serials of 1-64 letters, digits, '.', '_' or '-'")
        if self.canary < 0 or not _BATCH.match(self.batch):
            raise ValueError("canary must be >= 0 and batch a count ('25') or a share ('20%')")
        if self.batch.endswith("%") and int(self.batch[:-1]) > 100:
            raise ValueError("a batch share is at most 100%")
        if (self.rate_per_minute is not None and self.rate_per_minute <= 0) or (
            self.max_in_flight is not None and self.max_in_flight < 1
        ):
            raise ValueError("rate_per_minute and max_in_flight must be positive")

    def batch_size(self, fleet: int) -> int:
        """Servers per phase after the canary, for a fleet of ``fleet`` servers (at least 1)."""
        if self.batch.endswith("%"):
            return max(1, -(-fleet * int(self.batch[:-1]) // 100))
        return int(self.batch)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "campaign_id": self.campaign_id,
            "target": self.target,
            "canary": self.canary,
            "batch": self.batch,
            "rate_per_minute": self.rate_per_minute,
            "max_in_flight": self.max_in_flight,
            "abort": None
            if self.abort is None
            else {
                "threshold": self.abort.threshold,
                "min_finished": self.abort.min_finished,
                "action": self.abort.action,
            },
            "window": None
            if self.window is None
            else {"opens": self.window.opens.isoformat(), "closes": self.window.closes.isoformat()},
            "stage_early": self.stage_early,
            "gate_phases": self.gate_phases,
            "networks": {k: list(v) for k, v in sorted(self.networks.items())},
            "members": list(self.members),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CampaignSpec:
        """Parse the JSON form.

        Raises:
            ValueError: a field is missing or out of range.
            KeyError: ``campaign_id`` is missing.
        """
        abort, window = raw.get("abort"), raw.get("window")
        return cls(
            campaign_id=str(raw["campaign_id"]),
            target=str(raw.get("target", NEWEST)),
            canary=int(raw.get("canary", 0)),
            batch=str(raw.get("batch", "100%")),
            rate_per_minute=raw.get("rate_per_minute"),
            max_in_flight=raw.get("max_in_flight"),
            abort=AbortRule(
                float(abort["threshold"]), int(abort.get("min_finished", 1)), abort.get("action", "pause")
            )
            if abort
            else None,
            window=Window(datetime.fromisoformat(window["opens"]), datetime.fromisoformat(window["closes"]))
            if window
            else None,
            stage_early=bool(raw.get("stage_early", True)),
            gate_phases=bool(raw.get("gate_phases", False)),
            networks={str(k): tuple(str(s) for s in v) for k, v in dict(raw.get("networks", {})).items()},
            members=tuple(str(s) for s in raw.get("members", ())),
        )
