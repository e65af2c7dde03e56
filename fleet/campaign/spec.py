"""What a campaign is asked to do: target, phases, rate limit, abort rule, window, networks.

Pure data with its JSON form (it is part of the retained campaign state, so a restarted
controller reads it back). Times are instants of the campaign's clock (simulated in a simulation,
real on lab servers); the rate limit counts servers started per minute of that clock.

The JSON form is read back with the same strictness as a file someone wrote (pydantic models,
:mod:`common.validation`): unknown keys, wrong types and values out of range are refused with a
:class:`CampaignSpecError` naming each field. A networks file (``--networks``: network name ->
serials, as ``allworx-sim fleet`` writes ``networks.json``) is read by :func:`load_networks`.

Invariants: a spec is validated on construction (``ValueError``), and ``from_dict(to_dict(s)) == s``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import AfterValidator, ConfigDict, Field, RootModel, model_validator

from agent.fileio import read_bounded
from common.errors import StoreError
from common.validation import FileModel, InputError, Instant, PositionalFileModel, Problem, Strings, validate
from fleet.campaign.documents import SpecDocument

NEWEST = "newest"  # the target meaning "the newest release each server's model can run now"
_BATCH = re.compile(r"^[1-9][0-9]*%?$")
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_NETWORKS_FILE = 16 * 1024 * 1024  # bytes: network names and serials of the largest fleet
MAX_MEMBERS_FILE = 16 * 1024 * 1024  # bytes: the serials of the largest fleet


class CampaignSpecError(InputError):
    """A campaign's description (its JSON form, its options or a networks file) is malformed."""


def _threshold(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"must be a share above 0 and at most 1, got {value:g}")
    return value


class AbortRule(PositionalFileModel):
    """Stop a phase whose failure rate passes ``threshold`` once ``min_finished`` servers finished.

    The rate is failed / (succeeded + failed) among the phase's servers: policy refusals, servers
    already current and offline ones are not failures of the rollout (they were predictable).
    """

    threshold: Annotated[float, AfterValidator(_threshold)]  # fraction, 0 < threshold <= 1
    min_finished: Annotated[int, Field(ge=1)] = 1  # servers of the phase that succeeded or failed first
    action: Literal["pause", "cancel"] = "pause"

    if TYPE_CHECKING:  # built positionally in code: AbortRule(0.5, 2)

        def __init__(
            self, threshold: float, min_finished: int = 1, action: Literal["pause", "cancel"] = "pause"
        ) -> None: ...

    def tripped(self, succeeded: int, failed: int) -> bool:
        """Whether the rule stops the phase at these counts."""
        finished = succeeded + failed
        return finished >= self.min_finished and failed / finished > self.threshold


class Window(PositionalFileModel):
    """The maintenance window: activation only inside ``[opens, closes)``; staging may come earlier."""

    opens: Instant
    closes: Instant

    if TYPE_CHECKING:  # built positionally in code: Window(opens, closes)

        def __init__(self, opens: datetime, closes: datetime) -> None: ...

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.closes <= self.opens:
            raise ValueError("closes must follow opens")
        return self


def _campaign_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"1-64 letters, digits, '.', '_' or '-', got {value!r}")
    return value


def _serials(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        if not _ID.match(value):
            raise ValueError(f"serials of 1-64 letters, digits, '.', '_' or '-', got {value!r}")
    return values


def _batch(value: str) -> str:
    if not _BATCH.match(value):
        raise ValueError(f"a count ('25') or a share ('20%'), got {value!r}")
    if value.endswith("%") and int(value[:-1]) > 100:
        raise ValueError(f"a batch share is at most 100%, got {value!r}")
    return value


def _rate(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ValueError(f"must be positive, got {value:g}")
    return value


class CampaignSpec(FileModel):
    """A campaign's request.

    Raises:
        pydantic.ValidationError: on construction, when a field is out of range.
    """

    campaign_id: Annotated[str, AfterValidator(_campaign_id)]
    target: str = NEWEST  # a release, or "newest"
    canary: Annotated[int, Field(ge=0)] = 0  # servers in the canary phase (0: none)
    batch: Annotated[str, AfterValidator(_batch)] = "100%"  # later phases: a count ("25") or a share ("20%")
    rate_per_minute: Annotated[float | None, AfterValidator(_rate)] = None  # servers started per minute
    max_in_flight: Annotated[int | None, Field(ge=1)] = None  # servers upgrading (or staging) at once
    abort: AbortRule | None = None
    window: Window | None = None
    stage_early: bool = True  # with a window: download and verify before it opens
    gate_phases: bool = False  # pause after each phase, for external checks, until resumed
    networks: dict[str, Strings] = Field(default_factory=dict)  # SITE-1: name -> serials
    members: Annotated[Strings, AfterValidator(_serials)] = ()
    """The only servers the campaign may touch (empty: every server reporting)."""
    selection: Strings = ()
    """The ``--select`` expressions the members were resolved from (a record; ``members`` decides)."""

    def batch_size(self, fleet: int) -> int:
        """Servers per phase after the canary, for a fleet of ``fleet`` servers (at least 1)."""
        if self.batch.endswith("%"):
            return max(1, -(-fleet * int(self.batch[:-1]) // 100))
        return int(self.batch)

    def to_dict(self) -> SpecDocument:
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
            "selection": list(self.selection),
        }

    @classmethod
    def from_dict(cls, raw: object, source: str = "campaign spec") -> CampaignSpec:
        """Parse the JSON form (``source`` names it in problems).

        Raises:
            CampaignSpecError: a field is missing, unknown, of the wrong type or out of range.
        """
        return validate(cls, raw, file=source, error=CampaignSpecError)

    @classmethod
    def from_options(cls, **values: Any) -> CampaignSpec:
        """A spec from command-line values (``None``: not given, the default).

        Raises:
            CampaignSpecError: a value out of range, naming its field.
        """
        given = {k: v for k, v in values.items() if v is not None}
        return validate(cls, given, file="campaign options", error=CampaignSpecError)


class _Networks(RootModel[dict[str, Strings]]):
    """A networks file: network name -> member serials."""

    model_config = ConfigDict(frozen=True, strict=True)


def load_members(path: Path) -> tuple[str, ...]:
    """Read a members file: a JSON list of the serials a campaign may touch.

    Raises:
        CampaignSpecError: unreadable (not a regular file, over :data:`MAX_MEMBERS_FILE` bytes, not
            UTF-8), not JSON, or not a list.
    """
    try:  # bounded and non-blocking: /dev/zero or a FIFO is refused at once
        listed = json.loads(read_bounded(path, MAX_MEMBERS_FILE).decode("utf-8"))
    except (OSError, StoreError, ValueError) as exc:  # UnicodeDecodeError and JSON's errors are ValueErrors
        raise CampaignSpecError([Problem(str(path), "", None, f"cannot be read: {exc}")]) from None
    if not isinstance(listed, list):
        raise CampaignSpecError([Problem(str(path), "", None, "a JSON list of serials is expected")])
    return tuple(str(serial) for serial in listed)


def load_networks(path: Path) -> dict[str, tuple[str, ...]]:
    """Read a networks file: a JSON object, network name -> list of member serials (SITE-1).

    Raises:
        CampaignSpecError: unreadable, or any problem :func:`parse_networks` finds.
    """
    try:  # bounded and non-blocking: /dev/zero or a FIFO is refused at once
        text = read_bounded(path, MAX_NETWORKS_FILE).decode("utf-8")
    except (OSError, StoreError, UnicodeDecodeError) as exc:
        raise CampaignSpecError([Problem(str(path), "", None, f"cannot be read: {exc}")]) from None
    return parse_networks(text, str(path))


def parse_networks(text: str, file: str) -> dict[str, tuple[str, ...]]:
    """Parse a networks file's text (read from ``file``).

    Raises:
        CampaignSpecError: not JSON, or not an object of lists of serials.
    """
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise CampaignSpecError([Problem(file, "", None, f"not valid JSON: {exc}")]) from None
    return validate(_Networks, raw, file=file, error=CampaignSpecError).root
